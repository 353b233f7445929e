//! The asymmetric barrier pair: what readers execute, what updaters execute.
//!
//! RCU's read side must order its `ctr` store against the loads of the
//! protected data, and the update side must order its pointer unpublication
//! against its scan of the readers' `ctr` words: a store-buffering pattern that
//! needs a full barrier on *both* sides. Two ways to pay for it:
//!
//! | mode | reader (`reader_barrier`) | updater (`master_barrier`) |
//! |---|---|---|
//! | [`BarrierMode::Membarrier`] | compiler fence only | `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`: every running thread of the process executes a full barrier, a sleeping one already did on its context switch |
//! | [`BarrierMode::Fence`] | `fence(SeqCst)` | `fence(SeqCst)` |
//!
//! The mode is decided once, before the first reader registers
//! ([`Mode::ensure_init`] runs under the registry lock, and every reader registers
//! under that lock before its first section), and never changes: a reader can
//! therefore read it with a relaxed load on its fast path.
//!
//! The futex pair (`futex_wait` / `futex_wake`) lets a grace period sleep while
//! a long reader finishes; under loom both become a yield.

#[cfg(not(loom))]
use crate::contain::report_contained;
use crate::sync::{compiler_fence, fence, AtomicU8, Ordering};

/// How the read side is made safe. See the crate documentation.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BarrierMode {
    /// Readers execute only compiler fences; updaters call
    /// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`.
    Membarrier,
    /// membarrier is unavailable (or `SHRINKER_RCU_BARRIER=fence`): readers
    /// execute a `SeqCst` fence on entry and exit.
    Fence,
}

const UNINIT: u8 = 0;
const MEMBARRIER: u8 = 1;
const FENCE: u8 = 2;

/// The decided mode; `UNINIT` until [`Mode::ensure_init`] has run.
pub(crate) struct Mode(AtomicU8);

impl Mode {
    loom_const_fn! {
        pub(crate) fn new() -> Self {
            Mode(AtomicU8::new(UNINIT))
        }
    }

    /// Decide the mode. Must be called with the registry lock held (that lock
    /// is what makes the decision visible to every reader before its first
    /// section), and before any reader or grace period uses the mode.
    pub(crate) fn ensure_init(&self) {
        // Relaxed: written and read under the registry lock here; the fast
        // path's relaxed reads are ordered after it by the reader's own
        // registration, which acquired the same lock.
        if self.0.load(Ordering::Relaxed) != UNINIT {
            return;
        }
        let mode = if cfg!(loom) || forced_fence() || !register_membarrier() {
            FENCE
        } else {
            MEMBARRIER
        };
        self.0.store(mode, Ordering::Relaxed);
    }

    #[inline(always)]
    pub(crate) fn is_membarrier(&self) -> bool {
        // Relaxed: see `ensure_init`.
        self.0.load(Ordering::Relaxed) == MEMBARRIER
    }

    pub(crate) fn get(&self) -> Option<BarrierMode> {
        match self.0.load(Ordering::Relaxed) {
            MEMBARRIER => Some(BarrierMode::Membarrier),
            FENCE => Some(BarrierMode::Fence),
            _ => None,
        }
    }

    /// The updater's half of the pair (liburcu's `smp_mb_master`): when it
    /// returns, every thread of the process has executed a full barrier
    /// somewhere between its call and its return.
    pub(crate) fn master_barrier(&self) {
        if self.is_membarrier() {
            #[cfg(not(loom))]
            if membarrier_private_expedited().is_ok() {
                return;
            }
            // Registered but refused now: cannot happen per the ABI. A full
            // fence on our side alone would not be enough for readers that
            // rely on us, so this is fatal.
            panic!(
                "membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed after successful registration"
            );
        } else {
            // SeqCst fence: pairs with the SeqCst fence in `reader_barrier`.
            fence(Ordering::SeqCst);
        }
    }
}

/// The reader's half of the pair (liburcu's `smp_mb_slave`); `membarrier`
/// is [`Mode::is_membarrier`], read once by the caller.
#[inline(always)]
pub(crate) fn reader_barrier(membarrier: bool) {
    // `likely`: the fence is a `lock`ed instruction anyway; keep the
    // membarrier path a straight line.
    if likely(membarrier) {
        // The updater's membarrier supplies the CPU barrier; we only keep the
        // compiler from moving accesses across this point.
        compiler_fence(Ordering::SeqCst);
    } else {
        // SeqCst fence: pairs with the SeqCst fence in `master_barrier`.
        fence(Ordering::SeqCst);
    }
}

/// `b`, telling the compiler that it is almost always true, so that it lays
/// out the true branch as the straight line of the read side's fast path (a
/// taken branch costs a cycle of its own on most cores). Stable Rust's way:
/// a call to an empty `#[cold]` function on the other branch, whose hint
/// outlives its inlining.
#[inline(always)]
pub(crate) fn likely(b: bool) -> bool {
    if !b {
        unlikely_path();
    }
    b
}

#[cold]
#[inline]
fn unlikely_path() {}

fn forced_fence() -> bool {
    #[cfg(not(loom))]
    {
        // Miri cannot run membarrier (and models fences exactly).
        cfg!(miri)
            || matches!(
                std::env::var("SHRINKER_RCU_BARRIER").as_deref(),
                Ok("fence")
            )
    }
    #[cfg(loom)]
    {
        true
    }
}

#[cfg(not(loom))]
fn register_membarrier() -> bool {
    use rustix::thread::{membarrier, membarrier_query, MembarrierCommand};
    let supported = membarrier_query();
    if !supported.contains_command(MembarrierCommand::PrivateExpedited)
        || !supported.contains_command(MembarrierCommand::RegisterPrivateExpedited)
    {
        // Contained: we hold the registry lock, inside a reader's first
        // `read_lock`.
        report_contained(|| {
            tracing::info!("membarrier PRIVATE_EXPEDITED unsupported; RCU readers use fences")
        });
        return false;
    }
    match membarrier(MembarrierCommand::RegisterPrivateExpedited) {
        Ok(()) => true,
        Err(e) => {
            report_contained(
                || tracing::info!(error = %e, "membarrier registration refused; RCU readers use fences"),
            );
            false
        }
    }
}

#[cfg(loom)]
fn register_membarrier() -> bool {
    false
}

#[cfg(not(loom))]
fn membarrier_private_expedited() -> rustix::io::Result<()> {
    use rustix::thread::{membarrier, MembarrierCommand};
    loop {
        match membarrier(MembarrierCommand::PrivateExpedited) {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// Sleep while `*word == expected` (spurious wake-ups allowed).
#[cfg(not(loom))]
pub(crate) fn futex_wait(word: &std::sync::atomic::AtomicU32, expected: u32) {
    use rustix::thread::futex;
    // Any error (EAGAIN: the value changed; EINTR) just returns; callers loop.
    let _ = futex::wait(word, futex::Flags::PRIVATE, expected, None);
}

/// Wake one sleeper on `word`.
#[cfg(not(loom))]
pub(crate) fn futex_wake(word: &std::sync::atomic::AtomicU32) {
    use rustix::thread::futex;
    let _ = futex::wake(word, futex::Flags::PRIVATE, 1);
}

#[cfg(loom)]
pub(crate) fn futex_wait(_word: &crate::sync::AtomicU32, _expected: u32) {
    loom::thread::yield_now();
}

#[cfg(loom)]
pub(crate) fn futex_wake(_word: &crate::sync::AtomicU32) {}
