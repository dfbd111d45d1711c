//! The tutorial's custom method, written in Rust: zero every other entry.

use tch::Tensor;
use tchprune::{PruningMethod, PruningType, Result};

/// Prunes every other entry of the (flattened) tensor, starting with the first.
#[derive(Clone, Copy, Debug, Default)]
pub struct FooBarPruningMethod;

impl PruningMethod for FooBarPruningMethod {
    fn name(&self) -> &str {
        "foobar"
    }

    fn pruning_type(&self) -> PruningType {
        PruningType::Unstructured
    }

    fn compute_mask(&self, _t: &Tensor, default_mask: &Tensor) -> Result<Tensor> {
        let mask = default_mask.copy();
        let _ = mask.view(-1).slice(0, 0, None, 2).fill_(0);
        Ok(mask)
    }
}
