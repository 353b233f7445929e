//! The polled sources: `/proc/meminfo` `MemAvailable`, and the process's resident size
//! against a byte target.
//!
//! Neither file can be waited on, so both are read every
//! [`Config::poll_interval`] (default 1 s: one `open`, `read`,
//! `close` of a small procfs file per second, nothing measurable). Levels use the same
//! [`Thresholds`] as the cgroup sources, against `MemTotal` or the
//! target.
//!
//! - **MemAvailable** is what Chromium polls on Linux (every 5 s, 75 / 85 % used): it sees
//!   the whole machine and is blind to cgroup limits, hence its low rank in auto-detection.
//! - **RSS target**: `/proc/self/statm` resident pages × page size. It works everywhere,
//!   with no privilege and no cgroup, and counts only this process: the fallback.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::parse;
use crate::source::{Source, WatchFd};
use crate::sys;
use crate::{Config, Error, Level, Reading, SourceKind, Thresholds};

/// `MemTotal - MemAvailable` against `MemTotal`, polled.
#[derive(Debug)]
pub struct MemInfoSource {
    path: PathBuf,
    thresholds: Thresholds,
    interval: Duration,
    level: Level,
    last_read: Option<Instant>,
}

impl MemInfoSource {
    /// Polls `/proc/meminfo`.
    ///
    /// # Errors
    /// The file unreadable or malformed, or invalid `cfg`.
    pub fn open(cfg: &Config) -> Result<Self, Error> {
        Self::open_path(Path::new("/proc/meminfo"), cfg)
    }

    /// Polls a meminfo-format file at `path` (tests).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_path(path: &Path, cfg: &Config) -> Result<Self, Error> {
        cfg.validate()?;
        sys::read_parse(path, parse::meminfo)?;
        Ok(MemInfoSource {
            path: path.to_owned(),
            thresholds: cfg.thresholds,
            interval: cfg.poll_interval,
            level: Level::None,
            last_read: None,
        })
    }
}

impl Source for MemInfoSource {
    fn kind(&self) -> SourceKind {
        SourceKind::MemInfo
    }

    fn describe(&self) -> String {
        format!(
            "meminfo {}: MemTotal - MemAvailable against MemTotal (moderate {:.0} %, critical {:.0} %, stop {:.0} %), read every {:?}",
            self.path.display(),
            self.thresholds.moderate * 100.0,
            self.thresholds.critical * 100.0,
            self.thresholds.recover * 100.0,
            self.interval
        )
    }

    fn watch_fds(&self) -> Vec<WatchFd<'_>> {
        Vec::new()
    }

    fn on_ready(&mut self, _: usize, _: bool, _: Instant) -> Result<(), Error> {
        Ok(())
    }

    fn read(&mut self, now: Instant) -> Result<Reading, Error> {
        let m = sys::read_parse(&self.path, parse::meminfo)?;
        let mut r = self.thresholds.reading(
            SourceKind::MemInfo,
            m.total - m.available,
            m.total,
            self.level,
        );
        r.at = now;
        self.level = r.level;
        self.last_read = Some(now);
        Ok(r)
    }

    fn next_check(&self, now: Instant) -> Option<Instant> {
        Some(self.last_read.map_or(now, |t| t + self.interval))
    }
}

/// The process's resident size against a byte target, polled.
#[derive(Debug)]
pub struct RssSource {
    path: PathBuf,
    target: u64,
    page_size: u64,
    thresholds: Thresholds,
    interval: Duration,
    level: Level,
    last_read: Option<Instant>,
}

impl RssSource {
    /// Polls `/proc/self/statm` against `target` bytes.
    ///
    /// # Errors
    /// `target` is 0, the file is unreadable or malformed, or `cfg` is invalid.
    pub fn open(target: u64, cfg: &Config) -> Result<Self, Error> {
        Self::open_path(Path::new("/proc/self/statm"), target, cfg)
    }

    /// Polls a statm-format file at `path` (tests).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_path(path: &Path, target: u64, cfg: &Config) -> Result<Self, Error> {
        cfg.validate()?;
        if target == 0 {
            return Err(Error::Config("the RSS target must be above 0 bytes".into()));
        }
        sys::read_parse(path, parse::statm_resident_pages)?;
        Ok(RssSource {
            path: path.to_owned(),
            target,
            page_size: rustix::param::page_size() as u64,
            thresholds: cfg.thresholds,
            interval: cfg.poll_interval,
            level: Level::None,
            last_read: None,
        })
    }
}

impl Source for RssSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Rss
    }

    fn describe(&self) -> String {
        format!(
            "rss {}: resident size against a target of {} B (moderate {} B, critical {} B, stop {} B), read every {:?}",
            self.path.display(),
            self.target,
            Thresholds::mark(self.target, self.thresholds.moderate),
            Thresholds::mark(self.target, self.thresholds.critical),
            Thresholds::mark(self.target, self.thresholds.recover),
            self.interval
        )
    }

    fn watch_fds(&self) -> Vec<WatchFd<'_>> {
        Vec::new()
    }

    fn on_ready(&mut self, _: usize, _: bool, _: Instant) -> Result<(), Error> {
        Ok(())
    }

    fn read(&mut self, now: Instant) -> Result<Reading, Error> {
        let pages = sys::read_parse(&self.path, parse::statm_resident_pages)?;
        let usage = pages.saturating_mul(self.page_size);
        let mut r = self
            .thresholds
            .reading(SourceKind::Rss, usage, self.target, self.level);
        r.at = now;
        self.level = r.level;
        self.last_read = Some(now);
        Ok(r)
    }

    fn next_check(&self, now: Instant) -> Option<Instant> {
        Some(self.last_read.map_or(now, |t| t + self.interval))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore)] // files
    fn meminfo_and_rss_read_real_proc_files() {
        let cfg = Config::default();
        let mut m = MemInfoSource::open(&cfg).unwrap();
        let r = m.read(Instant::now()).unwrap();
        assert!(r.limit.unwrap() > 0 && r.usage.unwrap() <= r.limit.unwrap());
        // A target far below our own RSS: critical; far above: none.
        let mut tiny = RssSource::open(4096, &cfg).unwrap();
        assert_eq!(tiny.read(Instant::now()).unwrap().level, Level::Critical);
        let mut huge = RssSource::open(1 << 50, &cfg).unwrap();
        let r = huge.read(Instant::now()).unwrap();
        assert_eq!((r.level, r.headroom), (Level::None, Some(0)));
        assert!(RssSource::open(0, &cfg).is_err());
    }

    #[test]
    #[cfg_attr(miri, ignore)] // files
    fn meminfo_bad_file_is_a_typed_error() {
        let p =
            std::env::temp_dir().join(format!("shrinker-pressure-meminfo-{}", std::process::id()));
        std::fs::write(&p, "MemTotal: lots\n").unwrap();
        let e = MemInfoSource::open_path(&p, &Config::default()).unwrap_err();
        assert!(
            matches!(e, Error::Parse { .. }) && e.to_string().contains("MemTotal"),
            "{e}"
        );
        std::fs::remove_file(&p).unwrap();
    }
}
