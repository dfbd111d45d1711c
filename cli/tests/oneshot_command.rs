//! `tchprune oneshot` on Hugging Face directories: what transformers and compressed-tensors
//! read back, calibration as text or ids, and errors that write nothing.

mod common;

use common::{read, run_oracle, tchprune_in};
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};
use tchprune::llm::{Llama, LlamaConfig};

/// A byte-level Llama (vocabulary 256) with random weights, sharded in 3 files, and a README.
fn model_dir(dir: &Path) {
    let config = LlamaConfig::byte_level(64, 2, 4, 128, 64);
    tch::manual_seed(11);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Llama::new(&vs.root(), &config).unwrap();
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            if !name.ends_with("norm.weight") {
                t.copy_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.1));
            }
        }
    });
    model.save_new(&vs, dir, Some(120_000)).unwrap();
    std::fs::write(dir.join("README.md"), "a tiny model\n").unwrap();
}

/// Text every machine has: this very file.
fn calibration_text(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("calibration.txt");
    std::fs::write(&path, include_str!("oneshot_command.rs").repeat(3)).unwrap();
    path
}

fn projections(file: &Path) -> Vec<(String, Tensor)> {
    read(file)
}

#[test]
fn writes_a_directory_transformers_loads() {
    let scratch = tempfile::tempdir().unwrap();
    let input = scratch.path().join("model");
    model_dir(&input);
    let shards = std::fs::read_dir(&input)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".safetensors")
        })
        .count();
    assert!(shards >= 3, "{shards} shards");
    let text = calibration_text(scratch.path());
    let run = tchprune_in(
        scratch.path(),
        &[
            "oneshot",
            "model",
            "--method",
            "sparsegpt",
            "--sparsity",
            "0.5",
            "--calibration",
            text.to_str().unwrap(),
            "--samples",
            "16",
            "--seqlen",
            "32",
            "-o",
            "pruned",
            "--save-calibration",
            "windows.safetensors",
            "--device",
            "cpu",
        ],
    );
    assert!(run.success, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("14 layers of 2 blocks pruned with sparsegpt"),
        "{}",
        run.stdout
    );
    let out = scratch.path().join("pruned");
    // The same layout, the other files copied.
    for entry in std::fs::read_dir(&input).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(out.join(&name).exists(), "{name:?} missing");
    }
    assert_eq!(
        std::fs::read(out.join("README.md")).unwrap(),
        b"a tiny model\n"
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    let total: u64 = tchprune::checkpoint::hf::HfDirectory::open(&out)
        .unwrap()
        .read_all()
        .unwrap()
        .iter()
        .map(|(_, t)| (t.numel() * 4) as u64)
        .sum();
    assert_eq!(index["metadata"]["total_size"], total);
    // transformers loads it; every projection is half zeros.
    let dense = scratch.path().join("dense.safetensors");
    run_oracle("hf_directory.py", &[Path::new("dense"), &out, &dense]);
    let weights = projections(&dense);
    assert_eq!(weights.len(), 14);
    for (key, w) in &weights {
        let zeros = w.eq(0.0).sum(Kind::Int64).int64_value(&[]);
        assert!(
            zeros * 2 >= w.numel() as i64,
            "{key}: {zeros} zeros of {}",
            w.numel()
        );
    }
    // The input is unchanged, no temporary is left beside the output.
    assert!(std::fs::read_dir(scratch.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with('.')));

    // The same windows given as ids give the same weights.
    let run = tchprune_in(
        scratch.path(),
        &[
            "oneshot",
            "model",
            "--method",
            "sparsegpt",
            "--sparsity",
            "0.5",
            "--calibration",
            "windows.safetensors",
            "-o",
            "again",
            "--device",
            "cpu",
            "--quiet",
        ],
    );
    assert!(run.success, "{}", run.stderr);
    let first = tchprune::checkpoint::hf::HfDirectory::open(&out)
        .unwrap()
        .read_all()
        .unwrap();
    let second = tchprune::checkpoint::hf::HfDirectory::open(scratch.path().join("again"))
        .unwrap()
        .read_all()
        .unwrap();
    for ((k1, a), (k2, b)) in first.iter().zip(&second) {
        assert_eq!(k1, k2);
        assert!(a.equal(b), "{k1} differs");
    }
}

