//! `rcu-sync`: the latency of `synchronize_rcu()` while one reader is busy.
//!
//! One reader thread loops `read_lock()` / `RcuPtr::load` / read field / unlock without pause,
//! so a grace period almost always finds it inside a section and must wait it out (the case
//! liburcu's figure of 18–23 µs here describes). The measuring thread calls
//! `synchronize_rcu()` back to back and times each call. Per repetition the median and p99 of
//! the calls are taken; the table shows the median of those over the repetitions.
//!
//! The reader and the caller are pinned to two different CPUs (when at least two are
//! allowed), so that the reader is really running while a grace period looks at it; otherwise
//! a scheduler that puts both on one CPU lets membarrier skip the reader, and both rows drop to
//! the cost of a syscall that interrupts nobody.
//!
//! Reference variant `membarrier`: one bare `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`
//! system call under the same busy reader. A membarrier-based grace period cannot be cheaper
//! than the barriers it issues, so `vs membarrier` reads as "grace period ≈ N membarriers"
//! (liburcu's memb flavor issues two, plus its two-phase counter flip). It is measured only
//! on Linux, and only when the kernel accepts the registration.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::{Payload, Scenario};
use crate::harness::{self, format_value, Config, Progress, Record, Report};

/// The registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: NAME,
    summary: "synchronize_rcu latency (median, p99) with one busy reader",
    run,
};

const NAME: &str = "rcu-sync";
const REFERENCE: &str = "membarrier";

/// `shrinker_rcu::barrier_mode()` as a lowercase word (`membarrier` or `fence`), for table notes
/// and the `barrier_mode` JSON key.
pub fn barrier_mode_name() -> String {
    format!("{:?}", shrinker_rcu::barrier_mode()).to_lowercase()
}

fn run(cfg: &Config, progress: &mut Progress) -> Report {
    let calls = cfg.pick(2_000, 10_000);
    let membarrier = membarrier::available();
    let ptr = shrinker_rcu::RcuPtr::new(Payload::new());
    let stop = AtomicBool::new(false);
    let reading = AtomicBool::new(false);
    // Read sections the reader has completed: shows how much reading each grace period
    // overlapped.
    let sections = AtomicU64::new(0);

    let (sync_med, sync_p99, mb_med, mb_p99, overlap, pinned) = thread::scope(|s| {
        s.spawn(|| {
            // Reader and caller on different CPUs, so that a grace period really finds the
            // reader running and membarrier really has a CPU to interrupt.
            let _ = affinity::pin_to_allowed(1);
            let mut first = true;
            // Relaxed: the flag only ends the loop; the scope's join orders the rest.
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..harness::BATCH {
                    let guard = shrinker_rcu::read_lock();
                    black_box(ptr.load(&guard).map(|p| p.value));
                }
                // Relaxed: a statistic, read by the measuring thread between runs.
                sections.fetch_add(harness::BATCH, Ordering::Relaxed);
                if first {
                    // Release/Acquire: only a start signal; pairs with the wait below.
                    reading.store(true, Ordering::Release);
                    first = false;
                }
            }
        });
        while !reading.load(Ordering::Acquire) {
            thread::yield_now();
        }
        let caller = s.spawn(|| {
            let pinned = affinity::pin_to_allowed(0).is_some();
            progress.step(format_args!("warm-up"));
            latencies(calls / 10, shrinker_rcu::synchronize_rcu);
            let (mut sync_med, mut sync_p99) = (Vec::new(), Vec::new());
            let (mut mb_med, mut mb_p99) = (Vec::new(), Vec::new());
            let mut overlap = Vec::new();
            for rep in 0..cfg.reps {
                // Interleaved, alternating which goes first.
                for k in 0..2 {
                    if (rep + k) % 2 == 0 {
                        progress.step(format_args!(
                            "rep {}/{} shrinker-rcu, {calls} calls",
                            rep + 1,
                            cfg.reps
                        ));
                        // Relaxed: see the reader loop.
                        let before = sections.load(Ordering::Relaxed);
                        let us = latencies(calls, shrinker_rcu::synchronize_rcu);
                        let during = sections.load(Ordering::Relaxed) - before;
                        overlap.push(during as f64 / calls as f64);
                        sync_med.push(harness::median(&us));
                        sync_p99.push(harness::percentile(&us, 99.0));
                    } else if membarrier {
                        progress.step(format_args!(
                            "rep {}/{} membarrier, {calls} calls",
                            rep + 1,
                            cfg.reps
                        ));
                        let us = latencies(calls, membarrier::private_expedited);
                        mb_med.push(harness::median(&us));
                        mb_p99.push(harness::percentile(&us, 99.0));
                    }
                }
            }
            (sync_med, sync_p99, mb_med, mb_p99, overlap, pinned)
        });
        let result = caller.join();
        // Relaxed: see the reader loop.
        stop.store(true, Ordering::Relaxed);
        result.unwrap_or_else(|e| std::panic::resume_unwind(e))
    });
    let overlap = harness::median(&overlap);

    let mode = barrier_mode_name();
    let mut records = vec![
        Record::new(NAME, "shrinker-rcu", 1, "us_median", &sync_med),
        Record::new(NAME, "shrinker-rcu", 1, "us_p99", &sync_p99),
    ];
    for r in &mut records {
        r.extra.push(("barrier_mode", mode.clone().into()));
        r.extra
            .push(("reader_sections_per_call", overlap.round().into()));
    }
    if membarrier {
        records.push(Record::new(NAME, REFERENCE, 1, "us_median", &mb_med));
        records.push(Record::new(NAME, REFERENCE, 1, "us_p99", &mb_p99));
    }
    harness::add_ratio_to_variant(&mut records, REFERENCE);
    let mut notes = vec![
        format!(
            "µs per synchronize_rcu() call, 1 caller, 1 busy reader thread; median and p99 \
             (nearest rank) of {} calls per run, then median (min, max) of {} runs.",
            harness::thousands(calls),
            cfg.reps
        ),
        format!(
            "shrinker-rcu barrier mode: {mode}. Reader and caller {}; the reader completed a \
             median {} read sections per call (a small count means it was mostly descheduled, \
             and the latencies understate a grace period's cost).",
            if pinned {
                "pinned to two different CPUs"
            } else {
                "not pinned (fewer than 2 CPUs allowed)"
            },
            format_value(overlap)
        ),
    ];
    notes.push(if membarrier {
        "Reference `membarrier`: one membarrier(PRIVATE_EXPEDITED) syscall under the same \
         reader, the floor of a membarrier-based grace period."
            .to_string()
    } else {
        "membarrier(PRIVATE_EXPEDITED) is unavailable here: no reference row.".to_string()
    });
    Report {
        scenario: NAME,
        title: "synchronize_rcu with one busy reader".to_string(),
        notes,
        records,
    }
}

