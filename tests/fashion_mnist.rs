//! The Fashion-MNIST example's recipe, shortened, on a subset (Fashion-MNIST when Debian's
//! package is installed, else the synthetic task): it trains, lands exactly on its sparsity in
//! both the gradual and the lottery-ticket runs, is deterministic under a seed, and its
//! checkpoints load into PyTorch's LeNet with the same predictions.
//!
//! One test in this binary: the recipe seeds tch's global generator, which tests running in
//! parallel would share.

use std::path::PathBuf;
use std::process::Command;
use tch::{Kind, Tensor};
use tchprune::checkpoint;
use tchprune::layers::LENET_WEIGHTS;
use tchprune::Prunable;
use tchprune_examples::data::{self, FASHION_MNIST_DIR};
use tchprune_examples::fashion::{self, Options, Run};

fn python() -> PathBuf {
    PathBuf::from(
        std::env::var_os("TCHPRUNE_PYTHON")
            .expect("TCHPRUNE_PYTHON is not set: run scripts/bootstrap.sh first"),
    )
}

#[test]
fn a_short_run_prunes_exactly_repeats_itself_and_loads_into_pytorch() {
    let full = data::fashion_mnist(FASHION_MNIST_DIR.as_ref())
        .unwrap()
        .unwrap_or_else(|| data::synthetic(3000, 500));
    let data = fashion::subset(&full, 3000, 500);
    let options = Options {
        sparsity: 0.9,
        dense_epochs: 2,
        prune_epochs: 2,
        finetune_epochs: 1,
        frequency: 10,
        lottery_rounds: 2,
        lottery_epochs: 1,
        rewind_step: 5,
        batch_size: 64,
        ..Default::default()
    };
    let mut measured = 0;
    let outcome = fashion::run(&data, &options, &mut |event| {
        if let fashion::Event::Measured(_) = event {
            measured += 1;
        }
    })
    .unwrap();
    assert_eq!(measured, outcome.points.len());

    let exact = (0.9f64 * 59_838.0).round() / 59_838.0;
    let dense = outcome.last(Run::Dense).unwrap();
    let gradual = outcome.last(Run::Gradual).unwrap();
    let lottery = outcome.last(Run::Lottery).unwrap();
    assert_eq!(dense.sparsity, 0.0);
    assert_eq!(gradual.sparsity, exact);
    assert_eq!(lottery.sparsity, exact);
    // 47 steps per epoch: two dense epochs, three of the gradual run, one per lottery round
    assert_eq!((dense.step, gradual.step, lottery.step), (94, 141, 47));
    // the gradual run measures before each pruning step, so sparsity rises along its points
    let gradual_sparsity: Vec<f64> = outcome
        .points
        .iter()
        .filter(|p| p.run == Run::Gradual)
        .map(|p| p.sparsity)
        .collect();
    assert!(gradual_sparsity.windows(2).all(|w| w[0] <= w[1]));
    assert!(gradual_sparsity.len() > 10, "{gradual_sparsity:?}");
    assert!(dense.accuracy > 0.5, "{dense:?}");
    assert!(gradual.accuracy > 0.4, "{gradual:?}");
    assert!(
        dense.loss < outcome.points[0].loss,
        "the dense model learns"
    );
    for path in LENET_WEIGHTS {
        let (zeros, total) = outcome.pruned.count_zeros(path).unwrap();
        assert!(zeros > 0 && zeros < total, "{path}: {zeros} of {total}");
    }

    // The same seed, the same run.
    let again = fashion::run(&data, &options, &mut |_| {}).unwrap();
    assert_eq!(again.points.len(), outcome.points.len());
    for (a, b) in outcome.points.iter().zip(&again.points) {
        assert_eq!(
            (a.step, a.sparsity, a.accuracy),
            (b.step, b.sparsity, b.accuracy)
        );
        assert_eq!(a.loss.to_bits(), b.loss.to_bits());
    }

    // The checkpoints load into PyTorch's LeNet (the pruned one after prune.identity) and
    // predict what tchprune predicts.
    let dir = tempfile::tempdir().unwrap();
    let [dense_path, pruned_path, inputs_path, out_path] =
        ["dense", "pruned", "inputs", "out"].map(|n| dir.path().join(format!("{n}.safetensors")));
    checkpoint::save(&outcome.dense, &dense_path).unwrap();
    checkpoint::save(&outcome.pruned, &pruned_path).unwrap();
    let keys: Vec<String> = checkpoint::load(&pruned_path)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(keys.contains(&"fc1.weight_orig".to_owned()), "{keys:?}");
    assert!(keys.contains(&"fc1.weight_mask".to_owned()), "{keys:?}");
    let x = data.test_x.narrow(0, 0, 200).contiguous();
    Tensor::write_safetensors(&[("x", &x)], &inputs_path).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oracle/fashion_lenet.py");
    let output = Command::new(python())
        .arg(script)
        .args([&dense_path, &pruned_path, &inputs_path, &out_path])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let torch: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&out_path)
        .unwrap()
        .into_iter()
        .collect();
    for (name, model) in [("dense", &outcome.dense), ("pruned", &outcome.pruned)] {
        let ours = tch::no_grad(|| model.forward_t(&x, false));
        let theirs = &torch[name];
        let diff = (&ours - theirs).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{name}: logits differ by {diff}");
        assert!(
            ours.argmax(-1, false).equal(&theirs.argmax(-1, false)),
            "{name}: predictions differ"
        );
    }
    for path in LENET_WEIGHTS {
        let ours = outcome.pruned.tensor(path).unwrap();
        assert!(ours.equal(&torch[path].to_kind(Kind::Float)), "{path}");
    }
}
