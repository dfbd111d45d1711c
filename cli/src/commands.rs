//! What each subcommand does.

use crate::args::{Command, MaskDtypeArg};
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use tchprune::checkpoint::{self, sparse_bitmask, MaskDtype};
use tchprune::layers;
use tchprune::plan::{Plan, PrunedState};
use tchprune::shrink::{self, DependencyGraph};
use tchprune::sparse;
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
        Command::Compress { input, output } => compress(&input, &output),
        Command::Decompress { input, output } => decompress(&input, &output),
        Command::Shrink {
            input,
            output,
            model,
            groups,
            print_groups,
            mask_dtype,
        } => shrink(
            &input,
            output.as_deref().filter(|_| !print_groups),
            &model,
            groups.as_deref(),
            mask_dtype,
        ),
        Command::Speed {
            file,
            batch,
            calls,
            model,
            image_size,
            json,
        } => speed(&file, batch, calls, &model, image_size, json),
        Command::Oneshot(args) => crate::oneshot::run(&args),
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

/// Refuses an output that would replace any of the files a command reads (the checkpoint, a
/// plan, its side files, a groups file, a plugin), also through a symlink or a hardlink.
fn check_apart<'a>(output: &Path, inputs: impl IntoIterator<Item = &'a Path>) -> Result<()> {
    inputs
        .into_iter()
        .filter(|input| !input.is_dir())
        .try_for_each(|input| check_distinct(input, output))
}

/// The checkpoint at `input` (sparse-bitmask weights made dense) as a pruned state.
fn read_state(input: &Path) -> Result<PrunedState> {
    let checkpoint = checkpoint::read(input)?;
    let dense =
        sparse_bitmask::into_dense(checkpoint).with_context(|| input.display().to_string())?;
    PrunedState::from_checkpoint(dense).with_context(|| input.display().to_string())
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
    let side_files = plan
        .steps
        .iter()
        .flat_map(|step| [&step.mask_file, &step.scores_file])
        .flatten();
    let read = [input, plan_path]
        .into_iter()
        .chain(plugins.iter().map(PathBuf::as_path));
    check_apart(
        output,
        read.chain(plan.plugins.iter().map(PathBuf::as_path))
            .chain(side_files.map(PathBuf::as_path)),
    )?;
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
    let pruned = state.to_checkpoint(mask_dtype.into())?;
    checkpoint::write(&pruned.tensors, &pruned.metadata, output)?;
    let keys = state.keys();
    out!(
        "{} steps applied, {} of {} parameters pruned: {}",
        plan.steps.len(),
        keys.iter().filter(|k| state.is_pruned(k)).count(),
        keys.len(),
        output.display()
    );
    exit_soon((state, pruned));
    Ok(())
}

/// A failed write to the standard output, as the command reports it.
fn stdout_error(error: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot write to the standard output: {error}")
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

/// The bytes of tensor data each form of a checkpoint takes: PyTorch's pruned pairs (masks in
/// the parameters' dtype), plain (pruning made permanent), and sparse-bitmask.
struct FormSizes {
    pruned: u64,
    plain: u64,
    sparse_bitmask: u64,
}

fn form_sizes(state: &PrunedState, rows: &[tchprune::sparsity::Sparsity]) -> FormSizes {
    let zeros: std::collections::HashMap<&str, i64> =
        rows.iter().map(|r| (r.name.as_str(), r.zeros)).collect();
    let module = state.module();
    let parameters = module.named_parameters();
    let orig_kinds: std::collections::HashMap<&str, tch::Kind> = parameters
        .iter()
        .filter_map(|(n, p)| n.strip_suffix("_orig").map(|base| (base, p.kind())))
        .collect();
    let mut sizes = FormSizes {
        pruned: 0,
        plain: 0,
        sparse_bitmask: 0,
    };
    let buffers = module.named_buffers();
    for (name, t) in parameters.iter().chain(&buffers) {
        let (shape, kind) = (t.size(), t.kind());
        let numel = t.numel() as u64;
        let plain_name = match name.strip_suffix("_mask") {
            Some(base) if state.is_pruned(base) => {
                // written in its parameter's dtype
                let element = orig_kinds.get(base).map_or(1, |k| k.elt_size_in_bytes());
                sizes.pruned += numel * element as u64;
                continue;
            }
            _ => match name.strip_suffix("_orig") {
                Some(base) if state.is_pruned(base) => base.to_owned(),
                _ => name.to_owned(),
            },
        };
        let bytes = numel * kind.elt_size_in_bytes() as u64;
        sizes.pruned += bytes;
        sizes.plain += bytes;
        let nonzeros = t.numel() as i64 - zeros.get(plain_name.as_str()).copied().unwrap_or(0);
        sizes.sparse_bitmask +=
            sparse_bitmask::compressed_bytes(&plain_name, &shape, kind, nonzeros);
    }
    sizes
}

fn stats(file: &Path, as_json: bool) -> Result<()> {
    let state = read_state(file)?;
    let rows = state.sparsity()?;
    let file_bytes = file_size(file)?;
    let sizes = form_sizes(&state, &rows);
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
        let sizes = json!({
            "file": file_bytes,
            "pruned": sizes.pruned,
            "plain": sizes.plain,
            "sparse_bitmask": sizes.sparse_bitmask,
        });
        out!(
            "{}",
            json!({"parameters": parameters, "total": row_json(total), "bytes": sizes})
        );
        return Ok(());
    }
    // Longer names overflow their column (and a width over 65,535 is not a format width).
    let width = rows
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0)
        .clamp(9, 100);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(
        out,
        "{:width$}  {:>6}  {:>12}  {:>12}  {:>8}",
        "parameter", "pruned", "zeros", "entries", "sparsity"
    )
    .map_err(stdout_error)?;
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
        )
        .map_err(stdout_error)?;
    }
    let ratio = |bytes: u64| bytes as f64 / sizes.plain.max(1) as f64;
    writeln!(
        out,
        "bytes: this file {file_bytes}; tensor data as pruned pairs {} ({:.3}x plain), plain {}, \
         sparse-bitmask {} ({:.3}x plain)",
        sizes.pruned,
        ratio(sizes.pruned),
        sizes.plain,
        sizes.sparse_bitmask,
        ratio(sizes.sparse_bitmask)
    )
    .map_err(stdout_error)?;
    out.flush().map_err(stdout_error)?;
    exit_soon(state);
    Ok(())
}

