//! The Linux kernel's shrinkers, for userspace.
//!
//! A process full of caches needs a way to give memory back when memory is
//! short, in proportion to how hard it is short and to how costly each cache
//! is to refill. The kernel's answer is the *shrinker*: each cache registers
//! two callbacks, `count` ("how many objects could you free?") and `scan`
//! ("free up to this many"), and reclaim calls every registered shrinker at a
//! *priority* from 12 (gentle: 1/4096th of each cache) down to 0 (desperate).
//! This crate ports it with the Linux 6.7 design:
//!
//! | kernel | here |
//! |---|---|
//! | `count_objects` / `scan_objects`, `SHRINK_EMPTY` / `SHRINK_STOP` | [`Shrink`], [`Count::Empty`], [`Scan::Stop`] |
//! | `struct shrink_control` | [`ShrinkControl`] |
//! | `shrinker_alloc()` + fields | [`ShrinkerBuilder`] → [`Shrinker`] |
//! | `shrinker_register()` / `shrinker_free()` | [`Shrinker::register`] → [`Registered`] / dropping it |
//! | `shrinker_list`, `shrinker_mutex`, `shrinker_idr` | [`ShrinkerRegistry`] ([`global`](ShrinkerRegistry::global) or your own) |
//! | `shrink_slab(gfp, nid, memcg, priority)` | [`ShrinkerRegistry::shrink`] with a [`ShrinkRequest`] |
//! | `do_shrink_slab()` | the private `engine` module, kernel-exact |
//! | debugfs `<name>-<id>/count`, `scan` | [`ShrinkerRegistry::count`], [`ShrinkerRegistry::scan`], [`ShrinkerRegistry::shrinkers`] |
//!
//! # Example: a cache made shrinkable
//!
//! ```
//! use shrinker::{Count, Scan, Shrink, ShrinkControl, ShrinkerBuilder, ShrinkRequest, ShrinkerRegistry};
//! use std::collections::VecDeque;
//! use std::sync::Mutex;
//!
//! struct Cache(Mutex<VecDeque<Vec<u8>>>); // oldest first
//!
//! impl Shrink for Cache {
//!     fn count(&self, _: &ShrinkControl) -> Count {
//!         match self.0.lock().unwrap().len() {
//!             0 => Count::Empty,
//!             n => Count::Objects(n),
//!         }
//!     }
//!     fn scan(&self, sc: &mut ShrinkControl) -> Scan {
//!         let mut q = self.0.lock().unwrap();
//!         let n = sc.nr_to_scan().min(q.len());
//!         q.drain(..n); // evict the oldest
//!         Scan::Freed(n)
//!     }
//! }
//!
//! # let registry = ShrinkerRegistry::builder().nodes(1).build()?;
//! let cache = ShrinkerBuilder::new("blob-cache")
//!     .build_in(&registry, Cache(Mutex::new((0..10_000).map(|_| vec![0; 64]).collect())))?
//!     .register();
//!
//! // Memory is short: reclaim (normally a pressure monitor does this).
//! let freed = registry.shrink(&ShrinkRequest { priority: 4, ..Default::default() })?;
//! // (10,000 >> 4) * 4 / 2 = 1,250 to scan: 9 batches of 128; 98 deferred.
//! assert_eq!(freed, 1_152);
//! assert_eq!(cache.0.lock().unwrap().len(), 10_000 - 1_152);
//! drop(cache); // unregisters: waits only for its own running callbacks
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Lifecycle
//!
//! Build (allocate the id and deferred counters; may fail with a typed
//! [`BuildError`]) → register (link on the RCU list under the registry mutex,
//! then set the reference count to 1 *last*, with release) → in use
//! (reclaim pins it) → unregister (close the registry's pin gate; drop the
//! initial reference; wait until every in-flight call has unpinned; unlink
//! under the mutex; free with `call_rcu`) → freed. A shrinker built but
//! never registered is freed without any wait. `registry/handles.rs` and
//! `registry/object.rs` carry the numbered protocols and the state table.
//!
//! # The reclaim walk
//!
//! Lockless: iterate the RCU list, pin, leave the read section while calling
//! out (callbacks may block), re-enter before unpinning. A walk never waits
//! for registration and is never refused because of it; registration and
//! unregistration never wait for a walk; a shrinker blocked in its callback
//! blocks only its own unregister.
//!
//! The pin is Linux 6.7's reference count (`try_get`/`put`: two atomic
//! read-modify-writes per shrinker visited) while shrinkers are being
//! unregistered, and a *light pin* (a store to the walking thread's own
//! slot) otherwise; the first unregister after a quiet spell closes a gate
//! (the kernel's `rcu_sync`) with one grace period, and under churn the gate
//! stays closed, so unregistration waits for no grace period there.
//! `registry/pin.rs` has the protocol and its proof, `registry/mod.rs` and
//! `registry/walk.rs` the walk.
//!
//! # Nodes and groups
//!
//! The node count comes from `/sys/devices/system/node/online`
//! ([`RegistryBuilder::nodes`] overrides it). NUMA-aware shrinkers get the
//! request's node and per-node deferred work; the others are always told
//! node 0 and keep one deferred count (the kernel's rule).
//!
//! Memory groups (memory cgroups) form a tree under [`GroupId::ROOT`]
//! ([`ShrinkerRegistry::create_group`], [`ShrinkerRegistry::remove_group`]).
//! A group-aware shrinker is called for a group only while its bit is set
//! in the group's per-node `ShrinkerInfo` (set by
//! [`ShrinkerRegistry::set_shrinker_bit`], which [`ListLru`]'s notify hook
//! calls on an empty → non-empty list), with that group's deferred work;
//! removing a group moves its deferred work and, through
//! [`GroupObserver`]s, its objects into the parent. `groups/mod.rs` has
//! the layout, the handshake and the lifetimes.
//!
//! # Faults and misuse
//!
//! A callback that panics is caught; its reference is still put, the panic
//! is counted in its [`ShrinkerStats`] and reported through `tracing`, and
//! the walk goes on. Unregistering a shrinker from inside its own callback
//! would wait for itself: it panics with a message naming the misuse.
//!
//! # Checking
//!
//! `tests/loom_lifecycle.rs` models light pins and try_get/put against
//! unregister, and a walk against register, with `--cfg loom` (nodes are
//! marked instead of freed there, so a walker that touches a freed node
//! fails the model); `tests/torture.rs` churns
//! registrations against walks under AddressSanitizer in CI.
//!
//! # Layout of the source
//!
//! One folder per concern; imports flow one way, downwards in this
//! drawing (a file uses only files drawn above it; unit tests exempt):
//!
//! ```text
//! contract   shrink.rs  info.rs  error.rs  request.rs  topology.rs  group_id.rs  freed.rs
//!              the types callers and callbacks see
//!                 │
//! lifetime/  rcu_array.rs  free.rs  live_ref.rs  frames.rs  recycle.rs
//!              each mechanism once: the RCU-grown array, the free after
//!              a grace period, the pin with its dying mark, the
//!              "inside X" frame stack, the freed-object cache
//!                 │
//! engine/    mod.rs (do_shrink_slab)  nr_deferred.rs
//!                 │
//! registry/  call_counts.rs → object.rs → ids.rs, pin.rs → walk.rs
//!   internals  per-thread call counters, the shrinker object, the id
//!              table, walker slots and the gate, the global walk and the
//!              callout pin
//!                 │
//! groups/    unit_map.rs → data.rs → mod.rs (tree) → walk.rs, remove.rs
//!              given the registry's gate and id table as arguments
//!                 │
//! registry/  mod.rs (ShrinkerRegistry, the list) → group_api.rs,
//!   facade     handles.rs (ShrinkerBuilder, Shrinker, Registered)
//!                 │
//! reclaim/   mod.rs (Reclaimer) → thread.rs, pass.rs, budget.rs,
//!              allocator.rs, lazy_rcu.rs: the kswapd of a process, on the
//!              facade and `shrinker-pressure`
//!                 │
//! lru/       list_lru.rs (+ list_lru/), lru_cache.rs (+ lru_cache/)
//!              built on the public face (and `lifetime/`'s RcuArray)
//!                 │
//! metrics.rs   every counter as a Prometheus sample (features `metrics`,
//!              `control`)
//!                 │
//! control/   mod.rs → protocol.rs → server.rs: the control socket
//!              (feature `control`)
//! ```
//!
//! `tests/layers.rs` checks the rule (each edge downwards, no circle).
//! `lib.rs` re-exports the public types and holds the std/loom switch
//! (`sync`), which every layer may use.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "control")]
pub mod control;
mod engine;
mod error;
mod freed;
mod group_id;
mod groups;
mod info;
mod lifetime;
mod lru;
#[cfg(any(feature = "metrics", feature = "control"))]
pub mod metrics;
pub mod reclaim;
mod registry;
mod request;
mod shrink;
mod topology;

