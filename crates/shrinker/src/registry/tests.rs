use super::walk::CalloutPin;
use super::*;
use crate::{Count, Registered, Scan, Shrink, ShrinkControl, ShrinkerBuilder};
use shrinker_rcu::read_lock;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Mutex as StdMutex;

/// A pool of `objects`; records the nodes it was asked about.
#[derive(Default)]
struct Pool {
    objects: AtomicUsize,
    nodes_seen: StdMutex<Vec<usize>>,
    panic_in: StdMutex<Option<&'static str>>,
}

impl Pool {
    fn with(n: usize) -> Self {
        let p = Pool::default();
        p.objects.store(n, Ordering::Relaxed);
        p
    }
}

impl Shrink for Pool {
    fn count(&self, sc: &ShrinkControl) -> Count {
        self.nodes_seen.lock().unwrap().push(sc.node());
        if *self.panic_in.lock().unwrap() == Some("count") {
            panic!("count exploded");
        }
        match self.objects.load(Ordering::Relaxed) {
            0 => Count::Empty,
            n => Count::Objects(n),
        }
    }
    fn scan(&self, sc: &mut ShrinkControl) -> Scan {
        if *self.panic_in.lock().unwrap() == Some("scan") {
            panic!("scan exploded");
        }
        let n = sc.nr_to_scan().min(self.objects.load(Ordering::Relaxed));
        self.objects.fetch_sub(n, Ordering::Relaxed);
        Scan::Freed(n)
    }
}

fn registry(nodes: usize) -> ShrinkerRegistry {
    ShrinkerRegistry::builder().nodes(nodes).build().unwrap()
}

fn hard(node: usize) -> ShrinkRequest {
    ShrinkRequest {
        node,
        priority: 0,
        ..Default::default()
    }
}

#[test]
fn built_but_unregistered_is_invisible_and_drops_at_once() {
    let reg = registry(1);
    let s = ShrinkerBuilder::new("p")
        .build_in(&reg, Pool::with(1000))
        .unwrap();
    assert_eq!(reg.shrink(&hard(0)), Ok(0));
    assert!(reg.shrinkers().is_empty());
    assert!(reg.count(s.id(), 0).is_err());
    let id = s.id();
    assert_eq!(s.into_inner().objects.load(Ordering::Relaxed), 1000);
    // The id went back: the next shrinker gets it.
    let t = ShrinkerBuilder::new("q")
        .build_in(&reg, Pool::default())
        .unwrap();
    assert_eq!(t.id(), id);
}

/// A failed `try_ref` leaves the count alone (it once built the pin
/// eagerly, with `then_some`, and the dropped pin put a reference that
/// was never taken: the torture test then saw callbacks after
/// unregister returned).
#[test]
fn failed_try_ref_puts_nothing() {
    let reg = registry(1);
    let s = ShrinkerBuilder::new("p")
        .build_in(&reg, Pool::with(10))
        .unwrap();
    let node = s.object();
    assert_eq!(node.refs.read(), 0, "built, not registered");
    {
        let _guard = read_lock();
        assert!(CalloutPin::try_ref(node).is_none());
    }
    assert_eq!(node.refs.read(), 0);
    let r = s.register();
    {
        let guard = read_lock();
        let pin = CalloutPin::try_ref(r.object()).expect("registered");
        assert_eq!(r.object().refs.read(), 2);
        pin.unpin(&guard);
    }
    assert_eq!(r.object().refs.read(), 1);
}

