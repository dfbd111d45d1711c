//! What a plugin's method is across the boundary: its metadata and its FFI-safe trait object.

// `#[sabi_trait]` implements foreign traits inside a generated constant.
#![allow(non_local_definitions)]

use crate::calibration::{Calibrated, Statistics, StatisticsView, ValuesBuffer};
use crate::tensor::{MaskBuffer, TensorView};
use abi_stable::sabi_trait;
use abi_stable::std_types::{RBox, RResult, RString, RVec};
use abi_stable::StableAbi;
use std::fmt;

/// What part of an already pruned tensor a method sees (PyTorch's `PRUNING_TYPE`).
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PruningType {
    /// Only the entries still unpruned, as one flat list.
    Unstructured,
    /// Only the slices along `dim` that are not entirely pruned.
    Structured {
        /// The dimension along which whole slices are pruned; negative counts from the end.
        dim: i64,
    },
    /// The whole tensor, with the default mask.
    Global,
}

impl fmt::Display for PruningType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PruningType::Unstructured => f.write_str("unstructured"),
            PruningType::Structured { dim } => write!(f, "structured(dim={dim})"),
            PruningType::Global => f.write_str("global"),
        }
    }
}

/// One argument a method accepts, for listings and for refusing unknown arguments.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct ArgumentInfo {
    /// Its JSON key.
    pub name: RString,
    /// What it means, and its default.
    pub description: RString,
}

/// What the host can know about a method before building it.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct MethodInfo {
    /// The name it is found by; unique among every method the host knows.
    pub name: RString,
    /// One line saying what it does.
    pub description: RString,
    /// Its PRUNING_TYPE (for a structured method, the `dim` used when none is given).
    pub pruning_type: PruningType,
    /// The arguments it accepts.
    pub arguments: RVec<ArgumentInfo>,
}

/// A method built from its arguments, as the host calls it.
///
/// Implementations must not unwind: the helper layer ([`crate::Method`]) catches panics and
/// returns them as errors.
#[sabi_trait]
pub trait FfiMethod: Send + Sync {
    /// The method's name.
    fn name(&self) -> RString;

    /// Its PRUNING_TYPE, with the arguments it was built from.
    fn pruning_type(&self) -> PruningType;

    /// The arguments it was built from, as a JSON object.
    fn arguments_json(&self) -> RString;

    /// Writes the mask for `tensor` into `mask` (which holds `default_mask` on entry) and
    /// returns the shape of the mask it computed, which the host checks against the tensor's.
    #[sabi(last_prefix_field)]
    fn compute_mask(
        &self,
        tensor: TensorView<'_>,
        default_mask: TensorView<'_>,
        mask: MaskBuffer<'_>,
    ) -> RResult<RVec<i64>, RString>;

    /// The statistics of the layer's inputs the method needs. Methods after `compute_mask`
    /// have defaults, so they are optional in the vtable: a plugin built before they existed
    /// loads, and needs none.
    fn statistics(&self) -> Statistics {
        Statistics::None
    }

    /// For a data-aware method: writes the mask for the weight `tensor` (`[out, in]`) into
    /// `mask` (holding `default_mask` on entry) from the layer's `statistics`, and new values
    /// into `values` when it rewrites the kept weights.
    fn compute_calibrated(
        &self,
        tensor: TensorView<'_>,
        default_mask: TensorView<'_>,
        statistics: StatisticsView<'_>,
        mask: MaskBuffer<'_>,
        values: ValuesBuffer<'_>,
    ) -> RResult<Calibrated, RString> {
        let _ = (tensor, default_mask, statistics, mask, values);
        RResult::RErr("this method takes no calibration statistics".into())
    }
}

/// A built method, owned by the host.
pub type MethodBox = FfiMethod_TO<'static, RBox<()>>;
