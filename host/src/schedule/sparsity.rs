//! When to prune and how far: the sparsity of the whole set of tensors as a function of the
//! training step.

use crate::error::{PruneError, Result};
use serde::{Deserialize, Serialize};

/// How the target sparsity grows with the training step.
///
/// Every variant states the sparsity of the *whole* set of pruned tensors; a
/// [`GradualPruner`](super::GradualPruner) works out each round's amount relative to what is
/// still unpruned. In JSON the variant is the `"kind"` field:
///
/// ```
/// use tchprune::schedule::Schedule;
///
/// let schedule: Schedule = serde_json::from_str(
///     r#"{"kind": "polynomial_decay", "initial_sparsity": 0.0, "final_sparsity": 0.9,
///         "begin_step": 0, "end_step": 1000, "frequency": 100}"#,
/// )?;
/// assert_eq!(schedule.sparsity_at(0), Some(0.0));
/// assert_eq!(schedule.sparsity_at(50), None); // not a pruning step
/// assert_eq!(schedule.sparsity_at(500), Some(0.9 - 0.9 * 0.5f64.powi(3)));
/// assert_eq!(schedule.sparsity_at(1000), Some(0.9));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    remote = "Self",
    tag = "kind",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum Schedule {
    /// Prunes to `sparsity` at `step`, once.
    OneShot {
        /// The sparsity reached.
        sparsity: f64,
        /// The step at which it is reached.
        #[serde(default)]
        step: u64,
    },
    /// TF-MOT's `ConstantSparsity`: prunes to `target_sparsity` at `begin_step`, then every
    /// `frequency` steps until `end_step` (`None`: for ever) checks it again (masks only grow, so
    /// later rounds prune only what the target still asks for).
    Constant {
        /// The sparsity held.
        target_sparsity: f64,
        /// The first pruning step.
        #[serde(default)]
        begin_step: u64,
        /// The last step that may prune; `None` for no end.
        #[serde(default)]
        end_step: Option<u64>,
        /// Steps between pruning steps.
        #[serde(default = "default_frequency")]
        frequency: u64,
    },
    /// Zhu & Gupta (2017) with TF-MOT's `PolynomialDecay` arguments:
    /// `s_t = s_f + (s_i - s_f) * (1 - (t - begin_step) / (end_step - begin_step))^power`,
    /// pruning at `begin_step` and every `frequency` steps after, and always at `end_step` (TF-MOT
    /// skips it when `end_step - begin_step` is not a multiple of `frequency` and then never
    /// reaches `final_sparsity`).
    PolynomialDecay {
        /// The sparsity at `begin_step`.
        #[serde(default)]
        initial_sparsity: f64,
        /// The sparsity from `end_step` on.
        final_sparsity: f64,
        /// The first pruning step.
        #[serde(default)]
        begin_step: u64,
        /// The step at which `final_sparsity` is reached.
        end_step: u64,
        /// The exponent; 3 in Zhu & Gupta and TF-MOT.
        #[serde(default = "default_power")]
        power: f64,
        /// Steps between pruning steps.
        #[serde(default = "default_frequency")]
        frequency: u64,
    },
    /// Han et al. (2015): `rounds` rounds, `steps_per_round` steps apart from `begin_step`,
    /// each pruning the same fraction `1 - (1 - final_sparsity)^(1 / rounds)` of what is still
    /// unpruned, fine-tuning in between; the last round lands on `final_sparsity`.
    Iterative {
        /// The sparsity after the last round.
        final_sparsity: f64,
        /// How many rounds.
        rounds: u32,
        /// The step of the first round.
        #[serde(default)]
        begin_step: u64,
        /// Steps between rounds.
        steps_per_round: u64,
    },
}

fn default_frequency() -> u64 {
    100
}

fn default_power() -> f64 {
    3.0
}

/// The share of the still unpruned entries that must be pruned to go from sparsity `from` to
/// sparsity `to`: `1 - (1 - to) / (1 - from)` (0 when `to <= from`, 1 when `from` is 1).
///
/// ```
/// // from 50% to 75%: half of what remains
/// assert_eq!(tchprune::schedule::relative_amount(0.5, 0.75), 0.5);
/// ```
pub fn relative_amount(from: f64, to: f64) -> f64 {
    if to <= from {
        0.0
    } else if from >= 1.0 {
        1.0
    } else {
        1.0 - (1.0 - to) / (1.0 - from)
    }
}

serde_through_value!(Schedule);

