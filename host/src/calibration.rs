//! Statistics of the inputs of Linear layers, collected during forward passes the application
//! runs: what data-aware pruning methods (Wanda, SparseGPT) need beside the weight.
//!
//! For a layer `y = x W^T` with inputs `x` of `in` features, SparseGPT needs the Gram matrix
//! `X^T X` (`in x in`, the Hessian of the layer's squared reconstruction error up to a factor)
//! and Wanda the column norms `||X_j||_2`. Both are sums over tokens, so they are accumulated
//! batch by batch in f32 on the layer's device and nothing holds the activations themselves.
//!
//! Layers that read the same input (a Llama block's q, k and v projections; gate and up) share
//! one accumulator: [`Calibration::observe`] takes every layer that reads the input at once.
//! For a 4096-wide Llama block that keeps three `X^T X` of 64 MiB and one of 484 MiB (the
//! MLP's down projection) instead of seven.
//!
//! Three ways to feed it:
//! - the [`Llama`](crate::llm::Llama)'s blocks take a `Calibration` in their forward pass;
//! - a [`Module`] tree: [`Calibration::attach`] wraps the forward function of its
//!   Linear layers, [`Calibration::detach`] restores them;
//! - a tch model of your own: one line per layer type, [`Calibration::observe`] in its forward
//!   (or build its Linear layers with [`Calibration::linear`], which does it for you).

use crate::error::{PruneError, Result};
use crate::module::{ForwardFn, Module};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tch::{nn, Kind, Tensor};

/// Which statistics to accumulate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// `X^T X` (`in x in`): SparseGPT.
    pub gram: bool,
    /// The sums of squares of each input feature: Wanda (always cheap, so always kept).
    pub squared_norms: bool,
}

impl Needs {
    /// Nothing: a method that looks at the weight only.
    pub const NONE: Needs = Needs {
        gram: false,
        squared_norms: false,
    };
    /// The column norms only.
    pub const NORMS: Needs = Needs {
        gram: false,
        squared_norms: true,
    };
    /// The Gram matrix and the norms.
    pub const GRAM: Needs = Needs {
        gram: true,
        squared_norms: true,
    };

    /// What either needs.
    pub fn union(self, other: Needs) -> Needs {
        Needs {
            gram: self.gram || other.gram,
            squared_norms: self.squared_norms || other.squared_norms,
        }
    }

    /// True when nothing is needed.
    pub fn is_none(self) -> bool {
        self == Needs::NONE
    }
}

/// What was seen of one Linear layer's inputs.
#[derive(Debug)]
pub struct LayerStatistics {
    /// Input features (`in`).
    pub features: i64,
    /// Rows of input seen (tokens, summed over batches).
    pub tokens: i64,
    /// Sequences seen (the first dimension of 3-d inputs; 1 per 2-d input).
    pub samples: i64,
    /// `sum over tokens of x_j^2`, `[in]`, f32.
    pub squared_norms: Tensor,
    /// `sum over tokens of x x^T`, `[in, in]`, f32, when it was asked for.
    pub gram: Option<Tensor>,
}

impl LayerStatistics {
    /// Empty statistics for `features` inputs on `device`.
    pub fn new(features: i64, needs: Needs, device: tch::Device) -> Result<Self> {
        let gram = match needs.gram {
            true => Some(Tensor::f_zeros(
                [features, features],
                (Kind::Float, device),
            )?),
            false => None,
        };
        Ok(Self {
            features,
            tokens: 0,
            samples: 0,
            squared_norms: Tensor::f_zeros([features], (Kind::Float, device))?,
            gram,
        })
    }

