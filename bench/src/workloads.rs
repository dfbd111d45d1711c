//! tchprune's side of each workload, mirroring `pytorch_bench.py` call for call.

use anyhow::Result;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;
use tch::nn::{self, Module as _, OptimizerConfig};
use tch::{Device, Kind, Tensor};
use tchprune::checkpoint::{self, module_from_state_dict, MaskDtype};
use tchprune::method::L1Unstructured;
use tchprune::optim::MaskedAdam;
use tchprune::{layers, prune, Module, Norm, Prunable, VarStorePruner};
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
    let linear = |name: &str| {
        layers::linear(
            &(&root / name),
            2048,
            2048,
            layers::torch_linear_config(2048),
        )
    };
    layers::sequential([
        linear("0"),
        layers::relu(),
        linear("2"),
        layers::relu(),
        linear("4"),
    ])
}

/// The MLP's three weights pruned to 90% by magnitude, through either front end.
fn prune_mlp(target: &mut impl Prunable) {
    for layer in ["0", "2", "4"] {
        prune::l1_unstructured(target, &format!("{layer}.weight"), 0.9, None).expect("prunes");
    }
}

/// Median seconds per call of each step, the two alternating (in both orders) so that drift in
/// the machine's speed or memory state weighs on both alike.
fn interleaved(calls: usize, dense: impl FnMut(), pruned: impl FnMut()) -> (f64, f64) {
    let mut steps: [Box<dyn FnMut()>; 2] = [Box::new(dense), Box::new(pruned)];
    let times = interleaved_steps(calls, &mut steps);
    (times[0], times[1])
}

