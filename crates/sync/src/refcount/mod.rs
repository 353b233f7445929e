//! [`Refcount`]: the kernel's `refcount_t`, a reference count that saturates
//! instead of wrapping.
//!
//! # The problem
//!
//! A plain atomic counter that overflows wraps to zero, and a counter that a
//! bug decrements once too often reaches zero early: in both cases someone
//! frees an object that is still in use. `refcount_t` closes that door. Any
//! operation that sees, or would produce, a value outside `0..=i32::MAX`
//! stores [`Refcount::SATURATED`] instead and reports the bug once. A
//! saturated counter is sticky: it never reaches zero again, so the object
//! leaks instead of being freed under its users' feet.
//!
//! # Value space
//!
//! ```text
//!  i32::MIN      SATURATED = i32::MIN / 2      -1  0  1                 i32::MAX
//!     |<------------- bad range ---------------->|  |<---- live counts ---->|
//!     |                  *                       |  |                       |
//!  0x8000_0000       0xc000_0000        0xffff_ffff 0  1             0x7fff_ffff
//! ```
//!
//! | value | meaning |
//! |---|---|
//! | `1..=i32::MAX` ([`Refcount::MAX`]) | live: that many references |
//! | `0` | no references: the object is being or has been freed; only `set` brings it back |
//! | `i32::MIN..0` | bad: any operation that observes it re-saturates |
//! | [`Refcount::SATURATED`] (`i32::MIN / 2`) | poisoned; sticky |
//!
//! The poison value sits halfway between zero and `i32::MIN`, so a burst of
//! racing operations on a saturated counter (each moves it by one before it
//! notices and stores `SATURATED` again) would need about 2³⁰ of them in
//! flight at once to walk it back to zero or wrap it to a live value.
//!
//! # States
//!
//! ```text
//!   new(n) / set(n), n > 0
//!          |
//!          v
//!   LIVE 1..=MAX --dec_and_test / sub_and_test / dec_if_one: true--> ZERO (caller frees)
//!     |                                                              |         |
//!     | overflow, a negative value seen or produced,        *_not_zero:   inc/add on 0:
//!     | dec() reaching 0, sub below 0                      false, stays 0  AddOnZero
//!     v                                                              |         |
//!   SATURATED: sticky; never reaches zero, never frees <-------------+---------+
//! ```
//!
//! # Ordering
//!
//! Mapped from the kernel's `Documentation/core-api/refcount-vs-atomic.rst`;
//! where the kernel relies on a control dependency this port uses `Acquire`
//! (the crate docs explain why):
//!
//! | operation | kernel | here |
//! |---|---|---|
//! | `set`, `read` | unordered | `Relaxed` |
//! | `set_release` | RELEASE | `Release` |
//! | `inc`, `add` | unordered | `Relaxed` |
//! | `inc_not_zero`, `add_not_zero` | control dependency on success | `Acquire` on success |
//! | `inc_not_zero_acquire`, `add_not_zero_acquire`, `*_limited_acquire` | ACQUIRE on success | `Acquire` on success |
//! | `dec` | RELEASE | `Release` |
//! | `dec_and_test`, `sub_and_test` | RELEASE, ACQUIRE on success | `Release`, then `fence(Acquire)` on success |
//! | `dec_if_one`, `dec_not_one` | RELEASE + control dependency | `AcqRel` on success |
//! | `dec_and_lock` | RELEASE + control dependency + lock held on success | `AcqRel` on success, lock held |
//!
//! # Reports
//!
//! Each kind of [`Saturation`] is reported once per process through
//! `tracing` at `ERROR` level (target `shrinker_sync::refcount`), with a
//! backtrace when `RUST_BACKTRACE` asks for one. [`set_panic_on_saturate`]
//! turns every report into a panic, raised after the counter has been
//! saturated, so a test fails at the faulty call.

//!
//! # Files
//!
//! `saturation.rs` holds [`Saturation`] and its report, below this file's
//! [`Refcount`]; the unit tests (the lkdtm cases) are in `tests.rs`.