    /// Adds a batch of inputs `x` (`[..., in]`).
    pub fn add(&mut self, x: &Tensor) -> Result<()> {
        let size = x.size();
        let features = *size.last().unwrap_or(&0);
        if features != self.features {
            return Err(PruneError::ShapeMismatch {
                what: "calibration inputs".to_owned(),
                expected: vec![self.features],
                actual: vec![features],
            });
        }
        tch::no_grad(|| -> Result<()> {
            let rows = x.f_reshape([-1, features])?.f_to_kind(Kind::Float)?;
            let rows = match rows.device() == self.squared_norms.device() {
                true => rows,
                false => rows.f_to_device(self.squared_norms.device())?,
            };
            let _ = self
                .squared_norms
                .f_add_(&rows.f_square()?.f_sum_dim_intlist(0, false, Kind::Float)?)?;
            if let Some(gram) = &mut self.gram {
                let _ = gram.f_addmm_(&rows.f_tr()?, &rows)?;
            }
            self.tokens += rows.size()[0];
            self.samples += if size.len() >= 3 { size[0] } else { 1 };
            Ok(())
        })
    }

    /// `||X_j||_2` for each input feature, `[in]`.
    pub fn column_norms(&self) -> Result<Tensor> {
        Ok(self.squared_norms.f_sqrt()?)
    }

    /// A copy sharing the tensors.
    pub fn shallow_clone(&self) -> Self {
        Self {
            features: self.features,
            tokens: self.tokens,
            samples: self.samples,
            squared_norms: self.squared_norms.shallow_clone(),
            gram: self.gram.as_ref().map(Tensor::shallow_clone),
        }
    }
}

#[derive(Default)]
struct Collected {
    needs: Needs,
    /// One accumulator per distinct input.
    inputs: Vec<LayerStatistics>,
    /// Each layer's accumulator.
    by_layer: HashMap<String, usize>,
    /// The first error met inside a forward pass (which cannot return it).
    error: Option<PruneError>,
    /// Only these layers are recorded, when set.
    only: Option<std::collections::HashSet<String>>,
    /// The forward functions [`Calibration::attach`] replaced, by module path.
    attached: Vec<(String, Option<ForwardFn>)>,
}

/// Collects [`LayerStatistics`] for Linear layers, by the dotted path of their weight. Clones
/// share the same statistics, so a clone can live inside a model's forward function.
///
/// ```
/// use tch::{nn, nn::Module as _, Device, Kind, Tensor};
/// use tchprune::calibration::{Calibration, Needs};
///
/// let vs = nn::VarStore::new(Device::Cpu);
/// let calibration = Calibration::new(Needs::GRAM);
/// // The one-line change: the layer reports its inputs.
/// let fc = calibration.linear(&(vs.root() / "fc"), 8, 4, Default::default());
/// let _ = fc.forward(&Tensor::randn([16, 8], (Kind::Float, Device::Cpu)));
/// let stats = calibration.statistics("fc.weight")?.unwrap();
/// assert_eq!((stats.tokens, stats.gram.unwrap().size()), (16, vec![8, 8]));
/// # Ok::<(), tchprune::PruneError>(())
/// ```
#[derive(Clone, Default)]
pub struct Calibration {
    collected: Arc<Mutex<Collected>>,
}

impl std::fmt::Debug for Calibration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.lock();
        f.debug_struct("Calibration")
            .field("needs", &c.needs)
            .field("layers", &c.by_layer.len())
            .finish()
    }
}

impl Calibration {
    /// A collector of `needs` for every layer it sees.
    pub fn new(needs: Needs) -> Self {
        let calibration = Self::default();
        calibration.lock().needs = needs;
        calibration
    }

    fn lock(&self) -> MutexGuard<'_, Collected> {
        self.collected.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records only the layers in `weights` from now on (every layer when `None`).
    pub fn only(&self, weights: Option<&[String]>) {
        self.lock().only = weights.map(|w| w.iter().cloned().collect());
    }

