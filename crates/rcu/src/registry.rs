//! The reader registry: each thread's `ctr` word, what it means to a grace
//! period, and the lists a grace period sorts the registered readers into.
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
//! The low half's top bit, [`NOT_REGISTERED`], is only ever set in the `ctr`
//! of a thread that is not in the registry, so no grace period sees it; to
//! the owning thread it makes the nesting count look full, which sends its
//! next `read_lock` off the fast path (`reader.rs`, "The fast path").
//!
//! `grace.rs` runs the protocol over these states; `reader.rs` writes `ctr`.
//! This file knows neither: it holds the data both share, below the domain.

use crate::sync::{AtomicUsize, Ordering};

/// A thread's reader record: `nesting | phase` (see the table above). Only the
/// owning thread writes it (`reader.rs`); grace periods read it through
/// [`ReaderLists`].
pub(crate) struct Reader {
    pub(crate) ctr: AtomicUsize,
}

/// One reader section in the nesting count.
pub(crate) const GP_COUNT: usize = 1;
/// The phase bit: the upper half's lowest bit (bit 32 on 64-bit targets).
pub(crate) const PHASE: usize = 1 << (usize::BITS / 2);
/// The low half: the nesting count and [`NOT_REGISTERED`]. Zero means
/// quiescent (the state table above); for a registered reader it is the
/// nesting count alone.
pub(crate) const NEST_MASK: usize = PHASE - 1;
/// The low half's top bit (bit 31 on 64-bit targets), set in the `ctr` of a
/// thread that is not registered: one that never entered a section, or whose
/// registration thread-local destruction has torn down (`reader.rs`). A
/// registered reader's `ctr` never has it, so grace periods never see it;
/// it lets `read_lock`'s fast path tell "not registered" from "outermost
/// section" with the nesting test it makes anyway.
pub(crate) const NOT_REGISTERED: usize = PHASE >> 1;
/// The most read-side sections a thread can have open at once: the nesting
/// bits below [`NOT_REGISTERED`] (`2^31 - 1` on 64-bit targets).
pub(crate) const NEST_MAX: usize = NOT_REGISTERED - 1;

/// `gp.futex` while a grace period sleeps (liburcu's `-1`).
pub(crate) const FUTEX_WAITING: u32 = u32::MAX;

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
    loom_const_fn! {
        pub(crate) fn new() -> Self {
            ReaderLists {
                registry: Vec::new(),
                cur_snap: Vec::new(),
                qs: Vec::new(),
            }
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
    pub(crate) fn scan_phase1(&mut self, gp_ctr: usize) -> bool {
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
    pub(crate) fn scan_phase2(&mut self, gp_ctr: usize) -> bool {
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

    pub(crate) fn finish(&mut self) {
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
}
