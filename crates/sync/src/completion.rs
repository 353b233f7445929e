//! [`Completion`]: the kernel's `struct completion`, "this has happened", as
//! counted tokens.
//!
//! # The problem
//!
//! Teardown often has to wait for an event that happens on another thread:
//! the last reference dropped, a worker finished, a device quiesced. A flag
//! plus a condition variable does it, but every user rewrites the same loop
//! and gets the lost-wake-up and the reuse cases slightly wrong. A completion
//! packages it: `complete()` on one side, `wait()` on the other, in either
//! order.
//!
//! # States
//!
//! `done` counts tokens; every state change happens under one mutex.
//!
//! | `done` | meaning |
//! |---|---|
//! | `0` | not completed: waiters block |
//! | `1..DONE_ALL` | that many [`complete`](Completion::complete) calls not yet consumed; each successful wait takes one |
//! | `DONE_ALL` (`u32::MAX`) | [`complete_all`](Completion::complete_all) happened: done for good; waits succeed without consuming until [`reinit`](Completion::reinit) |
//!
//! ```text
//!            complete()            complete()
//!   [0] -------------------> [1] --------------> [2] ...
//!    ^   <------------------  |   <-------------
//!    |     wait / try_wait         wait / try_wait
//!    |
//!    +------- reinit() -------- [DONE_ALL] <------ complete_all() (from any state)
//! ```
//!
//! Tokens stop counting at `DONE_ALL - 1` (upstream would step into the
//! done-for-good state instead; four billion unconsumed tokens is a bug either
//! way).
//!
//! # Ordering
//!
//! Everything the completer wrote before `complete()`/`complete_all()`
//! happens-before the return of any `wait` that consumed (or, after
//! `complete_all`, observed) that completion: `complete` releases the mutex
//! after changing `done`, and the waiter acquires it before reading `done`.
//!
//! # Differences from the kernel
//!
//! Waiters are woken through a `std::sync::Condvar`, which does not promise
//! the kernel's FIFO order among several waiters. There are no
//! interruptible/killable variants: userspace threads have no signals to
//! abort a wait. [`wait_timeout`](Completion::wait_timeout) takes a
//! `Duration` and returns whether it consumed a token.
//!
//! # Lifetime
//!
//! The kernel's `completion_done()` takes and drops the lock so that a
//! completer still inside `complete()` is finished touching the completion
//! before the waiter frees it. Rust's borrows give that for free: `complete`
//! holds `&self` until it returns, so the completion cannot be dropped under
//! it.

use crate::sync::{AtomicU32, Condvar, Mutex, MutexGuard, Ordering};
use std::fmt;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

/// `done` after [`Completion::complete_all`]: sticky until `reinit`.
const DONE_ALL: u32 = u32::MAX;

/// Counted "this has happened" tokens (`struct completion`).
///
/// # Examples
///
/// ```
/// use shrinker_sync::Completion;
/// use std::sync::Arc;
///
/// let done = Arc::new(Completion::new());
/// let worker = {
///     let done = Arc::clone(&done);
///     std::thread::spawn(move || {
///         // ... work ...
///         done.complete();
///     })
/// };
/// done.wait(); // sees everything the worker wrote before complete()
/// worker.join().unwrap();
/// assert!(!done.try_wait(), "the one token was consumed");
/// ```
pub struct Completion {
    /// The token count (see the module's state table). Written only with
    /// `lock` held; read without it only to answer "nothing yet" early.
    done: AtomicU32,
    /// Serialises every change of `done` (upstream: `wait.lock`).
    lock: Mutex<()>,
    /// Waiters blocked while `done == 0`.
    cond: Condvar,
}

