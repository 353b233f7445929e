//! The callback backlog is bounded: past the backlog limit an enqueuer
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
    const LIMIT: usize = 256;
    const N: usize = 20_000;
    let t = tunables();
    t.set_high_water(HIGH);
    t.set_backlog_limit(LIMIT);
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
    // Queued on our shard (< LIMIT after each return) plus one batch in
    // flight (taken from at most LIMIT queued).
    assert!(
        max_pending <= 2 * LIMIT,
        "backlog reached {max_pending} with limit {LIMIT}"
    );

    // Inside a read-side section the enqueuer must not wait (it would
    // deadlock the grace period); it goes past the mark instead.
    let g = read_lock();
    for _ in 0..4 * LIMIT {
        let ran = ran.clone();
        call_rcu(move || {
            ran.fetch_add(1, Ordering::Relaxed);
        });
    }
    drop(g);
    rcu_barrier();
    assert_eq!(ran.load(Ordering::Relaxed), N + 4 * LIMIT);
    t.set_high_water(10_000);
    t.set_backlog_limit(100_000);
    t.set_batch_delay(Duration::from_millis(1));
}
