//! Exact selection of the `k` smallest entries by radix select, over one flat tensor or over
//! the live entries of many tensors without concatenating them.
//!
//! Floats map to unsigned keys that sort like the values (NaN last, as `topk` ranks it), so
//! the k-th smallest key is found with one histogram per 11 bits of key (2048 counters, which
//! stay in the L1 cache): three passes over the data for f32, two for f16/bf16, six for f64,
//! each split across the CPU's cores.
//! Everything strictly below the threshold is selected, then tied entries in index order until
//! exactly `k` are. Callers decide what to do when ties make the choice ambiguous.

use crate::parallel::{on_units, on_units_mut};

/// The entries of one tensor, as stored (contiguous, on the CPU).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Values<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    /// IEEE half precision, as raw bits.
    F16(&'a [u16]),
    /// bfloat16, as raw bits.
    BF16(&'a [u16]),
}

impl Values<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::F16(v) | Values::BF16(v) => v.len(),
        }
    }

    /// Bits of key (16, 32 or 64).
    fn key_bits(&self) -> u32 {
        match self {
            Values::F32(_) => 32,
            Values::F64(_) => 64,
            Values::F16(_) | Values::BF16(_) => 16,
        }
    }
}

/// Calls `f(i, key)` for every live entry `i` in `start..end` of `part`, with the dtype and
/// liveness decided once per call rather than per entry.
#[inline]
fn scan(part: &Part<'_>, start: usize, end: usize, order: Order, mut f: impl FnMut(usize, u64)) {
    fn each<T: Copy>(
        values: &[T],
        alive: Option<&[bool]>,
        start: usize,
        end: usize,
        key: impl Fn(T) -> u64,
        f: &mut impl FnMut(usize, u64),
    ) {
        let values = &values[start..end];
        match alive {
            None => {
                for (offset, &x) in values.iter().enumerate() {
                    f(start + offset, key(x));
                }
            }
            Some(alive) => {
                // Pruned entries get a key above every live one (magnitude keys never have the
                // top bit): no branch per entry, and they never reach the threshold.
                for (offset, (&x, &live)) in values.iter().zip(&alive[start..end]).enumerate() {
                    f(start + offset, if live { key(x) } else { u64::MAX });
                }
            }
        }
    }
    // One loop per dtype and order, so that the key computation has no runtime branch on
    // either and the loops vectorize.
    macro_rules! dispatch {
        ($($variant:ident($ty:ty, $bits:expr, $infinity:expr, $to_bits:expr)),*) => {
            match (part.values, order) {
                $(
                    (Values::$variant(v), Order::Ascending) => each(v, part.alive, start, end,
                        |x: $ty| float_key($to_bits(x), $bits, $infinity, false), &mut f),
                    (Values::$variant(v), Order::Descending) => each(v, part.alive, start, end,
                        |x: $ty| !float_key($to_bits(x), $bits, $infinity, false) & (u64::MAX >> (64 - $bits)), &mut f),
                    (Values::$variant(v), Order::Magnitude) => each(v, part.alive, start, end,
                        |x: $ty| float_key($to_bits(x), $bits, $infinity, true), &mut f),
                )*
            }
        };
    }
    dispatch!(
        F32(f32, 32, 0x7f80_0000, |x: f32| u64::from(x.to_bits())),
        F64(f64, 64, 0x7ff0_0000_0000_0000, |x: f64| x.to_bits()),
        F16(u16, 16, 0x7c00, u64::from),
        BF16(u16, 16, 0x7f80, u64::from)
    )
}

/// How entries rank: the smallest key is selected first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Order {
    /// Smallest values first.
    Ascending,
    /// Largest values first.
    Descending,
    /// Smallest magnitudes first.
    Magnitude,
}

/// The key of a float of `width` bits whose infinity has the bits `infinity`: its magnitude's
/// bits, or (signed) bits flipped so that negative values sort first; NaN sorts last either way.
#[inline]
fn float_key(bits: u64, width: u32, infinity: u64, magnitude: bool) -> u64 {
    let sign = 1u64 << (width - 1);
    let all = u64::MAX >> (64 - width);
    let unsigned = bits & !sign & all;
    if magnitude {
        return unsigned;
    }
    // Branch-free, so that the scans vectorize: negative values have all their bits flipped,
    // others only the sign bit; NaN (either sign) goes last.
    let negative = 0u64.wrapping_sub((bits >> (width - 1)) & 1) & all;
    let ordered = bits ^ (negative | sign);
    if unsigned > infinity {
        all
    } else {
        ordered
    }
}

/// One tensor's part of a selection: its values and, for an already pruned tensor, which
/// entries are still alive (only those are ranked; only with [`Order::Magnitude`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Part<'a> {
    pub values: Values<'a>,
    pub alive: Option<&'a [bool]>,
}

