//! `reflock`: what the per-VMA lock is for. Page-fault-like lookups must not wait for a writer
//! that holds the big lock (`mmap_lock`) for something unrelated.
//!
//! The address space is `shrinker-sync`'s `examples/address_space.rs` (included below, so the
//! bench measures the code the example ships): 64 long-lived ranges that the reader looks up at
//! random addresses. One writer thread takes the big lock for writing for `hold` every
//! `period` ([`AddressSpace::with_write_lock`]) and works under it, changing no range the reader
//! looks up.
//!
//! | variant | one lookup |
//! |---|---|
//! | `reflock` | `lock_range`: under RCU, search the index, `RefLock::try_read` the range (falling back to the big read lock on failure), read it, unlock |
//! | `big-lock` | `with_range_big_lock`: take the big `RwLock` for reading, find the range in the map, read it, unlock (the design the per-VMA lock replaced) |
//!
//! | `writer` | the big lock held for writing |
//! |---|---|
//! | `none` | never (no writer thread) |
//! | `held-50us` | 50 µs every 1 ms (5 % of the time) |
//! | `held-long` | 1 ms every 5 ms (20 %) |
//!
//! # Method
//!
//! * **Latency, open loop** (`p50_us`, `p99_us`, `p999_us`). Lookups *arrive* on a fixed
//!   schedule, one every [`ARRIVAL_NS`]; the reader spins until a lookup's arrival time, runs
//!   it, and records *completion − arrival*. A lookup stuck behind the writer therefore also
//!   delays every lookup that arrives while it waits, as faults of a running program would be
//!   delayed. A closed loop (lookups back to back, each timed on its own) would record one
//!   slow lookup per hold and hide the stall from every percentile: 1 of ~100,000 lookups
//!   ("coordinated omission").
//! * **Clock.** Every lookup is timed, with the time-stamp counter on x86-64 (`rdtsc` to wait
//!   for the arrival, `rdtscp` after the lookup, about 10 ns each here against about 20 ns for
//!   `Instant::now`), converted with a rate measured once against the monotonic clock;
//!   `Instant` elsewhere. A latency includes the wait loop's granularity (at most one clock
//!   read) and the closing `rdtscp`. Latencies go into a per-thread log-linear histogram
//!   ([`Histogram`]: exact below 128 ticks, 1/64 relative precision above); a percentile is the
//!   upper bound of the bucket holding the nearest-rank sample.
//! * **Off-CPU time.** On a shared machine the reader is sometimes off its CPU: preempted for
//!   a scheduler slice (milliseconds), or its virtual CPU stalled for tens of µs. With a
//!   lookup arriving every microsecond, that alone would fill every percentile above p99 with
//!   the machine's figure, for both variants alike. So, when two consecutive clock reads of the
//!   reader are more than [`GAP_NS`] apart:
//!   - in the *wait loop*, which does nothing but read the clock, the gap is time the thread
//!     did not run, and the whole arrival schedule moves by it: a thread that does not run
//!     issues no faults;
//!   - across a *lookup*, the lookup was blocked on the big lock (sleep: counts in full) or
//!     preempted: the schedule moves by the thread's run delay meanwhile
//!     (`/proc/thread-self/schedstat`: time runnable but waiting for a CPU), never by more
//!     than the lookup took. The wake-up's wait for a CPU after the big lock is released is
//!     run delay too, so it is taken out (in `big-lock`'s favour).
//!
//!   Both variants are treated alike, and the report states the share taken out. Where the
//!   kernel keeps no run delay, only wait-loop gaps are taken out.
//! * **Throughput, closed loop** (`lookups_per_sec`): lookups back to back in batches of
//!   [`harness::BATCH`], no per-lookup timestamps, under the same writer; per second of the
//!   reader's wall time less its run delay.
//! * **One reader thread, pinned; the writer pinned to the other CPU.** The machine this was
//!   designed on has 2 cores. The reader and the writer each get one: a second reader, or
//!   threads left to migrate, would share a CPU with the writer, and the scheduler would run
//!   the writer's hold *instead of* the reader (the reader then issues no lookups during the
//!   hold, and the stall disappears from the figures whatever the lock). Other processes on a
//!   shared machine still take either CPU at times: see "Off-CPU time".
//! * **The writer spins** under the lock rather than sleeping: a writer busy under `mmap_lock`
//!   (tearing down page tables, copying them in `fork`) is on a CPU, and pinned to its own CPU
//!   it takes nothing from the reader. Between holds it sleeps until the next period (absolute
//!   deadlines, so a late wake-up is made up for, but never sooner than half the free time
//!   after the previous hold). A writer preempted while holding (other processes) holds
//!   longer, as in a real kernel; the report states the writer's measured duty and mean hold.
//! * **`held-long` = 1 ms every 5 ms:** the millisecond-long write holds of `munmap` or
//!   `mprotect` over large regions, or of `fork` copying a big process's page tables: the
//!   stalls of page faults behind `mmap_lock` that the per-VMA lock was merged to remove. A
//!   20 % duty, against 5 % for `held-50us`.

