//! Differential tests against real PyTorch: random tensors (some with a side of 0, some with
//! NaN, infinite or zero entries), dtypes, amounts, dims, norms, scores, iterative sequences and
//! global pruning run through both `torch.nn.utils.prune` and tchprune, through each of
//! tchprune's front ends (the `Module` reparametrization and a `VarStorePruner` over tch
//! variables).
//!
//! Masks must be identical. Magnitudes are drawn without ties (PyTorch leaves the choice among
//! tied entries unspecified; `tie_breaking.rs` checks the counts there). Random methods draw the
//! same numbers as PyTorch for the same seed, so their masks match too, except in half
//! precision where the draws tie; there the pruned counts must match.

mod common;

use common::{read_tensors, run_python, values};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tch::{nn, Device, Kind, Tensor};
use tchprune::method::CustomFromMask;
use tchprune::{prune, Module, Prunable, Registry, VarStorePruner};

const CASES: usize = 240;

struct Case {
    id: String,
    kind: Kind,
    tensors: Vec<String>,
    steps: Vec<Value>,
    random: bool,
}

struct Generator {
    rng: StdRng,
    tensors: Vec<(String, Tensor)>,
}

impl Generator {
    fn tensor(&mut self, key: String, shape: &[i64], kind: Kind) -> String {
        let numel: i64 = shape.iter().product();
        let t = if matches!(kind, Kind::Half | Kind::BFloat16) {
            // distinct magnitudes that half precision holds exactly: no ties
            let perm = Tensor::randperm(numel, (Kind::Int64, Device::Cpu)) + 1;
            let signs = Tensor::randint(2, [numel], (Kind::Int64, Device::Cpu)) * 2 - 1;
            (perm * signs).to_kind(kind).view(shape)
        } else {
            Tensor::randn(shape, (kind, Device::Cpu))
        };
        // Now and then a few NaN, infinite or zero entries: where `topk` ranks them.
        if numel > 0 && self.rng.random_bool(0.2) {
            let flat = t.view([-1]);
            for _ in 0..self.rng.random_range(1..=3) {
                let at = self.rng.random_range(0..numel);
                let special = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0];
                let _ = flat
                    .get(at)
                    .fill_(special[self.rng.random_range(0..special.len())]);
            }
        }
        self.tensors.push((key.clone(), t));
        key
    }

    fn amount(&mut self, units: i64) -> Value {
        if self.rng.random_bool(0.5) {
            json!(f64::from(self.rng.random_range(0..=20)) / 20.0)
        } else {
            json!(self.rng.random_range(0..=units.max(0)))
        }
    }

    fn shape(&mut self, min_dims: usize) -> Vec<i64> {
        let dims = self.rng.random_range(min_dims..=4);
        // Now and then a side of 0: a tensor without entries, pruned as PyTorch prunes one.
        (0..dims)
            .map(|_| match self.rng.random_bool(0.04) {
                true => 0,
                false => self.rng.random_range(1..=6),
            })
            .collect()
    }

    fn case(&mut self, index: usize) -> Case {
        let id = format!("case{index}");
        let kind = [
            Kind::Float,
            Kind::Float,
            Kind::Double,
            Kind::Half,
            Kind::BFloat16,
        ][self.rng.random_range(0..5)];
        let global = self.rng.random_bool(0.25);
        let count = if global {
            self.rng.random_range(2..=3)
        } else {
            1
        };
        let min_dims = if global { 1 } else { 2 };
        let shapes: Vec<Vec<i64>> = (0..count).map(|_| self.shape(min_dims)).collect();
        let tensors: Vec<String> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| self.tensor(format!("{id}/t{i}"), s, kind))
            .collect();
        let mut random = false;
        let mut steps = Vec::new();
        let rounds = self.rng.random_range(1..=3);
        for step in 0..rounds {
            let seed = self.rng.random_range(0..1_000_000);
            let use_scores = self.rng.random_bool(0.04);
            if global {
                let inner = ["l1_unstructured", "l1_unstructured", "random_unstructured"]
                    [self.rng.random_range(0..3)];
                random |= inner == "random_unstructured";
                let total: i64 = shapes.iter().map(|s| s.iter().product::<i64>()).sum();
                let mut scores = serde_json::Map::new();
                if use_scores {
                    let key = self.tensor(format!("{id}/s{step}"), &shapes[0], kind);
                    scores.insert("0".into(), json!(key));
                }
                steps.push(json!({"method": "global_unstructured", "targets": (0..count).collect::<Vec<_>>(),
                    "args": {"pruning_method": inner, "amount": self.amount(total / 2)},
                    "scores": scores, "seed": seed}));
                continue;
            }
            let shape = &shapes[0];
            let ndim = shape.len() as i64;
            let dim = self.rng.random_range(-ndim..ndim);
            let numel: i64 = shape.iter().product();
            let slices = shape[dim.rem_euclid(ndim) as usize];
            let choice = self.rng.random_range(0..10);
            let (method, args) = match choice {
                0..=2 => ("l1_unstructured", json!({"amount": self.amount(numel / 2)})),
                3..=5 => {
                    let n = [
                        json!(1),
                        json!(2),
                        json!(3),
                        json!(0.5),
                        json!("inf"),
                        json!("-inf"),
                        json!("fro"),
                        json!(0),
                    ][self.rng.random_range(0..8)]
                    .clone();
                    (
                        "ln_structured",
                        json!({"amount": self.amount(slices / 2), "n": n, "dim": dim}),
                    )
                }
                6 => (
                    "random_unstructured",
                    json!({"amount": self.amount(numel / 2)}),
                ),
                7 => (
                    "random_structured",
                    json!({"amount": self.amount(slices / 2), "dim": dim}),
                ),
                8 => {
                    let key = format!("{id}/mask{step}");
                    let mask = Tensor::rand(shape.as_slice(), (Kind::Float, Device::Cpu))
                        .gt(0.3)
                        .to_kind(kind);
                    self.tensors.push((key.clone(), mask));
                    ("custom_from_mask", json!({"mask": key}))
                }
                _ => ("identity", json!({})),
            };
            random |= method.starts_with("random");
            let mut scores = serde_json::Map::new();
            if use_scores && matches!(method, "l1_unstructured" | "ln_structured") {
                let key = self.tensor(format!("{id}/s{step}"), shape, kind);
                scores.insert("0".into(), json!(key));
            }
            steps.push(json!({"method": method, "targets": [0], "args": args, "scores": scores, "seed": seed}));
        }
        if !global && self.rng.random_bool(0.1) {
            steps.push(json!({"method": "remove", "targets": [0], "args": {}, "seed": 0}));
        }
        Case {
            id,
            kind,
            tensors,
            steps,
            random,
        }
    }
}

