//! The [`Module`] front end of sparse inference: each pruned layer measured in place, and the
//! faster form installed as the layer's forward function.
//!
//! Everything is measured before anything changes, so a failed conversion leaves the model as
//! it was. A converted layer keeps its tensors and its original forward function: training,
//! inputs that need gradients, tensors changed since the conversion (an optimizer step, a new
//! mask; seen through their version counters) and inputs the sparse form does not take all run
//! the original.

use super::conv::{measure_conv, SparseConv2d};
use super::linear::{candidate_format, has_zeros, measure_in, LayerChoice, Linear, SpeedOptions};
use crate::error::{panic_message, PruneError, Result};
use crate::module::{join, ForwardFn, Module};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tch::{nn, Device, Tensor};

/// Makes every pruned linear layer of `module` run sparse at inference where it is measured
/// faster (at `options.batch`); returns each layer's measurement, in the module's order.
/// Candidates are the layers of kind `"Linear"` with a 2-d weight holding zeros: on the CPU,
/// float weights in CSR ([`measure`](super::measure)); on CUDA, fp16/bf16 weights pruned 2:4
/// along their input features (the `nm` plugin's default) with both sides multiples of 16,
/// through cuSPARSELt. Other layers are left as they are and not reported. Convolutions need
/// the size of their inputs: [`sparsify_with_input`].
pub fn sparsify(module: &mut Module, options: &SpeedOptions) -> Result<Vec<LayerChoice>> {
    convert(module, None, options)
}

/// [`sparsify`], and the pruned 2-d convolutions too: layers of kind `"Conv2d"` that declare
/// their [`conv_config`](Module::conv_config) (as [`layers::conv2d`](crate::layers::conv2d)
/// does) with groups 1 and zero padding, whose float CPU weight holds zeros. One forward pass
/// of `example` (evaluation mode, no gradients) finds each convolution's input size; each is
/// measured on inputs of that size at `options.batch`.
///
/// ```
/// use tch::{nn, Device, Kind, Tensor};
/// use tchprune::{layers, prune, sparse};
///
/// let vs = nn::VarStore::new(Device::Cpu);
/// let mut model = layers::sequential([
///     layers::conv2d(&(vs.root() / "conv"), 64, 64, 3, Default::default()),
///     layers::relu(),
/// ]);
/// prune::l1_unstructured(&mut model, "0.weight", 0.95, None)?;
/// let example = Tensor::randn([1, 64, 7, 7], (Kind::Float, Device::Cpu));
/// let choices = sparse::sparsify_with_input(&mut model, &example, &Default::default())?;
/// assert_eq!(choices[0].weight, "0.weight");
/// # Ok::<(), tchprune::PruneError>(())
/// ```
pub fn sparsify_with_input(
    module: &mut Module,
    example: &Tensor,
    options: &SpeedOptions,
) -> Result<Vec<LayerChoice>> {
    convert(module, Some(example), options)
}

/// A layer's sparse form.
enum Fast {
    Linear(Linear),
    Conv(Box<SparseConv2d>),
}

impl Fast {
    fn try_forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Fast::Linear(layer) => layer.try_forward(xs),
            Fast::Conv(layer) => layer.try_forward(xs),
        }
    }
}

enum Candidate {
    Linear(super::SparseFormat),
    Conv2d(nn::ConvConfig),
}

