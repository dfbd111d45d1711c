//! A model written with tch's own layers, pruned as it is: the network of tch's
//! `examples/mnist` (a struct of `nn::Conv2D` and `nn::Linear`, its own `forward_t`), pruned to
//! a target sparsity through a [`VarStorePruner`] while its training loop goes on.
//!
//! The only changes to the application are the pruner beside the `VarStore` and its
//! `backward_step` in place of the optimizer's: the masks are written into the variables after
//! every step, so the model's code and its forward pass stay exactly as they were. For
//! inference, [`FastNet`] is the same network with each layer in the form measured faster on
//! this machine (dense, or tchprune's sparse kernels).

use crate::data::Data;
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Tensor};
use tchprune::schedule::{Distribution, GradualPruner, MethodSpec, PruningSchedule, Schedule};
use tchprune::sparse::{self, LayerChoice, SpeedOptions};
use tchprune::sparsity::Sparsity;
use tchprune::{Registry, VarStorePruner};

/// tch's MNIST network, unchanged but for naming each layer's path.
#[derive(Debug)]
pub struct Net {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Net {
    /// The network's variables under `vs`: `conv1.weight`, `conv1.bias`, ... `fc2.bias`.
    pub fn new(vs: &nn::Path) -> Net {
        let conv1 = nn::conv2d(vs / "conv1", 1, 32, 5, Default::default());
        let conv2 = nn::conv2d(vs / "conv2", 32, 64, 5, Default::default());
        let fc1 = nn::linear(vs / "fc1", 1024, 1024, Default::default());
        let fc2 = nn::linear(vs / "fc2", 1024, 10, Default::default());
        Net {
            conv1,
            conv2,
            fc1,
            fc2,
        }
    }
}

impl nn::ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.view([-1, 1, 28, 28])
            .apply(&self.conv1)
            .max_pool2d_default(2)
            .apply(&self.conv2)
            .max_pool2d_default(2)
            .view([-1, 1024])
            .apply(&self.fc1)
            .relu()
            .dropout(0.5, train)
            .apply(&self.fc2)
    }
}

/// [`Net`] for inference, each layer built from the pruned variables in its faster form on this
/// machine, measured at the batch it will run at.
#[derive(Debug)]
pub struct FastNet {
    conv1: sparse::Conv2d,
    conv2: sparse::Conv2d,
    fc1: sparse::Linear,
    fc2: sparse::Linear,
}

impl FastNet {
    /// The layers of `vs` (as [`Net::new`] names them), each timed dense and sparse at `batch`
    /// images; with each layer's measurement.
    pub fn from_varstore(
        vs: &nn::VarStore,
        batch: i64,
    ) -> tchprune::Result<(FastNet, Vec<LayerChoice>)> {
        let options = SpeedOptions {
            batch,
            ..Default::default()
        };
        let config = Default::default();
        let (conv1, c1) =
            sparse::Conv2d::from_varstore(vs, "conv1", config, [batch, 1, 28, 28], &options)?;
        let (conv2, c2) =
            sparse::Conv2d::from_varstore(vs, "conv2", config, [batch, 32, 12, 12], &options)?;
        let (fc1, c3) = sparse::Linear::from_varstore(vs, "fc1", &options)?;
        let (fc2, c4) = sparse::Linear::from_varstore(vs, "fc2", &options)?;
        let net = FastNet {
            conv1,
            conv2,
            fc1,
            fc2,
        };
        Ok((net, vec![c1, c2, c3, c4]))
    }
}

impl nn::Module for FastNet {
    /// [`Net`]'s forward pass in evaluation mode.
    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.view([-1, 1, 28, 28])
            .apply(&self.conv1)
            .max_pool2d_default(2)
            .apply(&self.conv2)
            .max_pool2d_default(2)
            .view([-1, 1024])
            .apply(&self.fc1)
            .relu()
            .apply(&self.fc2)
    }
}

/// The weights pruned, globally by magnitude.
pub const WEIGHTS: [&str; 4] = ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"];

/// How long to train and how far to prune.
#[derive(Clone, Debug)]
pub struct Options {
    /// The share of the weights' entries pruned at the end.
    pub sparsity: f64,
    /// Pruning rounds, each followed by fine-tuning.
    pub rounds: usize,
    /// Training batches before the first round.
    pub dense_batches: usize,
    /// Fine-tuning batches after each round.
    pub batches_per_round: usize,
    /// Images per batch.
    pub batch_size: i64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            sparsity: 0.9,
            rounds: 3,
            dense_batches: 469,
            batches_per_round: 200,
            batch_size: 128,
        }
    }
}

