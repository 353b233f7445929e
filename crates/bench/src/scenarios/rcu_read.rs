//! `rcu-read`: the cost of one read-side critical section — lock, dereference, unlock.
//!
//! Every variant protects one [`Payload`] and, per operation, enters its read-side section,
//! loads the protected pointer, reads `value` through it, passes the value to `black_box` and
//! leaves. Nobody writes during the run: this is the uncontended read path, the figure a
//! read-mostly structure pays on every lookup.
//!
//! | variant | one operation |
//! |---|---|
//! | `shrinker-rcu` | `read_lock()`, `RcuPtr::load(&guard)`, read field, drop guard |
//! | `crossbeam-epoch` | `epoch::pin()` (default global collector, no cached `LocalHandle`), `Atomic::load(Acquire, &guard)`, read field, unpin |
//! | `seize` | `Collector::enter()` (one shared collector), `guard.protect(&AtomicPtr, Acquire)`, read field, leave |
//! | `arc-swap` | `ArcSwap::load()`, read field, drop the `Guard` |
//! | `rwlock` | `std::sync::RwLock::read()`, read field, unlock |
//! | `liburcu-memb` | liburcu's inline read side (`_LGPL_SOURCE`): `urcu_memb_read_lock()`, `rcu_dereference()`, read field, `urcu_memb_read_unlock()` |
//!
//! `liburcu-memb` is the C library shrinker-rcu's read side is modelled on, and its target:
//! it is there when liburcu is installed at build time (`scripts/install-peers.sh`; see
//! `build.rs`), and otherwise the scenario says in one line that it skipped it. Its loop is
//! C (`csrc/urcu_memb_read.c`, compiled with `-O2 -fPIE`), as our read side is inlined into the
//! Rust loop: one call per thread and timed run runs batches of [`harness::BATCH`] sections
//! and checks the same stop flag, so no FFI call is paid per operation; it hands `black_box`
//! the same 16 bytes the Rust closures do (`Option<u64>`: present, value). Its rows add one
//! more ratio column, `vs liburcu-memb`, to every row.
//!
//! At 2 threads both threads read the same object; the `vs 1 thread` column shows what the
//! sharing costs (1.00× = no cost; a shared reader count's cache-line ping-pong shows up here).

use std::hint::black_box;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use crossbeam_epoch as epoch;
use seize::Guard as _;

use super::{OpVariant, Payload, Scenario};
use crate::harness::{self, Config, Progress, Ratio, Record, Report};

/// The registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: NAME,
    summary:
        "read lock + deref + unlock vs crossbeam-epoch, seize, arc-swap, RwLock; 1 and 2 threads",
    run,
};

const NAME: &str = "rcu-read";
const METRIC: &str = "ns_per_op";
/// The reference of the ratio column: the most used Rust peer.
const REFERENCE: &str = "crossbeam-epoch";
const THREADS: [usize; 2] = [1, 2];

/// The variant name of liburcu's memb flavour.
const LIBURCU_MEMB: &str = "liburcu-memb";

const VARIANTS: &[OpVariant] = &[
    OpVariant {
        name: "shrinker-rcu",
        measure: shrinker_rcu,
    },
    OpVariant {
        name: "crossbeam-epoch",
        measure: crossbeam_epoch,
    },
    OpVariant {
        name: "seize",
        measure: seize,
    },
    OpVariant {
        name: "arc-swap",
        measure: arc_swap,
    },
    OpVariant {
        name: "rwlock",
        measure: rwlock,
    },
    #[cfg(have_liburcu_memb)]
    OpVariant {
        name: LIBURCU_MEMB,
        measure: liburcu_memb::measure,
    },
];

