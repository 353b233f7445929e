use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::*;

fn gid(i: u32) -> GroupId {
    GroupId::from_index(i)
}

fn contents<T: Clone>(lru: &ListLru<T>, node: usize, group: GroupId) -> Vec<T> {
    let mut budget = usize::MAX;
    let mut seen = Vec::new();
    let out = lru.walk(node, group, &mut budget, |v| {
        seen.push(v.clone());
        Isolate::Skip
    });
    assert!(out.is_empty());
    seen
}

fn filled(n: u32) -> (ListLru<u32>, Vec<LruKey>) {
    let lru = ListLru::new(1);
    let keys = (0..n).map(|v| lru.add(0, GroupId::ROOT, v)).collect();
    (lru, keys)
}

type Calls = Arc<Mutex<Vec<(usize, GroupId)>>>;

fn recording(nodes: usize) -> (ListLru<u32>, Calls) {
    let calls: Calls = Arc::default();
    let sink = calls.clone();
    let lru = ListLru::with_notify(nodes, move |n, g| sink.lock().unwrap().push((n, g)));
    (lru, calls)
}

#[test]
fn add_is_tail_and_walk_is_from_head() {
    let (lru, _) = filled(5);
    assert_eq!(contents(&lru, 0, GroupId::ROOT), [0, 1, 2, 3, 4]);
    assert_eq!(lru.count(0, GroupId::ROOT), 5);
    assert_eq!(lru.len(), 5);
}

#[test]
fn verdict_removed_takes_item_and_goes_on() {
    let (lru, keys) = filled(4);
    let mut budget = 10;
    let out = lru.walk(0, GroupId::ROOT, &mut budget, |v| {
        if *v < 2 {
            Isolate::Removed
        } else {
            Isolate::Skip
        }
    });
    assert_eq!(out, [0, 1]);
    assert_eq!(budget, 6);
    assert_eq!(lru.count(0, GroupId::ROOT), 2);
    assert!(!lru.contains(keys[0]) && lru.contains(keys[2]));
    assert_eq!(lru.remove(keys[1]), None);
}

#[test]
fn verdict_removed_retry_restarts_from_head() {
    let (lru, _) = filled(3);
    let mut seen = Vec::new();
    let mut budget = 10;
    let out = lru.walk(0, GroupId::ROOT, &mut budget, |v| {
        seen.push(*v);
        if *v == 1 {
            Isolate::RemovedRetry
        } else {
            Isolate::Skip
        }
    });
    // 0 skip, 1 removed → restart: 0 skip, 2 skip, end.
    assert_eq!(seen, [0, 1, 0, 2]);
    assert_eq!(out, [1]);
    assert_eq!(budget, 6);
    assert_eq!(contents(&lru, 0, GroupId::ROOT), [0, 2]);
}

#[test]
fn verdict_rotate_moves_to_tail() {
    let (lru, _) = filled(3);
    let mut budget = 1;
    let out = lru.walk(0, GroupId::ROOT, &mut budget, |_| Isolate::Rotate);
    assert!(out.is_empty());
    assert_eq!(contents(&lru, 0, GroupId::ROOT), [1, 2, 0]);
    assert_eq!(lru.count(0, GroupId::ROOT), 3);
    // Rotating everything with budget to spare revisits (as the kernel's
    // list_for_each_safe does) until the budget is spent.
    let mut budget = 5;
    let mut seen = Vec::new();
    lru.walk(0, GroupId::ROOT, &mut budget, |v| {
        seen.push(*v);
        Isolate::Rotate
    });
    assert_eq!(seen, [1, 2, 0, 1, 2]);
    assert_eq!(budget, 0);
}

#[test]
fn verdict_skip_leaves_item() {
    let (lru, _) = filled(3);
    let mut budget = 2;
    let out = lru.walk(0, GroupId::ROOT, &mut budget, |_| Isolate::Skip);
    assert!(out.is_empty());
    assert_eq!(budget, 0);
    assert_eq!(contents(&lru, 0, GroupId::ROOT), [0, 1, 2]);
}

