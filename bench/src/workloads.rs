//! tchprune's side of each workload, mirroring `pytorch_bench.py` call for call.

use anyhow::Result;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};
use tchprune::checkpoint::{self, module_from_state_dict, MaskDtype};
use tchprune::method::L1Unstructured;
use tchprune::{layers, prune, Module, Norm};
use tchprune_examples::foobar::FooBarPruningMethod;

/// The median of `runs` timings of `run`, each after an untimed `setup`.
pub fn median_time<S>(runs: usize, mut setup: impl FnMut() -> S, mut run: impl FnMut(S)) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let state = setup();
            let start = Instant::now();
            run(state);
            start.elapsed().as_secs_f64()
        })
        .collect();
    median(&mut times)
}

fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    let n = times.len();
    if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    }
}

fn holder(t: Tensor) -> Module {
    Module::new("Holder").with_parameter("weight", t.set_requires_grad(true))
}

fn big_tensor() -> Tensor {
    tch::manual_seed(0);
    Tensor::randn([4096, 4096], (Kind::Float, Device::Cpu))
}

/// The conv and linear weights of ResNet-50 (25.5M entries), named as torchvision names them.
pub fn resnet50_shapes() -> Vec<(String, Vec<i64>)> {
    let mut shapes = vec![("conv1.weight".to_owned(), vec![64, 3, 7, 7])];
    let mut inplanes = 64;
    for (layer, (blocks, width)) in [3, 4, 6, 3]
        .into_iter()
        .zip([64, 128, 256, 512])
        .enumerate()
    {
        for block in 0..blocks {
            let p = format!("layer{}.{block}", layer + 1);
            shapes.push((format!("{p}.conv1.weight"), vec![width, inplanes, 1, 1]));
            shapes.push((format!("{p}.conv2.weight"), vec![width, width, 3, 3]));
            shapes.push((format!("{p}.conv3.weight"), vec![width * 4, width, 1, 1]));
            if block == 0 {
                shapes.push((
                    format!("{p}.downsample.0.weight"),
                    vec![width * 4, inplanes, 1, 1],
                ));
            }
            inplanes = width * 4;
        }
    }
    shapes.push(("fc.weight".to_owned(), vec![1000, 2048]));
    shapes
}

fn resnet50_tensors() -> Vec<(String, Tensor)> {
    tch::manual_seed(0);
    resnet50_shapes()
        .into_iter()
        .map(|(k, s)| (k, Tensor::randn(s.as_slice(), (Kind::Float, Device::Cpu))))
        .collect()
}

fn resnet50(tensors: &[(String, Tensor)]) -> Module {
    let state = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    module_from_state_dict(state).expect("distinct keys")
}

fn global_l1(model: &mut Module, keys: &[String], amount: f64) {
    let paths: Vec<&str> = keys.iter().map(String::as_str).collect();
    let method = Arc::new(L1Unstructured::new(amount).expect("a valid amount"));
    prune::global_unstructured(model, &paths, method, &[]).expect("global pruning");
}

fn tutorial() -> Result<()> {
    tch::manual_seed(1);
    let lenet = || {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = layers::lenet(&vs.root());
        (vs, model)
    };
    let (_vs, mut model) = lenet();
    let conv1 = model.child_mut("conv1").expect("LeNet's conv1");
    prune::random_unstructured(conv1, "weight", 0.3)?;
    prune::l1_unstructured(conv1, "bias", 3, None)?;
    prune::ln_structured(conv1, "weight", 0.5, Norm::P(2.0), 0, None)?;
    prune::remove(&mut model, "conv1.weight")?;
    let (_vs, mut model) = lenet();
    for (layer, amount) in [
        ("conv1", 0.2),
        ("conv2", 0.2),
        ("fc1", 0.4),
        ("fc2", 0.4),
        ("fc3", 0.4),
    ] {
        prune::l1_unstructured(&mut model, &format!("{layer}.weight"), amount, None)?;
    }
    let (_vs, mut model) = lenet();
    let weights = layers::LENET_WEIGHTS;
    prune::global_unstructured(
        &mut model,
        &weights,
        Arc::new(L1Unstructured::new(0.2)?),
        &[],
    )?;
    prune::apply(&mut model, "fc3.bias", Arc::new(FooBarPruningMethod), None)?;
    Ok(())
}

fn mlp(vs: &nn::VarStore) -> Module {
    tch::manual_seed(0);
    let root = vs.root();
    Module::new("Sequential")
        .with_child("0", layers::linear(&(&root / "0"), 2048, 2048))
        .with_child("2", layers::linear(&(&root / "2"), 2048, 2048))
        .with_child("4", layers::linear(&(&root / "4"), 2048, 2048))
        .with_forward(|m, xs, train| {
            let layer = |name: &str| m.child(name).expect("the MLP's layers");
            let xs = layer("0").forward_t(xs, train).relu();
            let xs = layer("2").forward_t(&xs, train).relu();
            layer("4").forward_t(&xs, train)
        })
}

