//! The state the ref's halves share: the mode word's bits and its snapshot
//! type, [`InitFlags`], and `RefData`, the `Arc`-shared data the fast paths
//! (`count.rs`) and the mode switches (`switch.rs`) both work on. The state
//! table is in the `percpu_ref` module essay.

use super::slot::Slot;
use crate::sync::{AtomicIsize, AtomicUsize, Condvar, Mutex};
use crossbeam_utils::CachePadded;
use std::fmt;
use std::ops::BitOr;

/// Gets and puts go to `count`, not to the slots. Set by a switch to atomic
/// (step 1), cleared only by `switch_to_percpu`.
pub(super) const ATOMIC_BIT: usize = 1 << 0;
/// Killed (or created dead): `tryget_live` fails. Only ever set together with
/// or after `ATOMIC_BIT`; cleared by `resurrect`/`reinit`.
pub(super) const DEAD_BIT: usize = 1 << 1;

/// `PERCPU_COUNT_BIAS`: carried by `count` while slots may hold references.
pub(super) const PERCPU_COUNT_BIAS: isize = isize::MIN;

/// A loaded mode word.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Mode(pub(super) usize);

impl Mode {
    #[inline]
    pub(super) fn is_percpu(self) -> bool {
        self.0 & ATOMIC_BIT == 0
    }
    #[inline]
    pub(super) fn is_dead(self) -> bool {
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

/// How [`PercpuRef::new`](crate::PercpuRef::new) starts (`PERCPU_REF_INIT_*`, `PERCPU_REF_ALLOW_REINIT`).
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
    /// [`PercpuRef::switch_to_percpu`](crate::PercpuRef::switch_to_percpu) (`PERCPU_REF_INIT_ATOMIC`). Implies
    /// `ALLOW_REINIT`.
    pub const ATOMIC: Self = Self(1 << 0);
    /// Start dead: atomic mode, count 0, no initial reference
    /// (`PERCPU_REF_INIT_DEAD`). Must be revived with
    /// [`PercpuRef::reinit`](crate::PercpuRef::reinit) or [`PercpuRef::resurrect`](crate::PercpuRef::resurrect) before use. Implies
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
pub(super) type Confirm = Box<dyn FnOnce() + Send + 'static>;
/// The release callback (`percpu_ref_func_t *release`).
pub(super) type Release = Box<dyn Fn() + Send + Sync + 'static>;

/// The shared state; the RCU callback holds its own `Arc` to it, so a switch
/// in flight outlives the `PercpuRef`.
pub(super) struct RefData {
    /// `ATOMIC_BIT | DEAD_BIT`; see the state table in the module docs.
    /// Written only under `switch`.
    pub(super) mode: AtomicUsize,
    /// The atomic counter: exact in atomic mode once the slots are summed;
    /// `PERCPU_COUNT_BIAS` + direct references in per-CPU mode.
    pub(super) count: AtomicIsize,
    /// One slot per thread index (`slot.rs`); written in per-CPU mode by
    /// the owning thread only, read and zeroed by mode switches when no
    /// thread can be writing.
    pub(super) slots: Box<[CachePadded<Slot>]>,
    pub(super) release: Release,
    /// Mode-switch state (upstream: `percpu_ref_data`'s cold fields under the
    /// global `percpu_ref_switch_lock`; here one mutex per ref).
    pub(super) switch: Mutex<SwitchState>,
    /// Signalled when `switching` clears (upstream: `percpu_ref_switch_waitq`).
    pub(super) switched: Condvar,
}

pub(super) struct SwitchState {
    /// Stay atomic even when live: set by `switch_to_atomic` and
    /// `InitFlags::ATOMIC`, cleared by `switch_to_percpu`.
    pub(super) force_atomic: bool,
    /// Returning to per-CPU mode is allowed.
    pub(super) allow_reinit: bool,
    /// A switch to atomic is in flight (upstream: `confirm_switch != NULL`).
    pub(super) switching: bool,
    /// Confirms of asynchronous calls (`kill_and_confirm`, `switch_to_atomic`)
    /// that found a switch in flight: the in-flight switch runs them after
    /// its own, in order, before it clears `switching`. Empty unless
    /// `switching`.
    pub(super) chained: Vec<Confirm>,
}
