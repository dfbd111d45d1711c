//! The `sparse-bitmask` layout of compressed-tensors (llm-compressor, vLLM): pruned weights
//! stored as their non-zero values and a bitmask, in plain safetensors.
//!
//! For each compressed weight `P = prefix.weight` the file holds, as compressed-tensors'
//! `BitmaskCompressor` writes them: `prefix.shape` (int64, the dense shape), `prefix.compressed`
//! (the non-zero values in row-major order, 1-d, the weight's dtype), `prefix.bitmask` (uint8,
//! `rows x ceil(cols / 8)`, bits packed along the last dimension in little bit order) and
//! `prefix.row_offsets` (int64, where each row's values start). The safetensors metadata holds
//! the compression config under `compression_config`, the JSON the Python package's
//! `BitmaskConfig` takes.
//!
//! compressed-tensors packs the bits of each row of the *last* dimension, which suits its
//! 2-d linear weights; a convolution's `[out, in, 3, 3]` would take a byte per 3 entries (a
//! byte per entry for 1x1 kernels). tchprune therefore compresses a weight of more than two
//! dimensions as its 2-d view `[out, in * kh * kw]` (what compressed-tensors then decompresses)
//! and records the real shape in the metadata (`tchprune.shapes`), so that tchprune restores it.

use crate::checkpoint::Checkpoint;
use crate::error::{PruneError, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// compressed-tensors' name of the format.
pub const FORMAT: &str = "sparse-bitmask";
/// The metadata key of the compression config.
pub const CONFIG_KEY: &str = "compression_config";
/// The metadata key of the dense shapes of weights compressed as 2-d views.
pub const SHAPES_KEY: &str = "tchprune.shapes";

const PARTS: [&str; 4] = ["shape", "compressed", "bitmask", "row_offsets"];

/// True when `checkpoint` holds weights in the sparse-bitmask layout.
pub fn is_compressed(checkpoint: &Checkpoint) -> bool {
    checkpoint
        .tensors
        .iter()
        .any(|(k, _)| k.ends_with(".bitmask"))
}

/// The floating-point weights (`*.weight`, two dimensions or more) that [`compress`] stores in
/// the sparse-bitmask layout; everything else stays as it is.
fn compressible(name: &str, shape: &[i64], kind: Kind) -> bool {
    name.ends_with(".weight")
        && shape.len() >= 2
        && crate::tensor_data::entries_in(shape) > 0
        && matches!(
            kind,
            Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
        )
}

/// The bytes of tensor data [`compress`] writes for the tensor `name` of `shape` and `kind`
/// with `nonzeros` non-zero entries (what it takes as it is, when it is not compressed).
pub fn compressed_bytes(name: &str, shape: &[i64], kind: Kind, nonzeros: i64) -> u64 {
    let numel: i64 = crate::tensor_data::entries_in(shape);
    let element = kind.elt_size_in_bytes() as u64;
    if !compressible(name, shape, kind) {
        return numel as u64 * element;
    }
    let rows = shape[0] as u64;
    let cols = (numel as u64) / rows;
    nonzeros as u64 * element + rows * cols.div_ceil(8) + 8 * rows + 8 * 2
}

/// Compresses every weight of a plain (unpruned or finalized) checkpoint; other tensors and the
/// metadata are kept. An error if a `_orig`/`_mask` pair is left: make the pruning permanent
/// first (`finalize`).
pub fn compress(checkpoint: &Checkpoint) -> Result<Checkpoint> {
    if let Some((key, _)) = checkpoint
        .tensors
        .iter()
        .find(|(k, _)| k.ends_with("_mask") || k.ends_with("_orig"))
    {
        return Err(PruneError::InvalidCheckpoint(format!(
            "'{key}' is part of a pruned pair: finalize the checkpoint before compressing it"
        )));
    }
    let mut tensors = Vec::with_capacity(checkpoint.tensors.len() * 2);
    let mut shapes = BTreeMap::new();
    let mut targets = Vec::new();
    let (mut zeros, mut total) = (0i64, 0i64);
    for (name, t) in &checkpoint.tensors {
        if !compressible(name, &t.size(), t.kind()) {
            tensors.push((name.clone(), t.shallow_clone()));
            continue;
        }
        let prefix = &name[..name.len() - ".weight".len()];
        let size = t.size();
        let rows = size[0];
        let flat = t
            .f_to_device(Device::Cpu)?
            .f_reshape([rows, -1])?
            .f_contiguous()?;
        if size.len() > 2 {
            shapes.insert(prefix.to_owned(), size.clone());
        }
        let (compressed, bitmask, row_offsets, kept) = compress_2d(&flat)?;
        zeros += flat.numel() as i64 - kept;
        total += flat.numel() as i64;
        let shape = Tensor::from_slice(&flat.size());
        for (part, value) in PARTS.iter().zip([shape, compressed, bitmask, row_offsets]) {
            tensors.push((format!("{prefix}.{part}"), value));
        }
        targets.push(prefix.to_owned());
    }
    tensors.sort_by(|(a, _), (b, _)| a.cmp(b));
    let mut metadata = checkpoint.metadata.clone();
    let global_sparsity = if total == 0 {
        0.0
    } else {
        zeros as f64 / total as f64
    };
    let config = json!({
        "format": FORMAT,
        "global_sparsity": global_sparsity,
        "sparsity_structure": "unstructured",
        "targets": targets,
        "ignore": [],
    });
    metadata.insert(CONFIG_KEY.to_owned(), config.to_string());
    if !shapes.is_empty() {
        metadata.insert(SHAPES_KEY.to_owned(), json!(shapes).to_string());
    }
    Ok(Checkpoint { tensors, metadata })
}

/// Values, packed bitmask, row offsets and the number of non-zero entries of a contiguous 2-d
/// CPU tensor of a floating-point kind (see [`compressible`]).
///
/// Read in two passes over the entries' bits, not with `ne(0)` and `masked_select`: libtorch's
/// `masked_select` on the CPU builds two `int64` index tensors of the input's size, and with them
/// a 200 MB weight took 1.2 GB beyond the input; now it takes the bitmask and the values.
fn compress_2d(flat: &Tensor) -> Result<(Tensor, Tensor, Tensor, i64)> {
    match flat.kind() {
        Kind::Float => compress_2d_as::<u32>(flat, 0x7fff_ffff),
        Kind::Double => compress_2d_as::<u64>(flat, 0x7fff_ffff_ffff_ffff),
        Kind::Half | Kind::BFloat16 => compress_2d_as::<u16>(flat, 0x7fff),
        other => Err(PruneError::InvalidCheckpoint(format!(
            "cannot compress {other:?} entries"
        ))),
    }
}

/// [`compress_2d`] for entries stored as `T`, zero when their bits outside the sign (`magnitude`)
/// are (0.0 and -0.0 are both zero, as `ne(0)` has them; NaN is not).
fn compress_2d_as<T>(flat: &Tensor, magnitude: T) -> Result<(Tensor, Tensor, Tensor, i64)>
where
    T: Copy + Default + PartialEq + std::ops::BitAnd<Output = T>,
{
    let (rows, cols) = (flat.size()[0], flat.size()[1]);
    let numel = flat.numel();
    // SAFETY: a contiguous CPU tensor of `numel` entries of `T`'s size (the caller's kinds),
    // only read while the slice lives.
    let entries = unsafe { crate::tensor_data::entries::<T>(flat, numel) };
    let zero = T::default();
    let bytes_per_row = ((cols + 7) / 8) as usize;
    let bits = Tensor::f_zeros([rows, bytes_per_row as i64], (Kind::Uint8, Device::Cpu))?;
    // SAFETY: a new contiguous CPU tensor of `rows * bytes_per_row` bytes, only written here.
    let packed_rows =
        unsafe { crate::tensor_data::entries_mut::<u8>(&bits, rows as usize * bytes_per_row) };
    let mut offsets = Vec::with_capacity(rows as usize);
    let mut kept = 0i64;
    for (row, packed) in entries
        .chunks(cols.max(1) as usize)
        .zip(packed_rows.chunks_mut(bytes_per_row.max(1)))
    {
        offsets.push(kept);
        for (i, &entry) in row.iter().enumerate() {
            if entry & magnitude != zero {
                packed[i / 8] |= 1 << (i % 8);
                kept += 1;
            }
        }
    }
    let values = Tensor::f_empty([kept], (flat.kind(), Device::Cpu))?;
    // SAFETY: a new contiguous CPU tensor of `kept` entries of `T`'s size, only written here.
    let out = unsafe { crate::tensor_data::entries_mut::<T>(&values, kept as usize) };
    let nonzeros = entries.iter().filter(|&&entry| entry & magnitude != zero);
    for (slot, &entry) in out.iter_mut().zip(nonzeros) {
        *slot = entry;
    }
    Ok((values, bits, Tensor::from_slice(&offsets), kept))
}

/// `checkpoint` with its sparse-bitmask weights made dense (a checkpoint without any, as it
/// is).
pub fn into_dense(checkpoint: Checkpoint) -> Result<Checkpoint> {
    match is_compressed(&checkpoint) {
        true => decompress(&checkpoint),
        false => Ok(checkpoint),
    }
}

/// Restores the dense weights of a compressed checkpoint (its other tensors are kept, and its
/// metadata without the compression's keys). Every part is checked: a missing part, a bitmask
/// of the wrong size or a count of values that does not match its bits is an error naming the
/// weight.
pub fn decompress(checkpoint: &Checkpoint) -> Result<Checkpoint> {
    let shapes: BTreeMap<String, Vec<i64>> = match checkpoint.metadata.get(SHAPES_KEY) {
        Some(json) => serde_json::from_str(json).map_err(|err| {
            PruneError::InvalidCheckpoint(format!("metadata '{SHAPES_KEY}': {err}"))
        })?,
        None => BTreeMap::new(),
    };
    let mut parts: BTreeMap<&str, BTreeMap<&str, &Tensor>> = BTreeMap::new();
    let mut tensors = Vec::with_capacity(checkpoint.tensors.len());
    for (name, t) in &checkpoint.tensors {
        match name.rsplit_once('.') {
            Some((prefix, part)) if PARTS.contains(&part) => {
                parts.entry(prefix).or_default().insert(part, t);
            }
            _ => tensors.push((name.clone(), t.shallow_clone())),
        }
    }
    for (prefix, parts) in parts {
        if !parts.contains_key("bitmask") {
            // A `.shape` or `.compressed` tensor of a model of its own, not compressed.
            for (part, t) in parts {
                tensors.push((format!("{prefix}.{part}"), t.shallow_clone()));
            }
            continue;
        }
        let weight = format!("{prefix}.weight");
        let dense = decompress_weight(&weight, &parts)?;
        let dense = match shapes.get(prefix) {
            Some(shape) => {
                let entries = (shape.iter())
                    .try_fold(1i64, |n, &d| (d >= 0).then(|| n.checked_mul(d)).flatten());
                if shape.len() > super::file::MAX_DIMS || entries != Some(dense.numel() as i64) {
                    return Err(PruneError::InvalidCheckpoint(format!(
                        "'{weight}': the recorded shape {shape:?} does not hold the {} \
                         decompressed entries",
                        dense.numel()
                    )));
                }
                dense.f_reshape(shape.as_slice())?
            }
            None => dense,
        };
        tensors.push((weight, dense));
    }
    tensors.sort_by(|(a, _), (b, _)| a.cmp(b));
    let mut metadata = checkpoint.metadata.clone();
    metadata.remove(CONFIG_KEY);
    metadata.remove(SHAPES_KEY);
    Ok(Checkpoint { tensors, metadata })
}

fn decompress_weight(weight: &str, parts: &BTreeMap<&str, &Tensor>) -> Result<Tensor> {
    let invalid = |reason: String| PruneError::InvalidCheckpoint(format!("'{weight}': {reason}"));
    let part = |name: &str| {
        parts
            .get(name)
            .copied()
            .ok_or_else(|| invalid(format!("compressed, but its '.{name}' tensor is missing")))
    };
    let (shape, values, bitmask) = (part("shape")?, part("compressed")?, part("bitmask")?);
    if shape.dim() != 1 || !matches!(shape.kind(), Kind::Int64 | Kind::Int) {
        return Err(invalid(format!(
            "'.shape' must be a 1-d integer tensor, got {:?} {:?}",
            shape.kind(),
            shape.size()
        )));
    }
    let shape = Vec::<i64>::try_from(shape.f_to_kind(Kind::Int64)?)?;
    if shape.is_empty() || shape.len() > super::file::MAX_DIMS || shape.iter().any(|&d| d < 0) {
        return Err(invalid(format!("invalid dense shape {shape:?}")));
    }
    // Sizes come from the file: every product is checked (a lying `.shape` of [2^61, 64] must
    // not wrap around to match an empty bitmask).
    let too_large = || invalid(format!("the dense shape {shape:?} is too large"));
    let cols = *shape.last().expect("not empty");
    let rows = (shape[..shape.len() - 1].iter()).try_fold(1i64, |n, &d| n.checked_mul(d));
    let rows = rows.ok_or_else(too_large)?;
    let bytes_per_row = cols / 8 + i64::from(cols % 8 != 0);
    let element = values.kind().elt_size_in_bytes();
    let dense_bytes = (rows.checked_mul(cols))
        .and_then(|n| usize::try_from(n).ok())
        .and_then(|n| n.checked_mul(element))
        .ok_or_else(too_large)?;
    let expected_bitmask = rows.checked_mul(bytes_per_row).ok_or_else(too_large)?;
    if bitmask.kind() != Kind::Uint8 || bitmask.numel() as i64 != expected_bitmask {
        return Err(invalid(format!(
            "'.bitmask' must be uint8 with {rows} x {bytes_per_row} entries for shape {shape:?}, \
             got {:?} {:?}",
            bitmask.kind(),
            bitmask.size()
        )));
    }
    if values.dim() != 1 {
        return Err(invalid(format!(
            "'.compressed' must be 1-d, got shape {:?}",
            values.size()
        )));
    }
    let bits = bitmask.f_to_device(Device::Cpu)?.f_contiguous()?;
    // SAFETY: a contiguous CPU uint8 tensor of `expected_bitmask` entries (checked above).
    let bits = unsafe { crate::tensor_data::entries::<u8>(&bits, expected_bitmask as usize) };
    let cols_usize = cols as usize;
    fn row_bits(row: &[u8], cols: usize) -> impl Iterator<Item = usize> + '_ {
        (0..cols).filter(move |&i| row[i / 8] >> (i % 8) & 1 == 1)
    }
    let rows_of_bits = || {
        bits.chunks(bytes_per_row.max(1) as usize)
            .take(rows as usize)
    };
    let kept: usize = rows_of_bits()
        .map(|row| row_bits(row, cols_usize).count())
        .sum();
    if kept != values.numel() {
        return Err(invalid(format!(
            "the bitmask marks {kept} non-zero entries but '.compressed' holds {}",
            values.numel()
        )));
    }
    // Written in place, not with a bool mask and `masked_scatter` (each the dense size again).
    let values = values.f_to_device(Device::Cpu)?.f_contiguous()?;
    // SAFETY: a contiguous CPU tensor of `kept` entries of `element` bytes each.
    let value_bytes = unsafe { crate::tensor_data::entries::<u8>(&values, kept * element) };
    let dense = Tensor::f_zeros(shape.as_slice(), (values.kind(), Device::Cpu))?;
    // SAFETY: a new contiguous CPU tensor of `dense_bytes` bytes, only written here.
    let out = unsafe { crate::tensor_data::entries_mut::<u8>(&dense, dense_bytes) };
    let mut next = value_bytes.chunks_exact(element.max(1));
    for (r, row) in rows_of_bits().enumerate() {
        for i in row_bits(row, cols_usize) {
            let at = (r * cols as usize + i) * element;
            out[at..at + element].copy_from_slice(next.next().expect("counted"));
        }
    }
    Ok(dense)
}

