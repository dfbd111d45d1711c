//! Pruning schedules for training loops: when to prune, how far, over which tensors, and
//! lottery tickets.
//!
//! Pruning to high sparsity keeps accuracy only when it is gradual, with training between the
//! rounds. A [`PruningSchedule`] says all of it as data (serde, so a training app's JSON config
//! can hold it): the [`Schedule`] gives the target sparsity of the *whole* set of tensors at
//! each step, the [`Distribution`] spreads it over the tensors, and the method (any registered
//! one, built-in or plugin, built with an `"amount"`) chooses the entries. A [`GradualPruner`]
//! carries it out on either front end ([`Module`](crate::Module) or
//! [`VarStorePruner`](crate::VarStorePruner)): each round it counts what the masks already prune,
//! computes the number of entries still to prune for each tensor (relative to what is unpruned,
//! as the container requires), and lands exactly on the target count, `round(sparsity * total)`.
//!
//! ```
//! use tch::{nn, Device};
//! use tchprune::schedule::{GradualPruner, PruningSchedule};
//! use tchprune::{layers, Registry};
//!
//! let schedule: PruningSchedule = serde_json::from_value(serde_json::json!({
//!     "tensors": layers::LENET_WEIGHTS,
//!     "schedule": {"kind": "polynomial_decay", "final_sparsity": 0.9,
//!                  "begin_step": 0, "end_step": 300, "frequency": 100},
//!     "distribution": {"kind": "global"},
//! }))?;
//! let vs = nn::VarStore::new(Device::Cpu);
//! let mut model = layers::lenet(&vs.root());
//! let mut pruner = GradualPruner::new(schedule, &Registry::with_builtins())?;
//! for step in 0..=300 {
//!     // ... a training step ...
//!     if let Some(round) = pruner.step(&mut model, step)? {
//!         println!("step {step}: {:.1}% pruned", 100.0 * round.sparsity());
//!     }
//! }
//! assert_eq!(pruner.rounds().last().unwrap().pruned, (0.9 * 59_838.0f64).round() as i64);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

/// Derives serde for an internally tagged enum (`"kind": ...`) through `#[serde(remote =
/// "Self")]`, reading through a `serde_json::Value`: with serde_json's `arbitrary_precision`
/// (which the workspace enables), an internally tagged enum cannot read its numbers straight
/// from text.
macro_rules! serde_through_value {
    ($type:ty) => {
        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                <$type>::serialize(self, serializer)
            }
        }

        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = <serde_json::Value as serde::Deserialize>::deserialize(deserializer)?;
                <$type>::deserialize(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

mod distribution;
mod lottery;
mod sparsity;

pub use distribution::Distribution;
pub use lottery::LotteryTicket;
pub use sparsity::{relative_amount, Schedule};

use crate::engine::{self, MaskStore, PlannedMask};
use crate::error::{PruneError, Result};
use crate::method::{PruningMethod, PruningType};
use crate::prune::Prunable;
use crate::registry::{Registered, Registry};
use crate::sparsity::Sparsity;
use distribution::{apportion, Share};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use tch::{Kind, Tensor};

/// A pruning method by name, with its arguments other than `"amount"` (which the schedule
/// sets each round).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSpec {
    /// The method's registered name (`"l1_unstructured"`, a plugin's name...).
    pub name: String,
    /// Its other JSON arguments (`{"n": 2, "dim": 0}` for `ln_structured`).
    #[serde(default = "empty_object")]
    pub arguments: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl Default for MethodSpec {
    /// `l1_unstructured`: magnitude pruning.
    fn default() -> Self {
        Self {
            name: "l1_unstructured".to_owned(),
            arguments: empty_object(),
        }
    }
}

/// Everything a gradual pruning needs, as data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruningSchedule {
    /// The tensors pruned: dotted paths of a [`Module`](crate::Module), or variable names of a
    /// [`VarStorePruner`](crate::VarStorePruner).
    pub tensors: Vec<String>,
    /// When, and to what sparsity of all of `tensors` together.
    pub schedule: Schedule,
    /// How that sparsity is spread over the tensors (default: uniform).
    #[serde(default)]
    pub distribution: Distribution,
    /// The method choosing the entries (default: `l1_unstructured`).
    #[serde(default)]
    pub method: MethodSpec,
}

