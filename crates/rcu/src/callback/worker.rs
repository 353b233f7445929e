//! The callback worker: one thread that waits for work, takes every shard's
//! ready callbacks, waits for a grace period and invokes them (the numbered
//! steps in `callback/mod.rs`); `rcu_barrier`, the lazy flushes and the
//! throttle of the `*_throttled` calls. Under loom there is no worker: a
//! barrier runs the callbacks inline.

#[cfg(not(loom))]
use std::time::{Duration, Instant};

#[cfg(not(loom))]
use super::queue::QueuedCallback;
use super::queue::{Callbacks, Shard};
use crate::domain::domain;
use crate::sync::lock;
#[cfg(not(loom))]
use crate::sync::Ordering;

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

    pub(super) fn wake_worker(&'static self) {
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
    pub(super) fn kick_urgent(&'static self) {
        // Relaxed: a hint; the unpark carries the ordering.
        self.urgent.store(true, Ordering::Relaxed);
        self.idle.store(false, Ordering::Relaxed);
        self.worker().unpark();
    }

    /// The backpressure of the `*_throttled` calls: if `shard` was over
    /// `backlog_limit` when the caller queued on it, wait until the worker
    /// has drained its ready list below `high_water`. The caller has checked
    /// that it may wait ([`assert_may_throttle`]).
    pub(super) fn throttle(&'static self, shard: &Shard, over_limit: bool) {
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
        batch: &mut Vec<QueuedCallback>,
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
        let mut batch: Vec<QueuedCallback> = Vec::new();
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

    pub(super) fn barrier(&'static self) {
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
            q.ready.push(QueuedCallback::from_fn(move || {
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

    pub(super) fn try_flush_lazy(&'static self, limit: usize) -> usize {
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

    pub(super) fn flush_all_lazy(&'static self) {
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
    pub(super) fn wake_worker(&'static self) {}

    pub(super) fn kick_urgent(&'static self) {}

    pub(super) fn throttle(&'static self, _shard: &Shard, _over_limit: bool) {}

    pub(super) fn barrier(&'static self) {
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

    pub(super) fn flush_all_lazy(&'static self) {
        for shard in self.shards().iter() {
            lock(&shard.queue).flush_lazy(&shard.lazy_len);
        }
    }

    pub(super) fn try_flush_lazy(&'static self, limit: usize) -> usize {
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
