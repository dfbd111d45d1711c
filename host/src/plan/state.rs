//! A checkpoint being pruned: its tensors as a [`Module`], and each parameter's method history.

use super::parse::{Plan, Step};
use crate::checkpoint::{self, module_from_state_dict, Checkpoint, MaskDtype};
use crate::error::{PruneError, Result};
use crate::method::{CustomFromMask, PruningMethod, PruningType};
use crate::module::{join, split_tensor_path, Module};
use crate::registry::Registry;
use crate::shrink::{self, DependencyGraph, Shrunk, WIDTHS_METADATA_KEY};
use crate::sparsity::{sparsity, Sparsity};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use tch::Tensor;
use wildmatch::WildMatch;

/// The safetensors metadata key holding each parameter's method history, as a JSON object
/// from parameter key to the list of steps applied to it (`{"method": ..., arguments...}`).
pub const HISTORY_METADATA_KEY: &str = "tchprune.history";

/// A state_dict being pruned.
#[derive(Debug)]
pub struct PrunedState {
    module: Module,
    history: BTreeMap<String, Vec<Value>>,
    metadata: BTreeMap<String, String>,
    /// The last built-in model traced: the name asked for, the shapes it was traced for, and
    /// its groups (a plan's `prune_groups` and `shrink` steps trace once between them).
    traced: Option<(String, BTreeMap<String, Vec<i64>>, DependencyGraph)>,
}

/// What a prepared step does to each of its keys.
enum Action {
    Local(Arc<dyn PruningMethod>),
    Masks(HashMap<String, Arc<dyn PruningMethod>>),
    Global(Arc<dyn PruningMethod>),
    Remove,
    /// Channel removal with declared groups, or those of a built-in model (`None`: recognized).
    Shrink {
        graph: Option<DependencyGraph>,
        model: Option<String>,
    },
    /// Group pruning, the groups found as for `Shrink`.
    PruneGroups {
        graph: Option<DependencyGraph>,
        model: Option<String>,
        method: Arc<dyn PruningMethod>,
    },
}

/// A step whose patterns, method, arguments and side files have all been checked.
struct Prepared<'a> {
    step: &'a Step,
    keys: Vec<String>,
    action: Action,
    scores: HashMap<String, Tensor>,
    record: Value,
}

impl PrunedState {
    /// The state of a checkpoint: pruned pairs reparametrized again, histories from its
    /// metadata; other metadata is kept for the output.
    pub fn from_checkpoint(checkpoint: Checkpoint) -> Result<Self> {
        let mut metadata = checkpoint.metadata;
        let history = match metadata.remove(HISTORY_METADATA_KEY) {
            None => BTreeMap::new(),
            Some(text) => serde_json::from_str(&text).map_err(|err| {
                PruneError::InvalidCheckpoint(format!(
                    "metadata '{HISTORY_METADATA_KEY}' is invalid: {err}"
                ))
            })?,
        };
        Ok(Self {
            module: module_from_state_dict(checkpoint.tensors)?,
            history,
            metadata,
            traced: None,
        })
    }

    /// The tensors as a module tree.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Each parameter's method history (parameters never pruned have none).
    pub fn history(&self) -> &BTreeMap<String, Vec<Value>> {
        &self.history
    }

