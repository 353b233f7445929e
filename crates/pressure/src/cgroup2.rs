//! cgroup v2: `memory.current` against `memory.high` / `memory.max`, `memory.events`, and the
//! cgroup's own PSI.
//!
//! # What each file gives (`Documentation/admin-guide/cgroup-v2.rst`)
//!
//! - `memory.current`: bytes charged to the cgroup (and its descendants).
//! - `memory.high`: the throttle limit (going over it means heavy reclaim, never OOM);
//!   `memory.max`: the hard limit (going over it means OOM). The limit used here is the
//!   lower of the two that are set; `max` in both means no limit in this cgroup, and the
//!   nearest ancestor with one is watched instead (its usage counts ours).
//! - `memory.events`: counters `low high max oom oom_kill`; "a value change in this file
//!   generates a file modified event": the fd raises `POLLPRI` (with `POLLERR`, which here
//!   is not an error), re-armed by reading the file from offset 0. A change of `high`,
//!   `max` or `oom` means the limit was reached: the reading is made at once.
//! - `memory.pressure`: PSI for the cgroup, armed with the same ladder as the system file.
//!
//! # Level
//!
//! The higher of the limit level ([`Thresholds`], with hysteresis) and
//! the PSI level. `memory.current` has no notification of its own below the limit, so it
//! is read every [`Config::poll_interval`] (one small read a
//! second; PSI and `memory.events` cover the fast cases).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::parse::{self, MemoryEvents};
use crate::psi::{open_trigger, PsiEngine, TriggerOpener};
use crate::source::{Readiness, Source, WatchFd};
use crate::sys;
use crate::{Config, Error, Level, Reading, SourceKind, Thresholds};

/// A cgroup v2 directory's limit, as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V2Limit {
    /// `memory.high`, if set.
    pub high: Option<u64>,
    /// `memory.max`, if set.
    pub max: Option<u64>,
}

impl V2Limit {
    /// The effective limit: the lower of those set.
    pub fn effective(&self) -> Option<u64> {
        match (self.high, self.max) {
            (Some(h), Some(m)) => Some(h.min(m)),
            (a, b) => a.or(b),
        }
    }
}

/// Reads `memory.high` and `memory.max` of `dir` (absent files count as unset: the root
/// cgroup has neither).
///
/// # Errors
/// A file present but unreadable or malformed.
pub fn read_limit(dir: &Path) -> Result<V2Limit, Error> {
    let one = |name: &str| -> Result<Option<u64>, Error> {
        let p = dir.join(name);
        match sys::read_path(&p) {
            Ok(b) => parse::cgroup_value(&b).map_err(|e| Error::parse(&p, e)),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    };
    Ok(V2Limit {
        high: one("memory.high")?,
        max: one("memory.max")?,
    })
}

/// The directory to watch: `dir` itself if it has a limit, else the nearest ancestor up to
/// `stop` (the mount point) that has one. `None` if none has.
pub fn limited_ancestor(dir: &Path, stop: &Path) -> Result<Option<(PathBuf, u64)>, Error> {
    let mut d = dir.to_owned();
    loop {
        if let Some(l) = read_limit(&d)?.effective() {
            return Ok(Some((d, l)));
        }
        if d == stop || !d.pop() || !d.starts_with(stop) {
            return Ok(None);
        }
    }
}

/// The cgroup v2 source. See the [module documentation](self).
#[derive(Debug)]
pub struct Cgroup2Source {
    dir: PathBuf,
    current: PathBuf,
    events_path: PathBuf,
    events: Option<File>,
    last_events: MemoryEvents,
    limit: Option<u64>,
    psi: Option<PsiEngine>,
    psi_note: Option<String>,
    thresholds: Thresholds,
    poll_interval: Duration,
    fall_after: Duration,
    level: Level,
    limit_hit_at: Option<Instant>,
    last_read: Option<Instant>,
}

impl Cgroup2Source {
    /// Watches the cgroup v2 directory `dir` (its `memory.current` is required; a limit and
    /// `memory.pressure` are used where present).
    ///
    /// # Errors
    /// `memory.current` absent or unreadable (not a cgroup v2 directory with the memory
    /// controller), a limit file malformed, invalid `cfg`.
    pub fn open(dir: &Path, cfg: &Config) -> Result<Self, Error> {
        Self::open_with(dir, cfg, &open_trigger)
    }

    /// As [`open`](Self::open), arming PSI triggers through `opener`.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with(dir: &Path, cfg: &Config, opener: &TriggerOpener<'_>) -> Result<Self, Error> {
        cfg.validate()?;
        let current = dir.join("memory.current");
        sys::read_parse(&current, parse::cgroup_value)?;
        let limit = read_limit(dir)?.effective();
        let events_path = dir.join("memory.events");
        let (events, last_events) = match sys::open_ro(&events_path) {
            Ok(f) => {
                let b = sys::pread_all(&f, &events_path)?;
                let ev = parse::memory_events(&b).map_err(|e| Error::parse(&events_path, e))?;
                (Some(f), ev)
            }
            Err(_) => (None, MemoryEvents::default()),
        };
        let pressure = dir.join("memory.pressure");
        let (psi, psi_note) = match PsiEngine::new(&pressure, cfg, opener) {
            Ok(e) => (Some(e), None),
            Err(e) => (None, Some(format!("no PSI: {e}"))),
        };
        Ok(Cgroup2Source {
            dir: dir.to_owned(),
            current,
            events_path,
            events,
            last_events,
            limit,
            psi,
            psi_note,
            thresholds: cfg.thresholds,
            poll_interval: cfg.poll_interval,
            fall_after: cfg.fall_after,
            level: Level::None,
            limit_hit_at: None,
            last_read: None,
        })
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The effective limit found when opened (`None`: no limit in this cgroup).
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }
}

