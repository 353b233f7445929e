//! Per-tenant page caches under a memory budget.
//!
//! Three tenants, each in its own memory group, read pages through one
//! shared `LruCache`; a miss "reads from disk" and inserts the page into the
//! tenant's group (`get_or_insert_with`). A reclaimer thread watches the cache's weight and, when
//! it is over budget, shrinks each tenant's group from the gentlest priority
//! down until the cache fits again, as the kernel's reclaim does. Each
//! tenant loses its own least recently used pages (a page read since the
//! last pass gets a second chance), in proportion to what it holds. At the end a tenant leaves: its pages move to the root group.
//!
//! Run: `cargo run -p shrinker --example lru_cache`

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use shrinker::{GroupId, LruCache, ShrinkRequest, ShrinkerRegistry};

const PAGE: usize = 4096;
const BUDGET: usize = 8 << 20; // bytes the cache may hold
const RUN: Duration = Duration::from_millis(500);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = ShrinkerRegistry::builder().nodes(1).build()?;
    // (name, working set in pages); together they want 4x the budget.
    let tenants = [("alice", 1024), ("bob", 2048), ("carol", 5120)];
    let groups = tenants
        .iter()
        .map(|_| registry.create_group(GroupId::ROOT))
        .collect::<Result<Vec<_>, _>>()?;
    let cache = Arc::new(
        LruCache::<(usize, u64), Vec<u8>>::builder("pages")
            .weigher(|_, page| page.len())
            .build_in(&registry)?,
    );
    let evicted: Arc<Vec<AtomicUsize>> =
        Arc::new(tenants.iter().map(|_| AtomicUsize::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));

    let reclaimer = {
        let (registry, cache, groups) = (registry.clone(), cache.clone(), groups.clone());
        let (evicted, done) = (evicted.clone(), done.clone());
        thread::spawn(move || -> Result<(), shrinker::ShrinkError> {
            while !done.load(Ordering::Relaxed) {
                // From gentle (12) to desperate (0), until under budget.
                for priority in (0..=12).rev() {
                    if cache.weight() <= BUDGET {
                        break;
                    }
                    for (t, &group) in groups.iter().enumerate() {
                        let freed = registry.shrink(&ShrinkRequest {
                            group,
                            priority,
                            node: 0,
                        })?;
                        evicted[t].fetch_add(freed, Ordering::Relaxed);
                    }
                }
                thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })
    };

    let readers: Vec<_> = tenants
        .iter()
        .zip(&groups)
        .enumerate()
        .map(|(t, (&(_, pages), &group))| {
            let cache = cache.clone();
            thread::spawn(move || -> Result<(u64, u64), shrinker::CacheError> {
                let (mut hits, mut misses, mut x) = (0, 0, 0x2545_f491_4f6c_dd1d_u64 + t as u64);
                let start = Instant::now();
                while start.elapsed() < RUN {
                    // Skewed reads: low page numbers are hot.
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let r = (x % 1000) as f64 / 1000.0;
                    let page = (r * r * pages as f64) as u64;
                    // A hit sets the page's referenced bit (no list lock); a
                    // miss "reads from disk", outside every lock, and inserts.
                    let mut missed = false;
                    let page = cache.get_or_insert_with(group, (t, page), || {
                        missed = true;
                        vec![t as u8; PAGE]
                    })?;
                    debug_assert_eq!(page.len(), PAGE);
                    if missed {
                        misses += 1;
                    } else {
                        hits += 1;
                    }
                }
                Ok((hits, misses))
            })
        })
        .collect();

    println!(
        "budget {} KiB; tenant: hit rate, pages evicted, pages held",
        BUDGET >> 10
    );
    for ((t, reader), (&(name, _), &group)) in readers
        .into_iter()
        .enumerate()
        .zip(tenants.iter().zip(&groups))
    {
        let (hits, misses) = reader.join().expect("reader panicked")?;
        println!(
            "  {name:>5}: {:5.1}% of {:>7} reads, {:>6} evicted, {:>5} held",
            100.0 * hits as f64 / (hits + misses).max(1) as f64,
            hits + misses,
            evicted[t].load(Ordering::Relaxed),
            cache.group_len(group),
        );
    }
    done.store(true, Ordering::Relaxed);
    reclaimer.join().expect("reclaimer panicked")?;
    println!(
        "cache: {} pages, {} KiB, {:?}",
        cache.len(),
        cache.weight() >> 10,
        cache.stats()
    );

    // Bob leaves: his pages move to the root group, still cached and
    // reclaimed by global (root) reclaim.
    let (bob, bob_pages) = (groups[1], cache.group_len(groups[1]));
    registry.remove_group(bob)?;
    println!(
        "bob left: {bob_pages} pages moved to the root group, which holds {}",
        cache.group_len(GroupId::ROOT)
    );
    // Root reclaim reaches the root group's pages only: bob's, now.
    let freed = registry.shrink(&ShrinkRequest {
        priority: 0,
        ..Default::default()
    })?;
    println!(
        "root reclaim at priority 0 freed {freed} pages; the tenants keep theirs: {} left",
        cache.len()
    );
    Ok(())
}
