//! Exact selection of the `k` smallest (or largest) entries of a flat tensor in linear time.
//!
//! PyTorch runs a full `topk` for magnitude and random pruning, which sorts and costs over a
//! second for 16M entries on a laptop CPU. Here the k-th value is found in linear time (radix
//! select on CPU floats, `kthvalue` elsewhere) and everything strictly beyond it is selected:
//! for distinct values that is `topk`'s set.
//!
//! When more entries tie at the threshold than are still needed, which of them `topk` takes
//! depends on its sorting algorithm. Up to [`EXACT_TIES_LIMIT`] entries the selection then runs
//! `topk` itself, as PyTorch calls it, so masks stay PyTorch's bit for bit even for data full of
//! ties; beyond that (where `topk` would cost a second) it takes the tied entries in index
//! order: exactly `k` entries, the guarantee PyTorch documents.

pub(crate) use super::radix::Order;
use super::radix::{self, Part, Values};
use crate::error::Result;
use crate::tensor_data::{entries, entries_mut};
use tch::{Device, Kind, Tensor};

/// Up to this many entries, ambiguous ties are resolved by `topk` exactly as PyTorch does.
pub(crate) const EXACT_TIES_LIMIT: i64 = 1 << 20;

/// Which end of the order to select from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    Smallest,
    Largest,
}

/// A `bool` tensor, shaped like the flat `values`, true at exactly `k` entries: the `k` smallest
/// (or largest) values. NaN orders above every number, as in `topk`.
pub(crate) fn select(values: &Tensor, k: i64, end: End) -> Result<Tensor> {
    let n = values.size1()?;
    if k == 0 {
        return Ok(values.f_zeros_like()?.f_to_kind(Kind::Bool)?);
    }
    if k == n {
        return crate::container::all_kept(values);
    }
    if let Some(selected) = radix_select(values, k, end)? {
        return Ok(selected);
    }
    if values.device() != Device::Cpu {
        // On CUDA `topk` is PyTorch's own choice and one kernel (2 ms for 8M of 16M entries on
        // an H200), where `kthvalue` took 100-330 ms and the ties below read counts back.
        return topk_select(values, k, end);
    }
    let rank = match end {
        End::Smallest => k,
        End::Largest => n - k + 1,
    };
    let (threshold, _) = values.f_kthvalue(rank, 0, false)?;
    let beyond = match end {
        End::Smallest => values.f_lt_tensor(&threshold)?,
        End::Largest => values.f_gt_tensor(&threshold)?,
    };
    let nan_threshold = threshold.f_isnan()?.f_int64_value(&[])? != 0;
    let at_threshold = if nan_threshold {
        values.f_isnan()?
    } else {
        values.f_eq_tensor(&threshold)?
    };
    let beyond = if end == End::Largest && !nan_threshold {
        // NaN compares false against a number but ranks above every number.
        beyond.f_logical_or(&values.f_isnan()?)?
    } else {
        beyond
    };
    let chosen = beyond.f_sum(Kind::Int64)?.f_int64_value(&[])?;
    let missing = k - chosen;
    if missing == 0 {
        return Ok(beyond);
    }
    let tied = at_threshold.f_sum(Kind::Int64)?.f_int64_value(&[])?;
    if tied == missing {
        return Ok(beyond.f_logical_or(&at_threshold)?);
    }
    if n <= EXACT_TIES_LIMIT {
        return topk_select(values, k, end);
    }
    let tied = at_threshold.f_nonzero()?.f_view(-1)?;
    let take = tied.f_slice(0, 0, missing, 1)?;
    let _ = beyond.f_view(-1)?.f_index_fill_(0, &take, 1)?;
    Ok(beyond)
}

/// PyTorch's own selection: the entries `topk` returns.
pub(crate) fn topk_select(values: &Tensor, k: i64, end: End) -> Result<Tensor> {
    let (_, indices) = values.f_topk(k, 0, end == End::Largest, true)?;
    let mut selected = values.f_zeros_like()?.f_to_kind(Kind::Bool)?;
    let _ = selected.f_index_fill_(0, &indices, 1)?;
    Ok(selected)
}

