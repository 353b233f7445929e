//! Command-line parsing, with plain `std`.
//!
//! `shrinker-bench [--json] [--long] [--markdown] [--update-readme PATH] [--list] [SCENARIO...]`
//!
//! Parsing is a pure function of the argument list ([`parse`]) so that it can be tested; the
//! caller prints [`usage`] and exits with status 2 on a [`CliError`].

use std::fmt;
use std::path::PathBuf;

/// What the user asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    /// Print JSON lines instead of tables.
    pub json: bool,
    /// More and longer repetitions.
    pub long: bool,
    /// Print tables as markdown.
    pub markdown: bool,
    /// Splice the markdown tables into this file between the bench markers.
    pub update_readme: Option<PathBuf>,
    /// List the scenarios and exit.
    pub list: bool,
    /// Print the usage and exit.
    pub help: bool,
    /// Scenarios to run, in the order given, without duplicates; empty means all.
    pub scenarios: Vec<String>,
}

/// A command line that cannot be obeyed.
#[derive(Clone, Debug, PartialEq)]
pub enum CliError {
    /// A flag that does not exist.
    UnknownFlag(String),
    /// A scenario name that is not in the registry.
    UnknownScenario(String),
    /// A flag that needs a value was last.
    MissingValue(&'static str),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::UnknownFlag(flag) => write!(f, "unknown flag `{flag}`"),
            CliError::UnknownScenario(name) => write!(f, "unknown scenario `{name}`"),
            CliError::MissingValue(flag) => write!(f, "`{flag}` needs a value"),
        }
    }
}

impl std::error::Error for CliError {}

/// The flags, for the usage text: (flag, description).
pub const FLAGS: &[(&str, &str)] = &[
    (
        "--json",
        "one JSON object per line on stdout instead of tables",
    ),
    (
        "--long",
        "15 repetitions of longer runs (steadier; about 4x the time)",
    ),
    ("--markdown", "print the tables as markdown"),
    (
        "--update-readme PATH",
        "replace the text between <!-- bench:begin --> and <!-- bench:end --> in PATH",
    ),
    ("--list", "list the scenarios and exit"),
    ("-h, --help", "print this help and exit"),
];

/// Parses the arguments (without the program name) against the known scenario names.
///
/// # Errors
///
/// An unknown flag, an unknown scenario or `--update-readme` without a path.
pub fn parse<I, S>(args: I, known: &[&str]) -> Result<Options, CliError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut opts = Options::default();
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => opts.json = true,
            "--long" => opts.long = true,
            "--markdown" => opts.markdown = true,
            "--list" => opts.list = true,
            "-h" | "--help" => opts.help = true,
            "--update-readme" => {
                let path = args
                    .next()
                    .ok_or(CliError::MissingValue("--update-readme"))?;
                opts.update_readme = Some(PathBuf::from(path));
            }
            _ if arg.starts_with("--update-readme=") => {
                let path = &arg["--update-readme=".len()..];
                if path.is_empty() {
                    return Err(CliError::MissingValue("--update-readme"));
                }
                opts.update_readme = Some(PathBuf::from(path));
            }
            _ if arg.starts_with('-') => return Err(CliError::UnknownFlag(arg)),
            _ if known.contains(&arg.as_str()) => {
                if !opts.scenarios.contains(&arg) {
                    opts.scenarios.push(arg);
                }
            }
            _ => return Err(CliError::UnknownScenario(arg)),
        }
    }
    Ok(opts)
}

/// The usage text: synopsis, flags and the valid scenario names with their summaries.
pub fn usage(scenarios: &[(&str, &str)]) -> String {
    let mut out = String::from(
        "usage: shrinker-bench [--json] [--long] [--markdown] [--update-readme PATH] [--list] \
         [SCENARIO...]\n\nRuns the named scenarios (all when none is named); build with \
         --release.\n\nflags:\n",
    );
    for (flag, what) in FLAGS {
        out.push_str(&format!("  {flag:<22} {what}\n"));
    }
    out.push_str("\nscenarios:\n");
    for (name, what) in scenarios {
        out.push_str(&format!("  {name:<22} {what}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["rcu-read", "rcu-sync", "call-rcu"];

    #[test]
    fn empty_means_all_defaults() {
        assert_eq!(parse(Vec::<String>::new(), KNOWN), Ok(Options::default()));
    }

    #[test]
    fn flags_and_scenarios() {
        let o = parse(
            [
                "--json",
                "rcu-sync",
                "--long",
                "--markdown",
                "rcu-read",
                "rcu-sync",
            ],
            KNOWN,
        )
        .unwrap();
        assert!(o.json && o.long && o.markdown && !o.list && !o.help);
        assert_eq!(o.scenarios, ["rcu-sync", "rcu-read"]);
    }

    #[test]
    fn update_readme_both_spellings() {
        let o = parse(["--update-readme", "README.md"], KNOWN).unwrap();
        assert_eq!(o.update_readme, Some(PathBuf::from("README.md")));
        let o = parse(["--update-readme=docs/x.md", "call-rcu"], KNOWN).unwrap();
        assert_eq!(o.update_readme, Some(PathBuf::from("docs/x.md")));
        assert_eq!(o.scenarios, ["call-rcu"]);
        assert_eq!(
            parse(["--update-readme"], KNOWN),
            Err(CliError::MissingValue("--update-readme"))
        );
        assert_eq!(
            parse(["--update-readme="], KNOWN),
            Err(CliError::MissingValue("--update-readme"))
        );
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            parse(["--fast"], KNOWN),
            Err(CliError::UnknownFlag("--fast".into()))
        );
        assert_eq!(
            parse(["rcu-raed"], KNOWN),
            Err(CliError::UnknownScenario("rcu-raed".into()))
        );
        assert_eq!(
            parse(["-x"], KNOWN),
            Err(CliError::UnknownFlag("-x".into()))
        );
    }

    #[test]
    fn list_and_help() {
        assert!(parse(["--list"], KNOWN).unwrap().list);
        assert!(parse(["-h"], KNOWN).unwrap().help);
        assert!(parse(["--help"], KNOWN).unwrap().help);
    }

    #[test]
    fn usage_lists_scenarios_and_flags() {
        let u = usage(&[("rcu-read", "reads"), ("call-rcu", "callbacks")]);
        assert!(u.contains("rcu-read") && u.contains("call-rcu"));
        assert!(u.contains("--update-readme PATH") && u.contains("--json"));
    }
}
