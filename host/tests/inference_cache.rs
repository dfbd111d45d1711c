//! The pruned tensor as the forward pass sees it stays `orig * mask` whatever changes between
//! calls, although inference keeps the product (and training the mask in the parameter's
//! dtype) from one call to the next.

mod common;

use tch::{Kind, Tensor};
use tchprune::{prune, Module};

fn pruned_holder() -> Module {
    let t = Tensor::from_slice(&[1.0f32, -2.0, 3.0, -4.0, 5.0, -6.0]).view([2, 3]);
    let mut m = common::module_with_weight(&t);
    prune::l1_unstructured(&mut m, "weight", 2, None).unwrap();
    m
}

fn expected(m: &Module) -> Vec<f64> {
    let orig = m.parameter("weight_orig").unwrap();
    let mask = m.buffer("weight_mask").unwrap();
    common::values(&(orig * mask.to_kind(Kind::Float)))
}

fn inference(m: &Module) -> Vec<f64> {
    tch::no_grad(|| common::values(&m.get("weight")))
}

#[test]
fn inference_sees_in_place_updates_of_orig() {
    let m = pruned_holder();
    assert_eq!(inference(&m), [0., 0., 3., -4., 5., -6.]);
    assert_eq!(inference(&m), [0., 0., 3., -4., 5., -6.]);
    let mut orig = m.parameter("weight_orig").unwrap().shallow_clone();
    tch::no_grad(|| {
        let _ = orig.g_add_scalar_(1.0);
    });
    assert_eq!(inference(&m), expected(&m));
    assert_eq!(inference(&m), [0., 0., 4., -3., 6., -5.]);
}

#[test]
fn inference_sees_new_and_edited_masks() {
    let mut m = pruned_holder();
    assert_eq!(inference(&m), [0., 0., 3., -4., 5., -6.]);
    prune::l1_unstructured(&mut m, "weight", 1, None).unwrap();
    assert_eq!(inference(&m), [0., 0., 0., -4., 5., -6.]);
    let mut mask = m.buffer("weight_mask").unwrap().shallow_clone();
    let _ = mask.fill_(1);
    assert_eq!(inference(&m), [1., -2., 3., -4., 5., -6.]);
}

#[test]
fn writing_into_a_returned_tensor_does_not_leak_into_the_next_call() {
    let m = pruned_holder();
    let mut first = tch::no_grad(|| m.get("weight"));
    let _ = first.fill_(42.0);
    assert_eq!(inference(&m), [0., 0., 3., -4., 5., -6.]);
}

#[test]
fn training_still_gets_gradients_after_inference_and_sees_optimizer_steps() {
    let m = pruned_holder();
    let _ = inference(&m);
    let orig = m.parameter("weight_orig").unwrap().shallow_clone();
    for step in 0..2 {
        let w = m.get("weight");
        assert!(w.requires_grad());
        assert_eq!(common::values(&w), expected(&m), "step {step}");
        w.sum(Kind::Float).backward();
        assert_eq!(common::values(&orig.grad()), [0., 0., 1., 1., 1., 1.]);
        tch::no_grad(|| {
            let mut orig = orig.shallow_clone();
            let grad = orig.grad();
            let _ = orig.g_sub_(&grad);
            let _ = orig.grad().zero_();
        });
    }
    assert_eq!(inference(&m), [0., 0., 1., -6., 3., -8.]);
}

#[test]
fn removing_the_pruning_gives_the_plain_parameter() {
    let mut m = pruned_holder();
    let _ = inference(&m);
    prune::remove(&mut m, "weight").unwrap();
    assert_eq!(inference(&m), [0., 0., 3., -4., 5., -6.]);
    let mut weight = m.parameter("weight").unwrap().shallow_clone();
    tch::no_grad(|| {
        let _ = weight.fill_(2.0);
    });
    assert_eq!(inference(&m), [2.; 6]);
}
