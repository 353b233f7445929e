//! The control socket against hostile and broken clients: arbitrary bytes,
//! oversized and truncated requests, slow and idle clients, too many
//! clients. The server must answer errors, keep serving, and never take the
//! host down. (Feature `control`; `cargo test --workspace` turns it on
//! through `shrinkctl`.)
#![cfg(feature = "control")]
#![cfg(not(miri))] // sockets and threads

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use shrinker::control::{ControlLimits, ControlSocket};
use shrinker::{Count, Scan, Shrink, ShrinkControl, ShrinkerBuilder, ShrinkerRegistry};

struct Ten;
impl Shrink for Ten {
    fn count(&self, _: &ShrinkControl) -> Count {
        Count::Objects(10)
    }
    fn scan(&self, sc: &mut ShrinkControl) -> Scan {
        Scan::Freed(sc.nr_to_scan())
    }
}

/// A fresh private directory for one socket.
fn socket_path(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    // Relaxed: a unique number.
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "shrinker-control-test-{}-{tag}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir.join("s.sock")
}

struct Fixture {
    socket: Option<ControlSocket>,
    _shrinker: shrinker::Registered<Ten>,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.socket.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fixture {
    fn path(&self) -> PathBuf {
        self.socket.as_ref().unwrap().path().to_owned()
    }
}

fn fixture(tag: &str, limits: ControlLimits) -> Fixture {
    let reg = ShrinkerRegistry::builder().nodes(1).build().unwrap();
    let s = ShrinkerBuilder::new("ten")
        .build_in(&reg, Ten)
        .unwrap()
        .register();
    let path = socket_path(tag);
    let dir = path.parent().unwrap().to_owned();
    let socket = ControlSocket::builder(&reg)
        .limits(limits)
        .path(&path)
        .start()
        .unwrap();
    Fixture {
        socket: Some(socket),
        _shrinker: s,
        dir,
    }
}

fn connect(f: &Fixture) -> UnixStream {
    let s = UnixStream::connect(f.path()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// All reply lines until the server closes the connection (a read that
/// times out instead fails the test: the server must close, not hang).
fn replies(mut s: UnixStream) -> Vec<String> {
    let mut out = String::new();
    s.read_to_string(&mut out)
        .expect("the server closes the connection");
    out.lines().map(str::to_owned).collect()
}

fn still_serves(f: &Fixture) {
    let mut s = connect(f);
    s.write_all(b"{\"cmd\":\"list\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["ok"], true, "{line}");
    assert_eq!(v["result"][0]["objects"], 10);
}

#[test]
fn the_socket_is_mode_0600_and_removed_on_drop() {
    let f = fixture("mode", ControlLimits::default());
    let path = f.path();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A connected, idle client does not hold the drop up.
    let _idle = connect(&f);
    drop(f);
    assert!(!path.exists());
}

#[test]
fn an_oversized_request_gets_an_error_and_the_connection_closes() {
    let f = fixture("long", ControlLimits::default());
    let mut s = connect(&f);
    // Written in a thread: the server stops reading at the limit.
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&vec![b'x'; 64 << 10]);
    });
    let mut out = String::new();
    s.read_to_string(&mut out)
        .expect("the server closes the connection");
    writer.join().unwrap();
    assert!(out.contains("longer than 4096 bytes"), "{out}");
    assert_eq!(out.lines().count(), 1);
    still_serves(&f);
}

#[test]
fn a_truncated_request_times_out_and_an_idle_client_is_closed() {
    let limits = ControlLimits {
        request_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(300),
        ..ControlLimits::default()
    };
    let f = fixture("slow", limits);
    let mut s = connect(&f);
    s.write_all(b"{\"cmd\":\"li").unwrap(); // and never the rest
    let r = replies(s);
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(r[0].contains("timed out"), "{r:?}");
    let idle = connect(&f);
    let r = replies(idle);
    assert!(r.len() == 1 && r[0].contains("timed out"), "{r:?}");
    still_serves(&f);
}

#[test]
fn clients_past_the_limit_are_refused() {
    let limits = ControlLimits {
        max_clients: 2,
        ..ControlLimits::default()
    };
    let f = fixture("many", limits);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect(&f);
        // One round trip: the server has taken this client on.
        s.write_all(b"{\"cmd\":\"stats\"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("\"ok\":true"), "{line}");
        held.push(s);
    }
    let r = replies(connect(&f));
    assert!(r.len() == 1 && r[0].contains("too many clients"), "{r:?}");
    assert_eq!(f.socket.as_ref().unwrap().refused(), 1);
    drop(held);
    // The slots free up once the server sees the two go.
    let mut ok = false;
    for _ in 0..100 {
        let mut s = connect(&f);
        // Still refused: the server may have replied and closed before the
        // write (EPIPE; seen once in CI). Try again.
        if s.write_all(b"{\"cmd\":\"stats\"}\n").is_err() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let r = replies_one(s);
        if r.contains("\"ok\":true") {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ok, "never served again after the clients left");
}

fn replies_one(s: UnixStream) -> String {
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    line
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Arbitrary bytes, in lines or not: every reply is one JSON object
    /// line with a boolean `ok`, one per complete line sent at most, and
    /// the server serves the next client.
    #[test]
    fn arbitrary_bytes_get_json_replies_and_the_server_survives(
        bytes in proptest::collection::vec(any::<u8>(), 0..6000),
        json_ish in proptest::collection::vec(
            prop_oneof![
                Just("{\"cmd\":\"list\"}".to_owned()),
                Just("{\"cmd\":\"scan\",\"id\":0,\"input\":\"0 0 1\"}".to_owned()),
                Just("{\"cmd\":\"reclaim\",\"bytes\":1}".to_owned()),
                "[ -~]{0,40}",
                "\\{\"cmd\":\"[a-z]{0,8}\"(,\"id\":[0-9]{1,22})?\\}",
            ],
            0..6,
        ),
    ) {
        let f = fixture("prop", ControlLimits::default());
        let mut s = connect(&f);
        let mut payload = Vec::new();
        for j in &json_ish {
            payload.extend_from_slice(j.as_bytes());
            payload.push(b'\n');
        }
        payload.extend_from_slice(&bytes);
        let lines_sent = payload.iter().filter(|&&b| b == b'\n').count();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&payload);
            let _ = w.shutdown(std::net::Shutdown::Write);
        });
        let mut out = String::new();
        s.read_to_string(&mut out).expect("the server closes the connection");
        writer.join().unwrap();
        let n = out.lines().count();
        // One per line, plus one for an oversized tail.
        prop_assert!(n <= lines_sent + 1, "{n} replies to {lines_sent} lines");
        for line in out.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            prop_assert!(v["ok"].is_boolean(), "{line}");
            if v["ok"] == false {
                prop_assert!(v["error"].is_string());
            }
        }
        still_serves(&f);
    }
}
