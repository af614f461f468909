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
        Ok(Filter {
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

    /// A cheap test on the raw line before it is parsed: most lines of a
    /// big log are about other peers or other kinds of event.
    fn may_match(&self, line: &str) -> bool {
        let has = |key: &str, value: &str| {
            let mut needle = String::with_capacity(key.len() + value.len() + 6);
            needle.push('"');
            needle.push_str(key);
            needle.push_str("\":\"");
            needle.push_str(value);
            needle.push('"');
            line.contains(&needle)
        };
        self.peer
            .as_ref()
            .is_none_or(|p| has("identity", p.as_str()))
            && self.ev.is_none_or(|ev| has("ev", ev.as_str()))
            && self
                .cause
                .as_ref()
                .is_none_or(|c| has("cause", c) || has("action", c))
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
    let mut last: std::collections::VecDeque<Entry> = std::collections::VecDeque::new();
    let mut stats = log::ReadStats::default();
    if history != Some(0) {
        stats = log::for_each_matching(
            path,
            |raw| filter.may_match(raw),
            |entry| {
                if !filter.matches(&entry) {
                    return true;
                }
                if let Some(n) = history {
                    // Only the last n are kept, then printed.
                    if last.len() == n {
                        last.pop_front();
                    }
                    last.push_back(entry);
                    return true;
                }
                let text = if args.json { entry.line } else { human(&entry) };
                if writeln!(out, "{text}").is_err() {
                    broken_pipe = true;
                    return false;
                }
                true
            },
        )?;
    }
    for entry in last {
        let text = if args.json { entry.line } else { human(&entry) };
        if writeln!(out, "{text}").is_err() {
            broken_pipe = true;
            break;
        }
    }
    if !broken_pipe {
        out.flush().ok();
    }
    if args.follow && !broken_pipe {
        drop(out);
        let mut follower = log::Follower::at_end(&app.config.paths.lifecycle_log);
        super::events::stream(&mut follower, |entry| {
            if !filter.may_match(&entry.line) || !filter.matches(entry) {
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
