//! [`RefLock`]: the kernel's per-VMA lock (Linux 6.15), a reference count
//! whose value is also a reader-writer lock state, for any "one big lock,
//! many objects" structure.
//!
//! # The problem
//!
//! A process's address space is a tree of VMAs under one big lock,
//! `mmap_lock`. Every page fault used to take it for reading, so one thread
//! calling `mmap` stalled every faulting thread of the process. The per-VMA
//! lock lets a fault find its VMA under RCU and read-lock *that VMA only*,
//! falling back to `mmap_lock` when it cannot; writers still take the big
//! lock for writing and additionally write-lock each VMA they change. Since
//! 6.15 the per-VMA lock is not an `rw_semaphore` but the VMA's reference
//! count (`vm_refcnt`), with a write-lock *sequence number* beside it
//! (`include/linux/mmap_lock.h`, `mm/mmap_lock.c`).
//!
//! Here the big lock is a [`RefLockDomain<T>`]: it owns the data `T` behind a
//! reader-writer lock (the `mm_struct` owning `mmap_lock`), the write-cycle
//! sequence count (`mm_lock_seq`) and the writer's wait (`vma_writer_wait`).
//! The per-object lock is a [`RefLock`] field embedded in each object.
//!
//! # States
//!
//! One `u32`, `refcnt`, encodes the state; `OFFSET` = `0x4000_0000`
//! ([`RefLock::OFFSET`], the kernel's `VMA_LOCK_OFFSET`) is the "readers
//! excluded" bit and `LIMIT` = `OFFSET - 1` ([`RefLock::READER_LIMIT`],
//! `VMA_REF_LIMIT`) the largest value a reader may produce:
//!
//! | `refcnt` | state | a reader's [`try_read`](RefLock::try_read) |
//! |---|---|---|
//! | `0` | detached: in no domain; free to [`attach`](RefLock::attach) | fails, [`TryReadError::Detached`] |
//! | `1` | attached, no reader; unlocked *or* write-locked (told apart by the sequence, below) | increments, then checks |
//! | `1 + n`, `2 ..= LIMIT` | attached, `n` readers (some may be transient, about to fail a check) | increments if below `LIMIT`, else [`TryReadError::Overflow`] |
//! | `OFFSET + 1 + n` | [`start_write`](RefLock::start_write) waiting for `n` readers to leave | fails, [`TryReadError::WriteLocked`] |
//! | `OFFSET + 1` | `start_write` has excluded every reader (transient) | fails, `WriteLocked` |
//! | `OFFSET + n` | [`detach`](RefLock::detach) waiting for `n` transient readers | fails, `WriteLocked` |
//! | `OFFSET` | `attach` or `detach` owns the object exclusively (transient) | fails, `WriteLocked` |
//!
//! Readers never produce a value above `LIMIT`, and a writer adds `OFFSET`
//! at most once (it holds the domain's write lock), so the count never
//! exceeds `2 * OFFSET - 1` and never wraps.
//!
//! A write lock lasts longer than the `OFFSET` state: it is recorded by
//! storing the domain's current write-cycle number in the object's
//! `lock_seq`. The domain's `seq` is odd while its write lock is held and
//! even otherwise; an object is **write-locked** iff `lock_seq == seq`.
//! Releasing the big write lock makes `seq` even, which ends every object's
//! write lock of that cycle at once ([`end_write_all`]): there is no
//! per-object write unlock, exactly as upstream.
//!
//! ```text
//!                  attach (under write lock; object comes out write-locked)
//!    DETACHED(0) ---------------------------------------------> ATTACHED(1), lock_seq = seq
//!        ^                                                           |      ^
//!        |  detach: +OFFSET-1, wait for readers,                     |      | end_write_all: seq += 1
//!        +--------- clear owner, store 0 <-- (must be write-locked) -+      | (every object at once)
//!                                                                    |      |
//!    readers: 1+n <-> 1+n+1 (try_read / drop) while not write-locked +------+
//!    start_write: +OFFSET, wait until OFFSET+1, lock_seq = seq, -OFFSET
//! ```
//!
//! # Protocols
//!
//! **Reader** ([`RefLock::try_read`], never waits; the kernel's
//! `vma_start_read`):
//!
//! 1. Pessimistic check: if `lock_seq == seq` (both `Relaxed`), fail early
//!    with `WriteLocked`. May be wrong either way; it only saves the RMW.
//! 2. Limited increment of `refcnt`, **Acquire** on success: fails on `0`
//!    (detached), on `OFFSET` set (a writer or detacher), at `LIMIT`.
//! 3. Identity: the object's owner must be this domain and its key the
//!    expected one, else put the reference and fail with `Reused` (the
//!    memory was recycled, see below).
//! 4. Write-locked check: `lock_seq == seq`, `seq` loaded with **Acquire**;
//!    if equal, put the reference and fail with `WriteLocked`.
//! 5. Success: a [`ReadLock`]; dropping it puts the reference and wakes a
//!    writer waiting for the last reader.
//!
//! **Writer** ([`RefLock::start_write`], `vma_start_write`), holding the
//! domain's write lock ([`DomainWriteGuard`]):
//!
//! 1. Already write-locked in this cycle (`lock_seq == seq`)? Done.
//! 2. `refcnt += OFFSET`: no new reader can increment.
//! 3. Wait (through [`RcuWait`]) until `refcnt == OFFSET + 1`, **Acquire**:
//!    every reader that got in before step 2 has left.
//! 4. `lock_seq = seq`; then `refcnt -= OFFSET` with **Release**, which
//!    publishes `lock_seq` to every later reader's Acquire increment.
//!
//! **End of the write cycle** ([`end_write_all`], `vma_end_write_all`):
//! `seq += 1` with **Release**, before the big lock is released; a reader's
//! Acquire load of `seq` in step 4 pairs with it and sees everything the
//! write cycle changed.
//!
//! # Ordering
//!
//! *A reader never succeeds while the object is write-locked.* A reader's
//! increment either precedes the writer's `+OFFSET` in `refcnt`'s
//! modification order (then the writer waits for it: the writer's Acquire
//! wait pairs with the reader's Release put) or follows the writer's
//! `-OFFSET` (then the Acquire increment reads from the release sequence of
//! that Release subtraction, so the reader sees `lock_seq = seq` and, by
//! coherence, `seq` no older than the cycle's: it fails in step 4 until the
//! cycle's Release `end_write_all`). Increments in between fail on `OFFSET`.
//!
//! *The writer never proceeds while a reader holds the lock*: it waits for
//! the exact count, and readers cannot increment past `LIMIT < OFFSET`.
//!
//! The kernel relies on control dependencies after `refcount_inc_not_zero`
//! and on `READ_ONCE` of `vm_mm`; Rust has neither, so every successful
//! increment here is Acquire and every field read after it is an atomic
//! (see the crate docs). Starting a write cycle is a `Relaxed` store of the
//! odd sequence: no reader acts on seeing it, because every verdict a reader
//! acts upon is made under a counted reference, ordered by `refcnt`. (The
//! kernel's `smp_wmb()` there serves speculative `mmap_lock` readers, which
//! this port does not offer.) The sequence is 64 bits, so it cannot wrap in
//! practice; the kernel's 32-bit one may, which only yields false "locked".
//!
//! # Type-stable reuse and identity
//!
//! An object's memory may be reused after [`detach`](RefLock::detach): for
//! another key in the same domain, or for another domain altogether (the
//! kernel's `SLAB_TYPESAFE_BY_RCU` VMA cache). A reader that found the object
//! through a stale index may therefore increment the count of an object that
//! now means something else. The rules (the kernel's `vma_start_read`
//! comments):
//!
//! * [`attach`](RefLock::attach) claims the object (`0 → OFFSET`, Acquire),
//!   writes its owner, key and `lock_seq`, and publishes them with
//!   `store(1, Release)` (`refcount_set_release`).
//! * Readers read owner and key only after their Acquire increment, so they
//!   read the values of the attachment they counted against.
//! * [`detach`](RefLock::detach) waits out transient readers before it clears
//!   the owner, and ends with `store(0, Release)`, pairing with the next
//!   claim.
//!
//! # The wake-up after the last reader's put cannot touch freed memory
//!
//! Linux 6.15 had a use-after-free here (Jann Horn, 2025; fixed by
//! `9bbffee67ffd`): a reader that incremented a VMA recycled into *another*
//! mm found the mismatch, put its reference — which let that mm's writer
//! finish, unmap, and free the mm — and then woke `vma->vm_mm->vma_writer_wait`
//! in the freed mm. The fix pins the other mm (`mmgrab`) across the put.
//!
//! Here the design makes the bug impossible rather than fixed at one site:
//!
//! * The domain's sequence and wait live in a reference-counted core
//!   (`Arc`). An attached object holds a strong reference to its owner's
//!   core, taken in `attach` and released in `detach`; so an object that a
//!   reader holds counted (which `detach` must wait for) keeps its owner's
//!   core alive. Comparing owner pointers is therefore sound: both cores are
//!   alive, so equal addresses mean the same domain.
//! * A successful [`ReadLock`] borrows the domain it was taken against, and
//!   the identity check proved that domain is the owner: the put's wake-up
//!   goes to memory the borrow keeps alive.
//! * A reader that finds a *foreign* owner takes its own strong reference to
//!   that core before the put and drops it after the wake-up (the `mmgrab`
//!   of the fix), all inside `try_read`.
//!
//! No path wakes through a pointer it has not pinned. Nothing here needs an
//! RCU read-side section either: the borrow of the object proves its memory
//! valid. RCU is what the *caller* uses to find the object (an index
//! published with `RcuPtr`, say); see `examples/address_space.rs`.
//!
//! # Blocking and misuse
//!
//! Readers never block. [`start_write`](RefLock::start_write) and
//! [`detach`](RefLock::detach) block until the readers that were already in
//! have left; a thread that holds a [`ReadLock`] on an object and then
//! write-locks it deadlocks, as in the kernel. Misuse that would corrupt the
//! state panics, naming it, before changing anything: writing with another
//! domain's guard, attaching an attached object, detaching one that is not
//! write-locked.
//!
//! [`end_write_all`]: DomainWriteGuard

