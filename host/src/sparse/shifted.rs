//! The direct convolution's kernel: each output row of each output plane is summed in vector
//! registers over the non-zero weights of its plane, each adding its value times a contiguous
//! run of the zero-padded input (the run its tap reads for that row), then stored once.
//!
//! Why rows in registers: adding each non-zero's whole shifted plane to the output plane in
//! memory (an `axpy` per non-zero) loads and stores every output once per non-zero, so the
//! stores bound it at a vector of multiply-adds per cycle. Summed in registers, a non-zero
//! costs the loads of its run and as many multiply-adds, the row is stored once, and the runs
//! of the few input rows an output row reads stay in the L1 cache while every output plane
//! of the core's range takes its turn at that row.

use super::csr::CsrMatrix;

/// The direct convolution's layout: where each column's shifted plane starts in the padded
/// sample, the padded width, and the output plane's rows and width.
pub(super) struct Shifted {
    pub(super) starts: Vec<usize>,
    pub(super) padded_width: usize,
    pub(super) rows: usize,
    pub(super) width: usize,
}

/// How many floats past a row's last output a row's vectors may read: the padded input holds
/// this many more, whose values land only in lanes that are not stored.
pub(super) const READ_SLACK: usize = PIECE;

/// Outputs of a row summed together: 4 AVX-512 or 8 AVX2 registers.
const PIECE: usize = 64;

/// Each output plane's non-zeros as where their runs start in the padded sample (for output
/// row 0) and their values, plane after plane; and the kernel that sums them.
pub(super) struct Taps {
    plane_starts: Vec<usize>,
    offsets: Vec<usize>,
    values: Vec<f32>,
    /// The largest offset: the run the last output row reads from it ends farthest.
    farthest: usize,
    isa: Isa,
}

impl Taps {
    /// The taps of `weight`'s rows (output planes) in the layout `g`, summed by the widest
    /// kernel this CPU runs.
    pub(super) fn new(weight: &CsrMatrix, g: &Shifted) -> Self {
        let mut taps = Taps {
            plane_starts: Vec::with_capacity(weight.rows() + 1),
            offsets: Vec::with_capacity(weight.nonzeros()),
            values: Vec::with_capacity(weight.nonzeros()),
            farthest: 0,
            isa: Isa::best(),
        };
        taps.plane_starts.push(0);
        for r in 0..weight.rows() {
            weight.for_each_entry(r, |k, v| {
                taps.offsets.push(g.starts[k]);
                taps.values.push(v);
            });
            taps.plane_starts.push(taps.offsets.len());
        }
        taps.farthest = taps.offsets.iter().max().copied().unwrap_or(0);
        taps
    }

    fn of(&self, plane: usize) -> (&[usize], &[f32]) {
        let (a, b) = (self.plane_starts[plane], self.plane_starts[plane + 1]);
        (&self.offsets[a..b], &self.values[a..b])
    }
}

/// The vector instructions a kernel runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(all(target_arch = "x86_64", tchprune_avx512))]
    Avx512,
}

impl Isa {
    /// The widest this CPU has.
    fn best() -> Isa {
        #[cfg(all(target_arch = "x86_64", tchprune_avx512))]
        if crate::cpu::has_avx512f() {
            return Isa::Avx512;
        }
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::has_avx2_fma() {
            return Isa::Avx2;
        }
        Isa::Portable
    }

    /// The floats in a register of sums.
    fn lanes(self) -> usize {
        match self {
            #[cfg(all(target_arch = "x86_64", tchprune_avx512))]
            Isa::Avx512 => 16,
            _ => 8,
        }
    }
}

