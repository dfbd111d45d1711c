//! Borrowed tensor views and the output mask, as they cross the plugin boundary.
//!
//! A plugin never links libtorch: the host lends it plain memory. The views carry everything a
//! tensor has (data pointer, dtype, shape, strides, device) so the format need not change when
//! the host learns to pass more kinds of tensors; today the host always passes contiguous CPU
//! memory, and the safe accessors check that before reading.

use abi_stable::std_types::{RSlice, RSliceMut};
use abi_stable::StableAbi;
use std::ffi::c_void;
use std::marker::PhantomData;

/// The element type of a [`TensorView`].
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// `bool`, one byte per entry holding 0 or 1.
    Bool,
    /// `u8`.
    U8,
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
}

impl DType {
    /// Bytes per entry.
    pub fn size(self) -> usize {
        match self {
            DType::Bool | DType::U8 | DType::I8 => 1,
            DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::I32 | DType::F32 => 4,
            DType::I64 | DType::F64 => 8,
        }
    }
}

/// Where a tensor's memory lives.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// Host memory, readable by the plugin.
    Cpu,
    /// Memory of the CUDA device with this index.
    Cuda(i32),
}

/// A borrowed, read-only tensor: the tensor being pruned (or its importance scores), or the
/// default mask.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct TensorView<'a> {
    data: *const c_void,
    dtype: DType,
    shape: RSlice<'a, i64>,
    strides: RSlice<'a, i64>,
    device: Device,
    _borrow: PhantomData<&'a u8>,
}

// SAFETY: a view is a shared borrow of memory that nobody writes while the view lives.
unsafe impl Send for TensorView<'_> {}
// SAFETY: as above.
unsafe impl Sync for TensorView<'_> {}

impl<'a> TensorView<'a> {
    /// A view of memory the caller lends for `'a`.
    ///
    /// # Safety
    /// `data` must point to memory on `device` that holds every entry reachable through `shape`
    /// and `strides` (in entries, not bytes) as `dtype`, and nobody may write it during `'a`.
    pub unsafe fn from_raw_parts(
        data: *const c_void,
        dtype: DType,
        shape: &'a [i64],
        strides: &'a [i64],
        device: Device,
    ) -> Self {
        Self {
            data,
            dtype,
            shape: shape.into(),
            strides: strides.into(),
            device,
            _borrow: PhantomData,
        }
    }

    /// A view of a contiguous CPU slice with the given shape.
    ///
    /// # Panics
    /// If `shape` does not describe `data.len()` entries, or `strides` is not contiguous for it.
    pub fn from_slice<T: Element>(data: &'a [T], shape: &'a [i64], strides: &'a [i64]) -> Self {
        assert_eq!(
            shape.iter().product::<i64>() as usize,
            data.len(),
            "shape {shape:?} does not describe {} entries",
            data.len()
        );
        assert_eq!(
            contiguous_strides(shape),
            strides,
            "strides {strides:?} are not contiguous for {shape:?}"
        );
        // SAFETY: a contiguous CPU slice borrowed for 'a, described by a checked shape.
        unsafe { Self::from_raw_parts(data.as_ptr().cast(), T::DTYPE, shape, strides, Device::Cpu) }
    }

    /// The data pointer.
    pub fn data_ptr(&self) -> *const c_void {
        self.data
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The size along each dimension.
    pub fn shape(&self) -> &'a [i64] {
        self.shape.as_slice()
    }