use crate::rcuwait::RcuWait;
use crate::sync::{Arc, AtomicU32, Ordering};
use std::error::Error;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr;
use std::sync::PoisonError;
use sync_ext::{AtomicPtr, AtomicU64, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// What this module needs beyond the crate's `sync` switch, switched the same
/// way so that `--cfg loom` models the big lock and the 64-bit sequence too.
mod sync_ext {
    #[cfg(loom)]
    pub(super) use loom::sync::{
        atomic::{AtomicPtr, AtomicU64},
        RwLock, RwLockReadGuard, RwLockWriteGuard,
    };
    #[cfg(not(loom))]
    pub(super) use std::sync::{
        atomic::{AtomicPtr, AtomicU64},
        RwLock, RwLockReadGuard, RwLockWriteGuard,
    };
}

/// The "readers excluded" bit (`VMA_LOCK_OFFSET`).
const OFFSET: u32 = 0x4000_0000;
/// The largest count a reader may produce (`VMA_REF_LIMIT`).
const READER_LIMIT: u32 = OFFSET - 1;

/// `lock_seq` of an object that was never attached: odd, and never reached
/// by a 64-bit sequence that starts at 0.
const NEVER_LOCKED: u64 = u64::MAX;

// -----------------------------------------------------------------------------
// The domain
// -----------------------------------------------------------------------------

/// What readers and attached objects reach: the write-cycle sequence and the
/// writer's wait. Shared through an `Arc` so that an attached object can keep
/// it alive (see "The wake-up..." in the module docs).
struct DomainCore {
    /// `mm_lock_seq`: odd while the domain's write lock is held, even
    /// otherwise. Written only by the write-lock holder.
    seq: AtomicU64,
    /// `vma_writer_wait`: the write-lock holder waits here for readers to
    /// leave. One waiter at a time, because only the write-lock holder waits.
    writer_wait: RcuWait,
}

impl DomainCore {
    /// Wakes the writer after a put that left the count at a writer's target.
    #[cold]
    #[inline(never)]
    fn wake_writer(&self) {
        self.writer_wait.wake_up();
    }
}

/// The owner of many [`RefLock`]s: a big reader-writer lock around `T` (the
/// `mm_struct` and its `mmap_lock`), its write-cycle sequence and the writer
/// wait.
///
/// * [`read`](Self::read) takes the big lock for reading; objects can then be
///   read-locked without any failure but detachment
///   ([`RefLock::read_locked`]).
/// * [`write`](Self::write) takes it for writing and starts a write cycle;
///   the returned [`DomainWriteGuard`] is the token every write-side
///   operation of [`RefLock`] demands. Dropping it ends the cycle, and with
///   it every object's write lock ([`end_write_all`]).
///
/// Lock poisoning is not propagated: like `mmap_lock`, the lock does not
/// remember that a holder panicked.
///
/// Detach every object before dropping the domain (the kernel's `exit_mmap`
/// does). An object still attached when its domain is dropped stays attached
/// to the dead domain: it keeps the domain's small core (sequence and wait)
/// alive, readers of other domains get [`TryReadError::Reused`], and
/// [`RefLock::attach`] refuses it. Memory safety does not depend on it.
///
/// # Examples
///
/// ```
/// use shrinker_sync::{RefLock, RefLockDomain};
///
/// let mm = RefLockDomain::new(Vec::<u64>::new());
/// let vma = RefLock::new();
/// {
///     let mut w = mm.write();
///     vma.attach(&w, 7); // attached and write-locked for this cycle
///     w.push(7);
///     assert!(vma.try_read(&mm, 7).is_err()); // readers are kept out...
/// } // ...until the write cycle ends
/// let r = vma.try_read(&mm, 7).expect("unlocked now");
/// assert_eq!(r.key(), 7);
/// ```
///
/// [`end_write_all`]: DomainWriteGuard
pub struct RefLockDomain<T> {
    core: Arc<DomainCore>,
    lock: RwLock<T>,
}

impl<T> RefLockDomain<T> {
    /// A domain guarding `data`, with no write cycle in progress.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::RefLockDomain;
    /// let d = RefLockDomain::new(0u32);
    /// assert_eq!(*d.read(), 0);
    /// ```
    #[must_use]
    pub fn new(data: T) -> Self {
        RefLockDomain {
            core: Arc::new(DomainCore {
                seq: AtomicU64::new(0),
                writer_wait: RcuWait::new(),
            }),
            lock: RwLock::new(data),
        }
    }

    /// Takes the big lock for reading (`mmap_read_lock`).
    ///
    /// # Blocking
    ///
    /// Waits while a writer holds the big lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::RefLockDomain;
    /// let d = RefLockDomain::new(String::from("mm"));
    /// assert_eq!(d.read().as_str(), "mm");
    /// ```
    pub fn read(&self) -> DomainReadGuard<'_, T> {
        DomainReadGuard {
            domain: self,
            guard: self.lock.read().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Takes the big lock for writing and starts a write cycle
    /// (`mmap_write_lock`, `mm_lock_seqcount_begin`).
    ///
    /// # Ordering
    ///
    /// The cycle's odd sequence is stored **Relaxed**: readers act only on
    /// what they observe under a counted reference (module docs, "Ordering").
    ///
    /// # Blocking
    ///
    /// Waits for every holder of the big lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::RefLockDomain;
    /// let d = RefLockDomain::new(1u32);
    /// *d.write() += 1;
    /// assert_eq!(*d.read(), 2);
    /// ```
    pub fn write(&self) -> DomainWriteGuard<'_, T> {
        let guard = self.lock.write().unwrap_or_else(PoisonError::into_inner);
        // Relaxed (load): only the write-lock holder stores `seq`, and the
        // lock's acquisition ordered the previous holder's store before us.
        // Wrapping: 2^64 write cycles are out of reach (585 years at one per
        // nanosecond); the operation is spelled out so that no build panics.
        let seq = self.core.seq.load(Ordering::Relaxed).wrapping_add(1);
        debug_assert!(seq % 2 == 1, "a write cycle began while one was open");
        // Relaxed (store): see `# Ordering` above.
        self.core.seq.store(seq, Ordering::Relaxed);
        DomainWriteGuard {
            domain: self,
            seq,
            guard,
            _bound_to_thread: PhantomData,
        }
    }

    /// Mutable access without locking: `&mut self` proves nobody else holds
    /// the lock or any [`ReadLock`] of this domain.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::RefLockDomain;
    /// let mut d = RefLockDomain::new(1u32);
    /// *d.get_mut() = 5;
    /// assert_eq!(*d.read(), 5);
    /// ```
    pub fn get_mut(&mut self) -> &mut T {
        self.lock.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    /// The write-cycle sequence (`mm_lock_seq`): odd while a write cycle is
    /// open. A diagnostic; it may be stale as soon as it returns.
    ///
    /// # Ordering
    ///
    /// **Unordered** (`Relaxed`).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::RefLockDomain;
    /// let d = RefLockDomain::new(());
    /// assert_eq!(d.sequence(), 0);
    /// let w = d.write();
    /// assert_eq!(d.sequence(), 1);
    /// drop(w);
    /// assert_eq!(d.sequence(), 2);
    /// ```
    #[must_use]
    pub fn sequence(&self) -> u64 {
        // Relaxed: a diagnostic.
        self.core.seq.load(Ordering::Relaxed)
    }
}

impl<T: Default> Default for RefLockDomain<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> fmt::Debug for RefLockDomain<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefLockDomain")
            .field("sequence", &self.sequence())
            .field("writer_waiting", &self.core.writer_wait.has_waiter())
            .finish_non_exhaustive()
    }
}

