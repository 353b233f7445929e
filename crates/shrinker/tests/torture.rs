//! Churn torture: threads register and unregister shrinkers while others
//! walk; every shrinker asserts it is never called after its unregister
//! returned, and every walk completes. Run by CI under AddressSanitizer
//! (`SHRINKER_SANITIZE=1`: smaller and shorter), where a walker touching a
//! freed node is a reported use-after-free.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shrinker::{
    Count, Scan, Shrink, ShrinkControl, ShrinkRequest, ShrinkerBuilder, ShrinkerRegistry,
};

fn sanitize() -> bool {
    std::env::var_os("SHRINKER_SANITIZE").is_some()
}

/// Set by the owner once `unregister` has returned.
struct Probe {
    gone: Arc<AtomicBool>,
    objects: AtomicUsize,
    calls: Arc<AtomicU64>,
}

impl Probe {
    fn check(&self) {
        // Acquire: pairs with the owner's Release store after unregister
        // returned; a call ordered after it sees `true` and fails. (The
        // lifecycle's own ordering is what keeps it false.)
        assert!(
            !self.gone.load(Ordering::Acquire),
            "shrinker called after its unregister returned"
        );
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

impl Shrink for Probe {
    fn count(&self, _: &ShrinkControl) -> Count {
        self.check();
        Count::Objects(self.objects.load(Ordering::Relaxed))
    }
    fn scan(&self, sc: &mut ShrinkControl) -> Scan {
        self.check();
        std::thread::yield_now(); // widen the pinned window
        self.check();
        Scan::Freed(sc.nr_to_scan())
    }
}

#[test]
fn churn_against_walks() {
    let reg = ShrinkerRegistry::builder().nodes(2).build().unwrap();
    let budget = if sanitize() {
        Duration::from_millis(800)
    } else {
        Duration::from_secs(2)
    };
    let deadline = Instant::now() + budget;
    let calls = Arc::new(AtomicU64::new(0));
    let walks = AtomicU64::new(0);
    let churns = AtomicU64::new(0);
    // A stable population, so the list always has neighbours to step over.
    let stable: Vec<_> = (0..16)
        .map(|i| {
            ShrinkerBuilder::new(format!("stable{i}"))
                .numa_aware(i % 2 == 0)
                .build_in(
                    &reg,
                    Probe {
                        gone: Arc::new(AtomicBool::new(false)),
                        objects: AtomicUsize::new(1000),
                        calls: calls.clone(),
                    },
                )
                .unwrap()
                .register()
        })
        .collect();
    std::thread::scope(|s| {
        for t in 0..2 {
            let (reg, calls, churns) = (&reg, &calls, &churns);
            s.spawn(move || {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let gone: Vec<_> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
                    let handles: Vec<_> = gone
                        .iter()
                        .map(|g| {
                            ShrinkerBuilder::new(format!("churn{t}-{i}"))
                                .seeks(0)
                                .build_in(
                                    reg,
                                    Probe {
                                        gone: g.clone(),
                                        objects: AtomicUsize::new(300),
                                        calls: calls.clone(),
                                    },
                                )
                                .unwrap()
                                .register()
                        })
                        .collect();
                    for (h, g) in handles.into_iter().zip(&gone) {
                        drop(h.unregister());
                        // Release: pairs with the Acquire in `check`.
                        g.store(true, Ordering::Release);
                    }
                    i += 1;
                    churns.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for t in 0..2 {
            let (reg, walks) = (&reg, &walks);
            s.spawn(move || {
                let mut prio = 12u8;
                while Instant::now() < deadline {
                    let req = ShrinkRequest {
                        node: t,
                        priority: prio,
                        ..Default::default()
                    };
                    reg.shrink(&req).unwrap();
                    prio = if prio == 0 { 12 } else { prio - 1 };
                    walks.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    drop(stable);
    assert!(reg.is_empty());
    shrinker_rcu::rcu_barrier(); // every node freed before the test ends
    let (w, c) = (
        walks.load(Ordering::Relaxed),
        churns.load(Ordering::Relaxed),
    );
    assert!(w > 0 && c > 0, "walks {w}, churn rounds {c}");
    assert!(calls.load(Ordering::Relaxed) > 0);
}
