//! The reparametrization: what pruning, re-pruning and `remove` do to a module.
//!
//! Each operation first computes everything that can fail (the new mask, checked) without
//! touching the module, then commits with steps that cannot fail. That is how a failed pruning
//! leaves the module exactly as it was, also when the tensor was already pruned (PyTorch only
//! restores the first pruning of a tensor) and across all tensors of a global pruning.

use crate::container::{all_kept, combine_masks, first_mask, PruningContainer};
use crate::error::{PruneError, Result};
use crate::mask_in_place;
use crate::method::global_magnitude::global_magnitude_masks;
use crate::method::{CustomFromMask, PruningMethod, PruningType};
use crate::module::{mask_name, orig_name, split_tensor_path, Module};
use std::collections::HashSet;
use std::sync::Arc;
use tch::Tensor;

/// A pruning that has been computed and checked (its mask already on the tensor's device) but
/// not yet written into the module.
struct PlannedPruning {
    module_path: String,
    name: String,
    method: Arc<dyn PruningMethod>,
    mask: Tensor,
}

/// The tensor `name` of `module` as PyTorch's `getattr(module, name)` gives it, its current mask
/// if it is pruned, or an error if `module` has no such parameter.
fn current_state(module: &Module, name: &str) -> Result<(Tensor, Option<Tensor>)> {
    let (stored, mask) = stored_state(module, name)?;
    match mask {
        Some(mask) => Ok((module.try_get(name)?, Some(mask))),
        None => Ok((stored, None)),
    }
}

/// Like [`current_state`], but a pruned tensor comes as `name_orig`, which equals
/// `getattr(module, name)` wherever the mask keeps entries: all that unstructured ranking reads.
fn stored_state(module: &Module, name: &str) -> Result<(Tensor, Option<Tensor>)> {
    if module.pruning_hook(name).is_some() {
        let (orig, mask) = module.pruned_pair(name)?;
        return Ok((orig.detach(), Some(mask.shallow_clone())));
    }
    let parameter = module
        .parameter(name)
        .ok_or_else(|| PruneError::UnknownParameter {
            module: module.kind().to_owned(),
            name: name.to_owned(),
        })?;
    for taken in [orig_name(name), mask_name(name)] {
        if module.has_attribute(&taken) {
            return Err(PruneError::NameTaken {
                module: module.kind().to_owned(),
                name: taken,
            });
        }
    }
    Ok((parameter.detach(), None))
}

fn checked_scores(scores: Option<&Tensor>, tensor: Tensor, what: &str) -> Result<Tensor> {
    match scores {
        None => Ok(tensor),
        Some(scores) if scores.size() != tensor.size() => Err(PruneError::ShapeMismatch {
            what: format!("importance scores of {what}"),
            expected: tensor.size(),
            actual: scores.size(),
        }),
        Some(scores) => Ok(scores.detach()),
    }
}

fn plan(
    root: &Module,
    path: &str,
    method: Arc<dyn PruningMethod>,
    importance_scores: Option<&Tensor>,
) -> Result<PlannedPruning> {
    let (module_path, name) = split_tensor_path(path);
    let module = root.submodule(module_path)?;
    tch::no_grad(|| {
        let (tensor, current_mask) = current_state(module, name)?;
        let device = tensor.device();
        let scores = checked_scores(importance_scores, tensor, path)?;
        let mask = match &current_mask {
            None => first_mask(method.as_ref(), &scores)?,
            Some(current) => combine_masks(method.as_ref(), &scores, current)?,
        };
        Ok(PlannedPruning {
            module_path: module_path.to_owned(),
            name: name.to_owned(),
            method,
            mask: mask.f_to_device(device)?,
        })
    })
}

