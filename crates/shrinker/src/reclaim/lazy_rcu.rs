//! The lazy-RCU shrinker: Linux's `lazy_rcu_shrinker` (`kernel/rcu/tree_nocb.h`).
//!
//! Lazy RCU callbacks ([`shrinker_rcu::call_rcu_lazy`]) wait up to ten
//! seconds before their grace period starts, so that idle systems batch
//! them; each holds memory (the object it frees) while it waits. Under
//! memory pressure that memory should not wait: the shrinker's count is the
//! number of lazy callbacks pending, and its scan moves up to `nr_to_scan`
//! of them to the prompt queue, where they run after the next grace period.
//!
//! Its scan takes the callback shards' locks with a *try*-lock only, and
//! returns [`Scan::Stop`] when it could flush nothing: a shrinker must never
//! block reclaim on a lock that may be held by something waiting for
//! memory (the conclusion of the kernel thread that added
//! `rcu_nocb_try_lock` there). The objects are freed a grace period later,
//! by the RCU worker, so the scan reports objects, not bytes.

use crate::{Count, Scan, Shrink, ShrinkControl};

/// Count = lazy RCU callbacks pending; scan = flush them to the prompt
/// queue with try-locks only. Registered by the [`Reclaimer`](super::Reclaimer)
/// unless [`ReclaimConfig::lazy_rcu_shrinker`](super::ReclaimConfig::lazy_rcu_shrinker)
/// is off; register it yourself on a registry of your own if you like.
#[derive(Debug, Default)]
pub struct LazyRcuShrinker(());

impl LazyRcuShrinker {
    /// The shrinker's state (it has none of its own).
    pub fn new() -> Self {
        LazyRcuShrinker(())
    }
}

impl Shrink for LazyRcuShrinker {
    fn count(&self, _: &ShrinkControl) -> Count {
        match shrinker_rcu::lazy_pending() {
            0 => Count::Empty,
            n => Count::Objects(n),
        }
    }

    fn scan(&self, sc: &mut ShrinkControl) -> Scan {
        match shrinker_rcu::try_flush_lazy(sc.nr_to_scan()) {
            0 => Scan::Stop,
            n => {
                sc.set_nr_scanned(n);
                Scan::Freed(n)
            }
        }
    }
}
