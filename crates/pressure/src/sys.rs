//! Small system helpers shared by the sources: whole-file reads with typed errors, eventfds,
//! and finding the process's own cgroups.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::event::{eventfd, EventfdFlags};

use crate::error::{Error, ParseError};
use crate::parse;

/// Largest file we read: every file here is a few hundred bytes (meminfo ~1.5 KiB,
/// mountinfo grows with mounts); a bigger one is not what we think it is.
const MAX_FILE: usize = 1 << 20;

/// Reads a whole file.
pub(crate) fn read_path(path: &Path) -> Result<Vec<u8>, Error> {
    let mut f = File::open(path).map_err(|e| Error::io(path, "opening", e))?;
    let mut buf = Vec::new();
    (&mut f)
        .take(MAX_FILE as u64)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, "reading", e))?;
    Ok(buf)
}

/// Re-reads an open file from offset 0 (kernfs and procfs files regenerate their text on
/// every read from 0; for `memory.events` this also re-arms its `POLLPRI`).
pub(crate) fn pread_all(file: &File, path: &Path) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        let n = file
            .read_at(&mut buf[len..], len as u64)
            .map_err(|e| Error::io(path, "reading", e))?;
        if n == 0 {
            break;
        }
        len += n;
        if len == buf.len() {
            if buf.len() >= MAX_FILE {
                break;
            }
            buf.resize(buf.len() * 2, 0);
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// Reads and parses a file.
pub(crate) fn read_parse<T>(
    path: &Path,
    f: impl FnOnce(&[u8]) -> Result<T, ParseError>,
) -> Result<T, Error> {
    let b = read_path(path)?;
    f(&b).map_err(|e| Error::parse(path, e))
}

/// Opens a file for reading, non-blocking.
pub(crate) fn open_ro(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| Error::io(path, "opening", e))
}

/// A non-blocking, close-on-exec eventfd.
pub(crate) fn new_eventfd() -> Result<OwnedFd, Error> {
    eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(|e| Error::sys("eventfd", e))
}

/// Reads (and so clears) an eventfd; `Ok(0)` if it was not signalled.
pub(crate) fn drain_eventfd(fd: impl AsFd) -> io::Result<u64> {
    let mut b = [0u8; 8];
    match rustix::io::read(fd, &mut b) {
        Ok(8) => Ok(u64::from_ne_bytes(b)),
        Ok(_) => Ok(0),
        Err(rustix::io::Errno::AGAIN) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Signals an eventfd.
pub(crate) fn signal_eventfd(fd: impl AsFd) {
    // EAGAIN only if the counter would overflow, which means it is signalled already.
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

/// Where the process's cgroups are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnCgroups {
    /// The cgroup v2 directory of this process, if a cgroup2 file system is mounted.
    pub v2: Option<PathBuf>,
    /// The cgroup v1 memory controller directory of this process, if mounted.
    pub v1_memory: Option<PathBuf>,
    /// The v1 memory hierarchy's mount point (walking up stops there).
    pub v1_memory_mount: Option<PathBuf>,
    /// The cgroup2 mount point.
    pub v2_mount: Option<PathBuf>,
}

fn join_cgroup(mount: &parse::Mount, path: &str) -> PathBuf {
    // Inside a cgroup namespace or a bind mount, the mount's root is a prefix of the path.
    let rel = if mount.root != "/" {
        path.strip_prefix(mount.root.as_str()).unwrap_or(path)
    } else {
        path
    };
    let mut p = PathBuf::from(&mount.mount_point);
    for comp in rel.split('/').filter(|c| !c.is_empty() && *c != "..") {
        p.push(comp);
    }
    p
}

/// Locates this process's cgroups from the two files' contents (pure: tested with fakes).
pub(crate) fn own_cgroups_from(
    proc_cgroup: &[u8],
    mountinfo: &[u8],
) -> Result<OwnCgroups, (&'static str, ParseError)> {
    let lines = parse::proc_cgroup(proc_cgroup).map_err(|e| ("/proc/self/cgroup", e))?;
    let mounts = parse::cgroup_mounts(mountinfo).map_err(|e| ("/proc/self/mountinfo", e))?;
    let mut own = OwnCgroups::default();
    let v2_mount = mounts.iter().find(|m| m.fstype == "cgroup2");
    let v1_mem = mounts
        .iter()
        .find(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "memory"));
    for line in &lines {
        if line.hierarchy == 0 && line.controllers.is_empty() {
            if let Some(m) = v2_mount {
                own.v2 = Some(join_cgroup(m, &line.path));
                own.v2_mount = Some(PathBuf::from(&m.mount_point));
            }
        } else if line.controllers.iter().any(|c| c == "memory") {
            if let Some(m) = v1_mem {
                own.v1_memory = Some(join_cgroup(m, &line.path));
                own.v1_memory_mount = Some(PathBuf::from(&m.mount_point));
            }
        }
    }
    Ok(own)
}

/// Locates this process's cgroups.
///
/// # Errors
/// `/proc/self/cgroup` or `/proc/self/mountinfo` unreadable or malformed.
pub fn own_cgroups() -> Result<OwnCgroups, Error> {
    let c = read_path(Path::new("/proc/self/cgroup"))?;
    let m = read_path(Path::new("/proc/self/mountinfo"))?;
    own_cgroups_from(&c, &m).map_err(|(p, e)| Error::parse(Path::new(p), e))
}

/// `MemTotal`, if `/proc/meminfo` can be read (used to tell a real limit from "unlimited").
pub(crate) fn mem_total() -> Option<u64> {
    read_parse(Path::new("/proc/meminfo"), parse::meminfo)
        .ok()
        .map(|m| m.total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroups_on_a_hybrid_host() {
        let c = b"9:name=systemd:/\n4:memory:/process_api/abc\n0::/\n";
        let m = b"35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let own = own_cgroups_from(c, m).unwrap();
        assert_eq!(
            own.v1_memory.unwrap(),
            Path::new("/sys/fs/cgroup/memory/process_api/abc")
        );
        assert_eq!(own.v2.unwrap(), Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn own_cgroups_in_a_namespace_strips_the_mount_root() {
        let c = b"0::/kubepods/pod1/c1\n";
        let m = b"41 31 0:38 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let own = own_cgroups_from(c, m).unwrap();
        assert_eq!(own.v2.unwrap(), Path::new("/sys/fs/cgroup/c1"));
        assert!(own.v1_memory.is_none());
    }
}
