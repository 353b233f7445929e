//! `shrinkctl demo`: the story of the project in about a minute.
//!
//! A workload fills a cache (256 KiB values, 16 MiB a second) in a memory
//! cgroup with a limit (64 MiB; no swap). It runs twice:
//!
//! 1. without a reclaimer: the cache grows past the limit and the kernel's
//!    OOM killer kills it: the demo shows when;
//! 2. with a [`Reclaimer`](shrinker::reclaim::Reclaimer) watching the cgroup: at 90 % of the limit the
//!    reclaimer evicts the cache's least recently used values and the
//!    workload lives: the demo charts usage against the limit, the pressure
//!    level and the bytes freed, once a second.
//!
//! Then a side-by-side table. The cgroup is a child of the process's own
//! memory cgroup: cgroup v2 (`memory.max`, `memory.swap.max = 0`) or v1
//! (`memory.limit_in_bytes`, `memory.memsw.limit_in_bytes`,
//! `memory.swappiness = 0`), removed afterwards. Where none can be created
//! (no permission, no controller) the demo says why and uses an RSS target
//! instead: the workload's resident size against the limit, the demo itself
//! playing the OOM killer at the target.
//!
//! The workload is this binary again (`shrinkctl demo-workload`, hidden),
//! reporting a JSON line every 250 ms on its stdout. The demo exits 0 when
//! the story ran as told: the run without a reclaimer was killed and the run
//! with one lived to the end.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::human_bytes;

/// How to run the story.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The memory limit: 64 MiB.
    pub limit: u64,
    /// How fast the cache grows, bytes per second: 16 MiB.
    pub rate: u64,
    /// How long the run with the reclaimer lasts: 20 s.
    pub seconds: u64,
    /// Skip the cgroup and use the RSS target.
    pub force_rss: bool,
    /// ANSI colours (a terminal, and `NO_COLOR` unset).
    pub colour: bool,
}

impl DemoOptions {
    /// The full story (about 30 s).
    pub fn full() -> Self {
        DemoOptions {
            limit: 64 << 20,
            rate: 16 << 20,
            seconds: 20,
            force_rss: false,
            colour: false,
        }
    }

    /// A short story for tests (about 8 s).
    pub fn short() -> Self {
        DemoOptions {
            limit: 48 << 20,
            rate: 24 << 20,
            seconds: 4,
            ..DemoOptions::full()
        }
    }
}

/// Where the workload runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cage {
    /// A cgroup v1 memory cgroup directory.
    V1(PathBuf),
    /// A cgroup v2 directory.
    V2(PathBuf),
    /// No cgroup: the RSS target.
    Rss,
}

impl Cage {
    fn arg(&self) -> String {
        match self {
            Cage::V1(d) => format!("v1:{}", d.display()),
            Cage::V2(d) => format!("v2:{}", d.display()),
            Cage::Rss => "rss".to_owned(),
        }
    }

    fn parse(s: &str) -> Result<Cage, String> {
        match s.split_once(':') {
            Some(("v1", d)) => Ok(Cage::V1(PathBuf::from(d))),
            Some(("v2", d)) => Ok(Cage::V2(PathBuf::from(d))),
            None if s == "rss" => Ok(Cage::Rss),
            _ => Err(format!("bad cage {s:?}")),
        }
    }

    fn dir(&self) -> Option<&Path> {
        match self {
            Cage::V1(d) | Cage::V2(d) => Some(d),
            Cage::Rss => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Cage::V1(d) => format!("cgroup v1 memory cgroup {}", d.display()),
            Cage::V2(d) => format!("cgroup v2 cgroup {}", d.display()),
            Cage::Rss => "no cgroup: RSS target".to_owned(),
        }
    }
}

fn write(path: &Path, v: &str) -> io::Result<()> {
    fs::write(path, v).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn make_v1(parent: &Path, name: &str, limit: u64) -> io::Result<PathBuf> {
    let dir = parent.join(name);
    fs::create_dir(&dir)
        .map_err(|e| io::Error::new(e.kind(), format!("mkdir {}: {e}", dir.display())))?;
    let set = || -> io::Result<()> {
        write(&dir.join("memory.limit_in_bytes"), &limit.to_string())?;
        // Where swap accounting exists, no swap either; without swap
        // (this file absent) there is nothing to limit.
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            write(&memsw, &limit.to_string())?;
        }
        let _ = write(&dir.join("memory.swappiness"), "0");
        Ok(())
    };
    match set() {
        Ok(()) => Ok(dir),
        Err(e) => {
            let _ = fs::remove_dir(&dir);
            Err(e)
        }
    }
}

