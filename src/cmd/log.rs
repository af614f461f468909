//! `iapeer log`: the decision log across rotations, filtered, as greppable
//! lines or raw JSON.

use std::io::Write;

use serde_json::Value;

use crate::cli::LogArgs;
use crate::cmd::App;
use crate::core::clock;
use crate::core::clock::EpochMs;
use crate::core::error::{Error, Result};
use crate::core::identity::Identity;
use crate::core::record::Entry;
use crate::core::vocab::Cause;
use crate::core::vocab::Ev;
use crate::store::log;

/// The order fields are shown in: the order they are written in.
pub(crate) const FIELD_ORDER: &[&str] = &[
    "ts",
    "ev",
    "identity",
    "runtime",
    "mode",
    "action",
    "cause",
    "idle_seconds",
    "outcome",
    "session",
    "topic",
    "task",
    "deaths",
    "retry_after",
    "latency_ms",
    "exit_status",
    "last_lines",
    "reason",
    "error",
    "dialog",
    "repeats",
    "source",
    "pid",
];

/// Which lines to show.
#[derive(Debug, Default, Clone)]
pub(crate) struct Filter {
    pub peer: Option<Identity>,
    pub since_ms: Option<EpochMs>,
    pub until_ms: Option<EpochMs>,
    pub ev: Option<Ev>,
    pub cause: Option<String>,
    /// What a raw line must hold to be worth parsing, built once.
    needles: Needles,
}

/// A cheap test on a raw line before it is parsed: it must hold one of
/// each group's texts (`"key":"value"`). Most lines of a big log are about
/// other peers or other kinds of event.
#[derive(Debug, Default, Clone)]
struct Needles(Vec<Vec<memchr::memmem::Finder<'static>>>);

impl Needles {
    fn of(peer: Option<&Identity>, ev: Option<Ev>, cause: Option<&str>) -> Self {
        let text = |key: &str, value: &str| {
            memchr::memmem::Finder::new(&format!("\"{key}\":\"{value}\"")).into_owned()
        };
        let mut groups = Vec::new();
        if let Some(p) = peer {
            groups.push(vec![text("identity", p.as_str())]);
        }
        if let Some(ev) = ev {
            groups.push(vec![text("ev", ev.as_str())]);
        }
        if let Some(c) = cause {
            groups.push(vec![text("cause", c), text("action", c)]);
        }
        Needles(groups)
    }

    fn may_match(&self, raw: &[u8]) -> bool {
        self.0
            .iter()
            .all(|any| any.iter().any(|f| f.find(raw).is_some()))
    }
}

impl Filter {
    pub(crate) fn from_args(args: &LogArgs, now: EpochMs) -> Result<Self> {
        let peer = args.peer.as_deref().map(Identity::parse).transpose()?;
        let ev = match &args.ev {
            None => None,
            Some(s) => Some(Ev::parse(s).ok_or_else(|| {
                let kinds: Vec<&str> = Ev::ALL.iter().map(|e| e.as_str()).collect();
                Error::Usage(format!(
                    "--ev {s:?} is not a kind of event; use one of {}",
                    kinds.join(", ")
                ))
            })?),
        };
        if let Some(c) = &args.cause {
            // Supervise actions are filtered with --cause too, for symmetry.
            if Cause::parse(c).is_none()
                && !c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '-')
            {
                return Err(Error::Usage(format!("--cause {c:?} is not a cause")));
            }
        }
        let needles = Needles::of(peer.as_ref(), ev, args.cause.as_deref());
        Ok(Filter {
            needles,
            peer,
            since_ms: args
                .since
                .as_deref()
                .map(|s| super::when("--since", s, now))
                .transpose()?,
            until_ms: args
                .until
                .as_deref()
                .map(|s| super::when("--until", s, now))
                .transpose()?,
            ev,
            cause: args.cause.clone(),
        })
    }

    /// Whether a raw line may match, before it is parsed.
    fn may_match(&self, raw: &[u8]) -> bool {
        self.needles.may_match(raw)
    }

    pub(crate) fn matches(&self, e: &Entry) -> bool {
        if let Some(p) = &self.peer {
            if e.identity() != Some(p.as_str()) {
                return false;
            }
        }
        if let Some(ev) = self.ev {
            if e.ev() != Some(ev) {
                return false;
            }
        }
        if let Some(c) = &self.cause {
            if e.str("cause") != Some(c) && e.str("action") != Some(c) {
                return false;
            }
        }
        if self.since_ms.is_some() || self.until_ms.is_some() {
            let Some(ts) = e.ts_ms() else { return false };
            if self.since_ms.is_some_and(|s| ts < s) || self.until_ms.is_some_and(|u| ts >= u) {
                return false;
            }
        }
        true
    }
}

