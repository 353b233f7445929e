//! [`RcuArray`]: an array of pointers behind an RCU-published pointer
//! (`rcu_assign_pointer` / `rcu_dereference`), read lock-free, written
//! and grown by copy under the mutex that holds its [`ArrayWriter`].
//!
//! Growing copies the slots into a larger array, publishes it with
//! Release, and frees the old one after a grace period (`kvfree_rcu`). A
//! reader holding the old array may find a slot that was set or cleared
//! since: what the slots point to must stay valid for the reader's section
//! either way (each user says how).

use std::collections::TryReserveError;
use std::marker::PhantomData;
use std::ptr;

use shrinker_rcu::ReadGuard;

use super::free::free_after_grace_period;
use crate::sync::{AtomicPtr, Ordering};

/// One published array. Its slots are type-erased, so that a retired one
/// can be freed on the RCU worker whatever `T` is.
struct Slots {
    slots: Box<[AtomicPtr<()>]>,
}

/// An array of `*mut T`, null where unset.
///
/// # Invariants
///
/// `table` is null or a `Box<Slots>` leaked by [`grow`](Self::grow); it is
/// replaced only by the holder of the array's [`ArrayWriter`], and a
/// replaced one is freed after a grace period.
pub(crate) struct RcuArray<T> {
    table: AtomicPtr<Slots>,
    _slots: PhantomData<fn() -> *mut T>,
}

/// The writers' half of an [`RcuArray`]: kept under the mutex that
/// serializes the array's writers, so that holding `&ArrayWriter` proves
/// holding that mutex. Every write method takes it.
pub(crate) struct ArrayWriter {
    /// The published table (null before the first growth): the writers'
    /// copy of `RcuArray::table`, so that they need no read section.
    current: *const Slots,
}

// SAFETY: `current` names the table owned by the array this writer belongs
// to, used only by the holder of the writers' mutex.
unsafe impl Send for ArrayWriter {}

impl<T> RcuArray<T> {
    /// An empty array and its writer half.
    pub(crate) fn new() -> (Self, ArrayWriter) {
        (
            RcuArray {
                table: AtomicPtr::new(ptr::null_mut()),
                _slots: PhantomData,
            },
            ArrayWriter {
                current: ptr::null(),
            },
        )
    }

    /// The pointer in slot `i` (null if unset or out of range), valid as
    /// long as its owner says; the array itself is read under `_guard`.
    ///
    /// # Ordering
    ///
    /// Acquire (both loads): pairs with the Release of [`grow`](Self::grow)
    /// (the copied slots are visible) and of [`set`](Self::set) (what the
    /// pointer names was initialised before it was published).
    #[inline]
    pub(crate) fn get(&self, i: usize, _guard: &ReadGuard) -> *mut T {
        let t = self.table.load(Ordering::Acquire);
        // SAFETY: null or a live table; a replaced table is freed only after
        // a grace period, which `_guard` holds off (type invariant).
        let Some(t) = (unsafe { t.as_ref() }) else {
            return ptr::null_mut();
        };
        t.slots
            .get(i)
            .map_or(ptr::null_mut(), |s| s.load(Ordering::Acquire).cast())
    }

    /// The number of slots now (readers: under `_guard`).
    pub(crate) fn len(&self, _guard: &ReadGuard) -> usize {
        // Acquire: as in `get`.
        let t = self.table.load(Ordering::Acquire);
        // SAFETY: as in `get`.
        unsafe { t.as_ref() }.map_or(0, |t| t.slots.len())
    }

