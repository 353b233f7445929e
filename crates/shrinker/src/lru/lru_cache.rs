//! [`LruCache<K, V>`]: a ready-made shrinkable key → value cache, the
//! kernel's dentry/inode-cache pattern (`d_lru_add`, `DCACHE_REFERENCED`
//! and `prune_dcache_sb` behind `super_cache_count` / `super_cache_scan`)
//! in a few lines of user code.
//!
//! A cache that gives memory back under pressure needs three things this
//! crate provides separately: LRU lists per (node, memory group)
//! ([`ListLru`]), a group-aware shrinker whose `count` reads and whose
//! `scan` walks those lists ([`ShrinkerBuilder`]), and the seams between
//! them and the registry (a list's empty → non-empty transition sets the
//! shrinker's bit; removing a group moves its lists into the parent).
//! `LruCache` wires them together behind a sharded concurrent map:
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
//!            └─ Arc<Inner> ─┬─ shards: [Shard; 2^k ≥ 16]   (128-byte aligned)
//!                           │     Shard { RwLock<HashMap<K, Entry>>, atomic counters }
//!                           │     Entry { lru: LruKey, seq, weight, referenced ─┐, value: Arc<V> }
//!                           │                                   Arc<AtomicBool> ◀┤  the referenced bit
//!                           └─ Arc<ListLru<Item>>    Item { key: K, seq, weight, referenced ─┘ }
//!                                 ▲  one list per (node, group); the registry
//!                                 └─ holds it as a Weak<dyn GroupObserver>
//! ```
//!
//! The map owns the value; the list owns a clone of the key and the entry's
//! *sequence number*, all that the reclaim walk needs to find the entry
//! again (and the weight, for the capacity's walk, below). `seq` comes from
//! the shard's counter under the shard lock, so (key, seq) names one
//! insertion for the life of the cache: an item whose entry has since been
//! replaced or removed never matches the entry that now has its key. Entry
//! and item share one small allocation, the entry's *referenced bit*
//! (below).
//!
//! # Recency: the referenced bit (second chance)
//!
//! The cache does not move an entry on the list when it is used: that would
//! take the list's lock on every hit, and every hit on one (node, group)
//! would queue on it. It does what the kernel's dentry and inode caches do
//! (`DCACHE_REFERENCED`, `I_REFERENCED`; the CLOCK algorithm):
//!
//! 1. An insert puts the entry at the list's tail with its bit clear.
//! 2. [`get`](LruCache::get) sets the bit: under the shard's *read* lock, one
//!    Relaxed load and, if the bit was clear, one Relaxed store. No list
//!    lock, no write to a hot entry's line once its bit is set.
//!    [`peek`](LruCache::peek) and [`contains_key`](LruCache::contains_key)
//!    leave it alone.
//! 3. The reclaim walk starts at the head (the entry inserted, or last
//!    rotated, longest ago). An item whose bit is set gets a second chance:
//!    its bit is cleared and it goes to the tail ([`Isolate::Rotate`], the
//!    kernel's `LRU_ROTATE`). An item whose bit is clear is evicted
//!    ([`Isolate::Removed`]).
//!
//! So a `get` protects an entry from the next reclaim pass that reaches it,
//! not from every pass: the pass clears the bit, and the entry is evicted
//! by a later one unless it is used again meanwhile. Between passes the
//! order of the list is insertion (or rotation) order, not order of use:
//! of two entries used since the last pass, the older insertion goes first
//! next time too. That is the kernel's approximation of LRU, and what
//! "least recently used" means throughout this module.
//!
//! **Rotations cost budget.** [`ListLru::walk`] charges `nr_to_walk` before
//! each callback, a rotation included (as the kernel's
//! `list_lru_walk_one` does). A pass over a list whose entries are all
//! referenced, with a budget no larger than the list, frees nothing, but
//! clears every bit it reaches and sends those entries to the tail; the
//! next pass evicts them. (The walk goes on with a rotated item's old
//! successor, so a budget larger than the list meets the rotated entries
//! again, bits clear, and evicts them in the same pass, as the kernel's
//! does.) The shrinker
//! reports the items it walked as scanned and the entries it evicted as
//! freed ([`ShrinkControl::set_nr_scanned`]), so the registry sees the
//! rotations as work done; [`evict`](LruCache::evict) returns only the
//! evicted.
//!
//! The bit is a hint, and every access to it is Relaxed: it guards no data
//! (the walk reads nothing the `get` wrote but the bit itself), and a bit
//! set a moment late costs at most one eviction that a perfect LRU would
//! have deferred. A `get` whose store lands between the walk's load and its
//! clear is absorbed into that rotation: the entry goes to the tail now,
//! which is what that use deserves. The bit lives in its own `Arc` because
//! the walk reaches the item, under the list lock, and never the map entry;
//! the `Arc` is also the insertion's identity (`Arc::ptr_eq`), which the
//! capacity walk uses to spare the entry it just inserted.
//!
//! # Lock order
//!
//! shard lock → list lock (→ the registry's groups mutex, in the notify
//! hook, on the first bit ever set in a (group, node)).
//!
//! The shard lock is a `RwLock`: [`get`](LruCache::get),
//! [`peek`](LruCache::peek), [`contains_key`](LruCache::contains_key),
//! [`len`](LruCache::len) and [`weight`](LruCache::weight) only read the
//! map (the counters and the referenced bit are atomics), so hits on one
//! shard do not wait for each other; writers (insert, remove, the dispose
//! step) take it exclusively. Uncontended, a read lock costs what a mutex
//! costs (one compare-and-swap to take it, one atomic op to release it); the
//! difference is that concurrent hits on a hot shard share it instead of
//! queueing. The counters share the shard's cache lines, which a `get`
//! writes anyway (the lock word). Readers share the map, so `K` must be
//! `Sync` (as `V` already was, for the `Arc<V>`s handed out).
//!
//! Only an insert nests the two locks: it must call [`ListLru::add`] under
//! the shard lock (see "Why insert nests" below).
//! [`remove`](LruCache::remove) copies the entry's [`LruKey`] under the
//! shard lock, drops it, then calls [`ListLru::remove`]; a key gone stale
//! meanwhile names nothing, so that is exact. `get` takes no list lock at
//! all. The reclaim walk holds a list lock, and its isolate callback takes
//! no lock and calls nothing: it reads and clears the item's bit and
//! answers [`Isolate::Rotate`] or [`Isolate::Removed`]. So the ABBA
//! deadlock of a walk waiting for a shard while an insert holding that
//! shard waits for the list cannot happen.
//!
//! # Reclaim: isolate, then dispose
//!
//! The kernel's dispose-list pattern (`list_lru_shrink_walk` with
//! `dentry_lru_isolate`, then `shrink_dentry_list`):
//!
//! 1. `count`: [`ListLru::count`] of (node, group), one atomic load; 0 is
//!    [`Count::Empty`], so that the group walk clears the shrinker's bit
//!    (the store-buffering handshake in groups/; the list's notify is the
//!    producer half).
//! 2. `scan`: walk (node, group) from the head for `nr_to_scan` items,
//!    rotating the referenced ones (above) and isolating the others into
//!    the walk's dispose list.
//! 3. With no list lock held: sort the isolated items by shard, lock each
//!    shard once, and remove each item's entry *if it still carries the
//!    item's seq*. A missing entry was removed by the user; one with another
//!    seq was replaced (its new item is on a list). Either way the isolated
//!    item was stale and the current entry stays.
//! 4. Unlock; drop the evicted keys and values outside every lock. `scan`
//!    reports the entries removed as freed and the items walked (rotated
//!    ones included) as scanned ([`ShrinkControl::set_nr_scanned`]).
//!
//! This leaves one window, between steps 2 and 3, in which an entry is in
//! the map but on no list. A `get` there returns the value (it sets the bit
//! of an item no list holds any more) and the entry is evicted in step 3
//! all the same; an insert that replaces the entry there wins (its seq
//! differs); a `remove` there takes the entry and its `ListLru::remove`
//! finds nothing. No entry is lost or counted twice.
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
//!   reclaimed with the parent's; their referenced bits move with them.
//!   [`group_len`](LruCache::group_len) of the removed group is 0.
//! * **Root reclaim** ([`ShrinkRequest`](crate::ShrinkRequest) with [`GroupId::ROOT`]) reclaims the
//!   root group's entries only, as every group-aware shrinker does; reclaim
//!   a subtree by shrinking each of
//!   [`groups_under`](ShrinkerRegistry::groups_under).
//!
//! # Capacity
//!
//! Memory pressure is the shrinker's business, but a cache may also have a
//! size of its own: [`max_weight`](LruCacheBuilder::max_weight). It is a
//! **per-insert self-eviction policy of the inserting (node, group), not a
//! bound on the whole cache.** The cache keeps a running total of the
//! weights (one shared atomic, kept only when a capacity is set), and an
//! insert that takes the total over the capacity evicts, after dropping its
//! locks, entries of *its own* (node, group) list until the excess is
//! covered: the group that allocates pays, as a memory cgroup over its
//! limit reclaims from itself. The walk is the reclaim walk (referenced
//! entries are rotated, the others evicted, from the head) except that it
//! skips the entry the insert just made; it makes at most two passes that
//! evict nothing (the second finds the bits the first cleared) before it
//! gives up.
//!
//! Consequences: a group whose list holds only the new entry cannot pay,
//! and nothing else is evicted; a group that filled the cache keeps its
//! entries while other groups insert (each of those evicts from itself,
//! down to its newest entry) until memory pressure or its own inserts
//! evict them. Concurrent inserts may overshoot for a moment. For a hard
//! bound on everything, reclaim by weight from a monitor (the example
//! `lru_cache.rs` does), or give each tenant its own cache.
//!
//! # Nodes
//!
//! By default a cache is *NUMA-unaware*, like a kernel shrinker without
//! `SHRINKER_NUMA_AWARE`: every entry lives on node 0's lists and the
//! registry calls the shrinker with node 0 for reclaim on *any* node (its
//! `effective_node`). Root reclaim calls every shrinker, so that is direct;
//! group reclaim on node *n* calls only the shrinkers whose bit is set in
//! (group, *n*), so the list's notify hook of a NUMA-unaware cache sets the
//! bit on every node when a group's list goes from empty to non-empty
//! (O(nodes), once per such transition). [`insert_on`](LruCache::insert_on)
//! still checks its node, then places the entry on node 0, and
//! [`evict`](LruCache::evict) of any valid node evicts from node 0's lists.
//!
//! With [`numa_aware(true)`](LruCacheBuilder::numa_aware), `insert_on`
//! places entries on the node given, the shrinker is NUMA-aware, and
//! reclaim on a node evicts that node's entries only;
//! [`insert`](LruCache::insert) and
//! [`get_or_insert_with`](LruCache::get_or_insert_with) place on node 0
//! there too, so a NUMA-aware cache should insert with the `_on` methods.
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
//! The weigher, and the `f` of [`get_or_insert_with`](LruCache::get_or_insert_with),
//! run before any lock is taken or anything changed: a panic there
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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

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
/// let err = cache.evict(3, GroupId::ROOT, 1).unwrap_err();
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

