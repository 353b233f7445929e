//! The state machine, transition by transition. Tests that switch a ref
//! out of per-CPU mode need the RCU worker and its membarrier system
//! calls, so they are not run under Miri; those that stay per-CPU or
//! atomic (no call_rcu) are.
use super::*;
use crate::Completion;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc as StdArc;

/// A ref whose release count is observable.
fn counted(flags: InitFlags) -> (PercpuRef, StdArc<AtomicUsize>, StdArc<Completion>) {
    let releases = StdArc::new(AtomicUsize::new(0));
    let released = StdArc::new(Completion::new());
    let r = {
        let (n, c) = (StdArc::clone(&releases), StdArc::clone(&released));
        PercpuRef::new(
            move || {
                n.fetch_add(1, Ordering::Relaxed);
                c.complete();
            },
            flags,
        )
    };
    (r, releases, released)
}

/// The events of a test, in the order they happened.
type Log = StdArc<std::sync::Mutex<Vec<&'static str>>>;

/// A shared ref whose release logs `"release"` and completes the returned
/// completion.
fn logged(flags: InitFlags) -> (StdArc<PercpuRef>, Log, StdArc<Completion>) {
    let order: Log = StdArc::new(std::sync::Mutex::new(Vec::new()));
    let released = StdArc::new(Completion::new());
    let r = {
        let (order, released) = (StdArc::clone(&order), StdArc::clone(&released));
        PercpuRef::new(
            move || {
                order.lock().unwrap().push("release");
                released.complete_all();
            },
            flags,
        )
    };
    (StdArc::new(r), order, released)
}

#[test]
fn init_flags_set_the_initial_state() {
    let (r, n, _) = counted(InitFlags::NONE);
    assert_eq!(r.data.mode(), Mode(0));
    assert!(!r.is_zero() && !r.is_dying());
    let (r2, _, _) = counted(InitFlags::ATOMIC);
    assert_eq!(r2.data.mode(), Mode(ATOMIC_BIT));
    assert_eq!(r2.data.count.load(Ordering::Relaxed), 1);
    let (r3, n3, _) = counted(InitFlags::DEAD);
    assert_eq!(r3.data.mode(), Mode(ATOMIC_BIT | DEAD_BIT));
    assert!(r3.is_zero() && r3.is_dying());
    assert!(!r3.tryget() && !r3.tryget_live());
    assert_eq!(n.load(Ordering::Relaxed) + n3.load(Ordering::Relaxed), 0);
    assert!(r3.data.lock().allow_reinit, "DEAD implies ALLOW_REINIT");
    assert!(r2.data.lock().force_atomic && r2.data.lock().allow_reinit);
    assert!(!r.data.lock().allow_reinit);
    drop((r, r2));
}

#[test]
fn percpu_gets_and_puts_stay_off_the_counter() {
    let (r, n, _) = counted(InitFlags::NONE);
    r.get_many(5);
    assert!(r.tryget());
    assert!(r.tryget_live());
    r.put_many(7);
    assert_eq!(r.data.count.load(Ordering::Relaxed), PERCPU_COUNT_BIAS + 1);
    assert_eq!(n.load(Ordering::Relaxed), 0);
}

/// An atomic-mode get/put passes through the slot's section (the mode is
/// only known inside it), finds `ATOMIC` and must leave the slot untouched
/// and the section closed, or the next switch to atomic would wait forever.
#[test]
fn atomic_mode_sections_leave_the_slots_alone() {
    let (r, n, _) = counted(InitFlags::ATOMIC);
    r.get_many(3);
    assert!(r.tryget() && r.tryget_live());
    r.put_many(5);
    assert_eq!(r.data.count.load(Ordering::Relaxed), 1);
    for s in r.data.slots.iter() {
        assert_eq!(s.busy.load(Ordering::Relaxed), 0, "section left open");
        assert_eq!(s.value(), 0, "an atomic-mode op went to a slot");
    }
    assert_eq!(n.load(Ordering::Relaxed), 0);
}

