//! The one-shot rows: the layer-sequential driver on the example's byte-level Llama, and the
//! SparseGPT solve of one Llama-7B-shaped layer, against `oneshot_reference.py` (a plain PyTorch
//! implementation of the papers' algorithms, the same steps llm-compressor runs).

use crate::workloads::median_time;
use serde_json::{json, Value};
use std::sync::Arc;
use tch::{nn, Device, Kind, Tensor};
use tchprune::llm::{self, Llama, OneshotOptions};
use tchprune::method::{NmPattern, SparseGpt};
use tchprune::{PruningMethod, Registry, VarStorePruner};
use tchprune_examples::tiny_llm::model_config;

/// `oneshot_{method}_llama[_cuda]`: the whole driver (calibration passes, pruning, propagation)
/// on the example's model with 128 windows of 256 tokens; random weights (the work does not
/// depend on them).
pub fn llama(method: &str, device: Device, runs: usize) -> Value {
    let registry = Registry::with_builtins();
    let built: Arc<dyn PruningMethod> = registry
        .build(method, &json!({"sparsity": 0.5}))
        .expect("a method");
    tch::manual_seed(0);
    let ids = Tensor::randint(256, [128, 256], (Kind::Int64, Device::Cpu));
    let setup = || {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(device);
        let model = Llama::new(&vs.root(), &model_config()).expect("a model");
        (vs, model)
    };
    let mut split = Vec::new();
    let run = |(vs, model): (nn::VarStore, Llama)| {
        let mut pruner = VarStorePruner::new(&vs);
        let report = llm::oneshot(
            &model,
            &mut pruner,
            &ids,
            Arc::clone(&built),
            &OneshotOptions::default(),
            |_| {},
        )
        .expect("prunes");
        synchronize(device);
        split.push((report.forward.as_secs_f64(), report.pruning.as_secs_f64()));
    };
    let seconds = median_time(runs, setup, run);
    let (forward, pruning) = split[split.len() / 2];
    // Where the time goes: the forward passes (calibration and propagation), the same work in
    // any implementation of the algorithm, and the statistics and solves.
    json!({"seconds": seconds, "forward_seconds": forward, "pruning_seconds": pruning})
}

/// `sparsegpt_layer_4096x11008[_24][_cuda]`: SparseGPT's solve of a `[4096, 11008]` weight given
/// its Hessian (from 4096 random tokens on the CPU, 16384 on CUDA; not timed: the same GEMM on
/// both sides), 50% or 2:4.
pub fn layer(two_four: bool, device: Device, runs: usize) -> Value {
    let (weight, gram) = layer_inputs(device);
    let nm = two_four.then_some(NmPattern::TWO_FOUR);
    let method = SparseGpt::new(0.5, nm).expect("a method");
    let mask = Tensor::ones([4096, 11008], (Kind::Bool, device));
    let run = |()| {
        let _ = method.solve(&weight, &gram, &mask).expect("solves");
        synchronize(device);
    };
    // One untimed call first on CUDA (cuSOLVER's and cuBLAS's handles, the allocator).
    if device != Device::Cpu {
        run(());
    }
    json!({"seconds": median_time(runs, || (), run)})
}

/// The weight and `X^T X` of the layer rows, the same on both sides (seeded normal draws).
fn layer_inputs(device: Device) -> (Tensor, Tensor) {
    tch::manual_seed(0);
    let tokens = if device == Device::Cpu { 4096 } else { 16384 };
    let weight = Tensor::randn([4096, 11008], (Kind::Float, device));
    let x = Tensor::randn([tokens, 11008], (Kind::Float, device));
    let gram = x.tr().matmul(&x);
    (weight, gram)
}

fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}
