//! The reclaimer's CPU budget: its own thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`) over fixed windows.

use std::time::{Duration, Instant};

use rustix::time::{clock_gettime, ClockId};

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// CPU used by the calling thread in the current window. Must be used from
/// one thread (the reclaimer's): it reads that thread's clock.
pub(super) struct CpuBudget {
    window: Duration,
    window_start: Instant,
    cpu_at_start: Duration,
    cpu_at_birth: Duration,
}

impl CpuBudget {
    pub(super) fn new(window: Duration) -> Self {
        let cpu = thread_cpu();
        CpuBudget {
            window,
            window_start: Instant::now(),
            cpu_at_start: cpu,
            cpu_at_birth: cpu,
        }
    }

    /// Has this thread used more than `share` of one CPU in the current
    /// window? A new window starts when the last one has passed.
    pub(super) fn exceeded(&mut self, share: f64) -> bool {
        let now = Instant::now();
        let cpu = thread_cpu();
        if now.saturating_duration_since(self.window_start) >= self.window {
            self.window_start = now;
            self.cpu_at_start = cpu;
            return false;
        }
        cpu.saturating_sub(self.cpu_at_start) > self.window.mul_f64(share)
    }

    /// CPU used since the budget was made.
    pub(super) fn total(&self) -> Duration {
        thread_cpu().saturating_sub(self.cpu_at_birth)
    }
}
