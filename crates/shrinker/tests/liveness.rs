//! Liveness: one shrinker blocked inside `scan` blocks nobody but its own
//! unregister. Meanwhile another thread registers and unregisters 1,000
//! shrinkers and a third completes walks (which call the blocked shrinker
//! too: only the first caller blocks).
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use shrinker::{
    Count, Scan, Shrink, ShrinkControl, ShrinkRequest, ShrinkerBuilder, ShrinkerRegistry,
};

/// Blocks the first scan until `release` is signalled.
struct Blocker {
    first: AtomicBool,
    entered: Arc<Barrier>,
    release: std::sync::Mutex<mpsc::Receiver<()>>,
}

impl Shrink for Blocker {
    fn count(&self, _: &ShrinkControl) -> Count {
        Count::Objects(1000)
    }
    fn scan(&self, _: &mut ShrinkControl) -> Scan {
        if !self.first.swap(true, Ordering::SeqCst) {
            self.entered.wait();
            self.release.lock().unwrap().recv().unwrap();
        }
        Scan::Stop
    }
}

struct Cheap;
impl Shrink for Cheap {
    fn count(&self, _: &ShrinkControl) -> Count {
        Count::Objects(10)
    }
    fn scan(&self, sc: &mut ShrinkControl) -> Scan {
        Scan::Freed(sc.nr_to_scan())
    }
}

fn hard() -> ShrinkRequest {
    ShrinkRequest {
        priority: 0,
        ..Default::default()
    }
}

#[test]
fn blocked_scan_blocks_only_its_own_unregister() {
    let reg = ShrinkerRegistry::builder().nodes(1).build().unwrap();
    let entered = Arc::new(Barrier::new(2));
    let (release, rx) = mpsc::channel();
    let blocker = ShrinkerBuilder::new("blocker")
        .build_in(
            &reg,
            Blocker {
                first: AtomicBool::new(false),
                entered: entered.clone(),
                release: std::sync::Mutex::new(rx),
            },
        )
        .unwrap()
        .register();
    let _neighbour = ShrinkerBuilder::new("neighbour")
        .build_in(&reg, Cheap)
        .unwrap()
        .register();

    // Thread A: a walk that blocks inside the blocker's scan.
    let stuck = {
        let reg = reg.clone();
        std::thread::spawn(move || reg.shrink(&hard()).unwrap())
    };
    entered.wait();

    // Thread D: unregisters the blocker; must wait for A.
    let (unreg_done_tx, unreg_done) = mpsc::channel();
    let unregistering = std::thread::spawn(move || {
        drop(blocker.unregister());
        unreg_done_tx.send(()).unwrap();
    });

    // Thread B: 1,000 register/unregister cycles. Thread C: walks.
    let churn = {
        let reg = reg.clone();
        std::thread::spawn(move || {
            for i in 0..1000 {
                let s = ShrinkerBuilder::new(format!("c{i}"))
                    .build_in(&reg, Cheap)
                    .unwrap()
                    .register();
                drop(s);
            }
        })
    };
    let walker = {
        let reg = reg.clone();
        std::thread::spawn(move || {
            for _ in 0..1000 {
                reg.shrink(&hard()).unwrap();
            }
        })
    };
    churn.join().unwrap();
    walker.join().unwrap();
    // The blocker's unregister is still waiting for thread A.
    assert!(
        unreg_done.recv_timeout(Duration::from_millis(50)).is_err(),
        "unregister returned while its shrinker was still inside scan"
    );
    release.send(()).unwrap();
    stuck.join().unwrap();
    unreg_done
        .recv_timeout(Duration::from_secs(10))
        .expect("unregister finished once the callback returned");
    unregistering.join().unwrap();
    assert_eq!(reg.len(), 1);
}
