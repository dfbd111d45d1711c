//! The `VarStore` front end of the mask engine: prune the tch models you already have.
//!
//! A model written with tch's own layers (`nn::conv2d`, `nn::linear`, `nn::seq()`,
//! `nn::batch_norm2d`, `tch::vision::resnet`) keeps its variables in an [`nn::VarStore`] under
//! dotted names (`conv1.weight`). [`VarStorePruner`] prunes those variables by name without
//! touching the model's code: each mask is kept beside the `VarStore` and written into the
//! variable itself, in place and without gradients, so the forward pass is the model's own and
//! costs nothing extra, in training or at inference.
//!
//! The difference from PyTorch's reparametrization (the [`Module`](crate::Module) front end):
//! there is no `weight_orig` holding the original values of pruned entries; the variable *is*
//! `orig * mask`, with zeros where the mask prunes. Nothing reads those original values while
//! training (PyTorch's gradient is zero there too), so the masks, and the kept entries through
//! training, are the same on both paths. What an optimizer step writes into pruned entries
//! (momentum, weight decay) is undone by [`VarStorePruner::step`] or
//! [`VarStorePruner::apply_masks`], or never written at all by
//! [`MaskedAdam`](crate::optim::MaskedAdam).

use crate::checkpoint::{self, LoadReport, MaskDtype};
use crate::container::PruningContainer;
use crate::engine::{MaskStore, PlannedMask, TrainingMasks};
use crate::error::{PruneError, Result};
use crate::mask_in_place;
use crate::method::custom::to_binary_mask;
use crate::method::{CustomFromMask, PruningMethod};
use crate::module::{mask_name, orig_name};
use crate::plan::HISTORY_METADATA_KEY;
use crate::prune::Prunable;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use tch::{nn, Kind, Tensor};

/// One pruned variable: its `bool` mask (on the variable's device) and its method history.
#[derive(Debug)]
pub(crate) struct PrunedVariable {
    pub(crate) mask: Tensor,
    pub(crate) history: PruningContainer,
    /// Changes whenever the mask does, so that optimizers can tell a mask they know.
    pub(crate) generation: u64,
}

/// Pruning masks for the variables of an [`nn::VarStore`], addressed by their names.
///
/// ```
/// use tch::{nn, nn::ModuleT, nn::OptimizerConfig, Device, Kind, Tensor};
/// use tchprune::{prune, VarStorePruner};
///
/// let vs = nn::VarStore::new(Device::Cpu);
/// let net = nn::seq()
///     .add(nn::linear(&vs.root() / "fc1", 16, 8, Default::default()))
///     .add_fn(|x| x.relu())
///     .add(nn::linear(&vs.root() / "fc2", 8, 2, Default::default()));
/// let mut pruner = VarStorePruner::new(&vs);
/// prune::l1_unstructured(&mut pruner, "fc1.weight", 0.5, None)?;
///
/// let mut opt = nn::Adam::default().build(&vs, 1e-3)?;
/// let xs = Tensor::randn([4, 16], (Kind::Float, Device::Cpu));
/// let loss = net.forward_t(&xs, true).square().mean(Kind::Float);
/// pruner.backward_step(&mut opt, &loss)?; // Adam's step, then the masks again
/// assert_eq!(pruner.sparsity(&["fc1.weight"])?[0].zeros, 64);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct VarStorePruner {
    variables: Arc<Mutex<nn::Variables>>,
    pruned: BTreeMap<String, PrunedVariable>,
    generations: u64,
}

impl std::fmt::Debug for VarStorePruner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VarStorePruner")
            .field("pruned", &self.pruned)
            .finish_non_exhaustive()
    }
}

impl VarStorePruner {
    /// Masks for the variables of `vs` (none pruned yet). The pruner shares the store's
    /// variables, so variables created later can be pruned too.
    pub fn new(vs: &nn::VarStore) -> Self {
        Self {
            variables: Arc::clone(&vs.variables_),
            pruned: BTreeMap::new(),
            generations: 0,
        }
    }

    fn next_generation(&mut self) -> u64 {
        self.generations += 1;
        self.generations
    }

    /// The mask of the variable `name` and its generation, if it is pruned.
    pub(crate) fn mask_generation(&self, name: &str) -> Option<(&Tensor, u64)> {
        self.pruned.get(name).map(|p| (&p.mask, p.generation))
    }

