//! The table: which workloads, their targets, and how the results are shown and written.

use anyhow::Result;
use serde_json::{json, Value};
use std::fmt::Write;
use std::path::Path;

/// How a workload's numbers compare.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Compare {
    /// Seconds on both sides; the ratio is tchprune / PyTorch.
    Time,
    /// Each library against itself (pruned / unpruned); the target is on tchprune's.
    SelfRatio,
    /// As `SelfRatio`, and the target is PyTorch's own ratio: tchprune's must not be worse.
    NotWorseThanPytorch,
    /// Each library's speedup over its dense layer (PyTorch's: its CSR matmul); the ratio is
    /// tchprune's speedup over PyTorch's, the target a minimum.
    SpeedupOverPytorch,
    /// As `SpeedupOverPytorch`, but the ratio is tchprune's own speedup over dense.
    Speedup,
}

/// One workload of the table.
pub struct Workload {
    pub id: &'static str,
    pub label: &'static str,
    pub compare: Compare,
    pub target: f64,
    /// Run on both sides in a child process whose malloc keeps freed memory
    /// ([`KEEP_FREED_MEMORY`]), instead of in the benchmark's processes as they are.
    pub kept_memory: bool,
    /// Needs a CUDA device: skipped (with a message) where there is none.
    pub gpu: bool,
}

/// glibc's malloc settings for the `kept_memory` workloads: buffers up to 256 MiB come from the
/// heap, and the heap is not handed back to the kernel below 1 GiB. By default glibc returns
/// freed 16 MiB buffers to the kernel and faults them back in on the next step, and how often
/// it does depends on the process's history, so it moves the training-step ratios of both
/// libraries by tens of percent from run to run.
pub const KEEP_FREED_MEMORY: (&str, &str) = (
    "GLIBC_TUNABLES",
    "glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=1073741824",
);

