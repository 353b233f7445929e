//! The `quick_cache` adapter: kernel-exact asks through `set_capacity`,
//! bytes from weights, concurrency and the refill guard.
#![cfg(feature = "quick_cache")]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{at, kernel_asks, registry, PRIORITIES};
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};
use shrinker::reclaim::LevelWatch;
use shrinker_adapters::{ManualClock, Options, RefillPolicy};
use shrinker_pressure::Level;

/// Every entry weighs its value's length: 64 bytes here.
#[derive(Clone)]
struct Bytes;

impl Weighter<u64, Vec<u8>> for Bytes {
    fn weight(&self, _: &u64, v: &Vec<u8>) -> u64 {
        v.len() as u64
    }
}

/// Counts evictions per key.
#[derive(Clone)]
struct Evictions(Arc<Vec<AtomicU8>>);

impl Lifecycle<u64, u64> for Evictions {
    type RequestState = ();
    fn on_evict(&self, _: &mut (), key: u64, _: u64) {
        self.0[key as usize].fetch_add(1, Ordering::Relaxed);
    }
}

fn one_shard(items: usize, weight: u64) -> quick_cache::Options {
    OptionsBuilder::new()
        .estimated_items_capacity(items)
        .weight_capacity(weight)
        .shards(1)
        .build()
        .unwrap()
}

#[test]
fn one_shard_drops_the_kernel_exact_count_and_bytes_at_each_priority() {
    const N: u64 = 20_000;
    let reg = registry();
    let clock = Arc::new(ManualClock::new());
    let cache = shrinker_adapters::quick_cache::register_with(
        &reg,
        Options::new("qc").bytes_per_weight(1).clock(clock.clone()),
        Cache::with_options(
            one_shard(N as usize, N * 64),
            Bytes,
            DefaultHashBuilder::default(),
            quick_cache::sync::DefaultLifecycle::default(),
        ),
    )
    .unwrap();
    for i in 0..2 * N {
        cache.insert(i, vec![0; 64]);
    }
    assert_eq!(cache.len(), N as usize, "full");
    let mut deferred = 0;
    for p in PRIORITIES {
        let before = cache.len();
        let asked: usize = kernel_asks(before, &mut deferred, u32::from(p), 2)
            .iter()
            .sum();
        let freed = reg.shrink_accounted(&at(p)).unwrap();
        let want = asked.min(before);
        assert_eq!(freed.objects, want as u64, "priority {p}: objects");
        assert_eq!(freed.bytes, 64 * want as u64, "priority {p}: bytes");
        assert_eq!(cache.len(), before - want, "priority {p}: dropped");
        assert_eq!(
            cache.capacity(),
            (64 * cache.len() as u64).max(1),
            "priority {p}: the sticky cap"
        );
    }
    // Priority 0 asked for twice the cache: it is empty, and its capacity
    // is down to the floor (1) until the pressure has passed.
    assert_eq!(cache.len(), 0);
    cache.insert(1, vec![1; 64]);
    assert_eq!(cache.get(&1), None, "sticky: a 64-byte entry does not fit");
    clock.advance(Duration::from_secs(30));
    cache.insert(1, vec![1; 64]);
    assert_eq!(
        cache.get(&1),
        Some(vec![1; 64]),
        "a cache again after the cool-down"
    );
    assert_eq!(cache.capacity(), 1 + N * 64 / 8);
}