    fn lock(&self) -> MutexGuard<'_, nn::Variables> {
        self.variables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The variable `name` (sharing its storage), or an error naming it.
    pub fn variable(&self, name: &str) -> Result<Tensor> {
        let variables = self.lock();
        if let Some(t) = variables.named_variables.get(name) {
            return Ok(t.shallow_clone());
        }
        let prefix = name
            .rsplit_once('.')
            .map(|(p, _)| format!("{p}."))
            .unwrap_or_default();
        let mut near: Vec<&str> = variables
            .named_variables
            .keys()
            .map(String::as_str)
            .filter(|key| key.starts_with(&prefix) && !key[prefix.len()..].contains('.'))
            .collect();
        near.sort_unstable();
        let hint = match near.as_slice() {
            [] => format!(
                ": the VarStore has no variable of that name (it has {} variables)",
                variables.named_variables.len()
            ),
            near => format!(": the VarStore has {}", near.join(", ")),
        };
        Err(PruneError::UnknownParameter {
            path: name.to_owned(),
            hint,
        })
    }

    /// The names of the pruned variables, sorted.
    pub fn pruned_names(&self) -> Vec<&str> {
        self.pruned.keys().map(String::as_str).collect()
    }

    /// The `bool` mask of the variable `name`, if it is pruned.
    pub fn mask(&self, name: &str) -> Option<&Tensor> {
        self.pruned.get(name).map(|p| &p.mask)
    }

    /// The methods applied to the variable `name`, oldest first, if it is pruned.
    pub fn history(&self, name: &str) -> Option<&PruningContainer> {
        self.pruned.get(name).map(|p| &p.history)
    }

    /// Writes every mask into its variable (`variable *= mask`, in place, without gradients):
    /// what an optimizer step wrote into pruned entries is zero again.
    pub fn apply_masks(&mut self) -> Result<()> {
        // Every variable is checked before the first is written.
        let targets = self.pruned_variables()?;
        for ((name, pruned), mut variable) in self.pruned.iter_mut().zip(targets) {
            // The store moved (`vs.set_device`): the mask follows, once.
            pruned.mask = on_device_of(&pruned.mask, &variable)?;
            write_mask(&mut variable, &pruned.mask, name)?;
        }
        Ok(())
    }

    /// The pruned variables, in the order of `self.pruned`, each checked to be still in the
    /// VarStore and to have its mask's shape; the error names the first that is not.
    fn pruned_variables(&self) -> Result<Vec<Tensor>> {
        let variables = self.lock();
        (self.pruned.iter())
            .map(|(name, pruned)| {
                let variable = variables
                    .named_variables
                    .get(name)
                    .map(Tensor::shallow_clone)
                    .ok_or_else(|| PruneError::UnknownParameter {
                        path: name.clone(),
                        hint: ": it was pruned but has left the VarStore".to_owned(),
                    })?;
                crate::engine::check_mask_fits(name, &variable, &pruned.mask)?;
                Ok(variable)
            })
            .collect()
    }

    /// `opt.step()`, then [`VarStorePruner::apply_masks`].
    pub fn step(&mut self, opt: &mut nn::Optimizer) -> Result<()> {
        opt.step();
        self.apply_masks()
    }

    /// `opt.backward_step(loss)` (zero the gradients, backward, step), then
    /// [`VarStorePruner::apply_masks`].
    pub fn backward_step(&mut self, opt: &mut nn::Optimizer, loss: &Tensor) -> Result<()> {
        opt.backward_step(loss);
        self.apply_masks()
    }

    /// The state_dict in PyTorch's pruned layout: `P_orig` and `P_mask` for each pruned
    /// variable `P` (the mask in `P`'s dtype, or `bool`), every other variable as it is; sorted
    /// by key. `P_orig` holds zeros where the mask prunes (see the module docs).
    pub fn state_dict(&self, mask_dtype: MaskDtype) -> Vec<(String, Tensor)> {
        let variables = self.lock();
        let mut out = Vec::with_capacity(variables.named_variables.len() + self.pruned.len());
        for (name, t) in &variables.named_variables {
            match self.pruned.get(name) {
                Some(pruned) => {
                    let mask = match mask_dtype {
                        MaskDtype::Parameter => pruned.mask.to_kind(t.kind()),
                        MaskDtype::Bool => pruned.mask.shallow_clone(),
                    };
                    out.push((orig_name(name), t.detach()));
                    out.push((mask_name(name), mask));
                }
                None => out.push((name.clone(), t.detach())),
            }
        }
        out.sort_by(|(a, _), (b, _)| a.cmp(b));
        out
    }

