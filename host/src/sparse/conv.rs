//! Sparse 2-d convolutions: each output row summed in registers over its plane's non-zero
//! weights, each reading a contiguous run of the padded input (wide outputs, see `shifted`),
//! or every output position is a sample of the CSR kernel, its patch
//! gathered from the padded input as a block of samples needs it (small maps). No `im2col`:
//! the unfolded input of a batch is megabytes, written once and read once.

use super::csr::{floats, floats_mut, CsrMatrix, Layout, SampleInputs};
use super::linear::{alternating_medians, dense_on_cpu, varstore_layer, LayerChoice, SpeedOptions};
use super::shifted::{shifted_planes, Shifted, Taps, READ_SLACK};
use crate::error::{PruneError, Result};
use tch::{nn, Device, Kind, Tensor};

/// A 2-d convolution (`groups` 1, zero padding) whose weight `[out, in, kh, kw]` is stored as
/// a [`CsrMatrix`] `[out, in * kh * kw]`. Where the output rows are wide, each output row is
/// summed over its plane's non-zero weights, each adding its multiple of a run of the shifted
/// input plane; on small maps
/// every output position's patch is multiplied by the sparse weight, the patches of 32
/// positions at a time (64 with AVX-512) gathered from the zero-padded input. Inference on the
/// CPU; outputs equal `conv2d`'s within float rounding (summed in `f32`, returned in the input's
/// dtype, as [`SparseLinear`](super::SparseLinear)).
/// Whether it beats libtorch's dense convolution depends on the sparsity and the shapes:
/// [`Conv2d::from_varstore`] and [`sparsify_with_input`](super::sparsify_with_input) measure.
#[derive(Clone, Debug)]
pub struct SparseConv2d {
    weight: CsrMatrix,
    bias: Option<Vec<f32>>,
    kernel: [i64; 2],
    stride: i64,
    padding: i64,
    dilation: i64,
}

fn invalid(reason: String) -> PruneError {
    PruneError::InvalidArgument {
        method: "sparse".to_owned(),
        argument: "convolution".to_owned(),
        reason,
    }
}

impl SparseConv2d {
    /// The convolution of `weight` (`[out, in, kh, kw]`), `bias` (`[out]`) with `config`'s
    /// stride, padding and dilation (`groups` must be 1, padding zeros).
    pub fn new(weight: &Tensor, bias: Option<&Tensor>, config: &nn::ConvConfig) -> Result<Self> {
        let size = weight.size();
        let zeros = matches!(config.padding_mode, nn::PaddingMode::Zeros);
        if size.len() != 4 || config.groups != 1 || !zeros {
            return Err(invalid(format!(
                "a sparse convolution takes a [out, in, kh, kw] weight, groups 1 and zero \
                 padding; got {size:?}, groups {}, {:?}",
                config.groups, config.padding_mode
            )));
        }
        if config.stride < 1 || config.dilation < 1 || config.padding < 0 {
            return Err(invalid(format!(
                "stride and dilation of at least 1 and a padding of at least 0, got stride {}, \
                 dilation {}, padding {}",
                config.stride, config.dilation, config.padding
            )));
        }
        let flat = tch::no_grad(|| weight.f_detach()?.f_reshape([size[0], -1]))?;
        let layer = super::SparseLinear::new(&flat, bias)?;
        Ok(Self {
            weight: layer.weight().clone(),
            bias: layer.bias().map(<[f32]>::to_vec),
            kernel: [size[2], size[3]],
            stride: config.stride,
            padding: config.padding,
            dilation: config.dilation,
        })
    }

    /// The weight, as `[out, in * kh * kw]`.
    pub fn weight(&self) -> &CsrMatrix {
        &self.weight
    }

