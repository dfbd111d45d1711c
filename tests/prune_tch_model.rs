//! The example `prune_tch_model`: tch's MNIST network, unchanged, pruned to 90% through a
//! `VarStorePruner` inside its training loop (a short run on the synthetic task).

use tchprune_examples::{data, tch_model};

#[test]
fn tchs_mnist_network_is_pruned_to_ninety_percent_while_it_trains() {
    tch::manual_seed(0);
    let data = data::synthetic(1024, 256);
    let options = tch_model::Options {
        dense_batches: 30,
        batches_per_round: 8,
        batch_size: 64,
        ..Default::default()
    };
    let mut lines = Vec::new();
    let report = tch_model::run(&data, &options, &mut |line| lines.push(line)).unwrap();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[3].starts_with("round 3: 90.00% pruned"), "{lines:?}");

    let names: Vec<&str> = report.sparsity.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv1.weight",
            "conv2.weight",
            "fc1.weight",
            "fc2.weight",
            "global"
        ]
    );
    let global = report.sparsity.last().unwrap();
    // Exactly the target count, after fine-tuning: no pruned entry came back.
    assert_eq!(global.total, 1_110_816);
    assert_eq!(global.zeros, (global.total as f64 * 0.9).round() as i64);
    assert!(report.dense_accuracy > 0.5, "{report:?}");
    assert!(report.pruned_accuracy > 0.5, "{report:?}");

    // The inference copy: every layer measured, the outputs those of the pruned network.
    let measured: Vec<&str> = report.inference.iter().map(|c| c.weight.as_str()).collect();
    assert_eq!(
        measured,
        ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]
    );
    for (choice, row) in report.inference.iter().zip(&report.sparsity) {
        assert!(
            (choice.sparsity - row.percent() / 100.0).abs() < 1e-9,
            "{choice:?}"
        );
        assert!(choice.dense_seconds > 0.0 && choice.sparse_seconds > 0.0);
    }
    assert!(
        (report.fast_accuracy - report.pruned_accuracy).abs() <= 1.0 / 256.0,
        "{report:?}"
    );
}