/// The big lock held for reading (`mmap_read_lock`); the token of
/// [`RefLock::read_locked`]. Dereferences to the domain's data.
///
/// # Examples
///
/// ```
/// use shrinker_sync::RefLockDomain;
/// let d = RefLockDomain::new(vec![1, 2]);
/// let r = d.read();
/// assert_eq!(r.len(), 2);
/// ```
pub struct DomainReadGuard<'a, T> {
    domain: &'a RefLockDomain<T>,
    guard: RwLockReadGuard<'a, T>,
}

impl<T> Deref for DomainReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: fmt::Debug> fmt::Debug for DomainReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DomainReadGuard")
            .field(&*self.guard)
            .finish()
    }
}

/// The big lock held for writing, with a write cycle open; the token of
/// every write-side operation of [`RefLock`]. Dereferences to the domain's
/// data.
///
/// Dropping it ends the write cycle — `end_write_all` (`vma_end_write_all`):
/// the sequence becomes even with a **Release** store, which ends the write
/// lock of every object write-locked in the cycle at once — and then releases
/// the big lock. There is no per-object write unlock. (There is no
/// `downgrade` either: `std`'s `RwLockWriteGuard::downgrade` needs a newer
/// Rust than this crate's MSRV, and loom has none.)
///
/// # Thread binding
///
/// The guard is neither `Sync` nor `Send`: one write cycle is one thread's.
///
/// * `!Sync`: the write side of every [`RefLock`] assumes a single writer per
///   domain. Two threads sharing one guard could `start_write` the same
///   object at once (both add `OFFSET`, the count passes `2 * OFFSET` and the
///   wait for `OFFSET + 1` never ends), wait on the domain's single-waiter
///   [`RcuWait`] together, or trust a `lock_seq` another thread stored
///   `Relaxed` while its wait for readers is still going on.
/// * `!Send`: it holds the big lock's `std::sync::RwLockWriteGuard`, which
///   must be released on the thread that took it (already `!Send`); the
///   marker states it for every build, loom's included.
///
/// ```compile_fail
/// // A write guard cannot be shared between threads (`!Sync`).
/// fn shared<T: Sync>(_: &T) {}
/// let d = shrinker_sync::RefLockDomain::new(());
/// shared(&d.write());
/// ```
///
/// ```compile_fail
/// // Nor moved to another thread (`!Send`).
/// fn moved<T: Send>(_: T) {}
/// let d = shrinker_sync::RefLockDomain::new(());
/// moved(d.write());
/// ```
///
/// # Examples
///
/// ```
/// use shrinker_sync::{RefLock, RefLockDomain};
/// let d = RefLockDomain::new(());
/// let obj = RefLock::new();
/// let w = d.write();
/// obj.attach(&w, 1);
/// assert!(obj.is_write_locked(&w));
/// drop(w); // end_write_all
/// assert!(obj.try_read(&d, 1).is_ok());
/// ```
pub struct DomainWriteGuard<'a, T> {
    domain: &'a RefLockDomain<T>,
    /// This cycle's (odd) sequence.
    seq: u64,
    guard: RwLockWriteGuard<'a, T>,
    /// `!Sync` and `!Send`, in every build (std's guard is `!Send` but `Sync`
    /// for `T: Sync`, loom's may differ). See "Thread binding" above.
    _bound_to_thread: PhantomData<*const ()>,
}

impl<T> DomainWriteGuard<'_, T> {
    #[inline]
    fn core(&self) -> &DomainCore {
        &self.domain.core
    }
}

impl<T> Deref for DomainWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for DomainWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for DomainWriteGuard<'_, T> {
    fn drop(&mut self) {
        // end_write_all. Release: pairs with the Acquire load of `seq` in a
        // reader's step 4 (RefLock::validate): a reader that sees the even
        // value sees every change made in this cycle. Runs before the field
        // `guard` drops, i.e. before the big lock is released, so the next
        // cycle's store comes after this one.
        self.domain
            .core
            .seq
            .store(self.seq.wrapping_add(1), Ordering::Release);
    }
}

