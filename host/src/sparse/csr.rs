//! A CSR matrix of `f32` weights and the kernel that multiplies by it.
//!
//! Why not libtorch's CSR (MKL): at batch 1 it barely beats the dense `linear` at 90% sparsity,
//! where the bytes read promise about 5x. This kernel reads less (16-bit column indices when
//! the weight has at most 65,536 columns), splits the rows among the cores by their non-zero
//! count, and for a batch keeps one block of up to 64 outputs per row in vector registers while
//! it walks the row's non-zeros over a transposed copy of the input (AVX2 where the CPU has it).

#[cfg(target_arch = "x86_64")]
use crate::cpu::has_avx2_fma;
use crate::error::{PruneError, Result};
use crate::parallel;
use crate::tensor_data::{entries, entries_mut};
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

extern "C" {
    fn tchprune_parallel_for(
        count: i64,
        work: unsafe extern "C" fn(*mut std::ffi::c_void, i64),
        context: *mut std::ffi::c_void,
    );
}

/// `work(i)` for each `i` in `0..count` on libtorch's intra-op threads (`at::parallel_for`):
/// the threads libtorch's own operations run on, so the kernels never compete with them for
/// the cores, and `tch::set_num_threads` applies to them too. A panic in `work` is caught on
/// its thread and raised again here.
fn on_libtorch_threads(count: usize, work: &(dyn Fn(usize) + Sync)) {
    struct Context<'a> {
        work: &'a (dyn Fn(usize) + Sync),
        panicked: std::sync::atomic::AtomicBool,
    }
    unsafe extern "C" fn trampoline(context: *mut std::ffi::c_void, index: i64) {
        // SAFETY: `context` is the `Context` below, alive until `tchprune_parallel_for` returns.
        let context = unsafe { &*(context as *const Context<'_>) };
        let run = std::panic::AssertUnwindSafe(|| (context.work)(index as usize));
        if std::panic::catch_unwind(run).is_err() {
            context
                .panicked
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    if count <= 1 {
        (0..count).for_each(work);
        return;
    }
    let context = Context {
        work,
        panicked: std::sync::atomic::AtomicBool::new(false),
    };
    // SAFETY: the trampoline only reads `context`, which outlives the call, and never unwinds.
    unsafe {
        tchprune_parallel_for(
            count as i64,
            trampoline,
            &context as *const Context<'_> as *mut std::ffi::c_void,
        )
    };
    if context.panicked.into_inner() {
        panic!("a sparse kernel's worker panicked");
    }
}

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

/// A weight `[rows, cols]` in compressed sparse rows: the non-zero values of each row and their
/// columns.
#[derive(Clone, Debug)]
pub struct CsrMatrix {
    rows: usize,
    cols: usize,
    row_starts: Vec<u32>,
    columns: Columns,
    values: Vec<f32>,
    /// Row ranges of about equal non-zero counts, one per core.
    row_ranges: Vec<(usize, usize)>,
    /// The same entries tiled by columns, made on the first call with a batch.
    tiled: std::sync::OnceLock<Tiled>,
}

/// The entries of a [`CsrMatrix`] in tiles of [`TILE_COLUMNS`] columns, row by row within each
/// tile: a batch's inputs for one tile stay in the L1 cache while every row's non-zeros in that
/// tile read them, instead of each non-zero fetching its input row from wherever it lies.
#[derive(Clone, Debug)]
struct Tiled {
    tiles: usize,
    /// `starts[t * (rows + 1) + r]`: where row `r`'s entries of tile `t` start.
    starts: Vec<u32>,
    /// Columns within the tile.
    columns: Vec<u8>,
    values: Vec<f32>,
}

/// The largest transposed block of 8 samples read without tiles (an L2 cache holds it).
const UNTILED_INPUT_BYTES: usize = 256 << 10;

/// Columns per tile: a block of 32 samples of 256 inputs is 32 KiB, an L1 cache.
const TILE_COLUMNS: usize = 256;

/// Below this many multiply-adds a call stays on the calling thread.
const PARALLEL_WORK: usize = 1 << 17;

impl CsrMatrix {
    /// The non-zero entries of the 2-d floating-point tensor `weight` (on any device, any float
    /// dtype; stored as `f32`).
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
        let dense = weight
            .f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Float)?
            .f_contiguous()?;
        let dense: Vec<f32> = Vec::try_from(dense.f_view(-1)?)?;
        let nonzeros = dense.iter().filter(|v| **v != 0.0).count();
        if nonzeros > u32::MAX as usize {
            return Err(PruneError::InvalidArgument {
                method: "sparse".to_owned(),
                argument: "weight".to_owned(),
                reason: format!("{nonzeros} non-zero entries: at most 2^32 - 1"),
            });
        }
        let mut row_starts = Vec::with_capacity(rows + 1);
        let mut values = Vec::with_capacity(nonzeros);
        let mut columns = Vec::with_capacity(nonzeros);
        row_starts.push(0u32);
        for r in 0..rows {
            let row = &dense[r * cols..(r + 1) * cols];
            for (c, v) in row.iter().enumerate().filter(|(_, v)| **v != 0.0) {
                values.push(*v);
                columns.push(c as u32);
            }
            row_starts.push(values.len() as u32);
        }
        let columns = if cols <= 1 << 16 {
            Columns::U16(columns.into_iter().map(|c| c as u16).collect())
        } else {
            Columns::U32(columns)
        };
        let row_ranges = balanced_rows(&row_starts, parallel::threads());
        Ok(Self {
            rows,
            cols,
            row_starts,
            columns,
            values,
            row_ranges,
            tiled: std::sync::OnceLock::new(),
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

    /// The bytes the matrix occupies: values, column indices and row starts.
    pub fn bytes(&self) -> usize {
        let index = match &self.columns {
            Columns::U16(c) => c.len() * 2,
            Columns::U32(c) => c.len() * 4,
        };
        let tiled = self.tiled.get().map_or(0, |t| {
            t.values.len() * 4 + t.columns.len() + t.starts.len() * 4
        });
        self.values.len() * 4 + index + self.row_starts.len() * 4 + tiled
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
            let mut values = Vec::with_capacity(self.values.len());
            // Each row's entries are sorted by column: a cursor per row walks the tiles.
            let mut cursor: Vec<usize> = self.row_starts[..self.rows]
                .iter()
                .map(|&s| s as usize)
                .collect();
            for tile in 0..tiles {
                let limit = (tile + 1) * TILE_COLUMNS;
                for (r, k) in cursor.iter_mut().enumerate() {
                    starts.push(values.len() as u32);
                    let end = self.row_starts[r + 1] as usize;
                    while *k < end && self.column(*k) < limit {
                        columns.push((self.column(*k) - tile * TILE_COLUMNS) as u8);
                        values.push(self.values[*k]);
                        *k += 1;
                    }
                }
                starts.push(values.len() as u32);
            }
            Tiled {
                tiles,
                starts,
                columns,
                values,
            }
        })
    }

    /// `x @ self^T` for `x` of `[batch, cols]`, a contiguous `f32` CPU tensor: `[batch, rows]`.
    pub(crate) fn multiply(&self, x: &Tensor) -> Result<Tensor> {
        let batch = x.size()[0];
        let y = Tensor::f_empty([batch, self.rows as i64], (Kind::Float, Device::Cpu))?;
        let mut done = 0;
        // Blocks of the batch, widest first: each is one pass over the weight.
        for width in [32, 16, 8, 4, 2, 1] {
            while batch - done >= width {
                let block = x.f_narrow(0, done, width)?;
                if width == 1 {
                    let out = y.f_narrow(0, done, 1)?;
                    // SAFETY: one row of the contiguous `x` and of the fresh `y`, `cols` and
                    // `rows` floats, alive meanwhile; `y` is not read while written.
                    let (xt, yt) = unsafe { (floats(&block), floats_mut(&out)) };
                    self.block_product(xt, 1, yt);
                } else {
                    let xt = block.f_tr()?.f_contiguous()?;
                    let yt =
                        Tensor::f_empty([self.rows as i64, width], (Kind::Float, Device::Cpu))?;
                    // SAFETY: contiguous `f32` tensors of `cols * width` and `rows * width`
                    // floats, alive meanwhile; `yt` is fresh and only written here.
                    let (xs, ys) = unsafe { (floats(&xt), floats_mut(&yt)) };
                    self.block_product(xs, width as usize, ys);
                    y.f_narrow(0, done, width)?.f_copy_(&yt.f_tr()?)?;
                }
                done += width;
            }
        }
        Ok(y)
    }

    /// `y = self @ x` for `x` of `[cols, width]` and `y` of `[rows, width]`, both contiguous
    /// `f32` on the CPU (`y` may be a contiguous part of a larger tensor). For wide `x` (a
    /// convolution's unfolded patches, one column per output position), whose product comes
    /// out in the layout of the convolution's output.
    pub(crate) fn multiply_columns_into(&self, x: &Tensor, y: &Tensor) -> Result<()> {
        let width = x.size()[1];
        let fits = x.size() == [self.cols as i64, width]
            && y.size() == [self.rows as i64, width]
            && [x, y]
                .iter()
                .all(|t| t.kind() == Kind::Float && t.device() == Device::Cpu && t.is_contiguous());
        if !fits {
            return Err(PruneError::ShapeMismatch {
                what: "a sparse product's contiguous f32 operands".to_owned(),
                expected: vec![self.cols as i64, width, self.rows as i64, width],
                actual: [x.size(), y.size()].concat(),
            });
        }
        // SAFETY: contiguous `f32` CPU tensors of `cols * width` and `rows * width` floats
        // (checked above), alive meanwhile; the caller reads `y` only after this returns.
        let (xs, ys) = unsafe { (floats(x), floats_mut(y)) };
        self.block_product(xs, width as usize, ys);
        Ok(())
    }

    /// `yt = self @ xt` for `xt` of `[cols, width]`: `yt` is `[rows, width]`, its row ranges
    /// computed on the cores.
    fn block_product(&self, xt: &[f32], width: usize, yt: &mut [f32]) {
        self.by_row_ranges(width, yt, |start, end, out| {
            self.rows_times(start, end, xt, width, out)
        });
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
        let ranges: Vec<(usize, usize)> = if self.nonzeros() * width < PARALLEL_WORK {
            vec![(0, self.rows)]
        } else {
            self.row_ranges.clone()
        };
        let mut pieces = Vec::with_capacity(ranges.len());
        let mut rest = y;
        for (start, end) in ranges {
            let (piece, tail) = std::mem::take(&mut rest).split_at_mut((end - start) * width);
            rest = tail;
            pieces.push((start, end, piece));
        }
        let pieces: Vec<Mutex<(usize, usize, &mut [f32])>> =
            pieces.into_iter().map(Mutex::new).collect();
        on_libtorch_threads(pieces.len(), &|i| {
            let mut piece = pieces[i].lock().unwrap_or_else(|e| e.into_inner());
            let (start, end, ref mut out) = *piece;
            work(start, end, out);
        });
    }

    /// `f(column, value)` for each non-zero of row `r`, by column.
    #[inline(always)]
    pub(crate) fn for_each_entry(&self, r: usize, mut f: impl FnMut(usize, f32)) {
        let (a, b) = (self.row_starts[r] as usize, self.row_starts[r + 1] as usize);
        match &self.columns {
            Columns::U16(c) => {
                (c[a..b].iter().zip(&self.values[a..b])).for_each(|(c, v)| f(*c as usize, *v))
            }
            Columns::U32(c) => {
                (c[a..b].iter().zip(&self.values[a..b])).for_each(|(c, v)| f(*c as usize, *v))
            }
        }
    }

    /// Rows `start..end` times the transposed block `xt` (`[cols, width]`) into `out`
    /// (`[end - start, width]`).
    fn rows_times(&self, start: usize, end: usize, xt: &[f32], width: usize, out: &mut [f32]) {
        // A block of 8 whose inputs fit an L2 cache needs no tiles.
        #[cfg(target_arch = "x86_64")]
        if width == 8 && self.cols * 8 * 4 <= UNTILED_INPUT_BYTES && has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            unsafe {
                match &self.columns {
                    Columns::U16(c) => untiled8_avx2(self, c, start, end, xt, out),
                    Columns::U32(c) => untiled8_avx2(self, c, start, end, xt, out),
                }
            }
            return;
        }
        if matches!(width, 8 | 16 | 32) {
            let tiled = self.tiled();
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                // SAFETY: the CPU has AVX2 and FMA, checked just above.
                unsafe { tiled_avx2(tiled, self.rows, start, end, xt, width, out) };
                return;
            }
            match width {
                8 => tiled_rows::<8>(tiled, self.rows, start, end, xt, out),
                16 => tiled_rows::<16>(tiled, self.rows, start, end, xt, out),
                _ => tiled_rows::<32>(tiled, self.rows, start, end, xt, out),
            }
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
        match &self.columns {
            Columns::U16(columns) => dispatch_width(self, columns, s, e, xt, w, out),
            Columns::U32(columns) => dispatch_width(self, columns, s, e, xt, w, out),
        }
    }
}

/// A column index, widened.
trait Column: Copy {
    fn get(self) -> usize;
}

impl Column for u16 {
    #[inline(always)]
    fn get(self) -> usize {
        self as usize
    }
}

impl Column for u32 {
    #[inline(always)]
    fn get(self) -> usize {
        self as usize
    }
}

#[inline(always)]
fn dispatch_width<C: Column>(
    m: &CsrMatrix,
    columns: &[C],
    start: usize,
    end: usize,
    xt: &[f32],
    width: usize,
    out: &mut [f32],
) {
    match width {
        64 => rows_block::<C, 64>(m, columns, start, end, xt, out),
        32 => rows_block::<C, 32>(m, columns, start, end, xt, out),
        16 => rows_block::<C, 16>(m, columns, start, end, xt, out),
        8 => rows_block::<C, 8>(m, columns, start, end, xt, out),
        4 => rows_block::<C, 4>(m, columns, start, end, xt, out),
        2 => rows_block::<C, 2>(m, columns, start, end, xt, out),
        1 => rows_single(m, columns, start, end, xt, out),
        _ => rows_wide(m, columns, start, end, xt, width, out),
    }
}

/// `W` outputs per row, kept in registers over the row's non-zeros.
#[inline(always)]
fn rows_block<C: Column, const W: usize>(
    m: &CsrMatrix,
    columns: &[C],
    start: usize,
    end: usize,
    xt: &[f32],
    out: &mut [f32],
) {
    for (r, outputs) in (start..end).zip(out.chunks_exact_mut(W)) {
        let (a, b) = (m.row_starts[r] as usize, m.row_starts[r + 1] as usize);
        let mut acc = [0.0f32; W];
        for (v, c) in m.values[a..b].iter().zip(&columns[a..b]) {
            let x: &[f32; W] = xt[c.get() * W..c.get() * W + W]
                .try_into()
                .expect("W values");
            for j in 0..W {
                acc[j] += v * x[j];
            }
        }
        outputs.copy_from_slice(&acc);
    }
}

/// Columns of a wide block computed together: a chunk of an output row and of each input row
/// it reads stay in the L1 cache, and the chunks of all input rows in the L2 cache.
const WIDE_CHUNK: usize = 256;

/// Rows `start..end` times a wide `xt` (`[cols, width]`): each output row a sum of the input
/// rows its non-zeros select, scaled, chunk by chunk of the width.
#[inline(always)]
fn rows_wide<C: Column>(
    m: &CsrMatrix,
    columns: &[C],
    start: usize,
    end: usize,
    xt: &[f32],
    width: usize,
    out: &mut [f32],
) {
    for chunk in (0..width).step_by(WIDE_CHUNK) {
        let len = WIDE_CHUNK.min(width - chunk);
        for (r, row) in (start..end).zip(out.chunks_exact_mut(width)) {
            let acc = &mut row[chunk..chunk + len];
            acc.fill(0.0);
            let (a, b) = (m.row_starts[r] as usize, m.row_starts[r + 1] as usize);
            for (v, c) in m.values[a..b].iter().zip(&columns[a..b]) {
                let x = &xt[c.get() * width + chunk..c.get() * width + chunk + len];
                for (o, x) in acc.iter_mut().zip(x) {
                    *o += v * x;
                }
            }
        }
    }
}

/// One output per row: a gather-dot over the row's non-zeros, four sums in flight.
#[inline(always)]
fn rows_single<C: Column>(
    m: &CsrMatrix,
    columns: &[C],
    start: usize,
    end: usize,
    x: &[f32],
    out: &mut [f32],
) {
    for (r, output) in (start..end).zip(out.iter_mut()) {
        let (a, b) = (m.row_starts[r] as usize, m.row_starts[r + 1] as usize);
        let (values, cols) = (&m.values[a..b], &columns[a..b]);
        let mut sums = [0.0f32; 4];
        let quads = values.len() / 4 * 4;
        for k in (0..quads).step_by(4) {
            for j in 0..4 {
                sums[j] += values[k + j] * x[cols[k + j].get()];
            }
        }
        let mut total = (sums[0] + sums[1]) + (sums[2] + sums[3]);
        for k in quads..values.len() {
            total += values[k] * x[cols[k].get()];
        }
        *output = total;
    }
}

/// Row ranges covering all rows, `parts` of them with about equal non-zero counts.
fn balanced_rows(row_starts: &[u32], parts: usize) -> Vec<(usize, usize)> {
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

/// Rows `start..end` times the transposed inputs `xt` (`[cols, W]`) tile by tile, the `W`
/// outputs of a row carried from tile to tile in `out`.
#[inline(always)]
fn tiled_rows<const W: usize>(
    tiled: &Tiled,
    rows: usize,
    start: usize,
    end: usize,
    xt: &[f32],
    out: &mut [f32],
) {
    out.fill(0.0);
    for tile in 0..tiled.tiles {
        let inputs = &xt[tile * TILE_COLUMNS * W..];
        let starts = &tiled.starts[tile * (rows + 1)..];
        for (r, outputs) in (start..end).zip(out.chunks_exact_mut(W)) {
            let (a, b) = (starts[r] as usize, starts[r + 1] as usize);
            if a == b {
                continue;
            }
            let mut acc: [f32; W] = outputs.try_into().expect("W outputs");
            for (v, c) in tiled.values[a..b].iter().zip(&tiled.columns[a..b]) {
                let c = *c as usize * W;
                let x: &[f32; W] = inputs[c..c + W].try_into().expect("W values");
                for j in 0..W {
                    acc[j] += v * x[j];
                }
            }
            outputs.copy_from_slice(&acc);
        }
    }
}

/// [`tiled_rows`] with the accumulators in AVX registers and fused multiply-adds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tiled_avx2(
    tiled: &Tiled,
    rows: usize,
    start: usize,
    end: usize,
    xt: &[f32],
    width: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let vectors = width / 8;
    out.fill(0.0);
    assert!(out.len() >= (end - start) * width);
    for tile in 0..tiled.tiles {
        let base = tile * TILE_COLUMNS * width;
        let tile_columns = TILE_COLUMNS.min(xt.len() / width - tile * TILE_COLUMNS);
        let inputs = &xt[base..base + tile_columns * width];
        let starts = &tiled.starts[tile * (rows + 1)..(tile + 1) * (rows + 1)];
        for r in start..end {
            let (a, b) = (starts[r] as usize, starts[r + 1] as usize);
            if a == b {
                continue;
            }
            let values = &tiled.values[a..b];
            let columns = &tiled.columns[a..b];
            // The next rows' entries, ahead of their turn (a hint: never read past the end).
            _mm_prefetch::<_MM_HINT_T0>(tiled.values.as_ptr().wrapping_add(b + 64).cast());
            _mm_prefetch::<_MM_HINT_T0>(tiled.columns.as_ptr().wrapping_add(b + 64).cast());
            let o = out[(r - start) * width..(r - start + 1) * width].as_mut_ptr();
            // SAFETY: `o` points at this row's `width` outputs; every input read is within
            // `inputs` (columns of a tile are below its width, checked when tiling), `width`
            // floats at `column * width`.
            unsafe {
                let p = inputs.as_ptr();
                match vectors {
                    1 => {
                        let mut s0 = _mm256_loadu_ps(o);
                        for (v, c) in values.iter().zip(columns) {
                            let x = p.add(*c as usize * 8);
                            s0 = _mm256_fmadd_ps(_mm256_set1_ps(*v), _mm256_loadu_ps(x), s0);
                        }
                        _mm256_storeu_ps(o, s0);
                    }
                    2 => {
                        let (mut s0, mut s1) = (_mm256_loadu_ps(o), _mm256_loadu_ps(o.add(8)));
                        for (v, c) in values.iter().zip(columns) {
                            let x = p.add(*c as usize * 16);
                            let v = _mm256_set1_ps(*v);
                            s0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(x), s0);
                            s1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(x.add(8)), s1);
                        }
                        _mm256_storeu_ps(o, s0);
                        _mm256_storeu_ps(o.add(8), s1);
                    }
                    _ => {
                        let mut s = [
                            _mm256_loadu_ps(o),
                            _mm256_loadu_ps(o.add(8)),
                            _mm256_loadu_ps(o.add(16)),
                            _mm256_loadu_ps(o.add(24)),
                        ];
                        for (v, c) in values.iter().zip(columns) {
                            let x = p.add(*c as usize * 32);
                            let v = _mm256_set1_ps(*v);
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
    }
}

/// Rows `start..end` times a block of 8 samples (`xt`: `[cols, 8]`) straight from the CSR
/// entries, one AVX register of sums per row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn untiled8_avx2<C: Column>(
    m: &CsrMatrix,
    columns: &[C],
    start: usize,
    end: usize,
    xt: &[f32],
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    assert!(out.len() >= (end - start) * 8 && xt.len() >= m.cols * 8);
    for r in start..end {
        let (a, b) = (m.row_starts[r] as usize, m.row_starts[r + 1] as usize);
        // SAFETY: every column is below `cols`, so each read of 8 floats is within `xt`; the
        // write is this row's 8 outputs.
        unsafe {
            // Four sums in flight: a fused multiply-add takes four cycles to land.
            let mut sums = [_mm256_setzero_ps(); 4];
            let p = xt.as_ptr();
            let quads = (b - a) / 4 * 4;
            let mut k = a;
            while k < a + quads {
                // The weight streams from memory: ask for it well ahead of the sums.
                // (`wrapping_add`: an address past the end is only a hint, never read.)
                _mm_prefetch::<_MM_HINT_T0>(m.values.as_ptr().wrapping_add(k + 128).cast());
                _mm_prefetch::<_MM_HINT_T0>(columns.as_ptr().wrapping_add(k + 128).cast());
                for (j, sum) in sums.iter_mut().enumerate() {
                    let x = _mm256_loadu_ps(p.add(columns[k + j].get() * 8));
                    *sum = _mm256_fmadd_ps(_mm256_set1_ps(m.values[k + j]), x, *sum);
                }
                k += 4;
            }
            while k < b {
                let x = _mm256_loadu_ps(p.add(columns[k].get() * 8));
                sums[0] = _mm256_fmadd_ps(_mm256_set1_ps(m.values[k]), x, sums[0]);
                k += 1;
            }
            let s0 = _mm256_add_ps(sums[0], sums[1]);
            let s1 = _mm256_add_ps(sums[2], sums[3]);
            _mm256_storeu_ps(out.as_mut_ptr().add((r - start) * 8), _mm256_add_ps(s0, s1));
        }
    }
}