use std::cell::Cell;
use std::hint::{black_box, spin_loop};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::Scenario;
use crate::harness::{self, Config, Progress, Ratio, Record, Report};

#[path = "../../../sync/examples/address_space.rs"]
#[allow(dead_code, missing_docs)]
mod address_space;

use address_space::{map_fixed, xorshift, AddressSpace, RangeCache, PAGE};

/// The registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: NAME,
    summary: "range lookups while a writer holds the big lock (none, 50 µs every 1 ms, 1 ms every 5 ms): reader latency p50/p99/p99.9 and throughput, reflock (RCU + per-range lock) vs big-lock",
    run,
};

const NAME: &str = "reflock";
const REFERENCE: &str = "big-lock";
/// Long-lived ranges the reader looks up.
const TARGETS: u64 = 64;
/// Reader threads (the writer takes the machine's other core; see the module docs).
const READERS: usize = 1;
/// Nanoseconds between two lookup arrivals of the open loop: a thread faulting a million
/// times a second, more than real faults allow (each also allocates and zeroes a page), and
/// few enough that the reader drains a 1 ms backlog in well under a period.
const ARRIVAL_NS: u64 = 1_000;
/// The metrics, in table order.
const METRICS: [&str; 4] = ["p50_us", "p99_us", "p999_us", "lookups_per_sec"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    RefLock,
    BigLock,
}

#[derive(Clone, Copy, Debug)]
struct Variant {
    name: &'static str,
    kind: Kind,
}

const VARIANTS: &[Variant] = &[
    Variant {
        name: "reflock",
        kind: Kind::RefLock,
    },
    Variant {
        name: "big-lock",
        kind: Kind::BigLock,
    },
];

/// A writer setting: the big lock held for writing for `hold` every `period`.
#[derive(Clone, Copy, Debug)]
struct Writer {
    name: &'static str,
    /// Zero: no writer thread.
    hold: Duration,
    period: Duration,
}

const WRITERS: &[Writer] = &[
    Writer {
        name: "none",
        hold: Duration::ZERO,
        period: Duration::ZERO,
    },
    Writer {
        name: "held-50us",
        hold: Duration::from_micros(50),
        period: Duration::from_millis(1),
    },
    Writer {
        name: "held-long",
        hold: Duration::from_millis(1),
        period: Duration::from_millis(5),
    },
];

// ---------------------------------------------------------------------------------------------
// The lookups
// ---------------------------------------------------------------------------------------------

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

#[inline]
fn lookup_reflock(space: &AddressSpace, addr: u64) {
    let g = space.lock_range(addr);
    black_box(g.map(|g| g.start()));
}

#[inline]
fn lookup_big_lock(space: &AddressSpace, addr: u64) {
    black_box(space.with_range_big_lock(addr, |r| r.start()));
}

fn space() -> AddressSpace {
    let cache = RangeCache::new(256);
    let space = AddressSpace::new(&cache);
    map_fixed(&space, TARGETS);
    space
}

// ---------------------------------------------------------------------------------------------
// Clock and histogram
// ---------------------------------------------------------------------------------------------

/// The latency clock: the time-stamp counter on x86-64 (invariant on every CPU this bench
/// targets), nanoseconds since a process-wide epoch elsewhere.
mod clock {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// Clock ticks per nanosecond, measured once (20 ms against `Instant`).
    pub fn ticks_per_ns() -> f64 {
        static RATE: OnceLock<f64> = OnceLock::new();
        *RATE.get_or_init(|| {
            let (t0, c0) = (Instant::now(), now());
            std::thread::sleep(Duration::from_millis(20));
            let (c1, t1) = (now(), Instant::now());
            c1.wrapping_sub(c0) as f64 / (t1 - t0).as_nanos() as f64
        })
    }

