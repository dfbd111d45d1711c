//! Channel removal: structured pruning made real, a smaller state_dict with new layer widths.
//!
//! A mask that zeroes whole output channels leaves every layer its dense shape, so the pruned
//! model costs what the dense one did. [`shrink`] removes those channels: the layer's weight rows
//! and bias entries, the matching BatchNorm entries, and the input channels of every layer that
//! reads them (with the flatten factor when a linear layer reads a flattened feature map). In a
//! residual network the layers whose outputs are added together share one channel space, so a
//! channel can go only when it goes from all of them: the tensors that share a channel space
//! form a [`Group`], as in Torch-Pruning's DepGraph (Fang et al., CVPR 2023).
//!
//! The groups come from [`trace`], which runs the model's own forward pass on a fresh copy of
//! its variables and watches which inputs each output channel reaches (no hand-written coupling,
//! any tch model), or are declared as JSON where that cannot tell ([`DependencyGraph`]).
//! [`prune_groups`] prunes each group's channels together with any structured method (so the
//! channels it removes are dead in the masked model too, biases and BatchNorm included), and
//! [`shrink`] then gives a model with the same outputs, within float rounding.
//!
//! ```
//! use tch::{nn, Device, Kind, Tensor};
//! use tchprune::{checkpoint, layers, shrink, LnStructured, Norm};
//!
//! let graph = shrink::trace(layers::lenet, &[2, 1, 28, 28])?;
//! let vs = nn::VarStore::new(Device::Cpu);
//! let mut model = layers::lenet(&vs.root());
//! shrink::prune_groups(&mut model, &graph, &LnStructured::new(0.5, Norm::P(2.0), 0)?)?;
//! let state = checkpoint::state_dict_with(&model, checkpoint::MaskDtype::Parameter);
//! let shrunk = shrink::shrink(&state, &graph)?;
//! assert_eq!(shrunk.widths["conv1"], 3);
//! assert_eq!(shrunk.widths["fc2"], 42);
//! # Ok::<(), tchprune::PruneError>(())
//! ```

mod group_pruning;
mod groups;
mod models;
mod trace;

pub use crate::layers::BUILTIN_MODELS;
pub use group_pruning::prune_groups;
pub use groups::{DependencyGraph, Group, Reader};
pub use models::trace_builtin;
pub use trace::trace;

use crate::error::{PruneError, Result};
use crate::module::split_tensor_path;
use std::collections::{BTreeMap, HashMap};
use tch::{Kind, Tensor};

pub use crate::checkpoint::WIDTHS_METADATA_KEY;

/// A shrunk state_dict and what was removed.
#[derive(Debug)]
pub struct Shrunk {
    /// The tensors, in the input's order, with the removed channels gone (pruned pairs keep
    /// their `_orig` and `_mask`, both shrunk).
    pub tensors: Vec<(String, Tensor)>,
    /// The new width (output channels or features, BatchNorm features) of every layer of a
    /// group, by module path: what to build the smaller model with.
    pub widths: BTreeMap<String, i64>,
    /// Each group that can lose channels, in the graph's order.
    pub groups: Vec<ShrunkGroup>,
    /// `key[channel]` for each removed entry that was not dead in the masked model (a bias or a
    /// BatchNorm shift that is not zero): the shrunk model's outputs differ from the masked
    /// model's by what those channels carried. Empty after [`prune_groups`].
    pub live_removed: Vec<String>,
}

/// The channels of one group, before and after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShrunkGroup {
    /// The group's writers.
    pub writers: Vec<String>,
    /// How many channels it had.
    pub channels: i64,
    /// The channels kept, in order.
    pub kept: Vec<i64>,
}

impl ShrunkGroup {
    /// How many channels were removed.
    pub fn removed(&self) -> i64 {
        self.channels - self.kept.len() as i64
    }
}

