//! N:M sparsity: N of every M consecutive inputs of a row pruned (2:4 is what sparse tensor
//! cores run), and the selection of the N smallest scores in each group.

use crate::error::{PruneError, Result};
use std::fmt;
use tch::{Kind, Tensor};

/// N of every M consecutive entries along a row are pruned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NmPattern {
    /// Pruned per group.
    pub n: i64,
    /// Group size.
    pub m: i64,
}

impl NmPattern {
    /// 2:4, the pattern sparse tensor cores run.
    pub const TWO_FOUR: NmPattern = NmPattern { n: 2, m: 4 };

    /// Parses `"N:M"` with `0 < N < M`.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let bad = || format!("'{text}' is not a pattern N:M with 0 < N < M (like \"2:4\")");
        let (n, m) = text.split_once(':').ok_or_else(bad)?;
        let (n, m) = (n.trim().parse::<i64>(), m.trim().parse::<i64>());
        match (n, m) {
            (Ok(n), Ok(m)) if 0 < n && n < m && m <= 1 << 16 => Ok(Self { n, m }),
            _ => Err(bad()),
        }
    }

    /// The fraction pruned, `N / M`.
    pub fn sparsity(self) -> f64 {
        self.n as f64 / self.m as f64
    }

    /// Fails unless rows of `columns` entries split into whole groups.
    pub(crate) fn check_columns(self, method: &str, columns: i64) -> Result<()> {
        if columns % self.m == 0 {
            return Ok(());
        }
        Err(PruneError::MethodFailed {
            method: method.to_owned(),
            reason: format!(
                "{self} needs rows whose length is a multiple of {}, got {columns}",
                self.m
            ),
        })
    }

    /// A `bool` tensor of `scores`' shape (`[rows, columns]`), true at the `n` smallest scores
    /// of every group of `m` consecutive columns (`topk` along each group, as the reference
    /// implementations select them).
    pub(crate) fn smallest(self, scores: &Tensor) -> Result<Tensor> {
        let (rows, columns) = scores.size2()?;
        let groups = scores.f_reshape([rows, columns / self.m, self.m])?;
        let (_, indices) = groups.f_topk(self.n, -1, false, true)?;
        let pruned = Tensor::f_zeros(
            [rows, columns / self.m, self.m],
            (Kind::Bool, scores.device()),
        )?;
        let pruned = pruned.f_scatter_value(-1, &indices, 1)?;
        Ok(pruned.f_reshape([rows, columns])?)
    }
}

impl fmt::Display for NmPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.n, self.m)
    }
}

/// Fails unless `t` is a 2-d weight (`[out, in]`): data-aware methods work on Linear layers.
pub(crate) fn check_matrix(method: &str, t: &Tensor) -> Result<(i64, i64)> {
    t.size2().map_err(|_| PruneError::MethodFailed {
        method: method.to_owned(),
        reason: format!(
            "it prunes 2-d weights ([out, in]), got shape {:?}",
            t.size()
        ),
    })
}
