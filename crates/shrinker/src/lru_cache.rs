//! [`LruCache<K, V>`]: a ready-made shrinkable key → value cache, the
//! kernel's dentry/inode-cache pattern (`d_lru_add` and `prune_dcache_sb`
//! behind `super_cache_count` / `super_cache_scan`) in a few lines of user
//! code.
//!
//! A cache that gives memory back under pressure needs three things this
//! crate provides separately: LRU lists per (node, memory group)
//! ([`ListLru`]), a group- and NUMA-aware shrinker whose `count` reads and
//! whose `scan` walks those lists ([`ShrinkerBuilder`]), and the seams
//! between them and the registry (a list's empty → non-empty transition
//! sets the shrinker's bit; removing a group moves its lists into the
//! parent). `LruCache` wires them together behind a sharded concurrent map:
//!
//! ```
//! use shrinker::{GroupId, LruCache, ShrinkRequest, ShrinkerRegistry};
//! let registry = ShrinkerRegistry::builder().nodes(1).build()?;
//! let tenant = registry.create_group(GroupId::ROOT)?;
//! let cache = LruCache::<u64, Vec<u8>>::builder("blobs")
//!     .weigher(|_, v| v.len())
//!     .build_in(&registry)?;
//! for k in 0..1000 {
//!     cache.insert(tenant, k, vec![0; 100])?;
//! }
//! // The tenant is short of memory: reclaim its least recently used entries.
//! let freed = registry.shrink(&ShrinkRequest { group: tenant, priority: 0, ..Default::default() })?;
//! assert_eq!(freed, 1000);
//! assert!(cache.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! ```text
//!  LruCache ─┬─ Registered<Reclaim> ─ ─ ─▶ Reclaim(Arc<Inner>)   count/scan, called by the registry
//!            └─ Arc<Inner> ─┬─ shards: [Mutex<HashMap<K, Entry>>; 2^k ≥ 16]   (128-byte aligned)
//!                           │     Entry { lru: LruKey, seq, weight, value: Arc<V> }
//!                           └─ Arc<ListLru<Item>>    Item { key: K, seq, weight }
//!                                 ▲  one list per (node, group); the registry
//!                                 └─ holds it as a Weak<dyn GroupObserver>
//! ```
//!
//! The map owns the value; the list owns a clone of the key and the entry's
//! *sequence number*, all that the reclaim walk needs (and the weight, for
//! the capacity's walk, below). `seq` comes from the
//! shard's counter under the shard lock, so (key, seq) names one insertion
//! for the life of the cache: an item whose entry has since been replaced
//! or removed never matches the entry that now has its key.
//!
//! # Lock order
//!
//! shard lock → list lock (→ the registry's groups mutex, in the notify
//! hook, on the first bit ever set in a (group, node)).
//!
//! Only [`insert`](LruCache::insert) nests the two: it must call
//! [`ListLru::add`] under the shard lock (see "Why insert nests" below).
//! [`get`](LruCache::get) and [`remove`](LruCache::remove) copy the entry's
//! [`LruKey`] under the shard lock, drop it, then call
//! [`ListLru::touch`] / [`ListLru::remove`]; a key gone stale meanwhile
//! names nothing, so that is exact. The reclaim walk holds a list lock, and
//! its isolate callback takes no lock and calls nothing: it only answers
//! [`Isolate::Removed`]. So the ABBA deadlock of a walk waiting for a shard
//! while an insert holding that shard waits for the list cannot happen.
//!
//! # Reclaim: isolate, then dispose
//!
//! The kernel's dispose-list pattern (`list_lru_shrink_walk` with
//! `dentry_lru_isolate_shrink`, then `shrink_dentry_list`):
//!
//! 1. `count`: [`ListLru::count`] of (node, group), one atomic load; 0 is
//!    [`Count::Empty`], so that the group walk clears the shrinker's bit
//!    (the store-buffering handshake in groups.rs; the list's notify is the
//!    producer half).
//! 2. `scan`: walk (node, group) from the head (least recently used) for
//!    `nr_to_scan` items, isolating each into the walk's dispose list.
//! 3. With no list lock held: sort the isolated items by shard, lock each
//!    shard once, and remove each item's entry *if it still carries the
//!    item's seq*. A missing entry was removed by the user; one with another
//!    seq was replaced (its new item is on a list). Either way the isolated
//!    item was stale and the current entry stays.
//! 4. Unlock; drop the evicted keys and values outside every lock. `scan`
//!    reports the entries removed as freed and the items walked as scanned
//!    ([`ShrinkControl::set_nr_scanned`]).
//!
//! This leaves one window, between steps 2 and 3, in which an entry is in
//! the map but on no list. A `get` there returns the value (its `touch`
//! finds a stale key) and the entry is evicted in step 3 all the same; an
//! insert that replaces the entry there wins (its seq differs); a `remove`
//! there takes the entry and its `ListLru::remove` finds nothing. No entry
//! is lost or counted twice.
//!
//! The alternative, dentries' `try_lock` of each object in the callback
//! with [`Isolate::Skip`] on failure, would hold a list lock while probing
//! shards and skip busy entries exactly when the cache is hot; the dispose
//! list probes shards with no list lock held, once per shard per batch.
//!
//! **Why insert nests.** If the item were added to the list before the entry
//! was in the map, a walk could isolate it and its dispose find no entry;
//! the entry inserted after would carry a stale [`LruKey`] and never be
//! reclaimed. With the add under the shard lock, a dispose of the new item
//! waits for the shard and finds the entry.
//!
//! # Memory groups
//!
//! * **Insert into a group** checks that the group and node exist, without a
//!   lock, by setting the shrinker's bit for (group, node)
//!   ([`ShrinkerRegistry::set_shrinker_bit`]: an RCU lookup and a load; the
//!   first bit of a (group, node) allocates its unit). A group that does not
//!   exist (removed, or never created here) is [`CacheError::NoSuchGroup`]
//!   and nothing is inserted. (A [`GroupId`] is an index: one from another
//!   registry names whichever group has that index here, if any.) Setting the bit early
//!   is harmless: a walk that finds the list still empty clears it, and the
//!   list's notify sets it again once the item is there.
//! * **A group removed concurrently**, after the check: the item lands on the
//!   group's list before the cache's `ListLru` is reparented (it moves with
//!   the rest) or after (then [`ListLru::add`] redirects it to the parent,
//!   as the kernel redirects a racing `list_lru_add`). The registry calls
//!   observers only after unpublishing the group, and the cache observes
//!   from before its first insert, so a check that passed comes before the
//!   observer call: no entry is stranded on a dead group.
//! * **Removal** reparents the cache's lists into the parent
//!   ([`GroupObserver`], implemented by [`ListLru`]). Keys stay valid, so
//!   reparented entries stay reachable by `get` and `remove`, and are
//!   reclaimed with the parent's. [`group_len`](LruCache::group_len) of the
//!   removed group is 0.
//! * **Root reclaim** ([`ShrinkRequest`](crate::ShrinkRequest) with [`GroupId::ROOT`]) reclaims the
//!   root group's entries only, as every group-aware shrinker does; reclaim
//!   a subtree by shrinking each of
//!   [`groups_under`](ShrinkerRegistry::groups_under).
//!
//! # Capacity
//!
//! Memory pressure is the shrinker's business, but a cache may also have a
//! size of its own: [`max_weight`](LruCacheBuilder::max_weight). Then the
//! cache keeps a running total of the weights (one shared atomic, kept only
//! when a capacity is set), and an insert that takes the total over the
//! capacity evicts, after dropping its locks, the least recently used
//! entries of *its own* (node, group) list, as many as it takes, sparing the
//! list's most recent entry (the one it inserted, unless another insert came
//! after): the group that allocates pays, as a memory cgroup over its limit
//! reclaims from itself. The capacity is soft: a
//! group that holds only the new entry cannot pay, and concurrent inserts
//! may overshoot for a moment; the shrinker does the rest.
//!
//! # Nodes
//!
//! [`insert`](LruCache::insert) places entries on node 0 (the only node of
//! a machine without NUMA); [`insert_on`](LruCache::insert_on) places them
//! by node, and the shrinker, NUMA-aware, reclaims each node's entries when
//! that node is short.
//!
//! # Lifetimes
//!
//! Building makes the shrinker first (the id is allocated at build), then
//! gives the id to the list's notify hook through a cell set before the
//! shrinker is registered and before the cache exists: no insert can run
//! before it is set. The hook holds a registry handle and the cell, never
//! the cache's state. The registry holds the list only weakly (as an
//! observer). The one strong chain back (registry → registered shrinker →
//! `Reclaim` → state → list → hook → registry) lasts only while the shrinker
//! is registered.
//!
//! Dropping the [`LruCache`] unregisters the shrinker (waiting for its
//! running `count`/`scan`), which hands back the last other reference to
//! the state; then the map (with every value) and the lists are dropped.
//!
//! # Panics in user code
//!
//! The weigher runs before any lock is taken or anything changed: its panic
//! propagates to the caller and the cache is as before. Values are dropped
//! only outside every lock, after all bookkeeping; a value whose `Drop`
//! panics during reclaim has the panic caught and counted by the registry,
//! and the cache is consistent. `K`'s `Hash`, `Eq`, `Clone` and `Drop` must
//! not panic (as for a `HashMap`): if they do, the cache stays memory-safe
//! but its accounting may drift and an entry may escape reclaim.

