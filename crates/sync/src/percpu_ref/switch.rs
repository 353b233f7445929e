//! The mode switches: kill and confirm, switch to atomic (the grace-period
//! callback that sums the slots) and back to per-CPU, resurrect and reinit.
//! See "The switch to atomic, step by step" in the `percpu_ref` module essay.

use super::count::report_once;
use super::slot;
use super::state::{Confirm, RefData, SwitchState, ATOMIC_BIT, DEAD_BIT, PERCPU_COUNT_BIAS};
use crate::sync::{Arc, MutexGuard, Ordering};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::AtomicBool as StdAtomicBool;
use std::sync::PoisonError;

/// Work decided under the switch mutex and done after dropping it: queueing
/// an RCU callback may block on the RCU worker, and callbacks are user code.
#[must_use]
pub(super) enum Pending {
    Nothing,
    /// The ref was already atomic: confirm at once.
    Confirm(Confirm),
    /// Step 2: queue the switch callback.
    QueueSwitch(Arc<RefData>, Option<Confirm>),
}

impl Pending {
    pub(super) fn run(self) {
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
pub(super) fn panic_waiting_in_callback(caller: &str) -> ! {
    panic!(
        "{caller} called from inside an RCU callback must wait for a switch to atomic that \
         completes in an RCU callback: the callback worker would wait for itself. Use the \
         asynchronous forms there (switch_to_atomic, kill, kill_and_confirm)"
    )
}

#[cold]
#[inline(never)]
#[track_caller]
pub(super) fn panic_waiting_in_read_section(caller: &str) -> ! {
    panic!(
        "{caller} inside an RCU read-side section would wait for a grace period that waits \
         for this section"
    )
}

impl RefData {
    pub(super) fn lock(&self) -> MutexGuard<'_, SwitchState> {
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
    pub(super) fn may_wait<'a>(
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
    pub(super) fn wait_switched<'a>(
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
    pub(super) fn switch_mode<'a>(
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
        // 3. The grace period has ended every slow-path section that saw
        //    per-CPU mode (they update `count` only). The fast path's
        //    sections are waited for here: after the heavy barrier every new
        //    one sees ATOMIC, and each one still open shows `busy`
        //    (slot.rs, steps b and c).
        slot::heavy_barrier();
        for s in this.slots.iter() {
            s.wait_section();
        }
        //    Sum first, then add: adding slot by slot could let `count`
        //    reach zero between two slots (gets on one thread, puts on
        //    another). The Acquire loads of `busy` ordered every slot store
        //    before these loads, and no new one can start.
        let sum = this
            .slots
            .iter()
            .fold(0isize, |acc, s| acc.wrapping_add(s.value()));
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
    /// `switching`), so its grace period and its wait for the slots'
    /// sections have ended every such section.
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
            // Ordered before the Release store below.
            slot.zero();
        }
        // Release: pairs with the Acquire in mode_for_access(); a get/put that
        // sees per-CPU mode sees the zeroed slots and the bias.
        self.mode.store(mode.0 & !ATOMIC_BIT, Ordering::Release);
    }

    /// `kill_and_confirm`, under and after the mutex.
    #[track_caller]
    pub(super) fn kill(this: &Arc<Self>, confirm: Option<Confirm>) {
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

    pub(super) fn switch_to_atomic(this: &Arc<Self>, confirm: Option<Confirm>) {
        let mut st = this.lock();
        st.force_atomic = true;
        let pending = Self::switch_to_atomic_async(this, &mut st, confirm);
        drop(st);
        pending.run();
    }

    /// `percpu_ref_resurrect` after its misuse check.
    #[track_caller]
    pub(super) fn resurrect_locked(
        this: &Arc<Self>,
        st: MutexGuard<'_, SwitchState>,
        caller: &str,
    ) {
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
