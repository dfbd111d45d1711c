//! Exact selection of the `k` smallest (or largest) entries of a flat tensor in linear time.
//!
//! PyTorch runs a full `topk` for magnitude and random pruning, which sorts and costs over a
//! second for 16M entries on a laptop CPU. `kthvalue` finds the k-th value by quickselect and
//! everything strictly beyond it is selected: for distinct values that is `topk`'s set. When
//! more entries tie at the threshold than are still needed, which of them `topk` takes depends
//! on its algorithm, so only then the selection runs `topk` itself, as PyTorch calls it, and
//! the masks stay PyTorch's bit for bit even for data full of ties.

use crate::error::Result;
use tch::{Kind, Tensor};

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
    let (_, indices) = values.f_topk(k, 0, end == End::Largest, true)?;
    let mut selected = values.f_zeros_like()?.f_to_kind(Kind::Bool)?;
    let _ = selected.f_index_fill_(0, &indices, 1)?;
    Ok(selected)
}