/// What one round did.
#[derive(Clone, Debug, PartialEq)]
pub struct Round {
    /// The training step, when the round came from [`GradualPruner::step`].
    pub step: Option<u64>,
    /// The sparsity the round aimed at.
    pub target_sparsity: f64,
    /// Units (entries; slices for structured methods) pruned by this round.
    pub newly_pruned: i64,
    /// `newly_pruned` as a share of the units that were unpruned before the round.
    pub relative_amount: f64,
    /// Units pruned after the round, over all tensors.
    pub pruned: i64,
    /// Units over all tensors.
    pub total: i64,
    /// Each tensor's pruned entries (by its mask) after the round.
    pub tensors: Vec<Sparsity>,
}

impl Round {
    /// The share of all units pruned after the round.
    pub fn sparsity(&self) -> f64 {
        match self.total {
            0 => 0.0,
            total => self.pruned as f64 / total as f64,
        }
    }
}

/// Carries out a [`PruningSchedule`] on a [`Module`](crate::Module) or a
/// [`VarStorePruner`](crate::VarStorePruner); see the [module docs](self).
#[derive(Debug)]
pub struct GradualPruner {
    config: PruningSchedule,
    method: Registered,
    pruning_type: PruningType,
    rounds: Vec<Round>,
    /// Whether the tensors were found in the target already (on the first call that sees it).
    checked: bool,
}

/// One tensor's units before a round.
struct Units {
    /// Entries, or slices along the structured method's dim.
    total: i64,
    /// Units the mask keeps.
    kept: i64,
    /// How many units ERK gives the tensor, relative to the others: its units times the sum of
    /// its dimensions over their product.
    erk_weight: f64,
}