pub const WORKLOADS: &[Workload] = &[
    Workload {
        id: "l1_unstructured_4096",
        label: "l1_unstructured, 4096x4096 f32, amount 0.5",
        compare: Compare::Time,
        target: 0.2,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "random_unstructured_4096",
        label: "random_unstructured, 4096x4096 f32, amount 0.5",
        compare: Compare::Time,
        target: 0.2,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "ln_structured_4096",
        label: "ln_structured n=2 dim=0, 4096x4096 f32",
        compare: Compare::Time,
        target: 1.0,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "remove_4096",
        label: "remove, 4096x4096 f32",
        compare: Compare::Time,
        target: 1.0,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "global_resnet50",
        label: "global_unstructured L1 0.8, ResNet-50 conv/linear weights (25.5M)",
        compare: Compare::Time,
        target: 0.2,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "global_resnet50_round2",
        label: "global_unstructured L1 0.5 on top (second round)",
        compare: Compare::Time,
        target: 0.2,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "tutorial_lenet",
        label: "the seed tutorial's pruning sequence on LeNet",
        compare: Compare::Time,
        target: 0.5,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "mlp_eval_overhead",
        label: "eval forward, MLP 3x2048 batch 64: 90% pruned / unpruned",
        compare: Compare::SelfRatio,
        target: 1.05,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "mlp_train_overhead",
        label: "training step, same MLP: 90% pruned / unpruned",
        compare: Compare::SelfRatio,
        target: 1.15,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "mlp_train_overhead_kept_memory",
        label: "training step, same MLP, malloc keeping freed memory (both sides)",
        compare: Compare::SelfRatio,
        target: 1.15,
        kept_memory: true,
        gpu: false,
    },
    Workload {
        id: "train_step_varstore",
        label: "training step with Adam, same MLP in tch's layers: 90% pruned through a \
                VarStorePruner with MaskedAdam / unpruned with tch's Adam (PyTorch: its \
                reparametrization, torch.optim.Adam)",
        compare: Compare::SelfRatio,
        target: 1.05,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "train_step_varstore_tch_adam",
        label: "the same, pruned through a VarStorePruner with tch's Adam then its masks \
                (bit for bit the Module path's training)",
        compare: Compare::SelfRatio,
        target: 1.15,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "train_step_module_adam",
        label: "training step with Adam, the Module path's MLP: 90% pruned (PyTorch's \
                reparametrization) / unpruned",
        compare: Compare::NotWorseThanPytorch,
        target: f64::NAN,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "train_step_module_masked_adam",
        label: "the same, the Module path's MLP 90% pruned trained with MaskedAdam / unpruned \
                with tch's Adam",
        compare: Compare::SelfRatio,
        target: 1.15,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "many_keys",
        label: "a plan of l1_unstructured over every weight of 100,000 small tensors, file to \
                file; then the output's sparsity",
        compare: Compare::Time,
        target: 2.0,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "state_bytes",
        label: "pruned / unpruned state bytes, ResNet-50 at 80%",
        compare: Compare::SelfRatio,
        target: 1.3,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "shrink_lenet_b1",
        label: "eval forward, LeNet batch 1 (1x28x28): half of every group's channels removed (shrink; PyTorch: Torch-Pruning) / the masked model",
        compare: Compare::SelfRatio,
        target: 1.0,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "shrink_lenet_b32",
        label: "eval forward, LeNet batch 32 (1x28x28): half of every group's channels removed (shrink; PyTorch: Torch-Pruning) / the masked model",
        compare: Compare::SelfRatio,
        target: 1.0,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "shrink_resnet18_b1",
        label: "eval forward, ResNet-18 (10 classes) batch 1 (3x112x112): half of every group's channels removed (shrink; PyTorch: Torch-Pruning) / the masked model",
        compare: Compare::SelfRatio,
        target: 1.0,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "shrink_resnet18_b32",
        label: "eval forward, ResNet-18 (10 classes) batch 32 (3x112x112): half of every group's channels removed (shrink; PyTorch: Torch-Pruning) / the masked model",
        compare: Compare::SelfRatio,
        target: 1.0,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparse_linear_90_b1",
        label: "speedup over dense linear, 4096x4096 f32 at 90% sparsity, batch 1: tchprune's sparse kernel vs libtorch's CSR (MKL)",
        compare: Compare::SpeedupOverPytorch,
        target: 1.5,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparse_linear_90_b8",
        label: "speedup over dense linear, 4096x4096 f32 at 90% sparsity, batch 8: tchprune's sparse kernel vs libtorch's CSR (MKL)",
        compare: Compare::SpeedupOverPytorch,
        target: 1.5,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparse_linear_90_b64",
        label: "speedup over dense linear, 4096x4096 f32 at 90% sparsity, batch 64: tchprune's sparse kernel vs libtorch's CSR (MKL)",
        compare: Compare::SpeedupOverPytorch,
        target: 1.5,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparse_linear_95_b1",
        label: "speedup over dense linear, 4096x4096 f32 at 95% sparsity, batch 1: tchprune's sparse kernel vs libtorch's CSR (MKL)",
        compare: Compare::SpeedupOverPytorch,
        target: 1.5,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparse_linear_95_b8",
        label: "speedup over dense linear, 4096x4096 f32 at 95% sparsity, batch 8: tchprune's sparse kernel vs libtorch's CSR (MKL)",
        compare: Compare::SpeedupOverPytorch,
        target: 1.5,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparse_linear_95_b64",
        label: "speedup over dense linear, 4096x4096 f32 at 95% sparsity, batch 64: tchprune's sparse kernel vs libtorch's CSR (MKL)",
        compare: Compare::SpeedupOverPytorch,
        target: 1.5,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparse_tall_95_b8",
        label: "speedup over dense linear, 16384x256 f32 at 95% sparsity (about 13 non-zeros per row), batch 8: tchprune's sparse kernel vs libtorch's CSR (MKL)",
        compare: Compare::SpeedupOverPytorch,
        target: 1.5,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparse_tall_95_b64",
        label: "speedup over dense linear, 16384x256 f32 at 95% sparsity (about 13 non-zeros per row), batch 64: tchprune's sparse kernel vs libtorch's CSR (MKL)",
        compare: Compare::SpeedupOverPytorch,
        target: 1.5,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparse_cnn_95",
        label: "eval forward, VGG-style CNN (4 convs 3x3 to 128 channels, 3x56x56) at 95% but the first conv, batch 1: speedup over dense (sparsify_with_input; PyTorch: unfold + CSR)",
        compare: Compare::Speedup,
        target: 1.5,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparse_mlp_95",
        label: "eval forward, MLP 3x2048 at 95% (every layer), batch 1: speedup over dense (PyTorch: CSR)",
        compare: Compare::Speedup,
        target: 3.0,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparse_mlp_95_b8",
        label: "eval forward, MLP 3x2048 at 95% (every layer), batch 8: speedup over dense (PyTorch: CSR)",
        compare: Compare::Speedup,
        target: 3.0,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparse_mlp_95_bf16",
        label: "eval forward, MLP 3x2048 in bf16 at 95% (every layer), batch 1: speedup over dense bf16 (PyTorch: CSR in f32, its CPU CSR has no bf16)",
        compare: Compare::SpeedupOverPytorch,
        target: 1.5,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparse_mlp_95_bf16_b8",
        label: "eval forward, MLP 3x2048 in bf16 at 95% (every layer), batch 8: speedup over dense bf16 (PyTorch: CSR in f32, its CPU CSR has no bf16)",
        compare: Compare::SpeedupOverPytorch,
        target: 1.5,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparse_conv_95_64x56",
        label: "eval forward, conv 3x3 64->64 on 56x56 at 95%, batch 1: speedup over dense conv2d (PyTorch: unfold + CSR)",
        compare: Compare::Speedup,
        target: 1.0,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparse_conv_95_128x28",
        label: "eval forward, conv 3x3 128->128 on 28x28 at 95%, batch 1: speedup over dense conv2d (PyTorch: unfold + CSR)",
        compare: Compare::Speedup,
        target: 1.0,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparse_conv_95_256x14",
        label: "eval forward, conv 3x3 256->256 on 14x14 at 95%, batch 1: speedup over dense conv2d (PyTorch: unfold + CSR)",
        compare: Compare::Speedup,
        target: 1.0,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparse_conv_95_512x7",
        label: "eval forward, conv 3x3 512->512 on 7x7 at 95%, batch 1: speedup over dense conv2d (PyTorch: unfold + CSR)",
        compare: Compare::Speedup,
        target: 1.0,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparse_conv_95_256x7_b8",
        label: "eval forward, conv 3x3 256->256 on 7x7 at 95%, batch 8: speedup over dense conv2d (PyTorch: unfold + CSR)",
        compare: Compare::Speedup,
        target: 1.0,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "l1_unstructured_4096_cuda",
        label: "l1_unstructured, 4096x4096 f32 on CUDA, amount 0.5",
        compare: Compare::Time,
        target: 1.0,
        kept_memory: false,
        gpu: true,
    },
    Workload {
        id: "ln_structured_4096_cuda",
        label: "ln_structured n=2 dim=0, 4096x4096 f32 on CUDA",
        compare: Compare::Time,
        target: 1.0,
        kept_memory: false,
        gpu: true,
    },
    Workload {
        id: "global_resnet50_cuda",
        label: "global_unstructured L1 0.8, ResNet-50 conv/linear weights on CUDA",
        compare: Compare::Time,
        target: 1.0,
        kept_memory: false,
        gpu: true,
    },
    Workload {
        id: "semi_structured_4096_b4096",
        label: "2:4 fp16 linear 4096x4096, batch 4096, on CUDA: speedup over dense (PyTorch: to_sparse_semi_structured, cuSPARSELt)",
        compare: Compare::SpeedupOverPytorch,
        target: 1.0,
        kept_memory: false,
        gpu: true,
    },
    Workload {
        id: "semi_structured_8192_b8192",
        label: "2:4 fp16 linear 8192x8192, batch 8192, on CUDA: speedup over dense (PyTorch: to_sparse_semi_structured, cuSPARSELt)",
        compare: Compare::SpeedupOverPytorch,
        target: 1.0,
        kept_memory: false,
        gpu: true,
    },
    Workload {
        id: "semi_structured_16384_b4096",
        label: "2:4 fp16 linear 16384x16384, batch 4096, on CUDA: speedup over dense (PyTorch: to_sparse_semi_structured, cuSPARSELt)",
        compare: Compare::SpeedupOverPytorch,
        target: 1.0,
        kept_memory: false,
        gpu: true,
    },
    Workload {
        id: "oneshot_wanda_llama",
        label: "oneshot Wanda 50%, byte-level Llama 3.3M, 128x256 calibration tokens (peer: llm-compressor 0.14 oneshot)",
        compare: Compare::Time,
        target: 0.2,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "oneshot_sparsegpt_llama",
        label: "oneshot SparseGPT 50%, same model and tokens (peer: llm-compressor 0.14 oneshot)",
        compare: Compare::Time,
        target: 0.2,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "sparsegpt_layer_4096x11008",
        label: "SparseGPT solve given H, one 4096x11008 layer, 50% (vs PyTorch reference)",
        compare: Compare::Time,
        target: 0.5,
        kept_memory: false,
        gpu: false,
    },
    Workload {
        id: "oneshot_wanda_llama_cuda",
        label: "oneshot Wanda 50%, byte-level Llama, CUDA (peer: PyTorch reference of the driver)",
        compare: Compare::Time,
        target: 0.2,
        kept_memory: false,
        gpu: true,
    },
    Workload {
        id: "oneshot_sparsegpt_llama_cuda",
        label: "oneshot SparseGPT 50%, byte-level Llama, CUDA (peer: PyTorch reference of the driver)",
        compare: Compare::Time,
        target: 0.2,
        kept_memory: false,
        gpu: true,
    },
    Workload {
        id: "sparsegpt_layer_4096x11008_cuda",
        label: "SparseGPT solve given H, 4096x11008, 50%, CUDA",
        compare: Compare::Time,
        target: 0.2,
        kept_memory: false,
        gpu: true,
    },
    Workload {
        id: "sparsegpt_layer_4096x11008_24_cuda",
        label: "SparseGPT solve given H, 4096x11008, 2:4, CUDA",
        compare: Compare::Time,
        target: 0.2,
        kept_memory: false,
        gpu: true,
    },
];

