//! Light pins, and the gate that lets walkers use them only while nobody
//! unregisters; and [`WalkPin`], the guard a walk holds either form of pin
//! in (on a shrinker object for a callout, on a group's data for a group
//! walk).
//!
//! # Why
//!
//! The 6.7 walk pins every shrinker it visits with two atomic
//! read-modify-writes on the shrinker's refcount (`try_get`, `put`). On a
//! machine where a locked RMW costs 6–8 ns that is most of a visit to a
//! cheap shrinker: a quiet walk over 4,000 shrinkers cost 3.6–4.3× the
//! pre-6.7 rwlock walk, which pays one lock per *walk*. The refcount exists
//! for one reader only: `unregister`, which must know when the last call
//! into its shrinker has returned. While nobody unregisters, nobody reads it.
//!
//! So the pin has two forms, and a per-registry [`Gate`] (the kernel's
//! `rcu_sync`, which `percpu_rw_semaphore` uses for the same trade) says
//! which one walkers may take:
//!
//! | gate | walker pins with | cost per visit | unregister (and `remove_group`) |
//! |---|---|---|---|
//! | **fast** (nobody unregistering or removing a group lately) | the global walk: one *walk pin* on the registry for the whole walk ("Walk pins" below); the group walk: a *light pin*, a plain store of the shrinker's (the group's) address in the thread's own [`WalkerSlot`] | walk pin: a load of the gate and a plain store, no read section; light pin: two plain stores to a line only this thread writes | must first close the gate: [`Gate::enter`] waits for one grace period, then for walkers to let their walk pins go |
//! | **slow** (an unregister or a group removal is running, or ended less than [`REOPEN_AFTER_QUIET`](super::gate::REOPEN_AFTER_QUIET), 20 ms, ago) | the refcount (`try_get` / `put`), as in Linux 6.7 | two RMWs on the shrinker's (group's) line | waits for nothing but its own pins, as in Linux 6.7 |
//!
//! Under register or group churn the gate stays slow (each `exit` restarts
//! the quiet spell it needs to reopen), so unregister and group removal cost
//! what they cost before and wait for no grace period, and walks take
//! refcount pins; a quiet registry walks at nearly the cost of a locked
//! list. Only the first unregister or removal after a quiet spell pays one
//! grace period.
//!
//! # The protocol
//!
//! Walker with a light pin, per visit (the group walk, `groups/walk.rs`;
//! the global walk takes a walk pin instead, "Walk pins" below):
//!
//! 1. Inside a read section: load the gate (`fast`).
//! 2. Fast: store the node's address in this thread's slot, then check the
//!    node's refcount is not zero (registration finished; Acquire).
//! 3. Leave the section; call out; re-enter.
//! 4. Store null in the slot (Release), still inside the section; read
//!    `next`.
//!
//! Unregister (`registry/handles.rs`):
//!
//! 1. [`Gate::enter`]: unless the gate is already slow and a grace period
//!    has passed since it closed, store `fast = false` and `synchronize_rcu`.
//! 2. Put the initial reference and wait for refcount pins (Linux 6.7).
//! 3. [`wait_for_walkers`]: wait while another thread's slot holds a walk
//!    pin on the registry; then [`wait_for_light_pins`]: wait while any
//!    walker slot holds the node.
//! 4. Unlink, take the state back, free after a grace period.
//! 5. [`Gate::exit`]: the last one out arms a `call_rcu` that reopens the
//!    gate once nobody has entered for [`REOPEN_AFTER_QUIET`](super::gate::REOPEN_AFTER_QUIET) (re-arming
//!    itself until then).
//!
//! # Why step 3 sees every light pin
//!
//! Walker steps 1–2 happen inside one read section `R`. Unregister step 1
//! stores `fast = false` and then waits for a grace period `G`. By the
//! fundamental law of RCU, either `R` ends before `G` does — and then the
//! slot store of step 2 happens-before the end of `G`, so step 3, which
//! runs after `G`, reads it (or a later value of that slot) — or `R` began
//! after `G` began, and then `R` sees `fast == false` and takes a refcount
//! pin instead, which step 2 waits for. No light pin is taken after `G`,
//! because the gate stays closed while any unregister is between `enter` and
//! `exit`. The slot's Release clear (walker step 4) pairs with the Acquire
//! load in step 3, so every access the callout made happens-before the
//! owner takes the state back.
//!
//! The node stays linked while a light pin holds it (step 3 precedes the
//! unlink), and the walker clears the slot inside a read section, so the
//! node's grace period (after the unlink) cannot end before the walker has
//! read `next`: the same argument as for `put` in registry/object.rs.
//!
//! A light pin is never taken by a nested walk (a callback that shrinks):
//! the thread's slot is busy (either field set), so the inner walk uses
//! refcount pins.
//!
//! # Walk pins
//!
//! A light pin still costs the global walk a read section left and
//! re-entered around every callout, and a pin and an unpin: a third of a
//! visit to a cheap shrinker. So while the gate is open the global walk
//! (`registry/walk.rs`, its *fast phase*) pins the whole *registry* instead,
//! with no read section: the *walk pin*, the slot's third field, names the
//! registry's gate. This is `percpu_rw_semaphore`'s reader side for the
//! walk, except that an unregister never waits for another shrinker's
//! callback: only for each walker to reach its next callout.
//!
//! Walker (fast phase):
//!
//! 1. Inside a read section, load the gate (Acquire); if open, store the
//!    gate in `walking` (`begin_walk`) and leave the section.
//! 2. Per shrinker `p` reached through the list: skip it if its count is
//!    zero; else store `p` in `pinned` (a light pin on it) and set
//!    `in_callout` (Release, `enter_callout`), call out, clear `in_callout`
//!    (Release, `leave_callout`: the mark goes, the light pin on `p`
//!    stays).
//! 3. Light barrier (a compiler fence with membarrier), then load the gate
//!    (Acquire). Open: read `p`'s `next` and go on at 2. Closed: enter a
//!    read section, clear both fields (Release, `end_walk`), read `next`
//!    inside it and go on with refcount pins.
//! 4. At the end of the list, `end_walk`.
//!
//! Unregister, after [`Gate::enter`] (its closing store) and its refcount
//! wait, [`wait_for_walkers`]: list the other threads' slots whose
//! `walking` names this gate; if any, a heavy barrier (membarrier); then
//! wait until each lets go or shows `in_callout` (Acquire). Then
//! [`wait_for_light_pins`], then unlink.
//!
//! **Why a walker never reaches a freed shrinker.**
//!
//! * *No unlink gets past a walker between callouts.* The walk pin is
//!   taken in a read section that saw the gate open, so by the argument of
//!   step 3 above an unregister that closes the gate later lists it; one
//!   that found the gate already closed comes after the one that closed it
//!   (the gate mutex), which listed it. An unregister then waits while the
//!   mark is clear, so it unlinks nothing while the walker reads links and
//!   counts between two callouts; `enter_callout`'s Release makes those
//!   reads happen-before the unlink.
//! * *A walker that a waiter let through sees the gate closed after its
//!   callout.* Store-buffering: the walker stores (clears the mark), light
//!   barrier, loads the gate; unregister stores (closes the gate), heavy
//!   barrier, loads the mark. They cannot both read the old value: a waiter
//!   that saw the mark set makes the walker's gate load after the callout
//!   read "closed" — or a reopening since, whose Release store follows
//!   every unlink of the waiters it let through (they `exit` after their
//!   unlink, under the gate mutex the reopening takes), and the Acquire
//!   load then sees those unlinks when it reads `next`. (The loom model
//!   `walk_pin_taken_as_the_gate_reopens` found the reopening case with a
//!   Relaxed load.) A walker that sees it closed enters a read section
//!   while its light pin still keeps `p` linked, and `p` and its successor
//!   stay allocated until the section ends.
//! * *Every unlink before the walk pin was taken is visible to the walk.*
//!   The gate reopens only after each unregister's `exit`, which follows
//!   its unlink; the walker's Acquire load of the open gate pairs with the
//!   reopening's Release store.
//!
//! **Its own thread.** A callback called by the fast phase may unregister
//! another shrinker of the same registry. That unregister finds its own
//! thread's slot in a callout, so it does not wait for it (it would wait
//! for itself), and after the callout the walker reads `next` in program
//! order after the unlink. A callback unregistering its *own* shrinker
//! still panics: `pinned` names the shrinker being called.
//!
//! **What it costs unregister.** The first unregister after a quiet spell
//! waits, besides its grace period, until each walker of the registry is in
//! a callout or done: never for a callback to return (the liveness test
//! `blocked_scan_blocks_only_its_own_unregister` blocks one forever). Under
//! churn the gate stays closed, walkers take refcount pins, and the list
//! shows no walk pin, so no heavy barrier is paid.
//!
//! # Light group pins
//!
//! A group walk (groups/walk.rs) pins the *group* for its whole length, so that
//! `remove_group` can wait for it before moving the group's deferred
//! counts and freeing its units. The refcount pin is two RMWs on the
//! group's line per group shrunk, and shrinking one group of thousands is
//! a short walk (usually one populated shrinker), so they are a large share
//! of its cost. The same gate gives groups a light pin: the slot's second
//! field names the group being walked.
//!
//! * Walker: inside the read section that found the group published, if
//!   the gate is open, store the group in the slot (`pin_group`), else
//!   `try_get` its refcount. At the end, inside a read section, clear the
//!   slot with Release (`unpin_group`) or put the reference.
//! * `remove_group`: [`Gate::enter`] *before* unpublishing; drop the
//!   initial reference and wait for refcount pins; then
//!   [`wait_for_light_group_pins`]; [`Gate::exit`] when done.
//!
//! The proof is the one above with "published" for "registered": a
//! walker's read section that saw the gate open ends before the grace
//! period of `enter` does, so its slot store is visible to the scan, which
//! runs after it; a section that began later sees the gate closed and
//! takes the refcount. Unpublishing comes after the grace period, so a
//! light pin is only ever taken on a group that removal has not begun to
//! take apart.
//!
//! # Waiting
//!
//! Step 3 polls (spin, then yield, then sleep with a back-off capped at
//! 1 ms): a light pin is held only across one callout, and finding one
//! needs an unregister to race a walk on the very same shrinker within one
//! grace period of the gate closing. A wake-up would cost the walker a
//! store-buffering fence on every visit, which is the cost light pins exist
//! to avoid.
//!
//! A light *group* pin is held for a whole walk of the group (every
//! callout to its populated shrinkers), so `remove_group` may poll for that
//! long, and then up to 1 ms more than a wake-up would take. Finding one
//! needs a removal to race a walk of the very same group within one grace
//! period of the gate closing; a group that is being removed is usually
//! one nobody reclaims from any more.

