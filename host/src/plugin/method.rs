//! A plugin's method as a [`PruningMethod`]: tensors lent as views, the mask written into
//! host memory, and every answer checked before the host uses it.

use crate::calibration::{LayerStatistics, Needs};
use crate::error::{PruneError, Result};
use crate::method::{describe, Calibrated, PruningMethod, PruningType};
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};
use tchprune_plugin_api as api;
use tchprune_plugin_api::{MaskBuffer, MethodBox, PluginModuleRef, TensorView};

/// A method built by a plugin.
pub struct PluginMethod {
    method: MethodBox,
    plugin: Arc<PathBuf>,
    name: String,
    pruning_type: PruningType,
    arguments: Value,
}

impl PluginMethod {
    /// Builds `name` from `args` with the plugin's own builder.
    pub(super) fn build(
        module: PluginModuleRef,
        plugin: &Arc<PathBuf>,
        name: &str,
        args: &Value,
    ) -> Result<Arc<dyn PruningMethod>> {
        let failed = |reason: String| PruneError::Plugin {
            plugin: plugin.to_path_buf(),
            method: name.to_owned(),
            reason,
        };
        let json = args.to_string();
        let method = (module.build())(name.into(), json.as_str().into())
            .into_result()
            .map_err(|reason| {
                // The author's layer names the method first; the error names it already.
                let reason = reason.as_str();
                let prefix = format!("{name}: ");
                failed(reason.strip_prefix(&prefix).unwrap_or(reason).to_owned())
            })?;
        let pruning_type = match method.pruning_type() {
            api::PruningType::Unstructured => PruningType::Unstructured,
            api::PruningType::Structured { dim } => PruningType::Structured { dim },
            api::PruningType::Global => PruningType::Global,
        };
        let arguments = serde_json::from_str(method.arguments_json().as_str())
            .map_err(|err| failed(format!("its arguments are not valid JSON: {err}")))?;
        Ok(Arc::new(Self {
            method,
            plugin: Arc::clone(plugin),
            name: name.to_owned(),
            pruning_type,
            arguments,
        }))
    }

    fn error(&self, reason: impl Into<String>) -> PruneError {
        PruneError::Plugin {
            plugin: self.plugin.to_path_buf(),
            method: self.name.clone(),
            reason: reason.into(),
        }
    }
}

impl fmt::Debug for PluginMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginMethod")
            .field("name", &self.name)
            .field("plugin", &self.plugin)
            .field("arguments", &self.arguments)
            .finish()
    }
}

impl PruningMethod for PluginMethod {
    fn name(&self) -> &str {
        &self.name
    }

    fn pruning_type(&self) -> PruningType {
        self.pruning_type
    }

    fn compute_mask(&self, t: &Tensor, default_mask: &Tensor) -> Result<Tensor> {
        let Lent {
            tensor,
            dtype,
            default_mask,
            mask,
        } = self.lend(t, default_mask)?;
        let (shape, strides) = (tensor.size(), tensor.stride());
        let mask_strides = default_mask.stride();
        let numel = tensor.numel();
        // SAFETY: contiguous CPU tensors of `numel` entries of `dtype` (u8 for the masks), alive
        // until the call returns; the plugin writes only `mask`, which nothing else references.
        let reported = unsafe {
            let tensor_view = TensorView::from_raw_parts(
                tensor.data_ptr(),
                dtype,
                &shape,
                &strides,
                api::Device::Cpu,
            );
            let default_view = TensorView::from_raw_parts(
                default_mask.data_ptr(),
                api::DType::U8,
                &shape,
                &mask_strides,
                api::Device::Cpu,
            );
            let mask_data: &mut [u8] = match numel {
                0 => &mut [],
                _ => std::slice::from_raw_parts_mut(mask.data_ptr().cast::<u8>(), numel),
            };
            self.method.compute_mask(
                tensor_view,
                default_view,
                MaskBuffer::new(mask_data, &shape),
            )
        }
        .into_result()
        .map_err(|reason| self.error(reason))?;
        if reported.as_slice() != shape.as_slice() {
            return Err(PruneError::ShapeMismatch {
                what: format!("{}: the mask must have the tensor's shape", describe(self)),
                expected: shape,
                actual: reported.to_vec(),
            });
        }
        Ok(mask.f_to_device(t.device())?)
    }

    fn arguments(&self) -> Value {
        self.arguments.clone()
    }

    fn plugin(&self) -> Option<&Path> {
        Some(&self.plugin)
    }

    fn needs(&self) -> Needs {
        match self.method.statistics() {
            api::Statistics::None => Needs::NONE,
            api::Statistics::ColumnNorms => Needs::NORMS,
            api::Statistics::Gram => Needs::GRAM,
        }
    }