/// The k-th smallest key and how the entries fall around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Threshold {
    /// The k-th smallest key.
    pub key: u64,
    /// Live entries strictly below it (fewer than k).
    pub below: u64,
    /// Live entries equal to it.
    pub tied: u64,
}

/// Bits per radix digit.
const DIGIT: u32 = 11;

/// A histogram of the `width`-bit digits at `shift` of the live keys whose higher bits equal
/// `prefix`.
fn histogram(
    parts: &[Part<'_>],
    order: Order,
    shift: u32,
    width: u32,
    prefix: Option<u64>,
) -> Vec<u64> {
    let digit_mask = (1u64 << width) - 1;
    let bins = 1usize << width;
    let partials = on_units(&lengths(parts), |units| {
        let mut total = vec![0u64; bins];
        // Four interleaved histograms: runs of one digit (common in the top bits of floats)
        // would otherwise wait on the same counter. `u32` counters keep them in the L1 cache;
        // they are added to `total` before they could overflow.
        let mut counts = vec![0u32; 4 * bins];
        let mut pending = 0usize;
        let mut flush = |counts: &mut [u32]| {
            let (a, rest) = counts.split_at(bins);
            let (b, rest) = rest.split_at(bins);
            let (c, d) = rest.split_at(bins);
            for (j, sum) in total.iter_mut().enumerate() {
                *sum += u64::from(a[j]) + u64::from(b[j]) + u64::from(c[j]) + u64::from(d[j]);
            }
            counts.fill(0);
        };
        for unit in units {
            if pending + unit.len() > u32::MAX as usize {
                flush(&mut counts);
                pending = 0;
            }
            pending += unit.len();
            let part = &parts[unit.seq];
            match prefix {
                None => scan(part, unit.start, unit.end, order, |i, key| {
                    counts[(i & 3) * bins + ((key >> shift) & digit_mask) as usize] += 1;
                }),
                Some(prefix) => scan(part, unit.start, unit.end, order, |i, key| {
                    if key.checked_shr(shift + width).unwrap_or(0) == prefix {
                        counts[(i & 3) * bins + ((key >> shift) & digit_mask) as usize] += 1;
                    }
                }),
            }
        }
        flush(&mut counts);
        total
    });
    let mut total = vec![0u64; bins];
    for counts in partials {
        for (sum, c) in total.iter_mut().zip(counts) {
            *sum += c;
        }
    }
    total
}

fn lengths(parts: &[Part<'_>]) -> Vec<usize> {
    parts.iter().map(|p| p.values.len()).collect()
}

/// The k-th smallest key (1 <= k <= live entries) of the live entries of `parts`.
pub(crate) fn kth_smallest(parts: &[Part<'_>], k: u64, order: Order) -> Threshold {
    let bits = parts.first().map_or(32, |p| p.values.key_bits());
    if lengths(parts).iter().sum::<usize>() <= SMALL {
        // A histogram of 2048 counters per digit costs more than the entries themselves.
        let mut keys = Vec::new();
        for part in parts {
            scan(part, 0, part.values.len(), order, |_, key| keys.push(key));
        }
        return threshold_among(keys, k, 0);
    }
    let mut prefix: Option<u64> = None;
    let mut below = 0u64;
    let mut shift = bits;
    loop {
        let width = DIGIT.min(shift);
        shift -= width;
        let counts = histogram(parts, order, shift, width, prefix);
        let mut digit = 0usize;
        while below + counts[digit] < k {
            below += counts[digit];
            digit += 1;
        }
        let high = prefix.map_or(0, |p| p << width) | digit as u64;
        if shift == 0 {
            return Threshold {
                key: high,
                below,
                tied: counts[digit],
            };
        }
        if counts[digit] <= MAX_CANDIDATES {
            // Few enough keys share this prefix: finish on them in memory (one more pass
            // instead of one per remaining digit).
            return finish_on_candidates(parts, order, shift, high, k - below, below);
        }
        prefix = Some(high);
    }
}

/// Up to this many entries in all, the threshold is found among all the keys at once.
const SMALL: usize = 1 << 12;

/// Above this many keys in the threshold's bin, radix passes go on instead of collecting them.
const MAX_CANDIDATES: u64 = 1 << 22;

/// The threshold from the live keys whose bits above `shift` equal `prefix`: the `rank`-th
/// smallest of them (from 1), with `below_prefix` keys known to lie below them all.
fn finish_on_candidates(
    parts: &[Part<'_>],
    order: Order,
    shift: u32,
    prefix: u64,
    rank: u64,
    below_prefix: u64,
) -> Threshold {
    let found = on_units(&lengths(parts), |units| {
        let mut found = Vec::new();
        for unit in units {
            scan(&parts[unit.seq], unit.start, unit.end, order, |_, key| {
                if key.checked_shr(shift).unwrap_or(0) == prefix {
                    found.push(key);
                }
            });
        }
        found
    });
    threshold_among(found.concat(), rank, below_prefix)
}

/// The `rank`-th smallest (from 1) of `candidates`, with `below` keys known to lie below them.
fn threshold_among(mut candidates: Vec<u64>, rank: u64, below: u64) -> Threshold {
    let index = (rank - 1) as usize;
    let (smaller, &mut key, _) = candidates.select_nth_unstable(index);
    let below_in_bin = smaller.iter().filter(|&&c| c < key).count() as u64;
    let tied = candidates.iter().filter(|&&c| c == key).count() as u64;
    Threshold {
        key,
        below: below + below_in_bin,
        tied,
    }
}

/// Marks the selected live entries of each part in `out` (one flag per entry): those below the
/// threshold, and the first `take_tied` tied ones in order (part by part, index by index).
pub(crate) fn mark(
    parts: &[Part<'_>],
    threshold: Threshold,
    take_tied: u64,
    order: Order,
    out: &mut [&mut [bool]],
) {
    if lengths(parts).iter().sum::<usize>() <= SMALL {
        // No threads for a few entries: below the threshold, then ties in order.
        let mut remaining = take_tied;
        for (part, out) in parts.iter().zip(out.iter_mut()) {
            scan(part, 0, part.values.len(), order, |i, key| {
                let tied = key == threshold.key && remaining > 0;
                remaining -= u64::from(tied);
                out[i] = key < threshold.key || tied;
            });
        }
        return;
    }
    let tied_per_unit = on_units_mut(out, |unit, chunk| {
        let mut tied = 0u64;
        scan(&parts[unit.seq], unit.start, unit.end, order, |i, key| {
            // SAFETY: `scan` only yields indices in the unit's range, which `chunk` covers.
            unsafe { *chunk.get_unchecked_mut(i - unit.start) = key < threshold.key };
            tied += u64::from(key == threshold.key);
        });
        tied
    });
    let mut remaining = take_tied;
    for (index, (part, out)) in parts.iter().zip(out.iter_mut()).enumerate() {
        if remaining == 0 {
            break;
        }
        let has_ties = tied_per_unit
            .iter()
            .any(|(unit, tied)| unit.seq == index && *tied > 0);
        if !has_ties {
            continue;
        }
        scan(part, 0, part.values.len(), order, |i, key| {
            if remaining > 0 && key == threshold.key {
                out[i] = true;
                remaining -= 1;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(values: &[f32], k: u64, order: Order) -> Vec<bool> {
        let part = Part {
            values: Values::F32(values),
            alive: None,
        };
        let threshold = kth_smallest(&[part], k, order);
        let mut out = vec![false; values.len()];
        mark(
            &[part],
            threshold,
            k - threshold.below,
            order,
            &mut [&mut out],
        );
        out
    }

    #[test]
    fn keys_order_like_the_values_with_nan_last() {
        let values = [
            -f32::INFINITY,
            -2.0,
            -0.0,
            0.0,
            1e-30,
            3.0,
            f32::INFINITY,
            -f32::NAN,
        ];
        let keys: Vec<u64> = (0..values.len())
            .map(|i| float_key(u64::from(values[i].to_bits()), 32, 0x7f80_0000, false))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{keys:?}");
        let magnitudes: Vec<u64> = [0.0f32, 1.0, -2.0, 3.0, f32::NAN]
            .iter()
            .map(|v| float_key(u64::from(v.to_bits()), 32, 0x7f80_0000, true))
            .collect();
        assert!(magnitudes.windows(2).all(|w| w[0] < w[1]), "{magnitudes:?}");
    }

    #[test]
    fn selects_exactly_k_with_ties_in_index_order() {
        let values = [3.0, -1.0, 2.0, 1.0, -2.0, 1.0, 5.0];
        assert_eq!(
            select(&values, 2, Order::Magnitude),
            [false, true, false, true, false, false, false]
        );
        assert_eq!(
            select(&values, 3, Order::Ascending),
            [false, true, false, true, true, false, false]
        );
        assert_eq!(
            select(&values, 2, Order::Descending),
            [true, false, false, false, false, false, true]
        );
        assert_eq!(select(&values, 7, Order::Magnitude), [true; 7]);
    }

    #[test]
    fn only_live_entries_count_across_parts() {
        let (a, b) = ([1.0f32, 9.0, 2.0], [0.5f32, 8.0]);
        let alive_a = [false, true, true];
        let parts = [
            Part {
                values: Values::F32(&a),
                alive: Some(&alive_a),
            },
            Part {
                values: Values::F32(&b),
                alive: None,
            },
        ];
        let threshold = kth_smallest(&parts, 2, Order::Magnitude);
        assert_eq!(threshold.below, 1);
        let (mut out_a, mut out_b) = ([false; 3], [false; 2]);
        mark(
            &parts,
            threshold,
            1,
            Order::Magnitude,
            &mut [&mut out_a, &mut out_b],
        );
        assert_eq!((out_a, out_b), ([false, false, true], [true, false]));
    }
}