    /// The writers' view of the published table.
    fn current<'w>(&self, w: &'w ArrayWriter) -> Option<&'w Slots> {
        debug_assert!(
            // Relaxed: only writers replace it, and `w` proves we are one.
            ptr::eq(w.current, self.table.load(Ordering::Relaxed)),
            "an RcuArray written with another array's writer"
        );
        // SAFETY: the published table; replaced (and retired) only by the
        // holder of `w`, which we are.
        unsafe { w.current.as_ref() }
    }

    /// Slot `i` for a writer (null if unset or out of range).
    pub(crate) fn get_locked(&self, w: &ArrayWriter, i: usize) -> *mut T {
        self.current(w)
            .and_then(|t| t.slots.get(i))
            // Relaxed: slots change only under the writers' mutex.
            .map_or(ptr::null_mut(), |s| s.load(Ordering::Relaxed).cast())
    }

    /// Publish `p` in slot `i`.
    ///
    /// # Ordering
    ///
    /// Release: pairs with the Acquire in [`get`](Self::get); whatever `p`
    /// names was initialised before.
    ///
    /// # Panics
    ///
    /// If `i` is past the end ([`grow`](Self::grow) first).
    pub(crate) fn set(&self, w: &ArrayWriter, i: usize, p: *mut T) {
        let t = self.current(w).expect("RcuArray::set before grow");
        t.slots[i].store(p.cast(), Ordering::Release);
    }

    /// Empty slot `i` (nothing beyond it is unpublished: readers that still
    /// find the old pointer must cope, as each user says).
    ///
    /// # Panics
    ///
    /// If `i` is past the end.
    pub(crate) fn clear(&self, w: &ArrayWriter, i: usize) {
        let t = self.current(w).expect("RcuArray::clear before grow");
        // Relaxed: a reader that still finds the old pointer is covered by
        // the user's own protocol (a failed pin, a grace period).
        t.slots[i].store(ptr::null_mut(), Ordering::Relaxed);
    }

    /// Make slot `i` exist: if it is past the end, copy the slots into an
    /// array of `max(min_len, (i + 1).next_power_of_two())`, publish it and
    /// free the old one after a grace period.
    ///
    /// # Errors
    ///
    /// The allocation failed; nothing changed.
    pub(crate) fn grow(
        &self,
        w: &mut ArrayWriter,
        i: usize,
        min_len: usize,
    ) -> Result<(), TryReserveError> {
        let old = self.current(w);
        let len = old.map_or(0, |t| t.slots.len());
        if i < len {
            return Ok(());
        }
        let new_len = (i + 1).next_power_of_two().max(min_len);
        let mut v = Vec::new();
        v.try_reserve_exact(new_len)?;
        v.extend((0..new_len).map(|_| AtomicPtr::new(ptr::null_mut())));
        if let Some(old) = old {
            for (n, o) in v.iter().zip(old.slots.iter()) {
                // Relaxed: slots change only under the writers' mutex.
                n.store(o.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        let new = Box::into_raw(Box::new(Slots {
            slots: v.into_boxed_slice(),
        }));
        w.current = new;
        // Release: publishes the copied slots to the Acquire load in `get`.
        let old = self.table.swap(new, Ordering::Release);
        if !old.is_null() {
            // SAFETY: leaked by an earlier `grow`, now unpublished; readers
            // still holding it are in read sections, which the grace period
            // waits for. Freeing the slots frees nothing they point to.
            unsafe { free_after_grace_period(old) };
        }
        Ok(())
    }

    /// Every slot, for the owner's `Drop` (no reader or writer remains).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = *mut T> + '_ {
        // Relaxed (all): `&mut self` excludes every other access.
        let t = self.table.load(Ordering::Relaxed);
        // SAFETY: null or the live table (`&mut self`).
        let t = unsafe { t.as_ref() };
        t.into_iter()
            .flat_map(|t| t.slots.iter())
            .map(|s| s.load(Ordering::Relaxed).cast())
    }
}

impl<T> Drop for RcuArray<T> {
    fn drop(&mut self) {
        // Relaxed: `&mut self` excludes every other access.
        let t = self.table.load(Ordering::Relaxed);
        if !t.is_null() {
            // SAFETY: leaked by `grow`, still published, and no reader can
            // exist (`&mut self`). The slots' targets belong to the owner.
            drop(unsafe { Box::from_raw(t) });
        }
    }
}
