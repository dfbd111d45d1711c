//! A CSR matrix of `f32` or bf16 weights and the kernel that multiplies by it.
//!
//! Why not libtorch's CSR (MKL): at batch 1 it barely beats the dense `linear` at 90% sparsity,
//! where the bytes read promise about 5x. This kernel reads less (16-bit column indices when
//! the weight has at most 65,536 columns), splits the rows among the cores by their non-zero
//! count, and for a batch keeps one block of up to 32 outputs per row in vector registers while
//! it walks the row's non-zeros over a transposed copy of the input (AVX2 where the CPU has it;
//! with AVX-512, blocks of up to 64, in half the instructions, so that a batch of 64 reads the
//! weight once; built with Rust 1.89 or later, whose compiler has AVX-512);
//! each core writes its rows' outputs back to the samples a chunk at a time, while the chunk is
//! in its cache (a tall layer's outputs at batch 64 are megabytes).
//! A bf16 weight keeps its values in bf16 (widening one to `f32` is a shift), so a bf16 model's
//! kernel reads two thirds of the bytes a `f32` copy of its weights would make it read at
//! batch 1, where the bytes decide; blocks of 8 samples read a copy widened to `f32` once,
//! since there the broadcast of a bf16 value (a shuffle) costs more than the bytes.
//! Rows are stored by their non-zero count within windows ([`RowOrder`]): on short rows, the
//! exits of the loops over them are then predicted.

use super::row_order::RowOrder;
#[cfg(target_arch = "x86_64")]
use crate::cpu::has_avx2_fma;
#[cfg(all(target_arch = "x86_64", tchprune_avx512))]
use crate::cpu::has_avx512f;
use crate::error::{PruneError, Result};
use crate::parallel;
use crate::tensor_data::{entries, entries_mut};
use tch::{Device, Kind, Tensor};

/// The floats of a contiguous `f32` CPU tensor.
///
/// # Safety
/// `t` is a contiguous `f32` CPU tensor, and outlives the slice.
pub(super) unsafe fn floats(t: &Tensor) -> &[f32] {
    // SAFETY: as the caller promises.
    unsafe { entries(t, t.numel()) }
}

/// The floats of a contiguous `f32` CPU tensor, to write.
///
/// # Safety
/// As [`floats`], and nothing else reads or writes `t` while the slice lives.
#[allow(clippy::mut_from_ref)]
pub(super) unsafe fn floats_mut(t: &Tensor) -> &mut [f32] {
    // SAFETY: as the caller promises.
    unsafe { entries_mut(t, t.numel()) }
}

/// Column indices, as narrow as the number of columns allows.
#[derive(Clone, Debug)]
enum Columns {
    U16(Vec<u16>),
    U32(Vec<u32>),
}

/// A stored weight, widened to the `f32` the kernels sum in.
trait Value: Copy + Send + Sync {
    fn get(self) -> f32;

    /// The eight values at `p`, widened.
    ///
    /// # Safety
    /// The CPU has AVX2, and `p` points at eight readable values.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;

    /// The value at `p`, widened, in every lane.
    ///
    /// # Safety
    /// The CPU has AVX2, and `p` points at a readable value.
    #[cfg(target_arch = "x86_64")]
    unsafe fn broadcast(p: *const Self) -> std::arch::x86_64::__m256;
}

impl Value for f32 {
    #[inline(always)]
    fn get(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        // SAFETY: as the caller promises.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn broadcast(p: *const Self) -> std::arch::x86_64::__m256 {
        // SAFETY: as the caller promises.
        unsafe { std::arch::x86_64::_mm256_broadcast_ss(&*p) }
    }
}

/// A bf16 weight: the upper half of the bits of the `f32` it widens to, exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
struct Bf16(u16);

impl Value for Bf16 {
    #[inline(always)]
    fn get(self) -> f32 {
        f32::from_bits(u32::from(self.0) << 16)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: as the caller promises: 16 bytes at `p`.
        unsafe {
            let halves = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(halves))
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn broadcast(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: as the caller promises. Both halves of each lane get the value's bits; the
        // lower one is cleared.
        unsafe {
            let both = _mm256_set1_epi16((*p).0 as i16);
            _mm256_castsi256_ps(_mm256_and_si256(both, _mm256_set1_epi32(-65536)))
        }
    }
}

/// The non-zero values, in the weight's own precision where the kernels can widen it on the
/// fly (bf16), else in `f32`.
#[derive(Clone, Debug)]
enum Values {
    F32(Vec<f32>),
    Bf16(Vec<Bf16>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::Bf16(v) => v.len(),
        }
    }

    /// The bytes of one value.
    fn width(&self) -> usize {
        match self {
            Values::F32(_) => 4,
            Values::Bf16(_) => 2,
        }
    }

    /// The values at `positions`, in that order.
    fn gather(&self, positions: &[u32]) -> Values {
        match self {
            Values::F32(v) => Values::F32(positions.iter().map(|&k| v[k as usize]).collect()),
            Values::Bf16(v) => Values::Bf16(positions.iter().map(|&k| v[k as usize]).collect()),
        }
    }
}

/// One view of a matrix's rows, in its column and value types.
struct Entries<'a, C, V> {
    /// Where the entries of each slot start (rows are stored in `order`).
    row_starts: &'a [u32],
    columns: &'a [C],
    values: &'a [V],
    order: &'a RowOrder,
}

impl<C, V> Entries<'_, C, V> {
    /// Where row `r`'s entries start and end.
    #[inline(always)]
    fn row(&self, r: usize) -> (usize, usize) {
        let p = self.order.slot(r);
        (self.row_starts[p] as usize, self.row_starts[p + 1] as usize)
    }

    /// `(row, start, end)` for each of rows `start..end` and its entries, in the order they
    /// are stored.
    #[inline(always)]
    fn rows_in(
        &self,
        start: usize,
        end: usize,
    ) -> impl Iterator<Item = (usize, usize, usize)> + Clone + '_ {
        let starts = self.row_starts;
        let slots = self.order.slots_of(start, end);
        slots.map(move |(p, r)| (r, starts[p] as usize, starts[p + 1] as usize))
    }
}

/// `$body` with `$entries` bound to the [`Entries`] of the matrix `$m`, in whichever of the
/// column and value types it stores (or with the values `$values` instead of its own).
macro_rules! with_entries {
    ($m:expr, $values:ident, $entries:ident => $body:expr) => {
        match &$m.columns {
            Columns::U16(columns) => {
                let $entries = Entries {
                    row_starts: &$m.row_starts,
                    columns,
                    values: $values,
                    order: &$m.order,
                };
                $body
            }
            Columns::U32(columns) => {
                let $entries = Entries {
                    row_starts: &$m.row_starts,
                    columns,
                    values: $values,
                    order: &$m.order,
                };
                $body
            }
        }
    };
    ($m:expr, $entries:ident => $body:expr) => {
        match &$m.values {
            Values::F32(values) => with_entries!($m, values, $entries => $body),
            Values::Bf16(values) => with_entries!($m, values, $entries => $body),
        }
    };
}

/// A weight `[rows, cols]` in compressed sparse rows: the non-zero values of each row and their
/// columns.
#[derive(Clone, Debug)]
pub struct CsrMatrix {
    rows: usize,
    cols: usize,
    row_starts: Vec<u32>,
    columns: Columns,
    values: Values,
    /// Row ranges of about equal non-zero counts, one per core.
    row_ranges: Vec<(usize, usize)>,
    /// The slot each row is stored in: `row_starts`, `columns` and `values` (and their tiled
    /// copy) hold the rows slot by slot.
    order: RowOrder,
    /// The same entries tiled by columns, made on the first call with a batch.
    tiled: std::sync::OnceLock<Tiled>,
    /// A bf16 matrix's values widened to `f32`, made on the first call with a block of 8.
    widened: std::sync::OnceLock<Vec<f32>>,
}

/// The entries of a [`CsrMatrix`] in tiles of [`TILE_COLUMNS`] columns, row by row within each
/// tile: a batch's inputs for one tile stay in the L1 cache while every row's non-zeros in that
/// tile read them, instead of each non-zero fetching its input row from wherever it lies.
#[derive(Clone, Debug)]
struct Tiled {
    tiles: usize,
    /// `starts[t * (rows + 1) + p]`: where the entries of slot `p` (see [`RowOrder`]) in tile
    /// `t` start.
    starts: Vec<u32>,
    /// Columns within the tile.
    columns: Vec<u8>,
    values: Values,
}

impl Tiled {
    /// Where the entries of each slot in `tile` start, and where the last slot's end.
    fn starts_of(&self, tile: usize) -> &[u32] {
        let per_tile = self.starts.len() / self.tiles;
        &self.starts[tile * per_tile..(tile + 1) * per_tile]
    }
}

/// The largest transposed block of 8 samples read without tiles (an L2 cache holds it).
const UNTILED_INPUT_BYTES: usize = 256 << 10;

/// Columns per tile: a block of 32 samples of 256 inputs is 32 KiB, an L1 cache.
const TILE_COLUMNS: usize = 256;

/// The outputs of a chunk of rows a core computes, then writes to the samples while they are
/// in its L2 cache.
const CHUNK_OUTPUT_BYTES: usize = 64 << 10;

/// Row ranges per core: a core that finishes its range takes the next, so that a core slowed
/// by other work (another process, the machine's other tenants) holds up the product less.
const RANGES_PER_CORE: usize = 4;

/// Below this many multiply-adds a call stays on the calling thread.
const PARALLEL_WORK: usize = 1 << 17;

