//! `amount`, read as the host reads it, so that a plugin's methods count like the built-ins.
//!
//! PyTorch tells a count from a fraction by Python type: `1` is one unit, `1.0` is all of them.
//! In JSON the literal keeps that distinction (an integer literal is a count, a literal with a
//! decimal point or an exponent a fraction), and a fraction of `units` is rounded half to even,
//! as Python's `round` does.

use serde_json::Value;

/// How much to prune: a count of units, or a fraction of them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    /// This many units.
    Count(u64),
    /// This fraction of the units, in [0, 1].
    Fraction(f64),
}

impl Amount {
    /// Reads a JSON number: an integer literal is a count (not negative), any other number a
    /// fraction in [0, 1]. The error says what is wrong with `value`.
    ///
    /// ```
    /// use tchprune_plugin_api::Amount;
    /// use serde_json::json;
    ///
    /// assert_eq!(Amount::from_json(&json!(3)), Ok(Amount::Count(3)));
    /// assert_eq!(Amount::from_json(&json!(0.25)), Ok(Amount::Fraction(0.25)));
    /// assert!(Amount::from_json(&json!(-1)).is_err());
    /// assert!(Amount::from_json(&json!(1.5)).is_err());
    /// ```
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let Value::Number(number) = value else {
            return Err(format!(
                "amount {value} must be a number (an integer count or a float fraction)"
            ));
        };
        if let Some(count) = number.as_u64() {
            return Ok(Amount::Count(count));
        }
        if number.is_i64() {
            return Err(format!("amount {value}: a count must not be negative"));
        }
        match number.as_f64() {
            Some(fraction) if (0.0..=1.0).contains(&fraction) => Ok(Amount::Fraction(fraction)),
            _ => Err(format!(
                "amount {value}: a fraction must be a float in the range [0, 1]"
            )),
        }
    }

    /// How many of `units` to prune: the count itself (an error when it exceeds `units`), or
    /// the fraction of `units` rounded half to even.
    ///
    /// ```
    /// use tchprune_plugin_api::Amount;
    ///
    /// assert_eq!(Amount::Fraction(0.5).units_to_prune(5), Ok(2)); // 2.5 rounds to 2
    /// assert_eq!(Amount::Fraction(0.5).units_to_prune(7), Ok(4)); // 3.5 rounds to 4
    /// assert_eq!(Amount::Count(3).units_to_prune(10), Ok(3));
    /// assert!(Amount::Count(11).units_to_prune(10).is_err());
    /// ```
    pub fn units_to_prune(self, units: usize) -> Result<usize, String> {
        match self {
            Amount::Count(count) if count > units as u64 => Err(format!(
                "amount={count} should be smaller than the number of units to prune={units}"
            )),
            Amount::Count(count) => Ok(count as usize),
            Amount::Fraction(fraction) => Ok((fraction * units as f64).round_ties_even() as usize),
        }
    }
}
