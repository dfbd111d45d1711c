//! SparseGPT's column-by-column pass over one block of 128 columns, for every row at once, in
//! plain loops on the CPU.
//!
//! Inside a block, each row is independent: column `i` is pruned or kept, its difference
//! `D_i = W0_i - q_i` from the original weight spreads over the row's later columns of the
//! block along row `i` of `S` (see [`super::sparsegpt`]), and an N:M group's mask is chosen
//! from the row's values as they stand when the group starts. PyTorch's reference runs that as
//! a Python loop over columns, each step a handful of operations over all rows (on a 4096 x
//! 11008 layer, 11,008 steps of rank-1 updates: a third of its 23 s on 2 cores); here a row's
//! 128 columns stay in L1 and rows run on every core, so the pass costs about 0.6 s.

use crate::parallel;

/// One block of the pass: `rows` rows whose block entries start at `row * stride` of `weights`
/// (updated in place to their final values: pruned entries 0) and of `originals` (the weights
/// before any update, read only), `pruned` the block's pruned flags (`rows x count`; true on
/// entry for entries pruned already, which count as the smallest scores of their N:M group;
/// updated with the N:M choices), `differences` (`rows x count`, written) and `spread` the
/// block's `count x count` part of `S`, row-major, `diagonal` its part of `R`'s diagonal.
pub(crate) struct BlockPass<'a> {
    pub(crate) count: usize,
    pub(crate) stride: usize,
    pub(crate) spread: &'a [f32],
    pub(crate) diagonal: &'a [f32],
    /// `(n, m)`: choose n of every m columns per row as the pass reaches each group.
    pub(crate) nm: Option<(usize, usize)>,
}

/// One row's share of a block: its values, original values, flags and differences.
struct Row<'r> {
    values: &'r mut [f32],
    originals: &'r [f32],
    pruned: &'r mut [bool],
    differences: &'r mut [f32],
}