impl CsrMatrix {
    /// The non-zero entries of the 2-d floating-point tensor `weight` (on any device, any float
    /// dtype): bf16 values are stored as they are, those of other dtypes as `f32`.
    pub fn from_dense(weight: &Tensor) -> Result<Self> {
        let size = weight.size();
        if size.len() != 2 || !weight.is_floating_point() {
            return Err(PruneError::InvalidArgument {
                method: "sparse".to_owned(),
                argument: "weight".to_owned(),
                reason: format!(
                    "a sparse linear layer takes a 2-d float weight, got {:?} {:?}",
                    weight.kind(),
                    size
                ),
            });
        }
        let (rows, cols) = (size[0] as usize, size[1] as usize);
        let on_cpu = weight.f_to_device(Device::Cpu)?.f_contiguous()?;
        let (order, row_starts, columns, values) = if weight.kind() == Kind::BFloat16 {
            let bits: Vec<i16> = Vec::try_from(on_cpu.f_view_dtype(Kind::Int16)?.f_view(-1)?)?;
            let (order, starts, columns, bits) = compress(&bits, rows, cols, |b| b & 0x7fff != 0)?;
            let values = bits.into_iter().map(|b| Bf16(b as u16)).collect();
            (order, starts, columns, Values::Bf16(values))
        } else {
            let dense: Vec<f32> = Vec::try_from(on_cpu.f_to_kind(Kind::Float)?.f_view(-1)?)?;
            let (order, starts, columns, values) = compress(&dense, rows, cols, |v| v != 0.0)?;
            (order, starts, columns, Values::F32(values))
        };
        let columns = if cols <= 1 << 16 {
            Columns::U16(columns.into_iter().map(|c| c as u16).collect())
        } else {
            Columns::U32(columns)
        };
        let parts = parallel::threads() * RANGES_PER_CORE;
        let row_ranges = balanced_rows(&row_starts, parts, order.window());
        Ok(Self {
            rows,
            cols,
            row_starts,
            columns,
            values,
            row_ranges,
            order,
            tiled: std::sync::OnceLock::new(),
            widened: std::sync::OnceLock::new(),
        })
    }

    /// The number of rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The number of columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The number of non-zero entries stored.
    pub fn nonzeros(&self) -> usize {
        self.values.len()
    }

    /// The dtype the non-zero values are stored in: `BFloat16` for a bf16 weight, else `Float`.
    pub fn value_kind(&self) -> Kind {
        match self.values {
            Values::F32(_) => Kind::Float,
            Values::Bf16(_) => Kind::BFloat16,
        }
    }

    /// The bytes the matrix occupies: values, column indices and row starts, and the copies
    /// its kernels made of them (tiled by columns, or widened from bf16).
    pub fn bytes(&self) -> usize {
        let index = match &self.columns {
            Columns::U16(c) => c.len() * 2,
            Columns::U32(c) => c.len() * 4,
        };
        let tiled = self.tiled.get().map_or(0, |t| {
            t.values.len() * t.values.width() + t.columns.len() + t.starts.len() * 4
        });
        let widened = self.widened.get().map_or(0, |w| w.len() * 4);
        self.values.len() * self.values.width()
            + index
            + self.row_starts.len() * 4
            + self.order.bytes()
            + tiled
            + widened
    }

    fn column(&self, k: usize) -> usize {
        match &self.columns {
            Columns::U16(c) => c[k] as usize,
            Columns::U32(c) => c[k] as usize,
        }
    }

    fn tiled(&self) -> &Tiled {
        self.tiled.get_or_init(|| {
            let tiles = self.cols.div_ceil(TILE_COLUMNS).max(1);
            let mut starts = Vec::with_capacity(tiles * (self.rows + 1));
            let mut columns = Vec::with_capacity(self.values.len());
            let mut positions = Vec::with_capacity(self.values.len());
            // Each slot's entries are sorted by column: a cursor per slot walks the tiles.
            let mut cursor: Vec<usize> = self.row_starts[..self.rows]
                .iter()
                .map(|&s| s as usize)
                .collect();
            for tile in 0..tiles {
                let limit = (tile + 1) * TILE_COLUMNS;
                for (p, k) in cursor.iter_mut().enumerate() {
                    starts.push(positions.len() as u32);
                    let end = self.row_starts[p + 1] as usize;
                    while *k < end && self.column(*k) < limit {
                        columns.push((self.column(*k) - tile * TILE_COLUMNS) as u8);
                        positions.push(*k as u32);
                        *k += 1;
                    }
                }
                starts.push(positions.len() as u32);
            }
            Tiled {
                tiles,
                starts,
                columns,
                values: self.values.gather(&positions),
            }
        })
    }

    /// `x @ self^T + bias` for `x` of `[batch, cols]`, a contiguous `f32` CPU tensor, and `bias`
    /// of `rows` (if any): `[batch, rows]`.
    pub(crate) fn multiply(&self, x: &Tensor, bias: Option<&[f32]>) -> Result<Tensor> {
        let (rows, cols) = (self.rows, self.cols);
        let size = x.size();
        let fits = size.len() == 2
            && size[1] == cols as i64
            && x.kind() == Kind::Float
            && x.device() == Device::Cpu
            && x.is_contiguous()
            && bias.map_or(true, |b| b.len() == rows);
        if !fits {
            return Err(PruneError::ShapeMismatch {
                what: "a sparse product's contiguous f32 input (and its bias)".to_owned(),
                expected: vec![-1, cols as i64],
                actual: size,
            });
        }
        let batch = size[0] as usize;
        let y = Tensor::f_empty([batch as i64, rows as i64], (Kind::Float, Device::Cpu))?;
        // SAFETY: `x` is a contiguous `f32` CPU tensor of `batch * cols` floats (checked above)
        // and `y` a fresh one of `batch * rows`, both alive meanwhile; `y` is only written here.
        let (xs, ys) = unsafe { (floats(x), floats_mut(&y)) };
        self.product_into(&RowInputs { xs, cols }, batch, Layout::Rows, bias, ys);
        Ok(y)
    }

    /// `ys = x @ self^T + bias` for the `samples` samples of `inputs`, written to `ys` as
    /// `layout` says (`rows` outputs per sample); `bias` has `rows` entries.
    pub(crate) fn product_into(
        &self,
        inputs: &impl SampleInputs,
        samples: usize,
        layout: Layout,
        bias: Option<&[f32]>,
        ys: &mut [f32],
    ) {
        let (rows, cols) = (self.rows, self.cols);
        assert!(ys.len() >= samples * rows && bias.map_or(true, |b| b.len() == rows));
        // Blocks of samples, widest first: each is one pass over the weight, on the block
        // transposed (here: libtorch's copy of a transposed block takes several times longer).
        // Each core writes the outputs of its own rows back, a chunk at a time, while they are
        // in its cache.
        let mut xt = AlignedFloats::default();
        let mut done = 0;
        for &width in block_widths() {
            while samples - done >= width {
                if let (1, Layout::Rows, Some(inputs)) = (width, layout, inputs.row(done)) {
                    // One sample's inputs and outputs are contiguous: no copies.
                    let outputs = &mut ys[done * rows..(done + 1) * rows];
                    self.by_row_ranges(1, outputs, |start, end, out| {
                        self.rows_times(start, end, inputs, 1, out);
                        add_bias(out, 1, bias.map(|b| &b[start..end]));
                    });
                    done += 1;
                    continue;
                }
                xt.resize(cols * width);
                let xt = xt.as_mut_slice();
                gather_block(inputs, done, width, cols, xt);
                let xt = &*xt;
                let outputs = Outputs(ys.as_mut_ptr());
                // Chunks end at windows' edges (see `RowOrder`).
                let window = self.order.window();
                let chunk_rows = (CHUNK_OUTPUT_BYTES / (width * 4)).max(window);
                let chunk_rows = chunk_rows / window * window;
                self.for_row_ranges(width, |start, end| {
                    let mut chunk = AlignedFloats::default();
                    chunk.resize(chunk_rows.min(end - start) * width);
                    let chunk = chunk.as_mut_slice();
                    let mut first = start;
                    while first < end {
                        let last = ((first / chunk_rows + 1) * chunk_rows).min(end);
                        let out = &mut chunk[..(last - first) * width];
                        self.rows_times(first, last, xt, width, out);
                        let bias = bias.map(|b| &b[first..last]);
                        // SAFETY: `out` holds rows `first..last` of samples `done..done +
                        // width`; `ys` holds every sample's `rows` outputs (asserted above), of
                        // which this call alone writes rows `first..last` (disjoint ranges).
                        unsafe {
                            layout.scatter(out, bias, first..last, done, width, &outputs, rows)
                        };
                        first = last;
                    }
                });
                done += width;
            }
        }
    }

    /// `work(start, end, out)` for row ranges of about equal non-zero counts, on libtorch's
    /// threads when there is enough work: `out` is the part of `y` (`width` floats per row)
    /// that rows `start..end` write.
    pub(crate) fn by_row_ranges(
        &self,
        width: usize,
        y: &mut [f32],
        work: impl Fn(usize, usize, &mut [f32]) + Sync,
    ) {
        parallel::on_ranges_mut(&self.ranges_for(width), width, y, work);
    }

    /// `work(start, end)` for row ranges of about equal non-zero counts, on libtorch's threads
    /// when there is enough work for a block of `width` samples.
    fn for_row_ranges(&self, width: usize, work: impl Fn(usize, usize) + Sync) {
        parallel::on_threads(self.ranges_for(width), |(start, end)| work(start, end));
    }