fn convert(
    module: &mut Module,
    example: Option<&Tensor>,
    options: &SpeedOptions,
) -> Result<Vec<LayerChoice>> {
    let mut candidates = Vec::new();
    for (path, layer) in module.named_modules() {
        let Some(weight) = layer.try_get_optional("weight")? else {
            continue;
        };
        let candidate = match (layer.kind(), layer.conv_config()) {
            ("Linear", _) => candidate_format(&weight)?.map(Candidate::Linear),
            ("Conv2d", Some(config)) if example.is_some() && conv_candidate(&weight, config)? => {
                Some(Candidate::Conv2d(*config))
            }
            _ => None,
        };
        if let Some(candidate) = candidate.filter(|_| layer.forward_fn().is_some()) {
            candidates.push((path, candidate));
        }
    }
    let conv_paths: Vec<&str> = (candidates.iter())
        .filter(|(_, c)| matches!(c, Candidate::Conv2d(_)))
        .map(|(path, _)| path.as_str())
        .collect();
    let input_shapes = match example {
        Some(example) if !conv_paths.is_empty() => input_shapes(module, &conv_paths, example)?,
        _ => HashMap::new(),
    };

    let mut choices = Vec::new();
    let mut chosen = Vec::new();
    for (path, candidate) in &candidates {
        let layer = module.submodule(path)?;
        let weight = layer.get("weight");
        let bias = layer.try_get_optional("bias")?;
        let key = join(path, "weight");
        let (fast, choice) = match candidate {
            Candidate::Linear(format) => {
                let (fast, choice) = measure_in(*format, &key, &weight, bias.as_ref(), options)?;
                (fast.map(Fast::Linear), choice)
            }
            Candidate::Conv2d(config) => {
                let Some(&[_, channels, h, w]) = input_shapes.get(path.as_str()).map(Vec::as_slice)
                else {
                    continue;
                };
                let shape = [options.batch.max(1), channels, h, w];
                let (fast, choice) =
                    measure_conv(&key, &weight, bias.as_ref(), *config, shape, options)?;
                (fast.map(|conv| Fast::Conv(Box::new(conv))), choice)
            }
        };
        if let Some(fast) = fast {
            chosen.push((path.clone(), fast));
        }
        choices.push(choice);
    }
    for (path, fast) in chosen {
        install(module.submodule_mut(&path)?, fast);
    }
    Ok(choices)
}

/// Whether a convolution can be measured in CSR: a 4-d float CPU weight with zeros, groups 1,
/// zero padding.
fn conv_candidate(weight: &Tensor, config: &nn::ConvConfig) -> Result<bool> {
    let takes = weight.dim() == 4
        && weight.device() == Device::Cpu
        && weight.is_floating_point()
        && config.groups == 1
        && matches!(config.padding_mode, nn::PaddingMode::Zeros);
    Ok(takes && has_zeros(weight)?)
}

/// The sparse form as the layer's forward function, the original one kept for what the sparse
/// form does not do.
fn install(layer: &mut Module, fast: Fast) {
    let original = layer
        .forward_fn()
        .expect("candidates have a forward function");
    let versions = tensor_versions(layer);
    let fast = Mutex::new(fast);
    layer.set_forward(move |m, xs, train| {
        if train || xs.requires_grad() || tensor_versions(m) != versions {
            return original(m, xs, train);
        }
        let fast = fast.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        fast.try_forward(xs)
            .unwrap_or_else(|_| original(m, xs, train))
    });
}

/// The autograd version counters of a layer's stored tensors: they change with every in-place
/// write (an optimizer step, a new mask).
fn tensor_versions(layer: &Module) -> Vec<i64> {
    (layer.parameters().chain(layer.buffers()))
        .map(|(_, t)| t.internal_version())
        .collect()
}

/// The input shape of each layer at `paths` in one forward pass of `example` (evaluation mode,
/// no gradients); the layers' forward functions are restored whatever happens.
fn input_shapes(
    module: &mut Module,
    paths: &[&str],
    example: &Tensor,
) -> Result<HashMap<String, Vec<i64>>> {
    let seen: Arc<Mutex<HashMap<String, Vec<i64>>>> = Arc::default();
    let mut originals: Vec<(&str, Option<ForwardFn>)> = Vec::new();
    for &path in paths {
        let layer = module.submodule_mut(path)?;
        let Some(original) = layer.forward_fn() else {
            continue;
        };
        let (seen, key) = (Arc::clone(&seen), path.to_owned());
        let recording: ForwardFn = Arc::new(move |m, xs, train| {
            let mut seen = seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            seen.entry(key.clone()).or_insert_with(|| xs.size());
            drop(seen);
            original(m, xs, train)
        });
        originals.push((path, layer.replace_forward_fn(Some(recording))));
    }
    let run = std::panic::AssertUnwindSafe(|| {
        tch::no_grad(|| nn::ModuleT::forward_t(&*module, example, false))
    });
    let outcome = std::panic::catch_unwind(run);
    for (path, original) in originals {
        module.submodule_mut(path)?.replace_forward_fn(original);
    }
    let _output = outcome.map_err(|panic| PruneError::InvalidArgument {
        method: "sparse".to_owned(),
        argument: "example input".to_owned(),
        reason: format!(
            "the model's forward pass failed on an input of shape {:?}: {}",
            example.size(),
            panic_message(panic.as_ref())
        ),
    })?;
    let shapes = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(shapes)
}
