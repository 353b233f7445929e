//! [`Options`]: what every adapter is registered with, beyond the cache.

use std::fmt;
use std::sync::Arc;

use shrinker::reclaim::{LevelWatch, Reclaimer};
use shrinker::ShrinkerBuilder;

use crate::clock::{Clock, SystemClock};
use crate::guard::{RefillGuard, RefillPolicy};

/// How an adapter registers its cache: the shrinker's name and cost, what
/// an object or a unit of weight is worth in bytes, and the refill guard.
///
/// The one-line `register(registry, name, cache)` of each adapter uses
/// `Options::new(name)`; `register_with` takes these.
///
/// # Examples
///
/// ```
/// use shrinker_adapters::{ManualClock, Options, RefillPolicy};
/// use shrinker::reclaim::LevelWatch;
/// use std::sync::Arc;
///
/// let opts = Options::new("thumbnails")
///     .bytes_per_weight(1)              // the weigher returns bytes
///     .seeks(4)                         // costly to recreate: gentler reclaim
///     .level_watch(LevelWatch::new())   // usually `reclaimer.level_watch()`
///     .refill(RefillPolicy::default())
///     .clock(Arc::new(ManualClock::new()));
/// # let _ = opts;
/// ```
#[derive(Clone)]
#[must_use]
pub struct Options {
    pub(crate) name: String,
    pub(crate) seeks: u32,
    pub(crate) batch: usize,
    pub(crate) object_bytes: usize,
    pub(crate) bytes_per_weight: u64,
    pub(crate) policy: RefillPolicy,
    pub(crate) watch: Option<LevelWatch>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Options {
    /// A shrinker called `name`, 2 seeks, sizes unknown, the default
    /// [`RefillPolicy`], no level watch (the cap comes back by time), the
    /// system clock.
    pub fn new(name: impl Into<String>) -> Self {
        Options {
            name: name.into(),
            seeks: 2,
            batch: 0,
            object_bytes: 0,
            bytes_per_weight: 0,
            policy: RefillPolicy::default(),
            watch: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// The cost of recreating an entry ([`ShrinkerBuilder::seeks`]).
    pub fn seeks(mut self, seeks: u32) -> Self {
        self.seeks = seeks;
        self
    }

    /// Entries per scan call ([`ShrinkerBuilder::batch`]; default 128).
    /// Larger batches suit caches whose shrink has a fixed cost per call
    /// (foyer's `resize` spawns a thread per shard).
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// Every entry is worth this many bytes
    /// ([`ShrinkerBuilder::object_bytes`]): for caches without weights
    /// whose entries are alike.
    pub fn object_bytes(mut self, bytes: usize) -> Self {
        self.object_bytes = bytes;
        self
    }

    /// One unit of the cache's weight is worth this many bytes (1 when the
    /// weigher returns bytes): the adapter then reports the weight it
    /// freed as bytes ([`ShrinkControl::report_freed_bytes`](shrinker::ShrinkControl::report_freed_bytes)).
    /// 0 (the default): weights are not bytes.
    pub fn bytes_per_weight(mut self, bytes: u64) -> Self {
        self.bytes_per_weight = bytes;
        self
    }

    /// How a cut capacity comes back ([`RefillPolicy`]).
    pub fn refill(mut self, policy: RefillPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Hold the cut capacity while this watch's level is not None.
    pub fn level_watch(mut self, watch: LevelWatch) -> Self {
        self.watch = Some(watch);
        self
    }

    /// Hold the cut capacity while `reclaimer` sees pressure
    /// ([`Reclaimer::level_watch`]).
    pub fn reclaimer(self, reclaimer: &Reclaimer) -> Self {
        self.level_watch(reclaimer.level_watch())
    }

    /// Read time from `clock` (tests: a [`ManualClock`](crate::ManualClock)).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    #[allow(dead_code)] // Unused when no adapter feature is on.
    pub(crate) fn shrinker_builder(&self) -> ShrinkerBuilder {
        ShrinkerBuilder::new(self.name.clone())
            .seeks(self.seeks)
            .batch(self.batch)
            .object_bytes(self.object_bytes)
    }

    #[allow(dead_code)] // Unused when no adapter feature is on.
    pub(crate) fn guard(&self, configured: u64) -> RefillGuard {
        RefillGuard::new(
            configured,
            self.policy,
            self.watch.clone(),
            Arc::clone(&self.clock),
        )
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("name", &self.name)
            .field("seeks", &self.seeks)
            .field("batch", &self.batch)
            .field("object_bytes", &self.object_bytes)
            .field("bytes_per_weight", &self.bytes_per_weight)
            .field("policy", &self.policy)
            .field("watch", &self.watch.is_some())
            .finish_non_exhaustive()
    }
}
