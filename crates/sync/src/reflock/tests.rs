use super::state::{OFFSET, READER_LIMIT};
use super::*;
use crate::sync::Arc;
use std::error::Error;
use std::panic::{catch_unwind, AssertUnwindSafe};

fn attached(d: &RefLockDomain<()>, key: u64) -> RefLock {
    let obj = RefLock::new();
    obj.attach(&d.write(), key);
    obj
}

fn panic_message(r: std::thread::Result<()>) -> String {
    let e = r.expect_err("expected a panic");
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn new_is_detached_and_refuses_readers() {
    let d = RefLockDomain::new(());
    let obj = RefLock::new();
    assert!(obj.state().is_detached());
    assert_eq!(obj.try_read(&d, 0).err(), Some(TryReadError::Detached));
    assert_eq!(
        obj.read_locked(&d.read(), 0).err(),
        Some(TryReadError::Detached)
    );
    assert!(obj.state().is_detached(), "a failed read changed the count");
}

#[test]
fn attach_publishes_write_locked_until_the_cycle_ends() {
    let d = RefLockDomain::new(());
    let obj = RefLock::new();
    let w = d.write();
    obj.attach(&w, 1);
    assert_eq!(obj.state().raw(), 1);
    assert!(obj.is_write_locked(&w));
    assert_eq!(obj.try_read(&d, 1).err(), Some(TryReadError::WriteLocked));
    assert_eq!(obj.state().raw(), 1, "the transient reference was put");
    drop(w);
    let r = obj.try_read(&d, 1).expect("cycle ended");
    assert_eq!(obj.state().raw(), 2);
    drop(r);
    assert_eq!(obj.state().raw(), 1);
}

#[test]
fn readers_count_and_release() {
    let d = RefLockDomain::new(());
    let obj = attached(&d, 1);
    let locks: Vec<_> = (0..5).map(|_| obj.try_read(&d, 1).unwrap()).collect();
    assert_eq!(obj.state().readers(), 5);
    let big = d.read();
    let l = obj.read_locked(&big, 1).unwrap();
    assert_eq!(obj.state().readers(), 6);
    drop((locks, l));
    assert_eq!(obj.state().raw(), 1);
}

#[test]
fn start_write_excludes_readers_until_end_write_all() {
    let d = RefLockDomain::new(());
    let obj = attached(&d, 1);
    let w = d.write();
    assert!(!obj.is_write_locked(&w));
    // Before start_write a lockless reader still gets in (the writer
    // would wait for it).
    drop(obj.try_read(&d, 1).unwrap());
    obj.start_write(&w);
    assert!(obj.is_write_locked(&w));
    obj.start_write(&w); // idempotent within the cycle
    assert_eq!(obj.state().raw(), 1);
    assert_eq!(obj.try_read(&d, 1).err(), Some(TryReadError::WriteLocked));
    drop(w);
    assert!(obj.try_read(&d, 1).is_ok());
    let w = d.write();
    assert!(!obj.is_write_locked(&w), "a new cycle starts unlocked");
}

#[test]
fn pessimistic_check_fails_before_touching_the_count() {
    let d = RefLockDomain::new(());
    let obj = attached(&d, 1);
    let w = d.write();
    obj.start_write(&w);
    // Pretend a reader is at the limit: the pessimistic check must fail
    // first, leaving the count alone.
    obj.set_count_for_test(READER_LIMIT);
    assert_eq!(obj.try_read(&d, 1).err(), Some(TryReadError::WriteLocked));
    assert_eq!(obj.state().raw(), READER_LIMIT);
    obj.set_count_for_test(1);
}

#[test]
fn offset_means_write_locked() {
    let d = RefLockDomain::new(());
    let obj = attached(&d, 1);
    obj.set_count_for_test(OFFSET + 1);
    assert_eq!(obj.try_read(&d, 1).err(), Some(TryReadError::WriteLocked));
    assert_eq!(
        obj.read_locked(&d.read(), 1).err(),
        Some(TryReadError::WriteLocked)
    );
    assert_eq!(obj.state().raw(), OFFSET + 1);
    assert!(obj.state().readers_excluded());
    obj.set_count_for_test(1);
}

#[test]
fn overflow_at_the_reader_limit() {
    let d = RefLockDomain::new(());
    let obj = attached(&d, 1);
    obj.set_count_for_test(READER_LIMIT - 1);
    let last = obj.try_read(&d, 1).expect("one below the limit");
    assert_eq!(obj.state().raw(), READER_LIMIT);
    assert_eq!(obj.try_read(&d, 1).err(), Some(TryReadError::Overflow));
    assert_eq!(
        obj.read_locked(&d.read(), 1).err(),
        Some(TryReadError::Overflow)
    );
    assert_eq!(obj.state().raw(), READER_LIMIT);
    drop(last);
    obj.set_count_for_test(1);
}

#[test]
fn identity_checks_owner_and_key() {
    let (a, b) = (RefLockDomain::new(()), RefLockDomain::new(()));
    let obj = attached(&a, 10);
    assert_eq!(obj.try_read(&a, 11).err(), Some(TryReadError::Reused));
    assert_eq!(obj.try_read(&b, 10).err(), Some(TryReadError::Reused));
    assert_eq!(
        obj.read_locked(&b.read(), 10).err(),
        Some(TryReadError::Reused)
    );
    assert_eq!(obj.state().raw(), 1, "every failure put its reference");
}

#[test]
fn detach_then_reuse_in_another_domain() {
    let (a, b) = (RefLockDomain::new(()), RefLockDomain::new(()));
    let obj = attached(&a, 1);
    {
        let w = a.write();
        obj.start_write(&w);
        obj.detach(&w);
    }
    assert!(obj.state().is_detached());
    assert_eq!(obj.try_read(&a, 1).err(), Some(TryReadError::Detached));
    obj.attach(&b.write(), 1);
    assert_eq!(obj.try_read(&a, 1).err(), Some(TryReadError::Reused));
    assert!(obj.try_read(&b, 1).is_ok());
}

#[test]
fn attached_object_keeps_its_domain_core_alive() {
    let obj = RefLock::new();
    let a = RefLockDomain::new(());
    obj.attach(&a.write(), 1);
    assert_eq!(Arc::strong_count(&a.core), 2);
    let core = Arc::clone(&a.core);
    drop(a); // the domain goes, its attached object keeps the core
    assert_eq!(Arc::strong_count(&core), 2);
    // A reader of another domain finds the stale attachment, pins the
    // old core across its put, and lets go.
    let b = RefLockDomain::new(());
    assert_eq!(obj.try_read(&b, 1).err(), Some(TryReadError::Reused));
    assert_eq!(Arc::strong_count(&core), 2);
    drop(obj);
    assert_eq!(Arc::strong_count(&core), 1);
}

#[test]
fn detach_releases_the_core_reference() {
    let a = RefLockDomain::new(());
    let obj = attached(&a, 1);
    assert_eq!(Arc::strong_count(&a.core), 2);
    let w = a.write();
    obj.start_write(&w);
    obj.detach(&w);
    drop(w);
    assert_eq!(Arc::strong_count(&a.core), 1);
}

#[test]
fn writer_waits_for_a_reader_on_another_thread() {
    let d = RefLockDomain::new(());
    let obj = attached(&d, 1);
    let r = obj.try_read(&d, 1).unwrap();
    std::thread::scope(|s| {
        let w = d.write();
        s.spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(if cfg!(miri) {
                1
            } else {
                20
            }));
            drop(r);
        });
        obj.start_write(&w); // returns once the reader has gone
        assert_eq!(obj.state().raw(), 1);
        assert!(obj.is_write_locked(&w));
    });
}

