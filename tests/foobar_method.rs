//! A method written outside the library: the tutorial's FooBar from the examples crate.

use std::sync::Arc;
use tch::{nn, Device, Kind};
use tchprune::{layers, prune, Module};
use tchprune_examples::foobar::FooBarPruningMethod;

fn bias_mask(model: &Module) -> Vec<f32> {
    let fc3 = model.child("fc3").expect("LeNet has fc3");
    Vec::try_from(
        fc3.buffer("bias_mask")
            .expect("pruned")
            .to_kind(Kind::Float),
    )
    .unwrap()
}

#[test]
fn foobar_zeroes_every_other_entry_of_fc3_bias_and_of_what_remains() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    prune::apply(&mut model, "fc3.bias", Arc::new(FooBarPruningMethod), None).unwrap();
    assert_eq!(bias_mask(&model), [0., 1., 0., 1., 0., 1., 0., 1., 0., 1.]);
    prune::apply(&mut model, "fc3.bias", Arc::new(FooBarPruningMethod), None).unwrap();
    assert_eq!(bias_mask(&model), [0., 0., 0., 1., 0., 0., 0., 1., 0., 0.]);
}
