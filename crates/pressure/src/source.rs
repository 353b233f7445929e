//! The trait every source implements, and how the [`Monitor`](crate::Monitor) drives it.
//!
//! # Protocol
//!
//! 1. The monitor registers every fd of [`Source::watch_fds`] in its epoll set, once, right
//!    after the source is built (a source's fds never change afterwards).
//! 2. When one is ready, the monitor calls [`Source::on_ready`] with its index, which
//!    consumes the notification (reads an eventfd, notes a PSI event time, drains a FIFO).
//! 3. After any wake (fd or timer) it calls [`Source::read`] for the current reading, and
//!    compares its level with the last one.
//! 4. It arms its timer for [`Source::next_check`]: `None` means "only fds wake me", which
//!    is what makes an idle event-driven source cost nothing.
//!
//! An error from `on_ready` or `read` means the source died (its cgroup was removed, the
//! PSI trigger reported `POLLERR`, the socket closed): the monitor drops it, says so in
//! `describe()`, and falls back to the next rung of its ladder.

use std::fmt;
use std::os::fd::BorrowedFd;
use std::time::Instant;

use crate::{Error, Reading, SourceKind};

/// Which readiness of an fd means "look at me".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// `POLLPRI`: PSI triggers, kernfs files such as `memory.events`.
    Priority,
    /// `POLLIN`: eventfds, FIFOs, sockets.
    Readable,
}

/// An fd a source wants watched.
#[derive(Clone, Copy, Debug)]
pub struct WatchFd<'a> {
    /// The fd.
    pub fd: BorrowedFd<'a>,
    /// What to wait for.
    pub readiness: Readiness,
}

/// A memory-pressure source. See the [module documentation](self) for how it is driven.
pub trait Source: Send + fmt::Debug {
    /// What kind of source this is.
    fn kind(&self) -> SourceKind;

    /// One line: what is watched and how, including every rung refused on the way (for
    /// PSI: the trigger windows the kernel refused).
    fn describe(&self) -> String;

    /// The fds to watch; empty for purely polled sources.
    fn watch_fds(&self) -> Vec<WatchFd<'_>>;

    /// The fd at `index` of [`watch_fds`](Self::watch_fds) is ready; `error` is set when
    /// it reported `POLLERR` or `POLLHUP`.
    ///
    /// # Errors
    /// The source died.
    fn on_ready(&mut self, index: usize, error: bool, now: Instant) -> Result<(), Error>;

    /// The current reading. May read files; never blocks.
    ///
    /// # Errors
    /// The source died (files gone, unreadable, malformed).
    fn read(&mut self, now: Instant) -> Result<Reading, Error>;

    /// When [`read`](Self::read) must be called again even if no fd fires: the poll
    /// period, or the end of a level hold. `None`: only fds matter.
    fn next_check(&self, now: Instant) -> Option<Instant>;

    /// The monitor's fd was reported readable to an outer poller, yet our `epoll_wait`
    /// found nothing: an event that is consumed by polling (a PSI trigger) was taken by
    /// that outer poll. PSI sources count it as an event; the default does nothing.
    fn on_ghost_wake(&mut self, now: Instant) {
        let _ = now;
    }
}
