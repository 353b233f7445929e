//! Every screen of `shrinkctl` as a pure function of the replies, so that
//! tests check them without a terminal.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use crate::human_bytes;

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// `shrinkctl list`: a stable table, one row per shrinker, columns
/// `ID NAME OBJECTS FREED SCANNED DEFERRED PANICS` separated by spaces
/// (names are last-resort truncated to 32 characters, never padded into
/// the next column).
pub fn list_table(list: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>4} {:<32} {:>12} {:>12} {:>12} {:>10} {:>6}",
        "ID", "NAME", "OBJECTS", "FREED", "SCANNED", "DEFERRED", "PANICS"
    );
    for row in list.as_array().into_iter().flatten() {
        let name: String = s(row, "name").chars().take(32).collect();
        let name = name.replace(char::is_whitespace, "_");
        let _ = writeln!(
            out,
            "{:>4} {:<32} {:>12} {:>12} {:>12} {:>10} {:>6}",
            u(row, "id"),
            name,
            u(row, "objects"),
            u(row, "freed"),
            u(row, "scanned"),
            u(row, "deferred"),
            u(row, "panics"),
        );
    }
    out
}

/// `shrinkctl pressure`.
pub fn pressure_text(p: &Value) -> String {
    let mut out = format!("level: {}\nsource: {}\n", s(p, "level"), s(p, "source"));
    let b = |k: &str| p.get(k).and_then(Value::as_u64).map(human_bytes);
    if let (Some(usage), Some(limit)) = (b("usage"), b("limit")) {
        let _ = writeln!(out, "usage: {usage} of {limit}");
    } else if let Some(usage) = b("usage") {
        let _ = writeln!(out, "usage: {usage}");
    }
    if let Some(h) = b("headroom") {
        let _ = writeln!(out, "to free: {h}");
    }
    if let Some(d) = p.get("describe").and_then(Value::as_str) {
        if !d.is_empty() {
            let _ = writeln!(out, "describe: {d}");
        }
    }
    out
}

/// `shrinkctl stats`.
pub fn stats_text(st: &Value) -> String {
    let mut out = format!("shrinkers: {}\n", u(st, "shrinkers"));
    match st.get("reclaimer") {
        Some(r) if r.is_object() => {
            let _ = writeln!(
                out,
                "reclaimer: level {}, {} rounds, {} passes, freed {} ({} objects), {} proactive calls",
                s(r, "last_level"),
                u(r, "rounds"),
                u(r, "passes"),
                human_bytes(u(r, "bytes_freed")),
                u(r, "objects_freed"),
                u(r, "proactive_calls"),
            );
            let ms = |k: &str| {
                r.get(k)
                    .and_then(Value::as_u64)
                    .map_or("-".to_owned(), |ns| format!("{:.1} ms", ns as f64 / 1e6))
            };
            let _ = writeln!(
                out,
                "  reaction: last {}, max {}; cpu {}; budget stops {}, trims {}, unreturned {}, exhausted {}, failovers {}",
                ms("last_reaction_ns"),
                ms("max_reaction_ns"),
                ms("cpu_ns"),
                u(r, "budget_stops"),
                u(r, "trims"),
                u(r, "unreturned_rounds"),
                u(r, "exhausted_rounds"),
                u(r, "source_failovers"),
            );
            for src in r
                .get("by_source")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let _ = writeln!(
                    out,
                    "  {}: {} rounds, asked {}, freed {}",
                    s(src, "source"),
                    u(src, "rounds"),
                    human_bytes(u(src, "bytes_asked")),
                    human_bytes(u(src, "bytes_freed")),
                );
            }
            let _ = writeln!(out, "  source: {}", s(r, "source"));
        }
        _ => out.push_str("reclaimer: none\n"),
    }
    if let Some(rcu) = st.get("rcu") {
        let _ = writeln!(
            out,
            "rcu: {} grace periods, {} callbacks invoked, {} pending ({} lazy), {} readers, {} panics",
            u(rcu, "grace_periods"),
            u(rcu, "callbacks_invoked"),
            u(rcu, "pending"),
            u(rcu, "lazy_pending"),
            u(rcu, "readers"),
            u(rcu, "callback_panics"),
        );
    }
    out
}

/// How `top` sorts its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SortBy {
    /// Most objects first.
    #[default]
    Objects,
    /// Most objects freed per second first.
    Freed,
    /// Most bytes held first (shrinkers that know no size last).
    Bytes,
}

