//! One line of the decision log: [`Record`], the line as a writer builds
//! it (fields in their on-disk order), and [`Entry`], a line as a reader
//! parsed it. Pure: writing and reading the files is `store::log`'s job.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::core::clock::{self, EpochMs};
use crate::core::vocab::{Action, Cause, Ev, Mode, Outcome, Source};

/// Longest task or pane excerpt copied into a line.
const EXCERPT_MAX: usize = 1024;

/// One line of the log. Field order here is the order on disk, and is a
/// public interface: add new fields, never reorder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub ts: String,
    pub ev: Ev,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deaths: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_lines: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `dialog-answered` lines: which start-up dialog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialog: Option<String>,
    /// `tick-error` lines: how often the error before it recurred unlogged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeats: Option<u64>,
    /// `activity` lines: the state entered (DESIGN §12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// `activity` lines: when it was first read (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    pub source: Source,
    pub pid: u32,
}

impl Record {
    pub fn new(now: EpochMs, ev: Ev, source: Source) -> Self {
        Record {
            ts: clock::format_ms(now),
            ev,
            identity: None,
            runtime: None,
            mode: None,
            action: None,
            cause: None,
            idle_seconds: None,
            outcome: None,
            session: None,
            topic: None,
            task: None,
            deaths: None,
            retry_after: None,
            latency_ms: None,
            exit_status: None,
            last_lines: None,
            reason: None,
            error: None,
            dialog: None,
            repeats: None,
            state: None,
            since: None,
            source,
            pid: std::process::id(),
        }
    }

    pub fn identity(mut self, id: impl ToString) -> Self {
        self.identity = Some(id.to_string());
        self
    }

    pub fn runtime(mut self, runtime: impl ToString) -> Self {
        self.runtime = Some(runtime.to_string());
        self
    }

    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }

    pub fn action(mut self, action: Action) -> Self {
        self.action = Some(action);
        self
    }

    pub fn cause(mut self, cause: Cause) -> Self {
        self.cause = Some(cause);
        self
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = Some(outcome);
        self
    }

    pub fn session(mut self, session: impl ToString) -> Self {
        let s = session.to_string();
        self.session = (!s.is_empty()).then_some(s);
        self
    }

    pub fn topic(mut self, topic: Option<&str>) -> Self {
        self.topic = topic.filter(|t| !t.is_empty()).map(excerpt);
        self
    }

    pub fn task(mut self, task: Option<&str>) -> Self {
        self.task = task.filter(|t| !t.is_empty()).map(excerpt);
        self
    }

    pub fn reason(mut self, reason: impl ToString) -> Self {
        self.reason = Some(excerpt(&reason.to_string()));
        self
    }

    pub fn error(mut self, error: impl ToString) -> Self {
        self.error = Some(excerpt(&error.to_string()));
        self
    }

    pub fn last_lines(mut self, lines: Option<&str>) -> Self {
        self.last_lines = lines.filter(|l| !l.is_empty()).map(excerpt);
        self
    }

    /// The line as written, without its newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a log record always serializes")
    }
}

/// Keeps the last `EXCERPT_MAX` bytes' worth of a long text (the end of a
/// pane or a task is what explains it), cut on a character boundary.
fn excerpt(s: &str) -> String {
    if s.len() <= EXCERPT_MAX {
        return s.to_owned();
    }
    let mut start = s.len() - EXCERPT_MAX;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// One parsed line.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub line: String,
    pub fields: Map<String, Value>,
}

impl Entry {
    pub fn parse(line: &str) -> Option<Entry> {
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(fields)) if fields.get("ts").is_some_and(Value::is_string) => {
                Some(Entry {
                    line: line.to_owned(),
                    fields,
                })
            }
            _ => None,
        }
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.fields.get(key).and_then(Value::as_u64)
    }

    pub fn ts_ms(&self) -> Option<EpochMs> {
        self.str("ts").and_then(clock::parse_rfc3339)
    }

    pub fn ev(&self) -> Option<Ev> {
        self.str("ev").and_then(Ev::parse)
    }

    pub fn identity(&self) -> Option<&str> {
        self.str("identity")
    }

    /// `wake fresh crash-or-self-close`, `supervise reaped-idle`, …
    pub fn summary(&self) -> String {
        let parts: Vec<&str> = ["ev", "mode", "action", "cause", "outcome"]
            .iter()
            .filter_map(|k| self.str(k))
            .collect();
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_keep_their_end() {
        let long = format!("{}END", "x".repeat(5000));
        let r = Record::new(0, Ev::Wake, Source::Cli).last_lines(Some(&long));
        let kept = r.last_lines.unwrap();
        assert!(kept.ends_with("END") && kept.len() <= EXCERPT_MAX + 4);
    }
}