    /// The parameter keys, sorted: `P` for a pruned pair `P_orig` + `P_mask`.
    pub fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        self.module.visit("", &mut |prefix, sub| {
            keys.extend(sub.parameters().map(|(name, _)| {
                let pruned = name
                    .strip_suffix("_orig")
                    .filter(|tensor| sub.pruning_hook(tensor).is_some());
                join(prefix, pruned.unwrap_or(name))
            }));
        });
        keys.sort_unstable();
        keys
    }

    /// Whether the parameter `key` is pruned.
    pub fn is_pruned(&self, key: &str) -> bool {
        let (prefix, name) = split_tensor_path(key);
        self.module
            .submodule(prefix)
            .is_ok_and(|sub| sub.pruning_hook(name).is_some())
    }

    /// The shape of the parameter `key` (of `key_orig` when it is pruned).
    fn shape(&self, key: &str) -> Vec<i64> {
        let (prefix, name) = split_tensor_path(key);
        let Ok(module) = self.module.submodule(prefix) else {
            return Vec::new();
        };
        module
            .parameter(name)
            .or_else(|| module.parameter(&crate::module::orig_name(name)))
            .map(Tensor::size)
            .unwrap_or_default()
    }

    /// The sparsity of every parameter as the forward pass would see it, then the total.
    pub fn sparsity(&self) -> Result<Vec<Sparsity>> {
        let keys = self.keys();
        let paths: Vec<&str> = keys.iter().map(String::as_str).collect();
        sparsity(&self.module, &paths)
    }

    /// Runs `plan`'s steps in order, with methods from `registry`. Every step is checked before
    /// the first runs; `progress(done, total)` hears about each parameter done.
    pub fn apply_plan(
        mut self,
        plan: &Plan,
        registry: &Registry,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let keys = self.keys();
        let stored_keys = self.module.tensor_names();
        let stored = stored_keys.iter().map(String::as_str).collect();
        let shape_of = |key: &str| self.shape(key);
        let prepared = plan
            .steps
            .iter()
            .map(|step| {
                prepare(step, &keys, &stored, &shape_of, registry).map_err(|err| match err {
                    PruneError::PlanStep { .. } => err,
                    err => step_error(step, None, err),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let total = prepared.iter().map(|p| p.keys.len()).sum();
        let mut done = 0;
        progress(done, total);
        if let Some(seed) = plan.seed {
            tch::manual_seed(seed);
        }
        for step in &prepared {
            self.run(step, &mut |n| {
                done += n;
                progress(done, total);
            })?;
        }
        Ok(self)
    }

    /// Makes every pruning permanent (`remove` on each pruned parameter).
    pub fn finalize(mut self) -> Result<Self> {
        for key in self.keys() {
            if self.is_pruned(&key) {
                crate::prune::remove(&mut self.module, &key)?;
                self.history
                    .entry(key)
                    .or_default()
                    .push(json!({"method": "remove"}));
            }
        }
        Ok(self)
    }

    /// The state as a checkpoint: PyTorch's keys, masks as `mask_dtype` says, the histories in
    /// the metadata next to the input's other metadata.
    pub fn to_checkpoint(&self, mask_dtype: MaskDtype) -> Result<Checkpoint> {
        let mut tensors = checkpoint::state_dict_with(&self.module, mask_dtype);
        tensors.sort_by(|(a, _), (b, _)| a.cmp(b));
        let mut metadata = self.metadata.clone();
        if !self.history.is_empty() {
            let history = serde_json::to_string(&self.history).expect("JSON values serialize");
            metadata.insert(HISTORY_METADATA_KEY.to_owned(), history);
        }
        let checkpoint = Checkpoint { tensors, metadata };
        checkpoint::check_consistent(&checkpoint)?;
        Ok(checkpoint)
    }

    /// A step's groups: the declared ones or the built-in model's, those with a writer among
    /// the step's keys.
    fn step_graph(
        &mut self,
        graph: &Option<DependencyGraph>,
        model: &Option<String>,
        keys: &[String],
    ) -> Result<DependencyGraph> {
        let tensors = checkpoint::state_dict_with(&self.module, MaskDtype::Bool);
        let graph = match graph {
            Some(graph) => graph.clone(),
            None => {
                let model = model.as_deref().unwrap_or("auto");
                let shapes = shrink::shapes(&tensors);
                match &self.traced {
                    Some((name, traced_shapes, graph))
                        if name == model && *traced_shapes == shapes =>
                    {
                        graph.clone()
                    }
                    _ => {
                        let graph = shrink::trace_builtin(model, &shapes)?;
                        self.traced = Some((model.to_owned(), shapes, graph.clone()));
                        graph
                    }
                }
            }
        };
        shrink::check_groups(&tensors, &graph)?;
        let selected: std::collections::HashSet<&str> = keys.iter().map(String::as_str).collect();
        Ok(DependencyGraph {
            groups: (graph.groups.into_iter())
                .filter(|g| g.writers.iter().any(|w| selected.contains(w.as_str())))
                .collect(),
        })
    }

    /// Removes the channels `graph`'s groups prune ([`shrink::shrink`]): every tensor shrinks,
    /// pruned pairs stay pairs, each shrunk writer's history records it, and the new widths join
    /// the metadata under [`WIDTHS_METADATA_KEY`]. Returns what `shrink` reports, its tensors
    /// (now the state's) taken out. On error the state is as it was.
    pub fn shrink(&mut self, graph: &DependencyGraph) -> Result<Shrunk> {
        let tensors = checkpoint::state_dict_with(&self.module, MaskDtype::Bool);
        let mut shrunk = shrink::shrink(&tensors, graph)?;
        let module = module_from_state_dict(std::mem::take(&mut shrunk.tensors))?;
        let mut widths: BTreeMap<String, i64> = match self.metadata.get(WIDTHS_METADATA_KEY) {
            Some(text) => serde_json::from_str(text).unwrap_or_default(),
            None => BTreeMap::new(),
        };
        widths.extend(shrunk.widths.iter().map(|(k, v)| (k.clone(), *v)));
        self.module = module;
        self.metadata.insert(
            WIDTHS_METADATA_KEY.to_owned(),
            serde_json::to_string(&widths).expect("widths serialize"),
        );
        for group in shrunk.groups.iter().filter(|g| g.removed() > 0) {
            for writer in &group.writers {
                self.history.entry(writer.clone()).or_default().push(
                    json!({"method": "shrink", "channels": [group.channels, group.kept.len()]}),
                );
            }
        }
        Ok(shrunk)
    }

    fn run(&mut self, prepared: &Prepared<'_>, advance: &mut dyn FnMut(usize)) -> Result<()> {
        let step = prepared.step;
        let scores = |key: &str| prepared.scores.get(key);
        match &prepared.action {
            Action::Global(method) => {
                let paths: Vec<&str> = prepared.keys.iter().map(String::as_str).collect();
                let scores: Vec<(&str, &Tensor)> = paths
                    .iter()
                    .filter_map(|k| scores(k).map(|t| (*k, t)))
                    .collect();
                crate::prune::global_unstructured(
                    &mut self.module,
                    &paths,
                    Arc::clone(method),
                    &scores,
                )
                .map_err(|err| step_error(step, None, err))?;
                advance(paths.len());
            }
            Action::Shrink { graph, model } => {
                let graph = self
                    .step_graph(graph, model, &prepared.keys)
                    .map_err(|err| step_error(step, None, err))?;
                self.shrink(&graph)
                    .map_err(|err| step_error(step, None, err))?;
                advance(prepared.keys.len());
                return Ok(());
            }
            Action::PruneGroups {
                graph,
                model,
                method,
            } => {
                let graph = self
                    .step_graph(graph, model, &prepared.keys)
                    .map_err(|err| step_error(step, None, err))?;
                shrink::prune_groups(&mut self.module, &graph, method.as_ref())
                    .map_err(|err| step_error(step, None, err))?;
                for group in graph.groups.iter().filter(|g| g.fixed.is_none()) {
                    for key in group.writers.iter().chain(&group.channelwise) {
                        if self.is_pruned(key) {
                            let history = self.history.entry(key.clone()).or_default();
                            history.push(prepared.record.clone());
                        }
                    }
                }
                advance(prepared.keys.len());
                return Ok(());
            }
            action => {
                for key in &prepared.keys {
                    let result = match action {
                        Action::Remove => crate::prune::remove(&mut self.module, key),
                        Action::Local(method) => crate::prune::apply(
                            &mut self.module,
                            key,
                            Arc::clone(method),
                            scores(key),
                        ),
                        Action::Masks(masks) => crate::prune::apply(
                            &mut self.module,
                            key,
                            Arc::clone(&masks[key]),
                            None,
                        ),
                        Action::Global(_) | Action::Shrink { .. } | Action::PruneGroups { .. } => {
                            unreachable!("handled above")
                        }
                    };
                    result.map_err(|err| step_error(step, Some(key), err))?;
                    advance(1);
                }
            }
        }
        for key in &prepared.keys {
            self.history
                .entry(key.clone())
                .or_default()
                .push(prepared.record.clone());
        }
        Ok(())
    }
}

fn step_error(step: &Step, key: Option<&str>, source: PruneError) -> PruneError {
    // The step's message names the key already.
    let source = match source {
        PruneError::OnTensor { path, error } if Some(path.as_str()) == key => *error,
        other => other,
    };
    PruneError::PlanStep {
        step: step.number,
        method: step.method.clone(),
        key: key.map(str::to_owned),
        error: Box::new(source),
    }
}

fn invalid(reason: impl Into<String>) -> PruneError {
    PruneError::InvalidStep(reason.into())
}

fn prepare<'a>(
    step: &'a Step,
    keys: &[String],
    stored: &std::collections::HashSet<&str>,
    shape_of: &dyn Fn(&str) -> Vec<i64>,
    registry: &Registry,
) -> Result<Prepared<'a>> {
    let matched = resolve(&step.params, keys)?;
    check_not_half_pairs(&matched, stored)?;
    let mut arguments = step.arguments.clone();
    let mut record = Map::new();
    record.insert("method".to_owned(), json!(step.method));
    if step.mask_file.is_some() && step.method != "custom_from_mask" {
        return Err(invalid("'mask_file' is only for custom_from_mask"));
    }
    let action = match step.method.as_str() {
        "remove" => {
            if let Some(key) = arguments.keys().next() {
                return Err(invalid(format!("remove takes no argument, got '{key}'")));
            }
            if step.scores_file.is_some() {
                return Err(invalid("remove takes no 'scores_file'"));
            }
            Action::Remove
        }
        "global_unstructured" => {
            let name = match arguments.remove("pruning_method") {
                Some(Value::String(name)) => name,
                Some(other) => {
                    return Err(invalid(format!(
                        "'pruning_method' must be a method name, got {other}"
                    )))
                }
                None => {
                    return Err(invalid(
                        "missing 'pruning_method' (the unstructured method to apply globally)",
                    ))
                }
            };
            let wrong_type = |pruning_type: String| PruneError::WrongPruningType {
                method: name.clone(),
                reason: format!(
                    "only \"unstructured\" methods can be applied globally, got {pruning_type}"
                ),
            };
            // Refused by its declared type before its arguments are looked at.
            if let Some(entry) = registry.get(&name) {
                if entry.pruning_type != "unstructured" {
                    return Err(wrong_type(entry.pruning_type.clone()));
                }
            }
            let method = registry.build(&name, &Value::Object(arguments.clone()))?;
            if method.pruning_type() != PruningType::Unstructured {
                return Err(PruneError::WrongPruningType {
                    method: name,
                    reason: format!(
                        "only \"unstructured\" methods can be applied globally, got {}",
                        method.pruning_type()
                    ),
                });
            }
            record.insert("pruning_method".to_owned(), json!(name));
            Action::Global(method)
        }
        "shrink" => {
            if step.scores_file.is_some() {
                return Err(invalid("shrink takes no 'scores_file'"));
            }
            let (graph, model) = groups_argument(&mut arguments, &mut record)?;
            if let Some(key) = arguments.keys().next() {
                return Err(invalid(format!(
                    "shrink takes 'groups' or 'model', got '{key}'"
                )));
            }
            Action::Shrink { graph, model }
        }
        "prune_groups" => {
            let (graph, model) = groups_argument(&mut arguments, &mut record)?;
            let name = match arguments.remove("pruning_method") {
                Some(Value::String(name)) => name,
                _ => {
                    return Err(invalid(
                        "missing 'pruning_method' (a structured method on dim 0)",
                    ))
                }
            };
            let method = registry.build(&name, &Value::Object(arguments.clone()))?;
            record.insert("pruning_method".to_owned(), json!(name));
            Action::PruneGroups {
                graph,
                model,
                method,
            }
        }
        "custom_from_mask" if step.mask_file.is_some() => {
            if let Some(key) = arguments.keys().next() {
                return Err(invalid(format!(
                    "with 'mask_file', custom_from_mask takes no argument, got '{key}'"
                )));
            }
            let path = step.mask_file.as_deref().expect("checked");
            let masks = side_tensors(path, &matched, "mask_file")?
                .into_iter()
                .map(|(key, mask)| {
                    Ok((
                        key,
                        Arc::new(CustomFromMask::new(&mask)?) as Arc<dyn PruningMethod>,
                    ))
                })
                .collect::<Result<_>>()?;
            record.insert("mask_file".to_owned(), json!(path.display().to_string()));
            Action::Masks(masks)
        }
        name => Action::Local(registry.build(name, &Value::Object(arguments.clone()))?),
    };
    record.extend(
        arguments
            .into_iter()
            .map(|(key, value)| (key, recorded_argument(value))),
    );
    let scores = match &step.scores_file {
        Some(path) => {
            record.insert("scores_file".to_owned(), json!(path.display().to_string()));
            side_tensors(path, &matched, "scores_file")?
        }
        None => HashMap::new(),
    };
    check_shapes(&action, &matched, &scores, shape_of, step)?;
    Ok(Prepared {
        step,
        keys: matched,
        action,
        scores,
        record: Value::Object(record),
    })
}

/// What can be checked of a step before any step runs, from the shapes of its tensors: side
/// tensors of the right shape, and each method's own shape checks (dims, counts).
fn check_shapes(
    action: &Action,
    keys: &[String],
    scores: &HashMap<String, Tensor>,
    shape_of: &dyn Fn(&str) -> Vec<i64>,
    step: &Step,
) -> Result<()> {
    let at = |key: &str, err: PruneError| step_error(step, Some(key), err);
    for key in keys {
        let shape = shape_of(key);
        if let Some(scores) = scores.get(key) {
            if scores.size() != shape {
                let err = PruneError::ShapeMismatch {
                    what: format!("importance scores of '{key}'"),
                    expected: shape.clone(),
                    actual: scores.size(),
                };
                return Err(at(key, err));
            }
        }
        let method = match action {
            Action::Local(method) => method,
            Action::Masks(masks) => &masks[key],
            Action::Global(_)
            | Action::Remove
            | Action::Shrink { .. }
            | Action::PruneGroups { .. } => continue,
        };
        method.check_shape(&shape).map_err(|err| at(key, err))?;
    }
    if let Action::Global(method) = action {
        let total: i64 = keys
            .iter()
            .map(|key| crate::tensor_data::entries_in(&shape_of(key)))
            .sum();
        method
            .check_shape(&[total])
            .map_err(|err| step_error(step, None, err))?;
    }
    Ok(())
}

/// The `groups` (declared) or `model` (built-in, `auto` to recognize it) argument of a
/// `shrink` or `prune_groups` step, taken out of `arguments` and recorded.
fn groups_argument(
    arguments: &mut Map<String, Value>,
    record: &mut Map<String, Value>,
) -> Result<(Option<DependencyGraph>, Option<String>)> {
    let graph = match arguments.remove("groups") {
        None => None,
        Some(groups) => {
            let graph = DependencyGraph::from_json(&json!({ "groups": groups }).to_string())?;
            record.insert("groups".to_owned(), json!(graph.groups.len()));
            Some(graph)
        }
    };
    let model = match arguments.remove("model") {
        None => None,
        Some(Value::String(model)) => {
            if model != "auto" && !shrink::BUILTIN_MODELS.contains(&model.as_str()) {
                return Err(invalid(format!(
                    "no built-in model '{model}' (there are auto, {})",
                    shrink::BUILTIN_MODELS.join(", ")
                )));
            }
            record.insert("model".to_owned(), json!(model));
            Some(model)
        }
        Some(other) => return Err(invalid(format!("'model' must be a name, got {other}"))),
    };
    if graph.is_some() && model.is_some() {
        return Err(invalid("'groups' and 'model' exclude each other"));
    }
    Ok((graph, model))
}

/// Arguments up to this many bytes of JSON are recorded in the history as they are.
const MAX_RECORDED_ARGUMENT_BYTES: usize = 256;

/// An argument as the history records it: as it is, or, when its JSON is large (an inline
/// mask), its size and a digest, so that the history stays small.
pub(crate) fn recorded_argument(value: Value) -> Value {
    let text = value.to_string();
    if text.len() <= MAX_RECORDED_ARGUMENT_BYTES {
        return value;
    }
    // FNV-1a, 64 bits: enough to tell two large arguments apart in a history.
    let digest = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    json!({"omitted": format!("{} bytes of JSON", text.len()), "fnv1a64": format!("{digest:016x}")})
}

/// The keys the patterns match: each pattern's matches in sorted order, without repeats.
fn resolve(patterns: &[String], keys: &[String]) -> Result<Vec<String>> {
    let mut matched: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // A literal key is looked up, not matched against every key: a plan listing 50,000 keys of
    // a 100,000-tensor checkpoint took 68-82 s that way.
    let literal: std::collections::HashMap<&str, &String> =
        keys.iter().map(|key| (key.as_str(), key)).collect();
    for pattern in patterns {
        let hits: Vec<&String> = match pattern.contains(['*', '?']) {
            false => literal.get(pattern.as_str()).copied().into_iter().collect(),
            true => {
                let glob = WildMatch::new(pattern);
                keys.iter().filter(|key| glob.matches(key)).collect()
            }
        };
        if hits.is_empty() {
            return Err(PruneError::PatternMatchesNothing(pattern.clone()));
        }
        for hit in hits {
            if seen.insert(hit.as_str()) {
                matched.push(hit.clone());
            }
        }
    }
    Ok(matched)
}

/// Refuses keys that look like half of a pruned pair: a plain `P_mask` without `P_orig` (or
/// the reverse) is most likely a damaged checkpoint, and pruning it would make `P_mask_orig`.
fn check_not_half_pairs(keys: &[String], all: &std::collections::HashSet<&str>) -> Result<()> {
    for key in keys {
        for (suffix, partner) in [("_mask", "_orig"), ("_orig", "_mask")] {
            if let Some(stem) = key.strip_suffix(suffix) {
                let partner = format!("{stem}{partner}");
                if !all.contains(partner.as_str()) {
                    return Err(PruneError::InvalidCheckpoint(format!(
                        "'{key}' is half of a pruned pair ('{partner}' is missing): refusing to \
                         prune it (a damaged checkpoint?)"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The tensors of the side file `path` for each of `keys`.
fn side_tensors(path: &Path, keys: &[String], what: &str) -> Result<HashMap<String, Tensor>> {
    let mut tensors: HashMap<String, Tensor> =
        checkpoint::read(path)?.tensors.into_iter().collect();
    keys.iter()
        .map(|key| {
            let t = tensors.remove(key).ok_or_else(|| {
                invalid(format!("{what} {} has no tensor '{key}'", path.display()))
            })?;
            Ok((key.clone(), t))
        })
        .collect()
}
