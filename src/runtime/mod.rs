//! Runtimes: how a peer's program is launched, resumed and observed
//! (DESIGN §11). Each runtime knows its own command line, where its
//! conversations live on disk, and what its screen looks like when ready;
//! none of them runs tmux (that is `tmux`'s job alone).

pub(crate) mod claude;
pub(crate) mod codex;
#[cfg(test)]
pub(crate) mod fake;
pub mod host;
pub(crate) mod shell;
pub(crate) mod tmux;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::core::activity::{ScreenTurn, Turn};
use crate::core::clock::EpochMs;
use crate::core::peer::{Peer, RuntimeKind};
use crate::store::config::Config;
use crate::store::fsutil;

/// What one launch runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LaunchPlan {
    pub argv: Vec<OsString>,
    /// The conversation this launch writes to, when known up front.
    pub resume_ref: Option<String>,
}

/// What the screen says during a boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Screen {
    Ready,
    NotYet,
    /// The runtime said the conversation to resume is gone.
    ResumeFailed(String),
    /// A start-up dialog of the runtime's own (DESIGN §6) is waiting.
    Dialog(&'static Dialog),
    /// A screen iapeer must not answer (a login, an unknown dialog): what
    /// the operator has to do.
    Blocked(String),
}

/// A start-up screen the real CLI shows, how to tell it, and the keys that
/// answer it. The tables are built from screens captured from the pinned
/// CLIs (`fixtures/real/`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Dialog {
    /// Its name in the log (`dialog=<name>`).
    pub name: &'static str,
    /// Lines that all show on it, and on no other screen.
    pub needles: &'static [&'static str],
    /// tmux key names, pressed in order.
    pub keys: &'static [&'static str],
    /// What answering it writes into the client's own configuration, to be
    /// said in the log line (never done behind the operator's back).
    pub persists: Option<&'static str>,
}

impl Dialog {
    /// Is this dialog on `screen`?
    pub(crate) fn on(&self, screen: &str) -> bool {
        self.needles.iter().all(|n| screen.contains(n))
    }
}

/// A usage limit the runtime's screen reports for its last turn (DESIGN
/// §12): not a death, not idle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Limit {
    /// When it lifts, when the runtime says.
    pub until_ms: Option<EpochMs>,
    /// The line that says so.
    pub said: String,
}

/// A runtime's own record of the turn its process is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TurnRecord {
    pub turn: Turn,
    /// What it waits for, when it says (`permission prompt`).
    pub waiting_for: Option<String>,
}

/// Whether process `pid` is in a turn, and what says so: its own record
/// first, the conversation's last entry where it keeps none (a `/clear`
/// ends a transcript on a user entry); `None` when neither says.
/// `on` is asked for the conversation only then.
pub(crate) fn turn_said(
    runtime: &dyn Runtime,
    pid: i32,
    on: impl FnOnce() -> Option<Conversation>,
) -> Option<(bool, crate::core::pass::TurnBy)> {
    match runtime.busy(pid) {
        Some(busy) => Some((busy, crate::core::pass::TurnBy::Record)),
        None => on()
            .and_then(|c| runtime.mid_turn(&c))
            .map(|mid| (mid, crate::core::pass::TurnBy::Conversation)),
    }
}

/// What a screen shows of the turn, the way both pinned CLIs draw it:
/// "esc to interrupt" while a turn runs; otherwise the input prompt (a line
/// starting with one of `glyphs`), unless a question (`asks`) is up.
pub(crate) fn turn_on_screen(
    screen: &str,
    asks: Option<String>,
    glyphs: &[char],
    limit: Option<Limit>,
) -> ScreenTurn {
    let working = screen.lines().any(|l| l.contains("esc to interrupt"));
    let prompt = !working && asks.is_none() && screen.lines().any(|l| is_prompt_line(l, glyphs));
    ScreenTurn {
        limit: limit.map(|l| (l.said, l.until_ms)),
        asks,
        working,
        prompt,
    }
}

/// The line among `lines` after the last user turn (a prompt line with
/// text, `user_glyph`) that holds `needle`: what the last turn ended with.
/// The input line at the bottom (the last prompt line) is not a turn.
pub(crate) fn after_last_turn<'a>(
    lines: &[&'a str],
    user_glyphs: &[char],
    needle: &str,
) -> Option<(usize, &'a str)> {
    let prompts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| is_prompt_line(l, user_glyphs))
        .map(|(i, _)| i)
        .collect();
    let input = *prompts.last()?;
    let last_turn = prompts[..prompts.len() - 1].last().copied().unwrap_or(0);
    lines[last_turn..input]
        .iter()
        .enumerate()
        .rev()
        .find(|(_, l)| l.contains(needle))
        .map(|(i, l)| (last_turn + i, *l))
}

