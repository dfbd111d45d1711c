//! How much to prune: a count of units or a fraction of them, with PyTorch's exact rules.
//!
//! PyTorch tells the two apart by Python type (`1` is one unit, `1.0` is all of them); here the
//! distinction is the enum variant, and JSON keeps it too (an integer literal is a count, a literal
//! with a decimal point or exponent is a fraction).

use crate::error::{PruneError, Result};
use serde_json::Value;
use std::fmt;

/// An amount to prune, validated like PyTorch's `_validate_pruning_amount_init`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    /// This many units (entries for unstructured methods, slices for structured ones).
    Count(i64),
    /// This fraction of the units, rounded half to even.
    Fraction(f64),
}

impl Amount {
    /// Checks the rules that PyTorch applies when a method is created: a count must not be
    /// negative and a fraction must lie in [0, 1].
    pub fn validated(self) -> Result<Self> {
        match self {
            Amount::Count(n) if n < 0 => Err(PruneError::InvalidAmount {
                amount: self.to_string(),
                reason: "a count must be a non-negative integer",
            }),
            Amount::Fraction(f) if !(0.0..=1.0).contains(&f) => Err(PruneError::InvalidAmount {
                amount: self.to_string(),
                reason: "a fraction must be a float in the range [0, 1]",
            }),
            valid => Ok(valid),
        }
    }

    /// Parses a JSON number: an integer literal is a count, any other number a fraction.
    pub fn from_json(value: &Value) -> Result<Self> {
        let invalid = |reason| PruneError::InvalidAmount {
            amount: value.to_string(),
            reason,
        };
        let Value::Number(number) = value else {
            return Err(invalid(
                "an amount must be a number (an integer count or a float fraction)",
            ));
        };
        let literal = number.to_string();
        let integer_literal = !literal.contains(['.', 'e', 'E']);
        let amount = if let Some(count) = number.as_i64() {
            Amount::Count(count)
        } else if integer_literal && literal.starts_with('-') {
            return Err(invalid("a count must be a non-negative integer"));
        } else if integer_literal {
            return Err(invalid("the count is too large"));
        } else {
            Amount::Fraction(
                number
                    .as_f64()
                    .ok_or_else(|| invalid("not a finite number"))?,
            )
        };
        amount.validated()
    }

    /// The number of units to prune out of `units`, as `_compute_nparams_toprune` computes it,
    /// then checked like `_validate_pruning_amount` (a count may not exceed `units`).
    pub fn units_to_prune(self, units: i64) -> Result<i64> {
        match self {
            Amount::Count(n) if n > units => Err(PruneError::AmountTooLarge { amount: n, units }),
            Amount::Count(n) => Ok(n),
            Amount::Fraction(f) => Ok((f * units as f64).round_ties_even() as i64),
        }
    }

    /// The amount as JSON, keeping the count/fraction distinction.
    pub fn to_json(self) -> Value {
        match self {
            Amount::Count(n) => Value::from(n),
            Amount::Fraction(f) => Value::from(f),
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Fraction(x) => write!(f, "{x:?}"),
        }
    }
}

macro_rules! count_from {
    ($($int:ty),*) => {$(
        impl From<$int> for Amount {
            fn from(n: $int) -> Self {
                Amount::Count(i64::try_from(n).unwrap_or(i64::MAX))
            }
        }
    )*};
}
count_from!(i32, i64, u32, u64, usize);

impl From<f64> for Amount {
    fn from(f: f64) -> Self {
        Amount::Fraction(f)
    }
}
