//! The global walk (`shrink_slab`, the numbered protocol in registry/mod.rs), and
//! what it shares with the group walk (`groups/walk.rs`): the pin of one
//! callout ([`CalloutPin`], [`pin_for_callout`]), and the misuse checks
//! that refuse to call out from inside an RCU read section or to
//! unregister from inside a callback.

use std::ptr::NonNull;

use shrinker_rcu::read_lock;

use super::ids::IdTable;
use super::object::ShrinkerObject;
use super::pin::{self, Gate, WalkPin, WalkerSlot};
use crate::error::ShrinkError;
use crate::group_id::GroupId;
use crate::info::ShrinkerId;
use crate::lifetime::frames;
use crate::sync::{fence, AtomicPtr, Ordering};
use crate::Freed;
use std::sync::atomic::AtomicBool;

/// The walk: the numbered protocol in the module documentation, with a
/// light pin instead of the refcount while the gate is open (registry/pin.rs).
pub(crate) fn shrink_global(
    head: &AtomicPtr<ShrinkerObject>,
    gate: &Gate,
    nid: usize,
    priority: u8,
    stop: &AtomicBool,
) -> Freed {
    // `None` inside a nested walk or during thread teardown: refcount
    // pins only.
    pin::with_walker_slot(|slot| shrink_global_with(head, gate, slot, nid, priority, stop))
}

#[inline]
fn shrink_global_with(
    head: &AtomicPtr<ShrinkerObject>,
    gate: &Gate,
    slot: Option<&WalkerSlot>,
    nid: usize,
    priority: u8,
    stop: &AtomicBool,
) -> Freed {
    let mut freed = Freed::default();
    // 1.
    let mut guard = read_lock();
    // Acquire: pairs with the Release link stores in `link`/`unlink` (registry/mod.rs).
    let mut p = head.load(Ordering::Acquire);
    // Relaxed (`stop`): a request to stop soon, checked before each
    // shrinker (a reclaimer being dropped).
    while !p.is_null() && !stop.load(Ordering::Relaxed) {
        // SAFETY: `p` was read (Acquire) from the head or from the `next`
        // of a object we stood on inside the current read section; objects
        // are freed only after a grace period that began after their
        // unlink, so it is live until `guard` ends (module doc, registry/object.rs).
        let object = unsafe { &*p };
        #[cfg(loom)]
        assert!(
            !object.freed.load(Ordering::SeqCst),
            "walker reached a freed shrinker"
        );
        // 2. Pin: lightly if the gate is open (registry/pin.rs, walker steps 1-2),
        // else with the refcount. On failure (not registered yet, or
        // being unregistered) step over it, still inside the section.
        let Some(pin) = pin_for_callout(object, slot, gate) else {
            // Acquire: pairs with the Release link stores.
            p = object.next.load(Ordering::Acquire);
            continue;
        };
        // Warm the successor's line while the callbacks run: the walk is
        // a chain of dependent loads, and a list of thousands of shrinkers
        // does not fit in the L1/L2 cache. A prefetch never faults, and
        // the pointer is not used: `next` is read again at step 6.
        // Relaxed: a hint only.
        prefetch(object.next.load(Ordering::Relaxed));
        // 3. The pin keeps the object linked, hence allocated.
        drop(guard);
        // 4.
        let deferred = object.deferred.slot(object.effective_node(nid));
        let outcome = object.shrink_pinned(nid, GroupId::ROOT, priority, pin.is_light(), deferred);
        if outcome.scanned > 0 || outcome.freed > 0 || outcome.freed_bytes > 0 {
            freed = freed.saturating_add(object.account(&outcome));
        }
        // 5. Re-enter before unpinning.
        guard = read_lock();
        #[cfg(loom)]
        assert!(
            !object.freed.load(Ordering::SeqCst),
            "a pinned shrinker was freed"
        );
        pin.unpin(&guard);
        // 6. Acquire: pairs with the Release link stores.
        p = object.next.load(Ordering::Acquire);
        #[cfg(loom)]
        assert!(
            !object.freed.load(Ordering::SeqCst),
            "walker read `next` of a freed shrinker"
        );
    }
    drop(guard);
    freed
}

