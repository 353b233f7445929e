//! loom models of [`PercpuRef`]: kill against `tryget_live` against put, the
//! confirm callback's promise, gets and puts split across threads through the
//! per-CPU → atomic switch, and the swap-device publication (seed 003).
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p shrinker-sync --test loom_percpu_ref`
//!
//! The switch to atomic runs on the loom build of `shrinker-rcu`: `kill`
//! queues it with `call_rcu`, and it runs when a thread calls
//! `rcu_barrier()`. Under loom each ref has two slots, so a third thread
//! takes the slot-less path through the shared counter.
//!
//! The model's main thread only spawns, joins and checks: every get/put
//! (which enters an RCU read-side section) runs on a spawned thread, whose
//! RCU registration ends with the thread, before loom tears the execution
//! down.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use shrinker_rcu::rcu_barrier;
use shrinker_sync::{InitFlags, PercpuRef};

const POISON: u32 = 0xdead;

/// What the ref protects; `release` poisons it.
struct Payload {
    val: UnsafeCell<u32>,
    releases: AtomicUsize,
}

// SAFETY: `val` is accessed under the percpu_ref protocol under test; loom
// reports every access the protocol fails to order.
unsafe impl Sync for Payload {}

impl Payload {
    fn new(val: u32) -> Arc<Self> {
        Arc::new(Payload {
            val: UnsafeCell::new(val),
            releases: AtomicUsize::new(0),
        })
    }
    fn read(&self) -> u32 {
        // SAFETY: see `unsafe impl Sync`.
        let v = self.val.with(|p| unsafe { *p });
        assert_ne!(v, POISON, "used after release");
        v
    }
    fn write(&self, v: u32) {
        // SAFETY: see `unsafe impl Sync`.
        self.val.with_mut(|p| unsafe { *p = v });
    }
    fn releases(&self) -> usize {
        // Relaxed: read after join()/rcu_barrier(), which order it.
        self.releases.load(Ordering::Relaxed)
    }
}

/// A ref whose release poisons `payload`.
fn poisoning_ref(payload: &Arc<Payload>, flags: InitFlags) -> Arc<PercpuRef> {
    let p = payload.clone();
    Arc::new(PercpuRef::new(
        move || {
            p.write(POISON);
            // Relaxed: a counter read after the model's joins.
            p.releases.fetch_add(1, Ordering::Relaxed);
        },
        flags,
    ))
}

/// A reader's `tryget_live` + use + put races with `kill` and the switch to
/// atomic: the use always precedes release, release runs exactly once.
#[test]
fn kill_against_tryget_live_and_put() {
    loom::model(|| {
        let payload = Payload::new(1);
        let r = poisoning_ref(&payload, InitFlags::NONE);
        let r2 = r.clone();
        let reader = {
            let (r, payload) = (r.clone(), payload.clone());
            thread::spawn(move || {
                if r.tryget_live() {
                    assert_eq!(payload.read(), 1);
                    r.put();
                }
            })
        };
        let owner = thread::spawn(move || {
            r2.kill();
            rcu_barrier(); // runs the switch: sum, confirm, drop its reference
        });
        reader.join().unwrap();
        owner.join().unwrap();
        assert!(r.is_zero());
        assert_eq!(payload.releases(), 1, "released exactly once");
    });
}

/// Once confirm has run, `tryget_live` fails on every thread.
#[test]
fn tryget_live_fails_after_confirm() {
    loom::model(|| {
        let payload = Payload::new(1);
        let r = poisoning_ref(&payload, InitFlags::NONE);
        let confirmed = Arc::new(AtomicBool::new(false));
        let reader = {
            let (r, payload, confirmed) = (r.clone(), payload.clone(), confirmed.clone());
            thread::spawn(move || {
                // Acquire: pairs with the Release store in confirm.
                let after_confirm = confirmed.load(Ordering::Acquire);
                let got = r.tryget_live();
                assert!(
                    !(after_confirm && got),
                    "tryget_live succeeded after confirm"
                );
                if got {
                    assert_eq!(payload.read(), 1);
                    r.put();
                }
            })
        };
        let owner = {
            let (r, confirmed) = (r.clone(), confirmed.clone());
            thread::spawn(move || {
                // Release: pairs with the reader's Acquire load.
                r.kill_and_confirm(move || confirmed.store(true, Ordering::Release));
                rcu_barrier();
            })
        };
        reader.join().unwrap();
        owner.join().unwrap();
        assert_eq!(payload.releases(), 1);
    });
}

/// A reference taken on one thread (its slot) and dropped on another (its
/// slot, or the counter once atomic): the slots' sum must keep the count
/// exact through the switch, and release waits for the last put.
#[test]
fn get_and_put_on_different_threads_across_the_switch() {
    loom::model(|| {
        let payload = Payload::new(1);
        let r = poisoning_ref(&payload, InitFlags::NONE);
        let owner = {
            let (r, payload) = (r.clone(), payload.clone());
            thread::spawn(move || {
                r.get(); // the owner's slot: +1
                let other = {
                    let (r, payload) = (r.clone(), payload.clone());
                    thread::spawn(move || {
                        assert_eq!(payload.read(), 1);
                        r.put(); // its own slot (−1), or the counter after the switch
                    })
                };
                r.kill();
                rcu_barrier();
                other.join().unwrap();
            })
        };
        owner.join().unwrap();
        assert!(r.is_zero());
        assert_eq!(payload.releases(), 1);
    });
}

/// Three threads: one of them has no slot under loom and uses the biased
/// shared counter in per-CPU mode.
#[test]
fn slotless_thread_counts_through_the_bias() {
    loom::model(|| {
        let payload = Payload::new(1);
        let r = poisoning_ref(&payload, InitFlags::NONE);
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (r, payload) = (r.clone(), payload.clone());
                thread::spawn(move || {
                    if r.tryget() {
                        assert_eq!(payload.read(), 1);
                        r.put();
                    }
                })
            })
            .collect();
        let owner = {
            let r = r.clone();
            thread::spawn(move || {
                r.kill();
                rcu_barrier();
            })
        };
        for t in readers {
            t.join().unwrap();
        }
        owner.join().unwrap();
        assert!(r.is_zero());
        assert_eq!(payload.releases(), 1);
    });
}

/// Seed 003: a device created dead is initialised and resurrected while a
/// long-lived handle tries it. A successful `tryget_live` followed by
/// `fence(Acquire)` must see the initialisation.
#[test]
fn swapon_publishes_to_tryget_live_then_acquire() {
    loom::model(|| {
        let payload = Payload::new(0);
        let r = poisoning_ref(&payload, InitFlags::DEAD);
        let reader = {
            let (r, payload) = (r.clone(), payload.clone());
            thread::spawn(move || {
                if r.tryget_live() {
                    // Acquire: pairs with the Release in resurrect().
                    fence(Ordering::Acquire);
                    assert_eq!(payload.read(), 7, "saw the device live but uninitialised");
                    r.put();
                }
            })
        };
        let swap = {
            let (r, payload) = (r.clone(), payload.clone());
            thread::spawn(move || {
                payload.write(7); // swapon: initialise...
                r.resurrect(); // ...then publish
            })
        };
        reader.join().unwrap();
        swap.join().unwrap();
        let swapoff = {
            let r = r.clone();
            thread::spawn(move || {
                r.kill();
                rcu_barrier();
            })
        };
        swapoff.join().unwrap();
        assert_eq!(payload.releases(), 1);
    });
}
