//! Helpers shared by the integration tests: the PyTorch oracle and small model builders.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{nn, Device, Kind, Tensor};
use tchprune::Module;

/// The bootstrap's Python (with torch 2.11), from `.cargo/config.toml`.
pub fn python() -> PathBuf {
    let path = std::env::var_os("TCHPRUNE_PYTHON")
        .expect("TCHPRUNE_PYTHON is not set: run scripts/bootstrap.sh first");
    PathBuf::from(path)
}

/// A script under `host/tests/oracle/` (or under `TCHPRUNE_ORACLE_DIR`, where the test binary
/// runs on another machine than it was built on).
pub fn oracle_script(name: &str) -> PathBuf {
    match std::env::var_os("TCHPRUNE_ORACLE_DIR") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/oracle")
            .join(name),
    }
}

/// Runs an oracle script with `args`, panicking with its stderr if it fails.
pub fn run_python(script: &str, args: &[&Path]) {
    let output = Command::new(python())
        .arg(oracle_script(script))
        .args(args)
        .output()
        .expect("the bootstrap's python runs");
    assert!(
        output.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Reads a safetensors file into a map.
pub fn read_tensors(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .expect("readable safetensors")
        .into_iter()
        .collect()
}

/// A module with one trainable parameter `weight` holding a copy of `t`.
pub fn module_with_weight(t: &Tensor) -> Module {
    let weight = t.copy().set_requires_grad(true);
    Module::new("Holder").with_parameter("weight", weight)
}

/// `t` as a `Vec<f64>`, flattened.
pub fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

/// A float tensor from nested rows.
pub fn tensor2(rows: &[&[f64]]) -> Tensor {
    let flat: Vec<f32> = rows
        .iter()
        .flat_map(|r| r.iter().map(|&x| x as f32))
        .collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, -1])
}

/// The mask of the pruned tensor `path` of `module` as 0/1 values.
pub fn mask_values(module: &Module, path: &str) -> Vec<f64> {
    let (module_path, name) = tchprune::split_tensor_path(path);
    let m = module.submodule(module_path).unwrap();
    values(m.buffer(&format!("{name}_mask")).expect("a mask"))
}

/// A small Linear model `in -> out` on the CPU with its VarStore.
pub fn linear_model(in_dim: i64, out_dim: i64) -> (nn::VarStore, Module) {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = tchprune::layers::linear(
        &vs.root(),
        in_dim,
        out_dim,
        tchprune::layers::torch_linear_config(in_dim),
    );
    (vs, model)
}

/// tch's ResNet-18 (10 classes) with random BatchNorm statistics and affine parameters (so that
/// every BatchNorm matters), its groups traced, and each group's channels pruned to half by
/// their L2 norm through a [`tchprune::VarStorePruner`]: the masked model of the channel-removal
/// tests.
pub struct MaskedResNet18 {
    pub vs: nn::VarStore,
    pub model: nn::FuncT<'static>,
    pub pruner: tchprune::VarStorePruner,
    pub graph: tchprune::shrink::DependencyGraph,
}

pub fn masked_resnet18(seed: i64) -> MaskedResNet18 {
    use tchprune::{shrink, LnStructured, Norm};
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = tch::vision::resnet::resnet18(&vs.root(), 10);
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            let values = match name.rsplit('.').next().unwrap() {
                "running_var" => Tensor::rand(t.size(), (Kind::Float, Device::Cpu)) + 0.5,
                "running_mean" | "bias" => {
                    Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.1
                }
                "weight" if t.dim() == 1 => {
                    Tensor::rand(t.size(), (Kind::Float, Device::Cpu)) + 0.5
                }
                _ => continue,
            };
            t.copy_(&values);
        }
    });
    let graph = shrink::trace(|p| tch::vision::resnet::resnet18(p, 10), &[1, 3, 64, 64]).unwrap();
    let mut pruner = tchprune::VarStorePruner::new(&vs);
    let method = LnStructured::new(0.5, Norm::P(2.0), 0).unwrap();
    shrink::prune_groups(&mut pruner, &graph, &method).unwrap();
    MaskedResNet18 {
        vs,
        model,
        pruner,
        graph,
    }
}

/// An MLP of `width` features, two hidden layers and 10 outputs (`0`, `2`, `4` in the
/// sequence), for the sparse-inference tests.
pub fn mlp(vs: &nn::VarStore, width: i64) -> Module {
    use tchprune::layers;
    let root = vs.root();
    layers::sequential([
        layers::linear(&(&root / "fc1"), width, width, Default::default()),
        layers::relu(),
        layers::linear(&(&root / "fc2"), width, width, Default::default()),
        layers::relu(),
        layers::linear(&(&root / "fc3"), width, 10, Default::default()),
    ])
}

/// A training-mode forward and backward pass of `model` on `xs`; returns the `weight_orig` of
/// its pruned layer `layer`, for the caller to check that the gradient reached it.
pub fn backward_to_orig(model: &Module, xs: &Tensor, layer: &str) -> Tensor {
    let loss = model
        .forward_t(xs, true)
        .to_kind(Kind::Float)
        .square()
        .sum(Kind::Float);
    loss.backward();
    let orig = model.submodule(layer).unwrap().parameter("weight_orig");
    orig.expect("a pruned layer").shallow_clone()
}
