//! Behaviour of the public API across threads: grace periods wait for readers,
//! callbacks run after them, misuse panics with a message naming it, panicking
//! callbacks are contained.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use shrinker_rcu::{
    call_rcu, cond_synchronize, defer_drop, get_state, in_read_section, poll_state, rcu_barrier,
    read_lock, stats, synchronize_rcu, RcuPtr,
};

/// A reader holds a section; `synchronize_rcu` in another thread must not
/// return before the reader has left it.
#[test]
fn synchronize_waits_for_pre_existing_reader() {
    let left = Arc::new(AtomicBool::new(false));
    let (entered_tx, entered_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let reader = {
        let left = left.clone();
        thread::spawn(move || {
            let g = read_lock();
            entered_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            // Stay a while so a broken grace period would return first.
            thread::sleep(Duration::from_millis(30));
            left.store(true, Ordering::SeqCst);
            drop(g);
        })
    };
    entered_rx.recv().unwrap();
    let syncer = {
        let left = left.clone();
        thread::spawn(move || {
            synchronize_rcu();
            left.load(Ordering::SeqCst)
        })
    };
    go_tx.send(()).unwrap();
    assert!(
        syncer.join().unwrap(),
        "synchronize_rcu returned while a pre-existing reader was inside"
    );
    reader.join().unwrap();
}

/// A long reader makes the grace period sleep on the futex; leaving the
/// section must wake it (otherwise this test hangs).
#[test]
fn long_reader_wakes_sleeping_grace_period() {
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let g = read_lock();
        tx.send(()).unwrap();
        thread::sleep(Duration::from_millis(100));
        drop(g);
    });
    rx.recv().unwrap();
    synchronize_rcu();
    reader.join().unwrap();
}