    /// A timestamp; the CPU may run it before earlier instructions finish (fine for waiting).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub fn now() -> u64 {
        // SAFETY: `rdtsc` reads the time-stamp counter; it has no preconditions on x86-64.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    /// A timestamp taken after every earlier instruction has executed (`rdtscp`): the end of a
    /// timed lookup.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub fn now_after() -> u64 {
        let mut aux = 0;
        // SAFETY: `rdtscp` reads the time-stamp counter and writes the processor id into
        // `aux`, a valid local; every x86-64 CPU this bench runs on has it (`rdtscp` flag).
        unsafe { core::arch::x86_64::__rdtscp(&mut aux) }
    }

    /// The calling thread's run delay: nanoseconds it has spent runnable but waiting for a CPU
    /// (`/proc/thread-self/schedstat`, second field), read on demand. `None` where the kernel
    /// does not keep it.
    pub struct RunDelay {
        #[cfg(target_os = "linux")]
        file: Option<std::fs::File>,
    }

    impl RunDelay {
        /// Opens the calling thread's counter; use it on that thread only.
        pub fn of_this_thread() -> Self {
            RunDelay {
                #[cfg(target_os = "linux")]
                file: std::fs::File::open("/proc/thread-self/schedstat").ok(),
            }
        }

        /// The run delay so far, in nanoseconds.
        #[cfg(target_os = "linux")]
        pub fn ns(&self) -> Option<u64> {
            use std::os::unix::fs::FileExt;
            let mut buf = [0u8; 96];
            // A proc seq_file regenerates its text on a read at offset 0.
            let n = self.file.as_ref()?.read_at(&mut buf, 0).ok()?;
            std::str::from_utf8(&buf[..n])
                .ok()?
                .split_ascii_whitespace()
                .nth(1)?
                .parse()
                .ok()
        }

        /// The run delay so far, in nanoseconds.
        #[cfg(not(target_os = "linux"))]
        pub fn ns(&self) -> Option<u64> {
            None
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub fn now() -> u64 {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub fn now_after() -> u64 {
        now()
    }
}

/// Sub-buckets per power of two above the exact range: 1/64 relative precision.
const SUB_BITS: u32 = 6;
/// Values below this are counted exactly, one bucket each.
const EXACT: u64 = 2 << SUB_BITS;
/// Buckets for every `u64`.
const BUCKETS: usize = ((64 - SUB_BITS as usize) << SUB_BITS) + (1 << SUB_BITS);

/// A log-linear latency histogram (HdrHistogram's layout, reduced): values below [`EXACT`]
/// have a bucket each; above, each power of two is cut into `2^SUB_BITS` equal buckets.
#[derive(Clone, Debug)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }

    #[inline]
    fn bucket(v: u64) -> usize {
        if v < EXACT {
            v as usize
        } else {
            // v has its top bit at `msb` >= SUB_BITS + 1; keep the SUB_BITS + 1 top bits.
            let msb = 63 - v.leading_zeros();
            let shift = msb - SUB_BITS;
            ((shift as usize) << SUB_BITS) + (v >> shift) as usize
        }
    }

    /// The largest value that falls into bucket `b`.
    fn upper_bound(b: usize) -> u64 {
        if (b as u64) < EXACT {
            b as u64
        } else {
            let shift = (b >> SUB_BITS) as u32 - 1;
            let sub = (b as u64 & ((1 << SUB_BITS) - 1)) + (1 << SUB_BITS);
            // `sub + 1` may be 2^(SUB_BITS+1) at the top bucket: compute in u128.
            (((u128::from(sub) + 1) << shift) - 1).min(u128::from(u64::MAX)) as u64
        }
    }

    #[inline]
    fn record(&mut self, v: u64) {
        self.counts[Self::bucket(v)] += 1;
        self.total += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// The `p`-th percentile by nearest rank, as its bucket's upper bound; `None` if empty.
    fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p.clamp(0.0, 100.0) / 100.0 * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::upper_bound(b));
            }
        }
        unreachable!("the counts add up to the total")
    }
}

// ---------------------------------------------------------------------------------------------
// The writer
// ---------------------------------------------------------------------------------------------

