//! The control socket's limits and its errors.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// The server's limits against hostile or broken clients (see the module
/// docs, "Hostile input").
#[derive(Clone, Debug, PartialEq)]
pub struct ControlLimits {
    /// Longest request line, newline included: 4096 bytes.
    pub max_line: usize,
    /// Connections served at once: 8.
    pub max_clients: usize,
    /// A request must be complete this long after its first byte: 5 s.
    pub request_timeout: Duration,
    /// A connection with no request for this long is closed: 30 s.
    pub idle_timeout: Duration,
    /// A reply must be taken by the client within this: 2 s.
    pub write_timeout: Duration,
    /// `scan` requests per second, process-wide (the burst is the same): 20.
    pub scans_per_sec: u32,
    /// `reclaim` requests per second, process-wide: 4.
    pub reclaims_per_sec: u32,
    /// Largest `n` of a `scan`: 1 Mi objects.
    pub max_scan: usize,
    /// Largest `bytes` of a `reclaim`: 64 GiB.
    pub max_reclaim_bytes: u64,
}

impl Default for ControlLimits {
    fn default() -> Self {
        ControlLimits {
            max_line: 4096,
            max_clients: 8,
            request_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(2),
            scans_per_sec: 20,
            reclaims_per_sec: 4,
            max_scan: 1 << 20,
            max_reclaim_bytes: 64 << 30,
        }
    }
}

/// Why the control socket could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// None of the socket directories could be used (each reason listed).
    #[error("control socket: no usable directory: {0}")]
    NoDirectory(String),
    /// Binding or setting up the socket failed.
    #[error("control socket: {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A limit is zero.
    #[error("control socket: limit {0} must be positive")]
    Limits(&'static str),
}
