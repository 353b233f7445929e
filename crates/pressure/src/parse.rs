//! Parsers for every file this crate reads, as pure functions over bytes.
//!
//! Each returns a value or a [`ParseError`] saying what was wrong; none panics, whatever the
//! bytes (property-tested below over arbitrary input). The caller adds the path to make an
//! [`Error::Parse`](crate::Error::Parse). Formats, with the kernel documentation they come
//! from:
//!
//! | file | format | reference |
//! |---|---|---|
//! | `/proc/pressure/memory`, `memory.pressure` | `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and a `full` line | `Documentation/accounting/psi.rst` |
//! | `/proc/meminfo` | `Key:   value kB` | `Documentation/filesystems/proc.rst` |
//! | `/proc/self/statm` | `size resident shared text lib data dt` (pages) | `proc(5)` |
//! | `memory.max`, `memory.high`, `memory.current`, `memory.*_in_bytes` | a number or `max` | `cgroup-v2.rst`, `cgroup-v1/memory.rst` |
//! | `memory.events`, `memory.stat` | `key value` lines | `cgroup-v2.rst`, `cgroup-v1/memory.rst` |
//! | `/proc/self/mountinfo` | `id parent maj:min root mountpoint opts [optional...] - fstype source superopts` | `proc(5)` |
//! | `/proc/self/cgroup` | `hierarchy-id:controllers:path` | `cgroups(7)` |

use crate::error::ParseError;
use crate::level::{Level, Stall};

fn text(bytes: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(bytes).map_err(|e| ParseError::new(format!("not UTF-8: {e}")))
}

/// One PSI line.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct PsiLine {
    /// Percent over the last 10 s.
    pub avg10: f64,
    /// Percent over the last 60 s.
    pub avg60: f64,
    /// Percent over the last 300 s.
    pub avg300: f64,
    /// Total stall time, µs.
    pub total: u64,
}

/// A PSI file: the `some` line and, where present, the `full` line.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Psi {
    /// `some`.
    pub some: PsiLine,
    /// `full` (absent from `/proc/pressure/cpu` before 5.13; always there for memory).
    pub full: Option<PsiLine>,
}

impl Psi {
    /// The avg10 figures as a [`Stall`].
    pub fn stall(&self) -> Stall {
        Stall {
            some_avg10: self.some.avg10,
            full_avg10: self.full.map(|f| f.avg10),
        }
    }
}

fn parse_percent(v: &str) -> Result<f64, ParseError> {
    let x: f64 = v
        .parse()
        .map_err(|_| ParseError::new(format!("bad percentage {v:?}")))?;
    if !(0.0..=100.0).contains(&x) {
        return Err(ParseError::new(format!("percentage out of range: {v:?}")));
    }
    Ok(x)
}

fn parse_psi_line(rest: &str) -> Result<PsiLine, ParseError> {
    let mut line = PsiLine::default();
    let mut seen = 0u8;
    for field in rest.split_ascii_whitespace() {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| ParseError::new(format!("field without '=': {field:?}")))?;
        match k {
            "avg10" => (line.avg10, seen) = (parse_percent(v)?, seen | 1),
            "avg60" => (line.avg60, seen) = (parse_percent(v)?, seen | 2),
            "avg300" => (line.avg300, seen) = (parse_percent(v)?, seen | 4),
            "total" => {
                line.total = v
                    .parse()
                    .map_err(|_| ParseError::new(format!("bad total {v:?}")))?;
                seen |= 8;
            }
            _ => {} // Newer kernels may add fields: ignore them.
        }
    }
    if seen & 9 != 9 {
        return Err(ParseError::new("PSI line lacks avg10= or total="));
    }
    Ok(line)
}

