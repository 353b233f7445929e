//! The JSON-lines protocol: one request line in, one reply line out. Pure
//! of I/O: the server feeds it lines and writes what it returns.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use shrinker_pressure::Monitor;

use super::config::ControlLimits;
use crate::reclaim::{Reclaimer, ReclaimerStats};
use crate::{Count, GroupId, Scan, ShrinkerId, ShrinkerRegistry};

/// A token bucket: `rate` per second, burst `rate`.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        Bucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let dt = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the server shares between its client threads.
pub(super) struct Handler {
    registry: ShrinkerRegistry,
    reclaimer: Option<Arc<Reclaimer>>,
    monitor: Option<Mutex<Monitor>>,
    pub(super) limits: ControlLimits,
    scans: Mutex<Bucket>,
    reclaims: Mutex<Bucket>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An error reply's text.
type Reply = Result<Value, String>;

pub(super) fn error_line(msg: &str) -> String {
    let mut s = json!({"ok": false, "error": msg}).to_string();
    s.push('\n');
    s
}

fn u64_arg(req: &Map<String, Value>, key: &str) -> Result<u64, String> {
    match req.get(key) {
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("\"{key}\" must be a non-negative integer")),
        None => Err(format!("missing \"{key}\"")),
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Handler {
    pub(super) fn new(
        registry: ShrinkerRegistry,
        reclaimer: Option<Arc<Reclaimer>>,
        monitor: Option<Monitor>,
        limits: ControlLimits,
    ) -> Self {
        Handler {
            registry,
            reclaimer,
            monitor: monitor.map(Mutex::new),
            scans: Mutex::new(Bucket::new(limits.scans_per_sec)),
            reclaims: Mutex::new(Bucket::new(limits.reclaims_per_sec)),
            limits,
        }
    }

    /// Answer one request line (without its newline); the reply ends in a
    /// newline. Never panics: a panic in a handler becomes an error reply.
    pub(super) fn handle_line(&self, line: &[u8]) -> String {
        let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.dispatch(line)))
            .unwrap_or_else(|_| Err("internal error (a handler panicked)".to_owned()));
        match reply {
            Ok(v) => {
                let mut s = json!({"ok": true, "result": v}).to_string();
                s.push('\n');
                s
            }
            Err(e) => error_line(&e),
        }
    }

