//! Group torture: memory groups are created and removed *during*
//! group-aware reclaim, while producers fill `ListLru`s in those groups and
//! a churner registers and unregisters an extra group-aware shrinker. Run by
//! `cargo test` and by CI under AddressSanitizer (`SHRINKER_SANITIZE=1`:
//! smaller and shorter), where a walker or a reparent touching freed group
//! data, a freed unit, or a freed object's payload is a reported
//! use-after-free.
//!
//! # What can fail, and what catches it
//!
//! | bug | caught by |
//! |---|---|
//! | use-after-free (group data, units, list slots, objects) | ASan; the object's magic and payload checked on every access |
//! | an object freed twice | the per-id ledger (`alive → dropped` exactly once) and the magic cleared on drop |
//! | an object leaked or lost | created − freed by scan − removed by hand = on the lists = alive (the ledger's live count) |
//! | an object stranded in a removed group | the sum of `count` over *live* groups equals `len()`; after every group is removed all objects are on the root's lists |
//! | a lost shrinker bit | a group reclaim at priority 0 of every populated (group, node) must empty it; after a removal, reclaim of the parent must find the moved objects |
//! | lost or absurd deferred work | an exact scenario (predicted by the kernel's formula) removed into the root; a bound on the root's deferred work after the torture |
//! | a callback for a group whose removal returned | every callback checks the group's state |
//! | a panic in a callback (caught by the registry) | `stats().panics == 0` and the ledger's first failure |
//! | a deadlock | a watchdog that aborts the process loudly, with the counters |
#![cfg(not(loom))]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use shrinker::{
    Count, GroupError, GroupId, GroupObserver, Isolate, ListLru, LruKey, Registered, Scan, Shrink,
    ShrinkControl, ShrinkError, ShrinkRequest, ShrinkerBuilder, ShrinkerId, ShrinkerRegistry,
};

const NODES: usize = 2;

fn sanitize() -> bool {
    std::env::var_os("SHRINKER_SANITIZE").is_some()
}

/// `normal` in ordinary runs, `sanitized` under ASan (and a quarter of it
/// under Miri, where it would barely run at all).
fn budget(normal_ms: u64, sanitized_ms: u64) -> Duration {
    if cfg!(miri) {
        Duration::from_millis(normal_ms / 20)
    } else if sanitize() {
        Duration::from_millis(sanitized_ms)
    } else {
        Duration::from_millis(normal_ms)
    }
}

/// The timed scenarios run one after the other: on the 2-core machine each
/// wants every core, and a scenario starved by the other tests little.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// xorshift64*: deterministic per thread, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

// ---------------------------------------------------------------------------
// The ledger: every object's life, and the first failure seen anywhere
// (callback panics are caught by the registry, so they are recorded here).

/// Leaked per-test tables stay reachable from here, so that LeakSanitizer
/// (CI's ASan run) does not report them.
static KEPT: Mutex<Vec<&'static (dyn Sync + 'static)>> = Mutex::new(Vec::new());

fn keep<T: Sync + 'static>(t: &'static T) -> &'static T {
    KEPT.lock().unwrap_or_else(|e| e.into_inner()).push(t);
    t
}

const UNBORN: u8 = 0;
const ALIVE: u8 = 1;
const DROPPED: u8 = 2;

struct Ledger {
    /// Object id → UNBORN / ALIVE / DROPPED.
    state: Box<[AtomicU8]>,
    next_id: AtomicUsize,
    live: AtomicUsize,
    failure: Mutex<Option<String>>,
}

impl Ledger {
    /// A ledger for at most `cap` objects, leaked so that objects can point
    /// to it without a reference count (a few MiB per test).
    fn leak(cap: usize) -> &'static Ledger {
        keep(Box::leak(Box::new(Ledger {
            state: (0..cap).map(|_| AtomicU8::new(UNBORN)).collect(),
            next_id: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            failure: Mutex::new(None),
        })))
    }

    /// Record the first failure, then panic with it.
    #[track_caller]
    fn fail(&self, msg: String) -> ! {
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(msg.clone());
        }
        drop(f);
        panic!("{msg}");
    }

    fn check_no_failure(&self) {
        let f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        assert!(f.is_none(), "a check failed (maybe in a callback): {f:?}");
    }

    fn live(&self) -> usize {
        // Relaxed: read after every thread was joined, or as a throttle.
        self.live.load(Ordering::Relaxed)
    }

    fn created(&self) -> usize {
        // Relaxed: as `live`.
        self.next_id.load(Ordering::Relaxed).min(self.state.len())
    }
}

const MAGIC: u64 = 0x5348_524B_2D4F_424A;
const POISON: u64 = 0xDEAD_DEAD_DEAD_DEAD;

fn salt(id: u32) -> u64 {
    u64::from(id) ^ 0xA5A5_5A5A_0F0F_F0F0
}

/// A cached object: checked on every access, poisoned when dropped. The
/// payload is a separate heap block, so that ASan reports any access to an
/// object after it was dropped (the list's slots themselves are never
/// returned to the allocator while the `ListLru` lives).
struct Obj {
    magic: u64,
    id: u32,
    /// Second chance: the isolate callback rotates it once.
    referenced: bool,
    payload: Box<u64>,
    ledger: &'static Ledger,
}

impl Obj {
    /// A new object, or `None` when the ledger is full.
    fn new(ledger: &'static Ledger, referenced: bool) -> Option<Obj> {
        // Relaxed: a unique number; the state table orders the rest.
        let id = ledger.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = ledger.state.get(id)?;
        // Relaxed: one thread owns an id from here until the drop.
        if slot.swap(ALIVE, Ordering::Relaxed) != UNBORN {
            ledger.fail(format!("object id {id} handed out twice"));
        }
        // Relaxed: a count, compared only after joins (or as a throttle).
        ledger.live.fetch_add(1, Ordering::Relaxed);
        let id = id as u32;
        Some(Obj {
            magic: MAGIC,
            id,
            referenced,
            payload: Box::new(salt(id)),
            ledger,
        })
    }

