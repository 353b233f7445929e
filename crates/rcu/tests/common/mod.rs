//! Helpers shared by the integration tests of this crate (`mod common;`).

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Run `body` on its own thread; fail if it has not finished within `secs`,
/// so that a regression that blocks (a deadlock, a dead callback worker)
/// fails the test instead of hanging the suite. The thread is left behind
/// on a timeout: the process ends with the test binary. A panic of `body`
/// is the test's panic.
pub fn with_deadline(secs: u64, what: &str, body: impl FnOnce() + Send + 'static) {
    let (done_tx, done_rx) = mpsc::channel();
    let t = thread::spawn(move || {
        body();
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => t.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The body panicked: report its panic.
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p)
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: not done after {secs} s"),
    }
}