    /// The convolution of `xs` (`[batch, in, h, w]`, a float CPU tensor); the result has `xs`'s
    /// dtype.
    pub fn try_forward(&self, xs: &Tensor) -> Result<Tensor> {
        let size = xs.size();
        let patch = self.weight.cols() as i64;
        let channels = patch / (self.kernel[0] * self.kernel[1]).max(1);
        if size.len() != 4
            || size[1] != channels
            || xs.device() != Device::Cpu
            || !xs.is_floating_point()
        {
            return Err(PruneError::ShapeMismatch {
                what: format!(
                    "the input of a sparse convolution (a float CPU tensor, got {:?} on {:?})",
                    xs.kind(),
                    xs.device()
                ),
                expected: vec![-1, channels, -1, -1],
                actual: size,
            });
        }
        let (batch, h, w) = (size[0], size[2], size[3]);
        let out_size = |extent: i64, k: i64| {
            (extent + 2 * self.padding - self.dilation * (k - 1) - 1) / self.stride + 1
        };
        let (oh, ow) = (out_size(h, self.kernel[0]), out_size(w, self.kernel[1]));
        let out = self.weight.rows() as i64;
        let y = tch::no_grad(|| -> Result<Tensor> {
            if ow >= DIRECT_MIN_WIDTH && oh > 0 {
                return self.direct(&xs.f_to_kind(Kind::Float)?.f_contiguous()?, [oh, ow]);
            }
            self.by_patches(&xs.f_to_kind(Kind::Float)?, [oh, ow])
        })?;
        Ok(y.f_reshape([batch, out, oh, ow])?.f_to_kind(xs.kind())?)
    }
}

/// A convolution's inputs as the kernel's samples, one per output position, read straight
/// from the zero-padded input: sample `(b, oy, ox)`'s input `(c, ky, kx)` lies at
/// `bases[sample] + taps[column]`.
struct Patches<'a> {
    padded: &'a [f32],
    taps: Vec<usize>,
    bases: Vec<usize>,
}

impl SampleInputs for Patches<'_> {
    fn gather(&self, first: usize, width: usize, columns: std::ops::Range<usize>, xt: &mut [f32]) {
        let bases = &self.bases[first..first + width];
        let taps = &self.taps[columns];
        let runs = runs_of(bases);
        if runs.len() * RUN_COPY_MIN_LENGTH > width {
            for (tap, row) in taps.iter().zip(xt.chunks_exact_mut(width)) {
                let inputs = &self.padded[*tap..];
                for (x, base) in row.iter_mut().zip(bases) {
                    *x = inputs[*base];
                }
            }
            return;
        }
        // Runs of consecutive inputs (an output row's positions at stride 1) are copied eight
        // at a time. A copy that reaches past its run writes positions that a later run, or the
        // next tap's row, writes again; only at the end of `xt` or of the padded input are the
        // inputs copied one at a time.
        let filled = taps.len() * width;
        for (t, tap) in taps.iter().enumerate() {
            let inputs = &self.padded[*tap..];
            for run in &runs {
                let (mut to, mut from) = (t * width + run.offset, run.base);
                let end = run.base + run.length;
                while from < end {
                    if to + 8 > filled || from + 8 > inputs.len() {
                        for (x, input) in xt[to..].iter_mut().zip(&inputs[from..end]) {
                            *x = *input;
                        }
                        break;
                    }
                    xt[to..to + 8].copy_from_slice(&inputs[from..from + 8]);
                    (to, from) = (to + 8, from + 8);
                }
            }
        }
    }
}

/// Below this average length, runs of consecutive inputs are gathered one input at a time.
const RUN_COPY_MIN_LENGTH: usize = 3;

/// Samples `offset..offset + length` of a block, whose inputs are consecutive from `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    offset: usize,
    base: usize,
    length: usize,
}

/// The runs of consecutive values in `bases`, in order.
fn runs_of(bases: &[usize]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (offset, &base) in bases.iter().enumerate() {
        match runs.last_mut() {
            Some(run) if run.base + run.length == base => run.length += 1,
            _ => runs.push(Run {
                offset,
                base,
                length: 1,
            }),
        }
    }
    runs
}

