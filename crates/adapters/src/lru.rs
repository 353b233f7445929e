//! The [`lru`] crate's `LruCache`, shrinkable: [`register`].
//!
//! # How it shrinks
//!
//! `count` is the cache's `len` (an O(1) read under its mutex). `scan`
//! pops `nr_to_scan` entries with `pop_lru` — the least recently used
//! first, the exact LRU order — holding the mutex for that one batch (at
//! most the shrinker's batch, 128 entries), and drops them after releasing
//! it. It then lowers the cache's capacity to what is left
//! (`resize`, which evicts nothing more since `len` already fits): the
//! refill guard's sticky cap ([`RefillGuard`]), grown
//! back on [`LruShrinker::lock`] once the pressure has passed.
//!
//! Objects, not bytes: `lru` knows no weights. Give a size per entry with
//! [`Options::object_bytes`] or a sizing function with
//! [`register_sized`], and reclaim counts bytes.
//!
//! # Examples
//!
//! ```
//! use shrinker::{ShrinkRequest, ShrinkerRegistry};
//! use std::num::NonZeroUsize;
//!
//! let registry = ShrinkerRegistry::builder().nodes(1).build()?;
//! let cache = shrinker_adapters::lru::register(
//!     &registry, "sessions", lru::LruCache::new(NonZeroUsize::new(10_000).unwrap()))?;
//! for i in 0..10_000u64 { cache.lock().put(i, [0u8; 64]); }
//! // Priority 4: (10,000 >> 4) * 4 / 2 = 1,250 asked; 9 batches of 128 run.
//! assert_eq!(registry.shrink(&ShrinkRequest { priority: 4, ..Default::default() })?, 1_152);
//! assert_eq!(cache.lock().len(), 10_000 - 1_152);
//! assert!(cache.lock().get(&0).is_none()); // the least recently used went first
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard};

use lru::{DefaultHasher, LruCache};
use shrinker::{BuildError, Count, Registered, Scan, Shrink, ShrinkControl, ShrinkerRegistry};

use crate::guard::RefillGuard;
use crate::options::Options;

type Sizer<K, V> = Box<dyn Fn(&K, &V) -> usize + Send + Sync>;

/// An `lru::LruCache` behind a mutex, with its shrinker callbacks and its
/// refill guard. Registered by [`register`]; use the cache through
/// [`lock`](Self::lock).
pub struct LruShrinker<K, V, S = DefaultHasher> {
    cache: Mutex<LruCache<K, V, S>>,
    guard: RefillGuard,
    sizer: Option<Sizer<K, V>>,
}

/// Register `cache` in `registry` as a shrinker called `name`, with the
/// default [`Options`].
///
/// # Errors
///
/// As [`ShrinkerBuilder::build_in`](shrinker::ShrinkerBuilder::build_in).
pub fn register<K, V, S>(
    registry: &ShrinkerRegistry,
    name: &str,
    cache: LruCache<K, V, S>,
) -> Result<Registered<LruShrinker<K, V, S>>, BuildError>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher + Send + 'static,
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
    cache: LruCache<K, V, S>,
) -> Result<Registered<LruShrinker<K, V, S>>, BuildError>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher + Send + 'static,
{
    build(registry, options, cache, None)
}

/// [`register_with`], reporting the bytes each evicted entry held as
/// `size(key, value)` says.
///
/// # Errors
///
/// As [`register`].
///
/// # Examples
///
/// ```
/// use shrinker::{ShrinkRequest, ShrinkerRegistry};
/// use shrinker_adapters::Options;
///
/// let registry = ShrinkerRegistry::builder().nodes(1).build()?;
/// let cache = shrinker_adapters::lru::register_sized(
///     &registry, Options::new("blobs"), lru::LruCache::unbounded(),
///     |_k: &u32, v: &Vec<u8>| v.capacity())?;
/// for i in 0..1_000 { cache.lock().put(i, vec![0; 100]); }
/// let freed = registry.shrink_accounted(&ShrinkRequest { priority: 0, ..Default::default() })?;
/// assert_eq!(freed.bytes, freed.objects * 100);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn register_sized<K, V, S>(
    registry: &ShrinkerRegistry,
    options: Options,
    cache: LruCache<K, V, S>,
    size: impl Fn(&K, &V) -> usize + Send + Sync + 'static,
) -> Result<Registered<LruShrinker<K, V, S>>, BuildError>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher + Send + 'static,
{
    build(registry, options, cache, Some(Box::new(size)))
}

