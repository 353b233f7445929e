//! [`ShrinkRequest`]: one reclaim pass's parameters.

use crate::group_id::GroupId;

/// `DEF_PRIORITY`: the gentlest reclaim priority, and the highest a
/// request may ask for.
pub(crate) const DEF_PRIORITY: u8 = 12;

/// What to shrink and how hard: the arguments of the kernel's
/// `shrink_slab(gfp, nid, memcg, priority)`.
///
/// Build it with struct-update syntax so that fields added later (nothing
/// else is planned) do not break callers.
///
/// # Examples
///
/// ```
/// use shrinker::ShrinkRequest;
/// let gentle = ShrinkRequest::default();
/// assert_eq!((gentle.node, gentle.priority), (0, 12));
/// let hard = ShrinkRequest { priority: 0, ..Default::default() };
/// assert_eq!(hard.priority, 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShrinkRequest {
    /// The NUMA node under pressure.
    pub node: usize,
    /// 12 (`DEF_PRIORITY`: scan 1/4096th of each cache) down to 0 (scan up
    /// to twice everything). Reclaim starts at 12 and lowers it while it
    /// fails to free enough.
    pub priority: u8,
    /// The memory group under pressure; [`GroupId::ROOT`] (the only one for
    /// now) for global reclaim.
    pub group: GroupId,
}

impl Default for ShrinkRequest {
    fn default() -> Self {
        ShrinkRequest {
            node: 0,
            priority: DEF_PRIORITY,
            group: GroupId::ROOT,
        }
    }
}
