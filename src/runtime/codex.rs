//! Codex: rollouts under `$CODEX_HOME/sessions/YYYY/MM/DD/rollout-*.jsonl`,
//! whose first line (`session_meta`) carries the session id and cwd;
//! resumes with `codex resume <id>`.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::TurnRecord;
use super::{
    argv, cwd_forms, entry_timestamp, is_prompt_line, screen_has, Conversation, Dialog, LaunchPlan,
    Runtime, Screen,
};
use crate::core::activity::{ScreenTurn, Turn};
use crate::core::clock::EpochMs;
use crate::core::identity;
use crate::core::peer::{Peer, RuntimeKind};
use crate::store::config::Config;
use crate::store::fsutil;

/// How many rollouts, newest first, are opened looking for a peer's.
const SCAN_LIMIT: usize = 2000;
/// How many of a folder's newest rollouts are candidates for being current.
const RECENT: usize = 8;
/// The start-up dialogs of Codex 0.171.0, as captured in
/// `fixtures/real/codex/` (a test reads them against this table).
const DIALOGS: &[Dialog] = &[Dialog {
    name: "folder-trust",
    needles: &["Trust this folder?", "1. Trust and continue"],
    // Its number selects "1. Trust and continue"; Enter confirms it.
    keys: &["1", "Enter"],
    persists: Some(
        "marks the folder trusted in $CODEX_HOME/config.toml (projects.\"<cwd>\".trust_level = \"trusted\")",
    ),
}];
/// Screens iapeer must not answer: a login wants the operator.
const LOGIN: &[&str] = &["Sign in with ChatGPT", "Provide your own API key"];
/// The ready screen's footer (`fixtures/real/codex/ready.txt`).
const READY_FOOTER: &str = "← for agents";
const RESUME_GONE: &[&str] = &["No saved session found", "No rollout found"];

#[derive(Debug)]
pub(crate) struct Codex {
    bin: OsString,
    sessions: PathBuf,
}

/// What a rollout's first line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RolloutMeta {
    pub id: String,
    pub cwd: Option<String>,
    /// When the session began, as the line says.
    pub began: Option<EpochMs>,
}

impl RolloutMeta {
    fn at(self, path: PathBuf) -> Conversation {
        Conversation {
            id: self.id,
            path,
            began: self.began,
        }
    }
}

impl Codex {
    pub(crate) fn new(config: &Config) -> Self {
        Codex {
            bin: config.codex_bin.clone(),
            sessions: config.codex_home.join("sessions"),
        }
    }

    /// The newest rollouts recorded for `cwd` (at most `RECENT`), down to
    /// rollout `until`.
    pub(crate) fn rollouts(&self, cwd: &Path, until: Option<&str>) -> Vec<Conversation> {
        let forms = cwd_forms(cwd);
        let mut out = Vec::new();
        for path in newest_first(&self.sessions, 3, SCAN_LIMIT)
            .into_iter()
            .take(SCAN_LIMIT)
        {
            let Some(meta) = rollout_meta(&path) else {
                continue;
            };
            let last = until == Some(meta.id.as_str());
            let ours = meta
                .cwd
                .as_deref()
                .is_some_and(|c| forms.iter().any(|f| Path::new(c) == f));
            if ours && identity::is_conversation_id(&meta.id) {
                out.push(meta.at(path));
            }
            if last || out.len() == RECENT {
                break;
            }
        }
        out
    }

    /// Rollout `id`, found by its file name and confirmed by its meta line.
    /// Only names are listed, so it looks as far back as it must: a
    /// conversation parked long ago is still found.
    pub(crate) fn rollout(&self, id: &str) -> Option<Conversation> {
        if !identity::is_conversation_id(id) {
            return None;
        }
        let suffix = format!("-{id}.jsonl");
        newest_first(&self.sessions, 3, usize::MAX)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(&suffix))
            .find_map(|p| Some(rollout_meta(&p).filter(|m| m.id == id)?.at(p)))
    }
}

