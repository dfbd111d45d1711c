//! Sparse linear layers, and the measured choice between them and the dense ones.

use super::csr::CsrMatrix;
use crate::error::{PruneError, Result};
use crate::module::{join, Module};
use std::sync::Arc;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// A linear layer `y = x W^T + b` whose weight is stored in a [`CsrMatrix`], for inference on
/// the CPU: no gradients flow through it. Its outputs equal the dense layer's within float
/// rounding (the sums run in another order; a relative 1e-5 of the row's magnitude).
#[derive(Clone, Debug)]
pub struct SparseLinear {
    weight: CsrMatrix,
    bias: Option<Vec<f32>>,
}

impl SparseLinear {
    /// The layer of `weight` (`[out, in]`, zeros where pruned) and `bias` (`[out]`).
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let weight = CsrMatrix::from_dense(&tch::no_grad(|| weight.detach()))?;
        let bias = match bias {
            None => None,
            Some(bias) => {
                if bias.size() != [weight.rows() as i64] {
                    return Err(PruneError::ShapeMismatch {
                        what: "the bias of a sparse linear layer".to_owned(),
                        expected: vec![weight.rows() as i64],
                        actual: bias.size(),
                    });
                }
                let bias = bias
                    .f_detach()?
                    .f_to_device(Device::Cpu)?
                    .f_to_kind(Kind::Float)?;
                Some(Vec::try_from(bias.f_contiguous()?)?)
            }
        };
        Ok(Self { weight, bias })
    }

    /// The weight.
    pub fn weight(&self) -> &CsrMatrix {
        &self.weight
    }

    /// The bias, if the layer has one.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// The layer applied to `xs` (`[..., in]`, a float tensor on the CPU); the result has `xs`'s
    /// dtype. An error says what does not fit.
    pub fn try_forward(&self, xs: &Tensor) -> Result<Tensor> {
        let size = xs.size();
        let features = self.weight.cols() as i64;
        if size.last() != Some(&features) || xs.device() != Device::Cpu || !xs.is_floating_point() {
            return Err(PruneError::ShapeMismatch {
                what: format!(
                    "the input of a sparse linear layer (a float CPU tensor, got {:?} on {:?})",
                    xs.kind(),
                    xs.device()
                ),
                expected: vec![-1, features],
                actual: size,
            });
        }
        let batch: i64 = size[..size.len() - 1].iter().product();
        let input = tch::no_grad(|| -> Result<Tensor> {
            Ok(xs
                .f_to_kind(Kind::Float)?
                .f_reshape([batch, features])?
                .f_contiguous()?)
        })?;
        let mut y = self.weight.multiply(&input)?;
        if let Some(bias) = &self.bias {
            y = y.f_add(&Tensor::from_slice(bias))?;
        }
        let mut shape = size;
        *shape.last_mut().expect("checked") = self.weight.rows() as i64;
        Ok(y.f_reshape(&shape)?.f_to_kind(xs.kind())?)
    }
}

impl nn::Module for SparseLinear {
    /// Panics, as tch's own layers do, on an input of the wrong shape, dtype or device.
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.try_forward(xs).unwrap_or_else(|err| panic!("{err}"))
    }
}

/// How a layer's choice between its dense and sparse forms is measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpeedOptions {
    /// The batch size the layer is timed at.
    pub batch: i64,
    /// Timed calls of each form, alternating (after one untimed call of each); the median
    /// counts.
    pub calls: usize,
    /// The sparse form is chosen only when the dense time is at least this many times the
    /// sparse time (above 1 to stay dense when the two are close).
    pub min_speedup: f64,
}

impl Default for SpeedOptions {
    fn default() -> Self {
        Self {
            batch: 1,
            calls: 7,
            min_speedup: 1.1,
        }
    }
}

/// One layer's measurement and what was chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerChoice {
    /// The weight's key.
    pub weight: String,
    /// `[out, in]`.
    pub shape: [i64; 2],
    /// The fraction of the weight's entries that are zero.
    pub sparsity: f64,
    /// Median seconds of the dense `linear` at the options' batch.
    pub dense_seconds: f64,
    /// Median seconds of the sparse layer at that batch.
    pub sparse_seconds: f64,
    /// Whether the sparse form was chosen.
    pub sparse: bool,
}

impl LayerChoice {
    /// The measurement of the layer `key` whose sparse weight is `weight`, and the choice
    /// `options` make of it.
    pub(super) fn of(
        key: &str,
        weight: &CsrMatrix,
        dense_seconds: f64,
        sparse_seconds: f64,
        options: &SpeedOptions,
    ) -> Self {
        let entries = (weight.rows() * weight.cols()).max(1) as f64;
        Self {
            weight: key.to_owned(),
            shape: [weight.rows() as i64, weight.cols() as i64],
            sparsity: 1.0 - weight.nonzeros() as f64 / entries,
            dense_seconds,
            sparse_seconds,
            sparse: dense_seconds >= options.min_speedup * sparse_seconds,
        }
    }

    /// Dense time over sparse time.
    pub fn speedup(&self) -> f64 {
        self.dense_seconds / self.sparse_seconds
    }
}

/// Median seconds of `a` and of `b` over `calls` calls each, alternating (after one untimed
/// call of each), so that whatever else loads the machine weighs on both alike.
pub(super) fn alternating_medians(
    calls: usize,
    mut a: impl FnMut(),
    mut b: impl FnMut(),
) -> (f64, f64) {
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        start.elapsed().as_secs_f64()
    };
    a();
    b();
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..calls.max(1) {
        ta.push(time(&mut a));
        tb.push(time(&mut b));
    }
    let median = |mut t: Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    (median(ta), median(tb))
}

