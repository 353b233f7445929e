//! The callback worker survives whatever a callback throws at it.
//!
//! Its own test binary: a regression here kills the process-wide worker, and
//! every later `rcu_barrier` of the binary would hang. Each test body runs
//! on a thread of its own with a deadline, so a dead worker fails the test
//! instead of hanging the suite.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use shrinker_rcu::{call_rcu, defer_drop, rcu_barrier, stats};

/// Run `body` on its own thread; fail if it has not finished within `secs`
/// (the thread is left behind: the process ends with the test binary).
fn with_deadline(secs: u64, what: &str, body: impl FnOnce() + Send + 'static) {
    let (done_tx, done_rx) = mpsc::channel();
    let t = thread::spawn(move || {
        body();
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => t.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The body panicked: report its panic.
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p)
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: not done after {secs} s"),
    }
}

/// A panic payload whose own `Drop` panics.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("the panic payload's Drop panicked too");
    }
}

/// A value whose `Drop` panics with a payload whose `Drop` panics.
struct DropThrowsPanicsOnDrop;

impl Drop for DropThrowsPanicsOnDrop {
    fn drop(&mut self) {
        std::panic::panic_any(PanicsOnDrop);
    }
}

fn worker_still_runs_callbacks() {
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    call_rcu(move || r.store(true, Ordering::SeqCst));
    rcu_barrier();
    assert!(
        ran.load(Ordering::SeqCst),
        "a callback queued after the panic did not run"
    );
}

/// `panic_any(PanicsOnDrop)` from a callback: dropping the caught payload
/// panicked on the worker, outside the per-callback `catch_unwind`.
#[test]
fn worker_survives_callback_panic_payload_whose_drop_panics() {
    with_deadline(10, "rcu_barrier after a panicking payload", || {
        let before = stats().callback_panics;
        call_rcu(|| std::panic::panic_any(PanicsOnDrop));
        rcu_barrier();
        worker_still_runs_callbacks();
        assert!(stats().callback_panics > before);
    });
}

/// A `defer_drop`ped value whose `Drop` panics with such a payload.
#[test]
fn worker_survives_deferred_drop_whose_panic_payload_panics() {
    with_deadline(10, "rcu_barrier after a panicking deferred drop", || {
        let before = stats().callback_panics;
        defer_drop(Box::new(DropThrowsPanicsOnDrop));
        rcu_barrier();
        worker_still_runs_callbacks();
        assert!(stats().callback_panics > before);
        // And a plain panicking Drop, for good measure.
        struct DropPanics;
        impl Drop for DropPanics {
            fn drop(&mut self) {
                panic!("Drop of a deferred value panicked");
            }
        }
        defer_drop(Box::new(DropPanics));
        worker_still_runs_callbacks();
    });
}

/// A huge `lazy_flush_delay` (`Duration::MAX`, "never flush on age") must
/// not overflow the worker's `Instant + Duration` deadline and kill it (it
/// does not: the tunable saturates at `u64::MAX` microseconds, which an
/// `Instant` can hold; this pins that down).
#[test]
fn worker_survives_huge_lazy_flush_delay() {
    with_deadline(
        10,
        "rcu_barrier with lazy_flush_delay = Duration::MAX",
        || {
            let t = shrinker_rcu::tunables();
            let old = t.lazy_flush_delay();
            t.set_lazy_flush_delay(Duration::MAX);
            let ran = Arc::new(AtomicBool::new(false));
            let r = ran.clone();
            shrinker_rcu::call_rcu_lazy(move || r.store(true, Ordering::SeqCst));
            // The worker computes the lazy deadline when it next looks for work.
            worker_still_runs_callbacks();
            assert!(
                ran.load(Ordering::SeqCst),
                "rcu_barrier flushes lazy callbacks"
            );
            t.set_lazy_flush_delay(old);
        },
    );
}
