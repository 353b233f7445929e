//! A group's `ShrinkerInfo` (the kernel's `struct shrinker_info`): its
//! units of 64 shrinker ids and the [`UnitMap`] that says which are
//! installed on each node and where (module doc of `groups/`, "Layout").

use std::ptr;

use crate::info::ShrinkerId;
use crate::sync::{AtomicU64, AtomicUsize, Ordering};

/// Shrinker ids per unit (bits in `Unit::map`).
pub(crate) const BITS_PER_UNIT: usize = 64;

/// 64 shrinker ids' worth of one (group, node)'s `ShrinkerInfo`
/// (`struct shrinker_info_unit`).
#[repr(C)] // `map` first: the walk reads it before any counter
pub(crate) struct Unit {
    /// Bit `b`: shrinker `unit × 64 + b` may have objects here.
    pub(super) map: AtomicU64,
    /// Deferred work of shrinker `unit × 64 + b` for this (group, node).
    pub(super) nr_deferred: [AtomicUsize; BITS_PER_UNIT],
}

impl Unit {
    pub(super) fn new() -> Box<Unit> {
        Box::new(Unit {
            map: AtomicU64::new(0),
            nr_deferred: std::array::from_fn(|_| AtomicUsize::new(0)),
        })
    }

    /// Set `bit`, the producer's last step (module doc, "The handshake").
    /// The caller has issued its `fence(SeqCst)`.
    #[inline]
    pub(super) fn set(&self, bit: usize) {
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
pub(super) union Word {
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
pub(super) struct UnitMap<'a> {
    pub(super) w: &'a [Word],
}

impl<'a> UnitMap<'a> {
    /// # Safety
    ///
    /// `p` came from [`build_map`] and is not freed during `'a`.
    #[inline]
    pub(super) unsafe fn from_raw(p: *const Word) -> Self {
        // SAFETY: `build_map` wrote the length into the first word as a
        // number, and the allocation is live (contract).
        let len = unsafe { (*p.add(MAP_LEN)).n } as usize;
        // SAFETY: `len` words, all initialised by `build_map`, live for `'a`.
        let w = unsafe { std::slice::from_raw_parts(p, len) };
        UnitMap { w }
    }

    /// Header or summary word `i`, a number.
    #[inline]
    pub(super) fn n(&self, i: usize) -> u64 {
        // SAFETY: the header and summary words are written as numbers
        // (type invariant); callers index only those.
        unsafe { self.w[i].n }
    }

    #[inline]
    pub(super) fn nr_units(&self) -> usize {
        self.n(MAP_NR_UNITS) as usize
    }

    #[inline]
    pub(super) fn words(&self) -> usize {
        self.n(MAP_WORDS) as usize
    }

    #[inline]
    pub(super) fn nr_nodes(&self) -> usize {
        self.n(MAP_NR_NODES) as usize
    }

    /// Summary word `w` of `node` (bit `b`: unit `w * 64 + b` is
    /// installed), or `None` past the last.
    #[inline]
    pub(super) fn installed(&self, node: usize, w: usize) -> Option<u64> {
        let words = self.words();
        (w < words && node < self.nr_nodes()).then(|| self.n(MAP_HEADER + node * words + w))
    }

    /// Unit `u` of `node`, if installed. The reference lives as long as the
    /// group, which the caller keeps alive for `'a` (a read section or a
    /// group pin, and the groups mutex for a removed group's last uses).
    #[inline]
    pub(super) fn unit(&self, node: usize, u: usize) -> Option<&'a Unit> {
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
    pub(super) fn units(&self) -> Vec<(usize, usize, *mut Unit)> {
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
    pub(super) fn nr_installed(&self) -> usize {
        self.w.len() - MAP_HEADER - self.nr_nodes() * self.words()
    }

    pub(super) fn bytes(&self) -> usize {
        std::mem::size_of_val(self.w)
    }
}

/// Build a unit map of `nr_units` per node over `nr_nodes` nodes, naming
/// the units of `old` (if any) and `add` (node, unit index, pointer).
/// Returns the leaked thin pointer ([`UnitMap::from_raw`],
/// [`free_map`]).
pub(super) fn build_map(
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
pub(super) unsafe fn free_map(p: *mut Word) {
    // SAFETY: the first word holds the length (`build_map`).
    let len = unsafe { (*p.add(MAP_LEN)).n } as usize;
    // SAFETY: the `Box<[Word]>` leaked by `build_map`, ours (contract).
    drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(p, len)) });
}

/// (unit index, bit) of a shrinker id.
#[inline]
pub(super) fn split(id: ShrinkerId) -> (usize, usize) {
    let i = id.index() as usize;
    (i / BITS_PER_UNIT, i % BITS_PER_UNIT)
}
