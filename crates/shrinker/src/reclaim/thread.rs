//! The reclaimer thread: wait for the monitor, and while the level is
//! Moderate or Critical run rounds (the module docs of `reclaim` have the
//! policy; this file the loop).
//!
//! One round, for one reading:
//!
//! 1. Check the CPU budget of the level; over it, skip the round.
//! 2. The byte target: the reading's headroom, or the level's base target
//!    doubled for every round the level has held (capped).
//! 3. Walks from priority 12 down (`pass.rs`). After each walk: if it freed
//!    at least the trim threshold (or objects of unknown size), return
//!    memory to the system; read the source again; stop when the target is
//!    met, the level fell, the source says the headroom is gone, or the
//!    budget is spent.
//! 4. The closed loop: if the walks reported at least the trim threshold
//!    and the usage fell by less than a quarter of it, count the round as
//!    unreturned, say so once per episode, and double the next target.
//! 5. Statistics; the first round at a new level (and an exhausted round at
//!    Critical) is told to subscribers.

use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use shrinker_pressure::{Level, Monitor, Reading};

use super::budget::CpuBudget;
use super::pass::Rounds;
use super::report::LevelEvent;
use super::shared::Shared;
use crate::Freed;

/// The thread's state between readings.
struct Episode {
    /// The level last acted on.
    level: Level,
    /// Rounds the level has held (the unknown-headroom target doubles).
    streak: u32,
    /// What this episode of pressure freed (told when it ends).
    freed: Freed,
    /// The unreturned-memory warning was given in this episode.
    told_unreturned: bool,
    /// The next round is the first at its level (told to subscribers).
    first_round: bool,
    /// No source left: report once, then only wait to be dropped.
    dead: bool,
}

pub(super) fn run(shared: &Shared, mut monitor: Monitor) {
    let cfg = &shared.config;
    let mut budget = CpuBudget::new(cfg.budget_window);
    let mut failovers = monitor.failovers();
    let mut ep = Episode {
        level: Level::None,
        streak: 0,
        freed: Freed::default(),
        told_unreturned: false,
        first_round: true,
        dead: false,
    };
    // Already short at start: act at once, as if the level had just risen.
    let mut pending =
        (monitor.current().level >= Level::Moderate).then(|| monitor.current().clone());
    while !shared.stopping() {
        let reading = match pending.take() {
            Some(r) => Some(r),
            None => next_reading(shared, &mut monitor, &mut ep),
        };
        if monitor.failovers() != failovers {
            failovers = monitor.failovers();
            let describe = monitor.describe();
            tracing::warn!(
                target: "shrinker::reclaim",
                failovers,
                "the memory-pressure source died; now on: {describe}"
            );
            let mut st = shared.stats();
            st.source_failovers = failovers;
            st.source = describe;
        }
        let Some(reading) = reading else { continue };
        if reading.level != ep.level {
            level_changed(shared, &mut ep, &reading);
        }
        if ep.level >= Level::Moderate {
            round(shared, &mut monitor, &mut budget, &mut ep, &reading);
        }
    }
    shared.stats().cpu_used = budget.total();
}

/// Wait for the monitor: for a change of level, without a timeout, while the
/// level is None; while it holds, for *any* event of the source, or
/// `recheck` (then read the source anew).
///
/// While the level holds, an event that leaves the level as it was still
/// starts a round: [`Monitor::wait`] reports only changes of level, and with
/// it a source's same-level event was lost. On cgroup v1 that event is the
/// usage crossing the Moderate mark again: a round met its target (the
/// headroom of its reading) while the process kept allocating, so the usage
/// stayed over the stop mark (the level held, hysteresis) and climbed back
/// over the Moderate mark; the next round then waited for the recheck or
/// the Critical mark, too late for a fast allocator (kswapd, likewise, is
/// woken on every allocation under the low watermark, not once per
/// episode).
fn next_reading(shared: &Shared, monitor: &mut Monitor, ep: &mut Episode) -> Option<Reading> {
    let holding = ep.level >= Level::Moderate && !ep.dead;
    let r = if holding {
        match source_event(monitor, shared.config.recheck) {
            _ if shared.stopping() => return None,
            // An event: process it and act on the reading, changed or not.
            Ok(true) => monitor
                .poll_ready()
                .map(|changed| changed.unwrap_or_else(|| monitor.current().clone())),
            // The recheck (or an interrupted wait): read the source anew.
            Ok(false) => monitor.read(),
            Err(e) => Err(e),
        }
    } else {
        match monitor.wait(None) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => return None,
            Err(e) => Err(e),
        }
    };
    match r {
        Ok(r) => Some(r),
        Err(e) => {
            report_error(shared, &e, ep);
            if ep.dead {
                // Nothing left to watch: wait to be dropped, in short steps
                // so that the drop is seen.
                std::thread::sleep(Duration::from_millis(50));
            }
            None
        }
    }
}

