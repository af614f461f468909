//! Per-peer metrics: a pure fold over lifecycle.log lines. The daemon
//! replays the retained log at start and then follows it, so its counters
//! after a restart are the counters before it (bounded by what rotation
//! kept), and lines written by CLI processes count as well as its own.
//! `iapeer rm` logs a `removed` line that resets a peer, so a new peer of
//! the same name starts from zero.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::core::record::Entry;
use crate::core::vocab::Outcome;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerMetrics {
    pub wakes_fresh: u64,
    pub wakes_resume: u64,
    /// Wakes that did not launch, by cause (stopped, crash-loop, …).
    pub refusals: BTreeMap<String, u64>,
    pub parks_idle: u64,
    pub parks_max_age: u64,
    pub parks_stop: u64,
    /// Sessions that ended on their own, failed boots included.
    pub deaths: u64,
    pub eager_relaunches: u64,
    /// Boots that exited or missed their deadline.
    pub launch_failures: u64,
    pub last_event: Option<LastEvent>,
    pub latency_ms: Option<u64>,
    pub idle_seconds: Option<u64>,
    /// The last task a session died working on: reported, not lost.
    pub crashed_task: Option<CrashedTask>,
    /// The live session's activity, by its last `activity` line; none once
    /// the session has ended.
    pub activity: Option<LastActivity>,
    /// How long bring-ups took, decision to ready gate.
    pub bringup: Histogram,
    /// How long sessions lived, ready gate to their end.
    pub lifetime: Histogram,
    /// When the live session passed its ready gate (its `ready` line).
    pub session_since: Option<String>,
    /// How the last session ended, or the last boot failed: the why a
    /// person looks for first.
    pub last_end: Option<LastEnd>,
    /// The topic the last wake carried.
    pub topic: Option<String>,
}

/// How a session ended (or a boot failed), as its line says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastEnd {
    pub ts: String,
    /// `reaped-gone`, `reaped-idle`, `fail`, …
    pub what: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_lines: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Bring-up latency buckets, in seconds (the boot deadline is 240 s).
pub const BRINGUP_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 240.0,
];
/// Session lifetime buckets, in seconds: a minute to a day.
pub const LIFETIME_BUCKETS: &[f64] = &[
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0,
];

/// A Prometheus histogram's state: how many observations fell in each
/// bucket (not cumulative; the last is above every bound), their count
/// and their sum.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Histogram {
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_ms: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], ms: u64) {
        self.buckets.resize(bounds.len() + 1, 0);
        let at = bounds
            .iter()
            .position(|b| ms as f64 <= b * 1000.0)
            .unwrap_or(bounds.len());
        self.buckets[at] += 1;
        self.count += 1;
        self.sum_ms += ms;
    }

    /// The cumulative count at or under each bound, then `+Inf`.
    fn cumulative(&self, bounds: &[f64]) -> Vec<u64> {
        let mut total = 0;
        (0..=bounds.len())
            .map(|i| {
                total += self.buckets.get(i).copied().unwrap_or(0);
                total
            })
            .collect()
    }
}

/// A session's activity state, as its last `activity` line says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastActivity {
    pub state: String,
    pub since: String,
    pub session: String,
    /// What says so (the runtime's words), when something does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `limited`: when it lifts, when the runtime says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashedTask {
    pub task: String,
    pub ts: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub ts: String,
    pub summary: String,
}

/// Every peer's metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    pub peers: BTreeMap<String, PeerMetrics>,
    /// Still being rebuilt from a long log (a first start, or a lost
    /// checkpoint): the counters are not whole yet, and are not served.
    pub rebuilding: bool,
}

/// Everything folded from the log: the metrics, and the last line about
/// each identity (what `status` shows as its last decision).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Folded {
    pub metrics: Metrics,
    /// The last line about each identity, as `status` shows it.
    pub last: BTreeMap<String, LastLine>,
}

/// What `status` shows of the last line about a peer: three short
/// fields, not the whole line (a fleet's worth is kept by the daemon and
/// read back from the checkpoint by every `status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastLine {
    pub ts: String,
    pub ev: String,
    pub summary: String,
}

impl LastLine {
    pub fn of(e: &Entry) -> Self {
        LastLine {
            ts: e.str("ts").unwrap_or("").to_owned(),
            ev: e.str("ev").unwrap_or("").to_owned(),
            summary: e.summary(),
        }
    }
}

