//! Global magnitude pruning without concatenation.
//!
//! PyTorch's `global_unstructured` concatenates every tensor's scores and masks into one
//! vector and runs `topk` on it: three copies of the whole set and a sort, and no way past 2^31
//! entries. For L1 on CPU float tensors tchprune instead finds the global threshold by radix
//! select over the tensors where they lie, reading only the live entries (mostly pruned tensors
//! have them gathered once, so the later passes read nothing else), and writes each tensor's new
//! mask directly. The result is PyTorch's for distinct magnitudes; where ties make
//! the choice ambiguous it defers to the concatenating path up to
//! [`EXACT_TIES_LIMIT`](super::select::EXACT_TIES_LIMIT) live entries (PyTorch's exact choice)
//! and beyond that takes the tied entries in concatenation order.

use super::radix::{self, Order, Part, Values};
use super::select::{cpu_values, EXACT_TIES_LIMIT};
use crate::amount::Amount;
use crate::error::Result;
use crate::parallel::{chunks, on_chunks, on_chunks_mut, on_threads};
use crate::tensor_data::{entries, entries_mut};
use tch::{Device, Kind, Tensor};

/// Each tensor's new mask (`bool`, its shape), or `None` when this path does not apply (not
/// all CPU floats of one dtype, or ties that only the concatenating path resolves as PyTorch
/// does). `scores[i]` ranks the entries of tensor `i`; `masks[i]` is its current mask, if any.
pub(crate) fn global_magnitude_masks(
    scores: &[Tensor],
    masks: &[Option<Tensor>],
    amount: Amount,
) -> Result<Option<Vec<Tensor>>> {
    let Some(first) = scores.first() else {
        return Ok(None);
    };
    let kind = first.kind();
    if scores
        .iter()
        .any(|s| s.device() != Device::Cpu || s.kind() != kind)
        || masks.iter().flatten().any(|m| m.device() != Device::Cpu)
    {
        return Ok(None);
    }
    let scores: Vec<Tensor> = scores
        .iter()
        .map(|s| s.f_contiguous())
        .collect::<tch::Result<_>>()?;
    let bool_masks: Vec<Option<Tensor>> = masks
        .iter()
        .map(|m| {
            m.as_ref()
                .map(|m| m.f_to_kind(Kind::Bool)?.f_contiguous())
                .transpose()
        })
        .collect::<tch::Result<_>>()?;
    let alive: Vec<Option<&[bool]>> = bool_masks
        .iter()
        .map(|mask| {
            // SAFETY: a contiguous CPU bool tensor of the score's size, borrowed while
            // `bool_masks` lives.
            mask.as_ref()
                .map(|mask| unsafe { entries::<bool>(mask, mask.numel()) })
        })
        .collect();
    // Tensors with fewer live entries than pruned ones are ranked from a gathered copy of their
    // live entries: one pass over the tensor instead of one per radix step.
    let mut ranked = Vec::with_capacity(scores.len());
    let mut live = 0usize;
    for (score, alive) in scores.iter().zip(alive) {
        let Some(values) = cpu_values(score) else {
            return Ok(None);
        };
        let Some(alive) = alive else {
            live += values.len();
            ranked.push(Ranked::InPlace(Part { values, alive }));
            continue;
        };
        let live_per_chunk = on_chunks(alive.len(), |start, end| count_alive(&alive[start..end]));
        let tensor_live: usize = live_per_chunk.iter().sum();
        live += tensor_live;
        ranked.push(if tensor_live * 2 < alive.len() {
            Ranked::Gathered(Gathered::new(values, alive, &live_per_chunk), alive)
        } else {
            Ranked::InPlace(Part {
                values,
                alive: Some(alive),
            })
        });
    }
    let parts: Vec<Part<'_>> = ranked.iter().flat_map(Ranked::parts).collect();
    let live = live as i64;
    let k = amount.units_to_prune(live)?;
    let mut selected: Vec<Vec<bool>> = parts.iter().map(|p| vec![false; p.values.len()]).collect();
    if k > 0 {
        let threshold = radix::kth_smallest(&parts, k as u64, Order::Magnitude);
        let missing = k as u64 - threshold.below;
        if missing < threshold.tied && live <= EXACT_TIES_LIMIT {
            return Ok(None);
        }
        let mut flags: Vec<&mut [bool]> = selected.iter_mut().map(Vec::as_mut_slice).collect();
        radix::mark(&parts, threshold, missing, Order::Magnitude, &mut flags);
    }
    let mut selected = selected.into_iter();
    ranked
        .iter()
        .zip(&scores)
        .map(|(ranked, score)| {
            let mask = Tensor::f_empty(score.size(), (Kind::Bool, Device::Cpu))?;
            // SAFETY: a fresh contiguous CPU bool tensor, written only through this slice
            // (every entry of it: `write_kept` leaves none uninitialized).
            let out = unsafe { entries_mut::<bool>(&mask, mask.numel()) };
            ranked.write_kept(&mut selected, out);
            Ok(mask)
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// How one tensor is ranked.
enum Ranked<'a> {
    /// Every entry where it lies (dead entries skipped by the radix passes).
    InPlace(Part<'a>),
    /// Its live entries, gathered; with its mask.
    Gathered(Gathered, &'a [bool]),
}

impl Ranked<'_> {
    fn parts(&self) -> Vec<Part<'_>> {
        match self {
            Ranked::InPlace(part) => vec![*part],
            Ranked::Gathered(gathered, _) => gathered.parts(),
        }
    }

    /// Writes the tensor's new mask into `out` from the selection flags of its parts, taken
    /// from `selected` in order.
    fn write_kept(&self, selected: &mut impl Iterator<Item = Vec<bool>>, out: &mut [bool]) {
        match self {
            Ranked::InPlace(part) => {
                let flags = selected.next().expect("one flag vector per part");
                on_chunks_mut(out, |start, _, chunk| {
                    for (offset, kept) in chunk.iter_mut().enumerate() {
                        let i = start + offset;
                        *kept = !flags[i] & part.alive.map_or(true, |alive| alive[i]);
                    }
                });
            }
            Ranked::Gathered(gathered, alive) => {
                let flags: Vec<Vec<bool>> = selected.take(gathered.ranges.len()).collect();
                let ranges = &gathered.ranges;
                on_chunks_mut(out, |start, end, chunk| {
                    let index = ranges
                        .iter()
                        .position(|r| *r == (start, end))
                        .expect("same chunks");
                    let flags = &flags[index];
                    // Branch-free: every entry reads the flag of the next live one (a dead
                    // entry's read is discarded), and the cursor moves on live entries only.
                    let mut next = 0usize;
                    for (kept, &was_alive) in chunk.iter_mut().zip(&alive[start..end]) {
                        let selected = flags.get(next).copied().unwrap_or(true);
                        *kept = was_alive & !selected;
                        next += usize::from(was_alive);
                    }
                });
            }
        }
    }
}

/// The live entries of a tensor, gathered chunk by chunk (the chunks `on_chunks` uses).
struct Gathered {
    ranges: Vec<(usize, usize)>,
    values: GatheredValues,
}

enum GatheredValues {
    F32(Vec<Vec<f32>>),
    F64(Vec<Vec<f64>>),
    F16(Vec<Vec<u16>>),
    BF16(Vec<Vec<u16>>),
}

/// How many entries of `alive` are `true`: eight at a time, as the bits of a word (a `bool`
/// is the byte 0 or 1), twice as fast as counting them one by one.
fn count_alive(alive: &[bool]) -> usize {
    // SAFETY: `bool` has the size and alignment of `u8`, and its bytes are 0 or 1.
    let bytes = unsafe { std::slice::from_raw_parts(alive.as_ptr().cast::<u8>(), alive.len()) };
    let mut words = bytes.chunks_exact(8);
    let mut count = 0usize;
    for word in &mut words {
        let word = u64::from_ne_bytes(word.try_into().expect("eight bytes"));
        count += word.count_ones() as usize;
    }
    count + words.remainder().iter().filter(|&&b| b != 0).count()
}

/// The live entries of `values`, chunk by chunk (`ranges`, the chunks of `on_chunks`, one
/// worker each); `live_per_chunk` counts them.
fn gather<T: Copy + Default + Send + Sync>(
    values: &[T],
    alive: &[bool],
    ranges: &[(usize, usize)],
    live_per_chunk: &[usize],
) -> Vec<Vec<T>> {
    let inputs: Vec<_> = ranges
        .iter()
        .copied()
        .zip(live_per_chunk.iter().copied())
        .collect();
    on_threads(inputs, |((start, end), live_count)| {
        // Branch-free: write every entry (the slot after the last live one absorbs the dead
        // ones), advance only past live ones.
        let mut out = vec![T::default(); live_count + 1];
        let mut next = 0usize;
        for (&x, &live) in values[start..end].iter().zip(&alive[start..end]) {
            out[next] = x;
            next += usize::from(live);
        }
        out.truncate(next);
        out
    })
}

impl Gathered {
    fn new(values: Values<'_>, alive: &[bool], live_per_chunk: &[usize]) -> Self {
        let ranges = chunks(alive.len());
        let values = match values {
            Values::F32(v) => GatheredValues::F32(gather(v, alive, &ranges, live_per_chunk)),
            Values::F64(v) => GatheredValues::F64(gather(v, alive, &ranges, live_per_chunk)),
            Values::F16(v) => GatheredValues::F16(gather(v, alive, &ranges, live_per_chunk)),
            Values::BF16(v) => GatheredValues::BF16(gather(v, alive, &ranges, live_per_chunk)),
        };
        Self { ranges, values }
    }

    fn parts(&self) -> Vec<Part<'_>> {
        let part = |values| Part {
            values,
            alive: None,
        };
        match &self.values {
            GatheredValues::F32(chunks) => chunks.iter().map(|c| part(Values::F32(c))).collect(),
            GatheredValues::F64(chunks) => chunks.iter().map(|c| part(Values::F64(c))).collect(),
            GatheredValues::F16(chunks) => chunks.iter().map(|c| part(Values::F16(c))).collect(),
            GatheredValues::BF16(chunks) => chunks.iter().map(|c| part(Values::BF16(c))).collect(),
        }
    }
}
