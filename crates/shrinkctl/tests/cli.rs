//! Every `shrinkctl` command against the host program, the host example
//! itself, the uid check, and the demo's short story.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shrinkctl::host::{Host, HostOptions};

fn shrinkctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shrinkctl"))
}

fn run_ok(args: &[&str]) -> String {
    let out: Output = shrinkctl().args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "shrinkctl {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A private directory for a test socket, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str, mode: u32) -> TempDir {
        let d = std::env::temp_dir().join(format!("shrinkctl-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn host_at(dir: &TempDir) -> Host {
    Host::start(HostOptions {
        path: Some(dir.0.join("host.sock")),
        ..HostOptions::default()
    })
    .unwrap()
}

#[test]
fn every_command_works_against_the_host() {
    let dir = TempDir::new("cmds", 0o700);
    let host = host_at(&dir);
    let sock = host.path().to_str().unwrap().to_owned();
    // Let the filler put something in.
    let deadline = Instant::now() + Duration::from_secs(5);
    while host.objects() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }

    let list: Value =
        serde_json::from_str(&run_ok(&["--socket", &sock, "list", "--json"])).unwrap();
    let rows = list.as_array().unwrap();
    let pages = rows
        .iter()
        .find(|r| r["name"] == "pages")
        .expect("pages listed");
    for key in ["name", "id", "objects"] {
        assert!(!pages[key].is_null(), "{key} missing: {pages}");
    }
    assert!(pages["objects"].as_u64().unwrap() > 0);
    let id = pages["id"].as_u64().unwrap().to_string();

    let table = run_ok(&["--socket", &sock, "list"]);
    assert!(table.starts_with("  ID NAME"), "{table}");
    assert!(table
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("pages")));

    let count = run_ok(&["--socket", &sock, "count", &id]);
    let fields: Vec<u64> = count
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(fields.len(), 2, "group 0, then one node: {count:?}");
    assert_eq!(fields[0], 0);
    let count_json: Value =
        serde_json::from_str(&run_ok(&["--socket", &sock, "count", &id, "--json"])).unwrap();
    assert!(count_json["text"].as_str().unwrap().starts_with("0 "));

    let scan = run_ok(&["--socket", &sock, "scan", &id, "0", "0", "16"]);
    assert!(scan.starts_with("freed "), "{scan}");

    let stats = run_ok(&["--socket", &sock, "stats"]);
    assert!(stats.contains("reclaimer: level"), "{stats}");
    assert!(stats.contains("rcu: "), "{stats}");

    let pressure = run_ok(&["--socket", &sock, "pressure"]);
    assert!(
        pressure.contains("level: none") && pressure.contains("source: rss"),
        "{pressure}"
    );
    let pressure: Value =
        serde_json::from_str(&run_ok(&["--socket", &sock, "pressure", "--json"])).unwrap();
    assert!(pressure["usage"].as_u64().unwrap() > 0);

    let reclaim = run_ok(&["--socket", &sock, "reclaim", "1M"]);
    assert!(reclaim.starts_with("freed "), "{reclaim}");
    let stats: Value =
        serde_json::from_str(&run_ok(&["--socket", &sock, "stats", "--json"])).unwrap();
    assert_eq!(stats["reclaimer"]["proactive_calls"], 1);

    let metrics = run_ok(&["--socket", &sock, "metrics"]);
    assert!(
        metrics.contains("shrinker_objects_freed_total{shrinker=\"pages\""),
        "{metrics}"
    );
    assert!(metrics.contains("shrinker_reclaim_bytes_freed_total{source=\"proactive\"}"));

    // top, piped: one plain line per refresh, no screen control.
    let top = run_ok(&[
        "--socket",
        &sock,
        "top",
        "--iterations",
        "3",
        "--interval-ms",
        "100",
    ]);
    assert_eq!(top.lines().count(), 3, "{top}");
    assert!(!top.contains('\x1b'), "{top:?}");
    assert!(
        top.lines()
            .all(|l| l.starts_with("t=") && l.contains(" level=none ")),
        "{top}"
    );

    // Errors are reported, not panics.
    let out = shrinkctl()
        .args(["--socket", &sock, "count", "9999"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no registered shrinker"));
}

#[test]
fn pid_finds_the_socket_in_the_documented_places() {
    // The one host of this test process at the default path.
    let host = Host::start(HostOptions::default()).unwrap();
    let pid = std::process::id().to_string();
    assert!(
        shrinker::control::socket_candidates(std::process::id()).contains(&host.path().to_owned()),
        "{}",
        host.path().display()
    );
    let list: Value = serde_json::from_str(&run_ok(&["--pid", &pid, "list", "--json"])).unwrap();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "inodes"));
    let path = host.path().to_owned();
    drop(host);
    assert!(!path.exists(), "the socket is removed on drop");
}

/// The example's binary beside this test's `shrinkctl` (cargo builds the
/// examples of a package for `cargo test`).
fn host_example() -> Option<PathBuf> {
    let bin = Path::new(env!("CARGO_BIN_EXE_shrinkctl"));
    let p = bin.parent()?.join("examples").join("host");
    p.exists().then_some(p)
}

