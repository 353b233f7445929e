//! The registry's gate (the kernel's `rcu_sync`): whether walkers may pin
//! lightly (a walk pin for the global walk, light pins for the group walk)
//! or must take refcount pins, and how unregister and group removal close
//! it and it reopens. The pins themselves, and the proof that the two
//! sides meet, are in registry/pin.rs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sync::{lock, AtomicBool, Mutex, Ordering};

/// Whether walkers may pin lightly (`rcu_sync`): the global walk with a
/// walk pin, the group walk with light pins.
///
/// # States
///
/// | `fast` | `passed` | `users` | meaning |
/// |---|---|---|---|
/// | true | false | 0 | open: walkers take walk pins and light pins |
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
    ///
    /// Acquire: pairs with the reopening's Release store, so that a walk
    /// that takes a walk pin on seeing the gate open sees every unlink made
    /// before the reopening (it walks the list outside any read section).
    /// Closing needs no ordering here: `enter`'s store is ordered against
    /// the walker's section by the grace period that follows it (module
    /// doc).
    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        self.fast.load(Ordering::Acquire)
    }

    /// Global walk, fast phase: is the gate still open? Checked after each
    /// callout, behind the walker's light barrier ("Walk pins" in the
    /// module doc).
    ///
    /// Acquire, as [`is_open`](Self::is_open): the gate may have closed
    /// during the callout, let an unregister through, and *reopened* since;
    /// the walker then goes on with its walk pin, and must see that
    /// unregister's unlink (the reopening's Release store follows it) when
    /// it reads its next link. (The loom model
    /// `walk_pin_taken_as_the_gate_reopens` reached a freed shrinker with a
    /// Relaxed load here.) Closing needs no ordering from this load: the
    /// store-buffering pair it is part of is ordered by the barriers on
    /// both sides (the walker's light barrier, the heavy barrier of
    /// `wait_for_walkers`).
    #[inline]
    pub(crate) fn still_open(&self) -> bool {
        self.fast.load(Ordering::Acquire)
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
        // Release: pairs with `is_open`'s Acquire: every unlink made before
        // (ordered before this callback by the state mutex, which each
        // unregister's `exit` took after its unlink) happens-before a walk
        // that takes a walk pin on seeing the gate open. Walkers that still
        // see it closed take refcount pins, which are always correct.
        self.fast.store(true, Ordering::Release);
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
