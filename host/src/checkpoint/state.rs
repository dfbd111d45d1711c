//! A checkpoint as a [`Module`], for pruning it without the model's code.

use crate::error::{PruneError, Result};
use crate::module::{join, mask_name, split_tensor_path, Module};
use std::collections::{BTreeMap, HashMap, HashSet};
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
    let keys: HashSet<&str> = state.iter().map(|(k, _)| k.as_str()).collect();
    // Each key's role: `None` for a plain tensor, `Some(P)` for the `P_orig` of a pair; the
    // masks of pairs are looked up by key.
    let mut roles = Vec::with_capacity(state.len());
    let mut mask_keys = HashSet::new();
    for (key, _) in &state {
        let (prefix, name) = split_tensor_path(key);
        let paired = (name.strip_suffix("_orig"))
            .filter(|p| !p.is_empty() && keys.contains(join(prefix, &mask_name(p)).as_str()));
        if let Some(tensor) = paired.map(|p| join(prefix, p)) {
            if keys.contains(tensor.as_str()) {
                return Err(PruneError::InvalidCheckpoint(format!(
                    "'{tensor}' is present along with '{key}' and its mask"
                )));
            }
            mask_keys.insert(mask_name(&tensor));
            roles.push(Some(tensor));
        } else {
            roles.push(None);
        }
    }
    drop(keys);
    let mut plain = Vec::new();
    let mut pruned = Vec::new();
    let mut masks = HashMap::new();
    for ((key, t), role) in state.into_iter().zip(roles) {
        match role {
            Some(tensor) => pruned.push((tensor, t)),
            None if mask_keys.contains(&key) => {
                masks.insert(key, t);
            }
            None => plain.push((key, t)),
        }
    }
    let mut root = Module::new("StateDict");
    let mut restored = Vec::with_capacity(pruned.len());
    for (key, t) in plain {
        add_tensor(&mut root, &key, t)?;
    }
    for (key, orig) in pruned {
        add_tensor(&mut root, &key, orig)?;
        let mask = masks.remove(&mask_name(&key)).expect("a pair has its mask");
        restored.push((key, mask));
    }
    crate::engine::restore_all(&mut root, restored)?;
    Ok(root)
}

fn add_tensor(root: &mut Module, key: &str, t: Tensor) -> Result<()> {
    if key.split('.').any(str::is_empty) {
        return Err(PruneError::InvalidCheckpoint(format!(
            "the key '{key}' is not a dotted path of names (it has an empty part)"
        )));
    }
    let mut module = root;
    let (path, name) = split_tensor_path(key);
    for part in path.split('.').filter(|part| !part.is_empty()) {
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
