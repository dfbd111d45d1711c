//! Language models: a Llama decoder on tch with Hugging Face's names, and one-shot pruning of
//! its Linear layers with calibration data.

mod config;
mod llama;
mod load;

pub use config::{kind_from_name, kind_name, LlamaConfig, RopeScaling};
pub use llama::{block_linear_names, Attention, DecoderBlock, Linear, Llama, Mlp, RmsNorm, Rope};
pub use load::LoadedLlama;

mod data;
mod oneshot;

pub use data::{byte_tokens, random_windows};
pub use oneshot::{oneshot, perplexity, OneshotOptions, OneshotReport, Progress};
