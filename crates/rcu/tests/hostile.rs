//! The crate used as a hostile user would: waiting forms from callbacks,
//! barriers racing thread exit, panics at odd points, misbehaving list
//! predicates. Each body runs with a deadline, so a deadlock fails the test
//! instead of hanging the suite.
#![cfg(not(loom))]

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use shrinker_rcu::{
    call_rcu, cond_synchronize, defer_drop, get_state, in_callback, in_read_section, rcu_barrier,
    read_lock, synchronize_rcu, RcuList, RcuPtr,
};

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

/// The worker is not inside a read-side section while it invokes callbacks,
/// so the waiting forms of the grace-period API work from a callback (they
/// hold up the callbacks behind it, nothing worse).
#[test]
fn waiting_for_a_grace_period_inside_a_callback_completes() {
    with_deadline(30, "synchronize_rcu inside a callback", || {
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        let p = Arc::new(RcuPtr::new(1u32));
        let p2 = p.clone();
        call_rcu(move || {
            assert!(in_callback());
            synchronize_rcu();
            let cookie = get_state();
            cond_synchronize(cookie);
            let old = p2.replace(2).expect("had a value");
            assert_eq!(*old.into_box(), 1);
            // Deferred frees and callbacks queued from a callback run too.
            defer_drop(Box::new(7u64));
            let d2 = d.clone();
            call_rcu(move || {
                d2.fetch_add(1, Ordering::SeqCst);
            });
            d.fetch_add(1, Ordering::SeqCst);
        });
        rcu_barrier();
        // The nested callback was queued before the barrier's marker ran, on
        // the worker's own shard: a second barrier catches it for sure.
        rcu_barrier();
        assert_eq!(done.load(Ordering::SeqCst), 2);
    });
}

/// A callback that panics inside a read-side section leaves it during the
/// unwinding; the worker is not left in a section (its next grace period
/// would wait for itself).
#[test]
fn callback_panicking_inside_a_read_section_leaves_it() {
    with_deadline(
        30,
        "grace periods after a callback panicked in a section",
        || {
            call_rcu(|| {
                let _outer = read_lock();
                let _inner = read_lock();
                panic!("panic inside a read-side section of a callback");
            });
            rcu_barrier();
            let left = Arc::new(AtomicBool::new(false));
            let l = left.clone();
            call_rcu(move || l.store(!in_read_section(), Ordering::SeqCst));
            rcu_barrier();
            assert!(left.load(Ordering::SeqCst));
            synchronize_rcu();
        },
    );
}

/// Threads queue callbacks (some from thread-local destructors after their
/// reader registration is gone) and exit while another thread runs
/// barriers: every callback queued before the last barrier has run.
#[test]
fn rcu_barrier_racing_thread_exit() {
    const THREADS: usize = 8;
    const EACH: usize = 200;
    struct QueueAtExit(Arc<AtomicUsize>);
    impl Drop for QueueAtExit {
        fn drop(&mut self) {
            let g = read_lock();
            let inner = read_lock();
            let ran = self.0.clone();
            call_rcu(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            });
            drop(inner);
            drop(g);
        }
    }
    thread_local! {
        static AT_EXIT: RefCell<Option<QueueAtExit>> = const { RefCell::new(None) };
    }
    with_deadline(60, "rcu_barrier racing thread exit", || {
        let ran = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let barrier_thread = {
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    rcu_barrier();
                }
            })
        };
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let ran = ran.clone();
                thread::spawn(move || {
                    AT_EXIT.with(|a| *a.borrow_mut() = Some(QueueAtExit(ran.clone())));
                    for _ in 0..EACH {
                        let g = read_lock();
                        let r = ran.clone();
                        call_rcu(move || {
                            r.fetch_add(1, Ordering::SeqCst);
                        });
                        drop(g);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        barrier_thread.join().unwrap();
        rcu_barrier();
        assert_eq!(ran.load(Ordering::SeqCst), THREADS * (EACH + 1));
    });
}

