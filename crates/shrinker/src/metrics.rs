//! Every counter this project keeps, as metrics with Prometheus names.
//!
//! A library should not pick its user's exporter, so nothing here sends
//! anything anywhere by itself. [`collect`] takes a snapshot of a registry's
//! shrinkers, a reclaimer's statistics and the RCU domain's figures as a list
//! of [`Sample`]s; then either
//!
//! - [`publish`] hands them to the [`metrics`](https://docs.rs/metrics)
//!   facade (feature `metrics`, off by default), so that whatever recorder
//!   the program installed (Prometheus, StatsD, OpenTelemetry, …) exports
//!   them; call it from your scrape hook or a timer, or
//! - [`prometheus_text`] renders them in the Prometheus text exposition
//!   format (what the control socket's `metrics` command answers).
//!
//! Reading is cheap and side-effect free: no shrinker callback is called
//! (object counts need `count`, which the control socket's `list` calls on
//! request; metrics do not).
//!
//! # The full list
//!
//! Counters end in `_total`; the rest are gauges. `shrinker="name"` and
//! `id="n"` label the per-shrinker series (names need not be unique, ids
//! are), `source="cgroup1"` … the reclaimer's per-source series
//! (`proactive` for [`Reclaimer::reclaim`](crate::reclaim::Reclaimer::reclaim)).
//!
//! | name | labels | what |
//! |---|---|---|
//! | `shrinker_count_calls_total` | shrinker, id | `count` callbacks made |
//! | `shrinker_scan_calls_total` | shrinker, id | `scan` callbacks made |
//! | `shrinker_objects_scanned_total` | shrinker, id | objects scanned (`nr_scanned` summed) |
//! | `shrinker_objects_freed_total` | shrinker, id | objects reported freed |
//! | `shrinker_objects_deferred` | shrinker, id | deferred work now, summed over nodes |
//! | `shrinker_callback_panics_total` | shrinker, id | callbacks that panicked (caught) |
//! | `shrinker_scan_seconds_total` | shrinker, id | time inside `scan` callbacks |
//! | `shrinker_registered` | | shrinkers on the list |
//! | `shrinker_reclaim_passes_total` | | registry walks by the reclaimer |
//! | `shrinker_reclaim_proactive_calls_total` | | `Reclaimer::reclaim` calls |
//! | `shrinker_reclaim_rounds_total` | source | rounds (one descent from priority 12) |
//! | `shrinker_reclaim_bytes_asked_total` | source | sum of the rounds' byte targets |
//! | `shrinker_reclaim_bytes_freed_total` | source | bytes the rounds freed (as reported) |
//! | `shrinker_reclaim_objects_freed_total` | | objects the reclaimer freed |
//! | `shrinker_reclaim_level` | | last level seen: 0 none, 1 moderate, 2 critical |
//! | `shrinker_reclaim_last_reaction_seconds` | | last round: from the reading to its first walk |
//! | `shrinker_reclaim_max_reaction_seconds` | | the slowest reaction seen |
//! | `shrinker_reclaim_cpu_seconds_total` | | the reclaimer thread's CPU time |
//! | `shrinker_reclaim_budget_stops_total` | | rounds cut short by the CPU budget |
//! | `shrinker_reclaim_allocator_trims_total` | | calls of the allocator's return |
//! | `shrinker_reclaim_unreturned_rounds_total` | | rounds whose frees did not show in the usage |
//! | `shrinker_reclaim_exhausted_rounds_total` | | Critical rounds that found nothing to shrink |
//! | `shrinker_reclaim_source_failovers_total` | | dead pressure sources replaced |
//! | `shrinker_rcu_grace_periods_total` | | grace periods completed |
//! | `shrinker_rcu_callbacks_queued_total` | | RCU callbacks queued (invoked + pending: exact when none is in flight) |
//! | `shrinker_rcu_callbacks_invoked_total` | | RCU callbacks invoked |
//! | `shrinker_rcu_callback_panics_total` | | RCU callbacks that panicked |
//! | `shrinker_rcu_backlog_overloads_total` | | callback backlog overload episodes |
//! | `shrinker_rcu_overloaded_enqueues_total` | | callbacks queued onto an overloaded shard |
//! | `shrinker_rcu_callbacks_pending` | | callbacks queued or in flight (prompt and lazy) |
//! | `shrinker_rcu_lazy_callbacks_pending` | | lazy callbacks not yet flushed |
//! | `shrinker_rcu_readers` | | threads registered as RCU readers |
//!
//! The `metrics` facade has integer counters only: the two `_seconds_total`
//! series are published through it as gauges (`gauge!(…).set(seconds)`);
//! the Prometheus text types them as counters.
//!
//! # Example
//!
//! ```
//! use shrinker::ShrinkerRegistry;
//! let reg = ShrinkerRegistry::builder().nodes(1).build()?;
//! let text = shrinker::metrics::prometheus_text(&shrinker::metrics::collect(&reg, None));
//! assert!(text.contains("# TYPE shrinker_rcu_grace_periods_total counter"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt::Write as _;