/// An insert was refused ([`LruCache::insert`], [`LruCache::insert_on`]):
/// why, and the key and value, handed back unchanged.
///
/// Its `Debug` and `Display` show only the [`CacheError`], so it is an
/// [`Error`](std::error::Error) for any `K` and `V` (and converts into a
/// `Box<dyn Error>` with `?`); [`From`] turns it into the bare
/// [`CacheError`], dropping the key and value.
///
/// # Examples
///
/// ```
/// use shrinker::{CacheError, GroupId, LruCache, ShrinkerRegistry};
/// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
/// let cache = LruCache::<u32, String>::builder("c").build_in(&reg)?;
/// let err = cache.insert_on(3, GroupId::ROOT, 1, "one".to_string()).unwrap_err();
/// assert_eq!(err.kind(), CacheError::InvalidNode { node: 3, nr_nodes: 1 });
/// assert_eq!(err.to_string(), "node 3 does not exist (the registry has 1)");
/// // Nothing is lost: retry on node 0.
/// let (_, key, value) = err.into_parts();
/// cache.insert(GroupId::ROOT, key, value)?;
/// assert_eq!(cache.get(&1).as_deref().map(String::as_str), Some("one"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct InsertError<K, V> {
    kind: CacheError,
    key: K,
    value: V,
}

