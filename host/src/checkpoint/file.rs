//! Safetensors files: tensors under PyTorch's key names plus string metadata, read and checked
//! without trusting the file, written atomically.

use crate::error::{PruneError, Result};
use crate::files;
use crate::tensor_data::entries_mut;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
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

/// The largest header safetensors (Rust and Python) reads.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One entry of a safetensors header.
enum HeaderEntry {
    Metadata(BTreeMap<String, String>),
    Tensor(TensorInfo),
}

/// A safetensors header's entries in file order, duplicates kept (a JSON map would drop them),
/// each parsed straight into its type.
struct HeaderEntries(Vec<(String, std::result::Result<HeaderEntry, String>)>);

impl<'de> serde::Deserialize<'de> for HeaderEntries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = HeaderEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<HeaderEntries, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    // A value of the wrong shape is reported with its key; the header is still
                    // read to its end so that a duplicate key is reported as such.
                    let value = if key == "__metadata__" {
                        let value: serde_json::Value = map.next_value()?;
                        serde_json::from_value(value)
                            .map(HeaderEntry::Metadata)
                            .map_err(|e| format!("'__metadata__' is not a map of strings ({e})"))
                    } else {
                        let info = map.next_value::<TensorInfo>().map_err(|e| {
                            <A::Error as serde::de::Error>::custom(format!("key '{key}': {e}"))
                        })?;
                        Ok(HeaderEntry::Tensor(info))
                    };
                    entries.push((key, value));
                }
                Ok(HeaderEntries(entries))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// Reads a safetensors file: only a regular file (a FIFO or a device is refused), its header
/// bounded and checked entry by entry (duplicate keys, offsets, sizes, dtypes) before any data
/// is read, and the data read into the tensors directly (no memory map: a file truncated by
/// another process meanwhile is an error, not a crash). Errors name the file and the key.
pub fn read(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let corrupt = |reason: String| corrupt(path, reason);
    let file = files::open_regular(path)?;
    let read_at = |buffer: &mut [u8], offset: u64| read_exact_at(&file, path, buffer, offset);
    let Header {
        metadata,
        infos,
        header_len,
        data_len,
    } = read_header(&file, path)?;
    let data_start = 8 + header_len;
    let mut batch = ReadBatch::default();
    let mut tensors = infos
        .into_iter()
        .map(|(key, info)| {
            let kind = kind_of(info.dtype).ok_or_else(|| {
                corrupt(format!(
                    "key '{key}': dtype {:?} is not supported",
                    info.dtype
                ))
            })?;
            let shape =
                tensor_shape(&info.shape).map_err(|why| corrupt(format!("key '{key}': {why}")))?;
            let tensor = Tensor::f_empty(shape.as_slice(), (kind, Device::Cpu))?;
            let (start, end) = info.data_offsets;
            // SAFETY: a new contiguous CPU tensor of exactly `end - start` bytes (the layout
            // check matched the byte count to the dtype and shape).
            let bytes = unsafe { entries_mut::<u8>(&tensor, end - start) };
            match end - start <= READ_BATCH_BYTES {
                true => {
                    let read =
                        |buffer: &mut [u8], at: usize| read_at(buffer, data_start + at as u64);
                    bytes.copy_from_slice(batch.bytes(start..end, data_len as usize, read)?);
                }
                false => read_at(bytes, data_start + start as u64)?,
            }
            // Rust reads `bool` masks as `&[bool]`, where any byte but 0 and 1 is undefined
            // behaviour.
            if kind == Kind::Bool {
                if let Some(at) = bytes.iter().position(|&b| b > 1) {
                    return Err(corrupt(format!(
                        "key '{key}': entry {at} of a BOOL tensor is the byte {}, where only 0 \
                         and 1 are booleans",
                        bytes[at]
                    )));
                }
            }
            Ok((key, tensor))
        })
        .collect::<Result<Vec<_>>>()?;
    tensors.sort_by(|(a, _), (b, _)| a.cmp(b));
    Ok(Checkpoint { tensors, metadata })
}

/// The most dimensions a libtorch tensor has.
pub(crate) const MAX_DIMS: usize = 64;

/// A shape read from a file as libtorch's: at most [`MAX_DIMS`] dimensions, each at most
/// `i64::MAX`, whose non-zero dimensions multiply to at most `i64::MAX`.
pub(crate) fn tensor_shape(shape: &[usize]) -> std::result::Result<Vec<i64>, String> {
    if shape.len() > MAX_DIMS {
        return Err(format!(
            "{} dimensions, more than the {MAX_DIMS} a tensor can have",
            shape.len()
        ));
    }
    let dims: Vec<i64> = shape
        .iter()
        .map(|&d| {
            i64::try_from(d).map_err(|_| {
                format!(
                    "the dimension {d} of {shape:?} is larger than a tensor's largest (2^63 - 1)"
                )
            })
        })
        .collect::<std::result::Result<_, _>>()?;
    // libtorch's strides multiply the dimensions (zeros counted as ones), and so does tch's
    // `numel` (in a debug build an overflow there panics): a shape whose non-zero dimensions
    // multiply past `i64::MAX` has no tensor, even with no entries.
    let strides = dims.iter().try_fold(1i64, |n, &d| n.checked_mul(d.max(1)));
    if strides.is_none() {
        return Err(format!(
            "the shape {shape:?} is too large (its dimensions multiply past 2^63)"
        ));
    }
    Ok(dims)
}