thread_local! {
    /// The zero-padded input of [`SparseConv2d::direct`], kept from call to call: a fresh
    /// buffer of that size would come from the kernel page by page on every call.
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl SparseConv2d {
    /// The convolution of the `f32` `xs` by the sparse kernel, every output position a sample
    /// whose inputs (its patch) are gathered from the zero-padded input as a block needs them.
    fn by_patches(&self, xs: &Tensor, [oh, ow]: [i64; 2]) -> Result<Tensor> {
        let size = xs.size();
        let (batch, channels) = (size[0] as usize, size[1] as usize);
        let p = self.padding;
        let padded = match p {
            0 => xs.f_contiguous()?,
            _ => xs.f_constant_pad_nd([p, p, p, p])?.f_contiguous()?,
        };
        let (hp, wp) = (
            size[2] as usize + 2 * p as usize,
            size[3] as usize + 2 * p as usize,
        );
        let (s, d) = (self.stride as usize, self.dilation as usize);
        let [kh, kw] = self.kernel.map(|k| k as usize);
        let (oh, ow) = (oh.max(0) as usize, ow.max(0) as usize);
        let taps = (0..channels)
            .flat_map(|c| (0..kh).flat_map(move |ky| (0..kw).map(move |kx| (c, ky, kx))))
            .map(|(c, ky, kx)| (c * hp + ky * d) * wp + kx * d)
            .collect();
        let bases = (0..batch)
            .flat_map(|b| (0..oh).flat_map(move |oy| (0..ow).map(move |ox| (b, oy, ox))))
            .map(|(b, oy, ox)| b * channels * hp * wp + oy * s * wp + ox * s)
            .collect();
        let out = self.weight.rows();
        let y = Tensor::f_empty(
            [batch as i64, out as i64, (oh * ow) as i64],
            (Kind::Float, Device::Cpu),
        )?;
        // SAFETY: `padded` is a contiguous `f32` CPU tensor and `y` a fresh one, both alive
        // meanwhile; `y` is only written here.
        let (padded, ys) = unsafe { (floats(&padded), floats_mut(&y)) };
        let patches = Patches {
            padded,
            taps,
            bases,
        };
        let samples = batch * oh * ow;
        let layout = Layout::Planes(oh * ow);
        (self.weight).product_into(&patches, samples, layout, self.bias.as_deref(), ys);
        Ok(y)
    }

    /// The convolution of the contiguous `f32` `xs` computed directly: each non-zero weight
    /// `(o, c, ky, kx)` adds its multiple of input plane `c`, shifted by `(ky, kx)`, to output
    /// plane `o`, an output row at a time (see [`shifted_planes`]). The input is zero-padded
    /// and split into its stride x stride phases (one phase at stride 1), each with a row more
    /// at the bottom, so that every tap reads one contiguous run per output row and no borders
    /// need minding.
    fn direct(&self, xs: &Tensor, [oh, ow]: [i64; 2]) -> Result<Tensor> {
        let size = xs.size();
        let (batch, channels, h, w) = (
            size[0],
            size[1] as usize,
            size[2] as usize,
            size[3] as usize,
        );
        let (p, d, s) = (
            self.padding as usize,
            self.dilation as usize,
            self.stride as usize,
        );
        let [kh, kw] = self.kernel.map(|k| k as usize);
        // The padded sample split into its s x s phases (rows and columns by their remainder
        // modulo the stride), each `hq x wq`: a stride-s tap reads one phase at stride 1.
        let wq = (w + 2 * p).div_ceil(s);
        let hq = (h + 2 * p).div_ceil(s).max(oh as usize + (kh - 1) * d / s) + 1;
        // The phases some tap reads, each given a slot; the others are never stored.
        let mut slots = vec![usize::MAX; s * s];
        let mut used = 0;
        for (ky, kx) in (0..kh).flat_map(|ky| (0..kw).map(move |kx| (ky, kx))) {
            let slot = &mut slots[(ky * d % s) * s + kx * d % s];
            if *slot == usize::MAX {
                *slot = used;
                used += 1;
            }
        }
        let plane = hq * wq;
        let starts: Vec<usize> = (0..self.weight.cols())
            .map(|k| {
                let (c, ky, kx) = (k / (kh * kw), (k / kw) % kh, k % kw);
                let slot = slots[(ky * d % s) * s + kx * d % s];
                (c * used + slot) * plane + (ky * d / s) * wq + kx * d / s
            })
            .collect();
        let out = self.weight.rows();
        let y = Tensor::f_empty([batch, out as i64, oh, ow], (Kind::Float, Device::Cpu))?;
        let geometry = Shifted {
            starts,
            padded_width: wq,
            rows: oh as usize,
            width: ow as usize,
        };
        let taps = Taps::new(&self.weight, &geometry);
        PADDED.with_borrow_mut(|padded| -> Result<()> {
            for sample in 0..batch {
                let (x, y) = (xs.f_select(0, sample)?, y.f_select(0, sample)?);
                // SAFETY: one sample of the contiguous `f32` CPU `xs` and of the fresh,
                // contiguous `y`, alive meanwhile; `y` is written only here.
                let (x, ys) = unsafe { (floats(&x), floats_mut(&y)) };
                padded.clear();
                padded.resize(channels * used * plane + READ_SLACK, 0.0);
                for (c, input) in x.chunks_exact(h * w).enumerate() {
                    for (row, values) in input.chunks_exact(w).enumerate() {
                        let y = p + row;
                        for b in 0..s {
                            let slot = slots[(y % s) * s + b];
                            if slot == usize::MAX {
                                continue;
                            }
                            // The columns `col` with `(p + col) % s == b`, at `(p + col) / s`.
                            let first = (b + s - p % s) % s;
                            if first >= w {
                                continue;
                            }
                            let at = (c * used + slot) * plane + (y / s) * wq + (p + first) / s;
                            if s == 1 {
                                padded[at..at + w].copy_from_slice(values);
                                continue;
                            }
                            let phase_row = values[first..].iter().step_by(s);
                            for (to, &value) in padded[at..].iter_mut().zip(phase_row) {
                                *to = value;
                            }
                        }
                    }
                }
                let (padded, bias) = (&padded[..], self.bias.as_deref());
                self.weight
                    .by_row_ranges((oh * ow) as usize, ys, |start, end, planes| {
                        shifted_planes(&taps, padded, &geometry, bias, start, end, planes)
                    });
            }
            Ok(())
        })?;
        Ok(y)
    }
}

/// Below this output width the product by patches is faster than the direct convolution.
const DIRECT_MIN_WIDTH: i64 = 14;

impl nn::Module for SparseConv2d {
    /// Panics, as tch's own layers do, on an input of the wrong shape, dtype or device.
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.try_forward(xs).unwrap_or_else(|err| panic!("{err}"))
    }
}

