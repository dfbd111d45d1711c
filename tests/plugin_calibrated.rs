//! Data-aware methods from a plugin: the statistics of the layer's inputs reach the plugin, its
//! masks and new values go through the mask engine's checks, and the one-shot driver runs it
//! like a built-in.

mod common;

use std::sync::Arc;
use tch::{nn, Device, Kind, Tensor};
use tchprune::calibration::{Calibration, LayerStatistics, Needs};
use tchprune::llm::{self, Llama, LlamaConfig, OneshotOptions};
use tchprune::method::Wanda;
use tchprune::{prune, PruningMethod, Registry, VarStorePruner};

fn registry() -> Registry {
    let mut registry = Registry::with_builtins();
    registry
        .load_plugin(common::plugin("tchprune-fixture-calibrated"))
        .expect("the fixture loads");
    registry
}

fn layer(seed: i64) -> (Tensor, LayerStatistics) {
    tch::manual_seed(seed);
    let weight = Tensor::randn([12, 40], (Kind::Float, Device::Cpu));
    let x = Tensor::randn([4, 16, 40], (Kind::Float, Device::Cpu))
        * Tensor::rand([40], (Kind::Float, Device::Cpu));
    let calibration = Calibration::new(Needs::GRAM);
    calibration.observe(&["w"], &x);
    (weight, calibration.statistics("w").unwrap().unwrap())
}

fn pruned_with(
    method: Arc<dyn PruningMethod>,
    weight: &Tensor,
    stats: &LayerStatistics,
) -> (VarStorePruner, Tensor) {
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().var_copy("w", weight);
    let mut pruner = VarStorePruner::new(&vs);
    prune::apply_calibrated(&mut pruner, "w", method, stats).expect("prunes");
    (pruner, w)
}

#[test]
fn a_plugin_wanda_gives_the_built_in_masks() {
    let registry = registry();
    let plugin = registry
        .build("row_wanda", &serde_json::json!({"sparsity": 0.6}))
        .unwrap();
    assert_eq!(plugin.needs(), Needs::NORMS);
    for seed in 0..3 {
        let (weight, stats) = layer(seed);
        let (theirs, _) = pruned_with(Arc::clone(&plugin), &weight, &stats);
        let (ours, _) = pruned_with(Arc::new(Wanda::new(0.6, None).unwrap()), &weight, &stats);
        assert!(
            theirs.mask("w").unwrap().equal(ours.mask("w").unwrap()),
            "seed {seed}"
        );
        assert_eq!(theirs.history("w").unwrap().method_names(), ["row_wanda"]);
    }
}

#[test]
fn new_values_from_a_plugin_become_the_weight_and_bad_ones_are_refused() {
    let registry = registry();
    let (weight, stats) = layer(5);
    let halve = registry
        .build("halve_kept", &serde_json::Value::Null)
        .unwrap();
    assert_eq!(halve.needs(), Needs::GRAM);
    let (_, w) = pruned_with(halve, &weight, &stats);
    assert!(w.equal(&(&weight * 0.5)));

    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().var_copy("w", &weight);
    let mut pruner = VarStorePruner::new(&vs);
    let nan = registry
        .build("nan_values", &serde_json::Value::Null)
        .unwrap();
    let error = prune::apply_calibrated(&mut pruner, "w", nan, &stats)
        .unwrap_err()
        .to_string();
    assert!(error.contains("NaN") && error.contains("'w'"), "{error}");
    assert!(pruner.pruned_names().is_empty() && w.equal(&weight));

    // A data-aware plugin method without statistics is an error naming the plugin.
    let wanda = registry
        .build("row_wanda", &serde_json::Value::Null)
        .unwrap();
    let error = prune::apply(&mut pruner, "w", wanda, None)
        .unwrap_err()
        .to_string();
    assert!(error.contains("needs calibration statistics"), "{error}");
}

#[test]
fn the_oneshot_driver_runs_a_plugin_like_a_built_in() {
    let mut config = LlamaConfig::byte_level(32, 2, 4, 64, 16);
    config.vocab_size = 50;
    let registry = registry();
    let ids = Tensor::randint(50, [6, 16], (Kind::Int64, Device::Cpu));
    let mut results = Vec::new();
    for method in [
        registry
            .build("row_wanda", &serde_json::json!({"sparsity": 0.5}))
            .unwrap(),
        Arc::new(Wanda::new(0.5, None).unwrap()),
    ] {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Llama::new(&vs.root(), &config).unwrap();
        let mut pruner = VarStorePruner::new(&vs);
        llm::oneshot(
            &model,
            &mut pruner,
            &ids,
            method,
            &OneshotOptions::default(),
            |_| {},
        )
        .unwrap();
        results.push(vs.variables()["model.layers.1.mlp.down_proj.weight"].copy());
    }
    assert!(results[0].equal(&results[1]));
}
