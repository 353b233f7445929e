//! systemd's protocol from the environment variables, end to end: a FIFO, an `AF_UNIX`
//! socket and a PSI path given in `$MEMORY_PRESSURE_WATCH` (with and without
//! `$MEMORY_PRESSURE_WRITE`), and `/dev/null`.
//!
//! The variables are process-wide, so each case runs in a child process: this test binary
//! re-executed with `SHRINKER_PRESSURE_SYSTEMD_CHILD` set, where `child_entry_point` builds
//! `Monitor::auto()`, prints its `describe()` and then every level change, for at most 10 s.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use shrinker_pressure::Monitor;

const CHILD_ENV: &str = "SHRINKER_PRESSURE_SYSTEMD_CHILD";

/// Not a test: the child processes' entry point. Without the variable it returns at once.
#[test]
fn child_entry_point() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let mut m = match Monitor::auto() {
        Ok(m) => m,
        Err(e) => {
            writeln!(out, "ERROR {}", e.to_string().replace('\n', "; ")).unwrap();
            std::process::exit(0);
        }
    };
    for line in m.describe().lines() {
        writeln!(out, "D {line}").unwrap();
    }
    writeln!(out, "READY {}", m.current().level).unwrap();
    out.flush().unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let mut failovers = 0;
    while std::time::Instant::now() < end {
        match m.wait(Some(Duration::from_millis(100))) {
            Ok(Some(r)) => writeln!(out, "LEVEL {} {}", r.level, r.source).unwrap(),
            Ok(None) => {}
            Err(e) => {
                writeln!(out, "ERROR {e}").unwrap();
                break;
            }
        }
        if m.failovers() != failovers {
            failovers = m.failovers();
            writeln!(out, "FAILOVER {}", m.source_kind()).unwrap();
            for line in m.describe().lines() {
                writeln!(out, "D {line}").unwrap();
            }
        }
        out.flush().unwrap();
    }
    std::process::exit(0);
}

struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Session {
    _child: Reap,
    lines: mpsc::Receiver<String>,
    describe: Vec<String>,
}

impl Session {
    fn start(env: &[(&str, &str)]) -> Session {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args([
            "--exact",
            "child_entry_point",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_ENV, "1")
        .env_remove("MEMORY_PRESSURE_WATCH")
        .env_remove("MEMORY_PRESSURE_WRITE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = Reap(c.spawn().unwrap());
        let stdout = child.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut s = Session {
            _child: child,
            lines: rx,
            describe: Vec::new(),
        };
        loop {
            let l = s.next();
            if let Some(d) = l.strip_prefix("D ") {
                s.describe.push(d.to_owned());
            } else if l.starts_with("READY") || l.starts_with("ERROR") {
                s.describe.push(l);
                break;
            }
        }
        s
    }

    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(5))
            .expect("a line from the child within 5 s")
    }

    fn next_matching(&self, prefix: &str) -> String {
        loop {
            let l = self.next();
            if l.starts_with(prefix) {
                return l;
            }
        }
    }