#[cfg(test)]
mod tests;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use crate::{
    BuildError, Count, GroupId, GroupObserver, Isolate, ListLru, LruKey, Registered, Scan, Shrink,
    ShrinkControl, ShrinkError, ShrinkerBuilder, ShrinkerId, ShrinkerRegistry, ShrinkerStats,
};

/// An [`LruCache`] operation named a node or a group that does not exist;
/// nothing was changed.
///
/// # Examples
///
/// ```
/// use shrinker::{CacheError, GroupId, LruCache, ShrinkerRegistry};
/// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
/// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
/// let err = cache.insert_on(3, GroupId::ROOT, 1, 1).unwrap_err();
/// assert_eq!(err, CacheError::InvalidNode { node: 3, nr_nodes: 1 });
/// assert_eq!(err.to_string(), "node 3 does not exist (the registry has 1)");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheError {
    /// The node does not exist in the cache's registry.
    #[error("node {node} does not exist (the registry has {nr_nodes})")]
    InvalidNode {
        /// The node asked for.
        node: usize,
        /// The registry's node count.
        nr_nodes: usize,
    },
    /// The memory group does not exist in the cache's registry (never
    /// created there, or removed).
    #[error("memory group {} does not exist", group.index())]
    NoSuchGroup {
        /// The group asked for.
        group: GroupId,
    },
}

