//! 2:4 semi-structured sparsity on NVIDIA GPUs through cuSPARSELt.
//!
//! The shape rules are PyTorch's for its cuSPARSELt backend
//! (`SparseSemiStructuredTensorCUSPARSELT`): fp16/bf16 weights whose both sides are multiples
//! of 16, inputs padded to a multiple of 8 rows.

use super::linear::{alternating_medians, LayerChoice, SparseFormat, SpeedOptions};
use crate::error::{PruneError, Result};
use tch::{Device, Kind, Tensor};

/// cuSPARSELt's smallest tile of a fp16/bf16 sparse operand, rows and columns.
const SPARSE_TILE: i64 = 16;
/// cuSPARSELt's row multiple for the dense operand.
const DENSE_ROWS: i64 = 8;

/// Whether every group of 4 consecutive entries along the last dimension of `weight` holds at
/// most 2 non-zeros (what the `nm` plugin's default, 2:4, leaves). Any device and dtype; false
/// when the last dimension is not a multiple of 4.
pub fn is_two_of_four(weight: &Tensor) -> Result<bool> {
    let size = weight.size();
    let Some(&last) = size.last() else {
        return Ok(false);
    };
    if last % 4 != 0 || weight.numel() == 0 {
        return Ok(false);
    }
    let per_group = tch::no_grad(|| {
        weight
            .f_detach()?
            .f_ne(0)?
            .f_reshape([-1, 4])?
            .f_sum_dim_intlist(-1, false, Kind::Int64)
    })?;
    Ok(per_group.f_gt(2)?.f_any()?.f_int64_value(&[])? == 0)
}

/// A linear layer whose weight is pruned 2:4 along its input features (at most 2 non-zeros in
/// every 4: what the `nm` plugin's default gives), compressed for cuSPARSELt and multiplied by
/// its sparse tensor cores (`torch._cslt_compress` and `torch._cslt_sparse_mm`, as PyTorch's
/// `to_sparse_semi_structured` does). fp16 or bf16 on CUDA; `out` and `in` multiples of 16.
#[derive(Debug)]
pub struct SemiStructuredLinear {
    compressed: Tensor,
    bias: Option<Tensor>,
    shape: [i64; 2],
    kind: Kind,
    device: Device,
}

fn invalid(reason: String) -> PruneError {
    PruneError::InvalidArgument {
        method: "semi_structured".to_owned(),
        argument: "weight".to_owned(),
        reason,
    }
}

impl SemiStructuredLinear {
    /// Whether this process can run the layer (a CUDA device).
    pub fn is_available() -> bool {
        tch::Cuda::is_available()
    }

