//! loom models of [`RefLock`]: reader against writer, reader against detach,
//! reuse in another domain against a reader holding a stale pointer, and the
//! wake-up after the last reader's put (own domain and foreign domain).
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release -p shrinker-sync --test loom_reflock`
//!
//! The protected data is a loom `UnsafeCell` that the writer writes only
//! while it holds the object write-locked (or detached) and readers read only
//! under a [`ReadLock`]: if the protocol let a reader in while the writer
//! writes, or let the writer on while a reader reads, loom reports the
//! unsynchronised access. A lost wake-up leaves the writer parked forever,
//! which loom reports as a deadlock.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use shrinker_sync::{RefLock, RefLockDomain, TryReadError};

/// An object of a domain: the lock and the data it protects.
struct Obj {
    lock: RefLock,
    data: UnsafeCell<u64>,
}

// SAFETY: `data` is accessed under the RefLock protocol under test; loom
// reports every access the protocol fails to order.
unsafe impl Sync for Obj {}

impl Obj {
    fn new(v: u64) -> Self {
        Obj {
            lock: RefLock::new(),
            data: UnsafeCell::new(v),
        }
    }
    fn read(&self) -> u64 {
        // SAFETY: see `unsafe impl Sync`.
        self.data.with(|p| unsafe { *p })
    }
    fn write(&self, v: u64) {
        // SAFETY: see `unsafe impl Sync`.
        self.data.with_mut(|p| unsafe { *p = v });
    }
}

const POISON: u64 = 0xdead;

/// A domain and one object attached to it under `key` (the attaching write
/// cycle has ended, so the object is read-lockable).
fn setup(key: u64, v: u64) -> (Arc<RefLockDomain<()>>, Arc<Obj>) {
    let d = Arc::new(RefLockDomain::new(()));
    let obj = Arc::new(Obj::new(v));
    obj.lock.attach(&d.write(), key);
    (d, obj)
}

/// A reader never succeeds while the object is write-locked, and the writer
/// never writes while a reader holds it; a reader that succeeds after the
/// write cycle sees the new value.
#[test]
fn reader_vs_writer() {
    loom::model(|| {
        let (d, obj) = setup(1, 1);
        let reader = {
            let (d, obj) = (d.clone(), obj.clone());
            thread::spawn(move || match obj.lock.try_read(&d, 1) {
                Ok(_l) => {
                    let v = obj.read();
                    assert!(v == 1 || v == 2, "read {v}");
                }
                Err(e) => assert_eq!(e, TryReadError::WriteLocked),
            })
        };
        {
            let w = d.write();
            obj.lock.start_write(&w);
            obj.write(2);
        } // end_write_all
        reader.join().unwrap();
        // After the cycle, a reader sees the write.
        let l = obj.lock.try_read(&d, 1).expect("unlocked");
        assert_eq!(obj.read(), 2);
        drop(l);
        assert_eq!(obj.lock.state().raw(), 1);
    });
}

/// Two readers against a writer: the writer waits for both, whichever order
/// they leave in (the last put must wake it).
#[test]
fn writer_waits_for_the_last_of_two_readers() {
    loom::model(|| {
        let (d, obj) = setup(1, 1);
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (d, obj) = (d.clone(), obj.clone());
                thread::spawn(move || {
                    if let Ok(_l) = obj.lock.try_read(&d, 1) {
                        // Before the write lock, or after the cycle ended.
                        let v = obj.read();
                        assert!(v == 1 || v == 2, "read {v}");
                    }
                })
            })
            .collect();
        {
            let w = d.write();
            obj.lock.start_write(&w);
            obj.write(2);
        }
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(obj.lock.state().raw(), 1);
    });
}

/// Detach waits out a transient reader (one that incremented the count of
/// the write-locked object and is about to fail): the detacher's poisoning
/// never races with a reader, and no reader succeeds on a detached object.
#[test]
fn reader_vs_detach() {
    loom::model(|| {
        let (d, obj) = setup(1, 1);
        let reader = {
            let (d, obj) = (d.clone(), obj.clone());
            thread::spawn(move || match obj.lock.try_read(&d, 1) {
                Ok(_l) => assert_eq!(obj.read(), 1, "read a detached object"),
                Err(e) => assert!(
                    matches!(e, TryReadError::WriteLocked | TryReadError::Detached),
                    "{e:?}"
                ),
            })
        };
        {
            let w = d.write();
            obj.lock.start_write(&w);
            obj.lock.detach(&w);
            obj.write(POISON); // "freed": back on a free list
        }
        reader.join().unwrap();
        assert!(obj.lock.state().is_detached());
    });
}

/// Type-stable reuse: the object moves from domain A (key 1) to domain B
/// (key 2) and gets B's data, while a reader of A holding the old pointer
/// tries to lock it. The reader either gets A's object with A's data or
/// fails; it never reads B's data, and never races with the move.
#[test]
fn reuse_is_caught_by_the_identity_check() {
    loom::model(|| {
        let (a, obj) = setup(1, 1);
        let b = RefLockDomain::new(());
        let reader = {
            let (a, obj) = (a.clone(), obj.clone());
            thread::spawn(move || {
                if let Ok(_l) = obj.lock.try_read(&a, 1) {
                    assert_eq!(obj.read(), 1, "read the object's next life");
                }
            })
        };
        {
            let w = a.write();
            obj.lock.start_write(&w);
            obj.lock.detach(&w);
        }
        {
            let w = b.write();
            obj.lock.attach(&w, 2);
            obj.write(2);
        }
        reader.join().unwrap();
        assert_eq!(obj.lock.try_read(&a, 1).err(), Some(TryReadError::Reused));
        let l = obj.lock.try_read(&b, 2).expect("B's object");
        assert_eq!(obj.read(), 2);
        drop(l);
    });
}

/// The 2025 use-after-free, as a model: a reader of A holds a transient
/// count on an object now owned by B; B's writer write-locks and detaches
/// it (waiting for that reader's put to wake it) and then B is dropped. The
/// reader's put must wake B's writer (no deadlock) through a core that is
/// still alive (the reader pins it; loom checks that the pin is released).
#[test]
fn foreign_readers_put_wakes_the_new_owner() {
    loom::model(|| {
        let a = Arc::new(RefLockDomain::new(()));
        let obj = Arc::new(Obj::new(2));
        let b = RefLockDomain::new(());
        obj.lock.attach(&b.write(), 2);
        let reader = {
            let (a, obj) = (a.clone(), obj.clone());
            thread::spawn(move || {
                let r = obj.lock.try_read(&a, 1);
                assert!(
                    matches!(
                        r.as_ref().err(),
                        Some(
                            TryReadError::Reused
                                | TryReadError::WriteLocked
                                | TryReadError::Detached
                        )
                    ),
                    "{r:?}"
                );
            })
        };
        {
            let w = b.write();
            obj.lock.start_write(&w);
            obj.lock.detach(&w);
            obj.write(POISON);
        }
        drop(b); // the domain goes while the reader may still be waking it
        reader.join().unwrap();
        assert!(obj.lock.state().is_detached());
    });
}