impl Schedule {
    /// Checks the arguments: sparsities in [0, 1], non-zero frequencies and rounds, an end after
    /// the beginning.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(PruneError::InvalidSchedule(reason));
        let check_frequency = |frequency: u64| match frequency {
            0 => invalid("frequency must be at least 1".into()),
            _ => Ok(()),
        };
        let check_sparsity = |name: &str, s: f64| {
            if (0.0..=1.0).contains(&s) {
                Ok(())
            } else {
                invalid(format!("{name} must lie in [0, 1], got {s}"))
            }
        };
        match *self {
            Schedule::OneShot { sparsity, .. } => check_sparsity("sparsity", sparsity),
            Schedule::Constant {
                target_sparsity,
                begin_step,
                end_step,
                frequency,
            } => {
                check_sparsity("target_sparsity", target_sparsity)?;
                check_frequency(frequency)?;
                match end_step {
                    Some(end) if end < begin_step => invalid(format!(
                        "end_step ({end}) must not come before begin_step ({begin_step})"
                    )),
                    _ => Ok(()),
                }
            }
            Schedule::PolynomialDecay {
                initial_sparsity,
                final_sparsity,
                begin_step,
                end_step,
                power,
                frequency,
            } => {
                check_sparsity("initial_sparsity", initial_sparsity)?;
                check_sparsity("final_sparsity", final_sparsity)?;
                if final_sparsity < initial_sparsity {
                    return invalid(format!(
                        "final_sparsity ({final_sparsity}) must not be below initial_sparsity \
                         ({initial_sparsity}): pruning only grows"
                    ));
                }
                if end_step <= begin_step {
                    return invalid(format!(
                        "end_step ({end_step}) must come after begin_step ({begin_step})"
                    ));
                }
                if !(power.is_finite() && power > 0.0) {
                    return invalid(format!("power must be a positive number, got {power}"));
                }
                check_frequency(frequency)
            }
            Schedule::Iterative {
                final_sparsity,
                rounds,
                steps_per_round,
                ..
            } => {
                check_sparsity("final_sparsity", final_sparsity)?;
                if rounds == 0 {
                    return invalid("rounds must be at least 1".into());
                }
                if steps_per_round == 0 && rounds > 1 {
                    return invalid("steps_per_round must be at least 1".into());
                }
                Ok(())
            }
        }
    }

    /// The sparsity the schedule asks for at `step`, pruning step or not (0 before the first
    /// pruning step).
    pub fn target_at(&self, step: u64) -> f64 {
        match *self {
            Schedule::OneShot { sparsity, step: at } => match step >= at {
                true => sparsity,
                false => 0.0,
            },
            Schedule::Constant {
                target_sparsity,
                begin_step,
                ..
            } => match step >= begin_step {
                true => target_sparsity,
                false => 0.0,
            },
            Schedule::PolynomialDecay {
                initial_sparsity,
                final_sparsity,
                begin_step,
                end_step,
                power,
                ..
            } => {
                if step < begin_step {
                    return 0.0;
                }
                if step >= end_step {
                    return final_sparsity;
                }
                let progress = (step - begin_step) as f64 / (end_step - begin_step) as f64;
                final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress).powf(power)
            }
            Schedule::Iterative {
                final_sparsity,
                rounds,
                begin_step,
                steps_per_round,
            } => {
                if step < begin_step {
                    return 0.0;
                }
                let done = match steps_per_round {
                    0 => u64::from(rounds),
                    per => ((step - begin_step) / per + 1).min(u64::from(rounds)),
                };
                if done == u64::from(rounds) {
                    return final_sparsity;
                }
                1.0 - (1.0 - final_sparsity).powf(done as f64 / f64::from(rounds))
            }
        }
    }

    /// True when the schedule prunes at `step`.
    pub fn is_pruning_step(&self, step: u64) -> bool {
        match *self {
            Schedule::OneShot { step: at, .. } => step == at,
            Schedule::Constant {
                begin_step,
                end_step,
                frequency,
                ..
            } => {
                step >= begin_step
                    && end_step.map_or(true, |end| step <= end)
                    && (step - begin_step) % frequency.max(1) == 0
            }
            Schedule::PolynomialDecay {
                begin_step,
                end_step,
                frequency,
                ..
            } => {
                (begin_step..=end_step).contains(&step)
                    && ((step - begin_step) % frequency.max(1) == 0 || step == end_step)
            }
            Schedule::Iterative {
                rounds,
                begin_step,
                steps_per_round,
                ..
            } => {
                let last = begin_step + u64::from(rounds.saturating_sub(1)) * steps_per_round;
                (begin_step..=last).contains(&step)
                    && (steps_per_round == 0 || (step - begin_step) % steps_per_round == 0)
            }
        }
    }

    /// The sparsity to prune to at `step` when it is a pruning step, else `None`.
    pub fn sparsity_at(&self, step: u64) -> Option<f64> {
        self.is_pruning_step(step).then(|| self.target_at(step))
    }

    /// The sparsity the schedule ends on.
    pub fn final_sparsity(&self) -> f64 {
        match *self {
            Schedule::OneShot { sparsity, .. } => sparsity,
            Schedule::Constant {
                target_sparsity, ..
            } => target_sparsity,
            Schedule::PolynomialDecay { final_sparsity, .. }
            | Schedule::Iterative { final_sparsity, .. } => final_sparsity,
        }
    }

    /// The last step at which the schedule raises the sparsity (`None` for a constant schedule
    /// without end, which keeps checking).
    pub fn last_step(&self) -> Option<u64> {
        match *self {
            Schedule::OneShot { step, .. } => Some(step),
            Schedule::Constant { end_step, .. } => end_step,
            Schedule::PolynomialDecay { end_step, .. } => Some(end_step),
            Schedule::Iterative {
                rounds,
                begin_step,
                steps_per_round,
                ..
            } => Some(begin_step + u64::from(rounds.saturating_sub(1)) * steps_per_round),
        }
    }
}
