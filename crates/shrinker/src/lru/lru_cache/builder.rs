//! [`LruCacheBuilder`]: configuring and building an [`LruCache`].

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, RandomState};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock, RwLock, Weak};

use crate::{BuildError, GroupObserver, ListLru, ShrinkerBuilder, ShrinkerId, ShrinkerRegistry};

use super::cache::LruCache;
use super::store::*;

/// Configures an [`LruCache`]; made by [`LruCache::builder`].
///
/// # Examples
///
/// ```
/// use shrinker::{LruCache, ShrinkerRegistry};
/// let reg = ShrinkerRegistry::builder().nodes(2).build()?;
/// let cache = LruCache::<String, String>::builder("names")
///     .weigher(|k, v| k.len() + v.len())
///     .seeks(4) // costly to refill: reclaim it gently
///     .batch(64)
///     .shards(32)
///     .numa_aware(true)
///     .build_in(&reg)?;
/// assert_eq!(cache.name(), "names");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct LruCacheBuilder<K, V> {
    name: String,
    weigher: Option<Weigher<K, V>>,
    seeks: Option<u32>,
    batch: Option<usize>,
    shards: usize,
    max_weight: Option<usize>,
    numa_aware: bool,
    bytes_per_weight: Option<Option<usize>>,
}

impl<K, V> fmt::Debug for LruCacheBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LruCacheBuilder")
            .field("name", &self.name)
            .field("weigher", &self.weigher.is_some())
            .field("seeks", &self.seeks)
            .field("batch", &self.batch)
            .field("shards", &self.shards)
            .field("max_weight", &self.max_weight)
            .field("numa_aware", &self.numa_aware)
            .finish()
    }
}

