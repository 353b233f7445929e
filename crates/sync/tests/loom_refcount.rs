//! loom models of [`Refcount`]: the final put against other holders' uses,
//! `inc_not_zero` against the final put, `set_release` publication, and
//! `dec_and_lock` against a lookup under the same lock.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p shrinker-sync --test loom_refcount`
//!
//! Each object's payload is a `loom::cell::UnsafeCell`; "freeing" writes a
//! poison value through `with_mut`. Any use not ordered before the free is a
//! data race that loom reports, and a reader that sees the poison fails its
//! assertion.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;
use shrinker_sync::Refcount;

const POISON: u32 = 0xdead;

struct Obj {
    refs: Refcount,
    data: UnsafeCell<u32>,
    frees: AtomicUsize,
}

// SAFETY: `data` is accessed under the refcount protocol under test; loom
// reports every access that the protocol fails to order.
unsafe impl Sync for Obj {}

impl Obj {
    fn new(refs: i32, data: u32) -> Self {
        Obj {
            refs: Refcount::new(refs),
            data: UnsafeCell::new(data),
            frees: AtomicUsize::new(0),
        }
    }
    fn read(&self) -> u32 {
        // SAFETY: see `unsafe impl Sync`; loom checks the access.
        let v = self.data.with(|p| unsafe { *p });
        assert_ne!(v, POISON, "used after free");
        v
    }
    fn free(&self) {
        // SAFETY: see `unsafe impl Sync`; loom checks the access.
        self.data.with_mut(|p| unsafe { *p = POISON });
        // Relaxed: a counter checked after join().
        self.frees.fetch_add(1, Ordering::Relaxed);
    }
    fn put(&self) {
        if self.refs.dec_and_test() {
            self.free();
        }
    }
}

/// Two holders use the object, then drop their references; whoever drops
/// the last one frees it. The other holder's use must happen-before the free
/// (Release decrement, Acquire fence on success).
#[test]
fn dec_and_test_orders_uses_before_free() {
    loom::model(|| {
        let obj = Arc::new(Obj::new(2, 1));
        let other = {
            let obj = obj.clone();
            thread::spawn(move || {
                assert_eq!(obj.read(), 1);
                obj.put();
            })
        };
        assert_eq!(obj.read(), 1);
        obj.put();
        other.join().unwrap();
        assert_eq!(obj.frees.load(Ordering::Relaxed), 1, "freed exactly once");
    });
}

/// A lookup takes a reference with `inc_not_zero` while the owner drops the
/// last one: either the lookup fails, or it wins and the object is freed
/// after its use, by whoever puts last.
#[test]
fn inc_not_zero_against_final_put() {
    loom::model(|| {
        let obj = Arc::new(Obj::new(1, 1));
        let lookup = {
            let obj = obj.clone();
            thread::spawn(move || {
                if obj.refs.inc_not_zero() {
                    assert_eq!(obj.read(), 1);
                    obj.put();
                }
            })
        };
        obj.put(); // the owner's (initial) reference
        lookup.join().unwrap();
        assert_eq!(obj.frees.load(Ordering::Relaxed), 1, "freed exactly once");
        assert_eq!(obj.refs.read(), 0);
    });
}

/// Type-stable reuse: the producer initialises the payload, then publishes
/// with `set_release`; a reader whose `inc_not_zero_acquire` succeeds must see
/// the payload.
#[test]
fn set_release_publishes_to_inc_not_zero_acquire() {
    loom::model(|| {
        let obj = Arc::new(Obj::new(0, 0));
        let reader = {
            let obj = obj.clone();
            thread::spawn(move || {
                if obj.refs.inc_not_zero_acquire() {
                    assert_eq!(obj.read(), 42, "saw the count but not the payload");
                    assert!(!obj.refs.dec_and_test());
                }
            })
        };
        // SAFETY: no reader accesses `data` before seeing the count non-zero.
        obj.data.with_mut(|p| unsafe { *p = 42 });
        obj.refs.set_release(1);
        reader.join().unwrap();
        assert_eq!(obj.refs.read(), 1);
    });
}

/// `dec_and_lock` against a lookup under the same lock: the count reaches
/// zero only with the lock held, so a lookup under the lock that still finds
/// the object can always take a reference, and the object is unlinked and
/// freed exactly once, after every use.
#[test]
fn dec_and_lock_against_lookup_under_lock() {
    loom::model(|| {
        let obj = Arc::new(Obj::new(1, 1));
        // The "table": Some while the object is linked.
        let table = Arc::new(Mutex::new(Some(obj.clone())));
        let lookup = {
            let table = table.clone();
            thread::spawn(move || {
                let found = {
                    let t = table.lock().unwrap();
                    t.as_ref().map(|o| {
                        assert!(o.refs.inc_not_zero(), "linked objects are never at zero");
                        o.clone()
                    })
                };
                if let Some(o) = found {
                    assert_eq!(o.read(), 1);
                    if let Some(mut t) = o.refs.dec_and_lock(&table) {
                        t.take();
                        o.free();
                    }
                }
            })
        };
        if let Some(mut t) = obj.refs.dec_and_lock(&table) {
            t.take();
            obj.free();
        }
        lookup.join().unwrap();
        assert_eq!(obj.frees.load(Ordering::Relaxed), 1, "freed exactly once");
        assert!(table.lock().unwrap().is_none(), "unlinked");
    });
}
