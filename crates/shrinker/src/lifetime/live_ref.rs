//! [`LiveRef`]: the pin of an object whose owner, to take it apart, waits
//! for every reference to go: a shrinker object (unregister) and a group's
//! data (removal). Linux 6.7's `shrinker_try_get` / `shrinker_put` with
//! `shrinker_free`'s completion, plus the dying mark of
//! `percpu_ref_tryget_live`.
//!
//! The completion is not a field: the owner keeps it beside the count, so
//! that a shrinker object's first cache line holds only the count and the
//! mark (registry/object.rs, test `hot_fields_share_the_first_cache_line`).
//! Every method that may drop the last reference takes it.

use shrinker_sync::{Completion, Refcount};

use crate::sync::{AtomicBool, Ordering};

/// A reference count with a dying mark.
///
/// # Invariants
///
/// Once the count is zero it never rises again (`inc_not_zero`), and the
/// `put` that takes it to zero completes the owner's completion. Once
/// `dying` is set no new reference succeeds.
pub(crate) struct LiveRef {
    count: Refcount,
    /// Set by the owner before it drops the initial reference: from then on
    /// `try_get` refuses new pins, so overlapping walks cannot keep the
    /// count above zero forever (`percpu_ref_tryget_live` after a kill).
    dying: AtomicBool,
}

impl LiveRef {
    /// A count of `initial` (0: not callable yet, set later with
    /// [`activate`](Self::activate); 1: live from the start).
    pub(crate) fn new(initial: i32) -> Self {
        LiveRef {
            count: Refcount::new(initial),
            dying: AtomicBool::new(false),
        }
    }

    /// Make a count of 0 live with the initial reference, **last** of all
    /// the initialisation (`refcount_set(&shrinker->refcount, 1)` in
    /// `shrinker_register`).
    ///
    /// # Ordering
    ///
    /// Release: pairs with the Acquire of a successful [`try_get`]
    /// (and of the light pin's fence): everything written before is
    /// visible to the pin's holder.
    ///
    /// [`try_get`]: Self::try_get
    #[inline]
    pub(crate) fn activate(&self) {
        self.count.set_release(1);
    }

    /// The count now (0: not, or no longer, live). A snapshot.
    #[inline]
    pub(crate) fn read(&self) -> i32 {
        self.count.read()
    }

    /// Take a reference if the object is live and its owner has not begun
    /// to take it apart. The caller is inside an RCU read section (a
    /// refused reference is put again, which may complete `done`: see
    /// [`put`](Self::put)).
    ///
    /// # Ordering
    ///
    /// Acquire on success: pairs with the Release of
    /// [`activate`](Self::activate) (or of the publication of an object
    /// created live), so the fields written at build are visible.
    ///
    /// The `dying` check after the increment is what bounds the owner's
    /// wait. The owner stores `dying` and then drops the initial reference
    /// with a Release decrement ([`kill_and_wait`](Self::kill_and_wait)).
    /// Every later change of the count is a read-modify-write, so an
    /// increment that comes after that decrement in the count's
    /// modification order reads from its release sequence, and its Acquire
    /// synchronizes with it: the check below sees `dying` and the reference
    /// is given back. An increment that came before it is a pin already in
    /// flight, which the owner waits for. Hence once the initial reference
    /// is dropped no new reference succeeds, and the count reaches zero as
    /// soon as the pins in flight are put, however many walks overlap
    /// (three walkers without pause starved an unregister for more than
    /// 10 s when only the count was checked: `tests/hardening.rs`).
    #[inline]
    #[must_use = "a successful try_get must be balanced by put"]
    pub(crate) fn try_get(&self, done: &Completion) -> bool {
        // Relaxed: a hint that spares a dying object's line an RMW; the
        // check after the increment is the one that counts.
        if self.dying.load(Ordering::Relaxed) || !self.count.inc_not_zero_acquire() {
            return false;
        }
        // Relaxed: ordered by the increment's Acquire (see above).
        if self.dying.load(Ordering::Relaxed) {
            self.put(done);
            return false;
        }
        true
    }

    /// Drop a reference: the last one completes `done`. The caller must be
    /// inside an RCU read section unless it is the owner (the completer may
    /// still be inside `complete()` when the owner, woken, frees the object
    /// after a grace period; the section holds that grace period off).
    ///
    /// # Ordering
    ///
    /// Release (Acquire on the last): every access made under this
    /// reference happens-before the completion the owner waits for.
    #[inline]
    pub(crate) fn put(&self, done: &Completion) {
        if self.count.dec_and_test() {
            complete_slow(done);
        }
    }

    /// The owner's side: refuse new references from now on, drop the
    /// initial one, and wait until every reference in flight is put.
    ///
    /// # Ordering
    ///
    /// If ours was the last reference, `dec_and_test`'s Acquire orders
    /// every earlier holder's accesses before what follows; otherwise the
    /// completion's mutex does (the last `put` completes it).
    ///
    /// # Blocking
    ///
    /// Until every reference in flight is put: first spinning for up to
    /// [`SPIN_BEFORE_SLEEP`] (a reference in flight is usually one callout
    /// to a cheap callback, shorter than a sleep and wake-up), then asleep
    /// on `done`.
    pub(crate) fn kill_and_wait(&self, done: &Completion) {
        // Relaxed: published by the Release decrement of the initial
        // reference that follows (see `try_get`).
        self.dying.store(true, Ordering::Relaxed);
        if !self.count.dec_and_test() {
            // The spin only delays the sleep; the ordering is `wait`'s
            // (the completion's mutex), whatever the spin saw.
            #[cfg(not(loom))]
            spin_until_zero(&self.count);
            done.wait();
        }
    }
}

/// How long [`LiveRef::kill_and_wait`] spins before it sleeps. Measured
/// with 2 threads registering and unregistering while a third walks, on 2
/// CPUs: an unregister that slept at once on a callout in flight was woken
/// only when the scheduler next ran it, 0.6–3 ms later, where the callout
/// itself ends within a microsecond.
#[cfg(not(loom))]
pub(crate) const SPIN_BEFORE_SLEEP: std::time::Duration = std::time::Duration::from_micros(20);

/// Spin until `count` reads zero, for at most [`SPIN_BEFORE_SLEEP`].
#[cfg(not(loom))]
#[cold]
fn spin_until_zero(count: &Refcount) {
    let start = std::time::Instant::now();
    loop {
        for _ in 0..64 {
            if count.read() == 0 {
                return;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN_BEFORE_SLEEP {
            return;
        }
    }
}

#[cold]
fn complete_slow(done: &Completion) {
    done.complete();
}
