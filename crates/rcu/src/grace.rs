//! Grace periods: liburcu's two-phase parity algorithm, batched by sequence number.
//!
//! # Reader states
//!
//! A reader's `ctr` word is `nesting | phase`, where `nesting` is the low half
//! (`NEST_MASK`) and `phase` one high bit (`PHASE`). Against the global
//! `gp.ctr` (`GP_COUNT | current phase`) a reader is:
//!
//! | `ctr & NEST_MASK` | `(ctr ^ gp.ctr) & PHASE` | state |
//! |---|---|---|
//! | 0 | — | `Inactive`: quiescent |
//! | > 0 | 0 | `ActiveCurrent`: in a section that saw the current phase |
//! | > 0 | `PHASE` | `ActiveOld`: in a section that saw the previous phase |
//!
//! # The protocol (`Domain::run_grace_period`)
//!
//! 1. Mark the sequence odd (a grace period is in progress). This must precede
//!    step 2, so that a caller whose cookie read the even value is covered.
//! 2. `master_barrier()`: orders the caller's unpublication (and everything it
//!    did before) before the reads of readers' `ctr` below. Pairs with the
//!    `reader_barrier()` after the `ctr` store in `read_lock`.
//! 3. Wait until no registered reader is `ActiveOld`; remember the
//!    `ActiveCurrent` ones.
//! 4. Flip the phase of `gp.ctr`.
//! 5. Wait until none of the remembered readers is `ActiveOld` (relative to
//!    the new phase) — i.e. each has left the section it was in at step 3.
//!    Also wait for the counted readers of exiting threads (`defunct_readers`).
//! 6. `master_barrier()`: orders every observed section end (and the reads
//!    inside those sections) before whatever the caller does next — freeing.
//!    Pairs with the `reader_barrier()` before the `ctr` store in
//!    `read_unlock`.
//! 7. Publish the completed sequence number with `Release`; `poll_state`'s
//!    `Acquire` load pairs with it, so a caller batched onto this grace period
//!    inherits step 6's ordering.
//!
//! Why two phases: an outermost `read_lock` loads `gp.ctr` and stores it into
//! its own `ctr` in two steps. A reader delayed between them would, with a
//! single scan, look `Inactive` and later store a stale phase while reading
//! data the updater is about to free. After the flip, such a reader is
//! `ActiveOld` at step 5 and is waited for.
//!
//! # Sleeping
//!
//! The first `ACTIVE_ATTEMPTS` scans busy-wait. After that the grace period
//! sets `gp.futex = FUTEX_WAITING`, issues `master_barrier()` and re-scans;
//! if a reader is still active it sleeps on the futex. A reader leaving its
//! outermost section executes `reader_barrier()` after its `ctr` store and then
//! checks `gp.futex`: a store-buffering handshake,
//!
//! ```text
//!   grace period                          reader (read_unlock)
//!   futex = FUTEX_WAITING                 ctr = nesting 0
//!   master_barrier()                      reader_barrier()
//!   scan ctr                              if futex == FUTEX_WAITING: wake
//! ```
//!
//! so either the scan sees the reader quiescent or the reader sees the flag
//! and wakes the grace period. The registry lock is dropped while sleeping,
//! so threads can register and exit during a long grace period.
//!
//! # Batching and the polled API
//!
//! `seq` is even when idle and odd while a grace period runs; each grace
//! period adds 2. A cookie taken at time *t* names the first sequence value at
//! which a grace period that started after *t* has ended:
//! `(seq + 3) & !1` (the next completion if idle, the one after the current if
//! busy). `synchronize_rcu` takes a cookie, then the grace-period lock, and
//! runs a grace period only if nobody else's has satisfied the cookie by then;
//! N concurrent callers therefore cost at most two grace periods.

use crate::barrier::{futex_wait, futex_wake};
use crate::domain::{domain, Domain};
use crate::reader::Reader;
use crate::sync::{fence, lock, spin_hint, Ordering};

/// One reader section in the nesting count.
pub(crate) const GP_COUNT: usize = 1;
/// The phase bit: the upper half's lowest bit (bit 32 on 64-bit targets).
pub(crate) const PHASE: usize = 1 << (usize::BITS / 2);
/// The nesting count.
pub(crate) const NEST_MASK: usize = PHASE - 1;

/// `gp.futex` while a grace period sleeps (liburcu's `-1`).
pub(crate) const FUTEX_WAITING: u32 = u32::MAX;

/// Busy-wait scans before sleeping (liburcu's `RCU_QS_ACTIVE_ATTEMPTS`).
/// Under loom, two, so that the models also explore the sleeping handshake.
const ACTIVE_ATTEMPTS: u32 = if cfg!(loom) { 2 } else { 100 };

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum ReaderState {
    Inactive,
    ActiveCurrent,
    ActiveOld,
}

