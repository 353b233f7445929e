//! Introspection types: what [`ShrinkerRegistry::shrinkers`] lists (the
//! kernel's `/sys/kernel/debug/shrinker/<name>-<id>/` directory).
//!
//! [`ShrinkerRegistry::shrinkers`]: crate::ShrinkerRegistry::shrinkers

use std::fmt;
use std::time::Duration;

/// A shrinker's stable id: unique within its registry while the shrinker
/// exists (from build until it is unregistered or dropped), then reused, the
/// lowest free id first (the kernel's `shrinker_idr`). Memory groups index
/// their per-shrinker bitmaps and deferred counts by it.
///
/// # Examples
///
/// ```
/// use shrinker::{Count, Scan, Shrink, ShrinkControl, ShrinkerBuilder, ShrinkerRegistry};
/// struct Nothing;
/// impl Shrink for Nothing {
///     fn count(&self, _: &ShrinkControl) -> Count { Count::Empty }
///     fn scan(&self, _: &mut ShrinkControl) -> Scan { Scan::Stop }
/// }
/// let reg = ShrinkerRegistry::builder().nodes(1).build().unwrap();
/// let a = ShrinkerBuilder::new("a").build_in(&reg, Nothing).unwrap();
/// assert_eq!(a.id().index(), 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShrinkerId(pub(crate) u32);

impl ShrinkerId {
    /// The id as a number.
    #[inline]
    #[must_use]
    pub fn index(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ShrinkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A shrinker's user flags (`SHRINKER_NUMA_AWARE`, `SHRINKER_MEMCG_AWARE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ShrinkerFlags {
    /// Called per node, with per-node deferred work; otherwise always told
    /// node 0, with one deferred count.
    pub numa_aware: bool,
    /// Called per memory group, for the groups whose bit for it is set
    /// (`SHRINKER_MEMCG_AWARE`); otherwise called for the root group only.
    pub group_aware: bool,
}

/// A shrinker's statistics, cumulative since build.
///
/// Each field is read on its own (`Relaxed`): a snapshot of a shrinker being
/// called concurrently may mix moments, like the kernel's debugfs files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShrinkerStats {
    /// `count` callbacks made.
    pub count_calls: u64,
    /// `scan` callbacks made.
    pub scan_calls: u64,
    /// Objects scanned (the sum of `nr_scanned`).
    pub scanned: u64,
    /// Objects reported freed.
    pub freed: u64,
    /// Deferred work now, summed over nodes.
    pub deferred: u64,
    /// Time spent inside `scan` callbacks. (`count` is not timed: it should
    /// be a load of a length, and two clock reads would cost more than it.)
    pub scan_time: Duration,
    /// Callbacks that panicked (caught).
    pub panics: u64,
}

/// One entry of [`ShrinkerRegistry::shrinkers`](crate::ShrinkerRegistry::shrinkers).
/// Displays as the kernel's debugfs directory name, `name-id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShrinkerInfo {
    /// The stable id.
    pub id: ShrinkerId,
    /// The name given to the builder.
    pub name: String,
    /// The user flags.
    pub flags: ShrinkerFlags,
    /// Cost to recreate an object (0 = free).
    pub seeks: u32,
    /// Scan batch size.
    pub batch: usize,
    /// `false` while it is being unregistered (no longer callable).
    pub live: bool,
    /// The declared bytes per object
    /// ([`ShrinkerBuilder::object_bytes`](crate::ShrinkerBuilder::object_bytes)),
    /// if any.
    pub object_bytes: Option<usize>,
    /// Statistics.
    pub stats: ShrinkerStats,
}

impl fmt::Display for ShrinkerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.name, self.id)
    }
}
