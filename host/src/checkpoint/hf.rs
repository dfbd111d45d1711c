//! Hugging Face model directories: `config.json`, the weights in `model.safetensors` or in
//! shards listed by `model.safetensors.index.json`, and whatever else the model ships
//! (tokenizer, generation config, README).
//!
//! Opening a directory reads only the index and the shards' headers, and checks that they agree
//! before any weight is read: every listed shard exists in the directory (a plain file name: no
//! `..`, no absolute path, no symlink that leads outside), every tensor of a shard is listed for
//! that shard and no tensor is in two. Writing one produces the same layout (the same shard
//! names, each tensor in its shard, a new index with the right `total_size`, every other file
//! copied unchanged) in a temporary directory beside the output, renamed into place at the end:
//! the output appears whole or not at all.

use super::file::{read, read_header, write, Checkpoint};
use crate::error::{PruneError, Result};
use crate::files;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::Tensor;

/// The index file of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The single weights file of an unsharded one.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The model's architecture.
pub const CONFIG_FILE: &str = "config.json";

/// One weights file of a directory and the tensors it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Its file name in the directory.
    pub file: String,
    /// Its tensors' keys, sorted.
    pub keys: Vec<String>,
}

/// A Hugging Face model directory, checked.
#[derive(Debug)]
pub struct HfDirectory {
    root: PathBuf,
    config: Option<Value>,
    shards: Vec<Shard>,
    /// The index's `metadata`, when the weights are sharded.
    index_metadata: Option<Map<String, Value>>,
}