#[test]
fn verdict_retry_forever_terminates_after_budget() {
    let (lru, _) = filled(3);
    let calls = AtomicUsize::new(0);
    let mut budget = 17;
    let out = lru.walk(0, GroupId::ROOT, &mut budget, |v| {
        assert_eq!(*v, 0, "retry restarts from the head");
        calls.fetch_add(1, Ordering::Relaxed);
        Isolate::Retry
    });
    assert!(out.is_empty());
    assert_eq!(calls.load(Ordering::Relaxed), 17);
    assert_eq!(budget, 0);
}

#[test]
fn budget_is_charged_before_the_callback() {
    let (lru, _) = filled(3);
    let mut budget = 3;
    let mut during = Vec::new();
    // Can't read `budget` inside (it is borrowed): count calls instead.
    lru.walk(0, GroupId::ROOT, &mut budget, |v| {
        during.push(*v);
        Isolate::Stop
    });
    assert_eq!(during, [0]);
    assert_eq!(budget, 2, "Stop still cost one unit");
    let mut zero = 0;
    lru.walk(0, GroupId::ROOT, &mut zero, |_| unreachable!("no budget"));
}

#[test]
fn verdict_stop_ends_walk() {
    let (lru, _) = filled(4);
    let mut budget = 10;
    let out = lru.walk(0, GroupId::ROOT, &mut budget, |v| {
        if *v == 2 {
            Isolate::Stop
        } else {
            Isolate::Removed
        }
    });
    assert_eq!(out, [0, 1]);
    assert_eq!(budget, 7);
    assert_eq!(contents(&lru, 0, GroupId::ROOT), [2, 3]);
}

#[test]
fn stale_keys_never_match_a_reused_slot() {
    let (lru, keys) = filled(2);
    assert_eq!(lru.remove(keys[0]), Some(0));
    // The freed slot is reused by the next add.
    let k = lru.add(0, GroupId::ROOT, 10);
    assert_eq!(k.index, keys[0].index);
    assert_ne!(k, keys[0]);
    assert_eq!(lru.remove(keys[0]), None);
    assert!(!lru.touch(keys[0]));
    assert!(!lru.contains(keys[0]));
    assert_eq!(lru.remove(k), Some(10));
    assert_eq!(lru.count(0, GroupId::ROOT), 1);
    // Keys naming nothing at all.
    let bogus = LruKey { node: 7, ..k };
    assert_eq!(lru.remove(bogus), None);
    let bogus = LruKey { home: 99, ..k };
    assert_eq!(lru.remove(bogus), None);
    let bogus = LruKey { index: 1000, ..k };
    assert_eq!(lru.remove(bogus), None);
}

#[test]
fn touch_moves_to_tail() {
    let (lru, keys) = filled(3);
    assert!(lru.touch(keys[2])); // already the tail
    assert!(lru.touch(keys[0]));
    assert_eq!(contents(&lru, 0, GroupId::ROOT), [1, 2, 0]);
}

#[test]
fn lists_are_per_node_and_group() {
    let lru = ListLru::new(2);
    lru.add(0, gid(1), 'a');
    lru.add(1, gid(1), 'b');
    lru.add(1, gid(2), 'c');
    assert_eq!(lru.count(0, gid(1)), 1);
    assert_eq!(lru.count(1, gid(1)), 1);
    assert_eq!(lru.count(1, gid(2)), 1);
    assert_eq!(lru.count(0, gid(2)), 0);
    assert_eq!(lru.count(0, gid(3)), 0);
    assert_eq!(lru.count_node(1), 2);
    assert_eq!(lru.len(), 3);
}

