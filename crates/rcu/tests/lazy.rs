//! The kernel's lazy-callback flush rules, one by one. One test function:
//! the tunables are process-wide, so the rules are checked in sequence.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use shrinker_rcu::{call_rcu, call_rcu_lazy, flush_lazy, lazy_pending, rcu_barrier, tunables};

/// Poll `cond` for up to 10 s (a bound for a hung test, not a timing check).
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what}: did not happen within 10 s"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

fn flag() -> (Arc<AtomicBool>, impl FnOnce() + Send + 'static) {
    let f = Arc::new(AtomicBool::new(false));
    let g = f.clone();
    (f, move || g.store(true, Ordering::SeqCst))
}

#[test]
fn lazy_flush_rules() {
    let t = tunables();
    let hour = Duration::from_secs(3600);
    t.set_lazy_flush_delay(hour);

    // Held back: with a one-hour delay, a lazy callback waits and is counted.
    let (held, cb) = flag();
    call_rcu_lazy(cb);
    assert!(lazy_pending() >= 1);
    // A prompt callback on *another* thread (another shard) runs without it.
    let (other, cb) = flag();
    thread::spawn(move || call_rcu(cb)).join().unwrap();
    eventually("prompt callback on another shard", || {
        other.load(Ordering::SeqCst)
    });
    assert!(!held.load(Ordering::SeqCst), "lazy callback ran early");

    // Rule: a prompt callback on the same shard carries the lazy ones.
    let (prompt, cb) = flag();
    call_rcu(cb);
    eventually("prompt callback", || prompt.load(Ordering::SeqCst));
    assert!(
        held.load(Ordering::SeqCst),
        "lazy callback not flushed by a prompt one"
    );
    assert_eq!(lazy_pending(), 0);

    // Rule: explicit flush (the shrinker's scan).
    let (flushed, cb) = flag();
    call_rcu_lazy(cb);
    assert_eq!(lazy_pending(), 1);
    flush_lazy();
    assert_eq!(lazy_pending(), 0);
    eventually("flush_lazy", || flushed.load(Ordering::SeqCst));

    // Rule: rcu_barrier flushes and waits.
    let (barriered, cb) = flag();
    call_rcu_lazy(cb);
    rcu_barrier();
    assert!(barriered.load(Ordering::SeqCst));

    // Rule: count. 100 lazy callbacks on one shard force a flush.
    t.set_lazy_flush_count(100);
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..100 {
        let ran = ran.clone();
        call_rcu_lazy(move || {
            ran.fetch_add(1, Ordering::SeqCst);
        });
    }
    assert_eq!(
        lazy_pending(),
        0,
        "the 100th lazy callback did not flush its shard"
    );
    eventually("count flush", || ran.load(Ordering::SeqCst) == 100);
    t.set_lazy_flush_count(10_000);

    // Rule: age. With a 50 ms delay the worker flushes on its own.
    t.set_lazy_flush_delay(Duration::from_millis(50));
    let (aged, cb) = flag();
    call_rcu_lazy(cb);
    eventually("age flush", || aged.load(Ordering::SeqCst));

    // A lazy callback from a thread that then exits is not lost.
    t.set_lazy_flush_delay(hour);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || call_rcu_lazy(move || tx.send(()).unwrap()))
        .join()
        .unwrap();
    rcu_barrier();
    rx.try_recv()
        .expect("lazy callback of an exited thread was lost");
    t.set_lazy_flush_delay(Duration::from_secs(10));
}
