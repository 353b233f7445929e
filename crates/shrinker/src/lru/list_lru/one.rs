//! One (node, group) list: the kernel's `struct list_lru_one`.
//!
//! A list is a lock, an atomic item count, and behind the lock a doubly
//! linked list of [`Slot`]s (items, least recently used first), a singly
//! linked free list, and the *home chunks*: the slot storage this list
//! allocated. See the parent module's essay for why slots live in chunks
//! that never move and how a slot changes hands on reparenting.
//!
//! # Who may touch a slot
//!
//! Every slot is at every moment in the *domain* of exactly one live list:
//! the list whose item or free list links it, or, for a slot never handed
//! out, the live end of the forward chain of its home list (a dead home list
//! never hands slots out again, so those stay unused). A slot's fields are
//! read and written only by a thread that holds the lock of its domain. That
//! is the whole unsafe contract of this file.

use std::ptr::{self, NonNull};

use crate::group_id::GroupId;
use crate::sync::{self, AtomicUsize, Mutex, MutexGuard, Ordering};

/// Slots in a list's first home chunk; chunk `k` holds `FIRST_CHUNK << k`,
/// so a list's storage grows geometrically like a `Vec` without ever
/// moving a slot.
pub(super) const FIRST_CHUNK: u32 = 4;

/// One item's storage: the intrusive links, the generation that makes keys
/// single-use, the slot's own address (home group, index) so that a key can
/// be minted for it whichever list it serves, and the value.
///
/// # Invariants
///
/// `value.is_some()` iff the slot is linked on an item list. `generation`
/// is bumped each time the value is taken, so a key minted before can never
/// match again (until it wraps, after 2^64 reuses of one slot).
pub(super) struct Slot<T> {
    prev: *mut Slot<T>,
    /// Item-list successor, or free-list successor while free.
    next: *mut Slot<T>,
    pub(super) generation: u64,
    pub(super) home: u32,
    pub(super) index: u32,
    pub(super) value: Option<T>,
}

/// A home chunk: a leaked `Box<[Slot<T>]>` (kept raw so that moving the
/// `Vec` that records it never retags the slots that other lists point
/// into).
struct Chunk<T> {
    base: NonNull<Slot<T>>,
    len: usize,
}

/// The state behind a list's lock.
///
/// # Invariants
///
/// * `head`/`tail` delimit a well-formed doubly linked list of occupied
///   slots (both null iff it is empty); `free`/`free_tail` a singly linked
///   list (through `next`) of vacant slots. Every slot on them is in this
///   list's domain (module doc) and lives in some list's home chunk.
/// * `chunks` are this list's home chunks, in order; slot `i` of the list
///   (`i < allocated`) is at [`chunk_of`]`(i)`. They are freed only when the
///   `ListBody` is dropped, which happens only when the whole `ListLru` is.
/// * `forward` is `Some(g)` iff the list is dead (reparented into `g`): then
///   both lists are empty and `allocated` never changes again.
pub(super) struct ListBody<T> {
    head: *mut Slot<T>,
    tail: *mut Slot<T>,
    free: *mut Slot<T>,
    free_tail: *mut Slot<T>,
    chunks: Vec<Chunk<T>>,
    allocated: u32,
    pub(super) forward: Option<GroupId>,
}

// SAFETY: the raw pointers are owned storage (home chunks) or links into
// other lists' storage that are only followed under the lock that owns the
// slot (module doc); the only user data is `T`, which moves with the list.
unsafe impl<T: Send> Send for ListBody<T> {}

/// Chunk number and offset of home slot `index` (geometric chunks).
#[inline]
pub(super) fn chunk_of(index: u32) -> (usize, usize) {
    let i = u64::from(index);
    let first = u64::from(FIRST_CHUNK);
    let k = (i / first + 1).ilog2();
    let start = first * ((1u64 << k) - 1);
    (k as usize, (i - start) as usize)
}

impl<T> ListBody<T> {
    fn new() -> Self {
        ListBody {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            free: ptr::null_mut(),
            free_tail: ptr::null_mut(),
            chunks: Vec::new(),
            allocated: 0,
            forward: None,
        }
    }

