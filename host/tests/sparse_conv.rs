//! Sparse 2-d convolutions (unfolded patches times the CSR kernel) against libtorch's
//! `conv2d`, the measured choice for a tch model's convolution, and refusals.

use tch::nn::Module as _;
use tch::{nn, Device, Kind, Tensor};
use tchprune::sparse::{Conv2d, SparseConv2d, SpeedOptions};
use tchprune::{prune, VarStorePruner};

fn config(stride: i64, padding: i64, dilation: i64) -> nn::ConvConfig {
    nn::ConvConfig {
        stride,
        padding,
        dilation,
        ..Default::default()
    }
}

#[test]
fn the_unfolded_product_matches_conv2d() {
    tch::manual_seed(0);
    for (out, inp, k, stride, padding, dilation, batch, hw) in [
        (8, 3, 3, 1, 1, 1, 2, 9),
        (16, 8, 3, 2, 1, 1, 3, 12),
        (5, 4, 1, 1, 0, 1, 1, 7),
        (6, 2, 3, 1, 2, 2, 2, 10),
        (4, 3, 5, 3, 0, 1, 40, 11),
    ] {
        let keep = Tensor::rand([out, inp, k, k], (Kind::Float, Device::Cpu)).lt(0.3);
        let weight = Tensor::randn([out, inp, k, k], (Kind::Float, Device::Cpu)) * keep;
        let bias = Tensor::randn([out], (Kind::Float, Device::Cpu));
        let layer =
            SparseConv2d::new(&weight, Some(&bias), &config(stride, padding, dilation)).unwrap();
        let xs = Tensor::randn([batch, inp, hw, hw], (Kind::Float, Device::Cpu));
        let dense = xs.conv2d(
            &weight,
            Some(&bias),
            [stride; 2],
            [padding; 2],
            [dilation; 2],
            1,
        );
        let ours = layer.forward(&xs);
        assert_eq!(ours.size(), dense.size());
        let scale = dense.abs().max().double_value(&[]).max(1.0);
        let difference = (&ours - &dense).abs().max().double_value(&[]);
        assert!(
            difference <= 1e-5 * scale,
            "{difference} for k{k} s{stride} p{padding} d{dilation}"
        );
    }
}

#[test]
fn a_varstore_convolution_in_its_measured_form() {
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let conv = nn::conv2d(vs.root() / "conv", 32, 64, 3, config(1, 1, 1));
    let mut pruner = VarStorePruner::new(&vs);
    prune::l1_unstructured(&mut pruner, "conv.weight", 0.95, None).unwrap();
    let xs = Tensor::randn([2, 32, 14, 14], (Kind::Float, Device::Cpu));
    let expected = tch::no_grad(|| conv.forward(&xs));
    let always = SpeedOptions {
        min_speedup: 0.0,
        calls: 1,
        ..Default::default()
    };
    let (layer, choice) =
        Conv2d::from_varstore(&vs, "conv", config(1, 1, 1), [2, 32, 14, 14], &always).unwrap();
    assert!(matches!(layer, Conv2d::Sparse(_)) && choice.sparse);
    assert_eq!(choice.shape, [64, 288]);
    assert!((choice.sparsity - 0.95).abs() < 1e-3);
    let difference = (layer.forward(&xs) - &expected)
        .abs()
        .max()
        .double_value(&[]);
    assert!(difference < 1e-4, "{difference}");
    let never = SpeedOptions {
        min_speedup: f64::INFINITY,
        calls: 1,
        ..Default::default()
    };
    let (layer, _) =
        Conv2d::from_varstore(&vs, "conv", config(1, 1, 1), [2, 32, 14, 14], &never).unwrap();
    assert!(matches!(layer, Conv2d::Dense { .. }));
    assert!(
        (layer.forward(&xs) - &expected)
            .abs()
            .max()
            .double_value(&[])
            < 1e-6
    );
}

#[test]
fn what_it_cannot_run_is_refused() {
    let weight = Tensor::zeros([4, 2, 3, 3], (Kind::Float, Device::Cpu));
    let grouped = nn::ConvConfig {
        groups: 2,
        ..Default::default()
    };
    let err = SparseConv2d::new(&weight, None, &grouped).unwrap_err();
    assert!(err.to_string().contains("groups 1"), "{err}");
    let layer = SparseConv2d::new(&weight, None, &Default::default()).unwrap();
    let err = layer
        .try_forward(&Tensor::zeros([1, 3, 5, 5], (Kind::Float, Device::Cpu)))
        .unwrap_err();
    assert!(err.to_string().contains("[-1, 2, -1, -1]"), "{err}");
    let vs = nn::VarStore::new(Device::Cpu);
    let err = Conv2d::from_varstore(
        &vs,
        "nothing",
        Default::default(),
        [1, 2, 5, 5],
        &SpeedOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("nothing.weight"), "{err}");
}