#[test]
fn compressed_output_decompresses_to_the_same_weights() {
    let scratch = tempfile::tempdir().unwrap();
    let input = scratch.path().join("model");
    model_dir(&input);
    let text = calibration_text(scratch.path());
    for (args, format) in [
        (
            vec!["--nm", "2:4", "--method", "wanda"],
            "sparse-24-bitmask",
        ),
        (
            vec!["--sparsity", "0.6", "--method", "sparsegpt"],
            "sparse-bitmask",
        ),
    ] {
        let mut common_args = vec![
            "oneshot",
            "model",
            "--calibration",
            text.to_str().unwrap(),
            "--samples",
            "8",
            "--seqlen",
            "32",
            "--device",
            "cpu",
        ];
        common_args.extend(&args);
        let dense_dir = format!("dense-{format}");
        let compressed_dir = format!("compressed-{format}");
        let mut dense_args = common_args.clone();
        dense_args.extend(["-o", &dense_dir]);
        assert!(tchprune_in(scratch.path(), &dense_args).success);
        let mut compressed_args = common_args.clone();
        compressed_args.extend(["-o", &compressed_dir, "--compress"]);
        let run = tchprune_in(scratch.path(), &compressed_args);
        assert!(run.success, "{}", run.stderr);
        let config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(scratch.path().join(&compressed_dir).join("config.json")).unwrap(),
        )
        .unwrap();
        let sparsity = &config["quantization_config"]["sparsity_config"];
        assert_eq!(sparsity["format"], format);
        assert_eq!(
            config["quantization_config"]["quant_method"],
            "compressed-tensors"
        );
        let restored = scratch.path().join(format!("{format}.safetensors"));
        run_oracle(
            "hf_directory.py",
            &[
                Path::new("decompress"),
                &scratch.path().join(&compressed_dir),
                &restored,
            ],
        );
        let expected = scratch.path().join(format!("{format}-dense.safetensors"));
        run_oracle(
            "hf_directory.py",
            &[
                Path::new("dense"),
                &scratch.path().join(&dense_dir),
                &expected,
            ],
        );
        let (restored, expected) = (projections(&restored), projections(&expected));
        assert_eq!(restored.len(), 14);
        for ((k1, a), (k2, b)) in restored.iter().zip(&expected) {
            assert_eq!(k1, k2);
            assert!(a.equal(b), "{format}: {k1} differs after decompression");
        }
    }
}

#[test]
fn errors_name_the_problem_and_write_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    model_dir(&scratch.path().join("model"));
    let text = calibration_text(scratch.path());
    let ids = Tensor::from_slice(&[1i64, 2, 300, 4]).view([1, 4]);
    common::write(
        &scratch.path().join("bad-ids.safetensors"),
        &[("input_ids", &ids)],
    );
    let cases: [(Vec<&str>, &str); 5] = [
        (
            vec!["--calibration", "missing.txt", "--sparsity", "0.5"],
            "missing.txt",
        ),
        (
            vec!["--calibration", "bad-ids.safetensors", "--sparsity", "0.5"],
            "outside the vocabulary of 256",
        ),
        (
            vec![
                "--calibration",
                text.to_str().unwrap(),
                "--sparsity",
                "0.5",
                "--seqlen",
                "100000000",
            ],
            "cannot be drawn",
        ),
        (
            vec!["--calibration", text.to_str().unwrap(), "--nm", "4:2"],
            "'4:2'",
        ),
        (
            vec!["--calibration", text.to_str().unwrap(), "--sparsity", "1.5"],
            "sparsity",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec![
            "oneshot", "model", "--method", "wanda", "-o", "out", "--device", "cpu",
        ];
        all.extend(&args);
        let run = tchprune_in(scratch.path(), &all);
        assert!(!run.success, "{args:?} succeeded");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
        assert!(!scratch.path().join("out").exists());
    }
    // An existing output is refused.
    std::fs::create_dir(scratch.path().join("taken")).unwrap();
    std::fs::write(scratch.path().join("taken/x"), "keep").unwrap();
    let run = tchprune_in(
        scratch.path(),
        &[
            "oneshot",
            "model",
            "--method",
            "magnitude",
            "--sparsity",
            "0.5",
            "--calibration",
            text.to_str().unwrap(),
            "-o",
            "taken",
            "--device",
            "cpu",
        ],
    );
    assert!(
        !run.success && run.stderr.contains("exists already"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(scratch.path().join("taken/x")).unwrap(),
        b"keep"
    );
}
