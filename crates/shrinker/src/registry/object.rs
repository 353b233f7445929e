//! The shrinker object the registry links, pins and frees (`struct shrinker`),
//! and its pin: `try_get` / `put` on a [`LiveRef`] with the completion (the
//! "inside shrinker X" marker is a `lifetime::frames` frame), and the
//! callback wrapper that catches panics and keeps statistics.
//!
//! # States (Linux 6.7's, with the completion of `shrinker_free`)
//!
//! | state | entered by | `refs` | on the list | walkers may call it |
//! |---|---|---|---|---|
//! | built | `ShrinkerBuilder::build` | 0 | no | no |
//! | registered | `Shrinker::register`: link under the mutex, **then** `activate` (count 1, Release) | 1 + pins | yes | yes (`try_get` succeeds) |
//! | draining | `unregister` step 2: mark `dying`, put the initial reference, wait on `done` | → 0 | yes | no (`try_get` fails for good; pins in flight finish) |
//! | unlinked | step 3, under the mutex: unlink (keeping `next`), clear the id slot | 0 | no; walkers standing on it go on through `next` | no |
//! | freed | step 4: `call_rcu` (`defer_drop`) frees the node after a grace period | — | — | — |
//!
//! A built shrinker that is never registered is freed at once: nobody else
//! ever saw it.
//!
//! # Why a walker may leave the read section while pinned
//!
//! The pin (a reference) keeps the node *linked*: unregister unlinks only
//! after the count reached zero, which needs the walker's `put`. The walker
//! re-enters a read section *before* `put`, so the node's grace period, which
//! starts after the unlink, which comes after the `put`, cannot end before
//! that section does: `next` is read from live memory. The successor read
//! from `next` is either still linked (so not freed) or was unlinked; if its
//! unlink was visible to nobody when our section began, its grace period
//! waits for us, and if its grace period ended before our section began, RCU
//! guarantees that we see the unlinking store, so `next` no longer names it.
//! That is the kernel's "`*MUST*` reacquire the RCU lock before calling
//! `shrinker_put()`" comment, spelled out.
//!
//! # Why every `put` happens inside a read section
//!
//! The `put` that drops the count to zero then calls `done.complete()`. The
//! unregistering thread wakes from `done.wait()`, unlinks and frees the node
//! with `call_rcu`; the completer may still be inside `complete()` (the
//! mutex unlock and wake-up touch the node's memory). Because the completer
//! is in a read section, the free's grace period waits for it to leave
//! `complete()` and the section.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use shrinker_sync::Completion;

use super::call_counts;
use crate::engine::NrDeferred;
use crate::engine::{self, Callee, Outcome};
use crate::group_id::GroupId;
use crate::info::{ShrinkerFlags, ShrinkerId, ShrinkerStats};
use crate::lifetime::frames::{self, Frame, Mark};
use crate::lifetime::LiveRef;
#[cfg(not(loom))]
use crate::lifetime::Recycler;
use crate::shrink::{Count, Scan, Shrink, ShrinkControl};
use crate::sync::{AtomicPtr, AtomicUsize, Ordering};
use crate::Freed;

/// Per-shrinker statistics of the scan path: plain counters, always on.
///
/// They are std atomics even under loom (they take no part in any protocol,
/// and modelling them would only multiply loom's interleavings) and every
/// access is `Relaxed`: each counter is read alone, as a snapshot, and
/// nothing is published through it. A reader may see `scan_calls` of one
/// moment and `freed` of another; the debugfs files have the same property.
///
/// `count_calls`, bumped on every visit, is not here: it is counted per
/// thread (registry/call_counts.rs), so that a visit writes nothing another
/// walker reads.
#[derive(Default)]
pub(crate) struct CallStats {
    pub(crate) scan_calls: AtomicU64,
    pub(crate) scanned: AtomicU64,
    pub(crate) freed: AtomicU64,
    pub(crate) scan_ns: AtomicU64,
    pub(crate) panics: AtomicU64,
}

