//! `shrinker-bench`: shrinker's primitives measured side by side with their peers, in one run.
//!
//! ```text
//! cargo run --release -p shrinker-bench -- [--json] [--long] [--markdown]
//!                                          [--update-readme PATH] [--list] [SCENARIO...]
//! ```
//!
//! Each scenario of DESIGN.md §7 (`rcu-read`, `rcu-sync`, `call-rcu`, ...) measures shrinker's
//! implementation and its peers (crossbeam-epoch, seize, arc-swap, std locks, ...) interleaved,
//! repeats every measurement, and reports medians with min and max and a ratio to a named
//! reference. Ratios come first because the machines this runs on are small and noisy: a
//! ratio between two variants measured in the same seconds survives noise that moves both.
//!
//! Layout:
//!
//! - [`harness`]: timed multi-thread runs, statistics, tables, JSON lines, the progress line.
//! - [`scenarios`]: one module per scenario and the registry [`scenarios::ALL`].
//! - [`cli`]: argument parsing (clap); [`readme`]: `--update-readme` and the machine description.
//! - [`cgroup`] and [`reclaim_child`]: the child memory cgroups and the child workload of the
//!   `reclaim` scenario (the hidden `--reclaim-child` flag).
//!
//! Output contract: progress goes to stderr; stdout carries only the result (tables, markdown,
//! or one JSON object per line with the keys `scenario`, `variant`, `threads`, `metric`,
//! `value`, plus extras). Exit status 2 means a bad command line, 1 a failed README update.

mod cgroup;
mod cli;
mod harness;
mod readme;
mod reclaim_adapters;
mod reclaim_child;
mod scenarios;

use std::io::Write as _;
use std::process::ExitCode;

use harness::{Config, Progress, Report};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let opts = match cli::parse(&args) {
        Ok(opts) => opts,
        // The help on stdout with status 0, or the error on stderr with status 2.
        Err(e) => e.exit(),
    };
    if let Some(params) = &opts.reclaim_child {
        return reclaim_child::main(params);
    }
    if opts.list {
        for s in scenarios::ALL {
            println!("{:<16} {}", s.name, s.summary);
        }
        return ExitCode::SUCCESS;
    }
    if cfg!(debug_assertions) {
        eprintln!("shrinker-bench: warning: debug build, figures are meaningless; use --release");
        if opts.update_readme.is_some() {
            eprintln!("shrinker-bench: refusing to write debug-build figures into a README");
            return ExitCode::FAILURE;
        }
    }

    // Check the markers before spending half a minute measuring.
    if let Some(path) = &opts.update_readme {
        let checked = std::fs::read_to_string(path)
            .map_err(readme::SpliceError::Io)
            .and_then(|text| readme::splice(&text, ""));
        if let Err(e) = checked {
            eprintln!("shrinker-bench: cannot update {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }

    let cfg = if opts.long {
        Config::long()
    } else {
        Config::standard()
    };
    let selected: Vec<&scenarios::Scenario> = if opts.scenarios.is_empty() {
        scenarios::ALL.iter().collect()
    } else {
        opts.scenarios
            .iter()
            .filter_map(|name| scenarios::find(name))
            .collect()
    };

    let mut progress = Progress::new();
    let mut reports: Vec<Report> = Vec::new();
    for (i, s) in selected.iter().enumerate() {
        progress.scenario(format!("[{}/{}] {}", i + 1, selected.len(), s.name));
        reports.push((s.run)(&cfg, &mut progress));
    }
    progress.finish();

    let footer = footer(&args, &cfg);
    let out = if opts.json {
        reports
            .iter()
            .flat_map(|r| &r.records)
            .map(|r| r.to_json() + "\n")
            .collect::<String>()
    } else if opts.markdown {
        markdown(&reports, &footer)
    } else {
        let tables: Vec<String> = reports.iter().map(harness::render_text).collect();
        format!("{}\n{footer}\n", tables.join("\n"))
    };
    // A closed stdout (e.g. `| head`) is not an error worth a panic.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());

    if let Some(path) = &opts.update_readme {
        match readme::update_file(path, &markdown(&reports, &footer)) {
            Ok(()) => eprintln!("shrinker-bench: updated {}", path.display()),
            Err(e) => {
                eprintln!("shrinker-bench: cannot update {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// The markdown tables, then the footer as a paragraph.
fn markdown(reports: &[Report], footer: &str) -> String {
    let tables: Vec<String> = reports.iter().map(harness::render_markdown).collect();
    format!("{}\n{footer}\n", tables.join("\n"))
}

/// One line naming the command, the date and the machine.
fn footer(args: &[String], cfg: &Config) -> String {
    let mut command = String::from("cargo run --release -p shrinker-bench --");
    for a in args {
        command.push(' ');
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
            command.push_str(&format!("'{}'", a.replace('\'', r"'\''")));
        } else {
            command.push_str(a);
        }
    }
    let command = command.trim_end_matches(" --").to_string();
    format!(
        "Generated by `{command}` on {} (UTC), {} runs per figure; machine: {}.",
        readme::today_utc(),
        cfg.reps,
        readme::machine()
    )
}
