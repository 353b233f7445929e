//! [`PercpuRef`]: the kernel's `percpu_ref`, a reference count that touches
//! no shared cache line while the object is live and becomes one exact atomic
//! counter when it is killed.
//!
//! # The problem
//!
//! A hot object (a device, a queue, a cgroup) is pinned and unpinned by every
//! operation on every thread. With one shared counter, each get and put
//! bounces the counter's cache line between cores, and the object's
//! "reference count" becomes the scalability limit. Yet the count only has to
//! be *exact* at one moment: when the owner wants the object gone and waits
//! for the last user.
//!
//! `percpu_ref` splits the life in two. While live, each get/put adds to a
//! slot private to the caller, and nobody knows the total. To shut down, the
//! owner *kills* the ref: it flips it to atomic mode, waits one RCU grace
//! period (after which no thread can still be adding to a slot), folds the
//! slots into one atomic counter and drops its own initial reference. From
//! then on the count is exact, and the put that takes it to zero runs the
//! release callback.
//!
//! # Slots in userspace: per thread, measured
//!
//! The kernel's slots are per CPU, updated with preemption off. Userspace has
//! no preemption control, so a per-CPU slot needs an atomic read-modify-write
//! (the thread may migrate between `sched_getcpu()` and the update). A slot
//! owned by one thread does not: its owner is the only writer, so a `Relaxed`
//! load and store suffice (see the private `slot` module for the index
//! allocator and the overflow rule). Measured with `examples/slot_choice.rs`
//! on the 2-core development machine, shared with other jobs (load ≈ 2.5),
//! ns per get+put pair, each operation in its own `shrinker_rcu` read-side
//! section, median of 5 runs, two separate invocations:
//!
//! | slot choice | 1 thread | 2 threads |
//! |---|---|---|
//! | `Arc` clone+drop (reference) | 19–25 | 38–55 |
//! | one shared atomic counter | 26 | 37–63 |
//! | per CPU: glibc `sched_getcpu` (rseq) + atomic add | 20–21 | 39–47 |
//! | per thread: atomic add | 24–26 | 36–44 |
//! | per thread: owned, load + store | 9 | 18 |
//! | **`PercpuRef` (owned per-thread slots)** | **6–8** | **14–18** |
//!
//! Per-CPU slots save the cache-line bounce but keep the `lock`-prefixed
//! instruction, which dominates here; owned per-thread slots drop both, so
//! they are what this type uses. The costs:
//!
//! * Memory: each ref has `2 × available_parallelism` slots (8 to 128), each
//!   a `CachePadded` (128 bytes on x86-64). A thread whose index is past that
//!   uses the shared counter: correct, just not scalable.
//! * Get and put are not async-signal-safe: a signal handler that takes or
//!   drops a reference on the thread it interrupted could lose that thread's
//!   slot update. (Nor is entering an RCU read-side section.)
//!
//! # States
//!
//! The mode word holds two bits, changed only under the ref's switch mutex
//! and read locklessly by every get/put:
//!
//! | mode | `switching` | `count` | state |
//! |---|---|---|---|
//! | — | no | `BIAS` + unaccounted refs | **percpu live**: gets/puts go to slots |
//! | `ATOMIC` | yes | `BIAS` + unaccounted refs | **switching**: gets/puts go to `count`; the RCU callback has not summed the slots yet |
//! | `ATOMIC` | no | exact, ≥ 1 | **atomic live** |
//! | `ATOMIC \| DEAD` | either | exact (once summed), ≥ 1 | **dying**: `tryget_live` fails, `tryget` still succeeds |
//! | `ATOMIC \| DEAD` | no | 0 | **zero**: `release` has run; `reinit`/`resurrect` revive it |
//!
//! ```text
//!  new(NONE)            new(ATOMIC)               new(DEAD)
//!     |                     |                         |
//!     v                     v                         v
//! [percpu live] --switch_to_atomic--> [switching] --grace period, sum, confirm--> [atomic live]
//!     ^                                                                              |
//!     +--------- switch_to_percpu (ALLOW_REINIT, not forced atomic, not dead) -------+
//!
//! kill / kill_and_confirm (from either live state): set DEAD, switch to atomic
//! (confirm at once if already atomic), put the initial reference
//!     |
//!     v
//! [dying] --last put--> [zero]: release()
//!     |                    |
//!     +-- resurrect() -----+-- reinit() --> back to live (percpu if allowed)
//! ```
//!
//! # The bias
//!
//! While slots are in use, `count` carries `PERCPU_COUNT_BIAS` (2⁶³) plus the
//! references taken on it directly. Slots may individually go negative (a get
//! on one thread, the put on another); only their sum means anything. The
//! switch callback adds `sum − BIAS` in *one* atomic add: the bias keeps
//! `count` from reaching zero while references are still spread over the
//! slots, and removing it in the same add as the sum means there is no moment
//! where the count is exact but incomplete.
//!
//! The counter is modular, as the kernel's `atomic_long_t`: it does not
//! saturate. One call moves it by at most `isize::MAX` (larger `nr` panic
//! before any change), and `put_many(0)` is a no-op, so no single call can
//! turn a get into a put or re-run `release` on a zero count.
//!
//! # The switch to atomic, step by step
//!
//! 1. Under the switch mutex: if a switch is already in flight, chain the
//!    confirm to it and stop (it ends in atomic mode, which nothing can undo
//!    before it completes). Otherwise set `ATOMIC` (and `DEAD` for a kill),
//!    mark `switching`, take one reference for the switch itself ("put after
//!    confirmation").
//! 2. Outside the mutex: `call_rcu(switch_to_atomic_rcu)`.
//! 3. After the grace period, on the RCU worker: every get/put section that
//!    could have seen per-CPU mode has ended (the grace period's guarantee),
//!    and every later one sees `ATOMIC`. Sum the slots; add `sum − BIAS` to
//!    `count`.
//! 4. Run the confirm callback, then the chained ones: from here on every
//!    thread sees the ref in atomic mode (and dead, for a kill), so
//!    `tryget_live` fails.
//! 5. Under the mutex, once no chained confirm is left, clear `switching`;
//!    then wake anyone waiting for it and put the switch's own reference —
//!    which may be the last one and run `release`.
//!
//! # Callbacks
//!
//! `release` runs in the context of the last put: any thread, or the RCU
//! worker. `confirm` runs on the RCU worker, or synchronously inside
//! `kill_and_confirm`/`switch_to_atomic` when the ref is already atomic. Both
//! must not block for long (they hold up every other RCU callback). Neither
//! runs with any lock of this crate held, nor inside an RCU read-side
//! section. There are no implied grace periods between kill and release.
//!
//! # Waiting and asynchronous forms
//!
//! `kill`, `kill_and_confirm` and `switch_to_atomic` never wait: a call that
//! finds a switch to atomic in flight chains its confirm to it (the switch
//! runs it right after its own, before it ends). They work anywhere,
//! including inside an RCU callback and inside an RCU read-side section.
//! `switch_to_atomic_sync` waits for a grace period and the RCU worker;
//! `switch_to_percpu` and `resurrect` wait for a switch in flight (`reinit`
//! cannot find one: a zero count means the last switch has ended).
//! Waiting there would deadlock inside a read-side section (the grace period
//! waits for it) or inside an RCU callback (the switch completes in a
//! callback the worker cannot reach while it runs the caller), so they panic
//! there, naming the misuse, before changing anything:
//! `switch_to_atomic_sync` always, the other two when a switch is in
//! flight.
//!
//! # Ordering
//!
//! * The mode word is loaded with `Acquire` (the kernel's `READ_ONCE` plus
//!   address dependency; Rust has no consume). It pairs with the `Release`
//!   store in `switch_to_percpu`, so a get that sees per-CPU mode also sees
//!   the zeroed slots.
//! * Puts in atomic mode are `Release`; the put that reaches zero adds a
//!   `fence(Acquire)` before `release`, so every user's accesses
//!   happen-before `release`. Slot updates are ordered by the grace period
//!   instead: the end of each get/put section happens-before step 3, whose
//!   `Release` add heads the release sequence that the final put acquires.
//! * `tryget`/`tryget_live` promise no ordering for the caller's data, as
//!   upstream: usually the pointer through which the ref was found is the
//!   "initialised" flag. When the count itself is (the swap device of
//!   `examples/swap_device.rs`), follow a successful `tryget_live` with
//!   `fence(Acquire)`: it pairs with the `Release` in
//!   [`resurrect`](PercpuRef::resurrect) and [`reinit`](PercpuRef::reinit).

use crate::slot;
use crate::sync::{
    acquire_after_final_dec, Arc, AtomicIsize, AtomicUsize, Condvar, Mutex, MutexGuard, Ordering,
};
use crossbeam_utils::CachePadded;
use std::fmt;
use std::ops::BitOr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::AtomicBool as StdAtomicBool;
use std::sync::PoisonError;

/// Gets and puts go to `count`, not to the slots. Set by a switch to atomic
/// (step 1), cleared only by `switch_to_percpu`.
const ATOMIC_BIT: usize = 1 << 0;
/// Killed (or created dead): `tryget_live` fails. Only ever set together with
/// or after `ATOMIC_BIT`; cleared by `resurrect`/`reinit`.
const DEAD_BIT: usize = 1 << 1;

/// `PERCPU_COUNT_BIAS`: carried by `count` while slots may hold references.
const PERCPU_COUNT_BIAS: isize = isize::MIN;

