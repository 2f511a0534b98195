//! Which event loop the caller runs on, so that a pool can give each loop
//! its own backend connections.
//!
//! The proxy runs one single-threaded event loop per core (thread-per-core):
//! a client, its requests and the backend connections that serve them stay
//! on one thread, so a request never wakes another thread. For that, a
//! [`Pool`](crate::pool::Pool) keeps one set of shared backend connections
//! per worker, and each set's connection tasks are spawned by (and so run
//! on) the worker that uses it. The proxy says how many workers it runs
//! ([`set_count`], before it builds pools) and each worker thread says which
//! one it is ([`enter`]).
//!
//! In the proxy every other thread (the control thread, a blocking-pool
//! thread) is not a worker: a pool gives them one more set, shared among
//! them.
//!
//! An embedder declares no workers and gets one set, shared by every thread
//! of its runtime. On tokio's multi-thread runtime a set per thread was
//! measured slower (`pool_bench`, 2 cores, C tasks doing SET then GET: one
//! set 149-172k ops/s at C=16 and 319-380k at C=128, a set per thread
//! 122-140k and 247-263k): the runtime moves tasks between its threads
//! anyway (a task woken by a connection task is queued on that task's
//! thread), so affinity is not kept, while splitting the callers over more
//! connections halves the requests each write and read carries.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// How many worker event loops the process runs (0: none declared).
static WORKERS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's worker index, or `usize::MAX` on a thread that is not
    /// a worker.
    static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// How many connection sets a pool built now keeps: one per declared worker
/// and one shared by every other thread (no workers declared, an embedder:
/// that one).
pub(crate) fn sets() -> usize {
    count() + 1
}

/// Declare how many worker event loops the process runs. Pools built after
/// this keep that many connection sets (plus one for other threads); pools
/// built before keep what they had (a worker index past their sets uses
/// their shared set).
pub fn set_count(workers: usize) {
    WORKERS.store(workers, Relaxed);
}

/// How many worker event loops were declared ([`set_count`]; 0 if none).
pub fn count() -> usize {
    WORKERS.load(Relaxed)
}

/// Mark the calling thread as worker `index` (call once, at the start of
/// the worker's thread, before it runs any task).
pub fn enter(index: usize) {
    INDEX.with(|i| i.set(index));
}

/// The calling thread's worker index, if it is a worker.
#[inline]
pub fn current() -> Option<usize> {
    let i = INDEX.with(Cell::get);
    (i != usize::MAX).then_some(i)
}

/// The connection set a caller on worker `worker` (`None`: any other
/// thread) uses out of `sets`; pure, so the rule is tested apart from
/// threads. Each worker has its own set; the last is shared by every other
/// thread (and by a worker index past the pool's sets: a pool built before
/// the count grew).
#[inline]
pub(crate) fn set_for(worker: Option<usize>, sets: usize) -> usize {
    // (Below `sets` whenever `sets` > 0: what `local` indexes with.)
    let last = sets.saturating_sub(1);
    match worker {
        Some(i) if i < last => i,
        _ => last,
    }
}

/// The calling thread's copy out of per-set `copies` (one per connection
/// set, see [`set_for`]): the one place that picks it. `copies` is never
/// empty: per-set arrays are made with [`sets`] entries, at least 1.
#[inline]
pub(crate) fn local<T>(copies: &[T]) -> &T {
    &copies[set_for(current(), copies.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    // A thread that is not a worker gets the last copy, the one shared by
    // such threads.
    #[test]
    fn local_on_another_thread_is_the_shared_copy() {
        let copies = [10, 20, 30];
        let got = std::thread::spawn(move || *local(&copies)).join();
        assert_eq!(got.ok(), Some(30));
    }

    #[test]
    fn workers_get_their_own_set_and_others_share_the_last() {
        // Two workers: sets 0 and 1 are theirs, set 2 everyone else's.
        assert_eq!(set_for(Some(0), 3), 0);
        assert_eq!(set_for(Some(1), 3), 1);
        assert_eq!(set_for(None, 3), 2);
        // A worker index the pool has no set for (a pool built before the
        // count grew) uses the shared set.
        assert_eq!(set_for(Some(5), 3), 2);
        // No workers declared (an embedder): one set for all.
        assert_eq!(set_for(None, 1), 0);
        assert_eq!(set_for(Some(0), 1), 0);
    }

    #[test]
    fn a_thread_is_a_worker_once_it_enters() {
        std::thread::spawn(|| {
            assert_eq!(current(), None);
            enter(3);
            assert_eq!(current(), Some(3));
        })
        .join()
        .expect("thread");
        // Another thread is not affected.
        assert_eq!(current(), None);
    }
}
