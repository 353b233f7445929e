//! The reclaimer's configuration and its errors.

use std::time::Duration;

const MIB: u64 = 1 << 20;

/// What a [`Reclaimer`](super::Reclaimer) aims for and how much it may spend; every field
/// has a documented default ([`Default`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ReclaimConfig {
    /// The first round's target at Moderate when the source knows no
    /// headroom (PSI, systemd): 10 MiB (ChromeOS resourced).
    pub moderate_target: u64,
    /// The same at Critical: 100 MiB (resourced).
    pub critical_target: u64,
    /// The doubling of a target while the level holds stops here: 1 GiB.
    pub max_target: u64,
    /// While the level is Moderate or Critical, look again this often:
    /// 200 ms. (While it is None the reclaimer only waits for the source.)
    pub recheck: Duration,
    /// CPU share of one CPU the reclaimer may use per window at Moderate:
    /// 0.10.
    pub cpu_budget: f64,
    /// The same at Critical: 0.50.
    pub critical_cpu_budget: f64,
    /// The window the budget is measured over: 1 s.
    pub budget_window: Duration,
    /// Call the allocator's return after a round that freed at least this
    /// many bytes (or freed objects of unknown size): 1 MiB.
    pub trim_threshold: u64,
    /// Register the lazy-RCU shrinker ([`LazyRcuShrinker`](super::LazyRcuShrinker)) while the
    /// reclaimer runs: true.
    pub lazy_rcu_shrinker: bool,
}

impl Default for ReclaimConfig {
    fn default() -> Self {
        ReclaimConfig {
            moderate_target: 10 * MIB,
            critical_target: 100 * MIB,
            max_target: 1024 * MIB,
            recheck: Duration::from_millis(200),
            cpu_budget: 0.10,
            critical_cpu_budget: 0.50,
            budget_window: Duration::from_secs(1),
            trim_threshold: MIB,
            lazy_rcu_shrinker: true,
        }
    }
}

impl ReclaimConfig {
    /// Check every field's range.
    ///
    /// # Errors
    ///
    /// [`ReclaimerError::Config`] naming the first field out of range:
    /// targets must be positive with `moderate ≤ critical ≤ max`; `recheck`
    /// and `budget_window` between 1 ms and 1 hour; budgets in `(0, 1]`
    /// with `cpu_budget ≤ critical_cpu_budget`.
    pub fn validate(&self) -> Result<(), ReclaimerError> {
        let bad = |field: &'static str, why: &str| {
            Err(ReclaimerError::Config {
                field,
                reason: why.to_owned(),
            })
        };
        if self.moderate_target == 0 {
            return bad("moderate_target", "must be positive");
        }
        if self.critical_target < self.moderate_target {
            return bad("critical_target", "must be at least moderate_target");
        }
        if self.max_target < self.critical_target {
            return bad("max_target", "must be at least critical_target");
        }
        let span = Duration::from_millis(1)..=Duration::from_secs(3600);
        if !span.contains(&self.recheck) {
            return bad("recheck", "must be between 1 ms and 1 hour");
        }
        if !span.contains(&self.budget_window) {
            return bad("budget_window", "must be between 1 ms and 1 hour");
        }
        let share = |x: f64| x > 0.0 && x <= 1.0;
        if !share(self.cpu_budget) {
            return bad("cpu_budget", "must be in (0, 1] (a share of one CPU)");
        }
        if !share(self.critical_cpu_budget) || self.critical_cpu_budget < self.cpu_budget {
            return bad(
                "critical_cpu_budget",
                "must be in (0, 1] and at least cpu_budget",
            );
        }
        Ok(())
    }
}

/// Why a reclaimer could not be built or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReclaimerError {
    /// A configuration field is out of range.
    #[error("reclaimer configuration: {field} {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No pressure source could be opened (auto-detection failed).
    #[error("reclaimer: no memory-pressure source: {0}")]
    Pressure(#[from] shrinker_pressure::Error),
    /// The lazy-RCU shrinker could not be registered.
    #[error("reclaimer: registering the lazy-RCU shrinker: {0}")]
    Build(#[from] crate::BuildError),
    /// The thread could not be spawned.
    #[error("reclaimer: spawning its thread: {0}")]
    Spawn(#[source] std::io::Error),
}
