//! The read side: `read_lock`, `ReadGuard`, and per-thread registration.
//!
//! Each thread owns one [`Reader`] record in its thread-local storage: the
//! `ctr` word described in `grace.rs`. Only the owning thread writes it; grace
//! periods read it through the registry.
//!
//! # Registration states (`ReaderTls::state`)
//!
//! | state | meaning | outermost lock / unlock |
//! |---|---|---|
//! | `UNREGISTERED` | never used RCU | registers, then the fast path |
//! | `REGISTERED` | in the registry | fast path: plain stores and `reader_barrier()` |
//! | `DEFUNCT` | the thread is exiting and its registration is gone | counted in `defunct_readers` with a full fence; slow but safe |
//!
//! `DEFUNCT` exists because thread-local destructors run in an unspecified
//! order: a destructor that runs after ours (dropping a cache, say) may still
//! enter a read-side section, and its record can no longer be registered
//! (nothing would unregister it before the thread's storage is freed).
//!
//! # Lifetime of the record (std)
//!
//! The record lives in a `const`-initialised thread-local with no destructor,
//! so the fast path reaches it with one TLS-relative access and no "is it
//! initialised" check, and so it stays accessible during thread-local
//! destruction. A second thread-local, `REGISTRATION`, exists only for its
//! destructor, which unregisters the record; the record's memory outlives every
//! destructor of the thread, so the registry never holds a dangling pointer.

use std::cell::Cell;
use std::marker::PhantomData;

use crate::barrier::reader_barrier;
use crate::domain::domain;
use crate::grace::{ReaderRef, FUTEX_WAITING, GP_COUNT, NEST_MASK};
use crate::sync::{fence, lock, AtomicUsize, Ordering};

/// A thread's reader record: `nesting | phase`, see `grace.rs`.
pub(crate) struct Reader {
    pub(crate) ctr: AtomicUsize,
}

const UNREGISTERED: u8 = 0;
const REGISTERED: u8 = 1;
const DEFUNCT: u8 = 2;

struct ReaderTls {
    reader: Reader,
    state: Cell<u8>,
}

#[cfg(not(loom))]
thread_local! {
    static READER: ReaderTls = const {
        ReaderTls { reader: Reader { ctr: AtomicUsize::new(0) }, state: Cell::new(UNREGISTERED) }
    };
    static REGISTRATION: Registration = const { Registration };
}

#[cfg(loom)]
loom::thread_local! {
    static READER: ReaderTls =
        ReaderTls { reader: Reader { ctr: AtomicUsize::new(0) }, state: Cell::new(UNREGISTERED) };
}

/// Exists for its destructor: unregisters this thread's reader at exit.
#[cfg(not(loom))]
struct Registration;

#[cfg(not(loom))]
impl Drop for Registration {
    fn drop(&mut self) {
        READER.with(ReaderTls::unregister);
    }
}

#[cfg(loom)]
impl Drop for ReaderTls {
    fn drop(&mut self) {
        if crate::domain::LOOM_DOMAIN_LIVE.with(std::cell::Cell::get) {
            self.unregister();
        }
    }
}

/// The nesting count is full (`u32::MAX` sections on 64-bit targets,
/// `u16::MAX` on 32-bit ones): almost certainly guards leaked with
/// `mem::forget` or an unbounded recursion. The count is left as it was.
#[cold]
#[inline(never)]
fn nesting_overflow() -> ! {
    panic!(
        "RCU read_lock() nesting overflow: {NEST_MASK} read-side sections are already open on \
         this thread (leaked ReadGuards, or unbounded recursion inside a section)"
    );
}

impl ReaderTls {
    #[inline(always)]
    fn lock(&self) {
        // Relaxed: only this thread writes its `ctr`.
        let ctr = self.reader.ctr.load(Ordering::Relaxed);
        if ctr & NEST_MASK == 0 {
            if self.state.get() != REGISTERED {
                return self.lock_slow();
            }
            let domain = domain();
            // Relaxed: any phase we see is handled by the two-phase grace
            // period (grace.rs, "Why two phases").
            let gp_ctr = domain.gp.ctr.load(Ordering::Relaxed);
            // Relaxed: made visible to grace periods by the barrier below.
            self.reader.ctr.store(gp_ctr, Ordering::Relaxed);
            // Orders the `ctr` store before the section's loads. Pairs with
            // the grace period's step-2 `master_barrier()`.
            reader_barrier(domain.gp.mode.is_membarrier());
        } else {
            // Checked in every build: one more would carry into the phase
            // bit and leave nesting at zero with every guard live. A compare
            // and a never-taken branch on the nested path only.
            if ctr & NEST_MASK == NEST_MASK {
                nesting_overflow();
            }
            // Relaxed: nesting changes are invisible to grace periods (the
            // state only depends on nesting being non-zero).
            self.reader.ctr.store(ctr + GP_COUNT, Ordering::Relaxed);
        }
    }

