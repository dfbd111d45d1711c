//! Global magnitude pruning without concatenation.
//!
//! PyTorch's `global_unstructured` concatenates every tensor's scores and masks into one
//! vector and runs `topk` on it: three copies of the whole set and a sort, and no way past 2^31
//! entries. For L1 on CPU float tensors tchprune instead finds the global threshold by radix
//! select over the tensors where they lie, reading only the live entries, and writes each
//! tensor's new mask directly. The result is PyTorch's for distinct magnitudes; where ties make
//! the choice ambiguous it defers to the concatenating path up to
//! [`EXACT_TIES_LIMIT`](super::select::EXACT_TIES_LIMIT) live entries (PyTorch's exact choice)
//! and beyond that takes the tied entries in concatenation order.

use super::radix::{self, Order, Part};
use super::select::{cpu_values, EXACT_TIES_LIMIT};
use crate::amount::Amount;
use crate::error::Result;
use tch::{Device, Kind, Tensor};

/// Each tensor's new mask (`bool`, its shape), or `None` when this path does not apply (not
/// all CPU floats of one dtype, or ties that only the concatenating path resolves as PyTorch
/// does). `scores[i]` ranks the entries of tensor `i`; `masks[i]` is its current mask, if any.
pub(crate) fn global_magnitude_masks(
    scores: &[Tensor],
    masks: &[Option<Tensor>],
    amount: Amount,
) -> Result<Option<Vec<Tensor>>> {
    let Some(first) = scores.first() else {
        return Ok(None);
    };
    let kind = first.kind();
    if scores
        .iter()
        .any(|s| s.device() != Device::Cpu || s.kind() != kind)
        || masks.iter().flatten().any(|m| m.device() != Device::Cpu)
    {
        return Ok(None);
    }
    let scores: Vec<Tensor> = scores
        .iter()
        .map(|s| s.f_contiguous())
        .collect::<tch::Result<_>>()?;
    let alive: Vec<Option<Tensor>> = masks
        .iter()
        .map(|m| {
            m.as_ref()
                .map(|m| m.f_to_kind(Kind::Bool)?.f_contiguous())
                .transpose()
        })
        .collect::<tch::Result<_>>()?;
    let mut parts = Vec::with_capacity(scores.len());
    for (score, alive) in scores.iter().zip(&alive) {
        let Some(values) = cpu_values(score) else {
            return Ok(None);
        };
        let alive = alive.as_ref().map(|mask| {
            // SAFETY: a contiguous CPU bool tensor of the score's size, borrowed while `alive` lives.
            unsafe { std::slice::from_raw_parts(mask.data_ptr().cast::<bool>(), mask.numel()) }
        });
        parts.push(Part { values, alive });
    }
    let live: i64 = alive
        .iter()
        .zip(&scores)
        .map(|(mask, score)| match mask {
            Some(mask) => mask.f_sum(Kind::Int64).and_then(|s| s.f_int64_value(&[])),
            None => Ok(score.numel() as i64),
        })
        .sum::<tch::Result<i64>>()?;
    let k = amount.units_to_prune(live)?;
    let mut selected: Vec<Tensor> = scores
        .iter()
        .map(|s| Tensor::f_zeros(s.size(), (Kind::Bool, Device::Cpu)))
        .collect::<tch::Result<_>>()?;
    if k > 0 {
        let threshold = radix::kth_smallest(&parts, k as u64, Order::Magnitude);
        let missing = k as u64 - threshold.below;
        if missing < threshold.tied && live <= EXACT_TIES_LIMIT {
            return Ok(None);
        }
        let mut flags: Vec<&mut [bool]> = selected
            .iter_mut()
            .map(|t| {
                // SAFETY: fresh contiguous CPU bool tensors, each written only through this slice.
                unsafe { std::slice::from_raw_parts_mut(t.data_ptr().cast::<bool>(), t.numel()) }
            })
            .collect();
        radix::mark(&parts, threshold, missing, Order::Magnitude, &mut flags);
    }
    selected
        .iter()
        .zip(&alive)
        .map(|(selected, alive)| {
            let kept = selected.f_logical_not()?;
            Ok(match alive {
                Some(alive) => kept.f_logical_and(alive)?,
                None => kept,
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}