/// Threads that exit while their slots hold references leave the counts
/// there (their indices go back to the pool, the slots are not cleared):
/// the switch's sum still finds them.
#[test]
#[cfg_attr(miri, ignore)]
fn counts_left_in_slots_by_exited_threads_are_summed() {
    let (r, n, released) = counted(InitFlags::NONE);
    let threads = 4;
    let barrier = std::sync::Barrier::new(threads);
    // All alive at once, so each holds an index of its own.
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                r.get_many(3);
                barrier.wait();
            });
        }
    });
    assert_eq!(
        r.data.count.load(Ordering::Relaxed),
        PERCPU_COUNT_BIAS + 1,
        "the gets went to slots"
    );
    // New threads, reusing the indices, drop all but one of them.
    std::thread::scope(|s| {
        for i in 0..threads {
            let r = &r;
            s.spawn(move || r.put_many(if i == 0 { 2 } else { 3 }));
        }
    });
    r.kill();
    shrinker_rcu::rcu_barrier(); // the switch to atomic has summed
    assert!(
        !r.is_zero(),
        "one reference left in an exited thread's slot"
    );
    assert_eq!(n.load(Ordering::Relaxed), 0);
    std::thread::scope(|s| {
        s.spawn(|| r.put());
    });
    released.wait();
    assert_eq!(n.load(Ordering::Relaxed), 1);
}

#[test]
#[cfg_attr(miri, ignore)]
fn kill_with_no_users_releases_once() {
    let (r, n, released) = counted(InitFlags::NONE);
    r.kill();
    released.wait();
    assert!(r.is_zero() && r.is_dying());
    shrinker_rcu::rcu_barrier();
    assert_eq!(n.load(Ordering::Relaxed), 1);
}

#[test]
#[cfg_attr(miri, ignore)]
fn release_waits_for_cross_thread_puts() {
    // Gets on one thread, puts on another: slots go negative, the sum is
    // what counts.
    let (r, n, released) = counted(InitFlags::NONE);
    let r = StdArc::new(r);
    r.get_many(10);
    std::thread::scope(|s| {
        s.spawn(|| r.put_many(4));
    });
    r.kill();
    shrinker_rcu::rcu_barrier(); // the switch to atomic has run
    assert!(!r.is_zero(), "6 references outstanding");
    assert_eq!(
        n.load(Ordering::Relaxed),
        0,
        "released with 6 references outstanding"
    );
    assert!(!released.try_wait());
    std::thread::scope(|s| {
        s.spawn(|| r.put_many(6));
    });
    released.wait();
    assert_eq!(n.load(Ordering::Relaxed), 1);
}

#[test]
#[cfg_attr(miri, ignore)]
fn confirm_runs_before_release_and_tryget_live_fails_after_it() {
    let (r, order, released) = logged(InitFlags::NONE);
    r.get(); // a user keeps it alive past the confirm
    let confirmed = StdArc::new(Completion::new());
    {
        let (order, confirmed, r2) = (
            StdArc::clone(&order),
            StdArc::clone(&confirmed),
            StdArc::clone(&r),
        );
        r.kill_and_confirm(move || {
            // Inside confirm: already dead on every thread.
            assert!(!r2.tryget_live(), "tryget_live must fail once confirm runs");
            order.lock().unwrap().push("confirm");
            confirmed.complete_all();
        });
    }
    confirmed.wait();
    assert!(!r.tryget_live(), "tryget_live must fail after confirm");
    assert!(r.tryget(), "tryget still succeeds while dying");
    r.put();
    assert!(!r.is_zero(), "the user's reference is still held");
    // The user's reference. The switch drops its own reference only
    // after confirm returns ("put after confirmation"), so release may
    // run here or on the RCU worker: wait for it rather than assume.
    r.put();
    released.wait();
    assert!(r.is_zero());
    assert_eq!(*order.lock().unwrap(), ["confirm", "release"]);
}

