//! Per-thread slots, the "per-CPU" of [`PercpuRef`](super::PercpuRef), and
//! the barrier pair that makes a slot update atomic with respect to a mode
//! switch.
//!
//! # Why per thread
//!
//! The kernel's `this_cpu_add()` is a plain read-modify-write on memory that
//! only the current CPU touches, made safe by disabling preemption around it.
//! Userspace cannot disable preemption, so a slot indexed by the current CPU
//! would need an atomic read-modify-write (a thread may migrate between
//! reading its CPU number and updating the slot), which costs as much as the
//! shared counter it replaces when uncontended. A slot owned by one *thread*
//! needs none: its owner is the only writer, so a `Relaxed` load and store
//! suffice. `examples/slot_choice.rs` measures the alternatives.
//!
//! # The section: `preempt_disable()` as one flag store
//!
//! Upstream wraps "load the mode, add to this CPU's counter" in
//! `rcu_read_lock_sched()`, so that the switch to atomic, after a grace
//! period, knows that no CPU is still between the two. Here each slot carries
//! its own `busy` flag, written only by the slot's owner, and the fast path
//! is its own tiny read-side section:
//!
//! ```text
//!   owner (get/put fast path)              switch to atomic (switch.rs)
//!   1. busy = 1            (Relaxed)       a. mode |= ATOMIC       (Relaxed, under the mutex)
//!      light_barrier()     (compiler)         ... call_rcu, grace period ...
//!   2. m = mode            (Acquire)       b. heavy_barrier()      (membarrier)
//!   3. if m is per-CPU:                    c. for each slot: wait until busy == 0 (Acquire)
//!        gets/puts += nr   (Relaxed ld+st) d. sum the slots
//!   4. busy = 0            (Release)
//! ```
//!
//! Steps 1–2 against a–c are a store-buffering pattern: `heavy_barrier()`
//! (`membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`) makes every running
//! thread execute a full barrier, so for each section either its step 2
//! reads `ATOMIC` (it leaves the slot alone), or step c reads its `busy = 1`
//! (or a later value) and waits for its step 4, whose `Release` carries the
//! step-3 store to the sum. Reading a 0 once per slot is enough: a section
//! that starts after it is ordered after the barrier and sees `ATOMIC`.
//! Sections never wait for anything, so step c only ever waits for an owner
//! that was preempted inside its four instructions.
//!
//! Gets and puts go to two counters, `gets` and `puts`, so that a get+put
//! pair carries one store-to-load dependency per counter instead of two in a
//! row through one word; the slot's value is `gets - puts` (wrapping).
//!
//! Without membarrier (an old kernel, a seccomp filter) no thread gets a slot:
//! every get and put goes to the shared counter, correct and unscalable.
//! Under loom and Miri, which cannot run membarrier, both barriers are
//! `fence(SeqCst)`, the same handshake with the cost on both sides.
//!
//! # Indices
//!
//! Each thread takes a small index on first use and gives it back when it
//! exits; a new thread takes the lowest free index. Indices therefore stay
//! below the peak number of threads that ever used a `PercpuRef` at once.
//! Handing an index over goes through `POOL`'s mutex, so the old owner's last
//! slot stores happen-before the new owner's first slot load: ownership is
//! exclusive over time, not just at each instant. A thread's counts stay in
//! its slot when it exits and are summed at the switch like any other.
//!
//! The index lives in a `const`-initialised thread-local `Cell` with no
//! destructor, so the fast path reads it with one `%fs`-relative load and no
//! "initialised yet?" check: the values [`UNCLAIMED`] and [`NO_SLOT`] are past
//! the end of every slot array, so the bounds check that every slot access
//! needs anyway sends an unclaimed thread to the slow path, which claims.
//! A second thread-local exists only for its destructor, which gives the
//! index back and leaves `NO_SLOT` behind for any later destructor of the
//! thread (which then uses the shared counter).

