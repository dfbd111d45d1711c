//! What each subcommand does.

use crate::args::{Command, MaskDtypeArg};
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use tchprune::checkpoint::{self, MaskDtype};
use tchprune::plan::{Plan, PrunedState};
use tchprune::Registry;

/// Inputs with at least this many entries take seconds: they get a progress bar.
const PROGRESS_MIN_ENTRIES: usize = 20_000_000;

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Apply {
            input,
            plan,
            output,
            plugins,
            mask_dtype,
        } => apply(&input, &plan, &output, &plugins, mask_dtype),
        Command::Stats { file, json } => stats(&file, json),
        Command::Methods { plugins } => methods(&plugins),
        Command::Finalize { input, output } => finalize(&input, &output),
        Command::Demo => tchprune_examples::tutorial::run(&mut std::io::stdout().lock()),
    }
}

fn registry_with(plugins: &[PathBuf]) -> Result<Registry> {
    let mut registry = Registry::with_builtins();
    load_plugins(&mut registry, plugins)?;
    Ok(registry)
}

/// Loads each plugin file, or every plugin of each directory.
fn load_plugins(registry: &mut Registry, plugins: &[PathBuf]) -> Result<()> {
    for plugin in plugins {
        if plugin.is_dir() {
            registry.load_plugin_dir(plugin)?;
        } else {
            registry.load_plugin(plugin)?;
        }
    }
    Ok(())
}

/// Refuses outputs that would replace the input (also through a symlink or a hardlink) or a
/// file that is not a regular file.
fn check_distinct(input: &Path, output: &Path) -> Result<()> {
    Ok(tchprune::files::check_distinct(input, output)?)
}

fn read_state(input: &Path) -> Result<PrunedState> {
    let checkpoint = checkpoint::read(input)?;
    PrunedState::from_checkpoint(checkpoint).with_context(|| input.display().to_string())
}

fn apply(
    input: &Path,
    plan_path: &Path,
    output: &Path,
    plugins: &[PathBuf],
    mask_dtype: MaskDtypeArg,
) -> Result<()> {
    check_distinct(input, output)?;
    let plan = Plan::from_file(plan_path)?;
    let mut registry = registry_with(plugins)?;
    load_plugins(&mut registry, &plan.plugins)?;
    let state = read_state(input)?;
    let module = state.module();
    let entries: usize = (module.named_parameters().iter())
        .chain(&module.named_buffers())
        .map(|(_, t)| t.numel())
        .sum();
    let bar = progress_bar(entries);
    let state = state.apply_plan(&plan, &registry, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let mask_dtype = match mask_dtype {
        MaskDtypeArg::Same => MaskDtype::Parameter,
        MaskDtypeArg::Bool => MaskDtype::Bool,
    };
    let pruned = state.to_checkpoint(mask_dtype)?;
    checkpoint::write(&pruned.tensors, &pruned.metadata, output)?;
    let keys = state.keys();
    println!(
        "{} steps applied, {} of {} parameters pruned: {}",
        plan.steps.len(),
        keys.iter().filter(|k| state.is_pruned(k)).count(),
        keys.len(),
        output.display()
    );
    exit_soon((state, pruned));
    Ok(())
}

/// The process ends right after a command: freeing a large checkpoint's tensors one by one
/// would take longer than the operating system does all at once.
fn exit_soon<T>(value: T) {
    std::mem::forget(value);
}

fn progress_bar(entries: usize) -> ProgressBar {
    if entries < PROGRESS_MIN_ENTRIES || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} pruning [{bar:40}] {pos}/{len} parameters ({elapsed})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

fn stats(file: &Path, as_json: bool) -> Result<()> {
    let state = read_state(file)?;
    let rows = state.sparsity()?;
    if as_json {
        let row_json = |row: &tchprune::sparsity::Sparsity| {
            json!({
                "zeros": row.zeros,
                "total": row.total,
                "sparsity": row.percent() / 100.0,
            })
        };
        let (total, params) = rows.split_last().expect("sparsity ends with the total");
        let parameters: Vec<_> = params
            .iter()
            .map(|row| {
                let mut value = row_json(row);
                value["key"] = json!(row.name);
                value["pruned"] = json!(state.is_pruned(&row.name));
                value["history"] =
                    json!(state.history().get(&row.name).cloned().unwrap_or_default());
                value
            })
            .collect();
        println!(
            "{}",
            json!({"parameters": parameters, "total": row_json(total)})
        );
        return Ok(());
    }
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(9);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(
        out,
        "{:width$}  {:>6}  {:>12}  {:>12}  {:>8}",
        "parameter", "pruned", "zeros", "entries", "sparsity"
    )?;
    for row in &rows {
        let (name, pruned) = match row.name.as_str() {
            "global" => ("total", ""),
            name => (name, if state.is_pruned(name) { "yes" } else { "no" }),
        };
        writeln!(
            out,
            "{name:width$}  {pruned:>6}  {:>12}  {:>12}  {:>7.2}%",
            row.zeros,
            row.total,
            row.percent()
        )?;
    }
    out.flush()?;
    exit_soon(state);
    Ok(())
}

fn methods(plugins: &[PathBuf]) -> Result<()> {
    let registry = registry_with(plugins)?;
    let width = registry.iter().map(|e| e.name.len()).max().unwrap_or(0);
    for entry in registry.iter() {
        println!(
            "{:width$}  {:12}  {}  ({})",
            entry.name, entry.pruning_type, entry.origin, entry.description
        );
        for (argument, meaning) in &entry.arguments {
            println!("{:width$}    {argument}: {meaning}", "");
        }
    }
    Ok(())
}

fn finalize(input: &Path, output: &Path) -> Result<()> {
    check_distinct(input, output)?;
    let state = read_state(input)?;
    let pruned = state.keys().iter().filter(|k| state.is_pruned(k)).count();
    let plain = state.finalize()?.to_checkpoint(MaskDtype::Parameter)?;
    checkpoint::write(&plain.tensors, &plain.metadata, output)?;
    println!(
        "{pruned} pruned parameters made permanent: {}",
        output.display()
    );
    exit_soon(plain);
    Ok(())
}
