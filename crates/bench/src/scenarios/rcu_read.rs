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
use crate::harness::{self, Config, Progress, Report};

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
];

fn run(cfg: &Config, progress: &mut Progress) -> Report {
    let mut records =
        super::measure_op_variants(cfg, progress, NAME, METRIC, VARIANTS, &THREADS, REFERENCE);
    let mode = super::rcu_sync::barrier_mode_name();
    for r in records.iter_mut().filter(|r| r.variant == "shrinker-rcu") {
        r.extra.push(("barrier_mode", mode.clone().into()));
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
        ],
        records,
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