impl Folded {
    pub fn apply(&mut self, e: &Entry) {
        self.metrics.apply(e);
        note_last(&mut self.last, e);
    }
}

/// Keeps `e` as the last line about its identity, unless it is an
/// activity reading: not a decision (status shows it in a column of its
/// own).
pub fn note_last(last: &mut BTreeMap<String, LastLine>, e: &Entry) {
    if e.ev() == Some(crate::core::vocab::Ev::Activity) {
        return;
    }
    if let Some(id) = e.identity() {
        match last.get_mut(id) {
            Some(kept) => *kept = LastLine::of(e),
            None => {
                last.insert(id.to_owned(), LastLine::of(e));
            }
        }
    }
}

impl Metrics {
    /// Folds one log line in.
    pub fn apply(&mut self, e: &Entry) {
        let Some(id) = e.identity() else { return };
        if matches!(
            e.str("outcome").and_then(Outcome::parse),
            Some(Outcome::Removed | Outcome::Added)
        ) {
            self.peers.remove(id);
            return;
        }
        let m = self.peers.entry(id.to_owned()).or_default();
        let ev = e.str("ev").unwrap_or("");
        if ev == "activity" {
            // What the session is doing, not a lifecycle event.
            m.activity = match (e.str("state"), e.str("session")) {
                (Some(state), Some(session)) => Some(LastActivity {
                    state: state.to_owned(),
                    since: e.str("since").or(e.str("ts")).unwrap_or("").to_owned(),
                    session: session.to_owned(),
                    reason: e.str("reason").map(str::to_owned),
                    until: e.str("retry_after").map(str::to_owned),
                }),
                _ => None,
            };
            return;
        }
        if crate::core::history::is_end(e) || crate::core::history::is_launch(e) {
            m.activity = None;
            let since = m
                .session_since
                .take()
                .and_then(|t| crate::core::clock::parse_rfc3339(&t));
            let at = e.ts_ms();
            if let (Some(since), Some(at), true) = (since, at, crate::core::history::is_end(e)) {
                m.lifetime
                    .observe(LIFETIME_BUCKETS, u64::try_from(at - since).unwrap_or(0));
            }
        }
        let mode = e.str("mode");
        let cause = e.str("cause");
        let action = e.str("action");
        if crate::core::history::is_end(e) || (ev == "wake" && mode == Some("fail")) {
            let owned = |k: &str| e.str(k).map(str::to_owned);
            m.last_end = Some(LastEnd {
                ts: e.str("ts").unwrap_or("").to_owned(),
                what: action.or(mode).unwrap_or(ev).to_owned(),
                cause: owned("cause"),
                exit_status: owned("exit_status"),
                last_lines: owned("last_lines"),
                reason: owned("reason"),
            });
        }
        if crate::core::history::is_launch(e) {
            m.topic = e.str("topic").map(str::to_owned);
        }
        match (ev, mode) {
            ("wake", Some("fresh")) => {
                m.wakes_fresh += 1;
                if cause == Some("needs-eager-fresh") {
                    m.eager_relaunches += 1;
                }
            }
            ("wake", Some("resume")) => m.wakes_resume += 1,
            ("wake", Some("fail")) if matches!(cause, Some("launch-failed" | "boot-timeout")) => {
                m.launch_failures += 1;
                m.deaths += 1;
            }
            ("wake", Some("refused" | "fail")) => {
                *m.refusals
                    .entry(cause.unwrap_or("unknown").to_owned())
                    .or_default() += 1;
            }
            ("ready", _) => {
                m.latency_ms = e.u64("latency_ms").or(m.latency_ms);
                if let Some(ms) = e.u64("latency_ms") {
                    m.bringup.observe(BRINGUP_BUCKETS, ms);
                }
                m.session_since = e.str("ts").map(str::to_owned);
            }
            _ => {}
        }
        if ev == "supervise" {
            match action {
                Some("reaped-idle") => {
                    m.parks_idle += 1;
                    m.idle_seconds = e.u64("idle_seconds");
                }
                Some("reaped-max-age") => m.parks_max_age += 1,
                Some("parked-stopped") => m.parks_stop += 1,
                Some("reaped-gone" | "needs-eager-fresh" | "always-on-relaunch") => m.deaths += 1,
                Some("crashed-while-working") => {
                    m.crashed_task = e.str("task").map(|t| CrashedTask {
                        task: t.to_owned(),
                        ts: e.str("ts").unwrap_or("").to_owned(),
                    });
                }
                _ => {}
            }
        }
        if ev == "daemon" || action == Some("tick-error") || action == Some("alive") {
            // The daemon adopting a session, an error, a heartbeat: not
            // lifecycle events of the peer, and replays must not differ
            // for them.
            return;
        }
        m.last_event = Some(LastEvent {
            kind: action.unwrap_or(ev).to_owned(),
            ts: e.str("ts").unwrap_or("").to_owned(),
            summary: e.summary(),
        });
    }

