//! Sparse linear layers: the CPU kernel against the dense `linear` (shapes, batches, dtypes,
//! empty rows, wide inputs), the measured choice on both front ends (its break-even:
//! `sparse_break_even.rs`); the 2:4 GPU layer is `sparse_two_of_four.rs`.

mod common;

use common::mlp;
use tch::nn::Module as _;
use tch::{nn, Device, Kind, Tensor};
use tchprune::prune;
use tchprune::sparse::{self, SparseLinear, SpeedOptions};

/// A `[rows, cols]` weight with about `density` of its entries non-zero.
fn sparse_weight(rows: i64, cols: i64, density: f64) -> Tensor {
    let keep = Tensor::rand([rows, cols], (Kind::Float, Device::Cpu)).lt(density);
    Tensor::randn([rows, cols], (Kind::Float, Device::Cpu)) * keep
}

/// One timed call of each form; the sparse one chosen when `min_speedup` times faster (0:
/// always, infinity: never).
fn choosing(min_speedup: f64) -> SpeedOptions {
    SpeedOptions {
        min_speedup,
        calls: 1,
        ..Default::default()
    }
}

fn assert_close(ours: &Tensor, dense: &Tensor) {
    assert_eq!(ours.size(), dense.size());
    if dense.numel() == 0 {
        return;
    }
    let scale = dense.abs().max().double_value(&[]).max(1.0);
    let difference = (ours - dense).abs().max().double_value(&[]);
    assert!(difference <= 1e-5 * scale, "{difference} (scale {scale})");
}

#[test]
fn the_kernel_matches_the_dense_linear_at_every_batch() {
    tch::manual_seed(0);
    for (rows, cols, density) in [
        (7, 13, 0.5),
        (300, 257, 0.1),
        (64, 2048, 0.05),
        // Tall: every core takes several chunks of rows at every block width.
        (9000, 40, 0.3),
        (5, 9, 0.0),
        (4, 0, 0.5),
        (0, 6, 0.5),
    ] {
        let weight = sparse_weight(rows, cols, density);
        let bias = Tensor::randn([rows], (Kind::Float, Device::Cpu));
        let layer = SparseLinear::new(&weight, Some(&bias)).unwrap();
        for batch in [0, 1, 2, 3, 8, 13, 64, 100, 131] {
            let xs = Tensor::randn([batch, cols], (Kind::Float, Device::Cpu));
            assert_close(&layer.forward(&xs), &xs.linear(&weight, Some(&bias)));
        }
    }
}

#[test]
fn inputs_of_more_dimensions_and_other_dtypes() {
    tch::manual_seed(1);
    let weight = sparse_weight(40, 30, 0.2);
    let layer = SparseLinear::new(&weight, None).unwrap();
    let xs = Tensor::randn([2, 3, 30], (Kind::Float, Device::Cpu));
    assert_close(&layer.forward(&xs), &xs.linear::<Tensor>(&weight, None));
    let xs = xs.to_kind(Kind::Double);
    let y = layer.forward(&xs);
    assert_eq!(y.kind(), Kind::Double);
    assert_close(
        &y,
        &xs.linear::<Tensor>(&weight.to_kind(Kind::Double), None),
    );
}

#[test]
fn wide_inputs_take_32_bit_columns() {
    tch::manual_seed(2);
    let weight = sparse_weight(3, 70_000, 0.01);
    let layer = SparseLinear::new(&weight, None).unwrap();
    assert_eq!(layer.weight().cols(), 70_000);
    let nonzeros = weight.ne(0).sum(Kind::Int64).int64_value(&[]) as usize;
    assert_eq!(layer.weight().nonzeros(), nonzeros);
    // Each non-zero's value and column, each row's start, and where each row is stored.
    assert_eq!(layer.weight().bytes(), nonzeros * 8 + 4 * 4 + 3 * 8);
    for batch in [1, 5, 8, 40] {
        let xs = Tensor::randn([batch, 70_000], (Kind::Float, Device::Cpu));
        assert_close(&layer.forward(&xs), &xs.linear::<Tensor>(&weight, None));
    }
    let narrow = SparseLinear::new(&sparse_weight(3, 100, 0.5), None).unwrap();
    assert_eq!(
        narrow.weight().bytes(),
        narrow.weight().nonzeros() * 6 + 4 * 4 + 3 * 8
    );
}