/// One conversation a runtime keeps on disk (a Claude transcript, a Codex
/// rollout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Conversation {
    pub id: String,
    pub path: PathBuf,
    /// Its first entry's time, when it records one.
    pub began: Option<EpochMs>,
}

pub(crate) trait Runtime: Send + Sync {
    fn kind(&self) -> RuntimeKind;
    /// A fresh launch; `session` is a new UUID the runtime may pin.
    fn fresh(&self, peer: &Peer, session: &str) -> LaunchPlan;
    /// A launch that continues `resume_ref`.
    fn resume(&self, peer: &Peer, resume_ref: &str) -> LaunchPlan;
    /// The most recent conversations recorded for the peer's folder, most
    /// recent first, with ids that are safe to use (see
    /// [`crate::core::identity::is_conversation_id`]); `until`: none older than this one is
    /// needed. Empty for a runtime that keeps none. Which of them is whose
    /// is decided in [`crate::conversation`].
    fn conversations(&self, _peer: &Peer, _until: Option<&str>) -> Vec<Conversation> {
        Vec::new()
    }
    /// The conversation `id`, wherever it is kept, if it still exists.
    fn conversation(&self, _peer: &Peer, _id: &str) -> Option<Conversation> {
        None
    }
    /// The conversation process `pid` says it is on, for a runtime whose
    /// process keeps a record of that (Claude's `sessions/<pid>.json`,
    /// which follows `/clear` and `/resume`, and exists before the first
    /// prompt writes any transcript): the surest answer there is.
    fn current_conversation(&self, _peer: &Peer, _pid: i32) -> Option<Conversation> {
        None
    }
    /// Whether process `pid` is in a turn (working, or waiting on a
    /// person), by its own record; `None` where it keeps none.
    fn busy(&self, _pid: i32) -> Option<bool> {
        None
    }
    /// What the runtime's own record says of the turn process `pid` is in
    /// (on `on`, its conversation); `None` where it keeps no such record.
    fn turn(&self, _pid: i32, _on: Option<&Conversation>) -> Option<TurnRecord> {
        None
    }
    /// The file [`Runtime::turn`] reads, so a reader can skip reading it
    /// again while it has not changed.
    fn turn_source(&self, _pid: i32, _on: Option<&Conversation>) -> Option<PathBuf> {
        None
    }
    /// Whether [`Runtime::turn`] says when the agent waits for a person
    /// (Claude's does; Codex's rollout does not, its screen does).
    fn records_waiting(&self) -> bool {
        false
    }
    /// What the screen shows of the turn (DESIGN §12): a question, the
    /// working indicator, the prompt, a usage limit.
    fn screen_turn(&self, _screen: &str, _now: EpochMs, _offset_s: i32) -> ScreenTurn {
        ScreenTurn::default()
    }
    /// Whether `conversation` shows `text` taken as a user turn at `since`
    /// or later (DESIGN §13); `None` where the runtime keeps no such record.
    fn took(&self, _conversation: &Conversation, _text: &str, _since: EpochMs) -> Option<bool> {
        None
    }
    /// The conversation session `pid` holds open, for a runtime that keeps
    /// its conversation open while it runs: an exact answer where the
    /// folder alone cannot tell.
    fn conversation_held(&self, _peer: &Peer, _pid: i32) -> Option<Conversation> {
        None
    }
    /// The conversation a command line of this runtime was launched on, as
    /// far as the command line says (a session found running without a
    /// record).
    fn launched_on(&self, _argv: &[String]) -> Option<String> {
        None
    }
    /// When the agent last did something in `conversation`, by its own
    /// records.
    fn activity(&self, conversation: &Conversation) -> Option<EpochMs> {
        last_timestamp(&conversation.path)
    }
    /// Whether the agent is mid-turn (working on something) in
    /// `conversation`; `None` when the runtime cannot tell.
    fn mid_turn(&self, _conversation: &Conversation) -> Option<bool> {
        None
    }
    /// Reads the screen during a boot.
    fn screen(&self, peer: &Peer, text: &str) -> Screen;
    /// The keys that stop the agent's current turn (tmux key names).
    fn interrupt_keys(&self) -> &'static [&'static str] {
        &["Escape"]
    }
    /// Whether the screen says the last turn ended on a usage limit, and
    /// until when; `offset_s`: the local time zone, for a runtime that
    /// says a time of day.
    fn limit(&self, _screen: &str, _now: EpochMs, _offset_s: i32) -> Option<Limit> {
        None
    }
    /// How long the ready screen must hold before it counts: a TUI that
    /// flashes its prompt before a dialog must not pass the gate on it.
    fn ready_settle(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// Whether `peer` is ready as soon as its process runs: no dialog to
    /// answer and no ready screen to wait for, so the ready gate reads no
    /// screen (a tmux call that could only say "ready").
    fn ready_unseen(&self, _peer: &Peer) -> bool {
        false
    }
    /// The start-up dialogs this runtime's CLI is known to show.
    fn dialogs(&self) -> &'static [Dialog] {
        &[]
    }
    /// How long to let a pasted text settle before pressing Enter: TUIs
    /// that treat fast input as part of the paste need a moment.
    fn submit_delay(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// What a boot's screen shows: one of the runtime's known dialogs first (a
/// dialog must never pass for the ready prompt), then the runtime's own
/// reading.
pub(crate) fn read_screen(runtime: &dyn Runtime, peer: &Peer, text: &str) -> Screen {
    match runtime.dialogs().iter().find(|d| d.on(text)) {
        Some(dialog) => Screen::Dialog(dialog),
        None => runtime.screen(peer, text),
    }
}

/// The runtime a peer's definition names.
pub(crate) fn for_peer(config: &Config, peer: &Peer) -> Box<dyn Runtime> {
    match peer.runtime {
        RuntimeKind::Claude => Box::new(claude::Claude::new(config)),
        RuntimeKind::Codex => Box::new(codex::Codex::new(config)),
        RuntimeKind::Shell => Box::new(shell::Shell),
    }
}

/// The forms a working folder may be recorded under: as configured, and
/// with symlinks resolved (runtimes record the real path).
pub(crate) fn cwd_forms(cwd: &Path) -> Vec<PathBuf> {
    let mut forms = vec![cwd.to_path_buf()];
    if let Ok(real) = cwd.canonicalize() {
        if real != cwd {
            forms.push(real);
        }
    }
    forms
}

/// The newest `timestamp` among the last lines of a JSONL file.
pub(crate) fn last_timestamp(path: &Path) -> Option<EpochMs> {
    let lines = fsutil::tail_lines(path, 64 * 1024).ok()?;
    lines
        .iter()
        .rev()
        .find_map(|line| entry_timestamp(&serde_json::from_str(line).ok()?))
}

/// A JSON entry's RFC 3339 `timestamp`.
pub(crate) fn entry_timestamp(v: &serde_json::Value) -> Option<EpochMs> {
    v.get("timestamp")?
        .as_str()
        .and_then(crate::core::clock::parse_rfc3339)
}

/// The last conversation entry (`user` or `assistant`) among the last lines
/// of a JSONL file.
pub(crate) fn last_turn_entry(path: &Path) -> Option<serde_json::Value> {
    let lines = fsutil::tail_lines(path, 64 * 1024).ok()?;
    lines.iter().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        matches!(v.get("type")?.as_str()?, "user" | "assistant").then_some(v)
    })
}

