//! The N:M plugin against a direct computation: in every group of `m` consecutive entries
//! along the last dimension, the `n` largest magnitudes among the unpruned entries survive.

mod common;

use serde_json::json;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};
use tchprune::{prune, sparse, Module, PruneError, PruningMethod, Registry};

fn nm(args: serde_json::Value) -> Arc<dyn PruningMethod> {
    let mut registry = Registry::empty();
    registry
        .load_plugin(common::plugin("tchprune-plugin-nm"))
        .unwrap();
    registry.build("nm", &args).unwrap()
}

/// The N:M mask computed directly with tensor operations: pruned entries rank last, a stable
/// descending sort keeps the earlier of equal magnitudes, and the first `n` of each group stay.
fn expected_mask(t: &Tensor, default_mask: &Tensor, n: i64, m: i64) -> Tensor {
    let alive = default_mask.to_kind(Kind::Bool);
    let scores = t
        .abs()
        .to_kind(Kind::Double)
        .masked_fill(&alive.logical_not(), f64::NEG_INFINITY)
        .reshape([-1, m]);
    let (_, order) = scores.sort_stable(true, -1, true);
    let kept = Tensor::zeros([scores.size()[0], m], (Kind::Bool, Device::Cpu)).scatter_value(
        -1,
        &order.narrow(-1, 0, n),
        1,
    );
    kept.reshape(t.size()).logical_and(&alive)
}

fn weight_holder(t: &Tensor) -> Module {
    Module::new("Holder").with_parameter("weight", t.copy())
}

#[test]
fn two_of_four_on_a_lenet_layer_matches_the_direct_computation() {
    let (_vs, mut model) = common::lenet();
    let weight = common::tensor(&model, "fc1.weight");
    prune::apply(&mut model, "fc1.weight", nm(json!({})), None).unwrap();
    let mask = common::mask(&model, "fc1.weight");
    assert!(mask.equal(&expected_mask(&weight, &weight.ones_like(), 2, 4)));
    let per_group =
        mask.to_kind(Kind::Int64)
            .reshape([-1, 4])
            .sum_dim_intlist(-1, false, Kind::Int64);
    assert!(per_group.eq(2).all().int64_value(&[]) != 0);
}

#[test]
fn on_top_of_an_earlier_mask_pruned_entries_stay_pruned_and_do_not_count() {
    let (_vs, mut model) = common::lenet();
    let weight = common::tensor(&model, "fc2.weight");
    prune::random_unstructured(&mut model, "fc2.weight", 0.6).unwrap();
    let before = common::mask(&model, "fc2.weight");
    prune::apply(&mut model, "fc2.weight", nm(json!({"n": 1, "m": 4})), None).unwrap();
    let after = common::mask(&model, "fc2.weight");
    assert!(after.equal(&expected_mask(&weight, &before, 1, 4)));
    assert_eq!(
        after
            .logical_and(&before.logical_not())
            .sum(Kind::Int64)
            .int64_value(&[]),
        0
    );
    // Every group with a live entry keeps exactly one.
    let live = before
        .to_kind(Kind::Int64)
        .reshape([-1, 4])
        .sum_dim_intlist(-1, false, Kind::Int64);
    let kept = after
        .to_kind(Kind::Int64)
        .reshape([-1, 4])
        .sum_dim_intlist(-1, false, Kind::Int64);
    assert!(kept.equal(&live.clamp_max(1)));
}

#[test]
fn ties_and_low_precision_follow_the_same_rule() {
    tch::manual_seed(3);
    for kind in [
        Kind::Float,
        Kind::Half,
        Kind::BFloat16,
        Kind::Double,
        Kind::Int64,
    ] {
        let t = Tensor::randint_low(-3, 4, [6, 16], (Kind::Int64, Device::Cpu)).to_kind(kind);
        let mut module = weight_holder(&t);
        prune::apply(&mut module, "weight", nm(json!({"n": 3, "m": 8})), None).unwrap();
        let mask = common::mask(&module, "weight");
        assert!(
            mask.equal(&expected_mask(&t, &t.ones_like(), 3, 8)),
            "{kind:?}"
        );
    }
}