/// The error for a file that is not a readable safetensors file.
fn corrupt(path: &Path, reason: String) -> PruneError {
    PruneError::InvalidFile {
        path: path.display().to_string(),
        reason: format!("not a readable safetensors file: {reason}"),
    }
}

/// Reads `buffer.len()` bytes at `offset` of `file`; a file that ends before is corrupt.
fn read_exact_at(file: &std::fs::File, path: &Path, buffer: &mut [u8], offset: u64) -> Result<()> {
    file.read_exact_at(buffer, offset)
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::UnexpectedEof => corrupt(
                path,
                format!(
                    "it ended before byte {}: was it changed while being read?",
                    offset + buffer.len() as u64
                ),
            ),
            _ => PruneError::Io {
                path: path.display().to_string(),
                error,
            },
        })
}

/// A safetensors header, checked: the tensors sorted by offset.
pub(crate) struct Header {
    /// `__metadata__`.
    pub(crate) metadata: BTreeMap<String, String>,
    /// The tensors by key, with their dtype, shape and offsets.
    pub(crate) infos: Vec<(String, TensorInfo)>,
    header_len: u64,
    data_len: u64,
}

/// Reads and checks the header of the safetensors `file` (at `path`, for messages): bounded,
/// each entry parsed, no duplicate key, the data laid out back to back as dtypes and shapes say.
pub(crate) fn read_header(file: &std::fs::File, path: &Path) -> Result<Header> {
    let corrupt = |reason: String| corrupt(path, reason);
    let len = file
        .metadata()
        .map_err(|error| PruneError::Io {
            path: path.display().to_string(),
            error,
        })?
        .len();
    if len < 8 {
        return Err(corrupt(format!(
            "{len} bytes, fewer than the header's 8-byte length"
        )));
    }
    let mut length = [0u8; 8];
    read_exact_at(file, path, &mut length, 0)?;
    let header_len = u64::from_le_bytes(length);
    if header_len > MAX_HEADER_BYTES || header_len > len - 8 {
        return Err(corrupt(format!(
            "a header of {header_len} bytes, in a file of {len} bytes (at most {MAX_HEADER_BYTES})"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    read_exact_at(file, path, &mut header, 8)?;
    let header = std::str::from_utf8(&header)
        .map_err(|e| corrupt(format!("the header is not UTF-8 ({e})")))?;
    let HeaderEntries(entries) = serde_json::from_str(header.trim_end_matches(' '))
        .map_err(|e| corrupt(format!("the header is not a JSON object ({e})")))?;
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    if let Some((key, _)) = entries.iter().find(|(key, _)| !seen.insert(key.as_str())) {
        return Err(corrupt(format!("the key '{key}' appears twice")));
    }
    drop(seen);
    let mut metadata = BTreeMap::new();
    let mut infos = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        match value.map_err(&corrupt)? {
            HeaderEntry::Metadata(map) => metadata = map,
            HeaderEntry::Tensor(info) => infos.push((key, info)),
        }
    }
    let data_len = len - 8 - header_len;
    check_layout(&mut infos, data_len).map_err(corrupt)?;
    Ok(Header {
        metadata,
        infos,
        header_len,
        data_len,
    })
}

/// Tensors of up to this many bytes are read with their neighbours, this many bytes at a time:
/// a checkpoint of many small tensors takes a few reads, not one per tensor.
const READ_BATCH_BYTES: usize = 1 << 20;

/// The bytes of the data section last read in one batch.
#[derive(Default)]
struct ReadBatch {
    start: usize,
    bytes: Vec<u8>,
}

impl ReadBatch {
    /// The data bytes `range` (at most [`READ_BATCH_BYTES`] of them), from the batch, or after
    /// reading the batch that starts with them (`read(buffer, offset)` reads at that offset of
    /// the data section, which holds `data_len` bytes).
    fn bytes<E>(
        &mut self,
        range: std::ops::Range<usize>,
        data_len: usize,
        read: impl FnOnce(&mut [u8], usize) -> std::result::Result<(), E>,
    ) -> std::result::Result<&[u8], E> {
        let end = self.start + self.bytes.len();
        if range.start < self.start || range.end > end {
            let len = READ_BATCH_BYTES.min(data_len - range.start);
            self.bytes.resize(len, 0);
            self.start = range.start;
            read(&mut self.bytes, range.start)?;
        }
        Ok(&self.bytes[range.start - self.start..range.end - self.start])
    }
}

/// Checks that the tensors' data lie back to back from 0 to `data_len`, each as long as its
/// dtype and shape say; sorts `infos` by offset.
fn check_layout(
    infos: &mut [(String, TensorInfo)],
    data_len: u64,
) -> std::result::Result<(), String> {
    infos.sort_by_key(|(_, info)| info.data_offsets);
    let mut next = 0usize;
    for (key, info) in infos.iter() {
        let (start, end) = info.data_offsets;
        if start != next || end < start {
            return Err(format!(
                "key '{key}': data at bytes {start}..{end}, where {next} was expected"
            ));
        }
        let bytes = info
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(info.dtype.bitsize()))
            .map(|bits| bits.div_ceil(8))
            .ok_or_else(|| format!("key '{key}': the shape {:?} is too large", info.shape))?;
        if end - start != bytes {
            return Err(format!(
                "key '{key}': {} bytes of data for a {:?} tensor of shape {:?} ({bytes} bytes)",
                end - start,
                info.dtype,
                info.shape
            ));
        }
        next = end;
    }
    if next as u64 != data_len {
        return Err(format!(
            "the tensors take {next} bytes of data, the file holds {data_len}"
        ));
    }
    Ok(())
}

/// Writes `tensors` and `metadata` to `path` as safetensors, atomically (see
/// [`files::write_atomically`]). Tensors may live on any device. A file that safetensors could
/// not read back (a duplicate key, a header over 100 MB) is refused before anything is written.
pub fn write(
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
    path: impl AsRef<Path>,
) -> Result<()> {
    let path = path.as_ref();
    let mut stored = tensors
        .iter()
        .map(|(name, t)| Ok((name.as_str(), StoredTensor::new(name, t)?)))
        .collect::<Result<Vec<_>>>()?;
    // safetensors' own order: by decreasing alignment, then by name.
    stored.sort_by(|(a, left), (b, right)| right.dtype.cmp(&left.dtype).then(a.cmp(b)));
    if let Some(pair) = stored.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(PruneError::InvalidFile {
            path: path.display().to_string(),
            reason: format!("the key '{}' would appear twice", pair[0].0),
        });
    }
    let mut offset = 0;
    let infos = stored
        .iter_mut()
        .map(|(name, t)| {
            let info = TensorInfo {
                dtype: t.dtype,
                shape: std::mem::take(&mut t.shape),
                data_offsets: (offset, offset + t.bytes),
            };
            offset += t.bytes;
            (name.to_string(), info)
        })
        .collect();
    let metadata = (!metadata.is_empty()).then(|| metadata.clone().into_iter().collect());
    let header = Metadata::new(metadata, infos)
        .and_then(|m| Ok(serde_json::to_vec(&m)?))
        .map_err(|e| PruneError::InvalidFile {
            path: path.display().to_string(),
            reason: format!("cannot write safetensors: {e}"),
        })?;
    let mut header = header;
    header.resize(header.len().next_multiple_of(8), b' ');
    if header.len() as u64 > MAX_HEADER_BYTES {
        return Err(PruneError::InvalidFile {
            path: path.display().to_string(),
            reason: format!(
                "the header would take {} bytes, more than the {MAX_HEADER_BYTES} safetensors \
                 reads back (is the metadata that large?)",
                header.len()
            ),
        });
    }
    files::write_atomically(path, |file| {
        let io = |error| PruneError::Io {
            path: path.display().to_string(),
            error,
        };
        let mut out = std::io::BufWriter::new(file);
        out.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(io)?;
        out.write_all(&header).map_err(io)?;
        for (_, tensor) in &stored {
            out.write_all(tensor.data()).map_err(io)?;
        }
        out.flush().map_err(io)
    })
}

/// The tch kind of a safetensors dtype, if tch has one.
fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
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
        _ => return None,
    })
}

