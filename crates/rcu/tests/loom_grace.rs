//! loom models of the grace-period algorithm and of callbacks.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release -p shrinker-rcu --test loom_grace`
//!
//! Under loom the readers' barrier is a `SeqCst` fence (loom does not model
//! membarrier; a `SeqCst` fence on each side stands in for it). Each model
//! poisons the old object through a `loom::cell::UnsafeCell` once the update
//! side believes no reader can see it: if any reader access is not ordered
//! before the poisoning, loom reports a data race (or the reader's assertion
//! fails).
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use shrinker_rcu::{call_rcu, rcu_barrier, read_lock, synchronize_rcu, RcuPtr};

const POISON: u32 = 0xdead;

struct Obj(UnsafeCell<u32>);

// SAFETY: accesses are ordered by RCU (the property under test); loom checks.
unsafe impl Sync for Obj {}

impl Obj {
    fn read(&self) -> u32 {
        // SAFETY: loom tracks this access and reports any race.
        self.0.with(|v| unsafe { *v })
    }
    fn poison(&self) {
        // SAFETY: as above.
        self.0.with_mut(|v| unsafe { *v = POISON })
    }
}

/// A published object holding 1.
fn published() -> Arc<RcuPtr<Obj>> {
    Arc::new(RcuPtr::new(Obj(UnsafeCell::new(1))))
}

/// A reader thread running `sections` read-side sections on `p`, one after
/// the other.
fn spawn_reader(p: &Arc<RcuPtr<Obj>>, sections: usize) -> thread::JoinHandle<()> {
    let p = p.clone();
    thread::spawn(move || {
        for _ in 0..sections {
            read_once(&p);
        }
    })
}

fn read_once(p: &RcuPtr<Obj>) {
    let g = read_lock();
    if let Some(o) = p.load(&g) {
        let v = o.read();
        assert_ne!(v, POISON, "reader saw a poisoned object");
    }
    drop(g);
}

/// One reader section against replace + synchronize_rcu + poison.
#[test]
fn synchronize_orders_reader_before_free() {
    loom::model(|| {
        let p = published();
        let reader = spawn_reader(&p, 1);
        let old = p.replace(Obj(UnsafeCell::new(2))).unwrap();
        let old = old.into_box(); // synchronize_rcu()
        old.poison();
        reader.join().unwrap();
    });
}

/// Two consecutive sections: the second may begin with a stale phase while
/// the grace period flips it (the case the two-phase algorithm exists for).
#[test]
fn two_phase_covers_back_to_back_sections() {
    loom::model(|| {
        let p = published();
        let reader = spawn_reader(&p, 2);
        let old = p.replace(Obj(UnsafeCell::new(2))).unwrap();
        synchronize_rcu();
        let old = old.try_into_box().expect("grace period has passed");
        old.poison();
        reader.join().unwrap();
    });
}

/// call_rcu: the callback poisons; under loom `rcu_barrier` runs it inline
/// after a grace period.
#[test]
fn call_rcu_runs_after_pre_existing_readers() {
    loom::model(|| {
        let p = published();
        let reader = spawn_reader(&p, 1);
        let old = p.replace(Obj(UnsafeCell::new(2))).unwrap();
        call_rcu(move || {
            let b = old.into_box(); // the grace period has passed: no wait
            b.poison();
        });
        rcu_barrier();
        reader.join().unwrap();
    });
}

/// Two updaters share grace periods (batching) and neither frees early.
#[test]
fn concurrent_synchronize_callers() {
    loom::model(|| {
        let p = published();
        let q = published();
        let updater = {
            let q = q.clone();
            thread::spawn(move || {
                let old = q.replace(Obj(UnsafeCell::new(2))).unwrap().into_box();
                old.poison();
            })
        };
        let reader = {
            let (p, q) = (p.clone(), q.clone());
            thread::spawn(move || {
                let g = read_lock();
                for ptr in [&*p, &*q] {
                    if let Some(o) = ptr.load(&g) {
                        assert_ne!(o.read(), POISON);
                    }
                }
                drop(g);
            })
        };
        let old = p.replace(Obj(UnsafeCell::new(2))).unwrap().into_box();
        old.poison();
        updater.join().unwrap();
        reader.join().unwrap();
    });
}

/// The main thread is a reader too (its record outlives the model's domain:
/// dropping it must not touch the domain).
#[test]
fn main_thread_reads_while_another_synchronizes() {
    loom::model(|| {
        let p = published();
        let updater = {
            let p = p.clone();
            thread::spawn(move || {
                let old = p.replace(Obj(UnsafeCell::new(2))).unwrap().into_box();
                old.poison();
            })
        };
        read_once(&p);
        updater.join().unwrap();
    });
}
