//! Checks and counts on contiguous CPU tensors done in plain loops instead of libtorch ops.
//!
//! A libtorch op costs tens of microseconds of dispatch, type promotion and iterator setup
//! before it touches a single entry. That is nothing for one large tensor and everything for
//! a checkpoint of 100,000 small ones, where every pruned tensor's mask is checked (0/1 only,
//! nothing revived) and every tensor's zeros are counted. These loops read the entries where
//! they lie; each returns `None` for what it does not handle (other devices, non-contiguous
//! tensors, other dtypes), and the caller falls back to libtorch.

use crate::tensor_data::entries_mut;
use tch::{Device, Kind, Tensor};

/// The entries of a contiguous CPU tensor, by storage type.
enum Entries<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    /// f16 or bf16, as bits.
    Bits16(&'a [u16], Kind),
    /// bool, u8 or i8, as bytes.
    Bytes(&'a [u8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
}

fn entries(t: &Tensor) -> Option<Entries<'_>> {
    if t.device() != Device::Cpu || !t.is_contiguous() {
        return None;
    }
    let len = t.numel();
    let ptr = t.data_ptr();
    if len == 0 {
        return Some(Entries::Bytes(&[]));
    }
    // SAFETY: a contiguous CPU tensor of `len` entries of the matched type, borrowed for the
    // lifetime of `t`.
    unsafe {
        Some(match t.kind() {
            Kind::Float => Entries::F32(std::slice::from_raw_parts(ptr.cast(), len)),
            Kind::Double => Entries::F64(std::slice::from_raw_parts(ptr.cast(), len)),
            kind @ (Kind::Half | Kind::BFloat16) => {
                Entries::Bits16(std::slice::from_raw_parts(ptr.cast(), len), kind)
            }
            Kind::Bool | Kind::Uint8 | Kind::Int8 => {
                Entries::Bytes(std::slice::from_raw_parts(ptr.cast(), len))
            }
            Kind::Int16 => Entries::I16(std::slice::from_raw_parts(ptr.cast(), len)),
            Kind::Int => Entries::I32(std::slice::from_raw_parts(ptr.cast(), len)),
            Kind::Int64 => Entries::I64(std::slice::from_raw_parts(ptr.cast(), len)),
            _ => return None,
        })
    }
}

/// How many entries of `t` are zero (`-0.0` included, NaN not).
pub(crate) fn count_zeros(t: &Tensor) -> Option<i64> {
    fn count<T: Copy>(values: &[T], zero: impl Fn(T) -> bool) -> i64 {
        values.iter().filter(|&&x| zero(x)).count() as i64
    }
    Some(match entries(t)? {
        Entries::F32(v) => count(v, |x| x == 0.0),
        Entries::F64(v) => count(v, |x| x == 0.0),
        Entries::Bits16(v, _) => count(v, |x| x & 0x7fff == 0),
        Entries::Bytes(v) => count(v, |x| x == 0),
        Entries::I16(v) => count(v, |x| x == 0),
        Entries::I32(v) => count(v, |x| x == 0),
        Entries::I64(v) => count(v, |x| x == 0),
    })
}

/// How many entries of `orig * mask` are zero, without computing the product: where the mask
/// prunes a finite entry, or where the entry is zero (an infinite or NaN entry times 0 is NaN).
pub(crate) fn count_zeros_masked(orig: &Tensor, mask: &Tensor) -> Option<i64> {
    if mask.kind() != Kind::Bool {
        return None;
    }
    let Entries::Bytes(keep) = entries(mask)? else {
        return None;
    };
    fn count<T: Copy>(
        values: &[T],
        keep: &[u8],
        zero: impl Fn(T) -> bool,
        finite: impl Fn(T) -> bool,
    ) -> Option<i64> {
        (values.len() == keep.len()).then(|| {
            values
                .iter()
                .zip(keep)
                .filter(|&(&x, &k)| zero(x) || (k == 0 && finite(x)))
                .count() as i64
        })
    }
    match entries(orig)? {
        Entries::F32(v) => count(v, keep, |x| x == 0.0, f32::is_finite),
        Entries::F64(v) => count(v, keep, |x| x == 0.0, f64::is_finite),
        Entries::Bits16(v, kind) => {
            let exponent = if kind == Kind::Half { 0x7c00 } else { 0x7f80 };
            count(v, keep, |x| x & 0x7fff == 0, |x| x & exponent != exponent)
        }
        Entries::Bytes(v) => count(v, keep, |x| x == 0, |_| true),
        Entries::I16(v) => count(v, keep, |x| x == 0, |_| true),
        Entries::I32(v) => count(v, keep, |x| x == 0, |_| true),
        Entries::I64(v) => count(v, keep, |x| x == 0, |_| true),
    }
}

