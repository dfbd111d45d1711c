//! Structured methods: prune whole slices along a dimension (channels, rows, columns).

use crate::amount::Amount;
use crate::error::{PruneError, Result};
use crate::method::{MethodArgs, PruningMethod, PruningType};
use crate::registry::MethodEntry;
use serde_json::{json, Value};
use std::fmt;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// The norm used to rank slices in [`LnStructured`]: PyTorch's `n` argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Norm {
    /// `(sum |x|^p)^(1/p)`; `p` may be any number, including `f64::INFINITY` (max |x|) and
    /// `f64::NEG_INFINITY` (min |x|).
    P(f64),
    /// The Frobenius norm (`'fro'`): the 2-norm, valid only where at most two dims are reduced.
    Fro,
}

impl Norm {
    /// Parses a JSON number, or one of the strings `"inf"`, `"-inf"`, `"fro"`.
    pub fn from_json(value: &Value) -> Result<Self> {
        match value {
            Value::Number(number) => number
                .as_f64()
                .map(Norm::P)
                .ok_or_else(|| PruneError::InvalidNorm(format!("{number} is not a finite number"))),
            Value::String(text) => text.parse(),
            other => Err(PruneError::InvalidNorm(format!(
                "expected a number, \"inf\", \"-inf\" or \"fro\", got {other}"
            ))),
        }
    }

    /// The norm as JSON, as [`Norm::from_json`] reads it.
    pub fn to_json(self) -> Value {
        match self {
            Norm::P(p) if p == f64::INFINITY => json!("inf"),
            Norm::P(p) if p == f64::NEG_INFINITY => json!("-inf"),
            Norm::P(p) => json!(p),
            Norm::Fro => json!("fro"),
        }
    }

    /// The norm of `t` over every dim but `dim`, computed as `torch.norm` does.
    fn slice_norms(self, t: &Tensor, dim: usize) -> Result<Tensor> {
        let reduced: Vec<i64> = (0..t.dim() as i64).filter(|&d| d != dim as i64).collect();
        let p = match self {
            Norm::P(p) => p,
            Norm::Fro if reduced.len() <= 2 => 2.0,
            Norm::Fro => {
                return Err(PruneError::InvalidNorm(format!(
                    "'fro' reduces at most two dims, a tensor of shape {:?} needs {}",
                    t.size(),
                    reduced.len()
                )))
            }
        };
        // What libtorch refuses is refused here: tch panics on libtorch's errors in `norm`.
        if !t.is_floating_point()
            && !matches!(
                t.kind(),
                Kind::ComplexHalf | Kind::ComplexFloat | Kind::ComplexDouble
            )
        {
            return Err(PruneError::MethodFailed {
                method: "ln_structured".to_owned(),
                reason: format!(
                    "cannot prune {:?} tensors (norms are of floating-point or complex entries)",
                    t.kind()
                ),
            });
        }
        self.check_slices(&t.size(), dim)?;
        Ok(t.f_norm_scalaropt_dim(p, reduced.as_slice(), false)?)
    }

    /// Fails, as PyTorch does, for the norms without identity (negative `p`, `inf`) when the
    /// slices of a tensor of `size` along `dim` have no entries, and for `'fro'` over more than
    /// two dims.
    fn check_slices(self, size: &[i64], dim: usize) -> Result<()> {
        let p = match self {
            Norm::P(p) => p,
            Norm::Fro if size.len() <= 3 => return Ok(()),
            Norm::Fro => {
                return Err(PruneError::InvalidNorm(format!(
                    "'fro' reduces at most two dims, a tensor of shape {size:?} needs {}",
                    size.len() - 1
                )))
            }
        };
        let empty = (size.iter().enumerate()).any(|(d, &side)| d != dim && side == 0);
        if (p < 0.0 || p == f64::INFINITY) && empty {
            return Err(PruneError::InvalidNorm(format!(
                "the {p} norm has no value over no entries, and the slices of a tensor of \
                 shape {size:?} along dim {dim} have none"
            )));
        }
        Ok(())
    }
}

impl std::str::FromStr for Norm {
    type Err = PruneError;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "inf" => Ok(Norm::P(f64::INFINITY)),
            "-inf" => Ok(Norm::P(f64::NEG_INFINITY)),
            "fro" => Ok(Norm::Fro),
            other => other.parse::<f64>().map(Norm::P).map_err(|_| {
                PruneError::InvalidNorm(format!(
                    "expected a number, \"inf\", \"-inf\" or \"fro\", got \"{other}\""
                ))
            }),
        }
    }
}

impl fmt::Display for Norm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_json() {
            Value::String(s) => f.write_str(&s),
            other => write!(f, "{other}"),
        }
    }
}

/// Checks PyTorch's `_validate_structured_pruning` and `_validate_pruning_dim`, and returns the
/// dim made non-negative.
pub(crate) fn checked_dim(t: &Tensor, dim: i64) -> Result<usize> {
    checked_dim_of(&t.size(), dim)
}

/// [`checked_dim`] from the shape alone.
fn checked_dim_of(shape: &[i64], dim: i64) -> Result<usize> {
    let ndim = shape.len();
    if ndim < 2 {
        return Err(PruneError::NotMultidimensional {
            shape: shape.to_vec(),
        });
    }
    let resolved = if dim < 0 { dim + ndim as i64 } else { dim };
    if !(0..ndim as i64).contains(&resolved) {
        return Err(PruneError::DimOutOfRange { dim, ndim });
    }
    Ok(resolved as usize)
}