/// Is `line` the input prompt: one of `glyphs` (`❯`, `›`, `>`) at its
/// start, possibly inside the box drawn around it, and not a highlighted
/// menu item (`❯ 1. Yes, I trust this folder`, `› 1. Trust and continue`)?
pub(crate) fn is_prompt_line(line: &str, glyphs: &[char]) -> bool {
    let inner = line.trim().trim_start_matches('│').trim_start();
    let Some(first) = inner.chars().next().filter(|c| glyphs.contains(c)) else {
        return false;
    };
    let rest = inner[first.len_utf8()..].trim_start();
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    !(digits > 0 && rest[digits..].starts_with(". "))
}

/// Whether a JSONL record holds, among its last lines, a user turn at
/// `since` or later whose text (as `user_text` reads an entry) holds the
/// start of `text`.
pub(crate) fn took_in(
    path: &Path,
    text: &str,
    since: EpochMs,
    user_text: impl Fn(&serde_json::Value) -> Option<String>,
) -> bool {
    let needle: String = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(80)
        .collect();
    let Ok(lines) = fsutil::tail_lines(path, 512 * 1024) else {
        return false;
    };
    lines.iter().rev().any(|line| {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return false;
        };
        // A second of slack: the runtime stamps the turn, we stamp `since`.
        entry_timestamp(&v).is_some_and(|t| t >= since - 1000)
            && user_text(&v).is_some_and(|t| t.contains(&needle))
    })
}

