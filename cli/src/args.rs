//! The command line.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Prune safetensors checkpoints the way torch.nn.utils.prune does, from a declarative plan.
#[derive(Debug, Parser)]
#[command(name = "tchprune", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prune INPUT by the steps of PLAN.json and write OUTPUT (never INPUT).
    Apply {
        /// The safetensors state_dict to prune (read only).
        input: PathBuf,
        /// The plan: {"seed": 7, "plugins": [...], "steps": [{"method": ..., "params": [...], ...}]}.
        #[arg(long)]
        plan: PathBuf,
        /// Where to write the pruned state_dict (atomically).
        #[arg(long, short)]
        output: PathBuf,
        /// A plugin file (or a directory of them) with more methods; repeat for several.
        #[arg(long = "plugin", value_name = "PATH")]
        plugins: Vec<PathBuf>,
        /// The dtype of the written masks: the parameter's (PyTorch loads it as is) or bool.
        #[arg(long, value_enum, default_value_t = MaskDtypeArg::Same)]
        mask_dtype: MaskDtypeArg,
    },
    /// Per-parameter and total sparsity of a safetensors state_dict.
    Stats {
        /// The safetensors file.
        file: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The pruning methods available: name, PRUNING_TYPE, origin.
    Methods {
        /// A plugin file (or a directory of them) whose methods to list too; repeat for several.
        #[arg(long = "plugin", value_name = "PATH")]
        plugins: Vec<PathBuf>,
    },
    /// Make every pruning of INPUT permanent (PyTorch's prune.remove) and write OUTPUT.
    Finalize {
        /// The pruned safetensors state_dict (read only).
        input: PathBuf,
        /// Where to write the plain state_dict (atomically).
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Write INPUT's weights in compressed-tensors' sparse-bitmask layout (non-zero values and a
    /// bitmask) to OUTPUT; a pruned INPUT is made permanent first.
    Compress {
        /// The safetensors state_dict, pruned or not (read only).
        input: PathBuf,
        /// Where to write the compressed state_dict (atomically).
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Restore the dense weights of a sparse-bitmask checkpoint and write OUTPUT.
    Decompress {
        /// The compressed safetensors state_dict (read only).
        input: PathBuf,
        /// Where to write the dense state_dict (atomically).
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Remove the channels that structured pruning zeroed (in every layer that writes or reads
    /// them, residual connections included) and write the smaller OUTPUT with its new widths.
    Shrink {
        /// The safetensors state_dict, pruned or not (read only).
        input: PathBuf,
        /// Where to write the smaller state_dict (atomically).
        #[arg(long, short, required_unless_present = "print_groups")]
        output: Option<PathBuf>,
        /// The built-in model whose dependency groups to trace (auto: the one INPUT is).
        #[arg(long, default_value = "auto", conflicts_with = "groups")]
        model: String,
        /// Declared groups (JSON, the form --print-groups prints) for other models.
        #[arg(long, value_name = "FILE")]
        groups: Option<PathBuf>,
        /// Print the dependency groups as JSON and write nothing.
        #[arg(long)]
        print_groups: bool,
        /// The dtype of the written masks: the parameter's (PyTorch loads it as is) or bool.
        #[arg(long, value_enum, default_value_t = MaskDtypeArg::Same)]
        mask_dtype: MaskDtypeArg,
    },
    /// Time each pruned linear and convolution weight of FILE on this machine, dense against
    /// tchprune's sparse kernels, and say which form is faster (convolutions of a built-in
    /// model, at their input sizes).
    Speed {
        /// The safetensors state_dict (read only).
        file: PathBuf,
        /// The batch size to time at.
        #[arg(long, default_value_t = 1)]
        batch: i64,
        /// Timed calls of each form per layer (the median counts).
        #[arg(long, default_value_t = 7)]
        calls: usize,
        /// The built-in model FILE holds, whose convolutions to time at their input sizes
        /// (auto: the one FILE is, if any; none: linear layers only).
        #[arg(long, default_value = "auto")]
        model: String,
        /// The model's input image, HEIGHTxWIDTH (default: the model's, 28x28 for LeNet,
        /// 224x224 for the ResNets).
        #[arg(long, value_name = "HxW", value_parser = parse_image_size)]
        image_size: Option<[i64; 2]>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Prune a Hugging Face Llama directory one-shot with calibration data (Wanda, SparseGPT,
    /// magnitude) and write the pruned model as a Hugging Face directory.
    Oneshot(Box<OneshotArgs>),
    /// Run the pruning tutorial on the built-in LeNet.
    Demo,
}

/// `tchprune oneshot`.
#[derive(Debug, clap::Args)]
pub struct OneshotArgs {
    /// The model: a Hugging Face directory (config.json, model.safetensors or shards with
    /// model.safetensors.index.json) of a LlamaForCausalLM (read only).
    pub model: PathBuf,
    /// The method: sparsegpt, wanda, magnitude, or a plugin's.
    #[arg(long)]
    pub method: String,
    /// The fraction of each layer's weights to prune.
    #[arg(long, conflicts_with = "nm", required_unless_present = "nm")]
    pub sparsity: Option<f64>,
    /// N:M sparsity instead ("2:4": 2 of every 4 consecutive inputs pruned).
    #[arg(long, value_name = "N:M")]
    pub nm: Option<String>,
    /// Calibration data: text (tokenized by the model's tokenizer.json, or as bytes when the
    /// vocabulary is the 256 byte values), or token ids (.safetensors with `input_ids`
    /// [samples, seqlen], or .json: a list of lists of ids), used as they are.
    #[arg(long, value_name = "FILE")]
    pub calibration: PathBuf,
    /// Calibration windows drawn from text.
    #[arg(long, default_value_t = 128)]
    pub samples: i64,
    /// Tokens per calibration window.
    #[arg(long, default_value_t = 256)]
    pub seqlen: i64,
    /// Seed of the windows' positions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the pruned model (a new directory, written beside and renamed into place).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Write the weights in compressed-tensors' sparse-bitmask layout (sparse-24-bitmask for
    /// 2:4), with the sparsity config in config.json, as llm-compressor does.
    #[arg(long)]
    pub compress: bool,
    /// cpu, cuda, cuda:N, or auto (CUDA when there is one).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// The dtype to run in: auto (config.json's), f32, bf16 or f16. Statistics and solves are
    /// f32 whatever it is; weights are written in the checkpoint's dtype.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Calibration sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: i64,
    /// SparseGPT's dampening, as a fraction of the Hessian's mean diagonal.
    #[arg(long)]
    pub dampening: Option<f64>,
    /// SparseGPT's columns per block.
    #[arg(long)]
    pub block_size: Option<i64>,
    /// Also write the calibration windows used (safetensors, `input_ids`), to give another tool
    /// the same tokens.
    #[arg(long, value_name = "FILE")]
    pub save_calibration: Option<PathBuf>,
    /// A plugin file (or a directory of them) with more methods; repeat for several.
    #[arg(long = "plugin", value_name = "PATH")]
    pub plugins: Vec<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MaskDtypeArg {
    /// The parameter's dtype.
    Same,
    /// bool, one byte per entry.
    Bool,
}

/// `HxW` (or one number for a square) as `[height, width]`.
fn parse_image_size(text: &str) -> Result<[i64; 2], String> {
    let parse = |side: &str| match side.trim().parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("'{text}' is not HEIGHTxWIDTH with positive sides")),
    };
    match text.split_once(['x', 'X']) {
        Some((h, w)) => Ok([parse(h)?, parse(w)?]),
        None => parse(text).map(|n| [n, n]),
    }
}
