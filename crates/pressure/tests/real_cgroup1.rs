//! Real kernel, cgroup v1: a child process in a new memory cgroup with a 64 MiB limit
//! allocates toward it step by step, and a monitor on that cgroup (usage thresholds through
//! `cgroup.event_control`) sees Moderate, then Critical before the limit, then None once
//! the child has freed its memory.
//!
//! Only the child lives in the limited cgroup: the test runner cannot be OOM-killed by it,
//! and the child never goes past 98.5 % of the limit (it reads its own usage, which the
//! kernel's charge batching makes an over-estimate). The cgroup is created under this
//! process's own memory cgroup with a unique name and removed by a guard, whatever happens.
//! Where cgroup v1 memory is not mounted or not writable the test says `SKIPPED:` and why.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shrinker_pressure::{Level, Monitor, SourceKind, SourceSpec};

const CHILD_ENV: &str = "SHRINKER_PRESSURE_CG1_CHILD";
const LIMIT: u64 = 64 << 20;
const STEP: usize = 256 << 10; // >= glibc's mmap threshold: freed chunks go back at once

/// Not a test: the child process's entry point (see the module documentation). Without
/// the variable it returns at once.
#[test]
fn child_entry_point() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let usage = || -> u64 {
        std::fs::read_to_string(dir.join("memory.usage_in_bytes"))
            .expect("usage")
            .trim()
            .parse()
            .expect("usage number")
    };
    let mut lines = std::io::stdin().lock().lines();
    let mut expect = |word: &str| {
        let l = lines.next().and_then(Result::ok).unwrap_or_default();
        if l != word {
            std::process::exit(3); // The parent went away.
        }
    };
    let mut out = std::io::stdout().lock();
    let mut hold: Vec<Vec<u8>> = Vec::new();
    let mut fill_to = |fraction: f64| {
        let target = (LIMIT as f64 * fraction) as u64;
        while usage() < target {
            // vec![x; n] with x != 0 writes every byte: the pages are resident.
            hold.push(std::hint::black_box(vec![0x5a_u8; STEP]));
        }
    };
    expect("go");
    fill_to(0.93); // between the moderate (90 %) and critical (97 %) marks
    writeln!(out, "moderate-zone {}", usage()).unwrap();
    out.flush().unwrap();
    expect("go");
    fill_to(0.985); // past critical, short of the limit
    writeln!(out, "critical-zone {}", usage()).unwrap();
    out.flush().unwrap();
    expect("go");
    drop(hold);
    writeln!(out, "freed {}", usage()).unwrap();
    out.flush().unwrap();
    expect("exit");
    std::process::exit(0);
}

/// Removes the cgroup however the test ends (after the child is reaped).
struct CgroupGuard(PathBuf);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for _ in 0..100 {
            match std::fs::remove_dir(&self.0) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        eprintln!("warning: could not remove {}", self.0.display());
    }
}

/// Kills and reaps the child however the test ends.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn make_cgroup() -> Result<CgroupGuard, String> {
    let own = shrinker_pressure::own_cgroups().map_err(|e| e.to_string())?;
    let parent = own
        .v1_memory
        .ok_or("no cgroup v1 memory controller mounted for this process")?;
    let dir = parent.join(format!(
        "shrinker-pressure-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let guard = CgroupGuard(dir);
    std::fs::write(guard.0.join("memory.limit_in_bytes"), LIMIT.to_string())
        .map_err(|e| format!("cannot set memory.limit_in_bytes: {e}"))?;
    if !guard.0.join("cgroup.event_control").exists() {
        return Err("no cgroup.event_control (kernel without memcg v1 events)".into());
    }
    Ok(guard)
}

fn send(stdin: &mut ChildStdin, word: &str) {
    writeln!(stdin, "{word}").unwrap();
    stdin.flush().unwrap();
}

/// Waits on the monitor until `want` is reported (or `limit` passes), recording changes.
fn wait_for(m: &mut Monitor, want: Level, limit: Duration, seen: &mut Vec<Level>) -> bool {
    let end = Instant::now() + limit;
    if m.current().level == want {
        return true;
    }
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now());
        if let Some(r) = m.wait(Some(left)).unwrap() {
            seen.push(r.level);
            if r.level == want {
                return true;
            }
        }
    }
    false
}

