//! Plugins that break the contract: each failure is its own clear error naming the plugin and
//! the method, the module is left exactly as it was, and the host goes on working.

mod common;

use serde_json::json;
use std::path::PathBuf;
use tchprune::{prune, Module, PruneError, Registry};

fn registry() -> (Registry, PathBuf, PathBuf) {
    let misbehaving = common::plugin("tchprune-fixture-misbehaving");
    let wrong_shape = common::plugin("tchprune-fixture-wrong-shape");
    let mut registry = Registry::with_builtins();
    registry.load_plugin(&misbehaving).unwrap();
    registry.load_plugin(&wrong_shape).unwrap();
    (registry, misbehaving, wrong_shape)
}

/// A LeNet whose `fc1.weight` is already half pruned, so a revived entry shows.
fn pruned_lenet() -> (tch::nn::VarStore, Module) {
    let (vs, mut model) = common::lenet();
    prune::l1_unstructured(&mut model, "fc1.weight", 0.5, None).unwrap();
    (vs, model)
}

/// Applies `method` to `fc1.weight`, checks that nothing changed, and returns the error.
fn failure(registry: &Registry, method: &str) -> PruneError {
    let (_vs, mut model) = pruned_lenet();
    let before = common::snapshot(&model);
    let built = registry.build(method, &json!({})).unwrap();
    let err = prune::apply(&mut model, "fc1.weight", built, None).unwrap_err();
    assert_eq!(
        common::snapshot(&model),
        before,
        "{method} changed the model"
    );
    err
}

fn assert_names(err: &PruneError, method: &str, plugin: &std::path::Path) {
    let message = err.to_string();
    assert!(message.contains(method), "{message}");
    assert!(message.contains(&plugin.display().to_string()), "{message}");
}

#[test]
fn a_panic_while_computing_comes_back_as_an_error() {
    let (registry, plugin, _) = registry();
    let err = failure(&registry, "panics");
    assert!(
        matches!(err.innermost(), PruneError::Plugin { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("panics.compute_mask panicked at"),
        "{message}"
    );
    assert!(
        message.contains("misbehaving/src/lib.rs"),
        "the panic's location: {message}"
    );
    assert!(message.contains("this method always panics"), "{message}");
    assert_names(&err, "panics", &plugin);
}

#[test]
fn a_panic_while_building_comes_back_as_an_error() {
    let (registry, plugin, _) = registry();
    let err = registry.build("panics_on_build", &json!({})).unwrap_err();
    assert!(
        matches!(err.innermost(), PruneError::Plugin { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("building this method always panics"),
        "{err}"
    );
    assert_names(&err, "panics_on_build", &plugin);
}

#[test]
fn an_error_of_the_plugin_is_passed_on() {
    let (registry, plugin, _) = registry();
    let err = failure(&registry, "fails");
    assert!(
        matches!(err.innermost(), PruneError::Plugin { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("this method always fails"),
        "{err}"
    );
    assert_names(&err, "fails", &plugin);
}

#[test]
fn a_mask_with_values_other_than_0_and_1_is_refused() {
    let (registry, plugin, _) = registry();
    let err = failure(&registry, "not_binary");
    assert!(
        matches!(err.innermost(), PruneError::NotBinaryMask(_)),
        "{err:?}"
    );
    assert_names(&err, "not_binary", &plugin);
}

#[test]
fn a_mask_that_revives_pruned_entries_is_refused() {
    let (registry, plugin, _) = registry();
    let err = failure(&registry, "revives");
    assert!(
        matches!(err.innermost(), PruneError::RevivedEntries(_)),
        "{err:?}"
    );
    assert_names(&err, "revives", &plugin);
}

#[test]
fn a_mask_of_the_wrong_shape_is_refused() {
    let (registry, _, plugin) = registry();
    let err = failure(&registry, "wrong_shape");
    match err.innermost() {
        // Unstructured: the method sees the 24000 entries fc1.weight still has, as a flat list.
        PruneError::ShapeMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &[24_000]);
            assert_eq!(actual, &[12_000]);
        }
        other => panic!("expected a shape mismatch, got {other:?}"),
    }
    assert_names(&err, "wrong_shape", &plugin);
}

#[test]
fn a_bad_plugin_in_global_pruning_changes_no_tensor() {
    let (registry, _, _) = registry();
    let (_vs, mut model) = pruned_lenet();
    let before = common::snapshot(&model);
    for method in ["panics", "not_binary", "revives", "wrong_shape"] {
        let built = registry.build(method, &json!({})).unwrap();
        let paths = ["conv1.weight", "fc1.weight", "fc3.bias"];
        prune::global_unstructured(&mut model, &paths, built, &[]).unwrap_err();
        assert_eq!(common::snapshot(&model), before, "{method}");
    }
    // The host is unharmed: pruning goes on as usual.
    prune::l1_unstructured(&mut model, "fc1.weight", 0.5, None).unwrap();
}

#[test]
fn a_structured_plugin_is_checked_against_the_tensor_the_same_way_fresh_or_pruned() {
    let mut registry = Registry::with_builtins();
    registry
        .load_plugin(common::plugin("tchprune-fixture-first-channels"))
        .unwrap();
    let method = registry
        .build("first_channels", &json!({"amount": 1}))
        .unwrap();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _bias = vs.root().zeros("bias", &[4]);
    let mut pruner = tchprune::VarStorePruner::new(&vs);
    // A fresh 1-d tensor: refused by the host, before the plugin sees it.
    let fresh = prune::apply(&mut pruner, "bias", method.clone(), None).unwrap_err();
    assert!(
        matches!(fresh.innermost(), PruneError::NotMultidimensional { .. }),
        "{fresh:?}"
    );
    // The same tensor pruned once already: the same refusal.
    prune::identity(&mut pruner, "bias").unwrap();
    let pruned = prune::apply(&mut pruner, "bias", method, None).unwrap_err();
    assert!(
        matches!(pruned.innermost(), PruneError::NotMultidimensional { .. }),
        "{pruned:?}"
    );
}