/// The flat float tensor `t`'s entries as radix-select values, when it is on the CPU.
pub(crate) fn cpu_values(t: &Tensor) -> Option<Values<'_>> {
    if t.device() != Device::Cpu || !t.is_contiguous() {
        return None;
    }
    let n = t.numel();
    let ptr = t.data_ptr();
    if n == 0 || ptr.is_null() {
        return None;
    }
    // SAFETY: a contiguous CPU tensor of `n` entries of the matched dtype, borrowed with `t`.
    unsafe {
        Some(match t.kind() {
            Kind::Float => Values::F32(std::slice::from_raw_parts(ptr.cast(), n)),
            Kind::Double => Values::F64(std::slice::from_raw_parts(ptr.cast(), n)),
            Kind::Half => Values::F16(std::slice::from_raw_parts(ptr.cast(), n)),
            Kind::BFloat16 => Values::BF16(std::slice::from_raw_parts(ptr.cast(), n)),
            _ => return None,
        })
    }
}

/// [`select`] by radix select, for CPU floats; `None` for anything else.
fn radix_select(values: &Tensor, k: i64, end: End) -> Result<Option<Tensor>> {
    let values = values.f_contiguous()?;
    let Some(data) = cpu_values(&values) else {
        return Ok(None);
    };
    let order = match end {
        End::Smallest => Order::Ascending,
        End::Largest => Order::Descending,
    };
    let part = Part {
        values: data,
        alive: None,
    };
    let threshold = radix::kth_smallest(&[part], k as u64, order);
    let missing = k as u64 - threshold.below;
    let n = values.numel() as i64;
    if missing < threshold.tied && n <= EXACT_TIES_LIMIT {
        return topk_select(&values, k, end).map(Some);
    }
    let selected = Tensor::f_zeros([n], (Kind::Bool, Device::Cpu))?;
    // SAFETY: a fresh contiguous CPU bool tensor of `n` entries, written only here.
    let flags = unsafe { entries_mut::<bool>(&selected, n as usize) };
    radix::mark(&[part], threshold, missing, order, &mut [flags]);
    Ok(Some(selected))
}

/// Selection in one pass over a CPU float tensor `t` and its `bool` default mask (both
/// contiguous): the mask keeping everything `default_mask` keeps except the `amount` entries
/// of `t` that come first in `order` (for L1, [`Order::Magnitude`] ranks the magnitudes' bits
/// without computing `abs`). `None` when this path does not apply, or when ties make the
/// choice PyTorch's `topk` decides.
pub(crate) fn pruned_first_mask(
    t: &Tensor,
    default_mask: &Tensor,
    amount: crate::Amount,
    order: Order,
) -> Result<Option<Tensor>> {
    let Some(values) = cpu_values(t) else {
        return Ok(None);
    };
    let shape = t.size();
    if default_mask.device() != Device::Cpu
        || default_mask.kind() != Kind::Bool
        || !default_mask.is_contiguous()
        || default_mask.size() != shape
    {
        return Ok(None);
    }
    let n = values.len();
    let k = amount.units_to_prune(n as i64)? as u64;
    let part = Part {
        values,
        alive: None,
    };
    let mask = Tensor::f_empty(shape, (Kind::Bool, Device::Cpu))?;
    // SAFETY: a fresh contiguous CPU bool tensor of `n` entries, written only here.
    let flags = unsafe { entries_mut::<bool>(&mask, n) };
    // SAFETY: a contiguous CPU bool tensor of `n` entries, read only.
    let default = unsafe { entries::<bool>(default_mask, n) };
    if k == 0 {
        flags.copy_from_slice(default);
        return Ok(Some(mask));
    }
    let threshold = radix::kth_smallest(&[part], k, order);
    let missing = k - threshold.below;
    if missing < threshold.tied && n as i64 <= EXACT_TIES_LIMIT {
        return Ok(None);
    }
    radix::mark(&[part], threshold, missing, order, &mut [&mut *flags]);
    for (kept, &default) in flags.iter_mut().zip(default) {
        *kept = !*kept && default;
    }
    Ok(Some(mask))
}
