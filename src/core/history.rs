//! `iapeer why`: how a peer's last session ended and why the next came up
//! as it did, reconstructed from its lines in lifecycle.log. Pure: it reads
//! entries, not files.

use serde::Serialize;

use crate::core::record::Entry;

/// A peer's recent history, as the log tells it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct History {
    /// The last launch decision (`wake` fresh/resume).
    pub bring_up: Option<Line>,
    /// Its `ready` line, if the gate passed.
    pub ready: Option<Line>,
    /// A resume tried first that did not come up.
    pub failed_resume: Option<Line>,
    /// How the session before the bring-up ended.
    pub previous_end: Option<Line>,
    /// A task that session was working on when it died.
    pub previous_task: Option<String>,
    /// How the brought-up session ended, if it has.
    pub since_end: Option<Line>,
    /// Wakes refused or failed after the bring-up (or, with none in the
    /// log, after the last end).
    pub refusals_since: Vec<Line>,
    /// Every line relied on, oldest first.
    pub lines: Vec<String>,
}

/// The parts of a log line `why` talks about.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Line {
    pub ts: String,
    pub ev: String,
    pub mode: Option<String>,
    pub cause: Option<String>,
    pub action: Option<String>,
    pub session: Option<String>,
    pub exit_status: Option<String>,
    pub last_lines: Option<String>,
    pub idle_seconds: Option<u64>,
    pub latency_ms: Option<u64>,
    pub topic: Option<String>,
    pub reason: Option<String>,
    pub retry_after: Option<String>,
}

impl Line {
    fn of(e: &Entry) -> Line {
        let s = |k: &str| e.str(k).map(str::to_owned);
        Line {
            ts: e.str("ts").unwrap_or("").to_owned(),
            ev: e.str("ev").unwrap_or("").to_owned(),
            mode: s("mode"),
            cause: s("cause"),
            action: s("action"),
            session: s("session"),
            exit_status: s("exit_status"),
            last_lines: s("last_lines"),
            idle_seconds: e.u64("idle_seconds"),
            latency_ms: e.u64("latency_ms"),
            topic: s("topic"),
            reason: s("reason"),
            retry_after: s("retry_after"),
        }
    }
}

/// Whether `e` tells how a session ended.
pub(crate) fn is_end(e: &Entry) -> bool {
    match e.str("ev") {
        Some("supervise") => matches!(
            e.str("action"),
            Some(
                "reaped-gone"
                    | "reaped-idle"
                    | "reaped-max-age"
                    | "parked-stopped"
                    | "needs-eager-fresh"
                    | "always-on-relaunch"
                    | "self-fresh"
                    | "restarted"
                    | "host-restart"
            )
        ),
        Some("wake") => {
            e.str("mode") == Some("fail")
                && matches!(e.str("cause"), Some("launch-failed" | "boot-timeout"))
        }
        _ => false,
    }
}

/// Whether `e` is a launch decision (`wake` fresh or resume).
pub(crate) fn is_launch(e: &Entry) -> bool {
    e.str("ev") == Some("wake") && matches!(e.str("mode"), Some("fresh" | "resume"))
}

/// Folds one peer's lines, oldest first, into its history.
pub fn history<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> History {
    let mut h = History::default();
    let mut last_end: Option<(Line, Option<String>, String)> = None;
    for e in entries {
        let ev = e.str("ev").unwrap_or("");
        let mode = e.str("mode");
        if is_launch(e) {
            if e.str("cause") == Some("resume-failed-fresh") {
                h.failed_resume = h.bring_up.take();
                h.lines.push(e.line.clone());
            } else {
                h.failed_resume = None;
                h.lines = last_end
                    .as_ref()
                    .map(|(_, _, raw)| vec![raw.clone()])
                    .unwrap_or_default();
                h.lines.push(e.line.clone());
                h.previous_end = last_end.as_ref().map(|(l, _, _)| l.clone());
                h.previous_task = last_end.as_ref().and_then(|(_, t, _)| t.clone());
            }
            h.bring_up = Some(Line::of(e));
            h.ready = None;
            h.since_end = None;
            h.refusals_since.clear();
            continue;
        }
        let ours = |h: &History| {
            h.bring_up
                .as_ref()
                .and_then(|b| b.session.as_deref())
                .is_some_and(|s| e.str("session") == Some(s))
        };
        if ev == "ready" && ours(&h) {
            h.ready = Some(Line::of(e));
            h.lines.push(e.line.clone());
        } else if is_end(e) {
            if ours(&h) {
                h.since_end = Some(Line::of(e));
                h.lines.push(e.line.clone());
            }
            last_end = Some((Line::of(e), None, e.line.clone()));
        } else if e.str("action") == Some("crashed-while-working") {
            if let Some(end) = last_end.as_mut() {
                end.1 = e.str("task").map(str::to_owned);
            }
        } else if ev == "wake" && matches!(mode, Some("refused" | "fail")) {
            h.refusals_since.push(Line::of(e));
            h.lines.push(e.line.clone());
        }
    }
    if h.bring_up.is_none() {
        // Never brought up (in what the log kept): the last end is still
        // worth telling.
        h.previous_end = last_end.as_ref().map(|(l, _, _)| l.clone());
        h.previous_task = last_end.and_then(|(_, t, _)| t);
    }
    h
}

