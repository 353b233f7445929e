//! The measuring harness: timed runs, repetition, statistics, tables, JSON and progress.
//!
//! # Method
//!
//! 1. **Repetition.** Every measurement is repeated [`Config::reps`] times (5 by default, 15
//!    with `--long`). Within one repetition a scenario measures each of its variants once, in
//!    round-robin order whose starting variant rotates from one repetition to the next, so slow
//!    drift on a shared machine (frequency, a noisy neighbour) hits every variant alike.
//! 2. **Timed runs.** [`time_ops`] starts `threads` workers, lets each do one untimed warm-up
//!    operation (this is where a thread registers with an RCU domain or epoch collector), then
//!    releases them together from a [`Barrier`]. Each worker runs the operation in batches of
//!    [`BATCH`] until the coordinator, after sleeping for the wall time, raises a stop flag.
//!    Each worker reports its own op count and its own elapsed time.
//! 3. **Per-op cost.** `ns_per_op` of one run is each thread's elapsed time divided by that
//!    thread's op count, averaged over the threads ([`ns_per_op`]). At 1 thread it is the
//!    latency of one operation; at 2 threads it shows what sharing costs (a number that does
//!    not grow means the operation scales).
//! 4. **Summary.** The reported value is the median of the repetitions, with min and max
//!    beside it ([`Summary`]); ratios are taken between medians.
//!
//! # Output
//!
//! A scenario returns a [`Report`]: a title, notes (the definitions a reader needs) and one
//! [`Record`] per (variant, threads, metric). The harness renders reports as aligned text
//! ([`render_text`]), as markdown ([`render_markdown`]) or as JSON lines ([`Record::to_json`],
//! through `serde_json`); scenarios never format output themselves.

use std::fmt::{self, Write as _};
use std::io::{self, IsTerminal, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

/// How many operations a worker runs between two looks at the stop flag.
///
/// Large enough that the relaxed load of the flag vanishes in the per-op figure, small enough
/// (a few µs of work) that the run ends promptly once the flag is raised.
pub const BATCH: u64 = 1024;

/// Run-wide settings shared by every scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Repetitions of every measurement.
    pub reps: usize,
    /// Wall time of one timed run of a throughput scenario.
    pub duration: Duration,
    /// Whether `--long` was given; scenarios scale their own sizes with [`Config::pick`].
    pub long: bool,
}

impl Config {
    /// The default run: 5 repetitions of 600 ms.
    pub fn standard() -> Self {
        Config {
            reps: 5,
            duration: Duration::from_millis(600),
            long: false,
        }
    }

    /// The `--long` run: 15 repetitions of 800 ms.
    pub fn long() -> Self {
        Config {
            reps: 15,
            duration: Duration::from_millis(800),
            long: true,
        }
    }

