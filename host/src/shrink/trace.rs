//! Finding the dependency groups of a tch model by running it.
//!
//! tch gives no access to the autograd graph, so the channel spaces are found by probing, with
//! the model's own forward pass on a fresh copy of its variables (the caller's model is never
//! touched). Every layer's output channel 0 is silenced (weight row and bias entry zero,
//! BatchNorm shifts zero, so a silent channel stays exactly zero through BatchNorm, ReLU,
//! pooling, additions and flattening); a layer's input column that reads only silent channels
//! then gets an exactly zero gradient. Letting one layer's channel 0 speak again shows which
//! inputs it reaches directly: the first columns of the layers that read it (one per channel,
//! or `h * w` after a flatten) and the BatchNorms on the way. Layers that reach a common input
//! are added together somewhere (a residual connection): they form one group. One forward and
//! backward pass per layer, on random values from a fixed seed.
//!
//! What the probe cannot follow (channels mixed by an operation before any layer reads them, a
//! concatenation that shifts indices, grouped convolutions) makes the groups concerned fixed,
//! with the reason; such models take declared groups.

use super::groups::{DependencyGraph, Group, Reader};
use crate::error::{panic_message, PruneError, Result};
use crate::module::{join, split_tensor_path};
use std::collections::{BTreeMap, HashMap};
use tch::{nn, Device, Kind, Tensor};

/// A weight of 2+ dimensions: writes channels along dimension 0, reads them along dimension 1.
struct Layer {
    weight: String,
    bias: Option<String>,
    channels: i64,
}

/// A per-channel normalization (a BatchNorm: a 1-d `weight` beside `running_mean`).
struct Norm {
    weight: String,
    tensors: Vec<String>,
}

/// What reached each probed input: per reader, which of its input columns had a gradient;
/// and which channels of the output were not zero.
struct Reached {
    columns: Vec<Vec<bool>>,
    output: Vec<bool>,
}

/// The smallest batch the probe runs: a ReLU can silence a channel by chance for a few inputs
/// (all negative), never for many.
const PROBE_BATCH: i64 = 8;

/// What biases and BatchNorm shifts add to every channel but channel 0.
const OFFSET: f64 = 2.0;

/// The weights' scale relative to a variance-preserving initialization: small beside `OFFSET`.
const WEIGHT_GAIN: f64 = 0.5;

/// The dependency groups of the model `build` makes, traced on inputs of `input_shape`
/// (`[batch, channels, ...]`; the batch is raised to 8) on the CPU; see the [module docs](super)
/// for what it finds and what it leaves fixed.
pub fn trace<M: nn::ModuleT>(
    build: impl FnOnce(&nn::Path) -> M,
    input_shape: &[i64],
) -> Result<DependencyGraph> {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = build(&vs.root());
    let variables = vs.variables();
    let (layers, norms) = classify(&variables);
    if layers.is_empty() {
        return Err(PruneError::InvalidGroups(
            "the model has no weights of 2+ dimensions to trace".to_owned(),
        ));
    }
    let mut random = SplitMix(0x7c4a_5e1f_93d2_b860);
    initialize(&variables, &layers, &norms, &mut random)?;
    let silence = |layer: &Layer, on: bool| -> Result<()> {
        tch::no_grad(|| {
            let weight = &variables[&layer.weight];
            let mut row = weight.f_get(0)?;
            if on {
                // Positive weights on the (non-negative) outputs of a ReLU: a positive channel.
                row.f_copy_(&random_like(&row, &mut SplitMix(7), 1.0)?.f_abs()?)?;
            } else {
                let _ = row.f_zero_()?;
            }
            if let Some(bias) = &layer.bias {
                let _ = variables[bias]
                    .f_get(0)?
                    .f_fill_(if on { OFFSET } else { 0.0 })?;
            }
            Ok(())
        })
    };
    for layer in &layers {
        silence(layer, false)?;
    }

    let mut shape = input_shape.to_vec();
    if let Some(batch) = shape.first_mut() {
        *batch = (*batch).max(PROBE_BATCH);
    }
    let input = uniform(&shape, &mut random, 1.0)?;
    let output = tch::no_grad(|| forward(&model, &input))?;
    let projection = uniform(&output.size(), &mut random, 1.0)?;
    let watched: Vec<&Tensor> = (layers.iter().map(|l| &variables[&l.weight]))
        .chain(norms.iter().map(|n| &variables[&n.weight]))
        .collect();
    let probe = || -> Result<Reached> {
        let output = forward(&model, &input)?;
        let loss = output.f_mul(&projection)?.f_sum(Kind::Float)?;
        let gradients = Tensor::f_run_backward(&[loss], &watched, false, false)?;
        let columns = (gradients.iter().zip(&watched))
            .map(|(g, w)| nonzero_along(g, w, if w.dim() >= 2 { 1 } else { 0 }))
            .collect::<Result<_>>()?;
        Ok(Reached {
            columns,
            output: nonzero_along(&output.detach(), &output, 1)?,
        })
    };

    let silent = probe()?;
    let mut reach: Vec<Reached> = Vec::with_capacity(layers.len());
    for layer in &layers {
        silence(layer, true)?;
        let reached = probe();
        silence(layer, false)?;
        reach.push(reached?);
    }
    Ok(assemble(&layers, &norms, &silent, &reach, input_shape))
}

