//! The shrinker id table (the kernel's `shrinker_idr`): id → shrinker,
//! readable under RCU, written under the registry mutex.
//!
//! Ids are handed out lowest-free-first, so the table stays as dense as the
//! peak number of shrinkers. The table is an [`RcuArray`] (grown by copy,
//! the old array freed after a grace period). A reader holding an old
//! array may find a slot that was cleared or set since: it `try_get`s what
//! it found, and an object that was unregistered has a zero count (the pin
//! fails) and is not freed before the reader's section ends, so a stale slot
//! costs a failed lookup, never a use-after-free.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use shrinker_rcu::ReadGuard;

use super::object::ShrinkerObject;
use crate::error::BuildError;
use crate::lifetime::{ArrayWriter, RcuArray};

/// The RCU-readable half: id → shrinker object.
pub(crate) struct IdTable {
    table: RcuArray<ShrinkerObject>,
}

/// The allocator half: lives under the registry mutex (and holds the
/// table's [`ArrayWriter`], so that its holder is the table's writer).
pub(crate) struct IdAlloc {
    free: BinaryHeap<Reverse<u32>>,
    next: u32,
    writer: ArrayWriter,
}

impl IdTable {
    /// An empty table and its allocator (to keep under the registry mutex).
    pub(crate) fn new() -> (Self, IdAlloc) {
        let (table, writer) = RcuArray::new();
        let alloc = IdAlloc {
            free: BinaryHeap::new(),
            next: 0,
            writer,
        };
        (IdTable { table }, alloc)
    }

    /// The shrinker that holds `id`, if any. The pointer is valid until
    /// `guard` ends; the caller must `try_get` before using the shrinker.
    #[inline]
    pub(crate) fn lookup(&self, id: u32, guard: &ReadGuard) -> *const ShrinkerObject {
        // Acquire (inside `get`): the object's initialisation is visible
        // before the caller's try_get.
        self.table.get(id as usize, guard)
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
        self.table.grow(&mut alloc.writer, id as usize, 64)?;
        alloc.next += 1;
        Ok(id)
    }

    /// Give `id` back. Caller holds the registry mutex; the slot is clear.
    pub(crate) fn release(&self, alloc: &mut IdAlloc, id: u32) {
        debug_assert!(self.table.get_locked(&alloc.writer, id as usize).is_null());
        alloc.free.push(Reverse(id));
    }

    /// Make `id` find `object`. Caller holds the registry mutex (`alloc`).
    pub(crate) fn publish(&self, alloc: &IdAlloc, id: u32, object: *mut ShrinkerObject) {
        // Release (inside `set`): pairs with the Acquire in `lookup`.
        self.table.set(&alloc.writer, id as usize, object);
    }

    /// Make `id` find nothing. Caller holds the registry mutex (`alloc`).
    pub(crate) fn clear(&self, alloc: &IdAlloc, id: u32) {
        // Relaxed (inside `clear`): a reader that still finds the old
        // pointer fails its try_get (the count is already zero when we
        // clear).
        self.table.clear(&alloc.writer, id as usize);
    }
}
