//! N:M semi-structured magnitude pruning: in every group of `m` consecutive entries along the
//! last dimension, keep the `n` largest by magnitude (2:4 by default, the pattern sparse tensor
//! cores accelerate).
//!
//! The method is `global` in PyTorch's sense: it sees the whole tensor and the default mask, so
//! the groups keep their positions when it runs on top of an earlier mask. Entries the default
//! mask prunes stay pruned and do not count among the `n` kept; a group with fewer than `n`
//! live entries keeps them all. Among equal magnitudes the earlier entry is kept.

use tchprune_plugin_api::{Argument, Arguments, Method, PruningType, TensorView};

/// Keeps the `n` largest magnitudes in every group of `m`.
#[derive(Debug)]
pub struct NmSparsity {
    n: usize,
    m: usize,
}

impl Method for NmSparsity {
    const NAME: &'static str = "nm";
    const DESCRIPTION: &'static str =
        "N:M semi-structured magnitude pruning along the last dimension (default 2:4)";
    const PRUNING_TYPE: PruningType = PruningType::Global;
    const ARGUMENTS: &'static [Argument] = &[
        Argument {
            name: "n",
            description: "entries kept per group (default 2)",
        },
        Argument {
            name: "m",
            description: "group size along the last dimension (default 4)",
        },
    ];

    fn from_args(args: &Arguments) -> Result<Self, String> {
        let n: usize = args.get_or("n", 2)?;
        let m: usize = args.get_or("m", 4)?;
        if m == 0 || n == 0 || n > m {
            return Err(format!("nm: need 1 <= n <= m, got n = {n}, m = {m}"));
        }
        Ok(Self { n, m })
    }

    fn compute_mask(
        &self,
        tensor: &TensorView<'_>,
        default_mask: &[u8],
        mask: &mut [u8],
    ) -> Result<(), String> {
        let last = match tensor.shape().last() {
            Some(&last) => last as usize,
            None => return Err("nm: cannot group the entries of a 0-d tensor".to_owned()),
        };
        if last % self.m != 0 {
            return Err(format!(
                "nm: the last dimension ({last}) of shape {:?} is not a multiple of m = {}",
                tensor.shape(),
                self.m
            ));
        }
        let magnitudes = tensor.to_f64_vec()?;
        self.prune_groups(&magnitudes, default_mask, mask);
        Ok(())
    }
}

impl NmSparsity {
    fn prune_groups(&self, values: &[f64], default_mask: &[u8], mask: &mut [u8]) {
        let mut order: Vec<usize> = Vec::with_capacity(self.m);
        for (start, group) in (0..values.len())
            .step_by(self.m)
            .zip(mask.chunks_mut(self.m))
        {
            order.clear();
            order.extend((0..self.m).filter(|&i| default_mask[start + i] != 0));
            // Stable: among equal magnitudes the earlier entry comes first and is kept.
            order.sort_by(|&a, &b| values[start + b].abs().total_cmp(&values[start + a].abs()));
            group.fill(0);
            for &i in order.iter().take(self.n) {
                group[i] = 1;
            }
        }
    }
}

tchprune_plugin_api::export_plugin!(NmSparsity);

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_of(values: &[f64], default_mask: &[u8], n: usize, m: usize) -> Vec<u8> {
        let mut mask = default_mask.to_vec();
        NmSparsity { n, m }.prune_groups(values, default_mask, &mut mask);
        mask
    }

    #[test]
    fn keeps_the_largest_magnitudes_of_each_group() {
        let values = [0.1, -3.0, 2.0, 0.5, 4.0, 0.0, -0.2, 1.0];
        assert_eq!(mask_of(&values, &[1; 8], 2, 4), [0, 1, 1, 0, 1, 0, 0, 1]);
    }

    #[test]
    fn pruned_entries_stay_pruned_and_do_not_count() {
        let values = [0.1, -3.0, 2.0, 0.5];
        assert_eq!(mask_of(&values, &[1, 0, 1, 1], 2, 4), [0, 0, 1, 1]);
        assert_eq!(mask_of(&values, &[1, 0, 0, 0], 2, 4), [1, 0, 0, 0]);
    }

    #[test]
    fn ties_keep_the_earlier_entry() {
        assert_eq!(mask_of(&[1.0, -1.0, 1.0, 1.0], &[1; 4], 2, 4), [1, 1, 0, 0]);
    }
}
