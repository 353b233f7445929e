//! Memory groups (the kernel's memory cgroups) as far as this issue needs
//! them: the [`GroupId`] type and the per-(group, node) deferred counters.
//!
//! Only the root group exists for now. The next issue adds a tree of groups,
//! each with a per-node `ShrinkerInfo` (a two-level array of 64-id units:
//! bitmap + per-id deferred counts) indexed by the stable shrinker id
//! (`ids.rs`). The registry is shaped for it already:
//!
//! * every shrinker has a stable id from an id table readable under RCU;
//! * the `group_aware` flag is stored;
//! * the engine reads and writes deferred work only through
//!   [`Deferred::slot`], addressed by (group, node). For the root group the
//!   counters live in the shrinker itself (the kernel's
//!   `shrinker->nr_deferred`); for another group of a group-aware shrinker
//!   they will live in that group's `ShrinkerInfo` unit, and `slot` is the
//!   one place that learns to look there.

use crate::sync::AtomicUsize;

/// A memory group (memory cgroup analog).
///
/// # Examples
///
/// ```
/// use shrinker::GroupId;
/// assert_eq!(GroupId::default(), GroupId::ROOT);
/// assert_eq!(GroupId::ROOT.index(), 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(u32);

impl GroupId {
    /// The root group: global reclaim, and every shrinker that is not
    /// group-aware.
    pub const ROOT: GroupId = GroupId(0);

    /// The group's index (0 for the root).
    #[inline]
    #[must_use]
    pub fn index(self) -> u32 {
        self.0
    }

    /// The group with index `index` (the inverse of [`index`](Self::index)).
    #[inline]
    #[must_use]
    pub(crate) fn from_index(index: u32) -> Self {
        GroupId(index)
    }
}

/// The deferred-work counters a shrinker owns: one per node if it is
/// NUMA-aware, else one (the kernel's `nr_deferred` array).
///
/// Node 0's counter is stored inline, so that a visit to a shrinker that is
/// not NUMA-aware (most of them) touches the shrinker's own cache line and no
/// other allocation; nodes 1.. live in `rest`.
///
/// # Invariants
///
/// `rest.len()` is the registry's node count minus one for a NUMA-aware
/// shrinker and 0 otherwise; callers map a NUMA-unaware shrinker's node to 0
/// before calling [`slot`](Self::slot).
pub(crate) struct Deferred {
    first: AtomicUsize,
    rest: Box<[AtomicUsize]>,
}

impl Deferred {
    /// `n >= 1` zeroed counters, or the allocation error.
    pub(crate) fn try_new(n: usize) -> Result<Self, std::collections::TryReserveError> {
        let extra = n.saturating_sub(1);
        let mut v = Vec::new();
        v.try_reserve_exact(extra)?;
        v.extend((0..extra).map(|_| AtomicUsize::new(0)));
        Ok(Deferred {
            first: AtomicUsize::new(0),
            rest: v.into_boxed_slice(),
        })
    }

    /// The counter for (`group`, `node`).
    ///
    /// # Panics
    ///
    /// If `node` is out of range (the registry validates requests first), or
    /// `group` is not the root (no other group exists yet).
    #[inline]
    pub(crate) fn slot(&self, group: GroupId, node: usize) -> &AtomicUsize {
        assert_eq!(group, GroupId::ROOT, "memory groups are not implemented");
        match node {
            0 => &self.first,
            n => &self.rest[n - 1],
        }
    }

    /// Every root-group counter, for statistics.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &AtomicUsize> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }
}
