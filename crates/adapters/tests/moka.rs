//! The `moka` sync adapter: kernel-exact removes, bytes from weights,
//! concurrency and the sticky cap held by `insert`.
#![cfg(feature = "moka")]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{at, kernel_asks, registry, PRIORITIES};
use moka::notification::RemovalCause;
use moka::sync::Cache;
use shrinker::reclaim::LevelWatch;
use shrinker_adapters::{ManualClock, Options, RefillPolicy};
use shrinker_pressure::Level;

#[test]
fn each_priority_removes_the_kernel_exact_count_and_its_bytes() {
    const N: u64 = 20_000;
    let reg = registry();
    let cache = shrinker_adapters::moka::register_with(
        &reg,
        Options::new("moka").bytes_per_weight(1),
        Cache::builder()
            .max_capacity(N * 64)
            .weigher(|_: &u64, v: &Vec<u8>| v.len() as u32)
            .build(),
    )
    .unwrap();
    for i in 0..N {
        cache.insert(i, vec![0; 64]);
    }
    cache.run_pending_tasks();
    assert_eq!(cache.entry_count(), N);
    let mut deferred = 0;
    for p in PRIORITIES {
        let before = cache.entry_count() as usize;
        let asked: usize = kernel_asks(before, &mut deferred, u32::from(p), 2)
            .iter()
            .sum();
        let freed = reg.shrink_accounted(&at(p)).unwrap();
        let want = asked.min(before);
        assert_eq!(freed.objects, want as u64, "priority {p}: objects");
        assert_eq!(freed.bytes, 64 * want as u64, "priority {p}: bytes");
        assert_eq!(
            cache.entry_count() as usize,
            before - want,
            "priority {p}: removed"
        );
        assert_eq!(
            cache.refill_guard().cap(),
            (64 * cache.entry_count()).max(1),
            "priority {p}: the sticky cap"
        );
    }
    assert_eq!(
        cache.entry_count(),
        0,
        "priority 0 asked for twice the cache"
    );
}

struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn concurrent_inserts_during_shrinks_lose_nothing_that_was_not_evicted() {
    const M: usize = 30_000;
    let reg = registry();
    let gone: Arc<Vec<AtomicU8>> = Arc::new((0..M).map(|_| AtomicU8::new(0)).collect());
    let explicit = Arc::new(AtomicUsize::new(0));
    let (g, e) = (Arc::clone(&gone), Arc::clone(&explicit));
    let cache = shrinker_adapters::moka::register_with(
        &reg,
        Options::new("moka").refill(RefillPolicy {
            cool_down: Duration::ZERO,
            step_interval: Duration::ZERO,
            steps: 1,
        }),
        Cache::builder()
            .max_capacity(10_000)
            .eviction_listener(move |k: Arc<u64>, _: u64, cause| {
                if cause != RemovalCause::Replaced {
                    g[*k as usize].fetch_add(1, Ordering::Relaxed);
                }
                if cause == RemovalCause::Explicit {
                    e.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build(),
    )
    .unwrap();
    let done = AtomicBool::new(false);
    let shrunk = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                for p in [6, 4, 2] {
                    shrunk.fetch_add(reg.shrink(&at(p)).unwrap(), Ordering::Relaxed);
                }
            }
        });
        s.spawn(|| {
            let _stop = SetOnDrop(&done);
            for key in 0..M as u64 {
                cache.insert(key, key);
                let _ = cache.get(&key); // usable during the shrinks
            }
        });
    });
    cache.run_pending_tasks();
    let shrunk = shrunk.into_inner();
    assert!(shrunk > 0, "the shrinks ran");
    for key in 0..M {
        let g = usize::from(gone[key].load(Ordering::Relaxed));
        let present = usize::from(cache.contains_key(&(key as u64)));
        assert_eq!(present + g, 1, "key {key}: present {present}, removed {g}");
    }
    // Every entry a scan reported is an explicit removal the cache saw.
    assert!(shrunk <= explicit.load(Ordering::Relaxed));
    cache.insert(u64::MAX - 1, 7);
    assert_eq!(cache.get(&(u64::MAX - 1)), Some(7), "still a cache");
}

#[test]
fn insert_holds_the_sticky_cap_until_the_level_has_been_none_for_the_cool_down() {
    let reg = registry();
    let clock = Arc::new(ManualClock::new());
    let watch = LevelWatch::new();
    let cache = shrinker_adapters::moka::register_with(
        &reg,
        Options::new("moka")
            .level_watch(watch.clone())
            .clock(clock.clone()),
        Cache::new(8_000),
    )
    .unwrap();
    for i in 0..8_000u64 {
        cache.insert(i, i);
    }
    cache.run_pending_tasks();
    watch.set(Level::Moderate);
    assert_eq!(reg.shrink(&at(2)).unwrap(), 3_968);
    assert_eq!(cache.refill_guard().cap(), 4_032);
    for i in 8_000..20_000u64 {
        cache.insert(i, i);
    }
    cache.maintain();
    assert!(
        cache.entry_count() <= 4_032,
        "refill held: {}",
        cache.entry_count()
    );
    clock.advance(Duration::from_secs(600));
    cache.maintain();
    assert_eq!(cache.refill_guard().cap(), 4_032, "held while Moderate");
    watch.set(Level::None);
    assert!(cache.maintain());
    assert_eq!(cache.refill_guard().cap(), 5_032);
    for _ in 0..3 {
        clock.advance(Duration::from_secs(5));
        assert!(cache.maintain());
    }
    assert!(!cache.refill_guard().is_capped());
    for i in 20_000..30_000u64 {
        cache.insert(i, i);
    }
    cache.run_pending_tasks();
    assert!(cache.entry_count() > 4_032, "the cap is gone");
}
