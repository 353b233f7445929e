use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::*;
use crate::ShrinkRequest;
use crate::{GroupId, Isolate, ShrinkError, ShrinkerRegistry};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn registry(nodes: usize) -> ShrinkerRegistry {
    ShrinkerRegistry::builder().nodes(nodes).build().unwrap()
}

fn cache<V: Send + Sync + 'static>(reg: &ShrinkerRegistry) -> LruCache<u32, V> {
    LruCache::builder("test").build_in(reg).unwrap()
}

fn req(group: GroupId, node: usize, priority: u8) -> ShrinkRequest {
    ShrinkRequest {
        node,
        priority,
        group,
    }
}

/// Counts value drops and catches a value dropped twice.
#[derive(Default)]
struct Ledger {
    drops: AtomicUsize,
    doubles: AtomicUsize,
    seen: Mutex<HashSet<u64>>,
    next: AtomicU64,
}

impl Ledger {
    fn value(self: &Arc<Self>) -> Tracked {
        Tracked {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            ledger: Arc::clone(self),
            bomb: false,
        }
    }
    fn drops(&self) -> usize {
        self.drops.load(Ordering::Relaxed)
    }
    fn doubles(&self) -> usize {
        self.doubles.load(Ordering::Relaxed)
    }
}

struct Tracked {
    id: u64,
    ledger: Arc<Ledger>,
    /// Panic when dropped (after being counted).
    bomb: bool,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.ledger.drops.fetch_add(1, Ordering::Relaxed);
        if !lock(&self.ledger.seen).insert(self.id) {
            self.ledger.doubles.fetch_add(1, Ordering::Relaxed);
        }
        if self.bomb && !std::thread::panicking() {
            panic!("value {} exploded on drop", self.id);
        }
    }
}

#[test]
fn insert_get_remove_replace() {
    let reg = registry(1);
    let c = cache::<&str>(&reg);
    assert_eq!(c.insert(GroupId::ROOT, 1, "a").unwrap(), None);
    assert_eq!(c.insert(GroupId::ROOT, 2, "b").unwrap(), None);
    assert_eq!(c.get(&1).as_deref(), Some(&"a"));
    assert_eq!(c.get(&3), None);
    let old = c.insert(GroupId::ROOT, 1, "A").unwrap();
    assert_eq!(old.as_deref(), Some(&"a"));
    assert_eq!(c.get(&1).as_deref(), Some(&"A"));
    assert_eq!((c.len(), c.group_len(GroupId::ROOT)), (2, 2));
    assert!(c.contains_key(&2));
    assert_eq!(c.remove(&2).as_deref(), Some(&"b"));
    assert_eq!(c.remove(&2), None);
    assert!(!c.contains_key(&2));
    assert_eq!((c.len(), c.group_len(GroupId::ROOT)), (1, 1));
    let s = c.stats();
    assert_eq!(
        (s.inserts, s.replaced, s.removed, s.hits, s.misses, s.evicted),
        (3, 1, 1, 2, 1, 0)
    );
}

#[test]
fn a_held_value_outlives_its_eviction() {
    let reg = registry(1);
    let c = cache::<String>(&reg);
    c.insert(GroupId::ROOT, 1, "kept".into()).unwrap();
    let held = c.get(&1).unwrap();
    // The get bought it one pass.
    assert_eq!(c.evict(0, GroupId::ROOT, 10), Ok(0));
    assert_eq!(c.evict(0, GroupId::ROOT, 10), Ok(1));
    assert!(c.get(&1).is_none());
    assert_eq!(*held, "kept");
}

#[test]
fn replace_moves_the_entry_to_the_new_group() {
    let reg = registry(1);
    let c = cache::<u32>(&reg);
    let (g, h) = (
        reg.create_group(GroupId::ROOT).unwrap(),
        reg.create_group(GroupId::ROOT).unwrap(),
    );
    c.insert(g, 1, 10).unwrap();
    c.insert(h, 1, 11).unwrap();
    assert_eq!((c.group_len(g), c.group_len(h)), (0, 1));
    assert_eq!(reg.shrink(&req(g, 0, 0)), Ok(0));
    assert_eq!(reg.shrink(&req(h, 0, 0)), Ok(1));
    assert!(c.is_empty());
}

