//! loom models of [`RcuWait`]: the store-buffering handshake loses no
//! wake-up. A lost wake-up leaves the waiter parked forever, which loom
//! reports as a deadlock.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p shrinker-sync --test loom_rcuwait`
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use shrinker_sync::RcuWait;

/// One waker, `Relaxed` condition: only RcuWait's SeqCst fences order the
/// condition store against the waiter's registration.
#[test]
fn no_lost_wake_up() {
    loom::model(|| {
        let w = Arc::new(RcuWait::new());
        let flag = Arc::new(AtomicBool::new(false));
        let waker = {
            let (w, flag) = (w.clone(), flag.clone());
            thread::spawn(move || {
                flag.store(true, Ordering::Relaxed);
                w.wake_up();
            })
        };
        w.wait_until(|| flag.load(Ordering::Relaxed));
        waker.join().unwrap();
        assert!(!w.has_waiter());
    });
}

/// Two readers leave, each waking the writer; the writer returns once both
/// have gone (the per-VMA lock's writer wait).
#[test]
fn waiter_sees_the_last_of_two_wakers() {
    loom::model(|| {
        let w = Arc::new(RcuWait::new());
        let readers = Arc::new(AtomicUsize::new(2));
        let wakers: Vec<_> = (0..2)
            .map(|_| {
                let (w, readers) = (w.clone(), readers.clone());
                thread::spawn(move || {
                    readers.fetch_sub(1, Ordering::Relaxed);
                    w.wake_up();
                })
            })
            .collect();
        w.wait_until(|| readers.load(Ordering::Relaxed) == 0);
        for t in wakers {
            t.join().unwrap();
        }
    });
}