    /// Records `x`, the input that every layer of `weights` (dotted paths of their weights)
    /// reads. Called inside forward passes, so it cannot fail: an error is kept and returned by
    /// [`Calibration::statistics`] and [`Calibration::check`].
    pub fn observe(&self, weights: &[&str], x: &Tensor) {
        let mut c = self.lock();
        if c.error.is_some() || c.needs.is_none() {
            return;
        }
        let weights: Vec<&str> = match &c.only {
            Some(only) => weights
                .iter()
                .copied()
                .filter(|w| only.contains(*w))
                .collect(),
            None => weights.to_vec(),
        };
        let Some(first) = weights.first() else {
            return;
        };
        let index = match c.by_layer.get(*first) {
            Some(&index) => index,
            None => {
                let features = *x.size().last().unwrap_or(&0);
                let needs = c.needs;
                match LayerStatistics::new(features, needs, x.device()) {
                    Ok(stats) => {
                        c.inputs.push(stats);
                        c.inputs.len() - 1
                    }
                    Err(e) => {
                        c.error = Some(e.at(first));
                        return;
                    }
                }
            }
        };
        for w in &weights {
            if !c.by_layer.contains_key(*w) {
                c.by_layer.insert((*w).to_owned(), index);
            }
        }
        if let Err(e) = c.inputs[index].add(x) {
            c.error = Some(e.at(first));
        }
    }

    /// The first error met while observing, if any.
    pub fn check(&self) -> Result<()> {
        match self.lock().error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The statistics of the layer whose weight is `weight`, if it was seen (sharing the
    /// tensors with the collector).
    pub fn statistics(&self, weight: &str) -> Result<Option<LayerStatistics>> {
        self.check()?;
        let c = self.lock();
        Ok(c.by_layer
            .get(weight)
            .map(|&index| c.inputs[index].shallow_clone()))
    }

    /// The weights seen so far, sorted.
    pub fn layers(&self) -> Vec<String> {
        let mut layers: Vec<String> = self.lock().by_layer.keys().cloned().collect();
        layers.sort();
        layers
    }

    /// Forgets every statistic (the memory goes back), keeping what is collected.
    pub fn clear(&self) {
        let mut c = self.lock();
        c.inputs.clear();
        c.by_layer.clear();
        c.error = None;
    }

    /// A tch Linear layer (`nn::linear`) that reports its inputs to this collector under
    /// `"<path>.weight"`.
    pub fn linear(
        &self,
        path: &nn::Path,
        in_dim: i64,
        out_dim: i64,
        config: nn::LinearConfig,
    ) -> ObservedLinear {
        ObservedLinear {
            weight_path: format!("{}.weight", path.components().collect::<Vec<_>>().join(".")),
            inner: nn::linear(path, in_dim, out_dim, config),
            calibration: self.clone(),
        }
    }

    /// Makes every Linear layer of `module` (children of kind `"Linear"`) report its inputs:
    /// their forward functions are wrapped until [`Calibration::detach`].
    pub fn attach(&self, module: &mut Module) -> Result<()> {
        let paths: Vec<String> = module
            .named_modules()
            .into_iter()
            .filter(|(_, m)| m.kind() == "Linear")
            .map(|(path, _)| path)
            .collect();
        for path in paths {
            let layer = module.submodule_mut(&path)?;
            let Some(inner) = layer.forward_fn() else {
                continue;
            };
            let weight = match path.is_empty() {
                true => "weight".to_owned(),
                false => format!("{path}.weight"),
            };
            let calibration = self.clone();
            let forward = inner.clone();
            let replaced = layer.replace_forward_fn(Some(Arc::new(
                move |m: &Module, x: &Tensor, train: bool| {
                    calibration.observe(&[&weight], x);
                    forward(m, x, train)
                },
            )));
            self.lock().attached.push((path, replaced));
        }
        Ok(())
    }

    /// Restores the forward functions [`Calibration::attach`] wrapped in `module`.
    pub fn detach(&self, module: &mut Module) -> Result<()> {
        let attached = std::mem::take(&mut self.lock().attached);
        for (path, forward) in attached {
            module.submodule_mut(&path)?.replace_forward_fn(forward);
        }
        Ok(())
    }
}

/// A tch `nn::Linear` that reports its inputs to a [`Calibration`] (see
/// [`Calibration::linear`]).
#[derive(Debug)]
pub struct ObservedLinear {
    /// The layer.
    pub inner: nn::Linear,
    weight_path: String,
    calibration: Calibration,
}

impl nn::Module for ObservedLinear {
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.calibration.observe(&[&self.weight_path], xs);
        self.inner.forward(xs)
    }
}
