//! PyTorch-exact model pruning for [tch](https://docs.rs/tch) (libtorch) modules.
//!
//! tchprune reproduces `torch.nn.utils.prune`: pruning the tensor `name` of a module moves it to
//! the parameter `name_orig`, adds the buffer `name_mask`, and makes `name` equal to
//! `orig * mask` in every forward pass; pruning it again only touches what is still unpruned and
//! records the method in the tensor's history; [`prune::remove`] makes it permanent. Masks equal
//! PyTorch's for the same tensors for every deterministic method.
//!
//! - [`Module`] is the module tree (tch has none): named parameters, buffers, children, forward.
//! - [`layers`] has prunable Linear and Conv1d/2d/3d layers and the tutorial's LeNet.
//! - [`prune`] has PyTorch's functions; [`PruningMethod`] is the trait to write your own method.
//! - [`Registry`] finds methods by name and builds them from JSON arguments, built-in or loaded
//!   from a [`plugin`].
//! - [`schedule`] prunes gradually while a model trains (polynomial decay, iterative, lottery
//!   tickets), spreading the sparsity over layers uniformly, globally, by LAMP or by ERK.
//! - [`shrink`] removes pruned channels for real (dependency groups traced from the model's own
//!   forward pass, residual connections included): a smaller model with the same outputs.
//! - [`sparse`] runs pruned linear layers sparse at inference (a CPU kernel of its own, 2:4 on
//!   GPUs through cuSPARSELt), where a measurement on the machine finds it faster.
//! - [`checkpoint`] reads and writes safetensors state_dicts; [`plan`] prunes a checkpoint by a
//!   declarative plan without the model's code (what the `tchprune` command runs).
//!
//! ```
//! use tch::{nn, Device, Kind, Tensor};
//! use tchprune::{layers, prune, Norm};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let mut model = layers::lenet(&vs.root());
//! prune::ln_structured(&mut model, "conv1.weight", 0.5, Norm::P(2.0), 0, None)?;
//! let y = model.forward(&Tensor::randn([1, 1, 28, 28], (Kind::Float, Device::Cpu)));
//! assert_eq!(y.size(), [1, 10]);
//! assert!(prune::is_pruned(&model));
//! # Ok::<(), tchprune::PruneError>(())
//! ```

#![warn(missing_docs)]

mod amount;
pub mod calibration;
pub mod checkpoint;
mod container;
mod cpu;
mod engine;
mod error;
pub mod files;
pub mod layers;
pub mod llm;
mod mask_in_place;
pub mod method;
mod module;
pub mod optim;
mod ordered;
mod parallel;
pub mod plan;
pub mod plugin;
mod product_cache;
pub mod prune;
mod registry;
mod reparam;
pub mod schedule;
pub mod shrink;
mod small_loops;
pub mod sparse;
pub mod sparsity;
mod tensor_data;
mod varstore;

pub use amount::Amount;
pub use container::PruningContainer;
pub use error::{PruneError, Result};
pub use method::{LnStructured, Norm, PruningMethod, PruningType, RandomStructured};
pub use module::{mask_name, orig_name, split_tensor_path, ForwardFn, Module};
pub use prune::Prunable;
pub use registry::{BuildFn, MethodEntry, Origin, Registered, Registry};
pub use varstore::VarStorePruner;