/// A 2-d convolution of a tch model in whichever form was faster where it was measured.
#[derive(Debug)]
pub enum Conv2d {
    /// libtorch's `conv2d`.
    Dense {
        /// `[out, in, kh, kw]`.
        weight: Tensor,
        /// `[out]`.
        bias: Option<Tensor>,
        /// Stride, padding, dilation, groups.
        config: nn::ConvConfig,
    },
    /// The sparse convolution.
    Sparse(Box<SparseConv2d>),
}

impl Conv2d {
    /// The convolution `prefix` (`prefix.weight`, `prefix.bias`) of `vs` with `config`, timed
    /// dense and sparse on inputs of `input_shape` (`[batch, in, h, w]`; `options.batch` is not
    /// used) and kept sparse only when that is at least `options.min_speedup` times faster.
    pub fn from_varstore(
        vs: &nn::VarStore,
        prefix: &str,
        config: nn::ConvConfig,
        input_shape: [i64; 4],
        options: &SpeedOptions,
    ) -> Result<(Self, LayerChoice)> {
        let (key, weight, bias) = varstore_layer(vs, prefix)?;
        let (sparse, choice) =
            measure_conv(&key, &weight, bias.as_ref(), config, input_shape, options)?;
        let layer = match sparse {
            Some(sparse) => Conv2d::Sparse(Box::new(sparse)),
            None => Conv2d::Dense {
                weight,
                bias,
                config,
            },
        };
        Ok((layer, choice))
    }
}