fn methods(plugins: &[PathBuf]) -> Result<()> {
    let registry = registry_with(plugins)?;
    let width = registry.iter().map(|e| e.name.len()).max().unwrap_or(0);
    for entry in registry.iter() {
        out!(
            "{:width$}  {:12}  {}  ({})",
            entry.name,
            entry.pruning_type,
            entry.origin,
            entry.description
        );
        for (argument, meaning) in &entry.arguments {
            out!("{:width$}    {argument}: {meaning}", "");
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
    out!(
        "{pruned} pruned parameters made permanent: {}",
        output.display()
    );
    exit_soon(plain);
    Ok(())
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| path.display().to_string())?
        .len())
}

fn compress(input: &Path, output: &Path) -> Result<()> {
    check_distinct(input, output)?;
    let state = read_state(input)?;
    let plain = state.finalize()?.to_checkpoint(MaskDtype::Parameter)?;
    let dense_bytes: u64 = plain
        .tensors
        .iter()
        .map(|(_, t)| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
        .sum();
    let compressed = sparse_bitmask::compress(&plain)?;
    checkpoint::write(&compressed.tensors, &compressed.metadata, output)?;
    let written = file_size(output)?;
    let sparsity = sparse_bitmask::config(&compressed)
        .and_then(|config| config["global_sparsity"].as_f64())
        .unwrap_or(0.0);
    out!(
        "compressed ({:.2}% of the weights' entries are zero): {} bytes, {:.3}x the {} bytes of \
         the dense tensors: {}",
        100.0 * sparsity,
        written,
        written as f64 / dense_bytes.max(1) as f64,
        dense_bytes,
        output.display()
    );
    exit_soon((plain, compressed));
    Ok(())
}

fn decompress(input: &Path, output: &Path) -> Result<()> {
    check_distinct(input, output)?;
    let compressed = checkpoint::read(input)?;
    if !sparse_bitmask::is_compressed(&compressed) {
        anyhow::bail!(
            "{}: no weight in the sparse-bitmask layout (no '.bitmask' tensor)",
            input.display()
        );
    }
    let dense =
        sparse_bitmask::decompress(&compressed).with_context(|| input.display().to_string())?;
    checkpoint::check_consistent(&dense).with_context(|| input.display().to_string())?;
    checkpoint::write(&dense.tensors, &dense.metadata, output)?;
    out!("decompressed: {}", output.display());
    exit_soon((compressed, dense));
    Ok(())
}

impl From<MaskDtypeArg> for MaskDtype {
    fn from(arg: MaskDtypeArg) -> Self {
        match arg {
            MaskDtypeArg::Same => MaskDtype::Parameter,
            MaskDtypeArg::Bool => MaskDtype::Bool,
        }
    }
}

/// The largest groups file read.
const MAX_GROUPS_BYTES: u64 = 16 << 20;

/// Entries of the weights (everything but BatchNorm's running statistics).
fn weight_entries(shapes: &std::collections::BTreeMap<String, Vec<i64>>) -> i64 {
    (shapes.iter())
        .filter(|(k, _)| {
            !["running_mean", "running_var", "num_batches_tracked"]
                .iter()
                .any(|s| k.ends_with(s))
        })
        .map(|(_, shape)| shape.iter().product::<i64>())
        .sum()
}

/// Without `output`, prints the groups and writes nothing.
fn shrink(
    input: &Path,
    output: Option<&Path>,
    model: &str,
    groups: Option<&Path>,
    mask_dtype: MaskDtypeArg,
) -> Result<()> {
    if let Some(output) = output {
        check_apart(output, [input].into_iter().chain(groups))?;
    }
    let mut state = read_state(input)?;
    let tensors = checkpoint::state_dict_with(state.module(), MaskDtype::Bool);
    let shapes = shrink::shapes(&tensors);
    let graph = match groups {
        Some(path) => {
            let bytes = tchprune::files::read_bounded(path, MAX_GROUPS_BYTES)
                .with_context(|| path.display().to_string())?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("{}: not UTF-8 text", path.display()))?;
            DependencyGraph::from_json(&text).with_context(|| path.display().to_string())?
        }
        None => {
            shrink::trace_builtin(model, &shapes).with_context(|| input.display().to_string())?
        }
    };
    // Checked here as well as by `shrink`: `--print-groups` prints before anything shrinks.
    shrink::check_groups(&tensors, &graph).with_context(|| input.display().to_string())?;
    drop(tensors);
    let Some(output) = output else {
        out!("{}", graph.to_json());
        return Ok(());
    };
    let shrunk = state
        .shrink(&graph)
        .with_context(|| input.display().to_string())?;
    let written = state.to_checkpoint(mask_dtype.into())?;
    checkpoint::write(&written.tensors, &written.metadata, output)?;
    for group in shrunk.groups.iter().filter(|g| g.removed() > 0) {
        let coupled = match group.writers.len() {
            1 => String::new(),
            n => format!(" (+{} coupled)", n - 1),
        };
        out!(
            "{}{coupled}: {} -> {} channels",
            group.writers[0],
            group.channels,
            group.kept.len()
        );
    }
    let after = weight_entries(&shrink::shapes(&written.tensors));
    out!(
        "widths: {}",
        serde_json::to_string(&shrunk.widths).expect("widths serialize")
    );
    out!(
        "{} of {} groups shrunk, parameters {} -> {} ({:.3}x): {}",
        shrunk.groups.iter().filter(|g| g.removed() > 0).count(),
        graph.groups.len(),
        weight_entries(&shapes),
        after,
        after as f64 / weight_entries(&shapes).max(1) as f64,
        output.display()
    );
    if let Some(first) = shrunk.live_removed.first() {
        eprintln!(
            "tchprune: warning: {} removed channels were not zero in the masked model ({first}, \
             ...): the outputs change by what they carried; prune with a 'prune_groups' step to \
             remove channels exactly",
            shrunk.live_removed.len()
        );
    }
    exit_soon((state, written));
    Ok(())
}

