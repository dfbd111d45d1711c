//! Sparse linear layers, and the measured choice between them and the dense ones.

use super::csr::CsrMatrix;
use super::semi_structured::{measure_two_of_four, SemiStructuredLinear};
use crate::error::{PruneError, Result};
use crate::module::join;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// A linear layer `y = x W^T + b` whose weight is stored in a [`CsrMatrix`], for inference on
/// the CPU: no gradients flow through it. Its outputs equal the dense layer's within float
/// rounding (the sums run in another order; a relative 1e-5 of the row's magnitude). It sums in
/// `f32` and returns the input's dtype: f16 and bf16 outputs are rounded once, not at every
/// step as the dense ones; f64 outputs have `f32`'s precision.
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
        let y = self.weight.multiply(&input, self.bias.as_deref())?;
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

/// The sparse form a layer was measured in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SparseFormat {
    /// [`SparseLinear`] (or [`SparseConv2d`](super::SparseConv2d)): CSR on the CPU.
    Csr,
    /// [`SemiStructuredLinear`](super::SemiStructuredLinear): 2:4 through cuSPARSELt on CUDA.
    SemiStructured,
}

/// One layer's measurement and what was chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerChoice {
    /// The weight's key.
    pub weight: String,
    /// `[out, in]` (a convolution's `in` counts its kernel's entries too).
    pub shape: [i64; 2],
    /// The fraction of the weight's entries that are zero.
    pub sparsity: f64,
    /// The sparse form measured against the dense one.
    pub format: SparseFormat,
    /// The dtype both forms were timed in: the weight's, on inputs of it.
    pub dtype: Kind,
    /// Median seconds of the dense layer at the options' batch.
    pub dense_seconds: f64,
    /// Median seconds of the sparse layer at that batch.
    pub sparse_seconds: f64,
    /// How much the timed calls varied: the larger, of the two forms, of the spread between the
    /// quartiles of its calls relative to its median (0.05: the middle half of the calls within
    /// 5% of the median's size).
    pub spread: f64,
    /// Whether the sparse form was chosen.
    pub sparse: bool,
}

impl LayerChoice {
    /// The measurement `times` (dense as `a`, sparse as `b`) of the layer `key` (`shape`, with
    /// `nonzeros` non-zero weights) in `format` and `dtype`, and the choice `options` make of it.
    pub(super) fn new(
        key: &str,
        shape: [i64; 2],
        nonzeros: i64,
        (format, dtype): (SparseFormat, Kind),
        times: Times,
        options: &SpeedOptions,
    ) -> Self {
        let (dense_seconds, sparse_seconds) = (times.a, times.b);
        let entries = (shape[0] * shape[1]).max(1) as f64;
        Self {
            weight: key.to_owned(),
            shape,
            sparsity: 1.0 - nonzeros as f64 / entries,
            format,
            dtype,
            dense_seconds,
            sparse_seconds,
            spread: times.spread,
            sparse: dense_seconds >= options.min_speedup * sparse_seconds,
        }
    }

    /// The choice for the CSR layer `weight`, timed in `dtype`.
    pub(super) fn csr(
        key: &str,
        weight: &CsrMatrix,
        dtype: Kind,
        times: Times,
        options: &SpeedOptions,
    ) -> Self {
        let shape = [weight.rows() as i64, weight.cols() as i64];
        let nonzeros = weight.nonzeros() as i64;
        let form = (SparseFormat::Csr, dtype);
        Self::new(key, shape, nonzeros, form, times, options)
    }

    /// Dense time over sparse time.
    pub fn speedup(&self) -> f64 {
        self.dense_seconds / self.sparse_seconds
    }
}

/// What [`alternating_medians`] measured.
#[derive(Clone, Copy, Debug)]
pub(super) struct Times {
    /// Median seconds of `a`.
    pub(super) a: f64,
    /// Median seconds of `b`.
    pub(super) b: f64,
    /// The larger relative interquartile spread of the two.
    pub(super) spread: f64,
}

/// Warm-up calls stop when the last [`STEADY_CALLS`] of them are within this factor of each
/// other...
const STEADY_WITHIN: f64 = 1.25;
/// ...over this many calls...
const STEADY_CALLS: usize = 3;
/// ...or when this many seconds of warm-up have passed.
const MAX_WARM_UP_SECONDS: f64 = 0.5;

