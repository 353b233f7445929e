//! [`ShrinkerRegistry`]: the list of shrinkers, the lockless reclaim walk
//! (`shrink_slab`), and introspection.
//!
//! # The list
//!
//! A singly linked RCU list with a `prev` pointer kept under the registry
//! mutex for O(1) removal: the kernel's `list_add_tail_rcu` /
//! `list_del_rcu`. Readers follow `next` with Acquire loads; writers
//! (register, unregister) hold the mutex and store links with Release. An
//! unlinked node keeps its `next`, and is freed with `call_rcu` after a
//! grace period, so a walker standing on it continues into the list.
//!
//! It is this crate's own list rather than `shrinker_rcu::RcuList` because
//! the walk must *leave* the read section while it stands on a node (the
//! callback may block) and continue from that node afterwards, which the
//! guard-borrowing `RcuList::iter` rightly forbids; and because unregister
//! must unlink one known node in O(1), not search for it.
//!
//! # The walk (`shrink_slab`, Linux 6.7)
//!
//! 1. Enter a read section; load `head`.
//! 2. While the registry's gate is open (nobody unregistering lately), take
//!    a *walk pin* (a store to this thread's own slot, registry/pin.rs) and
//!    leave the section: the **fast phase**. It keeps every linked node
//!    linked, so the walk goes on with no read section and no pin per
//!    node: skip a node whose count is zero (being registered or
//!    unregistered), call it out (4), read `next`. A walker that sees the
//!    gate closed enters a read section, lets the walk pin go, and goes on
//!    from the node it stands on with step 3's refcount pins.
//! 3. Gate closed, per node: pin it with `try_get` (Linux 6.7). On failure
//!    read `next` and go on, still inside the section. Pinned: leave the
//!    read section (the callbacks may block), call out (4), re-enter a read
//!    section, *then* `put`: the pin kept the node linked, and from here
//!    the section keeps it (and the successor we are about to read)
//!    allocated (registry/object.rs has the argument). Read `next`; back to
//!    2 (the gate may have reopened).
//! 4. `do_shrink_slab` (engine/mod.rs), with this thread marked "inside" the
//!    shrinker so that a callback that unregisters it panics instead of
//!    waiting for itself.
//!
//! Registration and unregistration serialize on the mutex among themselves
//! only: a walk takes no lock, never waits for them and is never refused
//! (the pre-6.7 `down_read_trylock` gave up whenever a registration held the
//! lock). Unregistration waits for the pins of its own shrinker, and, the
//! first time after a quiet spell, for one grace period to close the gate
//! and for each fast-phase walker to finish the callout it is in.
//!
//! # Pin choice: refcount under churn, light pins when quiet
//!
//! Linux 6.7 pins with the refcount: two locked read-modify-writes per
//! shrinker visited, which on this project's 2-CPU VM made a quiet walk over
//! 4,000 cheap shrinkers 3.6–4.3× the cost of the pre-6.7 rwlock walk (one
//! lock per *walk*). Only unregister ever reads the count, so while nobody
//! unregisters the walk takes one walk pin on the whole registry instead
//! (the group walk a light pin per shrinker), and the first unregister
//! closes the gate (the kernel's `rcu_sync`, as in `percpu_rw_semaphore`):
//! registry/pin.rs has the protocol and the proof. Under register churn the gate
//! stays closed, so unregister waits for no grace period there, which is
//! what the SRCU design (stress-ng ramfs −88.8 %) got wrong.
//!
//! `PercpuRef` was the other candidate: it writes no shared line while live,
//! but its `kill` makes the count exact only after a grace period *per
//! shrinker*, and costs a cache-padded slot per thread per shrinker. A light
//! pin costs one slot per *thread*, and a grace period per quiet spell.

use std::sync::atomic::AtomicBool;

use crate::Freed;
use std::fmt;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use crate::error::{BuildError, ShrinkError};
use crate::groups::Groups;

