//! `RcuList<T>`: a singly linked list with lock-free readers and a writer lock
//! (the kernel's `list_add_rcu` / `list_del_rcu` / `list_for_each_entry_rcu`).
//!
//! # Invariants
//!
//! * Every node reachable from `head` was allocated by a writer and published
//!   with a Release store, after its `value` and `next` were initialised.
//! * Mutations (`next` and `head` stores, `tail`, `len`) happen only under
//!   the writer mutex.
//! * An unlinked node keeps its `next` pointer unchanged (`list_del_rcu`
//!   leaves `->next` intact), so a reader standing on it continues into the
//!   list. It is freed only through a [`Removed`], after a grace period that
//!   began after the unlink; its successors, if unlinked later, are freed
//!   after later grace periods, so a reader on it never steps onto freed
//!   memory.
//!
//! # Orderings
//!
//! Every link store (`head`, `next`) is Release; every reader link load is
//! Acquire. A writer holds the mutex, so each writer happens-after every
//! earlier writer and hence after every node's initialisation; its Release
//! store therefore carries those initialisations to a reader that follows the
//! new link.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::{self, NonNull};

use crate::ptr::Retired;
use crate::reader::ReadGuard;
use crate::sync::{lock, AtomicPtr, Mutex, MutexGuard, Ordering};

struct Node<T> {
    value: T,
    next: AtomicPtr<Node<T>>,
}

struct WriterState<T> {
    tail: *mut Node<T>,
    len: usize,
}

// SAFETY: `tail` points into the list the state belongs to and is only used
// under the writer mutex.
unsafe impl<T: Send> Send for WriterState<T> {}

/// An RCU-protected list: lock-free iteration under a [`ReadGuard`];
/// insertion and removal under the writer lock ([`RcuList::lock`]).
///
/// # Example
///
/// ```
/// use shrinker_rcu::{read_lock, RcuList};
/// let list = RcuList::new();
/// {
///     let mut w = list.lock();
///     w.push_back(1);
///     w.push_back(2);
///     w.push_front(0);
/// }
/// let g = read_lock();
/// assert_eq!(list.iter(&g).copied().collect::<Vec<_>>(), [0, 1, 2]);
/// drop(g);
/// let removed = list.lock().remove_first(|v| *v == 1).unwrap();
/// assert_eq!(removed.into_inner(), 1); // after a grace period
/// ```
pub struct RcuList<T> {
    head: AtomicPtr<Node<T>>,
    writer: Mutex<WriterState<T>>,
    _owns: PhantomData<Box<Node<T>>>,
}

// SAFETY: the list owns its `T`s (moved to other threads when removed and
// dropped after a grace period: `Send`) and hands `&T` to readers on any
// thread (`Sync`).
unsafe impl<T: Send + Sync> Send for RcuList<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for RcuList<T> {}

impl<T> RcuList<T> {
    /// An empty list.
    pub fn new() -> Self {
        RcuList {
            head: AtomicPtr::new(ptr::null_mut()),
            writer: Mutex::new(WriterState {
                tail: ptr::null_mut(),
                len: 0,
            }),
            _owns: PhantomData,
        }
    }

    /// Iterate under a read-side section (`list_for_each_entry_rcu`).
    ///
    /// Concurrent insertions may or may not be seen; a concurrently removed
    /// element may still be seen (it stays valid until the guard is gone).
    pub fn iter<'g>(&'g self, _guard: &'g ReadGuard) -> Iter<'g, T> {
        Iter {
            // Acquire: pairs with the Release link stores of writers.
            next: self.head.load(Ordering::Acquire),
            _list: PhantomData,
        }
    }

    /// Take the writer lock. Writers exclude each other, never readers.
    ///
    /// # Blocking
    ///
    /// Waits for the writer that holds the lock, if any; never for readers
    /// or a grace period. Holding the [`ListWriter`] inside a read-side
    /// section is fine; waiting for a grace period while holding it (e.g.
    /// [`Removed::into_inner`]) delays other writers by as much.
    pub fn lock(&self) -> ListWriter<'_, T> {
        ListWriter {
            list: self,
            state: lock(&self.writer),
        }
    }
}

impl<T> Default for RcuList<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Drop for RcuList<T> {
    fn drop(&mut self) {
        // Relaxed: `&mut self` excludes readers and writers.
        let mut p = self.head.load(Ordering::Relaxed);
        while !p.is_null() {
            // SAFETY: every linked node is an owned box; no borrow can exist.
            let node = unsafe { Box::from_raw(p) };
            p = node.next.load(Ordering::Relaxed);
        }
    }
}

/// Formats the elements as a reader sees them, under a read-side section of
/// its own: never takes the writer lock, so it works (and cannot deadlock)
/// while the formatting thread holds that lock.
impl<T: fmt::Debug> fmt::Debug for RcuList<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let guard = crate::read_lock();
        f.debug_list().entries(self.iter(&guard)).finish()
    }
}

