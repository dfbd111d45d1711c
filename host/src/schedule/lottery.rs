//! Lottery tickets with rewinding (Frankle & Carbin 2019; Frankle et al. 2020).

use crate::engine::check_values;
use crate::error::Result;
use crate::prune::Prunable;
use tch::Tensor;

/// The values of a model's tensors at one training step, to rewind the survivors of later
/// pruning to.
///
/// Record at step `k` (`k = 0`: the original lottery ticket; a few hundred steps in: rewinding,
/// which holds up better on larger models), train, prune a fraction, [`rewind`](Self::rewind),
/// and repeat: the masks persist across rounds (each round prunes on top of the last), and
/// after rewinding every unpruned entry holds exactly its step-`k` value.
///
/// ```
/// use tch::{nn, Device};
/// use tchprune::{layers, prune, schedule::LotteryTicket};
///
/// let vs = nn::VarStore::new(Device::Cpu);
/// let mut model = layers::lenet(&vs.root());
/// let ticket = LotteryTicket::record(&model)?;
/// // ... train ...
/// prune::l1_unstructured(&mut model, "fc1.weight", 0.2, None)?;
/// ticket.rewind(&mut model)?;
/// # Ok::<(), tchprune::PruneError>(())
/// ```
#[derive(Debug)]
pub struct LotteryTicket {
    values: Vec<(String, Tensor)>,
}

impl LotteryTicket {
    /// Copies every tensor of `target` (pruned or not; the original values where pruned).
    pub fn record(target: &impl Prunable) -> Result<Self> {
        let paths = target.tensor_paths();
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        Self::record_tensors(target, &paths)
    }

    /// Copies the tensors at `paths` only.
    pub fn record_tensors(target: &impl Prunable, paths: &[&str]) -> Result<Self> {
        let values = tch::no_grad(|| {
            paths
                .iter()
                .map(|path| {
                    let (stored, _) = target.stored(path)?;
                    Ok(((*path).to_owned(), stored.f_detach_copy()?))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(Self { values })
    }

    /// The recorded paths, in recording order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.values.iter().map(|(path, _)| path.as_str())
    }

    /// The recorded value of the tensor at `path`.
    pub fn value(&self, path: &str) -> Option<&Tensor> {
        self.values.iter().find(|(p, _)| p == path).map(|(_, v)| v)
    }

    /// Writes the recorded values back into `target`: each unpruned entry gets its recorded
    /// value, pruned entries stay pruned. Everything is checked before anything is written. An
    /// optimizer's state (Adam's moments) belongs to the training before rewinding: make a new
    /// optimizer after it.
    pub fn rewind(&self, target: &mut impl Prunable) -> Result<()> {
        for (path, value) in &self.values {
            check_values(target, path, value)?;
        }
        for (path, value) in &self.values {
            target.overwrite(path, value)?;
        }
        Ok(())
    }
}