/// What a run measured.
#[derive(Debug)]
pub struct Report {
    /// Test accuracy of the dense model.
    pub dense_accuracy: f64,
    /// Test accuracy at the end.
    pub pruned_accuracy: f64,
    /// Each weight's sparsity at the end, then the total (`"global"`).
    pub sparsity: Vec<Sparsity>,
    /// Each layer's measurement for [`FastNet`], at the test batch.
    pub inference: Vec<LayerChoice>,
    /// Test accuracy of [`FastNet`].
    pub fast_accuracy: f64,
    /// Seconds of one pass over the test set: the pruned [`Net`], then [`FastNet`].
    pub test_seconds: (f64, f64),
}

/// Images per batch at test time.
const TEST_BATCH: i64 = 1000;

/// Test accuracy, in eval mode.
pub fn accuracy(net: &Net, data: &Data) -> f64 {
    tch::no_grad(|| {
        net.batch_accuracy_for_logits(&data.test_x, &data.test_y, Device::Cpu, TEST_BATCH)
    })
}

/// Trains `net` for `batches` batches of `data`, through `pruner`'s step when given.
fn train(
    net: &Net,
    opt: &mut nn::Optimizer,
    mut pruner: Option<&mut VarStorePruner>,
    data: &Data,
    batches: usize,
    batch_size: i64,
) -> anyhow::Result<()> {
    let mut done = 0;
    while done < batches {
        for (x, y) in tch::data::Iter2::new(&data.train_x, &data.train_y, batch_size).shuffle() {
            let loss = net.forward_t(&x, true).cross_entropy_for_logits(&y);
            match pruner.as_deref_mut() {
                Some(pruner) => pruner.backward_step(opt, &loss)?,
                None => opt.backward_step(&loss),
            }
            done += 1;
            if done == batches {
                break;
            }
        }
    }
    Ok(())
}

/// Trains tch's network on `data`, then prunes [`WEIGHTS`] globally by magnitude to
/// `options.sparsity` with an iterative schedule of `options.rounds` rounds (the same share of
/// the remaining weights each round, landing exactly on the target count), fine-tuning after
/// each; `log` hears progress.
pub fn run(data: &Data, options: &Options, log: &mut dyn FnMut(String)) -> anyhow::Result<Report> {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Net::new(&vs.root());
    let mut opt = nn::Adam::default().build(&vs, 1e-3)?;
    train(
        &net,
        &mut opt,
        None,
        data,
        options.dense_batches,
        options.batch_size,
    )?;
    let dense_accuracy = accuracy(&net, data);
    log(format!("dense: test accuracy {dense_accuracy:.4}"));

    let mut pruner = VarStorePruner::new(&vs);
    let steps_per_round = options.batches_per_round as u64;
    let mut schedule = GradualPruner::new(
        PruningSchedule {
            tensors: WEIGHTS.iter().map(|w| w.to_string()).collect(),
            schedule: Schedule::Iterative {
                final_sparsity: options.sparsity,
                rounds: options.rounds as u32,
                begin_step: 0,
                steps_per_round,
            },
            distribution: Distribution::Global { min_density: 0.0 },
            method: MethodSpec::default(),
        },
        &Registry::with_builtins(),
    )?;
    for round in 1..=options.rounds {
        let step = (round as u64 - 1) * steps_per_round;
        let pruned = schedule
            .step(&mut pruner, step)?
            .expect("an iterative schedule prunes at the start of each round");
        let after_pruning = accuracy(&net, data);
        train(
            &net,
            &mut opt,
            Some(&mut pruner),
            data,
            options.batches_per_round,
            options.batch_size,
        )?;
        log(format!(
            "round {round}: {:.2}% pruned, test accuracy {after_pruning:.4} right after \
             pruning, {:.4} after fine-tuning",
            100.0 * pruned.sparsity(),
            accuracy(&net, data)
        ));
    }
    let batch = TEST_BATCH.min(data.test_x.size()[0]);
    let (fast, inference) = FastNet::from_varstore(&vs, batch)?;
    let fast_accuracy = tch::no_grad(|| {
        fast.batch_accuracy_for_logits(&data.test_x, &data.test_y, Device::Cpu, TEST_BATCH)
    });
    let timed = |f: &dyn Fn() -> f64| {
        let start = std::time::Instant::now();
        let _ = f();
        start.elapsed().as_secs_f64()
    };
    let test_seconds = (
        timed(&|| accuracy(&net, data)),
        timed(&|| {
            tch::no_grad(|| {
                fast.batch_accuracy_for_logits(&data.test_x, &data.test_y, Device::Cpu, TEST_BATCH)
            })
        }),
    );
    Ok(Report {
        dense_accuracy,
        pruned_accuracy: accuracy(&net, data),
        sparsity: pruner.sparsity(&WEIGHTS)?,
        inference,
        fast_accuracy,
        test_seconds,
    })
}