/// Times the dense and the sparse form of the layer `weight`/`bias` on this machine and
/// chooses: the sparse layer when it is at least `min_speedup` times faster, else `None`.
pub fn measure(
    key: &str,
    weight: &Tensor,
    bias: Option<&Tensor>,
    options: &SpeedOptions,
) -> Result<(Option<SparseLinear>, LayerChoice)> {
    let size = weight.size();
    let sparse = SparseLinear::new(weight, bias).map_err(|err| err.at(key))?;
    let weight = tch::no_grad(|| weight.f_detach()?.f_to_kind(Kind::Float)?.f_contiguous())?;
    let bias = bias
        .map(|b| tch::no_grad(|| b.f_detach()?.f_to_kind(Kind::Float)))
        .transpose()?;
    let xs = Tensor::f_randn([options.batch.max(1), size[1]], (Kind::Float, Device::Cpu))?;
    let (dense_seconds, sparse_seconds) = alternating_medians(
        options.calls,
        || {
            let _ = tch::no_grad(|| xs.linear(&weight, bias.as_ref()));
        },
        || {
            let _ = sparse.try_forward(&xs);
        },
    );
    let choice = LayerChoice::of(key, sparse.weight(), dense_seconds, sparse_seconds, options);
    Ok((choice.sparse.then_some(sparse), choice))
}

/// Makes every pruned linear layer of `module` (kind `"Linear"`, a 2-d float weight on the CPU
/// with zeros) run sparse at inference where [`measure`] finds it faster; returns each layer's
/// measurement, in the module's order. A converted layer keeps its tensors: in training mode,
/// for inputs that need gradients, or once its weight, bias or mask changed, it runs dense.
pub fn sparsify(module: &mut Module, options: &SpeedOptions) -> Result<Vec<LayerChoice>> {
    let paths: Vec<String> = (module.named_modules().into_iter())
        .filter(|(_, m)| m.kind() == "Linear")
        .map(|(path, _)| path)
        .collect();
    let mut choices = Vec::new();
    for path in paths {
        let layer = module.submodule_mut(&path)?;
        let weight = layer.try_get("weight")?;
        if weight.dim() != 2 || weight.device() != Device::Cpu || !weight.is_floating_point() {
            continue;
        }
        let bias = layer.parameter("bias").map(|_| layer.get("bias"));
        let zeros = tch::no_grad(|| weight.f_eq(0)?.f_any()?.f_int64_value(&[]))?;
        if zeros == 0 {
            continue;
        }
        let (sparse, choice) = measure(&join(&path, "weight"), &weight, bias.as_ref(), options)?;
        if let Some(sparse) = sparse {
            let versions = tensor_versions(layer);
            let sparse = Arc::new(sparse);
            layer.set_forward(move |m, xs, train| {
                if train || xs.requires_grad() || tensor_versions(m) != versions {
                    let bias = m.parameter("bias").map(|_| m.get("bias"));
                    return xs.linear(&m.get("weight"), bias.as_ref());
                }
                nn::Module::forward(sparse.as_ref(), xs)
            });
        }
        choices.push(choice);
    }
    Ok(choices)
}

/// The autograd version counters of a layer's stored tensors: they change with every in-place
/// write (an optimizer step, a new mask).
fn tensor_versions(layer: &Module) -> Vec<i64> {
    (layer.parameters().chain(layer.buffers()))
        .map(|(_, t)| t.internal_version())
        .collect()
}

/// A linear layer of a tch model in whichever form [`measure`] chose: what to build a
/// `VarStore` model's inference copy with, layer by layer.
#[derive(Debug)]
pub enum Linear {
    /// tch's dense `linear`.
    Dense {
        /// `[out, in]`.
        weight: Tensor,
        /// `[out]`.
        bias: Option<Tensor>,
    },
    /// The sparse layer.
    Sparse(Box<SparseLinear>),
}

impl Linear {
    /// The layer `prefix` (`prefix.weight`, `prefix.bias`) of `vs`, as the masks left it, in
    /// the faster form on this machine; with the measurement.
    pub fn from_varstore(
        vs: &nn::VarStore,
        prefix: &str,
        options: &SpeedOptions,
    ) -> Result<(Self, LayerChoice)> {
        let (key, weight, bias) = varstore_layer(vs, prefix)?;
        let (sparse, choice) = measure(&key, &weight, bias.as_ref(), options)?;
        let layer = match sparse {
            Some(sparse) => Linear::Sparse(Box::new(sparse)),
            None => Linear::Dense { weight, bias },
        };
        Ok((layer, choice))
    }
}

/// The key of the layer `prefix`'s weight in `vs`, the weight and the bias (if any), detached.
pub(super) fn varstore_layer(
    vs: &nn::VarStore,
    prefix: &str,
) -> Result<(String, Tensor, Option<Tensor>)> {
    let variables = vs.variables();
    let key = join(prefix, "weight");
    let weight = variables
        .get(&key)
        .ok_or_else(|| PruneError::UnknownParameter {
            path: key.clone(),
            hint: " in the VarStore".to_owned(),
        })?
        .detach();
    let bias = variables.get(&join(prefix, "bias")).map(Tensor::detach);
    Ok((key, weight, bias))
}

impl nn::Module for Linear {
    fn forward(&self, xs: &Tensor) -> Tensor {
        match self {
            Linear::Dense { weight, bias } => xs.linear(weight, bias.as_ref()),
            Linear::Sparse(sparse) => nn::Module::forward(sparse.as_ref(), xs),
        }
    }
}