#[inline]
fn reader_state(ctr: usize, gp_ctr: usize) -> ReaderState {
    if ctr & NEST_MASK == 0 {
        ReaderState::Inactive
    } else if (ctr ^ gp_ctr) & PHASE == 0 {
        ReaderState::ActiveCurrent
    } else {
        ReaderState::ActiveOld
    }
}

/// A registered reader record. Records live in their thread's thread-local
/// storage; a record is in exactly one of the lists below from registration
/// until its thread unregisters it (under the registry lock) at exit, so a
/// pointer read from a list under the lock is always live.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub(crate) struct ReaderRef(pub(crate) *const Reader);

// SAFETY: a `ReaderRef` is only dereferenced under the registry lock, while
// its record is registered and therefore alive (see `ReaderRef`); `Reader`
// itself is made of atomics, so sharing it across threads is sound.
unsafe impl Send for ReaderRef {}

/// The registry, partitioned the way a grace period needs it.
pub(crate) struct ReaderLists {
    /// Not yet looked at by the current grace period (all readers when idle).
    registry: Vec<ReaderRef>,
    /// Seen `ActiveCurrent` in phase 1: must be re-checked after the flip.
    cur_snap: Vec<ReaderRef>,
    /// Seen quiescent by the current grace period.
    qs: Vec<ReaderRef>,
}

impl ReaderLists {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        ReaderLists {
            registry: Vec::new(),
            cur_snap: Vec::new(),
            qs: Vec::new(),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        ReaderLists {
            registry: Vec::new(),
            cur_snap: Vec::new(),
            qs: Vec::new(),
        }
    }

    pub(crate) fn register(&mut self, reader: ReaderRef) {
        self.registry.push(reader);
    }

    /// Remove `reader` from whichever list holds it (a grace period may be
    /// between scans).
    pub(crate) fn unregister(&mut self, reader: ReaderRef) {
        for list in [&mut self.registry, &mut self.cur_snap, &mut self.qs] {
            if let Some(i) = list.iter().position(|r| *r == reader) {
                list.swap_remove(i);
                return;
            }
        }
        debug_assert!(false, "unregistering an RCU reader that is not registered");
    }

    /// Number of registered readers, whichever list holds them.
    pub(crate) fn len(&self) -> usize {
        self.registry.len() + self.cur_snap.len() + self.qs.len()
    }

    /// Phase 1 scan: move quiescent readers to `qs` and current-phase readers
    /// to `cur_snap`; true once no old-phase reader is left.
    fn scan_phase1(&mut self, gp_ctr: usize) -> bool {
        let mut i = 0;
        while i < self.registry.len() {
            match self.state_of(self.registry[i], gp_ctr) {
                ReaderState::Inactive => self.qs.push(self.registry.swap_remove(i)),
                ReaderState::ActiveCurrent => self.cur_snap.push(self.registry.swap_remove(i)),
                ReaderState::ActiveOld => i += 1,
            }
        }
        self.registry.is_empty()
    }

    /// Phase 2 scan (after the flip): readers remembered in phase 1 leave
    /// `cur_snap` once they are no longer in their old-phase section.
    fn scan_phase2(&mut self, gp_ctr: usize) -> bool {
        let mut i = 0;
        while i < self.cur_snap.len() {
            match self.state_of(self.cur_snap[i], gp_ctr) {
                ReaderState::Inactive | ReaderState::ActiveCurrent => {
                    self.qs.push(self.cur_snap.swap_remove(i))
                }
                ReaderState::ActiveOld => i += 1,
            }
        }
        self.cur_snap.is_empty()
    }

    fn finish(&mut self) {
        debug_assert!(self.cur_snap.is_empty());
        self.registry.append(&mut self.qs);
    }

    #[inline]
    fn state_of(&self, reader: ReaderRef, gp_ctr: usize) -> ReaderState {
        // SAFETY: `reader` is in one of our lists and we hold the registry
        // lock (we are `&mut self` behind it), so its record is alive.
        let ctr = unsafe { &*reader.0 }
            .ctr
            // Acquire: pairs with the Release `ctr` store in `read_unlock`;
            // with the barriers of steps 2 and 6 it orders the section's
            // reads before our caller's frees.
            .load(Ordering::Acquire);
        reader_state(ctr, gp_ctr)
    }
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum Phase {
    One,
    Two,
}

/// A grace-period cookie: see [`get_state`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct GpState(u64);

impl Domain {
    /// Wait until the grace-period sequence has reached `cookie`, running a
    /// grace period ourselves if nobody else's covers it.
    pub(crate) fn synchronize_to(&self, cookie: GpState) {
        if self.poll(cookie) {
            return;
        }
        let _gp = lock(&self.gp_lock);
        if self.poll(cookie) {
            // Batched: a grace period that started after our cookie ended
            // while we waited for the lock.
            return;
        }
        self.run_grace_period();
        debug_assert!(self.poll(cookie));
    }

