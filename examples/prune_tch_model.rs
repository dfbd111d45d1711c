//! tch's MNIST network, written with tch's own layers and left unchanged, pruned to 90% through
//! a `VarStorePruner` while it trains; prints each layer's sparsity and the total, then runs
//! the test set with each layer in the form measured faster here (dense or sparse).
//! `cargo run --release --example prune_tch_model [-- --data DIR]` (Fashion-MNIST from
//! Debian's `dataset-fashion-mnist`, else a synthetic task).

use tchprune_examples::{data, tch_model};

fn main() -> anyhow::Result<()> {
    tch::manual_seed(0);
    let data = data::from_args_or_synthetic()?;
    println!("data: {}", data.name);
    let report = tch_model::run(&data, &Default::default(), &mut |line| println!("{line}"))?;
    println!(
        "{:<14} {:>9} {:>9} {:>8}",
        "weight", "zeros", "entries", "sparsity"
    );
    for row in &report.sparsity {
        println!(
            "{:<14} {:>9} {:>9} {:>7.2}%",
            row.name,
            row.zeros,
            row.total,
            row.percent()
        );
    }
    println!(
        "test accuracy: dense {:.4}, pruned {:.4}",
        report.dense_accuracy, report.pruned_accuracy
    );
    println!("inference, each layer in its faster form here (batch of the test set):");
    for c in &report.inference {
        println!(
            "{:<14} {:>7.2}%  dense {:>8.3} ms  sparse {:>8.3} ms  {}",
            c.weight,
            100.0 * c.sparsity,
            1e3 * c.dense_seconds,
            1e3 * c.sparse_seconds,
            if c.sparse { "sparse" } else { "dense" }
        );
    }
    let (pruned, fast) = report.test_seconds;
    println!(
        "test set: pruned model {:.1} ms, in the faster forms {:.1} ms ({:.2}x), accuracy {:.4}",
        1e3 * pruned,
        1e3 * fast,
        pruned / fast,
        report.fast_accuracy
    );
    Ok(())
}
