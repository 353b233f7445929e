//! The reclaimer: the kswapd of a process.
//!
//! A registry full of shrinkers frees nothing until someone calls
//! [`ShrinkerRegistry::shrink`]. In the kernel that someone is kswapd, woken
//! when free memory falls below a zone's *low* watermark, shrinking from
//! priority 12 (`DEF_PRIORITY`) down until memory is back above the *high*
//! watermark, and then going back to sleep. A [`Reclaimer`] is that thread
//! for a process: it is woken by a [`shrinker_pressure::Monitor`] (the
//! process's memory cgroup, PSI, systemd's protocol, …), turns the reading
//! into a number of bytes to free, and runs registry walks until they are
//! freed or the pressure is gone.
//!
//! # Make your service survive its memory limit
//!
//! ```no_run
//! use shrinker::reclaim::Reclaimer;
//! use shrinker::{GroupId, LruCache, ShrinkerRegistry};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = LruCache::<u64, Vec<u8>>::builder("pages")
//!     .weigher(|_, v| v.len()) // bytes: the reclaimer counts what it frees in bytes
//!     .build()?;               // registered with the process-wide registry
//! let _reclaimer = Reclaimer::builder(ShrinkerRegistry::global()).start()?;
//! // ... fill the cache as you like; under pressure the reclaimer evicts its
//! // least recently used entries, in proportion, before the OOM killer comes.
//! cache.insert(GroupId::ROOT, 1, vec![0; 4096])?;
//! # Ok(()) }
//! ```
//!
//! # Watermarks, targets and passes (kernel names beside ours)
//!
//! | kernel (kswapd, `balance_pgdat`) | here |
//! |---|---|
//! | `WMARK_LOW` wakes kswapd | the source's Moderate mark (90 % of the limit by default, `shrinker_pressure::Thresholds`) or a PSI trigger |
//! | `WMARK_MIN` (direct reclaim, then OOM) | the Critical mark (97 %): the reclaimer may use more CPU |
//! | `WMARK_HIGH`: kswapd stops | the recovery mark (85 %): [`Reading::headroom`](shrinker_pressure::Reading::headroom) is the bytes to free to get back under it |
//! | `sc.nr_to_reclaim` | the round's byte target: the headroom where the source knows one; otherwise ChromeOS resourced's policy, [`ReclaimConfig::moderate_target`] (10 MiB) at Moderate and [`ReclaimConfig::critical_target`] (100 MiB) at Critical, doubling while the level holds, up to [`ReclaimConfig::max_target`] |
//! | `sc.priority` from `DEF_PRIORITY` (12) down to 0 | one registry walk per priority (every node), from 12 down, in [`pass`] |
//! | `pgdat_balanced()` between priorities | the source is read again after every walk; the round stops as soon as the target is met, the level fell, or the source says no headroom is left |
//! | `reclaim_state->reclaimed` (slab pages freed) | the bytes shrinkers report ([`ShrinkControl::report_freed_bytes`](crate::ShrinkControl::report_freed_bytes)), or their objects times a declared size ([`ShrinkerBuilder::object_bytes`](crate::ShrinkerBuilder::object_bytes)) |
//! | pages freed are free | not so here: freed objects go back to the allocator, which keeps them; after a round that freed more than [`ReclaimConfig::trim_threshold`] the reclaimer calls the allocator's return (`malloc_trim(0)` on glibc, or a hook) |
//!
//! # Closed loop and escalation
//!
//! After the allocator's return the source is read again and the usage
//! compared with the usage before the round. If shrinkers reported freeing
//! at least [`ReclaimConfig::trim_threshold`] bytes and the usage fell by
//! less than a quarter of that, the bytes did not reach the system: the
//! round is counted in [`ReclaimerStats::unreturned_rounds`], reported once
//! per episode through `tracing`, and the next round's target doubles as if
//! the level had held (escalation), so that what the allocator keeps is
//! made up by freeing more.
//!
//! # What a round never does
//!
//! It never empties caches that pressure did not ask for: a round stops
//! when its target is met or the level fell (stop means stop), and the
//! reclaimer sleeps in the monitor's `epoll_wait` while the level is None
//! (no timer, no polling of its own: an idle reclaimer costs nothing
//! measurable). While the level holds it runs a round on every event of
//! the source, whether or not the level changed (a cgroup's usage crossing
//! the Moderate mark again after a round, while the process kept
//! allocating), and otherwise looks again every [`ReclaimConfig::recheck`].
//!
//! # CPU budget
//!
//! The reclaimer measures its own thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`) over windows of [`ReclaimConfig::budget_window`]
//! and stops a round early (skipping the next ones until the window ends)
//! once it used more than [`ReclaimConfig::cpu_budget`] of one CPU in the
//! window (default 10 %), or [`ReclaimConfig::critical_cpu_budget`] at
//! Critical (default 50 %, Go's GC cap: a limit set too low degrades into
//! slowness, not a death spiral). Proactive [`Reclaimer::reclaim`] runs on
//! the caller's thread and is not budgeted.
//!
//! # Faults
//!
//! A shrinker callback that panics is contained by the registry (counted in
//! its stats) and the round goes on. A callback that blocks delays the
//! round, as a blocked shrinker delays kswapd; dropping the [`Reclaimer`]
//! stops it after the callback in progress returns (the walk checks the stop
//! flag before every shrinker). A source that dies is replaced by the
//! monitor's fallback ladder (counted in [`ReclaimerStats::source_failovers`]
//! and reported); if none is left the reclaimer reports it and stops
//! reclaiming, but [`Reclaimer::reclaim`] still works.

