//! Round trips with PyTorch 2.11 (the bootstrap's Python): checkpoints pruned by tchprune load
//! into PyTorch and give PyTorch's outputs; state_dicts pruned by PyTorch load into tchprune and
//! keep pruning to PyTorch's masks.

mod common;

use serde_json::{json, Value};
use std::path::Path;

fn lenet_files(dir: &Path) {
    common::run_oracle("interop.py", &[Path::new("make"), dir]);
}

fn apply(dir: &Path, input: &str, plan: &str, output: &str, extra: &[&str]) {
    let run = common::apply(dir, input, plan, output, extra);
    assert!(run.success, "{}", run.stderr);
}

#[test]
fn tchprunes_checkpoints_load_into_pytorch_with_pytorchs_outputs() {
    let dir = tempfile::tempdir().unwrap();
    lenet_files(dir.path());
    let plan = json!({"steps": [
        {"method": "l1_unstructured", "params": ["conv1.weight", "fc3.bias"], "amount": 0.3},
        {"method": "ln_structured", "params": ["conv2.weight"], "amount": 0.5, "n": 2, "dim": 0},
        {"method": "global_unstructured", "pruning_method": "l1_unstructured",
         "params": ["fc*.weight"], "amount": 0.8},
        {"method": "l1_unstructured", "params": ["fc1.weight"], "amount": 0.5},
    ]});
    common::write_plan(dir.path(), &plan);
    let dir = dir.path();
    apply(
        dir,
        "lenet.safetensors",
        "plan.json",
        "pruned.safetensors",
        &[],
    );
    let bool_masks = ["--mask-dtype", "bool"];
    apply(
        dir,
        "lenet.safetensors",
        "plan.json",
        "pruned_bool.safetensors",
        &bool_masks,
    );
    let run = common::tchprune_in(
        dir,
        &["finalize", "pruned.safetensors", "-o", "final.safetensors"],
    );
    assert!(run.success, "{}", run.stderr);
    common::run_oracle("interop.py", &[Path::new("load"), dir]);
    let result: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("load.json")).unwrap()).unwrap();
    assert_eq!(
        result,
        json!({"pruned_outputs_equal": true, "final_outputs_equal": true,
               "bool_mask_outputs_equal": true, "pruned_masks_equal": true})
    );
}

#[test]
fn pytorchs_pruned_state_dicts_keep_pruning_in_tchprune_as_in_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    lenet_files(dir.path());
    let first = json!({"steps": [
        {"method": "l1_unstructured", "params": ["conv1.weight", "fc1.weight"], "amount": 0.3},
        {"method": "ln_structured", "params": ["fc2.weight"], "amount": 0.25, "n": 1, "dim": 1},
    ]});
    let second = json!({"steps": [
        {"method": "l1_unstructured", "params": ["conv1.weight"], "amount": 0.5},
        {"method": "ln_structured", "params": ["fc1.weight", "fc2.weight"], "amount": 0.5, "n": "inf", "dim": 0},
        {"method": "global_unstructured", "pruning_method": "l1_unstructured",
         "params": ["*.weight"], "amount": 0.4},
        {"method": "remove", "params": ["conv1.weight"]},
    ]});
    std::fs::write(dir.path().join("first.json"), first.to_string()).unwrap();
    std::fs::write(dir.path().join("second.json"), second.to_string()).unwrap();
    common::run_oracle("interop.py", &[Path::new("prune"), dir.path()]);

    // The command, on PyTorch's pruned checkpoint.
    apply(
        dir.path(),
        "torch_pruned.safetensors",
        "second.json",
        "ours.safetensors",
        &[],
    );
    let ours = common::read(&dir.path().join("ours.safetensors"));
    let theirs = common::read(&dir.path().join("torch_both.safetensors"));
    assert_eq!(
        ours.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        theirs.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    for ((key, a), (_, b)) in ours.iter().zip(&theirs) {
        assert!(common::identical(a, b), "{key}");
    }

    // The library, on a LeNet with its forward pass: PyTorch's checkpoint restores the
    // reparametrization and the logits are PyTorch's.
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mut model = tchprune::layers::lenet(&vs.root());
    let state = tchprune::checkpoint::load(dir.path().join("torch_both.safetensors")).unwrap();
    let report = tchprune::checkpoint::load_state_dict(&mut model, &state, true).unwrap();
    assert_eq!(
        report.restored,
        ["conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"]
    );
    let x = common::tensor(&dir.path().join("x.safetensors"), "x");
    let y = common::tensor(&dir.path().join("torch_out.safetensors"), "y");
    let ours = tch::no_grad(|| model.forward(&x));
    assert!(
        ours.allclose(&y, 1e-6, 1e-6, false),
        "max difference {}",
        (ours - y).abs().max()
    );
}
