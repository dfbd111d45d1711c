//! The method history of one pruned tensor, and how a new method combines with earlier masks.
//!
//! PyTorch's `PruningContainer._combine_masks`: a method applied to an already pruned tensor only
//! sees the part that is still unpruned, chosen by its PRUNING_TYPE, and its partial mask is
//! written back into those positions, so pruned entries stay pruned forever.

use crate::error::{panic_message, PruneError, Result};
use crate::method::custom::bool_if_binary;
use crate::method::{PruningMethod, PruningType};
use std::fmt;
use std::sync::Arc;
use tch::{Kind, Tensor};

/// The pruning methods applied to one tensor, oldest first (PyTorch's `PruningContainer`; a
/// tensor pruned once holds a history of one).
#[derive(Clone)]
pub struct PruningContainer {
    tensor_name: String,
    history: Vec<Arc<dyn PruningMethod>>,
}

impl PruningContainer {
    /// An empty history for the tensor `tensor_name`.
    pub fn new(tensor_name: impl Into<String>) -> Self {
        Self {
            tensor_name: tensor_name.into(),
            history: Vec::new(),
        }
    }

    /// The tensor this history belongs to.
    pub fn tensor_name(&self) -> &str {
        &self.tensor_name
    }

    /// The methods applied so far, oldest first.
    pub fn history(&self) -> &[Arc<dyn PruningMethod>] {
        &self.history
    }

    /// The names of the methods applied so far, oldest first.
    pub fn method_names(&self) -> Vec<&str> {
        self.history.iter().map(|method| method.name()).collect()
    }

    /// Appends a method acting on `tensor_name`, which must be this container's tensor.
    pub fn add_pruning_method(
        &mut self,
        tensor_name: &str,
        method: Arc<dyn PruningMethod>,
    ) -> Result<()> {
        if tensor_name != self.tensor_name {
            return Err(PruneError::ContainerTensorMismatch {
                expected: self.tensor_name.clone(),
                actual: tensor_name.to_owned(),
            });
        }
        self.history.push(method);
        Ok(())
    }

    /// The mask after applying the latest method on top of `default_mask` (the current mask):
    /// the method only sees the still unpruned part of `t`, as its PRUNING_TYPE says.
    pub fn compute_mask(&self, t: &Tensor, default_mask: &Tensor) -> Result<Tensor> {
        let method = self
            .history
            .last()
            .ok_or_else(|| PruneError::MethodFailed {
                method: "PruningContainer".to_owned(),
                reason: format!("no pruning method for '{}' yet", self.tensor_name),
            })?;
        combine_masks(method.as_ref(), t, default_mask)
    }
}

impl fmt::Debug for PruningContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.tensor_name)?;
        match self.history.as_slice() {
            [single] => write!(f, "{}", single.name()),
            _ => write!(f, "PruningContainer{:?}", self.method_names()),
        }
    }
}

/// A libtorch error raised inside `method` as the method's failure to prune `t`'s dtype:
/// libtorch's kernels are what cannot handle a dtype, and its message names only the kernel.
fn unsupported_dtype(method: &dyn PruningMethod, t: &Tensor, error: PruneError) -> PruneError {
    match error {
        PruneError::Torch(error) => {
            let detail = error.to_string();
            let detail = detail.lines().next().unwrap_or_default();
            let detail = detail
                .strip_prefix("Internal torch error: ")
                .unwrap_or(detail);
            PruneError::MethodFailed {
                method: method.name().to_owned(),
                reason: format!("cannot prune {:?} tensors (libtorch: {detail})", t.kind()),
            }
        }
        other => other,
    }
}

/// Runs `method` on the part of `t` that `mask` leaves unpruned and writes its partial mask back.
pub(crate) fn combine_masks(
    method: &dyn PruningMethod,
    t: &Tensor,
    mask: &Tensor,
) -> Result<Tensor> {
    if let Some(checked) = checked_before_the_method(method, t, mask) {
        return checked;
    }
    combine_masks_unchecked_dtype(method, t, mask).map_err(|e| unsupported_dtype(method, t, e))
}

/// What the host checks before calling any method, the same way on a fresh tensor and on a
/// pruned one: the dims its declared type needs (a structured method's `dim`, on a tensor of 2
/// or more dims) and what [`PruningMethod::check_shape`] finds. `Some` when that settles it: the
/// error, or, for a tensor with no entries, `mask` itself, without calling the method (a tensor
/// of shape `[2^28, 0]` takes no bytes; ranking or drawing its 2^28 empty slices took 6.8 GB).
fn checked_before_the_method(
    method: &dyn PruningMethod,
    t: &Tensor,
    mask: &Tensor,
) -> Option<Result<Tensor>> {
    let shape = t.size();
    let checked = (|| -> Result<()> {
        if let PruningType::Structured { dim } = method.pruning_type() {
            crate::method::structured::checked_dim(t, dim)?;
        }
        method.check_shape(&shape)
    })();
    match checked {
        Err(error) => Some(Err(error)),
        Ok(()) if t.numel() == 0 => Some(mask.f_to_kind(Kind::Bool).map_err(Into::into)),
        Ok(()) => None,
    }
}

