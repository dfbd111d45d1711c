//! Channel removal from the command line: the `prune_groups` and `shrink` plan steps, the
//! `shrink` command with traced or declared groups, and its refusals.

mod common;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};
use tchprune::{checkpoint, layers};

const GROUP_PRUNING: &str = r#"{"method": "prune_groups", "pruning_method": "ln_structured",
    "n": 2, "dim": 0, "amount": 0.5, "params": ["*.weight"]}"#;

fn widths(path: &std::path::Path) -> BTreeMap<String, i64> {
    let metadata = checkpoint::read(path).unwrap().metadata;
    serde_json::from_str(&metadata["tchprune.widths"]).unwrap()
}

/// LeNet's logits on fixed images, its weights from `path` and its widths from `widths`.
fn logits(path: &std::path::Path, widths: &BTreeMap<String, i64>) -> Tensor {
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet_with_widths(&vs.root(), widths);
    let state = checkpoint::read(path).unwrap().tensors;
    checkpoint::load_state_dict(&mut model, &state, true).unwrap();
    tch::manual_seed(9);
    model.forward_t(
        &Tensor::randn([8, 1, 28, 28], (Kind::Float, Device::Cpu)),
        false,
    )
}

#[test]
fn a_plan_prunes_groups_then_shrinks_to_a_smaller_model_with_the_same_outputs() {
    let pruning: Value = serde_json::from_str(GROUP_PRUNING).unwrap();
    let plan = json!({"steps": [pruning.clone(), {"method": "shrink", "params": ["*"]}]});
    let (dir, run) = common::apply_to_lenet(&plan, &[]);
    assert!(run.success, "{}", run.stderr);
    let d = dir.path();
    common::write_plan(d, &json!({"steps": [pruning]}));
    let masked = common::apply(
        d,
        "lenet.safetensors",
        "plan.json",
        "masked.safetensors",
        &[],
    );
    assert!(masked.success, "{}", masked.stderr);

    let small = d.join("out.safetensors");
    let expected: BTreeMap<String, i64> = [("conv1", 3), ("conv2", 8), ("fc1", 60), ("fc2", 42)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    assert_eq!(widths(&small), expected);
    assert_eq!(
        common::tensor(&small, "conv2.weight_orig").size(),
        [8, 3, 3, 3]
    );
    assert_eq!(common::tensor(&small, "fc1.weight_mask").size(), [60, 200]);
    assert_eq!(common::tensor(&small, "fc3.weight").size(), [10, 42]);
    let difference = (logits(&small, &expected)
        - logits(&d.join("masked.safetensors"), &BTreeMap::new()))
    .abs()
    .max()
    .double_value(&[]);
    assert!(difference < 1e-5, "{difference}");

    // The command does what the plan step does.
    let run = common::tchprune_in(
        d,
        &["shrink", "masked.safetensors", "-o", "cmd.safetensors"],
    );
    assert!(run.success, "{}", run.stderr);
    assert!(
        run.stdout.contains("conv1.weight: 6 -> 3 channels"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("4 of 5 groups shrunk, parameters 60074 -> 15306"),
        "{}",
        run.stdout
    );
    let (a, b) = (
        common::read(&small),
        common::read(&d.join("cmd.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert!(common::identical(ta, tb), "{ka}");
    }
}

#[test]
fn printed_groups_can_be_declared_back() {
    let pruning: Value = serde_json::from_str(GROUP_PRUNING).unwrap();
    let (dir, run) = common::apply_to_lenet(&json!({"steps": [pruning]}), &[]);
    assert!(run.success, "{}", run.stderr);
    let d = dir.path();
    let run = common::tchprune_in(d, &["shrink", "out.safetensors", "--print-groups"]);
    assert!(run.success, "{}", run.stderr);
    let groups: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(groups["groups"].as_array().unwrap().len(), 5);
    assert_eq!(
        groups["groups"][1]["readers"][0],
        json!({"key": "fc1.weight", "factor": 25})
    );
    std::fs::write(d.join("groups.json"), &run.stdout).unwrap();
    for (args, output) in [
        (vec!["--groups", "groups.json"], "declared.safetensors"),
        (vec!["--model", "lenet"], "named.safetensors"),
    ] {
        let mut all = vec!["shrink", "out.safetensors", "-o", output];
        all.extend(args);
        let run = common::tchprune_in(d, &all);
        assert!(run.success, "{}", run.stderr);
        assert_eq!(widths(&d.join(output))["fc1"], 60);
    }
}

#[test]
fn removing_channels_whose_bias_lives_warns() {
    let plan = json!({"steps": [{"method": "ln_structured", "params": ["fc1.weight"],
                                 "n": 1, "dim": 0, "amount": 20}]});
    let (dir, run) = common::apply_to_lenet(&plan, &[]);
    assert!(run.success, "{}", run.stderr);
    let run = common::tchprune_in(
        dir.path(),
        &["shrink", "out.safetensors", "-o", "small.safetensors"],
    );
    assert!(run.success, "{}", run.stderr);
    assert!(
        run.stdout.contains("fc1.weight: 120 -> 100 channels"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("warning: 20 removed channels were not zero")
            && run.stderr.contains("fc1.bias["),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_groups_and_models_are_refused() {
    let refused =
        |name: &str, setup: &dyn Fn(&std::path::Path), args: &[&str], fragments: &[&str]| {
            common::refused_in(name, setup, args, fragments);
        };
    let nothing = |_: &std::path::Path| {};
    refused(
        "unknown model",
        &nothing,
        &[
            "shrink",
            "lenet.safetensors",
            "-o",
            "x.safetensors",
            "--model",
            "vgg",
        ],
        &["no built-in model 'vgg'"],
    );
    refused(
        "not a built-in model",
        &|d| {
            let state = checkpoint::read(d.join("lenet.safetensors")).unwrap();
            let kept: Vec<(&str, &Tensor)> = (state.tensors.iter())
                .filter(|(k, _)| !k.starts_with("fc3"))
                .map(|(k, t)| (k.as_str(), t))
                .collect();
            common::write(&d.join("headless.safetensors"), &kept);
        },
        &["shrink", "headless.safetensors", "-o", "x.safetensors"],
        &[
            "headless.safetensors",
            "not a built-in model",
            "not lenet: no 'fc3.bias'",
            "declare its groups",
        ],
    );
    refused(
        "a declared group that does not fit",
        &|d| {
            let groups = json!({"groups": [{"writers": ["conv1.weight"], "readers": [{"key": "fc1.weight"}]}]});
            std::fs::write(d.join("groups.json"), groups.to_string()).unwrap();
        },
        &[
            "shrink",
            "lenet.safetensors",
            "-o",
            "x.safetensors",
            "--groups",
            "groups.json",
        ],
        &["group 1", "'fc1.weight'", "[120, 400]"],
    );
    refused(
        "groups that are not JSON groups",
        &|d| std::fs::write(d.join("groups.json"), "{\"group\": []}").unwrap(),
        &[
            "shrink",
            "lenet.safetensors",
            "-o",
            "x.safetensors",
            "--groups",
            "groups.json",
        ],
        &["groups.json", "unknown field `group`"],
    );
    refused(
        "the input as output",
        &nothing,
        &["shrink", "lenet.safetensors", "-o", "lenet.safetensors"],
        &["lenet.safetensors"],
    );
    refused(
        "a plan step with an unknown model",
        &|d| {
            common::write_plan(
                d,
                &json!({"steps": [{"method": "shrink", "params": ["*"], "model": "vgg"}]}),
            )
        },
        &common::apply_args("lenet.safetensors", "x.safetensors"),
        &["step 1", "no built-in model 'vgg'"],
    );
    refused(
        "a group pruning with an unstructured method",
        &|d| {
            common::write_plan(
                d,
                &json!({"steps": [{"method": "prune_groups", "params": ["*"],
            "pruning_method": "l1_unstructured", "amount": 0.5}]}),
            )
        },
        &common::apply_args("lenet.safetensors", "x.safetensors"),
        &["step 1", "structured method on dim 0"],
    );
}
