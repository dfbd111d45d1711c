//! What the forward pass of a pruned tensor computes, and what it may keep between calls.
//!
//! PyTorch recomputes `orig * mask` before every forward. With gradients on, so does tchprune
//! (the product must be part of the graph), but it multiplies by the mask in the parameter's
//! dtype, kept from the last call while the mask is unchanged: a float-by-float multiply is
//! several times faster than multiplying by a `bool` mask. Without gradients (inference) the
//! product itself is kept until `orig` or the mask changes, so a pruned model's forward costs
//! what an unpruned one does.
//!
//! "Changes" means a new tensor or an in-place write: every entry is keyed by the tensors'
//! storage and their autograd version counters, which libtorch bumps on every in-place
//! operation (an optimizer step included). The module drops all entries whenever it replaces a
//! parameter, buffer or hook itself.

use std::sync::Mutex;
use tch::Tensor;

/// What an entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    /// `orig * mask`, computed without gradients.
    Product,
    /// The mask in `orig`'s dtype.
    Mask,
}

struct Entry {
    name: String,
    held: Held,
    key: [i64; 5],
    value: Tensor,
    value_version: i64,
}

/// The per-module cache.
#[derive(Default)]
pub(crate) struct ProductCache {
    entries: Mutex<Vec<Entry>>,
}

/// `t`'s autograd version counter, which every in-place operation bumps (-1 if unknown).
pub(crate) fn version(t: &Tensor) -> i64 {
    t.f_internal_version().unwrap_or(-1)
}

/// What an entry depends on: the product on both tensors, the mask in a dtype only on the mask
/// (and the dtype).
fn key(held: Held, orig: &Tensor, mask: &Tensor) -> [i64; 5] {
    let (orig_ptr, orig_version) = match held {
        Held::Product => (orig.data_ptr() as i64, version(orig)),
        Held::Mask => (0, 0),
    };
    [
        orig_ptr,
        orig_version,
        mask.data_ptr() as i64,
        version(mask),
        orig.kind() as i64,
    ]
}

/// Whether libtorch records gradients on this thread (tch has no getter).
fn grad_enabled() -> bool {
    // SAFETY: the setter only flips a thread-local flag and returns the previous value, which
    // is put back at once.
    unsafe {
        let previous = torch_sys::at_grad_set_enabled(1);
        torch_sys::at_grad_set_enabled(previous);
        previous != 0
    }
}

impl ProductCache {
    /// Forgets everything (the module changed a tensor or a hook).
    pub(crate) fn clear(&mut self) {
        self.entries
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    /// `orig * mask` for the forward pass of the pruned tensor `name`.
    pub(crate) fn product(&self, name: &str, orig: &Tensor, mask: &Tensor) -> tch::Result<Tensor> {
        if orig.requires_grad() && grad_enabled() {
            let mask =
                self.get_or_compute(name, Held::Mask, orig, mask, || mask.f_to_kind(orig.kind()))?;
            return orig.f_mul(&mask);
        }
        self.get_or_compute(name, Held::Product, orig, mask, || {
            tch::no_grad(|| orig.f_mul(mask))
        })
    }

    fn get_or_compute(
        &self,
        name: &str,
        held: Held,
        orig: &Tensor,
        mask: &Tensor,
        compute: impl FnOnce() -> tch::Result<Tensor>,
    ) -> tch::Result<Tensor> {
        let key = key(held, orig, mask);
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = entries.iter().find(|e| e.name == name && e.held == held) {
            if entry.key == key && version(&entry.value) == entry.value_version {
                return Ok(entry.value.shallow_clone());
            }
        }
        let value = compute()?;
        entries.retain(|e| !(e.name == name && e.held == held));
        entries.push(Entry {
            name: name.to_owned(),
            held,
            key,
            value_version: version(&value),
            value: value.shallow_clone(),
        });
        Ok(value)
    }
}

impl std::fmt::Debug for ProductCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        write!(f, "ProductCache({entries} entries)")
    }
}
