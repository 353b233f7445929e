//! Child memory cgroups for the `reclaim` scenario and the end-to-end test: create one under
//! this process's own memory cgroup with a limit and no swap, run a process inside it with a
//! time limit, read what the kernel counted (OOM kills, limit hits, peak usage), and remove it.
//!
//! # Protocol
//!
//! 1. [`MemCgroup::create`] finds this process's own memory cgroup (`/proc/self/cgroup`,
//!    through `shrinker_pressure::own_cgroups`) and makes a uniquely named child in it:
//!    - cgroup v1 (a `memory` controller hierarchy is mounted): `memory.limit_in_bytes`,
//!      `memory.swappiness = 0`, `memory.memsw.limit_in_bytes` = the limit where that file
//!      exists (no swap either way), `memory.oom_control` left at its default (the OOM
//!      killer enabled);
//!    - cgroup v2 (no v1 memory hierarchy): `+memory` in our own `cgroup.subtree_control`,
//!      then `memory.max` and `memory.swap.max = 0`.
//! 2. [`run_in`] spawns the command with piped stdin and stdout, writes its pid to the
//!    child cgroup's `cgroup.procs` *before* the child does anything (it waits for a `go`
//!    line on stdin), sends `go`, collects its stdout lines, and kills it if it has not
//!    exited within the time limit.
//! 3. Only after the process has been reaped are the counters read and the cgroup removed
//!    ([`Drop`] of [`MemCgroup`], which retries `rmdir` for a while: the kernel may still be
//!    tearing the dead process's memory down). The guard removes it on panic too.
//!
//! Where cgroups are not available or not writable, [`MemCgroup::create`] returns an
//! [`Unavailable`] whose text says why (what is missing, which file refused which write).

use std::fmt;
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Why no child memory cgroup could be made; the text says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// The cgroup version of a [`MemCgroup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// The v1 `memory` controller.
    V1,
    /// The unified hierarchy.
    V2,
}

/// A child memory cgroup with a limit and no swap; removed on drop.
#[derive(Debug)]
pub struct MemCgroup {
    dir: PathBuf,
    version: Version,
    limit: u64,
}

/// Makes names unique within this process (the pid and the time make them unique across).
static SERIAL: AtomicU64 = AtomicU64::new(0);

fn write(path: &Path, value: &str) -> Result<(), Unavailable> {
    std::fs::write(path, value)
        .map_err(|e| Unavailable(format!("cannot write {value:?} to {}: {e}", path.display())))
}