#[test]
fn kill_of_atomic_ref_confirms_synchronously() {
    let (r, n, _) = counted(InitFlags::ATOMIC);
    let confirmed = StdArc::new(AtomicUsize::new(0));
    let c = StdArc::clone(&confirmed);
    r.get();
    r.kill_and_confirm(move || {
        c.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(
        confirmed.load(Ordering::Relaxed),
        1,
        "no grace period needed"
    );
    assert_eq!(n.load(Ordering::Relaxed), 0);
    r.put();
    assert_eq!(n.load(Ordering::Relaxed), 1, "release ran in the last put");
}

#[test]
fn panicking_confirm_inside_kill_still_drops_the_initial_reference() {
    let (r, n, _) = counted(InitFlags::ATOMIC); // atomic: confirms inline
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        r.kill_and_confirm(|| panic!("confirm panics"));
    }));
    assert!(caught.is_err(), "the confirm's panic reaches the caller");
    assert!(r.is_dying());
    assert!(r.is_zero(), "the initial reference was dropped");
    assert_eq!(n.load(Ordering::Relaxed), 1, "release ran");
}

#[test]
fn panicking_release_leaves_the_ref_zero_and_revivable() {
    let calls = StdArc::new(AtomicUsize::new(0));
    let c = StdArc::clone(&calls);
    let r = PercpuRef::new(
        move || {
            if c.fetch_add(1, Ordering::Relaxed) == 0 {
                panic!("release panics");
            }
        },
        InitFlags::ATOMIC,
    );
    r.get();
    r.kill();
    let caught = panic::catch_unwind(AssertUnwindSafe(|| r.put()));
    assert!(caught.is_err(), "release's panic reaches the last put");
    assert!(r.is_zero() && r.is_dying());
    r.reinit();
    assert!(r.tryget_live());
    r.put();
    r.kill();
    assert_eq!(calls.load(Ordering::Relaxed), 2, "one release per life");
}

/// A thread's last put may come from a thread-local destructor that runs
/// after the slot index was given back (then it goes to the counter).
#[test]
#[cfg_attr(miri, ignore)]
fn puts_from_thread_local_destructors_are_counted() {
    struct PutOnExit(StdArc<PercpuRef>);
    impl Drop for PutOnExit {
        fn drop(&mut self) {
            self.0.put();
        }
    }
    std::thread_local! {
        static HELD: std::cell::RefCell<Option<PutOnExit>> =
            const { std::cell::RefCell::new(None) };
    }
    let (r, n, released) = counted(InitFlags::NONE);
    let r = StdArc::new(r);
    for first in [true, false] {
        for _ in 0..8 {
            let r = StdArc::clone(&r);
            std::thread::spawn(move || {
                // Either order of first use, so that either thread-local
                // (the slot index or HELD) is destroyed first.
                if first {
                    r.get();
                }
                HELD.with(|h| *h.borrow_mut() = Some(PutOnExit(StdArc::clone(&r))));
                if !first {
                    r.get();
                }
            })
            .join()
            .unwrap();
        }
    }
    r.kill();
    released.wait();
    assert_eq!(n.load(Ordering::Relaxed), 1);
}

#[test]
#[should_panic(expected = "PercpuRef::kill called more than once")]
fn kill_twice_panics() {
    let r = PercpuRef::new(|| {}, InitFlags::ATOMIC);
    r.get();
    r.kill();
    r.kill();
}

#[test]
#[should_panic(expected = "PercpuRef::kill called more than once")]
fn kill_of_ref_created_dead_panics() {
    PercpuRef::new(|| {}, InitFlags::DEAD).kill();
}

#[test]
#[should_panic(expected = "PercpuRef::resurrect on a live ref")]
fn resurrect_of_live_ref_panics() {
    PercpuRef::new(|| {}, InitFlags::ATOMIC).resurrect();
}

#[test]
#[should_panic(expected = "PercpuRef::reinit of a non-zero ref")]
fn reinit_of_nonzero_ref_panics() {
    let r = PercpuRef::new(|| {}, InitFlags::ATOMIC);
    r.get();
    r.kill(); // dying, one user left
    r.reinit();
}