/// `mask` as a `bool` tensor of its shape if it holds only 0 and 1 (`Some(Ok)`), `Some(Err(()))`
/// if it holds anything else.
pub(crate) fn binary_to_bool(mask: &Tensor) -> Option<Result<Tensor, ()>> {
    fn convert<T: Copy>(
        values: &[T],
        zero: impl Fn(T) -> bool,
        one: impl Fn(T) -> bool,
    ) -> Option<Vec<bool>> {
        values
            .iter()
            .map(|&x| {
                if zero(x) {
                    Some(false)
                } else if one(x) {
                    Some(true)
                } else {
                    None
                }
            })
            .collect()
    }
    let one_bits = |kind| if kind == Kind::Half { 0x3c00 } else { 0x3f80 };
    let kept = match entries(mask)? {
        Entries::F32(v) => convert(v, |x| x == 0.0, |x| x == 1.0),
        Entries::F64(v) => convert(v, |x| x == 0.0, |x| x == 1.0),
        Entries::Bits16(v, kind) => convert(v, |x| x & 0x7fff == 0, |x| x == one_bits(kind)),
        Entries::Bytes(v) => convert(v, |x| x == 0, |x| x == 1),
        Entries::I16(v) => convert(v, |x| x == 0, |x| x == 1),
        Entries::I32(v) => convert(v, |x| x == 0, |x| x == 1),
        Entries::I64(v) => convert(v, |x| x == 0, |x| x == 1),
    };
    let Some(kept) = kept else {
        return Some(Err(()));
    };
    let out = Tensor::f_empty(mask.size(), (Kind::Bool, Device::Cpu)).ok()?;
    // SAFETY: a new contiguous CPU bool tensor of `kept.len()` entries; `bool` has the layout
    // of libtorch's bool.
    unsafe { entries_mut::<bool>(&out, kept.len()) }.copy_from_slice(&kept);
    Some(Ok(out))
}

/// Masks of up to this many entries are converted by [`bool_as`]; larger ones by libtorch,
/// whose conversion runs on every core.
const CONVERTED_UP_TO: usize = 1 << 16;

/// The `bool` tensor `mask` as 0 and 1 of `kind` (f32, f64, f16 or bf16), as `to_kind` gives
/// it; `None` for other kinds and for large masks.
pub(crate) fn bool_as(mask: &Tensor, kind: Kind) -> Option<Tensor> {
    fn convert<T: Copy>(kept: &[u8], out: &Tensor, zero: T, one: T) {
        // SAFETY: a new contiguous CPU tensor of `kept.len()` entries of type `T`.
        let values = unsafe { entries_mut::<T>(out, kept.len()) };
        for (value, &kept) in values.iter_mut().zip(kept) {
            *value = if kept != 0 { one } else { zero };
        }
    }
    let converted = [Kind::Float, Kind::Double, Kind::Half, Kind::BFloat16];
    if mask.kind() != Kind::Bool || !converted.contains(&kind) {
        return None;
    }
    let Entries::Bytes(kept) = entries(mask)? else {
        return None;
    };
    if kept.len() > CONVERTED_UP_TO {
        return None;
    }
    let out = Tensor::f_empty(mask.size(), (kind, Device::Cpu)).ok()?;
    match kind {
        Kind::Float => convert(kept, &out, 0f32, 1.0),
        Kind::Double => convert(kept, &out, 0f64, 1.0),
        Kind::Half => convert(kept, &out, 0u16, 0x3c00),
        Kind::BFloat16 => convert(kept, &out, 0u16, 0x3f80),
        _ => unreachable!("a kind checked above"),
    }
    Some(out)
}

/// A `bool` tensor of `t`'s shape, every entry true, for a small CPU tensor `t`.
pub(crate) fn all_true(t: &Tensor) -> Option<Tensor> {
    let len = t.numel();
    if t.device() != Device::Cpu || len > CONVERTED_UP_TO {
        return None;
    }
    let out = Tensor::f_empty(t.size(), (Kind::Bool, Device::Cpu)).ok()?;
    // SAFETY: a new contiguous CPU bool tensor of `len` entries.
    unsafe { entries_mut::<bool>(&out, len) }.fill(true);
    Some(out)
}

/// The mask checks scan a block of entries with no branch per entry (so that the loop
/// vectorizes), and stop at the first block that decides.
const BLOCK: usize = 4096;

