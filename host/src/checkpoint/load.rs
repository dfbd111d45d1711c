//! Loading a state_dict into a model whose code you have.

use crate::error::{PruneError, Result};
use crate::method::custom::to_binary_mask;
use crate::module::{join, mask_name, orig_name, split_tensor_path, Module};
use std::collections::{BTreeSet, HashMap};
use tch::Tensor;

/// What [`load_state_dict`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Tensors whose reparametrization was restored from `P_orig`/`P_mask` keys.
    pub restored: Vec<String>,
    /// Keys of the model that the checkpoint lacks (left as they were).
    pub missing: Vec<String>,
    /// Keys of the checkpoint that the model has no place for (ignored).
    pub unexpected: Vec<String>,
}

/// Loads `state` into `module`, restoring pruned tensors that the model does not have pruned.
///
/// With `strict`, any missing or unexpected key is an error that names them. Shapes must match
/// exactly and dtypes too (masks may come in any dtype, with values 0 and 1). On error the module
/// is unchanged.
pub fn load_state_dict(
    module: &mut Module,
    state: &[(String, Tensor)],
    strict: bool,
) -> Result<LoadReport> {
    let given: HashMap<&str, &Tensor> = state.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut restorations = Vec::new();
    for (prefix, sub) in module.named_modules() {
        for (name, _) in sub.parameters() {
            let key = join(&prefix, name);
            let (orig, mask) = (
                join(&prefix, &orig_name(name)),
                join(&prefix, &mask_name(name)),
            );
            if !given.contains_key(key.as_str())
                && given.contains_key(orig.as_str())
                && given.contains_key(mask.as_str())
            {
                let mask = to_binary_mask(given[mask.as_str()], &mask)?;
                restorations.push((key, mask));
            }
        }
    }

    let restored: HashMap<&str, &Tensor> = restorations
        .iter()
        .map(|(k, mask)| (k.as_str(), mask))
        .collect();
    let mut expected: Vec<(String, Tensor)> = Vec::new();
    let mut moved = Vec::new();
    for (key, value) in module.state_dict() {
        match restored.get(key.as_str()) {
            Some(mask) => {
                let (prefix, name) = split_tensor_path(&key);
                moved.push((join(prefix, &orig_name(name)), value));
                moved.push((join(prefix, &mask_name(name)), mask.shallow_clone()));
            }
            None => expected.push((key, value)),
        }
    }
    expected.extend(moved);
    let expected_keys: BTreeSet<&str> = expected.iter().map(|(k, _)| k.as_str()).collect();
    let report = LoadReport {
        restored: restorations.iter().map(|(k, _)| k.clone()).collect(),
        missing: expected_keys
            .iter()
            .filter(|k| !given.contains_key(*k))
            .map(|k| k.to_string())
            .collect(),
        unexpected: state
            .iter()
            .filter(|(k, _)| !expected_keys.contains(k.as_str()))
            .map(|(k, _)| k.clone())
            .collect(),
    };
    if strict && (!report.missing.is_empty() || !report.unexpected.is_empty()) {
        return Err(PruneError::StateDict(format!(
            "missing keys {:?}, unexpected keys {:?}",
            report.missing, report.unexpected
        )));
    }
    for (key, target) in &expected {
        let Some(value) = given.get(key.as_str()) else {
            continue;
        };
        if value.size() != target.size() {
            return Err(PruneError::ShapeMismatch {
                what: format!("checkpoint key '{key}'"),
                expected: target.size(),
                actual: value.size(),
            });
        }
        if key.ends_with("_mask") && is_mask(module, key) {
            let _ = to_binary_mask(value, key)?;
        } else if value.kind() != target.kind() {
            return Err(PruneError::StateDict(format!(
                "key '{key}': expected dtype {:?}, got {:?}",
                target.kind(),
                value.kind()
            )));
        }
    }

    crate::engine::restore_all(module, restorations)?;
    tch::no_grad(|| module.try_for_each_mut("", &mut |prefix, sub| sub.load_own(prefix, &given)))?;
    Ok(report)
}

/// True when `key` names the mask of a pruned tensor, or will once restored.
fn is_mask(module: &Module, key: &str) -> bool {
    let (prefix, name) = split_tensor_path(key);
    let tensor = name.strip_suffix("_mask").unwrap_or(name);
    module
        .submodule(prefix)
        .map(|m| m.parameter(tensor).is_some() || m.pruning_hook(tensor).is_some())
        .unwrap_or(false)
}

impl Module {
    /// Copies this module's own entries from `given` (keys prefixed with `prefix`).
    fn load_own(&mut self, prefix: &str, given: &HashMap<&str, &Tensor>) -> Result<()> {
        let hooked: std::collections::HashSet<String> = self
            .pruning_hooks()
            .map(|h| mask_name(h.tensor_name()))
            .collect();
        for (name, target) in self.parameters_mut().iter_mut() {
            if let Some(value) = given.get(join(prefix, name).as_str()) {
                target.f_copy_(value)?;
            }
        }
        for (name, target) in self.buffers_mut().iter_mut() {
            if let Some(value) = given.get(join(prefix, name).as_str()) {
                if hooked.contains(name) {
                    *target = to_binary_mask(value, name)?.f_to_device(target.device())?;
                } else {
                    target.f_copy_(value)?;
                }
            }
        }
        Ok(())
    }
}
