//! The lkdtm `REFCOUNT_*` cases (drivers/misc/lkdtm/refcount.c), each with
//! the outcome upstream accepts, plus the Rust-only additions.
use super::*;
use std::sync::Mutex as StdMutex;

const SAT: i32 = Refcount::SATURATED;

// ----- overflow: value == REFCOUNT_SATURATED -----

/// Zero amounts, against the kernel's definitions: `sub_and_test(0)` is
/// true iff `old > 0 && old == 0`, i.e. never; `add(0)` on zero is an
/// addition on a freed object; `add_not_zero(0)` only tests.
#[test]
fn zero_amounts_never_free_and_never_revive() {
    let live = Refcount::new(3);
    assert!(!live.sub_and_test(0));
    live.add(0);
    assert!(live.add_not_zero(0));
    assert_eq!(
        live.read(),
        3,
        "zero amounts change nothing on a live count"
    );

    let freed = Refcount::new(1);
    assert!(freed.dec_and_test());
    assert!(!freed.add_not_zero(0), "add_not_zero(0) on zero fails");
    assert_eq!(freed.read(), 0);
    assert!(
        !freed.sub_and_test(0),
        "sub_and_test(0) on zero must not free again"
    );
    assert_eq!(freed.read(), SAT, "and poisons the count");

    let freed = Refcount::new(0);
    freed.add(0);
    assert_eq!(freed.read(), SAT, "add(0) on zero is AddOnZero");
}

#[test]
fn refcount_inc_overflow() {
    let r = Refcount::new(Refcount::MAX);
    r.inc();
    assert_eq!(r.read(), SAT);
}

#[test]
fn refcount_add_overflow() {
    let r = Refcount::new(Refcount::MAX - 1);
    r.add(4);
    assert_eq!(r.read(), SAT);
}

#[test]
fn refcount_inc_not_zero_overflow() {
    let r = Refcount::new(Refcount::MAX);
    assert!(r.inc_not_zero(), "saturating inc_not_zero still succeeds");
    assert_eq!(r.read(), SAT);
}

#[test]
fn refcount_add_not_zero_overflow() {
    let r = Refcount::new(Refcount::MAX - 1);
    assert!(r.add_not_zero(6));
    assert_eq!(r.read(), SAT);
}

// ----- decrements to zero and below -----

#[test]
fn refcount_dec_zero() {
    // dec() hitting 0 leaks: saturated, never 0.
    let r = Refcount::new(2);
    r.dec();
    assert_eq!(r.read(), 1);
    r.dec();
    assert_eq!(r.read(), SAT);
}

#[test]
fn refcount_dec_negative() {
    let r = Refcount::new(0);
    r.dec();
    assert_eq!(r.read(), SAT);
}

#[test]
fn refcount_dec_and_test_negative() {
    let r = Refcount::new(0);
    assert!(!r.dec_and_test());
    assert_eq!(r.read(), SAT);
}

#[test]
fn refcount_sub_and_test_negative() {
    let r = Refcount::new(1);
    assert!(!r.sub_and_test(2));
    assert_eq!(r.read(), SAT);
}

// ----- increments from zero: use-after-free -----

#[test]
fn refcount_inc_zero() {
    let r = Refcount::new(0);
    assert!(!r.inc_not_zero(), "inc_not_zero on 0 must fail");
    assert_eq!(r.read(), 0, "and leave it at 0");
    r.inc();
    assert_eq!(r.read(), SAT);
}

#[test]
fn refcount_add_zero() {
    let r = Refcount::new(0);
    assert!(!r.add_not_zero(3));
    assert_eq!(r.read(), 0);
    r.add(3);
    assert_eq!(r.read(), SAT);
}

// ----- operations on a saturated counter: still saturated -----

fn saturated() -> Refcount {
    Refcount::new(SAT)
}

#[test]
fn refcount_inc_saturated() {
    let r = saturated();
    r.inc();
    assert_eq!(r.read(), SAT);
}

#[test]
fn refcount_dec_saturated() {
    let r = saturated();
    r.dec();
    assert_eq!(r.read(), SAT);
}

#[test]
fn refcount_add_saturated() {
    let r = saturated();
    r.add(8);
    assert_eq!(r.read(), SAT);
}

#[test]
fn refcount_inc_not_zero_saturated() {
    let r = saturated();
    assert!(r.inc_not_zero());
    assert_eq!(r.read(), SAT);
}

#[test]
fn refcount_add_not_zero_saturated() {
    let r = saturated();
    assert!(r.add_not_zero(7));
    assert_eq!(r.read(), SAT);
}

#[test]
fn refcount_dec_and_test_saturated() {
    let r = saturated();
    assert!(!r.dec_and_test(), "a saturated count never frees");
    assert_eq!(r.read(), SAT);
}

#[test]
fn refcount_sub_and_test_saturated() {
    let r = saturated();
    assert!(!r.sub_and_test(8));
    assert_eq!(r.read(), SAT);
}

// ----- beyond lkdtm -----

#[test]
fn saturated_never_reaches_zero_under_many_decrements() {
    let r = saturated();
    for _ in 0..1000 {
        assert!(!r.dec_and_test());
        assert!(!r.dec_if_one());
    }
    assert_eq!(r.read(), SAT);
}

