//! Freeing after a grace period: the one way this crate gives back an
//! allocation that RCU readers may still hold (`kvfree_rcu`, `call_rcu`).

/// A raw pointer moved into an RCU callback.
struct SendPtr<T>(*mut T);

// SAFETY: the pointee is `Send`; only the callback, after the grace period,
// uses the pointer.
unsafe impl<T: Send> Send for SendPtr<T> {}

/// Free `p`, a leaked `Box<T>` that readers may still be reading, after a
/// grace period.
///
/// Not `defer_drop(Box::from_raw(p))`: turning the pointer back into a
/// `Box` *now* asserts unique access while readers still hold shared
/// references into it (Miri reports the retag as a data race with their
/// reads); the `Box` is made in the callback, once no reader remains.
///
/// # Safety
///
/// `p` came from `Box::into_raw`, is unpublished, and is freed nowhere
/// else; every reader that may still use it is in a read section.
pub(crate) unsafe fn free_after_grace_period<T: Send + 'static>(p: *mut T) {
    /// # Safety
    ///
    /// As the caller's contract, once no reader remains.
    unsafe fn drop_box<T>(p: *mut T) {
        // SAFETY: from `Box::into_raw`, ours (contract).
        drop(unsafe { Box::from_raw(p) });
    }
    // SAFETY: `drop_box` frees exactly what the contract hands over.
    unsafe { retire_after_grace_period(p, drop_box::<T>) }
}

/// Run `free(p)` after a grace period, for allocations that are not a
/// plain `Box<T>` (a unit map's thin pointer).
///
/// # Safety
///
/// `free(p)` is sound once no reader remains: `p` is unpublished and freed
/// nowhere else, and every reader that may still use it is in a read
/// section.
pub(crate) unsafe fn retire_after_grace_period<T: Send + 'static>(
    p: *mut T,
    free: unsafe fn(*mut T),
) {
    let p = SendPtr(p);
    let cb = move || {
        let p = p;
        // SAFETY: the grace period has ended, so no reader remains
        // (contract).
        unsafe { free(p.0) };
    };
    shrinker_rcu::call_rcu(cb);
}
