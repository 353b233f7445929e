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
//! 4. Pinned (registry/pin.rs's light pin or the refcount, registry/mod.rs's
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

use std::collections::HashMap;
use std::mem::size_of;
use std::ptr;
use std::sync::{Arc, Weak};

use shrinker_rcu::{read_lock, ReadGuard};
use shrinker_sync::Completion;

use crate::error::{BuildError, GroupError, ShrinkError};
use crate::group_id::GroupId;
use crate::info::ShrinkerId;
use crate::lifetime::{
    frames, free_after_grace_period, retire_after_grace_period, ArrayWriter, LiveRef, RcuArray,
    Urgency,
};
use crate::registry::ids::IdTable;
use crate::registry::pin::Gate;
use crate::registry::pin::{self, WalkerSlot};
use crate::registry::walk::pin_for_callout;
mod observers;

pub use observers::GroupObserver;

use crate::sync::{fence, lock, AtomicPtr, AtomicU64, AtomicUsize, Mutex, Ordering};

/// Shrinker ids per unit (bits in `Unit::map`).
pub(crate) const BITS_PER_UNIT: usize = 64;

/// Group indices: `0..MAX_GROUPS` (index `u32::MAX` is never handed out).
const MAX_GROUPS: u32 = u32::MAX;

/// 64 shrinker ids' worth of one (group, node)'s `ShrinkerInfo`
/// (`struct shrinker_info_unit`).
#[repr(C)] // `map` first: the walk reads it before any counter
pub(crate) struct Unit {
    /// Bit `b`: shrinker `unit × 64 + b` may have objects here.
    map: AtomicU64,
    /// Deferred work of shrinker `unit × 64 + b` for this (group, node).
    nr_deferred: [AtomicUsize; BITS_PER_UNIT],
}

impl Unit {
    fn new() -> Box<Unit> {
        Box::new(Unit {
            map: AtomicU64::new(0),
            nr_deferred: std::array::from_fn(|_| AtomicUsize::new(0)),
        })
    }

    /// Set `bit`, the producer's last step (module doc, "The handshake").
    /// The caller has issued its `fence(SeqCst)`.
    #[inline]
    fn set(&self, bit: usize) {
        let m = 1u64 << bit;
        // Relaxed (both): ordered against the walker's clear by the fence
        // pair of the handshake; the load skips a locked RMW on a line many
        // producers share when the bit is already set (module doc).
        if self.map.load(Ordering::Relaxed) & m == 0 {
            self.map.fetch_or(m, Ordering::Relaxed);
        }
    }
}

/// One word of a unit map: a number (header, summary) or a unit pointer.
/// Each word is only ever read as what it was written as.
#[derive(Clone, Copy)]
union Word {
    n: u64,
    unit: *mut Unit,
}

// SAFETY: a `Word` is a number or the address of a `Unit` (atomics only,
// `Sync`) owned by the group whose map holds it; moving the map to another
// thread (the RCU worker, to free it) moves no ownership of the unit.
unsafe impl Send for Word {}

/// Header words of a unit map: total length, units per node, summary words
/// per node, nodes.
const MAP_LEN: usize = 0;
const MAP_NR_UNITS: usize = 1;
const MAP_WORDS: usize = 2;
const MAP_NR_NODES: usize = 3;
const MAP_HEADER: usize = 4;

/// A group's unit map: which units of its `ShrinkerInfo` are installed on
/// each node, and where they are.
///
/// ```text
/// [ len | nr_units | words | nr_nodes | summary: nr_nodes × words | units: one pointer per installed unit ]
///                                        bit u % 64 of word (node, u / 64)   node-major, ascending unit
/// ```
///
/// One allocation, addressed by a thin pointer to its first word (which
/// holds the length), immutable once published: installing a unit or
/// growing the id space builds a new map under the groups mutex, publishes
/// it with a Release store of `GroupData::map`, and frees the old one after
/// a grace period. A walk so reads the header, the summary words up to
/// its node's (to rank the unit: `nr_nodes × ⌈nr_units / 64⌉` words, one
/// cache line for up to 4 nodes and 4,096 ids) and the unit pointer, its
/// cost does not depend on how many group-aware shrinkers are registered (no pointer per 64
/// registered ids, mostly null, as the kernel's `shrinker_info` has), and
/// an empty group costs a few words. Units never move: a map only names
/// them, so a bit set or a deferred count added through an old map lands in
/// the same unit as through the new one.
///
/// # Invariants
///
/// The words are as drawn; a unit pointer names a live `Box<Unit>` owned by
/// the group's [`GroupData`] (freed with it, never by a map).
#[derive(Clone, Copy)]
struct UnitMap<'a> {
    w: &'a [Word],
}

