//! loom models of [`PercpuRef`]: kill against `tryget_live` against put, the
//! confirm callback's promise, gets and puts split across threads through the
//! per-CPU → atomic switch, the swap-device publication
//! (`examples/swap_device.rs`), `resurrect` against the old life's last put,
//! a kill during an in-flight `switch_to_atomic`, both asynchronous forms
//! called inside an RCU callback, and the fast path's slot section against
//! the switch's sum.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p shrinker-sync --test loom_percpu_ref`
//!
//! The switch to atomic runs on the loom build of `shrinker-rcu`: `kill`
//! queues it with `call_rcu`, and it runs when a thread calls
//! `rcu_barrier()`. Under loom each ref has two slots, so a third thread
//! takes the slot-less path through the shared counter.
//!
//! Under loom both halves of the fast path's barrier pair are
//! `fence(SeqCst)` (the real build pairs a compiler fence with membarrier).
//!
//! The model's main thread only spawns, joins and checks: every get/put
//! (which may enter an RCU read-side section) runs on a spawned thread, whose
//! RCU registration ends with the thread, before loom tears the execution
//! down.
//!
//! What fails the models added with the two races above (each mutation was
//! applied to `src/percpu_ref/` alone, the model run, the file restored):
//! * `resurrect_against_the_last_put`: release running twice in one life
//!   or while the holder still uses the object, a revived ref that is dead
//!   or not back in per-CPU mode, or a lost or extra count, which shows as a
//!   final kill that does not release exactly once ("references left over").
//!   Mutation checks: the `Release` store of per-CPU mode in
//!   `switch_to_percpu_locked` or the `Acquire` mode load in
//!   `slot_add` (the fast path) made `Relaxed` (the holder's put reads its own stale
//!   slot instead of the zeroed one and is lost); zeroing the slots after
//!   that store instead of before; dropping the bias it adds; `resurrect`
//!   not waiting for the kill's switch in flight (it zeroes the slots before
//!   the switch has summed them). Each fails it; `swapon_…` catches the
//!   first four too, none of the others does, and only this model catches
//!   the last.
//! * `kill_during_switch_to_atomic`: a confirm run twice or never; a call
//!   that began after the other had returned confirming before the other's
//!   confirm; release before the kill's confirm, before the reader's use,
//!   or more than once; `tryget_live` succeeding after the kill's confirm.
//!   Mutation checks: `kill` or `switch_to_atomic` confirming at once
//!   instead of chaining its confirm to the switch in flight, or the switch
//!   running chained confirms before its own (confirm order); clearing
//!   `switching` before the confirm in `switch_to_atomic_rcu` (confirm
//!   order); putting the switch's own reference before its confirm, or the
//!   kill's initial reference before an immediate confirm (release before
//!   the kill's confirm); `tryget_live` ignoring `DEAD`. Each fails it; no
//!   other model catches any of them but the last
//!   (`tryget_live_fails_after_confirm`).
//!
//! * `slot_sections_race_the_sum`: the fast path's own section (the
//!   per-slot `busy` flag of `src/percpu_ref/slot.rs`) against the switch's
//!   sum; a get or put counted twice or not at all. Mutation checks:
//!   `light_barrier()` without its fence (the `busy` store passes the mode
//!   load: store buffering), step 4's `Release` store of `busy = 0` made
//!   `Relaxed`, and the switch summing without waiting for the sections
//!   (`Slot::wait_section`). Each fails it (the first fails
//!   `get_and_put_on_…`, `kill_against_…` and `async_forms_…` too); the
//!   fast path's `Acquire` mode load made `Relaxed` fails `resurrect_…` and
//!   `swapon_…`. Not caught: `heavy_barrier()` without its fence, because
//!   under loom the grace period between the mode store and the switch
//!   callback already runs `shrinker-rcu`'s `SeqCst` fences (in the real
//!   build its membarrier); the switch issues its own so as not to depend
//!   on that.
//!
//! Not caught by any model here: the atomic put's `Release` made `Relaxed`
//! (under loom every put enters its read-side section with `shrinker-rcu`'s
//! `SeqCst` fence, which orders the caller's accesses before the decrement
//! on its own; the real build's membarrier mode has no such fence), and the
//! `Release` on `resurrect`'s new initial reference made `Relaxed` (its
//! `Release` store clearing `DEAD` already publishes to `swapon_…`'s
//! `tryget_live` + `fence(Acquire)`).
//!
//! Confirm and release may run inside an RCU callback, where `shrinker-rcu`
//! catches and logs a panic and goes on; the two models above therefore
//! record what their callbacks find (including loom's causality reports) in
//! a `Broken` list and assert it empty after the joins.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use shrinker_rcu::rcu_barrier;
use shrinker_sync::{InitFlags, PercpuRef};
use std::panic::AssertUnwindSafe;

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

