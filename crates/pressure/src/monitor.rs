//! The [`Monitor`]: one live source, picked from a ladder, behind one fd.
//!
//! # The ladder (auto-detection)
//!
//! Best first; each rung is tried until one opens, and every rejection is kept with its
//! reason for [`Monitor::describe`]:
//!
//! 1. **systemd**: `$MEMORY_PRESSURE_WATCH` (the service manager already chose a trigger
//!    for this unit; no configuration needed).
//! 2. **cgroup2 with a limit**: the process's own cgroup v2 (or its nearest ancestor with
//!    `memory.high`/`memory.max` set): byte headroom, `memory.events`, and the cgroup's PSI.
//! 3. **cgroup1**: the own v1 memory cgroup (or nearest limited ancestor): usage thresholds
//!    and `memory.pressure_level`.
//! 4. **cgroup2 PSI**: the own cgroup v2's `memory.pressure` without a limit (skipped when
//!    the own cgroup is the root: that file is the system's).
//! 5. **psi**: the system's `/proc/pressure/memory`.
//! 6. **meminfo**: `MemAvailable` against `MemTotal`, polled.
//! 7. **rss**: the process's resident size against a target, polled (only if a target was
//!    given: [`Builder::rss_target`]).
//!
//! A source named explicitly is tried alone; unless [`Builder::no_fallback`] is set, the
//! rungs ranked below it are kept as its fallbacks.
//!
//! # Waiting
//!
//! The monitor owns an epoll fd holding the source's fds and a timerfd armed for the
//! source's [`next_check`](crate::Source::next_check). [`Monitor::wait`] blocks in
//! `epoll_wait`; an event loop or an async runtime can instead watch the epoll fd
//! ([`AsFd`]) for readability and call [`Monitor::poll_ready`] when it fires. Either way
//! an idle event-driven source makes no system call at all.
//!
//! One subtlety for nested polling: the kernel consumes a PSI trigger's event when the
//! file is *polled* (`psi_trigger_poll` clears it), and an outer epoll checking whether
//! ours is readable polls the PSI fd. `poll_ready` may then find no event left. When it
//! finds none at all, it tells the source ([`Source::on_ghost_wake`]):
//! PSI sources count it as a Moderate event (some trigger fired; a Critical one shows in
//! the `full` counter at the next reading). So an async loop should call `poll_ready` only
//! after the runtime reported the fd readable, and clear its readiness only when
//! [`Monitor::is_ready`] says nothing is left:
//!
//! ```text
//! let mut guard = async_fd.readable_mut().await?;
//! let change = guard.get_inner_mut().poll_ready()?;
//! if !guard.get_inner().is_ready() { guard.clear_ready(); }
//! ```
//!
//! # Death and fallback
//!
//! When the live source fails (cgroup removed, `POLLERR`, unreadable file), the monitor
//! logs it (`tracing::warn!`), records "died: ..." for `describe()`, and opens the next
//! rung. `wait`/`poll_ready` return an error only when no rung is left.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
};

use crate::cgroup1::{self, Cgroup1Source};
use crate::cgroup2::{self, Cgroup2Source};
use crate::manual::{FifoSource, ManualHandle, ManualSource};
use crate::parse;
use crate::polled::{MemInfoSource, RssSource};
use crate::psi::PsiSource;
use crate::source::{Readiness, Source};
use crate::sys;
use crate::systemd::{SystemdEnv, SystemdSource};
use crate::{Config, Error, Level, Reading, SourceKind};

/// Which source to use.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum SourceSpec {
    /// The best one that works (see the [module documentation](self)).
    #[default]
    Auto,
    /// systemd's `$MEMORY_PRESSURE_WATCH`.
    Systemd,
    /// PSI: the system file, or the given PSI file.
    Psi(Option<PathBuf>),
    /// cgroup v2: the own cgroup (or its limited ancestor), or the given directory.
    Cgroup2(Option<PathBuf>),
    /// cgroup v1 memory: the own cgroup (or its limited ancestor), or the given directory.
    Cgroup1(Option<PathBuf>),
    /// `/proc/meminfo`.
    MemInfo,
    /// Resident size against this many bytes.
    Rss(u64),
    /// Level words from this FIFO.
    Fifo(PathBuf),
}

