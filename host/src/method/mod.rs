//! Pruning methods: the [`PruningMethod`] trait, its [`PruningType`], and the built-ins.
//!
//! A method only computes a mask from a tensor (or its importance scores) and a default mask; all
//! the bookkeeping (`_orig`, `_mask`, the container, rollback) belongs to [`crate::prune::apply`]. That
//! split is PyTorch's `BasePruningMethod.compute_mask` versus `BasePruningMethod.apply`, and it is
//! what lets a method written in another crate, or loaded from a plugin, behave like a built-in.
//!
//! Masks are `bool` tensors inside tchprune (PyTorch keeps them in the parameter's dtype): they are
//! four times smaller for f32 and convert losslessly to PyTorch's layout in
//! [`crate::Module::state_dict`].

mod args;
pub(crate) mod custom;
pub(crate) mod global_magnitude;
mod identity;
mod magnitude;
mod nm;
mod radix;
mod select;
mod sparsegpt;
mod sparsegpt_rows;
pub(crate) mod structured;
mod unstructured;
mod wanda;

pub use args::MethodArgs;
pub use custom::CustomFromMask;
pub use identity::Identity;
pub use magnitude::Magnitude;
pub use nm::NmPattern;
pub use sparsegpt::SparseGpt;
pub use structured::{LnStructured, Norm, RandomStructured};
pub use unstructured::{L1Unstructured, RandomUnstructured};
pub use wanda::Wanda;

use crate::calibration::{LayerStatistics, Needs};
use crate::error::Result;
use std::fmt;
use tch::Tensor;

/// What part of a tensor a method looks at when it prunes on top of an earlier mask (PyTorch's
/// `PRUNING_TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PruningType {
    /// The method sees only the entries that are still unpruned, as one flat list.
    Unstructured,
    /// The method sees only the slices along `dim` that are not entirely pruned.
    Structured {
        /// The dimension along which whole slices are pruned; negative counts from the end.
        dim: i64,
    },
    /// The method sees the whole tensor.
    Global,
}

impl PruningType {
    /// PyTorch's spelling: `"unstructured"`, `"structured"` or `"global"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PruningType::Unstructured => "unstructured",
            PruningType::Structured { .. } => "structured",
            PruningType::Global => "global",
        }
    }
}

impl fmt::Display for PruningType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PruningType::Structured { dim } => write!(f, "structured(dim={dim})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// A pruning technique: PyTorch's `BasePruningMethod` subclass.
///
/// Implement it in your own crate to add a method; the host does the rest. The tutorial's
/// method that zeroes every other entry:
///
/// ```
/// use tchprune::{PruningMethod, PruningType, Result};
/// use tch::Tensor;
///
/// #[derive(Debug)]
/// struct FooBarPruningMethod;
///
/// impl PruningMethod for FooBarPruningMethod {
///     fn name(&self) -> &str { "foobar" }
///     fn pruning_type(&self) -> PruningType { PruningType::Unstructured }
///     fn compute_mask(&self, _t: &Tensor, default_mask: &Tensor) -> Result<Tensor> {
///         let mask = default_mask.copy();
///         let _ = mask.view(-1).slice(0, 0, None, 2).fill_(0);
///         Ok(mask)
///     }
/// }
/// ```
pub trait PruningMethod: Send + Sync + fmt::Debug {
    /// The method's name, as the registry and the history show it (`"l1_unstructured"`).
    fn name(&self) -> &str;

    /// Which part of an already pruned tensor the method sees.
    fn pruning_type(&self) -> PruningType;

    /// Computes the mask for `t` (the tensor, or its importance scores) starting from
    /// `default_mask`, a `bool` tensor of the same shape. The result must have `t`'s shape, hold
    /// only 0 and 1 (any dtype; `bool` is cheapest) and keep every zero of `default_mask`.
    fn compute_mask(&self, t: &Tensor, default_mask: &Tensor) -> Result<Tensor>;

    /// The method's arguments, for histories and checkpoint metadata.
    fn arguments(&self) -> serde_json::Value {
        serde_json::Value::Object(Default::default())
    }

    /// The plugin file the method was loaded from, if any; errors about its masks name it.
    fn plugin(&self) -> Option<&std::path::Path> {
        None
    }

    /// Checks what can be told from the tensor's shape alone, before anything is pruned (a plan
    /// checks every step with it before the first step runs): a count larger than the units
    /// there are, a `dim` the tensor lacks. The default checks nothing.
    fn check_shape(&self, shape: &[i64]) -> Result<()> {
        let _ = shape;
        Ok(())
    }

    /// For a method that prunes the `amount` smallest magnitudes (L1), that amount: global
    /// pruning then ranks every tensor where it lies instead of concatenating them all.
    fn magnitude_amount(&self) -> Option<crate::Amount> {
        None
    }

    /// The statistics of the layer's inputs the method needs ([`Needs::NONE`] for a method that
    /// looks at the tensor only). A method that needs some is applied with
    /// [`prune::apply_calibrated`](crate::prune::apply_calibrated), which calls
    /// [`PruningMethod::compute_calibrated`].
    fn needs(&self) -> Needs {
        Needs::NONE
    }

    /// For a data-aware method: the mask for the weight `t` (`[out, in]`) from `default_mask`
    /// and the statistics of the layer's inputs, and, for a method that also rewrites the kept
    /// weights (SparseGPT), their new values. The mask has the same rules as
    /// [`PruningMethod::compute_mask`]'s; the values `t`'s shape (pruned entries are ignored).
    /// The default ignores the statistics.
    fn compute_calibrated(
        &self,
        t: &Tensor,
        default_mask: &Tensor,
        statistics: &LayerStatistics,
    ) -> Result<Calibrated> {
        let _ = statistics;
        Ok(Calibrated {
            mask: self.compute_mask(t, default_mask)?,
            values: None,
        })
    }
}

/// What a data-aware method computes for one weight.
#[derive(Debug)]
pub struct Calibrated {
    /// The mask, as [`PruningMethod::compute_mask`] returns it.
    pub mask: Tensor,
    /// New values for the weight (its kept entries), or `None` to keep them.
    pub values: Option<Tensor>,
}

/// The error of a data-aware method applied without statistics.
pub(crate) fn needs_statistics(method: &str) -> crate::PruneError {
    crate::PruneError::MethodFailed {
        method: method.to_owned(),
        reason: "it needs the statistics of the layer's inputs: prune with \
                 prune::apply_calibrated (or tchprune oneshot) after collecting them with a \
                 Calibration"
            .to_owned(),
    }
}

/// The `amount` argument, as every built-in method that prunes some of the units takes it.
pub(crate) const AMOUNT_ARGUMENT: (&str, &str) = (
    "amount",
    "how much to prune: an integer is a count, a float a fraction of the units",
);

/// The `dim` argument of the structured methods.
pub(crate) const DIM_ARGUMENT: (&str, &str) = (
    "dim",
    "the dimension whose slices are pruned, negative from the end (default -1)",
);

/// How errors name a method: `method nm (plugin /path/libtchprune_plugin_nm.so)`.
pub(crate) fn describe(method: &dyn PruningMethod) -> String {
    match method.plugin() {
        Some(plugin) => format!("method {} (plugin {})", method.name(), plugin.display()),
        None => format!("method {}", method.name()),
    }
}