    /// One range of all rows when a block of `width` samples is too little work to share.
    fn ranges_for(&self, width: usize) -> Vec<(usize, usize)> {
        if self.nonzeros() * width < PARALLEL_WORK {
            vec![(0, self.rows)]
        } else {
            self.row_ranges.clone()
        }
    }

    /// `f(column, value)` for each non-zero of row `r`, by column.
    #[inline(always)]
    pub(crate) fn for_each_entry(&self, r: usize, mut f: impl FnMut(usize, f32)) {
        with_entries!(self, entries => {
            let (a, b) = entries.row(r);
            let row = entries.columns[a..b].iter().zip(&entries.values[a..b]);
            row.for_each(|(c, v)| f(c.get(), v.get()))
        })
    }

    /// Rows `start..end` times the transposed block `xt` (`[cols, width]`) into `out`
    /// (`[end - start, width]`).
    fn rows_times(&self, start: usize, end: usize, xt: &[f32], width: usize, out: &mut [f32]) {
        // A block of 8 whose inputs fit an L2 cache needs no tiles.
        #[cfg(target_arch = "x86_64")]
        if width == 8 && self.cols * 8 * 4 <= UNTILED_INPUT_BYTES && has_avx2_fma() {
            assert!(xt.len() >= self.cols * 8);
            // A bf16 value broadcast takes a shuffle, the scarcest port in this loop, where a
            // `f32` one is a plain load: blocks read the values widened once.
            let values = match &self.values {
                Values::F32(values) => values,
                Values::Bf16(values) => self
                    .widened
                    .get_or_init(|| values.iter().map(|v| v.get()).collect()),
            };
            // SAFETY: the CPU has AVX2 and FMA, checked just above; every column is below
            // `cols`, and `xt` holds 8 floats per column.
            with_entries!(self, values, entries => unsafe {
                untiled8_avx2(&entries, start, end, xt, out)
            });
            return;
        }
        if matches!(width, 8 | 16 | 32 | 64) {
            let tiled = self.tiled();
            match &tiled.values {
                Values::F32(values) => {
                    tiled_product(tiled, values, &self.order, start, end, xt, width, out)
                }
                Values::Bf16(values) => {
                    tiled_product(tiled, values, &self.order, start, end, xt, width, out)
                }
            }
            return;
        }
        // One sample: a gather-dot per row, eight non-zeros at a time, where the columns fit
        // the gather's signed 32-bit indices and the CPU's gathers are fast.
        #[cfg(target_arch = "x86_64")]
        if width == 1 && self.cols <= i32::MAX as usize && gather_pays() {
            assert!(xt.len() >= self.cols);
            // SAFETY: the CPU has AVX2 and FMA, checked just above; every column is below
            // `cols` (at most `i32::MAX`), and `xt` holds a float for every column.
            with_entries!(self, entries => unsafe {
                single_avx2(&entries, start, end, xt, out)
            });
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            unsafe { self.rows_times_avx2(start, end, xt, width, out) };
            return;
        }
        self.rows_times_portable(start, end, xt, width, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn rows_times_avx2(&self, s: usize, e: usize, xt: &[f32], w: usize, out: &mut [f32]) {
        self.rows_times_portable(s, e, xt, w, out);
    }

    #[inline(always)]
    fn rows_times_portable(&self, s: usize, e: usize, xt: &[f32], w: usize, out: &mut [f32]) {
        with_entries!(self, entries => dispatch_width(&entries, s, e, xt, w, out))
    }
}

/// The widths of the blocks of samples a product takes, widest first: blocks of 64 where the
/// AVX-512 kernel runs them (the weight is read once per 64 samples), else of 32.
fn block_widths() -> &'static [usize] {
    #[cfg(all(target_arch = "x86_64", tchprune_avx512))]
    if has_avx512f() {
        return &[64, 32, 16, 8, 4, 2, 1];
    }
    &[32, 16, 8, 4, 2, 1]
}

/// Adds `bias[r]` to the `width` outputs of each row `r` of `out` (`[rows, width]`).
fn add_bias(out: &mut [f32], width: usize, bias: Option<&[f32]>) {
    if let Some(bias) = bias {
        for (row, b) in out.chunks_exact_mut(width).zip(bias) {
            row.iter_mut().for_each(|y| *y += b);
        }
    }
}

/// A matrix's row order, and its row starts, columns and non-zero values stored in that order.
type Compressed<T> = (RowOrder, Vec<u32>, Vec<u32>, Vec<T>);

/// The non-zero entries of `dense` (`rows` rows of `cols`), by `is_nonzero`, stored by
/// [`RowOrder::by_count`].
fn compress<T: Copy>(
    dense: &[T],
    rows: usize,
    cols: usize,
    is_nonzero: impl Fn(T) -> bool,
) -> Result<Compressed<T>> {
    let too_many = |what: String| PruneError::InvalidArgument {
        method: "sparse".to_owned(),
        argument: "weight".to_owned(),
        reason: format!("{what}: at most 2^32 - 1"),
    };
    if rows > u32::MAX as usize {
        return Err(too_many(format!("{rows} rows")));
    }
    let row = |r: usize| &dense[r * cols..(r + 1) * cols];
    let counts: Vec<u32> = (0..rows)
        .map(|r| row(r).iter().filter(|v| is_nonzero(**v)).count() as u32)
        .collect();
    let nonzeros: usize = counts.iter().map(|&n| n as usize).sum();
    if nonzeros > u32::MAX as usize {
        return Err(too_many(format!("{nonzeros} non-zero entries")));
    }
    let order = RowOrder::by_count(&counts, RowOrder::window_for(rows, parallel::threads()));
    let mut row_starts = Vec::with_capacity(rows + 1);
    let mut values = Vec::with_capacity(nonzeros);
    let mut columns = Vec::with_capacity(nonzeros);
    row_starts.push(0u32);
    for p in 0..rows {
        for (c, v) in row(order.row(p)).iter().enumerate() {
            if is_nonzero(*v) {
                values.push(*v);
                columns.push(c as u32);
            }
        }
        row_starts.push(values.len() as u32);
    }
    Ok((order, row_starts, columns, values))
}

/// A column index, widened.
trait Column: Copy {
    fn get(self) -> usize;

    /// The eight columns at `p`, as 32-bit integers.
    ///
    /// # Safety
    /// The CPU has AVX2, and `p` points at eight readable columns.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256i;
}

impl Column for u16 {
    #[inline(always)]
    fn get(self) -> usize {
        self as usize
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        // SAFETY: as the caller promises: 16 bytes at `p`.
        unsafe { _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast())) }
    }
}

impl Column for u32 {
    #[inline(always)]
    fn get(self) -> usize {
        self as usize
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256i {
        // SAFETY: as the caller promises: 32 bytes at `p`.
        unsafe { std::arch::x86_64::_mm256_loadu_si256(p.cast()) }
    }
}

#[inline(always)]
fn dispatch_width<C: Column, V: Value>(
    entries: &Entries<'_, C, V>,
    start: usize,
    end: usize,
    xt: &[f32],
    width: usize,
    out: &mut [f32],
) {
    match width {
        64 => rows_block::<C, V, 64>(entries, start, end, xt, out),
        32 => rows_block::<C, V, 32>(entries, start, end, xt, out),
        16 => rows_block::<C, V, 16>(entries, start, end, xt, out),
        8 => rows_block::<C, V, 8>(entries, start, end, xt, out),
        4 => rows_block::<C, V, 4>(entries, start, end, xt, out),
        2 => rows_block::<C, V, 2>(entries, start, end, xt, out),
        1 => rows_single(entries, start, end, xt, out),
        _ => unreachable!("blocks are 1, 2, 4, 8, 16, 32 or 64 samples wide"),
    }
}

/// `W` outputs per row, kept in registers over the row's non-zeros.
#[inline(always)]
fn rows_block<C: Column, V: Value, const W: usize>(
    entries: &Entries<'_, C, V>,
    start: usize,
    end: usize,
    xt: &[f32],
    out: &mut [f32],
) {
    for (r, a, b) in entries.rows_in(start, end) {
        let outputs = &mut out[(r - start) * W..(r - start + 1) * W];
        let mut acc = [0.0f32; W];
        for (v, c) in entries.values[a..b].iter().zip(&entries.columns[a..b]) {
            let x: &[f32; W] = xt[c.get() * W..c.get() * W + W]
                .try_into()
                .expect("W values");
            let v = v.get();
            for j in 0..W {
                acc[j] += v * x[j];
            }
        }
        outputs.copy_from_slice(&acc);
    }
}

/// One output per row: a gather-dot over the row's non-zeros, four sums in flight.
#[inline(always)]
fn rows_single<C: Column, V: Value>(
    entries: &Entries<'_, C, V>,
    start: usize,
    end: usize,
    x: &[f32],
    out: &mut [f32],
) {
    for (r, a, b) in entries.rows_in(start, end) {
        let (values, cols) = (&entries.values[a..b], &entries.columns[a..b]);
        let mut sums = [0.0f32; 4];
        let quads = values.len() / 4 * 4;
        for k in (0..quads).step_by(4) {
            for j in 0..4 {
                sums[j] += values[k + j].get() * x[cols[k + j].get()];
            }
        }
        let mut total = (sums[0] + sums[1]) + (sums[2] + sums[3]);
        for k in quads..values.len() {
            total += values[k].get() * x[cols[k].get()];
        }
        out[r - start] = total;
    }
}

/// The inputs of a product's samples, which the kernel reads in transposed blocks.
pub(crate) trait SampleInputs: Sync {
    /// Fills `xt` with rows `columns` of the transposed inputs (`[cols, width]`) of samples
    /// `first..first + width`: `xt` holds `columns.len()` rows of `width`.
    fn gather(&self, first: usize, width: usize, columns: std::ops::Range<usize>, xt: &mut [f32]);

