//! Reading a plan file and checking its shape.

use crate::error::{PruneError, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// A pruning plan: optional seed and plugins, and the steps in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Seeds libtorch's generator before the first step, for the random methods.
    pub seed: Option<i64>,
    /// Plugin files to load, resolved against the plan's directory.
    pub plugins: Vec<PathBuf>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Where the plan came from, for messages.
    pub source: String,
}

/// One step of a [`Plan`].
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The step's number, from 1.
    pub number: usize,
    /// The method's name (`"remove"` and `"global_unstructured"` included).
    pub method: String,
    /// Parameter keys or glob patterns.
    pub params: Vec<String>,
    /// Importance scores under the parameters' keys, resolved against the plan's directory.
    pub scores_file: Option<PathBuf>,
    /// Masks for `custom_from_mask` under the parameters' keys, resolved likewise.
    pub mask_file: Option<PathBuf>,
    /// Every other key of the step: the method's own arguments (for `global_unstructured`,
    /// `pruning_method` and the arguments of that method).
    pub arguments: Map<String, Value>,
}

const PLAN_KEYS: &[&str] = &["seed", "plugins", "steps"];

/// The largest plan file read (plans with inline masks are the large ones).
pub const MAX_PLAN_BYTES: u64 = 64 << 20;

/// The most JSON values (numbers, strings, lists, objects) a plan may hold. Parsed, each takes
/// 32 bytes or more, 16 times the two bytes of text a `0,` takes: without a bound, a 60 MB plan
/// of 30M numbers needed 5.7 GB before its unknown argument was refused. 4M values (an inline
/// mask of a 2048x2048 layer) parse into about 128 MiB.
pub const MAX_PLAN_VALUES: usize = 4 << 20;

/// An upper bound of the number of JSON values in `text`, found without parsing it: the commas
/// and openings outside strings, plus one.
fn json_values(text: &str) -> usize {
    let (mut count, mut in_string, mut escaped) = (1, false, false);
    for byte in text.bytes() {
        match (in_string, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b',' | b'[' | b'{') => count += 1,
            _ => {}
        }
    }
    count
}

impl Plan {
    /// Reads the plan file at `path` (a regular file of at most [`MAX_PLAN_BYTES`]); relative
    /// paths in it are relative to its directory.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let invalid = |reason: String| PruneError::InvalidPlan {
            path: path.display().to_string(),
            reason,
        };
        let bytes = crate::files::read_bounded(path, MAX_PLAN_BYTES).map_err(|err| match err {
            PruneError::TooLarge { limit, .. } => invalid(format!(
                "larger than {} MiB: refused (masks that large belong in a mask_file)",
                limit >> 20
            )),
            PruneError::NotRegularFile { kind, .. } => {
                invalid(format!("not a regular file (a {kind})"))
            }
            PruneError::Io { error, .. } => invalid(format!("cannot be read: {error}")),
            other => other,
        })?;
        let text =
            String::from_utf8(bytes).map_err(|err| invalid(format!("not UTF-8 text: {err}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_json(&text, base, &path.display().to_string())
    }

    /// Parses a plan from JSON text; relative paths are resolved against `base`, and `source`
    /// names the plan in messages.
    pub fn from_json(text: &str, base: &Path, source: &str) -> Result<Self> {
        let invalid = |reason: String| PruneError::InvalidPlan {
            path: source.to_owned(),
            reason,
        };
        let values = json_values(text);
        if values > MAX_PLAN_VALUES {
            return Err(invalid(format!(
                "about {values} JSON values, more than the {MAX_PLAN_VALUES} a plan may hold \
                 (masks that large belong in a mask_file)"
            )));
        }
        let value: Value =
            serde_json::from_str(text).map_err(|err| invalid(format!("not valid JSON: {err}")))?;
        let Value::Object(top) = value else {
            return Err(invalid("the plan must be a JSON object".to_owned()));
        };
        if let Some(key) = top.keys().find(|k| !PLAN_KEYS.contains(&k.as_str())) {
            return Err(invalid(format!(
                "unknown key '{key}' (a plan has {})",
                PLAN_KEYS.join(", ")
            )));
        }
        let seed = match top.get("seed") {
            None => None,
            Some(seed) => Some(
                seed.as_i64()
                    .ok_or_else(|| invalid(format!("'seed' must be an integer, got {seed}")))?,
            ),
        };
        let plugins = match top.get("plugins") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str().map(|p| base.join(p)).ok_or_else(|| {
                        invalid(format!("'plugins' must list file paths, got {item}"))
                    })
                })
                .collect::<Result<_>>()?,
            Some(other) => return Err(invalid(format!("'plugins' must be a list, got {other}"))),
        };
        let mut top = top;
        let steps = match top.remove("steps") {
            Some(Value::Array(steps)) => steps,
            Some(other) => return Err(invalid(format!("'steps' must be a list, got {other}"))),
            None => return Err(invalid("missing 'steps'".to_owned())),
        };
        let steps = steps
            .into_iter()
            .enumerate()
            .map(|(i, step)| {
                Step::parse(i + 1, step, base)
                    .map_err(|reason| invalid(format!("step {}: {reason}", i + 1)))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            seed,
            plugins,
            steps,
            source: source.to_owned(),
        })
    }
}

impl Step {
    fn parse(number: usize, value: Value, base: &Path) -> std::result::Result<Self, String> {
        let Value::Object(mut arguments) = value else {
            return Err(format!("a step must be a JSON object, got {value}"));
        };
        let method = match arguments.remove("method") {
            Some(Value::String(method)) => method,
            Some(other) => return Err(format!("'method' must be a string, got {other}")),
            None => return Err("missing 'method'".to_owned()),
        };
        let params = match arguments.remove("params") {
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("'params' must list keys or patterns, got {item}"))
                })
                .collect::<std::result::Result<_, _>>()?,
            Some(Value::Array(_)) => return Err("'params' is empty".to_owned()),
            Some(other) => return Err(format!("'params' must be a list, got {other}")),
            None => return Err("missing 'params'".to_owned()),
        };
        let mut file = |key: &str| match arguments.remove(key) {
            None => Ok(None),
            Some(Value::String(path)) => Ok(Some(base.join(path))),
            Some(other) => Err(format!("'{key}' must be a file path, got {other}")),
        };
        let scores_file = file("scores_file")?;
        let mask_file = file("mask_file")?;
        Ok(Self {
            number,
            method,
            params,
            scores_file,
            mask_file,
            arguments,
        })
    }
}