impl<T: fmt::Debug> fmt::Debug for DomainWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainWriteGuard")
            .field("seq", &self.seq)
            .field("data", &*self.guard)
            .finish()
    }
}

// -----------------------------------------------------------------------------
// The per-object lock
// -----------------------------------------------------------------------------

/// Why [`RefLock::try_read`] or [`RefLock::read_locked`] refused.
///
/// All are transient from the reader's point of view; the kernel's answer to
/// each is to fall back to the big lock, except `Detached`, where a fresh
/// lookup may find the object's replacement (`-EAGAIN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TryReadError {
    /// The object is detached (count 0): it left the domain, or was never
    /// attached. Look it up again (`-EAGAIN`).
    Detached,
    /// A writer holds or is taking the object's write lock, or an attach or
    /// detach owns it. Fall back to the big lock.
    WriteLocked,
    /// [`RefLock::READER_LIMIT`] readers hold it. Fall back.
    Overflow,
    /// The memory was recycled: the object is attached to another domain, or
    /// under another key. Fall back or look up again.
    Reused,
}

impl fmt::Display for TryReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TryReadError::Detached => "the object is detached",
            TryReadError::WriteLocked => "the object is write-locked",
            TryReadError::Overflow => "the object's reader count is at its limit",
            TryReadError::Reused => "the object was reused for another domain or key",
        })
    }
}

impl Error for TryReadError {}

/// The per-object read lock made of a reference count (`vm_refcnt` +
/// `vm_lock_seq`): embed one in each object of a [`RefLockDomain`].
///
/// See the [module documentation](self) for the state table, the protocols
/// and the reuse rules.
///
/// # Invariants
///
/// * `owner` is non-null exactly while the object is attached (from the
///   claim in `attach` to the end of `detach`), and then holds a strong
///   reference to the owner's core (`Arc::into_raw`).
/// * `owner`, `key` are written only while the count is `OFFSET` and the
///   writer owns the object exclusively; `lock_seq` only under the owner's
///   write lock with `OFFSET` set.
/// * A counted reader (count contribution held) implies the object is
///   attached and its owner pointer stable.
///
/// # Examples
///
/// ```
/// use shrinker_sync::{RefLock, RefLockDomain, TryReadError};
///
/// let mm = RefLockDomain::new(());
/// let vma = RefLock::new();
/// assert_eq!(vma.try_read(&mm, 1).err(), Some(TryReadError::Detached));
/// drop(mm.write()); // nothing to do
/// {
///     let w = mm.write();
///     vma.attach(&w, 1);
/// }
/// let r1 = vma.try_read(&mm, 1).unwrap();
/// let r2 = vma.try_read(&mm, 1).unwrap();
/// assert_eq!(vma.state().readers(), 2);
/// drop((r1, r2));
/// {
///     let w = mm.write();
///     vma.start_write(&w);
///     vma.detach(&w);
/// }
/// assert!(vma.state().is_detached());
/// ```
pub struct RefLock {
    /// The state word; see the table in the module docs.
    refcnt: AtomicU32,
    /// The owner's sequence when it last write-locked this object.
    lock_seq: AtomicU64,
    /// The identity within the owner, given to `attach`.
    key: AtomicU64,
    /// The owner's core while attached (a strong `Arc` reference), else null.
    owner: AtomicPtr<DomainCore>,
}

impl RefLock {
    /// The "readers excluded" bit of the count (`VMA_LOCK_OFFSET`).
    pub const OFFSET: u32 = OFFSET;
    /// The largest count readers may produce (`VMA_REF_LIMIT`): the attached
    /// reference plus `READER_LIMIT - 1` readers.
    pub const READER_LIMIT: u32 = READER_LIMIT;

    /// A detached lock (`vma_lock_init(vma, true)`).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::RefLock;
    /// assert!(RefLock::new().state().is_detached());
    /// ```
    #[must_use]
    pub fn new() -> Self {
        RefLock {
            refcnt: AtomicU32::new(0),
            lock_seq: AtomicU64::new(NEVER_LOCKED),
            key: AtomicU64::new(0),
            owner: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Read-locks the object without the big lock, never waiting
    /// (`vma_start_read`).
    ///
    /// Succeeds if the object is attached to `domain` under `key` and not
    /// write-locked. Meant for objects found through an index that is read
    /// without the big lock (under RCU, typically), which may hand out
    /// objects that were detached or recycled since: the checks happen after
    /// the reference is taken, as in the kernel. No RCU read-side section is
    /// needed for this call itself (module docs).
    ///
    /// # Errors
    ///
    /// [`TryReadError`]: `Detached` (look up again), `WriteLocked`,
    /// `Overflow`, `Reused` (fall back to the big lock). A failure holds
    /// nothing.
    ///
    /// # Ordering
    ///
    /// **Acquire on success**: the increment pairs with the Release that
    /// published the object (`attach`) or ended its last write lock
    /// (`start_write`'s `-OFFSET`), and the load of the sequence pairs with
    /// the Release end of the last write cycle. Everything written to the
    /// object before it was last unlocked is visible.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{RefLock, RefLockDomain, TryReadError};
    /// let (a, b) = (RefLockDomain::new(()), RefLockDomain::new(()));
    /// let obj = RefLock::new();
    /// obj.attach(&a.write(), 9);
    /// assert!(obj.try_read(&a, 9).is_ok());
    /// assert_eq!(obj.try_read(&a, 8).err(), Some(TryReadError::Reused));
    /// assert_eq!(obj.try_read(&b, 9).err(), Some(TryReadError::Reused));
    /// ```
    #[inline]
    pub fn try_read<'a, T>(
        &'a self,
        domain: &'a RefLockDomain<T>,
        key: u64,
    ) -> Result<ReadLock<'a>, TryReadError> {
        let core = &*domain.core;
        // Step 1, the pessimistic check. Relaxed (both): an early bail-out
        // only; the verdict that counts is step 4's.
        if self.lock_seq.load(Ordering::Relaxed) == core.seq.load(Ordering::Relaxed) {
            return Err(TryReadError::WriteLocked);
        }
        // Step 2.
        self.inc_limited()?;
        // Steps 3 and 4.
        self.validate(core, key, true)
    }

