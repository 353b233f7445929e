//! The measurement behind `PercpuRef`'s slot choice: what does a get+put pair
//! cost with each way of spreading the count, at 1 and 2 threads?
//!
//! `cargo run --release -p shrinker-sync --example slot_choice`
//!
//! Every variant but `PercpuRef` runs inside a `shrinker_rcu` read-side
//! section per operation, as `PercpuRef` did when this choice was made, so
//! that only the slot strategy differs between them. (`PercpuRef`'s fast path
//! is now its own section, a busy flag in the thread's slot: see its module
//! docs.)
//!
//! * `arc`: `Arc::clone` + drop on one shared `Arc` (the reference point).
//! * `shared-atomic`: one shared counter, `fetch_add`.
//! * `percpu-getcpu`: a slot per CPU chosen by glibc's `sched_getcpu()` (served
//!   from the rseq area on glibc ≥ 2.35), `fetch_add` (needed: the thread may
//!   migrate between reading its CPU and updating the slot).
//! * `thread-atomic`: a slot per thread, `fetch_add`.
//! * `thread-owned`: a slot per thread owned by it, `Relaxed` load + store.
//! * `PercpuRef`: the real thing (thread-owned slots).
//!
//! This is a development tool, not a benchmark with peers: `shrinker-bench`
//! owns those. Figures are medians of a few runs on a noisy shared machine.

use crossbeam_utils::CachePadded;
use shrinker_sync::{InitFlags, PercpuRef};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

extern "C" {
    /// glibc's `sched_getcpu(3)`.
    fn sched_getcpu() -> i32;
}

const SLOTS: usize = 64;

struct Slots {
    count: AtomicIsize,
    slots: Box<[CachePadded<AtomicIsize>]>,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);
std::thread_local! {
    // Relaxed: uniqueness only.
    static THREAD: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) % SLOTS;
}

fn current_cpu() -> usize {
    // SAFETY: sched_getcpu takes no arguments and only reads per-thread state.
    let cpu = unsafe { sched_getcpu() };
    usize::try_from(cpu).unwrap_or(0) % SLOTS
}

#[inline(never)]
fn shared_atomic(s: &Slots, d: isize) {
    let _g = shrinker_rcu::read_lock();
    s.count.fetch_add(d, Ordering::Relaxed);
}

#[inline(never)]
fn percpu_getcpu(s: &Slots, d: isize) {
    let _g = shrinker_rcu::read_lock();
    s.slots[current_cpu()].fetch_add(d, Ordering::Relaxed);
}

#[inline(never)]
fn thread_atomic(s: &Slots, d: isize) {
    let _g = shrinker_rcu::read_lock();
    s.slots[THREAD.with(|t| *t)].fetch_add(d, Ordering::Relaxed);
}

#[inline(never)]
fn thread_owned(s: &Slots, d: isize) {
    let _g = shrinker_rcu::read_lock();
    let slot = &s.slots[THREAD.with(|t| *t)];
    slot.store(
        slot.load(Ordering::Relaxed).wrapping_add(d),
        Ordering::Relaxed,
    );
}

/// Runs `op` (one get+put pair) `iters` times on each of `threads` threads;
/// returns ns per pair of the slowest thread.
fn time(threads: usize, iters: u64, op: &(dyn Fn() + Sync)) -> f64 {
    let barrier = Barrier::new(threads);
    let slowest: Duration = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let t = Instant::now();
                    for _ in 0..iters {
                        op();
                    }
                    t.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("measuring thread"))
            .max()
            .unwrap_or_default()
    });
    slowest.as_nanos() as f64 / iters as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let iters = 2_000_000;
    let runs = 5;
    let slots = Slots {
        count: AtomicIsize::new(0),
        slots: (0..SLOTS)
            .map(|_| CachePadded::new(AtomicIsize::new(0)))
            .collect(),
    };
    let arc = Arc::new(0u64);
    let pref = PercpuRef::new(|| {}, InitFlags::NONE);
    type Variant<'a> = (&'a str, Box<dyn Fn() + Sync + 'a>);
    let variants: Vec<Variant<'_>> = vec![
        (
            "arc",
            Box::new(|| drop(black_box(Arc::clone(black_box(&arc))))),
        ),
        (
            "shared-atomic",
            Box::new(|| {
                shared_atomic(black_box(&slots), 1);
                shared_atomic(black_box(&slots), -1);
            }),
        ),
        (
            "percpu-getcpu",
            Box::new(|| {
                percpu_getcpu(black_box(&slots), 1);
                percpu_getcpu(black_box(&slots), -1);
            }),
        ),
        (
            "thread-atomic",
            Box::new(|| {
                thread_atomic(black_box(&slots), 1);
                thread_atomic(black_box(&slots), -1);
            }),
        ),
        (
            "thread-owned",
            Box::new(|| {
                thread_owned(black_box(&slots), 1);
                thread_owned(black_box(&slots), -1);
            }),
        ),
        (
            "PercpuRef",
            Box::new(|| {
                black_box(&pref).get();
                black_box(&pref).put();
            }),
        ),
    ];
    println!("ns per get+put pair, median of {runs} runs of {iters} pairs per thread");
    println!("{:<15} {:>10} {:>10}", "variant", "1 thread", "2 threads");
    for (name, op) in &variants {
        let one = median((0..runs).map(|_| time(1, iters, op.as_ref())).collect());
        let two = median((0..runs).map(|_| time(2, iters, op.as_ref())).collect());
        println!("{name:<15} {one:>10.1} {two:>10.1}");
    }
}
