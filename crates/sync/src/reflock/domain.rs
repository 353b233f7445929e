//! The big lock: [`RefLockDomain`] (the `mm_struct` with its `mmap_lock`),
//! its read and write guards, and the small core (write-cycle sequence and
//! writer wait) that attached objects keep alive.

use crate::rcuwait::RcuWait;
use crate::sync::{Arc, AtomicU64, Ordering, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::PoisonError;

/// What readers and attached objects reach: the write-cycle sequence and the
/// writer's wait. Shared through an `Arc` so that an attached object can keep
/// it alive (see "The wake-up..." in the module docs).
pub(super) struct DomainCore {
    /// `mm_lock_seq`: odd while the domain's write lock is held, even
    /// otherwise. Written only by the write-lock holder.
    pub(super) seq: AtomicU64,
    /// `vma_writer_wait`: the write-lock holder waits here for readers to
    /// leave. One waiter at a time, because only the write-lock holder waits.
    pub(super) writer_wait: RcuWait,
}

impl DomainCore {
    /// Wakes the writer after a put that left the count at a writer's target.
    #[cold]
    #[inline(never)]
    pub(super) fn wake_writer(&self) {
        self.writer_wait.wake_up();
    }
}

/// The owner of many [`RefLock`](crate::RefLock)s: a big reader-writer lock around `T` (the
/// `mm_struct` and its `mmap_lock`), its write-cycle sequence and the writer
/// wait.
///
/// * [`read`](Self::read) takes the big lock for reading; objects can then be
///   read-locked without any failure but detachment
///   ([`RefLock::read_locked`](crate::RefLock::read_locked)).
/// * [`write`](Self::write) takes it for writing and starts a write cycle;
///   the returned [`DomainWriteGuard`] is the token every write-side
///   operation of [`RefLock`](crate::RefLock) demands. Dropping it ends the cycle, and with
///   it every object's write lock ([`end_write_all`]).
///
/// Lock poisoning is not propagated: like `mmap_lock`, the lock does not
/// remember that a holder panicked.
///
/// Detach every object before dropping the domain (the kernel's `exit_mmap`
/// does). An object still attached when its domain is dropped stays attached
/// to the dead domain: it keeps the domain's small core (sequence and wait)
/// alive, readers of other domains get [`TryReadError::Reused`](crate::TryReadError::Reused), and
/// [`RefLock::attach`](crate::RefLock::attach) refuses it. Memory safety does not depend on it.
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
    pub(super) core: Arc<DomainCore>,
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
    /// the lock or any [`ReadLock`](crate::ReadLock) of this domain.
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
/// [`RefLock::read_locked`](crate::RefLock::read_locked). Dereferences to the domain's data.
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
    pub(super) domain: &'a RefLockDomain<T>,
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
/// every write-side operation of [`RefLock`](crate::RefLock). Dereferences to the domain's
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
/// * `!Sync`: the write side of every [`RefLock`](crate::RefLock) assumes a single writer per
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
    pub(super) domain: &'a RefLockDomain<T>,
    /// This cycle's (odd) sequence.
    pub(super) seq: u64,
    guard: RwLockWriteGuard<'a, T>,
    /// `!Sync` and `!Send`, in every build (std's guard is `!Send` but `Sync`
    /// for `T: Sync`, loom's may differ). See "Thread binding" above.
    _bound_to_thread: PhantomData<*const ()>,
}

impl<T> DomainWriteGuard<'_, T> {
    #[inline]
    pub(super) fn core(&self) -> &DomainCore {
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