/// The fast path's section against the switch's sum (the store-buffering
/// pair of `src/percpu_ref/slot.rs`): a get and a put on one thread's slot,
/// each racing a kill whose switch sums the slots on another thread. The
/// user first takes a reference it keeps (on its slot, before spawning the
/// owner, so that it holds slot 0 and the owner slot 1); the last put of
/// that reference comes from a third, slot-less thread after the joins.
/// Each racing get and put must be counted exactly once, in the slot
/// (summed) or on the atomic counter: a lost get releases with the kept
/// reference still held, a lost put never releases.
#[test]
fn slot_sections_race_the_sum() {
    loom::model(|| {
        let payload = Payload::new(1);
        let r = poisoning_ref(&payload, InitFlags::NONE);
        let user = {
            let (r, payload) = (r.clone(), payload.clone());
            thread::spawn(move || {
                r.get(); // kept until the last put below
                let owner = {
                    let r = r.clone();
                    thread::spawn(move || {
                        r.kill();
                        rcu_barrier(); // the switch: heavy barrier, wait, sum
                    })
                };
                r.get();
                assert_eq!(payload.read(), 1);
                r.put();
                owner.join().unwrap();
            })
        };
        user.join().unwrap();
        assert_eq!(payload.releases(), 0, "released with a reference held");
        let last = {
            let r = r.clone();
            thread::spawn(move || r.put())
        };
        last.join().unwrap();
        assert!(r.is_zero());
        assert_eq!(payload.releases(), 1, "released exactly once");
    });
}

/// The swap device (`examples/swap_device.rs`): a device created dead is
/// initialised and resurrected while a long-lived handle tries it. A
/// successful `tryget_live` followed by
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

/// Broken promises seen inside callbacks. Confirm and release may run in an
/// RCU callback, where `shrinker-rcu` catches a panic (an assertion, or
/// loom's report of a use not ordered before release), logs it and goes on;
/// so the callbacks of the models below record instead of panicking, and the
/// model checks the record after its joins. Bookkeeping only: std, not loom,
/// so it adds no ordering and no interleavings.
struct Broken(std::sync::Mutex<Vec<String>>);

impl Broken {
    fn new() -> Arc<Self> {
        Arc::new(Broken(std::sync::Mutex::new(Vec::new())))
    }
    /// Records `promise` unless `ok`.
    fn check(&self, ok: bool, promise: &str) {
        if !ok {
            self.0.lock().unwrap().push(promise.to_owned());
        }
    }
    /// Runs `f`, recording its panic (loom's causality report) if any.
    fn guard(&self, what: &str, f: impl FnOnce()) {
        if let Err(e) = std::panic::catch_unwind(AssertUnwindSafe(f)) {
            let msg = e
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| e.downcast_ref::<&str>().copied())
                .unwrap_or("non-string panic");
            self.0.lock().unwrap().push(format!("{what}: {msg}"));
        }
    }
    fn assert_none(&self) {
        let broken = self.0.lock().unwrap();
        assert!(broken.is_empty(), "broken in a callback: {broken:?}");
    }
}