fn invalid(path: &Path, reason: impl Into<String>) -> PruneError {
    PruneError::InvalidFile {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// The largest `config.json` or index read.
const JSON_LIMIT: u64 = 256 << 20;

impl HfDirectory {
    /// Opens the directory at `path` (or the directory of the index file `path`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|error| PruneError::Io {
            path: path.display().to_string(),
            error,
        })?;
        let (root, index) = if meta.is_dir() {
            let index = path.join(INDEX_FILE);
            (path.to_path_buf(), index.exists().then_some(index))
        } else {
            let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let root = if root.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                root
            };
            (root, Some(path.to_path_buf()))
        };
        let config_path = root.join(CONFIG_FILE);
        let config = match config_path.exists() {
            true => Some(read_json(&config_path)?),
            false => None,
        };
        let (shards, index_metadata) = match index {
            Some(index) => read_index(&root, &index)?,
            None => {
                let single = root.join(SINGLE_FILE);
                if !single.exists() {
                    return Err(invalid(
                        &root,
                        format!("not a Hugging Face model directory: no {SINGLE_FILE} and no {INDEX_FILE}"),
                    ));
                }
                let keys = shard_keys(&single)?;
                (
                    vec![Shard {
                        file: SINGLE_FILE.to_owned(),
                        keys,
                    }],
                    None,
                )
            }
        };
        Ok(Self {
            root,
            config,
            shards,
            index_metadata,
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The parsed `config.json`, if there is one.
    pub fn config(&self) -> Option<&Value> {
        self.config.as_ref()
    }

    /// The weights files, in the order of their names.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// True when the weights are sharded (listed by an index).
    pub fn is_sharded(&self) -> bool {
        self.index_metadata.is_some()
    }

    /// Reads one shard (its tensors on the CPU).
    pub fn read_shard(&self, shard: &Shard) -> Result<Checkpoint> {
        read(self.root.join(&shard.file))
    }

    /// Every tensor of every shard, sorted by key.
    pub fn read_all(&self) -> Result<Vec<(String, Tensor)>> {
        let mut tensors = Vec::new();
        for shard in &self.shards {
            tensors.extend(self.read_shard(shard)?.tensors);
        }
        tensors.sort_by(|(a, _), (b, _)| a.cmp(b));
        Ok(tensors)
    }

    /// The files of the directory that are neither weights nor the index (config, tokenizer,
    /// README...), by name.
    pub fn other_files(&self) -> Result<Vec<String>> {
        let io = |error| PruneError::Io {
            path: self.root.display().to_string(),
            error,
        };
        let weights: std::collections::HashSet<&str> =
            self.shards.iter().map(|s| s.file.as_str()).collect();
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io)? {
            let entry = entry.map_err(io)?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if weights.contains(name.as_str()) || name == INDEX_FILE {
                continue;
            }
            if std::fs::metadata(entry.path())
                .map(|m| m.is_file())
                .unwrap_or(false)
            {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Writes a directory of the same layout at `output`: each shard's tensors as `tensors`
    /// returns them (keys may change: the new index follows), `config` as `config.json` (or the
    /// input's, copied), every other file copied. Written beside `output` and renamed into place;
    /// `output` must not exist yet (an empty directory is replaced).
    pub fn write_like(
        &self,
        output: impl AsRef<Path>,
        config: Option<&Value>,
        mut tensors: impl FnMut(&Shard) -> Result<Checkpoint>,
    ) -> Result<()> {
        let output = output.as_ref();
        check_output(Some(&self.root), output)?;
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |error| PruneError::Io { path, error }
        };
        let staging = files::StagingDirectory::beside(output)?;
        let mut weight_map = BTreeMap::new();
        let mut total_size: u64 = 0;
        for shard in &self.shards {
            let checkpoint = tensors(shard)?;
            for (key, t) in &checkpoint.tensors {
                weight_map.insert(key.clone(), shard.file.clone());
                total_size += (t.numel() * t.kind().elt_size_in_bytes()) as u64;
            }
            write(
                &checkpoint.tensors,
                &checkpoint.metadata,
                staging.path().join(&shard.file),
            )?;
        }
        if let Some(metadata) = &self.index_metadata {
            let mut metadata = metadata.clone();
            metadata.insert("total_size".to_owned(), json!(total_size));
            let index = json!({"metadata": metadata, "weight_map": weight_map});
            write_json(&staging.path().join(INDEX_FILE), &index)?;
        }
        for other in self.other_files()? {
            let target = staging.path().join(&other);
            if other == CONFIG_FILE {
                if let Some(config) = config {
                    write_json(&target, config)?;
                    continue;
                }
            }
            let source = self.root.join(&other);
            std::fs::copy(&source, &target).map_err(io(&source))?;
        }
        if let (Some(config), None) = (config, &self.config) {
            write_json(&staging.path().join(CONFIG_FILE), config)?;
        }
        staging.publish(output)
    }
}

/// Writes a new Hugging Face directory at `output`: `config` as `config.json` and `tensors` in
/// `model.safetensors`, or, when they take more than `max_shard_bytes`, in shards of at most
/// that much (a tensor larger than that alone in its shard) named `model-00001-of-0000N.safetensors`
/// with an index, as transformers' `save_pretrained` lays them out. The directory appears whole
/// or not at all; `output` must not exist yet (an empty directory is replaced).
pub fn write_new(
    output: impl AsRef<Path>,
    config: &Value,
    tensors: &[(String, Tensor)],
    max_shard_bytes: Option<u64>,
) -> Result<()> {
    let output = output.as_ref();
    check_output(None, output)?;
    let staging = files::StagingDirectory::beside(output)?;
    let bytes = |t: &Tensor| (t.numel() * t.kind().elt_size_in_bytes()) as u64;
    let total: u64 = tensors.iter().map(|(_, t)| bytes(t)).sum();
    let limit = max_shard_bytes.unwrap_or(u64::MAX);
    let mut shards: Vec<Vec<(String, Tensor)>> = vec![Vec::new()];
    let mut current = 0;
    for (key, t) in tensors {
        if current > 0 && current + bytes(t) > limit {
            shards.push(Vec::new());
            current = 0;
        }
        current += bytes(t);
        shards
            .last_mut()
            .expect("one shard at least")
            .push((key.clone(), t.shallow_clone()));
    }
    let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
    if shards.len() == 1 {
        write(&shards[0], &metadata, staging.path().join(SINGLE_FILE))?;
    } else {
        let count = shards.len();
        let mut weight_map = BTreeMap::new();
        for (i, shard) in shards.iter().enumerate() {
            let file = format!("model-{:05}-of-{count:05}.safetensors", i + 1);
            for (key, _) in shard {
                weight_map.insert(key.clone(), file.clone());
            }
            write(shard, &metadata, staging.path().join(&file))?;
        }
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        write_json(&staging.path().join(INDEX_FILE), &index)?;
    }
    write_json(&staging.path().join(CONFIG_FILE), config)?;
    staging.publish(output)
}

/// Fails when `output` exists (other than as an empty directory) or is the `input` directory.
fn check_output(input: Option<&Path>, output: &Path) -> Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(output) {
        let empty_dir = meta.is_dir()
            && std::fs::read_dir(output)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !empty_dir {
            return Err(invalid(
                output,
                "exists already: give a new directory (outputs never replace what is there)",
            ));
        }
    }
    let Some(input) = input else {
        return Ok(());
    };
    if let (Ok(a), Ok(b)) = (input.canonicalize(), output.canonicalize()) {
        if a == b {
            return Err(PruneError::SameFile {
                input: input.display().to_string(),
                output: output.display().to_string(),
            });
        }
    }
    Ok(())
}

/// Reads a JSON file of bounded size.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let bytes = files::read_bounded(path, JSON_LIMIT)?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(path, format!("not valid JSON: {e}")))
}

