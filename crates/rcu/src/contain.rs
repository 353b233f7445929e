//! Containing panics thrown by user code that the machinery runs: callbacks,
//! `tracing` subscribers, and the `Drop` of a panic payload.
//!
//! The callback worker and the read side's first registration run user code
//! they must survive; everything here catches what that code throws, however
//! hostile, and never lets it unwind into the machinery.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Run `report` (a `tracing` event: the subscriber is user code), containing
/// a panic, so that no subscriber can break the machinery that reports.
pub(crate) fn report_contained(report: impl FnOnce()) {
    if let Err(subscriber_panic) = catch_unwind(AssertUnwindSafe(report)) {
        drop_payload(subscriber_panic);
    }
}

/// Drop a caught panic payload. Its `Drop` is user code and may panic in
/// turn (`std::panic::panic_any(PanicsOnDrop)`); that panic is caught too,
/// and its payload dropped the same way, up to a few rounds: a payload chain
/// longer than that is leaked rather than dropped, a bounded leak on a path
/// only a hostile payload takes, instead of a dead worker.
pub(crate) fn drop_payload(payload: Box<dyn std::any::Any + Send>) {
    let mut payload = payload;
    for _ in 0..4 {
        match catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            Ok(()) => return,
            Err(again) => payload = again,
        }
    }
    std::mem::forget(payload);
}

/// The message of a caught panic, for the report.
#[cfg_attr(loom, allow(dead_code))] // loom propagates callback panics
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}
