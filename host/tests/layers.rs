//! The Module path's layers: PyTorch's names, the train flag, batch norm's statistics.

mod common;

use common::{read_tensors, run_python};
use tch::nn::ModuleT;
use tch::{nn, Device, Kind, Tensor};
use tchprune::layers::{self, torch_batch_norm_config, torch_conv_config, torch_linear_config};
use tchprune::{prune, Module, PruneError};

/// The model of `oracle/layers.py`, in tchprune's layers.
fn bn_net(p: &nn::Path) -> Module {
    layers::sequential([
        layers::conv2d(&(p / "0"), 1, 4, 3, torch_conv_config(9)),
        layers::batch_norm2d(&(p / "1"), 4, torch_batch_norm_config()),
        layers::relu(),
        layers::max_pool2d(2, 2),
        layers::avg_pool2d(2, 1),
        layers::adaptive_avg_pool2d(4),
        layers::flatten(1, -1),
        layers::linear(&(p / "7"), 64, 10, torch_linear_config(64)),
        layers::batch_norm1d(&(p / "8"), 10, torch_batch_norm_config()),
    ])
}

#[test]
fn the_state_dict_has_pytorchs_names_and_buffers() {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = bn_net(&vs.root());
    let keys: Vec<String> = model.state_dict().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "0.weight",
            "0.bias",
            "1.weight",
            "1.bias",
            "1.running_mean",
            "1.running_var",
            "1.num_batches_tracked",
            "7.weight",
            "7.bias",
            "8.weight",
            "8.bias",
            "8.running_mean",
            "8.running_var",
            "8.num_batches_tracked",
        ]
    );
    let tracked = &model.state_dict()[6].1;
    assert_eq!((tracked.kind(), tracked.size()), (Kind::Int64, vec![]));
    // The VarStore holds the same tensors, under the same names.
    let variables = vs.variables();
    for (key, t) in model.state_dict() {
        assert!(variables[&key].equal(&t), "{key}");
    }
}

#[test]
fn training_matches_pytorch_batch_norm_statistics_included() {
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = bn_net(&vs.root());
    prune::l1_unstructured(&mut model, "1.weight", 1, None).unwrap();
    prune::l1_unstructured(&mut model, "7.weight", 0.5, None).unwrap();
    prune::remove(&mut model, "1.weight").unwrap();
    prune::remove(&mut model, "7.weight").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (state, data, out) = (
        dir.path().join("state.safetensors"),
        dir.path().join("data.safetensors"),
        dir.path().join("out.safetensors"),
    );
    tchprune::checkpoint::save(&model, &state).unwrap();
    let mut batches: Vec<(String, Tensor)> = (0..3)
        .map(|i| {
            let x = Tensor::randn([6, 1, 28, 28], (Kind::Float, Device::Cpu)) * (i + 1);
            (format!("train{i}"), x)
        })
        .collect();
    batches.push((
        "eval".to_owned(),
        Tensor::randn([5, 1, 28, 28], (Kind::Float, Device::Cpu)),
    ));
    Tensor::write_safetensors(&batches, &data).unwrap();
    run_python("layers.py", &[&state, &data, &out]);
    let expected = read_tensors(&out);

    tch::no_grad(|| {
        for (_, x) in &batches[..3] {
            // Through tch's trait, as a training loop calls it.
            let _ = x.apply_t(&model, true);
        }
    });
    let output = tch::no_grad(|| model.forward_t(&batches[3].1, false));
    let close = |ours: &Tensor, theirs: &Tensor| {
        ours.to_kind(Kind::Double)
            .allclose(&theirs.to_kind(Kind::Double), 1e-5, 1e-6, false)
    };
    for (key, ours) in model.state_dict() {
        assert!(
            close(&ours, &expected[&key]),
            "{key}: {ours} vs {}",
            expected[&key]
        );
    }
    assert_eq!(model.state_dict()[6].1.int64_value(&[]), 3);
    assert!(close(&output, &expected["output"]));
}