/// Calls `f` until its time per call has settled (see [`STEADY_WITHIN`]). Why not one untimed
/// call: libtorch's first calls of a shape can be slow for several calls (its kernels' caches,
/// its thread pool waking up). With one, `tchprune speed` timed a 128x1568 layer's dense form
/// at 11.9 ms against 0.046 ms sparse, "257x", five times in a row, where 15 calls and more
/// gave 1.4-1.8x.
fn warm_up<T>(f: &mut impl FnMut() -> Result<T>) -> Result<()> {
    let started = Instant::now();
    let mut recent: Vec<f64> = Vec::new();
    loop {
        let start = Instant::now();
        f()?;
        recent.push(start.elapsed().as_secs_f64());
        let last = &recent[recent.len().saturating_sub(STEADY_CALLS)..];
        let (low, high) = last
            .iter()
            .fold((f64::MAX, 0f64), |(l, h), &t| (l.min(t), h.max(t)));
        let steady = last.len() == STEADY_CALLS && high <= STEADY_WITHIN * low;
        if steady || started.elapsed().as_secs_f64() > MAX_WARM_UP_SECONDS {
            return Ok(());
        }
    }
}

/// Median seconds of `a` and of `b` over `calls` calls each, alternating, so that whatever else
/// loads the machine weighs on both alike; after each is warmed up ([`warm_up`]: the first
/// calls' error, what a form cannot run, is returned instead of a time).
pub(super) fn alternating_medians<A, B>(
    calls: usize,
    mut a: impl FnMut() -> Result<A>,
    mut b: impl FnMut() -> Result<B>,
) -> Result<Times> {
    warm_up(&mut a)?;
    warm_up(&mut b)?;
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..calls.max(1) {
        let start = Instant::now();
        let _ = a();
        ta.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        let _ = b();
        tb.push(start.elapsed().as_secs_f64());
    }
    // The median and the relative spread between the quartiles.
    let summary = |mut t: Vec<f64>| {
        t.sort_by(f64::total_cmp);
        let median = t[t.len() / 2];
        let spread = (t[t.len() * 3 / 4] - t[t.len() / 4]) / median.max(f64::MIN_POSITIVE);
        (median, spread)
    };
    let ((a, spread_a), (b, spread_b)) = (summary(ta), summary(tb));
    Ok(Times {
        a,
        b,
        spread: spread_a.max(spread_b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_slow_first_calls_do_not_count() {
        // The dense side's first 5 calls take 50 ms, then 1 ms; the sparse side always 2 ms.
        let mut dense_calls = 0;
        let sleep = |ms: u64| std::thread::sleep(std::time::Duration::from_millis(ms));
        let times = alternating_medians(
            7,
            || {
                dense_calls += 1;
                sleep(if dense_calls <= 5 { 50 } else { 1 });
                Ok(())
            },
            || {
                sleep(2);
                Ok(())
            },
        )
        .unwrap();
        // Timed cold, the median would be 50 ms (5 of the 7 calls).
        assert!(times.a < 0.02, "dense timed cold: {times:?}");
    }
}

/// Times the dense and the CSR form of the layer `weight`/`bias` on this machine's CPU, both on
/// inputs of the weight's dtype (the dense form in that dtype, as the model runs it), and
/// chooses: the sparse layer when it is at least `min_speedup` times faster, else `None`.
pub fn measure(
    key: &str,
    weight: &Tensor,
    bias: Option<&Tensor>,
    options: &SpeedOptions,
) -> Result<(Option<SparseLinear>, LayerChoice)> {
    let size = weight.size();
    let sparse = SparseLinear::new(weight, bias).map_err(|err| err.at(key))?;
    let dtype = weight.kind();
    let (weight, bias) = dense_on_cpu(weight, bias)?;
    let xs = Tensor::f_randn([options.batch.max(1), size[1]], (dtype, Device::Cpu))?;
    let times = alternating_medians(
        options.calls,
        || Ok(tch::no_grad(|| xs.f_linear(&weight, bias.as_ref()))?),
        || sparse.try_forward(&xs),
    )
    .map_err(|err| err.at(key))?;
    let choice = LayerChoice::csr(key, sparse.weight(), dtype, times, options);
    Ok((choice.sparse.then_some(sparse), choice))
}

/// [`measure`] (CSR) or its 2:4 counterpart: the sparse layer if chosen, and the measurement.
pub(super) fn measure_in(
    format: SparseFormat,
    key: &str,
    weight: &Tensor,
    bias: Option<&Tensor>,
    options: &SpeedOptions,
) -> Result<(Option<Linear>, LayerChoice)> {
    Ok(match format {
        SparseFormat::Csr => {
            let (sparse, choice) = measure(key, weight, bias, options)?;
            (sparse.map(|s| Linear::Sparse(Box::new(s))), choice)
        }
        SparseFormat::SemiStructured => {
            let (sparse, choice) = measure_two_of_four(key, weight, bias, options)?;
            (sparse.map(|s| Linear::SemiStructured(Box::new(s))), choice)
        }
    })
}

/// A layer's `weight` and `bias` as its dense form runs on the CPU: detached, contiguous, in
/// the weight's dtype. The dense and the sparse form are timed in that dtype, on inputs of it,
/// as the model runs them: a bf16 `linear` can be several times faster than a f32 one, a f16
/// convolution many times slower.
pub(super) fn dense_on_cpu(
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>)> {
    let dtype = weight.kind();
    let on_cpu = |t: &Tensor| {
        tch::no_grad(|| {
            t.f_detach()?
                .f_to(Device::Cpu)?
                .f_to_kind(dtype)?
                .f_contiguous()
        })
    };
    Ok((on_cpu(weight)?, bias.map(on_cpu).transpose()?))
}

/// Whether `weight` holds a zero: what makes a layer a candidate for a sparse form.
pub(super) fn has_zeros(weight: &Tensor) -> Result<bool> {
    Ok(tch::no_grad(|| weight.f_eq(0)?.f_any()?.f_int64_value(&[]))? != 0)
}

/// The sparse form `weight` can be measured in on its device, if any: CSR for a float CPU
/// weight with zeros, 2:4 for a fp16/bf16 CUDA weight that is 2:4 and fits cuSPARSELt.
pub(super) fn candidate_format(weight: &Tensor) -> Result<Option<SparseFormat>> {
    let size = weight.size();
    if size.len() != 2 || !weight.is_floating_point() {
        return Ok(None);
    }
    if !has_zeros(weight)? {
        return Ok(None);
    }
    if weight.device() == Device::Cpu {
        return Ok(Some(SparseFormat::Csr));
    }
    let fits = size.iter().all(|&side| side >= 16 && side % 16 == 0);
    let half = matches!(weight.kind(), Kind::Half | Kind::BFloat16);
    Ok(
        (weight.device().is_cuda() && half && fits && super::is_two_of_four(weight)?)
            .then_some(SparseFormat::SemiStructured),
    )
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
    /// The CSR layer (CPU).
    Sparse(Box<SparseLinear>),
    /// The 2:4 layer (cuSPARSELt on CUDA).
    SemiStructured(Box<SemiStructuredLinear>),
}

impl Linear {
    /// The layer `prefix` (`prefix.weight`, `prefix.bias`) of `vs`, as the masks left it, in
    /// the faster form on this machine; with the measurement. On the CPU the sparse form is
    /// CSR; on CUDA it is 2:4 (a fp16/bf16 weight pruned 2:4, sides multiples of 16), and a
    /// CUDA layer that has no sparse form is an error naming it.
    pub fn from_varstore(
        vs: &nn::VarStore,
        prefix: &str,
        options: &SpeedOptions,
    ) -> Result<(Self, LayerChoice)> {
        let (key, weight, bias) = varstore_layer(vs, prefix)?;
        let format = match weight.device() {
            Device::Cpu => SparseFormat::Csr,
            _ => SparseFormat::SemiStructured,
        };
        let (sparse, choice) = measure_in(format, &key, &weight, bias.as_ref(), options)?;
        Ok((sparse.unwrap_or(Linear::Dense { weight, bias }), choice))
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

impl Linear {
    /// The layer applied to `xs`; an error says what does not fit.
    pub fn try_forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Dense { weight, bias } => Ok(xs.f_linear(weight, bias.as_ref())?),
            Linear::Sparse(sparse) => sparse.try_forward(xs),
            Linear::SemiStructured(sparse) => sparse.try_forward(xs),
        }
    }
}

impl nn::Module for Linear {
    /// Panics, as tch's own layers do, on an input of the wrong shape, dtype or device.
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.try_forward(xs).unwrap_or_else(|err| panic!("{err}"))
    }
}
