//! cgroup v1: usage thresholds through `cgroup.event_control`, and `memory.pressure_level`.
//!
//! # Protocol (`Documentation/admin-guide/cgroup-v1/memory.rst`, "Memory thresholds" and
//! "Memory Pressure")
//!
//! 1. Create an eventfd; open `memory.usage_in_bytes`; write
//!    `"<eventfd> <usage fd> <threshold bytes>"` to `cgroup.event_control`. The eventfd is
//!    signalled whenever usage crosses the threshold, in either direction. This works for
//!    anonymous memory without swap, where the scanned/reclaimed ratio behind
//!    `pressure_level` says little until the OOM.
//! 2. One threshold per mark: stop (85 %), moderate (90 %), critical (97 %) of
//!    `memory.limit_in_bytes`. On any signal the usage is read and the level computed with
//!    hysteresis ([`Thresholds`]): the marks only say *when* to look.
//! 3. Also `"<eventfd> <pressure_level fd> medium"` and `"... critical"`: the kernel's own
//!    reclaim-effort levels, Moderate and Critical, held for
//!    [`Config::fall_after`] (they have no "gone" event either).
//!    `low` is not registered: it fires on any reclaim, which is normal near a limit.
//!    Upstream deprecated `pressure_level` in 2024 (it logs a warning on registration);
//!    its failure is noted and the thresholds carry on.
//!
//! Registrations end when the eventfds are closed. When the cgroup is removed the kernel
//! signals every eventfd; the next read of `memory.usage_in_bytes` fails and the source
//! reports itself dead.
//!
//! The limit is re-read on every reading, so a changed limit changes the level at once;
//! the threshold *notifications* stay at the marks of the limit seen when the source was
//! opened (re-open the monitor after changing a limit by a lot).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::parse;
use crate::source::{Readiness, Source, WatchFd};
use crate::sys;
use crate::{Config, Error, Level, Reading, SourceKind, Thresholds};

#[derive(Debug)]
enum Watch {
    Threshold,
    PressureLevel(Level),
}

/// Reads `memory.limit_in_bytes` of `dir`; `None` when unlimited (≥ 2^62, or above
/// `MemTotal` when that is known: such a limit never binds).
///
/// # Errors
/// The file unreadable or malformed.
pub fn read_limit(dir: &Path) -> Result<Option<u64>, Error> {
    let l = sys::read_parse(&dir.join("memory.limit_in_bytes"), parse::v1_limit)?;
    let total = sys::mem_total();
    Ok(l.filter(|&l| total.is_none_or(|t| l < t)))
}

/// The directory to watch: `dir` if it has a limit, else the nearest ancestor up to `stop`
/// (the hierarchy's mount point) that has one.
///
/// # Errors
/// A limit file unreadable or malformed.
pub fn limited_ancestor(dir: &Path, stop: &Path) -> Result<Option<(PathBuf, u64)>, Error> {
    let mut d = dir.to_owned();
    loop {
        if let Some(l) = read_limit(&d)? {
            return Ok(Some((d, l)));
        }
        if d == stop || !d.pop() || !d.starts_with(stop) {
            return Ok(None);
        }
    }
}

/// The cgroup v1 memory source. See the [module documentation](self).
#[derive(Debug)]
pub struct Cgroup1Source {
    dir: PathBuf,
    usage_path: PathBuf,
    usage: File,
    watches: Vec<(OwnedFd, Watch)>,
    notes: Vec<String>,
    limit: u64,
    thresholds: Thresholds,
    fall_after: Duration,
    level: Level,
    pl_event: [Option<Instant>; 2],
}

fn register(
    control: &Path,
    target: &File,
    arg: &str,
) -> Result<OwnedFd, (&'static str, std::io::Error)> {
    let efd = sys::new_eventfd().map_err(|e| match e {
        Error::Sys { source, .. } => ("creating eventfd", source),
        other => ("creating eventfd", std::io::Error::other(other.to_string())),
    })?;
    let line = format!("{} {} {}", efd.as_raw_fd(), target.as_raw_fd(), arg);
    let mut c = OpenOptions::new()
        .write(true)
        .open(control)
        .map_err(|e| ("opening", e))?;
    c.write_all(line.as_bytes())
        .map_err(|e| ("writing registration", e))?;
    Ok(efd)
}