/// `resurrect` against the old life's last put. A holder takes a reference
/// on its own slot (under the initial reference), then puts it while an
/// owner kills the ref and resurrects it (`ALLOW_REINIT`: back to per-CPU
/// mode) as the kill's switch to atomic runs on a third thread, so that
/// `resurrect` may have to wait for it. The put may land before the kill
/// (on the slot), during the switch (on the biased counter), on the dying
/// atomic counter before `resurrect` (the last put of the old life: release
/// runs, and `resurrect` revives a zero ref, which its contract allows), in
/// the middle of `resurrect` (on the counter, before or after the new
/// initial reference), or after it (on the holder's slot, which `resurrect`
/// zeroed). In every case release runs at most once in the old life and
/// never before the holder's use, the revived ref is live and per-CPU, and
/// it holds exactly its new initial reference: a final kill releases it
/// exactly once.
#[test]
fn resurrect_against_the_last_put() {
    loom::model(|| {
        let payload = Payload::new(1);
        let broken = Broken::new();
        let r = {
            let (p, b) = (payload.clone(), broken.clone());
            Arc::new(PercpuRef::new(
                move || {
                    b.guard("release", || p.write(POISON));
                    // Relaxed: a counter read after the model's joins.
                    p.releases.fetch_add(1, Ordering::Relaxed);
                },
                InitFlags::ALLOW_REINIT,
            ))
        };
        let holder = {
            let (r, payload) = (r.clone(), payload.clone());
            thread::spawn(move || {
                r.get(); // this thread's slot: +1, summed by the kill's switch
                let owner = {
                    let r = r.clone();
                    thread::spawn(move || {
                        r.kill();
                        // The kill's switch (sum, drop its reference) runs
                        // on its own thread, queued before it starts, so
                        // that resurrect may have to wait for it.
                        let rcu = thread::spawn(rcu_barrier);
                        r.resurrect(); // dead, maybe zero: both are legal
                        rcu.join().unwrap();
                    })
                };
                assert_eq!(payload.read(), 1, "released while a reference remained");
                r.put();
                owner.join().unwrap();
            })
        };
        holder.join().unwrap();
        broken.assert_none();
        let raced = payload.releases();
        assert!(raced <= 1, "released {raced} times in one life");
        assert!(!r.is_dying(), "dead after resurrect");
        // Debug is the only public view of the mode word.
        let state = format!("{r:?}");
        assert!(
            state.contains("mode: percpu"),
            "ALLOW_REINIT: resurrect must return to per-CPU mode, got {state}"
        );
        let last = {
            let r = r.clone();
            thread::spawn(move || {
                assert!(r.tryget_live(), "resurrected ref refuses tryget_live");
                r.put();
                r.kill();
                rcu_barrier();
            })
        };
        last.join().unwrap();
        broken.assert_none();
        assert!(r.is_zero(), "references left over after the final kill");
        assert_eq!(
            payload.releases(),
            raced + 1,
            "the final kill must release exactly once"
        );
    });
}

/// The two calls of `kill_during_switch_to_atomic` and their confirms.
struct Calls {
    /// `switch_to_atomic` has returned (its switch is in flight or done).
    switch_called: AtomicBool,
    /// `kill_and_confirm` has returned (its switch is in flight or done).
    kill_called: AtomicBool,
    switch_confirmed: AtomicUsize,
    kill_confirmed: AtomicUsize,
}

impl Calls {
    fn new() -> Arc<Self> {
        Arc::new(Calls {
            switch_called: AtomicBool::new(false),
            kill_called: AtomicBool::new(false),
            switch_confirmed: AtomicUsize::new(0),
            kill_confirmed: AtomicUsize::new(0),
        })
    }