#[test]
fn sequence_is_odd_exactly_while_write_locked() {
    let d = RefLockDomain::new(());
    for cycle in 0..3u64 {
        assert_eq!(d.sequence(), 2 * cycle);
        let w = d.write();
        assert_eq!(d.sequence(), 2 * cycle + 1);
        drop(w);
    }
}

#[test]
fn misuse_start_write_with_another_domains_guard() {
    let (a, b) = (RefLockDomain::new(()), RefLockDomain::new(()));
    let obj = attached(&a, 1);
    let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
        obj.start_write(&b.write());
    })));
    assert!(msg.contains("RefLock::start_write") && msg.contains("not attached"));
    assert_eq!(obj.state().raw(), 1, "the misuse changed the state");
}

#[test]
fn misuse_start_write_on_a_detached_object() {
    let a = RefLockDomain::new(());
    let obj = RefLock::new();
    let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
        obj.start_write(&a.write());
    })));
    assert!(msg.contains("RefLock::start_write"));
    assert!(obj.state().is_detached());
}

#[test]
fn misuse_attach_of_an_attached_object() {
    let (a, b) = (RefLockDomain::new(()), RefLockDomain::new(()));
    let obj = attached(&a, 1);
    for d in [&a, &b] {
        let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
            obj.attach(&d.write(), 2);
        })));
        assert!(msg.contains("RefLock::attach") && msg.contains("not detached"));
    }
    assert!(obj.try_read(&a, 1).is_ok(), "the misuse changed the object");
}

#[test]
fn misuse_detach_without_start_write() {
    let a = RefLockDomain::new(());
    let obj = attached(&a, 1);
    let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
        obj.detach(&a.write());
    })));
    assert!(msg.contains("RefLock::detach") && msg.contains("start_write"));
    assert_eq!(obj.state().raw(), 1);
}

#[test]
fn misuse_detach_with_another_domains_guard() {
    let (a, b) = (RefLockDomain::new(()), RefLockDomain::new(()));
    let obj = attached(&a, 1);
    let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
        obj.detach(&b.write());
    })));
    assert!(msg.contains("RefLock::detach") && msg.contains("not attached"));
    assert_eq!(obj.state().raw(), 1);
}

#[test]
fn errors_display() {
    assert_eq!(
        TryReadError::Reused.to_string(),
        "the object was reused for another domain or key"
    );
    let e: Box<dyn Error> = Box::new(TryReadError::Detached);
    assert_eq!(e.to_string(), "the object is detached");
}