    pub(crate) fn cookie(&self) -> GpState {
        // SeqCst fence: orders the caller's earlier stores (the unpublication
        // this cookie will protect) before the load of `seq`. If the load
        // reads a value older than some grace period's step-1 store, this
        // fence precedes that grace period's step-2 barrier in the SeqCst
        // order, so the grace period's scans see the caller's stores.
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence above.
        let seq = self.seq.load(Ordering::Relaxed);
        GpState((seq.wrapping_add(3)) & !1)
    }

    #[inline]
    pub(crate) fn poll(&self, cookie: GpState) -> bool {
        // Acquire: pairs with the Release store at step 7 of the grace period
        // that reached this value.
        let seq = self.seq.load(Ordering::Acquire);
        // `as i64` reinterprets on purpose: serial-number comparison (the
        // kernel's `ULONG_CMP_GE`), exact while `seq` and the cookie are
        // within 2^63 of each other, i.e. 2^62 grace periods: centuries at a
        // grace period per nanosecond.
        seq.wrapping_sub(cookie.0) as i64 >= 0
    }

    /// One full grace period. Caller holds `gp_lock`.
    fn run_grace_period(&self) {
        // Relaxed: `seq` is only written under `gp_lock`, which we hold.
        let seq = self.seq.load(Ordering::Relaxed);
        debug_assert_eq!(seq & 1, 0, "grace period already in progress");
        // Step 1. Relaxed + the SeqCst barrier of step 2 (see `cookie`).
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);

        self.gp.mode.ensure_init_locked(self);

        // Step 2.
        self.gp.mode.master_barrier();
        // Step 3.
        self.wait_for_readers(Phase::One);

        // Step 4. SeqCst fences: keep the flip after the phase-1 scans and
        // before the phase-2 scans (liburcu's `cmm_smp_mb()` pair: needed for
        // progress, not for safety, but cheap on the update side).
        fence(Ordering::SeqCst);
        // Relaxed: readers pick the phase up with a relaxed load; any phase
        // they see is handled by the two-phase argument above.
        let ctr = self.gp.ctr.load(Ordering::Relaxed);
        self.gp.ctr.store(ctr ^ PHASE, Ordering::Relaxed);
        fence(Ordering::SeqCst);

        // Step 5.
        self.wait_for_readers(Phase::Two);
        lock(&self.readers).finish();

        // Step 6.
        self.gp.mode.master_barrier();
        // Step 7. Release: pairs with the Acquire in `poll`.
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    fn wait_for_readers(&self, phase: Phase) {
        let mut attempts = 0u32;
        loop {
            if attempts < ACTIVE_ATTEMPTS {
                attempts += 1;
            }
            let sleeping = attempts >= ACTIVE_ATTEMPTS;
            if sleeping {
                // Relaxed + barrier: the handshake's left column (module doc).
                self.gp.futex.store(FUTEX_WAITING, Ordering::Relaxed);
                self.gp.mode.master_barrier();
            }
            let done = {
                let mut lists = lock(&self.readers);
                // Relaxed: only we write `gp.ctr`.
                let gp_ctr = self.gp.ctr.load(Ordering::Relaxed);
                match phase {
                    Phase::One => lists.scan_phase1(gp_ctr),
                    Phase::Two => lists.scan_phase2(gp_ctr) && self.defunct_quiescent(),
                }
            };
            if done {
                if sleeping {
                    // Order the scan's loads before clearing the flag
                    // (liburcu: "read reader_gp before write futex").
                    self.gp.mode.master_barrier();
                    // Relaxed: a stale FUTEX_WAITING seen by a reader only
                    // costs it one spurious wake.
                    self.gp.futex.store(0, Ordering::Relaxed);
                }
                return;
            }
            if sleeping {
                self.wait_gp();
            } else {
                spin_hint();
            }
        }
    }

    fn defunct_quiescent(&self) -> bool {
        // Acquire: pairs with the Release decrement when a counted section
        // ends (`reader.rs`), ordering its reads before our caller's frees.
        self.defunct_readers.load(Ordering::Acquire) == 0
    }

    fn wait_gp(&self) {
        fence(Ordering::SeqCst);
        // Relaxed: the futex syscall re-checks the value atomically.
        if self.gp.futex.load(Ordering::Relaxed) != FUTEX_WAITING {
            return;
        }
        futex_wait(&self.gp.futex, FUTEX_WAITING);
    }