impl FromStr for SourceSpec {
    type Err = Error;

    /// `auto | systemd | psi[:<file>] | cgroup2[:<dir>] | cgroup1[:<dir>] | meminfo |
    /// rss:<bytes> | fifo:<path>`; `<bytes>` takes `K`/`M`/`G` suffixes (binary).
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::Spec {
            spec: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let path = |a: Option<&str>| -> Result<Option<PathBuf>, Error> {
            match a {
                None => Ok(None),
                Some("") => Err(bad("empty path after ':'")),
                Some(p) => Ok(Some(PathBuf::from(p))),
            }
        };
        let no_arg = |spec: SourceSpec| match arg {
            None => Ok(spec),
            Some(_) => Err(bad("this source takes no argument")),
        };
        match name {
            "auto" => no_arg(SourceSpec::Auto),
            "systemd" => no_arg(SourceSpec::Systemd),
            "meminfo" => no_arg(SourceSpec::MemInfo),
            "psi" => Ok(SourceSpec::Psi(path(arg)?)),
            "cgroup2" => Ok(SourceSpec::Cgroup2(path(arg)?)),
            "cgroup1" => Ok(SourceSpec::Cgroup1(path(arg)?)),
            "rss" => {
                let a = arg.ok_or_else(|| bad("rss needs a target: rss:<bytes>"))?;
                parse::bytes_with_suffix(a)
                    .map(SourceSpec::Rss)
                    .map_err(|e| bad(&format!("rss target: {e}")))
            }
            "fifo" => Ok(SourceSpec::Fifo(
                path(arg)?.ok_or_else(|| bad("fifo needs a path: fifo:<path>"))?,
            )),
            _ => Err(bad(
                "expected auto|systemd|psi[:file]|cgroup2[:dir]|cgroup1[:dir]|meminfo|rss:<bytes>|fifo:<path>",
            )),
        }
    }
}

/// A rung of the ladder.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Rung {
    Systemd,
    Cgroup2Limit(Option<PathBuf>),
    Cgroup1(Option<PathBuf>),
    Cgroup2Psi,
    Psi(Option<PathBuf>),
    MemInfo,
    Rss(Option<u64>),
    Fifo(PathBuf),
}

impl Rung {
    fn name(&self) -> &'static str {
        match self {
            Rung::Systemd => "systemd",
            Rung::Cgroup2Limit(_) => "cgroup2",
            Rung::Cgroup1(_) => "cgroup1",
            Rung::Cgroup2Psi => "cgroup2 PSI",
            Rung::Psi(_) => "psi",
            Rung::MemInfo => "meminfo",
            Rung::Rss(_) => "rss",
            Rung::Fifo(_) => "fifo",
        }
    }

    fn auto(rss: Option<u64>) -> Vec<Rung> {
        vec![
            Rung::Systemd,
            Rung::Cgroup2Limit(None),
            Rung::Cgroup1(None),
            Rung::Cgroup2Psi,
            Rung::Psi(None),
            Rung::MemInfo,
            Rung::Rss(rss),
        ]
    }

    fn open(&self, cfg: &Config) -> Result<Box<dyn Source>, Error> {
        Ok(match self {
            Rung::Systemd => Box::new(SystemdSource::from_env(cfg)?),
            Rung::Cgroup2Limit(dir) => {
                let dir = match dir {
                    Some(d) => d.clone(),
                    None => {
                        let own = sys::own_cgroups()?;
                        let (Some(d), Some(m)) = (own.v2, own.v2_mount) else {
                            return Err(Error::Unavailable("no cgroup2 mount".into()));
                        };
                        match cgroup2::limited_ancestor(&d, &m)? {
                            Some((d, _)) => d,
                            None => {
                                return Err(Error::Unavailable(format!(
                                    "{}: no memory limit (memory.high and memory.max unset here and above)",
                                    d.display()
                                )))
                            }
                        }
                    }
                };
                Box::new(Cgroup2Source::open(&dir, cfg)?)
            }
            Rung::Cgroup1(dir) => {
                let dir = match dir {
                    Some(d) => d.clone(),
                    None => {
                        let own = sys::own_cgroups()?;
                        let (Some(d), Some(m)) = (own.v1_memory, own.v1_memory_mount) else {
                            return Err(Error::Unavailable(
                                "no cgroup v1 memory controller mounted".into(),
                            ));
                        };
                        match cgroup1::limited_ancestor(&d, &m)? {
                            Some((d, _)) => d,
                            None => {
                                return Err(Error::Unavailable(format!(
                                    "{}: no memory limit (memory.limit_in_bytes unlimited here and above)",
                                    d.display()
                                )))
                            }
                        }
                    }
                };
                Box::new(Cgroup1Source::open(&dir, cfg)?)
            }
            Rung::Cgroup2Psi => {
                let own = sys::own_cgroups()?;
                let Some(d) = own.v2 else {
                    return Err(Error::Unavailable("no cgroup2 mount".into()));
                };
                // The true root has no cgroup.type (CFTYPE_NOT_ON_ROOT); a container's
                // namespaced root does, and its memory.pressure is its own.
                if !d.join("cgroup.type").exists() {
                    return Err(Error::Unavailable(format!(
                        "{}: own cgroup is the root (its memory.pressure is the system's)",
                        d.display()
                    )));
                }
                if d.join("memory.current").exists() {
                    Box::new(Cgroup2Source::open(&d, cfg)?)
                } else {
                    Box::new(PsiSource::open(&d.join("memory.pressure"), cfg)?)
                }
            }
            Rung::Psi(None) => Box::new(PsiSource::system(cfg)?),
            Rung::Psi(Some(p)) => Box::new(PsiSource::open(p, cfg)?),
            Rung::MemInfo => Box::new(MemInfoSource::open(cfg)?),
            Rung::Rss(Some(t)) => Box::new(RssSource::open(*t, cfg)?),
            Rung::Rss(None) => {
                return Err(Error::Unavailable(
                    "no target given (Builder::rss_target)".into(),
                ))
            }
            Rung::Fifo(p) => Box::new(FifoSource::open(p)?),
        })
    }
}