    /// Read-locks the object while the caller holds the big lock for reading
    /// (`vma_start_read_locked`).
    ///
    /// No write cycle can be open, so the object cannot be write-locked: this
    /// fails only if the object is detached, at the reader limit, or not this
    /// domain's under `key`. The lock may outlive the big read lock (that is
    /// its use: look up under the big lock, drop it, keep working on the
    /// object).
    ///
    /// # Errors
    ///
    /// `Detached`, `Overflow` or `Reused`, as for
    /// [`try_read`](Self::try_read).
    ///
    /// # Ordering
    ///
    /// **Acquire on success** (the increment); the big lock orders the rest.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{RefLock, RefLockDomain};
    /// let d = RefLockDomain::new(());
    /// let obj = RefLock::new();
    /// obj.attach(&d.write(), 3);
    /// let lock = {
    ///     let big = d.read();
    ///     obj.read_locked(&big, 3).unwrap()
    /// }; // the big lock is released; the object stays read-locked
    /// assert_eq!(lock.key(), 3);
    /// ```
    #[inline]
    pub fn read_locked<'a, T>(
        &'a self,
        guard: &DomainReadGuard<'a, T>,
        key: u64,
    ) -> Result<ReadLock<'a>, TryReadError> {
        let domain: &'a RefLockDomain<T> = guard.domain;
        self.inc_limited()?;
        self.validate(&domain.core, key, false)
    }

    /// Step 2: the limited increment (`__refcount_inc_not_zero_limited_acquire`
    /// with `VMA_REF_LIMIT`).
    #[inline]
    fn inc_limited(&self) -> Result<(), TryReadError> {
        // Relaxed: a first guess for the CAS.
        let mut old = self.refcnt.load(Ordering::Relaxed);
        loop {
            if old == 0 {
                return Err(TryReadError::Detached);
            }
            if old >= READER_LIMIT {
                return Err(if old >= OFFSET {
                    TryReadError::WriteLocked
                } else {
                    TryReadError::Overflow
                });
            }
            // Acquire on success: pairs with attach()'s Release store of 1
            // and start_write()'s Release -OFFSET (every successful increment
            // reads from the release sequence of the latest of them), so the
            // owner, key and lock_seq read next are the ones they published.
            // Relaxed on failure: nothing is read through a failed CAS.
            match self.refcnt.compare_exchange_weak(
                old,
                old + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => old = now,
            }
        }
    }

    /// Steps 3 and 4, holding a counted reference: identity, then (for
    /// lockless readers) the write-locked check. Every failure puts the
    /// reference.
    #[inline]
    fn validate<'a>(
        &'a self,
        core: &'a DomainCore,
        key: u64,
        check_write_locked: bool,
    ) -> Result<ReadLock<'a>, TryReadError> {
        // Relaxed: ordered after attach()'s store by our Acquire increment,
        // and stable while we hold the reference (detach waits for us before
        // clearing it).
        let owner = self.owner.load(Ordering::Relaxed);
        if !ptr::eq(owner, core) {
            self.put_foreign(owner);
            return Err(TryReadError::Reused);
        }
        // The identity matched: from here the guard's put wakes `core`, which
        // is this object's owner and is kept alive by the caller's borrow.
        let lock = ReadLock { lock: self, core };
        // Relaxed: as for `owner`.
        if self.key.load(Ordering::Relaxed) != key {
            drop(lock);
            return Err(TryReadError::Reused);
        }
        // Step 4. Relaxed (lock_seq): written only with OFFSET set, so the
        // value our increment synchronised with is the latest (module docs,
        // "Ordering"). Acquire (seq): pairs with the Release store of
        // end_write_all; seeing the cycle ended, we see all it wrote.
        if check_write_locked
            && self.lock_seq.load(Ordering::Relaxed) == core.seq.load(Ordering::Acquire)
        {
            drop(lock);
            return Err(TryReadError::WriteLocked);
        }
        Ok(lock)
    }

    /// Drops a reference and wakes the writer of `core` if it waits for this
    /// one (`vma_refcount_put`). `core` must be alive and the object's owner.
    #[inline]
    fn put(&self, core: &DomainCore) {
        // Release: pairs with the Acquire load in wait_for_readers(): our
        // reads of the object happen-before the writer's changes and the
        // detacher's reuse.
        let old = self.refcnt.fetch_sub(1, Ordering::Release);
        // The attachment's count, or the OFFSET of a detach, stays: a reader
        // never takes the count to 0 (nor below OFFSET once it is set).
        debug_assert!(
            old >= 2 && old != OFFSET,
            "RefLock: put without a reference ({old:#x})"
        );
        let new = old - 1;
        // is_vma_writer_only(): a writer waits for OFFSET + 1, a detacher for
        // OFFSET; one of them may be waiting for us to leave. The count is
        // the only word both sides write, so no lost wake-up is possible
        // between them; RcuWait's fence handshake covers the waiter's sleep.
        if new & OFFSET != 0 && new <= OFFSET + 1 {
            core.wake_writer();
        }
    }

    /// Puts a reference on an object that turned out to belong to another
    /// domain, pinning that domain's core across the put and the wake-up
    /// (the `mmgrab`/`mmdrop` of the 2025 use-after-free fix).
    #[cold]
    #[inline(never)]
    fn put_foreign(&self, owner: *mut DomainCore) {
        assert!(
            !owner.is_null(),
            "RefLock: a counted object has no owner (internal invariant broken)"
        );
        // SAFETY: `owner` came from `Arc::into_raw` in attach(), and that
        // strong reference is released only at the end of detach(), which
        // waits until no reader holds a count; we hold one, so the Arc is
        // alive and we may add a strong reference of our own. `from_raw`
        // then takes ownership of exactly that added reference.
        let pinned = unsafe {
            Arc::increment_strong_count(owner);
            Arc::from_raw(owner.cast_const())
        };
        // After this put the owner's writer may detach the object and its
        // domain may go away; `pinned` keeps the core (what we wake) alive.
        self.put(&pinned);
        drop(pinned);
    }

    /// Write-locks the object for the rest of the write cycle
    /// (`vma_start_write`), excluding and waiting out its readers.
    ///
    /// A no-op if it is already write-locked in this cycle. There is no
    /// per-object unlock: dropping `guard` ends every write lock of the
    /// cycle.
    ///
    /// # Ordering
    ///
    /// **Acquire** while waiting for the readers (their Release puts:
    /// everything they read happens-before the caller's changes);
    /// **Release** when readers are let in again (their Acquire increments
    /// see the object write-locked).
    ///
    /// # Blocking
    ///
    /// Until every reader that held the object has dropped its lock. Never
    /// returns if the calling thread holds a [`ReadLock`] on it.
    ///
    /// # Panics
    ///
    /// If the object is not attached to `guard`'s domain (detached — attach
    /// write-locks a new object itself — or attached to another domain).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{RefLock, RefLockDomain, TryReadError};
    /// let d = RefLockDomain::new(());
    /// let obj = RefLock::new();
    /// obj.attach(&d.write(), 1);
    /// let w = d.write();
    /// obj.start_write(&w);
    /// assert_eq!(obj.try_read(&d, 1).err(), Some(TryReadError::WriteLocked));
    /// drop(w);
    /// assert!(obj.try_read(&d, 1).is_ok());
    /// ```
    pub fn start_write<T>(&self, guard: &DomainWriteGuard<'_, T>) {
        let core = guard.core();
        // Relaxed: only our domain stores a pointer to our core, under our
        // write lock, which ordered that store before us; any other value
        // (null, another core) means the object is not ours.
        if !ptr::eq(self.owner.load(Ordering::Relaxed), core) {
            panic!(
                "RefLock::start_write: the object is not attached to the write guard's domain \
                 (it is detached, or attached to another domain)"
            );
        }
        // Relaxed: `lock_seq` equals this cycle's number only if this thread
        // (the guard is neither Send nor Sync) stored it, earlier in this
        // cycle.
        if self.lock_seq.load(Ordering::Relaxed) == guard.seq {
            return;
        }
        self.start_write_slow(core, guard.seq);
    }

    #[cold]
    #[inline(never)]
    fn start_write_slow(&self, core: &DomainCore, seq: u64) {
        // Step 2 (__vma_enter_locked). Relaxed: the RMW puts us in the
        // count's modification order; the Acquire loads of the wait do the
        // synchronising (our RMW continues the release sequences of the
        // readers' puts before it).
        let old = self.refcnt.fetch_add(OFFSET, Ordering::Relaxed);
        debug_assert!(
            (1..OFFSET).contains(&old),
            "RefLock: start_write on {old:#x}"
        );
        // Step 3.
        self.wait_for_readers(core, OFFSET + 1);
        // Step 4. Relaxed: published by the Release subtraction below.
        self.lock_seq.store(seq, Ordering::Relaxed);
        // Release (__vma_exit_locked): pairs with the Acquire increment of
        // every later reader, which then sees `lock_seq == seq`.
        let old = self.refcnt.fetch_sub(OFFSET, Ordering::Release);
        debug_assert_eq!(old, OFFSET + 1, "RefLock: readers entered past OFFSET");
    }

    /// Waits until the count is `target`: every reader counted in it has left.
    fn wait_for_readers(&self, core: &DomainCore, target: u32) {
        // Acquire: pairs with the Release fetch_sub in put() of each leaving
        // reader. The first check runs without sleeping.
        core.writer_wait
            .wait_until(|| self.refcnt.load(Ordering::Acquire) == target);
    }

    /// Attaches a detached object to `guard`'s domain under `key`
    /// (`vma_mark_attached`). The object comes out write-locked for the rest
    /// of the cycle, so the caller can finish initialising it; readers see
    /// it once the cycle ends.
    ///
    /// # Ordering
    ///
    /// **Acquire** claim (pairs with the Release end of the previous
    /// `detach`, in any domain); **Release** publication of the count 1
    /// (`refcount_set_release`), pairing with readers' Acquire increments.
    ///
    /// # Panics
    ///
    /// If the object is not detached (attached here or elsewhere, or being
    /// attached or detached by another domain).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{RefLock, RefLockDomain};
    /// let d = RefLockDomain::new(());
    /// let obj = RefLock::new();
    /// let w = d.write();
    /// obj.attach(&w, 42);
    /// assert!(obj.state().is_attached());
    /// assert!(obj.is_write_locked(&w));
    /// ```
    pub fn attach<T>(&self, guard: &DomainWriteGuard<'_, T>, key: u64) {
        // Acquire on success: pairs with the Release store(0) that ended the
        // last detach, so that detacher's (and its readers') accesses happen
        // before ours. Relaxed on failure: we only report.
        if let Err(now) =
            self.refcnt
                .compare_exchange(0, OFFSET, Ordering::Acquire, Ordering::Relaxed)
        {
            panic!(
                "RefLock::attach: the object is not detached (count {now:#x}); \
                 detach it from its domain first"
            );
        }
        let owner = Arc::into_raw(Arc::clone(&guard.domain.core)).cast_mut();
        // Relaxed (three stores): nobody reads them before the Release store
        // of 1 below publishes them (readers fail on OFFSET until then).
        let prev = self.owner.swap(owner, Ordering::Relaxed);
        debug_assert!(prev.is_null(), "RefLock: a detached object had an owner");
        self.key.store(key, Ordering::Relaxed);
        self.lock_seq.store(guard.seq, Ordering::Relaxed);
        // Release (refcount_set_release): pairs with the Acquire increment in
        // inc_limited(); publishes owner, key and lock_seq.
        self.refcnt.store(1, Ordering::Release);
    }

    /// Detaches the object from `guard`'s domain (`vma_mark_detached`),
    /// waiting out any transient reader. Afterwards the object may be reused,
    /// in this domain or another.
    ///
    /// # Ordering
    ///
    /// **Acquire** while waiting for transient readers; **Release** at the
    /// end, pairing with the next `attach`'s claim.
    ///
    /// # Blocking
    ///
    /// Until every reader that holds a count on the object has dropped it
    /// (they are transient: the object is write-locked, so none succeeds).
    ///
    /// # Panics
    ///
    /// If the object is not attached to `guard`'s domain, or is not
    /// write-locked in this cycle (the kernel requires `vma_start_write`
    /// first).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{RefLock, RefLockDomain};
    /// let (a, b) = (RefLockDomain::new(()), RefLockDomain::new(()));
    /// let obj = RefLock::new();
    /// {
    ///     let w = a.write();
    ///     obj.attach(&w, 1);
    ///     obj.detach(&w); // attach write-locked it, so detach may follow
    /// }
    /// obj.attach(&b.write(), 2); // reused in another domain
    /// assert!(obj.try_read(&b, 2).is_ok());
    /// ```
    pub fn detach<T>(&self, guard: &DomainWriteGuard<'_, T>) {
        let core = guard.core();
        // Relaxed (both): see start_write().
        if !ptr::eq(self.owner.load(Ordering::Relaxed), core) {
            panic!(
                "RefLock::detach: the object is not attached to the write guard's domain \
                 (it is detached, or attached to another domain)"
            );
        }
        if self.lock_seq.load(Ordering::Relaxed) != guard.seq {
            panic!(
                "RefLock::detach: the object is not write-locked in this write cycle; \
                 call start_write first"
            );
        }
        // Drop the attachment's count and exclude readers in one RMW:
        // 1 + n -> OFFSET + n. Relaxed: as in start_write_slow.
        let old = self.refcnt.fetch_add(OFFSET - 1, Ordering::Relaxed);
        debug_assert!((1..OFFSET).contains(&old), "RefLock: detach on {old:#x}");
        self.wait_for_readers(core, OFFSET);
        // Exclusive now: no reader holds a count and none can take one, and
        // no domain can claim a non-zero count. Relaxed: published by the
        // Release store below.
        let owner = self.owner.swap(ptr::null_mut(), Ordering::Relaxed);
        // Release: pairs with the Acquire claim of the next attach().
        self.refcnt.store(0, Ordering::Release);
        // SAFETY: `owner` is the pointer attach() got from `Arc::into_raw`,
        // and we just took it out of the object: we own that reference.
        drop(unsafe { Arc::from_raw(owner.cast_const()) });
    }

    /// Whether the object is write-locked in `guard`'s current write cycle
    /// (`__is_vma_write_locked`).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{RefLock, RefLockDomain};
    /// let d = RefLockDomain::new(());
    /// let obj = RefLock::new();
    /// obj.attach(&d.write(), 0);
    /// let w = d.write();
    /// assert!(!obj.is_write_locked(&w)); // the attaching cycle has ended
    /// obj.start_write(&w);
    /// assert!(obj.is_write_locked(&w));
    /// ```
    #[must_use]
    pub fn is_write_locked<T>(&self, guard: &DomainWriteGuard<'_, T>) -> bool {
        // Relaxed (both): see start_write().
        ptr::eq(self.owner.load(Ordering::Relaxed), guard.core())
            && self.lock_seq.load(Ordering::Relaxed) == guard.seq
    }

    /// A snapshot of the count, for assertions and diagnostics.
    ///
    /// # Ordering
    ///
    /// **Unordered** (`Relaxed`); stale as soon as it returns unless the
    /// caller excludes every other party.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::RefLock;
    /// let s = RefLock::new().state();
    /// assert!(s.is_detached() && !s.readers_excluded());
    /// ```
    #[must_use]
    pub fn state(&self) -> RefLockState {
        // Relaxed: a snapshot.
        RefLockState(self.refcnt.load(Ordering::Relaxed))
    }

    #[cfg(all(test, not(loom)))]
    fn set_count_for_test(&self, n: u32) {
        self.refcnt.store(n, Ordering::Relaxed);
    }
}

