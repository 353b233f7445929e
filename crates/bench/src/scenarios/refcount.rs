//! `refcount`: the cost of taking and dropping one reference — get + put.
//!
//! Every variant shares one counted object between the threads; per operation a thread takes a
//! reference and drops it.
//!
//! | variant | one operation |
//! |---|---|
//! | `percpu-ref` | `PercpuRef::get()` + `PercpuRef::put()` (live, per-CPU mode) |
//! | `refcount` | `Refcount::inc()` + `Refcount::dec_and_test()` (the kernel's refcount_t, never reaching zero here) |
//! | `arc` | `Arc::clone` + drop on one shared `Arc` |
//!
//! At 2 threads both threads hit the same object: `refcount` and `arc` then bounce one cache line
//! between the cores on every operation, which is what `percpu-ref` exists to avoid.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use shrinker_sync::{InitFlags, PercpuRef, Refcount};

use super::{OpVariant, Scenario};
use crate::harness::{self, Config, Progress, Report};

/// The registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: NAME,
    summary:
        "get + put of one shared reference: PercpuRef, Refcount (refcount_t), Arc; 1 and 2 threads",
    run,
};

const NAME: &str = "refcount";
const METRIC: &str = "ns_per_op";
/// The reference of the ratio column: what a Rust programmer would use.
const REFERENCE: &str = "arc";
const THREADS: [usize; 2] = [1, 2];

const VARIANTS: &[OpVariant] = &[
    OpVariant {
        name: "percpu-ref",
        measure: percpu_ref,
    },
    OpVariant {
        name: "refcount",
        measure: refcount,
    },
    OpVariant {
        name: "arc",
        measure: arc,
    },
];

fn run(cfg: &Config, progress: &mut Progress) -> Report {
    let records =
        super::measure_op_variants(cfg, progress, NAME, METRIC, VARIANTS, &THREADS, REFERENCE);
    Report {
        scenario: NAME,
        title: "get + put of one shared reference".to_string(),
        notes: vec![
            format!(
                "ns_per_op = each thread's elapsed time / its own op count (one get + one put), \
                 averaged over threads; median (min, max) of {} runs of {} ms; variants \
                 interleaved.",
                cfg.reps,
                cfg.duration.as_millis()
            ),
            format!("Ratios: median / median of `{REFERENCE}` at the same thread count; and / the same variant at 1 thread."),
        ],
        records,
    }
}

fn percpu_ref(threads: usize, duration: Duration) -> f64 {
    let r = PercpuRef::new(|| {}, InitFlags::NONE);
    let runs = harness::time_ops(threads, duration, &r, |r| {
        r.get();
        r.put();
    });
    harness::ns_per_op(&runs)
}

fn refcount(threads: usize, duration: Duration) -> f64 {
    let r = Refcount::new(1);
    let runs = harness::time_ops(threads, duration, &r, |r| {
        r.inc();
        black_box(r.dec_and_test());
    });
    assert_eq!(r.read(), 1, "refcount: get/put did not balance");
    harness::ns_per_op(&runs)
}

fn arc(threads: usize, duration: Duration) -> f64 {
    let shared = Arc::new(0u64);
    let runs = harness::time_ops(threads, duration, &shared, |a| {
        black_box(Arc::clone(a));
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