/// The shape check of a structured method: a dim the tensor has, and no more slices to prune
/// than there are along it.
fn check_structured(shape: &[i64], dim: i64, amount: Amount) -> Result<()> {
    let dim = checked_dim_of(shape, dim)?;
    amount.units_to_prune(shape[dim]).map(drop)
}

/// A mask that keeps the slices `keep` (indices along `dim`) of `default_mask`.
fn keep_slices(default_mask: &Tensor, dim: usize, keep: &Tensor) -> Result<Tensor> {
    let mut mask = default_mask.f_zeros_like()?.f_to_kind(Kind::Bool)?;
    let _ = mask.f_index_fill_(dim as i64, keep, 1)?;
    Ok(mask.f_logical_and(default_mask)?)
}

/// Prunes whole slices along `dim`, those of smallest `n`-norm: PyTorch's `prune.LnStructured`.
#[derive(Clone, Copy, Debug)]
pub struct LnStructured {
    amount: Amount,
    n: Norm,
    dim: i64,
}

impl LnStructured {
    /// A method pruning `amount` slices along `dim` (negative counts from the end), ranked by
    /// their `n`-norm.
    pub fn new(amount: impl Into<Amount>, n: Norm, dim: i64) -> Result<Self> {
        Ok(Self {
            amount: amount.into().validated()?,
            n,
            dim,
        })
    }
}

impl PruningMethod for LnStructured {
    fn name(&self) -> &str {
        "ln_structured"
    }

    fn pruning_type(&self) -> PruningType {
        PruningType::Structured { dim: self.dim }
    }

    fn compute_mask(&self, t: &Tensor, default_mask: &Tensor) -> Result<Tensor> {
        let dim = checked_dim(t, self.dim)?;
        let slices = t.size()[dim];
        let k = self.amount.units_to_prune(slices)?;
        let norms = self.n.slice_norms(t, dim)?;
        if k == 0 {
            return Ok(default_mask.shallow_clone());
        }
        let (_, keep) = norms.f_topk(slices - k, 0, true, true)?;
        keep_slices(default_mask, dim, &keep)
    }

    fn arguments(&self) -> Value {
        json!({ "amount": self.amount.to_json(), "n": self.n.to_json(), "dim": self.dim })
    }

    fn check_shape(&self, shape: &[i64]) -> Result<()> {
        check_structured(shape, self.dim, self.amount)?;
        self.n.check_slices(shape, checked_dim_of(shape, self.dim)?)
    }
}

/// Prunes whole slices along `dim` chosen at random: PyTorch's `prune.RandomStructured`.
///
/// Draws `torch.rand(slices)` on the CPU like PyTorch, so the same seed prunes the same slices.
#[derive(Clone, Copy, Debug)]
pub struct RandomStructured {
    amount: Amount,
    dim: i64,
}

impl RandomStructured {
    /// A method pruning `amount` random slices along `dim` (negative counts from the end).
    pub fn new(amount: impl Into<Amount>, dim: i64) -> Result<Self> {
        Ok(Self {
            amount: amount.into().validated()?,
            dim,
        })
    }
}

impl PruningMethod for RandomStructured {
    fn name(&self) -> &str {
        "random_structured"
    }

    fn pruning_type(&self) -> PruningType {
        PruningType::Structured { dim: self.dim }
    }

    fn compute_mask(&self, t: &Tensor, default_mask: &Tensor) -> Result<Tensor> {
        let dim = checked_dim(t, self.dim)?;
        let slices = t.size()[dim];
        let k = self.amount.units_to_prune(slices)?;
        if k == 0 {
            return Ok(default_mask.shallow_clone());
        }
        let draws = Tensor::f_rand([slices], (Kind::Float, Device::Cpu))?;
        let (threshold, _) = draws.f_kthvalue(k, 0, false)?;
        let keep = draws
            .f_gt_tensor(&threshold)?
            .f_nonzero()?
            .f_view(-1)?
            .f_to_device(t.device())?;
        keep_slices(default_mask, dim, &keep)
    }

    fn arguments(&self) -> Value {
        json!({ "amount": self.amount.to_json(), "dim": self.dim })
    }

    fn check_shape(&self, shape: &[i64]) -> Result<()> {
        check_structured(shape, self.dim, self.amount)
    }
}

const LN_ARGUMENTS: &[(&str, &str)] = &[
    super::AMOUNT_ARGUMENT,
    ("n", "the norm: a number, \"inf\", \"-inf\" or \"fro\""),
    super::DIM_ARGUMENT,
];
const RANDOM_ARGUMENTS: &[(&str, &str)] = &[super::AMOUNT_ARGUMENT, super::DIM_ARGUMENT];

inventory::submit! {
    MethodEntry {
        name: "ln_structured",
        arguments: LN_ARGUMENTS,
        pruning_type: "structured",
        description: "Prunes the slices along `dim` of smallest n-norm",
        build: |args| {
            let args = MethodArgs::declared("ln_structured", args, LN_ARGUMENTS)?;
            Ok(Arc::new(LnStructured::new(args.amount("amount")?, args.norm("n")?, args.int_or("dim", -1)?)?))
        },
    }
}

inventory::submit! {
    MethodEntry {
        name: "random_structured",
        arguments: RANDOM_ARGUMENTS,
        pruning_type: "structured",
        description: "Prunes slices along `dim` chosen uniformly at random",
        build: |args| {
            let args = MethodArgs::declared("random_structured", args, RANDOM_ARGUMENTS)?;
            Ok(Arc::new(RandomStructured::new(args.amount("amount")?, args.int_or("dim", -1)?)?))
        },
    }
}
