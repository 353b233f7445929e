//! The one model every source reports in: a [`Level`], and where the source knows them, bytes.
//!
//! # Levels
//!
//! Three, as Chromium's `MemoryPressureLevel` and Apple's dispatch source have them: `None`
//! (a state, never an alarm), `Moderate` ("free what is cheap to rebuild") and `Critical`
//! ("free all you can; the alternative is the OOM killer").
//!
//! # Limit-based levels and hysteresis
//!
//! A source that knows a usage and a limit (cgroup v1/v2, `MemAvailable`, an RSS target)
//! turns them into a level with three marks, fractions of the limit ([`Thresholds`]):
//!
//! ```text
//!   usage >= critical (97 %)            -> Critical
//!   usage >= moderate (90 %)            -> Moderate
//!   recover (85 %) <= usage < moderate  -> Moderate if the level was above None, else None
//!   usage < recover                     -> None
//! ```
//!
//! The band between `recover` and `moderate` is the hysteresis: a level that rose does not
//! fall back to None until usage is clearly under the mark, so a cache trimmed to just under
//! 90 % does not flap. `recover` is also the *stop mark*: [`Reading::headroom`] is the number
//! of bytes to free to get back under it, which is what a reclaimer should aim for.
//!
//! The defaults (90 / 97 / 85 %) follow the shape of the kernel's own watermarks (min < low <
//! high, reclaim runs from low until high is met) and of .NET's `ArrayPool` tiers (high
//! pressure at 90 % of the memory-load threshold).
//!
//! # Stall-based levels
//!
//! PSI (and the systemd protocol, which is PSI relayed) says "tasks stalled X µs within a
//! window", once per window at most, and never "pressure is gone". Those sources hold a level
//! until [`Config::fall_after`] (default 2 s, ChromeOS resourced's downgrade delay) has passed
//! without a new event, where "event" includes the stall counter `total` growing at the
//! trigger's rate between two readings.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::Error;

/// How short memory is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Level {
    /// No pressure (a state; never an alarm).
    #[default]
    None,
    /// Free what is cheap to rebuild.
    Moderate,
    /// Free everything you can: the alternative is being killed.
    Critical,
}

impl Level {
    /// `"none"`, `"moderate"` or `"critical"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Moderate => "moderate",
            Level::Critical => "critical",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = Error;

    /// Accepts `none|moderate|critical`, and the cgroup v1 / GLib words `low|medium`
    /// (`low` is None: the kernel reclaiming is normal near a limit; `medium` is Moderate).
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "low" | "normal" => Ok(Level::None),
            "moderate" | "medium" | "warning" => Ok(Level::Moderate),
            "critical" => Ok(Level::Critical),
            other => Err(Error::Spec {
                spec: other.to_owned(),
                reason: "expected a level: none, moderate or critical".to_owned(),
            }),
        }
    }
}

/// Which kind of source produced a reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// systemd's `$MEMORY_PRESSURE_WATCH` / `$MEMORY_PRESSURE_WRITE` protocol.
    Systemd,
    /// PSI triggers on `/proc/pressure/memory` or a cgroup's `memory.pressure`.
    Psi,
    /// cgroup v2 `memory.current` against `memory.high` / `memory.max`, `memory.events`,
    /// and the cgroup's own PSI.
    Cgroup2,
    /// cgroup v1 usage thresholds and `memory.pressure_level`.
    Cgroup1,
    /// `/proc/meminfo` `MemAvailable` against `MemTotal`.
    MemInfo,
    /// The process's resident size against a byte target.
    Rss,
    /// Set by hand through a [`ManualHandle`](crate::ManualHandle).
    Manual,
    /// Level words read from a FIFO.
    Fifo,
}

impl SourceKind {
    /// The name used by `describe()`, the example's `--source` and its JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Systemd => "systemd",
            SourceKind::Psi => "psi",
            SourceKind::Cgroup2 => "cgroup2",
            SourceKind::Cgroup1 => "cgroup1",
            SourceKind::MemInfo => "meminfo",
            SourceKind::Rss => "rss",
            SourceKind::Manual => "manual",
            SourceKind::Fifo => "fifo",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// PSI stall figures: the share of the last 10 s in which some / all tasks waited for memory.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Stall {
    /// `some avg10`, percent.
    pub some_avg10: f64,
    /// `full avg10`, percent (absent on old kernels' system file).
    pub full_avg10: Option<f64>,
}

/// One observation of memory pressure.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// The level after hysteresis / hold.
    pub level: Level,
    /// Which source said it.
    pub source: SourceKind,
    /// Bytes in use, where the source knows it (cgroup usage, `MemTotal - MemAvailable`,
    /// resident size).
    pub usage: Option<u64>,
    /// The limit the usage is measured against, where there is one.
    pub limit: Option<u64>,
    /// Bytes to free to get back under the stop mark ([`Thresholds::recover`] of the
    /// limit); 0 when already under it. `None` where the source knows no limit (PSI,
    /// systemd, FIFO without figures): the reclaimer then picks a growing target itself.
    pub headroom: Option<u64>,
    /// PSI stall percentages, where the source reads PSI.
    pub stall: Option<Stall>,
    /// When the reading was taken.
    pub at: Instant,
}