#[test]
fn register_walk_unregister() {
    let reg = registry(1);
    let a = ShrinkerBuilder::new("a")
        .build_in(&reg, Pool::with(1000))
        .unwrap()
        .register();
    let b = ShrinkerBuilder::new("b")
        .seeks(0)
        .build_in(&reg, Pool::with(1000))
        .unwrap()
        .register();
    assert_eq!(reg.len(), 2);
    // Priority 12: a asks for 0, b (seeks 0) for 500 → 384 (3 batches).
    assert_eq!(reg.shrink(&ShrinkRequest::default()), Ok(384));
    assert_eq!(b.objects.load(Ordering::Relaxed), 616);
    assert_eq!(b.stats().deferred, 116);
    let names: Vec<String> = reg.shrinkers().iter().map(|i| i.to_string()).collect();
    assert_eq!(names, ["a-0", "b-1"]);
    let pool_a = a.unregister();
    assert_eq!(pool_a.objects.load(Ordering::Relaxed), 1000);
    assert_eq!(reg.len(), 1);
    drop(b);
    assert!(reg.is_empty());
    assert_eq!(reg.shrink(&hard(0)), Ok(0));
}

#[test]
fn unlink_head_middle_tail_keeps_order() {
    let reg = registry(1);
    let mut v: Vec<Option<Registered<Pool>>> = (0..5)
        .map(|i| {
            Some(
                ShrinkerBuilder::new(format!("s{i}"))
                    .build_in(&reg, Pool::default())
                    .unwrap()
                    .register(),
            )
        })
        .collect();
    for i in [4, 0, 2] {
        v[i].take();
    }
    let names: Vec<String> = reg.shrinkers().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["s1", "s3"]);
    // The tail moved back: a new one lands after s3.
    let s5 = ShrinkerBuilder::new("s5")
        .build_in(&reg, Pool::default())
        .unwrap()
        .register();
    let names: Vec<String> = reg.shrinkers().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["s1", "s3", "s5"]);
    // Lowest free id first.
    assert_eq!(s5.id().index(), 0);
    drop(v);
    drop(s5);
    assert!(reg.is_empty());
}

#[test]
fn invalid_requests_are_typed_errors() {
    let reg = registry(2);
    assert_eq!(
        reg.shrink(&ShrinkRequest {
            priority: 13,
            ..Default::default()
        }),
        Err(ShrinkError::InvalidPriority { priority: 13 })
    );
    assert_eq!(
        reg.shrink(&hard(2)),
        Err(ShrinkError::InvalidNode {
            node: 2,
            nr_nodes: 2
        })
    );
    assert!(matches!(
        reg.count(ShrinkerId(7), 5),
        Err(ShrinkError::InvalidNode { .. })
    ));
    assert_eq!(
        reg.scan(ShrinkerId(7), 0, 1),
        Err(ShrinkError::NoSuchShrinker { id: ShrinkerId(7) })
    );
    assert!(matches!(
        ShrinkerBuilder::new("").build_in(&reg, Pool::default()),
        Err(BuildError::EmptyName)
    ));
    assert_eq!(
        ShrinkerRegistry::builder().nodes(0).build().err(),
        Some(BuildError::NoNodes)
    );
}

#[test]
fn registry_full_is_a_typed_error() {
    let reg = ShrinkerRegistry::builder()
        .nodes(1)
        .max_shrinkers(2)
        .build()
        .unwrap();
    let a = ShrinkerBuilder::new("a")
        .build_in(&reg, Pool::default())
        .unwrap();
    let _b = ShrinkerBuilder::new("b")
        .build_in(&reg, Pool::default())
        .unwrap();
    assert!(matches!(
        ShrinkerBuilder::new("c").build_in(&reg, Pool::default()),
        Err(BuildError::TooManyShrinkers { max: 2 })
    ));
    drop(a);
    assert!(ShrinkerBuilder::new("c")
        .build_in(&reg, Pool::default())
        .is_ok());
}

