//! Command-line parsing, with `clap`.
//!
//! `shrinker-bench [--json] [--long] [--markdown] [--update-readme PATH] [--list] [SCENARIO...]`
//!
//! Parsing is a pure function of the argument list ([`parse`]) so that it can be tested. On an
//! `Err`, the caller calls [`clap::Error::exit`]: `-h`/`--help` print the help on stdout and
//! exit with status 0; a bad command line prints the error on stderr and exits with status 2.
//! Scenario names are checked against [`scenarios::ALL`]; the help lists them with their
//! summaries, and the error for a misspelt one lists the valid names.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::Parser;

use crate::scenarios;

/// What the user asked for.
#[derive(Clone, Debug, Default, PartialEq, Parser)]
#[command(
    name = "shrinker-bench",
    override_usage = "shrinker-bench [--json] [--long] [--markdown] [--update-readme PATH] \
                      [--list] [SCENARIO...]",
    about = "Runs the named scenarios (all when none is named); build with --release.",
    // A repeated flag is harmless (and a repeated `--update-readme` keeps the last path), as
    // it was before clap.
    args_override_self = true
)]
pub struct Options {
    /// One JSON object per line on stdout instead of tables.
    #[arg(long)]
    pub json: bool,
    /// 15 repetitions of longer runs (steadier; about 4x the time).
    #[arg(long)]
    pub long: bool,
    /// Print the tables as markdown.
    #[arg(long)]
    pub markdown: bool,
    /// Replace the text between <!-- bench:begin --> and <!-- bench:end --> in PATH.
    #[arg(long, value_name = "PATH")]
    pub update_readme: Option<PathBuf>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Internal: run the `reclaim` scenario's child workload with these parameters (see
    /// `reclaim_child`). Hidden from the usage and the help.
    #[arg(long, value_name = "PARAMS", hide = true)]
    pub reclaim_child: Option<String>,
    /// Scenarios to run, in the order given, without duplicates (all when none is named).
    #[arg(value_name = "SCENARIO", value_parser = scenario_names())]
    pub scenarios: Vec<String>,
}

/// The valid scenario names, each with its summary for the help.
fn scenario_names() -> PossibleValuesParser {
    PossibleValuesParser::new(
        scenarios::ALL
            .iter()
            .map(|s| PossibleValue::new(s.name).help(s.summary)),
    )
}

/// Parses the arguments (without the program name).
///
/// # Errors
///
/// A [`clap::Error`] for an unknown flag, an unknown scenario or `--update-readme` without a
/// path (exit status 2), and for `-h`/`--help` (kind [`clap::error::ErrorKind::DisplayHelp`],
/// exit status 0, the help as its text).
pub fn parse<I, T>(args: I) -> Result<Options, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let program = std::iter::once(OsString::from("shrinker-bench"));
    let mut opts = Options::try_parse_from(program.chain(args.into_iter().map(Into::into)))?;
    let mut unique: Vec<String> = Vec::with_capacity(opts.scenarios.len());
    for name in opts.scenarios.drain(..) {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    opts.scenarios = unique;
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_is_well_formed() {
        Options::command().debug_assert();
    }

    #[test]
    fn empty_means_all_defaults() {
        assert_eq!(parse(Vec::<String>::new()).unwrap(), Options::default());
    }

    #[test]
    fn flags_and_scenarios() {
        let o = parse([
            "--json",
            "rcu-sync",
            "--long",
            "--markdown",
            "rcu-read",
            "rcu-sync",
        ])
        .unwrap();
        assert_eq!(
            o,
            Options {
                json: true,
                long: true,
                markdown: true,
                update_readme: None,
                list: false,
                reclaim_child: None,
                scenarios: vec!["rcu-sync".into(), "rcu-read".into()],
            }
        );
    }

    #[test]
    fn repeated_flags_are_accepted() {
        let o = parse([
            "--json",
            "--json",
            "--update-readme",
            "a",
            "--update-readme=b",
        ])
        .unwrap();
        assert!(o.json);
        assert_eq!(o.update_readme, Some(PathBuf::from("b")));
    }

    #[test]
    fn update_readme_both_spellings() {
        let o = parse(["--update-readme", "README.md"]).unwrap();
        assert_eq!(o.update_readme, Some(PathBuf::from("README.md")));
        let o = parse(["--update-readme=docs/x.md", "call-rcu"]).unwrap();
        assert_eq!(o.update_readme, Some(PathBuf::from("docs/x.md")));
        assert_eq!(o.scenarios, ["call-rcu"]);
        for args in [&["--update-readme"][..], &["--update-readme="]] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
            assert!(e.to_string().contains("--update-readme"), "{e}");
        }
    }

    #[test]
    fn unknown_names_are_errors_with_status_2() {
        for flag in ["--fast", "-x", "--version"] {
            let e = parse([flag]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::UnknownArgument, "{flag}");
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(flag), "{e}");
        }
        let e = parse(["rcu-raed"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidValue);
        assert_eq!(e.exit_code(), 2);
        // The message names the bad value and lists every valid one.
        let msg = e.to_string();
        assert!(msg.contains("rcu-raed"), "{msg}");
        for s in scenarios::ALL {
            assert!(msg.contains(s.name), "{} missing from: {msg}", s.name);
        }
    }

    #[test]
    fn reclaim_child_is_parsed_and_hidden() {
        let o = parse(["--reclaim-child", "variant=none"]).unwrap();
        assert_eq!(o.reclaim_child.as_deref(), Some("variant=none"));
        let help = Options::command().render_long_help().to_string();
        assert!(!help.contains("reclaim-child"), "{help}");
        let usage = Options::command().render_usage().to_string();
        assert!(!usage.contains("reclaim-child"), "{usage}");
    }

    #[test]
    fn list_and_help() {
        assert!(parse(["--list"]).unwrap().list);
        for flag in ["-h", "--help"] {
            let e = parse([flag]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DisplayHelp, "{flag}");
            assert_eq!(e.exit_code(), 0);
        }
    }

    #[test]
    fn help_lists_flags_and_scenarios() {
        let help = Options::command().render_long_help().to_string();
        assert!(help.contains(
            "shrinker-bench [--json] [--long] [--markdown] [--update-readme PATH] [--list] \
             [SCENARIO...]"
        ));
        for flag in [
            "--json",
            "--long",
            "--markdown",
            "--update-readme <PATH>",
            "--list",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
        for s in scenarios::ALL {
            assert!(help.contains(s.name), "{} missing from:\n{help}", s.name);
            assert!(
                help.contains(s.summary),
                "{} missing from:\n{help}",
                s.summary
            );
        }
    }
}