#[test]
fn the_host_example_prints_its_socket_first_and_removes_it_on_sigint() {
    let Some(exe) = host_example() else {
        println!("skipped: the host example is not built (run `cargo test -p shrinkctl`)");
        return;
    };
    let mut child = Command::new(exe)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let path = PathBuf::from(first.trim());
    assert!(
        path.to_str().unwrap().ends_with(&format!("/{pid}.sock")),
        "{first:?}"
    );
    let sock = path.to_str().unwrap();
    let list: Value = serde_json::from_str(&run_ok(&["--socket", sock, "list", "--json"])).unwrap();
    assert!(list.as_array().unwrap().len() >= 3, "{list}");
    let by_pid = run_ok(&["--pid", &pid.to_string(), "count", "0"]);
    assert!(by_pid.starts_with("0 "), "{by_pid}");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the host did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(!path.exists(), "socket left behind");
}

#[test]
fn a_client_of_another_uid_is_refused() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: refusing another uid is tested by running a client as `nobody`, which needs root");
        return;
    }
    // World-traversable directory and socket, so that only SO_PEERCRED
    // stands between `nobody` and the host.
    let dir = TempDir::new("uid", 0o755);
    let host = host_at(&dir);
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let c_path = std::ffi::CString::new(host.path().to_str().unwrap()).unwrap();
    let path_bytes = c_path.as_bytes_with_nul();

    // Everything the child needs is made before fork: it only makes
    // system calls (async-signal-safe) and exits.
    // SAFETY: zeroed sockaddr_un is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    assert!(path_bytes.len() <= addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(path_bytes) {
        *d = *s as libc::c_char;
    }
    let request = b"{\"cmd\":\"list\"}\n";
    let needle = b"not allowed";

    // SAFETY: the child makes raw system calls only, then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: raw system calls (async-signal-safe, as a child of a
        // multi-threaded fork must use) on memory prepared before the fork;
        // the buffers are live locals and the lengths are theirs.
        unsafe {
            libc::alarm(5); // never outlive the test
            if libc::syscall(libc::SYS_setgid, 65534) != 0
                || libc::syscall(libc::SYS_setuid, 65534) != 0
            {
                libc::_exit(10);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                libc::_exit(11);
            }
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if libc::connect(fd, (&raw const addr).cast(), len) != 0 {
                libc::_exit(12);
            }
            let _ = libc::write(fd, request.as_ptr().cast(), request.len());
            let mut buf = [0u8; 512];
            let mut got = 0usize;
            loop {
                let n = libc::read(fd, buf.as_mut_ptr().add(got).cast(), buf.len() - got);
                if n <= 0 {
                    break;
                }
                got += n as usize;
                if got == buf.len() {
                    break;
                }
            }
            let reply = &buf[..got];
            let refused = reply.windows(needle.len()).any(|w| w == needle);
            let served = reply.windows(5).any(|w| w == b"pages");
            libc::_exit(if refused && !served { 0 } else { 13 });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the nobody client was not refused: wait status {status:#x}"
    );
    assert_eq!(host.refused(), 1);
    // Its own uid is still served.
    let list = run_ok(&["--socket", host.path().to_str().unwrap(), "list", "--json"]);
    assert!(list.contains("\"pages\""));
}

/// The two demo tests run one at a time: each is a race between a cache
/// and a reclaimer, and two at once on a small machine make it a worse one.
static DEMO: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn the_demo_short_story_runs_as_told_piped() {
    let _one = DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let out = shrinkctl().args(["demo", "--short"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains('\x1b'),
        "no screen control or colours when piped"
    );
    assert!(
        text.contains("without reclaimer") && text.contains("with reclaimer"),
        "{text}"
    );
    assert!(text.contains("=> alive after"), "{text}");
    assert!(
        text.contains("OOM-killed") || text.contains("stopped at the RSS target"),
        "{text}"
    );
}

#[test]
fn the_demo_says_so_and_uses_an_rss_target_without_a_cgroup() {
    let _one = DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let out = shrinkctl()
        .args(["demo", "--short", "--rss"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("no memory cgroup (--rss given); using an RSS target"),
        "{text}"
    );
    assert!(text.contains("stopped at the RSS target"), "{text}");
}

/// `shrinkctl metrics | head -1`: the reader closes the pipe early. `print!`
/// panicked on the closed pipe; the output now ends quietly, with status 0.
#[test]
fn output_into_a_pipe_closed_early_ends_quietly() {
    use std::process::Stdio;
    let dir = TempDir::new("pipe", 0o700);
    let host = host_at(&dir);
    let sock = host.path().to_str().unwrap().to_owned();
    for _ in 0..3 {
        let mut child = shrinkctl()
            .args(["--socket", &sock, "metrics"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the read end at once: the child is still connecting to the
        // socket, so its first write meets a closed pipe (EPIPE).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.status.success(), "{:?}: {stderr}", out.status);
    }
}