    fn kill_confirmed(&self) -> bool {
        // Acquire: pairs with the Release increment in the kill's confirm.
        self.kill_confirmed.load(Ordering::Acquire) >= 1
    }
    fn switch_confirmed(&self) -> bool {
        // Acquire: pairs with the Release increment in the switch's confirm.
        self.switch_confirmed.load(Ordering::Acquire) >= 1
    }
}

/// A per-CPU ref whose release checks that the kill's confirm ran first,
/// poisons the payload and counts itself.
fn released_after_the_kills_confirm(
    payload: &Arc<Payload>,
    broken: &Arc<Broken>,
    calls: &Arc<Calls>,
) -> Arc<PercpuRef> {
    let (p, b, c) = (payload.clone(), broken.clone(), calls.clone());
    Arc::new(PercpuRef::new(
        move || {
            b.check(c.kill_confirmed(), "release before the kill's confirm");
            b.guard("release", || p.write(POISON));
            // Relaxed: a counter read after the model's joins.
            p.releases.fetch_add(1, Ordering::Relaxed);
        },
        InitFlags::NONE,
    ))
}

/// A reader's `tryget_live` + use + put, which must fail once the kill's
/// confirm has run.
fn spawn_live_reader(
    r: &Arc<PercpuRef>,
    payload: &Arc<Payload>,
    calls: &Arc<Calls>,
) -> thread::JoinHandle<()> {
    let (r, payload, c) = (r.clone(), payload.clone(), calls.clone());
    thread::spawn(move || {
        let after_confirm = c.kill_confirmed();
        let got = r.tryget_live();
        assert!(
            !(after_confirm && got),
            "tryget_live succeeded after the kill's confirm"
        );
        if got {
            assert_eq!(payload.read(), 1);
            r.put();
        }
    })
}

/// After the joins: nothing broken, each confirm run once, released once.
fn assert_each_confirmed_and_released_once(
    r: &PercpuRef,
    payload: &Payload,
    broken: &Broken,
    calls: &Calls,
) {
    broken.assert_none();
    // Relaxed: read after the joins.
    assert_eq!(calls.switch_confirmed.load(Ordering::Relaxed), 1);
    assert_eq!(calls.kill_confirmed.load(Ordering::Relaxed), 1);
    assert_eq!(payload.releases(), 1, "released exactly once");
    assert!(r.is_zero() && r.is_dying());
}

/// `kill_and_confirm` while a `switch_to_atomic` may be in flight, and the
/// other way round, with a reader's `tryget_live` + use + put on a third
/// thread. Whichever takes the switch mutex first starts the one switch
/// (its confirm runs in the RCU callback); the other finds it in flight (or
/// done) and chains its confirm to it (or confirms at once). Checked: each
/// confirm runs exactly once; a call that began after the other had returned
/// confirms after the other's confirm (the chaining); release runs exactly once,
/// after the kill's confirm and after the reader's use; `tryget_live` fails
/// once the kill's confirm has run.
#[test]
fn kill_during_switch_to_atomic() {
    loom::model(|| {
        let payload = Payload::new(1);
        let broken = Broken::new();
        let calls = Calls::new();
        let r = released_after_the_kills_confirm(&payload, &broken, &calls);
        let switcher = {
            let (r, b, c) = (r.clone(), broken.clone(), calls.clone());
            thread::spawn(move || {
                // Acquire: pairs with the Release store after kill returned.
                let after_kill = c.kill_called.load(Ordering::Acquire);
                let cc = c.clone();
                r.switch_to_atomic(move || {
                    b.check(
                        !after_kill || cc.kill_confirmed(),
                        "switch confirmed before the kill's switch it had to wait for",
                    );
                    // Release: pairs with the Acquire loads in Calls.
                    cc.switch_confirmed.fetch_add(1, Ordering::Release);
                });
                // Release: pairs with the killer's Acquire load.
                c.switch_called.store(true, Ordering::Release);
                rcu_barrier(); // runs our switch, if it is the one in flight
            })
        };
        let killer = {
            let (r, b, c) = (r.clone(), broken.clone(), calls.clone());
            thread::spawn(move || {
                // Acquire: pairs with the Release store after switch_to_atomic returned.
                let after_switch = c.switch_called.load(Ordering::Acquire);
                let cc = c.clone();
                r.kill_and_confirm(move || {
                    b.check(
                        !after_switch || cc.switch_confirmed(),
                        "kill confirmed before the switch it had to wait for",
                    );
                    // Release: pairs with the Acquire loads in Calls.
                    cc.kill_confirmed.fetch_add(1, Ordering::Release);
                });
                // Release: pairs with the switcher's Acquire load.
                c.kill_called.store(true, Ordering::Release);
                rcu_barrier(); // runs the kill's switch, if it is the one in flight
            })
        };
        let reader = spawn_live_reader(&r, &payload, &calls);
        switcher.join().unwrap();
        killer.join().unwrap();
        reader.join().unwrap();
        assert_each_confirmed_and_released_once(&r, &payload, &broken, &calls);
        let late = {
            let r = r.clone();
            thread::spawn(move || {
                assert!(!r.tryget_live(), "tryget_live after the kill's confirm");
                assert!(!r.tryget(), "tryget on a zero ref");
            })
        };
        late.join().unwrap();
    });
}