/// Parses a PSI file.
///
/// # Errors
/// No `some` line, a line lacking `avg10=`/`total=`, a bad number.
pub fn psi(bytes: &[u8]) -> Result<Psi, ParseError> {
    let mut some = None;
    let mut full = None;
    for line in text(bytes)?.lines() {
        if let Some(rest) = line.strip_prefix("some ") {
            some = Some(parse_psi_line(rest)?);
        } else if let Some(rest) = line.strip_prefix("full ") {
            full = Some(parse_psi_line(rest)?);
        } else if !line.trim().is_empty() {
            return Err(ParseError::new(format!("unexpected line {line:?}")));
        }
    }
    Ok(Psi {
        some: some.ok_or_else(|| ParseError::new("no \"some\" line"))?,
        full,
    })
}

/// The two `/proc/meminfo` figures used, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemAvailable` (Linux ≥ 3.14), else `MemFree + Buffers + Cached` as Chromium does.
    pub available: u64,
}

/// Parses `/proc/meminfo`.
///
/// # Errors
/// No `MemTotal`, neither `MemAvailable` nor `MemFree`, a bad number, available > total.
pub fn meminfo(bytes: &[u8]) -> Result<MemInfo, ParseError> {
    let (mut total, mut avail, mut free, mut buffers, mut cached) = (None, None, None, 0, 0);
    for line in text(bytes)?.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut total,
            "MemAvailable" => &mut avail,
            "MemFree" => &mut free,
            "Buffers" | "Cached" => {
                let v = kib_value(key, rest)?;
                if key == "Buffers" {
                    buffers = v;
                } else {
                    cached = v;
                }
                continue;
            }
            _ => continue,
        };
        *slot = Some(kib_value(key, rest)?);
    }
    let total = total.ok_or_else(|| ParseError::new("no MemTotal"))?;
    let available = match (avail, free) {
        (Some(a), _) => a,
        (None, Some(f)) => f.saturating_add(buffers).saturating_add(cached),
        (None, None) => return Err(ParseError::new("neither MemAvailable nor MemFree")),
    };
    if available > total {
        return Err(ParseError::new(format!(
            "MemAvailable {available} exceeds MemTotal {total}"
        )));
    }
    Ok(MemInfo { total, available })
}

fn kib_value(key: &str, rest: &str) -> Result<u64, ParseError> {
    let mut it = rest.split_ascii_whitespace();
    let n: u64 = it
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ParseError::new(format!("{key}: bad number {rest:?}")))?;
    match it.next() {
        Some("kB") => n
            .checked_mul(1024)
            .ok_or_else(|| ParseError::new(format!("{key}: overflows"))),
        None => Ok(n),
        Some(u) => Err(ParseError::new(format!("{key}: unknown unit {u:?}"))),
    }
}

/// Resident pages from `/proc/<pid>/statm` (second field).
///
/// # Errors
/// Fewer than two fields or a bad number.
pub fn statm_resident_pages(bytes: &[u8]) -> Result<u64, ParseError> {
    let mut it = text(bytes)?.split_ascii_whitespace();
    let _size = it.next().ok_or_else(|| ParseError::new("empty"))?;
    let res = it
        .next()
        .ok_or_else(|| ParseError::new("no resident field"))?;
    res.parse()
        .map_err(|_| ParseError::new(format!("bad resident field {res:?}")))
}

/// A cgroup number file: a byte count, or `max` (→ `None`: no limit).
///
/// # Errors
/// Anything else, or more than one line.
pub fn cgroup_value(bytes: &[u8]) -> Result<Option<u64>, ParseError> {
    let t = text(bytes)?.trim();
    if t == "max" {
        return Ok(None);
    }
    if t.is_empty() {
        return Err(ParseError::new("empty"));
    }
    t.parse()
        .map(Some)
        .map_err(|_| ParseError::new(format!("expected a number or \"max\", got {t:?}")))
}

/// A cgroup v1 limit: values at or above 2^62 mean "unlimited" (the kernel shows
/// `PAGE_COUNTER_MAX * PAGE_SIZE`, 9223372036854771712 on x86-64).
pub fn v1_limit(bytes: &[u8]) -> Result<Option<u64>, ParseError> {
    Ok(cgroup_value(bytes)?.filter(|&v| v < 1 << 62))
}

