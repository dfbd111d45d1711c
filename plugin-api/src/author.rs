//! The helper layer for plugin authors: implement [`Method`] over plain slices, list the types
//! in [`export_plugin!`](crate::export_plugin), and the FFI (metadata, JSON arguments, panics,
//! the root module) is written for you.

use crate::calibration::{Calibrated, Statistics, StatisticsView, ValuesBuffer};
use crate::method::{ArgumentInfo, FfiMethod, FfiMethod_TO, MethodBox, MethodInfo, PruningType};
use crate::tensor::{MaskBuffer, TensorView};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RString, RVec};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

/// One argument of a [`Method`]: its JSON key and what it means.
#[derive(Clone, Copy, Debug)]
pub struct Argument {
    /// The JSON key.
    pub name: &'static str,
    /// What it means, and its default.
    pub description: &'static str,
}

/// A pruning method as a plugin author writes it.
///
/// ```
/// use tchprune_plugin_api::{Arguments, Method, PruningType, TensorView};
///
/// /// Prunes every other entry (of the unpruned part, when applied iteratively).
/// struct FooBar;
///
/// impl Method for FooBar {
///     const NAME: &'static str = "foobar";
///     const DESCRIPTION: &'static str = "prunes every other entry";
///     const PRUNING_TYPE: PruningType = PruningType::Unstructured;
///
///     fn from_args(_args: &Arguments) -> Result<Self, String> {
///         Ok(FooBar)
///     }
///
///     fn compute_mask(&self, _t: &TensorView, _default: &[u8], mask: &mut [u8]) -> Result<(), String> {
///         mask.iter_mut().step_by(2).for_each(|entry| *entry = 0);
///         Ok(())
///     }
/// }
///
/// tchprune_plugin_api::export_plugin!(FooBar);
/// ```
pub trait Method: Send + Sync + Sized + 'static {
    /// The name the method is found by.
    const NAME: &'static str;
    /// One line saying what it does.
    const DESCRIPTION: &'static str;
    /// Its PRUNING_TYPE (for a structured method, the one used when no `dim` is given).
    const PRUNING_TYPE: PruningType;
    /// The arguments it accepts; any other argument is refused before [`Method::from_args`].
    const ARGUMENTS: &'static [Argument] = &[];

    /// Builds the method from its JSON arguments.
    fn from_args(args: &Arguments) -> Result<Self, String>;

    /// Its PRUNING_TYPE once built (a structured method returns the `dim` it was given).
    fn pruning_type(&self) -> PruningType {
        Self::PRUNING_TYPE
    }

    /// Computes the mask of `tensor` (the tensor or its importance scores). `default_mask` and
    /// `mask` hold one entry per tensor entry in row-major order; `mask` starts as a copy of
    /// `default_mask`. Write 0 to prune an entry and 1 to keep it; never keep an entry that the
    /// default mask prunes.
    fn compute_mask(
        &self,
        tensor: &TensorView<'_>,
        default_mask: &[u8],
        mask: &mut [u8],
    ) -> Result<(), String>;

    /// The statistics of the layer's inputs a data-aware method needs (none by default). A
    /// method that needs some is applied to Linear weights with those statistics (`tchprune
    /// oneshot`, `prune::apply_calibrated`), through [`Method::compute_calibrated`].
    const STATISTICS: Statistics = Statistics::None;

    /// For a data-aware method: the mask of the weight `tensor` (`[out, in]`) from the
    /// statistics of its layer's inputs, as in [`Method::compute_mask`]; `values` holds the
    /// weight as f32 (row-major): write new values there and return true to have them become
    /// the weight (pruned entries are ignored), or return false to keep the weight.
    fn compute_calibrated(
        &self,
        tensor: &TensorView<'_>,
        default_mask: &[u8],
        statistics: &StatisticsView<'_>,
        mask: &mut [u8],
        values: &mut [f32],
    ) -> Result<bool, String> {
        let _ = (tensor, default_mask, statistics, mask, values);
        Err(format!("{} takes no calibration statistics", Self::NAME))
    }
}

/// A method's JSON arguments, with typed access and errors that name the argument.
#[derive(Debug)]
pub struct Arguments {
    method: &'static str,
    values: Map<String, Value>,
}

