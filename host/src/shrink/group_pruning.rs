//! Pruning a group's channels together, so that [`shrink`](super::shrink) can remove them.

use super::groups::{DependencyGraph, Group};
use crate::container::{combine_masks, first_mask};
use crate::engine::{self, MaskStore, PlannedMask};
use crate::error::{PruneError, Result};
use crate::method::{describe, CustomFromMask, PruningMethod, PruningType};
use crate::module::split_tensor_path;
use crate::prune::Prunable;
use std::collections::HashSet;
use std::sync::Arc;
use tch::{Kind, Tensor};

/// Prunes the channels of every group of `graph` that is not fixed with `method`, a structured
/// method on dimension 0 (`ln_structured`, `random_structured`, or a plugin of that type).
///
/// The method sees, for each group, one tensor of `[channels, ...]`: every writer's rows side by
/// side, as the forward pass sees them (so `ln_structured` ranks a residual group's channels by
/// the norm over all the layers that write them). What it prunes, the group prunes everywhere:
/// each writer's rows and the same entries of the group's per-channel parameters (biases,
/// BatchNorm's weight and bias), so a pruned channel outputs exactly zero and removing it
/// changes nothing. As in PyTorch's container, the method runs on the channels still unpruned.
/// Every mask is computed and checked before the first is written: on an error the model is as
/// it was. Returns the number of channels each group has left, in the graph's order.
pub fn prune_groups(
    target: &mut impl Prunable,
    graph: &DependencyGraph,
    method: &dyn PruningMethod,
) -> Result<Vec<i64>> {
    if method.pruning_type() != (PruningType::Structured { dim: 0 }) {
        return Err(PruneError::InvalidGroups(format!(
            "{} is {}; groups are pruned by a structured method on dim 0",
            describe(method),
            method.pruning_type()
        )));
    }
    let prunable: HashSet<String> = target.tensor_paths().into_iter().collect();
    let mut planned = Vec::new();
    let mut kept = Vec::new();
    for group in graph.groups.iter().filter(|g| g.fixed.is_none()) {
        let (masks, count) = plan_group(target, &prunable, group, method)?;
        planned.extend(masks);
        kept.push(count);
    }
    engine::commit_all(target, planned);
    Ok(kept)
}

/// The masks that prune `group`'s channels, and how many channels it keeps; `prunable` holds the
/// store's tensor paths.
fn plan_group(
    store: &impl MaskStore,
    prunable: &HashSet<String>,
    group: &Group,
    method: &dyn PruningMethod,
) -> Result<(Vec<PlannedMask>, i64)> {
    tch::no_grad(|| {
        let invalid = |reason: String| {
            PruneError::InvalidGroups(format!("group of '{}': {reason}", group.writers[0]))
        };
        let mut rows = Vec::new();
        let mut row_masks = Vec::new();
        let mut channels = None;
        for writer in &group.writers {
            let (tensor, mask) = store.current(writer)?;
            let c = tensor.size().first().copied().unwrap_or(0);
            if tensor.dim() < 2 || channels.is_some_and(|n| n != c) {
                return Err(invalid(format!(
                    "writer '{writer}' has shape {:?}",
                    tensor.size()
                )));
            }
            channels = Some(c);
            let cpu = |t: &Tensor| t.f_to_device(tch::Device::Cpu)?.f_reshape([c, -1]);
            row_masks.push(match mask {
                Some(mask) => cpu(&mask)?.f_to_kind(Kind::Bool)?,
                None => Tensor::f_ones(
                    [c, tensor.numel() as i64 / c.max(1)],
                    (Kind::Bool, tch::Device::Cpu),
                )?,
            });
            rows.push(cpu(&tensor)?.f_to_kind(Kind::Double)?);
        }
        let channels = channels.ok_or_else(|| invalid("it has no writers".to_owned()))?;
        let stacked = Tensor::f_cat(&rows, 1)?;
        let current = Tensor::f_cat(&row_masks, 1)?;
        let everything_kept = bool::try_from(current.f_all()?)?;
        let mask = if everything_kept {
            first_mask(method, &stacked)
        } else {
            combine_masks(method, &stacked, &current)
        }
        .map_err(|err| invalid(err.to_string()))?;
        let keep = mask.f_any_dim(1, false)?;
        let count = keep.f_sum(Kind::Int64)?.f_int64_value(&[])?;
        let channel_mask = CustomFromMask::new(&keep.f_to_kind(Kind::Float)?)?;
        let mut planned = Vec::new();
        for key in group.writers.iter().chain(&group.channelwise) {
            let statistic = ["running_mean", "running_var"].contains(&split_tensor_path(key).1);
            if statistic && !prunable.contains(key) {
                continue; // buffers, not parameters: a zero scale and shift silence them
            }
            let (tensor, _) = store.stored(key)?;
            let mut shape = vec![1; tensor.dim()];
            shape[0] = channels;
            let expanded = channel_mask
                .bool_mask()
                .f_reshape(&shape)?
                .f_expand(tensor.size(), false)?
                .f_to_kind(Kind::Float)?;
            let method: Arc<dyn PruningMethod> = Arc::new(CustomFromMask::new(&expanded)?);
            planned.push(engine::plan(store, key, method, None)?);
        }
        Ok((planned, count))
    })
}
