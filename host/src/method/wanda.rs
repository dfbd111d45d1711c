//! Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language
//! Models"): a weight's importance is `|W_ij| * ||X_j||_2`, its magnitude times the norm of the
//! input it multiplies, compared within each output row.
//!
//! Computed as the paper's code and llm-compressor's `WandaPruningModifier` do: the score in
//! f32, with the norms taken as `sqrt(sum x_j^2 / samples)` (the same order as the plain norm;
//! the constant only keeps the numbers where theirs are); unstructured, the
//! `floor(sparsity * in)` smallest scores of each row by a stable sort (ties: the lower column
//! first); N:M, `topk` of the N smallest in each group of M columns.

use super::args::MethodArgs;
use super::magnitude::{check_sparsity, pruned_first, sparsity_arguments, SPARSITY_ARGUMENTS};
use super::nm::{check_matrix, NmPattern};
use super::{needs_statistics, Calibrated, PruningMethod, PruningType};
use crate::calibration::{LayerStatistics, Needs};
use crate::error::{PruneError, Result};
use crate::registry::MethodEntry;
use serde_json::Value;
use std::sync::Arc;
use tch::{Kind, Tensor};

/// Wanda: prunes the weights of smallest `|W_ij| * ||X_j||_2` in each row.
#[derive(Clone, Debug, PartialEq)]
pub struct Wanda {
    sparsity: f64,
    nm: Option<NmPattern>,
}

impl Wanda {
    /// `sparsity` (in `[0, 1]`) of each row, or `nm` in each row when given.
    pub fn new(sparsity: f64, nm: Option<NmPattern>) -> Result<Self> {
        check_sparsity("wanda", sparsity)?;
        Ok(Self { sparsity, nm })
    }

    /// The scores `|W_ij| * sqrt(S_j)` for `t` given the per-input mean squares `mean_squares`.
    pub fn scores(t: &Tensor, mean_squares: &Tensor) -> Result<Tensor> {
        let weight = t.f_to_kind(Kind::Float)?.f_abs()?;
        let norms = mean_squares
            .f_to_device(t.device())?
            .f_sqrt()?
            .f_reshape([1, -1])?;
        Ok(weight.f_mul(&norms)?)
    }

    /// The mask for `t` from its `scores`.
    fn mask_from_scores(
        &self,
        t: &Tensor,
        scores: &Tensor,
        default_mask: &Tensor,
    ) -> Result<Tensor> {
        let (rows, columns) = check_matrix(self.name(), t)?;
        let scores = pruned_first(scores, default_mask)?;
        let pruned = match self.nm {
            Some(nm) => {
                nm.check_columns(self.name(), columns)?;
                nm.smallest(&scores)?
            }
            None => {
                let k = (columns as f64 * self.sparsity).floor() as i64;
                let (_, order) = scores.f_sort_stable(true, -1, false)?;
                let pruned = Tensor::f_zeros([rows, columns], (Kind::Bool, t.device()))?;
                pruned.f_scatter_value(1, &order.f_slice(1, 0, k, 1)?, 1)?
            }
        };
        Ok(pruned.f_logical_not()?.f_logical_and(default_mask)?)
    }
}

impl PruningMethod for Wanda {
    fn name(&self) -> &str {
        "wanda"
    }

    fn pruning_type(&self) -> PruningType {
        PruningType::Global
    }

    fn compute_mask(&self, _t: &Tensor, _default_mask: &Tensor) -> Result<Tensor> {
        Err(needs_statistics(self.name()))
    }

    fn needs(&self) -> Needs {
        Needs::NORMS
    }

    fn compute_calibrated(
        &self,
        t: &Tensor,
        default_mask: &Tensor,
        statistics: &LayerStatistics,
    ) -> Result<Calibrated> {
        if statistics.samples == 0 {
            return Err(PruneError::MethodFailed {
                method: self.name().to_owned(),
                reason: "no calibration inputs were seen".to_owned(),
            });
        }
        let mean_squares = statistics
            .squared_norms
            .f_div_scalar(statistics.samples as f64)?;
        let scores = Self::scores(t, &mean_squares)?;
        Ok(Calibrated {
            mask: self.mask_from_scores(t, &scores, default_mask)?,
            values: None,
        })
    }

    fn arguments(&self) -> Value {
        sparsity_arguments(self.sparsity, self.nm)
    }
}

inventory::submit! {
    MethodEntry {
        name: "wanda",
        arguments: &SPARSITY_ARGUMENTS,
        pruning_type: "global",
        description: "Wanda: prunes the smallest |W_ij| * ||X_j|| of each row (needs calibration)",
        build: |args| {
            let args = MethodArgs::declared("wanda", args, &SPARSITY_ARGUMENTS)?;
            Ok(Arc::new(Wanda::new(args.fraction_or("sparsity", 0.5)?, args.nm("nm")?)?))
        },
    }
}
