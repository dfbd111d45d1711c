//! The [`Module`] front end of the mask engine: PyTorch's reparametrization.
//!
//! Writing a mask here means what `torch.nn.utils.prune` does: the first time, the parameter
//! `name` moves to `name_orig` (the same tensor, so optimizers keep training it), the buffer
//! `name_mask` is added and `name` becomes `orig * mask` in every forward; later masks replace
//! the buffer and join the tensor's history. `remove` makes it permanent.

use crate::container::PruningContainer;
use crate::engine::{MaskStore, PlannedMask, TrainingMasks};
use crate::error::{PruneError, Result};
use crate::mask_in_place;
use crate::module::{mask_name, orig_name, split_tensor_path, Module};
use tch::Tensor;

/// "conv1 (a Conv2d)" for messages; the root is named by its kind alone.
pub(crate) fn describe_module(module_path: &str, module: &Module) -> String {
    if module_path.is_empty() {
        format!("the {}", module.kind())
    } else {
        format!("'{module_path}' (a {})", module.kind())
    }
}

/// The error for a tensor that `module` (at `module_path`) does not have, listing what it has.
pub(crate) fn unknown_parameter(path: &str, module_path: &str, module: &Module) -> PruneError {
    let mut names: Vec<&str> = module
        .parameters()
        .map(|(name, _)| name)
        .chain(module.pruning_hooks().map(|h| h.tensor_name()))
        .filter(|name| {
            !name
                .strip_suffix("_orig")
                .is_some_and(|tensor| module.pruning_hook(tensor).is_some())
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    let has = if names.is_empty() {
        "no parameters".to_owned()
    } else {
        names.join(", ")
    };
    PruneError::UnknownParameter {
        path: path.to_owned(),
        hint: format!(": {} has {has}", describe_module(module_path, module)),
    }
}

/// The tensor `name` of `module` as `getattr(module, name)` gives it and its mask if pruned
/// (`as_seen`), or `name_orig` for pruned tensors (`!as_seen`: equal wherever the mask keeps
/// entries, all that unstructured ranking reads). `path` is the tensor's dotted path.
fn tensor_state(root: &Module, path: &str, as_seen: bool) -> Result<(Tensor, Option<Tensor>)> {
    let (module_path, name) = split_tensor_path(path);
    let module = root.submodule(module_path)?;
    if module.pruning_hook(name).is_some() {
        let (orig, mask) = module.pruned_pair(name).map_err(|e| e.at(path))?;
        crate::engine::check_mask_fits(path, orig, mask)?;
        let tensor = if as_seen {
            module.try_get(name).map_err(|e| e.at(path))?
        } else {
            orig.shallow_clone()
        };
        return Ok((tensor, Some(mask.shallow_clone())));
    }
    let parameter = module
        .parameter(name)
        .ok_or_else(|| unknown_parameter(path, module_path, module))?;
    for taken in [orig_name(name), mask_name(name)] {
        if module.has_attribute(&taken) {
            return Err(PruneError::NameTaken {
                path: crate::module::join(module_path, &taken),
                module: Some(module.kind().to_owned()),
            });
        }
    }
    Ok((parameter.shallow_clone(), None))
}

impl MaskStore for Module {
    fn current(&self, path: &str) -> Result<(Tensor, Option<Tensor>)> {
        tensor_state(self, path, true)
    }

    fn stored(&self, path: &str) -> Result<(Tensor, Option<Tensor>)> {
        tensor_state(self, path, false)
    }

    fn commit(&mut self, planned: PlannedMask) {
        if let Some(values) = &planned.values {
            let (mut stored, _) =
                tensor_state(self, &planned.path, false).expect("found while planning");
            tch::no_grad(|| stored.copy_(values));
        }
        let (module_path, name) = split_tensor_path(&planned.path);
        let module = self
            .submodule_mut(module_path)
            .expect("the sub-module was found while planning");
        let mask = planned.mask;
        match module.hooks_mut().get_mut(name) {
            None => {
                let orig = module
                    .parameters_mut()
                    .remove(name)
                    .expect("planned: the parameter exists");
                module.parameters_mut().push(orig_name(name), orig);
                module.buffers_mut().push(mask_name(name), mask);
                let mut hook = PruningContainer::new(name);
                hook.add_pruning_method(name, planned.method)
                    .expect("same tensor name");
                module.hooks_mut().push(name.to_owned(), hook);
            }
            Some(hook) => {
                hook.add_pruning_method(name, planned.method)
                    .expect("same tensor name");
                if let Some(buffer) = module.buffers_mut().get_mut(&mask_name(name)) {
                    *buffer = mask;
                }
                module.hooks_mut().move_to_end(name);
            }
        }
    }

    fn tensor_paths(&self) -> Vec<String> {
        self.named_parameters()
            .into_iter()
            .map(|(name, _)| match name.strip_suffix("_orig") {
                Some(base) if self.is_pruned_at(base) => base.to_owned(),
                _ => name,
            })
            .collect()
    }

    fn overwrite(&mut self, path: &str, values: &Tensor) -> Result<()> {
        crate::engine::check_values(self, path, values)?;
        let (mut stored, _) = tensor_state(self, path, false)?;
        tch::no_grad(|| stored.f_copy_(values))?;
        Ok(())
    }

    fn training_masks(&self) -> TrainingMasks<'_> {
        let mut by_orig = std::collections::HashMap::new();
        for (_, module) in self.named_modules() {
            for hook in module.pruning_hooks() {
                if let Ok((orig, mask)) = module.pruned_pair(hook.tensor_name()) {
                    if orig.numel() > 0 {
                        by_orig.insert(orig.data_ptr() as usize, mask);
                    }
                }
            }
        }
        TrainingMasks::Reparametrized(by_orig)
    }
}

impl Module {
    /// True when the tensor at the dotted `path` is pruned.
    fn is_pruned_at(&self, path: &str) -> bool {
        let (module_path, name) = split_tensor_path(path);
        self.submodule(module_path)
            .is_ok_and(|module| module.pruning_hook(name).is_some())
    }
}

/// Makes the pruning of the tensor at `path` permanent: `name` becomes a plain parameter again,
/// the very tensor that was `name_orig`, now holding `orig * mask`; `name_orig`, `name_mask` and
/// the history are gone. An error if the tensor is not pruned.
pub(crate) fn remove(root: &mut Module, path: &str) -> Result<()> {
    let (module_path, name) = split_tensor_path(path);
    let module = root.submodule_mut(module_path)?;
    if module.pruning_hook(name).is_none() {
        return Err(PruneError::NotPruned {
            path: path.to_owned(),
        });
    }
    let (orig, mask) = module.pruned_pair(name).map_err(|e| e.at(path))?;
    crate::engine::check_mask_fits(path, orig, mask)?;
    let mut orig = orig.shallow_clone();
    mask_in_place::mul_mask_(&mut orig, mask)?;
    module.parameters_mut().remove(&orig_name(name));
    module.buffers_mut().remove(&mask_name(name));
    module.hooks_mut().remove(name);
    module.parameters_mut().push(name.to_owned(), orig);
    Ok(())
}
