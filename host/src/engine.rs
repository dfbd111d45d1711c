//! The mask engine: one implementation of pruning under both front ends.
//!
//! Pruning a tensor is the same computation whoever holds the tensor: read it as the forward
//! pass sees it (or its importance scores), run the method on what is still unpruned as its
//! PRUNING_TYPE says (the container's rules), check the result, and only then write anything.
//! The front ends differ only in where tensors live and in what writing a mask means: the
//! [`Module`](crate::Module) reparametrizes (`name_orig`, `name_mask`, a forward hook), the
//! [`VarStorePruner`](crate::VarStorePruner) keeps the mask beside a `VarStore` and zeroes the
//! variable in place. Each front end implements [`MaskStore`] for that; everything else —
//! selection, container rules, checks, global pruning, plugins — lives here once.
//!
//! Every operation plans first (all that can fail) and commits after (nothing can fail), so a
//! failed pruning leaves the front end exactly as it was, also across all tensors of a global
//! pruning.

use crate::calibration::LayerStatistics;
use crate::container::{all_kept, checked_mask, combine_masks, first_mask, guarded};
use crate::error::{PruneError, Result};
use crate::method::global_magnitude::global_magnitude_masks;
use crate::method::{CustomFromMask, PruningMethod, PruningType};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tch::{Kind, Tensor};

/// A pruning computed and checked (its mask already on the tensor's device) but not written.
pub struct PlannedMask {
    /// The tensor's dotted path.
    pub path: String,
    /// The method, for the tensor's history.
    pub method: Arc<dyn PruningMethod>,
    /// The new `bool` mask.
    pub mask: Tensor,
    /// New values for the stored tensor (a method that reconstructs the kept weights, like
    /// SparseGPT), in its dtype and on its device; `None` keeps them.
    pub values: Option<Tensor>,
}

