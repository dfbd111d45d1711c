//! Schedules as numbers: the sparsity each asks for at each step, which steps prune, each round's
//! amount relative to what is still unpruned, and their JSON form.

use serde_json::json;
use tchprune::schedule::{relative_amount, Distribution, PruningSchedule, Schedule};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn polynomial_decay_follows_zhu_and_gupta() {
    let schedule = Schedule::PolynomialDecay {
        initial_sparsity: 0.1,
        final_sparsity: 0.9,
        begin_step: 100,
        end_step: 1100,
        power: 3.0,
        frequency: 100,
    };
    schedule.validate().unwrap();
    for step in [100u64, 200, 500, 900, 1100] {
        let t = (step - 100) as f64 / 1000.0;
        let expected = 0.9 + (0.1 - 0.9) * (1.0 - t).powi(3);
        assert!(
            close(schedule.sparsity_at(step).unwrap(), expected),
            "{step}"
        );
    }
    assert_eq!(schedule.sparsity_at(0), None);
    assert_eq!(schedule.sparsity_at(150), None);
    assert_eq!(schedule.sparsity_at(1200), None);
    assert_eq!(schedule.target_at(50), 0.0);
    assert!(close(schedule.target_at(150), 0.9 - 0.8 * 0.95f64.powi(3)));
    assert_eq!(schedule.target_at(5000), 0.9);
    assert_eq!(schedule.last_step(), Some(1100));
}

#[test]
fn polynomial_decay_always_prunes_at_its_end_step() {
    // 1000 is not a multiple of 300 after 0: TF-MOT would stop at 900 and never reach 0.8.
    let schedule = Schedule::PolynomialDecay {
        initial_sparsity: 0.0,
        final_sparsity: 0.8,
        begin_step: 0,
        end_step: 1000,
        power: 3.0,
        frequency: 300,
    };
    let steps: Vec<u64> = (0..=2000)
        .filter(|&s| schedule.is_pruning_step(s))
        .collect();
    assert_eq!(steps, [0, 300, 600, 900, 1000]);
    assert_eq!(schedule.sparsity_at(1000), Some(0.8));
}

#[test]
fn the_power_shapes_the_curve() {
    let linear = Schedule::PolynomialDecay {
        initial_sparsity: 0.0,
        final_sparsity: 0.5,
        begin_step: 0,
        end_step: 10,
        power: 1.0,
        frequency: 1,
    };
    assert!(close(linear.target_at(4), 0.2));
}

#[test]
fn one_shot_and_constant() {
    let one_shot = Schedule::OneShot {
        sparsity: 0.7,
        step: 5,
    };
    assert_eq!(one_shot.sparsity_at(4), None);
    assert_eq!(one_shot.sparsity_at(5), Some(0.7));
    assert_eq!(one_shot.sparsity_at(6), None);
    assert_eq!(one_shot.target_at(6), 0.7);

    let constant = Schedule::Constant {
        target_sparsity: 0.5,
        begin_step: 10,
        end_step: Some(40),
        frequency: 15,
    };
    let steps: Vec<u64> = (0..100).filter(|&s| constant.is_pruning_step(s)).collect();
    assert_eq!(steps, [10, 25, 40]);
    assert_eq!(constant.sparsity_at(25), Some(0.5));
    let endless = Schedule::Constant {
        target_sparsity: 0.5,
        begin_step: 0,
        end_step: None,
        frequency: 100,
    };
    assert!(endless.is_pruning_step(1_000_000));
    assert_eq!(endless.last_step(), None);
}