/// Configures and builds a [`Monitor`].
#[derive(Clone, Debug, Default)]
pub struct Builder {
    spec: SourceSpec,
    config: Config,
    rss_target: Option<u64>,
    no_fallback: bool,
}

impl Builder {
    /// Which source (default [`SourceSpec::Auto`]).
    pub fn source(mut self, spec: SourceSpec) -> Self {
        self.spec = spec;
        self
    }

    /// All tunables at once.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The byte target of the RSS rung (the last fallback); without it that rung is
    /// skipped.
    pub fn rss_target(mut self, bytes: u64) -> Self {
        self.rss_target = Some(bytes);
        self
    }

    /// A named source that dies is not replaced: `wait` returns its error.
    pub fn no_fallback(mut self) -> Self {
        self.no_fallback = true;
        self
    }

    /// Opens the first rung that works.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad configuration; [`Error::Env`] for a malformed
    /// `$MEMORY_PRESSURE_WATCH` / `$MEMORY_PRESSURE_WRITE` (a broken environment is
    /// reported, not silently skipped); the named source's own error when one was named
    /// and fails; [`Error::NoSource`] when no rung opens.
    pub fn build(self) -> Result<Monitor, Error> {
        self.config.validate()?;
        // A malformed systemd environment is an error whatever the source: it is a
        // broken deployment, and the user should hear of it.
        SystemdEnv::from_env()?;
        let auto = Rung::auto(self.rss_target);
        let (first, rest): (Vec<Rung>, Vec<Rung>) = match self.spec {
            SourceSpec::Auto => (auto, Vec::new()),
            spec => {
                let rung = match spec {
                    SourceSpec::Auto => unreachable!("handled above"),
                    SourceSpec::Systemd => Rung::Systemd,
                    SourceSpec::Psi(p) => Rung::Psi(p),
                    SourceSpec::Cgroup2(d) => Rung::Cgroup2Limit(d),
                    SourceSpec::Cgroup1(d) => Rung::Cgroup1(d),
                    SourceSpec::MemInfo => Rung::MemInfo,
                    SourceSpec::Rss(t) => Rung::Rss(Some(t)),
                    SourceSpec::Fifo(p) => Rung::Fifo(p),
                };
                let below = match auto.iter().position(|r| r.name() == rung.name()) {
                    Some(i) => auto[i + 1..].to_vec(),
                    None => auto, // FIFO: ranked above everything.
                };
                let below = if self.no_fallback { Vec::new() } else { below };
                (vec![rung], below)
            }
        };
        let mut m = Monitor::empty(self.config)?;
        let explicit = first.len() == 1;
        for (i, rung) in first.iter().enumerate() {
            match m.try_rung(rung) {
                Ok(()) => {
                    // Auto: the rungs below the live one are its fallbacks.
                    m.ladder = if explicit {
                        rest
                    } else {
                        first[i + 1..].to_vec()
                    };
                    return Ok(m);
                }
                Err(e) if explicit => return Err(e),
                Err(_) => {}
            }
        }
        Err(Error::NoSource(m.describe()))
    }
}

