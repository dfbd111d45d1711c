//! The FooBar plugin through the library: once, iteratively, and in global pruning, always
//! equal to the same method compiled in (the examples crate's FooBar).

mod common;

use serde_json::json;
use std::sync::Arc;
use tchprune::{prune, PruningMethod, Registry};
use tchprune_examples::foobar::FooBarPruningMethod;

fn plugin_foobar() -> Arc<dyn PruningMethod> {
    let mut registry = Registry::with_builtins();
    registry
        .load_plugin(common::plugin("tchprune-plugin-foobar"))
        .unwrap();
    registry.build("foobar", &json!({})).unwrap()
}

#[test]
fn fc3_bias_gets_every_other_entry_pruned_then_every_other_of_the_rest() {
    let (_vs, mut model) = common::lenet();
    prune::apply(&mut model, "fc3.bias", plugin_foobar(), None).unwrap();
    assert_eq!(
        common::values(&common::mask(&model, "fc3.bias")),
        [0., 1., 0., 1., 0., 1., 0., 1., 0., 1.]
    );
    prune::apply(&mut model, "fc3.bias", plugin_foobar(), None).unwrap();
    assert_eq!(
        common::values(&common::mask(&model, "fc3.bias")),
        [0., 0., 0., 1., 0., 0., 0., 1., 0., 0.]
    );
    let fc3 = model.child("fc3").unwrap();
    assert_eq!(
        fc3.pruning_hooks().next().unwrap().method_names(),
        ["foobar", "foobar"]
    );
}

#[test]
fn iterative_pruning_on_top_of_l1_matches_the_compiled_in_method() {
    let (vs, mut model) = common::lenet();
    let (mut twin_vs, mut twin) = common::lenet();
    twin_vs.copy(&vs).unwrap();
    for m in [&mut model, &mut twin] {
        prune::l1_unstructured(m, "fc1.weight", 0.3, None).unwrap();
    }
    prune::apply(&mut model, "fc1.weight", plugin_foobar(), None).unwrap();
    prune::apply(&mut twin, "fc1.weight", Arc::new(FooBarPruningMethod), None).unwrap();
    let (plugin_mask, compiled_mask) = (
        common::mask(&model, "fc1.weight"),
        common::mask(&twin, "fc1.weight"),
    );
    assert!(plugin_mask.equal(&compiled_mask));
    let kept = plugin_mask.sum(tch::Kind::Int64).int64_value(&[]);
    assert_eq!(kept, (48_000 - 14_400) / 2);
}

#[test]
fn global_pruning_with_the_plugin_matches_the_compiled_in_method() {
    let (_vs, mut model) = common::lenet();
    let (_twin_vs, mut twin) = common::lenet();
    let paths = ["conv1.weight", "fc2.weight", "fc3.bias"];
    prune::global_unstructured(&mut model, &paths, plugin_foobar(), &[]).unwrap();
    prune::global_unstructured(&mut twin, &paths, Arc::new(FooBarPruningMethod), &[]).unwrap();
    for path in paths {
        let mask = common::mask(&model, path);
        assert!(mask.equal(&common::mask(&twin, path)), "{path}");
    }
    // conv1.weight has 150 entries, so the global every-other pattern restarts on fc2.weight.
    assert_eq!(
        common::values(&common::mask(&model, "fc2.weight"))[..4],
        [0., 1., 0., 1.]
    );
    let y = model.forward(&tch::Tensor::zeros([2, 1, 28, 28], tch::kind::FLOAT_CPU));
    assert_eq!(y.size(), [2, 10]);
}