#[test]
fn misuse_panics_leave_the_ref_usable() {
    let (r, n, _) = counted(InitFlags::ATOMIC);
    let caught = panic::catch_unwind(AssertUnwindSafe(|| r.resurrect()));
    assert!(caught.is_err());
    r.kill(); // still works: the panic came before any change
    assert_eq!(n.load(Ordering::Relaxed), 1);
}

#[test]
#[cfg_attr(miri, ignore)]
fn switch_to_atomic_and_back() {
    let (r, n, _) = counted(InitFlags::ALLOW_REINIT);
    r.get_many(3); // in slots
    r.switch_to_atomic_sync();
    // The switch drops its own reference just after waking us.
    shrinker_rcu::rcu_barrier();
    assert_eq!(r.data.mode(), Mode(ATOMIC_BIT));
    assert_eq!(
        r.data.count.load(Ordering::Relaxed),
        4,
        "exact after the switch"
    );
    r.put_many(2); // on the counter
    r.switch_to_percpu();
    assert_eq!(r.data.mode(), Mode(0));
    r.put(); // in a slot again, which was zeroed
    r.switch_to_atomic_sync();
    shrinker_rcu::rcu_barrier();
    assert_eq!(r.data.count.load(Ordering::Relaxed), 1);
    r.switch_to_percpu();
    r.kill();
    shrinker_rcu::rcu_barrier();
    assert!(r.is_zero());
    assert_eq!(n.load(Ordering::Relaxed), 1);
}

#[test]
#[cfg_attr(miri, ignore)]
fn switch_to_atomic_is_sticky_across_kill_and_reinit() {
    let (r, _, released) = counted(InitFlags::ALLOW_REINIT);
    r.switch_to_atomic_sync();
    r.kill();
    released.wait();
    r.reinit();
    assert_eq!(
        r.data.mode(),
        Mode(ATOMIC_BIT),
        "forced atomic survives reinit"
    );
    r.switch_to_percpu();
    assert_eq!(r.data.mode(), Mode(0));
}

#[test]
fn switch_to_percpu_on_dying_ref_waits_for_reinit() {
    let (r, _, released) = counted(InitFlags::ATOMIC);
    r.get();
    r.kill();
    r.switch_to_percpu();
    assert_eq!(
        r.data.mode(),
        Mode(ATOMIC_BIT | DEAD_BIT),
        "still dying, still atomic"
    );
    r.put();
    released.wait();
    r.reinit();
    assert_eq!(r.data.mode(), Mode(0), "per-CPU after reinit");
}

#[test]
#[cfg_attr(miri, ignore)]
fn without_allow_reinit_the_ref_stays_atomic() {
    let (r, n, released) = counted(InitFlags::NONE);
    r.kill();
    released.wait();
    r.reinit();
    assert_eq!(
        r.data.mode(),
        Mode(ATOMIC_BIT),
        "revived, but atomic for good"
    );
    assert!(r.tryget_live());
    r.put();
    r.kill();
    assert_eq!(n.load(Ordering::Relaxed), 2);
}

#[test]
#[cfg_attr(miri, ignore)]
fn resurrect_while_dying_keeps_users() {
    let (r, n, _) = counted(InitFlags::ALLOW_REINIT);
    r.get(); // a user
    r.kill();
    r.resurrect(); // waits for the kill's switch, then back to per-CPU
    assert_eq!(r.data.mode(), Mode(0));
    assert!(r.tryget_live());
    r.put();
    r.put(); // the old user
    assert_eq!(n.load(Ordering::Relaxed), 0, "never reached zero");
    r.kill();
    shrinker_rcu::rcu_barrier();
    assert_eq!(n.load(Ordering::Relaxed), 1);
}

#[test]
#[cfg_attr(miri, ignore)]
fn dead_ref_revived_by_reinit_and_resurrect() {
    let (r, n, released) = counted(InitFlags::DEAD);
    r.reinit();
    assert_eq!(r.data.mode(), Mode(0), "DEAD implies ALLOW_REINIT: per-CPU");
    r.kill();
    released.wait();
    r.resurrect();
    assert!(r.tryget_live());
    r.put();
    r.kill();
    released.wait();
    assert_eq!(n.load(Ordering::Relaxed), 2);
}