/// Median seconds per call of each of `steps`, taken in turn, in forward then backward order.
fn interleaved_steps(calls: usize, steps: &mut [Box<dyn FnMut() + '_>]) -> Vec<f64> {
    for _ in 0..3 {
        steps.iter_mut().for_each(|step| step());
    }
    let mut times = vec![Vec::new(); steps.len()];
    let mut order: Vec<usize> = (0..steps.len()).collect();
    for _ in 0..calls {
        for &i in &order {
            let start = Instant::now();
            steps[i]();
            times[i].push(start.elapsed().as_secs_f64());
        }
        order.reverse();
    }
    times.iter_mut().map(|t| median(t)).collect()
}

/// What a step of [`mlp_overhead`] runs.
#[derive(Clone, Copy, PartialEq)]
enum MlpStep {
    /// A forward pass without gradients.
    Eval,
    /// Forward, backward and SGD.
    TrainSgd,
    /// Forward, backward and Adam.
    TrainAdam,
    /// Forward, backward and Adam: `MaskedAdam` for the pruned model, tch's for the unpruned.
    TrainMaskedAdam,
}

/// A step of the Module path's MLP, 90% pruned (PyTorch's reparametrization) against unpruned.
fn mlp_overhead(step: MlpStep, calls: usize) -> Value {
    let x = Tensor::randn([64, 2048], (Kind::Float, Device::Cpu));
    let target = Tensor::randn([64, 2048], (Kind::Float, Device::Cpu));
    let make_step = |pruned: bool| -> Box<dyn FnMut()> {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut model = mlp(&vs);
        if pruned {
            prune_mlp(&mut model);
        }
        let (x, target) = (x.shallow_clone(), target.shallow_clone());
        if step == MlpStep::Eval {
            return Box::new(move || {
                let _y = tch::no_grad(|| model.forward(&x));
            });
        }
        let loss = move |model: &Module| {
            model
                .forward_t(&x, true)
                .mse_loss(&target, tch::Reduction::Mean)
        };
        if pruned && step == MlpStep::TrainMaskedAdam {
            let mut opt = MaskedAdam::new(&vs, nn::Adam::default(), 1e-3).expect("an optimizer");
            return Box::new(move || opt.backward_step(&model, &loss(&model)).expect("a step"));
        }
        let mut opt = match step {
            MlpStep::TrainAdam | MlpStep::TrainMaskedAdam => nn::Adam::default().build(&vs, 1e-3),
            _ => nn::Sgd::default().build(&vs, 0.01),
        }
        .expect("an optimizer");
        Box::new(move || opt.backward_step(&loss(&model)))
    };
    let (dense, pruned) = interleaved(calls, make_step(false), make_step(true));
    json!({"ratio": pruned / dense, "dense_seconds": dense, "pruned_seconds": pruned})
}

/// The MLP of the other workloads written with tch's own layers, as an application would.
fn tch_mlp(vs: &nn::VarStore) -> nn::Sequential {
    tch::manual_seed(0);
    let root = vs.root();
    let linear =
        |name: &str| nn::linear(&root / name, 2048, 2048, layers::torch_linear_config(2048));
    nn::seq()
        .add(linear("0"))
        .add_fn(|x| x.relu())
        .add(linear("2"))
        .add_fn(|x| x.relu())
        .add(linear("4"))
}

/// How a training step of [`train_step_varstore`] updates the weights.
#[derive(Clone, Copy, PartialEq)]
enum Update {
    /// tch's `nn::Adam` (libtorch's).
    TchAdam,
    /// tch's `nn::Adam`, then `VarStorePruner::step`'s masks.
    TchAdamThenMasks,
    /// `MaskedAdam`.
    MaskedAdam,
}

/// A training step (forward, backward, Adam) of the MLP in tch's layers: unpruned with tch's
/// Adam, against 90% pruned through a `VarStorePruner` with `pruned_update`. Also times the
/// unpruned model under `MaskedAdam`, to show what fusing Adam alone gives.
fn train_step_varstore(pruned_update: Update, calls: usize) -> Value {
    let x = Tensor::randn([64, 2048], (Kind::Float, Device::Cpu));
    let target = Tensor::randn([64, 2048], (Kind::Float, Device::Cpu));
    let make_step = |pruned: bool, update: Update| -> Box<dyn FnMut()> {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = tch_mlp(&vs);
        let mut pruner = VarStorePruner::new(&vs);
        if pruned {
            prune_mlp(&mut pruner);
        }
        let (x, target) = (x.shallow_clone(), target.shallow_clone());
        let loss =
            move |net: &nn::Sequential| net.forward(&x).mse_loss(&target, tch::Reduction::Mean);
        let adam = nn::Adam::default();
        match update {
            Update::TchAdam | Update::TchAdamThenMasks => {
                let mut opt = adam.build(&vs, 1e-3).expect("an optimizer");
                Box::new(move || {
                    let loss = loss(&net);
                    if update == Update::TchAdam {
                        opt.backward_step(&loss);
                    } else {
                        pruner.backward_step(&mut opt, &loss).expect("masks apply");
                    }
                })
            }
            Update::MaskedAdam => {
                let mut opt = MaskedAdam::new(&vs, adam, 1e-3).expect("an optimizer");
                Box::new(move || {
                    opt.backward_step(&pruner, &loss(&net)).expect("a step");
                })
            }
        }
    };
    let mut steps = [
        make_step(false, Update::TchAdam),
        make_step(true, pruned_update),
        make_step(false, Update::MaskedAdam),
    ];
    let times = interleaved_steps(calls, &mut steps);
    json!({
        "ratio": times[1] / times[0],
        "dense_seconds": times[0],
        "pruned_seconds": times[1],
        "dense_masked_adam_seconds": times[2],
    })
}

/// The keys of a checkpoint with many small tensors, as large language models have: 50,000
/// layers of a 4x4 weight and a bias.
const MANY_KEYS: usize = 100_000;

/// A plan over every weight of a checkpoint of [`MANY_KEYS`] keys, from reading the file to
/// writing the output, as `tchprune apply` runs it; then reading the output for its sparsity,
/// as `tchprune stats` does (in this process: without the command's start-up, the same on the
/// PyTorch side).
fn many_keys(runs: usize) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let (input, output) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    tch::manual_seed(0);
    let tensors: Vec<(String, Tensor)> = (0..MANY_KEYS / 2)
        .flat_map(|i| {
            [
                (
                    format!("layers.{i}.weight"),
                    Tensor::randn([4, 4], (Kind::Float, Device::Cpu)),
                ),
                (
                    format!("layers.{i}.bias"),
                    Tensor::randn([4], (Kind::Float, Device::Cpu)),
                ),
            ]
        })
        .collect();
    checkpoint::write(&tensors, &Default::default(), &input)?;
    drop(tensors);
    let plan = tchprune::plan::Plan::from_json(
        r#"{"steps": [{"method": "l1_unstructured", "params": ["*.weight"], "amount": 0.5}]}"#,
        dir.path(),
        "plan",
    )?;
    let registry = tchprune::Registry::with_builtins();
    let apply = median_time(
        runs,
        || (),
        |()| {
            let state = tchprune::plan::PrunedState::from_checkpoint(
                checkpoint::read(&input).expect("reads"),
            )
            .expect("a state");
            let state = state
                .apply_plan(&plan, &registry, &mut |_, _| {})
                .expect("applies");
            let out = state
                .to_checkpoint(MaskDtype::Parameter)
                .expect("a checkpoint");
            checkpoint::write(&out.tensors, &out.metadata, &output).expect("writes");
        },
    );
    let stats = median_time(
        runs,
        || (),
        |()| {
            let state = tchprune::plan::PrunedState::from_checkpoint(
                checkpoint::read(&output).expect("reads"),
            )
            .expect("a state");
            let _rows = state.sparsity().expect("sparsity");
        },
    );
    Ok(json!({"apply": {"seconds": apply}, "stats": {"seconds": stats}}))
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

/// Calls per timed run of the CPU sparse rows (dense and sparse alternating, the median of
/// each): their calls take milliseconds, and on a small shared machine the median of a few
/// dozen moved their ratios by a fifth from run to run. `pytorch_bench.py` takes as many.
const SPARSE_CALLS_PER_RUN: usize = 40;

/// Every workload by id, as `pytorch_bench.py` names them; `runs` is the number of timed runs.
pub fn run(id: &str, runs: usize) -> Result<Value> {
    let slow = (runs / 2).max(3);
    let sparse_calls = runs * SPARSE_CALLS_PER_RUN;
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
        "mlp_eval_overhead" => mlp_overhead(MlpStep::Eval, runs * 6),
        "mlp_train_overhead" | "mlp_train_overhead_kept_memory" => {
            mlp_overhead(MlpStep::TrainSgd, runs * 6)
        }
        "train_step_varstore" => train_step_varstore(Update::MaskedAdam, runs * 6),
        "train_step_varstore_tch_adam" => train_step_varstore(Update::TchAdamThenMasks, runs * 6),
        "train_step_module_adam" => mlp_overhead(MlpStep::TrainAdam, runs * 6),
        "train_step_module_masked_adam" => mlp_overhead(MlpStep::TrainMaskedAdam, runs * 6),
        "state_bytes" => state_bytes()?,
        "many_keys" => many_keys((runs / 2).max(3))?,
        "shrink_lenet_b1" => shrink_latency(ShrinkModel::LeNet, 1, runs * 20),
        "shrink_lenet_b32" => shrink_latency(ShrinkModel::LeNet, 32, runs * 20),
        "shrink_resnet18_b1" => shrink_latency(ShrinkModel::ResNet18, 1, runs * 4),
        "shrink_resnet18_b32" => shrink_latency(ShrinkModel::ResNet18, 32, runs.max(5)),
        id if id.starts_with("sparse_linear_") => {
            // sparse_linear_{percent}_b{batch}
            let mut parts = id["sparse_linear_".len()..].split("_b");
            let percent: f64 = parts.next().unwrap_or("").parse()?;
            let batch: i64 = parts.next().unwrap_or("").parse()?;
            sparse_speed(&[4096, 4096], percent / 100.0, batch, sparse_calls)
        }
        id if id.starts_with("sparse_tall_95_b") => {
            // sparse_tall_95_b{batch}: many short rows
            let batch: i64 = id["sparse_tall_95_b".len()..].parse()?;
            sparse_speed(&[16384, 256], 0.95, batch, sparse_calls)
        }
        id if id.starts_with("sparse_conv_95_") => {
            // sparse_conv_95_{channels}x{size}[_b{batch}]
            let (shape, batch) = match id["sparse_conv_95_".len()..].split_once("_b") {
                Some((shape, batch)) => (shape, batch.parse()?),
                None => (&id["sparse_conv_95_".len()..], 1),
            };
            let mut parts = shape.split('x');
            let channels: i64 = parts.next().unwrap_or("").parse()?;
            let size: i64 = parts.next().unwrap_or("").parse()?;
            sparse_conv_speed(channels, size, batch, sparse_calls)
        }
        "l1_unstructured_4096_cuda" => on_cuda(slow, |m| {
            prune::l1_unstructured(m, "weight", 0.5, None).expect("prunes")
        }),
        "ln_structured_4096_cuda" => on_cuda(slow, |m| {
            prune::ln_structured(m, "weight", 0.5, Norm::P(2.0), 0, None).expect("prunes")
        }),
        "global_resnet50_cuda" => {
            let tensors: Vec<(String, Tensor)> = resnet50_tensors()
                .into_iter()
                .map(|(k, t)| (k, t.to_device(Device::Cuda(0))))
                .collect();
            let keys: Vec<String> = tensors.iter().map(|(k, _)| k.clone()).collect();
            let run = |mut m: Module| {
                global_l1(&mut m, &keys, 0.8);
                tch::Cuda::synchronize(0);
            };
            json!({"seconds": median_time(slow, || resnet50(&tensors), run)})
        }
        id if id.starts_with("semi_structured_") => {
            // semi_structured_{n}_b{batch}
            let mut parts = id["semi_structured_".len()..].split("_b");
            let n: i64 = parts.next().unwrap_or("").parse()?;
            let batch: i64 = parts.next().unwrap_or("").parse()?;
            semi_structured(n, batch, runs * 4)
        }
        "sparse_cnn_95" => sparse_cnn(sparse_calls),
        "sparse_mlp_95" => sparse_mlp(1, Kind::Float, sparse_calls),
        "sparse_mlp_95_b8" => sparse_mlp(8, Kind::Float, sparse_calls),
        "sparse_mlp_95_bf16" => sparse_mlp(1, Kind::BFloat16, sparse_calls),
        "sparse_mlp_95_bf16_b8" => sparse_mlp(8, Kind::BFloat16, sparse_calls),
        id if id.starts_with("oneshot_") => {
            // oneshot_{method}_llama[_cuda]
            let device = if id.ends_with("_cuda") {
                Device::Cuda(0)
            } else {
                Device::Cpu
            };
            let method = id["oneshot_".len()..].split('_').next().unwrap_or("");
            crate::oneshot::llama(method, device, slow)
        }
        id if id.starts_with("sparsegpt_layer_") => {
            let device = if id.ends_with("_cuda") {
                Device::Cuda(0)
            } else {
                Device::Cpu
            };
            let runs = if device == Device::Cpu { 1 } else { slow };
            crate::oneshot::layer(id.contains("_24"), device, runs)
        }
        other => anyhow::bail!("unknown workload {other}"),
    })
}