/// Where the convolutions of `tensors` sit, by weight key: those of the built-in model
/// `model` (`auto`: the one the tensors are, if any; `none`: no convolutions) for an input of
/// `image_size` (the model's own by default).
fn convolution_sites(
    tensors: &[(String, tch::Tensor)],
    model: &str,
    image_size: Option<[i64; 2]>,
) -> Result<std::collections::HashMap<String, layers::ConvolutionSite>> {
    let known = ["auto", "none"].iter().chain(&layers::BUILTIN_MODELS);
    if !known.clone().any(|&name| name == model) {
        let names: Vec<&str> = known.copied().collect();
        anyhow::bail!(
            "no built-in model '{model}' (there are {})",
            names.join(", ")
        );
    }
    let has_convolutions = tensors.iter().any(|(_, t)| t.dim() == 4);
    if !has_convolutions && !["auto", "none"].contains(&model) {
        anyhow::bail!("no convolution weight (a 4-d tensor) in the file: it is not that model");
    }
    if model == "none" || !has_convolutions {
        return Ok(Default::default());
    }
    let name = match layers::builtin_model(model, &shrink::shapes(tensors)) {
        Ok(name) => name,
        Err(tchprune::PruneError::InvalidGroups(why)) if model == "auto" => {
            eprintln!("note: convolutions not timed ({why}); --model and --image-size say which model and input");
            return Ok(Default::default());
        }
        Err(tchprune::PruneError::InvalidGroups(why)) => anyhow::bail!("{why}"),
        Err(why) => return Err(why.into()),
    };
    let [_, h, w] = layers::default_image(name);
    let sites = layers::convolution_sites(name, image_size.unwrap_or([h, w]))?;
    Ok(sites.into_iter().map(|s| (s.weight.clone(), s)).collect())
}

