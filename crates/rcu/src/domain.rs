//! The RCU domain: every piece of global state, in one place.
//!
//! There is one domain per process, like the kernel's `rcu_state`. Keeping its
//! state in one struct (rather than scattered statics) lets loom build a fresh
//! domain for every execution.
//!
//! The domain sits above the pieces of state it owns (`barrier.rs`'s mode,
//! `registry.rs`'s reader lists, `callback/queue.rs`'s queues) and below the
//! code that acts on it (`reader.rs`, `grace.rs`, the callback worker): see
//! "Layout" in the crate docs.

use crossbeam_utils::CachePadded;

use crate::barrier::{BarrierMode, Mode};
use crate::callback::queue::Callbacks;
use crate::registry::{ReaderLists, GP_COUNT};
use crate::sync::{lock, AtomicU32, AtomicU64, AtomicUsize, Mutex};

/// The words every reader touches, on one cache line of their own: read-mostly,
/// written only by a grace period (`ctr` flip, `futex`) and once at start-up
/// (`mode`).
pub(crate) struct GpWord {
    /// `GP_COUNT | phase`: what an outermost `read_lock` copies into its `ctr`.
    pub(crate) ctr: AtomicUsize,
    /// `FUTEX_WAITING` while a grace period sleeps waiting for readers.
    pub(crate) futex: AtomicU32,
    /// Which barrier pair is in force.
    pub(crate) mode: Mode,
}

pub(crate) struct Domain {
    pub(crate) gp: CachePadded<GpWord>,
    /// Grace-period sequence: even when idle, odd while one runs; `+2` per
    /// grace period. Cookies ([`crate::GpState`]) are values of it.
    pub(crate) seq: CachePadded<AtomicU64>,
    /// Serialises grace periods (liburcu's `rcu_gp_lock`).
    pub(crate) gp_lock: Mutex<()>,
    /// The registered readers (liburcu's `rcu_registry_lock` + list). Held by
    /// a grace period only while it scans, never while it sleeps.
    pub(crate) readers: Mutex<ReaderLists>,
    /// Read-side sections of threads whose registration was already torn down
    /// by thread-local destruction (see `reader.rs`); counted, not phased.
    pub(crate) defunct_readers: CachePadded<AtomicUsize>,
    pub(crate) callbacks: Callbacks,
}

impl Domain {
    loom_const_fn! {
        fn new() -> Self {
            Domain {
                gp: CachePadded::new(GpWord {
                    ctr: AtomicUsize::new(GP_COUNT),
                    futex: AtomicU32::new(0),
                    mode: Mode::new(),
                }),
                seq: CachePadded::new(AtomicU64::new(0)),
                gp_lock: Mutex::new(()),
                readers: Mutex::new(ReaderLists::new()),
                defunct_readers: CachePadded::new(AtomicUsize::new(0)),
                callbacks: Callbacks::new(),
            }
        }
    }

    /// Decide the barrier mode now if no reader has yet, taking the registry
    /// lock for it ([`Mode::ensure_init`] must run under that lock).
    pub(crate) fn ensure_barrier_mode(&self) {
        if self.gp.mode.get().is_none() {
            let _registry = lock(&self.readers);
            self.gp.mode.ensure_init();
        }
    }
}

// loom drops its lazy statics before the main thread's thread-locals, so a
// reader record of the main thread is dropped after the domain: it must not
// touch the domain then (there is nothing left to unregister from). A model's
// executions run one at a time on one OS thread (parallel `#[test]`s use
// other OS threads), so an OS-thread-local flag tells the domain's state.
#[cfg(loom)]
std::thread_local! {
    pub(crate) static LOOM_DOMAIN_LIVE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(loom)]
impl Drop for Domain {
    fn drop(&mut self) {
        LOOM_DOMAIN_LIVE.with(|live| live.set(false));
    }
}

#[cfg(not(loom))]
static DOMAIN: Domain = Domain::new();

#[cfg(loom)]
loom::lazy_static! {
    static ref DOMAIN: Domain = {
        LOOM_DOMAIN_LIVE.with(|live| live.set(true));
        Domain::new()
    };
}

/// The process-wide domain.
#[inline(always)]
pub(crate) fn domain() -> &'static Domain {
    &DOMAIN
}

/// The barrier mode in force for this process, deciding it now if no thread
/// has used RCU yet.
///
/// # Blocking
///
/// Takes the reader-registry mutex once, to decide the mode on first use
/// (a `membarrier` query and registration syscall); lock-free afterwards.
///
/// # Example
///
/// ```
/// let mode = shrinker_rcu::barrier_mode();
/// assert!(matches!(mode, shrinker_rcu::BarrierMode::Membarrier | shrinker_rcu::BarrierMode::Fence));
/// ```
pub fn barrier_mode() -> BarrierMode {
    let domain = domain();
    domain.ensure_barrier_mode();
    domain.gp.mode.get().unwrap_or(BarrierMode::Fence)
}