#[test]
fn weights_follow_inserts_replacements_removals_and_evictions() {
    let reg = registry(1);
    let c = LruCache::<u32, Vec<u8>>::builder("w")
        .weigher(|_, v| v.len())
        .build_in(&reg)
        .unwrap();
    c.insert(GroupId::ROOT, 1, vec![0; 10]).unwrap();
    c.insert(GroupId::ROOT, 2, vec![0; 20]).unwrap();
    c.insert(GroupId::ROOT, 3, vec![0; 30]).unwrap();
    assert_eq!(c.weight(), 60);
    c.insert(GroupId::ROOT, 2, vec![0; 5]).unwrap();
    assert_eq!(c.weight(), 45);
    c.remove(&3);
    assert_eq!(c.weight(), 15);
    assert_eq!(c.evict(0, GroupId::ROOT, 1), Ok(1)); // key 1: the oldest
    assert_eq!(c.weight(), 5);
    assert!(c.contains_key(&2));
    // Default weigher: 1 each.
    let d = cache::<Vec<u8>>(&reg);
    d.insert(GroupId::ROOT, 1, vec![0; 100]).unwrap();
    d.insert(GroupId::ROOT, 2, vec![0; 100]).unwrap();
    assert_eq!(d.weight(), 2);
}

/// The keys of 0..n still in the cache.
fn left(c: &LruCache<u32, u32>, n: u32) -> Vec<u32> {
    (0..n).filter(|k| c.contains_key(k)).collect()
}

#[test]
fn eviction_gives_referenced_entries_a_second_chance() {
    let reg = registry(1);
    let c = cache::<u32>(&reg);
    for k in 0..10 {
        c.insert(GroupId::ROOT, k, k).unwrap();
    }
    assert!(c.get(&0).is_some());
    assert!(c.get(&3).is_some());
    // A replacement is a new entry: at the tail, its bit clear.
    c.insert(GroupId::ROOT, 5, 55).unwrap();
    // List: 0* 1 2 3* 4 6 7 8 9 5 (* referenced).
    // The budget pays for the rotation of 0 too: one eviction.
    assert_eq!(c.evict(0, GroupId::ROOT, 2), Ok(1));
    assert_eq!(left(&c, 10), [0, 2, 3, 4, 5, 6, 7, 8, 9]);
    // List: 2 3* 4 6 7 8 9 5 0. peek and contains_key set no bit.
    assert!(c.peek(&4).is_some() && c.contains_key(&2));
    assert_eq!(c.evict(0, GroupId::ROOT, 3), Ok(2));
    assert_eq!(left(&c, 10), [0, 3, 5, 6, 7, 8, 9]);
    // List: 6 7 8 9 5 0 3, all bits clear.
    assert!(c.get(&9).is_some());
    assert_eq!(c.evict(0, GroupId::ROOT, 4), Ok(3));
    assert_eq!(left(&c, 10), [0, 3, 5, 9]);
    // List: 5 0 3 9: 9's bit was cleared when it was rotated.
    assert_eq!(c.evict(0, GroupId::ROOT, 3), Ok(3));
    assert_eq!(left(&c, 10), [9]);
    assert_eq!(c.stats().evicted, 9);
    assert_eq!(c.len(), c.group_len(GroupId::ROOT));
}

#[test]
fn a_get_protects_an_entry_from_the_next_reclaim_pass() {
    let reg = registry(1);
    let c = cache::<u32>(&reg);
    for k in 0..10 {
        c.insert(GroupId::ROOT, k, k).unwrap();
    }
    assert!(c.get(&3).is_some());
    // Priority 1 over 10 entries: one scan of (10 >> 1) * 4 / 2 = 10 items,
    // one pass. 3 is rotated, the rest evicted.
    assert_eq!(reg.shrink(&req(GroupId::ROOT, 0, 1)), Ok(9));
    assert_eq!(left(&c, 10), [3]);
    assert_eq!(c.shrinker_stats().scanned, 10, "the rotation was scanned");
    // The pass cleared its bit: the next one evicts it.
    assert_eq!(reg.shrink(&req(GroupId::ROOT, 0, 0)), Ok(1));
    assert!(c.is_empty());
}

#[test]
fn a_pass_over_referenced_entries_frees_nothing_but_clears_their_bits() {
    let reg = registry(1);
    let c = cache::<u32>(&reg);
    for k in 0..8 {
        c.insert(GroupId::ROOT, k, k).unwrap();
        assert!(c.get(&k).is_some());
    }
    assert_eq!(c.evict(0, GroupId::ROOT, 8), Ok(0));
    assert_eq!(c.len(), 8);
    assert_eq!(c.evict(0, GroupId::ROOT, 8), Ok(8));
    // A budget that outlasts the list meets the rotated entries again, now
    // unreferenced, as the kernel's walk does.
    for k in 0..4 {
        c.insert(GroupId::ROOT, k, k).unwrap();
        assert!(c.get(&k).is_some());
    }
    assert_eq!(c.evict(0, GroupId::ROOT, 8), Ok(4));
    assert!(c.is_empty());
}

