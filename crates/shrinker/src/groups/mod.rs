//! Memory groups: the tree, the per-(group, node) `ShrinkerInfo`, the
//! lock-free `set_shrinker_bit`, the group walk (`shrink_slab_memcg`), and
//! removal with reparenting.
//!
//! # Layout (the kernel's `struct shrinker_info`, Linux 6.7)
//!
//! ```text
//! group table ──RCU──▶ [ root: null | group 1 | group 2 | ... ]   (index → GroupData,
//!                                        │                          grown by copy, never reused)
//!                                        ▼
//!                         GroupData { refcount, done, map ──RCU──▶ UnitMap }
//!                                                                   │
//!   UnitMap, one immutable allocation ◀──────────────────────────────┘
//!     [ len | nr_units | words | nr_nodes | summary words | unit pointers ]
//!       summary: node 0: 0b...0101, node 1: 0b...0010   (bit u: unit u installed)
//!       pointers: one per installed unit, node-major     (node 0 unit 0, node 0 unit 2, node 1 unit 1)
//!                  │
//!                  ▼
//!     Unit { map: AtomicU64,  nr_deferred: [AtomicUsize; 64] }
//!            bit id % 64       deferred work of shrinker id (unit × 64 + bit)
//! ```
//!
//! A shrinker id `id` lives in unit `id / 64`, bit `id % 64`, of every
//! (group, node). All shrinkers share the registry's id space (registry/ids.rs), so
//! the unit count (`nr_units`, the same for every group) covers the highest
//! id of any group-aware shrinker ever built.
//!
//! Where the kernel allocates every unit of every (group, node) up front
//! and keeps an array of `nr_units` pointers per (group, node), units here
//! are allocated *lazily*, by the first `set_shrinker_bit` that needs one,
//! and a group's [`UnitMap`] names only the installed ones: a summary
//! bitmap per node, then their pointers, packed. So a walk reads the map's
//! header, summary words and the unit's pointer from one or two cache
//! lines (for a few nodes and a few thousand ids), and neither its cost
//! nor a group's memory grows with the number of group-aware shrinkers
//! registered, only with the units a group has populated. An empty group costs [`GroupData`], a map of
//! `4 + nr_nodes × ⌈nr_units / 64⌉` words, its slot in the group table and
//! its tree entry: see [`ShrinkerRegistry::group_bytes`].
//!
//! # Who changes what
//!
//! | datum | written by | under | readers |
//! |---|---|---|---|
//! | group table, tree | create, remove | groups mutex | table: lock-free under RCU |
//! | `GroupData::map` (a new map replaces the old) | install of a unit (`set_shrinker_bit` slow path, removal's reparenting), expansion | groups mutex | lock-free under RCU |
//! | a map's words | nobody: immutable once published | — | lock-free |
//! | `Unit::map` bits | `set_shrinker_bit` (set), walk (clear on `Empty`, and set back) | nothing: atomic RMW | walk |
//! | `Unit::nr_deferred` | walk (`do_shrink_slab`: swap, add), removal (move to the parent) | nothing: atomic | — |
//!
//! **Copy-on-write** (installs, and the kernel's `expand_shrinker_info`):
//! installing a unit, or building a group-aware shrinker whose id's unit is
//! ≥ `nr_units`, builds a new map from the current one (copying the unit
//! *pointers*), publishes it with Release and frees the old one after a
//! grace period. Units never move, so a bit set or a deferred count added
//! through the old map lands in the same unit the new map names; and every
//! new map is built under the groups mutex from the current one, so a unit
//! installed is never missing from a later map. A concurrent bit set is
//! never lost and deferred counts never move.
//!
//! # Lifetimes
//!
//! * **Group table**: freed after a grace period when replaced; readers hold
//!   a read section.
//! * **GroupData** (and its units and current map): freed with `call_rcu`
//!   after removal, which (1) closes the registry's gate (registry/pin.rs),
//!   (2) unpublishes it from the table, (3) drops the initial reference and
//!   waits on `done` until every walker's refcount pin is put, then for
//!   every light pin. A walker pins the group in a read section at walk
//!   start, lightly (a store in its own walker slot) while the gate is
//!   open, else with `try_get`, and may then leave the read section while
//!   calling a shrinker: the units it is using stay allocated until it
//!   drops its pin, inside a read section, after which the grace period of
//!   the `call_rcu` covers it. A `set_shrinker_bit` does not pin: it uses
//!   the group only inside one read section.
//! * **A replaced `UnitMap`**: freed after a grace period; it frees only
//!   its words, never the units it names. A walker re-loads the map after
//!   every callout.
//!
//! # The group walk (`shrink_slab_memcg`)
//!
//! 1. Enter a read section; find the group; pin it: a light pin in the
//!    thread's walker slot if the gate is open (no RMW), else `try_get`,
//!    or fail with [`ShrinkError::NoSuchGroup`].
//! 2. For each installed unit of the node (the map's summary word): find
//!    its pointer in the current map (Acquire load of the map: it may have
//!    been replaced since the last step). Snapshot the unit's bits.
//! 3. For each set bit: look the shrinker up in the id table. An empty slot,
//!    a shrinker that is not group-aware, or a failed pin (being registered
//!    or unregistered): clear the bit, as the kernel does, and go on.
//! 4. Pinned (registry/pin.rs's light pin or the refcount, registry/walk.rs's
//!    `pin_for_callout`): leave the read section; `do_shrink_slab` with the
//!    group and the unit's `nr_deferred[bit]`.
//! 5. `Count::Empty`: clear the bit, `fence(SeqCst)`, call again; if that
//!    call did not say `Empty`, set the bit again (the handshake below).
//! 6. Re-enter the read section, unpin, continue at 3, then 2.
//! 7. Drop the group pin inside the read section (Release store to the
//!    slot, or `put`); leave it.
//!
//! # The handshake with producers
//!
//! A producer (a [`ListLru`](crate::ListLru) add) makes its list non-empty
//! and then sets the bit; the walk clears the bit when the list looks empty.
//! Neither orders the other, so a store-buffering pair of full fences does:
//!
//! ```text
//!   producer (ListLru::add → set_shrinker_bit)   walker (step 5, after Count::Empty)
//!   ------------------------------------------   -----------------------------------
//!   nr_items = 1 (list lock held)                map.fetch_and(!bit)
//!   fence(SeqCst)  [set_shrinker_bit's own]  ◀─▶  fence(SeqCst)
//!   map.load(); if bit clear: map.fetch_or(bit)   count(): nr_items == 0?
//!                                                 not Empty: map.fetch_or(bit)
//! ```
//!
//! The two fences are ordered one way or the other in the single total
//! order of SeqCst operations. If the producer's comes first, the walker's
//! re-count (after its fence) sees `nr_items = 1` and sets the bit again.
//! If the walker's comes first, the producer's load (after its fence) sees
//! the clear (or a later set), so it sets the bit. Either way the bit is set
//! when both are done. (The producer's load before its `fetch_or` skips a
//! read-modify-write of a shared line when the bit is already set; the
//! argument covers it: a load that still sees the bit set, from before the
//! clear, puts the producer's fence first.) `set_shrinker_bit` issues the
//! producer's fence itself, so callers with their own lists only need to
//! make the list non-empty *before* calling it. `ListLru` fences too; the
//! second fence costs little on a transition that happens once per
//! empty → non-empty.
//!
//! `tests/loom_groups.rs` checks the handshake, with the walker's fence
//! removed as the mutation that must fail.
//!
//! # Removal (`mem_cgroup_css_offline` → `memcg_offline_kmem`)
//!
//! 1. Refuse the root, an unknown or dying group, a group with children;
//!    panic on removal from a callback of a walk of the group. Close the
//!    registry's gate ([`Gate::enter`]: one grace period if it was open), so
//!    that no walker takes a new light pin.
//! 2. Under the groups mutex: check again; mark the group dying and
//!    unpublish it from the table (lookups now fail: walks get
//!    `NoSuchGroup`, `set_shrinker_bit` gets `NoSuchGroup`, and a racing
//!    `ListLru` add is redirected to the parent by the observer's reparent
//!    below, which notifies the parent). It stays in the parent's children
//!    until step 6, so the parent cannot be removed under it.
//! 3. Drop the initial reference; wait on `done` for walkers' refcount
//!    pins, then for light pins (`pin::wait_for_light_group_pins`); leave
//!    the gate.
//! 4. Under the mutex: move every nonzero `nr_deferred` into the parent's
//!    units (installing them as needed), or, for the root, into the
//!    shrinker's own counter (`reparent_shrinker_deferred`). Nothing else
//!    is set: bits come from the objects moved in step 5.
//! 5. Without any lock: every live [`GroupObserver`] reparents `g` into the
//!    parent (a `ListLru` moves its items, and notifies the parent's bit).
//!    The snapshot of observers is taken, and the group marked `told`,
//!    under the observers mutex; an observer that joins later is told by
//!    `observe_groups` itself.
//! 6. Under the mutex: unlink from the parent; free the data with
//!    `call_rcu` (a `set_shrinker_bit` that found the group before step 2
//!    may still be setting a bit in one of its units).
//!
//! Lock order: a `ListLru` list lock → the groups mutex (notify's slow
//! path); the observers mutex → the groups mutex (step 5 and
//! `observe_groups`). Neither mutex is held while calling an observer, a
//! `ListLru` or a shrinker.