    /// The state_dict of plain variables with the masks applied (what `vs.save` writes right
    /// after [`VarStorePruner::apply_masks`]); sorted by key.
    pub fn plain_state_dict(&self) -> Vec<(String, Tensor)> {
        let variables = self.lock();
        let mut out: Vec<(String, Tensor)> = variables
            .named_variables
            .iter()
            .map(|(name, t)| {
                let value = match self.pruned.get(name) {
                    Some(pruned) => tch::no_grad(|| t.detach() * pruned.mask.to_device(t.device())),
                    None => t.detach(),
                };
                (name.clone(), value)
            })
            .collect();
        out.sort_by(|(a, _), (b, _)| a.cmp(b));
        out
    }

    /// Each pruned variable's methods as the `tchprune.history` metadata records them.
    fn history_metadata(&self) -> BTreeMap<String, String> {
        if self.pruned.is_empty() {
            return BTreeMap::new();
        }
        let history: BTreeMap<&str, Vec<Value>> =
            self.pruned
                .iter()
                .map(|(name, pruned)| {
                    let records = pruned
                        .history
                        .history()
                        .iter()
                        .map(|method| {
                            let mut record = json!({"method": method.name()});
                            if let (Some(record), Value::Object(args)) =
                                (record.as_object_mut(), method.arguments())
                            {
                                record.extend(args.into_iter().map(|(key, value)| {
                                    (key, crate::plan::recorded_argument(value))
                                }));
                            }
                            record
                        })
                        .collect();
                    (name.as_str(), records)
                })
                .collect();
        let text = serde_json::to_string(&history).expect("JSON values serialize");
        BTreeMap::from([(HISTORY_METADATA_KEY.to_owned(), text)])
    }

