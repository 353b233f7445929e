//! Per-thread slot indices: the "per-CPU" of [`PercpuRef`](crate::PercpuRef).
//!
//! The kernel's `this_cpu_add()` is a plain read-modify-write on memory that
//! only the current CPU touches, made safe by disabling preemption for one
//! instruction. Userspace cannot disable preemption, so a slot indexed by the
//! current CPU would need an atomic read-modify-write (a thread may migrate
//! between reading its CPU number and updating the slot), which costs as much
//! as the shared counter it replaces when uncontended. A slot owned by one
//! *thread* needs no atomic read-modify-write at all: its owner is the only
//! writer, so a `Relaxed` load and store suffice. `examples/slot_choice.rs`
//! measures the alternatives; the `percpu_ref` module docs give the figures.
//!
//! # Indices
//!
//! Each thread takes a small index on first use and gives it back when it
//! exits; a new thread takes the lowest free index. Indices therefore stay
//! below the peak number of threads that ever used a `PercpuRef` at once.
//! Handing an index over goes through `POOL`'s mutex, so the old owner's last
//! slot store happens-before the new owner's first slot load: ownership is
//! exclusive over time, not just at each instant.
//!
//! A `PercpuRef` has [`nr_slots`] slots; a thread whose index is beyond that
//! (or whose thread-local storage is already torn down, in a TLS destructor)
//! gets `None` and uses the shared atomic counter instead, which the bias
//! keeps far from zero in per-CPU mode.

/// How many slots a `PercpuRef` gets: twice the available parallelism,
/// between 8 and 128. Computed once per process.
#[cfg(not(loom))]
pub(crate) fn nr_slots() -> usize {
    static NR: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *NR.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(4, usize::from)
            .saturating_mul(2)
            .clamp(8, 128)
    })
}

/// Under loom: two slots, so that a model with three threads also runs the
/// slot-less (shared counter) path.
#[cfg(loom)]
pub(crate) fn nr_slots() -> usize {
    2
}

/// The calling thread's slot index, or `None` once its thread-local storage
/// is being destroyed.
#[inline]
pub(crate) fn thread_index() -> Option<usize> {
    imp::thread_index()
}

#[cfg(not(loom))]
mod imp {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    use std::sync::{Mutex, PoisonError};

    /// Indices handed out so far and those given back.
    struct Pool {
        /// Every index below `next` has been handed out at least once.
        next: usize,
        /// Given back by exited threads; the lowest is reused first.
        free: BinaryHeap<Reverse<usize>>,
    }

    static POOL: Mutex<Pool> = Mutex::new(Pool {
        next: 0,
        free: BinaryHeap::new(),
    });

    fn pool() -> std::sync::MutexGuard<'static, Pool> {
        // Nothing under this mutex panics; recover rather than propagate.
        POOL.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A thread's claim on its index; gives it back on thread exit.
    struct ThreadIndex(usize);

    impl ThreadIndex {
        fn claim() -> Self {
            let mut pool = pool();
            let index = match pool.free.pop() {
                Some(Reverse(i)) => i,
                None => {
                    pool.next += 1;
                    pool.next - 1
                }
            };
            ThreadIndex(index)
        }
    }

    impl Drop for ThreadIndex {
        fn drop(&mut self) {
            // The mutex hand-over: our last slot stores happen-before the
            // next owner's first slot load.
            pool().free.push(Reverse(self.0));
        }
    }

    std::thread_local! {
        static INDEX: ThreadIndex = ThreadIndex::claim();
    }

    #[inline]
    pub(super) fn thread_index() -> Option<usize> {
        INDEX.try_with(|i| i.0).ok()
    }
}

#[cfg(loom)]
mod imp {
    use loom::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering;

    loom::lazy_static! {
        // Per loom execution: indices restart at 0 in every execution.
        static ref NEXT: AtomicUsize = AtomicUsize::new(0);
    }

    loom::thread_local! {
        // Relaxed: uniqueness needs only the RMW's atomicity. Loom models run
        // few threads and never reuse indices.
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(super) fn thread_index() -> Option<usize> {
        INDEX.try_with(|i| *i).ok()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn indices_are_unique_among_live_threads() {
        let n = 4;
        let barrier = std::sync::Barrier::new(n);
        let mut seen: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|_| {
                    s.spawn(|| {
                        let i = thread_index().expect("TLS alive");
                        barrier.wait(); // all four alive at once
                        assert_eq!(thread_index(), Some(i), "stable within a thread");
                        i
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), n, "live threads never share an index");
    }

    #[test]
    fn nr_slots_is_bounded() {
        assert!((8..=128).contains(&nr_slots()));
    }
}
