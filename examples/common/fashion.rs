//! The recipe of `examples/fashion_mnist.rs`: the tutorial's LeNet trained dense on
//! Fashion-MNIST, then pruned gradually to a high sparsity while it trains, and the
//! lottery-ticket variant from the same dense run.
//!
//! It lives in the library of the examples so that a test can run it, shortened, on a subset.

use crate::data::Data;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};
use tchprune::layers::{self, LENET_WEIGHTS};
use tchprune::schedule::{
    Distribution, GradualPruner, LotteryTicket, MethodSpec, PruningSchedule, Schedule,
};
use tchprune::sparsity::sparsity;
use tchprune::{Module, Registry};

/// How long to train and how far to prune.
#[derive(Clone, Debug)]
pub struct Options {
    /// The share of the five weights pruned at the end.
    pub sparsity: f64,
    /// Dense training epochs.
    pub dense_epochs: usize,
    /// Epochs over which the sparsity rises (cubic, Zhu & Gupta).
    pub prune_epochs: usize,
    /// Epochs of fine-tuning at the final sparsity.
    pub finetune_epochs: usize,
    /// Training steps between pruning steps.
    pub frequency: u64,
    /// How the sparsity is spread over the five weights.
    pub distribution: Distribution,
    /// Lottery-ticket rounds (0: skip the variant).
    pub lottery_rounds: usize,
    /// Training epochs in each lottery-ticket round.
    pub lottery_epochs: usize,
    /// The dense training step whose weights the lottery ticket rewinds to (0: the
    /// initialisation, as in Frankle & Carbin 2019).
    pub rewind_step: u64,
    /// Images per batch.
    pub batch_size: i64,
    /// Adam's learning rate for the dense model and the lottery ticket's rounds.
    pub learning_rate: f64,
    /// Adam's learning rate while pruning gradually and fine-tuning: higher than the dense
    /// one's end, as in learning-rate rewinding (Renda et al. 2020).
    pub prune_learning_rate: f64,
    /// Decay the learning rate to zero over the fine-tuning epochs (half cosine).
    pub cosine_finetune: bool,
    /// The seed of weights, shuffling and everything else.
    pub seed: i64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            sparsity: 0.98,
            dense_epochs: 10,
            prune_epochs: 20,
            finetune_epochs: 25,
            frequency: 100,
            distribution: Distribution::Lamp,
            lottery_rounds: 5,
            lottery_epochs: 3,
            rewind_step: 500,
            batch_size: 128,
            learning_rate: 1e-3,
            prune_learning_rate: 2e-3,
            cosine_finetune: true,
            seed: 0,
        }
    }
}

/// Which training a measurement belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// The dense model.
    Dense,
    /// Gradual pruning with fine-tuning.
    Gradual,
    /// The lottery ticket, round by round.
    Lottery,
}

impl Run {
    /// Its name in the CSV and the plot.
    pub fn name(self) -> &'static str {
        match self {
            Run::Dense => "dense",
            Run::Gradual => "gradual",
            Run::Lottery => "lottery_ticket",
        }
    }
}

/// One measurement.
#[derive(Clone, Debug)]
pub struct Point {
    /// The training it belongs to.
    pub run: Run,
    /// Training steps done in that training.
    pub step: u64,
    /// The share of the five weights that is zero.
    pub sparsity: f64,
    /// The mean training loss since the previous point.
    pub loss: f64,
    /// Test accuracy.
    pub accuracy: f64,
}

/// What the recipe tells its caller as it goes.
#[derive(Debug)]
pub enum Event {
    /// A training starts with this many steps.
    Start(Run, u64),
    /// One training step, with its loss and the current sparsity.
    Step(f64, f64),
    /// A measurement.
    Measured(Point),
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The dense model.
    pub dense: Module,
    /// The gradually pruned model (`_orig`/`_mask` in its state_dict).
    pub pruned: Module,
    /// Every measurement, in order.
    pub points: Vec<Point>,
}

impl Outcome {
    /// The last measurement of `run`.
    pub fn last(&self, run: Run) -> Option<&Point> {
        self.points.iter().rev().find(|p| p.run == run)
    }
}

/// The recipe's model: the tutorial's LeNet on a fresh `VarStore`.
pub fn lenet() -> (nn::VarStore, Module) {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = layers::lenet(&vs.root());
    (vs, model)
}

/// A LeNet holding a copy of the weights in `vs`.
fn copy_of(vs: &nn::VarStore) -> anyhow::Result<(nn::VarStore, Module)> {
    let (mut copy, model) = lenet();
    copy.copy(vs)?;
    Ok((copy, model))
}

