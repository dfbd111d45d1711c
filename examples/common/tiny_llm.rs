//! The tiny byte-level Llama of the one-shot example: training it on the Python standard
//! library, and pruning it with each method at each sparsity.

use crate::corpus::Corpus;
use anyhow::{Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};
use tchprune::llm::{self, Llama, LlamaConfig, OneshotOptions};
use tchprune::{PruningMethod, VarStorePruner};

/// The model: vocabulary of the 256 bytes, hidden 256, 4 blocks of 4 heads, MLP 688, context
/// 256, untied (3.3M parameters, 28 Linear layers in the blocks).
pub fn model_config() -> LlamaConfig {
    LlamaConfig::byte_level(256, 4, 4, 688, 256)
}

/// How to train.
#[derive(Clone, Debug)]
pub struct Training {
    /// AdamW steps in all (a model trained part of the way continues).
    pub steps: u64,
    /// Sequences per step.
    pub batch: i64,
    /// Tokens per sequence.
    pub seqlen: i64,
    /// Peak learning rate (linear warm-up over 200 steps, cosine decay to a tenth).
    pub learning_rate: f64,
    /// Stop after this long even if `steps` are not done (the CPU's budget).
    pub budget: Duration,
    /// Seed of the weights and the batches.
    pub seed: i64,
}

/// What training did.
#[derive(Clone, Debug)]
pub struct Trained {
    /// Steps done in all.
    pub steps: u64,
    /// Steps done by this run.
    pub new_steps: u64,
    /// Mean loss of the last 50 steps of this run (NaN when it ran none).
    pub loss: f64,
}

/// Trains the model in `dir` (created when absent: `dir/model` is a Hugging Face directory,
/// `dir/training.json` the steps done) up to `training.steps`, on `device`, then saves it.
pub fn train(
    dir: &Path,
    corpus: &Corpus,
    training: &Training,
    device: Device,
    mut log: impl FnMut(u64, f64),
) -> Result<Trained> {
    let model_dir = dir.join("model");
    let state_file = dir.join("training.json");
    let done: u64 = match std::fs::read(&state_file) {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)?["steps"]
            .as_u64()
            .unwrap_or(0),
        Err(_) => 0,
    };
    if done >= training.steps && model_dir.exists() {
        return Ok(Trained {
            steps: done,
            new_steps: 0,
            loss: f64::NAN,
        });
    }
    tch::manual_seed(training.seed);
    let (vs, model) = match model_dir.exists() {
        true => {
            let loaded = Llama::from_directory(&model_dir, Some(Kind::Float), device)?;
            (loaded.vs, loaded.model)
        }
        false => {
            let vs = nn::VarStore::new(device);
            let model = Llama::new(&vs.root(), &model_config())?;
            (vs, model)
        }
    };
    let mut opt = nn::AdamW {
        beta1: 0.9,
        beta2: 0.95,
        wd: 0.1,
        eps: 1e-8,
        amsgrad: false,
    }
    .build(&vs, training.learning_rate)?;
    let data = Tensor::from_slice(&corpus.train)
        .to_kind(Kind::Int64)
        .to_device(device);
    let span = corpus.train.len() as i64 - training.seqlen - 1;
    let offsets = Tensor::arange(training.seqlen + 1, (Kind::Int64, device)).unsqueeze(0);
    let started = Instant::now();
    let mut step = done;
    let mut recent = Vec::new();
    while step < training.steps && started.elapsed() < training.budget {
        let lr = learning_rate(step, training);
        opt.set_lr(lr);
        let starts = Tensor::randint(span, [training.batch, 1], (Kind::Int64, device));
        let batch = data
            .index_select(0, &(starts + &offsets).view([-1]))
            .view([training.batch, -1]);
        let loss = model.loss(&batch);
        opt.backward_step_clip_norm(&loss, 1.0);
        step += 1;
        if step.is_multiple_of(50) || step == training.steps {
            let value = loss.double_value(&[]);
            recent.push(value);
            log(step, value);
        }
    }
    let trained = Trained {
        steps: step,
        new_steps: step - done,
        loss: recent.last().copied().unwrap_or(f64::NAN),
    };
    // Saved beside, then moved over the old copy: a run cut short keeps the last whole model.
    let staging = dir.join("model.new");
    let _ = std::fs::remove_dir_all(&staging);
    model.save_new(&vs, &staging, None)?;
    let _ = std::fs::remove_dir_all(&model_dir);
    std::fs::rename(&staging, &model_dir)?;
    std::fs::write(&state_file, json!({"steps": step}).to_string())?;
    Ok(trained)
}