/// A panicking predicate leaves the list consistent: `remove_first` unlinks
/// nothing, `retain` keeps what it had not yet looked at, and the writer
/// lock is usable again (poisoning carries no information here).
#[test]
fn list_predicates_that_panic_leave_the_list_consistent() {
    let list = RcuList::new();
    for i in 0..6u32 {
        list.lock().push_back(i);
    }
    let r = catch_unwind(AssertUnwindSafe(|| {
        list.lock().remove_first(|v| {
            if *v == 3 {
                panic!("predicate panicked");
            }
            false
        })
    }));
    assert!(r.is_err());
    assert_eq!(list.lock().len(), 6);
    // Remove the evens until the predicate panics at 4.
    let r = catch_unwind(AssertUnwindSafe(|| {
        list.lock().retain(|v| {
            if *v == 4 {
                panic!("keep panicked");
            }
            v % 2 == 1
        })
    }));
    assert!(r.is_err());
    let g = read_lock();
    assert_eq!(list.iter(&g).copied().collect::<Vec<_>>(), [1, 3, 4, 5]);
    drop(g);
    let mut w = list.lock();
    assert_eq!(w.len(), 4);
    // The tail is right: a push_back lands at the end.
    w.push_back(9);
    assert_eq!(w.iter().copied().collect::<Vec<_>>(), [1, 3, 4, 5, 9]);
    drop(w);
    rcu_barrier();
}

/// Values whose `Drop` panics, freed through every path of `RcuPtr` and
/// `RcuList`: each panic is contained (on the worker) or surfaces to the
/// caller that dropped the value inline, never both and never lost.
#[test]
fn panicking_drops_through_rcu_ptr_and_list() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                panic!("Bomb dropped");
            }
        }
    }
    with_deadline(30, "panicking drops", || {
        let before = shrinker_rcu::stats().callback_panics;
        let p = RcuPtr::new(Bomb);
        p.store(Bomb); // the old Bomb goes to the worker
        let list = RcuList::new();
        list.lock().push_back(Bomb);
        list.lock().push_back(Bomb);
        assert_eq!(list.lock().retain(|_| false), 2); // both to the worker
        rcu_barrier();
        assert!(shrinker_rcu::stats().callback_panics >= before + 3);
        // Inline drops surface to their caller.
        let old = p.take().unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| drop(old.into_box())));
        assert!(r.is_err());
        assert!(p.is_null());
    });
}

/// `RcuPtr::store` and `ListWriter::retain` drop the old values on the
/// callback worker, never inline on the caller (where `retain` holds the
/// writer lock): a grace period elapsing between the unlink and the drop
/// used to make `Retired`'s drop run `T::drop` inline. That race cannot be
/// forced from outside, so this checks the guarantee under a concurrent
/// stream of grace periods rather than reproducing the race.
#[test]
fn store_and_retain_never_drop_inline() {
    static INLINE: AtomicUsize = AtomicUsize::new(0);
    struct WhereDropped;
    impl Drop for WhereDropped {
        fn drop(&mut self) {
            if !in_callback() {
                INLINE.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    with_deadline(30, "store and retain under grace-period churn", || {
        let stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    synchronize_rcu();
                }
            })
        };
        let p = RcuPtr::new(WhereDropped);
        let list = RcuList::new();
        for _ in 0..2_000 {
            p.store(WhereDropped);
            let mut w = list.lock();
            w.push_back(WhereDropped);
            w.retain(|_| false);
        }
        stop.store(true, Ordering::SeqCst);
        churn.join().unwrap();
        rcu_barrier();
        assert_eq!(INLINE.load(Ordering::SeqCst), 0);
        drop(p.into_box()); // the live value, inline by design
    });
}

/// `{:?}` on a list while its writer lock is held (a log line inside an
/// update) used to take the writer lock again and deadlock.
#[test]
fn debug_formatting_a_list_under_its_writer_lock() {
    with_deadline(10, "Debug of an RcuList under its writer lock", || {
        let list = RcuList::new();
        let mut w = list.lock();
        w.push_back(1u32);
        w.push_back(2);
        assert_eq!(format!("{list:?}"), "[1, 2]");
        drop(w);
        let _g = read_lock();
        assert_eq!(format!("{list:?}"), "[1, 2]");
    });
}
