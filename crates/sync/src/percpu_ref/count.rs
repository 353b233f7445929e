//! The fast paths: gets, trygets and puts on this thread's slot or on the
//! shared counter, and the put that reaches zero. See "Slots in userspace"
//! and "The bias" in the `percpu_ref` module essay.

use super::state::{Mode, RefData};
use crate::slot;
use crate::sync::{acquire_after_final_dec, AtomicIsize, Ordering};
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
    pub(super) fn mode(&self) -> Mode {
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
    pub(super) fn get_many(&self, nr: usize) {
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
    pub(super) fn tryget_many(&self, nr: usize, live: bool) -> bool {
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
    pub(super) fn put_many(&self, nr: usize) {
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
    pub(super) fn is_underflow(new: isize) -> bool {
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
    pub(super) fn is_zero(&self) -> bool {
        if self.mode().is_percpu() {
            return false;
        }
        // Acquire: pairs with the Release of the put that reached zero (and,
        // through its release sequence, with the slot sum's Release add).
        self.count.load(Ordering::Acquire) == 0
    }
}