impl<'a> UnitMap<'a> {
    /// # Safety
    ///
    /// `p` came from [`build_map`] and is not freed during `'a`.
    #[inline]
    unsafe fn from_raw(p: *const Word) -> Self {
        // SAFETY: `build_map` wrote the length into the first word as a
        // number, and the allocation is live (contract).
        let len = unsafe { (*p.add(MAP_LEN)).n } as usize;
        // SAFETY: `len` words, all initialised by `build_map`, live for `'a`.
        let w = unsafe { std::slice::from_raw_parts(p, len) };
        UnitMap { w }
    }

    /// Header or summary word `i`, a number.
    #[inline]
    fn n(&self, i: usize) -> u64 {
        // SAFETY: the header and summary words are written as numbers
        // (type invariant); callers index only those.
        unsafe { self.w[i].n }
    }

    #[inline]
    fn nr_units(&self) -> usize {
        self.n(MAP_NR_UNITS) as usize
    }

    #[inline]
    fn words(&self) -> usize {
        self.n(MAP_WORDS) as usize
    }

    #[inline]
    fn nr_nodes(&self) -> usize {
        self.n(MAP_NR_NODES) as usize
    }

    /// Summary word `w` of `node` (bit `b`: unit `w * 64 + b` is
    /// installed), or `None` past the last.
    #[inline]
    fn installed(&self, node: usize, w: usize) -> Option<u64> {
        let words = self.words();
        (w < words && node < self.nr_nodes()).then(|| self.n(MAP_HEADER + node * words + w))
    }

    /// Unit `u` of `node`, if installed. The reference lives as long as the
    /// group, which the caller keeps alive for `'a` (a read section or a
    /// group pin, and the groups mutex for a removed group's last uses).
    #[inline]
    fn unit(&self, node: usize, u: usize) -> Option<&'a Unit> {
        if u >= self.nr_units() {
            return None;
        }
        let (w, b) = (u / BITS_PER_UNIT, u % BITS_PER_UNIT);
        let word = self.installed(node, w)?;
        if word & (1 << b) == 0 {
            return None;
        }
        // Its place among the installed units: those of earlier nodes, of
        // earlier words of this node, and below `b` in this word.
        let words = self.words();
        let before = MAP_HEADER..MAP_HEADER + node * words + w;
        let rank = before
            .map(|i| self.n(i).count_ones() as usize)
            .sum::<usize>()
            + (word & ((1 << b) - 1)).count_ones() as usize;
        let at = MAP_HEADER + self.nr_nodes() * words + rank;
        // SAFETY: words past the summary are unit pointers (type invariant).
        let p = unsafe { self.w[at].unit };
        // SAFETY: a live unit owned by the group (type invariant), which
        // the caller keeps alive for `'a`.
        Some(unsafe { &*p })
    }

    /// Every installed unit as (node, unit index, pointer), in map order.
    fn units(&self) -> Vec<(usize, usize, *mut Unit)> {
        let (words, nodes) = (self.words(), self.nr_nodes());
        let mut out = Vec::new();
        let mut at = MAP_HEADER + nodes * words;
        for node in 0..nodes {
            for w in 0..words {
                let mut bits = self.n(MAP_HEADER + node * words + w);
                while bits != 0 {
                    let u = w * BITS_PER_UNIT + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    // SAFETY: past the summary: unit pointers.
                    out.push((node, u, unsafe { self.w[at].unit }));
                    at += 1;
                }
            }
        }
        out
    }

    /// How many units are installed (the pointer words after the summary).
    fn nr_installed(&self) -> usize {
        self.w.len() - MAP_HEADER - self.nr_nodes() * self.words()
    }

    fn bytes(&self) -> usize {
        std::mem::size_of_val(self.w)
    }
}