#[derive(Clone, Copy)]
enum ShrinkModel {
    LeNet,
    ResNet18,
}

/// The masked model (every group pruned to half its channels by L2 norm, dense shapes) against
/// the model `shrink` makes of it, eval forward without gradients; with each one's weight count.
fn shrink_latency(which: ShrinkModel, batch: i64, calls: usize) -> Value {
    use tch::nn::ModuleT;
    use tchprune::shrink;
    tch::manual_seed(0);
    let method = tchprune::LnStructured::new(0.5, Norm::P(2.0), 0).expect("a method");
    let count = |vs: &nn::VarStore| {
        vs.trainable_variables()
            .iter()
            .map(Tensor::numel)
            .sum::<usize>()
    };
    type Models = (Box<dyn ModuleT>, Box<dyn ModuleT>, Tensor, (usize, usize));
    let (masked, small, x, params): Models = match which {
        ShrinkModel::LeNet => {
            let graph = shrink::trace(layers::lenet, &[1, 1, 28, 28]).expect("traced");
            let vs = nn::VarStore::new(Device::Cpu);
            let model = layers::lenet(&vs.root());
            let mut pruner = VarStorePruner::new(&vs);
            shrink::prune_groups(&mut pruner, &graph, &method).expect("pruned");
            let shrunk = shrink::shrink(&pruner.plain_state_dict(), &graph).expect("shrunk");
            std::mem::forget(pruner);
            let small_vs = nn::VarStore::new(Device::Cpu);
            let mut small = layers::lenet_with_widths(&small_vs.root(), &shrunk.widths);
            checkpoint::load_state_dict(&mut small, &shrunk.tensors, true).expect("loads");
            let params = (count(&vs), count(&small_vs));
            let x = Tensor::randn([batch, 1, 28, 28], (Kind::Float, Device::Cpu));
            (Box::new(model), Box::new(small), x, params)
        }
        ShrinkModel::ResNet18 => {
            let graph = shrink::trace(|p| tch::vision::resnet::resnet18(p, 10), &[1, 3, 64, 64])
                .expect("traced");
            let vs = nn::VarStore::new(Device::Cpu);
            let model = tch::vision::resnet::resnet18(&vs.root(), 10);
            let mut pruner = VarStorePruner::new(&vs);
            shrink::prune_groups(&mut pruner, &graph, &method).expect("pruned");
            let shrunk = shrink::shrink(&pruner.plain_state_dict(), &graph).expect("shrunk");
            let mut small_vs = nn::VarStore::new(Device::Cpu);
            let small = layers::resnet_with_widths(
                &small_vs.root(),
                layers::RESNET18_BLOCKS,
                &shrunk.widths,
                10,
            );
            let state: std::collections::HashMap<String, Tensor> =
                shrunk.tensors.into_iter().collect();
            tch::no_grad(|| {
                for (name, mut t) in small_vs.variables() {
                    t.copy_(&state[&name]);
                }
            });
            let _ = &mut small_vs;
            let params = (count(&vs), count(&small_vs));
            std::mem::forget(pruner);
            let x = Tensor::randn([batch, 3, 112, 112], (Kind::Float, Device::Cpu));
            (Box::new(model), Box::new(small), x, params)
        }
    };
    let (dense, shrunk) = interleaved(
        calls,
        || {
            let _ = tch::no_grad(|| masked.forward_t(&x, false));
        },
        || {
            let _ = tch::no_grad(|| small.forward_t(&x, false));
        },
    );
    json!({"ratio": shrunk / dense, "dense_seconds": dense, "pruned_seconds": shrunk,
           "parameters": [params.0, params.1]})
}

