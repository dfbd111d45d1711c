//! SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately
//! Pruned in One-Shot"): prune a layer and rewrite its kept weights so that its outputs on the
//! calibration inputs change as little as possible.
//!
//! The algorithm of the paper's code and llm-compressor's `SparseGPTModifier`: with `H = X^T X`
//! (dead inputs given a diagonal of 1 and their weights zeroed), dampened by `dampening *
//! mean(diag H)`, and `U` the upper Cholesky factor of `H^-1`, the columns are taken in blocks of
//! 128; a block's mask is the `int(sparsity * entries)`-th smallest `w^2 / U_jj^2` and below
//! (unstructured), or N of every M columns chosen per row as the pass reaches each group; each
//! pruned weight's error is spread over the row's later columns of the block, and the block's
//! errors over the later blocks in one product ("lazy batch updates").
//!
//! Where it differs, and why:
//! - **One factorization, no inverse.** The reference computes `U` with three factorizations
//!   (Cholesky of `H`, its inverse, Cholesky of that): on a 4096 x 11008 layer on 2 cores,
//!   2.7 + 6.0 + 3.1 s. The same updates need only `R = U^-1`, the upper factor with
//!   `R R^T = H`, which is the Cholesky factor of `H` with rows and columns reversed, reversed
//!   back (3.3 s). Since `U^T U = H^-1` and `W0 - Q = E U` (`W0` the weights, `Q` the result,
//!   `E` the errors), the value column `j` has when its turn comes is
//!   `W0_j + sum_{k<j} D_k R_kj / R_jj` with `D = W0 - Q`: each decided column spreads
//!   `D_k S_kj` (`S = R` with its columns divided by their diagonal, diagonal dropped) along
//!   its row, and a block spreads `D S` over the later blocks in one product. The scores
//!   `w^2 / U_jj^2` are `(w R_jj)^2`. Mathematically the reference's result; numerically the
//!   same to float rounding (the tests compare them).
//! - On the CPU the pass over a block's columns runs row by row in plain loops
//!   ([`super::sparsegpt_rows`]); on other devices it runs column by column, two libtorch
//!   operations per column, with nothing read back to the host.
//! - `sparsity` 0 prunes nothing (the reference prunes the smallest entry of each block).

use super::args::MethodArgs;
use super::magnitude::{check_sparsity, sparsity_arguments, SPARSITY_ARGUMENTS};
use super::nm::{check_matrix, NmPattern};
use super::sparsegpt_rows::BlockPass;
use super::{needs_statistics, Calibrated, PruningMethod, PruningType};
use crate::calibration::{LayerStatistics, Needs};
use crate::error::{PruneError, Result};
use crate::registry::MethodEntry;
use crate::tensor_data::{entries, entries_mut};
use serde_json::Value;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// SparseGPT: prunes and reconstructs a Linear layer from the Gram matrix of its inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseGpt {
    sparsity: f64,
    nm: Option<NmPattern>,
    block_size: i64,
    dampening: f64,
    /// Runs the column-by-column pass (the CUDA one) on the CPU too: the tests compare the two.
    by_columns: bool,
}

const ARGUMENTS: [(&str, &str); 4] = [
    SPARSITY_ARGUMENTS[0],
    SPARSITY_ARGUMENTS[1],
    (
        "block_size",
        "columns per block of lazy updates (default 128)",
    ),
    (
        "dampening",
        "added to H's diagonal, as a fraction of its mean (default 0.01)",
    ),
];

impl SparseGpt {
    /// `sparsity` (in `[0, 1]`) of each block of columns, or `nm` in each row when given; blocks
    /// of 128 columns and 1% dampening, as the paper and llm-compressor use.
    pub fn new(sparsity: f64, nm: Option<NmPattern>) -> Result<Self> {
        check_sparsity("sparsegpt", sparsity)?;
        Ok(Self {
            sparsity,
            nm,
            block_size: 128,
            dampening: 0.01,
            by_columns: false,
        })
    }

    /// With blocks of `block_size` columns (a multiple of M for N:M).
    pub fn with_block_size(mut self, block_size: i64) -> Result<Self> {
        let fits = self.nm.map_or(true, |nm| block_size % nm.m == 0);
        if block_size < 1 || !fits {
            return Err(PruneError::InvalidArgument {
                method: "sparsegpt".to_owned(),
                argument: "block_size".to_owned(),
                reason: format!("{block_size} is not a positive multiple of the N:M group size"),
            });
        }
        self.block_size = block_size;
        Ok(self)
    }

