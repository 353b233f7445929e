//! [`RcuWait`]: the kernel's `struct rcuwait`, one waiter sleeping until a
//! condition holds, woken without taking a lock.
//!
//! # The problem
//!
//! A writer waits for readers to drain (the per-VMA lock, `percpu_rwsem`);
//! each reader, on its way out, must wake the writer if it is waiting. The
//! readers' exit path is hot, so "is anybody waiting?" must cost a fence and
//! a load, not a lock. Both sides write one thing and then read the other
//! side's thing: a store-buffering pattern, which only full fences on both
//! sides make safe.
//!
//! # The handshake
//!
//! ```text
//!   waiter: wait_until(cond)               waker: (makes cond true); wake_up()
//!   --------------------------------       ------------------------------------
//!   [S] waiting = true                     [S] cond's state = true   (caller's store)
//!       fence(SeqCst)            (A) <---> (B) fence(SeqCst)
//!   [L] cond()?  true -> return            [L] waiting?  true -> unpark(waiter)
//!       park()                                           false -> nothing to do
//! ```
//!
//! The two `SeqCst` fences are ordered one way or the other. If (A) comes
//! first, the waker's load sees `waiting` and unparks the waiter. If (B)
//! comes first, the waiter's `cond()` sees the waker's store and returns
//! without sleeping. A wake-up can therefore not be lost: the waiter either
//! sees the condition or is unparked, and `unpark` before `park` leaves a
//! token that makes `park` return at once. Spurious returns from `park` are
//! absorbed by the loop, which re-runs (A) and `cond()` each time.
//!
//! # Differences from the kernel
//!
//! The kernel stores `current` in an RCU-protected pointer and wakes it under
//! `rcu_read_lock()`, because a `task_struct` may be freed as soon as the
//! waiter returns. Here the waiter's `std::thread::Thread` handle is
//! reference-counted: the waker clones it under a small mutex, taken only
//! when `waiting` says a waiter exists. The fast path of [`wake_up`] (nobody
//! waiting) is a fence and a load, as upstream.
//!
//! # Contract
//!
//! * **One waiter at a time.** The caller serialises waiters (upstream: "the
//!   caller is responsible for locking around `rcuwait_wait_event()`"). Two
//!   overlapping `wait_until` calls are detected and panic.
//! * **The `RcuWait` outlives every `wake_up`.** Borrowing enforces that
//!   here; in the kernel it was the 2025 per-VMA use-after-free.
//! * `cond` runs on the waiter's thread, possibly many times, and must not
//!   block.
//!
//! [`wake_up`]: RcuWait::wake_up

use crate::sync::{fence, thread, AtomicBool, Mutex, MutexGuard, Ordering};
use std::fmt;
use std::sync::PoisonError;

/// A single-waiter wait/wake pair with a lock-free wake-up check
/// (`struct rcuwait`).
///
/// See the [module documentation](self) for the handshake and the contract.
///
/// # Examples
///
/// ```
/// use shrinker_sync::RcuWait;
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// let readers = AtomicUsize::new(3);
/// let writer_wait = RcuWait::new();
/// std::thread::scope(|s| {
///     for _ in 0..3 {
///         s.spawn(|| {
///             // Relaxed is enough: RcuWait's fences order it against the waiter.
///             readers.fetch_sub(1, Ordering::Relaxed);
///             writer_wait.wake_up();
///         });
///     }
///     writer_wait.wait_until(|| readers.load(Ordering::Relaxed) == 0);
/// });
/// ```
pub struct RcuWait {
    /// `true` from just before the waiter's first check of `cond` until it
    /// returns: the `task != NULL` of upstream.
    waiting: AtomicBool,
    /// The waiter's handle while `waiting`; `None` otherwise.
    task: Mutex<Option<thread::Thread>>,
}