#[test]
fn near_saturated_bad_values_resaturate() {
    // A racing op may leave SATURATED ± a little; the next op restores it.
    for v in [SAT - 3, SAT + 3, -1, i32::MIN] {
        let r = Refcount::new(v);
        assert!(!r.dec_and_test());
        assert_eq!(r.read(), SAT, "from {v:#x}");
        let r = Refcount::new(v);
        r.inc();
        assert_eq!(r.read(), SAT, "from {v:#x}");
    }
}

#[test]
fn limited_acquire_outcomes() {
    let r = Refcount::new(0);
    assert_eq!(
        r.inc_not_zero_limited_acquire(10),
        Err(0),
        "zero reported as 0"
    );
    let r = Refcount::new(10);
    assert_eq!(
        r.inc_not_zero_limited_acquire(10),
        Err(10),
        "over the limit reports old"
    );
    assert_eq!(r.read(), 10, "failure changes nothing");
    assert_eq!(r.inc_not_zero_limited_acquire(11), Ok(10));
    assert_eq!(r.read(), 11);
    // Saturated is not "over the limit": succeeds, stays saturated.
    let r = saturated();
    assert_eq!(r.inc_not_zero_limited_acquire(0x3fff_ffff), Ok(SAT));
    assert_eq!(r.read(), SAT);
    // The limit may be i32::MAX without wrapping the check.
    let r = Refcount::new(Refcount::MAX);
    assert_eq!(r.inc_not_zero_limited_acquire(i32::MAX), Err(i32::MAX));
}

#[test]
fn dec_if_one_only_from_one() {
    let r = Refcount::new(3);
    assert!(!r.dec_if_one());
    assert_eq!(r.read(), 3);
    let r = Refcount::new(0);
    assert!(!r.dec_if_one());
    assert_eq!(r.read(), 0);
    let r = Refcount::new(1);
    assert!(r.dec_if_one());
    assert_eq!(r.read(), 0);
}

#[test]
fn dec_not_one_outcomes() {
    let r = Refcount::new(3);
    assert!(r.dec_not_one());
    assert_eq!(r.read(), 2);
    let r = Refcount::new(1);
    assert!(!r.dec_not_one());
    assert_eq!(r.read(), 1);
    let r = saturated();
    assert!(r.dec_not_one());
    assert_eq!(r.read(), SAT);
    // Zero: reports an underflow, changes nothing, claims success.
    let r = Refcount::new(0);
    assert!(r.dec_not_one());
    assert_eq!(r.read(), 0);
}

#[test]
fn dec_and_lock_locks_only_at_zero() {
    let m = StdMutex::new(0u32);
    let r = Refcount::new(2);
    assert!(r.dec_and_lock(&m).is_none());
    assert_eq!(r.read(), 1);
    let g = r.dec_and_lock(&m).expect("last reference returns the lock");
    assert_eq!(r.read(), 0);
    assert!(m.try_lock().is_err(), "the lock is held by the guard");
    drop(g);
}

#[test]
fn dec_and_lock_survives_poison() {
    let m = StdMutex::new(());
    let _ = std::panic::catch_unwind(|| {
        let _g = m.lock().unwrap();
        panic!("poison the mutex");
    });
    assert!(m.is_poisoned());
    let r = Refcount::new(1);
    assert!(r.dec_and_lock(&m).is_some());
    assert_eq!(r.read(), 0);
}

#[test]
fn dec_and_lock_saturated_never_locks() {
    let m = StdMutex::new(());
    let r = saturated();
    let _held = m.lock().unwrap(); // would deadlock if dec_and_lock locked
    assert!(r.dec_and_lock(&m).is_none());
    assert_eq!(r.read(), SAT);
}

#[test]
#[should_panic(expected = "negative amount")]
fn negative_amount_panics() {
    Refcount::new(5).add(-1);
}

#[test]
fn debug_shows_saturation() {
    assert_eq!(format!("{:?}", Refcount::new(3)), "Refcount(3)");
    assert_eq!(
        format!("{:?}", saturated()),
        "Refcount(saturated: 0xc0000000)"
    );
}

#[test]
fn messages_match_upstream() {
    assert_eq!(
        Saturation::AddOverflow.to_string(),
        "refcount_t: saturated; leaking memory"
    );
    assert_eq!(
        Saturation::DecLeak.to_string(),
        "refcount_t: decrement hit 0; leaking memory"
    );
    assert_eq!(
        Saturation::SubUnderflow.to_string(),
        "refcount_t: underflow; use-after-free"
    );
}

#[test]
fn concurrent_get_put_frees_exactly_once() {
    use std::sync::atomic::AtomicUsize;
    let rounds = if cfg!(miri) { 100 } else { 10_000 };
    let freed = AtomicUsize::new(0);
    let r = Refcount::new(1);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..rounds {
                    assert!(r.inc_not_zero());
                    if r.dec_and_test() {
                        freed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(
        freed.load(Ordering::Relaxed),
        0,
        "the base reference keeps it alive"
    );
    assert!(r.dec_and_test());
}
