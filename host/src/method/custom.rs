//! `custom_from_mask`: prune with a mask the caller already has.

use crate::error::{PruneError, Result};
use crate::method::{MethodArgs, PruningMethod, PruningType};
use crate::registry::MethodEntry;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use tch::{Kind, Tensor};

/// Prunes the entries where a given mask is 0: PyTorch's `prune.CustomFromMask`
/// (PRUNING_TYPE `global`: it always sees the whole tensor).
#[derive(Debug)]
pub struct CustomFromMask {
    // A `Tensor` is `Send` but not `Sync`; methods are shared between threads.
    mask: Mutex<Tensor>,
}

impl CustomFromMask {
    /// A method applying `mask` (any dtype, values 0 and 1 only) on top of the current mask.
    pub fn new(mask: &Tensor) -> Result<Self> {
        Ok(Self {
            mask: Mutex::new(to_binary_mask(mask, "custom_from_mask")?),
        })
    }

    /// The mask, as `bool`.
    pub(crate) fn bool_mask(&self) -> Tensor {
        self.mask
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .shallow_clone()
    }

    /// Builds the mask from nested JSON arrays of 0/1 (or `true`/`false`).
    pub fn from_json(value: &Value) -> Result<Self> {
        let mut shape = Vec::new();
        let mut values = Vec::new();
        flatten_nested(value, 0, &mut shape, &mut values)?;
        Self::new(&Tensor::from_slice(&values).f_reshape(shape.as_slice())?)
    }
}

/// `mask` as a `bool` tensor, after checking that it holds only 0 and 1; `what` names the
/// mask in the error.
pub(crate) fn to_binary_mask(mask: &Tensor, what: &str) -> Result<Tensor> {
    bool_if_binary(mask)?.ok_or_else(|| PruneError::NotBinaryMask(what.to_owned()))
}

/// `mask` as a `bool` tensor when it holds only 0 and 1, `None` when it holds anything else.
///
/// A `bool` tensor is checked too: libtorch lets one hold any byte (`from_data_size`,
/// `view_dtype`), and the engine reads masks as Rust `bool`s, for which only 0 and 1 are defined.
pub(crate) fn bool_if_binary(mask: &Tensor) -> Result<Option<Tensor>> {
    if mask.kind() == Kind::Bool {
        let booleans = match crate::small_loops::holds_only_booleans(mask) {
            Some(booleans) => booleans,
            None => {
                let bytes = mask.f_view_dtype(Kind::Uint8)?;
                bytes.f_gt(1)?.f_any()?.f_int64_value(&[])? == 0
            }
        };
        return Ok(booleans.then(|| mask.shallow_clone()));
    }
    match crate::small_loops::binary_to_bool(mask) {
        Some(Ok(mask)) => return Ok(Some(mask)),
        Some(Err(())) => return Ok(None),
        None => {}
    }
    let zero = mask.f_eq(0)?;
    let binary = zero
        .f_logical_or(&mask.f_eq(1)?)?
        .f_all()?
        .f_int64_value(&[])?
        != 0;
    if !binary {
        return Ok(None);
    }
    Ok(Some(zero.f_logical_not()?))
}

fn flatten_nested(
    value: &Value,
    depth: usize,
    shape: &mut Vec<i64>,
    out: &mut Vec<f64>,
) -> Result<()> {
    let bad = |reason: &str| PruneError::InvalidArgument {
        method: "custom_from_mask".to_owned(),
        argument: "mask".to_owned(),
        reason: reason.to_owned(),
    };
    match value {
        Value::Array(items) => {
            if shape.len() == depth {
                shape.push(items.len() as i64);
            } else if shape.get(depth) != Some(&(items.len() as i64)) {
                return Err(bad("nested arrays must be rectangular"));
            }
            items
                .iter()
                .try_for_each(|item| flatten_nested(item, depth + 1, shape, out))
        }
        Value::Number(n) if shape.len() == depth => {
            out.push(n.as_f64().ok_or_else(|| bad("not a number"))?);
            Ok(())
        }
        Value::Bool(b) if shape.len() == depth => {
            out.push(f64::from(u8::from(*b)));
            Ok(())
        }
        _ => Err(bad("expected nested arrays of 0/1 values")),
    }
}

impl PruningMethod for CustomFromMask {
    fn name(&self) -> &str {
        "custom_from_mask"
    }

    fn pruning_type(&self) -> PruningType {
        PruningType::Global
    }

    fn compute_mask(&self, _t: &Tensor, default_mask: &Tensor) -> Result<Tensor> {
        let mask = self.mask.lock().unwrap_or_else(|e| e.into_inner());
        if default_mask.size() != mask.size() {
            return Err(PruneError::ShapeMismatch {
                what: "custom_from_mask: the mask must match the tensor".to_owned(),
                expected: default_mask.size(),
                actual: mask.size(),
            });
        }
        let mask = mask.f_to_device(default_mask.device())?;
        Ok(default_mask.f_logical_and(&mask)?)
    }

    fn check_shape(&self, shape: &[i64]) -> Result<()> {
        let mask = self.mask.lock().unwrap_or_else(|e| e.into_inner());
        if mask.size() != shape {
            return Err(PruneError::ShapeMismatch {
                what: "custom_from_mask: the mask must match the tensor".to_owned(),
                expected: shape.to_vec(),
                actual: mask.size(),
            });
        }
        Ok(())
    }
}

const MASK_ARGUMENTS: &[(&str, &str)] = &[(
    "mask",
    "nested arrays of 0/1 (or true/false) of the tensor's shape",
)];

inventory::submit! {
    MethodEntry {
        name: "custom_from_mask",
        arguments: MASK_ARGUMENTS,
        pruning_type: "global",
        description: "Prunes where a given mask (nested arrays of 0/1) is 0",
        build: |args| {
            let args = MethodArgs::declared("custom_from_mask", args, MASK_ARGUMENTS)?;
            let mask = args.get("mask").ok_or_else(|| args.error("mask", "missing required argument"))?;
            Ok(Arc::new(CustomFromMask::from_json(mask)?))
        },
    }
}
