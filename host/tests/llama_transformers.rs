//! The Llama decoder against transformers' `LlamaForCausalLM`: the same weights (written by
//! tchprune as a Hugging Face directory, read by transformers) give the same logits within 1e-4
//! in f32, with grouped-query attention, biases, tied embeddings, RoPE scaling and shards; the
//! directory loads back in f32, bf16 and f16.

mod common;

use common::{read_tensors, run_python};
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};
use tchprune::llm::{Llama, LlamaConfig, RopeScaling};

fn config(variant: &str) -> LlamaConfig {
    let mut c = LlamaConfig::byte_level(64, 2, 4, 96, 32);
    c.vocab_size = 120;
    match variant {
        "gqa" => c.num_key_value_heads = 2,
        "bias_tied" => {
            c.attention_bias = true;
            c.mlp_bias = true;
            c.tie_word_embeddings = true;
        }
        "llama3" => {
            c.num_key_value_heads = 1;
            c.rope_theta = 500_000.0;
            c.rope_scaling = RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 16.0,
            };
        }
        _ => {}
    }
    c
}

/// A model with weights large enough that every part of the forward pass matters.
fn random_model(config: &LlamaConfig, seed: i64) -> (nn::VarStore, Llama) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Llama::new(&vs.root(), config).unwrap();
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            let values = match name.ends_with("norm.weight") {
                true => Tensor::rand(t.size(), (Kind::Float, Device::Cpu)) + 0.5,
                false => Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.15,
            };
            t.copy_(&values);
        }
    });
    (vs, model)
}

fn max_difference(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

fn ids(config: &LlamaConfig) -> Tensor {
    Tensor::randint(config.vocab_size, [3, 32], (Kind::Int64, Device::Cpu))
}

fn transformers_logits(dir: &Path, ids: &Tensor) -> Tensor {
    let scratch = tempfile::tempdir().unwrap();
    let ids_file = scratch.path().join("ids.safetensors");
    Tensor::write_safetensors(&[("input_ids", ids)], &ids_file).unwrap();
    let out = scratch.path().join("logits.safetensors");
    run_python(
        "oneshot_reference.py",
        &[Path::new("logits"), dir, &ids_file, &out],
    );
    read_tensors(&out).remove("logits").unwrap()
}

#[test]
fn logits_equal_transformers_in_f32() {
    for (i, variant) in ["plain", "gqa", "bias_tied", "llama3"]
        .into_iter()
        .enumerate()
    {
        let config = config(variant);
        let (vs, model) = random_model(&config, 10 + i as i64);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("model");
        // One variant sharded (shards of at most 40 KB), the others in one file.
        let shard = (variant == "gqa").then_some(40_000);
        model.save_new(&vs, &out, shard).unwrap();
        if shard.is_some() {
            assert!(out.join("model.safetensors.index.json").exists());
        }
        let ids = ids(&config);
        let ours = tch::no_grad(|| model.forward(&ids));
        let theirs = transformers_logits(&out, &ids);
        assert_eq!(ours.size(), theirs.size());
        let diff = max_difference(&ours, &theirs);
        assert!(
            diff < 1e-4,
            "{variant}: logits differ from transformers' by {diff}"
        );
        assert!(
            ours.abs().max().double_value(&[]) > 0.1,
            "{variant}: logits too small to tell"
        );

        let loaded = Llama::from_directory(&out, None, Device::Cpu).unwrap();
        let reloaded = tch::no_grad(|| loaded.model.forward(&ids));
        assert_eq!(
            max_difference(&reloaded, &ours),
            0.0,
            "{variant}: reloaded model differs"
        );
    }
}

#[test]
fn loads_in_half_precision() {
    let config = config("gqa");
    let (vs, model) = random_model(&config, 3);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    model.save_new(&vs, &out, None).unwrap();
    let ids = ids(&config);
    let reference = tch::no_grad(|| model.forward(&ids));
    let scale = reference.abs().max().double_value(&[]);
    for kind in [Kind::BFloat16, Kind::Half] {
        let loaded = Llama::from_directory(&out, Some(kind), Device::Cpu).unwrap();
        assert!(loaded.vs.variables().values().all(|v| v.kind() == kind));
        let logits = tch::no_grad(|| loaded.model.forward(&ids));
        assert_eq!(logits.kind(), kind);
        let diff = max_difference(&logits, &reference);
        assert!(
            diff < 0.05 * scale,
            "{kind:?}: logits off by {diff} (scale {scale})"
        );
    }
}

#[test]
fn refuses_a_checkpoint_of_another_shape_naming_the_key() {
    let config = config("plain");
    let (vs, model) = random_model(&config, 4);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    model.save_new(&vs, &out, None).unwrap();
    let mut other = serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(out.join("config.json")).unwrap(),
    )
    .unwrap();
    other["intermediate_size"] = serde_json::json!(100);
    std::fs::write(out.join("config.json"), other.to_string()).unwrap();
    let error = Llama::from_directory(&out, None, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("mlp.down_proj.weight") || error.contains("mlp.gate_proj.weight"),
        "{error}"
    );
    assert!(error.contains("shape"), "{error}");

    other["model_type"] = serde_json::json!("gpt2");
    std::fs::write(out.join("config.json"), other.to_string()).unwrap();
    let error = Llama::from_directory(&out, None, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(error.contains("model_type 'gpt2'"), "{error}");
}

#[test]
fn runs_on_cuda_like_on_the_cpu() {
    if !tch::Cuda::is_available() {
        eprintln!("skipped: no CUDA device");
        return;
    }
    let config = config("gqa");
    let (vs, model) = random_model(&config, 5);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    model.save_new(&vs, &out, None).unwrap();
    let ids = ids(&config);
    let reference = tch::no_grad(|| model.forward(&ids));
    let loaded = Llama::from_directory(&out, Some(Kind::Float), Device::Cuda(0)).unwrap();
    let logits = tch::no_grad(|| loaded.model.forward(&ids.to_device(Device::Cuda(0))));
    let diff = max_difference(&logits.to_device(Device::Cpu), &reference);
    assert!(diff < 1e-3, "CUDA logits differ by {diff}");
}
