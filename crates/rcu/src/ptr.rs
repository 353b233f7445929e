//! `RcuPtr<T>`: an RCU-protected owning pointer, and `Retired<T>`, the old
//! value an update hands back.
//!
//! # Invariants
//!
//! * `ptr` is null or came from `Box::<T>::into_raw`, and the `RcuPtr` owns
//!   that box until a `replace`/`take` moves ownership into a [`Retired`].
//! * A [`Retired<T>`] owns a box that readers may still be reading; it frees
//!   or returns the box only after a grace period that began after the box
//!   was unpublished (its `cookie`).
//!
//! # Orderings
//!
//! | operation | ordering | partner |
//! |---|---|---|
//! | `load` | Acquire | the Release half of `replace`'s swap (publication: `rcu_assign_pointer`) |
//! | `replace`/`take` | AcqRel swap | Release publishes the new value's initialisation; Acquire makes the previous updater's writes visible to whoever now owns the old value |
//!
//! Rust has no `consume`, so `load` is Acquire where the kernel's
//! `rcu_dereference` relies on address dependency; on x86 both are plain loads.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::{self, NonNull};

use crate::grace::GpState;
use crate::reader::ReadGuard;
use crate::sync::{AtomicPtr, Ordering};

/// An RCU-protected pointer to a heap-allocated `T` (the kernel's `__rcu`
/// pointer with `rcu_assign_pointer` / `rcu_dereference` /
/// `rcu_replace_pointer`).
///
/// Readers [`load`](Self::load) under a [`ReadGuard`] and get a reference that
/// cannot outlive the guard. Updaters [`replace`](Self::replace) the value;
/// any number may do so concurrently (the exchange is atomic). The old value
/// comes back as a [`Retired`], which frees it after a grace period.
///
/// # Example
///
/// ```
/// use shrinker_rcu::{read_lock, RcuPtr};
/// let p = RcuPtr::new(String::from("v1"));
/// let g = read_lock();
/// let seen = p.load(&g).unwrap();
/// drop(p.replace(String::from("v2"))); // deferred free: `seen` stays valid
/// assert_eq!(seen, "v1");
/// drop(g);
/// ```
pub struct RcuPtr<T> {
    ptr: AtomicPtr<T>,
    _owns: PhantomData<Box<T>>,
}

// SAFETY: an `RcuPtr<T>` owns a `T` (moved between threads by replacement and
// deferred drop on the worker thread: `Send`) and hands out `&T` to readers of
// any thread (`Sync`).
unsafe impl<T: Send + Sync> Send for RcuPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for RcuPtr<T> {}

impl<T> RcuPtr<T> {
    /// A pointer to `value`.
    pub fn new(value: T) -> Self {
        Self::from_box(Some(Box::new(value)))
    }

    /// A null pointer.
    pub fn null() -> Self {
        Self::from_box(None)
    }

    /// A pointer owning `value`, or null.
    pub fn from_box(value: Option<Box<T>>) -> Self {
        RcuPtr {
            ptr: AtomicPtr::new(value.map_or(ptr::null_mut(), Box::into_raw)),
            _owns: PhantomData,
        }
    }

