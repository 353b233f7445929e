//! systemd's memory-pressure protocol: `$MEMORY_PRESSURE_WATCH` and `$MEMORY_PRESSURE_WRITE`.
//!
//! # Protocol (systemd `docs/MEMORY_PRESSURE.md`, `sd_event_add_memory_pressure(3)`)
//!
//! A unit with `MemoryPressureWatch=` gets two variables:
//!
//! - `$MEMORY_PRESSURE_WATCH`: an absolute, normalized path to watch, usually the unit
//!   cgroup's `memory.pressure`; it may also be a FIFO, a character device or an `AF_UNIX`
//!   socket. Empty or `/dev/null` means "explicitly disabled".
//! - `$MEMORY_PRESSURE_WRITE` (optional): base64 of bytes to write after opening, the PSI
//!   trigger (systemd encodes `"some 200000 2000000"` with its terminating NUL).
//!
//! Then, as sd-event does it: a regular (procfs/cgroupfs) file is opened read-write when
//! there is something to write, and watched for `POLLPRI`; a FIFO or character device is
//! watched for `POLLIN` and what is read is discarded; a socket is connected
//! (`SOCK_STREAM`), written to, watched for `POLLIN`, and its end means the source died.
//!
//! Two choices of ours, documented:
//!
//! - When only the path is given and it is a PSI file, systemd's default trigger is written
//!   (`some 200000 2000000`: "200 ms per 2 s, the window the kernel allows unprivileged,
//!   also in the future"), since a PSI file with no trigger never raises `POLLPRI`.
//!   (sd-event writes nothing in that case.)
//! - FIFOs are opened read-write so that a writer closing its end does not make the fd
//!   report end-of-file forever; nothing is written into a FIFO (we would read it back).
//!
//! The protocol has a single degree of pressure: an event means
//! [`Config::systemd_level`] (default Moderate), held for
//! [`Config::fall_after`] after the last event.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::source::{Readiness, Source, WatchFd};
use crate::{Config, Error, Level, Reading, SourceKind};

/// The watch variable.
pub const WATCH_VAR: &str = "MEMORY_PRESSURE_WATCH";
/// The write variable.
pub const WRITE_VAR: &str = "MEMORY_PRESSURE_WRITE";
/// systemd's default trigger (`MEMORY_PRESSURE_DEFAULT_*` in `src/basic/psi-util.h`), with
/// its NUL.
pub const DEFAULT_TRIGGER: &[u8] = b"some 200000 2000000\0";

/// What the environment says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SystemdEnv {
    /// `$MEMORY_PRESSURE_WATCH` is not set: not started by systemd with a watch.
    NotSet,
    /// Set to `/dev/null` or empty: explicitly disabled.
    Disabled,
    /// Watch `path`, writing `write` (decoded) after opening, if given.
    Watch {
        /// The path.
        path: PathBuf,
        /// The decoded `$MEMORY_PRESSURE_WRITE`.
        write: Option<Vec<u8>>,
    },
}

impl SystemdEnv {
    /// Reads the two variables of this process.
    ///
    /// # Errors
    /// [`Error::Env`] naming the variable: a relative or non-normalized path, bad base64.
    pub fn from_env() -> Result<Self, Error> {
        Self::parse(
            std::env::var_os(WATCH_VAR).as_deref(),
            std::env::var_os(WRITE_VAR).as_deref(),
        )
    }

    /// Interprets the two variables' values (pure; `None` = unset).
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn parse(
        watch: Option<&std::ffi::OsStr>,
        write: Option<&std::ffi::OsStr>,
    ) -> Result<Self, Error> {
        let Some(watch) = watch else {
            return Ok(SystemdEnv::NotSet);
        };
        if watch.is_empty() || watch.as_bytes() == b"/dev/null" {
            return Ok(SystemdEnv::Disabled);
        }
        let path = PathBuf::from(OsString::from(watch));
        // Absolute and normalized as systemd's path_is_normalized(): no empty, "." or
        // ".." segment, no trailing slash.
        let b = watch.as_bytes();
        let normalized = b.first() == Some(&b'/')
            && b[1..]
                .split(|&c| c == b'/')
                .all(|seg| !seg.is_empty() && seg != b"." && seg != b"..");
        if !normalized {
            return Err(Error::Env {
                var: WATCH_VAR,
                reason: format!(
                    "{:?} is not an absolute, normalized path",
                    path.display().to_string()
                ),
            });
        }
        let write = match write {
            None => None,
            Some(w) if w.is_empty() => None,
            Some(w) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(w.as_bytes())
                    .map_err(|e| Error::Env {
                        var: WRITE_VAR,
                        reason: format!("not base64: {e}"),
                    })?,
            ),
        };
        Ok(SystemdEnv::Watch { path, write })
    }
}