/// One shrinker (`struct shrinker`). Fields a walk touches on every visit
/// come first and share one cache line: the pin, the links, the callbacks,
/// the call counter's slot and node 0's deferred count.
///
/// # Invariants
///
/// * `shrink` points to the `Box<S>` the shrinker was built with. It is
///   dereferenced only by a thread that holds a reference (`try_get`
///   succeeded and `put` has not run), or by the owner after `done.wait()`
///   returned (no reference can be taken again), who takes the box back.
///   The node's `Drop` never touches it.
/// * `next` and `prev` change only under the registry mutex; `next` is kept
///   when the node is unlinked.
/// * The node is freed only after a grace period that began after it was
///   unlinked and its id slot cleared, or, never registered, by its owner.
#[repr(C, align(64))]
pub(crate) struct ShrinkerObject {
    /// The pin ([`LiveRef`]): 0 = not (or no longer) callable; 1 + pins
    /// while registered; marked dying by unregister before it drops the
    /// initial reference.
    pub(crate) refs: LiveRef,
    pub(crate) batch: usize,
    /// The successor on the registry list (null: last).
    pub(crate) next: AtomicPtr<ShrinkerObject>,
    shrink: NonNull<dyn Shrink>,
    /// This object's slot in the per-thread `count` call counters
    /// (registry/call_counts.rs); given back when the object is dropped.
    calls_slot: u32,
    pub(crate) seeks: u32,
    /// Read on every visit (`effective_node`, the group walk's filter).
    pub(crate) flags: ShrinkerFlags,
    /// ShrinkerObject 0's count is the first word, still in the first cache line
    /// (test `hot_fields_share_the_first_cache_line`).
    pub(crate) deferred: NrDeferred,
    pub(crate) stats: CallStats,
    /// The predecessor on the list, for an O(1) unlink (registry mutex).
    prev: UnsafeCell<*mut ShrinkerObject>,
    /// Completed by the `put` that drops `refs` to zero.
    pub(crate) done: Completion,
    pub(crate) id: ShrinkerId,
    pub(crate) name: Box<str>,
    /// Declared bytes per object (`ShrinkerBuilder::object_bytes`); 0:
    /// unknown.
    object_bytes: usize,
    /// Under loom the node is not deallocated but marked, so that a walker
    /// touching it after its "free" fails the model.
    #[cfg(loom)]
    pub(crate) freed: crate::sync::AtomicBool,
}

// SAFETY: the node owns a `Box<dyn Shrink>` (`Send + Sync`) through `shrink`;
// `prev` is only accessed under the registry mutex; everything else is
// atomic, immutable after build, or itself `Send + Sync`.
unsafe impl Send for ShrinkerObject {}
// SAFETY: as above; shared access to `shrink` is `&dyn Shrink`, which is
// `Sync`.
unsafe impl Sync for ShrinkerObject {}

impl Drop for ShrinkerObject {
    fn drop(&mut self) {
        // Freed, so no thread holds a pin and none can bump the slot any
        // more (registry/call_counts.rs).
        call_counts::release(self.calls_slot);
    }
}

/// Freed shrinker objects kept for the next registration (lifetime/recycle.rs):
/// at most 1,024 of 192 bytes (192 KiB), enough for the objects one
/// `batch_delay` of register churn frees.
#[cfg(not(loom))]
static RECYCLED: Recycler<ShrinkerObject> = Recycler::new(1024);

impl ShrinkerObject {
    /// `Box::new(self)`, on a recycled allocation when one is cached.
    pub(crate) fn boxed(self) -> Box<ShrinkerObject> {
        #[cfg(not(loom))]
        return RECYCLED.boxed(self);
        #[cfg(loom)]
        return Box::new(self);
    }

    /// Drop a freed object and keep its memory for [`boxed`](Self::boxed):
    /// the free that `free_rcu` runs after the grace period.
    ///
    /// # Safety
    ///
    /// `p` came from `Box::into_raw` of a `Box<ShrinkerObject>`; no reader
    /// remains and nothing else frees it.
    #[cfg(not(loom))]
    pub(crate) unsafe fn recycle(p: *mut ShrinkerObject) {
        // SAFETY: forwarded contract; `Box::into_raw` is never null.
        unsafe { RECYCLED.recycle(NonNull::new_unchecked(p)) }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shrink: NonNull<dyn Shrink>,
        id: ShrinkerId,
        name: Box<str>,
        flags: ShrinkerFlags,
        seeks: u32,
        batch: usize,
        object_bytes: usize,
        deferred: NrDeferred,
    ) -> Self {
        ShrinkerObject {
            refs: LiveRef::new(0),
            batch,
            next: AtomicPtr::new(ptr::null_mut()),
            shrink,
            calls_slot: call_counts::alloc(),
            seeks,
            flags,
            deferred,
            stats: CallStats::default(),
            prev: UnsafeCell::new(ptr::null_mut()),
            done: Completion::new(),
            id,
            name,
            object_bytes,
            #[cfg(loom)]
            freed: crate::sync::AtomicBool::new(false),
        }
    }

