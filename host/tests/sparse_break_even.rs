//! The measured choice between a layer's dense and sparse forms keeps the dense one where
//! sparse is not faster: a layer at 50% sparsity stays dense. Alone in its test binary, so that
//! no other test loads the machine while it times.

mod common;

use common::mlp;
use tch::{nn, Device};
use tchprune::prune;
use tchprune::sparse::{self, SpeedOptions};

#[test]
fn a_layer_that_is_not_faster_sparse_stays_dense() {
    tch::manual_seed(4);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = mlp(&vs, 16);
    prune::l1_unstructured(&mut model, "0.weight", 0.5, None).unwrap();
    let never = SpeedOptions {
        min_speedup: f64::INFINITY,
        calls: 1,
        ..Default::default()
    };
    assert!(!sparse::sparsify(&mut model, &never).unwrap()[0].sparse);
    // At 50%, 16 features and a batch of 16,384 the dense matrix product wins by a wide margin
    // (2.2x to 3x on the 2-core machine this was written on). Wider layers narrow it: since
    // the sparse kernel transposes its batch blocks itself, a 128-wide layer at batch 1024 is
    // a near tie (0.7x to 1.09x), too close for a measured choice to be asserted.
    let measured = SpeedOptions {
        batch: 16_384,
        ..Default::default()
    };
    let choice = &sparse::sparsify(&mut model, &measured).unwrap()[0];
    assert!(!choice.sparse, "{choice:?}");
    assert!(choice.speedup() < 1.0, "{choice:?}");
}