use crate::reclaim::ReclaimerStats;
use crate::ShrinkerRegistry;

/// Counter (only goes up) or gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Cumulative; the name ends in `_total`.
    Counter,
    /// A value now.
    Gauge,
}

/// A metric's name, help text and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    /// The Prometheus name.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
}

/// One value of one series.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Which metric.
    pub metric: &'static Metric,
    /// Label names and values.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

macro_rules! metrics_table {
    ($($id:ident = $name:literal, $kind:ident, $help:literal;)*) => {
        $(
            #[allow(missing_docs)]
            const $id: Metric = Metric { name: $name, help: $help, kind: Kind::$kind };
        )*
        /// Every metric, in the order of the documented list.
        pub const ALL: &[Metric] = &[$($id),*];
    };
}

metrics_table! {
    COUNT_CALLS = "shrinker_count_calls_total", Counter, "count callbacks made";
    SCAN_CALLS = "shrinker_scan_calls_total", Counter, "scan callbacks made";
    SCANNED = "shrinker_objects_scanned_total", Counter, "objects scanned (nr_scanned summed)";
    FREED = "shrinker_objects_freed_total", Counter, "objects reported freed";
    DEFERRED = "shrinker_objects_deferred", Gauge, "deferred work now, summed over nodes";
    PANICS = "shrinker_callback_panics_total", Counter, "callbacks that panicked (caught)";
    SCAN_SECONDS = "shrinker_scan_seconds_total", Counter, "time inside scan callbacks";
    REGISTERED = "shrinker_registered", Gauge, "shrinkers on the list";
    PASSES = "shrinker_reclaim_passes_total", Counter, "registry walks by the reclaimer";
    PROACTIVE = "shrinker_reclaim_proactive_calls_total", Counter, "Reclaimer::reclaim calls";
    ROUNDS = "shrinker_reclaim_rounds_total", Counter, "reclaim rounds (one descent from priority 12)";
    ASKED = "shrinker_reclaim_bytes_asked_total", Counter, "sum of the rounds' byte targets";
    BYTES_FREED = "shrinker_reclaim_bytes_freed_total", Counter, "bytes the rounds freed (as reported)";
    R_OBJECTS = "shrinker_reclaim_objects_freed_total", Counter, "objects the reclaimer freed";
    LEVEL = "shrinker_reclaim_level", Gauge, "last pressure level seen: 0 none, 1 moderate, 2 critical";
    REACTION = "shrinker_reclaim_last_reaction_seconds", Gauge, "last round: from the reading to its first walk";
    MAX_REACTION = "shrinker_reclaim_max_reaction_seconds", Gauge, "the slowest reaction seen";
    CPU = "shrinker_reclaim_cpu_seconds_total", Counter, "the reclaimer thread's CPU time";
    BUDGET = "shrinker_reclaim_budget_stops_total", Counter, "rounds cut short by the CPU budget";
    TRIMS = "shrinker_reclaim_allocator_trims_total", Counter, "calls of the allocator's return";
    UNRETURNED = "shrinker_reclaim_unreturned_rounds_total", Counter, "rounds whose frees did not show in the usage";
    EXHAUSTED = "shrinker_reclaim_exhausted_rounds_total", Counter, "Critical rounds that found nothing to shrink";
    FAILOVERS = "shrinker_reclaim_source_failovers_total", Counter, "dead pressure sources replaced";
    GP = "shrinker_rcu_grace_periods_total", Counter, "RCU grace periods completed";
    QUEUED = "shrinker_rcu_callbacks_queued_total", Counter, "RCU callbacks queued";
    INVOKED = "shrinker_rcu_callbacks_invoked_total", Counter, "RCU callbacks invoked";
    CB_PANICS = "shrinker_rcu_callback_panics_total", Counter, "RCU callbacks that panicked";
    OVERLOADS = "shrinker_rcu_backlog_overloads_total", Counter, "RCU callback backlog overload episodes";
    OVERLOADED = "shrinker_rcu_overloaded_enqueues_total", Counter, "callbacks queued onto an overloaded shard";
    PENDING = "shrinker_rcu_callbacks_pending", Gauge, "RCU callbacks queued or in flight";
    LAZY = "shrinker_rcu_lazy_callbacks_pending", Gauge, "lazy RCU callbacks not yet flushed";
    READERS = "shrinker_rcu_readers", Gauge, "threads registered as RCU readers";
}

