//! The names of the dashboard's event stream (`GET /events`): each log
//! line goes out as a Server-Sent Event whose `event:` says what happened
//! in a word a subscriber can filter on, e.g. `peer.died` or
//! `peer.gave_up`.

use crate::core::record::Entry;

/// Every name an event can have, in the order a reader would look for
/// them. A line this table does not name (a kind added later) goes out
/// unnamed, which EventSource delivers as `message`.
pub const NAMES: &[&str] = &[
    "peer.waking",
    "peer.started",
    "peer.start_failed",
    "peer.refused",
    "peer.dialog_answered",
    "peer.parked",
    "peer.died",
    "peer.refreshed",
    "peer.limited",
    "peer.gave_up",
    "peer.adopted",
    "peer.alive",
    "peer.tick_error",
    "peer.stopped",
    "peer.unstopped",
    "peer.reset",
    "peer.activity",
    "task.queued",
    "task.delivered",
    "task.delivery_unconfirmed",
    "daemon.started",
    "daemon.stopping",
    "daemon.reloaded",
    "daemon.tick_error",
];

/// The event name of a log line, from its `ev`, `mode`, `action` and
/// `outcome`.
pub fn name(entry: &Entry) -> Option<&'static str> {
    let action = entry.str("action");
    let name = match (entry.str("ev")?, entry.identity().is_some()) {
        ("wake", _) if action == Some("dialog-answered") => "peer.dialog_answered",
        ("wake", _) => match entry.str("mode")? {
            "fresh" | "resume" => "peer.waking",
            "refused" => "peer.refused",
            "fail" => "peer.start_failed",
            _ => return None,
        },
        ("ready", _) => "peer.started",
        ("supervise", _) => match action? {
            "reaped-idle" | "reaped-max-age" | "parked-stopped" => "peer.parked",
            "reaped-gone" | "crashed-while-working" | "always-on-relaunch" | "host-restart" => {
                "peer.died"
            }
            "needs-eager-fresh" | "self-fresh" | "restarted" => "peer.refreshed",
            "limited" => "peer.limited",
            "gave-up" => "peer.gave_up",
            "adopted" => "peer.adopted",
            "alive" => "peer.alive",
            "tick-error" if entry.identity().is_some() => "peer.tick_error",
            "tick-error" => "daemon.tick_error",
            _ => return None,
        },
        ("stop", _) => "peer.stopped",
        ("start", _) => "peer.unstopped",
        ("reset", _) => "peer.reset",
        ("activity", _) => "peer.activity",
        ("task", _) => match entry.str("outcome")? {
            "queued" => "task.queued",
            "delivered" => "task.delivered",
            "delivery-unconfirmed" => "task.delivery_unconfirmed",
            _ => return None,
        },
        ("daemon", false) => match action? {
            "started" => "daemon.started",
            "stopping" => "daemon.stopping",
            "reloaded" => "daemon.reloaded",
            "tick-error" => "daemon.tick_error",
            _ => return None,
        },
        _ => return None,
    };
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line with its `ts` put in front.
    fn entry(line: &str) -> Entry {
        let line = line.replacen('{', r#"{"ts":"2026-12-01T00:00:00.000Z","#, 1);
        Entry::parse(&line).expect("a log line")
    }

    #[test]
    fn each_kind_of_line_has_its_name() {
        for (line, want) in [
            (
                r#"{"ev":"wake","identity":"a","mode":"fresh"}"#,
                Some("peer.waking"),
            ),
            (
                r#"{"ev":"wake","identity":"a","mode":"resume"}"#,
                Some("peer.waking"),
            ),
            (
                r#"{"ev":"wake","identity":"a","mode":"refused","cause":"crash-loop"}"#,
                Some("peer.refused"),
            ),
            (
                r#"{"ev":"wake","identity":"a","mode":"fail","cause":"boot-timeout"}"#,
                Some("peer.start_failed"),
            ),
            (
                r#"{"ev":"wake","identity":"a","action":"dialog-answered"}"#,
                Some("peer.dialog_answered"),
            ),
            (r#"{"ev":"ready","identity":"a"}"#, Some("peer.started")),
            (
                r#"{"ev":"supervise","identity":"a","action":"reaped-idle"}"#,
                Some("peer.parked"),
            ),
            (
                r#"{"ev":"supervise","identity":"a","action":"reaped-max-age"}"#,
                Some("peer.parked"),
            ),
            (
                r#"{"ev":"supervise","identity":"a","action":"parked-stopped"}"#,
                Some("peer.parked"),
            ),
            (
                r#"{"ev":"supervise","identity":"a","action":"reaped-gone"}"#,
                Some("peer.died"),
            ),
            (
                r#"{"ev":"supervise","identity":"a","action":"crashed-while-working"}"#,
                Some("peer.died"),
            ),
            (
                r#"{"ev":"supervise","identity":"a","action":"always-on-relaunch"}"#,
                Some("peer.died"),
            ),
            (
                r#"{"ev":"supervise","identity":"a","action":"host-restart"}"#,
                Some("peer.died"),
            ),
            (
                r#"{"ev":"supervise","identity":"a","action":"needs-eager-fresh"}"#,
                Some("peer.refreshed"),
            ),
            (
                r#"{"ev":"supervise","identity":"a","action":"self-fresh"}"#,
                Some("peer.refreshed"),
            ),
            (
                r#"{"ev":"supervise","identity":"a","action":"restarted"}"#,
                Some("peer.refreshed"),
            ),
            (
                r#"{"ev":"supervise","identity":"a","action":"limited"}"#,
                Some("peer.limited"),
            ),
            (
                r#"{"ev":"supervise","identity":"a","action":"gave-up"}"#,
                Some("peer.gave_up"),
            ),
            (
                r#"{"ev":"supervise","identity":"a","action":"adopted"}"#,
                Some("peer.adopted"),
            ),
            (
                r#"{"ev":"supervise","identity":"a","action":"alive"}"#,
                Some("peer.alive"),
            ),
            (
                r#"{"ev":"supervise","identity":"a","action":"tick-error"}"#,
                Some("peer.tick_error"),
            ),
            (
                r#"{"ev":"supervise","action":"tick-error"}"#,
                Some("daemon.tick_error"),
            ),
            (r#"{"ev":"stop","identity":"a"}"#, Some("peer.stopped")),
            (r#"{"ev":"start","identity":"a"}"#, Some("peer.unstopped")),
            (r#"{"ev":"reset","identity":"a"}"#, Some("peer.reset")),
            (
                r#"{"ev":"activity","identity":"a","state":"waiting"}"#,
                Some("peer.activity"),
            ),
            (
                r#"{"ev":"task","identity":"a","outcome":"queued"}"#,
                Some("task.queued"),
            ),
            (
                r#"{"ev":"task","identity":"a","outcome":"delivered"}"#,
                Some("task.delivered"),
            ),
            (
                r#"{"ev":"task","identity":"a","outcome":"delivery-unconfirmed"}"#,
                Some("task.delivery_unconfirmed"),
            ),
            (
                r#"{"ev":"daemon","action":"started"}"#,
                Some("daemon.started"),
            ),
            (
                r#"{"ev":"daemon","action":"stopping"}"#,
                Some("daemon.stopping"),
            ),
            (
                r#"{"ev":"daemon","action":"reloaded"}"#,
                Some("daemon.reloaded"),
            ),
            // Kinds this table does not know go out unnamed.
            (r#"{"ev":"later","identity":"a"}"#, None),
            (
                r#"{"ev":"supervise","identity":"a","action":"later"}"#,
                None,
            ),
            (r#"{"ev":"wake","identity":"a"}"#, None),
            (r#"{"identity":"a"}"#, None),
        ] {
            let got = name(&entry(line));
            assert_eq!(got, want, "{line}");
            if let Some(n) = got {
                assert!(NAMES.contains(&n), "{n} is in NAMES");
            }
        }
    }

    #[test]
    fn every_action_and_outcome_in_the_vocabulary_is_named_or_deliberately_not() {
        use crate::core::vocab::Action;
        for action in Action::ALL {
            let a = action.as_str();
            let ev = match a {
                "started" | "stopping" | "reloaded" => r#""ev":"daemon""#.to_owned(),
                "dialog-answered" => r#""ev":"wake","identity":"a""#.to_owned(),
                _ => r#""ev":"supervise","identity":"a""#.to_owned(),
            };
            let line = format!(r#"{{{ev},"action":"{a}"}}"#);
            assert!(name(&entry(&line)).is_some(), "{a} has an event name");
        }
    }
}
