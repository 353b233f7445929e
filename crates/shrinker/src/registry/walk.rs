//! The global walk (`shrink_slab`, the numbered protocol in registry/mod.rs:
//! its fast phase under a walk pin, its refcount-pinned slow phase), and
//! what it shares with the group walk (`groups/walk.rs`): the pin of one
//! callout ([`CalloutPin`], [`pin_for_callout`]), and the misuse checks
//! that refuse to call out from inside an RCU read section or to
//! unregister from inside a callback.

use std::ptr::NonNull;

use shrinker_rcu::{read_lock, LightBarrier, ReadGuard};

use super::gate::Gate;
use super::ids::IdTable;
use super::object::ShrinkerObject;
use super::pin::{self, WalkPin, WalkerSlot};
use crate::error::ShrinkError;
use crate::group_id::GroupId;
use crate::info::ShrinkerId;
use crate::lifetime::frames;
use crate::shrink::ShrinkControl;
use crate::sync::{fence, AtomicPtr, Ordering};
use crate::Freed;
use std::sync::atomic::compiler_fence;
use std::sync::atomic::AtomicBool;

/// The stop flag of a walk that is never stopped
/// (`ShrinkerRegistry::shrink`): its fast phase does not test it.
pub(crate) static NEVER: AtomicBool = AtomicBool::new(false);

/// The walk: the numbered protocol in the module documentation of
/// registry/mod.rs: a walk pin and no read section while the gate is open
/// (registry/pin.rs, "Walk pins"), the refcount per shrinker while it is
/// closed.
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
        // The fast phase, while the gate is open: a walk pin, taken in this
        // read section, keeps every linked shrinker linked, and the walk
        // goes on with no read section and no pin per visit (registry/pin.rs,
        // "Walk pins"). It returns inside a new read section, at a live
        // shrinker or at the end, once it has seen the gate closed.
        if let Some(s) = slot {
            if gate.is_open() {
                s.begin_walk(gate);
                drop(guard);
                (p, guard) = fast_phase(p, s, gate, nid, priority, stop, &mut freed);
                continue;
            }
        }
        // SAFETY: `p` was read (Acquire) from the head or from the `next`
        // of a object we stood on inside the current read section (or
        // handed over by the fast phase inside it); objects are freed only
        // after a grace period that began after their unlink, so it is live
        // until `guard` ends (module doc, registry/object.rs).
        let object = unsafe { &*p };
        #[cfg(loom)]
        assert!(
            !object.freed.load(Ordering::SeqCst),
            "walker reached a freed shrinker"
        );
        // 2. Pin with the refcount. On failure (not registered yet, or
        // being unregistered) step over it, still inside the section.
        let Some(pin) = CalloutPin::try_ref(object) else {
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
        visit(object, nid, priority, &mut freed);
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

/// The fast phase of the global walk: from `p` (live, linked or not yet
/// registered), with the walk pin `slot` holds on the registry of `gate`
/// and no read section. Returns where the walk goes on, inside a read
/// section: the shrinker after the one whose callout found the gate
/// closed (live until the section ends), or null (the end of the list, or
/// `stop`).
#[inline]
fn fast_phase(
    p: *mut ShrinkerObject,
    slot: &WalkerSlot,
    gate: &Gate,
    nid: usize,
    priority: u8,
    stop: &AtomicBool,
    freed: &mut Freed,
) -> (*mut ShrinkerObject, ReadGuard) {
    let walk = FastWalk {
        slot,
        gate,
        nid,
        priority,
        stop,
    };
    // Node 0 (every walk of a single-node registry): every shrinker is
    // shrunk for node 0, NUMA-aware or not. Membarrier (every Linux since
    // 4.14): the light barrier is a compiler fence. `ShrinkerRegistry::shrink`
    // (`NEVER`): nobody can stop the walk, so it does not test the flag.
    let light = LightBarrier::new();
    let stoppable = !std::ptr::eq(stop, &NEVER);
    match (nid == 0, light.is_compiler_fence(), stoppable) {
        (true, true, true) => walk.run::<true, true, true>(p, light, freed),
        (true, true, false) => walk.run::<true, true, false>(p, light, freed),
        (true, false, true) => walk.run::<true, false, true>(p, light, freed),
        (true, false, false) => walk.run::<true, false, false>(p, light, freed),
        (false, true, true) => walk.run::<false, true, true>(p, light, freed),
        (false, true, false) => walk.run::<false, true, false>(p, light, freed),
        (false, false, true) => walk.run::<false, false, true>(p, light, freed),
        (false, false, false) => walk.run::<false, false, false>(p, light, freed),
    }
}

/// What a fast phase walks with.
struct FastWalk<'a> {
    slot: &'a WalkerSlot,
    gate: &'a Gate,
    nid: usize,
    priority: u8,
    stop: &'a AtomicBool,
}

