//! The workload of the `reclaim` scenario and of `tests/reclaim_e2e.rs`, run as a child
//! process inside a limited memory cgroup: `shrinker-bench --reclaim-child <PARAMS>` (a
//! hidden flag).
//!
//! # What it does
//!
//! 1. Waits for a `go` line on stdin: the parent moves it into the cgroup first, so that
//!    everything below is charged there.
//! 2. Builds an `LruCache<u64, Box<[u8]>>` weighed in bytes (`weigher = len`) in the global
//!    registry, and the variant's reclaimer:
//!    - `shrinker`: `Reclaimer::builder(ShrinkerRegistry::global()).start()`, the pressure
//!      source auto-detected (here: the cgroup v1 memory cgroup it was moved into, watched
//!      with usage thresholds), the default [`ReclaimConfig`](shrinker::reclaim::ReclaimConfig);
//!    - `poll-1s`: what bcachefs-tools does in userspace (`linux/shrinker.c`): a thread wakes
//!      once a second, reads the memory in use, and if less than 1/16 of the limit is free,
//!      `want = limit/16 − free` bytes, it calls *every* registered shrinker's scan with that
//!      amount. bcachefs-tools passes `want >> PAGE_SHIFT` as `nr_to_scan`; our cache counts
//!      objects of `obj` bytes, so the faithful mapping of "free `want` bytes" is
//!      `registry.scan(id, 0, want / obj)` (passing pages would scan 16 times more bytes
//!      than wanted from 64 KiB objects). Like bcachefs-tools it never returns memory to
//!      the system (no `malloc_trim`): freed chunks stay in the allocator for reuse;
//!    - `none`: nothing.
//! 3. Fills the cache at `fill_mib_s` MiB/s (paced: the k-th value is inserted no earlier
//!    than `k × obj / rate` after the start) with `obj`-byte values written in full (so the
//!    pages are really allocated), up to `total` bytes, while it keeps using a working set:
//!    after every insert, `get`s on four random keys among the last 256 inserted.
//! 4. A sampler thread reads the cgroup's usage every millisecond and notes the first time
//!    it is at or above the Moderate mark (90 % of the limit) and the first time the cache's
//!    shrinker has been scanned (`shrinker_stats().scan_calls`); each is printed at once as
//!    an event line, so a parent still has them if the OOM killer ends the child.
//! 5. After the fill, the sampler stops, the child waits (up to 2 s) until the reclaimer has
//!    nothing to do (ours: its last level is None; poll-1s: more than 1/16 free), and 100 ms
//!    more (a running thread's `schedstat` lags by its current slice), then measures an idle stretch of `idle_ms`: the CPU time of the
//!    reclaiming thread (`/proc/self/task/<tid>/schedstat`, found by its name) over the wall
//!    time, in percent.
//! 6. Prints one result line and exits 0.
//!
//! # Output (stdout, one JSON object per line)
//!
//! - `{"event":"moderate","t_ms":F}`, `{"event":"scan","t_ms":F}`: times from the start of
//!   the fill;
//! - `{"event":"result", "variant":…, "moderate_ms":F|null, "first_scan_ms":F|null,
//!   "cache_bytes":N, "cache_low_bytes":N|null (the least the cache held, sampled, once
//!   its shrinker had been scanned), "idle_cpu_pct":F|null, "idle_rounds":N|null, "fill_s":F, "hits":N, "misses":N,
//!   "source":S}`.

use std::fs::File;
use std::io::{BufRead, Write as _};
use std::os::unix::fs::FileExt as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use shrinker::reclaim::Reclaimer;
use shrinker::{GroupId, LruCache, ShrinkerRegistry};
use shrinker_pressure::Level;

/// The reclaim policies compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Our reclaimer, auto-detected source, default configuration.
    Shrinker,
    /// bcachefs-tools' userspace shrinker thread: poll once a second, keep 1/16 free.
    Poll1s,
    /// No reclaim.
    None,
}

impl Variant {
    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Shrinker => "shrinker",
            Variant::Poll1s => "poll-1s",
            Variant::None => "none",
        }
    }

    fn parse(s: &str) -> Option<Variant> {
        [Variant::Shrinker, Variant::Poll1s, Variant::None]
            .into_iter()
            .find(|v| v.name() == s)
    }

    /// The name (`comm`, at most 15 bytes) of the thread whose CPU is measured.
    fn thread_name(self) -> Option<&'static str> {
        match self {
            Variant::Shrinker => Some("shrinker-reclai"),
            Variant::Poll1s => Some("poll-1s"),
            Variant::None => None,
        }
    }
}