/// The model's forward pass in evaluation mode; a panic (an input shape the model does not
/// take, say) is an error naming the shape.
fn forward(model: &impl nn::ModuleT, input: &Tensor) -> Result<Tensor> {
    let run = std::panic::AssertUnwindSafe(|| model.forward_t(input, false));
    std::panic::catch_unwind(run).map_err(|panic| {
        PruneError::InvalidGroups(format!(
            "the model's forward pass failed on an input of shape {:?}: {}",
            input.size(),
            panic_message(panic.as_ref())
        ))
    })
}

/// Which tensors are layers and which are BatchNorms.
fn classify(variables: &HashMap<String, Tensor>) -> (Vec<Layer>, Vec<Norm>) {
    let mut layers = Vec::new();
    let mut norms = Vec::new();
    for (name, t) in variables {
        let (prefix, tensor) = split_tensor_path(name);
        if tensor != "weight" {
            continue;
        }
        let sibling = |s: &str| Some(join(prefix, s)).filter(|k| variables.contains_key(k));
        if t.dim() >= 2 {
            let channels = t.size()[0];
            let bias = sibling("bias").filter(|b| variables[b].size() == [channels]);
            layers.push(Layer {
                weight: name.clone(),
                bias,
                channels,
            });
        } else if t.dim() == 1 && sibling("running_mean").is_some() {
            let tensors = ["weight", "bias", "running_mean", "running_var"]
                .iter()
                .filter_map(|s| sibling(s))
                .filter(|k| variables[k].size() == t.size())
                .collect();
            norms.push(Norm {
                weight: name.clone(),
                tensors,
            });
        }
    }
    layers.sort_by(|a, b| natural_order(&a.weight, &b.weight));
    norms.sort_by(|a, b| natural_order(&a.weight, &b.weight));
    (layers, norms)
}

/// Random weights scaled by fan-in; biases and BatchNorm shifts a positive offset (so that no
/// ReLU silences a channel by chance) but zero for channel 0, BatchNorm scales in `[0.5, 1.5]`,
/// running statistics 0 and 1: silent channels stay exactly zero, the others do not.
fn initialize(
    variables: &HashMap<String, Tensor>,
    layers: &[Layer],
    norms: &[Norm],
    random: &mut SplitMix,
) -> Result<()> {
    let offset = |t: &Tensor| -> Result<()> {
        let mut t = t.shallow_clone();
        let _ = t.f_fill_(OFFSET)?;
        let _ = t.f_get(0)?.f_fill_(0.0)?;
        Ok(())
    };
    tch::no_grad(|| {
        for layer in layers {
            let mut weight = variables[&layer.weight].shallow_clone();
            let fan_in = weight.numel() as i64 / layer.channels.max(1);
            let bound = WEIGHT_GAIN * (3.0 / fan_in.max(1) as f64).sqrt();
            // Rows summing to zero: a layer's output does not drift with the (positive) mean of
            // its inputs, so the offsets keep every ReLU open.
            let values = random_like(&weight, random, bound)?.f_reshape([layer.channels, -1])?;
            let centered = values.f_sub(&values.f_mean_dim(1, true, Kind::Float)?)?;
            weight.f_copy_(&centered.f_reshape(weight.size())?)?;
            if let Some(bias) = &layer.bias {
                offset(&variables[bias])?;
            }
        }
        for norm in norms {
            for key in &norm.tensors {
                let mut t = variables[key].shallow_clone();
                match split_tensor_path(key).1 {
                    "weight" => {
                        let values = random_like(&t, random, 0.5)? + 1.0;
                        t.f_copy_(&values)?;
                    }
                    "bias" => offset(&t)?,
                    "running_var" => {
                        let _ = t.f_fill_(1.0)?;
                    }
                    _ => {
                        let _ = t.f_fill_(0.0)?;
                    }
                }
            }
        }
        Ok(())
    })
}