/// One sample of a process for `top`: the replies of `list`, `pressure` and
/// `stats`.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// `list`'s result.
    pub list: Value,
    /// `pressure`'s result.
    pub pressure: Value,
    /// `stats`'s result.
    pub stats: Value,
}

fn freed_per_sec(prev: Option<&Snapshot>, row: &Value, dt: Duration) -> f64 {
    let Some(prev) = prev else { return 0.0 };
    let id = u(row, "id");
    let before = prev
        .list
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| u(r, "id") == id && s(r, "name") == s(row, "name"))
        .map_or(0, |r| u(r, "freed"));
    let secs = dt.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    u(row, "freed").saturating_sub(before) as f64 / secs
}

fn level_colour(level: &str) -> &'static str {
    match level {
        "critical" => "\x1b[1;31m",
        "moderate" => "\x1b[33m",
        _ => "\x1b[32m",
    }
}

/// The `top` screen (like `slabtop`): the pressure line, the reclaimer's
/// last pass, then the shrinkers sorted, at most `rows` of them. `prev` and
/// `dt` give the per-second rates. `colour` adds ANSI colours (only when
/// the output is a terminal).
pub fn top_screen(
    prev: Option<&Snapshot>,
    cur: &Snapshot,
    dt: Duration,
    sort: SortBy,
    rows: usize,
    colour: bool,
) -> String {
    let mut out = String::new();
    let p = &cur.pressure;
    let level = s(p, "level");
    let (c, r) = if colour {
        (level_colour(level), "\x1b[0m")
    } else {
        ("", "")
    };
    let usage = match (
        p.get("usage").and_then(Value::as_u64),
        p.get("limit").and_then(Value::as_u64),
    ) {
        (Some(us), Some(li)) => format!(
            ", usage {} of {} ({:.0}%)",
            human_bytes(us),
            human_bytes(li),
            us as f64 * 100.0 / li.max(1) as f64
        ),
        (Some(us), None) => format!(", usage {}", human_bytes(us)),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "pressure: {c}{level}{r} (source {}){usage}",
        s(p, "source")
    );
    match cur.stats.get("reclaimer") {
        Some(rc) if rc.is_object() => {
            let reaction = rc
                .get("last_reaction_ns")
                .and_then(Value::as_u64)
                .map_or("-".to_owned(), |ns| format!("{:.1} ms", ns as f64 / 1e6));
            let _ = writeln!(
                out,
                "reclaimer: {} rounds, {} passes, freed {} in all, last reaction {reaction}",
                u(rc, "rounds"),
                u(rc, "passes"),
                human_bytes(u(rc, "bytes_freed")),
            );
        }
        _ => out.push_str("reclaimer: none\n"),
    }
    let mut list: Vec<(&Value, f64)> = cur
        .list
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| (row, freed_per_sec(prev, row, dt)))
        .collect();
    match sort {
        SortBy::Objects => list.sort_by_key(|r| std::cmp::Reverse(u(r.0, "objects"))),
        SortBy::Freed => list.sort_by(|a, b| b.1.total_cmp(&a.1)),
        SortBy::Bytes => {
            list.sort_by_key(|r| std::cmp::Reverse(r.0.get("bytes").and_then(Value::as_u64)))
        }
    }
    let total: u64 = list.iter().map(|(row, _)| u(row, "objects")).sum();
    let _ = writeln!(out, "shrinkers: {}, objects: {total}", list.len());
    out.push('\n');
    let _ = writeln!(
        out,
        "{:>4} {:<24} {:>12} {:>10} {:>10} {:>12} {:>10}",
        "ID", "NAME", "OBJECTS", "BYTES", "FREED/S", "FREED", "DEFERRED"
    );
    for (row, rate) in list.iter().take(rows) {
        let name: String = s(row, "name").chars().take(24).collect();
        let _ = writeln!(
            out,
            "{:>4} {:<24} {:>12} {:>10} {:>10.0} {:>12} {:>10}",
            u(row, "id"),
            name,
            u(row, "objects"),
            row.get("bytes")
                .and_then(Value::as_u64)
                .map_or("-".to_owned(), human_bytes),
            rate,
            u(row, "freed"),
            u(row, "deferred"),
        );
    }
    out
}