    /// With `dampening` times the mean of `H`'s diagonal added to it.
    pub fn with_dampening(mut self, dampening: f64) -> Result<Self> {
        if !(dampening.is_finite() && dampening >= 0.0) {
            return Err(PruneError::InvalidArgument {
                method: "sparsegpt".to_owned(),
                argument: "dampening".to_owned(),
                reason: format!("{dampening} is not a non-negative number"),
            });
        }
        self.dampening = dampening;
        Ok(self)
    }

    /// Prunes `weight` (`[out, in]`) given `gram` (`X^T X`, `[in, in]`) and `default_mask`
    /// (`bool`, entries pruned already stay pruned): the new mask and the new values (f32, 0 where
    /// pruned). Timed apart from the Gram matrix by the `sparsegpt_layer` benchmark.
    pub fn solve(
        &self,
        weight: &Tensor,
        gram: &Tensor,
        default_mask: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        tch::no_grad(|| self.solve_inner(weight, gram, default_mask))
    }

    fn solve_inner(
        &self,
        weight: &Tensor,
        gram: &Tensor,
        default_mask: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (rows, columns) = check_matrix(self.name(), weight)?;
        if gram.size() != [columns, columns] {
            return Err(PruneError::ShapeMismatch {
                what: "sparsegpt: the Gram matrix of the layer's inputs".to_owned(),
                expected: vec![columns, columns],
                actual: gram.size(),
            });
        }
        if let Some(nm) = self.nm {
            nm.check_columns(self.name(), columns)?;
        }
        let device = weight.device();
        let mut original = weight.f_to_kind(Kind::Float)?.f_contiguous()?.copy();
        let keep_before = default_mask.f_to_device(device)?;
        let _ = original.f_mul_(&keep_before)?;
        let Factor { spread, diagonal } = factor(self, gram.f_to_device(device)?, &mut original)?;
        let mut w = original.copy();
        let pruned = keep_before.f_logical_not()?.f_contiguous()?;
        let differences =
            Tensor::f_zeros([rows, self.block_size.min(columns)], (Kind::Float, device))?;
        for start in (0..columns).step_by(self.block_size as usize) {
            let count = self.block_size.min(columns - start);
            let block = Block {
                start,
                count,
                spread: spread
                    .f_narrow(0, start, count)?
                    .f_narrow(1, start, count)?,
                diagonal: diagonal.f_narrow(0, start, count)?,
                differences: differences.f_narrow(1, 0, count)?,
            };
            let prior = pruned.f_narrow(1, start, count)?;
            let block_pruned = match (self.nm, self.sparsity) {
                (None, s) if s > 0.0 => {
                    let scored = scored_values(&w, &original, &block)?;
                    self.block_mask(&scored, &block, &prior)?
                }
                _ => prior.f_contiguous()?,
            };
            let block_pruned = match device == Device::Cpu && !self.by_columns {
                true => self.pass_on_cpu(&mut w, &original, &block_pruned, &block)?,
                false => self.pass_by_columns(&w, &original, &block_pruned, &block)?,
            };
            prior.shallow_clone().f_copy_(&block_pruned)?;
            let end = start + count;
            if end < columns {
                // W[:, end:] += D @ S[block, end:], in place.
                let mut rest = w.f_narrow(1, end, columns - end)?;
                let spread_rest =
                    spread
                        .f_narrow(0, start, count)?
                        .f_narrow(1, end, columns - end)?;
                let _ = rest.f_addmm_(&block.differences, &spread_rest)?;
            }
        }
        let mask = pruned.f_logical_not()?;
        Ok((mask, w))
    }

    /// The unstructured mask of a block from its `values` as the reference scores them:
    /// `w^2 / U_jj^2 = (w R_jj)^2` at or below the `int(sparsity * entries)`-th smallest (entries
    /// pruned already count as the smallest).
    fn block_mask(&self, values: &Tensor, block: &Block, pruned_before: &Tensor) -> Result<Tensor> {
        let scores = values
            .f_mul(&block.diagonal.f_reshape([1, -1])?)?
            .f_square()?;
        let scores = scores.f_masked_fill(pruned_before, -1.0)?.f_reshape([-1])?;
        let entries = scores.numel() as i64;
        let k = (entries as f64 * self.sparsity) as i64;
        if k >= entries {
            return Ok(Tensor::f_ones(
                [values.size()[0], block.count],
                (Kind::Bool, values.device()),
            )?);
        }
        let threshold = match scores.device() {
            // One pass over the block on the CPU; `kthvalue` is slow on CUDA, a sort is not.
            Device::Cpu => scores.f_kthvalue(k + 1, 0, false)?.0,
            _ => scores.f_sort(0, false)?.0.f_select(0, k)?,
        };
        Ok(scores
            .f_le_tensor(&threshold)?
            .f_reshape([-1, block.count])?
            .f_contiguous()?)
    }

