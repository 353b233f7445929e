//! The callback backlog: `call_rcu` and `defer_drop` never wait, however
//! long the backlog; an overload is expedited, counted and reported; the
//! `*_throttled` calls give backpressure to producers that want it, and refuse
//! to wait where waiting would deadlock.
//!
//! The tests change the process-wide tunables, so they take `SERIAL` and put
//! the defaults back when done ([`Marks`]); each body runs with a deadline,
//! so a regression that blocks fails instead of hanging the suite.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use shrinker_rcu::{
    call_rcu, call_rcu_lazy, call_rcu_throttled, defer_drop, defer_drop_throttled, rcu_barrier,
    read_lock, stats, tunables,
};

static SERIAL: Mutex<()> = Mutex::new(());

/// Low marks for the duration of a test; the defaults come back on drop.
struct Marks;

impl Marks {
    fn set(high_water: usize, backlog_limit: usize, batch_delay: Duration) -> Self {
        let t = tunables();
        t.set_high_water(high_water);
        t.set_backlog_limit(backlog_limit);
        t.set_batch_delay(batch_delay);
        Marks
    }
}

impl Drop for Marks {
    fn drop(&mut self) {
        let t = tunables();
        t.set_high_water(10_000);
        t.set_backlog_limit(100_000);
        t.set_batch_delay(Duration::from_millis(1));
    }
}

/// Run `body` on its own thread; fail if it has not finished within `secs`.
fn with_deadline(secs: u64, what: &str, body: impl FnOnce() + Send + 'static) {
    let (done_tx, done_rx) = mpsc::channel();
    let t = thread::spawn(move || {
        body();
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => t.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p)
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: not done after {secs} s"),
    }
}

/// The deadlock this bound used to cause: the enqueuer holds a lock that a
/// callback in the backlog needs. Past the backlog limit `call_rcu` used to
/// wait for the worker, which was stuck in that callback waiting for the lock.
#[test]
fn call_rcu_over_backlog_limit_under_a_lock_a_callback_needs_completes() {
    const LIMIT: usize = 16;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _marks = Marks::set(4, LIMIT, Duration::from_millis(1));
    with_deadline(30, "call_rcu under a lock over the backlog limit", || {
        let before = stats();
        let lock = Arc::new(Mutex::new(0usize));
        let ran = Arc::new(AtomicUsize::new(0));
        {
            let mut held = lock.lock().unwrap();
            let (l, r) = (lock.clone(), ran.clone());
            // The worker blocks in this one until we release the lock...
            call_rcu(move || {
                *l.lock().unwrap() += 1;
                r.fetch_add(1, Ordering::Relaxed);
            });
            // ...while we queue far past the limit (more than one limit's
            // worth after the worker took its batch), by every prompt path.
            for i in 0..4 * LIMIT {
                let r = ran.clone();
                match i % 3 {
                    0 => call_rcu(move || {
                        r.fetch_add(1, Ordering::Relaxed);
                    }),
                    1 => defer_drop(Box::new(CountOnDrop(r))),
                    _ => call_rcu_lazy(move || {
                        r.fetch_add(1, Ordering::Relaxed);
                    }),
                }
            }
            *held += 1;
        }
        rcu_barrier();
        assert_eq!(ran.load(Ordering::Relaxed), 1 + 4 * LIMIT);
        assert_eq!(*lock.lock().unwrap(), 2);
        let after = stats();
        assert!(
            after.backlog_overloads > before.backlog_overloads,
            "the overload was not counted"
        );
        assert!(after.overloaded_enqueues > before.overloaded_enqueues);
    });
}

struct CountOnDrop(Arc<AtomicUsize>);

impl Drop for CountOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// `call_rcu_throttled` bounds the backlog: the producer waits for the
/// worker once its shard is over the limit.
#[test]
fn throttled_enqueuer_is_bounded() {
    const HIGH: usize = 64;
    const LIMIT: usize = 256;
    const N: usize = 20_000;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A long batching delay: without the bound the queue would reach N.
    let _marks = Marks::set(HIGH, LIMIT, Duration::from_millis(50));
    with_deadline(60, "throttled enqueuer", || {
        let ran = Arc::new(AtomicUsize::new(0));
        let mut max_pending = 0;
        for i in 0..N {
            let r = ran.clone();
            if i % 2 == 0 {
                call_rcu_throttled(move || {
                    r.fetch_add(1, Ordering::Relaxed);
                });
            } else {
                defer_drop_throttled(Box::new(CountOnDrop(r)));
            }
            max_pending = max_pending.max(stats().pending);
        }
        // Queued on our shard (at most LIMIT: we wait once we reach it) plus
        // one batch in flight, which the worker takes in at most two gathers
        // (before and after its batching delay) of at most LIMIT each.
        // Without the bound it would reach N.
        assert!(
            max_pending <= 3 * LIMIT,
            "backlog reached {max_pending} with limit {LIMIT}"
        );
        rcu_barrier();
        assert_eq!(ran.load(Ordering::Relaxed), N);
    });
}

/// The prompt calls never wait, even with nobody draining fast: the queue
/// grows past the limit (the kernel's choice: memory over deadlock).
#[test]
fn call_rcu_never_waits_past_the_limit() {
    const LIMIT: usize = 32;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _marks = Marks::set(8, LIMIT, Duration::from_millis(1));
    with_deadline(30, "call_rcu inside a read-side section", || {
        let ran = Arc::new(AtomicUsize::new(0));
        // Inside a section no grace period can end, so nothing drains: any
        // wait would be forever.
        let g = read_lock();
        for _ in 0..10 * LIMIT {
            let r = ran.clone();
            call_rcu(move || {
                r.fetch_add(1, Ordering::Relaxed);
            });
        }
        assert!(stats().pending >= 10 * LIMIT);
        drop(g);
        rcu_barrier();
        assert_eq!(ran.load(Ordering::Relaxed), 10 * LIMIT);
    });
}

#[test]
#[should_panic(expected = "call_rcu_throttled() called inside an RCU read-side critical section")]
fn call_rcu_throttled_inside_read_section_panics() {
    let _g = read_lock();
    call_rcu_throttled(|| {});
}

#[test]
#[should_panic(expected = "defer_drop_throttled() called inside an RCU read-side critical section")]
fn defer_drop_throttled_inside_read_section_panics() {
    let _g = read_lock();
    defer_drop_throttled(Box::new(1u8));
}

/// From a callback: a panic naming the misuse (caught by the worker here,
/// so the test catches it itself and passes the message out).
#[test]
fn throttled_calls_inside_callback_panic() {
    with_deadline(30, "throttled call inside a callback", || {
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let m = msgs.clone();
        call_rcu(move || {
            for r in [
                std::panic::catch_unwind(|| call_rcu_throttled(|| {})),
                std::panic::catch_unwind(|| defer_drop_throttled(Box::new(1u8))),
            ] {
                let p = r.expect_err("a throttled call inside a callback must panic");
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                m.lock().unwrap().push(msg);
            }
        });
        rcu_barrier();
        let msgs = msgs.lock().unwrap();
        assert_eq!(msgs.len(), 2);
        assert!(msgs[0].contains("call_rcu_throttled() called from inside an RCU callback"));
        assert!(msgs[1].contains("defer_drop_throttled() called from inside an RCU callback"));
    });
}