#[test]
fn importance_scores_rank_the_entries_instead_of_the_weights() {
    let t = Tensor::randn([4, 8], tch::kind::FLOAT_CPU);
    let scores = Tensor::randn([4, 8], tch::kind::FLOAT_CPU);
    let mut module = weight_holder(&t);
    prune::apply(&mut module, "weight", nm(json!({})), Some(&scores)).unwrap();
    let mask = common::mask(&module, "weight");
    assert!(mask.equal(&expected_mask(&scores, &scores.ones_like(), 2, 4)));
}

#[test]
fn a_last_dimension_that_is_not_a_multiple_of_m_is_an_error_and_changes_nothing() {
    let (_vs, mut model) = common::lenet();
    let before = common::snapshot(&model);
    let err = prune::apply(&mut model, "conv1.weight", nm(json!({})), None).unwrap_err();
    assert!(
        matches!(err.innermost(), PruneError::Plugin { method, .. } if method == "nm"),
        "{err:?}"
    );
    assert!(err.to_string().contains("the last dimension (3)"), "{err}");
    assert_eq!(common::snapshot(&model), before);
}

#[test]
fn a_plugin_prunes_tch_variables_as_it_prunes_a_module() {
    let (vs, mut model) = common::lenet();
    let mut copy = tch::nn::VarStore::new(Device::Cpu);
    let _ = tchprune::layers::lenet(&copy.root());
    copy.copy(&vs).unwrap();
    let mut pruner = tchprune::VarStorePruner::new(&copy);
    prune::random_unstructured(&mut model, "fc2.weight", 0.3).unwrap();
    let earlier = common::mask(&model, "fc2.weight");
    prune::custom_from_mask(&mut pruner, "fc2.weight", &earlier).unwrap();
    for target in ["fc2.weight", "conv2.weight"] {
        prune::apply(&mut model, target, nm(json!({"n": 1, "m": 3})), None).unwrap();
        prune::apply(&mut pruner, target, nm(json!({"n": 1, "m": 3})), None).unwrap();
        let mask = common::mask(&model, target);
        assert!(pruner.mask(target).unwrap().equal(&mask), "{target}");
        let variable = &copy.variables()[target];
        assert!(variable.equal(&common::tensor(&model, target)), "{target}");
    }
}

#[test]
fn its_two_of_four_is_what_the_sparse_tensor_cores_take() {
    tch::manual_seed(4);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let mut layer = tchprune::layers::linear(&vs.root(), 64, 32, Default::default());
    prune::apply(&mut layer, "weight", nm(json!({"n": 3, "m": 4})), None).unwrap();
    assert!(
        !sparse::is_two_of_four(&layer.get("weight")).unwrap(),
        "3:4"
    );
    prune::apply(&mut layer, "weight", nm(json!({})), None).unwrap();
    assert!(sparse::is_two_of_four(&layer.get("weight")).unwrap());
    if !sparse::SemiStructuredLinear::is_available() {
        eprintln!("skipped the cuSPARSELt half: no CUDA device");
        return;
    }
    let mut vs = tch::nn::VarStore::new(Device::Cuda(0));
    let mut layer = tchprune::layers::linear(&vs.root(), 64, 32, Default::default());
    vs.half();
    prune::apply(&mut layer, "weight", nm(json!({})), None).unwrap();
    let always = sparse::SpeedOptions {
        min_speedup: 0.0,
        ..Default::default()
    };
    let choices = sparse::sparsify(&mut layer, &always).unwrap();
    assert_eq!(choices[0].format, sparse::SparseFormat::SemiStructured);
    assert!(choices[0].sparse);
}
