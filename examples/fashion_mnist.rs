//! The tutorial's LeNet on Fashion-MNIST, trained dense, then pruned gradually to 98% (or
//! `--sparsity S`) while it trains, and the lottery-ticket variant.
//!
//! `cargo run --release --example fashion_mnist -- --out DIR [--sparsity S] [--seed N]`
//!
//! Writes `DIR/dense.safetensors` (plain keys), `DIR/pruned.safetensors` (PyTorch's
//! `_orig`/`_mask` keys: loads into the tutorial's LeNet after `prune.identity` on the five
//! weights), `DIR/training.csv` (run, step, sparsity, loss, test accuracy) and
//! `DIR/accuracy.png` (test accuracy against sparsity). Needs Debian's Fashion-MNIST
//! (`apt-get install dataset-fashion-mnist`) or `--data DIR` with its IDX files.

use anyhow::{bail, Context};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tchprune::schedule::Distribution;
use tchprune::{checkpoint, PruneError};
use tchprune_examples::data::{self, FASHION_MNIST_DIR};
use tchprune_examples::fashion::{self, Event, Options, Outcome, Run};

#[derive(Parser, Debug)]
#[command(about = "Prune LeNet on Fashion-MNIST to a high sparsity while it trains")]
struct Args {
    /// Directory for the checkpoints, the CSV and the plot (created if needed).
    #[arg(long)]
    out: PathBuf,
    /// The share of the five weights pruned at the end.
    #[arg(long, default_value_t = 0.98)]
    sparsity: f64,
    /// Seed of the weights, the shuffling and everything else.
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Directory of Fashion-MNIST's gzipped IDX files.
    #[arg(long, default_value = FASHION_MNIST_DIR)]
    data: PathBuf,
    /// Dense training epochs.
    #[arg(long, default_value_t = Options::default().dense_epochs)]
    dense_epochs: usize,
    /// Epochs over which the sparsity rises.
    #[arg(long, default_value_t = Options::default().prune_epochs)]
    prune_epochs: usize,
    /// Fine-tuning epochs at the final sparsity.
    #[arg(long, default_value_t = Options::default().finetune_epochs)]
    finetune_epochs: usize,
    /// How the sparsity is spread: a JSON distribution (`{"kind": "erk"}`).
    #[arg(long)]
    distribution: Option<String>,
    /// Lottery-ticket rounds (0 skips the variant).
    #[arg(long, default_value_t = Options::default().lottery_rounds)]
    lottery_rounds: usize,
    /// Training epochs per lottery-ticket round.
    #[arg(long, default_value_t = Options::default().lottery_epochs)]
    lottery_epochs: usize,
    /// Adam's learning rate while pruning and fine-tuning.
    #[arg(long, default_value_t = Options::default().prune_learning_rate)]
    prune_learning_rate: f64,
    /// Decay the learning rate to zero over the fine-tuning epochs (half cosine).
    #[arg(long, default_value_t = Options::default().cosine_finetune, action = clap::ArgAction::Set)]
    cosine_finetune: bool,
    /// The dense step the lottery ticket rewinds to (0: the initialisation).
    #[arg(long, default_value_t = Options::default().rewind_step)]
    rewind_step: u64,
}

impl Args {
    fn options(&self) -> anyhow::Result<Options> {
        if !(0.0..1.0).contains(&self.sparsity) {
            bail!("--sparsity must lie in [0, 1), got {}", self.sparsity);
        }
        let defaults = Options::default();
        let distribution: Distribution = match &self.distribution {
            Some(json) => serde_json::from_str(json)
                .with_context(|| format!("--distribution {json}: not a distribution"))?,
            None => defaults.distribution.clone(),
        };
        Ok(Options {
            sparsity: self.sparsity,
            seed: self.seed,
            dense_epochs: self.dense_epochs,
            prune_epochs: self.prune_epochs,
            finetune_epochs: self.finetune_epochs,
            distribution,
            lottery_rounds: self.lottery_rounds,
            lottery_epochs: self.lottery_epochs,
            rewind_step: self.rewind_step,
            prune_learning_rate: self.prune_learning_rate,
            cosine_finetune: self.cosine_finetune,
            ..defaults
        })
    }
}

/// One progress bar per training, showing loss, accuracy and sparsity.
struct Bars {
    bar: Option<ProgressBar>,
    accuracy: f64,
}