impl Default for RefLock {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RefLock {
    fn drop(&mut self) {
        // Relaxed: `&mut self`, nobody else can look.
        let owner = self.owner.load(Ordering::Relaxed);
        if !owner.is_null() {
            // SAFETY: an attached object owns the strong reference attach()
            // took with `Arc::into_raw`; nothing else will release it.
            drop(unsafe { Arc::from_raw(owner.cast_const()) });
        }
    }
}

impl fmt::Debug for RefLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefLock")
            .field("state", &self.state())
            // Relaxed: diagnostics.
            .field("lock_seq", &self.lock_seq.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A snapshot of a [`RefLock`]'s count; see the state table in the
/// [module documentation](self).
///
/// # Examples
///
/// ```
/// use shrinker_sync::{RefLock, RefLockDomain};
/// let d = RefLockDomain::new(());
/// let obj = RefLock::new();
/// obj.attach(&d.write(), 0);
/// let _r = obj.try_read(&d, 0).unwrap();
/// let s = obj.state();
/// assert_eq!((s.raw(), s.readers()), (2, 1));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RefLockState(u32);

impl RefLockState {
    /// The raw count.
    #[must_use]
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Count 0: in no domain.
    #[must_use]
    pub const fn is_detached(self) -> bool {
        self.0 == 0
    }

    /// Attached to a domain (count ≥ 1 without `OFFSET`; during `start_write`
    /// the object is attached too, but `readers_excluded` says so first).
    #[must_use]
    pub const fn is_attached(self) -> bool {
        self.0 != 0 && self.0 & OFFSET == 0
    }

    /// `OFFSET` is set: a writer, attach or detach keeps new readers out.
    #[must_use]
    pub const fn readers_excluded(self) -> bool {
        self.0 & OFFSET != 0
    }

    /// Readers holding a count (transient ones included) when attached and
    /// no writer is present; 0 otherwise.
    #[must_use]
    pub const fn readers(self) -> u32 {
        if self.is_attached() {
            self.0 - 1
        } else {
            0
        }
    }
}

impl fmt::Debug for RefLockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.is_detached() {
            "detached"
        } else if self.readers_excluded() {
            "readers excluded"
        } else {
            "attached"
        };
        write!(f, "RefLockState({:#x}: {what})", self.0)
    }
}