#[test]
fn many_items_span_chunks() {
    let n = if cfg!(miri) { 40 } else { 1000 };
    let (lru, keys) = filled(n);
    for k in keys.iter().step_by(2) {
        assert!(lru.remove(*k).is_some());
    }
    assert_eq!(lru.count(0, GroupId::ROOT), n as usize / 2);
    let want: Vec<u32> = (0..n).filter(|v| v % 2 == 1).collect();
    assert_eq!(contents(&lru, 0, GroupId::ROOT), want);
    let home = lru.group_bytes(GroupId::ROOT);
    // Refill: freed slots are reused, no new chunk.
    for v in 0..n / 2 {
        lru.add(0, GroupId::ROOT, v);
    }
    assert_eq!(lru.group_bytes(GroupId::ROOT), home);
}

#[test]
fn group_table_grows_and_keeps_old_groups() {
    let lru = ListLru::new(1);
    let k = lru.add(0, gid(3), 3u32);
    // Past the first table (16 slots): the old one is retired via RCU.
    let k2 = lru.add(0, gid(100), 100u32);
    assert_eq!(lru.remove(k), Some(3));
    assert_eq!(lru.remove(k2), Some(100));
    assert_eq!(lru.count(0, gid(100)), 0);
}

#[test]
fn values_are_dropped_with_the_lru() {
    let marker = Arc::new(());
    let lru = ListLru::new(2);
    for i in 0..10 {
        lru.add(i % 2, gid(i as u32 % 3), marker.clone());
    }
    lru.reparent(gid(1), gid(2)).unwrap();
    let mut budget = 3;
    drop(lru.walk(0, gid(2), &mut budget, |_| Isolate::Removed));
    assert_eq!(Arc::strong_count(&marker), 1 + 10 - 3);
    drop(lru);
    assert_eq!(Arc::strong_count(&marker), 1);
}

#[test]
fn notify_exactly_on_empty_to_non_empty() {
    let (lru, calls) = recording(2);
    let a = lru.add(0, gid(1), 1);
    lru.add(0, gid(1), 2);
    lru.add(1, gid(1), 3);
    assert_eq!(*calls.lock().unwrap(), [(0, gid(1)), (1, gid(1))]);
    lru.remove(a);
    let mut budget = 10;
    lru.walk(0, gid(1), &mut budget, |_| Isolate::Removed);
    assert_eq!(lru.count(0, gid(1)), 0);
    lru.add(0, gid(1), 4);
    assert_eq!(calls.lock().unwrap().len(), 3);
    assert_eq!(calls.lock().unwrap()[2], (0, gid(1)));
}

#[test]
fn notify_sees_item_and_count() {
    let lru: Arc<Mutex<Option<Arc<ListLru<u32>>>>> = Arc::default();
    let seen = Arc::new(AtomicUsize::new(0));
    let (l2, s2) = (lru.clone(), seen.clone());
    let real = Arc::new(ListLru::with_notify(1, move |node, g| {
        let guard = l2.lock().unwrap();
        let lru = guard.as_ref().unwrap();
        // Count is lock-free: allowed from notify, and already incremented.
        s2.store(lru.count(node, g), Ordering::Relaxed);
    }));
    *lru.lock().unwrap() = Some(real.clone());
    real.add(0, GroupId::ROOT, 1);
    assert_eq!(seen.load(Ordering::Relaxed), 1);
    *lru.lock().unwrap() = None; // break the cycle
}

