//! How a sparsity of the whole is spread over the tensors, and the integer counts that land on
//! it exactly.

use crate::error::{PruneError, Result};
use serde::{Deserialize, Serialize};

/// How the sparsity of the whole is spread over the tensors. In JSON the variant is the
/// `"kind"` field: `{"kind": "global", "min_density": 0.05}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    remote = "Self",
    tag = "kind",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum Distribution {
    /// Every tensor gets the same sparsity (TF-MOT's per-layer pruning); the rounding is
    /// spread so that the total lands exactly on the target count.
    #[default]
    Uniform,
    /// The method ranks the unpruned entries of all tensors together
    /// ([`global_unstructured`](crate::prune::global_unstructured)), so that layers with many
    /// small weights give more. With `min_density`, each tensor keeps at least that share of
    /// its entries (a floor that protects small layers); the rest is ranked globally.
    Global {
        /// The share of each tensor's entries always kept (0: none).
        #[serde(default)]
        min_density: f64,
    },
    /// LAMP (Lee et al. 2021): the method ranks all tensors together by layer-adaptive
    /// magnitude scores, each entry's `w^2` over the sum of `w^2` of the tensor's entries at
    /// least as large. A tensor's largest entry scores 1, so no tensor is emptied, and sparse
    /// layers are not drained at high sparsity the way plain global magnitude drains them.
    Lamp,
    /// Erdős–Rényi-Kernel (Evci et al. 2020, RigL): each tensor keeps a number of entries
    /// proportional to the sum of its dimensions (`n_in + n_out` for a linear weight,
    /// `c_in + c_out + k_h + k_w` for a convolution's), at most all of them. Small layers, and
    /// the first and last ones, stay denser.
    Erk,
}

serde_through_value!(Distribution);

impl Distribution {
    /// Checks the arguments.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Distribution::Global { min_density } if !(0.0..=1.0).contains(&min_density) => {
                Err(PruneError::InvalidSchedule(format!(
                    "min_density must lie in [0, 1], got {min_density}"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// One tensor, as the apportioning sees it.
#[derive(Clone, Debug)]
pub(crate) struct Share {
    /// How much the tensor asks for, relative to the others (its size, the sum of its dims).
    pub weight: f64,
    /// The fewest units it may keep.
    pub min_kept: i64,
    /// The most units it may keep (what it keeps now: pruning never revives).
    pub max_kept: i64,
}

/// Integer counts to keep, one per share, summing exactly to `kept`, each within its bounds
/// and as close as integers get to `clamp(lambda * weight, min_kept, max_kept)` for the one
/// `lambda` that sums to `kept`. An error when the bounds cannot sum to `kept`.
pub(crate) fn apportion(shares: &[Share], kept: i64) -> Result<Vec<i64>> {
    let lowest: i64 = shares.iter().map(|s| s.min_kept).sum();
    let highest: i64 = shares.iter().map(|s| s.max_kept).sum();
    if kept < lowest {
        return Err(PruneError::InvalidSchedule(format!(
            "the target keeps {kept} entries, but the tensors must keep at least {lowest} \
             (their floors)"
        )));
    }
    if kept > highest {
        return Err(PruneError::InvalidSchedule(format!(
            "the target keeps {kept} entries, but only {highest} are still unpruned \
             (pruning never revives entries)"
        )));
    }
    let ideal_at = |lambda: f64| -> Vec<f64> {
        shares
            .iter()
            .map(|s| (lambda * s.weight).clamp(s.min_kept as f64, s.max_kept as f64))
            .collect()
    };
    let sum_at = |lambda: f64| ideal_at(lambda).iter().sum::<f64>();
    let (mut low, mut high) = (0.0f64, 1.0f64);
    while sum_at(high) < kept as f64 && high < 1e300 {
        high *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (low + high);
        if sum_at(mid) < kept as f64 {
            low = mid;
        } else {
            high = mid;
        }
    }
    let ideal = ideal_at(high);
    let mut counts: Vec<i64> = ideal
        .iter()
        .zip(shares)
        .map(|(x, s)| (x.floor() as i64).clamp(s.min_kept, s.max_kept))
        .collect();
    // Largest remainders first; ties to the earlier tensor, so the result is deterministic.
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (ideal[a] - counts[a] as f64, ideal[b] - counts[b] as f64);
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    let mut missing = kept - counts.iter().sum::<i64>();
    while missing > 0 {
        let before = missing;
        for &i in &order {
            if missing > 0 && counts[i] < shares[i].max_kept {
                counts[i] += 1;
                missing -= 1;
            }
        }
        debug_assert!(missing < before, "the bounds sum to at least `kept`");
    }
    while missing < 0 {
        for &i in order.iter().rev() {
            if missing < 0 && counts[i] > shares[i].min_kept {
                counts[i] -= 1;
                missing += 1;
            }
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(weight: f64, min_kept: i64, max_kept: i64) -> Share {
        Share {
            weight,
            min_kept,
            max_kept,
        }
    }

    #[test]
    fn counts_are_proportional_and_sum_exactly() {
        let shares = [share(10.0, 0, 10), share(20.0, 0, 20), share(30.0, 0, 30)];
        assert_eq!(apportion(&shares, 30).unwrap(), [5, 10, 15]);
        let counts = apportion(&shares, 31).unwrap();
        assert_eq!(counts.iter().sum::<i64>(), 31);
    }

    #[test]
    fn bounds_hold_and_the_rest_goes_elsewhere() {
        // the first tensor cannot keep more than it keeps now
        let shares = [share(100.0, 0, 5), share(100.0, 0, 100)];
        assert_eq!(apportion(&shares, 60).unwrap(), [5, 55]);
        // a floor
        let shares = [share(1.0, 8, 10), share(100.0, 0, 100)];
        assert_eq!(apportion(&shares, 20).unwrap(), [8, 12]);
    }

    #[test]
    fn impossible_targets_are_errors() {
        let shares = [share(1.0, 8, 10), share(1.0, 0, 10)];
        assert!(apportion(&shares, 7).is_err());
        assert!(apportion(&shares, 21).is_err());
    }
}
