//! [`GroupData`]: a group's pin and its `ShrinkerInfo` for every node (the
//! current [`UnitMap`] and the units it names).

use std::mem::size_of;

use shrinker_rcu::ReadGuard;
use shrinker_sync::Completion;

use super::unit_map::{build_map, free_map, Unit, UnitMap, Word};
use crate::error::GroupError;
use crate::lifetime::{retire_after_grace_period, LiveRef};
use crate::sync::{AtomicPtr, Ordering};

/// Proof of holding the groups mutex: it lives in the state that mutex
/// protects (`groups::State`), so a `&MapsLocked` is only ever lent by the
/// mutex's holder. Unit maps are replaced only by such a holder.
pub(super) struct MapsLocked(());

impl MapsLocked {
    /// The one token, for the groups mutex's state.
    pub(super) fn new() -> Self {
        MapsLocked(())
    }
}

/// A group's data: its pin and its `ShrinkerInfo` for every node.
///
/// # Invariants
///
/// * `map` is a thin pointer from [`build_map`], replaced only under the
///   groups mutex; a replaced map is freed after a grace period.
/// * The units named by `map` are freed only when the `GroupData` is
///   dropped, which happens only after a grace period that began after
///   the group was unpublished and its count reached zero.
/// * `refs` is 1 + walker pins while the group is published; removal
///   marks it dying and drops the 1, and once it is zero it never rises
///   again.
pub(crate) struct GroupData {
    /// The walkers' pins ([`LiveRef`], as a shrinker object's).
    pub(super) refs: LiveRef,
    /// Completed by the `put` that drops `refs` to zero.
    pub(super) done: Completion,
    /// The current [`UnitMap`] (a thin pointer from [`build_map`]).
    map: AtomicPtr<Word>,
}

impl GroupData {
    pub(super) fn try_new(nr_nodes: usize, nr_units: usize) -> Result<Box<Self>, GroupError> {
        let map = build_map(nr_nodes, nr_units, None, None)?;
        Ok(Box::new(GroupData {
            refs: LiveRef::new(1),
            done: Completion::new(),
            map: AtomicPtr::new(map),
        }))
    }

    /// Pin the group for a walk ([`LiveRef::try_get`]: refuses a group
    /// whose removal has begun). A group walk looks the group up in the
    /// table first, and removal unpublishes it before it drops the initial
    /// reference, so walks alone could not starve removal; the dying mark
    /// makes the rule the same for every pin.
    ///
    /// # Ordering
    ///
    /// Acquire on success: pairs with the Release of the table store in
    /// `create`, so the group's initialisation is visible (it already is
    /// through the table's Acquire; this is belt and braces for the count).
    #[inline]
    #[must_use = "a successful try_get must be balanced by put"]
    pub(super) fn try_get(&self) -> bool {
        self.refs.try_get(&self.done)
    }

    /// Drop a walker's pin. The caller is inside a read section (module
    /// doc, "Lifetimes": the completer may still be inside `complete()`
    /// when the remover frees the group).
    ///
    /// # Ordering
    ///
    /// Release (Acquire on the last): the walker's accesses to the units
    /// happen-before the remover's reparenting of their counts.
    #[inline]
    pub(super) fn put(&self) {
        self.refs.put(&self.done);
    }