#[test]
#[cfg_attr(miri, ignore)]
fn switch_to_atomic_confirm_runs_once() {
    let (r, _, _) = counted(InitFlags::NONE);
    let (tx, rx) = std::sync::mpsc::channel();
    r.switch_to_atomic(move || tx.send(()).unwrap());
    rx.recv().unwrap();
    assert!(
        rx.recv().is_err(),
        "confirm ran exactly once and was dropped"
    );
    assert!(!r.is_zero() && !r.is_dying());
}

#[test]
#[cfg_attr(miri, ignore)]
fn switch_wait_inside_read_section_panics() {
    let r = PercpuRef::new(|| {}, InitFlags::NONE);
    // Inside a read-side section the switch's grace period cannot end, so
    // the switch is still in flight when we ask to wait for it: waiting
    // must be refused with a panic, not deadlock.
    let guard = shrinker_rcu::read_lock();
    r.switch_to_atomic(|| {});
    let caught = panic::catch_unwind(AssertUnwindSafe(|| r.switch_to_atomic_sync()));
    let msg = caught.expect_err("waiting inside a read section must panic");
    let msg = msg.downcast_ref::<String>().expect("a formatted message");
    assert!(msg.contains("inside an RCU read-side section"), "{msg}");
    drop(guard);
    r.switch_to_atomic_sync();
    assert_eq!(r.data.mode(), Mode(ATOMIC_BIT));
}

/// Long enough never to expire on a working build; bounds the test when
/// a regression deadlocks the RCU worker instead of hanging the suite.
const DEADLOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `f` inside an RCU callback and returns the panic message it
/// raised, if any. Fails the test if the callback never returns.
fn in_rcu_callback(f: impl FnOnce() + Send + 'static) -> Option<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    shrinker_rcu::call_rcu(move || {
        assert!(shrinker_rcu::in_callback());
        let caught = panic::catch_unwind(AssertUnwindSafe(f));
        let msg = caught.err().map(|p| match p.downcast::<String>() {
            Ok(msg) => *msg,
            Err(p) => p.downcast_ref::<&str>().map_or("?", |m| m).to_owned(),
        });
        tx.send(msg).unwrap();
    });
    rx.recv_timeout(DEADLOCK_TIMEOUT)
        .expect("the RCU callback never returned: it deadlocked the worker")
}

#[test]
#[cfg_attr(miri, ignore)]
fn switch_to_atomic_sync_inside_rcu_callback_panics() {
    let (r, _, _) = counted(InitFlags::ALLOW_REINIT);
    let r = StdArc::new(r);
    let r2 = StdArc::clone(&r);
    let msg = in_rcu_callback(move || r2.switch_to_atomic_sync())
        .expect("switch_to_atomic_sync inside an RCU callback must panic");
    assert!(msg.contains("PercpuRef::switch_to_atomic_sync"), "{msg}");
    assert!(msg.contains("inside an RCU callback"), "{msg}");
    assert_eq!(r.data.mode(), Mode(0), "refused before any change");
    assert!(!r.data.lock().force_atomic, "refused before any change");
}

