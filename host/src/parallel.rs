//! Splitting a pass over many entries across the CPU's cores, for the few loops tchprune runs
//! itself rather than through libtorch.
//!
//! The pieces run on libtorch's own intra-op threads (`at::parallel_for`, OpenMP), not on
//! threads of tchprune's: after a libtorch operation its OpenMP workers keep spinning for a
//! while, and a thread started beside them fights them for the cores (masking the weights of
//! a 3x2048x2048 MLP right after an Adam step: 9.5 ms on threads of tchprune's, 4.9 ms on
//! libtorch's, 2 cores). Running on them also spares a thread start per call, and
//! `tch::set_num_threads` limits tchprune's loops too.

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;

extern "C" {
    fn tchprune_parallel_for(
        count: i64,
        work: unsafe extern "C" fn(*mut std::ffi::c_void, i64),
        context: *mut std::ffi::c_void,
    );
}

/// Inputs below this many entries per worker run on the calling thread.
const MIN_CHUNK: usize = 1 << 20;

/// How many pieces a large input is split into: the CPU's cores, at most 16. Asked once:
/// the answer comes from cgroup files, which cost more to read than a small tensor to prune.
pub(crate) fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(16)
    })
}

/// `work(i)` for each `i` in `0..count` on libtorch's intra-op threads (see the module docs),
/// the calling thread among them; all on the calling thread when `count` is at most 1 or when
/// called from inside a piece (OpenMP runs a nested region on the thread that opens it). Each
/// thread takes the next `i` when it is done with its last, so that a core slowed by other work
/// takes fewer. A panic in `work` is caught on its thread and resumed here once every piece has
/// ended.
fn on_libtorch_threads(count: usize, work: &(dyn Fn(usize) + Sync)) {
    struct Context<'a> {
        work: &'a (dyn Fn(usize) + Sync),
        count: usize,
        next: AtomicUsize,
        panic: Mutex<Option<Box<dyn Any + Send>>>,
    }
    unsafe extern "C" fn trampoline(context: *mut std::ffi::c_void, _worker: i64) {
        // SAFETY: `context` is the `Context` below, alive until `tchprune_parallel_for` returns.
        let context = unsafe { &*(context as *const Context<'_>) };
        let run = std::panic::AssertUnwindSafe(|| loop {
            let i = context.next.fetch_add(1, Ordering::Relaxed);
            if i >= context.count {
                break;
            }
            (context.work)(i);
        });
        if let Err(payload) = std::panic::catch_unwind(run) {
            let mut panic = context.panic.lock().unwrap_or_else(|e| e.into_inner());
            panic.get_or_insert(payload);
        }
    }
    if count <= 1 {
        (0..count).for_each(work);
        return;
    }
    let context = Context {
        work,
        count,
        next: AtomicUsize::new(0),
        panic: Mutex::new(None),
    };
    // SAFETY: the trampoline only reads `context`, which outlives the call, and never unwinds.
    unsafe {
        tchprune_parallel_for(
            count.min(threads()) as i64,
            trampoline,
            &context as *const Context<'_> as *mut std::ffi::c_void,
        )
    };
    let panic = context
        .panic
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(payload) = panic {
        std::panic::resume_unwind(payload);
    }
}

/// Index ranges covering `0..len`: one per worker for large inputs, at most 2^31 entries each
/// (so that per-chunk counters fit in a `u32`).
pub(crate) fn chunks(len: usize) -> Vec<(usize, usize)> {
    let count = (len / MIN_CHUNK)
        .clamp(1, threads())
        .max(len.div_ceil(1 << 31));
    let size = len.div_ceil(count).max(1);
    (0..len)
        .step_by(size)
        .map(|start| (start, (start + size).min(len)))
        .collect()
}

/// `work(input)` for each input, on libtorch's threads when there are several; the results in
/// the inputs' order.
pub(crate) fn on_threads<I: Send, R: Send>(inputs: Vec<I>, work: impl Fn(I) -> R + Sync) -> Vec<R> {
    if inputs.len() <= 1 {
        return inputs.into_iter().map(work).collect();
    }
    let slots: Vec<Mutex<(Option<I>, Option<R>)>> = inputs
        .into_iter()
        .map(|input| Mutex::new((Some(input), None)))
        .collect();
    on_libtorch_threads(slots.len(), &|i| {
        let mut slot = slots[i].lock().unwrap_or_else(|e| e.into_inner());
        if let Some(input) = slot.0.take() {
            slot.1 = Some(work(input));
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            let (_, result) = slot.into_inner().unwrap_or_else(|e| e.into_inner());
            result.expect("every piece ran")
        })
        .collect()
}

/// `work(start, end)` on each chunk of `0..len`, on libtorch's threads when there are several.
pub(crate) fn on_chunks<R: Send>(len: usize, work: impl Fn(usize, usize) -> R + Sync) -> Vec<R> {
    on_threads(chunks(len), |(start, end)| work(start, end))
}

/// `work(start, end, &mut out[start..end])` on each chunk of `out`, on libtorch's threads when
/// there are several.
pub(crate) fn on_chunks_mut<T: Send, R: Send>(
    out: &mut [T],
    work: impl Fn(usize, usize, &mut [T]) -> R + Sync,
) -> Vec<R> {
    on_ranges_mut(&chunks(out.len()), 1, out, work)
}

/// `work(start, end, piece)` for each of `ranges` (consecutive, from 0), on libtorch's threads
/// when there are several: `piece` is the part of `data` (`width` entries per index) that
/// indices `start..end` cover.
pub(crate) fn on_ranges_mut<T: Send, R: Send>(
    ranges: &[(usize, usize)],
    width: usize,
    data: &mut [T],
    work: impl Fn(usize, usize, &mut [T]) -> R + Sync,
) -> Vec<R> {
    let mut rest = data;
    let mut pieces = Vec::with_capacity(ranges.len());
    for &(start, end) in ranges {
        let (piece, tail) = std::mem::take(&mut rest).split_at_mut((end - start) * width);
        rest = tail;
        pieces.push((start, end, piece));
    }
    on_threads(pieces, |(start, end, piece)| work(start, end, piece))
}

/// A piece of work: entries `start..end` of sequence `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Unit {
    pub seq: usize,
    pub start: usize,
    pub end: usize,
}

impl Unit {
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }
}

