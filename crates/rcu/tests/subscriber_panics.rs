//! A `tracing` subscriber that panics on every event must not break the RCU
//! machinery: the worker's report of a panicking callback and the
//! enqueuer's report of an overloaded backlog both run user code (the
//! subscriber), and both are contained.
//!
//! Its own test binary: it installs a process-wide subscriber.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use shrinker_rcu::{call_rcu, rcu_barrier, stats, tunables};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

static EVENTS: AtomicUsize = AtomicUsize::new(0);

/// Panics on every event it is handed.
struct PanickingSubscriber;

impl Subscriber for PanickingSubscriber {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        EVENTS.fetch_add(1, Ordering::SeqCst);
        panic!(
            "hostile tracing subscriber panicked on an event from {}",
            event.metadata().target()
        );
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

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

/// One test, so that both checks see the subscriber installed.
#[test]
fn panicking_tracing_subscriber_is_contained() {
    tracing::subscriber::set_global_default(PanickingSubscriber)
        .expect("no other subscriber in this binary");

    // 1. The worker's report of a panicking callback.
    with_deadline(10, "callbacks after a report that panicked", || {
        let before = EVENTS.load(Ordering::SeqCst);
        call_rcu(|| panic!("a callback panic the worker reports"));
        rcu_barrier();
        assert!(
            EVENTS.load(Ordering::SeqCst) > before,
            "no event was reported"
        );
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        call_rcu(move || r.store(true, Ordering::SeqCst));
        rcu_barrier();
        assert!(ran.load(Ordering::SeqCst), "the worker died in its report");
    });

    // 2. The enqueuer's report of an overload: `call_rcu` must not panic.
    with_deadline(10, "call_rcu past the backlog limit", || {
        let t = tunables();
        t.set_high_water(2);
        t.set_backlog_limit(4);
        let before = stats().backlog_overloads;
        let events = EVENTS.load(Ordering::SeqCst);
        let g = shrinker_rcu::read_lock(); // nothing drains meanwhile
        for _ in 0..16 {
            call_rcu(|| {});
        }
        drop(g);
        t.set_high_water(10_000);
        t.set_backlog_limit(100_000);
        assert!(stats().backlog_overloads > before);
        assert!(
            EVENTS.load(Ordering::SeqCst) > events,
            "no event was reported"
        );
        rcu_barrier();
    });
}