/// A loaded mode word.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Mode(usize);

impl Mode {
    #[inline]
    fn is_percpu(self) -> bool {
        self.0 & ATOMIC_BIT == 0
    }
    #[inline]
    fn is_dead(self) -> bool {
        self.0 & DEAD_BIT != 0
    }
}

impl fmt::Debug for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.is_percpu(), self.is_dead()) {
            (true, false) => "percpu",
            (false, false) => "atomic",
            (_, true) => "atomic|dead",
        })
    }
}

/// How [`PercpuRef::new`] starts (`PERCPU_REF_INIT_*`, `PERCPU_REF_ALLOW_REINIT`).
///
/// Combine with `|`.
///
/// # Examples
///
/// ```
/// use shrinker_sync::InitFlags;
/// let flags = InitFlags::DEAD | InitFlags::ALLOW_REINIT;
/// assert!(flags.contains(InitFlags::DEAD));
/// assert!(!flags.contains(InitFlags::ATOMIC));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InitFlags(u8);

impl InitFlags {
    /// Per-CPU mode, count 1 (the initial reference).
    pub const NONE: Self = Self(0);
    /// Start in atomic mode, count 1, and stay atomic until
    /// [`PercpuRef::switch_to_percpu`] (`PERCPU_REF_INIT_ATOMIC`). Implies
    /// `ALLOW_REINIT`.
    pub const ATOMIC: Self = Self(1 << 0);
    /// Start dead: atomic mode, count 0, no initial reference
    /// (`PERCPU_REF_INIT_DEAD`). Must be revived with
    /// [`PercpuRef::reinit`] or [`PercpuRef::resurrect`] before use. Implies
    /// `ALLOW_REINIT`.
    pub const DEAD: Self = Self(1 << 1);
    /// Allow returning from atomic to per-CPU mode (`PERCPU_REF_ALLOW_REINIT`).
    /// Without it, once the ref goes atomic (kill or switch) it stays atomic
    /// for good: `switch_to_percpu`, `resurrect` and `reinit` then revive it
    /// in atomic mode and report the fact once.
    pub const ALLOW_REINIT: Self = Self(1 << 2);

