use super::*;
use crate::{Count, Registered, Scan, Shrink, ShrinkControl, ShrinkRequest, ShrinkerBuilder};
use crate::{ListLru, ShrinkerRegistry};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex as StdMutex, OnceLock};

use shrinker_rcu::read_lock;

use super::unit_map::{split, Unit};
use crate::sync::{lock, Ordering};
use crate::ShrinkError;

/// Test access to the units, for this crate's unit tests.
impl Groups {
    /// Is the bit of `id` set in (`g`, `node`)? (Tests.)
    pub(crate) fn test_bit(&self, g: GroupId, node: usize, id: ShrinkerId) -> bool {
        let guard = read_lock();
        let (unit, bit) = split(id);
        self.lookup(g, &guard)
            .and_then(|d| d.map(&guard).unit(node, unit))
            // Relaxed: a test's snapshot of one bit; nothing read through it.
            .is_some_and(|u| u.map.load(Ordering::Relaxed) & (1 << bit) != 0)
    }

    /// The deferred count of `id` in (`g`, `node`). (Tests.)
    pub(crate) fn test_deferred(&self, g: GroupId, node: usize, id: ShrinkerId) -> usize {
        let guard = read_lock();
        let (unit, bit) = split(id);
        self.lookup(g, &guard)
            .and_then(|d| d.map(&guard).unit(node, unit))
            // Relaxed: deferred counts are Relaxed throughout (engine/mod.rs).
            .map_or(0, |u| u.nr_deferred[bit].load(Ordering::Relaxed))
    }

    /// Add `n` to the deferred count of `id` in (`g`, `node`), installing
    /// the unit as a bit set would. (Tests.)
    pub(crate) fn test_add_deferred(&self, g: GroupId, node: usize, id: ShrinkerId, n: usize) {
        let (unit, bit) = split(id);
        let groups = self;
        {
            let guard = read_lock();
            let d = groups.lookup(g, &guard).expect("group exists");
            if let Some(u) = d.map(&guard).unit(node, unit) {
                // Relaxed: as the engine's deferred add.
                u.nr_deferred[bit].fetch_add(n, Ordering::Relaxed);
                return;
            }
        }
        let st = lock(&groups.state);
        let u = st.data(g).unwrap().install(&st.maps, node, unit).unwrap();
        // Relaxed: as the engine's deferred add.
        u.nr_deferred[bit].fetch_add(n, Ordering::Relaxed);
    }
}

/// A group-aware-or-not shrinker whose object count is set by hand, and
/// which records every (node, group) it is asked about.
#[derive(Default)]
struct Probe {
    objects: std::sync::atomic::AtomicUsize,
    /// Counts to return first, before `objects` (for scripted races).
    script: StdMutex<Vec<Count>>,
    seen: StdMutex<Vec<(usize, GroupId)>>,
    /// Report no objects as `Objects(0)` (keeps its bits), not `Empty`.
    zero_not_empty: AtomicBool,
}

impl Shrink for Probe {
    fn count(&self, sc: &ShrinkControl) -> Count {
        self.seen.lock().unwrap().push((sc.node(), sc.group()));
        if let Some(c) = self.script.lock().unwrap().pop() {
            return c;
        }
        match self.objects.load(Ordering::Relaxed) {
            0 if self.zero_not_empty.load(Ordering::Relaxed) => Count::Objects(0),
            0 => Count::Empty,
            n => Count::Objects(n),
        }
    }
    fn scan(&self, sc: &mut ShrinkControl) -> Scan {
        let n = sc.nr_to_scan().min(self.objects.load(Ordering::Relaxed));
        self.objects.fetch_sub(n, Ordering::Relaxed);
        Scan::Freed(n)
    }
}

fn registry(nodes: usize) -> ShrinkerRegistry {
    ShrinkerRegistry::builder().nodes(nodes).build().unwrap()
}