use crate::sync::{acquire_after_final_dec, AtomicI32, Mutex, MutexGuard, Ordering};
use std::fmt;
use std::sync::PoisonError;

mod saturation;
#[cfg(all(test, not(loom)))]
mod tests;

use saturation::report;
pub use saturation::{set_panic_on_saturate, Saturation};

/// The kernel's `refcount_t`: a saturating 32-bit reference count.
///
/// See the [module documentation](self) for the value space, the state
/// diagram and the ordering table.
///
/// # Invariants
///
/// Once the value is in the bad range (negative) no operation but
/// [`set`](Self::set)/[`set_release`](Self::set_release) brings it back: every
/// decrement that observes it stores [`SATURATED`](Self::SATURATED) again and
/// returns "not zero".
///
/// # Examples
///
/// ```
/// use shrinker_sync::Refcount;
///
/// let r = Refcount::new(1);
/// r.inc();
/// assert!(!r.dec_and_test());
/// assert!(r.dec_and_test()); // the last reference: free the object now
/// assert!(!r.inc_not_zero()); // nobody can revive it
/// ```
pub struct Refcount {
    /// See the value table in the module documentation.
    refs: AtomicI32,
}

impl Refcount {
    /// The largest live value (`REFCOUNT_MAX`).
    pub const MAX: i32 = i32::MAX;
    /// The sticky poison value (`REFCOUNT_SATURATED`).
    pub const SATURATED: i32 = i32::MIN / 2;

    /// A counter holding `n` (`REFCOUNT_INIT(n)`).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Refcount;
    /// static USERS: Refcount = Refcount::new(1);
    /// assert_eq!(USERS.read(), 1);
    /// ```
    #[cfg(not(loom))]
    #[must_use]
    pub const fn new(n: i32) -> Self {
        Self {
            refs: AtomicI32::new(n),
        }
    }

    /// A counter holding `n` (`REFCOUNT_INIT(n)`); not `const` under loom.
    #[cfg(loom)]
    #[must_use]
    pub fn new(n: i32) -> Self {
        Self {
            refs: AtomicI32::new(n),
        }
    }

    /// Stores `n` (`refcount_set`).
    ///
    /// # Ordering
    ///
    /// **Unordered** (`Relaxed`). Use [`set_release`](Self::set_release) when
    /// the store publishes a freshly initialised object.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Refcount;
    /// let r = Refcount::new(0);
    /// r.set(3);
    /// assert_eq!(r.read(), 3);
    /// ```
    #[inline]
    pub fn set(&self, n: i32) {
        // Relaxed: refcount_set is unordered; callers publish by other means.
        self.refs.store(n, Ordering::Relaxed);
    }

    /// Stores `n` after the caller finished initialising the object
    /// (`refcount_set_release`).
    ///
    /// For type-stable memory (an object reused in place while readers may
    /// still hold its address): the object counts as visible from this store
    /// on, and a reader that takes a reference with
    /// [`inc_not_zero_acquire`](Self::inc_not_zero_acquire) sees every field
    /// written before it.
    ///
    /// # Ordering
    ///
    /// **Release**.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Refcount;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// struct Slot { key: AtomicU64, refs: Refcount }
    /// let slot = Slot { key: AtomicU64::new(0), refs: Refcount::new(0) };
    ///
    /// slot.key.store(42, Ordering::Relaxed); // initialise...
    /// slot.refs.set_release(1); // ...then publish
    ///
    /// if slot.refs.inc_not_zero_acquire() {
    ///     assert_eq!(slot.key.load(Ordering::Relaxed), 42); // identity check after the get
    ///     assert!(!slot.refs.dec_and_test());
    /// }
    /// ```
    #[inline]
    pub fn set_release(&self, n: i32) {
        // Release: pairs with the Acquire CAS of inc_not_zero_acquire() and
        // friends; publishes the initialisation done before this call.
        self.refs.store(n, Ordering::Release);
    }

