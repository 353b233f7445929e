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

use crate::barrier::{reader_barrier, BarrierMode, Mode};
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

/// The heavy half of the process's asymmetric barrier (liburcu's
/// `smp_mb_master`), the one grace periods use: when it returns, every
/// thread of the process has executed a full barrier somewhere between the
/// call and the return — with membarrier, `membarrier(PRIVATE_EXPEDITED)`;
/// otherwise a `SeqCst` fence, which pairs with the `SeqCst` fence that
/// [`LightBarrier::fence`] then executes.
///
/// For protocols of the store-buffering shape with one rare side (the
/// caller) and one hot side (a [`LightBarrier`] user): either the caller's
/// loads after this call see the hot side's stores before its light
/// barrier, or the hot side's loads after its light barrier see the
/// caller's stores before this call.
///
/// # Blocking
///
/// A system call that interrupts every running thread of the process (a
/// few microseconds); the first call of the process may also decide the
/// barrier mode ([`barrier_mode`]).
pub fn heavy_barrier() {
    let domain = domain();
    domain.ensure_barrier_mode();
    domain.gp.mode.master_barrier();
}

/// The light half of the process's asymmetric barrier (liburcu's
/// `smp_mb_slave`): a compiler fence when grace periods use membarrier, a
/// `SeqCst` fence otherwise. See [`heavy_barrier`].
///
/// The mode is read once, when the value is made: keep it for a loop.
///
/// # Example
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// static HOT: AtomicBool = AtomicBool::new(false);
/// static RARE: AtomicBool = AtomicBool::new(false);
/// let light = shrinker_rcu::LightBarrier::new();
/// // Hot side: store, light barrier, load.
/// HOT.store(true, Ordering::Relaxed);
/// light.fence();
/// let _rare_seen = RARE.load(Ordering::Relaxed);
/// // Rare side (another thread in real use): store, heavy barrier, load.
/// RARE.store(true, Ordering::Relaxed);
/// shrinker_rcu::heavy_barrier();
/// assert!(HOT.load(Ordering::Relaxed));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct LightBarrier {
    membarrier: bool,
}

impl LightBarrier {
    /// The light barrier of the process's mode (deciding the mode now if no
    /// thread has used RCU yet, as [`barrier_mode`] does).
    pub fn new() -> Self {
        let domain = domain();
        domain.ensure_barrier_mode();
        LightBarrier {
            membarrier: domain.gp.mode.is_membarrier(),
        }
    }

    /// Execute it.
    #[inline(always)]
    pub fn fence(self) {
        reader_barrier(self.membarrier);
    }

    /// Is it a compiler fence only (the heavy side uses membarrier)? For a
    /// hot loop that specializes on it, where even the test of the mode
    /// counts.
    #[inline(always)]
    #[must_use]
    pub fn is_compiler_fence(self) -> bool {
        self.membarrier
    }
}

impl Default for LightBarrier {
    fn default() -> Self {
        Self::new()
    }
}
