//! The callback queues: how a callback is stored, the per-thread shards it
//! is queued on, the knobs, and running a batch the worker has taken. The
//! state here is owned by the domain (`domain.rs`); nothing in this file
//! reaches the domain, a grace period or the worker. See the module essay in
//! `callback/mod.rs` for the shape.

use std::cell::Cell;
use std::mem::{align_of, size_of, MaybeUninit};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64 as StdAtomicU64, AtomicUsize as StdAtomicUsize};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

#[cfg(not(loom))]
use crate::contain::{drop_payload, panic_message, report_contained};
use crate::sync::{lock, Mutex, Ordering};

/// A type-erased callback, two words: `call(&mut data)` consumes `data`.
///
/// `data` holds the closure itself when it fits in a word (a closure that
/// captures one reference, `Arc` or `Box`: no allocation), and otherwise a
/// pointer to it in a `Box`. `defer_drop` stores the user's box pointer.
pub(super) struct QueuedCallback {
    data: MaybeUninit<*mut ()>,
    call: unsafe fn(*mut MaybeUninit<*mut ()>),
}

// SAFETY: a `QueuedCallback` is only built from `Send` payloads (`from_fn` and
// `from_box` require it), and it is run once or leaked.
unsafe impl Send for QueuedCallback {}

impl QueuedCallback {
    pub(super) fn from_fn<F: FnOnce() + Send + 'static>(f: F) -> Self {
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
            QueuedCallback {
                data,
                call: call_inline::<F>,
            }
        } else {
            data.write(Box::into_raw(Box::new(f)).cast());
            QueuedCallback {
                data,
                call: call_boxed::<F>,
            }
        }
    }

    pub(super) fn from_box<T: Send + 'static>(b: Box<T>) -> Self {
        /// # Safety
        /// `p` holds a pointer from `Box::<T>::into_raw`, used once.
        unsafe fn drop_boxed<T>(p: *mut MaybeUninit<*mut ()>) {
            // SAFETY: per this function's contract.
            drop(unsafe { Box::from_raw((*p).assume_init().cast::<T>()) })
        }
        QueuedCallback {
            data: MaybeUninit::new(Box::into_raw(b).cast()),
            call: drop_boxed::<T>,
        }
    }

    pub(super) fn run(mut self) {
        // SAFETY: `call` and `data` were paired by a constructor above, and
        // `self` is consumed, so this runs once.
        unsafe { (self.call)(&mut self.data) }
    }
}

