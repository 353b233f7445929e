//! The refill guard: a capacity cut under pressure stays cut until the
//! pressure has been gone for a while, then grows back step by step.
//!
//! # Why
//!
//! A cache with a capacity refills as soon as it is shrunk: the next misses
//! insert again what reclaim just freed, the memory comes straight back, and
//! reclaim runs again (thrash). So the adapters that shrink by capacity do
//! not only evict: they *lower the capacity* to what is left, and keep it
//! there (the "sticky cap").
//!
//! # The rule
//!
//! 1. A shrink lowers the cap (never raises it) and restarts the quiet time.
//! 2. While the pressure level is not [`Level::None`] the cap holds.
//! 3. Once the level has been None for [`RefillPolicy::cool_down`]
//!    (default 30 s) — counted from the later of the last shrink and the
//!    level's last change — the cap grows by one step
//!    ([`RefillPolicy::steps`]: 1/8 of the configured capacity by default),
//!    then by one more step every [`RefillPolicy::step_interval`] (default
//!    5 s), up to the configured capacity. From a cache shrunk to nothing
//!    that is 30 + 7 × 5 = 65 s.
//! 4. A new pressure stops the growth (rule 2), and the next shrink steps
//!    the cap down again from wherever it stands (rule 1).
//!
//! The level comes from a [`LevelWatch`] (the reclaimer's,
//! [`Reclaimer::level_watch`](shrinker::reclaim::Reclaimer::level_watch));
//! without one (a plain [`ShrinkerRegistry::shrink`](shrinker::ShrinkerRegistry::shrink)
//! driven by hand) the level counts as None and the cool-down runs from the
//! last shrink alone: the same rule, by time.
//!
//! # Who moves the clock
//!
//! Nothing runs in the background. The growth is applied lazily, by the
//! next access to the cache through its adapter (a `Deref`, a `lock`, an
//! `insert`: each adapter says which), or by an explicit
//! [`maintain`](crate::lru::LruShrinker::maintain). A cache nobody touches
//! needs no capacity back.
//!
//! # Cost
//!
//! While the cap equals the configured capacity an access pays one relaxed
//! atomic load. While capped it pays that, a load of the level, one read of
//! the [`Clock`] and a compare with the next due time; only when a step is
//! due does it take the guard's mutex (with `try_lock`: an access never
//! waits for a shrink in progress).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shrinker::reclaim::LevelWatch;
use shrinker_pressure::Level;

use crate::clock::{Clock, SystemClock};

/// How a cut capacity comes back. See [`RefillGuard`] for the rule.
///
/// # Examples
///
/// ```
/// use shrinker_adapters::RefillPolicy;
/// use std::time::Duration;
///
/// let p = RefillPolicy::default();
/// assert_eq!(p.cool_down, Duration::from_secs(30));
/// assert_eq!(p.step_interval, Duration::from_secs(5));
/// assert_eq!(p.steps, 8);
/// // No stickiness at all: the capacity comes back at the next access.
/// let eager = RefillPolicy { cool_down: Duration::ZERO, steps: 1, ..p };
/// # let _ = eager;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefillPolicy {
    /// How long the level must have been None (and no shrink have run)
    /// before the cap grows at all: 30 s.
    pub cool_down: Duration,
    /// Time between two growth steps: 5 s.
    pub step_interval: Duration,
    /// The configured capacity comes back in this many steps (each step
    /// adds `configured / steps`, rounded up): 8. Zero counts as 1.
    pub steps: u32,
}

impl Default for RefillPolicy {
    fn default() -> Self {
        RefillPolicy {
            cool_down: Duration::from_secs(30),
            step_interval: Duration::from_secs(5),
            steps: 8,
        }
    }
}

/// The sticky cap of one cache.
///
/// 1. A shrink lowers the cap (never raises it) and restarts the quiet time.
/// 2. While the pressure level is not [`Level::None`] the cap holds.
/// 3. Once the level has been None for [`RefillPolicy::cool_down`]
///    (default 30 s), counted from the later of the last shrink and the
///    level's last change, the cap grows by one step (1/8 of the configured
///    capacity by default), then by one more every
///    [`RefillPolicy::step_interval`] (5 s), up to the configured capacity.
/// 4. A new pressure stops the growth (rule 2); the next shrink steps the
///    cap down again from wherever it stands (rule 1).
///
/// Without a [`LevelWatch`] the level counts as None: the cap comes back by
/// time since the last shrink. Growth is applied lazily by
/// [`poll`](Self::poll), which the adapters call on access to the cache:
/// one relaxed load while not capped; while capped, a level load, a clock
/// read and, only when a step is due, a `try_lock`.
///
/// Capacities are in the cache's own unit: entries for `lru`, weight for
/// `quick_cache`, `moka` and `foyer`. The adapters own one each; it is
/// public for adapters of your own.
///
/// # Invariants
///
/// `1 <= state.cap <= configured`; `capped == (state.cap < configured)`
/// whenever the mutex is free; `cap_hint` equals `state.cap` whenever the
/// mutex is free.
pub struct RefillGuard {
    configured: u64,
    /// Relaxed mirror of `state.cap < configured`: the fast path's only load.
    capped: AtomicBool,
    /// Relaxed mirror of `state.cap`, for readers that only report it.
    cap_hint: AtomicU64,
    /// Nanoseconds after `base` before which no growth step can be due (a
    /// lower bound: due times only move later, see `due`).
    next_due: AtomicU64,
    base: Instant,
    state: Mutex<State>,
    watch: Option<LevelWatch>,
    clock: Arc<dyn Clock>,
    policy: RefillPolicy,
}