/// Output planes `start..end` of one sample (`planes`, `rows * width` floats each) of the
/// padded sample `x`, plus `bias` (one per plane, if any).
pub(super) fn shifted_planes(
    taps: &Taps,
    x: &[f32],
    g: &Shifted,
    bias: Option<&[f32]>,
    start: usize,
    end: usize,
    planes: &mut [f32],
) {
    let plane = g.rows * g.width;
    assert!(planes.len() >= (end - start) * plane && end < taps.plane_starts.len());
    assert!(bias.map_or(true, |b| b.len() >= end));
    if plane == 0 {
        return;
    }
    // Every run a row's vectors read lies in `x`: the last row's, from the farthest start.
    let reach = (g.rows - 1) * g.padded_width + g.width.next_multiple_of(PIECE);
    assert!(
        taps.farthest + reach <= x.len(),
        "the padded input lacks its slack"
    );
    // Rows summed together: about 8 registers of sums, so that their chains of multiply-adds
    // keep the units busy (a chain waits on each of its own).
    let block = match 8 / g.width.min(PIECE).div_ceil(taps.isa.lanes()) {
        0 | 1 => 1,
        2 | 3 => 2,
        4..=7 => 4,
        _ => 8,
    };
    let job = Job {
        taps,
        x,
        bias,
        start,
        end,
    };
    let mut oy = 0;
    while oy < g.rows {
        let rows = if g.rows - oy >= block { block } else { 1 };
        for first in (0..g.width).step_by(PIECE) {
            let piece = Piece {
                input: oy * g.padded_width + first,
                output: oy * g.width + first,
                len: (g.width - first).min(PIECE),
                rows,
                input_stride: g.padded_width,
                output_stride: g.width,
                plane,
            };
            // SAFETY (both): the CPU has the ISA (`Isa::best`, or a test's check); every read
            // and write is in bounds (asserted above).
            match taps.isa {
                #[cfg(all(target_arch = "x86_64", tchprune_avx512))]
                Isa::Avx512 => unsafe { piece_avx512(&job, &piece, planes) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { piece_avx2(&job, &piece, planes) },
                Isa::Portable => piece_portable(&job, &piece, planes),
            }
        }
        oy += rows;
    }
}

/// What every piece of a call shares: the taps, the padded sample, the bias, and the planes
/// `start..end` it computes.
#[derive(Clone, Copy)]
struct Job<'a> {
    taps: &'a Taps,
    x: &'a [f32],
    bias: Option<&'a [f32]>,
    start: usize,
    end: usize,
}

/// Up to [`PIECE`] outputs of each of `rows` output rows: where their runs start past each
/// tap's offset (rows `input_stride` apart), where their outputs start in each plane (rows
/// `output_stride` apart), how many there are per row, and the floats per plane.
struct Piece {
    input: usize,
    output: usize,
    len: usize,
    rows: usize,
    input_stride: usize,
    output_stride: usize,
    plane: usize,
}

fn piece_portable(job: &Job, piece: &Piece, planes: &mut [f32]) {
    let Job {
        taps,
        x,
        bias,
        start,
        end,
    } = *job;
    for r in start..end {
        let (offsets, values) = taps.of(r);
        let b = bias.map_or(0.0, |b| b[r]);
        for j in 0..piece.rows {
            let mut sums = [0.0f32; PIECE];
            for (offset, v) in offsets.iter().zip(values) {
                let run = &x[offset + piece.input + j * piece.input_stride..][..piece.len];
                for (sum, x) in sums.iter_mut().zip(run) {
                    *sum += v * x;
                }
            }
            let at = (r - start) * piece.plane + piece.output + j * piece.output_stride;
            for (y, sum) in planes[at..at + piece.len].iter_mut().zip(sums) {
                *y = sum + b;
            }
        }
    }
}