impl Arguments {
    /// The arguments of `method`: a JSON object (or `null`, meaning none).
    pub fn parse(method: &'static str, json: &str) -> Result<Self, String> {
        let values = match serde_json::from_str(json) {
            Ok(Value::Object(values)) => values,
            Ok(Value::Null) => Map::new(),
            Ok(other) => {
                return Err(format!(
                    "{method}: arguments must be a JSON object, got {other}"
                ))
            }
            Err(err) => return Err(format!("{method}: arguments are not valid JSON: {err}")),
        };
        Ok(Self { method, values })
    }

    /// The raw JSON value of `name`, if given.
    pub fn raw(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// The argument `name` as a `T`, if given.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, String> {
        self.values
            .get(name)
            .map(|value| {
                T::deserialize(value).map_err(|err| {
                    format!(
                        "{}: argument '{name}' = {value} is invalid: {err}",
                        self.method
                    )
                })
            })
            .transpose()
    }

    /// The argument `name` as a `T`, or `default` when it is not given.
    pub fn get_or<T: DeserializeOwned>(&self, name: &str, default: T) -> Result<T, String> {
        Ok(self.get(name)?.unwrap_or(default))
    }

    /// The argument `name` as an [`Amount`](crate::Amount) (an integer literal is a count, a
    /// float a fraction), if given.
    pub fn amount(&self, name: &str) -> Result<Option<crate::Amount>, String> {
        self.values
            .get(name)
            .map(|value| {
                crate::Amount::from_json(value)
                    .map_err(|err| format!("{}: argument '{name}': {err}", self.method))
            })
            .transpose()
    }

    /// The arguments as one JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(self.values.clone())
    }

    fn refuse_unknown(&self, accepted: &[Argument]) -> Result<(), String> {
        match self
            .values
            .keys()
            .find(|key| !accepted.iter().any(|arg| arg.name == key.as_str()))
        {
            None => Ok(()),
            Some(key) => {
                let names: Vec<_> = accepted.iter().map(|arg| arg.name).collect();
                Err(format!(
                    "{}: unknown argument '{key}' (accepted: {})",
                    self.method,
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ))
            }
        }
    }
}

