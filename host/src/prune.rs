//! The functions of PyTorch's `torch.nn.utils.prune`, one for each built-in method.
//!
//! Each takes the module, the tensor's path relative to it (`"weight"`, or `"conv1.weight"`
//! from the model's root) and the method's arguments, and prunes through [`apply`]. A failure
//! leaves the module exactly as it was.
//!
//! ```
//! use tch::{nn, Device};
//! use tchprune::{layers, prune};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let mut model = layers::lenet(&vs.root());
//! prune::random_unstructured(&mut model, "conv1.weight", 0.3)?;
//! prune::l1_unstructured(&mut model, "conv1.bias", 3, None)?;
//! let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
//! assert_eq!(names[..2], ["conv1.weight_orig", "conv1.bias_orig"]);
//! prune::remove(&mut model, "conv1.weight")?;
//! # Ok::<(), tchprune::PruneError>(())
//! ```

use crate::amount::Amount;
use crate::calibration::LayerStatistics;
use crate::engine;
use crate::error::Result;
use crate::method::{
    CustomFromMask, Identity, L1Unstructured, LnStructured, Norm, PruningMethod, RandomStructured,
    RandomUnstructured,
};
use crate::module::Module;
use std::sync::Arc;
use tch::Tensor;

mod sealed {
    pub trait Sealed: crate::engine::MaskStore {}
    impl Sealed for crate::Module {}
    impl Sealed for crate::VarStorePruner {}
}

/// What can be pruned: a [`Module`] (PyTorch's reparametrization) or a
/// [`VarStorePruner`](crate::VarStorePruner) (masks beside an `nn::VarStore`). Both run the same
/// mask engine, so the same calls give the
/// same masks; every function of this module takes either.
pub trait Prunable: sealed::Sealed {
    /// Prunes the tensor at `path` with `method`; see [`apply`].
    fn prune_with(
        &mut self,
        path: &str,
        method: Arc<dyn PruningMethod>,
        importance_scores: Option<&Tensor>,
    ) -> Result<()>
    where
        Self: Sized,
    {
        engine::apply(self, path, method, importance_scores)
    }

    /// Prunes the tensors at `paths` together; see [`global_unstructured`].
    fn prune_global(
        &mut self,
        paths: &[&str],
        method: Arc<dyn PruningMethod>,
        importance_scores: &[(&str, &Tensor)],
    ) -> Result<()>
    where
        Self: Sized,
    {
        engine::global_unstructured(self, paths, method, importance_scores)
    }

    /// Prunes the tensor at `path` with a data-aware method; see [`apply_calibrated`].
    fn prune_calibrated(
        &mut self,
        path: &str,
        method: Arc<dyn PruningMethod>,
        statistics: &LayerStatistics,
    ) -> Result<()>
    where
        Self: Sized,
    {
        engine::apply_calibrated(self, path, method, statistics)
    }

    /// Makes the pruning of the tensor at `path` permanent; see [`remove`].
    fn remove_pruning(&mut self, path: &str) -> Result<()>;

    /// True when any tensor is pruned.
    fn has_pruned(&self) -> bool;

    /// The tensor at `path` as the model's forward pass sees it (`orig * mask` when pruned),
    /// detached.
    fn tensor(&self, path: &str) -> Result<Tensor>;

    /// How many entries of the tensor at `path` are zero as the forward pass sees it, and how
    /// many entries it has.
    fn count_zeros(&self, path: &str) -> Result<(i64, i64)>
    where
        Self: Sized,
    {
        engine::count_zeros(self, path)
    }
}

impl Prunable for Module {
    fn remove_pruning(&mut self, path: &str) -> Result<()> {
        crate::reparam::remove(self, path)
    }

    fn has_pruned(&self) -> bool {
        Module::is_pruned(self)
    }

    fn tensor(&self, path: &str) -> Result<Tensor> {
        use crate::engine::MaskStore;
        Ok(self.current(path)?.0.detach())
    }
}

/// Prunes the tensor at `path` (`"weight"`, or `"conv1.weight"` from the root) with `method`:
/// PyTorch's `BasePruningMethod.apply`.
///
/// The first time on a [`Module`], the parameter moves to `name_orig` (the same tensor, same
/// storage), the buffer `name_mask` is added and `name` becomes `orig * mask` in every forward;
/// on a [`VarStorePruner`](crate::VarStorePruner), the mask is kept beside the variable and the variable's pruned
/// entries are set to zero. Applied again, the method only sees what is still unpruned (as its
/// PRUNING_TYPE says) and joins the tensor's history. Scores of the tensor's shape, if given,
/// rank the entries instead of the tensor itself. On error nothing changes.
pub fn apply(
    target: &mut impl Prunable,
    path: &str,
    method: Arc<dyn PruningMethod>,
    importance_scores: Option<&Tensor>,
) -> Result<()> {
    target.prune_with(path, method, importance_scores)
}