    /// Sample `sample`'s inputs, if they lie contiguous in memory.
    fn row(&self, _sample: usize) -> Option<&[f32]> {
        None
    }
}

/// Samples one after another, each `[cols]`: a linear layer's `[batch, cols]`.
struct RowInputs<'a> {
    xs: &'a [f32],
    cols: usize,
}

impl SampleInputs for RowInputs<'_> {
    fn gather(&self, first: usize, width: usize, columns: std::ops::Range<usize>, xt: &mut [f32]) {
        let block = &self.xs[first * self.cols..(first + width) * self.cols];
        assert!(columns.end <= self.cols && xt.len() >= columns.len() * width);
        // SAFETY: `width` rows of `columns` at `block` (asserted within it), `columns.len()`
        // rows of `width` at `xt` (asserted), and a shared and a mutable borrow never overlap.
        unsafe {
            transpose_strided(
                block.as_ptr().add(columns.start),
                self.cols,
                width,
                columns.len(),
                xt.as_mut_ptr(),
                width,
                None,
            )
        }
    }

    fn row(&self, sample: usize) -> Option<&[f32]> {
        Some(&self.xs[sample * self.cols..(sample + 1) * self.cols])
    }
}

/// Above this many floats a block of inputs is gathered on all the cores.
const PARALLEL_GATHER: usize = 32 << 10;

/// `xt` (`[cols, width]`) = the transposed inputs of samples `first..first + width`.
fn gather_block(
    inputs: &impl SampleInputs,
    first: usize,
    width: usize,
    cols: usize,
    xt: &mut [f32],
) {
    let parts = match cols * width {
        n if n >= PARALLEL_GATHER => parallel::threads().clamp(1, cols),
        _ => 1,
    };
    let ranges: Vec<(usize, usize)> = (0..parts)
        .map(|part| (cols * part / parts, cols * (part + 1) / parts))
        .collect();
    parallel::on_ranges_mut(&ranges, width, xt, |start, end, piece| {
        inputs.gather(first, width, start..end, piece)
    });
}

/// Where the outputs of a product's samples go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// One sample after another, each `[rows]`: a linear layer's `[batch, rows]`.
    Rows,
    /// Planes of this many samples, each plane `[rows, positions]`: a convolution's output
    /// `[batch, out, positions]`.
    Planes(usize),
}

/// Samples `first..first + width`, in planes of `positions`, as `(offset in the block, plane,
/// position, count)` runs that lie within one plane.
fn runs_in_planes(
    positions: usize,
    first: usize,
    width: usize,
) -> impl Iterator<Item = [usize; 4]> {
    let mut j = 0;
    std::iter::from_fn(move || {
        if j == width {
            return None;
        }
        let (plane, position) = ((first + j) / positions, (first + j) % positions);
        let count = (positions - position).min(width - j);
        j += count;
        Some([j - count, plane, position, count])
    })
}

