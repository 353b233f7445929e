//! `do_shrink_slab`: turning reclaim pressure into scan calls, kernel-exact.
//!
//! The engine never asks a cache "how many bytes"; it asks how many objects
//! could go ([`Shrink::count`](crate::Shrink::count)) and turns the reclaim
//! *priority* (12 = gentlest, 0 = desperate: `DEF_PRIORITY` "implies that we
//! will scan 1/4096th of the queues") into a fraction of them, weighted by
//! how costly an object is to recreate (`seeks`). Work that could not be done
//! now (a `Stop`, or less than a batch) is *deferred*: carried in a per-(group,
//! node) counter to the next caller.
//!
//! # The protocol (`mm/shrinker.c: do_shrink_slab`, Linux 6.7)
//!
//! 1. `freeable = count()`. `Empty` → return `Empty`; `0` → return 0 freed
//!    (skip this time).
//! 2. `nr = swap(nr_deferred, 0)`: take every deferred object, so two
//!    concurrent reclaimers do not both do it.
//! 3. `delta = (freeable >> priority) * 4 / seeks`, or `freeable / 2` when
//!    `seeks == 0` ("don't require any IO to create. Trim them
//!    aggressively").
//! 4. `total_scan = min((nr >> priority) + delta, 2 * freeable)`.
//! 5. While `total_scan >= batch || total_scan >= freeable` (the second
//!    clause lets a cache smaller than one batch be scanned at all, once the
//!    pressure covers all of it): `nr_to_scan = nr_scanned = min(batch,
//!    total_scan)`; `scan()`; `Stop` → break; add the freed count;
//!    `total_scan -= nr_scanned`; `scanned += nr_scanned`.
//! 6. `next_deferred = clamp(nr + delta - scanned, 0, 2 * freeable)`; add it
//!    back to `nr_deferred` (an add, not a store: concurrent reclaimers'
//!    leftovers merge). "The deferred work is increased by any new work
//!    (delta) that wasn't done, decreased by old deferred work that was done
//!    now. And it is capped to two times of the freeable items."
//!
//! # Deviations, all on inputs the kernel treats as bugs
//!
//! * Arithmetic saturates instead of wrapping (a count near `usize::MAX`).
//! * `total_scan -= nr_scanned` saturates: a callee that reports more
//!   scanned than it was asked for ends the pass instead of wrapping
//!   `total_scan` to a huge value.
//! * A scan call that reports `nr_scanned == 0` ends the pass (its freed
//!   count still counts): the kernel would call it again forever when
//!   `total_scan >= freeable`.
//!
//! # Ordering
//!
//! The deferred counter is `Relaxed` throughout (swap and add): it is a
//! heuristic quantity, no other memory is published through it, and the
//! atomicity of each read-modify-write is all that "concurrent callers
//! merge" needs (the kernel's `atomic_long_xchg` is fully ordered only
//! because every value-returning atomic there is).

mod nr_deferred;

pub(crate) use nr_deferred::NrDeferred;

use crate::request::DEF_PRIORITY;
use crate::shrink::{Count, Scan, ShrinkControl};
use crate::sync::{AtomicUsize, Ordering};

/// `DEFAULT_SEEKS`.
pub(crate) const DEFAULT_SEEKS: u32 = 2;
/// `SHRINK_BATCH`.
pub(crate) const SHRINK_BATCH: usize = 128;

/// The two callbacks as the engine sees them: already wrapped for panics and
/// statistics by the caller; and where a visit that scanned is recorded.
pub(crate) trait Callee {
    fn count(&mut self, sc: &ShrinkControl) -> Count;
    fn scan(&mut self, sc: &mut ShrinkControl) -> Scan;
    /// The shrinker's `seeks` and `batch` (`batch > 0`). Read after
    /// `count`: a caller that read them before would keep them live
    /// across the callout.
    fn shape(&self) -> (u32, usize);
    /// A visit that called `scan` ended with `outcome` (called once, after
    /// step 6). A visit that did not scan did no work to record: the
    /// common visit of a gentle walk returns without a test of its outcome.
    fn settle(&mut self, outcome: &Outcome);
}

/// What one `do_shrink_slab` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// `count()` said `Empty`.
    pub(crate) empty: bool,
    /// Objects freed by scan calls.
    pub(crate) freed: usize,
    /// Bytes the scan calls reported freeing (0: none reported).
    pub(crate) freed_bytes: usize,
    /// Objects scanned (the sum of `nr_scanned`).
    pub(crate) scanned: usize,
    /// Deferred work taken at step 2.
    pub(crate) nr: usize,
    /// Deferred work added back at step 6.
    pub(crate) next_deferred: usize,
}

