//! Differential check of channel removal against Torch-Pruning (the version
//! scripts/bootstrap.sh pins) on torchvision's resnet18: the same channels removed give the same
//! tensors, the same shapes and the same logits, and DepGraph prunes the same tensors together.

mod common;

use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use tch::nn::ModuleT;
use tch::{nn, Device, Kind, Tensor};
use tchprune::layers::{resnet_with_widths, RESNET18_BLOCKS};
use tchprune::shrink;

/// A group's tensors as Torch-Pruning names them: `module:out` for writers and per-channel
/// tensors, `module:in` for readers.
fn members(group: &shrink::Group) -> BTreeSet<String> {
    let module = |key: &str| key.rsplit_once('.').unwrap().0.to_owned();
    (group.writers.iter().chain(&group.channelwise))
        .map(|k| format!("{}:out", module(k)))
        .chain(
            group
                .readers
                .iter()
                .map(|r| format!("{}:in", module(&r.key))),
        )
        .collect()
}

#[test]
fn torch_pruning_removes_the_same_channels_to_the_same_model() {
    let masked = common::masked_resnet18(5);
    let dense = masked.pruner.plain_state_dict();
    let shrunk = shrink::shrink(&dense, &masked.graph).unwrap();
    let inputs = Tensor::randn([4, 3, 64, 64], (Kind::Float, Device::Cpu));

    let dir = tempfile::tempdir().unwrap();
    let (state_path, plan_path, out_path, groups_path) = (
        dir.path().join("state.safetensors"),
        dir.path().join("plan.json"),
        dir.path().join("pruned.safetensors"),
        dir.path().join("groups.json"),
    );
    let mut state: Vec<(String, Tensor)> = dense
        .iter()
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    state.push(("input".to_owned(), inputs.shallow_clone()));
    Tensor::write_safetensors(&state, &state_path).unwrap();
    let plan_groups: Vec<_> = shrunk
        .groups
        .iter()
        .map(|g| {
            let removed: Vec<i64> = (0..g.channels).filter(|c| !g.kept.contains(c)).collect();
            json!({"writers": g.writers, "removed": removed})
        })
        .collect();
    let plan = json!({"num_classes": 10, "groups": plan_groups});
    std::fs::write(&plan_path, plan.to_string()).unwrap();
    common::run_python(
        "depgraph_oracle.py",
        &[&state_path, &plan_path, &out_path, &groups_path],
    );

    // DepGraph's groups are ours.
    let theirs: Vec<BTreeSet<String>> =
        serde_json::from_str(&std::fs::read_to_string(&groups_path).unwrap()).unwrap();
    let ours: Vec<BTreeSet<String>> = (masked.graph.groups.iter())
        .filter(|g| g.fixed.is_none())
        .map(members)
        .collect();
    assert_eq!(theirs, ours);

    // The same tensors, shape for shape and value for value.
    let mut pruned = common::read_tensors(&out_path);
    let logits = pruned.remove("logits").unwrap();
    let ours: BTreeMap<&str, &Tensor> = shrunk
        .tensors
        .iter()
        .map(|(k, t)| (k.as_str(), t))
        .collect();
    assert_eq!(
        pruned.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        ours.keys().copied().collect::<BTreeSet<_>>()
    );
    for (key, t) in &pruned {
        assert_eq!(t.size(), ours[key.as_str()].size(), "{key}");
        assert!(t.equal(ours[key.as_str()]), "{key}");
    }

    // The same logits from the smaller model built from the widths.
    let mut small_vs = nn::VarStore::new(Device::Cpu);
    let small = resnet_with_widths(&small_vs.root(), RESNET18_BLOCKS, &shrunk.widths, 10);
    tch::no_grad(|| {
        for (name, mut t) in small_vs.variables() {
            t.copy_(ours[name.as_str()]);
        }
    });
    let _ = &mut small_vs;
    let ours = small.forward_t(&inputs, false);
    let difference = (&ours - &logits).abs().max().double_value(&[]);
    assert!(difference < 1e-4, "logits differ by {difference}");
    let masked_logits = masked.model.forward_t(&inputs, false);
    assert!((&masked_logits - &logits).abs().max().double_value(&[]) < 1e-4);
}
