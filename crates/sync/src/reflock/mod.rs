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
//! 3. Wait (through [`RcuWait`](crate::RcuWait)) until `refcnt == OFFSET + 1`, **Acquire**:
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
//! # Files
//!
//! | file | holds | uses |
//! |---|---|---|
//! | `state.rs` | the count word's constants, [`RefLockState`], [`TryReadError`] | — |
//! | `domain.rs` | [`RefLockDomain`], its guards, the core objects keep alive | `state.rs` |
//! | `lock.rs` | [`RefLock`] and [`ReadLock`]: the protocols above | both |
//!
//! [`end_write_all`]: DomainWriteGuard

mod domain;
mod lock;
mod state;
#[cfg(all(test, not(loom)))]
mod tests;

pub use domain::{DomainReadGuard, DomainWriteGuard, RefLockDomain};
pub use lock::{ReadLock, RefLock};
pub use state::{RefLockState, TryReadError};
