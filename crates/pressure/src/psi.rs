//! PSI triggers, with the ladder of fallbacks the kernel's rules make necessary.
//!
//! # Protocol (`Documentation/accounting/psi.rst`)
//!
//! Open `/proc/pressure/memory` (or a cgroup's `memory.pressure`) read-write, write
//! `"<some|full> <stall µs> <window µs>\0"`, and `poll` for `POLLPRI`: the kernel raises it
//! when the tasks' stall time within the window passes the threshold, at most once per
//! window. One trigger per fd (so two fds: Moderate and Critical). `POLLERR` means the
//! trigger is gone (the cgroup was removed).
//!
//! # The ladder
//!
//! For each trigger:
//!
//! 1. the requested window (default 1 s);
//! 2. if the kernel refused it and the window is not a multiple of 2 s: the next multiple,
//!    with the same stall *share* (`some 150 ms / 1 s` becomes `some 300 ms / 2 s`). Since
//!    Linux 6.4 and 6.1.42, writers without `CAP_SYS_RESOURCE` get `EINVAL` otherwise;
//! 3. if that is refused too (`EACCES` on a delegated cgroup file, a seccomp filter...):
//!    reading the file every [`Config::poll_interval`].
//!
//! Each refusal is kept, with its errno, for [`Source::describe`].
//!
//! # Recovery
//!
//! PSI says when pressure starts, never when it ends. Every reading compares the `total`
//! stall counters (µs) with the previous reading: growth at or above the trigger's share
//! counts as a new event (pressure continuing within a window the kernel will not report
//! twice). A level falls once [`Config::fall_after`] has passed
//! since the last event. While a level is held the source asks to be read every poll
//! interval; at None with every trigger armed it asks for nothing: idle, it costs nothing.
//! Polled triggers use `avg10` for the very first reading (no delta yet) and `total`
//! deltas afterwards (`avg10` decays over tens of seconds: too slow to say "gone").

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::errno_name;
use crate::parse::{self, Psi};
use crate::source::{Readiness, Source, WatchFd};
use crate::sys;
use crate::{Config, Error, Level, PsiTrigger, Reading, SourceKind, StallKind};

/// How a trigger file is opened and armed: the default opens read-write, non-blocking,
/// and writes the trigger bytes in one `write`. Replaceable for tests of the ladder.
pub type TriggerOpener<'a> = dyn Fn(&Path, &PsiTrigger) -> io::Result<File> + Send + Sync + 'a;

/// The kernel's way: open `O_RDWR | O_NONBLOCK`, write the trigger with its NUL.
pub fn open_trigger(path: &Path, trigger: &PsiTrigger) -> io::Result<File> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let bytes = trigger.to_bytes();
    let n = f.write(&bytes)?;
    if n != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short trigger write",
        ));
    }
    Ok(f)
}

#[derive(Debug)]
enum Arm {
    Armed { file: File, trigger: PsiTrigger },
    Polled,
}

/// The PSI engine shared by [`PsiSource`] and the cgroup v2 source.
pub(crate) struct PsiEngine {
    path: PathBuf,
    /// `[moderate, critical]`.
    requested: [PsiTrigger; 2],
    arms: [Arm; 2],
    notes: Vec<String>,
    last: Option<(Instant, Psi)>,
    last_event: [Option<Instant>; 2],
    level: Level,
    fall_after: Duration,
    poll_interval: Duration,
}