impl<K, V> InsertError<K, V> {
    /// Why the insert was refused.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{CacheError, GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let g = reg.create_group(GroupId::ROOT)?;
    /// reg.remove_group(g)?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// let err = cache.insert(g, 1, 10).unwrap_err();
    /// assert_eq!(err.kind(), CacheError::NoSuchGroup { group: g });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn kind(&self) -> CacheError {
        self.kind
    }

    /// The key that was not inserted.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// let err = cache.insert_on(9, GroupId::ROOT, 1, 10).unwrap_err();
    /// assert_eq!(*err.key(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The value that was not inserted.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// let err = cache.insert_on(9, GroupId::ROOT, 1, 10).unwrap_err();
    /// assert_eq!(*err.value(), 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn value(&self) -> &V {
        &self.value
    }

    /// Why, the key and the value, by value.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{CacheError, GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, Vec<u8>>::builder("c").build_in(&reg)?;
    /// let err = cache.insert_on(9, GroupId::ROOT, 1, vec![1, 2]).unwrap_err();
    /// let (kind, key, value) = err.into_parts();
    /// assert_eq!(kind, CacheError::InvalidNode { node: 9, nr_nodes: 1 });
    /// assert_eq!((key, value), (1, vec![1, 2]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn into_parts(self) -> (CacheError, K, V) {
        (self.kind, self.key, self.value)
    }
}

impl<K, V> fmt::Debug for InsertError<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InsertError")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl<K, V> fmt::Display for InsertError<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl<K, V> std::error::Error for InsertError<K, V> {}

impl<K, V> From<InsertError<K, V>> for CacheError {
    fn from(e: InsertError<K, V>) -> Self {
        e.kind
    }
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
    /// Lookups (`get`, and the lookup of `get_or_insert_with`) that found
    /// an entry.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// Successful inserts (replacements included).
    pub inserts: u64,
    /// Inserts that replaced an entry.
    pub replaced: u64,
    /// Entries taken out by [`LruCache::remove`].
    pub removed: u64,
    /// Entries evicted by reclaim (the shrinker, [`LruCache::evict`] or the
    /// capacity).
    pub evicted: u64,
}

type Weigher<K, V> = Box<dyn Fn(&K, &V) -> usize + Send + Sync>;