    /// Called by a reader that saw `FUTEX_WAITING` after leaving its section.
    #[cold]
    pub(crate) fn wake_gp(&self) {
        // Relaxed: the grace period re-scans after waking; see module doc.
        self.gp.futex.store(0, Ordering::Relaxed);
        futex_wake(&self.gp.futex);
    }
}

/// Wait for a full grace period: every read-side section that began before
/// this call has ended when it returns.
///
/// Concurrent callers share grace periods. Sections that begin during the
/// wait may still be running when it returns; they cannot see anything the
/// caller unpublished before calling.
///
/// # Ordering
///
/// On return, every thread has executed a full barrier between the end of its
/// last read-side section that began before the call and the return, and the
/// caller's accesses before the call are ordered before every section that
/// did not have to be waited for (the kernel's `synchronize_rcu()` guarantee).
///
/// # Blocking
///
/// Blocks for a grace period: tens of microseconds when readers are short
/// (two `membarrier` calls dominate), as long as the longest pre-existing
/// reader otherwise.
///
/// # Panics
///
/// Inside a read-side section: it would wait for itself.
///
/// # Example
///
/// ```
/// let data = shrinker_rcu::RcuPtr::new(1u32);
/// let old = data.replace(2).unwrap();
/// shrinker_rcu::synchronize_rcu();
/// // No reader can still hold the old value.
/// assert_eq!(*old.into_box(), 1);
/// ```
pub fn synchronize_rcu() {
    crate::reader::assert_not_in_read_section("synchronize_rcu");
    let domain = domain();
    let cookie = domain.cookie();
    domain.synchronize_to(cookie);
}

/// A cookie for the polled grace-period API (`get_state_synchronize_rcu()`).
///
/// [`poll_state`] on the cookie turns true once a full grace period has
/// elapsed since this call; [`cond_synchronize`] waits only if none has.
///
/// # Ordering
///
/// Issues a full fence before reading the grace-period sequence, so stores
/// made before this call are covered by the grace period the cookie names.
///
/// # Example
///
/// ```
/// let cookie = shrinker_rcu::get_state();
/// shrinker_rcu::synchronize_rcu();
/// assert!(shrinker_rcu::poll_state(cookie));
/// ```
pub fn get_state() -> GpState {
    domain().cookie()
}

/// Has a full grace period elapsed since `cookie` was taken?
/// (`poll_state_synchronize_rcu()`.) Never blocks: one atomic load.
///
/// # Ordering
///
/// When it returns true, the grace period's final barrier happens-before the
/// return (Acquire), exactly as if the caller had called [`synchronize_rcu`].
pub fn poll_state(cookie: GpState) -> bool {
    domain().poll(cookie)
}

/// Wait for a grace period only if none has elapsed since `cookie`
/// (`cond_synchronize_rcu()`).
///
/// # Blocking
///
/// Like [`synchronize_rcu`], unless a full grace period has already elapsed
/// since `cookie` was taken; then it returns at once.
///
/// # Panics
///
/// Inside a read-side section, if it has to wait.
pub fn cond_synchronize(cookie: GpState) {
    let domain = domain();
    if domain.poll(cookie) {
        return;
    }
    crate::reader::assert_not_in_read_section("cond_synchronize");
    domain.synchronize_to(cookie);
}

/// Completed grace periods since start-up.
pub(crate) fn completed() -> u64 {
    // Relaxed: a statistic.
    domain().seq.load(Ordering::Relaxed) / 2
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn reader_states() {
        let gp = GP_COUNT;
        assert_eq!(reader_state(0, gp), ReaderState::Inactive);
        assert_eq!(reader_state(PHASE, gp), ReaderState::Inactive);
        assert_eq!(reader_state(GP_COUNT, gp), ReaderState::ActiveCurrent);
        assert_eq!(reader_state(GP_COUNT + 3, gp), ReaderState::ActiveCurrent);
        assert_eq!(reader_state(PHASE | GP_COUNT, gp), ReaderState::ActiveOld);
        assert_eq!(
            reader_state(PHASE | GP_COUNT, gp ^ PHASE),
            ReaderState::ActiveCurrent
        );
    }

    #[test]
    fn cookie_arithmetic() {
        // Idle at 4: the next grace period ends at 6.
        assert_eq!(GpState((4u64 + 3) & !1), GpState(6));
        // Busy at 5 (started before us): we need the one after, ending at 8.
        assert_eq!(GpState((5u64 + 3) & !1), GpState(8));
        // Wrapping comparison.
        let near_max = u64::MAX - 1;
        assert!(0u64.wrapping_sub(near_max) as i64 >= 0);
    }
}