/// The shape of each tensor of a state_dict by the key a group names: a pruned pair `P_orig` +
/// `P_mask` as `P`.
pub fn shapes(tensors: &[(String, Tensor)]) -> BTreeMap<String, Vec<i64>> {
    let names: std::collections::HashSet<&str> = tensors.iter().map(|(k, _)| k.as_str()).collect();
    let present = |name: &str| names.contains(name);
    tensors
        .iter()
        .filter(|(k, _)| !k.ends_with("_mask") || base_key(k, &present) == k)
        .map(|(k, t)| (base_key(k, &present).to_owned(), t.size()))
        .collect()
}

/// What `name` is a part of: `P` for `P_orig` and `P_mask` of a pruned pair, else `name`.
fn base_key<'a>(name: &'a str, present: &dyn Fn(&str) -> bool) -> &'a str {
    for (suffix, other) in [("_orig", "_mask"), ("_mask", "_orig")] {
        if let Some(base) = name.strip_suffix(suffix) {
            if present(&format!("{base}{other}")) {
                return base;
            }
        }
    }
    name
}

/// Checks `graph` against a state_dict's `tensors` before anything is computed: every key exists
/// (a pruned pair named as its parameter `P`, never as half of it, `P_orig` or `P_mask`), a
/// group's writers and per-channel tensors agree on the number of channels, each reader's factor
/// divides what it reads, and no dimension is in two groups. Errors name the group and the key.
pub fn check_groups(tensors: &[(String, Tensor)], graph: &DependencyGraph) -> Result<()> {
    let by_name: HashMap<&str, &Tensor> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let present = |name: &str| by_name.contains_key(name);
    for (index, group) in graph.groups.iter().enumerate() {
        for key in group.keys() {
            let base = base_key(key, &present);
            if base != key {
                return Err(PruneError::InvalidGroups(format!(
                    "group {}: '{key}' is half of the pruned pair '{base}': name the pair '{base}'",
                    index + 1
                )));
            }
        }
    }
    let shapes = shapes(tensors);
    graph.roles(&|key| shapes.get(key).cloned()).map(drop)
}