#[test]
fn numa_aware_gets_its_node_others_node_0() {
    let reg = registry(3);
    let numa = ShrinkerBuilder::new("numa")
        .numa_aware(true)
        .build_in(&reg, Pool::with(100))
        .unwrap()
        .register();
    let flat = ShrinkerBuilder::new("flat")
        .build_in(&reg, Pool::with(100))
        .unwrap()
        .register();
    // Priority 2: delta 50 < 100 and < 128 → all deferred, per node.
    for node in 0..3 {
        let req = ShrinkRequest {
            node,
            priority: 2,
            ..Default::default()
        };
        assert_eq!(reg.shrink(&req), Ok(0));
    }
    assert_eq!(*numa.nodes_seen.lock().unwrap(), [0, 1, 2]);
    assert_eq!(*flat.nodes_seen.lock().unwrap(), [0, 0, 0]);
    // numa: 50 on each of 3 nodes; flat: one count, 50 + 50 + 50 = 150
    // (each pass adds delta 50; nr >> 2 stays below a batch).
    assert_eq!(numa.stats().deferred, 150);
    assert_eq!(flat.stats().deferred, 150);
    let info = reg.shrinkers();
    assert!(info[0].flags.numa_aware && !info[1].flags.numa_aware);
    // By hand: a non-NUMA shrinker is told node 0.
    let _ = reg.count(flat.id(), 2).unwrap();
    assert_eq!(flat.nodes_seen.lock().unwrap().last(), Some(&0));
    let _ = reg.count(numa.id(), 2).unwrap();
    assert_eq!(numa.nodes_seen.lock().unwrap().last(), Some(&2));
}

#[test]
fn by_hand_count_and_scan_with_stats() {
    let reg = registry(1);
    let s = ShrinkerBuilder::new("hand")
        .group_aware(true)
        .build_in(&reg, Pool::with(50))
        .unwrap()
        .register();
    assert_eq!(reg.count(s.id(), 0), Ok(Count::Objects(50)));
    assert_eq!(reg.scan(s.id(), 0, 20), Ok(Scan::Freed(20)));
    assert_eq!(reg.count(s.id(), 0), Ok(Count::Objects(30)));
    let st = s.stats();
    assert_eq!((st.count_calls, st.scan_calls), (2, 1));
    assert_eq!((st.scanned, st.freed, st.panics), (20, 20, 0));
    let info = &reg.shrinkers()[0];
    assert!(info.flags.group_aware && info.live);
    assert_eq!((info.seeks, info.batch), (2, 128));
}

#[test]
fn panicking_callbacks_are_caught_counted_and_walk_continues() {
    let reg = registry(1);
    let bad_count = ShrinkerBuilder::new("bad-count")
        .build_in(&reg, Pool::with(1000))
        .unwrap()
        .register();
    *bad_count.panic_in.lock().unwrap() = Some("count");
    let bad_scan = ShrinkerBuilder::new("bad-scan")
        .build_in(&reg, Pool::with(1000))
        .unwrap()
        .register();
    *bad_scan.panic_in.lock().unwrap() = Some("scan");
    let good = ShrinkerBuilder::new("good")
        .build_in(&reg, Pool::with(1000))
        .unwrap()
        .register();
    // Silence the default hook's messages for the expected panics.
    let freed = reg.shrink(&hard(0)).unwrap();
    assert_eq!(freed, 1000, "the walk reached the good shrinker");
    assert_eq!(bad_count.stats().panics, 1);
    assert_eq!(bad_scan.stats().panics, 1);
    // A scan panic is a Stop: the work is deferred (2000 capped at 2000).
    assert_eq!(bad_scan.stats().deferred, 2000);
    // The references were put: unregister does not hang.
    drop((bad_count, bad_scan, good));
    assert!(reg.is_empty());
}

/// Unregisters the shrinker whose handle it finds in `slot` from inside
/// its own scan.
struct SelfUnregister {
    slot: std::sync::Arc<StdMutex<Option<Registered<SelfUnregister>>>>,
    tried: AtomicBool,
}

impl Shrink for SelfUnregister {
    fn count(&self, _: &ShrinkControl) -> Count {
        Count::Objects(1000)
    }
    fn scan(&self, _: &mut ShrinkControl) -> Scan {
        if !self.tried.swap(true, Ordering::Relaxed) {
            if let Some(me) = self.slot.lock().unwrap().take() {
                // Panics naming the misuse; the walk catches it.
                let _ = me.unregister();
            }
        }
        Scan::Stop
    }
}