#[derive(Debug)]
struct State {
    cap: u64,
    last_shrink: Option<Instant>,
    last_grow: Option<Instant>,
}

impl RefillGuard {
    /// A guard for a cache whose capacity is `configured` (at least 1),
    /// watching `watch` if given, reading time from `clock`.
    #[must_use]
    pub fn new(
        configured: u64,
        policy: RefillPolicy,
        watch: Option<LevelWatch>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let configured = configured.max(1);
        RefillGuard {
            configured,
            capped: AtomicBool::new(false),
            cap_hint: AtomicU64::new(configured),
            next_due: AtomicU64::new(0),
            base: clock.now(),
            state: Mutex::new(State {
                cap: configured,
                last_shrink: None,
                last_grow: None,
            }),
            watch,
            clock,
            policy,
        }
    }

    /// A guard on the system clock, without a level watch, default policy.
    #[must_use]
    pub fn with_capacity(configured: u64) -> Self {
        Self::new(
            configured,
            RefillPolicy::default(),
            None,
            Arc::new(SystemClock),
        )
    }

    /// The capacity the cache was configured with: what the guard grows
    /// back to.
    #[inline]
    #[must_use]
    pub fn configured(&self) -> u64 {
        self.configured
    }

    /// The cap now (equal to [`configured`](Self::configured) when not
    /// capped).
    #[inline]
    #[must_use]
    pub fn cap(&self) -> u64 {
        // Relaxed: a report; the authoritative value is under the mutex.
        self.cap_hint.load(Ordering::Relaxed)
    }

    /// Whether the cap is below the configured capacity.
    #[inline]
    #[must_use]
    pub fn is_capped(&self) -> bool {
        // Relaxed: a hint (see `poll`).
        self.capped.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves `State` consistent before calling
        // out, so poisoning carries no information.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, st: &State) {
        // Relaxed (both): hints for the fast path, rechecked under the mutex.
        self.cap_hint.store(st.cap, Ordering::Relaxed);
        self.capped
            .store(st.cap < self.configured, Ordering::Relaxed);
    }

    /// Shrink under the guard: `f` gets the current cap, evicts, and
    /// returns the new cap it applied to the cache (clamped to
    /// `1..=current`: a shrink never raises the cap) and a result.
    ///
    /// # Blocking
    ///
    /// Holds the guard's mutex while `f` runs; concurrent accesses do not
    /// wait for it (they `try_lock`), other shrinks and growth do.
    pub fn shrink<R>(&self, f: impl FnOnce(u64) -> (u64, R)) -> R {
        let mut st = self.lock();
        let (new_cap, r) = f(st.cap);
        st.cap = new_cap.clamp(1, st.cap);
        st.last_shrink = Some(self.clock.now());
        self.publish(&st);
        r
    }

    /// The growth rule: if a step is due, compute the new cap, call
    /// `apply(new_cap)` (which gives the cache its capacity back) and
    /// return true. Cheap when nothing is due (module docs, "Cost").
    #[inline]
    pub fn poll(&self, apply: impl FnOnce(u64)) -> bool {
        if !self.is_capped() {
            return false;
        }
        self.poll_slow(apply)
    }

    #[cold]
    fn poll_slow(&self, apply: impl FnOnce(u64)) -> bool {
        if self
            .watch
            .as_ref()
            .is_some_and(|w| w.level() != Level::None)
        {
            return false; // Rule 2.
        }
        let now = self.clock.now();
        // Relaxed: a lower bound written under the mutex; a stale (earlier)
        // value only sends us to the mutex, which rechecks.
        if self.nanos(now) < self.next_due.load(Ordering::Relaxed) {
            return false;
        }
        let Ok(mut st) = self.state.try_lock() else {
            return false; // A shrink or a step is running: no waiting here.
        };
        if st.cap >= self.configured {
            return false;
        }
        let due = self.due(&st);
        if now < due {
            // Relaxed: see the load above.
            self.next_due.store(self.nanos(due), Ordering::Relaxed);
            return false;
        }
        let step = self
            .configured
            .div_ceil(u64::from(self.policy.steps.max(1)))
            .max(1);
        st.cap = st.cap.saturating_add(step).min(self.configured);
        st.last_grow = Some(now);
        apply(st.cap);
        self.publish(&st);
        if st.cap < self.configured {
            let next = self.due(&st);
            // Relaxed: see the load above.
            self.next_due.store(self.nanos(next), Ordering::Relaxed);
        }
        true
    }

