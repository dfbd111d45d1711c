//! A tree of named modules with parameters and buffers, for tch.
//!
//! tch has no `nn.Module` with named parameters, buffers and forward pre-hooks, and pruning is
//! defined in those terms (`weight` leaves the parameters, `weight_orig` joins them, the buffer
//! `weight_mask` appears, a hook recomputes `weight`). [`Module`] provides exactly that much:
//! ordered parameters and buffers, named children, a forward function, and the pruning hooks.
//! Parameters are ordinary tch variables (usually made by an [`tch::nn::Path`]), so an
//! optimizer built from the `VarStore` keeps training them, before and after pruning.

use crate::container::PruningContainer;
use crate::error::{PruneError, Result};
use crate::ordered::Ordered;
use crate::product_cache::ProductCache;
use std::fmt;
use std::sync::Arc;
use tch::{nn, Tensor};

/// A module's forward function: `(module, input, train) -> output`. It reads its tensors with
/// [`Module::get`], which yields `orig * mask` for pruned ones.
pub type ForwardFn = Arc<dyn Fn(&Module, &Tensor, bool) -> Tensor + Send + Sync>;

/// A named module: parameters, buffers, children and a forward function.
///
/// Declaring a prunable layer of your own takes a few lines:
///
/// ```
/// use tch::{nn, Device, Kind, Tensor};
/// use tchprune::Module;
///
/// let vs = nn::VarStore::new(Device::Cpu);
/// let scale = Module::new("Scale")
///     .with_parameter("weight", vs.root().ones("weight", &[4]))
///     .with_forward(|m, xs, _train| xs * m.get("weight"));
/// let y = scale.forward(&Tensor::ones([2, 4], (Kind::Float, Device::Cpu)));
/// assert_eq!(y.size(), [2, 4]);
/// ```
pub struct Module {
    kind: String,
    parameters: Ordered<Tensor>,
    buffers: Ordered<Tensor>,
    children: Ordered<Module>,
    /// Pruning hooks by tensor name, in PyTorch's `_forward_pre_hooks` order.
    hooks: Ordered<PruningContainer>,
    forward: Option<ForwardFn>,
    conv_config: Option<nn::ConvConfig>,
    products: ProductCache,
}