/// The referenced bit of one insertion, shared by its map entry and its
/// list item (module doc, "Recency"). Every access is Relaxed.
type Referenced = Arc<AtomicBool>;

/// Set the referenced bit (module doc, "Recency", step 2).
#[inline]
fn mark_referenced(bit: &AtomicBool) {
    // Relaxed, both: the bit is a hint that publishes nothing; its only
    // reader is the walk's callback, which reads nothing else we wrote.
    // Test before setting (the kernel's `if (!(d_flags &
    // DCACHE_REFERENCED))`, `folio_mark_accessed`): a hot entry's line is
    // written once per reclaim pass, not once per hit.
    if !bit.load(Ordering::Relaxed) {
        bit.store(true, Ordering::Relaxed);
    }
}

/// The walk's verdict on one item (module doc, "Recency", step 3): second
/// chance if referenced.
#[inline]
fn second_chance(bit: &AtomicBool) -> Isolate {
    // Relaxed, both: as in `mark_referenced`. A `get` whose store lands
    // between the load and the clear is absorbed into this rotation; one
    // that lands after it survives for the next pass. Only this callback
    // clears the bit, under the lock of the one list that holds the item,
    // so no other clear races with ours.
    if bit.load(Ordering::Relaxed) {
        bit.store(false, Ordering::Relaxed);
        Isolate::Rotate
    } else {
        Isolate::Removed
    }
}

/// What a list item carries: enough for the dispose step to find its entry
/// (`key`, `seq`), its weight for an over-capacity insert's walk, and the
/// entry's referenced bit.
struct Item<K> {
    key: K,
    seq: u64,
    weight: usize,
    referenced: Referenced,
}

/// A map entry.
///
/// # Invariants
///
/// `lru` was returned by the `ListLru::add` of the item `(key, seq)`, made
/// under the shard lock together with the entry's insertion; that item
/// holds the same `referenced`.
struct Entry<V> {
    lru: LruKey,
    seq: u64,
    weight: usize,
    referenced: Referenced,
    value: Arc<V>,
}

/// One shard, alone on its cache lines: its map and, beside it, its
/// counters (atomics, so that a `get` under the read lock can count).
#[repr(align(128))]
struct Shard<K, V> {
    state: RwLock<ShardState<K, V>>,
    stats: ShardStats,
}

/// # Invariants
///
/// `weight` is the wrapping sum of the entries' weights; `next_seq` is
/// greater than every entry's and every live item's `seq` of this shard.
struct ShardState<K, V> {
    map: HashMap<K, Entry<V>>,
    next_seq: u64,
    weight: usize,
}

/// A shard's share of [`CacheStats`]. Relaxed everywhere: counters that
/// publish nothing; a snapshot may be torn across fields.
#[derive(Default)]
struct ShardStats {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    replaced: AtomicU64,
    removed: AtomicU64,
    evicted: AtomicU64,
}

/// Count one event.
#[inline]
fn bump(counter: &AtomicU64) {
    // Relaxed: see `ShardStats`.
    counter.fetch_add(1, Ordering::Relaxed);
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
    /// Entries are placed per node (module doc, "Nodes"); else on node 0.
    numa_aware: bool,
}

/// The capacity and the running total it is checked against (module doc,
/// "Capacity").
struct Limit {
    max: usize,
    /// The wrapping sum of the entries' weights. Relaxed everywhere: a
    /// number for a heuristic, publishing nothing.
    total: AtomicUsize,
}