    /// Writes [`VarStorePruner::state_dict`] (masks in the parameter's dtype, as PyTorch loads
    /// them after `prune.identity`) to `path` as safetensors, atomically, with each variable's
    /// method history in the metadata.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.save_with(path, MaskDtype::Parameter)
    }

    /// [`VarStorePruner::save`] with the masks in `mask_dtype`.
    pub fn save_with(&self, path: impl AsRef<Path>, mask_dtype: MaskDtype) -> Result<()> {
        self.pruned_variables()?;
        checkpoint::write(&self.state_dict(mask_dtype), &self.history_metadata(), path)
    }

    /// Writes [`VarStorePruner::plain_state_dict`] to `path` as safetensors, atomically: plain
    /// keys, the masks applied, loadable by a model that was never pruned.
    pub fn save_plain(&self, path: impl AsRef<Path>) -> Result<()> {
        checkpoint::write(&self.plain_state_dict(), &Default::default(), path)
    }

    /// Loads the safetensors file at `path` (weights in compressed-tensors' sparse-bitmask
    /// layout come back dense) with [`VarStorePruner::load_state_dict`].
    pub fn load(&mut self, path: impl AsRef<Path>, strict: bool) -> Result<LoadReport> {
        let tensors = checkpoint::load(path)?;
        self.load_state_dict(&tensors, strict)
    }

    /// Loads `state` into the variables and restores the masks it holds, so that training
    /// resumes where it was saved.
    ///
    /// A pair `P_orig` + `P_mask` sets the variable `P` to `P_orig * P_mask` and makes
    /// `P_mask` its mask (replacing any mask it had; a variable pruned already keeps its
    /// history). A plain key `P` sets the values only: a variable that is pruned keeps its mask
    /// (that is how a lottery ticket rewinds to earlier weights). With `strict`, a variable the
    /// state lacks or a key no variable takes is an error naming them. Shapes and dtypes must
    /// match (masks may come in any dtype, with values 0 and 1). Everything is checked before
    /// the first variable changes: on error nothing has.
    pub fn load_state_dict(
        &mut self,
        state: &[(String, Tensor)],
        strict: bool,
    ) -> Result<LoadReport> {
        let given: HashMap<&str, &Tensor> = state.iter().map(|(k, t)| (k.as_str(), t)).collect();
        let variables: Vec<(String, Tensor)> = {
            let variables = self.lock();
            let mut sorted: Vec<(String, Tensor)> = variables
                .named_variables
                .iter()
                .map(|(name, t)| (name.clone(), t.shallow_clone()))
                .collect();
            sorted.sort_by(|(a, _), (b, _)| a.cmp(b));
            sorted
        };
        let mut report = LoadReport::default();
        let mut taken = BTreeSet::new();
        // (variable, value, restored mask)
        let mut writes: Vec<(&str, &Tensor, &Tensor, Option<Tensor>)> = Vec::new();
        for (name, variable) in &variables {
            let (orig_key, mask_key) = (orig_name(name), mask_name(name));
            let (value, mask) = match (
                given.get(name.as_str()),
                given.get(orig_key.as_str()),
                given.get(mask_key.as_str()),
            ) {
                (None, Some(orig), Some(mask)) => {
                    taken.extend([orig_key.clone(), mask_key.clone()]);
                    check_shape(&mask_key, variable, mask)?;
                    let mask = to_binary_mask(mask, &mask_key)?;
                    (*orig, Some(mask.f_to_device(variable.device())?))
                }
                (Some(value), _, _) => {
                    taken.insert(name.clone());
                    (*value, None)
                }
                _ => {
                    report.missing.push(name.clone());
                    continue;
                }
            };
            let key = if mask.is_some() { &orig_key } else { name };
            check_shape(key, variable, value)?;
            if value.kind() != variable.kind() {
                return Err(PruneError::StateDict(format!(
                    "key '{key}': expected dtype {:?}, got {:?}",
                    variable.kind(),
                    value.kind()
                )));
            }
            if mask.is_some() {
                report.restored.push(name.clone());
            }
            writes.push((name.as_str(), variable, value, mask));
        }
        report.unexpected = state
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !taken.contains(*k))
            .cloned()
            .collect();
        if strict && (!report.missing.is_empty() || !report.unexpected.is_empty()) {
            return Err(PruneError::StateDict(format!(
                "missing keys {:?}, unexpected keys {:?}",
                report.missing, report.unexpected
            )));
        }
        // Nothing below can fail on checked inputs: the histories of restored masks are built
        // first, then the values and masks are written.
        let writes = writes
            .into_iter()
            .map(|(name, variable, value, mask)| {
                let restored = mask
                    .map(|mask| -> Result<_> {
                        let method: Arc<dyn PruningMethod> = Arc::new(CustomFromMask::new(&mask)?);
                        let mut history = PruningContainer::new(name);
                        history.add_pruning_method(name, method)?;
                        Ok((mask, history))
                    })
                    .transpose()?;
                Ok((name, variable, value, restored))
            })
            .collect::<Result<Vec<_>>>()?;
        tch::no_grad(|| -> Result<()> {
            for (name, variable, value, restored) in writes {
                let mut variable = variable.shallow_clone();
                variable
                    .f_copy_(value)
                    .map_err(|e| PruneError::from(e).at(name))?;
                if let Some((mask, history)) = restored {
                    let generation = self.next_generation();
                    match self.pruned.get_mut(name) {
                        Some(pruned) => {
                            pruned.mask = mask;
                            pruned.generation = generation;
                        }
                        None => {
                            let pruned = PrunedVariable {
                                mask,
                                history,
                                generation,
                            };
                            self.pruned.insert(name.to_owned(), pruned);
                        }
                    }
                }
            }
            Ok(())
        })?;
        self.apply_masks()?;
        Ok(report)
    }

    /// Makes every pruning permanent ([`crate::prune::remove`] on each pruned variable): the
    /// variables keep their zeros, the masks are gone.
    pub fn finalize(&mut self) -> Result<()> {
        self.apply_masks()?;
        self.pruned.clear();
        Ok(())
    }

    /// The sparsity of each listed variable (as the model sees it), then the total under
    /// `"global"`.
    pub fn sparsity(&self, names: &[&str]) -> Result<Vec<crate::sparsity::Sparsity>> {
        crate::sparsity::sparsity(self, names)
    }
}

