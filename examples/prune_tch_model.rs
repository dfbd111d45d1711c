//! tch's MNIST network, written with tch's own layers and left unchanged, pruned to 90% through
//! a `VarStorePruner` while it trains; prints each layer's sparsity and the total.
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
    Ok(())
}