    /// The current value (`refcount_read`). Saturated counters read as
    /// [`SATURATED`](Self::SATURATED) or a value near it.
    ///
    /// # Ordering
    ///
    /// **Unordered** (`Relaxed`): a snapshot for diagnostics and heuristics.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Refcount;
    /// assert_eq!(Refcount::new(7).read(), 7);
    /// ```
    #[inline]
    #[must_use]
    pub fn read(&self) -> i32 {
        // Relaxed: refcount_read is unordered.
        self.refs.load(Ordering::Relaxed)
    }

    /// Takes one more reference (`refcount_inc`).
    ///
    /// The caller must already hold a reference. An increment from zero is a
    /// use-after-free ([`Saturation::AddOnZero`]) and one past
    /// [`MAX`](Self::MAX) an overflow ([`Saturation::AddOverflow`]); both
    /// saturate.
    ///
    /// # Ordering
    ///
    /// **Unordered** (`Relaxed`). The reference the caller already holds is
    /// what orders its accesses to the object, as for `Arc::clone`.
    ///
    /// # Panics
    ///
    /// On saturation, if [`set_panic_on_saturate`] is on.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Refcount;
    /// let r = Refcount::new(1);
    /// r.inc();
    /// assert_eq!(r.read(), 2);
    /// ```
    #[inline]
    #[track_caller]
    pub fn inc(&self) {
        self.add_unchecked(1);
    }

    /// Takes `i` more references (`refcount_add`); see [`inc`](Self::inc).
    ///
    /// `i == 0` on a live count changes nothing; on a zero count it is still
    /// an addition on a freed object and saturates with
    /// [`Saturation::AddOnZero`], as upstream.
    ///
    /// # Ordering
    ///
    /// **Unordered** (`Relaxed`). The reference the caller already holds is
    /// what orders its accesses to the object, as for `Arc::clone`.
    ///
    /// # Panics
    ///
    /// If `i` is negative; on saturation, if [`set_panic_on_saturate`] is on.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Refcount;
    /// let r = Refcount::new(1);
    /// r.add(2);
    /// assert_eq!(r.read(), 3);
    /// ```
    #[inline]
    #[track_caller]
    pub fn add(&self, i: i32) {
        assert!(i >= 0, "Refcount::add: negative amount {i}");
        self.add_unchecked(i);
    }

    #[inline]
    #[track_caller]
    fn add_unchecked(&self, i: i32) {
        // Relaxed: the caller holds a reference (see the # Ordering doc); a
        // plain fetch_add with the check afterwards, no CAS loop, as upstream.
        let old = self.refs.fetch_add(i, Ordering::Relaxed);
        if old <= 0 || old.wrapping_add(i) < 0 {
            self.add_slow(old);
        }
    }

    #[cold]
    #[inline(never)]
    #[track_caller]
    fn add_slow(&self, old: i32) {
        self.saturate(if old == 0 {
            Saturation::AddOnZero
        } else {
            Saturation::AddOverflow
        });
    }

    /// Takes a reference unless the count is zero (`refcount_inc_not_zero`).
    ///
    /// Returns `false`, leaving the count at zero, when the object is already
    /// on its way out. This is how a lookup under RCU or a lock turns "I found
    /// it" into "I own a reference to it". A saturated count stays saturated,
    /// and the call succeeds.
    ///
    /// # Ordering
    ///
    /// **Acquire on success**, unordered on failure. (Kernel: a control
    /// dependency on success; Rust has none, so this is the same operation as
    /// [`inc_not_zero_acquire`](Self::inc_not_zero_acquire).)
    ///
    /// # Panics
    ///
    /// On saturation, if [`set_panic_on_saturate`] is on.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Refcount;
    /// let r = Refcount::new(1);
    /// assert!(r.inc_not_zero());
    /// assert_eq!(r.read(), 2);
    /// assert!(!Refcount::new(0).inc_not_zero());
    /// ```
    #[inline]
    #[must_use = "a failed inc_not_zero means the object is being freed"]
    #[track_caller]
    pub fn inc_not_zero(&self) -> bool {
        self.add_not_zero_unchecked(1)
    }

