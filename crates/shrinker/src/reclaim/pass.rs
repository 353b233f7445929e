//! A round's descent: one registry walk per priority, from 12 (gentle)
//! down to 0 (everything), as kswapd's `balance_pgdat` lowers
//! `sc.priority`, with a check between walks.

use std::sync::atomic::AtomicBool;

use crate::{Freed, GroupId, ShrinkRequest, ShrinkerRegistry};

/// The gentlest priority (`DEF_PRIORITY`).
const DEF_PRIORITY: u8 = 12;

/// Walks repeated at one priority while they make progress: a walk at
/// priority `p` scans about `2 * count >> p` objects of each shrinker, so
/// eight walks at priority 4 cover a cache once.
const MAX_REPEATS: u32 = 8;

/// Walks the registry for one round.
pub(super) struct Rounds<'a> {
    registry: &'a ShrinkerRegistry,
    stop: &'a AtomicBool,
}

/// What a descent did.
#[derive(Debug, Default)]
pub(super) struct Descent {
    /// Everything the walks freed.
    pub(super) freed: Freed,
    /// Walks run (each over every node).
    pub(super) passes: u64,
    /// The walk at priority 0 ran.
    pub(super) reached_zero: bool,
    /// The last walk, when the descent ended without handing it to the
    /// between-walks check (target met, or priority 0 done).
    untrimmed: Option<Freed>,
}

impl Descent {
    /// Did the last walk free enough to deserve the allocator's return,
    /// which the between-walks check did not get to run for it?
    pub(super) fn last_pass_untrimmed(&self, threshold: u64) -> bool {
        self.untrimmed
            .is_some_and(|p| p.bytes >= threshold || p.unsized_objects > 0)
    }
}

impl<'a> Rounds<'a> {
    pub(super) fn new(registry: &'a ShrinkerRegistry, stop: &'a AtomicBool) -> Self {
        Rounds { registry, stop }
    }

    /// Walk from priority 12 down until `target` bytes are freed, priority
    /// 0 has run, the stop flag is set, or `between` (called after every
    /// walk but the last with what that walk freed) says to stop.
    pub(super) fn descend(&self, target: u64, mut between: impl FnMut(&Freed) -> bool) -> Descent {
        let mut out = Descent::default();
        let mut priority = DEF_PRIORITY;
        let mut repeats = 0u32;
        while !self.stopping() {
            let pass = self.walk(priority);
            out.passes += 1;
            out.freed = out.freed.saturating_add(pass);
            if priority == 0 {
                out.reached_zero = true;
            }
            if out.freed.bytes >= target || (priority == 0 && pass.is_empty()) {
                out.untrimmed = Some(pass);
                break;
            }
            if !between(&pass) {
                break;
            }
            // kswapd (`balance_pgdat`) lowers the priority only after a
            // pass that made too little progress. Here a walk that scanned
            // is progress even if it freed nothing (an LRU rotated its
            // referenced entries: their second chance): lowering the
            // priority after every walk let a cache whose entries were all
            // referenced once see every walk down to priority 2 free
            // nothing and the walk at priority 1 evict it whole, for a
            // target of a few entries. At most `MAX_REPEATS` walks per
            // priority, so a round still reaches priority 0 when the target
            // needs it.
            if (pass.scanned > 0 || pass.objects > 0) && repeats < MAX_REPEATS {
                repeats += 1;
            } else if priority == 0 {
                out.untrimmed = None;
                break;
            } else {
                priority -= 1;
                repeats = 0;
            }
        }
        out
    }

    fn stopping(&self) -> bool {
        // Relaxed: a request to stop soon (see `Reclaimer`'s drop).
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One global walk at `priority` on every node, stopping between
    /// shrinkers once the stop flag is set.
    fn walk(&self, priority: u8) -> Freed {
        let span = tracing::debug_span!(
            target: "shrinker::reclaim",
            "reclaim_pass",
            priority,
            objects = tracing::field::Empty,
            bytes = tracing::field::Empty,
            scanned = tracing::field::Empty,
        )
        .entered();
        let freed = self.walk_nodes(priority);
        span.record("objects", freed.objects);
        span.record("bytes", freed.bytes);
        span.record("scanned", freed.scanned);
        freed
    }

    fn walk_nodes(&self, priority: u8) -> Freed {
        let mut freed = Freed::default();
        for node in 0..self.registry.nr_nodes() {
            let req = ShrinkRequest {
                node,
                priority,
                group: GroupId::ROOT,
            };
            // The request is valid by construction (node < nr_nodes,
            // priority ≤ 12, the root group always exists).
            if let Ok(f) = self.registry.shrink_accounted_until(&req, self.stop) {
                freed = freed.saturating_add(f);
            }
        }
        freed
    }
}