#[test]
fn a_bf16_weight_keeps_its_values_in_bf16_and_multiplies_as_its_f32_copy() {
    tch::manual_seed(4);
    for (rows, cols) in [(37, 300), (5, 70_000)] {
        let weight = sparse_weight(rows, cols, 0.1).to_kind(Kind::BFloat16);
        // Negative zeros are zeros; a NaN is a non-zero, as in the f32 layer.
        let _ = weight.get(0).get(0).fill_(-0.0);
        let _ = weight.get(1).get(1).fill_(f64::NAN);
        let narrow = SparseLinear::new(&weight, None).unwrap();
        let wide = SparseLinear::new(&weight.to_kind(Kind::Float), None).unwrap();
        let nonzeros = weight.ne(0).sum(Kind::Int64).int64_value(&[]) as usize;
        assert_eq!(narrow.weight().nonzeros(), nonzeros);
        assert_eq!(wide.weight().nonzeros(), nonzeros);
        assert_eq!(narrow.weight().value_kind(), Kind::BFloat16);
        assert_eq!(wide.weight().value_kind(), Kind::Float);
        let index = if cols <= 1 << 16 { 2 } else { 4 };
        let row_starts_and_order = (rows as usize + 1) * 4 + rows as usize * 8;
        assert_eq!(
            narrow.weight().bytes(),
            nonzeros * (2 + index) + row_starts_and_order
        );
        assert_eq!(
            wide.weight().bytes(),
            nonzeros * (4 + index) + row_starts_and_order
        );
        for batch in [1, 3, 8, 16, 32, 40] {
            let xs = Tensor::randn([batch, cols], (Kind::Float, Device::Cpu));
            let (ours, f32_copy) = (narrow.forward(&xs), wide.forward(&xs));
            assert!(
                ours.allclose(&f32_copy, 0.0, 0.0, true),
                "batch {batch}, {rows}x{cols}"
            );
            assert_eq!(ours.get(0).get(1).isnan().int64_value(&[]), 1);
        }
    }
}

#[test]
fn what_does_not_fit_is_an_error() {
    let layer = SparseLinear::new(&sparse_weight(4, 6, 0.5), None).unwrap();
    let err = layer
        .try_forward(&Tensor::zeros([2, 5], (Kind::Float, Device::Cpu)))
        .unwrap_err();
    assert!(err.to_string().contains("[-1, 6]"), "{err}");
    let err = layer
        .try_forward(&Tensor::zeros([2, 6], (Kind::Int64, Device::Cpu)))
        .unwrap_err();
    assert!(err.to_string().contains("Int64"), "{err}");
    let err =
        SparseLinear::new(&Tensor::zeros([2, 3, 4], (Kind::Float, Device::Cpu)), None).unwrap_err();
    assert!(err.to_string().contains("2-d float weight"), "{err}");
    let bias = Tensor::zeros([5], (Kind::Float, Device::Cpu));
    assert!(SparseLinear::new(&sparse_weight(4, 6, 0.5), Some(&bias)).is_err());
}

#[test]
fn sparsify_converts_the_layers_it_is_told_to_and_keeps_the_outputs() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = mlp(&vs, 256);
    for key in ["0.weight", "2.weight"] {
        prune::l1_unstructured(&mut model, key, 0.9, None).unwrap();
    }
    let xs = Tensor::randn([5, 256], (Kind::Float, Device::Cpu));
    let before = tch::no_grad(|| model.forward_t(&xs, false));
    let always = choosing(0.0);
    let choices = sparse::sparsify(&mut model, &always).unwrap();
    let converted: Vec<(&str, bool)> = choices
        .iter()
        .map(|c| (c.weight.as_str(), c.sparse))
        .collect();
    assert_eq!(
        converted,
        [("0.weight", true), ("2.weight", true)],
        "fc3 has no zeros"
    );
    assert!((choices[0].sparsity - 0.9).abs() < 1e-4);
    assert!(choices[0].dense_seconds > 0.0 && choices[0].sparse_seconds > 0.0);
    assert_close(&tch::no_grad(|| model.forward_t(&xs, false)), &before);

    // Training runs dense, with gradients.
    let orig = common::backward_to_orig(&model, &xs, "0");
    assert!(orig.grad().defined());
    // A changed weight is seen: the layer falls back to the dense form.
    tch::no_grad(|| {
        let mut orig = orig.shallow_clone();
        let _ = orig.g_mul_scalar_(2.0);
    });
    let dense_again = tch::no_grad(|| model.forward_t(&xs, false));
    assert!((&dense_again - &before).abs().max().double_value(&[]) > 1e-3);
}

