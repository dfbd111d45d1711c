//! Helpers for the command's tests: running it, the PyTorch oracle, and the workspace's
//! shared helpers (plugin builds, snapshots).
#![allow(dead_code)]

#[path = "../../../tests/common/mod.rs"]
pub mod workspace;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::Tensor;

/// The result of one run of `tchprune`.
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `tchprune` with `args` in `dir`.
pub fn tchprune_in(dir: &Path, args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_tchprune"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("tchprune runs");
    Run {
        success: status.success(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// The bootstrap's Python (with torch 2.11), from `.cargo/config.toml`.
pub fn python() -> PathBuf {
    std::env::var_os("TCHPRUNE_PYTHON")
        .expect("TCHPRUNE_PYTHON is not set: run scripts/bootstrap.sh first")
        .into()
}

/// Runs the oracle script `name` (under `cli/tests/oracle/`) with `args`.
pub fn run_oracle(name: &str, args: &[&Path]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/oracle")
        .join(name);
    let output = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .expect("the bootstrap's python runs");
    assert!(
        output.status.success(),
        "{name} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Writes `tensors` to `path` as safetensors.
pub fn write(path: &Path, tensors: &[(&str, &Tensor)]) {
    let owned: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| (k.to_string(), t.shallow_clone()))
        .collect();
    tchprune::checkpoint::write(&owned, &Default::default(), path).unwrap();
}

/// The tensors of a safetensors file, sorted by key.
pub fn read(path: &Path) -> Vec<(String, Tensor)> {
    tchprune::checkpoint::read(path).unwrap().tensors
}

/// The tensor `key` of a safetensors file.
pub fn tensor(path: &Path, key: &str) -> Tensor {
    read(path)
        .into_iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("{} has no key {key}", path.display()))
        .1
}

/// Whether two tensors have the same dtype, shape and bits.
pub fn identical(a: &Tensor, b: &Tensor) -> bool {
    a.kind() == b.kind() && a.size() == b.size() && {
        let (a, b) = (a.contiguous(), b.contiguous());
        let bytes = |t: &Tensor| -> Vec<u8> {
            let n = t.numel() * t.kind().elt_size_in_bytes();
            let mut out = vec![0u8; n];
            t.copy_data_u8(&mut out, t.numel());
            out
        };
        bytes(&a) == bytes(&b)
    }
}

/// LeNet's state_dict written to `dir/lenet.safetensors`: the same weights in every call of
/// the process (drawn once, since tests on other threads share libtorch's generator).
pub fn lenet_checkpoint(dir: &Path) -> PathBuf {
    static LENET: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let bytes = LENET.get_or_init(|| {
        tch::manual_seed(0);
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let model = tchprune::layers::lenet(&vs.root());
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join("lenet.safetensors");
        tchprune::checkpoint::save(&model, &path).unwrap();
        std::fs::read(path).unwrap()
    });
    let path = dir.join("lenet.safetensors");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Writes `plan` to `dir/plan.json`.
pub fn write_plan(dir: &Path, plan: &serde_json::Value) {
    std::fs::write(dir.join("plan.json"), plan.to_string()).unwrap();
}

/// Applies `plan` to LeNet in a fresh directory; returns the directory and the run.
pub fn apply_to_lenet(plan: &serde_json::Value, extra: &[&str]) -> (tempfile::TempDir, Run) {
    let dir = tempfile::tempdir().unwrap();
    lenet_checkpoint(dir.path());
    write_plan(dir.path(), plan);
    let run = apply(
        dir.path(),
        "lenet.safetensors",
        "plan.json",
        "out.safetensors",
        extra,
    );
    (dir, run)
}

/// The arguments of `tchprune apply INPUT --plan plan.json -o OUTPUT`.
pub fn apply_args<'a>(input: &'a str, output: &'a str) -> [&'a str; 6] {
    ["apply", input, "--plan", "plan.json", "-o", output]
}

/// Runs `tchprune apply INPUT --plan PLAN -o OUTPUT EXTRA...` in `dir`.
pub fn apply(dir: &Path, input: &str, plan: &str, output: &str, extra: &[&str]) -> Run {
    let mut args = vec!["apply", input, "--plan", plan, "-o", output];
    args.extend_from_slice(extra);
    tchprune_in(dir, &args)
}

/// The number of zeros of a tensor.
pub fn zeros(t: &Tensor) -> i64 {
    t.eq(0).sum(tch::Kind::Int64).int64_value(&[])
}

/// Runs `tchprune args` in a fresh directory holding LeNet's checkpoint and whatever `setup`
/// adds, and checks the refusal: a non-zero exit, one line on stderr starting with
/// `tchprune: error:` and holding every fragment, no file changed or left behind.
pub fn refused_in(
    name: &str,
    setup: impl FnOnce(&Path),
    args: &[&str],
    fragments: &[&str],
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    lenet_checkpoint(dir.path());
    setup(dir.path());
    let before = listing(dir.path());
    let run = tchprune_in(dir.path(), args);
    assert!(!run.success, "{name}: tchprune succeeded");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{name}: not one line:\n{}", run.stderr);
    assert!(
        lines[0].starts_with("tchprune: error: "),
        "{name}: {}",
        lines[0]
    );
    for fragment in fragments {
        assert!(
            lines[0].contains(fragment),
            "{name}: '{fragment}' missing from: {}",
            lines[0]
        );
    }
    assert_eq!(listing(dir.path()), before, "{name}: files changed");
    dir
}

/// The files of `dir` (hidden ones included) with their sizes, sorted.
pub fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let len = std::fs::symlink_metadata(e.path()).unwrap().len();
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect();
    files.sort();
    files
}