fn speed(
    file: &Path,
    batch: i64,
    calls: usize,
    model: &str,
    image_size: Option<[i64; 2]>,
    as_json: bool,
) -> Result<()> {
    if batch < 1 || calls < 1 {
        anyhow::bail!("--batch and --calls must be at least 1");
    }
    let plain = read_state(file)?
        .finalize()?
        .to_checkpoint(MaskDtype::Parameter)?;
    let tensors: std::collections::HashMap<&str, &tch::Tensor> =
        plain.tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let options = sparse::SpeedOptions {
        batch,
        calls,
        ..Default::default()
    };
    let pruned = |weight: &tch::Tensor| {
        weight.is_floating_point() && weight.eq(0).any().int64_value(&[]) != 0
    };
    let bias_of = |key: &str, weight: &tch::Tensor| {
        let bias_key = match key.rsplit_once('.') {
            Some((prefix, _)) => format!("{prefix}.bias"),
            None => "bias".to_owned(),
        };
        tensors
            .get(bias_key.as_str())
            .filter(|b| b.size() == [weight.size()[0]])
            .copied()
    };
    let convolutions = convolution_sites(&plain.tensors, model, image_size)
        .with_context(|| format!("{}: --model {model}", file.display()))?;
    let mut choices = Vec::new();
    for (key, weight) in &plain.tensors {
        if !pruned(weight) {
            continue;
        }
        let bias = bias_of(key, weight);
        let choice = match (weight.dim(), convolutions.get(key.as_str())) {
            (2, _) => sparse::measure(key, weight, bias, &options).map(|(_, c)| c),
            (4, Some(site)) => {
                let [h, w] = site.input_size;
                let shape = [batch, weight.size()[1], h, w];
                sparse::measure_conv(key, weight, bias, site.config, shape, &options)
                    .map(|(_, c)| c)
            }
            _ => continue,
        };
        choices.push(choice.with_context(|| format!("{}: '{key}'", file.display()))?);
    }
    let dense: f64 = choices.iter().map(|c| c.dense_seconds).sum();
    let chosen: f64 = (choices.iter())
        .map(|c| {
            if c.sparse {
                c.sparse_seconds
            } else {
                c.dense_seconds
            }
        })
        .sum();
    if as_json {
        let layers: Vec<_> = (choices.iter())
            .map(|c| {
                json!({"weight": c.weight, "shape": c.shape, "dtype": format!("{:?}", c.dtype),
                       "sparsity": c.sparsity, "dense_seconds": c.dense_seconds, "sparse_seconds": c.sparse_seconds, "spread": c.spread,
                       "form": if c.sparse { "sparse" } else { "dense" }})
            })
            .collect();
        let total = json!({"dense_seconds": dense, "chosen_seconds": chosen});
        out!(
            "{}",
            json!({"batch": batch, "layers": layers, "total": total})
        );
        return Ok(());
    }
    if choices.is_empty() {
        out!(
            "no pruned linear or convolution weight (with zeros, of a layer it can time) in {}",
            file.display()
        );
        return Ok(());
    }
    let width = choices
        .iter()
        .map(|c| c.weight.len())
        .max()
        .unwrap_or(6)
        .clamp(6, 100);
    out!(
        "{:width$}  {:>14}  {:>8}  {:>8}  {:>10}  {:>10}  {:>7}  {:>6}  form (batch {batch})",
        "weight",
        "shape",
        "dtype",
        "sparsity",
        "dense",
        "sparse",
        "speedup",
        "spread"
    );
    let ms = |s: f64| format!("{:.3} ms", s * 1e3);
    for c in &choices {
        out!(
            "{:width$}  {:>14}  {:>8}  {:>7.2}%  {:>10}  {:>10}  {:>6.2}x  {:>5.0}%  {}",
            c.weight,
            format!("{:?}", c.shape),
            format!("{:?}", c.dtype),
            100.0 * c.sparsity,
            ms(c.dense_seconds),
            ms(c.sparse_seconds),
            c.speedup(),
            100.0 * c.spread,
            if c.sparse { "sparse" } else { "dense" }
        );
    }
    out!(
        "total: dense {}, each layer in its faster form {} ({:.2}x)",
        ms(dense),
        ms(chosen),
        dense / chosen.max(f64::MIN_POSITIVE)
    );
    Ok(())
}
