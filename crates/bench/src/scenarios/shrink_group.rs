//! `shrink-group`: reclaim of one memory group at a time, the workload of the seed's cover
//! letter (4,000 memory cgroups, each with its own filesystem's shrinker).
//!
//! | variant | the registry |
//! |---|---|
//! | `lockless` | `shrinker::ShrinkerRegistry` groups: pin the group, walk the set bits of its `ShrinkerInfo`, pin each shrinker (light pin or refcount), no lock |
//! | `rwlock-trylock` | the pre-6.7 `shrink_slab_memcg`: `down_read_trylock(&shrinker_rwsem)` for every group shrunk, the group's bitmap and `nr_deferred` arrays sized for every registered id, give up when a writer waits |
//!
//! Every group has objects in exactly one shrinker (its bit is the only one set): with 4,000
//! registered shrinkers, group `g` uses shrinker `g`; with 64, shrinker `g % 64`. A third
//! configuration registers 4,000 but uses only 64 of them, spread over the id space (group `g`
//! uses shrinker `(g % 64) × 62`): against the 64-registered one it isolates what registered
//! but unused shrinkers cost, from what 4,000 distinct used ones cost in cache. One operation
//! shrinks one group at priority 12 (a count, a deferred swap and the delta; no scan); threads
//! go round the groups from different starting points.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use shrinker::{GroupId, Registered, ShrinkRequest, ShrinkerBuilder, ShrinkerRegistry};

use super::shrink_global::{opaque_priority, BaseNode, Cheap};
use super::Scenario;
use crate::harness::{self, Config, Progress, Record, Report};

/// The registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: NAME,
    summary: "shrink one memory group of 4,000, with 4,000 and with 64 group-aware shrinkers registered: lockless vs rwlock-trylock; 1 and 2 threads",
    run,
};

const NAME: &str = "shrink-group";
const REFERENCE: &str = "rwlock-trylock";
const THREADS: [usize; 2] = [1, 2];
/// Memory groups.
const GROUPS: usize = 4_000;
/// (registered, used) shrinkers in the three configurations.
const CONFIGS: [(usize, usize); 3] = [(4_000, 4_000), (64, 64), (4_000, 64)];

