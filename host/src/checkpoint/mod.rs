//! State dicts on disk (safetensors, PyTorch's key names) and loading them into a model.
//!
//! Loading differs from PyTorch in one useful way: a checkpoint holding `P_orig` and `P_mask`
//! loads into a fresh, unpruned model by restoring the reparametrization of `P` (PyTorch refuses
//! those keys as unexpected). Everything is checked before the model is touched, so a failed
//! load leaves it as it was. Files are written to a temporary file and renamed into place, so a
//! reader never sees half a file and a failed write leaves no file behind.
//!
//! Without the model's code, [`module_from_state_dict`] turns a checkpoint into a [`Module`]
//! whose pruned tensors are reparametrized again: the `tchprune` command prunes checkpoints
//! that way.

mod consistency;
mod file;
pub mod hf;
mod load;
pub mod sparse_bitmask;
mod state;

pub use crate::files::write_atomically;
pub use consistency::{check_consistent, WIDTHS_METADATA_KEY};
pub use file::{read, write, Checkpoint};
pub use load::{load_state_dict, LoadReport};
pub use state::{module_from_state_dict, state_dict_with, MaskDtype};

use crate::error::Result;
use crate::module::Module;
use std::path::Path;
use tch::Tensor;

/// Writes `module.state_dict()` to `path` as safetensors, atomically.
pub fn save(module: &Module, path: impl AsRef<Path>) -> Result<()> {
    write(&module.state_dict(), &Default::default(), path)
}

/// Reads the tensors of a safetensors state_dict, sorted by key; weights in compressed-tensors'
/// [`sparse_bitmask`] layout come back dense.
pub fn load(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    Ok(sparse_bitmask::into_dense(read(path)?)?.tensors)
}
