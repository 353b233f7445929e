//! The host program of `cargo run -p shrinkctl --example host`: a few
//! caches being filled, a reclaimer and the control socket, in a registry
//! of its own. Tests start it in-process.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use shrinker::control::{ControlLimits, ControlSocket};
use shrinker::reclaim::Reclaimer;
use shrinker::{GroupId, LruCache, ShrinkerRegistry};
use shrinker_pressure::{Monitor, SourceSpec};

/// How to start a [`Host`].
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// The socket path (default: the documented directories).
    pub path: Option<PathBuf>,
    /// The pressure source: the process's resident size against this many
    /// bytes (default 1 GiB: the caches, capped at 48 MiB in all, never
    /// reach it, so the reclaimer works only when asked).
    pub rss_target: u64,
    /// The control socket's limits.
    pub limits: ControlLimits,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            path: None,
            rss_target: 1 << 30,
            limits: ControlLimits::default(),
        }
    }
}

type Cache = LruCache<u64, Vec<u8>>;

/// A running host program. Dropping it stops the filler, the control
/// socket (removing its file) and the reclaimer.
pub struct Host {
    control: Option<ControlSocket>,
    reclaimer: Option<Arc<Reclaimer>>,
    caches: Vec<Arc<Cache>>,
    stop: Arc<AtomicBool>,
    filler: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Start the caches, their filler thread, the reclaimer and the socket.
    ///
    /// # Errors
    ///
    /// Whatever fails to start, as a message.
    pub fn start(opts: HostOptions) -> Result<Host, String> {
        let registry = ShrinkerRegistry::builder()
            .nodes(1)
            .build()
            .map_err(|e| e.to_string())?;
        // (name, value size, cap in bytes)
        let specs: [(&str, usize, usize); 3] = [
            ("pages", 4096, 32 << 20),
            ("inodes", 512, 8 << 20),
            ("dentries", 192, 8 << 20),
        ];
        let mut caches = Vec::new();
        for (name, _, cap) in specs {
            let c: Cache = LruCache::builder(name)
                .weigher(|_, v: &Vec<u8>| v.len())
                .max_weight(cap)
                .build_in(&registry)
                .map_err(|e| format!("cache {name}: {e}"))?;
            caches.push(Arc::new(c));
        }
        let monitor = || {
            Monitor::builder()
                .source(SourceSpec::Rss(opts.rss_target))
                .build()
                .map_err(|e| format!("pressure monitor: {e}"))
        };
        let reclaimer = Arc::new(
            Reclaimer::builder(&registry)
                .monitor(monitor()?)
                .start()
                .map_err(|e| e.to_string())?,
        );
        let mut b = ControlSocket::builder(&registry)
            .reclaimer(Arc::clone(&reclaimer))
            .monitor(monitor()?)
            .limits(opts.limits.clone());
        if let Some(p) = &opts.path {
            b = b.path(p);
        }
        let control = b.start().map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let filler = {
            let caches = caches.clone();
            let stop = Arc::clone(&stop);
            let sizes: Vec<usize> = specs.iter().map(|s| s.1).collect();
            std::thread::Builder::new()
                .name("host-filler".to_owned())
                .spawn(move || {
                    let mut key = 0u64;
                    // Relaxed: a request to stop soon; the join orders the rest.
                    while !stop.load(Ordering::Relaxed) {
                        for (c, &size) in caches.iter().zip(&sizes) {
                            for _ in 0..64 {
                                key += 1;
                                let _ =
                                    c.insert(GroupId::ROOT, key, vec![(key % 251) as u8 + 1; size]);
                            }
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                })
                .map_err(|e| e.to_string())?
        };
        Ok(Host {
            control: Some(control),
            reclaimer: Some(reclaimer),
            caches,
            stop,
            filler: Some(filler),
        })
    }

    /// The control socket's path.
    pub fn path(&self) -> &Path {
        self.control.as_ref().map_or(Path::new(""), |c| c.path())
    }

    /// Connections the socket refused so far.
    pub fn refused(&self) -> u64 {
        self.control.as_ref().map_or(0, ControlSocket::refused)
    }

    /// Objects in the caches now.
    pub fn objects(&self) -> usize {
        self.caches.iter().map(|c| c.len()).sum()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Relaxed: see the filler.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.filler.take() {
            let _ = t.join();
        }
        self.control.take();
        self.reclaimer.take();
    }
}