/// Counters of an [`LruCache`], summed over its shards.
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
    /// `get`s that found an entry.
    pub hits: u64,
    /// `get`s that found none.
    pub misses: u64,
    /// Successful inserts (replacements included).
    pub inserts: u64,
    /// Inserts that replaced an entry.
    pub replaced: u64,
    /// Entries taken out by [`LruCache::remove`].
    pub removed: u64,
    /// Entries evicted by reclaim (the shrinker or [`LruCache::evict`]).
    pub evicted: u64,
}

type Weigher<K, V> = Box<dyn Fn(&K, &V) -> usize + Send + Sync>;

/// What a list item carries: enough for the dispose step to find its entry
/// (`key`, `seq`), and its weight for an over-capacity insert's walk.
struct Item<K> {
    key: K,
    seq: u64,
    weight: usize,
}

/// A map entry.
///
/// # Invariants
///
/// `lru` was returned by the `ListLru::add` of the item `(key, seq)`, made
/// under the shard lock together with the entry's insertion.
struct Entry<V> {
    lru: LruKey,
    seq: u64,
    weight: usize,
    value: Arc<V>,
}

/// One shard, alone on its cache lines.
#[repr(align(128))]
struct Shard<K, V>(Mutex<ShardState<K, V>>);

/// # Invariants
///
/// `weight` is the wrapping sum of the entries' weights; `next_seq` is
/// greater than every entry's and every live item's `seq` of this shard.
struct ShardState<K, V> {
    map: HashMap<K, Entry<V>>,
    next_seq: u64,
    weight: usize,
    stats: CacheStats,
}

