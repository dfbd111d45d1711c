//! What a data-aware method (Wanda, SparseGPT, the next OWL or ALPS) gets beside the weight:
//! the statistics of the layer's inputs, and a buffer for new values of the weight.

use crate::tensor::TensorView;
use abi_stable::std_types::{ROption, RSliceMut, RVec};
use abi_stable::StableAbi;

/// The statistics of a Linear layer's inputs a method needs.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Statistics {
    /// None: the method looks at the weight only (every plugin written before these existed).
    None,
    /// The sums of squares of each input feature (`||X_j||^2`), as Wanda uses them.
    ColumnNorms,
    /// The Gram matrix `X^T X` too, as SparseGPT uses it.
    Gram,
}

/// The statistics of one Linear layer's inputs `X` (`tokens x features`), lent read-only.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct StatisticsView<'a> {
    /// Input features (the weight's columns).
    pub features: i64,
    /// Rows of input seen.
    pub tokens: i64,
    /// Sequences seen (the first dimension of 3-d inputs).
    pub samples: i64,
    /// `sum over tokens of x_j^2`, `[features]`, f32.
    pub squared_norms: TensorView<'a>,
    /// `X^T X`, `[features, features]`, f32, when the method asked for [`Statistics::Gram`].
    pub gram: ROption<TensorView<'a>>,
}

/// New values for the weight, host-allocated: the weight's values as f32, row-major, on entry.
/// A method that rewrites the kept weights (like SparseGPT) writes them here and says so in
/// its [`Calibrated`]; pruned entries are ignored.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct ValuesBuffer<'a> {
    data: RSliceMut<'a, f32>,
}

impl<'a> ValuesBuffer<'a> {
    /// A buffer over `data`.
    pub fn new(data: &'a mut [f32]) -> Self {
        Self { data: data.into() }
    }

    /// The values, to read and write.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        self.data.as_mut_slice()
    }
}

/// What a data-aware method reports: the shape of the mask it computed (checked by the host)
/// and whether it wrote new values.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Calibrated {
    /// The mask's shape.
    pub shape: RVec<i64>,
    /// True when the method wrote new values into its [`ValuesBuffer`].
    pub values_written: bool,
}