/// Watches memory pressure through the best available source.
///
/// # Example
///
/// ```
/// use shrinker_pressure::{Level, Monitor};
/// use std::time::Duration;
///
/// # fn main() -> Result<(), shrinker_pressure::Error> {
/// // A manual source: deterministic, no kernel involved.
/// let (mut monitor, handle) = Monitor::manual(Default::default())?;
/// handle.set_bytes(Level::Critical, 990, 1000, 140);
/// let reading = monitor.wait(Some(Duration::from_secs(5)))?.expect("a level change");
/// assert_eq!(reading.level, Level::Critical);
/// assert_eq!(reading.headroom, Some(140));
/// # Ok(()) }
/// ```
pub struct Monitor {
    epoll: OwnedFd,
    timer: OwnedFd,
    source: Option<Box<dyn Source>>,
    generation: u32,
    nfds: usize,
    ladder: Vec<Rung>,
    history: Vec<String>,
    current: Reading,
    config: Config,
    failovers: u64,
    wake: Arc<OwnedFd>,
}

const TIMER_TOKEN: u64 = 0;
const WAKE_TOKEN: u64 = u64::MAX;

/// Interrupts a [`Monitor::wait`] from another thread: the wait returns `Ok(None)`.
///
/// For a reclaimer thread that blocks in `wait(None)` and must stop when dropped. Cheap to
/// clone; `Send + Sync`.
#[derive(Clone, Debug)]
pub struct MonitorWaker {
    fd: Arc<OwnedFd>,
}

impl MonitorWaker {
    /// Makes the monitor's current or next `wait` return `Ok(None)` (once per call, or
    /// once for several calls made before the wait runs).
    pub fn wake(&self) {
        sys::signal_eventfd(&*self.fd);
    }
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("source", &self.source)
            .field("current", &self.current)
            .field("ladder", &self.ladder)
            .field("failovers", &self.failovers)
            .finish_non_exhaustive()
    }
}

impl AsRawFd for Monitor {
    /// The epoll fd, for APIs that want a raw fd (tokio's `AsyncFd`).
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

impl AsFd for Monitor {
    /// The epoll fd: readable when [`Monitor::poll_ready`] has something to process.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

impl Monitor {
    /// A builder (auto-detection, default configuration).
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The best available source with the default configuration.
    ///
    /// # Errors
    /// As [`Builder::build`].
    pub fn auto() -> Result<Self, Error> {
        Builder::default().build()
    }

    /// A monitor on a [`ManualSource`], and its handle.
    ///
    /// # Errors
    /// Out of fds, or a bad `config`.
    pub fn manual(config: Config) -> Result<(Self, ManualHandle), Error> {
        let (src, handle) = ManualSource::new()?;
        Ok((Self::from_source(Box::new(src), config)?, handle))
    }

    /// A monitor on a source of your own (no fallback).
    ///
    /// # Errors
    /// Out of fds, a bad `config`, or the source's first reading failed.
    pub fn from_source(source: Box<dyn Source>, config: Config) -> Result<Self, Error> {
        config.validate()?;
        let mut m = Self::empty(config)?;
        m.install(source)?;
        Ok(m)
    }

