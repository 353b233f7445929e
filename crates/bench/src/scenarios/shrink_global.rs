//! `shrink-global`: one reclaim walk over 4,000 registered shrinkers with cheap callbacks.
//!
//! | variant | the registry |
//! |---|---|
//! | `lockless` | `shrinker::ShrinkerRegistry` (Linux 6.7: RCU list, refcount pin, no lock in the walk) |
//! | `rwlock-trylock` | the pre-6.7 registry: a `std::sync::RwLock<Vec<_>>`; a walk takes it with `try_read` and gives up if that fails (`down_read_trylock`), and stops early when a writer is waiting (`rwsem_is_contended`) |
//!
//! Every shrinker's `count` returns 100 objects, so at priority 12 a visit is a count, a
//! deferred-work swap and the delta arithmetic, and no scan: the walk's own overhead dominates.
//! Measured quietly, and with one extra thread registering 3 shrinkers and unregistering them in
//! a loop. The `srcu-style` design of `register-churn` walks like `lockless` without the pin; it
//! is not repeated here.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use shrinker::{
    Count, Registered, Scan, Shrink, ShrinkControl, ShrinkRequest, ShrinkerBuilder,
    ShrinkerRegistry,
};
use shrinker_rcu::{read_lock, RcuList};

use super::Scenario;
use crate::harness::{self, Config, Progress, Record, Report};

/// The registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: NAME,
    summary: "one reclaim walk over 4,000 shrinkers: lockless vs rwlock-trylock; 1 and 2 threads; quiet and under register churn",
    run,
};

const NAME: &str = "shrink-global";
const REFERENCE: &str = "rwlock-trylock";
const THREADS: [usize; 2] = [1, 2];
/// Registered shrinkers.
pub const SHRINKERS: usize = 4_000;
/// What every cheap shrinker's count reports.
const OBJECTS: usize = 100;

// ---------------------------------------------------------------------------------------------
// The cheap shrinker and the three registry designs (shared with `register-churn`)
// ---------------------------------------------------------------------------------------------

/// A cache with a fixed object count whose scan frees what it is asked.
#[derive(Debug)]
pub struct Cheap {
    objects: AtomicUsize,
}

impl Cheap {
    /// A cache reporting `OBJECTS` objects.
    pub fn new() -> Self {
        Cheap {
            objects: AtomicUsize::new(OBJECTS),
        }
    }
}

impl Default for Cheap {
    fn default() -> Self {
        Self::new()
    }
}

/// The callbacks as the baselines call them (dynamic dispatch, like `lockless`).
pub trait BaseShrink: Send + Sync {
    /// `count_objects`.
    fn count_objects(&self) -> usize;
    /// `scan_objects`.
    fn scan_objects(&self, nr: usize) -> usize;
}

impl BaseShrink for Cheap {
    #[inline]
    fn count_objects(&self) -> usize {
        self.objects.load(Ordering::Relaxed)
    }
    #[inline]
    fn scan_objects(&self, nr: usize) -> usize {
        nr
    }
}

impl Shrink for Cheap {
    #[inline]
    fn count(&self, _: &ShrinkControl) -> Count {
        Count::Objects(self.count_objects())
    }
    #[inline]
    fn scan(&self, sc: &mut ShrinkControl) -> Scan {
        Scan::Freed(self.scan_objects(sc.nr_to_scan()))
    }
}

/// A baseline's shrinker: callbacks plus the kernel's per-shrinker fields (`seeks`, `batch`,
/// `nr_deferred`).
pub struct BaseNode {
    shrink: Box<dyn BaseShrink>,
    seeks: u32,
    batch: usize,
    deferred: AtomicUsize,
}

impl BaseNode {
    /// A baseline shrinker with the cheap cache.
    pub fn new() -> Arc<Self> {
        Arc::new(BaseNode {
            shrink: Box::new(Cheap::new()),
            // Fields, as in `struct shrinker`: not constants the compiler could fold.
            seeks: std::hint::black_box(2),
            batch: std::hint::black_box(128),
            deferred: AtomicUsize::new(0),
        })
    }

    /// `do_shrink_slab`: a copy of the `shrinker` crate's engine (engine.rs) step for step,
    /// saturating arithmetic and the `DEFAULT_SEEKS` shift included, so that every variant does
    /// the same work per visit and the ratios measure the registries alone.
    #[inline]
    fn do_shrink(&self, priority: u32) -> usize {
        self.do_shrink_with(priority, &self.deferred)
    }