#[test]
fn sharded_cache_drops_within_a_shard_rounding_of_the_kernel_count() {
    const N: usize = 40_000;
    let reg = registry();
    let cache =
        shrinker_adapters::quick_cache::register(&reg, "qc", Cache::<u64, u64>::new(N)).unwrap();
    for i in 0..2 * N as u64 {
        cache.insert(i, i);
    }
    let shards = cache.num_shards();
    let mut deferred = 0;
    for p in PRIORITIES {
        let before = cache.len();
        let asks = kernel_asks(before, &mut deferred, u32::from(p), 2);
        let asked: usize = asks.iter().sum::<usize>().min(before);
        let freed = reg.shrink(&at(p)).unwrap();
        // Each call's capacity is split over the shards rounding up: at
        // most `shards - 1` short per call, never more than asked while
        // every shard is full.
        let slack = asks.len() * (shards - 1);
        assert!(
            freed <= asked && freed + slack >= asked,
            "priority {p}: freed {freed}, asked {asked}, slack {slack}"
        );
        assert_eq!(cache.len(), before - freed, "priority {p}: really dropped");
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
    const M: usize = 60_000;
    let reg = registry();
    let evictions = Evictions(Arc::new((0..M).map(|_| AtomicU8::new(0)).collect()));
    let eager = RefillPolicy {
        cool_down: Duration::ZERO,
        step_interval: Duration::ZERO,
        steps: 1,
    };
    let cache = shrinker_adapters::quick_cache::register_with(
        &reg,
        Options::new("qc").refill(eager),
        Cache::with(
            20_000,
            20_000,
            quick_cache::UnitWeighter,
            DefaultHashBuilder::default(),
            evictions.clone(),
        ),
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
                // Usable during the shrinks: there, or evicted already.
                let there = cache.peek(&key) == Some(key);
                // An eviction may release the value just after the cache's
                // lock: an entry gone must be counted evicted, soon.
                common::present_or_counted_soon(key, there, || {
                    evictions.0[key as usize].load(Ordering::Relaxed) != 0
                });
            }
        });
    });
    let shrunk = shrunk.into_inner();
    assert!(shrunk > 0, "the shrinks ran");
    let mut evicted = 0;
    for key in 0..M {
        let e = usize::from(evictions.0[key].load(Ordering::Relaxed));
        let present = usize::from(cache.peek(&(key as u64)).is_some());
        assert_eq!(present + e, 1, "key {key}: present {present}, evicted {e}");
        evicted += e;
    }
    // The adapter measures its evictions as the fall of `len`, which racing
    // inserts can only hide: never more than what was evicted.
    assert!(shrunk <= evicted, "reported {shrunk} > evicted {evicted}");
}

#[test]
fn refill_guard_holds_the_capacity_until_the_level_has_been_none_for_the_cool_down() {
    let reg = registry();
    let clock = Arc::new(ManualClock::new());
    let watch = LevelWatch::new();
    let cache = shrinker_adapters::quick_cache::register_with(
        &reg,
        Options::new("qc")
            .level_watch(watch.clone())
            .clock(clock.clone()),
        Cache::with_options(
            one_shard(8_000, 8_000),
            quick_cache::UnitWeighter,
            DefaultHashBuilder::default(),
            quick_cache::sync::DefaultLifecycle::default(),
        ),
    )
    .unwrap();
    for i in 0..8_000u64 {
        cache.insert(i, i);
    }
    watch.set(Level::Critical);
    assert_eq!(reg.shrink(&at(2)).unwrap(), 3_968);
    assert_eq!(cache.capacity(), 4_032);
    for i in 8_000..20_000u64 {
        cache.insert(i, i);
    }
    assert_eq!(cache.len(), 4_032, "the refill stops at the cut capacity");
    clock.advance(Duration::from_secs(3_600));
    assert_eq!(cache.capacity(), 4_032, "held while the level is Critical");
    watch.set(Level::None);
    assert_eq!(cache.capacity(), 5_032, "one step of 1/8");
    clock.advance(Duration::from_secs(4));
    assert_eq!(cache.capacity(), 5_032);
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.capacity(), 6_032);
    // Pressure again: growth stops; the next shrink steps down from here.
    watch.set(Level::Moderate);
    clock.advance(Duration::from_secs(60));
    assert_eq!(cache.capacity(), 6_032);
    for i in 20_000..30_000u64 {
        cache.insert(i, i);
    }
    let before = cache.len();
    let freed = reg.shrink(&at(12)).unwrap(); // 6032 >> 12 = 1: nothing yet
    assert_eq!(freed, 0);
    let freed = reg.shrink(&at(4)).unwrap();
    assert!(freed > 0);
    assert_eq!(cache.capacity(), (before - freed) as u64);
}