/// The state shared by the cache handle and its shrinker.
struct Inner<K, V> {
    shards: Box<[Shard<K, V>]>,
    /// Chooses the shard (bits 32.. of its hash: independent of the bits
    /// each shard's own map uses for buckets and tags).
    hasher: RandomState,
    lru: Arc<ListLru<Item<K>>>,
    weigher: Option<Weigher<K, V>>,
    limit: Option<Limit>,
}

/// The capacity and the running total it is checked against (module doc,
/// "Capacity").
struct Limit {
    max: usize,
    /// The wrapping sum of the entries' weights. Relaxed everywhere: a
    /// number for a heuristic, publishing nothing.
    total: AtomicUsize,
}

/// Lock a shard. Poisoning carries no information: every critical section
/// leaves the shard consistent before it can call user code that may panic.
#[inline]
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Send + Sync + 'static,
{
    #[inline]
    fn shard_index<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // The mask keeps the index below the power-of-two shard count.
        ((self.hasher.hash_one(key) >> 32) as usize) & (self.shards.len() - 1)
    }

    #[inline]
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> MutexGuard<'_, ShardState<K, V>> {
        lock(&self.shards[self.shard_index(key)].0)
    }

    /// Add `weight` to, and take `gone` from, the running total (if kept).
    #[inline]
    fn account(&self, weight: usize, gone: usize) {
        if let Some(l) = &self.limit {
            // Relaxed: see `Limit::total`.
            l.total
                .fetch_add(weight.wrapping_sub(gone), Ordering::Relaxed);
        }
    }

    /// After an insert into (node, group): evict that list's least recently
    /// used entries while the total is over the capacity, sparing the list's
    /// last (most recent) item (module doc, "Capacity").
    fn enforce_limit(&self, node: usize, group: GroupId) {
        let Some(l) = &self.limit else { return };
        loop {
            // Relaxed: see `Limit::total`.
            let mut need = l.total.load(Ordering::Relaxed).saturating_sub(l.max);
            let mut spare = self.lru.count(node, group).saturating_sub(1);
            if need == 0 || spare == 0 {
                return;
            }
            // Isolate until the weight isolated covers the excess (an item
            // carries its entry's weight; a stale one counts too, so the
            // loop checks the total again).
            let isolated = self.lru.walk(node, group, &mut spare, |it| {
                if need == 0 {
                    return Isolate::Stop;
                }
                need = need.saturating_sub(it.weight);
                Isolate::Removed
            });
            if isolated.is_empty() {
                return;
            }
            self.dispose(isolated);
        }
    }

    /// Evict up to `nr` items from the head of (node, group): steps 2–4 of
    /// the module doc. Returns (items walked, entries evicted).
    fn evict(&self, node: usize, group: GroupId, nr: usize) -> (usize, usize) {
        let mut budget = nr;
        // 2. Isolate; the callback takes no lock (lock order, module doc).
        let isolated = self
            .lru
            .walk(node, group, &mut budget, |_| Isolate::Removed);
        (nr - budget, self.dispose(isolated))
    }

    /// Steps 3–4: remove the entries the isolated items still name.
    fn dispose(&self, isolated: Vec<Item<K>>) -> usize {
        if isolated.is_empty() {
            return 0;
        }
        let mut batch: Vec<(usize, Item<K>)> = isolated
            .into_iter()
            .map(|it| (self.shard_index(&it.key), it))
            .collect();
        batch.sort_unstable_by_key(|&(s, _)| s);
        let mut doomed: Vec<(K, Arc<V>, usize)> = Vec::with_capacity(batch.len());
        // 3.
        for run in batch.chunk_by(|a, b| a.0 == b.0) {
            let mut st = lock(&self.shards[run[0].0].0);
            for (_, item) in run {
                if st.map.get(&item.key).is_some_and(|e| e.seq == item.seq) {
                    if let Some((k, e)) = st.map.remove_entry(&item.key) {
                        st.weight = st.weight.wrapping_sub(e.weight);
                        st.stats.evicted += 1;
                        doomed.push((k, e.value, e.weight));
                    }
                }
            }
        }
        // 4. Outside every lock: the evicted keys and values, and the
        // items' keys.
        let freed = doomed.len();
        let gone = doomed
            .iter()
            .fold(0usize, |w, (_, _, weight)| w.wrapping_add(*weight));
        self.account(0, gone);
        drop(doomed);
        drop(batch);
        freed
    }
}

