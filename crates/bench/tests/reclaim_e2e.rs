//! Real kernel: a process that registers its cache and starts a reclaimer survives its memory
//! limit; the same process without one is OOM-killed.
//!
//! Both runs are `shrinker-bench --reclaim-child` (the `reclaim` scenario's workload, see
//! `src/reclaim_child.rs`) in a fresh child memory cgroup of this process's own (cgroup v1
//! `memory.limit_in_bytes` here; v2 `memory.max` where that is what the machine has) with a
//! 128 MiB limit and no swap. The child fills an `LruCache` weighed in bytes with 64 KiB
//! values at 256 MiB/s, four times the limit in all (2 s), while it keeps using a working set
//! of its last 256 entries, then idles for 300 ms.
//!
//! - WITH the reclaimer (`variant=shrinker`): it must exit 0, the cgroup must count no OOM
//!   kill and a peak below the limit, and the cache must still hold at least half of what
//!   fits under the stop mark (85 % of the limit). Half, not the benchmark's 0.7 target:
//!   this test runs in debug builds on a shared 2-core machine, where a late reclaimer round
//!   can cut deeper; half still fails a reclaimer that empties the cache (priority 0 on
//!   every round gives ~0) or that leaves the cache nothing because the allocator keeps
//!   what was freed, while the 0.7 target is the benchmark's to check, in release.
//! - WITHOUT it (`variant=none`): it must be killed by SIGKILL and the cgroup must count at
//!   least one OOM kill. This control shows the workload really needs reclaim: without it
//!   the first assertion could pass because the workload fits.
//!
//! Every child is killed after 60 s (and the test then fails): the test cannot hang. Where
//! no child memory cgroup can be made, the test prints `SKIPPED:` and why.

#[allow(dead_code)] // The test uses part of the module the binary uses.
#[path = "../src/cgroup.rs"]
mod cgroup;

use std::process::Command;
use std::time::Duration;

use cgroup::MemCgroup;
use serde_json::Value;

const MIB: u64 = 1 << 20;
const LIMIT: u64 = 128 * MIB;
const TIME_LIMIT: Duration = Duration::from_secs(60);

/// Runs the child workload with `variant` in a fresh cgroup; `None` if no cgroup can be made
/// (the reason printed as `SKIPPED:`).
fn run(variant: &str, cache: &str) -> Option<(cgroup::RunOutcome, Option<Value>)> {
    let cg = match MemCgroup::create("shrinker-reclaim-e2e", LIMIT) {
        Ok(cg) => cg,
        Err(why) => {
            eprintln!("SKIPPED: reclaim end-to-end test: {why}");
            return None;
        }
    };
    let usage_file = cg.usage_file();
    let params = format!(
        "variant={variant},cgroup={},usage_file={},limit={LIMIT},fill_mib_s=256,total={},obj=65536,idle_ms=300,cache={cache}",
        cg.dir().display(),
        usage_file.file_name().unwrap().to_string_lossy(),
        4 * LIMIT,
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shrinker-bench"));
    cmd.arg("--reclaim-child").arg(&params);
    let out = cgroup::run_in(&cg, &mut cmd, TIME_LIMIT).expect("running the child");
    eprintln!(
        "{variant} ({cache}): {:?} after {:.2} s in {:?} cgroup; oom_kills {:?}, limit hits {:?}, peak {:?} of {LIMIT}",
        out.status,
        out.wall.as_secs_f64(),
        cg.version(),
        out.oom_kills,
        out.limit_hits,
        out.peak,
    );
    assert!(
        !out.timed_out,
        "{variant}: the child did not end within {TIME_LIMIT:?}"
    );
    let result = out
        .lines
        .iter()
        .filter_map(|(_, l)| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "result");
    eprintln!("{variant}: {result:?}");
    Some((out, result))
}

#[test]
#[cfg_attr(miri, ignore)] // cgroups, processes
fn with_the_reclaimer_the_child_survives_its_limit_and_without_it_is_oom_killed() {
    // With the reclaimer.
    let Some((out, result)) = run("shrinker", "lrucache") else {
        return;
    };
    assert!(
        out.status.success(),
        "with the reclaimer the child must exit 0: {:?}, oom_kills {:?}",
        out.status,
        out.oom_kills
    );
    assert_eq!(out.oom_kills, Some(0), "no OOM kill with the reclaimer");
    let peak = out.peak.expect("the cgroup reports its peak");
    assert!(
        peak < LIMIT,
        "never up to the limit: peak {peak} of {LIMIT}"
    );
    let result = result.expect("a result line");
    let cache_bytes = result["cache_bytes"].as_f64().expect("cache_bytes");
    let retained = cache_bytes / (LIMIT as f64 * 0.85);
    assert!(
        retained >= 0.5,
        "the cache keeps a large share of what fits: retained ratio {retained:.2} ({cache_bytes} B)"
    );
    assert!(
        result["first_scan_ms"].as_f64().is_some(),
        "the reclaimer did scan the cache: {result}"
    );

    // The control: the same workload without it.
    let Some((out, _)) = run("none", "lrucache") else {
        return;
    };
    assert!(
        out.sigkilled(),
        "without a reclaimer the child must be killed by SIGKILL: {:?}",
        out.status
    );
    assert!(
        out.oom_kills.is_some_and(|n| n >= 1),
        "the kill was the OOM killer's: oom_kills {:?}",
        out.oom_kills
    );
}

/// The same proof with the caches people already use, made shrinkable by
/// `shrinker-adapters` (issue "Adapters"): an `lru::LruCache` and a `quick_cache` cache filled
/// the same way survive with the reclaimer, keep part of what fits, and are OOM-killed
/// without it.
#[test]
#[cfg_attr(miri, ignore)] // cgroups, processes
fn adapted_lru_and_quick_cache_survive_with_the_reclaimer_and_not_without() {
    for cache in ["lru", "quick_cache"] {
        let Some((out, result)) = run("shrinker", cache) else {
            return;
        };
        assert!(
            out.status.success(),
            "{cache} with the reclaimer must exit 0: {:?}, oom_kills {:?}",
            out.status,
            out.oom_kills
        );
        assert_eq!(
            out.oom_kills,
            Some(0),
            "{cache}: no OOM kill with the reclaimer"
        );
        let result = result.expect("a result line");
        let cache_bytes = result["cache_bytes"].as_f64().expect("cache_bytes");
        assert!(
            cache_bytes >= LIMIT as f64 * 0.85 * 0.25,
            "{cache}: the cache keeps part of what fits, not emptied: {cache_bytes} B"
        );
        let Some((out, _)) = run("none", cache) else {
            return;
        };
        assert!(
            out.sigkilled() && out.oom_kills.is_some_and(|n| n >= 1),
            "{cache} without a reclaimer must be OOM-killed: {:?}, oom_kills {:?}",
            out.status,
            out.oom_kills
        );
    }
}
