//! Loading a Llama from a Hugging Face directory into a `VarStore`, and writing one back.
//!
//! The weights are read shard by shard and copied into variables created as zeros in the
//! requested dtype on the requested device, so the peak beside the model is one shard. Every
//! variable must be found in the checkpoint and every checkpoint tensor must be a variable (a
//! tied `lm_head.weight` and rotary `inv_freq` buffers, which transformers also ignores, are
//! skipped), with matching shapes: a checkpoint of another model is refused naming the key.

use super::config::LlamaConfig;
use super::llama::Llama;
use crate::checkpoint::hf::HfDirectory;
use crate::checkpoint::sparse_bitmask::{compress_weights, quantization_config, SparseFormat};
use crate::checkpoint::Checkpoint;
use crate::error::{PruneError, Result};
use std::collections::HashSet;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// A Llama loaded from a directory: its variables, the model, and the directory it came from.
pub struct LoadedLlama {
    /// The variables, under Hugging Face's names.
    pub vs: nn::VarStore,
    /// The model.
    pub model: Llama,
    /// The directory it was read from (for writing the pruned model in the same layout).
    pub source: HfDirectory,
}

impl std::fmt::Debug for LoadedLlama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedLlama")
            .field("config", self.model.config())
            .field("source", &self.source.root())
            .finish_non_exhaustive()
    }
}

/// Keys a checkpoint may hold that are no variable.
fn ignored(key: &str, config: &LlamaConfig) -> bool {
    key.ends_with("rotary_emb.inv_freq") || (config.tie_word_embeddings && key == "lm_head.weight")
}

impl Llama {
    /// Loads the Hugging Face directory `dir` (`config.json` and `model.safetensors`, or shards
    /// with `model.safetensors.index.json`) in `kind` (the config's dtype when `None`, f32 when
    /// it has none) on `device`.
    ///
    /// ```no_run
    /// use tch::{Device, Kind};
    /// use tchprune::llm::Llama;
    ///
    /// let loaded = Llama::from_directory("my-llama", Some(Kind::BFloat16), Device::Cuda(0))?;
    /// println!("{} blocks", loaded.model.blocks().len());
    /// # Ok::<(), tchprune::PruneError>(())
    /// ```
    pub fn from_directory(
        dir: impl AsRef<Path>,
        kind: Option<Kind>,
        device: Device,
    ) -> Result<LoadedLlama> {
        let source = HfDirectory::open(dir.as_ref())?;
        let config_json = source.config().ok_or_else(|| PruneError::InvalidFile {
            path: source.root().display().to_string(),
            reason: "no config.json: the architecture is unknown".to_owned(),
        })?;
        let config = LlamaConfig::from_json(config_json)?;
        let kind = kind.or(config.dtype).unwrap_or(Kind::Float);
        let mut vs = nn::VarStore::new(device);
        let model = Llama::with_std(&vs.root(), &config, 0.0)?;
        vs.set_kind(kind);
        let variables = vs.variables();
        let mut seen = HashSet::new();
        for shard in source.shards() {
            let Checkpoint { tensors, .. } = source.read_shard(shard)?;
            let file = source.root().join(&shard.file);
            for (key, tensor) in tensors {
                let bad = |reason: String| PruneError::InvalidFile {
                    path: file.display().to_string(),
                    reason: format!("key '{key}': {reason}"),
                };
                let Some(variable) = variables.get(&key) else {
                    if ignored(&key, &config) {
                        continue;
                    }
                    return Err(bad(
                        "not a parameter of LlamaForCausalLM with this config.json".to_owned(),
                    ));
                };
                if tensor.size() != variable.size() {
                    return Err(bad(format!(
                        "shape {:?}, where config.json gives {:?}",
                        tensor.size(),
                        variable.size()
                    )));
                }
                if !tensor.is_floating_point() {
                    return Err(bad(format!(
                        "dtype {:?} is not a floating dtype",
                        tensor.kind()
                    )));
                }
                tch::no_grad(|| variable.shallow_clone().f_copy_(&tensor))?;
                seen.insert(key);
            }
        }
        let mut missing: Vec<&String> = variables.keys().filter(|k| !seen.contains(*k)).collect();
        missing.sort();
        if let Some(first) = missing.first() {
            return Err(PruneError::InvalidFile {
                path: source.root().display().to_string(),
                reason: format!(
                    "no tensor '{first}' in the weights ({} of the model's {} are missing)",
                    missing.len(),
                    variables.len()
                ),
            });
        }
        Ok(LoadedLlama { vs, model, source })
    }
}