impl MemCgroup {
    /// A new child of this process's own memory cgroup, named `<prefix>-<pid>-<n>-<ns>`, with
    /// `limit` bytes of memory and no swap (see the module documentation).
    ///
    /// # Errors
    ///
    /// [`Unavailable`] saying why: no memory controller mounted for this process, the
    /// directory could not be made (not root, read-only mount), or a control file refused
    /// its value. A half-made cgroup is removed before returning.
    pub fn create(prefix: &str, limit: u64) -> Result<MemCgroup, Unavailable> {
        let own = shrinker_pressure::own_cgroups()
            .map_err(|e| Unavailable(format!("cannot read this process's cgroups: {e}")))?;
        let (parent, version) = match (own.v1_memory, own.v2) {
            (Some(d), _) => (d, Version::V1),
            (None, Some(d)) => (d, Version::V2),
            (None, None) => {
                return Err(Unavailable(
                    "no cgroup memory controller is mounted for this process".into(),
                ))
            }
        };
        if version == Version::V2 {
            let controllers =
                std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
            if !controllers.split_whitespace().any(|c| c == "memory") {
                return Err(Unavailable(format!(
                    "cgroup v2 {}: the memory controller is not available here",
                    parent.display()
                )));
            }
            write(&parent.join("cgroup.subtree_control"), "+memory")?;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        // Relaxed: a counter for names; nothing is published through it.
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir)
            .map_err(|e| Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        // From here on the guard removes the directory if a write below fails.
        let cg = MemCgroup {
            dir,
            version,
            limit,
        };
        match version {
            Version::V1 => {
                write(&cg.file("memory.limit_in_bytes"), &limit.to_string())?;
                write(&cg.file("memory.swappiness"), "0")?;
                if cg.file("memory.memsw.limit_in_bytes").exists() {
                    write(&cg.file("memory.memsw.limit_in_bytes"), &limit.to_string())?;
                }
            }
            Version::V2 => {
                write(&cg.file("memory.max"), &limit.to_string())?;
                if cg.file("memory.swap.max").exists() {
                    write(&cg.file("memory.swap.max"), "0")?;
                }
            }
        }
        Ok(cg)
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cgroup version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The limit it was made with, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The file holding the current usage (`memory.usage_in_bytes`, `memory.current`).
    pub fn usage_file(&self) -> PathBuf {
        self.file(match self.version {
            Version::V1 => "memory.usage_in_bytes",
            Version::V2 => "memory.current",
        })
    }

    /// Moves process `pid` into the cgroup.
    ///
    /// # Errors
    ///
    /// The write to `cgroup.procs` failed (the process is gone, or no permission).
    pub fn add_pid(&self, pid: u32) -> Result<(), Unavailable> {
        write(&self.file("cgroup.procs"), &pid.to_string())
    }

    /// Processes the OOM killer killed in this cgroup (`oom_kill` of `memory.oom_control` in
    /// v1, of `memory.events` in v2); `None` if the kernel does not say.
    pub fn oom_kills(&self) -> Option<u64> {
        let name = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        keyed(&self.file(name), "oom_kill")
    }

    /// Times a charge hit the limit (`memory.failcnt` in v1, `max` of `memory.events` in v2).
    pub fn limit_hits(&self) -> Option<u64> {
        match self.version {
            Version::V1 => number(&self.file("memory.failcnt")),
            Version::V2 => keyed(&self.file("memory.events"), "max"),
        }
    }

    /// The highest usage seen (`memory.max_usage_in_bytes` in v1, `memory.peak` in v2).
    pub fn peak(&self) -> Option<u64> {
        number(&self.file(match self.version {
            Version::V1 => "memory.max_usage_in_bytes",
            Version::V2 => "memory.peak",
        }))
    }
}

impl Drop for MemCgroup {
    /// Removes the directory, retrying for up to two seconds while the kernel finishes with
    /// the processes that were in it (the caller reaps them first).
    fn drop(&mut self) {
        for _ in 0..100 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

fn number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of the `key value` line of a flat-keyed file.
fn keyed(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// How a process run by [`run_in`] ended, and what the cgroup counted.
#[derive(Debug)]
pub struct RunOutcome {
    /// The exit status (after a kill for the time limit, the kill's).
    pub status: ExitStatus,
    /// It ran out of time and was killed.
    pub timed_out: bool,
    /// Its stdout, line by line, each with the time it was read (from the `go` line).
    pub lines: Vec<(Duration, String)>,
    /// [`MemCgroup::oom_kills`] after it was reaped.
    pub oom_kills: Option<u64>,
    /// [`MemCgroup::limit_hits`] after it was reaped.
    pub limit_hits: Option<u64>,
    /// [`MemCgroup::peak`] after it was reaped.
    pub peak: Option<u64>,
    /// From the `go` line to the reaping (seen within a millisecond of the exit).
    pub wall: Duration,
}

impl RunOutcome {
    /// Killed by SIGKILL (the OOM killer's signal, or ours at the time limit).
    pub fn sigkilled(&self) -> bool {
        self.status.signal() == Some(9)
    }
}

/// Kills and reaps the child however the run ends (before the cgroup guard removes the
/// directory, which is only possible once the cgroup is empty).
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` inside `cg`: spawn it (it must wait for a `go` line on stdin before doing
/// anything that should be charged to the cgroup), move it in, send `go`, collect its stdout
/// lines, kill it after `time_limit`. Its stderr is inherited.
///
/// # Errors
///
/// The spawn failed, or the move into the cgroup failed (the child is then killed).
pub fn run_in(
    cg: &MemCgroup,
    cmd: &mut Command,
    time_limit: Duration,
) -> Result<RunOutcome, Unavailable> {
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Unavailable(format!("cannot spawn {cmd:?}: {e}")))?;
    let mut child = Reap(child);
    cg.add_pid(child.0.id())?;
    let stdout = child.0.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((start.elapsed(), line)).is_err() {
                break;
            }
        }
    });
    let mut stdin = child.0.stdin.take().expect("stdin is piped");
    // A child that already died has closed its stdin: the status below says why.
    let _ = writeln!(stdin, "go").and_then(|()| stdin.flush());
    let deadline = start + time_limit;
    let mut timed_out = false;
    let status = loop {
        match child.0.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.0.kill();
                match child.0.wait() {
                    Ok(s) => break s,
                    Err(e) => return Err(Unavailable(format!("cannot reap the child: {e}"))),
                }
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(Unavailable(format!("cannot wait for the child: {e}"))),
        }
    };
    let wall = start.elapsed();
    drop(stdin);
    // The pipe is closed once the child is gone; the reader ends.
    let _ = reader.join();
    let lines: Vec<(Duration, String)> = rx.try_iter().collect();
    Ok(RunOutcome {
        status,
        timed_out,
        lines,
        oom_kills: cg.oom_kills(),
        limit_hits: cg.limit_hits(),
        peak: cg.peak(),
        wall,
    })
}