/// Why a wake decided as it did, in a sentence (DESIGN §4).
pub(crate) fn cause_sentence(cause: &str, topic: Option<&str>) -> String {
    match cause {
        "folder-launch" => "a fresh start was asked for (--fresh)".into(),
        "attach" => "a resume was asked for (--resume)".into(),
        "first-wake" => "it had never run since it was added, so it started fresh".into(),
        "soft-reload" => "a fresh start at its next wake was asked for (.fresh-next, e.g. by `iapeer refresh`)".into(),
        "gave-up" => "iapeer had given up on it (.failed) after the crash-loop guard refused it window after window".into(),
        "crash-or-self-close" => "its previous session ended on its own (a crash or a self-close, not a park), \
             and a crash needs a clean start rather than a resume that could crash again"
            .into(),
        "idle-reaped-human" => "it had been parked, and as a human-facing peer it resumes where it left off".into(),
        "idle-reaped-human-no-resume" => {
            "it had been parked, and is human-facing, but there was no conversation left to resume".into()
        }
        "idle-reaped-new-topic" => format!(
            "it had been parked, and the work came with a new topic{}, so it started clean",
            topic.map(|t| format!(" ({t:?})")).unwrap_or_default()
        ),
        "idle-reaped-resume" => "it had been parked, and the work continued the same topic, so it resumed its conversation".into(),
        "idle-reaped-no-resume" => "it had been parked, but there was no conversation to resume".into(),
        "needs-eager-fresh" => "a fresh start was requested (.new-eager: the agent's own self-fresh, `iapeer restart`, or a script)".into(),
        "resume-failed-fresh" => "a resume was tried and did not come up, so it started fresh (that is not counted as a death)".into(),
        "attach-nothing-to-resume" => "a resume was asked for, but there was no conversation to resume".into(),
        "crash-loop" => "the crash-loop guard refused it: too many deaths inside the window".into(),
        "stopped" => "an operator had stopped it".into(),
        "external-supervisor" => "another supervisor owns it".into(),
        "wake-lock-held" => "another process was bringing it up at the same time".into(),
        "cwd-missing" => "its working folder did not exist".into(),
        "boot-timeout" => "it did not become ready before its boot deadline".into(),
        "launch-failed" => "it could not be launched, or exited during start-up".into(),
        other => format!("of {other}"),
    }
}

