//! The `lru` adapter: kernel-exact asks, LRU order, bytes, concurrency and
//! the refill guard.
#![cfg(feature = "lru")]

mod common;

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{at, kernel_asks, registry, PRIORITIES};
use shrinker::reclaim::LevelWatch;
use shrinker_adapters::{ManualClock, Options, RefillPolicy};
use shrinker_pressure::Level;

fn cap(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

#[test]
fn each_priority_drops_the_kernel_exact_count_in_lru_order() {
    let reg = registry();
    const N: usize = 20_000;
    let cache = shrinker_adapters::lru::register_sized(
        &reg,
        Options::new("lru"),
        lru::LruCache::new(cap(N)),
        |_: &usize, v: &[u8; 64]| v.len(),
    )
    .unwrap();
    for i in 0..N {
        cache.lock().put(i, [0; 64]);
    }
    let mut deferred = 0;
    for p in PRIORITIES {
        let before = cache.lock().len();
        let asked: usize = kernel_asks(before, &mut deferred, u32::from(p), 2)
            .iter()
            .sum();
        let freed = reg.shrink_accounted(&at(p)).unwrap();
        let want = asked.min(before);
        assert_eq!(freed.objects, want as u64, "priority {p}: objects");
        assert_eq!(freed.bytes, 64 * want as u64, "priority {p}: bytes");
        let c = cache.lock();
        assert_eq!(
            c.len(),
            before - want,
            "priority {p}: the cache dropped them"
        );
        // LRU order: what is left is the most recently inserted.
        assert!(
            c.iter().all(|(k, _)| *k >= N - c.len()),
            "priority {p}: order"
        );
        // The sticky cap: the capacity followed the length down.
        assert_eq!(c.cap().get(), c.len().max(1), "priority {p}: cap");
    }
    assert!(cache.lock().len() < N / 2, "priority 0 took a large share");
    // Still a working cache.
    cache.lock().put(usize::MAX, [1; 64]);
    assert_eq!(cache.lock().get(&usize::MAX), Some(&[1; 64]));
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
    const M: usize = 60_000;
    let reg = registry();
    // No stickiness: the cap comes back at every access, so that inserts
    // race with shrinks at full speed.
    let eager = RefillPolicy {
        cool_down: Duration::ZERO,
        step_interval: Duration::ZERO,
        steps: 1,
    };
    let cache = Arc::new(
        shrinker_adapters::lru::register_with(
            &reg,
            Options::new("lru").refill(eager),
            lru::LruCache::new(cap(20_000)),
        )
        .unwrap(),
    );
    let drops: Arc<Vec<AtomicU8>> = Arc::new((0..M).map(|_| AtomicU8::new(0)).collect());
    let done = AtomicBool::new(false);
    let shrunk = AtomicUsize::new(0);
    let evicted_by_push = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                for p in [6, 4, 2] {
                    shrunk.fetch_add(reg.shrink(&at(p)).unwrap(), Ordering::Relaxed);
                }
            }
        });
        let inserter = s.spawn(|| {
            // Ends the shrinking loop even if an assertion below fails.
            let _stop = SetOnDrop(&done);
            let mut evicted = 0;
            for key in 0..M {
                let v = Tracked {
                    key,
                    drops: Arc::clone(&drops),
                };
                if let Some((k, _)) = cache.lock().push(key, v) {
                    assert_ne!(k, key, "keys are unique");
                    evicted += 1;
                }
                // Usable during the shrinks: what was just put is there,
                // unless a shrink evicted it already. A shrink drops its
                // batch after releasing the cache's lock, so an entry it
                // took may not be dropped yet: it must be, soon.
                let present = cache.lock().peek(&key).is_some();
                common::present_or_counted_soon(key, present, || {
                    drops[key].load(Ordering::Relaxed) != 0
                });
            }
            evicted
        });
        inserter.join().unwrap()
    });
    let c = cache.lock();
    let shrunk = shrunk.into_inner();
    assert!(shrunk > 0, "the shrinks ran");
    // Every key is in the cache or was dropped, exactly once, and every
    // drop was an eviction (by a shrink or by a push over the capacity).
    let mut dropped = 0;
    for key in 0..M {
        let d = drops[key].load(Ordering::Relaxed);
        let present = usize::from(c.contains(&key));
        assert_eq!(
            present + usize::from(d),
            1,
            "key {key}: present {present}, dropped {d}"
        );
        dropped += usize::from(d);
    }
    assert_eq!(dropped, shrunk + evicted_by_push);
}

#[test]
fn refill_guard_holds_under_pressure_then_grows_back_step_by_step() {
    let reg = registry();
    let clock = Arc::new(ManualClock::new());
    let watch = LevelWatch::new();
    let cache = shrinker_adapters::lru::register_with(
        &reg,
        Options::new("lru")
            .level_watch(watch.clone())
            .clock(clock.clone()),
        lru::LruCache::new(cap(8_000)),
    )
    .unwrap();
    for i in 0..8_000 {
        cache.lock().put(i, ());
    }
    watch.set(Level::Moderate);
    // Priority 2: (8000 >> 2) * 2 = 4000 asked, 31 batches of 128 = 3968.
    assert_eq!(reg.shrink(&at(2)).unwrap(), 3_968);
    assert_eq!(cache.lock().cap().get(), 8_000 - 3_968);
    // Refilling cannot bring the memory back: the cap holds...
    for i in 8_000..20_000 {
        cache.lock().put(i, ());
    }
    assert_eq!(cache.lock().len(), 4_032);
    // ... for as long as the pressure lasts.
    clock.advance(Duration::from_secs(600));
    assert_eq!(cache.lock().cap().get(), 4_032);
    // The level falls (a real Instant, long before the manual clock's
    // now): the cool-down is over, one step of 8000 / 8 at the next access.
    watch.set(Level::None);
    assert_eq!(cache.lock().cap().get(), 5_032);
    assert!(!cache.maintain(), "the next step waits 5 s");
    clock.advance(Duration::from_secs(5));
    assert!(cache.maintain());
    assert_eq!(cache.refill_guard().cap(), 6_032);
    for _ in 0..2 {
        clock.advance(Duration::from_secs(5));
        assert!(cache.maintain());
    }
    assert_eq!(cache.lock().cap().get(), 8_000);
    assert!(!cache.refill_guard().is_capped());
}

#[test]
fn without_a_reclaimer_the_cap_comes_back_by_time() {
    let reg = registry();
    let clock = Arc::new(ManualClock::new());
    let cache = shrinker_adapters::lru::register_with(
        &reg,
        Options::new("lru").clock(clock.clone()),
        lru::LruCache::new(cap(1_000)),
    )
    .unwrap();
    for i in 0..1_000 {
        cache.lock().put(i, ());
    }
    // Priority 0: 2000 asked, capped at twice freeable; the cache empties.
    assert_eq!(reg.shrink(&at(0)).unwrap(), 1_000);
    assert_eq!(cache.lock().cap().get(), 1);
    clock.advance(Duration::from_secs(29));
    assert_eq!(cache.lock().cap().get(), 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.lock().cap().get(), 126, "1 + 1000 / 8 rounded up");
}
