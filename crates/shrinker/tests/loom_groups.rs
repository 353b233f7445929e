//! loom model of the store-buffering handshake between a producer that
//! makes a (group, node) list non-empty and sets the shrinker's bit, and a
//! group walk whose `count` saw the list empty and clears the bit (groups/mod.rs,
//! "The handshake with producers"): the real `set_shrinker_bit` and the real
//! group walk, on a registry with one group-aware shrinker.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release -p shrinker --test loom_groups`
//!
//! What fails the models:
//! * `set_bit_against_clear_on_empty`: the list ends non-empty while its bit
//!   is clear, so that no later group walk would ever call the shrinker for
//!   it (checked by such a later walk: the shrinker's `count` must be
//!   called). Mutation check: deleting the walker's `fence(SeqCst)` after
//!   the clear in `shrink_group` (step 5) makes it fail; with the fence it
//!   passes. (Deleting the producer's fence in `set_shrinker_bit` does not
//!   fail under loom: shrinker-rcu's loom build enters read sections with a
//!   fence of its own, which the real build does not.)
//! * `walk_against_remove_group`, once with the gate open (the walk takes a
//!   light group pin, registry/pin.rs) and once with it held closed (the group's
//!   refcount): deferred work that a walk of the group adds is lost, i.e.
//!   removal reparented the counts before the walk's group pin was dropped.
//!   Mutation checks: deleting `wait_for_light_group_pins` in `remove_group`
//!   fails the light model; deleting its `gate.enter()` fails it too (the
//!   slot scan can miss a pin taken after it); deleting the completion wait
//!   fails the refcount model.
//!
//! As in `loom_lifecycle.rs`, the main thread only spawns, joins and checks;
//! every read-side section runs on a spawned thread.
#![cfg(loom)]

use std::sync::Arc;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use shrinker::{
    Count, GroupId, Scan, Shrink, ShrinkControl, ShrinkRequest, ShrinkerBuilder, ShrinkerRegistry,
};

/// A list reduced to its count (what `ListLru::count` reads).
struct List {
    items: Arc<AtomicUsize>,
}

impl Shrink for List {
    fn count(&self, _: &ShrinkControl) -> Count {
        // Relaxed: as `ListLru::count`; the handshake's fences order it.
        match self.items.load(Ordering::Relaxed) {
            0 => Count::Empty,
            n => Count::Objects(n),
        }
    }
    fn scan(&self, _: &mut ShrinkControl) -> Scan {
        // Frees nothing: the model is about the bit, not the scan.
        Scan::Stop
    }
}

/// One test running the models in turn (see loom_lifecycle.rs: the loom
/// build of shrinker-rcu assumes one model at a time).
#[test]
fn group_models() {
    set_bit_against_clear_on_empty();
    walk_against_remove_group();
}

fn set_bit_against_clear_on_empty() {
    loom::model(|| {
        let reg = ShrinkerRegistry::builder().nodes(1).build().unwrap();
        let g = reg.create_group(GroupId::ROOT).unwrap();
        let items = Arc::new(AtomicUsize::new(0));
        let s = ShrinkerBuilder::new("list")
            .group_aware(true)
            .build_in(
                &reg,
                List {
                    items: items.clone(),
                },
            )
            .unwrap()
            .register();
        let id = s.id();
        let req = ShrinkRequest {
            group: g,
            priority: 0,
            ..Default::default()
        };
        let producer = {
            let (reg, items) = (reg.clone(), items.clone());
            thread::spawn(move || {
                // ListLru::add: the count store (under the list lock), then
                // notify → set_shrinker_bit, which fences first.
                items.store(1, Ordering::Relaxed);
                reg.set_shrinker_bit(g, 0, id).unwrap();
            })
        };
        let walker = {
            let reg = reg.clone();
            thread::spawn(move || {
                // A stale bit: the list was emptied by an earlier scan (a set
                // of an empty list's bit, like any other producer's).
                reg.set_shrinker_bit(g, 0, id).unwrap();
                reg.shrink(&req).unwrap();
            })
        };
        producer.join().unwrap();
        walker.join().unwrap();
        // The list is non-empty now: a later walk must call the shrinker.
        thread::spawn(move || {
            let before = s.stats().count_calls;
            reg.shrink(&req).unwrap();
            assert!(
                s.stats().count_calls > before,
                "the list is non-empty but its bit was left clear"
            );
            drop(s.unregister());
        })
        .join()
        .unwrap();
        shrinker_rcu::rcu_barrier();
    });
}

/// 100 objects, never freed: at priority 2 each visit defers
/// (100 >> 2) * 4 / 2 = 50 (under a batch of 128, below `freeable`).
struct Hundred;

impl Shrink for Hundred {
    fn count(&self, _: &ShrinkControl) -> Count {
        Count::Objects(100)
    }
    fn scan(&self, _: &mut ShrinkControl) -> Scan {
        Scan::Stop
    }
}

fn walk_against_remove_group() {
    walk_against_remove_group_with(GatePins::Light);
    walk_against_remove_group_with(GatePins::Refcount);
}

/// Which group pin the walk takes.
#[derive(Clone, Copy)]
enum GatePins {
    /// The gate is open: a light pin in the walker slot, which removal
    /// waits for by scanning the slots after its grace period.
    Light,
    /// A first removal closed the gate, and it stays closed until
    /// `rcu_barrier` runs the reopening callback: the group's refcount,
    /// which removal waits for on its completion.
    Refcount,
}

fn walk_against_remove_group_with(pins: GatePins) {
    loom::model(move || {
        let reg = ShrinkerRegistry::builder().nodes(1).build().unwrap();
        if let GatePins::Refcount = pins {
            let closer = reg.create_group(GroupId::ROOT).unwrap();
            let r = reg.clone();
            thread::spawn(move || r.remove_group(closer).unwrap())
                .join()
                .unwrap();
        }
        let g = reg.create_group(GroupId::ROOT).unwrap();
        let s = ShrinkerBuilder::new("hundred")
            .group_aware(true)
            .build_in(&reg, Hundred)
            .unwrap()
            .register();
        let id = s.id();
        let walker = {
            let reg = reg.clone();
            thread::spawn(move || {
                if reg.set_shrinker_bit(g, 0, id).is_err() {
                    return false; // already removed
                }
                let req = ShrinkRequest {
                    group: g,
                    priority: 2,
                    ..Default::default()
                };
                reg.shrink(&req).is_ok()
            })
        };
        let remover = {
            let reg = reg.clone();
            thread::spawn(move || reg.remove_group(g).unwrap())
        };
        remover.join().unwrap();
        let walked = walker.join().unwrap();
        // Removal moved g's deferred work into the root's: the shrinker's
        // own counter. A walk that pinned the group deferred 50 there before
        // removal took the counts.
        let want = if walked { 50 } else { 0 };
        assert_eq!(s.stats().deferred, want, "deferred work lost or invented");
        thread::spawn(move || {
            let Hundred = s.unregister();
        })
        .join()
        .unwrap();
        shrinker_rcu::rcu_barrier();
    });
}