/// The asynchronous forms inside an RCU callback: a `call_rcu` closure
/// switches the ref to atomic (queueing the switch, which cannot run before
/// the closure returns) and then kills it with a confirm, which must chain
/// to that switch instead of waiting for it (waiting there would deadlock
/// the worker, or here the barrier running the closure). A reader's
/// `tryget_live` + use + put runs on another thread. Checked: both confirms
/// run once, the switch's first; release runs once, after the kill's
/// confirm and after the reader's use; `tryget_live` fails once the kill's
/// confirm has run.
///
/// Mutation checks (each applied to `src/percpu_ref/` alone, the model
/// run, the file restored): `kill` going through the waiting mode switch
/// again (inside the callback it panics, recorded; without that check loom
/// reports the deadlock); its confirm run at once instead of chained
/// (confirm order); the chained confirms run after `switching` is cleared
/// and the switch's reference put (release before the kill's confirm). Each
/// fails it.
#[test]
fn async_forms_inside_an_rcu_callback() {
    loom::model(|| {
        let payload = Payload::new(1);
        let broken = Broken::new();
        let calls = Calls::new();
        let r = released_after_the_kills_confirm(&payload, &broken, &calls);
        let owner = {
            let (r, b, c) = (r.clone(), broken.clone(), calls.clone());
            thread::spawn(move || {
                shrinker_rcu::call_rcu(move || {
                    b.check(shrinker_rcu::in_callback(), "not inside a callback");
                    let (b1, c1) = (b.clone(), c.clone());
                    r.switch_to_atomic(move || {
                        b1.check(!c1.kill_confirmed(), "kill confirmed before the switch");
                        // Release: pairs with the Acquire loads in Calls.
                        c1.switch_confirmed.fetch_add(1, Ordering::Release);
                    });
                    let (b2, c2) = (b.clone(), c.clone());
                    b.guard("kill_and_confirm inside a callback", || {
                        r.kill_and_confirm(move || {
                            b2.check(c2.switch_confirmed(), "kill confirmed first");
                            // Release: pairs with the Acquire loads in Calls.
                            c2.kill_confirmed.fetch_add(1, Ordering::Release);
                        });
                    });
                });
                rcu_barrier(); // runs the closure, then the switch it queued
            })
        };
        let reader = spawn_live_reader(&r, &payload, &calls);
        owner.join().unwrap();
        reader.join().unwrap();
        assert_each_confirmed_and_released_once(&r, &payload, &broken, &calls);
    });
}