use std::ptr;
use std::sync::Arc;

use shrinker_rcu::{read_lock, ReadGuard};

use super::gate::Gate;
use super::object::ShrinkerObject;
use crate::sync::{lock, AtomicBool, AtomicPtr, Mutex, Ordering};

// ---------------------------------------------------------------------------
// Walker slots

/// One thread's light pins: the shrinker it is calling out to, and the
/// memory group it is walking (the address of its data, erased: groups sit
/// above the registry's internals); null when none.
///
/// Aligned to a cache line: only its thread writes it, and unregister and
/// group removal read it rarely, so it must not share a line with anything
/// hot.
#[repr(align(64))]
pub(crate) struct WalkerSlot {
    pinned: AtomicPtr<ShrinkerObject>,
    group: AtomicPtr<()>,
    /// The walk pin: the gate of the registry whose list this thread walks
    /// with no read section ("Walk pins" in the module doc); null when none.
    walking: AtomicPtr<Gate>,
    /// Set while the fast phase holding the walk pin calls out to the
    /// shrinker `pinned` names: an unregister need not wait for it then.
    in_callout: AtomicBool,
}

impl WalkerSlot {
    fn new() -> Self {
        WalkerSlot {
            pinned: AtomicPtr::new(ptr::null_mut()),
            group: AtomicPtr::new(ptr::null_mut()),
            walking: AtomicPtr::new(ptr::null_mut()),
            in_callout: AtomicBool::new(false),
        }
    }

