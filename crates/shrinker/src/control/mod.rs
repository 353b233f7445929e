//! The control socket: look at and steer a live process from outside
//! (`shrinkctl`), as the kernel's `/sys/kernel/debug/shrinker/` and
//! `/proc/pressure` let an operator do for the kernel's caches.
//!
//! Opt in with one call (feature `control`):
//!
//! ```no_run
//! use std::sync::Arc;
//! use shrinker::control::ControlSocket;
//! use shrinker::reclaim::Reclaimer;
//! use shrinker::ShrinkerRegistry;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let reclaimer = Arc::new(Reclaimer::builder(ShrinkerRegistry::global()).start()?);
//! let control = ControlSocket::builder(ShrinkerRegistry::global())
//!     .reclaimer(reclaimer)
//!     .start()?;
//! println!("shrinkctl --socket {} top", control.path().display());
//! # Ok(()) }
//! ```
//!
//! # Where the socket is
//!
//! A Unix stream socket named `<pid>.sock` in the first of these directories
//! that can be used ([`socket_dirs`]):
//!
//! 1. `$XDG_RUNTIME_DIR/shrinker/` (the user's private runtime directory),
//! 2. `/run/shrinker/`,
//! 3. `/tmp/shrinker-<uid>/`.
//!
//! A directory is used only if it is (or is created as) a real directory,
//! not a symlink, owned by the process's effective uid, and writable by
//! nobody else; it is created with mode 0700. The socket itself is made mode
//! 0600 right after `bind`. `shrinkctl --pid PID` looks in the same places
//! ([`socket_candidates`]). [`ControlBuilder::path`] names a path of your own.
//! The socket file is removed when the [`ControlSocket`] is dropped.
//!
//! # Who may connect
//!
//! Each connection's peer credentials (`SO_PEERCRED`) are checked: a peer
//! whose uid is the process's effective uid, or root, is served; anyone else
//! gets one error reply (`"peer uid N is not allowed"`) and is disconnected.
//!
//! # The protocol
//!
//! JSON lines: each request is one JSON object on one line, each reply one
//! JSON object on one line, `{"ok":true,"result":…}` or
//! `{"ok":false,"error":"…"}`. The commands (`"cmd"`):
//!
//! | request | result |
//! |---|---|
//! | `{"cmd":"list"}` | an array, one object per shrinker: `id`, `name`, `objects` (its `count` summed over nodes; calls `count`), `objects_per_node`, `live`, `numa_aware`, `group_aware`, `seeks`, `batch`, `count_calls`, `scan_calls`, `scanned`, `freed`, `deferred`, `scan_time_ns`, `panics` |
//! | `{"cmd":"count","id":N}` | `{"id":N,"text":"0 <objects on node 0> <node 1> …\n","objects_per_node":[…]}`: the debugfs `count` file (group 0, the root, is the only group a by-hand call reaches) |
//! | `{"cmd":"scan","id":N,"input":"<group> <node> <n>"}` | the debugfs `scan` file's input; `{"freed":F}` or `{"stop":true}`; rate-limited |
//! | `{"cmd":"stats"}` | `{"shrinkers":N,"reclaimer":{…}\|null,"rcu":{…}}` |
//! | `{"cmd":"pressure"}` | `{"level":"none\|moderate\|critical","source":"cgroup1","describe":"…","usage":B\|null,"limit":B\|null,"headroom":B\|null}` |
//! | `{"cmd":"reclaim","bytes":B}` | proactive reclaim (needs a reclaimer): `{"objects":O,"bytes":F}`; rate-limited |
//! | `{"cmd":"metrics"}` | `{"text":"…"}`: every metric of [`crate::metrics`] in the Prometheus text format |
//!
//! # Hostile input
//!
//! The server never trusts a client. The limits ([`ControlLimits`], all
//! with defaults):
//!
//! - a request line longer than [`max_line`](ControlLimits::max_line)
//!   (4096 bytes with its newline) gets an error reply and the connection
//!   is closed (the rest of the line cannot be told from the next request);
//! - a line that is not UTF-8, not JSON, not an object, or names an unknown
//!   command or bad arguments gets an error reply, and the connection stays;
//! - a request must arrive whole within
//!   [`request_timeout`](ControlLimits::request_timeout) (5 s) of its first
//!   byte and the next one within [`idle_timeout`](ControlLimits::idle_timeout)
//!   (30 s); a reply must be taken within
//!   [`write_timeout`](ControlLimits::write_timeout) (2 s); otherwise the
//!   connection is closed;
//! - at most [`max_clients`](ControlLimits::max_clients) (8) connections are
//!   served at once; the next ones get an error reply and are closed;
//! - `scan` and `reclaim` requests are rate-limited (process-wide token
//!   buckets, [`scans_per_sec`](ControlLimits::scans_per_sec) and
//!   [`reclaims_per_sec`](ControlLimits::reclaims_per_sec)); over the
//!   rate they get an error reply; `scan` asks at most
//!   [`max_scan`](ControlLimits::max_scan) objects, `reclaim` at most
//!   [`max_reclaim_bytes`](ControlLimits::max_reclaim_bytes).
//!
//! Each request is handled under `catch_unwind`, so even a bug in a handler
//! costs one error reply, not the server thread (shrinker callbacks that
//! panic are already contained by the registry).

mod config;
mod protocol;
mod server;