mod allocator;
mod budget;
mod lazy_rcu;
mod pass;
mod thread;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use shrinker_pressure::{Level, Monitor, MonitorWaker, SourceKind};

pub use allocator::AllocatorReturn;
pub use lazy_rcu::LazyRcuShrinker;

use crate::{Freed, Registered, ShrinkerBuilder, ShrinkerRegistry};

use pass::Rounds;

const MIB: u64 = 1 << 20;

/// What a [`Reclaimer`] aims for and how much it may spend; every field
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
    /// Register the lazy-RCU shrinker ([`LazyRcuShrinker`]) while the
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

/// A level change (or a round's result at a level) told to subscribers:
/// Android's `onTrimMemory`, Chromium's memory-pressure listener.
#[derive(Clone, Debug, PartialEq)]
pub struct LevelEvent {
    /// The level now.
    pub level: Level,
    /// The level before (the same as `level` for a round's result).
    pub previous: Level,
    /// The round's byte target (`None` for a fall to [`Level::None`]).
    pub target_bytes: Option<u64>,
    /// What the round freed; for a fall to None, what the whole episode of
    /// pressure freed.
    pub freed: Freed,
    /// Critical, and a round went down to priority 0 and found nothing
    /// left to shrink: shedding load is what is left.
    pub exhausted: bool,
    /// The source that said it.
    pub source: SourceKind,
}

/// Bytes asked for and freed, per source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceFigures {
    /// Rounds run on this source's readings.
    pub rounds: u64,
    /// Sum of the rounds' targets.
    pub bytes_asked: u64,
    /// Sum of the bytes the rounds freed (as shrinkers reported them).
    pub bytes_freed: u64,
}

/// What the reclaimer has done since it started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReclaimerStats {
    /// Registry walks run (one per priority per round, all nodes).
    pub passes: u64,
    /// Rounds (a descent from priority 12 toward 0 for one target).
    pub rounds: u64,
    /// Proactive [`Reclaimer::reclaim`] calls.
    pub proactive_calls: u64,
    /// Per source kind (and `"proactive"`), in the order first seen.
    pub by_source: Vec<(&'static str, SourceFigures)>,
    /// Objects freed in all.
    pub objects_freed: u64,
    /// Bytes freed in all (as reported; objects of unknown size count 0).
    pub bytes_freed: u64,
    /// Reaction of the last round: from the reading that asked for it to
    /// its first walk.
    pub last_reaction: Option<Duration>,
    /// The slowest reaction seen.
    pub max_reaction: Option<Duration>,
    /// The reclaimer thread's CPU time.
    pub cpu_used: Duration,
    /// Rounds cut short by the CPU budget.
    pub budget_stops: u64,
    /// Calls of the allocator's return.
    pub trims: u64,
    /// Rounds whose reported frees did not show in the usage (see the
    /// module docs, "Closed loop and escalation").
    pub unreturned_rounds: u64,
    /// Rounds at Critical that found nothing left to shrink.
    pub exhausted_rounds: u64,
    /// Times the monitor replaced a dead source.
    pub source_failovers: u64,
    /// The last level seen.
    pub last_level: Level,
    /// The live source's `describe()` text.
    pub source: String,
}

impl ReclaimerStats {
    fn figures(&mut self, source: &'static str) -> &mut SourceFigures {
        let i = match self.by_source.iter().position(|(s, _)| *s == source) {
            Some(i) => i,
            None => {
                self.by_source.push((source, SourceFigures::default()));
                self.by_source.len() - 1
            }
        };
        &mut self.by_source[i].1
    }
}

/// Builds a [`Reclaimer`]: [`Reclaimer::builder`].
pub struct ReclaimerBuilder {
    registry: ShrinkerRegistry,
    monitor: Option<Monitor>,
    config: ReclaimConfig,
    allocator: AllocatorReturn,
    name: String,
}