/// Times `calls` calls of `f`, in microseconds each.
fn latencies(calls: usize, f: fn()) -> Vec<f64> {
    (0..calls)
        .map(|_| {
            let t = Instant::now();
            f();
            duration_us(t.elapsed())
        })
        .collect()
}

fn duration_us(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1_000.0
}

/// Pinning a thread to one of the CPUs it is allowed on.
#[cfg(target_os = "linux")]
mod affinity {
    use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

    /// Pins the calling thread to the `n`-th CPU (counting from 0) of its allowed set and
    /// returns that CPU; `None` (and no change) if fewer than 2 CPUs are allowed or the calls
    /// fail. Used only for the duration of one scenario's own threads.
    pub fn pin_to_allowed(n: usize) -> Option<usize> {
        let allowed = sched_getaffinity(None).ok()?;
        if allowed.count() < 2 {
            return None;
        }
        let cpu = (0..CpuSet::MAX_CPU).filter(|&c| allowed.is_set(c)).nth(n)?;
        let mut one = CpuSet::new();
        one.set(cpu);
        sched_setaffinity(None, &one).ok()?;
        Some(cpu)
    }
}

#[cfg(not(target_os = "linux"))]
mod affinity {
    pub fn pin_to_allowed(_n: usize) -> Option<usize> {
        None
    }
}

/// The bare system call, for the reference row.
#[cfg(target_os = "linux")]
mod membarrier {
    use rustix::thread::{membarrier, MembarrierCommand};

    /// Registers this process for private expedited membarrier (idempotent; shrinker-rcu does
    /// the same) and reports whether it worked.
    pub fn available() -> bool {
        membarrier(MembarrierCommand::RegisterPrivateExpedited).is_ok()
    }

    /// One `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`.
    pub fn private_expedited() {
        // Registration succeeded in `available()`, so this cannot fail with EPERM; any other
        // failure would show up as an implausibly small latency, not as a wrong result.
        let _ = membarrier(MembarrierCommand::PrivateExpedited);
    }
}

#[cfg(not(target_os = "linux"))]
mod membarrier {
    pub fn available() -> bool {
        false
    }
    pub fn private_expedited() {}
}