/// Iterator over an [`RcuList`] under a read-side section.
pub struct Iter<'g, T> {
    next: *const Node<T>,
    _list: PhantomData<&'g T>,
}

impl<'g, T> Iterator for Iter<'g, T> {
    type Item = &'g T;

    #[inline]
    fn next(&mut self) -> Option<&'g T> {
        // SAFETY: `next` was read with Acquire from a link of a node that was
        // reachable during this read-side section (or from the head), so it
        // is null or a node that cannot be freed before the guard of `'g`
        // ends (module invariants).
        let node = unsafe { self.next.as_ref() }?;
        // Acquire: pairs with the Release link stores of writers.
        self.next = node.next.load(Ordering::Acquire);
        Some(&node.value)
    }
}

/// The writer side of an [`RcuList`]: holds the writer lock.
pub struct ListWriter<'a, T> {
    list: &'a RcuList<T>,
    state: MutexGuard<'a, WriterState<T>>,
}

impl<'a, T> ListWriter<'a, T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.state.len
    }

    /// Is the list empty?
    pub fn is_empty(&self) -> bool {
        self.state.len == 0
    }

    /// Iterate as the writer. No guard is needed: a node is freed only after
    /// it was unlinked, and unlinking needs the lock this writer holds.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        // Relaxed: links change only under the lock we hold.
        let mut p = self.list.head.load(Ordering::Relaxed) as *const Node<T>;
        std::iter::from_fn(move || {
            // SAFETY: linked nodes are freed only after being unlinked, which
            // needs the lock we hold for as long as this borrow.
            let node = unsafe { p.as_ref() }?;
            p = node.next.load(Ordering::Relaxed);
            Some(&node.value)
        })
    }

    /// Insert at the front (`list_add_rcu`).
    pub fn push_front(&mut self, value: T) {
        // Relaxed: links change only under the lock we hold.
        let first = self.list.head.load(Ordering::Relaxed);
        let node = Box::into_raw(Box::new(Node {
            value,
            next: AtomicPtr::new(first),
        }));
        if first.is_null() {
            self.state.tail = node;
        }
        // Release: publishes the node's initialisation (module "Orderings").
        self.list.head.store(node, Ordering::Release);
        self.state.len += 1;
    }

    /// Insert at the back (`list_add_tail_rcu`).
    pub fn push_back(&mut self, value: T) {
        let node = Box::into_raw(Box::new(Node {
            value,
            next: AtomicPtr::new(ptr::null_mut()),
        }));
        let tail = self.state.tail;
        // Release (either store): publishes the node's initialisation.
        if tail.is_null() {
            self.list.head.store(node, Ordering::Release);
        } else {
            // SAFETY: `tail` is the last linked node (writer invariant).
            unsafe { &*tail }.next.store(node, Ordering::Release);
        }
        self.state.tail = node;
        self.state.len += 1;
    }

    /// Unlink `node`, whose predecessor is `prev` (null: the head).
    ///
    /// # Safety
    ///
    /// `node` is linked, `prev` is its predecessor (or null if it is first),
    /// and the caller holds the writer lock (`&mut self`).
    unsafe fn unlink(&mut self, prev: *mut Node<T>, node: *mut Node<T>) -> Removed<T>
    where
        T: Send + 'static,
    {
        // SAFETY: `node` is linked (contract).
        let next = unsafe { &*node }.next.load(Ordering::Relaxed);
        // Release: a reader following the new link must see the successor's
        // initialisation (module "Orderings"). `node.next` stays as it is.
        if prev.is_null() {
            self.list.head.store(next, Ordering::Release);
        } else {
            // SAFETY: `prev` is linked (contract).
            unsafe { &*prev }.next.store(next, Ordering::Release);
        }
        if self.state.tail == node {
            self.state.tail = prev;
        }
        self.state.len -= 1;
        // SAFETY: `node` is an owned box, now unreachable for new readers.
        Removed(unsafe { Retired::new(NonNull::new_unchecked(node)) })
    }

    /// Unlink the first element matching `pred` (`list_del_rcu`).
    ///
    /// # Panics
    ///
    /// If `pred` panics; the panic propagates and the list is left as it
    /// was (nothing is unlinked before `pred` has answered).
    pub fn remove_first(&mut self, mut pred: impl FnMut(&T) -> bool) -> Option<Removed<T>>
    where
        T: Send + 'static,
    {
        let mut prev: *mut Node<T> = ptr::null_mut();
        // Relaxed: links change only under the lock we hold.
        let mut p = self.list.head.load(Ordering::Relaxed);
        while !p.is_null() {
            // SAFETY: linked node, lock held.
            let node = unsafe { &*p };
            if pred(&node.value) {
                // SAFETY: `p` is linked with predecessor `prev`; lock held.
                return Some(unsafe { self.unlink(prev, p) });
            }
            prev = p;
            p = node.next.load(Ordering::Relaxed);
        }
        None
    }

    /// Keep the elements for which `keep` returns true; the others are
    /// unlinked and dropped after a grace period, on the callback worker
    /// (never under the writer lock). Returns how many went.
    ///
    /// # Blocking
    ///
    /// Never waits for a grace period: the removed elements go to
    /// [`crate::defer_drop`].
    ///
    /// # Panics
    ///
    /// If `keep` panics; the panic propagates, the elements already removed
    /// stay removed (and are dropped after a grace period), the rest stay
    /// linked, and the list stays consistent. Also if the RCU callback
    /// worker cannot be spawned on the process's first deferred free.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) -> usize
    where
        T: Send + 'static,
    {
        let mut removed = 0;
        let mut prev: *mut Node<T> = ptr::null_mut();
        // Relaxed: links change only under the lock we hold.
        let mut p = self.list.head.load(Ordering::Relaxed);
        while !p.is_null() {
            // SAFETY: linked node, lock held.
            let next = unsafe { &*p }.next.load(Ordering::Relaxed);
            // SAFETY: as above.
            if keep(&unsafe { &*p }.value) {
                prev = p;
            } else {
                // SAFETY: `p` is linked with predecessor `prev`; lock held.
                // Deferred, never dropped inline: `T::drop` must not run
                // under the writer lock we hold.
                unsafe { self.unlink(prev, p) }.0.defer();
                removed += 1;
            }
            p = next;
        }
        removed
    }
}

