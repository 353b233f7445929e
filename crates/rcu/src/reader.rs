//! The read side: `read_lock`, `ReadGuard`, and per-thread registration.
//!
//! Each thread owns one [`Reader`] record in its thread-local storage: the
//! `ctr` word described in `registry.rs`. Only the owning thread writes it; grace
//! periods read it through the registry.
//!
//! # Registration states (`ReaderTls::state`)
//!
//! | state | `ctr` | meaning | outermost lock / unlock |
//! |---|---|---|---|
//! | `UNREGISTERED` | `NOT_REGISTERED` | never used RCU | registers, then the fast path |
//! | `REGISTERED` | `nesting \| phase` | in the registry | fast path: plain stores and `reader_barrier()` |
//! | `DEFUNCT` | `NOT_REGISTERED \| nesting` | the thread is exiting and its registration is gone | counted in `defunct_readers` with a full fence; slow but safe |
//!
//! `DEFUNCT` exists because thread-local destructors run in an unspecified
//! order: a destructor that runs after ours (dropping a cache, say) may still
//! enter a read-side section, and its record can no longer be registered
//! (nothing would unregister it before the thread's storage is freed).
//!
//! # Invariants
//!
//! * `ctr & NOT_REGISTERED != 0` exactly when `state != REGISTERED`. The
//!   flag is set while the record is out of the registry (initially, and by
//!   `unregister` after it has left the registry) and cleared by `register`
//!   under the registry lock, before the record enters it: no grace period
//!   ever reads a `ctr` with the flag.
//! * `ctr & NEST_MAX` is the number of open sections of the thread, at most
//!   `NEST_MAX`; one more panics (`nesting_overflow`), in every build.
//!
//! # The fast path
//!
//! liburcu's memb read side (`urcu/static/urcu-memb.h`) is a thread-local
//! load, a test of the nesting count, a load of the global `gp.ctr`, a store,
//! and a compiler barrier; unlock mirrors it and checks the grace period's
//! futex. Ours is the same sequence, and nothing else on the outermost path:
//!
//! * The record is a `const`-initialised thread-local with no destructor, so
//!   it is one `%fs`-relative access with no "is it initialised" check (see
//!   "Lifetime of the record").
//! * Registration is not checked separately: a thread that is not registered
//!   carries `NOT_REGISTERED` in its nesting half, so the fast path's own
//!   "nesting is zero" test fails for it and the nested path's "room for one
//!   more" test sends it to `lock_slow`, which registers (or counts a
//!   `DEFUNCT` section). The nesting limit becomes `2^31 - 1` instead of
//!   `2^32 - 1`; that compare is the overflow check too, so it costs nothing
//!   more than the check it replaces.
//! * On unlock, the end of a counted (`DEFUNCT`) section is `NOT_REGISTERED
//!   | 1`, which only the nested path has to tell apart: one compare there,
//!   none on the outermost path.
//! * The domain is a `static`: its address is a link-time constant, which
//!   the compiler keeps in a register across a loop of sections.
//! * The barrier mode is one byte load and compare, as liburcu's
//!   `urcu_memb_has_sys_membarrier` test.
//!
//! An outermost `read_lock()` / drop of the guard, membarrier mode, as rustc
//! 1.95 compiles a loop of sections for x86-64 (`objdump -d`; `%r14` holds
//! the record's `%fs` offset, `%rbx` the address of `domain().gp`, `%r15`
//! the constant `NEST_MASK`, all three kept across iterations):
//!
//! ```text
//! read_lock():
//!   mov    %fs:(%r14),%rax      ctr = self.reader.ctr (Relaxed)
//!   mov    %rax,%rcx
//!   and    %r15,%rcx            nest = ctr & NEST_MASK
//!   jne    nested               nest != 0: nested, not registered, or full
//!   mov    (%rbx),%rax          gp.ctr (Relaxed)
//!   mov    %rax,%fs:(%r14)      ctr = gp.ctr (Relaxed)
//!   movzbl 0xc(%rbx),%eax       gp.mode
//!   cmp    $0x1,%al             membarrier?
//!   jne    fence                no: `lock orl` (SeqCst fence), out of line
//!                               compiler fence: no instruction
//! drop(guard):
//!   mov    %fs:(%r14),%rax      ctr (Relaxed)
//!   cmp    $0x1,%eax            nest == 1: outermost, registered?
//!   jne    nested_unlock        no: out of line (below)
//!   movzbl 0xc(%rbx),%ecx       gp.mode
//!   dec    %rax                 ctr - 1
//!   cmp    $0x1,%cl             membarrier?
//!   jne    fence_unlock         no: fences around the store, out of line
//!   mov    %rax,%fs:(%r14)      ctr = ctr - 1 (Release: a plain store on x86)
//!   mov    0x8(%rbx),%eax       gp.futex (Relaxed)
//!   cmp    $0xffffffff,%eax     FUTEX_WAITING?
//!   je     wake                 a grace period sleeps: wake it, out of line
//!
//! nested:                       (out of line)
//!   cmp    $0x7fffffff,%ecx     nest >= NEST_MAX?
//!   jae    lock_slow            not registered, or full: a call
//!   inc    %rax
//!   mov    %rax,%fs:(%r14)      ctr + 1 (Relaxed)
//! nested_unlock:                (out of line)
//!   cmp    $0x80000001,%eax     NOT_REGISTERED | 1: end of a counted section?
//!   je     unlock_slow          yes: a call
//!   dec    %rax
//!   mov    %rax,%fs:(%r14)      ctr - 1 (Relaxed)
//! ```
//!
//! Nine instructions to enter the outermost section and eleven to leave it,
//! none of them a taken branch. Before, ten and thirteen: a
//! `cmpb $0x1,%fs:0x8(%r14)` / `jne` pair on each side loaded the thread's
//! registration state, and the outermost and membarrier paths were laid out
//! behind taken jumps (`likely()` in `barrier.rs` now tells the compiler
//! which way they go). liburcu's inline read side, as gcc 12 `-O2 -fPIE`
//! compiles it, is eight and fourteen (it loads
//! `urcu_memb_has_sys_membarrier` twice on unlock). The one instruction more
//! on lock is LLVM keeping `nest` in a register for the nested compare
//! (`mov` + `and` where a `test` would do). callgrind, a loop of lock +
//! `RcuPtr::load` + read + unlock: 30 instructions per iteration, 33 before;
//! liburcu's, the same loop in C (gcc 12 `-O2 -fPIE`): 33, or 30 when it
//! hands `black_box` a plain `u64` instead of the `Option<u64>` the Rust
//! loop does.
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

