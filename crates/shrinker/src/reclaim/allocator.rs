//! Giving freed memory back to the system.
//!
//! A shrinker that drops a value returns its memory to the allocator, not
//! to the system: glibc keeps freed chunks in its arenas (large ones above
//! the mmap threshold aside, and that threshold grows as large blocks are
//! freed), jemalloc and mimalloc keep dirty pages for a decay time. Until
//! the allocator lets go, the cgroup's usage does not fall, and the OOM
//! killer does not care what the shrinkers reported. So after a walk that
//! freed enough, the reclaimer calls the allocator's return:
//!
//! * glibc: `malloc_trim(0)`, which releases every whole free page, in the
//!   middle of the heap too (glibc ≥ 2.8), with `MADV_DONTNEED`; it is what
//!   systemd's default memory-pressure handler does, and only that.
//! * jemalloc: `arena.<i>.purge` (or `arena.4096.purge` for all arenas)
//!   through `mallctl`, e.g. with the `tikv-jemalloc-ctl` crate; mimalloc:
//!   `mi_collect(true)`. Give it as [`AllocatorReturn::Hook`].

use std::fmt;
use std::sync::Arc;

/// How the reclaimer returns freed memory to the system.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum AllocatorReturn {
    /// `malloc_trim(0)` where the C library is glibc; nothing elsewhere.
    #[default]
    Auto,
    /// Call this (a jemalloc purge, `mi_collect(true)`, …).
    Hook(Arc<dyn Fn() + Send + Sync>),
    /// Do nothing (an allocator that returns memory by itself).
    Disabled,
}

impl fmt::Debug for AllocatorReturn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AllocatorReturn::Auto => "Auto",
            AllocatorReturn::Hook(_) => "Hook(..)",
            AllocatorReturn::Disabled => "Disabled",
        })
    }
}

impl AllocatorReturn {
    /// Give freed memory back now.
    ///
    /// # Blocking
    ///
    /// `malloc_trim` walks the heap under glibc's arena locks: other
    /// threads' allocations wait for it (milliseconds on a large heap).
    pub fn release(&self) {
        match self {
            AllocatorReturn::Auto => glibc_trim(),
            AllocatorReturn::Hook(f) => f(),
            AllocatorReturn::Disabled => {}
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_trim() {
    extern "C" {
        /// glibc's `int malloc_trim(size_t pad)`.
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: `malloc_trim` takes a plain integer, touches only the
    // allocator's own state under its own locks, and may be called from
    // any thread at any time.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc_trim() {}