impl Completion {
    /// A completion with no tokens (`init_completion`).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Completion;
    /// assert!(!Completion::new().is_done());
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self {
            done: AtomicU32::new(0),
            lock: Mutex::new(()),
            cond: Condvar::new(),
        }
    }

    #[inline]
    fn lock(&self) -> MutexGuard<'_, ()> {
        // The mutex guards no data and no code under it panics; recover from
        // poison rather than propagate a stranger's panic.
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds one token and wakes one waiter (`complete`).
    ///
    /// A `complete()` with nobody waiting is not lost: the next wait consumes
    /// it. After [`complete_all`](Self::complete_all) this does nothing.
    ///
    /// # Ordering
    ///
    /// **Release** (the mutex): everything written before this call is
    /// visible to the wait that consumes the token.
    ///
    /// # Blocking
    ///
    /// Only on the completion's internal mutex, which every holder keeps for
    /// a few instructions; it never waits for an event.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Completion;
    /// let c = Completion::new();
    /// c.complete();
    /// c.complete();
    /// assert!(c.try_wait());
    /// assert!(c.try_wait());
    /// assert!(!c.try_wait());
    /// ```
    pub fn complete(&self) {
        let _guard = self.lock();
        // Relaxed (load and store): `done` only changes under `lock`, whose
        // release/acquire orders these accesses against every other one.
        let done = self.done.load(Ordering::Relaxed);
        if done != DONE_ALL {
            self.done
                .store((done + 1).min(DONE_ALL - 1), Ordering::Relaxed);
        }
        self.cond.notify_one();
    }

    /// Completes for good and wakes every waiter (`complete_all`).
    ///
    /// Every later wait succeeds at once without consuming anything, until
    /// [`reinit`](Self::reinit).
    ///
    /// # Ordering
    ///
    /// **Release** (the mutex): everything written before this call is
    /// visible to every wait that returns because of it.
    ///
    /// # Blocking
    ///
    /// Only on the completion's internal mutex, which every holder keeps for
    /// a few instructions; it never waits for an event.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Completion;
    /// let c = Completion::new();
    /// c.complete_all();
    /// c.wait();
    /// c.wait();
    /// assert!(c.is_done());
    /// ```
    pub fn complete_all(&self) {
        let _guard = self.lock();
        // Relaxed: under `lock`, as in complete().
        self.done.store(DONE_ALL, Ordering::Relaxed);
        self.cond.notify_all();
    }

    /// Takes one token under the lock if there is one; `true` if it did.
    #[inline]
    fn consume_locked(&self, _guard: &MutexGuard<'_, ()>) -> bool {
        // Relaxed: under `lock` (the guard proves it).
        match self.done.load(Ordering::Relaxed) {
            0 => false,
            DONE_ALL => true,
            n => {
                self.done.store(n - 1, Ordering::Relaxed);
                true
            }
        }
    }

    /// Blocks until a token is available, then consumes it
    /// (`wait_for_completion`).
    ///
    /// # Ordering
    ///
    /// **Acquire** (the mutex): pairs with the `complete`/`complete_all`
    /// whose token it took.
    ///
    /// # Blocking
    ///
    /// Sleeps until a token arrives, with no timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Completion;
    /// let c = Completion::new();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| c.complete());
    ///     c.wait();
    /// });
    /// ```
    pub fn wait(&self) {
        let mut guard = self.lock();
        while !self.consume_locked(&guard) {
            guard = self
                .cond
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Like [`wait`](Self::wait), but gives up after `timeout`
    /// (`wait_for_completion_timeout`). Returns `true` if it consumed a token.
    ///
    /// # Ordering
    ///
    /// **Acquire** (the mutex) when it returns `true`; unordered when it times
    /// out.
    ///
    /// # Blocking
    ///
    /// Sleeps for at most about `timeout`. (Under loom, timeouts are not
    /// modelled: the wait behaves like [`wait`](Self::wait).)
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Completion;
    /// use std::time::Duration;
    /// let c = Completion::new();
    /// assert!(!c.wait_timeout(Duration::from_millis(1)));
    /// c.complete();
    /// assert!(c.wait_timeout(Duration::from_secs(1)));
    /// ```
    #[must_use = "false means the wait timed out and nothing was consumed"]
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut guard = self.lock();
        loop {
            if self.consume_locked(&guard) {
                return true;
            }
            let left = match deadline {
                // A timeout too large for Instant: wait without one.
                None => Duration::MAX,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return false,
                },
            };
            guard = self
                .cond
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Consumes a token if one is available, without blocking
    /// (`try_wait_for_completion`). Returns `true` if it did.
    ///
    /// # Ordering
    ///
    /// **Acquire** (the mutex) when it returns `true`; unordered otherwise.
    ///
    /// # Blocking
    ///
    /// Only on the internal mutex, and only when a token may be present.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Completion;
    /// let c = Completion::new();
    /// assert!(!c.try_wait());
    /// c.complete();
    /// assert!(c.try_wait());
    /// ```
    #[must_use = "true means a token was consumed"]
    pub fn try_wait(&self) -> bool {
        // Relaxed: an early "nothing yet" needs no ordering (upstream's
        // lockless READ_ONCE); a completion that happened-before this call is
        // seen by coherence. Positive answers are re-read under the lock.
        if self.done.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let guard = self.lock();
        self.consume_locked(&guard)
    }

    /// Whether a token is available, without consuming it (`completion_done`).
    ///
    /// A snapshot: after `complete_all` it says nothing about waiters still
    /// asleep, and a `true` does not promise that a later `try_wait` wins.
    ///
    /// # Ordering
    ///
    /// **Acquire** (the mutex) when it returns `true`; unordered otherwise.
    ///
    /// # Blocking
    ///
    /// Only on the internal mutex, and only when a token may be present.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Completion;
    /// let c = Completion::new();
    /// c.complete();
    /// assert!(c.is_done());
    /// assert!(c.is_done(), "is_done does not consume");
    /// ```
    #[must_use]
    pub fn is_done(&self) -> bool {
        // Relaxed: as in try_wait().
        if self.done.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let _guard = self.lock();
        // Relaxed: under `lock`.
        self.done.load(Ordering::Relaxed) != 0
    }

    /// Forgets every token, including a `complete_all` (`reinit_completion`).
    ///
    /// For reuse. The caller must make sure every waiter of the previous use
    /// has returned: a waiter still asleep sleeps on into the next use.
    ///
    /// # Ordering
    ///
    /// **Release** (the mutex), which orders nothing useful on its own: reuse
    /// needs the caller's own synchronisation with the previous waiters.
    ///
    /// # Blocking
    ///
    /// Only on the completion's internal mutex, which every holder keeps for
    /// a few instructions; it never waits for an event.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::Completion;
    /// let c = Completion::new();
    /// c.complete_all();
    /// c.reinit();
    /// assert!(!c.try_wait());
    /// ```
    pub fn reinit(&self) {
        let _guard = self.lock();
        // Relaxed: under `lock`.
        self.done.store(0, Ordering::Relaxed);
    }
}

impl Default for Completion {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Relaxed: a snapshot for display.
        match self.done.load(Ordering::Relaxed) {
            DONE_ALL => f.write_str("Completion(done for good)"),
            n => write!(f, "Completion({n} tokens)"),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn tokens_are_counted() {
        let c = Completion::new();
        for _ in 0..3 {
            c.complete();
        }
        for _ in 0..3 {
            assert!(c.try_wait());
        }
        assert!(!c.try_wait());
        assert!(!c.is_done());
    }

    #[test]
    fn complete_all_is_sticky_until_reinit() {
        let c = Completion::new();
        c.complete();
        c.complete_all();
        for _ in 0..5 {
            assert!(c.try_wait());
            c.wait();
        }
        c.complete(); // no effect after complete_all
        assert_eq!(format!("{c:?}"), "Completion(done for good)");
        c.reinit();
        assert!(!c.is_done());
        assert!(!c.try_wait());
        c.complete();
        assert!(c.try_wait());
        assert!(!c.try_wait());
    }

    #[test]
    fn wait_timeout_without_token_times_out() {
        let c = Completion::new();
        assert!(!c.wait_timeout(Duration::ZERO));
        assert!(!c.wait_timeout(Duration::from_millis(2)));
        c.complete();
        assert!(
            c.wait_timeout(Duration::ZERO),
            "a token present wins even with zero timeout"
        );
        assert!(!c.try_wait());
    }

    #[test]
    fn wait_timeout_huge_duration_still_returns_on_complete() {
        let c = Completion::new();
        std::thread::scope(|s| {
            s.spawn(|| c.complete());
            assert!(c.wait_timeout(Duration::MAX));
        });
    }

    #[test]
    fn complete_publishes_prior_writes() {
        let rounds = if cfg!(miri) { 10 } else { 200 };
        for _ in 0..rounds {
            let data = Arc::new(AtomicUsize::new(0));
            let c = Arc::new(Completion::new());
            let t = {
                let (data, c) = (Arc::clone(&data), Arc::clone(&c));
                std::thread::spawn(move || {
                    // Relaxed on purpose: the completion must order it.
                    data.store(42, Ordering::Relaxed);
                    c.complete();
                })
            };
            c.wait();
            assert_eq!(data.load(Ordering::Relaxed), 42);
            t.join().unwrap();
        }
    }

    #[test]
    fn complete_all_wakes_every_waiter() {
        let c = Completion::new();
        let woken = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    c.wait();
                    woken.fetch_add(1, Ordering::Relaxed);
                });
            }
            c.complete_all();
        });
        assert_eq!(woken.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn each_complete_releases_exactly_one_waiter() {
        let c = Completion::new();
        let woken = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    c.wait();
                    woken.fetch_add(1, Ordering::Relaxed);
                });
            }
            for _ in 0..3 {
                c.complete();
            }
        });
        assert_eq!(woken.load(Ordering::Relaxed), 3);
        assert!(!c.try_wait(), "three tokens, three waiters, none left");
    }
}
