//! Schedules carried out on both front ends: exact counts, how each distribution spreads them,
//! structured methods, and errors that change nothing.

use serde_json::json;
use tch::{nn, Device, Kind, Tensor};
use tchprune::layers::{self, LENET_WEIGHTS};
use tchprune::schedule::{Distribution, GradualPruner, MethodSpec, PruningSchedule, Schedule};
use tchprune::{prune, Module, Prunable, Registry, VarStorePruner};

const LENET_TOTAL: i64 = 54 + 864 + 48_000 + 10_080 + 840;

fn lenet() -> (nn::VarStore, Module) {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = layers::lenet(&vs.root());
    (vs, model)
}

fn config(schedule: Schedule, distribution: Distribution) -> PruningSchedule {
    PruningSchedule {
        tensors: LENET_WEIGHTS.iter().map(|s| s.to_string()).collect(),
        schedule,
        distribution,
        method: MethodSpec::default(),
    }
}

fn polynomial(final_sparsity: f64) -> Schedule {
    Schedule::PolynomialDecay {
        initial_sparsity: 0.0,
        final_sparsity,
        begin_step: 0,
        end_step: 1000,
        power: 3.0,
        frequency: 100,
    }
}

/// Each listed tensor's mask as the forward pass applies it (`tensor != 0`, weights being
/// nonzero at initialisation).
fn kept(target: &impl Prunable, path: &str) -> Tensor {
    target.tensor(path).unwrap().ne(0.0)
}

fn kept_count(target: &impl Prunable, path: &str) -> i64 {
    let (zeros, total) = target.count_zeros(path).unwrap();
    total - zeros
}

/// Runs the schedule over its steps, checking every round; returns the rounds' targets.
fn run_schedule(pruner: &mut GradualPruner, target: &mut impl Prunable, last: u64) -> Vec<f64> {
    let mut previous: Vec<Tensor> = LENET_WEIGHTS.iter().map(|p| kept(target, p)).collect();
    let mut pruned_before = 0;
    let mut targets = Vec::new();
    for step in 0..=last {
        let Some(round) = pruner.step(target, step).unwrap() else {
            continue;
        };
        targets.push(round.target_sparsity);
        let expected = (round.target_sparsity * LENET_TOTAL as f64).round() as i64;
        assert_eq!(round.pruned, expected, "step {step}");
        assert_eq!(round.total, LENET_TOTAL);
        assert_eq!(round.newly_pruned, expected - pruned_before);
        let relative = (expected - pruned_before) as f64 / (LENET_TOTAL - pruned_before) as f64;
        assert!((round.relative_amount - relative).abs() < 1e-12);
        let counted: i64 = LENET_WEIGHTS
            .iter()
            .map(|p| target.count_zeros(p).unwrap().0)
            .sum();
        assert_eq!(counted, expected, "the forward pass sees the count");
        for (path, before) in LENET_WEIGHTS.iter().zip(&mut previous) {
            let now = kept(target, path);
            // masks only grow: nothing kept now was pruned before
            assert!(!now.logical_and(&before.logical_not()).any().is_nonzero());
            *before = now;
        }
        pruned_before = expected;
    }
    targets
}

#[test]
fn polynomial_decay_lands_on_each_count_on_both_front_ends() {
    let registry = Registry::with_builtins();
    for distribution in [
        Distribution::Global { min_density: 0.0 },
        Distribution::Uniform,
        Distribution::Erk,
        Distribution::Lamp,
    ] {
        let (vs, mut model) = lenet();
        let mut copy = nn::VarStore::new(Device::Cpu);
        let _ = layers::lenet(&copy.root());
        copy.copy(&vs).unwrap();
        let mut varstore = VarStorePruner::new(&copy);

        let schedule = config(polynomial(0.9), distribution.clone());
        let mut on_module = GradualPruner::new(schedule.clone(), &registry).unwrap();
        let mut on_varstore = GradualPruner::new(schedule, &registry).unwrap();
        let targets = run_schedule(&mut on_module, &mut model, 1100);
        assert_eq!(targets.len(), 11, "{distribution:?}");
        assert_eq!(*targets.last().unwrap(), 0.9);
        run_schedule(&mut on_varstore, &mut varstore, 1100);
        for path in LENET_WEIGHTS {
            assert!(
                kept(&model, path).equal(&kept(&varstore, path)),
                "{distribution:?}: the front ends differ on {path}"
            );
        }
    }
}