#[test]
fn callback_runs_only_after_pre_existing_reader() {
    let ran = Arc::new(AtomicBool::new(false));
    let g = read_lock();
    let r = ran.clone();
    // Queue from another thread while we are inside a section.
    thread::spawn(move || call_rcu(move || r.store(true, Ordering::SeqCst)))
        .join()
        .unwrap();
    thread::sleep(Duration::from_millis(30));
    assert!(
        !ran.load(Ordering::SeqCst),
        "callback ran while a pre-existing reader was inside"
    );
    drop(g);
    rcu_barrier();
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
fn polled_cookies() {
    let cookie = get_state();
    synchronize_rcu();
    assert!(poll_state(cookie));
    cond_synchronize(cookie); // returns at once
    let fresh = get_state();
    cond_synchronize(fresh);
    assert!(poll_state(fresh));
}

#[test]
#[should_panic(expected = "synchronize_rcu() called inside an RCU read-side critical section")]
fn synchronize_inside_read_section_panics() {
    let _g = read_lock();
    synchronize_rcu();
}

#[test]
#[should_panic(expected = "rcu_barrier() called inside an RCU read-side critical section")]
fn barrier_inside_read_section_panics() {
    let _g = read_lock();
    rcu_barrier();
}

#[test]
#[should_panic(expected = "cond_synchronize() called inside an RCU read-side critical section")]
fn cond_synchronize_inside_read_section_panics() {
    let cookie = get_state();
    let _g = read_lock();
    cond_synchronize(cookie);
}

#[test]
fn nesting_is_tracked() {
    assert!(!in_read_section());
    let a = read_lock();
    let b = read_lock();
    assert!(in_read_section());
    drop(a);
    assert!(in_read_section());
    drop(b);
    assert!(!in_read_section());
}

/// A panicking callback is caught and counted; the worker goes on running
/// callbacks queued after it, and `rcu_barrier` from a callback is a named
/// misuse (a panic caught the same way).
#[test]
fn panicking_callbacks_are_contained() {
    let before = stats().callback_panics;
    let after_ran = Arc::new(AtomicBool::new(false));
    let misuse_msg = Arc::new(std::sync::Mutex::new(String::new()));
    call_rcu(|| panic!("boom in a callback"));
    {
        let msg = misuse_msg.clone();
        call_rcu(move || {
            let r = std::panic::catch_unwind(rcu_barrier);
            let payload = r.expect_err("rcu_barrier inside a callback must panic");
            *msg.lock().unwrap() = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .unwrap_or_default();
            // And escape once more so the worker's own containment is used.
            std::panic::resume_unwind(payload);
        });
    }
    let a = after_ran.clone();
    call_rcu(move || a.store(true, Ordering::SeqCst));
    rcu_barrier();
    assert!(
        after_ran.load(Ordering::SeqCst),
        "worker died after a panicking callback"
    );
    assert!(stats().callback_panics >= before + 2);
    assert!(misuse_msg
        .lock()
        .unwrap()
        .contains("rcu_barrier() called from inside an RCU callback"));
}

/// Callbacks queued before a barrier, from many threads, have all run when it
/// returns; callbacks of one thread run in the order queued.
#[test]
fn barrier_waits_for_everything_queued_before_it() {
    const THREADS: usize = 4;
    const EACH: usize = 2_000;
    let count = Arc::new(AtomicUsize::new(0));
    let out_of_order = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (count, out_of_order) = (count.clone(), out_of_order.clone());
            thread::spawn(move || {
                let last = Arc::new(AtomicUsize::new(0));
                for i in 1..=EACH {
                    let (count, last, out_of_order) =
                        (count.clone(), last.clone(), out_of_order.clone());
                    call_rcu(move || {
                        // FIFO per thread.
                        if last.swap(i, Ordering::Relaxed) != i - 1 {
                            out_of_order.store(true, Ordering::Relaxed);
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                    });
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    rcu_barrier();
    assert_eq!(count.load(Ordering::Relaxed), THREADS * EACH);
    assert!(
        !out_of_order.load(Ordering::Relaxed),
        "a thread's callbacks ran out of order"
    );
}

#[test]
fn barrier_with_nothing_queued_returns() {
    rcu_barrier();
    rcu_barrier();
}

#[test]
fn defer_drop_drops_after_grace_period() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    struct D;
    impl Drop for D {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }
    let before = DROPS.load(Ordering::SeqCst);
    let g = read_lock();
    thread::spawn(|| {
        for _ in 0..100 {
            defer_drop(Box::new(D));
        }
    })
    .join()
    .unwrap();
    thread::sleep(Duration::from_millis(20));
    assert_eq!(
        DROPS.load(Ordering::SeqCst),
        before,
        "dropped under a pre-existing reader"
    );
    drop(g);
    rcu_barrier();
    assert_eq!(DROPS.load(Ordering::SeqCst), before + 100);
}

#[test]
fn rcu_ptr_concurrent_replacers_hand_back_each_value_once() {
    const THREADS: usize = 4;
    const EACH: u64 = 500;
    let p = Arc::new(RcuPtr::new(0u64));
    let handles: Vec<_> = (0..THREADS as u64)
        .map(|t| {
            let p = p.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0..EACH {
                    let v = 1 + t * EACH + i;
                    got.push(*p.replace(v).unwrap().into_box());
                }
                got
            })
        })
        .collect();
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.push(*Arc::try_unwrap(p).unwrap().into_box().unwrap());
    all.sort_unstable();
    let expected: Vec<u64> = (0..=THREADS as u64 * EACH).collect();
    assert_eq!(all, expected, "a value was lost or handed back twice");
}

/// Threads come and go while grace periods run: registration and exit must
/// never leave a dangling reader in the registry (this would crash or hang).
#[test]
fn reader_threads_register_and_exit_during_grace_periods() {
    let stop = Arc::new(AtomicBool::new(false));
    let syncer = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                synchronize_rcu();
                n += 1;
            }
            n
        })
    };
    for _ in 0..200 {
        thread::spawn(|| {
            let g = read_lock();
            std::hint::black_box(&g);
        })
        .join()
        .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(syncer.join().unwrap() > 0);
}

/// A thread-local destroyed after the thread's RCU registration may still
/// enter a read-side section (and queue callbacks) from its destructor.
#[test]
fn read_section_in_late_thread_local_destructor() {
    struct Late(Arc<RcuPtr<u32>>, mpsc::Sender<u32>);
    impl Drop for Late {
        fn drop(&mut self) {
            let g = read_lock();
            let v = *self.0.load(&g).unwrap();
            drop(g);
            defer_drop(Box::new(v));
            self.1.send(v).unwrap();
        }
    }
    thread_local! {
        static LATE: std::cell::RefCell<Option<Late>> = const { std::cell::RefCell::new(None) };
    }
    let p = Arc::new(RcuPtr::new(42u32));
    let (tx, rx) = mpsc::channel();
    let p2 = p.clone();
    thread::spawn(move || {
        // Initialised (destructor registered) before the first read_lock, so
        // it is destroyed after the registration.
        LATE.with(|l| *l.borrow_mut() = Some(Late(p2, tx)));
        drop(read_lock());
    })
    .join()
    .unwrap();
    assert_eq!(rx.recv().unwrap(), 42);
    synchronize_rcu();
    rcu_barrier();
}
