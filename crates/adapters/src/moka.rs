//! The [`moka`] crate's caches, shrinkable: [`register`] for
//! `moka::sync::Cache`, [`future::register`] for `moka::future::Cache`
//! (with the `tokio` feature).
//!
//! # How it shrinks, and why not by capacity
//!
//! moka 0.12 (0.12.16, the current release when this was written) has no
//! public way to change a built cache's capacity: upstream's
//! `set_max_capacity` exists only as a crate-private method of its
//! `Policy` (`pub(crate)` in `src/policy.rs`), not on `Cache`. So the
//! adapter does what the public API allows:
//!
//! 1. `count` is `entry_count()` (moka's own figure, brought up to date by
//!    its housekeeping and by every `scan`).
//! 2. `scan` takes the first `nr_to_scan` keys of `iter()` and `remove`s
//!    each (the count of removes that found their entry is what it
//!    reports: exact), then runs `run_pending_tasks()` so that the cache's
//!    sizes, and the next `count`, are exact.
//! 3. The cache's weight after the scan becomes the sticky cap
//!    ([`RefillGuard`]). moka cannot enforce it itself,
//!    so the adapter's [`MokaShrinker::insert`] does: after an insert
//!    that finds the cache over the cap it removes entries (again in
//!    `iter()` order) down to 1/32 below the cap, then runs the pending
//!    tasks (the margin makes that once per cap/32 inserts, not each).
//!
//! # How that differs from LRU order
//!
//! `iter()` walks moka's concurrent hash table bucket by bucket: the
//! order of the keys' hashes. The entries a scan removes are therefore a
//! sample that is *blind to recency and frequency*: a hot entry goes as
//! readily as a cold one, where moka's own eviction (TinyLFU admission in
//! front of an LRU) and every LRU would drop the coldest. The cost is
//! extra misses after a shrink, the same number of entries lost. Within
//! one cache the hash order is stable, so successive scans take the next
//! keys in the table, not the same ones twice. When recency matters more
//! than moka's other features, prefer `quick_cache` or `lru`.
//!
//! Bytes: with a weigher whose weights are bytes, say so with
//! [`Options::bytes_per_weight`] and the fall of `weighted_size()` is
//! reported as bytes.
//!
//! # Caveats
//!
//! * Inserts that bypass [`MokaShrinker::insert`] (straight through the
//!   `Deref`, `get_with`, `entry`) are not held to the sticky cap: moka
//!   evicts them only at its configured capacity.
//! * `entry_count` lags inserts until moka's housekeeping runs; the cap
//!   enforcement reads it, so it too may lag by that much.
//!
//! # Examples
//!
//! ```
//! use shrinker::{ShrinkRequest, ShrinkerRegistry};
//!
//! let registry = ShrinkerRegistry::builder().nodes(1).build()?;
//! let cache = shrinker_adapters::moka::register(
//!     &registry, "users", moka::sync::Cache::<u64, String>::new(10_000))?;
//! for i in 0..10_000 { cache.insert(i, i.to_string()); }
//! cache.run_pending_tasks();
//! // Priority 4: (10,000 >> 4) * 4 / 2 = 1,250 asked; 9 batches of 128 run.
//! assert_eq!(registry.shrink(&ShrinkRequest { priority: 4, ..Default::default() })?, 1_152);
//! assert_eq!(cache.entry_count(), 10_000 - 1_152);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::ops::Deref;

use moka::sync::Cache;
use shrinker::{BuildError, Count, Registered, Scan, Shrink, ShrinkControl, ShrinkerRegistry};

use crate::guard::RefillGuard;
use crate::options::Options;

/// A `moka::sync::Cache` with its shrinker callbacks and its refill guard.
/// Registered by [`register`]; derefs to the cache (use
/// [`insert`](Self::insert) to stay under the sticky cap).
pub struct MokaShrinker<K, V, S = std::collections::hash_map::RandomState> {
    cache: Cache<K, V, S>,
    guard: RefillGuard,
    bytes_per_weight: u64,
}

/// What [`register`] returns.
pub type RegisteredMoka<K, V, S = std::collections::hash_map::RandomState> =
    Registered<MokaShrinker<K, V, S>>;