#[test]
#[cfg_attr(miri, ignore)] // cgroups, processes
fn cgroup1_child_filling_its_limit_is_seen_moderate_then_critical_then_none() {
    let guard = match make_cgroup() {
        Ok(g) => g,
        Err(why) => {
            eprintln!("SKIPPED: cgroup v1 memory test: {why}");
            return;
        }
    };
    let dir: &Path = &guard.0;
    let t0 = Instant::now();
    let mut child = Reap(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_entry_point",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(CHILD_ENV, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    std::fs::write(dir.join("cgroup.procs"), child.0.id().to_string()).unwrap();
    let mut stdin = child.0.stdin.take().unwrap();
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let ours = line.contains("-zone") || line.starts_with("freed");
            if ours && tx.send(line).is_err() {
                break;
            }
        }
    });
    let from_child = |what: &str| -> String {
        let l = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("child did not report {what} within 5 s"));
        assert!(l.starts_with(what), "expected {what}, got {l}");
        l
    };

    let mut m = Monitor::builder()
        .source(SourceSpec::Cgroup1(Some(dir.to_owned())))
        .no_fallback()
        .build()
        .unwrap();
    assert_eq!(m.source_kind(), SourceKind::Cgroup1);
    eprintln!("{}", m.describe());
    assert_eq!(
        m.current().level,
        Level::None,
        "empty cgroup: {:?}",
        m.current()
    );
    let mut seen = Vec::new();

    send(&mut stdin, "go");
    let l = from_child("moderate-zone");
    assert!(
        wait_for(&mut m, Level::Moderate, Duration::from_secs(3), &mut seen),
        "Moderate not seen ({l}); changes: {seen:?}, current {:?}",
        m.current()
    );
    let r = m.current().clone();
    assert_eq!(r.limit, Some(LIMIT));
    assert!(r.usage.unwrap() >= LIMIT / 10 * 9, "{r:?}");
    assert!(r.headroom.unwrap() > 0, "over the stop mark: {r:?}");

    send(&mut stdin, "go");
    let l = from_child("critical-zone");
    assert!(
        wait_for(&mut m, Level::Critical, Duration::from_secs(3), &mut seen),
        "Critical not seen ({l}); changes: {seen:?}, current {:?}",
        m.current()
    );
    assert!(m.current().usage.unwrap() < LIMIT, "{:?}", m.current());

    send(&mut stdin, "go");
    let l = from_child("freed");
    assert!(
        wait_for(&mut m, Level::None, Duration::from_secs(4), &mut seen),
        "None not seen after freeing ({l}); changes: {seen:?}, current {:?}",
        m.current()
    );
    assert_eq!(
        seen.first(),
        Some(&Level::Moderate),
        "Moderate first: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&Level::None), "{seen:?}");

    send(&mut stdin, "exit");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "child was not OOM-killed: {status:?}");
    eprintln!("levels seen: {seen:?} in {:?}", t0.elapsed());
    drop(m);
    drop(child);
    drop(guard);
}

#[test]
#[cfg_attr(miri, ignore)] // cgroups
fn cgroup1_removed_under_the_monitor_falls_back_and_says_so() {
    let guard = match make_cgroup() {
        Ok(g) => g,
        Err(why) => {
            eprintln!("SKIPPED: cgroup v1 removal test: {why}");
            return;
        }
    };
    let mut m = Monitor::builder()
        .source(SourceSpec::Cgroup1(Some(guard.0.clone())))
        .build()
        .unwrap();
    assert_eq!(m.source_kind(), SourceKind::Cgroup1);
    std::fs::remove_dir(&guard.0).unwrap();
    // The kernel signals every registered eventfd on removal; the next read fails.
    let end = Instant::now() + Duration::from_secs(5);
    while m.failovers() == 0 && Instant::now() < end {
        let _ = m.wait(Some(Duration::from_millis(100))).unwrap();
    }
    let d = m.describe();
    assert_eq!(m.failovers(), 1, "{d}");
    assert_ne!(m.source_kind(), SourceKind::Cgroup1, "{d}");
    assert!(d.contains("died cgroup1"), "{d}");
    assert!(d.contains("memory.usage_in_bytes"), "names the file: {d}");
}