fn learning_rate(step: u64, training: &Training) -> f64 {
    let warmup = 200.0;
    let s = step as f64;
    if s < warmup {
        return training.learning_rate * (s + 1.0) / warmup;
    }
    let progress = ((s - warmup) / (training.steps as f64 - warmup).max(1.0)).min(1.0);
    training.learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
}

/// `count` windows of `seqlen` bytes spread evenly over `bytes`: the fixed evaluation set.
pub fn eval_windows(bytes: &[u8], count: i64, seqlen: i64) -> Tensor {
    let span = bytes.len() as i64 - seqlen;
    let ids: Vec<i64> = (0..count)
        .flat_map(|i| {
            let start = (i * span / (count - 1).max(1)) as usize;
            bytes[start..start + seqlen as usize]
                .iter()
                .map(|&b| b as i64)
        })
        .collect();
    Tensor::from_slice(&ids).view([count, seqlen])
}

/// One pruning setting: a sparsity, or 2:4.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Setting {
    /// This fraction of each layer.
    Sparsity(f64),
    /// 2 of every 4 consecutive inputs.
    TwoFour,
}

impl Setting {
    /// The column title.
    pub fn title(self) -> String {
        match self {
            Setting::Sparsity(s) => format!("{:.0}%", s * 100.0),
            Setting::TwoFour => "2:4".to_owned(),
        }
    }

    /// The method's JSON arguments.
    pub fn arguments(self) -> serde_json::Value {
        match self {
            Setting::Sparsity(s) => json!({"sparsity": s}),
            Setting::TwoFour => json!({"nm": "2:4"}),
        }
    }
}

/// The perplexity of one method at one setting.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// `magnitude`, `wanda` or `sparsegpt`.
    pub method: String,
    /// The setting.
    pub setting: Setting,
    /// Perplexity on the evaluation windows.
    pub perplexity: f64,
    /// Wall time of the pruning (tchprune's `oneshot`).
    pub seconds: f64,
    /// The PyTorch reference's perplexity and wall time, when it ran.
    pub reference: Option<(f64, f64)>,
    /// llm-compressor's perplexity and wall time, when it ran.
    pub llmcompressor: Option<(f64, f64)>,
}

/// Prunes a fresh copy of the model in `model_dir` with `method` at `setting` on `device`,
/// calibrated on `calibration`; returns the perplexity on `eval` and the seconds taken.
pub fn prune_and_evaluate(
    model_dir: &Path,
    method: &str,
    setting: Setting,
    calibration: &Tensor,
    eval: &Tensor,
    device: Device,
) -> Result<(f64, f64)> {
    let loaded = Llama::from_directory(model_dir, Some(Kind::Float), device)?;
    let registry = tchprune::Registry::with_builtins();
    let built: Arc<dyn PruningMethod> = registry.build(method, &setting.arguments())?;
    let mut pruner = VarStorePruner::new(&loaded.vs);
    let started = Instant::now();
    llm::oneshot(
        &loaded.model,
        &mut pruner,
        calibration,
        built,
        &OneshotOptions::default(),
        |_| {},
    )?;
    let seconds = started.elapsed().as_secs_f64();
    Ok((llm::perplexity(&loaded.model, eval, 16)?, seconds))
}

