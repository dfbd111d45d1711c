//! `tchprune apply` against PyTorch on random checkpoints and plans: both succeed and write the
//! same state_dict bit for bit (for random methods: the same values and the same number of
//! pruned entries), or both refuse the plan.

mod common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::path::Path;
use tch::{Device, Kind, Tensor};

const CASES: usize = 150;

struct Param {
    key: String,
    shape: Vec<i64>,
}

fn random_shape(rng: &mut StdRng) -> Vec<i64> {
    let rank = rng.random_range(1..=4);
    // Now and then a side of 0: a tensor without entries.
    let mut shape: Vec<i64> = (0..rank)
        .map(|_| match rng.random_bool(0.1) {
            true => 0,
            false => rng.random_range(1..=6),
        })
        .collect();
    if rng.random_bool(0.2) {
        shape[0] = 40;
    }
    shape
}

/// Values with ties half of the time (small integers), to exercise tie-breaking.
fn random_values(rng: &mut StdRng, shape: &[i64], kind: Kind) -> Tensor {
    let options = (Kind::Double, Device::Cpu);
    let t = if rng.random_bool(0.5) {
        Tensor::randint_low(-4, 5, shape, (Kind::Int64, Device::Cpu)).to_kind(Kind::Double)
    } else {
        Tensor::randn(shape, options)
    };
    let numel: i64 = shape.iter().product();
    // Now and then a few NaN, infinite or zero entries: where `topk` ranks them.
    if numel > 0 && rng.random_bool(0.2) {
        let flat = t.view([-1]);
        for _ in 0..rng.random_range(1..=3) {
            let at = rng.random_range(0..numel);
            let special = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0];
            let _ = flat
                .get(at)
                .fill_(special[rng.random_range(0..special.len())]);
        }
    }
    t.to_kind(kind)
}

fn random_mask(shape: &[i64], kind: Kind) -> Tensor {
    Tensor::rand(shape, (Kind::Float, Device::Cpu))
        .ge(0.3)
        .to_kind(kind)
}

fn amount(rng: &mut StdRng) -> Value {
    if rng.random_bool(0.7) {
        json!((rng.random_range(0..=100) as f64) / 100.0)
    } else {
        json!(rng.random_range(0..=6))
    }
}

fn norm(rng: &mut StdRng) -> Value {
    match rng.random_range(0..6) {
        0 => json!(1),
        1 => json!(2),
        2 => json!(3.5),
        3 => json!("inf"),
        4 => json!("-inf"),
        _ => json!("fro"),
    }
}

/// A random case in `dir`: `in.safetensors`, side files and `plan.json`. Returns whether the
/// plan uses random methods.
fn write_case(dir: &Path, rng: &mut StdRng) -> bool {
    tch::manual_seed(rng.random_range(0..i64::MAX));
    let kind = if rng.random_bool(0.8) {
        Kind::Float
    } else {
        Kind::Double
    };
    let count = rng.random_range(2..=4);
    let params: Vec<Param> = (0..count)
        .map(|i| Param {
            key: match i % 3 {
                0 => format!("layer{i}.weight"),
                1 => format!("block.{i}.conv.weight"),
                _ => format!("head.bias{i}"),
            },
            shape: random_shape(rng),
        })
        .collect();
    let mut input: Vec<(String, Tensor)> = Vec::new();
    for param in &params {
        let values = random_values(rng, &param.shape, kind);
        if rng.random_bool(0.3) {
            input.push((format!("{}_orig", param.key), values));
            input.push((
                format!("{}_mask", param.key),
                random_mask(&param.shape, kind),
            ));
        } else {
            input.push((param.key.clone(), values));
        }
    }
    tchprune::checkpoint::write(&input, &Default::default(), dir.join("in.safetensors")).unwrap();

    let mut uses_random = false;
    let mut steps = Vec::new();
    for step_index in 0..rng.random_range(1..=3) {
        let pick = |rng: &mut StdRng| -> Vec<&Param> {
            let first = rng.random_range(0..params.len());
            let mut picked = vec![&params[first]];
            if rng.random_bool(0.4) {
                let second = rng.random_range(0..params.len());
                if second != first {
                    picked.push(&params[second]);
                }
            }
            picked
        };
        let targets = pick(rng);
        let keys: Vec<String> = targets.iter().map(|p| p.key.clone()).collect();
        let multidim = targets.iter().all(|p| p.shape.len() >= 2);
        let min_rank = targets.iter().map(|p| p.shape.len() as i64).min().unwrap();
        let mut step = match rng.random_range(0..10) {
            0 => json!({"method": "identity"}),
            1 | 2 => json!({"method": "l1_unstructured", "amount": amount(rng)}),
            3 if multidim => json!({
                "method": "ln_structured",
                "amount": amount(rng),
                "n": norm(rng),
                "dim": rng.random_range(-min_rank..min_rank),
            }),
            4 | 5 => json!({
                "method": "global_unstructured",
                "pruning_method": "l1_unstructured",
                "amount": amount(rng),
            }),
            6 => {
                let masks: Vec<(String, Tensor)> = targets
                    .iter()
                    .map(|p| (p.key.clone(), random_mask(&p.shape, kind)))
                    .collect();
                let file = format!("masks{step_index}.safetensors");
                tchprune::checkpoint::write(&masks, &Default::default(), dir.join(&file)).unwrap();
                json!({"method": "custom_from_mask", "mask_file": file})
            }
            7 => json!({"method": "remove"}),
            8 if rng.random_bool(0.5) => {
                uses_random = true;
                if multidim {
                    json!({"method": "random_structured", "amount": amount(rng), "dim": 0})
                } else {
                    json!({"method": "random_unstructured", "amount": amount(rng)})
                }
            }
            _ => {
                let scores: Vec<(String, Tensor)> = targets
                    .iter()
                    .map(|p| (p.key.clone(), random_values(rng, &p.shape, kind)))
                    .collect();
                let file = format!("scores{step_index}.safetensors");
                tchprune::checkpoint::write(&scores, &Default::default(), dir.join(&file)).unwrap();
                json!({"method": "l1_unstructured", "amount": amount(rng), "scores_file": file})
            }
        };
        let params_field: Vec<String> = if keys.len() == params.len() && rng.random_bool(0.5) {
            vec!["*".to_owned()]
        } else {
            keys
        };
        step["params"] = json!(params_field);
        steps.push(step);
    }
    let plan = json!({"seed": rng.random_range(0..1000), "steps": steps});
    std::fs::write(dir.join("plan.json"), plan.to_string()).unwrap();
    uses_random
}

