//! The shrinker id table (the kernel's `shrinker_idr`): id → shrinker,
//! readable under RCU, written under the registry mutex.
//!
//! Ids are handed out lowest-free-first, so the table stays as dense as the
//! peak number of shrinkers. The table is an array of slots behind an
//! RCU-published pointer (`rcu_assign_pointer` / `rcu_dereference`); growing
//! it copies the slots into a larger array, publishes it, and frees the old
//! one after a grace period (`kvfree_rcu`). A reader holding the old
//! array may find a slot that was cleared or set since: it `try_get`s what
//! it found, and a node that was unregistered has a zero count (the pin
//! fails) and is not freed before the reader's section ends, so a stale slot
//! costs a failed lookup, never a use-after-free.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ptr;

use shrinker_rcu::ReadGuard;

use super::object::ShrinkerObject;
use crate::error::BuildError;
use crate::sync::{AtomicPtr, Ordering};

struct Table {
    slots: Box<[AtomicPtr<ShrinkerObject>]>,
}

/// A raw pointer moved into an RCU callback.
pub(crate) struct SendPtr<T>(pub(crate) *mut T);

// SAFETY: the pointee is `Send`; only the callback, after the grace period,
// uses the pointer.
unsafe impl<T: Send> Send for SendPtr<T> {}

/// Free `p`, a leaked `Box<T>` that readers may still be reading, after a
/// grace period (`kvfree_rcu`).
///
/// Not `defer_drop(Box::from_raw(p))`: turning the pointer back into a
/// `Box` *now* asserts unique access while readers still hold shared
/// references into it (Miri reports the retag as a data race with their
/// reads); the `Box` is made in the callback, once no reader remains.
///
/// # Safety
///
/// `p` came from `Box::into_raw`, is unpublished, and is freed nowhere
/// else; every reader that may still use it is in a read section.
pub(crate) unsafe fn free_after_grace_period<T: Send + 'static>(p: *mut T) {
    let p = SendPtr(p);
    shrinker_rcu::call_rcu(move || {
        let p = p;
        // SAFETY: from `Box::into_raw` (contract); the grace period has
        // ended, so no reader remains.
        drop(unsafe { Box::from_raw(p.0) });
    });
}

impl Table {
    fn try_new(len: usize) -> Result<Self, BuildError> {
        let mut v = Vec::new();
        v.try_reserve_exact(len)?;
        v.extend((0..len).map(|_| AtomicPtr::new(ptr::null_mut())));
        Ok(Table {
            slots: v.into_boxed_slice(),
        })
    }
}

/// The RCU-readable half.
///
/// # Invariants
///
/// `table` is null or a `Box<Table>` leaked by `alloc`; it is replaced only
/// under the registry mutex, and a replaced table is freed after a grace
/// period.
pub(crate) struct IdTable {
    table: AtomicPtr<Table>,
}

/// The allocator half: lives under the registry mutex.
pub(crate) struct IdAlloc {
    free: BinaryHeap<Reverse<u32>>,
    next: u32,
    /// The published table (null before the first id): the writers' copy
    /// of `IdTable::table`, so that they need no read-side section.
    current: *const Table,
}

// SAFETY: `current` points to the table owned by the `IdTable` beside this
// allocator, and is used only under the registry mutex.
unsafe impl Send for IdAlloc {}

impl Default for IdAlloc {
    fn default() -> Self {
        IdAlloc {
            free: BinaryHeap::new(),
            next: 0,
            current: ptr::null(),
        }
    }
}

impl IdAlloc {
    fn current(&self) -> Option<&Table> {
        // SAFETY: `current` is the published table; tables are replaced (and
        // the old one retired) only under the registry mutex, which the
        // holder of `&self` holds.
        unsafe { self.current.as_ref() }
    }
}