/// The child's parameters, passed as `key=value,...` after `--reclaim-child`.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// The reclaim policy.
    pub variant: Variant,
    /// The cgroup directory the parent moved us into (its usage file is sampled).
    pub cgroup: std::path::PathBuf,
    /// The cgroup's usage file name (`memory.usage_in_bytes` or `memory.current`).
    pub usage_file: String,
    /// The cgroup's limit in bytes.
    pub limit: u64,
    /// Fill rate, MiB/s.
    pub fill_mib_s: u64,
    /// Bytes inserted in all.
    pub total: u64,
    /// Bytes per value.
    pub obj: usize,
    /// The idle stretch after the fill, in milliseconds.
    pub idle_ms: u64,
    /// The cache filled: `lrucache` (ours, the default), or through
    /// `shrinker-adapters`: `lru`, `quick_cache` (see `reclaim_adapters.rs`).
    pub cache: String,
}

impl Params {
    /// The argument text of `--reclaim-child`.
    pub fn to_arg(&self) -> String {
        format!(
            "variant={},cgroup={},usage_file={},limit={},fill_mib_s={},total={},obj={},idle_ms={},cache={}",
            self.variant.name(),
            self.cgroup.display(),
            self.usage_file,
            self.limit,
            self.fill_mib_s,
            self.total,
            self.obj,
            self.idle_ms,
            self.cache
        )
    }

    /// Parses [`to_arg`](Self::to_arg)'s text.
    ///
    /// # Errors
    ///
    /// A missing, unknown or malformed key, named.
    pub fn parse(arg: &str) -> Result<Params, String> {
        let get = |key: &str| -> Result<String, String> {
            arg.split(',')
                .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .map(str::to_owned)
                .ok_or_else(|| format!("--reclaim-child: missing {key}="))
        };
        let num = |key: &str, v: String| -> Result<u64, String> {
            v.parse()
                .map_err(|e| format!("--reclaim-child: {key}={v}: {e}"))
        };
        let variant = get("variant")?;
        let p = Params {
            variant: Variant::parse(&variant)
                .ok_or_else(|| format!("--reclaim-child: unknown variant {variant}"))?,
            cgroup: get("cgroup")?.into(),
            usage_file: get("usage_file")?,
            limit: num("limit", get("limit")?)?,
            fill_mib_s: num("fill_mib_s", get("fill_mib_s")?)?,
            total: num("total", get("total")?)?,
            obj: usize::try_from(num("obj", get("obj")?)?).map_err(|e| e.to_string())?,
            idle_ms: num("idle_ms", get("idle_ms")?)?,
            cache: get("cache").unwrap_or_else(|_| "lrucache".to_owned()),
        };
        if !["lrucache", "lru", "quick_cache"].contains(&p.cache.as_str()) {
            return Err(format!("--reclaim-child: unknown cache {}", p.cache));
        }
        if p.obj == 0 || p.fill_mib_s == 0 || p.limit == 0 {
            return Err("--reclaim-child: obj, fill_mib_s and limit must be positive".into());
        }
        Ok(p)
    }
}

/// Prints one JSON line on stdout, at once (the OOM killer may end us any moment).
pub(crate) fn emit(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}").and_then(|()| out.flush());
}