/// Writes a planned pruning into the module. Nothing here can fail: every check ran in `plan`.
fn commit(root: &mut Module, planned: PlannedPruning) {
    let module = root
        .submodule_mut(&planned.module_path)
        .expect("the sub-module was found while planning");
    let (name, mask) = (planned.name, planned.mask);
    match module
        .hooks_mut()
        .iter()
        .position(|h| h.tensor_name() == name)
    {
        None => {
            let parameters = module.parameters_mut();
            let index = parameters
                .iter()
                .position(|(n, _)| *n == name)
                .expect("planned");
            let (_, orig) = parameters.remove(index);
            parameters.push((orig_name(&name), orig));
            module.buffers_mut().push((mask_name(&name), mask));
            let mut hook = PruningContainer::new(&name);
            hook.add_pruning_method(&name, planned.method)
                .expect("same tensor name");
            module.hooks_mut().push(hook);
        }
        Some(index) => {
            let mask_key = mask_name(&name);
            if let Some((_, buffer)) = module
                .buffers_mut()
                .iter_mut()
                .find(|(n, _)| *n == mask_key)
            {
                *buffer = mask;
            }
            let mut hook = module.hooks_mut().remove(index);
            hook.add_pruning_method(&name, planned.method)
                .expect("same tensor name");
            module.hooks_mut().push(hook);
        }
    }
}

/// Prunes the tensor at `path` (`"weight"`, or `"conv1.weight"` relative to `module`) with
/// `method`: PyTorch's `BasePruningMethod.apply`.
///
/// The first time, the parameter moves to `name_orig` (the same tensor, same storage), the
/// buffer `name_mask` is added and `name` becomes `orig * mask` in every forward. Applied again,
/// the method only sees what is still unpruned, and joins the tensor's history. Scores of the
/// tensor's shape, if given, rank the entries instead of the tensor itself. On error the module
/// is unchanged.
pub fn apply(
    module: &mut Module,
    path: &str,
    method: Arc<dyn PruningMethod>,
    importance_scores: Option<&Tensor>,
) -> Result<()> {
    let planned = plan(module, path, method, importance_scores)?;
    commit(module, planned);
    Ok(())
}

/// Prunes several distinct tensors (paths relative to `root`) as one operation: every pruning
/// is planned and checked before the first is written, so an error leaves `root` unchanged.
pub(crate) fn apply_all(
    root: &mut Module,
    prunings: Vec<(String, Arc<dyn PruningMethod>)>,
) -> Result<()> {
    let planned = prunings
        .into_iter()
        .map(|(path, method)| plan(root, &path, method, None))
        .collect::<Result<Vec<_>>>()?;
    for planned in planned {
        commit(root, planned);
    }
    Ok(())
}

/// Makes the pruning of the tensor at `path` permanent: `name` becomes a plain parameter again,
/// the very tensor that was `name_orig`, now holding `orig * mask`; `name_orig`, `name_mask` and
/// the history are gone. An error if the tensor is not pruned.
pub fn remove(module: &mut Module, path: &str) -> Result<()> {
    let (module_path, name) = split_tensor_path(path);
    let module = module.submodule_mut(module_path)?;
    let hook_index = module
        .pruning_hooks()
        .iter()
        .position(|hook| hook.tensor_name() == name)
        .ok_or_else(|| PruneError::NotPruned {
            module: module.kind().to_owned(),
            name: name.to_owned(),
        })?;
    let (orig, mask) = module.pruned_pair(name)?;
    let mut orig = orig.shallow_clone();
    mask_in_place::mul_mask_(&mut orig, mask)?;
    let (orig_key, mask_key) = (orig_name(name), mask_name(name));
    module.parameters_mut().retain(|(n, _)| *n != orig_key);
    module.buffers_mut().retain(|(n, _)| *n != mask_key);
    module.hooks_mut().remove(hook_index);
    module.parameters_mut().push((name.to_owned(), orig));
    Ok(())
}