/// The compression config of a compressed checkpoint, as JSON.
pub fn config(checkpoint: &Checkpoint) -> Option<Value> {
    checkpoint
        .metadata
        .get(CONFIG_KEY)
        .and_then(|json| serde_json::from_str(json).ok())
}

/// The compressed-tensors layouts of sparse weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SparseFormat {
    /// `sparse-bitmask`: any sparsity; `.shape`, `.compressed` (1-d), `.bitmask`, `.row_offsets`.
    Bitmask,
    /// `sparse-24-bitmask`: 2:4 along each row; `.shape` (`[2, 1]`), `.compressed`
    /// (`[rows, cols / 2]`), `.bitmask`.
    TwoFourBitmask,
}

impl SparseFormat {
    /// compressed-tensors' name of the format.
    pub fn name(self) -> &'static str {
        match self {
            SparseFormat::Bitmask => FORMAT,
            SparseFormat::TwoFourBitmask => "sparse-24-bitmask",
        }
    }
}

/// Compresses, in `tensors`, each 2-d floating weight whose key `target` accepts, in `format`
/// (other tensors stay); returns the zeros and entries of the compressed weights. A weight that
/// is not 2:4 sparse refuses the 2:4 format, naming it.
pub fn compress_weights(
    tensors: &mut Vec<(String, Tensor)>,
    target: impl Fn(&str) -> bool,
    format: SparseFormat,
) -> Result<(i64, i64)> {
    let (mut zeros, mut total) = (0i64, 0i64);
    let mut out = Vec::with_capacity(tensors.len() * 3);
    for (name, t) in std::mem::take(tensors) {
        let size = t.size();
        if !(target(&name) && size.len() == 2 && compressible(&name, &size, t.kind())) {
            out.push((name, t));
            continue;
        }
        let prefix = name[..name.len() - ".weight".len()].to_owned();
        let flat = t.f_to_device(Device::Cpu)?.f_contiguous()?;
        let nonzeros = flat.f_ne(0)?.f_sum(Kind::Int64)?.f_int64_value(&[])?;
        zeros += flat.numel() as i64 - nonzeros;
        total += flat.numel() as i64;
        match format {
            SparseFormat::Bitmask => {
                let (compressed, bitmask, row_offsets, _) = compress_2d(&flat)?;
                let shape = Tensor::from_slice(&size);
                for (part, value) in PARTS.iter().zip([shape, compressed, bitmask, row_offsets]) {
                    out.push((format!("{prefix}.{part}"), value));
                }
            }
            SparseFormat::TwoFourBitmask => {
                let (rows, cols) = (size[0], size[1]);
                let groups = flat.f_reshape([-1, 4]).map_err(|_| {
                    PruneError::InvalidCheckpoint(format!(
                        "'{name}': {size:?} has no whole groups of 4 for 2:4"
                    ))
                })?;
                if cols % 4 != 0 {
                    return Err(PruneError::InvalidCheckpoint(format!(
                        "'{name}': rows of {cols} entries have no whole groups of 4 for 2:4"
                    )));
                }
                let crowded = groups
                    .f_ne(0)?
                    .f_sum_dim_intlist(1, false, Kind::Int64)?
                    .f_gt(2)?;
                if crowded.f_any()?.f_int64_value(&[])? != 0 {
                    return Err(PruneError::InvalidCheckpoint(format!(
                        "'{name}' is not 2:4 sparse (a group of 4 holds more than 2 non-zeros)"
                    )));
                }
                // compressed-tensors keeps the two largest magnitudes of each group.
                let (_, top) = groups.f_abs()?.f_topk(2, 1, true, true)?;
                let keep = Tensor::f_zeros([groups.size()[0], 4], (Kind::Bool, Device::Cpu))?
                    .f_scatter_value(1, &top, 1)?
                    .f_reshape([rows, cols])?;
                let values = flat.f_masked_select(&keep)?.f_reshape([rows, cols / 2])?;
                let bitmask = pack_rows(&keep)?;
                let shape = Tensor::from_slice(&size).f_reshape([-1, 1])?;
                for (part, value) in ["shape", "compressed", "bitmask"]
                    .iter()
                    .zip([shape, values, bitmask])
                {
                    out.push((format!("{prefix}.{part}"), value));
                }
            }
        }
    }
    out.sort_by(|(a, _), (b, _)| a.cmp(b));
    *tensors = out;
    Ok((zeros, total))
}