#[derive(Debug)]
enum Endpoint {
    Psi(File),
    Stream(File),
    Socket(UnixStream),
}

/// The systemd protocol source. See the [module documentation](self).
#[derive(Debug)]
pub struct SystemdSource {
    path: PathBuf,
    endpoint: Endpoint,
    wrote: Option<String>,
    level: Level,
    fall_after: Duration,
    last_event: Option<Instant>,
}

fn open_rw_nonblock(path: &Path, write: bool) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| Error::io(path, "opening", e))
}

fn printable(b: &[u8]) -> String {
    String::from_utf8_lossy(b.strip_suffix(b"\0").unwrap_or(b)).into_owned()
}

impl SystemdSource {
    /// From this process's environment.
    ///
    /// # Errors
    /// [`Error::Env`] for a malformed variable; [`Error::Unavailable`] if unset or
    /// disabled; [`Error::Io`] naming the path if it cannot be opened, connected or written.
    pub fn from_env(cfg: &Config) -> Result<Self, Error> {
        match SystemdEnv::from_env()? {
            SystemdEnv::NotSet => Err(Error::Unavailable(format!("${WATCH_VAR} is not set"))),
            SystemdEnv::Disabled => Err(Error::Unavailable(format!(
                "disabled by ${WATCH_VAR}=/dev/null"
            ))),
            SystemdEnv::Watch { path, write } => Self::open(&path, write.as_deref(), cfg),
        }
    }

    /// Watches `path` as the protocol says, writing `write` if given.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn open(path: &Path, write: Option<&[u8]>, cfg: &Config) -> Result<Self, Error> {
        cfg.validate()?;
        let md = std::fs::metadata(path).map_err(|e| Error::io(path, "examining", e))?;
        let ft = md.file_type();
        let mut wrote = None;
        let endpoint = if ft.is_socket() {
            let mut s = UnixStream::connect(path).map_err(|e| Error::io(path, "connecting", e))?;
            if let Some(w) = write {
                s.write_all(w).map_err(|e| Error::io(path, "writing", e))?;
                wrote = Some(format!("`{}`", printable(w)));
            }
            s.set_nonblocking(true)
                .map_err(|e| Error::io(path, "setting O_NONBLOCK", e))?;
            Endpoint::Socket(s)
        } else if ft.is_fifo() {
            Endpoint::Stream(open_rw_nonblock(path, true)?)
        } else if ft.is_char_device() {
            let mut f = open_rw_nonblock(path, write.is_some())?;
            if let Some(w) = write {
                f.write_all(w).map_err(|e| Error::io(path, "writing", e))?;
                wrote = Some(format!("`{}`", printable(w)));
            }
            Endpoint::Stream(f)
        } else if ft.is_file() {
            let w = write.unwrap_or(DEFAULT_TRIGGER);
            let mut f = open_rw_nonblock(path, true)?;
            let n = f
                .write(w)
                .map_err(|e| Error::io(path, "writing trigger", e))?;
            if n != w.len() {
                return Err(Error::io(
                    path,
                    "writing trigger",
                    std::io::Error::new(std::io::ErrorKind::WriteZero, "short write"),
                ));
            }
            wrote = Some(if write.is_some() {
                format!("`{}`", printable(w))
            } else {
                format!("`{}` (systemd's default)", printable(w))
            });
            Endpoint::Psi(f)
        } else {
            return Err(Error::Unavailable(format!(
                "systemd {}: neither a PSI file, a FIFO, a character device nor a socket",
                path.display()
            )));
        };
        Ok(SystemdSource {
            path: path.to_owned(),
            endpoint,
            wrote,
            level: cfg.systemd_level,
            fall_after: cfg.fall_after,
            last_event: None,
        })
    }
}