mod data;
mod observers;
mod remove;
mod unit_map;
mod walk;

use std::collections::HashMap;
use std::mem::size_of;
use std::ptr;
use std::sync::Weak;

use shrinker_rcu::ReadGuard;

use crate::error::{BuildError, GroupError};
use crate::group_id::GroupId;
use crate::info::ShrinkerId;
use crate::lifetime::{ArrayWriter, RcuArray};
use crate::sync::{lock, AtomicPtr, Mutex};
use data::{GroupData, MapsLocked};
use unit_map::{build_map, free_map, BITS_PER_UNIT};

pub use observers::GroupObserver;

/// Group indices: `0..MAX_GROUPS` (index `u32::MAX` is never handed out).
const MAX_GROUPS: u32 = u32::MAX;

/// One group in the tree (under the groups mutex).
struct Entry {
    parent: GroupId,
    children: Vec<GroupId>,
    /// Null for the root, which has no `ShrinkerInfo`: root reclaim is the
    /// global walk, and root deferred work lives in the shrinkers.
    data: *mut GroupData,
    /// Removal has begun: unpublished, not a valid argument any more.
    dying: bool,
    /// Removal has taken its snapshot of the observers (step 5): an
    /// observer added from now on is told by `observe_groups` instead.
    /// Written and read with the observers mutex held too.
    told: bool,
}