impl<K, V> LruCacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Weigh each entry once, at insert, with `weigher(&key, &value)` (in
    /// bytes, pages, whatever unit you reclaim by); the default weighs
    /// every entry 1. [`LruCache::weight`] sums the weights.
    ///
    /// # Panics
    ///
    /// A panic in `weigher` propagates to the inserting caller, before the
    /// cache is changed.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, Vec<u8>>::builder("c")
    ///     .weigher(|_, v| v.len())
    ///     .build_in(&reg)?;
    /// cache.insert(GroupId::ROOT, 1, vec![0; 64])?;
    /// assert_eq!(cache.weight(), 64);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> usize + Send + Sync + 'static) -> Self {
        self.weigher = Some(Box::new(weigher));
        self
    }

    /// How many bytes one unit of weight stands for, when the reclaimer
    /// counts what the cache's scans free
    /// ([`ShrinkControl::report_freed_bytes`](crate::ShrinkControl::report_freed_bytes)).
    /// Default: 1 with a [`weigher`](Self::weigher) (weights are bytes),
    /// unknown without one (0 also means unknown; the reclaimer then relies
    /// on the usage its pressure source reads). A weigher in pages, say,
    /// sets 4096.
    pub fn bytes_per_weight(mut self, bytes: usize) -> Self {
        self.bytes_per_weight = Some(Some(bytes));
        self
    }

    /// The cost of recreating an entry (the shrinker's `seeks`, default 2):
    /// see [`ShrinkerBuilder::seeks`].
    ///
    /// # Examples
    ///
    /// ```
    /// let reg = shrinker::ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = shrinker::LruCache::<u8, u8>::builder("c").seeks(8).build_in(&reg)?;
    /// assert_eq!(reg.shrinkers()[0].seeks, 8);
    /// # drop(cache);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn seeks(mut self, seeks: u32) -> Self {
        self.seeks = Some(seeks);
        self
    }

    /// Entries per scan call (default 128): see [`ShrinkerBuilder::batch`].
    ///
    /// # Examples
    ///
    /// ```
    /// let reg = shrinker::ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = shrinker::LruCache::<u8, u8>::builder("c").batch(32).build_in(&reg)?;
    /// assert_eq!(reg.shrinkers()[0].batch, 32);
    /// # drop(cache);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = Some(batch);
        self
    }

    /// A soft capacity, enforced per insert on the inserting (node, group)
    /// only: an insert that takes the total weight over `max_weight` evicts
    /// entries of *its own* (node, group) list, as reclaim does (referenced
    /// ones get a second chance), never the entry it inserted (module doc,
    /// "Capacity"). Without it (the default), only reclaim evicts.
    ///
    /// **This is not a bound on the whole cache.** A group whose list holds
    /// only its new entry evicts nothing, and a group that has filled the
    /// cache keeps its entries while other groups insert, until memory
    /// pressure (the shrinker) or its own inserts evict them; concurrent
    /// inserts may overshoot for a moment.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").max_weight(3).build_in(&reg)?;
    /// for k in 0..5 {
    ///     cache.insert(GroupId::ROOT, k, k)?;
    /// }
    /// assert_eq!(cache.len(), 3);
    /// assert!(!cache.contains_key(&1) && cache.contains_key(&2));
    /// // Another group pays for its own inserts only: the root keeps its 3.
    /// let g = reg.create_group(GroupId::ROOT)?;
    /// cache.insert(g, 10, 10)?;
    /// assert_eq!((cache.len(), cache.group_len(GroupId::ROOT)), (4, 3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_weight(mut self, max_weight: usize) -> Self {
        self.max_weight = Some(max_weight);
        self
    }

    /// The number of map shards, rounded up to a power of two (at most
    /// 2^16; 0 means the default: 4 per available CPU, from 16 to 256).
    ///
    /// # Examples
    ///
    /// ```
    /// let reg = shrinker::ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = shrinker::LruCache::<u8, u8>::builder("c").shards(3).build_in(&reg)?;
    /// assert!(cache.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// Place entries per NUMA node and make the shrinker NUMA-aware
    /// (`SHRINKER_NUMA_AWARE`); default `false` (module doc, "Nodes").
    ///
    /// * `false`: every entry lives on node 0's lists, whatever node
    ///   [`insert_on`](crate::LruCache::insert_on) names (it still checks that the
    ///   node exists), and the registry calls the shrinker, with node 0,
    ///   for reclaim on any node: the right choice on a machine without
    ///   NUMA, or when an entry's memory is not tied to a node.
    /// * `true`: `insert_on` places on the node given, and reclaim on a
    ///   node evicts that node's entries only.
    ///   [`insert`](crate::LruCache::insert) places on node 0: insert with the
    ///   `_on` methods.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkRequest, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(2).build()?;
    /// let flat = LruCache::<u32, u32>::builder("flat").build_in(&reg)?;
    /// let numa = LruCache::<u32, u32>::builder("numa").numa_aware(true).build_in(&reg)?;
    /// flat.insert(GroupId::ROOT, 1, 1)?;
    /// numa.insert_on(0, GroupId::ROOT, 1, 1)?;
    /// // Node 1 is short of memory: the flat cache gives back its entry,
    /// // the NUMA-aware one keeps its node-0 entry.
    /// reg.shrink(&ShrinkRequest { node: 1, priority: 0, ..Default::default() })?;
    /// assert_eq!((flat.len(), numa.len()), (0, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn numa_aware(mut self, on: bool) -> Self {
        self.numa_aware = on;
        self
    }

    /// Build the cache and register its shrinker in the
    /// [global](crate::ShrinkerRegistry::global) registry.
    ///
    /// # Errors
    ///
    /// As [`build_in`](Self::build_in).
    ///
    /// # Examples
    ///
    /// ```
    /// let cache = shrinker::LruCache::<u32, u32>::builder("global-cache").build()?;
    /// assert!(cache.registry().same_as(shrinker::ShrinkerRegistry::global()));
    /// # Ok::<(), shrinker::BuildError>(())
    /// ```
    ///
    /// # Blocking
    ///
    /// As [`ShrinkerBuilder::build`](crate::ShrinkerBuilder::build): registers the cache's shrinker.
    /// Dropping the cache unregisters it, which waits for its running callbacks.
    #[cfg(not(loom))]
    pub fn build(self) -> Result<LruCache<K, V>, BuildError> {
        self.build_in(ShrinkerRegistry::global())
    }

    /// Build the cache in `registry`: its lists, its map, and its shrinker
    /// (group-aware; NUMA-aware if asked), registered and observing group
    /// removals.
    ///
    /// # Errors
    ///
    /// As [`ShrinkerBuilder::build_in`]: [`BuildError::EmptyName`],
    /// [`BuildError::TooManyShrinkers`], [`BuildError::Alloc`].
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{BuildError, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// assert_eq!(reg.len(), 1);
    /// drop(cache);
    /// assert_eq!(reg.len(), 0);
    /// assert_eq!(
    ///     LruCache::<u32, u32>::builder("").build_in(&reg).unwrap_err(),
    ///     BuildError::EmptyName
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Blocking
    ///
    /// As [`ShrinkerBuilder::build_in`](crate::ShrinkerBuilder::build_in): registers the cache's
    /// shrinker. Dropping the cache unregisters it, which waits for its running
    /// callbacks.
    pub fn build_in(self, registry: &ShrinkerRegistry) -> Result<LruCache<K, V>, BuildError> {
        // The chicken and the egg (module doc, "Lifetimes"): the hook needs
        // the id, which exists once the shrinker is built, which needs the
        // state, which holds the list. The cell is set before registration.
        let id_cell: Arc<OnceLock<ShrinkerId>> = Arc::default();
        let numa_aware = self.numa_aware;
        let weighed = self.weigher.is_some();
        let lru = {
            let (registry, id_cell) = (registry.clone(), Arc::clone(&id_cell));
            Arc::new(ListLru::with_notify(
                registry.nr_nodes(),
                move |node, group| {
                    let id = id_cell.get();
                    debug_assert!(id.is_some(), "LruCache: insert before registration");
                    let Some(&id) = id else { return };
                    // A NUMA-unaware cache's entries are all on node 0, and
                    // reclaim on any node must find its bit (module doc,
                    // "Nodes"). An error means the group is being removed:
                    // the items move to the parent, which this hook is
                    // called for then.
                    if numa_aware {
                        let _ = registry.set_shrinker_bit(group, node, id);
                    } else {
                        for n in 0..registry.nr_nodes() {
                            let _ = registry.set_shrinker_bit(group, n, id);
                        }
                    }
                },
            ))
        };
        let nr_shards = match self.shards {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .saturating_mul(4)
                .clamp(16, 256),
            n => n.min(1 << 16),
        }
        .next_power_of_two();
        let shards = (0..nr_shards)
            .map(|_| Shard {
                state: RwLock::new(ShardState {
                    map: HashMap::new(),
                    next_seq: 0,
                    weight: 0,
                }),
                stats: ShardStats::default(),
            })
            .collect();
        let inner = Arc::new(CacheCore {
            shards,
            hasher: RandomState::new(),
            lru: Arc::clone(&lru),
            weigher: self.weigher,
            bytes_per_weight: self
                .bytes_per_weight
                .unwrap_or(weighed.then_some(1))
                .filter(|&b| b > 0),
            limit: self.max_weight.map(|max| Limit {
                max,
                total: AtomicUsize::new(0),
            }),
            numa_aware,
        });
        let mut b = ShrinkerBuilder::new(self.name)
            .group_aware(true)
            .numa_aware(numa_aware);
        if let Some(seeks) = self.seeks {
            b = b.seeks(seeks);
        }
        if let Some(batch) = self.batch {
            b = b.batch(batch);
        }
        let shrinker = b.build_in(registry, Reclaim(Arc::clone(&inner)))?;
        let fresh = id_cell.set(shrinker.id()).is_ok();
        debug_assert!(fresh, "the id cell is set once");
        // Observe before anything can be inserted (module doc, "Memory
        // groups": a passed group check precedes the observer call).
        let observer: Weak<dyn GroupObserver> = Arc::downgrade(&lru) as _;
        registry.observe_groups(observer);
        Ok(LruCache {
            shrinker: shrinker.register(),
            inner,
        })
    }
}

impl<K, V> LruCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// A builder for a cache whose shrinker is called `name`.
    ///
    /// # Examples
    ///
    /// ```
    /// let reg = shrinker::ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = shrinker::LruCache::<u8, u8>::builder("tiny").build_in(&reg)?;
    /// assert!(cache.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder(name: impl Into<String>) -> LruCacheBuilder<K, V> {
        LruCacheBuilder {
            name: name.into(),
            weigher: None,
            seeks: None,
            batch: None,
            shards: 0,
            max_weight: None,
            numa_aware: false,
            bytes_per_weight: None,
        }
    }
}