impl std::fmt::Debug for PsiEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PsiEngine")
            .field("path", &self.path)
            .field("arms", &self.arms)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl PsiEngine {
    pub(crate) fn new(
        path: &Path,
        cfg: &Config,
        opener: &TriggerOpener<'_>,
    ) -> Result<Self, Error> {
        // The file must exist and parse: no PSI at all is a rejection of the whole source.
        let first = sys::read_parse(path, parse::psi)?;
        let now = Instant::now();
        let requested = [cfg.psi_moderate, cfg.psi_critical];
        let mut notes = Vec::new();
        let mut arm = |t: PsiTrigger| -> Arm {
            let mut attempt = t;
            loop {
                match opener(path, &attempt) {
                    Ok(file) => {
                        return Arm::Armed {
                            file,
                            trigger: attempt,
                        }
                    }
                    Err(e) => {
                        let next = attempt.unprivileged();
                        let why = if e.raw_os_error() == Some(22) && next.is_some() {
                            " (unprivileged windows must be multiples of 2 s)"
                        } else {
                            ""
                        };
                        notes.push(format!(
                            "trigger `{attempt}`: {} writing trigger{why}",
                            errno_name(&e)
                        ));
                        match next {
                            Some(n) => attempt = n,
                            None => {
                                notes.push(format!(
                                    "`{}` polled: avg10/total every {:?}",
                                    t, cfg.poll_interval
                                ));
                                return Arm::Polled;
                            }
                        }
                    }
                }
            }
        };
        let arms = [arm(requested[0]), arm(requested[1])];
        let mut e = PsiEngine {
            path: path.to_owned(),
            requested,
            arms,
            notes,
            last: None,
            last_event: [None, None],
            level: Level::None,
            fall_after: cfg.fall_after,
            poll_interval: cfg.poll_interval,
        };
        // Polled triggers judge the first reading by avg10.
        e.account(now, first, true);
        e.last = Some((now, first));
        Ok(e)
    }

    pub(crate) fn describe(&self) -> String {
        let arms: Vec<String> = self
            .arms
            .iter()
            .zip(["moderate", "critical"])
            .map(|(a, name)| match a {
                Arm::Armed { trigger, .. } => format!("{name} on `{trigger}`"),
                Arm::Polled => format!("{name} polled"),
            })
            .collect();
        let mut s = format!("{}: {}", self.path.display(), arms.join(", "));
        for n in &self.notes {
            s.push_str("; ");
            s.push_str(n);
        }
        s
    }

    pub(crate) fn has_polled(&self) -> bool {
        self.arms.iter().any(|a| matches!(a, Arm::Polled))
    }

    pub(crate) fn watch_fds(&self) -> Vec<WatchFd<'_>> {
        self.arms
            .iter()
            .filter_map(|a| match a {
                Arm::Armed { file, .. } => Some(WatchFd {
                    fd: file.as_fd(),
                    readiness: Readiness::Priority,
                }),
                Arm::Polled => None,
            })
            .collect()
    }

    /// `index` counts armed triggers only, in `[moderate, critical]` order.
    pub(crate) fn on_ready(
        &mut self,
        index: usize,
        error: bool,
        now: Instant,
    ) -> Result<(), Error> {
        let slot = self
            .arms
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a, Arm::Armed { .. }))
            .nth(index)
            .map(|(i, _)| i);
        let Some(slot) = slot else { return Ok(()) };
        if error {
            return Err(Error::gone(
                &self.path,
                "POLLERR: the PSI trigger is gone (cgroup removed?)",
            ));
        }
        self.last_event[slot] = Some(now);
        Ok(())
    }

    /// A trigger event was consumed by an outer poller: count it as the weaker one.
    pub(crate) fn on_ghost_wake(&mut self, now: Instant) {
        if self.arms.iter().any(|a| matches!(a, Arm::Armed { .. })) {
            self.last_event[0] = Some(now);
        }
    }

    fn total(p: &Psi, kind: StallKind) -> Option<(u64, f64)> {
        match kind {
            StallKind::Some => Some((p.some.total, p.some.avg10)),
            StallKind::Full => p.full.map(|f| (f.total, f.avg10)),
        }
    }

    /// Notes events from the counters: total growth since the last reading at or above
    /// the trigger's share, or (first reading of a polled trigger) avg10 above it.
    fn account(&mut self, now: Instant, psi: Psi, first: bool) {
        for slot in 0..2 {
            let t = self.requested[slot];
            let Some((total, avg10)) = Self::total(&psi, t.kind) else {
                continue;
            };
            let hit = if first {
                matches!(self.arms[slot], Arm::Polled) && avg10 >= t.ratio() * 100.0
            } else if let Some((then, prev)) = &self.last {
                let dt = now.saturating_duration_since(*then).as_micros() as f64;
                let prev_total = Self::total(prev, t.kind).map_or(total, |p| p.0);
                dt >= 50_000.0 && (total.saturating_sub(prev_total) as f64) >= t.ratio() * dt
            } else {
                false
            };
            if hit {
                self.last_event[slot] = Some(now);
            }
        }
    }

    pub(crate) fn read(&mut self, now: Instant) -> Result<(Level, Psi), Error> {
        let psi = sys::read_parse(&self.path, parse::psi)?;
        self.account(now, psi, false);
        self.last = Some((now, psi));
        let live = |e: Option<Instant>| {
            e.is_some_and(|t| now.saturating_duration_since(t) < self.fall_after)
        };
        self.level = if live(self.last_event[1]) {
            Level::Critical
        } else if live(self.last_event[0]) {
            Level::Moderate
        } else {
            Level::None
        };
        Ok((self.level, psi))
    }

    pub(crate) fn next_check(&self, _now: Instant) -> Option<Instant> {
        let last = self.last.map(|(t, _)| t)?;
        if self.has_polled() || self.level > Level::None {
            let mut next = last + self.poll_interval;
            // Wake exactly when a hold expires, so the fall is not late by a period.
            for e in self.last_event.iter().flatten() {
                let end = *e + self.fall_after;
                if end > last {
                    next = next.min(end);
                }
            }
            Some(next)
        } else {
            None
        }
    }
}