fn make_v2(parent: &Path, name: &str, limit: u64) -> io::Result<PathBuf> {
    // The memory controller must be enabled for the children of `parent`.
    let sub = fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
    if !sub.split_whitespace().any(|c| c == "memory") {
        write(&parent.join("cgroup.subtree_control"), "+memory")?;
    }
    let dir = parent.join(name);
    fs::create_dir(&dir)
        .map_err(|e| io::Error::new(e.kind(), format!("mkdir {}: {e}", dir.display())))?;
    let set = || -> io::Result<()> {
        write(&dir.join("memory.max"), &limit.to_string())?;
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            write(&swap, "0")?;
        }
        Ok(())
    };
    match set() {
        Ok(()) => Ok(dir),
        Err(e) => {
            let _ = fs::remove_dir(&dir);
            Err(e)
        }
    }
}

/// Create the cage for one run (or say why not and use the RSS target).
pub fn make_cage(limit: u64, run: &str, force_rss: bool) -> (Cage, Option<String>) {
    if force_rss {
        return (Cage::Rss, Some("--rss given".to_owned()));
    }
    let own = match shrinker_pressure::own_cgroups() {
        Ok(o) => o,
        Err(e) => return (Cage::Rss, Some(format!("cannot locate own cgroups: {e}"))),
    };
    let name = format!("shrinkctl-demo-{}-{run}", std::process::id());
    let mut why = Vec::new();
    if let Some(v2) = &own.v2 {
        match make_v2(v2, &name, limit) {
            Ok(d) => return (Cage::V2(d), None),
            Err(e) => why.push(format!("cgroup v2: {e}")),
        }
    }
    if let Some(v1) = &own.v1_memory {
        match make_v1(v1, &name, limit) {
            Ok(d) => return (Cage::V1(d), None),
            Err(e) => why.push(format!("cgroup v1: {e}")),
        }
    }
    if why.is_empty() {
        why.push("no memory cgroup hierarchy is mounted".to_owned());
    }
    (
        Cage::Rss,
        Some(format!("none could be created: {}", why.join("; "))),
    )
}

