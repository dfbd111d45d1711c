//! `identity`: the mask stays as it is; useful to reparametrize a tensor without pruning it.

use crate::error::Result;
use crate::method::{MethodArgs, PruningMethod, PruningType};
use crate::registry::MethodEntry;
use std::sync::Arc;
use tch::Tensor;

/// Applies no pruning: PyTorch's `prune.Identity`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity;

impl PruningMethod for Identity {
    fn name(&self) -> &str {
        "identity"
    }

    fn pruning_type(&self) -> PruningType {
        PruningType::Unstructured
    }

    fn compute_mask(&self, _t: &Tensor, default_mask: &Tensor) -> Result<Tensor> {
        Ok(default_mask.shallow_clone())
    }
}

inventory::submit! {
    MethodEntry {
        name: "identity",
        arguments: &[],
        pruning_type: "unstructured",
        description: "Leaves the mask unchanged: reparametrizes without pruning",
        build: |args| {
            MethodArgs::new("identity", args, &[])?;
            Ok(Arc::new(Identity))
        },
    }
}