#[test]
fn reparent_splices_keeps_keys_and_counts() {
    let (lru, calls) = recording(2);
    let ka = lru.add(0, gid(2), 20);
    let kb = lru.add(0, gid(2), 21);
    let kc = lru.add(0, gid(1), 10);
    let kd = lru.add(1, gid(2), 22);
    calls.lock().unwrap().clear();
    lru.reparent(gid(2), gid(1)).unwrap();
    // Node 0: 1 was non-empty: no call. Node 1: 1 was empty: call.
    assert_eq!(*calls.lock().unwrap(), [(1, gid(1))]);
    // The moved items go first: reclaim takes them before 1's own.
    assert_eq!(contents(&lru, 0, gid(1)), [20, 21, 10]);
    assert_eq!(contents(&lru, 1, gid(1)), [22]);
    assert_eq!(lru.count(0, gid(1)), 3);
    assert_eq!(lru.count(0, gid(2)), 0);
    assert_eq!(lru.count(1, gid(2)), 0);
    assert!(contents(&lru, 0, gid(2)).is_empty());
    assert_eq!(lru.len(), 4);
    // Old keys still work on the moved items.
    assert!(lru.touch(ka));
    assert_eq!(contents(&lru, 0, gid(1)), [21, 10, 20]);
    assert_eq!(lru.remove(kb), Some(21));
    assert_eq!(lru.remove(kd), Some(22));
    assert_eq!(lru.count(1, gid(1)), 0);
    assert!(lru.contains(kc) && lru.contains(ka));
    // Adds to the dead group are redirected; their slots come from the
    // dead group's adopted free list, so their keys have home 2.
    calls.lock().unwrap().clear();
    let ke = lru.add(1, gid(2), 23);
    assert_eq!(*calls.lock().unwrap(), [(1, gid(1))]);
    assert_eq!(lru.count(1, gid(1)), 1);
    assert_eq!(lru.remove(ke), Some(23));
    assert_eq!(
        lru.reparent(gid(2), gid(3)),
        Err(ReparentError::AlreadyReparented {
            group: gid(2),
            into: gid(1)
        })
    );
    assert_eq!(
        lru.reparent(gid(1), gid(2)),
        Err(ReparentError::IntoItself(gid(1)))
    );
}

#[test]
fn reparent_chains_resolve_keys_through_two_hops() {
    let (lru, calls) = recording(1);
    let k3 = lru.add(0, gid(3), 3);
    let k2 = lru.add(0, gid(2), 2);
    lru.reparent(gid(3), gid(2)).unwrap();
    lru.reparent(gid(2), gid(1)).unwrap();
    // Each splice puts the moved items at the head (reclaimed first).
    assert_eq!(contents(&lru, 0, gid(1)), [3, 2]);
    assert!(lru.touch(k3));
    assert_eq!(contents(&lru, 0, gid(1)), [2, 3]);
    assert_eq!(lru.remove(k3), Some(3));
    assert!(lru.contains(k2));
    // Reparenting into a dead group goes to the live end of its chain.
    lru.add(0, gid(4), 4);
    lru.reparent(gid(4), gid(3)).unwrap();
    assert_eq!(contents(&lru, 0, gid(1)), [4, 2]);
    assert_eq!(lru.add(0, gid(3), 5).node(), 0);
    assert_eq!(lru.count(0, gid(1)), 3);
    let c = calls.lock().unwrap();
    assert_eq!(
        *c,
        [(0, gid(3)), (0, gid(2)), (0, gid(1)), (0, gid(4))],
        "only empty→non-empty transitions"
    );
}

#[test]
fn reparent_of_empty_or_unknown_group() {
    let (lru, calls) = recording(1);
    lru.reparent(gid(5), gid(6)).unwrap();
    assert!(calls.lock().unwrap().is_empty());
    let k = lru.add(0, gid(5), 1);
    assert_eq!(lru.count(0, gid(6)), 1);
    assert_eq!(*calls.lock().unwrap(), [(0, gid(6))]);
    assert_eq!(lru.remove(k), Some(1));
}

#[test]
#[should_panic(expected = "called back into the (node, group) list")]
fn isolate_calling_back_into_its_list_panics() {
    let (lru, keys) = filled(2);
    let mut budget = 1;
    lru.walk(0, GroupId::ROOT, &mut budget, |_| {
        lru.remove(keys[1]);
        Isolate::Skip
    });
}

#[test]
#[should_panic(expected = "called back into the (node, group) list")]
fn notify_calling_back_into_its_list_panics() {
    let lru: Arc<Mutex<Option<Arc<ListLru<u32>>>>> = Arc::default();
    let l2 = lru.clone();
    let real = Arc::new(ListLru::with_notify(1, move |node, g| {
        let lru = l2.lock().unwrap().clone().unwrap();
        lru.add(node, g, 0);
    }));
    *lru.lock().unwrap() = Some(real.clone());
    real.add(0, GroupId::ROOT, 1);
}

