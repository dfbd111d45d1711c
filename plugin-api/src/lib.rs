//! The stable ABI between [tchprune](https://docs.rs/tchprune) and pruning methods built as
//! `cdylib` plugins.
//!
//! This crate does not depend on tch or libtorch, so a plugin builds in seconds. A plugin lends
//! nothing and owns nothing across the boundary: the host lends it read-only [`TensorView`]s of
//! the tensor (or its importance scores) and of the default mask, plus a host-allocated
//! [`MaskBuffer`] to write the mask into, and checks the result before using it.
//!
//! - [`Method`] and [`export_plugin!`] are all a plugin author needs (see the [`guide`], this
//!   crate's README, for the walkthrough).
//! - [`PluginModule`] is the exported root module, checked by abi_stable for version and
//!   layout when the host loads it.
//! - [`FfiMethod`] is the FFI-safe trait object behind each built method.

#![warn(missing_docs)]

mod amount;
pub mod author;
mod calibration;
#[doc = include_str!("../README.md")]
pub mod guide {}
mod method;
mod root_module;
mod tensor;

pub use abi_stable;
pub use amount::Amount;
pub use author::{Argument, Arguments, Method};
pub use calibration::{Calibrated, Statistics, StatisticsView, ValuesBuffer};
pub use method::{ArgumentInfo, FfiMethod, FfiMethod_TO, MethodBox, MethodInfo, PruningType};
pub use root_module::{PluginModule, PluginModuleRef, PLUGIN_API_VERSION};
pub use tensor::{contiguous_strides, DType, Device, Element, MaskBuffer, TensorView};

#[cfg(test)]
mod tests {
    /// `export_root_module!` spells the symbol out, since `#[no_mangle]` needs an identifier.
    #[test]
    fn exported_symbol_is_the_one_abi_stable_looks_up() {
        assert_eq!(
            abi_stable::library::ROOT_MODULE_LOADER_NAME,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }
}