#[test]
fn get_takes_no_list_lock() {
    let reg = registry(1);
    let c = cache::<u32>(&reg);
    c.insert(GroupId::ROOT, 1, 10).unwrap();
    c.insert(GroupId::ROOT, 2, 20).unwrap();
    // Inside an isolate callback the list's lock is held, and taking it
    // again panics (ListLru's misuse check): a get here must not.
    let mut budget = 1;
    let out = c.inner.lru.walk(0, GroupId::ROOT, &mut budget, |_| {
        assert_eq!(c.get(&1).as_deref(), Some(&10));
        assert_eq!(c.get(&2).as_deref(), Some(&20));
        assert!(c.get(&3).is_none());
        Isolate::Skip
    });
    assert!(out.is_empty());
    assert_eq!((c.stats().hits, c.stats().misses), (2, 1));
}

#[test]
fn reclaim_of_one_group_touches_only_that_group() {
    let reg = registry(1);
    let c = cache::<u32>(&reg);
    let (g, h) = (
        reg.create_group(GroupId::ROOT).unwrap(),
        reg.create_group(GroupId::ROOT).unwrap(),
    );
    for k in 0..30 {
        c.insert(g, k, k).unwrap();
        c.insert(h, 100 + k, k).unwrap();
        c.insert(GroupId::ROOT, 200 + k, k).unwrap();
    }
    assert_eq!(reg.shrink(&req(g, 0, 0)), Ok(30));
    assert_eq!(
        (c.group_len(g), c.group_len(h), c.group_len(GroupId::ROOT)),
        (0, 30, 30)
    );
    assert!((0..30).all(|k| !c.contains_key(&k) && c.contains_key(&(100 + k))));
    // Root reclaim reclaims the root group's entries only.
    assert_eq!(reg.shrink(&req(GroupId::ROOT, 0, 0)), Ok(30));
    assert_eq!(c.len(), 30);
}

#[test]
fn reclaim_from_gentle_to_priority_0_empties_a_group() {
    let reg = registry(1);
    let c = cache::<u32>(&reg);
    let g = reg.create_group(GroupId::ROOT).unwrap();
    let n = if cfg!(miri) { 300 } else { 5000 };
    for k in 0..n {
        c.insert(g, k, k).unwrap();
    }
    let mut freed = 0;
    for priority in (0..=12).rev() {
        let f = reg.shrink(&req(g, 0, priority)).unwrap();
        if priority == 12 {
            assert!(f < n as usize / 100, "gentle: {f}");
        }
        freed += f;
    }
    let mut calls = 0;
    while c.group_len(g) > 0 {
        freed += reg.shrink(&req(g, 0, 0)).unwrap();
        calls += 1;
        assert!(calls < 10, "priority 0 makes progress");
    }
    assert_eq!(freed, n as usize);
    assert!(c.is_empty() && c.weight() == 0);
    assert_eq!(c.stats().evicted, u64::from(n));
    assert_eq!(c.shrinker_stats().freed, u64::from(n));
}

#[test]
fn an_emptied_group_is_found_again_after_new_inserts() {
    let reg = registry(1);
    let c = cache::<u32>(&reg);
    let g = reg.create_group(GroupId::ROOT).unwrap();
    let id = c.shrinker_id();
    c.insert(g, 1, 1).unwrap();
    assert!(reg.test_bit(g, 0, id));
    assert_eq!(reg.shrink(&req(g, 0, 0)), Ok(1));
    // The next walk sees Empty and clears the bit.
    assert_eq!(reg.shrink(&req(g, 0, 0)), Ok(0));
    assert!(!reg.test_bit(g, 0, id));
    c.insert(g, 2, 2).unwrap();
    assert!(reg.test_bit(g, 0, id));
    assert_eq!(reg.shrink(&req(g, 0, 0)), Ok(1));
}

#[test]
fn numa_aware_entries_are_reclaimed_on_their_node() {
    let reg = registry(2);
    let c = LruCache::<u32, u32>::builder("numa")
        .numa_aware(true)
        .build_in(&reg)
        .unwrap();
    let g = reg.create_group(GroupId::ROOT).unwrap();
    for k in 0..10 {
        c.insert_on(1, g, k, k).unwrap();
    }
    c.insert_on(0, g, 99, 99).unwrap();
    assert_eq!(reg.shrink(&req(g, 0, 0)), Ok(1));
    assert_eq!(c.group_len(g), 10);
    assert_eq!(reg.shrink(&req(g, 1, 0)), Ok(10));
    assert!(c.is_empty());
}