impl Bars {
    fn hear(&mut self, event: Event) {
        match event {
            Event::Start(run, steps) => {
                if let Some(bar) = self.bar.take() {
                    bar.finish();
                }
                let bar = ProgressBar::new(steps).with_prefix(format!("{:<14}", run.name()));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {pos:>5}/{len:5} {elapsed:>4} {msg}",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                );
                self.bar = Some(bar);
            }
            Event::Step(loss, sparsity) => {
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                    bar.set_message(format!(
                        "loss {loss:.3}  test accuracy {:.4}  sparsity {:.2}%",
                        self.accuracy,
                        100.0 * sparsity
                    ));
                }
            }
            Event::Measured(point) => self.accuracy = point.accuracy,
        }
    }
}

fn write_csv(outcome: &Outcome, path: &Path) -> anyhow::Result<()> {
    let mut csv = String::from("run,step,sparsity,loss,test_accuracy\n");
    for p in &outcome.points {
        writeln!(
            csv,
            "{},{},{:.6},{:.6},{:.4}",
            p.run.name(),
            p.step,
            p.sparsity,
            p.loss,
            p.accuracy
        )?;
    }
    tchprune::files::write_atomically(path, |file| {
        std::io::Write::write_all(file, csv.as_bytes()).map_err(|error| PruneError::Io {
            path: path.display().to_string(),
            error,
        })
    })
    .with_context(|| format!("writing {}", path.display()))
}

fn plot(outcome: &Outcome, dense_accuracy: f64, path: &Path) -> anyhow::Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| anyhow::anyhow!("the plot's font does not load"))?;
    let lowest = outcome
        .points
        .iter()
        .map(|p| p.accuracy)
        .fold(dense_accuracy, f64::min);
    let y_min = (lowest - 0.02).max(0.0);
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "LeNet on Fashion-MNIST: test accuracy against sparsity",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..1f64, y_min..(dense_accuracy + 0.02).min(1.0))?;
    chart
        .configure_mesh()
        .x_desc("sparsity of the five weights")
        .y_desc("test accuracy")
        .draw()?;
    let dense_style = ShapeStyle::from(&BLACK).stroke_width(1);
    chart
        .draw_series(LineSeries::new(
            [(0.0, dense_accuracy), (1.0, dense_accuracy)],
            dense_style,
        ))?
        .label(format!("dense ({:.2}%)", 100.0 * dense_accuracy))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], dense_style));
    for (run, color) in [(Run::Gradual, RED), (Run::Lottery, BLUE)] {
        let points: Vec<(f64, f64)> = outcome
            .points
            .iter()
            .filter(|p| p.run == run)
            .map(|p| (p.sparsity, p.accuracy))
            .collect();
        if points.is_empty() {
            continue;
        }
        let last = points.last().expect("not empty").1;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )?
            .label(format!("{} (last {:.2}%)", run.name(), 100.0 * last))
            .legend(move |(x, y)| Circle::new((x + 10, y), 3, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fashion_mnist: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let options = args.options()?;
    let Some(data) = data::fashion_mnist(&args.data)? else {
        bail!(
            "Fashion-MNIST not found in {}: install Debian's package with \
             `sudo apt-get install dataset-fashion-mnist`, or pass --data DIR with its \
             gzipped IDX files (train-images-idx3-ubyte.gz, ...)",
            args.data.display()
        );
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    println!("data: {}", data.name);
    println!("options: {options:?}");

    let mut bars = Bars {
        bar: None,
        accuracy: 0.0,
    };
    let started = std::time::Instant::now();
    let outcome = fashion::run(&data, &options, &mut |event| bars.hear(event))?;
    if let Some(bar) = bars.bar.take() {
        bar.finish();
    }

    let dense_path = args.out.join("dense.safetensors");
    let pruned_path = args.out.join("pruned.safetensors");
    checkpoint::save(&outcome.dense, &dense_path)
        .with_context(|| format!("writing {}", dense_path.display()))?;
    checkpoint::save(&outcome.pruned, &pruned_path)
        .with_context(|| format!("writing {}", pruned_path.display()))?;
    write_csv(&outcome, &args.out.join("training.csv"))?;
    let dense = outcome.last(Run::Dense).expect("a dense measurement");
    plot(&outcome, dense.accuracy, &args.out.join("accuracy.png"))?;

    println!("{:<16} {:>9} {:>14}", "run", "sparsity", "test accuracy");
    for run in [Run::Dense, Run::Gradual, Run::Lottery] {
        if let Some(p) = outcome.last(run) {
            println!(
                "{:<16} {:>8.2}% {:>13.2}%",
                run.name(),
                100.0 * p.sparsity,
                100.0 * p.accuracy
            );
        }
    }
    if let Some(gradual) = outcome.last(Run::Gradual) {
        println!(
            "gradual pruning lost {:.2} points of accuracy at {:.2}% sparsity",
            100.0 * (dense.accuracy - gradual.accuracy),
            100.0 * gradual.sparsity
        );
    }
    println!(
        "wrote {} in {:.0} s",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