impl BlockPass<'_> {
    /// Runs the pass over every row, on libtorch's threads.
    pub(crate) fn run(
        &self,
        weights: &mut [f32],
        originals: &[f32],
        pruned: &mut [bool],
        differences: &mut [f32],
    ) {
        let (count, stride) = (self.count, self.stride);
        let rows = pruned.len() / count.max(1);
        if rows == 0 || count == 0 {
            return;
        }
        let ranges = parallel::chunks(rows);
        let mut pieces = Vec::with_capacity(ranges.len());
        let (mut w, mut p, mut d) = (weights, pruned, differences);
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
            let (dp, dt) = std::mem::take(&mut d).split_at_mut(n * count);
            (w, p, d) = (wt, pt, dt);
            pieces.push((start, n, wp, pp, dp));
        }
        parallel::on_threads(pieces, |(first, n, w, p, d)| {
            for r in 0..n {
                let at = (first + r) * stride;
                self.row(Row {
                    values: &mut w[r * stride..r * stride + count],
                    originals: &originals[at..at + count],
                    pruned: &mut p[r * count..(r + 1) * count],
                    differences: &mut d[r * count..(r + 1) * count],
                });
            }
        });
    }

    /// The pass over one row's block.
    fn row(&self, row: Row<'_>) {
        let count = self.count;
        let Row {
            values,
            originals,
            pruned,
            differences,
        } = row;
        for i in 0..count {
            if let Some((n, m)) = self.nm {
                if i % m == 0 {
                    let end = (i + m).min(count);
                    self.choose_group(
                        &values[i..end],
                        &originals[i..end],
                        &mut pruned[i..end],
                        n,
                        i,
                    );
                }
            }
            let q = if pruned[i] { 0.0 } else { values[i] };
            let d = originals[i] - q;
            differences[i] = d;
            if d != 0.0 {
                let spread_row = &self.spread[i * count + i + 1..(i + 1) * count];
                for (value, s) in values[i + 1..].iter_mut().zip(spread_row) {
                    *value += d * s;
                }
            }
            values[i] = q;
        }
    }

    /// Marks the `n` smallest `(w R_jj)^2` of a group pruned (entries pruned already count as
    /// the smallest; ties: the lower column), `w` the values the reference scores: the group's
    /// columns as if every column before them were decided and none of the group yet. The
    /// pass's own values of the group's later columns hold the spread of the columns decided
    /// so far in another form (they are only right at each column's turn), so the group's is
    /// carried forward first as if all its columns were kept (for a kept column the reference
    /// spreads nothing).
    fn choose_group(
        &self,
        values: &[f32],
        originals: &[f32],
        pruned: &mut [bool],
        n: usize,
        first: usize,
    ) {
        let count = self.count;
        let len = values.len().min(64);
        let mut scored = [0.0f32; 64];
        scored[..len].copy_from_slice(&values[..len]);
        for k in 0..len {
            let d = originals[k] - scored[k];
            let spread_row = &self.spread[(first + k) * count..(first + k + 1) * count];
            for j in k + 1..len {
                scored[j] += d * spread_row[first + j];
            }
        }
        let mut order: [(f32, usize); 64] = [(0.0, 0); 64];
        for j in 0..len {
            let scaled = scored[j] * self.diagonal[first + j];
            let score = if pruned[j] { -1.0 } else { scaled * scaled };
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

    /// With `S` zero (a diagonal `H`) nothing spreads: kept entries stay, pruned become 0, and
    /// the differences are the original values of the pruned ones; 2:4 picks by `(w R_jj)^2`.
    #[test]
    fn without_spread_pruned_entries_keep_their_differences() {
        let spread = vec![0.0f32; 16];
        let diagonal = [1.0, 1.0, 1.0, 0.1];
        let pass = BlockPass {
            count: 4,
            stride: 6,
            spread: &spread,
            diagonal: &diagonal,
            nm: Some((2, 4)),
        };
        // Two rows of 6 columns; the block is the first 4.
        let mut w = vec![1.0, -3.0, 0.5, 2.0, 9.0, 9.0, 4.0, 3.0, 2.0, 1.0, 9.0, 9.0];
        let originals = w.clone();
        let mut pruned = vec![false; 8];
        let mut differences = vec![0.0; 8];
        pass.run(&mut w, &originals, &mut pruned, &mut differences);
        // Row 0 scores 1, 9, 0.25, 0.04: columns 3 and 2; row 1: 16, 9, 4, 0.01: 3 and 2.
        assert_eq!(
            w,
            [1.0, -3.0, 0.0, 0.0, 9.0, 9.0, 4.0, 3.0, 0.0, 0.0, 9.0, 9.0]
        );
        assert_eq!(pruned, [false, false, true, true, false, false, true, true]);
        assert_eq!(differences, [0.0, 0.0, 0.5, 2.0, 0.0, 0.0, 2.0, 1.0]);
    }

    /// A pruned column's difference spreads along `S`'s row to the later columns only, and a
    /// kept column whose value moved spreads its own difference too.
    #[test]
    fn differences_spread_to_later_columns() {
        let spread = [0.0, 0.5, 0.25, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0f32];
        let diagonal = [1.0f32; 3];
        let pass = BlockPass {
            count: 3,
            stride: 3,
            spread: &spread,
            diagonal: &diagonal,
            nm: None,
        };
        let mut w = vec![2.0, 1.0, 1.0];
        let originals = w.clone();
        let mut pruned = vec![true, false, false];
        let mut differences = vec![0.0; 3];
        pass.run(&mut w, &originals, &mut pruned, &mut differences);
        // Column 0: D = 2, so column 1 becomes 1 + 2 * 0.5 = 2 and column 2 1 + 2 * 0.25 = 1.5.
        // Column 1 is kept at 2: D = 1 - 2 = -1, so column 2 becomes 1.5 - 1 = 0.5, kept: D = 0.5.
        assert_eq!(differences, [2.0, -1.0, 0.5]);
        assert_eq!(w, [0.0, 2.0, 0.5]);
    }
}