fn probe(reg: &ShrinkerRegistry, name: &str, group_aware: bool, n: usize) -> Registered<Probe> {
    ShrinkerBuilder::new(name)
        .group_aware(group_aware)
        .numa_aware(true)
        .build_in(
            reg,
            Probe {
                objects: n.into(),
                ..Probe::default()
            },
        )
        .unwrap()
        .register()
}

fn req(group: GroupId, node: usize, priority: u8) -> ShrinkRequest {
    ShrinkRequest {
        node,
        priority,
        group,
    }
}

/// Item: a NUMA-unaware shrinker's deferred work of a group lives on
/// node 0 only, whichever node the walk is for (Linux 6.7: `nid = 0`
/// before `xchg_nr_deferred_memcg`); a NUMA-aware one keeps it per
/// node. Checked node by node against the kernel's arithmetic, over a
/// sequence of requests on both nodes. The batch is larger than the
/// cache, so nothing is scanned and every request only defers work:
/// `next = min(nr + delta, 2 * freeable)` with `total_scan` below both
/// `batch` and `freeable`.
#[test]
fn group_deferred_work_of_numa_unaware_shrinker_stays_on_node_0() {
    const FREEABLE: usize = 1000;
    for numa_aware in [false, true] {
        let reg = registry(2);
        let g = reg.create_group(GroupId::ROOT).unwrap();
        let s = ShrinkerBuilder::new("defer-only")
            .group_aware(true)
            .numa_aware(numa_aware)
            .batch(4096)
            .build_in(
                &reg,
                Probe {
                    objects: FREEABLE.into(),
                    zero_not_empty: AtomicBool::new(true),
                    ..Probe::default()
                },
            )
            .unwrap()
            .register();
        s.set_bit(g, 0).unwrap();
        s.set_bit(g, 1).unwrap();
        // The kernel's model: one counter per node for a NUMA-aware
        // shrinker, node 0's only for the others.
        let mut model = [0usize; 2];
        for (step, (node, priority)) in [(1, 2), (1, 3), (0, 2), (1, 4), (0, 6), (1, 2)]
            .into_iter()
            .enumerate()
        {
            reg.shrink(&req(g, node, priority)).unwrap();
            let nid = if numa_aware { node } else { 0 };
            let nr = model[nid];
            let delta = crate::engine::delta(FREEABLE, u32::from(priority), 2);
            let total_scan = (nr >> priority) + delta;
            assert!(
                total_scan < FREEABLE,
                "nothing scanned (and the batch is larger)"
            );
            model[nid] = (nr + delta).min(2 * FREEABLE);
            for (n, &want) in model.iter().enumerate() {
                assert_eq!(
                    reg.test_deferred(g, n, s.id()),
                    want,
                    "numa_aware {numa_aware}, step {step}: deferred on node {n}"
                );
            }
        }
        assert_eq!(
            s.stats().deferred,
            0,
            "a group's deferred work is not the root's"
        );
        // Every count of a NUMA-unaware shrinker is told node 0.
        let seen = s.seen.lock().unwrap().clone();
        assert!(seen
            .iter()
            .all(|&(n, grp)| grp == g && (numa_aware || n == 0)));
    }
}

