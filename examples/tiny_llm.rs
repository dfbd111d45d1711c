//! One-shot pruning of a language model, end to end: a byte-level Llama trained on the Python
//! standard library's sources (on CUDA when there is one), then pruned with magnitude, Wanda and
//! SparseGPT at 50%, 2:4 and 70% with 128 calibration windows, and the perplexity of each.
//!
//! `cargo run --release --example tiny_llm -- [--out DIR] [--steps N] [--minutes M] [--reference]`
//!
//! The trained model is kept in `DIR/model` (a Hugging Face directory that transformers loads),
//! so a second run starts from it (and trains on if `--steps` asks for more). Writes
//! `DIR/results.json`, `DIR/perplexity.png` and prints the table. `--reference` also runs the
//! PyTorch reference of the papers' algorithms (`host/tests/oracle/oneshot_reference.py`) on the
//! same model and windows.

use anyhow::{Context, Result};
use clap::Parser;
use plotters::prelude::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tch::{Device, Kind, Tensor};
use tchprune::llm::{self, Llama};
use tchprune_examples::corpus::{self, Corpus};
use tchprune_examples::tiny_llm::{self, Outcome, Setting, Training};

#[derive(Parser, Debug)]
#[command(about = "Train a tiny byte-level Llama, then prune it one-shot with three methods")]
struct Args {
    /// Where the model, the results and the plot go.
    #[arg(long, default_value = "target/tiny_llm")]
    out: PathBuf,
    /// A directory of .py files to train on (default: the bootstrap's Python standard library).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// AdamW steps in all.
    #[arg(long, default_value_t = 6000)]
    steps: u64,
    /// Stop training after this many minutes (the CPU cannot do 6000 steps in ten).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Sequences per training step.
    #[arg(long, default_value_t = 64)]
    batch: i64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    learning_rate: f64,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Calibration windows of 256 bytes.
    #[arg(long, default_value_t = 128)]
    samples: i64,
    /// Run the PyTorch reference on the same model and windows too.
    #[arg(long)]
    reference: bool,
    /// Run llm-compressor's oneshot (Wanda, SparseGPT) on the same model and windows too, with
    /// this Python (the venv `scripts/llmcompressor_venv.sh` prints).
    #[arg(long, value_name = "PYTHON")]
    llmcompressor: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = match args.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        _ => Device::cuda_if_available(),
    };
    let corpus_dir = match &args.corpus {
        Some(dir) => dir.clone(),
        None => corpus::python_stdlib()?,
    };
    let corpus = Corpus::read(&corpus_dir)?;
    println!(
        "corpus: {} files of {} (train {} MB, calibration {} MB, eval {} MB); device {device:?}",
        corpus.files,
        corpus_dir.display(),
        corpus.train.len() >> 20,
        corpus.calibration.len() >> 20,
        corpus.eval.len() >> 20
    );
    std::fs::create_dir_all(&args.out)?;
    let training = Training {
        steps: args.steps,
        batch: args.batch,
        seqlen: 256,
        learning_rate: args.learning_rate,
        budget: Duration::from_secs_f64(args.minutes * 60.0),
        seed: 0,
    };
    let trained = tiny_llm::train(&args.out, &corpus, &training, device, |step, loss| {
        if step % 500 == 0 {
            println!("  step {step}: loss {loss:.3}");
        }
    })?;
    println!(
        "trained {} steps ({} in this run)",
        trained.steps, trained.new_steps
    );
    let model_dir = args.out.join("model");
    let eval = tiny_llm::eval_windows(&corpus.eval, 64, 256);
    let calibration =
        llm::random_windows(&llm::byte_tokens(&corpus.calibration), args.samples, 256, 0)?;
    let dense = Llama::from_directory(&model_dir, Some(Kind::Float), device)?;
    let dense_ppl = llm::perplexity(&dense.model, &eval, 16)?;
    drop(dense);
    println!("dense perplexity {dense_ppl:.3}");
    let python = std::env::var_os("TCHPRUNE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "python3".into());
    let mut outcomes = Vec::new();
    for method in ["magnitude", "wanda", "sparsegpt"] {
        for setting in [
            Setting::Sparsity(0.5),
            Setting::TwoFour,
            Setting::Sparsity(0.7),
        ] {
            let (perplexity, seconds) = tiny_llm::prune_and_evaluate(
                &model_dir,
                method,
                setting,
                &calibration,
                &eval,
                device,
            )?;
            println!(
                "  {method} {}: perplexity {perplexity:.3} ({seconds:.2} s)",
                setting.title()
            );
            outcomes.push(Outcome {
                method: method.to_owned(),
                setting,
                perplexity,
                seconds,
                reference: None,
                llmcompressor: None,
            });
        }
    }
    if args.reference {
        println!("the PyTorch reference on the same model and windows...");
        let references =
            tiny_llm::reference_table(&python, &model_dir, &outcomes, &calibration, &eval, device)?;
        for (outcome, reference) in outcomes.iter_mut().zip(references) {
            println!(
                "  {} {}: reference perplexity {:.3} ({:.2} s)",
                outcome.method,
                outcome.setting.title(),
                reference.0,
                reference.1
            );
            outcome.reference = Some(reference);
        }
    }
    if let Some(python) = &args.llmcompressor {
        println!("llm-compressor on the same model and windows...");
        let results =
            tiny_llm::llmcompressor_table(python, &model_dir, &outcomes, &calibration, &eval)?;
        for (outcome, result) in outcomes.iter_mut().zip(results) {
            if let Some((p, s)) = result {
                println!(
                    "  {} {}: llm-compressor perplexity {p:.3} ({s:.2} s)",
                    outcome.method,
                    outcome.setting.title()
                );
                outcome.llmcompressor = Some((p, s));
            }
        }
    }
    Tensor::write_safetensors(
        &[("input_ids", &calibration)],
        args.out.join("calibration.safetensors"),
    )?;
    Tensor::write_safetensors(&[("input_ids", &eval)], args.out.join("eval.safetensors"))?;
    println!("\n{}", table(dense_ppl, &outcomes));
    let results = json!({
        "device": format!("{device:?}"),
        "steps": trained.steps,
        "dense_perplexity": dense_ppl,
        "outcomes": outcomes.iter().map(|o| json!({
            "method": o.method, "setting": o.setting.title(), "perplexity": o.perplexity,
            "seconds": o.seconds, "reference_perplexity": o.reference.map(|r| r.0),
            "reference_seconds": o.reference.map(|r| r.1),
            "llmcompressor_perplexity": o.llmcompressor.map(|r| r.0),
            "llmcompressor_seconds": o.llmcompressor.map(|r| r.1),
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    plot(dense_ppl, &outcomes, &args.out.join("perplexity.png")).context("drawing the plot")?;
    println!(
        "wrote {}/results.json and perplexity.png",
        args.out.display()
    );
    Ok(())
}

/// The table: a row per method, a column per setting.
fn table(dense: f64, outcomes: &[Outcome]) -> String {
    let mut text =
        format!("dense perplexity {dense:.3}\n\n| method | 50% | 2:4 | 70% |\n|---|---|---|---|\n");
    for method in ["magnitude", "wanda", "sparsegpt"] {
        let cells: Vec<String> = outcomes
            .iter()
            .filter(|o| o.method == method)
            .map(|o| {
                let change = 100.0 * (o.perplexity / dense - 1.0);
                match o.reference {
                    Some((r, _)) => {
                        format!("{:.3} ({change:+.0}%; reference {r:.3})", o.perplexity)
                    }
                    None => format!("{:.3} ({change:+.0}%)", o.perplexity),
                }
            })
            .collect();
        text += &format!("| {method} | {} |\n", cells.join(" | "));
    }
    text
}

fn plot(dense: f64, outcomes: &[Outcome], path: &Path) -> Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| anyhow::anyhow!("the plot's font does not load"))?;
    let highest = outcomes.iter().map(|o| o.perplexity).fold(dense, f64::max) * 1.1;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Tiny byte-level Llama: perplexity after one-shot pruning",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..2.5f64, ((dense * 0.9)..highest).log_scale())?;
    let settings = ["50%", "2:4", "70%"];
    chart
        .configure_mesh()
        .x_labels(3)
        .x_label_formatter(&|x| {
            settings
                .get(x.round() as usize)
                .map(|s| s.to_string())
                .unwrap_or_default()
        })
        .y_desc("perplexity (bytes)")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            [(-0.5, dense), (2.5, dense)],
            BLACK.stroke_width(1),
        ))?
        .label(format!("dense {dense:.3}"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
    for (i, (method, color)) in [("magnitude", RED), ("wanda", BLUE), ("sparsegpt", GREEN)]
        .into_iter()
        .enumerate()
    {
        let points: Vec<(f64, f64)> = outcomes
            .iter()
            .filter(|o| o.method == method)
            .enumerate()
            .map(|(j, o)| (j as f64 + (i as f64 - 1.0) * 0.06, o.perplexity))
            .collect();
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 6, color.filled())))?
            .label(method)
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}