/// The PyTorch reference (`host/tests/oracle/oneshot_reference.py`, run by `python`) on the
/// same model and windows, every method at every setting in one process; the weights it gives
/// are evaluated by the same perplexity code. Returns, in the order of `outcomes`, the
/// perplexity and the reference's own wall time of each.
pub fn reference_table(
    python: &Path,
    model_dir: &Path,
    outcomes: &[Outcome],
    calibration: &Tensor,
    eval: &Tensor,
    device: Device,
) -> Result<Vec<(f64, f64)>> {
    let scratch = tempfile::tempdir()?;
    let ids = scratch.path().join("ids.safetensors");
    Tensor::write_safetensors(&[("input_ids", calibration)], &ids)?;
    let torch_device = match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_owned(),
    };
    let status = std::process::Command::new(python)
        .arg(reference_script())
        .arg("table")
        .arg(model_dir)
        .arg(&ids)
        .arg(scratch.path())
        .arg(&torch_device)
        .status()
        .with_context(|| format!("running {}", python.display()))?;
    anyhow::ensure!(status.success(), "the reference failed");
    let loaded = Llama::from_directory(model_dir, Some(Kind::Float), device)?;
    let variables = loaded.vs.variables();
    let dense: Vec<(String, Tensor)> = variables
        .iter()
        .map(|(k, v)| (k.clone(), v.copy()))
        .collect();
    outcomes
        .iter()
        .map(|o| {
            let tag = match o.setting {
                Setting::Sparsity(s) => format!("{:.0}", s * 100.0),
                Setting::TwoFour => "24".to_owned(),
            };
            let file = scratch
                .path()
                .join(format!("{}-{tag}.safetensors", o.method));
            evaluate_weights(&loaded, &dense, &file, eval)
        })
        .collect()
}

/// llm-compressor's `oneshot` (`bench/llmcompressor_bench.py`, run by `python`, the venv of
/// `scripts/llmcompressor_venv.sh`) on the same model and windows for Wanda and SparseGPT, its
/// weights evaluated by the same perplexity code: `(method, setting) -> (perplexity, seconds)`.
pub fn llmcompressor_table(
    python: &Path,
    model_dir: &Path,
    outcomes: &[Outcome],
    calibration: &Tensor,
    eval: &Tensor,
) -> Result<Vec<Option<(f64, f64)>>> {
    let scratch = tempfile::tempdir()?;
    let ids = scratch.path().join("ids.safetensors");
    Tensor::write_safetensors(&[("input_ids", calibration)], &ids)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/llmcompressor_bench.py");
    let loaded = Llama::from_directory(model_dir, Some(Kind::Float), Device::Cpu)?;
    let variables = loaded.vs.variables();
    let dense: Vec<(String, Tensor)> = variables
        .iter()
        .map(|(k, v)| (k.clone(), v.copy()))
        .collect();
    outcomes
        .iter()
        .map(|o| {
            if o.method == "magnitude" {
                return Ok(None);
            }
            let (sparsity, nm) = match o.setting {
                Setting::Sparsity(s) => (s.to_string(), "none"),
                Setting::TwoFour => ("0.5".to_owned(), "2:4"),
            };
            let out = scratch.path().join("out.safetensors");
            let output = std::process::Command::new(python)
                .arg(&script)
                .arg(model_dir)
                .arg(&ids)
                .args([o.method.as_str(), &sparsity, nm])
                .arg(&out)
                .output()
                .with_context(|| format!("running {}", python.display()))?;
            anyhow::ensure!(
                output.status.success(),
                "llm-compressor failed on {} {}: {}",
                o.method,
                o.setting.title(),
                String::from_utf8_lossy(&output.stderr)
                    .lines()
                    .last()
                    .unwrap_or_default()
            );
            evaluate_weights(&loaded, &dense, &out, eval).map(Some)
        })
        .collect()
}

/// The perplexity on `eval` of the model in `loaded` with the weights of the safetensors file
/// `weights` over its `dense` ones, and the `seconds` its metadata records.
fn evaluate_weights(
    loaded: &llm::LoadedLlama,
    dense: &[(String, Tensor)],
    weights: &Path,
    eval: &Tensor,
) -> Result<(f64, f64)> {
    let checkpoint = tchprune::checkpoint::read(weights)?;
    let seconds = checkpoint
        .metadata
        .get("seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN);
    let variables = loaded.vs.variables();
    tch::no_grad(|| {
        for (key, value) in dense.iter().chain(&checkpoint.tensors) {
            variables[key].shallow_clone().copy_(value);
        }
    });
    Ok((llm::perplexity(&loaded.model, eval, 16)?, seconds))
}

/// The reference script of the repository (`TCHPRUNE_REFERENCE_SCRIPT` where the example runs
/// on another machine than it was built on).
pub fn reference_script() -> PathBuf {
    match std::env::var_os("TCHPRUNE_REFERENCE_SCRIPT") {
        Some(path) => PathBuf::from(path),
        None => {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/tests/oracle/oneshot_reference.py")
        }
    }
}