impl Source for Cgroup2Source {
    fn kind(&self) -> SourceKind {
        SourceKind::Cgroup2
    }

    fn describe(&self) -> String {
        let mut s = format!("cgroup2 {}: ", self.dir.display());
        match self.limit {
            Some(l) => s.push_str(&format!(
                "memory.current against limit {l} B (moderate {} B, critical {} B, stop {} B), read every {:?}",
                Thresholds::mark(l, self.thresholds.moderate),
                Thresholds::mark(l, self.thresholds.critical),
                Thresholds::mark(l, self.thresholds.recover),
                self.poll_interval
            )),
            None => s.push_str("no limit (memory.high and memory.max are max)"),
        }
        if self.events.is_some() {
            s.push_str("; memory.events on POLLPRI");
        }
        match (&self.psi, &self.psi_note) {
            (Some(p), _) => s.push_str(&format!("; PSI {}", p.describe())),
            (None, Some(n)) => s.push_str(&format!("; {n}")),
            _ => {}
        }
        s
    }

    fn watch_fds(&self) -> Vec<WatchFd<'_>> {
        let mut v = Vec::new();
        if let Some(f) = &self.events {
            v.push(WatchFd {
                fd: f.as_fd(),
                readiness: Readiness::Priority,
            });
        }
        if let Some(p) = &self.psi {
            v.extend(p.watch_fds());
        }
        v
    }

    fn on_ready(&mut self, index: usize, error: bool, now: Instant) -> Result<(), Error> {
        let psi_index = if let Some(f) = &self.events {
            if index == 0 {
                // kernfs reports POLLERR|POLLPRI on change: not an error here.
                let b = sys::pread_all(f, &self.events_path)?;
                let ev =
                    parse::memory_events(&b).map_err(|e| Error::parse(&self.events_path, e))?;
                if ev.high > self.last_events.high
                    || ev.max > self.last_events.max
                    || ev.oom > self.last_events.oom
                {
                    self.limit_hit_at = Some(now);
                }
                self.last_events = ev;
                return Ok(());
            }
            index - 1
        } else {
            index
        };
        match &mut self.psi {
            Some(p) => p.on_ready(psi_index, error, now),
            None => Ok(()),
        }
    }

    fn read(&mut self, now: Instant) -> Result<Reading, Error> {
        let usage = sys::read_parse(&self.current, parse::cgroup_value)?.unwrap_or(0);
        // Limits change at run time (systemctl set-property, senpai): follow them. A limit
        // file that went bad keeps the last good limit; memory.current failing kills us.
        if let Ok(l) = read_limit(&self.dir) {
            self.limit = l.effective();
        }
        self.last_read = Some(now);
        let mut r = match self.limit {
            Some(l) => self
                .thresholds
                .reading(SourceKind::Cgroup2, usage, l, self.level),
            None => {
                let mut r = Reading::new(Level::None, SourceKind::Cgroup2);
                r.usage = Some(usage);
                r
            }
        };
        if self
            .limit_hit_at
            .is_some_and(|t| now.saturating_duration_since(t) < self.fall_after)
        {
            r.level = Level::Critical;
        }
        if let Some(p) = &mut self.psi {
            let (lvl, psi) = p.read(now)?;
            r.level = r.level.max(lvl);
            r.stall = Some(psi.stall());
        }
        r.at = now;
        self.level = r.level;
        Ok(r)
    }

    fn on_ghost_wake(&mut self, now: Instant) {
        if let Some(p) = &mut self.psi {
            p.on_ghost_wake(now);
        }
    }

    fn next_check(&self, now: Instant) -> Option<Instant> {
        let mut next = self
            .limit
            .map(|_| self.last_read.map_or(now, |t| t + self.poll_interval));
        if let Some(t) = self.limit_hit_at {
            let end = t + self.fall_after;
            if end > now {
                next = Some(next.map_or(end, |n| n.min(end)));
            }
        }
        if let Some(p) = self.psi.as_ref().and_then(|p| p.next_check(now)) {
            next = Some(next.map_or(p, |n| n.min(p)));
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    struct FakeCgroup(PathBuf);

    impl FakeCgroup {
        fn new(name: &str) -> Self {
            let d = std::env::temp_dir().join(format!(
                "shrinker-pressure-cg2-{}-{name}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            FakeCgroup(d)
        }
        fn write(&self, file: &str, text: &str) {
            std::fs::write(self.0.join(file), text).unwrap();
        }
    }

    impl Drop for FakeCgroup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn no_triggers(_: &Path, _: &crate::PsiTrigger) -> io::Result<File> {
        Err(io::Error::from_raw_os_error(13))
    }

    #[test]
    #[cfg_attr(miri, ignore)] // files
    fn v2_limit_is_the_lower_of_high_and_max_and_headroom_aims_at_the_stop_mark() {
        let cg = FakeCgroup::new("limits");
        cg.write("memory.current", "100\n");
        cg.write("memory.max", "1000\n");
        cg.write("memory.high", "max\n");
        cg.write("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n");
        let cfg = Config::default();
        let mut s = Cgroup2Source::open_with(&cg.0, &cfg, &no_triggers).unwrap();
        assert_eq!(s.limit(), Some(1000));
        let now = Instant::now();
        let r = s.read(now).unwrap();
        assert_eq!(
            (r.level, r.usage, r.limit, r.headroom),
            (Level::None, Some(100), Some(1000), Some(0))
        );
        cg.write("memory.current", "920\n");
        let r = s.read(now).unwrap();
        assert_eq!((r.level, r.headroom), (Level::Moderate, Some(920 - 850)));
        cg.write("memory.current", "990\n");
        assert_eq!(s.read(now).unwrap().level, Level::Critical);
        cg.write("memory.current", "860\n");
        assert_eq!(s.read(now).unwrap().level, Level::Moderate, "hysteresis");
        cg.write("memory.current", "840\n");
        assert_eq!(s.read(now).unwrap().level, Level::None);
        // Polled: read again one poll interval after the last read.
        assert_eq!(s.next_check(now), Some(now + cfg.poll_interval));

        cg.write("memory.high", "500\n");
        let s = Cgroup2Source::open_with(&cg.0, &cfg, &no_triggers).unwrap();
        assert_eq!(s.limit(), Some(500));
        assert!(s.describe().contains("limit 500 B"), "{}", s.describe());
    }

    #[test]
    #[cfg_attr(miri, ignore)] // files
    fn v2_memory_events_high_counter_means_critical_for_the_hold() {
        let cg = FakeCgroup::new("events");
        cg.write("memory.current", "100\n");
        cg.write("memory.max", "1000\n");
        cg.write("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n");
        let cfg = Config::default();
        let mut s = Cgroup2Source::open_with(&cg.0, &cfg, &no_triggers).unwrap();
        assert_eq!(s.watch_fds().len(), 1);
        cg.write("memory.events", "low 0\nhigh 1\nmax 0\noom 0\noom_kill 0\n");
        let t = Instant::now();
        s.on_ready(0, true, t).unwrap();
        assert_eq!(s.read(t).unwrap().level, Level::Critical);
        assert_eq!(s.read(t + cfg.fall_after).unwrap().level, Level::None);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // files
    fn v2_without_limit_walks_up_to_a_limited_ancestor() {
        let root = FakeCgroup::new("tree");
        let child = root.0.join("a").join("b");
        std::fs::create_dir_all(&child).unwrap();
        root.write("memory.max", "4096\n");
        std::fs::write(root.0.join("a/memory.max"), "max\n").unwrap();
        std::fs::write(child.join("memory.max"), "max\n").unwrap();
        let (d, l) = limited_ancestor(&child, &root.0).unwrap().unwrap();
        assert_eq!((d, l), (root.0.clone(), 4096));
        std::fs::write(root.0.join("memory.max"), "max\n").unwrap();
        assert!(limited_ancestor(&child, &root.0).unwrap().is_none());
    }

    #[test]
    #[cfg_attr(miri, ignore)] // files
    fn v2_bad_files_are_typed_errors_and_a_removed_cgroup_kills_the_source() {
        let cg = FakeCgroup::new("bad");
        let e = Cgroup2Source::open_with(&cg.0, &Config::default(), &no_triggers).unwrap_err();
        assert!(e.to_string().contains("memory.current"), "{e}");
        cg.write("memory.current", "12 34\n");
        let e = Cgroup2Source::open_with(&cg.0, &Config::default(), &no_triggers).unwrap_err();
        assert!(matches!(e, Error::Parse { .. }), "{e}");
        cg.write("memory.current", "12\n");
        cg.write("memory.max", "lots\n");
        let e = Cgroup2Source::open_with(&cg.0, &Config::default(), &no_triggers).unwrap_err();
        assert!(e.to_string().contains("memory.max"), "{e}");
        cg.write("memory.max", "100\n");
        let mut s = Cgroup2Source::open_with(&cg.0, &Config::default(), &no_triggers).unwrap();
        std::fs::remove_file(cg.0.join("memory.current")).unwrap();
        let e = s.read(Instant::now()).unwrap_err();
        assert!(e.to_string().contains("ENOENT"), "{e}");
    }
}
