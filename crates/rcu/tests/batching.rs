//! Concurrent `synchronize_rcu` callers share grace periods. Its own test
//! binary: the check counts the process's grace periods, so nothing else may
//! run grace periods meanwhile.
#![cfg(not(loom))]

use std::sync::{Arc, Barrier};
use std::thread;

use shrinker_rcu::{stats, synchronize_rcu};

#[test]
fn concurrent_synchronize_callers_share_grace_periods() {
    const CALLERS: usize = 8;
    const ROUNDS: usize = 50;
    let before = stats().grace_periods;
    let start = Arc::new(Barrier::new(CALLERS));
    let handles: Vec<_> = (0..CALLERS)
        .map(|_| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                for _ in 0..ROUNDS {
                    synchronize_rcu();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let used = stats().grace_periods - before;
    // Without batching it would be exactly CALLERS * ROUNDS.
    assert!(
        used < (CALLERS * ROUNDS) as u64,
        "{used} grace periods for {} synchronize_rcu calls: no batching",
        CALLERS * ROUNDS
    );
}
