//! The [`foyer`](https://docs.rs/foyer) in-memory cache
//! ([`foyer_memory::Cache`], which `foyer::Cache` is), shrinkable:
//! [`register`].
//!
//! # How it shrinks
//!
//! Through `Cache::resize`, foyer's capacity-changing API, which evicts by
//! the cache's own policy (FIFO, S3-FIFO, LRU, LFU or Sieve, whichever it
//! was built with) down to the new capacity, shard by shard. `count` is
//! `entries()`; `scan` turns its `nr_to_scan` into weight at the cache's
//! average entry weight (`usage / entries`, rounded up), resizes to that
//! much below the current usage, and reports the fall of `entries()` (and
//! of `usage()`, as bytes with [`Options::bytes_per_weight`]). The lowered
//! capacity is the refill guard's sticky cap
//! ([`RefillGuard`]); access through the adapter's
//! `Deref` grows it back after the cool-down.
//!
//! foyer splits a capacity over its shards exactly (the remainder one unit
//! at a time), so a full cache drops exactly the weight asked for.
//!
//! # Caveats
//!
//! * `resize` spawns one OS thread per shard (8 by default) and joins
//!   them, on every call: with the default batch of 128 a deep shrink of a
//!   large cache spawns thousands of threads. Register foyer caches with a
//!   larger batch ([`Options::batch`], e.g. 4096) to amortise it.
//! * An entry still held by a `CacheEntry` handle leaves the cache's
//!   index (and its usage) at once but its memory only when the last
//!   handle is dropped.
//! * foyer 0.22's `Cache::capacity()` keeps reporting the capacity the
//!   cache was built with after a `resize`; the cap in force is
//!   [`FoyerShrinker::refill_guard`]'s.
//! * A `resize` that fails (foyer's eviction configuration rejects the
//!   capacity) ends the scan with [`Scan::Stop`]: the work is deferred.
//! * foyer 0.22 needs Rust 1.91 (the workspace's other crates, 1.85).
//!
//! # Examples
//!
//! ```
//! use shrinker::{ShrinkRequest, ShrinkerRegistry};
//!
//! let registry = ShrinkerRegistry::builder().nodes(1).build()?;
//! let cache = shrinker_adapters::foyer::register(
//!     &registry, "chunks", foyer_memory::Cache::<u64, u64>::builder(8_000).build())?;
//! for i in 0..20_000 { cache.insert(i, i); } // full: 8,000 stay
//! let freed = registry.shrink(&ShrinkRequest { priority: 4, ..Default::default() })?;
//! assert_eq!(freed, 896); // (8000 >> 4) * 4 / 2 = 1000 asked: 7 batches of 128
//! assert_eq!(cache.entries(), 8_000 - 896);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::ops::Deref;

use foyer_memory::{Cache, CacheProperties};
use shrinker::{BuildError, Count, Registered, Scan, Shrink, ShrinkControl, ShrinkerRegistry};

use crate::guard::RefillGuard;
use crate::options::Options;

/// A `foyer_memory::Cache` with its shrinker callbacks and its refill
/// guard. Registered by [`register`]; derefs to the cache.
pub struct FoyerShrinker<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    cache: Cache<K, V, S, CacheProperties>,
    guard: RefillGuard,
    bytes_per_weight: u64,
}

/// What [`register`] returns.
pub type RegisteredFoyer<K, V, S> = Registered<FoyerShrinker<K, V, S>>;

/// Register `cache` in `registry` as a shrinker called `name`, with the
/// default [`Options`].
///
/// # Errors
///
/// As [`ShrinkerBuilder::build_in`](shrinker::ShrinkerBuilder::build_in).
pub fn register<K, V, S>(
    registry: &ShrinkerRegistry,
    name: &str,
    cache: Cache<K, V, S, CacheProperties>,
) -> Result<RegisteredFoyer<K, V, S>, BuildError>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
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
    cache: Cache<K, V, S, CacheProperties>,
) -> Result<RegisteredFoyer<K, V, S>, BuildError>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    let configured = u64::try_from(cache.capacity()).unwrap_or(u64::MAX);
    let state = FoyerShrinker {
        guard: options.guard(configured),
        cache,
        bytes_per_weight: options.bytes_per_weight,
    };
    Ok(options
        .shrinker_builder()
        .build_in(registry, state)?
        .register())
}

fn to_usize(x: u64) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

impl<K, V, S> FoyerShrinker<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Apply a due growth step of the refill guard now; true if the
    /// capacity grew. Every `Deref` does it.
    pub fn maintain(&self) -> bool {
        // A failed resize leaves the cache at its lower capacity; the guard
        // has moved on, and the next shrink or step sets it again.
        self.guard.poll(|cap| {
            let _ = self.cache.resize(to_usize(cap));
        })
    }

    /// The refill guard (its cap, its configured capacity).
    #[must_use]
    pub fn refill_guard(&self) -> &RefillGuard {
        &self.guard
    }
}

impl<K, V, S> Deref for FoyerShrinker<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    type Target = Cache<K, V, S, CacheProperties>;

    /// The cache, after a due growth step of the refill guard (one relaxed
    /// load when not capped).
    #[inline]
    fn deref(&self) -> &Self::Target {
        self.maintain();
        &self.cache
    }
}

impl<K, V, S> Shrink for FoyerShrinker<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    fn count(&self, _: &ShrinkControl) -> Count {
        match self.cache.entries() {
            0 => Count::Empty,
            n => Count::Objects(n),
        }
    }

    fn scan(&self, sc: &mut ShrinkControl) -> Scan {
        let n = sc.nr_to_scan();
        let done = self.guard.shrink(|cap| {
            let (len0, w0) = (self.cache.entries(), self.cache.usage() as u64);
            if len0 == 0 {
                return (cap, Some((0, 0)));
            }
            let drop_w = (n as u128 * u128::from(w0)).div_ceil(len0 as u128);
            let drop_w = u64::try_from(drop_w).unwrap_or(u64::MAX);
            let new_cap = cap.min(w0.saturating_sub(drop_w)).max(1);
            if self.cache.resize(to_usize(new_cap)).is_err() {
                return (cap, None);
            }
            let (len1, w1) = (self.cache.entries(), self.cache.usage() as u64);
            (
                new_cap,
                Some((len0.saturating_sub(len1), w0.saturating_sub(w1))),
            )
        });
        let Some((objects, weight)) = done else {
            return Scan::Stop;
        };
        if objects > n {
            sc.set_nr_scanned(objects);
        }
        if self.bytes_per_weight > 0 {
            sc.report_freed_bytes(to_usize(weight.saturating_mul(self.bytes_per_weight)));
        }
        Scan::Freed(objects)
    }
}

impl<K, V, S> fmt::Debug for FoyerShrinker<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FoyerShrinker")
            .field("guard", &self.guard)
            .field("bytes_per_weight", &self.bytes_per_weight)
            .finish_non_exhaustive()
    }
}