#[test]
fn tree_create_remove_parent_descendants_and_errors() {
    let reg = registry(1);
    let root = GroupId::ROOT;
    assert_eq!(reg.nr_groups(), 1);
    assert_eq!(reg.group_parent(root), Ok(None));
    let a = reg.create_group(root).unwrap();
    let b = reg.create_group(a).unwrap();
    let c = reg.create_group(a).unwrap();
    let d = reg.create_group(b).unwrap();
    assert_eq!(reg.nr_groups(), 5);
    assert_eq!(reg.group_parent(d), Ok(Some(b)));
    assert_eq!(reg.groups_under(a), [a, b, d, c]);
    assert_eq!(reg.groups_under(root), [root, a, b, d, c]);
    assert_eq!(reg.remove_group(root), Err(GroupError::RootGroup));
    assert_eq!(
        reg.remove_group(a),
        Err(GroupError::HasChildren {
            group: a,
            children: 2
        })
    );
    reg.remove_group(d).unwrap();
    reg.remove_group(b).unwrap();
    assert_eq!(reg.groups_under(a), [a, c]);
    assert_eq!(
        reg.remove_group(b),
        Err(GroupError::NoSuchGroup { group: b })
    );
    assert_eq!(
        reg.group_parent(b),
        Err(GroupError::NoSuchGroup { group: b })
    );
    assert_eq!(
        reg.create_group(b),
        Err(GroupError::NoSuchGroup { group: b })
    );
    assert!(reg.groups_under(b).is_empty());
    assert_eq!(reg.group_bytes(b), None);
    // Indices are not recycled.
    let e = reg.create_group(root).unwrap();
    assert_eq!(e.index(), 5);
    assert_eq!(reg.nr_groups(), 4);
    assert_eq!(
        reg.shrink(&req(b, 0, 0)),
        Err(ShrinkError::NoSuchGroup { group: b })
    );
    assert_eq!(
        reg.set_shrinker_bit(b, 0, ShrinkerId(0)),
        Err(ShrinkError::NoSuchGroup { group: b })
    );
    assert_eq!(
        reg.set_shrinker_bit(e, 3, ShrinkerId(0)),
        Err(ShrinkError::InvalidNode {
            node: 3,
            nr_nodes: 1
        })
    );
}

#[test]
fn group_shrink_calls_exactly_the_set_bit_with_group_and_node() {
    let reg = registry(2);
    let g = reg.create_group(GroupId::ROOT).unwrap();
    let a = probe(&reg, "a", true, 100);
    let b = probe(&reg, "b", true, 100);
    assert_eq!(
        reg.shrink(&req(g, 1, 0)),
        Ok(0),
        "no bit set: nobody called"
    );
    a.set_bit(g, 1).unwrap();
    assert!(reg.test_bit(g, 1, a.id()) && !reg.test_bit(g, 0, a.id()));
    assert_eq!(reg.shrink(&req(g, 0, 0)), Ok(0));
    assert_eq!(reg.shrink(&req(g, 1, 0)), Ok(100));
    assert_eq!(*a.seen.lock().unwrap(), [(1, g)]);
    assert!(b.seen.lock().unwrap().is_empty());
    // The root walk still calls both, with the root group.
    b.objects.store(0, Ordering::Relaxed);
    let _ = reg.shrink(&req(GroupId::ROOT, 0, 0)).unwrap();
    assert_eq!(b.seen.lock().unwrap().as_slice(), [(0, GroupId::ROOT)]);
}

#[test]
fn empty_clears_the_bit_and_repopulation_sets_it_again() {
    let reg = registry(1);
    let g = reg.create_group(GroupId::ROOT).unwrap();
    let s = probe(&reg, "s", true, 0);
    s.set_bit(g, 0).unwrap();
    // Empty twice (the handshake's re-count too): the bit goes.
    assert_eq!(reg.shrink(&req(g, 0, 0)), Ok(0));
    assert_eq!(s.seen.lock().unwrap().len(), 2);
    assert!(!reg.test_bit(g, 0, s.id()));
    assert_eq!(reg.shrink(&req(g, 0, 0)), Ok(0));
    assert_eq!(s.seen.lock().unwrap().len(), 2, "bit clear: not called");
    // Populated again between the Empty and the re-count (a producer
    // racing the clear): the walk sets the bit back.
    s.set_bit(g, 0).unwrap();
    s.script
        .lock()
        .unwrap()
        .extend([Count::Objects(0), Count::Empty]);
    assert_eq!(reg.shrink(&req(g, 0, 0)), Ok(0));
    assert!(reg.test_bit(g, 0, s.id()), "re-count saw objects: bit back");
    // And populated again later: a producer sets it, the walk finds it.
    s.objects.store(10, Ordering::Relaxed);
    s.set_bit(g, 0).unwrap();
    assert_eq!(reg.shrink(&req(g, 0, 0)), Ok(10));
}

