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

pub use crate::reparam::{apply, global_unstructured, is_pruned, remove};

use crate::amount::Amount;
use crate::error::Result;
use crate::method::{
    CustomFromMask, Identity, L1Unstructured, LnStructured, Norm, RandomStructured,
    RandomUnstructured,
};
use crate::module::Module;
use std::sync::Arc;
use tch::Tensor;

/// Reparametrizes the tensor without pruning anything (`prune.identity`).
pub fn identity(module: &mut Module, path: &str) -> Result<()> {
    apply(module, path, Arc::new(Identity), None)
}

/// Prunes `amount` random entries (`prune.random_unstructured`).
pub fn random_unstructured(
    module: &mut Module,
    path: &str,
    amount: impl Into<Amount>,
) -> Result<()> {
    apply(
        module,
        path,
        Arc::new(RandomUnstructured::new(amount)?),
        None,
    )
}

/// Prunes the `amount` entries of smallest magnitude, or of smallest `importance_scores`
/// (`prune.l1_unstructured`).
pub fn l1_unstructured(
    module: &mut Module,
    path: &str,
    amount: impl Into<Amount>,
    importance_scores: Option<&Tensor>,
) -> Result<()> {
    apply(
        module,
        path,
        Arc::new(L1Unstructured::new(amount)?),
        importance_scores,
    )
}

/// Prunes `amount` random slices along `dim` (`prune.random_structured`).
pub fn random_structured(
    module: &mut Module,
    path: &str,
    amount: impl Into<Amount>,
    dim: i64,
) -> Result<()> {
    apply(
        module,
        path,
        Arc::new(RandomStructured::new(amount, dim)?),
        None,
    )
}

/// Prunes the `amount` slices along `dim` of smallest `n`-norm (`prune.ln_structured`).
pub fn ln_structured(
    module: &mut Module,
    path: &str,
    amount: impl Into<Amount>,
    n: Norm,
    dim: i64,
    importance_scores: Option<&Tensor>,
) -> Result<()> {
    apply(
        module,
        path,
        Arc::new(LnStructured::new(amount, n, dim)?),
        importance_scores,
    )
}

/// Prunes where `mask` is 0, on top of the current mask (`prune.custom_from_mask`).
pub fn custom_from_mask(module: &mut Module, path: &str, mask: &Tensor) -> Result<()> {
    apply(module, path, Arc::new(CustomFromMask::new(mask)?), None)
}

/// PyTorch's `method.prune(t)`: `t` times the method's mask, computed from `importance_scores`
/// (or `t` itself), without any module.
pub fn prune_tensor(
    method: &dyn crate::PruningMethod,
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