#[test]
fn unregister_from_own_callback_panics_naming_the_misuse() {
    let reg = registry(1);
    let slot = std::sync::Arc::new(StdMutex::new(None));
    let s = ShrinkerBuilder::new("selfish")
        .build_in(
            &reg,
            SelfUnregister {
                slot: slot.clone(),
                tried: AtomicBool::new(false),
            },
        )
        .unwrap()
        .register();
    let id = s.id();
    *slot.lock().unwrap() = Some(s);
    let _ = reg.shrink(&hard(0)).unwrap();
    let info = reg.shrinkers();
    assert_eq!(info.len(), 1, "the misuse left it registered");
    assert_eq!(info[0].stats.panics, 1);
    assert!(info[0].live);
    // The walk put its reference; the shrinker is still callable.
    assert_eq!(reg.count(id, 0), Ok(Count::Objects(1000)));
    // (The handle was consumed by the failed unregister: the shrinker
    // stays registered for the life of the registry, the price of not
    // deadlocking.)
}

#[test]
#[should_panic(expected = "inside an RCU read-side section")]
fn unregister_inside_read_section_panics() {
    let reg = registry(1);
    let s = ShrinkerBuilder::new("p")
        .build_in(&reg, Pool::default())
        .unwrap()
        .register();
    let _g = read_lock();
    drop(s);
}

#[test]
fn id_table_grows_and_lookups_follow() {
    let reg = registry(1);
    let n = if cfg!(miri) { 70 } else { 300 };
    let v: Vec<_> = (0..n)
        .map(|i| {
            ShrinkerBuilder::new(format!("s{i}"))
                .build_in(&reg, Pool::with(i + 1))
                .unwrap()
                .register()
        })
        .collect();
    for s in &v {
        let want = s.objects.load(Ordering::Relaxed);
        assert_eq!(reg.count(s.id(), 0), Ok(Count::Objects(want)));
    }
    drop(v);
    assert!(reg.is_empty());
}

/// Blocks in `count` until told to go, reporting whether the walk that
/// called it holds a light pin (the refcount stays 1) or a refcount pin.
struct Blocker {
    entered: StdMutex<std::sync::mpsc::Sender<i32>>,
    go: StdMutex<std::sync::mpsc::Receiver<()>>,
    node: std::sync::atomic::AtomicPtr<ShrinkerObject>,
}

impl Shrink for Blocker {
    fn count(&self, _: &ShrinkControl) -> Count {
        // SAFETY: the node is pinned by the walk calling us.
        let rc = unsafe { &*self.node.load(Ordering::Relaxed) }.refs.read();
        self.entered.lock().unwrap().send(rc).unwrap();
        self.go.lock().unwrap().recv().unwrap();
        Count::Objects(0)
    }
    fn scan(&self, _: &mut ShrinkControl) -> Scan {
        Scan::Stop
    }
}

fn blocked_walk_then_unregister(close_gate_first: bool) {
    let reg = registry(1);
    let hold = if close_gate_first {
        drop(
            ShrinkerBuilder::new("closer")
                .build_in(&reg, Pool::default())
                .unwrap()
                .register(),
        );
        assert!(!reg.inner.gate.open_now(), "an unregister closes the gate");
        // Keep it closed for the test, as an unregister in progress
        // would: otherwise the reopening callback, armed by the
        // unregister above, may run (a grace period later, sooner on a
        // busy machine) before the walk below pins, and the walk would
        // take a light pin (the assertion below then failed, and the
        // scope hung waiting for the blocked walker).
        Some(reg.inner.gate.enter())
    } else {
        assert!(reg.inner.gate.open_now(), "a new registry's gate is open");
        None
    };
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    let s = ShrinkerBuilder::new("blocker")
        .build_in(
            &reg,
            Blocker {
                entered: StdMutex::new(entered_tx),
                go: StdMutex::new(go_rx),
                node: std::sync::atomic::AtomicPtr::new(ptr::null_mut()),
            },
        )
        .unwrap()
        .register();
    s.node
        .store(reg.inner.head.load(Ordering::Acquire), Ordering::Relaxed);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| reg.shrink(&hard(0)).unwrap());
        let rc = entered.recv().unwrap();
        // Light pin: the count stays at the initial reference.
        assert_eq!(rc, if close_gate_first { 2 } else { 1 });
        scope.spawn(|| {
            drop(s.unregister());
            done.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !done.load(Ordering::SeqCst),
            "unregister returned while a walk was inside the callback"
        );
        go.send(()).unwrap();
    });
    assert!(done.load(Ordering::SeqCst));
    assert!(reg.is_empty());
    drop(hold);
}