thread_local! {
    /// Set while a guarded call runs on this thread; holds the panic report once one happens.
    static GUARDED: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

/// Makes panics inside guarded calls silent: their report goes into the error the host gets
/// instead of onto stderr. Panics elsewhere in the plugin reach the previous hook as usual.
/// (A `cdylib` has its own copy of std, so this hook never sees the host's panics.)
fn quiet_guarded_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let report = info.to_string();
            let captured = GUARDED.with(|guarded| match guarded.borrow_mut().as_mut() {
                Some(slot) => {
                    *slot = Some(report);
                    true
                }
                None => false,
            });
            if !captured {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into an error that quotes it.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> RResult<T, RString> {
    quiet_guarded_panics();
    let outer = GUARDED.with(|guarded| guarded.replace(Some(None)));
    let result = catch_unwind(AssertUnwindSafe(f));
    let report = GUARDED.with(|guarded| guarded.replace(outer)).flatten();
    match result {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(message)) => RResult::RErr(message.into()),
        Err(_) => {
            let report = report.unwrap_or_else(|| "panicked without a message".to_owned());
            RResult::RErr(format!("{what} {}", report.replace('\n', " ")).into())
        }
    }
}

/// A [`Method`] behind the FFI trait, with the arguments it was built from.
struct Exported<M> {
    method: M,
    arguments: String,
}

impl<M: Method> FfiMethod for Exported<M> {
    fn name(&self) -> RString {
        M::NAME.into()
    }

    fn pruning_type(&self) -> PruningType {
        // A panic here has no error channel; the trait's default is the declared type.
        catch_unwind(AssertUnwindSafe(|| self.method.pruning_type())).unwrap_or(M::PRUNING_TYPE)
    }

    fn arguments_json(&self) -> RString {
        self.arguments.as_str().into()
    }

    fn compute_mask(
        &self,
        tensor: TensorView<'_>,
        default_mask: TensorView<'_>,
        mut mask: MaskBuffer<'_>,
    ) -> RResult<RVec<i64>, RString> {
        guarded(&format!("{}.compute_mask", M::NAME), || {
            let default_mask = default_mask.as_slice::<u8>()?;
            let shape: RVec<i64> = mask.shape().into();
            self.method
                .compute_mask(&tensor, default_mask, mask.as_mut_slice())?;
            Ok(shape)
        })
    }

    fn statistics(&self) -> Statistics {
        M::STATISTICS
    }

    fn compute_calibrated(
        &self,
        tensor: TensorView<'_>,
        default_mask: TensorView<'_>,
        statistics: StatisticsView<'_>,
        mut mask: MaskBuffer<'_>,
        mut values: ValuesBuffer<'_>,
    ) -> RResult<Calibrated, RString> {
        guarded(&format!("{}.compute_calibrated", M::NAME), || {
            let default_mask = default_mask.as_slice::<u8>()?;
            let shape: RVec<i64> = mask.shape().into();
            let values_written = self.method.compute_calibrated(
                &tensor,
                default_mask,
                &statistics,
                mask.as_mut_slice(),
                values.as_mut_slice(),
            )?;
            Ok(Calibrated {
                shape,
                values_written,
            })
        })
    }
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use abi_stable::std_types::{RResult, RStr, RString, RVec};

    /// The metadata of `M`.
    pub fn info<M: Method>() -> MethodInfo {
        MethodInfo {
            name: M::NAME.into(),
            description: M::DESCRIPTION.into(),
            pruning_type: M::PRUNING_TYPE,
            arguments: M::ARGUMENTS
                .iter()
                .map(|arg| ArgumentInfo {
                    name: arg.name.into(),
                    description: arg.description.into(),
                })
                .collect(),
        }
    }

    /// Builds `M` from JSON arguments.
    pub fn build<M: Method>(arguments_json: &str) -> Result<MethodBox, String> {
        let args = Arguments::parse(M::NAME, arguments_json)?;
        args.refuse_unknown(M::ARGUMENTS)?;
        let method = M::from_args(&args)?;
        let exported = Exported {
            method,
            arguments: args.to_json().to_string(),
        };
        Ok(FfiMethod_TO::from_value(exported, TD_Opaque))
    }

    /// A builder of one method, by name.
    pub type Builder = (&'static str, fn(&str) -> Result<MethodBox, String>);

    /// The `methods` function of a root module over `infos`.
    pub fn methods(infos: &[fn() -> MethodInfo]) -> RResult<RVec<MethodInfo>, RString> {
        guarded("methods", || Ok(infos.iter().map(|info| info()).collect()))
    }

    /// The `build` function of a root module over `builders`.
    pub fn build_by_name(
        builders: &[Builder],
        name: RStr<'_>,
        arguments_json: RStr<'_>,
    ) -> RResult<MethodBox, RString> {
        guarded(&format!("building {name}"), || {
            let (_, build) = builders
                .iter()
                .find(|(known, _)| *known == name.as_str())
                .ok_or_else(|| format!("this plugin has no method named '{name}'"))?;
            build(arguments_json.as_str())
        })
    }
}

/// Exports the listed [`Method`] types as this crate's plugin: the one line a plugin needs,
/// `tchprune_plugin_api::export_plugin!(FooBar, OtherMethod);` (see [`Method`] for a whole
/// plugin). Use it once per crate.
#[macro_export]
macro_rules! export_plugin {
    ($($method:ty),+ $(,)?) => {
        #[doc(hidden)]
        pub fn tchprune_plugin_root_module() -> $crate::PluginModuleRef {
            use $crate::author::__private as p;
            extern "C" fn methods() -> p::RResult<p::RVec<$crate::MethodInfo>, p::RString> {
                p::methods(&[$(p::info::<$method>),+])
            }
            extern "C" fn build(
                name: p::RStr<'_>,
                arguments_json: p::RStr<'_>,
            ) -> p::RResult<$crate::MethodBox, p::RString> {
                p::build_by_name(
                    &[$((<$method as $crate::Method>::NAME, p::build::<$method> as _)),+],
                    name,
                    arguments_json,
                )
            }
            $crate::abi_stable::prefix_type::PrefixTypeTrait::leak_into_prefix(
                $crate::PluginModule { methods, build },
            )
        }
        $crate::export_root_module!(tchprune_plugin_root_module);
    };
}