impl Layout {
    /// Writes `out`, the outputs of `rows` of samples `first..first + width` (`[rows, width]`),
    /// plus `bias` (one per row, if any), to where they lie among all outputs (`features` per
    /// sample). The bias is added here, on the way out, to spare a pass over `out`.
    ///
    /// # Safety
    /// `outputs` holds the outputs of every sample up to `first + width`, and no other thread
    /// writes these rows of them meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn scatter(
        self,
        out: &[f32],
        bias: Option<&[f32]>,
        rows: std::ops::Range<usize>,
        first: usize,
        width: usize,
        outputs: &Outputs,
        features: usize,
    ) {
        // SAFETY: as the caller promises: every write is to row `r` of a sample below
        // `first + width`.
        unsafe {
            match self {
                Layout::Rows => transpose_strided(
                    out.as_ptr(),
                    width,
                    rows.len(),
                    width,
                    outputs.0.add(first * features + rows.start),
                    features,
                    bias,
                ),
                Layout::Planes(positions) => {
                    for [j, plane, position, count] in runs_in_planes(positions, first, width) {
                        let base = outputs.0.add(plane * features * positions + position);
                        for (i, (r, from)) in rows.clone().zip(out.chunks_exact(width)).enumerate()
                        {
                            let to = std::slice::from_raw_parts_mut(base.add(r * positions), count);
                            let from = &from[j..j + count];
                            match bias {
                                Some(bias) => {
                                    to.iter_mut().zip(from).for_each(|(y, s)| *y = s + bias[i])
                                }
                                None => to.copy_from_slice(from),
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A cache line of floats.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// Zero-initialized floats that start on a cache line, so that a vector load of a block's
/// column or a row's sums never spans two lines (a block's columns are 32 to 256 bytes).
#[derive(Default)]
struct AlignedFloats {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedFloats {
    /// Holds `len` floats: the first ones kept, new ones zero.
    fn resize(&mut self, len: usize) {
        // Floats past `len` in lines that are kept are stale; new lines come zeroed.
        let (kept, stale_end) = (self.len.min(len), (self.lines.len() * 16).min(len));
        self.lines.resize(len.div_ceil(16), Line::default());
        self.len = len;
        self.as_mut_slice()[kept..stale_end.max(kept)].fill(0.0);
    }

    fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: `Line` is 16 floats with no padding, and the lines hold at least `len`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len) }
    }
}

/// A product's outputs, whose rows the cores write in disjoint ranges.
struct Outputs(*mut f32);

// SAFETY: shared among the cores only by `CsrMatrix::product_into`, where each writes its own
// rows.
unsafe impl Sync for Outputs {}

/// `rows` rows of `cols` floats at `src` (`src_stride` floats apart) written transposed to
/// `dst`: `cols` rows of `rows` floats, `dst_stride` apart, with `row_bias[r]` (if any) added
/// to each entry of source row `r`. By tiles of 16x16 in AVX-512 registers where the CPU has
/// them, whose stores fill whole cache lines (a tall layer's outputs at batch 64 are
/// megabytes, written at about 1.5x a plain fill's time where 8x8 tiles took 1.9x), then
/// [`transpose_by_8`] for what is left.
///
/// # Safety
/// The `rows` rows of `cols` floats at `src` are readable, the `cols` rows of `rows` floats at
/// `dst` writable, and the two do not overlap.
unsafe fn transpose_strided(
    src: *const f32,
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: *mut f32,
    dst_stride: usize,
    row_bias: Option<&[f32]>,
) {
    #[cfg(all(target_arch = "x86_64", tchprune_avx512))]
    if rows >= 16 && cols >= 16 && has_avx512f() {
        const T: usize = 16;
        let (full_rows, full_cols) = (rows / T * T, cols / T * T);
        // SAFETY: every tile lies within the `rows` by `cols` the caller promises, its 16
        // floats of bias come from a checked slice, and the rest goes to `transpose_by_8` as
        // two smaller transposes within it: the rows below the tiles (all columns), and the
        // columns right of the tiles (the tiles' rows).
        unsafe {
            let tile = |r0: usize, c0: usize| {
                let bias = row_bias.map(|b| b[r0..r0 + T].as_ptr());
                let (from, to) = (src.add(r0 * src_stride + c0), dst.add(c0 * dst_stride + r0));
                transpose16_avx512(from, src_stride, to, dst_stride, bias);
            };
            for_tiles(T, full_rows, full_cols, dst_stride > src_stride, tile);
            transpose_by_8(
                src.add(full_rows * src_stride),
                src_stride,
                rows - full_rows,
                cols,
                dst.add(full_rows),
                dst_stride,
                row_bias.map(|b| &b[full_rows..]),
            );
            transpose_by_8(
                src.add(full_cols),
                src_stride,
                full_rows,
                cols - full_cols,
                dst.add(full_cols * dst_stride),
                dst_stride,
                row_bias,
            );
        }
        return;
    }
    // SAFETY: as the caller promises.
    unsafe { transpose_by_8(src, src_stride, rows, cols, dst, dst_stride, row_bias) }
}

/// `tile(r0, c0)` for the tiles of `t` by `t` covering `rows` by `cols` (multiples of `t`), in
/// the order that reads or writes, whichever has the longer stride, `t` rows at a time from
/// start to end: by columns of tiles when `by_columns`.
#[inline(always)]
fn for_tiles(
    t: usize,
    rows: usize,
    cols: usize,
    by_columns: bool,
    mut tile: impl FnMut(usize, usize),
) {
    if by_columns {
        for c0 in (0..cols).step_by(t) {
            (0..rows).step_by(t).for_each(|r0| tile(r0, c0));
        }
    } else {
        for r0 in (0..rows).step_by(t) {
            (0..cols).step_by(t).for_each(|c0| tile(r0, c0));
        }
    }
}

/// [`transpose_strided`] by tiles of 8x8 (in AVX registers where the CPU has them), then the
/// edges that do not fill a tile.
///
/// # Safety
/// As for [`transpose_strided`].
unsafe fn transpose_by_8(
    src: *const f32,
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: *mut f32,
    dst_stride: usize,
    row_bias: Option<&[f32]>,
) {
    const T: usize = 8;
    let (full_rows, full_cols) = (rows / T * T, cols / T * T);
    #[cfg(target_arch = "x86_64")]
    let avx = std::arch::is_x86_feature_detected!("avx");
    assert!(row_bias.map_or(true, |b| b.len() >= rows));
    // Added only where there is a bias: `-0.0 + 0.0` would be `+0.0`.
    let plus_bias = |entry: f32, r: usize| row_bias.map_or(entry, |b| entry + b[r]);
    // SAFETY: every read is at `r * src_stride + c` and every write at `c * dst_stride + r`
    // for `r < rows` and `c < cols`, as the caller promises valid; the bias has `rows` entries
    // (asserted just above).
    unsafe {
        let tile = |r0: usize, c0: usize| {
            let from = src.add(r0 * src_stride + c0);
            let to = dst.add(c0 * dst_stride + r0);
            #[cfg(target_arch = "x86_64")]
            if avx {
                let bias = row_bias.map(|b| b[r0..r0 + T].as_ptr());
                transpose8_avx(from, src_stride, to, dst_stride, bias);
                return;
            }
            for i in 0..T {
                for j in 0..T {
                    *to.add(j * dst_stride + i) = plus_bias(*from.add(i * src_stride + j), r0 + i);
                }
            }
        };
        for_tiles(T, full_rows, full_cols, dst_stride > src_stride, tile);
        let edges = (full_rows..rows)
            .flat_map(|r| (0..cols).map(move |c| (r, c)))
            .chain((0..full_rows).flat_map(|r| (full_cols..cols).map(move |c| (r, c))));
        for (r, c) in edges {
            *dst.add(c * dst_stride + r) = plus_bias(*src.add(r * src_stride + c), r);
        }
    }
}

/// The 8x8 tile at `src` (rows `src_stride` floats apart) transposed to `dst` (rows
/// `dst_stride` apart), with `bias[i]` (if any) added to source row `i`: unpack pairs, shuffle
/// quads, swap halves.
///
/// # Safety
/// The CPU has AVX; 8 rows of 8 floats are readable at `src` and writable at `dst`, and 8
/// floats at `bias`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose8_avx(
    src: *const f32,
    src_stride: usize,
    dst: *mut f32,
    dst_stride: usize,
    bias: Option<*const f32>,
) {
    use std::arch::x86_64::*;
    // SAFETY: as the caller promises.
    unsafe {
        let mut r = [_mm256_setzero_ps(); 8];
        for (i, row) in r.iter_mut().enumerate() {
            *row = _mm256_loadu_ps(src.add(i * src_stride));
        }
        let pairs = [
            _mm256_unpacklo_ps(r[0], r[1]),
            _mm256_unpackhi_ps(r[0], r[1]),
            _mm256_unpacklo_ps(r[2], r[3]),
            _mm256_unpackhi_ps(r[2], r[3]),
            _mm256_unpacklo_ps(r[4], r[5]),
            _mm256_unpackhi_ps(r[4], r[5]),
            _mm256_unpacklo_ps(r[6], r[7]),
            _mm256_unpackhi_ps(r[6], r[7]),
        ];
        let quads = [
            _mm256_shuffle_ps::<0x44>(pairs[0], pairs[2]),
            _mm256_shuffle_ps::<0xEE>(pairs[0], pairs[2]),
            _mm256_shuffle_ps::<0x44>(pairs[1], pairs[3]),
            _mm256_shuffle_ps::<0xEE>(pairs[1], pairs[3]),
            _mm256_shuffle_ps::<0x44>(pairs[4], pairs[6]),
            _mm256_shuffle_ps::<0xEE>(pairs[4], pairs[6]),
            _mm256_shuffle_ps::<0x44>(pairs[5], pairs[7]),
            _mm256_shuffle_ps::<0xEE>(pairs[5], pairs[7]),
        ];
        let bias = bias.map(|b| _mm256_loadu_ps(b));
        let plus_bias = |row| bias.map_or(row, |b| _mm256_add_ps(row, b));
        for j in 0..4 {
            let low = plus_bias(_mm256_permute2f128_ps::<0x20>(quads[j], quads[j + 4]));
            let high = plus_bias(_mm256_permute2f128_ps::<0x31>(quads[j], quads[j + 4]));
            _mm256_storeu_ps(dst.add(j * dst_stride), low);
            _mm256_storeu_ps(dst.add((j + 4) * dst_stride), high);
        }
    }
}

/// The 16x16 tile at `src` (rows `src_stride` floats apart) transposed to `dst` (rows
/// `dst_stride` apart), with `bias[i]` (if any) added to source row `i`: unpack pairs, shuffle
/// quads, then two rounds of 128-bit lane shuffles.
///
/// # Safety
/// The CPU has AVX-512F; 16 rows of 16 floats are readable at `src` and writable at `dst`, and
/// 16 floats at `bias`.
#[cfg(all(target_arch = "x86_64", tchprune_avx512))]
#[target_feature(enable = "avx512f")]
// Compiled only by Rust 1.89 or later (`tchprune_avx512`, set by the build script).
#[allow(clippy::incompatible_msrv)]
unsafe fn transpose16_avx512(
    src: *const f32,
    src_stride: usize,
    dst: *mut f32,
    dst_stride: usize,
    bias: Option<*const f32>,
) {
    use std::arch::x86_64::*;
    // SAFETY: as the caller promises.
    unsafe {
        let mut r = [_mm512_setzero_ps(); 16];
        for (i, row) in r.iter_mut().enumerate() {
            *row = _mm512_loadu_ps(src.add(i * src_stride));
        }
        // Pairs of rows interleaved, then quads: `r[4 * i + k]` holds column `k + 4 * lane` of
        // rows `4 * i..4 * i + 4` in each 128-bit lane.
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        for i in 0..4 {
            let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
            r[4 * i] = _mm512_shuffle_ps::<0x44>(a, c);
            r[4 * i + 1] = _mm512_shuffle_ps::<0xEE>(a, c);
            r[4 * i + 2] = _mm512_shuffle_ps::<0x44>(b, d);
            r[4 * i + 3] = _mm512_shuffle_ps::<0xEE>(b, d);
        }
        // Lanes of rows 0-3 with 4-7 and 8-11 with 12-15, then those halves together.
        for k in 0..4 {
            t[k] = _mm512_shuffle_f32x4::<0x88>(r[k], r[4 + k]);
            t[4 + k] = _mm512_shuffle_f32x4::<0xDD>(r[k], r[4 + k]);
            t[8 + k] = _mm512_shuffle_f32x4::<0x88>(r[8 + k], r[12 + k]);
            t[12 + k] = _mm512_shuffle_f32x4::<0xDD>(r[8 + k], r[12 + k]);
        }
        let bias = bias.map(|b| _mm512_loadu_ps(b));
        let plus_bias = |column| bias.map_or(column, |b| _mm512_add_ps(column, b));
        for k in 0..4 {
            let columns = [
                (k, _mm512_shuffle_f32x4::<0x88>(t[k], t[8 + k])),
                (k + 8, _mm512_shuffle_f32x4::<0xDD>(t[k], t[8 + k])),
                (k + 4, _mm512_shuffle_f32x4::<0x88>(t[4 + k], t[12 + k])),
                (k + 12, _mm512_shuffle_f32x4::<0xDD>(t[4 + k], t[12 + k])),
            ];
            for (j, column) in columns {
                _mm512_storeu_ps(dst.add(j * dst_stride), plus_bias(column));
            }
        }
    }
}

/// Row ranges covering all rows, `parts` of them with about equal non-zero counts, that end at
/// the edges of windows of `window` rows (see [`RowOrder::window_for`]).
fn balanced_rows(row_starts: &[u32], parts: usize, window: usize) -> Vec<(usize, usize)> {
    let rows = row_starts.len() - 1;
    let total = *row_starts.last().unwrap_or(&0) as usize;
    let parts = parts.clamp(1, rows.max(1));
    let mut ranges = Vec::with_capacity(parts);
    let mut start = 0;
    for part in 1..=parts {
        let goal = total * part / parts;
        let mut end = start;
        while end < rows && (row_starts[end + 1] as usize) <= goal {
            end += 1;
        }
        end = ((end + window / 2) / window * window).min(rows);
        if part == parts {
            end = rows;
        }
        if end > start {
            ranges.push((start, end));
            start = end;
        }
    }
    if ranges.is_empty() {
        ranges.push((0, rows));
    }
    ranges
}

/// Rows `start..end` times the transposed inputs `xt` (`[cols, width]`, `width` 8, 16, 32 or 64)
/// tile by tile: AVX-512 or AVX2 where the CPU has it.
#[allow(clippy::too_many_arguments)]
fn tiled_product<V: Value>(
    tiled: &Tiled,
    values: &[V],
    order: &RowOrder,
    start: usize,
    end: usize,
    xt: &[f32],
    width: usize,
    out: &mut [f32],
) {
    #[cfg(all(target_arch = "x86_64", tchprune_avx512))]
    if width >= 16 && has_avx512f() {
        // SAFETY: the CPU has AVX-512F, checked just above; `width` is 16, 32 or 64.
        unsafe { tiled_avx512(tiled, values, order, start, end, xt, width, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        unsafe { tiled_avx2(tiled, values, order, start, end, xt, width, out) };
        return;
    }
    match width {
        8 => tiled_rows::<V, 8>(tiled, values, order, start, end, xt, out),
        16 => tiled_rows::<V, 16>(tiled, values, order, start, end, xt, out),
        32 => tiled_rows::<V, 32>(tiled, values, order, start, end, xt, out),
        _ => tiled_rows::<V, 64>(tiled, values, order, start, end, xt, out),
    }
}

/// Rows `start..end` times the transposed inputs `xt` (`[cols, W]`) tile by tile, the `W`
/// outputs of a row carried from tile to tile in `out`.
#[inline(always)]
fn tiled_rows<V: Value, const W: usize>(
    tiled: &Tiled,
    values: &[V],
    order: &RowOrder,
    start: usize,
    end: usize,
    xt: &[f32],
    out: &mut [f32],
) {
    for tile in 0..tiled.tiles {
        let inputs = &xt[tile * TILE_COLUMNS * W..];
        let starts = tiled.starts_of(tile);
        for (p, r) in order.slots_of(start, end) {
            let (a, b) = (starts[p] as usize, starts[p + 1] as usize);
            let outputs = &mut out[(r - start) * W..(r - start + 1) * W];
            if tile == 0 {
                outputs.fill(0.0);
            }
            if a == b {
                continue;
            }
            let mut acc: [f32; W] = outputs.try_into().expect("W outputs");
            for (v, c) in values[a..b].iter().zip(&tiled.columns[a..b]) {
                let c = *c as usize * W;
                let x: &[f32; W] = inputs[c..c + W].try_into().expect("W values");
                let v = v.get();
                for j in 0..W {
                    acc[j] += v * x[j];
                }
            }
            outputs.copy_from_slice(&acc);
        }
    }
}

/// The loop of the vector kernels over the tiles and rows `$start..$end`: for each row with
/// entries in a tile, `$body` runs with `$p` (the tile's inputs, `$width` floats per column),
/// `$values` and `$columns` (the row's entries in the tile), `$o` (the row's `$width` outputs)
/// and `$first` (whether this is the first tile, whose sums start at zero).
#[cfg(target_arch = "x86_64")]
macro_rules! for_tile_rows {
    (
        $tiled:ident, $all_values:ident, $order:ident, $start:ident, $end:ident, $xt:ident,
        $width:ident, $out:ident,
        |$p:ident, $values:ident, $columns:ident, $o:ident, $first:ident| $body:block
    ) => {{
        assert!($out.len() >= ($end - $start) * $width);
        for tile in 0..$tiled.tiles {
            let base = tile * TILE_COLUMNS * $width;
            let tile_columns = TILE_COLUMNS.min($xt.len() / $width - tile * TILE_COLUMNS);
            let inputs = &$xt[base..base + tile_columns * $width];
            let starts = $tiled.starts_of(tile);
            for (p, r) in $order.slots_of($start, $end) {
                let (a, b) = (starts[p] as usize, starts[p + 1] as usize);
                if a == b {
                    if tile == 0 {
                        $out[(r - $start) * $width..(r - $start + 1) * $width].fill(0.0);
                    }
                    continue;
                }
                let $values = &$all_values[a..b];
                let $columns = &$tiled.columns[a..b];
                // The next rows' entries, ahead of their turn (a hint: never read past the end).
                _mm_prefetch::<_MM_HINT_T0>($all_values.as_ptr().wrapping_add(b + 64).cast());
                _mm_prefetch::<_MM_HINT_T0>($tiled.columns.as_ptr().wrapping_add(b + 64).cast());
                let $o = $out[(r - $start) * $width..(r - $start + 1) * $width].as_mut_ptr();
                let $p = inputs.as_ptr();
                let $first = tile == 0;
                $body
            }
        }
    }};
}

/// [`tiled_rows`] with the accumulators in AVX registers and fused multiply-adds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tiled_avx2<V: Value>(
    tiled: &Tiled,
    all_values: &[V],
    order: &RowOrder,
    start: usize,
    end: usize,
    xt: &[f32],
    width: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    assert!(matches!(width, 8 | 16 | 32));
    for_tile_rows!(
        tiled,
        all_values,
        order,
        start,
        end,
        xt,
        width,
        out,
        |p, values, columns, o, first| {
            // SAFETY: `o` points at this row's `width` outputs; every input read is within the
            // tile's inputs at `p` (columns of a tile are below its width, checked when tiling),
            // `width` floats at `column * width`.
            unsafe {
                macro_rules! sums_at {
                    ($o:expr) => {
                        if first {
                            _mm256_setzero_ps()
                        } else {
                            _mm256_loadu_ps($o)
                        }
                    };
                }
                match width / 8 {
                    1 => {
                        let mut s0 = sums_at!(o);
                        for (v, c) in values.iter().zip(columns) {
                            let v: *const V = v;
                            let x = p.add(*c as usize * 8);
                            s0 = _mm256_fmadd_ps(V::broadcast(v), _mm256_loadu_ps(x), s0);
                        }
                        _mm256_storeu_ps(o, s0);
                    }
                    2 => {
                        let (mut s0, mut s1) = (sums_at!(o), sums_at!(o.add(8)));
                        for (v, c) in values.iter().zip(columns) {
                            let v: *const V = v;
                            let x = p.add(*c as usize * 16);
                            let v = V::broadcast(v);
                            s0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(x), s0);
                            s1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(x.add(8)), s1);
                        }
                        _mm256_storeu_ps(o, s0);
                        _mm256_storeu_ps(o.add(8), s1);
                    }
                    _ => {
                        let mut s = [
                            sums_at!(o),
                            sums_at!(o.add(8)),
                            sums_at!(o.add(16)),
                            sums_at!(o.add(24)),
                        ];
                        for (v, c) in values.iter().zip(columns) {
                            let v: *const V = v;
                            let x = p.add(*c as usize * 32);
                            let v = V::broadcast(v);
                            s[0] = _mm256_fmadd_ps(v, _mm256_loadu_ps(x), s[0]);
                            s[1] = _mm256_fmadd_ps(v, _mm256_loadu_ps(x.add(8)), s[1]);
                            s[2] = _mm256_fmadd_ps(v, _mm256_loadu_ps(x.add(16)), s[2]);
                            s[3] = _mm256_fmadd_ps(v, _mm256_loadu_ps(x.add(24)), s[3]);
                        }
                        for (i, s) in s.iter().enumerate() {
                            _mm256_storeu_ps(o.add(8 * i), *s);
                        }
                    }
                }
            }
        }
    );
}

/// [`tiled_rows`] for blocks of 16, 32 or 64 samples in AVX-512 registers: half the
/// instructions of [`tiled_avx2`] for the same sums (each lane adds the same products in the
/// same order, so the outputs are bit for bit those of the AVX2 kernel), and blocks of 64 that
/// read the weight once where [`tiled_avx2`] reads it twice.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(all(target_arch = "x86_64", tchprune_avx512))]
#[target_feature(enable = "avx512f")]
// Compiled only by Rust 1.89 or later (`tchprune_avx512`, set by the build script).
#[allow(clippy::too_many_arguments, clippy::incompatible_msrv)]
unsafe fn tiled_avx512<V: Value>(
    tiled: &Tiled,
    all_values: &[V],
    order: &RowOrder,
    start: usize,
    end: usize,
    xt: &[f32],
    width: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    assert!(matches!(width, 16 | 32 | 64));
    for_tile_rows!(
        tiled,
        all_values,
        order,
        start,
        end,
        xt,
        width,
        out,
        |p, values, columns, o, first| {
            // SAFETY: as in `tiled_avx2`.
            unsafe {
                macro_rules! sums_at {
                    ($o:expr) => {
                        if first {
                            _mm512_setzero_ps()
                        } else {
                            _mm512_loadu_ps($o)
                        }
                    };
                }
                if width == 16 {
                    let mut s0 = sums_at!(o);
                    for (v, c) in values.iter().zip(columns) {
                        let x = p.add(*c as usize * 16);
                        s0 = _mm512_fmadd_ps(_mm512_set1_ps(v.get()), _mm512_loadu_ps(x), s0);
                    }
                    _mm512_storeu_ps(o, s0);
                } else if width == 64 {
                    let mut s = [
                        sums_at!(o),
                        sums_at!(o.add(16)),
                        sums_at!(o.add(32)),
                        sums_at!(o.add(48)),
                    ];
                    for (v, c) in values.iter().zip(columns) {
                        let x = p.add(*c as usize * 64);
                        let v = _mm512_set1_ps(v.get());
                        s[0] = _mm512_fmadd_ps(v, _mm512_loadu_ps(x), s[0]);
                        s[1] = _mm512_fmadd_ps(v, _mm512_loadu_ps(x.add(16)), s[1]);
                        s[2] = _mm512_fmadd_ps(v, _mm512_loadu_ps(x.add(32)), s[2]);
                        s[3] = _mm512_fmadd_ps(v, _mm512_loadu_ps(x.add(48)), s[3]);
                    }
                    for (i, s) in s.iter().enumerate() {
                        _mm512_storeu_ps(o.add(16 * i), *s);
                    }
                } else {
                    let (mut s0, mut s1) = (sums_at!(o), sums_at!(o.add(16)));
                    for (v, c) in values.iter().zip(columns) {
                        let x = p.add(*c as usize * 32);
                        let v = _mm512_set1_ps(v.get());
                        s0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(x), s0);
                        s1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(x.add(16)), s1);
                    }
                    _mm512_storeu_ps(o, s0);
                    _mm512_storeu_ps(o.add(16), s1);
                }
            }
        }
    );
}

/// Rows `start..end` times a block of 8 samples (`xt`: `[cols, 8]`) straight from the CSR
/// entries, one AVX register of sums per row.
///
/// # Safety
/// The CPU has AVX2 and FMA, and `xt` holds 8 floats for every column of `entries`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn untiled8_avx2<C: Column, V: Value>(
    entries: &Entries<'_, C, V>,
    start: usize,
    end: usize,
    xt: &[f32],
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    assert!(out.len() >= (end - start) * 8);
    let (columns, values) = (entries.columns, entries.values);
    for (r, a, b) in entries.rows_in(start, end) {
        // SAFETY: every column has its 8 floats in `xt` (as the caller promises); the write
        // is this row's 8 outputs.
        unsafe {
            // Four sums in flight: a fused multiply-add takes four cycles to land.
            let mut sums = [_mm256_setzero_ps(); 4];
            let p = xt.as_ptr();
            let (row_columns, row_values) = (&columns[a..b], &values[a..b]);
            let quads = row_columns.chunks_exact(4).zip(row_values.chunks_exact(4));
            for (q, (quad_columns, quad_values)) in quads.enumerate() {
                // The weight streams from memory: ask for it well ahead of the sums, a cache
                // line of values at a time. (`wrapping_add`: an address past the end is only a
                // hint, never read.)
                if q % 4 == 0 {
                    let ahead = a + 4 * q + 128;
                    _mm_prefetch::<_MM_HINT_T0>(values.as_ptr().wrapping_add(ahead).cast());
                    _mm_prefetch::<_MM_HINT_T0>(columns.as_ptr().wrapping_add(ahead).cast());
                }
                for (j, sum) in sums.iter_mut().enumerate() {
                    let x = _mm256_loadu_ps(p.add(quad_columns[j].get() * 8));
                    *sum = _mm256_fmadd_ps(V::broadcast(&quad_values[j]), x, *sum);
                }
            }
            let tail = row_columns.len() / 4 * 4;
            for (c, v) in row_columns[tail..].iter().zip(&row_values[tail..]) {
                let x = _mm256_loadu_ps(p.add(c.get() * 8));
                sums[0] = _mm256_fmadd_ps(V::broadcast(v), x, sums[0]);
            }
            let s0 = _mm256_add_ps(sums[0], sums[1]);
            let s1 = _mm256_add_ps(sums[2], sums[3]);
            _mm256_storeu_ps(out.as_mut_ptr().add((r - start) * 8), _mm256_add_ps(s0, s1));
        }
    }
}