pub(crate) fn run(app: &App, args: LogArgs) -> Result<i32> {
    let filter = Filter::from_args(&args, clock::now_ms())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut broken_pipe = false;
    let path = &app.config.paths.lifecycle_log;
    // Following from the end, history is shown only when -n asks for it.
    let history = match (args.follow, args.lines) {
        (true, None) => Some(0),
        (_, n) => n,
    };
    let mut print = |entry: Entry| {
        let text = if args.json { entry.line } else { human(&entry) };
        if writeln!(out, "{text}").is_err() {
            broken_pipe = true;
        }
        !broken_pipe
    };
    let stats = match history {
        Some(0) => log::ReadStats::default(),
        // The last n, from the end back: the cost follows how far back
        // they lie, not how much log is kept.
        Some(n) => {
            let mut last = Vec::new();
            let stats = log::for_each_backward(
                path,
                |raw| filter.may_match(raw),
                |entry| {
                    if filter.matches(&entry) {
                        last.push(entry);
                    }
                    last.len() < n
                },
            )?;
            for entry in last.into_iter().rev() {
                if !print(entry) {
                    break;
                }
            }
            stats
        }
        None => log::for_each_matching(
            path,
            |raw| filter.may_match(raw),
            |entry| !filter.matches(&entry) || print(entry),
        )?,
    };
    if !broken_pipe {
        out.flush().ok();
    }
    if args.follow && !broken_pipe {
        drop(out);
        let mut follower = log::Follower::at_end(&app.config.paths.lifecycle_log);
        super::events::stream(&mut follower, |entry| {
            if !filter.may_match(entry.line.as_bytes()) || !filter.matches(entry) {
                return Some(String::new());
            }
            Some(if args.json {
                entry.line.clone()
            } else {
                human(entry)
            })
        });
        return Ok(0);
    }
    if stats.skipped > 0 {
        tracing::warn!(
            "skipped {} torn or unreadable line(s) in {}",
            stats.skipped,
            app.config.paths.lifecycle_log.display()
        );
    }
    Ok(0)
}