/// Reads a decimal number from an open cgroup file.
fn read_number(f: &File) -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = f.read_at(&mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// CPU time (ns) of this process's thread named `name`, from its `schedstat`.
fn thread_cpu_ns(name: &str) -> Option<u64> {
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = entry.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(dir.join("schedstat")).ok()?;
            return stat.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

/// A xorshift64 step: the working set's random picks.
pub(crate) fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// The working set: the last this-many keys.
pub(crate) const WORKING_SET: u64 = 256;

/// Runs the child (see the module documentation) and returns its exit code.
pub fn main(arg: &str) -> std::process::ExitCode {
    let p = match Params::parse(arg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("shrinker-bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() || line.trim() != "go" {
        return std::process::ExitCode::from(3); // the parent went away
    }
    if p.cache != "lrucache" {
        return crate::reclaim_adapters::main(&p);
    }
    let usage = match File::open(p.cgroup.join(&p.usage_file)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("shrinker-bench: --reclaim-child: {}: {e}", p.usage_file);
            return std::process::ExitCode::from(2);
        }
    };
    let cache = match LruCache::<u64, Box<[u8]>>::builder("reclaim-bench")
        .weigher(|_, v| v.len())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shrinker-bench: --reclaim-child: cache: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let (stop_poll, poll_stopped) = mpsc::channel::<()>();
    let reclaimer = match p.variant {
        Variant::Shrinker => match Reclaimer::builder(ShrinkerRegistry::global()).start() {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("shrinker-bench: --reclaim-child: reclaimer: {e}");
                return std::process::ExitCode::from(2);
            }
        },
        _ => None,
    };
    let source = reclaimer
        .as_ref()
        .map_or_else(String::new, |r| r.stats().source);
    let moderate_mark = p.limit / 10 * 9;
    let poll_mark = p.limit - p.limit / 16;
    let start = Instant::now();
    let ms = |t: Instant| t.saturating_duration_since(start).as_secs_f64() * 1e3;

    let sampler_stop = AtomicBool::new(false);
    let run = std::thread::scope(|s| {
        let (pr, ur) = (&p, &usage);
        let poller = (p.variant == Variant::Poll1s).then(|| {
            std::thread::Builder::new()
                .name("poll-1s".into())
                .spawn_scoped(s, move || poll_1s(pr, ur, &poll_stopped))
                .expect("spawning the poll-1s thread")
        });
        let sampler = s.spawn(|| {
            let scans0 = cache.shrinker_stats().scan_calls;
            let (mut moderate, mut scan) = (None, None);
            // The least the cache held once reclaim began (how deep a round cut).
            let mut low = usize::MAX;
            // Relaxed: a request to stop soon; the join orders the rest.
            while !sampler_stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if moderate.is_none() && read_number(&usage).is_some_and(|u| u >= moderate_mark) {
                    moderate = Some(now);
                    emit(&json!({"event": "moderate", "t_ms": ms(now)}));
                }
                if scan.is_none() && cache.shrinker_stats().scan_calls > scans0 {
                    scan = Some(now);
                    emit(&json!({"event": "scan", "t_ms": ms(now)}));
                }
                if scan.is_some() {
                    low = low.min(cache.weight());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            (moderate, scan, (low != usize::MAX).then_some(low))
        });
        let (hits, misses) = fill(&p, &cache, start);
        let fill_s = start.elapsed().as_secs_f64();
        // Relaxed: see the sampler's load.
        sampler_stop.store(true, Ordering::Relaxed);
        let (moderate, scan, cache_low) = sampler.join().expect("the sampler panicked");
        // Idle: wait (up to 2 s) until the reclaimer has nothing to do: level None for ours,
        // more than 1/16 of the limit free for poll-1s; then measure.
        let settle = Instant::now() + Duration::from_secs(2);
        let busy = || match (p.variant, &reclaimer) {
            (Variant::Shrinker, Some(r)) => r.stats().last_level != Level::None,
            (Variant::Poll1s, _) => read_number(&usage).is_some_and(|u| u > poll_mark),
            _ => false,
        };
        while Instant::now() < settle && busy() {
            std::thread::sleep(Duration::from_millis(10));
        }
        // A thread's `schedstat` is brought up to date when it leaves the CPU: let the
        // reclaimer finish what it was doing when the level fell and go to sleep, or the
        // first reading would miss its last slice and the idle figure would count it.
        std::thread::sleep(Duration::from_millis(100));
        let rounds = || reclaimer.as_ref().map(|r| r.stats().rounds);
        let rounds_before = rounds();
        let idle_cpu_pct = idle_cpu_pct(p.variant, Duration::from_millis(p.idle_ms));
        let idle_rounds = rounds().zip(rounds_before).map(|(a, b)| a - b);
        drop(stop_poll);
        if let Some(t) = poller {
            t.join().expect("the poll-1s thread panicked");
        }
        Run {
            moderate,
            scan,
            fill_s,
            hits,
            misses,
            idle_cpu_pct,
            idle_rounds,
            cache_low,
        }
    });
    let cache_bytes = cache.weight();
    let stats = reclaimer.as_ref().map(|r| {
        let st = r.stats();
        json!({
            "rounds": st.rounds,
            "passes": st.passes,
            "bytes_freed": st.bytes_freed,
            "trims": st.trims,
            "unreturned_rounds": st.unreturned_rounds,
            "budget_stops": st.budget_stops,
            "max_reaction_us": st.max_reaction.map(|d| d.as_micros() as u64),
            "cpu_used_ms": st.cpu_used.as_secs_f64() * 1e3,
            "last_level": st.last_level.as_str(),
        })
    });
    drop(reclaimer);
    emit(&json!({
        "event": "result",
        "variant": p.variant.name(),
        "moderate_ms": run.moderate.map(ms),
        "first_scan_ms": run.scan.map(ms),
        "cache_bytes": cache_bytes,
        "cache_low_bytes": run.cache_low,
        "idle_cpu_pct": run.idle_cpu_pct,
        "idle_rounds": run.idle_rounds,
        "fill_s": run.fill_s,
        "hits": run.hits,
        "misses": run.misses,
        "source": source,
        "reclaimer": stats,
    }));
    std::process::ExitCode::SUCCESS
}

/// What the threads of one run measured.
struct Run {
    moderate: Option<Instant>,
    scan: Option<Instant>,
    fill_s: f64,
    hits: u64,
    misses: u64,
    idle_cpu_pct: Option<f64>,
    idle_rounds: Option<u64>,
    cache_low: Option<usize>,
}

/// Step 3: the paced fill with the working set; returns the working set's hits and misses.
fn fill(p: &Params, cache: &LruCache<u64, Box<[u8]>>, start: Instant) -> (u64, u64) {
    paced_fill(
        p,
        start,
        |k, value| {
            if cache
                .insert(GroupId::ROOT, k, value.into_boxed_slice())
                .is_err()
            {
                unreachable!("the root group exists and node 0 is valid");
            }
        },
        |k| cache.get(&k).map(|v| std::hint::black_box(v[0])).is_some(),
    )
}

/// The fill every cache gets: `total / obj` values of `obj` bytes, keys 0, 1, …, inserted at
/// `fill_mib_s`; after each insert, 4 reads of random keys among the last [`WORKING_SET`]
/// (`hit` says whether the cache still had it). Returns (hits, misses).
pub(crate) fn paced_fill(
    p: &Params,
    start: Instant,
    mut insert: impl FnMut(u64, Vec<u8>),
    mut hit: impl FnMut(u64) -> bool,
) -> (u64, u64) {
    let n = p.total / p.obj as u64;
    let ns_per_obj = p.obj as f64 * 1e9 / (p.fill_mib_s as f64 * 1024.0 * 1024.0);
    let (mut hits, mut misses) = (0u64, 0u64);
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    for k in 0..n {
        let due = start + Duration::from_nanos((k as f64 * ns_per_obj) as u64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        // Every byte written (a non-zero fill is a memset): the pages are resident.
        insert(k, vec![(k as u8) | 1; p.obj]);
        for _ in 0..4 {
            let back = xorshift(&mut rng) % WORKING_SET.min(k + 1);
            if hit(k - back) {
                hits += 1;
            } else {
                misses += 1;
            }
        }
    }
    (hits, misses)
}

/// The `poll-1s` thread (module documentation, step 2).
fn poll_1s(p: &Params, usage: &File, stop: &mpsc::Receiver<()>) {
    let reg = ShrinkerRegistry::global();
    // Sleeps a second at a time (bcachefs-tools: a futex wait with a 1 s timeout); the
    // sender's drop ends it.
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(Duration::from_secs(1)) {
        let Some(used) = read_number(usage) else {
            continue;
        };
        let free = p.limit.saturating_sub(used);
        let want = (p.limit / 16).saturating_sub(free);
        if want == 0 {
            continue;
        }
        let nr = usize::try_from(want / p.obj as u64)
            .unwrap_or(usize::MAX)
            .max(1);
        for s in reg.shrinkers() {
            let _ = reg.scan(s.id, 0, nr);
        }
    }
}

/// Step 5: the CPU of the variant's reclaiming thread over `wall`, in percent of one CPU.
fn idle_cpu_pct(variant: Variant, wall: Duration) -> Option<f64> {
    let name = variant.thread_name()?;
    let before = thread_cpu_ns(name)?;
    let t0 = Instant::now();
    std::thread::sleep(wall);
    let after = thread_cpu_ns(name)?;
    let secs = t0.elapsed().as_secs_f64();
    Some(after.saturating_sub(before) as f64 / 1e9 / secs * 100.0)
}