    fn empty(config: Config) -> Result<Self, Error> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)
            .map_err(|e| Error::sys("epoll_create1", e))?;
        let timer = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
        )
        .map_err(|e| Error::sys("timerfd_create", e))?;
        epoll::add(
            &epoll,
            &timer,
            epoll::EventData::new_u64(TIMER_TOKEN),
            epoll::EventFlags::IN,
        )
        .map_err(|e| Error::sys("epoll_ctl(timerfd)", e))?;
        let wake = Arc::new(sys::new_eventfd()?);
        epoll::add(
            &epoll,
            &*wake,
            epoll::EventData::new_u64(WAKE_TOKEN),
            epoll::EventFlags::IN,
        )
        .map_err(|e| Error::sys("epoll_ctl(eventfd)", e))?;
        Ok(Monitor {
            wake,
            epoll,
            timer,
            source: None,
            generation: 0,
            nfds: 0,
            ladder: Vec::new(),
            history: Vec::new(),
            current: Reading::new(Level::None, SourceKind::Manual),
            config,
            failovers: 0,
        })
    }

    fn try_rung(&mut self, rung: &Rung) -> Result<(), Error> {
        let opened = rung.open(&self.config).and_then(|s| self.install(s));
        if let Err(e) = &opened {
            tracing::debug!(rung = rung.name(), "pressure source rejected: {e}");
            self.history.push(format!("rejected {}: {e}", rung.name()));
        }
        opened
    }

    fn token(&self, index: usize) -> u64 {
        (u64::from(self.generation) << 32) | (index as u64 + 1)
    }

    /// Registers the source's fds, takes its first reading and arms the timer.
    fn install(&mut self, mut source: Box<dyn Source>) -> Result<(), Error> {
        self.generation = self.generation.wrapping_add(1);
        let now = Instant::now();
        let first = source.read(now)?;
        let fds = source.watch_fds();
        for (i, w) in fds.iter().enumerate() {
            let flags = match w.readiness {
                Readiness::Priority => epoll::EventFlags::PRI,
                Readiness::Readable => epoll::EventFlags::IN,
            };
            if let Err(e) = epoll::add(
                &self.epoll,
                w.fd,
                epoll::EventData::new_u64(self.token(i)),
                flags,
            ) {
                for w in &fds[..i] {
                    let _ = epoll::delete(&self.epoll, w.fd);
                }
                return Err(Error::sys("epoll_ctl(ADD)", e));
            }
        }
        self.nfds = fds.len();
        drop(fds);
        self.current = first;
        self.source = Some(source);
        self.arm_timer(now)?;
        Ok(())
    }

    fn uninstall(&mut self) {
        if let Some(s) = self.source.take() {
            for w in s.watch_fds() {
                let _ = epoll::delete(&self.epoll, w.fd);
            }
        }
        self.nfds = 0;
    }

    fn arm_timer(&mut self, now: Instant) -> Result<(), Error> {
        let next = self.source.as_ref().and_then(|s| s.next_check(now));
        let value = match next {
            // A zero it_value disarms: an overdue check fires after 1 ns instead.
            Some(t) => t
                .saturating_duration_since(now)
                .max(Duration::from_nanos(1)),
            None => Duration::ZERO,
        };
        let spec = Itimerspec {
            it_interval: rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: value
                .try_into()
                .map_err(|_| Error::Config("timer deadline out of range".into()))?,
        };
        timerfd_settime(&self.timer, TimerfdTimerFlags::empty(), &spec)
            .map_err(|e| Error::sys("timerfd_settime", e))?;
        Ok(())
    }

    /// The live source died: record it and open the next rung that works.
    fn fail_over(&mut self, err: Error) -> Result<(), Error> {
        let kind = self.current.source;
        tracing::warn!(source = %kind, "memory-pressure source died: {err}");
        self.history.push(format!("died {kind}: {err}"));
        self.uninstall();
        self.failovers += 1;
        while !self.ladder.is_empty() {
            let rung = self.ladder.remove(0);
            if self.try_rung(&rung).is_ok() {
                tracing::warn!(source = %self.current.source, "memory pressure now from the next rung");
                return Ok(());
            }
        }
        Err(Error::NoSource(self.describe()))
    }

    /// Processes what is ready in the epoll set (waiting at most `timeout`), reads the
    /// source, and returns the reading if the level changed.
    fn step(
        &mut self,
        timeout: Option<Duration>,
        read_anyway: bool,
        woken: &mut bool,
    ) -> Result<Option<Reading>, Error> {
        if self.source.is_none() {
            return Err(Error::NoSource(self.describe()));
        }
        let ts: Option<rustix::time::Timespec> = match timeout {
            Some(t) => Some(
                t.try_into()
                    .map_err(|_| Error::Config("wait timeout out of range".into()))?,
            ),
            None => None,
        };
        // On the stack: epoll::Event holds a pointer-sized union, which would make a
        // Monitor that kept a buffer of them !Send. Level-triggered: what does not fit
        // here is returned by the next call.
        let mut buf = [std::mem::MaybeUninit::<epoll::Event>::uninit(); 16];
        let events = match epoll::wait(&self.epoll, &mut buf[..], ts.as_ref()) {
            Ok((events, _)) => events,
            Err(rustix::io::Errno::INTR) => return Ok(None),
            Err(e) => return Err(Error::sys("epoll_wait", e)),
        };
        let now = Instant::now();
        let before = self.current.level;
        let mut any = read_anyway;
        let mut died = None;
        if events.is_empty() && read_anyway {
            if let Some(s) = self.source.as_mut() {
                s.on_ghost_wake(now);
            }
        }
        for ev in events.iter() {
            let data = ev.data.u64();
            let flags = ev.flags;
            any = true;
            if data == WAKE_TOKEN {
                let _ = sys::drain_eventfd(&*self.wake);
                *woken = true;
                continue;
            }
            if data == TIMER_TOKEN {
                let _ = sys::drain_eventfd(&self.timer); // timerfd reads like an eventfd.
                continue;
            }
            if (data >> 32) as u32 != self.generation {
                continue; // A previous source's fd.
            }
            let index = (data & 0xffff_ffff) as usize - 1;
            if index >= self.nfds {
                continue;
            }
            let error = flags.intersects(epoll::EventFlags::ERR | epoll::EventFlags::HUP);
            if let Some(s) = self.source.as_mut() {
                if let Err(e) = s.on_ready(index, error, now) {
                    died = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = died {
            self.fail_over(e)?;
        } else if any {
            let read = match self.source.as_mut() {
                Some(s) => s.read(now),
                None => return Err(Error::NoSource(self.describe())),
            };
            match read {
                Ok(r) => self.current = r,
                Err(e) => self.fail_over(e)?,
            }
            self.arm_timer(now)?;
        }
        Ok((self.current.level != before).then(|| self.current.clone()))
    }

    /// Blocks until the level changes or `timeout` passes (`None`: no timeout), and
    /// returns the reading that changed it; `Ok(None)` on timeout or when a
    /// [`MonitorWaker`] woke it.
    ///
    /// # Blocking
    /// In `epoll_wait`; an idle event-driven source makes no other system call.
    ///
    /// # Errors
    /// [`Error::NoSource`] when the source died and no rung of the ladder is left;
    /// [`Error::Sys`] if epoll itself fails.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Option<Reading>, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let mut woken = false;
            if let Some(r) = self.step(left, false, &mut woken)? {
                return Ok(Some(r));
            }
            if woken || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }

    /// Non-blocking: processes whatever is ready and returns the reading if the level
    /// changed. Call it when the fd of [`AsFd`] is readable (from epoll, tokio's
    /// `AsyncFd`, ...). It always reads the source, so a spurious wake costs one read.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub fn poll_ready(&mut self) -> Result<Option<Reading>, Error> {
        self.step(Some(Duration::ZERO), true, &mut false)
    }

    /// Whether the epoll fd is readable now (a zero-timeout `poll`): something is left
    /// for [`poll_ready`](Self::poll_ready). For runtimes that keep a readiness flag.
    pub fn is_ready(&self) -> bool {
        let mut fds = [rustix::event::PollFd::new(
            self,
            rustix::event::PollFlags::IN,
        )];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
    }

    /// A handle that interrupts [`wait`](Self::wait) from another thread.
    pub fn waker(&self) -> MonitorWaker {
        MonitorWaker {
            fd: Arc::clone(&self.wake),
        }
    }

    /// Reads the source now (for a reclaimer checking progress between passes). The
    /// reading becomes [`current`](Self::current); a level change seen here is not
    /// reported again by `wait`.
    ///
    /// # Errors
    /// As [`wait`](Self::wait) (a dead source fails over first).
    pub fn read(&mut self) -> Result<Reading, Error> {
        let now = Instant::now();
        let r = match self.source.as_mut() {
            Some(s) => s.read(now),
            None => return Err(Error::NoSource(self.describe())),
        };
        match r {
            Ok(r) => self.current = r,
            Err(e) => self.fail_over(e)?,
        }
        self.arm_timer(now)?;
        Ok(self.current.clone())
    }

    /// The last reading, without any system call.
    pub fn current(&self) -> &Reading {
        &self.current
    }

    /// The live source's kind.
    pub fn source_kind(&self) -> SourceKind {
        self.current.source
    }

    /// How many times the live source died and was replaced.
    pub fn failovers(&self) -> u64 {
        self.failovers
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Which source is live and how it watches, then why each better rung was rejected
    /// and which sources died, one per line.
    pub fn describe(&self) -> String {
        let mut s = match &self.source {
            Some(src) => format!("live: {}", src.describe()),
            None => "live: none".to_owned(),
        };
        for h in &self.history {
            s.push('\n');
            s.push_str(h);
        }
        if !self.ladder.is_empty() {
            let names: Vec<&str> = self.ladder.iter().map(Rung::name).collect();
            s.push_str(&format!("\nfallbacks: {}", names.join(" -> ")));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_specs_parse_and_bad_ones_name_the_problem() {
        assert_eq!("auto".parse::<SourceSpec>().unwrap(), SourceSpec::Auto);
        assert_eq!(
            "rss:64M".parse::<SourceSpec>().unwrap(),
            SourceSpec::Rss(64 << 20)
        );
        assert_eq!(
            "fifo:/tmp/x".parse::<SourceSpec>().unwrap(),
            SourceSpec::Fifo("/tmp/x".into())
        );
        assert_eq!(
            "cgroup1:/sys/fs/cgroup/memory/a"
                .parse::<SourceSpec>()
                .unwrap(),
            SourceSpec::Cgroup1(Some("/sys/fs/cgroup/memory/a".into()))
        );
        for bad in [
            "bogus",
            "rss",
            "rss:lots",
            "fifo",
            "fifo:",
            "meminfo:x",
            "rss:0",
        ] {
            let e = bad.parse::<SourceSpec>().unwrap_err();
            assert!(matches!(e, Error::Spec { .. }), "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)] // epoll, eventfd
    fn manual_levels_are_reported_once_each_with_bytes() {
        let (mut m, h) = Monitor::manual(Config::default()).unwrap();
        assert_eq!(m.current().level, Level::None);
        assert!(m.wait(Some(Duration::from_millis(10))).unwrap().is_none());
        h.set(Level::Moderate);
        let r = m.wait(Some(Duration::from_secs(5))).unwrap().unwrap();
        assert_eq!((r.level, r.source), (Level::Moderate, SourceKind::Manual));
        // Same level again: no change to report.
        h.set(Level::Moderate);
        assert!(m.wait(Some(Duration::from_millis(10))).unwrap().is_none());
        h.set_bytes(Level::Critical, 990, 1000, 140);
        let r = m.wait(Some(Duration::from_secs(5))).unwrap().unwrap();
        assert_eq!(
            (r.level, r.usage, r.limit, r.headroom),
            (Level::Critical, Some(990), Some(1000), Some(140))
        );
        assert_eq!(r.available(), Some(10));
        assert_eq!(m.current().level, Level::Critical);
        assert!(m.describe().starts_with("live: manual"));
    }

    #[test]
    fn monitor_and_handles_cross_threads() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<Monitor>();
        send_sync::<ManualHandle>();
        send_sync::<MonitorWaker>();
    }

    /// A source that counts ghost wakes (fd reported readable to an outer poller, nothing
    /// left for our epoll_wait).
    #[derive(Debug)]
    struct Ghosts(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Source for Ghosts {
        fn kind(&self) -> SourceKind {
            SourceKind::Psi
        }
        fn describe(&self) -> String {
            "ghosts".into()
        }
        fn watch_fds(&self) -> Vec<crate::WatchFd<'_>> {
            Vec::new()
        }
        fn on_ready(&mut self, _: usize, _: bool, _: Instant) -> Result<(), Error> {
            Ok(())
        }
        fn read(&mut self, now: Instant) -> Result<Reading, Error> {
            let n = self.0.load(std::sync::atomic::Ordering::Relaxed); // Relaxed: one thread.
            let mut r = Reading::new(
                if n > 0 { Level::Moderate } else { Level::None },
                SourceKind::Psi,
            );
            r.at = now;
            Ok(r)
        }
        fn on_ghost_wake(&mut self, _: Instant) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed); // Relaxed: one thread.
        }
        fn next_check(&self, _: Instant) -> Option<Instant> {
            None
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)] // epoll
    fn poll_ready_with_nothing_left_tells_the_source_of_a_ghost_wake() {
        let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut m = Monitor::from_source(
            Box::new(Ghosts(std::sync::Arc::clone(&n))),
            Config::default(),
        )
        .unwrap();
        assert!(!m.is_ready());
        // wait() timing out is not a ghost: nobody said the fd was readable.
        assert!(m.wait(Some(Duration::from_millis(5))).unwrap().is_none());
        assert_eq!(n.load(std::sync::atomic::Ordering::Relaxed), 0);
        let r = m
            .poll_ready()
            .unwrap()
            .expect("a PSI ghost wake counts as Moderate");
        assert_eq!(r.level, Level::Moderate);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // epoll, eventfd, threads
    fn waker_interrupts_a_wait_without_timeout() {
        let (mut m, _h) = Monitor::manual(Config::default()).unwrap();
        let w = m.waker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w.wake();
        });
        assert!(m.wait(None).unwrap().is_none());
        t.join().unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore)] // epoll, eventfd
    fn monitor_fd_is_readable_when_poll_ready_has_work() {
        let (mut m, h) = Monitor::manual(Config::default()).unwrap();
        let readable = |m: &Monitor| {
            let mut fds = [rustix::event::PollFd::new(m, rustix::event::PollFlags::IN)];
            let zero = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            rustix::event::poll(&mut fds, Some(&zero)).unwrap() == 1
        };
        assert!(!readable(&m));
        h.set(Level::Critical);
        assert!(readable(&m));
        assert_eq!(m.poll_ready().unwrap().unwrap().level, Level::Critical);
        assert!(!readable(&m), "processed: the fd is quiet again");
    }

    #[test]
    #[cfg_attr(miri, ignore)] // epoll, eventfd, files
    fn a_dead_source_falls_back_to_the_next_rung_and_describe_says_so() {
        let (src, h) = ManualSource::new().unwrap();
        let mut m = Monitor::from_source(Box::new(src), Config::default()).unwrap();
        m.ladder = vec![Rung::Rss(None), Rung::MemInfo];
        h.fail();
        // The level may or may not change (meminfo is real); the source must.
        let _ = m.wait(Some(Duration::from_millis(200))).unwrap();
        assert_eq!(m.source_kind(), SourceKind::MemInfo);
        assert_eq!(m.failovers(), 1);
        let d = m.describe();
        assert!(d.starts_with("live: meminfo"), "{d}");
        assert!(
            d.contains("died manual: manual: failed through ManualHandle::fail"),
            "{d}"
        );
        assert!(d.contains("rejected rss: no target given"), "{d}");
    }

    #[test]
    #[cfg_attr(miri, ignore)] // epoll, eventfd
    fn a_dead_source_without_fallback_is_an_error_naming_it() {
        let (mut m, h) = Monitor::manual(Config::default()).unwrap();
        h.fail();
        let e = m.wait(Some(Duration::from_secs(5))).unwrap_err();
        assert!(matches!(e, Error::NoSource(_)), "{e}");
        assert!(e.to_string().contains("died manual"), "{e}");
    }

    #[test]
    #[cfg_attr(miri, ignore)] // epoll, files
    fn rss_monitor_is_polled_on_the_timer() {
        let cfg = Config {
            poll_interval: Duration::from_millis(20),
            ..Config::default()
        };
        // A 4 KiB target: our RSS is far above it, so the first reading is Critical.
        let mut m = Monitor::builder()
            .source(SourceSpec::Rss(4096))
            .config(cfg)
            .build()
            .unwrap();
        assert_eq!(m.current().level, Level::Critical);
        assert!(m.current().headroom.unwrap() > 0);
        // The timer keeps reading: a wait with no change times out without error.
        assert!(m.wait(Some(Duration::from_millis(100))).unwrap().is_none());
    }
}