fn remove_cage(cage: &Cage) {
    if let Some(d) = cage.dir() {
        // The killed process may take a moment to leave the cgroup.
        for _ in 0..100 {
            if fs::remove_dir(d).is_ok() || !d.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The kernel's OOM-kill count of the cage, where the cgroup says it.
fn oom_kills(cage: &Cage) -> Option<u64> {
    let (file, key) = match cage {
        Cage::V1(d) => (d.join("memory.oom_control"), "oom_kill"),
        Cage::V2(d) => (d.join("memory.events"), "oom_kill"),
        Cage::Rss => return None,
    };
    let text = fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunResult {
    /// Killed (by the OOM killer, or by the demo at the RSS target), and when.
    pub killed_at: Option<Duration>,
    /// The kernel's OOM-kill count in the cage, where known.
    pub oom_kills: Option<u64>,
    /// Ran to its end and exited 0.
    pub completed: bool,
    /// How long it ran.
    pub ran: Duration,
    /// The highest usage reported.
    pub peak: u64,
    /// Bytes the reclaimer freed.
    pub freed: u64,
    /// Reclaim rounds.
    pub rounds: u64,
    /// The highest level seen.
    pub max_level: String,
    /// What went wrong, if the run could not be told.
    pub error: Option<String>,
}

fn level_rank(l: &str) -> u8 {
    match l {
        "critical" => 2,
        "moderate" => 1,
        _ => 0,
    }
}

/// One chart row: usage against the limit as a bar.
pub fn chart_row(status: &Value, limit: u64, colour: bool) -> String {
    const WIDTH: usize = 40;
    let t = status.get("t").and_then(Value::as_f64).unwrap_or(0.0);
    let usage = status.get("usage").and_then(Value::as_u64).unwrap_or(0);
    let level = status.get("level").and_then(Value::as_str).unwrap_or("-");
    let freed = status.get("freed").and_then(Value::as_u64).unwrap_or(0);
    let filled = ((usage as f64 / limit.max(1) as f64) * WIDTH as f64).round() as usize;
    let filled = filled.min(WIDTH);
    let bar: String = "#".repeat(filled) + &".".repeat(WIDTH - filled);
    let (c, r) = if colour {
        let c = match level {
            "critical" => "\x1b[31m",
            "moderate" => "\x1b[33m",
            _ => "\x1b[32m",
        };
        (c, "\x1b[0m")
    } else {
        ("", "")
    };
    format!(
        "{t:5.1}s |{c}{bar}{r}| {:>9} of {:>8}  level {:<8}  freed {:>9}",
        human_bytes(usage),
        human_bytes(limit),
        level,
        human_bytes(freed),
    )
}

fn run_once(
    out: &mut dyn Write,
    opts: &DemoOptions,
    with: bool,
    run: &str,
    interrupted: &AtomicBool,
) -> Result<RunResult, String> {
    let (cage, why) = make_cage(opts.limit, run, opts.force_rss);
    if let Some(why) = &why {
        let _ = writeln!(
            out,
            "  no memory cgroup ({why}); using an RSS target of {} instead \
             (the demo stops the workload when its resident size passes it, as the OOM killer would at a limit)",
            human_bytes(opts.limit)
        );
    } else {
        let _ = writeln!(out, "  in {}", cage.describe());
    }
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    // The workload's seconds: the run without a reclaimer is meant to die
    // long before its end.
    let seconds = if with {
        opts.seconds
    } else {
        opts.seconds.max(10) * 3
    };
    let mut child = Command::new(exe)
        .args([
            "demo-workload",
            "--cage",
            &cage.arg(),
            "--limit",
            &opts.limit.to_string(),
            "--rate",
            &opts.rate.to_string(),
            "--seconds",
            &seconds.to_string(),
        ])
        .args(if with { &["--reclaimer"][..] } else { &[][..] })
        // A fixed mmap threshold: every 256 KiB value is its own mapping,
        // returned to the system when freed (no allocator caching muddles
        // the story; the reclaimer's malloc_trim covers the rest).
        .env("MALLOC_MMAP_THRESHOLD_", "131072")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            remove_cage(&cage);
            format!("starting the workload: {e}")
        })?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds + 15);
    let mut res = RunResult {
        max_level: "none".to_owned(),
        ..RunResult::default()
    };
    let mut last: Option<Value> = None;
    let mut next_row = started + Duration::from_secs(1);
    let mut rss_killed = false;
    let mut printed: Option<Value> = None;
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(v) => {
                if let Some(e) = v.get("error").and_then(Value::as_str) {
                    res.error = Some(e.to_owned());
                }
                let usage = v.get("usage").and_then(Value::as_u64).unwrap_or(0);
                res.peak = res.peak.max(usage);
                if let Some(f) = v.get("freed").and_then(Value::as_u64) {
                    res.freed = f;
                }
                if let Some(r) = v.get("rounds").and_then(Value::as_u64) {
                    res.rounds = r;
                }
                if let Some(l) = v.get("level").and_then(Value::as_str) {
                    if level_rank(l) > level_rank(&res.max_level) {
                        res.max_level = l.to_owned();
                    }
                }
                if cage == Cage::Rss && !with && usage >= opts.limit && !rss_killed {
                    // The demo plays the OOM killer at the RSS target.
                    let _ = child.kill();
                    rss_killed = true;
                }
                if v.get("t").is_some() {
                    last = Some(v);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // The workload closed its output: it is exiting.
                break child.wait().map_err(|e| e.to_string())?;
            }
        }
        let now = Instant::now();
        if now >= next_row {
            if let Some(v) = &last {
                let _ = writeln!(out, "  {}", chart_row(v, opts.limit, opts.colour));
                let _ = out.flush();
                printed = Some(v.clone());
            }
            next_row += Duration::from_secs(1);
        }
        // Relaxed: set by the signal handler; nothing else is published.
        if interrupted.load(Ordering::Relaxed) {
            // Ctrl-C: the workload may have had it too; make sure it is
            // gone and its cgroup removed before leaving.
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            remove_cage(&cage);
            return Err("interrupted".to_owned());
        }
        if now >= deadline {
            let _ = child.kill();
            res.error = Some("the workload did not finish in time".to_owned());
            break child.wait().map_err(|e| e.to_string())?;
        }
    };
    let _ = reader.join();
    res.ran = started.elapsed();
    {
        use std::os::unix::process::ExitStatusExt;
        if status.signal() == Some(9) {
            res.killed_at = Some(res.ran);
        }
        res.completed = status.success() && res.error.is_none();
    }
    res.oom_kills = oom_kills(&cage);
    remove_cage(&cage);
    // Relaxed: as above. (The workload may have died of the same Ctrl-C.)
    if interrupted.load(Ordering::Relaxed) {
        return Err("interrupted".to_owned());
    }
    if let Some(v) = last.as_ref().filter(|v| Some(*v) != printed.as_ref()) {
        let _ = writeln!(out, "  {}", chart_row(v, opts.limit, opts.colour));
    }
    match (&res.killed_at, res.completed) {
        (Some(t), _) => {
            let by = match (&cage, res.oom_kills) {
                (Cage::Rss, _) => {
                    "stopped at the RSS target (where a limit's OOM killer would strike)".to_owned()
                }
                (_, Some(n)) if n > 0 => format!("OOM-killed by the kernel (oom_kill {n})"),
                _ => "killed (SIGKILL)".to_owned(),
            };
            let _ = writeln!(out, "  => {by} after {:.1} s", t.as_secs_f64());
        }
        (None, true) => {
            let _ = writeln!(out, "  => alive after {:.1} s", res.ran.as_secs_f64());
        }
        (None, false) => {
            let _ = writeln!(
                out,
                "  => the workload failed: {}",
                res.error.as_deref().unwrap_or("exited with an error")
            );
        }
    }
    Ok(res)
}