const AUTO_ENV: &str = "SHRINKER_PRESSURE_AUTO_CHILD";

/// Not a test: a child that waits to be moved into a cgroup, then prints what
/// `Monitor::auto()` chose. Without the variable it returns at once.
#[test]
fn auto_child_entry_point() {
    if std::env::var_os(AUTO_ENV).is_none() {
        return;
    }
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let text = match Monitor::auto() {
        Ok(m) => m.describe(),
        Err(e) => format!("ERROR {e}"),
    };
    let mut out = std::io::stdout().lock();
    for l in text.lines() {
        writeln!(out, "D {l}").unwrap();
    }
    out.flush().unwrap();
    std::process::exit(0);
}

/// Runs `auto_child_entry_point` inside the cgroup whose `cgroup.procs` is `procs`, and
/// returns its describe() lines.
pub fn auto_choice_inside(procs: &Path) -> Vec<String> {
    let mut child = Reap(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "auto_child_entry_point",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(AUTO_ENV, "1")
            .env_remove("MEMORY_PRESSURE_WATCH")
            .env_remove("MEMORY_PRESSURE_WRITE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    std::fs::write(procs, child.0.id().to_string()).unwrap();
    let mut stdin = child.0.stdin.take().unwrap();
    send(&mut stdin, "go");
    let mut out = String::new();
    std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    out.lines()
        .filter_map(|l| l.strip_prefix("D "))
        .map(str::to_owned)
        .collect()
}

#[test]
#[cfg_attr(miri, ignore)] // cgroups, processes
fn auto_detection_inside_a_limited_cgroup1_picks_it() {
    let guard = match make_cgroup() {
        Ok(g) => g,
        Err(why) => {
            eprintln!("SKIPPED: cgroup v1 auto-detection test: {why}");
            return;
        }
    };
    let d = auto_choice_inside(&guard.0.join("cgroup.procs"));
    let live = d.first().cloned().unwrap_or_default();
    if live.starts_with("live: systemd") || live.starts_with("live: cgroup2") {
        // A host whose cgroup v2 has the memory controller with a limit ranks it first.
        eprintln!("note: a better rung than cgroup1 is live here: {d:?}");
        return;
    }
    assert!(
        live.starts_with(&format!("live: cgroup1 {}", guard.0.display())),
        "auto-detection inside the limited cgroup: {d:?}"
    );
}

#[test]
#[cfg_attr(miri, ignore)] // cgroups, processes
fn auto_detection_inside_a_cgroup2_child_uses_its_own_memory_pressure() {
    let own = shrinker_pressure::own_cgroups().unwrap();
    let Some(v2) = own.v2 else {
        eprintln!("SKIPPED: cgroup2 auto-detection test: no cgroup2 mount");
        return;
    };
    let dir = v2.join(format!("shrinker-pressure-test-v2-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&dir) {
        eprintln!(
            "SKIPPED: cgroup2 auto-detection test: cannot create {}: {e}",
            dir.display()
        );
        return;
    }
    let guard = CgroupGuard(dir);
    if !guard.0.join("memory.pressure").exists() {
        eprintln!("SKIPPED: cgroup2 auto-detection test: no memory.pressure (PSI off)");
        return;
    }
    let d = auto_choice_inside(&guard.0.join("cgroup.procs"));
    let live = d.first().cloned().unwrap_or_default();
    if live.starts_with("live: systemd") || live.starts_with("live: cgroup1") {
        eprintln!("note: a better rung than the cgroup2 PSI is live here: {d:?}");
        return;
    }
    let ours = guard.0.display().to_string();
    assert!(
        live.starts_with(&format!("live: psi {ours}/memory.pressure"))
            || live.starts_with(&format!("live: cgroup2 {ours}")),
        "auto-detection inside a cgroup2 child: {d:?}"
    );
}
