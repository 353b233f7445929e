//! `call-rcu`: what deferring work costs the caller, and how long until it has all run.
//!
//! Per repetition, from one thread:
//!
//! 1. `rcu_barrier()` (untimed), so the queue starts empty.
//! 2. **`ns_per_enqueue`**: time `N` = 10,000 calls of `call_rcu(closure)`, where the closure
//!    captures a `&'static AtomicUsize` and bumps it — a small real closure, boxed like any
//!    user's. The time of the barrier is not included.
//! 3. **`ms_to_barrier`**: time the `rcu_barrier()` that follows, i.e. until all `N` callbacks
//!    have run; then check the counter shows exactly `N` more (a benchmark whose callbacks never
//!    ran would silently measure nothing: it panics instead).
//! 4. **`ns_per_defer_drop`** (extra metric): time `N` calls of `defer_drop(Box<T>)` of
//!    32-byte objects allocated beforehand (the allocation is not timed), then wait until all
//!    `N` have been dropped.
//!
//! Reference variant `crossbeam-epoch`: `epoch::pin()` + `Guard::defer(closure)` for the same
//! closure, and `pin()` + `Guard::defer_destroy` for the same boxes, one pin per call as a
//! caller outside a read section must. crossbeam has no barrier and no promise of when deferred
//! work runs, so it has no `ms_to_barrier` row; its enqueue figure includes the garbage
//! collection its pins trigger, which is how crossbeam amortises reclamation onto callers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_epoch as epoch;

use super::Scenario;
use crate::harness::{self, Config, Progress, Record, Report};

/// The registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: NAME,
    summary:
        "call_rcu / defer_drop enqueue cost and time for rcu_barrier to see 10,000 callbacks run",
    run,
};

const NAME: &str = "call-rcu";
const REFERENCE: &str = "crossbeam-epoch";
/// Callbacks per repetition.
const N: usize = 10_000;
/// How long to wait for deferred drops after the barrier before declaring them lost.
const DROP_DEADLINE: Duration = Duration::from_secs(10);

/// Bumped by every shrinker-rcu callback.
static RCU_CALLBACKS: AtomicUsize = AtomicUsize::new(0);
/// Bumped by every drop of a `defer_drop`ped object.
static RCU_DROPS: AtomicUsize = AtomicUsize::new(0);
/// The same for crossbeam (not checked: crossbeam promises no completion time).
static EPOCH_CALLBACKS: AtomicUsize = AtomicUsize::new(0);
static EPOCH_DROPS: AtomicUsize = AtomicUsize::new(0);

/// A 32-byte object that counts its drops.
struct Tracked {
    drops: &'static AtomicUsize,
    _payload: [u64; 3],
}