#[test]
fn non_group_aware_shrinker_is_never_called_for_a_group() {
    let reg = registry(1);
    let g = reg.create_group(GroupId::ROOT).unwrap();
    let flat = probe(&reg, "flat", false, 100);
    let aware = probe(&reg, "aware", true, 100);
    // The flat shrinker's id is covered by the aware one's unit: its bit
    // can be set by mistake, and the walk clears it without a call.
    assert_eq!(flat.set_bit(g, 0), Ok(()));
    aware.set_bit(g, 0).unwrap();
    assert_eq!(reg.shrink(&req(g, 0, 0)), Ok(100));
    assert!(flat.seen.lock().unwrap().is_empty());
    assert!(!reg.test_bit(g, 0, flat.id()));
    // Root reclaim calls it.
    assert_eq!(reg.shrink(&req(GroupId::ROOT, 0, 0)), Ok(100));
    // An id beyond every group-aware shrinker is refused.
    let late = probe(&reg, "late", false, 1);
    assert!(late.id().index() < 64, "same unit: allowed");
    let reg2 = registry(1);
    let g2 = reg2.create_group(GroupId::ROOT).unwrap();
    let only_flat = probe(&reg2, "f", false, 1);
    assert_eq!(
        only_flat.set_bit(g2, 0),
        Err(ShrinkError::NoSuchShrinker { id: only_flat.id() })
    );
}

#[test]
fn a_removed_group_cannot_be_shrunk() {
    let reg = registry(1);
    let g = reg.create_group(GroupId::ROOT).unwrap();
    let s = probe(&reg, "s", true, 10);
    s.set_bit(g, 0).unwrap();
    reg.remove_group(g).unwrap();
    assert_eq!(
        reg.shrink(&req(g, 0, 0)),
        Err(ShrinkError::NoSuchGroup { group: g })
    );
    assert!(s.seen.lock().unwrap().is_empty());
}

#[test]
fn expansion_loses_no_bit_and_moves_no_deferred_count() {
    let n = if cfg!(miri) { 70 } else { 300 };
    let reg = registry(2);
    let g = reg.create_group(GroupId::ROOT).unwrap();
    let h = reg.create_group(g).unwrap();
    let steady = |name: &str| {
        let s = probe(&reg, name, true, 0);
        s.zero_not_empty.store(true, Ordering::Relaxed);
        s
    };
    // Two group-aware shrinkers exist before the race (unit 0).
    let early: Vec<_> = (0..2).map(|i| steady(&format!("e{i}"))).collect();
    let base = early[1].id().index() + 1;
    // Late shrinkers registered so far (their ids are base, base + 1, ...:
    // lowest free first).
    let published = std::sync::atomic::AtomicU32::new(0);
    let stop = AtomicBool::new(false);
    /// Stops the spinning threads even if the main thread panics (else
    /// the scope would wait for them forever).
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let (late, set, added) = std::thread::scope(|scope| {
        let stopper = StopOnDrop(&stop);
        // Sets bits and adds deferred work on every registered id, while
        // expansions replace the unit maps.
        let setter = scope.spawn(|| {
            let mut set = std::collections::HashSet::new();
            let mut added = 0usize;
            let mut k = 0u32;
            while !stop.load(Ordering::Relaxed) || k < 8 {
                let ids = base + published.load(Ordering::Acquire);
                let id = ShrinkerId(k.wrapping_mul(2_654_435_761) % ids);
                let (grp, node) = ([g, h][(k % 2) as usize], ((k / 2) % 2) as usize);
                reg.set_shrinker_bit(grp, node, id).unwrap();
                reg.test_add_deferred(grp, node, id, 1);
                set.insert((grp, node, id));
                added += 1;
                k += 1;
            }
            (set, added)
        });
        // A walker too: counts of 0 (not Empty) take no deferred work
        // and keep the bits.
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                for grp in [g, h] {
                    let _ = reg.shrink(&req(grp, 1, 0)).unwrap();
                }
            }
        });
        let late: Vec<_> = (0..n)
            .map(|i| {
                let s = steady(&format!("l{i}"));
                assert_eq!(s.id().index(), base + i);
                // Release: pairs with the setter's Acquire.
                published.store(i + 1, Ordering::Release);
                s
            })
            .collect();
        drop(stopper);
        let (set, added) = setter.join().unwrap();
        (late, set, added)
    });
    let mut sum = 0;
    for &(grp, node, id) in &set {
        assert!(reg.test_bit(grp, node, id), "{grp:?} {node} {id}");
    }
    for grp in [g, h] {
        for node in 0..2 {
            for id in 0..base + n {
                sum += reg.test_deferred(grp, node, ShrinkerId(id));
            }
        }
    }
    assert_eq!(sum, added, "every deferred count is where it was added");
    // A later walk finds every set bit.
    let all: Vec<_> = early.iter().chain(&late).collect();
    for s in &all {
        s.seen.lock().unwrap().clear();
    }
    for grp in [g, h] {
        for node in 0..2 {
            let _ = reg.shrink(&req(grp, node, 0)).unwrap();
        }
    }
    for &(grp, node, id) in &set {
        let s = all.iter().find(|s| s.id() == id).unwrap();
        assert!(s.seen.lock().unwrap().contains(&(node, grp)));
    }
}

