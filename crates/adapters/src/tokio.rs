//! Pressure for async services: a `shrinker_pressure::Monitor` awaited on
//! its fd, and level changes fanned out through `tokio::sync::watch`.
//!
//! * [`AsyncMonitor`] wraps a [`Monitor`] in tokio's [`AsyncFd`]:
//!   [`changed`](AsyncMonitor::changed) is the async `Monitor::wait`. No
//!   thread: the monitor's epoll fd sits in tokio's reactor beside the
//!   service's sockets.
//! * [`watch_monitor`] spawns one task that awaits a monitor and publishes
//!   each new [`Reading`] in a `watch` channel: any number of tasks
//!   `changed().await` on clones of the receiver.
//! * [`watch_reclaimer`] does the same for a running
//!   [`Reclaimer`]'s level: one forwarding thread per reclaimer (its
//!   `subscribe` channel is a blocking one), however many listeners.
//!
//! # Examples
//!
//! ```
//! use shrinker_adapters::tokio::watch_monitor;
//! use shrinker_pressure::{Config, Level, Monitor};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_io().build()?.block_on(async {
//! let (monitor, handle) = Monitor::manual(Config::default())?;
//! let (mut levels, _task) = watch_monitor(monitor)?;
//! handle.set(Level::Critical);
//! levels.changed().await?;
//! assert_eq!(levels.borrow().level, Level::Critical);
//! # Ok::<(), Box<dyn std::error::Error>>(()) })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io;
use std::os::fd::AsFd;

use shrinker::reclaim::Reclaimer;
use shrinker_pressure::{Level, Monitor, Reading};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why waiting for a monitor failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The reactor failed to watch the monitor's fd.
    #[error("waiting for the pressure monitor's fd: {0}")]
    Io(#[from] io::Error),
    /// The monitor failed (its source died and no fallback was left).
    #[error("pressure monitor: {0}")]
    Pressure(#[from] shrinker_pressure::Error),
}

/// A [`Monitor`] awaited through tokio's reactor.
///
/// # Examples
///
/// ```
/// use shrinker_adapters::tokio::AsyncMonitor;
/// use shrinker_pressure::{Config, Level, Monitor};
///
/// # tokio::runtime::Builder::new_current_thread().enable_io().build()?.block_on(async {
/// let (monitor, handle) = Monitor::manual(Config::default())?;
/// let mut monitor = AsyncMonitor::new(monitor)?;
/// handle.set(Level::Moderate);
/// assert_eq!(monitor.changed().await?.level, Level::Moderate);
/// # Ok::<(), Box<dyn std::error::Error>>(()) })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AsyncMonitor {
    fd: AsyncFd<Monitor>,
}

impl AsyncMonitor {
    /// Register `monitor`'s fd with the current runtime's reactor.
    ///
    /// # Errors
    ///
    /// As [`AsyncFd::register_with_interest`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or in one built without IO
    /// (`enable_io`/`enable_all`), as [`AsyncFd::register_with_interest`].
    pub fn new(monitor: Monitor) -> io::Result<Self> {
        // SAFETY: `register` needs the fd `monitor.as_raw_fd()` returns to
        // stay open and the same for as long as the `AsyncFd` owns the
        // monitor. It is the monitor's epoll fd, an `OwnedFd` it creates
        // once at construction and closes only when dropped (a failover
        // swaps the sources registered *in* it, never the epoll fd
        // itself); the `AsyncFd` owns the monitor, and this type hands out
        // only `&Monitor` (and the monitor itself, through `into_inner`,
        // which deregisters first), so nothing can replace or close it.
        let fd = unsafe { AsyncFd::register_with_interest(monitor, Interest::READABLE) };
        Ok(AsyncMonitor {
            fd: fd.map_err(io::Error::from)?,
        })
    }

    /// Wait until the level changes; the reading that changed it.
    ///
    /// Cancel-safe: a reading is taken from the monitor only in the poll
    /// that returns it.
    ///
    /// # Errors
    ///
    /// [`WatchError::Io`] if the reactor fails;
    /// [`WatchError::Pressure`] as `Monitor::poll_ready`.
    pub async fn changed(&mut self) -> Result<Reading, WatchError> {
        loop {
            let mut ready = self.fd.readable_mut().await?;
            let reading = ready.get_inner_mut().poll_ready()?;
            // `poll_ready` handles a bounded number of events per call, and
            // the reactor reports the fd edge-triggered: clear tokio's
            // readiness only if the epoll fd has nothing left, else the
            // rest would wait for the next edge.
            if !still_readable(ready.get_inner())? {
                ready.clear_ready();
            }
            if let Some(r) = reading {
                return Ok(r);
            }
        }
    }

    /// The last reading, without any system call.
    #[must_use]
    pub fn current(&self) -> &Reading {
        self.fd.get_ref().current()
    }

    /// The monitor.
    #[must_use]
    pub fn get_ref(&self) -> &Monitor {
        self.fd.get_ref()
    }

    /// Deregister from the reactor and give the monitor back.
    #[must_use]
    pub fn into_inner(self) -> Monitor {
        self.fd.into_inner()
    }
}

/// Whether `fd` is readable now (a zero-timeout `poll`).
fn still_readable(fd: &impl AsFd) -> io::Result<bool> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&zero)) {
        Ok(n) => Ok(n > 0 && fds[0].revents().contains(PollFlags::IN)),
        Err(rustix::io::Errno::INTR) => Ok(true), // look again
        Err(e) => Err(e.into()),
    }
}

/// The task behind [`watch_monitor`]: ends with `Ok` once every receiver
/// is gone, or with the monitor's error.
pub type WatchTask = JoinHandle<Result<(), WatchError>>;

/// Publish `monitor`'s readings in a `watch` channel from a spawned task.
///
/// The receiver starts with the monitor's current reading; the task ends
/// when every receiver is dropped (returning `Ok`) or the monitor fails
/// (returning the error).
///
/// # Errors
///
/// As [`AsyncMonitor::new`].
///
/// # Panics
///
/// Outside a tokio runtime with IO enabled.
pub fn watch_monitor(monitor: Monitor) -> io::Result<(watch::Receiver<Reading>, WatchTask)> {
    let mut monitor = AsyncMonitor::new(monitor)?;
    let (tx, rx) = watch::channel(monitor.current().clone());
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                r = monitor.changed() => {
                    if tx.send(r?).is_err() {
                        return Ok(());
                    }
                }
                () = tx.closed() => return Ok(()),
            }
        }
    });
    Ok((rx, task))
}

/// Publish a running reclaimer's level in a `watch` channel (changes
/// only; the round results in between are left out: use
/// [`Reclaimer::subscribe`] for them).
///
/// Needs no runtime: a thread (named `shrinker-level-watch`) forwards the
/// reclaimer's blocking subscription into the channel. It ends when the
/// reclaimer is dropped, or at the first event after every receiver is
/// dropped.
///
/// # Errors
///
/// The thread could not be spawned.
pub fn watch_reclaimer(reclaimer: &Reclaimer) -> io::Result<watch::Receiver<Level>> {
    let events = reclaimer.subscribe();
    let (tx, rx) = watch::channel(reclaimer.level_watch().level());
    std::thread::Builder::new()
        .name("shrinker-level-watch".into())
        .spawn(move || {
            for ev in events {
                if tx.is_closed() {
                    return;
                }
                tx.send_if_modified(|level| {
                    let changed = *level != ev.level;
                    *level = ev.level;
                    changed
                });
            }
        })?;
    Ok(rx)
}