impl Runtime for Codex {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Codex
    }

    fn fresh(&self, peer: &Peer, _session: &str) -> LaunchPlan {
        // Codex picks its own id; it is found afterwards by cwd.
        LaunchPlan {
            argv: argv(
                &self.bin,
                own_process(peer).chain(peer.extra_args().iter().cloned()),
            ),
            resume_ref: None,
        }
    }

    fn resume(&self, peer: &Peer, resume_ref: &str) -> LaunchPlan {
        let rest = ["resume".to_owned(), resume_ref.to_owned()]
            .into_iter()
            .chain(own_process(peer))
            .chain(peer.extra_args().iter().cloned());
        LaunchPlan {
            argv: argv(&self.bin, rest),
            resume_ref: Some(resume_ref.to_owned()),
        }
    }

    fn conversations(&self, peer: &Peer, until: Option<&str>) -> Vec<Conversation> {
        self.rollouts(&peer.cwd, until)
    }

    fn conversation(&self, _peer: &Peer, id: &str) -> Option<Conversation> {
        self.rollout(id)
    }

    /// Codex keeps its rollout open for the life of the session: the one
    /// rollout of this folder under `sessions/` that the session's
    /// processes hold is its conversation (none if they hold several).
    fn conversation_held(&self, peer: &Peer, pid: i32) -> Option<Conversation> {
        let sessions = self.sessions.canonicalize().ok()?;
        let forms = cwd_forms(&peer.cwd);
        let mut held: Vec<Conversation> = Vec::new();
        for path in crate::os::process::session_open_files(pid) {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !(path.starts_with(&sessions)
                && name.starts_with("rollout-")
                && name.ends_with(".jsonl"))
            {
                continue;
            }
            let Some(meta) = rollout_meta(&path).filter(|m| identity::is_conversation_id(&m.id))
            else {
                continue;
            };
            let ours = meta
                .cwd
                .as_deref()
                .is_some_and(|c| forms.iter().any(|f| Path::new(c) == f));
            if ours && !held.iter().any(|h| h.id == meta.id) {
                held.push(meta.at(path));
            }
        }
        match held.len() {
            1 => held.pop(),
            _ => None,
        }
    }

    fn launched_on(&self, argv: &[String]) -> Option<String> {
        let at = argv.iter().position(|a| a == "resume")?;
        argv.get(at + 1)
            .filter(|id| identity::is_conversation_id(id))
            .cloned()
    }

    fn took(&self, conversation: &Conversation, text: &str, since: EpochMs) -> Option<bool> {
        Some(super::took_in(&conversation.path, text, since, |v| {
            let p = v.get("payload")?;
            if v.get("type")?.as_str()? != "response_item"
                || p.get("type")?.as_str()? != "message"
                || p.get("role")?.as_str()? != "user"
            {
                return None;
            }
            Some(
                p.get("content")?
                    .as_array()?
                    .iter()
                    .filter_map(|part| part.get("text")?.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        }))
    }

    /// The rollout's last turn event, as Codex 0.171.0 writes them
    /// (`fixtures/real/codex/rollout-first-turn.jsonl`): `task_started`
    /// opens a turn, `task_complete` (or `turn_aborted`) ends it.
    fn mid_turn(&self, conversation: &Conversation) -> Option<bool> {
        self.turn(0, Some(conversation))
            .map(|t| t.turn != Turn::Over)
    }

    fn turn_source(&self, _pid: i32, on: Option<&Conversation>) -> Option<PathBuf> {
        on.map(|c| c.path.clone())
    }

    fn turn(&self, _pid: i32, on: Option<&Conversation>) -> Option<TurnRecord> {
        let lines = fsutil::tail_lines(&on?.path, 64 * 1024).ok()?;
        let turn = lines.iter().rev().find_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            if v.get("type")?.as_str()? != "event_msg" {
                return None;
            }
            match v.pointer("/payload/type")?.as_str()? {
                "task_started" => Some(Turn::Working),
                "task_complete" | "turn_aborted" => Some(Turn::Over),
                _ => None,
            }
        })?;
        Some(TurnRecord {
            turn,
            waiting_for: None,
        })
    }

    /// As Codex 0.171.0 draws it (`fixtures/real/codex/`): "esc to
    /// interrupt" beside "Working" while a turn runs; an approval asks
    /// "Would you like to …?" over "Press enter to confirm or esc to
    /// cancel".
    fn screen_turn(&self, screen: &str, now: EpochMs, offset_s: i32) -> ScreenTurn {
        let confirm = screen
            .lines()
            .any(|l| l.contains("Press enter to confirm or esc to cancel"));
        let asks = confirm.then(|| {
            screen
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("Would you like to"))
                .unwrap_or("Press enter to confirm or esc to cancel")
                .to_owned()
        });
        super::turn_on_screen(screen, asks, &['›', '▌'], self.limit(screen, now, offset_s))
    }

    fn submit_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(150)
    }

    fn ready_settle(&self) -> std::time::Duration {
        // Its splash shows the prompt for a moment before the folder-trust
        // dialog replaces it.
        std::time::Duration::from_millis(600)
    }

    fn screen(&self, _peer: &Peer, text: &str) -> Screen {
        if let Some(line) = screen_has(text, RESUME_GONE) {
            return Screen::ResumeFailed(line);
        }
        if let Some(line) = screen_has(text, LOGIN) {
            return Screen::Blocked(format!(
                "Codex is asking for a login ({line}): log in once yourself with `codex login`, or configure a model provider in $CODEX_HOME/config.toml"
            ));
        }
        // A numbered choice iapeer does not know (its known dialogs are
        // matched before this): not answered blind.
        if let Some(line) = text.lines().find(|l| is_menu_item(l)) {
            return Screen::Blocked(format!(
                "Codex shows a choice iapeer does not know ({}): answer it in the peer's terminal (`iapeer attach NAME`), or report the screen",
                line.trim()
            ));
        }
        // The prompt with its footer: Codex's splash shows a prompt for a
        // moment before a folder-trust dialog replaces it, but not the
        // footer of the ready screen.
        let prompt = text.lines().any(|l| is_prompt_line(l, &['›', '▌']));
        if prompt && text.contains(READY_FOOTER) {
            Screen::Ready
        } else {
            Screen::NotYet
        }
    }

    fn dialogs(&self) -> &'static [Dialog] {
        DIALOGS
    }

    /// `You’ve hit your usage limit. … try again at 1:23 PM.` (or `at Dec
    /// 3rd, 2026 7:27 PM.`) after the last user turn, in local time.
    fn limit(&self, screen: &str, now: EpochMs, offset_s: i32) -> Option<super::Limit> {
        let lines: Vec<&str> = screen.lines().collect();
        let (_, line) = super::after_last_turn(&lines, &['›', '▌'], "hit your usage limit")?;
        let until_ms = line.rsplit_once("try again at ").and_then(|(_, when)| {
            parse_try_again(when.trim_end_matches('.').trim(), now, offset_s)
        });
        Some(super::Limit {
            until_ms,
            said: line.trim().trim_start_matches('■').trim().to_owned(),
        })
    }
}

