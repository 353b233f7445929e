//! Memory groups (the kernel's memory cgroups): the public face.
//!
//! * [`GroupId`]: a group's index. Indices are handed out in increasing
//!   order and never reused (a removed group's index stays dead), so that
//!   per-group tables indexed by it ([`ListLru`](crate::ListLru)'s, the
//!   registry's) never confuse a new group with an old one.
//! * [`GroupObserver`]: what a removal tells the holders of per-group
//!   objects (the kernel's `memcg_reparent_objcgs` /
//!   `memcg_reparent_list_lrus` calls in `memcg_offline_kmem`).
//! * `Deferred`: the deferred-work counters a shrinker owns for the root
//!   group (the kernel's `shrinker->nr_deferred`). Another group's counters
//!   live in that group's `ShrinkerInfo` units (groups.rs), and the walk
//!   hands the engine whichever counter applies.
//!
//! The tree, `ShrinkerInfo`, `set_shrinker_bit` and the group walk are in
//! groups.rs.

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
    /// group-aware. It always exists and cannot be removed.
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

/// Told when a memory group is removed, to move what it holds for the group
/// into the parent (registered with
/// [`ShrinkerRegistry::observe_groups`](crate::ShrinkerRegistry::observe_groups)).
///
/// # Blocking
///
/// Called without any registry lock held, after the group is unpublished
/// and every reclaim walk of it has finished, and before the group's data
/// is freed. It may block, take locks, and call
/// [`set_shrinker_bit`](crate::ShrinkerRegistry::set_shrinker_bit) (as
/// [`ListLru`](crate::ListLru)'s notify hook does); it must not remove
/// groups (that would wait for itself only if it removed the same group,
/// but keep it simple).
///
/// # Examples
///
/// ```
/// use shrinker::{GroupId, GroupObserver, ShrinkerRegistry};
/// use std::sync::{Arc, Mutex};
///
/// struct Log(Mutex<Vec<(GroupId, GroupId)>>);
/// impl GroupObserver for Log {
///     fn reparent(&self, from: GroupId, to: GroupId) {
///         self.0.lock().unwrap().push((from, to));
///     }
/// }
///
/// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
/// let log = Arc::new(Log(Mutex::new(Vec::new())));
/// let weak: std::sync::Weak<dyn GroupObserver> = Arc::downgrade(&log) as _;
/// reg.observe_groups(weak);
/// let g = reg.create_group(GroupId::ROOT)?;
/// reg.remove_group(g)?;
/// assert_eq!(*log.0.lock().unwrap(), [(g, GroupId::ROOT)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait GroupObserver: Send + Sync {
    /// Move everything held for `from` (being removed) into `to` (its
    /// parent).
    fn reparent(&self, from: GroupId, to: GroupId);
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
#[repr(C)] // `first` first: node.rs keeps it in the node's hot line
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

    /// The root group's counter for `node` (already mapped to 0 for a
    /// shrinker that is not NUMA-aware).
    ///
    /// # Panics
    ///
    /// If `node` is out of range (the registry validates requests first).
    #[inline]
    pub(crate) fn slot(&self, node: usize) -> &AtomicUsize {
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