    #[inline(always)]
    fn unlock(&self) {
        // Relaxed: only this thread writes its `ctr`.
        let ctr = self.reader.ctr.load(Ordering::Relaxed);
        // An internal invariant, not a user error: a `ReadGuard` is made only
        // by `read_lock`, is `!Send`, and the record outlives every guard of
        // its thread (even across thread-local teardown), so no safe code can
        // unlock more sections than it locked.
        debug_assert_ne!(ctr & NEST_MASK, 0, "RCU read_unlock without read_lock");
        if ctr & NEST_MASK == GP_COUNT {
            if self.state.get() != REGISTERED {
                return self.unlock_slow();
            }
            let domain = domain();
            let membarrier = domain.gp.mode.is_membarrier();
            // Orders the section's loads before the `ctr` store. Pairs with
            // the grace period's step-6 `master_barrier()`.
            reader_barrier(membarrier);
            // Release: in fence mode the fence above already orders; in
            // membarrier mode this keeps the language-level story (the scan's
            // Acquire load synchronizes with it) at no cost on x86.
            self.reader.ctr.store(ctr - GP_COUNT, Ordering::Release);
            // Orders the `ctr` store before the `futex` load: the right column
            // of the handshake in grace.rs ("Sleeping").
            reader_barrier(membarrier);
            // Relaxed: see the handshake.
            if domain.gp.futex.load(Ordering::Relaxed) == FUTEX_WAITING {
                domain.wake_gp();
            }
        } else {
            // Relaxed: nesting only.
            self.reader.ctr.store(ctr - GP_COUNT, Ordering::Relaxed);
        }
    }

    #[cold]
    #[inline(never)]
    fn lock_slow(&self) {
        if self.state.get() == UNREGISTERED && self.register() {
            return self.lock();
        }
        // DEFUNCT: a counted section. SeqCst RMW then SeqCst fence: the
        // reader's column of a store-buffering handshake whose other column
        // is the grace period's barrier-then-`defunct_quiescent()` load.
        domain().defunct_readers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        // Relaxed: this record is not registered; only we read it.
        self.reader.ctr.store(GP_COUNT, Ordering::Relaxed);
    }

    #[cold]
    #[inline(never)]
    fn unlock_slow(&self) {
        let domain = domain();
        // Relaxed: this record is not registered.
        self.reader.ctr.store(0, Ordering::Relaxed);
        // Release: orders the section's loads before the decrement; pairs
        // with the Acquire load in `defunct_quiescent()`.
        domain.defunct_readers.fetch_sub(1, Ordering::Release);
        fence(Ordering::SeqCst);
        // Relaxed: see the handshake in grace.rs.
        if domain.gp.futex.load(Ordering::Relaxed) == FUTEX_WAITING {
            domain.wake_gp();
        }
    }

    /// Add this thread's record to the registry. False if thread-local
    /// destruction has already begun (the record goes `DEFUNCT`).
    fn register(&self) -> bool {
        #[cfg(not(loom))]
        if REGISTRATION.try_with(|_| ()).is_err() {
            self.state.set(DEFUNCT);
            return false;
        }
        let domain = domain();
        let mut lists = lock(&domain.readers);
        domain.gp.mode.ensure_init();
        lists.register(ReaderRef(&self.reader));
        self.state.set(REGISTERED);
        true
    }

    fn unregister(&self) {
        if self.state.get() != REGISTERED {
            self.state.set(DEFUNCT);
            return;
        }
        let domain = domain();
        // Relaxed: only this thread writes its `ctr`.
        let in_section = self.reader.ctr.load(Ordering::Relaxed) & NEST_MASK != 0;
        if in_section {
            // A section is open across our own teardown (guards held by a
            // thread-local destroyed after us): keep it protected by
            // counting it, as `lock_slow` does for `DEFUNCT` sections. The
            // count stands for the whole section, however deeply nested:
            // `ctr` keeps its nesting, so only the outermost guard's drop
            // reaches `unlock_slow` and uncounts it. (Resetting the nesting
            // to one here once let an inner guard's drop end the counted
            // section while the outer guard was still live.)
            domain.defunct_readers.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
        }
        lock(&domain.readers).unregister(ReaderRef(&self.reader));
        self.state.set(DEFUNCT);
    }