/// The highlighted item of a numbered menu (`› 1. Use session directory`).
fn is_menu_item(line: &str) -> bool {
    let Some(rest) = line.trim_start().strip_prefix('›') else {
        return false;
    };
    let rest = rest.trim_start();
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && rest[digits..].starts_with(". ")
}

/// `1:23 PM` (today's, or tomorrow's when today's is long gone) or
/// `Dec 3rd, 2026 7:27 PM`, local.
fn parse_try_again(when: &str, now: EpochMs, offset_s: i32) -> Option<EpochMs> {
    const DAY: i64 = 86_400_000;
    let words: Vec<&str> = when.split_whitespace().collect();
    let (date, clock) = match words.as_slice() {
        [t, ampm] => (None, (*t, *ampm)),
        [month, day, year, t, ampm] => (Some((*month, *day, *year)), (*t, *ampm)),
        _ => return None,
    };
    let (h, m) = clock.0.split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    if !(1..=12).contains(&h) || !(0..60).contains(&m) {
        return None;
    }
    let h = match clock.1 {
        "AM" => h % 12,
        "PM" => h % 12 + 12,
        _ => return None,
    };
    let offset = i64::from(offset_s) * 1000;
    let of_day = (h * 60 + m) * 60_000;
    match date {
        None => {
            let local_now = now + offset;
            // Codex names the minute (truncated): a time just gone is this
            // minute's, one long gone is tomorrow's.
            let at = local_now.div_euclid(DAY) * DAY + of_day;
            let at = if at + 10 * 60_000 < local_now {
                at + DAY
            } else {
                at
            };
            Some(at - offset)
        }
        Some((month, day, year)) => {
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            let month = MONTHS.iter().position(|m| *m == month)? as u8 + 1;
            let day: u8 = day
                .trim_end_matches(',')
                .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                .parse()
                .ok()?;
            let year: i32 = year.trim_end_matches(',').parse().ok()?;
            let date =
                time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day)
                    .ok()?;
            let midnight = date.midnight().assume_utc().unix_timestamp() * 1000;
            Some(midnight + of_day - offset)
        }
    }
}