/// The entries of sequences of lengths `lens`, shared out evenly among the workers: one list of
/// units per worker, all in order (sequence by sequence, index by index), none over 2^31
/// entries. Many small sequences (the live entries of mostly pruned tensors) then keep every
/// core busy, which splitting each sequence on its own would not.
pub(crate) fn balanced_units(lens: &[usize]) -> Vec<Vec<Unit>> {
    let total: usize = lens.iter().sum();
    let workers = (total / MIN_CHUNK).clamp(1, threads());
    let share = total.div_ceil(workers).max(1);
    let mut lists = vec![Vec::new(); workers];
    let (mut worker, mut filled) = (0, 0);
    for (seq, &len) in lens.iter().enumerate() {
        let mut start = 0;
        while start < len {
            if filled == share && worker + 1 < workers {
                worker += 1;
                filled = 0;
            }
            let room = if worker + 1 < workers {
                share - filled
            } else {
                usize::MAX
            };
            let end = start + (len - start).min(room).min(1 << 31);
            lists[worker].push(Unit { seq, start, end });
            filled += end - start;
            start = end;
        }
    }
    lists
}

/// `work(units)` on each worker's list from [`balanced_units`], on libtorch's threads when
/// there are several.
pub(crate) fn on_units<R: Send>(lens: &[usize], work: impl Fn(&[Unit]) -> R + Sync) -> Vec<R> {
    on_threads(balanced_units(lens), |units| work(&units))
}