use crate::group_id::GroupId;
use crate::info::{ShrinkerId, ShrinkerInfo};
#[cfg(not(loom))]
use crate::lifetime::retire_after_grace_period;
use crate::request::{ShrinkRequest, DEF_PRIORITY};
use crate::shrink::{Count, Scan};
use crate::sync::{lock, AtomicPtr, Mutex, Ordering};
use crate::topology;
use gate::Gate;
use ids::{IdAlloc, IdTable};
use object::ShrinkerObject;

pub(crate) mod call_counts;
pub(crate) mod gate;
mod group_api;
pub(crate) mod handles;
pub(crate) mod ids;
pub(crate) mod object;
pub(crate) mod pin;
pub(crate) mod walk;

/// A set of shrinkers that reclaim walks over (the kernel's `shrinker_list`
/// with `shrinker_mutex` and `shrinker_idr`).
///
/// [`global`](Self::global) is the process-wide default; independent
/// instances ([`builder`](Self::builder)) serve tests and tenants. A
/// registry is a cheap handle (`Clone` shares it); shrinkers keep their
/// registry alive.
///
/// # Examples
///
/// ```
/// use shrinker::{Count, Scan, Shrink, ShrinkControl, ShrinkerBuilder, ShrinkRequest, ShrinkerRegistry};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// struct Pool(AtomicUsize);
/// impl Shrink for Pool {
///     fn count(&self, _: &ShrinkControl) -> Count { Count::Objects(self.0.load(Ordering::Relaxed)) }
///     fn scan(&self, sc: &mut ShrinkControl) -> Scan {
///         let n = sc.nr_to_scan().min(self.0.load(Ordering::Relaxed));
///         self.0.fetch_sub(n, Ordering::Relaxed);
///         Scan::Freed(n)
///     }
/// }
///
/// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
/// let pool = ShrinkerBuilder::new("pool").build_in(&reg, Pool(AtomicUsize::new(1000)))?.register();
/// // Priority 12 asks for 1000 >> 12 = 0 objects: nothing happens.
/// assert_eq!(reg.shrink(&ShrinkRequest::default())?, 0);
/// // Priority 0 asks for up to twice everything.
/// let freed = reg.shrink(&ShrinkRequest { priority: 0, ..Default::default() })?;
/// assert_eq!(freed, 1000);
/// assert_eq!(reg.shrinkers()[0].to_string(), "pool-0");
/// drop(pool); // unregisters
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ShrinkerRegistry {
    pub(crate) inner: Arc<RegistryCore>,
}

/// Builds a [`ShrinkerRegistry`].
#[derive(Clone, Debug)]
pub struct RegistryBuilder {
    nodes: Option<usize>,
    max_shrinkers: u32,
}

/// What every handle of one registry shares: the list and its id table,
/// the groups, the gate, and the registry mutex's state.
pub(crate) struct RegistryCore {
    /// First node of the list (null: empty).
    head: AtomicPtr<ShrinkerObject>,
    pub(crate) ids: IdTable,
    /// The memory-group tree and its `ShrinkerInfo`s (groups/mod.rs).
    pub(crate) groups: Groups,
    /// Whether walks may take light pins (registry/pin.rs).
    pub(crate) gate: Arc<Gate>,
    pub(crate) state: Mutex<ListState>,
    pub(crate) nr_nodes: usize,
    pub(crate) max_shrinkers: u32,
    /// Under loom nodes are "freed" into here (see registry/object.rs `freed`). Boxed:
    /// a node must stay at its address for a late walker's check to read it.
    #[cfg(loom)]
    #[allow(clippy::vec_box)]
    pub(crate) graveyard: Mutex<Vec<Box<ShrinkerObject>>>,
}

/// What the registry mutex protects: the list's tail and length, and the
/// id allocator (the id table's writer).
pub(crate) struct ListState {
    tail: *mut ShrinkerObject,
    len: usize,
    pub(crate) ids: IdAlloc,
}

