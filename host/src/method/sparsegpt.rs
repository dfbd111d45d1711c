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
//! - `U` comes from one Cholesky factorization and one triangular inverse instead of three
//!   factorizations: with `M` the Cholesky factor of `H` with rows and columns reversed,
//!   `U = P M^-1 P` (`P` the reversal), since `(P M^-1 P)^T (P M^-1 P) = (P M M^T P)^-1 = H^-1`
//!   and the factor with a positive diagonal is unique. The inverse runs as a recursion whose
//!   work is two triangular solves per level.
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
        let mut w = weight.f_to_kind(Kind::Float)?.f_contiguous()?.copy();
        let keep_before = default_mask.f_to_device(device)?;
        let _ = w.f_mul_(&keep_before)?;
        let u = inverse_cholesky_upper(self, gram.f_to_device(device)?, &mut w)?;
        let pruned = keep_before.f_logical_not()?.f_contiguous()?;
        let errors = Tensor::f_zeros([rows, self.block_size.min(columns)], (Kind::Float, device))?;
        for start in (0..columns).step_by(self.block_size as usize) {
            let count = self.block_size.min(columns - start);
            let block = pruned.f_narrow(1, start, count)?;
            let u_block = u.f_narrow(0, start, count)?.f_narrow(1, start, count)?;
            let block_pruned = match (self.nm, self.sparsity) {
                (None, s) if s > 0.0 => self.block_mask(&w, &u_block, &block, start, count)?,
                _ => block.f_contiguous()?,
            };
            let errors = errors.f_narrow(1, 0, count)?;
            let block_pruned = match device == Device::Cpu && !self.by_columns {
                true => self.pass_on_cpu(&mut w, &block_pruned, &errors, &u_block, start)?,
                false => self.pass_by_columns(&w, &block_pruned, &errors, &u_block, start)?,
            };
            pruned.f_narrow(1, start, count)?.f_copy_(&block_pruned)?;
            let end = start + count;
            if end < columns {
                // W[:, end:] -= E @ U[block, end:]
                let mut rest = w.f_narrow(1, end, columns - end)?;
                let u_rest = u
                    .f_narrow(0, start, count)?
                    .f_narrow(1, end, columns - end)?;
                let _ = rest.f_sub_(&errors.f_matmul(&u_rest)?)?;
            }
        }
        let mask = pruned.f_logical_not()?;
        Ok((mask, w))
    }

    /// The unstructured mask of a block: `w^2 / U_jj^2` at or below the `int(sparsity *
    /// entries)`-th smallest (entries pruned already count as the smallest).
    fn block_mask(
        &self,
        w: &Tensor,
        u_block: &Tensor,
        pruned_before: &Tensor,
        start: i64,
        count: i64,
    ) -> Result<Tensor> {
        let block = w.f_narrow(1, start, count)?;
        let diagonal = u_block.f_diagonal(0, 0, 1)?.f_reshape([1, -1])?;
        let scores = block.f_square()?.f_div(&diagonal.f_square()?)?;
        let scores = scores.f_masked_fill(pruned_before, -1.0)?.f_reshape([-1])?;
        let entries = scores.numel() as i64;
        let k = (entries as f64 * self.sparsity) as i64;
        if k >= entries {
            return Ok(Tensor::f_ones(
                [w.size()[0], count],
                (Kind::Bool, w.device()),
            )?);
        }
        let threshold = match scores.device() {
            // One pass over the block on the CPU; `kthvalue` is slow on CUDA, a sort is not.
            Device::Cpu => scores.f_kthvalue(k + 1, 0, false)?.0,
            _ => scores.f_sort(0, false)?.0.f_select(0, k)?,
        };
        Ok(scores
            .f_le_tensor(&threshold)?
            .f_reshape([-1, count])?
            .f_contiguous()?)
    }

    /// The pass over a block in plain loops (see [`BlockPass`]).
    fn pass_on_cpu(
        &self,
        w: &mut Tensor,
        pruned: &Tensor,
        errors: &Tensor,
        u_block: &Tensor,
        start: i64,
    ) -> Result<Tensor> {
        let (rows, columns) = w.size2()?;
        let count = u_block.size()[0];
        let u = u_block.f_contiguous()?;
        let pruned = pruned.f_contiguous()?.copy();
        let block_errors = Tensor::f_zeros([rows, count], (Kind::Float, Device::Cpu))?;
        let stride = columns as usize;
        let len = (rows as usize) * stride;
        // SAFETY: `w` is a contiguous f32 CPU tensor of rows x columns that only this function
        // touches meanwhile; `pruned` and `block_errors` are new contiguous rows x count bool and
        // f32 tensors (bool bytes are 0 or 1); `u` a contiguous count x count f32 tensor.
        let (weights, flags, errs, u_entries) = unsafe {
            (
                &mut entries_mut::<f32>(w, len)[start as usize..],
                entries_mut::<bool>(&pruned, (rows * count) as usize),
                entries_mut::<f32>(&block_errors, (rows * count) as usize),
                entries::<f32>(&u, (count * count) as usize),
            )
        };
        let pass = BlockPass {
            count: count as usize,
            stride,
            u: u_entries,
            nm: self.nm.map(|nm| (nm.n as usize, nm.m as usize)),
        };
        pass.run(weights, flags, errs);
        errors.shallow_clone().f_copy_(&block_errors)?;
        Ok(pruned)
    }

    /// The pass over a block column by column in libtorch operations (CUDA): for column `i`,
    /// `e = -w_i * pruned_i / U_ii`, then `W[:, i:] += e U[i, i:]`.
    fn pass_by_columns(
        &self,
        w: &Tensor,
        pruned: &Tensor,
        errors: &Tensor,
        u_block: &Tensor,
        start: i64,
    ) -> Result<Tensor> {
        let count = u_block.size()[0];
        let mut block = w.f_narrow(1, start, count)?;
        let diagonal = u_block.f_diagonal(0, 0, 1)?;
        let pruned = pruned.copy();
        let neg_inv_d = diagonal.f_reciprocal()?.f_neg()?.f_reshape([1, -1])?;
        let scale = pruned.f_to_kind(Kind::Float)?.f_mul(&neg_inv_d)?;
        for i in 0..count {
            if let Some(nm) = self.nm {
                if i % nm.m == 0 {
                    let group = block.f_narrow(1, i, nm.m)?;
                    let d = diagonal.f_narrow(0, i, nm.m)?.f_reshape([1, -1])?;
                    let mut group_pruned = pruned.f_narrow(1, i, nm.m)?;
                    let scores = group
                        .f_square()?
                        .f_div(&d.f_square()?)?
                        .f_masked_fill(&group_pruned, -1.0)?;
                    let chosen = nm.smallest(&scores)?;
                    let _ = group_pruned.f_logical_or_(&chosen)?;
                    let group_scale = group_pruned
                        .f_to_kind(Kind::Float)?
                        .f_mul(&neg_inv_d.f_narrow(1, i, nm.m)?)?;
                    scale.f_narrow(1, i, nm.m)?.f_copy_(&group_scale)?;
                }
            }
            let e = errors.f_select(1, i)?;
            let _ = block
                .f_select(1, i)?
                .f_mul_out(&e, &scale.f_select(1, i)?)?;
            let _ = block
                .f_narrow(1, i, count - i)?
                .f_addr_(&e, &u_block.f_select(0, i)?.f_narrow(0, i, count - i)?)?;
        }
        let _ = block.f_masked_fill_(&pruned, 0.0)?;
        // The block's errors are `-e`: the trailing update subtracts `errors @ U`.
        let _ = errors.shallow_clone().f_neg_()?;
        Ok(pruned)
    }
}

