//! `reflock`: page-fault-like lookups in an address space while a writer maps and unmaps.
//!
//! The address space is `shrinker-sync`'s `examples/address_space.rs` (included below, so the
//! bench measures the code the example ships): 64 long-lived ranges that readers look up at
//! random addresses, and a churn area, disjoint from them, where one writer thread maps and
//! unmaps a range in a loop (each a big-lock write cycle that also republishes the RCU index).
//!
//! | variant | one lookup |
//! |---|---|
//! | `reflock` | `lock_range`: under RCU, search the index, `RefLock::try_read` the range (falling back to the big read lock on failure), read it, unlock |
//! | `big-lock` | `with_range_big_lock`: take the big `RwLock` for reading, find the range in the map, read it, unlock (the design the per-VMA lock replaced) |
//!
//! Metrics: `lookups_per_sec`, the readers' total lookups per second with 2 reader threads and
//! the writer running (contended); `ns_per_lookup`, one lookup's cost at 1 thread with no writer
//! (uncontended).

use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Scenario;
use crate::harness::{self, Config, Progress, Record, Report};

#[path = "../../../sync/examples/address_space.rs"]
#[allow(dead_code, missing_docs)]
mod address_space;

use address_space::{map_fixed, xorshift, AddressSpace, RangeCache, CHURN_BASE, PAGE};

/// The registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: NAME,
    summary: "range lookups, 2 readers vs 1 mapping writer, and uncontended at 1 thread: reflock (RCU + per-range lock) vs big-lock",
    run,
};

const NAME: &str = "reflock";
const REFERENCE: &str = "big-lock";
/// Long-lived ranges the readers look up.
const TARGETS: u64 = 64;
/// Reader threads of the contended measurement (plus the writer: the machine has 2 cores).
const READERS: usize = 2;

#[derive(Clone, Copy)]
struct Variant {
    name: &'static str,
    lookup: fn(&AddressSpace),
}

const VARIANTS: &[Variant] = &[
    Variant {
        name: "reflock",
        lookup: lookup_reflock,
    },
    Variant {
        name: "big-lock",
        lookup: lookup_big_lock,
    },
];

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// A random address inside one of the long-lived ranges.
#[inline]
fn target() -> u64 {
    RNG.with(|c| {
        let mut x = c.get();
        if x == 0 {
            // Seed per thread from the Cell's address.
            x = (c as *const Cell<u64> as u64) | 1;
        }
        let r = xorshift(&mut x);
        c.set(x);
        ((r >> 8) % TARGETS * 16 + (r >> 40) % 8) * PAGE
    })
}

fn lookup_reflock(space: &AddressSpace) {
    let g = space.lock_range(target());
    black_box(g.map(|g| g.start()));
}

fn lookup_big_lock(space: &AddressSpace) {
    black_box(space.with_range_big_lock(target(), |r| r.start()));
}

fn space() -> AddressSpace {
    let cache = RangeCache::new(256);
    let space = AddressSpace::new(&cache);
    map_fixed(&space, TARGETS);
    space
}

/// Nanoseconds per lookup, 1 thread, no writer.
fn uncontended(v: Variant, duration: Duration) -> f64 {
    let space = space();
    let runs = harness::time_ops(1, duration, &space, v.lookup);
    harness::ns_per_op(&runs)
}

/// Reader lookups per second, `READERS` threads, while one writer maps and unmaps.
fn contended(v: Variant, duration: Duration) -> f64 {
    let space = space();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut k = 0u64;
            // Relaxed: a stop flag; the scope's join orders the rest.
            while !stop.load(Ordering::Relaxed) {
                let start = CHURN_BASE + (k % 16) * PAGE;
                black_box(space.map(start, start + PAGE, 1).is_ok());
                black_box(space.unmap(start));
                k += 1;
            }
        });
        let runs = harness::time_ops(READERS, duration, &space, v.lookup);
        // Relaxed: see above.
        stop.store(true, Ordering::Relaxed);
        runs.iter()
            .map(|r| r.ops as f64 / r.elapsed.as_secs_f64())
            .sum()
    })
}

fn run(cfg: &Config, progress: &mut Progress) -> Report {
    for v in VARIANTS {
        progress.step(format_args!("warm-up {}", v.name));
        uncontended(*v, cfg.duration / 4);
    }
    let names: Vec<&str> = VARIANTS.iter().map(|v| v.name).collect();
    let samples = harness::interleave(cfg, progress, &names, &[READERS], |i, _| {
        let v = VARIANTS[i];
        (contended(v, cfg.duration), uncontended(v, cfg.duration / 2))
    });
    let mut records = Vec::new();
    for (i, v) in VARIANTS.iter().enumerate() {
        let reps = &samples[i][0];
        let per_sec: Vec<f64> = reps.iter().map(|s| s.0).collect();
        records.push(
            Record::new(NAME, v.name, READERS, "lookups_per_sec", &per_sec)
                .with_extra("writers", 1),
        );
    }
    for (i, v) in VARIANTS.iter().enumerate() {
        let ns: Vec<f64> = samples[i][0].iter().map(|s| s.1).collect();
        records.push(Record::new(NAME, v.name, 1, "ns_per_lookup", &ns));
    }
    harness::add_ratio_to_variant(&mut records, REFERENCE);
    Report {
        scenario: NAME,
        title: "range lookups: RCU + per-range RefLock vs the big read lock".to_string(),
        notes: vec![
            format!(
                "lookups_per_sec = total lookups of {READERS} reader threads per second while 1 \
                 writer maps and unmaps ranges disjoint from the {TARGETS} looked-up ones \
                 (higher is better); ns_per_lookup = 1 thread, no writer (lower is better)."
            ),
            format!(
                "Median (min, max) of {} runs of {} ms (contended) and {} ms (uncontended); \
                 variants interleaved. Ratio: median / median of `{REFERENCE}`.",
                cfg.reps,
                cfg.duration.as_millis(),
                (cfg.duration / 2).as_millis()
            ),
        ],
        records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant runs and reports a finite figure (no timing asserted).
    #[test]
    fn every_variant_measures() {
        for v in VARIANTS {
            let ns = uncontended(*v, Duration::from_millis(5));
            assert!(ns.is_finite() && ns > 0.0, "{} uncontended: {ns}", v.name);
            let per_sec = contended(*v, Duration::from_millis(20));
            assert!(
                per_sec.is_finite() && per_sec > 0.0,
                "{} contended: {per_sec}",
                v.name
            );
        }
    }

    #[test]
    fn targets_are_inside_the_long_lived_ranges() {
        let space = space();
        for _ in 0..1000 {
            let addr = target();
            let g = space.lock_range(addr).expect("every target is mapped");
            assert!(g.start() <= addr && addr < g.end());
        }
    }
}