/// Build a unit map of `nr_units` per node over `nr_nodes` nodes, naming
/// the units of `old` (if any) and `add` (node, unit index, pointer).
/// Returns the leaked thin pointer ([`UnitMap::from_raw`],
/// [`free_map`]).
fn build_map(
    nr_nodes: usize,
    nr_units: usize,
    old: Option<UnitMap<'_>>,
    add: Option<(usize, usize, *mut Unit)>,
) -> Result<*mut Word, std::collections::TryReserveError> {
    let mut units = old.map_or_else(Vec::new, |m| m.units());
    units.extend(add);
    units.sort_unstable_by_key(|&(node, u, _)| (node, u));
    let words = nr_units.div_ceil(BITS_PER_UNIT);
    let len = MAP_HEADER + nr_nodes * words + units.len();
    let mut v: Vec<Word> = Vec::new();
    v.try_reserve_exact(len)?;
    for n in [len, nr_units, words, nr_nodes] {
        v.push(Word { n: n as u64 });
    }
    v.extend((0..nr_nodes * words).map(|_| Word { n: 0 }));
    for &(node, u, _) in &units {
        debug_assert!(node < nr_nodes && u < nr_units);
        let i = MAP_HEADER + node * words + u / BITS_PER_UNIT;
        // SAFETY: a summary word, written as a number just above.
        let n = unsafe { v[i].n } | 1 << (u % BITS_PER_UNIT);
        v[i] = Word { n };
    }
    v.extend(units.iter().map(|&(_, _, unit)| Word { unit }));
    Ok(Box::into_raw(v.into_boxed_slice()).cast::<Word>())
}

/// Free a map made by [`build_map`] (not its units).
///
/// # Safety
///
/// `p` came from `build_map`, is unpublished and freed nowhere else, and no
/// reader remains.
unsafe fn free_map(p: *mut Word) {
    // SAFETY: the first word holds the length (`build_map`).
    let len = unsafe { (*p.add(MAP_LEN)).n } as usize;
    // SAFETY: the `Box<[Word]>` leaked by `build_map`, ours (contract).
    drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(p, len)) });
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
    refs: LiveRef,
    /// Completed by the `put` that drops `refs` to zero.
    done: Completion,
    /// The current [`UnitMap`] (a thin pointer from [`build_map`]).
    map: AtomicPtr<Word>,
}