/// What the groups mutex protects.
pub(crate) struct State {
    /// The group table's writer half.
    table: ArrayWriter,
    /// Lent to `GroupData`'s map writers: proves this mutex is held.
    maps: MapsLocked,
    /// The next group index (never reused).
    next: u32,
    /// Units per (group, node): covers every group-aware shrinker's id.
    nr_units: usize,
    /// Every group, dying ones included, root too.
    tree: HashMap<u32, Entry>,
    /// Groups that are not dying, root included.
    live: usize,
}

// SAFETY: the raw pointers name data owned by the `Groups` this state
// belongs to, used only under its mutex.
unsafe impl Send for State {}

impl State {
    fn data(&self, g: GroupId) -> Option<&GroupData> {
        let e = self.tree.get(&g.index())?;
        // SAFETY: non-null data of a group in the tree is live: it is freed
        // only after its entry is removed, under the mutex.
        unsafe { e.data.as_ref() }
    }

    /// `g`'s entry if it may be removed now: live, and without children.
    fn removable(&self, g: GroupId) -> Result<&Entry, GroupError> {
        let e = self.live_entry(g)?;
        if !e.children.is_empty() {
            return Err(GroupError::HasChildren {
                group: g,
                children: e.children.len(),
            });
        }
        Ok(e)
    }