/// Prunes the weight at `path` (`[out, in]`) with a data-aware method (Wanda, SparseGPT, a
/// plugin's) given the statistics of its layer's inputs, collected with a
/// [`Calibration`](crate::calibration::Calibration).
///
/// The method sees the whole weight (as the forward pass sees it) and its current mask, and
/// returns a mask and, for SparseGPT, new values for the kept entries; both are checked before
/// anything is written. The new values become the stored tensor (`P_orig` on a [`Module`], the
/// variable on a [`VarStorePruner`](crate::VarStorePruner)), the mask the mask, and the method
/// joins the history. On error nothing changes.
///
/// ```
/// use std::sync::Arc;
/// use tch::{nn, nn::Module as _, Device, Kind, Tensor};
/// use tchprune::calibration::{Calibration, Needs};
/// use tchprune::{method::SparseGpt, prune, VarStorePruner};
///
/// let vs = nn::VarStore::new(Device::Cpu);
/// let calibration = Calibration::new(Needs::GRAM);
/// let fc = calibration.linear(&(vs.root() / "fc"), 16, 8, Default::default());
/// let _ = fc.forward(&Tensor::randn([64, 16], (Kind::Float, Device::Cpu)));
/// let stats = calibration.statistics("fc.weight")?.unwrap();
///
/// let mut pruner = VarStorePruner::new(&vs);
/// prune::apply_calibrated(&mut pruner, "fc.weight", Arc::new(SparseGpt::new(0.5, None)?), &stats)?;
/// assert!(pruner.sparsity(&["fc.weight"])?[0].zeros >= 64);
/// # Ok::<(), tchprune::PruneError>(())
/// ```
pub fn apply_calibrated(
    target: &mut impl Prunable,
    path: &str,
    method: Arc<dyn PruningMethod>,
    statistics: &LayerStatistics,
) -> Result<()> {
    target.prune_calibrated(path, method, statistics)
}

/// Prunes the tensors at `paths` together, as one flat set of entries: PyTorch's
/// `prune.global_unstructured`.
///
/// `method` must be unstructured; it sees the still unpruned entries of every listed tensor (or
/// their importance scores, from `importance_scores` by path) at once, and each tensor then
/// records a `custom_from_mask` with its share of the result. On error nothing changes.
pub fn global_unstructured(
    target: &mut impl Prunable,
    paths: &[&str],
    method: Arc<dyn PruningMethod>,
    importance_scores: &[(&str, &Tensor)],
) -> Result<()> {
    target.prune_global(paths, method, importance_scores)
}

/// Makes the pruning of the tensor at `path` permanent (`prune.remove`): the tensor keeps
/// `orig * mask` as a plain parameter, and its mask and history are gone. An error if the
/// tensor is not pruned.
pub fn remove(target: &mut impl Prunable, path: &str) -> Result<()> {
    target.remove_pruning(path)
}

/// True when any tensor of `target` is pruned (`prune.is_pruned`).
pub fn is_pruned(target: &impl Prunable) -> bool {
    target.has_pruned()
}

/// Reparametrizes the tensor without pruning anything (`prune.identity`).
pub fn identity(target: &mut impl Prunable, path: &str) -> Result<()> {
    apply(target, path, Arc::new(Identity), None)
}

/// Prunes `amount` random entries (`prune.random_unstructured`).
pub fn random_unstructured(
    target: &mut impl Prunable,
    path: &str,
    amount: impl Into<Amount>,
) -> Result<()> {
    apply(
        target,
        path,
        Arc::new(RandomUnstructured::new(amount)?),
        None,
    )
}

/// Prunes the `amount` entries of smallest magnitude, or of smallest `importance_scores`
/// (`prune.l1_unstructured`).
pub fn l1_unstructured(
    target: &mut impl Prunable,
    path: &str,
    amount: impl Into<Amount>,
    importance_scores: Option<&Tensor>,
) -> Result<()> {
    apply(
        target,
        path,
        Arc::new(L1Unstructured::new(amount)?),
        importance_scores,
    )
}

/// Prunes `amount` random slices along `dim` (`prune.random_structured`).
pub fn random_structured(
    target: &mut impl Prunable,
    path: &str,
    amount: impl Into<Amount>,
    dim: i64,
) -> Result<()> {
    apply(
        target,
        path,
        Arc::new(RandomStructured::new(amount, dim)?),
        None,
    )
}

/// Prunes the `amount` slices along `dim` of smallest `n`-norm (`prune.ln_structured`).
pub fn ln_structured(
    target: &mut impl Prunable,
    path: &str,
    amount: impl Into<Amount>,
    n: Norm,
    dim: i64,
    importance_scores: Option<&Tensor>,
) -> Result<()> {
    apply(
        target,
        path,
        Arc::new(LnStructured::new(amount, n, dim)?),
        importance_scores,
    )
}

/// Prunes where `mask` is 0, on top of the current mask (`prune.custom_from_mask`).
pub fn custom_from_mask(target: &mut impl Prunable, path: &str, mask: &Tensor) -> Result<()> {
    apply(target, path, Arc::new(CustomFromMask::new(mask)?), None)
}

/// PyTorch's `method.prune(t)`: `t` times the method's mask, computed from `importance_scores`
/// (or `t` itself), without any module.
pub fn prune_tensor(
    method: &dyn PruningMethod,
    t: &Tensor,
    importance_scores: Option<&Tensor>,
) -> Result<Tensor> {
    let scores = importance_scores.unwrap_or(t);
    if scores.size() != t.size() {
        return Err(crate::PruneError::ShapeMismatch {
            what: "importance scores".to_owned(),
            expected: t.size(),
            actual: scores.size(),
        });
    }
    let mask = crate::container::first_mask(method, scores)?;
    Ok(t.f_mul(&mask.f_to_device(t.device())?)?)
}