/// Register `cache` in `registry` as a shrinker called `name`, with the
/// default [`Options`].
///
/// # Errors
///
/// As [`ShrinkerBuilder::build_in`](shrinker::ShrinkerBuilder::build_in).
pub fn register<K, V, S>(
    registry: &ShrinkerRegistry,
    name: &str,
    cache: Cache<K, V, S>,
) -> Result<RegisteredMoka<K, V, S>, BuildError>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    register_with(registry, Options::new(name), cache)
}

/// [`register`] with [`Options`].
///
/// # Errors
///
/// As [`register`].
pub fn register_with<K, V, S>(
    registry: &ShrinkerRegistry,
    options: Options,
    cache: Cache<K, V, S>,
) -> Result<RegisteredMoka<K, V, S>, BuildError>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    let configured = cache.policy().max_capacity().unwrap_or(u64::MAX);
    let state = MokaShrinker {
        guard: options.guard(configured),
        cache,
        bytes_per_weight: options.bytes_per_weight,
    };
    Ok(options
        .shrinker_builder()
        .build_in(registry, state)?
        .register())
}

impl<K, V, S> MokaShrinker<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    /// Insert, then hold the cache to the sticky cap (module docs, step 3).
    ///
    /// # Blocking
    ///
    /// While capped and over the cap: removes entries and runs moka's
    /// pending tasks.
    pub fn insert(&self, key: K, value: V) {
        self.cache.insert(key, value);
        self.maintain();
    }

    /// Apply a due growth step of the refill guard, and hold the cache to
    /// the cap; true if the cap grew.
    pub fn maintain(&self) -> bool {
        let grew = self.guard.poll(|_| ());
        if self.guard.is_capped() {
            let over = excess(self.cache.weighted_size(), self.guard.cap());
            if over > 0 {
                remove_some(&self.cache, entries_for_weight(&self.cache, over));
                self.cache.run_pending_tasks();
            }
        }
        grew
    }

    /// The refill guard (its cap, its configured capacity).
    #[must_use]
    pub fn refill_guard(&self) -> &RefillGuard {
        &self.guard
    }
}

/// The weight to remove from a cache weighing `weight` held to `cap`: none
/// while it fits; once over, down to 1/32 below the cap, so that the
/// removal and its `run_pending_tasks` run once per 1/32 of the cap of
/// inserts, not after every insert.
fn excess(weight: u64, cap: u64) -> u64 {
    if weight <= cap {
        0
    } else {
        weight - cap + cap / 32
    }
}

/// Entries worth `weight` at the cache's average entry weight, rounded up.
fn entries_for_weight<K, V, S>(cache: &Cache<K, V, S>, weight: u64) -> usize {
    let (n, w) = (cache.entry_count(), cache.weighted_size().max(1));
    let e = (u128::from(weight) * u128::from(n)).div_ceil(u128::from(w));
    usize::try_from(e).unwrap_or(usize::MAX).max(1)
}

/// Remove up to `n` entries in `iter()` order; how many were removed.
fn remove_some<K, V, S>(cache: &Cache<K, V, S>, n: usize) -> usize
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    let keys: Vec<_> = cache.iter().take(n).map(|(k, _)| k).collect();
    keys.iter()
        .filter(|k| cache.remove(k.as_ref()).is_some())
        .count()
}

impl<K, V, S> Deref for MokaShrinker<K, V, S> {
    type Target = Cache<K, V, S>;

    fn deref(&self) -> &Self::Target {
        &self.cache
    }
}

impl<K, V, S> Shrink for MokaShrinker<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    fn count(&self, _: &ShrinkControl) -> Count {
        match self.cache.entry_count() {
            0 => Count::Empty,
            n => Count::Objects(usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }

    fn scan(&self, sc: &mut ShrinkControl) -> Scan {
        let n = sc.nr_to_scan();
        let (removed, weight) = self.guard.shrink(|cap| {
            let w0 = self.cache.weighted_size();
            let removed = remove_some(&self.cache, n);
            self.cache.run_pending_tasks();
            let w1 = self.cache.weighted_size();
            (cap.min(w1), (removed, w0.saturating_sub(w1)))
        });
        report_bytes(sc, weight, self.bytes_per_weight);
        Scan::Freed(removed)
    }
}

fn report_bytes(sc: &mut ShrinkControl, weight: u64, bytes_per_weight: u64) {
    if bytes_per_weight > 0 {
        let bytes = weight.saturating_mul(bytes_per_weight);
        sc.report_freed_bytes(usize::try_from(bytes).unwrap_or(usize::MAX));
    }
}

impl<K, V, S> fmt::Debug for MokaShrinker<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MokaShrinker")
            .field("guard", &self.guard)
            .field("bytes_per_weight", &self.bytes_per_weight)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "tokio")]
