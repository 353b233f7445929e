//! The JSON-lines client of the control socket.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

/// A connection to a process's control socket.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// What can go wrong talking to a process.
#[derive(Debug)]
pub enum ClientError {
    /// Connecting, writing or reading failed.
    Io(io::Error),
    /// The reply was not one JSON object line.
    BadReply(String),
    /// The server answered an error.
    Server(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::BadReply(s) => write!(f, "malformed reply: {s}"),
            ClientError::Server(s) => write!(f, "the process answered: {s}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl Client {
    /// Connect to the socket at `path` (replies are awaited up to 60 s: a
    /// `reclaim` runs shrinkers).
    ///
    /// # Errors
    ///
    /// The connection's.
    pub fn connect(path: &Path) -> io::Result<Client> {
        let s = UnixStream::connect(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(Client {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    /// Send a request object, return the reply's `result`.
    ///
    /// # Errors
    ///
    /// I/O, a malformed reply, or the server's error.
    pub fn request(&mut self, req: &Value) -> Result<Value, ClientError> {
        let mut line = req.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        let mut reply = String::new();
        if self.reader.read_line(&mut reply)? == 0 {
            return Err(ClientError::BadReply("connection closed".to_owned()));
        }
        let v: Value =
            serde_json::from_str(&reply).map_err(|e| ClientError::BadReply(e.to_string()))?;
        match v.get("ok") {
            Some(Value::Bool(true)) => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
            _ => Err(ClientError::Server(
                v.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_owned(),
            )),
        }
    }

    /// `{"cmd": cmd}`.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub fn cmd(&mut self, cmd: &str) -> Result<Value, ClientError> {
        self.request(&json!({ "cmd": cmd }))
    }
}

/// The socket of `pid`: the first of [`shrinker::control::socket_candidates`]
/// that exists.
///
/// # Errors
///
/// A message naming the places looked at.
pub fn socket_for_pid(pid: u32) -> Result<PathBuf, String> {
    let cands = shrinker::control::socket_candidates(pid);
    cands.iter().find(|p| p.exists()).cloned().ok_or_else(|| {
        let list: Vec<String> = cands.iter().map(|p| p.display().to_string()).collect();
        format!(
            "no control socket for pid {pid} (looked at {}); did the process start one?",
            list.join(", ")
        )
    })
}

/// With neither `--socket` nor `--pid`: the only socket of a live process
/// in the socket directories.
///
/// # Errors
///
/// None or several found (listed).
pub fn only_socket() -> Result<PathBuf, String> {
    let mut found = Vec::new();
    for dir in shrinker::control::socket_dirs() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let pid = p
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u32>().ok());
            let live = pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if live && p.extension().is_some_and(|x| x == "sock") {
                found.push(p);
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err("no control socket found; give --pid PID or --socket PATH".to_owned()),
        _ => {
            let list: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
            Err(format!(
                "several processes have a control socket ({}); give --pid or --socket",
                list.join(", ")
            ))
        }
    }
}
