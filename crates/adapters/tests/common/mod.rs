//! Shared by the adapter tests: the kernel's `do_shrink_slab` arithmetic,
//! recomputed here from its formula (not taken from the engine), so that a
//! test can say how many objects one walk must ask a cache for.
#![allow(dead_code)] // Each test file uses a part.

use shrinker::{ShrinkRequest, ShrinkerRegistry};

/// `SHRINK_BATCH`.
pub const BATCH: usize = 128;

/// One `do_shrink_slab` over a cache of `freeable` objects that frees what
/// it is asked: the `nr_to_scan` of each scan call, in order. `deferred` is
/// the shrinker's carried work, taken and put back as the kernel does.
///
/// `delta = (freeable >> priority) * 4 / seeks`;
/// `total = min((nr >> priority) + delta, 2 * freeable)`; scan batches while
/// `total >= batch || total >= freeable`;
/// `next deferred = min(nr + delta - scanned, 2 * freeable)`.
pub fn kernel_asks(freeable: usize, deferred: &mut usize, priority: u32, seeks: u32) -> Vec<usize> {
    if freeable == 0 {
        return Vec::new();
    }
    let nr = std::mem::take(deferred);
    let delta = if seeks == 0 {
        freeable / 2
    } else {
        (freeable >> priority) * 4 / seeks as usize
    };
    let cap = freeable * 2;
    let mut total = ((nr >> priority) + delta).min(cap);
    let mut asks = Vec::new();
    let mut scanned = 0;
    while total >= BATCH || total >= freeable {
        let n = BATCH.min(total);
        asks.push(n);
        scanned += n;
        total -= n;
    }
    *deferred = (nr + delta).saturating_sub(scanned).min(cap);
    asks
}

/// A private one-node registry.
pub fn registry() -> ShrinkerRegistry {
    ShrinkerRegistry::builder()
        .nodes(1)
        .build()
        .expect("registry")
}

/// A shrink request at `priority` on node 0 of the root group.
pub fn at(priority: u8) -> ShrinkRequest {
    ShrinkRequest {
        priority,
        ..Default::default()
    }
}

/// Priorities a test walks through, gentle to desperate.
pub const PRIORITIES: [u8; 6] = [12, 10, 7, 4, 2, 0];

/// During a concurrent shrink, an entry just inserted is either still in
/// the cache (`present`) or was taken by the shrink, which counts it
/// (`counted()`) when it drops or evicts it, possibly just after releasing
/// the cache's lock: wait for that, up to 10 s, then fail naming `key`.
pub fn present_or_counted_soon(
    key: impl std::fmt::Debug,
    present: bool,
    counted: impl Fn() -> bool,
) {
    let since = std::time::Instant::now();
    while !present && !counted() {
        assert!(
            since.elapsed() < std::time::Duration::from_secs(10),
            "key {key:?}: neither in the cache nor counted as evicted"
        );
        std::thread::yield_now();
    }
}