impl Cgroup1Source {
    /// Watches the v1 memory cgroup directory `dir`, which must have a limit.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if `dir` has no limit; [`Error::Io`] naming the file if a
    /// file is missing or a threshold registration is refused (`cgroup.event_control`
    /// not writable).
    pub fn open(dir: &Path, cfg: &Config) -> Result<Self, Error> {
        cfg.validate()?;
        let limit = read_limit(dir)?.ok_or_else(|| {
            Error::Unavailable(format!(
                "cgroup1 {}: no memory limit (memory.limit_in_bytes unlimited)",
                dir.display()
            ))
        })?;
        let usage_path = dir.join("memory.usage_in_bytes");
        let usage = sys::open_ro(&usage_path)?;
        let control = dir.join("cgroup.event_control");
        let t = cfg.thresholds;
        let mut watches = Vec::new();
        for frac in [t.recover, t.moderate, t.critical] {
            let mark = Thresholds::mark(limit, frac);
            let efd = register(&control, &usage, &mark.to_string())
                .map_err(|(op, e)| Error::io(&control, op, e))?;
            watches.push((efd, Watch::Threshold));
        }
        let mut notes = Vec::new();
        let pl_path = dir.join("memory.pressure_level");
        match sys::open_ro(&pl_path) {
            Ok(pl) => {
                for (word, level) in [("medium", Level::Moderate), ("critical", Level::Critical)] {
                    match register(&control, &pl, word) {
                        Ok(efd) => watches.push((efd, Watch::PressureLevel(level))),
                        Err((op, e)) => notes.push(format!(
                            "memory.pressure_level {word}: {} {op}",
                            crate::error::errno_name(&e)
                        )),
                    }
                }
            }
            Err(e) => notes.push(format!("no memory.pressure_level: {e}")),
        }
        Ok(Cgroup1Source {
            dir: dir.to_owned(),
            usage_path,
            usage,
            watches,
            notes,
            limit,
            thresholds: t,
            fall_after: cfg.fall_after,
            level: Level::None,
            pl_event: [None, None],
        })
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The limit found when opened.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl Source for Cgroup1Source {
    fn kind(&self) -> SourceKind {
        SourceKind::Cgroup1
    }

    fn describe(&self) -> String {
        let l = self.limit;
        let pl = self
            .watches
            .iter()
            .filter(|(_, w)| matches!(w, Watch::PressureLevel(_)))
            .count();
        let mut s = format!(
            "cgroup1 {}: usage thresholds at {} / {} / {} B (stop / moderate / critical) of limit {l} B via cgroup.event_control",
            self.dir.display(),
            Thresholds::mark(l, self.thresholds.recover),
            Thresholds::mark(l, self.thresholds.moderate),
            Thresholds::mark(l, self.thresholds.critical),
        );
        if pl > 0 {
            s.push_str("; memory.pressure_level medium/critical");
        }
        for n in &self.notes {
            s.push_str("; ");
            s.push_str(n);
        }
        s
    }

    fn watch_fds(&self) -> Vec<WatchFd<'_>> {
        self.watches
            .iter()
            .map(|(fd, _)| WatchFd {
                fd: fd.as_fd(),
                readiness: Readiness::Readable,
            })
            .collect()
    }

    fn on_ready(&mut self, index: usize, _error: bool, now: Instant) -> Result<(), Error> {
        let Some((fd, w)) = self.watches.get(index) else {
            return Ok(());
        };
        let n = sys::drain_eventfd(fd).map_err(|e| Error::sys("reading eventfd", e))?;
        if let (Watch::PressureLevel(l), true) = (w, n > 0) {
            self.pl_event[usize::from(*l == Level::Critical)] = Some(now);
        }
        Ok(())
    }

    fn read(&mut self, now: Instant) -> Result<Reading, Error> {
        let b = sys::pread_all(&self.usage, &self.usage_path)?;
        let usage = parse::cgroup_value(&b)
            .map_err(|e| Error::parse(&self.usage_path, e))?
            .unwrap_or(0);
        // A limit removed or raised past RAM: keep the last one rather than die.
        if let Ok(Some(l)) = read_limit(&self.dir) {
            self.limit = l;
        }
        let mut r = self
            .thresholds
            .reading(SourceKind::Cgroup1, usage, self.limit, self.level);
        let held = |t: Option<Instant>| {
            t.is_some_and(|t| now.saturating_duration_since(t) < self.fall_after)
        };
        if held(self.pl_event[1]) {
            r.level = Level::Critical;
        } else if held(self.pl_event[0]) {
            r.level = r.level.max(Level::Moderate);
        }
        r.at = now;
        self.level = r.level;
        Ok(r)
    }

    fn next_check(&self, now: Instant) -> Option<Instant> {
        self.pl_event
            .iter()
            .flatten()
            .map(|t| *t + self.fall_after)
            .filter(|end| *end > now)
            .min()
    }
}
