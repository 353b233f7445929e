//! The [`quick_cache`] crate's concurrent `sync::Cache`, shrinkable:
//! [`register`].
//!
//! # How it shrinks
//!
//! `quick_cache` keeps its eviction order (S3-FIFO with a ghost queue, per
//! shard) to itself, so the adapter shrinks through its one public lever,
//! `set_capacity`, which is weight-aware: `scan` turns the `nr_to_scan`
//! entries it is asked for into weight at the cache's average entry weight
//! (`weight / len`, rounded up), lowers the capacity by that much below the
//! current weight, and lets the cache evict by its own policy. The lowered
//! capacity stays (the refill guard's sticky cap, [`RefillGuard`])
//! and grows back on access through the adapter once the pressure has
//! passed.
//!
//! `count` is `len`. What `scan` reports is what the cache really dropped:
//! the fall of `len` (and of `weight`, as bytes when
//! [`Options::bytes_per_weight`] says what a unit is worth), measured
//! around `set_capacity`.
//!
//! # Caveats
//!
//! * `set_capacity` splits the capacity evenly over the shards, rounding up.
//!   A full cache (every shard at its share) drops between `n - (shards -
//!   1)` and `n` entries for `n` asked; a cache well below its capacity, whose
//!   shards are unevenly filled, may drop more than `n` (the fuller shards
//!   go down to the even share). The adapter reports the true figure
//!   ([`ShrinkControl::set_nr_scanned`] too, when above `n`).
//! * Inserts racing with a scan can hide some of its evictions in the
//!   measured fall of `len`: the report is then low, never high.
//! * Access through the registered handle (`Deref`) applies a due growth
//!   step first; calling the cache through another path (a clone of an
//!   `Arc` you kept) skips that, so the capacity comes back at the next
//!   access through the handle.
//!
//! # Examples
//!
//! ```
//! use shrinker::{ShrinkRequest, ShrinkerRegistry};
//!
//! let registry = ShrinkerRegistry::builder().nodes(1).build()?;
//! let cache = shrinker_adapters::quick_cache::register(
//!     &registry, "tiles", quick_cache::sync::Cache::<u64, u64>::new(10_000))?;
//! for i in 0..20_000 { cache.insert(i, i); } // full: about 10,000 stay
//! let before = cache.len();
//! let freed = registry.shrink(&ShrinkRequest { priority: 4, ..Default::default() })?;
//! assert_eq!(cache.len(), before - freed);
//! assert!(cache.capacity() < 10_000); // sticky until the pressure is over
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::ops::Deref;

use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::{DefaultHashBuilder, Lifecycle, UnitWeighter, Weighter};
use shrinker::{BuildError, Count, Registered, Scan, Shrink, ShrinkControl, ShrinkerRegistry};

use crate::guard::RefillGuard;
use crate::options::Options;

/// A `quick_cache::sync::Cache` with its shrinker callbacks and its refill
/// guard. Registered by [`register`]; derefs to the cache.
pub struct QuickCacheShrinker<
    K,
    V,
    We = UnitWeighter,
    B = DefaultHashBuilder,
    L = DefaultLifecycle<K, V>,
> {
    cache: Cache<K, V, We, B, L>,
    guard: RefillGuard,
    bytes_per_weight: u64,
}

/// What [`register`] returns: the registered shrinker, which derefs to the
/// adapter, which derefs to the cache. Dropping it unregisters the shrinker
/// and drops the cache.
pub type RegisteredQuickCache<
    K,
    V,
    We = UnitWeighter,
    B = DefaultHashBuilder,
    L = DefaultLifecycle<K, V>,
> = Registered<QuickCacheShrinker<K, V, We, B, L>>;

/// Register `cache` in `registry` as a shrinker called `name`, with the
/// default [`Options`].
///
/// # Errors
///
/// As [`ShrinkerBuilder::build_in`](shrinker::ShrinkerBuilder::build_in).
pub fn register<K, V, We, B, L>(
    registry: &ShrinkerRegistry,
    name: &str,
    cache: Cache<K, V, We, B, L>,
) -> Result<RegisteredQuickCache<K, V, We, B, L>, BuildError>
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    We: Weighter<K, V> + Clone + Send + Sync + 'static,
    B: BuildHasher + Clone + Send + Sync + 'static,
    L: Lifecycle<K, V> + Clone + Send + Sync + 'static,
{
    register_with(registry, Options::new(name), cache)
}

