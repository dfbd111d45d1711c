//! `orig *= mask` in place, for `remove`.
//!
//! Masks are `bool` in memory, and libtorch multiplies a float tensor by a `bool` one through
//! its type-promoting slow path (about 27 ms for 4096x4096 f32, three times a plain float
//! multiply). For contiguous `f32`/`f64` tensors on the CPU a plain loop does the same
//! multiplication, by `1.0` or `0.0`, with the same IEEE results (`-0.0` for negative pruned
//! entries, NaN for infinite or NaN ones), so the tensor stays bit for bit PyTorch's `orig *
//! mask`. Other dtypes and devices keep libtorch's multiply.

use crate::cpu::has_avx2_fma;
use crate::parallel;
use crate::tensor_data::{entries, entries_mut};
use tch::{Device, Kind, Tensor};

/// Multiplies `orig` by the `bool` tensor `mask` (same shape) in place, without recording
/// gradients; bumps `orig`'s version counter like any in-place operation.
pub(crate) fn mul_mask_(orig: &mut Tensor, mask: &Tensor) -> tch::Result<()> {
    let fast = orig.device() == Device::Cpu
        && mask.device() == Device::Cpu
        && mask.kind() == Kind::Bool
        && orig.size() == mask.size()
        && orig.is_contiguous()
        && mask.is_contiguous()
        && matches!(orig.kind(), Kind::Float | Kind::Double);
    if !fast {
        let _ = tch::no_grad(|| orig.f_mul_(mask))?;
        return Ok(());
    }
    let len = orig.numel();
    // SAFETY: both tensors are contiguous CPU tensors of `len` entries of the matched types,
    // and `mask` is a different tensor from `orig` (bool vs float), so the slices do not overlap.
    let keep = unsafe { entries::<bool>(mask, len) };
    match orig.kind() {
        Kind::Float => multiply(unsafe { entries_mut::<f32>(orig, len) }, keep),
        _ => multiply(unsafe { entries_mut::<f64>(orig, len) }, keep),
    }
    bump_version(orig)
}

/// Tells libtorch that `t` was written through its data pointer: an in-place operation on an
/// empty view bumps the version counter that `t` shares, so caches keyed on it and autograd's
/// saved-tensor checks see the write.
pub(crate) fn bump_version(t: &Tensor) -> tch::Result<()> {
    let _ = tch::no_grad(|| t.f_flatten(0, -1)?.f_narrow(0, 0, 0)?.f_mul_scalar_(1))?;
    Ok(())
}

/// A float that a mask multiplies: by `1.0` where it keeps, `0.0` where it prunes.
trait Masked: Copy + Send {
    fn times(self, keep: bool) -> Self;
}

impl Masked for f32 {
    #[inline(always)]
    fn times(self, keep: bool) -> Self {
        self * f32::from(u8::from(keep))
    }
}

impl Masked for f64 {
    #[inline(always)]
    fn times(self, keep: bool) -> Self {
        self * f64::from(u8::from(keep))
    }
}

fn multiply<T: Masked>(values: &mut [T], keep: &[bool]) {
    let vectorized = has_avx2_fma();
    parallel::on_chunks_mut(values, |start, end, chunk| {
        let keep = &keep[start..end];
        #[cfg(target_arch = "x86_64")]
        if vectorized {
            // SAFETY: the CPU has AVX2, checked above.
            return unsafe { multiply_chunk_avx2(chunk, keep) };
        }
        let _ = vectorized;
        multiply_chunk(chunk, keep);
    });
}

#[inline(always)]
fn multiply_chunk<T: Masked>(values: &mut [T], keep: &[bool]) {
    for (x, &k) in values.iter_mut().zip(keep) {
        *x = x.times(k);
    }
}

/// [`multiply_chunk`] in AVX2 registers (the widening of the mask's bytes and the products,
/// eight or four at a time: about twice the baseline's speed where the data is in cache).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn multiply_chunk_avx2<T: Masked>(values: &mut [T], keep: &[bool]) {
    multiply_chunk(values, keep);
}