fn zeros(t: &Tensor) -> i64 {
    t.eq(0).sum(Kind::Int64).int64_value(&[])
}

#[test]
fn random_plans_give_pytorchs_state_dicts() {
    // TCHPRUNE_KEEP_CASES=1 keeps the cases for a look after a failure.
    let cases = tempfile::Builder::new()
        .prefix("plan-cases-")
        .disable_cleanup(std::env::var_os("TCHPRUNE_KEEP_CASES").is_some())
        .tempdir()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(20261127);
    let mut random_cases = Vec::new();
    let mut rust_ok = Vec::new();
    for i in 0..CASES {
        let dir = cases.path().join(format!("case{i:03}"));
        std::fs::create_dir(&dir).unwrap();
        random_cases.push(write_case(&dir, &mut rng));
        let run = common::apply(&dir, "in.safetensors", "plan.json", "rust.safetensors", &[]);
        assert_eq!(
            run.success,
            dir.join("rust.safetensors").exists(),
            "case {i}"
        );
        rust_ok.push((run.success, run.stderr));
    }
    common::run_oracle("plan_oracle.py", &[cases.path()]);

    let (mut compared, mut refused) = (0, 0);
    let (mut random_masks, mut random_masks_identical) = (0, 0);
    for (i, ((ok, stderr), uses_random)) in rust_ok.iter().zip(&random_cases).enumerate() {
        let dir = cases.path().join(format!("case{i:03}"));
        let plan = std::fs::read_to_string(dir.join("plan.json")).unwrap();
        let torch_error = std::fs::read_to_string(dir.join("torch-error.txt")).ok();
        assert_eq!(
            *ok,
            torch_error.is_none(),
            "case {i}: tchprune {}, PyTorch {}\nplan {plan}\ntchprune: {stderr}\nPyTorch: {torch_error:?}",
            if *ok { "succeeded" } else { "failed" },
            if torch_error.is_none() { "succeeded" } else { "failed" },
        );
        if !ok {
            refused += 1;
            continue;
        }
        let ours = common::read(&dir.join("rust.safetensors"));
        let theirs = common::read(&dir.join("torch.safetensors"));
        let keys = |s: &[(String, Tensor)]| s.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&ours), keys(&theirs), "case {i}: plan {plan}");
        for ((key, a), (_, b)) in ours.iter().zip(&theirs) {
            if *uses_random && key.ends_with("_mask") {
                assert_eq!(zeros(a), zeros(b), "case {i}, {key}: plan {plan}");
                random_masks += 1;
                random_masks_identical += usize::from(common::identical(a, b));
            } else if !*uses_random || key.ends_with("_orig") {
                assert!(
                    common::identical(a, b),
                    "case {i}, {key}: plan {plan}\nours {a}\ntheirs {b}"
                );
            }
        }
        compared += 1;
    }
    println!("{compared} outputs equal to PyTorch's, {refused} plans refused by both");
    println!("{random_masks_identical} of {random_masks} masks of plans with random methods identical too");
    assert!(compared >= 100, "only {compared} cases produced output");
}
