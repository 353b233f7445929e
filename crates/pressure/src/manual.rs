//! Sources with no kernel behind them: a [`ManualHandle`] a program or a test sets, and a
//! FIFO of level words for scripts and demos.
//!
//! Both are exact: the level given is the level reported, with no hysteresis and no hold,
//! so a test can drive a monitor (and whatever sits on it) step by step.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::parse;
use crate::source::{Readiness, Source, WatchFd};
use crate::sys;
use crate::{Error, Level, Reading, SourceKind};

#[derive(Debug)]
struct Shared {
    state: Mutex<ManualState>,
    wake: OwnedFd,
}

#[derive(Clone, Copy, Debug, Default)]
struct ManualState {
    level: Level,
    usage: Option<u64>,
    limit: Option<u64>,
    headroom: Option<u64>,
    /// Set by [`ManualHandle::fail`]: the source reports itself dead.
    dead: bool,
}

/// Sets the level of its [`ManualSource`] from any thread; cheap to clone.
#[derive(Clone, Debug)]
pub struct ManualHandle {
    shared: Arc<Shared>,
}

impl ManualHandle {
    fn update(&self, f: impl FnOnce(&mut ManualState)) {
        {
            let mut s = self
                .shared
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            f(&mut s);
        }
        sys::signal_eventfd(&self.shared.wake);
    }

    /// Sets the level; usage, limit and headroom become unknown.
    pub fn set(&self, level: Level) {
        self.update(|s| {
            *s = ManualState {
                level,
                ..ManualState::default()
            }
        });
    }

    /// Sets the level with byte figures (`headroom`: bytes to free to get back under the
    /// stop mark).
    pub fn set_bytes(&self, level: Level, usage: u64, limit: u64, headroom: u64) {
        self.update(|s| {
            *s = ManualState {
                level,
                usage: Some(usage),
                limit: Some(limit),
                headroom: Some(headroom),
                dead: false,
            }
        });
    }

    /// Makes the source report itself dead at its next reading (for tests of fallback).
    pub fn fail(&self) {
        self.update(|s| s.dead = true);
    }
}

/// A source set by hand through its [`ManualHandle`].
#[derive(Debug)]
pub struct ManualSource {
    shared: Arc<Shared>,
}

impl ManualSource {
    /// A source at `Level::None` and its handle.
    ///
    /// # Errors
    /// `eventfd` failed (out of fds).
    pub fn new() -> Result<(Self, ManualHandle), Error> {
        let shared = Arc::new(Shared {
            state: Mutex::new(ManualState::default()),
            wake: sys::new_eventfd()?,
        });
        Ok((
            ManualSource {
                shared: Arc::clone(&shared),
            },
            ManualHandle { shared },
        ))
    }
}

impl Source for ManualSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Manual
    }

    fn describe(&self) -> String {
        "manual: level set through a ManualHandle".to_owned()
    }

    fn watch_fds(&self) -> Vec<WatchFd<'_>> {
        vec![WatchFd {
            fd: self.shared.wake.as_fd(),
            readiness: Readiness::Readable,
        }]
    }

    fn on_ready(&mut self, _: usize, _: bool, _: Instant) -> Result<(), Error> {
        sys::drain_eventfd(&self.shared.wake).map_err(|e| Error::sys("reading eventfd", e))?;
        Ok(())
    }

    fn read(&mut self, now: Instant) -> Result<Reading, Error> {
        let s = *self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if s.dead {
            return Err(Error::Unavailable(
                "manual: failed through ManualHandle::fail".to_owned(),
            ));
        }
        Ok(Reading {
            level: s.level,
            source: SourceKind::Manual,
            usage: s.usage,
            limit: s.limit,
            headroom: s.headroom,
            stall: None,
            at: now,
        })
    }

    fn next_check(&self, _: Instant) -> Option<Instant> {
        None
    }
}

/// Level words read from a FIFO, one per line: `none|moderate|critical`, optionally
/// followed by `usage=<bytes> limit=<bytes> headroom=<bytes>`.
///
/// The FIFO is opened read-write, so that it never reports end-of-file (and never spins)
/// when a writer closes it: `echo critical > fifo` works as often as wanted. A malformed
/// line is logged (`tracing::warn!`) and counted, never fatal.
#[derive(Debug)]
pub struct FifoSource {
    path: PathBuf,
    file: File,
    partial: Vec<u8>,
    last: parse::FifoLine,
    bad_lines: u64,
}

impl FifoSource {
    /// Opens the FIFO at `path` (it must exist and be a FIFO).
    ///
    /// # Errors
    /// Missing, not a FIFO, or not openable.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let md = std::fs::metadata(path).map_err(|e| Error::io(path, "examining", e))?;
        if !md.file_type().is_fifo() {
            return Err(Error::Unavailable(format!(
                "fifo {}: not a FIFO (create one with mkfifo)",
                path.display()
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(path)
            .map_err(|e| Error::io(path, "opening", e))?;
        Ok(FifoSource {
            path: path.to_owned(),
            file,
            partial: Vec::new(),
            last: parse::FifoLine {
                level: Level::None,
                usage: None,
                limit: None,
                headroom: None,
            },
            bad_lines: 0,
        })
    }

    /// Lines rejected so far.
    pub fn bad_lines(&self) -> u64 {
        self.bad_lines
    }

    fn drain(&mut self) -> Result<(), Error> {
        let mut buf = [0u8; 4096];
        loop {
            match (&self.file).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.partial.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(&self.path, "reading", e)),
            }
            if self.partial.len() > 1 << 16 {
                // A writer that never sends a newline: drop what we have.
                self.partial.clear();
                self.bad_lines += 1;
            }
        }
        while let Some(nl) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            let line = &line[..line.len() - 1];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match parse::fifo_line(line) {
                Ok(l) => self.last = l,
                Err(e) => {
                    self.bad_lines += 1;
                    tracing::warn!(path = %self.path.display(), "ignoring FIFO line: {e}");
                }
            }
        }
        Ok(())
    }
}

impl Source for FifoSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Fifo
    }

    fn describe(&self) -> String {
        format!(
            "fifo {}: one level word per line (none|moderate|critical [usage=B limit=B headroom=B])",
            self.path.display()
        )
    }

    fn watch_fds(&self) -> Vec<WatchFd<'_>> {
        vec![WatchFd {
            fd: self.file.as_fd(),
            readiness: Readiness::Readable,
        }]
    }

    fn on_ready(&mut self, _: usize, _: bool, _: Instant) -> Result<(), Error> {
        self.drain()
    }

    fn read(&mut self, now: Instant) -> Result<Reading, Error> {
        self.drain()?;
        let l = self.last;
        Ok(Reading {
            level: l.level,
            source: SourceKind::Fifo,
            usage: l.usage,
            limit: l.limit,
            headroom: l.headroom,
            stall: None,
            at: now,
        })
    }

    fn next_check(&self, _: Instant) -> Option<Instant> {
        None
    }
}