    /// The current unit map, alive until `_guard` ends (a replaced map is
    /// freed after a grace period). Re-load it after leaving the section.
    #[inline]
    pub(super) fn map<'g>(&self, _guard: &'g ReadGuard) -> UnitMap<'g> {
        // Acquire: pairs with the Release swaps in `install` and
        // `expand_for`: the new map's words (and the units it names,
        // initialised before it was built) are visible.
        let m = self.map.load(Ordering::Acquire);
        // SAFETY: from `build_map` (type invariant); a replaced map is freed
        // only after a grace period, which `_guard` holds off.
        unsafe { UnitMap::from_raw(m) }
    }

    /// The current unit map, for a holder of the groups mutex. Maps are
    /// replaced only under that mutex, by `install` and `expand_for`, which
    /// end their borrow of the old map first, and a replaced map is freed
    /// only after a grace period.
    pub(super) fn map_locked<'a>(&'a self, _held: &'a MapsLocked) -> UnitMap<'a> {
        // Relaxed: the map is replaced only under the mutex we hold.
        let m = self.map.load(Ordering::Relaxed);
        // SAFETY: from `build_map`; only a holder of the mutex replaces it,
        // and none does while this borrow of `_held` lives (see above).
        unsafe { UnitMap::from_raw(m) }
    }

    /// The unit of (`node`, `unit`) for a holder of the groups mutex,
    /// installed if missing (copy-on-write of the map); `None` if `unit` is
    /// past the unit count or `node` past the nodes.
    pub(super) fn install<'a>(
        &'a self,
        held: &'a MapsLocked,
        node: usize,
        unit: usize,
    ) -> Option<&'a Unit> {
        let (u, new) = {
            // This borrow of the current map ends before we replace it.
            let map = self.map_locked(held);
            if unit >= map.nr_units() || node >= map.nr_nodes() {
                return None;
            }
            if let Some(u) = map.unit(node, unit) {
                return Some(u);
            }
            let u = Box::into_raw(Unit::new());
            let add = Some((node, unit, u));
            let new =
                build_map(map.nr_nodes(), map.nr_units(), Some(map), add).unwrap_or_else(|_| {
                    // Out of memory: abort, as `Box::new` of the unit would.
                    let len = map.w.len() + 1;
                    let layout = std::alloc::Layout::array::<Word>(len)
                        .unwrap_or_else(|_| std::alloc::Layout::new::<Word>());
                    std::alloc::handle_alloc_error(layout)
                });
            (u, new)
        };
        // SAFETY: built above from the current map, naming every unit it
        // names and the new one; published nowhere yet.
        unsafe { self.replace_map(held, new) };
        // SAFETY: units live as long as the group (type invariant), which
        // cannot be freed while we hold the mutex (removal step 6 takes it).
        Some(unsafe { &*u })
    }

    /// Publish `new` as the current map and free the old one after a
    /// grace period (copy-on-write: installs and `expand_for`).
    ///
    /// # Ordering
    ///
    /// Release: pairs with the Acquire load in `map`: the new words (and
    /// any unit they name that was zeroed before the map was built) are
    /// visible before the map that names them.
    ///
    /// # Safety
    ///
    /// `new` came from [`build_map`], was built (under the mutex `_held`
    /// proves) from the current map so that it names every unit that map
    /// names, and is published nowhere else.
    pub(super) unsafe fn replace_map(&self, _held: &MapsLocked, new: *mut Word) {
        let old = self.map.swap(new, Ordering::Release);
        // SAFETY: from `build_map`, now unpublished; readers still holding
        // it are in read sections (walkers, and walks that pinned the group
        // inside one, re-load after re-entering), which the grace period
        // waits for. Freeing a map frees no unit.
        unsafe { retire_after_grace_period(old, free_map) };
    }

    /// Bytes owned by this group's data (not counting the table slot and
    /// the tree entry).
    pub(super) fn bytes(&self, held: &MapsLocked) -> usize {
        let map = self.map_locked(held);
        size_of::<GroupData>() + map.bytes() + map.nr_installed() * size_of::<Unit>()
    }
}

impl Drop for GroupData {
    fn drop(&mut self) {
        // Relaxed: `&mut self` excludes every other access.
        let map = self.map.load(Ordering::Relaxed);
        // SAFETY: the current map, from `build_map`; no reader remains.
        for (_, _, u) in unsafe { UnitMap::from_raw(map) }.units() {
            // SAFETY: units are owned by the group (type invariant) and no
            // reader remains (`&mut self`, after a grace period).
            drop(unsafe { Box::from_raw(u) });
        }
        // SAFETY: from `build_map`, ours, no reader remains.
        unsafe { free_map(map) };
    }
}