/// The shrinker's state: `count` and `scan` of the module doc.
struct Reclaim<K, V>(Arc<Inner<K, V>>);

impl<K, V> Shrink for Reclaim<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Send + Sync + 'static,
{
    fn count(&self, sc: &ShrinkControl) -> Count {
        // 1. Empty lets the group walk clear our bit (module doc).
        match self.0.lru.count(sc.node(), sc.group()) {
            0 => Count::Empty,
            n => Count::Objects(n),
        }
    }

    fn scan(&self, sc: &mut ShrinkControl) -> Scan {
        let (walked, freed) = self.0.evict(sc.node(), sc.group(), sc.nr_to_scan());
        sc.set_nr_scanned(walked);
        Scan::Freed(freed)
    }
}

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
            .finish()
    }
}

impl<K, V> LruCacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
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
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> usize + Send + Sync + 'static) -> Self {
        self.weigher = Some(Box::new(weigher));
        self
    }

    /// The cost of recreating an entry (the shrinker's `seeks`, default 2):
    /// see [`ShrinkerBuilder::seeks`].
    pub fn seeks(mut self, seeks: u32) -> Self {
        self.seeks = Some(seeks);
        self
    }

    /// Entries per scan call (default 128): see [`ShrinkerBuilder::batch`].
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = Some(batch);
        self
    }

    /// A soft capacity: an insert that takes the total weight over
    /// `max_weight` evicts the least recently used entries of its own
    /// (node, group) list, sparing the most recent (module doc,
    /// "Capacity"). Without it (the default), only reclaim evicts.
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
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_weight(mut self, max_weight: usize) -> Self {
        self.max_weight = Some(max_weight);
        self
    }

    /// The number of map shards, rounded up to a power of two (at most
    /// 2^16; 0 means the default: 4 per available CPU, from 16 to 256).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// Build the cache and register its shrinker in the
    /// [global](ShrinkerRegistry::global) registry.
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
    #[cfg(not(loom))]
    pub fn build(self) -> Result<LruCache<K, V>, BuildError> {
        self.build_in(ShrinkerRegistry::global())
    }

    /// Build the cache in `registry`: its lists, its map, and its shrinker
    /// (group-aware and NUMA-aware), registered and observing group removals.
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
    pub fn build_in(self, registry: &ShrinkerRegistry) -> Result<LruCache<K, V>, BuildError> {
        // The chicken and the egg (module doc, "Lifetimes"): the hook needs
        // the id, which exists once the shrinker is built, which needs the
        // state, which holds the list. The cell is set before registration.
        let id_cell: Arc<OnceLock<ShrinkerId>> = Arc::default();
        let lru = {
            let (registry, id_cell) = (registry.clone(), Arc::clone(&id_cell));
            Arc::new(ListLru::with_notify(
                registry.nr_nodes(),
                move |node, group| {
                    let id = id_cell.get();
                    debug_assert!(id.is_some(), "LruCache: insert before registration");
                    if let Some(&id) = id {
                        // An error means the group is being removed: the
                        // items move to the parent, which this hook is
                        // called for then.
                        let _ = registry.set_shrinker_bit(group, node, id);
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
            .map(|_| {
                Shard(Mutex::new(ShardState {
                    map: HashMap::new(),
                    next_seq: 0,
                    weight: 0,
                    stats: CacheStats::default(),
                }))
            })
            .collect();
        let inner = Arc::new(Inner {
            shards,
            hasher: RandomState::new(),
            lru: Arc::clone(&lru),
            weigher: self.weigher,
            limit: self.max_weight.map(|max| Limit {
                max,
                total: AtomicUsize::new(0),
            }),
        });
        let mut b = ShrinkerBuilder::new(self.name)
            .group_aware(true)
            .numa_aware(true);
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

/// A concurrent key → value cache whose entries live on per-(node, group)
/// LRU lists, with a group- and NUMA-aware shrinker that evicts the least
/// recently used entries of the group and node under pressure.
///
/// See the [module documentation](self) for the design. Values are handed
/// out as `Arc<V>`: a caller may hold one while reclaim evicts its entry
/// (the memory returns when the last `Arc` is dropped). Share the cache
/// between threads by reference or in an `Arc`.
///
/// # Examples
///
/// ```
/// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
/// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
/// let cache = LruCache::<String, u32>::builder("ages").build_in(&reg)?;
/// cache.insert(GroupId::ROOT, "ada".to_string(), 36)?;
/// assert_eq!(cache.get("ada").as_deref(), Some(&36));
/// assert_eq!(cache.remove("ada").as_deref(), Some(&36));
/// assert!(cache.get("ada").is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LruCache<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Send + Sync + 'static,
{
    // Declared first, dropped first: unregister before the storage goes.
    shrinker: Registered<Reclaim<K, V>>,
    inner: Arc<Inner<K, V>>,
}

impl<K, V> fmt::Debug for LruCache<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LruCache")
            .field("name", &self.name())
            .field("shrinker_id", &self.shrinker_id())
            .field("len", &self.len())
            .field("weight", &self.weight())
            .finish_non_exhaustive()
    }
}

impl<K, V> LruCache<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
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
        }
    }

    /// Insert `key` → `value` in `group`, on node 0: [`insert_on`] with
    /// node 0.
    ///
    /// [`insert_on`]: Self::insert_on
    ///
    /// # Errors
    ///
    /// As [`insert_on`](Self::insert_on).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, &str>::builder("c").build_in(&reg)?;
    /// assert_eq!(cache.insert(GroupId::ROOT, 1, "a")?, None);
    /// assert_eq!(cache.insert(GroupId::ROOT, 1, "b")?.as_deref(), Some(&"a"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn insert(&self, group: GroupId, key: K, value: V) -> Result<Option<Arc<V>>, CacheError> {
        self.insert_on(0, group, key, value)
    }

    /// Insert `key` → `value` as the most recently used entry of (`node`,
    /// `group`), and return the value it replaces. A replaced entry leaves
    /// its list: the new one is placed on (`node`, `group`), whatever group
    /// the old one was in.
    ///
    /// If `group` is being removed concurrently, the entry ends up in its
    /// parent (module doc, "Memory groups").
    ///
    /// # Blocking
    ///
    /// Takes the key's shard lock and, under it, the list's lock (and, on
    /// the first entry ever placed in a (group, node), the registry's
    /// groups mutex). Over the [capacity](LruCacheBuilder::max_weight),
    /// then evicts from the list as [`evict`](Self::evict) does, with no
    /// lock held on entry.
    ///
    /// # Errors
    ///
    /// [`CacheError::InvalidNode`]; [`CacheError::NoSuchGroup`] if `group`
    /// does not exist (never created in this registry, or removed). Then
    /// nothing is inserted and `key` and `value` are dropped.
    ///
    /// # Panics
    ///
    /// If the weigher panics; the cache is then unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{CacheError, GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(2).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// let g = reg.create_group(GroupId::ROOT)?;
    /// cache.insert_on(1, g, 7, 70)?;
    /// assert_eq!(cache.group_len(g), 1);
    /// reg.remove_group(g)?;
    /// assert_eq!(cache.insert_on(1, g, 8, 80), Err(CacheError::NoSuchGroup { group: g }));
    /// assert_eq!(cache.get(&7).as_deref(), Some(&70), "moved to the root, still there");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn insert_on(
        &self,
        node: usize,
        group: GroupId,
        key: K,
        value: V,
    ) -> Result<Option<Arc<V>>, CacheError> {
        self.check(node, group)?;
        // User code first, before any lock or change (module doc, "Panics").
        let weight = self.inner.weigher.as_ref().map_or(1, |w| w(&key, &value));
        let item_key = key.clone();
        let value = Arc::new(value);
        let inner = &*self.inner;
        let old = {
            let mut st = inner.shard(&key);
            let seq = st.next_seq;
            st.next_seq += 1;
            // Under the shard lock (module doc, "Why insert nests").
            let item = Item {
                key: item_key,
                seq,
                weight,
            };
            let lru = inner.lru.add(node, group, item);
            let old = st.map.insert(
                key,
                Entry {
                    lru,
                    seq,
                    weight,
                    value,
                },
            );
            st.weight = st.weight.wrapping_add(weight);
            st.stats.inserts += 1;
            if let Some(old) = &old {
                st.weight = st.weight.wrapping_sub(old.weight);
                st.stats.replaced += 1;
            }
            old
        };
        inner.account(weight, old.as_ref().map_or(0, |o| o.weight));
        let old = old.map(|old| {
            // After the shard lock: `None` if a walk isolated the old item
            // (its dispose will find another seq).
            drop(inner.lru.remove(old.lru));
            old.value
        });
        inner.enforce_limit(node, group);
        Ok(old)
    }

    /// Validate (node, group) and set the shrinker's bit early (module doc,
    /// "Memory groups").
    fn check(&self, node: usize, group: GroupId) -> Result<(), CacheError> {
        match self.shrinker.set_bit(group, node) {
            Ok(()) => Ok(()),
            Err(ShrinkError::InvalidNode { node, nr_nodes }) => {
                Err(CacheError::InvalidNode { node, nr_nodes })
            }
            Err(ShrinkError::NoSuchGroup { group }) => Err(CacheError::NoSuchGroup { group }),
            // Our id is a registered group-aware shrinker's: covered by
            // every group's units since build.
            Err(e) => unreachable!("LruCache: setting a registered shrinker's bit failed: {e}"),
        }
    }

    /// The value for `key`, marking the entry most recently used
    /// ([`ListLru::touch`]).
    ///
    /// # Blocking
    ///
    /// Takes the key's shard lock, then, after dropping it, the entry's
    /// list lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// cache.insert(GroupId::ROOT, 1, 10)?;
    /// cache.insert(GroupId::ROOT, 2, 20)?;
    /// assert_eq!(cache.get(&1).as_deref(), Some(&10)); // 1 is now the most recent
    /// assert_eq!(cache.evict(0, GroupId::ROOT, 1)?, 1);
    /// assert!(cache.contains_key(&1) && !cache.contains_key(&2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (lru, value) = {
            let mut st = self.inner.shard(key);
            let st = &mut *st;
            match st.map.get(key) {
                Some(e) => {
                    st.stats.hits += 1;
                    (e.lru, Arc::clone(&e.value))
                }
                None => {
                    st.stats.misses += 1;
                    return None;
                }
            }
        };
        // Outside the shard lock: a key gone stale meanwhile (the entry was
        // evicted, removed or replaced) touches nothing.
        self.inner.lru.touch(lru);
        Some(value)
    }

    /// The value for `key`, without marking the entry used or counting a
    /// hit or miss.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// cache.insert(GroupId::ROOT, 1, 10)?;
    /// cache.insert(GroupId::ROOT, 2, 20)?;
    /// assert_eq!(cache.peek(&1).as_deref(), Some(&10)); // still the least recent
    /// assert_eq!(cache.evict(0, GroupId::ROOT, 1)?, 1);
    /// assert!(!cache.contains_key(&1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn peek<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner
            .shard(key)
            .map
            .get(key)
            .map(|e| Arc::clone(&e.value))
    }

    /// Remove `key`'s entry and return its value.
    ///
    /// # Blocking
    ///
    /// Takes the key's shard lock, then, after dropping it, the entry's
    /// list lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// cache.insert(GroupId::ROOT, 1, 10)?;
    /// assert_eq!(cache.remove(&1).as_deref(), Some(&10));
    /// assert_eq!(cache.remove(&1), None);
    /// assert_eq!(cache.group_len(GroupId::ROOT), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (k, e) = {
            let mut st = self.inner.shard(key);
            let (k, e) = st.map.remove_entry(key)?;
            st.weight = st.weight.wrapping_sub(e.weight);
            st.stats.removed += 1;
            (k, e)
        };
        self.inner.account(0, e.weight);
        // After the shard lock: `None` if a walk isolated the item (its
        // dispose will find no entry).
        drop(self.inner.lru.remove(e.lru));
        drop(k);
        Some(e.value)
    }

    /// Whether `key` has an entry (without marking it used).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, ()>::builder("c").build_in(&reg)?;
    /// cache.insert(GroupId::ROOT, 1, ())?;
    /// assert!(cache.contains_key(&1) && !cache.contains_key(&2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.shard(key).map.contains_key(key)
    }

    /// Evict up to `nr` of the least recently used entries of (`node`,
    /// `group`) by hand, as the shrinker's scan does, and return how many
    /// were evicted. A removed group has no entries (they are its
    /// parent's).
    ///
    /// # Blocking
    ///
    /// Holds the list's lock while walking `nr` items, then each shard lock
    /// involved, in turn; drops the values with no lock held.
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
        let nr_nodes = self.inner.lru.nr_nodes();
        if node >= nr_nodes {
            return Err(CacheError::InvalidNode { node, nr_nodes });
        }
        Ok(self.inner.evict(node, group, nr).1)
    }

    /// Entries in the cache. Locks each shard in turn: a snapshot.
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
        self.inner.shards.iter().map(|s| lock(&s.0).map.len()).sum()
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
    /// [`LruCacheBuilder::weigher`]). Locks each shard in turn: a snapshot.
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
            .fold(0, |w, s| w.wrapping_add(lock(&s.0).weight))
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
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
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

    /// Counters summed over the shards. Locks each shard in turn.
    ///
    /// # Examples
    ///
    /// See [`CacheStats`].
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        let mut t = CacheStats::default();
        for s in self.inner.shards.iter() {
            let s = lock(&s.0).stats;
            t.hits += s.hits;
            t.misses += s.misses;
            t.inserts += s.inserts;
            t.replaced += s.replaced;
            t.removed += s.removed;
            t.evicted += s.evicted;
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
    /// [`ShrinkerRegistry::count`], [`ShrinkerRegistry::scan`] and
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

    /// The shrinker's name, given to [`LruCache::builder`].
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