#[test]
#[cfg_attr(miri, ignore)]
fn waiting_forms_inside_rcu_callback_with_a_switch_in_flight_panic() {
    let (r, n, released) = counted(InitFlags::ALLOW_REINIT);
    let r = StdArc::new(r);
    let r2 = StdArc::clone(&r);
    let msgs = StdArc::new(std::sync::Mutex::new(Vec::new()));
    let m2 = StdArc::clone(&msgs);
    let outer = in_rcu_callback(move || {
        let mut msgs = m2.lock().unwrap();
        // The switch's callback cannot run before this one returns.
        r2.switch_to_atomic(|| {});
        let caught = panic::catch_unwind(AssertUnwindSafe(|| r2.switch_to_percpu()));
        msgs.push(caught.err().map(|p| p.downcast_ref::<String>().cloned()));
        r2.kill(); // joins the switch in flight
        let caught = panic::catch_unwind(AssertUnwindSafe(|| r2.resurrect()));
        msgs.push(caught.err().map(|p| p.downcast_ref::<String>().cloned()));
    });
    assert_eq!(outer, None, "the callback itself went through");
    let msgs = msgs.lock().unwrap();
    assert_eq!(msgs.len(), 2);
    for (msg, what) in msgs.iter().zip(["switch_to_percpu", "resurrect"]) {
        let msg = msg
            .clone()
            .flatten()
            .unwrap_or_else(|| panic!("{what} did not panic"));
        assert!(msg.contains(&format!("PercpuRef::{what}")), "{msg}");
        assert!(msg.contains("inside an RCU callback"), "{msg}");
    }
    // Nothing was changed by the refused calls: the kill goes through.
    assert!(
        released.wait_timeout(DEADLOCK_TIMEOUT),
        "the kill never released"
    );
    assert!(r.is_dying() && r.is_zero());
    assert_eq!(n.load(Ordering::Relaxed), 1);
    assert!(r.data.lock().force_atomic, "switch_to_percpu was refused");
}

#[test]
#[cfg_attr(miri, ignore)]
fn async_forms_inside_rcu_callback_confirm_and_release() {
    let (r, order, released) = logged(InitFlags::NONE);
    let (r2, o1, o2) = (
        StdArc::clone(&r),
        StdArc::clone(&order),
        StdArc::clone(&order),
    );
    let outer = in_rcu_callback(move || {
        // Per-CPU: queues the switch (a call_rcu from inside a callback).
        r2.switch_to_atomic(move || o1.lock().unwrap().push("switch confirmed"));
        // A switch is in flight and cannot complete before we return:
        // the kill must join it rather than wait for it.
        let r3 = StdArc::clone(&r2);
        r2.kill_and_confirm(move || {
            assert!(!r3.tryget_live(), "dead on every thread at confirm");
            o2.lock().unwrap().push("kill confirmed");
        });
    });
    assert_eq!(
        outer, None,
        "the asynchronous forms must not panic in a callback"
    );
    assert!(
        released.wait_timeout(DEADLOCK_TIMEOUT),
        "never released: the confirms did not run"
    );
    assert_eq!(
        *order.lock().unwrap(),
        ["switch confirmed", "kill confirmed", "release"]
    );
    assert!(r.is_zero() && r.is_dying());
}

#[test]
#[cfg_attr(miri, ignore)]
fn kill_inside_read_section_with_a_switch_in_flight_chains() {
    let (r, n, released) = counted(InitFlags::NONE);
    let confirmed = StdArc::new(Completion::new());
    let c = StdArc::clone(&confirmed);
    let guard = shrinker_rcu::read_lock();
    r.switch_to_atomic(|| {});
    // The switch's grace period waits for this section: it is in flight.
    assert!(r.data.lock().switching);
    r.kill_and_confirm(move || c.complete_all());
    assert!(!confirmed.try_wait(), "confirm waits for the grace period");
    drop(guard);
    assert!(
        confirmed.wait_timeout(DEADLOCK_TIMEOUT),
        "confirm never ran"
    );
    assert!(released.wait_timeout(DEADLOCK_TIMEOUT), "never released");
    assert_eq!(n.load(Ordering::Relaxed), 1);
}

#[test]
#[cfg_attr(miri, ignore)]
fn panicking_confirm_does_not_skip_chained_confirms() {
    let (r, n, released) = counted(InitFlags::NONE);
    let confirmed = StdArc::new(Completion::new());
    let c = StdArc::clone(&confirmed);
    let guard = shrinker_rcu::read_lock(); // keeps the switch in flight
    r.switch_to_atomic(|| panic!("a confirm that panics"));
    r.kill_and_confirm(move || c.complete_all());
    drop(guard);
    assert!(
        confirmed.wait_timeout(DEADLOCK_TIMEOUT),
        "chained confirm skipped"
    );
    assert!(released.wait_timeout(DEADLOCK_TIMEOUT), "never released");
    assert_eq!(n.load(Ordering::Relaxed), 1);
    assert!(!r.data.lock().switching);
}

