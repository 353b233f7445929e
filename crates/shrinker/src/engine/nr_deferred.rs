//! [`NrDeferred`]: the deferred-work counters a shrinker owns for the root
//! group (the kernel's `shrinker->nr_deferred`). Another group's counters
//! live in that group's `ShrinkerInfo` units (`groups/unit_map.rs`), and the walk
//! hands the engine whichever counter applies.

use crate::sync::AtomicUsize;

/// The deferred-work counters a shrinker owns: one per node if it is
/// NUMA-aware, else one (the kernel's `nr_deferred` array).
///
/// Node 0's counter is stored inline, so that a visit to a shrinker that is
/// not NUMA-aware (most of them) touches the shrinker's own cache line and no
/// other allocation; nodes 1.. live in `rest`.
///
/// # Invariants
///
/// `rest.len()` is the registry's node count minus one for a NUMA-aware
/// shrinker and 0 otherwise; callers map a NUMA-unaware shrinker's node to 0
/// before calling [`slot`](Self::slot).
#[repr(C)] // `first` first: registry/object.rs keeps it in the object's hot line
pub(crate) struct NrDeferred {
    first: AtomicUsize,
    rest: Box<[AtomicUsize]>,
}

impl NrDeferred {
    /// `n >= 1` zeroed counters, or the allocation error.
    pub(crate) fn try_new(n: usize) -> Result<Self, std::collections::TryReserveError> {
        let extra = n.saturating_sub(1);
        let mut v = Vec::new();
        v.try_reserve_exact(extra)?;
        v.extend((0..extra).map(|_| AtomicUsize::new(0)));
        Ok(NrDeferred {
            first: AtomicUsize::new(0),
            rest: v.into_boxed_slice(),
        })
    }

    /// The root group's counter for `node` (already mapped to 0 for a
    /// shrinker that is not NUMA-aware).
    ///
    /// # Panics
    ///
    /// If `node` is out of range (the registry validates requests first).
    #[inline]
    pub(crate) fn slot(&self, node: usize) -> &AtomicUsize {
        match node {
            0 => &self.first,
            n => &self.rest[n - 1],
        }
    }

    /// Every root-group counter, for statistics.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &AtomicUsize> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }
}