/// Does any line's text contain any of `needles`?
pub(crate) fn screen_has(text: &str, needles: &[&str]) -> Option<String> {
    text.lines()
        .find(|l| needles.iter().any(|n| l.contains(n)))
        .map(|l| l.trim().to_owned())
}

pub(crate) fn argv<I, S>(bin: &OsString, rest: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    std::iter::once(bin.clone())
        .chain(rest.into_iter().map(Into::into))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration whose home (and user home) is `home`.
    fn config_in(home: &Path) -> Config {
        Config::from_lookup(|k| match k {
            "IAPEER_HOME" | "HOME" => Some(home.into()),
            _ => None,
        })
        .unwrap()
    }

    /// A screen or record captured from the pinned CLIs.
    fn captured(file: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/fixtures/real/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn peer(runtime: &str) -> Peer {
        let json = format!(r#"{{"name":"a","cwd":"/x","runtime":"{runtime}"}}"#);
        crate::core::peer::parse(Path::new("a.json"), json.as_bytes(), None).unwrap()
    }

    fn reading(runtime: &dyn Runtime, peer: &Peer, screen: &str) -> String {
        match read_screen(runtime, peer, screen) {
            Screen::Dialog(d) => format!("dialog {}", d.name),
            Screen::Ready => "ready".into(),
            Screen::NotYet => "not yet".into(),
            Screen::ResumeFailed(_) => "resume failed".into(),
            Screen::Blocked(_) => "blocked".into(),
        }
    }

    /// The screens the pinned CLIs really show (captured by the real-client
    /// tier), read as a boot must read them: every dialog told apart from
    /// the prompt, and answered by name.
    #[test]
    fn captured_screens_are_read_as_what_they_are() {
        let home = assert_fs::TempDir::new().unwrap();
        let config = config_in(home.path());
        let claude = claude::Claude::new(&config);
        let codex = codex::Codex::new(&config);
        let rows: &[(&dyn Runtime, &str, &str, &str)] = &[
            (
                &claude,
                "claude",
                include_str!("../../fixtures/real/claude/trust-dialog.txt"),
                "dialog folder-trust",
            ),
            (
                &claude,
                "claude",
                include_str!("../../fixtures/real/claude/api-key-dialog.txt"),
                "dialog api-key",
            ),
            (
                &claude,
                "claude",
                include_str!("../../fixtures/real/claude/bypass-dialog.txt"),
                "dialog bypass-permissions",
            ),
            (
                &claude,
                "claude",
                include_str!("../../fixtures/real/claude/mcp-server-dialog.txt"),
                "dialog mcp-server",
            ),
            (
                &claude,
                "claude",
                include_str!("../../fixtures/real/claude/ready.txt"),
                "ready",
            ),
            (
                &codex,
                "codex",
                include_str!("../../fixtures/real/codex/trust-dialog.txt"),
                "dialog folder-trust",
            ),
            (
                &codex,
                "codex",
                include_str!("../../fixtures/real/codex/ready.txt"),
                "ready",
            ),
            (
                &codex,
                "codex",
                include_str!("../../fixtures/real/codex/cwd-choice.txt"),
                "blocked",
            ),
            (
                &codex,
                "codex",
                include_str!("../../fixtures/real/codex/notice-splash-before-trust.txt"),
                "not yet",
            ),
        ];
        for (runtime, kind, screen, want) in rows {
            let got = reading(*runtime, &peer(kind), screen);
            assert_eq!(&got, want, "{kind}: {screen}");
        }
    }

    #[test]
    fn a_highlighted_menu_item_is_not_the_prompt() {
        let rows = [
            ("❯ ", true),
            ("│ > Try \"fix lint\" │", true),
            ("› Ask Codex to do anything", true),
            ("❯ 1. Yes, I trust this folder", false),
            ("› 1. Trust and continue", false),
            ("❯ 12. Something", false),
            ("❯ 2024 was a year", true),
            ("  1. Yes", false),
        ];
        for (line, want) in rows {
            assert_eq!(is_prompt_line(line, &['❯', '>', '›']), want, "{line}");
        }
    }

    /// What each screen captured from the pinned CLIs shows of the turn,
    /// read by the screen alone (as for a runtime that keeps no record).
    #[test]
    fn captured_screens_read_as_the_activity_they_show() {
        use crate::core::activity::{classify, Reading, State};
        let home = assert_fs::TempDir::new().unwrap();
        let config = config_in(home.path());
        let claude = claude::Claude::new(&config);
        let codex = codex::Codex::new(&config);
        let now = crate::core::clock::parse_rfc3339("2026-12-01T11:00:00Z").unwrap();
        let rows: &[(&dyn Runtime, &str, State)] = &[
            (&claude, "claude/permission-prompt.txt", State::Waiting),
            (&claude, "claude/working-tool.txt", State::Working),
            (&claude, "claude/rate-limited-retrying.txt", State::Working),
            (&claude, "claude/ready.txt", State::Idle),
            (&claude, "claude/after-clear.txt", State::Idle),
            (&claude, "claude/interrupted-tool.txt", State::Idle),
            (&claude, "claude/rate-limited.txt", State::Idle),
            (
                &claude,
                "claude/rate-limited-usage-limit.txt",
                State::Limited,
            ),
            // Claude retries this one itself: still its turn.
            (
                &claude,
                "claude/rate-limited-session-limit.txt",
                State::Working,
            ),
            (&codex, "codex/approval-prompt.txt", State::Waiting),
            (&codex, "codex/working-tool.txt", State::Working),
            (&codex, "codex/working-tool-bypass.txt", State::Working),
            (&codex, "codex/ready.txt", State::Idle),
            (&codex, "codex/usage-limit.txt", State::Limited),
            (&codex, "codex/usage-limit-days.txt", State::Limited),
        ];
        for (runtime, file, want) in rows {
            let reading = Reading {
                screen: Some(runtime.screen_turn(&captured(file), now, 0)),
                ..Reading::default()
            };
            assert_eq!(classify(&reading, i64::MAX).state, *want, "{file}");
        }
        let asks =
            |runtime: &dyn Runtime, file: &str| runtime.screen_turn(&captured(file), now, 0).asks;
        assert_eq!(
            asks(&claude, "claude/permission-prompt.txt").as_deref(),
            Some("Do you want to proceed?")
        );
        assert_eq!(
            asks(&codex, "codex/approval-prompt.txt").as_deref(),
            Some("Would you like to run the following command?")
        );
    }

    /// The turn records the pinned CLIs keep: Claude's process record says
    /// busy, waiting (and for what) or idle; Codex's rollout opens and
    /// closes each turn with an event.
    #[test]
    fn captured_records_read_as_the_turn_they_show() {
        let home = assert_fs::TempDir::new().unwrap();
        let claude_dir = home.path().join("claude");
        std::fs::create_dir_all(claude_dir.join("sessions")).unwrap();
        let config = Config::from_lookup(|k| match k {
            "IAPEER_HOME" | "HOME" => Some(home.path().into()),
            "CLAUDE_CONFIG_DIR" => Some(claude_dir.clone().into()),
            _ => None,
        })
        .unwrap();
        let claude = claude::Claude::new(&config);
        let real = |f: &str| format!("{}/fixtures/real/{f}", env!("CARGO_MANIFEST_DIR"));
        for (file, want, waiting_for) in [
            ("claude/sessions-pid.json", Turn::Over, None),
            (
                "claude/sessions-pid-waiting.json",
                Turn::Waiting,
                Some("permission prompt"),
            ),
        ] {
            let text = captured(file);
            let pid = serde_json::from_str::<serde_json::Value>(&text).unwrap()["pid"]
                .as_i64()
                .unwrap() as i32;
            std::fs::write(claude_dir.join(format!("sessions/{pid}.json")), &text).unwrap();
            let t = claude.turn(pid, None).unwrap();
            assert_eq!(
                (t.turn, t.waiting_for.as_deref()),
                (want, waiting_for),
                "{file}"
            );
        }
        assert_eq!(claude.turn(999_999, None), None, "no record, no reading");

        let codex = codex::Codex::new(&config);
        let rollout = real("codex/rollout-first-turn.jsonl");
        let whole = std::fs::read_to_string(&rollout).unwrap();
        let on = |path: &Path| Conversation {
            id: "x".into(),
            path: path.to_path_buf(),
            began: None,
        };
        let t = codex.turn(0, Some(&on(Path::new(&rollout)))).unwrap();
        assert_eq!(t.turn, Turn::Over, "the captured turn completed");
        // Cut before its task_complete: mid-turn.
        let cut: String = whole
            .lines()
            .take_while(|l| !l.contains("\"task_complete\""))
            .map(|l| format!("{l}\n"))
            .collect();
        let mid = home.path().join("mid.jsonl");
        std::fs::write(&mid, cut).unwrap();
        assert_eq!(codex.turn(0, Some(&on(&mid))).unwrap().turn, Turn::Working);
    }
}
