//! `register-churn`: the stress-ng ramfs analog. Worker threads each register 3 shrinkers and
//! then unregister them, in a loop (a mount and an unmount), while 1 thread walks.
//!
//! | variant | unregister |
//! |---|---|
//! | `lockless` | `shrinker`: drop the initial reference, wait for this shrinker's in-flight calls, unlink, `call_rcu` the free |
//! | `rwlock-trylock` | take the write lock, remove, free |
//! | `srcu-style` | unlink, then wait for a grace period before the free (the reverted f95bdb700bc6: stress-ng ramfs −88.8 %) |
//!
//! 100 long-lived shrinkers stay registered so that every walk has work to do.
//!
//! # Threads
//!
//! One worker per CPU but one, plus the walker: every thread has a core. With more threads than
//! cores the figure measured the scheduler, not the registries: when the walker was off-CPU the
//! `rwlock-trylock` writers never waited for it, when it ran they did, so the same binary gave
//! `rwlock-trylock` 0.35 M to 5.3 M rounds/s from run to run (2 workers + 1 walker on 2 cores),
//! and the lockless/rwlock ratio swung between 0.08× and 2.35× across sessions. The notes give
//! each variant's spread, (max − min) / median, so that a run can be judged by it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::shrink_global::{Design, Lockless, RwlockTrylock, SrcuStyle};
use super::Scenario;
use crate::harness::{self, Config, Progress, Record, Report};

/// The registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: NAME,
    summary: "workers register 3 shrinkers then unregister them, in a loop, while 1 thread walks: lockless, rwlock-trylock, srcu-style",
    run,
};

const NAME: &str = "register-churn";
const METRIC: &str = "ops_per_sec";
const REFERENCE: &str = "rwlock-trylock";
/// Worker threads: one per CPU but one (at least one), so that the walker has a core of its own.
fn workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .max(1)
}
/// Long-lived shrinkers the walker always visits.
const BACKGROUND: usize = 100;

/// Rounds (3 registers + 3 unregisters) per second over all workers.
fn measure<D: Design>(duration: Duration) -> f64 {
    let workers = workers();
    let d = D::new();
    let background: Vec<_> = (0..BACKGROUND).map(|_| d.register()).collect();
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut prio = 12u8;
            while !stop.load(Ordering::Relaxed) {
                std::hint::black_box(d.walk(prio));
                prio = if prio == 0 { 12 } else { prio - 1 };
            }
        });
        for _ in 0..workers {
            s.spawn(|| {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let hs: Vec<_> = (0..3).map(|_| d.register()).collect();
                    for h in hs {
                        d.unregister(h);
                    }
                    n += 1;
                }
                rounds.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed();
    for h in background {
        d.unregister(h);
    }
    rounds.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
}

struct Variant {
    name: &'static str,
    measure: fn(Duration) -> f64,
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
    Variant {
        name: "srcu-style",
        measure: measure::<SrcuStyle>,
    },
];

fn run(cfg: &Config, progress: &mut Progress) -> Report {
    let duration = cfg.duration / 2;
    let mut samples = vec![Vec::new(); VARIANTS.len()];
    for rep in 0..cfg.reps {
        for k in 0..VARIANTS.len() {
            let i = (rep + k) % VARIANTS.len();
            progress.step(format_args!(
                "rep {}/{} {}",
                rep + 1,
                cfg.reps,
                VARIANTS[i].name
            ));
            samples[i].push((VARIANTS[i].measure)(duration));
        }
    }
    let mut records: Vec<Record> = VARIANTS
        .iter()
        .zip(&samples)
        .map(|(v, s)| Record::new(NAME, v.name, workers(), METRIC, s))
        .collect();
    harness::add_ratio_to_variant(&mut records, REFERENCE);
    let spread = records
        .iter()
        .map(|r| {
            let s = &r.summary;
            let pct = if s.median > 0.0 {
                100.0 * (s.max - s.min) / s.median
            } else {
                0.0
            };
            format!("{} {pct:.0} %", r.variant)
        })
        .collect::<Vec<_>>()
        .join(", ");
    Report {
        scenario: NAME,
        title: "register 3 + unregister 3, in a loop, while 1 thread walks".to_string(),
        notes: vec![
            format!(
                "ops_per_sec = rounds (3 registers then 3 unregisters) per second, summed over \
                 {} worker thread(s) (one per CPU but one), while 1 more thread walks \
                 {BACKGROUND} long-lived shrinkers at priorities 12..0: every thread has a core. \
                 `threads` = workers. Median (min, max) of {} runs of {} ms; variants \
                 interleaved.",
                workers(),
                cfg.reps,
                duration.as_millis()
            ),
            format!("Ratios: median / median of `{REFERENCE}`."),
            format!("Spread, (max - min) / median: {spread}."),
        ],
        records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_measures() {
        for v in VARIANTS {
            let ops = (v.measure)(Duration::from_millis(20));
            assert!(ops.is_finite() && ops > 0.0, "{}: {ops}", v.name);
        }
    }
}