    /// Is the slot free (no light pin or walk pin held by an outer walk)?
    #[inline]
    pub(crate) fn is_free(&self) -> bool {
        // Relaxed (all): only this thread writes its slot.
        self.pinned.load(Ordering::Relaxed).is_null()
            && self.group.load(Ordering::Relaxed).is_null()
            && self.walking.load(Ordering::Relaxed).is_null()
    }

    /// Global walk, fast phase step 1: take the walk pin on the registry of
    /// `gate`. The caller is inside the read section in which
    /// [`Gate::is_open`] returned true ("Walk pins" in the module doc).
    #[inline]
    pub(crate) fn begin_walk(&self, gate: &Gate) {
        // Relaxed: ordered before unregister's scan by the read section it
        // runs in and the grace period of `Gate::enter`, as `pin`.
        self.walking
            .store(ptr::from_ref(gate).cast_mut(), Ordering::Relaxed);
    }

    /// Global walk, fast phase: call out to `node`: a light pin on it, and
    /// the mark that lets an unregister stop waiting for this walk pin
    /// ("Walk pins" in the module doc).
    #[inline]
    pub(crate) fn enter_callout(&self, node: *const ShrinkerObject) {
        // Release: it also drops the light pin on the shrinker called
        // before: that callout happens-before an unregister of it that
        // sees the pin moved (Acquire).
        self.pinned.store(node.cast_mut(), Ordering::Release);
        // Release: the walk's reads of the list so far, and the light pin,
        // happen-before an unregister that sees the mark and unlinks.
        self.in_callout.store(true, Ordering::Release);
    }