    /// The home slot `index`, if this list ever handed it out. The pointer
    /// may only be dereferenced under the lock of the slot's domain.
    #[inline]
    pub(super) fn home_slot(&self, index: u32) -> Option<*mut Slot<T>> {
        if index >= self.allocated {
            return None;
        }
        let (k, off) = chunk_of(index);
        let chunk = &self.chunks[k];
        debug_assert!(off < chunk.len);
        // SAFETY: `off < chunk.len`, inside the chunk's allocation.
        Some(unsafe { chunk.base.as_ptr().add(off) })
    }

    /// A vacant slot in this list's domain: the free list first, else the
    /// next never-used home slot (a new chunk if need be). `me` is this
    /// list's group, recorded in fresh slots. The caller holds the lock and
    /// the list is live.
    fn alloc(&mut self, me: GroupId) -> *mut Slot<T> {
        debug_assert!(self.forward.is_none());
        if let Some(s) = NonNull::new(self.free) {
            let s = s.as_ptr();
            // SAFETY: `s` is on our free list: in our domain, we hold the
            // lock.
            self.free = unsafe { (*s).next };
            if self.free.is_null() {
                self.free_tail = ptr::null_mut();
            }
            return s;
        }
        let index = self.allocated;
        let (k, off) = chunk_of(index);
        if k == self.chunks.len() {
            self.grow(me);
        }
        self.allocated = index
            .checked_add(1)
            .expect("ListLru: more than 2^32 slots in one list");
        // SAFETY: `off` is inside chunk `k` (geometric layout).
        unsafe { self.chunks[k].base.as_ptr().add(off) }
    }

    #[cold]
    fn grow(&mut self, me: GroupId) {
        let k = self.chunks.len();
        let start = FIRST_CHUNK as usize * ((1 << k) - 1);
        let len = (FIRST_CHUNK as usize) << k;
        let slots: Box<[Slot<T>]> = (0..len)
            .map(|off| Slot {
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
                generation: 0,
                home: me.index(),
                // `alloc` checks that `allocated` stays below 2^32, and a
                // chunk is made only when that index is handed out; the
                // tail of the last chunk may lie past u32::MAX and is then
                // never handed out, so saturating is harmless.
                index: u32::try_from(start + off).unwrap_or(u32::MAX),
                value: None,
            })
            .collect();
        let base = NonNull::new(Box::into_raw(slots).cast::<Slot<T>>())
            .expect("Box::into_raw is never null");
        self.chunks.push(Chunk { base, len });
    }

    /// Link a vacant slot of our domain at the tail, holding `value`.
    fn push_tail(&mut self, s: *mut Slot<T>) {
        // SAFETY: `s` is in our domain and unlinked; `self.tail`, if any, is
        // on our list. We hold the lock.
        unsafe {
            (*s).prev = self.tail;
            (*s).next = ptr::null_mut();
            match NonNull::new(self.tail) {
                Some(t) => (*t.as_ptr()).next = s,
                None => self.head = s,
            }
        }
        self.tail = s;
    }

    /// Take a linked slot off the item list (it stays in our domain).
    fn unlink(&mut self, s: *mut Slot<T>) {
        // SAFETY: `s` and its neighbours are on our list; we hold the lock.
        unsafe {
            let (p, n) = ((*s).prev, (*s).next);
            match NonNull::new(p) {
                Some(p) => (*p.as_ptr()).next = n,
                None => self.head = n,
            }
            match NonNull::new(n) {
                Some(n) => (*n.as_ptr()).prev = p,
                None => self.tail = p,
            }
        }
    }

    /// Put a vacant slot of our domain on the free list.
    fn push_free(&mut self, s: *mut Slot<T>) {
        // SAFETY: `s` is in our domain and on neither list; we hold the lock.
        unsafe { (*s).next = self.free };
        if self.free.is_null() {
            self.free_tail = s;
        }
        self.free = s;
    }

    /// The least recently used item, or null.
    #[inline]
    pub(super) fn head(&self) -> *mut Slot<T> {
        self.head
    }

    /// `s`'s successor on the item list.
    ///
    /// # Safety
    ///
    /// `s` is on this list and the caller holds its lock.
    #[inline]
    pub(super) unsafe fn next_of(&self, s: *mut Slot<T>) -> *mut Slot<T> {
        // SAFETY: caller's contract.
        unsafe { (*s).next }
    }