/// Where a case's tensors live on tchprune's side.
#[derive(Clone, Copy, Debug)]
enum Front {
    Module,
    VarStore,
}

/// Each tensor's final mask (all ones when never pruned) and the tensor as the forward pass
/// sees it.
type Outcome = Vec<(Vec<f64>, Tensor)>;

/// Runs a case through tchprune's `front`; the final masks and tensors, or an error.
fn run_case(
    case: &Case,
    inputs: &HashMap<String, Tensor>,
    registry: &Registry,
    front: Front,
) -> Result<Outcome, String> {
    let path = |i: usize| format!("m{i}.weight");
    let outcome = |pruned: &dyn Fn(&str) -> Option<Tensor>, seen: &dyn Fn(&str) -> Tensor| {
        (0..case.tensors.len())
            .map(|i| {
                let tensor = seen(&path(i));
                let mask = match pruned(&path(i)) {
                    Some(mask) => values(&mask),
                    None => vec![1.0; tensor.numel()],
                };
                (mask, tensor)
            })
            .collect()
    };
    match front {
        Front::Module => {
            let mut root = Module::new("Root");
            for (i, key) in case.tensors.iter().enumerate() {
                root.add_child(&format!("m{i}"), common::module_with_weight(&inputs[key]))
                    .unwrap();
            }
            run_steps(case, inputs, registry, &mut root)?;
            let child = |path: &str| root.child(tchprune::split_tensor_path(path).0).unwrap();
            Ok(outcome(
                &|p| child(p).buffer("weight_mask").map(Tensor::shallow_clone),
                &|p| child(p).get("weight"),
            ))
        }
        Front::VarStore => {
            let vs = nn::VarStore::new(Device::Cpu);
            for (i, key) in case.tensors.iter().enumerate() {
                let _ = (vs.root() / format!("m{i}")).add("weight", inputs[key].copy(), true);
            }
            let mut pruner = VarStorePruner::new(&vs);
            run_steps(case, inputs, registry, &mut pruner)?;
            let variables = vs.variables();
            Ok(outcome(
                &|p| pruner.mask(p).map(Tensor::shallow_clone),
                // The variable itself: it must hold exactly what PyTorch's forward sees.
                &|p| variables[p].detach(),
            ))
        }
    }
}

