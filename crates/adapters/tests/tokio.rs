//! The `tokio` feature: the monitor awaited on its fd, the watch channels,
//! and the moka future cache's adapter, each under a current-thread and a
//! multi-thread runtime.
#![cfg(feature = "tokio")]

mod common;

use std::future::Future;
use std::time::Duration;

use shrinker::reclaim::{ReclaimConfig, Reclaimer};
use shrinker_adapters::tokio::{watch_monitor, watch_reclaimer, AsyncMonitor};
use shrinker_pressure::{Config, Level, Monitor};
use tokio::time::timeout;

/// Runs `test` on a current-thread runtime, then on a two-worker
/// multi-thread runtime.
fn on_both_runtimes<F: Future<Output = ()>>(test: impl Fn() -> F) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(test());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test());
}

/// Generous: a missed wakeup fails the test instead of hanging it.
const LIMIT: Duration = Duration::from_secs(10);

#[test]
#[cfg_attr(miri, ignore)] // epoll, eventfd
fn async_monitor_reports_each_level_change() {
    on_both_runtimes(|| async {
        let (monitor, handle) = Monitor::manual(Config::default()).unwrap();
        let mut m = AsyncMonitor::new(monitor).unwrap();
        assert_eq!(m.current().level, Level::None);
        for level in [
            Level::Moderate,
            Level::Critical,
            Level::None,
            Level::Critical,
        ] {
            let h = handle.clone();
            // Set from another thread, as a kernel event would arrive.
            std::thread::spawn(move || h.set(level)).join().unwrap();
            let r = timeout(LIMIT, m.changed()).await.expect("woken").unwrap();
            assert_eq!(r.level, level);
        }
        // Cancel-safe: a `changed` dropped before any change loses nothing.
        assert!(timeout(Duration::from_millis(20), m.changed())
            .await
            .is_err());
        handle.set(Level::Moderate);
        let r = timeout(LIMIT, m.changed()).await.expect("woken").unwrap();
        assert_eq!(r.level, Level::Moderate);
    });
}

#[test]
#[cfg_attr(miri, ignore)] // epoll, eventfd
fn watch_monitor_fans_out_and_ends_when_the_receivers_are_gone() {
    on_both_runtimes(|| async {
        let (monitor, handle) = Monitor::manual(Config::default()).unwrap();
        let (rx, task) = watch_monitor(monitor).unwrap();
        let listeners: Vec<_> = (0..4)
            .map(|_| {
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    loop {
                        rx.changed().await.unwrap();
                        if rx.borrow_and_update().level == Level::Critical {
                            return;
                        }
                    }
                })
            })
            .collect();
        handle.set(Level::Moderate);
        handle.set(Level::Critical);
        for l in listeners {
            timeout(LIMIT, l)
                .await
                .expect("every listener saw Critical")
                .unwrap();
        }
        drop(rx);
        let end = timeout(LIMIT, task).await.expect("the task ends");
        assert!(matches!(end, Ok(Ok(()))));
    });
}

#[test]
#[cfg_attr(miri, ignore)] // threads, epoll
fn watch_reclaimer_follows_the_reclaimers_level() {
    on_both_runtimes(|| async {
        let reg = common::registry();
        let (monitor, handle) = Monitor::manual(Config::default()).unwrap();
        let reclaimer = Reclaimer::builder(&reg)
            .monitor(monitor)
            .config(ReclaimConfig {
                lazy_rcu_shrinker: false,
                ..ReclaimConfig::default()
            })
            .start()
            .unwrap();
        let mut rx = watch_reclaimer(&reclaimer).unwrap();
        assert_eq!(*rx.borrow(), Level::None);
        for level in [Level::Critical, Level::None] {
            handle.set(level);
            loop {
                timeout(LIMIT, rx.changed()).await.expect("woken").unwrap();
                if *rx.borrow_and_update() == level {
                    break;
                }
            }
        }
        drop(reclaimer);
        // The forwarding thread ends with the reclaimer: the sender goes.
        while timeout(LIMIT, rx.changed()).await.expect("closed").is_ok() {}
    });
}

