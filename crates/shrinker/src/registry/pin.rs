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
//! | **fast** (nobody unregistering or removing a group lately) | a *light pin*: a plain store of the shrinker's (the group's) address in the thread's own [`WalkerSlot`] | two plain stores to a line only this thread writes | must first close the gate: [`Gate::enter`] waits for one grace period |
//! | **slow** (an unregister or a group removal is running, or ended less than [`REOPEN_AFTER_QUIET`], 20 ms, ago) | the refcount (`try_get` / `put`), as in Linux 6.7 | two RMWs on the shrinker's (group's) line | waits for nothing but its own pins, as in Linux 6.7 |
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
//! Walker, per visit (`ShrinkerRegistry::shrink_global`):
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
//! 3. [`wait_for_light_pins`]: wait while any walker slot holds the node.
//! 4. Unlink, take the state back, free after a grace period.
//! 5. [`Gate::exit`]: the last one out arms a `call_rcu` that reopens the
//!    gate once nobody has entered for [`REOPEN_AFTER_QUIET`] (re-arming
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
use std::time::{Duration, Instant};

use shrinker_rcu::{read_lock, ReadGuard};

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
}

impl WalkerSlot {
    fn new() -> Self {
        WalkerSlot {
            pinned: AtomicPtr::new(ptr::null_mut()),
            group: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Is the slot free (no light pin held by an outer walk)?
    #[inline]
    pub(crate) fn is_free(&self) -> bool {
        // Relaxed (both): only this thread writes its slot.
        self.pinned.load(Ordering::Relaxed).is_null()
            && self.group.load(Ordering::Relaxed).is_null()
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
    wait_until_released(|s| &s.pinned, node);
}

/// Group removal step 2: wait until no walker holds a light pin on
/// `group`. The caller has entered the gate.
pub(crate) fn wait_for_light_group_pins<G>(group: *const G) {
    wait_until_released(|s| &s.group, group.cast());
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

// ---------------------------------------------------------------------------
// The gate

/// Whether walkers may take light pins (`rcu_sync`).
///
/// # States
///
/// | `fast` | `passed` | `users` | meaning |
/// |---|---|---|---|
/// | true | false | 0 | open: walkers take light pins |
/// | false | false | ≥ 1 | closing: a grace period since the close is not yet over |
/// | false | true | ≥ 1 | closed: unregisters proceed without waiting |
/// | false | true | 0 | closed, reopening armed: a `call_rcu` reopens it after a quiet spell unless someone enters first |
///
/// # Invariants
///
/// `fast` is true only when `users == 0`; `passed` implies `fast` was false
/// for a whole grace period that has ended.
pub(crate) struct Gate {
    fast: AtomicBool,
    state: Mutex<GateState>,
}

struct GateState {
    users: usize,
    passed: bool,
    /// A reopening callback is queued.
    armed: bool,
    /// Bumped by every `enter`: a reopening armed before it is stale.
    generation: u64,
    /// When the last user left (`exit` to zero users); a reopening is
    /// armed only by such an exit, so it is always set when one runs.
    quiet_since: Instant,
}

/// How long the gate must see no unregister before it reopens: a quiet
/// spell, not a gap between two unregisters of one churn.
///
/// The kernel's `rcu_sync` reopens one grace period after the last
/// writer. Here a grace period plus the callback worker's batching is
/// 1–2 ms, shorter than a scheduler time slice; with more runnable threads
/// than CPUs, a churning thread preempted for a slice or two let the gate
/// reopen, and the next unregister paid a grace period to close it again
/// (waiting, when a walker was preempted inside its read section, for that
/// walker to run) and then waited for its light pins: measured with 2
/// churning threads and a walker on 2 CPUs, 14–25 such closings per 300 ms,
/// 1–3 ms each, plus as many light-pin waits. 20 ms is several time slices;
/// a registry quiet for longer gets its light pins back.
#[cfg(not(loom))]
pub(crate) const REOPEN_AFTER_QUIET: Duration = Duration::from_millis(20);
/// Under loom, one reopening callback (no time passes in a model).
#[cfg(loom)]
pub(crate) const REOPEN_AFTER_QUIET: Duration = Duration::ZERO;

impl Gate {
    /// An open gate.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Gate {
            fast: AtomicBool::new(true),
            state: Mutex::new(GateState {
                users: 0,
                passed: false,
                armed: false,
                generation: 0,
                quiet_since: Instant::now(),
            }),
        })
    }

    /// Walker step 1: may this visit take a light pin? Call inside the read
    /// section that the pin's slot store is made in.
    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        // Relaxed: `enter`'s store is ordered against the walker's section
        // by the grace period that follows it (module doc).
        self.fast.load(Ordering::Relaxed)
    }

