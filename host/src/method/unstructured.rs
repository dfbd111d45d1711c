//! Unstructured methods: prune individual entries, by magnitude or at random.

use crate::amount::Amount;
use crate::error::Result;
use crate::method::select::{pruned_first_mask, select, End, Order};
use crate::method::{MethodArgs, PruningMethod, PruningType};
use crate::registry::MethodEntry;
use serde_json::json;
use std::sync::Arc;
use tch::Tensor;

/// Zeroes the `k` entries of `default_mask` that `select` picks from `scores`.
fn zero_selected(
    scores: &Tensor,
    default_mask: &Tensor,
    amount: Amount,
    end: End,
) -> Result<Tensor> {
    let k = amount.units_to_prune(scores.numel() as i64)?;
    if k == 0 {
        return Ok(default_mask.copy());
    }
    let pruned = select(&scores.f_reshape([-1])?, k, end)?;
    let kept = pruned.f_logical_not()?.f_reshape(default_mask.size())?;
    Ok(kept.f_logical_and(&default_mask.f_to_kind(tch::Kind::Bool)?)?)
}

/// Prunes the `amount` entries with the lowest L1 norm (absolute value): PyTorch's
/// `prune.L1Unstructured`.
#[derive(Clone, Copy, Debug)]
pub struct L1Unstructured {
    amount: Amount,
}

impl L1Unstructured {
    /// A method pruning `amount` entries (a count, or a fraction of the entries).
    pub fn new(amount: impl Into<Amount>) -> Result<Self> {
        Ok(Self {
            amount: amount.into().validated()?,
        })
    }
}

impl PruningMethod for L1Unstructured {
    fn name(&self) -> &str {
        "l1_unstructured"
    }

    fn pruning_type(&self) -> PruningType {
        PruningType::Unstructured
    }

    fn compute_mask(&self, t: &Tensor, default_mask: &Tensor) -> Result<Tensor> {
        if let Some(mask) = pruned_first_mask(t, default_mask, self.amount, Order::Magnitude)? {
            return Ok(mask);
        }
        zero_selected(&t.f_abs()?, default_mask, self.amount, End::Smallest)
    }

    fn arguments(&self) -> serde_json::Value {
        json!({ "amount": self.amount.to_json() })
    }

    fn magnitude_amount(&self) -> Option<Amount> {
        Some(self.amount)
    }

    fn check_shape(&self, shape: &[i64]) -> Result<()> {
        self.amount
            .units_to_prune(crate::tensor_data::entries_in(shape))
            .map(drop)
    }
}

/// Prunes `amount` entries chosen uniformly at random: PyTorch's `prune.RandomUnstructured`.
///
/// It draws `rand_like(t)` and prunes the entries with the largest draws, as PyTorch does, so
/// with the same seed (`tch::manual_seed`) it prunes the same entries as PyTorch.
#[derive(Clone, Copy, Debug)]
pub struct RandomUnstructured {
    amount: Amount,
}

impl RandomUnstructured {
    /// A method pruning `amount` random entries (a count, or a fraction of the entries).
    pub fn new(amount: impl Into<Amount>) -> Result<Self> {
        Ok(Self {
            amount: amount.into().validated()?,
        })
    }
}

impl PruningMethod for RandomUnstructured {
    fn name(&self) -> &str {
        "random_unstructured"
    }

    fn pruning_type(&self) -> PruningType {
        PruningType::Unstructured
    }

    fn compute_mask(&self, t: &Tensor, default_mask: &Tensor) -> Result<Tensor> {
        let k = self.amount.units_to_prune(t.numel() as i64)?;
        if k == 0 {
            return Ok(default_mask.copy());
        }
        let draws = t.f_rand_like()?;
        if let Some(mask) = pruned_first_mask(&draws, default_mask, self.amount, Order::Descending)?
        {
            return Ok(mask);
        }
        zero_selected(&draws, default_mask, self.amount, End::Largest)
    }

    fn arguments(&self) -> serde_json::Value {
        json!({ "amount": self.amount.to_json() })
    }

    fn check_shape(&self, shape: &[i64]) -> Result<()> {
        self.amount
            .units_to_prune(crate::tensor_data::entries_in(shape))
            .map(drop)
    }
}

const AMOUNT_ONLY: &[(&str, &str)] = &[super::AMOUNT_ARGUMENT];

inventory::submit! {
    MethodEntry {
        name: "l1_unstructured",
        arguments: AMOUNT_ONLY,
        pruning_type: "unstructured",
        description: "Prunes the entries of smallest absolute value (or importance score)",
        build: |args| {
            let args = MethodArgs::declared("l1_unstructured", args, AMOUNT_ONLY)?;
            Ok(Arc::new(L1Unstructured::new(args.amount("amount")?)?))
        },
    }
}

inventory::submit! {
    MethodEntry {
        name: "random_unstructured",
        arguments: AMOUNT_ONLY,
        pruning_type: "unstructured",
        description: "Prunes entries chosen uniformly at random",
        build: |args| {
            let args = MethodArgs::declared("random_unstructured", args, AMOUNT_ONLY)?;
            Ok(Arc::new(RandomUnstructured::new(args.amount("amount")?)?))
        },
    }
}
