//! loom models of the shrinker lifecycle: a reclaim walk's pins (the walk
//! pin of the fast phase while the gate is open, `try_get` / leave the read
//! section / call / re-enter / `put` while it is closed, and the switches
//! between them as the gate closes and reopens), against `unregister`'s
//! gate entry (one grace period), put, completion wait, walk-pin and
//! light-pin waits, unlink and `call_rcu` free; against a callback that
//! unregisters the next shrinker; and against `register`.
//!
//! Mutations each model set was shown to catch: no `wait_for_walkers` in
//! unregister; a Relaxed gate load after the callout (the reopening case,
//! `walk_pin_taken_as_the_gate_reopens`). Not caught: dropping the heavy
//! barrier of `wait_for_walkers`, because an unregister that closes the
//! gate already runs the grace period's `SeqCst` fences after its closing
//! store; the barrier is for an unregister that finds the gate already
//! closed by another, which these models do not race against a walker.
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
use loom::sync::Mutex;
use loom::thread;
use shrinker::{
    Count, Registered, Scan, Shrink, ShrinkControl, ShrinkRequest, ShrinkerBuilder,
    ShrinkerRegistry,
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
    walk_pin_taken_as_the_gate_reopens();
    callback_unregisters_the_next_shrinker();
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

fn walk_pin_taken_as_the_gate_reopens() {
    // The gate is closed (an unregister ran) and its reopening is queued.
    // A walk starts with refcount pins and may switch to the walk pin when
    // the reopening lands (the Acquire load of the gate against its Release
    // store); meanwhile the second shrinker is unregistered, which closes
    // the gate again and must wait for the walk pin, and is then freed.
    loom::model(|| {
        let reg = ShrinkerRegistry::builder().nodes(1).build().unwrap();
        let closer = ShrinkerBuilder::new("closer")
            .build_in(&reg, Probe::new())
            .unwrap()
            .register();
        let first = ShrinkerBuilder::new("first")
            .build_in(&reg, Probe::new())
            .unwrap()
            .register();
        let second = ShrinkerBuilder::new("second")
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
                assert!(freed <= 2);
            })
        };
        let owner = thread::spawn(move || {
            // Runs the reopening (and any free queued so far).
            shrinker_rcu::rcu_barrier();
            second.unregister().poison();
            // The free of `second`, while the walker may still walk.
            shrinker_rcu::rcu_barrier();
        });
        owner.join().unwrap();
        walker.join().unwrap();
        thread::spawn(move || first.unregister().poison())
            .join()
            .unwrap();
        shrinker_rcu::rcu_barrier();
        assert!(reg.is_empty());
    });
}

/// A shrinker whose `count` unregisters the shrinker it holds (a cache
/// that tears down a sibling cache).
struct Unregisters {
    victim: Mutex<Option<Registered<Probe>>>,
}

impl Shrink for Unregisters {
    fn count(&self, _: &ShrinkControl) -> Count {
        if let Some(v) = self.victim.lock().unwrap().take() {
            v.unregister().poison();
        }
        Count::Objects(1)
    }
    fn scan(&self, _: &mut ShrinkControl) -> Scan {
        Scan::Freed(1)
    }
}

fn callback_unregisters_the_next_shrinker() {
    // A fast walk calls out to `killer`, whose callback unregisters the
    // next shrinker on the list: that unregister finds its own thread's
    // walk pin in a callout and does not wait for it (it would wait for
    // itself), so the free may run (here on another thread) before the
    // callout returns; the walk must then step from `killer` to what
    // follows the victim, never onto it.
    loom::model(|| {
        let reg = ShrinkerRegistry::builder().nodes(1).build().unwrap();
        let killer = ShrinkerBuilder::new("killer")
            .build_in(
                &reg,
                Unregisters {
                    victim: Mutex::new(None),
                },
            )
            .unwrap()
            .register();
        let victim = ShrinkerBuilder::new("victim")
            .build_in(&reg, Probe::new())
            .unwrap()
            .register();
        let last = ShrinkerBuilder::new("last")
            .build_in(&reg, Probe::new())
            .unwrap()
            .register();
        *killer.victim.lock().unwrap() = Some(victim);
        let walker = {
            let reg = reg.clone();
            thread::spawn(move || {
                let _ = reg.shrink(&hard()).unwrap();
            })
        };
        let freer = thread::spawn(|| shrinker_rcu::rcu_barrier());
        walker.join().unwrap();
        freer.join().unwrap();
        thread::spawn(move || {
            drop(killer.unregister());
            last.unregister().poison();
        })
        .join()
        .unwrap();
        shrinker_rcu::rcu_barrier();
        assert!(reg.is_empty());
    });
}
