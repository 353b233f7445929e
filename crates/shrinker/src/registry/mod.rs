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
//! 2. For each node, pin it: with a *light pin* (a store to this thread's
//!    own slot) while the registry's gate is open, with `try_get` while it is
//!    closed (registry/pin.rs). On failure (being registered or unregistered) read
//!    `next` and go on: still inside the section.
//! 3. Pinned: leave the read section. The callbacks may block.
//! 4. `do_shrink_slab` (engine/), with this thread marked "inside" the
//!    shrinker so that a callback that unregisters it panics instead of
//!    waiting for itself.
//! 5. Re-enter a read section, *then* unpin (clear the slot, or `put`): the
//!    pin kept the node linked, and from here the section keeps it (and the
//!    successor we are about to read) allocated. See registry/object.rs for the
//!    argument.
//! 6. Read `next` and continue at 2.
//!
//! Registration and unregistration serialize on the mutex among themselves
//! only: a walk takes no lock, never waits for them and is never refused
//! (the pre-6.7 `down_read_trylock` gave up whenever a registration held the
//! lock). Unregistration waits only for the pins of its own shrinker, and,
//! the first time after a quiet spell, for one grace period to close the
//! gate.
//!
//! # Pin choice: refcount under churn, light pins when quiet
//!
//! Linux 6.7 pins with the refcount: two locked read-modify-writes per
//! shrinker visited, which on this project's 2-CPU VM made a quiet walk over
//! 4,000 cheap shrinkers 3.6–4.3× the cost of the pre-6.7 rwlock walk (one
//! lock per *walk*). Only unregister ever reads the count, so while nobody
//! unregisters the walk takes light pins instead, and the first unregister
//! closes the gate (the kernel's `rcu_sync`, as in `percpu_rw_semaphore`):
//! registry/pin.rs has the protocol and the proof. Under register churn the gate
//! stays closed, so unregister waits for no grace period there, which is
//! what the SRCU design (stress-ng ramfs −88.8 %) got wrong.
//!
//! `PercpuRef` was the other candidate: it writes no shared line while live,
//! but its `kill` makes the count exact only after a grace period *per
//! shrinker*, and costs a cache-padded slot per thread per shrinker. A light
//! pin costs one slot per *thread*, and a grace period per quiet spell.

use std::fmt;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use shrinker_rcu::{read_lock, ReadGuard};

use crate::engine::DEF_PRIORITY;
use crate::error::{BuildError, ShrinkError};
use crate::groups::Groups;

use crate::group_id::GroupId;
use crate::info::{ShrinkerId, ShrinkerInfo};
use crate::lifetime::frames;
#[cfg(not(loom))]
use crate::lifetime::{free_after_grace_period, Urgency};
use crate::request::ShrinkRequest;
use crate::shrink::{Count, Scan};
use crate::sync::{fence, lock, AtomicPtr, Mutex, Ordering};
use crate::topology;
use ids::{IdAlloc, IdTable};
use object::ShrinkerObject;
use pin::{Gate, WalkerSlot};

mod handles;
pub(crate) mod ids;
pub(crate) mod object;
pub(crate) mod pin;

pub use handles::{Registered, Shrinker, ShrinkerBuilder};

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
    pub(crate) inner: Arc<Inner>,
}

/// Builds a [`ShrinkerRegistry`].
#[derive(Clone, Debug)]
pub struct RegistryBuilder {
    nodes: Option<usize>,
    max_shrinkers: u32,
}

pub(crate) struct Inner {
    /// First node of the list (null: empty).
    head: AtomicPtr<ShrinkerObject>,
    pub(crate) ids: IdTable,
    /// The memory-group tree and its `ShrinkerInfo`s (groups/).
    pub(crate) groups: Groups,
    /// Whether walks may take light pins (registry/pin.rs).
    pub(crate) gate: Arc<Gate>,
    pub(crate) state: Mutex<State>,
    pub(crate) nr_nodes: usize,
    pub(crate) max_shrinkers: u32,
    /// Under loom nodes are "freed" into here (see registry/object.rs `freed`). Boxed:
    /// a node must stay at its address for a late walker's check to read it.
    #[cfg(loom)]
    #[allow(clippy::vec_box)]
    pub(crate) graveyard: Mutex<Vec<Box<ShrinkerObject>>>,
}