    /// Global walk, fast phase: the callout returned. The slot keeps the
    /// light pin, without the mark; the caller then executes its light
    /// barrier and checks the gate.
    #[inline]
    pub(crate) fn leave_callout(&self) {
        // Release: the store-buffering pair's store (module doc), after
        // the callout's accesses (the light pin's own release is
        // `end_walk`'s or the next `enter_callout`'s).
        self.in_callout.store(false, Ordering::Release);
    }

    /// Drop the walk pin and the light pin (end of the fast phase). The
    /// caller is inside a read section, unless the walk is over.
    #[inline]
    pub(crate) fn end_walk(&self) {
        // Release (both): pair with the Acquire loads in
        // `wait_for_walkers` and `wait_for_light_pins`: every access of the
        // fast phase happens-before the unlink that follows the wait.
        self.pinned.store(ptr::null_mut(), Ordering::Release);
        self.walking.store(ptr::null_mut(), Ordering::Release);
    }

    /// Walker step 2: take a light pin on `node`. The caller is inside a
    /// read section that observed the gate open.
    #[inline]
    pub(crate) fn pin(&self, node: *const ShrinkerObject) {
        // Relaxed: ordered before unregister's scan by the read section it
        // runs in and the grace period of `Gate::enter` (module doc).
        self.pinned.store(node.cast_mut(), Ordering::Relaxed);
    }

    /// Walker step 4: drop the light pin. The caller is inside a read
    /// section.
    #[inline]
    pub(crate) fn unpin(&self) {
        // Release: pairs with the Acquire load in `wait_for_light_pins`;
        // the callout's accesses happen-before the owner reclaims the state.
        self.pinned.store(ptr::null_mut(), Ordering::Release);
    }

