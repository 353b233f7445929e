//! `ListLru<T>`: per-(node, group) LRU lists with counts, the producer side
//! of group-aware reclaim (the kernel's `struct list_lru`, `mm/list_lru.c`).
//!
//! A cache that a shrinker reclaims from keeps its objects on a `ListLru`:
//! [`add`](ListLru::add) at the tail (most recently used), [`remove`] by
//! key, [`touch`] to mark use, and from the shrinker: [`count`] (one atomic
//! load, called on every reclaim visit) and [`walk`] from the head (least
//! recently used) with an *isolate* callback that decides each item's fate
//! ([`Isolate`]). Objects live on one list per (node, group), so that
//! reclaim of one memory group on one node touches only that group's
//! objects on that node.
//!
//! [`remove`]: ListLru::remove
//! [`touch`]: ListLru::touch
//! [`count`]: ListLru::count
//! [`walk`]: ListLru::walk
//!
//! # Layout
//!
//! ```text
//! table ──RCU──▶ [ group 0 | group 1 | ... ]      (grown under `grow`, old
//!                    │                             array freed after a GP)
//!                    ▼
//!           [ ListOne node 0 | ListOne node 1 | ... ]   (allocated lazily on
//!              │ lock  nr_items                           a group's first add,
//!              ▼                                          freed with the ListLru)
//!           head ⇄ slot ⇄ slot ⇄ ... ⇄ tail      free → slot → slot
//!           home chunks: [4 slots][8 slots][16 slots]...
//! ```
//!
//! Finding the list for (node, group) takes no lock: an RCU read section
//! around two Acquire loads, the group table and its slot (the table is an
//! `RcuArray`, grown by copy under a mutex, the old one freed after a grace
//! period, as the shrinker id table and the group table are). The lists a slot points to
//! are never freed while the `ListLru` lives, so the read section ends
//! before any list lock is taken, and an isolate callback may block without
//! stalling grace periods. Each list has its own lock and its own atomic
//! count; nothing on the add/remove/count/walk paths is shared between
//! lists.
//!
//! # Storage and keys
//!
//! Each list allocates its slots in *home chunks* of geometrically growing
//! size (4, 8, 16, ... slots), so a list's memory follows its peak length and
//! a slot never moves. Items are linked intrusively through raw pointers;
//! a freed slot goes on the list's free list and is reused by its next add.
//! Nothing is freed to the allocator before the `ListLru` is dropped (a slab
//! that does not shrink; the values themselves are dropped or returned as
//! soon as they are removed).
//!
//! A [`LruKey`] names a slot by its home: (node, home group, index in the
//! home list's chunks) plus the slot's *generation*, which is bumped every
//! time the slot's value is taken. A stale key (item already removed,
//! isolated by a walk, or its slot since reused) therefore never matches:
//! `remove` returns `None`, `touch` and `contains` return `false`.
//!
//! # Reparenting
//!
//! [`reparent(from, to)`](ListLru::reparent) is the kernel's
//! `memcg_reparent_list_lrus`: for every node, lock `from`'s list, then
//! `to`'s, splice `from`'s items before `to`'s, at the head, where
//! reclaim starts (O(1): relink the two ends)
//! and its free slots onto `to`'s free list, move the count, and mark
//! `from` *dead* with a forward pointer to `to`. The slots do not move: they
//! stay in `from`'s home chunks but now belong to `to`'s list and lock. A key
//! whose home is `from` is resolved by locking `from`'s list, computing the
//! slot's address from the (now frozen) home chunks, and following the
//! forward chain to the live list that owns the slot; so keys of moved items
//! stay valid. An add to a dead group is redirected along the same chain
//! (the kernel redirects an add racing with reparenting to the parent); a
//! walk or count of a dead group sees an empty list. A dead group keeps its
//! per-node list headers and its home chunks (which serve the group it was
//! reparented into) for the life of the `ListLru`: group indices are not
//! recycled here.
//!
//! # The notify seam
//!
//! [`with_notify`](ListLru::with_notify) installs `notify(node, group)`,
//! called when a (node, group) list goes from empty to non-empty, by `add` or
//! by `reparent` (the kernel's `set_shrinker_bit(memcg, nid,
//! shrinker_id)`). The group-aware shrinker sets the group's bit there; its
//! reclaim walk clears the bit when `count` says empty. The two sides form a
//! store-buffering handshake (the kernel's `list_add_tail(); <MB>;
//! set_bit()` against `clear_bit(); <MB>; do_shrink_slab()`):
//!
//! ```text
//!   producer (add, list lock held)        shrinker (after Count::Empty)
//!   ------------------------------        -----------------------------
//!   link item; nr_items = n + 1           clear bit (group, node)
//!   fence(SeqCst)            ◀── pair ──▶ fence(SeqCst)
//!   notify(node, group): set bit          nr_items == 0?  else set bit again
//! ```
//!
//! Either the shrinker's re-count sees the new item, or its clear comes
//! before the producer's set in the bit's modification order; the bit is
//! never left clear over a non-empty list. The producer's fence is issued
//! here, so `notify` needs only an atomic set (`fetch_or`, any ordering).
//!
//! # Locking rules
//!
//! The isolate callback and `notify` run with the list's lock held (as in
//! the kernel, where `isolate` runs under the list spinlock and
//! `set_shrinker_bit` under `list_lru_add`'s). There is no way to drop it
//! from inside; the `*Retry` verdicts restart the walk instead. Neither may
//! call back into the same list: that would deadlock, and it panics naming
//! the misuse instead. They should not call into the `ListLru` at all: two
//! walks whose callbacks touch each other's lists deadlock, as would two
//! kernel walkers taking each other's spinlocks.
//!
//! Lock order: `reparent_lock` → the `from` list → the `to` list. The
//! `grow` mutex (table growth, lazy group allocation) is never held while a
//! list lock is taken.