    /// Keeps only these peers (the defined ones).
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.peers.retain(|k, _| keep(k));
    }

    /// The Prometheus text exposition format (version 0.0.4). `states`
    /// gives each peer's lifecycle state.
    ///
    /// `labels` adds label pairs to a peer's `iapeer_peer_state` (its
    /// runtime and pool: a state is what one filters by those).
    pub fn prometheus(
        &self,
        states: &BTreeMap<String, &'static str>,
        labels: &BTreeMap<String, String>,
    ) -> String {
        let mut out = String::new();
        let peers: Vec<&String> = self
            .peers
            .keys()
            .chain(states.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let get = |p: &str| self.peers.get(p).cloned().unwrap_or_default();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        };
        let l = |p: &str| format!("peer=\"{}\"", escape(p));
        family(
            "iapeer_wakes_total",
            "counter",
            "Sessions brought up, by mode.",
            peers
                .iter()
                .flat_map(|p| {
                    let m = get(p);
                    [
                        (format!("{},mode=\"fresh\"", l(p)), m.wakes_fresh as f64),
                        (format!("{},mode=\"resume\"", l(p)), m.wakes_resume as f64),
                    ]
                })
                .collect(),
        );
        family(
            "iapeer_refusals_total",
            "counter",
            "Wakes that launched nothing, by cause.",
            peers
                .iter()
                .flat_map(|p| {
                    get(p)
                        .refusals
                        .into_iter()
                        .map(move |(c, n)| (format!("{},cause=\"{}\"", l(p), escape(&c)), n as f64))
                })
                .collect(),
        );
        family(
            "iapeer_parks_total",
            "counter",
            "Sessions parked by iapeer, by reason.",
            peers
                .iter()
                .flat_map(|p| {
                    let m = get(p);
                    [
                        (format!("{},reason=\"idle\"", l(p)), m.parks_idle as f64),
                        (
                            format!("{},reason=\"max-age\"", l(p)),
                            m.parks_max_age as f64,
                        ),
                        (format!("{},reason=\"stop\"", l(p)), m.parks_stop as f64),
                    ]
                })
                .collect(),
        );
        let simple = |f: fn(&PeerMetrics) -> u64| {
            peers
                .iter()
                .map(|p| (l(p), f(&get(p)) as f64))
                .collect::<Vec<_>>()
        };
        family(
            "iapeer_deaths_total",
            "counter",
            "Sessions that ended on their own, failed boots included.",
            simple(|m| m.deaths),
        );
        family(
            "iapeer_eager_relaunches_total",
            "counter",
            "Fresh starts asked for with .new-eager.",
            simple(|m| m.eager_relaunches),
        );
        family(
            "iapeer_launch_failures_total",
            "counter",
            "Boots that exited or missed their deadline.",
            simple(|m| m.launch_failures),
        );
        family(
            "iapeer_last_bringup_latency_seconds",
            "gauge",
            "Time from the decision to the ready gate, last bring-up.",
            peers
                .iter()
                .filter_map(|p| get(p).latency_ms.map(|ms| (l(p), ms as f64 / 1000.0)))
                .collect(),
        );
        family(
            "iapeer_last_park_idle_seconds",
            "gauge",
            "How long the last idle-parked session had been idle.",
            peers
                .iter()
                .filter_map(|p| get(p).idle_seconds.map(|s| (l(p), s as f64)))
                .collect(),
        );
        family(
            "iapeer_last_event_timestamp_seconds",
            "gauge",
            "When the last lifecycle event about the peer happened.",
            peers
                .iter()
                .filter_map(|p| {
                    let ts = get(p).last_event?.ts;
                    crate::core::clock::parse_rfc3339(&ts).map(|ms| (l(p), ms as f64 / 1000.0))
                })
                .collect(),
        );
        family(
            "iapeer_peer_state",
            "gauge",
            "1 for the lifecycle state the peer is in.",
            states
                .iter()
                .map(|(p, s)| {
                    let more = labels.get(p).map(|m| format!(",{m}")).unwrap_or_default();
                    (format!("{},state=\"{s}\"{more}", l(p)), 1.0)
                })
                .collect(),
        );
        // Every activity state of every live peer, 0 or 1, so a query over
        // a state always has a series to read.
        let live: Vec<&String> = states
            .iter()
            .filter(|(_, s)| **s == "alive")
            .map(|(p, _)| p)
            .collect();
        family(
            "iapeer_peer_activity",
            "gauge",
            "1 for what the live session is doing (working, waiting, idle, limited, stuck, unknown).",
            live.iter()
                .flat_map(|p| {
                    let now = self
                        .peers
                        .get(p.as_str())
                        .and_then(|m| m.activity.as_ref())
                        .map_or("unknown", |a| a.state.as_str())
                        .to_owned();
                    crate::core::activity::State::ALL.into_iter().map(move |st| {
                        let v = if st.as_str() == now { 1.0 } else { 0.0 };
                        (format!("{},state=\"{st}\"", l(p)), v)
                    })
                })
                .collect(),
        );
        family(
            "iapeer_peer_activity_since_timestamp_seconds",
            "gauge",
            "When the live session entered its activity state.",
            live.iter()
                .filter_map(|p| {
                    let a = self.peers.get(p.as_str())?.activity.as_ref()?;
                    let ms = crate::core::clock::parse_rfc3339(&a.since)?;
                    Some((l(p), ms as f64 / 1000.0))
                })
                .collect(),
        );
        histogram(
            &mut out,
            "iapeer_bringup_seconds",
            "Time from the decision to the ready gate, every bring-up.",
            BRINGUP_BUCKETS,
            peers.iter().map(|p| (l(p), get(p).bringup)),
        );
        histogram(
            &mut out,
            "iapeer_session_lifetime_seconds",
            "How long sessions lived, ready gate to their end (death or park).",
            LIFETIME_BUCKETS,
            peers.iter().map(|p| (l(p), get(p).lifetime)),
        );
        out
    }
}

