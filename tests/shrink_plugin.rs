//! Group pruning and channel removal driven by a plugin: a structured plugin on dim 0 (the
//! fixture `first_channels`, which prunes the first channels it is handed) picks each group's
//! channels on both front ends, and `shrink` removes exactly those.

mod common;

use serde_json::json;
use tch::{nn, Device, Kind, Tensor};
use tchprune::checkpoint::{self, MaskDtype};
use tchprune::{layers, shrink, Registry, VarStorePruner};

fn registry() -> Registry {
    let mut registry = Registry::with_builtins();
    registry
        .load_plugin(common::plugin("tchprune-fixture-first-channels"))
        .unwrap();
    registry
}

#[test]
fn a_structured_plugin_prunes_whole_groups_and_shrink_removes_its_channels() {
    let registry = registry();
    let method = registry
        .build("first_channels", &json!({"amount": 0.5}))
        .unwrap();
    let graph = shrink::trace(layers::lenet, &[1, 1, 28, 28]).unwrap();

    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    let kept = shrink::prune_groups(&mut model, &graph, method.as_ref()).unwrap();
    assert_eq!(kept, [3, 8, 60, 42]);
    let shrunk = shrink::shrink(
        &checkpoint::state_dict_with(&model, MaskDtype::Parameter),
        &graph,
    )
    .unwrap();
    for group in &shrunk.groups {
        let second_half: Vec<i64> = (group.channels / 2..group.channels).collect();
        assert_eq!(group.kept, second_half, "{:?}", group.writers);
    }
    assert!(shrunk.live_removed.is_empty());

    let small_vs = nn::VarStore::new(Device::Cpu);
    let mut small = layers::lenet_with_widths(&small_vs.root(), &shrunk.widths);
    checkpoint::load_state_dict(&mut small, &shrunk.tensors, true).unwrap();
    let xs = Tensor::randn([4, 1, 28, 28], (Kind::Float, Device::Cpu));
    let difference = (model.forward_t(&xs, false) - small.forward_t(&xs, false))
        .abs()
        .max();
    assert!(difference.double_value(&[]) < 1e-5);

    // The VarStore front end gets the same masks from the plugin.
    let other_vs = nn::VarStore::new(Device::Cpu);
    let _other = layers::lenet(&other_vs.root());
    let mut pruner = VarStorePruner::new(&other_vs);
    shrink::prune_groups(&mut pruner, &graph, method.as_ref()).unwrap();
    let from_varstore = shrink::shrink(&pruner.plain_state_dict(), &graph).unwrap();
    assert_eq!(from_varstore.groups, shrunk.groups);
}

#[test]
fn an_unstructured_plugin_is_refused_for_groups() {
    let mut registry = registry();
    registry
        .load_plugin(common::plugin("tchprune-fixture-first-entries"))
        .unwrap();
    let method = registry
        .build("first_entries", &json!({"amount": 0.5}))
        .unwrap();
    let graph = shrink::trace(layers::lenet, &[1, 1, 28, 28]).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    let err = shrink::prune_groups(&mut model, &graph, method.as_ref()).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("first_entries") && message.contains("plugin"),
        "{message}"
    );
    assert!(message.contains("structured method on dim 0"), "{message}");
}
