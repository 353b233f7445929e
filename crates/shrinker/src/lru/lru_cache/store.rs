//! The cache's storage: sharded maps of entries over a [`ListLru`] of items,
//! the capacity, and the shrinker (`Reclaim`) that evicts from it.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{Count, GroupId, Isolate, ListLru, LruKey, Scan, Shrink, ShrinkControl};

use super::error::CacheError;

pub(super) type Weigher<K, V> = Box<dyn Fn(&K, &V) -> usize + Send + Sync>;

/// The referenced bit of one insertion, shared by its map entry and its
/// list item (module doc, "Recency"). Every access is Relaxed.
pub(super) type Referenced = Arc<AtomicBool>;

/// Set the referenced bit (module doc, "Recency", step 2).
#[inline]
pub(super) fn mark_referenced(bit: &AtomicBool) {
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
pub(super) fn second_chance(bit: &AtomicBool) -> Isolate {
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
pub(super) struct Item<K> {
    pub(super) key: K,
    pub(super) seq: u64,
    pub(super) weight: usize,
    pub(super) referenced: Referenced,
}

/// A map entry.
///
/// # Invariants
///
/// `lru` was returned by the `ListLru::add` of the item `(key, seq)`, made
/// under the shard lock together with the entry's insertion; that item
/// holds the same `referenced`.
pub(super) struct Entry<V> {
    pub(super) lru: LruKey,
    pub(super) seq: u64,
    pub(super) weight: usize,
    pub(super) referenced: Referenced,
    pub(super) value: Arc<V>,
}

/// One shard, alone on its cache lines: its map and, beside it, its
/// counters (atomics, so that a `get` under the read lock can count).
#[repr(align(128))]
pub(super) struct Shard<K, V> {
    pub(super) state: RwLock<ShardState<K, V>>,
    pub(super) stats: ShardStats,
}

/// # Invariants
///
/// `weight` is the wrapping sum of the entries' weights; `next_seq` is
/// greater than every entry's and every live item's `seq` of this shard.
pub(super) struct ShardState<K, V> {
    pub(super) map: HashMap<K, Entry<V>>,
    pub(super) next_seq: u64,
    pub(super) weight: usize,
}

/// A shard's share of [`CacheStats`]. Relaxed everywhere: counters that
/// publish nothing; a snapshot may be torn across fields.
#[derive(Default)]
pub(super) struct ShardStats {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) inserts: AtomicU64,
    pub(super) replaced: AtomicU64,
    pub(super) removed: AtomicU64,
    pub(super) evicted: AtomicU64,
}

/// Count one event.
#[inline]
pub(super) fn bump(counter: &AtomicU64) {
    // Relaxed: see `ShardStats`.
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The state shared by the cache handle and its shrinker.
pub(super) struct CacheCore<K, V> {
    pub(super) shards: Box<[Shard<K, V>]>,
    /// Chooses the shard (bits 32.. of its hash: independent of the bits
    /// each shard's own map uses for buckets and tags).
    pub(super) hasher: RandomState,
    pub(super) lru: Arc<ListLru<Item<K>>>,
    pub(super) weigher: Option<Weigher<K, V>>,
    pub(super) limit: Option<Limit>,
    /// Entries are placed per node (module doc, "Nodes"); else on node 0.
    pub(super) numa_aware: bool,
    /// Bytes per unit of weight, for the scans' byte reports (`None`:
    /// unknown; `LruCacheBuilder::bytes_per_weight`).
    pub(super) bytes_per_weight: Option<usize>,
}

/// The capacity and the running total it is checked against (module doc,
/// "Capacity").
pub(super) struct Limit {
    pub(super) max: usize,
    /// The wrapping sum of the entries' weights. Relaxed everywhere: a
    /// number for a heuristic, publishing nothing.
    pub(super) total: AtomicUsize,
}

/// Lock a shard for reading. Poisoning carries no information: every
/// critical section leaves the shard consistent before it can call user
/// code that may panic.
#[inline]
pub(super) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Lock a shard for writing; poisoning as in [`read`].
#[inline]
pub(super) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// The outcome of [`CacheCore::place`].
pub(super) enum Placed<K, V> {
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

impl<K, V> CacheCore<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    #[inline]
    pub(super) fn shard_index<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // The mask keeps the index below the power-of-two shard count.
        ((self.hasher.hash_one(key) >> 32) as usize) & (self.shards.len() - 1)
    }

    #[inline]
    pub(super) fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Shard<K, V> {
        &self.shards[self.shard_index(key)]
    }

    /// The node whose lists hold entries asked for on `node` (module doc,
    /// "Nodes"). `node` must be valid.
    #[inline]
    pub(super) fn home(&self, node: usize) -> usize {
        if self.numa_aware {
            node
        } else {
            0
        }
    }

    /// `Err` unless `node` exists.
    #[inline]
    pub(super) fn check_node(&self, node: usize) -> Result<(), CacheError> {
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
    pub(super) fn weigh(&self, key: &K, value: &V) -> usize {
        self.weigher.as_ref().map_or(1, |w| w(key, value))
    }

    /// Add `weight` to, and take `gone` from, the running total (if kept).
    #[inline]
    pub(super) fn account(&self, weight: usize, gone: usize) {
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
    pub(super) fn place(
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
    pub(super) fn enforce_limit(&self, home: usize, group: GroupId, new: &Referenced) {
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
    /// Returns (items walked, entries evicted, their weight).
    pub(super) fn evict(&self, home: usize, group: GroupId, nr: usize) -> (usize, usize, usize) {
        let mut budget = nr;
        // 2. Isolate; the callback takes no lock (lock order, module doc).
        let isolated = self
            .lru
            .walk(home, group, &mut budget, |it| second_chance(&it.referenced));
        let (freed, weight) = self.dispose(isolated);
        (nr - budget, freed, weight)
    }

    /// Steps 3–4: remove the entries the isolated items still name;
    /// returns how many, and their weight.
    pub(super) fn dispose(&self, isolated: Vec<Item<K>>) -> (usize, usize) {
        if isolated.is_empty() {
            return (0, 0);
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
        (freed, gone)
    }
}

/// The shrinker's state: `count` and `scan` of the module doc.
pub(super) struct Reclaim<K, V>(pub(super) Arc<CacheCore<K, V>>);

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
        let (walked, freed, weight) =
            self.0
                .evict(self.0.home(sc.node()), sc.group(), sc.nr_to_scan());
        sc.set_nr_scanned(walked);
        if let Some(bpw) = self.0.bytes_per_weight {
            sc.report_freed_bytes(weight.saturating_mul(bpw));
        }
        Scan::Freed(freed)
    }

    /// The entries' weights in bytes, where the weights are bytes (a
    /// weigher, or `bytes_per_weight`): introspection only.
    fn held_bytes(&self) -> Option<u64> {
        let bpw = self.0.bytes_per_weight?;
        let weight = self
            .0
            .shards
            .iter()
            .fold(0usize, |w, s| w.wrapping_add(read(&s.state).weight));
        Some((weight as u64).saturating_mul(bpw as u64))
    }
}