impl Source for SystemdSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Systemd
    }

    fn describe(&self) -> String {
        let how = match &self.endpoint {
            Endpoint::Psi(_) => "PSI file, POLLPRI",
            Endpoint::Stream(_) => "FIFO/character device, POLLIN",
            Endpoint::Socket(_) => "AF_UNIX socket, POLLIN",
        };
        let mut s = format!(
            "systemd ${WATCH_VAR}={} ({how}); an event means {} for {:?}",
            self.path.display(),
            self.level,
            self.fall_after
        );
        if let Some(w) = &self.wrote {
            s.push_str(&format!("; wrote {w}"));
        }
        s
    }

    fn watch_fds(&self) -> Vec<WatchFd<'_>> {
        let (fd, readiness) = match &self.endpoint {
            Endpoint::Psi(f) => (f.as_fd(), Readiness::Priority),
            Endpoint::Stream(f) => (f.as_fd(), Readiness::Readable),
            Endpoint::Socket(s) => (s.as_fd(), Readiness::Readable),
        };
        vec![WatchFd { fd, readiness }]
    }

    fn on_ready(&mut self, _: usize, error: bool, now: Instant) -> Result<(), Error> {
        let gone = |why| Error::gone(&self.path, why);
        let mut buf = [0u8; 512];
        match &mut self.endpoint {
            Endpoint::Psi(_) => {
                if error {
                    return Err(gone("POLLERR: the PSI trigger is gone"));
                }
            }
            Endpoint::Stream(f) => loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::io(&self.path, "reading", e)),
                }
            },
            Endpoint::Socket(s) => loop {
                match s.read(&mut buf) {
                    Ok(0) => return Err(gone("the peer closed the socket")),
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::io(&self.path, "reading", e)),
                }
            },
        }
        self.last_event = Some(now);
        Ok(())
    }

    fn read(&mut self, now: Instant) -> Result<Reading, Error> {
        let held = self
            .last_event
            .is_some_and(|t| now.saturating_duration_since(t) < self.fall_after);
        let mut r = Reading::new(
            if held { self.level } else { Level::None },
            SourceKind::Systemd,
        );
        r.at = now;
        Ok(r)
    }

    fn on_ghost_wake(&mut self, now: Instant) {
        // Only a PSI endpoint's event is consumed by polling; FIFO and socket data stay.
        if matches!(self.endpoint, Endpoint::Psi(_)) {
            self.last_event = Some(now);
        }
    }

    fn next_check(&self, now: Instant) -> Option<Instant> {
        self.last_event
            .map(|t| t + self.fall_after)
            .filter(|end| *end > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn env_parsing() {
        assert_eq!(SystemdEnv::parse(None, None).unwrap(), SystemdEnv::NotSet);
        assert_eq!(
            SystemdEnv::parse(Some(OsStr::new("/dev/null")), None).unwrap(),
            SystemdEnv::Disabled
        );
        assert_eq!(
            SystemdEnv::parse(Some(OsStr::new("")), None).unwrap(),
            SystemdEnv::Disabled
        );
        let w = SystemdEnv::parse(
            Some(OsStr::new(
                "/sys/fs/cgroup/system.slice/x.service/memory.pressure",
            )),
            Some(OsStr::new("c29tZSAyMDAwMDAgMjAwMDAwMAA=")),
        )
        .unwrap();
        assert_eq!(
            w,
            SystemdEnv::Watch {
                path: "/sys/fs/cgroup/system.slice/x.service/memory.pressure".into(),
                write: Some(DEFAULT_TRIGGER.to_vec()),
            }
        );
        for bad in ["relative/path", "/a/../b", "/a//b", "/a/./b", "/a/"] {
            let e = SystemdEnv::parse(Some(OsStr::new(bad)), None).unwrap_err();
            assert!(matches!(e, Error::Env { var: WATCH_VAR, .. }), "{bad}: {e}");
        }
        let e = SystemdEnv::parse(Some(OsStr::new("/x")), Some(OsStr::new("!!not base64")))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("$MEMORY_PRESSURE_WRITE: not base64"),
            "{e}"
        );
    }
}