#[test]
fn unregister_waits_for_a_light_pinned_callout() {
    blocked_walk_then_unregister(false);
}

#[test]
fn unregister_waits_for_a_refcount_pinned_callout() {
    blocked_walk_then_unregister(true);
}

#[test]
fn gate_reopens_after_a_quiet_spell_following_the_last_unregister() {
    let reg = registry(1);
    let a = ShrinkerBuilder::new("a")
        .build_in(&reg, Pool::with(10))
        .unwrap()
        .register();
    assert!(reg.inner.gate.open_now());
    // Before the unregister: its exit starts the quiet spell.
    let start = std::time::Instant::now();
    drop(a);
    assert!(!reg.inner.gate.open_now());
    // The reopening is a `call_rcu` callback that re-arms itself until the
    // gate has been quiet for `REOPEN_AFTER_QUIET` (20 ms); it reopened
    // after one grace period before, which the last assertion catches.
    while !reg.inner.gate.open_now() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the gate did not reopen"
        );
        shrinker_rcu::rcu_barrier();
    }
    assert!(
        start.elapsed() >= super::gate::REOPEN_AFTER_QUIET,
        "the gate reopened before a quiet spell"
    );
    // Walks take light pins again and still shrink.
    let b = ShrinkerBuilder::new("b")
        .build_in(&reg, Pool::with(1000))
        .unwrap()
        .register();
    assert!(reg.shrink(&hard(0)).unwrap() > 0);
    drop(b);
}

/// Records the group each call is told.
#[derive(Default)]
struct Told(StdMutex<Vec<GroupId>>);

impl Shrink for Told {
    fn count(&self, sc: &ShrinkControl) -> Count {
        self.0.lock().unwrap().push(sc.group());
        Count::Objects(7)
    }
    fn scan(&self, sc: &mut ShrinkControl) -> Scan {
        self.0.lock().unwrap().push(sc.group());
        Scan::Freed(sc.nr_to_scan())
    }
}

#[test]
fn by_hand_count_and_scan_in_a_group_tell_the_group_to_group_aware_shrinkers_only() {
    let reg = registry(1);
    let g = reg.create_group(GroupId::ROOT).unwrap();
    let aware = ShrinkerBuilder::new("aware")
        .group_aware(true)
        .build_in(&reg, Told::default())
        .unwrap()
        .register();
    let plain = ShrinkerBuilder::new("plain")
        .build_in(&reg, Told::default())
        .unwrap()
        .register();
    assert_eq!(reg.count_in(aware.id(), g, 0), Ok(Count::Objects(7)));
    assert_eq!(reg.scan_in(aware.id(), g, 0, 3), Ok(Scan::Freed(3)));
    assert_eq!(*aware.0.lock().unwrap(), vec![g, g]);
    let no_group = Err(ShrinkError::NoSuchGroup { group: g });
    assert_eq!(reg.count_in(plain.id(), g, 0), no_group);
    assert_eq!(
        reg.scan_in(plain.id(), g, 0, 3).map(|_| ()),
        no_group.map(|_| ())
    );
    assert!(plain.0.lock().unwrap().is_empty(), "not called for a group");
    let gone = GroupId::from_index(999);
    assert_eq!(
        reg.count_in(aware.id(), gone, 0),
        Err(ShrinkError::NoSuchGroup { group: gone })
    );
    // The root works for both, as `count` and `scan` do.
    assert_eq!(
        reg.count_in(plain.id(), GroupId::ROOT, 0),
        Ok(Count::Objects(7))
    );
}