    /// [`inc_not_zero`](Self::inc_not_zero) with acquire ordering spelled out
    /// (`refcount_inc_not_zero_acquire`): for objects in type-stable memory,
    /// whose identity must be checked *after* the reference is taken.
    ///
    /// # Ordering
    ///
    /// **Acquire on success**, unordered on failure. Pairs with
    /// [`set_release`](Self::set_release).
    ///
    /// # Panics
    ///
    /// On saturation, if [`set_panic_on_saturate`] is on.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Refcount;
    /// let r = Refcount::new(0);
    /// r.set_release(1);
    /// assert!(r.inc_not_zero_acquire());
    /// ```
    #[inline]
    #[must_use = "a failed inc_not_zero means the object is being freed"]
    #[track_caller]
    pub fn inc_not_zero_acquire(&self) -> bool {
        self.add_not_zero_unchecked(1)
    }

    /// Takes `i` references unless the count is zero
    /// (`refcount_add_not_zero`); see [`inc_not_zero`](Self::inc_not_zero).
    ///
    /// # Ordering
    ///
    /// **Acquire on success**, unordered on failure. (Kernel: a control
    /// dependency on success.)
    ///
    /// # Panics
    ///
    /// If `i` is negative; on saturation, if [`set_panic_on_saturate`] is on.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Refcount;
    /// let r = Refcount::new(1);
    /// assert!(r.add_not_zero(2));
    /// assert_eq!(r.read(), 3);
    /// ```
    #[inline]
    #[must_use = "a failed add_not_zero means the object is being freed"]
    #[track_caller]
    pub fn add_not_zero(&self, i: i32) -> bool {
        assert!(i >= 0, "Refcount::add_not_zero: negative amount {i}");
        self.add_not_zero_unchecked(i)
    }

    /// [`add_not_zero`](Self::add_not_zero) with acquire ordering spelled out
    /// (`refcount_add_not_zero_acquire`).
    ///
    /// # Ordering
    ///
    /// **Acquire on success**, unordered on failure. Pairs with
    /// [`set_release`](Self::set_release).
    ///
    /// # Panics
    ///
    /// If `i` is negative; on saturation, if [`set_panic_on_saturate`] is on.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Refcount;
    /// let r = Refcount::new(2);
    /// assert!(r.add_not_zero_acquire(2));
    /// assert_eq!(r.read(), 4);
    /// ```
    #[inline]
    #[must_use = "a failed add_not_zero means the object is being freed"]
    #[track_caller]
    pub fn add_not_zero_acquire(&self, i: i32) -> bool {
        assert!(
            i >= 0,
            "Refcount::add_not_zero_acquire: negative amount {i}"
        );
        self.add_not_zero_unchecked(i)
    }

    #[inline]
    #[track_caller]
    fn add_not_zero_unchecked(&self, i: i32) -> bool {
        self.add_not_zero_within(i, None).is_ok()
    }

    /// The one `add_not_zero` loop: add `i` unless the count is zero or,
    /// with a `limit`, unless the result would exceed it. `Ok(old)` on
    /// success, `Err(old)` on failure. `i` is non-negative (checked by the
    /// callers). With `limit == None` the check folds away.
    #[inline]
    #[track_caller]
    fn add_not_zero_within(&self, i: i32, limit: Option<i32>) -> Result<i32, i32> {
        // Relaxed: only a first guess for the CAS; nothing is read through it.
        let mut old = self.refs.load(Ordering::Relaxed);
        loop {
            if old == 0 {
                return Err(0);
            }
            // Upstream computes `i > limit - old` in wrapping int arithmetic;
            // i64 gives the same answer wherever that one does not wrap.
            if let Some(limit) = limit {
                if i64::from(i) > i64::from(limit) - i64::from(old) {
                    return Err(old);
                }
            }
            // Acquire on success: stands in for the kernel's control
            // dependency (and is the _acquire variants' contract); pairs with
            // set_release() and with the Release decrements of other holders.
            // Relaxed on failure: we retry or give up, reading nothing.
            match self.refs.compare_exchange_weak(
                old,
                old.wrapping_add(i),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => old = now,
            }
        }
        if old < 0 || old.wrapping_add(i) < 0 {
            self.saturate(Saturation::AddNotZeroOverflow);
        }
        Ok(old)
    }