    /// Read the current value (`rcu_dereference`). The reference lives as
    /// long as both the guard and the pointer.
    ///
    /// # Ordering
    ///
    /// Acquire: pairs with the Release half of the swap in
    /// [`replace`](Self::replace), so the value's initialisation is visible.
    #[inline]
    pub fn load<'g>(&'g self, _guard: &'g ReadGuard) -> Option<&'g T> {
        // Acquire: see the doc above.
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: a non-null `p` was published by `from_box`/`replace` (so it
        // is a valid, initialised `Box<T>`), and it is freed only by
        // `Retired` after a grace period that began after it was unpublished,
        // or by `Drop`/`into_box`/`get_mut`, which need `&mut self` and so
        // cannot overlap this borrow. `_guard` keeps the grace period from
        // ending while `'g` lasts.
        unsafe { p.as_ref() }
    }

    /// Is the pointer null (`rcu_access_pointer` for a test only)?
    pub fn is_null(&self) -> bool {
        // Relaxed: nothing is dereferenced.
        self.ptr.load(Ordering::Relaxed).is_null()
    }

    /// Exclusive access: no reader can hold a reference while `&mut self`
    /// exists.
    pub fn get_mut(&mut self) -> Option<&mut T> {
        // Relaxed: `&mut self` excludes every other access.
        let p = self.ptr.load(Ordering::Relaxed);
        // SAFETY: exclusive borrow; `p` is null or an owned box.
        unsafe { p.as_mut() }
    }

    /// Take the value out (no grace period needed: `self` is owned, so no
    /// reader holds a reference through it).
    pub fn into_box(self) -> Option<Box<T>> {
        let this = std::mem::ManuallyDrop::new(self);
        // Relaxed: owned.
        let p = this.ptr.load(Ordering::Relaxed);
        // SAFETY: `p` is null or an owned box, and `this` will not drop it.
        NonNull::new(p).map(|p| unsafe { Box::from_raw(p.as_ptr()) })
    }
}

impl<T: Send + 'static> RcuPtr<T> {
    /// Publish `value` and hand back the old one (`rcu_replace_pointer`).
    ///
    /// # Ordering
    ///
    /// AcqRel swap: Release publishes `value`'s initialisation to readers'
    /// Acquire loads; Acquire orders the previous publisher's writes before
    /// this thread's use of the returned value.
    pub fn replace(&self, value: T) -> Option<Retired<T>> {
        self.replace_box(Some(Box::new(value)))
    }

    /// Publish `value` (or null) and hand back the old one.
    pub fn replace_box(&self, value: Option<Box<T>>) -> Option<Retired<T>> {
        let new = value.map_or(ptr::null_mut(), Box::into_raw);
        // AcqRel: see `replace`.
        let old = self.ptr.swap(new, Ordering::AcqRel);
        // SAFETY: `old` was owned by `self` and is now unpublished.
        NonNull::new(old).map(|p| unsafe { Retired::new(p) })
    }

    /// Publish `value`; the old value is freed after a grace period, always on
    /// the callback worker (never inline here, even if a grace period
    /// happens to elapse in between: its `Drop` never runs under the
    /// caller's locks).
    ///
    /// # Blocking
    ///
    /// Never: the old value goes to [`crate::defer_drop`].
    ///
    /// # Panics
    ///
    /// If the RCU callback worker cannot be spawned on the process's first
    /// deferred free.
    pub fn store(&self, value: T) {
        if let Some(old) = self.replace(value) {
            old.defer();
        }
    }

    /// Unpublish the value, leaving null.
    pub fn take(&self) -> Option<Retired<T>> {
        self.replace_box(None)
    }
}

impl<T> Drop for RcuPtr<T> {
    fn drop(&mut self) {
        // Relaxed: `&mut self` excludes every other access.
        let p = self.ptr.load(Ordering::Relaxed);
        if !p.is_null() {
            // SAFETY: owned box; `&mut self` proves no reader borrows it.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

impl<T> Default for RcuPtr<T> {
    fn default() -> Self {
        Self::null()
    }
}

impl<T> fmt::Debug for RcuPtr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Relaxed: for display only.
        f.debug_tuple("RcuPtr")
            .field(&self.ptr.load(Ordering::Relaxed))
            .finish()
    }
}

/// An unpublished value that readers may still be reading.
///
/// Dropping it frees the value after a grace period ([`crate::defer_drop`],
/// which never waits; at once if the grace period has already passed);
/// [`into_box`](Self::into_box) waits for the grace period instead and gives
/// the value back. It knows the grace period it needs (a cookie taken when the
/// value was unpublished), so a conversion after a grace period has already
/// passed costs nothing.
///
/// # Example
///
/// ```
/// let p = shrinker_rcu::RcuPtr::new(vec![1, 2, 3]);
/// let old = p.replace(vec![4]).unwrap();
/// assert_eq!(old.len(), 3); // still readable, like readers read it
/// let owned: Box<Vec<i32>> = old.into_box(); // after a grace period
/// assert_eq!(*owned, [1, 2, 3]);
/// ```
pub struct Retired<T: Send + 'static> {
    ptr: NonNull<T>,
    cookie: GpState,
}

// SAFETY: `Retired<T>` owns a `T` (`Send`), and shares `&T` through `Deref`
// only when `T: Sync`.
unsafe impl<T: Send + 'static> Send for Retired<T> {}
// SAFETY: `&Retired<T>` gives only `&T`, and only for `T: Sync`.
unsafe impl<T: Send + Sync + 'static> Sync for Retired<T> {}

