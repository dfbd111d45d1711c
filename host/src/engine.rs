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

use crate::container::{all_kept, combine_masks, first_mask};
use crate::error::{PruneError, Result};
use crate::method::global_magnitude::global_magnitude_masks;
use crate::method::{CustomFromMask, PruningMethod, PruningType};
use std::collections::HashSet;
use std::sync::Arc;
use tch::Tensor;

/// A pruning computed and checked (its mask already on the tensor's device) but not written.
pub(crate) struct PlannedMask {
    /// The tensor's dotted path.
    pub path: String,
    /// The method, for the tensor's history.
    pub method: Arc<dyn PruningMethod>,
    /// The new `bool` mask.
    pub mask: Tensor,
}

/// What a front end provides to the engine.
pub(crate) trait MaskStore {
    /// The tensor at `path` as the forward pass sees it (detached) and its current `bool`
    /// mask, or `None` when it is not pruned yet. An error names `path` when there is no such
    /// prunable tensor.
    fn current(&self, path: &str) -> Result<(Tensor, Option<Tensor>)>;

    /// Like [`MaskStore::current`], for callers that only read the unpruned entries: a front end
    /// may return the stored tensor without multiplying it by the mask.
    fn stored(&self, path: &str) -> Result<(Tensor, Option<Tensor>)> {
        self.current(path)
    }

    /// Writes a planned pruning and records its method in the tensor's history. Cannot fail:
    /// [`plan`] has checked everything.
    fn commit(&mut self, planned: PlannedMask);
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
        Ok(PlannedMask {
            path: path.to_owned(),
            method,
            mask: mask.f_to_device(device)?,
        })
    })
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

/// Prunes several distinct tensors as one operation: all are planned and checked before the
/// first is written.
pub(crate) fn apply_all(
    store: &mut impl MaskStore,
    prunings: Vec<(String, Arc<dyn PruningMethod>)>,
) -> Result<()> {
    let planned = prunings
        .into_iter()
        .map(|(path, method)| plan(store, &path, method, None))
        .collect::<Result<Vec<_>>>()?;
    for planned in planned {
        store.commit(planned);
    }
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
        });
    }
    for planned in planned {
        store.commit(planned);
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