    /// Group walk step 1: take a light pin on the group. The caller is
    /// inside a read section that found the group published and observed
    /// the gate open ("Light group pins" in the module doc).
    #[inline]
    pub(crate) fn pin_group<G>(&self, group: *const G) {
        // Relaxed: as `pin`: ordered before removal's scan by the read
        // section and the grace period of `Gate::enter`.
        self.group
            .store(group.cast::<()>().cast_mut(), Ordering::Relaxed);
    }

    /// Group walk step 7: drop the group's light pin, inside a read
    /// section.
    #[inline]
    pub(crate) fn unpin_group(&self) {
        // Release: pairs with the Acquire load in
        // `wait_for_light_group_pins`: the walk's accesses to the group's
        // units happen-before removal moves their deferred counts.
        self.group.store(ptr::null_mut(), Ordering::Release);
    }
}

/// What a walk pins: a shrinker object for one callout, or a group's data
/// for a group walk.
pub(crate) trait PinTarget {
    /// Drop a reference (the target's `LiveRef::put` with its completion).
    /// The caller is inside a read section.
    fn put(&self);
    /// Clear the slot's light pin on a target of this kind (Release).
    fn unpin_light(slot: &WalkerSlot);
}

impl PinTarget for ShrinkerObject {
    #[inline]
    fn put(&self) {
        ShrinkerObject::put(self);
    }

    #[inline]
    fn unpin_light(slot: &WalkerSlot) {
        slot.unpin();
    }
}

/// A target pinned across a callout or a walk: a light pin in this
/// thread's walker slot, or a reference.
///
/// Released by [`unpin`](Self::unpin) inside the walker's read section.
/// Dropped without it, because a panic is unwinding through the walk (a
/// `tracing` subscriber, a panic payload, anything outside the caught
/// callback), it re-enters a read section and releases the pin there, so
/// that unregister and group removal never wait for a pin nobody will
/// drop.
#[must_use = "dropping the pin releases it"]
pub(crate) struct WalkPin<'a, T: PinTarget> {
    target: &'a T,
    /// `Some`: a light pin in this slot; `None`: a reference.
    light: Option<&'a WalkerSlot>,
}

impl<'a, T: PinTarget> WalkPin<'a, T> {
    /// The light pin the caller has just stored in `slot` (a read section
    /// that saw the gate open).
    #[inline]
    pub(crate) fn light(target: &'a T, slot: &'a WalkerSlot) -> Self {
        WalkPin {
            target,
            light: Some(slot),
        }
    }

    /// The reference the caller's `try_get` has just taken.
    #[inline]
    pub(crate) fn by_ref(target: &'a T) -> Self {
        WalkPin {
            target,
            light: None,
        }
    }

    /// The pinned target.
    #[inline]
    pub(crate) fn target(&self) -> &'a T {
        self.target
    }

    /// Is this the thread's light pin (which already marks the thread as
    /// inside the target, for the misuse checks)?
    #[inline]
    pub(crate) fn is_light(&self) -> bool {
        self.light.is_some()
    }

    /// Drop the pin inside the caller's read section (registry/object.rs:
    /// "Why every `put` happens inside a read section").
    #[inline]
    pub(crate) fn unpin(self, _guard: &ReadGuard) {
        self.release();
        std::mem::forget(self);
    }

    #[inline]
    fn release(&self) {
        match self.light {
            Some(s) => T::unpin_light(s),
            None => self.target.put(),
        }
    }
}

impl<T: PinTarget> Drop for WalkPin<'_, T> {
    /// Only while unwinding (the walk's normal path consumes the pin with
    /// `unpin`): re-enter a read section first, as `unpin`'s caller does.
    #[cold]
    fn drop(&mut self) {
        let _guard = read_lock();
        self.release();
    }
}

