//! Reading a method's arguments from JSON, with PyTorch's argument names.
//!
//! Unknown arguments are refused (PyTorch raises `TypeError` for an unexpected keyword), and each
//! error names the method and the argument.

use crate::amount::Amount;
use crate::error::{PruneError, Result};
use crate::method::Norm;
use serde_json::{Map, Value};

/// The JSON arguments of one method, checked as they are read.
#[derive(Debug)]
pub struct MethodArgs<'a> {
    method: &'a str,
    args: &'a Map<String, Value>,
}

impl<'a> MethodArgs<'a> {
    /// Wraps `args`, which must be a JSON object (or `null` for no arguments), and rejects every
    /// key that is not in `known`.
    pub fn new(method: &'a str, args: &'a Value, known: &[&str]) -> Result<Self> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        let args = match args {
            Value::Object(map) => map,
            Value::Null => EMPTY.get_or_init(Map::new),
            other => {
                return Err(PruneError::InvalidArgument {
                    method: method.to_owned(),
                    argument: "(all)".to_owned(),
                    reason: format!("arguments must be a JSON object, got {other}"),
                })
            }
        };
        if let Some(unknown) = args.keys().find(|key| !known.contains(&key.as_str())) {
            return Err(PruneError::InvalidArgument {
                method: method.to_owned(),
                argument: unknown.clone(),
                reason: if known.is_empty() {
                    "unexpected argument (the method takes none)".to_owned()
                } else {
                    format!(
                        "unexpected argument (expected one of: {})",
                        known.join(", ")
                    )
                },
            });
        }
        Ok(Self { method, args })
    }

    /// [`MethodArgs::new`] with the arguments a [`MethodEntry`](crate::MethodEntry) declares.
    pub fn declared(method: &'a str, args: &'a Value, declared: &[(&str, &str)]) -> Result<Self> {
        let known: Vec<&str> = declared.iter().map(|(name, _)| *name).collect();
        Self::new(method, args, &known)
    }

    /// The error for `argument`, for checks made by the caller.
    pub fn error(&self, argument: &str, reason: impl Into<String>) -> PruneError {
        PruneError::InvalidArgument {
            method: self.method.to_owned(),
            argument: argument.to_owned(),
            reason: reason.into(),
        }
    }

    /// The raw value of an argument, if given.
    pub fn get(&self, argument: &str) -> Option<&'a Value> {
        self.args.get(argument)
    }

    fn required(&self, argument: &str) -> Result<&'a Value> {
        self.get(argument)
            .ok_or_else(|| self.error(argument, "missing required argument"))
    }

    /// A required amount.
    pub fn amount(&self, argument: &str) -> Result<Amount> {
        Amount::from_json(self.required(argument)?).map_err(|e| self.error(argument, e.to_string()))
    }

    /// A required integer dimension.
    pub fn dim(&self, argument: &str) -> Result<i64> {
        self.required(argument)?
            .as_i64()
            .ok_or_else(|| self.error(argument, "must be an integer"))
    }

    /// An optional integer, `default` when absent.
    pub fn int_or(&self, argument: &str, default: i64) -> Result<i64> {
        match self.get(argument) {
            None => Ok(default),
            Some(value) => value.as_i64().ok_or_else(|| {
                self.error(
                    argument,
                    format!("must be an integer that fits in 64 bits, got {value}"),
                )
            }),
        }
    }

    /// A required norm: a number, `"inf"`, `"-inf"` or `"fro"`.
    pub fn norm(&self, argument: &str) -> Result<Norm> {
        Norm::from_json(self.required(argument)?).map_err(|e| self.error(argument, e.to_string()))
    }

    /// An optional fraction in `[0, 1]`, `default` when absent.
    pub fn fraction_or(&self, argument: &str, default: f64) -> Result<f64> {
        match self.get(argument) {
            None | Some(Value::Null) => Ok(default),
            Some(value) => match value.as_f64() {
                Some(f) if (0.0..=1.0).contains(&f) => Ok(f),
                _ => Err(self.error(argument, format!("{value} is not a number in [0, 1]"))),
            },
        }
    }

    /// An optional `"N:M"` pattern (N of every M consecutive inputs pruned).
    pub fn nm(&self, argument: &str) -> Result<Option<super::NmPattern>> {
        match self.get(argument) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => super::NmPattern::parse(text)
                .map(Some)
                .map_err(|reason| self.error(argument, reason)),
            Some(other) => {
                Err(self.error(argument, format!("{other} is not a string like \"2:4\"")))
            }
        }
    }
}
