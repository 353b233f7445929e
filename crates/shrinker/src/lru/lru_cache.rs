//! [`LruCache<K, V>`]: a ready-made shrinkable key → value cache, the
//! kernel's dentry/inode-cache pattern (`d_lru_add`, `DCACHE_REFERENCED`
//! and `prune_dcache_sb` behind `super_cache_count` / `super_cache_scan`)
//! in a few lines of user code.
//!
//! A cache that gives memory back under pressure needs three things this
//! crate provides separately: LRU lists per (node, memory group)
//! ([`ListLru`](crate::ListLru)), a group-aware shrinker whose `count` reads and whose
//! `scan` walks those lists ([`ShrinkerBuilder`](crate::ShrinkerBuilder)), and the seams between
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
//!  LruCache ─┬─ Registered<Reclaim> ─ ─ ─▶ Reclaim(Arc<CacheCore>)   count/scan, called by the registry
//!            └─ Arc<CacheCore> ─┬─ shards: [Shard; 2^k ≥ 16]   (128-byte aligned)
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
//! 2. [`get`](crate::LruCache::get) sets the bit: under the shard's *read* lock, one
//!    Relaxed load and, if the bit was clear, one Relaxed store. No list
//!    lock, no write to a hot entry's line once its bit is set.
//!    [`peek`](crate::LruCache::peek) and [`contains_key`](crate::LruCache::contains_key)
//!    leave it alone.
//! 3. The reclaim walk starts at the head (the entry inserted, or last
//!    rotated, longest ago). An item whose bit is set gets a second chance:
//!    its bit is cleared and it goes to the tail ([`Isolate::Rotate`](crate::Isolate::Rotate), the
//!    kernel's `LRU_ROTATE`). An item whose bit is clear is evicted
//!    ([`Isolate::Removed`](crate::Isolate::Removed)).
//!
//! So a `get` protects an entry from the next reclaim pass that reaches it,
//! not from every pass: the pass clears the bit, and the entry is evicted
//! by a later one unless it is used again meanwhile. Between passes the
//! order of the list is insertion (or rotation) order, not order of use:
//! of two entries used since the last pass, the older insertion goes first
//! next time too. That is the kernel's approximation of LRU, and what
//! "least recently used" means throughout this module.
//!
//! **Rotations cost budget.** [`ListLru::walk`](crate::ListLru::walk) charges `nr_to_walk` before
//! each callback, a rotation included (as the kernel's
//! `list_lru_walk_one` does). A pass over a list whose entries are all
//! referenced, with a budget no larger than the list, frees nothing, but
//! clears every bit it reaches and sends those entries to the tail; the
//! next pass evicts them. (The walk goes on with a rotated item's old
//! successor, so a budget larger than the list meets the rotated entries
//! again, bits clear, and evicts them in the same pass, as the kernel's
//! does.) The shrinker
//! reports the items it walked as scanned and the entries it evicted as
//! freed ([`ShrinkControl::set_nr_scanned`](crate::ShrinkControl::set_nr_scanned)), so the registry sees the
//! rotations as work done; [`evict`](crate::LruCache::evict) returns only the
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
//! The shard lock is a `RwLock`: [`get`](crate::LruCache::get),
//! [`peek`](crate::LruCache::peek), [`contains_key`](crate::LruCache::contains_key),
//! [`len`](crate::LruCache::len) and [`weight`](crate::LruCache::weight) only read the
//! map (the counters and the referenced bit are atomics), so hits on one
//! shard do not wait for each other; writers (insert, remove, the dispose
//! step) take it exclusively. Uncontended, a read lock costs what a mutex
//! costs (one compare-and-swap to take it, one atomic op to release it); the
//! difference is that concurrent hits on a hot shard share it instead of
//! queueing. The counters share the shard's cache lines, which a `get`
//! writes anyway (the lock word). Readers share the map, so `K` must be
//! `Sync` (as `V` already was, for the `Arc<V>`s handed out).
//!
//! Only an insert nests the two locks: it must call [`ListLru::add`](crate::ListLru::add) under
//! the shard lock (see "Why insert nests" below).
//! [`remove`](crate::LruCache::remove) copies the entry's [`LruKey`](crate::LruKey) under the
//! shard lock, drops it, then calls [`ListLru::remove`](crate::ListLru::remove); a key gone stale
//! meanwhile names nothing, so that is exact. `get` takes no list lock at
//! all. The reclaim walk holds a list lock, and its isolate callback takes
//! no lock and calls nothing: it reads and clears the item's bit and
//! answers [`Isolate::Rotate`](crate::Isolate::Rotate) or [`Isolate::Removed`](crate::Isolate::Removed). So the ABBA
//! deadlock of a walk waiting for a shard while an insert holding that
//! shard waits for the list cannot happen.
//!
//! # Reclaim: isolate, then dispose
//!
//! The kernel's dispose-list pattern (`list_lru_shrink_walk` with
//! `dentry_lru_isolate`, then `shrink_dentry_list`):
//!
//! 1. `count`: [`ListLru::count`](crate::ListLru::count) of (node, group), one atomic load; 0 is
//!    [`Count::Empty`](crate::Count::Empty), so that the group walk clears the shrinker's bit
//!    (the store-buffering handshake in groups/mod.rs; the list's notify is the
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
//!    ones included) as scanned ([`ShrinkControl::set_nr_scanned`](crate::ShrinkControl::set_nr_scanned)).
//!
//! This leaves one window, between steps 2 and 3, in which an entry is in
//! the map but on no list. A `get` there returns the value (it sets the bit
//! of an item no list holds any more) and the entry is evicted in step 3
//! all the same; an insert that replaces the entry there wins (its seq
//! differs); a `remove` there takes the entry and its `ListLru::remove`
//! finds nothing. No entry is lost or counted twice.
//!
//! The alternative, dentries' `try_lock` of each object in the callback
//! with [`Isolate::Skip`](crate::Isolate::Skip) on failure, would hold a list lock while probing
//! shards and skip busy entries exactly when the cache is hot; the dispose
//! list probes shards with no list lock held, once per shard per batch.
//!
//! **Why insert nests.** If the item were added to the list before the entry
//! was in the map, a walk could isolate it and its dispose find no entry;
//! the entry inserted after would carry a stale [`LruKey`](crate::LruKey) and never be
//! reclaimed. With the add under the shard lock, a dispose of the new item
//! waits for the shard and finds the entry.
//!
//! # Memory groups
//!
//! * **Insert into a group** checks that the group and node exist, without a
//!   lock, by setting the shrinker's bit for (group, node)
//!   ([`ShrinkerRegistry::set_shrinker_bit`](crate::ShrinkerRegistry::set_shrinker_bit): an RCU lookup and a load; the
//!   first bit of a (group, node) allocates its unit). A group that does not
//!   exist (removed, or never created here) is [`CacheError::NoSuchGroup`]
//!   and nothing is inserted. (A [`GroupId`](crate::GroupId) is an index: one from another
//!   registry names whichever group has that index here, if any.) Setting the bit early
//!   is harmless: a walk that finds the list still empty clears it, and the
//!   list's notify sets it again once the item is there.
//! * **A group removed concurrently**, after the check: the item lands on the
//!   group's list before the cache's `ListLru` is reparented (it moves with
//!   the rest) or after (then [`ListLru::add`](crate::ListLru::add) redirects it to the parent,
//!   as the kernel redirects a racing `list_lru_add`). The registry calls
//!   observers only after unpublishing the group, and the cache observes
//!   from before its first insert, so a check that passed comes before the
//!   observer call: no entry is stranded on a dead group.
//! * **Removal** reparents the cache's lists into the parent
//!   ([`GroupObserver`](crate::GroupObserver), implemented by [`ListLru`](crate::ListLru)). Keys stay valid, so
//!   reparented entries stay reachable by `get` and `remove`, and are
//!   reclaimed with the parent's; their referenced bits move with them.
//!   [`group_len`](crate::LruCache::group_len) of the removed group is 0.
//! * **Root reclaim** ([`ShrinkRequest`](crate::ShrinkRequest) with [`GroupId::ROOT`](crate::GroupId::ROOT)) reclaims the
//!   root group's entries only, as every group-aware shrinker does; reclaim
//!   a subtree by shrinking each of
//!   [`groups_under`](crate::ShrinkerRegistry::groups_under).
//!
//! # Capacity
//!
//! Memory pressure is the shrinker's business, but a cache may also have a
//! size of its own: [`max_weight`](crate::LruCacheBuilder::max_weight). It is a
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
//! (O(nodes), once per such transition). [`insert_on`](crate::LruCache::insert_on)
//! still checks its node, then places the entry on node 0, and
//! [`evict`](crate::LruCache::evict) of any valid node evicts from node 0's lists.
//!
//! With [`numa_aware(true)`](crate::LruCacheBuilder::numa_aware), `insert_on`
//! places entries on the node given, the shrinker is NUMA-aware, and
//! reclaim on a node evicts that node's entries only;
//! [`insert`](crate::LruCache::insert) and
//! [`get_or_insert_with`](crate::LruCache::get_or_insert_with) place on node 0
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
//! Dropping the [`LruCache`](crate::LruCache) unregisters the shrinker (waiting for its
//! running `count`/`scan`), which hands back the last other reference to
//! the state; then the map (with every value) and the lists are dropped.
//!
//! # Panics in user code
//!
//! The weigher, and the `f` of [`get_or_insert_with`](crate::LruCache::get_or_insert_with),
//! run before any lock is taken or anything changed: a panic there
//! propagates to the caller and the cache is as before. Values are dropped
//! only outside every lock, after all bookkeeping; a value whose `Drop`
//! panics during reclaim has the panic caught and counted by the registry,
//! and the cache is consistent. `K`'s `Hash`, `Eq`, `Clone` and `Drop` must
//! not panic (as for a `HashMap`): if they do, the cache stays memory-safe
//! but its accounting may drift and an entry may escape reclaim.

mod builder;
mod cache;
mod error;
mod info;
mod store;
#[cfg(test)]
mod tests;

pub use builder::LruCacheBuilder;
pub use cache::LruCache;
pub use error::{CacheError, InsertError};
pub use info::CacheStats;
