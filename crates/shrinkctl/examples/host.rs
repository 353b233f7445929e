//! A host program for `shrinkctl`: three caches being filled (`pages`,
//! `inodes`, `dentries`), a reclaimer, and the control socket. Prints the
//! socket's path as the first line of its output and runs until
//! interrupted (Ctrl-C or SIGTERM), then removes the socket.
//!
//! ```text
//! cargo run -p shrinkctl --example host &
//! cargo run -p shrinkctl -- --pid $! top
//! ```

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shrinkctl::host::{Host, HostOptions};

fn main() {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("host: installing a signal handler: {e}");
            std::process::exit(1);
        }
    }
    let host = match Host::start(HostOptions::default()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("host: {e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", host.path().display());
    let _ = out.flush();
    eprintln!(
        "host: pid {}, serving {} (try: cargo run -p shrinkctl -- --pid {} top); Ctrl-C stops",
        std::process::id(),
        host.path().display(),
        std::process::id()
    );
    // Relaxed: set by the signal handler; nothing else is published by it.
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(host);
    eprintln!("host: stopped, socket removed");
}