impl GroupData {
    fn try_new(nr_nodes: usize, nr_units: usize) -> Result<Box<Self>, GroupError> {
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
    fn try_get(&self) -> bool {
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
    fn put(&self) {
        self.refs.put(&self.done);
    }

    /// The current unit map, alive until `_guard` ends (a replaced map is
    /// freed after a grace period). Re-load it after leaving the section.
    #[inline]
    fn map<'g>(&self, _guard: &'g ReadGuard) -> UnitMap<'g> {
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
    fn map_locked<'a>(&'a self, _st: &'a State) -> UnitMap<'a> {
        // Relaxed: the map is replaced only under the mutex we hold.
        let m = self.map.load(Ordering::Relaxed);
        // SAFETY: from `build_map`; only a holder of the mutex replaces it,
        // and none does while this borrow of `_st` lives (see above).
        unsafe { UnitMap::from_raw(m) }
    }

    /// The unit of (`node`, `unit`) for a holder of the groups mutex,
    /// installed if missing (copy-on-write of the map); `None` if `unit` is
    /// past the unit count or `node` past the nodes.
    fn install<'a>(&'a self, st: &'a State, node: usize, unit: usize) -> Option<&'a Unit> {
        let (u, new) = {
            // This borrow of the current map ends before we replace it.
            let map = self.map_locked(st);
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
        // Release: pairs with the Acquire load in `map`: the new words and
        // the zeroed unit are visible before the map that names them.
        let old = self.map.swap(new, Ordering::Release);
        // SAFETY: from `build_map`, now unpublished; readers still holding
        // it are in read sections (walkers re-load after re-entering).
        unsafe { retire_after_grace_period(old, free_map, Urgency::Prompt) };
        // SAFETY: units live as long as the group (type invariant), which
        // cannot be freed while we hold the mutex (removal step 6 takes it).
        Some(unsafe { &*u })
    }

    /// Bytes owned by this group's data (not counting the table slot and
    /// the tree entry).
    fn bytes(&self, st: &State) -> usize {
        let map = self.map_locked(st);
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

/// The registry's memory groups (lives in `registry::Inner`).
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
                let old = data.map_locked(&st);
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
            // Release: pairs with the Acquire load in `GroupData::map`: the
            // new map's words are visible (and the units it names, published
            // by the map they were installed with).
            let old = data.map.swap(new, Ordering::Release);
            // SAFETY: from `build_map`, now unpublished; readers still
            // holding it are in read sections (or pinned the group inside
            // one and re-load after re-entering), which the grace period
            // waits for. Freeing a map frees no unit.
            unsafe { retire_after_grace_period(old, free_map, Urgency::Prompt) };
        }
        st.nr_units = need;
        Ok(())
    }

    /// The unit of (`node`, `unit`) of a group the caller has pinned for a
    /// walk (so removal has not reached step 4 and the data is live),
    /// installed if missing. For a NUMA-unaware shrinker's deferred work on
    /// node 0 when the walk is of another node.
    #[cold]
    fn install_pinned<'a>(&self, data: &'a GroupData, node: usize, unit: usize) -> &'a Unit {
        let st = lock(&self.state);
        let u: *const Unit = data
            .install(&st, node, unit)
            .expect("node 0 and a unit index read from the group's own map are in range");
        // SAFETY: units live as long as the group's data (type invariant),
        // which the caller's pin keeps alive for `'a`.
        unsafe { &*u }
    }

    /// Tell one observer of a removal, containing a panic: the removal
    /// completes whatever an observer does (an observer that panicked may
    /// have moved only some of its objects, which stay its owner's to
    /// account for), and the panic is counted and reported.
    fn tell(&self, o: &dyn GroupObserver, g: GroupId, parent: GroupId) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| o.reparent(g, parent)));
        if let Err(payload) = r {
            // Relaxed: a statistic.
            self.observer_panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                target: "shrinker",
                group = g.index(),
                parent = parent.index(),
                "a GroupObserver panicked in reparent (caught; the removal completes): {}",
                crate::registry::object::panic_message(&*payload)
            );
            crate::registry::object::drop_payload(payload);
        }
    }

    /// `set_shrinker_bit`'s slow path: install the unit under the mutex.
    #[cold]
    fn set_bit_slow(&self, g: GroupId, node: usize, id: ShrinkerId) -> Result<(), ShrinkError> {
        let (unit, bit) = split(id);
        let st = lock(&self.state);
        if st.live_entry(g).is_err() {
            return Err(ShrinkError::NoSuchGroup { group: g });
        }
        let data = st.data(g).ok_or(ShrinkError::NoSuchGroup { group: g })?;
        let u = data
            .install(&st, node, unit)
            .ok_or(ShrinkError::NoSuchShrinker { id })?;
        u.set(bit);
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

/// A group pinned for one walk (group walk steps 1–7): a light pin in
/// this thread's walker slot, or a reference.
///
/// Released by [`unpin`](Self::unpin) inside the walker's read section;
/// dropped without it (a panic unwinding through the walk, from outside
/// the caught callbacks), it re-enters a read section and releases the pin
/// there, so that `remove_group` never waits for a pin nobody will drop.
#[must_use = "dropping the pin releases it"]
struct GroupPin<'a> {
    data: &'a GroupData,
    light: Option<&'a WalkerSlot>,
}

impl GroupPin<'_> {
    /// Step 7: release the pin inside the caller's read section.
    #[inline]
    fn unpin(self, _guard: &ReadGuard) {
        self.release();
        std::mem::forget(self);
    }

    #[inline]
    fn release(&self) {
        match self.light {
            Some(s) => s.unpin_group(),
            None => self.data.put(),
        }
    }
}

impl Drop for GroupPin<'_> {
    /// Only while unwinding: the walk's normal path consumes the pin.
    #[cold]
    fn drop(&mut self) {
        let _guard = read_lock();
        self.release();
    }
}

