//! SparseGPT's column-by-column pass over one block of 128 columns, for every row at once, in
//! plain loops on the CPU.
//!
//! Inside a block, each row is independent: column `i` is pruned or kept, its error
//! `(w_i - q_i) / U_ii` is spread over the row's later columns of the block along row `i` of
//! the inverse Hessian's Cholesky factor `U`, and an N:M group's mask is chosen from the row's
//! values as they stand when the group starts. PyTorch's reference runs that as a Python loop
//! over columns, each step a handful of operations over all rows (on a 4096 x 11008 layer,
//! 11,008 steps of rank-1 updates: most of its 22 s on 2 cores); here a row's 128 columns stay
//! in L1 and rows run on every core, so the pass costs about 0.05 s and the solve is dominated
//! by the Cholesky factorization and the trailing updates (libtorch's BLAS).

use crate::parallel;

/// One block of the pass: `rows` rows whose block entries start at `row * stride` of `weights`
/// (updated in place to their final values: pruned entries 0), `pruned` the block's pruned
/// flags (`rows x count`; true on entry for entries pruned already, which count as the smallest
/// scores of their N:M group; updated with the N:M choices), `errors` (`rows x count`, written)
/// and `u` the block's `count x count` upper-triangular factor, row-major.
pub(crate) struct BlockPass<'a> {
    pub(crate) count: usize,
    pub(crate) stride: usize,
    pub(crate) u: &'a [f32],
    /// `(n, m)`: choose n of every m columns per row as the pass reaches each group.
    pub(crate) nm: Option<(usize, usize)>,
}

impl BlockPass<'_> {
    /// Runs the pass over every row, on libtorch's threads.
    pub(crate) fn run(&self, weights: &mut [f32], pruned: &mut [bool], errors: &mut [f32]) {
        let (count, stride) = (self.count, self.stride);
        let rows = pruned.len() / count.max(1);
        if rows == 0 || count == 0 {
            return;
        }
        let ranges = parallel::chunks(rows);
        let mut pieces = Vec::with_capacity(ranges.len());
        let (mut w, mut p, mut e) = (weights, pruned, errors);
        for (index, &(start, end)) in ranges.iter().enumerate() {
            let n = end - start;
            // The last piece keeps the tail of `weights` past the last row's block.
            let w_len = if index + 1 == ranges.len() {
                w.len()
            } else {
                n * stride
            };
            let (wp, wt) = std::mem::take(&mut w).split_at_mut(w_len);
            let (pp, pt) = std::mem::take(&mut p).split_at_mut(n * count);
            let (ep, et) = std::mem::take(&mut e).split_at_mut(n * count);
            (w, p, e) = (wt, pt, et);
            pieces.push((n, wp, pp, ep));
        }
        parallel::on_threads(pieces, |(n, w, p, e)| {
            for r in 0..n {
                self.row(
                    &mut w[r * stride..r * stride + count],
                    &mut p[r * count..(r + 1) * count],
                    &mut e[r * count..(r + 1) * count],
                );
            }
        });
    }

    /// The pass over one row's block.
    fn row(&self, w: &mut [f32], pruned: &mut [bool], err: &mut [f32]) {
        let count = self.count;
        for i in 0..count {
            let u_row = &self.u[i * count..(i + 1) * count];
            let d = u_row[i];
            if let Some((n, m)) = self.nm {
                if i % m == 0 {
                    self.choose_group(
                        &w[i..(i + m).min(count)],
                        &mut pruned[i..(i + m).min(count)],
                        n,
                        i,
                    );
                }
            }
            let wi = w[i];
            let q = if pruned[i] { 0.0 } else { wi };
            let e = (wi - q) / d;
            err[i] = e;
            if e != 0.0 {
                for (wj, uj) in w[i..].iter_mut().zip(&u_row[i..]) {
                    *wj -= e * uj;
                }
            }
            w[i] = q;
        }
    }

    /// Marks the `n` smallest `w_j^2 / U_jj^2` of a group pruned (entries pruned already count
    /// as the smallest; ties: the lower column).
    fn choose_group(&self, w: &[f32], pruned: &mut [bool], n: usize, first: usize) {
        let count = self.count;
        let mut order: [(f32, usize); 64] = [(0.0, 0); 64];
        let len = w.len().min(64);
        for j in 0..len {
            let d = self.u[(first + j) * count + first + j];
            let score = if pruned[j] {
                -1.0
            } else {
                (w[j] * w[j]) / (d * d)
            };
            order[j] = (score, j);
        }
        let order = &mut order[..len];
        order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for &(_, j) in order.iter().take(n) {
            pruned[j] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pass against the reference's steps written out for one row: with `U` the identity
    /// scaled by 2, no error spreads, kept entries stay, pruned become 0 and their error is
    /// `w / 2`.
    #[test]
    fn diagonal_factor_prunes_without_spreading() {
        let count = 4;
        let mut u = vec![0.0f32; 16];
        for i in 0..4 {
            u[i * 4 + i] = 2.0;
        }
        let pass = BlockPass {
            count,
            stride: 6,
            u: &u,
            nm: Some((2, 4)),
        };
        // Two rows of 6 columns; the block is the first 4.
        let mut w = vec![1.0, -3.0, 0.5, 2.0, 9.0, 9.0, 4.0, 3.0, 2.0, 1.0, 9.0, 9.0];
        let mut pruned = vec![false; 8];
        let mut err = vec![0.0; 8];
        pass.run(&mut w, &mut pruned, &mut err);
        assert_eq!(
            w,
            [0.0, -3.0, 0.0, 2.0, 9.0, 9.0, 4.0, 3.0, 0.0, 0.0, 9.0, 9.0]
        );
        assert_eq!(pruned, [true, false, true, false, false, false, true, true]);
        assert_eq!(err, [0.5, 0.0, 0.25, 0.0, 0.0, 0.0, 1.0, 0.5]);
    }

    /// An error spreads along the factor's row to the later columns only.
    #[test]
    fn error_spreads_to_later_columns() {
        let u = [1.0, 0.5, 0.25, 0.0, 1.0, 0.5, 0.0, 0.0, 1.0f32];
        let pass = BlockPass {
            count: 3,
            stride: 3,
            u: &u,
            nm: None,
        };
        let mut w = vec![2.0, 1.0, 1.0];
        let mut pruned = vec![true, false, false];
        let mut err = vec![0.0; 3];
        pass.run(&mut w, &mut pruned, &mut err);
        assert_eq!(err, [2.0, 0.0, 0.0]);
        assert_eq!(w, [0.0, 0.0, 0.5]);
    }
}