#[test]
fn group_removal_moves_entries_to_the_parent_reachable_and_reclaimable() {
    let reg = registry(2);
    let c = LruCache::<u32, u32>::builder("numa")
        .numa_aware(true)
        .build_in(&reg)
        .unwrap();
    let id = c.shrinker_id();
    let g1 = reg.create_group(GroupId::ROOT).unwrap();
    let g2 = reg.create_group(g1).unwrap();
    // Empty g1 and let a walk clear its bits: only the move can set them.
    c.insert(g1, 1000, 0).unwrap();
    for node in 0..2 {
        for _ in 0..2 {
            reg.shrink(&req(g1, node, 0)).unwrap();
        }
        assert!(!reg.test_bit(g1, node, id));
    }
    for k in 0..20 {
        c.insert_on((k % 2) as usize, g2, k, k).unwrap();
    }
    c.insert(g1, 500, 500).unwrap();
    assert!(c.get(&0).is_some());
    reg.remove_group(g2).unwrap();
    assert_eq!((c.group_len(g2), c.group_len(g1)), (0, 21));
    assert!(reg.test_bit(g1, 1, id), "set by the move's notify");
    assert!((0..20).all(|k| c.get(&k).as_deref() == Some(&k)));
    assert_eq!(c.remove(&7).as_deref(), Some(&7));
    assert_eq!(
        c.insert(g2, 1, 1).unwrap_err().kind(),
        CacheError::NoSuchGroup { group: g2 }
    );
    // Reclaimed with g1's own (the ListLru splices the moved items after
    // them).
    let freed = reg.shrink(&req(g1, 0, 0)).unwrap() + reg.shrink(&req(g1, 1, 0)).unwrap();
    assert_eq!(freed, 20);
    assert_eq!(c.group_len(g1), 0);
    c.insert(g1, 500, 500).unwrap();
    // And on to the root.
    reg.remove_group(g1).unwrap();
    assert_eq!(c.group_len(GroupId::ROOT), 1);
    assert_eq!(c.get(&500).as_deref(), Some(&500));
    assert_eq!(reg.shrink(&req(GroupId::ROOT, 0, 0)), Ok(1));
    assert!(c.is_empty());
}

#[test]
fn unknown_nodes_and_groups_are_typed_errors() {
    let reg = registry(2);
    let ledger = Arc::new(Ledger::default());
    let gone = reg.create_group(GroupId::ROOT).unwrap();
    reg.remove_group(gone).unwrap();
    // Removed before the cache existed: it never saw the removal.
    let c = cache::<Tracked>(&reg);
    let Err(e) = c.insert(gone, 1, ledger.value()) else {
        panic!("inserted into a removed group")
    };
    assert_eq!(e.kind(), CacheError::NoSuchGroup { group: gone });
    assert_eq!((*e.key(), e.value().id), (1, 0), "handed back unchanged");
    assert_eq!(ledger.drops(), 0);
    drop(e);
    assert_eq!(ledger.drops(), 1);
    let Err(e) = c.insert_on(2, GroupId::ROOT, 7, ledger.value()) else {
        panic!("inserted on a missing node")
    };
    assert_eq!(
        CacheError::from(e),
        CacheError::InvalidNode {
            node: 2,
            nr_nodes: 2
        }
    );
    // A group of another registry that this one never had.
    let other = registry(1);
    let mut foreign = GroupId::ROOT;
    for _ in 0..3 {
        foreign = other.create_group(foreign).unwrap();
    }
    assert!(matches!(
        c.insert(foreign, 1, ledger.value()).map_err(|e| e.kind()),
        Err(CacheError::NoSuchGroup { .. })
    ));
    assert_eq!(
        c.get_or_insert_with(foreign, 1, || unreachable!("f runs after the check"))
            .err(),
        Some(CacheError::NoSuchGroup { group: foreign })
    );
    assert_eq!(
        c.evict(5, GroupId::ROOT, 1),
        Err(CacheError::InvalidNode {
            node: 5,
            nr_nodes: 2
        })
    );
    assert_eq!(c.evict(0, gone, 10), Ok(0));
    assert_eq!(c.group_len(gone), 0);
    assert!(c.is_empty());
    assert_eq!((ledger.drops(), ledger.doubles()), (3, 0), "values dropped");
    assert_eq!(c.stats().inserts, 0);
}