    #[inline]
    fn in_section(&self) -> bool {
        // Relaxed: only this thread writes its `ctr`.
        self.reader.ctr.load(Ordering::Relaxed) & NEST_MASK != 0
    }
}

/// An RCU read-side critical section (`rcu_read_lock()` ... `rcu_read_unlock()`).
///
/// While a guard lives, nothing that was reachable through RCU-protected
/// pointers when the section began is freed. References obtained under the
/// guard ([`crate::RcuPtr::load`], [`crate::RcuList::iter`]) borrow it, so the
/// compiler rejects any use after the section ends. Guards nest; the guard is
/// neither `Send` nor `Sync`, because the section belongs to the thread.
///
/// Sections must be short-ish: a section that blocks delays every grace
/// period, and with it every deferred free.
///
/// A guard cannot leave its thread:
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// send(shrinker_rcu::read_lock());
/// ```
///
/// ```compile_fail
/// fn share<T: Sync>(_: &T) {}
/// share(&shrinker_rcu::read_lock());
/// ```
#[must_use = "the read-side section ends when the guard is dropped"]
pub struct ReadGuard {
    _not_send: PhantomData<*const ()>,
}

impl Drop for ReadGuard {
    #[inline]
    fn drop(&mut self) {
        READER.with(ReaderTls::unlock);
    }
}

impl std::fmt::Debug for ReadGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadGuard")
    }
}

/// Enter an RCU read-side critical section (`rcu_read_lock()`).
///
/// The outermost call costs a thread-local load, a load of the global phase
/// word, a plain store and a compiler fence (a `SeqCst` fence in
/// [`crate::BarrierMode::Fence`]); nested calls only count. The first call on
/// a thread registers it, which takes a mutex once.
///
/// # Blocking
///
/// Never waits for a grace period. The first call on a thread takes the
/// reader-registry mutex (held by a grace period only while it scans, never
/// while it sleeps) and, first in the process, decides the barrier mode
/// (one `membarrier` registration syscall).
///
/// # Panics
///
/// If this thread already has `u32::MAX` sections open (`u16::MAX` on 32-bit
/// targets): leaked guards or unbounded recursion. Checked in every build.
///
/// # Example
///
/// ```
/// let list = shrinker_rcu::RcuList::new();
/// list.lock().push_back(7u32);
/// let guard = shrinker_rcu::read_lock();
/// let inner = shrinker_rcu::read_lock(); // nesting is fine
/// assert_eq!(list.iter(&inner).copied().collect::<Vec<_>>(), [7]);
/// drop(inner);
/// drop(guard);
/// ```
#[inline]
pub fn read_lock() -> ReadGuard {
    READER.with(ReaderTls::lock);
    ReadGuard {
        _not_send: PhantomData,
    }
}

/// Is the current thread inside a read-side critical section?
///
/// Code that may block uses it to refuse to wait there, as
/// [`crate::synchronize_rcu`] does. Lock-free; a thread-local read.
#[inline]
pub fn in_read_section() -> bool {
    READER.with(ReaderTls::in_section)
}

/// Panic naming `what` if called inside a read-side section.
#[track_caller]
pub(crate) fn assert_not_in_read_section(what: &str) {
    if in_read_section() {
        panic!(
            "{what}() called inside an RCU read-side critical section: it waits for every \
             pre-existing reader, including this one, and would deadlock"
        );
    }
}

/// Number of threads currently registered as readers.
pub(crate) fn registered_readers() -> usize {
    lock(&domain().readers).len()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Nesting one past `NEST_MASK` used to carry into the phase bit in
    /// release builds (a debug-only assertion guarded it), leaving the
    /// thread at nesting zero while every guard was live: a panic now, in
    /// every build. On a fresh, never-registered thread, so no grace period
    /// of the other tests sees the fabricated nesting.
    #[test]
    fn read_lock_nesting_overflow_panics_in_every_build() {
        std::thread::spawn(|| {
            // Relaxed: our own record, not registered.
            READER.with(|r| r.reader.ctr.store(NEST_MASK, Ordering::Relaxed));
            let r = std::panic::catch_unwind(read_lock);
            let payload = r.expect_err("nesting overflow must panic");
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            assert!(
                msg.contains("read_lock() nesting overflow"),
                "unexpected panic: {msg}"
            );
            // The count was left as it was: unwind the fabricated nesting.
            READER.with(|r| {
                assert_eq!(r.reader.ctr.load(Ordering::Relaxed), NEST_MASK);
                r.reader.ctr.store(0, Ordering::Relaxed);
            });
        })
        .join()
        .unwrap();
    }
}