/// Removes, in every group of `graph` that is not fixed, the channels that all its writers
/// prune (their rows are zero as the forward pass sees them: `orig * mask` for a pruned pair).
/// A group keeps at least one channel. Nothing is written if any part of `graph` does not fit
/// `tensors`; the error names the group and the key.
pub fn shrink(tensors: &[(String, Tensor)], graph: &DependencyGraph) -> Result<Shrunk> {
    check_groups(tensors, graph)?;
    let by_name: HashMap<&str, &Tensor> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let present = |name: &str| by_name.contains_key(name);
    let lookup = |key: &str| -> Option<(Tensor, Option<&Tensor>)> {
        match (
            by_name.get(key),
            by_name.get(format!("{key}_orig").as_str()),
        ) {
            (Some(t), _) => Some(((*t).shallow_clone(), None)),
            (None, Some(orig)) => {
                let mask = by_name.get(format!("{key}_mask").as_str()).copied();
                mask.map(|m| ((*orig).shallow_clone(), Some(m)))
            }
            (None, None) => None,
        }
    };
    let roles = graph.roles(&|key| lookup(key).map(|(t, _)| t.size()))?;
    let effective = |key: &str| -> Result<Tensor> {
        let (t, mask) = lookup(key).expect("checked by roles");
        Ok(match mask {
            Some(mask) => t.f_mul(&mask.f_to_kind(t.kind())?)?,
            None => t,
        })
    };

    let mut kept_by_group: Vec<Option<Tensor>> = graph.groups.iter().map(|_| None).collect();
    let mut groups = Vec::new();
    let mut widths = BTreeMap::new();
    let mut live_removed = Vec::new();
    tch::no_grad(|| -> Result<()> {
        for (index, group) in graph.groups.iter().enumerate() {
            if group.fixed.is_some() {
                continue;
            }
            let channels = lookup(&group.writers[0]).expect("checked").0.size()[0];
            let mut alive = Tensor::f_zeros([channels], (Kind::Bool, tch::Device::Cpu))?;
            for writer in &group.writers {
                let rows = effective(writer)?
                    .f_reshape([channels, -1])?
                    .f_ne(0)?
                    .f_any_dim(1, false)?;
                alive = alive.f_logical_or(&rows.f_to_device(tch::Device::Cpu)?)?;
            }
            let mut alive: Vec<bool> = Vec::try_from(alive)?;
            if !alive.contains(&true) {
                alive[0] = true;
            }
            let (kept, removed): (Vec<i64>, Vec<i64>) =
                (0..channels).partition(|&c| alive[c as usize]);
            live_removed.extend(live_entries(group, &removed, &effective)?);
            for key in group.writers.iter().chain(&group.channelwise) {
                widths.insert(split_tensor_path(key).0.to_owned(), kept.len() as i64);
            }
            kept_by_group[index] = Some(Tensor::from_slice(&kept));
            groups.push(ShrunkGroup {
                writers: group.writers.clone(),
                channels,
                kept,
            });
        }
        Ok(())
    })?;

    let shrunk = tch::no_grad(|| {
        tensors
            .iter()
            .map(|(name, t)| {
                let role = roles
                    .get(base_key(name, &present))
                    .copied()
                    .unwrap_or_default();
                let mut t = t.shallow_clone();
                if let Some(kept) = role.out_group.and_then(|g| kept_by_group[g].as_ref()) {
                    t = t.f_index_select(0, &kept.f_to_device(t.device())?)?;
                }
                if let Some((g, factor)) = role.in_group {
                    if let Some(kept) = &kept_by_group[g] {
                        let columns = (kept.f_unsqueeze(1)? * factor
                            + Tensor::f_arange(factor, (Kind::Int64, tch::Device::Cpu))?)
                        .f_view(-1)?;
                        t = t.f_index_select(1, &columns.f_to_device(t.device())?)?;
                    }
                }
                Ok((name.clone(), t))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(Shrunk {
        tensors: shrunk,
        widths,
        groups,
        live_removed,
    })
}

/// The removed channels of `group` whose output was not zero in the masked model: a bias entry
/// that is not zero, or a BatchNorm whose shift `bias - weight * mean / sqrt(var + 1e-5)` is not.
fn live_entries(
    group: &Group,
    removed: &[i64],
    effective: &dyn Fn(&str) -> Result<Tensor>,
) -> Result<Vec<String>> {
    if removed.is_empty() {
        return Ok(Vec::new());
    }
    let removed_index = Tensor::from_slice(removed);
    let has = |key: &str| group.channelwise.iter().any(|k| k == key);
    let mut live = Vec::new();
    for key in group
        .channelwise
        .iter()
        .filter(|k| k.ends_with(".bias") || *k == "bias")
    {
        let prefix = split_tensor_path(key).0;
        let sibling = |name: &str| crate::module::join(prefix, name);
        let mut shift = effective(key)?.f_to_kind(Kind::Double)?;
        if has(&sibling("weight")) && has(&sibling("running_mean")) && has(&sibling("running_var"))
        {
            let double = |name: &str| -> Result<Tensor> {
                Ok(effective(&sibling(name))?.f_to_kind(Kind::Double)?)
            };
            let scale = double("weight")?.f_div(&(double("running_var")? + 1e-5).f_sqrt()?)?;
            shift = shift.f_sub(&scale.f_mul(&double("running_mean")?)?)?;
        }
        let shift = shift.f_to_device(tch::Device::Cpu)?;
        let values: Vec<f64> = Vec::try_from(shift.f_index_select(0, &removed_index)?)?;
        live.extend(
            (removed.iter().zip(values))
                .filter(|(_, v)| *v != 0.0)
                .map(|(c, _)| format!("{key}[{c}]")),
        );
    }
    Ok(live)
}
