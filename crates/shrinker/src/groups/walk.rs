//! The group walk (`shrink_slab_memcg`, steps 1–7 of the module doc) and
//! the producer's side of the handshake (`set_shrinker_bit`).

use shrinker_rcu::{read_lock, ReadGuard};

use super::data::GroupData;
use super::unit_map::{split, Unit, BITS_PER_UNIT};
use super::Groups;
use crate::error::ShrinkError;
use crate::group_id::GroupId;
use crate::info::ShrinkerId;
use crate::lifetime::frames;
use crate::registry::gate::Gate;
use crate::registry::ids::IdTable;
use crate::registry::pin::{self, PinTarget, WalkPin, WalkerSlot};
use crate::registry::walk::pin_for_callout;
use crate::sync::{fence, lock, Ordering};
use crate::Freed;
use std::sync::atomic::AtomicBool;

/// A group pinned for one walk (group walk steps 1–7): a [`WalkPin`] on
/// its data.
type GroupPin<'a> = WalkPin<'a, GroupData>;

impl PinTarget for GroupData {
    #[inline]
    fn put(&self) {
        GroupData::put(self);
    }

    #[inline]
    fn unpin_light(slot: &WalkerSlot) {
        slot.unpin_group();
    }
}

impl Groups {
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
            .install(&st.maps, node, unit)
            .ok_or(ShrinkError::NoSuchShrinker { id })?;
        u.set(bit);
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
            .install(&st.maps, node, unit)
            .expect("node 0 and a unit index read from the group's own map are in range");
        // SAFETY: units live as long as the group's data (type invariant),
        // which the caller's pin keeps alive for `'a`.
        unsafe { &*u }
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
        stop: &AtomicBool,
    ) -> Result<Freed, ShrinkError> {
        // `None` inside a nested walk or during thread teardown: refcount
        // pins only.
        pin::with_walker_slot(|slot| self.shrink_with(ids, gate, slot, group, nid, priority, stop))
    }

    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn shrink_with(
        &self,
        ids: &IdTable,
        gate: &Gate,
        slot: Option<&WalkerSlot>,
        group: GroupId,
        nid: usize,
        priority: u8,
        stop: &AtomicBool,
    ) -> Result<Freed, ShrinkError> {
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
        let pin: GroupPin<'_> = match slot {
            Some(s) if gate.is_open() => {
                s.pin_group(data);
                WalkPin::light(data, s)
            }
            _ if data.try_get() => WalkPin::by_ref(data),
            _ => return Err(ShrinkError::NoSuchGroup { group }),
        };
        let (freed, guard) = if pin.is_light() {
            // The slot itself marks the walk for remove_group's misuse check.
            self.walk_units(ids, gate, data, slot, group, nid, priority, stop, guard)
        } else {
            frames::with_frame(data, move || {
                self.walk_units(ids, gate, data, slot, group, nid, priority, stop, guard)
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
        stop: &AtomicBool,
        mut guard: ReadGuard,
    ) -> (Freed, ReadGuard) {
        let mut freed = Freed::default();
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
                    // Relaxed: a request to stop soon (a reclaimer being
                    // dropped), checked before each shrinker.
                    if stop.load(Ordering::Relaxed) {
                        return (freed, guard);
                    }
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
                    let mut out =
                        node.shrink_pinned(nid, group, priority, light, deferred, &mut freed);
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
                        out = node.shrink_pinned(nid, group, priority, light, deferred, &mut freed);
                        if !out.empty {
                            unit.set(bit);
                        }
                    }
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