    /// [`do_shrink`](Self::do_shrink) with the deferred count of a memory group (the pre-6.7
    /// `shrinker_info.nr_deferred[id]`) instead of the shrinker's own.
    #[inline]
    pub fn do_shrink_with(&self, priority: u32, deferred: &AtomicUsize) -> usize {
        let freeable = self.shrink.count_objects();
        if freeable == 0 {
            return 0;
        }
        let nr = deferred.swap(0, Ordering::Relaxed);
        let delta = match self.seeks {
            0 => freeable / 2,
            2 => (freeable >> priority).saturating_mul(4) / 2,
            s => (freeable >> priority).saturating_mul(4) / s as usize,
        };
        let cap = freeable.saturating_mul(2);
        let mut total = (nr >> priority).saturating_add(delta).min(cap);
        let (mut freed, mut scanned) = (0usize, 0usize);
        while total >= self.batch || total >= freeable {
            let n = total.min(self.batch);
            freed = freed.saturating_add(self.shrink.scan_objects(n));
            scanned = scanned.saturating_add(n);
            if n == 0 {
                break;
            }
            total -= n;
        }
        let next = nr.saturating_add(delta).saturating_sub(scanned).min(cap);
        if next > 0 {
            deferred.fetch_add(next, Ordering::Relaxed);
        }
        freed
    }
}

/// The walk's priority as the baselines use it: a runtime value, as it is
/// for `lockless` (a field of the request) and for the kernel's
/// `shrink_slab`, not a constant the compiler could fold into the shifts of
/// every visit (the reason `seeks` and `batch` are opaque too).
#[inline]
pub fn opaque_priority(priority: u8) -> u32 {
    u32::from(std::hint::black_box(priority))
}

/// What one walk did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Walk {
    /// Shrinkers whose callbacks ran.
    pub visited: usize,
    /// The walk went over the whole list (it was not refused or cut short).
    pub completed: bool,
}

/// A shrinker registry design under test.
pub trait Design: Sync + Sized {
    /// What `register` returns.
    type Handle: Send;
    /// An empty registry.
    fn new() -> Self;
    /// Register one cheap shrinker.
    fn register(&self) -> Self::Handle;
    /// Unregister it.
    fn unregister(&self, h: Self::Handle);
    /// One reclaim walk at `priority`.
    fn walk(&self, priority: u8) -> Walk;
}

/// `lockless`: the `shrinker` crate, in a registry of its own.
pub struct Lockless {
    reg: ShrinkerRegistry,
}

impl Design for Lockless {
    type Handle = Registered<Cheap>;
    fn new() -> Self {
        Lockless {
            reg: ShrinkerRegistry::builder()
                .nodes(1)
                .build()
                .expect("registry"),
        }
    }
    fn register(&self) -> Self::Handle {
        ShrinkerBuilder::new("cheap")
            .build_in(&self.reg, Cheap::new())
            .expect("build")
            .register()
    }
    fn unregister(&self, h: Self::Handle) {
        let _cache: Cheap = h.unregister();
    }
    fn walk(&self, priority: u8) -> Walk {
        let req = ShrinkRequest {
            priority,
            ..Default::default()
        };
        self.reg.shrink(&req).expect("valid request");
        // The lockless walk is never refused and never cut short: it visits every shrinker
        // registered throughout the walk (the list length, give or take the churn thread's 3).
        Walk {
            visited: self.reg.len(),
            completed: true,
        }
    }
}

/// `rwlock-trylock`: the pre-6.7 `shrinker_rwsem` registry.
pub struct RwlockTrylock {
    list: RwLock<Vec<Arc<BaseNode>>>,
    /// Writers waiting for or holding the lock (`rwsem_is_contended`).
    writers: AtomicUsize,
}