pub mod future {
    //! The `moka::future::Cache` adapter: the same rule as the sync one
    //! (see the [parent module](super)), for async services.
    //!
    //! The shrinker callbacks are synchronous (the reclaimer calls them on
    //! its own thread): `scan` drives moka's `remove` and
    //! `run_pending_tasks` futures to completion on the calling thread with
    //! a small parking executor. moka's futures need no runtime, so this
    //! works from the reclaimer's thread and from `spawn_blocking`.
    //!
    //! # Blocking
    //!
    //! Do not call [`ShrinkerRegistry::shrink`] on a runtime worker
    //! thread (inside `async` code) while this cache is registered: the
    //! scan blocks that thread, and on a current-thread runtime a task
    //! holding moka's housekeeping lock across an `.await` could then never
    //! release it. Use `spawn_blocking`, or a
    //! [`Reclaimer`](shrinker::reclaim::Reclaimer) (its own thread).
    //!
    //! # Examples
    //!
    //! ```
    //! use shrinker::{ShrinkRequest, ShrinkerRegistry};
    //!
    //! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    //! let registry = ShrinkerRegistry::builder().nodes(1).build()?;
    //! let cache = shrinker_adapters::moka::future::register(
    //!     &registry, "users", moka::future::Cache::<u64, u64>::new(10_000))?;
    //! for i in 0..10_000 { cache.insert(i, i).await; }
    //! cache.run_pending_tasks().await;
    //! let reg = registry.clone();
    //! let freed = tokio::task::spawn_blocking(move || {
    //!     reg.shrink(&ShrinkRequest { priority: 4, ..Default::default() })
    //! }).await??;
    //! assert_eq!(freed, 1_152);
    //! assert_eq!(cache.entry_count(), 10_000 - 1_152);
    //! # Ok::<(), Box<dyn std::error::Error>>(()) })?;
    //! # Ok::<(), Box<dyn std::error::Error>>(())
    //! ```

    use std::fmt;
    use std::future::Future;
    use std::hash::{BuildHasher, Hash};
    use std::ops::Deref;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::thread::{self, Thread};

    use moka::future::Cache;
    use shrinker::{BuildError, Count, Registered, Scan, Shrink, ShrinkControl, ShrinkerRegistry};

    use super::report_bytes;
    use crate::guard::RefillGuard;
    use crate::options::Options;

    /// A `moka::future::Cache` with its shrinker callbacks and its refill
    /// guard. Registered by [`register`]; derefs to the cache (use
    /// [`insert`](Self::insert) to stay under the sticky cap).
    pub struct MokaFutureShrinker<K, V, S = std::collections::hash_map::RandomState> {
        cache: Cache<K, V, S>,
        guard: RefillGuard,
        bytes_per_weight: u64,
    }

    /// What [`register`] returns.
    pub type RegisteredMokaFuture<K, V, S = std::collections::hash_map::RandomState> =
        Registered<MokaFutureShrinker<K, V, S>>;

    /// Register `cache` in `registry` as a shrinker called `name`, with
    /// the default [`Options`].
    ///
    /// # Errors
    ///
    /// As [`ShrinkerBuilder::build_in`](shrinker::ShrinkerBuilder::build_in).
    pub fn register<K, V, S>(
        registry: &ShrinkerRegistry,
        name: &str,
        cache: Cache<K, V, S>,
    ) -> Result<RegisteredMokaFuture<K, V, S>, BuildError>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        S: BuildHasher + Clone + Send + Sync + 'static,
    {
        register_with(registry, Options::new(name), cache)
    }