/// `mask` on `variable`'s device: itself when it is there already.
fn on_device_of(mask: &Tensor, variable: &Tensor) -> Result<Tensor> {
    match mask.device() == variable.device() {
        true => Ok(mask.shallow_clone()),
        false => Ok(mask.f_to_device(variable.device())?),
    }
}

/// `variable *= mask` in place, without gradients; an error names the variable `name`.
fn write_mask(variable: &mut Tensor, mask: &Tensor, name: &str) -> Result<()> {
    let mask = on_device_of(mask, variable)?;
    mask_in_place::mul_mask_(variable, &mask).map_err(|e| PruneError::from(e).at(name))
}

fn check_shape(key: &str, variable: &Tensor, value: &Tensor) -> Result<()> {
    if value.size() != variable.size() {
        return Err(PruneError::ShapeMismatch {
            what: format!("checkpoint key '{key}'"),
            expected: variable.size(),
            actual: value.size(),
        });
    }
    Ok(())
}

impl MaskStore for VarStorePruner {
    fn current(&self, path: &str) -> Result<(Tensor, Option<Tensor>)> {
        let (stored, mask) = self.stored(path)?;
        match mask {
            // Entries an optimizer step wrote since the masks were last applied do not count.
            Some(mask) => Ok((stored.f_mul(&mask.f_to_kind(Kind::Bool)?)?, Some(mask))),
            None => Ok((stored, None)),
        }
    }

    fn stored(&self, path: &str) -> Result<(Tensor, Option<Tensor>)> {
        let variable = self.variable(path)?.detach();
        let mask = self
            .pruned
            .get(path)
            .map(|p| on_device_of(&p.mask, &variable))
            .transpose()?;
        if let Some(mask) = &mask {
            crate::engine::check_mask_fits(path, &variable, mask)?;
        }
        Ok((variable, mask))
    }

    fn commit(&mut self, planned: PlannedMask) {
        let mut variable = self
            .variable(&planned.path)
            .expect("the variable was found while planning");
        if let Some(values) = &planned.values {
            tch::no_grad(|| variable.copy_(values));
        }
        mask_in_place::mul_mask_(&mut variable, &planned.mask)
            .expect("a mask of the variable's shape, on its device");
        let generation = self.next_generation();
        match self.pruned.get_mut(&planned.path) {
            Some(pruned) => {
                pruned.mask = planned.mask;
                pruned.generation = generation;
                pruned
                    .history
                    .add_pruning_method(&planned.path, planned.method)
                    .expect("same tensor name");
            }
            None => {
                let mut history = PruningContainer::new(&planned.path);
                history
                    .add_pruning_method(&planned.path, planned.method)
                    .expect("same tensor name");
                self.pruned.insert(
                    planned.path,
                    PrunedVariable {
                        mask: planned.mask,
                        history,
                        generation,
                    },
                );
            }
        }
    }

    fn tensor_paths(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().named_variables.keys().cloned().collect();
        names.sort_unstable();
        names
    }

    fn overwrite(&mut self, path: &str, values: &Tensor) -> Result<()> {
        crate::engine::check_values(self, path, values)?;
        let mut variable = self.variable(path)?;
        tch::no_grad(|| variable.f_copy_(values))?;
        if let Some(pruned) = self.pruned.get(path) {
            write_mask(&mut variable, &pruned.mask, path)?;
        }
        Ok(())
    }

    fn training_masks(&self) -> TrainingMasks<'_> {
        TrainingMasks::Zeroed(self)
    }
}

impl Prunable for VarStorePruner {
    fn remove_pruning(&mut self, path: &str) -> Result<()> {
        let Some(pruned) = self.pruned.get(path) else {
            return Err(PruneError::NotPruned {
                path: path.to_owned(),
            });
        };
        let mut variable = self.variable(path)?;
        crate::engine::check_mask_fits(path, &variable, &pruned.mask)?;
        write_mask(&mut variable, &pruned.mask, path)?;
        self.pruned.remove(path);
        Ok(())
    }

    fn has_pruned(&self) -> bool {
        !self.pruned.is_empty()
    }

    fn tensor(&self, path: &str) -> Result<Tensor> {
        Ok(self.current(path)?.0)
    }
}