/// A weight of `shape` with `sparsity` of its entries zero, at random.
fn sparse_weight(shape: &[i64], sparsity: f64) -> Tensor {
    let keep = Tensor::rand(shape, (Kind::Float, Device::Cpu)).ge(sparsity);
    Tensor::randn(shape, (Kind::Float, Device::Cpu)) * keep
}

/// The dense `linear` against tchprune's sparse layer, alternating.
fn sparse_speed(shape: &[i64], sparsity: f64, batch: i64, calls: usize) -> Value {
    tch::manual_seed(0);
    let weight = sparse_weight(shape, sparsity);
    let layer = tchprune::sparse::SparseLinear::new(&weight, None).expect("a sparse layer");
    let x = Tensor::randn([batch, shape[1]], (Kind::Float, Device::Cpu));
    let (dense, sparse) = interleaved(
        calls,
        || {
            let _ = tch::no_grad(|| x.linear::<Tensor>(&weight, None));
        },
        || {
            let _ = layer.try_forward(&x).expect("runs");
        },
    );
    json!({"dense_seconds": dense, "sparse_seconds": sparse})
}

/// A 3x3 convolution (`channels` to `channels`, padding 1) at 95% on `batch` `size`x`size`
/// inputs: libtorch's `conv2d` against tchprune's sparse convolution, alternating.
fn sparse_conv_speed(channels: i64, size: i64, batch: i64, calls: usize) -> Value {
    tch::manual_seed(0);
    let weight = sparse_weight(&[channels, channels, 3, 3], 0.95);
    let config = nn::ConvConfig {
        padding: 1,
        ..Default::default()
    };
    let layer = tchprune::sparse::SparseConv2d::new(&weight, None, &config).expect("sparse");
    let x = Tensor::randn([batch, channels, size, size], (Kind::Float, Device::Cpu));
    let (dense, sparse) = interleaved(
        calls,
        || {
            let _ = tch::no_grad(|| x.conv2d::<Tensor>(&weight, None, [1, 1], [1, 1], [1, 1], 1));
        },
        || {
            let _ = layer.try_forward(&x).expect("runs");
        },
    );
    json!({"dense_seconds": dense, "sparse_seconds": sparse})
}