/// A line of the table.
#[derive(Debug)]
pub struct Row {
    pub workload: String,
    pub pytorch: String,
    pub tchprune: String,
    pub ratio: Option<f64>,
    pub target: String,
    pub met: Option<bool>,
}

fn seconds(v: f64) -> String {
    if v < 1.0 {
        format!("{:.1} ms", v * 1e3)
    } else {
        format!("{v:.2} s")
    }
}

/// A library's pruned / unpruned ratio, with the two timings when there are some.
fn self_ratio(result: &Value) -> String {
    let ratio = result["ratio"].as_f64().unwrap_or(f64::NAN);
    match (
        result["dense_seconds"].as_f64(),
        result["pruned_seconds"].as_f64(),
    ) {
        (Some(dense), Some(pruned)) => {
            let fused = result["dense_masked_adam_seconds"]
                .as_f64()
                .map(|s| format!("; unpruned with MaskedAdam {}", seconds(s)))
                .or_else(|| {
                    let counts = result["parameters"].as_array()?;
                    let (dense, small) = (counts.first()?.as_u64()?, counts.get(1)?.as_u64()?);
                    Some(format!("; weights {dense} -> {small}"))
                })
                .unwrap_or_default();
            format!(
                "{ratio:.2}x ({} / {}{fused})",
                seconds(pruned),
                seconds(dense)
            )
        }
        _ => format!("{ratio:.2}x"),
    }
}

