//! The layer-sequential driver against a PyTorch reference of the same driver run on
//! transformers' `LlamaForCausalLM` (`oracle/oneshot_reference.py`): the same tiny random Llama
//! and calibration windows give the same pruned weights; the command-level pieces (windows,
//! perplexity, writing the directory back) around it.

mod common;

use common::{read_tensors, run_python};
use std::path::Path;
use std::sync::Arc;
use tch::{nn, Device, Kind, Tensor};
use tchprune::llm::{self, Llama, LlamaConfig, OneshotOptions};
use tchprune::{PruningMethod, Registry, VarStorePruner};

fn tiny_model(dir: &Path, seed: i64) -> LlamaConfig {
    let mut config = LlamaConfig::byte_level(64, 2, 4, 192, 32);
    config.vocab_size = 120;
    config.num_key_value_heads = 2;
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Llama::new(&vs.root(), &config).unwrap();
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            let values = match name.ends_with("norm.weight") {
                true => Tensor::rand(t.size(), (Kind::Float, Device::Cpu)) + 0.5,
                false => Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.15,
            };
            t.copy_(&values);
        }
    });
    model.save_new(&vs, dir, None).unwrap();
    config
}

fn reference(
    dir: &Path,
    ids_file: &Path,
    method: &str,
    sparsity: &str,
    nm: &str,
) -> std::collections::HashMap<String, Tensor> {
    let out = ids_file.with_file_name(format!("{method}-{nm}.safetensors"));
    let args: [&Path; 7] = [
        Path::new("oneshot"),
        dir,
        ids_file,
        &out,
        Path::new(method),
        Path::new(sparsity),
        Path::new(nm),
    ];
    run_python("oneshot_reference.py", &args);
    read_tensors(&out)
}

#[test]
fn pruned_weights_equal_the_reference_driver() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("model");
    let config = tiny_model(&dir, 1);
    let tokens: Vec<i64> = (0..4000)
        .map(|i| (i * 7919 % 113 + i / 50) % config.vocab_size)
        .collect();
    let ids = llm::random_windows(&tokens, 16, 32, 7).unwrap();
    let ids_file = scratch.path().join("ids.safetensors");
    Tensor::write_safetensors(&[("input_ids", &ids)], &ids_file).unwrap();
    let registry = Registry::with_builtins();
    for (method, args, sparsity, nm) in [
        ("wanda", serde_json::json!({"sparsity": 0.5}), "0.5", "none"),
        (
            "sparsegpt",
            serde_json::json!({"sparsity": 0.5}),
            "0.5",
            "none",
        ),
        ("sparsegpt", serde_json::json!({"nm": "2:4"}), "0.5", "2:4"),
    ] {
        let loaded = Llama::from_directory(&dir, None, Device::Cpu).unwrap();
        let mut pruner = VarStorePruner::new(&loaded.vs);
        let built: Arc<dyn PruningMethod> = registry.build(method, &args).unwrap();
        let mut blocks_seen = Vec::new();
        let report = llm::oneshot(
            &loaded.model,
            &mut pruner,
            &ids,
            built,
            &OneshotOptions {
                batch_size: 5,
                layers: vec![],
            },
            |p| blocks_seen.push(p.blocks_done),
        )
        .unwrap();
        assert_eq!(blocks_seen, [1, 2]);
        assert_eq!(report.pruned.len(), 14);
        let expected = reference(&dir, &ids_file, method, sparsity, nm);
        assert_eq!(expected.len(), 14);
        let variables = loaded.vs.variables();
        for (key, theirs) in &expected {
            let ours = &variables[key];
            let (our_zeros, their_zeros) = (ours.eq(0.0), theirs.eq(0.0));
            let differing = our_zeros
                .ne_tensor(&their_zeros)
                .sum(Kind::Int64)
                .int64_value(&[]);
            assert!(
                differing * 500 <= ours.numel() as i64,
                "{method} {nm} {key}: {differing} of {} zeros differ",
                ours.numel()
            );
            let both = our_zeros
                .logical_not()
                .logical_and(&their_zeros.logical_not());
            let diff = (ours - theirs)
                .abs()
                .masked_select(&both)
                .max()
                .double_value(&[]);
            let scale = theirs.abs().max().double_value(&[]);
            assert!(
                diff < 1e-3 * scale,
                "{method} {nm} {key}: kept weights differ by {diff} (scale {scale})"
            );
        }
        assert_eq!(
            pruner
                .history("model.layers.1.mlp.down_proj.weight")
                .unwrap()
                .method_names(),
            [method]
        );
    }
}

#[test]
fn magnitude_needs_no_calibration_and_perplexity_rises_with_sparsity() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("model");
    let config = tiny_model(&dir, 2);
    let tokens: Vec<i64> = (0..3000)
        .map(|i| (i * 31 + i / 7) % config.vocab_size)
        .collect();
    let ids = llm::random_windows(&tokens, 8, 32, 3).unwrap();
    let dense = Llama::from_directory(&dir, None, Device::Cpu).unwrap();
    let dense_ppl = llm::perplexity(&dense.model, &ids, 3).unwrap();
    assert!(dense_ppl.is_finite() && dense_ppl > 1.0);
    let mut pruned = Llama::from_directory(&dir, None, Device::Cpu).unwrap();
    let mut pruner = VarStorePruner::new(&pruned.vs);
    let method = Arc::new(tchprune::method::Magnitude::new(0.9, None).unwrap());
    llm::oneshot(
        &pruned.model,
        &mut pruner,
        &ids,
        method,
        &OneshotOptions::default(),
        |_| {},
    )
    .unwrap();
    let sparsity = pruner
        .sparsity(&["model.layers.0.self_attn.q_proj.weight"])
        .unwrap();
    assert_eq!(sparsity[0].zeros, (64.0 * 64.0 * 0.9f64).floor() as i64);
    assert_ne!(llm::perplexity(&pruned.model, &ids, 3).unwrap(), dense_ppl);

    // Written back in the same layout, transformers' names, loadable again.
    let out = scratch.path().join("pruned");
    pruned.save(&out, None).unwrap();
    let again = Llama::from_directory(&out, None, Device::Cpu).unwrap();
    let w = &again.vs.variables()["model.layers.0.self_attn.q_proj.weight"];
    assert_eq!(
        w.eq(0.0).sum(Kind::Int64).int64_value(&[]),
        sparsity[0].zeros
    );
    pruned.vs.freeze();
    // An existing output is refused.
    let error = pruned.save(&out, None).unwrap_err().to_string();
    assert!(error.contains("exists already"), "{error}");
}

#[test]
fn windows_are_reproducible_and_bounded() {
    let tokens: Vec<i64> = (0..100).collect();
    let a = llm::random_windows(&tokens, 4, 10, 1).unwrap();
    let b = llm::random_windows(&tokens, 4, 10, 1).unwrap();
    let c = llm::random_windows(&tokens, 4, 10, 2).unwrap();
    assert!(a.equal(&b) && !a.equal(&c));
    // Every window is 10 consecutive tokens.
    let steps = a.narrow(1, 1, 9) - a.narrow(1, 0, 9);
    assert!(steps.eq(1).all().int64_value(&[]) == 1);
    assert!(llm::random_windows(&tokens, 4, 101, 1).is_err());
}