#[test]
fn iterative_prunes_the_same_share_of_what_remains_each_round() {
    let schedule = Schedule::Iterative {
        final_sparsity: 0.875,
        rounds: 3,
        begin_step: 0,
        steps_per_round: 10,
    };
    let targets: Vec<(u64, f64)> = (0..100)
        .filter_map(|s| schedule.sparsity_at(s).map(|t| (s, t)))
        .collect();
    assert_eq!(targets.len(), 3);
    assert_eq!(
        targets.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [0, 10, 20]
    );
    // 1 - 0.125^(k/3): 0.5, 0.75, 0.875; each round prunes half of what remains.
    let mut previous = 0.0;
    for ((_, target), expected) in targets.iter().zip([0.5, 0.75, 0.875]) {
        assert!(close(*target, expected), "{target} vs {expected}");
        assert!(close(relative_amount(previous, *target), 0.5));
        previous = *target;
    }
    assert_eq!(schedule.target_at(1000), 0.875);
}

#[test]
fn relative_amounts() {
    assert!(close(relative_amount(0.0, 0.3), 0.3));
    assert!(close(relative_amount(0.5, 0.75), 0.5));
    assert!(close(relative_amount(0.9, 0.99), 0.9));
    assert_eq!(relative_amount(0.6, 0.6), 0.0);
    assert_eq!(relative_amount(0.6, 0.5), 0.0);
    assert_eq!(relative_amount(1.0, 1.0), 0.0);
}

#[test]
fn bad_arguments_are_refused_with_their_name() {
    let cases = [
        (
            Schedule::OneShot {
                sparsity: 1.5,
                step: 0,
            },
            "sparsity must lie in [0, 1], got 1.5",
        ),
        (
            Schedule::PolynomialDecay {
                initial_sparsity: 0.0,
                final_sparsity: 0.9,
                begin_step: 10,
                end_step: 10,
                power: 3.0,
                frequency: 1,
            },
            "end_step (10) must come after begin_step (10)",
        ),
        (
            Schedule::PolynomialDecay {
                initial_sparsity: 0.5,
                final_sparsity: 0.2,
                begin_step: 0,
                end_step: 10,
                power: 3.0,
                frequency: 1,
            },
            "final_sparsity (0.2) must not be below initial_sparsity (0.5)",
        ),
        (
            Schedule::Constant {
                target_sparsity: 0.5,
                begin_step: 0,
                end_step: None,
                frequency: 0,
            },
            "frequency must be at least 1",
        ),
        (
            Schedule::Iterative {
                final_sparsity: 0.5,
                rounds: 0,
                begin_step: 0,
                steps_per_round: 1,
            },
            "rounds must be at least 1",
        ),
    ];
    for (schedule, message) in cases {
        let err = schedule.validate().unwrap_err().to_string();
        assert!(err.contains(message), "{err}");
    }
    let err = Distribution::Global { min_density: -0.1 }
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("min_density"), "{err}");
}

#[test]
fn schedules_are_json_with_tf_mot_names_and_defaults() {
    let config: PruningSchedule = serde_json::from_value(json!({
        "tensors": ["fc1.weight", "fc2.weight"],
        "schedule": {"kind": "polynomial_decay", "final_sparsity": 0.95, "end_step": 1000},
        "distribution": {"kind": "erk"},
    }))
    .unwrap();
    assert_eq!(
        config.schedule,
        Schedule::PolynomialDecay {
            initial_sparsity: 0.0,
            final_sparsity: 0.95,
            begin_step: 0,
            end_step: 1000,
            power: 3.0,
            frequency: 100,
        }
    );
    assert_eq!(config.distribution, Distribution::Erk);
    assert_eq!(config.method.name, "l1_unstructured");
    let round_trip: PruningSchedule =
        serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
    assert_eq!(round_trip, config);

    let default: PruningSchedule = serde_json::from_value(json!({
        "tensors": ["w"],
        "schedule": {"kind": "one_shot", "sparsity": 0.5},
    }))
    .unwrap();
    assert_eq!(default.distribution, Distribution::Uniform);

    let typo = serde_json::from_value::<PruningSchedule>(json!({
        "tensors": ["w"],
        "schedule": {"kind": "polynomial_decay", "final_sparsity": 0.9, "end_step": 10,
                     "frequncy": 2},
    }))
    .unwrap_err();
    assert!(typo.to_string().contains("frequncy"), "{typo}");
}