/// A tensor ready for serialization: contiguous, on the CPU.
struct StoredTensor<'a> {
    /// The tensor itself when it is a contiguous CPU tensor (only read through its data
    /// pointer), else `copy`.
    source: &'a Tensor,
    /// A contiguous CPU copy of a tensor that is not one.
    copy: Option<Tensor>,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: usize,
}

impl<'a> StoredTensor<'a> {
    fn new(name: &str, t: &'a Tensor) -> Result<Self> {
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
                return Err(PruneError::InvalidCheckpoint(format!(
                    "key '{name}': dtype {other:?} cannot be stored in safetensors"
                )))
            }
        };
        let copy = match t.device() == Device::Cpu && t.is_contiguous() {
            true => None,
            false => Some(t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?),
        };
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let bytes = shape.iter().product::<usize>() * dtype.bitsize() / 8;
        Ok(Self {
            source: t,
            copy,
            dtype,
            shape,
            bytes,
        })
    }

    /// The tensor's bytes.
    fn data(&self) -> &[u8] {
        if self.bytes == 0 {
            return &[];
        }
        let tensor = self.copy.as_ref().unwrap_or(self.source);
        // SAFETY: a contiguous CPU tensor of `bytes` bytes, borrowed or owned by `self`.
        unsafe { std::slice::from_raw_parts(tensor.data_ptr().cast::<u8>(), self.bytes) }
    }
}