    /// The pass over a block in plain loops (see [`BlockPass`]).
    fn pass_on_cpu(
        &self,
        w: &mut Tensor,
        original: &Tensor,
        pruned: &Tensor,
        block: &Block,
    ) -> Result<Tensor> {
        let (rows, columns) = w.size2()?;
        let count = block.count;
        let spread = block.spread.f_contiguous()?;
        let diagonal = block.diagonal.f_contiguous()?;
        let pruned = pruned.f_contiguous()?.copy();
        let differences = Tensor::f_zeros([rows, count], (Kind::Float, Device::Cpu))?;
        let stride = columns as usize;
        let len = (rows as usize) * stride;
        let start = block.start as usize;
        // SAFETY: `w` and `original` are distinct contiguous f32 CPU tensors of rows x columns
        // that only this function touches meanwhile (`original` only read); `pruned` and
        // `differences` are new contiguous rows x count bool and f32 tensors (bool bytes are 0
        // or 1); `spread` a contiguous count x count and `diagonal` a count f32 tensor.
        let (weights, originals, flags, diffs, spread_entries, diagonal_entries) = unsafe {
            (
                &mut entries_mut::<f32>(w, len)[start..],
                &entries::<f32>(original, len)[start..],
                entries_mut::<bool>(&pruned, (rows * count) as usize),
                entries_mut::<f32>(&differences, (rows * count) as usize),
                entries::<f32>(&spread, (count * count) as usize),
                entries::<f32>(&diagonal, count as usize),
            )
        };
        let pass = BlockPass {
            count: count as usize,
            stride,
            spread: spread_entries,
            diagonal: diagonal_entries,
            nm: self.nm.map(|nm| (nm.n as usize, nm.m as usize)),
        };
        pass.run(weights, originals, flags, diffs);
        block.differences.shallow_clone().f_copy_(&differences)?;
        Ok(pruned)
    }

    /// The pass over a block column by column in libtorch operations (CUDA): for column `i`,
    /// `D_i = W0_i - w_i * keep_i`, then `W += D_i S[i, :]` (`S` is strictly upper triangular,
    /// so the columns up to `i` gain zeros: one operation on the whole block instead of a
    /// narrowed view). Two operations per column, their views made once per block (`unbind`):
    /// on an H200 the launches, not the arithmetic, are what a column costs.
    fn pass_by_columns(
        &self,
        w: &Tensor,
        original: &Tensor,
        pruned: &Tensor,
        block: &Block,
    ) -> Result<Tensor> {
        let mut values = w.f_narrow(1, block.start, block.count)?;
        let originals = original.f_narrow(1, block.start, block.count)?;
        let pruned = pruned.copy();
        // -1 where kept, 0 where pruned: `D_i = W0_i + w_i * negated_keep_i`.
        let negated_keep = pruned.f_to_kind(Kind::Float)?.f_sub_scalar(1.0)?;
        let prior = self.nm.is_some() && pruned.f_any()?.f_int64_value(&[])? != 0;
        let (columns, keeps) = (values.f_unbind(1)?, negated_keep.f_unbind(1)?);
        let (original_columns, difference_columns) =
            (originals.f_unbind(1)?, block.differences.f_unbind(1)?);
        let spread_rows = block.spread.f_unbind(0)?;
        let carry = match self.nm {
            Some(nm) => Some(group_carry(&block.spread, nm.m)?),
            None => None,
        };
        for i in 0..block.count as usize {
            if let (Some(nm), Some(carry)) = (self.nm, &carry) {
                if i as i64 % nm.m == 0 {
                    let group = Group {
                        values: &values,
                        originals: &originals,
                        carry: &carry[i / nm.m as usize],
                        pruned: &pruned,
                        negated_keep: &negated_keep,
                        diagonal: &block.diagonal,
                    };
                    group.choose(i as i64, nm, prior)?;
                }
            }
            let _ = original_columns[i].f_addcmul_out(
                &difference_columns[i],
                &columns[i],
                &keeps[i],
            )?;
            let _ = values.f_addr_(&difference_columns[i], &spread_rows[i])?;
        }
        let _ = values.f_masked_fill_(&pruned, 0.0)?;
        Ok(pruned)
    }
}

