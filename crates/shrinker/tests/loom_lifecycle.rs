//! loom models of the shrinker lifecycle: a reclaim walk's pin (a light pin
//! while the gate is open, `try_get` while it is closed) / leave the read
//! section / call / re-enter / unpin, against `unregister`'s gate entry (one
//! grace period), put, completion wait, light-pin wait, unlink and
//! `call_rcu` free; and against `register`.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release -p shrinker --test loom_lifecycle`
//!
//! What fails a model:
//! * a callback running after `unregister` returned: the unregistering
//!   thread poisons the state it got back with a plain (loom `UnsafeCell`)
//!   write, so a callback not ordered before it is a data race loom reports,
//!   and one after it trips the poison assertion;
//! * a walker touching a node after its free: under loom the free (queued
//!   with `call_rcu`, run by `rcu_barrier`) marks the node instead of
//!   deallocating it, and the walk asserts the mark is clear at every step.
//!
//! As in `shrinker-sync`'s models, the main thread only spawns, joins and
//! checks; every read-side section runs on a spawned thread.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::thread;
use shrinker::{
    Count, Scan, Shrink, ShrinkControl, ShrinkRequest, ShrinkerBuilder, ShrinkerRegistry,
};

const POISON: u32 = 0xdead;

struct Probe {
    val: UnsafeCell<u32>,
}

// SAFETY: `val` is read by callbacks and written by the owner after
// unregister; the lifecycle under test must order them, and loom reports it
// if it does not.
unsafe impl Sync for Probe {}
// SAFETY: as above; the cell moves with the probe.
unsafe impl Send for Probe {}

impl Probe {
    fn new() -> Self {
        Probe {
            val: UnsafeCell::new(1),
        }
    }
    fn check(&self) {
        // SAFETY: see `unsafe impl Sync`.
        let v = self.val.with(|p| unsafe { *p });
        assert_ne!(v, POISON, "callback ran after unregister returned");
    }
    fn poison(&self) {
        // SAFETY: see `unsafe impl Sync`.
        self.val.with_mut(|p| unsafe { *p = POISON });
    }
}

impl Shrink for Probe {
    fn count(&self, _: &ShrinkControl) -> Count {
        self.check();
        Count::Objects(1)
    }
    fn scan(&self, _: &mut ShrinkControl) -> Scan {
        self.check();
        Scan::Freed(1)
    }
}

fn hard() -> ShrinkRequest {
    ShrinkRequest {
        priority: 0,
        ..Default::default()
    }
}

/// One test running the models in turn: shrinker-rcu's loom build keeps one
/// process-wide flag (`LOOM_DOMAIN_LIVE`) that assumes executions never run
/// on two OS threads at once, which parallel `#[test]`s would break.
#[test]
fn lifecycle_models() {
    walk_against_unregister();
    walker_steps_past_an_unregistered_node();
    refcount_pins_while_the_gate_is_closed();
    walk_against_register();
}

fn walk_against_unregister() {
    loom::model(|| {
        let reg = ShrinkerRegistry::builder().nodes(1).build().unwrap();
        let s = ShrinkerBuilder::new("probe")
            .build_in(&reg, Probe::new())
            .unwrap()
            .register();
        let walker = {
            let reg = reg.clone();
            thread::spawn(move || {
                let freed = reg.shrink(&hard()).unwrap();
                assert!(freed <= 1);
            })
        };
        let owner = thread::spawn(move || {
            let probe = s.unregister();
            probe.poison();
        });
        owner.join().unwrap();
        walker.join().unwrap();
        shrinker_rcu::rcu_barrier();
        assert!(reg.is_empty());
    });
}

fn walker_steps_past_an_unregistered_node() {
    // Two shrinkers; the first is unregistered while the walker may be
    // pinned on it, standing on it, or about to read its `next`.
    loom::model(|| {
        let reg = ShrinkerRegistry::builder().nodes(1).build().unwrap();
        let first = ShrinkerBuilder::new("first")
            .build_in(&reg, Probe::new())
            .unwrap()
            .register();
        let second = ShrinkerBuilder::new("second")
            .build_in(&reg, Probe::new())
            .unwrap()
            .register();
        let walker = {
            let reg = reg.clone();
            thread::spawn(move || {
                let _ = reg.shrink(&hard()).unwrap();
            })
        };
        let owner = thread::spawn(move || {
            first.unregister().poison();
            // The free of `first` runs here, while the walker may still be
            // in its read section.
            shrinker_rcu::rcu_barrier();
        });
        owner.join().unwrap();
        walker.join().unwrap();
        thread::spawn(move || second.unregister().poison())
            .join()
            .unwrap();
        shrinker_rcu::rcu_barrier();
        assert!(reg.is_empty());
    });
}

fn refcount_pins_while_the_gate_is_closed() {
    // Unregistering a first shrinker closes the gate, and it stays closed
    // until `rcu_barrier` runs the reopening callback: the walk below takes
    // refcount pins (the Linux 6.7 protocol) against the second unregister.
    loom::model(|| {
        let reg = ShrinkerRegistry::builder().nodes(1).build().unwrap();
        let closer = ShrinkerBuilder::new("closer")
            .build_in(&reg, Probe::new())
            .unwrap()
            .register();
        let s = ShrinkerBuilder::new("probe")
            .build_in(&reg, Probe::new())
            .unwrap()
            .register();
        thread::spawn(move || drop(closer.unregister()))
            .join()
            .unwrap();
        let walker = {
            let reg = reg.clone();
            thread::spawn(move || {
                let freed = reg.shrink(&hard()).unwrap();
                assert!(freed <= 1);
            })
        };
        let owner = thread::spawn(move || s.unregister().poison());
        owner.join().unwrap();
        walker.join().unwrap();
        shrinker_rcu::rcu_barrier();
        assert!(reg.is_empty());
    });
}

fn walk_against_register() {
    // A walk racing a registration calls the new shrinker only once it is
    // fully published (loom reports a callback reading the probe without
    // happens-before from its construction), or skips it.
    loom::model(|| {
        let reg = ShrinkerRegistry::builder().nodes(1).build().unwrap();
        let walker = {
            let reg = reg.clone();
            thread::spawn(move || {
                let freed = reg.shrink(&hard()).unwrap();
                assert!(freed <= 1);
            })
        };
        let owner = {
            let reg = reg.clone();
            thread::spawn(move || {
                ShrinkerBuilder::new("late")
                    .build_in(&reg, Probe::new())
                    .unwrap()
                    .register()
            })
        };
        let s = owner.join().unwrap();
        walker.join().unwrap();
        thread::spawn(move || s.unregister().poison())
            .join()
            .unwrap();
        shrinker_rcu::rcu_barrier();
        assert!(reg.is_empty());
    });
}