/// `key value` lines (`memory.events`, `memory.stat`): the value for `key`.
///
/// # Errors
/// A line for `key` whose value is not a number. A missing key is `Ok(None)`.
pub fn keyed(bytes: &[u8], key: &str) -> Result<Option<u64>, ParseError> {
    for line in text(bytes)?.lines() {
        let mut it = line.split_ascii_whitespace();
        if it.next() == Some(key) {
            let v = it
                .next()
                .ok_or_else(|| ParseError::new(format!("{key}: no value")))?;
            return v
                .parse()
                .map(Some)
                .map_err(|_| ParseError::new(format!("{key}: bad number {v:?}")));
        }
    }
    Ok(None)
}

/// cgroup v2 `memory.events` counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MemoryEvents {
    /// Reclaim because usage was under `memory.low` protection.
    pub low: u64,
    /// Throttled over `memory.high`.
    pub high: u64,
    /// Usage hit `memory.max`.
    pub max: u64,
    /// OOM reached.
    pub oom: u64,
    /// Processes OOM-killed.
    pub oom_kill: u64,
}

/// Parses `memory.events`.
///
/// # Errors
/// A known key with a bad number; or no known key at all.
pub fn memory_events(bytes: &[u8]) -> Result<MemoryEvents, ParseError> {
    let mut ev = MemoryEvents::default();
    let mut any = false;
    for (key, slot) in [
        ("low", &mut ev.low),
        ("high", &mut ev.high),
        ("max", &mut ev.max),
        ("oom", &mut ev.oom),
        ("oom_kill", &mut ev.oom_kill),
    ] {
        if let Some(v) = keyed(bytes, key)? {
            *slot = v;
            any = true;
        }
    }
    if !any {
        return Err(ParseError::new(
            "no known counter (low/high/max/oom/oom_kill)",
        ));
    }
    Ok(ev)
}

/// One mount from `/proc/self/mountinfo`, the fields used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The mount's root within its file system (`/` unless in a cgroup namespace or bind).
    pub root: String,
    /// Where it is mounted (octal escapes decoded).
    pub mount_point: String,
    /// File system type (`cgroup2`, `cgroup`, ...).
    pub fstype: String,
    /// Super options (`rw,memory` for a v1 memory hierarchy).
    pub super_options: String,
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = (digits[0] - b'0') as u32 * 64
                    + (digits[1] - b'0') as u32 * 8
                    + (digits[2] - b'0') as u32;
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/self/mountinfo` into the mounts whose file system type is `cgroup` or
/// `cgroup2` (lines for other mounts are skipped without being validated beyond shape).
///
/// # Errors
/// A cgroup line without the ` - ` separator or with too few fields.
pub fn cgroup_mounts(bytes: &[u8]) -> Result<Vec<Mount>, ParseError> {
    let mut out = Vec::new();
    for line in text(bytes)?.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((pre, post)) = line.split_once(" - ") else {
            return Err(ParseError::new(format!("no \" - \" separator in {line:?}")));
        };
        let mut post_it = post.split(' ');
        let fstype = post_it.next().unwrap_or_default();
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let _source = post_it.next();
        let super_options = post_it.next().unwrap_or_default();
        let pre: Vec<&str> = pre.split(' ').collect();
        if pre.len() < 6 {
            return Err(ParseError::new(format!("too few fields in {line:?}")));
        }
        out.push(Mount {
            root: unescape_octal(pre[3]),
            mount_point: unescape_octal(pre[4]),
            fstype: fstype.to_owned(),
            super_options: super_options.to_owned(),
        });
    }
    Ok(out)
}

/// One line of `/proc/self/cgroup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLine {
    /// Hierarchy id (0 for the cgroup v2 unified hierarchy).
    pub hierarchy: u32,
    /// Controllers (empty for v2), e.g. `["memory"]`, or `["name=systemd"]`.
    pub controllers: Vec<String>,
    /// Path within the hierarchy, starting with `/`.
    pub path: String,
}