/// Per-shard queue; see the module doc.
pub(super) struct Queue {
    pub(super) ready: Vec<QueuedCallback>,
    pub(super) lazy: Vec<QueuedCallback>,
    /// When the oldest callback on `lazy` was queued.
    pub(super) lazy_since: Option<Instant>,
    /// Queued or taken by the worker and not yet invoked (ready + lazy +
    /// in flight).
    pub(super) outstanding: usize,
    /// In an overload episode: `ready` reached `backlog_limit`, and has not
    /// yet been drained below `high_water` since (see "Backlog" in the
    /// module doc).
    pub(super) overloaded: bool,
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
    pub(super) fn flush_lazy(&mut self, lazy_len: &StdAtomicUsize) -> bool {
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

pub(super) struct Shard {
    pub(super) queue: Mutex<Queue>,
    /// `queue.lazy.len()`, readable without the lock (a shrinker's count).
    pub(super) lazy_len: StdAtomicUsize,
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
    /// (100,000). [`call_rcu`](crate::call_rcu), [`call_rcu_lazy`](crate::call_rcu_lazy) and [`defer_drop`](crate::defer_drop) still
    /// never wait: the episode is counted in [`Stats::backlog_overloads`](crate::Stats::backlog_overloads) and
    /// reported through `tracing`. [`call_rcu_throttled`](crate::call_rcu_throttled) and
    /// [`defer_drop_throttled`](crate::defer_drop_throttled) wait there for the worker to drain the shard
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
    /// reaches the high mark or an [`rcu_barrier`](crate::rcu_barrier) runs.
    pub fn batch_delay(&self) -> Duration {
        Duration::from_micros(self.batch_delay_us.load(Ordering::Relaxed))
    }
    /// Set [`Self::batch_delay`].
    pub fn set_batch_delay(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.batch_delay_us.store(us, Ordering::Relaxed);
    }
}

pub(crate) struct Callbacks {
    #[cfg(not(loom))]
    pub(super) shards: std::sync::OnceLock<Box<[CachePadded<Shard>]>>,
    #[cfg(loom)]
    pub(super) shards: Box<[CachePadded<Shard>]>,
    #[cfg(not(loom))]
    pub(super) worker: std::sync::OnceLock<std::thread::Thread>,
    /// The worker is parked (or about to park) waiting for work.
    #[cfg(not(loom))]
    pub(super) idle: std::sync::atomic::AtomicBool,
    /// Skip the batching delay for the next batch.
    #[cfg(not(loom))]
    pub(super) urgent: std::sync::atomic::AtomicBool,
    /// Enqueuers waiting for the backlog to drain sleep here.
    #[cfg(not(loom))]
    pub(super) progress: (std::sync::Mutex<()>, std::sync::Condvar),
    pub(super) invoked: StdAtomicU64,
    pub(super) panics: StdAtomicU64,
    pub(super) overload_episodes: StdAtomicU64,
    pub(super) overloaded_enqueues: StdAtomicU64,
    pub(super) tunables: Tunables,
}

#[cfg(not(loom))]
thread_local! {
    /// This thread is invoking RCU callbacks (the worker, or a loom barrier).
    pub(super) static IN_CALLBACKS: Cell<bool> = const { Cell::new(false) };
    /// This thread's shard, `usize::MAX` until chosen.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

// loom runs its threads as coroutines on one OS thread: std thread-locals
// would be shared between them.
#[cfg(loom)]
loom::thread_local! {
    pub(super) static IN_CALLBACKS: Cell<bool> = Cell::new(false);
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
    pub(super) fn shards(&self) -> &[CachePadded<Shard>] {
        self.shards.get_or_init(|| {
            let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
            new_shards((2 * cpus).clamp(4, 64))
        })
    }

    #[cfg(loom)]
    pub(super) fn shards(&self) -> &[CachePadded<Shard>] {
        &self.shards
    }

    pub(super) fn my_shard(&self) -> &Shard {
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
    fn invoke(&self, callback: QueuedCallback) {
        let result = catch_unwind(AssertUnwindSafe(|| callback.run()));
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

    pub(super) fn invoke_batch(&self, batch: &mut Vec<QueuedCallback>) {
        IN_CALLBACKS.with(|c| c.set(true));
        for callback in batch.drain(..) {
            self.invoke(callback);
        }
        IN_CALLBACKS.with(|c| c.set(false));
    }

    pub(super) fn pending(&self) -> usize {
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn queued_callback_runs_inline_and_boxed_closures_once() {
        let hits = Arc::new(AtomicUsize::new(0));
        // One word: stored inline.
        let h = hits.clone();
        let inline = QueuedCallback::from_fn(move || {
            h.fetch_add(1, Ordering::Relaxed);
        });
        // Four words: boxed.
        let (h, pad) = (hits.clone(), [7u64; 3]);
        let boxed = QueuedCallback::from_fn(move || {
            h.fetch_add(pad.iter().sum::<u64>() as usize, Ordering::Relaxed);
        });
        // Zero-sized.
        let zst = QueuedCallback::from_fn(|| {});
        inline.run();
        boxed.run();
        zst.run();
        assert_eq!(hits.load(Ordering::Relaxed), 1 + 21);
        // Every captured Arc was dropped exactly once.
        assert_eq!(Arc::strong_count(&hits), 1);
    }

    #[test]
    fn queued_callback_drops_boxes() {
        let token = Arc::new(());
        let d = QueuedCallback::from_box(Box::new((token.clone(), [0u8; 100])));
        assert_eq!(Arc::strong_count(&token), 2);
        d.run();
        assert_eq!(Arc::strong_count(&token), 1);
    }
}
