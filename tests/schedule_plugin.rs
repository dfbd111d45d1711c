//! Schedules drive plugin methods like built-in ones, on both front ends: a plugin that takes
//! an `"amount"` (the fixture `first_entries`, whose masks are easy to predict) is built each
//! round with the count still to prune; a plugin without one is refused by name.

mod common;

use serde_json::json;
use tch::{nn, Device};
use tchprune::schedule::{Distribution, GradualPruner, MethodSpec, PruningSchedule, Schedule};
use tchprune::{layers, Prunable, Registry, VarStorePruner};

fn registry() -> Registry {
    let mut registry = Registry::with_builtins();
    for package in ["tchprune-fixture-first-entries", "tchprune-plugin-foobar"] {
        registry.load_plugin(common::plugin(package)).unwrap();
    }
    registry
}

fn schedule(method: &str, distribution: Distribution) -> PruningSchedule {
    PruningSchedule {
        tensors: vec!["fc2.weight".into(), "fc3.weight".into()],
        schedule: Schedule::Iterative {
            final_sparsity: 0.75,
            rounds: 2,
            begin_step: 0,
            steps_per_round: 5,
        },
        distribution,
        method: MethodSpec {
            name: method.into(),
            arguments: json!({}),
        },
    }
}

/// The number of leading zeros of the flattened tensor, and its zeros in all.
fn leading_and_total_zeros(target: &impl Prunable, path: &str) -> (i64, i64) {
    let flat = target.tensor(path).unwrap().flatten(0, -1);
    let values = Vec::<f32>::try_from(flat).unwrap();
    let leading = values.iter().take_while(|v| **v == 0.0).count() as i64;
    let zeros = values.iter().filter(|v| **v == 0.0).count() as i64;
    (leading, zeros)
}

fn check_rounds(target: &mut impl Prunable, distribution: Distribution) {
    let mut pruner =
        GradualPruner::new(schedule("first_entries", distribution), &registry()).unwrap();
    let total = 10_080 + 840;
    for (step, sparsity) in [(0u64, 0.5f64), (5, 0.75)] {
        let round = pruner.step(target, step).unwrap().unwrap();
        assert_eq!(round.pruned, (sparsity * total as f64).round() as i64);
        // uniform: each tensor's share; the plugin prunes its first unpruned entries
        for (path, entries) in [("fc2.weight", 10_080i64), ("fc3.weight", 840)] {
            let (leading, zeros) = leading_and_total_zeros(target, path);
            assert_eq!(leading, zeros, "{path}: the plugin's entries, in order");
            assert_eq!(zeros, (sparsity * entries as f64).round() as i64, "{path}");
        }
    }
}

#[test]
fn a_plugin_prunes_by_schedule_on_a_module() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    check_rounds(&mut model, Distribution::Uniform);
}

#[test]
fn a_plugin_prunes_by_schedule_on_a_varstore() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = layers::lenet(&vs.root());
    let mut pruner = VarStorePruner::new(&vs);
    check_rounds(&mut pruner, Distribution::Uniform);
}

#[test]
fn a_plugin_ranks_globally_and_lands_on_the_count() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    let mut pruner = GradualPruner::new(
        schedule("first_entries", Distribution::Global { min_density: 0.0 }),
        &registry(),
    )
    .unwrap();
    let round = pruner.step(&mut model, 0).unwrap().unwrap();
    // global: the plugin sees fc2's entries then fc3's, and prunes the first half of them all
    assert_eq!(round.pruned, 5_460);
    assert_eq!(leading_and_total_zeros(&model, "fc2.weight").1, 5_460);
    assert_eq!(leading_and_total_zeros(&model, "fc3.weight").1, 0);
}

#[test]
fn a_plugin_without_an_amount_is_refused_by_name() {
    let err = GradualPruner::new(schedule("foobar", Distribution::Uniform), &registry())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("method 'foobar' cannot be built with an amount"),
        "{err}"
    );
    assert!(err.contains("unknown argument 'amount'"), "{err}");
}