#[test]
#[cfg_attr(miri, ignore)]
fn many_threads_beyond_the_slots_use_the_counter() {
    let (r, n, released) = counted(InitFlags::NONE);
    let threads = slot::nr_slots() + 4;
    let rounds = 200;
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..rounds {
                    r.get();
                    assert!(r.tryget_live());
                    r.put_many(2);
                }
            });
        }
    });
    r.kill();
    released.wait();
    assert_eq!(n.load(Ordering::Relaxed), 1);
}

#[test]
fn put_many_zero_on_a_released_ref_does_not_release_again() {
    let (r, n, _) = counted(InitFlags::ATOMIC);
    r.kill(); // the last reference: count 0, release ran once
    assert_eq!(n.load(Ordering::Relaxed), 1);
    r.put_many(0);
    assert_eq!(
        n.load(Ordering::Relaxed),
        1,
        "put_many(0) ran release again"
    );
    assert!(r.is_zero());
    // On a live ref, in either mode, it changes nothing.
    let (live, n2, _) = counted(InitFlags::ATOMIC);
    live.put_many(0);
    assert_eq!(live.data.count.load(Ordering::Relaxed), 1);
    let (pcpu, _, _) = counted(InitFlags::NONE);
    pcpu.put_many(0);
    pcpu.get_many(0);
    assert!(pcpu.tryget_many(0), "non-zero: tryget_many(0) succeeds");
    assert_eq!(
        pcpu.data.count.load(Ordering::Relaxed),
        PERCPU_COUNT_BIAS + 1
    );
    assert_eq!(n2.load(Ordering::Relaxed), 0);
    assert!(!r.tryget_many(0), "zero: tryget_many(0) fails");
}

/// `nr as isize` made `get_many(usize::MAX)` a put of one: on a count of
/// one it reached zero without running release, and `tryget` then
/// refused a live object.
#[test]
fn get_many_beyond_isize_max_panics_before_changing_the_count() {
    let (r, n, _) = counted(InitFlags::ATOMIC);
    let caught = panic::catch_unwind(AssertUnwindSafe(|| r.get_many(usize::MAX)));
    let msg = caught.expect_err("get_many(usize::MAX) must panic");
    let msg = msg.downcast_ref::<String>().expect("a formatted message");
    assert!(msg.contains("PercpuRef::get_many"), "{msg}");
    assert_eq!(r.data.count.load(Ordering::Relaxed), 1, "count unchanged");
    assert!(r.tryget(), "still live");
    r.put();
    assert_eq!(n.load(Ordering::Relaxed), 0);
}

#[test]
fn tryget_many_beyond_isize_max_panics_before_changing_the_count() {
    let (r, _, _) = counted(InitFlags::ATOMIC);
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        let _ = r.tryget_many(usize::MAX);
    }));
    assert!(caught.is_err(), "tryget_many(usize::MAX) must panic");
    assert_eq!(r.data.count.load(Ordering::Relaxed), 1, "count unchanged");
}

/// `nr as isize` made `put_many(usize::MAX)` a get of one: the object
/// was never released.
#[test]
fn put_many_beyond_isize_max_panics_before_changing_the_count() {
    let (r, n, _) = counted(InitFlags::ATOMIC);
    let caught = panic::catch_unwind(AssertUnwindSafe(|| r.put_many(usize::MAX)));
    assert!(caught.is_err(), "put_many(usize::MAX) must panic");
    assert_eq!(r.data.count.load(Ordering::Relaxed), 1, "count unchanged");
    r.kill();
    assert_eq!(n.load(Ordering::Relaxed), 1, "released by the kill");
}

#[test]
fn underflow_detection_ignores_biased_values() {
    assert!(RefData::is_underflow(-1));
    assert!(!RefData::is_underflow(0));
    assert!(!RefData::is_underflow(PERCPU_COUNT_BIAS + 3));
    assert!(!RefData::is_underflow(PERCPU_COUNT_BIAS.wrapping_sub(3)));
}