#[test]
fn removal_reparents_deferred_work_and_list_items_exactly() {
    let reg = registry(2);
    let g1 = reg.create_group(GroupId::ROOT).unwrap();
    let g2 = reg.create_group(g1).unwrap();
    let id_cell: Arc<OnceLock<ShrinkerId>> = Arc::default();
    let lru = {
        let (reg, id) = (reg.clone(), id_cell.clone());
        Arc::new(ListLru::with_notify(2, move |node, group| {
            if let Some(&id) = id.get() {
                let _ = reg.set_shrinker_bit(group, node, id);
            }
        }))
    };
    let weak: Weak<ListLru<u32>> = Arc::downgrade(&lru);
    reg.observe_groups(weak);
    struct Lru(Arc<ListLru<u32>>);
    impl Shrink for Lru {
        fn count(&self, sc: &ShrinkControl) -> Count {
            match self.0.count(sc.node(), sc.group()) {
                0 => Count::Empty,
                n => Count::Objects(n),
            }
        }
        fn scan(&self, _: &mut ShrinkControl) -> Scan {
            Scan::Stop
        }
    }
    let s = ShrinkerBuilder::new("lru")
        .group_aware(true)
        .numa_aware(true)
        .build_in(&reg, Lru(lru.clone()))
        .unwrap()
        .register();
    id_cell.set(s.id()).unwrap();
    for v in 0..100 {
        lru.add((v % 2) as usize, g2, v);
    }
    for v in 0..40 {
        lru.add(0, g1, v);
    }
    assert!(reg.test_bit(g2, 0, s.id()) && reg.test_bit(g2, 1, s.id()));
    // Priority 2, 50 objects: delta 25 each pass, under a batch: all
    // deferred (nr >> 2 stays small).
    for _ in 0..3 {
        for node in 0..2 {
            reg.shrink(&req(g2, node, 2)).unwrap();
        }
        reg.shrink(&req(g1, 0, 2)).unwrap();
    }
    let d = |g, node| reg.test_deferred(g, node, s.id());
    let (d2, d1) = ([d(g2, 0), d(g2, 1)], [d(g1, 0), d(g1, 1)]);
    assert!(d2[0] > 0 && d2[1] > 0 && d1[0] > 0, "{d2:?} {d1:?}");
    assert_eq!(s.stats().deferred, 0, "group work is not root work");
    reg.remove_group(g2).unwrap();
    assert_eq!([d(g1, 0), d(g1, 1)], [d1[0] + d2[0], d1[1] + d2[1]]);
    assert_eq!(lru.count(0, g1), 90);
    assert_eq!(lru.count(1, g1), 50);
    assert!(
        reg.test_bit(g1, 1, s.id()),
        "node 1 of g1 was populated by the move"
    );
    reg.remove_group(g1).unwrap();
    assert_eq!(
        s.stats().deferred as usize,
        d1[0] + d2[0] + d1[1] + d2[1],
        "root work lives in the shrinker"
    );
    assert_eq!(lru.count(0, GroupId::ROOT), 90);
    assert_eq!(lru.count(1, GroupId::ROOT), 50);
}