/// Prunes the tensors at `paths` (relative to `root`) together, as one flat set of entries:
/// PyTorch's `prune.global_unstructured`.
///
/// `method` must be unstructured; it sees the still unpruned entries of every listed tensor (or
/// their importance scores, from `importance_scores` by path) at once, and each tensor then
/// records a `custom_from_mask` with its share of the result. On error nothing changes.
pub fn global_unstructured(
    root: &mut Module,
    paths: &[&str],
    method: Arc<dyn PruningMethod>,
    importance_scores: &[(&str, &Tensor)],
) -> Result<()> {
    if method.pruning_type() != PruningType::Unstructured {
        return Err(PruneError::WrongPruningType {
            method: method.name().to_owned(),
            reason: format!(
                "only \"unstructured\" methods can be applied globally, got {}",
                method.pruning_type()
            ),
        });
    }
    let mut seen = HashSet::new();
    if let Some(duplicate) = paths.iter().find(|path| !seen.insert(**path)) {
        return Err(PruneError::DuplicateParameter((*duplicate).to_owned()));
    }
    if let Some((unknown, _)) = importance_scores.iter().find(|(p, _)| !seen.contains(p)) {
        return Err(PruneError::UnknownParameter {
            module: "global_unstructured".to_owned(),
            name: format!("{unknown} (has importance scores but is not listed)"),
        });
    }
    let mut devices = Vec::with_capacity(paths.len());
    let new_masks = tch::no_grad(|| -> Result<Vec<Tensor>> {
        let mut all_scores = Vec::with_capacity(paths.len());
        let mut all_masks = Vec::with_capacity(paths.len());
        for path in paths {
            let (module_path, name) = split_tensor_path(path);
            let (tensor, mask) = stored_state(root.submodule(module_path)?, name)?;
            devices.push(tensor.device());
            let scores = importance_scores
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, s)| *s);
            all_scores.push(checked_scores(scores, tensor, path)?);
            all_masks.push(mask);
        }
        if let Some(amount) = method.magnitude_amount() {
            if let Some(masks) = global_magnitude_masks(&all_scores, &all_masks, amount)? {
                return Ok(masks);
            }
        }
        concatenated_masks(method.as_ref(), &all_scores, &all_masks)
    })?;
    let mut planned = Vec::with_capacity(paths.len());
    for ((path, mask), device) in paths.iter().zip(new_masks).zip(devices) {
        let (module_path, name) = split_tensor_path(path);
        planned.push(PlannedPruning {
            module_path: module_path.to_owned(),
            name: name.to_owned(),
            method: Arc::new(CustomFromMask::new(&mask)?),
            mask: mask.f_to_device(device)?,
        });
    }
    for planned in planned {
        commit(root, planned);
    }
    Ok(())
}

/// PyTorch's way: one container over the concatenation of every tensor's scores and masks,
/// then each tensor's share of the result.
fn concatenated_masks(
    method: &dyn PruningMethod,
    scores: &[Tensor],
    masks: &[Option<Tensor>],
) -> Result<Vec<Tensor>> {
    let flat_scores = scores
        .iter()
        .map(|s| s.f_reshape([-1]))
        .collect::<tch::Result<Vec<_>>>()?;
    let flat_masks = masks
        .iter()
        .zip(scores)
        .map(|(mask, score)| match mask {
            Some(mask) => Ok(mask.f_reshape([-1])?),
            None => all_kept(&score.f_reshape([-1])?),
        })
        .collect::<Result<Vec<_>>>()?;
    let final_mask = combine_masks(
        method,
        &Tensor::f_cat(&flat_scores, 0)?,
        &Tensor::f_cat(&flat_masks, 0)?,
    )?;
    let mut offset = 0;
    scores
        .iter()
        .map(|score| {
            let numel = score.numel() as i64;
            let share = final_mask
                .f_slice(0, offset, offset + numel, 1)?
                .f_reshape(score.size())?;
            offset += numel;
            Ok(share)
        })
        .collect()
}

/// True when `module` or any of its sub-modules has a pruned tensor.
pub fn is_pruned(module: &Module) -> bool {
    module.is_pruned()
}