    /// [`register`] with [`Options`].
    ///
    /// # Errors
    ///
    /// As [`register`].
    pub fn register_with<K, V, S>(
        registry: &ShrinkerRegistry,
        options: Options,
        cache: Cache<K, V, S>,
    ) -> Result<RegisteredMokaFuture<K, V, S>, BuildError>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        S: BuildHasher + Clone + Send + Sync + 'static,
    {
        let configured = cache.policy().max_capacity().unwrap_or(u64::MAX);
        let state = MokaFutureShrinker {
            guard: options.guard(configured),
            cache,
            bytes_per_weight: options.bytes_per_weight,
        };
        Ok(options
            .shrinker_builder()
            .build_in(registry, state)?
            .register())
    }

    impl<K, V, S> MokaFutureShrinker<K, V, S>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        S: BuildHasher + Clone + Send + Sync + 'static,
    {
        /// Insert, then hold the cache to the sticky cap.
        pub async fn insert(&self, key: K, value: V) {
            self.cache.insert(key, value).await;
            self.maintain().await;
        }

        /// Apply a due growth step of the refill guard, and hold the cache
        /// to the cap; true if the cap grew.
        pub async fn maintain(&self) -> bool {
            let grew = self.guard.poll(|_| ());
            if self.guard.is_capped() {
                let over = super::excess(self.cache.weighted_size(), self.guard.cap());
                if over > 0 {
                    let n = entries_for_weight(&self.cache, over);
                    remove_some(&self.cache, n).await;
                    self.cache.run_pending_tasks().await;
                }
            }
            grew
        }

        /// The refill guard (its cap, its configured capacity).
        #[must_use]
        pub fn refill_guard(&self) -> &RefillGuard {
            &self.guard
        }
    }

    fn entries_for_weight<K, V, S>(cache: &Cache<K, V, S>, weight: u64) -> usize {
        let (n, w) = (cache.entry_count(), cache.weighted_size().max(1));
        let e = (u128::from(weight) * u128::from(n)).div_ceil(u128::from(w));
        usize::try_from(e).unwrap_or(usize::MAX).max(1)
    }

    async fn remove_some<K, V, S>(cache: &Cache<K, V, S>, n: usize) -> usize
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        S: BuildHasher + Clone + Send + Sync + 'static,
    {
        let keys: Vec<_> = cache.iter().take(n).map(|(k, _)| k).collect();
        let mut removed = 0;
        for k in &keys {
            if cache.remove(k.as_ref()).await.is_some() {
                removed += 1;
            }
        }
        removed
    }

    impl<K, V, S> Deref for MokaFutureShrinker<K, V, S> {
        type Target = Cache<K, V, S>;

        fn deref(&self) -> &Self::Target {
            &self.cache
        }
    }

    impl<K, V, S> Shrink for MokaFutureShrinker<K, V, S>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        S: BuildHasher + Clone + Send + Sync + 'static,
    {
        fn count(&self, _: &ShrinkControl) -> Count {
            match self.cache.entry_count() {
                0 => Count::Empty,
                n => Count::Objects(usize::try_from(n).unwrap_or(usize::MAX)),
            }
        }

        fn scan(&self, sc: &mut ShrinkControl) -> Scan {
            let n = sc.nr_to_scan();
            let (removed, weight) = self.guard.shrink(|cap| {
                block_on(async {
                    let w0 = self.cache.weighted_size();
                    let removed = remove_some(&self.cache, n).await;
                    self.cache.run_pending_tasks().await;
                    let w1 = self.cache.weighted_size();
                    (cap.min(w1), (removed, w0.saturating_sub(w1)))
                })
            });
            report_bytes(sc, weight, self.bytes_per_weight);
            Scan::Freed(removed)
        }
    }

    impl<K, V, S> fmt::Debug for MokaFutureShrinker<K, V, S> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("MokaFutureShrinker")
                .field("guard", &self.guard)
                .field("bytes_per_weight", &self.bytes_per_weight)
                .finish_non_exhaustive()
        }
    }

    /// Wakes a parked thread.
    struct Unpark(Thread);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }

    /// Run `f` to completion on this thread, parking between polls.
    fn block_on<F: Future>(f: F) -> F::Output {
        let waker = Waker::from(Arc::new(Unpark(thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut f = pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            // A wake before this park leaves the token set: no lost wakeup.
            thread::park();
        }
    }
}
