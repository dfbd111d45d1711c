//! One-shot pruning of a language model with calibration data: the layer-sequential driver of
//! SparseGPT and Wanda.
//!
//! The decoder blocks are pruned one after the other. Block `b` is calibrated on the outputs of
//! blocks `0..b` *as already pruned*, so that each block's reconstruction (SparseGPT) corrects
//! the errors the blocks before it made: the calibration sequences are embedded once, run
//! through block `b` with its seven Linear layers' input statistics recorded in one pass, the
//! seven weights pruned through the mask engine (the `VarStorePruner` front end: plan, check,
//! commit), and the block run again to give the next block its inputs. Only one block's
//! activations (`samples x seqlen x hidden`) and statistics live at a time: for a 4096-wide
//! block, the three `X^T X` of 64 MiB and one of 484 MiB that its inputs share (see
//! [`Calibration`]).
//!
//! This is the order of the SparseGPT and Wanda papers' code and of llm-compressor's
//! sequential pipeline, so the same calibration windows give the same weights (the test checks
//! that against a PyTorch reference of the same driver).

use super::llama::Llama;
use crate::calibration::Calibration;
use crate::error::{PruneError, Result};
use crate::method::PruningMethod;
use crate::prune::{self, Prunable};
use crate::VarStorePruner;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::Tensor;

/// What [`oneshot`] reports after each step, for a progress bar.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// Blocks finished.
    pub blocks_done: usize,
    /// Blocks in all.
    pub blocks: usize,
    /// Layers pruned so far.
    pub layers_done: usize,
}

/// How [`oneshot`] runs.
#[derive(Clone, Debug)]
pub struct OneshotOptions {
    /// Sequences per forward pass (memory against speed; the result does not depend on it).
    pub batch_size: i64,
    /// The layers to prune, relative to a block (`self_attn.q_proj`...); all seven when empty.
    pub layers: Vec<String>,
}

impl Default for OneshotOptions {
    fn default() -> Self {
        Self {
            batch_size: 8,
            layers: Vec::new(),
        }
    }
}

/// What [`oneshot`] did.
#[derive(Clone, Debug, Default)]
pub struct OneshotReport {
    /// The weights pruned, in order.
    pub pruned: Vec<String>,
    /// Time spent running blocks forward (calibration and propagation).
    pub forward: Duration,
    /// Time spent computing masks and new weights.
    pub pruning: Duration,
}

