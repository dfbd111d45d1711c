//! `tchprune-bench`: tchprune and PyTorch 2.11 on the same workloads, tensors and machine, in
//! one run. Prints one table (workload, PyTorch, tchprune, ratio, target) and writes it as JSON
//! and Markdown. A benchmark, not a test: nothing here fails on a missed target.

mod huge;
mod oneshot;
mod report;
mod workloads;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// Benchmarks tchprune against PyTorch side by side.
#[derive(Debug, Parser)]
struct Args {
    /// Timed runs per workload (the median is reported; the slowest workloads use half).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Only these workloads (ids as in the table); a partial run does not touch BENCHMARKS.md.
    #[arg(long)]
    only: Vec<String>,
    /// Also prune more than 2^31 entries globally (bf16; minutes, about 12 GiB).
    #[arg(long)]
    huge: bool,
    /// Where BENCHMARKS.md and bench/results.json go.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Internal: run the >2^31-entry workload in this process and print its JSON.
    #[arg(long, hide = true)]
    huge_worker: bool,
    /// Internal: run this workload in this process and print its JSON.
    #[arg(long, hide = true)]
    worker: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.huge_worker {
        println!("{}", huge::run()?);
        return Ok(());
    }
    if let Some(id) = &args.worker {
        println!("{}", workloads::run(id, args.runs)?);
        return Ok(());
    }
    let cuda = tch::Cuda::is_available();
    let selected: Vec<&report::Workload> = report::WORKLOADS
        .iter()
        .filter(|w| args.only.is_empty() || args.only.iter().any(|o| o == w.id))
        .filter(|w| {
            if w.gpu && !cuda {
                eprintln!("skipping {}: no CUDA device", w.id);
            }
            cuda || !w.gpu
        })
        .collect();
    if selected.is_empty() {
        eprintln!("no workload to run");
        return Ok(());
    }
    let ids = |kept_memory: bool| -> Vec<&str> {
        selected
            .iter()
            .filter(|w| w.kept_memory == kept_memory)
            .map(|w| w.id)
            .collect()
    };
    let (as_is, kept_memory) = (ids(false), ids(true));
    eprintln!(
        "PyTorch: {} workloads, {} runs each...",
        selected.len(),
        args.runs
    );
    let mut pytorch = pytorch_results(args.runs, &as_is, false)?;
    if !kept_memory.is_empty() {
        let tuned = pytorch_results(args.runs, &kept_memory, true)?;
        merge(&mut pytorch, tuned);
    }
    let mut ours = serde_json::Map::new();
    for id in &as_is {
        eprintln!("tchprune: {id}...");
        ours.insert(id.to_string(), workloads::run(id, args.runs)?);
    }
    for id in &kept_memory {
        eprintln!("tchprune: {id} (in a child process)...");
        let mut child = Command::new(std::env::current_exe()?);
        child
            .args(["--worker", id, "--runs", &args.runs.to_string()])
            .env(report::KEEP_FREED_MEMORY.0, report::KEEP_FREED_MEMORY.1);
        ours.insert(id.to_string(), json_output(&mut child, id)?);
    }
    let huge = if args.huge {
        eprintln!("tchprune: global pruning of more than 2^31 entries (in a child process)...");
        Some(huge::run_in_child()?)
    } else {
        None
    };
    let machine = report::machine(&pytorch_version()?);
    let rows = report::rows(&pytorch, &Value::Object(ours), huge.as_ref());
    println!("{}", report::table(&rows));
    let full = args.only.is_empty();
    report::write(&args.root, &rows, &machine, full)?;
    Ok(())
}

fn python() -> Result<PathBuf> {
    std::env::var_os("TCHPRUNE_PYTHON")
        .map(PathBuf::from)
        .context("TCHPRUNE_PYTHON is not set: run scripts/bootstrap.sh (scripts/bench.sh does)")
}

/// The PyTorch side's results for `ids` (none when `ids` is empty), from a Python process whose
/// malloc keeps freed memory when `kept_memory`.
fn pytorch_results(runs: usize, ids: &[&str], kept_memory: bool) -> Result<Value> {
    if ids.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    // TCHPRUNE_BENCH_SCRIPT: where the script is on a machine the binary was copied to.
    let script = std::env::var_os("TCHPRUNE_BENCH_SCRIPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/pytorch_bench.py").into());
    let mut command = Command::new(python()?);
    command.arg(script).arg(runs.to_string()).args(ids);
    if kept_memory {
        command.env(report::KEEP_FREED_MEMORY.0, report::KEEP_FREED_MEMORY.1);
    }
    json_output(&mut command, "the PyTorch side")
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

/// Runs `command` and parses what it prints as JSON; `what` names it in errors.
pub(crate) fn json_output(command: &mut Command, what: &str) -> Result<Value> {
    let output = command
        .output()
        .with_context(|| format!("running {what}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn pytorch_version() -> Result<String> {
    let output = Command::new(python()?)
        .args([
            "-c",
            "import torch; print(torch.__version__, torch.get_num_threads())",
        ])
        .output()?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