    fn live(&self) -> &str {
        &self.describe[0]
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "shrinker-pressure-systemd-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
#[cfg_attr(miri, ignore)] // processes, FIFOs
fn systemd_fifo_from_the_environment_reports_moderate_on_each_write() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("pressure");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let s = Session::start(&[("MEMORY_PRESSURE_WATCH", fifo.to_str().unwrap())]);
    assert!(
        s.live()
            .starts_with("live: systemd $MEMORY_PRESSURE_WATCH="),
        "{:?}",
        s.describe
    );
    assert!(s.live().contains("FIFO"), "{:?}", s.describe);
    let mut w = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    w.write_all(b"x").unwrap();
    assert_eq!(s.next_matching("LEVEL"), "LEVEL moderate systemd");
    // No "gone" event: the level falls after the 2 s hold.
    assert_eq!(s.next_matching("LEVEL"), "LEVEL none systemd");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[cfg_attr(miri, ignore)] // processes, sockets
fn systemd_socket_gets_the_trigger_written_and_its_end_makes_the_monitor_fall_back() {
    let dir = temp_dir("sock");
    let path = dir.join("pressure.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let trigger = b"some 123000 2000000\0";
    let b64 = base64::engine::general_purpose::STANDARD.encode(trigger);
    let s = Session::start(&[
        ("MEMORY_PRESSURE_WATCH", path.to_str().unwrap()),
        ("MEMORY_PRESSURE_WRITE", &b64),
    ]);
    assert!(s.live().contains("AF_UNIX socket"), "{:?}", s.describe);
    assert!(
        s.live().contains("wrote `some 123000 2000000`"),
        "{:?}",
        s.describe
    );
    let (mut conn, _) = listener.accept().unwrap();
    let mut got = [0u8; 20];
    conn.read_exact(&mut got).unwrap();
    assert_eq!(
        &got, trigger,
        "the decoded $MEMORY_PRESSURE_WRITE, NUL included"
    );
    conn.write_all(b"pressure\n").unwrap();
    assert_eq!(s.next_matching("LEVEL"), "LEVEL moderate systemd");
    drop(conn); // The service manager's end goes away: the source dies.
    let f = s.next_matching("FAILOVER");
    assert_ne!(f, "FAILOVER systemd");
    let d = s.next_matching("D died systemd");
    assert!(d.contains("peer closed the socket"), "{d}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[cfg_attr(miri, ignore)] // processes, PSI
fn systemd_psi_path_with_and_without_write_and_dev_null() {
    if !std::path::Path::new("/proc/pressure/memory").exists() {
        eprintln!("SKIPPED: systemd PSI path cases: no /proc/pressure/memory (kernel without PSI)");
        return;
    }
    // Path only: systemd's default trigger is written.
    let s = Session::start(&[("MEMORY_PRESSURE_WATCH", "/proc/pressure/memory")]);
    assert!(s.live().contains("PSI file"), "{:?}", s.describe);
    assert!(
        s.live()
            .contains("wrote `some 200000 2000000` (systemd's default)"),
        "{:?}",
        s.describe
    );
    // An explicit trigger on a 2 s window (allowed unprivileged).
    let b64 = base64::engine::general_purpose::STANDARD.encode(b"full 100000 2000000\0");
    let s = Session::start(&[
        ("MEMORY_PRESSURE_WATCH", "/proc/pressure/memory"),
        ("MEMORY_PRESSURE_WRITE", &b64),
    ]);
    assert!(
        s.live().contains("wrote `full 100000 2000000`"),
        "{:?}",
        s.describe
    );
    // A 1 s window: refused without CAP_SYS_RESOURCE; then the next rung serves, and
    // describe() says why systemd was rejected.
    let b64 = base64::engine::general_purpose::STANDARD.encode(b"some 100000 1000000\0");
    let s = Session::start(&[
        ("MEMORY_PRESSURE_WATCH", "/proc/pressure/memory"),
        ("MEMORY_PRESSURE_WRITE", &b64),
    ]);
    if s.live().starts_with("live: systemd") {
        eprintln!("note: 1 s PSI window accepted: this process is privileged (CAP_SYS_RESOURCE)");
    } else {
        let rejected = s
            .describe
            .iter()
            .find(|l| l.starts_with("rejected systemd"))
            .unwrap_or_else(|| panic!("{:?}", s.describe));
        assert!(
            rejected.contains("/proc/pressure/memory: EINVAL writing trigger"),
            "{rejected}"
        );
    }
    // /dev/null: explicitly disabled.
    let s = Session::start(&[("MEMORY_PRESSURE_WATCH", "/dev/null")]);
    assert!(!s.live().starts_with("live: systemd"), "{:?}", s.describe);
    assert!(
        s.describe
            .iter()
            .any(|l| l.contains("rejected systemd: disabled by $MEMORY_PRESSURE_WATCH=/dev/null")),
        "{:?}",
        s.describe
    );
}