fn combine_masks_unchecked_dtype(
    method: &dyn PruningMethod,
    t: &Tensor,
    mask: &Tensor,
) -> Result<Tensor> {
    let mask = &mask.f_to_kind(Kind::Bool)?;
    match method.pruning_type() {
        PruningType::Unstructured => {
            let part = t.f_masked_select(mask)?;
            let part_mask = all_kept(&part)?;
            let partial =
                checked_mask(method, computed_mask(method, &part, &part_mask), &part_mask)?;
            Ok(mask.f_masked_scatter(mask, &partial)?)
        }
        PruningType::Structured { dim } => {
            let dim = crate::method::structured::checked_dim(t, dim)? as i64;
            let size = t.size();
            let slices = size[dim as usize];
            // Not `[slices, -1]`: libtorch cannot infer -1 when there are no entries.
            let per_slice: i64 = (size.iter().enumerate())
                .filter(|&(d, _)| d != dim as usize)
                .map(|(_, side)| side)
                .product();
            let alive = mask
                .f_movedim(dim, 0)?
                .f_reshape([slices, per_slice])?
                .f_any_dim(1, false)?
                .f_nonzero()?
                .f_view(-1)?;
            let part = t.f_index_select(dim, &alive)?;
            let part_mask = mask.f_index_select(dim, &alive)?;
            let partial =
                checked_mask(method, computed_mask(method, &part, &part_mask), &part_mask)?;
            Ok(mask.f_index_copy(dim, &alive, &partial)?)
        }
        PruningType::Global => checked_mask(method, computed_mask(method, t, mask), mask),
    }
}

/// A `bool` mask of `t`'s shape that keeps every entry.
pub(crate) fn all_kept(t: &Tensor) -> Result<Tensor> {
    match crate::small_loops::all_true(t) {
        Some(mask) => Ok(mask),
        None => Ok(Tensor::f_ones(t.size(), (Kind::Bool, t.device()))?),
    }
}

/// The mask of a tensor's first pruning: `method` runs on the whole of `scores` from a mask that
/// keeps everything (PyTorch's path without a container), then the result is checked.
pub(crate) fn first_mask(method: &dyn PruningMethod, scores: &Tensor) -> Result<Tensor> {
    let everything = all_kept(scores)?;
    if let Some(checked) = checked_before_the_method(method, scores, &everything) {
        return checked;
    }
    checked_mask(
        method,
        computed_mask(method, scores, &everything),
        &everything,
    )
    .map_err(|e| unsupported_dtype(method, scores, e))
}

/// `method.compute_mask(t, default_mask)`, a panic in it turned into the method's failure: no
/// tensor changes before every mask is computed, so the model stays as it was.
fn computed_mask(method: &dyn PruningMethod, t: &Tensor, default_mask: &Tensor) -> Result<Tensor> {
    guarded(method, || method.compute_mask(t, default_mask))
}

/// `run()`, a call into `method`, with a panic in it turned into the method's failure: no tensor
/// changes before every result is computed and checked, so the model stays as it was.
pub(crate) fn guarded<T>(method: &dyn PruningMethod, run: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|panic| {
        let message = panic_message(panic.as_ref());
        // tch panics, instead of returning the error, where libtorch fails inside a call given
        // a `Scalar` (the scalar's drop finds the error first): that error, as libtorch said it.
        let torch = message
            .strip_prefix("called `Result::unwrap()` on an `Err` value: Torch(\"")
            .map(|error| {
                let first_line = error.split("\\n").next().unwrap_or_default();
                first_line.trim_end_matches("\")")
            });
        Err(match torch {
            Some(error) => PruneError::Torch(tch::TchError::Torch(error.to_owned())),
            None => PruneError::MethodFailed {
                method: method.name().to_owned(),
                reason: format!("it panicked: {message}"),
            },
        })
    })
}

/// A method's result as a `bool` mask, after checking what every method must guarantee: the
/// shape of the default mask, values 0 and 1 only, and no pruned entry revived.
pub(crate) fn checked_mask(
    method: &dyn PruningMethod,
    result: Result<Tensor>,
    default_mask: &Tensor,
) -> Result<Tensor> {
    let what = || crate::method::describe(method);
    let mask = result?;
    let (shape, expected) = (mask.size(), default_mask.size());
    if shape != expected {
        return Err(PruneError::ShapeMismatch {
            what: format!("{}: the mask must have the tensor's shape", what()),
            expected,
            actual: shape,
        });
    }
    let mask = match mask.device() == default_mask.device() {
        true => mask,
        false => mask.f_to_device(default_mask.device())?,
    };
    let mask = bool_if_binary(&mask)?.ok_or_else(|| PruneError::NotBinaryMask(what()))?;
    let revived = match crate::small_loops::revives(&mask, default_mask) {
        Some(revived) => revived,
        None => {
            let revived = mask.f_logical_and(&default_mask.f_logical_not()?)?;
            revived.f_any()?.f_int64_value(&[])? != 0
        }
    };
    if revived {
        return Err(PruneError::RevivedEntries(what()));
    }
    Ok(mask)
}