fn run_steps(
    case: &Case,
    inputs: &HashMap<String, Tensor>,
    registry: &Registry,
    target: &mut impl Prunable,
) -> Result<(), String> {
    for step in &case.steps {
        tch::manual_seed(step["seed"].as_i64().unwrap());
        let targets: Vec<String> = step["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| format!("m{}.weight", i.as_u64().unwrap()))
            .collect();
        let scores: Vec<(String, &Tensor)> = step["scores"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(i, key)| (format!("m{i}.weight"), &inputs[key.as_str().unwrap()]))
                    .collect()
            })
            .unwrap_or_default();
        let mut args = step["args"].clone();
        let result = match step["method"].as_str().unwrap() {
            "global_unstructured" => {
                let inner = args
                    .as_object_mut()
                    .unwrap()
                    .remove("pruning_method")
                    .unwrap();
                registry
                    .build(inner.as_str().unwrap(), &args)
                    .and_then(|method| {
                        let paths: Vec<&str> = targets.iter().map(String::as_str).collect();
                        let scores: Vec<(&str, &Tensor)> =
                            scores.iter().map(|(p, t)| (p.as_str(), *t)).collect();
                        prune::global_unstructured(target, &paths, method, &scores)
                    })
            }
            "custom_from_mask" => CustomFromMask::new(&inputs[args["mask"].as_str().unwrap()])
                .and_then(|m| prune::apply(target, &targets[0], Arc::new(m), None)),
            "remove" => prune::remove(target, &targets[0]),
            name => registry.build(name, &args).and_then(|m| {
                prune::apply(target, &targets[0], m, scores.first().map(|(_, t)| *t))
            }),
        };
        result.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Equal entry by entry, NaN where the other is NaN.
fn same_values(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size()
        && a.eq_tensor(b)
            .logical_or(&a.isnan().logical_and(&b.isnan()))
            .all()
            .int64_value(&[])
            != 0
}

#[test]
fn masks_match_pytorch_on_random_cases() {
    tch::manual_seed(20261127);
    let mut generator = Generator {
        rng: StdRng::seed_from_u64(20261127),
        tensors: Vec::new(),
    };
    let cases: Vec<Case> = (0..CASES).map(|i| generator.case(i)).collect();
    let dir = tempfile::tempdir().unwrap();
    let (cases_path, inputs_path) = (
        dir.path().join("cases.json"),
        dir.path().join("in.safetensors"),
    );
    let (masks_path, report_path) = (
        dir.path().join("out.safetensors"),
        dir.path().join("report.json"),
    );
    let description: Vec<Value> = cases
        .iter()
        .map(|c| json!({"id": c.id, "tensors": c.tensors, "steps": c.steps}))
        .collect();
    std::fs::write(&cases_path, serde_json::to_string(&description).unwrap()).unwrap();
    let named: Vec<(&str, &Tensor)> = generator
        .tensors
        .iter()
        .map(|(k, t)| (k.as_str(), t))
        .collect();
    Tensor::write_safetensors(&named, &inputs_path).unwrap();
    run_python(
        "prune_cases.py",
        &[&cases_path, &inputs_path, &masks_path, &report_path],
    );
    let expected = read_tensors(&masks_path);
    let report: HashMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let inputs: HashMap<String, Tensor> = generator.tensors.into_iter().collect();
    let registry = Registry::with_builtins();

    let mut failures = Vec::new();
    let mut compared = 0;
    let mut errors_agreed = 0;
    for (case, front) in cases
        .iter()
        .flat_map(|case| [(case, Front::Module), (case, Front::VarStore)])
    {
        let torch_outcome = &report[&case.id];
        let ours = run_case(case, &inputs, &registry, front);
        let outcome = match (ours, torch_outcome.as_str()) {
            (Err(_), outcome) if outcome.starts_with("error") => {
                errors_agreed += 1;
                continue;
            }
            (Err(e), _) => {
                failures.push(format!(
                    "{} ({front:?}): tchprune failed ({e}), PyTorch did not; steps {:?}",
                    case.id, case.steps
                ));
                continue;
            }
            (Ok(_), outcome) if outcome.starts_with("error") => {
                failures.push(format!(
                    "{} ({front:?}): PyTorch failed ({outcome}), tchprune did not; steps {:?}",
                    case.id, case.steps
                ));
                continue;
            }
            (Ok(outcome), _) => outcome,
        };
        let half = matches!(case.kind, Kind::Half | Kind::BFloat16);
        let (mut our_total, mut their_total) = (0.0, 0.0);
        for (i, (ours, effective)) in outcome.into_iter().enumerate() {
            let theirs = values(&expected[&format!("{}/{i}", case.id)]);
            our_total += ours.iter().sum::<f64>();
            their_total += theirs.iter().sum::<f64>();
            compared += 1;
            if case.random && half {
                continue; // tied draws: only the total count is defined
            }
            let effective = effective.to_kind(Kind::Double);
            let their_effective =
                expected[&format!("{}/{i}/effective", case.id)].to_kind(Kind::Double);
            if ours != theirs || !same_values(&effective, &their_effective) {
                failures.push(format!(
                    "{} ({front:?}) tensor {i} ({:?}): {} differ\n  steps {:?}\n  ours   {ours:?}\n  torch  {theirs:?}",
                    case.id,
                    case.kind,
                    if ours == theirs { "effective weights" } else { "masks" },
                    case.steps
                ));
            }
        }
        if our_total != their_total {
            failures.push(format!(
                "{} ({front:?}): {our_total} entries kept, PyTorch keeps {their_total}",
                case.id
            ));
        }
    }
    println!(
        "{} cases on two front ends, {compared} masks compared, {errors_agreed} runs failed on \
         both sides",
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(compared >= 400, "only {compared} masks compared");
}
