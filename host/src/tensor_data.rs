//! Rust slices over a tensor's memory, for the loops that read or write it directly.
//!
//! libtorch may give a tensor without entries a null data pointer, and a slice made from a null
//! pointer is undefined behaviour even when it is empty; these give `&[]` for no entries.

use tch::Tensor;

/// The first `len` entries of `t` as `T`s.
///
/// # Safety
/// `t` is a contiguous CPU tensor of at least `len` entries laid out as `T`, alive and not
/// written while the slice lives.
pub(crate) unsafe fn entries<T>(t: &Tensor, len: usize) -> &[T] {
    if len == 0 {
        return &[];
    }
    // SAFETY: as the caller promises; the pointer is not null for a tensor with entries.
    unsafe { std::slice::from_raw_parts(t.data_ptr().cast::<T>(), len) }
}

/// The first `len` entries of `t` as `T`s, to write.
///
/// # Safety
/// As [`entries`], and nothing else reads or writes those entries while the slice lives.
#[allow(clippy::mut_from_ref)]
pub(crate) unsafe fn entries_mut<T>(t: &Tensor, len: usize) -> &mut [T] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: as the caller promises; the pointer is not null for a tensor with entries.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr().cast::<T>(), len) }
}

/// The number of entries of a tensor of `shape`: 0 when a dimension is 0 (however large the
/// others, as a file may claim), else the product, saturating at `i64::MAX` instead of
/// overflowing.
pub(crate) fn entries_in(shape: &[i64]) -> i64 {
    if shape.contains(&0) {
        return 0;
    }
    shape.iter().fold(1i64, |n, &d| n.saturating_mul(d))
}