/// Median seconds per call of each step, the two alternating (in both orders) so that drift in
/// the machine's speed or memory state weighs on both alike.
fn interleaved(calls: usize, mut dense: impl FnMut(), mut pruned: impl FnMut()) -> (f64, f64) {
    for _ in 0..3 {
        dense();
        pruned();
    }
    let (mut dense_times, mut pruned_times) = (Vec::new(), Vec::new());
    let timed = |step: &mut dyn FnMut(), times: &mut Vec<f64>| {
        let start = Instant::now();
        step();
        times.push(start.elapsed().as_secs_f64());
    };
    for i in 0..calls {
        if i % 2 == 0 {
            timed(&mut dense, &mut dense_times);
            timed(&mut pruned, &mut pruned_times);
        } else {
            timed(&mut pruned, &mut pruned_times);
            timed(&mut dense, &mut dense_times);
        }
    }
    (median(&mut dense_times), median(&mut pruned_times))
}

fn mlp_overhead(train: bool, calls: usize) -> Value {
    let x = Tensor::randn([64, 2048], (Kind::Float, Device::Cpu));
    let target = Tensor::randn([64, 2048], (Kind::Float, Device::Cpu));
    let make_step = |pruned: bool| -> Box<dyn FnMut()> {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut model = mlp(&vs);
        if pruned {
            for layer in ["0", "2", "4"] {
                prune::l1_unstructured(&mut model, &format!("{layer}.weight"), 0.9, None)
                    .expect("prunes");
            }
        }
        let (x, target) = (x.shallow_clone(), target.shallow_clone());
        if train {
            let mut opt = nn::Sgd::default().build(&vs, 0.01).expect("an optimizer");
            Box::new(move || {
                opt.zero_grad();
                model
                    .forward_t(&x, true)
                    .mse_loss(&target, tch::Reduction::Mean)
                    .backward();
                opt.step();
            })
        } else {
            Box::new(move || {
                let _y = tch::no_grad(|| model.forward(&x));
            })
        }
    };
    let (dense, pruned) = interleaved(calls, make_step(false), make_step(true));
    json!({"ratio": pruned / dense, "dense_seconds": dense, "pruned_seconds": pruned})
}

fn bytes_in_memory(model: &Module) -> usize {
    model
        .named_parameters()
        .iter()
        .chain(&model.named_buffers())
        .map(|(_, t)| t.numel() * t.kind().elt_size_in_bytes())
        .sum()
}

fn state_bytes() -> Result<Value> {
    let tensors = resnet50_tensors();
    let dense = resnet50(&tensors);
    let mut pruned = resnet50(&tensors);
    let keys: Vec<String> = tensors.iter().map(|(k, _)| k.clone()).collect();
    global_l1(&mut pruned, &keys, 0.8);
    let dir = tempfile::tempdir()?;
    let size = |model: &Module, name: &str| -> Result<u64> {
        let path = dir.path().join(name);
        let state = checkpoint::state_dict_with(model, MaskDtype::Bool);
        checkpoint::write(&state, &Default::default(), &path)?;
        Ok(std::fs::metadata(&path)?.len())
    };
    Ok(json!({
        "memory": {"ratio": bytes_in_memory(&pruned) as f64 / bytes_in_memory(&dense) as f64},
        "disk": {"ratio": size(&pruned, "pruned.safetensors")? as f64 / size(&dense, "dense.safetensors")? as f64},
    }))
}

/// Every workload by id, as `pytorch_bench.py` names them; `runs` is the number of timed runs.
pub fn run(id: &str, runs: usize) -> Result<Value> {
    let slow = (runs / 2).max(3);
    let on_big = |prune_it: fn(&mut Module)| json!({"seconds": median_time(slow, || holder(big_tensor()), |mut m| prune_it(&mut m))});
    Ok(match id {
        "l1_unstructured_4096" => {
            on_big(|m| prune::l1_unstructured(m, "weight", 0.5, None).expect("prunes"))
        }
        "random_unstructured_4096" => {
            on_big(|m| prune::random_unstructured(m, "weight", 0.5).expect("prunes"))
        }
        "ln_structured_4096" => on_big(|m| {
            prune::ln_structured(m, "weight", 0.5, Norm::P(2.0), 0, None).expect("prunes")
        }),
        "remove_4096" => {
            let setup = || {
                let mut m = holder(big_tensor());
                prune::l1_unstructured(&mut m, "weight", 0.5, None).expect("prunes");
                m
            };
            json!({"seconds": median_time(runs, setup, |mut m| prune::remove(&mut m, "weight").expect("removes"))})
        }
        "global_resnet50" | "global_resnet50_round2" => {
            let tensors = resnet50_tensors();
            let keys: Vec<String> = tensors.iter().map(|(k, _)| k.clone()).collect();
            let second = id.ends_with("round2");
            let setup = || {
                let mut model = resnet50(&tensors);
                if second {
                    global_l1(&mut model, &keys, 0.8);
                }
                model
            };
            let amount = if second { 0.5 } else { 0.8 };
            json!({"seconds": median_time(slow, setup, |mut m| global_l1(&mut m, &keys, amount))})
        }
        "tutorial_lenet" => {
            json!({"seconds": median_time(runs * 4, || (), |()| tutorial().expect("the tutorial runs"))})
        }
        "mlp_eval_overhead" => mlp_overhead(false, runs * 6),
        "mlp_train_overhead" | "mlp_train_overhead_kept_memory" => mlp_overhead(true, runs * 6),
        "state_bytes" => state_bytes()?,
        other => anyhow::bail!("unknown workload {other}"),
    })
}
