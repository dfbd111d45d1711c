//! Sparse 2-d convolutions (patches times the CSR kernel, or shifted planes) against libtorch's
//! `conv2d`, the measured choice for a tch model's convolution and a `Module`'s, and refusals.

mod common;

use tch::nn::Module as _;
use tch::{nn, Device, Kind, Tensor};
use tchprune::sparse::{self, Conv2d, SparseConv2d, SpeedOptions};
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
fn the_product_by_patches_and_the_direct_one_match_conv2d() {
    tch::manual_seed(0);
    for (out, inp, k, stride, padding, dilation, batch, hw) in [
        (8, 3, 3, 1, 1, 1, 2, 9),
        (16, 8, 3, 2, 1, 1, 3, 12),
        (5, 4, 1, 1, 0, 1, 1, 7),
        (6, 2, 3, 1, 2, 2, 2, 10),
        (4, 3, 5, 3, 0, 1, 40, 11),
        // Enough inputs per block to gather them on all the cores.
        (16, 128, 3, 1, 1, 1, 4, 7),
        // Output rows of 14 or more: computed directly (by stride phases), without unfolding.
        (8, 3, 3, 1, 1, 1, 2, 20),
        (6, 4, 3, 2, 1, 1, 3, 33),
        (4, 2, 3, 1, 3, 2, 1, 16),
        (5, 3, 5, 2, 0, 1, 2, 40),
        (3, 2, 1, 1, 0, 1, 1, 14),
        (4, 2, 3, 1, 4, 1, 1, 15),
        (7, 5, 3, 3, 2, 2, 2, 50),
        (5, 4, 3, 1, 2, 2, 2, 17),
        (6, 3, 5, 1, 2, 1, 1, 16),
        (4, 2, 7, 1, 3, 1, 2, 14),
        (8, 3, 7, 2, 3, 1, 1, 40),
        (6, 4, 1, 2, 0, 1, 2, 30),
        // Rows of three and four registers of sums, and of several pieces.
        (4, 3, 3, 1, 1, 1, 1, 40),
        (3, 4, 3, 1, 1, 1, 2, 57),
        (3, 2, 3, 1, 1, 1, 1, 70),
        (2, 2, 3, 2, 1, 2, 1, 131),
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
        // A bf16 weight, kept in bf16, gives its f32 copy's outputs exactly.
        let weight = weight.to_kind(Kind::BFloat16);
        let config = config(stride, padding, dilation);
        let narrow = SparseConv2d::new(&weight, Some(&bias), &config).unwrap();
        let wide = SparseConv2d::new(&weight.to_kind(Kind::Float), Some(&bias), &config).unwrap();
        assert!(narrow.weight().bytes() < wide.weight().bytes());
        assert!(
            narrow.forward(&xs).equal(&wide.forward(&xs)),
            "k{k} s{stride}"
        );
    }
}

