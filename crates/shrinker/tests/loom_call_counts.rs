//! loom model of the per-thread `count` call counters
//! (src/registry/call_counts.rs): a walker's bump on a shrinker, its pin's
//! release, the shrinker's free (which zeroes the slot everywhere and frees
//! it), the slot's reuse by a new shrinker, and the walker's bump of that
//! one after pinning it.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release -p shrinker --test loom_call_counts`
//!
//! The pin is modelled by its orderings only: `put` (Release) and
//! unregister's wait (Acquire) as `unpinned`; register's `activate`
//! (Release) and the walker's pin (Acquire) as `published`.
//!
//! What fails the model: a count of the freed shrinker surviving into the
//! new one (the zeroing store not last in the counter's modification
//! order, or not seen by the walker's next load), or a count lost when the
//! walker's thread exits and its table is folded. Mutations checked by
//! hand: making either flag Relaxed, or dropping the zeroing of live
//! threads' tables in `release`, fails it.
#![cfg(loom)]

use std::sync::Arc;

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use shrinker::loom_hooks::{calls_alloc, calls_bump, calls_read, calls_release, calls_thread_exit};

fn wait(flag: &AtomicBool) {
    while !flag.load(Ordering::Acquire) {
        thread::yield_now();
    }
}

#[test]
fn count_calls_stay_exact_across_unregister_and_slot_reuse() {
    loom::model(|| {
        let old = calls_alloc();
        let unpinned = Arc::new(AtomicBool::new(false));
        let published = Arc::new(AtomicBool::new(false));
        let walker = {
            let (unpinned, published) = (unpinned.clone(), published.clone());
            thread::spawn(move || {
                // Visits to the old shrinker (the first grows the thread's
                // table under the mutex, the second is the lock-free fast
                // path), then the pin's release.
                calls_bump(old);
                calls_bump(old);
                unpinned.store(true, Ordering::Release);
                // A visit to the new one, after pinning it.
                wait(&published);
                calls_bump(old);
                // The thread's exit (its thread-local destructor's work).
                calls_thread_exit();
            })
        };
        let owner = {
            let (unpinned, published) = (unpinned.clone(), published.clone());
            thread::spawn(move || {
                // Unregister waits for the pin; the object is freed.
                wait(&unpinned);
                calls_release(old);
                // A new shrinker takes the freed slot and is registered.
                let new = calls_alloc();
                assert_eq!(new, old, "the freed slot is reused");
                published.store(true, Ordering::Release);
                new
            })
        };
        walker.join().unwrap();
        let new = owner.join().unwrap();
        // The walker has exited: its table was folded into what exited
        // threads leave. Only the new shrinker's one call remains.
        let reader = thread::spawn(move || calls_read(new));
        assert_eq!(reader.join().unwrap(), 1);
    });
}