    fn check(&self) {
        if self.magic != MAGIC || *self.payload != salt(self.id) {
            self.ledger.fail(format!(
                "object {} corrupt: magic {:#x}, payload {:#x}",
                self.id, self.magic, *self.payload
            ));
        }
    }
}

impl Drop for Obj {
    fn drop(&mut self) {
        self.check();
        // AcqRel: the ALIVE → DROPPED transition happens once per id.
        let was = self.ledger.state[self.id as usize].swap(DROPPED, Ordering::AcqRel);
        if was != ALIVE {
            self.ledger
                .fail(format!("object {} dropped twice (state {was})", self.id));
        }
        self.magic = POISON;
        *self.payload = POISON;
        // Relaxed: as in `new`.
        self.ledger.live.fetch_sub(1, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// Group states, for "no callback for a group whose removal returned".

const G_UNKNOWN: u8 = 0;
const G_LIVE: u8 = 1;
const G_REMOVED: u8 = 2;

struct GroupStates(Box<[AtomicU8]>);

impl GroupStates {
    fn leak(cap: usize) -> &'static GroupStates {
        keep(Box::leak(Box::new(GroupStates(
            (0..cap).map(|_| AtomicU8::new(G_UNKNOWN)).collect(),
        ))))
    }
    fn cap(&self) -> usize {
        self.0.len()
    }
    fn set(&self, g: GroupId, s: u8) {
        if let Some(a) = self.0.get(g.index() as usize) {
            // Release: pairs with the Acquire in `get`; set after
            // `remove_group` returned.
            a.store(s, Ordering::Release);
        }
    }
    fn get(&self, g: GroupId) -> u8 {
        // Acquire: pairs with the Release in `set`.
        self.0
            .get(g.index() as usize)
            .map_or(G_UNKNOWN, |a| a.load(Ordering::Acquire))
    }
}

// ---------------------------------------------------------------------------
// The cache: a group-aware, NUMA-aware shrinker over a `ListLru<Obj>`.

struct Cache {
    lru: Arc<ListLru<Obj>>,
    /// Objects freed by `scan`.
    freed: AtomicU64,
    ledger: &'static Ledger,
    groups: &'static GroupStates,
    /// `scan` answers `Stop` (cannot make progress): all work is deferred.
    stop_scans: AtomicBool,
    /// `count` lingers a few microseconds before answering `Empty`, to
    /// widen the walker's window between "empty" and its clear of the bit.
    linger_on_empty: AtomicBool,
}

impl Cache {
    fn check_group(&self, sc: &ShrinkControl, what: &str) {
        if sc.group() != GroupId::ROOT && self.groups.get(sc.group()) == G_REMOVED {
            self.ledger.fail(format!(
                "{what} called for group {} after its removal returned",
                sc.group().index()
            ));
        }
    }
}

impl Shrink for Cache {
    fn count(&self, sc: &ShrinkControl) -> Count {
        self.check_group(sc, "count");
        match self.lru.count(sc.node(), sc.group()) {
            // Relaxed: a test switch, set before the threads start.
            0 if self.linger_on_empty.load(Ordering::Relaxed) => {
                let t = Instant::now();
                while t.elapsed() < Duration::from_micros(3) {
                    std::hint::spin_loop();
                }
                Count::Empty
            }
            0 => Count::Empty,
            n => Count::Objects(n),
        }
    }

    fn scan(&self, sc: &mut ShrinkControl) -> Scan {
        self.check_group(sc, "scan");
        // Relaxed: a test switch.
        if self.stop_scans.load(Ordering::Relaxed) {
            return Scan::Stop;
        }
        let asked = sc.nr_to_scan();
        let mut budget = asked;
        let out = self.lru.walk(sc.node(), sc.group(), &mut budget, |o| {
            o.check();
            if o.referenced {
                o.referenced = false;
                Isolate::Rotate
            } else {
                Isolate::Removed
            }
        });
        let n = out.len();
        drop(out); // checks and poisons each object
        std::thread::yield_now(); // widen the pinned window
        self.check_group(sc, "scan (after the walk)");
        // Relaxed: a count, read after the callbacks are over.
        self.freed.fetch_add(n as u64, Ordering::Relaxed);
        sc.set_nr_scanned(asked - budget);
        Scan::Freed(n)
    }
}

/// A registered cache whose `ListLru` sets the shrinker's bit on every
/// empty → non-empty transition and is told about every group removal.
fn cache(
    reg: &ShrinkerRegistry,
    name: &str,
    ledger: &'static Ledger,
    groups: &'static GroupStates,
) -> Registered<Cache> {
    let id: Arc<OnceLock<ShrinkerId>> = Arc::default();
    let lru = {
        let (reg, id) = (reg.clone(), id.clone());
        Arc::new(ListLru::with_notify(NODES, move |node, group| {
            if let Some(&id) = id.get() {
                match reg.set_shrinker_bit(group, node, id) {
                    // A group being removed: its reparent notifies the parent.
                    Ok(()) | Err(ShrinkError::NoSuchGroup { .. }) => {}
                    Err(e) => ledger.fail(format!("set_shrinker_bit({group:?}, {node}): {e}")),
                }
            }
        }))
    };
    let weak: Weak<dyn GroupObserver> = Arc::downgrade(&lru) as _;
    reg.observe_groups(weak);
    let s = ShrinkerBuilder::new(name)
        .group_aware(true)
        .numa_aware(true)
        .build_in(
            reg,
            Cache {
                lru,
                freed: AtomicU64::new(0),
                ledger,
                groups,
                stop_scans: AtomicBool::new(false),
                linger_on_empty: AtomicBool::new(false),
            },
        )
        .expect("build");
    id.set(s.id()).expect("id set once");
    s.register()
}

fn req(group: GroupId, node: usize, priority: u8) -> ShrinkRequest {
    ShrinkRequest {
        node,
        priority,
        group,
    }
}

/// Objects on the lists of live groups (every node).
fn on_live_lists(reg: &ShrinkerRegistry, lru: &ListLru<Obj>) -> usize {
    reg.groups_under(GroupId::ROOT)
        .into_iter()
        .map(|g| (0..NODES).map(|n| lru.count(n, g)).sum::<usize>())
        .sum()
}

/// Shrink `group` at priority 0 on every node until `caches` hold nothing
/// there (bounded): a populated list whose bit was lost is never called.
fn drain_group(reg: &ShrinkerRegistry, caches: &[Registered<Cache>], group: GroupId) {
    for node in 0..NODES {
        let left = |c: &Registered<Cache>| c.lru.count(node, group);
        for _ in 0..16 {
            if caches.iter().all(|c| left(c) == 0) {
                break;
            }
            match reg.shrink(&req(group, node, 0)) {
                Ok(_) => {}
                Err(e) => panic!("draining group {}: {e}", group.index()),
            }
        }
        for c in caches {
            assert_eq!(
                left(c),
                0,
                "{c:?}: group {} node {node} still holds objects after 16 reclaims at \
                 priority 0: its shrinker bit was lost",
                group.index()
            );
        }
    }
}

/// Fails the test loudly (abort, with the counters) instead of hanging.
struct Watchdog {
    done: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(
        name: &'static str,
        limit: Duration,
        report: impl Fn() -> String + Send + 'static,
    ) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + limit;
            // Acquire: pairs with the Release in `drop`.
            while !d.load(Ordering::Acquire) {
                if Instant::now() > end {
                    eprintln!(
                        "WATCHDOG: {name} still running after {limit:?}: deadlock? {}",
                        report()
                    );
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Release: pairs with the watchdog's Acquire.
        self.done.store(true, Ordering::Release);
    }
}

/// Stops the other threads if this one panics (else the scope would wait
/// for them until the deadline).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        // Relaxed: a stop flag; the scope's join orders everything else.
        self.0.store(true, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Counters {
    created: [AtomicU64; 3],
    removed_by_user: [AtomicU64; 3],
    touched: AtomicU64,
    adds_to_removed: AtomicU64,
    shrinks: AtomicU64,
    shrinks_no_group: AtomicU64,
    groups_created: AtomicU64,
    groups_removed: AtomicU64,
    refused_has_children: AtomicU64,
    shrinker_rounds: AtomicU64,
    churn_objects: AtomicU64,
}

fn get(a: &AtomicU64) -> u64 {
    // Relaxed: counters, read after joins (or by the watchdog, roughly).
    a.load(Ordering::Relaxed)
}

fn bump(a: &AtomicU64) {
    // Relaxed: as `get`.
    a.fetch_add(1, Ordering::Relaxed);
}

/// The groups the churner made, for the others to pick from.
struct Tree {
    /// Live groups (not the root) with their depth (1 = child of the root).
    live: Vec<(GroupId, u8)>,
    /// Recently removed groups: adds to them are redirected to an ancestor,
    /// reclaims of them fail with `NoSuchGroup`.
    removed: VecDeque<GroupId>,
}

const MAX_DEPTH: u8 = 4;

fn pick_group(tree: &Mutex<Tree>, rng: &mut Rng) -> GroupId {
    let t = tree.lock().unwrap();
    match rng.below(10) {
        0 => GroupId::ROOT,
        1 | 2 if !t.removed.is_empty() => t.removed[rng.below(t.removed.len())],
        _ if !t.live.is_empty() => t.live[rng.below(t.live.len())].0,
        _ => GroupId::ROOT,
    }
}

#[test]
fn groups_churn_against_group_reclaim() {
    let _serial = serial();
    let reg = ShrinkerRegistry::builder().nodes(NODES).build().unwrap();
    let run = budget(2_000, 1_000);
    let deadline = Instant::now() + run;
    let ledger = Ledger::leak(if sanitize() { 1 << 20 } else { 1 << 22 });
    let states = GroupStates::leak(1 << 14);
    let live_cap = if sanitize() { 4_000 } else { 20_000 };
    let caches: Vec<_> = (0..3)
        .map(|i| cache(&reg, &format!("cache{i}"), ledger, states))
        .collect();
    let counters = Arc::new(Counters::default());
    let tree = Mutex::new(Tree {
        live: Vec::new(),
        removed: VecDeque::new(),
    });
    let stop = AtomicBool::new(false);
    let _watchdog = {
        let c = counters.clone();
        Watchdog::start(
            "groups_churn_against_group_reclaim",
            run + Duration::from_secs(60),
            move || {
                format!(
                    "shrinks {}, groups created {} removed {}, shrinker rounds {}",
                    get(&c.shrinks),
                    get(&c.groups_created),
                    get(&c.groups_removed),
                    get(&c.shrinker_rounds)
                )
            },
        )
    };
    let running = || Instant::now() < deadline && !stop.load(Ordering::Relaxed);

    std::thread::scope(|s| {
        // (a) Producers: add to random groups (removed ones included),
        // remove and touch by key now and then.
        for t in 0..2u64 {
            let (caches, counters, tree, stop) = (&caches, &*counters, &tree, &stop);
            s.spawn(move || {
                let _stop = StopOnDrop(stop);
                let mut rng = Rng::new(100 + t);
                let mut keys: Vec<(usize, LruKey)> = Vec::new();
                while running() {
                    if ledger.live() > live_cap {
                        std::thread::yield_now();
                        continue;
                    }
                    let c = rng.below(caches.len());
                    let node = rng.below(NODES);
                    let group = pick_group(tree, &mut rng);
                    if states.get(group) == G_REMOVED {
                        bump(&counters.adds_to_removed);
                    }
                    let Some(obj) = Obj::new(ledger, rng.one_in(4)) else {
                        break; // the ledger is full
                    };
                    let key = caches[c].lru.add(node, group, obj);
                    bump(&counters.created[c]);
                    if keys.len() < 256 {
                        keys.push((c, key));
                    } else {
                        let i = rng.below(keys.len());
                        keys[i] = (c, key);
                    }
                    if rng.one_in(6) {
                        let i = rng.below(keys.len());
                        let (c, k) = keys.swap_remove(i);
                        if rng.one_in(2) {
                            if let Some(o) = caches[c].lru.remove(k) {
                                o.check();
                                bump(&counters.removed_by_user[c]);
                            }
                        } else if caches[c].lru.touch(k) {
                            bump(&counters.touched);
                            keys.push((c, k));
                        }
                    }
                }
            });
        }
        // (b) Reclaimers: random groups (root and removed ones included),
        // nodes and priorities; sometimes a whole subtree.
        for t in 0..2u64 {
            let (reg, counters, tree, stop) = (&reg, &*counters, &tree, &stop);
            s.spawn(move || {
                let _stop = StopOnDrop(stop);
                let mut rng = Rng::new(200 + t);
                while running() {
                    let group = pick_group(tree, &mut rng);
                    let targets = if rng.one_in(8) {
                        reg.groups_under(group)
                    } else {
                        vec![group]
                    };
                    for g in targets {
                        let r = req(g, rng.below(NODES), rng.below(13) as u8);
                        match reg.shrink(&r) {
                            Ok(_) => bump(&counters.shrinks),
                            Err(ShrinkError::NoSuchGroup { group }) if group != GroupId::ROOT => {
                                bump(&counters.shrinks_no_group)
                            }
                            Err(e) => ledger.fail(format!("shrink({r:?}): {e}")),
                        }
                    }
                }
            });
        }
        // (c) The group churner: nested creates, removal of random groups
        // (refused with a typed error while they have children).
        {
            let (reg, counters, tree, stop) = (&reg, &*counters, &tree, &stop);
            s.spawn(move || {
                let _stop = StopOnDrop(stop);
                let mut rng = Rng::new(300);
                let mut exhausted = false;
                while running() {
                    // Let reclaim and producers run between tree changes.
                    for _ in 0..rng.below(16) {
                        std::thread::yield_now();
                    }
                    let n = tree.lock().unwrap().live.len();
                    let create = !exhausted && (n < 4 || (n < 24 && rng.one_in(2)));
                    if create {
                        let (parent, depth) = {
                            let t = tree.lock().unwrap();
                            let shallow: Vec<_> =
                                t.live.iter().filter(|(_, d)| *d < MAX_DEPTH).collect();
                            if shallow.is_empty() || rng.one_in(4) {
                                (GroupId::ROOT, 0)
                            } else {
                                *shallow[rng.below(shallow.len())]
                            }
                        };
                        match reg.create_group(parent) {
                            Ok(g) => {
                                if g.index() as usize + 1 >= states.cap() {
                                    exhausted = true;
                                }
                                states.set(g, G_LIVE);
                                bump(&counters.groups_created);
                                tree.lock().unwrap().live.push((g, depth + 1));
                            }
                            Err(e) => ledger.fail(format!("create_group({parent:?}): {e}")),
                        }
                    } else if n > 0 {
                        let g = {
                            let t = tree.lock().unwrap();
                            t.live[rng.below(t.live.len())].0
                        };
                        match reg.remove_group(g) {
                            Ok(()) => {
                                states.set(g, G_REMOVED);
                                bump(&counters.groups_removed);
                                let mut t = tree.lock().unwrap();
                                t.live.retain(|&(x, _)| x != g);
                                t.removed.push_back(g);
                                if t.removed.len() > 16 {
                                    t.removed.pop_front();
                                }
                            }
                            Err(GroupError::HasChildren { group, children }) => {
                                assert_eq!(group, g);
                                assert!(children > 0);
                                bump(&counters.refused_has_children);
                            }
                            Err(e) => ledger.fail(format!("remove_group({g:?}): {e}")),
                        }
                    } else {
                        std::thread::yield_now();
                    }
                }
            });
        }
        // (d) The shrinker churner: an extra group-aware cache registered,
        // filled, reclaimed by the others, unregistered and dropped.
        {
            let (reg, counters, tree, stop) = (&reg, &*counters, &tree, &stop);
            s.spawn(move || {
                let _stop = StopOnDrop(stop);
                let mut rng = Rng::new(400);
                let mut round = 0u64;
                while running() {
                    let extra = cache(reg, &format!("churn{round}"), ledger, states);
                    for _ in 0..64 {
                        let group = pick_group(tree, &mut rng);
                        let Some(obj) = Obj::new(ledger, false) else {
                            break;
                        };
                        extra.lru.add(rng.below(NODES), group, obj);
                        bump(&counters.churn_objects);
                    }
                    for _ in 0..rng.below(20) {
                        std::thread::yield_now();
                    }
                    assert_eq!(extra.stats().panics, 0, "{extra:?}: a callback panicked");
                    // Its objects die with the last reference to its list
                    // (maybe a removal in progress, which holds one).
                    drop(extra.unregister());
                    round += 1;
                    bump(&counters.shrinker_rounds);
                }
            });
        }
    });

    // Every thread has stopped: check the books.
    ledger.check_no_failure();
    let c = &*counters;
    for (i, s) in caches.iter().enumerate() {
        assert_eq!(s.stats().panics, 0, "{s:?}: a callback panicked");
        let created = get(&c.created[i]);
        let freed = get(&s.freed);
        let removed = get(&c.removed_by_user[i]);
        let len = s.lru.len() as u64;
        assert_eq!(
            created - freed - removed,
            len,
            "{s:?}: created {created} - freed {freed} - removed {removed} != on the lists {len}"
        );
        assert_eq!(
            on_live_lists(&reg, &s.lru) as u64,
            len,
            "{s:?}: objects on lists of removed groups (stranded)"
        );
    }
    let on_lists: usize = caches.iter().map(|s| s.lru.len()).sum();
    assert_eq!(
        ledger.live(),
        on_lists,
        "objects alive != objects on the lists (leak or double free)"
    );

    // Lost bits: every populated (group, node) of every other live group is
    // emptied by group reclaim at priority 0.
    let live: Vec<(GroupId, u8)> = tree.lock().unwrap().live.clone();
    let reparented_start: usize = caches.iter().map(|s| s.lru.len()).sum();
    for &(g, _) in live.iter().filter(|(g, _)| g.index() % 2 == 0) {
        drain_group(&reg, &caches, g);
    }
    // Remove every group, leaves first: everything ends on the root's lists.
    let mut by_depth = live.clone();
    by_depth.sort_by_key(|&(_, d)| std::cmp::Reverse(d));
    for &(g, _) in &by_depth {
        reg.remove_group(g).expect("leaves first: no children left");
        states.set(g, G_REMOVED);
    }
    assert_eq!(reg.nr_groups(), 1);
    let reparented: usize = caches.iter().map(|s| s.lru.len()).sum();
    for s in &caches {
        let root: usize = (0..NODES).map(|n| s.lru.count(n, GroupId::ROOT)).sum();
        assert_eq!(
            root,
            s.lru.len(),
            "{s:?}: not everything is on the root's lists"
        );
    }
    // Deferred work: each (group, node) counter is clamped to twice the
    // freeable count per add, and at most one add per concurrent reclaimer
    // is outstanding; removals sum counters up the tree (≤ MAX_DEPTH + 1
    // levels). Far above any honest value, far below a wrapped one.
    let bound = 2 * (2 + 2) * (ledger.created() as u64 + 1) * (u64::from(MAX_DEPTH) + 1);
    let mut deferred = 0;
    for s in &caches {
        let d = s.stats().deferred;
        assert!(d <= bound, "{s:?}: deferred {d} > {bound}");
        deferred += d;
    }
    // Root reclaim at priority 0 empties everything.
    for _ in 0..64 {
        if caches.iter().all(|s| s.lru.is_empty()) {
            break;
        }
        for node in 0..NODES {
            reg.shrink(&req(GroupId::ROOT, node, 0)).unwrap();
        }
    }
    for (i, s) in caches.iter().enumerate() {
        assert!(
            s.lru.is_empty(),
            "{s:?}: {} left after root reclaim",
            s.lru.len()
        );
        assert_eq!(
            get(&c.created[i]),
            get(&s.freed) + get(&c.removed_by_user[i])
        );
        assert_eq!(s.stats().panics, 0);
    }
    assert_eq!(ledger.live(), 0, "objects alive after everything was freed");
    ledger.check_no_failure();
    let created: u64 = c.created.iter().map(get).sum();
    let freed: u64 = caches.iter().map(|s| get(&s.freed)).sum();
    let by_user: u64 = c.removed_by_user.iter().map(get).sum();
    eprintln!(
        "torture_groups: {created} objects created ({} to removed groups) + {} by {} shrinker \
         rounds, {freed} freed by scan, {by_user} removed by key ({} touched); {reparented_start} \
         on the lists at the end, {reparented} reparented to the root; groups {} created, {} \
         removed ({} refused: children); {} shrinks ({} of removed groups); root deferred {deferred}",
        get(&c.adds_to_removed),
        get(&c.churn_objects),
        get(&c.shrinker_rounds),
        get(&c.touched),
        get(&c.groups_created),
        get(&c.groups_removed),
        get(&c.refused_has_children),
        get(&c.shrinks),
        get(&c.shrinks_no_group),
    );
    assert!(get(&c.shrinks) > 0 && get(&c.groups_removed) > 0 && created > 0);
    drop(caches);
    assert!(reg.is_empty());
    shrinker_rcu::rcu_barrier(); // every group and node freed before the test ends
}

/// A reclaimer keeps shrinking group G (gentle priorities, so G keeps
/// objects and deferred work) and a producer keeps adding to it, while G is
/// removed: afterwards G's objects, the ones added after the removal too,
/// are all on the parent's lists, and reclaim of the parent finds and frees
/// every one of them (the reparent set the parent's bits).
#[test]
fn removal_during_group_reclaim_moves_everything_to_the_parent() {
    let _serial = serial();
    let reg = ShrinkerRegistry::builder().nodes(NODES).build().unwrap();
    let run = budget(1_000, 500);
    let deadline = Instant::now() + run;
    let ledger = Ledger::leak(1 << 21);
    let states = GroupStates::leak(1 << 14);
    let caches: Vec<_> = (0..3)
        .map(|i| cache(&reg, &format!("cache{i}"), ledger, states))
        .collect();
    let rounds = AtomicU64::new(0);
    let shrinks = AtomicU64::new(0);
    let _watchdog = Watchdog::start(
        "removal_during_group_reclaim_moves_everything_to_the_parent",
        run + Duration::from_secs(60),
        String::new,
    );
    let mut rng = Rng::new(7);
    let mut created = [0u64; 3];
    let mut late_adds = 0u64;
    let mut moved = 0usize;
    // P is a child of the root, or a grandchild, in turn.
    let mut chain = Vec::new();
    // Past the deadline, go on (up to 10 s more) until some round had an
    // add land after the removal: the race this test is about.
    let hard_deadline = deadline + Duration::from_secs(10);
    while (Instant::now() < deadline || (late_adds == 0 && Instant::now() < hard_deadline))
        && chain.len() < states.cap() / 4
    {
        let round = get(&rounds);
        let p = if round % 2 == 0 {
            reg.create_group(GroupId::ROOT).unwrap()
        } else {
            let a = reg.create_group(GroupId::ROOT).unwrap();
            chain.push(a);
            reg.create_group(a).unwrap()
        };
        let g = reg.create_group(p).unwrap();
        for x in [p, g] {
            states.set(x, G_LIVE);
        }
        // Every fourth round P has objects of its own on node 0 (the move must
        // add to them, not replace them); otherwise P's lists are empty before the
        // move, so only the reparent's notify can set P's bits.
        for (i, c) in caches.iter().enumerate() {
            for node in 0..NODES {
                for k in 0..(50 + 50 * node) {
                    let own = round % 4 == 0 && node == 0 && k % 5 == 0;
                    let target = if own { p } else { g };
                    c.lru
                        .add(node, target, Obj::new(ledger, k % 3 == 0).unwrap());
                    created[i] += 1;
                }
            }
        }
        let removed = AtomicBool::new(false);
        // Remove G after 0-500 µs of reclaim and production.
        let wait = Duration::from_micros(rng.below(500) as u64);
        let seed = rng.next();
        let produced = std::thread::scope(|s| {
            let (reg, caches, removed, shrinks) = (&reg, &caches, &removed, &shrinks);
            s.spawn(move || {
                let mut rng = Rng::new(seed);
                loop {
                    let r = req(g, rng.below(NODES), 4 + rng.below(9) as u8);
                    match reg.shrink(&r) {
                        Ok(_) => bump(shrinks),
                        Err(ShrinkError::NoSuchGroup { .. }) => break,
                        Err(e) => panic!("shrink({r:?}): {e}"),
                    }
                }
            });
            let producer = s.spawn(move || {
                let mut rng = Rng::new(seed ^ 1);
                let mut made = [0u64; 3];
                let mut after = 0u64;
                // Relaxed: a stop flag; the join orders the rest.
                while after < 8 {
                    if removed.load(Ordering::Relaxed) {
                        after += 1;
                    }
                    let c = rng.below(caches.len());
                    caches[c]
                        .lru
                        .add(rng.below(NODES), g, Obj::new(ledger, false).unwrap());
                    made[c] += 1;
                    if rng.one_in(8) {
                        std::thread::yield_now();
                    }
                }
                (made, after)
            });
            let start = Instant::now();
            while start.elapsed() < wait {
                std::hint::spin_loop();
            }
            reg.remove_group(g).unwrap();
            states.set(g, G_REMOVED);
            // Relaxed: see the producer.
            removed.store(true, Ordering::Relaxed);
            producer.join().unwrap()
        });
        let (made, after) = produced;
        late_adds += after;
        for (i, c) in caches.iter().enumerate() {
            created[i] += made[i];
            for node in 0..NODES {
                assert_eq!(
                    c.lru.count(node, g),
                    0,
                    "{c:?}: removed group {g:?} holds objects"
                );
            }
            let on_p: usize = (0..NODES).map(|n| c.lru.count(n, p)).sum();
            assert_eq!(
                on_p,
                c.lru.len(),
                "{c:?}: objects of {g:?} not all on its parent"
            );
            moved += on_p;
            assert_eq!(
                created[i] - get(&c.freed),
                c.lru.len() as u64,
                "{c:?}: lost objects"
            );
        }
        assert_eq!(
            ledger.live(),
            caches.iter().map(|c| c.lru.len()).sum::<usize>()
        );
        // Reclaim of the parent finds every moved object (no bit lost).
        drain_group(&reg, &caches, p);
        assert_eq!(ledger.live(), 0);
        reg.remove_group(p).unwrap();
        states.set(p, G_REMOVED);
        if let Some(&a) = chain.last().filter(|_| round % 2 == 1) {
            reg.remove_group(a).unwrap();
        }
        bump(&rounds);
    }
    ledger.check_no_failure();
    let bound = 2 * 2 * (ledger.created() as u64 + 1) * 3;
    for c in &caches {
        assert_eq!(c.stats().panics, 0, "{c:?}: a callback panicked");
        assert!(c.stats().deferred <= bound, "{c:?}: {:?}", c.stats());
    }
    eprintln!(
        "torture_groups (removal during reclaim): {} rounds, {} shrinks of the dying group, \
         {moved} objects moved to the parent ({late_adds} added after the removal), {} freed",
        get(&rounds),
        get(&shrinks),
        caches.iter().map(|c| get(&c.freed)).sum::<u64>(),
    );
    assert!(get(&rounds) > 0);
    assert!(
        late_adds > 0,
        "no add ever raced a removal: the test did not exercise its race"
    );
    drop(caches);
    shrinker_rcu::rcu_barrier();
}

/// Deferred work follows removals up to the root, exactly: the numbers are
/// the kernel's formula (engine/mod.rs) for 100 and 40 objects at priority 2,
/// where every pass defers and none scans.
#[test]
fn deferred_work_follows_removals_to_the_root_exactly() {
    let reg = ShrinkerRegistry::builder().nodes(NODES).build().unwrap();
    let ledger = Ledger::leak(1 << 12);
    let states = GroupStates::leak(16);
    let caches: Vec<_> = (0..3)
        .map(|i| cache(&reg, &format!("cache{i}"), ledger, states))
        .collect();
    let p = reg.create_group(GroupId::ROOT).unwrap();
    let g = reg.create_group(p).unwrap();
    for c in &caches {
        for _ in 0..100 {
            c.lru.add(0, g, Obj::new(ledger, false).unwrap());
        }
        for _ in 0..40 {
            c.lru.add(1, p, Obj::new(ledger, false).unwrap());
        }
    }
    // G, node 0: delta = (100 >> 2) * 4 / 2 = 50 per pass, below a batch
    // and below 100, so nothing is scanned: 50, then 50 + 50, then
    // 100 + 50 (under the cap of 200).
    for _ in 0..3 {
        reg.shrink(&req(g, 0, 2)).unwrap();
    }
    // P, node 1: delta = (40 >> 2) * 2 = 20.
    reg.shrink(&req(p, 1, 2)).unwrap();
    for c in &caches {
        assert_eq!(c.stats().scan_calls, 0);
    }
    // Q, node 1, 30 objects, scans refused: at priority 0, delta = 60 and
    // total = min(nr + 60, 60) = 60 each pass, and the kernel's clamp keeps
    // the deferred work at 2 × 30 = 60 however often it is deferred.
    let q = reg.create_group(GroupId::ROOT).unwrap();
    for c in &caches {
        for _ in 0..30 {
            c.lru.add(1, q, Obj::new(ledger, false).unwrap());
        }
        c.stop_scans.store(true, Ordering::Relaxed);
    }
    for _ in 0..10 {
        reg.shrink(&req(q, 1, 0)).unwrap();
    }
    for c in &caches {
        c.stop_scans.store(false, Ordering::Relaxed);
        assert_eq!(c.stats().scan_calls, 10, "{c:?}: refused once per pass");
        assert_eq!(c.stats().deferred, 0, "group work is not root work");
    }
    reg.remove_group(g).unwrap();
    for c in &caches {
        assert_eq!(c.lru.count(0, p), 100, "{c:?}");
        assert_eq!(c.stats().deferred, 0, "{c:?}: moved to P, not the root");
    }
    reg.remove_group(p).unwrap();
    reg.remove_group(q).unwrap();
    for c in &caches {
        assert_eq!(
            c.stats().deferred,
            150 + 20 + 60,
            "{c:?}: deferred work lost or duplicated on its way to the root"
        );
        assert_eq!(c.lru.count(0, GroupId::ROOT), 100);
        assert_eq!(c.lru.count(1, GroupId::ROOT), 40 + 30);
    }
    // Root reclaim takes the deferred work: node 0 at priority 0:
    // total = min(150 + 200, 200) = 200, everything scanned.
    reg.shrink(&req(GroupId::ROOT, 0, 0)).unwrap();
    reg.shrink(&req(GroupId::ROOT, 1, 0)).unwrap();
    for c in &caches {
        assert!(c.lru.is_empty(), "{c:?}");
    }
    assert_eq!(ledger.live(), 0);
    ledger.check_no_failure();
}

/// An add to a group whose removal has returned goes to its live ancestor
/// (the `ListLru` forwards it), sets the ancestor's bit, and is reclaimed
/// there; a key of an object that was moved still works.
#[test]
fn add_to_a_removed_group_lands_on_the_live_ancestor() {
    let reg = ShrinkerRegistry::builder().nodes(NODES).build().unwrap();
    let ledger = Ledger::leak(1 << 10);
    let states = GroupStates::leak(16);
    let c = cache(&reg, "c", ledger, states);
    let a = reg.create_group(GroupId::ROOT).unwrap();
    let b = reg.create_group(a).unwrap();
    let g = reg.create_group(b).unwrap();
    let moved = c.lru.add(1, g, Obj::new(ledger, false).unwrap());
    reg.remove_group(g).unwrap();
    reg.remove_group(b).unwrap();
    // Never added to before its removal: lists allocated by the reparent.
    let h = reg.create_group(a).unwrap();
    reg.remove_group(h).unwrap();
    for dead in [g, b, h] {
        c.lru.add(1, dead, Obj::new(ledger, false).unwrap());
        assert_eq!(c.lru.count(1, dead), 0);
        assert_eq!(
            reg.shrink(&req(dead, 1, 0)),
            Err(ShrinkError::NoSuchGroup { group: dead })
        );
    }
    assert_eq!(c.lru.count(1, a), 4);
    assert!(c.lru.touch(moved), "a moved object's key still works");
    assert!(c.lru.remove(moved).is_some());
    assert_eq!(
        reg.shrink(&req(a, 1, 0)),
        Ok(3),
        "the ancestor's bit is set"
    );
    assert!(c.lru.is_empty());
    assert_eq!(ledger.live(), 0);
    ledger.check_no_failure();
}

/// The store-buffering handshake between a producer's empty → non-empty
/// add and a walker's clear-on-`Empty`, round after round: the walker counts
/// an empty list (and lingers there), the producer adds while it lingers
/// (its notify may still see the old bit), the walker clears the bit and
/// counts again. At priority 12 the walk never scans one object, so after
/// every round the object is still there, and a reclaim at priority 0 must
/// find it: a bit left clear over a non-empty list is a lost object.
#[test]
fn empty_to_non_empty_races_with_the_walkers_clear_keep_the_bit() {
    let _serial = serial();
    let reg = ShrinkerRegistry::builder().nodes(NODES).build().unwrap();
    let run = budget(600, 300);
    let deadline = Instant::now() + run;
    let ledger = Ledger::leak(1 << 21);
    let states = GroupStates::leak(16);
    let c = cache(&reg, "c", ledger, states);
    c.linger_on_empty.store(true, Ordering::Relaxed);
    let g = reg.create_group(GroupId::ROOT).unwrap();
    let _watchdog = Watchdog::start(
        "empty_to_non_empty_races_with_the_walkers_clear_keep_the_bit",
        run + Duration::from_secs(60),
        String::new,
    );
    let start = std::sync::Barrier::new(3);
    let end = std::sync::Barrier::new(3);
    let done = AtomicBool::new(false);
    let mut rounds = 0u64;
    let mut emptied = 0u64;
    let mut failure = None;
    let mut counted = 0u64;
    std::thread::scope(|s| {
        let (reg, c, start, end, done) = (&reg, &c, &start, &end, &done);
        // The producer: one add per round, after 0-6 µs.
        s.spawn(move || {
            let mut rng = Rng::new(11);
            loop {
                start.wait();
                // Relaxed: set before the `start` barrier that released us.
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                let delay = Duration::from_nanos(rng.below(6_000) as u64);
                while t.elapsed() < delay {
                    std::hint::spin_loop();
                }
                c.lru.add(0, g, Obj::new(ledger, false).unwrap());
                end.wait();
            }
        });
        // The walker: one gentle pass per round (counts, never scans).
        s.spawn(move || loop {
            start.wait();
            // Relaxed: as the producer's.
            if done.load(Ordering::Relaxed) {
                break;
            }
            reg.shrink(&req(g, 0, 12)).unwrap();
            end.wait();
        });
        let _stop = StopOnDrop(done);
        // Past the deadline, go on (up to 10 s more) until some round had
        // the walker's clear race the add: the race this test is about.
        let hard_deadline = deadline + Duration::from_secs(10);
        while Instant::now() < deadline || (emptied == 0 && Instant::now() < hard_deadline) {
            // Each round starts with an empty list whose bit is set (the
            // last round's drain freed the object without seeing `Empty`).
            start.wait();
            end.wait();
            rounds += 1;
            // Failures end the loop (the other threads wait at `start`)
            // and are reported after the scope.
            if c.lru.count(0, g) != 1 {
                failure = Some(format!("round {rounds}: {} objects", c.lru.count(0, g)));
                break;
            }
            let calls = c.stats().count_calls + 1;
            let _ = reg.shrink(&req(g, 0, 0));
            if c.lru.count(0, g) != 0 {
                failure = Some(format!(
                    "round {rounds}: the bit was left clear over a non-empty list"
                ));
                break;
            }
            // The drain counted once; the walker twice if it saw `Empty`
            // (and cleared the bit): the rounds that test the handshake.
            if calls - counted == 3 {
                emptied += 1;
            }
            counted = c.stats().count_calls;
        }
        // Relaxed: the barrier below publishes it.
        done.store(true, Ordering::Relaxed);
        start.wait();
    });
    assert_eq!(failure, None);
    ledger.check_no_failure();
    assert_eq!(c.stats().panics, 0);
    assert_eq!(ledger.live(), 0);
    eprintln!(
        "torture_groups (bit handshake): {rounds} rounds, {emptied} with the walker's clear \
         racing the add"
    );
    assert!(rounds > 0);
    assert!(
        emptied > 0,
        "no round had the walker's clear race the add: the test did not exercise its race"
    );
}

/// Regression test. A `ListLru` that started observing groups while a
/// removal was running its observers (step 5 of `remove_group`) was not
/// told about that removal, so an add to the dying group landed on the
/// group's own list, where no reclaim ever looks: the group walk refuses
/// the removed group, the root walk counts only the root's lists. Now
/// `observe_groups` reports removals in progress to the new observer. (The kernel's `list_lru` registration
/// and `memcg_reparent_list_lrus` serialise on `list_lrus_mutex`, and a
/// dying memcg's objects are charged to the parent.) Here the window is
/// forced by creating the cache from another observer's callback; in a
/// program it is a cache created on one thread while another removes a
/// group, and an add to that group before `remove_group` returned.
#[test]
fn a_list_lru_created_during_a_removal_strands_adds_to_the_dying_group() {
    struct Late {
        reg: ShrinkerRegistry,
        ledger: &'static Ledger,
        states: &'static GroupStates,
        made: Mutex<Option<Registered<Cache>>>,
    }
    impl GroupObserver for Late {
        fn reparent(&self, from: GroupId, _to: GroupId) {
            // A new cache appears, and something is added to `from` before
            // its `remove_group` has returned.
            let c = cache(&self.reg, "late", self.ledger, self.states);
            c.lru.add(0, from, Obj::new(self.ledger, false).unwrap());
            *self.made.lock().unwrap() = Some(c);
        }
    }
    let reg = ShrinkerRegistry::builder().nodes(NODES).build().unwrap();
    let ledger = Ledger::leak(16);
    let states = GroupStates::leak(16);
    let late = Arc::new(Late {
        reg: reg.clone(),
        ledger,
        states,
        made: Mutex::new(None),
    });
    let weak: Weak<dyn GroupObserver> = Arc::downgrade(&late) as _;
    reg.observe_groups(weak);
    let g = reg.create_group(GroupId::ROOT).unwrap();
    reg.remove_group(g).unwrap();
    let c = late.made.lock().unwrap().take().unwrap();
    assert_eq!(c.lru.len(), 1);
    for node in 0..NODES {
        let _ = reg.shrink(&req(GroupId::ROOT, node, 0)).unwrap();
    }
    assert_eq!(
        on_live_lists(&reg, &c.lru),
        c.lru.len(),
        "the object is on the removed group's list (count there: {}), out of reclaim's reach",
        c.lru.count(0, g)
    );
}
