//! `tchprune speed`: each pruned linear and convolution weight's dense and sparse time on this
//! machine, and the form chosen; convolutions at their input sizes in the built-in model.

mod common;

use serde_json::{json, Value};

#[test]
fn a_pruned_checkpoint_gets_each_layers_times_and_form() {
    let plan = json!({"steps": [
        {"method": "l1_unstructured", "params": ["fc1.weight"], "amount": 0.9},
        {"method": "l1_unstructured", "params": ["fc2.weight"], "amount": 0.5},
    ]});
    let (dir, run) = common::apply_to_lenet(&plan, &[]);
    assert!(run.success, "{}", run.stderr);
    let run = common::tchprune_in(dir.path(), &["speed", "out.safetensors", "--calls", "3"]);
    assert!(run.success, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("weight") && lines[0].contains("form (batch 1)"),
        "{}",
        run.stdout
    );
    assert!(
        lines[1].starts_with("fc1.weight")
            && lines[1].contains("[120, 400]")
            && lines[1].contains(" Float ")
            && lines[1].contains("90.00%"),
        "{}",
        run.stdout
    );
    assert!(
        lines[2].starts_with("fc2.weight") && lines[2].contains("50.00%"),
        "{}",
        run.stdout
    );
    assert!(lines[3].starts_with("total: dense"), "{}", run.stdout);
    assert_eq!(
        lines.len(),
        4,
        "conv weights and unpruned fc3 are not listed"
    );

    let run = common::tchprune_in(
        dir.path(),
        &[
            "speed",
            "out.safetensors",
            "--json",
            "--batch",
            "4",
            "--calls",
            "2",
        ],
    );
    assert!(run.success, "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["batch"], 4);
    let layers = report["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0]["weight"], "fc1.weight");
    assert_eq!(layers[0]["shape"], json!([120, 400]));
    assert_eq!(layers[0]["dtype"], "Float");
    assert!((layers[0]["sparsity"].as_f64().unwrap() - 0.9).abs() < 1e-9);
    for layer in layers {
        assert!(["dense", "sparse"].contains(&layer["form"].as_str().unwrap()));
        let (dense, sparse) = (
            layer["dense_seconds"].as_f64().unwrap(),
            layer["sparse_seconds"].as_f64().unwrap(),
        );
        assert!(dense > 0.0 && sparse > 0.0);
        let chosen = if layer["form"] == "sparse" {
            sparse
        } else {
            dense
        };
        assert!(chosen <= dense);
    }
    let total = &report["total"];
    assert!(total["chosen_seconds"].as_f64().unwrap() <= total["dense_seconds"].as_f64().unwrap());
}

#[test]
fn a_bf16_checkpoint_is_timed_in_bf16() {
    let plan = json!({"steps": [
        {"method": "l1_unstructured", "params": ["fc1.weight"], "amount": 0.9},
    ]});
    let (dir, run) = common::apply_to_lenet(&plan, &[]);
    assert!(run.success, "{}", run.stderr);
    let pruned = tchprune::checkpoint::read(dir.path().join("out.safetensors")).unwrap();
    let bf16: Vec<(String, tch::Tensor)> = (pruned.tensors.iter())
        .map(|(key, t)| (key.clone(), t.to_kind(tch::Kind::BFloat16)))
        .collect();
    let path = dir.path().join("bf16.safetensors");
    tchprune::checkpoint::write(&bf16, &pruned.metadata, &path).unwrap();
    let run = common::tchprune_in(
        dir.path(),
        &["speed", "bf16.safetensors", "--json", "--calls", "2"],
    );
    assert!(run.success, "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let layers = report["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        (&layers[0]["weight"], &layers[0]["dtype"]),
        (&json!("fc1.weight"), &json!("BFloat16"))
    );
}

#[test]
fn an_unpruned_checkpoint_has_nothing_to_time() {
    let dir = tempfile::tempdir().unwrap();
    common::lenet_checkpoint(dir.path());
    let run = common::tchprune_in(dir.path(), &["speed", "lenet.safetensors"]);
    assert!(run.success, "{}", run.stderr);
    assert!(
        run.stdout
            .starts_with("no pruned linear or convolution weight"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_built_in_models_convolutions_are_timed_at_their_input_sizes() {
    let plan = json!({"steps": [
        {"method": "l1_unstructured", "params": ["conv1.weight", "conv2.weight", "fc1.weight"],
         "amount": 0.9},
    ]});
    let (dir, run) = common::apply_to_lenet(&plan, &[]);
    assert!(run.success, "{}", run.stderr);
    let report = |extra: &[&str]| -> Value {
        let mut args = vec!["speed", "out.safetensors", "--json", "--calls", "1"];
        args.extend_from_slice(extra);
        let run = common::tchprune_in(dir.path(), &args);
        assert!(run.success, "{}", run.stderr);
        serde_json::from_str(&run.stdout).unwrap()
    };
    let weights = |report: &Value| -> Vec<(String, Value)> {
        (report["layers"].as_array().unwrap().iter())
            .map(|l| (l["weight"].as_str().unwrap().to_owned(), l["shape"].clone()))
            .collect()
    };
    let expected = [
        ("conv1.weight".to_owned(), json!([6, 9])),
        ("conv2.weight".to_owned(), json!([16, 54])),
        ("fc1.weight".to_owned(), json!([120, 400])),
    ];
    assert_eq!(weights(&report(&[])), expected);
    assert_eq!(
        weights(&report(&["--model", "lenet", "--image-size", "32x40"])),
        expected
    );
    assert_eq!(weights(&report(&["--model", "none"])), expected[2..]);

    let run = common::tchprune_in(
        dir.path(),
        &["speed", "out.safetensors", "--model", "resnet18"],
    );
    assert!(!run.success);
    assert!(run.stderr.contains("not resnet18"), "{}", run.stderr);
    let run = common::tchprune_in(
        dir.path(),
        &["speed", "out.safetensors", "--image-size", "0x5"],
    );
    assert!(!run.success);
    assert!(run.stderr.contains("HEIGHTxWIDTH"), "{}", run.stderr);
    // LeNet's conv2 sees nothing of a 3x3 image: an error naming it, not a crash.
    let run = common::tchprune_in(
        dir.path(),
        &["speed", "out.safetensors", "--image-size", "3"],
    );
    assert!(!run.success);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(
        lines[0].contains("'conv2.weight'") && lines[0].contains("leaves no output"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_arguments_are_refused() {
    common::refused_in(
        "batch 0",
        |_| {},
        &["speed", "lenet.safetensors", "--batch", "0"],
        &["--batch"],
    );
    common::refused_in(
        "no file",
        |_| {},
        &["speed", "nothing.safetensors"],
        &["nothing.safetensors"],
    );
}