impl Llama {
    /// Writes the model whose variables are `vs` as a new Hugging Face directory at `output`
    /// (`config.json` and the weights in their current dtype; sharded above `max_shard_bytes`).
    pub fn save_new(
        &self,
        vs: &nn::VarStore,
        output: impl AsRef<Path>,
        max_shard_bytes: Option<u64>,
    ) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .map(|(k, v)| (k, v.detach().to_device(Device::Cpu)))
            .collect();
        tensors.sort_by(|(a, _), (b, _)| a.cmp(b));
        let mut config = self.config().clone();
        config.dtype = tensors.first().map(|(_, t)| t.kind());
        crate::checkpoint::hf::write_new(output, &config.to_json(), &tensors, max_shard_bytes)
    }
}

impl LoadedLlama {
    /// Writes the model's current weights to `output` in the layout of the directory it came
    /// from (same shards, new index, other files copied; `config` as `config.json` when given),
    /// each tensor in the dtype it was read in. The directory appears whole or not at all.
    pub fn save(&self, output: impl AsRef<Path>, config: Option<&serde_json::Value>) -> Result<()> {
        self.source
            .write_like(output, config, |shard| self.current_shard(shard))
    }

    /// The tensors of `shard` with the model's current values, each in the dtype it was read in.
    fn current_shard(&self, shard: &crate::checkpoint::hf::Shard) -> Result<Checkpoint> {
        let variables = self.vs.variables();
        let mut checkpoint = self.source.read_shard(shard)?;
        for (key, tensor) in &mut checkpoint.tensors {
            if let Some(variable) = variables.get(key) {
                let kind = tensor.kind();
                *tensor = variable
                    .detach()
                    .f_to_device(Device::Cpu)?
                    .f_to_kind(kind)?;
            }
        }
        Ok(checkpoint)
    }

    /// Like [`LoadedLlama::save`], with the decoder blocks' Linear weights in compressed-tensors'
    /// `format` and its `quantization_config` added to `config.json` (targets `Linear`, `lm_head`
    /// ignored), as llm-compressor writes a sparse model: compressed-tensors' `ModelCompressor`
    /// restores the dense weights.
    pub fn save_compressed(&self, output: impl AsRef<Path>, format: SparseFormat) -> Result<()> {
        let variables = self.vs.variables();
        let (zeros, total) = variables.values().fold((0i64, 0i64), |(z, n), v| {
            let zeros = v.eq(0.0).sum(Kind::Int64).int64_value(&[]);
            (z + zeros, n + v.numel() as i64)
        });
        let global = if total == 0 {
            0.0
        } else {
            zeros as f64 / total as f64
        };
        let mut config = self
            .source
            .config()
            .cloned()
            .unwrap_or_else(|| self.model.config().to_json());
        config["quantization_config"] =
            quantization_config(format, global, &["Linear"], &["lm_head"]);
        let is_target =
            |key: &str| key.starts_with("model.layers.") && key.ends_with("_proj.weight");
        self.source.write_like(output, Some(&config), |shard| {
            let mut checkpoint = self.current_shard(shard)?;
            compress_weights(&mut checkpoint.tensors, is_target, format)?;
            Ok(checkpoint)
        })
    }

    /// The weights as a state_dict on the CPU, sorted by key.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .map(|(k, v)| (k, v.detach().to_device(Device::Cpu)))
            .collect();
        out.sort_by(|(a, _), (b, _)| a.cmp(b));
        out
    }
}
