//! How much of a model is pruned: the numbers the tutorial prints.

use crate::prune::Prunable;

/// The zeros of one tensor as the forward pass sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sparsity {
    /// The tensor's dotted path (`conv1.weight`).
    pub name: String,
    /// How many entries are zero.
    pub zeros: i64,
    /// How many entries there are.
    pub total: i64,
}

impl Sparsity {
    /// The share of zero entries, in percent.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.zeros as f64 / self.total as f64
        }
    }
}

/// The sparsity of each listed tensor (dotted paths from the root of a [`crate::Module`], or
/// variable names of a [`crate::VarStorePruner`], as the forward pass sees them), followed by
/// the total over all of them under the name `"global"`.
pub fn sparsity(root: &impl Prunable, paths: &[&str]) -> crate::Result<Vec<Sparsity>> {
    let mut rows = Vec::with_capacity(paths.len() + 1);
    for path in paths {
        let (zeros, total) = root.count_zeros(path)?;
        rows.push(Sparsity {
            name: (*path).to_owned(),
            zeros,
            total,
        });
    }
    let global = Sparsity {
        name: "global".to_owned(),
        zeros: rows.iter().map(|r| r.zeros).sum(),
        total: rows.iter().map(|r| r.total).sum(),
    };
    rows.push(global);
    Ok(rows)
}
