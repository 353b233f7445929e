//! The `watch` example's interface: exit status 2 with one line for bad input, and JSON
//! lines from a FIFO source.
//!
//! The example's code is compiled into this test (`#[path]`), and run in a child process by
//! re-executing this test binary with `WATCH_CHILD_ARGS` set: the test named
//! `child_entry_point` then runs the example's `run` and exits with its status. This works
//! whether or not cargo built the example binary (`cargo test --tests` does not).

#[path = "../examples/watch.rs"]
#[allow(dead_code, missing_docs)]
mod watch;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const CHILD_ENV: &str = "WATCH_CHILD_ARGS";

/// Not a test: the entry point of the child processes below. Without `WATCH_CHILD_ARGS`
/// it returns at once.
#[test]
fn child_entry_point() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        return;
    };
    let args: Vec<String> = args
        .split('\u{1f}')
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    let code = watch::run(&args, &mut std::io::stdout(), &mut std::io::stderr());
    std::process::exit(code);
}

fn child(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "child_entry_point",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(CHILD_ENV, args.join("\u{1f}"))
    .env_remove("MEMORY_PRESSURE_WATCH")
    .env_remove("MEMORY_PRESSURE_WRITE")
    .env_remove("RUST_BACKTRACE")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Kills and reaps the child however the test ends.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = child(args, env).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn parse_args_accepts_the_documented_interface() {
    let a = |v: &[&str]| watch::parse_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(a(&[]).unwrap().source, shrinker_pressure::SourceSpec::Auto);
    assert!(a(&["--json"]).unwrap().json);
    for s in [
        "auto",
        "psi",
        "cgroup2",
        "cgroup1",
        "meminfo",
        "rss:64M",
        "fifo:/tmp/x",
    ] {
        assert!(a(&["--source", s]).is_ok(), "{s}");
        assert!(a(&[&format!("--source={s}")]).is_ok(), "{s}");
    }
    assert!(a(&["--source"]).is_err());
    assert!(a(&["--frobnicate"]).is_err());
}

#[test]
#[cfg_attr(miri, ignore)] // processes
fn bad_source_exits_2_with_one_line_naming_it() {
    for bad in ["bogus", "rss:lots", "rss", "fifo:"] {
        let (code, err) = run_to_exit(&["--source", bad], &[]);
        assert_eq!(code, 2, "--source {bad}: stderr {err:?}");
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(err.contains(bad), "names the source: {err:?}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err:?}"
        );
    }
}

#[test]
#[cfg_attr(miri, ignore)] // processes
fn bad_environment_variable_exits_2_with_one_line_naming_it() {
    let cases = [
        (
            ("MEMORY_PRESSURE_WATCH", "relative/path"),
            "$MEMORY_PRESSURE_WATCH",
        ),
        (("MEMORY_PRESSURE_WRITE", "!!!"), "$MEMORY_PRESSURE_WRITE"),
    ];
    for ((var, value), named) in cases {
        let mut env = vec![(var, value)];
        if var == "MEMORY_PRESSURE_WRITE" {
            env.push(("MEMORY_PRESSURE_WATCH", "/proc/pressure/memory"));
        }
        let (code, err) = run_to_exit(&["--source", "meminfo"], &env);
        assert_eq!(code, 2, "{var}={value}: stderr {err:?}");
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(err.contains(named), "names the variable: {err:?}");
    }
}

#[test]
#[cfg_attr(miri, ignore)] // processes, FIFOs
fn fifo_source_produces_one_json_line_per_level_change() {
    let dir = std::env::temp_dir().join(format!("shrinker-pressure-watch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("levels");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let spec = format!("fifo:{}", fifo.display());
    let mut c = Reap(child(&["--source", &spec, "--json"], &[]).spawn().unwrap());
    let stdout = c.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with('{') && tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a JSON line within 10 s")
    };
    // Read-write: opening never blocks, and we never read.
    let mut w = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();

    let first = next();
    assert!(
        first.contains("\"level\":\"none\"") && first.contains("\"source\":\"fifo\""),
        "{first}"
    );
    assert!(
        first.contains("\"usage\":null"),
        "unknown bytes are null: {first}"
    );

    writeln!(w, "moderate usage=900 limit=1000 headroom=50").unwrap();
    let l = next();
    for part in [
        "\"t_ms\":",
        "\"level\":\"moderate\"",
        "\"usage\":900",
        "\"limit\":1000",
        "\"headroom\":50",
    ] {
        assert!(l.contains(part), "{part} in {l}");
    }
    // A malformed line is ignored, the same level is not repeated.
    writeln!(
        w,
        "panic\nmoderate usage=910 limit=1000 headroom=60\ncritical"
    )
    .unwrap();
    let l = next();
    assert!(l.contains("\"level\":\"critical\""), "{l}");
    writeln!(w, "none").unwrap();
    let l = next();
    assert!(l.contains("\"level\":\"none\""), "{l}");
    // stderr: describe() came first, naming the live source.
    let _ = c.0.kill();
    let _ = c.0.wait();
    let mut err = String::new();
    std::io::Read::read_to_string(c.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.starts_with("live: fifo"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