    fn live_entry(&self, g: GroupId) -> Result<&Entry, GroupError> {
        self.tree
            .get(&g.index())
            .filter(|e| !e.dying)
            .ok_or(GroupError::NoSuchGroup { group: g })
    }
}

/// The registry's memory groups (lives in `registry::RegistryCore`).
pub(crate) struct Groups {
    /// The group table: slot `g` is null (root, removed or dying) or
    /// points to group `g`'s data.
    table: RcuArray<GroupData>,
    state: Mutex<State>,
    observers: Mutex<Vec<Weak<dyn GroupObserver>>>,
    /// Observer calls that panicked (caught: the removal completes).
    observer_panics: std::sync::atomic::AtomicU64,
    nr_nodes: usize,
}

impl Groups {
    pub(crate) fn new(nr_nodes: usize) -> Self {
        let mut tree = HashMap::new();
        tree.insert(
            GroupId::ROOT.index(),
            Entry {
                parent: GroupId::ROOT,
                children: Vec::new(),
                data: ptr::null_mut(),
                dying: false,
                told: false,
            },
        );
        let (table, writer) = RcuArray::new();
        Groups {
            table,
            state: Mutex::new(State {
                table: writer,
                maps: MapsLocked::new(),
                next: 1,
                nr_units: 0,
                tree,
                live: 1,
            }),
            observers: Mutex::new(Vec::new()),
            observer_panics: std::sync::atomic::AtomicU64::new(0),
            nr_nodes,
        }
    }

    /// The data of published group `g` (not the root), live until `guard`
    /// ends.
    #[inline]
    fn lookup<'g>(&self, g: GroupId, guard: &'g ReadGuard) -> Option<&'g GroupData> {
        // Acquire (inside `get`): pairs with the Release slot store in
        // `create`: the group's initialisation is visible.
        let p = self.table.get(g.index() as usize, guard);
        // SAFETY: a published group's data is freed only after a grace
        // period that began after it was unpublished (module doc).
        unsafe { p.as_ref() }
    }

    /// Make the unit count cover shrinker `id` (`expand_shrinker_info`):
    /// called when a group-aware shrinker is built, before it can be
    /// registered.
    pub(crate) fn expand_for(&self, id: ShrinkerId) -> Result<(), BuildError> {
        let need = id.index() as usize / BITS_PER_UNIT + 1;
        let mut st = lock(&self.state);
        if need <= st.nr_units {
            return Ok(());
        }
        // Allocate every new map first, so that a failure changes nothing.
        let mut new_maps = Vec::new();
        new_maps.try_reserve_exact(st.tree.len())?;
        for (&g, e) in &st.tree {
            // SAFETY: non-null data of a group in the tree is live (mutex).
            if let Some(data) = unsafe { e.data.as_ref() } {
                let old = data.map_locked(&st.maps);
                match build_map(self.nr_nodes, need, Some(old), None) {
                    Ok(m) => new_maps.push((g, m)),
                    Err(err) => {
                        for (_, m) in new_maps {
                            // SAFETY: from `build_map`, never published.
                            unsafe { free_map(m) };
                        }
                        return Err(BuildError::Alloc(err));
                    }
                }
            }
        }
        for (g, new) in new_maps {
            let data = st.data(GroupId::from_index(g)).expect("a group with data");
            // SAFETY: built above from this group's current map (under the
            // mutex we still hold), published nowhere else.
            unsafe { data.replace_map(&st.maps, new) };
        }
        st.nr_units = need;
        Ok(())
    }
}