impl GradualPruner {
    /// Checks `config` and finds its method in `registry`. The method must be unstructured or
    /// structured (a global-type method sees whole tensors, so no count relative to what is
    /// unpruned applies) and take an `"amount"`.
    pub fn new(config: PruningSchedule, registry: &Registry) -> Result<Self> {
        config.schedule.validate()?;
        config.distribution.validate()?;
        if config.tensors.is_empty() {
            return Err(PruneError::InvalidSchedule("no tensors to prune".into()));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(duplicate) = config.tensors.iter().find(|t| !seen.insert(t.as_str())) {
            return Err(PruneError::DuplicateParameter(duplicate.clone()));
        }
        let method = registry
            .get(&config.method.name)
            .ok_or_else(|| {
                let known: Vec<&str> = registry.iter().map(|m| m.name.as_str()).collect();
                PruneError::InvalidSchedule(format!(
                    "no method named '{}' (known: {})",
                    config.method.name,
                    known.join(", ")
                ))
            })?
            .clone();
        let probe = build_with_count(&method, &config.method, 0)?;
        let pruning_type = probe.pruning_type();
        match (pruning_type, &config.distribution) {
            (PruningType::Global, _) => {
                return Err(PruneError::InvalidSchedule(format!(
                    "method '{}' is of the global pruning type; a schedule needs an \
                     unstructured or structured method",
                    config.method.name
                )))
            }
            (PruningType::Structured { .. }, Distribution::Global { .. }) => {
                return Err(PruneError::InvalidSchedule(format!(
                    "method '{}' is structured; the global distribution ranks single entries \
                     and needs an unstructured method",
                    config.method.name
                )))
            }
            _ => {}
        }
        Ok(Self {
            config,
            method,
            pruning_type,
            rounds: Vec::new(),
            checked: false,
        })
    }

    /// The schedule carried out.
    pub fn config(&self) -> &PruningSchedule {
        &self.config
    }

    /// The rounds done so far, oldest first.
    pub fn rounds(&self) -> &[Round] {
        &self.rounds
    }

    /// Prunes `target` when the schedule prunes at `step`, and says what the round did;
    /// `Ok(None)` on other steps. Call it once per training step (after the optimizer's).
    ///
    /// The first call checks the schedule's tensors against `target` ([`GradualPruner::check`]),
    /// whatever the step: a misspelt name fails at step 0, not at the schedule's `begin_step`.
    pub fn step(&mut self, target: &mut impl Prunable, step: u64) -> Result<Option<Round>> {
        if !self.checked {
            self.check(target)?;
            self.checked = true;
        }
        match self.config.schedule.sparsity_at(step) {
            Some(sparsity) => self.prune(target, sparsity, Some(step)).map(Some),
            None => Ok(None),
        }
    }

    /// Checks that every tensor of the schedule is in `target` and fits the method's type (a
    /// structured method's `dim`), naming the first that is not; changes nothing. [`step`]
    /// calls it on its first call; call it up front to check a schedule before training.
    ///
    /// [`step`]: GradualPruner::step
    pub fn check(&self, target: &impl Prunable) -> Result<()> {
        for path in &self.config.tensors {
            units_of(target, path, self.pruning_type)?;
        }
        Ok(())
    }

    /// Prunes `target` to `sparsity` of all the schedule's tensors now, whatever the step
    /// (iterative pruning and lottery tickets call it between trainings). Never revives: a
    /// target below what is pruned already prunes nothing. On error nothing changes.
    pub fn prune_to(&mut self, target: &mut impl Prunable, sparsity: f64) -> Result<Round> {
        if !(0.0..=1.0).contains(&sparsity) {
            return Err(PruneError::InvalidSchedule(format!(
                "a sparsity must lie in [0, 1], got {sparsity}"
            )));
        }
        self.prune(target, sparsity, None)
    }

    fn prune(
        &mut self,
        target: &mut impl Prunable,
        sparsity: f64,
        step: Option<u64>,
    ) -> Result<Round> {
        let paths: Vec<&str> = self.config.tensors.iter().map(String::as_str).collect();
        let units = paths
            .iter()
            .map(|path| units_of(target, path, self.pruning_type))
            .collect::<Result<Vec<_>>>()?;
        let total: i64 = units.iter().map(|u| u.total).sum();
        let kept_before: i64 = units.iter().map(|u| u.kept).sum();
        let kept_target = total - (sparsity * total as f64).round() as i64;
        let planned = match kept_target < kept_before {
            true => self.plan(target, &paths, &units, kept_target)?,
            false => Vec::new(),
        };
        engine::commit_all(target, planned);

        let mut tensors = Vec::with_capacity(paths.len());
        let mut kept_after = 0;
        for path in &paths {
            let (stored, mask) = target.stored(path)?;
            let entries = stored.numel() as i64;
            let kept_entries = mask.as_ref().map_or(Ok(entries), count_true)?;
            kept_after += match self.pruning_type {
                PruningType::Structured { .. } => {
                    units_in(path, &stored, mask.as_ref(), self.pruning_type)?.kept
                }
                _ => kept_entries,
            };
            tensors.push(Sparsity {
                name: (*path).to_owned(),
                zeros: entries - kept_entries,
                total: entries,
            });
        }
        let round = Round {
            step,
            target_sparsity: sparsity,
            newly_pruned: kept_before - kept_after,
            relative_amount: match kept_before {
                0 => 0.0,
                kept => (kept_before - kept_after) as f64 / kept as f64,
            },
            pruned: total - kept_after,
            total,
            tensors,
        };
        self.rounds.push(round.clone());
        Ok(round)
    }

    /// Plans the masks that bring the tensors from `units` down to `kept_target` units kept.
    fn plan(
        &self,
        target: &impl Prunable,
        paths: &[&str],
        units: &[Units],
        kept_target: i64,
    ) -> Result<Vec<PlannedMask>> {
        let floor = match self.config.distribution {
            Distribution::Global { min_density } => min_density,
            _ => 0.0,
        };
        let shares: Vec<Share> = units
            .iter()
            .map(|u| Share {
                weight: match self.config.distribution {
                    Distribution::Erk => u.erk_weight,
                    _ => u.total as f64,
                },
                min_kept: ((floor * u.total as f64).ceil() as i64).min(u.kept),
                max_kept: u.kept,
            })
            .collect();
        match self.config.distribution {
            Distribution::Uniform | Distribution::Erk => {
                let kept = apportion(&shares, kept_target)?;
                self.plan_per_tensor(target, paths, units, &kept)
            }
            Distribution::Global { .. } => {
                self.plan_global(target, paths, &shares, kept_target, None)
            }
            Distribution::Lamp => {
                let scores = paths
                    .iter()
                    .map(|path| lamp_scores(target, path))
                    .collect::<Result<Vec<_>>>()?;
                self.plan_global(target, paths, &shares, kept_target, Some(&scores))
            }
        }
    }

    /// Each tensor pruned on its own down to `kept[i]` units.
    fn plan_per_tensor(
        &self,
        target: &impl Prunable,
        paths: &[&str],
        units: &[Units],
        kept: &[i64],
    ) -> Result<Vec<PlannedMask>> {
        let mut planned = Vec::new();
        for ((path, units), kept) in paths.iter().zip(units).zip(kept) {
            if units.kept > *kept {
                let method = self.method_with_count(units.kept - kept)?;
                planned.push(engine::plan(target, path, method, None)?);
            }
        }
        Ok(planned)
    }

    /// The method ranks all tensors together; a tensor that would keep less than its floor is
    /// pruned to its floor on its own, and the others are ranked again, until none is below.
    fn plan_global(
        &self,
        target: &impl Prunable,
        paths: &[&str],
        shares: &[Share],
        kept_target: i64,
        importance_scores: Option<&[Tensor]>,
    ) -> Result<Vec<PlannedMask>> {
        let lowest: i64 = shares.iter().map(|s| s.min_kept).sum();
        if kept_target < lowest {
            return Err(PruneError::InvalidSchedule(format!(
                "the target keeps {kept_target} entries, but the tensors must keep at least \
                 {lowest} (min_density)"
            )));
        }
        let mut pinned = vec![false; paths.len()];
        loop {
            let free: Vec<usize> = (0..paths.len()).filter(|&i| !pinned[i]).collect();
            let pinned_kept: i64 = (0..paths.len())
                .filter(|&i| pinned[i])
                .map(|i| shares[i].min_kept)
                .sum();
            let free_kept: i64 = free.iter().map(|&i| shares[i].max_kept).sum();
            let to_prune = free_kept - (kept_target - pinned_kept);
            let mut planned = Vec::new();
            if to_prune > 0 && !free.is_empty() {
                let free_paths: Vec<&str> = free.iter().map(|&i| paths[i]).collect();
                let scores: Vec<(&str, &Tensor)> = match importance_scores {
                    Some(scores) => free.iter().map(|&i| (paths[i], &scores[i])).collect(),
                    None => Vec::new(),
                };
                let method = self.method_with_count(to_prune)?;
                planned = engine::plan_global(target, &free_paths, method, &scores)?;
            }
            // `plan_global` plans the free tensors in order.
            let mut below = false;
            for (planned, &i) in planned.iter().zip(&free) {
                if shares[i].min_kept > 0 && count_true(&planned.mask)? < shares[i].min_kept {
                    pinned[i] = true;
                    below = true;
                }
            }
            if below {
                continue;
            }
            for i in (0..paths.len()).filter(|&i| pinned[i]) {
                if shares[i].max_kept > shares[i].min_kept {
                    let method = self.method_with_count(shares[i].max_kept - shares[i].min_kept)?;
                    planned.push(engine::plan(target, paths[i], method, None)?);
                }
            }
            return Ok(planned);
        }
    }

    fn method_with_count(&self, count: i64) -> Result<Arc<dyn PruningMethod>> {
        build_with_count(&self.method, &self.config.method, count)
    }
}

/// Builds `spec`'s method with `"amount": count`.
fn build_with_count(
    entry: &Registered,
    spec: &MethodSpec,
    count: i64,
) -> Result<Arc<dyn PruningMethod>> {
    let mut arguments = match &spec.arguments {
        Value::Object(map) => map.clone(),
        Value::Null => Default::default(),
        other => {
            return Err(PruneError::InvalidSchedule(format!(
                "the arguments of method '{}' must be a JSON object, got {other}",
                spec.name
            )))
        }
    };
    if arguments.contains_key("amount") {
        return Err(PruneError::InvalidSchedule(format!(
            "the arguments of method '{}' must not hold \"amount\": the schedule sets it",
            spec.name
        )));
    }
    arguments.insert("amount".to_owned(), Value::from(count));
    entry.build(&Value::Object(arguments)).map_err(|err| {
        PruneError::InvalidSchedule(format!(
            "method '{}' cannot be built with an amount of {count}: {err}",
            spec.name
        ))
    })
}

/// LAMP scores of the tensor at `path` (Lee et al. 2021): over its unpruned entries sorted by
/// `w^2` ascending, each entry's `w^2` divided by the sum of `w^2` from it to the largest;
/// 0 where pruned.
fn lamp_scores(target: &impl MaskStore, path: &str) -> Result<Tensor> {
    let (stored, mask) = target.stored(path)?;
    tch::no_grad(|| {
        let mut squares = stored.f_to_kind(Kind::Double)?.f_square()?;
        if let Some(mask) = &mask {
            squares = squares.f_mul(&mask.f_to_kind(Kind::Double)?)?;
        }
        let flat = squares.f_reshape([-1])?;
        let (sorted, order) = flat.f_sort(0, false)?;
        let from_each_to_largest = sorted.f_flip([0])?.f_cumsum(0, Kind::Double)?.f_flip([0])?;
        let sorted_scores = sorted.f_div(&from_each_to_largest.f_clamp_min(f64::MIN_POSITIVE)?)?;
        let scores = flat.f_zeros_like()?.f_scatter(0, &order, &sorted_scores)?;
        Ok(scores.f_reshape(stored.size())?)
    })
}

/// How many `true` entries a `bool` mask has.
fn count_true(mask: &Tensor) -> Result<i64> {
    if let Some(zeros) = crate::small_loops::count_zeros(mask) {
        return Ok(mask.numel() as i64 - zeros);
    }
    Ok(mask.f_sum(Kind::Int64)?.f_int64_value(&[])?)
}

/// The tensor at `path` in units of the method: entries, or slices along a structured dim.
fn units_of(target: &impl MaskStore, path: &str, pruning_type: PruningType) -> Result<Units> {
    let (stored, mask) = target.stored(path)?;
    units_in(path, &stored, mask.as_ref(), pruning_type)
}

/// [`units_of`] for a tensor read already, with its mask.
fn units_in(
    path: &str,
    stored: &Tensor,
    mask: Option<&Tensor>,
    pruning_type: PruningType,
) -> Result<Units> {
    let shape = stored.size();
    let dims_sum: i64 = shape.iter().sum();
    let erk_weight = |units: i64| match stored.numel() {
        0 => 0.0,
        numel => dims_sum as f64 * units as f64 / numel as f64,
    };
    match pruning_type {
        PruningType::Structured { dim } => {
            let rank = shape.len() as i64;
            let d = if dim < 0 { dim + rank } else { dim };
            if !(0..rank).contains(&d) {
                return Err(PruneError::InvalidSchedule(format!(
                    "dim {dim} is out of range for '{path}' of shape {shape:?}"
                )));
            }
            let slices = shape[d as usize];
            let kept = match mask {
                None => slices,
                Some(mask) => mask
                    .f_transpose(0, d)?
                    .f_reshape([slices, -1])?
                    .f_any_dim(1, false)?
                    .f_sum(Kind::Int64)?
                    .f_int64_value(&[])?,
            };
            Ok(Units {
                total: slices,
                kept,
                erk_weight: erk_weight(slices),
            })
        }
        _ => {
            let total = stored.numel() as i64;
            let kept = mask.map_or(Ok(total), count_true)?;
            Ok(Units {
                total,
                kept,
                erk_weight: erk_weight(total),
            })
        }
    }
}