    /// Takes a reference unless the count is zero or already above `limit`
    /// (`__refcount_inc_not_zero_limited_acquire`).
    ///
    /// Returns `Ok(old)` on success and `Err(old)` on failure, where `old` is
    /// the value seen: `Err(0)` means the object is being freed, any other
    /// `Err` means one more reference would exceed `limit`. A failure changes
    /// nothing and reports nothing. This is the reader side of a refcount that
    /// doubles as a lock (the per-VMA lock: values above the limit mean "a
    /// writer is here"). A saturated (negative) count is not above any limit:
    /// the call succeeds and the count stays saturated, as upstream.
    ///
    /// # Errors
    ///
    /// `Err(old)` as above.
    ///
    /// # Ordering
    ///
    /// **Acquire on success**, unordered on failure.
    ///
    /// # Panics
    ///
    /// On saturation, if [`set_panic_on_saturate`] is on.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Refcount;
    /// let r = Refcount::new(1);
    /// assert_eq!(r.inc_not_zero_limited_acquire(2), Ok(1));
    /// assert_eq!(r.inc_not_zero_limited_acquire(2), Err(2)); // at the limit: refused
    /// assert_eq!(r.read(), 2);
    /// assert_eq!(Refcount::new(0).inc_not_zero_limited_acquire(2), Err(0));
    /// ```
    #[inline]
    #[track_caller]
    pub fn inc_not_zero_limited_acquire(&self, limit: i32) -> Result<i32, i32> {
        self.add_not_zero_limited_acquire(1, limit)
    }

    /// Takes `i` references unless the count is zero or the result would
    /// exceed `limit` (`__refcount_add_not_zero_limited_acquire`); see
    /// [`inc_not_zero_limited_acquire`](Self::inc_not_zero_limited_acquire).
    ///
    /// # Errors
    ///
    /// `Err(0)` if the count was zero, `Err(old)` if `old + i > limit`.
    ///
    /// # Ordering
    ///
    /// **Acquire on success**, unordered on failure.
    ///
    /// # Panics
    ///
    /// If `i` is negative; on saturation, if [`set_panic_on_saturate`] is on.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Refcount;
    /// let r = Refcount::new(1);
    /// assert_eq!(r.add_not_zero_limited_acquire(2, 3), Ok(1));
    /// assert_eq!(r.add_not_zero_limited_acquire(2, 3), Err(3));
    /// ```
    #[inline]
    #[track_caller]
    pub fn add_not_zero_limited_acquire(&self, i: i32, limit: i32) -> Result<i32, i32> {
        assert!(
            i >= 0,
            "Refcount::add_not_zero_limited_acquire: negative amount {i}"
        );
        self.add_not_zero_within(i, Some(limit))
    }

    /// Drops a reference that is known not to be the last (`refcount_dec`).
    ///
    /// Reaching zero here is a bug: nobody will free the object. The count
    /// saturates and [`Saturation::DecLeak`] is reported.
    ///
    /// # Ordering
    ///
    /// **Release**.
    ///
    /// # Panics
    ///
    /// On saturation, if [`set_panic_on_saturate`] is on.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Refcount;
    /// let r = Refcount::new(2);
    /// r.dec();
    /// assert_eq!(r.read(), 1);
    /// ```
    #[inline]
    #[track_caller]
    pub fn dec(&self) {
        // Release: our accesses to the object happen-before the fence(Acquire)
        // of whoever takes the count to zero in dec_and_test().
        let old = self.refs.fetch_sub(1, Ordering::Release);
        if old <= 1 {
            self.saturate(Saturation::DecLeak);
        }
    }