/// Flags that keep a session's work inside its own pane: by default Codex
/// hands turns to a shared app-server outside it, which holds the rollout,
/// gives every peer's tools the environment of whichever pane started it,
/// and keeps working after a park. `-C` names the folder, so a resume in a
/// folder that changed since does not stop to ask which one to use.
fn own_process(peer: &Peer) -> impl Iterator<Item = String> {
    [
        "--no-daemon".to_owned(),
        "-C".to_owned(),
        peer.cwd.to_string_lossy().into_owned(),
    ]
    .into_iter()
}

/// Reads a rollout's `session_meta`: `{"type":"session_meta","payload":{id,
/// cwd,…}}`, or the older form with `id` (and maybe `cwd`) at the top.
pub(crate) fn rollout_meta(path: &Path) -> Option<RolloutMeta> {
    let first = fsutil::head_lines(path, 64 * 1024)
        .ok()?
        .into_iter()
        .next()?;
    let v: serde_json::Value = serde_json::from_str(&first).ok()?;
    let body = match v.get("type").and_then(|t| t.as_str()) {
        Some("session_meta") => v.get("payload")?,
        _ => &v,
    };
    Some(RolloutMeta {
        id: body.get("id")?.as_str()?.to_owned(),
        cwd: body.get("cwd").and_then(|c| c.as_str()).map(str::to_owned),
        began: entry_timestamp(&v).or_else(|| entry_timestamp(body)),
    })
}

