//! Callbacks after a grace period: `call_rcu`, `call_rcu_lazy`, `defer_drop`,
//! `rcu_barrier`, and the worker that runs them.
//!
//! # Shape
//!
//! Callbacks are queued on *shards* (the kernel's per-CPU `rcu_data`), each a
//! mutex-protected pair of vectors on its own cache line; a thread always uses
//! the same shard, so the mutex is uncontended and a thread's callbacks stay
//! in FIFO order. A callback is a [`Deferred`]: a data word and a function
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

use std::cell::Cell;
use std::mem::{align_of, size_of, MaybeUninit};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64 as StdAtomicU64, AtomicUsize as StdAtomicUsize};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::domain::domain;
use crate::sync::{lock, Mutex, Ordering};

/// A type-erased callback, two words: `call(&mut data)` consumes `data`.
///
/// `data` holds the closure itself when it fits in a word (a closure that
/// captures one reference, `Arc` or `Box`: no allocation), and otherwise a
/// pointer to it in a `Box`. `defer_drop` stores the user's box pointer.
pub(crate) struct Deferred {
    data: MaybeUninit<*mut ()>,
    call: unsafe fn(*mut MaybeUninit<*mut ()>),
}

// SAFETY: a `Deferred` is only built from `Send` payloads (`from_fn` and
// `from_box` require it), and it is run once or leaked.
unsafe impl Send for Deferred {}

impl Deferred {
    fn from_fn<F: FnOnce() + Send + 'static>(f: F) -> Self {
        /// # Safety
        /// `p` holds an `F` written by `from_fn`, read once.
        unsafe fn call_inline<F: FnOnce()>(p: *mut MaybeUninit<*mut ()>) {
            // SAFETY: per this function's contract; the slot is large and
            // aligned enough (checked in `from_fn`).
            let f = unsafe { p.cast::<F>().read() };
            f()
        }
        /// # Safety
        /// `p` holds a pointer from `Box::<F>::into_raw`, used once.
        unsafe fn call_boxed<F: FnOnce()>(p: *mut MaybeUninit<*mut ()>) {
            // SAFETY: per this function's contract.
            let f = unsafe { Box::from_raw((*p).assume_init().cast::<F>()) };
            f()
        }
        let mut data = MaybeUninit::<*mut ()>::uninit();
        if size_of::<F>() <= size_of::<*mut ()>() && align_of::<F>() <= align_of::<*mut ()>() {
            // SAFETY: the slot has room and alignment for an `F` (checked
            // just above) and is uninitialised; `call_inline` reads it once.
            unsafe { data.as_mut_ptr().cast::<F>().write(f) };
            Deferred {
                data,
                call: call_inline::<F>,
            }
        } else {
            data.write(Box::into_raw(Box::new(f)).cast());
            Deferred {
                data,
                call: call_boxed::<F>,
            }
        }
    }

    fn from_box<T: Send + 'static>(b: Box<T>) -> Self {
        /// # Safety
        /// `p` holds a pointer from `Box::<T>::into_raw`, used once.
        unsafe fn drop_boxed<T>(p: *mut MaybeUninit<*mut ()>) {
            // SAFETY: per this function's contract.
            drop(unsafe { Box::from_raw((*p).assume_init().cast::<T>()) })
        }
        Deferred {
            data: MaybeUninit::new(Box::into_raw(b).cast()),
            call: drop_boxed::<T>,
        }
    }

    fn run(mut self) {
        // SAFETY: `call` and `data` were paired by a constructor above, and
        // `self` is consumed, so this runs once.
        unsafe { (self.call)(&mut self.data) }
    }
}

/// Per-shard queue; see the module doc.
struct Queue {
    ready: Vec<Deferred>,
    lazy: Vec<Deferred>,
    /// When the oldest callback on `lazy` was queued.
    lazy_since: Option<Instant>,
    /// Queued or taken by the worker and not yet invoked (ready + lazy +
    /// in flight).
    outstanding: usize,
    /// In an overload episode: `ready` reached `backlog_limit`, and has not
    /// yet been drained below `high_water` since (see "Backlog" in the
    /// module doc).
    overloaded: bool,
}

impl Queue {
    fn new() -> Self {
        Queue {
            ready: Vec::new(),
            lazy: Vec::new(),
            lazy_since: None,
            outstanding: 0,
            overloaded: false,
        }
    }