#[test]
fn uniform_gives_every_tensor_the_target_within_one_entry() {
    let (_vs, mut model) = lenet();
    let mut pruner = GradualPruner::new(
        config(polynomial(0.8), Distribution::Uniform),
        &Registry::with_builtins(),
    )
    .unwrap();
    let round = pruner.prune_to(&mut model, 0.73).unwrap();
    assert_eq!(round.pruned, (0.73 * LENET_TOTAL as f64).round() as i64);
    for row in &round.tensors {
        let ideal = 0.73 * row.total as f64;
        assert!((row.zeros as f64 - ideal).abs() < 1.0, "{row:?}");
    }
}

#[test]
fn erk_keeps_counts_proportional_to_the_sum_of_dimensions() {
    let (_vs, mut model) = lenet();
    let mut pruner = GradualPruner::new(
        config(polynomial(0.95), Distribution::Erk),
        &Registry::with_builtins(),
    )
    .unwrap();
    let round = pruner.prune_to(&mut model, 0.95).unwrap();
    let kept_target = LENET_TOTAL - (0.95 * LENET_TOTAL as f64).round() as i64;
    // conv1 [6,1,3,3]: 13, conv2 [16,6,3,3]: 28, fc1: 520, fc2: 204, fc3: 94
    let dims = [13.0, 28.0, 520.0, 204.0, 94.0];
    let scale = kept_target as f64 / dims.iter().sum::<f64>();
    for (row, d) in round.tensors.iter().zip(dims) {
        let kept = (row.total - row.zeros) as f64;
        let ideal = (scale * d).min(row.total as f64);
        assert!((kept - ideal).abs() < 1.0, "{row:?}: {kept} vs {ideal}");
    }
    // small layers stay denser than the big one
    let density = |i: usize| {
        let r = &round.tensors[i];
        1.0 - r.zeros as f64 / r.total as f64
    };
    assert!(density(0) > 10.0 * density(2));
    assert_eq!(round.pruned, LENET_TOTAL - kept_target);
}

#[test]
fn a_floor_protects_the_layers_global_ranking_would_empty() {
    let registry = Registry::with_builtins();
    let (vs, mut plain) = lenet();
    let mut pruner = GradualPruner::new(
        config(polynomial(0.99), Distribution::Global { min_density: 0.0 }),
        &registry,
    )
    .unwrap();
    pruner.prune_to(&mut plain, 0.99).unwrap();
    let floor = |total: i64| (0.005 * total as f64).ceil() as i64;
    assert!(
        kept_count(&plain, "fc1.weight") < floor(48_000),
        "without a floor, global ranking empties fc1 (small initial weights)"
    );

    let mut copy = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&copy.root());
    copy.copy(&vs).unwrap();
    let mut pruner = GradualPruner::new(
        config(
            polynomial(0.99),
            Distribution::Global { min_density: 0.005 },
        ),
        &registry,
    )
    .unwrap();
    let round = pruner.prune_to(&mut model, 0.99).unwrap();
    assert_eq!(round.pruned, (0.99 * LENET_TOTAL as f64).round() as i64);
    for row in &round.tensors {
        assert!(row.total - row.zeros >= floor(row.total), "{row:?}");
    }
    assert_eq!(kept_count(&model, "fc1.weight"), floor(48_000));
    // the tensors above their floor are ranked together: every weight they keep is at least
    // as large as every weight they lost
    let originals = copy.variables();
    let (mut smallest_kept, mut largest_pruned) = (f64::MAX, 0.0f64);
    for row in round
        .tensors
        .iter()
        .filter(|r| r.total - r.zeros > floor(r.total))
    {
        let magnitudes = originals[&row.name].abs();
        let mask = model.tensor(&row.name).unwrap().ne(0.0);
        smallest_kept = smallest_kept.min(magnitudes.masked_select(&mask).min().double_value(&[]));
        let lost = magnitudes.masked_select(&mask.logical_not());
        if lost.numel() > 0 {
            largest_pruned = largest_pruned.max(lost.max().double_value(&[]));
        }
    }
    assert!(
        smallest_kept >= largest_pruned,
        "{smallest_kept} < {largest_pruned}"
    );
}

