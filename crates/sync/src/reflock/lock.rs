//! The per-object lock: [`RefLock`] (the VMA's `vm_refcnt` and `vm_lock_seq`)
//! and the [`ReadLock`] a reader holds. The protocols are numbered in the
//! `reflock` module essay.

use super::domain::{DomainCore, DomainReadGuard, DomainWriteGuard, RefLockDomain};
use super::state::{RefLockState, TryReadError, NEVER_LOCKED, OFFSET, READER_LIMIT};
use crate::sync::{Arc, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::fmt;
use std::ptr;

/// The per-object read lock made of a reference count (`vm_refcnt` +
/// `vm_lock_seq`): embed one in each object of a [`RefLockDomain`].
///
/// See the [module documentation](super) for the state table, the protocols
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
        self.assert_attached_to(core, "RefLock::start_write");
        // Relaxed: `lock_seq` equals this cycle's number only if this thread
        // (the guard is neither Send nor Sync) stored it, earlier in this
        // cycle.
        if self.lock_seq.load(Ordering::Relaxed) == guard.seq {
            return;
        }
        self.start_write_slow(core, guard.seq);
    }

    /// Panics, naming `caller`, unless the object is attached to the domain
    /// whose core is `core` (the write guard's).
    #[track_caller]
    fn assert_attached_to(&self, core: &DomainCore, caller: &str) {
        // Relaxed: only our domain stores a pointer to our core, under our
        // write lock, which ordered that store before us; any other value
        // (null, another core) means the object is not ours.
        if !ptr::eq(self.owner.load(Ordering::Relaxed), core) {
            panic!(
                "{caller}: the object is not attached to the write guard's domain \
                 (it is detached, or attached to another domain)"
            );
        }
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
        self.assert_attached_to(core, "RefLock::detach");
        // Relaxed: see start_write().
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
    pub(super) fn set_count_for_test(&self, n: u32) {
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
