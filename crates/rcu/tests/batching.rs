//! Concurrent `synchronize_rcu` callers share grace periods. Its own test
//! binary: the check counts the process's grace periods, so nothing else may
//! run grace periods meanwhile.
#![cfg(not(loom))]

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use shrinker_rcu::{read_lock, stats, synchronize_rcu};

/// A reader holds the first grace period open while the other callers
/// arrive; when it leaves, they must be served by a shared grace period, not
/// one each. (Without a reader, a grace period can be so short — fenced
/// readers, none registered — that callers never overlap, and there is
/// nothing to batch.)
#[test]
fn concurrent_synchronize_callers_share_grace_periods() {
    const CALLERS: usize = 8;
    let (entered_tx, entered_rx) = mpsc::channel();
    let (leave_tx, leave_rx) = mpsc::channel::<()>();
    let reader = thread::spawn(move || {
        let g = read_lock();
        entered_tx.send(()).unwrap();
        leave_rx.recv().unwrap();
        drop(g);
    });
    entered_rx.recv().unwrap();
    let before = stats().grace_periods;
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| thread::spawn(synchronize_rcu))
        .collect();
    // Let the callers take their cookies and queue up behind the blocked
    // grace period (a late caller only costs one more grace period).
    thread::sleep(Duration::from_millis(50));
    leave_tx.send(()).unwrap();
    for c in callers {
        c.join().unwrap();
    }
    reader.join().unwrap();
    let used = stats().grace_periods - before;
    // Without batching it would be exactly CALLERS.
    assert!(
        used < CALLERS as u64,
        "{used} grace periods for {CALLERS} concurrent synchronize_rcu calls: no batching"
    );
}
