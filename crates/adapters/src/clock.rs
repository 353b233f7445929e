//! [`Clock`]: where the refill guard reads the time, so that tests (yours and
//! ours) can drive a 30-second cool-down without waiting 30 seconds.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A source of [`Instant`]s.
///
/// The guard compares the clock's `now` with
/// [`LevelWatch::changed_at`](shrinker::reclaim::LevelWatch::changed_at),
/// which is a real `Instant`: a clock of your own must stay on the
/// monotonic clock's scale (start from `Instant::now()` and move forward),
/// as [`ManualClock`] does.
pub trait Clock: Send + Sync + 'static {
    /// The time now.
    fn now(&self) -> Instant;
}

/// The monotonic clock ([`Instant::now`]), the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to: it starts at the real `Instant`
/// of its creation and [`advance`](Self::advance)s by hand.
///
/// # Examples
///
/// ```
/// use shrinker_adapters::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_secs(30));
/// assert_eq!(clock.now() - t0, Duration::from_secs(30));
/// ```
pub struct ManualClock {
    now: Mutex<Instant>,
}

impl ManualClock {
    /// A clock standing at `Instant::now()`.
    #[must_use]
    pub fn new() -> Self {
        ManualClock {
            now: Mutex::new(Instant::now()),
        }
    }

    /// A clock standing at `t` (say, an hour ago: for tests that need
    /// real `Instant`s, such as a level watch's, to lie in its future).
    #[must_use]
    pub fn starting_at(t: Instant) -> Self {
        ManualClock { now: Mutex::new(t) }
    }

    /// Move the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += d;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}
