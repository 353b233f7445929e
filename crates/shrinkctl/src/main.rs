//! `shrinkctl`: look at and steer a live process's shrinkers, reclaimer and
//! memory pressure through its control socket; `shrinkctl demo` tells the
//! project's story.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use shrinkctl::client::{self, Client};
use shrinkctl::demo::{self, DemoOptions};
use shrinkctl::render::{self, Snapshot, SortBy};

/// Print to stdout. A closed pipe (`shrinkctl metrics | head`) ends the
/// program quietly with status 0, as a reader that stopped early expects,
/// instead of the panic of `print!`.
macro_rules! out {
    ($($t:tt)*) => { write_stdout(format_args!($($t)*), false) };
}

/// [`out!`] with a newline.
macro_rules! outln {
    ($($t:tt)*) => { write_stdout(format_args!($($t)*), true) };
}

fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| o.flush());
    if r.is_err() {
        std::process::exit(0);
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "shrinkctl",
    version,
    about = "Look at and steer a live process's shrinkers, reclaimer and memory pressure"
)]
struct Cli {
    /// The control socket's path.
    #[arg(long, global = true, conflicts_with = "pid")]
    socket: Option<PathBuf>,
    /// The process's pid (its socket is found in the documented places).
    #[arg(long, global = true)]
    pid: Option<u32>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Sort {
    Objects,
    Freed,
    Bytes,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Every shrinker: id, name, objects, freed, scanned, deferred, panics.
    List {
        /// A JSON array, one object per shrinker.
        #[arg(long)]
        json: bool,
    },
    /// One shrinker's objects per node (debugfs `count`: `<group> <node 0> <node 1> …`).
    Count {
        /// The shrinker's id (see `list`).
        id: u32,
        /// The reply as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Call one shrinker's scan by hand (debugfs `scan`: `<group> <node> <n>`).
    Scan {
        /// The shrinker's id.
        id: u32,
        /// The memory group (0: the root, the only one a by-hand call reaches).
        group: u32,
        /// The node.
        node: u32,
        /// Objects to scan.
        n: u64,
    },
    /// The reclaimer's and the RCU domain's statistics.
    Stats {
        /// The reply as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The live pressure source and level.
    Pressure {
        /// The reply as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Proactive reclaim: free this many bytes (suffixes K, M, G).
    Reclaim {
        /// Bytes to free.
        bytes: String,
    },
    /// Every metric in the Prometheus text format.
    Metrics,
    /// A live view, refreshed every second (like slabtop); one line per
    /// second when the output is not a terminal.
    Top {
        /// Sort by.
        #[arg(long, value_enum, default_value = "objects")]
        sort: Sort,
        /// Stop after this many refreshes (default: until interrupted).
        #[arg(long)]
        iterations: Option<u64>,
        /// Refresh interval in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// The story: a cache past a memory limit, without and with the reclaimer.
    Demo {
        /// The short story (a few seconds; for tests).
        #[arg(long)]
        short: bool,
        /// Use an RSS target even where a memory cgroup could be created.
        #[arg(long)]
        rss: bool,
    },
    /// The demo's workload (internal).
    #[command(hide = true)]
    DemoWorkload {
        #[arg(long)]
        cage: String,
        #[arg(long)]
        limit: u64,
        #[arg(long)]
        rate: u64,
        #[arg(long)]
        seconds: u64,
        #[arg(long)]
        reclaimer: bool,
    },
}

fn colour_ok() -> bool {
    std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

fn connect(cli: &Cli) -> Result<Client, String> {
    let path = match (&cli.socket, cli.pid) {
        (Some(p), _) => p.clone(),
        (None, Some(pid)) => client::socket_for_pid(pid)?,
        (None, None) => client::only_socket()?,
    };
    Client::connect(&path).map_err(|e| format!("connecting: {e}"))
}

fn print_json(v: &Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

fn run(cli: &Cli) -> Result<ExitCode, String> {
    let err = |e: client::ClientError| e.to_string();
    match &cli.cmd {
        Cmd::Demo { short, rss } => {
            let mut opts = if *short {
                DemoOptions::short()
            } else {
                DemoOptions::full()
            };
            opts.force_rss = *rss;
            opts.colour = colour_ok();
            let mut out = std::io::stdout();
            let ok = demo::run(&mut out, &opts)?;
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Cmd::DemoWorkload {
            cage,
            limit,
            rate,
            seconds,
            reclaimer,
        } => {
            let code = demo::workload(cage, *limit, *rate, *seconds, *reclaimer);
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
        }
        _ => {}
    }
    let mut c = connect(cli)?;
    match &cli.cmd {
        Cmd::List { json } => {
            let list = c.cmd("list").map_err(err)?;
            if *json {
                outln!("{list}");
            } else {
                out!("{}", render::list_table(&list));
            }
        }
        Cmd::Count { id, json } => {
            let r = c.request(&json!({"cmd": "count", "id": id})).map_err(err)?;
            if *json {
                outln!("{r}");
            } else {
                out!("{}", r.get("text").and_then(Value::as_str).unwrap_or(""));
            }
        }
        Cmd::Scan { id, group, node, n } => {
            let input = format!("{group} {node} {n}");
            let r = c
                .request(&json!({"cmd": "scan", "id": id, "input": input}))
                .map_err(err)?;
            match r.get("freed").and_then(Value::as_u64) {
                Some(f) => outln!("freed {f}"),
                None => outln!("stop (the shrinker could make no progress)"),
            }
        }
        Cmd::Stats { json } => {
            let r = c.cmd("stats").map_err(err)?;
            if *json {
                print_json(&r);
            } else {
                out!("{}", render::stats_text(&r));
            }
        }
        Cmd::Pressure { json } => {
            let r = c.cmd("pressure").map_err(err)?;
            if *json {
                print_json(&r);
            } else {
                out!("{}", render::pressure_text(&r));
            }
        }
        Cmd::Reclaim { bytes } => {
            let b = shrinkctl::parse_bytes(bytes)?;
            let r = c
                .request(&json!({"cmd": "reclaim", "bytes": b}))
                .map_err(err)?;
            let freed = r.get("bytes").and_then(Value::as_u64).unwrap_or(0);
            let objects = r.get("objects").and_then(Value::as_u64).unwrap_or(0);
            outln!(
                "freed {} ({objects} objects) of {} asked",
                shrinkctl::human_bytes(freed),
                shrinkctl::human_bytes(b)
            );
        }
        Cmd::Metrics => {
            let r = c.cmd("metrics").map_err(err)?;
            out!("{}", r.get("text").and_then(Value::as_str).unwrap_or(""));
        }
        Cmd::Top {
            sort,
            iterations,
            interval_ms,
        } => {
            let sort = match sort {
                Sort::Objects => SortBy::Objects,
                Sort::Freed => SortBy::Freed,
                Sort::Bytes => SortBy::Bytes,
            };
            let tty = std::io::stdout().is_terminal();
            let colour = colour_ok();
            let interval = Duration::from_millis((*interval_ms).max(100));
            let started = Instant::now();
            let mut prev: Option<(Snapshot, Instant)> = None;
            let mut n = 0u64;
            let mut out = std::io::stdout();
            loop {
                let snap = Snapshot {
                    list: c.cmd("list").map_err(err)?,
                    pressure: c.cmd("pressure").map_err(err)?,
                    stats: c.cmd("stats").map_err(err)?,
                };
                let now = Instant::now();
                let dt = prev.as_ref().map_or(Duration::ZERO, |(_, t)| now - *t);
                let p = prev.as_ref().map(|(s, _)| s);
                let text = if tty {
                    // Home, clear, then the screen.
                    format!(
                        "\x1b[H\x1b[2J{}",
                        render::top_screen(p, &snap, dt, sort, 40, colour)
                    )
                } else {
                    render::top_line(p, &snap, dt, now - started) + "\n"
                };
                if out
                    .write_all(text.as_bytes())
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    break; // the reader went away
                }
                prev = Some((snap, now));
                n += 1;
                if iterations.is_some_and(|max| n >= max) {
                    break;
                }
                std::thread::sleep(interval);
            }
        }
        Cmd::Demo { .. } | Cmd::DemoWorkload { .. } => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shrinkctl: {e}");
            ExitCode::from(1)
        }
    }
}