    /// The type-erased state pointer, for its owner to take back.
    pub(crate) fn shrink_ptr(&self) -> NonNull<dyn Shrink> {
        self.shrink
    }

    /// The list predecessor.
    ///
    /// # Safety
    ///
    /// The caller holds the registry mutex.
    pub(crate) unsafe fn prev(&self) -> *mut ShrinkerObject {
        // SAFETY: the mutex serialises every access to `prev` (contract).
        unsafe { *self.prev.get() }
    }

    /// Set the list predecessor.
    ///
    /// # Safety
    ///
    /// The caller holds the registry mutex.
    pub(crate) unsafe fn set_prev(&self, p: *mut ShrinkerObject) {
        // SAFETY: the mutex serialises every access to `prev` (contract).
        unsafe { *self.prev.get() = p }
    }

    /// Pin the shrinker if it is registered and unregistration has not
    /// begun (`shrinker_try_get`, refusing a dying shrinker as
    /// `percpu_ref_tryget_live` refuses a killed ref: [`LiveRef::try_get`]
    /// has the ordering argument). The caller is inside an RCU read section
    /// (a refused pin is put again, which may complete `done`: see `put`).
    ///
    /// # Ordering
    ///
    /// Acquire on success: pairs with the Release `activate` in
    /// `register`, so the fields written at build and register are visible.
    #[inline]
    #[must_use = "a successful try_get must be balanced by put"]
    pub(crate) fn try_get(&self) -> bool {
        self.refs.try_get(&self.done)
    }

    /// Drop a pin (`shrinker_put`): the last one completes `done`. The
    /// caller must be inside an RCU read section (module doc).
    ///
    /// # Ordering
    ///
    /// Release (Acquire on the last): every access this pin made to the
    /// shrinker happens-before the completion the owner waits for.
    #[inline]
    pub(crate) fn put(&self) {
        self.refs.put(&self.done);
    }

    /// Count one `count` call, in the calling thread's own counter
    /// (registry/call_counts.rs: exact, and no write to a line another
    /// walker reads). The caller holds a pin.
    #[inline]
    fn count_calls_bump(&self) {
        call_counts::bump(self.calls_slot);
    }

    /// Statistics snapshot; `deferred` is the sum over nodes.
    pub(crate) fn stats_snapshot(&self) -> ShrinkerStats {
        let s = &self.stats;
        // Relaxed everywhere: see `CallStats`.
        ShrinkerStats {
            count_calls: call_counts::read(self.calls_slot),
            scan_calls: s.scan_calls.load(Ordering::Relaxed),
            scanned: s.scanned.load(Ordering::Relaxed),
            freed: s.freed.load(Ordering::Relaxed),
            // Saturating: per-node counts near `usize::MAX` must not wrap
            // (release) or panic (debug) when summed.
            deferred: self.deferred.iter().fold(0u64, |sum, d| {
                sum.saturating_add(d.load(Ordering::Relaxed) as u64)
            }),
            scan_time: std::time::Duration::from_nanos(s.scan_ns.load(Ordering::Relaxed)),
            panics: s.panics.load(Ordering::Relaxed),
        }
    }

    /// The node index a request for `node` uses: its own for a NUMA-aware
    /// shrinker, 0 otherwise (`do_shrink_slab`: `if (!(shrinker->flags &
    /// SHRINKER_NUMA_AWARE)) nid = 0;`).
    #[inline]
    pub(crate) fn effective_node(&self, node: usize) -> usize {
        if self.flags.numa_aware {
            node
        } else {
            0
        }
    }

    /// `do_shrink_slab` on this shrinker for (`group`, `node`). The caller
    /// holds a pin; `light` says it is this thread's light pin (registry/pin.rs),
    /// which already marks the thread as inside this shrinker, so no frame
    /// is pushed. `deferred` is the counter of (group, node): the
    /// shrinker's own [`NrDeferred::slot`] for the root group, the group's
    /// `ShrinkerInfo` unit entry otherwise (groups/mod.rs).
    ///
    /// Always inlined, and free of closures: it is the body of every
    /// visit, and once both walks (global and group) called it the compiler
    /// stopped inlining it and built the closure on the stack, which cost
    /// the global walk 32 instructions and 12 stores per visit (callgrind).
    /// The refcount path marks the thread as inside the shrinker with a
    /// frame declared here, conditionally ([`Mark`]).
    #[inline(always)]
    pub(crate) fn shrink_pinned(
        &self,
        node: usize,
        group: GroupId,
        priority: u8,
        light: bool,
        deferred: &AtomicUsize,
        freed: &mut Freed,
    ) -> Outcome {
        let mut sc = ShrinkControl::new(self.effective_node(node), group);
        self.shrink_with(&mut sc, priority, light, deferred, freed)
    }

