//! custom_from_mask, and methods written outside the crate (the tutorial's FooBar).

mod common;

use std::sync::Arc;
use tch::{nn, Device, Tensor};
use tchprune::{layers, prune, PruningMethod, PruningType, Result};

#[test]
fn a_custom_mask_combines_with_the_existing_mask() {
    let t = common::tensor2(&[&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]]);
    let mut m = common::module_with_weight(&t);
    prune::l1_unstructured(&mut m, "weight", 2, None).unwrap();
    let custom = common::tensor2(&[&[1.0, 1.0, 1.0], &[0.0, 1.0, 1.0]]);
    prune::custom_from_mask(&mut m, "weight", &custom).unwrap();
    assert_eq!(
        common::mask_values(&m, "weight"),
        [0.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    );
}

#[test]
fn a_custom_mask_must_be_binary_and_of_the_right_shape() {
    let (_vs, mut m) = common::linear_model(3, 2);
    assert!(prune::custom_from_mask(
        &mut m,
        "weight",
        &common::tensor2(&[&[0.5, 1.0, 1.0], &[1.0, 1.0, 1.0]])
    )
    .is_err());
    assert!(prune::custom_from_mask(&mut m, "weight", &common::tensor2(&[&[1.0, 1.0]])).is_err());
    assert!(!m.is_pruned());
}

#[derive(Debug)]
struct FooBarPruningMethod;

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

#[test]
fn foobar_zeroes_every_other_entry_of_fc3_bias() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    prune::apply(&mut model, "fc3.bias", Arc::new(FooBarPruningMethod), None).unwrap();
    assert_eq!(
        common::mask_values(&model, "fc3.bias"),
        [0., 1., 0., 1., 0., 1., 0., 1., 0., 1.]
    );
    // applied again, it zeroes every other entry of what remains
    prune::apply(&mut model, "fc3.bias", Arc::new(FooBarPruningMethod), None).unwrap();
    assert_eq!(
        common::mask_values(&model, "fc3.bias"),
        [0., 0., 0., 1., 0., 0., 0., 1., 0., 0.]
    );
}
