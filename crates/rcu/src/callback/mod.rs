//! Callbacks after a grace period: `call_rcu`, `call_rcu_lazy`, `defer_drop`,
//! `rcu_barrier`, and the worker that runs them.
//!
//! # Shape
//!
//! Callbacks are queued on *shards* (the kernel's per-CPU `rcu_data`), each a
//! mutex-protected pair of vectors on its own cache line; a thread always uses
//! the same shard, so the mutex is uncontended and a thread's callbacks stay
//! in FIFO order. A callback is a [`QueuedCallback`](queue::QueuedCallback): a data word and a function
//! pointer, 16 bytes. `defer_drop(Box<T>)` stores the box's own pointer with
//! `drop::<Box<T>>` as the function, so it allocates nothing (kfree_rcu's
//! "no rcu_head" property); `call_rcu(f)` stores `f` itself in the data word
//! when it fits (a closure capturing one reference, `Arc` or `Box`), and boxes
//! it otherwise.
//!
//! One worker thread (started by the first callback) loops:
//!
//! 1. wait for work; unless the backlog is urgent, wait `batch_delay` more so
//!    that one grace period serves many callbacks (bounding the membarrier
//!    rate a busy enqueuer can cause);
//! 2. take every shard's ready list (and the lazy lists that are due);
//! 3. take a grace-period cookie *after* taking them and wait for it (sharing
//!    any grace period a concurrent `synchronize_rcu` runs);
//! 4. invoke them in order, catching panics;
//! 5. subtract them from each shard's `outstanding` count, end the overload
//!    episode of every shard left below `high_water`, and wake throttled
//!    enqueuers waiting on the backlog.
//!
//! # Lazy callbacks (the kernel's CONFIG_RCU_LAZY rules)
//!
//! `call_rcu_lazy` queues on the shard's lazy list. The lazy list moves to the
//! ready list when: it is older than `lazy_flush_delay` (10 s); it holds
//! `lazy_flush_count` (10,000) callbacks; a prompt callback is queued on the
//! same shard; `rcu_barrier` runs; or `flush_lazy` is called (the hook for a
//! memory-pressure shrinker, which counts with `lazy_pending`).
//!
//! # Barrier
//!
//! `rcu_barrier` flushes the lazy lists, then queues a marker callback on every
//! shard that has outstanding callbacks (queued, or taken but not yet run) and
//! waits for all markers. Each marker runs after everything queued before it
//! on its shard, and batches run in order, so when the last marker has run,
//! every callback queued before the barrier has run. With nothing outstanding
//! it returns at once, as the kernel's does.
//!
//! # Backlog
//!
//! `call_rcu`, `call_rcu_lazy` and `defer_drop` never wait, as the kernel's
//! `call_rcu` never sleeps: their callers hold locks (the other crates of
//! this workspace queue under their registry, group, `ListLru` and
//! `LruCache` locks), and a callback in the backlog may need one of them; an
//! enqueuer waiting for the worker would then wait forever. Overload is
//! answered on the worker's side instead, with two marks per shard, both
//! counted on its ready list:
//!
//! * At `high_water` (the kernel's `qhimark`, 10,000) an enqueue *expedites*:
//!   it sets `urgent` and unparks the worker, which skips (or cuts short) its
//!   batching delay and runs grace periods back to back, each batch taking
//!   every ready callback of every shard.
//! * At `backlog_limit` (100,000) the shard is *overloaded*: the episode is
//!   counted ([`Stats::backlog_overloads`], and every enqueue in it in
//!   [`Stats::overloaded_enqueues`]) and the process's first episode is
//!   reported through `tracing` at `warn` (later ones at `debug`). The
//!   episode ends when a batch leaves the shard below `high_water`. Memory
//!   is not bounded by these calls: a producer faster than grace periods
//!   grows the queue, as in the kernel.
//!
//! A producer that wants backpressure calls [`call_rcu_throttled`] or
//! [`defer_drop_throttled`] instead: past `backlog_limit` they wait until the
//! worker has drained the shard below `high_water`. They must not be called
//! holding a lock a callback may take, and they panic inside a read-side
//! section (the grace period would wait for the caller) and inside a
//! callback (the worker would wait for itself).
//!
//! # Files
//!
//! | file | holds | uses |
//! |---|---|---|
//! | `queue.rs` | [`QueuedCallback`](queue::QueuedCallback), the shards and their queues, [`Tunables`], the callback state the domain owns, and invoking a taken batch | `contain` |
//! | `worker.rs` | the worker thread (or, under loom, its inline stand-in), `rcu_barrier`, lazy flushes, the throttle | `queue`, the domain, grace periods |
//! | `mod.rs` (this file) | enqueueing and the public API | all of the above |
//!
//! `queue.rs` sits below the domain (the domain owns a [`Callbacks`](queue::Callbacks));
//! the other two sit above it.