/// Pin the shrinker with `id`, run `f`, unpin (inside a read section).
#[track_caller]
pub(crate) fn with_pinned<R>(
    ids: &IdTable,
    id: ShrinkerId,
    f: impl FnOnce(&ShrinkerObject) -> R,
) -> Result<R, ShrinkError> {
    assert_not_in_read_section("a shrinker's count or scan by hand");
    let guard = read_lock();
    let p = ids.lookup(id.0, &guard);
    // SAFETY: a non-null slot names a object that is not freed before a
    // grace period that begins after the slot is cleared (registry/ids.rs), so
    // it is live until `guard` ends.
    let Some(pin) = unsafe { p.as_ref() }.and_then(CalloutPin::try_ref) else {
        return Err(ShrinkError::NoSuchShrinker { id });
    };
    drop(guard);
    let r = f(pin.target());
    pin.unpin(&read_lock()); // inside a section: see registry/object.rs
    Ok(r)
}

/// Refuse to run shrinker callbacks inside the caller's RCU read section
/// (the `Shrink` contract lets callbacks block and synchronize).
#[inline]
#[track_caller]
pub(crate) fn assert_not_in_read_section(what: &str) {
    if shrinker_rcu::in_read_section() {
        in_read_section_failed(what);
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn in_read_section_failed(what: &str) -> ! {
    panic!(
        "{what} called inside an RCU read-side section: the shrinkers' callbacks would run \
         inside it, and a callback that waits for a grace period (or for a lock held by a \
         thread that does) would wait for the caller's own section: deadlock; leave the read \
         section first"
    )
}

/// Ask the CPU to bring `p`'s cache line in (no effect where unsupported).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: `_mm_prefetch` is a hint: it never faults and has no effect
    // on memory, whatever the address (SSE is part of the x86_64 baseline).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}

/// A shrinker pinned across one callout (walker steps 2–5): a
/// [`WalkPin`] on its object.
pub(crate) type CalloutPin<'a> = WalkPin<'a, ShrinkerObject>;

impl<'a> CalloutPin<'a> {
    /// Take a reference on `object` (`try_get`); `None` if it is not callable
    /// (not registered yet, or being unregistered). The caller is inside a
    /// read section in which `object` is live.
    #[inline]
    pub(crate) fn try_ref(object: &'a ShrinkerObject) -> Option<Self> {
        // `then`, not `then_some`: a pin built eagerly for a failed
        // `try_get` would be dropped, and its drop puts a reference.
        object.try_get().then(|| WalkPin::by_ref(object))
    }
}

/// Walker step 2, shared by the global walk and the group walk: pin `object`
/// for a callout, lightly if `slot` is free and the gate is open (registry/pin.rs,
/// walker steps 1-2), else with `try_get`. `None`: the shrinker is not
/// callable (not registered yet, or being unregistered).
///
/// The caller is inside a read section in which `object` is live (found on
/// the list or in the id table).
#[inline]
pub(crate) fn pin_for_callout<'a>(
    object: &'a ShrinkerObject,
    slot: Option<&'a WalkerSlot>,
    gate: &Gate,
) -> Option<CalloutPin<'a>> {
    match slot {
        Some(s) if gate.is_open() => {
            s.pin(object);
            if object.refs.read() == 0 {
                // Not registered yet (or, with the gate open, already gone).
                s.unpin();
                return None;
            }
            // Acquire: pairs with `register`'s `activate` (Release), as
            // `try_get`'s Acquire does.
            fence(Ordering::Acquire);
            Some(WalkPin::light(object, s))
        }
        _ => CalloutPin::try_ref(object),
    }
}

/// Is the calling thread inside a callback of `object`? (For unregister.)
pub(crate) fn inside_callback_of(object: NonNull<ShrinkerObject>) -> bool {
    pin::holds_light_pin(object.as_ptr()) || frames::is_inside(object.as_ptr())
}