/// Where an optimizer that knows the masks ([`MaskedAdam`](crate::optim::MaskedAdam)) finds each
/// trainable variable's mask, and what the pruned entries of a variable are.
pub enum TrainingMasks<'a> {
    /// The variables hold zeros where pruned and must keep them (a
    /// [`VarStorePruner`](crate::VarStorePruner)): the masks by variable name.
    Zeroed(&'a crate::VarStorePruner),
    /// The variables are PyTorch's `name_orig` tensors (a [`Module`](crate::Module)), whose
    /// pruned entries the forward pass never reads: the masks by their `name_orig`'s data
    /// address.
    Reparametrized(HashMap<usize, &'a Tensor>),
}

/// What a front end provides to the engine. Public only so that the sealed
/// [`Prunable`](crate::Prunable) can build on it; the module is private, so no one outside can
/// name it.
pub trait MaskStore {
    /// The tensor at `path` as the forward pass sees it (detached) and its current `bool`
    /// mask, or `None` when it is not pruned yet. An error names `path` when there is no such
    /// prunable tensor.
    fn current(&self, path: &str) -> Result<(Tensor, Option<Tensor>)>;

    /// Like [`MaskStore::current`], for callers that only read the unpruned entries: a front end
    /// may return the stored tensor without multiplying it by the mask.
    fn stored(&self, path: &str) -> Result<(Tensor, Option<Tensor>)> {
        self.current(path)
    }

    /// Writes a planned pruning (its values first, when it has some) and records its method in
    /// the tensor's history. Cannot fail: [`plan`] has checked everything.
    fn commit(&mut self, planned: PlannedMask);

    /// The dotted paths of every tensor that can be pruned (pruned or not), as the forward pass
    /// names them.
    fn tensor_paths(&self) -> Vec<String>;

    /// Writes `values` (checked by [`check_values`]) into the tensor at `path`, in place and
    /// without gradients, where the forward pass reads it: pruned entries stay pruned.
    fn overwrite(&mut self, path: &str, values: &Tensor) -> Result<()>;

    /// The masks an optimizer trains the pruned variables with.
    fn training_masks(&self) -> TrainingMasks<'_>;
}

/// Fails unless `mask` has the shape of the pruned `tensor` at `path`: a variable given data of
/// another shape (`set_data`) after its pruning no longer fits its mask, and nothing it would
/// be multiplied by or saved with makes sense.
pub(crate) fn check_mask_fits(path: &str, tensor: &Tensor, mask: &Tensor) -> Result<()> {
    if mask.size() == tensor.size() {
        return Ok(());
    }
    Err(PruneError::ShapeMismatch {
        what: format!("'{path}' changed shape since it was pruned: its mask"),
        expected: tensor.size(),
        actual: mask.size(),
    })
}

/// Checks that `values` can be written into the tensor at `path`: same shape, a dtype it converts
/// to; an error names the path.
pub(crate) fn check_values(store: &impl MaskStore, path: &str, values: &Tensor) -> Result<()> {
    let (tensor, _) = store.stored(path)?;
    if values.size() != tensor.size() {
        return Err(PruneError::ShapeMismatch {
            what: format!("the values for '{path}'"),
            expected: tensor.size(),
            actual: values.size(),
        });
    }
    Ok(())
}

/// Writes every planned pruning.
pub(crate) fn commit_all(store: &mut impl MaskStore, planned: Vec<PlannedMask>) {
    for planned in planned {
        store.commit(planned);
    }
}

/// How many entries of the tensor at `path` are zero as the forward pass sees it, and how many
/// there are; counted in place where it can be, without computing `orig * mask`.
pub(crate) fn count_zeros(store: &impl MaskStore, path: &str) -> Result<(i64, i64)> {
    let (stored, mask) = store.stored(path)?;
    let total = stored.numel() as i64;
    let counted = match &mask {
        Some(mask) => crate::small_loops::count_zeros_masked(&stored, mask),
        None => crate::small_loops::count_zeros(&stored),
    };
    if let Some(zeros) = counted {
        return Ok((zeros, total));
    }
    let (seen, _) = store.current(path)?;
    let zeros = tch::no_grad(|| seen.f_eq(0)?.f_sum(tch::Kind::Int64)?.f_int64_value(&[]))?;
    Ok((zeros, total))
}

/// `scores` when given (checked against the tensor's shape), else the tensor itself.
fn checked_scores(scores: Option<&Tensor>, tensor: Tensor, path: &str) -> Result<Tensor> {
    match scores {
        None => Ok(tensor),
        Some(scores) if scores.size() != tensor.size() => Err(PruneError::ShapeMismatch {
            what: format!("importance scores of '{path}'"),
            expected: tensor.size(),
            actual: scores.size(),
        }),
        Some(scores) => Ok(scores.detach()),
    }
}

/// Computes and checks the mask `method` gives the tensor at `path`, without writing it.
pub(crate) fn plan(
    store: &impl MaskStore,
    path: &str,
    method: Arc<dyn PruningMethod>,
    importance_scores: Option<&Tensor>,
) -> Result<PlannedMask> {
    tch::no_grad(|| {
        let (tensor, current_mask) = store.current(path)?;
        let device = tensor.device();
        let scores = checked_scores(importance_scores, tensor, path)?;
        let mask = match &current_mask {
            None => first_mask(method.as_ref(), &scores),
            Some(current) => combine_masks(method.as_ref(), &scores, current),
        }
        .map_err(|err| err.at(path))?;
        let mask = match mask.device() == device {
            true => mask,
            false => mask.f_to_device(device)?,
        };
        Ok(PlannedMask {
            path: path.to_owned(),
            method,
            mask,
            values: None,
        })
    })
}

/// Computes and checks what a data-aware `method` gives the tensor at `path` from the
/// statistics of its layer's inputs (the mask, and new values when the method rewrites the kept
/// weights), without writing it. The method sees the whole tensor and its current mask (as a
/// `global` method does); its mask is checked like every other (shape, 0 and 1, nothing
/// revived), its values for shape and finiteness.
pub(crate) fn plan_calibrated(
    store: &impl MaskStore,
    path: &str,
    method: Arc<dyn PruningMethod>,
    statistics: &LayerStatistics,
) -> Result<PlannedMask> {
    tch::no_grad(|| {
        let (tensor, current_mask) = store.current(path)?;
        let columns = tensor.size().get(1).copied();
        if tensor.dim() != 2 || columns != Some(statistics.features) {
            return Err(PruneError::ShapeMismatch {
                what: format!(
                    "{}: the statistics of '{path}' are of inputs of {} features, for a weight \
                     [out, in]",
                    crate::method::describe(method.as_ref()),
                    statistics.features
                ),
                expected: vec![
                    tensor.size().first().copied().unwrap_or(0),
                    statistics.features,
                ],
                actual: tensor.size(),
            }
            .at(path));
        }
        let default_mask = match &current_mask {
            Some(mask) => mask.f_to_kind(Kind::Bool)?,
            None => all_kept(&tensor)?,
        };
        let calibrated = guarded(method.as_ref(), || {
            method.compute_calibrated(&tensor, &default_mask, statistics)
        })
        .map_err(|e| e.at(path))?;
        let mask = checked_mask(method.as_ref(), Ok(calibrated.mask), &default_mask)
            .map_err(|e| e.at(path))?;
        let values = calibrated
            .values
            .map(|values| checked_values(method.as_ref(), &tensor, values))
            .transpose()
            .map_err(|e| e.at(path))?;
        Ok(PlannedMask {
            path: path.to_owned(),
            method,
            mask,
            values,
        })
    })
}

/// A method's new values for `tensor`, checked (its shape, finite where it is floating) and
/// converted to its dtype and device.
fn checked_values(method: &dyn PruningMethod, tensor: &Tensor, values: Tensor) -> Result<Tensor> {
    if values.size() != tensor.size() {
        return Err(PruneError::ShapeMismatch {
            what: format!(
                "{}: the new values must have the tensor's shape",
                crate::method::describe(method)
            ),
            expected: tensor.size(),
            actual: values.size(),
        });
    }
    let values = values
        .f_to_device(tensor.device())?
        .f_to_kind(tensor.kind())?;
    if values.is_floating_point() && values.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
        return Err(PruneError::MethodFailed {
            method: method.name().to_owned(),
            reason: "its new values hold NaN or infinity".to_owned(),
        });
    }
    Ok(values)
}