#[test]
fn the_train_flag_reaches_dropout_through_tchs_trait() {
    let model = layers::sequential([layers::dropout(0.5)]);
    let x = Tensor::ones([1000], (Kind::Float, Device::Cpu));
    let trained = x.apply_t(&model, true);
    let zeros = trained.eq(0).sum(Kind::Int64).int64_value(&[]);
    assert!((350..650).contains(&zeros), "{zeros} of 1000 dropped");
    assert!(x.apply_t(&model, false).equal(&x));
    // tch's own sequential passes the flag on too.
    let outer = nn::seq_t().add(layers::sequential([layers::dropout(0.5)]));
    assert!(outer.forward_t(&x, false).equal(&x));
    assert!(!outer.forward_t(&x, true).equal(&x));
}

#[test]
fn linear_takes_a_config() {
    let vs = nn::VarStore::new(Device::Cpu);
    let config = nn::LinearConfig {
        bias: false,
        ..torch_linear_config(3)
    };
    let layer = layers::linear(&vs.root(), 3, 2, config);
    let keys: Vec<String> = layer.state_dict().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["weight"]);
    let bound = 1.0 / 3f64.sqrt();
    let weight = layer.parameter("weight").unwrap();
    assert!(weight.abs().max().double_value(&[]) <= bound);
}

#[test]
fn errors_name_the_dotted_path() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    let err = prune::l1_unstructured(&mut model, "conv1.weights", 0.5, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no parameter 'conv1.weights': 'conv1' (a Conv2d) has bias, weight"
    );
    let err = prune::ln_structured(&mut model, "fc3.bias", 1, tchprune::Norm::P(1.0), 0, None)
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("'fc3.bias': structured pruning"),
        "{err}"
    );
    let err = prune::remove(&mut model, "fc2.weight").unwrap_err();
    assert!(matches!(err, PruneError::NotPruned { ref path } if path == "fc2.weight"));
    let err = prune::identity(&mut model, "conv9.weight").unwrap_err();
    assert!(err.to_string().contains("conv9"), "{err}");
}

#[test]
fn a_pruned_bias_reaches_the_forward_pass() {
    tch::manual_seed(9);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut linear = layers::linear(&(vs.root() / "fc"), 6, 4, torch_linear_config(6));
    let mut conv = layers::conv2d(&(vs.root() / "conv"), 2, 3, 3, torch_conv_config(18));
    prune::l1_unstructured(&mut linear, "bias", 2, None).unwrap();
    prune::l1_unstructured(&mut conv, "bias", 1, None).unwrap();
    let x = Tensor::randn([5, 6], (Kind::Float, Device::Cpu));
    let expected = x.linear(&linear.get("weight"), Some(&linear.get("bias")));
    assert!(linear.forward(&x).allclose(&expected, 1e-6, 1e-6, false));
    let bias = linear.get("bias");
    assert_eq!(bias.eq(0).sum(Kind::Int64).int64_value(&[]), 2);
    assert!(
        bias.ne(0).any().int64_value(&[]) != 0,
        "the kept biases count"
    );
    let x = Tensor::randn([1, 2, 5, 5], (Kind::Float, Device::Cpu));
    let expected = x.conv2d(
        &conv.get("weight"),
        Some(&conv.get("bias")),
        [1, 1],
        [0, 0],
        [1, 1],
        1,
    );
    assert!(conv.forward(&x).allclose(&expected, 1e-6, 1e-6, false));
    let mut norm = layers::batch_norm2d(&(vs.root() / "bn"), 3, torch_batch_norm_config());
    prune::l1_unstructured(&mut norm, "weight", 1, None).unwrap();
    prune::l1_unstructured(&mut norm, "bias", 1, None).unwrap();
    let x = Tensor::randn([2, 3, 4, 4], (Kind::Float, Device::Cpu));
    let expected = x.batch_norm(
        Some(&norm.get("weight")),
        Some(&norm.get("bias")),
        Some(norm.buffer("running_mean").unwrap()),
        Some(norm.buffer("running_var").unwrap()),
        false,
        0.1,
        1e-5,
        false,
    );
    assert!(norm
        .forward_t(&x, false)
        .allclose(&expected, 1e-6, 1e-6, false));
    let pruned = norm
        .get("weight")
        .abs()
        .argmin(None, false)
        .int64_value(&[]);
    let silent = norm.forward_t(&x, false).select(1, pruned);
    assert!(silent.abs().max().double_value(&[]) < 1e-6, "{silent}");
}