pub use error::{BuildError, GroupError, ShrinkError};
pub use freed::Freed;
pub use group_id::GroupId;
pub use groups::GroupObserver;
pub use info::{ShrinkerFlags, ShrinkerId, ShrinkerInfo, ShrinkerStats};
pub use lru::list_lru::{Isolate, ListLru, LruKey, ReparentError};
pub use lru::lru_cache::{CacheError, CacheStats, InsertError, LruCache, LruCacheBuilder};
#[doc(inline)]
pub use lru::{list_lru, lru_cache};
pub use registry::handles::{Registered, Shrinker, ShrinkerBuilder};
pub use registry::{RegistryBuilder, ShrinkerRegistry};
pub use request::ShrinkRequest;
pub use shrink::{Count, Scan, Shrink, ShrinkControl};

/// Entry points for the loom model of the per-thread call counters
/// (`tests/loom_call_counts.rs`); built only under `--cfg loom`.
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_hooks {
    /// A counter slot (`call_counts::alloc`).
    pub fn calls_alloc() -> u32 {
        crate::registry::call_counts::alloc()
    }
    /// Free a slot (`call_counts::release`).
    pub fn calls_release(slot: u32) {
        crate::registry::call_counts::release(slot)
    }
    /// Count one call (`call_counts::bump`).
    pub fn calls_bump(slot: u32) {
        crate::registry::call_counts::bump(slot)
    }
    /// Fold the calling thread's counters as its exit does.
    pub fn calls_thread_exit() {
        crate::registry::call_counts::exit_thread()
    }
    /// Read a slot's count (`call_counts::read`).
    pub fn calls_read(slot: u32) -> u64 {
        crate::registry::call_counts::read(slot)
    }
}

/// The workspace README's snippets, compiled and run as doctests so that
/// they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// The std/loom switch: every atomic and lock that takes part in a protocol
/// comes from here. (Statistics counters are std atomics on purpose: see
/// `registry/object.rs`.)
#[allow(unused_imports)]
mod sync {
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize};
    #[cfg(loom)]
    pub(crate) use loom::sync::{Mutex, MutexGuard};

    #[cfg(not(loom))]
    pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize};
    #[cfg(not(loom))]
    pub(crate) use std::sync::{Mutex, MutexGuard};

    pub(crate) use std::sync::atomic::Ordering;

    /// Lock a mutex whose state stays consistent even if a holder panicked
    /// (every critical section here is panic-free), so poisoning carries no
    /// information.
    #[inline]
    pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }
}
