//! [`ListLru`]'s whole-list operations: the isolate walk (`list_lru_walk_one`),
//! reparenting a group into its parent (`memcg_reparent_list_lrus`), and
//! the memory figures.

use super::one::{ListOne, Slot};
use super::{slot_value, Isolate, ListLru, ReparentError};
use crate::group_id::GroupId;
use crate::sync::{self, AtomicPtr};

impl<T> ListLru<T> {
    /// Walk (`node`, `group`)'s list from the head (least recently used),
    /// asking `isolate` about each item, and return the items it isolated,
    /// in isolation order (`list_lru_walk_one`; the `Vec` is the kernel's
    /// dispose list).
    ///
    /// `nr_to_walk` is the budget: it is decremented *before* each callback
    /// and the walk stops when it reaches 0, so verdicts that restart the
    /// walk cannot livelock. On return it holds the unspent budget. A dead
    /// (reparented) group's list is empty.
    ///
    /// # Blocking
    ///
    /// Holds the list's lock for the whole walk, across every callback.
    /// `isolate` must not block for long (adds and removes on this list
    /// wait) and must not call into this `ListLru` (module doc, Locking
    /// rules).
    ///
    /// # Panics
    ///
    /// If `node` is out of range; if `isolate` calls back into this list (it
    /// would deadlock). A panic in `isolate` propagates; the list stays
    /// consistent and the items already isolated are dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, Isolate, ListLru};
    /// let lru = ListLru::new(1);
    /// lru.add(0, GroupId::ROOT, 1);
    /// let mut budget = 5;
    /// // A callback that always retries still ends: the budget is charged first.
    /// let out = lru.walk(0, GroupId::ROOT, &mut budget, |_| Isolate::Retry);
    /// assert!(out.is_empty());
    /// assert_eq!(budget, 0);
    /// ```
    pub fn walk(
        &self,
        node: usize,
        group: GroupId,
        nr_to_walk: &mut usize,
        mut isolate: impl FnMut(&mut T) -> Isolate,
    ) -> Vec<T> {
        self.check_node(node);
        let mut dispose = Vec::new();
        let Some(lists) = self.lists(group) else {
            return dispose;
        };
        let list = &lists[node];
        let mut inner = list.lock();
        if inner.forward.is_some() {
            return dispose;
        }
        list.calling_out(|| {
            let mut cur = inner.head();
            while !cur.is_null() {
                // Charge first (the kernel's "decrement nr_to_walk first so
                // that we don't livelock").
                if *nr_to_walk == 0 {
                    break;
                }
                *nr_to_walk -= 1;
                // SAFETY: `cur` is on our list; we hold the lock.
                let next = unsafe { inner.next_of(cur) };
                // SAFETY: `cur` is occupied and in our domain; the `&mut T`
                // lives only for the call, and nothing else touches the slot
                // meanwhile (lock held; a re-entrant call panics in `lock`).
                let verdict = isolate(unsafe { slot_value(cur) });
                match verdict {
                    Isolate::Removed | Isolate::RemovedRetry => {
                        // SAFETY: occupied, on our list, lock held.
                        dispose.push(unsafe { list.take(&mut inner, cur) });
                        cur = if verdict == Isolate::Removed {
                            next
                        } else {
                            inner.head()
                        };
                    }
                    Isolate::Rotate => {
                        // SAFETY: as above.
                        unsafe { list.rotate(&mut inner, cur) };
                        cur = next;
                    }
                    Isolate::Skip => cur = next,
                    Isolate::Retry => cur = inner.head(),
                    Isolate::Stop => break,
                }
            }
        });
        dispose
    }

