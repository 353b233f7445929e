//! What the reclaimer tells: level events to subscribers, the current
//! level to anyone ([`LevelWatch`]), and its statistics.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use shrinker_pressure::{Level, SourceKind};

use crate::Freed;

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

/// The reclaimer's current pressure level, readable from anywhere without
/// a channel: for caches that adapt to pressure (a capacity kept low until
/// the level has been None for a while). Cheap to clone and to read (two
/// atomic loads).
#[derive(Clone, Debug)]
pub struct LevelWatch(Arc<WatchState>);

#[derive(Debug)]
struct WatchState {
    /// The level as `Level as u8`.
    level: std::sync::atomic::AtomicU8,
    /// When it last changed, in nanoseconds since `epoch`.
    changed: std::sync::atomic::AtomicU64,
    epoch: std::time::Instant,
}

impl LevelWatch {
    /// A watch that says None until [`set`](Self::set) (for tests and for
    /// sources of your own).
    pub fn new() -> Self {
        LevelWatch(Arc::new(WatchState {
            level: std::sync::atomic::AtomicU8::new(0),
            changed: std::sync::atomic::AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }))
    }

    /// The level now.
    pub fn level(&self) -> Level {
        // Relaxed: a snapshot; nothing is published through it.
        match self.0.level.load(Ordering::Relaxed) {
            0 => Level::None,
            1 => Level::Moderate,
            _ => Level::Critical,
        }
    }

    /// When the level last changed (the watch's creation if never).
    pub fn changed_at(&self) -> std::time::Instant {
        // Relaxed: as `level`.
        let ns = self.0.changed.load(Ordering::Relaxed);
        self.0.epoch + Duration::from_nanos(ns)
    }

    /// Set the level (the reclaimer thread does; tests may).
    pub fn set(&self, level: Level) {
        let code = match level {
            Level::None => 0,
            Level::Moderate => 1,
            Level::Critical => 2,
        };
        // Relaxed (both): see `level`. The time is stored first so that a
        // reader seeing the new level sees a time at least as new, give or
        // take the race of two readers, which a cool-down absorbs.
        let ns = u64::try_from(self.0.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if self.0.level.load(Ordering::Relaxed) != code {
            self.0.changed.store(ns, Ordering::Relaxed);
            self.0.level.store(code, Ordering::Relaxed);
        }
    }
}

impl Default for LevelWatch {
    fn default() -> Self {
        Self::new()
    }
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
    /// Proactive [`Reclaimer::reclaim`](super::Reclaimer::reclaim) calls.
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
    pub(super) fn figures(&mut self, source: &'static str) -> &mut SourceFigures {
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