    /// Drops a reference; `true` means it was the last one and the caller
    /// must free the object (`refcount_dec_and_test`).
    ///
    /// A decrement below zero saturates and reports
    /// [`Saturation::SubUnderflow`]; a saturated count never returns `true`.
    ///
    /// # Ordering
    ///
    /// **Release; Acquire on success.** Every holder's accesses to the object
    /// happen-before the caller's free.
    ///
    /// # Panics
    ///
    /// On saturation, if [`set_panic_on_saturate`] is on.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Refcount;
    /// let r = Refcount::new(2);
    /// assert!(!r.dec_and_test());
    /// assert!(r.dec_and_test());
    /// ```
    #[inline]
    #[must_use = "true means the caller dropped the last reference and must free the object"]
    #[track_caller]
    pub fn dec_and_test(&self) -> bool {
        self.sub_and_test_unchecked(1)
    }

    /// Drops `i` references; `true` means they were the last
    /// (`refcount_sub_and_test`); see [`dec_and_test`](Self::dec_and_test).
    ///
    /// `i == 0` never returns `true` (upstream: true iff `old > 0 && old ==
    /// i`): on a live count it changes nothing; on a zero count, whose object
    /// is already being freed, it saturates and reports
    /// [`Saturation::SubUnderflow`], so a stray `sub_and_test(0)` cannot free
    /// twice.
    ///
    /// # Ordering
    ///
    /// **Release; Acquire on success.**
    ///
    /// # Panics
    ///
    /// If `i` is negative; on saturation, if [`set_panic_on_saturate`] is on.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Refcount;
    /// let r = Refcount::new(3);
    /// assert!(!r.sub_and_test(2));
    /// assert!(r.sub_and_test(1));
    /// ```
    #[inline]
    #[must_use = "true means the caller dropped the last reference and must free the object"]
    #[track_caller]
    pub fn sub_and_test(&self, i: i32) -> bool {
        assert!(i >= 0, "Refcount::sub_and_test: negative amount {i}");
        self.sub_and_test_unchecked(i)
    }

    #[inline]
    #[track_caller]
    fn sub_and_test_unchecked(&self, i: i32) -> bool {
        // Release: our accesses to the object happen-before the acquire fence
        // below, in whichever thread sees the count reach zero.
        let old = self.refs.fetch_sub(i, Ordering::Release);
        if old == i && old > 0 {
            // Acquire (smp_acquire__after_ctrl_dep): pairs with the Release
            // decrements of every other holder (their fetch_subs form the
            // release sequence we read from), so the free comes after all
            // their uses.
            acquire_after_final_dec(&self.refs);
            return true;
        }
        if old <= 0 || old.wrapping_sub(i) < 0 {
            self.saturate(Saturation::SubUnderflow);
        }
        false
    }

