//! The Linux kernel's object-lifetime primitives, for userspace.
//!
//! Reclaim machinery spends most of its life deciding *when an object may
//! go*: a cache entry that a reader just found, a shrinker that a walk just
//! pinned, a swap device that `swapoff` wants gone while long-lived handles
//! still name it. The kernel answers with five small tools, and this crate
//! ports them with the kernel's semantics and the Rust memory model's proofs:
//!
//! | kernel | here | what it decides |
//! |---|---|---|
//! | `refcount_t` (`include/linux/refcount.h`) | [`Refcount`] | who drops the last reference, with saturation instead of wrap-around |
//! | `struct completion` (`kernel/sched/completion.c`) | [`Completion`] | "this has happened": counted tokens, or done-for-good after `complete_all` |
//! | `struct rcuwait` (`include/linux/rcuwait.h`) | [`RcuWait`] | one waiter sleeping until a condition holds, woken without a lock |
//! | `struct percpu_ref` (`lib/percpu-refcount.c`) | [`PercpuRef`] | a reference count that costs no shared cache line while live and becomes exact when killed |
//! | per-VMA lock: `vm_refcnt`, `vm_lock_seq`, `mm_lock_seq` (`mm/mmap_lock.c`, 6.15) | [`RefLock`], [`RefLockDomain`] | whether one object of a big-lock structure may be read without the big lock: a refcount that is also a read lock, write-locked by sequence number, with type-stable reuse |
//!
//! # Ordering: what changes in Rust
//!
//! The kernel's orderings are stated in the Linux kernel memory model, which
//! has *control dependencies* (a store after a branch on a loaded value is
//! ordered after the load) and *address dependencies* (`READ_ONCE` followed by
//! a dereference). The Rust (C++20) model has neither. Every place where the
//! kernel leans on one, this crate uses `Acquire` on the success path instead:
//!
//! * `refcount_inc_not_zero` ("control dependency on success") and the
//!   `dec_if_one` / `dec_not_one` / `dec_and_lock` family are `Acquire` on
//!   success here; so the `_acquire` variants are the same operation and exist
//!   to keep the intent visible at call sites ported from the kernel.
//! * `smp_acquire__after_ctrl_dep()` after the final decrement is a
//!   `fence(Acquire)`, as in `std::sync::Arc::drop`.
//! * `percpu_ref`'s `READ_ONCE(percpu_count_ptr)` is an `Acquire` load of the
//!   mode word.
//! * Store-buffering handshakes (`rcuwait`) use a `SeqCst` fence on each side.
//!
//! Each public method carries an `# Ordering` section in fixed wording, and
//! every atomic operation in the source names the operation it pairs with.
//!
//! # Warnings and misuse
//!
//! A [`Refcount`] that over- or underflows saturates and reports the event
//! once per kind through `tracing` (the kernel's `WARN_ONCE`);
//! [`refcount::set_panic_on_saturate`] turns every report into a panic for
//! test suites. Misuse of [`PercpuRef`] that would corrupt its count (a second
//! `kill`, `resurrect` of a live ref, `reinit` of a non-zero ref) or deadlock
//! (a form that waits for a grace period, called inside an RCU callback or
//! read-side section) panics with a message naming the misuse, before any
//! state is changed; so do a second concurrent [`RcuWait`] waiter and the
//! write-side misuse of [`RefLock`].
//!
//! # Blocking
//!
//! Every public function that may block, sleep or wait for a grace period
//! says so in a `# Blocking` section; every one that may panic, in
//! `# Panics`. A user callback's panic (a `release`, a `confirm`, an
//! `RcuWait` condition) propagates to the caller that ran it, with the
//! primitive left consistent; one run by the RCU worker is caught and
//! counted there.
//!
//! # Layout
//!
//! One module per primitive; imports flow one way, from the bottom of this
//! drawing to the top, never back (unit tests excepted):
//!
//! ```text
//!   reflock/    mod.rs (essay) ← lock.rs ← domain.rs, state.rs
//!      │
//!   percpu_ref/ mod.rs (essay, PercpuRef) ← switch.rs ← count.rs ← state.rs ← slot.rs
//!      │
//!   refcount/   mod.rs (essay, Refcount) ← saturation.rs
//!   completion.rs, rcuwait.rs (leaves; reflock's domain waits on an RcuWait)
//!      │
//!   sync (here): the std/loom switch every module takes its atomics from
//! ```
//!
//! Read `a ← b` as "`a` uses `b`". A folder's `mod.rs` opens with the essay
//! and a table of its files.
//!
//! # Checking
//!
//! The crate builds against [loom] with `RUSTFLAGS="--cfg loom"`: the private
//! `sync` module swaps every atomic, lock and thread primitive for loom's, and
//! `tests/loom_*.rs` model each protocol. [`PercpuRef`]'s switch to atomic
//! mode needs RCU; under loom it runs on the loom build of `shrinker-rcu`,
//! whose callbacks run when a thread calls `rcu_barrier()`. Unit tests that
//! make no system calls run under Miri.
//!
//! [loom]: https://docs.rs/loom
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod completion;
pub mod percpu_ref;
pub mod rcuwait;
pub mod refcount;
pub mod reflock;

pub use completion::Completion;
pub use percpu_ref::{InitFlags, PercpuRef};
pub use rcuwait::RcuWait;
pub use refcount::Refcount;
pub use reflock::{
    DomainReadGuard, DomainWriteGuard, ReadLock, RefLock, RefLockDomain, RefLockState, TryReadError,
};

/// The README's examples, compiled and run as doctests so that they cannot
/// rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The std/loom switch: every synchronisation primitive the crate uses comes
/// from here, so `--cfg loom` swaps all of them at once.
pub(crate) mod sync {
    #[cfg(loom)]
    pub(crate) use loom::{
        sync::atomic::{
            fence, AtomicBool, AtomicI32, AtomicIsize, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize,
        },
        sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard},
        thread,
    };
    pub(crate) use std::sync::atomic::Ordering;
    #[cfg(not(loom))]
    pub(crate) use std::{
        sync::atomic::{
            fence, AtomicBool, AtomicI32, AtomicIsize, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize,
        },
        sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard},
        thread,
    };

    /// `smp_acquire__after_ctrl_dep()`: the acquire half of a final decrement.
    ///
    /// A `fence(Acquire)` after the `Release` decrement that observed the last
    /// reference, as in `Arc::drop`. ThreadSanitizer does not understand fences,
    /// so under `--cfg shrinker_sanitize` an `Acquire` load of the same counter
    /// stands in (std's `acquire!` macro does the same).
    #[inline]
    pub(crate) fn acquire_after_final_dec<A: AcquireLoad>(counter: &A) {
        #[cfg(not(shrinker_sanitize))]
        {
            let _ = counter;
            fence(Ordering::Acquire);
        }
        #[cfg(shrinker_sanitize)]
        counter.load_acquire();
    }

    /// Counters that [`acquire_after_final_dec`] can load under TSAN.
    pub(crate) trait AcquireLoad {
        /// An `Acquire` load whose value is ignored.
        #[allow(dead_code)]
        fn load_acquire(&self);
    }
    impl AcquireLoad for AtomicI32 {
        #[inline]
        fn load_acquire(&self) {
            let _ = self.load(Ordering::Acquire);
        }
    }
    impl AcquireLoad for AtomicIsize {
        #[inline]
        fn load_acquire(&self) {
            let _ = self.load(Ordering::Acquire);
        }
    }
}
