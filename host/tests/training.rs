//! Pruning inside a training loop: a pruned LeNet keeps learning, its zeros stay zeros, and the
//! pruned entries of `orig` keep their values under SGD. Also a recurrent layer.

mod common;

use std::sync::Arc;
use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Tensor};
use tchprune::method::L1Unstructured;
use tchprune::{layers, prune, Module};

/// A synthetic task LeNet can learn: the class is the brightest of ten image bands.
fn batch(size: i64) -> (Tensor, Tensor) {
    let x = Tensor::rand([size, 1, 28, 28], (Kind::Float, Device::Cpu)) * 0.1;
    let labels = Tensor::randint(10, [size], (Kind::Int64, Device::Cpu));
    for (i, label) in Vec::<i64>::try_from(&labels)
        .unwrap()
        .into_iter()
        .enumerate()
    {
        let _ = x.get(i as i64).narrow(1, 2 * label + 4, 2).fill_(1.0);
    }
    (x, labels)
}

#[test]
fn a_pruned_lenet_trains_and_keeps_its_zeros() {
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    let mut sgd = nn::Sgd {
        momentum: 0.9,
        ..Default::default()
    }
    .build(&vs, 0.05)
    .unwrap();
    let weights = layers::LENET_WEIGHTS;
    prune::global_unstructured(
        &mut model,
        &weights,
        Arc::new(L1Unstructured::new(0.5).unwrap()),
        &[],
    )
    .unwrap();
    let fc1 = model.child("fc1").unwrap();
    let pruned = fc1.buffer("weight_mask").unwrap().logical_not();
    let frozen = fc1.parameter("weight_orig").unwrap().masked_select(&pruned);

    let (test_x, test_y) = batch(256);
    let loss_of = |m: &Module| {
        m.forward(&test_x)
            .cross_entropy_for_logits(&test_y)
            .double_value(&[])
    };
    let initial = loss_of(&model);
    for _ in 0..80 {
        let (x, y) = batch(32);
        let loss = model.forward_t(&x, true).cross_entropy_for_logits(&y);
        sgd.backward_step(&loss);
    }
    let last = loss_of(&model);
    assert!(last < initial * 0.5, "loss {initial} -> {last}");

    let rows = tchprune::sparsity::sparsity(&model, &weights).unwrap();
    assert_eq!(
        rows.last().unwrap().zeros,
        (0.5f64 * 59_838.0).round_ties_even() as i64
    );
    let fc1 = model.child("fc1").unwrap();
    assert!(fc1
        .parameter("weight_orig")
        .unwrap()
        .masked_select(&pruned)
        .equal(&frozen));
}

/// An Elman RNN cell, declared as a user would declare their own prunable layer.
fn rnn(path: &nn::Path, input: i64, hidden: i64) -> Module {
    let init = nn::Init::Uniform { lo: -0.3, up: 0.3 };
    Module::new("RNN")
        .with_parameter(
            "weight_ih_l0",
            path.var("weight_ih_l0", &[hidden, input], init),
        )
        .with_parameter(
            "weight_hh_l0",
            path.var("weight_hh_l0", &[hidden, hidden], init),
        )
        .with_parameter(
            "bias_l0",
            path.var("bias_l0", &[hidden], nn::Init::Const(0.0)),
        )
        .with_forward(|m, xs, _| {
            let (w_ih, w_hh, b) = (
                m.get("weight_ih_l0"),
                m.get("weight_hh_l0"),
                m.get("bias_l0"),
            );
            let mut h = Tensor::zeros([xs.size()[0], w_hh.size()[0]], (Kind::Float, xs.device()));
            for t in 0..xs.size()[1] {
                h = (xs.select(1, t).linear(&w_ih, Some(&b)) + h.linear::<Tensor>(&w_hh, None))
                    .tanh();
            }
            h
        })
}

#[test]
fn a_recurrent_weight_stays_trainable_after_prune_and_remove() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut cell = rnn(&vs.root(), 3, 8);
    prune::l1_unstructured(&mut cell, "weight_hh_l0", 0.5, None).unwrap();
    prune::remove(&mut cell, "weight_hh_l0").unwrap();
    let mut sgd = nn::Sgd::default().build(&vs, 0.5).unwrap();
    let before = cell.parameter("weight_hh_l0").unwrap().copy();
    assert!(cell.parameter("weight_hh_l0").unwrap().requires_grad());
    let x = Tensor::randn([4, 5, 3], (Kind::Float, Device::Cpu));
    sgd.backward_step(&cell.forward(&x).pow_tensor_scalar(2).sum(Kind::Float));
    let after = cell.parameter("weight_hh_l0").unwrap();
    assert!(!after.equal(&before), "weight_hh trained");
    assert!(
        after.eq(0.0).sum(Kind::Int64).int64_value(&[]) < 32,
        "removed pruning no longer holds zeros"
    );
}