fn run(cfg: &Config, progress: &mut Progress) -> Report {
    if !cfg!(have_liburcu_memb) {
        progress.say(format_args!(
            "{NAME}: skipped the {LIBURCU_MEMB} peer: liburcu is not installed \
             (scripts/install-peers.sh installs it)"
        ));
    }
    let mut records =
        super::measure_op_variants(cfg, progress, NAME, METRIC, VARIANTS, &THREADS, REFERENCE);
    add_ratio_to_liburcu(&mut records);
    let mode = super::rcu_sync::barrier_mode_name();
    for r in records.iter_mut().filter(|r| r.variant == "shrinker-rcu") {
        r.extra.push(("barrier_mode", mode.clone().into()));
    }
    let mut notes = vec![];
    if cfg!(have_liburcu_memb) {
        notes.push(format!(
            "{LIBURCU_MEMB}: liburcu's inline read side (_LGPL_SOURCE) in a C loop (cc -O2 -fPIE), \
             one call per thread and timed run; each thread registered with \
             urcu_memb_register_thread()."
        ));
    }
    Report {
        scenario: NAME,
        title: "read lock + deref + unlock".to_string(),
        notes: vec![
            format!(
                "ns_per_op = each thread's elapsed time / its own op count, averaged over threads; \
                 median (min, max) of {} runs of {} ms; variants interleaved.",
                cfg.reps,
                cfg.duration.as_millis()
            ),
            format!(
                "shrinker-rcu barrier mode: {mode}. crossbeam-epoch: epoch::pin() on the default \
                 global collector, no cached LocalHandle."
            ),
            format!("Ratios: median / median of {REFERENCE} at the same thread count; and / the same variant at 1 thread."),
        ]
        .into_iter()
        .chain(notes)
        .collect(),
        records,
    }
}

/// Adds, to every record, the ratio of its median to `liburcu-memb`'s at the same thread count
/// (key `ratio_liburcu_memb`, column `vs liburcu-memb`); nothing when the peer was not built.
/// Its own key: `ratio` stays the ratio to [`REFERENCE`].
fn add_ratio_to_liburcu(records: &mut [Record]) {
    let base: Vec<(usize, f64)> = records
        .iter()
        .filter(|r| r.variant == LIBURCU_MEMB)
        .map(|r| (r.threads, r.summary.median))
        .collect();
    for r in records.iter_mut() {
        if let Some(&(_, base)) = base.iter().find(|&&(t, _)| t == r.threads) {
            r.ratios.push(Ratio {
                key: "ratio_liburcu_memb",
                to: LIBURCU_MEMB.to_string(),
                header: format!("vs {LIBURCU_MEMB}"),
                value: r.summary.median / base,
            });
        }
    }
}

fn shrinker_rcu(threads: usize, duration: Duration) -> f64 {
    let ptr = shrinker_rcu::RcuPtr::new(Payload::new());
    let runs = harness::time_ops(threads, duration, &ptr, |ptr| {
        let guard = shrinker_rcu::read_lock();
        black_box(ptr.load(&guard).map(|p| p.value));
    });
    harness::ns_per_op(&runs)
}

/// An `epoch::Atomic` that frees its object when dropped.
struct EpochBox(epoch::Atomic<Payload>);

impl Drop for EpochBox {
    fn drop(&mut self) {
        // SAFETY: `&mut self` means no thread is reading any more, and the object was allocated
        // by `Atomic::new` and never retired, so it is freed exactly once, here.
        unsafe { drop(std::mem::take(&mut self.0).into_owned()) };
    }
}

fn crossbeam_epoch(threads: usize, duration: Duration) -> f64 {
    let shared = EpochBox(epoch::Atomic::new(Payload::new()));
    let runs = harness::time_ops(threads, duration, &shared, |shared| {
        let guard = epoch::pin();
        let p = shared.0.load(Ordering::Acquire, &guard);
        // SAFETY: the pointer was loaded under `guard` and the object is only freed when
        // `shared` is dropped, after every worker has joined.
        black_box(unsafe { p.as_ref() }.map(|p| p.value));
    });
    harness::ns_per_op(&runs)
}

/// A seize collector and an `AtomicPtr` it protects; frees the object when dropped.
struct SeizeBox {
    collector: seize::Collector,
    ptr: AtomicPtr<Payload>,
}

impl Drop for SeizeBox {
    fn drop(&mut self) {
        let p = std::mem::replace(self.ptr.get_mut(), ptr::null_mut());
        // SAFETY: `p` came from `Box::into_raw` and was never retired; `&mut self` means no
        // reader is left.
        drop(unsafe { Box::from_raw(p) });
    }
}

fn seize(threads: usize, duration: Duration) -> f64 {
    let shared = SeizeBox {
        collector: seize::Collector::new(),
        ptr: AtomicPtr::new(Box::into_raw(Box::new(Payload::new()))),
    };
    let runs = harness::time_ops(threads, duration, &shared, |shared| {
        let guard = shared.collector.enter();
        let p = guard.protect(&shared.ptr, Ordering::Acquire);
        // SAFETY: `p` is protected by `guard` and only freed when `shared` is dropped.
        black_box(unsafe { p.as_ref() }.map(|p| p.value));
    });
    harness::ns_per_op(&runs)
}