    fn compute_calibrated(
        &self,
        t: &Tensor,
        default_mask: &Tensor,
        statistics: &LayerStatistics,
    ) -> Result<Calibrated> {
        if self.needs().is_none() {
            return Ok(Calibrated {
                mask: self.compute_mask(t, default_mask)?,
                values: None,
            });
        }
        let lent = self.lend(t, default_mask)?;
        let cpu_f32 = |t: &Tensor| -> Result<Tensor> {
            Ok(t.f_to_device(Device::Cpu)?
                .f_to_kind(Kind::Float)?
                .f_contiguous()?)
        };
        let squared_norms = cpu_f32(&statistics.squared_norms)?;
        let gram = statistics.gram.as_ref().map(cpu_f32).transpose()?;
        if self.needs().gram && gram.is_none() {
            return Err(self.error("it needs X^T X: collect the statistics with Needs::GRAM"));
        }
        let values = cpu_f32(&lent.tensor)?.copy();
        let norms_shape = [statistics.features];
        let gram_shape = [statistics.features, statistics.features];
        let norms_strides = api::contiguous_strides(&norms_shape);
        let gram_strides = api::contiguous_strides(&gram_shape);
        let (shape, numel) = (lent.tensor.size(), lent.tensor.numel());
        let (strides, mask_strides) = (lent.tensor.stride(), lent.default_mask.stride());
        // SAFETY: contiguous CPU tensors of the dtypes and entry counts given (`numel` entries of
        // `dtype` for the tensor, u8 for the masks, f32 for the statistics and the values), alive
        // until the call returns; the plugin writes only `mask` and `values`, which nothing else
        // references meanwhile.
        let reported = unsafe {
            let statistics_view = api::StatisticsView {
                features: statistics.features,
                tokens: statistics.tokens,
                samples: statistics.samples,
                squared_norms: cpu_view(
                    &squared_norms,
                    api::DType::F32,
                    &norms_shape,
                    &norms_strides,
                ),
                gram: gram
                    .as_ref()
                    .map(|g| cpu_view(g, api::DType::F32, &gram_shape, &gram_strides))
                    .into(),
            };
            let mask_data: &mut [u8] = match numel {
                0 => &mut [],
                _ => std::slice::from_raw_parts_mut(lent.mask.data_ptr().cast::<u8>(), numel),
            };
            let value_data: &mut [f32] = match numel {
                0 => &mut [],
                _ => std::slice::from_raw_parts_mut(values.data_ptr().cast::<f32>(), numel),
            };
            self.method.compute_calibrated(
                cpu_view(&lent.tensor, lent.dtype, &shape, &strides),
                cpu_view(&lent.default_mask, api::DType::U8, &shape, &mask_strides),
                statistics_view,
                MaskBuffer::new(mask_data, &shape),
                api::ValuesBuffer::new(value_data),
            )
        }
        .into_result()
        .map_err(|reason| self.error(reason))?;
        if reported.shape.as_slice() != shape.as_slice() {
            return Err(PruneError::ShapeMismatch {
                what: format!("{}: the mask must have the tensor's shape", describe(self)),
                expected: shape,
                actual: reported.shape.to_vec(),
            });
        }
        Ok(Calibrated {
            mask: lent.mask.f_to_device(t.device())?,
            values: match reported.values_written {
                true => Some(values.f_to_device(t.device())?),
                false => None,
            },
        })
    }
}

/// A view of the contiguous CPU tensor `t` of `dtype` and `shape`.
///
/// # Safety
/// `t` is a contiguous CPU tensor of `shape` and `strides` whose entries are `dtype`s, alive
/// and not written while the view lives.
unsafe fn cpu_view<'a>(
    t: &'a Tensor,
    dtype: api::DType,
    shape: &'a [i64],
    strides: &'a [i64],
) -> TensorView<'a> {
    // SAFETY: as the caller promises.
    unsafe { TensorView::from_raw_parts(t.data_ptr(), dtype, shape, strides, api::Device::Cpu) }
}

/// A tensor and its default mask as lent to a plugin: contiguous on the CPU (the mask as u8),
/// the tensor's dtype as the plugin reads it, and the mask buffer the plugin writes, holding the
/// default mask.
struct Lent {
    tensor: Tensor,
    dtype: api::DType,
    default_mask: Tensor,
    mask: Tensor,
}

impl PluginMethod {
    /// `t` and `default_mask` as they are lent to the plugin; an error for a dtype plugins
    /// cannot read.
    fn lend(&self, t: &Tensor, default_mask: &Tensor) -> Result<Lent> {
        let tensor = t.f_to_device(Device::Cpu)?.f_contiguous()?;
        let dtype = plugin_dtype(tensor.kind()).ok_or_else(|| {
            self.error(format!(
                "tensors of {:?} cannot be passed to plugins",
                t.kind()
            ))
        })?;
        let default_mask = default_mask
            .f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Uint8)?
            .f_contiguous()?;
        let mask = default_mask.copy();
        Ok(Lent {
            tensor,
            dtype,
            default_mask,
            mask,
        })
    }
}

fn plugin_dtype(kind: Kind) -> Option<api::DType> {
    Some(match kind {
        Kind::Bool => api::DType::Bool,
        Kind::Uint8 => api::DType::U8,
        Kind::Int8 => api::DType::I8,
        Kind::Int16 => api::DType::I16,
        Kind::Int => api::DType::I32,
        Kind::Int64 => api::DType::I64,
        Kind::Half => api::DType::F16,
        Kind::BFloat16 => api::DType::BF16,
        Kind::Float => api::DType::F32,
        Kind::Double => api::DType::F64,
        _ => return None,
    })
}