use std::cell::Cell;
use std::time::Instant;

use crate::contain::report_contained;
use crate::domain::domain;
use crate::sync::{lock, Ordering};

pub(crate) mod queue;
mod worker;

use queue::Callbacks;
pub use queue::Tunables;
use queue::{QueuedCallback, Shard, IN_CALLBACKS};

/// A snapshot of the RCU machinery's counters. See [`stats`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Grace periods completed since start-up.
    pub grace_periods: u64,
    /// Callbacks invoked (including the ones that panicked).
    pub callbacks_invoked: u64,
    /// Callbacks that panicked; each was caught and reported.
    pub callback_panics: u64,
    /// Overload episodes: times a shard's ready callbacks reached
    /// [`Tunables::backlog_limit`] (an episode ends when a batch leaves the
    /// shard below [`Tunables::high_water`]). The first is reported through
    /// `tracing` at `warn`, later ones at `debug`.
    pub backlog_overloads: u64,
    /// Callbacks queued onto a shard at or over [`Tunables::backlog_limit`].
    /// The prompt calls queued them without waiting; the `*_throttled` calls
    /// then waited for the worker.
    pub overloaded_enqueues: u64,
    /// Callbacks queued or in flight, prompt and lazy.
    pub pending: usize,
    /// Lazy callbacks not yet flushed (same as [`lazy_pending`]).
    pub lazy_pending: usize,
    /// Threads registered as readers.
    pub readers: usize,
}

/// The producer side: queueing on this thread's shard.
impl Callbacks {
    /// Queue `callback` on this thread's shard. Never waits: past
    /// `high_water` it expedites the worker, past `backlog_limit` it also
    /// counts (and reports) the overload. Returns the shard and whether it
    /// is over `backlog_limit`, for [`Self::throttle`].
    fn enqueue(&'static self, callback: QueuedCallback, lazy: bool) -> (&'static Shard, bool) {
        let shard = self.my_shard();
        let tunables = &self.tunables;
        let mut wake = !lazy;
        let (ready, over_limit, new_episode) = {
            let mut q = lock(&shard.queue);
            // Cannot overflow: every counted callback holds memory.
            q.outstanding += 1;
            if lazy {
                if q.lazy.is_empty() {
                    q.lazy_since = Some(Instant::now());
                    // The worker must learn the new deadline.
                    wake = true;
                }
                q.lazy.push(callback);
                if q.lazy.len() >= tunables.lazy_flush_count() {
                    q.flush_lazy(&shard.lazy_len);
                    // They are ready now: the worker must run them.
                    wake = true;
                } else {
                    // Relaxed: a statistic read by `lazy_pending`.
                    shard.lazy_len.store(q.lazy.len(), Ordering::Relaxed);
                }
            } else {
                // A prompt callback carries the shard's lazy ones with it
                // (the kernel flushes the bypass list on a non-lazy enqueue).
                q.flush_lazy(&shard.lazy_len);
                q.ready.push(callback);
            }
            let ready = q.ready.len();
            let over_limit = ready >= tunables.backlog_limit();
            let new_episode = over_limit && !q.overloaded;
            q.overloaded |= over_limit;
            (ready, over_limit, new_episode)
        };
        if ready >= tunables.high_water() {
            self.kick_urgent();
        } else if wake {
            self.wake_worker();
        }
        // Counted even if someone set the limit below the high mark.
        if over_limit {
            self.overloaded(ready, new_episode);
        }
        (shard, over_limit)
    }