    /// [`shrink_pinned`](Self::shrink_pinned) with the caller's control,
    /// already pointed at [`effective_node`](Self::effective_node) and the
    /// group, with nothing to scan; it is left so.
    #[inline(always)]
    pub(crate) fn shrink_with(
        &self,
        sc: &mut ShrinkControl,
        priority: u8,
        light: bool,
        deferred: &AtomicUsize,
        freed: &mut Freed,
    ) -> Outcome {
        let frame;
        let _mark = if light {
            None
        } else {
            frame = Frame::new(self);
            Some(Mark::enter(&frame))
        };
        engine::do_shrink_slab(
            &mut Visiting {
                caller: Caller { node: self },
                freed,
            },
            sc,
            u32::from(priority),
            deferred,
        )
    }

    /// Settle a visit that scanned (the engine's [`Callee::settle`]): add
    /// it to the shrinker's statistics and say what it freed.
    ///
    /// Out of line and cold, taking the three figures it needs in
    /// registers: a gentle walk's visits scan nothing, and the walk's loop
    /// then neither stores an outcome nor keeps one live across its
    /// callouts.
    #[cold]
    #[inline(never)]
    fn settle(&self, scanned: usize, freed: usize, freed_bytes: usize) -> Freed {
        // Relaxed: see `CallStats`.
        self.stats
            .scanned
            .fetch_add(scanned as u64, Ordering::Relaxed);
        self.stats.freed.fetch_add(freed as u64, Ordering::Relaxed);
        let objects = freed as u64;
        let (bytes, unsized_objects) = if freed_bytes > 0 {
            (freed_bytes as u64, 0)
        } else if self.object_bytes > 0 {
            (objects.saturating_mul(self.object_bytes as u64), 0)
        } else {
            (0, objects)
        };
        Freed {
            objects,
            bytes,
            unsized_objects,
            scanned: scanned as u64,
        }
    }

    /// One `count` by hand (debugfs `count`). The caller holds a pin.
    pub(crate) fn count_pinned(&self, group: GroupId, node: usize) -> Count {
        let sc = ShrinkControl::new(self.effective_node(node), group);
        frames::with_frame(self, || Caller { node: self }.count(&sc))
    }

    /// One `scan` of `nr` objects by hand (debugfs `scan`). The caller holds
    /// a pin.
    pub(crate) fn scan_pinned(&self, group: GroupId, node: usize, nr: usize) -> Scan {
        let mut sc = ShrinkControl::new(self.effective_node(node), group);
        sc.prepare_scan(nr);
        let r = frames::with_frame(self, || Caller { node: self }.scan(&mut sc));
        // Relaxed: see `CallStats`.
        self.stats
            .scanned
            .fetch_add(sc.nr_scanned() as u64, Ordering::Relaxed);
        if let Scan::Freed(n) = r {
            self.stats.freed.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    /// The bytes the shrinker's objects hold, by hand (introspection): its
    /// own figure ([`Shrink::held_bytes`]), else its objects on every node
    /// times the declared size, else unknown. The caller holds a pin.
    pub(crate) fn held_bytes_pinned(&self, nr_nodes: usize) -> Option<u64> {
        let own = frames::with_frame(self, || {
            let caller = Caller { node: self };
            let shrink = caller.shrink();
            catch_unwind(AssertUnwindSafe(|| shrink.held_bytes())).unwrap_or_else(|payload| {
                self.report_panic("held_bytes", payload);
                None
            })
        });
        own.or_else(|| {
            (self.object_bytes > 0).then(|| {
                let nodes = if self.flags.numa_aware { nr_nodes } else { 1 };
                (0..nodes)
                    .map(|n| match self.count_pinned(GroupId::ROOT, n) {
                        Count::Objects(k) => k as u64,
                        Count::Empty => 0,
                    })
                    .fold(0u64, u64::saturating_add)
                    .saturating_mul(self.object_bytes as u64)
            })
        })
    }

    /// The declared bytes per object (`ShrinkerBuilder::object_bytes`).
    pub(crate) fn object_bytes(&self) -> Option<usize> {
        (self.object_bytes > 0).then_some(self.object_bytes)
    }

    /// Count and report a callback's panic, then drop its payload, which
    /// is the user's value too: a payload whose `Drop` panics is contained
    /// the same way (and a second payload from that drop is leaked rather
    /// than risk a third).
    #[cold]
    #[inline(never)]
    fn report_panic(&self, what: &str, payload: Box<dyn std::any::Any + Send>) {
        // Relaxed: see `CallStats`.
        self.stats.panics.fetch_add(1, Ordering::Relaxed);
        let msg = panic_message(&*payload);
        tracing::error!(
            target: "shrinker",
            shrinker = %format_args!("{}-{}", self.name, self.id.index()),
            "{what} callback panicked (caught; reclaim continues): {msg}"
        );
        drop_payload(payload);
    }
}

/// The message of a panic payload, for reports.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<non-string panic payload>")
}

/// Drop a caught panic payload, containing a panic from its `Drop`.
#[cold]
pub(crate) fn drop_payload(payload: Box<dyn std::any::Any + Send>) {
    if let Err(second) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        tracing::error!(
            target: "shrinker",
            "a panic payload's drop panicked (caught; its own payload is leaked)"
        );
        std::mem::forget(second);
    }
}

