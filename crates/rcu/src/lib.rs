//! Userspace RCU with the Linux kernel's API.
//!
//! Read-copy-update lets readers walk shared data with no lock, no atomic
//! read-modify-write and no memory fence, while updaters publish new versions
//! and free the old ones only after every reader that could still see them has
//! left. This crate is the userspace analog of the kernel's `kernel/rcu/`:
//!
//! | kernel | here |
//! |---|---|
//! | `rcu_read_lock()` / `rcu_read_unlock()` | [`read_lock`] returning a [`ReadGuard`] (nestable, `!Send`) |
//! | `synchronize_rcu()` | [`synchronize_rcu`] (concurrent callers share grace periods) |
//! | `get_state_synchronize_rcu()` / `poll_state_synchronize_rcu()` / `cond_synchronize_rcu()` | [`get_state`] / [`poll_state`] / [`cond_synchronize`] |
//! | `call_rcu()` / `call_rcu_hurry()` | [`call_rcu_lazy`] / [`call_rcu`] (here the plain name is the prompt one) |
//! | `kfree_rcu()` | [`defer_drop`] |
//! | `rcu_barrier()` | [`rcu_barrier`] |
//! | lazy-RCU shrinker's `lazy_len` and flush | [`lazy_pending`], [`flush_lazy`] |
//! | `rcu_assign_pointer()` / `rcu_dereference()` / `rcu_replace_pointer()` | [`RcuPtr`] |
//! | `list_add_rcu()` / `list_del_rcu()` / `list_for_each_entry_rcu()` | [`RcuList`] |
//!
//! # The read side
//!
//! A reader is one thread-local word, `ctr`: the low half counts nesting, one
//! high bit holds the *phase* it saw when its outermost section began. Entering
//! the outermost section copies the global phase word into `ctr`; leaving it
//! stores the count back to zero. Neither is an atomic read-modify-write, and
//! neither is followed by a CPU fence: only a compiler fence. That is liburcu's
//! "memb" flavor, and it is sound because the *update* side pays for ordering
//! with `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which makes every
//! running thread of the process execute a full barrier. Where the kernel
//! refuses membarrier (old kernels, seccomp sandboxes), the crate falls back at
//! run time to readers that execute a `SeqCst` fence instead; [`barrier_mode`]
//! tells which one is in force. `SHRINKER_RCU_BARRIER=fence` in the
//! environment forces the fallback (tests use it to cover both).
//!
//! Threads register on their first [`read_lock`] (or `synchronize_rcu`) and
//! unregister when they exit. Registration takes a mutex; the read side never
//! does after that.
//!
//! # Grace periods
//!
//! [`synchronize_rcu`] runs the classic two-phase parity algorithm of liburcu
//! (`grace.rs` has the numbered protocol and its barrier pairs): barrier, wait
//! for readers of the old parity, flip the parity, wait again, barrier. Each
//! grace period is numbered; a caller first takes a cookie ([`get_state`]) and
//! returns as soon as any grace period that *started* after its cookie has
//! *ended*, so concurrent callers are served by at most two grace periods
//! between them.
//!
//! # Callbacks
//!
//! [`call_rcu`], [`call_rcu_lazy`] and [`defer_drop`] queue work on per-thread
//! shards drained by one background worker, which runs a grace period per batch
//! and then invokes the batch. A callback that panics is caught, counted in
//! [`stats`] and reported through `tracing`; the worker lives on, whatever the
//! panic throws (a payload whose own `Drop` panics included). Lazy
//! callbacks follow the kernel's `CONFIG_RCU_LAZY` rules: they wait up to
//! [`Tunables::lazy_flush_delay`] (10 s) unless their shard holds
//! [`Tunables::lazy_flush_count`] of them, a prompt callback is queued on the
//! same shard, [`rcu_barrier`] runs, or someone calls [`flush_lazy`] — a
//! memory-pressure shrinker, typically, reading [`lazy_pending`] as its count.
//!
//! None of these three ever waits, as the kernel's `call_rcu` never sleeps:
//! they may be called under any lock, inside a read-side section and from a
//! callback. Overload is handled on the worker's side: past
//! [`Tunables::high_water`] ready callbacks on a shard the worker skips its
//! batching delay and runs grace periods back to back, each batch taking
//! everything ready (expedites); past [`Tunables::backlog_limit`] the overload
//! is counted ([`Stats::backlog_overloads`]) and reported once per process
//! through `tracing` at `warn`. A producer that would rather wait than let the
//! queue grow calls [`call_rcu_throttled`] or [`defer_drop_throttled`], which
//! wait past the limit until the worker has drained the shard — never under a
//! lock a callback may take, never inside a read-side section or a callback
//! (both panic there).
//!
//! # Misuse
//!
//! Calling [`synchronize_rcu`], [`cond_synchronize`] (when it has to wait),
//! [`rcu_barrier`] or a throttled call inside a read-side section would wait
//! for itself; each panics with a message that names the mistake, as do
//! `rcu_barrier` and the throttled calls from inside a callback
//! ([`in_callback`] lets other code refuse the same way). Nesting read-side
//! sections more than `2^31 - 1` deep (`2^15 - 1` on 32-bit targets) panics
//! too, in every build.
//!
//! # Limits
//!
//! * `fork()`: like liburcu without its atfork hooks, the child may only call
//!   `exec` (its copy of the reader registry names threads that do not exist
//!   there, and it has no callback worker).
//! * A read-side section that never ends (a leaked [`ReadGuard`]) stalls every
//!   grace period, and with it every deferred free, as in the kernel. That
//!   includes a callback that leaks one: the worker then waits for itself.
//!   Nothing can end such a section on the leaker's behalf, since a leaked
//!   guard (`Box::leak`, a thread-local) can still be borrowed later.
//! * A callback that panics while already unwinding (a `Drop` that panics
//!   during a panic) aborts the process, as anywhere in Rust.
//!
//! # Layout
//!
//! Each file is one concern; imports flow one way, from the bottom of this
//! table to the top, never back (the unit tests excepted):
//!
//! ```text
//!   ptr.rs, list.rs        RcuPtr, RcuList: what users build on the API
//!        │
//!   callback/              call_rcu & co: mod.rs (API, enqueue), worker.rs
//!        │
//!   grace.rs               synchronize_rcu, the polled API, the protocol
//!        │
//!   reader.rs              read_lock, ReadGuard, thread registration
//!        │
//!   domain.rs              the one process-wide state, barrier_mode()
//!        │
//!   registry.rs, callback/queue.rs, barrier.rs
//!                          the state the domain owns: reader records and
//!                          lists, callback queues, the barrier pair
//!        │
//!   contain.rs, sync (here) panic containment; the std/loom switch
//! ```
//!
//! A file may use any file below it. `callback/queue.rs` is below the
//! domain although its folder is above: the domain owns the queues, the
//! rest of the folder acts on them.
//!
//! # Example
//!
//! ```
//! use shrinker_rcu::{read_lock, RcuPtr};
//!
//! struct Config { limit: usize }
//! let config = RcuPtr::new(Config { limit: 10 });
//!
//! // Reader: no lock, no fence; the reference cannot outlive the guard.
//! {
//!     let guard = read_lock();
//!     assert_eq!(config.load(&guard).map(|c| c.limit), Some(10));
//! }
//!
//! // Updater: publish a new version; the old one is freed after a grace period.
//! let old = config.replace(Config { limit: 20 });
//! drop(old); // deferred drop, after every pre-existing reader has left
//!
//! // Or wait for the grace period and take the old value back.
//! let old = config.replace(Config { limit: 30 }).unwrap().into_box();
//! assert_eq!(old.limit, 20);
//! ```
//!
//! # Under loom
//!
//! With `--cfg loom` the same code runs inside `loom::model`: the global state
//! is created afresh for every execution, readers always use `SeqCst` fences
//! (loom does not model membarrier; a `SeqCst` fence on each side stands in
//! for it), and there is no worker thread: queued callbacks run when a thread
//! calls [`rcu_barrier`], which synchronizes and then invokes them inline.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