fn build<K, V, S>(
    registry: &ShrinkerRegistry,
    options: Options,
    cache: LruCache<K, V, S>,
    sizer: Option<Sizer<K, V>>,
) -> Result<Registered<LruShrinker<K, V, S>>, BuildError>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher + Send + 'static,
{
    let configured = u64::try_from(cache.cap().get()).unwrap_or(u64::MAX);
    let state = LruShrinker {
        guard: options.guard(configured),
        cache: Mutex::new(cache),
        sizer,
    };
    Ok(options
        .shrinker_builder()
        .build_in(registry, state)?
        .register())
}

impl<K: Hash + Eq, V, S: BuildHasher> LruShrinker<K, V, S> {
    fn lock_raw(&self) -> MutexGuard<'_, LruCache<K, V, S>> {
        // A panic inside the user's critical section leaves an `LruCache`
        // that is still a valid cache: poisoning carries no information.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lock the cache for use. Applies a due growth step of the refill
    /// guard first (one relaxed load when the cache is not capped).
    ///
    /// # Blocking
    ///
    /// On the cache's mutex, which a shrink holds for one batch at a time.
    pub fn lock(&self) -> MutexGuard<'_, LruCache<K, V, S>> {
        self.maintain();
        self.lock_raw()
    }

    /// Apply a due growth step of the refill guard now; true if the
    /// capacity grew.
    pub fn maintain(&self) -> bool {
        self.guard
            .poll(|cap| self.lock_raw().resize(nonzero_cap(cap)))
    }

    /// The refill guard (its cap, its configured capacity).
    #[must_use]
    pub fn refill_guard(&self) -> &RefillGuard {
        &self.guard
    }
}

fn nonzero_cap(cap: u64) -> NonZeroUsize {
    NonZeroUsize::new(usize::try_from(cap).unwrap_or(usize::MAX)).unwrap_or(NonZeroUsize::MIN)
}

impl<K, V, S> Shrink for LruShrinker<K, V, S>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher + Send + 'static,
{
    fn count(&self, _: &ShrinkControl) -> Count {
        match self.lock_raw().len() {
            0 => Count::Empty,
            n => Count::Objects(n),
        }
    }

    fn scan(&self, sc: &mut ShrinkControl) -> Scan {
        let n = sc.nr_to_scan();
        // 1. Under the guard, then the cache's mutex (the one lock order:
        //    `maintain` takes them in the same order): pop the batch, lower
        //    the capacity to what is left.
        let evicted = self.guard.shrink(|cap| {
            let mut c = self.lock_raw();
            let k = n.min(c.len());
            let mut out = Vec::with_capacity(k);
            out.extend(std::iter::from_fn(|| c.pop_lru()).take(k));
            let left = u64::try_from(c.len()).unwrap_or(u64::MAX);
            let new_cap = cap.min(left).max(1);
            c.resize(nonzero_cap(new_cap));
            (new_cap, out)
        });
        // 2. Size and drop the entries outside both locks.
        let freed = evicted.len();
        if let Some(size) = &self.sizer {
            let bytes = evicted.iter().map(|(k, v)| size(k, v)).sum();
            sc.report_freed_bytes(bytes);
        }
        drop(evicted);
        Scan::Freed(freed)
    }
}

impl<K, V, S> fmt::Debug for LruShrinker<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LruShrinker")
            .field("guard", &self.guard)
            .field("sized", &self.sizer.is_some())
            .finish_non_exhaustive()
    }
}
