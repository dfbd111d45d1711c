//! Sparse 2-d convolutions: the input unfolded (im2col) and multiplied by the CSR kernel.

use super::csr::CsrMatrix;
use super::linear::{alternating_medians, varstore_layer, LayerChoice, SpeedOptions};
use crate::error::{PruneError, Result};
use tch::{nn, Device, Kind, Tensor};

/// A 2-d convolution (`groups` 1, zero padding) whose weight `[out, in, kh, kw]` is stored as
/// a [`CsrMatrix`] `[out, in * kh * kw]`: the input is unfolded into its patches (libtorch's
/// `im2col`) and every patch multiplied by the sparse weight. Inference on the CPU; outputs
/// equal `conv2d`'s within float rounding. Unfolding copies each input entry `kh * kw` times,
/// so it pays only at high sparsity: [`Conv2d::from_varstore`] measures.
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
        let rows = tch::no_grad(|| -> Result<Tensor> {
            let patches = xs.f_to_kind(Kind::Float)?.f_im2col(
                self.kernel,
                [self.dilation; 2],
                [self.padding; 2],
                [self.stride; 2],
            )?;
            let positions = patches.size()[2];
            Ok(patches
                .f_transpose(1, 2)?
                .f_reshape([batch * positions, patch])?
                .f_contiguous()?)
        })?;
        let mut y = self.weight.multiply(&rows)?;
        if let Some(bias) = &self.bias {
            y = y.f_add(&Tensor::from_slice(bias))?;
        }
        let out = self.weight.rows() as i64;
        Ok(y.f_reshape([batch, oh * ow, out])?
            .f_permute([0, 2, 1])?
            .f_reshape([batch, out, oh, ow])?
            .f_to_kind(xs.kind())?)
    }
}

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
        let sparse = SparseConv2d::new(&weight, bias.as_ref(), &config).map_err(|e| e.at(&key))?;
        let dense_weight = weight.f_to_kind(Kind::Float)?.f_contiguous()?;
        let dense_bias = bias.as_ref().map(|b| b.to_kind(Kind::Float));
        let xs = Tensor::f_randn(input_shape, (Kind::Float, Device::Cpu))?;
        let (dense_seconds, sparse_seconds) = alternating_medians(
            options.calls,
            || {
                let _ = tch::no_grad(|| {
                    xs.conv2d(
                        &dense_weight,
                        dense_bias.as_ref(),
                        [config.stride; 2],
                        [config.padding; 2],
                        [config.dilation; 2],
                        1,
                    )
                });
            },
            || {
                let _ = sparse.try_forward(&xs);
            },
        );
        let choice = LayerChoice::of(
            &key,
            sparse.weight(),
            dense_seconds,
            sparse_seconds,
            options,
        );
        let layer = if choice.sparse {
            Conv2d::Sparse(Box::new(sparse))
        } else {
            Conv2d::Dense {
                weight,
                bias,
                config,
            }
        };
        Ok((layer, choice))
    }
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