    /// Move the lazy list behind the ready list. True if anything moved.
    fn flush_lazy(&mut self, lazy_len: &StdAtomicUsize) -> bool {
        if self.lazy.is_empty() {
            return false;
        }
        self.ready.append(&mut self.lazy);
        self.lazy_since = None;
        // Relaxed: a statistic read by `lazy_pending`.
        lazy_len.store(0, Ordering::Relaxed);
        true
    }
}

struct Shard {
    queue: Mutex<Queue>,
    /// `queue.lazy.len()`, readable without the lock (a shrinker's count).
    lazy_len: StdAtomicUsize,
}

/// Knobs of the callback machinery. All take effect at once.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// let t = shrinker_rcu::tunables();
/// t.set_lazy_flush_delay(Duration::from_secs(10));
/// assert_eq!(t.lazy_flush_delay(), Duration::from_secs(10));
/// ```
pub struct Tunables {
    lazy_flush_delay_us: StdAtomicU64,
    lazy_flush_count: StdAtomicUsize,
    high_water: StdAtomicUsize,
    backlog_limit: StdAtomicUsize,
    batch_delay_us: StdAtomicU64,
}

impl Tunables {
    const fn new() -> Self {
        Tunables {
            lazy_flush_delay_us: StdAtomicU64::new(10_000_000),
            lazy_flush_count: StdAtomicUsize::new(10_000),
            high_water: StdAtomicUsize::new(10_000),
            backlog_limit: StdAtomicUsize::new(100_000),
            batch_delay_us: StdAtomicU64::new(1_000),
        }
    }

    /// How long a lazy callback may wait (kernel: `LAZY_FLUSH_JIFFIES`, 10 s).
    pub fn lazy_flush_delay(&self) -> Duration {
        Duration::from_micros(self.lazy_flush_delay_us.load(Ordering::Relaxed))
    }
    /// Set [`Self::lazy_flush_delay`].
    pub fn set_lazy_flush_delay(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.lazy_flush_delay_us.store(us, Ordering::Relaxed);
    }
    /// Lazy callbacks on one shard that force a flush (kernel: `qhimark`, 10,000).
    pub fn lazy_flush_count(&self) -> usize {
        self.lazy_flush_count.load(Ordering::Relaxed)
    }
    /// Set [`Self::lazy_flush_count`] (at least 1).
    pub fn set_lazy_flush_count(&self, n: usize) {
        self.lazy_flush_count.store(n.max(1), Ordering::Relaxed);
    }
    /// Ready callbacks on one shard at which an enqueue expedites: the worker
    /// stops batching and runs grace periods back to back, each taking every
    /// ready callback (kernel: `qhimark`, 10,000). Also where a throttled
    /// enqueuer's wait ends, and an overload episode with it.
    pub fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Relaxed)
    }
    /// Set [`Self::high_water`] (at least 1).
    pub fn set_high_water(&self, n: usize) {
        self.high_water.store(n.max(1), Ordering::Relaxed);
    }
    /// Ready callbacks on one shard at which the shard is overloaded
    /// (100,000). [`call_rcu`], [`call_rcu_lazy`] and [`defer_drop`] still
    /// never wait: the episode is counted in [`Stats::backlog_overloads`] and
    /// reported through `tracing`. [`call_rcu_throttled`] and
    /// [`defer_drop_throttled`] wait there for the worker to drain the shard
    /// below [`Self::high_water`]: the memory bound for producers that opt in.
    pub fn backlog_limit(&self) -> usize {
        self.backlog_limit.load(Ordering::Relaxed)
    }
    /// Set [`Self::backlog_limit`] (at least 1).
    pub fn set_backlog_limit(&self, n: usize) {
        self.backlog_limit.store(n.max(1), Ordering::Relaxed);
    }
    /// How long the worker lets prompt callbacks accumulate before starting a
    /// grace period for them (1 ms); skipped when a shard is at
    /// [`Self::high_water`] or a barrier waits. Bounds the membarrier rate to
    /// about 1/`batch_delay` below the high mark. A delay too long for the
    /// clock (`Duration::MAX`) makes prompt callbacks wait until their shard
    /// reaches the high mark or an [`rcu_barrier`] runs.
    pub fn batch_delay(&self) -> Duration {
        Duration::from_micros(self.batch_delay_us.load(Ordering::Relaxed))
    }
    /// Set [`Self::batch_delay`].
    pub fn set_batch_delay(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.batch_delay_us.store(us, Ordering::Relaxed);
    }
}

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