    /// Whether the slot a key names (generation `generation`) is still
    /// occupied by that key's item.
    ///
    /// # Safety
    ///
    /// `s` is in this list's domain and the caller holds its lock.
    #[inline]
    pub(super) unsafe fn holds(&self, s: *mut Slot<T>, generation: u64) -> bool {
        // SAFETY: caller's contract.
        unsafe { (*s).generation == generation && (*s).value.is_some() }
    }
}

/// One (node, group) list.
///
/// # Invariants
///
/// `nr_items` equals the length of the item list; it is written only under
/// `lock` (so a load under the lock is exact) and read lock-free elsewhere.
pub(super) struct ListOne<T> {
    lock: Mutex<ListBody<T>>,
    /// The count `Shrink::count` reads: one Relaxed load.
    pub(super) nr_items: AtomicUsize,
    /// Misuse detection only (not part of any protocol, hence a std atomic):
    /// the token of the thread that holds `lock` while calling out (an
    /// isolate callback or notify), else 0.
    calling_out: std::sync::atomic::AtomicU64,
}

impl<T> ListOne<T> {
    pub(super) fn new() -> Self {
        ListOne {
            lock: Mutex::new(ListBody::new()),
            nr_items: AtomicUsize::new(0),
            calling_out: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Lock the list. A thread that calls back into a list whose lock it
    /// holds while calling out would deadlock: it panics instead.
    #[inline]
    pub(super) fn lock(&self) -> MutexGuard<'_, ListBody<T>> {
        match self.lock.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => self.lock_slow(),
        }
    }