impl Reading {
    /// A reading with a level and nothing else.
    pub fn new(level: Level, source: SourceKind) -> Self {
        Reading {
            level,
            source,
            usage: None,
            limit: None,
            headroom: None,
            stall: None,
            at: Instant::now(),
        }
    }

    /// Bytes left before the limit (`limit - usage`), where both are known.
    pub fn available(&self) -> Option<u64> {
        Some(self.limit?.saturating_sub(self.usage?))
    }
}

/// The marks that turn usage against a limit into a level (fractions of the limit).
///
/// See the [module documentation](self) for the rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// Moderate at or above this fraction (default 0.90).
    pub moderate: f64,
    /// Critical at or above this fraction (default 0.97).
    pub critical: f64,
    /// Back to None under this fraction; also the stop mark [`Reading::headroom`] aims
    /// for (default 0.85).
    pub recover: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            moderate: 0.90,
            critical: 0.97,
            recover: 0.85,
        }
    }
}

impl Thresholds {
    /// Checks `0 < recover < moderate <= critical <= 1`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the offending values.
    pub fn validate(&self) -> Result<(), Error> {
        let ok = self.recover > 0.0
            && self.recover < self.moderate
            && self.moderate <= self.critical
            && self.critical <= 1.0;
        if ok {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "thresholds must satisfy 0 < recover < moderate <= critical <= 1, got recover {} moderate {} critical {}",
                self.recover, self.moderate, self.critical
            )))
        }
    }

    /// The mark in bytes for `fraction` of `limit` (rounded down).
    pub fn mark(limit: u64, fraction: f64) -> u64 {
        // f64 keeps 53 bits: exact to the byte below 8 PiB, plenty for a memory limit.
        (limit as f64 * fraction) as u64
    }

    /// The level for `usage` against `limit`, given the level before (hysteresis).
    pub fn level(&self, usage: u64, limit: u64, previous: Level) -> Level {
        if limit == 0 {
            return Level::Critical;
        }
        if usage >= Self::mark(limit, self.critical) {
            Level::Critical
        } else if usage >= Self::mark(limit, self.moderate)
            || (usage >= Self::mark(limit, self.recover) && previous > Level::None)
        {
            // At the moderate mark, or in the hysteresis band after having risen.
            Level::Moderate
        } else {
            Level::None
        }
    }

    /// Bytes to free to get under the stop mark: `usage - recover * limit`, or 0.
    pub fn headroom(&self, usage: u64, limit: u64) -> u64 {
        usage.saturating_sub(Self::mark(limit, self.recover))
    }

    /// A full reading for `usage` against `limit`.
    pub fn reading(&self, source: SourceKind, usage: u64, limit: u64, previous: Level) -> Reading {
        Reading {
            level: self.level(usage, limit, previous),
            source,
            usage: Some(usage),
            limit: Some(limit),
            headroom: Some(self.headroom(usage, limit)),
            stall: None,
            at: Instant::now(),
        }
    }
}

/// `some` or `full`, the two PSI lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallKind {
    /// At least one task stalled.
    Some,
    /// All non-idle tasks stalled.
    Full,
}

impl StallKind {
    /// `"some"` or `"full"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StallKind::Some => "some",
            StallKind::Full => "full",
        }
    }
}

/// A PSI trigger: `<some|full> <stall µs> <window µs>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PsiTrigger {
    /// Which line.
    pub kind: StallKind,
    /// Stall time within the window that fires the trigger.
    pub stall: Duration,
    /// Tracking window: 500 ms to 10 s; a multiple of 2 s for unprivileged writers.
    pub window: Duration,
}

impl PsiTrigger {
    /// The bytes to write: the text and its terminating NUL (the kernel's `psi_write`
    /// overwrites the last byte written with a NUL, so without it the last digit is lost).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!(
            "{} {} {}",
            self.kind.as_str(),
            self.stall.as_micros(),
            self.window.as_micros()
        )
        .into_bytes();
        s.push(0);
        s
    }

    /// Stall share that fires it (stall / window), 0..=1.
    pub fn ratio(&self) -> f64 {
        if self.window.is_zero() {
            return 1.0;
        }
        self.stall.as_secs_f64() / self.window.as_secs_f64()
    }

    /// The same stall share on the next multiple of 2 s (the unprivileged rule), or `None`
    /// if the window already is one.
    pub fn unprivileged(&self) -> Option<PsiTrigger> {
        let two = Duration::from_secs(2);
        let w = self.window.as_micros();
        if w % two.as_micros() == 0 && w != 0 {
            return None;
        }
        let windows = w.div_ceil(two.as_micros()).max(1) as u32;
        let window = two * windows;
        let stall = Duration::from_secs_f64(self.ratio() * window.as_secs_f64());
        Some(PsiTrigger {
            kind: self.kind,
            stall,
            window,
        })
    }
}

