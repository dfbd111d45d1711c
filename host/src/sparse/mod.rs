//! Sparse inference: pruned layers that do less work, and a measured choice so that no layer
//! gets slower without anyone knowing.
//!
//! A model pruned to 95% still does all of the dense work. On the CPU, [`SparseLinear`] keeps a
//! linear layer's non-zero weights in a [`CsrMatrix`] and multiplies with tchprune's own kernel
//! (it reads a tenth of the dense bytes at 95% and needs no MKL); on NVIDIA GPUs,
//! [`SemiStructuredLinear`] runs 2:4-pruned layers on sparse tensor cores through cuSPARSELt.
//!
//! Whether sparse pays depends on the sparsity, the shape, the batch, the dtype and the
//! machine: on the 2-core machine this was written on, a 2048x2048 layer at 50% runs about 2x
//! faster in CSR at batch 1 in `f32` but ties in bf16 (whose dense product is up to 2x faster),
//! and 1.1x to 1.17x at batch 1024 and 4096; a 16x16 layer at 50% and batch 16,384 runs 2-3x
//! faster dense. [`measure`] times both forms where it runs, in
//! the layer's dtype, and picks the faster; [`sparsify`] does that for every pruned linear layer of a
//! [`Module`](crate::Module) (CSR on the CPU, 2:4 on CUDA), [`sparsify_with_input`] for its
//! convolutions too, and [`Linear::from_varstore`] for a layer of a tch model; each reports
//! what it chose ([`LayerChoice`]). Convolutions ([`SparseConv2d`], [`Conv2d::from_varstore`])
//! sum each output row over its plane's non-zero weights, each reading a run of the shifted
//! input plane, where the output rows are wide, and multiply each output position's patch by
//! the same kernel elsewhere; they pay only at high sparsity.
//!
//! A pruned weight is skipped, not multiplied by: where an input entry is infinite or NaN, the
//! dense layer's outputs that read it through a pruned weight are NaN (`0 * inf`), the sparse
//! layer's are not. Finite inputs give the dense outputs within float rounding.
//!
//! ```
//! use tch::{nn, Device, Kind, Tensor};
//! use tchprune::{prune, sparse, Module};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let mut model = tchprune::layers::linear(&vs.root(), 1024, 1024, Default::default());
//! prune::l1_unstructured(&mut model, "weight", 0.95, None)?;
//! let choices = sparse::sparsify(&mut model, &sparse::SpeedOptions::default())?;
//! println!("sparse: {} ({:.1}x)", choices[0].sparse, choices[0].speedup());
//! let y = tch::no_grad(|| model.forward(&Tensor::randn([1, 1024], (Kind::Float, Device::Cpu))));
//! assert_eq!(y.size(), [1, 1024]);
//! # Ok::<(), tchprune::PruneError>(())
//! ```

mod conv;
mod csr;
mod linear;
mod module;
mod row_order;
mod semi_structured;
mod shifted;

pub use conv::{measure_conv, Conv2d, SparseConv2d};
pub use csr::CsrMatrix;
pub use linear::{measure, LayerChoice, Linear, SparseFormat, SparseLinear, SpeedOptions};
pub use module::{sparsify, sparsify_with_input};
pub use semi_structured::{is_two_of_four, SemiStructuredLinear};