/// A `bool` `[rows, cols]` tensor's bits packed along each row, little bit order:
/// `[rows, ceil(cols / 8)]` uint8.
fn pack_rows(keep: &Tensor) -> Result<Tensor> {
    let (rows, cols) = keep.size2()?;
    let bytes_per_row = (cols + 7) / 8;
    let bits = Vec::<bool>::try_from(keep.f_reshape([-1])?)?;
    let mut packed = vec![0u8; (rows * bytes_per_row) as usize];
    for (row, out) in bits
        .chunks(cols.max(1) as usize)
        .zip(packed.chunks_mut(bytes_per_row.max(1) as usize))
    {
        for (i, &on) in row.iter().enumerate() {
            if on {
                out[i / 8] |= 1 << (i % 8);
            }
        }
    }
    Ok(Tensor::from_slice(&packed).f_reshape([rows, bytes_per_row])?)
}

/// The `quantization_config` entry compressed-tensors 0.12.2 writes in `config.json` for a
/// model whose `targets` layers (class names, like `"Linear"`) are compressed in `format`,
/// `ignore` left dense.
pub fn quantization_config(
    format: SparseFormat,
    global_sparsity: f64,
    targets: &[&str],
    ignore: &[&str],
) -> Value {
    let structure = match format {
        SparseFormat::Bitmask => "unstructured",
        SparseFormat::TwoFourBitmask => "2:4",
    };
    json!({
        "quant_method": "compressed-tensors",
        "version": "0.12.2",
        "sparsity_config": {
            "format": format.name(),
            "global_sparsity": global_sparsity,
            "sparsity_structure": structure,
            "targets": targets,
            "ignore": ignore,
            "registry_requires_subclass": false,
        },
        "transform_config": {},
    })
}