/// The reader's CPU and the writer's, as indices into the allowed set.
const READER_CPU: usize = 0;
const WRITER_CPU: usize = 1;

/// Pinning a thread to one of the CPUs it is allowed on (as `rcu-sync` does).
#[cfg(target_os = "linux")]
mod affinity {
    use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

    /// Pins the calling thread to the `n`-th CPU (counting from 0) of its allowed set and
    /// returns that CPU; `None` (and no change) if fewer than 2 CPUs are allowed or the calls
    /// fail. Used only on the scenario's own threads, which end with the measurement.
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

/// What the writer did during a measurement.
#[derive(Clone, Copy, Debug, Default)]
struct WriterStats {
    holds: u64,
    /// Time spent holding the big lock for writing.
    held: Duration,
}

/// Holds the big lock for writing for `w.hold` every `w.period`, spinning under it, until
/// `stop` is raised.
fn writer(space: &AddressSpace, w: Writer, stop: &AtomicBool) -> WriterStats {
    writer_doing(space, w, stop, || {
        let begun = Instant::now();
        while begun.elapsed() < w.hold {
            spin_loop();
        }
    })
}

/// The writer's loop: every `w.period`, runs `work` holding the big lock for writing.
fn writer_doing(
    space: &AddressSpace,
    w: Writer,
    stop: &AtomicBool,
    work: impl Fn(),
) -> WriterStats {
    // The writer's own CPU, never the reader's (module docs, "One reader thread, pinned").
    let _ = affinity::pin_to_allowed(WRITER_CPU);
    let mut stats = WriterStats::default();
    let mut next = Instant::now() + (w.period - w.hold);
    loop {
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        }
        // Relaxed: a stop flag; the scope's join orders the rest.
        if stop.load(Ordering::Relaxed) {
            return stats;
        }
        let held = space.with_write_lock(|| {
            let begun = Instant::now();
            work();
            begun.elapsed()
        });
        stats.holds += 1;
        stats.held += held;
        // The next hold a period after this one was due (a late wake-up is made up for), but
        // never sooner than half the free time after this one ended: a late writer does not
        // hold back to back.
        next = (next + w.period).max(Instant::now() + (w.period - w.hold) / 2);
    }
}

/// Raises a stop flag when dropped: stops the writer even if a reader panics (else the
/// scope would wait for the writer forever).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        // Relaxed: a stop flag; the scope's join orders the rest.
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `readers` while the writer of setting `w` runs (none for `none`); returns their result,
/// what the writer did, and the readers' wall time.
fn with_writer<R>(
    space: &AddressSpace,
    w: Writer,
    readers: impl FnOnce() -> R,
) -> (R, WriterStats, Duration) {
    if w.hold.is_zero() {
        let begun = Instant::now();
        let r = readers();
        return (r, WriterStats::default(), begun.elapsed());
    }
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let handle = s.spawn(|| writer(space, w, &stop));
        let stopper = StopOnDrop(&stop);
        let begun = Instant::now();
        let r = readers();
        let elapsed = begun.elapsed();
        drop(stopper);
        let stats = handle
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (r, stats, elapsed)
    })
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

/// A gap between two consecutive clock reads of the reader longer than this (ns) is time the
/// reader did not run (module docs, "Off-CPU time"); a lookup is ~0.1 µs, a clock read less.
const GAP_NS: u64 = 5_000;

/// Takes the time the reader waited for a CPU out of its measurements (module docs, "Off-CPU
/// time").
struct OffCpu {
    delay: clock::RunDelay,
    last: Option<u64>,
    /// Run delay taken out of long lookups so far, ns.
    excluded_ns: u64,
    /// Gaps of the wait loop taken out so far, ns.
    stopped_ns: u64,
}

impl OffCpu {
    fn new() -> Self {
        let delay = clock::RunDelay::of_this_thread();
        let last = delay.ns();
        OffCpu {
            delay,
            last,
            excluded_ns: 0,
            stopped_ns: 0,
        }
    }

    /// The run delay since the last call (or [`resync`](Self::resync)), ns (0 where unknown).
    #[cold]
    fn since_last(&mut self) -> u64 {
        let now = self.delay.ns();
        let d = match (self.last, now) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        self.last = now;
        self.excluded_ns += d;
        d
    }