/// `const fn` under std, plain `fn` under loom (whose atomics and locks have
/// no `const` constructors): one body for both.
macro_rules! loom_const_fn {
    ($(#[$attr:meta])* $vis:vis fn $name:ident() -> $ret:ty $body:block) => {
        #[cfg(not(loom))]
        $(#[$attr])* $vis const fn $name() -> $ret $body
        #[cfg(loom)]
        $(#[$attr])* $vis fn $name() -> $ret $body
    };
}

mod barrier;
mod callback;
mod contain;
mod domain;
mod grace;
mod list;
mod ptr;
mod reader;
mod registry;

pub use barrier::BarrierMode;
pub use callback::{
    call_rcu, call_rcu_lazy, call_rcu_throttled, defer_drop, defer_drop_throttled, flush_lazy,
    in_callback, lazy_pending, rcu_barrier, stats, try_flush_lazy, tunables, Stats, Tunables,
};
pub use domain::{barrier_mode, heavy_barrier, LightBarrier};
pub use grace::{cond_synchronize, get_state, poll_state, synchronize_rcu, GpState};
pub use list::{Iter, ListWriter, RcuList, Removed};
pub use ptr::{RcuPtr, Retired};
pub use reader::{in_read_section, read_lock, ReadGuard};

/// The std/loom switch: every atomic, lock and cell in this crate comes from here.
#[allow(unused_imports)]
mod sync {
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{
        fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize,
    };
    #[cfg(loom)]
    pub(crate) use loom::sync::{Mutex, MutexGuard};

    #[cfg(not(loom))]
    pub(crate) use std::sync::atomic::{
        fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize,
    };
    #[cfg(not(loom))]
    pub(crate) use std::sync::{Mutex, MutexGuard};

    pub(crate) use std::sync::atomic::{compiler_fence, Ordering};

    /// Yield inside a spin loop: loom must be told, the CPU should be.
    #[inline]
    pub(crate) fn spin_hint() {
        #[cfg(loom)]
        loom::thread::yield_now();
        #[cfg(not(loom))]
        std::hint::spin_loop();
    }

    /// Lock a mutex whose protected state stays consistent even if a holder
    /// panicked (every critical section here is panic-free or restores its
    /// invariants before unwinding), so poisoning carries no information.
    #[inline]
    pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }
}