impl fmt::Debug for ReclaimerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReclaimerBuilder")
            .field("config", &self.config)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ReclaimerBuilder {
    /// Use this monitor instead of [`Monitor::auto`].
    #[must_use]
    pub fn monitor(mut self, monitor: Monitor) -> Self {
        self.monitor = Some(monitor);
        self
    }

    /// Targets, budgets and intervals (see [`ReclaimConfig`]).
    #[must_use]
    pub fn config(mut self, config: ReclaimConfig) -> Self {
        self.config = config;
        self
    }

    /// How freed memory goes back to the system (default:
    /// [`AllocatorReturn::Auto`]).
    #[must_use]
    pub fn allocator_return(mut self, a: AllocatorReturn) -> Self {
        self.allocator = a;
        self
    }

    /// The thread's name (default `"shrinker-reclaim"`).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Start the reclaimer thread.
    ///
    /// # Errors
    ///
    /// [`ReclaimerError::Config`] for a configuration out of range;
    /// [`ReclaimerError::Pressure`] if no monitor was given and none could
    /// be built; [`ReclaimerError::Build`] if the lazy-RCU shrinker could
    /// not be registered; [`ReclaimerError::Spawn`].
    ///
    /// # Blocking
    ///
    /// Opens the pressure source (a few file reads and writes) unless a
    /// monitor was given; registers the lazy-RCU shrinker.
    pub fn start(self) -> Result<Reclaimer, ReclaimerError> {
        self.config.validate()?;
        let monitor = match self.monitor {
            Some(m) => m,
            None => Monitor::auto()?,
        };
        let lazy = if self.config.lazy_rcu_shrinker {
            Some(
                ShrinkerBuilder::new("rcu-lazy")
                    .build_in(&self.registry, LazyRcuShrinker::new())?
                    .register(),
            )
        } else {
            None
        };
        let shared = Arc::new(Shared {
            registry: self.registry,
            config: self.config,
            allocator: self.allocator,
            stop: AtomicBool::new(false),
            stats: Mutex::new(ReclaimerStats {
                last_level: monitor.current().level,
                source: monitor.describe(),
                ..ReclaimerStats::default()
            }),
            subscribers: Mutex::new(Vec::new()),
        });
        let waker = monitor.waker();
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(self.name)
                .spawn(move || thread::run(&shared, monitor))
                .map_err(ReclaimerError::Spawn)?
        };
        Ok(Reclaimer {
            shared,
            waker,
            thread: Some(thread),
            _lazy: lazy,
        })
    }
}

/// The kswapd of a process: a background thread that frees memory through
/// a [`ShrinkerRegistry`] when a pressure [`Monitor`] says memory is short.
/// See the [module documentation](self) for the policy.
///
/// Dropping it stops the thread (after the shrinker callback in progress,
/// if any, returns) and joins it.
pub struct Reclaimer {
    shared: Arc<Shared>,
    waker: MonitorWaker,
    thread: Option<JoinHandle<()>>,
    _lazy: Option<Registered<LazyRcuShrinker>>,
}

impl fmt::Debug for Reclaimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reclaimer")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Shared {
    registry: ShrinkerRegistry,
    config: ReclaimConfig,
    allocator: AllocatorReturn,
    stop: AtomicBool,
    stats: Mutex<ReclaimerStats>,
    subscribers: Mutex<Vec<Sender<LevelEvent>>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        // Relaxed: a request to stop soon; the join orders everything else.
        self.stop.load(Ordering::Relaxed)
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, ReclaimerStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tell(&self, event: &LevelEvent) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|s| s.send(event.clone()).is_ok());
    }
}

impl Reclaimer {
    /// A builder for a reclaimer over `registry` (usually
    /// [`ShrinkerRegistry::global`]).
    pub fn builder(registry: &ShrinkerRegistry) -> ReclaimerBuilder {
        ReclaimerBuilder {
            registry: registry.clone(),
            monitor: None,
            config: ReclaimConfig::default(),
            allocator: AllocatorReturn::Auto,
            name: "shrinker-reclaim".to_owned(),
        }
    }

    /// Level changes and round results from now on (see [`LevelEvent`]).
    /// A dropped receiver is forgotten at the next event.
    pub fn subscribe(&self) -> Receiver<LevelEvent> {
        let (tx, rx) = mpsc::channel();
        self.shared
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }

    /// Proactive reclaim (the analog of cgroup v2's `memory.reclaim`): run
    /// the same passes, from priority 12 down, on the calling thread, until
    /// `bytes` are freed or priority 0 has run. Returns what was freed;
    /// then calls the allocator's return if it freed at least the trim
    /// threshold.
    ///
    /// # Blocking
    ///
    /// Runs shrinker callbacks, which may block.
    ///
    /// # Panics
    ///
    /// Inside an RCU read-side section, as [`ShrinkerRegistry::shrink`].
    pub fn reclaim(&self, bytes: u64) -> Freed {
        let s = &self.shared;
        let out = Rounds::new(&s.registry, &s.stop).descend(bytes, |_| true);
        if out.freed.bytes >= s.config.trim_threshold || out.freed.unsized_objects > 0 {
            s.allocator.release();
            s.stats().trims += 1;
        }
        let mut st = s.stats();
        st.proactive_calls += 1;
        st.passes += out.passes;
        st.objects_freed += out.freed.objects;
        st.bytes_freed += out.freed.bytes;
        let f = st.figures("proactive");
        f.rounds += 1;
        f.bytes_asked = f.bytes_asked.saturating_add(bytes);
        f.bytes_freed = f.bytes_freed.saturating_add(out.freed.bytes);
        out.freed
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> ReclaimerStats {
        self.shared.stats().clone()
    }
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        // Relaxed: the thread reads it after the wake-up below or between
        // shrinkers; `join` orders the rest.
        self.shared.stop.store(true, Ordering::Relaxed);
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(target: "shrinker::reclaim", "the reclaimer thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests;