/// Every live thread's slot (threads register on their first walk).
#[cfg(not(loom))]
static SLOTS: Mutex<Vec<Arc<WalkerSlot>>> = Mutex::new(Vec::new());

#[cfg(loom)]
loom::lazy_static! {
    static ref SLOTS: Mutex<Vec<Arc<WalkerSlot>>> = Mutex::new(Vec::new());
}

/// The thread's registration: removes the slot from [`SLOTS`] at exit.
struct Registration(Arc<WalkerSlot>);

impl Registration {
    fn new() -> Self {
        let slot = Arc::new(WalkerSlot::new());
        lock(&SLOTS).push(Arc::clone(&slot));
        Registration(slot)
    }
}

// Not under loom: loom runs thread-local destructors in an unspecified order
// that varies between executions, and a destructor taking a loom mutex makes
// the model nondeterministic. `SLOTS` is per execution there anyway.
#[cfg(not(loom))]
impl Drop for Registration {
    fn drop(&mut self) {
        let mut slots = lock(&SLOTS);
        if let Some(i) = slots.iter().position(|s| Arc::ptr_eq(s, &self.0)) {
            slots.swap_remove(i);
        }
    }
}

#[cfg(not(loom))]
std::thread_local! {
    static MINE: Registration = Registration::new();
}
#[cfg(loom)]
loom::thread_local! {
    static MINE: Registration = Registration::new();
}

/// Run a walk with this thread's slot, if it may take light pins: `None`
/// during thread teardown, or when an outer walk on this thread holds the
/// slot.
///
/// A closure rather than a returned `Arc`: cloning and dropping an `Arc`
/// are two locked read-modify-writes per walk, more than a light group pin
/// saves.
#[inline]
pub(crate) fn with_walker_slot<R>(f: impl FnOnce(Option<&WalkerSlot>) -> R) -> R {
    let mut f = Some(f);
    let r = MINE.try_with(|r| {
        let f = f.take().expect("called once");
        f(Some(&*r.0).filter(|s| s.is_free()))
    });
    match r {
        Ok(r) => r,
        // Torn down: `try_with` did not call the closure.
        Err(_) => (f.take().expect("not called yet"))(None),
    }
}

/// Does this thread hold a light pin on `node` (is it calling out to it
/// from a walk)? For unregister's misuse check.
pub(crate) fn holds_light_pin(node: *const ShrinkerObject) -> bool {
    // Relaxed: this thread's own slot.
    MINE.try_with(|r| ptr::eq(r.0.pinned.load(Ordering::Relaxed), node))
        .unwrap_or(false)
}

/// Does this thread hold a light pin on `group` (is a walk of it running
/// on this thread)? For `remove_group`'s misuse check.
pub(crate) fn holds_light_group_pin<G>(group: *const G) -> bool {
    // Relaxed: this thread's own slot.
    MINE.try_with(|r| ptr::eq(r.0.group.load(Ordering::Relaxed), group.cast()))
        .unwrap_or(false)
}

/// Unregister step 3: wait until no walker holds a light pin on `node`.
/// The caller has entered the gate.
pub(crate) fn wait_for_light_pins(node: *const ShrinkerObject) {
    // Acquire (both loads): pairs with `unpin`'s, `end_walk`'s and the next
    // `enter_callout`'s Release: a slot already clear needs no wait, and
    // the callout must happen-before us.
    let holds = |s: &WalkerSlot| ptr::eq(s.pinned.load(Ordering::Acquire), node);
    let holders: Vec<Arc<WalkerSlot>> = lock(&SLOTS).iter().filter(|s| holds(s)).cloned().collect();
    for slot in holders {
        let mut backoff = Backoff::default();
        // No ABA: the gate is closed, and no fast phase still holds a walk
        // pin on this registry outside a callout (`wait_for_walkers` came
        // first), so no slot takes a new light pin on `node`.
        while holds(&slot) {
            backoff.wait();
        }
    }
}

