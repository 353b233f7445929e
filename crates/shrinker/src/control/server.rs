//! The server: one accept thread, one thread per client (at most
//! `max_clients`), each reading lines with deadlines and answering through
//! the [`Handler`].
//!
//! Stopping: the owner sets `stop`, shuts the listening socket down (which
//! wakes the blocked `accept` with an error), shuts every client socket down
//! (which wakes their blocked reads), joins every thread, and removes the
//! socket file.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::config::ControlError;
use super::protocol::{error_line, Handler};

struct Client {
    stream: UnixStream,
    thread: JoinHandle<()>,
}

struct Shared {
    handler: Handler,
    stop: AtomicBool,
    refused: AtomicU64,
    clients: Mutex<Vec<Client>>,
}

pub(super) struct Server {
    shared: Arc<Shared>,
    listener: UnixListener,
    path: PathBuf,
    accept: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn start(handler: Handler, path: PathBuf) -> Result<Server, ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.clone(),
        source,
    };
    // A stale socket of a dead process with our pid (or of this one).
    if let Ok(md) = std::fs::symlink_metadata(&path) {
        use std::os::unix::fs::FileTypeExt;
        if md.file_type().is_socket() {
            let _ = std::fs::remove_file(&path);
        }
    }
    let listener = UnixListener::bind(&path).map_err(io_err)?;
    // The directory is ours and 0700 (or the caller's choice): nobody else
    // can reach the socket between bind and chmod.
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            let _ = std::fs::remove_file(&path);
            return Err(io_err(e));
        }
    }
    let shared = Arc::new(Shared {
        handler,
        stop: AtomicBool::new(false),
        refused: AtomicU64::new(0),
        clients: Mutex::new(Vec::new()),
    });
    let accept = {
        let shared = Arc::clone(&shared);
        let l = listener.try_clone().map_err(io_err)?;
        std::thread::Builder::new()
            .name("shrinker-control".to_owned())
            .spawn(move || accept_loop(&shared, &l))
            .map_err(|e| {
                let _ = std::fs::remove_file(&path);
                io_err(e)
            })?
    };
    Ok(Server {
        shared,
        listener,
        path,
        accept: Some(accept),
    })
}

impl Server {
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn refused(&self) -> u64 {
        // Relaxed: a statistic.
        self.shared.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Relaxed: the accept thread reads it after `accept` fails (the
        // shutdown below); the join orders the rest.
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = rustix::net::shutdown(&self.listener, rustix::net::Shutdown::Read);
        // Should the shutdown not wake `accept`, a connection does.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        // The accept thread is gone: no client is added from now on.
        let clients = std::mem::take(&mut *lock(&self.shared.clients));
        for c in &clients {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        for c in clients {
            let _ = c.thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Same uid as us, or root.
fn allowed(stream: &UnixStream) -> Result<(), String> {
    let cred = rustix::net::sockopt::socket_peercred(stream)
        .map_err(|e| format!("peer credentials unavailable: {e}"))?;
    let me = rustix::process::geteuid();
    if cred.uid == me || cred.uid.is_root() {
        Ok(())
    } else {
        Err(format!("peer uid {} is not allowed", cred.uid.as_raw()))
    }
}

fn refuse(shared: &Shared, mut stream: UnixStream, why: &str) {
    // Relaxed: a statistic.
    shared.refused.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_write_timeout(Some(shared.handler.limits.write_timeout));
    let _ = stream.write_all(error_line(why).as_bytes());
}

fn accept_loop(shared: &Arc<Shared>, listener: &UnixListener) {
    loop {
        let accepted = listener.accept();
        // Relaxed: see `Drop`.
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(target: "shrinker::control", "accept: {e}");
                // EMFILE and the like: do not spin.
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        };
        if let Err(why) = allowed(&stream) {
            tracing::warn!(target: "shrinker::control", "refused a connection: {why}");
            refuse(shared, stream, &why);
            continue;
        }
        let mut clients = lock(&shared.clients);
        // Reap finished clients.
        let mut i = 0;
        while i < clients.len() {
            if clients[i].thread.is_finished() {
                let c = clients.swap_remove(i);
                let _ = c.thread.join();
            } else {
                i += 1;
            }
        }
        if clients.len() >= shared.handler.limits.max_clients {
            drop(clients);
            let why = format!(
                "too many clients (at most {})",
                shared.handler.limits.max_clients
            );
            refuse(shared, stream, &why);
            continue;
        }
        let Ok(keep) = stream.try_clone() else {
            continue;
        };
        let thread = {
            let shared = Arc::clone(shared);
            std::thread::Builder::new()
                .name("shrinker-control-client".to_owned())
                .spawn(move || serve(&shared, stream))
        };
        match thread {
            Ok(thread) => clients.push(Client {
                stream: keep,
                thread,
            }),
            Err(e) => tracing::warn!(target: "shrinker::control", "spawning a client thread: {e}"),
        }
    }
}

/// Read one line (up to `max_line` bytes with its newline) into `line`,
/// with `buf` holding bytes read past the previous line.
enum Line {
    Got,
    Closed,
    TooLong,
    TimedOut,
}

fn read_line(shared: &Shared, s: &mut UnixStream, buf: &mut Vec<u8>, line: &mut Vec<u8>) -> Line {
    let limits = &shared.handler.limits;
    let idle_deadline = Instant::now() + limits.idle_timeout;
    let mut request_deadline: Option<Instant> = None;
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            if pos + 1 > limits.max_line {
                return Line::TooLong;
            }
            line.clear();
            line.extend_from_slice(&buf[..pos]);
            buf.drain(..=pos);
            return Line::Got;
        }
        if buf.len() >= limits.max_line {
            return Line::TooLong;
        }
        if !buf.is_empty() && request_deadline.is_none() {
            request_deadline = Some(Instant::now() + limits.request_timeout);
        }
        let deadline = request_deadline.unwrap_or(idle_deadline);
        let now = Instant::now();
        if now >= deadline {
            return Line::TimedOut;
        }
        let _ = s.set_read_timeout(Some(deadline - now));
        // Read no more than would fill the line limit (+1 to see it crossed).
        let room = (limits.max_line + 1 - buf.len()).min(chunk.len());
        match s.read(&mut chunk[..room]) {
            Ok(0) => return Line::Closed,
            Ok(n) => {
                if request_deadline.is_none() {
                    request_deadline = Some(Instant::now() + limits.request_timeout);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Line::Closed,
        }
        // Relaxed: see `Drop` (the shutdown also ends the read).
        if shared.stop.load(Ordering::Relaxed) {
            return Line::Closed;
        }
    }
}

fn serve(shared: &Shared, mut s: UnixStream) {
    serve_until_done(shared, &mut s);
    // The accept thread keeps a clone of the socket (to wake this thread on
    // drop): close the connection explicitly so the client sees the end.
    let _ = s.shutdown(std::net::Shutdown::Both);
}

fn serve_until_done(shared: &Shared, s: &mut UnixStream) {
    let _ = s.set_write_timeout(Some(shared.handler.limits.write_timeout));
    let mut buf = Vec::new();
    let mut line = Vec::new();
    loop {
        let reply = match read_line(shared, s, &mut buf, &mut line) {
            Line::Got => shared.handler.handle_line(&line),
            Line::Closed => return,
            Line::TooLong => {
                let why = format!(
                    "request longer than {} bytes (the limit); closing",
                    shared.handler.limits.max_line
                );
                let _ = s.write_all(error_line(&why).as_bytes());
                return;
            }
            Line::TimedOut => {
                let _ = s.write_all(error_line("timed out; closing").as_bytes());
                return;
            }
        };
        if s.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
