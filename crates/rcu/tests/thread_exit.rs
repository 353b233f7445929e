//! Threads that exit while read-side sections are open.
//!
//! Its own test binary: the tests read `stats().readers` to check that the
//! thread-local destruction order they rely on did happen, so no other test
//! may register or unregister readers meanwhile (the tests in this file take
//! a lock for the same reason).
#![cfg(not(loom))]

use std::cell::RefCell;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use shrinker_rcu::{in_read_section, read_lock, stats, synchronize_rcu, ReadGuard};

static SERIAL: Mutex<()> = Mutex::new(());

/// What the main thread observed while the exiting thread's outermost guard
/// was still live.
struct Held {
    /// The guards, outermost first; dropped innermost first.
    guards: Vec<ReadGuard>,
    /// Registered readers while the thread was alive (itself included).
    readers_alive: usize,
    inner_dropped: mpsc::Sender<()>,
    gp_ended: mpsc::Receiver<()>,
    /// What went wrong, reported by the main thread (a panic in a
    /// thread-local destructor would abort the test binary).
    failures: Arc<Mutex<Vec<&'static str>>>,
}

impl Held {
    fn fail(&self, what: &'static str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // The registration was torn down before us: the case under test.
        if stats().readers != self.readers_alive - 1 {
            self.fail(
                "test precondition: the reader registration must be destroyed before this \
                 thread-local",
            );
        }
        // Drop every guard but the outermost, innermost first.
        while self.guards.len() > 1 {
            drop(self.guards.pop());
        }
        let outer_live = in_read_section();
        if !outer_live {
            self.fail("the exiting thread's nesting was lost: no section while a guard lives");
        }
        let _ = self.inner_dropped.send(());
        // The main thread now runs `synchronize_rcu`; it must not return
        // while the outermost guard lives. Give it ample time to (wrongly)
        // return: with the bug it returns in microseconds.
        if self
            .gp_ended
            .recv_timeout(Duration::from_millis(300))
            .is_ok()
        {
            self.fail(
                "a grace period ended while an exiting thread still held its outermost read guard",
            );
        }
        let outer = self.guards.pop();
        if outer_live {
            drop(outer);
            if in_read_section() {
                self.fail("the section outlived the outermost guard");
            }
        } else {
            // The count is already gone: dropping it would underflow.
            std::mem::forget(outer);
        }
    }
}

thread_local! {
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

fn exit_with_nested_guards(depth: usize) {
    let (inner_tx, inner_rx) = mpsc::channel();
    let (gp_tx, gp_rx) = mpsc::channel();
    let failures = Arc::new(Mutex::new(Vec::new()));
    let f = failures.clone();
    let t = thread::spawn(move || {
        // First touch before the first `read_lock`: destructors run in the
        // reverse order of registration, so `HELD` is destroyed after the
        // reader registration (checked in `Held::drop`).
        HELD.with(|_| ());
        let guards: Vec<ReadGuard> = (0..depth).map(|_| read_lock()).collect();
        let readers_alive = stats().readers;
        HELD.with(|h| {
            *h.borrow_mut() = Some(Held {
                guards,
                readers_alive,
                inner_dropped: inner_tx,
                gp_ended: gp_rx,
                failures: f,
            })
        });
    });
    inner_rx
        .recv()
        .expect("the exiting thread's destructor ran");
    synchronize_rcu();
    // Ignored if the thread already gave up waiting (the correct case).
    let _ = gp_tx.send(());
    t.join().expect("the exiting thread's destructor panicked");
    let failures = failures.lock().unwrap_or_else(|e| e.into_inner());
    assert!(failures.is_empty(), "depth {depth}: {failures:?}");
}

/// The record's teardown used to reset the nesting to 1: dropping the inner
/// guard then ended the counted section while the outer one was live.
#[test]
fn thread_exit_keeps_nested_read_guards_counted() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    exit_with_nested_guards(2);
    exit_with_nested_guards(5);
}

/// The plain case (one guard across the teardown) stays protected too.
#[test]
fn thread_exit_keeps_single_read_guard_counted() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    exit_with_nested_guards(1);
}