#[test]
fn a_panicking_weigher_changes_nothing() {
    let reg = registry(1);
    let ledger = Arc::new(Ledger::default());
    let c = LruCache::<u32, Tracked>::builder("w")
        .weigher(|k, _| {
            assert_ne!(*k, 13, "weigher refuses 13");
            2
        })
        .build_in(&reg)
        .unwrap();
    c.insert(GroupId::ROOT, 1, ledger.value()).unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| {
        c.insert(GroupId::ROOT, 13, ledger.value())
    }));
    assert!(r.is_err());
    assert_eq!((c.len(), c.weight(), c.group_len(GroupId::ROOT)), (1, 2, 1));
    assert_eq!(
        ledger.drops(),
        1,
        "the refused value was dropped by the unwind"
    );
    c.insert(GroupId::ROOT, 2, ledger.value()).unwrap();
    assert_eq!(reg.shrink(&req(GroupId::ROOT, 0, 0)), Ok(2));
    assert_eq!((ledger.drops(), ledger.doubles()), (3, 0));
}

#[test]
fn a_value_panicking_on_drop_during_reclaim_leaves_the_cache_consistent() {
    let reg = registry(1);
    let ledger = Arc::new(Ledger::default());
    let c = cache::<Tracked>(&reg);
    for k in 0..10 {
        let mut v = ledger.value();
        v.bomb = k == 3;
        c.insert(GroupId::ROOT, k, v).unwrap();
    }
    // The panic is caught by the registry and counted.
    let _ = reg.shrink(&req(GroupId::ROOT, 0, 0)).unwrap();
    assert_eq!(c.shrinker_stats().panics, 1);
    assert_eq!((ledger.drops(), ledger.doubles()), (10, 0));
    assert_eq!((c.len(), c.weight(), c.group_len(GroupId::ROOT)), (0, 0, 0));
    assert_eq!(c.stats().evicted, 10);
    // Still usable: no lock was held across the panic.
    c.insert(GroupId::ROOT, 1, ledger.value()).unwrap();
    assert!(c.get(&1).is_some());
    assert_eq!(reg.shrink(&req(GroupId::ROOT, 0, 0)), Ok(1));
}

#[test]
fn dropping_the_cache_unregisters_and_drops_every_value_once() {
    let reg = registry(1);
    let ledger = Arc::new(Ledger::default());
    let g = reg.create_group(GroupId::ROOT).unwrap();
    let c = cache::<Tracked>(&reg);
    assert_eq!(reg.len(), 1);
    for k in 0..20 {
        c.insert(
            if k % 2 == 0 { g } else { GroupId::ROOT },
            k,
            ledger.value(),
        )
        .unwrap();
    }
    let held = c.get(&4).unwrap();
    drop(c);
    assert_eq!(reg.len(), 0);
    assert_eq!(
        ledger.drops(),
        19,
        "all but the held one: no cycle kept them"
    );
    drop(held);
    assert_eq!((ledger.drops(), ledger.doubles()), (20, 0));
    // The registry's observer of the dropped cache is dead, not dangling.
    reg.remove_group(g).unwrap();
}

#[test]
fn concurrent_inserts_gets_removals_reclaim_and_group_churn_conserve_values() {
    torture(None, false);
}

#[test]
fn concurrent_numa_aware_inserts_gets_removals_reclaim_and_churn_conserve_values() {
    torture(None, true);
}

#[test]
fn concurrent_capped_inserts_conserve_values_and_the_running_total() {
    torture(Some(if cfg!(miri) { 4 } else { 64 }), false);
}

