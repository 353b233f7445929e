//! The `foyer` adapter: kernel-exact asks through `resize`, bytes from
//! weights, concurrency and the refill guard.
#![cfg(feature = "foyer")]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{at, kernel_asks, registry, PRIORITIES};
use foyer_memory::{Cache, EvictionConfig, LruConfig};
use shrinker::reclaim::LevelWatch;
use shrinker_adapters::{ManualClock, Options, RefillPolicy};
use shrinker_pressure::Level;

#[test]
fn each_priority_drops_the_kernel_exact_count_and_bytes() {
    const N: usize = 16_000;
    let reg = registry();
    let cache = shrinker_adapters::foyer::register_with(
        &reg,
        Options::new("foyer").bytes_per_weight(1),
        Cache::builder(N * 64)
            .with_weighter(|_: &u64, v: &Vec<u8>| v.len())
            .with_eviction_config(EvictionConfig::Lru(LruConfig::default()))
            .build(),
    )
    .unwrap();
    for i in 0..2 * N as u64 {
        cache.insert(i, vec![0; 64]);
    }
    assert_eq!(cache.entries(), N, "full");
    let mut deferred = 0;
    for p in PRIORITIES {
        let before = cache.entries();
        let asked: usize = kernel_asks(before, &mut deferred, u32::from(p), 2)
            .iter()
            .sum();
        let freed = reg.shrink_accounted(&at(p)).unwrap();
        let want = asked.min(before);
        assert_eq!(freed.objects, want as u64, "priority {p}: objects");
        assert_eq!(freed.bytes, 64 * want as u64, "priority {p}: bytes");
        assert_eq!(cache.entries(), before - want, "priority {p}: dropped");
        assert_eq!(
            cache.refill_guard().cap(),
            (64 * cache.entries() as u64).max(1),
            "priority {p}: the sticky cap"
        );
    }
    assert_eq!(cache.entries(), 0, "priority 0 asked for twice the cache");
}

/// A value that counts its own drops, per key.
struct Tracked {
    key: usize,
    drops: Arc<Vec<AtomicU8>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops[self.key].fetch_add(1, Ordering::Relaxed);
    }
}

struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn concurrent_inserts_during_shrinks_lose_nothing_that_was_not_evicted() {
    const M: usize = 40_000;
    let reg = registry();
    let drops: Arc<Vec<AtomicU8>> = Arc::new((0..M).map(|_| AtomicU8::new(0)).collect());
    let cache = shrinker_adapters::foyer::register_with(
        &reg,
        // A large batch: each resize spawns a thread per shard.
        Options::new("foyer").batch(2_048).refill(RefillPolicy {
            cool_down: Duration::ZERO,
            step_interval: Duration::ZERO,
            steps: 1,
        }),
        Cache::builder(10_000).build(),
    )
    .unwrap();
    let done = AtomicBool::new(false);
    let shrunk = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                for p in [4, 2] {
                    shrunk.fetch_add(reg.shrink(&at(p)).unwrap(), Ordering::Relaxed);
                }
            }
        });
        s.spawn(|| {
            let _stop = SetOnDrop(&done);
            for key in 0..M {
                let v = Tracked {
                    key,
                    drops: Arc::clone(&drops),
                };
                drop(cache.insert(key as u64, v));
                // Usable during the shrinks: there, or evicted already.
                let there = cache.get(&(key as u64)).is_some();
                // An eviction may release the value just after the cache's
                // lock: an entry gone must be counted evicted, soon.
                common::present_or_counted_soon(key, there, || {
                    drops[key].load(Ordering::Relaxed) != 0
                });
            }
        });
    });
    assert!(shrunk.into_inner() > 0, "the shrinks ran");
    for key in 0..M {
        let d = usize::from(drops[key].load(Ordering::Relaxed));
        let present = usize::from(cache.contains(&(key as u64)));
        assert_eq!(present + d, 1, "key {key}: present {present}, dropped {d}");
    }
}

#[test]
fn refill_guard_holds_the_capacity_until_the_level_has_been_none_for_the_cool_down() {
    let reg = registry();
    let clock = Arc::new(ManualClock::new());
    let watch = LevelWatch::new();
    let cache = shrinker_adapters::foyer::register_with(
        &reg,
        Options::new("foyer")
            .level_watch(watch.clone())
            .clock(clock.clone()),
        Cache::builder(8_000).build(),
    )
    .unwrap();
    for i in 0..20_000u64 {
        cache.insert(i, i);
    }
    assert_eq!(cache.entries(), 8_000, "every shard full");
    watch.set(Level::Critical);
    assert_eq!(reg.shrink(&at(2)).unwrap(), 3_968);
    // foyer 0.22's `capacity()` keeps reporting the built capacity after a
    // `resize`: the guard's cap and the entries tell the truth.
    assert_eq!(cache.refill_guard().cap(), 4_032);
    for i in 8_000..20_000u64 {
        cache.insert(i, i);
    }
    assert_eq!(
        cache.entries(),
        4_032,
        "the refill stops at the cut capacity"
    );
    clock.advance(Duration::from_secs(3_600));
    assert!(!cache.maintain(), "held while Critical");
    assert_eq!(cache.refill_guard().cap(), 4_032);
    watch.set(Level::None);
    assert!(cache.maintain());
    assert_eq!(cache.refill_guard().cap(), 5_032, "one step of 1/8");
    for i in 40_000..60_000u64 {
        cache.insert(i, i);
    }
    assert_eq!(cache.entries(), 5_032, "the cache follows the grown cap");
    clock.advance(Duration::from_secs(5));
    assert!(cache.maintain());
    assert_eq!(cache.refill_guard().cap(), 6_032);
}
