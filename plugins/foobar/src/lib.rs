//! The pruning tutorial's FooBar method as a plugin: it prunes every other entry of the tensor
//! (of the still unpruned entries, when applied on top of an earlier mask, because it is
//! unstructured and the host hands it only those).

use tchprune_plugin_api::{Arguments, Method, PruningType, TensorView};

/// Prunes every other entry, starting with the first.
pub struct FooBar;

impl Method for FooBar {
    const NAME: &'static str = "foobar";
    const DESCRIPTION: &'static str =
        "prunes every other entry (the tutorial's FooBarPruningMethod)";
    const PRUNING_TYPE: PruningType = PruningType::Unstructured;

    fn from_args(_args: &Arguments) -> Result<Self, String> {
        Ok(FooBar)
    }

    fn compute_mask(
        &self,
        _tensor: &TensorView<'_>,
        _default_mask: &[u8],
        mask: &mut [u8],
    ) -> Result<(), String> {
        mask.iter_mut().step_by(2).for_each(|entry| *entry = 0);
        Ok(())
    }
}

tchprune_plugin_api::export_plugin!(FooBar);