#[test]
fn isolate_may_use_other_lists_and_count() {
    let lru = ListLru::new(1);
    lru.add(0, gid(1), 1);
    let mut budget = 1;
    lru.walk(0, gid(1), &mut budget, |v| {
        assert_eq!(lru.count(0, gid(1)), 1);
        lru.add(0, gid(2), *v); // another list: allowed (mind lock order)
        Isolate::Removed
    });
    assert_eq!(contents(&lru, 0, gid(2)), [1]);
}

#[test]
fn panic_in_isolate_leaves_list_consistent() {
    let (lru, keys) = filled(3);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut budget = 10;
        lru.walk(0, GroupId::ROOT, &mut budget, |v| {
            if *v == 1 {
                panic!("boom");
            }
            Isolate::Removed
        })
    }));
    assert!(r.is_err());
    assert_eq!(contents(&lru, 0, GroupId::ROOT), [1, 2]);
    assert_eq!(lru.count(0, GroupId::ROOT), 2);
    // The misuse marker was reset: this is not a false re-entry.
    assert_eq!(lru.remove(keys[1]), Some(1));
}

#[test]
#[should_panic(expected = "node 2 out of range")]
fn node_out_of_range_panics() {
    ListLru::<u8>::new(2).add(2, GroupId::ROOT, 0);
}

#[test]
fn concurrent_add_remove_walk_reparent() {
    let (threads, per) = if cfg!(miri) { (2, 20) } else { (4, 2000) };
    let lru = Arc::new(ListLru::<u64>::new(2));
    let walked = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        for t in 0..threads {
            let lru = lru.clone();
            s.spawn(move || {
                let mut mine = Vec::new();
                for i in 0..per {
                    let g = gid((i % 5) as u32 + 1);
                    mine.push(lru.add(i as usize % 2, g, i));
                    if i % 3 == 0 {
                        let k = mine.swap_remove(mine.len() / 2);
                        let _ = lru.remove(k);
                    }
                    if let (0, Some(&k)) = (i % 7, mine.last()) {
                        let _ = lru.touch(k);
                    }
                }
                if t == 0 {
                    let _ = lru.reparent(gid(3), gid(1));
                }
            });
        }
        let (lru, walked) = (lru.clone(), walked.clone());
        s.spawn(move || {
            for i in 0..per {
                let mut budget = 8;
                let out = lru.walk(i as usize % 2, gid(1), &mut budget, |v| {
                    if *v % 2 == 0 {
                        Isolate::Removed
                    } else {
                        Isolate::Rotate
                    }
                });
                walked.fetch_add(out.len(), Ordering::Relaxed);
            }
        });
    });
    let mut sum = 0;
    for node in 0..2 {
        for g in 0..8 {
            let c = lru.count(node, gid(g));
            assert_eq!(c, contents(&lru, node, gid(g)).len());
            sum += c;
        }
    }
    assert_eq!(sum, lru.len());
}

#[test]
fn memory_figures() {
    let lru = ListLru::<Box<u64>>::new(1);
    assert_eq!(lru.group_bytes(gid(1)), 0);
    lru.add(0, gid(1), Box::new(1));
    assert_eq!(
        lru.group_bytes(gid(1)),
        lru.bytes_per_group() + 4 * ListLru::<Box<u64>>::bytes_per_item()
    );
    // One node: 96 bytes of list header + 8 of table slot on 64-bit targets.
    eprintln!("bytes_per_group (1 node) = {}", lru.bytes_per_group());
    assert!(lru.bytes_per_group() <= 128, "{}", lru.bytes_per_group());
    assert_eq!(ListLru::<Box<u64>>::bytes_per_item(), 40);
}

mod model {
    use super::gid;
    use crate::{GroupId, Isolate, ListLru, LruKey, ReparentError};

    include!("model.rs");

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 4 } else { 256 },
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn list_lru_matches_model_with_groups(
            ops in proptest::collection::vec(op(2, 4), 0..if cfg!(miri) { 12 } else { 60 })
        ) {
            run(2, 4, &ops)?;
        }
    }
}