/// (unit index, bit) of a shrinker id.
#[inline]
fn split(id: ShrinkerId) -> (usize, usize) {
    let i = id.index() as usize;
    (i / BITS_PER_UNIT, i % BITS_PER_UNIT)
}

// ---------------------------------------------------------------------------
// What the registry's public face delegates to (registry/group_api.rs).

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

    /// [`ShrinkerRegistry::remove_group`](crate::ShrinkerRegistry::remove_group).
    #[track_caller]
    pub(crate) fn remove(
        &self,
        g: GroupId,
        gate: &Arc<Gate>,
        ids: &IdTable,
    ) -> Result<(), GroupError> {
        if g == GroupId::ROOT {
            return Err(GroupError::RootGroup);
        }
        if shrinker_rcu::in_read_section() {
            panic!(
                "memory group {} removed inside an RCU read-side section: removal waits for \
                 reclaim walks of the group, whose callbacks may wait for a grace period",
                g.index()
            );
        }
        let groups = self;
        // 1. Refuse what we can without closing the gate; name the misuse
        // that would wait for itself.
        {
            let st = lock(&groups.state);
            let e = st.removable(g)?;
            if frames::is_inside(e.data) || pin::holds_light_group_pin(e.data) {
                drop(st);
                panic!(
                    "memory group {} removed from a shrinker callback of a walk of that group: \
                     removal waits for the walk, which would deadlock",
                    g.index()
                );
            }
        }
        // Close the gate: from here on walkers pin groups (and shrinkers)
        // with refcounts; one grace period if it was open (registry/pin.rs, "Light
        // group pins").
        let gate_hold = gate.enter();
        // 2. Unpublish (checking again: the mutex was dropped).
        let (data, parent) = {
            let mut st = lock(&groups.state);
            let e = st.removable(g)?;
            let (data, parent) = (e.data, e.parent);
            st.tree.get_mut(&g.index()).expect("live").dying = true;
            st.live -= 1;
            // Relaxed (inside `clear`): a walker that still finds the data
            // try_gets it (the gate is closed); one that got in before step
            // 3 is waited for, one after it fails (dying, and the count
            // stays zero).
            groups.table.clear(&st.table, g.index() as usize);
            (data, parent)
        };
        // SAFETY: the data of a group in the tree is live until step 6.
        let d = unsafe { &*data };
        // 3. Drop the initial reference; wait for walkers' refcount pins,
        // then for light pins taken before the gate closed. If ours was the
        // last reference, dec_and_test's Acquire orders every pin's accesses
        // before what follows; otherwise the completion's mutex does; light
        // pins, the Acquire of the slot scan.
        d.refs.kill_and_wait(&d.done);
        pin::wait_for_light_group_pins(data);
        drop(gate_hold);
        // 4. Reparent deferred work.
        {
            let st = lock(&groups.state);
            let pdata = st.data(parent);
            let guard = read_lock();
            let map = d.map_locked(&st);
            for (node, u, unit) in map.units() {
                // SAFETY: units live as long as the group's data (live until
                // step 6).
                let unit = unsafe { &*unit };
                for (bit, c) in unit.nr_deferred.iter().enumerate() {
                    // Relaxed: no walker uses the group any more (step 3);
                    // the counts are plain numbers moved between atomic
                    // counters.
                    let n = c.swap(0, Ordering::Relaxed);
                    if n == 0 {
                        continue;
                    }
                    let id = (u * BITS_PER_UNIT + bit) as u32;
                    match pdata {
                        Some(p) => {
                            let pu = p
                                .install(&st, node, u)
                                .expect("every group has the same unit count");
                            // Relaxed: an atomic sum; walkers swap it.
                            pu.nr_deferred[bit].fetch_add(n, Ordering::Relaxed);
                        }
                        None => add_root_deferred(ids, id, node, n, &guard),
                    }
                }
            }
        }
        // 5. Observers, called without any lock held. The snapshot and the
        // `told` mark are made together under the observers mutex: an
        // observer added before is in the snapshot, one added after finds
        // `told` and is told by `observe_groups` (exactly once either way).
        let observers: Vec<_> = {
            let mut obs = lock(&groups.observers);
            obs.retain(|w| w.strong_count() > 0);
            let mut st = lock(&groups.state);
            st.tree.get_mut(&g.index()).expect("dying").told = true;
            drop(st);
            obs.iter().filter_map(Weak::upgrade).collect()
        };
        for o in observers {
            groups.tell(&*o, g, parent);
        }
        // 6. Unlink and free after a grace period.
        {
            let mut st = lock(&groups.state);
            st.tree.remove(&g.index());
            if let Some(p) = st.tree.get_mut(&parent.index()) {
                p.children.retain(|&c| c != g);
            }
        }
        // SAFETY: leaked by `create_group`; unpublished, count zero for good,
        // out of the tree: ours. A `set_shrinker_bit` that found it before
        // step 2 is in a read section, which the grace period waits for.
        unsafe { free_after_grace_period(data, Urgency::Prompt) };
        Ok(())
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
        let data = st.data(g).map_or(0, |d| d.bytes(&st));
        let slot = if g == GroupId::ROOT {
            0
        } else {
            size_of::<AtomicPtr<GroupData>>()
        };
        Some(entry + data + slot)
    }

    /// [`ShrinkerRegistry::observe_groups`](crate::ShrinkerRegistry::observe_groups).
    pub(crate) fn observe(&self, observer: Weak<dyn GroupObserver>) {
        let groups = self;
        // Under the observers mutex, as removal's step 5: a removal whose
        // snapshot came before our push has marked its group `told` (and
        // missed us), one whose snapshot comes after will include us.
        let dying: Vec<(GroupId, GroupId)> = {
            let mut obs = lock(&groups.observers);
            obs.retain(|w| w.strong_count() > 0);
            obs.push(observer.clone());
            let st = lock(&groups.state);
            st.tree
                .iter()
                .filter(|(_, e)| e.told)
                .map(|(&g, e)| (GroupId::from_index(g), e.parent))
                .collect()
        };
        if dying.is_empty() {
            return;
        }
        if let Some(o) = observer.upgrade() {
            for (g, parent) in dying {
                groups.tell(&*o, g, parent);
            }
        }
    }

    /// [`ShrinkerRegistry::group_observer_panics`](crate::ShrinkerRegistry::group_observer_panics).
    #[must_use]
    pub(crate) fn observer_panics(&self) -> u64 {
        // Relaxed: a statistic.
        self.observer_panics.load(Ordering::Relaxed)
    }

    /// [`ShrinkerRegistry::set_shrinker_bit`](crate::ShrinkerRegistry::set_shrinker_bit).
    #[inline]
    pub(crate) fn set_bit(
        &self,
        group: GroupId,
        node: usize,
        id: ShrinkerId,
    ) -> Result<(), ShrinkError> {
        if group == GroupId::ROOT {
            return Ok(());
        }
        // SeqCst fence: the producer half of the handshake (module doc):
        // orders the caller's earlier stores (the list's count) before the
        // load and set of the bit, against the walker's clear; fence; count.
        fence(Ordering::SeqCst);
        let groups = self;
        let (unit, bit) = split(id);
        {
            let guard = read_lock();
            let data = groups
                .lookup(group, &guard)
                .ok_or(ShrinkError::NoSuchGroup { group })?;
            let map = data.map(&guard);
            if unit >= map.nr_units() {
                return Err(ShrinkError::NoSuchShrinker { id });
            }
            // The unit lives as long as the group's data, which `guard`
            // keeps allocated (module doc, "Lifetimes").
            if let Some(u) = map.unit(node, unit) {
                u.set(bit);
                return Ok(());
            }
        }
        groups.set_bit_slow(group, node, id)
    }

    /// The group walk (`shrink_slab_memcg`): the numbered protocol in the
    /// module documentation.
    pub(crate) fn shrink(
        &self,
        ids: &IdTable,
        gate: &Gate,
        group: GroupId,
        nid: usize,
        priority: u8,
    ) -> Result<usize, ShrinkError> {
        // `None` inside a nested walk or during thread teardown: refcount
        // pins only.
        pin::with_walker_slot(|slot| self.shrink_with(ids, gate, slot, group, nid, priority))
    }

    #[inline]
    fn shrink_with(
        &self,
        ids: &IdTable,
        gate: &Gate,
        slot: Option<&WalkerSlot>,
        group: GroupId,
        nid: usize,
        priority: u8,
    ) -> Result<usize, ShrinkError> {
        // 1. Find and pin the group: lightly if the gate is open (registry/pin.rs,
        // "Light group pins"), else with its refcount.
        let guard = read_lock();
        let Some(data) = self.lookup(group, &guard) else {
            return Err(ShrinkError::NoSuchGroup { group });
        };
        let data: *const GroupData = data;
        // SAFETY: found in this read section, so live until it ends; once
        // pinned, removal waits for the pin before it frees the data (and
        // its units) after a grace period, and the pin is dropped inside a
        // read section (step 7, or `GroupPin`'s drop).
        let data = unsafe { &*data };
        let pin = match slot {
            Some(s) if gate.is_open() => {
                s.pin_group(data);
                GroupPin {
                    data,
                    light: Some(s),
                }
            }
            _ if data.try_get() => GroupPin { data, light: None },
            _ => return Err(ShrinkError::NoSuchGroup { group }),
        };
        let (freed, guard) = if pin.light.is_some() {
            // The slot itself marks the walk for remove_group's misuse check.
            self.walk_units(ids, gate, data, slot, group, nid, priority, guard)
        } else {
            frames::with_frame(data, move || {
                self.walk_units(ids, gate, data, slot, group, nid, priority, guard)
            })
        };
        // 7. Inside the read section: see `GroupData::put`.
        pin.unpin(&guard);
        drop(guard);
        Ok(freed)
    }

    /// Steps 2–6 over the installed units of (`data`, `nid`); returns what
    /// was freed and the read section it ends in.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn walk_units(
        &self,
        ids: &IdTable,
        gate: &Gate,
        data: &GroupData,
        slot: Option<&WalkerSlot>,
        group: GroupId,
        nid: usize,
        priority: u8,
        mut guard: ReadGuard,
    ) -> (usize, ReadGuard) {
        let mut freed = 0usize;
        let mut w = 0;
        // 2. Re-load the map each time: an expansion may have replaced it
        // while we were out of the read section.
        while let Some(mut units) = data.map(&guard).installed(nid, w) {
            while units != 0 {
                let u = w * BITS_PER_UNIT + units.trailing_zeros() as usize;
                units &= units - 1;
                // A map read before a callout names the same units as the
                // current one (units never move or go away), so this
                // snapshot of the summary stays good.
                let Some(unit) = data.map(&guard).unit(nid, u) else {
                    continue; // unreachable: installed units stay installed
                };
                let unit: *const Unit = unit;
                // SAFETY: units live as long as the group, which we pinned
                // (beyond `guard`, which we leave at each callout).
                let unit = unsafe { &*unit };
                // Relaxed: a bit set after this snapshot is found by a later
                // walk; one cleared since costs a visit that finds it empty.
                let mut bits = unit.map.load(Ordering::Relaxed);
                while bits != 0 {
                    let bit = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let m = 1u64 << bit;
                    let id = (u * BITS_PER_UNIT + bit) as u32;
                    // 3.
                    let p = ids.lookup(id, &guard);
                    // SAFETY: a node found in the id table is live until
                    // `guard` ends (registry/ids.rs).
                    let node = unsafe { p.as_ref() };
                    let pinned = node
                        .filter(|n| n.flags.group_aware)
                        .and_then(|n| pin_for_callout(n, slot, gate).map(|p| (n, p)));
                    let Some((node, pinned)) = pinned else {
                        // Relaxed: nothing is published by the clear; a
                        // producer that sets it again is not harmed.
                        unit.map.fetch_and(!m, Ordering::Relaxed);
                        continue;
                    };
                    // A NUMA-unaware shrinker keeps its deferred work of the
                    // group on node 0 (`do_shrink_slab`: `nid = 0` before
                    // `xchg_nr_deferred_memcg`), as the global path does.
                    let deferred_unit = if nid == 0 || node.flags.numa_aware {
                        Some(unit)
                    } else {
                        data.map(&guard)
                            .unit(0, u)
                            .map(|u| -> *const Unit { u })
                            // SAFETY: units live as long as the group, which
                            // we pinned.
                            .map(|u| unsafe { &*u })
                    };
                    // 4. The pin keeps the node alive, the group pin the unit.
                    drop(guard);
                    let deferred_unit = match deferred_unit {
                        Some(u) => u,
                        None => self.install_pinned(data, 0, u),
                    };
                    let deferred = &deferred_unit.nr_deferred[bit];
                    let light = pinned.is_light();
                    let mut out = node.shrink_pinned(nid, group, priority, light, deferred);
                    if out.empty {
                        // 5. The walker half of the handshake (module doc):
                        //
                        //   producer                    walker (here)
                        //   --------                    -------------
                        //   nr_items = 1                clear bit
                        //   fence(SeqCst)      ◀─────▶  fence(SeqCst)
                        //   bit clear? set it           count again; not Empty: set bit
                        //
                        // Relaxed: the fence below orders it.
                        unit.map.fetch_and(!m, Ordering::Relaxed);
                        // SeqCst: pairs with the fence in set_shrinker_bit.
                        fence(Ordering::SeqCst);
                        out = node.shrink_pinned(nid, group, priority, light, deferred);
                        if !out.empty {
                            unit.set(bit);
                        }
                    }
                    freed = freed.saturating_add(out.freed);
                    // 6. Re-enter before unpinning.
                    guard = read_lock();
                    pinned.unpin(&guard);
                }
            }
            w += 1;
        }
        (freed, guard)
    }
}