/// Times libtorch's `conv2d` and the [`SparseConv2d`] of `weight`/`bias` with `config` on the
/// CPU, on inputs of `input_shape` (`[batch, in, h, w]`; `options.batch` is not used) in the
/// weight's dtype, and
/// chooses: the sparse layer when it is at least `options.min_speedup` times faster, else
/// `None`. `key` names the weight in errors and in the choice.
pub fn measure_conv(
    key: &str,
    weight: &Tensor,
    bias: Option<&Tensor>,
    config: nn::ConvConfig,
    input_shape: [i64; 4],
    options: &SpeedOptions,
) -> Result<(Option<SparseConv2d>, LayerChoice)> {
    let sparse = SparseConv2d::new(weight, bias, &config).map_err(|e| e.at(key))?;
    let channels = weight.size()[1];
    if input_shape[1] != channels {
        return Err(PruneError::ShapeMismatch {
            what: format!("the input shape {key} is measured at"),
            expected: vec![-1, channels, -1, -1],
            actual: input_shape.to_vec(),
        });
    }
    let (kernel, [h, w]) = (sparse.kernel, [input_shape[2], input_shape[3]]);
    let outputs = |extent: i64, k: i64| {
        (extent + 2 * config.padding - config.dilation * (k - 1) - 1).div_euclid(config.stride) + 1
    };
    if h < 1 || w < 1 || outputs(h, kernel[0]) < 1 || outputs(w, kernel[1]) < 1 {
        return Err(invalid(format!(
            "an input of {h}x{w} leaves no output of the {}x{} kernel of {key} (stride {}, \
             padding {}, dilation {})",
            kernel[0], kernel[1], config.stride, config.padding, config.dilation
        )));
    }
    let dtype = weight.kind();
    let (dense_weight, dense_bias) = dense_on_cpu(weight, bias)?;
    let xs = Tensor::f_randn(input_shape, (dtype, Device::Cpu))?;
    let dense = || {
        let (stride, padding, dilation) = (config.stride, config.padding, config.dilation);
        let (weight, bias) = (&dense_weight, dense_bias.as_ref());
        tch::no_grad(|| xs.f_conv2d(weight, bias, [stride; 2], [padding; 2], [dilation; 2], 1))
    };
    let times = alternating_medians(options.calls, || Ok(dense()?), || sparse.try_forward(&xs))
        .map_err(|err| err.at(key))?;
    let choice = LayerChoice::csr(key, sparse.weight(), dtype, times, options);
    Ok((choice.sparse.then_some(sparse), choice))
}

impl nn::Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Tensor {
        match self {
            Conv2d::Dense {
                weight,
                bias,
                config,
            } => xs.conv2d(
                weight,
                bias.as_ref(),
                [config.stride; 2],
                [config.padding; 2],
                [config.dilation; 2],
                config.groups,
            ),
            Conv2d::Sparse(sparse) => nn::Module::forward(sparse.as_ref(), xs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{runs_of, Run};

    #[test]
    fn runs_split_where_the_bases_stop_being_consecutive() {
        let run = |offset, base, length| Run {
            offset,
            base,
            length,
        };
        assert_eq!(runs_of(&[]), []);
        assert_eq!(runs_of(&[4]), [run(0, 4, 1)]);
        assert_eq!(
            runs_of(&[5, 6, 7, 20, 21, 3, 9, 10]),
            [run(0, 5, 3), run(3, 20, 2), run(5, 3, 1), run(6, 9, 2)]
        );
        assert_eq!(
            runs_of(&[0, 2, 4]),
            [run(0, 0, 1), run(1, 2, 1), run(2, 4, 1)]
        );
    }
}