/// `work(unit, &mut outs[unit.seq][unit.start..unit.end])` for every unit of
/// [`balanced_units`] over the lengths of `outs`, on libtorch's threads when there are several;
/// the results come back in unit order.
pub(crate) fn on_units_mut<T: Send, R: Send>(
    outs: &mut [&mut [T]],
    work: impl Fn(Unit, &mut [T]) -> R + Sync,
) -> Vec<(Unit, R)> {
    let lens: Vec<usize> = outs.iter().map(|o| o.len()).collect();
    let mut rests: Vec<&mut [T]> = outs.iter_mut().map(|o| &mut **o).collect();
    let mut pieces: Vec<Vec<(Unit, &mut [T])>> = Vec::new();
    for units in balanced_units(&lens) {
        let mut list = Vec::with_capacity(units.len());
        for unit in units {
            let (piece, tail) = std::mem::take(&mut rests[unit.seq]).split_at_mut(unit.len());
            rests[unit.seq] = tail;
            list.push((unit, piece));
        }
        pieces.push(list);
    }
    on_threads(pieces, |list| {
        list.into_iter()
            .map(|(unit, piece)| (unit, work(unit, piece)))
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_libtorch_threads_runs_every_index_exactly_once() {
        for count in [0, 1, 2, 3, 37, 1000] {
            let runs: Vec<AtomicUsize> = (0..count).map(|_| AtomicUsize::new(0)).collect();
            on_libtorch_threads(count, &|i| {
                runs[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                runs.iter().all(|r| r.load(Ordering::Relaxed) == 1),
                "{count}"
            );
        }
    }

    #[test]
    fn on_threads_gives_each_input_its_result_in_input_order() {
        for count in [0, 1, 2, 3, 37] {
            let out = on_threads((0..count).collect(), |i: usize| (i, i * i));
            assert_eq!(out, (0..count).map(|i| (i, i * i)).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_panic_in_one_piece_reaches_the_caller_with_its_own_message() {
        let caught = std::panic::catch_unwind(|| {
            on_threads((0..8).collect(), |i: usize| {
                assert_ne!(i, 5, "piece {i} failed");
                i
            })
        });
        let payload = caught.expect_err("the panic is resumed on the caller");
        let message = payload
            .downcast_ref::<String>()
            .expect("a formatted message");
        assert!(message.contains("piece 5 failed"), "{message}");
    }

    #[test]
    fn calls_from_inside_a_piece_run_every_inner_piece() {
        let sums = on_threads((0..4).collect(), |i: usize| {
            on_threads((0..5).collect(), |j: usize| i * 5 + j)
                .into_iter()
                .sum::<usize>()
        });
        assert_eq!(sums, [10, 35, 60, 85]);
    }

    #[test]
    fn balanced_units_cover_every_entry_once_in_order() {
        for lens in [
            vec![],
            vec![0, 0],
            vec![5],
            vec![3 << 20, 7, 0, 1 << 20, 5 << 19],
            vec![1000; 5000],
        ] {
            let lists = balanced_units(&lens);
            let units: Vec<Unit> = lists.iter().flatten().copied().collect();
            let mut expected_next = vec![0; lens.len()];
            let mut last_seq = 0;
            for unit in &units {
                assert!(unit.seq >= last_seq, "in order");
                last_seq = unit.seq;
                assert_eq!(unit.start, expected_next[unit.seq]);
                assert!(unit.end > unit.start && unit.end <= lens[unit.seq]);
                expected_next[unit.seq] = unit.end;
            }
            assert_eq!(expected_next, lens);
            let total: usize = lens.iter().sum();
            let largest = lists.iter().map(|l| l.iter().map(Unit::len).sum::<usize>());
            assert!(largest.max().unwrap_or(0) <= total.div_ceil(lists.len()).max(1));
        }
    }

    #[test]
    fn on_units_mut_hands_out_disjoint_pieces() {
        let mut a = vec![0u32; 3 << 20];
        let mut b = vec![0u32; 5];
        let mut outs: Vec<&mut [u32]> = vec![&mut a, &mut b];
        let done = on_units_mut(&mut outs, |unit, piece| {
            for (offset, x) in piece.iter_mut().enumerate() {
                *x += (unit.start + offset) as u32;
            }
            piece.len()
        });
        assert_eq!(done.iter().map(|(_, n)| n).sum::<usize>(), (3 << 20) + 5);
        assert!(a.iter().enumerate().all(|(i, &x)| x == i as u32));
        assert_eq!(b, [0, 1, 2, 3, 4]);
    }
}
