//! A checkpoint as a [`Module`], for pruning it without the model's code.

use crate::error::{PruneError, Result};
use crate::module::{join, mask_name, orig_name, split_tensor_path, Module};
use std::collections::{BTreeMap, HashMap};
use tch::{Kind, Tensor};

/// The dtype pruning masks are stored in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaskDtype {
    /// The parameter's dtype, as PyTorch keeps masks (loads into PyTorch as it is).
    #[default]
    Parameter,
    /// `bool`: one byte per entry (4x smaller than f32 masks).
    Bool,
}

/// A module tree with one parameter per key of `state` (`conv1.weight` becomes the parameter
/// `weight` of the child `conv1`). A pair `P_orig` + `P_mask` becomes the pruned tensor `P`,
/// reparametrized with that mask, so pruning it again works as PyTorch's container does.
/// The module has no forward function.
pub fn module_from_state_dict(state: Vec<(String, Tensor)>) -> Result<Module> {
    let keys: HashMap<&str, &Tensor> = state.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut pruned = Vec::new();
    let mut plain = Vec::new();
    for (key, t) in &state {
        let (prefix, name) = split_tensor_path(key);
        let pair_of = |suffix: &str, other: fn(&str) -> String| {
            name.strip_suffix(suffix)
                .filter(|p| !p.is_empty() && keys.contains_key(join(prefix, &other(p)).as_str()))
                .map(|p| join(prefix, p))
        };
        if let Some(tensor) = pair_of("_orig", mask_name) {
            if keys.contains_key(tensor.as_str()) {
                return Err(PruneError::InvalidCheckpoint(format!(
                    "'{tensor}' is present along with '{key}' and its mask"
                )));
            }
            let mask = keys[format!("{tensor}_mask").as_str()];
            pruned.push((tensor, t.shallow_clone(), mask.shallow_clone()));
        } else if pair_of("_mask", orig_name).is_none() {
            plain.push((key.clone(), t.shallow_clone()));
        }
    }
    let mut root = Module::new("StateDict");
    let pruned_origs = pruned.iter().map(|(key, orig, _)| (key, orig));
    for (key, t) in plain.iter().map(|(key, t)| (key, t)).chain(pruned_origs) {
        add_tensor(&mut root, key, t.shallow_clone())?;
    }
    let masks = pruned
        .into_iter()
        .map(|(key, _, mask)| (key, mask))
        .collect();
    crate::engine::restore_all(&mut root, masks)?;
    Ok(root)
}

fn add_tensor(root: &mut Module, key: &str, t: Tensor) -> Result<()> {
    if key.split('.').any(str::is_empty) {
        return Err(PruneError::InvalidCheckpoint(format!(
            "the key '{key}' is not a dotted path of names (it has an empty part)"
        )));
    }
    let mut module = root;
    let mut parts: Vec<&str> = key.split('.').collect();
    let name = parts.pop().unwrap_or_default();
    for part in parts {
        if module.child(part).is_none() {
            module.add_child(part, Module::new("StateDict"))?;
        }
        module = module.child_mut(part).expect("added above");
    }
    module.add_parameter(name, t)
}

/// `module`'s state_dict with masks stored as `mask_dtype` says.
pub fn state_dict_with(module: &Module, mask_dtype: MaskDtype) -> Vec<(String, Tensor)> {
    let state = module.state_dict();
    if mask_dtype == MaskDtype::Parameter {
        return state;
    }
    let masks: BTreeMap<String, ()> = module
        .named_modules()
        .iter()
        .flat_map(|(prefix, sub)| {
            sub.pruning_hooks()
                .map(|hook| (join(prefix, &mask_name(hook.tensor_name())), ()))
        })
        .collect();
    state
        .into_iter()
        .map(|(key, t)| match masks.contains_key(&key) {
            true => {
                let mask = t.to_kind(Kind::Bool);
                (key, mask)
            }
            false => (key, t),
        })
        .collect()
}