/// The side-by-side table.
pub fn table(a: &RunResult, b: &RunResult, limit: u64) -> String {
    let outcome = |r: &RunResult| match (r.killed_at, r.completed) {
        (Some(t), _) => format!("killed at {:.1} s", t.as_secs_f64()),
        (None, true) => format!("alive after {:.1} s", r.ran.as_secs_f64()),
        (None, false) => "failed".to_owned(),
    };
    let rows = [
        ("outcome", outcome(a), outcome(b)),
        ("limit", human_bytes(limit), human_bytes(limit)),
        ("peak usage", human_bytes(a.peak), human_bytes(b.peak)),
        ("bytes freed", "-".to_owned(), human_bytes(b.freed)),
        ("reclaim rounds", "-".to_owned(), b.rounds.to_string()),
        ("highest level", "-".to_owned(), b.max_level.clone()),
    ];
    let mut out = format!(
        "{:<16} {:<24} {:<24}\n",
        "", "without reclaimer", "with reclaimer"
    );
    for (k, x, y) in rows {
        out.push_str(&format!("{k:<16} {x:<24} {y:<24}\n"));
    }
    out
}

/// Run the story; `Ok(true)` when it ran as told.
///
/// # Errors
///
/// When a run could not be started at all.
pub fn run(out: &mut dyn Write, opts: &DemoOptions) -> Result<bool, String> {
    let _ = writeln!(
        out,
        "shrinker demo: a cache growing {}/s under a {} memory limit, without and with a reclaimer\n",
        human_bytes(opts.rate),
        human_bytes(opts.limit)
    );
    // Ctrl-C or SIGTERM: stop the workload and remove its cgroup first.
    let interrupted = Arc::new(AtomicBool::new(false));
    let mut handlers = Vec::new();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Ok(id) = signal_hook::flag::register(sig, Arc::clone(&interrupted)) {
            handlers.push(id);
        }
    }
    let story = (|| {
        let _ = writeln!(out, "1. without a reclaimer:");
        let a = run_once(out, opts, false, "without", &interrupted)?;
        let _ = writeln!(out, "\n2. with a reclaimer (shrinker::reclaim::Reclaimer):");
        let b = run_once(out, opts, true, "with", &interrupted)?;
        Ok::<_, String>((a, b))
    })();
    for id in handlers {
        signal_hook::low_level::unregister(id);
    }
    let (a, b) = story?;
    let _ = writeln!(out);
    let _ = write!(out, "{}", table(&a, &b, opts.limit));
    let ok = a.killed_at.is_some() && b.completed && b.killed_at.is_none();
    if ok {
        let _ = writeln!(
            out,
            "\nThe reclaimer kept the cache under the limit: {} freed, no OOM kill.",
            human_bytes(b.freed)
        );
    } else {
        let _ = writeln!(out, "\nThe story did not run as told (see above).");
    }
    Ok(ok)
}