/// Step 1's outcome for `Count::Empty`. Cold, and out of line: a walk that
/// ignores `empty` would otherwise merge the two early returns of step 1
/// into one test computed with flag arithmetic.
#[cold]
#[inline(never)]
fn empty() -> Outcome {
    Outcome {
        empty: true,
        ..Outcome::default()
    }
}

/// Step 3: the new work this call brings.
///
/// `DEFAULT_SEEKS` takes a shift instead of the 64-bit division, which costs
/// tens of cycles on every visit; the result is the same (`x * 4 / 2` is
/// `x * 2`, saturating alike).
#[inline]
pub(crate) fn delta(freeable: usize, priority: u32, seeks: u32) -> usize {
    match seeks {
        0 => freeable / 2,
        DEFAULT_SEEKS => (freeable >> priority).saturating_mul(4) / 2,
        _ => (freeable >> priority).saturating_mul(4) / seeks as usize,
    }
}

/// Steps 1–6 (see the module documentation). `sc` comes with nothing to
/// scan, and is left so (a walk hands one control to all its visits).
#[inline(always)]
pub(crate) fn do_shrink_slab(
    callee: &mut impl Callee,
    sc: &mut ShrinkControl,
    priority: u32,
    nr_deferred: &AtomicUsize,
) -> Outcome {
    debug_assert!(priority <= u32::from(DEF_PRIORITY));
    // 1.
    let freeable = match callee.count(sc) {
        Count::Objects(n) => n,
        Count::Empty => return empty(),
    };
    if freeable == 0 {
        return Outcome::default();
    }
    let (seeks, batch) = callee.shape();
    debug_assert!(batch > 0);
    // 2. Relaxed: see the module's "Ordering". A load first: when nothing
    // is deferred (the common case of a gentle walk) the visit writes
    // nothing to the shrinker's line, which other walkers read; the
    // kernel's unconditional xchg would bounce it between them. A deferral
    // added between the load and our skipping the swap is taken by the
    // next visit, exactly as if our swap had come before it.
    let nr = match nr_deferred.load(Ordering::Relaxed) {
        0 => 0,
        _ => nr_deferred.swap(0, Ordering::Relaxed),
    };
    // 3.
    let delta = delta(freeable, priority, seeks);
    // 4.
    let cap = freeable.saturating_mul(2);
    let mut total_scan = (nr >> priority).saturating_add(delta).min(cap);
    // 5. (Step 6 is written out in both branches, so that the common
    // visit that scans nothing has nothing to settle.)
    if total_scan < batch && total_scan < freeable {
        // 6., with nothing scanned.
        let next_deferred = nr.saturating_add(delta).min(cap);
        if next_deferred > 0 {
            // Relaxed: see the module's "Ordering".
            nr_deferred.fetch_add(next_deferred, Ordering::Relaxed);
        }
        return Outcome {
            nr,
            next_deferred,
            ..Outcome::default()
        };
    }
    let mut freed = 0usize;
    let mut scanned = 0usize;
    loop {
        sc.prepare_scan(batch.min(total_scan));
        match callee.scan(sc) {
            Scan::Stop => break,
            Scan::Freed(n) => freed = freed.saturating_add(n),
        }
        let done = sc.nr_scanned();
        scanned = scanned.saturating_add(done);
        if done == 0 || done > total_scan {
            break; // "Deviations" above.
        }
        total_scan -= done;
        if total_scan < batch && total_scan < freeable {
            break;
        }
    }
    // Leaves `sc` as it came (a count call never changes it).
    let freed_bytes = sc.finish_scans();
    // 6.
    let next_deferred = nr.saturating_add(delta).saturating_sub(scanned).min(cap);
    if next_deferred > 0 {
        // Relaxed: see the module's "Ordering".
        nr_deferred.fetch_add(next_deferred, Ordering::Relaxed);
    }
    let outcome = Outcome {
        empty: false,
        freed,
        freed_bytes,
        scanned,
        nr,
        next_deferred,
    };
    callee.settle(&outcome);
    outcome
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::GroupId;

    /// A scripted cache: `count` answers `count`; each scan frees what it is
    /// asked (or follows `scan_script`), recording every `nr_to_scan`.
    struct Script {
        count: Count,
        scan_script: Vec<Scan>,
        scanned_override: Option<usize>,
        asked: Vec<usize>,
        settled: Vec<Outcome>,
        seeks: u32,
    }

    impl Script {
        fn objects(n: usize) -> Self {
            Script {
                count: Count::Objects(n),
                scan_script: Vec::new(),
                scanned_override: None,
                asked: Vec::new(),
                settled: Vec::new(),
                seeks: DEFAULT_SEEKS,
            }
        }
    }

    impl Callee for Script {
        fn count(&mut self, _: &ShrinkControl) -> Count {
            self.count
        }
        fn scan(&mut self, sc: &mut ShrinkControl) -> Scan {
            self.asked.push(sc.nr_to_scan());
            if let Some(n) = self.scanned_override {
                sc.set_nr_scanned(n);
            }
            if self.scan_script.is_empty() {
                Scan::Freed(sc.nr_to_scan())
            } else {
                self.scan_script.remove(0)
            }
        }
        fn shape(&self) -> (u32, usize) {
            (self.seeks, SHRINK_BATCH)
        }
        fn settle(&mut self, o: &Outcome) {
            self.settled.push(*o);
        }
    }

    /// One visit; checks the contract every caller relies on: a visit
    /// that called `scan` is settled once with its outcome, one that did
    /// not is not settled; the control is left with nothing to scan.
    fn run(s: &mut Script, priority: u32, seeks: u32, deferred: &AtomicUsize) -> Outcome {
        let mut sc = ShrinkControl::new(0, GroupId::ROOT);
        let (asked, settled) = (s.asked.len(), s.settled.len());
        s.seeks = seeks;
        let o = do_shrink_slab(s, &mut sc, priority, deferred);
        if s.asked.len() > asked {
            assert_eq!(
                s.settled.len(),
                settled + 1,
                "a visit that scanned is settled once"
            );
            assert_eq!(s.settled.last(), Some(&o));
        } else {
            assert_eq!(
                s.settled.len(),
                settled,
                "a visit that did not scan is not settled"
            );
        }
        assert_eq!((sc.nr_to_scan(), sc.nr_scanned()), (0, 0));
        assert_eq!(sc.finish_scans(), 0, "the visit's bytes were taken");
        o
    }

    #[test]
    fn delta_by_priority_and_seeks() {
        // freeable = 1,000,000, seeks = 2: (f >> p) * 2.
        let f = 1_000_000;
        let expect = [
            (12, 488),
            (11, 976),
            (10, 1_952),
            (9, 3_906),
            (8, 7_812),
            (7, 15_624),
            (6, 31_250),
            (5, 62_500),
            (4, 125_000),
            (3, 250_000),
            (2, 500_000),
            (1, 1_000_000),
            (0, 2_000_000),
        ];
        for (p, d) in expect {
            assert_eq!(delta(f, p, 2), d, "priority {p}");
        }
        // seeks = 0: half, whatever the priority.
        for p in 0..=12 {
            assert_eq!(delta(f, p, 0), 500_000);
        }
        // seeks = 1: twice the seeks-2 figure; seeks = 4: half of it.
        assert_eq!(delta(f, 12, 1), 976);
        assert_eq!(delta(f, 12, 4), 244);
    }

    #[test]
    fn worked_example_large_cache_priority_12() {
        // 1,000,000 objects at priority 12: delta 488 → 128, 128, 128; the
        // last 104 are below a batch and far below freeable, so they are
        // deferred (the loop condition, not a fourth call of 104).
        let d = AtomicUsize::new(0);
        let mut s = Script::objects(1_000_000);
        let o = run(&mut s, 12, 2, &d);
        assert_eq!(s.asked, [128, 128, 128]);
        assert_eq!((o.freed, o.scanned, o.next_deferred), (384, 384, 104));
        assert_eq!(d.load(Ordering::Relaxed), 104);
    }

    #[test]
    fn priority_0_is_capped_at_twice_freeable() {
        let d = AtomicUsize::new(0);
        let mut s = Script::objects(1_000);
        let o = run(&mut s, 0, 2, &d);
        // delta = 1000 * 4 / 2 = 2000 = the cap → 15 × 128 = 1920; the last
        // 80 are below a batch and below freeable.
        assert_eq!(s.asked, [128; 15]);
        assert_eq!(o.scanned, 1_920);
        // next = 0 + 2000 - 1920 = 80.
        assert_eq!(o.next_deferred, 80);
        assert_eq!(d.load(Ordering::Relaxed), 80);
        // A delta above the cap: seeks 1 → 4000, clamped to 2000 for the
        // scan and for the carry (nr 80 + 4000 - 1920 = 2160 → 2000).
        let mut s = Script::objects(1_000);
        let o = run(&mut s, 0, 1, &d);
        assert_eq!(o.nr, 80);
        assert_eq!(o.scanned, 1_920);
        assert_eq!(o.next_deferred, 2_000);
    }

    #[test]
    fn small_cache_rule() {
        // 100 objects (< batch). Priority 12: delta 0, nothing happens.
        let d = AtomicUsize::new(0);
        let mut s = Script::objects(100);
        let o = run(&mut s, 12, 2, &d);
        assert!(s.asked.is_empty());
        assert_eq!(o, Outcome::default());
        // Priority 0: delta 200 = cap → one call of 128, then 72 < 100 and
        // 72 < 128 ends the loop; 200 - 128 = 72 deferred.
        let mut s = Script::objects(100);
        let o = run(&mut s, 0, 2, &d);
        assert_eq!(s.asked, [128]);
        assert_eq!(o.next_deferred, 72);
        assert_eq!(d.load(Ordering::Relaxed), 72);
        // Priority 1: delta (100 >> 1) * 2 = 100 >= freeable → one call of 100.
        let d = AtomicUsize::new(0);
        let mut s = Script::objects(100);
        let o = run(&mut s, 1, 2, &d);
        assert_eq!(s.asked, [100]);
        assert_eq!(o.next_deferred, 0);
        // Priority 2: delta 25*4/2 = 50 < 100 and < 128: nothing, 50 deferred.
        let mut s = Script::objects(100);
        let o = run(&mut s, 2, 2, &d);
        assert!(s.asked.is_empty());
        assert_eq!(o.next_deferred, 50);
    }

    #[test]
    fn seeks_zero_trims_half_at_any_priority() {
        let d = AtomicUsize::new(0);
        let mut s = Script::objects(1_000);
        let o = run(&mut s, 12, 0, &d);
        // delta 500 → 128 × 3, 116 deferred.
        assert_eq!(s.asked, [128, 128, 128]);
        assert_eq!((o.freed, o.next_deferred), (384, 116));
    }

    #[test]
    fn deferred_carry_is_taken_shifted_and_readded() {
        // 1,000 objects at priority 12 with 8,192 deferred: delta 0,
        // total = 8192 >> 12 = 2 → no call (2 < 128, 2 < 1000).
        let d = AtomicUsize::new(8_192);
        let mut s = Script::objects(1_000);
        let o = run(&mut s, 12, 2, &d);
        assert!(s.asked.is_empty());
        assert_eq!(o.nr, 8_192);
        // next = min(8192 + 0 - 0, 2000) = 2000: the clamp.
        assert_eq!(o.next_deferred, 2_000);
        assert_eq!(d.load(Ordering::Relaxed), 2_000);
        // At priority 3 the carried 2000 becomes 250 + delta 250 = 500.
        let mut s = Script::objects(1_000);
        let o = run(&mut s, 3, 2, &d);
        assert_eq!(s.asked, [128, 128, 128]);
        assert_eq!(o.nr, 2_000);
        // next = 2000 + 250 - 384 = 1866.
        assert_eq!(o.next_deferred, 1_866);
        assert_eq!(d.load(Ordering::Relaxed), 1_866);
    }

    #[test]
    fn deferred_merges_with_concurrent_adds() {
        // Another reclaimer added 10 while we held the swapped-out value.
        let d = AtomicUsize::new(0);
        let mut s = Script::objects(100);
        let _ = run(&mut s, 2, 2, &d); // defers 50
        d.fetch_add(10, Ordering::Relaxed);
        assert_eq!(d.load(Ordering::Relaxed), 60);
    }

    #[test]
    fn stop_ends_the_pass_and_defers_the_rest() {
        let d = AtomicUsize::new(0);
        let mut s = Script::objects(1_000_000);
        s.scan_script = vec![Scan::Freed(128), Scan::Stop];
        let o = run(&mut s, 12, 2, &d);
        assert_eq!(s.asked, [128, 128]);
        assert_eq!((o.freed, o.scanned), (128, 128));
        // 488 - 128 = 360 deferred.
        assert_eq!(o.next_deferred, 360);
    }

    #[test]
    fn empty_and_zero_skip_without_touching_deferred() {
        let d = AtomicUsize::new(77);
        let mut s = Script::objects(0);
        assert_eq!(run(&mut s, 0, 2, &d), Outcome::default());
        s.count = Count::Empty;
        let o = run(&mut s, 0, 2, &d);
        assert!(o.empty);
        assert!(s.asked.is_empty());
        assert_eq!(d.load(Ordering::Relaxed), 77);
    }

    #[test]
    fn nr_scanned_feedback_drives_the_loop() {
        // The callee looks at 64 per call: totals 488, 424, 360, 296, 232,
        // 168 each allow a call of 128; 104 does not → 384 scanned, 104
        // deferred.
        let d = AtomicUsize::new(0);
        let mut s = Script::objects(1_000_000);
        s.scanned_override = Some(64);
        let o = run(&mut s, 12, 2, &d);
        assert_eq!(s.asked, [128; 6]);
        assert_eq!(o.scanned, 384);
        assert_eq!(o.next_deferred, 104);
    }

    #[test]
    fn zero_progress_scan_cannot_livelock() {
        let d = AtomicUsize::new(0);
        let mut s = Script::objects(100);
        s.scanned_override = Some(0);
        let o = run(&mut s, 0, 2, &d);
        assert_eq!(s.asked, [128]);
        assert_eq!(o.next_deferred, 200);
    }
}
