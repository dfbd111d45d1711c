//! Pruning inside a training loop: train LeNet, prune 80% globally by magnitude in three rounds
//! while fine-tuning, then make the pruning permanent. Uses Fashion-MNIST when Debian's
//! `dataset-fashion-mnist` is installed (`apt-get install dataset-fashion-mnist`) (or `--data DIR` points at the IDX files), else a
//! synthetic task. `cargo run --release --example train_pruned`

use std::sync::Arc;
use tch::nn::OptimizerConfig;
use tch::{nn, Device};
use tchprune::layers::LENET_WEIGHTS;
use tchprune::method::L1Unstructured;
use tchprune::sparsity::sparsity;
use tchprune::{layers, prune, Module};
use tchprune_examples::data::{self, Data};

fn accuracy(model: &Module, data: &Data) -> f64 {
    tch::no_grad(|| {
        model
            .forward(&data.test_x)
            .accuracy_for_logits(&data.test_y)
            .double_value(&[])
    })
}

fn train_epoch(model: &Module, opt: &mut nn::Optimizer, data: &Data) {
    for (x, y) in tch::data::Iter2::new(&data.train_x, &data.train_y, 128).shuffle() {
        opt.backward_step(&model.forward_t(&x, true).cross_entropy_for_logits(&y));
    }
}

fn main() -> anyhow::Result<()> {
    tch::manual_seed(0);
    let data = data::from_args_or_synthetic()?;
    println!("data: {}", data.name);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    let mut opt = nn::Adam::default().build(&vs, 1e-3)?;
    train_epoch(&model, &mut opt, &data);
    println!("dense: accuracy {:.3}", accuracy(&model, &data));
    // three rounds of 41.5% of what remains leave about 20% of the weights
    for round in 1..=3 {
        prune::global_unstructured(
            &mut model,
            &LENET_WEIGHTS,
            Arc::new(L1Unstructured::new(0.415)?),
            &[],
        )?;
        let pruned = accuracy(&model, &data);
        train_epoch(&model, &mut opt, &data);
        let global = sparsity(&model, &LENET_WEIGHTS)?
            .pop()
            .expect("a global row");
        println!(
            "round {round}: sparsity {:.1}%, accuracy right after pruning {pruned:.3}, after fine-tuning {:.3}",
            global.percent(),
            accuracy(&model, &data)
        );
    }
    for path in LENET_WEIGHTS {
        prune::remove(&mut model, path)?;
    }
    let global = sparsity(&model, &LENET_WEIGHTS)?
        .pop()
        .expect("a global row");
    println!(
        "after remove: sparsity {:.1}%, accuracy {:.3}, still pruned: {}",
        global.percent(),
        accuracy(&model, &data),
        prune::is_pruned(&model)
    );
    Ok(())
}