    /// A shard is over `backlog_limit`: count it, and report the first
    /// episode of the process at `warn` (later ones at `debug`; the counts
    /// are in [`Stats`]).
    #[cold]
    #[inline(never)]
    fn overloaded(&self, ready: usize, new_episode: bool) {
        // Relaxed: statistics.
        self.overloaded_enqueues.fetch_add(1, Ordering::Relaxed);
        if !new_episode {
            return;
        }
        let episodes = self.overload_episodes.fetch_add(1, Ordering::Relaxed) + 1;
        static REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        // Relaxed: only decides which log level; one thread wins.
        let first = !REPORTED.swap(true, Ordering::Relaxed);
        // The subscriber is user code, and `call_rcu` must not panic (its
        // callers hold locks): a panicking subscriber is contained.
        report_contained(|| {
            if first {
                tracing::warn!(
                    ready,
                    backlog_limit = self.tunables.backlog_limit(),
                    "RCU callback backlog over its limit: callbacks are queued faster than \
                     grace periods retire them; expediting (reported once per process, see \
                     shrinker_rcu::stats().backlog_overloads)"
                );
            } else {
                tracing::debug!(ready, episodes, "RCU callback backlog over its limit again");
            }
        });
    }
}

/// Run `f` after a grace period (the kernel's `call_rcu_hurry()`: never lazy).
///
/// `f` runs on the RCU callback worker, after every read-side section that
/// began before this call has ended. Callbacks queued by one thread run in
/// the order they were queued. `f` should be short and must not block for
/// long: it delays every callback behind it.
///
/// May be called inside a read-side section.
///
/// # Ordering
///
/// When `f` runs, every thread has executed a full barrier between the end of
/// its last read-side section that began before this call and the start of
/// `f`, and everything this thread did before the call happens-before `f`.
///
/// # Blocking
///
/// Never waits for the worker or a grace period, however long the backlog
/// (the kernel's `call_rcu` never sleeps either), so it may be called under
/// any lock, inside a read-side section and from a callback. It takes this
/// thread's shard lock for a push (the worker holds it only as long). Past
/// [`Tunables::high_water`] it expedites the worker; past
/// [`Tunables::backlog_limit`] the overload is counted in [`Stats`] and
/// reported: see [`call_rcu_throttled`] for a form that waits instead.
///
/// # Panics
///
/// If the worker thread cannot be spawned on first use. A panic inside `f` is
/// caught, counted in [`Stats::callback_panics`] and reported through
/// `tracing`.
///
/// # Example
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
/// let ran = Arc::new(AtomicBool::new(false));
/// let r = ran.clone();
/// shrinker_rcu::call_rcu(move || r.store(true, Ordering::Relaxed));
/// shrinker_rcu::rcu_barrier();
/// assert!(ran.load(Ordering::Relaxed));
/// ```
pub fn call_rcu<F: FnOnce() + Send + 'static>(f: F) {
    domain()
        .callbacks
        .enqueue(QueuedCallback::from_fn(f), false);
}

/// [`call_rcu`] with backpressure: past [`Tunables::backlog_limit`] the
/// caller waits for the callback worker to drain its shard.
///
/// For a producer that can queue callbacks faster than grace periods retire
/// them, runs outside every lock, and would rather slow down than let memory
/// grow: a bulk loader freeing old versions, say. Everyone else uses
/// [`call_rcu`], which never waits.
///
/// # Blocking
///
/// When this thread's shard holds [`Tunables::backlog_limit`] or more ready
/// callbacks after queueing `f`, waits until the worker has drained it below
/// [`Tunables::high_water`]: at least one grace period and the batch ahead
/// of it. Otherwise it returns at once, like [`call_rcu`].
///
/// Never call it holding a lock that a callback may take: the worker would
/// wait for the lock while the caller waits for the worker. The crates of
/// this workspace never call it.
///
/// # Panics
///
/// Inside a read-side section (the grace period the worker needs would
/// wait for the caller) and from inside an RCU callback (the worker would
/// wait for itself), whether or not it would have to wait, so that the
/// misuse shows at once rather than under load. `f` is dropped, not queued.
/// Also if the worker thread cannot be spawned on first use.
///
/// # Example
///
/// ```
/// for i in 0..1000u32 {
///     shrinker_rcu::call_rcu_throttled(move || drop(i));
/// }
/// shrinker_rcu::rcu_barrier();
/// ```
#[track_caller]
pub fn call_rcu_throttled<F: FnOnce() + Send + 'static>(f: F) {
    assert_may_throttle("call_rcu_throttled");
    let callbacks = &domain().callbacks;
    let (shard, over_limit) = callbacks.enqueue(QueuedCallback::from_fn(f), false);
    callbacks.throttle(shard, over_limit);
}