pub(crate) struct Callbacks {
    #[cfg(not(loom))]
    shards: std::sync::OnceLock<Box<[CachePadded<Shard>]>>,
    #[cfg(loom)]
    shards: Box<[CachePadded<Shard>]>,
    #[cfg(not(loom))]
    worker: std::sync::OnceLock<std::thread::Thread>,
    /// The worker is parked (or about to park) waiting for work.
    #[cfg(not(loom))]
    idle: std::sync::atomic::AtomicBool,
    /// Skip the batching delay for the next batch.
    #[cfg(not(loom))]
    urgent: std::sync::atomic::AtomicBool,
    /// Enqueuers waiting for the backlog to drain sleep here.
    #[cfg(not(loom))]
    progress: (std::sync::Mutex<()>, std::sync::Condvar),
    invoked: StdAtomicU64,
    panics: StdAtomicU64,
    overload_episodes: StdAtomicU64,
    overloaded_enqueues: StdAtomicU64,
    tunables: Tunables,
}

#[cfg(not(loom))]
thread_local! {
    /// This thread is invoking RCU callbacks (the worker, or a loom barrier).
    static IN_CALLBACKS: Cell<bool> = const { Cell::new(false) };
    /// This thread's shard, `usize::MAX` until chosen.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

// loom runs its threads as coroutines on one OS thread: std thread-locals
// would be shared between them.
#[cfg(loom)]
loom::thread_local! {
    static IN_CALLBACKS: Cell<bool> = Cell::new(false);
    static SHARD: Cell<usize> = Cell::new(usize::MAX);
}

static NEXT_SHARD: StdAtomicUsize = StdAtomicUsize::new(0);

impl Callbacks {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        Callbacks {
            shards: std::sync::OnceLock::new(),
            worker: std::sync::OnceLock::new(),
            idle: std::sync::atomic::AtomicBool::new(false),
            urgent: std::sync::atomic::AtomicBool::new(false),
            progress: (std::sync::Mutex::new(()), std::sync::Condvar::new()),
            invoked: StdAtomicU64::new(0),
            panics: StdAtomicU64::new(0),
            overload_episodes: StdAtomicU64::new(0),
            overloaded_enqueues: StdAtomicU64::new(0),
            tunables: Tunables::new(),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Callbacks {
            shards: new_shards(1),
            invoked: StdAtomicU64::new(0),
            panics: StdAtomicU64::new(0),
            overload_episodes: StdAtomicU64::new(0),
            overloaded_enqueues: StdAtomicU64::new(0),
            tunables: Tunables::new(),
        }
    }

    #[cfg(not(loom))]
    fn shards(&self) -> &[CachePadded<Shard>] {
        self.shards.get_or_init(|| {
            let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
            new_shards((2 * cpus).clamp(4, 64))
        })
    }

    #[cfg(loom)]
    fn shards(&self) -> &[CachePadded<Shard>] {
        &self.shards
    }

    fn my_shard(&self) -> &Shard {
        let shards = self.shards();
        let index = SHARD.with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                // Relaxed: any distribution is correct; this one spreads threads.
                i = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
                s.set(i);
            }
            i
        });
        &shards[index % shards.len()]
    }

    /// Queue `deferred` on this thread's shard. Never waits: past
    /// `high_water` it expedites the worker, past `backlog_limit` it also
    /// counts (and reports) the overload. Returns the shard and whether it
    /// is over `backlog_limit`, for [`Self::throttle`].
    fn enqueue(&'static self, deferred: Deferred, lazy: bool) -> (&'static Shard, bool) {
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
                q.lazy.push(deferred);
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
                q.ready.push(deferred);
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

    /// Invoke one callback, containing a panic.
    ///
    /// Everything user code can do here is contained: the callback itself
    /// (which includes dropping a `defer_drop`ped value), the `tracing`
    /// subscriber that reports its panic, and the drop of the panic payload,
    /// whose own `Drop` may panic (`panic_any(PanicsOnDrop)`): see
    /// [`drop_payload`]. Nothing a callback throws can end the worker.
    ///
    /// Not under loom: there a panic in a callback is most likely loom's
    /// own report (a causality violation, a model's assertion), and
    /// containing it would let the model pass; it propagates instead.
    fn invoke(&self, deferred: Deferred) {
        let result = catch_unwind(AssertUnwindSafe(|| deferred.run()));
        // Relaxed: statistics.
        self.invoked.fetch_add(1, Ordering::Relaxed);
        if let Err(payload) = result {
            #[cfg(loom)]
            std::panic::resume_unwind(payload);
            #[cfg(not(loom))]
            {
                // Relaxed: statistics.
                self.panics.fetch_add(1, Ordering::Relaxed);
                report_contained(|| {
                    let msg = panic_message(&*payload);
                    tracing::error!(panic = %msg, "an RCU callback panicked; the callback worker goes on");
                });
                drop_payload(payload);
            }
        }
    }

    fn invoke_batch(&self, batch: &mut Vec<Deferred>) {
        IN_CALLBACKS.with(|c| c.set(true));
        for deferred in batch.drain(..) {
            self.invoke(deferred);
        }
        IN_CALLBACKS.with(|c| c.set(false));
    }

    fn pending(&self) -> usize {
        self.shards()
            .iter()
            .map(|s| lock(&s.queue).outstanding)
            .sum()
    }
}