impl RwlockTrylock {
    fn write(&self, f: impl FnOnce(&mut Vec<Arc<BaseNode>>)) {
        // Relaxed: a contention hint read by walks, as rwsem_is_contended is.
        self.writers.fetch_add(1, Ordering::Relaxed);
        let mut g = self.list.write().unwrap_or_else(|e| e.into_inner());
        f(&mut g);
        drop(g);
        self.writers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Design for RwlockTrylock {
    type Handle = Arc<BaseNode>;
    fn new() -> Self {
        RwlockTrylock {
            list: RwLock::new(Vec::new()),
            writers: AtomicUsize::new(0),
        }
    }
    fn register(&self) -> Self::Handle {
        let n = BaseNode::new();
        self.write(|v| v.push(n.clone()));
        n
    }
    fn unregister(&self, h: Self::Handle) {
        self.write(|v| {
            if let Some(i) = v.iter().rposition(|x| Arc::ptr_eq(x, &h)) {
                v.remove(i);
            }
        });
    }
    fn walk(&self, priority: u8) -> Walk {
        // `down_read_trylock`: std's futex RwLock also refuses while a writer waits.
        let Ok(g) = self.list.try_read() else {
            return Walk::default();
        };
        let priority = opaque_priority(priority);
        let mut visited = 0;
        for n in g.iter() {
            std::hint::black_box(n.do_shrink(priority));
            visited += 1;
            // Relaxed: see `write`.
            if self.writers.load(Ordering::Relaxed) != 0 {
                return Walk {
                    visited,
                    completed: false,
                };
            }
        }
        Walk {
            visited,
            completed: true,
        }
    }
}

/// `srcu-style`: an RCU list walked inside one read section; unregister unlinks, then waits
/// for a grace period before freeing (the reverted f95bdb700bc6).
pub struct SrcuStyle {
    list: RcuList<Arc<BaseNode>>,
}

impl Design for SrcuStyle {
    type Handle = Arc<BaseNode>;
    fn new() -> Self {
        SrcuStyle {
            list: RcuList::new(),
        }
    }
    fn register(&self) -> Self::Handle {
        let n = BaseNode::new();
        self.list.lock().push_back(n.clone());
        n
    }
    fn unregister(&self, h: Self::Handle) {
        let removed = self.list.lock().remove_first(|x| Arc::ptr_eq(x, &h));
        // `synchronize_srcu()` before the free.
        drop(removed.map(|r| r.into_inner()));
    }
    fn walk(&self, priority: u8) -> Walk {
        let g = read_lock();
        let priority = opaque_priority(priority);
        let mut visited = 0;
        for n in self.list.iter(&g) {
            std::hint::black_box(n.do_shrink(priority));
            visited += 1;
        }
        Walk {
            visited,
            completed: true,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------------

struct Sample {
    ns_per_shrinker: f64,
    completed_ratio: f64,
}

/// Walks on `threads` threads over `SHRINKERS` shrinkers for `duration`, with a churn thread
/// if `churn`.
fn measure<D: Design>(threads: usize, duration: Duration, churn: bool) -> Sample {
    let d = D::new();
    let handles: Vec<_> = (0..SHRINKERS).map(|_| d.register()).collect();
    let walks = AtomicU64::new(0);
    let completed = AtomicU64::new(0);
    let visited = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let runs = std::thread::scope(|s| {
        if churn {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let hs: Vec<_> = (0..3).map(|_| d.register()).collect();
                    for h in hs {
                        d.unregister(h);
                    }
                }
            });
        }
        let runs = harness::time_ops(threads, duration, &d, |d| {
            let w = d.walk(12);
            walks.fetch_add(1, Ordering::Relaxed);
            completed.fetch_add(u64::from(w.completed), Ordering::Relaxed);
            visited.fetch_add(w.visited as u64, Ordering::Relaxed);
        });
        stop.store(true, Ordering::Relaxed);
        runs
    });
    for h in handles {
        d.unregister(h);
    }
    // ns per shrinker visited: thread time over the shrinkers this run's walks visited.
    let thread_ns: f64 = runs.iter().map(|r| r.elapsed.as_nanos() as f64).sum();
    let v = visited.load(Ordering::Relaxed).max(1) as f64;
    let w = walks.load(Ordering::Relaxed).max(1) as f64;
    Sample {
        ns_per_shrinker: thread_ns / v,
        completed_ratio: completed.load(Ordering::Relaxed) as f64 / w,
    }
}

struct Variant {
    name: &'static str,
    measure: fn(usize, Duration, bool) -> Sample,
}

const VARIANTS: &[Variant] = &[
    Variant {
        name: "lockless",
        measure: measure::<Lockless>,
    },
    Variant {
        name: "rwlock-trylock",
        measure: measure::<RwlockTrylock>,
    },
];

fn run(cfg: &Config, progress: &mut Progress) -> Report {
    let duration = cfg.duration / 2;
    let names: Vec<&str> = VARIANTS.iter().map(|v| v.name).collect();
    // [variant][thread index][rep] of (quiet, under churn).
    let samples = harness::interleave(cfg, progress, &names, &THREADS, |i, threads| {
        let v = &VARIANTS[i];
        (
            (v.measure)(threads, duration, false),
            (v.measure)(threads, duration, true),
        )
    });
    let pick = |f: fn(&(Sample, Sample)) -> f64| harness::project(&samples, f);
    let quiet = pick(|s| s.0.ns_per_shrinker);
    let churn_ns = pick(|s| s.1.ns_per_shrinker);
    let churn_ratio = pick(|s| s.1.completed_ratio);
    let mut records = Vec::new();
    for (t, &threads) in THREADS.iter().enumerate() {
        for (i, v) in VARIANTS.iter().enumerate() {
            records.push(
                Record::new(NAME, v.name, threads, "ns_per_shrinker", &quiet[i][t])
                    .with_extra("shrinkers", SHRINKERS),
            );
        }
    }
    harness::add_ratio_to_variant(&mut records, REFERENCE);
    let mut churn_records = Vec::new();
    for (t, &threads) in THREADS.iter().enumerate() {
        for (i, v) in VARIANTS.iter().enumerate() {
            churn_records.push(Record::new(
                NAME,
                v.name,
                threads,
                "ns_per_shrinker_churn",
                &churn_ns[i][t],
            ));
        }
    }
    harness::add_ratio_to_variant(&mut churn_records, REFERENCE);
    records.extend(churn_records);
    for (t, &threads) in THREADS.iter().enumerate() {
        for (i, v) in VARIANTS.iter().enumerate() {
            records.push(Record::new(
                NAME,
                v.name,
                threads,
                "walks_completed_ratio",
                &churn_ratio[i][t],
            ));
        }
    }
    Report {
        scenario: NAME,
        title: format!(
            "one reclaim walk over {} shrinkers",
            harness::thousands(SHRINKERS)
        ),
        notes: vec![
            format!(
                "ns_per_shrinker = walking threads' total time / shrinkers visited; each visit is \
                 count (100 objects), deferred swap and delta at priority 12 (no scan). Median \
                 (min, max) of {} runs of {} ms; variants interleaved.",
                cfg.reps,
                duration.as_millis()
            ),
            "ns_per_shrinker_churn: the same with one more thread registering 3 shrinkers and \
             unregistering them in a loop; a refused or cut-short rwlock walk visits fewer \
             shrinkers, so its figure is per shrinker actually visited."
                .to_string(),
            "walks_completed_ratio (0..1, under churn) = walks that visited the whole list / all \
             walks. The rwlock walk is refused while a writer holds or waits for the lock, and \
             stops when a writer arrives (rwsem_is_contended)."
                .to_string(),
            format!("Ratios: median / median of `{REFERENCE}` at the same thread count."),
        ],
        records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn designs_walk_and_churn<D: Design>() {
        let d = D::new();
        let hs: Vec<_> = (0..10).map(|_| d.register()).collect();
        let w = d.walk(0);
        assert!(w.completed);
        assert_eq!(w.visited, 10);
        for h in hs {
            d.unregister(h);
        }
        assert_eq!(d.walk(12).visited, 0);
    }

    #[test]
    fn every_design_registers_walks_unregisters() {
        designs_walk_and_churn::<Lockless>();
        designs_walk_and_churn::<RwlockTrylock>();
        designs_walk_and_churn::<SrcuStyle>();
    }

    #[test]
    fn rwlock_walk_is_refused_while_a_writer_waits() {
        let d = RwlockTrylock::new();
        let h = d.register();
        let g = d.list.write().unwrap();
        assert!(!d.walk(12).completed);
        drop(g);
        assert!(d.walk(12).completed);
        d.unregister(h);
    }

    #[test]
    fn baseline_maths_matches_the_crate() {
        // 100 objects at priority 0: delta 200 → one scan of 128, 72 deferred.
        let n = BaseNode::new();
        assert_eq!(n.do_shrink(0), 128);
        assert_eq!(n.deferred.load(Ordering::Relaxed), 72);
    }

    #[test]
    fn every_variant_measures() {
        for v in VARIANTS {
            let s = (v.measure)(1, Duration::from_millis(5), true);
            assert!(
                s.ns_per_shrinker.is_finite() && s.ns_per_shrinker > 0.0,
                "{}",
                v.name
            );
            assert!((0.0..=1.0).contains(&s.completed_ratio));
        }
    }
}