/// Files `depth` directory levels down, newest first (the YYYY/MM/DD names
/// and the timestamped file names sort by time).
fn newest_first(dir: &Path, depth: usize, limit: usize) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    names.sort();
    names.reverse();
    if depth == 0 {
        return names
            .into_iter()
            .filter(|p| {
                p.extension().is_some_and(|x| x == "jsonl")
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("rollout-"))
            })
            .collect();
    }
    let mut out = Vec::new();
    for sub in names.into_iter().filter(|p| p.is_dir()) {
        out.extend(newest_first(&sub, depth - 1, limit));
        if out.len() >= limit {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use assert_fs::TempDir;

    /// The usage-limit screens of the pinned Codex, as captured: the time
    /// it names, in the local zone; screens without a limit have none.
    #[test]
    fn usage_limits_are_read_from_the_real_screens() {
        let c = Codex {
            bin: "codex".into(),
            sessions: "/nonexistent".into(),
        };
        let now = crate::core::clock::parse_rfc3339("2026-12-01T11:00:00Z").unwrap();
        let at = |file: &str, off: i32| {
            let screen = fs::read_to_string(format!(
                "{}/fixtures/real/codex/{file}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            c.limit(&screen, now, off)
                .map(|l| l.until_ms.map(crate::core::clock::format_ms))
        };
        assert_eq!(
            at("usage-limit.txt", 0),
            Some(Some("2026-12-01T13:23:00.000Z".into()))
        );
        assert_eq!(
            at("usage-limit.txt", 3600),
            Some(Some("2026-12-01T12:23:00.000Z".into())),
            "1:23 PM an hour east of UTC"
        );
        assert_eq!(
            at("usage-limit-days.txt", 0),
            Some(Some("2026-12-03T19:27:00.000Z".into()))
        );
        for calm in ["ready.txt", "working-tool.txt", "approval-prompt.txt"] {
            assert_eq!(at(calm, 0), None, "{calm}");
        }
        // A time long past today is tomorrow's; this minute is now.
        let late = crate::core::clock::parse_rfc3339("2026-12-01T15:00:30Z").unwrap();
        assert_eq!(
            parse_try_again("3:00 PM", late, 0).map(crate::core::clock::format_ms),
            Some("2026-12-01T15:00:00.000Z".into())
        );
        assert_eq!(
            parse_try_again("1:23 PM", late, 0).map(crate::core::clock::format_ms),
            Some("2026-12-02T13:23:00.000Z".into())
        );
        assert_eq!(parse_try_again("13:23 PM", late, 0), None);
    }

    fn rollout(home: &Path, day: &str, name: &str, first: &str) {
        let dir = home.join("sessions").join(day);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join(name),
            format!("{first}\n{{\"timestamp\":\"2026-01-02T00:00:00Z\",\"type\":\"event_msg\"}}\n"),
        )
        .unwrap();
    }

    #[test]
    fn finds_the_newest_rollout_for_the_cwd_in_both_formats() {
        let home = TempDir::new().unwrap();
        let c = Codex {
            bin: "codex".into(),
            sessions: home.path().join("sessions"),
        };
        rollout(
            home.path(),
            "2026/01/01",
            "rollout-2026-01-01T10-00-00-aaa.jsonl",
            r#"{"timestamp":"2026-01-01T10:00:00Z","type":"session_meta","payload":{"id":"aaa","cwd":"/srv/app"}}"#,
        );
        rollout(
            home.path(),
            "2026/01/02",
            "rollout-2026-01-02T10-00-00-bbb.jsonl",
            r#"{"id":"bbb","timestamp":"2026-01-02T10:00:00Z","cwd":"/srv/app"}"#,
        );
        rollout(
            home.path(),
            "2026/01/03",
            "rollout-2026-01-03T10-00-00-ccc.jsonl",
            r#"{"timestamp":"2026-01-03T10:00:00Z","type":"session_meta","payload":{"id":"ccc","cwd":"/elsewhere"}}"#,
        );
        let ids: Vec<String> = c
            .rollouts(Path::new("/srv/app"), None)
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["bbb", "aaa"]);
        assert!(c.rollouts(Path::new("/nowhere"), None).is_empty());
        let until: Vec<String> = c
            .rollouts(Path::new("/srv/app"), Some("bbb"))
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(until, ["bbb"], "nothing older than `until` is read");
        assert_eq!(c.rollout("aaa").map(|r| r.id).as_deref(), Some("aaa"));
        assert!(
            c.rollout("ccc").is_some(),
            "found by id, whatever its folder"
        );
        assert!(c.rollout("zzz").is_none());
        assert!(c.rollout("../aaa").is_none());
    }
}
