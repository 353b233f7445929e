//! The caches people already use, made shrinkable in one line.
//!
//! A Rust service rarely writes its own cache: it uses `lru`, `quick_cache`,
//! `moka` or `foyer`. For a [`Reclaimer`](shrinker::reclaim::Reclaimer) (or
//! any caller of [`ShrinkerRegistry::shrink`](shrinker::ShrinkerRegistry::shrink))
//! to free memory from them, they must answer the kernel's two questions,
//! `count` ("how many could go?") and `scan` ("drop this many"). Each
//! module here answers them for one cache crate, behind a cargo feature of
//! the same name (none on by default; `full` turns them all on):
//!
//! ```text
//! let cache = shrinker_adapters::quick_cache::register(ShrinkerRegistry::global(), "pages", cache)?;
//! cache.insert(key, value); // the cache, through the registered handle
//! ```
//!
//! | module | cache | shrinks by | eviction order | reports |
//! |---|---|---|---|---|
//! | `lru` | `lru::LruCache` | `pop_lru` × n, then `resize` | exact LRU | objects (bytes with a sizer) |
//! | `quick_cache` | `quick_cache::sync::Cache` | `set_capacity` (weight) | the cache's own (S3-FIFO, per shard) | objects and weight-as-bytes |
//! | `moka` | `moka::sync::Cache`, `moka::future::Cache` (`tokio`) | `remove` × n + `run_pending_tasks` | hash order (*not* LRU: see the module) | objects and weight-as-bytes |
//! | `foyer` | `foyer_memory::Cache` | `resize` (weight) | the cache's own (its eviction policy, per shard) | objects and weight-as-bytes |
//!
//! The crate README has the full table (versions, caveats) and an example
//! per cache; the workspace's own `LruCache` and `ListLru` are shrinkers
//! already and need no adapter.
//!
//! # The refill guard
//!
//! A cache with a capacity, shrunk under pressure, refills at once and
//! brings the pressure straight back. Every adapter here therefore lowers
//! the capacity with what it evicts and keeps it low until the pressure
//! has been gone for a cool-down (30 s), then grows it back step by step:
//! see [`RefillGuard`] for the rule, [`RefillPolicy`] for the knobs and
//! [`Options::reclaimer`] to tie it to a reclaimer's level.
//!
//! # Async services
//!
//! With the `tokio` feature, `tokio::AsyncMonitor` waits for a
//! `shrinker_pressure::Monitor` on its fd through `AsyncFd` (no thread per
//! listener), `tokio::watch_monitor` and `tokio::watch_reclaimer` fan
//! level changes out through `tokio::sync::watch`, and the `moka` module
//! gains the future cache's adapter (`moka::future`).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

mod clock;
mod guard;
mod options;

#[cfg(feature = "foyer")]
pub mod foyer;
#[cfg(feature = "lru")]
pub mod lru;
#[cfg(feature = "moka")]
pub mod moka;
#[cfg(feature = "quick_cache")]
pub mod quick_cache;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use clock::{Clock, ManualClock, SystemClock};
pub use guard::{RefillGuard, RefillPolicy};
pub use options::Options;

/// The crate README's examples, compiled and run as doctests.
#[cfg(all(doctest, feature = "full"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