/// Whether every byte of the `bool` tensor `mask` is 0 or 1.
pub(crate) fn holds_only_booleans(mask: &Tensor) -> Option<bool> {
    if mask.kind() != Kind::Bool {
        return None;
    }
    match entries(mask)? {
        Entries::Bytes(bytes) => Some(
            bytes
                .chunks(BLOCK)
                .all(|block| block.iter().fold(0, |any, &b| any | b) <= 1),
        ),
        _ => None,
    }
}

/// Whether `mask` keeps an entry that `default_mask` prunes (both `bool`, the same shape).
pub(crate) fn revives(mask: &Tensor, default_mask: &Tensor) -> Option<bool> {
    if mask.kind() != Kind::Bool || default_mask.kind() != Kind::Bool {
        return None;
    }
    match (entries(mask)?, entries(default_mask)?) {
        (Entries::Bytes(new), Entries::Bytes(old)) if new.len() == old.len() => {
            Some(new.chunks(BLOCK).zip(old.chunks(BLOCK)).any(|(new, old)| {
                let revived = |(&new, &old): (&u8, &u8)| u8::from(new != 0) & u8::from(old == 0);
                new.iter().zip(old).fold(0, |any, pair| any | revived(pair)) != 0
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{all_true, bool_as, holds_only_booleans, revives, BLOCK, CONVERTED_UP_TO};
    use tch::{Kind, Tensor};

    fn bools(bytes: &[u8]) -> Tensor {
        Tensor::from_slice(bytes).view_dtype(Kind::Bool)
    }

    #[test]
    fn masks_convert_to_each_float_kind_bit_for_bit_as_libtorch_converts_them() {
        let kept: Vec<u8> = (0..37).map(|i| u8::from(i % 3 != 1)).collect();
        let mask = bools(&kept).view([37, 1]);
        for kind in [Kind::Float, Kind::Double, Kind::Half, Kind::BFloat16] {
            let ours = bool_as(&mask, kind).expect("a small CPU mask");
            let theirs = mask.to_kind(kind);
            assert_eq!((ours.kind(), ours.size()), (kind, vec![37, 1]));
            let bits = |t: &Tensor| match kind {
                Kind::Float => t.view_dtype(Kind::Int),
                Kind::Double => t.view_dtype(Kind::Int64),
                _ => t.view_dtype(Kind::Int16),
            };
            assert!(bits(&ours).equal(&bits(&theirs)), "{kind:?}");
        }
        assert!(bool_as(&mask, Kind::Int).is_none());
        assert!(bool_as(&mask.to_kind(Kind::Uint8), Kind::Float).is_none());
        let large = Tensor::ones([CONVERTED_UP_TO as i64 + 1], (Kind::Bool, tch::Device::Cpu));
        assert!(bool_as(&large, Kind::Float).is_none());
    }

    #[test]
    fn all_true_has_the_shape_of_its_tensor_and_keeps_every_entry() {
        for shape in [vec![3, 0, 2], vec![5], vec![2, 3, 4]] {
            let t = Tensor::zeros(shape.as_slice(), (Kind::Float, tch::Device::Cpu));
            let kept = all_true(&t).expect("a small CPU tensor");
            assert_eq!((kept.kind(), kept.size()), (Kind::Bool, shape));
            assert!(kept.equal(&kept.ones_like()));
        }
        let large = Tensor::zeros([CONVERTED_UP_TO as i64 + 1], (Kind::Int8, tch::Device::Cpu));
        assert!(all_true(&large).is_none());
    }

    #[test]
    fn a_revived_entry_is_found_in_any_block() {
        let n = 3 * BLOCK + 5;
        let old: Vec<u8> = (0..n).map(|i| u8::from(i % 3 != 0)).collect();
        assert_eq!(revives(&bools(&old), &bools(&old)), Some(false));
        for at in [0, BLOCK - 1, BLOCK, 2 * BLOCK + 7, n - 1] {
            let mut new = old.clone();
            let pruned = (0..=at).rev().find(|&i| old[i] == 0).unwrap();
            new[pruned] = 1;
            assert_eq!(
                revives(&bools(&new), &bools(&old)),
                Some(true),
                "at {pruned}"
            );
        }
        assert_eq!(revives(&bools(&vec![0; n]), &bools(&old)), Some(false));
    }

    #[test]
    fn a_byte_other_than_0_or_1_is_found_in_any_block() {
        let n = 2 * BLOCK + 3;
        let mask: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
        assert_eq!(holds_only_booleans(&bools(&mask)), Some(true));
        for at in [0, BLOCK, n - 1] {
            for byte in [2, 255] {
                let mut bad = mask.clone();
                bad[at] = byte;
                assert_eq!(
                    holds_only_booleans(&bools(&bad)),
                    Some(false),
                    "{byte} at {at}"
                );
            }
        }
    }
}
