//! `reclaim`: does a process that registers its cache survive its memory limit?
//!
//! Each run is a child process (`shrinker-bench --reclaim-child`, see `reclaim_child`) in a
//! fresh child memory cgroup (`cgroup`) with a 128 MiB limit and no swap. It fills an
//! `LruCache` weighed in bytes with 64 KiB values at a paced rate, 2.5 times the limit in
//! all (4 times with `--long`), while it keeps using a working set of its last 256 entries,
//! then idles for a second. Variants:
//!
//! | variant | reclaim |
//! |---|---|
//! | `shrinker` | `shrinker::reclaim::Reclaimer`, source auto-detected (the cgroup's usage thresholds), default config |
//! | `poll-1s` | bcachefs-tools' userspace shrinker thread: read usage once a second; if less than 1/16 of the limit is free, scan every shrinker for the missing bytes (`want / 64 KiB` objects); no allocator return |
//! | `none` | none |
//!
//! Two fill rates (64 and 512 MiB/s), runs interleaved (variants round-robin, the first one
//! rotating). Metrics, per (variant, rate):
//!
//! - `oom_kills`: OOM kills the cgroups counted (`oom_kill` of `memory.oom_control`), summed
//!   over the runs (min and max: per run);
//! - `reaction_ms`: from the usage first at or above the Moderate mark (90 % of the limit) to
//!   the first scan call of the cache's shrinker, both seen by a 1 ms sampler in the child
//!   (so ±1 ms); median over the runs. A run killed before any scan never reacted: it counts
//!   the time from the mark to its death, as the parent saw them (within a millisecond), a
//!   lower bound of its reaction, so that a ratio to it (`vs poll-1s`) is conservative: it
//!   overstates the ratio to a variant that never reacts;
//! - `peak_over_limit_bytes`: the cgroup's peak usage minus the limit (v1 never charges past
//!   the limit, so 0 means the limit was reached; negative is the margin kept);
//! - `retained_ratio`: the cache's bytes at the end over the bytes that fit under the stop
//!   mark (85 % of the limit); a killed run retains 0;
//! - `idle_cpu_pct`: CPU of the reclaiming thread over one idle second after the fill (level
//!   None), in percent of one CPU (its `schedstat`); none for `none` and killed runs.
//!
//! Rows carry `fill_mib_s`. Where no child memory cgroup can be made, the scenario says why
//! on one line and reports no rows.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::Scenario;
use crate::cgroup::{self, MemCgroup};
use crate::harness::{self, Config, Progress, Record, Report, Summary};
use crate::reclaim_child::{Params, Variant};

/// The registry entry.
pub const SCENARIO: Scenario = Scenario {
    name: NAME,
    summary: "a child filling an LruCache past its 128 MiB memory cgroup limit at 64 and 512 MiB/s: shrinker reclaimer vs poll-1s (bcachefs-tools) vs none",
    run,
};

const NAME: &str = "reclaim";
const MIB: u64 = 1 << 20;
const LIMIT: u64 = 128 * MIB;
const OBJ: usize = 64 << 10;
const RATES: [u64; 2] = [64, 512];
const VARIANTS: [Variant; 3] = [Variant::Shrinker, Variant::Poll1s, Variant::None];
/// A child that has not ended by then is killed and the run counted as failed.
const TIME_LIMIT: Duration = Duration::from_secs(60);

/// What one child run gave.
#[derive(Clone, Debug, Default)]
struct RunFigures {
    oom_kills: f64,
    reaction_ms: Option<f64>,
    peak_over_limit: f64,
    retained: f64,
    idle_cpu_pct: Option<f64>,
}

/// One run of `variant` at `rate` MiB/s in a fresh cgroup.
fn one_run(
    variant: Variant,
    rate: u64,
    total: u64,
    progress: &mut Progress,
) -> Result<RunFigures, String> {
    let cg = MemCgroup::create("shrinker-bench-reclaim", LIMIT).map_err(|e| e.to_string())?;
    let params = Params {
        variant,
        cgroup: cg.dir().to_owned(),
        usage_file: cg
            .usage_file()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        limit: LIMIT,
        fill_mib_s: rate,
        total,
        obj: OBJ,
        idle_ms: 1000,
        cache: "lrucache".to_owned(),
    };
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--reclaim-child").arg(params.to_arg());
    let out = cgroup::run_in(&cg, &mut cmd, TIME_LIMIT).map_err(|e| e.to_string())?;
    if out.timed_out {
        return Err(format!(
            "{} at {rate} MiB/s: the child did not end within {TIME_LIMIT:?}",
            variant.name()
        ));
    }
    progress.step(format_args!(
        "{} {rate} MiB/s: {:?} after {:.1} s, oom_kills {:?}, limit hits {:?}, peak {:?} ({:?} limit {} B)",
        variant.name(),
        out.status,
        out.wall.as_secs_f64(),
        out.oom_kills,
        out.limit_hits,
        out.peak,
        cg.version(),
        cg.limit(),
    ));
    // (time the parent read it, the event).
    let events: Vec<(Duration, Value)> = out
        .lines
        .iter()
        .filter_map(|(t, l)| Some((*t, serde_json::from_str(l).ok()?)))
        .collect();
    let event = |name: &str| events.iter().find(|(_, e)| e["event"] == name);
    let at = |name: &str| event(name).and_then(|(_, e)| e["t_ms"].as_f64());
    let result = event("result").map(|(_, e)| e);
    if result.is_none() && !out.sigkilled() {
        return Err(format!(
            "{} at {rate} MiB/s: the child ended with {:?} and no result",
            variant.name(),
            out.status
        ));
    }
    let reaction_ms = match (at("moderate"), at("scan")) {
        (Some(m), Some(s)) => Some((s - m).max(0.0)),
        // Killed before any scan: the reaction was longer than the time from the mark to
        // the death (both as the parent saw them), a lower bound (module documentation).
        (Some(_), None) if result.is_none() && variant != Variant::None => {
            event("moderate").map(|(seen, _)| out.wall.saturating_sub(*seen).as_secs_f64() * 1e3)
        }
        _ => None,
    };
    let stop_mark = LIMIT as f64 * 0.85;
    Ok(RunFigures {
        oom_kills: out.oom_kills.unwrap_or(0) as f64,
        reaction_ms,
        peak_over_limit: out.peak.map_or(f64::NAN, |p| p as f64 - cg.limit() as f64),
        retained: result
            .and_then(|r| r["cache_bytes"].as_f64())
            .map_or(0.0, |b| b / stop_mark),
        idle_cpu_pct: result.and_then(|r| r["idle_cpu_pct"].as_f64()),
    })
}