impl Module {
    /// An empty module; `kind` is what it is (`"Linear"`, `"LeNet"`), shown in messages.
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            parameters: Ordered::default(),
            buffers: Ordered::default(),
            children: Ordered::default(),
            hooks: Ordered::default(),
            forward: None,
            conv_config: None,
            products: ProductCache::default(),
        }
    }

    /// Adds a parameter (builder form of [`Module::add_parameter`]).
    ///
    /// # Panics
    /// If the name is already taken: a model definition with two tensors of one name is a bug.
    pub fn with_parameter(mut self, name: &str, tensor: Tensor) -> Self {
        self.add_parameter(name, tensor)
            .unwrap_or_else(|e| panic!("{e}"));
        self
    }

    /// Adds a buffer (builder form of [`Module::add_buffer`]).
    ///
    /// # Panics
    /// If the name is already taken.
    pub fn with_buffer(mut self, name: &str, tensor: Tensor) -> Self {
        self.add_buffer(name, tensor)
            .unwrap_or_else(|e| panic!("{e}"));
        self
    }

    /// Adds a child module (builder form of [`Module::add_child`]).
    ///
    /// # Panics
    /// If the name is already taken.
    pub fn with_child(mut self, name: &str, child: Module) -> Self {
        self.add_child(name, child)
            .unwrap_or_else(|e| panic!("{e}"));
        self
    }

    /// Sets the forward function.
    pub fn with_forward(
        mut self,
        forward: impl Fn(&Module, &Tensor, bool) -> Tensor + Send + Sync + 'static,
    ) -> Self {
        self.forward = Some(Arc::new(forward));
        self
    }

    /// Declares this module a convolution computed with `config` (stride, padding, dilation,
    /// groups, padding mode), as [`layers::conv2d`](crate::layers::conv2d) does: what lets
    /// [`sparse::sparsify_with_input`](crate::sparse::sparsify_with_input) compute it in
    /// another form.
    pub fn with_conv_config(mut self, config: nn::ConvConfig) -> Self {
        self.conv_config = Some(config);
        self
    }

    /// The convolution settings declared with [`Module::with_conv_config`].
    pub fn conv_config(&self) -> Option<&nn::ConvConfig> {
        self.conv_config.as_ref()
    }

    /// The forward function, if the module has one.
    pub fn forward_fn(&self) -> Option<ForwardFn> {
        self.forward.clone()
    }

    /// Puts `forward` in place of the forward function; returns the one it replaced.
    pub(crate) fn replace_forward_fn(&mut self, forward: Option<ForwardFn>) -> Option<ForwardFn> {
        std::mem::replace(&mut self.forward, forward)
    }

    /// Replaces the forward function (what [`sparse::sparsify`](crate::sparse::sparsify) does to
    /// the layers it converts).
    pub fn set_forward(
        &mut self,
        forward: impl Fn(&Module, &Tensor, bool) -> Tensor + Send + Sync + 'static,
    ) {
        self.forward = Some(Arc::new(forward));
    }

    fn check_free(&self, name: &str) -> Result<()> {
        if self.has_attribute(name) || name.is_empty() || name.contains('.') {
            return Err(PruneError::NameTaken {
                path: name.to_owned(),
                module: Some(self.kind.clone()),
            });
        }
        Ok(())
    }

    /// True when `name` is a parameter, a buffer, a child or a pruned tensor of this module.
    pub fn has_attribute(&self, name: &str) -> bool {
        self.parameters.contains(name)
            || self.buffers.contains(name)
            || self.children.contains(name)
            || self.hooks.contains(name)
    }

    /// Registers a parameter at the end of the parameter list.
    pub fn add_parameter(&mut self, name: &str, tensor: Tensor) -> Result<()> {
        self.check_free(name)?;
        self.parameters.push(name.to_owned(), tensor);
        Ok(())
    }

    /// Registers a buffer at the end of the buffer list.
    pub fn add_buffer(&mut self, name: &str, tensor: Tensor) -> Result<()> {
        self.check_free(name)?;
        self.buffers.push(name.to_owned(), tensor);
        Ok(())
    }

    /// Registers a child module.
    pub fn add_child(&mut self, name: &str, child: Module) -> Result<()> {
        self.check_free(name)?;
        self.children.push(name.to_owned(), child);
        Ok(())
    }

    /// What kind of module this is.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// This module's own parameters with their names, in registration order.
    pub fn parameters(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.parameters.iter()
    }

    /// This module's own buffers with their names, in registration order.
    pub fn buffers(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.buffers.iter()
    }

    /// This module's children with their names, in registration order.
    pub fn children(&self) -> impl Iterator<Item = (&str, &Module)> {
        self.children.iter()
    }

    /// The parameter `name` of this module.
    pub fn parameter(&self, name: &str) -> Option<&Tensor> {
        self.parameters.get(name)
    }

    /// The buffer `name` of this module.
    pub fn buffer(&self, name: &str) -> Option<&Tensor> {
        self.buffers.get(name)
    }

    /// The child `name` of this module.
    pub fn child(&self, name: &str) -> Option<&Module> {
        self.children.get(name)
    }

    /// The child `name` of this module, mutably.
    pub fn child_mut(&mut self, name: &str) -> Option<&mut Module> {
        self.children.get_mut(name)
    }

    /// The sub-module at a dotted `path` (`"features.conv1"`); `""` is this module.
    pub fn submodule(&self, path: &str) -> Result<&Module> {
        if path.is_empty() {
            return Ok(self);
        }
        path.split('.').try_fold(self, |module, name| {
            module
                .child(name)
                .ok_or_else(|| PruneError::UnknownModule(path.to_owned()))
        })
    }

    /// The sub-module at a dotted `path`, mutably.
    pub fn submodule_mut(&mut self, path: &str) -> Result<&mut Module> {
        if path.is_empty() {
            return Ok(self);
        }
        path.split('.').try_fold(self, |module, name| {
            module
                .child_mut(name)
                .ok_or_else(|| PruneError::UnknownModule(path.to_owned()))
        })
    }

    /// The pruning hook (the method history) of tensor `name`, if it is pruned.
    pub fn pruning_hook(&self, name: &str) -> Option<&PruningContainer> {
        self.hooks.get(name)
    }

    /// This module's pruning hooks in the order PyTorch keeps its `_forward_pre_hooks`: a hook
    /// moves to the end each time its tensor is pruned again.
    pub fn pruning_hooks(&self) -> impl Iterator<Item = &PruningContainer> {
        self.hooks.values()
    }

    /// The tensor `name` as the forward pass sees it: `name_orig * name_mask` when it is pruned,
    /// else the parameter or buffer. With gradients on, the product is computed on every call
    /// so that gradients reach `name_orig`; without (inference), it is kept until `name_orig` or
    /// the mask changes (see `product_cache.rs`).
    pub fn try_get(&self, name: &str) -> Result<Tensor> {
        if self.pruning_hook(name).is_some() {
            let (orig, mask) = self.pruned_pair(name)?;
            crate::engine::check_mask_fits(name, orig, mask)?;
            return Ok(self.products.product(name, orig, mask)?);
        }
        self.parameter(name)
            .or_else(|| self.buffer(name))
            .map(Tensor::shallow_clone)
            .ok_or_else(|| crate::reparam::unknown_parameter(name, "", self))
    }

    /// The tensor `name` as [`Module::try_get`] gives it, or `None` when the module has no
    /// tensor of that name: for optional tensors (a bias), pruned or not.
    pub fn try_get_optional(&self, name: &str) -> Result<Option<Tensor>> {
        let present = self.pruning_hook(name).is_some()
            || self.parameters.contains(name)
            || self.buffers.contains(name);
        present.then(|| self.try_get(name)).transpose()
    }

    /// [`Module::try_get_optional`] for forward functions.
    ///
    /// # Panics
    /// If the tensor is pruned and its `_orig` or `_mask` is gone (a bug in the caller).
    pub fn get_optional(&self, name: &str) -> Option<Tensor> {
        self.try_get_optional(name)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Module::try_get`] for forward functions.
    ///
    /// # Panics
    /// If the module has no tensor of that name (a bug in the forward function).
    pub fn get(&self, name: &str) -> Tensor {
        self.try_get(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `name_orig` and `name_mask` of a pruned tensor.
    pub(crate) fn pruned_pair(&self, name: &str) -> Result<(&Tensor, &Tensor)> {
        let not_pruned = || PruneError::NotPruned {
            path: name.to_owned(),
        };
        let orig = self.parameter(&orig_name(name)).ok_or_else(not_pruned)?;
        let mask = self.buffer(&mask_name(name)).ok_or_else(not_pruned)?;
        Ok((orig, mask))
    }

    /// Runs the forward function in evaluation mode.
    ///
    /// # Panics
    /// If the module has no forward function.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        self.forward_t(xs, false)
    }

    /// Runs the forward function, telling it whether this is training.
    ///
    /// # Panics
    /// If the module has no forward function.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let forward = self
            .forward
            .as_ref()
            .unwrap_or_else(|| panic!("module {} has no forward function", self.kind));
        forward(self, xs, train)
    }

    /// Every module of the tree with its dotted path, this one first (as `""`), depth first.
    pub fn named_modules(&self) -> Vec<(String, &Module)> {
        let mut out = Vec::new();
        self.visit("", &mut |prefix, module| {
            out.push((prefix.to_owned(), module))
        });
        out
    }

    /// Calls `f` on every module of the tree with its dotted path, this one first.
    pub(crate) fn try_for_each_mut<E>(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, &mut Module) -> Result<(), E>,
    ) -> Result<(), E> {
        f(prefix, self)?;
        for (name, child) in self.children.iter_mut() {
            child.try_for_each_mut(&join(prefix, name), f)?;
        }
        Ok(())
    }

    /// Calls `f` on every module of the tree with its dotted path, this one (at `prefix`) first,
    /// depth first: [`Module::named_modules`] without collecting the paths.
    pub(crate) fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, &'a Module)) {
        f(prefix, self);
        for (name, child) in self.children.iter() {
            child.visit(&join(prefix, name), f);
        }
    }

    /// Every parameter of the tree with its dotted name (`conv1.weight_orig`), module by module.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.collect(|m| &m.parameters)
    }

    /// Every buffer of the tree with its dotted name (`conv1.weight_mask`), module by module.
    /// Masks are `bool` here; [`Module::state_dict`] converts them to PyTorch's layout.
    pub fn named_buffers(&self) -> Vec<(String, Tensor)> {
        self.collect(|m| &m.buffers)
    }

    /// The dotted names of every parameter and buffer of the tree, without the tensors.
    pub(crate) fn tensor_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.visit("", &mut |prefix, module| {
            let own = module.parameters.iter().chain(module.buffers.iter());
            names.extend(own.map(|(name, _)| join(prefix, name)));
        });
        names
    }

    fn collect(&self, own: fn(&Module) -> &Ordered<Tensor>) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.visit("", &mut |prefix, module| {
            let own = own(module).iter();
            out.extend(own.map(|(name, t)| (join(prefix, name), t.shallow_clone())));
        });
        out
    }

    /// The state_dict with PyTorch's names and order (per module: parameters, then buffers),
    /// detached. Masks are converted to their parameter's dtype, as PyTorch stores them.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.visit("", &mut |prefix, module| {
            for (name, t) in module.parameters.iter() {
                out.push((join(prefix, name), detached(t)));
            }
            for (name, t) in module.buffers.iter() {
                out.push((join(prefix, name), module.buffer_for_export(name, t)));
            }
        });
        out
    }

    /// A buffer as PyTorch would hold it: masks in their parameter's dtype.
    fn buffer_for_export(&self, name: &str, t: &Tensor) -> Tensor {
        let orig = name
            .strip_suffix("_mask")
            .filter(|tensor| self.pruning_hook(tensor).is_some())
            .and_then(|tensor| self.parameter(&orig_name(tensor)));
        match orig {
            Some(orig) => crate::small_loops::bool_as(t, orig.kind())
                .unwrap_or_else(|| t.to_kind(orig.kind())),
            None => detached(t),
        }
    }

    /// True when this module or any sub-module has a pruned tensor.
    pub fn is_pruned(&self) -> bool {
        !self.hooks.is_empty() || self.children.values().any(Module::is_pruned)
    }

    pub(crate) fn parameters_mut(&mut self) -> &mut Ordered<Tensor> {
        self.products.clear();
        &mut self.parameters
    }

    pub(crate) fn buffers_mut(&mut self) -> &mut Ordered<Tensor> {
        self.products.clear();
        &mut self.buffers
    }

    pub(crate) fn hooks_mut(&mut self) -> &mut Ordered<PruningContainer> {
        self.products.clear();
        &mut self.hooks
    }
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |entries: &Ordered<Tensor>| {
            entries
                .iter()
                .map(|(name, t)| format!("{name}: {:?} {:?}", t.kind(), t.size()))
                .collect::<Vec<_>>()
        };
        let hooks: Vec<&PruningContainer> = self.hooks.values().collect();
        let children: Vec<(&str, &Module)> = self.children.iter().collect();
        f.debug_struct(&self.kind)
            .field("parameters", &names(&self.parameters))
            .field("buffers", &names(&self.buffers))
            .field("hooks", &hooks)
            .field("children", &children)
            .finish()
    }
}

/// `forward_t(xs, train)` through tch's trait passes the train flag on to every layer
/// (dropout, batch norm), so a `Module` fits wherever tch takes a `ModuleT`
/// (`xs.apply_t(&model, true)`, `nn::seq_t().add(model)`).
impl tch::nn::ModuleT for Module {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        Module::forward_t(self, xs, train)
    }
}

/// `t` without its autograd history; a tensor that has none is shared as it is (a state_dict
/// of 100,000 tensors would otherwise pay 100,000 libtorch calls for nothing).
fn detached(t: &Tensor) -> Tensor {
    if t.requires_grad() {
        t.detach()
    } else {
        t.shallow_clone()
    }
}

/// `prefix.name`, or `name` at the root.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        [prefix, ".", name].concat()
    }
}

/// Splits a tensor's dotted path into the sub-module's path and the tensor's name:
/// `"features.conv1.weight"` gives `("features.conv1", "weight")`, `"weight"` gives `("", "weight")`.
pub fn split_tensor_path(path: &str) -> (&str, &str) {
    path.rsplit_once('.').unwrap_or(("", path))
}

/// The parameter that holds a pruned tensor's original values.
pub fn orig_name(name: &str) -> String {
    [name, "_orig"].concat()
}

/// The buffer that holds a pruned tensor's mask.
pub fn mask_name(name: &str) -> String {
    [name, "_mask"].concat()
}