#[cfg(feature = "moka")]
mod moka_future {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
    use std::sync::Arc;

    use common::{at, kernel_asks};
    use moka::future::Cache;
    use moka::notification::RemovalCause;

    #[test]
    fn the_future_cache_shrinks_exactly_from_a_blocking_thread() {
        on_both_runtimes(|| async {
            let reg = common::registry();
            let cache = shrinker_adapters::moka::future::register(
                &reg,
                "moka-future",
                Cache::<u64, u64>::new(20_000),
            )
            .unwrap();
            for i in 0..20_000 {
                cache.insert(i, i).await;
            }
            cache.run_pending_tasks().await;
            let mut deferred = 0;
            for p in [12u8, 7, 4, 1] {
                let before = cache.entry_count() as usize;
                let asked: usize = kernel_asks(before, &mut deferred, u32::from(p), 2)
                    .iter()
                    .sum();
                let r = reg.clone();
                let freed = tokio::task::spawn_blocking(move || r.shrink(&at(p)).unwrap())
                    .await
                    .unwrap();
                assert_eq!(freed, asked.min(before), "priority {p}");
                assert_eq!(cache.entry_count() as usize, before - freed, "priority {p}");
            }
            cache.insert(u64::MAX, 1).await;
            assert_eq!(cache.get(&u64::MAX).await, Some(1), "still a cache");
        });
    }

    #[test]
    fn async_inserts_during_shrinks_lose_nothing_that_was_not_evicted() {
        on_both_runtimes(|| async {
            const M: usize = 8_000;
            let reg = common::registry();
            let gone: Arc<Vec<AtomicU8>> = Arc::new((0..M).map(|_| AtomicU8::new(0)).collect());
            let g = Arc::clone(&gone);
            let cache = Arc::new(
                shrinker_adapters::moka::future::register(
                    &reg,
                    "moka-future",
                    Cache::builder()
                        .max_capacity(3_000)
                        .eviction_listener(move |k: Arc<u64>, _: u64, cause| {
                            if cause != RemovalCause::Replaced {
                                g[*k as usize].fetch_add(1, Ordering::Relaxed);
                            }
                        })
                        .build(),
                )
                .unwrap(),
            );
            // The reclaimer's part: a thread of its own.
            let done = Arc::new(AtomicBool::new(false));
            let shrunk = Arc::new(AtomicUsize::new(0));
            let shrinker = {
                let (reg, done, shrunk) = (reg.clone(), done.clone(), shrunk.clone());
                std::thread::spawn(move || {
                    while !done.load(Ordering::Relaxed) {
                        for p in [6, 3] {
                            shrunk.fetch_add(reg.shrink(&at(p)).unwrap(), Ordering::Relaxed);
                        }
                        std::thread::yield_now();
                    }
                })
            };
            // Two inserting tasks, disjoint keys.
            let tasks: Vec<_> = (0..2u64)
                .map(|t| {
                    let cache = Arc::clone(&cache);
                    tokio::spawn(async move {
                        for key in (t..M as u64).step_by(2) {
                            cache.insert(key, key).await;
                            let _ = cache.get(&key).await;
                            tokio::task::yield_now().await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                timeout(LIMIT * 6, t)
                    .await
                    .expect("inserts finish")
                    .unwrap();
            }
            done.store(true, Ordering::Relaxed);
            shrinker.join().unwrap();
            cache.run_pending_tasks().await;
            assert!(shrunk.load(Ordering::Relaxed) > 0, "the shrinks ran");
            for key in 0..M {
                let g = usize::from(gone[key].load(Ordering::Relaxed));
                let present = usize::from(cache.contains_key(&(key as u64)));
                assert_eq!(present + g, 1, "key {key}: present {present}, removed {g}");
            }
        });
    }
}
