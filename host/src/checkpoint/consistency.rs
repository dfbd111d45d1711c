//! The check every checkpoint the command writes passes: what a reader relies on.
//!
//! Why a check at write time: a step that computes the wrong thing (a shrink whose groups named
//! half of a pruned pair, a decompressed file whose keys collide) would otherwise write a file
//! that `stats` reads without complaint and PyTorch refuses, or worse, loads wrong. The check is
//! cheap (shapes and names only, no tensor data), so it runs on every write.

use super::Checkpoint;
use crate::error::{PruneError, Result};
use crate::module::{join, mask_name, split_tensor_path};
use std::collections::{BTreeMap, HashMap};

/// The metadata key of the channel counts `shrink` leaves, by module path (`{"conv1": 4}`).
pub const WIDTHS_METADATA_KEY: &str = "tchprune.widths";

/// Checks that `checkpoint` is self-consistent: every key a dotted path of non-empty names, each
/// pruned pair `P_orig` + `P_mask` of one shape and without a plain `P` beside it, and the
/// widths metadata ([`WIDTHS_METADATA_KEY`]) true of the tensors (dimension 0 of each tensor,
/// scalars aside, of a module it names). Errors name the key.
pub fn check_consistent(checkpoint: &Checkpoint) -> Result<()> {
    let invalid = |reason: String| PruneError::InvalidCheckpoint(reason);
    let shapes: HashMap<&str, Vec<i64>> = (checkpoint.tensors.iter())
        .map(|(key, t)| (key.as_str(), t.size()))
        .collect();
    for (key, shape) in &shapes {
        if key.split('.').any(str::is_empty) {
            return Err(invalid(format!(
                "the key '{key}' is not a dotted path of names (it has an empty part)"
            )));
        }
        let (prefix, name) = split_tensor_path(key);
        let Some(tensor) = name.strip_suffix("_orig").filter(|t| !t.is_empty()) else {
            continue;
        };
        let mask_key = join(prefix, &mask_name(tensor));
        let Some(mask) = shapes.get(mask_key.as_str()) else {
            continue;
        };
        if mask != shape {
            return Err(invalid(format!(
                "'{key}' has shape {shape:?} and its mask '{mask_key}' {mask:?}"
            )));
        }
        let plain = join(prefix, tensor);
        if shapes.contains_key(plain.as_str()) {
            return Err(invalid(format!(
                "'{plain}' is present along with '{key}' and its mask"
            )));
        }
    }
    let Some(text) = checkpoint.metadata.get(WIDTHS_METADATA_KEY) else {
        return Ok(());
    };
    let widths: BTreeMap<String, i64> = serde_json::from_str(text).map_err(|err| {
        invalid(format!(
            "metadata '{WIDTHS_METADATA_KEY}' is not a map of widths: {err}"
        ))
    })?;
    for (module, width) in &widths {
        let mut found = false;
        for (key, shape) in &shapes {
            // A scalar (BatchNorm's `num_batches_tracked`) has no channels.
            if split_tensor_path(key).0 != module || shape.is_empty() {
                continue;
            }
            found = true;
            if shape.first() != Some(width) {
                return Err(invalid(format!(
                    "metadata '{WIDTHS_METADATA_KEY}' gives '{module}' {width} channels, but \
                     '{key}' has shape {shape:?}"
                )));
            }
        }
        if !found {
            return Err(invalid(format!(
                "metadata '{WIDTHS_METADATA_KEY}' names '{module}', which has no tensor"
            )));
        }
    }
    Ok(())
}