/// One greppable line: `ts ev identity key=value …`, values quoted only
/// when they hold spaces or quotes.
pub fn human(e: &Entry) -> String {
    let mut out = String::with_capacity(e.line.len());
    out.push_str(e.str("ts").unwrap_or("?"));
    out.push(' ');
    out.push_str(&format!("{:<9}", e.str("ev").unwrap_or("?")));
    out.push(' ');
    out.push_str(e.identity().unwrap_or("-"));
    let known = FIELD_ORDER
        .iter()
        .copied()
        .filter(|k| !matches!(*k, "ts" | "ev" | "identity"));
    let mut unknown: Vec<&str> = e
        .fields
        .keys()
        .map(String::as_str)
        .filter(|k| !FIELD_ORDER.contains(k))
        .collect();
    unknown.sort_unstable();
    for key in known.chain(unknown) {
        if let Some(v) = e.fields.get(key) {
            out.push(' ');
            out.push_str(key);
            out.push('=');
            out.push_str(&value_text(v));
        }
    }
    out
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s)
            if !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || c == '"' || c.is_control()) =>
        {
            s.clone()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_lines_keep_field_order_and_quote_only_when_needed() {
        let e = Entry::parse(r#"{"ts":"2026-11-21T04:44:14.821Z","ev":"wake","identity":"alice","runtime":"claude","mode":"fresh","cause":"crash-or-self-close","topic":"a b","source":"cli","pid":4242,"zz":1}"#).unwrap();
        assert_eq!(
            human(&e),
            r#"2026-11-21T04:44:14.821Z wake      alice runtime=claude mode=fresh cause=crash-or-self-close topic="a b" source=cli pid=4242 zz=1"#
        );
    }

    #[test]
    fn filters() {
        let now = clock::parse_rfc3339("2026-11-21T05:00:00Z").unwrap();
        let args = |peer: Option<&str>, since: Option<&str>, ev: Option<&str>| LogArgs {
            peer: peer.map(str::to_owned),
            since: since.map(str::to_owned),
            until: None,
            ev: ev.map(str::to_owned),
            cause: None,
            json: false,
            follow: false,
            lines: None,
        };
        let e = Entry::parse(r#"{"ts":"2026-11-21T04:30:00.000Z","ev":"wake","identity":"alice","source":"cli","pid":1}"#).unwrap();
        assert!(
            Filter::from_args(&args(Some("alice"), Some("1h"), Some("wake")), now)
                .unwrap()
                .matches(&e)
        );
        assert!(!Filter::from_args(&args(Some("bob"), None, None), now)
            .unwrap()
            .matches(&e));
        assert!(!Filter::from_args(&args(None, Some("15m"), None), now)
            .unwrap()
            .matches(&e));
        assert!(
            Filter::from_args(&args(None, Some("2026-11-21T04:00:00Z"), None), now)
                .unwrap()
                .matches(&e)
        );
        assert!(!Filter::from_args(&args(None, None, Some("ready")), now)
            .unwrap()
            .matches(&e));
        for bad in [
            args(Some("../x"), None, None),
            args(None, Some("soon"), None),
            args(None, None, Some("boot")),
        ] {
            assert_eq!(Filter::from_args(&bad, now).unwrap_err().exit_code(), 2);
        }
    }

    #[test]
    fn a_raw_line_is_passed_over_only_when_it_cannot_match() {
        let alice = Identity::parse("alice").unwrap();
        let line = br#"{"ts":"2026-11-21T04:30:00.000Z","ev":"supervise","identity":"alice","action":"reaped-gone","source":"daemon"}"#;
        let table: &[(Needles, &[u8], bool)] = &[
            (Needles::of(None, None, None), b"anything at all \xff", true),
            (Needles::of(Some(&alice), None, None), line, true),
            (Needles::of(Some(&alice), Some(Ev::Wake), None), line, false),
            (
                Needles::of(Some(&alice), Some(Ev::Supervise), None),
                line,
                true,
            ),
            // --cause matches an action too.
            (Needles::of(None, None, Some("reaped-gone")), line, true),
            (Needles::of(None, None, Some("first-wake")), line, false),
            // A longer name that starts with the peer's is someone else.
            (
                Needles::of(Some(&alice), None, None),
                br#"{"identity":"alice2"}"#,
                false,
            ),
            // Bytes that are not text still hold the needle or not.
            (
                Needles::of(Some(&alice), None, None),
                b"\xff\"identity\":\"alice\"",
                true,
            ),
        ];
        for (i, (needles, raw, want)) in table.iter().enumerate() {
            assert_eq!(needles.may_match(raw), *want, "row {i}");
        }
    }

    proptest::proptest! {
        /// A line of anything: parsing, folding into metrics, into a
        /// history and into a human line never panic.
        #[test]
        fn any_line_is_read_safely(line in "\\PC{0,300}") {
            if let Some(e) = Entry::parse(&line) {
                let mut m = crate::core::metrics::Metrics::default();
                m.apply(&e);
                let _ = crate::core::history::history([&e]);
                let _ = human(&e);
            }
            let _ = serde_json::from_str::<crate::core::record::Record>(&line);
            let _ = line.parse::<log::Position>();
        }
    }
}