impl fmt::Display for PsiTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.kind.as_str(),
            self.stall.as_micros(),
            self.window.as_micros()
        )
    }
}

/// Everything a monitor and its sources are tuned by. Every default is documented with
/// where it comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Marks for limit-based sources (default 90 / 97 / 85 %).
    pub thresholds: Thresholds,
    /// PSI trigger for Moderate (default `some 150 ms / 1 s`: the kernel documentation's
    /// example trigger, between Android's and GNOME's `some 70/100 ms`).
    pub psi_moderate: PsiTrigger,
    /// PSI trigger for Critical (default `full 50 ms / 1 s`: ChromeOS resourced's first
    /// critical step).
    pub psi_critical: PsiTrigger,
    /// A stall-based level falls only after this long without a new event (default 2 s,
    /// ChromeOS resourced).
    pub fall_after: Duration,
    /// Period of polled sources and of PSI `avg10` polling (default 1 s).
    pub poll_interval: Duration,
    /// The level the systemd protocol's single trigger maps to (default Moderate: systemd
    /// documents one degree of pressure, "latency already degraded").
    pub systemd_level: Level,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            thresholds: Thresholds::default(),
            psi_moderate: PsiTrigger {
                kind: StallKind::Some,
                stall: Duration::from_millis(150),
                window: Duration::from_secs(1),
            },
            psi_critical: PsiTrigger {
                kind: StallKind::Full,
                stall: Duration::from_millis(50),
                window: Duration::from_secs(1),
            },
            fall_after: Duration::from_secs(2),
            poll_interval: Duration::from_secs(1),
            systemd_level: Level::Moderate,
        }
    }
}

impl Config {
    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        self.thresholds.validate()?;
        for (name, t) in [
            ("psi_moderate", self.psi_moderate),
            ("psi_critical", self.psi_critical),
        ] {
            let w = t.window;
            if w < Duration::from_millis(500) || w > Duration::from_secs(10) {
                return Err(Error::Config(format!(
                    "{name}: PSI windows are 500 ms to 10 s, got {w:?}"
                )));
            }
            if t.stall.is_zero() || t.stall > w {
                return Err(Error::Config(format!(
                    "{name}: stall must be within (0, window], got {:?} of {w:?}",
                    t.stall
                )));
            }
        }
        if self.poll_interval < Duration::from_millis(10) {
            return Err(Error::Config(format!(
                "poll_interval must be at least 10 ms, got {:?}",
                self.poll_interval
            )));
        }
        if self.systemd_level == Level::None {
            return Err(Error::Config(
                "systemd_level must be Moderate or Critical".to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hysteresis_rises_at_marks_and_falls_under_recover() {
        let t = Thresholds::default();
        let lim = 1000;
        assert_eq!(t.level(899, lim, Level::None), Level::None);
        assert_eq!(t.level(900, lim, Level::None), Level::Moderate);
        assert_eq!(t.level(970, lim, Level::Moderate), Level::Critical);
        // Falling: between recover and moderate the level holds at Moderate.
        assert_eq!(t.level(880, lim, Level::Critical), Level::Moderate);
        assert_eq!(t.level(860, lim, Level::Moderate), Level::Moderate);
        assert_eq!(t.level(849, lim, Level::Moderate), Level::None);
        // ... but does not rise into it from None.
        assert_eq!(t.level(880, lim, Level::None), Level::None);
        assert_eq!(t.headroom(1000, lim), 150);
        assert_eq!(t.headroom(800, lim), 0);
    }

    #[test]
    fn unprivileged_trigger_keeps_the_ratio_on_a_2s_window() {
        let c = Config::default();
        let u = c.psi_moderate.unprivileged().unwrap();
        assert_eq!(u.window, Duration::from_secs(2));
        assert_eq!(u.stall, Duration::from_millis(300));
        assert_eq!(u.to_bytes(), b"some 300000 2000000\0");
        assert!(u.unprivileged().is_none());
    }

    #[test]
    fn bad_thresholds_are_rejected() {
        let t = Thresholds {
            moderate: 0.8,
            critical: 0.9,
            recover: 0.85,
        };
        assert!(matches!(t.validate(), Err(Error::Config(_))));
        assert!(Config::default().validate().is_ok());
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]
        #[test]
        fn level_is_monotonic_in_usage(a in 0u64..1 << 40, b in 0u64..1 << 40, lim in 1u64..1 << 40) {
            let t = Thresholds::default();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            for prev in [Level::None, Level::Moderate, Level::Critical] {
                prop_assert!(t.level(lo, lim, prev) <= t.level(hi, lim, prev));
            }
            prop_assert!(t.headroom(lo, lim) <= t.headroom(hi, lim));
        }
    }
}
