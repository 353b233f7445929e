//! Fill an `lru` or `quick_cache` cache with far more data than the
//! process's memory limit allows, with a reclaimer shrinking it through its
//! adapter: the process survives and keeps a working set. Run it inside a
//! memory cgroup (v1 `memory.limit_in_bytes` or v2 `memory.max`); with
//! `--no-reclaimer` it is the control run, which the OOM killer ends.
//!
//! ```text
//! cargo run --release --example fill_past_the_limit --features lru,quick_cache -- lru 1024
//! cargo run --release --example fill_past_the_limit --features lru,quick_cache -- quick_cache 1024 --no-reclaimer
//! ```
//!
//! Arguments: the cache (`lru` or `quick_cache`), the MiB to insert, and
//! optionally `--no-reclaimer`. Prints one line of figures and exits 0.
//! `FILL_PAUSE_US=n` pauses n µs after every MiB inserted; `FILL_EAGER=1`
//! turns the refill guard's sticky cap off.

use std::num::NonZeroUsize;
use std::process::ExitCode;

use shrinker::reclaim::Reclaimer;
use shrinker::ShrinkerRegistry;
use shrinker_adapters::{Options, RefillPolicy};

/// Bytes per value: 64 KiB, every page written.
const VALUE: usize = 64 << 10;

#[derive(Clone)]
struct Len;

impl quick_cache::Weighter<u64, Vec<u8>> for Len {
    fn weight(&self, _: &u64, v: &Vec<u8>) -> u64 {
        v.len() as u64
    }
}

fn value(i: u64) -> Vec<u8> {
    vec![(i as u8) | 1; VALUE]
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(kind), Some(mib)) = (
        args.first(),
        args.get(1).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: fill_past_the_limit <lru|quick_cache> <MiB> [--no-reclaimer]");
        return ExitCode::from(2);
    };
    let with_reclaimer = !args.iter().any(|a| a == "--no-reclaimer");
    let registry = ShrinkerRegistry::global();
    let reclaimer = if with_reclaimer {
        match Reclaimer::builder(registry).start() {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("no reclaimer: {e}");
                return ExitCode::from(3);
            }
        }
    } else {
        None
    };
    // `FILL_EAGER=1`: no sticky cap (the capacity comes back at the next
    // access), to see what the refill guard saves.
    let eager = std::env::var_os("FILL_EAGER").is_some_and(|v| v == "1");
    let options = |name: &str| {
        let mut o = Options::new(name);
        if eager {
            o = o.refill(RefillPolicy {
                cool_down: std::time::Duration::ZERO,
                step_interval: std::time::Duration::ZERO,
                steps: 1,
            });
        }
        match &reclaimer {
            Some(r) => o.reclaimer(r),
            None => o,
        }
    };
    let n = mib * (1 << 20) / VALUE as u64;
    // Pause this long (µs) after every MiB inserted: `FILL_PAUSE_US`, default 0.
    let pause = std::time::Duration::from_micros(
        std::env::var("FILL_PAUSE_US")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    );
    let per_mib = (1 << 20) / VALUE as u64;
    let breathe = |i: u64| {
        if i.is_multiple_of(per_mib) && !pause.is_zero() {
            std::thread::sleep(pause);
        }
    };
    // The working set: the first 64 keys, read back all along.
    let hot = 64;
    let (entries, hits) = match kind.as_str() {
        "lru" => {
            let cache = shrinker_adapters::lru::register_with(
                registry,
                options("fill-lru").object_bytes(VALUE),
                lru::LruCache::new(NonZeroUsize::new(n as usize + 1).unwrap_or(NonZeroUsize::MIN)),
            )
            .expect("register");
            let mut hits = 0u64;
            for i in 0..n {
                breathe(i);
                cache.lock().put(i, value(i));
                if cache.lock().get(&(i % hot)).is_some() {
                    hits += 1;
                }
            }
            let len = cache.lock().len();
            (len, hits)
        }
        "quick_cache" => {
            let cache = shrinker_adapters::quick_cache::register_with(
                registry,
                options("fill-quick_cache").bytes_per_weight(1),
                quick_cache::sync::Cache::with_weighter(n as usize, n * VALUE as u64, Len),
            )
            .expect("register");
            let mut hits = 0u64;
            for i in 0..n {
                breathe(i);
                cache.insert(i, value(i));
                if cache.get(&(i % hot)).is_some() {
                    hits += 1;
                }
            }
            (cache.len(), hits)
        }
        other => {
            eprintln!("unknown cache {other:?}: lru or quick_cache");
            return ExitCode::from(2);
        }
    };
    let held_mib = (entries as u64 * VALUE as u64) >> 20;
    print!("{kind}: inserted {mib} MiB, holds {entries} entries ({held_mib} MiB), working-set hits {hits}/{n}");
    if let Some(r) = reclaimer {
        let s = r.stats();
        print!(
            ", reclaimer: {} rounds, {} MiB freed, source {}",
            s.rounds,
            s.bytes_freed >> 20,
            s.source
        );
    }
    println!();
    ExitCode::SUCCESS
}