mod one;
#[cfg(test)]
mod tests;
mod walk;

use std::fmt;
use std::marker::PhantomData;
use std::ptr;

use shrinker_rcu::ReadGuard;

use crate::group_id::GroupId;
use crate::groups::GroupObserver;
use crate::lifetime::{ArrayWriter, RcuArray};
use crate::sync::{self, Mutex, MutexGuard, Ordering};
use one::{ListBody, ListOne, Slot};

#[cfg(loom)]
use loom::sync::atomic::fence;
#[cfg(not(loom))]
use std::sync::atomic::fence;

/// An isolate callback's verdict on one item (the kernel's `enum
/// lru_status`).
///
/// The callback runs with the list's lock held and keeps it for every
/// verdict: unlike the kernel's `LRU_*_RETRY`, it cannot drop the lock.
/// Each verdict first cost one unit of `nr_to_walk`.
///
/// # Examples
///
/// ```
/// use shrinker::{GroupId, Isolate, ListLru};
/// let lru = ListLru::new(1);
/// for v in [1, 2, 3, 4] {
///     lru.add(0, GroupId::ROOT, v);
/// }
/// let mut budget = 10;
/// // Evict odd values, give even ones another pass.
/// let out = lru.walk(0, GroupId::ROOT, &mut budget, |v| {
///     if *v % 2 == 1 { Isolate::Removed } else { Isolate::Rotate }
/// });
/// assert_eq!(out, [1, 3]);
/// assert_eq!(lru.count(0, GroupId::ROOT), 2);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isolate {
    /// Take the item off the list and return it in the walk's dispose list;
    /// the count drops by one, its key goes stale. The walk goes on with
    /// the item's successor (`LRU_REMOVED`).
    Removed,
    /// As [`Removed`](Self::Removed), then restart from the head
    /// (`LRU_REMOVED_RETRY`: in the kernel, the callback dropped the lock
    /// and the list may have changed).
    RemovedRetry,
    /// Move the item to the tail (most recently used): "referenced, give it
    /// another pass". The count is unchanged; the walk goes on with the
    /// item's old successor, so it may meet the item again if the budget
    /// lasts (`LRU_ROTATE`, as in the kernel).
    Rotate,
    /// Leave the item where it is and go on with its successor
    /// (`LRU_SKIP`: "cannot be locked").
    Skip,
    /// Leave the item and restart from the head (`LRU_RETRY`). The budget
    /// was charged, so a callback that always retries still ends.
    Retry,
    /// End the walk here (`LRU_STOP`).
    Stop,
}

