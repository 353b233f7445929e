//! [`GroupId`]: a memory group's index, the one group type every layer
//! names (requests, errors, shrink controls, per-group tables).
//!
//! Indices are handed out in increasing order and never reused (a removed
//! group's index stays dead), so that per-group tables indexed by it
//! ([`ListLru`](crate::ListLru)'s, the registry's) never confuse a new group
//! with an old one. The tree itself is in `groups/mod.rs`.

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