/// [`register`] with [`Options`].
///
/// # Errors
///
/// As [`register`].
pub fn register_with<K, V, We, B, L>(
    registry: &ShrinkerRegistry,
    options: Options,
    cache: Cache<K, V, We, B, L>,
) -> Result<RegisteredQuickCache<K, V, We, B, L>, BuildError>
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    We: Weighter<K, V> + Clone + Send + Sync + 'static,
    B: BuildHasher + Clone + Send + Sync + 'static,
    L: Lifecycle<K, V> + Clone + Send + Sync + 'static,
{
    let state = QuickCacheShrinker {
        guard: options.guard(cache.capacity()),
        cache,
        bytes_per_weight: options.bytes_per_weight,
    };
    Ok(options
        .shrinker_builder()
        .build_in(registry, state)?
        .register())
}

impl<K, V, We, B, L> QuickCacheShrinker<K, V, We, B, L>
where
    K: Eq + Hash,
    V: Clone,
    We: Weighter<K, V> + Clone,
    B: BuildHasher + Clone,
    L: Lifecycle<K, V> + Clone,
{
    /// Apply a due growth step of the refill guard now; true if the
    /// capacity grew. Every `Deref` does it.
    pub fn maintain(&self) -> bool {
        self.guard.poll(|cap| self.cache.set_capacity(cap))
    }

    /// The refill guard (its cap, its configured capacity).
    #[must_use]
    pub fn refill_guard(&self) -> &RefillGuard {
        &self.guard
    }
}

impl<K, V, We, B, L> Deref for QuickCacheShrinker<K, V, We, B, L>
where
    K: Eq + Hash,
    V: Clone,
    We: Weighter<K, V> + Clone,
    B: BuildHasher + Clone,
    L: Lifecycle<K, V> + Clone,
{
    type Target = Cache<K, V, We, B, L>;

    /// The cache, after a due growth step of the refill guard (one relaxed
    /// load when not capped).
    #[inline]
    fn deref(&self) -> &Self::Target {
        self.maintain();
        &self.cache
    }
}

impl<K, V, We, B, L> Shrink for QuickCacheShrinker<K, V, We, B, L>
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    We: Weighter<K, V> + Clone + Send + Sync + 'static,
    B: BuildHasher + Clone + Send + Sync + 'static,
    L: Lifecycle<K, V> + Clone + Send + Sync + 'static,
{
    fn count(&self, _: &ShrinkControl) -> Count {
        match self.cache.len() {
            0 => Count::Empty,
            n => Count::Objects(n),
        }
    }

    fn scan(&self, sc: &mut ShrinkControl) -> Scan {
        let n = sc.nr_to_scan();
        let (objects, weight) = self.guard.shrink(|cap| {
            let (len0, w0) = (self.cache.len(), self.cache.weight());
            if len0 == 0 {
                return (cap, (0, 0));
            }
            // The weight of `n` average entries, rounded up.
            let drop_w = (n as u128 * u128::from(w0)).div_ceil(len0 as u128);
            let drop_w = u64::try_from(drop_w).unwrap_or(u64::MAX);
            let new_cap = cap.min(w0.saturating_sub(drop_w)).max(1);
            self.cache.set_capacity(new_cap);
            let (len1, w1) = (self.cache.len(), self.cache.weight());
            (new_cap, (len0.saturating_sub(len1), w0.saturating_sub(w1)))
        });
        if objects > n {
            sc.set_nr_scanned(objects);
        }
        if self.bytes_per_weight > 0 {
            let bytes = weight.saturating_mul(self.bytes_per_weight);
            sc.report_freed_bytes(usize::try_from(bytes).unwrap_or(usize::MAX));
        }
        Scan::Freed(objects)
    }
}

impl<K, V, We, B, L> fmt::Debug for QuickCacheShrinker<K, V, We, B, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuickCacheShrinker")
            .field("guard", &self.guard)
            .field("bytes_per_weight", &self.bytes_per_weight)
            .finish_non_exhaustive()
    }
}
