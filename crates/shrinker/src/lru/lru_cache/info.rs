//! Reclaim by hand and introspection of an [`LruCache`](crate::LruCache): [`CacheStats`],
//! sizes, the shrinker's identity.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{GroupId, ShrinkerId, ShrinkerRegistry, ShrinkerStats};

use super::cache::LruCache;
use super::error::CacheError;
use super::store::*;

/// Counters of an [`LruCache`](crate::LruCache), summed over its shards.
///
/// # Examples
///
/// ```
/// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
/// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
/// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
/// cache.insert(GroupId::ROOT, 1, 10)?;
/// cache.get(&1);
/// cache.get(&2);
/// let s = cache.stats();
/// assert_eq!((s.inserts, s.hits, s.misses), (1, 1, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups (`get`, and the lookup of `get_or_insert_with`) that found
    /// an entry.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// Successful inserts (replacements included).
    pub inserts: u64,
    /// Inserts that replaced an entry.
    pub replaced: u64,
    /// Entries taken out by [`LruCache::remove`](crate::LruCache::remove).
    pub removed: u64,
    /// Entries evicted by reclaim (the shrinker, [`LruCache::evict`](crate::LruCache::evict) or the
    /// capacity).
    pub evicted: u64,
}

impl<K, V> LruCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Walk up to `nr` items from the head of (`node`, `group`) by hand, as
    /// the shrinker's scan does, and return how many entries were evicted:
    /// referenced entries are not evicted but have their bit cleared and go
    /// to the tail, and each costs one of the `nr` (module doc, "Recency").
    /// A removed group has no entries (they are its parent's). On a
    /// [NUMA-unaware](crate::LruCacheBuilder::numa_aware) cache, every valid node
    /// means node 0's lists.
    ///
    /// # Blocking
    ///
    /// Holds the list's lock while walking `nr` items, then each shard lock
    /// involved (exclusively), in turn; drops the values with no lock held.
    ///
    /// # Errors
    ///
    /// [`CacheError::InvalidNode`].
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// for k in 0..5 {
    ///     cache.insert(GroupId::ROOT, k, k)?;
    /// }
    /// assert_eq!(cache.evict(0, GroupId::ROOT, 2)?, 2);
    /// assert!(!cache.contains_key(&0) && !cache.contains_key(&1) && cache.contains_key(&2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn evict(&self, node: usize, group: GroupId, nr: usize) -> Result<usize, CacheError> {
        self.inner.check_node(node)?;
        Ok(self.inner.evict(self.inner.home(node), group, nr).1)
    }

    /// Entries in the cache. Locks each shard in turn, for reading: a
    /// snapshot.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// cache.insert(GroupId::ROOT, 1, 1)?;
    /// cache.insert(GroupId::ROOT, 1, 2)?;
    /// assert_eq!(cache.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| read(&s.state).map.len())
            .sum()
    }

    /// Whether the cache has no entry.
    ///
    /// # Examples
    ///
    /// ```
    /// let reg = shrinker::ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = shrinker::LruCache::<u8, u8>::builder("c").build_in(&reg)?;
    /// assert!(cache.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sum of the entries' weights (see
    /// [`LruCacheBuilder::weigher`](crate::LruCacheBuilder::weigher)). Locks each shard in turn, for
    /// reading: a snapshot.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, String>::builder("c")
    ///     .weigher(|_, v| v.len())
    ///     .build_in(&reg)?;
    /// cache.insert(GroupId::ROOT, 1, "four".into())?;
    /// cache.insert(GroupId::ROOT, 2, "sixsix".into())?;
    /// assert_eq!(cache.weight(), 10);
    /// cache.insert(GroupId::ROOT, 2, "".into())?;
    /// assert_eq!(cache.weight(), 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn weight(&self) -> usize {
        self.inner
            .shards
            .iter()
            .fold(0, |w, s| w.wrapping_add(read(&s.state).weight))
    }

    /// Entries on `group`'s lists, on every node (the shrinker's `count`
    /// summed over nodes): O(nodes), no lock. 0 for a removed group (its
    /// entries are its parent's). Under concurrency, an entry being removed
    /// or replaced may still be counted for a moment.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(2).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").numa_aware(true).build_in(&reg)?;
    /// let g = reg.create_group(GroupId::ROOT)?;
    /// cache.insert_on(0, g, 1, 1)?;
    /// cache.insert_on(1, g, 2, 2)?;
    /// cache.insert(GroupId::ROOT, 3, 3)?;
    /// assert_eq!((cache.group_len(g), cache.group_len(GroupId::ROOT)), (2, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn group_len(&self, group: GroupId) -> usize {
        let lru = &self.inner.lru;
        (0..lru.nr_nodes()).map(|node| lru.count(node, group)).sum()
    }

    /// Counters summed over the shards: Relaxed loads, no lock (a snapshot
    /// that may be torn across counters under concurrency).
    ///
    /// # Examples
    ///
    /// See [`CacheStats`].
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        // Relaxed: see `ShardStats`.
        let ld = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut t = CacheStats::default();
        for s in self.inner.shards.iter() {
            let s = &s.stats;
            t.hits += ld(&s.hits);
            t.misses += ld(&s.misses);
            t.inserts += ld(&s.inserts);
            t.replaced += ld(&s.replaced);
            t.removed += ld(&s.removed);
            t.evicted += ld(&s.evicted);
        }
        t
    }

    /// The cache's shrinker's statistics (calls, scanned, freed, deferred
    /// work, panics).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkRequest, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// cache.insert(GroupId::ROOT, 1, 1)?;
    /// reg.shrink(&ShrinkRequest { priority: 0, ..Default::default() })?;
    /// assert_eq!(cache.shrinker_stats().freed, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn shrinker_stats(&self) -> ShrinkerStats {
        self.shrinker.stats()
    }

    /// The id of the cache's shrinker (for
    /// [`ShrinkerRegistry::count`](crate::ShrinkerRegistry::count), [`ShrinkerRegistry::scan`](crate::ShrinkerRegistry::scan) and
    /// listings).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// assert!(reg.shrinkers().iter().any(|s| s.id == cache.shrinker_id()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn shrinker_id(&self) -> ShrinkerId {
        self.shrinker.id()
    }

    /// The shrinker's name, given to [`LruCache::builder`](crate::LruCache::builder).
    ///
    /// # Examples
    ///
    /// ```
    /// let reg = shrinker::ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = shrinker::LruCache::<u8, u8>::builder("named").build_in(&reg)?;
    /// assert_eq!(cache.name(), "named");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn name(&self) -> &str {
        self.shrinker.name()
    }

    /// The registry the cache's shrinker is registered in.
    ///
    /// # Examples
    ///
    /// ```
    /// let reg = shrinker::ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = shrinker::LruCache::<u8, u8>::builder("c").build_in(&reg)?;
    /// assert!(cache.registry().same_as(&reg));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn registry(&self) -> &ShrinkerRegistry {
        self.shrinker.registry()
    }
}