use crate::barrier::{futex_wake, likely, reader_barrier};
use crate::domain::{domain, Domain};
use crate::registry::{
    Reader, ReaderRef, FUTEX_WAITING, GP_COUNT, NEST_MASK, NEST_MAX, NOT_REGISTERED,
};
use crate::sync::{fence, lock, AtomicUsize, Ordering};

const UNREGISTERED: u8 = 0;
const REGISTERED: u8 = 1;
const DEFUNCT: u8 = 2;

/// A thread's record and its registration state.
///
/// # Invariants
///
/// See "Invariants" in the module docs: `reader.ctr` carries
/// `NOT_REGISTERED` exactly when `state` is not `REGISTERED`.
struct ReaderTls {
    reader: Reader,
    state: Cell<u8>,
}

#[cfg(not(loom))]
thread_local! {
    static READER: ReaderTls = const {
        ReaderTls {
            reader: Reader { ctr: AtomicUsize::new(NOT_REGISTERED) },
            state: Cell::new(UNREGISTERED),
        }
    };
    static REGISTRATION: Registration = const { Registration };
}

#[cfg(loom)]
loom::thread_local! {
    static READER: ReaderTls = ReaderTls {
        reader: Reader { ctr: AtomicUsize::new(NOT_REGISTERED) },
        state: Cell::new(UNREGISTERED),
    };
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

/// The nesting count is full (`NEST_MAX`: `2^31 - 1` sections on 64-bit
/// targets, `2^15 - 1` on 32-bit ones): almost certainly guards leaked with
/// `mem::forget` or an unbounded recursion. The count is left as it was.
#[cold]
#[inline(never)]
fn nesting_overflow() -> ! {
    panic!(
        "RCU read_lock() nesting overflow: {NEST_MAX} read-side sections are already open on \
         this thread (leaked ReadGuards, or unbounded recursion inside a section)"
    );
}

impl ReaderTls {
    #[inline(always)]
    fn lock(&self) {
        // Relaxed: only this thread writes its `ctr`.
        let ctr = self.reader.ctr.load(Ordering::Relaxed);
        let nest = ctr & NEST_MASK;
        if likely(nest == 0) {
            // Outermost section of a registered thread (an unregistered one
            // has `NOT_REGISTERED` here).
            let gp = &domain().gp;
            // Relaxed: any phase we see is handled by the two-phase grace
            // period (grace.rs, "Why two phases").
            let gp_ctr = gp.ctr.load(Ordering::Relaxed);
            // Relaxed: made visible to grace periods by the barrier below.
            self.reader.ctr.store(gp_ctr, Ordering::Relaxed);
            // Orders the `ctr` store before the section's loads. Pairs with
            // the grace period's step-2 `master_barrier()`.
            reader_barrier(gp.mode.is_membarrier());
        } else if nest < NEST_MAX {
            // Nested section of a registered thread, with room for one more.
            // Relaxed: nesting changes are invisible to grace periods (the
            // state only depends on nesting being non-zero).
            self.reader.ctr.store(ctr + GP_COUNT, Ordering::Relaxed);
        } else {
            // Not registered (`NOT_REGISTERED` counts as a full nest), or
            // the count is full: one compare serves both.
            self.lock_slow(ctr);
        }
    }

    #[inline(always)]
    fn unlock(&self) {
        // Relaxed: only this thread writes its `ctr`.
        let ctr = self.reader.ctr.load(Ordering::Relaxed);
        let nest = ctr & NEST_MASK;
        // An internal invariant, not a user error: a `ReadGuard` is made only
        // by `read_lock`, is `!Send`, and the record outlives every guard of
        // its thread (even across thread-local teardown), so no safe code can
        // unlock more sections than it locked.
        debug_assert_ne!(nest & NEST_MAX, 0, "RCU read_unlock without read_lock");
        if likely(nest == GP_COUNT) {
            // End of the outermost section of a registered thread.
            let gp = &domain().gp;
            let membarrier = gp.mode.is_membarrier();
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
            if !likely(gp.futex.load(Ordering::Relaxed) != FUTEX_WAITING) {
                wake_grace_period(domain());
            }
        } else if nest != NOT_REGISTERED | GP_COUNT {
            // Nested (registered or not): nesting only. Relaxed: invisible
            // to grace periods.
            self.reader.ctr.store(ctr - GP_COUNT, Ordering::Relaxed);
        } else {
            // End of a counted section of a thread that is not registered.
            self.unlock_slow();
        }
    }

    /// `lock` for a thread that is not registered, or whose nesting count is
    /// full. `ctr` is the value `lock` loaded.
    #[cold]
    #[inline(never)]
    fn lock_slow(&self, ctr: usize) {
        let nest = ctr & NEST_MAX;
        // Checked in every build: one more would carry into `NOT_REGISTERED`
        // (or, not registered, into the phase bit).
        if nest == NEST_MAX {
            nesting_overflow();
        }
        debug_assert_ne!(
            ctr & NOT_REGISTERED,
            0,
            "only a full count or no registration"
        );
        if nest != 0 {
            // Nested inside a counted section: nesting only. Relaxed: this
            // record is not registered; only we read it.
            self.reader.ctr.store(ctr + GP_COUNT, Ordering::Relaxed);
            return;
        }
        if self.state.get() == UNREGISTERED && self.register() {
            return self.lock();
        }
        // DEFUNCT: a counted section. SeqCst RMW then SeqCst fence: the
        // reader's column of a store-buffering handshake whose other column
        // is the grace period's barrier-then-`defunct_quiescent()` load.
        domain().defunct_readers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        // Relaxed: this record is not registered; only we read it.
        self.reader
            .ctr
            .store(NOT_REGISTERED | GP_COUNT, Ordering::Relaxed);
    }

    /// End of a counted section (`ctr` is `NOT_REGISTERED | 1`).
    #[cold]
    #[inline(never)]
    fn unlock_slow(&self) {
        let domain = domain();
        // Relaxed: this record is not registered.
        self.reader.ctr.store(NOT_REGISTERED, Ordering::Relaxed);
        // Release: orders the section's loads before the decrement; pairs
        // with the Acquire load in `defunct_quiescent()`.
        domain.defunct_readers.fetch_sub(1, Ordering::Release);
        fence(Ordering::SeqCst);
        // Relaxed: see the handshake in grace.rs.
        if domain.gp.futex.load(Ordering::Relaxed) == FUTEX_WAITING {
            wake_grace_period(domain);
        }
    }

    /// Add this thread's record to the registry. False if thread-local
    /// destruction has already begun (the record goes `DEFUNCT`). Called
    /// only by an outermost `lock`, so the nesting is zero.
    fn register(&self) -> bool {
        #[cfg(not(loom))]
        if REGISTRATION.try_with(|_| ()).is_err() {
            self.state.set(DEFUNCT);
            return false;
        }
        let domain = domain();
        let mut lists = lock(&domain.readers);
        domain.gp.mode.ensure_init();
        // Relaxed: clears `NOT_REGISTERED` before the record enters the
        // registry; grace periods read it only under the registry lock we
        // hold, so the first one to see the record sees this store.
        self.reader.ctr.store(0, Ordering::Relaxed);
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
        let ctr = self.reader.ctr.load(Ordering::Relaxed);
        if ctr & NEST_MASK != 0 {
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
        // Relaxed: out of the registry now, so only we read it. Keeps the
        // nesting and drops the phase.
        self.reader
            .ctr
            .store(NOT_REGISTERED | (ctr & NEST_MAX), Ordering::Relaxed);
        self.state.set(DEFUNCT);
    }

    #[inline]
    fn in_section(&self) -> bool {
        // Relaxed: only this thread writes its `ctr`.
        self.reader.ctr.load(Ordering::Relaxed) & NEST_MAX != 0
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
/// [`crate::BarrierMode::Fence`]): liburcu's memb read side, instruction for
/// instruction; nested calls only count. The first call on
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
/// If this thread already has `2^31 - 1` sections open (`2^15 - 1` on 32-bit
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

/// Wake a grace period sleeping on `gp.futex`: called by a reader that saw
/// `FUTEX_WAITING` after leaving its section (the right column of the
/// handshake in grace.rs, "Sleeping").
#[cold]
fn wake_grace_period(domain: &Domain) {
    // Relaxed: the grace period re-scans after waking; see grace.rs.
    domain.gp.futex.store(0, Ordering::Relaxed);
    futex_wake(&domain.gp.futex);
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

    fn ctr() -> usize {
        // Relaxed: our own record.
        READER.with(|r| r.reader.ctr.load(Ordering::Relaxed))
    }

    fn state() -> u8 {
        READER.with(|r| r.state.get())
    }

    fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    }

    /// `read_lock` with the nesting count of this (fresh) thread set to
    /// `fabricated` must panic with the overflow message and leave the
    /// count as it was.
    fn assert_overflow_panics(fabricated: usize) {
        // Relaxed: our own record, not registered.
        READER.with(|r| r.reader.ctr.store(fabricated, Ordering::Relaxed));
        let r = std::panic::catch_unwind(read_lock);
        let msg = panic_message(r.expect_err("nesting overflow must panic"));
        assert!(
            msg.contains("read_lock() nesting overflow"),
            "unexpected panic: {msg}"
        );
        // The count was left as it was: unwind the fabricated nesting.
        assert_eq!(ctr(), fabricated);
        READER.with(|r| r.reader.ctr.store(NOT_REGISTERED, Ordering::Relaxed));
    }

    /// Nesting one past the maximum used to carry into the phase bit in
    /// release builds (a debug-only assertion guarded it), leaving the
    /// thread at nesting zero while every guard was live: a panic now, in
    /// every build. On a fresh, never-registered thread, so no grace period
    /// of the other tests sees the fabricated nesting.
    #[test]
    fn read_lock_nesting_overflow_panics_in_every_build() {
        std::thread::spawn(|| assert_overflow_panics(NEST_MAX))
            .join()
            .unwrap();
    }

    /// The same limit holds in a counted section (a thread that is not
    /// registered): one more would carry `NOT_REGISTERED`'s nesting into
    /// the phase bit.
    #[test]
    fn read_lock_nesting_overflow_panics_when_not_registered() {
        std::thread::spawn(|| assert_overflow_panics(NOT_REGISTERED | NEST_MAX))
            .join()
            .unwrap();
    }

    /// The fast path has no registration check of its own: `NOT_REGISTERED`
    /// in `ctr` is what sends a thread's first `read_lock` to registration.
    /// The flag must be set exactly while the thread is not registered, and
    /// never be set in a registered reader's `ctr`, across nesting.
    #[test]
    fn not_registered_flag_tracks_registration() {
        std::thread::spawn(|| {
            assert_eq!(state(), UNREGISTERED);
            assert_eq!(ctr(), NOT_REGISTERED);
            assert!(!in_read_section());
            let outer = read_lock();
            assert_eq!(state(), REGISTERED);
            assert_eq!(ctr() & NOT_REGISTERED, 0);
            assert_eq!(ctr() & NEST_MASK, 1);
            let inner = read_lock();
            assert_eq!(ctr() & NEST_MASK, 2);
            assert!(in_read_section());
            drop(inner);
            drop(outer);
            assert_eq!(ctr() & NEST_MASK, 0);
            assert!(!in_read_section());
            // A registered thread's later sections stay on the fast path.
            drop(read_lock());
            assert_eq!(state(), REGISTERED);
            assert_eq!(ctr() & NOT_REGISTERED, 0);
        })
        .join()
        .unwrap();
    }

    /// A section across unregistration (teardown with guards held) keeps its
    /// nesting under `NOT_REGISTERED`, so inner guards only count down and
    /// the outermost one ends the counted section; later sections are
    /// counted ones.
    #[test]
    fn unregistered_record_keeps_nesting_and_counts_sections() {
        std::thread::spawn(|| {
            let outer = read_lock();
            let inner = read_lock();
            READER.with(ReaderTls::unregister);
            assert_eq!(state(), DEFUNCT);
            assert_eq!(ctr(), NOT_REGISTERED | 2);
            assert!(in_read_section());
            drop(inner);
            assert_eq!(ctr(), NOT_REGISTERED | 1);
            drop(outer);
            assert_eq!(ctr(), NOT_REGISTERED);
            assert!(!in_read_section());
            // A new section of a DEFUNCT thread is counted, and nests.
            let g = read_lock();
            assert_eq!(state(), DEFUNCT);
            assert_eq!(ctr(), NOT_REGISTERED | 1);
            let g2 = read_lock();
            assert_eq!(ctr(), NOT_REGISTERED | 2);
            drop(g2);
            drop(g);
            assert_eq!(ctr(), NOT_REGISTERED);
        })
        .join()
        .unwrap();
    }
}