/// Run `f` after a grace period, batching it lazily (the kernel's `call_rcu()`
/// under `CONFIG_RCU_LAZY`).
///
/// For callbacks that only free memory and nobody waits for: the callback may
/// wait up to [`Tunables::lazy_flush_delay`] (10 s), so that an idle process
/// runs no grace periods for them. The [crate documentation](crate#callbacks)
/// lists what flushes them earlier; [`lazy_pending`] counts them for a
/// shrinker.
///
/// # Blocking
///
/// Never waits, like [`call_rcu`]: it takes this thread's shard lock for a
/// push, and may be called under any lock, inside a read-side section and
/// from a callback.
///
/// # Panics
///
/// If the worker thread cannot be spawned on first use. A panic inside `f`
/// is caught and counted, as for [`call_rcu`].
///
/// # Example
///
/// ```
/// shrinker_rcu::call_rcu_lazy(|| {});
/// assert!(shrinker_rcu::lazy_pending() >= 1 || shrinker_rcu::stats().pending == 0);
/// shrinker_rcu::rcu_barrier(); // flushes lazy callbacks too
/// ```
pub fn call_rcu_lazy<F: FnOnce() + Send + 'static>(f: F) {
    domain().callbacks.enqueue(QueuedCallback::from_fn(f), true);
}

/// Drop `value` after a grace period (the kernel's `kfree_rcu()`).
///
/// Queues the box's own pointer: no allocation per call beyond the amortised
/// growth of the shard's queue. Prompt, like [`call_rcu`].
///
/// # Blocking
///
/// Never waits, like [`call_rcu`]: may be called under any lock, inside a
/// read-side section and from a callback. [`defer_drop_throttled`] is the
/// form that waits past [`Tunables::backlog_limit`].
///
/// # Panics
///
/// If the worker thread cannot be spawned on first use. A `Drop` of `value`
/// that panics is caught on the worker and counted in
/// [`Stats::callback_panics`].
///
/// # Example
///
/// ```
/// shrinker_rcu::defer_drop(Box::new([0u8; 64]));
/// shrinker_rcu::rcu_barrier();
/// ```
pub fn defer_drop<T: Send + 'static>(value: Box<T>) {
    domain()
        .callbacks
        .enqueue(QueuedCallback::from_box(value), false);
}

/// [`defer_drop`] with backpressure: past [`Tunables::backlog_limit`] the
/// caller waits for the callback worker to drain its shard. See
/// [`call_rcu_throttled`] for who should use it.
///
/// # Blocking
///
/// As [`call_rcu_throttled`]: only when this thread's shard is at or over
/// [`Tunables::backlog_limit`], until the worker has drained it below
/// [`Tunables::high_water`]. Never call it holding a lock that a callback,
/// or the `Drop` of a callback value, may take.
///
/// # Panics
///
/// Inside a read-side section and from inside an RCU callback, whether or
/// not it would have to wait (`value` is then dropped at once, during the
/// unwinding); also if the worker thread cannot be spawned on first use.
///
/// # Example
///
/// ```
/// for _ in 0..1000 {
///     shrinker_rcu::defer_drop_throttled(Box::new([0u8; 64]));
/// }
/// shrinker_rcu::rcu_barrier();
/// ```
#[track_caller]
pub fn defer_drop_throttled<T: Send + 'static>(value: Box<T>) {
    assert_may_throttle("defer_drop_throttled");
    let callbacks = &domain().callbacks;
    let (shard, over_limit) = callbacks.enqueue(QueuedCallback::from_box(value), false);
    callbacks.throttle(shard, over_limit);
}

/// Panic naming `what` where a throttled call could deadlock by waiting.
#[track_caller]
fn assert_may_throttle(what: &str) {
    if crate::in_read_section() {
        panic!(
            "{what}() called inside an RCU read-side critical section: it may wait for the \
             callback worker, whose grace period waits for this reader, and would deadlock \
             (use the non-throttled form, which never waits)"
        );
    }
    if in_callback() {
        panic!(
            "{what}() called from inside an RCU callback: it may wait for the callback \
             worker, which is this thread, and would deadlock (use the non-throttled form, \
             which never waits)"
        );
    }
}

