//! `tchprune oneshot`: the command's side of one-shot pruning (calibration files, tokenizing,
//! the device, the progress bar, the output directory); the pruning is the library's
//! [`tchprune::llm::oneshot`].

use crate::args::OneshotArgs;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use tchprune::checkpoint::sparse_bitmask::SparseFormat;
use tchprune::llm::{self, Llama, OneshotOptions};
use tchprune::VarStorePruner;

/// The largest calibration file read (text or ids).
const CALIBRATION_LIMIT: u64 = 1 << 30;

pub fn run(args: &OneshotArgs) -> Result<()> {
    let started = Instant::now();
    let device = device(&args.device)?;
    let kind = match args.dtype.as_str() {
        "auto" => None,
        name => Some(
            llm::kind_from_name(name)
                .with_context(|| format!("--dtype {name}: expected auto, f32, bf16 or f16"))?,
        ),
    };
    let method = build_method(args)?;
    let loaded = Llama::from_directory(&args.model, kind, device)?;
    let ids = calibration_ids(args, loaded.source.root(), loaded.model.config().vocab_size)?;
    if let Some(path) = &args.save_calibration {
        tchprune::checkpoint::write(
            &[("input_ids".to_owned(), ids.shallow_clone())],
            &Default::default(),
            path,
        )?;
    }
    let mut pruner = VarStorePruner::new(&loaded.vs);
    let bar = progress_bar(args.quiet, loaded.model.blocks().len());
    let options = OneshotOptions {
        batch_size: args.batch_size,
        layers: Vec::new(),
    };
    let report = llm::oneshot(&loaded.model, &mut pruner, &ids, method, &options, |p| {
        bar.set_position(p.blocks_done as u64);
    })?;
    bar.finish_and_clear();
    let config = loaded.source.config().cloned();
    match args.compress {
        true => {
            let format = match args.nm.as_deref() {
                Some("2:4") => SparseFormat::TwoFourBitmask,
                _ => SparseFormat::Bitmask,
            };
            loaded.save_compressed(&args.output, format)?
        }
        false => loaded.save(&args.output, config.as_ref())?,
    }
    let stats = pruner.sparsity(&report.pruned.iter().map(String::as_str).collect::<Vec<_>>())?;
    let total = stats.last().expect("the total comes last");
    out!(
        "{} layers of {} blocks pruned with {} ({:.1}% of their weights zero) in {:.1} s on {}: {}",
        report.pruned.len(),
        loaded.model.blocks().len(),
        args.method,
        100.0 * total.zeros as f64 / total.total.max(1) as f64,
        started.elapsed().as_secs_f64(),
        match device {
            Device::Cpu => "the CPU".to_owned(),
            Device::Cuda(i) => format!("cuda:{i}"),
            other => format!("{other:?}"),
        },
        args.output.display()
    );
    Ok(())
}

fn device(name: &str) -> Result<Device> {
    Ok(match name {
        "auto" => Device::cuda_if_available(),
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other
            .strip_prefix("cuda:")
            .and_then(|i| i.parse::<usize>().ok())
        {
            Some(i) => Device::Cuda(i),
            None => bail!("--device {other}: expected auto, cpu, cuda or cuda:N"),
        },
    })
}

/// The method by name (a plugin's too) with the sparsity arguments.
fn build_method(args: &OneshotArgs) -> Result<std::sync::Arc<dyn tchprune::PruningMethod>> {
    let mut registry = tchprune::Registry::with_builtins();
    for plugin in &args.plugins {
        match plugin.is_dir() {
            true => registry.load_plugin_dir(plugin)?,
            false => registry.load_plugin(plugin)?,
        };
    }
    let mut arguments = match (&args.nm, args.sparsity) {
        (Some(nm), _) => json!({"nm": nm}),
        (None, Some(sparsity)) => json!({"sparsity": sparsity}),
        (None, None) => bail!("give --sparsity or --nm"),
    };
    if let Some(d) = args.dampening {
        arguments["dampening"] = json!(d);
    }
    if let Some(b) = args.block_size {
        arguments["block_size"] = json!(b);
    }
    Ok(registry.build(&args.method, &arguments)?)
}

/// The calibration windows `[samples, seqlen]`.
fn calibration_ids(args: &OneshotArgs, model_dir: &Path, vocab: i64) -> Result<Tensor> {
    let path = &args.calibration;
    let name = path.to_string_lossy();
    let ids = if name.ends_with(".safetensors") {
        let checkpoint = tchprune::checkpoint::read(path)?;
        let (_, ids) = checkpoint
            .tensors
            .into_iter()
            .find(|(k, _)| k == "input_ids")
            .with_context(|| format!("{name}: no tensor 'input_ids'"))?;
        if ids.dim() != 2 || !matches!(ids.kind(), Kind::Int64 | Kind::Int) {
            bail!(
                "{name}: 'input_ids' must be integer [samples, seqlen], got {:?} {:?}",
                ids.kind(),
                ids.size()
            );
        }
        ids.to_kind(Kind::Int64)
    } else if name.ends_with(".json") {
        let bytes = tchprune::files::read_bounded(path, CALIBRATION_LIMIT)?;
        let rows: Vec<Vec<i64>> = serde_json::from_slice(&bytes)
            .with_context(|| format!("{name}: not a JSON list of lists of token ids"))?;
        let seqlen = rows.first().map_or(0, Vec::len);
        if rows.is_empty() || seqlen == 0 || rows.iter().any(|r| r.len() != seqlen) {
            bail!("{name}: the sequences must be non-empty and of one length");
        }
        let flat: Vec<i64> = rows.concat();
        Tensor::from_slice(&flat).view([rows.len() as i64, seqlen as i64])
    } else {
        let text = tchprune::files::read_bounded(path, CALIBRATION_LIMIT)?;
        let tokens = tokenize(&text, model_dir, vocab).with_context(|| name.to_string())?;
        llm::random_windows(&tokens, args.samples, args.seqlen, args.seed)
            .with_context(|| format!("{name}: {} tokens", tokens.len()))?
    };
    let (min, max) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
    if min < 0 || max >= vocab {
        bail!("{name}: token ids from {min} to {max}, outside the vocabulary of {vocab}");
    }
    Ok(ids)
}

/// `text` as token ids: by the model's `tokenizer.json`, or its bytes for a 256-byte vocabulary.
fn tokenize(text: &[u8], model_dir: &Path, vocab: i64) -> Result<Vec<i64>> {
    let tokenizer_file = model_dir.join("tokenizer.json");
    if tokenizer_file.exists() {
        let tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_file.display()))?;
        let text = String::from_utf8_lossy(text);
        let encoding = tokenizer
            .encode(text.as_ref(), false)
            .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_file.display()))?;
        return Ok(encoding.get_ids().iter().map(|&i| i as i64).collect());
    }
    if vocab == 256 {
        return Ok(llm::byte_tokens(text));
    }
    bail!("the model has no tokenizer.json and a vocabulary of {vocab}, not 256 bytes: give token ids (.safetensors or .json)")
}

fn progress_bar(quiet: bool, blocks: usize) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(blocks as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] block {pos}/{len}, {elapsed} (ETA {eta})")
            .expect("a valid template"),
    );
    bar.set_message("oneshot");
    bar
}