/// Whether [`single_avx2`] is not clearly slower than the scalar loop ([`rows_single`]) on this
/// CPU: timed once per process, on a synthetic matrix of 32,768 non-zeros. Gathers are fast on
/// the AMD CPU this was written on (1.15-1.7x the scalar loop on real layers), several times
/// slower on Intel CPUs whose microcode mitigates Gather Data Sampling.
#[cfg(target_arch = "x86_64")]
fn gather_pays() -> bool {
    static PAYS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PAYS.get_or_init(|| {
        if !has_avx2_fma() {
            return false;
        }
        let (rows, cols, per_row) = (512, 4096, 64);
        let row_starts: Vec<u32> = (0..=rows).map(|r| (r * per_row) as u32).collect();
        let columns: Vec<u16> = (0..rows * per_row)
            .map(|k| (k * 7919 % cols) as u16)
            .collect();
        let values = vec![0.5f32; rows * per_row];
        let order = RowOrder::natural(rows);
        let entries = Entries {
            row_starts: &row_starts,
            columns: &columns,
            values: &values,
            order: &order,
        };
        let (x, mut out) = (vec![1.0f32; cols], vec![0.0f32; rows]);
        let mut time = |gather: bool| {
            let start = std::time::Instant::now();
            for _ in 0..4 {
                // SAFETY: the CPU has AVX2 and FMA (checked above); every column is below
                // `cols`, and `x` holds `cols` floats.
                unsafe { single_sample_avx2(&entries, gather, &x, &mut out) };
            }
            start.elapsed()
        };
        let (mut gathered, mut scalar) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            gathered.push(time(true));
            scalar.push(time(false));
        }
        gathered.sort();
        scalar.sort();
        // In the cache the two are close where gathers are fast (7% apart here, 1.15-1.7x on
        // real layers); a mitigated gather is several times slower. Noise must not flip it.
        gathered[2] <= scalar[2] * 5 / 4
    })
}