#[test]
fn remove_from_a_callback_of_its_own_walk_panics_naming_the_misuse() {
    struct Remover(ShrinkerRegistry, OnceLock<GroupId>);
    impl Shrink for Remover {
        fn count(&self, _: &ShrinkControl) -> Count {
            let _ = self.0.remove_group(*self.1.get().unwrap());
            Count::Objects(1)
        }
        fn scan(&self, _: &mut ShrinkControl) -> Scan {
            Scan::Stop
        }
    }
    let reg = registry(1);
    let g = reg.create_group(GroupId::ROOT).unwrap();
    let s = ShrinkerBuilder::new("remover")
        .group_aware(true)
        .build_in(&reg, Remover(reg.clone(), OnceLock::from(g)))
        .unwrap()
        .register();
    s.set_bit(g, 0).unwrap();
    let _ = reg.shrink(&req(g, 0, 0)).unwrap();
    assert_eq!(s.stats().panics, 1);
    assert_eq!(reg.group_parent(g), Ok(Some(GroupId::ROOT)), "still there");
    reg.remove_group(g).unwrap();
}

/// A group-aware shrinker that reports its group's pin count from
/// inside `count`, then blocks until told to go on.
struct GroupBlocker {
    data: *const GroupData,
    entered: StdMutex<std::sync::mpsc::Sender<i32>>,
    go: StdMutex<std::sync::mpsc::Receiver<()>>,
}

// SAFETY: `data` is only read (the group's refcount) while the group is
// pinned by the walk that calls us.
unsafe impl Send for GroupBlocker {}
// SAFETY: as above.
unsafe impl Sync for GroupBlocker {}

impl Shrink for GroupBlocker {
    fn count(&self, _: &ShrinkControl) -> Count {
        // SAFETY: the walk calling us pins the group.
        let rc = unsafe { (*self.data).refs.read() };
        self.entered.lock().unwrap().send(rc).unwrap();
        self.go.lock().unwrap().recv().unwrap();
        Count::Objects(100)
    }
    fn scan(&self, _: &mut ShrinkControl) -> Scan {
        Scan::Stop
    }
}

/// `remove_group` must wait for a walk of the group that is inside a
/// callback, whichever pin the walk took, and then reparent the
/// deferred work that walk added.
fn blocked_walk_then_remove_group(close_gate_first: bool) {
    let reg = registry(1);
    let gate = Arc::clone(&reg.inner.gate);
    let hold = if close_gate_first {
        // Hold the gate closed, as a removal in progress would (see
        // registry/tests.rs's `blocked_walk_then_unregister`).
        Some(gate.enter())
    } else {
        assert!(gate.open_now(), "a new registry's gate is open");
        None
    };
    let g = reg.create_group(GroupId::ROOT).unwrap();
    let data: *const GroupData = reg.inner.groups.lookup(g, &read_lock()).unwrap();
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    let s = ShrinkerBuilder::new("blocker")
        .group_aware(true)
        .build_in(
            &reg,
            GroupBlocker {
                data,
                entered: StdMutex::new(entered_tx),
                go: StdMutex::new(go_rx),
            },
        )
        .unwrap()
        .register();
    s.set_bit(g, 0).unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Priority 2: 100 objects, seeks 2 → defers 50, scans none.
        scope.spawn(|| reg.shrink(&req(g, 0, 2)).unwrap());
        let rc = entered.recv().unwrap();
        // A light pin leaves the group's count at its initial reference.
        assert_eq!(rc, if close_gate_first { 2 } else { 1 });
        scope.spawn(|| {
            reg.remove_group(g).unwrap();
            done.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !done.load(Ordering::SeqCst),
            "remove_group returned while a walk of the group was inside a callback"
        );
        go.send(()).unwrap();
    });
    assert!(done.load(Ordering::SeqCst));
    assert_eq!(
        s.stats().deferred,
        50,
        "the walk's deferred work reached the root"
    );
    drop(hold);
}