    /// Returns `standard` for the default run and `long` under `--long`.
    pub fn pick<T>(&self, standard: T, long: T) -> T {
        if self.long {
            long
        } else {
            standard
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Timed runs
// ---------------------------------------------------------------------------------------------

/// What one worker thread of a timed run did.
#[derive(Clone, Copy, Debug)]
pub struct ThreadRun {
    /// Operations completed.
    pub ops: u64,
    /// Time from the start barrier to the end of the thread's last batch.
    pub elapsed: Duration,
}

/// Runs `op(shared)` on `threads` threads for about `duration` of wall time.
///
/// The threads start together on a barrier after one untimed call of `op` each, and stop at
/// the end of the first batch of [`BATCH`] calls that begins after the coordinator raised the
/// stop flag. `op` is a generic parameter, so each variant's loop is compiled and inlined on its
/// own; `op` must route its result through [`std::hint::black_box`].
///
/// # Panics
///
/// Re-raises a panic of any worker.
pub fn time_ops<S, F>(threads: usize, duration: Duration, shared: &S, op: F) -> Vec<ThreadRun>
where
    S: Sync,
    F: Fn(&S) + Sync,
{
    assert!(threads > 0, "a timed run needs at least one thread");
    let stop = AtomicBool::new(false);
    let start = Barrier::new(threads + 1);
    thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    // Untimed first call: thread registration, TLS set-up, page faults.
                    op(shared);
                    start.wait();
                    let begin = Instant::now();
                    let mut ops = 0;
                    loop {
                        for _ in 0..BATCH {
                            op(shared);
                        }
                        ops += BATCH;
                        // Relaxed: the flag only ends the loop; nothing is published through
                        // it, and the join below orders everything else.
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    ThreadRun {
                        ops,
                        elapsed: begin.elapsed(),
                    }
                })
            })
            .collect();
        start.wait();
        thread::sleep(duration);
        // Relaxed: see the load above.
        stop.store(true, Ordering::Relaxed);
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Run `measure(variant, threads)` for every variant at every thread count, `cfg.reps` times,
/// variants interleaved round-robin (each repetition starts one variant later, so slow drift
/// of the machine hits all of them alike). Returns the samples as `[variant][thread index]`,
/// one per repetition.
pub fn interleave<T>(
    cfg: &Config,
    progress: &mut Progress,
    variants: &[&str],
    threads: &[usize],
    mut measure: impl FnMut(usize, usize) -> T,
) -> Vec<Vec<Vec<T>>> {
    let mut samples: Vec<Vec<Vec<T>>> = (0..variants.len())
        .map(|_| (0..threads.len()).map(|_| Vec::new()).collect())
        .collect();
    for rep in 0..cfg.reps {
        for (t, &n) in threads.iter().enumerate() {
            for k in 0..variants.len() {
                let i = (rep + k) % variants.len();
                progress.step(format_args!(
                    "rep {}/{} {} threads={n}",
                    rep + 1,
                    cfg.reps,
                    variants[i]
                ));
                samples[i][t].push(measure(i, n));
            }
        }
    }
    samples
}

/// One figure out of [`interleave`]'s samples: `f` applied to every sample, keeping the
/// `[variant][thread index][repetition]` shape (for scenarios whose one measurement yields
/// several figures).
pub fn project<T>(samples: &[Vec<Vec<T>>], f: impl Fn(&T) -> f64) -> Vec<Vec<Vec<f64>>> {
    samples
        .iter()
        .map(|per_t| {
            per_t
                .iter()
                .map(|reps| reps.iter().map(&f).collect())
                .collect()
        })
        .collect()
}

/// Each thread's elapsed nanoseconds divided by its own op count, averaged over the threads.
///
/// Returns NaN for an empty slice.
pub fn ns_per_op(runs: &[ThreadRun]) -> f64 {
    let per_thread: Vec<f64> = runs
        .iter()
        .map(|r| r.elapsed.as_nanos() as f64 / r.ops.max(1) as f64)
        .collect();
    mean(&per_thread)
}

/// Nanoseconds per item when `items` operations took `elapsed`.
pub fn ns_per(elapsed: Duration, items: usize) -> f64 {
    elapsed.as_nanos() as f64 / items.max(1) as f64
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

/// The arithmetic mean; NaN for an empty slice.
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// The median: the middle value, or the mean of the two middle values; NaN for an empty slice.
pub fn median(xs: &[f64]) -> f64 {
    let v = sorted(xs);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The `p`-th percentile (0 ≤ `p` ≤ 100) by the nearest-rank method: the smallest value such
/// that at least `p` % of the values are less than or equal to it. `p = 0` gives the minimum,
/// `p = 100` the maximum; NaN for an empty slice.
///
/// Nearest rank always returns an observed value, which is what a latency percentile should be
/// (an interpolated p99 can be a latency nobody saw).
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    let v = sorted(xs);
    if v.is_empty() {
        return f64::NAN;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = (p / 100.0 * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// Median, min and max of the repetitions of one measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Median over the repetitions; the reported value.
    pub median: f64,
    /// Smallest repetition.
    pub min: f64,
    /// Largest repetition.
    pub max: f64,
    /// Number of repetitions.
    pub runs: usize,
}

impl Summary {
    /// Summarises the repetitions `xs`.
    pub fn of(xs: &[f64]) -> Self {
        Summary {
            median: median(xs),
            min: percentile(xs, 0.0),
            max: percentile(xs, 100.0),
            runs: xs.len(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Records and reports
// ---------------------------------------------------------------------------------------------

/// A ratio between two medians, shown as a table column and as a JSON key.
#[derive(Clone, Debug, PartialEq)]
pub struct Ratio {
    /// JSON key of the value; `"{key}_to"` names what it is relative to.
    pub key: &'static str,
    /// What the ratio is relative to (a variant name, or e.g. `"threads=1"`).
    pub to: String,
    /// Table column header.
    pub header: String,
    /// This record's median divided by the reference median.
    pub value: f64,
}

/// One measured figure: the unit of the JSON interface (DESIGN.md §7).
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Scenario name, e.g. `rcu-read`.
    pub scenario: &'static str,
    /// Variant name, e.g. `crossbeam-epoch`.
    pub variant: &'static str,
    /// Threads doing the measured operation.
    pub threads: usize,
    /// Metric name, e.g. `ns_per_op`.
    pub metric: &'static str,
    /// The repetitions, summarised.
    pub summary: Summary,
    /// Ratios to reference figures, filled in by [`add_ratio_to_variant`] and friends.
    pub ratios: Vec<Ratio>,
    /// Extra JSON keys (e.g. `barrier_mode`), written after the ratios in this order.
    pub extra: Vec<(&'static str, Value)>,
}

impl Record {
    /// A record with no ratios and no extra keys.
    pub fn new(
        scenario: &'static str,
        variant: &'static str,
        threads: usize,
        metric: &'static str,
        samples: &[f64],
    ) -> Self {
        Record {
            scenario,
            variant,
            threads,
            metric,
            summary: Summary::of(samples),
            ratios: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Adds an extra JSON key.
    pub fn with_extra(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.extra.push((key, value.into()));
        self
    }

    /// One JSON object on one line, without the newline: see the [`Serialize`] impl for the
    /// keys, and [`RowFormatter`] for how numbers are written.
    pub fn to_json(&self) -> String {
        let mut out = Vec::new();
        self.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            RowFormatter,
        ))
        .expect("a Record has string keys and writes into memory: serializing it cannot fail");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }
}

/// The JSON row: `scenario`, `variant`, `threads`, `metric`, `value` (the median), then `min`,
/// `max`, `runs`, every ratio (rounded to four decimals) followed by its `_to`, and the extra
/// keys, in this order. Non-finite figures are `null`. [`Record::to_json`] gives the row's
/// exact text (another serializer writes the same keys but its own number format).
impl Serialize for Record {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut row = serializer.serialize_map(None)?;
        row.serialize_entry("scenario", self.scenario)?;
        row.serialize_entry("variant", self.variant)?;
        row.serialize_entry("threads", &self.threads)?;
        row.serialize_entry("metric", self.metric)?;
        row.serialize_entry("value", &self.summary.median)?;
        row.serialize_entry("min", &self.summary.min)?;
        row.serialize_entry("max", &self.summary.max)?;
        row.serialize_entry("runs", &self.summary.runs)?;
        for r in &self.ratios {
            // Four decimals: a ratio between noisy medians has no more meaning than that.
            row.serialize_entry(r.key, &((r.value * 1e4).round() / 1e4))?;
            row.serialize_entry(&format!("{}_to", r.key), &r.to)?;
        }
        for (key, value) in &self.extra {
            row.serialize_entry(key, value)?;
        }
        row.end()
    }
}

/// serde_json's compact output, except that a float is written by Rust's `Display`: the
/// shortest digits that round-trip, never an exponent, and no `.0` on an integral value
/// (`2`, `0.0000001`), the form the rows have always had and other tools read. serde_json
/// itself writes NaN and the infinities as `null` before a formatter sees them.
#[derive(Clone, Copy, Debug, Default)]
pub struct RowFormatter;

impl serde_json::ser::Formatter for RowFormatter {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        write!(writer, "{value}")
    }
}

/// Adds, to every record, the ratio of its median to the median of `reference`'s record with
/// the same metric and thread count (none where that record is missing).
pub fn add_ratio_to_variant(records: &mut [Record], reference: &str) {
    let medians: Vec<(usize, &'static str, &'static str, f64)> = records
        .iter()
        .map(|r| (r.threads, r.metric, r.variant, r.summary.median))
        .collect();
    for r in records.iter_mut() {
        let base = medians
            .iter()
            .find(|&&(t, m, v, _)| t == r.threads && m == r.metric && v == reference);
        if let Some(&(_, _, _, base)) = base {
            r.ratios.push(Ratio {
                key: "ratio",
                to: reference.to_string(),
                header: format!("vs {reference}"),
                value: r.summary.median / base,
            });
        }
    }
}

/// Adds, to every record with more than one thread, the ratio of its median to the 1-thread
/// median of the same variant and metric (1.0 = the operation scales perfectly).
pub fn add_ratio_to_one_thread(records: &mut [Record]) {
    let medians: Vec<(usize, &'static str, &'static str, f64)> = records
        .iter()
        .map(|r| (r.threads, r.metric, r.variant, r.summary.median))
        .collect();
    for r in records.iter_mut().filter(|r| r.threads > 1) {
        let base = medians
            .iter()
            .find(|&&(t, m, v, _)| t == 1 && m == r.metric && v == r.variant);
        if let Some(&(_, _, _, base)) = base {
            r.ratios.push(Ratio {
                key: "ratio_1t",
                to: "threads=1".to_string(),
                header: "vs 1 thread".to_string(),
                value: r.summary.median / base,
            });
        }
    }
}

/// What a scenario hands back: one table's worth of records and the words around them.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// One-line description, shown after the name.
    pub title: String,
    /// Definitions and caveats shown under the title (one line each).
    pub notes: Vec<String>,
    /// The figures, in table order.
    pub records: Vec<Record>,
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

/// A figure with about three significant digits; `-` when there is none.
pub fn format_value(x: f64) -> String {
    if !x.is_finite() {
        "-".to_string()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// An integer with thousands separators: `10000` → `10,000`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Extra keys shown as a table column (after `threads`) in the tables whose records have them:
/// (JSON key, column header). Other extra keys appear in the JSON rows only.
const TABLE_EXTRAS: &[(&str, &str)] = &[("fill_mib_s", "MiB/s"), ("writer", "writer")];

/// The value of a record's extra key.
fn extra<'a>(r: &'a Record, key: &str) -> Option<&'a Value> {
    r.extra.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// Whether a table column holds text (left-aligned) rather than figures.
fn is_text_column(header: &str) -> bool {
    header == "variant" || header == "metric"
}

/// Column headers and cells of a report's table. Ratio columns are the union, in order of first
/// appearance, of the ratio headers of its records; [`TABLE_EXTRAS`] columns follow `threads`.
fn table_cells(report: &Report) -> (Vec<String>, Vec<Vec<String>>) {
    let mut ratio_headers: Vec<String> = Vec::new();
    for r in &report.records {
        for ratio in &r.ratios {
            if !ratio_headers.contains(&ratio.header) {
                ratio_headers.push(ratio.header.clone());
            }
        }
    }
    let shown: Vec<&(&str, &str)> = TABLE_EXTRAS
        .iter()
        .filter(|(key, _)| report.records.iter().any(|r| extra(r, key).is_some()))
        .collect();
    let mut header: Vec<String> = vec!["variant".into(), "threads".into()];
    header.extend(shown.iter().map(|(_, h)| h.to_string()));
    header.extend(
        ["metric", "median", "min", "max"]
            .iter()
            .map(|s| s.to_string()),
    );
    header.extend(ratio_headers.iter().cloned());
    let rows = report
        .records
        .iter()
        .map(|r| {
            let mut row = vec![r.variant.to_string(), r.threads.to_string()];
            row.extend(shown.iter().map(|(key, _)| match extra(r, key) {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => "-".to_string(),
            }));
            row.extend([
                r.metric.to_string(),
                format_value(r.summary.median),
                format_value(r.summary.min),
                format_value(r.summary.max),
            ]);
            for h in &ratio_headers {
                row.push(match r.ratios.iter().find(|x| &x.header == h) {
                    Some(x) if x.value.is_finite() => format!("{:.2}×", x.value),
                    _ => "-".to_string(),
                });
            }
            row
        })
        .collect();
    (header, rows)
}

/// Renders a report as an aligned plain-text table (text columns left, figures right).
pub fn render_text(report: &Report) -> String {
    let (header, rows) = table_cells(report);
    let width = |i: usize| {
        rows.iter()
            .map(|row| row[i].chars().count())
            .chain(std::iter::once(header[i].chars().count()))
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: &[String]| {
        let mut s = String::from(" ");
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            s.push_str("  ");
            if is_text_column(&header[i]) {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            }
        }
        s.trim_end().to_string()
    };
    let title = format!("{} — {}", report.scenario, report.title);
    let mut out = format!("{title}\n{}\n", "=".repeat(title.chars().count()));
    for note in &report.notes {
        let _ = writeln!(out, "  {note}");
    }
    out.push('\n');
    let _ = writeln!(out, "{}", line(&header));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row));
    }
    out
}

/// Renders a report as a markdown section: a `###` heading, the notes, a table.
pub fn render_markdown(report: &Report) -> String {
    let (header, rows) = table_cells(report);
    let mut out = format!("### `{}` — {}\n\n", report.scenario, report.title);
    for note in &report.notes {
        let _ = writeln!(out, "{note}  ");
    }
    if !report.notes.is_empty() {
        out.push('\n');
    }
    let cells = |row: &[String]| format!("| {} |", row.join(" | "));
    let _ = writeln!(out, "{}", cells(&header));
    let align: Vec<String> = (0..header.len())
        .map(|i| {
            if is_text_column(&header[i]) {
                ":--"
            } else {
                "--:"
            }
            .to_string()
        })
        .collect();
    let _ = writeln!(out, "{}", cells(&align));
    for row in &rows {
        let _ = writeln!(out, "{}", cells(row));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Progress
// ---------------------------------------------------------------------------------------------

/// The progress line on stderr: updated in place with `\r` on a terminal, one plain line per
/// step otherwise (so logs of CI runs stay readable).
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    begun: Instant,
    scenario: String,
}

impl Progress {
    /// A progress line; the clock starts now.
    pub fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            begun: Instant::now(),
            scenario: String::new(),
        }
    }

    /// Names the scenario shown in front of every later step, e.g. `[2/3] rcu-sync`.
    pub fn scenario(&mut self, label: String) {
        self.scenario = label;
    }

    /// Shows one step.
    pub fn step(&mut self, what: fmt::Arguments<'_>) {
        let line = format!(
            "[{:6.1} s] {}: {what}",
            self.begun.elapsed().as_secs_f64(),
            self.scenario
        );
        let mut err = std::io::stderr().lock();
        // A failed write to stderr is not worth failing the benchmark over.
        let _ = if self.tty {
            write!(err, "\r\x1b[K{line}").and_then(|()| err.flush())
        } else {
            writeln!(err, "{line}")
        };
    }

    /// Prints one line of its own that stays (e.g. that a scenario skipped a peer), clearing
    /// the progress line on a terminal first.
    pub fn say(&mut self, what: fmt::Arguments<'_>) {
        let mut err = std::io::stderr().lock();
        let clear = if self.tty { "\r\x1b[K" } else { "" };
        // A failed write to stderr is not worth failing the benchmark over.
        let _ = writeln!(err, "{clear}shrinker-bench: {what}");
    }

    /// Ends the progress line with a summary.
    pub fn finish(&mut self) {
        let mut err = std::io::stderr().lock();
        let clear = if self.tty { "\r\x1b[K" } else { "" };
        let _ = writeln!(
            err,
            "{clear}shrinker-bench: done in {:.1} s",
            self.begun.elapsed().as_secs_f64()
        );
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50.0), 50.0);
        assert_eq!(percentile(&xs, 99.0), 99.0);
        assert_eq!(percentile(&xs, 99.5), 100.0);
        assert_eq!(percentile(&xs, 0.0), 1.0);
        assert_eq!(percentile(&xs, 100.0), 100.0);
        // Few samples: p99 of five values is the largest, never an interpolation.
        assert_eq!(percentile(&[5.0, 1.0, 4.0, 2.0, 3.0], 99.0), 5.0);
        assert_eq!(percentile(&[5.0, 1.0, 4.0, 2.0, 3.0], 40.0), 2.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn summary_of_repetitions() {
        let s = Summary::of(&[5.0, 1.0, 3.0]);
        assert_eq!(
            s,
            Summary {
                median: 3.0,
                min: 1.0,
                max: 5.0,
                runs: 3
            }
        );
    }

    #[test]
    fn ns_per_op_averages_per_thread_figures() {
        let runs = [
            ThreadRun {
                ops: 100,
                elapsed: Duration::from_nanos(1_000),
            },
            ThreadRun {
                ops: 50,
                elapsed: Duration::from_nanos(1_500),
            },
        ];
        // (10 + 30) / 2: each thread's own elapsed over its own ops, then the mean.
        assert_eq!(ns_per_op(&runs), 20.0);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    fn sample_records() -> Vec<Record> {
        vec![
            Record::new("rcu-read", "fast", 1, "ns_per_op", &[1.0, 2.0, 3.0]),
            Record::new("rcu-read", "peer", 1, "ns_per_op", &[4.0, 4.0, 4.0]),
            Record::new("rcu-read", "fast", 2, "ns_per_op", &[3.0, 3.0, 3.0]),
            Record::new("rcu-read", "peer", 2, "ns_per_op", &[8.0, 8.0, 8.0]),
        ]
    }

    #[test]
    fn record_json_line() {
        let mut records = sample_records();
        add_ratio_to_variant(&mut records, "peer");
        add_ratio_to_one_thread(&mut records);
        let r = records[2].clone().with_extra("barrier_mode", "membarrier");
        assert_eq!(
            r.to_json(),
            concat!(
                r#"{"scenario":"rcu-read","variant":"fast","threads":2,"metric":"ns_per_op","#,
                r#""value":3,"min":3,"max":3,"runs":3,"ratio":0.375,"ratio_to":"peer","#,
                r#""ratio_1t":1.5,"ratio_1t_to":"threads=1","barrier_mode":"membarrier"}"#
            )
        );
        assert_eq!(
            records[0].to_json(),
            concat!(
                r#"{"scenario":"rcu-read","variant":"fast","threads":1,"metric":"ns_per_op","#,
                r#""value":2,"min":1,"max":3,"runs":3,"ratio":0.5,"ratio_to":"peer"}"#
            )
        );
    }

    #[test]
    fn ratio_missing_reference_is_absent() {
        let mut records = sample_records();
        add_ratio_to_variant(&mut records, "absent");
        assert!(records.iter().all(|r| r.ratios.is_empty()));
    }

    #[test]
    fn tables_have_ratio_columns() {
        let mut records = sample_records();
        add_ratio_to_variant(&mut records, "peer");
        add_ratio_to_one_thread(&mut records);
        let report = Report {
            scenario: "rcu-read",
            title: "t".into(),
            notes: vec!["note".into()],
            records,
        };
        let md = render_markdown(&report);
        assert!(md.contains(
            "| variant | threads | metric | median | min | max | vs peer | vs 1 thread |"
        ));
        assert!(md.contains("| fast | 2 | ns_per_op | 3.00 | 3.00 | 3.00 | 0.38× | 1.50× |"));
        assert!(md.contains("| fast | 1 | ns_per_op | 2.00 | 1.00 | 3.00 | 0.50× | - |"));
        let text = render_text(&report);
        assert!(text.starts_with("rcu-read — t\n"));
        assert!(text.contains("vs 1 thread"));
    }

    /// The hand-written JSON writer this module had before serde_json, kept as the oracle that
    /// the serde rows are the same bytes.
    mod hand_written {
        use std::fmt::Write as _;

        use serde_json::Value;

        use crate::harness::Record;

        pub fn string(s: &str) -> String {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if u32::from(c) < 0x20 => {
                        let _ = write!(out, "\\u{:04x}", u32::from(c));
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }

        pub fn number(x: f64) -> String {
            if x.is_finite() {
                format!("{x}")
            } else {
                "null".to_string()
            }
        }

        pub fn row(r: &Record) -> String {
            let mut fields = vec![
                ("scenario".to_string(), string(r.scenario)),
                ("variant".to_string(), string(r.variant)),
                ("threads".to_string(), r.threads.to_string()),
                ("metric".to_string(), string(r.metric)),
                ("value".to_string(), number(r.summary.median)),
                ("min".to_string(), number(r.summary.min)),
                ("max".to_string(), number(r.summary.max)),
                ("runs".to_string(), r.summary.runs.to_string()),
            ];
            for ratio in &r.ratios {
                let rounded = (ratio.value * 1e4).round() / 1e4;
                fields.push((ratio.key.to_string(), number(rounded)));
                fields.push((format!("{}_to", ratio.key), string(&ratio.to)));
            }
            for (key, value) in &r.extra {
                let v = match value {
                    Value::String(s) => string(s),
                    Value::Number(n) => number(n.as_f64().unwrap()),
                    Value::Null => "null".to_string(),
                    other => panic!("the hand-written writer had no {other:?}"),
                };
                fields.push((key.to_string(), v));
            }
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}:{v}", string(k)))
                .collect();
            format!("{{{}}}", body.join(","))
        }
    }

    /// A record whose every figure (median, min, max, ratio, one extra) is `x`.
    fn record_of(x: f64) -> Record {
        let mut r = Record::new("s", "v", 2, "m", &[x]).with_extra("extra", x);
        r.ratios.push(Ratio {
            key: "ratio",
            to: "ref".into(),
            header: "vs ref".into(),
            value: x,
        });
        r
    }

    #[test]
    fn rows_write_numbers_as_the_hand_written_writer_did() {
        let special = [
            0.0,
            -0.0,
            1.0,
            2.0,
            1.5,
            0.1 + 0.2,
            1.0 / 3.0,
            1e-7,
            1e-300,
            5e-324,
            f64::MIN_POSITIVE,
            1e15,
            1e16,
            1e17,
            1e21,
            1e300,
            f64::MAX,
            -f64::MAX,
            6.332895608533911,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        // Deterministic pseudo-random bit patterns (splitmix64): every exponent and mantissa.
        let mut seed = 0x5eed_u64;
        let random = std::iter::repeat_with(move || {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            f64::from_bits(z ^ (z >> 31))
        });
        for x in special.into_iter().chain(random.take(10_000)) {
            let r = record_of(x);
            assert_eq!(r.to_json(), hand_written::row(&r), "{x:e}");
        }
        assert_eq!(
            record_of(2.0).to_json(),
            concat!(
                r#"{"scenario":"s","variant":"v","threads":2,"metric":"m","value":2,"min":2,"#,
                r#""max":2,"runs":1,"ratio":2,"ratio_to":"ref","extra":2}"#
            )
        );
        assert!(record_of(1e-7).to_json().contains(r#""value":0.0000001,"#));
        assert!(record_of(f64::NAN)
            .to_json()
            .contains(r#""value":null,"min":null,"max":null,"runs":1,"ratio":null,"#));
        // Integer extras are written as integers.
        let r = Record::new("s", "v", 1, "m", &[]).with_extra("n", 10_000_usize);
        assert!(
            r.to_json().ends_with(r#""runs":0,"n":10000}"#),
            "{}",
            r.to_json()
        );
    }

    #[test]
    fn rows_escape_strings_as_the_hand_written_writer_did() {
        // Every ASCII character (but two, below) and some beyond, in a ratio's `_to` and in a
        // string extra.
        let mut texts: Vec<String> = (0..0x80_u8)
            .filter(|&b| b != 0x08 && b != 0x0c)
            .map(|b| format!("a{}b", char::from(b)))
            .collect();
        texts.extend(["", "µs → ×", "\u{2028}\u{7f}", "🦀", "a\"b\\c\nd"].map(String::from));
        for text in &texts {
            let mut r = Record::new("s", "v", 1, "m", &[1.0]).with_extra("x", text.as_str());
            r.ratios.push(Ratio {
                key: "ratio",
                to: text.clone(),
                header: "vs".into(),
                value: 1.0,
            });
            assert_eq!(r.to_json(), hand_written::row(&r), "{text:?}");
        }
        // Backspace and form feed: serde_json writes the short escapes `\b` and `\f` where the
        // hand-written writer wrote `\u0008` and `\u000c`; both are JSON for the same string
        // (no name, variant or metric contains either).
        let r = Record::new("s", "v", 1, "m", &[1.0]).with_extra("x", "\u{8}\u{c}");
        let json = r.to_json();
        assert!(json.ends_with(r#""x":"\b\f"}"#), "{json}");
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["x"], "\u{8}\u{c}");
    }
}