/// Parses `/proc/self/cgroup`.
///
/// # Errors
/// A line without two colons, a bad hierarchy id, a path not starting with `/`.
pub fn proc_cgroup(bytes: &[u8]) -> Result<Vec<CgroupLine>, ParseError> {
    let mut out = Vec::new();
    for line in text(bytes)?.lines() {
        if line.is_empty() {
            continue;
        }
        let mut it = line.splitn(3, ':');
        let (Some(id), Some(ctl), Some(path)) = (it.next(), it.next(), it.next()) else {
            return Err(ParseError::new(format!(
                "expected id:controllers:path, got {line:?}"
            )));
        };
        let hierarchy = id
            .parse()
            .map_err(|_| ParseError::new(format!("bad hierarchy id {id:?}")))?;
        if !path.starts_with('/') {
            return Err(ParseError::new(format!("path not absolute: {path:?}")));
        }
        out.push(CgroupLine {
            hierarchy,
            controllers: ctl
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
            path: path.to_owned(),
        });
    }
    Ok(out)
}

/// One line of the FIFO protocol: a level word, optionally followed by `usage=<bytes>`,
/// `limit=<bytes>`, `headroom=<bytes>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FifoLine {
    /// The level.
    pub level: Level,
    /// `usage=`.
    pub usage: Option<u64>,
    /// `limit=`.
    pub limit: Option<u64>,
    /// `headroom=`.
    pub headroom: Option<u64>,
}

/// Parses one FIFO line (without its newline).
///
/// # Errors
/// An empty line, an unknown level word, an unknown key or a bad number.
pub fn fifo_line(line: &[u8]) -> Result<FifoLine, ParseError> {
    let t = text(line)?;
    let mut it = t.split_ascii_whitespace();
    let word = it.next().ok_or_else(|| ParseError::new("empty line"))?;
    let level = word
        .parse::<Level>()
        .map_err(|_| ParseError::new(format!("unknown level {word:?} (none|moderate|critical)")))?;
    let mut out = FifoLine {
        level,
        usage: None,
        limit: None,
        headroom: None,
    };
    for field in it {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| ParseError::new(format!("expected key=value, got {field:?}")))?;
        let n: u64 = v
            .parse()
            .map_err(|_| ParseError::new(format!("{k}: bad number {v:?}")))?;
        match k {
            "usage" => out.usage = Some(n),
            "limit" => out.limit = Some(n),
            "headroom" => out.headroom = Some(n),
            _ => return Err(ParseError::new(format!("unknown key {k:?}"))),
        }
    }
    Ok(out)
}