/// The kernel of an ISA: `$name` runs a piece in `$generic::<N, R>`, `R` rows of `N` registers
/// of `$lanes` sums each, for the `(N, R)` shapes listed. Each non-zero's runs are loaded and
/// multiplied-added register by register, then the bias added and the last register of each row
/// stored in part.
#[cfg(target_arch = "x86_64")]
macro_rules! piece_kernel {
    (
        $(#[$attr:meta])*
        $name:ident, $generic:ident, features: $features:literal, lanes: $lanes:literal,
        shapes: [$(($n:literal, $r:literal)),*],
        zero: $zero:path, splat: $splat:path, load: $load:path, fma: $fma:path, add: $add:path,
        store: $store:path, store_part: $store_part:path
    ) => {
        /// # Safety
        /// The CPU has the features; `x` holds every run the piece reads, `planes` every output
        /// it writes.
        $(#[$attr])*
        #[target_feature(enable = $features)]
        unsafe fn $name(job: &Job, piece: &Piece, planes: &mut [f32]) {
            // SAFETY: as the caller promises.
            unsafe {
                match (piece.len.div_ceil($lanes), piece.rows) {
                    $(($n, $r) => $generic::<$n, $r>(job, piece, planes),)*
                    shape => unreachable!("no kernel for {shape:?}"),
                }
            }
        }

        /// The piece in `N` registers of sums for each of `R` rows.
        ///
        /// # Safety
        /// As the dispatcher's; the piece has `R` rows of more than `lanes * (N - 1)` outputs.
        $(#[$attr])*
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn $generic<const N: usize, const R: usize>(
            job: &Job,
            piece: &Piece,
            planes: &mut [f32],
        ) {
            let Job { taps, x, bias, start, end } = *job;
            use std::arch::x86_64::*;
            let rest = piece.len - $lanes * (N - 1);
            // SAFETY: as the caller promises.
            unsafe {
                for r in start..end {
                    let mut sums = [[$zero(); N]; R];
                    let (offsets, values) = taps.of(r);
                    for (offset, v) in offsets.iter().zip(values) {
                        let run = x.as_ptr().add(offset + piece.input);
                        let v = $splat(*v);
                        for j in 0..R {
                            let run = run.add(j * piece.input_stride);
                            for i in 0..N {
                                sums[j][i] = $fma(v, $load(run.add($lanes * i)), sums[j][i]);
                            }
                        }
                    }
                    let b = $splat(bias.map_or(0.0, |bias| bias[r]));
                    let out = planes.as_mut_ptr().add((r - start) * piece.plane + piece.output);
                    for j in 0..R {
                        let out = out.add(j * piece.output_stride);
                        for i in 0..N - 1 {
                            $store(out.add($lanes * i), $add(sums[j][i], b));
                        }
                        let last = $add(sums[j][N - 1], b);
                        $store_part(out.add($lanes * (N - 1)), rest, last);
                    }
                }
            }
        }
    };
}

piece_kernel! {
    #[cfg(all(target_arch = "x86_64", tchprune_avx512))]
    // Compiled only by Rust 1.89 or later (`tchprune_avx512`, set by the build script).
    #[allow(clippy::incompatible_msrv)]
    piece_avx512, piece_avx512_of, features: "avx512f", lanes: 16,
    shapes: [(1, 1), (1, 2), (1, 4), (1, 8), (2, 1), (2, 2), (2, 4), (3, 1), (3, 2), (4, 1), (4, 2)],
    zero: _mm512_setzero_ps, splat: _mm512_set1_ps, load: _mm512_loadu_ps, fma: _mm512_fmadd_ps,
    add: _mm512_add_ps, store: _mm512_storeu_ps, store_part: store_part_avx512
}

piece_kernel! {
    #[cfg(target_arch = "x86_64")]
    piece_avx2, piece_avx2_of, features: "avx2,fma", lanes: 8,
    shapes: [
        (1, 1), (1, 2), (1, 4), (1, 8), (2, 1), (2, 2), (2, 4), (3, 1), (3, 2), (4, 1), (4, 2),
        (5, 1), (6, 1), (7, 1), (8, 1)
    ],
    zero: _mm256_setzero_ps, splat: _mm256_set1_ps, load: _mm256_loadu_ps, fma: _mm256_fmadd_ps,
    add: _mm256_add_ps, store: _mm256_storeu_ps, store_part: store_part_avx2
}

/// Stores the first `n` (1 to 16) lanes of `v` at `p`.
///
/// # Safety
/// The CPU has AVX-512F; `n` floats are writable at `p`.
#[cfg(all(target_arch = "x86_64", tchprune_avx512))]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::incompatible_msrv)]
unsafe fn store_part_avx512(p: *mut f32, n: usize, v: std::arch::x86_64::__m512) {
    use std::arch::x86_64::*;
    // SAFETY: as the caller promises; the lanes past `n` are masked off.
    unsafe { _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as __mmask16, v) }
}

/// Stores the first `n` (1 to 8) lanes of `v` at `p`.
///
/// # Safety
/// The CPU has AVX2; `n` floats are writable at `p`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_part_avx2(p: *mut f32, n: usize, v: std::arch::x86_64::__m256) {
    use std::arch::x86_64::*;
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes);
    // SAFETY: as the caller promises; the lanes past `n` are masked off.
    unsafe { _mm256_maskstore_ps(p, mask, v) }
}