#[test]
#[cfg_attr(miri, ignore)] // sleeps; Miri runs the light path in other tests
fn remove_group_waits_for_a_light_pinned_walk() {
    blocked_walk_then_remove_group(false);
}

#[test]
#[cfg_attr(miri, ignore)] // as above
fn remove_group_waits_for_a_refcount_pinned_walk() {
    blocked_walk_then_remove_group(true);
}

/// Every observer hears of a removal exactly once, including one that
/// starts observing while the removal is telling its observers (here:
/// from inside another observer's `reparent`).
#[test]
fn observers_hear_of_each_removal_exactly_once() {
    #[derive(Default)]
    struct Counting(StdMutex<Vec<(GroupId, GroupId)>>);
    impl GroupObserver for Counting {
        fn reparent(&self, from: GroupId, to: GroupId) {
            self.0.lock().unwrap().push((from, to));
        }
    }
    struct Recruiter {
        reg: ShrinkerRegistry,
        late: Arc<Counting>,
    }
    impl GroupObserver for Recruiter {
        fn reparent(&self, _: GroupId, _: GroupId) {
            let late: Arc<dyn GroupObserver> = self.late.clone();
            self.reg.observe_groups(Arc::downgrade(&late));
        }
    }
    let reg = registry(1);
    let early = Arc::new(Counting::default());
    let late = Arc::new(Counting::default());
    let recruiter = Arc::new(Recruiter {
        reg: reg.clone(),
        late: Arc::clone(&late),
    });
    let e: Arc<dyn GroupObserver> = early.clone();
    let r: Arc<dyn GroupObserver> = recruiter.clone();
    reg.observe_groups(Arc::downgrade(&e));
    reg.observe_groups(Arc::downgrade(&r));
    let a = reg.create_group(GroupId::ROOT).unwrap();
    let b = reg.create_group(a).unwrap();
    reg.remove_group(b).unwrap();
    assert_eq!(*early.0.lock().unwrap(), [(b, a)]);
    assert_eq!(*late.0.lock().unwrap(), [(b, a)], "told by observe_groups");
    // `late` is now a plain observer; the recruiter goes (it would
    // register `late` a second time, which would then hear twice).
    drop((recruiter, r));
    reg.remove_group(a).unwrap();
    assert_eq!(*early.0.lock().unwrap(), [(b, a), (a, GroupId::ROOT)]);
    assert_eq!(
        *late.0.lock().unwrap(),
        [(b, a), (a, GroupId::ROOT)],
        "once per removal"
    );
}

#[test]
fn group_bytes_follow_units() {
    let reg = registry(2);
    let g = reg.create_group(GroupId::ROOT).unwrap();
    let empty = reg.group_bytes(g).unwrap();
    let s = probe(&reg, "s", true, 0);
    let one_unit = reg.group_bytes(g).unwrap();
    eprintln!(
        "empty group, 2 nodes: {empty} B with no group-aware shrinker, {one_unit} B with 1-64"
    );
    assert_eq!(
        one_unit,
        empty + 2 * size_of::<u64>(),
        "a summary word per node, no unit pointer until a unit is installed"
    );
    s.set_bit(g, 1).unwrap();
    assert_eq!(
        reg.group_bytes(g).unwrap(),
        one_unit + size_of::<*mut Unit>() + size_of::<Unit>(),
        "one unit and its pointer"
    );
    assert_eq!(size_of::<Unit>(), 520);
}
