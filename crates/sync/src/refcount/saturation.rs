//! Saturation: why a [`Refcount`](super::Refcount) stopped counting, and the
//! once-per-kind report (or panic) that says so. See "Reports" in the
//! `refcount` module essay.

use crate::sync::Ordering;
use std::fmt;
use std::sync::atomic::AtomicBool as StdAtomicBool;

/// Why a [`Refcount`](crate::Refcount) saturated: the kernel's `enum refcount_saturation_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Saturation {
    /// `inc_not_zero`/`add_not_zero` (any variant) saw a negative value or
    /// overflowed (`REFCOUNT_ADD_NOT_ZERO_OVF`).
    AddNotZeroOverflow,
    /// `inc`/`add` saw a negative value or overflowed (`REFCOUNT_ADD_OVF`).
    AddOverflow,
    /// `inc`/`add` on zero: the object is being freed (`REFCOUNT_ADD_UAF`).
    AddOnZero,
    /// A decrement went below zero (`REFCOUNT_SUB_UAF`); also reported, without
    /// saturating, by `dec_not_one` on zero.
    SubUnderflow,
    /// `dec` took the count to zero, where nobody will free the object
    /// (`REFCOUNT_DEC_LEAK`).
    DecLeak,
}

impl Saturation {
    const ALL: [Saturation; 5] = [
        Saturation::AddNotZeroOverflow,
        Saturation::AddOverflow,
        Saturation::AddOnZero,
        Saturation::SubUnderflow,
        Saturation::DecLeak,
    ];

    /// The kernel's message for this kind, as printed after `refcount_t: `.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::refcount::Saturation;
    /// assert_eq!(Saturation::AddOnZero.message(), "addition on 0; use-after-free");
    /// ```
    #[must_use]
    pub const fn message(self) -> &'static str {
        match self {
            Saturation::AddNotZeroOverflow | Saturation::AddOverflow => "saturated; leaking memory",
            Saturation::AddOnZero => "addition on 0; use-after-free",
            Saturation::SubUnderflow => "underflow; use-after-free",
            Saturation::DecLeak => "decrement hit 0; leaking memory",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Saturation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refcount_t: {}", self.message())
    }
}

// The report latches and the panic switch are process-wide diagnostics, not
// part of any protocol, so they are std atomics even under loom.
static PANIC_ON_SATURATE: StdAtomicBool = StdAtomicBool::new(false);
#[allow(clippy::declare_interior_mutable_const)] // only used to initialise WARNED
const NOT_WARNED: StdAtomicBool = StdAtomicBool::new(false);
static WARNED: [StdAtomicBool; Saturation::ALL.len()] = [NOT_WARNED; Saturation::ALL.len()];

/// Makes every [`Saturation`] report panic instead of logging once.
///
/// Process-wide; meant for test binaries (the kernel's `panic_on_warn`). The
/// counter is saturated *before* the panic, so unwinding past the faulty call
/// leaves it poisoned, never freed. Because the switch is global, tests that
/// turn it on belong in their own test binary.
///
/// # Examples
///
/// ```
/// use shrinker_sync::{refcount, Refcount};
///
/// refcount::set_panic_on_saturate(true);
/// let r = Refcount::new(0);
/// let caught = std::panic::catch_unwind(|| r.inc());
/// assert!(caught.is_err());
/// assert_eq!(r.read(), Refcount::SATURATED);
/// refcount::set_panic_on_saturate(false);
/// ```
pub fn set_panic_on_saturate(on: bool) {
    // Relaxed: a diagnostic switch; no data is published through it.
    PANIC_ON_SATURATE.store(on, Ordering::Relaxed);
}

/// Reports `kind` once per process, or panics if [`set_panic_on_saturate`].
#[cold]
#[inline(never)]
#[track_caller]
pub(super) fn report(kind: Saturation) {
    // Relaxed (both): diagnostics only.
    if PANIC_ON_SATURATE.load(Ordering::Relaxed) {
        panic!("{kind}");
    }
    if !WARNED[kind.index()].swap(true, Ordering::Relaxed) {
        let at = std::panic::Location::caller();
        tracing::error!(
            target: "shrinker_sync::refcount",
            kind = ?kind,
            location = %at,
            backtrace = %std::backtrace::Backtrace::capture(),
            "{kind}"
        );
    }
}