/// Test accuracy, in eval mode.
pub fn accuracy(model: &Module, data: &Data) -> f64 {
    tch::no_grad(|| {
        let mut correct = 0.0;
        let n = data.test_x.size()[0];
        for start in (0..n).step_by(2000) {
            let len = 2000.min(n - start);
            let logits = model.forward_t(&data.test_x.narrow(0, start, len), false);
            correct += logits
                .argmax(-1, false)
                .eq_tensor(&data.test_y.narrow(0, start, len))
                .sum(Kind::Float)
                .double_value(&[]);
        }
        correct / n as f64
    })
}

/// The share of the five weights that is zero.
pub fn weight_sparsity(model: &Module) -> anyhow::Result<f64> {
    let total = sparsity(model, &LENET_WEIGHTS)?
        .pop()
        .expect("a global row");
    Ok(total.zeros as f64 / total.total as f64)
}

fn steps_per_epoch(data: &Data, batch_size: i64) -> u64 {
    let n = data.train_x.size()[0];
    ((n + batch_size - 1) / batch_size) as u64
}

/// One training: batches of shuffled data, a hook after every optimizer step.
struct Trainer<'a> {
    data: &'a Data,
    batch_size: i64,
    events: &'a mut dyn FnMut(Event),
    points: Vec<Point>,
}

/// One training: what it is, how long, its learning rate and what happens around each step.
struct Phase<'a> {
    run: Run,
    epochs: usize,
    /// The learning rate of each step.
    learning_rate: &'a dyn Fn(u64) -> f64,
    /// Whether to measure before the step's hook runs (before a pruning step: the accuracy a
    /// sparsity reached after training at it, not the dip right after pruning).
    measure_before: &'a dyn Fn(u64) -> bool,
    /// Runs after each optimizer step (pruning); says whether the sparsity changed.
    after_step: &'a mut dyn FnMut(u64, &mut Module) -> anyhow::Result<bool>,
}

impl Trainer<'_> {
    /// Trains `model` through `phase`, measuring at the end of each epoch too.
    fn train(
        &mut self,
        model: &mut Module,
        opt: &mut nn::Optimizer,
        phase: Phase<'_>,
    ) -> anyhow::Result<()> {
        let Phase {
            run,
            epochs,
            learning_rate,
            measure_before,
            after_step,
        } = phase;
        let per_epoch = steps_per_epoch(self.data, self.batch_size);
        (self.events)(Event::Start(run, per_epoch * epochs as u64));
        let mut step = 0u64;
        let (mut loss_sum, mut losses) = (0.0, 0u64);
        let mut current_sparsity = weight_sparsity(model)?;
        for _ in 0..epochs {
            let mut batches =
                tch::data::Iter2::new(&self.data.train_x, &self.data.train_y, self.batch_size);
            batches.return_smaller_last_batch();
            for (batch, (x, y)) in batches.shuffle().enumerate() {
                opt.set_lr(learning_rate(step));
                let loss = model.forward_t(&x, true).cross_entropy_for_logits(&y);
                opt.backward_step(&loss);
                let loss = loss.double_value(&[]);
                (loss_sum, losses) = (loss_sum + loss, losses + 1);
                step += 1;
                let epoch_end = batch as u64 + 1 == per_epoch;
                if measure_before(step) || epoch_end {
                    self.measure(run, step, model, loss_sum / losses.max(1) as f64)?;
                    (loss_sum, losses) = (0.0, 0);
                }
                if after_step(step, model)? {
                    current_sparsity = weight_sparsity(model)?;
                }
                (self.events)(Event::Step(loss, current_sparsity));
            }
        }
        Ok(())
    }

    fn measure(&mut self, run: Run, step: u64, model: &Module, loss: f64) -> anyhow::Result<()> {
        let point = Point {
            run,
            step,
            sparsity: weight_sparsity(model)?,
            loss,
            accuracy: accuracy(model, self.data),
        };
        (self.events)(Event::Measured(point.clone()));
        self.points.push(point);
        Ok(())
    }
}

fn adam(vs: &nn::VarStore, learning_rate: f64) -> anyhow::Result<nn::Optimizer> {
    Ok(nn::Adam::default().build(vs, learning_rate)?)
}

