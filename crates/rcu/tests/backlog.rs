//! The callback backlog is bounded: past the high-water mark an enqueuer
//! outside a read-side section waits for the worker instead of letting the
//! queue grow; inside a section it cannot wait and does not.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shrinker_rcu::{call_rcu, rcu_barrier, read_lock, stats, tunables};

#[test]
fn enqueuer_is_throttled_past_high_water() {
    const HIGH: usize = 64;
    const N: usize = 20_000;
    let t = tunables();
    t.set_high_water(HIGH);
    // A long batching delay: without the bound the queue would reach N.
    t.set_batch_delay(Duration::from_millis(50));
    let ran = Arc::new(AtomicUsize::new(0));
    let mut max_pending = 0;
    for _ in 0..N {
        let ran = ran.clone();
        call_rcu(move || {
            ran.fetch_add(1, Ordering::Relaxed);
        });
        max_pending = max_pending.max(stats().pending);
    }
    // Queued on our shard (< HIGH after each return) plus one batch in
    // flight (taken from at most HIGH queued), plus slack for the barrier
    // markers of nobody.
    assert!(max_pending <= 3 * HIGH, "backlog reached {max_pending} with high water {HIGH}");

    // Inside a read-side section the enqueuer must not wait (it would
    // deadlock the grace period); it goes past the mark instead.
    let g = read_lock();
    for _ in 0..4 * HIGH {
        let ran = ran.clone();
        call_rcu(move || {
            ran.fetch_add(1, Ordering::Relaxed);
        });
    }
    drop(g);
    rcu_barrier();
    assert_eq!(ran.load(Ordering::Relaxed), N + 4 * HIGH);
    t.set_high_water(10_000);
    t.set_batch_delay(Duration::from_millis(1));
}
