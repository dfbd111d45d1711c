//! A plugin's method as a [`PruningMethod`]: tensors lent as views, the mask written into
//! host memory, and every answer checked before the host uses it.

use crate::error::{PruneError, Result};
use crate::method::{describe, PruningMethod, PruningType};
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