/// Wait until the monitor has something to process (its fd is readable:
/// a source event, a timer, or the waker of a drop) or `timeout` passes.
fn source_event(monitor: &Monitor, timeout: Duration) -> Result<bool, shrinker_pressure::Error> {
    let ts = rustix::time::Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let mut fds = [PollFd::new(monitor, PollFlags::IN)];
    match rustix::event::poll(&mut fds, Some(&ts)) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(shrinker_pressure::Error::Sys {
            op: "poll on the monitor's fd",
            source: e.into(),
        }),
    }
}

/// A level change: trace it; a fall to None ends the episode and is told
/// with what it freed (a rise is told with its first round's result).
fn level_changed(shared: &Shared, ep: &mut Episode, reading: &Reading) {
    let previous = ep.level;
    let _span = tracing::info_span!(
        target: "shrinker::reclaim",
        "pressure_level",
        from = previous.as_str(),
        to = reading.level.as_str(),
        source = reading.source.as_str(),
    )
    .entered();
    tracing::info!(
        target: "shrinker::reclaim",
        from = previous.as_str(),
        to = reading.level.as_str(),
        usage = reading.usage,
        limit = reading.limit,
        headroom = reading.headroom,
        source = reading.source.as_str(),
        "memory pressure level changed"
    );
    if reading.level > previous {
        ep.streak = 0;
    }
    ep.level = reading.level;
    shared.watch.set(reading.level);
    ep.first_round = true;
    ep.told_unreturned = false;
    shared.stats().last_level = reading.level;
    if reading.level == Level::None {
        ep.streak = 0;
        let freed = std::mem::take(&mut ep.freed);
        shared.tell(&LevelEvent {
            level: Level::None,
            previous,
            target_bytes: None,
            freed,
            exhausted: false,
            source: reading.source,
        });
    }
}