/// A read lock on one object, taken by [`RefLock::try_read`] or
/// [`RefLock::read_locked`]; dropping it releases the lock (`vma_end_read`)
/// and wakes a writer waiting for the last reader.
///
/// It borrows the domain it was taken against (the object's owner, checked):
/// the wake-up on drop therefore goes to memory this borrow keeps alive.
///
/// Dropping it never waits; when a writer is waiting for it, the wake-up
/// takes the writer wait's internal mutex, held by others for a few
/// instructions.
///
/// # Examples
///
/// ```
/// use shrinker_sync::{RefLock, RefLockDomain};
/// let d = RefLockDomain::new(());
/// let obj = RefLock::new();
/// obj.attach(&d.write(), 5);
/// let r = obj.try_read(&d, 5).unwrap();
/// assert_eq!(obj.state().readers(), 1);
/// drop(r);
/// assert_eq!(obj.state().readers(), 0);
/// ```
#[must_use = "dropping a ReadLock releases it at once"]
pub struct ReadLock<'a> {
    lock: &'a RefLock,
    /// The object's owner (checked) and the domain borrowed by the caller.
    core: &'a DomainCore,
}

impl<'a> ReadLock<'a> {
    /// The key the object was attached under.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{RefLock, RefLockDomain};
    /// let d = RefLockDomain::new(());
    /// let obj = RefLock::new();
    /// obj.attach(&d.write(), 77);
    /// assert_eq!(obj.try_read(&d, 77).unwrap().key(), 77);
    /// ```
    #[must_use]
    pub fn key(&self) -> u64 {
        // Relaxed: stable while the read lock is held (written only at
        // attach, published by the Acquire increment).
        self.lock.key.load(Ordering::Relaxed)
    }

    /// The locked [`RefLock`].
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{RefLock, RefLockDomain};
    /// let d = RefLockDomain::new(());
    /// let obj = RefLock::new();
    /// obj.attach(&d.write(), 0);
    /// let r = obj.try_read(&d, 0).unwrap();
    /// assert!(std::ptr::eq(r.ref_lock(), &obj));
    /// ```
    #[must_use]
    pub fn ref_lock(&self) -> &'a RefLock {
        self.lock
    }
}

impl Drop for ReadLock<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.put(self.core);
    }
}

