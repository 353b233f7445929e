//! The scenario registry.
//!
//! A scenario is one experiment of DESIGN.md §7: it measures all of its variants, interleaved,
//! and returns one [`Report`]. Its name, its variants' names and its metrics' names are an
//! interface that other tools read; they are spelled exactly as in that table.
//!
//! To add a scenario: write `src/scenarios/<name>.rs` exporting
//! `pub const SCENARIO: Scenario`, declare the module below, and add it to [`ALL`].

use crate::harness::{Config, Progress, Report};

pub mod call_rcu;
pub mod rcu_read;
pub mod rcu_sync;
pub mod refcount;
pub mod register_churn;
pub mod shrink_global;

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
    shrink_global::SCENARIO,
    register_churn::SCENARIO,
];

/// Looks a scenario up by name.
pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
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