    /// Compresses `weight` (`[out, in]`, fp16/bf16 on CUDA, 2:4 along `in`); `bias` is `[out]`
    /// (taken to the weight's dtype and device).
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let size = weight.size();
        let fits = |side: i64| side >= SPARSE_TILE && side % SPARSE_TILE == 0;
        if size.len() != 2 || !fits(size[0]) || !fits(size[1]) {
            return Err(invalid(format!(
                "cuSPARSELt takes a [out, in] weight with out and in multiples of \
                 {SPARSE_TILE}, got {size:?}"
            )));
        }
        if !matches!(weight.kind(), Kind::Half | Kind::BFloat16) || !weight.device().is_cuda() {
            return Err(invalid(format!(
                "cuSPARSELt takes fp16 or bf16 on CUDA, got {:?} on {:?}",
                weight.kind(),
                weight.device()
            )));
        }
        if !is_two_of_four(weight)? {
            return Err(invalid(
                "not 2:4: some group of 4 input features has more than 2 non-zeros".to_owned(),
            ));
        }
        let bias = match bias {
            Some(bias) if bias.size() != [size[0]] => {
                return Err(PruneError::ShapeMismatch {
                    what: "the bias of a 2:4 linear layer".to_owned(),
                    expected: vec![size[0]],
                    actual: bias.size(),
                })
            }
            Some(bias) => Some(tch::no_grad(|| {
                bias.f_detach()?
                    .f_to_device(weight.device())?
                    .f_to_kind(weight.kind())
            })?),
            None => None,
        };
        let compressed = tch::no_grad(|| {
            weight
                .f_detach()?
                .f_contiguous()?
                .f_internal_cslt_compress()
        })?;
        Ok(Self {
            compressed,
            bias,
            shape: [size[0], size[1]],
            kind: weight.kind(),
            device: weight.device(),
        })
    }

    /// `[out, in]`.
    pub fn shape(&self) -> [i64; 2] {
        self.shape
    }

    /// `xs W^T + b` for `xs` of `[..., in]` on the weight's device and dtype.
    pub fn try_forward(&self, xs: &Tensor) -> Result<Tensor> {
        let [out_features, in_features] = self.shape;
        let mut shape = xs.size();
        if shape.last() != Some(&in_features)
            || xs.kind() != self.kind
            || xs.device() != self.device
        {
            return Err(PruneError::ShapeMismatch {
                what: format!(
                    "the input of a 2:4 linear layer ({:?} on {:?}, got {:?} on {:?})",
                    self.kind,
                    self.device,
                    xs.kind(),
                    xs.device()
                ),
                expected: vec![-1, in_features],
                actual: shape,
            });
        }
        let out = tch::no_grad(|| -> Result<Tensor> {
            let rows = xs.f_reshape([-1, in_features])?;
            let count = rows.size()[0];
            let padding = (DENSE_ROWS - count % DENSE_ROWS) % DENSE_ROWS;
            let rows = match padding {
                0 => rows,
                _ => rows.f_constant_pad_nd([0, 0, 0, padding])?,
            };
            let out = Tensor::f_internal_cslt_sparse_mm(
                &self.compressed,
                &rows.f_tr()?,
                self.bias.as_ref(),
                None::<&Tensor>,
                None,
                false,
                0,
                1,
                -1,
            )?;
            Ok(out.f_tr()?.f_narrow(0, 0, count)?)
        })?;
        *shape.last_mut().expect("checked") = out_features;
        Ok(out.f_reshape(&shape)?)
    }
}

impl tch::nn::Module for SemiStructuredLinear {
    /// Panics, as tch's own layers do, on an input of the wrong shape, dtype or device.
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.try_forward(xs).unwrap_or_else(|err| panic!("{err}"))
    }
}

/// Times the dense `linear` and the 2:4 layer of `weight`/`bias` (on its GPU, synchronized)
/// and chooses, as [`measure`](super::measure) does on the CPU.
pub(super) fn measure_two_of_four(
    key: &str,
    weight: &Tensor,
    bias: Option<&Tensor>,
    options: &SpeedOptions,
) -> Result<(Option<SemiStructuredLinear>, LayerChoice)> {
    let layer = SemiStructuredLinear::new(weight, bias).map_err(|err| err.at(key))?;
    let weight = tch::no_grad(|| weight.f_detach()?.f_contiguous())?;
    let bias = layer.bias.as_ref().map(Tensor::shallow_clone);
    let xs = Tensor::f_randn(
        [options.batch.max(1), layer.shape[1]],
        (layer.kind, layer.device),
    )?;
    let synchronize = || {
        if let Device::Cuda(index) = layer.device {
            tch::Cuda::synchronize(index as i64);
        }
    };
    let times = alternating_medians(
        options.calls,
        || {
            let ys = tch::no_grad(|| xs.f_linear(&weight, bias.as_ref()))?;
            synchronize();
            Ok(ys)
        },
        || {
            let ys = layer.try_forward(&xs)?;
            synchronize();
            Ok(ys)
        },
    )
    .map_err(|err| err.at(key))?;
    let nonzeros = tch::no_grad(|| weight.f_count_nonzero(None::<i64>))?.f_int64_value(&[])?;
    let choice = LayerChoice::new(
        key,
        layer.shape,
        nonzeros,
        (SparseFormat::SemiStructured, layer.kind),
        times,
        options,
    );
    Ok((choice.sparse.then_some(layer), choice))
}