/// LAMP scores computed the plain way: `w^2` over the sum of `w^2` of the entries at least as
/// large.
fn lamp_by_hand(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| (values[a] * values[a]).total_cmp(&(values[b] * values[b])));
    let mut scores = vec![0.0; values.len()];
    let mut suffix = 0.0;
    for &i in order.iter().rev() {
        suffix += values[i] * values[i];
        scores[i] = values[i] * values[i] / suffix;
    }
    scores
}

#[test]
fn lamp_ranks_layer_adaptive_scores_globally() {
    let (_vs, mut model) = lenet();
    let tensors: Vec<Vec<f64>> = LENET_WEIGHTS
        .iter()
        .map(|p| {
            Vec::<f64>::try_from(
                model
                    .tensor(p)
                    .unwrap()
                    .flatten(0, -1)
                    .to_kind(Kind::Double),
            )
            .unwrap()
        })
        .collect();
    let kept_target = LENET_TOTAL - (0.99 * LENET_TOTAL as f64).round() as i64;
    let mut all: Vec<f64> = tensors.iter().flat_map(|t| lamp_by_hand(t)).collect();
    all.sort_by(|a, b| b.total_cmp(a));
    let threshold = all[kept_target as usize - 1];
    let expected: Vec<i64> = tensors
        .iter()
        .map(|t| lamp_by_hand(t).iter().filter(|s| **s >= threshold).count() as i64)
        .collect();

    let mut pruner = GradualPruner::new(
        config(polynomial(0.99), Distribution::Lamp),
        &Registry::with_builtins(),
    )
    .unwrap();
    let round = pruner.prune_to(&mut model, 0.99).unwrap();
    assert_eq!(round.pruned, LENET_TOTAL - kept_target);
    let kept: Vec<i64> = round.tensors.iter().map(|r| r.total - r.zeros).collect();
    assert_eq!(kept, expected);
    assert!(kept.iter().all(|k| *k >= 1));
}

#[test]
fn structured_methods_count_slices() {
    let (_vs, mut model) = lenet();
    let schedule = PruningSchedule {
        tensors: vec!["fc1.weight".into(), "fc2.weight".into()],
        schedule: Schedule::Iterative {
            final_sparsity: 0.75,
            rounds: 2,
            begin_step: 0,
            steps_per_round: 10,
        },
        distribution: Distribution::Uniform,
        method: MethodSpec {
            name: "ln_structured".into(),
            arguments: json!({"n": 2, "dim": 0}),
        },
    };
    let mut pruner = GradualPruner::new(schedule, &Registry::with_builtins()).unwrap();
    let first = pruner.step(&mut model, 0).unwrap().unwrap();
    // 120 + 84 rows; half of them
    assert_eq!((first.pruned, first.total), (102, 204));
    let second = pruner.step(&mut model, 10).unwrap().unwrap();
    assert_eq!(second.pruned, 153);
    for (path, rows) in [("fc1.weight", 120), ("fc2.weight", 84)] {
        let t = model.tensor(path).unwrap();
        let zero_rows = t.ne(0.0).any_dim(1, false).logical_not().sum(Kind::Int64);
        assert_eq!(zero_rows.int64_value(&[]), rows * 3 / 4, "{path}");
    }
}