#[cfg(test)]
mod tests {
    use super::{shifted_planes, Isa, Shifted, Taps, READ_SLACK};
    use crate::sparse::CsrMatrix;
    use tch::Tensor;

    /// The ISAs this CPU has.
    fn isas() -> Vec<Isa> {
        let mut isas = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::has_avx2_fma() {
            isas.push(Isa::Avx2);
        }
        #[cfg(all(target_arch = "x86_64", tchprune_avx512))]
        if crate::cpu::has_avx512f() {
            isas.push(Isa::Avx512);
        }
        isas
    }

    #[test]
    fn every_kernel_gives_the_exact_sums_at_every_width_and_height() {
        // A 3x3 kernel at stride 1 over 3 channels into 5 planes, weights and inputs small
        // integers (sums exact in f32, whatever their order), a third of the weights zero.
        let (channels, out, k) = (3, 5, 3);
        let cols = channels * k * k;
        let weights: Vec<f32> = (0..out * cols)
            .map(|i| ((i * 7) % 9) as f32 / 2.0 - 2.0)
            .map(|w| if w.fract() != 0.0 { 0.0 } else { w })
            .collect();
        assert!(weights.contains(&0.0) && weights.iter().any(|w| *w != 0.0));
        let weight = Tensor::from_slice(&weights).reshape([out as i64, cols as i64]);
        let weight = CsrMatrix::from_dense(&weight).unwrap();
        let bias: Vec<f32> = (0..out).map(|o| o as f32 * 0.5 - 1.0).collect();
        // Widths of one to eight vectors of either ISA and several pieces; heights that leave
        // rows past the last whole block.
        for (width, rows) in [
            (1, 1),
            (5, 3),
            (8, 9),
            (14, 7),
            (16, 5),
            (17, 11),
            (31, 6),
            (33, 9),
            (48, 3),
            (49, 5),
            (64, 2),
            (65, 3),
            (100, 5),
            (130, 3),
        ] {
            let wq = width + k - 1;
            let plane = (rows + k) * wq;
            let starts = (0..cols)
                .map(|col| (col / 9) * plane + (col / 3 % 3) * wq + col % 3)
                .collect();
            let g = Shifted {
                starts,
                padded_width: wq,
                rows,
                width,
            };
            let mut taps = Taps::new(&weight, &g);
            let x: Vec<f32> = (0..channels * plane + READ_SLACK)
                .map(|i| ((i * 13) % 9) as f32 - 4.0)
                .collect();
            let expected = |o: usize, with_bias: bool, oy: usize, ox: usize| {
                let sum: f32 = (0..cols)
                    .map(|col| weights[o * cols + col] * x[g.starts[col] + oy * wq + ox])
                    .sum();
                sum + if with_bias { bias[o] } else { 0.0 }
            };
            for isa in isas() {
                taps.isa = isa;
                for (start, end, with_bias) in [(0, out, true), (1, 4, false)] {
                    let mut planes = vec![f32::NAN; (end - start) * rows * width];
                    let b = with_bias.then_some(&bias[..]);
                    shifted_planes(&taps, &x, &g, b, start, end, &mut planes);
                    for (o, plane) in (start..end).zip(planes.chunks_exact(rows * width)) {
                        for (oy, row) in plane.chunks_exact(width).enumerate() {
                            for (ox, y) in row.iter().enumerate() {
                                let at = format!("{isa:?} {width}x{rows}: plane {o} at {oy},{ox}");
                                assert_eq!(*y, expected(o, with_bias, oy, ox), "{at}");
                            }
                        }
                    }
                }
            }
        }
    }
}