/// One block of columns: where it starts, its width, its part of `S` and of `R`'s diagonal,
/// and where its differences `D = W0 - Q` go.
struct Block {
    start: i64,
    count: i64,
    spread: Tensor,
    diagonal: Tensor,
    differences: Tensor,
}

/// The block's values as the reference has them when the block starts: `W0 + (w - W0)
/// (I + S_bb)^-1`, `w` the pass's values then and `S_bb` the block's part of `S`. The pass's
/// values of a column hold the spread of every decided column in another form than the
/// reference's, equal only at the column's turn; the reference's are the values each column
/// would have at its turn if every column of the block before it were kept, which is what the
/// product computes (a kept column spreads nothing in the reference).
fn scored_values(w: &Tensor, original: &Tensor, block: &Block) -> Result<Tensor> {
    let values = w.f_narrow(1, block.start, block.count)?;
    let originals = original.f_narrow(1, block.start, block.count)?;
    let identity = Tensor::f_eye(block.count, (Kind::Float, w.device()))?;
    let unit = block.spread.f_add(&identity)?;
    let carry = unit.f_linalg_solve_triangular(&identity, true, true, true)?;
    Ok(values
        .f_sub(&originals)?
        .f_matmul(&carry)?
        .f_add(&originals)?)
}

/// For each group of `m` columns of a block, `T = (I + S_g)^-1` (`S_g` the group's diagonal
/// block of `S`): the group's values as the reference scores them are `W0 + (w - W0) T`, `w` the
/// pass's values at the group's start (see `BlockPass::choose_group` for why they differ).
fn group_carry(spread: &Tensor, m: i64) -> Result<Vec<Tensor>> {
    let count = spread.size()[0];
    let groups = count / m;
    let diagonal_blocks = spread
        .f_view([groups, m, groups, m])?
        .f_diagonal(0, 0, 2)?
        .f_permute([2, 0, 1])?;
    let identity = Tensor::f_eye(m, (Kind::Float, spread.device()))?;
    let unit = diagonal_blocks.f_add(&identity)?;
    let inverse = unit.f_linalg_solve_triangular(
        &identity.f_expand([groups, m, m], false)?,
        true,
        true,
        true,
    )?;
    Ok(inverse.f_unbind(0)?)
}

/// An N:M group's choice on the device (the column pass).
struct Group<'a> {
    values: &'a Tensor,
    originals: &'a Tensor,
    carry: &'a Tensor,
    pruned: &'a Tensor,
    negated_keep: &'a Tensor,
    diagonal: &'a Tensor,
}

impl Group<'_> {
    /// The `n` smallest `(w R_jj)^2` of each row's group starting at column `i` (entries pruned
    /// before count as the smallest when `prior`) become pruned, `w` the group's values as the
    /// reference scores them.
    fn choose(&self, i: i64, nm: NmPattern, prior: bool) -> Result<()> {
        let originals = self.originals.f_narrow(1, i, nm.m)?;
        let group = self
            .values
            .f_narrow(1, i, nm.m)?
            .f_sub(&originals)?
            .f_matmul(self.carry)?
            .f_add(&originals)?;
        let scale = self.diagonal.f_narrow(0, i, nm.m)?.f_reshape([1, -1])?;
        let mut scores = group.f_mul(&scale)?.f_square()?;
        let mut group_pruned = self.pruned.f_narrow(1, i, nm.m)?;
        if prior {
            scores = scores.f_masked_fill(&group_pruned, -1.0)?;
        }
        let (_, chosen) = scores.f_topk(nm.n, 1, false, true)?;
        let _ = group_pruned.f_scatter_value_(1, &chosen, 1)?;
        let _ = self
            .negated_keep
            .f_narrow(1, i, nm.m)?
            .f_scatter_value_(1, &chosen, 0.0)?;
        Ok(())
    }
}

/// What the passes need of `H`: `S`, `R` (the upper factor with `R R^T = H`) with its columns
/// divided by their diagonal entries and its diagonal dropped, and `R`'s diagonal.
struct Factor {
    spread: Tensor,
    diagonal: Tensor,
}