#[test]
fn held_bytes_come_from_the_shrinker_or_its_declared_object_size() {
    let reg = registry(1);
    let sized = ShrinkerBuilder::new("sized")
        .object_bytes(100)
        .build_in(&reg, Told::default())
        .unwrap()
        .register();
    let unknown = ShrinkerBuilder::new("unknown")
        .build_in(&reg, Told::default())
        .unwrap()
        .register();
    assert_eq!(reg.held_bytes(sized.id()), Ok(Some(700)));
    assert_eq!(reg.held_bytes(unknown.id()), Ok(None));
    let infos = reg.shrinkers();
    assert_eq!(infos[0].object_bytes, Some(100));
    assert_eq!(infos[1].object_bytes, None);
    let cache = crate::LruCache::<u32, Vec<u8>>::builder("weighed")
        .weigher(|_, v| v.len())
        .build_in(&reg)
        .unwrap();
    cache.insert(GroupId::ROOT, 1, vec![0; 64]).unwrap();
    cache.insert(GroupId::ROOT, 2, vec![0; 36]).unwrap();
    assert_eq!(reg.held_bytes(cache.shrinker_id()), Ok(Some(100)));
}

/// A shrinker whose `count` unregisters the shrinker it holds.
struct Unregisters {
    victim: StdMutex<Option<Registered<Pool>>>,
}

impl Shrink for Unregisters {
    fn count(&self, _: &ShrinkControl) -> Count {
        if let Some(v) = self.victim.lock().unwrap().take() {
            drop(v.unregister());
        }
        Count::Objects(1)
    }
    fn scan(&self, _: &mut ShrinkControl) -> Scan {
        Scan::Freed(0)
    }
}

/// A fast-phase walk (gate open) calls out to a shrinker whose callback
/// unregisters the next one on the list. The unregister must not wait for
/// its own thread's walk pin (it would deadlock: the walk is this very
/// call; the slot shows it in a callout), and the walk must step over the
/// victim to the shrinker after it.
#[test]
fn callback_unregisters_the_next_shrinker_during_a_fast_walk() {
    let reg = registry(1);
    let killer = ShrinkerBuilder::new("killer")
        .build_in(
            &reg,
            Unregisters {
                victim: StdMutex::new(None),
            },
        )
        .unwrap()
        .register();
    let victim = ShrinkerBuilder::new("victim")
        .build_in(&reg, Pool::with(1000))
        .unwrap()
        .register();
    let victim_id = victim.id();
    let last = ShrinkerBuilder::new("last")
        .build_in(&reg, Pool::with(1000))
        .unwrap()
        .register();
    *killer.victim.lock().unwrap() = Some(victim);
    assert!(reg.inner.gate.open_now(), "the walk takes the walk pin");
    let (tx, rx) = std::sync::mpsc::channel();
    let walker = {
        let reg = reg.clone();
        std::thread::spawn(move || tx.send(reg.shrink(&hard(0))).unwrap())
    };
    let freed = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the walk deadlocked: the unregister waited for its own walk pin");
    walker.join().unwrap();
    assert!(freed.unwrap() > 0, "`last` was shrunk");
    assert_eq!(reg.len(), 2);
    assert!(reg.shrinkers().iter().all(|i| i.id != victim_id));
    assert_eq!(
        last.nodes_seen.lock().unwrap().len(),
        1,
        "`last` counted once"
    );
    // The walk is over: the next unregisters wait for nobody.
    drop(last);
    drop(killer);
    assert!(reg.is_empty());
}