/// A handle to one item added to a [`ListLru`]: single-use and never
/// ambiguous (a stale key matches nothing, not another item).
///
/// Keys stay valid when the item is moved to another group by
/// [`ListLru::reparent`]. A key used with a `ListLru` other than the one
/// that minted it names nothing or an arbitrary item of that list (it can
/// never cause undefined behaviour); don't.
///
/// # Examples
///
/// ```
/// use shrinker::{GroupId, ListLru};
/// let lru = ListLru::new(2);
/// let k = lru.add(1, GroupId::ROOT, "x");
/// assert_eq!(k.node(), 1);
/// assert_eq!(lru.remove(k), Some("x"));
/// assert_eq!(lru.remove(k), None); // stale
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LruKey {
    generation: u64,
    node: u32,
    home: u32,
    index: u32,
}

impl LruKey {
    fn of<T>(node: usize, s: *mut Slot<T>, _held: &MutexGuard<'_, ListBody<T>>) -> Self {
        // SAFETY: the caller holds the lock of `s`'s domain (`_held`).
        let (generation, home, index) = unsafe { ((*s).generation, (*s).home, (*s).index) };
        LruKey {
            generation,
            // `node < nr_nodes`, which `new` checked fits in a u32.
            node: node as u32,
            home,
            index,
        }
    }

    /// The node the item was added on.
    #[inline]
    #[must_use]
    pub fn node(&self) -> usize {
        self.node as usize
    }
}

/// [`ListLru::reparent`] was refused; nothing was moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReparentError {
    /// `to` is `from`, or was itself reparented (directly or through a
    /// chain) into `from`.
    #[error("cannot reparent group {0:?} into itself")]
    IntoItself(GroupId),
    /// `from` was already reparented.
    #[error("group {group:?} was already reparented into {into:?}")]
    AlreadyReparented {
        /// The group.
        group: GroupId,
        /// Where its items went.
        into: GroupId,
    },
}

impl<T: Send> GroupObserver for ListLru<T> {
    /// [`ListLru::reparent`]; a group already reparented (by hand, before
    /// the removal) is fine.
    fn reparent(&self, from: GroupId, to: GroupId) {
        match ListLru::reparent(self, from, to) {
            Ok(()) | Err(ReparentError::AlreadyReparented { .. }) => {}
            Err(e) => tracing::warn!(target: "shrinker", "reparenting a ListLru failed: {e}"),
        }
    }
}

/// A key's slot and the list that owns it, locked: (list, its lock, slot).
type Resolved<'a, T> = (&'a ListOne<T>, MutexGuard<'a, ListBody<T>>, *mut Slot<T>);

type Notify = Box<dyn Fn(usize, GroupId) + Send + Sync>;

/// Per-(node, group) LRU lists with counts (the kernel's `struct list_lru`).
///
/// See the [module documentation](self) for the design. `T` is stored by
/// value; [`walk`](Self::walk) hands isolated values back.
///
/// # Invariants
///
/// * Every non-null slot of `groups` points to the first of `nr_nodes`
///   lists allocated for that group (a leaked `Box<[ListOne<T>]>`, by
///   `alloc_group_slow`), freed only by `Drop`. A slot, once set, never
///   changes (copied into any larger table).
///
/// # Examples
///
/// ```
/// use shrinker::{GroupId, Isolate, ListLru};
/// let lru = ListLru::new(1);
/// let a = lru.add(0, GroupId::ROOT, "a");
/// lru.add(0, GroupId::ROOT, "b");
/// assert!(lru.touch(a)); // a is now most recently used
/// let mut budget = 1;
/// let evicted = lru.walk(0, GroupId::ROOT, &mut budget, |_| Isolate::Removed);
/// assert_eq!(evicted, ["b"]);
/// assert_eq!(budget, 0);
/// ```
pub struct ListLru<T> {
    nr_nodes: usize,
    /// The group table: slot `g` names group `g`'s per-node lists.
    groups: RcuArray<ListOne<T>>,
    /// Serializes table growth and group allocation (the table's writer).
    grow: Mutex<ArrayWriter>,
    /// Serializes reparenting (so forward chains change one at a time).
    reparent_lock: Mutex<()>,
    notify: Option<Notify>,
    _owns: PhantomData<ListOne<T>>,
}

