//! 2:4 semi-structured sparsity on NVIDIA GPUs through cuSPARSELt.

use crate::error::{PruneError, Result};
use tch::{Kind, Tensor};

/// A linear layer whose weight is pruned 2:4 along its input features (at most 2 non-zeros in
/// every 4: what the `nm` plugin's default gives), compressed for cuSPARSELt and multiplied by
/// its sparse tensor cores (`torch._cslt_compress` and `torch._cslt_sparse_mm`, as PyTorch's
/// `to_sparse_semi_structured` does). fp16 or bf16, on CUDA only.
#[derive(Debug)]
pub struct SemiStructuredLinear {
    compressed: Tensor,
    bias: Option<Tensor>,
    in_features: i64,
}

impl SemiStructuredLinear {
    /// Whether this process can run the layer (a CUDA device).
    pub fn is_available() -> bool {
        tch::Cuda::is_available()
    }

    /// Compresses `weight` (`[out, in]`, fp16/bf16 on CUDA, 2:4 along `in`); `bias` is `[out]`.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let invalid = |reason: String| PruneError::InvalidArgument {
            method: "semi_structured".to_owned(),
            argument: "weight".to_owned(),
            reason,
        };
        let size = weight.size();
        if size.len() != 2 || size[1] % 4 != 0 {
            return Err(invalid(format!(
                "a [out, in] weight with in a multiple of 4, got {size:?}"
            )));
        }
        if !matches!(weight.kind(), Kind::Half | Kind::BFloat16) || !weight.device().is_cuda() {
            return Err(invalid(format!(
                "cuSPARSELt takes fp16 or bf16 on CUDA, got {:?} on {:?}",
                weight.kind(),
                weight.device()
            )));
        }
        let weight = weight.f_detach()?.f_contiguous()?;
        let per_group = weight
            .f_reshape([size[0], size[1] / 4, 4])?
            .f_ne(0)?
            .f_sum_dim_intlist(-1, false, Kind::Int64)?;
        if per_group.f_gt(2)?.f_any()?.f_int64_value(&[])? != 0 {
            return Err(invalid(
                "not 2:4: some group of 4 input features has more than 2 non-zeros".to_owned(),
            ));
        }
        Ok(Self {
            compressed: weight.f_internal_cslt_compress()?,
            bias: bias.map(Tensor::detach),
            in_features: size[1],
        })
    }

    /// `xs W^T + b` for `xs` of `[..., in]` on the weight's device and dtype.
    pub fn try_forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut shape = xs.size();
        let rows = xs.f_reshape([-1, self.in_features])?;
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
        let out = out.f_tr()?;
        *shape.last_mut().expect("an input with features") = out.size()[1];
        Ok(out.f_reshape(&shape)?)
    }
}

impl tch::nn::Module for SemiStructuredLinear {
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.try_forward(xs).unwrap_or_else(|err| panic!("{err}"))
    }
}
