//! 2:4 sparsity through cuSPARSELt: the checks that run everywhere (the 2:4 test, the shapes
//! and dtypes cuSPARSELt refuses), and, where a CUDA device is present, the layer against the
//! dense `linear` and the measured choice on both front ends. Without CUDA those tests say they
//! skip.

mod common;

use common::mlp;
use tch::nn::Module as _;
use tch::{nn, Device, Kind, Tensor};
use tchprune::prune;
use tchprune::sparse::{self, is_two_of_four, SemiStructuredLinear, SparseFormat, SpeedOptions};

/// The mask keeping the 2 largest magnitudes in every 4 consecutive entries of each row (what
/// the `nm` plugin computes by default).
fn two_of_four_mask(weight: &Tensor) -> Tensor {
    let size = weight.size();
    let groups = weight.reshape([-1, 4]);
    let (_, order) = groups.abs().sort(-1, true);
    groups
        .zeros_like()
        .scatter_value(-1, &order.narrow(-1, 0, 2), 1.0)
        .reshape(size)
}

fn cuda() -> Option<Device> {
    if SemiStructuredLinear::is_available() {
        Some(Device::Cuda(0))
    } else {
        eprintln!("skipped: no CUDA device (the 2:4 cuSPARSELt path needs one)");
        None
    }
}

/// Every layer sparse (`always`) or every layer dense (`never`), one timed call each.
fn options(min_speedup: f64) -> SpeedOptions {
    SpeedOptions {
        min_speedup,
        calls: 1,
        batch: 8,
    }
}

fn assert_close(ours: &Tensor, dense: &Tensor) {
    assert_eq!(ours.size(), dense.size());
    let (ours, dense) = (ours.to_kind(Kind::Float), dense.to_kind(Kind::Float));
    let scale = dense.abs().max().double_value(&[]).max(1.0);
    let difference = (&ours - &dense).abs().max().double_value(&[]);
    assert!(difference <= 1e-2 * scale, "{difference} (scale {scale})");
}

#[test]
fn the_two_of_four_check() {
    tch::manual_seed(0);
    let weight = Tensor::randn([32, 64], (Kind::Float, Device::Cpu));
    let pruned = &weight * two_of_four_mask(&weight);
    assert!(is_two_of_four(&pruned).unwrap());
    assert!(is_two_of_four(&pruned.to_kind(Kind::Half)).unwrap());
    assert!(is_two_of_four(&pruned.reshape([2, 16, 64])).unwrap());
    assert!(!is_two_of_four(&weight).unwrap(), "dense");
    // One group of 4 with 3 non-zeros is enough to fail.
    let three = pruned.copy();
    three
        .narrow(0, 5, 1)
        .narrow(1, 8, 4)
        .copy_(&Tensor::from_slice(&[1.0f32, 2.0, 3.0, 0.0]).reshape([1, 4]));
    assert!(!is_two_of_four(&three).unwrap());
    let six = Tensor::zeros([4, 6], (Kind::Float, Device::Cpu));
    assert!(!is_two_of_four(&six).unwrap(), "6 is not a multiple of 4");
    assert!(!is_two_of_four(&Tensor::from(1.0f32)).unwrap(), "0-d");
    assert!(is_two_of_four(&Tensor::zeros([16, 16], (Kind::Half, Device::Cpu))).unwrap());
}

#[test]
fn refusals_name_what_cusparselt_cannot_take() {
    let zeros = |shape: &[i64], kind| Tensor::zeros(shape, (kind, Device::Cpu));
    for shape in [&[8, 16][..], &[16, 20], &[16], &[16, 16, 4]] {
        let err = SemiStructuredLinear::new(&zeros(shape, Kind::Half), None).unwrap_err();
        assert!(
            err.to_string().contains("multiples of 16"),
            "{shape:?}: {err}"
        );
    }
    let err = SemiStructuredLinear::new(&zeros(&[16, 16], Kind::Float), None).unwrap_err();
    assert!(err.to_string().contains("fp16 or bf16 on CUDA"), "{err}");
    let err = SemiStructuredLinear::new(&zeros(&[16, 16], Kind::Half), None).unwrap_err();
    assert!(err.to_string().contains("fp16 or bf16 on CUDA"), "{err}");
}

#[test]
fn on_the_cpu_a_two_of_four_layer_is_measured_in_csr() {
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = mlp(&vs, 64);
    let weight = model.submodule("0").unwrap().get("weight");
    prune::custom_from_mask(&mut model, "0.weight", &two_of_four_mask(&weight)).unwrap();
    let choices = sparse::sparsify(&mut model, &options(0.0)).unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0].format, SparseFormat::Csr);
    assert!((choices[0].sparsity - 0.5).abs() < 1e-9, "{:?}", choices[0]);
}