/// A small VGG-style network for 3x56x56 images: convolutions 3->64, 64->64, pool, 64->128,
/// 128->128, pool (3x3, padding 1, ReLU), then a linear layer to 10 classes.
fn cnn(vs: &nn::VarStore) -> Module {
    tch::manual_seed(0);
    let root = vs.root();
    let conv = |name: &str, inputs: i64, outputs: i64| {
        let config = nn::ConvConfig {
            padding: 1,
            ..layers::torch_conv_config(inputs * 9)
        };
        layers::conv2d(&(&root / name), inputs, outputs, 3, config)
    };
    layers::sequential([
        conv("0", 3, 64),
        layers::relu(),
        conv("2", 64, 64),
        layers::relu(),
        layers::max_pool2d(2, 2),
        conv("5", 64, 128),
        layers::relu(),
        conv("7", 128, 128),
        layers::relu(),
        layers::max_pool2d(2, 2),
        layers::flatten(1, -1),
        layers::linear(
            &(&root / "11"),
            128 * 14 * 14,
            10,
            layers::torch_linear_config(128 * 14 * 14),
        ),
    ])
}

/// [`cnn`] with every layer but the first pruned to 95% by magnitude, eval forward at batch 1:
/// the dense model against `sparse::sparsify_with_input`'s.
fn sparse_cnn(calls: usize) -> Value {
    let keys = ["2.weight", "5.weight", "7.weight", "11.weight"].map(String::from);
    let input = (&[1, 3, 56, 56][..], Kind::Float);
    sparse_model_speed(cnn, &keys, input, calls, |model, x, options| {
        tchprune::sparse::sparsify_with_input(model, x, options)
    })
}