    /// The step between neighbours along each dimension, in entries.
    pub fn strides(&self) -> &'a [i64] {
        self.strides.as_slice()
    }

    /// Where the memory lives.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The number of entries.
    pub fn numel(&self) -> usize {
        self.shape().iter().product::<i64>() as usize
    }

    /// Whether the entries are laid out densely in row-major order.
    pub fn is_contiguous(&self) -> bool {
        self.numel() <= 1 || contiguous_strides(self.shape()) == self.strides()
    }

    /// The entries as a slice of `T`, when the view is a contiguous CPU tensor of `T` (a
    /// `bool` tensor reads as `u8`).
    pub fn as_slice<T: Element>(&self) -> Result<&'a [T], String> {
        self.readable()?;
        let bool_as_u8 = T::DTYPE == DType::U8 && self.dtype == DType::Bool;
        if self.dtype != T::DTYPE && !bool_as_u8 {
            return Err(format!(
                "expected a tensor of {:?}, got {:?}",
                T::DTYPE,
                self.dtype
            ));
        }
        if self.numel() == 0 {
            return Ok(&[]);
        }
        // SAFETY: checked contiguous CPU memory of `numel` entries of `T`, borrowed for 'a.
        Ok(unsafe { std::slice::from_raw_parts(self.data.cast::<T>(), self.numel()) })
    }

    /// The entries in row-major order, converted to `f64` (exactly, for every dtype but `i64`
    /// beyond 2^53).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>, String> {
        Ok(match self.dtype {
            DType::Bool | DType::U8 => convert(self.as_slice::<u8>()?, |x| x as f64),
            DType::I8 => convert(self.as_slice::<i8>()?, |x| x as f64),
            DType::I16 => convert(self.as_slice::<i16>()?, |x| x as f64),
            DType::I32 => convert(self.as_slice::<i32>()?, |x| x as f64),
            DType::I64 => convert(self.as_slice::<i64>()?, |x| x as f64),
            DType::F16 => convert(self.as_slice::<half::f16>()?, f64::from),
            DType::BF16 => convert(self.as_slice::<half::bf16>()?, f64::from),
            DType::F32 => convert(self.as_slice::<f32>()?, f64::from),
            DType::F64 => self.as_slice::<f64>()?.to_vec(),
        })
    }

    fn readable(&self) -> Result<(), String> {
        if self.device != Device::Cpu {
            return Err(format!(
                "the tensor is on {:?}, not on the CPU",
                self.device
            ));
        }
        if !self.is_contiguous() {
            return Err(format!(
                "the tensor is not contiguous (shape {:?}, strides {:?})",
                self.shape(),
                self.strides()
            ));
        }
        Ok(())
    }
}

fn convert<T: Copy>(values: &[T], f: impl Fn(T) -> f64) -> Vec<f64> {
    values.iter().map(|&x| f(x)).collect()
}

/// Row-major strides, in entries, for `shape`.
pub fn contiguous_strides(shape: &[i64]) -> Vec<i64> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1].max(1);
    }
    strides
}

/// A Rust type that a [`TensorView`] can hold.
pub trait Element: Copy + 'static {
    /// Its dtype.
    const DTYPE: DType;
}

macro_rules! element {
    ($($t:ty => $d:ident),*) => { $(impl Element for $t { const DTYPE: DType = DType::$d; })* };
}
element!(u8 => U8, i8 => I8, i16 => I16, i32 => I32, i64 => I64, half::f16 => F16,
         half::bf16 => BF16, f32 => F32, f64 => F64);

/// The mask a plugin computes: host-allocated, one `u8` per entry in row-major order, filled
/// with the default mask before the call. The plugin writes 0 (pruned) or 1 (kept).
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct MaskBuffer<'a> {
    data: RSliceMut<'a, u8>,
    shape: RSlice<'a, i64>,
}

impl<'a> MaskBuffer<'a> {
    /// A buffer over `data`, for a tensor of `shape`.
    ///
    /// # Panics
    /// If `shape` does not describe `data.len()` entries.
    pub fn new(data: &'a mut [u8], shape: &'a [i64]) -> Self {
        assert_eq!(shape.iter().product::<i64>() as usize, data.len());
        Self {
            data: data.into(),
            shape: shape.into(),
        }
    }

    /// The shape of the tensor the mask is for.
    pub fn shape(&self) -> &[i64] {
        self.shape.as_slice()
    }

    /// The entries, to read and write.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.data.as_mut_slice()
    }
}
