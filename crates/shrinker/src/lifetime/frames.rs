//! "This thread is inside X": a chain of frames on the callers' stacks,
//! one per callout (into a shrinker) or walk (of a group) in progress on
//! this thread, innermost first.
//!
//! Unregister and group removal wait for every callout into their object;
//! called from inside one, they would wait for themselves. They ask
//! [`is_inside`] first and panic naming the misuse instead. One stack
//! serves both: a frame names its object by address, and a shrinker object
//! and a group's data never share one.

use std::cell::Cell;
use std::ptr;

/// One callout or walk in progress on this thread.
pub(crate) struct Frame {
    target: *const (),
    outer: *const Frame,
}

#[cfg(not(loom))]
std::thread_local! {
    static INNERMOST: Cell<*const Frame> = const { Cell::new(ptr::null()) };
}
#[cfg(loom)]
loom::thread_local! {
    static INNERMOST: Cell<*const Frame> = Cell::new(ptr::null());
}

impl Frame {
    /// A frame for `target`, pointing at this thread's current innermost
    /// one (not yet linked itself: see [`Mark::enter`]).
    #[inline]
    pub(crate) fn new<T>(target: *const T) -> Self {
        Frame {
            target: target.cast(),
            outer: INNERMOST.try_with(Cell::get).unwrap_or(ptr::null()),
        }
    }
}

/// Makes `frame` this thread's innermost until the mark drops. The frame
/// must be declared before the mark, so that the mark (unlinking it) drops
/// first.
pub(crate) struct Mark(*const Frame);

impl Mark {
    #[inline]
    pub(crate) fn enter(frame: &Frame) -> Self {
        // `try_with`: during thread teardown the marker is simply gone.
        let _ = INNERMOST.try_with(|c| c.set(frame));
        Mark(frame.outer)
    }
}

impl Drop for Mark {
    #[inline]
    fn drop(&mut self) {
        let outer = self.0;
        let _ = INNERMOST.try_with(|c| c.set(outer));
    }
}

/// Run `f` with `target` marked as entered by this thread. Nested entries
/// chain.
#[inline]
pub(crate) fn with_frame<T, R>(target: *const T, f: impl FnOnce() -> R) -> R {
    let frame = Frame::new(target);
    // Declared after `frame`, so dropped (unlinking `frame`) before it.
    let _mark = Mark::enter(&frame);
    f()
}

/// Is this thread inside a frame for `target`?
pub(crate) fn is_inside<T>(target: *const T) -> bool {
    let target = target.cast::<()>();
    let mut f = INNERMOST.try_with(Cell::get).unwrap_or(ptr::null());
    // SAFETY: every frame in the chain lives on the stack of a call still
    // running on this thread that linked it with a `Mark` (each unlinks
    // itself before it dies).
    while let Some(frame) = unsafe { f.as_ref() } {
        if ptr::eq(frame.target, target) {
            return true;
        }
        f = frame.outer;
    }
    false
}