impl Drop for Groups {
    fn drop(&mut self) {
        // `&mut self`: no reader or writer remains; no removal is in
        // progress (it holds a registry handle).
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for e in st.tree.values() {
            if !e.data.is_null() {
                // SAFETY: leaked by `create_group`, still owned by the tree.
                drop(unsafe { Box::from_raw(e.data) });
            }
        }
        // The table frees itself (`RcuArray`'s drop), not the data.
    }
}

// ---------------------------------------------------------------------------
// The tree (what the registry's public face delegates to: registry/group_api.rs).

impl Groups {
    /// [`ShrinkerRegistry::create_group`](crate::ShrinkerRegistry::create_group).
    pub(crate) fn create(&self, parent: GroupId) -> Result<GroupId, GroupError> {
        let groups = self;
        let mut st = lock(&groups.state);
        st.live_entry(parent)?;
        if st.next == MAX_GROUPS {
            return Err(GroupError::TooManyGroups { max: MAX_GROUPS });
        }
        let g = GroupId::from_index(st.next);
        let data = GroupData::try_new(groups.nr_nodes, st.nr_units)?;
        st.tree.try_reserve(1)?;
        let parent_entry = st.tree.get_mut(&parent.index()).expect("checked live");
        parent_entry.children.try_reserve(1)?;
        let idx = g.index() as usize;
        groups.table.grow(&mut st.table, idx, 64)?;
        let data = Box::into_raw(data);
        // Release (inside `set`): pairs with `lookup`'s Acquire: the group's
        // initialisation is visible to whoever finds it.
        groups.table.set(&st.table, idx, data);
        st.tree
            .get_mut(&parent.index())
            .expect("checked live")
            .children
            .push(g);
        st.tree.insert(
            g.index(),
            Entry {
                parent,
                children: Vec::new(),
                data,
                dying: false,
                told: false,
            },
        );
        st.next += 1;
        st.live += 1;
        Ok(g)
    }

    /// [`ShrinkerRegistry::group_parent`](crate::ShrinkerRegistry::group_parent).
    pub(crate) fn parent(&self, g: GroupId) -> Result<Option<GroupId>, GroupError> {
        let st = lock(&self.state);
        let e = st.live_entry(g)?;
        Ok((g != GroupId::ROOT).then_some(e.parent))
    }

    /// [`ShrinkerRegistry::groups_under`](crate::ShrinkerRegistry::groups_under).
    #[must_use]
    pub(crate) fn under(&self, g: GroupId) -> Vec<GroupId> {
        let st = lock(&self.state);
        let mut out = Vec::new();
        if st.live_entry(g).is_err() {
            return out;
        }
        let mut stack = vec![g];
        while let Some(x) = stack.pop() {
            out.push(x);
            if let Some(e) = st.tree.get(&x.index()) {
                // Reversed, so that children come out in creation order.
                stack.extend(
                    e.children
                        .iter()
                        .rev()
                        .filter(|c| st.tree.get(&c.index()).is_some_and(|e| !e.dying)),
                );
            }
        }
        out
    }

    /// [`ShrinkerRegistry::nr_groups`](crate::ShrinkerRegistry::nr_groups).
    #[must_use]
    pub(crate) fn nr_live(&self) -> usize {
        lock(&self.state).live
    }

    /// [`ShrinkerRegistry::group_bytes`](crate::ShrinkerRegistry::group_bytes).
    #[must_use]
    pub(crate) fn bytes(&self, g: GroupId) -> Option<usize> {
        let st = lock(&self.state);
        let e = st.live_entry(g).ok()?;
        let entry = size_of::<(u32, Entry)>() + e.children.capacity() * size_of::<GroupId>();
        let data = st.data(g).map_or(0, |d| d.bytes(&st.maps));
        let slot = if g == GroupId::ROOT {
            0
        } else {
            size_of::<AtomicPtr<GroupData>>()
        };
        Some(entry + data + slot)
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