impl fmt::Debug for ReadLock<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadLock")
            .field("key", &self.key())
            .field("state", &self.lock.state())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    fn attached(d: &RefLockDomain<()>, key: u64) -> RefLock {
        let obj = RefLock::new();
        obj.attach(&d.write(), key);
        obj
    }

    fn panic_message(r: std::thread::Result<()>) -> String {
        let e = r.expect_err("expected a panic");
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    }

    #[test]
    fn new_is_detached_and_refuses_readers() {
        let d = RefLockDomain::new(());
        let obj = RefLock::new();
        assert!(obj.state().is_detached());
        assert_eq!(obj.try_read(&d, 0).err(), Some(TryReadError::Detached));
        assert_eq!(
            obj.read_locked(&d.read(), 0).err(),
            Some(TryReadError::Detached)
        );
        assert!(obj.state().is_detached(), "a failed read changed the count");
    }

    #[test]
    fn attach_publishes_write_locked_until_the_cycle_ends() {
        let d = RefLockDomain::new(());
        let obj = RefLock::new();
        let w = d.write();
        obj.attach(&w, 1);
        assert_eq!(obj.state().raw(), 1);
        assert!(obj.is_write_locked(&w));
        assert_eq!(obj.try_read(&d, 1).err(), Some(TryReadError::WriteLocked));
        assert_eq!(obj.state().raw(), 1, "the transient reference was put");
        drop(w);
        let r = obj.try_read(&d, 1).expect("cycle ended");
        assert_eq!(obj.state().raw(), 2);
        drop(r);
        assert_eq!(obj.state().raw(), 1);
    }

    #[test]
    fn readers_count_and_release() {
        let d = RefLockDomain::new(());
        let obj = attached(&d, 1);
        let locks: Vec<_> = (0..5).map(|_| obj.try_read(&d, 1).unwrap()).collect();
        assert_eq!(obj.state().readers(), 5);
        let big = d.read();
        let l = obj.read_locked(&big, 1).unwrap();
        assert_eq!(obj.state().readers(), 6);
        drop((locks, l));
        assert_eq!(obj.state().raw(), 1);
    }

    #[test]
    fn start_write_excludes_readers_until_end_write_all() {
        let d = RefLockDomain::new(());
        let obj = attached(&d, 1);
        let w = d.write();
        assert!(!obj.is_write_locked(&w));
        // Before start_write a lockless reader still gets in (the writer
        // would wait for it).
        drop(obj.try_read(&d, 1).unwrap());
        obj.start_write(&w);
        assert!(obj.is_write_locked(&w));
        obj.start_write(&w); // idempotent within the cycle
        assert_eq!(obj.state().raw(), 1);
        assert_eq!(obj.try_read(&d, 1).err(), Some(TryReadError::WriteLocked));
        drop(w);
        assert!(obj.try_read(&d, 1).is_ok());
        let w = d.write();
        assert!(!obj.is_write_locked(&w), "a new cycle starts unlocked");
    }

    #[test]
    fn pessimistic_check_fails_before_touching_the_count() {
        let d = RefLockDomain::new(());
        let obj = attached(&d, 1);
        let w = d.write();
        obj.start_write(&w);
        // Pretend a reader is at the limit: the pessimistic check must fail
        // first, leaving the count alone.
        obj.set_count_for_test(READER_LIMIT);
        assert_eq!(obj.try_read(&d, 1).err(), Some(TryReadError::WriteLocked));
        assert_eq!(obj.state().raw(), READER_LIMIT);
        obj.set_count_for_test(1);
    }

    #[test]
    fn offset_means_write_locked() {
        let d = RefLockDomain::new(());
        let obj = attached(&d, 1);
        obj.set_count_for_test(OFFSET + 1);
        assert_eq!(obj.try_read(&d, 1).err(), Some(TryReadError::WriteLocked));
        assert_eq!(
            obj.read_locked(&d.read(), 1).err(),
            Some(TryReadError::WriteLocked)
        );
        assert_eq!(obj.state().raw(), OFFSET + 1);
        assert!(obj.state().readers_excluded());
        obj.set_count_for_test(1);
    }

    #[test]
    fn overflow_at_the_reader_limit() {
        let d = RefLockDomain::new(());
        let obj = attached(&d, 1);
        obj.set_count_for_test(READER_LIMIT - 1);
        let last = obj.try_read(&d, 1).expect("one below the limit");
        assert_eq!(obj.state().raw(), READER_LIMIT);
        assert_eq!(obj.try_read(&d, 1).err(), Some(TryReadError::Overflow));
        assert_eq!(
            obj.read_locked(&d.read(), 1).err(),
            Some(TryReadError::Overflow)
        );
        assert_eq!(obj.state().raw(), READER_LIMIT);
        drop(last);
        obj.set_count_for_test(1);
    }

    #[test]
    fn identity_checks_owner_and_key() {
        let (a, b) = (RefLockDomain::new(()), RefLockDomain::new(()));
        let obj = attached(&a, 10);
        assert_eq!(obj.try_read(&a, 11).err(), Some(TryReadError::Reused));
        assert_eq!(obj.try_read(&b, 10).err(), Some(TryReadError::Reused));
        assert_eq!(
            obj.read_locked(&b.read(), 10).err(),
            Some(TryReadError::Reused)
        );
        assert_eq!(obj.state().raw(), 1, "every failure put its reference");
    }

    #[test]
    fn detach_then_reuse_in_another_domain() {
        let (a, b) = (RefLockDomain::new(()), RefLockDomain::new(()));
        let obj = attached(&a, 1);
        {
            let w = a.write();
            obj.start_write(&w);
            obj.detach(&w);
        }
        assert!(obj.state().is_detached());
        assert_eq!(obj.try_read(&a, 1).err(), Some(TryReadError::Detached));
        obj.attach(&b.write(), 1);
        assert_eq!(obj.try_read(&a, 1).err(), Some(TryReadError::Reused));
        assert!(obj.try_read(&b, 1).is_ok());
    }

    #[test]
    fn attached_object_keeps_its_domain_core_alive() {
        let obj = RefLock::new();
        let a = RefLockDomain::new(());
        obj.attach(&a.write(), 1);
        assert_eq!(Arc::strong_count(&a.core), 2);
        let core = Arc::clone(&a.core);
        drop(a); // the domain goes, its attached object keeps the core
        assert_eq!(Arc::strong_count(&core), 2);
        // A reader of another domain finds the stale attachment, pins the
        // old core across its put, and lets go.
        let b = RefLockDomain::new(());
        assert_eq!(obj.try_read(&b, 1).err(), Some(TryReadError::Reused));
        assert_eq!(Arc::strong_count(&core), 2);
        drop(obj);
        assert_eq!(Arc::strong_count(&core), 1);
    }

    #[test]
    fn detach_releases_the_core_reference() {
        let a = RefLockDomain::new(());
        let obj = attached(&a, 1);
        assert_eq!(Arc::strong_count(&a.core), 2);
        let w = a.write();
        obj.start_write(&w);
        obj.detach(&w);
        drop(w);
        assert_eq!(Arc::strong_count(&a.core), 1);
    }

    #[test]
    fn writer_waits_for_a_reader_on_another_thread() {
        let d = RefLockDomain::new(());
        let obj = attached(&d, 1);
        let r = obj.try_read(&d, 1).unwrap();
        std::thread::scope(|s| {
            let w = d.write();
            s.spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(if cfg!(miri) {
                    1
                } else {
                    20
                }));
                drop(r);
            });
            obj.start_write(&w); // returns once the reader has gone
            assert_eq!(obj.state().raw(), 1);
            assert!(obj.is_write_locked(&w));
        });
    }

    #[test]
    fn sequence_is_odd_exactly_while_write_locked() {
        let d = RefLockDomain::new(());
        for cycle in 0..3u64 {
            assert_eq!(d.sequence(), 2 * cycle);
            let w = d.write();
            assert_eq!(d.sequence(), 2 * cycle + 1);
            drop(w);
        }
    }

    #[test]
    fn misuse_start_write_with_another_domains_guard() {
        let (a, b) = (RefLockDomain::new(()), RefLockDomain::new(()));
        let obj = attached(&a, 1);
        let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
            obj.start_write(&b.write());
        })));
        assert!(msg.contains("RefLock::start_write") && msg.contains("not attached"));
        assert_eq!(obj.state().raw(), 1, "the misuse changed the state");
    }

    #[test]
    fn misuse_start_write_on_a_detached_object() {
        let a = RefLockDomain::new(());
        let obj = RefLock::new();
        let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
            obj.start_write(&a.write());
        })));
        assert!(msg.contains("RefLock::start_write"));
        assert!(obj.state().is_detached());
    }

    #[test]
    fn misuse_attach_of_an_attached_object() {
        let (a, b) = (RefLockDomain::new(()), RefLockDomain::new(()));
        let obj = attached(&a, 1);
        for d in [&a, &b] {
            let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
                obj.attach(&d.write(), 2);
            })));
            assert!(msg.contains("RefLock::attach") && msg.contains("not detached"));
        }
        assert!(obj.try_read(&a, 1).is_ok(), "the misuse changed the object");
    }

    #[test]
    fn misuse_detach_without_start_write() {
        let a = RefLockDomain::new(());
        let obj = attached(&a, 1);
        let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
            obj.detach(&a.write());
        })));
        assert!(msg.contains("RefLock::detach") && msg.contains("start_write"));
        assert_eq!(obj.state().raw(), 1);
    }

    #[test]
    fn misuse_detach_with_another_domains_guard() {
        let (a, b) = (RefLockDomain::new(()), RefLockDomain::new(()));
        let obj = attached(&a, 1);
        let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
            obj.detach(&b.write());
        })));
        assert!(msg.contains("RefLock::detach") && msg.contains("not attached"));
        assert_eq!(obj.state().raw(), 1);
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            TryReadError::Reused.to_string(),
            "the object was reused for another domain or key"
        );
        let e: Box<dyn Error> = Box::new(TryReadError::Detached);
        assert_eq!(e.to_string(), "the object is detached");
    }
}