/// Dense seconds over sparse seconds.
fn speedup(result: &Value) -> f64 {
    let dense = result["dense_seconds"].as_f64().unwrap_or(f64::NAN);
    dense / result["sparse_seconds"].as_f64().unwrap_or(f64::NAN)
}

fn speedup_text(result: &Value) -> String {
    format!(
        "{:.2}x ({} / {})",
        speedup(result),
        seconds(result["dense_seconds"].as_f64().unwrap_or(f64::NAN)),
        seconds(result["sparse_seconds"].as_f64().unwrap_or(f64::NAN))
    )
}

/// The rows from both sides' JSON results.
pub fn rows(pytorch: &Value, ours: &Value, huge: Option<&Value>) -> Vec<Row> {
    let mut rows = Vec::new();
    for w in WORKLOADS {
        let (Some(theirs), Some(mine)) = (pytorch.get(w.id), ours.get(w.id)) else {
            continue;
        };
        let mut push = |label: String, theirs: &Value, mine: &Value| {
            let (pytorch, tchprune, ratio) = match w.compare {
                Compare::Time => {
                    let (a, b) = (
                        theirs["seconds"].as_f64().unwrap_or(f64::NAN),
                        mine["seconds"].as_f64().unwrap_or(f64::NAN),
                    );
                    (seconds(a), seconds(b), b / a)
                }
                Compare::SelfRatio | Compare::NotWorseThanPytorch => {
                    let ours = mine["ratio"].as_f64().unwrap_or(f64::NAN);
                    (self_ratio(theirs), self_ratio(mine), ours)
                }
                Compare::SpeedupOverPytorch | Compare::Speedup => {
                    let (a, b) = (speedup(theirs), speedup(mine));
                    let ratio = if w.compare == Compare::Speedup {
                        b
                    } else {
                        b / a
                    };
                    (speedup_text(theirs), speedup_text(mine), ratio)
                }
            };
            let (target, met) = match w.compare {
                Compare::NotWorseThanPytorch => {
                    let theirs = theirs["ratio"].as_f64().unwrap_or(f64::NAN);
                    (format!("<= PyTorch's ({theirs:.3})"), ratio <= theirs)
                }
                Compare::SpeedupOverPytorch | Compare::Speedup => {
                    (format!(">= {}", w.target), ratio >= w.target)
                }
                _ => (format!("<= {}", w.target), ratio <= w.target),
            };
            rows.push(Row {
                workload: label,
                pytorch,
                tchprune,
                ratio: Some(ratio),
                target,
                met: Some(met),
            });
        };
        if w.id == "state_bytes" {
            for place in ["memory", "disk"] {
                push(
                    format!("{} ({place})", w.label),
                    &theirs[place],
                    &mine[place],
                );
            }
        } else if w.id == "many_keys" {
            for part in ["apply", "stats"] {
                many_keys_row(&mut rows, w, part, &theirs[part], &mine[part]);
            }
        } else {
            push(w.label.to_owned(), theirs, mine);
        }
    }
    if let Some(huge) = huge {
        let peak = huge["peak_rss_bytes"].as_f64().unwrap_or(f64::NAN) / (1u64 << 30) as f64;
        rows.push(Row {
            workload: format!(
                "global L1 {} over {} bf16 entries (> 2^31)",
                huge["amount"], huge["entries"]
            ),
            pytorch: "cannot".to_owned(),
            tchprune: format!(
                "{}, peak {peak:.1} GiB",
                seconds(huge["seconds"].as_f64().unwrap_or(f64::NAN))
            ),
            ratio: None,
            target: "works, < 24 GiB".to_owned(),
            met: Some(peak < 24.0),
        });
    }
    rows
}

