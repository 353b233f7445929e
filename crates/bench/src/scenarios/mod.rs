//! The scenario registry.
//!
//! A scenario is one experiment of DESIGN.md §7: it measures all of its variants, interleaved,
//! and returns one [`Report`]. Its name, its variants' names and its metrics' names are an
//! interface that other tools read; they are spelled exactly as in that table.
//!
//! To add a scenario: write `src/scenarios/<name>.rs` exporting
//! `pub const SCENARIO: Scenario`, declare the module below, and add it to [`ALL`].

use std::time::Duration;

use crate::harness::{self, Config, Progress, Record, Report};

pub mod call_rcu;
pub mod rcu_read;
pub mod rcu_sync;
pub mod reclaim;
pub mod refcount;
pub mod reflock;
pub mod register_churn;
pub mod shrink_global;
pub mod shrink_group;

/// One experiment.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// The name on the command line and in the `scenario` JSON key.
    pub name: &'static str,
    /// One line for `--list` and the usage text.
    pub summary: &'static str,
    /// Runs every variant, interleaved, and reports.
    pub run: fn(&Config, &mut Progress) -> Report,
}

/// Every scenario, in the order of a full run (DESIGN.md §7 order).
pub const ALL: &[Scenario] = &[
    rcu_read::SCENARIO,
    rcu_sync::SCENARIO,
    call_rcu::SCENARIO,
    refcount::SCENARIO,
    reflock::SCENARIO,
    shrink_global::SCENARIO,
    register_churn::SCENARIO,
    shrink_group::SCENARIO,
    reclaim::SCENARIO,
];

/// Looks a scenario up by name.
pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

/// A variant of a per-operation scenario: its name, and a function measuring its metric at a
/// thread count for a wall time.
pub struct OpVariant {
    /// The variant's name in tables and JSON.
    pub name: &'static str,
    /// Measures the metric with `threads` threads for about `duration`.
    pub measure: fn(usize, Duration) -> f64,
}

/// The common body of a per-operation scenario (`rcu-read`, `refcount`): warm every variant up
/// (unrecorded: first-use set-up and CPU ramp-up), measure all of them interleaved at every
/// thread count, and return one record per (thread count, variant) with the ratio to
/// `reference` and to the same variant at 1 thread.
pub fn measure_op_variants(
    cfg: &Config,
    progress: &mut Progress,
    scenario: &'static str,
    metric: &'static str,
    variants: &[OpVariant],
    threads: &[usize],
    reference: &str,
) -> Vec<Record> {
    for v in variants {
        progress.step(format_args!("warm-up {}", v.name));
        (v.measure)(1, cfg.duration / 4);
    }
    let names: Vec<&str> = variants.iter().map(|v| v.name).collect();
    let samples = harness::interleave(cfg, progress, &names, threads, |i, n| {
        (variants[i].measure)(n, cfg.duration)
    });
    let mut records = Vec::new();
    for (t, &n) in threads.iter().enumerate() {
        for (i, v) in variants.iter().enumerate() {
            records.push(Record::new(scenario, v.name, n, metric, &samples[i][t]));
        }
    }
    harness::add_ratio_to_variant(&mut records, reference);
    harness::add_ratio_to_one_thread(&mut records);
    records
}

/// The object every RCU-like variant protects. Readers load the pointer and read `value`, so a
/// measured read is a real lock + dereference + unlock, not just a lock + unlock.
#[derive(Debug)]
pub struct Payload {
    /// The field readers read.
    pub value: u64,
}

impl Payload {
    /// A payload holding an arbitrary non-zero value.
    pub fn new() -> Self {
        Payload { value: 0x5eed }
    }
}

impl Default for Payload {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for (i, s) in ALL.iter().enumerate() {
            assert!(ALL[..i].iter().all(|t| t.name != s.name), "{}", s.name);
            assert_eq!(find(s.name).map(|f| f.name), Some(s.name));
        }
        assert!(find("no-such-scenario").is_none());
    }
}