/// Turns what each layer's channel 0 reached into groups.
fn assemble(
    layers: &[Layer],
    norms: &[Norm],
    silent: &Reached,
    reach: &[Reached],
    input_shape: &[i64],
) -> DependencyGraph {
    let readers = layers.len() + norms.len();
    let width = |r: usize| silent.columns[r].len() as i64;
    let is_norm = |r: usize| r >= layers.len();
    let reader_name = |r: usize| {
        if is_norm(r) {
            norms[r - layers.len()].weight.as_str()
        } else {
            layers[r].weight.as_str()
        }
    };
    // Union-find over the writers: two layers that reach a common reader write one space.
    let mut parent: Vec<usize> = (0..layers.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut first_writer: Vec<Option<usize>> = vec![None; readers];
    let mut factor: Vec<Option<i64>> = vec![None; readers];
    let mut fixed: Vec<Option<String>> = vec![None; layers.len()];
    // Layers that read some channels in a way the probe does not follow (a grouped convolution,
    // a concatenation): their own output channels may be tied to those inputs.
    let mut unfollowed_reader = vec![false; readers];
    for (w, reached) in reach.iter().enumerate() {
        let channels = layers[w].channels;
        if reached.output.first() == Some(&true) && silent.output.first() == Some(&false) {
            fixed[w] = Some("its channels are the model's output".to_owned());
        }
        for r in 0..readers {
            let newly: Vec<usize> = (reached.columns[r].iter().zip(&silent.columns[r]))
                .enumerate()
                .filter(|(_, (now, before))| **now && !**before)
                .map(|(c, _)| c)
                .collect();
            if newly.is_empty() {
                continue;
            }
            let k = width(r) / channels;
            let follows = width(r) % channels == 0
                && newly.len() as i64 == k
                && newly.iter().enumerate().all(|(i, c)| i == *c)
                && !(is_norm(r) && k != 1);
            if !follows || factor[r].is_some_and(|f| f != k) {
                unfollowed_reader[r] = true;
                fixed[w] = Some(format!(
                    "'{}' reads its channels in a way channel removal does not follow \
                     (channel 0 reaches its inputs {newly:?} of {})",
                    reader_name(r),
                    width(r)
                ));
                continue;
            }
            factor[r] = Some(k);
            match first_writer[r] {
                None => first_writer[r] = Some(w),
                Some(other) => {
                    let (a, b) = (root(&mut parent, other), root(&mut parent, w));
                    parent[a] = b;
                }
            }
        }
    }

    let mut components: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for w in 0..layers.len() {
        let r = root(&mut parent, w);
        components.entry(r).or_default().push(w);
    }
    let input_channels = input_shape.get(1).copied().unwrap_or(1);
    // Readers that hear channel 0 with every layer silent read the model's input, or channels
    // mixed by something the probe cannot see through.
    let mixed: Vec<usize> = (0..readers)
        .filter(|&r| silent.columns[r].first() == Some(&true) && width(r) != input_channels)
        .collect();
    let mut groups: Vec<Group> = components
        .values()
        .map(|writers| {
            let in_group = |r: &usize| first_writer[*r].is_some_and(|w| writers.contains(&w));
            let group_readers: Vec<usize> = (0..readers).filter(in_group).collect();
            let channels = layers[writers[0]].channels;
            let mut reason = writers.iter().find_map(|&w| fixed[w].clone());
            if let Some(&w) = writers.iter().find(|&&w| unfollowed_reader[w]) {
                reason = reason.or(Some(format!(
                    "'{}' reads its inputs in a way channel removal does not follow (a grouped \
                     convolution or a concatenation?), so its outputs may be tied to them",
                    layers[w].weight
                )));
            }
            if reason.is_none() && writers.iter().any(|&w| layers[w].channels != channels) {
                reason = Some("its writers differ in width".to_owned());
            }
            let could_read = |r: usize| width(r) % channels == 0 || channels % width(r) == 0;
            if let Some(&r) = mixed.iter().find(|&&r| could_read(r)) {
                reason = reason.or(Some(format!(
                    "'{}' reads channels mixed by an operation the trace cannot follow; \
                     declare the groups",
                    reader_name(r)
                )));
            }
            if reason.is_none() && !group_readers.iter().any(|&r| !is_norm(r)) {
                reason = Some("no layer reads its channels".to_owned());
            }
            Group {
                writers: writers.iter().map(|&w| layers[w].weight.clone()).collect(),
                channelwise: (writers.iter().filter_map(|&w| layers[w].bias.clone()))
                    .chain(
                        (group_readers.iter().filter(|&&r| is_norm(r)))
                            .flat_map(|&r| norms[r - layers.len()].tensors.clone()),
                    )
                    .collect(),
                readers: (group_readers.iter().filter(|&&r| !is_norm(r)))
                    .map(|&r| Reader::new(reader_name(r), factor[r].unwrap_or(1)))
                    .collect(),
                fixed: reason,
            }
        })
        .collect();
    groups.sort_by(|a, b| natural_order(&a.writers[0], &b.writers[0]));
    DependencyGraph { groups }
}

/// For each index of `t`'s dimension `dim` (`t` shaped like `like`), whether any entry there
/// is not zero; a gradient that autograd left undefined is all zero.
fn nonzero_along(t: &Tensor, like: &Tensor, dim: i64) -> Result<Vec<bool>> {
    let size = like.size();
    if size.len() <= dim as usize {
        let any = t.defined() && t.f_ne(0)?.f_any()?.f_int64_value(&[])? != 0;
        return Ok(vec![any; size.first().copied().unwrap_or(1) as usize]);
    }
    let n = size[dim as usize];
    if !t.defined() {
        return Ok(vec![false; n as usize]);
    }
    if !bool::try_from(t.f_isfinite()?.f_all()?)? {
        return Err(PruneError::InvalidGroups(
            "the trace's forward pass overflowed (not finite)".to_owned(),
        ));
    }
    let per_index = t
        .f_ne(0)?
        .f_transpose(0, dim)?
        .f_reshape([n, -1])?
        .f_any_dim(1, false)?;
    Ok(Vec::<bool>::try_from(per_index)?)
}

/// Compares dotted keys with their numbers as numbers (`layer2` before `layer10`).
pub(crate) fn natural_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (a, b) = (chunks(a), chunks(b));
    for ((da, ca), (db, cb)) in a.iter().zip(&b) {
        let order = match (da, db) {
            (true, true) => (ca.len(), *ca).cmp(&(cb.len(), *cb)),
            _ => ca.cmp(cb),
        };
        if order.is_ne() {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// SplitMix64: the trace's own random numbers, so that the groups found do not depend on the
/// caller's seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Uniform values in `[-bound, bound)` of `shape`.
fn uniform(shape: &[i64], random: &mut SplitMix, bound: f64) -> Result<Tensor> {
    let n: i64 = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| random.next()).collect();
    Ok(Tensor::from_slice(&values).f_reshape(shape)? * bound)
}

fn random_like(t: &Tensor, random: &mut SplitMix, bound: f64) -> Result<Tensor> {
    uniform(&t.size(), random, bound)?
        .f_to_kind(t.kind())
        .map_err(Into::into)
}