#[test]
fn a_rectangular_or_channels_last_input_matches_conv2d() {
    tch::manual_seed(2);
    for (stride, padding, dilation, [h, w]) in
        [(1, 1, 1, [5, 9]), (2, 2, 1, [11, 4]), (1, 0, 2, [6, 13])]
    {
        let keep = Tensor::rand([6, 3, 3, 3], (Kind::Float, Device::Cpu)).lt(0.4);
        let weight = Tensor::randn([6, 3, 3, 3], (Kind::Float, Device::Cpu)) * keep;
        let layer = SparseConv2d::new(&weight, None, &config(stride, padding, dilation)).unwrap();
        let xs = Tensor::randn([5, 3, h, w], (Kind::Float, Device::Cpu));
        let dense = xs.conv2d::<Tensor>(&weight, None, [stride; 2], [padding; 2], [dilation; 2], 1);
        // Also in channels-last strides, as a model converted to that memory format passes it.
        let channels_last = xs.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
        assert!(!channels_last.is_contiguous());
        for xs in [&xs, &channels_last] {
            let ours = layer.forward(xs);
            assert_eq!(ours.size(), dense.size());
            let difference = (&ours - &dense).abs().max().double_value(&[]);
            assert!(
                difference <= 1e-5 * dense.abs().max().double_value(&[]).max(1.0),
                "{h}x{w}"
            );
        }
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
    let strideless = nn::ConvConfig {
        stride: 0,
        ..Default::default()
    };
    let err = SparseConv2d::new(&weight, None, &strideless).unwrap_err();
    assert!(err.to_string().contains("stride 0"), "{err}");
    let always = SpeedOptions::default();
    let err = sparse::measure_conv(
        "c.weight",
        &weight,
        None,
        config(1, 0, 1),
        [1, 2, 2, 5],
        &always,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("an input of 2x5 leaves no output"),
        "{err}"
    );
}

/// conv (16 -> 32, 3x3, padding 1), ReLU, max-pool 2, grouped conv (32 -> 32, groups 2), ReLU,
/// flatten, linear: the Module path's model for `sparsify_with_input`.
fn conv_net(vs: &nn::VarStore) -> tchprune::Module {
    use tchprune::layers;
    let root = vs.root();
    let grouped = nn::ConvConfig {
        groups: 2,
        padding: 1,
        ..Default::default()
    };
    layers::sequential([
        layers::conv2d(&(&root / "conv"), 16, 32, 3, config(1, 1, 1)),
        layers::relu(),
        layers::max_pool2d(2, 2),
        layers::conv2d(&(&root / "grouped"), 32, 32, 3, grouped),
        layers::relu(),
        layers::flatten(1, -1),
        layers::linear(&(&root / "fc"), 32 * 6 * 6, 10, Default::default()),
    ])
}

fn options(min_speedup: f64) -> SpeedOptions {
    SpeedOptions {
        min_speedup,
        calls: 1,
        batch: 2,
    }
}

#[test]
fn a_module_convolution_measured_at_the_size_it_sees() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = conv_net(&vs);
    for key in ["0.weight", "3.weight", "6.weight"] {
        prune::l1_unstructured(&mut model, key, 0.9, None).unwrap();
    }
    prune::l1_unstructured(&mut model, "0.bias", 0.5, None).unwrap();
    let xs = Tensor::randn([3, 16, 12, 12], (Kind::Float, Device::Cpu));
    let before = tch::no_grad(|| model.forward_t(&xs, false));

    // Without an example only the linear layer is a candidate.
    let mut linear_only = conv_net(&nn::VarStore::new(Device::Cpu));
    prune::l1_unstructured(&mut linear_only, "0.weight", 0.9, None).unwrap();
    let choices = sparse::sparsify(&mut linear_only, &options(f64::INFINITY)).unwrap();
    assert!(choices.is_empty(), "{choices:?}");

    let choices = sparse::sparsify_with_input(&mut model, &xs, &options(0.0)).unwrap();
    let chosen: Vec<(&str, [i64; 2], bool)> = (choices.iter())
        .map(|c| (c.weight.as_str(), c.shape, c.sparse))
        .collect();
    // The grouped convolution has no sparse form: it is not a candidate.
    assert_eq!(
        chosen,
        [
            ("0.weight", [32, 144], true),
            ("6.weight", [10, 1152], true)
        ]
    );
    assert!((choices[0].sparsity - 0.9).abs() < 1e-3, "{:?}", choices[0]);
    let after = tch::no_grad(|| model.forward_t(&xs, false));
    let scale = before.abs().max().double_value(&[]).max(1.0);
    assert!((&after - &before).abs().max().double_value(&[]) <= 1e-5 * scale);
    // Other input sizes and batches still work (the convolution takes any size).
    let other = Tensor::randn([1, 16, 12, 12], (Kind::Float, Device::Cpu));
    assert_eq!(
        tch::no_grad(|| model.forward_t(&other, false)).size(),
        [1, 10]
    );
    // Training runs the original forward, with gradients to the pruned weight.
    let orig = common::backward_to_orig(&model, &xs, "0");
    assert!(orig.grad().defined());
}

#[test]
fn an_example_the_model_does_not_take_is_an_error_that_changes_nothing() {
    tch::manual_seed(4);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = conv_net(&vs);
    prune::l1_unstructured(&mut model, "0.weight", 0.9, None).unwrap();
    let xs = Tensor::randn([2, 16, 12, 12], (Kind::Float, Device::Cpu));
    let before = tch::no_grad(|| model.forward_t(&xs, false));
    let wrong = Tensor::randn([2, 3, 12, 12], (Kind::Float, Device::Cpu));
    let err = sparse::sparsify_with_input(&mut model, &wrong, &options(0.0)).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("example input"), "{message}");
    assert!(message.contains("[2, 3, 12, 12]"), "{message}");
    // The recording forward functions are gone again: the model runs as before.
    assert!(tch::no_grad(|| model.forward_t(&xs, false)).equal(&before));
    let choices = sparse::sparsify_with_input(&mut model, &xs, &options(0.0)).unwrap();
    assert_eq!(choices.len(), 1);
}

#[test]
fn a_pruned_tap_is_skipped_so_a_nan_input_stays_out_of_the_outputs_it_reaches_pruned() {
    // One input channel, two output channels: the first keeps the centre tap, the second only
    // the top-left one, so the NaN in the middle of the input reaches the second output's
    // centre through pruned taps only.
    let mut kernel = vec![0.0f32; 18];
    kernel[4] = 1.0;
    kernel[9] = 1.0;
    let weight = Tensor::from_slice(&kernel).reshape([2, 1, 3, 3]);
    let mut input = vec![1.0f32; 9];
    input[4] = f32::NAN;
    let xs = Tensor::from_slice(&input).reshape([1, 1, 3, 3]);
    let config = nn::ConvConfig {
        padding: 1,
        ..Default::default()
    };
    let layer = SparseConv2d::new(&weight, None, &config).unwrap();
    let sparse = layer.forward(&xs);
    let dense = xs.conv2d::<Tensor>(&weight, None, 1, 1, 1, 1);
    assert!(
        dense.double_value(&[0, 1, 1, 1]).is_nan(),
        "0 * NaN in the dense sum"
    );
    assert_eq!(sparse.double_value(&[0, 1, 1, 1]), 1.0);
    assert!(
        sparse.double_value(&[0, 0, 1, 1]).is_nan(),
        "a kept tap reads the NaN"
    );
}
