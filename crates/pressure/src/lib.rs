//! Every Linux memory-pressure signal, typed, event-driven, auto-detected.
//!
//! A service that keeps caches is killed by the OOM killer because nothing tells it memory
//! is short. The kernel has many ways to say so, each with its own file format, privilege
//! rule and failure mode; this crate turns them all into one model: a [`Reading`] with a
//! [`Level`] (`None`, `Moderate`, `Critical`) and, where the source knows them, usage,
//! limit and *headroom* — the bytes to free to get back under the stop mark.
//!
//! # Sources
//!
//! | source | type | signal |
//! |---|---|---|
//! | systemd protocol | [`SystemdSource`] | `$MEMORY_PRESSURE_WATCH` / `$MEMORY_PRESSURE_WRITE` |
//! | cgroup v2 | [`Cgroup2Source`] | `memory.current` vs `memory.high`/`memory.max`, `memory.events`, `memory.pressure` |
//! | cgroup v1 | [`Cgroup1Source`] | usage thresholds via `cgroup.event_control`, `memory.pressure_level` |
//! | PSI | [`PsiSource`] | triggers on `/proc/pressure/memory`, with a fallback ladder |
//! | MemAvailable | [`MemInfoSource`] | `/proc/meminfo`, polled |
//! | RSS target | [`RssSource`] | `/proc/self/statm` vs a byte target, polled |
//! | manual / FIFO | [`ManualSource`], [`FifoSource`] | set by hand, or level words from a FIFO |
//!
//! A [`Monitor`] picks the best live one (see [`monitor`] for the ladder), explains its
//! choice in [`Monitor::describe`], waits on events rather than spinning
//! ([`Monitor::wait`], or its fd through [`AsFd`](std::os::fd::AsFd) for an event loop),
//! and falls back to the next rung when its source dies.
//!
//! ```no_run
//! use shrinker_pressure::{Level, Monitor};
//!
//! # fn main() -> Result<(), shrinker_pressure::Error> {
//! let mut monitor = Monitor::auto()?;
//! eprintln!("{}", monitor.describe());
//! loop {
//!     if let Some(r) = monitor.wait(None)? {
//!         if r.level >= Level::Moderate {
//!             // Free r.headroom bytes if known, else something proportional.
//!         }
//!     }
//! }
//! # }
//! ```
//!
//! # Bad input
//!
//! Nothing here panics on what the system hands it: every parser ([`parse`]) returns a
//! value or a [`ParseError`], and every failure becomes an [`Error`] naming the path or
//! the variable and the cause (`"/sys/fs/cgroup/x/memory.pressure: EACCES writing
//! trigger"`).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod cgroup1;
pub mod cgroup2;
mod error;
pub mod level;
pub mod manual;
pub mod monitor;
pub mod parse;
pub mod polled;
pub mod psi;
pub mod source;
mod sys;
pub mod systemd;

pub use cgroup1::Cgroup1Source;
pub use cgroup2::Cgroup2Source;
pub use error::{Error, ParseError};
pub use level::{Config, Level, PsiTrigger, Reading, SourceKind, Stall, StallKind, Thresholds};
pub use manual::{FifoSource, ManualHandle, ManualSource};
pub use monitor::{Builder, Monitor, MonitorWaker, SourceSpec};
pub use polled::{MemInfoSource, RssSource};
pub use psi::PsiSource;
pub use source::{Readiness, Source, WatchFd};
pub use sys::{own_cgroups, OwnCgroups};
pub use systemd::{SystemdEnv, SystemdSource};

/// Property tests: few cases under Miri, and no failure files (Miri has no `getcwd`).
#[cfg(test)]
pub(crate) fn proptest_config() -> proptest::prelude::ProptestConfig {
    proptest::prelude::ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    }
}