impl<T: Send + 'static> Retired<T> {
    /// # Safety
    ///
    /// `ptr` came from `Box::into_raw`, is no longer reachable by new readers,
    /// and nothing else will free it.
    pub(crate) unsafe fn new(ptr: NonNull<T>) -> Self {
        Retired {
            ptr,
            cookie: crate::get_state(),
        }
    }

    /// Wait for the grace period (if it has not passed yet) and take the value.
    ///
    /// # Blocking
    ///
    /// For a grace period ([`crate::cond_synchronize`]), unless one has
    /// already elapsed since the value was unpublished.
    ///
    /// # Panics
    ///
    /// Inside a read-side section, if it has to wait.
    pub fn into_box(self) -> Box<T> {
        crate::cond_synchronize(self.cookie);
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: the grace period since unpublication has passed, so no
        // reader holds a reference; `this` will not free it again.
        unsafe { Box::from_raw(this.ptr.as_ptr()) }
    }

    /// The value, if its grace period has already passed; otherwise `self`.
    pub fn try_into_box(self) -> Result<Box<T>, Self> {
        if crate::poll_state(self.cookie) {
            let this = std::mem::ManuallyDrop::new(self);
            // SAFETY: as in `into_box`.
            Ok(unsafe { Box::from_raw(this.ptr.as_ptr()) })
        } else {
            Err(self)
        }
    }

    /// The grace-period cookie this value waits for.
    pub fn cookie(&self) -> GpState {
        self.cookie
    }

    /// Hand the value to [`crate::defer_drop`] unconditionally: unlike
    /// `Drop`, never drops it inline, so its `Drop` cannot run under the
    /// caller's locks however the race with grace periods goes.
    pub(crate) fn defer(self) {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: we own the box (invariant) and `this` will not free it;
        // ownership moves to the queue, which drops it after a grace period.
        crate::defer_drop(unsafe { Box::from_raw(this.ptr.as_ptr()) });
    }
}

impl<T: Send + Sync + 'static> Deref for Retired<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we own the box until drop; readers only share it.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: Send + 'static> Drop for Retired<T> {
    fn drop(&mut self) {
        // SAFETY: we own the box (invariant); ownership moves to the queue,
        // which drops it after a grace period.
        let b = unsafe { Box::from_raw(self.ptr.as_ptr()) };
        if crate::poll_state(self.cookie) {
            drop(b);
        } else {
            crate::defer_drop(b);
        }
    }
}

impl<T: Send + 'static> fmt::Debug for Retired<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retired")
            .field("ptr", &self.ptr)
            .field("cookie", &self.cookie)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::read_lock;

    #[test]
    fn load_sees_latest_value() {
        let p = RcuPtr::new(1u32);
        let g = read_lock();
        assert_eq!(p.load(&g), Some(&1));
        drop(g);
        let old = p.replace(2).expect("had a value");
        assert_eq!(*old, 1);
        let g = read_lock();
        assert_eq!(p.load(&g), Some(&2));
        drop(g);
        assert_eq!(*old.into_box(), 1);
    }

    #[test]
    fn null_take_and_into_box() {
        let p: RcuPtr<u8> = RcuPtr::null();
        assert!(p.is_null());
        assert!(p.take().is_none());
        let mut p = RcuPtr::new(5u8);
        *p.get_mut().unwrap() += 1;
        assert_eq!(p.into_box().map(|b| *b), Some(6));
    }

    #[test]
    fn retired_waits_for_its_own_grace_period_only() {
        let p = RcuPtr::new(String::from("a"));
        let old = p.replace(String::from("b")).unwrap();
        crate::synchronize_rcu();
        // The grace period has passed: no wait, and the value comes back.
        let b = old.try_into_box().expect("grace period already elapsed");
        assert_eq!(*b, "a");
    }

    #[test]
    fn dropping_rcu_ptr_frees_value() {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        struct D;
        impl Drop for D {
            fn drop(&mut self) {
                DROPS.fetch_add(1, Relaxed);
            }
        }
        drop(RcuPtr::new(D));
        assert_eq!(DROPS.load(Relaxed), 1);
    }
}