/// Group removal step 2: wait until no walker holds a light pin on
/// `group`. The caller has entered the gate.
pub(crate) fn wait_for_light_group_pins<G>(group: *const G) {
    wait_until_released(|s| &s.group, group.cast());
}

/// Unregister step 2c: wait until no other thread's fast phase can still
/// reach a shrinker of the registry of `gate` without seeing the gate
/// closed: each slot that holds a walk pin on it must let it go or be
/// calling out (`in_callout`). The caller has entered the gate (its
/// closing store comes before).
///
/// Not until the walk ends, and not even until the callout returns: a
/// walker in a callout checks the gate after it (behind its light barrier)
/// and, seeing it closed as the heavy barrier here guarantees, goes on
/// from a read section. So an unregister never waits for another
/// shrinker's callback (a callback may block on anything, even on a lock
/// the unregistering thread holds), only for a walker to reach its next
/// callout or its end.
///
/// The calling thread's own walk pin, if any, is no exception: it is held
/// by a walk calling out to a shrinker whose callback is unregistering
/// another one, so its slot shows `in_callout`.
pub(crate) fn wait_for_walkers(gate: &Gate) {
    let target = ptr::from_ref(gate);
    // Acquire: pairs with `end_walk`'s Release (a walk pin already let go
    // needs no wait, and its walk must happen-before the unlink).
    let walking = |s: &WalkerSlot| ptr::eq(s.walking.load(Ordering::Acquire), target);
    let holders: Vec<Arc<WalkerSlot>> = lock(&SLOTS)
        .iter()
        .filter(|s| walking(s))
        .cloned()
        .collect();
    if holders.is_empty() {
        // The common case under churn: the gate has been closed for a
        // while, and every walk takes refcount pins.
        return;
    }
    // The heavy half of the store-buffering pair (module doc): either a
    // walker's post-callout gate load sees the closing store that precedes
    // this call, or its mark's clearing is visible to the loads below.
    shrinker_rcu::heavy_barrier();
    for slot in holders {
        let mut backoff = Backoff::default();
        // Acquire (`in_callout`): pairs with `enter_callout`'s Release: the
        // walk's reads of the list happen-before the unlink. No ABA: the
        // gate is closed, so this slot cannot take a new walk pin on this
        // registry.
        while walking(&slot) && !slot.in_callout.load(Ordering::Acquire) {
            backoff.wait();
        }
    }
}

/// Wait while any slot's `field` holds `target`.
fn wait_until_released<T>(field: impl Fn(&WalkerSlot) -> &AtomicPtr<T>, target: *const T) {
    let holders: Vec<Arc<WalkerSlot>> = lock(&SLOTS)
        .iter()
        // Acquire: pairs with `unpin`'s (`unpin_group`'s) Release: a slot
        // already cleared needs no wait, and its walk must still
        // happen-before us.
        .filter(|s| ptr::eq(field(s).load(Ordering::Acquire), target))
        .cloned()
        .collect();
    for slot in holders {
        let mut backoff = Backoff::default();
        // Acquire: as above. No ABA: the gate is closed, so this slot
        // cannot take a new light pin on `target`.
        while ptr::eq(field(&slot).load(Ordering::Acquire), target) {
            backoff.wait();
        }
    }
}

/// Spin, then yield, then sleep 10 µs doubling to 1 ms.
#[derive(Default)]
struct Backoff {
    step: u32,
}

impl Backoff {
    fn wait(&mut self) {
        #[cfg(loom)]
        {
            loom::thread::yield_now();
        }
        #[cfg(not(loom))]
        {
            match self.step {
                0..=63 => std::hint::spin_loop(),
                64..=127 => std::thread::yield_now(),
                n => {
                    let shift = (n - 128).min(7);
                    std::thread::sleep(std::time::Duration::from_micros(10 << shift));
                }
            }
        }
        self.step = self.step.saturating_add(1);
    }
}