/// Two workers insert (into groups being removed, too), get and remove;
/// a reclaimer shrinks; a churner replaces groups. Then every value must be
/// accounted for exactly once.
fn torture(max_weight: Option<usize>, numa_aware: bool) {
    const SLOTS: usize = 3;
    let (threads_ops, keys, cap) = if cfg!(miri) {
        (40, 16u32, Duration::from_secs(60))
    } else {
        (100_000, 512u32, Duration::from_secs(3))
    };
    let reg = registry(2);
    let ledger = Arc::new(Ledger::default());
    let mut b = LruCache::builder("torture").batch(8).numa_aware(numa_aware);
    if let Some(w) = max_weight {
        b = b.max_weight(w);
    }
    let c: LruCache<u32, Tracked> = b.build_in(&reg).unwrap();
    let groups: Mutex<Vec<GroupId>> = Mutex::new(
        (0..SLOTS)
            .map(|_| reg.create_group(GroupId::ROOT).unwrap())
            .collect(),
    );
    let workers = AtomicUsize::new(2);
    let (created, failed, returned, lost) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let start = Instant::now();
    let pick = |seed: &mut u64| {
        // xorshift64
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (c, ledger, groups) = (&c, &ledger, &groups);
            let (created, failed, returned, lost, workers) =
                (&created, &failed, &returned, &lost, &workers);
            s.spawn(move || {
                let mut seed = 0x9e37_79b9_7f4a_7c15 ^ (t + 1);
                for _ in 0..threads_ops {
                    if start.elapsed() > cap {
                        break;
                    }
                    let r = pick(&mut seed);
                    let k = (r >> 8) as u32 % keys;
                    let g = || match (r >> 40) as usize % (SLOTS + 1) {
                        SLOTS => GroupId::ROOT,
                        i => lock(groups)[i],
                    };
                    let node = (r >> 50) as usize % 2;
                    match r % 8 {
                        0..=2 => {
                            created.fetch_add(1, Ordering::Relaxed);
                            match c.insert_on(node, g(), k, ledger.value()) {
                                Ok(Some(_)) => {
                                    returned.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(None) => {}
                                Err(e) if matches!(e.kind(), CacheError::NoSuchGroup { .. }) => {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => panic!("{e}"),
                            }
                        }
                        3 => {
                            let made = std::cell::Cell::new(None);
                            let got = c.get_or_insert_with_on(node, g(), k, || {
                                created.fetch_add(1, Ordering::Relaxed);
                                let v = ledger.value();
                                made.set(Some(v.id));
                                v
                            });
                            match (got, made.get()) {
                                // Computed, but another insert won.
                                (Ok(v), Some(id)) if v.id != id => {
                                    lost.fetch_add(1, Ordering::Relaxed);
                                }
                                (Ok(_), _) => {}
                                (Err(CacheError::NoSuchGroup { .. }), None) => {}
                                (Err(e), made) => panic!("{e}, computed {made:?}"),
                            }
                        }
                        4..=6 => drop(c.get(&k)),
                        _ => {
                            if c.remove(&k).is_some() {
                                returned.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                workers.fetch_sub(1, Ordering::Relaxed);
            });
        }
        // Reclaimer.
        s.spawn(|| {
            let mut seed = 0xdead_beef_u64;
            while workers.load(Ordering::Relaxed) > 0 {
                let r = pick(&mut seed);
                let g = match (r >> 8) as usize % (SLOTS + 1) {
                    SLOTS => GroupId::ROOT,
                    i => lock(&groups)[i],
                };
                let req = req(g, (r >> 20) as usize % 2, (r % 6) as u8);
                match reg.shrink(&req) {
                    Ok(_) | Err(ShrinkError::NoSuchGroup { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
                std::thread::yield_now();
            }
        });
        // Group churn: replace a slot's group with a new one, then remove
        // the old one while inserters may still be using it.
        s.spawn(|| {
            let mut i = 0;
            while workers.load(Ordering::Relaxed) > 0 {
                let fresh = reg.create_group(GroupId::ROOT).unwrap();
                let old = std::mem::replace(&mut lock(&groups)[i % SLOTS], fresh);
                reg.remove_group(old).unwrap();
                i += 1;
                std::thread::yield_now();
            }
        });
    });
    let (created, failed, returned, lost) = (
        created.into_inner(),
        failed.into_inner(),
        returned.into_inner(),
        lost.into_inner(),
    );
    let st = c.stats();
    eprintln!(
        "created {created}, refused {failed}, lost {lost}, returned {returned}, {st:?}, {} left",
        c.len()
    );
    // Values refused or computed in vain were never in the cache.
    let failed = failed + lost;
    assert_eq!(ledger.doubles(), 0, "no value dropped twice");
    // Conservation: each value is in the cache, or was refused, returned to
    // a caller (and dropped) or evicted.
    assert_eq!(st.inserts as usize, created - failed);
    assert_eq!(st.replaced + st.removed, returned as u64);
    assert_eq!(
        st.evicted as usize + returned + c.len(),
        created - failed,
        "every inserted value is in the cache, returned or evicted"
    );
    assert_eq!(ledger.drops() + c.len(), created);
    if let Some(l) = &c.inner.limit {
        assert_eq!(l.total.load(Ordering::Relaxed), c.weight(), "running total");
    }
    // Every entry is on exactly one live group's list: none is stranded on
    // a removed group.
    let live: usize = reg
        .groups_under(GroupId::ROOT)
        .iter()
        .map(|&g| c.group_len(g))
        .sum();
    assert_eq!(live, c.len());
    // And group reclaim reaches all of them (their bits are set).
    for g in reg.groups_under(GroupId::ROOT) {
        for node in 0..2 {
            for _ in 0..3 {
                reg.shrink(&req(g, node, 0)).unwrap();
            }
        }
    }
    assert!(c.is_empty(), "{} entries escaped reclaim", c.len());
    assert_eq!(ledger.drops(), created);
    drop(c);
    assert_eq!((ledger.drops(), ledger.doubles()), (created, 0));
}

#[test]
fn max_weight_evicts_the_inserting_groups_least_recent_entries() {
    let reg = registry(1);
    let (g, h) = (
        reg.create_group(GroupId::ROOT).unwrap(),
        reg.create_group(GroupId::ROOT).unwrap(),
    );
    let c = LruCache::<u32, u32>::builder("capped")
        .weigher(|_, v| *v as usize)
        .max_weight(10)
        .build_in(&reg)
        .unwrap();
    for k in 0..5 {
        c.insert(g, k, 2).unwrap();
    }
    assert_eq!(c.weight(), 10);
    assert!(c.get(&0).is_some()); // protect the oldest
    c.insert(g, 5, 3).unwrap(); // 13: evict 1 and 2 (4), down to 9
    let left = |c: &LruCache<u32, u32>| (0..8).filter(|k| c.contains_key(k)).collect::<Vec<_>>();
    assert_eq!(left(&c), [0, 3, 4, 5]);
    assert_eq!((c.weight(), c.stats().evicted), (9, 2));
    // h holds only its new entry: it cannot pay, and g is not charged.
    c.insert(h, 6, 4).unwrap();
    assert_eq!(left(&c), [0, 3, 4, 5, 6]);
    assert_eq!(c.weight(), 13);
    // Its next insert pays with h's own older entry.
    c.insert(h, 7, 1).unwrap();
    assert_eq!(left(&c), [0, 3, 4, 5, 7]);
    assert_eq!(c.weight(), 10);
    // A replacement and a removal keep the total right.
    c.insert(g, 5, 1).unwrap();
    c.remove(&0);
    assert_eq!(c.weight(), 6);
    assert_eq!(reg.shrink(&req(g, 0, 0)), Ok(3));
    assert_eq!(c.weight(), 1);
    c.insert(h, 8, 9).unwrap(); // 10: at the capacity, nothing evicted
    assert_eq!(left(&c), [7]);
    assert!(c.contains_key(&8));
}

#[test]
fn numa_unaware_entries_are_reclaimed_under_any_nodes_pressure() {
    let reg = registry(3);
    let c = cache::<u32>(&reg);
    let id = c.shrinker_id();
    assert!(!reg.shrinkers()[0].flags.numa_aware);
    let g = reg.create_group(GroupId::ROOT).unwrap();
    // insert_on checks the node, then places on node 0.
    c.insert_on(2, GroupId::ROOT, 1, 1).unwrap();
    c.insert_on(1, g, 2, 2).unwrap();
    c.insert(g, 3, 3).unwrap();
    assert_eq!(
        c.insert_on(3, g, 4, 4).unwrap_err().kind(),
        CacheError::InvalidNode {
            node: 3,
            nr_nodes: 3
        }
    );
    assert_eq!(c.inner.lru.count_node(0), 3);
    // The group's bit is set on every node, so group reclaim on any node
    // calls the shrinker (with node 0).
    assert!((0..3).all(|n| reg.test_bit(g, n, id)));
    assert_eq!(reg.shrink(&req(g, 2, 0)), Ok(2));
    assert_eq!(reg.shrink(&req(GroupId::ROOT, 1, 0)), Ok(1));
    assert!(c.is_empty());
    // Emptied: walks on each node clear that node's bit; an insert sets
    // them all again.
    for n in 0..3 {
        assert_eq!(reg.shrink(&req(g, n, 0)), Ok(0));
    }
    assert!((0..3).all(|n| !reg.test_bit(g, n, id)));
    c.insert_on(1, g, 5, 5).unwrap();
    assert!((0..3).all(|n| reg.test_bit(g, n, id)));
    // evict of any valid node means node 0's lists.
    assert_eq!(c.evict(2, g, 5), Ok(1));
    assert_eq!(
        c.evict(3, g, 5),
        Err(CacheError::InvalidNode {
            node: 3,
            nr_nodes: 3
        })
    );
    // Group removal moves them to the parent, whose bits are set on every
    // node too.
    let h = reg.create_group(g).unwrap();
    c.insert(h, 6, 6).unwrap();
    reg.remove_group(h).unwrap();
    assert!((0..3).all(|n| reg.test_bit(g, n, id)));
    assert_eq!(reg.shrink(&req(g, 1, 0)), Ok(1));
}

#[test]
fn get_or_insert_with_computes_on_a_miss_only() {
    let reg = registry(1);
    let ledger = Arc::new(Ledger::default());
    let c = LruCache::<u32, Tracked>::builder("w")
        .weigher(|_, _| 3)
        .build_in(&reg)
        .unwrap();
    let calls = AtomicUsize::new(0);
    let make = || {
        calls.fetch_add(1, Ordering::Relaxed);
        ledger.value()
    };
    let a = c.get_or_insert_with(GroupId::ROOT, 1, make).unwrap();
    let b = c.get_or_insert_with(GroupId::ROOT, 1, make).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    let s = c.stats();
    assert_eq!((s.misses, s.hits, s.inserts), (1, 1, 1));
    assert_eq!((c.len(), c.weight()), (1, 3));
    // A hit is a use: the entry survives one pass.
    assert_eq!(c.evict(0, GroupId::ROOT, 1), Ok(0));
    assert_eq!(c.evict(0, GroupId::ROOT, 1), Ok(1));
    drop((a, b));
    assert_eq!((ledger.drops(), ledger.doubles()), (1, 0));
}

#[test]
fn get_or_insert_with_losing_a_race_returns_the_winner_and_drops_its_value() {
    let reg = registry(1);
    let ledger = Arc::new(Ledger::default());
    let c = cache::<Tracked>(&reg);
    // `f` runs with no lock held: it may use the cache, here to play the
    // thread that inserts the key meanwhile.
    let got = c
        .get_or_insert_with(GroupId::ROOT, 7, || {
            let winner = ledger.value();
            assert!(c.insert(GroupId::ROOT, 7, winner).unwrap().is_none());
            ledger.value()
        })
        .unwrap();
    assert_eq!(got.id, 0, "the winner's value");
    assert_eq!(ledger.drops(), 1, "ours, dropped");
    let s = c.stats();
    assert_eq!((s.misses, s.hits, s.inserts), (1, 0, 1));
    assert_eq!((c.len(), c.weight(), c.group_len(GroupId::ROOT)), (1, 1, 1));
    // The winner was marked used by our lookup.
    assert_eq!(c.evict(0, GroupId::ROOT, 1), Ok(0));
    // A panicking `f` changes nothing.
    let r = catch_unwind(AssertUnwindSafe(|| {
        c.get_or_insert_with(GroupId::ROOT, 8, || panic!("no value"))
    }));
    assert!(r.is_err());
    assert_eq!((c.len(), c.weight(), c.group_len(GroupId::ROOT)), (1, 1, 1));
    drop((got, c));
    assert_eq!((ledger.drops(), ledger.doubles()), (2, 0));
}

#[test]
fn max_weight_spares_the_new_entry_and_gives_second_chances() {
    let reg = registry(1);
    let c = LruCache::<u32, u32>::builder("capped")
        .max_weight(4)
        .build_in(&reg)
        .unwrap();
    for k in 0..4 {
        c.insert(GroupId::ROOT, k, k).unwrap();
        assert!(c.get(&k).is_some());
    }
    // Over by one, every older entry referenced: the first pass only
    // rotates (and clears their bits), the second evicts the oldest. The
    // new entry, now ahead of them on the list, is skipped.
    c.insert(GroupId::ROOT, 4, 4).unwrap();
    assert_eq!(left(&c, 5), [1, 2, 3, 4]);
    // List: 4 1 2 3. The next insert evicts 4 (the oldest, unreferenced).
    c.insert(GroupId::ROOT, 5, 5).unwrap();
    assert_eq!(left(&c, 6), [1, 2, 3, 5]);
    assert_eq!(c.stats().evicted, 2);
    assert_eq!(
        c.inner
            .limit
            .as_ref()
            .map(|l| l.total.load(Ordering::Relaxed)),
        Some(4)
    );
}

#[test]
fn insert_error_converts_with_question_mark() {
    fn boxed(c: &LruCache<u32, String>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        c.insert_on(5, GroupId::ROOT, 1, "x".into())?;
        Ok(())
    }
    fn typed(c: &LruCache<u32, String>) -> Result<(), CacheError> {
        c.insert_on(5, GroupId::ROOT, 1, "x".into())?;
        Ok(())
    }
    let reg = registry(1);
    let c = LruCache::<u32, String>::builder("e")
        .build_in(&reg)
        .unwrap();
    let e = boxed(&c).unwrap_err();
    assert_eq!(e.to_string(), "node 5 does not exist (the registry has 1)");
    assert_eq!(
        typed(&c),
        Err(CacheError::InvalidNode {
            node: 5,
            nr_nodes: 1
        })
    );
    let e = c.insert_on(5, GroupId::ROOT, 1, "x".into()).unwrap_err();
    assert_eq!(
        format!("{e:?}"),
        "InsertError { kind: InvalidNode { node: 5, nr_nodes: 1 }, .. }"
    );
}
