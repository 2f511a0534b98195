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
//! An embedder declares no workers. Its tasks run on whatever threads its
//! runtime has (tokio's default multi-thread runtime: one per core, with
//! work stealing), so a pool keeps one set per core and a thread uses set
//! `ordinal % sets`, where `ordinal` numbers threads in the order they first
//! call. A task's call then goes to a connection task spawned from its own
//! thread, which tokio's scheduler keeps there (a task woken from a worker
//! thread is queued on that worker): a call wakes nothing on another thread
//! where the single shared connection made every call cross (measured with
//! `pool_bench` against redis-rs, see the README).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// How many worker event loops the process runs (0: none declared).
static WORKERS: AtomicUsize = AtomicUsize::new(0);

/// The next ordinal a thread that is not a worker gets (see [`set_for`]).
static NEXT_ORDINAL: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's worker index, or `usize::MAX` on a thread that is not
    /// a worker.
    static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    /// This thread's ordinal among the threads that are not workers,
    /// `usize::MAX` until it first asks.
    static ORDINAL: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// How many connection sets a pool built now keeps: one per declared worker
/// and one shared by every other thread, or (no workers declared: an
/// embedder) one per core.
pub(crate) fn sets() -> usize {
    match count() {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        n => n + 1,
    }
}

/// The calling thread's place: its worker index, or its ordinal among the
/// other threads.
#[inline]
pub(crate) fn place() -> Place {
    let i = INDEX.with(Cell::get);
    if i != usize::MAX {
        return Place::Worker(i);
    }
    Place::Other(ORDINAL.with(|o| {
        let mut v = o.get();
        if v == usize::MAX {
            v = NEXT_ORDINAL.fetch_add(1, Relaxed);
            o.set(v);
        }
        v
    }))
}

/// Where a thread stands (see [`place`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// A declared worker, by index.
    Worker(usize),
    /// Any other thread, by the order it first asked in.
    Other(usize),
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
pub fn current() -> Option<usize> {
    let i = INDEX.with(Cell::get);
    (i != usize::MAX).then_some(i)
}

/// The connection set a caller at `place` uses out of `sets`, when
/// `workers` are declared (0: an embedder); pure, so the rule is tested
/// apart from threads. With workers, each has its own set and the last is
/// shared by every other thread; without, threads take turns over the sets.
pub(crate) fn set_for(place: Place, workers: usize, sets: usize) -> usize {
    let last = sets.saturating_sub(1);
    match (place, workers) {
        (Place::Worker(i), _) if i < last => i,
        (_, w) if w > 0 => last,
        (Place::Worker(i) | Place::Other(i), _) => i % sets.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_get_their_own_set_and_others_share_the_last() {
        use Place::{Other, Worker};
        // Two workers: sets 0 and 1 are theirs, set 2 everyone else's.
        assert_eq!(set_for(Worker(0), 2, 3), 0);
        assert_eq!(set_for(Worker(1), 2, 3), 1);
        assert_eq!(set_for(Other(0), 2, 3), 2);
        assert_eq!(set_for(Other(7), 2, 3), 2);
        // A worker index the pool has no set for (a pool built before the
        // count grew) uses the shared set.
        assert_eq!(set_for(Worker(5), 2, 3), 2);
        // An embedder (no workers) on 4 cores: threads take turns.
        assert_eq!(set_for(Other(0), 0, 4), 0);
        assert_eq!(set_for(Other(3), 0, 4), 3);
        assert_eq!(set_for(Other(5), 0, 4), 1);
        // One set: everyone shares it.
        assert_eq!(set_for(Other(9), 0, 1), 0);
        assert_eq!(set_for(Worker(0), 1, 1), 0);
    }

    #[test]
    fn a_thread_is_a_worker_once_it_enters() {
        std::thread::spawn(|| {
            assert_eq!(current(), None);
            assert!(matches!(place(), Place::Other(_)));
            enter(3);
            assert_eq!(current(), Some(3));
            assert_eq!(place(), Place::Worker(3));
        })
        .join()
        .expect("thread");
        // Another thread is not affected.
        assert_eq!(current(), None);
    }
}