/// One histogram family: per label set, its cumulative buckets, sum and
/// count.
fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[f64],
    series: impl Iterator<Item = (String, Histogram)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, h) in series {
        let cumulative = h.cumulative(bounds);
        for (bound, n) in bounds.iter().zip(&cumulative) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_ms as f64 / 1000.0);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
    }
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(lines: &[&str]) -> Metrics {
        let mut m = Metrics::default();
        for l in lines {
            m.apply(&Entry::parse(l).unwrap());
        }
        m
    }

    #[test]
    fn the_golden_sample_folds_into_counters() {
        let golden = include_str!("../../fixtures/lifecycle.golden.jsonl");
        let lines: Vec<&str> = golden.lines().collect();
        let m = fold(&lines);
        let alice = &m.peers["alice"];
        assert_eq!((alice.wakes_fresh, alice.wakes_resume), (1, 1));
        assert_eq!(alice.parks_idle, 1);
        assert_eq!(alice.idle_seconds, Some(3671));
        assert_eq!(alice.parks_stop, 1);
        assert_eq!(alice.latency_ms, Some(1181));
        let bob = &m.peers["bob"];
        assert_eq!(bob.deaths, 1);
        let end = bob.last_end.clone().unwrap();
        assert_eq!(
            (
                end.what.as_str(),
                end.exit_status.as_deref(),
                end.last_lines.as_deref()
            ),
            ("reaped-gone", Some("1"), Some("Error: out of memory\n$"))
        );
        assert_eq!(bob.refusals.get("crash-loop"), Some(&1));
        let carol = &m.peers["carol"];
        assert_eq!((carol.deaths, carol.eager_relaunches), (1, 1));
        assert_eq!(
            m.peers["dave"].refusals.get("attach-nothing-to-resume"),
            Some(&1)
        );
        let member = &m.peers["ccl-auto-11"];
        assert_eq!(member.deaths, 1);
        assert_eq!(
            member.crashed_task.as_ref().map(|c| c.task.as_str()),
            Some("fix the flaky test")
        );
    }

    #[test]
    fn an_activity_is_the_sessions_until_it_ends_and_no_decision() {
        let golden = include_str!("../../fixtures/lifecycle.golden.jsonl");
        let lines: Vec<&str> = golden.lines().collect();
        let waiting = lines
            .iter()
            .position(|l| l.contains("\"state\":\"waiting\""))
            .unwrap();
        let m = fold(&lines[..=waiting]);
        let a = m.peers["ccl-auto-11"].activity.clone().unwrap();
        assert_eq!(
            (a.state.as_str(), a.reason.as_deref()),
            ("waiting", Some("permission prompt"))
        );
        assert_eq!(a.since, "2026-11-21T06:50:38.011Z");
        let last = m.peers["ccl-auto-11"].last_event.clone().unwrap();
        assert_eq!(
            last.kind, "wake",
            "an activity line is not the last decision"
        );
        // The session's end ends it.
        assert_eq!(fold(&lines).peers["ccl-auto-11"].activity, None);
    }

    #[test]
    fn bring_ups_and_lifetimes_fall_into_their_buckets() {
        let m = fold(&[
            r#"{"ts":"2026-11-21T04:44:10.000Z","ev":"wake","identity":"a","mode":"fresh","source":"cli","pid":1}"#,
            r#"{"ts":"2026-11-21T04:44:11.200Z","ev":"ready","identity":"a","latency_ms":1200,"source":"cli","pid":1}"#,
            r#"{"ts":"2026-11-21T04:54:11.200Z","ev":"supervise","identity":"a","action":"reaped-idle","idle_seconds":1,"source":"daemon","pid":2}"#,
            r#"{"ts":"2026-11-21T05:00:00.000Z","ev":"wake","identity":"a","mode":"resume","source":"cli","pid":1}"#,
            r#"{"ts":"2026-11-21T05:00:00.080Z","ev":"ready","identity":"a","latency_ms":80,"source":"cli","pid":1}"#,
        ]);
        let a = &m.peers["a"];
        assert_eq!(
            a.last_end
                .as_ref()
                .map(|e| (e.what.as_str(), e.ts.as_str())),
            Some(("reaped-idle", "2026-11-21T04:54:11.200Z"))
        );
        assert_eq!(a.bringup.count, 2);
        assert_eq!(a.bringup.sum_ms, 1280);
        // 80 ms in the first bucket, 1.2 s under 2.5 s.
        assert_eq!(a.bringup.cumulative(BRINGUP_BUCKETS)[..5], [1, 1, 1, 1, 2]);
        // One session lived 600 s; the second still lives.
        assert_eq!((a.lifetime.count, a.lifetime.sum_ms), (1, 600_000));
        assert_eq!(a.lifetime.cumulative(LIFETIME_BUCKETS)[..3], [0, 0, 1]);
        assert_eq!(a.session_since.as_deref(), Some("2026-11-21T05:00:00.080Z"));
        let text = m.prometheus(
            &BTreeMap::from([("a".to_owned(), "alive")]),
            &BTreeMap::from([("a".to_owned(), "runtime=\"shell\",pool=\"\"".to_owned())]),
        );
        assert!(text.contains(
            "iapeer_peer_state{peer=\"a\",state=\"alive\",runtime=\"shell\",pool=\"\"} 1\n"
        ));
        assert!(text.contains("iapeer_bringup_seconds_bucket{peer=\"a\",le=\"0.1\"} 1\n"));
        assert!(text.contains("iapeer_bringup_seconds_bucket{peer=\"a\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("iapeer_bringup_seconds_sum{peer=\"a\"} 1.28\n"));
        assert!(text.contains("iapeer_session_lifetime_seconds_count{peer=\"a\"} 1\n"));
    }

    #[test]
    fn a_removed_peer_starts_from_zero() {
        let m = fold(&[
            r#"{"ts":"2026-11-21T04:44:14.821Z","ev":"wake","identity":"a","mode":"fresh","cause":"crash-or-self-close","source":"cli","pid":1}"#,
            r#"{"ts":"2026-11-21T04:45:14.821Z","ev":"stop","identity":"a","outcome":"removed","source":"cli","pid":1}"#,
        ]);
        assert!(!m.peers.contains_key("a"));
    }
}