/// The 3x2048 MLP (two hidden layers of 2048, ReLU) in `dtype` at 95% in every layer, eval
/// forward: dense against `sparse::sparsify`'s model.
fn sparse_mlp(batch: i64, dtype: Kind, calls: usize) -> Value {
    let keys: Vec<String> = (mlp(&nn::VarStore::new(Device::Cpu)).named_parameters())
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.ends_with("weight"))
        .collect();
    let input = (&[batch, 2048][..], dtype);
    sparse_model_speed(mlp, &keys, input, calls, |model, _, options| {
        tchprune::sparse::sparsify(model, options)
    })
}

/// The model `build` makes with `keys` pruned to 95% by magnitude (made permanent), in the
/// input's dtype, eval forward on an input of `input_shape`, alternating: a dense copy of it
/// against the model `sparsify` makes of it (measured at the input's batch).
fn sparse_model_speed(
    build: fn(&nn::VarStore) -> Module,
    keys: &[String],
    (input_shape, dtype): (&[i64], Kind),
    calls: usize,
    sparsify: impl FnOnce(
        &mut Module,
        &Tensor,
        &tchprune::sparse::SpeedOptions,
    ) -> tchprune::Result<Vec<tchprune::sparse::LayerChoice>>,
) -> Value {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let mut model = build(&vs);
    vs.set_kind(dtype);
    for key in keys {
        prune::l1_unstructured(&mut model, key, 0.95, None).expect("prunes");
        prune::remove(&mut model, key).expect("removes");
    }
    let mut vs_dense = nn::VarStore::new(Device::Cpu);
    let dense_model = build(&vs_dense);
    vs_dense.set_kind(dtype);
    let pruned: std::collections::HashMap<String, Tensor> =
        model.named_parameters().into_iter().collect();
    tch::no_grad(|| {
        for (k, mut t) in dense_model.named_parameters() {
            t.copy_(&pruned[&k]);
        }
    });
    let x = Tensor::randn(input_shape, (dtype, Device::Cpu));
    let measured = tchprune::sparse::SpeedOptions {
        batch: input_shape[0],
        ..Default::default()
    };
    let choices = sparsify(&mut model, &x, &measured).expect("sparsified");
    let (dense, sparse) = interleaved(
        calls,
        || {
            let _ = tch::no_grad(|| dense_model.forward_t(&x, false));
        },
        || {
            let _ = tch::no_grad(|| model.forward_t(&x, false));
        },
    );
    let sparse_layers = choices.iter().filter(|c| c.sparse).count();
    json!({"dense_seconds": dense, "sparse_seconds": sparse, "sparse_layers": sparse_layers})
}