#[test]
fn pruning_never_revives_and_resumes_from_restored_masks() {
    let registry = Registry::with_builtins();
    let (_vs, mut model) = lenet();
    let mut pruner =
        GradualPruner::new(config(polynomial(0.9), Distribution::Uniform), &registry).unwrap();
    pruner.prune_to(&mut model, 0.5).unwrap();
    let lower = pruner.prune_to(&mut model, 0.3).unwrap();
    assert_eq!(lower.newly_pruned, 0);
    assert_eq!(lower.pruned, (0.5 * LENET_TOTAL as f64).round() as i64);

    // A new pruner (a resumed training run) starts from the masks the model has.
    let mut resumed =
        GradualPruner::new(config(polynomial(0.9), Distribution::Uniform), &registry).unwrap();
    let round = resumed.prune_to(&mut model, 0.6).unwrap();
    let half = (0.5 * LENET_TOTAL as f64).round() as i64;
    assert_eq!(
        round.newly_pruned,
        (0.6 * LENET_TOTAL as f64).round() as i64 - half
    );
    assert!(
        (round.relative_amount - round.newly_pruned as f64 / (LENET_TOTAL - half) as f64).abs()
            < 1e-12
    );
}

#[test]
fn errors_name_the_problem_and_change_nothing() {
    let registry = Registry::with_builtins();
    let bad = |edit: &dyn Fn(&mut PruningSchedule)| {
        let mut schedule = config(polynomial(0.9), Distribution::Uniform);
        edit(&mut schedule);
        GradualPruner::new(schedule, &registry)
            .unwrap_err()
            .to_string()
    };
    let err = bad(&|s| s.method.name = "l3_unstructured".into());
    assert!(err.contains("no method named 'l3_unstructured'"), "{err}");
    assert!(err.contains("l1_unstructured"), "{err}");
    let err = bad(&|s| s.method.arguments = json!({"amount": 0.5}));
    assert!(err.contains("must not hold \"amount\""), "{err}");
    let err = bad(&|s| s.method.name = "identity".into());
    assert!(err.contains("cannot be built with an amount"), "{err}");
    let err = bad(&|s| {
        s.method = MethodSpec {
            name: "ln_structured".into(),
            arguments: json!({"n": 1, "dim": 0}),
        };
        s.distribution = Distribution::Global { min_density: 0.0 };
    });
    assert!(err.contains("needs an unstructured method"), "{err}");
    let err = bad(&|s| s.tensors.push("conv1.weight".into()));
    assert!(err.contains("conv1.weight"), "{err}");
    let err = bad(&|s| s.tensors.clear());
    assert!(err.contains("no tensors"), "{err}");

    // At run time: an unknown tensor, an impossible floor; the model is left as it was.
    let (_vs, mut model) = lenet();
    let before = model.state_dict();
    let mut schedule = config(polynomial(0.9), Distribution::Uniform);
    schedule.tensors.push("fc4.weight".into());
    let mut pruner = GradualPruner::new(schedule, &registry).unwrap();
    let err = pruner.prune_to(&mut model, 0.5).unwrap_err().to_string();
    assert!(err.contains("fc4"), "{err}");
    let mut floors = GradualPruner::new(
        config(polynomial(0.9), Distribution::Global { min_density: 0.5 }),
        &registry,
    )
    .unwrap();
    let err = floors.prune_to(&mut model, 0.9).unwrap_err().to_string();
    assert!(err.contains("min_density"), "{err}");
    assert!(!prune::is_pruned(&model));
    let after = model.state_dict();
    assert_eq!(before.len(), after.len());
    for ((k1, v1), (k2, v2)) in before.iter().zip(&after) {
        assert_eq!(k1, k2);
        assert!(v1.equal(v2), "{k1}");
    }
}

#[test]
fn a_misspelt_tensor_is_found_on_the_first_step_not_at_begin_step() {
    let (_vs, mut model) = lenet();
    let mut schedule = config(
        Schedule::PolynomialDecay {
            initial_sparsity: 0.0,
            final_sparsity: 0.5,
            begin_step: 100,
            end_step: 1000,
            power: 3.0,
            frequency: 100,
        },
        Distribution::default(),
    );
    schedule.tensors[1] = "conv2.wieght".to_owned();
    let registry = Registry::with_builtins();
    let mut pruner = GradualPruner::new(schedule, &registry).unwrap();
    let up_front = pruner.check(&model).unwrap_err();
    assert!(up_front.to_string().contains("conv2.wieght"), "{up_front}");
    let at_step_0 = pruner.step(&mut model, 0).unwrap_err();
    assert!(
        at_step_0.to_string().contains("conv2.wieght"),
        "{at_step_0}"
    );
    assert!(!model.is_pruned());
}