    /// When the next step is due (rule 3). Only ever moves later between
    /// steps: the quiet start is the later of the last shrink and the
    /// level's last change, both of which only move forward.
    fn due(&self, st: &State) -> Instant {
        let mut quiet = st.last_shrink.unwrap_or(self.base);
        if let Some(w) = &self.watch {
            quiet = quiet.max(w.changed_at());
        }
        let start = quiet + self.policy.cool_down;
        match st.last_grow {
            // Growing in this quiet spell already: the next step.
            Some(g) if g >= start => g + self.policy.step_interval,
            _ => start,
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }
}

impl fmt::Debug for RefillGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefillGuard")
            .field("configured", &self.configured)
            .field("cap", &self.cap())
            .field("policy", &self.policy)
            .field("watch", &self.watch.as_ref().map(LevelWatch::level))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    const S: Duration = Duration::from_secs(1);

    fn guard(watch: Option<LevelWatch>) -> (RefillGuard, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        let g = RefillGuard::new(800, RefillPolicy::default(), watch, clock.clone());
        (g, clock)
    }

    /// Polls once; returns the cap applied, if any.
    fn step(g: &RefillGuard) -> Option<u64> {
        let mut applied = None;
        g.poll(|c| applied = Some(c));
        applied
    }

    #[test]
    fn without_a_watch_the_cap_comes_back_by_time_since_the_last_shrink() {
        let (g, clock) = guard(None);
        assert_eq!(step(&g), None, "not capped: nothing to do");
        g.shrink(|cap| {
            assert_eq!(cap, 800);
            (100, ())
        });
        assert_eq!((g.cap(), g.is_capped()), (100, true));
        clock.advance(29 * S);
        assert_eq!(step(&g), None, "inside the cool-down");
        // A second shrink restarts the quiet time and never raises the cap.
        g.shrink(|_| (500, ()));
        assert_eq!(g.cap(), 100);
        clock.advance(29 * S);
        assert_eq!(step(&g), None, "29 s after the second shrink");
        clock.advance(S);
        assert_eq!(step(&g), Some(200), "one step of 800 / 8 at 30 s");
        assert_eq!(step(&g), None, "the next step waits its interval");
        clock.advance(4 * S);
        assert_eq!(step(&g), None);
        clock.advance(S);
        assert_eq!(step(&g), Some(300));
        for want in [400, 500, 600, 700, 800] {
            clock.advance(5 * S);
            assert_eq!(step(&g), Some(want));
        }
        assert!(!g.is_capped());
        clock.advance(60 * S);
        assert_eq!(step(&g), None, "at the configured capacity");
    }

    #[test]
    fn pressure_holds_the_cap_and_the_cool_down_counts_from_the_level_change() {
        let w = LevelWatch::new();
        let (g, clock) = guard(Some(w.clone()));
        w.set(Level::Moderate);
        g.shrink(|_| (100, ()));
        clock.advance(120 * S);
        assert_eq!(step(&g), None, "level Moderate: the cap holds");
        // The level falls back (real time ≈ the clock's base, far behind the
        // manual clock's 120 s): the cool-down has long passed.
        w.set(Level::None);
        assert_eq!(step(&g), Some(200));
        // Pressure again: growth stops at once.
        w.set(Level::Critical);
        clock.advance(60 * S);
        assert_eq!(step(&g), None);
        // The next shrink steps down from where the cap stands.
        g.shrink(|cap| {
            assert_eq!(cap, 200);
            (50, ())
        });
        assert_eq!(g.cap(), 50);
    }

    #[test]
    fn a_level_change_after_the_shrink_restarts_the_cool_down() {
        let w = LevelWatch::new();
        // The manual clock starts 100 s in the past, so that a level change
        // made now (its `changed_at` is a real Instant) lies 100 s after the
        // shrink on the clock's scale.
        let past = Instant::now()
            .checked_sub(100 * S)
            .expect("uptime over 100 s");
        let clock = Arc::new(ManualClock::starting_at(past));
        let g = RefillGuard::new(800, RefillPolicy::default(), Some(w.clone()), clock.clone());
        g.shrink(|_| (100, ()));
        w.set(Level::Moderate);
        w.set(Level::None);
        let change = w.changed_at();
        // 29 s after the level fell back (129 s after the shrink): no step.
        clock.advance(change.saturating_duration_since(clock.now()) + 29 * S);
        assert_eq!(step(&g), None, "29 s after the level fell back");
        clock.advance(S);
        assert_eq!(step(&g), Some(200), "30 s after the level fell back");
    }

    #[test]
    fn shrink_clamps_to_at_least_one_and_at_most_the_cap() {
        let (g, _clock) = guard(None);
        g.shrink(|_| (0, ()));
        assert_eq!(g.cap(), 1);
        g.shrink(|_| (10_000, ()));
        assert_eq!(g.cap(), 1);
    }
}
