//! Lottery tickets with rewinding on both front ends: after each round the survivors hold their
//! recorded values bit for bit, pruned entries stay pruned, and masks persist across rounds.

use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Tensor};
use tchprune::layers::{self, LENET_WEIGHTS};
use tchprune::schedule::{
    Distribution, GradualPruner, LotteryTicket, MethodSpec, PruningSchedule, Schedule,
};
use tchprune::{Module, Prunable, PruneError, Registry, VarStorePruner};

fn schedule() -> PruningSchedule {
    PruningSchedule {
        tensors: LENET_WEIGHTS.iter().map(|s| s.to_string()).collect(),
        schedule: Schedule::Iterative {
            final_sparsity: 0.875,
            rounds: 3,
            begin_step: 0,
            steps_per_round: 1,
        },
        distribution: Distribution::Global { min_density: 0.0 },
        method: MethodSpec::default(),
    }
}

/// A few SGD steps of `model` on random data: the weights move away from their recorded values.
fn train(model: &Module, vs: &nn::VarStore, mut pruner: Option<&mut VarStorePruner>) {
    let mut opt = nn::Sgd::default().build(vs, 0.05).unwrap();
    let x = Tensor::randn([16, 1, 28, 28], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [16], (Kind::Int64, Device::Cpu));
    for _ in 0..3 {
        let loss = model.forward_t(&x, true).cross_entropy_for_logits(&y);
        match pruner.as_deref_mut() {
            Some(p) => p.backward_step(&mut opt, &loss).unwrap(),
            None => opt.backward_step(&loss),
        }
    }
}

/// Three rounds of train, prune, rewind; checks the ticket after each.
fn play<T: Prunable>(target: &mut T, train: &dyn Fn(&mut T)) {
    let ticket = LotteryTicket::record(target).unwrap();
    let paths: Vec<String> = ticket.paths().map(str::to_owned).collect();
    assert!(paths.iter().any(|p| p == "fc1.bias"), "{paths:?}");
    let mut pruner = GradualPruner::new(schedule(), &Registry::with_builtins()).unwrap();
    let mut previous: Option<Vec<Tensor>> = None;
    for round in 0..3u64 {
        train(target);
        let moved = (target.tensor("fc3.bias").unwrap() - ticket.value("fc3.bias").unwrap())
            .abs()
            .max()
            .double_value(&[]);
        assert!(moved > 0.0, "training moved the weights");
        let report = pruner.step(target, round).unwrap().unwrap();
        let total = report.total as f64;
        let expected = 1.0 - 0.125f64.powf((round + 1) as f64 / 3.0);
        assert_eq!(report.pruned, (expected * total).round() as i64);
        ticket.rewind(target).unwrap();

        let mut masks = Vec::new();
        for path in &paths {
            let now = target.tensor(path).unwrap();
            let recorded = ticket.value(path).unwrap();
            let kept = now.ne(0.0);
            // survivors equal their recorded values bit for bit; the rest is zero
            assert!(now.equal(&(recorded * kept.to_kind(Kind::Float))), "{path}");
            assert!(
                now.masked_select(&kept)
                    .equal(&recorded.masked_select(&kept)),
                "{path}"
            );
            masks.push(kept);
        }
        if let Some(previous) = &previous {
            for (now, before) in masks.iter().zip(previous) {
                assert!(!now.logical_and(&before.logical_not()).any().is_nonzero());
            }
        }
        previous = Some(masks);
    }
}

#[test]
fn rewinding_a_module_restores_the_survivors_bit_for_bit() {
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    play(&mut model, &|model: &mut Module| train(model, &vs, None));
}

#[test]
fn rewinding_a_varstore_restores_the_survivors_bit_for_bit() {
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = layers::lenet(&vs.root());
    let mut pruner = VarStorePruner::new(&vs);
    // tch's way: the model's own forward, the pruner's step
    play(&mut pruner, &|pruner: &mut VarStorePruner| {
        train(&model, &vs, Some(pruner))
    });
}

#[test]
fn a_ticket_that_does_not_fit_changes_nothing() {
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    let other = nn::VarStore::new(Device::Cpu);
    let small = Module::new("Small").with_child(
        "fc1",
        layers::linear(&(other.root() / "fc1"), 3, 2, Default::default()),
    );
    let ticket = LotteryTicket::record(&small).unwrap();
    let before = model.tensor("fc1.weight").unwrap().copy();
    let err = ticket.rewind(&mut model).unwrap_err();
    assert!(matches!(err, PruneError::ShapeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("fc1.weight"), "{err}");
    assert!(model.tensor("fc1.weight").unwrap().equal(&before));
    let err = LotteryTicket::record_tensors(&small, &["fc9.weight"]).unwrap_err();
    assert!(err.to_string().contains("fc9"), "{err}");
}