/// The engine's view of a pinned node's callbacks: panics caught, statistics
/// kept.
struct Caller<'a> {
    node: &'a ShrinkerObject,
}

impl Caller<'_> {
    #[inline]
    fn shrink(&self) -> &dyn Shrink {
        // SAFETY: the caller holds a pin (`shrink_pinned` & co. say so), so
        // the owner has not taken the box back (type invariant).
        unsafe { self.node.shrink.as_ref() }
    }
}

impl Caller<'_> {
    #[inline]
    fn count(&mut self, sc: &ShrinkControl) -> Count {
        self.node.count_calls_bump();
        let shrink = self.shrink();
        match catch_unwind(AssertUnwindSafe(|| shrink.count(sc))) {
            Ok(c) => c,
            Err(payload) => {
                self.node.report_panic("count", payload);
                Count::Objects(0)
            }
        }
    }

    fn scan(&mut self, sc: &mut ShrinkControl) -> Scan {
        // Relaxed: see `CallStats`.
        self.node.stats.scan_calls.fetch_add(1, Ordering::Relaxed);
        let shrink = self.shrink();
        let start = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| shrink.scan(sc)));
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.node.stats.scan_ns.fetch_add(ns, Ordering::Relaxed);
        match r {
            Ok(s) => s,
            Err(payload) => {
                self.node.report_panic("scan", payload);
                sc.set_nr_scanned(0);
                Scan::Stop
            }
        }
    }
}

/// A walk's visit as the engine sees it: the callbacks through [`Caller`],
/// and what the visit freed added to the walk's total.
struct Visiting<'a> {
    caller: Caller<'a>,
    freed: &'a mut Freed,
}

impl Callee for Visiting<'_> {
    #[inline]
    fn count(&mut self, sc: &ShrinkControl) -> Count {
        self.caller.count(sc)
    }

    #[inline]
    fn scan(&mut self, sc: &mut ShrinkControl) -> Scan {
        self.caller.scan(sc)
    }

    #[inline]
    fn shape(&self) -> (u32, usize) {
        (self.caller.node.seeks, self.caller.node.batch)
    }

    #[inline]
    fn settle(&mut self, o: &Outcome) {
        let f = self.caller.node.settle(o.scanned, o.freed, o.freed_bytes);
        *self.freed = self.freed.saturating_add(f);
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn hot_fields_share_the_first_cache_line() {
        // Every field a walk touches on each visit ends within the first
        // 64 bytes (node 0's deferred count is `NrDeferred`'s first word).
        let ends = [
            offset_of!(ShrinkerObject, refs) + size_of::<LiveRef>(),
            offset_of!(ShrinkerObject, seeks) + size_of::<u32>(),
            offset_of!(ShrinkerObject, batch) + size_of::<usize>(),
            offset_of!(ShrinkerObject, next) + size_of::<usize>(),
            offset_of!(ShrinkerObject, shrink) + size_of::<NonNull<dyn Shrink>>(),
            offset_of!(ShrinkerObject, calls_slot) + size_of::<u32>(),
            offset_of!(ShrinkerObject, flags) + size_of::<ShrinkerFlags>(),
            offset_of!(ShrinkerObject, deferred) + size_of::<usize>(),
        ];
        for (i, end) in ends.into_iter().enumerate() {
            assert!(end <= 64, "hot field {i} ends at byte {end}");
        }
    }
}
