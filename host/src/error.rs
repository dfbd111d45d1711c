//! The one error type of the library.
//!
//! Every validation rule of PyTorch's `torch.nn.utils.prune` has its own variant, so callers can
//! match on what went wrong and the message names the offending value.

use std::path::PathBuf;
use tch::TchError;

/// Everything that can go wrong while pruning.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// An amount that is neither a non-negative count nor a fraction in [0, 1].
    #[error("invalid amount {amount}: {reason}")]
    InvalidAmount {
        /// The amount as given.
        amount: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A schedule, a spread over tensors or a lottery ticket that cannot be carried out.
    #[error("invalid schedule: {0}")]
    InvalidSchedule(String),
    /// Dependency groups that do not fit the model or its state_dict, or a model whose groups
    /// cannot be traced.
    #[error("channel removal: {0}")]
    InvalidGroups(String),
    /// A count larger than the number of prunable units.
    #[error("amount={amount} should be smaller than the number of parameters to prune={units}")]
    AmountTooLarge {
        /// The requested count.
        amount: i64,
        /// How many units (entries or slices) there are.
        units: i64,
    },
    /// A structured method applied to a tensor with fewer than two dimensions.
    #[error("structured pruning can only be applied to multidimensional tensors, found a tensor of shape {shape:?}")]
    NotMultidimensional {
        /// The shape of the tensor.
        shape: Vec<i64>,
    },
    /// A `dim` outside the tensor's dimensions.
    #[error("invalid dim {dim} for a tensor of {ndim} dimensions")]
    DimOutOfRange {
        /// The dim as given.
        dim: i64,
        /// The number of dimensions of the tensor.
        ndim: usize,
    },
    /// An `n` that is not a number, `inf`, `-inf` or `fro`, or `fro` over more than two dims.
    #[error("invalid norm: {0}")]
    InvalidNorm(String),
    /// Two tensors that must have the same shape do not.
    #[error("{what}: expected shape {expected:?}, got {actual:?}")]
    ShapeMismatch {
        /// What was compared.
        what: String,
        /// The shape required.
        expected: Vec<i64>,
        /// The shape found.
        actual: Vec<i64>,
    },
    /// A mask with values other than 0 and 1.
    #[error("{0}: a mask may hold only 0 and 1")]
    NotBinaryMask(String),
    /// A mask that sets entries back to 1 that an earlier pruning had zeroed.
    #[error("{0}: the mask revives entries that were already pruned")]
    RevivedEntries(String),
    /// No prunable tensor at that path.
    #[error("no parameter '{path}'{hint}")]
    UnknownParameter {
        /// The tensor's dotted path (`conv1.weights`).
        path: String,
        /// What is there instead, or where it was looked for (may be empty).
        hint: String,
    },
    /// No sub-module at that path.
    #[error("no sub-module at path '{0}'")]
    UnknownModule(String),
    /// `remove` on a tensor that is not pruned.
    #[error("'{path}' has to be pruned before pruning can be removed")]
    NotPruned {
        /// The tensor's dotted path.
        path: String,
    },
    /// A name that is already taken.
    #[error("'{path}' is already taken{}", in_module(module))]
    NameTaken {
        /// The dotted path of the name (or the bare name, when the module's path is unknown).
        path: String,
        /// The kind of the module that has it (`Conv2d`), if known.
        module: Option<String>,
    },
    /// A method's error while pruning a tensor, with the tensor's path.
    #[error("'{path}': {error}")]
    OnTensor {
        /// The tensor's dotted path.
        path: String,
        /// What went wrong.
        error: Box<PruneError>,
    },
    /// A method whose PRUNING_TYPE does not fit where it is used.
    #[error("method {method} has the wrong PRUNING_TYPE: {reason}")]
    WrongPruningType {
        /// The method's name.
        method: String,
        /// What was expected.
        reason: String,
    },
    /// A container asked to hold a method for another tensor.
    #[error("can only add pruning methods acting on the parameter named '{expected}' to this container, got one for '{actual}'")]
    ContainerTensorMismatch {
        /// The container's tensor.
        expected: String,
        /// The method's tensor.
        actual: String,
    },
    /// No method registered under that name.
    #[error("unknown pruning method '{0}'")]
    UnknownMethod(String),
    /// Two methods registered under one name.
    #[error(
        "a pruning method named '{name}' is already registered ({existing}); {new} has one too"
    )]
    DuplicateMethod {
        /// The name.
        name: String,
        /// Where the first one came from.
        existing: String,
        /// Where the second one comes from.
        new: String,
    },
    /// A JSON argument that is missing, unknown or of the wrong type.
    #[error("method {method}: argument '{argument}': {reason}")]
    InvalidArgument {
        /// The method being built.
        method: String,
        /// The argument.
        argument: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The same parameter listed twice for global pruning.
    #[error("parameter '{0}' is listed more than once")]
    DuplicateParameter(String),
    /// A checkpoint that does not fit the model.
    #[error("state_dict does not fit the model: {0}")]
    StateDict(String),
    /// A file that cannot be read or written as what it should be (a corrupt safetensors
    /// header, a header too large to read back).
    #[error("{path}: {reason}")]
    InvalidFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Checkpoint contents that tchprune cannot take (a damaged pruned pair, a key that is not a
    /// dotted path).
    #[error("{0}")]
    InvalidCheckpoint(String),
    /// A pruning method reported a failure of its own.
    #[error("method {method} failed: {reason}")]
    MethodFailed {
        /// The method's name.
        method: String,
        /// What it said.
        reason: String,
    },
    /// A plugin file that does not exist.
    #[error("plugin {0}: no such file")]
    PluginNotFound(PathBuf),
    /// A file that is not a shared library, or a shared library that is not a tchprune plugin.
    #[error("{path} is not a tchprune plugin: {reason}")]
    NotAPlugin {
        /// The file.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// A plugin built against a plugin API this host cannot use.
    #[error(
        "plugin {path} was built against tchprune-plugin-api {plugin_version}, \
         this host uses {host_version}: rebuild the plugin against {host_version}"
    )]
    PluginVersion {
        /// The file.
        path: PathBuf,
        /// The version the plugin declares.
        plugin_version: String,
        /// The version the host was built with.
        host_version: String,
    },
    /// A plugin that abi_stable refused for another reason (layout, abi_stable version).
    #[error("plugin {path} cannot be loaded: {reason}")]
    PluginLoad {
        /// The file.
        path: PathBuf,
        /// abi_stable's explanation.
        reason: String,
    },
    /// An error (or a caught panic) reported by a plugin's method.
    #[error("plugin {plugin}: method {method}: {reason}")]
    Plugin {
        /// The plugin file.
        plugin: PathBuf,
        /// The method.
        method: String,
        /// What went wrong.
        reason: String,
    },
    /// A plan file that cannot be read or does not follow the plan format.
    #[error("plan {path}: {reason}")]
    InvalidPlan {
        /// The plan file.
        path: String,
        /// What is wrong, naming the step when it concerns one.
        reason: String,
    },
    /// A plan step that does not fit its method (an argument it cannot take, a side file
    /// without a key it needs).
    #[error("{0}")]
    InvalidStep(String),
    /// A parameter pattern that matches no key.
    #[error("'{0}' matches no parameter of the checkpoint")]
    PatternMatchesNothing(String),
    /// A step of a plan that failed.
    #[error("plan step {step} ({method}){}: {error}", key.as_ref().map(|k| format!(" on '{k}'")).unwrap_or_default())]
    PlanStep {
        /// The step's number, from 1.
        step: usize,
        /// The step's method.
        method: String,
        /// The parameter key it failed on, when it failed on one.
        key: Option<String>,
        /// What went wrong.
        error: Box<PruneError>,
    },
    /// An I/O error, with the path it concerns.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A path that names something other than a regular file.
    #[error("{path}: not a regular file (a {kind})")]
    NotRegularFile {
        /// The path.
        path: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// A file larger than what is read of its kind.
    #[error("{path}: larger than {limit} bytes")]
    TooLarge {
        /// The path.
        path: String,
        /// The most that is read.
        limit: u64,
    },
    /// An output that is the input under another name.
    #[error("the output {output} is the input {input} (the same file): inputs are never replaced")]
    SameFile {
        /// The input path.
        input: String,
        /// The output path.
        output: String,
    },
    /// An error raised by libtorch (displayed as its first line: the rest is libtorch's C++
    /// backtrace).
    #[error("libtorch: {}", first_line(&.0.to_string()))]
    Torch(TchError),
}

// Not `#[from]`: that would make libtorch's error the `source` as well, and printers that
// follow sources would repeat its text.
impl From<TchError> for PruneError {
    fn from(error: TchError) -> Self {
        PruneError::Torch(error)
    }
}

impl PruneError {
    /// This error with the dotted path of the tensor it concerns, unless it names one already.
    pub(crate) fn at(self, path: &str) -> Self {
        match self {
            named @ (PruneError::OnTensor { .. }
            | PruneError::UnknownParameter { .. }
            | PruneError::NotPruned { .. }
            | PruneError::NameTaken { .. }
            | PruneError::UnknownModule(_)) => named,
            other => PruneError::OnTensor {
                path: path.to_owned(),
                error: Box::new(other),
            },
        }
    }

    /// The error at the bottom of the context that plan steps and tensor paths add: what to
    /// match on to know what went wrong.
    pub fn innermost(&self) -> &PruneError {
        match self {
            PruneError::OnTensor { error, .. } => error.innermost(),
            PruneError::PlanStep { error, .. } => error.innermost(),
            other => other,
        }
    }
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or_default()
}

fn in_module(module: &Option<String>) -> String {
    module
        .as_ref()
        .map(|kind| format!(" in a {kind}"))
        .unwrap_or_default()
}

/// The library's result type.
pub type Result<T, E = PruneError> = std::result::Result<T, E>;

/// The first line of a caught panic's message (`panic!` with a `String` or a `&str`).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    (panic.downcast_ref::<String>().map(String::as_str))
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic")
        .lines()
        .next()
        .unwrap_or_default()
}