/// Prunes every Linear layer of `model`'s decoder blocks with `method`, block after block, each
/// calibrated on `calibration` (`[samples, seqlen]` token ids) as it comes out of the blocks
/// already pruned. `pruner` holds the model's `VarStore`; the embeddings and `lm_head` are left
/// dense. `progress` is called after each block.
///
/// A method that needs no statistics (magnitude) skips the calibration passes. On error, the
/// blocks before the one named in the error stay pruned and the rest are untouched.
///
/// ```no_run
/// use std::sync::Arc;
/// use tch::{Device, Kind, Tensor};
/// use tchprune::llm::{self, Llama, OneshotOptions};
/// use tchprune::method::SparseGpt;
/// use tchprune::VarStorePruner;
///
/// let loaded = Llama::from_directory("my-llama", Some(Kind::BFloat16), Device::Cuda(0))?;
/// let mut pruner = VarStorePruner::new(&loaded.vs);
/// let tokens: Vec<i64> = std::fs::read("corpus.txt").unwrap().iter().map(|&b| b as i64).collect();
/// let windows: Tensor = llm::random_windows(&tokens, 128, 256, 0)?;
/// let method = Arc::new(SparseGpt::new(0.5, None)?);
/// llm::oneshot(&loaded.model, &mut pruner, &windows, method, &OneshotOptions::default(), |p| {
///     eprintln!("block {}/{}", p.blocks_done, p.blocks)
/// })?;
/// loaded.save("my-llama-50", None)?; // same layout; save_compressed for compressed-tensors
/// # Ok::<(), tchprune::PruneError>(())
/// ```
pub fn oneshot(
    model: &Llama,
    pruner: &mut VarStorePruner,
    calibration: &Tensor,
    method: Arc<dyn PruningMethod>,
    options: &OneshotOptions,
    mut progress: impl FnMut(&Progress),
) -> Result<OneshotReport> {
    let (samples, seqlen) = calibration
        .size2()
        .map_err(|_| PruneError::InvalidArgument {
            method: "oneshot".to_owned(),
            argument: "calibration".to_owned(),
            reason: format!(
                "token ids [samples, seqlen] expected, got shape {:?}",
                calibration.size()
            ),
        })?;
    if samples == 0 || seqlen == 0 {
        return Err(PruneError::InvalidArgument {
            method: "oneshot".to_owned(),
            argument: "calibration".to_owned(),
            reason: "no calibration tokens".to_owned(),
        });
    }
    let layers: Vec<String> = match options.layers.is_empty() {
        true => super::llama::block_linear_names()
            .iter()
            .map(|s| s.to_string())
            .collect(),
        false => options.layers.clone(),
    };
    let needs = method.needs();
    let mut report = OneshotReport::default();
    let blocks = model.blocks();
    tch::no_grad(|| -> Result<()> {
        let device = model.device();
        let ids = calibration.f_to_device(device)?;
        let mut hidden = model.embed(&ids);
        let rope = model.rope(seqlen, hidden.kind(), device);
        let batch = options.batch_size.max(1);
        for (b, block) in blocks.iter().enumerate() {
            let paths: Vec<String> = layers
                .iter()
                .map(|l| format!("model.layers.{b}.{l}.weight"))
                .collect();
            let collector = Calibration::new(needs);
            if !needs.is_none() {
                collector.only(Some(&paths));
                let started = Instant::now();
                for start in (0..samples).step_by(batch as usize) {
                    let x = hidden.f_narrow(0, start, batch.min(samples - start))?;
                    block.observe(&x, &rope, &collector);
                }
                collector.check()?;
                report.forward += started.elapsed();
            }
            let started = Instant::now();
            for path in &paths {
                match needs.is_none() {
                    true => prune::apply(pruner, path, Arc::clone(&method), None)?,
                    false => {
                        let stats = collector.statistics(path)?.ok_or_else(|| {
                            PruneError::UnknownParameter {
                                path: path.clone(),
                                hint: ": no such Linear layer was seen in the block's forward pass"
                                    .to_owned(),
                            }
                        })?;
                        pruner.prune_calibrated(path, Arc::clone(&method), &stats)?;
                    }
                }
                report.pruned.push(path.clone());
            }
            synchronize(device);
            report.pruning += started.elapsed();
            collector.clear();
            let started = Instant::now();
            let mut outputs = Vec::new();
            for start in (0..samples).step_by(batch as usize) {
                let x = hidden.f_narrow(0, start, batch.min(samples - start))?;
                outputs.push(block.forward(&x, &rope, None));
            }
            hidden = Tensor::f_cat(&outputs, 0)?;
            drop(outputs);
            synchronize(device);
            report.forward += started.elapsed();
            progress(&Progress {
                blocks_done: b + 1,
                blocks: blocks.len(),
                layers_done: report.pruned.len(),
            });
        }
        Ok(())
    })?;
    Ok(report)
}

/// Waits for the device's queued work, so that times measure it.
fn synchronize(device: tch::Device) {
    if let tch::Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

/// The perplexity of `model` on `ids` (`[samples, seqlen]`): `exp` of the mean next-token
/// cross-entropy over every predicted position, in batches of `batch_size` sequences.
pub fn perplexity(model: &Llama, ids: &Tensor, batch_size: i64) -> Result<f64> {
    let (samples, seqlen) = ids.size2()?;
    if seqlen < 2 || samples == 0 {
        return Err(PruneError::InvalidArgument {
            method: "perplexity".to_owned(),
            argument: "ids".to_owned(),
            reason: "at least one sequence of two tokens is needed".to_owned(),
        });
    }
    tch::no_grad(|| {
        let device = model.device();
        let mut total = 0.0;
        for start in (0..samples).step_by(batch_size.max(1) as usize) {
            let x = ids
                .f_narrow(0, start, batch_size.max(1).min(samples - start))?
                .f_to_device(device)?;
            let rows = x.size()[0];
            total += model.loss(&x).f_double_value(&[])? * (rows * (seqlen - 1)) as f64;
        }
        Ok((total / (samples * (seqlen - 1)) as f64).exp())
    })
}