/// How a session ended, in a sentence.
pub(crate) fn end_sentence(end: &Line) -> String {
    let status = end
        .exit_status
        .as_deref()
        .map(|s| format!(" (exit status {s})"))
        .unwrap_or_default();
    match (end.ev.as_str(), end.action.as_deref(), end.cause.as_deref()) {
        ("supervise", Some("reaped-gone"), _) => {
            format!("ended on its own{status}: a death, left for the next message to start fresh")
        }
        ("supervise", Some("needs-eager-fresh"), _) => {
            format!(
                "ended after asking for a fresh start{status}, and was relaunched fresh at once"
            )
        }
        ("supervise", Some("self-fresh"), _) => {
            "ended because the agent asked for a fresh start (self-fresh; not a death), and was relaunched fresh".into()
        }
        ("supervise", Some("restarted"), _) => {
            "was restarted by an operator (`iapeer restart`; not a death) and came back fresh".into()
        }
        ("supervise", Some("host-restart"), _) => {
            "was cut short by a restart of the host; that counts as a park (not a death), so it stayed resume-eligible".into()
        }
        ("supervise", Some("always-on-relaunch"), _) => {
            format!("died{status}; being always-on, it was relaunched at once")
        }
        ("supervise", Some("reaped-idle"), _) => format!(
            "was parked by iapeer after {} idle{}; it stayed resume-eligible",
            end.idle_seconds
                .map_or("a long time".to_owned(), human_secs),
            end.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        ("supervise", Some("reaped-max-age"), _) => {
            "was parked by iapeer for reaching its maximum age; it stayed resume-eligible".into()
        }
        ("supervise", Some("parked-stopped"), _) => {
            "was parked by an operator stop; it stayed resume-eligible".into()
        }
        ("wake", _, Some("boot-timeout")) => {
            "never became ready: it missed its boot deadline and was killed (a death)".into()
        }
        ("wake", _, Some("launch-failed")) => {
            format!("never became ready: it exited during start-up{status} (a death)")
        }
        _ => format!(
            "ended ({})",
            end.action
                .as_deref()
                .or(end.cause.as_deref())
                .unwrap_or("?")
        ),
    }
}

pub(crate) fn human_secs(s: u64) -> String {
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<Entry> {
        text.lines().filter_map(Entry::parse).collect()
    }

    #[test]
    fn the_golden_sample_explains_each_peer() {
        let all = entries(include_str!("../../fixtures/lifecycle.golden.jsonl"));
        let of = |id: &str| history(all.iter().filter(|e| e.identity() == Some(id)));

        let alice = of("alice");
        let b = alice.bring_up.as_ref().unwrap();
        assert_eq!(b.cause.as_deref(), Some("idle-reaped-resume"));
        assert_eq!(
            alice.previous_end.as_ref().unwrap().action.as_deref(),
            Some("reaped-idle")
        );
        assert_eq!(
            alice.since_end.as_ref().unwrap().action.as_deref(),
            Some("parked-stopped")
        );

        let bob = of("bob");
        assert!(bob.bring_up.is_none());
        assert_eq!(
            bob.previous_end.as_ref().unwrap().action.as_deref(),
            Some("reaped-gone")
        );
        // Never brought up in what the log kept: refusals after its death
        // still tell the story.
        assert_eq!(bob.refusals_since.len(), 1);
        assert_eq!(bob.refusals_since[0].cause.as_deref(), Some("crash-loop"));

        let carol = of("carol");
        assert_eq!(
            carol.bring_up.as_ref().unwrap().cause.as_deref(),
            Some("needs-eager-fresh")
        );
        assert!(end_sentence(carol.previous_end.as_ref().unwrap()).contains("fresh start"));
    }

    #[test]
    fn a_failed_resume_is_kept_beside_the_fresh_retry() {
        let h = history(&entries(concat!(
            r#"{"ts":"2026-11-21T01:00:00.000Z","ev":"supervise","identity":"a","action":"reaped-idle","idle_seconds":4000,"session":"s0","source":"daemon","pid":1}"#,
            "\n",
            r#"{"ts":"2026-11-21T02:00:00.000Z","ev":"wake","identity":"a","mode":"resume","cause":"idle-reaped-resume","session":"s1","source":"cli","pid":2}"#,
            "\n",
            r#"{"ts":"2026-11-21T02:00:01.000Z","ev":"wake","identity":"a","mode":"fresh","cause":"resume-failed-fresh","session":"s2","reason":"No conversation found","source":"cli","pid":2}"#,
            "\n",
            r#"{"ts":"2026-11-21T02:00:02.000Z","ev":"ready","identity":"a","mode":"fresh","cause":"resume-failed-fresh","session":"s2","latency_ms":2000,"source":"cli","pid":2}"#,
            "\n",
        )));
        assert_eq!(
            h.bring_up.unwrap().cause.as_deref(),
            Some("resume-failed-fresh")
        );
        assert_eq!(h.failed_resume.unwrap().session.as_deref(), Some("s1"));
        assert_eq!(h.previous_end.unwrap().idle_seconds, Some(4000));
        assert_eq!(h.ready.unwrap().latency_ms, Some(2000));
    }

    #[test]
    fn every_decidable_cause_has_its_own_sentence() {
        for c in crate::core::vocab::Cause::ALL {
            let s = cause_sentence(c.as_str(), Some("t"));
            assert!(!s.starts_with("of "), "{c} has no sentence");
        }
    }
}