// SAFETY: the lists behind the erased table pointers are owned by the
// `ListLru` (freed by its `Drop`); their contents are `T`s behind mutexes,
// so `T: Send` suffices for both moving the `ListLru` and sharing it (as for
// `Mutex<T>`). `notify` is `Send + Sync`.
unsafe impl<T: Send> Send for ListLru<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for ListLru<T> {}

impl<T> fmt::Debug for ListLru<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListLru")
            .field("nr_nodes", &self.nr_nodes)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<T> ListLru<T> {
    /// An empty `ListLru` for `nr_nodes` nodes, without a notify hook.
    ///
    /// # Panics
    ///
    /// If `nr_nodes` is 0 or does not fit in a `u32`.
    ///
    /// # Examples
    ///
    /// ```
    /// let lru = shrinker::ListLru::<u32>::new(4);
    /// assert_eq!(lru.nr_nodes(), 4);
    /// assert!(lru.is_empty());
    /// ```
    #[must_use]
    pub fn new(nr_nodes: usize) -> Self {
        Self::build(nr_nodes, None)
    }

    /// An empty `ListLru` that calls `notify(node, group)` each time a
    /// (node, group) list goes from empty to non-empty: the seam to a
    /// group-aware shrinker's per-group bitmap.
    ///
    /// # Ordering
    ///
    /// The item's insertion and the count's increment happen before
    /// `notify` is called, and a `fence(SeqCst)` separates them from it: a
    /// shrinker that clears its bit, fences, and re-reads [`count`] either
    /// sees the item or has its clear ordered before `notify`'s set (see the
    /// module's handshake diagram). `notify` runs with the list's lock
    /// held, so calls for one list are serialized and each follows the
    /// transition it reports.
    ///
    /// # Blocking
    ///
    /// `notify` must be quick and must not block; it must not call into
    /// this `ListLru` (for the same list that panics, naming the misuse).
    ///
    /// [`count`]: Self::count
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, ListLru};
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// let hits = Arc::new(AtomicUsize::new(0));
    /// let h = hits.clone();
    /// let lru = ListLru::with_notify(1, move |_node, _group| {
    ///     h.fetch_add(1, Ordering::Relaxed);
    /// });
    /// let k = lru.add(0, GroupId::ROOT, 1);
    /// lru.add(0, GroupId::ROOT, 2); // not empty before: no call
    /// assert_eq!(hits.load(Ordering::Relaxed), 1);
    /// lru.remove(k);
    /// ```
    #[must_use]
    pub fn with_notify(
        nr_nodes: usize,
        notify: impl Fn(usize, GroupId) + Send + Sync + 'static,
    ) -> Self {
        Self::build(nr_nodes, Some(Box::new(notify)))
    }

    fn build(nr_nodes: usize, notify: Option<Notify>) -> Self {
        assert!(
            nr_nodes > 0 && u32::try_from(nr_nodes).is_ok(),
            "ListLru: nr_nodes must be in 1..=u32::MAX, got {nr_nodes}"
        );
        let (groups, writer) = RcuArray::new();
        ListLru {
            nr_nodes,
            groups,
            grow: Mutex::new(writer),
            reparent_lock: Mutex::new(()),
            notify,
            _owns: PhantomData,
        }
    }

    /// The number of nodes.
    #[inline]
    #[must_use]
    pub fn nr_nodes(&self) -> usize {
        self.nr_nodes
    }

    #[inline]
    #[track_caller]
    fn check_node(&self, node: usize) {
        assert!(
            node < self.nr_nodes,
            "ListLru: node {node} out of range (nr_nodes = {})",
            self.nr_nodes
        );
    }

    // ---- the group table -------------------------------------------------

    /// Group `index`'s lists, if allocated, read under `guard`.
    #[inline]
    fn lookup(&self, index: u32, guard: &ReadGuard) -> Option<&[ListOne<T>]> {
        // Acquire (inside `get`): the lists' initialisation is visible.
        let p = self.groups.get(index as usize, guard);
        // SAFETY: a set slot points to `nr_nodes` initialised lists that live
        // until `Drop` (type invariant), which `&self` holds off: the slice
        // may outlive the guard.
        (!p.is_null()).then(|| unsafe { std::slice::from_raw_parts(p, self.nr_nodes) })
    }

    /// Group `group`'s lists, if allocated (lock-free).
    #[inline]
    fn lists(&self, group: GroupId) -> Option<&[ListOne<T>]> {
        let guard = shrinker_rcu::read_lock();
        self.lookup(group.index(), &guard)
    }

    /// Group `group`'s lists, allocating them on first use (the kernel's
    /// `memcg_list_lru_alloc`).
    #[inline]
    fn lists_or_alloc(&self, group: GroupId) -> &[ListOne<T>] {
        match self.lists(group) {
            Some(l) => l,
            None => self.alloc_group_slow(group),
        }
    }

    #[cold]
    fn alloc_group_slow(&self, group: GroupId) -> &[ListOne<T>] {
        let mut w = sync::lock(&self.grow);
        let index = group.index() as usize;
        if self.groups.grow(&mut w, index, 16).is_err() {
            // Out of memory: abort, as the lists' `Box` would.
            std::alloc::handle_alloc_error(std::alloc::Layout::new::<[usize; 16]>());
        }
        let mut p = self.groups.get_locked(&w, index);
        if p.is_null() {
            let lists: Box<[ListOne<T>]> = (0..self.nr_nodes).map(|_| ListOne::new()).collect();
            p = Box::into_raw(lists).cast::<ListOne<T>>();
            // Release (inside `set`): pairs with the Acquire in `lookup`;
            // publishes the lists' initialisation.
            self.groups.set(&w, index, p);
        }
        // SAFETY: `p` points to `nr_nodes` lists that live until `Drop`.
        unsafe { std::slice::from_raw_parts(p, self.nr_nodes) }
    }

    /// Every allocated group's lists, for statistics (lock-free).
    fn for_each_group(&self, mut f: impl FnMut(GroupId, &[ListOne<T>])) {
        let guard = shrinker_rcu::read_lock();
        for index in 0..self.groups.len(&guard) {
            if let Some(l) = self.lookup(index as u32, &guard) {
                f(GroupId::from_index(index as u32), l);
            }
        }
    }

    // ---- lists and keys --------------------------------------------------

    /// Lock the live list that (node, `group`) resolves to: the group's own
    /// list, or, if it was reparented, the live end of its forward chain
    /// (the kernel's `lock_list_lru_of_memcg` walking up to the parent).
    /// Returns the list, its lock and its group.
    fn lock_live<'a>(
        &'a self,
        node: usize,
        mut group: GroupId,
        mut list: &'a ListOne<T>,
    ) -> (&'a ListOne<T>, MutexGuard<'a, ListBody<T>>, GroupId) {
        loop {
            let inner = list.lock();
            let Some(fwd) = inner.forward else {
                return (list, inner, group);
            };
            drop(inner);
            group = fwd;
            // A forward target was allocated before it was recorded.
            list = &self
                .lists(fwd)
                .expect("ListLru: a reparent target has lists")[node];
        }
    }

    /// Find `key`'s slot and lock the list that owns it. `None` if the key
    /// names no slot this `ListLru` handed out. The caller must still check
    /// the generation ([`ListBody::holds`]).
    fn resolve(&self, key: LruKey) -> Option<Resolved<'_, T>> {
        let node = key.node();
        if node >= self.nr_nodes {
            return None;
        }
        let home = &self.lists(GroupId::from_index(key.home))?[node];
        let inner = home.lock();
        let s = inner.home_slot(key.index)?;
        if inner.forward.is_none() {
            return Some((home, inner, s));
        }
        // Home is dead: its chunks are frozen, and the slot belongs to the
        // live end of its forward chain (reparent moved everything there
        // while holding both locks; we saw the mark under the home lock,
        // after that reparent released it).
        let fwd = inner.forward.expect("dead");
        drop(inner);
        let next = &self
            .lists(fwd)
            .expect("ListLru: a reparent target has lists")[node];
        let (list, inner, _) = self.lock_live(node, fwd, next);
        Some((list, inner, s))
    }

    /// Call `notify(node, group)` for an empty → non-empty transition of
    /// `list`, whose lock the caller holds.
    #[inline]
    fn notify(&self, list: &ListOne<T>, node: usize, group: GroupId) {
        if let Some(notify) = &self.notify {
            // SeqCst fence: the producer half of the store-buffering
            // handshake (module doc). Orders the count's store (sequenced
            // before) with notify's bit set (sequenced after), against the
            // shrinker's clear-bit; fence(SeqCst); re-count.
            fence(Ordering::SeqCst);
            list.calling_out(|| notify(node, group));
        }
    }

    // ---- the public operations ------------------------------------------

    /// Add `value` at the tail (most recently used) of (`node`, `group`)'s
    /// list and return its key (`list_lru_add`). O(1); allocates only when
    /// the list's slot storage grows or on the group's first add.
    ///
    /// If `group` was reparented, the item goes to the group it was
    /// reparented into (recursively), as the kernel redirects to the parent.
    ///
    /// # Ordering
    ///
    /// If the list was empty, calls `notify` (see
    /// [`with_notify`](Self::with_notify)) with the lock held, after the
    /// insertion and count increment and a `fence(SeqCst)`.
    ///
    /// # Blocking
    ///
    /// Takes the list's lock (and, on a group's first add, the group-table
    /// mutex).
    ///
    /// # Panics
    ///
    /// If `node` is out of range, or if called from an isolate callback or
    /// `notify` running for the same list (it would deadlock).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, ListLru};
    /// let lru = ListLru::new(1);
    /// let k = lru.add(0, GroupId::ROOT, 7);
    /// assert!(lru.contains(k));
    /// assert_eq!(lru.count(0, GroupId::ROOT), 1);
    /// ```
    pub fn add(&self, node: usize, group: GroupId, value: T) -> LruKey {
        self.check_node(node);
        let list = &self.lists_or_alloc(group)[node];
        let (list, mut inner, group) = self.lock_live(node, group, list);
        let (s, was_empty) = list.add(&mut inner, group, value);
        let key = LruKey::of(node, s, &inner);
        if was_empty {
            self.notify(list, node, group);
        }
        key
    }

    /// Remove the item `key` names and return it (`list_lru_del`). O(1).
    /// `None` if it was already removed or isolated by a walk.
    ///
    /// # Blocking
    ///
    /// Takes the list's lock (two, briefly one after the other, if the item
    /// was reparented).
    ///
    /// # Panics
    ///
    /// If called from an isolate callback or `notify` running for the list
    /// that holds the item.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, ListLru};
    /// let lru = ListLru::new(1);
    /// let k = lru.add(0, GroupId::ROOT, 'x');
    /// assert_eq!(lru.remove(k), Some('x'));
    /// assert_eq!(lru.remove(k), None);
    /// ```
    pub fn remove(&self, key: LruKey) -> Option<T> {
        let (list, mut inner, s) = self.resolve(key)?;
        // SAFETY: `resolve` locked the list whose domain `s` is in.
        if !unsafe { inner.holds(s, key.generation) } {
            return None;
        }
        // SAFETY: `s` is occupied (checked), hence on `list`; lock held.
        Some(unsafe { list.take(&mut inner, s) })
    }

    /// Move the item `key` names to the tail (most recently used). O(1).
    /// Returns `false` for a stale key.
    ///
    /// # Blocking
    ///
    /// As [`remove`](Self::remove).
    ///
    /// # Panics
    ///
    /// As [`remove`](Self::remove).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, Isolate, ListLru};
    /// let lru = ListLru::new(1);
    /// let a = lru.add(0, GroupId::ROOT, 'a');
    /// lru.add(0, GroupId::ROOT, 'b');
    /// assert!(lru.touch(a));
    /// let mut n = 1;
    /// assert_eq!(lru.walk(0, GroupId::ROOT, &mut n, |_| Isolate::Removed), ['b']);
    /// ```
    pub fn touch(&self, key: LruKey) -> bool {
        let Some((list, mut inner, s)) = self.resolve(key) else {
            return false;
        };
        // SAFETY: as in `remove`.
        if !unsafe { inner.holds(s, key.generation) } {
            return false;
        }
        // SAFETY: as in `remove`.
        unsafe { list.rotate(&mut inner, s) };
        true
    }

    /// Whether the item `key` names is still on a list.
    ///
    /// # Blocking
    ///
    /// As [`remove`](Self::remove).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, ListLru};
    /// let lru = ListLru::new(1);
    /// let k = lru.add(0, GroupId::ROOT, ());
    /// assert!(lru.contains(k));
    /// lru.remove(k);
    /// assert!(!lru.contains(k));
    /// ```
    #[must_use]
    pub fn contains(&self, key: LruKey) -> bool {
        self.resolve(key).is_some_and(|(_, inner, s)| {
            // SAFETY: as in `remove`.
            unsafe { inner.holds(s, key.generation) }
        })
    }

    /// Items on (`node`, `group`)'s list (`list_lru_count_one`): one
    /// Relaxed atomic load after a lock-free lookup. 0 for a group never
    /// added to or reparented away.
    ///
    /// # Ordering
    ///
    /// A snapshot: Relaxed, ordered with `notify` only through the
    /// fences of the handshake in the module doc.
    ///
    /// # Panics
    ///
    /// If `node` is out of range.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, ListLru};
    /// let lru = ListLru::new(2);
    /// lru.add(1, GroupId::ROOT, 0u8);
    /// assert_eq!(lru.count(0, GroupId::ROOT), 0);
    /// assert_eq!(lru.count(1, GroupId::ROOT), 1);
    /// ```
    #[inline]
    #[must_use]
    pub fn count(&self, node: usize, group: GroupId) -> usize {
        self.check_node(node);
        self.lists(group).map_or(0, |l| l[node].count())
    }

    /// Items on every group's list on `node` (the kernel's per-node
    /// `nr_items`). O(groups): there is no shared per-node counter, so that
    /// adds and removes in different groups share no cache line.
    ///
    /// # Panics
    ///
    /// If `node` is out of range.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, ListLru};
    /// let lru = ListLru::new(2);
    /// lru.add(1, GroupId::ROOT, 0u8);
    /// assert_eq!(lru.count_node(1), 1);
    /// ```
    #[must_use]
    pub fn count_node(&self, node: usize) -> usize {
        self.check_node(node);
        let mut n = 0;
        self.for_each_group(|_, l| n += l[node].count());
        n
    }

    /// Items on every list (`list_lru_count`). O(groups × nodes).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, ListLru};
    /// let lru = ListLru::new(2);
    /// lru.add(0, GroupId::ROOT, 0u8);
    /// lru.add(1, GroupId::ROOT, 0u8);
    /// assert_eq!(lru.len(), 2);
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        let mut n = 0;
        self.for_each_group(|_, l| n += l.iter().map(ListOne::count).sum::<usize>());
        n
    }

    /// Whether every list is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(shrinker::ListLru::<()>::new(1).is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The value of an occupied slot.
///
/// # Safety
///
/// `s` is occupied, the caller holds the lock of its domain, and no other
/// reference to the slot exists while the result lives.
#[inline]
unsafe fn slot_value<'a, T>(s: *mut Slot<T>) -> &'a mut T {
    // SAFETY: caller's contract.
    unsafe { (*s).value.as_mut() }.expect("ListLru: an occupied slot holds a value")
}

impl<T> Drop for ListLru<T> {
    fn drop(&mut self) {
        let nr_nodes = self.nr_nodes;
        for p in self.groups.drain() {
            if !p.is_null() {
                // SAFETY: leaked from a `Box<[ListOne<T>]>` of `nr_nodes`
                // elements by `alloc_group_slow`, once per slot; tables only
                // share it, and only the current one is drained here
                // (retired ones free their slot arrays, not the lists). No
                // reader remains (`&mut self`).
                drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(p, nr_nodes)) });
            }
        }
    }
}