fn level_code(level: shrinker_pressure::Level) -> f64 {
    match level {
        shrinker_pressure::Level::None => 0.0,
        shrinker_pressure::Level::Moderate => 1.0,
        shrinker_pressure::Level::Critical => 2.0,
    }
}

/// A snapshot of every metric: `registry`'s shrinkers, the reclaimer's
/// statistics when given ([`Reclaimer::stats`](crate::reclaim::Reclaimer::stats)),
/// and the RCU domain ([`shrinker_rcu::stats`]).
///
/// # Blocking
///
/// Takes the registry mutex for the length of the list (as
/// [`ShrinkerRegistry::shrinkers`]); calls no shrinker callback.
#[must_use]
pub fn collect(registry: &ShrinkerRegistry, reclaimer: Option<&ReclaimerStats>) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut push = |metric: &'static Metric, labels: Vec<(&'static str, String)>, value: f64| {
        out.push(Sample {
            metric,
            labels,
            value,
        });
    };
    let list = registry.shrinkers();
    for s in &list {
        let l = || vec![("shrinker", s.name.clone()), ("id", s.id.to_string())];
        let st = &s.stats;
        push(&COUNT_CALLS, l(), st.count_calls as f64);
        push(&SCAN_CALLS, l(), st.scan_calls as f64);
        push(&SCANNED, l(), st.scanned as f64);
        push(&FREED, l(), st.freed as f64);
        push(&DEFERRED, l(), st.deferred as f64);
        push(&PANICS, l(), st.panics as f64);
        push(&SCAN_SECONDS, l(), st.scan_time.as_secs_f64());
    }
    push(&REGISTERED, Vec::new(), list.len() as f64);
    if let Some(r) = reclaimer {
        push(&PASSES, Vec::new(), r.passes as f64);
        push(&PROACTIVE, Vec::new(), r.proactive_calls as f64);
        for (source, f) in &r.by_source {
            let l = || vec![("source", (*source).to_owned())];
            push(&ROUNDS, l(), f.rounds as f64);
            push(&ASKED, l(), f.bytes_asked as f64);
            push(&BYTES_FREED, l(), f.bytes_freed as f64);
        }
        push(&R_OBJECTS, Vec::new(), r.objects_freed as f64);
        push(&LEVEL, Vec::new(), level_code(r.last_level));
        let secs = |d: Option<std::time::Duration>| d.map_or(0.0, |d| d.as_secs_f64());
        push(&REACTION, Vec::new(), secs(r.last_reaction));
        push(&MAX_REACTION, Vec::new(), secs(r.max_reaction));
        push(&CPU, Vec::new(), r.cpu_used.as_secs_f64());
        push(&BUDGET, Vec::new(), r.budget_stops as f64);
        push(&TRIMS, Vec::new(), r.trims as f64);
        push(&UNRETURNED, Vec::new(), r.unreturned_rounds as f64);
        push(&EXHAUSTED, Vec::new(), r.exhausted_rounds as f64);
        push(&FAILOVERS, Vec::new(), r.source_failovers as f64);
    }
    let rcu = shrinker_rcu::stats();
    push(&GP, Vec::new(), rcu.grace_periods as f64);
    // Every queued callback is pending until invoked (`pending` counts the
    // ones in flight too), so the sum counts every callback ever queued.
    push(
        &QUEUED,
        Vec::new(),
        rcu.callbacks_invoked.saturating_add(rcu.pending as u64) as f64,
    );
    push(&INVOKED, Vec::new(), rcu.callbacks_invoked as f64);
    push(&CB_PANICS, Vec::new(), rcu.callback_panics as f64);
    push(&OVERLOADS, Vec::new(), rcu.backlog_overloads as f64);
    push(&OVERLOADED, Vec::new(), rcu.overloaded_enqueues as f64);
    push(&PENDING, Vec::new(), rcu.pending as f64);
    push(&LAZY, Vec::new(), rcu.lazy_pending as f64);
    push(&READERS, Vec::new(), rcu.readers as f64);
    out
}