/// `prune_it` on the 4096x4096 tensor on the first CUDA device, synchronized.
fn on_cuda(runs: usize, prune_it: fn(&mut Module)) -> Value {
    let setup = || holder(big_tensor().to_device(Device::Cuda(0)));
    let run = |mut m: Module| {
        prune_it(&mut m);
        tch::Cuda::synchronize(0);
    };
    json!({"seconds": median_time(runs, setup, run)})
}

/// A 2:4 fp16 `[n, n]` layer on CUDA (the 2 largest of every 4 inputs kept) through
/// cuSPARSELt against the dense `linear`, alternating, each call synchronized.
fn semi_structured(n: i64, batch: i64, calls: usize) -> Value {
    let device = Device::Cuda(0);
    tch::manual_seed(0);
    let groups = Tensor::randn([n, n / 4, 4], (Kind::Half, device));
    let (_, order) = groups.abs().sort(-1, true);
    let keep = Tensor::zeros([n, n / 4, 4], (Kind::Half, device)).scatter_value(
        -1,
        &order.narrow(-1, 0, 2),
        1.0,
    );
    let weight = (groups * keep).reshape([n, n]);
    let layer = tchprune::sparse::SemiStructuredLinear::new(&weight, None).expect("2:4");
    let x = Tensor::randn([batch, n], (Kind::Half, device));
    let (dense, sparse) = interleaved(
        calls,
        || {
            let _ = tch::no_grad(|| x.linear::<Tensor>(&weight, None));
            tch::Cuda::synchronize(0);
        },
        || {
            let _ = layer.try_forward(&x).expect("runs");
            tch::Cuda::synchronize(0);
        },
    );
    json!({"dense_seconds": dense, "sparse_seconds": sparse})
}
