//! The order a sparse matrix stores its rows in: by non-zero count within each window of up to
//! [`MAX_WINDOW`] rows.
//!
//! Why: a kernel's loop over a row's non-zeros runs as many times as the row has, and where rows
//! are short its mispredicted exit costs as much as the row's sums. Rows of one count in a row
//! exit the same way, so the CPU predicts them. On a 16384x256 layer at 95% (about 13 non-zeros
//! a row), one core takes 0.42x the time at batch 1, 0.6x at batch 8 and 0.85x at 16 and 32.
//!
//! Why stored, not looked up: taking the rows in that order through an index, with their entries
//! where they were, broke the weight's stream from memory (15-35% slower on rows of 100 and
//! more non-zeros). Stored in that order, the kernels read the entries front to back, and only
//! the outputs (a chunk in the cache) are written out of order.

/// The most rows per window: a window's rows are stored by their non-zero count, and its slots
/// hold the window's own rows, so that a range of rows that starts and ends at windows' edges is
/// stored in the same range of slots.
pub(super) const MAX_WINDOW: usize = 256;

/// Which row each slot of a matrix's storage holds, and where each row is stored.
#[derive(Clone, Debug)]
pub(super) struct RowOrder {
    window: usize,
    /// `rows[p]`: the row in slot `p`.
    rows: Vec<u32>,
    /// `slots[r]`: the slot of row `r`.
    slots: Vec<u32>,
}

impl RowOrder {
    /// The window for a matrix of `rows` rows shared by `parts` cores: the widest, up to
    /// [`MAX_WINDOW`], that leaves each core at least eight windows, so that the cores' ranges
    /// can end at windows' edges and stay about equal. (A range that ends inside a window reads
    /// that window's rows out of their stored order.)
    pub(super) fn window_for(rows: usize, parts: usize) -> usize {
        let most = rows / (8 * parts.max(1));
        if most == 0 {
            1
        } else {
            (1usize << most.ilog2()).min(MAX_WINDOW)
        }
    }

    /// The rows of each window of `window` by `counts[row]`, fewest first (rows of one count in
    /// their order).
    pub(super) fn by_count(counts: &[u32], window: usize) -> Self {
        // Whole rows, not offsets in the window: rustc 1.95's LLVM dropped the window's first
        // row from `first | offset` (a `u8` offset), so that `row(p)` gave the offset alone.
        let mut rows: Vec<u32> = (0..counts.len() as u32).collect();
        for in_window in rows.chunks_mut(window) {
            in_window.sort_by_key(|&r| counts[r as usize]);
        }
        let mut slots = vec![0u32; counts.len()];
        for (p, &r) in rows.iter().enumerate() {
            slots[r as usize] = p as u32;
        }
        Self {
            window,
            rows,
            slots,
        }
    }

    /// Each row in its own slot.
    pub(super) fn natural(rows: usize) -> Self {
        Self::by_count(&vec![0; rows], 1)
    }

    /// Rows per window.
    pub(super) fn window(&self) -> usize {
        self.window
    }

    /// The slot of row `r`.
    #[inline(always)]
    pub(super) fn slot(&self, r: usize) -> usize {
        self.slots[r] as usize
    }

    /// The row in slot `p`.
    #[inline(always)]
    pub(super) fn row(&self, p: usize) -> usize {
        self.rows[p] as usize
    }

    /// `(slot, row)` for each of rows `start..end`: by slot in the windows the range covers
    /// whole, row by row in those it covers in part (where the slots of its rows lie among
    /// those of other rows).
    #[inline(always)]
    pub(super) fn slots_of(
        &self,
        start: usize,
        end: usize,
    ) -> impl Iterator<Item = (usize, usize)> + Clone + '_ {
        let window = self.window;
        let whole_start = start.next_multiple_of(window);
        let whole_end = if end == self.rows.len() {
            end
        } else {
            end / window * window
        };
        (start..end).map(move |i| {
            if (whole_start..whole_end).contains(&i) {
                (i, self.row(i))
            } else {
                (self.slot(i), i)
            }
        })
    }

    /// The bytes it holds.
    pub(super) fn bytes(&self) -> usize {
        (self.rows.len() + self.slots.len()) * 4
    }
}

#[cfg(test)]
mod tests {
    use super::{RowOrder, MAX_WINDOW as WINDOW};

    #[test]
    fn each_window_is_stored_by_count_and_slots_and_rows_invert() {
        let rows = 3 * WINDOW + 77;
        let counts: Vec<u32> = (0..rows as u32).map(|r| r * 7919 % 23).collect();
        let order = RowOrder::by_count(&counts, WINDOW);
        for p in 0..rows {
            let r = order.row(p);
            assert_eq!(
                r / WINDOW,
                p / WINDOW,
                "slot {p} holds a row of its own window"
            );
            assert_eq!(order.slot(r), p, "row {r}");
            if p % WINDOW != 0 {
                let before = order.row(p - 1);
                assert!(
                    (counts[before], before) < (counts[r], r),
                    "slots {} and {p} hold rows {before} and {r} out of order",
                    p - 1
                );
            }
        }
    }

    #[test]
    fn slots_of_a_range_are_those_of_its_rows_whatever_its_edges() {
        let rows = 2 * WINDOW + 40;
        let counts: Vec<u32> = (0..rows as u32).map(|r| (r * 31) % 17).collect();
        let order = RowOrder::by_count(&counts, WINDOW);
        for (start, end) in [
            (0, rows),
            (0, 0),
            (rows, rows),
            (WINDOW, 2 * WINDOW),
            (3, WINDOW - 5),
            (100, 2 * WINDOW + 1),
            (2 * WINDOW + 10, rows),
            (WINDOW, rows),
            (5, 7),
        ] {
            let mut seen: Vec<usize> = order
                .slots_of(start, end)
                .map(|(p, r)| {
                    assert_eq!(order.row(p), r, "{start}..{end} slot {p}");
                    r
                })
                .collect();
            seen.sort_unstable();
            assert_eq!(seen, (start..end).collect::<Vec<_>>(), "{start}..{end}");
        }
    }

    #[test]
    fn natural_order_keeps_every_row_in_its_slot() {
        let order = RowOrder::natural(WINDOW + 3);
        assert!((0..WINDOW + 3).all(|r| order.slot(r) == r && order.row(r) == r));
    }

    #[test]
    fn windows_leave_each_core_eight_of_them() {
        assert_eq!(RowOrder::window_for(16384, 2), WINDOW);
        assert_eq!(RowOrder::window_for(2048, 2), 128);
        assert_eq!(RowOrder::window_for(2047, 2), 64);
        assert_eq!(RowOrder::window_for(2048, 16), 16);
        assert_eq!(RowOrder::window_for(15, 2), 1);
        assert_eq!(RowOrder::window_for(0, 1), 1);
    }
}