    /// Drops the reference only if it is the last one, taking the count from
    /// one to zero; `false` leaves the count unchanged (`refcount_dec_if_one`).
    ///
    /// The "try-delete" of a cache whose lookup structure holds the only
    /// reference while nobody else uses the object.
    ///
    /// # Ordering
    ///
    /// **Release; Acquire on success** (`AcqRel`); unordered on failure.
    /// (Kernel: RELEASE and a control dependency.)
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Refcount;
    /// let r = Refcount::new(2);
    /// assert!(!r.dec_if_one());
    /// r.dec();
    /// assert!(r.dec_if_one());
    /// assert_eq!(r.read(), 0);
    /// ```
    #[inline]
    #[must_use = "true means the count reached zero and the caller must free the object"]
    pub fn dec_if_one(&self) -> bool {
        // AcqRel on success: Release publishes our uses to whoever frees (us,
        // on success); Acquire stands in for the kernel's control dependency
        // and pairs with other holders' Release decrements before our free.
        // Relaxed on failure: no change, nothing read.
        self.refs
            .compare_exchange(1, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Drops a reference unless it is the last one (`refcount_dec_not_one`).
    ///
    /// Returns `false`, leaving the count at one, when the caller would drop
    /// the last reference; `true` otherwise. A saturated count returns `true`
    /// unchanged; a count of zero reports [`Saturation::SubUnderflow`] (without
    /// saturating, as upstream) and returns `true` unchanged.
    ///
    /// # Ordering
    ///
    /// **Release; Acquire on success** (`AcqRel`) when it decrements;
    /// unordered otherwise. (Kernel: RELEASE and a control dependency.)
    ///
    /// # Panics
    ///
    /// On a count of zero, if [`set_panic_on_saturate`] is on.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Refcount;
    /// let r = Refcount::new(2);
    /// assert!(r.dec_not_one());
    /// assert!(!r.dec_not_one());
    /// assert_eq!(r.read(), 1);
    /// ```
    #[inline]
    #[must_use = "false means this was the last reference and nothing was dropped"]
    #[track_caller]
    pub fn dec_not_one(&self) -> bool {
        // Relaxed: only a first guess for the CAS.
        let mut val = self.refs.load(Ordering::Relaxed);
        loop {
            if val == Self::SATURATED {
                return true;
            }
            if val == 1 {
                return false;
            }
            let new = val.wrapping_sub(1);
            if new < 0 {
                report(Saturation::SubUnderflow);
                return true;
            }
            // AcqRel on success: Release publishes our uses to whoever takes
            // the count to zero; Acquire stands in for the kernel's control
            // dependency (we know of no caller that needs it, but upstream
            // promises it). Relaxed on failure: we retry with the value seen.
            match self
                .refs
                .compare_exchange_weak(val, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => val = now,
            }
        }
    }

    /// Drops a reference; if it was the last, returns the locked `lock`
    /// (`refcount_dec_and_mutex_lock`).
    ///
    /// The lock is taken only when the count may reach zero, so the common
    /// case costs one CAS. When `Some(guard)` comes back the count is zero and
    /// the caller holds the lock: unlink the object from whatever the lock
    /// protects, then free it. A racing lookup under the same lock that bumps
    /// the count first makes this return `None`.
    ///
    /// A poisoned mutex is locked anyway: the kernel's locks have no poisoning,
    /// and leaving the count half-dropped would be worse. Check
    /// `Mutex::is_poisoned` if a panic under the lock matters to you.
    ///
    /// # Ordering
    ///
    /// **Release; Acquire on success, and the lock held.**
    ///
    /// # Blocking
    ///
    /// Locks `lock` when the count is one.
    ///
    /// # Panics
    ///
    /// On saturation, if [`set_panic_on_saturate`] is on.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Refcount;
    /// use std::sync::Mutex;
    ///
    /// let table = Mutex::new(vec!["entry"]);
    /// let refs = Refcount::new(2);
    /// assert!(refs.dec_and_lock(&table).is_none());
    /// if let Some(mut table) = refs.dec_and_lock(&table) {
    ///     table.clear(); // unlink under the lock, then free
    /// }
    /// assert!(table.lock().unwrap().is_empty());
    /// ```
    #[must_use = "Some(guard) means the count reached zero: unlink and free under the lock"]
    #[track_caller]
    pub fn dec_and_lock<'a, T>(&self, lock: &'a Mutex<T>) -> Option<MutexGuard<'a, T>> {
        if self.dec_not_one() {
            return None;
        }
        let guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.dec_and_test() {
            drop(guard);
            return None;
        }
        Some(guard)
    }

    /// Stores [`SATURATED`](Self::SATURATED), then reports (upstream
    /// `refcount_warn_saturate`: set first, so a panic leaves it poisoned).
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn saturate(&self, kind: Saturation) {
        // Relaxed: the poison value orders nothing; racing operations that
        // move it a little re-saturate when they observe the bad range.
        self.refs.store(Self::SATURATED, Ordering::Relaxed);
        report(kind);
    }
}

impl fmt::Debug for Refcount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.read();
        if v < 0 {
            write!(f, "Refcount(saturated: {v:#x})")
        } else {
            write!(f, "Refcount({v})")
        }
    }
}
