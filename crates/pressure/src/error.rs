//! Typed errors: every one names the path or the variable it is about, and the cause.
//!
//! Nothing in this crate panics on what the kernel, the file system or the environment hands
//! it: a truncated file, a file that vanished with its cgroup, `EACCES`, a malformed
//! environment variable all end here, as a value the caller can print or match on.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on a file failed: `op` says what was being done
    /// (`"opening"`, `"reading"`, `"writing trigger"`, …).
    #[error("{}: {} {}", path.display(), errno_name(source), op)]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file's contents could not be understood.
    #[error("{}: cannot parse: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: ParseError,
    },
    /// An environment variable is set to something unusable.
    #[error("${var}: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A live source went away: its PSI trigger reported `POLLERR` (the cgroup was
    /// removed), its socket's peer closed...
    #[error("{}: {reason}", path.display())]
    Gone {
        /// The file or socket.
        path: PathBuf,
        /// What happened.
        reason: String,
    },
    /// A source does not apply on this host (no limit set, no PSI, disabled...).
    #[error("{0}")]
    Unavailable(String),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A `--source` style specification could not be parsed.
    #[error("invalid source {spec:?}: {reason}")]
    Spec {
        /// The text given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A syscall not tied to a file (epoll, eventfd, timerfd) failed.
    #[error("{op}: {}", errno_name(source))]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Every source of the monitor's ladder failed or died; the text is the monitor's
    /// `describe()` at that point.
    #[error("no memory-pressure source is left:\n{0}")]
    NoSource(String),
}

impl Error {
    pub(crate) fn io(path: &Path, op: &'static str, source: io::Error) -> Self {
        Error::Io {
            path: path.to_owned(),
            op,
            source,
        }
    }

    pub(crate) fn gone(path: &Path, reason: &str) -> Self {
        Error::Gone {
            path: path.to_owned(),
            reason: reason.to_owned(),
        }
    }

    pub(crate) fn parse(path: &Path, reason: ParseError) -> Self {
        Error::Parse {
            path: path.to_owned(),
            reason,
        }
    }

    pub(crate) fn sys(op: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Sys {
            op,
            source: source.into(),
        }
    }

    /// The errno behind this error, if it came from a system call.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } | Error::Sys { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Why a file's contents were rejected: the parsers return this, the caller adds the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub(crate) String);

impl ParseError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        ParseError(reason.into())
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// `EACCES` rather than "Permission denied (os error 13)": the names the kernel
/// documentation and `strace` use.
pub(crate) fn errno_name(e: &io::Error) -> String {
    let Some(code) = e.raw_os_error() else {
        return e.to_string();
    };
    let name = match code {
        1 => "EPERM",
        2 => "ENOENT",
        4 => "EINTR",
        5 => "EIO",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        16 => "EBUSY",
        17 => "EEXIST",
        19 => "ENODEV",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        24 => "EMFILE",
        25 => "ENOTTY",
        28 => "ENOSPC",
        30 => "EROFS",
        95 => "EOPNOTSUPP",
        111 => "ECONNREFUSED",
        _ => return e.to_string(),
    };
    name.to_owned()
}
