//! The `reclaim` child workload with a cache people already use, made shrinkable by
//! `shrinker-adapters` (`--reclaim-child ...,cache=lru|quick_cache`): the end-to-end proof
//! that the adapters save a process from its memory limit too.
//!
//! The same steps as `reclaim_child.rs`, reduced to what the test asserts: after `go`,
//! register the cache through its adapter (bytes per entry known: `object_bytes` for `lru`,
//! weights in bytes for `quick_cache`), with the variant's reclaimer (`shrinker`, whose level
//! the adapter's refill guard follows) or none (`none`); fill it at the paced rate with
//! `obj`-byte values, reading back the working set after each insert; print one result line
//! (`{"event":"result","cache":…,"cache_bytes":…,"capped":…}`) and exit 0.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use shrinker::reclaim::Reclaimer;
use shrinker::ShrinkerRegistry;
use shrinker_adapters::Options;

use crate::reclaim_child::{emit, paced_fill, Params, Variant};

/// Weighs a quick_cache entry by its bytes.
#[derive(Clone)]
struct Len;

impl quick_cache::Weighter<u64, Arc<[u8]>> for Len {
    fn weight(&self, _: &u64, v: &Arc<[u8]>) -> u64 {
        v.len() as u64
    }
}

/// The cache under test, behind its adapter.
enum Filled {
    Lru(shrinker::Registered<shrinker_adapters::lru::LruShrinker<u64, Arc<[u8]>>>),
    Quick(shrinker_adapters::quick_cache::RegisteredQuickCache<u64, Arc<[u8]>, Len>),
}

impl Filled {
    fn insert(&self, k: u64, v: Arc<[u8]>) {
        match self {
            Filled::Lru(c) => {
                c.lock().put(k, v);
            }
            Filled::Quick(c) => c.insert(k, v),
        }
    }

    fn hit(&self, k: u64) -> bool {
        match self {
            Filled::Lru(c) => c.lock().get(&k).is_some(),
            Filled::Quick(c) => c.get(&k).is_some(),
        }
    }

    fn bytes(&self, obj: usize) -> u64 {
        match self {
            Filled::Lru(c) => (c.lock().len() * obj) as u64,
            Filled::Quick(c) => c.weight(),
        }
    }

    fn capped(&self) -> bool {
        match self {
            Filled::Lru(c) => c.refill_guard().is_capped(),
            Filled::Quick(c) => c.refill_guard().is_capped(),
        }
    }
}

/// Runs the adapter child (see the module documentation; `go` was read by the caller) and
/// returns its exit code.
pub fn main(p: &Params) -> std::process::ExitCode {
    let fail = |what: &str| {
        eprintln!("shrinker-bench: --reclaim-child: {what}");
        std::process::ExitCode::from(2)
    };
    let reclaimer = match p.variant {
        Variant::Shrinker => match Reclaimer::builder(ShrinkerRegistry::global()).start() {
            Ok(r) => Some(r),
            Err(e) => return fail(&format!("reclaimer: {e}")),
        },
        Variant::None => None,
        Variant::Poll1s => return fail("the adapters' workload runs shrinker or none"),
    };
    let options = |name: &str| {
        let o = Options::new(name);
        match &reclaimer {
            Some(r) => o.reclaimer(r),
            None => o,
        }
    };
    let n = p.total / p.obj as u64;
    let built = match p.cache.as_str() {
        "lru" => shrinker_adapters::lru::register_with(
            ShrinkerRegistry::global(),
            options("e2e-lru").object_bytes(p.obj),
            lru::LruCache::unbounded(),
        )
        .map(Filled::Lru),
        _ => shrinker_adapters::quick_cache::register_with(
            ShrinkerRegistry::global(),
            options("e2e-quick_cache").bytes_per_weight(1),
            quick_cache::sync::Cache::with_weighter(
                usize::try_from(n).unwrap_or(usize::MAX),
                p.total,
                Len,
            ),
        )
        .map(Filled::Quick),
    };
    let cache = match built {
        Ok(c) => c,
        Err(e) => return fail(&format!("cache: {e}")),
    };
    let (hits, misses) = paced_fill(
        p,
        Instant::now(),
        |k, value| cache.insert(k, value.into()),
        |k| cache.hit(k),
    );
    let stats = reclaimer.as_ref().map(|r| {
        let st = r.stats();
        json!({"rounds": st.rounds, "bytes_freed": st.bytes_freed, "source": st.source})
    });
    emit(&json!({
        "event": "result",
        "variant": p.variant.name(),
        "cache": p.cache,
        "cache_bytes": cache.bytes(p.obj),
        "capped": cache.capped(),
        "hits": hits,
        "misses": misses,
        "reclaimer": stats,
    }));
    drop(cache);
    drop(reclaimer);
    std::process::ExitCode::SUCCESS
}
