//! Removal with reparenting (`mem_cgroup_css_offline` →
//! `memcg_offline_kmem`, steps 1–6 of the module doc), and the observers
//! it tells.

use std::sync::{Arc, Weak};

use shrinker_rcu::{read_lock, ReadGuard};

use super::observers::GroupObserver;
use super::unit_map::BITS_PER_UNIT;
use super::Groups;
use crate::error::GroupError;
use crate::group_id::GroupId;
use crate::lifetime::{frames, free_after_grace_period};
use crate::registry::gate::Gate;
use crate::registry::ids::IdTable;
use crate::registry::object::{drop_payload, panic_message};
use crate::registry::pin;
use crate::sync::{lock, Ordering};

impl Groups {
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
            let map = d.map_locked(&st.maps);
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
                                .install(&st.maps, node, u)
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
        unsafe { free_after_grace_period(data) };
        Ok(())
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
                panic_message(&*payload)
            );
            drop_payload(payload);
        }
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