impl IdTable {
    pub(crate) fn new() -> Self {
        IdTable {
            table: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// The shrinker that holds `id`, if any. The pointer is valid until
    /// `guard` ends; the caller must `try_get` before using the shrinker.
    #[inline]
    pub(crate) fn lookup(&self, id: u32, _guard: &ReadGuard) -> *const ShrinkerObject {
        // Acquire: pairs with the Release store in `alloc`, so the copied
        // slots are visible.
        let t = self.table.load(Ordering::Acquire);
        // SAFETY: null or a live table; a replaced table is freed only after
        // a grace period, which `_guard` holds off (type invariant).
        let Some(t) = (unsafe { t.as_ref() }) else {
            return ptr::null();
        };
        t.slots.get(id as usize).map_or(ptr::null(), |s| {
            // Acquire: pairs with the Release store in `publish`, so the
            // node's initialisation is visible before the caller's try_get.
            s.load(Ordering::Acquire)
        })
    }

    /// Allocate the lowest free id below `max`, growing the table as needed.
    /// Caller holds the registry mutex (`alloc` proves it).
    pub(crate) fn alloc(&self, alloc: &mut IdAlloc, max: u32) -> Result<u32, BuildError> {
        if let Some(Reverse(id)) = alloc.free.pop() {
            return Ok(id);
        }
        if alloc.next >= max {
            return Err(BuildError::TooManyShrinkers { max });
        }
        // Reserve the free-list room for every id handed out so far, so that
        // `release` (on the unregister path) never allocates.
        let want = alloc.next as usize + 1;
        alloc.free.try_reserve(want - alloc.free.len())?;
        let id = alloc.next;
        let len = alloc.current().map_or(0, |t| t.slots.len());
        if id as usize >= len {
            let new_len = (len * 2).max(64);
            let new = Box::new(Table::try_new(new_len)?);
            if let Some(old) = alloc.current() {
                for (n, o) in new.slots.iter().zip(old.slots.iter()) {
                    // Relaxed: slots change only under the mutex we hold.
                    n.store(o.load(Ordering::Relaxed), Ordering::Relaxed);
                }
            }
            let new = Box::into_raw(new);
            alloc.current = new;
            // Release: publishes the copied slots to the Acquire load in
            // `lookup`. Relaxed would do for the old value: it is ours
            // (mutex).
            let old = self.table.swap(new, Ordering::Release);
            if !old.is_null() {
                // SAFETY: `old` was leaked by an earlier `alloc` and is now
                // unpublished; readers that still see it are inside read
                // sections, which the grace period waits for.
                unsafe { free_after_grace_period(old) };
            }
        }
        alloc.next += 1;
        Ok(id)
    }

    /// Give `id` back. Caller holds the registry mutex; the slot is clear.
    pub(crate) fn release(&self, alloc: &mut IdAlloc, id: u32) {
        debug_assert!(alloc.current().is_none_or(|t| {
            // Relaxed: under the mutex.
            t.slots[id as usize].load(Ordering::Relaxed).is_null()
        }));
        alloc.free.push(Reverse(id));
    }

    /// Make `id` find `node`. Caller holds the registry mutex (`alloc`).
    pub(crate) fn publish(&self, alloc: &IdAlloc, id: u32, node: *mut ShrinkerObject) {
        if let Some(t) = alloc.current() {
            // Release: pairs with the Acquire load in `lookup`.
            t.slots[id as usize].store(node, Ordering::Release);
        }
    }

    /// Make `id` find nothing. Caller holds the registry mutex (`alloc`).
    pub(crate) fn clear(&self, alloc: &IdAlloc, id: u32) {
        if let Some(t) = alloc.current() {
            // Relaxed: a reader that still finds the old pointer fails its
            // try_get (the count is already zero when we clear).
            t.slots[id as usize].store(ptr::null_mut(), Ordering::Relaxed);
        }
    }
}

impl Drop for IdTable {
    fn drop(&mut self) {
        // Relaxed: `&mut self` excludes every other access.
        let t = self.table.load(Ordering::Relaxed);
        if !t.is_null() {
            // SAFETY: leaked by `alloc`, still published, and no reader can
            // exist (`&mut self`).
            drop(unsafe { Box::from_raw(t) });
        }
    }
}