    #[cold]
    fn lock_slow(&self) -> MutexGuard<'_, ListBody<T>> {
        // Relaxed: if the value is our own token, we stored it (tokens are
        // never reused) and coherence rules out reading it after our own
        // later reset to 0; any other value means someone else holds the
        // lock or held it. Loom runs its threads on one OS thread, where the
        // thread-local token is shared: no detection there.
        #[cfg(not(loom))]
        if self.calling_out.load(Ordering::Relaxed) == thread_token() {
            panic!(
                "ListLru: an isolate callback or notify called back into the \
                 (node, group) list it was called for: its lock is held, this would deadlock"
            );
        }
        sync::lock(&self.lock)
    }

    /// Run `f` (a call out of the library) with this list marked as held
    /// by the current thread, for [`lock`](Self::lock)'s misuse check. The
    /// caller holds the lock.
    #[inline]
    pub(super) fn calling_out<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Reset<'a>(&'a std::sync::atomic::AtomicU64);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                // Relaxed: see `lock_slow`.
                self.0.store(0, Ordering::Relaxed);
            }
        }
        // Relaxed: see `lock_slow`.
        self.calling_out.store(thread_token(), Ordering::Relaxed);
        let _reset = Reset(&self.calling_out);
        f()
    }

    /// The current count; exact under the lock.
    #[inline]
    pub(super) fn count(&self) -> usize {
        // Relaxed: a snapshot for reclaim heuristics (and exact when the
        // caller holds the lock, since every write is made under it). The
        // notify handshake orders it with fences, not with this load.
        self.nr_items.load(Ordering::Relaxed)
    }

    /// Set the count. The caller holds the lock (single writer, so a
    /// load + store is an exact update without a read-modify-write).
    #[inline]
    fn set_count(&self, n: usize) {
        // Relaxed: see `count`.
        self.nr_items.store(n, Ordering::Relaxed);
    }

    /// Add `value` at the tail (most recently used). Returns the slot, and
    /// whether the list was empty before. The caller holds the lock (`inner`
    /// is this list's) and the list is live; `me` is its group.
    pub(super) fn add(
        &self,
        inner: &mut ListBody<T>,
        me: GroupId,
        value: T,
    ) -> (*mut Slot<T>, bool) {
        let s = inner.alloc(me);
        // SAFETY: `alloc` handed us a vacant slot of our domain; we hold
        // the lock.
        unsafe { (*s).value = Some(value) };
        inner.push_tail(s);
        let was = self.count();
        self.set_count(was + 1);
        (s, was == 0)
    }

    /// Take the item in `s` off the list and return it; the slot goes on
    /// the free list with a new generation.
    ///
    /// # Safety
    ///
    /// `s` is occupied and on this list (`inner`), and the caller holds the
    /// lock.
    pub(super) unsafe fn take(&self, inner: &mut ListBody<T>, s: *mut Slot<T>) -> T {
        inner.unlink(s);
        // SAFETY: caller's contract: our slot, our lock.
        let value = unsafe {
            (*s).generation = (*s).generation.wrapping_add(1);
            (*s).value.take()
        };
        inner.push_free(s);
        self.set_count(self.count() - 1);
        value.expect("ListLru: an occupied slot holds a value")
    }

    /// Move an item to the tail (most recently used).
    ///
    /// # Safety
    ///
    /// As for [`take`](Self::take).
    pub(super) unsafe fn rotate(&self, inner: &mut ListBody<T>, s: *mut Slot<T>) {
        if inner.tail != s {
            inner.unlink(s);
            inner.push_tail(s);
        }
    }

    /// Reparent: splice every item of `from` (this list's dead-to-be
    /// sibling on the same node) before ours, at the reclaim end (the
    /// kernel's `list_splice_init`), adopt its free slots, mark it dead
    /// with forward `me`. Returns (items moved, whether we were empty
    /// before). The caller holds both locks and `from` is live.
    pub(super) fn splice_from(
        &self,
        inner: &mut ListBody<T>,
        me: GroupId,
        from: &ListOne<T>,
        from_inner: &mut ListBody<T>,
    ) -> (usize, bool) {
        debug_assert!(inner.forward.is_none() && from_inner.forward.is_none());
        let moved = from.count();
        let was = self.count();
        if let Some(t) = NonNull::new(from_inner.tail) {
            // SAFETY: `t` ends `from`'s list and `inner.head` heads ours; we
            // hold both locks, so both are in a domain we hold. From here on
            // they are in ours.
            unsafe {
                (*t.as_ptr()).next = inner.head;
                match NonNull::new(inner.head) {
                    Some(h) => (*h.as_ptr()).prev = t.as_ptr(),
                    None => inner.tail = t.as_ptr(),
                }
            }
            inner.head = from_inner.head;
        }
        if let Some(f) = NonNull::new(from_inner.free) {
            match NonNull::new(inner.free_tail) {
                // SAFETY: as above, for the free lists.
                Some(t) => unsafe { (*t.as_ptr()).next = f.as_ptr() },
                None => inner.free = f.as_ptr(),
            }
            inner.free_tail = from_inner.free_tail;
        }
        from_inner.head = ptr::null_mut();
        from_inner.tail = ptr::null_mut();
        from_inner.free = ptr::null_mut();
        from_inner.free_tail = ptr::null_mut();
        from_inner.forward = Some(me);
        from.set_count(0);
        self.set_count(was + moved);
        (moved, was == 0)
    }

    /// Bytes of slot storage this list allocated (its home chunks).
    pub(super) fn chunk_bytes(&self) -> usize {
        let inner = self.lock();
        inner.chunks.iter().map(|c| c.len).sum::<usize>() * std::mem::size_of::<Slot<T>>()
    }
}

impl<T> Drop for ListBody<T> {
    fn drop(&mut self) {
        for c in self.chunks.drain(..) {
            // SAFETY: `c` was leaked from a `Box<[Slot<T>]>` of length
            // `c.len` by `grow`. An `ListBody` is dropped only when the whole
            // `ListLru` is (`&mut` access, no other list is in use), and each
            // chunk is freed exactly once, by its home list; the slots'
            // values drop with it, wherever they were linked.
            drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(c.base.as_ptr(), c.len)) });
        }
    }
}

/// A token for the current thread, never reused (0 means "none").
fn thread_token() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    thread_local! {
        // Relaxed: only uniqueness matters.
        static TOKEN: u64 = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    TOKEN.with(|t| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_layout_is_geometric() {
        assert_eq!(chunk_of(0), (0, 0));
        assert_eq!(chunk_of(3), (0, 3));
        assert_eq!(chunk_of(4), (1, 0));
        assert_eq!(chunk_of(11), (1, 7));
        assert_eq!(chunk_of(12), (2, 0));
        assert_eq!(chunk_of(u32::MAX).0, 30);
    }
}
