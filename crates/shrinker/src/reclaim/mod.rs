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
//! | `sc.priority` from `DEF_PRIORITY` (12) down to 0 | one registry walk per priority (every node), from 12 down, in `pass.rs` |
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
mod config;
mod lazy_rcu;
mod pass;
mod report;
mod shared;
mod thread;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use shrinker_pressure::{Monitor, MonitorWaker};

pub use allocator::AllocatorReturn;
pub use config::{ReclaimConfig, ReclaimerError};
pub use lazy_rcu::LazyRcuShrinker;
pub use report::{LevelEvent, LevelWatch, ReclaimerStats, SourceFigures};

use shared::Shared;

use crate::{Freed, Registered, ShrinkerBuilder, ShrinkerRegistry};

use pass::Rounds;

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
            watch: LevelWatch::new(),
        });
        let waker = monitor.waker();
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(self.name)
                // The thread reports to the subscriber in force where the
                // reclaimer was started (a test's, or the global one).
                .spawn({
                    let dispatch = tracing::dispatcher::get_default(Clone::clone);
                    move || {
                        tracing::dispatcher::with_default(&dispatch, || {
                            thread::run(&shared, monitor)
                        })
                    }
                })
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

    /// The current level, readable from any thread (see [`LevelWatch`]).
    pub fn level_watch(&self) -> LevelWatch {
        self.shared.watch.clone()
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
