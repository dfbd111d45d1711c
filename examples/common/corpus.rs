//! A byte corpus every machine that runs the project has: the Python standard library's `.py`
//! sources, split into train, calibration and evaluation sets by file.
//!
//! A file goes to one set by a hash of its path relative to the library (FNV-1a): evaluation
//! when the hash is 0 modulo 10, calibration when 1, training otherwise. Splitting by file keeps
//! a module's text out of the set it is evaluated on.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The three sets, each the concatenation of its files' bytes (in path order).
#[derive(Debug, Default)]
pub struct Corpus {
    /// Training bytes.
    pub train: Vec<u8>,
    /// Calibration bytes (pruning).
    pub calibration: Vec<u8>,
    /// Evaluation bytes (perplexity).
    pub eval: Vec<u8>,
    /// Files read.
    pub files: usize,
}

/// FNV-1a over `bytes`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Corpus {
    /// Reads every `.py` file under `dir` (not under `site-packages`).
    pub fn read(dir: &Path) -> Result<Self> {
        let mut files = Vec::new();
        collect(dir, &mut files)?;
        files.sort();
        if files.is_empty() {
            bail!("{}: no .py files", dir.display());
        }
        let mut corpus = Corpus::default();
        for file in &files {
            let relative = file.strip_prefix(dir).unwrap_or(file);
            let bytes = std::fs::read(file).with_context(|| file.display().to_string())?;
            let set = match fnv1a(relative.to_string_lossy().as_bytes()) % 10 {
                0 => &mut corpus.eval,
                1 => &mut corpus.calibration,
                _ => &mut corpus.train,
            };
            set.extend_from_slice(&bytes);
            corpus.files += 1;
        }
        Ok(corpus)
    }
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if entry.file_name() != "site-packages" && entry.file_name() != "__pycache__" {
                collect(&path, files)?;
            }
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "py") {
            files.push(path);
        }
    }
    Ok(())
}

/// The standard library directory of the bootstrap's Python (`TCHPRUNE_PYTHON`), or of
/// `python3`.
pub fn python_stdlib() -> Result<PathBuf> {
    let python = std::env::var_os("TCHPRUNE_PYTHON").unwrap_or_else(|| "python3".into());
    let output = std::process::Command::new(&python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()
        .with_context(|| format!("running {}", python.to_string_lossy()))?;
    if !output.status.success() {
        bail!(
            "{} could not tell its standard library",
            python.to_string_lossy()
        );
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}