/// PSI triggers on the system's `/proc/pressure/memory` or on any PSI file (a cgroup's
/// `memory.pressure`).
///
/// Moderate from [`Config::psi_moderate`], Critical from
/// [`Config::psi_critical`]; see the
/// [module documentation](self) for the ladder and for recovery.
#[derive(Debug)]
pub struct PsiSource {
    engine: PsiEngine,
}

impl PsiSource {
    /// The system-wide file, `/proc/pressure/memory` (Linux ≥ 4.20 with `CONFIG_PSI`).
    ///
    /// # Errors
    /// [`Error::Io`] if the file is absent (`ENOENT`: no PSI) or refused (`EOPNOTSUPP`:
    /// booted with `psi=0`); [`Error::Parse`] if it is not PSI.
    pub fn system(cfg: &Config) -> Result<Self, Error> {
        Self::open(Path::new("/proc/pressure/memory"), cfg)
    }

    /// Any PSI file.
    ///
    /// # Errors
    /// As [`system`](Self::system), for `path`.
    pub fn open(path: &Path, cfg: &Config) -> Result<Self, Error> {
        Self::open_with(path, cfg, &open_trigger)
    }

    /// Any PSI file, arming triggers through `opener` (tests use it to refuse writes and
    /// watch the ladder).
    ///
    /// # Errors
    /// As [`system`](Self::system), for `path`.
    pub fn open_with(path: &Path, cfg: &Config, opener: &TriggerOpener<'_>) -> Result<Self, Error> {
        cfg.validate()?;
        Ok(PsiSource {
            engine: PsiEngine::new(path, cfg, opener)?,
        })
    }

    /// Whether any trigger fell back to polling.
    pub fn is_polling(&self) -> bool {
        self.engine.has_polled()
    }
}

