//! loom models of [`Completion`]: publication through `complete`, counted
//! tokens with several waiters, and `complete_all`.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p shrinker-sync --test loom_completion`
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use shrinker_sync::Completion;

struct Shared {
    done: Completion,
    data: UnsafeCell<u32>,
}

// SAFETY: `data` is written before `complete` and read after a successful
// wait: the property under test, checked by loom.
unsafe impl Sync for Shared {}

/// A thread that writes 7 to `data`, then calls `complete` once.
fn spawn_producer() -> (Arc<Shared>, thread::JoinHandle<()>) {
    let s = Arc::new(Shared {
        done: Completion::new(),
        data: UnsafeCell::new(0),
    });
    let producer = {
        let s = s.clone();
        thread::spawn(move || {
            // SAFETY: the consumers read `data` only after the completion
            // (a successful `wait` or `try_wait`) orders them after this.
            s.data.with_mut(|p| unsafe { *p = 7 });
            s.done.complete();
        })
    };
    (s, producer)
}

/// Everything written before `complete` is visible after `wait`, whichever
/// of the two runs first.
#[test]
fn complete_publishes_to_wait() {
    loom::model(|| {
        let (s, producer) = spawn_producer();
        s.done.wait();
        // SAFETY: ordered after the producer's write by the completion.
        assert_eq!(s.data.with(|p| unsafe { *p }), 7);
        producer.join().unwrap();
        assert!(!s.done.try_wait(), "the single token was consumed");
    });
}

/// `try_wait` never blocks; when it succeeds it publishes like `wait`.
#[test]
fn try_wait_publishes_when_it_succeeds() {
    loom::model(|| {
        let (s, producer) = spawn_producer();
        if s.done.try_wait() {
            // SAFETY: ordered after the write by the completion.
            assert_eq!(s.data.with(|p| unsafe { *p }), 7);
        } else {
            s.done.wait();
        }
        producer.join().unwrap();
    });
}

/// Two waiters, two `complete` calls: each waiter consumes one token, no
/// token is lost and none is left over.
#[test]
fn tokens_are_neither_lost_nor_duplicated() {
    loom::model(|| {
        let done = Arc::new(Completion::new());
        let woken = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (done, woken) = (done.clone(), woken.clone());
                thread::spawn(move || {
                    done.wait();
                    woken.fetch_add(1, Ordering::Relaxed);
                })
            })
            .collect();
        done.complete();
        done.complete();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(woken.load(Ordering::Relaxed), 2);
        assert!(!done.try_wait());
    });
}

/// `complete_all` wakes every waiter and stays done.
#[test]
fn complete_all_wakes_everyone() {
    loom::model(|| {
        let done = Arc::new(Completion::new());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let done = done.clone();
                thread::spawn(move || done.wait())
            })
            .collect();
        done.complete_all();
        for w in waiters {
            w.join().unwrap();
        }
        assert!(done.try_wait() && done.is_done(), "sticky until reinit");
    });
}