    /// Move every item of `from` into `to`, on every node, and mark `from`
    /// dead (`memcg_reparent_list_lrus`): the items go before `to`'s, at
    /// the head, so reclaim takes them first (the kernel's
    /// `list_splice_init`: a removed group's objects are the likeliest to
    /// be dead weight), counts move with them, keys stay valid, and later adds
    /// to `from` go to `to`. If `to` was itself reparented, the items go to
    /// the live group at the end of its chain. O(nodes).
    ///
    /// # Ordering
    ///
    /// Calls `notify(node, to)` for each node where `to`'s list went from
    /// empty to non-empty, with `to`'s lock held, after the splice and a
    /// `fence(SeqCst)`, as [`add`](Self::add) does.
    ///
    /// # Blocking
    ///
    /// Serialized against other reparents; per node, takes `from`'s list
    /// lock then `to`'s (waiting for walks in progress on either).
    ///
    /// # Errors
    ///
    /// [`ReparentError::IntoItself`] if `to` is or resolves to `from`;
    /// [`ReparentError::AlreadyReparented`] if `from` is dead.
    ///
    /// # Panics
    ///
    /// If called from an isolate callback or `notify` running for one of
    /// the two groups' lists.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, ListLru, ReparentError};
    /// let lru = ListLru::new(1);
    /// let k = lru.add(0, GroupId::ROOT, 1);
    /// assert_eq!(
    ///     lru.reparent(GroupId::ROOT, GroupId::ROOT),
    ///     Err(ReparentError::IntoItself(GroupId::ROOT))
    /// );
    /// assert!(lru.contains(k));
    /// ```
    pub fn reparent(&self, from: GroupId, to: GroupId) -> Result<(), ReparentError> {
        if from == to {
            return Err(ReparentError::IntoItself(from));
        }
        let _serial = sync::lock(&self.reparent_lock);
        // Forward chains change only under `reparent_lock`, which we hold.
        let dead_into = |g: GroupId| self.lists(g).and_then(|l| l[0].lock().forward);
        if let Some(into) = dead_into(from) {
            return Err(ReparentError::AlreadyReparented { group: from, into });
        }
        let mut to = to;
        while let Some(next) = dead_into(to) {
            to = next;
        }
        if to == from {
            return Err(ReparentError::IntoItself(from));
        }
        let (from_lists, to_lists) = (self.lists_or_alloc(from), self.lists_or_alloc(to));
        for node in 0..self.nr_nodes {
            let (f, t) = (&from_lists[node], &to_lists[node]);
            // Lock order: from, then to (module doc).
            let mut fi = f.lock();
            let mut ti = t.lock();
            let (moved, was_empty) = t.splice_from(&mut ti, to, f, &mut fi);
            drop(fi);
            if was_empty && moved > 0 {
                self.notify(t, node, to);
            }
        }
        Ok(())
    }

    /// Bytes a group costs once it has lists, before any item: its list
    /// headers on every node and its group-table slot. What a bench should
    /// report as "memory per group".
    ///
    /// # Examples
    ///
    /// ```
    /// let lru = shrinker::ListLru::<u64>::new(2);
    /// assert!(lru.bytes_per_group() <= 2 * 128 + 8);
    /// ```
    #[must_use]
    pub fn bytes_per_group(&self) -> usize {
        self.nr_nodes * std::mem::size_of::<ListOne<T>>() + std::mem::size_of::<AtomicPtr<()>>()
    }

    /// Bytes of slot storage per item (links, generation, home address and
    /// the `T`), what a list allocates per slot in its chunks.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(shrinker::ListLru::<Box<u8>>::bytes_per_item() <= 40);
    /// ```
    #[must_use]
    pub fn bytes_per_item() -> usize {
        std::mem::size_of::<Slot<T>>()
    }

    /// Bytes `group` holds now: [`bytes_per_group`](Self::bytes_per_group)
    /// plus its lists' slot chunks (0 if it has no lists). Locks each of
    /// the group's lists in turn.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, ListLru};
    /// let lru = ListLru::new(1);
    /// assert_eq!(lru.group_bytes(GroupId::ROOT), 0);
    /// lru.add(0, GroupId::ROOT, 1u64);
    /// assert!(lru.group_bytes(GroupId::ROOT) > lru.bytes_per_group());
    /// ```
    #[must_use]
    pub fn group_bytes(&self, group: GroupId) -> usize {
        self.lists(group).map_or(0, |l| {
            self.bytes_per_group() + l.iter().map(ListOne::chunk_bytes).sum::<usize>()
        })
    }
}