#[test]
fn the_layer_equals_the_dense_linear() {
    let Some(device) = cuda() else { return };
    tch::manual_seed(2);
    for kind in [Kind::Half, Kind::BFloat16] {
        let dense = Tensor::randn([256, 512], (kind, device));
        let weight = &dense * two_of_four_mask(&dense);
        let bias = Tensor::randn([256], (kind, device));
        let layer = SemiStructuredLinear::new(&weight, Some(&bias)).unwrap();
        assert_eq!(layer.shape(), [256, 512]);
        // Row counts that are not multiples of 8 are padded, as PyTorch pads them.
        for shape in [
            &[1, 512][..],
            &[3, 512],
            &[8, 512],
            &[64, 512],
            &[2, 5, 512],
        ] {
            let xs = Tensor::randn(shape, (kind, device));
            let expected = xs.linear(&weight, Some(&bias));
            let got = layer.forward(&xs);
            assert_eq!(got.kind(), kind);
            assert_close(&got, &expected);
        }
        let no_bias = SemiStructuredLinear::new(&weight, None).unwrap();
        let xs = Tensor::randn([16, 512], (kind, device));
        assert_close(&no_bias.forward(&xs), &xs.linear::<Tensor>(&weight, None));
        assert!(SemiStructuredLinear::new(&dense, None).is_err(), "not 2:4");
        let err = layer.try_forward(&xs.to_kind(Kind::Float)).unwrap_err();
        assert!(err.to_string().contains("2:4 linear layer"), "{err}");
    }
}

#[test]
fn sparsify_runs_two_of_four_layers_through_cusparselt() {
    let Some(device) = cuda() else { return };
    tch::manual_seed(3);
    let mut vs = nn::VarStore::new(device);
    let mut model = mlp(&vs, 256);
    vs.half();
    let weight = model.submodule("0").unwrap().get("weight");
    prune::custom_from_mask(&mut model, "0.weight", &two_of_four_mask(&weight)).unwrap();
    // Unstructured 50% is not 2:4: no sparse form on CUDA, the layer is left alone.
    prune::l1_unstructured(&mut model, "2.weight", 0.5, None).unwrap();
    let xs = Tensor::randn([8, 256], (Kind::Half, device));
    let before = tch::no_grad(|| model.forward_t(&xs, false));
    let choices = sparse::sparsify(&mut model, &options(0.0)).unwrap();
    assert_eq!(choices.len(), 1, "{choices:?}");
    let choice = &choices[0];
    assert_eq!(
        (choice.weight.as_str(), choice.format, choice.sparse),
        ("0.weight", SparseFormat::SemiStructured, true)
    );
    assert!((choice.sparsity - 0.5).abs() < 1e-3, "{choice:?}");
    assert_eq!(choice.dtype, Kind::Half);
    assert!(choice.dense_seconds > 0.0 && choice.sparse_seconds > 0.0);
    assert_close(&tch::no_grad(|| model.forward_t(&xs, false)), &before);
    // Training still runs dense, with gradients.
    let orig = common::backward_to_orig(&model, &xs, "0");
    assert!(orig.grad().defined());

    let mut again = mlp(&nn::VarStore::new(device), 256);
    let weight = again.submodule("0").unwrap().get("weight");
    prune::custom_from_mask(&mut again, "0.weight", &two_of_four_mask(&weight)).unwrap();
    let choices = sparse::sparsify(&mut again, &options(f64::INFINITY)).unwrap();
    assert!(
        choices.is_empty(),
        "a f32 CUDA layer has no sparse form: {choices:?}"
    );
}

#[test]
fn a_varstore_layer_on_cuda() {
    let Some(device) = cuda() else { return };
    tch::manual_seed(4);
    let mut vs = nn::VarStore::new(device);
    let fc = nn::linear(vs.root() / "fc", 512, 128, Default::default());
    let other = nn::linear(vs.root() / "other", 512, 128, Default::default());
    vs.half();
    let mut pruner = tchprune::VarStorePruner::new(&vs);
    let weight = vs.variables()["fc.weight"].detach();
    prune::custom_from_mask(&mut pruner, "fc.weight", &two_of_four_mask(&weight)).unwrap();
    prune::l1_unstructured(&mut pruner, "other.weight", 0.9, None).unwrap();
    let (layer, choice) = sparse::Linear::from_varstore(&vs, "fc", &options(0.0)).unwrap();
    assert!(
        matches!(layer, sparse::Linear::SemiStructured(_)),
        "{choice:?}"
    );
    let xs = Tensor::randn([4, 512], (Kind::Half, device));
    assert_close(&layer.forward(&xs), &tch::no_grad(|| fc.forward(&xs)));
    let (layer, _) = sparse::Linear::from_varstore(&vs, "fc", &options(f64::INFINITY)).unwrap();
    assert!(matches!(layer, sparse::Linear::Dense { .. }));
    let err = sparse::Linear::from_varstore(&vs, "other", &options(0.0)).unwrap_err();
    assert!(err.to_string().contains("other.weight"), "{err}");
    let _ = other;
}