/// A byte count with an optional binary suffix: `1048576`, `512K`, `64M`, `2G`, `64MiB`.
///
/// # Errors
/// Not a number, an unknown suffix, overflow, or zero.
pub fn bytes_with_suffix(s: &str) -> Result<u64, ParseError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| ParseError::new(format!("expected a byte count, got {s:?}")))?;
    let mul: u64 = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        _ => return Err(ParseError::new(format!("unknown unit {suffix:?} in {s:?}"))),
    };
    let v = n
        .checked_mul(mul)
        .ok_or_else(|| ParseError::new(format!("{s:?} overflows")))?;
    if v == 0 {
        return Err(ParseError::new("a byte count of 0"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PSI: &[u8] = b"some avg10=1.50 avg60=0.20 avg300=0.00 total=123456\nfull avg10=0.40 avg60=0.00 avg300=0.00 total=789\n";

    #[test]
    fn psi_parses_both_lines() {
        let p = psi(PSI).unwrap();
        assert_eq!(p.some.total, 123456);
        assert_eq!(p.some.avg10, 1.5);
        assert_eq!(p.full.unwrap().total, 789);
        assert!(psi(b"full avg10=0 total=1\n").is_err());
        assert!(psi(b"some avg10=0.00 avg60=0.00 avg300=0.00 tot").is_err());
        assert!(psi(b"some avg10=101 total=1").is_err());
    }

    #[test]
    fn meminfo_parses_and_falls_back_to_free_buffers_cached() {
        let m = meminfo(b"MemTotal:  1000 kB\nMemFree: 100 kB\nMemAvailable:   600 kB\n").unwrap();
        assert_eq!((m.total, m.available), (1000 * 1024, 600 * 1024));
        let m = meminfo(b"MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 90 kB\n")
            .unwrap();
        assert_eq!(m.available, 200 * 1024);
        assert!(meminfo(b"MemTotal: 10 kB\nMemAvailable: 20 kB\n").is_err());
        assert!(meminfo(b"MemTotal: x kB\n").is_err());
    }

    #[test]
    fn cgroup_values() {
        assert_eq!(cgroup_value(b"max\n").unwrap(), None);
        assert_eq!(cgroup_value(b"67108864\n").unwrap(), Some(64 << 20));
        assert!(cgroup_value(b"").is_err());
        assert_eq!(v1_limit(b"9223372036854771712\n").unwrap(), None);
        assert_eq!(
            memory_events(b"low 0\nhigh 3\nmax 1\noom 0\noom_kill 0\n")
                .unwrap()
                .high,
            3
        );
        assert!(memory_events(b"nothing 1\n").is_err());
        assert_eq!(statm_resident_pages(b"100 42 3 4 0 5 0\n").unwrap(), 42);
    }

    #[test]
    fn mountinfo_finds_cgroup_mounts_and_unescapes() {
        let mi = b"31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:5 - cgroup cgroup rw,memory\n\
41 31 0:38 /ns /sys/fs/cgroup/uni\\040fied rw,relatime - cgroup2 cgroup2 rw\n";
        let m = cgroup_mounts(mi).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].super_options, "rw,memory");
        assert_eq!(m[1].mount_point, "/sys/fs/cgroup/uni fied");
        assert_eq!(m[1].root, "/ns");
    }

    #[test]
    fn proc_cgroup_lines() {
        let c = proc_cgroup(b"4:memory:/a/b\n1:cpu,cpuacct:/\n0::/user.slice\n").unwrap();
        assert_eq!(c[0].controllers, vec!["memory"]);
        assert_eq!(c[2].hierarchy, 0);
        assert!(c[2].controllers.is_empty());
        assert!(proc_cgroup(b"x:memory:/").is_err());
        assert!(proc_cgroup(b"4:memory").is_err());
    }

    #[test]
    fn fifo_lines_and_byte_counts() {
        let l = fifo_line(b"critical usage=10 limit=20").unwrap();
        assert_eq!(l.level, Level::Critical);
        assert_eq!((l.usage, l.limit), (Some(10), Some(20)));
        assert!(fifo_line(b"panic").is_err());
        assert!(fifo_line(b"none foo=1").is_err());
        assert_eq!(bytes_with_suffix("64M").unwrap(), 64 << 20);
        assert_eq!(bytes_with_suffix("1048576").unwrap(), 1 << 20);
        assert!(bytes_with_suffix("12Q").is_err());
        assert!(bytes_with_suffix("99999999999999999999G").is_err());
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]
        #[test]
        fn no_parser_panics_on_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = psi(&b);
            let _ = meminfo(&b);
            let _ = statm_resident_pages(&b);
            let _ = cgroup_value(&b);
            let _ = v1_limit(&b);
            let _ = keyed(&b, "hierarchical_memory_limit");
            let _ = memory_events(&b);
            let _ = cgroup_mounts(&b);
            let _ = proc_cgroup(&b);
            let _ = fifo_line(&b);
            let _ = bytes_with_suffix(&String::from_utf8_lossy(&b));
        }

        #[test]
        fn no_parser_panics_on_mutated_real_files(
            which in 0usize..4, cut in 0usize..200, flip in 0usize..200, byte in any::<u8>()
        ) {
            let samples: [&[u8]; 4] = [
                PSI,
                b"MemTotal: 24000000 kB\nMemFree: 100 kB\nMemAvailable: 600 kB\n",
                b"35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n",
                b"4:memory:/process_api/x\n0::/\n",
            ];
            let mut b = samples[which].to_vec();
            b.truncate(cut.min(b.len()));
            if !b.is_empty() {
                let i = flip % b.len();
                b[i] = byte;
            }
            let _ = psi(&b);
            let _ = meminfo(&b);
            let _ = cgroup_mounts(&b);
            let _ = proc_cgroup(&b);
        }
    }
}
