//! The callback side: [`Shrink`], what it is told ([`ShrinkControl`]) and what
//! it answers ([`Count`], [`Scan`]).
//!
//! The kernel's `struct shrinker` carries two function pointers,
//! `count_objects` and `scan_objects`, and a `private_data` pointer. Here the
//! private state *is* the implementor of [`Shrink`]: a cache implements the
//! trait (or an `Arc` of it does, through the blanket impl) and hands itself
//! to [`ShrinkerBuilder::build`](crate::ShrinkerBuilder::build).
//!
//! The kernel's magic return values become enum variants: `SHRINK_EMPTY`
//! (`~0UL - 1`) is [`Count::Empty`], `SHRINK_STOP` (`~0UL`) is
//! [`Scan::Stop`]. Nothing a callback returns can be mistaken for a count.
//!
//! # The contract (from `include/linux/shrinker.h`)
//!
//! * [`count`](Shrink::count) returns how many objects could be freed now. It
//!   should be cheap (an atomic load of a length) and must not wait for locks
//!   that reclaim might hold: "the shrinker relies on aggregating scan counts
//!   that couldn't be executed due to potential deadlocks to be run at a later
//!   call". `Count::Objects(0)` means "cannot tell, skip me this time";
//!   [`Count::Empty`] means "nothing at all".
//! * [`scan`](Shrink::scan) is called only after a non-zero count, with
//!   [`ShrinkControl::nr_to_scan`] objects to look at (at most the
//!   shrinker's batch). It frees what it can and returns how many it freed,
//!   or [`Scan::Stop`] if it cannot make progress now (it would deadlock,
//!   say); then it is not called again in this pass, and the work it did not
//!   do is deferred to a later pass. If it looked at a different number of
//!   objects than asked (it skipped pinned ones, or freed whole groups), it
//!   says so with [`ShrinkControl::set_nr_scanned`].
//! * Both may block (take a mutex, do I/O): the reclaim walk calls them
//!   outside any RCU read-side section. Both may run concurrently on several
//!   threads (several reclaimers, or a reclaimer and a hand-driven
//!   [`ShrinkerRegistry::scan`](crate::ShrinkerRegistry::scan)).
//! * A panic is caught, counted in the shrinker's statistics and reported
//!   through `tracing`; reclaim goes on with the next shrinker.
//! * A callback must not unregister its own shrinker (it would wait for
//!   itself): that panics, naming the misuse.

use std::sync::Arc;

use crate::group_id::GroupId;

/// What a [`Shrink::count`] reports.
///
/// # Examples
///
/// ```
/// use shrinker::Count;
/// assert_eq!(Count::from(0), Count::Objects(0));
/// assert_ne!(Count::Empty, Count::Objects(0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Count {
    /// This many objects could be freed now. `Objects(0)` means "cannot tell
    /// now, or skip me this time" (the kernel's `return 0`).
    Objects(usize),
    /// There is nothing to free at all (the kernel's `SHRINK_EMPTY`). Group
    /// reclaim uses it to clear the shrinker's bit in the group.
    Empty,
}

impl From<usize> for Count {
    #[inline]
    fn from(n: usize) -> Self {
        Count::Objects(n)
    }
}

/// What a [`Shrink::scan`] reports.
///
/// # Examples
///
/// ```
/// use shrinker::Scan;
/// assert_eq!(Scan::from(3), Scan::Freed(3));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scan {
    /// This many objects were freed.
    Freed(usize),
    /// No progress can be made in this pass (the kernel's `SHRINK_STOP`): do
    /// not call again now; the unscanned work is deferred.
    Stop,
}

impl From<usize> for Scan {
    #[inline]
    fn from(n: usize) -> Self {
        Scan::Freed(n)
    }
}

/// The arguments of one callback (`struct shrink_control`).
///
/// # Examples
///
/// ```
/// use shrinker::{Count, Scan, Shrink, ShrinkControl};
///
/// struct Skipper;
/// impl Shrink for Skipper {
///     fn count(&self, _: &ShrinkControl) -> Count { Count::Objects(100) }
///     fn scan(&self, sc: &mut ShrinkControl) -> Scan {
///         // Looked at only half the objects asked for.
///         let looked = sc.nr_to_scan() / 2;
///         sc.set_nr_scanned(looked);
///         Scan::Freed(looked)
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShrinkControl {
    node: usize,
    group: GroupId,
    nr_to_scan: usize,
    nr_scanned: usize,
    /// Bytes the scan calls of this visit reported freeing.
    freed_bytes: usize,
}

impl ShrinkControl {
    /// A control for `node` in `group`, nothing to scan yet.
    #[inline]
    pub(crate) fn new(node: usize, group: GroupId) -> Self {
        ShrinkControl {
            node,
            group,
            nr_to_scan: 0,
            nr_scanned: 0,
            freed_bytes: 0,
        }
    }

    /// Sets up a scan call: `nr_to_scan = nr_scanned = n` (the kernel resets
    /// both before every `scan_objects`).
    #[inline]
    pub(crate) fn prepare_scan(&mut self, n: usize) {
        self.nr_to_scan = n;
        self.nr_scanned = n;
    }

    /// The NUMA node being shrunk (`sc->nid`). Always 0 for a shrinker that
    /// is not NUMA-aware.
    #[inline]
    #[must_use]
    pub fn node(&self) -> usize {
        self.node
    }

