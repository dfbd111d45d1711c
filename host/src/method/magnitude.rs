//! Magnitude pruning per layer, unstructured or N:M: the baseline the data-aware methods are
//! compared with.

use super::args::MethodArgs;
use super::nm::{check_matrix, NmPattern};
use super::{PruningMethod, PruningType};
use crate::error::{PruneError, Result};
use crate::registry::MethodEntry;
use serde_json::{json, Value};
use std::sync::Arc;
use tch::{Kind, Tensor};

/// Prunes the entries of smallest magnitude: `floor(sparsity * entries)` of the whole tensor, or
/// N of every M consecutive inputs of each row. Entries already pruned count as the smallest.
#[derive(Clone, Debug, PartialEq)]
pub struct Magnitude {
    sparsity: f64,
    nm: Option<NmPattern>,
}

impl Magnitude {
    /// `sparsity` (in `[0, 1]`) of the whole tensor, or `nm` in each row when given.
    pub fn new(sparsity: f64, nm: Option<NmPattern>) -> Result<Self> {
        check_sparsity("magnitude", sparsity)?;
        Ok(Self { sparsity, nm })
    }
}

/// Fails unless `sparsity` lies in `[0, 1]`.
pub(crate) fn check_sparsity(method: &str, sparsity: f64) -> Result<()> {
    if (0.0..=1.0).contains(&sparsity) {
        return Ok(());
    }
    Err(PruneError::InvalidArgument {
        method: method.to_owned(),
        argument: "sparsity".to_owned(),
        reason: format!("{sparsity} is not a fraction in [0, 1]"),
    })
}

/// `scores` with the entries `default_mask` prunes below every score (scores are >= 0).
pub(crate) fn pruned_first(scores: &Tensor, default_mask: &Tensor) -> Result<Tensor> {
    Ok(scores.f_masked_fill(&default_mask.f_logical_not()?, -1.0)?)
}

/// The arguments of `magnitude`, `wanda` and `sparsegpt`'s mask.
pub(crate) const SPARSITY_ARGUMENTS: [(&str, &str); 2] = [
    (
        "sparsity",
        "the fraction of entries to prune (default 0.5; ignored with nm)",
    ),
    (
        "nm",
        "\"N:M\": prune N of every M consecutive inputs in each row instead (\"2:4\")",
    ),
];

/// `sparsity` and `nm` as recorded in histories.
pub(crate) fn sparsity_arguments(sparsity: f64, nm: Option<NmPattern>) -> Value {
    match nm {
        Some(nm) => json!({"nm": nm.to_string()}),
        None => json!({"sparsity": sparsity}),
    }
}

impl PruningMethod for Magnitude {
    fn name(&self) -> &str {
        "magnitude"
    }

    fn pruning_type(&self) -> PruningType {
        PruningType::Global
    }

    fn compute_mask(&self, t: &Tensor, default_mask: &Tensor) -> Result<Tensor> {
        let scores = pruned_first(&t.f_abs()?.f_to_kind(Kind::Float)?, default_mask)?;
        let pruned = match self.nm {
            Some(nm) => {
                let (_, columns) = check_matrix(self.name(), t)?;
                nm.check_columns(self.name(), columns)?;
                nm.smallest(&scores)?
            }
            None => {
                let flat = scores.f_reshape([-1])?;
                let k = (self.sparsity * flat.numel() as f64).floor() as i64;
                let (_, order) = flat.f_sort_stable(true, 0, false)?;
                let pruned = Tensor::f_zeros_like(&flat)?.f_to_kind(Kind::Bool)?;
                pruned
                    .f_index_fill(0, &order.f_slice(0, 0, k, 1)?, 1)?
                    .f_reshape(t.size())?
            }
        };
        Ok(pruned.f_logical_not()?.f_logical_and(default_mask)?)
    }

    fn arguments(&self) -> Value {
        sparsity_arguments(self.sparsity, self.nm)
    }
}

inventory::submit! {
    MethodEntry {
        name: "magnitude",
        arguments: &SPARSITY_ARGUMENTS,
        pruning_type: "global",
        description: "Prunes the smallest magnitudes of each layer, unstructured or N:M",
        build: |args| {
            let args = MethodArgs::declared("magnitude", args, &SPARSITY_ARGUMENTS)?;
            Ok(Arc::new(Magnitude::new(args.fraction_or("sparsity", 0.5)?, args.nm("nm")?)?))
        },
    }
}
