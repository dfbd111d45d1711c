//! Splitting a pass over many entries across the CPU's cores, for the few loops tchprune runs
//! itself rather than through libtorch.

use std::thread;

/// Inputs below this many entries per worker run on the calling thread.
const MIN_CHUNK: usize = 1 << 20;

/// Index ranges covering `0..len`: one per worker for large inputs, at most 2^31 entries each
/// (so that per-chunk counters fit in a `u32`).
pub(crate) fn chunks(len: usize) -> Vec<(usize, usize)> {
    let threads = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(16);
    let count = (len / MIN_CHUNK)
        .clamp(1, threads)
        .max(len.div_ceil(1 << 31));
    let size = len.div_ceil(count).max(1);
    (0..len)
        .step_by(size)
        .map(|start| (start, (start + size).min(len)))
        .collect()
}

/// `work(start, end)` on each chunk of `0..len`, on worker threads when there are several.
pub(crate) fn on_chunks<R: Send>(len: usize, work: impl Fn(usize, usize) -> R + Sync) -> Vec<R> {
    let ranges = chunks(len);
    if ranges.len() == 1 {
        return vec![work(0, len)];
    }
    thread::scope(|scope| {
        let work = &work;
        let workers: Vec<_> = ranges
            .into_iter()
            .map(|(start, end)| scope.spawn(move || work(start, end)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("workers do not panic"))
            .collect()
    })
}

/// `work(start, end, &mut out[start..end])` on each chunk of `out`, on worker threads when
/// there are several.
pub(crate) fn on_chunks_mut<T: Send, R: Send>(
    out: &mut [T],
    work: impl Fn(usize, usize, &mut [T]) -> R + Sync,
) -> Vec<R> {
    let len = out.len();
    let ranges = chunks(len);
    if ranges.len() == 1 {
        return vec![work(0, len, out)];
    }
    thread::scope(|scope| {
        let work = &work;
        let mut rest = out;
        let mut workers = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            let (chunk, tail) = rest.split_at_mut(end - start);
            rest = tail;
            workers.push(scope.spawn(move || work(start, end, chunk)));
        }
        workers
            .into_iter()
            .map(|w| w.join().expect("workers do not panic"))
            .collect()
    })
}