/// Removal step 4 into the root: the root's deferred work lives in the
/// shrinker itself (`NrDeferred::slot`). A shrinker that no longer exists
/// loses it, as its root counters are gone too.
fn add_root_deferred(ids: &IdTable, id: u32, node: usize, n: usize, guard: &ReadGuard) {
    // SAFETY: a node found in the id table is live until `guard` ends
    // (registry/ids.rs); we touch only an atomic counter, so no pin is needed.
    if let Some(s) = unsafe { ids.lookup(id, guard).as_ref() } {
        // Relaxed: an atomic sum; walkers swap it.
        s.deferred
            .slot(s.effective_node(node))
            .fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
impl Groups {
    /// Is the bit of `id` set in (`g`, `node`)? (Tests.)
    pub(crate) fn test_bit(&self, g: GroupId, node: usize, id: ShrinkerId) -> bool {
        let guard = read_lock();
        let (unit, bit) = split(id);
        self.lookup(g, &guard)
            .and_then(|d| d.map(&guard).unit(node, unit))
            // Relaxed: a test's snapshot of one bit; nothing read through it.
            .is_some_and(|u| u.map.load(Ordering::Relaxed) & (1 << bit) != 0)
    }

    /// The deferred count of `id` in (`g`, `node`). (Tests.)
    pub(crate) fn test_deferred(&self, g: GroupId, node: usize, id: ShrinkerId) -> usize {
        let guard = read_lock();
        let (unit, bit) = split(id);
        self.lookup(g, &guard)
            .and_then(|d| d.map(&guard).unit(node, unit))
            // Relaxed: deferred counts are Relaxed throughout (engine/).
            .map_or(0, |u| u.nr_deferred[bit].load(Ordering::Relaxed))
    }

    /// Add `n` to the deferred count of `id` in (`g`, `node`), installing
    /// the unit as a bit set would. (Tests.)
    pub(crate) fn test_add_deferred(&self, g: GroupId, node: usize, id: ShrinkerId, n: usize) {
        let (unit, bit) = split(id);
        let groups = self;
        {
            let guard = read_lock();
            let d = groups.lookup(g, &guard).expect("group exists");
            if let Some(u) = d.map(&guard).unit(node, unit) {
                // Relaxed: as the engine's deferred add.
                u.nr_deferred[bit].fetch_add(n, Ordering::Relaxed);
                return;
            }
        }
        let st = lock(&groups.state);
        let u = st.data(g).unwrap().install(&st, node, unit).unwrap();
        // Relaxed: as the engine's deferred add.
        u.nr_deferred[bit].fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