/// `top` when its output is not a terminal: one line per sample.
pub fn top_line(
    prev: Option<&Snapshot>,
    cur: &Snapshot,
    dt: Duration,
    elapsed: Duration,
) -> String {
    let p = &cur.pressure;
    let rows = cur.list.as_array().map_or(&[][..], Vec::as_slice);
    let objects: u64 = rows.iter().map(|r| u(r, "objects")).sum();
    let rate: f64 = rows.iter().map(|r| freed_per_sec(prev, r, dt)).sum();
    let usage = p
        .get("usage")
        .and_then(Value::as_u64)
        .map_or("-".to_owned(), human_bytes);
    let limit = p
        .get("limit")
        .and_then(Value::as_u64)
        .map_or("-".to_owned(), human_bytes);
    let freed = cur
        .stats
        .get("reclaimer")
        .map(|r| human_bytes(u(r, "bytes_freed")))
        .unwrap_or_else(|| "-".to_owned());
    format!(
        "t={:.0}s level={} source={} usage={} limit={} shrinkers={} objects={objects} freed/s={rate:.0} reclaimed={}",
        elapsed.as_secs_f64(),
        s(p, "level"),
        s(p, "source"),
        usage.replace(' ', ""),
        limit.replace(' ', ""),
        rows.len(),
        freed.replace(' ', ""),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snap(freed_a: u64, objects_a: u64) -> Snapshot {
        Snapshot {
            list: json!([
                {"id": 0, "name": "pages", "objects": objects_a, "freed": freed_a, "deferred": 0},
                {"id": 1, "name": "inodes", "objects": 50, "freed": 10, "deferred": 3},
            ]),
            pressure: json!({"level": "moderate", "source": "cgroup1",
                             "usage": 60u64 << 20, "limit": 64u64 << 20}),
            stats: json!({"reclaimer": {"rounds": 2, "passes": 5, "bytes_freed": 4u64 << 20,
                                        "last_reaction_ns": 1_500_000}}),
        }
    }

    #[test]
    fn top_sorts_by_objects_and_computes_freed_per_second() {
        let a = snap(100, 10);
        let b = snap(300, 20);
        let screen = top_screen(
            Some(&a),
            &b,
            Duration::from_secs(2),
            SortBy::Freed,
            10,
            false,
        );
        assert!(
            screen
                .contains("pressure: moderate (source cgroup1), usage 60.0 MiB of 64.0 MiB (94%)"),
            "{screen}"
        );
        assert!(screen.contains("last reaction 1.5 ms"), "{screen}");
        let pages = screen.lines().position(|l| l.contains("pages")).unwrap();
        let inodes = screen.lines().position(|l| l.contains("inodes")).unwrap();
        assert!(pages < inodes, "sorted by freed/s: {screen}");
        assert!(
            screen.lines().nth(pages).unwrap().contains(" 100 "),
            "(300-100)/2 s: {screen}"
        );
        let screen = top_screen(
            Some(&a),
            &b,
            Duration::from_secs(2),
            SortBy::Objects,
            10,
            false,
        );
        let pages = screen.lines().position(|l| l.contains("pages")).unwrap();
        let inodes = screen.lines().position(|l| l.contains("inodes")).unwrap();
        assert!(inodes < pages, "sorted by objects: {screen}");
        assert!(!screen.contains('\x1b'), "no colours unless asked");
        let one = top_line(Some(&a), &b, Duration::from_secs(2), Duration::from_secs(7));
        assert_eq!(one.lines().count(), 1);
        assert!(one.starts_with("t=7s level=moderate source=cgroup1 usage=60.0MiB limit=64.0MiB shrinkers=2 objects=70 freed/s=100"), "{one}");
    }

    #[test]
    fn top_sorts_by_bytes_held_unknown_sizes_last() {
        let mut s = snap(0, 10);
        s.list = json!([
            {"id": 0, "name": "unsized", "objects": 900},
            {"id": 1, "name": "small", "objects": 5, "bytes": 4096},
            {"id": 2, "name": "big", "objects": 3, "bytes": 3u64 << 20},
        ]);
        let screen = top_screen(None, &s, Duration::from_secs(1), SortBy::Bytes, 10, false);
        let at = |name: &str| screen.lines().position(|l| l.contains(name)).unwrap();
        assert!(
            at("big") < at("small") && at("small") < at("unsized"),
            "{screen}"
        );
        assert!(screen.contains("BYTES"), "{screen}");
        assert!(
            screen.lines().nth(at("big")).unwrap().contains("3.0 MiB"),
            "{screen}"
        );
    }

    #[test]
    fn list_table_is_one_row_per_shrinker_under_a_header() {
        let t = list_table(&json!([{"id": 3, "name": "a b", "objects": 7}]));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cols, ["3", "a_b", "7", "0", "0", "0", "0"]);
    }
}