/// A row of [`Workload`] `many_keys`, whose target is tchprune's time in seconds.
fn many_keys_row(rows: &mut Vec<Row>, w: &Workload, part: &str, theirs: &Value, mine: &Value) {
    let (theirs, mine) = (
        theirs["seconds"].as_f64().unwrap_or(f64::NAN),
        mine["seconds"].as_f64().unwrap_or(f64::NAN),
    );
    rows.push(Row {
        workload: format!("{} ({part})", w.label),
        pytorch: seconds(theirs),
        tchprune: seconds(mine),
        ratio: Some(mine / theirs),
        target: format!("tchprune <= {} s", w.target),
        met: Some(mine <= w.target),
    });
}

/// The table as Markdown (which also reads well in a terminal).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| workload | PyTorch | tchprune | ratio | target | met |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let ratio = r
            .ratio
            .map(|x| format!("{x:.3}"))
            .unwrap_or_else(|| "-".to_owned());
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {ratio} | {} | {met} |",
            r.workload, r.pytorch, r.tchprune, r.target
        );
    }
    out
}

/// What the numbers were measured on.
pub fn machine(torch: &str) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<f64>()
                    .unwrap_or(0.0)
                    / (1u64 << 20) as f64
            })
        })
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cpu}, {cores} cores, {memory:.0} GiB; PyTorch (version, threads): {torch}; libtorch for tchprune: the same wheel")
}

/// Writes `bench/results.json` and, for a full run, `BENCHMARKS.md`, under `root`.
pub fn write(root: &Path, rows: &[Row], machine: &str, full: bool) -> Result<()> {
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let json = json!({
        "date": date,
        "machine": machine,
        "rows": rows.iter().map(|r| json!({
            "workload": r.workload, "pytorch": r.pytorch, "tchprune": r.tchprune,
            "ratio": r.ratio, "target": r.target, "met": r.met,
        })).collect::<Vec<_>>(),
    });
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let json_path = if full {
        root.join("bench/results.json")
    } else {
        dir.join("results.json")
    };
    write_text(&json_path, &serde_json::to_string_pretty(&json)?)?;
    let markdown = format!(
        "# Benchmarks: tchprune vs PyTorch, same run, same machine\n\n\
         Last full run: {date}, on {machine}.\n\
         Produced by `./scripts/bench.sh` (medians of several runs; ratio = tchprune / PyTorch for \
         times, each library's pruned / unpruned for overheads and sizes). Overheads time the \
         pruned and the unpruned model alternately. Every row runs with glibc's default malloc, \
         except the one that says otherwise: that workload runs on both sides in a child process \
         with `{}={}`.\n\n{}\n",
        KEEP_FREED_MEMORY.0,
        KEEP_FREED_MEMORY.1,
        table(rows)
    );
    let md_path = if full {
        root.join("BENCHMARKS.md")
    } else {
        dir.join("BENCHMARKS.md")
    };
    write_text(&md_path, &markdown)?;
    eprintln!("wrote {} and {}", json_path.display(), md_path.display());
    Ok(())
}

/// Writes `text` to `path` atomically.
fn write_text(path: &Path, text: &str) -> Result<()> {
    Ok(tchprune::checkpoint::write_atomically(path, |file| {
        std::io::Write::write_all(file, text.as_bytes()).map_err(|error| tchprune::PruneError::Io {
            path: path.display().to_string(),
            error,
        })
    })?)
}