use crate::sync::{AtomicIsize, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;

/// One thread's share of one ref. The struct is `CachePadded` in the ref, so
/// that each owner writes a line of its own.
#[derive(Default)]
pub(super) struct Slot {
    /// 1 while the owner is between steps 1 and 4 of the fast path. Written
    /// by the owner only; read by the switch to atomic.
    pub(super) busy: AtomicUsize,
    /// References taken in this slot (wrapping). Owner-written in per-CPU
    /// mode; read and zeroed by mode switches when no section can write it.
    pub(super) gets: AtomicIsize,
    /// References dropped in this slot (wrapping). As `gets`.
    pub(super) puts: AtomicIsize,
}

impl Slot {
    /// The slot's share of the count, `gets - puts`, for the switch's sum.
    pub(super) fn value(&self) -> isize {
        // Relaxed: called after wait_sections(), whose Acquire loads of
        // `busy` ordered every slot store before us.
        self.gets
            .load(Ordering::Relaxed)
            .wrapping_sub(self.puts.load(Ordering::Relaxed))
    }

    /// Back to an empty slot, for the switch to per-CPU mode.
    pub(super) fn zero(&self) {
        // Relaxed: published by the Release store of per-CPU mode that
        // follows (switch_to_percpu_locked).
        self.gets.store(0, Ordering::Relaxed);
        self.puts.store(0, Ordering::Relaxed);
    }

    /// Step c: wait until the owner is outside its section.
    pub(super) fn wait_section(&self) {
        let mut spins = 0u32;
        // Acquire: pairs with the Release store of step 4; the section's
        // slot update happens-before our sum.
        while self.busy.load(Ordering::Acquire) != 0 {
            // The owner was preempted inside its section: let it run.
            spins += 1;
            if cfg!(loom) || spins > 64 {
                crate::sync::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// The slots of one ref: `nr_slots()` padded [`Slot`]s.
pub(super) fn new_slots() -> Box<[CachePadded<Slot>]> {
    (0..nr_slots())
        .map(|_| CachePadded::new(Slot::default()))
        .collect()
}

/// The fast path's half of the barrier pair (step 1 → step 2).
#[inline(always)]
pub(super) fn light_barrier() {
    #[cfg(not(any(loom, miri)))]
    {
        // The CPU barrier comes from heavy_barrier()'s membarrier; only the
        // compiler must keep the `busy` store before the mode load.
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    }
    #[cfg(any(loom, miri))]
    {
        // SeqCst fence: pairs with the one in heavy_barrier().
        crate::sync::fence(Ordering::SeqCst);
    }
}

/// The switch's half of the barrier pair (step b): when it returns, every
/// thread that holds a slot has executed a full barrier since the call began.
pub(super) fn heavy_barrier() {
    #[cfg(not(any(loom, miri)))]
    {
        if imp::membarrier_ready() {
            imp::membarrier_private_expedited();
        } else {
            // No thread holds a slot (claim() refuses them all), so there
            // is no section to pair with; a fence costs nothing here.
            std::sync::atomic::fence(Ordering::SeqCst);
        }
    }
    #[cfg(any(loom, miri))]
    {
        // SeqCst fence: pairs with the one in light_barrier().
        crate::sync::fence(Ordering::SeqCst);
    }
}

/// Never claimed: the thread's first slot access claims.
#[cfg_attr(loom, allow(dead_code))]
pub(super) const UNCLAIMED: usize = usize::MAX;
/// No slot, for good: thread-local storage torn down, or no membarrier.
pub(super) const NO_SLOT: usize = usize::MAX - 1;

/// How many slots a `PercpuRef` gets: twice the available parallelism,
/// between 8 and 128. Computed once per process.
#[cfg(not(loom))]
pub(super) fn nr_slots() -> usize {
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
pub(super) fn nr_slots() -> usize {
    2
}

/// The calling thread's slot index; [`UNCLAIMED`] or [`NO_SLOT`] (both past
/// every slot array) when it has none.
#[inline(always)]
pub(super) fn thread_index() -> usize {
    imp::thread_index()
}

/// Claims a slot index for a thread that has never had one. Returns whether
/// the thread holds one now (it may still be past a ref's slots).
#[cold]
#[inline(never)]
pub(super) fn claim() -> bool {
    imp::claim()
}

#[cfg(not(loom))]
mod imp {
    use super::{NO_SLOT, UNCLAIMED};
    use std::cell::Cell;
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

    /// Exists for its destructor: gives the thread's index back.
    struct Claim;

    impl Drop for Claim {
        fn drop(&mut self) {
            let index = INDEX.with(|i| i.replace(NO_SLOT));
            if index < NO_SLOT {
                // The mutex hand-over: our last slot stores happen-before the
                // next owner's first slot load.
                pool().free.push(Reverse(index));
            }
        }
    }

    std::thread_local! {
        // No destructor: readable with one TLS-relative load, during
        // thread-local destruction too.
        static INDEX: Cell<usize> = const { Cell::new(UNCLAIMED) };
        static CLAIM: Claim = const { Claim };
    }

    #[inline(always)]
    pub(super) fn thread_index() -> usize {
        INDEX.with(Cell::get)
    }

    pub(super) fn claim() -> bool {
        if INDEX.with(Cell::get) != UNCLAIMED {
            return false;
        }
        // Registering membarrier before the first slot of the process is
        // handed out is what lets heavy_barrier() rely on it.
        // Touching CLAIM registers its destructor; it fails once the
        // thread's destructors have begun.
        if !membarrier_ready() || CLAIM.try_with(|_| ()).is_err() {
            INDEX.with(|i| i.set(NO_SLOT));
            return false;
        }
        let mut pool = pool();
        let index = match pool.free.pop() {
            Some(Reverse(i)) => i,
            None => {
                pool.next += 1;
                pool.next - 1
            }
        };
        drop(pool);
        INDEX.with(|i| i.set(index));
        true
    }

    /// Whether this process may give out slots: membarrier's
    /// `PRIVATE_EXPEDITED` command is registered. Decided once; `OnceLock`
    /// orders the decision before every slot claim and every switch that
    /// reads it.
    pub(super) fn membarrier_ready() -> bool {
        static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *READY.get_or_init(register_membarrier)
    }

    #[cfg(not(miri))]
    fn register_membarrier() -> bool {
        use rustix::thread::{membarrier, membarrier_query, MembarrierCommand};
        let supported = membarrier_query();
        if !supported.contains_command(MembarrierCommand::PrivateExpedited)
            || !supported.contains_command(MembarrierCommand::RegisterPrivateExpedited)
        {
            tracing::info!(
                target: "shrinker_sync::percpu_ref",
                "membarrier PRIVATE_EXPEDITED unsupported; PercpuRef uses its shared counter"
            );
            return false;
        }
        match membarrier(MembarrierCommand::RegisterPrivateExpedited) {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(
                    target: "shrinker_sync::percpu_ref",
                    error = %e,
                    "membarrier registration refused; PercpuRef uses its shared counter"
                );
                false
            }
        }
    }

    /// Miri cannot run membarrier; it pairs fences instead (see
    /// light_barrier()).
    #[cfg(miri)]
    fn register_membarrier() -> bool {
        true
    }

    #[cfg(not(miri))]
    pub(super) fn membarrier_private_expedited() {
        use rustix::thread::{membarrier, MembarrierCommand};
        loop {
            match membarrier(MembarrierCommand::PrivateExpedited) {
                Err(rustix::io::Errno::INTR) => continue,
                Ok(()) => return,
                // Registered but refused: cannot happen per the ABI. A fence
                // on our side alone would not order the slot owners'
                // sections, so going on would lose counts.
                Err(e) => panic!(
                    "membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed after successful \
                     registration: {e}"
                ),
            }
        }
    }
}

#[cfg(loom)]
mod imp {
    use super::NO_SLOT;
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
    pub(super) fn thread_index() -> usize {
        INDEX.try_with(|i| *i).unwrap_or(NO_SLOT)
    }

    pub(super) fn claim() -> bool {
        false
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
                        assert_eq!(thread_index(), UNCLAIMED, "a new thread has no index");
                        assert!(claim(), "a new thread claims one");
                        let i = thread_index();
                        assert!(i < NO_SLOT);
                        assert!(!claim(), "claimed once");
                        barrier.wait(); // all four alive at once
                        assert_eq!(thread_index(), i, "stable within a thread");
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
        assert!(nr_slots() < NO_SLOT && NO_SLOT < UNCLAIMED);
    }
}