fn run(cfg: &Config, progress: &mut Progress) -> Report {
    let runs = cfg.pick(2, 5);
    let total = cfg.pick(LIMIT * 5 / 2, LIMIT * 4);
    let mut notes = vec![
        format!(
            "A child in a fresh memory cgroup (limit {} MiB, no swap) fills an LruCache with {} MiB of 64 KiB values while using its last 256 entries, then idles 1 s; {runs} runs per figure.",
            LIMIT / MIB,
            total / MIB
        ),
        "oom_kills: sum over the runs; reaction_ms: usage at the Moderate mark (90 %) → first scan of the cache, median (±1 ms; a run killed before any scan: mark → death, a lower bound); peak_over_limit_bytes: peak usage − limit (0 = the limit was hit); retained_ratio: cache bytes at the end / 85 % of the limit (killed: 0); idle_cpu_pct: the reclaiming thread's CPU over 1 s idle.".into(),
    ];
    if let Err(why) = MemCgroup::create("shrinker-bench-probe", LIMIT) {
        let line = format!("reclaim: skipped, no writable memory cgroup: {why}");
        eprintln!("shrinker-bench: {line}");
        notes.push(line);
        return Report {
            scenario: NAME,
            title: "surviving a memory cgroup limit".into(),
            notes,
            records: Vec::new(),
        };
    }
    // [rate][variant] → figures of each run.
    let mut figures: Vec<Vec<Vec<RunFigures>>> =
        vec![vec![Vec::new(); VARIANTS.len()]; RATES.len()];
    for run in 0..runs {
        for (r, &rate) in RATES.iter().enumerate() {
            for k in 0..VARIANTS.len() {
                let v = (run + k) % VARIANTS.len();
                progress.step(format_args!(
                    "run {}/{runs} {} {rate} MiB/s",
                    run + 1,
                    VARIANTS[v].name()
                ));
                match one_run(VARIANTS[v], rate, total, progress) {
                    Ok(f) => figures[r][v].push(f),
                    Err(e) => {
                        eprintln!("shrinker-bench: reclaim: {e}");
                        notes.push(format!("failed run: {e}"));
                    }
                }
            }
        }
    }
    let mut records = Vec::new();
    for (r, &rate) in RATES.iter().enumerate() {
        let mut at_rate = Vec::new();
        for (v, variant) in VARIANTS.iter().enumerate() {
            let fs = &figures[r][v];
            let pick = |f: &dyn Fn(&RunFigures) -> Option<f64>| -> Vec<f64> {
                fs.iter().filter_map(f).collect()
            };
            let oom = pick(&|f| Some(f.oom_kills));
            let mut oom_rec = Record::new(NAME, variant.name(), 1, "oom_kills", &oom);
            oom_rec.summary = Summary {
                median: oom.iter().sum(),
                ..oom_rec.summary
            };
            let metrics: [(&'static str, Vec<f64>); 4] = [
                ("reaction_ms", pick(&|f| f.reaction_ms)),
                ("peak_over_limit_bytes", pick(&|f| Some(f.peak_over_limit))),
                ("retained_ratio", pick(&|f| Some(f.retained))),
                ("idle_cpu_pct", pick(&|f| f.idle_cpu_pct)),
            ];
            at_rate.push(oom_rec);
            for (metric, samples) in metrics {
                at_rate.push(Record::new(NAME, variant.name(), 1, metric, &samples));
            }
        }
        // Ratios within one rate: the harness matches rows on (threads, metric) only.
        harness::add_ratio_to_variant(&mut at_rate, Variant::Poll1s.name());
        records.extend(
            at_rate
                .into_iter()
                .map(|rec| rec.with_extra("fill_mib_s", rate)),
        );
    }
    Report {
        scenario: NAME,
        title: "surviving a memory cgroup limit: shrinker reclaimer vs poll-1s vs none".into(),
        notes,
        records,
    }
}