impl Source for PsiSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Psi
    }

    fn describe(&self) -> String {
        format!("psi {}", self.engine.describe())
    }

    fn watch_fds(&self) -> Vec<WatchFd<'_>> {
        self.engine.watch_fds()
    }

    fn on_ready(&mut self, index: usize, error: bool, now: Instant) -> Result<(), Error> {
        self.engine.on_ready(index, error, now)
    }

    fn read(&mut self, now: Instant) -> Result<Reading, Error> {
        let (level, psi) = self.engine.read(now)?;
        let mut r = Reading::new(level, SourceKind::Psi);
        r.stall = Some(psi.stall());
        r.at = now;
        Ok(r)
    }

    fn next_check(&self, now: Instant) -> Option<Instant> {
        self.engine.next_check(now)
    }

    fn on_ghost_wake(&mut self, now: Instant) {
        self.engine.on_ghost_wake(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn temp_psi(name: &str, some_total: u64, some_avg10: f64) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "shrinker-pressure-psi-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("memory.pressure");
        write_psi(&p, some_total, some_avg10);
        p
    }

    fn write_psi(p: &Path, some_total: u64, some_avg10: f64) {
        std::fs::write(
            p,
            format!(
                "some avg10={some_avg10:.2} avg60=0.00 avg300=0.00 total={some_total}\n\
                 full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
            ),
        )
        .unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore)] // files
    fn refused_triggers_walk_the_ladder_to_polling_and_say_so() {
        let p = temp_psi("ladder", 0, 0.0);
        let calls = AtomicUsize::new(0);
        let refuse = |_: &Path, t: &PsiTrigger| -> io::Result<File> {
            calls.fetch_add(1, Ordering::Relaxed); // Relaxed: a plain counter, read after.
            if t.window == Duration::from_secs(1) {
                Err(io::Error::from_raw_os_error(22)) // EINVAL: the unprivileged rule
            } else {
                Err(io::Error::from_raw_os_error(13)) // EACCES: not writable for us
            }
        };
        let s = PsiSource::open_with(&p, &Config::default(), &refuse).unwrap();
        assert_eq!(
            calls.load(Ordering::Relaxed),
            4,
            "1 s then 2 s, for both triggers"
        );
        assert!(s.is_polling());
        assert!(s.watch_fds().is_empty());
        let d = s.describe();
        assert!(
            d.contains("`some 150000 1000000`: EINVAL writing trigger"),
            "{d}"
        );
        assert!(
            d.contains("`some 300000 2000000`: EACCES writing trigger"),
            "{d}"
        );
        assert!(d.contains("moderate polled"), "{d}");
        // Polled: it asks to be read again one poll interval later.
        assert!(s.next_check(Instant::now()).is_some());
        std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore)] // files
    fn polled_psi_rises_on_total_growth_and_falls_after_the_hold() {
        let p = temp_psi("poll", 0, 0.0);
        let refuse = |_: &Path, _: &PsiTrigger| -> io::Result<File> {
            Err(io::Error::from_raw_os_error(13))
        };
        let cfg = Config::default();
        let mut s = PsiSource::open_with(&p, &cfg, &refuse).unwrap();
        let t0 = Instant::now();
        assert_eq!(s.read(t0).unwrap().level, Level::None);
        // 400 ms of `some` stall in the next second: above the 15 % share.
        write_psi(&p, 400_000, 0.0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(s.read(t1).unwrap().level, Level::Moderate);
        // No growth: held until 2 s after the event, then None.
        let t2 = t1 + Duration::from_millis(1500);
        assert_eq!(s.read(t2).unwrap().level, Level::Moderate);
        let t3 = t1 + Duration::from_millis(2100);
        assert_eq!(s.read(t3).unwrap().level, Level::None);
        std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore)] // files
    fn psi_first_reading_of_a_polled_trigger_uses_avg10() {
        let p = temp_psi("avg10", 0, 40.0);
        let refuse = |_: &Path, _: &PsiTrigger| -> io::Result<File> {
            Err(io::Error::from_raw_os_error(13))
        };
        let mut s = PsiSource::open_with(&p, &Config::default(), &refuse).unwrap();
        let now = Instant::now();
        assert_eq!(s.read(now).unwrap().level, Level::Moderate);
        std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore)] // files
    fn missing_psi_file_is_a_typed_error_naming_the_path() {
        let e = PsiSource::open(
            Path::new("/nonexistent/memory.pressure"),
            &Config::default(),
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("/nonexistent/memory.pressure") && s.contains("ENOENT"),
            "{s}"
        );
    }
}