/// Writes `value` as indented JSON, atomically.
pub(crate) fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialize") + "\n";
    files::write_atomically(path, |file| {
        use std::io::Write;
        file.write_all(text.as_bytes())
            .map_err(|error| PruneError::Io {
                path: path.display().to_string(),
                error,
            })
    })
}

/// The keys of the safetensors file at `path`, sorted, from its header alone.
fn shard_keys(path: &Path) -> Result<Vec<String>> {
    let file = files::open_regular(path)?;
    let mut keys: Vec<String> = read_header(&file, path)?
        .infos
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    keys.sort();
    Ok(keys)
}

/// The shards an index lists, checked against their headers, and the index's metadata.
/// The shards of an index and its metadata.
type Index = (Vec<Shard>, Option<Map<String, Value>>);

fn read_index(root: &Path, index: &Path) -> Result<Index> {
    let value = read_json(index)?;
    let bad = |reason: String| invalid(index, reason);
    let weight_map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no \"weight_map\" object".to_owned()))?;
    let metadata = match value.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => return Err(bad(format!("\"metadata\" is {other}, not an object"))),
    };
    let mut listed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, file) in weight_map {
        let file = file.as_str().ok_or_else(|| {
            bad(format!(
                "tensor '{key}': the shard {file} is not a file name"
            ))
        })?;
        let plain = Path::new(file).components().count() == 1
            && !file.is_empty()
            && !file.starts_with('.')
            && !file.contains('/');
        if !plain {
            return Err(bad(format!(
                "tensor '{key}': the shard '{file}' is not a file of the directory (paths outside it \
                 are refused)"
            )));
        }
        listed.entry(file.to_owned()).or_default().push(key.clone());
    }
    let canonical_root = root.canonicalize().map_err(|error| PruneError::Io {
        path: root.display().to_string(),
        error,
    })?;
    let mut shards = Vec::with_capacity(listed.len());
    let mut owner: HashMap<String, String> = HashMap::new();
    for (file, mut keys) in listed {
        let path = root.join(&file);
        if !path.exists() {
            return Err(bad(format!("lists the shard '{file}', which is missing")));
        }
        let resolved = path.canonicalize().map_err(|error| PruneError::Io {
            path: path.display().to_string(),
            error,
        })?;
        if resolved.parent() != Some(canonical_root.as_path()) {
            return Err(bad(format!(
                "the shard '{file}' leads outside the directory (to {})",
                resolved.display()
            )));
        }
        let present = shard_keys(&path)?;
        keys.sort();
        for key in &present {
            if let Some(other) = owner.insert(key.clone(), file.clone()) {
                return Err(bad(format!(
                    "the tensor '{key}' is in two shards: '{other}' and '{file}'"
                )));
            }
        }
        if present != keys {
            let missing = keys.iter().find(|k| present.binary_search(k).is_err());
            let extra = present.iter().find(|k| keys.binary_search(k).is_err());
            let reason = match (missing, extra) {
                (Some(k), _) => format!("lists '{k}' in '{file}', which does not hold it"),
                (None, Some(k)) => {
                    format!("'{file}' holds '{k}', which the index does not list there")
                }
                _ => unreachable!("sorted lists that differ have an entry one lacks"),
            };
            return Err(bad(reason));
        }
        shards.push(Shard { file, keys });
    }
    if shards.is_empty() {
        return Err(bad("lists no tensors".to_owned()));
    }
    Ok((shards, Some(metadata)))
}