/// Prunes the tensor at `path` with a data-aware `method` and the statistics of its layer.
pub(crate) fn apply_calibrated(
    store: &mut impl MaskStore,
    path: &str,
    method: Arc<dyn PruningMethod>,
    statistics: &LayerStatistics,
) -> Result<()> {
    let planned = plan_calibrated(store, path, method, statistics)?;
    store.commit(planned);
    Ok(())
}

/// Prunes the tensor at `path` with `method` (PyTorch's `BasePruningMethod.apply`).
pub(crate) fn apply(
    store: &mut impl MaskStore,
    path: &str,
    method: Arc<dyn PruningMethod>,
    importance_scores: Option<&Tensor>,
) -> Result<()> {
    let planned = plan(store, path, method, importance_scores)?;
    store.commit(planned);
    Ok(())
}

/// Prunes each tensor at `path` with the mask a checkpoint holds for it (its history: one
/// `custom_from_mask`), as one operation. A tensor pruned already gets the mask on top of its
/// own, as `custom_from_mask` would; an unpruned one takes it as it is, without running a method.
pub(crate) fn restore_all(store: &mut impl MaskStore, masks: Vec<(String, Tensor)>) -> Result<()> {
    let planned = masks
        .into_iter()
        .map(|(path, mask)| {
            let restore = CustomFromMask::new(&mask).map_err(|e| e.at(&path))?;
            let mask = restore.bool_mask();
            let method = Arc::new(restore);
            let (tensor, current) = store.stored(&path)?;
            if current.is_some() {
                return plan(store, &path, method, None);
            }
            if mask.size() != tensor.size() {
                return Err(PruneError::ShapeMismatch {
                    what: format!("the mask of '{path}'"),
                    expected: tensor.size(),
                    actual: mask.size(),
                });
            }
            let mask = match mask.device() == tensor.device() {
                true => mask,
                false => mask.f_to_device(tensor.device())?,
            };
            Ok(PlannedMask {
                path,
                method,
                mask,
                values: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    commit_all(store, planned);
    Ok(())
}

/// PyTorch's `prune.global_unstructured`: `method` (unstructured) sees the unpruned entries of
/// every listed tensor at once; each tensor records a `custom_from_mask` with its share.
pub(crate) fn global_unstructured(
    store: &mut impl MaskStore,
    paths: &[&str],
    method: Arc<dyn PruningMethod>,
    importance_scores: &[(&str, &Tensor)],
) -> Result<()> {
    let planned = plan_global(store, paths, method, importance_scores)?;
    commit_all(store, planned);
    Ok(())
}

/// Computes and checks what [`global_unstructured`] would write, without writing it.
pub(crate) fn plan_global(
    store: &impl MaskStore,
    paths: &[&str],
    method: Arc<dyn PruningMethod>,
    importance_scores: &[(&str, &Tensor)],
) -> Result<Vec<PlannedMask>> {
    if method.pruning_type() != PruningType::Unstructured {
        return Err(PruneError::WrongPruningType {
            method: method.name().to_owned(),
            reason: format!(
                "only \"unstructured\" methods can be applied globally, got {}",
                method.pruning_type()
            ),
        });
    }
    if paths.is_empty() {
        return Err(PruneError::InvalidArgument {
            method: "global_unstructured".to_owned(),
            argument: "parameters".to_owned(),
            reason: "no tensors to prune: give at least one".to_owned(),
        });
    }
    let mut seen = HashSet::new();
    if let Some(duplicate) = paths.iter().find(|path| !seen.insert(**path)) {
        return Err(PruneError::DuplicateParameter((*duplicate).to_owned()));
    }
    if let Some((unknown, _)) = importance_scores.iter().find(|(p, _)| !seen.contains(p)) {
        return Err(PruneError::UnknownParameter {
            path: (*unknown).to_owned(),
            hint: " among the tensors of global_unstructured (it has importance scores but \
                   is not listed)"
                .to_owned(),
        });
    }
    let mut devices = Vec::with_capacity(paths.len());
    let new_masks = tch::no_grad(|| -> Result<Vec<Tensor>> {
        let mut all_scores = Vec::with_capacity(paths.len());
        let mut all_masks = Vec::with_capacity(paths.len());
        for path in paths {
            let (tensor, mask) = store.stored(path)?;
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
        planned.push(PlannedMask {
            path: (*path).to_owned(),
            method: Arc::new(CustomFromMask::new(&mask)?),
            mask: mask.f_to_device(device)?,
            values: None,
        });
    }
    Ok(planned)
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