    /// Whether every flag in `other` is set in `self`.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::InitFlags;
    /// assert!(InitFlags::ATOMIC.contains(InitFlags::NONE));
    /// ```
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for InitFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// A confirm callback (`percpu_ref_func_t *confirm_switch`).
type Confirm = Box<dyn FnOnce() + Send + 'static>;
/// The release callback (`percpu_ref_func_t *release`).
type Release = Box<dyn Fn() + Send + Sync + 'static>;

/// A per-CPU reference count with an exact, atomic shutdown
/// (`struct percpu_ref`).
///
/// Gets and puts are manual, as in the kernel: every `get`/successful
/// `tryget` must be matched by one `put`. They never block: each is a short
/// RCU read-side section around a slot or counter update (a thread's first
/// read-side section registers it with RCU, under a mutex, once). See the
/// [module documentation](self) for the state machine, the slot design and
/// the orderings.
///
/// # Invariants
///
/// * The mode word changes only under the switch mutex; `DEAD` implies
///   `ATOMIC` (or a switch to atomic in flight).
/// * While `switching` is set, exactly one `switch_to_atomic_rcu` callback is
///   queued, holding one reference of its own; confirms chained to it run
///   before it clears `switching`.
/// * In per-CPU mode `count` carries the bias, so it cannot reach zero.
///
/// # Examples
///
/// ```
/// use shrinker_sync::{Completion, InitFlags, PercpuRef};
/// use std::sync::Arc;
///
/// let released = Arc::new(Completion::new());
/// let r = {
///     let released = Arc::clone(&released);
///     PercpuRef::new(move || released.complete_all(), InitFlags::NONE)
/// };
///
/// r.get(); // cheap: a slot of this thread
/// assert!(r.tryget_live());
/// r.put();
///
/// r.kill(); // drops the initial reference; still one user
/// r.put(); // the last put runs release, after the switch to atomic
/// released.wait();
/// assert!(r.is_zero());
/// ```
pub struct PercpuRef {
    data: Arc<RefData>,
}

/// The shared state; the RCU callback holds its own `Arc` to it, so a switch
/// in flight outlives the `PercpuRef`.
struct RefData {
    /// `ATOMIC_BIT | DEAD_BIT`; see the state table in the module docs.
    /// Written only under `switch`.
    mode: AtomicUsize,
    /// The atomic counter: exact in atomic mode once the slots are summed;
    /// `PERCPU_COUNT_BIAS` + direct references in per-CPU mode.
    count: AtomicIsize,
    /// One slot per thread index; written in per-CPU mode by the owning
    /// thread only, read and zeroed by mode switches when no thread can be
    /// writing.
    slots: Box<[CachePadded<AtomicIsize>]>,
    release: Release,
    /// Mode-switch state (upstream: `percpu_ref_data`'s cold fields under the
    /// global `percpu_ref_switch_lock`; here one mutex per ref).
    switch: Mutex<SwitchState>,
    /// Signalled when `switching` clears (upstream: `percpu_ref_switch_waitq`).
    switched: Condvar,
}

struct SwitchState {
    /// Stay atomic even when live: set by `switch_to_atomic` and
    /// `InitFlags::ATOMIC`, cleared by `switch_to_percpu`.
    force_atomic: bool,
    /// Returning to per-CPU mode is allowed.
    allow_reinit: bool,
    /// A switch to atomic is in flight (upstream: `confirm_switch != NULL`).
    switching: bool,
    /// Confirms of asynchronous calls (`kill_and_confirm`, `switch_to_atomic`)
    /// that found a switch in flight: the in-flight switch runs them after
    /// its own, in order, before it clears `switching`. Empty unless
    /// `switching`.
    chained: Vec<Confirm>,
}

/// Work decided under the switch mutex and done after dropping it: queueing
/// an RCU callback may block on the RCU worker, and callbacks are user code.
#[must_use]
enum Pending {
    Nothing,
    /// The ref was already atomic: confirm at once.
    Confirm(Confirm),
    /// Step 2: queue the switch callback.
    QueueSwitch(Arc<RefData>, Option<Confirm>),
}

impl Pending {
    fn run(self) {
        match self {
            Pending::Nothing => {}
            Pending::Confirm(confirm) => confirm(),
            Pending::QueueSwitch(data, confirm) => {
                shrinker_rcu::call_rcu(move || RefData::switch_to_atomic_rcu(data, confirm));
            }
        }
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn panic_waiting_in_callback(caller: &str) -> ! {
    panic!(
        "{caller} called from inside an RCU callback must wait for a switch to atomic that \
         completes in an RCU callback: the callback worker would wait for itself. Use the \
         asynchronous forms there (switch_to_atomic, kill, kill_and_confirm)"
    )
}

#[cold]
#[inline(never)]
#[track_caller]
fn panic_waiting_in_read_section(caller: &str) -> ! {
    panic!(
        "{caller} inside an RCU read-side section would wait for a grace period that waits \
         for this section"
    )
}

/// One report per process for each bookkeeping bug the ref can detect.
#[cold]
fn report_once(latch: &StdAtomicBool, message: fmt::Arguments<'_>) {
    // Relaxed: a diagnostics latch.
    if !latch.swap(true, Ordering::Relaxed) {
        tracing::error!(target: "shrinker_sync::percpu_ref", "{message}");
    }
}

impl PercpuRef {
    /// A new ref holding its initial reference (unless `InitFlags::DEAD`);
    /// `release` runs each time the count drops to zero (`percpu_ref_init`).
    ///
    /// `release` may run on any thread that puts, or on the RCU worker; it must
    /// not block for long and must not wait for a mode switch of this ref.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::ATOMIC);
    /// assert!(!r.is_zero());
    /// let dead = PercpuRef::new(|| {}, InitFlags::DEAD);
    /// assert!(dead.is_zero() && dead.is_dying());
    /// ```
    #[must_use]
    pub fn new<F>(release: F, flags: InitFlags) -> Self
    where
        F: Fn() + Send + Sync + 'static,
    {
        let dead = flags.contains(InitFlags::DEAD);
        let atomic = dead || flags.contains(InitFlags::ATOMIC);
        let mut mode = 0;
        let mut count: isize = 0;
        if atomic {
            mode |= ATOMIC_BIT;
        } else {
            count = PERCPU_COUNT_BIAS;
        }
        if dead {
            mode |= DEAD_BIT;
        } else {
            count = count.wrapping_add(1);
        }
        let slots = (0..slot::nr_slots())
            .map(|_| CachePadded::new(AtomicIsize::new(0)))
            .collect();
        Self {
            data: Arc::new(RefData {
                mode: AtomicUsize::new(mode),
                count: AtomicIsize::new(count),
                slots,
                release: Box::new(release),
                switch: Mutex::new(SwitchState {
                    force_atomic: flags.contains(InitFlags::ATOMIC),
                    allow_reinit: atomic || flags.contains(InitFlags::ALLOW_REINIT),
                    switching: false,
                    chained: Vec::new(),
                }),
                switched: Condvar::new(),
            }),
        }
    }

    /// Takes a reference (`percpu_ref_get`).
    ///
    /// Valid on a ref that is live or dying; the caller must hold a reference
    /// or otherwise know the count cannot reach zero concurrently.
    ///
    /// # Ordering
    ///
    /// **Unordered** for the caller's data. The reference the caller already
    /// holds is what orders its accesses (as for `Arc::clone`).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// r.get();
    /// r.put();
    /// ```
    #[inline]
    pub fn get(&self) {
        self.data.get_many(1);
    }

    /// Takes `nr` references (`percpu_ref_get_many`); see [`get`](Self::get).
    /// `nr == 0` takes nothing.
    ///
    /// # Ordering
    ///
    /// **Unordered** for the caller's data.
    ///
    /// # Panics
    ///
    /// If `nr > isize::MAX`, before changing anything.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// r.get_many(3);
    /// r.put_many(3);
    /// ```
    #[inline]
    #[track_caller]
    pub fn get_many(&self, nr: usize) {
        self.data.get_many(nr);
    }

    /// Takes a reference unless the count is zero (`percpu_ref_tryget`).
    ///
    /// Succeeds while dying: "not freed yet" is all it checks. Use
    /// [`tryget_live`](Self::tryget_live) to refuse new users once killed.
    ///
    /// # Ordering
    ///
    /// **No ordering promised for the caller's data** on success (upstream
    /// parity; see the module docs for when to add `fence(Acquire)`).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::ATOMIC);
    /// assert!(r.tryget());
    /// r.put();
    /// ```
    #[inline]
    #[must_use = "a successful tryget takes a reference that must be put"]
    pub fn tryget(&self) -> bool {
        self.data.tryget_many(1, false)
    }

    /// Takes `nr` references unless the count is zero
    /// (`percpu_ref_tryget_many`); see [`tryget`](Self::tryget). With
    /// `nr == 0` it takes nothing and says whether the count is non-zero.
    ///
    /// # Ordering
    ///
    /// **No ordering promised for the caller's data** on success.
    ///
    /// # Panics
    ///
    /// If `nr > isize::MAX`, before changing anything.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// assert!(r.tryget_many(2));
    /// r.put_many(2);
    /// ```
    #[inline]
    #[must_use = "a successful tryget takes references that must be put"]
    #[track_caller]
    pub fn tryget_many(&self, nr: usize) -> bool {
        self.data.tryget_many(nr, false)
    }

    /// Takes a reference unless the ref is dead or zero
    /// (`percpu_ref_tryget_live`).
    ///
    /// After [`kill`](Self::kill) *returns* this may still succeed on threads
    /// that have not yet seen the kill; once the confirm callback of
    /// [`kill_and_confirm`](Self::kill_and_confirm) has run, it fails on
    /// every thread (for calls ordered after the confirm).
    ///
    /// # Ordering
    ///
    /// **No ordering promised for the caller's data** on success (upstream
    /// parity). If the count is the object's "initialised" flag, follow
    /// success with `std::sync::atomic::fence(Acquire)`, which pairs with the
    /// `Release` in [`resurrect`](Self::resurrect)/[`reinit`](Self::reinit);
    /// see `examples/swap_device.rs`.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// assert!(r.tryget_live());
    /// r.put();
    /// r.kill();
    /// assert!(!PercpuRef::new(|| {}, InitFlags::DEAD).tryget_live());
    /// ```
    #[inline]
    #[must_use = "a successful tryget_live takes a reference that must be put"]
    pub fn tryget_live(&self) -> bool {
        self.data.tryget_many(1, true)
    }

    /// Drops a reference (`percpu_ref_put`); the put that takes the count to
    /// zero runs `release`, after returning from its RCU read-side section.
    ///
    /// # Ordering
    ///
    /// **Release** for the caller's accesses: they happen-before `release`
    /// (through the grace period for a per-CPU put, through the `Release`
    /// decrement and the final `fence(Acquire)` for an atomic one).
    ///
    /// # Panics
    ///
    /// With `release`'s panic, if this put drops the last reference and
    /// `release` panics (the count is zero by then).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// r.get();
    /// r.put();
    /// ```
    #[inline]
    pub fn put(&self) {
        self.data.put_many(1);
    }

    /// Drops `nr` references (`percpu_ref_put_many`); see [`put`](Self::put).
    ///
    /// `nr == 0` drops nothing and never runs `release` (upstream's
    /// `atomic_long_sub_and_test(0, …)` on a zero count would run it again).
    ///
    /// # Ordering
    ///
    /// **Release** for the caller's accesses.
    ///
    /// # Panics
    ///
    /// If `nr > isize::MAX`, before changing anything; with `release`'s
    /// panic, as [`put`](Self::put).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::ATOMIC);
    /// r.get_many(4);
    /// r.put_many(4);
    /// ```
    #[inline]
    #[track_caller]
    pub fn put_many(&self, nr: usize) {
        self.data.put_many(nr);
    }

    /// Kills the ref: `tryget_live` starts failing, the count becomes exact
    /// after a grace period, and the initial reference is dropped
    /// (`percpu_ref_kill`).
    ///
    /// Call it exactly once per life. `release` runs when the last user puts,
    /// which may be inside this call. There is no implied grace period
    /// between kill and release.
    ///
    /// May be called anywhere, including inside an RCU callback (a `release`
    /// or `confirm` of another ref, a `call_rcu` closure) and inside an RCU
    /// read-side section.
    ///
    /// # Blocking
    ///
    /// Never waits: the switch to atomic completes after a grace period, on
    /// the RCU worker; if one is already in flight (after
    /// `switch_to_atomic`), the kill joins it. Takes the ref's switch mutex
    /// briefly.
    ///
    /// # Panics
    ///
    /// If the ref is already dead (killed twice, or created with
    /// `InitFlags::DEAD` and never revived), before any change. With
    /// `release`'s panic if it runs inside this call, after the kill is
    /// complete.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// r.kill();
    /// assert!(r.is_dying());
    /// ```
    #[track_caller]
    pub fn kill(&self) {
        RefData::kill(&self.data, None);
    }

    /// [`kill`](Self::kill), then `confirm` once every thread sees the ref
    /// dead (`percpu_ref_kill_and_confirm`).
    ///
    /// `confirm` runs on the RCU worker after the grace period, or inside this
    /// call if the ref was already atomic with no switch in flight. It runs
    /// before `release`. After it has run, every `tryget_live` ordered after
    /// it fails. If a switch to atomic was in flight, `confirm` runs right
    /// after that switch's own confirm, on the RCU worker.
    ///
    /// # Blocking
    ///
    /// As [`kill`](Self::kill).
    ///
    /// # Panics
    ///
    /// As [`kill`](Self::kill); and with `confirm`'s panic when it runs
    /// inside this call, after the kill is complete (the initial reference
    /// dropped, `release` run if it was the last).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{Completion, InitFlags, PercpuRef};
    /// use std::sync::Arc;
    ///
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// r.get(); // a user still holds it
    /// let confirmed = Arc::new(Completion::new());
    /// let c = Arc::clone(&confirmed);
    /// r.kill_and_confirm(move || c.complete_all());
    /// confirmed.wait();
    /// assert!(!r.tryget_live(), "dead on every thread after confirm");
    /// r.put();
    /// ```
    #[track_caller]
    pub fn kill_and_confirm<F>(&self, confirm: F)
    where
        F: FnOnce() + Send + 'static,
    {
        RefData::kill(&self.data, Some(Box::new(confirm)));
    }

    /// Switches to atomic mode and keeps the ref there until
    /// [`switch_to_percpu`](Self::switch_to_percpu)
    /// (`percpu_ref_switch_to_atomic`); `confirm` runs once every thread
    /// uses the atomic counter.
    ///
    /// The setting survives kill and reinit. `confirm` runs on the RCU worker
    /// after the grace period; inside this call if the ref is already atomic
    /// with no switch in flight; after the in-flight switch's confirms if
    /// there is one. Like [`kill`](Self::kill), it may be called inside an
    /// RCU callback or read-side section.
    ///
    /// # Blocking
    ///
    /// Never waits (the switch mutex is taken briefly).
    ///
    /// # Panics
    ///
    /// With `confirm`'s panic when it runs inside this call (the switch is
    /// complete by then).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::ATOMIC);
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// r.switch_to_atomic(move || tx.send(()).unwrap()); // already atomic: confirms at once
    /// rx.recv().unwrap();
    /// ```
    pub fn switch_to_atomic<F>(&self, confirm: F)
    where
        F: FnOnce() + Send + 'static,
    {
        RefData::switch_to_atomic(&self.data, Some(Box::new(confirm)));
    }

    /// [`switch_to_atomic`](Self::switch_to_atomic) and wait until the switch
    /// is confirmed (`percpu_ref_switch_to_atomic_sync`). The caller must make
    /// sure nobody switches back to per-CPU mode meanwhile.
    ///
    /// # Blocking
    ///
    /// Waits for a grace period and the RCU worker (unless the ref is already
    /// atomic with no switch in flight).
    ///
    /// # Panics
    ///
    /// Inside an RCU read-side section (the grace period would wait for the
    /// caller) and inside an RCU callback (the switch completes in a callback
    /// the worker cannot reach while it runs the caller), whatever the ref's
    /// state, before any change. Use [`switch_to_atomic`](Self::switch_to_atomic)
    /// with a confirm callback there.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// r.switch_to_atomic_sync();
    /// r.switch_to_percpu();
    /// ```
    #[track_caller]
    pub fn switch_to_atomic_sync(&self) {
        const CALLER: &str = "PercpuRef::switch_to_atomic_sync";
        // Refused before any change, whatever the ref's state: this form
        // exists to wait for a grace period and the RCU worker.
        if shrinker_rcu::in_callback() {
            panic_waiting_in_callback(CALLER);
        }
        if shrinker_rcu::in_read_section() {
            panic_waiting_in_read_section(CALLER);
        }
        RefData::switch_to_atomic(&self.data, None);
        let st = self.data.lock();
        drop(
            self.data
                .wait_switched(st, "PercpuRef::switch_to_atomic_sync"),
        );
    }

    /// Lets the ref return to per-CPU mode (`percpu_ref_switch_to_percpu`).
    ///
    /// Switches at once when the ref is live and atomic; on a dying ref the
    /// switch happens at the next `reinit`/`resurrect`. Needs
    /// `InitFlags::ALLOW_REINIT` (implied by `ATOMIC` and `DEAD`) once the
    /// ref has left per-CPU mode; without it the ref stays atomic and the
    /// fact is reported once.
    ///
    /// # Blocking
    ///
    /// Waits for a switch to atomic in flight, if any: until its grace period
    /// ends and the RCU worker runs it.
    ///
    /// # Panics
    ///
    /// If a switch to atomic is in flight and the caller is inside an RCU
    /// read-side section or an RCU callback, where waiting for it would
    /// deadlock; before any change.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::ATOMIC);
    /// r.switch_to_percpu();
    /// r.get();
    /// r.put();
    /// ```
    #[track_caller]
    pub fn switch_to_percpu(&self) {
        let d = &self.data;
        let mut st = d.may_wait(d.lock(), "PercpuRef::switch_to_percpu");
        st.force_atomic = false;
        let (st, pending) = RefData::switch_mode(d, st, None, "PercpuRef::switch_to_percpu");
        drop(st);
        pending.run();
    }

    /// Revives a killed ref: clears dead, takes a new initial reference and
    /// returns to per-CPU mode if allowed (`percpu_ref_resurrect`).
    ///
    /// The ref may be dying (users still hold references) or zero. If
    /// `release` frees what the ref protects, the caller must make sure it
    /// does not run while this call is in progress. `tryget`/`tryget_live`
    /// may run concurrently.
    ///
    /// # Ordering
    ///
    /// **Release**: everything written before this call is visible to a
    /// thread whose `tryget_live` succeeds on the revived ref and that then
    /// executes `fence(Acquire)`.
    ///
    /// # Blocking
    ///
    /// Waits for the kill's switch to atomic, if still in flight: until its
    /// grace period ends and the RCU worker runs it.
    ///
    /// # Panics
    ///
    /// If the ref is not dead ("resurrect of a live ref"); if a switch to
    /// atomic is in flight and the caller is inside an RCU read-side section
    /// or an RCU callback, where waiting for it would deadlock. Both before
    /// any change.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::DEAD);
    /// r.resurrect();
    /// assert!(r.tryget_live());
    /// r.put();
    /// ```
    #[track_caller]
    pub fn resurrect(&self) {
        let d = &self.data;
        let st = d.lock();
        if !d.mode().is_dead() {
            drop(st);
            panic!("PercpuRef::resurrect on a live ref: only a killed ref can be resurrected");
        }
        RefData::resurrect_locked(d, st, "PercpuRef::resurrect");
    }

    /// Revives a ref whose count reached zero (`percpu_ref_reinit`): as
    /// [`resurrect`](Self::resurrect), but requires the count to be zero.
    ///
    /// # Ordering
    ///
    /// **Release**, as [`resurrect`](Self::resurrect).
    ///
    /// # Blocking
    ///
    /// Never waits in practice: a zero count means the last switch to atomic
    /// has completed (the switch holds a reference until it ends). So it may
    /// be called inside an RCU callback, a `release` run by the RCU worker
    /// included.
    ///
    /// # Panics
    ///
    /// If the count is not zero ("reinit of a non-zero ref"), before any
    /// change.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::ATOMIC);
    /// r.kill(); // the last reference: count reaches zero, release runs
    /// assert!(r.is_zero());
    /// r.reinit();
    /// assert!(!r.is_zero() && !r.is_dying());
    /// ```
    #[track_caller]
    pub fn reinit(&self) {
        let d = &self.data;
        let st = d.lock();
        if !d.is_zero() {
            drop(st);
            panic!("PercpuRef::reinit of a non-zero ref: wait for release, or use resurrect");
        }
        RefData::resurrect_locked(d, st, "PercpuRef::reinit");
    }

    /// Whether the count is zero (`percpu_ref_is_zero`). Always `false` in
    /// per-CPU mode and while a switch to atomic is in flight.
    ///
    /// # Ordering
    ///
    /// **Acquire** when it returns `true`: every user's accesses before its
    /// final put happen-before the caller's next step.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// assert!(!r.is_zero());
    /// ```
    #[must_use]
    pub fn is_zero(&self) -> bool {
        self.data.is_zero()
    }

    /// Whether the ref has been killed and not revived
    /// (`percpu_ref_is_dying`). A snapshot: the caller must synchronise
    /// against concurrent state changes.
    ///
    /// # Ordering
    ///
    /// **Unordered** (`Relaxed`).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// assert!(!r.is_dying());
    /// r.kill();
    /// assert!(r.is_dying());
    /// ```
    #[must_use]
    pub fn is_dying(&self) -> bool {
        // Relaxed: a snapshot, as upstream.
        Mode(self.data.mode.load(Ordering::Relaxed)).is_dead()
    }
}

impl fmt::Debug for PercpuRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PercpuRef")
            .field("mode", &self.data.mode())
            .field("is_zero", &self.data.is_zero())
            .finish_non_exhaustive()
    }
}

// ===== impl RefData: fast paths =====

/// `nr` references as the signed delta the counters add, checked: a `usize`
/// above `isize::MAX` would turn a get into a put and the reverse.
#[inline]
#[track_caller]
fn delta(nr: usize, caller: &str) -> isize {
    match isize::try_from(nr) {
        Ok(delta) => delta,
        Err(_) => nr_too_large(nr, caller),
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn nr_too_large(nr: usize, caller: &str) -> ! {
    panic!("{caller}({nr}): more than isize::MAX references at once; the count would wrap")
}

impl RefData {
    /// This thread's slot, if it has one.
    #[inline]
    fn this_slot(&self) -> Option<&AtomicIsize> {
        slot::thread_index()
            .and_then(|i| self.slots.get(i))
            .map(|s| &**s)
    }

    /// A Relaxed load of the mode word, for use under the switch mutex (the
    /// only place it is written) or as a snapshot.
    #[inline]
    fn mode(&self) -> Mode {
        // Relaxed: under the switch mutex this reads the latest store; as a
        // snapshot it needs no ordering.
        Mode(self.mode.load(Ordering::Relaxed))
    }

    /// The mode as seen by a get/put, inside its read-side section.
    #[inline]
    fn mode_for_access(&self) -> Mode {
        // Acquire: pairs with the Release store in switch_to_percpu(); seeing
        // per-CPU mode implies seeing the slots it zeroed and the bias it
        // added, so our slot update is not overwritten by a late zeroing.
        // (Upstream: READ_ONCE + address dependency.)
        Mode(self.mode.load(Ordering::Acquire))
    }

    /// Adds `delta` to this thread's own slot.
    #[inline]
    fn slot_add(slot: &AtomicIsize, delta: isize) {
        // Relaxed load and store, not an RMW: only the owning thread writes
        // this slot while it can be in per-CPU mode (slot.rs), so there is no
        // concurrent writer to lose. The grace period before the sum orders
        // the store before switch_to_atomic_rcu()'s read.
        slot.store(
            slot.load(Ordering::Relaxed).wrapping_add(delta),
            Ordering::Relaxed,
        );
    }

    #[inline]
    #[track_caller]
    fn get_many(&self, nr: usize) {
        let nr = delta(nr, "PercpuRef::get_many");
        let _rcu = shrinker_rcu::read_lock();
        if self.mode_for_access().is_percpu() {
            if let Some(slot) = self.this_slot() {
                Self::slot_add(slot, nr);
                return;
            }
        }
        // Relaxed: the caller already holds a reference (Arc::clone's
        // argument). In per-CPU mode (a thread without a slot) the bias keeps
        // the counter away from zero, and the grace period orders the add.
        self.count.fetch_add(nr, Ordering::Relaxed);
    }

    #[inline]
    #[track_caller]
    fn tryget_many(&self, nr: usize, live: bool) -> bool {
        let nr = delta(nr, "PercpuRef::tryget_many");
        let _rcu = shrinker_rcu::read_lock();
        let mode = self.mode_for_access();
        if mode.is_percpu() {
            match self.this_slot() {
                Some(slot) => Self::slot_add(slot, nr),
                // Relaxed: per-CPU mode; the bias keeps the counter from zero.
                None => {
                    self.count.fetch_add(nr, Ordering::Relaxed);
                }
            }
            return true;
        }
        if live && mode.is_dead() {
            return false;
        }
        self.count_add_not_zero(nr)
    }

    /// `atomic_long_add_unless(&count, nr, 0)`.
    #[inline]
    fn count_add_not_zero(&self, nr: isize) -> bool {
        // Relaxed: a first guess for the CAS.
        let mut old = self.count.load(Ordering::Relaxed);
        loop {
            if old == 0 {
                return false;
            }
            // Relaxed on success: the count itself needs only atomicity; no
            // data is promised to the caller (see tryget_live's # Ordering).
            // A caller's fence(Acquire) after success still pairs with the
            // Release increment in resurrect_locked(), because every later
            // change of `count` is an RMW in that increment's release sequence.
            match self.count.compare_exchange_weak(
                old,
                old.wrapping_add(nr),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => old = now,
            }
        }
    }

    #[inline]
    #[track_caller]
    fn put_many(&self, nr: usize) {
        // Dropping nothing is a no-op. Without this check an atomic put of 0
        // on a count of 0 would see `old == nr` and run `release` again.
        if nr == 0 {
            return;
        }
        let nr = delta(nr, "PercpuRef::put_many");
        let rcu = shrinker_rcu::read_lock();
        if self.mode_for_access().is_percpu() {
            match self.this_slot() {
                Some(slot) => Self::slot_add(slot, nr.wrapping_neg()),
                // Relaxed: per-CPU mode; the bias keeps the counter from zero,
                // and the grace period orders the decrement before the sum.
                None => {
                    self.count.fetch_sub(nr, Ordering::Relaxed);
                }
            }
            return;
        }
        // Release: our accesses to the object happen-before release(), through
        // the fence(Acquire) in put_slow() of whichever put reaches zero.
        let old = self.count.fetch_sub(nr, Ordering::Release);
        drop(rcu);
        if old == nr || Self::is_underflow(old.wrapping_sub(nr)) {
            self.put_slow(old, nr);
        }
    }

    /// A count that went below zero outside the biased range: more puts than
    /// gets. (Biased counts live near `isize::MIN` or, after puts on the
    /// shared counter for slot gets, near `isize::MAX`.)
    #[inline]
    fn is_underflow(new: isize) -> bool {
        (-(1 << 62)..0).contains(&new)
    }

    #[cold]
    #[inline(never)]
    fn put_slow(&self, old: isize, nr: isize) {
        if old == nr {
            // Acquire: pairs with every Release put and with the Release add
            // in switch_to_atomic_rcu() (which carries the per-CPU users'
            // accesses, ordered before it by the grace period).
            acquire_after_final_dec(&self.count);
            (self.release)();
        } else {
            static LATCH: StdAtomicBool = StdAtomicBool::new(false);
            report_once(
                &LATCH,
                format_args!(
                    "percpu_ref: more puts than gets (count {} after put_many({nr}))",
                    old.wrapping_sub(nr)
                ),
            );
        }
    }

    /// `percpu_ref_is_zero`.
    fn is_zero(&self) -> bool {
        if self.mode().is_percpu() {
            return false;
        }
        // Acquire: pairs with the Release of the put that reached zero (and,
        // through its release sequence, with the slot sum's Release add).
        self.count.load(Ordering::Acquire) == 0
    }
}

// ===== impl RefData: mode switches =====

impl RefData {
    fn lock(&self) -> MutexGuard<'_, SwitchState> {
        // No code of ours panics under this mutex, and user callbacks never
        // run under it; recover from poison rather than propagate.
        self.switch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Panics, releasing the mutex first, if a switch is in flight and the
    /// caller is where waiting for it would deadlock: inside an RCU
    /// read-side section (the switch's grace period waits for the section)
    /// or inside an RCU callback (the switch completes in a callback that
    /// the worker, busy running the caller, never reaches).
    #[track_caller]
    fn may_wait<'a>(
        &self,
        st: MutexGuard<'a, SwitchState>,
        caller: &str,
    ) -> MutexGuard<'a, SwitchState> {
        if st.switching {
            if shrinker_rcu::in_callback() {
                drop(st);
                panic_waiting_in_callback(caller);
            }
            if shrinker_rcu::in_read_section() {
                drop(st);
                panic_waiting_in_read_section(caller);
            }
        }
        st
    }

    /// Waits until no switch to atomic is in flight.
    #[track_caller]
    fn wait_switched<'a>(
        &self,
        st: MutexGuard<'a, SwitchState>,
        caller: &str,
    ) -> MutexGuard<'a, SwitchState> {
        let mut st = self.may_wait(st, caller);
        while st.switching {
            st = self
                .switched
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
        st
    }

