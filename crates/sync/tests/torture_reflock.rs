//! The address-space example (`examples/address_space.rs`) as a torture
//! test: fault-like readers against a mapping writer, with ranges recycled
//! across address spaces and a short-lived address space created and
//! destroyed throughout.
//! Every range a reader locks must be attached to the address space it asked,
//! contain the address, and be consistent (no torn or poisoned fields).
//! Sized by writer rounds, capped in time; smaller under sanitizers.

#[path = "../examples/address_space.rs"]
mod address_space;

use address_space::{AddressSpace, MapError, Path, RangeCache, PAGE};
use std::time::Duration;

fn sanitized() -> bool {
    cfg!(shrinker_sanitize) || std::env::var_os("SHRINKER_SANITIZE").is_some()
}

#[test]
fn every_locked_range_is_attached_consistent_and_the_one_asked_for() {
    let (rounds, cap) = if sanitized() {
        (50_000, Duration::from_secs(2))
    } else {
        (200_000, Duration::from_secs(3))
    };
    let report = address_space::stress(2, rounds, cap);
    assert!(report.rounds > 0, "the writer never ran: {report:?}");
    assert!(
        report.fast > 0,
        "no lookup took the fast path, nothing was checked: {report:?}"
    );
}

#[test]
fn both_paths_find_a_range_and_see_a_protect_once_its_cycle_ends() {
    let cache = RangeCache::new(4);
    let space = AddressSpace::new(&cache);
    space.map(0, 4 * PAGE, 1).unwrap();
    let g = space.lock_range(PAGE).expect("mapped");
    assert_eq!((g.path, g.prot()), (Path::Fast, 1));
    drop(g);
    assert!(space.protect(0, 3));
    let g = space.lock_range_under_rcu(PAGE).expect("unlocked again");
    assert_eq!(g.prot(), 3);
    let big = space.lock_range_locked(PAGE).expect("mapped");
    assert_eq!(
        (big.path, big.start(), big.end()),
        (Path::Fallback, 0, 4 * PAGE)
    );
    assert!(space.lock_range(4 * PAGE).is_none());
}

#[test]
fn unmapped_ranges_are_recycled_and_never_found_through_a_stale_index() {
    let cache = RangeCache::new(1);
    let a = AddressSpace::new(&cache);
    let b = AddressSpace::new(&cache);
    a.map(0, PAGE, 1).unwrap();
    assert_eq!(b.map(0, PAGE, 1), Err(MapError::NoMemory));
    assert!(a.unmap(0));
    // The one slot now serves b; a finds nothing, b finds its own range.
    b.map(0, PAGE, 2).unwrap();
    assert!(a.lock_range(0).is_none());
    let g = b.lock_range(0).expect("b's range");
    assert_eq!((g.asid(), g.prot()), (b.id(), 2));
    drop(g);
    drop(b); // exit_mmap gives the slot back
    a.map(0, PAGE, 3).unwrap();
    assert_eq!(a.lock_range(0).map(|g| g.prot()), Some(3));
    assert_eq!(a.map(0, PAGE, 1), Err(MapError::Overlap));
}