/// All rows of `entries` times one sample `x`, by [`single_avx2`] or by the scalar loop compiled
/// for AVX2 (as [`CsrMatrix::rows_times`] runs it): what [`gather_pays`] times.
///
/// # Safety
/// As [`single_avx2`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn single_sample_avx2<C: Column, V: Value>(
    entries: &Entries<'_, C, V>,
    gather: bool,
    x: &[f32],
    out: &mut [f32],
) {
    let rows = entries.row_starts.len() - 1;
    if gather {
        // SAFETY: as the caller promises.
        unsafe { single_avx2(entries, 0, rows, x, out) };
    } else {
        rows_single(entries, 0, rows, x, out);
    }
}

/// Rows `start..end` times one sample `x` (`cols` floats): per row, eight non-zeros at a time
/// gathered from `x` and multiplied in one fused multiply-add, two sums in flight.
///
/// # Safety
/// The CPU has AVX2 and FMA, every column of `entries` is at most `i32::MAX` and `x` holds a
/// float for each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn single_avx2<C: Column, V: Value>(
    entries: &Entries<'_, C, V>,
    start: usize,
    end: usize,
    x: &[f32],
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let (columns, values) = (entries.columns, entries.values);
    assert!(out.len() >= end - start);
    for (r, a, b) in entries.rows_in(start, end) {
        let p = x.as_ptr();
        // SAFETY: the loads read entries `k..k + 8` (or `+ 16`) of this row, below `b`; each
        // gathered column has its float in `x`, as the caller promises.
        unsafe {
            let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut k = a;
            while k + 16 <= b {
                _mm_prefetch::<_MM_HINT_T0>(values.as_ptr().wrapping_add(k + 128).cast());
                _mm_prefetch::<_MM_HINT_T0>(columns.as_ptr().wrapping_add(k + 128).cast());
                let x0 = _mm256_i32gather_ps::<4>(p, C::load8(columns.as_ptr().add(k)));
                let x1 = _mm256_i32gather_ps::<4>(p, C::load8(columns.as_ptr().add(k + 8)));
                s0 = _mm256_fmadd_ps(V::load8(values.as_ptr().add(k)), x0, s0);
                s1 = _mm256_fmadd_ps(V::load8(values.as_ptr().add(k + 8)), x1, s1);
                k += 16;
            }
            if k + 8 <= b {
                let x0 = _mm256_i32gather_ps::<4>(p, C::load8(columns.as_ptr().add(k)));
                s0 = _mm256_fmadd_ps(V::load8(values.as_ptr().add(k)), x0, s0);
                k += 8;
            }
            let s = _mm256_add_ps(s0, s1);
            let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            let mut total = _mm_cvtss_f32(s);
            for k in k..b {
                total += values[k].get() * x[columns[k].get()];
            }
            out[r - start] = total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        rows_single, transpose_strided, AlignedFloats, Bf16, Column, Columns, Entries, RowOrder,
        Value,
    };

    /// `dst` (`[cols, rows]`) = `src` (`[rows, cols]`) transposed, plus `row_bias` per source
    /// row.
    fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32], row_bias: Option<&[f32]>) {
        assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
        // SAFETY: `src` holds `rows` rows of `cols` floats and `dst` `cols` rows of `rows`
        // (asserted just above); a shared and a mutable borrow do not overlap.
        unsafe {
            let dst = dst.as_mut_ptr();
            transpose_strided(src.as_ptr(), cols, rows, cols, dst, rows, row_bias)
        }
    }

    /// Rows of 0 to 40 entries at spread columns, values and inputs whose products and sums
    /// are exact in `f32` (so every summation order gives the same bits), and the sums in f64.
    struct SampleCase {
        row_starts: Vec<u32>,
        columns: Vec<u32>,
        values: Vec<f32>,
        x: Vec<f32>,
        expected: Vec<f32>,
    }

    fn sample_product_case() -> SampleCase {
        let cols = 1000;
        let (mut row_starts, mut columns) = (vec![0u32], Vec::new());
        for r in 0..41 {
            columns.extend((0..r).map(|k| ((r * 31 + k * 97) % cols) as u32));
            row_starts.push(columns.len() as u32);
        }
        let values: Vec<f32> = (0..columns.len())
            .map(|k| ((k % 13) as f32 - 6.0) / 4.0)
            .collect();
        let x: Vec<f32> = (0..cols).map(|c| ((c % 17) as f32 - 8.0) / 8.0).collect();
        let expected = (0..41)
            .map(|r| {
                let (a, b) = (row_starts[r] as usize, row_starts[r + 1] as usize);
                let sum: f64 = (a..b)
                    .map(|k| f64::from(values[k]) * f64::from(x[columns[k] as usize]))
                    .sum();
                sum as f32
            })
            .collect();
        SampleCase {
            row_starts,
            columns,
            values,
            x,
            expected,
        }
    }

    fn check_sample_product<C: Column, V: Value>(
        entries: &Entries<'_, C, V>,
        x: &[f32],
        expected: &[f32],
    ) {
        let mut out = vec![f32::NAN; expected.len()];
        rows_single(entries, 0, expected.len(), x, &mut out);
        assert_eq!(out, expected, "the scalar loop");
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::has_avx2_fma() {
            let mut out = vec![f32::NAN; expected.len()];
            // SAFETY: the CPU has AVX2 and FMA; every column is below `x.len()`.
            unsafe { super::single_avx2(entries, 0, expected.len(), x, &mut out) };
            assert_eq!(out, expected, "the gather");
        }
    }

    #[test]
    fn the_gathered_and_the_scalar_sample_products_agree() {
        let SampleCase {
            row_starts,
            columns,
            values,
            x,
            expected,
        } = sample_product_case();
        let narrow: Vec<u16> = columns.iter().map(|&c| c as u16).collect();
        let halves: Vec<Bf16> = values
            .iter()
            .map(|v| Bf16((v.to_bits() >> 16) as u16))
            .collect();
        assert!(halves.iter().zip(&values).all(|(h, v)| h.get() == *v));
        let row_starts = &row_starts[..];
        let order = &RowOrder::natural(row_starts.len() - 1);
        check_sample_product(
            &Entries {
                row_starts,
                columns: &columns,
                values: &values,
                order,
            },
            &x,
            &expected,
        );
        check_sample_product(
            &Entries {
                row_starts,
                columns: &narrow,
                values: &values,
                order,
            },
            &x,
            &expected,
        );
        check_sample_product(
            &Entries {
                row_starts,
                columns: &columns,
                values: &halves,
                order,
            },
            &x,
            &expected,
        );
        check_sample_product(
            &Entries {
                row_starts,
                columns: &narrow,
                values: &halves,
                order,
            },
            &x,
            &expected,
        );
    }

    /// Inputs in eighths for `batch` samples, and `x @ weight^T` (`weight`: `rows` rows of
    /// `cols` in quarters) summed in f64: exact in `f32` for small weights.
    fn exact_inputs_and_sums(
        weight: &[f32],
        rows: usize,
        cols: usize,
        batch: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let x: Vec<f32> = (0..batch * cols)
            .map(|i| ((i % 9) as f32 - 4.0) / 8.0)
            .collect();
        let sums = (0..batch * rows)
            .map(|i| {
                let (b, r) = (i / rows, i % rows);
                let sum: f64 = (0..cols)
                    .map(|c| f64::from(weight[r * cols + c]) * f64::from(x[b * cols + c]))
                    .sum();
                sum as f32
            })
            .collect();
        (x, sums)
    }

    #[test]
    fn every_block_kernel_gives_the_exact_sums() {
        use super::{dispatch_width, tiled_rows, CsrMatrix, Values};
        use tch::Tensor;
        // Weights in quarters and inputs in eighths, small: every product and sum is exact in
        // `f32`, so the portable and the AVX2 kernels must give the same bits.
        let (rows, cols, batch) = (37usize, 600usize, 64usize);
        let weight: Vec<f32> = (0..rows * cols)
            .map(|i| {
                if i * 7 % 5 == 0 {
                    ((i % 11) as f32 - 5.0) / 4.0
                } else {
                    0.0
                }
            })
            .collect();
        let (x, expected) = exact_inputs_and_sums(&weight, rows, cols, batch);
        let tensor = Tensor::from_slice(&weight).reshape([rows as i64, cols as i64]);
        let m = CsrMatrix::from_dense(&tensor).unwrap();
        let xs = Tensor::from_slice(&x).reshape([batch as i64, cols as i64]);
        let y: Vec<f32> = Vec::try_from(m.multiply(&xs, None).unwrap().view(-1)).unwrap();
        assert_eq!(y, expected, "multiply");
        for width in [1, 2, 4, 8, 16, 32, 64] {
            let mut xt = vec![0.0; cols * width];
            transpose(&x[..width * cols], width, cols, &mut xt, None);
            let mut expected_t = vec![0.0; rows * width];
            transpose(
                &expected[..width * rows],
                width,
                rows,
                &mut expected_t,
                None,
            );
            let mut out = vec![f32::NAN; rows * width];
            with_entries!(m, entries => dispatch_width(&entries, 0, rows, &xt, width, &mut out));
            assert_eq!(out, expected_t, "the portable rows, width {width}");
            m.rows_times(0, rows, &xt, width, &mut out);
            assert_eq!(out, expected_t, "the kernel this CPU runs, width {width}");
            if let (8 | 16 | 32 | 64, Values::F32(values)) = (width, &m.tiled().values) {
                let mut out = vec![f32::NAN; rows * width];
                let tiled = m.tiled();
                match width {
                    8 => tiled_rows::<f32, 8>(tiled, values, &m.order, 0, rows, &xt, &mut out),
                    16 => tiled_rows::<f32, 16>(tiled, values, &m.order, 0, rows, &xt, &mut out),
                    32 => tiled_rows::<f32, 32>(tiled, values, &m.order, 0, rows, &xt, &mut out),
                    _ => tiled_rows::<f32, 64>(tiled, values, &m.order, 0, rows, &xt, &mut out),
                }
                assert_eq!(out, expected_t, "the portable tiles, width {width}");
                #[cfg(target_arch = "x86_64")]
                if width <= 32 && crate::cpu::has_avx2_fma() {
                    let mut out = vec![f32::NAN; rows * width];
                    // SAFETY: the CPU has AVX2 and FMA, checked just above.
                    unsafe {
                        super::tiled_avx2(tiled, values, &m.order, 0, rows, &xt, width, &mut out)
                    };
                    assert_eq!(out, expected_t, "the AVX2 tiles, width {width}");
                }
                #[cfg(all(target_arch = "x86_64", tchprune_avx512))]
                if width >= 16 && crate::cpu::has_avx512f() {
                    let mut out = vec![f32::NAN; rows * width];
                    // SAFETY: the CPU has AVX-512F, checked just above, and `width` is 16, 32 or 64.
                    unsafe {
                        super::tiled_avx512(tiled, values, &m.order, 0, rows, &xt, width, &mut out)
                    };
                    assert_eq!(out, expected_t, "the AVX-512 tiles, width {width}");
                }
            }
        }
    }

    #[test]
    fn rows_stored_by_count_give_each_row_its_own_outputs() {
        use super::CsrMatrix;
        use crate::sparse::row_order;
        use tch::Tensor;
        // Rows of 0 to 28 entries, so that each window stores its rows out of order, over more
        // windows than the cores' ranges (whose edges then fall on windows' edges) and a last
        // window in part; sums exact in `f32`, as above.
        let (rows, cols) = (16 * row_order::MAX_WINDOW + 77, 120usize);
        let weight: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let (r, c) = (i / cols, i % cols);
                if (c * 13 + r * 7) % cols < (r * 7919) % 29 {
                    ((i % 11) as f32 - 5.0) / 4.0
                } else {
                    0.0
                }
            })
            .collect();
        let tensor = Tensor::from_slice(&weight).reshape([rows as i64, cols as i64]);
        let m = CsrMatrix::from_dense(&tensor).unwrap();
        assert!(
            (1..rows).any(|p| m.order.row(p) < m.order.row(p - 1)),
            "no row moved"
        );
        for r in [0, 1, 300, rows - 1] {
            let mut row = vec![0.0; cols];
            m.for_each_entry(r, |c, v| row[c] = v);
            assert_eq!(row, weight[r * cols..(r + 1) * cols], "row {r}");
        }
        for batch in [1, 8, 13, 64] {
            let (x, expected) = exact_inputs_and_sums(&weight, rows, cols, batch);
            let xs = Tensor::from_slice(&x).reshape([batch as i64, cols as i64]);
            let y: Vec<f32> = Vec::try_from(m.multiply(&xs, None).unwrap().view(-1)).unwrap();
            assert_eq!(y, expected, "batch {batch}");
            if !matches!(batch, 1 | 8 | 64) {
                continue;
            }
            let mut xt = vec![0.0; cols * batch];
            transpose(&x, batch, cols, &mut xt, None);
            let mut expected_t = vec![0.0; rows * batch];
            transpose(&expected, batch, rows, &mut expected_t, None);
            for (start, end) in [(0, rows), (5, 700), (300, 512), (1000, rows), (17, 18)] {
                let mut out = vec![f32::NAN; (end - start) * batch];
                m.rows_times(start, end, &xt, batch, &mut out);
                let want = &expected_t[start * batch..end * batch];
                assert_eq!(out, want, "rows {start}..{end}, batch {batch}");
            }
        }
    }

    #[test]
    fn transpose_moves_every_entry_whatever_the_shape() {
        for (rows, cols) in [
            (0, 5),
            (5, 0),
            (1, 1),
            (8, 8),
            (3, 17),
            (32, 2048),
            (19, 8),
            (16, 9),
            // 16x16 tiles (AVX-512), with edges of 8x8 tiles and single entries.
            (16, 16),
            (40, 24),
            (37, 53),
            (256, 64),
            (2048, 48),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let row_bias: Vec<f32> = (0..rows).map(|r| (r as f32 + 1.0) * 0.25).collect();
            for bias in [None, Some(&row_bias[..])] {
                let mut dst = vec![f32::NAN; rows * cols];
                transpose(&src, rows, cols, &mut dst, bias);
                for r in 0..rows {
                    for c in 0..cols {
                        let expected = src[r * cols + c] + bias.map_or(0.0, |b| b[r]);
                        let at = format!("{rows}x{cols} at {r},{c}, bias {}", bias.is_some());
                        assert_eq!(dst[c * rows + r], expected, "{at}");
                    }
                }
            }
        }
    }

    #[test]
    fn aligned_floats_start_on_a_cache_line_and_keep_their_values() {
        assert_eq!(std::mem::align_of::<super::Line>(), 64);
        let mut floats = AlignedFloats::default();
        for len in [1, 15, 16, 17, 1000, 998, 1000, 3, 0, 64 * 256] {
            let kept = floats.as_mut_slice().len().min(len);
            let before: Vec<f32> = floats.as_mut_slice()[..kept].to_vec();
            floats.resize(len);
            let slice = floats.as_mut_slice();
            assert_eq!(slice.len(), len);
            assert_eq!(slice.as_ptr() as usize % 64, 0, "length {len}");
            assert_eq!(slice[..kept], before[..], "length {len}");
            assert!(slice[kept..].iter().all(|&v| v == 0.0), "length {len}");
            slice
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = i as f32 + 1.0);
        }
    }
}