/// The gradual run's learning rate at `step`: constant while pruning, then decaying to zero
/// over the fine-tuning along a half cosine when `options.cosine_finetune`.
fn prune_learning_rate(options: &Options, step: u64, prune_steps: u64, data: &Data) -> f64 {
    let finetune_steps = steps_per_epoch(data, options.batch_size) * options.finetune_epochs as u64;
    if !options.cosine_finetune || step < prune_steps || finetune_steps == 0 {
        return options.prune_learning_rate;
    }
    let progress = (step - prune_steps) as f64 / finetune_steps as f64;
    options.prune_learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

fn schedule(options: &Options, prune_steps: u64) -> PruningSchedule {
    PruningSchedule {
        tensors: LENET_WEIGHTS.iter().map(|s| s.to_string()).collect(),
        schedule: Schedule::PolynomialDecay {
            initial_sparsity: 0.0,
            final_sparsity: options.sparsity,
            begin_step: 0,
            end_step: prune_steps,
            power: 3.0,
            frequency: options.frequency,
        },
        distribution: options.distribution.clone(),
        method: MethodSpec::default(),
    }
}

/// Trains the dense LeNet, prunes a copy gradually while fine-tuning it, and plays the lottery
/// ticket on another copy; `events` hears everything as it happens.
pub fn run(
    data: &Data,
    options: &Options,
    events: &mut dyn FnMut(Event),
) -> anyhow::Result<Outcome> {
    tch::manual_seed(options.seed);
    let registry = Registry::with_builtins();
    let mut trainer = Trainer {
        data,
        batch_size: options.batch_size,
        events,
        points: Vec::new(),
    };

    // Dense, recording the lottery ticket's weights on the way.
    let (dense_vs, mut dense) = lenet();
    let mut ticket = match options.rewind_step {
        0 => Some(LotteryTicket::record(&dense)?),
        _ => None,
    };
    let mut opt = adam(&dense_vs, options.learning_rate)?;
    trainer.train(
        &mut dense,
        &mut opt,
        Phase {
            run: Run::Dense,
            epochs: options.dense_epochs,
            learning_rate: &|_| options.learning_rate,
            measure_before: &|_| false,
            after_step: &mut |step, model| {
                if step == options.rewind_step && ticket.is_none() {
                    ticket = Some(LotteryTicket::record(model)?);
                }
                Ok(false)
            },
        },
    )?;
    let ticket = ticket.ok_or_else(|| {
        anyhow::anyhow!(
            "rewind step {} lies beyond the dense training",
            options.rewind_step
        )
    })?;

    // Gradual: the dense model goes on training (same optimizer) while the schedule prunes.
    let (pruned_vs, mut pruned) = copy_of(&dense_vs)?;
    let mut opt = adam(&pruned_vs, options.prune_learning_rate)?;
    let prune_steps = steps_per_epoch(data, options.batch_size) * options.prune_epochs as u64;
    let schedule = schedule(options, prune_steps);
    let mut pruner = GradualPruner::new(schedule.clone(), &registry)?;
    pruner.step(&mut pruned, 0)?;
    trainer.train(
        &mut pruned,
        &mut opt,
        Phase {
            run: Run::Gradual,
            epochs: options.prune_epochs + options.finetune_epochs,
            learning_rate: &|step| prune_learning_rate(options, step, prune_steps, data),
            measure_before: &|step| schedule.schedule.is_pruning_step(step),
            after_step: &mut |step, model| Ok(pruner.step(model, step)?.is_some()),
        },
    )?;

    // Lottery ticket: prune the trained model a step further each round, rewind, retrain.
    if options.lottery_rounds > 0 {
        let (lottery_vs, mut lottery) = copy_of(&dense_vs)?;
        let rounds = options.lottery_rounds as u32;
        let mut lottery_pruner = GradualPruner::new(
            PruningSchedule {
                schedule: Schedule::Iterative {
                    final_sparsity: options.sparsity,
                    rounds,
                    begin_step: 0,
                    steps_per_round: 1,
                },
                ..schedule
            },
            &registry,
        )?;
        for round in 0..u64::from(rounds) {
            lottery_pruner.step(&mut lottery, round)?;
            ticket.rewind(&mut lottery)?;
            let mut opt = adam(&lottery_vs, options.learning_rate)?;
            trainer.train(
                &mut lottery,
                &mut opt,
                Phase {
                    run: Run::Lottery,
                    epochs: options.lottery_epochs,
                    learning_rate: &|_| options.learning_rate,
                    measure_before: &|_| false,
                    after_step: &mut |_, _| Ok(false),
                },
            )?;
        }
    }
    Ok(Outcome {
        dense,
        pruned,
        points: trainer.points,
    })
}

/// Keeps `train` training images and `test` test images of `data` (for short runs).
pub fn subset(data: &Data, train: i64, test: i64) -> Data {
    let take = |t: &Tensor, n: i64| t.narrow(0, 0, n.min(t.size()[0])).copy();
    Data {
        train_x: take(&data.train_x, train),
        train_y: take(&data.train_y, train),
        test_x: take(&data.test_x, test),
        test_y: take(&data.test_y, test),
        name: format!("{} (subset)", data.name),
    }
}