    fn dispatch(&self, line: &[u8]) -> Reply {
        let text = std::str::from_utf8(line).map_err(|_| "request is not UTF-8".to_owned())?;
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("request is not JSON: {e}"))?;
        let Value::Object(req) = value else {
            return Err("request must be a JSON object".to_owned());
        };
        let cmd = req
            .get("cmd")
            .and_then(Value::as_str)
            .ok_or_else(|| "missing \"cmd\" (a string)".to_owned())?;
        match cmd {
            "list" => Ok(self.list()),
            "count" => self.count(&req),
            "scan" => self.scan(&req),
            "stats" => Ok(self.stats()),
            "pressure" => Ok(self.pressure()),
            "reclaim" => self.reclaim(&req),
            "metrics" => Ok(self.metrics()),
            other => Err(format!(
                "unknown command {:?} (list, count, scan, stats, pressure, reclaim, metrics)",
                other.chars().take(64).collect::<String>()
            )),
        }
    }

    fn per_node(&self, id: ShrinkerId) -> Result<Vec<u64>, String> {
        self.per_node_in(id, GroupId::ROOT)
    }

    fn per_node_in(&self, id: ShrinkerId, group: GroupId) -> Result<Vec<u64>, String> {
        (0..self.registry.nr_nodes())
            .map(|node| match self.registry.count_in(id, group, node) {
                Ok(Count::Objects(n)) => Ok(n as u64),
                Ok(Count::Empty) => Ok(0),
                Err(e) => Err(e.to_string()),
            })
            .collect()
    }

    fn list(&self) -> Value {
        let list = self.registry.shrinkers();
        let rows: Vec<Value> = list
            .iter()
            .map(|s| {
                // A shrinker unregistered since the snapshot counts nothing.
                let nodes = self.per_node(s.id).unwrap_or_default();
                let st = &s.stats;
                json!({
                    "id": s.id.index(),
                    "name": s.name,
                    "objects": nodes.iter().sum::<u64>(),
                    "objects_per_node": nodes,
                    "bytes": self.registry.held_bytes(s.id).ok().flatten(),
                    "live": s.live,
                    "numa_aware": s.flags.numa_aware,
                    "group_aware": s.flags.group_aware,
                    "seeks": s.seeks,
                    "batch": s.batch,
                    "count_calls": st.count_calls,
                    "scan_calls": st.scan_calls,
                    "scanned": st.scanned,
                    "freed": st.freed,
                    "deferred": st.deferred,
                    "scan_time_ns": duration_ns(st.scan_time),
                    "panics": st.panics,
                })
            })
            .collect();
        Value::Array(rows)
    }

    fn id_arg(req: &Map<String, Value>) -> Result<ShrinkerId, String> {
        let id = u64_arg(req, "id")?;
        u32::try_from(id)
            .map(ShrinkerId)
            .map_err(|_| format!("no shrinker has id {id}"))
    }

    fn count(&self, req: &Map<String, Value>) -> Reply {
        let id = Self::id_arg(req)?;
        let nodes = self.per_node(id)?;
        // debugfs `count`: one line per memory group with objects, the group
        // first; the root's line always.
        let mut text = String::new();
        let mut line = |group: GroupId, nodes: &[u64]| {
            text.push_str(&group.index().to_string());
            for n in nodes {
                text.push(' ');
                text.push_str(&n.to_string());
            }
            text.push('\n');
        };
        line(GroupId::ROOT, &nodes);
        let group_aware = self
            .registry
            .shrinkers()
            .iter()
            .any(|s| s.id == id && s.flags.group_aware);
        if group_aware {
            for g in self.registry.groups_under(GroupId::ROOT) {
                if g == GroupId::ROOT {
                    continue;
                }
                // A group removed meanwhile counts nothing.
                let per = self.per_node_in(id, g).unwrap_or_default();
                if per.iter().any(|&n| n > 0) {
                    line(g, &per);
                }
            }
        }
        Ok(json!({"id": id.index(), "text": text, "objects_per_node": nodes}))
    }

    /// Parse debugfs `scan` input: `<group> <node> <n>`.
    fn parse_scan(&self, input: &str) -> Result<(GroupId, usize, usize), String> {
        let fields: Vec<&str> = input.split_ascii_whitespace().collect();
        let [group, node, n] = fields[..] else {
            return Err("scan input must be \"<group> <node> <n>\"".to_owned());
        };
        let num = |s: &str, what: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("scan: {what} must be a non-negative integer"))
        };
        let group = num(group, "group")?;
        let group = u32::try_from(group)
            .map(GroupId::from_index)
            .map_err(|_| format!("scan: no memory group {group}"))?;
        let node = usize::try_from(num(node, "node")?).unwrap_or(usize::MAX);
        let n = num(n, "n")?;
        if n == 0 || n > self.limits.max_scan as u64 {
            return Err(format!(
                "scan: n must be in 1..={} (the server's limit)",
                self.limits.max_scan
            ));
        }
        Ok((group, node, n as usize))
    }

    fn scan(&self, req: &Map<String, Value>) -> Reply {
        let id = Self::id_arg(req)?;
        let input = req
            .get("input")
            .and_then(Value::as_str)
            .ok_or_else(|| "missing \"input\" (\"<group> <node> <n>\")".to_owned())?;
        let (group, node, n) = self.parse_scan(input)?;
        if !lock(&self.scans).take() {
            return Err(format!(
                "rate limited: at most {} scan requests per second",
                self.limits.scans_per_sec
            ));
        }
        let span = tracing::info_span!(target: "shrinker::control", "control_scan", id = id.index(), group = group.index(), node, n);
        let _entered = span.enter();
        match self.registry.scan_in(id, group, node, n) {
            Ok(Scan::Freed(f)) => Ok(json!({"freed": f})),
            Ok(Scan::Stop) => Ok(json!({"stop": true})),
            Err(e) => Err(e.to_string()),
        }
    }

    fn reclaimer_json(r: &ReclaimerStats) -> Value {
        let by_source: Vec<Value> = r
            .by_source
            .iter()
            .map(|(s, f)| {
                json!({"source": s, "rounds": f.rounds, "bytes_asked": f.bytes_asked,
                       "bytes_freed": f.bytes_freed})
            })
            .collect();
        json!({
            "passes": r.passes,
            "rounds": r.rounds,
            "proactive_calls": r.proactive_calls,
            "by_source": by_source,
            "objects_freed": r.objects_freed,
            "bytes_freed": r.bytes_freed,
            "last_reaction_ns": r.last_reaction.map(duration_ns),
            "max_reaction_ns": r.max_reaction.map(duration_ns),
            "cpu_ns": duration_ns(r.cpu_used),
            "budget_stops": r.budget_stops,
            "trims": r.trims,
            "unreturned_rounds": r.unreturned_rounds,
            "exhausted_rounds": r.exhausted_rounds,
            "source_failovers": r.source_failovers,
            "last_level": r.last_level.as_str(),
            "source": r.source,
        })
    }

    fn stats(&self) -> Value {
        let rcu = shrinker_rcu::stats();
        json!({
            "shrinkers": self.registry.len(),
            "reclaimer": self.reclaimer.as_ref().map(|r| Self::reclaimer_json(&r.stats())),
            "rcu": {
                "grace_periods": rcu.grace_periods,
                "callbacks_invoked": rcu.callbacks_invoked,
                "callback_panics": rcu.callback_panics,
                "backlog_overloads": rcu.backlog_overloads,
                "overloaded_enqueues": rcu.overloaded_enqueues,
                "pending": rcu.pending,
                "lazy_pending": rcu.lazy_pending,
                "readers": rcu.readers,
            },
        })
    }

    fn pressure(&self) -> Value {
        // The reclaimer's view: its live level (the watch) and source.
        let (mut level, mut describe) = match &self.reclaimer {
            Some(r) => (r.level_watch().level(), r.stats().source),
            None => (shrinker_pressure::Level::None, String::new()),
        };
        let mut out = json!({"usage": null, "limit": null, "headroom": null, "source": null});
        if let Some(m) = &self.monitor {
            let mut m = lock(m);
            match m.read() {
                Ok(r) => {
                    out["usage"] = json!(r.usage);
                    out["limit"] = json!(r.limit);
                    out["headroom"] = json!(r.headroom);
                    out["source"] = json!(r.source.as_str());
                    if self.reclaimer.is_none() {
                        level = r.level;
                    }
                }
                Err(e) => out["error"] = json!(e.to_string()),
            }
            if describe.is_empty() {
                describe = m.describe();
            }
        }
        if out["source"].is_null() {
            // describe() reads "live: <source> …".
            let rest = describe.strip_prefix("live:").unwrap_or(&describe);
            let name = rest.split_whitespace().next().unwrap_or("none");
            out["source"] = json!(name.trim_end_matches(':'));
        }
        out["level"] = json!(level.as_str());
        out["describe"] = json!(describe);
        out
    }

    fn reclaim(&self, req: &Map<String, Value>) -> Reply {
        let bytes = u64_arg(req, "bytes")?;
        if bytes == 0 || bytes > self.limits.max_reclaim_bytes {
            return Err(format!(
                "reclaim: bytes must be in 1..={} (the server's limit)",
                self.limits.max_reclaim_bytes
            ));
        }
        let Some(r) = &self.reclaimer else {
            return Err("reclaim: this process serves no reclaimer".to_owned());
        };
        if !lock(&self.reclaims).take() {
            return Err(format!(
                "rate limited: at most {} reclaim requests per second",
                self.limits.reclaims_per_sec
            ));
        }
        let span = tracing::info_span!(target: "shrinker::control", "control_reclaim", bytes);
        let _entered = span.enter();
        let f = r.reclaim(bytes);
        tracing::info!(
            target: "shrinker::control",
            freed_bytes = f.bytes,
            freed_objects = f.objects,
            "proactive reclaim asked by a control client"
        );
        Ok(json!({"objects": f.objects, "bytes": f.bytes}))
    }

    fn metrics(&self) -> Value {
        let stats = self.reclaimer.as_ref().map(|r| r.stats());
        let samples = crate::metrics::collect(&self.registry, stats.as_ref());
        json!({"text": crate::metrics::prometheus_text(&samples)})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Shrink, ShrinkControl, ShrinkerBuilder};

    struct Ten;
    impl Shrink for Ten {
        fn count(&self, _: &ShrinkControl) -> Count {
            Count::Objects(10)
        }
        fn scan(&self, sc: &mut ShrinkControl) -> Scan {
            Scan::Freed(sc.nr_to_scan())
        }
    }

    fn handler(limits: ControlLimits) -> (Handler, crate::Registered<Ten>) {
        let reg = ShrinkerRegistry::builder().nodes(2).build().unwrap();
        let s = ShrinkerBuilder::new("ten")
            .build_in(&reg, Ten)
            .unwrap()
            .register();
        (Handler::new(reg, None, None, limits), s)
    }

    fn reply(h: &Handler, line: &str) -> Value {
        let out = h.handle_line(line.as_bytes());
        assert!(
            out.ends_with('\n') && out.matches('\n').count() == 1,
            "{out:?}"
        );
        serde_json::from_str(&out).unwrap()
    }

    #[test]
    #[cfg_attr(miri, ignore)] // serde_json + RCU worker: slow and syscalls
    fn count_answers_the_debugfs_format_and_scan_takes_its_input() {
        let (h, s) = handler(ControlLimits::default());
        let id = s.id().index();
        let r = reply(&h, &format!(r#"{{"cmd":"count","id":{id}}}"#));
        assert_eq!(r["result"]["text"], "0 10 10\n");
        let r = reply(
            &h,
            &format!(r#"{{"cmd":"scan","id":{id},"input":"0 1 7"}}"#),
        );
        assert_eq!(r["result"]["freed"], 7);
        let r = reply(
            &h,
            &format!(r#"{{"cmd":"scan","id":{id},"input":"3 0 7"}}"#),
        );
        assert_eq!(r["ok"], false);
        let r = reply(
            &h,
            &format!(r#"{{"cmd":"scan","id":{id},"input":"0 2 7"}}"#),
        );
        assert_eq!(r["ok"], false, "node 2 of 2");
        let r = reply(&h, r#"{"cmd":"list"}"#);
        assert_eq!(r["result"][0]["objects"], 20);
        assert_eq!(r["result"][0]["name"], "ten");
    }

    /// Counts what each group is asked for: 10 objects in the root, 4 in
    /// any other group.
    #[derive(Default)]
    struct PerGroup(std::sync::Mutex<Vec<GroupId>>);
    impl Shrink for PerGroup {
        fn count(&self, sc: &ShrinkControl) -> Count {
            Count::Objects(if sc.group() == GroupId::ROOT { 10 } else { 4 })
        }
        fn scan(&self, sc: &mut ShrinkControl) -> Scan {
            self.0.lock().unwrap().push(sc.group());
            Scan::Freed(sc.nr_to_scan())
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)] // serde_json + RCU worker: slow and syscalls
    fn count_lists_every_group_with_objects_and_scan_reaches_a_group() {
        let reg = ShrinkerRegistry::builder().nodes(1).build().unwrap();
        let g = reg.create_group(GroupId::ROOT).unwrap();
        let s = ShrinkerBuilder::new("per-group")
            .group_aware(true)
            .object_bytes(8)
            .build_in(&reg, PerGroup::default())
            .unwrap()
            .register();
        let h = Handler::new(reg.clone(), None, None, ControlLimits::default());
        let id = s.id().index();
        let r = reply(&h, &format!(r#"{{"cmd":"count","id":{id}}}"#));
        assert_eq!(r["result"]["text"], format!("0 10\n{} 4\n", g.index()));
        let input = format!("{} 0 3", g.index());
        let r = reply(
            &h,
            &format!(r#"{{"cmd":"scan","id":{id},"input":"{input}"}}"#),
        );
        assert_eq!(r["result"]["freed"], 3, "{r}");
        assert_eq!(*s.0.lock().unwrap(), vec![g]);
        let r = reply(&h, r#"{"cmd":"list"}"#);
        assert_eq!(r["result"][0]["bytes"], 80, "{r}");
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn scans_over_the_rate_are_refused() {
        let (h, s) = handler(ControlLimits {
            scans_per_sec: 3,
            ..ControlLimits::default()
        });
        let line = format!(r#"{{"cmd":"scan","id":{},"input":"0 0 1"}}"#, s.id());
        let oks = (0..10).filter(|_| reply(&h, &line)["ok"] == true).count();
        // The burst is 3; 10 requests take far less than the 1/3 s that
        // would earn another token on this machine, but allow one.
        assert!((3..=4).contains(&oks), "{oks} scans served");
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn malformed_requests_get_error_replies() {
        let (h, _s) = handler(ControlLimits::default());
        for bad in [
            "",
            "{",
            "[]",
            "{\"cmd\":1}",
            "{\"cmd\":\"nope\"}",
            "{\"cmd\":\"count\"}",
            "{\"cmd\":\"count\",\"id\":-1}",
            "{\"cmd\":\"count\",\"id\":99999999999}",
            "{\"cmd\":\"reclaim\",\"bytes\":10}",
            "\u{0}\u{1}",
        ] {
            let r = reply(&h, bad);
            assert_eq!(r["ok"], false, "{bad:?}");
            assert!(r["error"].is_string());
        }
        let r = h.handle_line(&[0xff, 0xfe]);
        assert!(r.contains("not UTF-8"));
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn pressure_without_a_monitor_names_the_reclaimers_source() {
        let reg = ShrinkerRegistry::builder().nodes(1).build().unwrap();
        let _s = ShrinkerBuilder::new("ten")
            .build_in(&reg, Ten)
            .unwrap()
            .register();
        let (m, _handle) = Monitor::manual(shrinker_pressure::Config::default()).unwrap();
        let r = Arc::new(Reclaimer::builder(&reg).monitor(m).start().unwrap());
        let h = Handler::new(reg, Some(r), None, ControlLimits::default());
        let p = reply(&h, r#"{"cmd":"pressure"}"#);
        assert_eq!(p["result"]["source"], "manual", "{p}");
        assert_eq!(p["result"]["level"], "none");
        let f = reply(&h, r#"{"cmd":"reclaim","bytes":4096}"#);
        assert_eq!(f["ok"], true, "{f}");
        assert!(f["result"]["objects"].as_u64().unwrap() > 0, "{f}");
        let st = reply(&h, r#"{"cmd":"stats"}"#);
        assert_eq!(st["result"]["reclaimer"]["proactive_calls"], 1);
    }
}
