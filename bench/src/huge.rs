//! Global magnitude pruning of more than 2^31 entries, which PyTorch cannot do (its global
//! pruning concatenates everything into one tensor and selects with `topk`).

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use tchprune::method::L1Unstructured;
use tchprune::{checkpoint::module_from_state_dict, prune};

const TENSORS: i64 = 16;
const SHAPE: [i64; 2] = [16384, 8704];
const AMOUNT: f64 = 0.5;

/// Runs the workload here and reports time, entries and peak memory.
pub fn run() -> Result<Value> {
    tch::manual_seed(0);
    let state: Vec<(String, Tensor)> = (0..TENSORS)
        .map(|i| {
            (
                format!("layer{i}.weight"),
                Tensor::randn(SHAPE, (Kind::BFloat16, Device::Cpu)),
            )
        })
        .collect();
    let entries: i64 = state.iter().map(|(_, t)| t.numel() as i64).sum();
    let keys: Vec<String> = state.iter().map(|(k, _)| k.clone()).collect();
    let mut model = module_from_state_dict(state)?;
    let paths: Vec<&str> = keys.iter().map(String::as_str).collect();
    let start = Instant::now();
    prune::global_unstructured(
        &mut model,
        &paths,
        Arc::new(L1Unstructured::new(AMOUNT)?),
        &[],
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let pruned: i64 = model
        .named_buffers()
        .iter()
        .map(|(_, mask)| mask.logical_not().sum(Kind::Int64).int64_value(&[]))
        .sum();
    anyhow::ensure!(
        pruned == (entries as f64 * AMOUNT).round() as i64,
        "pruned {pruned} of {entries}"
    );
    Ok(
        json!({"seconds": seconds, "entries": entries, "amount": AMOUNT, "peak_rss_bytes": peak_rss()?}),
    )
}

/// Runs the workload in a child process, so that its peak memory is its own.
pub fn run_in_child() -> Result<Value> {
    let mut child = std::process::Command::new(std::env::current_exe()?);
    child.arg("--huge-worker");
    crate::json_output(&mut child, "the >2^31 workload")
}

fn peak_rss() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse()?;
    Ok(kib * 1024)
}
