//! [`Freed`]: what a reclaim walk freed, in objects and in bytes.

/// What a reclaim walk (or several) freed.
///
/// Shrinkers count in objects; reclaim is asked for bytes. A shrinker says
/// how many bytes its scan freed with
/// [`ShrinkControl::report_freed_bytes`](crate::ShrinkControl::report_freed_bytes),
/// or declares a size per object with
/// [`ShrinkerBuilder::object_bytes`](crate::ShrinkerBuilder::object_bytes);
/// objects freed by a shrinker that does neither are counted in
/// `unsized_objects` and add nothing to `bytes`. (The kernel's analog is
/// `reclaim_state->reclaimed`: the slab pages freed while shrinking.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Freed {
    /// Objects the shrinkers reported freed.
    pub objects: u64,
    /// Bytes: reported by the scans, or objects times the declared size.
    pub bytes: u64,
    /// Objects freed by shrinkers that know no size (included in
    /// `objects`, not in `bytes`).
    pub unsized_objects: u64,
    /// Objects the shrinkers looked at (`nr_scanned`), freed or not: a
    /// walk that scanned and freed nothing (an LRU rotating its referenced
    /// entries: their second chance) still made progress.
    pub scanned: u64,
}

impl Freed {
    /// The sum, saturating.
    #[must_use]
    pub fn saturating_add(self, other: Freed) -> Freed {
        Freed {
            objects: self.objects.saturating_add(other.objects),
            bytes: self.bytes.saturating_add(other.bytes),
            unsized_objects: self.unsized_objects.saturating_add(other.unsized_objects),
            scanned: self.scanned.saturating_add(other.scanned),
        }
    }

    /// Nothing at all was freed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.objects == 0 && self.bytes == 0
    }
}