fn new_shards(n: usize) -> Box<[CachePadded<Shard>]> {
    (0..n)
        .map(|_| {
            CachePadded::new(Shard {
                queue: Mutex::new(Queue::new()),
                lazy_len: StdAtomicUsize::new(0),
            })
        })
        .collect()
}

/// Drop a caught panic payload. Its `Drop` is user code and may panic in
/// turn (`std::panic::panic_any(PanicsOnDrop)`); that panic is caught too,
/// and its payload dropped the same way, up to a few rounds: a payload chain
/// longer than that is leaked rather than dropped, a bounded leak on a path
/// only a hostile payload takes, instead of a dead worker.
/// Run `report` (a `tracing` event: the subscriber is user code), containing
/// a panic, so that no subscriber can break the machinery that reports.
pub(crate) fn report_contained(report: impl FnOnce()) {
    if let Err(subscriber_panic) = catch_unwind(AssertUnwindSafe(report)) {
        drop_payload(subscriber_panic);
    }
}

fn drop_payload(payload: Box<dyn std::any::Any + Send>) {
    let mut payload = payload;
    for _ in 0..4 {
        match catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            Ok(()) => return,
            Err(again) => payload = again,
        }
    }
    std::mem::forget(payload);
}

#[cfg_attr(loom, allow(dead_code))] // loom propagates callback panics
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

// ---------------------------------------------------------------------------
// The worker (std).

#[cfg(not(loom))]
impl Callbacks {
    fn worker(&'static self) -> &'static std::thread::Thread {
        self.worker.get_or_init(|| {
            std::thread::Builder::new()
                .name("rcu-callbacks".into())
                .spawn(move || self.worker_main())
                .expect("failed to spawn the RCU callback worker thread")
                .thread()
                .clone()
        })
    }

    fn wake_worker(&'static self) {
        let worker = self.worker();
        // Relaxed load, then AcqRel swap so only one enqueuer unparks. The
        // idle flag itself needs no stronger ordering: the worker sets it
        // before re-checking the shards under their locks, and we read it
        // after releasing our shard lock, so either it saw our callback or
        // we see the flag (the lock orders the two).
        if self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::AcqRel) {
            worker.unpark();
        }
    }

    /// Make the worker start a batch now: skip (or cut short) its batching
    /// delay. Unparks it unconditionally, so it also ends a delay sleep; a
    /// spare unpark token only makes a later sleep return early.
    fn kick_urgent(&'static self) {
        // Relaxed: a hint; the unpark carries the ordering.
        self.urgent.store(true, Ordering::Relaxed);
        self.idle.store(false, Ordering::Relaxed);
        self.worker().unpark();
    }