#[test]
fn a_half_precision_model_is_timed_and_run_in_its_dtype() {
    for dtype in [Kind::BFloat16, Kind::Half] {
        tch::manual_seed(6);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let mut model = mlp(&vs, 128);
        vs.set_kind(dtype);
        prune::l1_unstructured(&mut model, "0.weight", 0.9, None).unwrap();
        let xs = Tensor::randn([4, 128], (dtype, Device::Cpu));
        let before = tch::no_grad(|| model.forward_t(&xs, false));
        let always = choosing(0.0);
        let choices = sparse::sparsify(&mut model, &always).unwrap();
        assert_eq!(choices.len(), 1);
        assert_eq!((choices[0].dtype, choices[0].sparse), (dtype, true));
        let after = tch::no_grad(|| model.forward_t(&xs, false));
        assert_eq!(after.kind(), dtype);
        // The sparse layer sums in f32 and rounds once; the dense one rounds as it goes.
        let scale = before.abs().max().double_value(&[]).max(1.0);
        let difference = (&after - &before).abs().max().double_value(&[]);
        assert!(
            difference <= 2e-2 * scale,
            "{dtype:?}: {difference} (scale {scale})"
        );
    }
}

#[test]
fn a_varstore_layer_in_its_faster_form() {
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let fc = nn::linear(vs.root() / "fc", 128, 64, Default::default());
    let mut pruner = tchprune::VarStorePruner::new(&vs);
    prune::l1_unstructured(&mut pruner, "fc.weight", 0.95, None).unwrap();
    let always = choosing(0.0);
    let (layer, choice) = sparse::Linear::from_varstore(&vs, "fc", &always).unwrap();
    assert!(matches!(layer, sparse::Linear::Sparse(_)) && choice.sparse);
    assert_eq!(choice.dtype, Kind::Float);
    let xs = Tensor::randn([3, 128], (Kind::Float, Device::Cpu));
    assert_close(&layer.forward(&xs), &tch::no_grad(|| fc.forward(&xs)));
    let never = choosing(f64::INFINITY);
    let (layer, _) = sparse::Linear::from_varstore(&vs, "fc", &never).unwrap();
    assert!(matches!(layer, sparse::Linear::Dense { .. }));
    let err = sparse::Linear::from_varstore(&vs, "fc9", &never).unwrap_err();
    assert!(err.to_string().contains("fc9.weight"), "{err}");
}

#[test]
fn a_pruned_weight_is_skipped_so_an_infinite_input_stays_out_of_the_outputs_it_reaches_pruned() {
    // Output 0 reads input 0 through a kept weight, output 1 only through a pruned one.
    let weight = Tensor::from_slice(&[2.0f32, 1.0, 0.0, 1.0]).reshape([2, 2]);
    let layer = SparseLinear::new(&weight, None).unwrap();
    let xs = Tensor::from_slice(&[f32::INFINITY, 1.0]).reshape([1, 2]);
    let dense = xs.linear::<Tensor>(&weight, None);
    let sparse = layer.forward(&xs);
    assert_eq!(dense.double_value(&[0, 0]), f64::INFINITY);
    assert!(
        dense.double_value(&[0, 1]).is_nan(),
        "0 * inf in the dense sum"
    );
    assert_eq!(sparse.double_value(&[0, 0]), f64::INFINITY);
    assert_eq!(sparse.double_value(&[0, 1]), 1.0);
}
