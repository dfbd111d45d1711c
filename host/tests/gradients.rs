//! Gradients through the reparametrization: they reach `orig` multiplied by the mask.

mod common;

use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Tensor};
use tchprune::{layers, prune};

#[test]
fn identity_pruning_changes_neither_forward_nor_gradients() {
    let (_vs, mut model) = common::linear_model(5, 3);
    let x = Tensor::randn([4, 5], (Kind::Float, Device::Cpu));
    let y = model.forward(&x);
    y.sum(Kind::Float).backward();
    let grad = model.parameter("weight").unwrap().grad().copy();
    let _ = model.parameter("weight").unwrap().grad().zero_();
    prune::identity(&mut model, "weight").unwrap();
    let y2 = model.forward(&x);
    assert!(y2.equal(&y));
    y2.sum(Kind::Float).backward();
    assert!(model.parameter("weight_orig").unwrap().grad().equal(&grad));
}

#[test]
fn gradient_of_orig_equals_the_mask_for_a_sum_of_weights() {
    let (_vs, mut model) = common::linear_model(6, 4);
    prune::random_unstructured(&mut model, "weight", 0.5).unwrap();
    model.get("weight").sum(Kind::Float).backward();
    let grad = model.parameter("weight_orig").unwrap().grad();
    let mask = model.buffer("weight_mask").unwrap().to_kind(Kind::Float);
    assert!(grad.equal(&mask));
}

#[test]
fn an_sgd_step_leaves_pruned_entries_of_orig_unchanged() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::linear(&vs.root(), 10, 6, layers::torch_linear_config(10));
    // the optimizer is built before pruning and keeps working on weight_orig
    let mut sgd = nn::Sgd::default().build(&vs, 0.1).unwrap();
    prune::l1_unstructured(&mut model, "weight", 0.5, None).unwrap();
    let before = model.parameter("weight_orig").unwrap().copy();
    let mask = model.buffer("weight_mask").unwrap().shallow_clone();
    let x = Tensor::randn([8, 10], (Kind::Float, Device::Cpu));
    let loss = model.forward(&x).pow_tensor_scalar(2).mean(Kind::Float);
    sgd.backward_step(&loss);
    let after = model.parameter("weight_orig").unwrap();
    let pruned = mask.logical_not();
    assert!(
        after
            .masked_select(&pruned)
            .equal(&before.masked_select(&pruned)),
        "pruned entries unchanged"
    );
    assert!(
        !after
            .masked_select(&mask)
            .equal(&before.masked_select(&mask)),
        "kept entries trained"
    );
    assert_eq!(
        model
            .get("weight")
            .masked_select(&pruned)
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0
    );
}
