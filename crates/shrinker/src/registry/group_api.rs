//! The memory-group half of [`ShrinkerRegistry`]'s public face: each
//! method checks what the registry knows (nodes) and hands the registry's
//! pieces (gate, id table) to `groups::Groups`, which does the work.

use std::sync::Weak;

use super::ShrinkerRegistry;
use crate::error::{GroupError, ShrinkError};
use crate::group_id::GroupId;
use crate::groups::GroupObserver;
use crate::info::ShrinkerId;

impl ShrinkerRegistry {
    /// Create a memory group under `parent` (`mkdir` of a memory cgroup).
    ///
    /// # Blocking
    ///
    /// Takes the groups mutex; allocates the group's data and its empty
    /// unit map (units come later, lazily).
    ///
    /// # Errors
    ///
    /// [`GroupError::NoSuchGroup`] if `parent` does not exist (or is being
    /// removed); [`GroupError::TooManyGroups`] when every index was used;
    /// [`GroupError::Alloc`].
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let a = reg.create_group(GroupId::ROOT)?;
    /// let b = reg.create_group(a)?;
    /// assert_eq!(reg.group_parent(b)?, Some(a));
    /// assert_eq!(reg.groups_under(a), [a, b]);
    /// assert_eq!(reg.nr_groups(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create_group(&self, parent: GroupId) -> Result<GroupId, GroupError> {
        self.inner.groups.create(parent)
    }

    /// Remove a memory group (`rmdir` of a memory cgroup): its deferred work
    /// moves to the parent, every [`GroupObserver`] moves its objects there,
    /// and its index is never used again. The numbered protocol is in the
    /// source (groups/mod.rs, "Removal").
    ///
    /// # Blocking
    ///
    /// Waits until every reclaim walk of the group in progress has finished
    /// (their shrinker callbacks included); runs the observers.
    ///
    /// # Errors
    ///
    /// [`GroupError::RootGroup`]; [`GroupError::NoSuchGroup`] if `g` does
    /// not exist or is already being removed; [`GroupError::HasChildren`].
    ///
    /// # Panics
    ///
    /// If called inside an RCU read section, or from a shrinker callback
    /// running in a walk of `g` (it would wait for itself).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupError, GroupId, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let a = reg.create_group(GroupId::ROOT)?;
    /// let b = reg.create_group(a)?;
    /// assert!(matches!(reg.remove_group(a), Err(GroupError::HasChildren { .. })));
    /// reg.remove_group(b)?;
    /// reg.remove_group(a)?;
    /// assert_eq!(reg.remove_group(a), Err(GroupError::NoSuchGroup { group: a }));
    /// assert_eq!(reg.remove_group(GroupId::ROOT), Err(GroupError::RootGroup));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[track_caller]
    pub fn remove_group(&self, g: GroupId) -> Result<(), GroupError> {
        self.inner
            .groups
            .remove(g, &self.inner.gate, &self.inner.ids)
    }

    /// The parent of `g`: `None` for the root.
    ///
    /// # Errors
    ///
    /// [`GroupError::NoSuchGroup`] if `g` does not exist (or is being
    /// removed).
    pub fn group_parent(&self, g: GroupId) -> Result<Option<GroupId>, GroupError> {
        self.inner.groups.parent(g)
    }

    /// `g` and its descendants, parents before children (the kernel's
    /// `mem_cgroup_iter` over a subtree, for reclaim of `g`): empty if `g`
    /// does not exist.
    #[must_use]
    pub fn groups_under(&self, g: GroupId) -> Vec<GroupId> {
        self.inner.groups.under(g)
    }

    /// Existing groups, the root included.
    #[must_use]
    pub fn nr_groups(&self) -> usize {
        self.inner.groups.nr_live()
    }

    /// Bytes of bookkeeping group `g` costs the registry now: its data, its
    /// unit map (`4 + nr_nodes × ⌈ids / 64 / 64⌉` words and a pointer per
    /// installed unit), the units installed so far (520 bytes each: a 64-bit map and 64
    /// deferred counters), its table slot and its tree entry. `None` if `g`
    /// does not exist; the root costs its tree entry only.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(2).build()?;
    /// let g = reg.create_group(GroupId::ROOT)?;
    /// let empty = reg.group_bytes(g).unwrap();
    /// assert!(empty < 256, "{empty}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn group_bytes(&self, g: GroupId) -> Option<usize> {
        self.inner.groups.bytes(g)
    }

    /// Tell `observer` about every future group removal (it is called with
    /// `(removed, parent)`); dead observers are pruned.
    ///
    /// A removal already past the point where it tells its observers is
    /// reported too, before this returns: it would otherwise never tell
    /// `observer`, and objects the new observer's owner adds to the dying
    /// group would be stranded there (regression test
    /// `a_list_lru_created_during_a_removal_...` in
    /// `tests/torture_groups.rs`). Every removal reaches an observer
    /// exactly once, and only after the removal's walks have finished (the
    /// [`GroupObserver`] contract).
    ///
    /// # Blocking
    ///
    /// Calls `observer` for such removals, with no lock held.
    ///
    /// # Examples
    ///
    /// See [`GroupObserver`].
    pub fn observe_groups(&self, observer: Weak<dyn GroupObserver>) {
        self.inner.groups.observe(observer)
    }

    /// How many [`GroupObserver::reparent`] calls have panicked. Such a
    /// panic is caught and reported through `tracing`; the removal it
    /// interrupted completed.
    #[must_use]
    pub fn group_observer_panics(&self) -> u64 {
        self.inner.groups.observer_panics()
    }

    /// Mark shrinker `id` as possibly having objects in (`group`, `node`)
    /// (the kernel's `set_shrinker_bit`): the group walk calls it for the
    /// group from now on, until its `count` says [`Count::Empty`]. A
    /// [`ListLru`](crate::ListLru)'s notify hook calls it when a list goes from empty to
    /// non-empty; a shrinker with its own lists must call it on each such
    /// transition, *after* the list is non-empty.
    ///
    /// A no-op for the root group: root reclaim calls every shrinker.
    ///
    /// [`Count::Empty`]: crate::Count::Empty
    ///
    /// # Ordering
    ///
    /// Issues a `fence(SeqCst)` before setting the bit: the producer half
    /// of the store-buffering handshake with the walk's clear-on-`Empty`
    /// (groups/mod.rs). Whatever the caller stored before the call (the list's
    /// new count) is seen by a walk that clears the bit concurrently, or
    /// the bit ends up set.
    ///
    /// # Blocking
    ///
    /// Lock-free, except the first time a bit of (`group`, `node`, id / 64)
    /// is set, which takes the groups mutex to allocate the unit.
    ///
    /// # Errors
    ///
    /// [`ShrinkError::InvalidNode`]; [`ShrinkError::NoSuchGroup`] if the
    /// group does not exist or is being removed (its objects are being moved
    /// to the parent, which is notified then); [`ShrinkError::NoSuchShrinker`]
    /// if `id` is beyond every group-aware shrinker built so far.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{Count, GroupId, Scan, Shrink, ShrinkControl, ShrinkerBuilder, ShrinkRequest, ShrinkerRegistry};
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// struct Ten(AtomicUsize);
    /// impl Shrink for Ten {
    ///     fn count(&self, sc: &ShrinkControl) -> Count {
    ///         self.0.fetch_add(1, Ordering::Relaxed);
    ///         assert_ne!(sc.group(), GroupId::ROOT);
    ///         Count::Objects(10)
    ///     }
    ///     fn scan(&self, sc: &mut ShrinkControl) -> Scan { Scan::Freed(sc.nr_to_scan().min(10)) }
    /// }
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let g = reg.create_group(GroupId::ROOT)?;
    /// let s = ShrinkerBuilder::new("ten").group_aware(true).build_in(&reg, Ten(AtomicUsize::new(0)))?.register();
    /// let req = ShrinkRequest { group: g, priority: 0, ..Default::default() };
    /// reg.shrink(&req)?;
    /// assert_eq!(s.0.load(Ordering::Relaxed), 0, "bit clear: not called");
    /// reg.set_shrinker_bit(g, 0, s.id())?;
    /// assert_eq!(reg.shrink(&req)?, 10);
    /// assert_eq!(s.0.load(Ordering::Relaxed), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn set_shrinker_bit(
        &self,
        group: GroupId,
        node: usize,
        id: ShrinkerId,
    ) -> Result<(), ShrinkError> {
        self.validate_node(node)?;
        self.inner.groups.set_bit(group, node, id)
    }
}

#[cfg(all(test, not(loom)))]
impl ShrinkerRegistry {
    /// Is the bit of `id` set in (`g`, `node`)? (Tests.)
    pub(crate) fn test_bit(&self, g: GroupId, node: usize, id: ShrinkerId) -> bool {
        self.inner.groups.test_bit(g, node, id)
    }

    /// The deferred count of `id` in (`g`, `node`). (Tests.)
    pub(crate) fn test_deferred(&self, g: GroupId, node: usize, id: ShrinkerId) -> usize {
        self.inner.groups.test_deferred(g, node, id)
    }

    /// Add `n` to the deferred count of `id` in (`g`, `node`), installing
    /// the unit as a bit set would. (Tests.)
    pub(crate) fn test_add_deferred(&self, g: GroupId, node: usize, id: ShrinkerId, n: usize) {
        self.inner.groups.test_add_deferred(g, node, id, n)
    }
}