    /// `__percpu_ref_switch_mode`: wait out a switch in flight, then go to the
    /// mode the state asks for. For the waiting forms (`switch_to_percpu`,
    /// `resurrect`, `reinit`); the asynchronous ones use
    /// [`switch_to_atomic_async`](Self::switch_to_atomic_async).
    #[track_caller]
    fn switch_mode<'a>(
        this: &'a Arc<Self>,
        st: MutexGuard<'a, SwitchState>,
        confirm: Option<Confirm>,
        caller: &str,
    ) -> (MutexGuard<'a, SwitchState>, Pending) {
        let mut st = this.wait_switched(st, caller);
        if st.force_atomic || this.mode().is_dead() {
            let pending = Self::switch_to_atomic_locked(this, &mut st, confirm);
            (st, pending)
        } else {
            debug_assert!(
                confirm.is_none(),
                "confirm only comes with a switch to atomic"
            );
            this.switch_to_percpu_locked(&st);
            (st, Pending::Nothing)
        }
    }

    /// The mode switch of `kill`, `kill_and_confirm` and `switch_to_atomic`,
    /// whose target is always atomic: it never waits. A switch in flight is a
    /// switch to atomic that nothing can undo before it completes (the way
    /// back, `switch_to_percpu_locked`, waits for it), so `confirm` is chained
    /// to it and runs once that switch has made the ref atomic on every
    /// thread, exactly when it would have run had this call waited (upstream
    /// waits, then confirms at once because the ref is atomic). Never waiting
    /// is what lets these forms run inside an RCU callback or read-side
    /// section.
    fn switch_to_atomic_async(
        this: &Arc<Self>,
        st: &mut SwitchState,
        confirm: Option<Confirm>,
    ) -> Pending {
        debug_assert!(st.force_atomic || this.mode().is_dead());
        if st.switching {
            st.chained.extend(confirm);
            return Pending::Nothing;
        }
        Self::switch_to_atomic_locked(this, st, confirm)
    }

    /// Step 1 of the switch to atomic (`__percpu_ref_switch_to_atomic`).
    fn switch_to_atomic_locked(
        this: &Arc<Self>,
        st: &mut SwitchState,
        confirm: Option<Confirm>,
    ) -> Pending {
        let mode = this.mode();
        if !mode.is_percpu() {
            return confirm.map_or(Pending::Nothing, Pending::Confirm);
        }
        // Relaxed: get/put sections that miss this store are exactly the ones
        // the grace period waits for; every section that starts after the
        // grace period began sees it (RCU's guarantee, our call_rcu() comes
        // after this store).
        this.mode.store(mode.0 | ATOMIC_BIT, Ordering::Relaxed);
        st.switching = true;
        // Relaxed: the switch's own reference ("put after confirmation"), on
        // the still-biased counter; ordered by the mutex and the grace period.
        this.count.fetch_add(1, Ordering::Relaxed);
        Pending::QueueSwitch(Arc::clone(this), confirm)
    }

    /// Steps 3–5, on the RCU worker after a grace period
    /// (`percpu_ref_switch_to_atomic_rcu` + `percpu_ref_call_confirm_rcu`).
    fn switch_to_atomic_rcu(this: Arc<Self>, confirm: Option<Confirm>) {
        // 3. Sum first, then add: adding slot by slot could let `count` reach
        //    zero between two slots (gets on one thread, puts on another).
        //    Relaxed: the grace period made every slot store happen-before
        //    this callback, and no new ones can start (they see ATOMIC).
        let sum = this
            .slots
            .iter()
            .fold(0isize, |acc, s| acc.wrapping_add(s.load(Ordering::Relaxed)));
        // Release: heads the release sequence that the final put's
        // fence(Acquire) reads from, carrying every per-CPU user's accesses
        // (ordered before us by the grace period) to release().
        let delta = sum.wrapping_sub(PERCPU_COUNT_BIAS);
        let now = this
            .count
            .fetch_add(delta, Ordering::Release)
            .wrapping_add(delta);
        if now <= 0 {
            static LATCH: StdAtomicBool = StdAtomicBool::new(false);
            report_once(
                &LATCH,
                format_args!("percpu_ref <= 0 ({now}) after switching to atomic"),
            );
        }
        // 4. Every thread now sees ATOMIC (and DEAD, for a kill). Run our
        //    confirm, then those chained by asynchronous calls that found this
        //    switch in flight (in call order), until none is left. Each runs
        //    caught, so that one panicking confirm cannot skip the others or
        //    leave `switching` set; the first panic is re-raised at the end.
        let mut panicked = None;
        let mut run = |c: Confirm| {
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(c)) {
                panicked.get_or_insert(payload);
            }
        };
        if let Some(c) = confirm {
            run(c);
        }
        loop {
            let mut st = this.lock();
            if st.chained.is_empty() {
                // 5. The switch is over: no confirm can be chained any more.
                st.switching = false;
                break;
            }
            let chained = std::mem::take(&mut st.chained);
            drop(st);
            chained.into_iter().for_each(&mut run);
        }
        // Let waiting switches proceed, then drop the switch's own reference
        // (which may run release()).
        this.switched.notify_all();
        this.put_many(1);
        if let Some(payload) = panicked {
            panic::resume_unwind(payload);
        }
    }

    /// `__percpu_ref_switch_to_percpu`. No thread can be in a per-CPU get/put
    /// section now: the last switch to atomic has completed (we waited for
    /// `switching`), so its grace period has ended every such section.
    fn switch_to_percpu_locked(&self, st: &SwitchState) {
        let mode = self.mode();
        if mode.is_percpu() {
            return;
        }
        if !st.allow_reinit {
            static LATCH: StdAtomicBool = StdAtomicBool::new(false);
            report_once(
                &LATCH,
                format_args!(
                    "percpu_ref: switch to per-CPU mode without InitFlags::ALLOW_REINIT; \
                     staying atomic"
                ),
            );
            return;
        }
        // Relaxed: ordered before the Release store below.
        self.count.fetch_add(PERCPU_COUNT_BIAS, Ordering::Relaxed);
        for slot in self.slots.iter() {
            // Relaxed: ordered before the Release store below.
            slot.store(0, Ordering::Relaxed);
        }
        // Release: pairs with the Acquire in mode_for_access(); a get/put that
        // sees per-CPU mode sees the zeroed slots and the bias.
        self.mode.store(mode.0 & !ATOMIC_BIT, Ordering::Release);
    }

    /// `kill_and_confirm`, under and after the mutex.
    #[track_caller]
    fn kill(this: &Arc<Self>, confirm: Option<Confirm>) {
        let mut st = this.lock();
        let mode = this.mode();
        if mode.is_dead() {
            drop(st);
            panic!(
                "PercpuRef::kill called more than once (or on a ref created dead and never revived)"
            );
        }
        // Relaxed: a tryget_live racing with the kill may miss DEAD, which is
        // allowed until confirm; confirm comes after this store (same thread;
        // or on the RCU worker, which takes the switch mutex we hold before it
        // runs a chained confirm or, for a new switch, after the grace
        // period), so calls ordered after it see DEAD.
        this.mode.store(mode.0 | DEAD_BIT, Ordering::Relaxed);
        let pending = Self::switch_to_atomic_async(this, &mut st, confirm);
        drop(st);
        // A confirm run here (the ref was already atomic) is user code: if it
        // panics, the initial reference must still be dropped, or the ref
        // stays dying forever and `release` never runs.
        let confirmed = panic::catch_unwind(AssertUnwindSafe(|| pending.run()));
        // Drop the initial reference; the switch holds its own until every
        // confirm (ours included, if chained) has run, so with a switch in
        // flight this cannot be the last put.
        this.put_many(1);
        if let Err(payload) = confirmed {
            panic::resume_unwind(payload);
        }
    }

    fn switch_to_atomic(this: &Arc<Self>, confirm: Option<Confirm>) {
        let mut st = this.lock();
        st.force_atomic = true;
        let pending = Self::switch_to_atomic_async(this, &mut st, confirm);
        drop(st);
        pending.run();
    }

    /// `percpu_ref_resurrect` after its misuse check.
    #[track_caller]
    fn resurrect_locked(this: &Arc<Self>, st: MutexGuard<'_, SwitchState>, caller: &str) {
        // Refuse a wait that would deadlock before changing anything.
        let st = this.may_wait(st, caller);
        let mode = this.mode();
        // Release: pairs with the Acquire mode load in tryget_live(); a
        // tryget_live that sees the ref alive again sees what the caller wrote
        // before reviving it.
        this.mode.store(mode.0 & !DEAD_BIT, Ordering::Release);
        // Release: the new initial reference, taken on the atomic counter (we
        // are atomic while dead). Pairs with the fence(Acquire) a caller puts
        // after a tryget_live whose CAS reads this value or a later one.
        this.count.fetch_add(1, Ordering::Release);
        let (st, pending) = Self::switch_mode(this, st, None, caller);
        drop(st);
        pending.run();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    //! The state machine, transition by transition. Tests that switch a ref
    //! out of per-CPU mode need the RCU worker and its membarrier system
    //! calls, so they are not run under Miri; those that stay per-CPU or
    //! atomic (no call_rcu) are.
    use super::*;
    use crate::Completion;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc as StdArc;

    /// A ref whose release count is observable.
    fn counted(flags: InitFlags) -> (PercpuRef, StdArc<AtomicUsize>, StdArc<Completion>) {
        let releases = StdArc::new(AtomicUsize::new(0));
        let released = StdArc::new(Completion::new());
        let r = {
            let (n, c) = (StdArc::clone(&releases), StdArc::clone(&released));
            PercpuRef::new(
                move || {
                    n.fetch_add(1, Ordering::Relaxed);
                    c.complete();
                },
                flags,
            )
        };
        (r, releases, released)
    }

    #[test]
    fn init_flags_set_the_initial_state() {
        let (r, n, _) = counted(InitFlags::NONE);
        assert_eq!(r.data.mode(), Mode(0));
        assert!(!r.is_zero() && !r.is_dying());
        let (r2, _, _) = counted(InitFlags::ATOMIC);
        assert_eq!(r2.data.mode(), Mode(ATOMIC_BIT));
        assert_eq!(r2.data.count.load(Ordering::Relaxed), 1);
        let (r3, n3, _) = counted(InitFlags::DEAD);
        assert_eq!(r3.data.mode(), Mode(ATOMIC_BIT | DEAD_BIT));
        assert!(r3.is_zero() && r3.is_dying());
        assert!(!r3.tryget() && !r3.tryget_live());
        assert_eq!(n.load(Ordering::Relaxed) + n3.load(Ordering::Relaxed), 0);
        assert!(r3.data.lock().allow_reinit, "DEAD implies ALLOW_REINIT");
        assert!(r2.data.lock().force_atomic && r2.data.lock().allow_reinit);
        assert!(!r.data.lock().allow_reinit);
        drop((r, r2));
    }

    #[test]
    fn percpu_gets_and_puts_stay_off_the_counter() {
        let (r, n, _) = counted(InitFlags::NONE);
        r.get_many(5);
        assert!(r.tryget());
        assert!(r.tryget_live());
        r.put_many(7);
        assert_eq!(r.data.count.load(Ordering::Relaxed), PERCPU_COUNT_BIAS + 1);
        assert_eq!(n.load(Ordering::Relaxed), 0);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn kill_with_no_users_releases_once() {
        let (r, n, released) = counted(InitFlags::NONE);
        r.kill();
        released.wait();
        assert!(r.is_zero() && r.is_dying());
        shrinker_rcu::rcu_barrier();
        assert_eq!(n.load(Ordering::Relaxed), 1);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn release_waits_for_cross_thread_puts() {
        // Gets on one thread, puts on another: slots go negative, the sum is
        // what counts.
        let (r, n, released) = counted(InitFlags::NONE);
        let r = StdArc::new(r);
        r.get_many(10);
        std::thread::scope(|s| {
            s.spawn(|| r.put_many(4));
        });
        r.kill();
        shrinker_rcu::rcu_barrier(); // the switch to atomic has run
        assert!(!r.is_zero(), "6 references outstanding");
        assert_eq!(
            n.load(Ordering::Relaxed),
            0,
            "released with 6 references outstanding"
        );
        assert!(!released.try_wait());
        std::thread::scope(|s| {
            s.spawn(|| r.put_many(6));
        });
        released.wait();
        assert_eq!(n.load(Ordering::Relaxed), 1);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn confirm_runs_before_release_and_tryget_live_fails_after_it() {
        let order = StdArc::new(std::sync::Mutex::new(Vec::new()));
        let released = StdArc::new(Completion::new());
        let r = {
            let (order, released) = (StdArc::clone(&order), StdArc::clone(&released));
            StdArc::new(PercpuRef::new(
                move || {
                    order.lock().unwrap().push("release");
                    released.complete_all();
                },
                InitFlags::NONE,
            ))
        };
        r.get(); // a user keeps it alive past the confirm
        let confirmed = StdArc::new(Completion::new());
        {
            let (order, confirmed, r2) = (
                StdArc::clone(&order),
                StdArc::clone(&confirmed),
                StdArc::clone(&r),
            );
            r.kill_and_confirm(move || {
                // Inside confirm: already dead on every thread.
                assert!(!r2.tryget_live(), "tryget_live must fail once confirm runs");
                order.lock().unwrap().push("confirm");
                confirmed.complete_all();
            });
        }
        confirmed.wait();
        assert!(!r.tryget_live(), "tryget_live must fail after confirm");
        assert!(r.tryget(), "tryget still succeeds while dying");
        r.put();
        assert!(!r.is_zero(), "the user's reference is still held");
        // The user's reference. The switch drops its own reference only
        // after confirm returns ("put after confirmation"), so release may
        // run here or on the RCU worker: wait for it rather than assume.
        r.put();
        released.wait();
        assert!(r.is_zero());
        assert_eq!(*order.lock().unwrap(), ["confirm", "release"]);
    }

    #[test]
    fn kill_of_atomic_ref_confirms_synchronously() {
        let (r, n, _) = counted(InitFlags::ATOMIC);
        let confirmed = StdArc::new(AtomicUsize::new(0));
        let c = StdArc::clone(&confirmed);
        r.get();
        r.kill_and_confirm(move || {
            c.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(
            confirmed.load(Ordering::Relaxed),
            1,
            "no grace period needed"
        );
        assert_eq!(n.load(Ordering::Relaxed), 0);
        r.put();
        assert_eq!(n.load(Ordering::Relaxed), 1, "release ran in the last put");
    }

    #[test]
    fn panicking_confirm_inside_kill_still_drops_the_initial_reference() {
        let (r, n, _) = counted(InitFlags::ATOMIC); // atomic: confirms inline
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            r.kill_and_confirm(|| panic!("confirm panics"));
        }));
        assert!(caught.is_err(), "the confirm's panic reaches the caller");
        assert!(r.is_dying());
        assert!(r.is_zero(), "the initial reference was dropped");
        assert_eq!(n.load(Ordering::Relaxed), 1, "release ran");
    }

    #[test]
    fn panicking_release_leaves_the_ref_zero_and_revivable() {
        let calls = StdArc::new(AtomicUsize::new(0));
        let c = StdArc::clone(&calls);
        let r = PercpuRef::new(
            move || {
                if c.fetch_add(1, Ordering::Relaxed) == 0 {
                    panic!("release panics");
                }
            },
            InitFlags::ATOMIC,
        );
        r.get();
        r.kill();
        let caught = panic::catch_unwind(AssertUnwindSafe(|| r.put()));
        assert!(caught.is_err(), "release's panic reaches the last put");
        assert!(r.is_zero() && r.is_dying());
        r.reinit();
        assert!(r.tryget_live());
        r.put();
        r.kill();
        assert_eq!(calls.load(Ordering::Relaxed), 2, "one release per life");
    }

    /// A thread's last put may come from a thread-local destructor that runs
    /// after the slot index was given back (then it goes to the counter).
    #[test]
    #[cfg_attr(miri, ignore)]
    fn puts_from_thread_local_destructors_are_counted() {
        struct PutOnExit(StdArc<PercpuRef>);
        impl Drop for PutOnExit {
            fn drop(&mut self) {
                self.0.put();
            }
        }
        std::thread_local! {
            static HELD: std::cell::RefCell<Option<PutOnExit>> =
                const { std::cell::RefCell::new(None) };
        }
        let (r, n, released) = counted(InitFlags::NONE);
        let r = StdArc::new(r);
        for first in [true, false] {
            for _ in 0..8 {
                let r = StdArc::clone(&r);
                std::thread::spawn(move || {
                    // Either order of first use, so that either thread-local
                    // (the slot index or HELD) is destroyed first.
                    if first {
                        r.get();
                    }
                    HELD.with(|h| *h.borrow_mut() = Some(PutOnExit(StdArc::clone(&r))));
                    if !first {
                        r.get();
                    }
                })
                .join()
                .unwrap();
            }
        }
        r.kill();
        released.wait();
        assert_eq!(n.load(Ordering::Relaxed), 1);
    }

    #[test]
    #[should_panic(expected = "PercpuRef::kill called more than once")]
    fn kill_twice_panics() {
        let r = PercpuRef::new(|| {}, InitFlags::ATOMIC);
        r.get();
        r.kill();
        r.kill();
    }

    #[test]
    #[should_panic(expected = "PercpuRef::kill called more than once")]
    fn kill_of_ref_created_dead_panics() {
        PercpuRef::new(|| {}, InitFlags::DEAD).kill();
    }

    #[test]
    #[should_panic(expected = "PercpuRef::resurrect on a live ref")]
    fn resurrect_of_live_ref_panics() {
        PercpuRef::new(|| {}, InitFlags::ATOMIC).resurrect();
    }

    #[test]
    #[should_panic(expected = "PercpuRef::reinit of a non-zero ref")]
    fn reinit_of_nonzero_ref_panics() {
        let r = PercpuRef::new(|| {}, InitFlags::ATOMIC);
        r.get();
        r.kill(); // dying, one user left
        r.reinit();
    }

    #[test]
    fn misuse_panics_leave_the_ref_usable() {
        let (r, n, _) = counted(InitFlags::ATOMIC);
        let caught = panic::catch_unwind(AssertUnwindSafe(|| r.resurrect()));
        assert!(caught.is_err());
        r.kill(); // still works: the panic came before any change
        assert_eq!(n.load(Ordering::Relaxed), 1);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn switch_to_atomic_and_back() {
        let (r, n, _) = counted(InitFlags::ALLOW_REINIT);
        r.get_many(3); // in slots
        r.switch_to_atomic_sync();
        // The switch drops its own reference just after waking us.
        shrinker_rcu::rcu_barrier();
        assert_eq!(r.data.mode(), Mode(ATOMIC_BIT));
        assert_eq!(
            r.data.count.load(Ordering::Relaxed),
            4,
            "exact after the switch"
        );
        r.put_many(2); // on the counter
        r.switch_to_percpu();
        assert_eq!(r.data.mode(), Mode(0));
        r.put(); // in a slot again, which was zeroed
        r.switch_to_atomic_sync();
        shrinker_rcu::rcu_barrier();
        assert_eq!(r.data.count.load(Ordering::Relaxed), 1);
        r.switch_to_percpu();
        r.kill();
        shrinker_rcu::rcu_barrier();
        assert!(r.is_zero());
        assert_eq!(n.load(Ordering::Relaxed), 1);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn switch_to_atomic_is_sticky_across_kill_and_reinit() {
        let (r, _, released) = counted(InitFlags::ALLOW_REINIT);
        r.switch_to_atomic_sync();
        r.kill();
        released.wait();
        r.reinit();
        assert_eq!(
            r.data.mode(),
            Mode(ATOMIC_BIT),
            "forced atomic survives reinit"
        );
        r.switch_to_percpu();
        assert_eq!(r.data.mode(), Mode(0));
    }

    #[test]
    fn switch_to_percpu_on_dying_ref_waits_for_reinit() {
        let (r, _, released) = counted(InitFlags::ATOMIC);
        r.get();
        r.kill();
        r.switch_to_percpu();
        assert_eq!(
            r.data.mode(),
            Mode(ATOMIC_BIT | DEAD_BIT),
            "still dying, still atomic"
        );
        r.put();
        released.wait();
        r.reinit();
        assert_eq!(r.data.mode(), Mode(0), "per-CPU after reinit");
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn without_allow_reinit_the_ref_stays_atomic() {
        let (r, n, released) = counted(InitFlags::NONE);
        r.kill();
        released.wait();
        r.reinit();
        assert_eq!(
            r.data.mode(),
            Mode(ATOMIC_BIT),
            "revived, but atomic for good"
        );
        assert!(r.tryget_live());
        r.put();
        r.kill();
        assert_eq!(n.load(Ordering::Relaxed), 2);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn resurrect_while_dying_keeps_users() {
        let (r, n, _) = counted(InitFlags::ALLOW_REINIT);
        r.get(); // a user
        r.kill();
        r.resurrect(); // waits for the kill's switch, then back to per-CPU
        assert_eq!(r.data.mode(), Mode(0));
        assert!(r.tryget_live());
        r.put();
        r.put(); // the old user
        assert_eq!(n.load(Ordering::Relaxed), 0, "never reached zero");
        r.kill();
        shrinker_rcu::rcu_barrier();
        assert_eq!(n.load(Ordering::Relaxed), 1);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn dead_ref_revived_by_reinit_and_resurrect() {
        let (r, n, released) = counted(InitFlags::DEAD);
        r.reinit();
        assert_eq!(r.data.mode(), Mode(0), "DEAD implies ALLOW_REINIT: per-CPU");
        r.kill();
        released.wait();
        r.resurrect();
        assert!(r.tryget_live());
        r.put();
        r.kill();
        released.wait();
        assert_eq!(n.load(Ordering::Relaxed), 2);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn switch_to_atomic_confirm_runs_once() {
        let (r, _, _) = counted(InitFlags::NONE);
        let (tx, rx) = std::sync::mpsc::channel();
        r.switch_to_atomic(move || tx.send(()).unwrap());
        rx.recv().unwrap();
        assert!(
            rx.recv().is_err(),
            "confirm ran exactly once and was dropped"
        );
        assert!(!r.is_zero() && !r.is_dying());
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn switch_wait_inside_read_section_panics() {
        let r = PercpuRef::new(|| {}, InitFlags::NONE);
        // Inside a read-side section the switch's grace period cannot end, so
        // the switch is still in flight when we ask to wait for it: waiting
        // must be refused with a panic, not deadlock.
        let guard = shrinker_rcu::read_lock();
        r.switch_to_atomic(|| {});
        let caught = panic::catch_unwind(AssertUnwindSafe(|| r.switch_to_atomic_sync()));
        let msg = caught.expect_err("waiting inside a read section must panic");
        let msg = msg.downcast_ref::<String>().expect("a formatted message");
        assert!(msg.contains("inside an RCU read-side section"), "{msg}");
        drop(guard);
        r.switch_to_atomic_sync();
        assert_eq!(r.data.mode(), Mode(ATOMIC_BIT));
    }

    /// Long enough never to expire on a working build; bounds the test when
    /// a regression deadlocks the RCU worker instead of hanging the suite.
    const DEADLOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

    /// Runs `f` inside an RCU callback and returns the panic message it
    /// raised, if any. Fails the test if the callback never returns.
    fn in_rcu_callback(f: impl FnOnce() + Send + 'static) -> Option<String> {
        let (tx, rx) = std::sync::mpsc::channel();
        shrinker_rcu::call_rcu(move || {
            assert!(shrinker_rcu::in_callback());
            let caught = panic::catch_unwind(AssertUnwindSafe(f));
            let msg = caught.err().map(|p| match p.downcast::<String>() {
                Ok(msg) => *msg,
                Err(p) => p.downcast_ref::<&str>().map_or("?", |m| m).to_owned(),
            });
            tx.send(msg).unwrap();
        });
        rx.recv_timeout(DEADLOCK_TIMEOUT)
            .expect("the RCU callback never returned: it deadlocked the worker")
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn switch_to_atomic_sync_inside_rcu_callback_panics() {
        let (r, _, _) = counted(InitFlags::ALLOW_REINIT);
        let r = StdArc::new(r);
        let r2 = StdArc::clone(&r);
        let msg = in_rcu_callback(move || r2.switch_to_atomic_sync())
            .expect("switch_to_atomic_sync inside an RCU callback must panic");
        assert!(msg.contains("PercpuRef::switch_to_atomic_sync"), "{msg}");
        assert!(msg.contains("inside an RCU callback"), "{msg}");
        assert_eq!(r.data.mode(), Mode(0), "refused before any change");
        assert!(!r.data.lock().force_atomic, "refused before any change");
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn waiting_forms_inside_rcu_callback_with_a_switch_in_flight_panic() {
        let (r, n, released) = counted(InitFlags::ALLOW_REINIT);
        let r = StdArc::new(r);
        let r2 = StdArc::clone(&r);
        let msgs = StdArc::new(std::sync::Mutex::new(Vec::new()));
        let m2 = StdArc::clone(&msgs);
        let outer = in_rcu_callback(move || {
            let mut msgs = m2.lock().unwrap();
            // The switch's callback cannot run before this one returns.
            r2.switch_to_atomic(|| {});
            let caught = panic::catch_unwind(AssertUnwindSafe(|| r2.switch_to_percpu()));
            msgs.push(caught.err().map(|p| p.downcast_ref::<String>().cloned()));
            r2.kill(); // joins the switch in flight
            let caught = panic::catch_unwind(AssertUnwindSafe(|| r2.resurrect()));
            msgs.push(caught.err().map(|p| p.downcast_ref::<String>().cloned()));
        });
        assert_eq!(outer, None, "the callback itself went through");
        let msgs = msgs.lock().unwrap();
        assert_eq!(msgs.len(), 2);
        for (msg, what) in msgs.iter().zip(["switch_to_percpu", "resurrect"]) {
            let msg = msg
                .clone()
                .flatten()
                .unwrap_or_else(|| panic!("{what} did not panic"));
            assert!(msg.contains(&format!("PercpuRef::{what}")), "{msg}");
            assert!(msg.contains("inside an RCU callback"), "{msg}");
        }
        // Nothing was changed by the refused calls: the kill goes through.
        assert!(
            released.wait_timeout(DEADLOCK_TIMEOUT),
            "the kill never released"
        );
        assert!(r.is_dying() && r.is_zero());
        assert_eq!(n.load(Ordering::Relaxed), 1);
        assert!(r.data.lock().force_atomic, "switch_to_percpu was refused");
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn async_forms_inside_rcu_callback_confirm_and_release() {
        let order = StdArc::new(std::sync::Mutex::new(Vec::new()));
        let released = StdArc::new(Completion::new());
        let r = {
            let (order, released) = (StdArc::clone(&order), StdArc::clone(&released));
            StdArc::new(PercpuRef::new(
                move || {
                    order.lock().unwrap().push("release");
                    released.complete_all();
                },
                InitFlags::NONE,
            ))
        };
        let (r2, o1, o2) = (
            StdArc::clone(&r),
            StdArc::clone(&order),
            StdArc::clone(&order),
        );
        let outer = in_rcu_callback(move || {
            // Per-CPU: queues the switch (a call_rcu from inside a callback).
            r2.switch_to_atomic(move || o1.lock().unwrap().push("switch confirmed"));
            // A switch is in flight and cannot complete before we return:
            // the kill must join it rather than wait for it.
            let r3 = StdArc::clone(&r2);
            r2.kill_and_confirm(move || {
                assert!(!r3.tryget_live(), "dead on every thread at confirm");
                o2.lock().unwrap().push("kill confirmed");
            });
        });
        assert_eq!(
            outer, None,
            "the asynchronous forms must not panic in a callback"
        );
        assert!(
            released.wait_timeout(DEADLOCK_TIMEOUT),
            "never released: the confirms did not run"
        );
        assert_eq!(
            *order.lock().unwrap(),
            ["switch confirmed", "kill confirmed", "release"]
        );
        assert!(r.is_zero() && r.is_dying());
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn kill_inside_read_section_with_a_switch_in_flight_chains() {
        let (r, n, released) = counted(InitFlags::NONE);
        let confirmed = StdArc::new(Completion::new());
        let c = StdArc::clone(&confirmed);
        let guard = shrinker_rcu::read_lock();
        r.switch_to_atomic(|| {});
        // The switch's grace period waits for this section: it is in flight.
        assert!(r.data.lock().switching);
        r.kill_and_confirm(move || c.complete_all());
        assert!(!confirmed.try_wait(), "confirm waits for the grace period");
        drop(guard);
        assert!(
            confirmed.wait_timeout(DEADLOCK_TIMEOUT),
            "confirm never ran"
        );
        assert!(released.wait_timeout(DEADLOCK_TIMEOUT), "never released");
        assert_eq!(n.load(Ordering::Relaxed), 1);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn panicking_confirm_does_not_skip_chained_confirms() {
        let (r, n, released) = counted(InitFlags::NONE);
        let confirmed = StdArc::new(Completion::new());
        let c = StdArc::clone(&confirmed);
        let guard = shrinker_rcu::read_lock(); // keeps the switch in flight
        r.switch_to_atomic(|| panic!("a confirm that panics"));
        r.kill_and_confirm(move || c.complete_all());
        drop(guard);
        assert!(
            confirmed.wait_timeout(DEADLOCK_TIMEOUT),
            "chained confirm skipped"
        );
        assert!(released.wait_timeout(DEADLOCK_TIMEOUT), "never released");
        assert_eq!(n.load(Ordering::Relaxed), 1);
        assert!(!r.data.lock().switching);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn many_threads_beyond_the_slots_use_the_counter() {
        let (r, n, released) = counted(InitFlags::NONE);
        let threads = slot::nr_slots() + 4;
        let rounds = 200;
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..rounds {
                        r.get();
                        assert!(r.tryget_live());
                        r.put_many(2);
                    }
                });
            }
        });
        r.kill();
        released.wait();
        assert_eq!(n.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn put_many_zero_on_a_released_ref_does_not_release_again() {
        let (r, n, _) = counted(InitFlags::ATOMIC);
        r.kill(); // the last reference: count 0, release ran once
        assert_eq!(n.load(Ordering::Relaxed), 1);
        r.put_many(0);
        assert_eq!(
            n.load(Ordering::Relaxed),
            1,
            "put_many(0) ran release again"
        );
        assert!(r.is_zero());
        // On a live ref, in either mode, it changes nothing.
        let (live, n2, _) = counted(InitFlags::ATOMIC);
        live.put_many(0);
        assert_eq!(live.data.count.load(Ordering::Relaxed), 1);
        let (pcpu, _, _) = counted(InitFlags::NONE);
        pcpu.put_many(0);
        pcpu.get_many(0);
        assert!(pcpu.tryget_many(0), "non-zero: tryget_many(0) succeeds");
        assert_eq!(
            pcpu.data.count.load(Ordering::Relaxed),
            PERCPU_COUNT_BIAS + 1
        );
        assert_eq!(n2.load(Ordering::Relaxed), 0);
        assert!(!r.tryget_many(0), "zero: tryget_many(0) fails");
    }

    /// `nr as isize` made `get_many(usize::MAX)` a put of one: on a count of
    /// one it reached zero without running release, and `tryget` then
    /// refused a live object.
    #[test]
    fn get_many_beyond_isize_max_panics_before_changing_the_count() {
        let (r, n, _) = counted(InitFlags::ATOMIC);
        let caught = panic::catch_unwind(AssertUnwindSafe(|| r.get_many(usize::MAX)));
        let msg = caught.expect_err("get_many(usize::MAX) must panic");
        let msg = msg.downcast_ref::<String>().expect("a formatted message");
        assert!(msg.contains("PercpuRef::get_many"), "{msg}");
        assert_eq!(r.data.count.load(Ordering::Relaxed), 1, "count unchanged");
        assert!(r.tryget(), "still live");
        r.put();
        assert_eq!(n.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn tryget_many_beyond_isize_max_panics_before_changing_the_count() {
        let (r, _, _) = counted(InitFlags::ATOMIC);
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            let _ = r.tryget_many(usize::MAX);
        }));
        assert!(caught.is_err(), "tryget_many(usize::MAX) must panic");
        assert_eq!(r.data.count.load(Ordering::Relaxed), 1, "count unchanged");
    }

    /// `nr as isize` made `put_many(usize::MAX)` a get of one: the object
    /// was never released.
    #[test]
    fn put_many_beyond_isize_max_panics_before_changing_the_count() {
        let (r, n, _) = counted(InitFlags::ATOMIC);
        let caught = panic::catch_unwind(AssertUnwindSafe(|| r.put_many(usize::MAX)));
        assert!(caught.is_err(), "put_many(usize::MAX) must panic");
        assert_eq!(r.data.count.load(Ordering::Relaxed), 1, "count unchanged");
        r.kill();
        assert_eq!(n.load(Ordering::Relaxed), 1, "released by the kill");
    }

    #[test]
    fn underflow_detection_ignores_biased_values() {
        assert!(RefData::is_underflow(-1));
        assert!(!RefData::is_underflow(0));
        assert!(!RefData::is_underflow(PERCPU_COUNT_BIAS + 3));
        assert!(!RefData::is_underflow(PERCPU_COUNT_BIAS.wrapping_sub(3)));
    }
}