impl RcuWait {
    /// An `RcuWait` with no waiter (`rcuwait_init`).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::RcuWait;
    /// assert!(!RcuWait::new().has_waiter());
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self {
            waiting: AtomicBool::new(false),
            task: Mutex::new(None),
        }
    }

    #[inline]
    fn task(&self) -> MutexGuard<'_, Option<thread::Thread>> {
        // Nothing under this mutex panics; recover rather than propagate.
        self.task.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps until `cond()` returns `true` (`rcuwait_wait_event`).
    ///
    /// Returns at once if `cond()` is already true. Otherwise registers the
    /// calling thread as the waiter and re-checks `cond()` after every wake-up
    /// until it holds. The waker must make `cond()` true *before* calling
    /// [`wake_up`](Self::wake_up).
    ///
    /// # Ordering
    ///
    /// **SeqCst fence** before each check of `cond()`, pairing with the one in
    /// [`wake_up`](Self::wake_up): a store the waker made before `wake_up` is
    /// visible to the `cond()` that follows the wake-up, even if both sides
    /// used `Relaxed` accesses for it. Nothing more: if the condition
    /// publishes data, read it with the appropriate `Acquire`.
    ///
    /// # Blocking
    ///
    /// Parks the thread until woken and `cond()` holds.
    ///
    /// # Panics
    ///
    /// If another thread is already waiting on this `RcuWait`: the caller
    /// must serialise waiters. A panic raised by `cond` propagates to the
    /// caller; the waiter is unregistered on the way out, so the `RcuWait`
    /// can be waited on again.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::RcuWait;
    /// let w = RcuWait::new();
    /// w.wait_until(|| true); // already true: returns at once
    /// ```
    pub fn wait_until(&self, mut cond: impl FnMut() -> bool) {
        if cond() {
            return;
        }
        self.wait_until_slow(&mut cond);
    }

    #[cold]
    #[inline(never)]
    fn wait_until_slow(&self, cond: &mut dyn FnMut() -> bool) {
        // prepare_to_rcuwait(): publish our handle before announcing ourselves.
        // The handle doubles as the misuse check: it is Some from here until
        // the waiter returns, so a second waiter finds it and panics before it
        // can overwrite the first one's handle.
        {
            let mut task = self.task();
            if task.is_some() {
                drop(task);
                panic!(
                    "RcuWait::wait_until: a second concurrent waiter; callers must serialise waiters"
                );
            }
            *task = Some(thread::current());
        }
        // From here the slot is ours: the guard frees it on every way out,
        // including a panic in `cond` (which would otherwise leave the slot
        // occupied and make every later waiter panic as a "second waiter").
        let _registered = Registered(self);
        // Relaxed: the SeqCst fence below orders this store before cond();
        // the waker reads it after its own SeqCst fence (the SB pair).
        self.waiting.store(true, Ordering::Relaxed);
        loop {
            // SeqCst fence (A): pairs with fence (B) in wake_up(). Orders the
            // `waiting = true` store before the loads inside cond(); see the
            // two-column diagram in the module docs.
            fence(Ordering::SeqCst);
            if cond() {
                break;
            }
            thread::park();
        }
    }

    /// Wakes the waiter, if there is one (`rcuwait_wake_up`). Returns `true`
    /// if it unparked a thread.
    ///
    /// Call it *after* making the waiter's condition true. With nobody waiting
    /// it costs one fence and one load.
    ///
    /// # Ordering
    ///
    /// **SeqCst fence** before looking for the waiter, pairing with the one in
    /// [`wait_until`](Self::wait_until).
    ///
    /// # Blocking
    ///
    /// Never waits. With a waiter registered it takes the internal mutex
    /// that guards the waiter's handle, held by others for a few
    /// instructions.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::RcuWait;
    /// assert!(!RcuWait::new().wake_up(), "nobody to wake");
    /// ```
    #[inline]
    pub fn wake_up(&self) -> bool {
        // SeqCst fence (B): pairs with fence (A) in wait_until(); orders the
        // caller's condition store before our load of `waiting`.
        fence(Ordering::SeqCst);
        // Relaxed: the fence pair above is what makes this load meaningful.
        if !self.waiting.load(Ordering::Relaxed) {
            return false;
        }
        self.wake_up_slow()
    }

    #[cold]
    #[inline(never)]
    fn wake_up_slow(&self) -> bool {
        // The waiter stored its handle before setting `waiting`, and we saw
        // `waiting`, so under the mutex we find the handle, unless the waiter
        // has meanwhile finished (then nobody needs waking).
        let task = self.task().clone();
        match task {
            Some(t) => {
                t.unpark();
                true
            }
            None => false,
        }
    }

    /// Whether a waiter is registered right now (`rcuwait_active`).
    ///
    /// A hint: it provides no ordering and may be stale as soon as it returns.
    ///
    /// # Ordering
    ///
    /// **Unordered** (`Relaxed`).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::RcuWait;
    /// assert!(!RcuWait::new().has_waiter());
    /// ```
    #[must_use]
    pub fn has_waiter(&self) -> bool {
        // Relaxed: a hint, as upstream ("provides no serialization").
        self.waiting.load(Ordering::Relaxed)
    }
}

