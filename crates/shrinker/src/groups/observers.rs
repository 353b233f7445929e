//! [`GroupObserver`]: what a removal tells the holders of per-group
//! objects (the kernel's `memcg_reparent_objcgs` /
//! `memcg_reparent_list_lrus` calls in `memcg_offline_kmem`).

use crate::group_id::GroupId;

/// Told when a memory group is removed, to move what it holds for the group
/// into the parent (registered with
/// [`ShrinkerRegistry::observe_groups`](crate::ShrinkerRegistry::observe_groups)).
///
/// # Blocking
///
/// Called without any registry lock held, after the group is unpublished
/// and every reclaim walk of it has finished, and before the group's data
/// is freed. It may block, take locks, and call
/// [`set_shrinker_bit`](crate::ShrinkerRegistry::set_shrinker_bit) (as
/// [`ListLru`](crate::ListLru)'s notify hook does); it must not remove
/// groups (that would wait for itself only if it removed the same group,
/// but keep it simple).
///
/// # Examples
///
/// ```
/// use shrinker::{GroupId, GroupObserver, ShrinkerRegistry};
/// use std::sync::{Arc, Mutex};
///
/// struct Log(Mutex<Vec<(GroupId, GroupId)>>);
/// impl GroupObserver for Log {
///     fn reparent(&self, from: GroupId, to: GroupId) {
///         self.0.lock().unwrap().push((from, to));
///     }
/// }
///
/// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
/// let log = Arc::new(Log(Mutex::new(Vec::new())));
/// let weak: std::sync::Weak<dyn GroupObserver> = Arc::downgrade(&log) as _;
/// reg.observe_groups(weak);
/// let g = reg.create_group(GroupId::ROOT)?;
/// reg.remove_group(g)?;
/// assert_eq!(*log.0.lock().unwrap(), [(g, GroupId::ROOT)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait GroupObserver: Send + Sync {
    /// Move everything held for `from` (being removed) into `to` (its
    /// parent).
    fn reparent(&self, from: GroupId, to: GroupId);
}