/// Escape a label value for the text format (`\`, `"` and newline).
fn escape(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The samples in the Prometheus text exposition format (version 0.0.4):
/// a `# HELP` and `# TYPE` line before each metric's first sample; samples
/// of one metric are kept together.
#[must_use]
pub fn prometheus_text(samples: &[Sample]) -> String {
    let mut out = String::new();
    for m in ALL {
        let mut first = true;
        for s in samples.iter().filter(|s| s.metric.name == m.name) {
            if first {
                let kind = match m.kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                };
                let _ = writeln!(out, "# HELP {} {}", m.name, m.help);
                let _ = writeln!(out, "# TYPE {} {kind}", m.name);
                first = false;
            }
            out.push_str(m.name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push_str("=\"");
                    escape(v, &mut out);
                    out.push('"');
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", s.value);
        }
    }
    out
}

/// Hand the samples to the `metrics` facade's installed recorder: counters
/// as absolute values (`counter!(name, labels).absolute(v)`), gauges with
/// `set`; the `_seconds_total` series as gauges (the facade's counters are
/// integers). Each metric is described (`describe_*!`) on every call, which
/// recorders treat as idempotent.
#[cfg(feature = "metrics")]
pub fn publish(samples: &[Sample]) {
    for m in ALL {
        let float = m.name.ends_with("_seconds_total");
        match (m.kind, float) {
            (Kind::Counter, false) => ::metrics::describe_counter!(m.name, m.help),
            _ => ::metrics::describe_gauge!(m.name, m.help),
        }
    }
    for s in samples {
        let labels: Vec<::metrics::Label> = s
            .labels
            .iter()
            .map(|(k, v)| ::metrics::Label::new(*k, v.clone()))
            .collect();
        let float = s.metric.name.ends_with("_seconds_total");
        match (s.metric.kind, float) {
            // The value came from a u64 counter (exact below 2^53).
            (Kind::Counter, false) => {
                ::metrics::counter!(s.metric.name, labels).absolute(s.value as u64);
            }
            _ => ::metrics::gauge!(s.metric.name, labels).set(s.value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Count, Scan, Shrink, ShrinkControl, ShrinkerBuilder};

    struct Ten;
    impl Shrink for Ten {
        fn count(&self, _: &ShrinkControl) -> Count {
            Count::Objects(10)
        }
        fn scan(&self, sc: &mut ShrinkControl) -> Scan {
            Scan::Freed(sc.nr_to_scan())
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)] // the RCU domain's worker thread
    fn every_documented_metric_is_rendered_with_its_labels() {
        let reg = ShrinkerRegistry::builder().nodes(1).build().unwrap();
        let s = ShrinkerBuilder::new("te\"n")
            .build_in(&reg, Ten)
            .unwrap()
            .register();
        assert_eq!(reg.scan(s.id(), 0, 4).unwrap(), Scan::Freed(4));
        let mut stats = ReclaimerStats::default();
        stats.by_source.push(("proactive", Default::default()));
        let text = prometheus_text(&collect(&reg, Some(&stats)));
        for m in ALL {
            assert!(
                text.contains(&format!("# TYPE {} ", m.name)),
                "{} missing",
                m.name
            );
        }
        let want = format!(
            "shrinker_objects_freed_total{{shrinker=\"te\\\"n\",id=\"{}\"}} 4\n",
            s.id()
        );
        assert!(text.contains(&want), "{text}");
        // The module docs list every metric.
        let doc = include_str!("metrics.rs");
        for m in ALL {
            assert!(
                doc.contains(&format!("| `{}` |", m.name)),
                "{} undocumented",
                m.name
            );
        }
    }

    /// A recorder that keeps every series' last value.
    #[cfg(feature = "metrics")]
    #[derive(Default)]
    struct Keep(std::sync::Mutex<Vec<(String, std::sync::Arc<std::sync::atomic::AtomicU64>)>>);

    #[cfg(feature = "metrics")]
    impl Keep {
        fn slot(&self, key: &::metrics::Key) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let k = format!("{}{{{}}}", key.name(), labels.join(","));
            let mut v = self.0.lock().unwrap();
            if let Some((_, a)) = v.iter().find(|(n, _)| *n == k) {
                return a.clone();
            }
            let a = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            v.push((k, a.clone()));
            a
        }

        fn get(&self, k: &str) -> Option<u64> {
            let v = self.0.lock().unwrap();
            // Relaxed: read after the publishing calls on this thread.
            v.iter()
                .find(|(n, _)| n == k)
                .map(|(_, a)| a.load(std::sync::atomic::Ordering::Relaxed))
        }
    }

    #[cfg(feature = "metrics")]
    impl ::metrics::Recorder for Keep {
        fn describe_counter(
            &self,
            _: ::metrics::KeyName,
            _: Option<::metrics::Unit>,
            _: ::metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: ::metrics::KeyName,
            _: Option<::metrics::Unit>,
            _: ::metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: ::metrics::KeyName,
            _: Option<::metrics::Unit>,
            _: ::metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            key: &::metrics::Key,
            _: &::metrics::Metadata<'_>,
        ) -> ::metrics::Counter {
            ::metrics::Counter::from_arc(self.slot(key))
        }
        fn register_gauge(
            &self,
            key: &::metrics::Key,
            _: &::metrics::Metadata<'_>,
        ) -> ::metrics::Gauge {
            ::metrics::Gauge::from_arc(self.slot(key))
        }
        fn register_histogram(
            &self,
            _: &::metrics::Key,
            _: &::metrics::Metadata<'_>,
        ) -> ::metrics::Histogram {
            ::metrics::Histogram::noop()
        }
    }

    #[test]
    #[cfg(feature = "metrics")]
    #[cfg_attr(miri, ignore)]
    fn publish_hands_counters_and_gauges_to_the_installed_recorder() {
        let reg = ShrinkerRegistry::builder().nodes(1).build().unwrap();
        let s = ShrinkerBuilder::new("ten")
            .build_in(&reg, Ten)
            .unwrap()
            .register();
        assert_eq!(reg.scan(s.id(), 0, 6).unwrap(), Scan::Freed(6));
        let stats = ReclaimerStats {
            last_level: shrinker_pressure::Level::Critical,
            ..ReclaimerStats::default()
        };
        let keep = Keep::default();
        ::metrics::with_local_recorder(&keep, || publish(&collect(&reg, Some(&stats))));
        let key = format!("shrinker_objects_freed_total{{shrinker=ten,id={}}}", s.id());
        assert_eq!(keep.get(&key), Some(6));
        // Gauges are stored as f64 bits.
        let level = keep.get("shrinker_reclaim_level{}").map(f64::from_bits);
        assert_eq!(level, Some(2.0));
    }
}
