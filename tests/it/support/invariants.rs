//! The invariants a crash or a race must never break, checked from what is
//! on disk: the log and the markers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use iapeer::core::record::Entry;

/// What the log holds, counted.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub lines: usize,
    pub decisions: usize,
    pub readies: usize,
    pub deaths: usize,
    pub parks: usize,
    pub refusals: usize,
}

/// Which lines end a session. Written out here on purpose rather than
/// taken from `iapeer::core::history`: the checker must not share the code it checks.
fn is_end(e: &Entry) -> bool {
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
        // A failed boot ends the session that booted; a launch that never
        // started one (tmux could not be run: out of descriptors, say)
        // carries the `error` instead, and ends nothing.
        Some("wake") => {
            e.str("mode") == Some("fail")
                && matches!(e.str("cause"), Some("launch-failed" | "boot-timeout"))
                && e.str("error").is_none()
        }
        _ => false,
    }
}

fn is_death(e: &Entry) -> bool {
    is_end(e)
        && !matches!(
            e.str("action"),
            Some(
                "reaped-idle"
                    | "reaped-max-age"
                    | "parked-stopped"
                    | "self-fresh"
                    | "restarted"
                    | "host-restart"
            )
        )
}

/// Checks everything; `settled`: every session that came up must have
/// ended by now. `guard`: (max deaths, window ms).
pub fn check(home: &Path, settled: bool, guard: (usize, i64)) -> Result<Counts, String> {
    let log = home.join("logs/iapeer/lifecycle.log");
    let (entries, stats) = iapeer::store::log::read_all(&log).map_err(|e| e.to_string())?;
    if stats.skipped > 0 {
        return Err(format!("{} torn or unreadable log line(s)", stats.skipped));
    }
    let mut c = Counts {
        lines: entries.len(),
        ..Counts::default()
    };

    // Per session: decision before ready; at most one end; ends for all
    // that came up once settled.
    let mut decided: HashSet<&str> = HashSet::new();
    let mut ready: HashSet<&str> = HashSet::new();
    let mut ends: HashMap<&str, usize> = HashMap::new();
    for e in &entries {
        let session = e.str("session");
        match (e.str("ev"), e.str("mode")) {
            (Some("wake"), Some("fresh" | "resume")) => {
                c.decisions += 1;
                decided.insert(session.ok_or("a decision without a session id")?);
            }
            (Some("wake"), Some("refused" | "fail")) if !is_end(e) => c.refusals += 1,
            (Some("ready"), _) => {
                c.readies += 1;
                let s = session.ok_or("a ready line without a session id")?;
                if !decided.contains(s) {
                    return Err(format!("ready before its decision: {}", e.line));
                }
                ready.insert(s);
            }
            _ => {}
        }
        if is_end(e) {
            if is_death(e) {
                c.deaths += 1;
            } else {
                c.parks += 1;
            }
            let s = session.ok_or_else(|| format!("an end without a session id: {}", e.line))?;
            let n = ends.entry(s).or_default();
            *n += 1;
            if *n > 1 {
                return Err(format!("session {s} ended twice; the second: {}", e.line));
            }
        }
    }
    if settled {
        for s in &ready {
            if !ends.contains_key(s) {
                return Err(format!("session {s} came up and never ended in the log"));
            }
        }
    }

    // Per peer: never two sessions at once; the guard never let a launch
    // through with `max` deaths in the window.
    let mut by_peer: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for e in &entries {
        if let Some(id) = e.identity() {
            by_peer.entry(id).or_default().push(e);
        }
    }
    let (max, window) = guard;
    for (peer, lines) in &by_peer {
        let mut open: Option<&str> = None;
        let mut deaths: Vec<i64> = Vec::new();
        for e in lines {
            let ts = e.ts_ms().ok_or("a line without a timestamp")?;
            let session = e.str("session");
            let ev = e.str("ev");
            // A session comes up with its ready line, or, found running
            // with no launch of ours behind it, when it is adopted.
            let orphan = session.is_some_and(|s| !decided.contains(s));
            // A record the storm planted and then removed behind iapeer's
            // back (no end is ever logged for it) is not a session of the
            // peer's, even when a daemon that started meanwhile adopted it.
            let planted = session.is_some_and(|s| s.starts_with("planted-"));
            let came_up = !planted
                && (ev == Some("ready")
                    || (ev == Some("daemon") && e.str("action") == Some("adopted") && orphan));
            if came_up {
                if let (Some(other), Some(s)) = (open, session) {
                    if other != s {
                        return Err(format!(
                            "{peer} had two sessions: {other} was open when {s} came up"
                        ));
                    }
                }
                open = session.or(open);
            }
            let launch = ev == Some("wake")
                && matches!(e.str("mode"), Some("fresh" | "resume"))
                && e.str("cause") != Some("resume-failed-fresh");
            if launch {
                let counted = deaths.iter().filter(|&&d| ts - d < window).count();
                if counted >= max {
                    return Err(format!(
                        "{peer}: launched with {counted} deaths in the window: {}",
                        e.line
                    ));
                }
            }
            if ev == Some("reset") {
                deaths.clear();
            }
            if is_end(e) {
                if open == session {
                    open = None;
                }
                if is_death(e) {
                    deaths.push(ts);
                }
            }
        }
    }

    check_markers(&home.join("state/lifecycle"))?;
    Ok(c)
}

/// No marker torn or half-written: each parses as its format says.
pub fn check_markers(dir: &Path) -> Result<(), String> {
    for e in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // a temp file of a killed writer: never a marker
        }
        let path = e.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            // Consumed by a concurrent process since the listing.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(format!("{name}: {err}")),
        };
        let ext = name.split_once('.').map(|(_, x)| x).unwrap_or("");
        let ok = match ext {
            "session" => {
                serde_json::from_str::<iapeer::core::session::SessionRecord>(&text).is_ok()
            }
            "deaths" => serde_json::from_str::<Vec<i64>>(&text).is_ok(),
            "topic" => text.len() <= 257 && text.lines().count() <= 1,
            "idle-reaped" | "new-eager" | "stopped" | "fresh-next" | "failed" => {
                text.is_empty()
                    || text
                        .lines()
                        .next()
                        .and_then(iapeer::core::clock::parse_rfc3339)
                        .is_some()
            }
            "lock" => true,
            _ => false,
        };
        if !ok {
            return Err(format!("{name} is torn or foreign: {text:?}"));
        }
    }
    Ok(())
}

/// tmux servers still running for this home.
pub fn tmux_servers(home: &Path) -> Vec<String> {
    let run = home.join("run").display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.starts_with("tmux") && cmd.contains(&run) {
            found.push(cmd);
        }
    }
    found
}