/// [`Factor`] for the dampened `gram` (dead inputs, with a zero diagonal, get a diagonal of 1
/// and their weights in `w` zeroed, as in the reference): `R` is the Cholesky factor of `H`
/// with rows and columns reversed, reversed back.
fn factor(method: &SparseGpt, gram: Tensor, w: &mut Tensor) -> Result<Factor> {
    let h = gram.f_to_kind(Kind::Float)?.f_flip([0, 1])?;
    let mut h_diagonal = h.f_diagonal(0, 0, 1)?;
    let dead = h_diagonal.f_eq(0.0)?;
    let _ = h_diagonal.f_masked_fill_(&dead, 1.0)?;
    let _ = w.f_masked_fill_(&dead.f_flip([0])?.f_reshape([1, -1])?, 0.0)?;
    let damp = h_diagonal
        .f_mean(Kind::Float)?
        .f_mul_scalar(method.dampening)?;
    let _ = h_diagonal.f_add_(&damp)?;
    let (lower, info) = h.f_linalg_cholesky_ex(false, false)?;
    drop(h);
    let failed = info.f_int64_value(&[])?;
    if failed != 0 {
        return Err(PruneError::MethodFailed {
            method: "sparsegpt".to_owned(),
            reason: format!(
                "the dampened Hessian is not positive definite (a minor of order {failed}): \
                 raise the dampening or give more calibration samples"
            ),
        });
    }
    let mut spread = lower.f_flip([0, 1])?;
    drop(lower);
    let diagonal = spread.f_diagonal(0, 0, 1)?.copy();
    let _ = spread.f_div_(&diagonal.f_reshape([1, -1])?)?;
    let _ = spread.f_diagonal(0, 0, 1)?.f_zero_()?;
    Ok(Factor { spread, diagonal })
}

impl PruningMethod for SparseGpt {
    fn name(&self) -> &str {
        "sparsegpt"
    }

    fn pruning_type(&self) -> PruningType {
        PruningType::Global
    }

    fn compute_mask(&self, _t: &Tensor, _default_mask: &Tensor) -> Result<Tensor> {
        Err(needs_statistics(self.name()))
    }

    fn needs(&self) -> Needs {
        Needs::GRAM
    }

    fn compute_calibrated(
        &self,
        t: &Tensor,
        default_mask: &Tensor,
        statistics: &LayerStatistics,
    ) -> Result<Calibrated> {
        let gram = statistics
            .gram
            .as_ref()
            .ok_or_else(|| PruneError::MethodFailed {
                method: self.name().to_owned(),
                reason: "the statistics hold no X^T X: collect them with Needs::GRAM".to_owned(),
            })?;
        let (mask, values) = self.solve(t, gram, default_mask)?;
        Ok(Calibrated {
            mask,
            values: Some(values),
        })
    }

    fn arguments(&self) -> Value {
        let mut args = sparsity_arguments(self.sparsity, self.nm);
        args["block_size"] = Value::from(self.block_size);
        args["dampening"] = Value::from(self.dampening);
        args
    }
}

inventory::submit! {
    MethodEntry {
        name: "sparsegpt",
        arguments: &ARGUMENTS,
        pruning_type: "global",
        description: "SparseGPT: prunes and reconstructs each layer from its inputs' X^T X (needs calibration)",
        build: |args| {
            let a = MethodArgs::declared("sparsegpt", args, &ARGUMENTS)?;
            let method = SparseGpt::new(a.fraction_or("sparsity", 0.5)?, a.nm("nm")?)?;
            let method = method.with_block_size(a.int_or("block_size", 128)?)?;
            let dampening = match a.get("dampening") {
                None | Some(Value::Null) => 0.01,
                Some(v) => v.as_f64().ok_or_else(|| a.error("dampening", format!("{v} is not a number")))?,
            };
            Ok(Arc::new(method.with_dampening(dampening)?))
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The column-by-column pass (what CUDA runs) gives the row pass's result on the CPU.
    #[test]
    fn both_passes_agree() {
        tch::manual_seed(3);
        let x = Tensor::randn([512, 200], (Kind::Float, Device::Cpu));
        let gram = x.tr().matmul(&x);
        let weight = Tensor::randn([24, 200], (Kind::Float, Device::Cpu));
        let keep = Tensor::ones([24, 200], (Kind::Bool, Device::Cpu));
        for nm in [None, Some(NmPattern::TWO_FOUR)] {
            let rows = SparseGpt::new(0.6, nm).unwrap();
            let columns = SparseGpt {
                by_columns: true,
                ..rows.clone()
            };
            let (mask_rows, w_rows) = rows.solve(&weight, &gram, &keep).unwrap();
            let (mask_columns, w_columns) = columns.solve(&weight, &gram, &keep).unwrap();
            assert!(mask_rows.equal(&mask_columns), "{nm:?}: masks differ");
            let diff = (&w_rows - &w_columns).abs().max().double_value(&[]);
            assert!(diff < 1e-4, "{nm:?}: values differ by {diff}");
            let pruned = w_columns.masked_select(&mask_columns.logical_not());
            assert_eq!(pruned.abs().max().double_value(&[]), 0.0);
        }
    }
}
