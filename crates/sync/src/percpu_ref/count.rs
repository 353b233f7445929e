//! The fast paths: gets, trygets and puts on this thread's slot or on the
//! shared counter, and the put that reaches zero. See "The fast path,
//! instruction by instruction" and "The bias" in the `percpu_ref` module
//! essay, and the section protocol in `slot.rs`.

use super::slot::{self, Slot};
use super::state::{Mode, RefData};
use crate::sync::{acquire_after_final_dec, Ordering};
use std::fmt;
use std::sync::atomic::AtomicBool as StdAtomicBool;

/// One report per process for each bookkeeping bug the ref can detect.
#[cold]
pub(super) fn report_once(latch: &StdAtomicBool, message: fmt::Arguments<'_>) {
    // Relaxed: a diagnostics latch.
    if !latch.swap(true, Ordering::Relaxed) {
        tracing::error!(target: "shrinker_sync::percpu_ref", "{message}");
    }
}

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

/// Which of a slot's two counters a fast path adds to.
#[derive(Clone, Copy)]
enum Side {
    Gets,
    Puts,
}

impl RefData {
    /// The fast path (steps 1–4 of the section in `slot.rs`): adds `nr` to
    /// this thread's slot if it has one and the ref is in per-CPU mode.
    /// Returns whether it did; if not, the caller takes the slow path.
    #[inline(always)]
    fn slot_add(&self, side: Side, nr: isize) -> bool {
        // A thread with no slot (never claimed, torn down, or past the
        // slots) has an index past the end: the bounds check sends it to
        // the slow path.
        let Some(slot) = self.slots.get(slot::thread_index()) else {
            return false;
        };
        // 1. Relaxed: ordered before the mode load by light_barrier() and
        //    the switch's heavy_barrier() (the store-buffering pair in
        //    slot.rs); upstream's preempt_disable().
        slot.busy.store(1, Ordering::Relaxed);
        slot::light_barrier();
        // 2. Acquire: pairs with the Release store in switch_to_percpu();
        //    seeing per-CPU mode implies seeing the slots it zeroed and the
        //    bias it added, so our update is not overwritten by a late
        //    zeroing. (Upstream: READ_ONCE + address dependency.)
        if !Mode(self.mode.load(Ordering::Acquire)).is_percpu() {
            return Self::slot_leave_atomic(slot);
        }
        // 3. Relaxed load and store, not an RMW: only the owning thread
        //    writes this counter (slot.rs), so there is no concurrent writer
        //    to lose; step 4 orders the store before the sum.
        let counter = match side {
            Side::Gets => &slot.gets,
            Side::Puts => &slot.puts,
        };
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(nr),
            Ordering::Relaxed,
        );
        // 4. Release: pairs with the Acquire load in Slot::wait_section();
        //    our step-3 store happens-before the switch's sum.
        slot.busy.store(0, Ordering::Release);
        true
    }

    /// Step 4 for a section that found the ref atomic and left the slot
    /// alone; out of line, so that the per-CPU path falls straight through.
    #[cold]
    #[inline(never)]
    fn slot_leave_atomic(slot: &Slot) -> bool {
        // Release: as step 4 in slot_add() (nothing to publish, but the
        // switch may be waiting for this store).
        slot.busy.store(0, Ordering::Release);
        false
    }

    /// A Relaxed load of the mode word, for use under the switch mutex (the
    /// only place it is written) or as a snapshot.
    #[inline]
    pub(super) fn mode(&self) -> Mode {
        // Relaxed: under the switch mutex this reads the latest store; as a
        // snapshot it needs no ordering.
        Mode(self.mode.load(Ordering::Relaxed))
    }

    /// The mode as seen by a slow-path get/put, inside its RCU read-side
    /// section.
    #[inline]
    fn mode_for_access(&self) -> Mode {
        // Acquire: as step 2 of the fast path (slot_add()); the slow path
        // never writes a slot, but tryget_live's fence(Acquire) recipe
        // relies on it too.
        Mode(self.mode.load(Ordering::Acquire))
    }

    #[inline]
    #[track_caller]
    pub(super) fn get_many(&self, nr: usize) {
        let nr = delta(nr, "PercpuRef::get_many");
        if !self.slot_add(Side::Gets, nr) {
            self.get_slow(nr);
        }
    }

    /// Atomic mode, or a thread without a slot: the shared counter.
    #[cold]
    #[inline(never)]
    fn get_slow(&self, nr: isize) {
        if slot::claim() && self.slot_add(Side::Gets, nr) {
            return;
        }
        // Relaxed: the caller already holds a reference (Arc::clone's
        // argument). No read-side section is needed: a get on the counter is
        // right in either mode (in per-CPU mode the bias keeps the counter
        // away from zero, and the switch adds the slots' sum to it in one
        // RMW, which this one cannot split).
        self.count.fetch_add(nr, Ordering::Relaxed);
    }

    #[inline]
    #[track_caller]
    pub(super) fn tryget_many(&self, nr: usize, live: bool) -> bool {
        let nr = delta(nr, "PercpuRef::tryget_many");
        // Per-CPU mode: never zero, never dead (DEAD implies ATOMIC).
        self.slot_add(Side::Gets, nr) || self.tryget_slow(nr, live)
    }

    #[cold]
    #[inline(never)]
    fn tryget_slow(&self, nr: isize, live: bool) -> bool {
        if slot::claim() && self.slot_add(Side::Gets, nr) {
            return true;
        }
        // The read-side section keeps a switch to atomic (and a kill's
        // confirm) from completing between our mode load and our add, as
        // upstream's: after the confirm, no tryget_live that saw the ref
        // live can still be adding.
        let _rcu = shrinker_rcu::read_lock();
        let mode = self.mode_for_access();
        if mode.is_percpu() {
            // Relaxed: per-CPU mode; the bias keeps the counter from zero.
            self.count.fetch_add(nr, Ordering::Relaxed);
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
    pub(super) fn put_many(&self, nr: usize) {
        // Dropping nothing is a no-op. Without this check an atomic put of 0
        // on a count of 0 would see `old == nr` and run `release` again.
        if nr == 0 {
            return;
        }
        let nr = delta(nr, "PercpuRef::put_many");
        if !self.slot_add(Side::Puts, nr) {
            self.put_slow(nr);
        }
    }

    /// Atomic mode, or a thread without a slot: the shared counter.
    #[cold]
    #[inline(never)]
    fn put_slow(&self, nr: isize) {
        if slot::claim() && self.slot_add(Side::Puts, nr) {
            return;
        }
        let rcu = shrinker_rcu::read_lock();
        if self.mode_for_access().is_percpu() {
            // Relaxed: per-CPU mode; the bias keeps the counter from zero
            // (the read-side section keeps the switch from removing it
            // before this RMW), and the grace period orders the decrement
            // before the sum.
            self.count.fetch_sub(nr, Ordering::Relaxed);
            return;
        }
        // Release: our accesses to the object happen-before release(), through
        // the fence(Acquire) in put_last() of whichever put reaches zero.
        let old = self.count.fetch_sub(nr, Ordering::Release);
        drop(rcu);
        if old == nr || Self::is_underflow(old.wrapping_sub(nr)) {
            self.put_last(old, nr);
        }
    }

    /// A count that went below zero outside the biased range: more puts than
    /// gets. (Biased counts live near `isize::MIN` or, after puts on the
    /// shared counter for slot gets, near `isize::MAX`.)
    #[inline]
    pub(super) fn is_underflow(new: isize) -> bool {
        (-(1 << 62)..0).contains(&new)
    }

    #[cold]
    #[inline(never)]
    fn put_last(&self, old: isize, nr: isize) {
        if old == nr {
            // Acquire: pairs with every Release put and with the Release add
            // in switch_to_atomic_rcu() (which carries the per-CPU users'
            // accesses, ordered before it by the slot sections' Release
            // ends and the grace period).
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
    pub(super) fn is_zero(&self) -> bool {
        if self.mode().is_percpu() {
            return false;
        }
        // Acquire: pairs with the Release of the put that reached zero (and,
        // through its release sequence, with the slot sum's Release add).
        self.count.load(Ordering::Acquire) == 0
    }
}
