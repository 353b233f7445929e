//! The state the reclaimer thread shares with its handle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Mutex;

use super::allocator::AllocatorReturn;
use super::config::ReclaimConfig;
use super::report::{LevelEvent, LevelWatch, ReclaimerStats};
use crate::ShrinkerRegistry;

pub(super) struct Shared {
    pub(super) registry: ShrinkerRegistry,
    pub(super) config: ReclaimConfig,
    pub(super) allocator: AllocatorReturn,
    pub(super) stop: AtomicBool,
    pub(super) stats: Mutex<ReclaimerStats>,
    pub(super) subscribers: Mutex<Vec<Sender<LevelEvent>>>,
    pub(super) watch: LevelWatch,
}

impl Shared {
    pub(super) fn stopping(&self) -> bool {
        // Relaxed: a request to stop soon; the join orders everything else.
        self.stop.load(Ordering::Relaxed)
    }

    pub(super) fn stats(&self) -> std::sync::MutexGuard<'_, ReclaimerStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn tell(&self, event: &LevelEvent) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|s| s.send(event.clone()).is_ok());
    }
}