pub use config::{ControlError, ControlLimits};

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shrinker_pressure::Monitor;

use crate::reclaim::Reclaimer;
use crate::ShrinkerRegistry;

/// Builds a [`ControlSocket`]: [`ControlSocket::builder`].
pub struct ControlBuilder {
    registry: ShrinkerRegistry,
    reclaimer: Option<Arc<Reclaimer>>,
    monitor: Option<Monitor>,
    limits: ControlLimits,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for ControlBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlBuilder")
            .field("limits", &self.limits)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ControlBuilder {
    /// Serve this reclaimer's statistics and `reclaim` requests (without
    /// one, `reclaim` answers an error and `stats` has `"reclaimer":null`).
    #[must_use]
    pub fn reclaimer(mut self, reclaimer: Arc<Reclaimer>) -> Self {
        self.reclaimer = Some(reclaimer);
        self
    }

    /// Answer `pressure` from this monitor's fresh readings (usage, limit,
    /// headroom). Give it a monitor of its own, built like the reclaimer's
    /// (a monitor is read by one owner). Without one, `pressure` answers the
    /// reclaimer's last level and source, with no figures.
    #[must_use]
    pub fn monitor(mut self, monitor: Monitor) -> Self {
        self.monitor = Some(monitor);
        self
    }

    /// The limits (see [`ControlLimits`]).
    #[must_use]
    pub fn limits(mut self, limits: ControlLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Bind here instead of `<dir>/<pid>.sock` (the caller answers for the
    /// directory's safety; the socket is still made mode 0600).
    #[must_use]
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Bind the socket and start the server thread.
    ///
    /// # Errors
    ///
    /// [`ControlError::NoDirectory`] when no socket directory is usable;
    /// [`ControlError::Io`] when binding, `chmod` or spawning fails;
    /// [`ControlError::Limits`] for a zero limit.
    pub fn start(self) -> Result<ControlSocket, ControlError> {
        let l = &self.limits;
        for (name, v) in [
            ("max_line", l.max_line),
            ("max_clients", l.max_clients),
            ("scans_per_sec", l.scans_per_sec as usize),
            ("reclaims_per_sec", l.reclaims_per_sec as usize),
        ] {
            if v == 0 {
                return Err(ControlError::Limits(name));
            }
        }
        let path = match self.path {
            Some(p) => p,
            None => default_path()?,
        };
        server::start(
            protocol::Handler::new(self.registry, self.reclaimer, self.monitor, self.limits),
            path,
        )
        .map(|server| ControlSocket { server })
    }
}

/// A running control socket: a Unix socket and its server thread. Dropping
/// it stops the server, disconnects its clients, joins its threads and
/// removes the socket file.
///
/// # Blocking
///
/// Dropping waits for requests in progress: a `scan` or `reclaim` runs
/// shrinker callbacks, which may block (as dropping a
/// [`Reclaimer`] waits for the callback in progress).
pub struct ControlSocket {
    server: server::Server,
}

impl std::fmt::Debug for ControlSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlSocket")
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

impl ControlSocket {
    /// A builder serving `registry` (usually [`ShrinkerRegistry::global`]).
    pub fn builder(registry: &ShrinkerRegistry) -> ControlBuilder {
        ControlBuilder {
            registry: registry.clone(),
            reclaimer: None,
            monitor: None,
            limits: ControlLimits::default(),
            path: None,
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        self.server.path()
    }

    /// Connections refused so far (wrong uid, too many clients).
    pub fn refused(&self) -> u64 {
        self.server.refused()
    }
}

/// The directories a socket may go in, in order of preference (see the
/// module docs): `$XDG_RUNTIME_DIR/shrinker`, `/run/shrinker`,
/// `/tmp/shrinker-<uid>` (for the effective uid).
pub fn socket_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        dirs.push(PathBuf::from(x).join("shrinker"));
    }
    dirs.push(PathBuf::from("/run/shrinker"));
    let uid = rustix::process::geteuid().as_raw();
    dirs.push(PathBuf::from(format!("/tmp/shrinker-{uid}")));
    dirs
}

/// Where the socket of process `pid` may be, in the order to try.
pub fn socket_candidates(pid: u32) -> Vec<PathBuf> {
    socket_dirs()
        .into_iter()
        .map(|d| d.join(format!("{pid}.sock")))
        .collect()
}

/// Make `dir` (mode 0700) unless it exists, and check it is safe: a real
/// directory owned by us, writable by nobody else.
fn prepare_dir(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let md = std::fs::symlink_metadata(dir)?;
    let me = rustix::process::geteuid().as_raw();
    if !md.file_type().is_dir() {
        return Err(io::Error::other("not a directory"));
    }
    if md.uid() != me {
        return Err(io::Error::other(format!(
            "owned by uid {}, not {me}",
            md.uid()
        )));
    }
    if md.permissions().mode() & 0o022 != 0 {
        return Err(io::Error::other("writable by group or others"));
    }
    Ok(())
}

fn default_path() -> Result<PathBuf, ControlError> {
    let pid = std::process::id();
    let mut why = Vec::new();
    for dir in socket_dirs() {
        match prepare_dir(&dir) {
            Ok(()) => return Ok(dir.join(format!("{pid}.sock"))),
            Err(e) => why.push(format!("{}: {e}", dir.display())),
        }
    }
    Err(ControlError::NoDirectory(why.join("; ")))
}