/// What the registry mutex protects.
pub(crate) struct State {
    tail: *mut ShrinkerObject,
    len: usize,
    pub(crate) ids: IdAlloc,
}

// SAFETY: `tail` points to a node of this registry's list and is used only
// under the mutex; nodes are `Send + Sync`.
unsafe impl Send for State {}

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
        assert_not_in_read_section("ShrinkerRegistry::shrink");
        self.validate(req.node, req.priority)?;
        if req.group == GroupId::ROOT {
            Ok(self.shrink_global(req.node, req.priority))
        } else {
            self.shrink_group(req.group, req.node, req.priority)
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

    /// The walk: the numbered protocol in the module documentation, with a
    /// light pin instead of the refcount while the gate is open (registry/pin.rs).
    fn shrink_global(&self, nid: usize, priority: u8) -> usize {
        // `None` inside a nested walk or during thread teardown: refcount
        // pins only.
        pin::with_walker_slot(|slot| self.shrink_global_with(slot, nid, priority))
    }

    #[inline]
    fn shrink_global_with(&self, slot: Option<&WalkerSlot>, nid: usize, priority: u8) -> usize {
        let mut freed = 0usize;
        let gate = &*self.inner.gate;
        // 1.
        let mut guard = read_lock();
        // Acquire: pairs with the Release link stores in `link`/`unlink`.
        let mut p = self.inner.head.load(Ordering::Acquire);
        while !p.is_null() {
            // SAFETY: `p` was read (Acquire) from the head or from the `next`
            // of a node we stood on inside the current read section; nodes
            // are freed only after a grace period that began after their
            // unlink, so it is live until `guard` ends (module doc, registry/object.rs).
            let node = unsafe { &*p };
            #[cfg(loom)]
            assert!(
                !node.freed.load(Ordering::SeqCst),
                "walker reached a freed shrinker"
            );
            // 2. Pin: lightly if the gate is open (registry/pin.rs, walker steps 1-2),
            // else with the refcount. On failure (not registered yet, or
            // being unregistered) step over it, still inside the section.
            let Some(pin) = pin_for_callout(node, slot, gate) else {
                // Acquire: pairs with the Release link stores.
                p = node.next.load(Ordering::Acquire);
                continue;
            };
            // Warm the successor's line while the callbacks run: the walk is
            // a chain of dependent loads, and a list of thousands of shrinkers
            // does not fit in the L1/L2 cache. A prefetch never faults, and
            // the pointer is not used: `next` is read again at step 6.
            // Relaxed: a hint only.
            prefetch(node.next.load(Ordering::Relaxed));
            // 3. The pin keeps the node linked, hence allocated.
            drop(guard);
            // 4.
            let deferred = node.deferred.slot(node.effective_node(nid));
            let outcome =
                node.shrink_pinned(nid, GroupId::ROOT, priority, pin.is_light(), deferred);
            freed = freed.saturating_add(outcome.freed);
            // 5. Re-enter before unpinning.
            guard = read_lock();
            #[cfg(loom)]
            assert!(
                !node.freed.load(Ordering::SeqCst),
                "a pinned shrinker was freed"
            );
            pin.unpin(&guard);
            // 6. Acquire: pairs with the Release link stores.
            p = node.next.load(Ordering::Acquire);
            #[cfg(loom)]
            assert!(
                !node.freed.load(Ordering::SeqCst),
                "walker read `next` of a freed shrinker"
            );
        }
        drop(guard);
        freed
    }

    /// Pin the shrinker with `id`, run `f`, unpin (inside a read section).
    #[track_caller]
    fn with_pinned<R>(
        &self,
        id: ShrinkerId,
        f: impl FnOnce(&ShrinkerObject) -> R,
    ) -> Result<R, ShrinkError> {
        assert_not_in_read_section("a shrinker's count or scan by hand");
        let guard = read_lock();
        let p = self.inner.ids.lookup(id.0, &guard);
        // SAFETY: a non-null slot names a node that is not freed before a
        // grace period that begins after the slot is cleared (registry/ids.rs), so
        // it is live until `guard` ends.
        let Some(pin) = unsafe { p.as_ref() }.and_then(CalloutPin::try_ref) else {
            return Err(ShrinkError::NoSuchShrinker { id });
        };
        drop(guard);
        let r = f(pin.node());
        pin.unpin(&read_lock()); // inside a section: see registry/object.rs
        Ok(r)
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
        self.with_pinned(id, |n| n.count_pinned(node))
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
        self.with_pinned(id, |n| n.scan_pinned(node, nr))
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

    /// Free an unlinked node after a grace period (`call_rcu`).
    ///
    /// # Safety
    ///
    /// `node` is unlinked, its id slot cleared, its count zero; the caller
    /// owned it and gives it up.
    pub(crate) unsafe fn free_rcu(&self, node: NonNull<ShrinkerObject>) {
        // Lazy: nobody waits for this free (`Urgency::Lazy`).
        #[cfg(not(loom))]
        // SAFETY: an owned box (contract), unlinked with its id cleared, so
        // only readers inside read sections may still reach it.
        unsafe {
            free_after_grace_period(node.as_ptr(), Urgency::Lazy)
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

/// Refuse to run shrinker callbacks inside the caller's RCU read section
/// (the `Shrink` contract lets callbacks block and synchronize).
#[inline]
#[track_caller]
pub(crate) fn assert_not_in_read_section(what: &str) {
    if shrinker_rcu::in_read_section() {
        in_read_section_failed(what);
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn in_read_section_failed(what: &str) -> ! {
    panic!(
        "{what} called inside an RCU read-side section: the shrinkers' callbacks would run \
         inside it, and a callback that waits for a grace period (or for a lock held by a \
         thread that does) would wait for the caller's own section: deadlock; leave the read \
         section first"
    )
}

/// Ask the CPU to bring `p`'s cache line in (no effect where unsupported).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: `_mm_prefetch` is a hint: it never faults and has no effect
    // on memory, whatever the address (SSE is part of the x86_64 baseline).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}

/// A shrinker pinned across one callout (walker steps 2–5): a light pin in
/// this thread's walker slot, or a reference (`try_get` succeeded).
///
/// Released by [`unpin`](Self::unpin) inside the walker's read section.
/// Dropped without it, because a panic is unwinding through the walk (a
/// `tracing` subscriber, a panic payload, anything outside the caught
/// callback), it re-enters a read section and releases the pin there, so
/// that `unregister` never waits for a pin nobody will drop.
#[must_use = "dropping the pin releases it"]
pub(crate) struct CalloutPin<'a> {
    node: &'a ShrinkerObject,
    /// `Some`: a light pin in this slot; `None`: a reference.
    light: Option<&'a WalkerSlot>,
}

impl<'a> CalloutPin<'a> {
    /// Take a reference on `node` (`try_get`); `None` if it is not callable
    /// (not registered yet, or being unregistered). The caller is inside a
    /// read section in which `node` is live.
    #[inline]
    pub(crate) fn try_ref(node: &'a ShrinkerObject) -> Option<Self> {
        // `then`, not `then_some`: a pin built eagerly for a failed
        // `try_get` would be dropped, and its drop puts a reference.
        node.try_get().then(|| CalloutPin { node, light: None })
    }

    /// The pinned shrinker.
    #[inline]
    pub(crate) fn node(&self) -> &'a ShrinkerObject {
        self.node
    }

    /// Is this the thread's light pin (which already marks the thread as
    /// inside the shrinker)?
    #[inline]
    pub(crate) fn is_light(&self) -> bool {
        self.light.is_some()
    }

    /// Walker step 5: drop the pin inside the caller's read section
    /// (registry/object.rs: "Why every `put` happens inside a read section").
    #[inline]
    pub(crate) fn unpin(self, _guard: &ReadGuard) {
        self.release();
        std::mem::forget(self);
    }

    #[inline]
    fn release(&self) {
        match self.light {
            Some(s) => s.unpin(),
            None => self.node.put(),
        }
    }
}

impl Drop for CalloutPin<'_> {
    /// Only while unwinding (the walk's normal path consumes the pin with
    /// `unpin`): re-enter a read section first, as step 5 does.
    #[cold]
    fn drop(&mut self) {
        let _guard = read_lock();
        self.release();
    }
}

/// Walker step 2, shared by the global walk and the group walk: pin `node`
/// for a callout, lightly if `slot` is free and the gate is open (registry/pin.rs,
/// walker steps 1-2), else with `try_get`. `None`: the shrinker is not
/// callable (not registered yet, or being unregistered).
///
/// The caller is inside a read section in which `node` is live (found on
/// the list or in the id table).
#[inline]
pub(crate) fn pin_for_callout<'a>(
    node: &'a ShrinkerObject,
    slot: Option<&'a WalkerSlot>,
    gate: &Gate,
) -> Option<CalloutPin<'a>> {
    match slot {
        Some(s) if gate.is_open() => {
            s.pin(node);
            if node.refs.read() == 0 {
                // Not registered yet (or, with the gate open, already gone).
                s.unpin();
                return None;
            }
            // Acquire: pairs with `register`'s `set_release(1)`, as
            // `try_get`'s Acquire does.
            fence(Ordering::Acquire);
            Some(CalloutPin {
                node,
                light: Some(s),
            })
        }
        _ => CalloutPin::try_ref(node),
    }
}

/// Is the calling thread inside a callback of `node`? (For unregister.)
pub(crate) fn inside_callback_of(node: NonNull<ShrinkerObject>) -> bool {
    pin::holds_light_pin(node.as_ptr()) || frames::is_inside(node.as_ptr())
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
            inner: Arc::new(Inner {
                head: AtomicPtr::new(ptr::null_mut()),
                ids,
                groups: Groups::new(nr_nodes),
                gate: Gate::new(),
                state: Mutex::new(State {
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
mod tests {
    use super::*;
    use crate::{Count, Registered, Scan, Shrink, ShrinkControl, ShrinkerBuilder};
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::Mutex as StdMutex;

    /// A pool of `objects`; records the nodes it was asked about.
    #[derive(Default)]
    struct Pool {
        objects: AtomicUsize,
        nodes_seen: StdMutex<Vec<usize>>,
        panic_in: StdMutex<Option<&'static str>>,
    }

    impl Pool {
        fn with(n: usize) -> Self {
            let p = Pool::default();
            p.objects.store(n, Ordering::Relaxed);
            p
        }
    }

    impl Shrink for Pool {
        fn count(&self, sc: &ShrinkControl) -> Count {
            self.nodes_seen.lock().unwrap().push(sc.node());
            if *self.panic_in.lock().unwrap() == Some("count") {
                panic!("count exploded");
            }
            match self.objects.load(Ordering::Relaxed) {
                0 => Count::Empty,
                n => Count::Objects(n),
            }
        }
        fn scan(&self, sc: &mut ShrinkControl) -> Scan {
            if *self.panic_in.lock().unwrap() == Some("scan") {
                panic!("scan exploded");
            }
            let n = sc.nr_to_scan().min(self.objects.load(Ordering::Relaxed));
            self.objects.fetch_sub(n, Ordering::Relaxed);
            Scan::Freed(n)
        }
    }

    fn registry(nodes: usize) -> ShrinkerRegistry {
        ShrinkerRegistry::builder().nodes(nodes).build().unwrap()
    }

    fn hard(node: usize) -> ShrinkRequest {
        ShrinkRequest {
            node,
            priority: 0,
            ..Default::default()
        }
    }

    #[test]
    fn built_but_unregistered_is_invisible_and_drops_at_once() {
        let reg = registry(1);
        let s = ShrinkerBuilder::new("p")
            .build_in(&reg, Pool::with(1000))
            .unwrap();
        assert_eq!(reg.shrink(&hard(0)), Ok(0));
        assert!(reg.shrinkers().is_empty());
        assert!(reg.count(s.id(), 0).is_err());
        let id = s.id();
        assert_eq!(s.into_inner().objects.load(Ordering::Relaxed), 1000);
        // The id went back: the next shrinker gets it.
        let t = ShrinkerBuilder::new("q")
            .build_in(&reg, Pool::default())
            .unwrap();
        assert_eq!(t.id(), id);
    }

    /// A failed `try_ref` leaves the count alone (it once built the pin
    /// eagerly, with `then_some`, and the dropped pin put a reference that
    /// was never taken: the torture test then saw callbacks after
    /// unregister returned).
    #[test]
    fn failed_try_ref_puts_nothing() {
        let reg = registry(1);
        let s = ShrinkerBuilder::new("p")
            .build_in(&reg, Pool::with(10))
            .unwrap();
        let node = s.node();
        assert_eq!(node.refs.read(), 0, "built, not registered");
        {
            let _guard = read_lock();
            assert!(CalloutPin::try_ref(node).is_none());
        }
        assert_eq!(node.refs.read(), 0);
        let r = s.register();
        {
            let guard = read_lock();
            let pin = CalloutPin::try_ref(r.node()).expect("registered");
            assert_eq!(r.node().refs.read(), 2);
            pin.unpin(&guard);
        }
        assert_eq!(r.node().refs.read(), 1);
    }

    #[test]
    fn register_walk_unregister() {
        let reg = registry(1);
        let a = ShrinkerBuilder::new("a")
            .build_in(&reg, Pool::with(1000))
            .unwrap()
            .register();
        let b = ShrinkerBuilder::new("b")
            .seeks(0)
            .build_in(&reg, Pool::with(1000))
            .unwrap()
            .register();
        assert_eq!(reg.len(), 2);
        // Priority 12: a asks for 0, b (seeks 0) for 500 → 384 (3 batches).
        assert_eq!(reg.shrink(&ShrinkRequest::default()), Ok(384));
        assert_eq!(b.objects.load(Ordering::Relaxed), 616);
        assert_eq!(b.stats().deferred, 116);
        let names: Vec<String> = reg.shrinkers().iter().map(|i| i.to_string()).collect();
        assert_eq!(names, ["a-0", "b-1"]);
        let pool_a = a.unregister();
        assert_eq!(pool_a.objects.load(Ordering::Relaxed), 1000);
        assert_eq!(reg.len(), 1);
        drop(b);
        assert!(reg.is_empty());
        assert_eq!(reg.shrink(&hard(0)), Ok(0));
    }

    #[test]
    fn unlink_head_middle_tail_keeps_order() {
        let reg = registry(1);
        let mut v: Vec<Option<Registered<Pool>>> = (0..5)
            .map(|i| {
                Some(
                    ShrinkerBuilder::new(format!("s{i}"))
                        .build_in(&reg, Pool::default())
                        .unwrap()
                        .register(),
                )
            })
            .collect();
        for i in [4, 0, 2] {
            v[i].take();
        }
        let names: Vec<String> = reg.shrinkers().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["s1", "s3"]);
        // The tail moved back: a new one lands after s3.
        let s5 = ShrinkerBuilder::new("s5")
            .build_in(&reg, Pool::default())
            .unwrap()
            .register();
        let names: Vec<String> = reg.shrinkers().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["s1", "s3", "s5"]);
        // Lowest free id first.
        assert_eq!(s5.id().index(), 0);
        drop(v);
        drop(s5);
        assert!(reg.is_empty());
    }

    #[test]
    fn invalid_requests_are_typed_errors() {
        let reg = registry(2);
        assert_eq!(
            reg.shrink(&ShrinkRequest {
                priority: 13,
                ..Default::default()
            }),
            Err(ShrinkError::InvalidPriority { priority: 13 })
        );
        assert_eq!(
            reg.shrink(&hard(2)),
            Err(ShrinkError::InvalidNode {
                node: 2,
                nr_nodes: 2
            })
        );
        assert!(matches!(
            reg.count(ShrinkerId(7), 5),
            Err(ShrinkError::InvalidNode { .. })
        ));
        assert_eq!(
            reg.scan(ShrinkerId(7), 0, 1),
            Err(ShrinkError::NoSuchShrinker { id: ShrinkerId(7) })
        );
        assert!(matches!(
            ShrinkerBuilder::new("").build_in(&reg, Pool::default()),
            Err(BuildError::EmptyName)
        ));
        assert_eq!(
            ShrinkerRegistry::builder().nodes(0).build().err(),
            Some(BuildError::NoNodes)
        );
    }

    #[test]
    fn registry_full_is_a_typed_error() {
        let reg = ShrinkerRegistry::builder()
            .nodes(1)
            .max_shrinkers(2)
            .build()
            .unwrap();
        let a = ShrinkerBuilder::new("a")
            .build_in(&reg, Pool::default())
            .unwrap();
        let _b = ShrinkerBuilder::new("b")
            .build_in(&reg, Pool::default())
            .unwrap();
        assert!(matches!(
            ShrinkerBuilder::new("c").build_in(&reg, Pool::default()),
            Err(BuildError::TooManyShrinkers { max: 2 })
        ));
        drop(a);
        assert!(ShrinkerBuilder::new("c")
            .build_in(&reg, Pool::default())
            .is_ok());
    }

    #[test]
    fn numa_aware_gets_its_node_others_node_0() {
        let reg = registry(3);
        let numa = ShrinkerBuilder::new("numa")
            .numa_aware(true)
            .build_in(&reg, Pool::with(100))
            .unwrap()
            .register();
        let flat = ShrinkerBuilder::new("flat")
            .build_in(&reg, Pool::with(100))
            .unwrap()
            .register();
        // Priority 2: delta 50 < 100 and < 128 → all deferred, per node.
        for node in 0..3 {
            let req = ShrinkRequest {
                node,
                priority: 2,
                ..Default::default()
            };
            assert_eq!(reg.shrink(&req), Ok(0));
        }
        assert_eq!(*numa.nodes_seen.lock().unwrap(), [0, 1, 2]);
        assert_eq!(*flat.nodes_seen.lock().unwrap(), [0, 0, 0]);
        // numa: 50 on each of 3 nodes; flat: one count, 50 + 50 + 50 = 150
        // (each pass adds delta 50; nr >> 2 stays below a batch).
        assert_eq!(numa.stats().deferred, 150);
        assert_eq!(flat.stats().deferred, 150);
        let info = reg.shrinkers();
        assert!(info[0].flags.numa_aware && !info[1].flags.numa_aware);
        // By hand: a non-NUMA shrinker is told node 0.
        let _ = reg.count(flat.id(), 2).unwrap();
        assert_eq!(flat.nodes_seen.lock().unwrap().last(), Some(&0));
        let _ = reg.count(numa.id(), 2).unwrap();
        assert_eq!(numa.nodes_seen.lock().unwrap().last(), Some(&2));
    }

    #[test]
    fn by_hand_count_and_scan_with_stats() {
        let reg = registry(1);
        let s = ShrinkerBuilder::new("hand")
            .group_aware(true)
            .build_in(&reg, Pool::with(50))
            .unwrap()
            .register();
        assert_eq!(reg.count(s.id(), 0), Ok(Count::Objects(50)));
        assert_eq!(reg.scan(s.id(), 0, 20), Ok(Scan::Freed(20)));
        assert_eq!(reg.count(s.id(), 0), Ok(Count::Objects(30)));
        let st = s.stats();
        assert_eq!((st.count_calls, st.scan_calls), (2, 1));
        assert_eq!((st.scanned, st.freed, st.panics), (20, 20, 0));
        let info = &reg.shrinkers()[0];
        assert!(info.flags.group_aware && info.live);
        assert_eq!((info.seeks, info.batch), (2, 128));
    }

    #[test]
    fn panicking_callbacks_are_caught_counted_and_walk_continues() {
        let reg = registry(1);
        let bad_count = ShrinkerBuilder::new("bad-count")
            .build_in(&reg, Pool::with(1000))
            .unwrap()
            .register();
        *bad_count.panic_in.lock().unwrap() = Some("count");
        let bad_scan = ShrinkerBuilder::new("bad-scan")
            .build_in(&reg, Pool::with(1000))
            .unwrap()
            .register();
        *bad_scan.panic_in.lock().unwrap() = Some("scan");
        let good = ShrinkerBuilder::new("good")
            .build_in(&reg, Pool::with(1000))
            .unwrap()
            .register();
        // Silence the default hook's messages for the expected panics.
        let freed = reg.shrink(&hard(0)).unwrap();
        assert_eq!(freed, 1000, "the walk reached the good shrinker");
        assert_eq!(bad_count.stats().panics, 1);
        assert_eq!(bad_scan.stats().panics, 1);
        // A scan panic is a Stop: the work is deferred (2000 capped at 2000).
        assert_eq!(bad_scan.stats().deferred, 2000);
        // The references were put: unregister does not hang.
        drop((bad_count, bad_scan, good));
        assert!(reg.is_empty());
    }

    /// Unregisters the shrinker whose handle it finds in `slot` from inside
    /// its own scan.
    struct SelfUnregister {
        slot: std::sync::Arc<StdMutex<Option<Registered<SelfUnregister>>>>,
        tried: AtomicBool,
    }

    impl Shrink for SelfUnregister {
        fn count(&self, _: &ShrinkControl) -> Count {
            Count::Objects(1000)
        }
        fn scan(&self, _: &mut ShrinkControl) -> Scan {
            if !self.tried.swap(true, Ordering::Relaxed) {
                if let Some(me) = self.slot.lock().unwrap().take() {
                    // Panics naming the misuse; the walk catches it.
                    let _ = me.unregister();
                }
            }
            Scan::Stop
        }
    }

    #[test]
    fn unregister_from_own_callback_panics_naming_the_misuse() {
        let reg = registry(1);
        let slot = std::sync::Arc::new(StdMutex::new(None));
        let s = ShrinkerBuilder::new("selfish")
            .build_in(
                &reg,
                SelfUnregister {
                    slot: slot.clone(),
                    tried: AtomicBool::new(false),
                },
            )
            .unwrap()
            .register();
        let id = s.id();
        *slot.lock().unwrap() = Some(s);
        let _ = reg.shrink(&hard(0)).unwrap();
        let info = reg.shrinkers();
        assert_eq!(info.len(), 1, "the misuse left it registered");
        assert_eq!(info[0].stats.panics, 1);
        assert!(info[0].live);
        // The walk put its reference; the shrinker is still callable.
        assert_eq!(reg.count(id, 0), Ok(Count::Objects(1000)));
        // (The handle was consumed by the failed unregister: the shrinker
        // stays registered for the life of the registry, the price of not
        // deadlocking.)
    }

    #[test]
    #[should_panic(expected = "inside an RCU read-side section")]
    fn unregister_inside_read_section_panics() {
        let reg = registry(1);
        let s = ShrinkerBuilder::new("p")
            .build_in(&reg, Pool::default())
            .unwrap()
            .register();
        let _g = read_lock();
        drop(s);
    }

    #[test]
    fn id_table_grows_and_lookups_follow() {
        let reg = registry(1);
        let n = if cfg!(miri) { 70 } else { 300 };
        let v: Vec<_> = (0..n)
            .map(|i| {
                ShrinkerBuilder::new(format!("s{i}"))
                    .build_in(&reg, Pool::with(i + 1))
                    .unwrap()
                    .register()
            })
            .collect();
        for s in &v {
            let want = s.objects.load(Ordering::Relaxed);
            assert_eq!(reg.count(s.id(), 0), Ok(Count::Objects(want)));
        }
        drop(v);
        assert!(reg.is_empty());
    }

    /// Blocks in `count` until told to go, reporting whether the walk that
    /// called it holds a light pin (the refcount stays 1) or a refcount pin.
    struct Blocker {
        entered: StdMutex<std::sync::mpsc::Sender<i32>>,
        go: StdMutex<std::sync::mpsc::Receiver<()>>,
        node: std::sync::atomic::AtomicPtr<ShrinkerObject>,
    }

    impl Shrink for Blocker {
        fn count(&self, _: &ShrinkControl) -> Count {
            // SAFETY: the node is pinned by the walk calling us.
            let rc = unsafe { &*self.node.load(Ordering::Relaxed) }.refs.read();
            self.entered.lock().unwrap().send(rc).unwrap();
            self.go.lock().unwrap().recv().unwrap();
            Count::Objects(0)
        }
        fn scan(&self, _: &mut ShrinkControl) -> Scan {
            Scan::Stop
        }
    }

    fn blocked_walk_then_unregister(close_gate_first: bool) {
        let reg = registry(1);
        let hold = if close_gate_first {
            drop(
                ShrinkerBuilder::new("closer")
                    .build_in(&reg, Pool::default())
                    .unwrap()
                    .register(),
            );
            assert!(!reg.inner.gate.open_now(), "an unregister closes the gate");
            // Keep it closed for the test, as an unregister in progress
            // would: otherwise the reopening callback, armed by the
            // unregister above, may run (a grace period later, sooner on a
            // busy machine) before the walk below pins, and the walk would
            // take a light pin (the assertion below then failed, and the
            // scope hung waiting for the blocked walker).
            Some(reg.inner.gate.enter())
        } else {
            assert!(reg.inner.gate.open_now(), "a new registry's gate is open");
            None
        };
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        let s = ShrinkerBuilder::new("blocker")
            .build_in(
                &reg,
                Blocker {
                    entered: StdMutex::new(entered_tx),
                    go: StdMutex::new(go_rx),
                    node: std::sync::atomic::AtomicPtr::new(ptr::null_mut()),
                },
            )
            .unwrap()
            .register();
        s.node
            .store(reg.inner.head.load(Ordering::Acquire), Ordering::Relaxed);
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| reg.shrink(&hard(0)).unwrap());
            let rc = entered.recv().unwrap();
            // Light pin: the count stays at the initial reference.
            assert_eq!(rc, if close_gate_first { 2 } else { 1 });
            scope.spawn(|| {
                drop(s.unregister());
                done.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(
                !done.load(Ordering::SeqCst),
                "unregister returned while a walk was inside the callback"
            );
            go.send(()).unwrap();
        });
        assert!(done.load(Ordering::SeqCst));
        assert!(reg.is_empty());
        drop(hold);
    }

    #[test]
    fn unregister_waits_for_a_light_pinned_callout() {
        blocked_walk_then_unregister(false);
    }

    #[test]
    fn unregister_waits_for_a_refcount_pinned_callout() {
        blocked_walk_then_unregister(true);
    }

    #[test]
    fn gate_reopens_a_grace_period_after_the_last_unregister() {
        let reg = registry(1);
        let a = ShrinkerBuilder::new("a")
            .build_in(&reg, Pool::with(10))
            .unwrap()
            .register();
        assert!(reg.inner.gate.open_now());
        drop(a);
        assert!(!reg.inner.gate.open_now());
        // The reopening is a `call_rcu` callback; `rcu_barrier` waits for it.
        shrinker_rcu::rcu_barrier();
        assert!(reg.inner.gate.open_now());
        // Walks take light pins again and still shrink.
        let b = ShrinkerBuilder::new("b")
            .build_in(&reg, Pool::with(1000))
            .unwrap()
            .register();
        assert!(reg.shrink(&hard(0)).unwrap() > 0);
        drop(b);
    }
}
