//! Prints memory-pressure level changes as they happen.
//!
//! ```text
//! cargo run -p shrinker-pressure --example watch -- \
//!     [--source auto|systemd|psi[:file]|cgroup2[:dir]|cgroup1[:dir]|meminfo|rss:<bytes>|fifo:<path>] [--json]
//! ```
//!
//! On stderr first: the monitor's `describe()` (which source is live, why each better one
//! was rejected). Then on stdout one line per level change, starting with the level at
//! start: `t_ms source level usage limit headroom` as text, or with `--json` one object per
//! line: `{"t_ms":..,"source":"cgroup1","level":"moderate","usage":..,"limit":..,"headroom":..}`
//! (bytes; `null` where the source does not know them; `some_avg10`/`full_avg10` where it
//! reads PSI). Runs until interrupted. A bad `--source`, a bad argument or a malformed
//! `$MEMORY_PRESSURE_WATCH`/`$MEMORY_PRESSURE_WRITE`: one line on stderr, exit status 2.
//!
//! Try it with a FIFO:
//!
//! ```text
//! mkfifo /tmp/p && cargo run -p shrinker-pressure --example watch -- --source fifo:/tmp/p --json &
//! echo "critical usage=990 limit=1000 headroom=140" > /tmp/p
//! ```

use std::io::Write;
use std::time::Instant;

use shrinker_pressure::{Error, Monitor, Reading, SourceSpec};

/// Parsed command line.
#[derive(Debug, PartialEq)]
pub struct Args {
    /// `--source`.
    pub source: SourceSpec,
    /// `--json`.
    pub json: bool,
}

/// Parses the arguments after the program name.
///
/// # Errors
/// A one-line description of what is wrong.
pub fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut out = Args {
        source: SourceSpec::Auto,
        json: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let spec = if a == "--json" {
            out.json = true;
            continue;
        } else if a == "--source" {
            it.next()
                .ok_or_else(|| "--source needs a value".to_owned())?
                .as_str()
        } else if let Some(v) = a.strip_prefix("--source=") {
            v
        } else {
            return Err(format!(
                "unknown argument {a:?} (usage: watch [--source SPEC] [--json])"
            ));
        };
        out.source = spec.parse().map_err(|e: Error| e.to_string())?;
    }
    Ok(out)
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "null".to_owned(), |v| v.to_string())
}

/// One output line for `r`.
pub fn format_line(r: &Reading, start: Instant, json: bool) -> String {
    let t_ms = r.at.saturating_duration_since(start).as_millis();
    if json {
        let mut s = format!(
            "{{\"t_ms\":{t_ms},\"source\":\"{}\",\"level\":\"{}\",\"usage\":{},\"limit\":{},\"headroom\":{}",
            r.source,
            r.level,
            opt(r.usage),
            opt(r.limit),
            opt(r.headroom)
        );
        if let Some(st) = r.stall {
            s.push_str(&format!(",\"some_avg10\":{:.2}", st.some_avg10));
            if let Some(f) = st.full_avg10 {
                s.push_str(&format!(",\"full_avg10\":{f:.2}"));
            }
        }
        s.push('}');
        s
    } else {
        let bytes =
            |name: &str, v: Option<u64>| v.map(|v| format!(" {name}={v}")).unwrap_or_default();
        format!(
            "{t_ms:>8} ms  {:<8} {:<8}{}{}{}",
            r.source,
            r.level,
            bytes("usage", r.usage),
            bytes("limit", r.limit),
            bytes("headroom", r.headroom)
        )
    }
}

/// Runs the example; returns only on error, with the exit status.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(err, "watch: {e}");
            return 2;
        }
    };
    let start = Instant::now();
    let mut monitor = match Monitor::builder().source(args.source).build() {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(err, "watch: {}", e.to_string().replace('\n', "; "));
            return match e {
                Error::Env { .. } | Error::Spec { .. } => 2,
                _ => 1,
            };
        }
    };
    let _ = writeln!(err, "{}", monitor.describe());
    let mut emit = |r: &Reading| -> bool {
        writeln!(out, "{}", format_line(r, start, args.json)).is_ok() && out.flush().is_ok()
    };
    if !emit(monitor.current()) {
        return 1;
    }
    let mut failovers = 0;
    loop {
        match monitor.wait(None) {
            Ok(Some(r)) => {
                if !emit(&r) {
                    return 1; // stdout closed
                }
            }
            Ok(None) => {}
            Err(e) => {
                let _ = writeln!(err, "watch: {}", e.to_string().replace('\n', "; "));
                return 1;
            }
        }
        if monitor.failovers() != failovers {
            failovers = monitor.failovers();
            let _ = writeln!(err, "{}", monitor.describe());
        }
    }
}

#[allow(dead_code)] // Unused where this file is included as a module by the tests.
fn main() {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let code = run(&args, &mut std::io::stdout(), &mut std::io::stderr());
    std::process::exit(code);
}