/// An element unlinked from an [`RcuList`] that readers may still be reading.
///
/// Dropping it drops the element after a grace period;
/// [`into_inner`](Self::into_inner) waits for the grace period and returns it.
pub struct Removed<T: Send + 'static>(Retired<Node<T>>);

impl<T: Send + 'static> Removed<T> {
    /// Wait for the grace period (if it has not passed) and take the element.
    ///
    /// # Blocking
    ///
    /// For a grace period, unless one has already elapsed since the element
    /// was unlinked.
    ///
    /// # Panics
    ///
    /// Inside a read-side section, if it has to wait.
    pub fn into_inner(self) -> T {
        self.0.into_box().value
    }
}

impl<T: Send + Sync + 'static> Deref for Removed<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0.value
    }
}

impl<T: Send + 'static> fmt::Debug for Removed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Removed").field(&self.0).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::read_lock;

    fn contents(list: &RcuList<u32>) -> Vec<u32> {
        let g = read_lock();
        list.iter(&g).copied().collect()
    }

    #[test]
    fn push_front_back_and_order() {
        let list = RcuList::new();
        assert!(list.lock().is_empty());
        list.lock().push_back(2);
        list.lock().push_front(1);
        list.lock().push_back(3);
        assert_eq!(contents(&list), [1, 2, 3]);
        assert_eq!(list.lock().len(), 3);
        assert_eq!(list.lock().iter().copied().collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn remove_head_middle_tail_keeps_tail_right() {
        let list = RcuList::new();
        for i in 0..5 {
            list.lock().push_back(i);
        }
        assert_eq!(
            list.lock().remove_first(|v| *v == 4).unwrap().into_inner(),
            4
        );
        // The tail moved back: a push_back lands after 3.
        list.lock().push_back(9);
        assert_eq!(
            list.lock().remove_first(|v| *v == 0).unwrap().into_inner(),
            0
        );
        assert_eq!(
            list.lock().remove_first(|v| *v == 2).unwrap().into_inner(),
            2
        );
        assert!(list.lock().remove_first(|v| *v == 42).is_none());
        assert_eq!(contents(&list), [1, 3, 9]);
        assert_eq!(list.lock().len(), 3);
    }

    #[test]
    fn removing_everything_then_push_back() {
        let list = RcuList::new();
        list.lock().push_back(1);
        list.lock().push_back(2);
        let mut w = list.lock();
        let gone = w.retain(|_| false);
        assert_eq!(gone, 2);
        assert!(w.is_empty());
        w.push_back(7);
        drop(w);
        assert_eq!(contents(&list), [7]);
        crate::synchronize_rcu();
    }

    #[test]
    fn removed_node_keeps_its_next_link() {
        let list = RcuList::new();
        for i in 0..3 {
            list.lock().push_back(i);
        }
        let g = read_lock();
        let mut it = list.iter(&g);
        assert_eq!(it.next(), Some(&0));
        // The reader stands on node 0; unlink 0 and 1 meanwhile.
        let r0 = list.lock().remove_first(|v| *v == 0).unwrap();
        let r1 = list.lock().remove_first(|v| *v == 1).unwrap();
        // It still walks on through the removed nodes into the live list.
        assert_eq!(it.collect::<Vec<_>>(), [&1, &2]);
        drop(g);
        assert_eq!((r0.into_inner(), r1.into_inner()), (0, 1));
        assert_eq!(contents(&list), [2]);
    }
}
