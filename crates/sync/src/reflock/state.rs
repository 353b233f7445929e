//! The count word seen from outside: its constants, the [`RefLockState`]
//! snapshot and the reader's [`TryReadError`]. The state table is in the
//! `reflock` module essay.

use std::error::Error;
use std::fmt;

/// The "readers excluded" bit (`VMA_LOCK_OFFSET`).
pub(super) const OFFSET: u32 = 0x4000_0000;
/// The largest count a reader may produce (`VMA_REF_LIMIT`).
pub(super) const READER_LIMIT: u32 = OFFSET - 1;

/// `lock_seq` of an object that was never attached: odd, and never reached
/// by a 64-bit sequence that starts at 0.
pub(super) const NEVER_LOCKED: u64 = u64::MAX;

/// Why [`RefLock::try_read`](crate::RefLock::try_read) or [`RefLock::read_locked`](crate::RefLock::read_locked) refused.
///
/// All are transient from the reader's point of view; the kernel's answer to
/// each is to fall back to the big lock, except `Detached`, where a fresh
/// lookup may find the object's replacement (`-EAGAIN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TryReadError {
    /// The object is detached (count 0): it left the domain, or was never
    /// attached. Look it up again (`-EAGAIN`).
    Detached,
    /// A writer holds or is taking the object's write lock, or an attach or
    /// detach owns it. Fall back to the big lock.
    WriteLocked,
    /// [`RefLock::READER_LIMIT`](crate::RefLock::READER_LIMIT) readers hold it. Fall back.
    Overflow,
    /// The memory was recycled: the object is attached to another domain, or
    /// under another key. Fall back or look up again.
    Reused,
}

impl fmt::Display for TryReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TryReadError::Detached => "the object is detached",
            TryReadError::WriteLocked => "the object is write-locked",
            TryReadError::Overflow => "the object's reader count is at its limit",
            TryReadError::Reused => "the object was reused for another domain or key",
        })
    }
}

impl Error for TryReadError {}

/// A snapshot of a [`RefLock`](crate::RefLock)'s count; see the state table in the
/// [module documentation](super).
///
/// # Examples
///
/// ```
/// use shrinker_sync::{RefLock, RefLockDomain};
/// let d = RefLockDomain::new(());
/// let obj = RefLock::new();
/// obj.attach(&d.write(), 0);
/// let _r = obj.try_read(&d, 0).unwrap();
/// let s = obj.state();
/// assert_eq!((s.raw(), s.readers()), (2, 1));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RefLockState(pub(super) u32);

impl RefLockState {
    /// The raw count.
    #[must_use]
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Count 0: in no domain.
    #[must_use]
    pub const fn is_detached(self) -> bool {
        self.0 == 0
    }

    /// Attached to a domain (count ≥ 1 without `OFFSET`; during `start_write`
    /// the object is attached too, but `readers_excluded` says so first).
    #[must_use]
    pub const fn is_attached(self) -> bool {
        self.0 != 0 && self.0 & OFFSET == 0
    }

    /// `OFFSET` is set: a writer, attach or detach keeps new readers out.
    #[must_use]
    pub const fn readers_excluded(self) -> bool {
        self.0 & OFFSET != 0
    }

    /// Readers holding a count (transient ones included) when attached and
    /// no writer is present; 0 otherwise.
    #[must_use]
    pub const fn readers(self) -> u32 {
        if self.is_attached() {
            self.0 - 1
        } else {
            0
        }
    }
}

impl fmt::Debug for RefLockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.is_detached() {
            "detached"
        } else if self.readers_excluded() {
            "readers excluded"
        } else {
            "attached"
        };
        write!(f, "RefLockState({:#x}: {what})", self.0)
    }
}
