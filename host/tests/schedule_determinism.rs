//! A schedule with a random method prunes the same entries under the same seed (alone in its
//! test binary: tch's generator is global, and tests in one binary run in parallel).

use tch::{nn, Device, Tensor};
use tchprune::layers::{self, LENET_WEIGHTS};
use tchprune::schedule::{Distribution, GradualPruner, MethodSpec, PruningSchedule, Schedule};
use tchprune::{Prunable, Registry};

fn kept(target: &impl Prunable, path: &str) -> Tensor {
    target.tensor(path).unwrap().ne(0.0)
}

#[test]
fn random_methods_are_deterministic_under_a_seed() {
    let registry = Registry::with_builtins();
    let run = |seed: i64| {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut model = layers::lenet(&vs.root());
        let schedule = PruningSchedule {
            tensors: LENET_WEIGHTS.iter().map(|s| s.to_string()).collect(),
            schedule: Schedule::PolynomialDecay {
                initial_sparsity: 0.0,
                final_sparsity: 0.8,
                begin_step: 0,
                end_step: 1000,
                power: 3.0,
                frequency: 100,
            },
            distribution: Distribution::Uniform,
            method: MethodSpec {
                name: "random_unstructured".into(),
                arguments: serde_json::json!({}),
            },
        };
        let mut pruner = GradualPruner::new(schedule, &registry).unwrap();
        tch::manual_seed(seed);
        for step in 0..=1000 {
            pruner.step(&mut model, step).unwrap();
        }
        LENET_WEIGHTS.map(|p| kept(&model, p))
    };
    let (a, b, c) = (run(11), run(11), run(12));
    assert!(a.iter().zip(&b).all(|(x, y)| x.equal(y)));
    assert!(!a.iter().zip(&c).all(|(x, y)| x.equal(y)));
}