    /// Forgets the run delay so far (already accounted for otherwise).
    #[cold]
    fn resync(&mut self) {
        self.last = self.delay.ns();
    }
}

/// What one reader thread's open loop measured.
struct OpenLoop {
    hist: Histogram,
    /// Fraction of the run taken out as run delay (waiting for a CPU).
    excluded: f64,
}

/// The open loop of one reader thread: a lookup arrives every [`ARRIVAL_NS`] for `duration`;
/// each one's completion − arrival goes into the histogram, in clock ticks. Time spent
/// runnable without a CPU shifts the schedule instead of counting as latency.
fn open_loop<L: Fn(&AddressSpace, u64)>(
    space: &AddressSpace,
    lookup: &L,
    duration: Duration,
) -> OpenLoop {
    let rate = clock::ticks_per_ns();
    let interval = ((ARRIVAL_NS as f64 * rate) as u64).max(1);
    let gap = (GAP_NS as f64 * rate) as u64;
    let span = (duration.as_nanos() as f64 * rate) as u64;
    let ticks = |ns: u64| (ns as f64 * rate) as u64;
    let _ = affinity::pin_to_allowed(READER_CPU);
    // Untimed first lookup: RCU registration, thread-local set-up.
    lookup(space, target());
    let mut off_cpu = OffCpu::new();
    let mut hist = Histogram::new();
    let begin = clock::now();
    let end = begin + span;
    let mut arrival = begin;
    let mut prev = begin;
    while arrival < end {
        let addr = target();
        loop {
            let t = clock::now();
            let stopped = t.wrapping_sub(prev);
            if stopped > gap {
                // The wait loop does nothing but read the clock: the thread did not run. Its
                // run delay meanwhile is part of this gap, not of the next long lookup.
                arrival += stopped;
                off_cpu.stopped_ns += (stopped as f64 / rate) as u64;
                off_cpu.resync();
            }
            prev = t;
            if t >= arrival {
                break;
            }
            spin_loop();
        }
        lookup(space, addr);
        let done = clock::now_after();
        let took = done.wrapping_sub(prev);
        if took > gap {
            // A long lookup: blocked on the big lock (counts), or preempted (run delay, out;
            // never more than the lookup itself took).
            arrival += ticks(off_cpu.since_last()).min(took);
        }
        hist.record(done.saturating_sub(arrival));
        prev = done;
        arrival += interval;
    }
    OpenLoop {
        hist,
        excluded: (off_cpu.excluded_ns + off_cpu.stopped_ns) as f64 / duration.as_nanos() as f64,
    }
}

/// The closed loop of one reader thread: lookups back to back for `duration`, no per-lookup
/// timestamps; lookups per second of the time the thread did not wait for a CPU.
fn closed_loop<L: Fn(&AddressSpace, u64)>(
    space: &AddressSpace,
    lookup: &L,
    duration: Duration,
) -> f64 {
    let _ = affinity::pin_to_allowed(READER_CPU);
    lookup(space, target());
    let off_cpu = OffCpu::new();
    let begun = Instant::now();
    let mut ops = 0u64;
    while begun.elapsed() < duration {
        for _ in 0..harness::BATCH {
            lookup(space, target());
        }
        ops += harness::BATCH;
    }
    let elapsed = begun.elapsed().as_nanos() as u64;
    let waited = match (off_cpu.last, off_cpu.delay.ns()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => 0,
    };
    ops as f64 / (elapsed.saturating_sub(waited).max(1) as f64 / 1e9)
}

/// One measurement of one variant under one writer setting.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// p50, p99, p99.9 in µs, then lookups per second: [`METRICS`] order.
    figures: [f64; 4],
    /// Fraction of the wall time the writer held the big lock (both phases together).
    held_fraction: f64,
    /// Fraction of the latency run taken out as off-CPU time.
    excluded: f64,
    /// The writer's mean hold, µs (NaN without a writer).
    mean_hold_us: f64,
}