impl Tracked {
    fn new(drops: &'static AtomicUsize) -> Self {
        Tracked {
            drops,
            _payload: [1, 2, 3],
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Relaxed: a counter; the reader synchronises through rcu_barrier() or a later poll.
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

/// One step of a repetition; steps are rotated so that none always runs first.
type Step = fn(&mut Samples);

#[derive(Default)]
struct Samples {
    rcu_enqueue: Vec<f64>,
    rcu_barrier_ms: Vec<f64>,
    rcu_defer_drop: Vec<f64>,
    epoch_enqueue: Vec<f64>,
    epoch_defer_destroy: Vec<f64>,
}

const STEPS: &[(&str, Step)] = &[
    ("shrinker-rcu call_rcu", rcu_call),
    ("crossbeam-epoch defer", epoch_defer),
    ("shrinker-rcu defer_drop", rcu_defer_drop),
    ("crossbeam-epoch defer_destroy", epoch_defer_destroy),
];

fn run(cfg: &Config, progress: &mut Progress) -> Report {
    let mut samples = Samples::default();
    progress.step(format_args!("warm-up"));
    for (_, step) in STEPS {
        step(&mut Samples::default());
    }
    for rep in 0..cfg.reps {
        for k in 0..STEPS.len() {
            let (what, step) = STEPS[(rep + k) % STEPS.len()];
            progress.step(format_args!("rep {}/{} {what}", rep + 1, cfg.reps));
            step(&mut samples);
        }
    }
    let mode = super::rcu_sync::barrier_mode_name();
    let mut records = vec![
        Record::new(
            NAME,
            "shrinker-rcu",
            1,
            "ns_per_enqueue",
            &samples.rcu_enqueue,
        ),
        Record::new(
            NAME,
            "shrinker-rcu",
            1,
            "ms_to_barrier",
            &samples.rcu_barrier_ms,
        ),
        Record::new(
            NAME,
            "shrinker-rcu",
            1,
            "ns_per_defer_drop",
            &samples.rcu_defer_drop,
        ),
    ];
    for r in &mut records {
        r.extra.push(("barrier_mode", mode.clone().into()));
        r.extra.push(("n", N.into()));
    }
    records.push(Record::new(
        NAME,
        REFERENCE,
        1,
        "ns_per_enqueue",
        &samples.epoch_enqueue,
    ));
    records.push(Record::new(
        NAME,
        REFERENCE,
        1,
        "ns_per_defer_drop",
        &samples.epoch_defer_destroy,
    ));
    harness::add_ratio_to_variant(&mut records, REFERENCE);
    Report {
        scenario: NAME,
        title: format!(
            "enqueue {} callbacks, then rcu_barrier",
            harness::thousands(N)
        ),
        notes: vec![
            format!(
                "ns_per_enqueue = time of N = {} call_rcu calls / N (barrier excluded); \
                 ms_to_barrier = the rcu_barrier() after them, all N checked to have run; \
                 median (min, max) of {} runs.",
                harness::thousands(N),
                cfg.reps
            ),
            "ns_per_defer_drop = time of N defer_drop(Box) calls / N (boxes allocated beforehand)."
                .to_string(),
            format!(
                "shrinker-rcu barrier mode: {mode}. Reference {REFERENCE}: pin() + \
                 Guard::defer / defer_destroy per call; it has no barrier."
            ),
        ],
        records,
    }
}

fn rcu_call(samples: &mut Samples) {
    shrinker_rcu::rcu_barrier();
    // Relaxed: single thread here, and rcu_barrier() ordered every earlier callback's bump.
    let before = RCU_CALLBACKS.load(Ordering::Relaxed);
    let counter: &'static AtomicUsize = &RCU_CALLBACKS;
    let t = Instant::now();
    for _ in 0..N {
        shrinker_rcu::call_rcu(move || {
            // Relaxed: a counter, read after rcu_barrier().
            counter.fetch_add(1, Ordering::Relaxed);
        });
    }
    let enqueue = t.elapsed();
    let t = Instant::now();
    shrinker_rcu::rcu_barrier();
    let barrier = t.elapsed();
    // Relaxed: rcu_barrier() returns only after every callback queued before it has run, and
    // its wake-up orders their effects before this load.
    let ran = RCU_CALLBACKS.load(Ordering::Relaxed) - before;
    assert_eq!(
        ran, N,
        "call-rcu: rcu_barrier() returned but only {ran} of {N} callbacks had run"
    );
    samples.rcu_enqueue.push(harness::ns_per(enqueue, N));
    samples
        .rcu_barrier_ms
        .push(barrier.as_nanos() as f64 / 1_000_000.0);
}

fn rcu_defer_drop(samples: &mut Samples) {
    // Every earlier repetition waited for its own drops, so the count is stable here.
    // Relaxed: single thread here.
    let before = RCU_DROPS.load(Ordering::Relaxed);
    let boxes: Vec<Box<Tracked>> = (0..N).map(|_| Box::new(Tracked::new(&RCU_DROPS))).collect();
    let t = Instant::now();
    for b in boxes {
        shrinker_rcu::defer_drop(b);
    }
    let enqueue = t.elapsed();
    shrinker_rcu::rcu_barrier();
    wait_for_drops(&RCU_DROPS, before + N);
    samples.rcu_defer_drop.push(harness::ns_per(enqueue, N));
}

/// Waits until `counter` reaches `target`, first right after `rcu_barrier()` (where a
/// kfree_rcu-like batch may still be in flight), then polling with grace periods in between.
///
/// # Panics
///
/// If the objects are not all dropped within [`DROP_DEADLINE`]: deferred frees were lost.
fn wait_for_drops(counter: &AtomicUsize, target: usize) {
    let deadline = Instant::now() + DROP_DEADLINE;
    // Acquire: pairs with nothing in particular (the drops are Relaxed); the loop only needs
    // to observe the count eventually.
    while counter.load(Ordering::Acquire) < target {
        assert!(
            Instant::now() < deadline,
            "call-rcu: only {} of {target} defer_drop objects were dropped after rcu_barrier() \
             and {DROP_DEADLINE:?}",
            counter.load(Ordering::Relaxed)
        );
        shrinker_rcu::synchronize_rcu();
        shrinker_rcu::rcu_barrier();
        thread::sleep(Duration::from_millis(1));
    }
}

fn epoch_defer(samples: &mut Samples) {
    let counter: &'static AtomicUsize = &EPOCH_CALLBACKS;
    let t = Instant::now();
    for _ in 0..N {
        let guard = epoch::pin();
        guard.defer(move || {
            // Relaxed: a counter, never checked.
            counter.fetch_add(1, Ordering::Relaxed);
        });
    }
    let enqueue = t.elapsed();
    epoch::pin().flush();
    samples.epoch_enqueue.push(harness::ns_per(enqueue, N));
}

fn epoch_defer_destroy(samples: &mut Samples) {
    let objects: Vec<epoch::Owned<Tracked>> = (0..N)
        .map(|_| epoch::Owned::new(Tracked::new(&EPOCH_DROPS)))
        .collect();
    let t = Instant::now();
    for o in objects {
        let guard = epoch::pin();
        let shared = o.into_shared(&guard);
        // SAFETY: the object was never published, so no other thread can hold a reference to
        // it, and it is retired exactly once.
        unsafe { guard.defer_destroy(shared) };
    }
    let enqueue = t.elapsed();
    epoch::pin().flush();
    samples
        .epoch_defer_destroy
        .push(harness::ns_per(enqueue, N));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every step runs once and records its figures (no timing asserted); `rcu_call` panics by
    /// itself if the callbacks did not all run.
    #[test]
    fn every_step_records() {
        let mut s = Samples::default();
        for (_, step) in STEPS {
            step(&mut s);
        }
        for v in [
            &s.rcu_enqueue,
            &s.rcu_barrier_ms,
            &s.rcu_defer_drop,
            &s.epoch_enqueue,
            &s.epoch_defer_destroy,
        ] {
            assert_eq!(v.len(), 1);
            assert!(v[0].is_finite() && v[0] >= 0.0);
        }
    }
}