/// The upper Cholesky factor `U` of `H^-1` for the dampened `gram` (dead inputs, with a zero
/// diagonal, get a diagonal of 1 and their weights in `w` zeroed, as in the reference).
fn inverse_cholesky_upper(method: &SparseGpt, gram: Tensor, w: &mut Tensor) -> Result<Tensor> {
    let h = gram.f_to_kind(Kind::Float)?.copy();
    let mut diagonal = h.f_diagonal(0, 0, 1)?;
    let dead = diagonal.f_eq(0.0)?;
    let _ = diagonal.f_masked_fill_(&dead, 1.0)?;
    let _ = w.f_masked_fill_(&dead.f_reshape([1, -1])?, 0.0)?;
    let damp = diagonal
        .f_mean(Kind::Float)?
        .f_mul_scalar(method.dampening)?;
    let _ = diagonal.f_add_(&damp)?;
    let flipped = h.f_flip([0, 1])?;
    let (factor, info) = flipped.f_linalg_cholesky_ex(false, false)?;
    let failed = info.f_int64_value(&[])?;
    if failed != 0 {
        return Err(PruneError::MethodFailed {
            method: "sparsegpt".to_owned(),
            reason: format!(
                "the dampened Hessian is not positive definite (leading minor {failed}): raise \
                 the dampening or give more calibration samples"
            ),
        });
    }
    Ok(lower_inverse(&factor)?.f_flip([0, 1])?)
}

/// Below this size a triangular inverse is one solve against the identity.
const INVERSE_LEAF: i64 = 256;

/// The inverse of the lower-triangular `l`: `[[A, 0], [B, D]]^-1 = [[A^-1, 0], [-D^-1 B A^-1,
/// D^-1]]`, the corner from two triangular solves, the diagonal blocks recursively (about a
/// third of the work of one solve against the whole identity).
fn lower_inverse(l: &Tensor) -> Result<Tensor> {
    let n = l.size()[0];
    if n <= INVERSE_LEAF {
        let identity = Tensor::f_eye(n, (Kind::Float, l.device()))?;
        return Ok(l.f_linalg_solve_triangular(&identity, false, true, false)?);
    }
    let half = n / 2;
    let a = l.f_narrow(0, 0, half)?.f_narrow(1, 0, half)?;
    let b = l.f_narrow(0, half, n - half)?.f_narrow(1, 0, half)?;
    let d = l.f_narrow(0, half, n - half)?.f_narrow(1, half, n - half)?;
    let inverse = Tensor::f_zeros([n, n], (Kind::Float, l.device()))?;
    inverse
        .f_narrow(0, 0, half)?
        .f_narrow(1, 0, half)?
        .f_copy_(&lower_inverse(&a)?)?;
    inverse
        .f_narrow(0, half, n - half)?
        .f_narrow(1, half, n - half)?
        .f_copy_(&lower_inverse(&d)?)?;
    // X = -D^-1 B A^-1: first Y A = B (a solve from the right), then D X = -Y.
    let y = a.f_linalg_solve_triangular(&b, false, false, false)?;
    let x = d.f_linalg_solve_triangular(&y.f_neg()?, false, true, false)?;
    inverse
        .f_narrow(0, half, n - half)?
        .f_narrow(1, 0, half)?
        .f_copy_(&x)?;
    Ok(inverse)
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