    /// The backpressure of the `*_throttled` calls: if `shard` was over
    /// `backlog_limit` when the caller queued on it, wait until the worker
    /// has drained its ready list below `high_water`. The caller has checked
    /// that it may wait ([`assert_may_throttle`]).
    fn throttle(&'static self, shard: &Shard, over_limit: bool) {
        if !over_limit {
            return;
        }
        let high_water = self.tunables.high_water();
        let mut guard = self.progress.0.lock().unwrap_or_else(|e| e.into_inner());
        while lock(&shard.queue).ready.len() >= high_water {
            self.kick_urgent();
            // A timeout, not only the worker's notification: the ready list
            // also shrinks when the worker *takes* it, which it does not
            // announce.
            guard = self
                .progress
                .1
                .wait_timeout(guard, Duration::from_millis(10))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Take every shard's ready callbacks (flushing due lazy lists first).
    /// Returns the earliest pending lazy deadline.
    fn gather(
        &self,
        batch: &mut Vec<Deferred>,
        taken: &mut [usize],
        flush_all_lazy: bool,
    ) -> Option<Instant> {
        let now = Instant::now();
        let delay = self.tunables.lazy_flush_delay();
        let mut next_deadline: Option<Instant> = None;
        for (shard, taken) in self.shards().iter().zip(taken.iter_mut()) {
            let mut q = lock(&shard.queue);
            if let Some(since) = q.lazy_since {
                // Checked: a deadline past what an `Instant` can hold is
                // never due on age (the setter saturates at `u64::MAX`
                // microseconds, which fits today; the worker must not die
                // if that changes).
                match since.checked_add(delay) {
                    Some(deadline) if flush_all_lazy || deadline <= now => {
                        q.flush_lazy(&shard.lazy_len);
                    }
                    Some(deadline) => {
                        next_deadline = Some(next_deadline.map_or(deadline, |d| d.min(deadline)));
                    }
                    None if flush_all_lazy => {
                        q.flush_lazy(&shard.lazy_len);
                    }
                    None => {}
                }
            }
            *taken += q.ready.len();
            batch.append(&mut q.ready);
        }
        next_deadline
    }

    fn worker_main(&'static self) {
        let domain = domain();
        let n = self.shards().len();
        let mut batch: Vec<Deferred> = Vec::new();
        let mut taken = vec![0usize; n];
        loop {
            // Step 1-2: find work.
            let deadline = self.gather(&mut batch, &mut taken, false);
            if batch.is_empty() {
                // Relaxed: see `wake_worker`; the re-check below is under
                // the shard locks.
                self.idle.store(true, Ordering::Relaxed);
                let deadline = self.gather(&mut batch, &mut taken, false).or(deadline);
                if batch.is_empty() {
                    match deadline {
                        Some(d) => {
                            std::thread::park_timeout(d.saturating_duration_since(Instant::now()))
                        }
                        None => std::thread::park(),
                    }
                    self.idle.store(false, Ordering::Relaxed);
                    continue;
                }
                self.idle.store(false, Ordering::Relaxed);
            }
            // Let more prompt callbacks join this grace period, unless urgent
            // (`kick_urgent` also cuts the sleep short).
            let delay = self.tunables.batch_delay();
            if !self.urgent.swap(false, Ordering::Relaxed) && !delay.is_zero() {
                std::thread::park_timeout(delay);
                self.gather(&mut batch, &mut taken, false);
            }
            // Step 3: a grace period that starts after the callbacks were taken.
            let cookie = domain.cookie();
            domain.synchronize_to(cookie);
            // Step 4.
            self.invoke_batch(&mut batch);
            // Step 5.
            let high_water = self.tunables.high_water();
            for (shard, taken) in self.shards().iter().zip(taken.iter_mut()) {
                if *taken > 0 {
                    let mut q = lock(&shard.queue);
                    q.outstanding -= *taken;
                    *taken = 0;
                    // The overload episode ends once a batch leaves the shard
                    // below the high mark.
                    if q.ready.len() < high_water {
                        q.overloaded = false;
                    }
                }
            }
            let _g = self.progress.0.lock().unwrap_or_else(|e| e.into_inner());
            self.progress.1.notify_all();
        }
    }

    fn barrier(&'static self) {
        let Some(shards) = self.shards.get() else {
            return; // nothing was ever queued
        };
        let state = std::sync::Arc::new((std::sync::Mutex::new(0usize), std::sync::Condvar::new()));
        let mut entrained = false;
        for shard in shards.iter() {
            let mut q = lock(&shard.queue);
            q.flush_lazy(&shard.lazy_len);
            if q.outstanding == 0 {
                continue;
            }
            *state.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            let st = state.clone();
            q.outstanding += 1;
            q.ready.push(Deferred::from_fn(move || {
                let mut left = st.0.lock().unwrap_or_else(|e| e.into_inner());
                *left -= 1;
                if *left == 0 {
                    st.1.notify_all();
                }
            }));
            entrained = true;
        }
        if !entrained {
            return;
        }
        self.kick_urgent();
        let mut left = state.0.lock().unwrap_or_else(|e| e.into_inner());
        while *left > 0 {
            left = state.1.wait(left).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn try_flush_lazy(&'static self, limit: usize) -> usize {
        let Some(shards) = self.shards.get() else {
            return 0;
        };
        let mut moved = 0usize;
        for shard in shards.iter() {
            if moved >= limit {
                break;
            }
            // Relaxed: a hint that spares empty shards the lock.
            if shard.lazy_len.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let Ok(mut q) = shard.queue.try_lock() else {
                continue;
            };
            let n = q.lazy.len();
            if q.flush_lazy(&shard.lazy_len) {
                moved += n;
            }
        }
        if moved > 0 {
            self.wake_worker();
        }
        moved
    }

    fn flush_all_lazy(&'static self) {
        let Some(shards) = self.shards.get() else {
            return;
        };
        let mut moved = false;
        for shard in shards.iter() {
            moved |= lock(&shard.queue).flush_lazy(&shard.lazy_len);
        }
        if moved {
            self.wake_worker();
        }
    }
}

// ---------------------------------------------------------------------------
// Under loom: no worker; `rcu_barrier` runs the callbacks inline.

#[cfg(loom)]
impl Callbacks {
    fn wake_worker(&'static self) {}

    fn kick_urgent(&'static self) {}

    fn throttle(&'static self, _shard: &Shard, _over_limit: bool) {}

    fn barrier(&'static self) {
        let domain = domain();
        let mut batch = Vec::new();
        loop {
            let mut taken = 0;
            for shard in self.shards().iter() {
                let mut q = lock(&shard.queue);
                q.flush_lazy(&shard.lazy_len);
                taken += q.ready.len();
                batch.append(&mut q.ready);
            }
            if batch.is_empty() {
                return;
            }
            let cookie = domain.cookie();
            domain.synchronize_to(cookie);
            self.invoke_batch(&mut batch);
            lock(&self.shards()[0].queue).outstanding -= taken;
        }
    }

    fn flush_all_lazy(&'static self) {
        for shard in self.shards().iter() {
            lock(&shard.queue).flush_lazy(&shard.lazy_len);
        }
    }

    fn try_flush_lazy(&'static self, limit: usize) -> usize {
        let mut moved = 0usize;
        for shard in self.shards().iter() {
            if moved >= limit {
                break;
            }
            if let Ok(mut q) = shard.queue.try_lock() {
                let n = q.lazy.len();
                if q.flush_lazy(&shard.lazy_len) {
                    moved += n;
                }
            }
        }
        moved
    }
}

// ---------------------------------------------------------------------------
// Public API.

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
    domain().callbacks.enqueue(Deferred::from_fn(f), false);
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
    let (shard, over_limit) = callbacks.enqueue(Deferred::from_fn(f), false);
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
    domain().callbacks.enqueue(Deferred::from_fn(f), true);
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
    domain().callbacks.enqueue(Deferred::from_box(value), false);
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
/// or the `Drop` of a deferred value, may take.
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
    let (shard, over_limit) = callbacks.enqueue(Deferred::from_box(value), false);
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn deferred_runs_inline_and_boxed_closures_once() {
        let hits = Arc::new(AtomicUsize::new(0));
        // One word: stored inline.
        let h = hits.clone();
        let inline = Deferred::from_fn(move || {
            h.fetch_add(1, Ordering::Relaxed);
        });
        // Four words: boxed.
        let (h, pad) = (hits.clone(), [7u64; 3]);
        let boxed = Deferred::from_fn(move || {
            h.fetch_add(pad.iter().sum::<u64>() as usize, Ordering::Relaxed);
        });
        // Zero-sized.
        let zst = Deferred::from_fn(|| {});
        inline.run();
        boxed.run();
        zst.run();
        assert_eq!(hits.load(Ordering::Relaxed), 1 + 21);
        // Every captured Arc was dropped exactly once.
        assert_eq!(Arc::strong_count(&hits), 1);
    }

    #[test]
    fn deferred_drops_boxes() {
        let token = Arc::new(());
        let d = Deferred::from_box(Box::new((token.clone(), [0u8; 100])));
        assert_eq!(Arc::strong_count(&token), 2);
        d.run();
        assert_eq!(Arc::strong_count(&token), 1);
    }
}