fn arc_swap(threads: usize, duration: Duration) -> f64 {
    let shared = ArcSwap::from_pointee(Payload::new());
    let runs = harness::time_ops(threads, duration, &shared, |shared| {
        let guard = shared.load();
        black_box(guard.value);
    });
    harness::ns_per_op(&runs)
}

fn rwlock(threads: usize, duration: Duration) -> f64 {
    let shared = RwLock::new(Payload::new());
    let runs = harness::time_ops(threads, duration, &shared, |shared| {
        // Nobody panics while holding the lock, so poisoning cannot happen; recover anyway.
        let guard = shared.read().unwrap_or_else(PoisonError::into_inner);
        black_box(guard.value);
    });
    harness::ns_per_op(&runs)
}

/// The `liburcu-memb` variant: the timed loop is C (`csrc/urcu_memb_read.c`), called once per
/// thread and timed run.
#[cfg(have_liburcu_memb)]
mod liburcu_memb {
    use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
    use std::sync::Barrier;
    use std::thread;
    use std::time::{Duration, Instant};

    use crate::harness::{self, ThreadRun};

    /// The protected object as the C side sees it (`struct payload`).
    #[repr(C)]
    struct CPayload {
        value: u64,
    }

    extern "C" {
        fn shrinker_bench_urcu_memb_register_thread();
        fn shrinker_bench_urcu_memb_unregister_thread();
        fn shrinker_bench_urcu_memb_read_loop(
            ptr: *const AtomicPtr<CPayload>,
            stop: *const AtomicBool,
            batch: u64,
        ) -> u64;
    }

    /// Runs `batch`-sized batches of read-side sections on `ptr` until `stop` is set.
    fn read_loop(ptr: &AtomicPtr<CPayload>, stop: &AtomicBool, batch: u64) -> u64 {
        // SAFETY: the calling thread is registered (see `measure`); `ptr` points to a live
        // `CPayload` (or is null) for the whole call, as nobody writes it during the run;
        // `AtomicPtr<T>` has the layout of `*mut T` and `AtomicBool` that of a `u8`, and the
        // C side reads the flag with an atomic load.
        unsafe { shrinker_bench_urcu_memb_read_loop(ptr, stop, batch) }
    }

    /// ns per read-side section with `threads` threads for about `duration`: the same
    /// protocol as `harness::time_ops`, with the loop in C.
    pub(super) fn measure(threads: usize, duration: Duration) -> f64 {
        let payload = Box::into_raw(Box::new(CPayload {
            value: super::Payload::new().value,
        }));
        let ptr = AtomicPtr::new(payload);
        let stop = AtomicBool::new(false);
        let start = Barrier::new(threads + 1);
        let runs: Vec<ThreadRun> = thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        // SAFETY: registers this thread with liburcu's memb flavour; it is
                        // unregistered below, before it exits.
                        unsafe { shrinker_bench_urcu_memb_register_thread() };
                        // Untimed first section (as time_ops' first call): a raised flag
                        // ends the loop after one batch of one.
                        read_loop(&ptr, &AtomicBool::new(true), 1);
                        start.wait();
                        let begin = Instant::now();
                        let ops = read_loop(&ptr, &stop, harness::BATCH);
                        let elapsed = begin.elapsed();
                        // SAFETY: registered above, and out of any read-side section.
                        unsafe { shrinker_bench_urcu_memb_unregister_thread() };
                        ThreadRun { ops, elapsed }
                    })
                })
                .collect();
            start.wait();
            thread::sleep(duration);
            // Relaxed: the flag only ends the loops (the C side loads it relaxed); the joins
            // order everything else.
            stop.store(true, Ordering::Relaxed);
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        // SAFETY: from `Box::into_raw` above; every reader has joined.
        drop(unsafe { Box::from_raw(payload) });
        harness::ns_per_op(&runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant runs and reports a finite figure (no timing asserted).
    #[test]
    fn every_variant_measures() {
        for v in VARIANTS {
            for threads in THREADS {
                let ns = (v.measure)(threads, Duration::from_millis(5));
                assert!(ns.is_finite() && ns > 0.0, "{} {threads}: {ns}", v.name);
            }
        }
    }
}