std::thread_local! {
    /// This thread's position in the round of groups.
    static CURSOR: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The next group for this thread (threads start at different places).
#[inline]
fn next_group(groups: usize, start: &AtomicUsize) -> usize {
    CURSOR.with(|c| {
        let mut i = c.get();
        if i == usize::MAX {
            // Relaxed: a spread of starting points only.
            i = start.fetch_add(groups / 2 + 1, Ordering::Relaxed);
        }
        i = (i + 1) % groups;
        c.set(i);
        i
    })
}

/// A registry design under test.
trait Design: Sync + Sized {
    /// `GROUPS` groups and `shrinkers` group-aware shrinkers of which `used` have objects:
    /// group `g` is populated in shrinker [`used_by`]`(g, shrinkers, used)`.
    fn new(shrinkers: usize, used: usize) -> Self;
    /// Shrink group number `g` (0-based, not counting the root).
    fn shrink_group(&self, g: usize);
    /// Bytes of per-group reclaim state, averaged over the groups.
    fn bytes_per_group(&self) -> f64;
}

/// The shrinker that group `g` has objects in: `used` of the `shrinkers`, spread evenly over
/// the ids.
fn used_by(g: usize, shrinkers: usize, used: usize) -> usize {
    (g % used) * (shrinkers / used)
}

/// `lockless`: the `shrinker` crate.
struct Lockless {
    reg: ShrinkerRegistry,
    groups: Vec<GroupId>,
    _shrinkers: Vec<Registered<Cheap>>,
}

impl Design for Lockless {
    fn new(shrinkers: usize, used: usize) -> Self {
        let reg = ShrinkerRegistry::builder()
            .nodes(1)
            .build()
            .expect("registry");
        let groups: Vec<GroupId> = (0..GROUPS)
            .map(|_| reg.create_group(GroupId::ROOT).expect("group"))
            .collect();
        let shr: Vec<Registered<Cheap>> = (0..shrinkers)
            .map(|_| {
                ShrinkerBuilder::new("fs")
                    .group_aware(true)
                    .build_in(&reg, Cheap::new())
                    .expect("build")
                    .register()
            })
            .collect();
        for (g, &group) in groups.iter().enumerate() {
            shr[used_by(g, shrinkers, used)]
                .set_bit(group, 0)
                .expect("set bit");
        }
        Lockless {
            reg,
            groups,
            _shrinkers: shr,
        }
    }
    #[inline]
    fn shrink_group(&self, g: usize) {
        let req = ShrinkRequest {
            group: self.groups[g],
            priority: 12,
            ..Default::default()
        };
        std::hint::black_box(self.reg.shrink(&req).expect("valid request"));
    }
    fn bytes_per_group(&self) -> f64 {
        let total: usize = self
            .groups
            .iter()
            .map(|&g| self.reg.group_bytes(g).expect("live group"))
            .sum();
        total as f64 / self.groups.len() as f64
    }
}

/// One group's pre-6.7 `shrinker_info`: a bitmap and a deferred count per registered id.
struct BaseInfo {
    map: Vec<AtomicU64>,
    nr_deferred: Vec<AtomicUsize>,
}

struct BaseRegistry {
    /// `shrinker_idr`: id → shrinker.
    shrinkers: Vec<Arc<BaseNode>>,
    infos: Vec<BaseInfo>,
}

/// `rwlock-trylock`: the pre-6.7 design.
struct RwlockTrylock {
    lock: RwLock<BaseRegistry>,
    /// Writers waiting for or holding the lock (`rwsem_is_contended`); none in this scenario,
    /// but the walk checks it after every shrinker as the kernel did.
    writers: AtomicUsize,
}

impl Design for RwlockTrylock {
    fn new(shrinkers: usize, used: usize) -> Self {
        let units = shrinkers.div_ceil(64);
        let infos = (0..GROUPS)
            .map(|g| {
                let info = BaseInfo {
                    map: (0..units).map(|_| AtomicU64::new(0)).collect(),
                    nr_deferred: (0..units * 64).map(|_| AtomicUsize::new(0)).collect(),
                };
                let id = used_by(g, shrinkers, used);
                info.map[id / 64].fetch_or(1 << (id % 64), Ordering::Relaxed);
                info
            })
            .collect();
        RwlockTrylock {
            lock: RwLock::new(BaseRegistry {
                shrinkers: (0..shrinkers).map(|_| BaseNode::new()).collect(),
                infos,
            }),
            writers: AtomicUsize::new(0),
        }
    }
    #[inline]
    fn shrink_group(&self, g: usize) {
        // `down_read_trylock(&shrinker_rwsem)`.
        let Ok(r) = self.lock.try_read() else {
            return;
        };
        let info = &r.infos[g];
        let priority = opaque_priority(12);
        let mut freed = 0;
        'units: for (u, word) in info.map.iter().enumerate() {
            // Relaxed: the bits are set before the measurement starts.
            let mut bits = word.load(Ordering::Relaxed);
            while bits != 0 {
                let id = u * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                freed += r.shrinkers[id].do_shrink_with(priority, &info.nr_deferred[id]);
                // Relaxed: a contention hint (`rwsem_is_contended`).
                if self.writers.load(Ordering::Relaxed) != 0 {
                    break 'units;
                }
            }
        }
        std::hint::black_box(freed);
    }
    fn bytes_per_group(&self) -> f64 {
        let r = self.lock.read().unwrap_or_else(|e| e.into_inner());
        let info = &r.infos[0];
        (std::mem::size_of::<BaseInfo>()
            + info.map.len() * std::mem::size_of::<AtomicU64>()
            + info.nr_deferred.len() * std::mem::size_of::<AtomicUsize>()) as f64
    }
}

struct Sample {
    ns_per_group: f64,
    bytes_per_group: f64,
}

fn measure<D: Design>(config: (usize, usize), threads: usize, duration: Duration) -> Sample {
    let d = D::new(config.0, config.1);
    let start = AtomicUsize::new(0);
    let runs = harness::time_ops(threads, duration, &d, |d| {
        d.shrink_group(next_group(GROUPS, &start));
    });
    let ns = harness::ns_per_op(&runs);
    Sample {
        ns_per_group: ns,
        bytes_per_group: d.bytes_per_group(),
    }
}

struct Variant {
    name: &'static str,
    measure: fn((usize, usize), usize, Duration) -> Sample,
}

const VARIANTS: &[Variant] = &[
    Variant {
        name: "lockless",
        measure: measure::<Lockless>,
    },
    Variant {
        name: "rwlock-trylock",
        measure: measure::<RwlockTrylock>,
    },
];