    /// Unregister step 1: close the gate, and wait (once per quiet spell)
    /// until no walker can still be taking a light pin it did not see
    /// closed.
    ///
    /// # Blocking
    ///
    /// For one grace period if the gate was open or still closing; not at
    /// all if it was closed.
    pub(crate) fn enter(self: &Arc<Self>) -> GateHold<'_> {
        self.enter_raw();
        GateHold(self)
    }

    fn enter_raw(&self) {
        let mut st = lock(&self.state);
        st.users += 1;
        st.generation = st.generation.wrapping_add(1);
        if st.passed {
            return;
        }
        // Relaxed: the grace period below orders it before every read
        // section it does not wait for (module doc).
        self.fast.store(false, Ordering::Relaxed);
        drop(st);
        shrinker_rcu::synchronize_rcu();
        lock(&self.state).passed = true;
    }

    /// Unregister step 5: the last user out arms the reopening.
    /// [`GateHold`]'s drop calls it, so that a panic between enter and exit
    /// cannot leave the gate closed for good.
    fn exit(self: &Arc<Self>) {
        let mut st = lock(&self.state);
        debug_assert!(st.users > 0, "Gate::exit without enter");
        st.users -= 1;
        if st.users == 0 {
            st.quiet_since = Instant::now();
        }
        if st.users == 0 && !st.armed {
            st.armed = true;
            let generation = st.generation;
            drop(st);
            self.arm(generation);
        }
    }

    fn arm(self: &Arc<Self>, generation: u64) {
        let gate = Arc::clone(self);
        shrinker_rcu::call_rcu(move || gate.reopen(generation));
    }

    /// The reopening callback: reopen if nobody entered since it was armed
    /// and the gate has been quiet for [`REOPEN_AFTER_QUIET`]; re-arm if
    /// someone entered and has left again, or if the spell is still short.
    fn reopen(self: &Arc<Self>, armed_at: u64) {
        let mut st = lock(&self.state);
        st.armed = false;
        if st.users != 0 {
            return; // the last user's `exit` arms again
        }
        let short = st.quiet_since.elapsed() < REOPEN_AFTER_QUIET;
        if st.generation != armed_at || short {
            st.armed = true;
            let generation = st.generation;
            drop(st);
            self.arm(generation);
            return;
        }
        st.passed = false;
        // Relaxed: opening needs no ordering; walkers that still see the
        // gate closed take refcount pins, which are always correct.
        self.fast.store(true, Ordering::Relaxed);
    }

    /// Is the gate open? (Tests.)
    #[cfg(test)]
    pub(crate) fn open_now(&self) -> bool {
        // Relaxed: a test's snapshot; the tests order it by their own joins
        // and `rcu_barrier`.
        self.fast.load(Ordering::Relaxed)
    }
}

/// A hold on a closed [`Gate`] (unregister steps 1–5, group removal):
/// while any hold lives, walkers take refcount pins. Dropping it (also
/// while unwinding) is [`Gate::exit`].
#[must_use = "the gate reopens when the hold drops"]
pub(crate) struct GateHold<'a>(&'a Arc<Gate>);

impl Drop for GateHold<'_> {
    fn drop(&mut self) {
        self.0.exit();
    }
}