/// Wait until every callback queued before this call has run (`rcu_barrier()`).
///
/// Flushes lazy callbacks first. Returns at once if nothing is queued or in
/// flight. Needed before unloading anything a pending callback refers to.
///
/// # Blocking
///
/// For at least one grace period and the batch ahead of it, when anything is
/// outstanding. Never call it holding a lock that an outstanding callback
/// may take: the worker would wait for the lock, and the caller for the
/// worker.
///
/// # Panics
///
/// Inside a read-side section (the grace period would wait for the caller),
/// and from inside an RCU callback (the worker would wait for itself).
pub fn rcu_barrier() {
    crate::reader::assert_not_in_read_section("rcu_barrier");
    if in_callback() {
        panic!(
            "rcu_barrier() called from inside an RCU callback: the callback worker would \
             wait for itself and deadlock"
        );
    }
    domain().callbacks.barrier();
}

/// Whether the current thread is invoking RCU callbacks (the callback worker,
/// or a loom barrier running them inline).
///
/// Code that may be reached from a callback uses it to refuse the waiting
/// forms that would deadlock there: the worker cannot run the grace-period
/// callbacks it is itself waiting for. Lock-free; a thread-local read.
#[inline]
pub fn in_callback() -> bool {
    IN_CALLBACKS.with(Cell::get)
}

/// Move every lazy callback to the prompt queue now, without waiting for it to
/// run (the lazy-RCU shrinker's scan). The kernel does this under memory
/// pressure.
///
/// # Blocking
///
/// Never waits for a callback or a grace period; takes each shard's lock in
/// turn for a vector append.
pub fn flush_lazy() {
    domain().callbacks.flush_all_lazy();
}

/// Move up to `limit` lazy callbacks to the prompt queue, taking each
/// shard's lock only if it is free; returns how many were moved (the
/// lazy-RCU shrinker's scan). A shard whose lock is busy is skipped: a
/// shrinker must not block reclaim on a lock that may be held by a thread
/// waiting for memory (the kernel's `lazy_rcu_shrink_scan` takes
/// `rcu_nocb_try_lock` for the same reason). A shard is flushed whole, so
/// the count may pass `limit` by less than one shard's backlog.
///
/// # Blocking
///
/// Never: try-locks only.
pub fn try_flush_lazy(limit: usize) -> usize {
    domain().callbacks.try_flush_lazy(limit)
}

/// Lazy callbacks not yet flushed (the lazy-RCU shrinker's count: the sum of
/// the kernel's per-CPU `lazy_len`). Lock-free; may be momentarily stale.
pub fn lazy_pending() -> usize {
    let callbacks = &domain().callbacks;
    #[cfg(not(loom))]
    let Some(shards) = callbacks.shards.get() else {
        return 0;
    };
    #[cfg(loom)]
    let shards = callbacks.shards();
    // Relaxed: a count for reclaim heuristics.
    shards
        .iter()
        .map(|s| s.lazy_len.load(Ordering::Relaxed))
        .sum()
}

/// The process-wide tunables of the callback machinery.
pub fn tunables() -> &'static Tunables {
    &domain().callbacks.tunables
}

/// A snapshot of the counters of the RCU machinery.
///
/// # Blocking
///
/// Never waits for a grace period; takes each shard's lock and the
/// reader-registry mutex briefly, to count.
///
/// # Example
///
/// ```
/// let before = shrinker_rcu::stats().grace_periods;
/// shrinker_rcu::synchronize_rcu();
/// assert!(shrinker_rcu::stats().grace_periods > before);
/// ```
pub fn stats() -> Stats {
    let callbacks = &domain().callbacks;
    Stats {
        grace_periods: crate::grace::completed(),
        // Relaxed: statistics.
        callbacks_invoked: callbacks.invoked.load(Ordering::Relaxed),
        callback_panics: callbacks.panics.load(Ordering::Relaxed),
        backlog_overloads: callbacks.overload_episodes.load(Ordering::Relaxed),
        overloaded_enqueues: callbacks.overloaded_enqueues.load(Ordering::Relaxed),
        pending: callbacks.pending(),
        lazy_pending: lazy_pending(),
        readers: crate::reader::registered_readers(),
    }
}