impl FastWalk<'_> {
    /// The loop of [`fast_phase`]; `NODE_0`: `nid` is 0; `COMPILER_FENCE`:
    /// `light` is a compiler fence only; `STOPPABLE`: `stop` may be set.
    ///
    /// Out of line, one copy per case: its loop gets the registers to
    /// itself and tests neither case per visit. One [`ShrinkControl`]
    /// serves every visit (the engine leaves it as it found it): only its
    /// node changes, and only for a walk of another node.
    #[inline(never)]
    fn run<const NODE_0: bool, const COMPILER_FENCE: bool, const STOPPABLE: bool>(
        &self,
        mut p: *mut ShrinkerObject,
        light: LightBarrier,
        freed: &mut Freed,
    ) -> (*mut ShrinkerObject, ReadGuard) {
        // Lets the walk pin go if a panic unwinds through the walk
        // (anything outside the caught callback): unregister must never
        // wait for it.
        let hold = WalkHold(self.slot);
        let mut sc = ShrinkControl::new(0, GroupId::ROOT);
        loop {
            // Relaxed (`stop`): as in the slow phase.
            if p.is_null() || (STOPPABLE && self.stop.load(Ordering::Relaxed)) {
                // Null is the end whatever `p` was: a stopped walk does
                // not visit it.
                drop(hold);
                return (std::ptr::null_mut(), read_lock());
            }
            // SAFETY: `p` is the head, read (Acquire) inside the read
            // section that took the walk pin, or the `next` of a linked
            // object read since, after a gate check that saw the gate open
            // (or reopened, with the unlinks before it: Acquire) with no
            // callout in between. Either way no unregister of
            // another thread has got past `wait_for_walkers` since (it
            // needs this slot calling out, or let go), and an unlink made
            // by this thread from a callback came before that read in
            // program order. So `p` is linked, hence allocated
            // (registry/pin.rs, "Walk pins").
            let object = unsafe { &*p };
            #[cfg(loom)]
            assert!(
                !object.freed.load(Ordering::SeqCst),
                "a fast walk reached a freed shrinker"
            );
            // Step 2's check: skip a shrinker that is not registered yet,
            // or whose unregister has dropped the initial reference.
            if object.refs.read() != 0 {
                // Acquire: pairs with `register`'s `activate` (Release), as
                // `try_get`'s Acquire does.
                fence(Ordering::Acquire);
                self.slot.enter_callout(p);
                // (No prefetch of the successor here, unlike the slow
                // phase: with the visit this short, A/B runs with a fresh
                // and with a recycled object layout showed no gain from one
                // or two shrinkers ahead.)
                let node = if NODE_0 {
                    0
                } else {
                    let node = object.effective_node(self.nid);
                    sc.set_node(node);
                    node
                };
                let deferred = object.deferred.slot(node);
                let _ = object.shrink_with(&mut sc, self.priority, true, deferred, freed);
                self.slot.leave_callout();
                // The light half of the store-buffering pair with
                // `wait_for_walkers`: either an unregister saw the mark
                // still set (and then this load sees its gate closed), or
                // it waits for this walk pin.
                if COMPILER_FENCE {
                    compiler_fence(Ordering::SeqCst);
                } else {
                    light.fence();
                }
                if !self.gate.still_open() {
                    // An unregister may have got past this walk pin during
                    // the callout: go on from a read section, entered
                    // while the light pin still keeps `object` linked.
                    let guard = read_lock();
                    drop(hold);
                    // Acquire: pairs with the Release link stores.
                    return (object.next.load(Ordering::Acquire), guard);
                }
            }
            // Acquire: pairs with the Release link stores.
            p = object.next.load(Ordering::Acquire);
        }
    }
}

/// The walk pin of a fast phase, let go on drop.
struct WalkHold<'a>(&'a WalkerSlot);

impl Drop for WalkHold<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.end_walk();
    }
}

/// Slow phase step 4: `do_shrink_slab` on `object`, pinned with its
/// refcount (so a frame marks the thread as inside it), for the root group.
#[inline(always)]
fn visit(object: &ShrinkerObject, nid: usize, priority: u8, freed: &mut Freed) {
    let deferred = object.deferred.slot(object.effective_node(nid));
    let _ = object.shrink_pinned(nid, GroupId::ROOT, priority, false, deferred, freed);
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