fn usage_of(cage: &Cage) -> Option<u64> {
    let file = match cage {
        Cage::V1(d) => d.join("memory.usage_in_bytes"),
        Cage::V2(d) => d.join("memory.current"),
        Cage::Rss => {
            let statm = fs::read("/proc/self/statm").ok()?;
            let pages = shrinker_pressure::parse::statm_resident_pages(&statm).ok()?;
            return Some(pages * rustix::param::page_size() as u64);
        }
    };
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// The workload (`shrinkctl demo-workload`): join the cage, fill a cache,
/// report every 250 ms, stop after `seconds`.
pub fn workload(cage: &str, limit: u64, rate: u64, seconds: u64, with_reclaimer: bool) -> i32 {
    use shrinker::reclaim::Reclaimer;
    use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    use shrinker_pressure::{Monitor, SourceSpec};

    let mut out = io::stdout();
    let fail = |out: &mut io::Stdout, e: String| {
        let _ = writeln!(out, "{}", json!({ "error": e }));
        2
    };
    let cage = match Cage::parse(cage) {
        Ok(c) => c,
        Err(e) => return fail(&mut out, e),
    };
    if let Some(d) = cage.dir() {
        // "0": the writing process itself (v1 and v2).
        if let Err(e) = write(&d.join("cgroup.procs"), "0") {
            return fail(&mut out, format!("joining the cgroup: {e}"));
        }
    }
    let Ok(registry) = ShrinkerRegistry::builder().nodes(1).build() else {
        return fail(&mut out, "registry".to_owned());
    };
    let cache: LruCache<u64, Vec<u8>> = match LruCache::builder("demo-cache")
        .weigher(|_, v: &Vec<u8>| v.len())
        // Free in steps of 1 MiB (4 values), not the default batch of 128
        // values (32 MiB, half the limit).
        .batch(4)
        .build_in(&registry)
    {
        Ok(c) => c,
        Err(e) => return fail(&mut out, e.to_string()),
    };
    let reclaimer = if with_reclaimer {
        let spec = match &cage {
            Cage::V1(d) => SourceSpec::Cgroup1(Some(d.clone())),
            Cage::V2(d) => SourceSpec::Cgroup2(Some(d.clone())),
            Cage::Rss => SourceSpec::Rss(limit),
        };
        // The RSS source is polled: look often, the cache grows fast.
        let config = shrinker_pressure::Config {
            poll_interval: Duration::from_millis(50),
            ..shrinker_pressure::Config::default()
        };
        let m = match Monitor::builder()
            .source(spec)
            .config(config)
            .no_fallback()
            .build()
        {
            Ok(m) => m,
            Err(e) => return fail(&mut out, format!("pressure source: {e}")),
        };
        match Reclaimer::builder(&registry).monitor(m).start() {
            Ok(r) => Some(r),
            Err(e) => return fail(&mut out, e.to_string()),
        }
    } else {
        None
    };
    const VALUE: usize = 256 << 10;
    const TICK: Duration = Duration::from_millis(50);
    let per_tick = ((rate as f64 * TICK.as_secs_f64()) / VALUE as f64).max(1.0) as usize;
    let started = Instant::now();
    let mut next_report = started;
    let mut key = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        for _ in 0..per_tick {
            key += 1;
            let _ = cache.insert(GroupId::ROOT, key, vec![(key % 251) as u8 + 1; VALUE]);
        }
        if Instant::now() >= next_report {
            let (level, freed, rounds) = match &reclaimer {
                Some(r) => {
                    let st = r.stats();
                    (r.level_watch().level().as_str(), st.bytes_freed, st.rounds)
                }
                None => ("-", 0, 0),
            };
            let line = json!({
                "t": started.elapsed().as_secs_f64(),
                "usage": usage_of(&cage),
                "limit": limit,
                "cache": cache.weight(),
                "level": level,
                "freed": freed,
                "rounds": rounds,
            });
            if writeln!(out, "{line}").is_err() {
                return 3;
            }
            let _ = out.flush();
            next_report += Duration::from_millis(250);
        }
        std::thread::sleep(TICK);
    }
    drop(reclaimer);
    0
}
