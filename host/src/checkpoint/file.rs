//! Safetensors files: tensors under PyTorch's key names plus string metadata, read through a
//! memory map and written atomically.

use crate::error::{PruneError, Result};
use safetensors::{tensor::TensorView, Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// A state_dict as stored in a file: tensors by key (sorted by key) and the file's metadata.
#[derive(Debug, Default)]
pub struct Checkpoint {
    /// The tensors, on the CPU.
    pub tensors: Vec<(String, Tensor)>,
    /// The safetensors header's `__metadata__`.
    pub metadata: BTreeMap<String, String>,
}

/// Reads a safetensors file. A missing file, a corrupt header, truncated data or a dtype that
/// tch has no kind for are errors naming the file.
pub fn read(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|source| PruneError::Io {
        path: path.display().to_string(),
        source,
    })?;
    // SAFETY: the map is read-only and dropped before returning; a file changed underneath by
    // another process could only give wrong values, which the checks below cannot rule out
    // anyway.
    let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| PruneError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let corrupt = |reason: String| {
        PruneError::StateDict(format!(
            "{}: not a readable safetensors file: {reason}",
            path.display()
        ))
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let metadata = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let file = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut tensors = file
        .iter()
        .map(|(name, view)| Ok((name.to_owned(), to_tensor(&view).map_err(&corrupt)?)))
        .collect::<Result<Vec<_>>>()?;
    tensors.sort_by(|(a, _), (b, _)| a.cmp(b));
    Ok(Checkpoint { tensors, metadata })
}

/// Writes `tensors` and `metadata` to `path` as safetensors, atomically (see
/// [`write_atomically`]). Tensors may live on any device.
pub fn write(
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
    path: impl AsRef<Path>,
) -> Result<()> {
    let path = path.as_ref();
    let views = tensors
        .iter()
        .map(|(name, t)| Ok((name.as_str(), StoredTensor::new(name, t)?)))
        .collect::<Result<Vec<_>>>()?;
    let metadata = (!metadata.is_empty()).then(|| {
        metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    write_atomically(path, |tmp| {
        safetensors::serialize_to_file(views, metadata, tmp).map_err(|e| {
            PruneError::StateDict(format!("{}: cannot write safetensors: {e}", path.display()))
        })
    })
}

/// Runs `write` on a temporary path next to `path`, then renames it to `path`; on failure the
/// temporary file is removed and `path` is untouched.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let io = |source| PruneError::Io {
        path: path.display().to_string(),
        source,
    };
    let file_name = path.file_name().ok_or_else(|| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file path",
        ))
    })?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(io));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn to_tensor(view: &TensorView<'_>) -> std::result::Result<Tensor, String> {
    let kind = match view.dtype() {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        other => return Err(format!("dtype {other:?} is not supported")),
    };
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    Tensor::f_from_data_size(view.data(), &shape, kind).map_err(|e| e.to_string())
}

/// A tensor ready for serialization: contiguous, on the CPU.
struct StoredTensor {
    tensor: Tensor,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: usize,
}

impl StoredTensor {
    fn new(name: &str, t: &Tensor) -> Result<Self> {
        let dtype = match t.kind() {
            Kind::Bool => Dtype::BOOL,
            Kind::Uint8 => Dtype::U8,
            Kind::Int8 => Dtype::I8,
            Kind::Int16 => Dtype::I16,
            Kind::Int => Dtype::I32,
            Kind::Int64 => Dtype::I64,
            Kind::Half => Dtype::F16,
            Kind::BFloat16 => Dtype::BF16,
            Kind::Float => Dtype::F32,
            Kind::Double => Dtype::F64,
            other => {
                return Err(PruneError::StateDict(format!(
                    "key '{name}': dtype {other:?} cannot be stored in safetensors"
                )))
            }
        };
        let tensor = t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?;
        let shape = tensor.size().iter().map(|&d| d as usize).collect();
        let bytes = tensor.numel() * dtype.bitsize() / 8;
        Ok(Self {
            tensor,
            dtype,
            shape,
            bytes,
        })
    }
}

impl View for StoredTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        if self.bytes == 0 {
            return Cow::Borrowed(&[]);
        }
        // SAFETY: a contiguous CPU tensor of `bytes` bytes, owned by `self`.
        Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(self.tensor.data_ptr().cast::<u8>(), self.bytes)
        })
    }

    fn data_len(&self) -> usize {
        self.bytes
    }
}