/// Lock a shard for reading. Poisoning carries no information: every
/// critical section leaves the shard consistent before it can call user
/// code that may panic.
#[inline]
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Lock a shard for writing; poisoning as in [`read`].
#[inline]
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// The outcome of [`Inner::place`].
enum Placed<K, V> {
    /// The entry is in the map and its item on the list.
    New {
        /// The entry it replaced, if any (its item is still on a list, or
        /// isolated).
        old: Option<Entry<V>>,
        /// The new entry's bit: its identity for the capacity walk.
        referenced: Referenced,
    },
    /// Asked to insert only into a vacant key, and the key had an entry:
    /// its value, and what we did not insert (to drop outside the lock).
    Occupied {
        existing: Arc<V>,
        unused: (K, K, Arc<V>, Referenced),
    },
}

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    #[inline]
    fn shard_index<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // The mask keeps the index below the power-of-two shard count.
        ((self.hasher.hash_one(key) >> 32) as usize) & (self.shards.len() - 1)
    }

    #[inline]
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Shard<K, V> {
        &self.shards[self.shard_index(key)]
    }

    /// The node whose lists hold entries asked for on `node` (module doc,
    /// "Nodes"). `node` must be valid.
    #[inline]
    fn home(&self, node: usize) -> usize {
        if self.numa_aware {
            node
        } else {
            0
        }
    }

    /// `Err` unless `node` exists.
    #[inline]
    fn check_node(&self, node: usize) -> Result<(), CacheError> {
        let nr_nodes = self.lru.nr_nodes();
        if node < nr_nodes {
            Ok(())
        } else {
            Err(CacheError::InvalidNode { node, nr_nodes })
        }
    }

    /// Weigh an entry: user code, run before any lock (module doc,
    /// "Panics").
    #[inline]
    fn weigh(&self, key: &K, value: &V) -> usize {
        self.weigher.as_ref().map_or(1, |w| w(key, value))
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

    /// Insert `key` → `value` as the newest entry of (`home`, `group`),
    /// or, if `vacant_only` and the key has an entry, leave the map alone
    /// and return that entry's value (marked referenced: it is being used).
    /// The group was checked by the caller.
    fn place(
        &self,
        home: usize,
        group: GroupId,
        key: K,
        value: Arc<V>,
        weight: usize,
        vacant_only: bool,
    ) -> Placed<K, V> {
        // Allocate and clone before the lock.
        let item_key = key.clone();
        let referenced: Referenced = Arc::default();
        let shard = self.shard(&key);
        let mut st = write(&shard.state);
        if vacant_only {
            if let Some(e) = st.map.get(&key) {
                mark_referenced(&e.referenced);
                let existing = Arc::clone(&e.value);
                drop(st);
                return Placed::Occupied {
                    existing,
                    unused: (key, item_key, value, referenced),
                };
            }
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        // Under the shard lock (module doc, "Why insert nests").
        let item = Item {
            key: item_key,
            seq,
            weight,
            referenced: Arc::clone(&referenced),
        };
        let lru = self.lru.add(home, group, item);
        let old = st.map.insert(
            key,
            Entry {
                lru,
                seq,
                weight,
                referenced: Arc::clone(&referenced),
                value,
            },
        );
        st.weight = st.weight.wrapping_add(weight);
        if let Some(old) = &old {
            st.weight = st.weight.wrapping_sub(old.weight);
        }
        drop(st);
        bump(&shard.stats.inserts);
        if old.is_some() {
            bump(&shard.stats.replaced);
        }
        self.account(weight, old.as_ref().map_or(0, |o| o.weight));
        Placed::New { old, referenced }
    }

    /// After an insert into (`home`, `group`): while the total is over the
    /// capacity, evict from that list as reclaim does, sparing the entry
    /// whose bit is `new` (module doc, "Capacity").
    fn enforce_limit(&self, home: usize, group: GroupId, new: &Referenced) {
        let Some(l) = &self.limit else { return };
        // Passes in a row that evicted nothing: the first may have cleared
        // bits the second finds clear; after two, give up (a stream of
        // `get`s could otherwise keep us rotating).
        let mut idle = 0;
        while idle < 2 {
            // Relaxed: see `Limit::total`.
            let mut need = l.total.load(Ordering::Relaxed).saturating_sub(l.max);
            let mut budget = self.lru.count(home, group);
            if need == 0 || budget <= 1 {
                return;
            }
            // Isolate until the weight isolated covers the excess (an item
            // carries its entry's weight; a stale one counts too, so the
            // loop checks the total again).
            let mut rotated = false;
            let isolated = self.lru.walk(home, group, &mut budget, |it| {
                if need == 0 {
                    return Isolate::Stop;
                }
                if Arc::ptr_eq(&it.referenced, new) {
                    return Isolate::Skip;
                }
                let verdict = second_chance(&it.referenced);
                match verdict {
                    Isolate::Removed => need = need.saturating_sub(it.weight),
                    _ => rotated = true,
                }
                verdict
            });
            if isolated.is_empty() {
                if !rotated {
                    return;
                }
                idle += 1;
            } else {
                idle = 0;
                self.dispose(isolated);
            }
        }
    }

    /// Walk up to `nr` items from the head of (`home`, `group`), rotating
    /// the referenced and evicting the others: steps 2–4 of the module doc.
    /// Returns (items walked, entries evicted).
    fn evict(&self, home: usize, group: GroupId, nr: usize) -> (usize, usize) {
        let mut budget = nr;
        // 2. Isolate; the callback takes no lock (lock order, module doc).
        let isolated = self
            .lru
            .walk(home, group, &mut budget, |it| second_chance(&it.referenced));
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
        let mut doomed: Vec<(K, Entry<V>)> = Vec::with_capacity(batch.len());
        // 3.
        for run in batch.chunk_by(|a, b| a.0 == b.0) {
            let shard = &self.shards[run[0].0];
            let mut st = write(&shard.state);
            let before = doomed.len();
            for (_, item) in run {
                if st.map.get(&item.key).is_some_and(|e| e.seq == item.seq) {
                    if let Some((k, e)) = st.map.remove_entry(&item.key) {
                        st.weight = st.weight.wrapping_sub(e.weight);
                        doomed.push((k, e));
                    }
                }
            }
            drop(st);
            // Relaxed: see `ShardStats`.
            let n = (doomed.len() - before) as u64;
            shard.stats.evicted.fetch_add(n, Ordering::Relaxed);
        }
        // 4. Outside every lock: the evicted keys and values, and the
        // items' keys.
        let freed = doomed.len();
        let gone = doomed
            .iter()
            .fold(0usize, |w, (_, e)| w.wrapping_add(e.weight));
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
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn count(&self, sc: &ShrinkControl) -> Count {
        // 1. Empty lets the group walk clear our bit (module doc). A
        // NUMA-unaware shrinker is told node 0 anyway.
        match self.0.lru.count(self.0.home(sc.node()), sc.group()) {
            0 => Count::Empty,
            n => Count::Objects(n),
        }
    }

    fn scan(&self, sc: &mut ShrinkControl) -> Scan {
        let (walked, freed) = self
            .0
            .evict(self.0.home(sc.node()), sc.group(), sc.nr_to_scan());
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
    ///   [`insert_on`](LruCache::insert_on) names (it still checks that the
    ///   node exists), and the registry calls the shrinker, with node 0,
    ///   for reclaim on any node: the right choice on a machine without
    ///   NUMA, or when an entry's memory is not tied to a node.
    /// * `true`: `insert_on` places on the node given, and reclaim on a
    ///   node evicts that node's entries only.
    ///   [`insert`](LruCache::insert) places on node 0: insert with the
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
        let inner = Arc::new(Inner {
            shards,
            hasher: RandomState::new(),
            lru: Arc::clone(&lru),
            weigher: self.weigher,
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

/// A concurrent key → value cache whose entries live on per-(node, group)
/// LRU lists, with a group-aware shrinker that evicts the least recently
/// used entries of the group (and, if [NUMA-aware](LruCacheBuilder::numa_aware),
/// the node) under pressure, giving used entries a second chance.
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
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    // Declared first, dropped first: unregister before the storage goes.
    shrinker: Registered<Reclaim<K, V>>,
    inner: Arc<Inner<K, V>>,
}

impl<K, V> fmt::Debug for LruCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LruCache")
            .field("name", &self.name())
            .field("shrinker_id", &self.shrinker_id())
            .field("numa_aware", &self.inner.numa_aware)
            .field("len", &self.len())
            .field("weight", &self.weight())
            .finish_non_exhaustive()
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
        }
    }

    /// Insert `key` → `value` in `group`, on node 0: [`insert_on`] with
    /// node 0 (the only node a [NUMA-unaware](LruCacheBuilder::numa_aware)
    /// cache uses).
    ///
    /// [`insert_on`]: Self::insert_on
    ///
    /// # Errors
    ///
    /// As [`insert_on`](Self::insert_on): the key and value come back in
    /// the [`InsertError`].
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
    ///
    /// # Blocking
    ///
    /// Takes the key's shard lock and a list lock, briefly; never waits for
    /// reclaim or for a grace period.
    ///
    /// # Panics
    ///
    /// If the weigher panics (the cache is left unchanged).
    #[inline]
    pub fn insert(
        &self,
        group: GroupId,
        key: K,
        value: V,
    ) -> Result<Option<Arc<V>>, InsertError<K, V>> {
        self.insert_on(0, group, key, value)
    }

    /// Insert `key` → `value` as the newest entry of (`node`, `group`),
    /// its referenced bit clear, and return the value it replaces (as
    /// [`HashMap::insert`] does; [`get_or_insert_with`] hands back the
    /// value in the cache instead). A replaced entry leaves its list: the
    /// new one is placed on (`node`, `group`), whatever group the old one
    /// was in.
    ///
    /// A [NUMA-unaware](LruCacheBuilder::numa_aware) cache (the default)
    /// checks that `node` exists and places the entry on node 0.
    ///
    /// If `group` is being removed concurrently, the entry ends up in its
    /// parent (module doc, "Memory groups").
    ///
    /// [`get_or_insert_with`]: Self::get_or_insert_with
    ///
    /// # Blocking
    ///
    /// Takes the key's shard lock (exclusively) and, under it, the list's
    /// lock (and, on the first entry ever placed in a (group, node), the
    /// registry's groups mutex). Over the
    /// [capacity](LruCacheBuilder::max_weight), then walks its own list as
    /// [`evict`](Self::evict) does, with no lock held on entry.
    ///
    /// # Errors
    ///
    /// [`CacheError::InvalidNode`]; [`CacheError::NoSuchGroup`] if `group`
    /// does not exist (never created in this registry, or removed). Then
    /// nothing is inserted and `key` and `value` come back in the
    /// [`InsertError`].
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
    /// let cache = LruCache::<u32, u32>::builder("c").numa_aware(true).build_in(&reg)?;
    /// let g = reg.create_group(GroupId::ROOT)?;
    /// cache.insert_on(1, g, 7, 70)?;
    /// assert_eq!(cache.group_len(g), 1);
    /// reg.remove_group(g)?;
    /// let err = cache.insert_on(1, g, 8, 80).unwrap_err();
    /// assert_eq!(err.kind(), CacheError::NoSuchGroup { group: g });
    /// assert_eq!(err.into_parts().2, 80, "the value comes back");
    /// assert_eq!(cache.get(&7).as_deref(), Some(&70), "moved to the root, still there");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn insert_on(
        &self,
        node: usize,
        group: GroupId,
        key: K,
        value: V,
    ) -> Result<Option<Arc<V>>, InsertError<K, V>> {
        let home = match self.check(node, group) {
            Ok(home) => home,
            Err(kind) => return Err(InsertError { kind, key, value }),
        };
        // User code first, before any lock or change (module doc, "Panics").
        let weight = self.inner.weigh(&key, &value);
        let inner = &*self.inner;
        let Placed::New { old, referenced } =
            inner.place(home, group, key, Arc::new(value), weight, false)
        else {
            unreachable!("LruCache: a replacing insert never finds the key occupied")
        };
        let old = old.map(|old| {
            // After the shard lock: `None` if a walk isolated the old item
            // (its dispose will find another seq).
            drop(inner.lru.remove(old.lru));
            old.value
        });
        inner.enforce_limit(home, group, &referenced);
        Ok(old)
    }

    /// The value for `key`; if it has none, insert `f()` in `group` on
    /// node 0 and return that: [`get_or_insert_with_on`] with node 0.
    ///
    /// [`get_or_insert_with_on`]: Self::get_or_insert_with_on
    ///
    /// # Errors
    ///
    /// As [`get_or_insert_with_on`](Self::get_or_insert_with_on).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, String>::builder("c").build_in(&reg)?;
    /// let v = cache.get_or_insert_with(GroupId::ROOT, 1, || "computed".to_string())?;
    /// assert_eq!(*v, "computed");
    /// // Present now: `f` is not called.
    /// let v = cache.get_or_insert_with(GroupId::ROOT, 1, || unreachable!())?;
    /// assert_eq!(*v, "computed");
    /// assert_eq!((cache.stats().misses, cache.stats().hits), (1, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Blocking
    ///
    /// Takes the key's shard lock and a list lock, briefly; never waits for
    /// reclaim or for a grace period. `f` runs outside every lock.
    ///
    /// # Panics
    ///
    /// If `f` or the weigher panics (the cache is left unchanged).
    #[inline]
    pub fn get_or_insert_with(
        &self,
        group: GroupId,
        key: K,
        f: impl FnOnce() -> V,
    ) -> Result<Arc<V>, CacheError> {
        self.get_or_insert_with_on(0, group, key, f)
    }

    /// The value for `key`, as [`get`](Self::get) (a hit sets the entry's
    /// referenced bit); if it has none, compute `f()` and insert it as
    /// [`insert_on`](Self::insert_on) does, and return it.
    ///
    /// The protocol:
    ///
    /// 1. Look `key` up under the shard's read lock: a hit counts a hit and
    ///    returns, whatever group the entry is in; `f` is not called and
    ///    `node` and `group` are not checked.
    /// 2. A miss counts a miss; then `node` and `group` are checked (an
    ///    error returns before `f` is called).
    /// 3. With no lock held: call `f` once, and the weigher.
    /// 4. Take the shard's write lock. If another thread inserted `key`
    ///    since step 1, return *its* value, marked referenced, and drop the
    ///    one `f` computed after unlocking (it was never visible; nothing
    ///    else is counted). Else insert the computed value (counted as an
    ///    insert) and return it.
    ///
    /// So `f` runs at most once per call, but two threads that miss the
    /// same key at once may both run it; the first to reach step 4 wins and
    /// both get its value. (To run it once per key, serialise the misses
    /// yourself.) A `remove` or an eviction between steps 1 and 4 is not
    /// noticed: the computed value is inserted.
    ///
    /// # Blocking
    ///
    /// As [`get`](Self::get) on a hit; as [`insert_on`](Self::insert_on)
    /// on a miss, plus whatever `f` does (no lock of the cache is held).
    ///
    /// # Errors
    ///
    /// On a miss: [`CacheError::InvalidNode`], [`CacheError::NoSuchGroup`].
    /// Then `f` is not called and `key` is dropped.
    ///
    /// # Panics
    ///
    /// If `f` or the weigher panics; the cache is then unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{CacheError, GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(2).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").numa_aware(true).build_in(&reg)?;
    /// let v = cache.get_or_insert_with_on(1, GroupId::ROOT, 7, || 49)?;
    /// assert_eq!((*v, cache.evict(1, GroupId::ROOT, 1)?), (49, 1));
    /// assert_eq!(
    ///     cache.get_or_insert_with_on(2, GroupId::ROOT, 7, || unreachable!()),
    ///     Err(CacheError::InvalidNode { node: 2, nr_nodes: 2 })
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_or_insert_with_on(
        &self,
        node: usize,
        group: GroupId,
        key: K,
        f: impl FnOnce() -> V,
    ) -> Result<Arc<V>, CacheError> {
        // 1.
        if let Some(v) = self.get(&key) {
            return Ok(v);
        }
        // 2.
        let home = self.check(node, group)?;
        // 3. User code, no lock held (module doc, "Panics").
        let value = f();
        let weight = self.inner.weigh(&key, &value);
        let value = Arc::new(value);
        let inner = &*self.inner;
        // 4.
        match inner.place(home, group, key, Arc::clone(&value), weight, true) {
            Placed::New { old, referenced } => {
                debug_assert!(old.is_none(), "a vacant-only insert replaced an entry");
                inner.enforce_limit(home, group, &referenced);
                Ok(value)
            }
            Placed::Occupied { existing, unused } => {
                // Outside the shard lock.
                drop(unused);
                drop(value);
                Ok(existing)
            }
        }
    }

    /// Validate (node, group), set the shrinker's bit early (module doc,
    /// "Memory groups"), and return the node whose lists get the entry.
    fn check(&self, node: usize, group: GroupId) -> Result<usize, CacheError> {
        self.inner.check_node(node)?;
        let home = self.inner.home(node);
        match self.shrinker.set_bit(group, home) {
            Ok(()) => Ok(home),
            Err(ShrinkError::InvalidNode { node, nr_nodes }) => {
                Err(CacheError::InvalidNode { node, nr_nodes })
            }
            Err(ShrinkError::NoSuchGroup { group }) => Err(CacheError::NoSuchGroup { group }),
            // Our id is a registered group-aware shrinker's: covered by
            // every group's units since build.
            Err(e) => unreachable!("LruCache: setting a registered shrinker's bit failed: {e}"),
        }
    }

    /// The value for `key`, setting the entry's referenced bit: the next
    /// reclaim pass that reaches it clears the bit and spares it (module
    /// doc, "Recency").
    ///
    /// # Ordering
    ///
    /// The bit is set with Relaxed operations after the lookup; a reclaim
    /// pass running at the same moment may miss it (and evict the entry,
    /// which the caller's `Arc` keeps alive).
    ///
    /// # Blocking
    ///
    /// Takes the key's shard lock for reading, and no list lock. Waits only
    /// for a writer of the same shard (an insert, a remove, a dispose).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// cache.insert(GroupId::ROOT, 1, 10)?;
    /// cache.insert(GroupId::ROOT, 2, 20)?;
    /// assert_eq!(cache.get(&1).as_deref(), Some(&10)); // 1 is referenced now
    /// // A pass over two items: 1 gets a second chance, 2 is evicted.
    /// assert_eq!(cache.evict(0, GroupId::ROOT, 2)?, 1);
    /// assert!(cache.contains_key(&1) && !cache.contains_key(&2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.inner.shard(key);
        let value = read(&shard.state).map.get(key).map(|e| {
            mark_referenced(&e.referenced);
            Arc::clone(&e.value)
        });
        bump(if value.is_some() {
            &shard.stats.hits
        } else {
            &shard.stats.misses
        });
        value
    }

    /// The value for `key`, without setting the entry's referenced bit or
    /// counting a hit or miss.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// cache.insert(GroupId::ROOT, 1, 10)?;
    /// cache.insert(GroupId::ROOT, 2, 20)?;
    /// assert_eq!(cache.peek(&1).as_deref(), Some(&10)); // not referenced
    /// assert_eq!(cache.evict(0, GroupId::ROOT, 1)?, 1);
    /// assert!(!cache.contains_key(&1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Blocking
    ///
    /// Takes the key's shard lock for reading.
    #[must_use]
    pub fn peek<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        read(&self.inner.shard(key).state)
            .map
            .get(key)
            .map(|e| Arc::clone(&e.value))
    }

    /// Remove `key`'s entry and return its value.
    ///
    /// # Blocking
    ///
    /// Takes the key's shard lock (exclusively), then, after dropping it,
    /// the entry's list lock.
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
        let shard = self.inner.shard(key);
        let (k, e) = {
            let mut st = write(&shard.state);
            let (k, e) = st.map.remove_entry(key)?;
            st.weight = st.weight.wrapping_sub(e.weight);
            (k, e)
        };
        bump(&shard.stats.removed);
        self.inner.account(0, e.weight);
        // After the shard lock: `None` if a walk isolated the item (its
        // dispose will find no entry).
        drop(self.inner.lru.remove(e.lru));
        drop(k);
        Some(e.value)
    }

    /// Whether `key` has an entry (without setting its referenced bit).
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
    ///
    /// # Blocking
    ///
    /// Takes the key's shard lock for reading.
    #[must_use]
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        read(&self.inner.shard(key).state).map.contains_key(key)
    }

    /// Walk up to `nr` items from the head of (`node`, `group`) by hand, as
    /// the shrinker's scan does, and return how many entries were evicted:
    /// referenced entries are not evicted but have their bit cleared and go
    /// to the tail, and each costs one of the `nr` (module doc, "Recency").
    /// A removed group has no entries (they are its parent's). On a
    /// [NUMA-unaware](LruCacheBuilder::numa_aware) cache, every valid node
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
    /// [`LruCacheBuilder::weigher`]). Locks each shard in turn, for
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