/// The waiter's registration: `finish_rcuwait()` when dropped, on return or
/// unwind alike.
struct Registered<'a>(&'a RcuWait);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        // finish_rcuwait(). Relaxed: a waker that still sees `true` finds the
        // handle gone or unparks us needlessly (a spurious wake-up that
        // parkers tolerate by contract).
        self.0.waiting.store(false, Ordering::Relaxed);
        *self.0.task() = None;
    }
}

impl Default for RcuWait {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RcuWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RcuWait")
            .field("has_waiter", &self.has_waiter())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn no_waiter_wake_is_a_no_op() {
        let w = RcuWait::new();
        assert!(!w.wake_up());
        assert!(!w.has_waiter());
    }

    #[test]
    fn true_condition_returns_without_registering() {
        let w = RcuWait::new();
        let mut calls = 0;
        w.wait_until(|| {
            calls += 1;
            true
        });
        assert_eq!(calls, 1);
        assert!(!w.has_waiter());
    }

    #[test]
    fn waiter_sees_every_wake() {
        let rounds = if cfg!(miri) { 5 } else { 200 };
        let w = RcuWait::new();
        let left = AtomicUsize::new(0);
        for _ in 0..rounds {
            // Relaxed: the RcuWait fences order these (that is what is tested).
            left.store(2, Ordering::Relaxed);
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        left.fetch_sub(1, Ordering::Relaxed);
                        w.wake_up();
                    });
                }
                w.wait_until(|| left.load(Ordering::Relaxed) == 0);
            });
            assert!(!w.has_waiter());
        }
    }

    #[test]
    fn panicking_condition_frees_the_waiter_slot() {
        let w = RcuWait::new();
        let mut first = true;
        // The first check fails (slow path: the waiter registers), the
        // re-check after the fence panics with the waiter registered.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            w.wait_until(|| {
                if std::mem::take(&mut first) {
                    return false;
                }
                panic!("condition panics");
            });
        }));
        assert!(caught.is_err(), "the condition's panic propagates");
        assert!(!w.has_waiter(), "the panicking waiter is unregistered");
        // A second wait on the same RcuWait registers and returns normally.
        let mut checks = 0;
        w.wait_until(|| {
            checks += 1;
            checks > 1
        });
        assert_eq!(checks, 2, "the second wait went through the slow path");
        assert!(!w.has_waiter());
    }

    #[test]
    fn second_concurrent_waiter_panics() {
        let w = RcuWait::new();
        let inner_panicked = std::sync::atomic::AtomicBool::new(false);
        let mut first = true;
        // The condition, run by the first waiter while it is registered,
        // starts a second wait on the same RcuWait.
        w.wait_until(|| {
            if std::mem::take(&mut first) {
                return false; // go to the slow path and register
            }
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                w.wait_until(|| false);
            }));
            inner_panicked.store(r.is_err(), Ordering::Relaxed);
            true
        });
        assert!(inner_panicked.load(Ordering::Relaxed));
    }
}