fn run(cfg: &Config, progress: &mut Progress) -> Report {
    let duration = cfg.duration / 2;
    let names: Vec<&str> = VARIANTS.iter().map(|v| v.name).collect();
    // [variant][thread index][rep] of the three configurations.
    let samples = harness::interleave(cfg, progress, &names, &THREADS, |i, threads| {
        let v = &VARIANTS[i];
        (
            (v.measure)(CONFIGS[0], threads, duration),
            (v.measure)(CONFIGS[1], threads, duration),
            (v.measure)(CONFIGS[2], threads, duration),
        )
    });
    type Three = (Sample, Sample, Sample);
    let pick = |f: fn(&Three) -> f64| harness::project(&samples, f);
    let many = pick(|s| s.0.ns_per_group);
    let few = pick(|s| s.1.ns_per_group);
    let few_used = pick(|s| s.2.ns_per_group);
    let bytes = pick(|s| s.0.bytes_per_group);
    let mut records = Vec::new();
    for (metric, data) in [
        ("ns_per_group", &many),
        ("ns_per_group_64", &few),
        ("ns_per_group_64_used", &few_used),
    ] {
        let mut part = Vec::new();
        for (t, &threads) in THREADS.iter().enumerate() {
            for (i, v) in VARIANTS.iter().enumerate() {
                part.push(
                    Record::new(NAME, v.name, threads, metric, &data[i][t])
                        .with_extra("groups", GROUPS),
                );
            }
        }
        harness::add_ratio_to_variant(&mut part, REFERENCE);
        records.extend(part);
    }
    let mut part = Vec::new();
    for (i, v) in VARIANTS.iter().enumerate() {
        part.push(Record::new(
            NAME,
            v.name,
            1,
            "bytes_per_group",
            &bytes[i][0],
        ));
    }
    harness::add_ratio_to_variant(&mut part, REFERENCE);
    records.extend(part);
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let follow = |of: &Vec<Vec<Vec<f64>>>| -> String {
        THREADS
            .iter()
            .enumerate()
            .map(|(t, &n)| {
                format!(
                    "{n} thread(s): {:.2}×",
                    median(&of[0][t]) / median(&few[0][t])
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    Report {
        scenario: NAME,
        title: format!(
            "shrink one memory group of {}, {} or {} group-aware shrinkers registered",
            harness::thousands(GROUPS),
            harness::thousands(CONFIGS[0].0),
            CONFIGS[1].0
        ),
        notes: vec![
            format!(
                "ns_per_group = shrinking threads' total time / groups shrunk; each group has \
                 objects (100) in exactly one shrinker, so a shrink is one count, deferred \
                 swap and delta at priority 12 (no scan). ns_per_group with {} shrinkers \
                 registered, each group using its own; ns_per_group_64 with 64 registered \
                 (group g uses g % 64); ns_per_group_64_used with 4,000 registered of which \
                 64 are used, spread over the ids. Median (min, max) of {} runs of {} ms; \
                 variants interleaved.",
                harness::thousands(CONFIGS[0].0),
                cfg.reps,
                duration.as_millis()
            ),
            "bytes_per_group (with 4,000 registered) = the per-group reclaim state: for \
             `lockless` `ShrinkerRegistry::group_bytes` (group data, unit map, and \
             the one 64-id unit that is populated); for `rwlock-trylock` a bitmap and a \
             deferred count for every registered id, as the pre-6.7 kernel allocated them."
                .to_string(),
            format!(
                "lockless cost with 4,000 registered and used / with 64 registered: {}.",
                follow(&many)
            ),
            format!(
                "lockless cost with 4,000 registered, 64 used / with 64 registered: {} \
                 (what registered but unused shrinkers cost).",
                follow(&few_used)
            ),
            format!("Ratios: median / median of `{REFERENCE}` at the same thread count."),
        ],
        records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_measures() {
        for v in VARIANTS {
            let s = (v.measure)((128, 64), 1, Duration::from_millis(5));
            assert!(
                s.ns_per_group.is_finite() && s.ns_per_group > 0.0,
                "{}",
                v.name
            );
            assert!(s.bytes_per_group > 0.0, "{}", v.name);
        }
    }

    #[test]
    fn lockless_shrinks_only_the_populated_shrinker() {
        let d = Lockless::new(64, 64);
        // Priority 0: 100 objects → delta 200, one scan of 100... freed > 0 only if called.
        let req = ShrinkRequest {
            group: d.groups[5],
            priority: 0,
            ..Default::default()
        };
        assert!(d.reg.shrink(&req).unwrap() > 0);
        let called: Vec<u64> = d
            .reg
            .shrinkers()
            .iter()
            .map(|i| i.stats.scan_calls)
            .collect();
        assert_eq!(called.iter().filter(|&&c| c > 0).count(), 1);
    }
}