    /// The memory group being shrunk (`sc->memcg`); [`GroupId::ROOT`] until
    /// memory groups exist, and for shrinkers that are not group-aware.
    #[inline]
    #[must_use]
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// How many objects this scan call should look at (`sc->nr_to_scan`); 0
    /// in a count call.
    #[inline]
    #[must_use]
    pub fn nr_to_scan(&self) -> usize {
        self.nr_to_scan
    }

    /// How many objects the callee reports it looked at (`sc->nr_scanned`);
    /// starts equal to [`nr_to_scan`](Self::nr_to_scan).
    #[inline]
    #[must_use]
    pub fn nr_scanned(&self) -> usize {
        self.nr_scanned
    }

    /// Report the real progress of this scan call, when it differs from
    /// `nr_to_scan`. The engine subtracts it from the work still to do.
    #[inline]
    pub fn set_nr_scanned(&mut self, n: usize) {
        self.nr_scanned = n;
    }

    /// Report how many bytes this scan call freed (added up over the scan
    /// calls of one visit). Reclaim asks for bytes, shrinkers count objects:
    /// a shrinker whose objects differ in size reports what it freed here
    /// (the kernel's `reclaim_state->reclaimed`); one whose objects are
    /// alike may instead declare their size once with
    /// [`ShrinkerBuilder::object_bytes`](crate::ShrinkerBuilder::object_bytes).
    /// A report here wins over the declared size for this visit. See
    /// [`Freed`](crate::Freed).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{Count, Scan, Shrink, ShrinkControl};
    /// use std::sync::Mutex;
    ///
    /// struct Blobs(Mutex<Vec<Vec<u8>>>);
    /// impl Shrink for Blobs {
    ///     fn count(&self, _: &ShrinkControl) -> Count { Count::Objects(self.0.lock().unwrap().len()) }
    ///     fn scan(&self, sc: &mut ShrinkControl) -> Scan {
    ///         let mut v = self.0.lock().unwrap();
    ///         let n = sc.nr_to_scan().min(v.len());
    ///         let at = v.len() - n;
    ///         let bytes: usize = v.drain(at..).map(|b| b.capacity()).sum();
    ///         sc.report_freed_bytes(bytes);
    ///         Scan::Freed(n)
    ///     }
    /// }
    /// ```
    #[inline]
    pub fn report_freed_bytes(&mut self, bytes: usize) {
        self.freed_bytes = self.freed_bytes.saturating_add(bytes);
    }

    /// End a visit's scan calls: take the bytes they reported, and leave
    /// the control as [`new`](Self::new) made it, so that a walk can hand
    /// the same control to its next visit.
    #[inline]
    pub(crate) fn finish_scans(&mut self) -> usize {
        self.nr_to_scan = 0;
        self.nr_scanned = 0;
        std::mem::take(&mut self.freed_bytes)
    }

    /// Point the control at another node (a walk's next visit: the node
    /// that visit's shrinker is shrunk for).
    #[inline]
    pub(crate) fn set_node(&mut self, node: usize) {
        self.node = node;
    }
}

/// A cache that can give memory back (`count_objects` + `scan_objects`).
///
/// See the module documentation for the contract. The implementor is the
/// shrinker's private state: it is called from any reclaiming thread, so it
/// is `Send + Sync + 'static`.
///
/// # Examples
///
/// ```
/// use shrinker::{Count, Scan, Shrink, ShrinkControl};
/// use std::sync::Mutex;
///
/// struct Cache(Mutex<Vec<Vec<u8>>>);
///
/// impl Shrink for Cache {
///     fn count(&self, _: &ShrinkControl) -> Count {
///         match self.0.lock().unwrap().len() {
///             0 => Count::Empty,
///             n => Count::Objects(n),
///         }
///     }
///     fn scan(&self, sc: &mut ShrinkControl) -> Scan {
///         let mut v = self.0.lock().unwrap();
///         let n = sc.nr_to_scan().min(v.len());
///         let keep = v.len() - n;
///         v.truncate(keep);
///         Scan::Freed(n)
///     }
/// }
/// ```
pub trait Shrink: Send + Sync + 'static {
    /// How many objects could be freed now (`count_objects`).
    fn count(&self, sc: &ShrinkControl) -> Count;

    /// Free up to `sc.nr_to_scan()` objects (`scan_objects`).
    fn scan(&self, sc: &mut ShrinkControl) -> Scan;

    /// The bytes this shrinker's objects hold now, if it knows (default:
    /// `None`). For introspection only (`shrinkctl top --sort bytes`, the
    /// control socket's `list`): reclaim never calls it. A shrinker that
    /// declared [`ShrinkerBuilder::object_bytes`](crate::ShrinkerBuilder::object_bytes)
    /// need not implement it: its count times that size is used.
    fn held_bytes(&self) -> Option<u64> {
        None
    }
}

/// `Shrink` through an owning pointer: both callbacks forward to the
/// pointee (one definition for every pointer type).
macro_rules! forward_shrink {
    ($($ptr:ident),*) => {$(
        impl<T: Shrink + ?Sized> Shrink for $ptr<T> {
            #[inline]
            fn count(&self, sc: &ShrinkControl) -> Count {
                (**self).count(sc)
            }

            #[inline]
            fn scan(&self, sc: &mut ShrinkControl) -> Scan {
                (**self).scan(sc)
            }

            fn held_bytes(&self) -> Option<u64> {
                (**self).held_bytes()
            }
        }
    )*};
}

forward_shrink!(Arc, Box);