// SAFETY: `tail` points to a node of this registry's list and is used only
// under the mutex; nodes are `Send + Sync`.
unsafe impl Send for ListState {}

impl ShrinkerRegistry {
    /// The process-wide registry, created on first use with the node count
    /// of this machine.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = shrinker::ShrinkerRegistry::global();
    /// let b = shrinker::ShrinkerRegistry::global();
    /// assert!(a.same_as(b));
    /// ```
    #[cfg(not(loom))]
    pub fn global() -> &'static ShrinkerRegistry {
        static GLOBAL: std::sync::OnceLock<ShrinkerRegistry> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(|| RegistryBuilder::new().build_unchecked(topology::online_nodes()))
    }

    /// A builder for an independent registry.
    #[must_use]
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::new()
    }

    /// Do both handles name the same registry?
    #[must_use]
    pub fn same_as(&self, other: &ShrinkerRegistry) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// ShrinkerObject ids valid in requests: `0..nr_nodes()`.
    #[must_use]
    pub fn nr_nodes(&self) -> usize {
        self.inner.nr_nodes
    }

    /// Registered shrinkers (including those being unregistered).
    #[must_use]
    pub fn len(&self) -> usize {
        lock(&self.inner.state).len
    }

    /// No shrinker is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One reclaim pass (`shrink_slab`); returns the number of objects the
    /// shrinkers reported freed.
    ///
    /// For the root group: every registered shrinker, group-aware or not
    /// (global reclaim). For another group: only the group-aware shrinkers
    /// whose bit is set in (group, node), with the group's deferred work;
    /// a shrinker whose `count` says [`Count::Empty`] has its bit cleared
    /// (see [`set_shrinker_bit`](Self::set_shrinker_bit)). To reclaim a
    /// subtree, call it for each of [`groups_under`](Self::groups_under).
    ///
    /// # Blocking
    ///
    /// Runs the shrinkers' callbacks, which may block; takes no lock of its
    /// own and never waits for registration or unregistration.
    ///
    /// # Errors
    ///
    /// [`ShrinkError::InvalidPriority`] above 12, [`ShrinkError::InvalidNode`]
    /// for a node outside `0..nr_nodes()`, [`ShrinkError::NoSuchGroup`] for a
    /// group that does not exist (or is being removed).
    ///
    /// # Panics
    ///
    /// If called inside an RCU read-side section: the callbacks would run
    /// inside the caller's section, and a callback that waits for a grace
    /// period (or blocks on a lock held by a thread that does) would wait
    /// for that section: deadlock. Never because of a callback: callback
    /// panics are caught and counted.
    #[track_caller]
    pub fn shrink(&self, req: &ShrinkRequest) -> Result<usize, ShrinkError> {
        walk::assert_not_in_read_section("ShrinkerRegistry::shrink");
        self.shrink_accounted_until(req, &walk::NEVER)
            .map(|f| usize::try_from(f.objects).unwrap_or(usize::MAX))
    }

    /// [`shrink`](Self::shrink), counting what was freed in bytes as well
    /// as objects ([`Freed`]): the figure a reclaimer that is asked for
    /// bytes needs.
    ///
    /// # Blocking
    ///
    /// As [`shrink`](Self::shrink).
    ///
    /// # Errors
    ///
    /// As [`shrink`](Self::shrink).
    ///
    /// # Panics
    ///
    /// As [`shrink`](Self::shrink).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{Count, Scan, Shrink, ShrinkControl, ShrinkerBuilder, ShrinkRequest, ShrinkerRegistry};
    /// use std::sync::Mutex;
    /// struct Pages(Mutex<usize>);
    /// impl Shrink for Pages {
    ///     fn count(&self, _: &ShrinkControl) -> Count { Count::Objects(*self.0.lock().unwrap()) }
    ///     fn scan(&self, sc: &mut ShrinkControl) -> Scan {
    ///         let mut left = self.0.lock().unwrap();
    ///         let n = sc.nr_to_scan().min(*left);
    ///         *left -= n;
    ///         Scan::Freed(n)
    ///     }
    /// }
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let _p = ShrinkerBuilder::new("pages").object_bytes(4096)
    ///     .build_in(&reg, Pages(Mutex::new(1000)))?.register();
    /// let f = reg.shrink_accounted(&ShrinkRequest { priority: 0, ..Default::default() })?;
    /// assert_eq!((f.objects, f.bytes), (1000, 1000 * 4096));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[track_caller]
    pub fn shrink_accounted(&self, req: &ShrinkRequest) -> Result<Freed, ShrinkError> {
        walk::assert_not_in_read_section("ShrinkerRegistry::shrink_accounted");
        self.shrink_accounted_until(req, &walk::NEVER)
    }

    /// The walk behind [`shrink_accounted`](Self::shrink_accounted), which
    /// stops before the next shrinker once `stop` is set (a reclaimer being
    /// dropped).
    #[track_caller]
    pub(crate) fn shrink_accounted_until(
        &self,
        req: &ShrinkRequest,
        stop: &AtomicBool,
    ) -> Result<Freed, ShrinkError> {
        walk::assert_not_in_read_section("ShrinkerRegistry::shrink");
        self.validate(req.node, req.priority)?;
        if req.group == GroupId::ROOT {
            Ok(self.shrink_global(req.node, req.priority, stop))
        } else {
            self.shrink_group(req.group, req.node, req.priority, stop)
        }
    }

    fn validate(&self, node: usize, priority: u8) -> Result<(), ShrinkError> {
        if priority > DEF_PRIORITY {
            return Err(ShrinkError::InvalidPriority { priority });
        }
        self.validate_node(node)
    }

    pub(crate) fn validate_node(&self, node: usize) -> Result<(), ShrinkError> {
        if node >= self.inner.nr_nodes {
            return Err(ShrinkError::InvalidNode {
                node,
                nr_nodes: self.inner.nr_nodes,
            });
        }
        Ok(())
    }

    /// The group walk (`groups/walk.rs`).
    #[inline]
    fn shrink_group(
        &self,
        group: GroupId,
        nid: usize,
        priority: u8,
        stop: &AtomicBool,
    ) -> Result<Freed, ShrinkError> {
        self.inner.groups.shrink(
            &self.inner.ids,
            &self.inner.gate,
            group,
            nid,
            priority,
            stop,
        )
    }

    /// The walk (registry/walk.rs): the numbered protocol in the module
    /// documentation.
    #[inline]
    fn shrink_global(&self, nid: usize, priority: u8, stop: &AtomicBool) -> Freed {
        walk::shrink_global(&self.inner.head, &self.inner.gate, nid, priority, stop)
    }

    /// Call one shrinker's `count` by hand (debugfs `count`).
    ///
    /// # Errors
    ///
    /// [`ShrinkError::NoSuchShrinker`] if no registered shrinker has `id`;
    /// [`ShrinkError::InvalidNode`].
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{Count, Scan, Shrink, ShrinkControl, ShrinkerBuilder, ShrinkerRegistry};
    /// struct Ten;
    /// impl Shrink for Ten {
    ///     fn count(&self, _: &ShrinkControl) -> Count { Count::Objects(10) }
    ///     fn scan(&self, sc: &mut ShrinkControl) -> Scan { Scan::Freed(sc.nr_to_scan()) }
    /// }
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let s = ShrinkerBuilder::new("ten").build_in(&reg, Ten)?.register();
    /// assert_eq!(reg.count(s.id(), 0)?, Count::Objects(10));
    /// assert_eq!(reg.scan(s.id(), 0, 4)?, Scan::Freed(4));
    /// let id = s.id();
    /// drop(s);
    /// assert!(reg.count(id, 0).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Blocking
    ///
    /// Runs the shrinker's `count`, which may block.
    ///
    /// # Panics
    ///
    /// Inside an RCU read-side section (the callback would run inside it), as
    /// [`shrink`](Self::shrink).
    pub fn count(&self, id: ShrinkerId, node: usize) -> Result<Count, ShrinkError> {
        self.validate_node(node)?;
        walk::with_pinned(&self.inner.ids, id, |n| n.count_pinned(GroupId::ROOT, node))
    }

    /// [`count`](Self::count) for memory group `group` (debugfs `count`'s
    /// per-memcg lines): the shrinker is told the group, as group reclaim
    /// tells it.
    ///
    /// # Errors
    ///
    /// As [`count`](Self::count); [`ShrinkError::NoSuchGroup`] if `group`
    /// does not exist, or is not the root and the shrinker is not
    /// group-aware.
    ///
    /// # Blocking
    ///
    /// Runs the shrinker's `count`, which may block.
    ///
    /// # Panics
    ///
    /// Inside an RCU read-side section, as [`shrink`](Self::shrink).
    pub fn count_in(
        &self,
        id: ShrinkerId,
        group: GroupId,
        node: usize,
    ) -> Result<Count, ShrinkError> {
        self.validate_node(node)?;
        self.validate_group_call(group)?;
        walk::with_pinned(&self.inner.ids, id, |n| {
            (group == GroupId::ROOT || n.flags.group_aware).then(|| n.count_pinned(group, node))
        })?
        .ok_or(ShrinkError::NoSuchGroup { group })
    }

    /// [`scan`](Self::scan) for memory group `group` (debugfs `scan`'s
    /// `<memcg> <node> <nr>`).
    ///
    /// # Errors
    ///
    /// As [`count_in`](Self::count_in).
    ///
    /// # Blocking
    ///
    /// Runs the shrinker's `scan`, which may block.
    ///
    /// # Panics
    ///
    /// Inside an RCU read-side section, as [`shrink`](Self::shrink).
    pub fn scan_in(
        &self,
        id: ShrinkerId,
        group: GroupId,
        node: usize,
        nr: usize,
    ) -> Result<Scan, ShrinkError> {
        self.validate_node(node)?;
        self.validate_group_call(group)?;
        walk::with_pinned(&self.inner.ids, id, |n| {
            (group == GroupId::ROOT || n.flags.group_aware).then(|| n.scan_pinned(group, node, nr))
        })?
        .ok_or(ShrinkError::NoSuchGroup { group })
    }

    /// The bytes a shrinker's objects hold, where known
    /// ([`Shrink::held_bytes`](crate::Shrink::held_bytes), else its objects
    /// times [`ShrinkerBuilder::object_bytes`](crate::ShrinkerBuilder::object_bytes)):
    /// introspection for tools such as `shrinkctl top`.
    ///
    /// # Errors
    ///
    /// [`ShrinkError::NoSuchShrinker`].
    ///
    /// # Blocking
    ///
    /// Calls the shrinker's `held_bytes` (or `count`), which may block.
    ///
    /// # Panics
    ///
    /// Inside an RCU read-side section, as [`shrink`](Self::shrink).
    pub fn held_bytes(&self, id: ShrinkerId) -> Result<Option<u64>, ShrinkError> {
        let nodes = self.nr_nodes();
        walk::with_pinned(&self.inner.ids, id, |n| n.held_bytes_pinned(nodes))
    }

    fn validate_group_call(&self, group: GroupId) -> Result<(), ShrinkError> {
        if group != GroupId::ROOT && self.group_parent(group).is_err() {
            return Err(ShrinkError::NoSuchGroup { group });
        }
        Ok(())
    }

    /// Call one shrinker's `scan` by hand with `nr_to_scan = nr` (debugfs
    /// `scan`). No count, no deferred work.
    ///
    /// # Errors
    ///
    /// As [`count`](Self::count).
    ///
    /// # Blocking
    ///
    /// Runs the shrinker's `scan`, which may block.
    ///
    /// # Panics
    ///
    /// Inside an RCU read-side section, as [`shrink`](Self::shrink).
    pub fn scan(&self, id: ShrinkerId, node: usize, nr: usize) -> Result<Scan, ShrinkError> {
        self.validate_node(node)?;
        walk::with_pinned(&self.inner.ids, id, |n| {
            n.scan_pinned(GroupId::ROOT, node, nr)
        })
    }

    /// Every shrinker on the list, in registration order, with flags and
    /// statistics (the debugfs directory).
    ///
    /// # Blocking
    ///
    /// Takes the registry mutex for the length of the list.
    #[must_use]
    pub fn shrinkers(&self) -> Vec<ShrinkerInfo> {
        let state = lock(&self.inner.state);
        let mut out = Vec::with_capacity(state.len);
        // Relaxed: links change only under the mutex we hold.
        let mut p = self.inner.head.load(Ordering::Relaxed);
        // SAFETY: linked nodes are unlinked (and only then freed) under the
        // mutex we hold.
        while let Some(n) = unsafe { p.as_ref() } {
            out.push(ShrinkerInfo {
                id: n.id,
                name: n.name.to_string(),
                flags: n.flags,
                seeks: n.seeks,
                batch: n.batch,
                live: n.refs.read() > 0,
                object_bytes: n.object_bytes(),
                stats: n.stats_snapshot(),
            });
            p = n.next.load(Ordering::Relaxed);
        }
        drop(state);
        out
    }

    /// `list_add_tail_rcu` + id publication (register step 1).
    ///
    /// # Safety
    ///
    /// `node` is a built, unlinked node of this registry, owned by the caller.
    pub(crate) unsafe fn link(&self, node: NonNull<ShrinkerObject>) {
        let p = node.as_ptr();
        let mut st = lock(&self.inner.state);
        // SAFETY: owned and not yet shared (contract); `prev` under the mutex.
        unsafe { node.as_ref().set_prev(st.tail) };
        // Release (either store): publishes the node's initialisation to
        // walkers' Acquire link loads.
        if st.tail.is_null() {
            self.inner.head.store(p, Ordering::Release);
        } else {
            // SAFETY: `tail` is the last linked node (mutex held).
            unsafe { &*st.tail }.next.store(p, Ordering::Release);
        }
        st.tail = p;
        st.len += 1;
        // SAFETY: as above.
        self.inner
            .ids
            .publish(&st.ids, unsafe { node.as_ref() }.id.0, p);
    }

    /// `list_del_rcu` + id release (unregister step 3).
    ///
    /// # Safety
    ///
    /// `node` is linked on this registry's list and its count is zero.
    pub(crate) unsafe fn unlink(&self, node: NonNull<ShrinkerObject>) {
        // SAFETY: linked, so live (contract).
        let n = unsafe { node.as_ref() };
        let mut st = lock(&self.inner.state);
        // SAFETY: mutex held.
        let prev = unsafe { n.prev() };
        // Relaxed: links change only under the mutex we hold.
        let next = n.next.load(Ordering::Relaxed);
        // Release: a walker following the new link must see the successor's
        // initialisation. `n.next` stays as it is (list_del_rcu).
        if prev.is_null() {
            self.inner.head.store(next, Ordering::Release);
        } else {
            // SAFETY: `prev` is linked (mutex held).
            unsafe { &*prev }.next.store(next, Ordering::Release);
        }
        if next.is_null() {
            st.tail = prev;
        } else {
            // SAFETY: `next` is linked; mutex held.
            unsafe { (*next).set_prev(prev) };
        }
        st.len -= 1;
        self.inner.ids.clear(&st.ids, n.id.0);
        self.inner.ids.release(&mut st.ids, n.id.0);
    }

    /// Allocate an id for a shrinker being built.
    pub(crate) fn alloc_id(&self) -> Result<ShrinkerId, BuildError> {
        let mut st = lock(&self.inner.state);
        self.inner
            .ids
            .alloc(&mut st.ids, self.inner.max_shrinkers)
            .map(ShrinkerId)
    }

    /// Give back the id of a shrinker that was never registered.
    pub(crate) fn release_id(&self, id: ShrinkerId) {
        let mut st = lock(&self.inner.state);
        self.inner.ids.release(&mut st.ids, id.0);
    }

    /// Free an unlinked node after a grace period (`call_rcu`), keeping its
    /// memory for the next registration (`ShrinkerObject::recycle`).
    ///
    /// A prompt `call_rcu`, not a lazy one: a lazy free would wait for
    /// 10,000 others or 10 s, so under register churn the recycler would be
    /// empty and every registration would pay the aligned allocation that
    /// recycling avoids (lifetime/recycle.rs). The grace periods it needs
    /// are the ones the gate's reopening (`Gate::exit`) already runs under
    /// churn, batched by the RCU worker (`batch_delay`, 1 ms).
    ///
    /// # Safety
    ///
    /// `node` is unlinked, its id slot cleared, its count zero; the caller
    /// owned it and gives it up.
    pub(crate) unsafe fn free_rcu(&self, node: NonNull<ShrinkerObject>) {
        #[cfg(not(loom))]
        // SAFETY: an owned box (contract), unlinked with its id cleared, so
        // only readers inside read sections may still reach it.
        unsafe {
            retire_after_grace_period(node.as_ptr(), ShrinkerObject::recycle)
        };
        #[cfg(loom)]
        {
            // SAFETY: owned box (contract). (Under loom the node is never
            // deallocated, only marked: see `graveyard`.)
            let b = unsafe { Box::from_raw(node.as_ptr()) };
            let inner = Arc::clone(&self.inner);
            shrinker_rcu::call_rcu(move || {
                b.freed.store(true, Ordering::SeqCst);
                lock(&inner.graveyard).push(b);
            });
        }
    }
}

