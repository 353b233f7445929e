//! The RCU domain: every piece of global state, in one place.
//!
//! There is one domain per process, like the kernel's `rcu_state`. Keeping its
//! state in one struct (rather than scattered statics) lets loom build a fresh
//! domain for every execution.

use crossbeam_utils::CachePadded;

use crate::barrier::Mode;
use crate::callback::Callbacks;
use crate::grace::ReaderLists;
use crate::sync::{AtomicU32, AtomicU64, AtomicUsize, Mutex};

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
    #[cfg(not(loom))]
    const fn new() -> Self {
        Domain {
            gp: CachePadded::new(GpWord {
                ctr: AtomicUsize::new(crate::grace::GP_COUNT),
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

    #[cfg(loom)]
    fn new() -> Self {
        LOOM_DOMAIN_LIVE.with(|live| live.set(true));
        Domain {
            gp: CachePadded::new(GpWord {
                ctr: AtomicUsize::new(crate::grace::GP_COUNT),
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
    static ref DOMAIN: Domain = Domain::new();
}

/// The process-wide domain.
#[inline(always)]
pub(crate) fn domain() -> &'static Domain {
    &DOMAIN
}