fn measure_with<L: Fn(&AddressSpace, u64) + Sync>(
    lookup: L,
    w: Writer,
    latency_for: Duration,
    throughput_for: Duration,
) -> Sample {
    let space = space();
    let ((hist, excluded), w1, t1) = with_writer(&space, w, || {
        thread::scope(|s| {
            let runs: Vec<_> = (0..READERS)
                .map(|_| s.spawn(|| open_loop(&space, &lookup, latency_for)))
                .collect();
            let mut all = Histogram::new();
            let mut excluded = 0.0;
            for r in runs {
                let run = r.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
                all.merge(&run.hist);
                excluded += run.excluded / READERS as f64;
            }
            (all, excluded)
        })
    });
    let (per_sec, w2, t2) = with_writer(&space, w, || {
        thread::scope(|s| {
            let runs: Vec<_> = (0..READERS)
                .map(|_| s.spawn(|| closed_loop(&space, &lookup, throughput_for)))
                .collect();
            runs.into_iter()
                .map(|r| r.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .sum::<f64>()
        })
    });
    let us = |p: f64| {
        hist.percentile(p)
            .map_or(f64::NAN, |t| t as f64 / clock::ticks_per_ns() / 1e3)
    };
    Sample {
        figures: [us(50.0), us(99.0), us(99.9), per_sec],
        held_fraction: (w1.held + w2.held).as_secs_f64() / (t1 + t2).as_secs_f64(),
        excluded,
        mean_hold_us: (w1.held + w2.held).as_secs_f64() * 1e6 / (w1.holds + w2.holds) as f64,
    }
}

fn measure(v: Variant, w: Writer, latency_for: Duration, throughput_for: Duration) -> Sample {
    match v.kind {
        Kind::RefLock => measure_with(lookup_reflock, w, latency_for, throughput_for),
        Kind::BigLock => measure_with(lookup_big_lock, w, latency_for, throughput_for),
    }
}

/// Adds to every record the ratio of its median to `big-lock`'s with the same metric and the
/// same writer setting ([`harness::add_ratio_to_variant`] matches on metric and threads only).
fn add_ratio_same_writer(records: &mut [Record]) {
    let writer = |r: &Record| {
        r.extra
            .iter()
            .find(|(k, _)| *k == "writer")
            .map(|(_, v)| v.clone())
    };
    let bases: Vec<_> = records
        .iter()
        .filter(|r| r.variant == REFERENCE)
        .map(|r| (r.metric, writer(r), r.summary.median))
        .collect();
    for r in records.iter_mut() {
        let w = writer(r);
        if let Some(&(_, _, base)) = bases.iter().find(|(m, bw, _)| *m == r.metric && *bw == w) {
            r.ratios.push(Ratio {
                key: "ratio",
                to: REFERENCE.to_string(),
                header: format!("vs {REFERENCE}"),
                value: r.summary.median / base,
            });
        }
    }
}

fn run(cfg: &Config, progress: &mut Progress) -> Report {
    progress.step(format_args!("calibrating the clock"));
    clock::ticks_per_ns();
    let latency_for = cfg.duration / 2;
    let throughput_for = cfg.duration / 4;
    for v in VARIANTS {
        progress.step(format_args!("warm-up {}", v.name));
        measure(*v, WRITERS[0], cfg.duration / 8, cfg.duration / 8);
    }
    // samples[writer][variant][rep]
    let mut samples: Vec<Vec<Vec<Sample>>> = WRITERS
        .iter()
        .map(|_| VARIANTS.iter().map(|_| Vec::new()).collect())
        .collect();
    for rep in 0..cfg.reps {
        for (wi, w) in WRITERS.iter().enumerate() {
            for k in 0..VARIANTS.len() {
                let i = (rep + k) % VARIANTS.len();
                progress.step(format_args!(
                    "rep {}/{} {} writer={}",
                    rep + 1,
                    cfg.reps,
                    VARIANTS[i].name,
                    w.name
                ));
                samples[wi][i].push(measure(VARIANTS[i], *w, latency_for, throughput_for));
            }
        }
    }
    let mut records = Vec::new();
    let mut duty = Vec::new();
    for (wi, w) in WRITERS.iter().enumerate() {
        for (m, metric) in METRICS.iter().enumerate() {
            for (i, v) in VARIANTS.iter().enumerate() {
                let xs: Vec<f64> = samples[wi][i].iter().map(|s| s.figures[m]).collect();
                records.push(
                    Record::new(NAME, v.name, READERS, metric, &xs).with_extra("writer", w.name),
                );
            }
        }
        if !w.hold.is_zero() {
            let of = |f: fn(&Sample) -> f64| {
                let xs: Vec<f64> = samples[wi].iter().flatten().map(f).collect();
                harness::median(&xs)
            };
            duty.push(format!(
                "{} held {:.1} % of the time, mean hold {:.0} µs (nominal {:.0} %, {} µs)",
                w.name,
                of(|s| s.held_fraction * 100.0),
                of(|s| s.mean_hold_us),
                w.hold.as_secs_f64() / w.period.as_secs_f64() * 100.0,
                w.hold.as_micros()
            ));
        }
    }
    let excluded: Vec<f64> = samples
        .iter()
        .flatten()
        .flatten()
        .map(|s| s.excluded * 100.0)
        .collect();
    add_ratio_same_writer(&mut records);
    Report {
        scenario: NAME,
        title: "range lookups while a writer holds the big lock: RCU + per-range RefLock vs the big read lock".to_string(),
        notes: vec![
            format!(
                "{READERS} reader thread looks up random addresses in {TARGETS} long-lived ranges (a page fault's VMA lookup) while 1 writer thread, pinned to the other CPU, holds the big lock (`mmap_lock`) for writing and spins on-CPU under it, changing no range the reader looks up. writer: `none` = no writer; `held-50us` = 50 µs every 1 ms; `held-long` = 1 ms every 5 ms (the millisecond holds of a large munmap/mprotect or a fork, which the per-VMA lock exists to keep faults from waiting for)."
            ),
            format!(
                "p50_us, p99_us, p999_us (lower is better): open loop, a lookup arrives every {} µs and its latency is completion − arrival, so lookups queued behind a stalled one count their wait too; every lookup timed with the TSC (rdtsc/rdtscp, ~10 ns a read, included), per-thread log-linear histogram (1.6 % buckets). lookups_per_sec (higher is better): closed loop, lookups back to back without timestamps.",
                ARRIVAL_NS as f64 / 1e3
            ),
            format!(
                "{READERS} reader, pinned, because the machine has 2 cores: reader and writer get one each (sharing one, the writer's hold would run instead of the reader and hide the stall). Measured: {}.",
                duty.join("; ")
            ),
            format!(
                "Time the reader was off its CPU (gaps > {} µs in its wait loop; run delay from schedstat inside a lookup; other processes on a shared machine) moves the arrival schedule instead of counting as latency: median {:.1} %, max {:.1} % of a latency run. Time blocked on the big lock counts.",
                GAP_NS / 1000,
                harness::median(&excluded),
                harness::percentile(&excluded, 100.0)
            ),
            format!(
                "Median (min, max) of {} runs of {} ms (latency) + {} ms (throughput); variants interleaved. Ratio: median / median of `{REFERENCE}` under the same writer.",
                cfg.reps,
                latency_for.as_millis(),
                throughput_for.as_millis()
            ),
        ],
        records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant runs under every writer setting and reports finite, ordered figures (no
    /// timing asserted).
    #[test]
    #[cfg_attr(miri, ignore)] // spins on the clock and sleeps; Miri would take hours
    fn every_variant_measures() {
        for w in WRITERS {
            for v in VARIANTS {
                let s = measure(*v, *w, Duration::from_millis(10), Duration::from_millis(10));
                let [p50, p99, p999, per_sec] = s.figures;
                let what = format!("{} writer={}: {:?}", v.name, w.name, s);
                assert!(p50 > 0.0 && p50 <= p99 && p99 <= p999, "{what}");
                assert!(
                    p999.is_finite() && per_sec.is_finite() && per_sec > 0.0,
                    "{what}"
                );
                assert!((0.0..1.0).contains(&s.held_fraction), "{what}");
                if w.hold.is_zero() {
                    assert_eq!(s.held_fraction, 0.0, "{what}");
                }
            }
        }
    }

    /// The writer really holds the big lock for writing while it works: a big-lock lookup
    /// begun during a hold ends after it, while the fast path finds its range during the hold.
    #[test]
    #[cfg_attr(miri, ignore)] // sleeps and spins on other threads' progress
    fn the_writer_holds_the_big_lock_and_the_fast_path_does_not_wait() {
        use std::sync::atomic::AtomicU32;
        // 1: in the first hold; 2: fast path done; 3: big-lock lookup about to start;
        // 4: the first hold is ending.
        let phase = AtomicU32::new(0);
        let wait_for = |p: u32| {
            // Acquire: pairs with the Release stores below (plain hand-over of the phases).
            while phase.load(Ordering::Acquire) < p {
                thread::yield_now();
            }
        };
        let space = space();
        let stop = AtomicBool::new(false);
        let w = Writer {
            name: "test",
            hold: Duration::ZERO,
            period: Duration::from_millis(1),
        };
        thread::scope(|s| {
            let h = s.spawn(|| {
                writer_doing(&space, w, &stop, || {
                    if phase.load(Ordering::Acquire) == 0 {
                        // Release (all): pairs with `wait_for`'s Acquire.
                        phase.store(1, Ordering::Release);
                        wait_for(3);
                        // Time for a lookup that ignored the write lock to finish early.
                        thread::sleep(Duration::from_millis(20));
                        phase.store(4, Ordering::Release);
                    }
                })
            });
            let stopper = StopOnDrop(&stop);
            wait_for(1);
            let g = space
                .lock_range_under_rcu(target())
                .expect("the fast path finds a long-lived range while the big lock is held");
            drop(g);
            phase.store(2, Ordering::Release);
            phase.store(3, Ordering::Release);
            lookup_big_lock(&space, target());
            assert_eq!(
                phase.load(Ordering::Acquire),
                4,
                "a big-lock lookup finished during the writer's hold"
            );
            drop(stopper);
            let stats = h.join().unwrap();
            assert!(stats.holds >= 1, "{stats:?}");
        });
    }

    /// Ratios compare with `big-lock` under the same writer, not with the first `big-lock`
    /// row of the metric (what `harness::add_ratio_to_variant` would pick).
    #[test]
    fn ratios_are_taken_under_the_same_writer() {
        let row = |v, w, x| Record::new(NAME, v, 1, "p99_us", &[x]).with_extra("writer", w);
        let mut records = vec![
            row("reflock", "none", 1.0),
            row(REFERENCE, "none", 2.0),
            row("reflock", "held-50us", 3.0),
            row(REFERENCE, "held-50us", 60.0),
        ];
        add_ratio_same_writer(&mut records);
        let ratios: Vec<f64> = records.iter().map(|r| r.ratios[0].value).collect();
        assert_eq!(ratios, [0.5, 1.0, 0.05, 1.0]);
        assert!(records.iter().all(|r| r.ratios.len() == 1));
        assert!(records[2]
            .to_json()
            .contains(r#""ratio":0.05,"ratio_to":"big-lock","writer":"held-50us"}"#));
    }

    /// The off-CPU correction reads the run delay; on Linux it must parse.
    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore)] // reads /proc
    fn run_delay_is_read_from_schedstat() {
        let d = clock::RunDelay::of_this_thread();
        let first = d.ns().expect("/proc/thread-self/schedstat has a run delay");
        // Read again at offset 0: the counter never goes back.
        assert!(d.ns().expect("read again") >= first);
    }

    #[test]
    fn histogram_buckets_are_exact_then_within_one_64th() {
        for v in (0..100_000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let b = Histogram::bucket(v);
            assert!(b < BUCKETS, "{v}");
            let hi = Histogram::upper_bound(b);
            assert!(v <= hi, "{v} above its bucket's bound {hi}");
            if v < EXACT {
                assert_eq!(hi, v);
            } else {
                assert!((hi - v) as f64 <= v as f64 / 64.0, "{v} -> {hi}");
                // The bucket below ends below v.
                assert!(Histogram::upper_bound(b - 1) < v, "{v}");
            }
        }
    }

    #[test]
    fn histogram_percentiles_are_nearest_rank() {
        let mut h = Histogram::new();
        assert_eq!(h.percentile(50.0), None);
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), Some(50));
        assert_eq!(h.percentile(99.0), Some(99));
        assert_eq!(h.percentile(99.9), Some(100));
        let mut g = Histogram::new();
        g.record(10_000);
        h.merge(&g);
        assert_eq!(h.total, 101);
        let top = h.percentile(100.0).unwrap();
        assert!((10_000..=10_000 + 10_000 / 64).contains(&top), "{top}");
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn targets_are_inside_the_long_lived_ranges() {
        let space = space();
        for _ in 0..1000 {
            let addr = target();
            let g = space.lock_range(addr).expect("every target is mapped");
            assert!(g.start() <= addr && addr < g.end());
        }
    }
}