impl fmt::Debug for ShrinkerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShrinkerRegistry")
            .field("nr_nodes", &self.inner.nr_nodes)
            .field("len", &self.len())
            .finish()
    }
}

impl RegistryBuilder {
    fn new() -> Self {
        RegistryBuilder {
            nodes: None,
            max_shrinkers: 1 << 20,
        }
    }

    /// Override the node count (default: `/sys/devices/system/node/online`).
    #[must_use]
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = Some(n);
        self
    }

    /// At most this many shrinkers may exist (built or registered) at once
    /// (default 2^20).
    #[must_use]
    pub fn max_shrinkers(mut self, n: u32) -> Self {
        self.max_shrinkers = n;
        self
    }

    /// The registry.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoNodes`] for `nodes(0)`.
    ///
    /// # Blocking
    ///
    /// Reads `/sys/devices/system/node/online` unless [`nodes`](Self::nodes)
    /// was given.
    pub fn build(self) -> Result<ShrinkerRegistry, BuildError> {
        let nodes = match self.nodes {
            Some(0) => return Err(BuildError::NoNodes),
            Some(n) => n,
            None => topology::online_nodes(),
        };
        Ok(self.build_unchecked(nodes))
    }

    fn build_unchecked(self, nr_nodes: usize) -> ShrinkerRegistry {
        let (ids, id_alloc) = IdTable::new();
        ShrinkerRegistry {
            inner: Arc::new(RegistryCore {
                head: AtomicPtr::new(ptr::null_mut()),
                ids,
                groups: Groups::new(nr_nodes),
                gate: Gate::new(),
                state: Mutex::new(ListState {
                    tail: ptr::null_mut(),
                    len: 0,
                    ids: id_alloc,
                }),
                nr_nodes,
                max_shrinkers: self.max_shrinkers,
                #[cfg(loom)]
                graveyard: Mutex::new(Vec::new()),
            }),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