/// One round for `reading` (the numbered steps in the module docs).
fn round(
    shared: &Shared,
    monitor: &mut Monitor,
    budget: &mut CpuBudget,
    ep: &mut Episode,
    reading: &Reading,
) {
    let cfg = &shared.config;
    let critical = ep.level == Level::Critical;
    let share = if critical {
        cfg.critical_cpu_budget
    } else {
        cfg.cpu_budget
    };
    // 1.
    if budget.exceeded(share) {
        shared.stats().budget_stops += 1;
        return;
    }
    // 2.
    let target = match reading.headroom {
        Some(h) => h,
        None => {
            let base = if critical {
                cfg.critical_target
            } else {
                cfg.moderate_target
            };
            base.saturating_mul(1u64 << ep.streak.min(30))
                .min(cfg.max_target)
        }
    };
    ep.streak = ep.streak.saturating_add(1);
    if target == 0 {
        return; // under the recovery mark already: the level falls soon
    }
    let reaction = Instant::now().saturating_duration_since(reading.at);
    let span = tracing::info_span!(
        target: "shrinker::reclaim",
        "reclaim_round",
        level = ep.level.as_str(),
        target,
        source = reading.source.as_str(),
        passes = tracing::field::Empty,
        objects = tracing::field::Empty,
        bytes = tracing::field::Empty,
    )
    .entered();
    // 3.
    let mut trims = 0u64;
    let mut cut_by_budget = false;
    let mut usage_now = reading.usage;
    let out = Rounds::new(&shared.registry, &shared.stop).descend(target, |pass| {
        if pass.bytes >= cfg.trim_threshold || pass.unsized_objects > 0 {
            shared.allocator.release();
            trims += 1;
        }
        if budget.exceeded(share) {
            cut_by_budget = true;
            return false;
        }
        match monitor.read() {
            Ok(now) => {
                usage_now = now.usage.or(usage_now);
                let gone = match (now.headroom, reading.headroom) {
                    (Some(h), Some(first)) => h == 0 || first.saturating_sub(h) >= target,
                    _ => false,
                };
                now.level >= reading.level && !gone
            }
            Err(_) => false,
        }
    });
    // 4. (The last pass's return already ran inside the loop unless the
    // round ended on its target or at priority 0.)
    if out.last_pass_untrimmed(cfg.trim_threshold) {
        shared.allocator.release();
        trims += 1;
        if let Ok(now) = monitor.read() {
            usage_now = now.usage.or(usage_now);
        }
    }
    let mut unreturned = false;
    if out.freed.bytes >= cfg.trim_threshold {
        if let (Some(before), Some(after)) = (reading.usage, usage_now) {
            let fell = before.saturating_sub(after);
            if fell < out.freed.bytes / 4 {
                unreturned = true;
                ep.streak = ep.streak.saturating_add(1);
                if !ep.told_unreturned {
                    ep.told_unreturned = true;
                    tracing::warn!(
                        target: "shrinker::reclaim",
                        reported = out.freed.bytes,
                        fell,
                        "shrinkers reported frees that the usage does not show (the \
                         allocator keeps them, or the objects are still referenced); \
                         asking for more"
                    );
                }
            }
        }
    }
    // 5.
    span.record("passes", out.passes);
    span.record("objects", out.freed.objects);
    span.record("bytes", out.freed.bytes);
    let exhausted = critical && out.reached_zero && out.freed.objects == 0 && !cut_by_budget;
    ep.freed = ep.freed.saturating_add(out.freed);
    {
        let mut st = shared.stats();
        st.rounds += 1;
        st.passes += out.passes;
        st.objects_freed = st.objects_freed.saturating_add(out.freed.objects);
        st.bytes_freed = st.bytes_freed.saturating_add(out.freed.bytes);
        st.trims += trims;
        st.unreturned_rounds += u64::from(unreturned);
        st.exhausted_rounds += u64::from(exhausted);
        st.budget_stops += u64::from(cut_by_budget);
        st.last_reaction = Some(reaction);
        st.max_reaction = st.max_reaction.max(Some(reaction));
        st.cpu_used = budget.total();
        let f = st.figures(reading.source.as_str());
        f.rounds += 1;
        f.bytes_asked = f.bytes_asked.saturating_add(target);
        f.bytes_freed = f.bytes_freed.saturating_add(out.freed.bytes);
    }
    tracing::debug!(
        target: "shrinker::reclaim",
        level = ep.level.as_str(),
        target,
        passes = out.passes,
        objects = out.freed.objects,
        bytes = out.freed.bytes,
        trims,
        reaction_us = u64::try_from(reaction.as_micros()).unwrap_or(u64::MAX),
        "reclaim round"
    );
    if exhausted {
        tracing::warn!(
            target: "shrinker::reclaim",
            "memory is critical and nothing is left to shrink"
        );
    }
    if ep.first_round || exhausted {
        ep.first_round = false;
        shared.tell(&LevelEvent {
            level: ep.level,
            previous: ep.level,
            target_bytes: Some(target),
            freed: out.freed,
            exhausted,
            source: reading.source,
        });
    }
}

/// A failed read or wait: a dead source with no fallback left is reported
/// once and ends reclaiming; anything else is a warning.
fn report_error(shared: &Shared, e: &shrinker_pressure::Error, ep: &mut Episode) {
    if matches!(e, shrinker_pressure::Error::NoSource(_)) {
        if !ep.dead {
            ep.dead = true;
            tracing::error!(
                target: "shrinker::reclaim",
                "no memory-pressure source is left ({e}); the reclaimer stops reclaiming \
                 (proactive reclaim still works)"
            );
            shared.stats().source = format!("dead: {e}");
        }
    } else {
        tracing::warn!(target: "shrinker::reclaim", "reading the pressure source: {e}");
    }
}
