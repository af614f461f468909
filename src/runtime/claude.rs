//! Claude Code: transcripts under `$CLAUDE_CONFIG_DIR/projects/<slug>/`,
//! fresh launches pinned with `--session-id`, resumes with `--resume`.
//!
//! A peer's transcripts are found by matching the `cwd` recorded inside
//! them, not only by computing the slug: long paths are cut and hashed, and
//! that scheme has changed between versions (DESIGN §11).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::TurnRecord;
use super::{
    argv, cwd_forms, entry_timestamp, is_prompt_line, last_timestamp, screen_has, Conversation,
    Dialog, LaunchPlan, Runtime, Screen,
};
use crate::core::activity::{ScreenTurn, Turn};
use crate::core::clock::EpochMs;
use crate::core::identity;
use crate::core::peer::{Peer, RuntimeKind};
use crate::store::config::Config;

/// How many of the most recently modified transcripts are ranked by their
/// last entry when looking for the current one.
const CANDIDATES: usize = 8;

/// The start-up dialogs of Claude Code 2.1.197, as captured in
/// `fixtures/real/claude/` (a test reads them against this table).
const DIALOGS: &[Dialog] = &[
    Dialog {
        name: "folder-trust",
        needles: &[
            "Is this a project you created or one you trust?",
            "Yes, I trust this folder",
        ],
        // Claude's menus take an item's number and confirm it at once.
        keys: &["1"],
        persists: Some(
            "marks the folder trusted in $CLAUDE_CONFIG_DIR/.claude.json (projects.<cwd>.hasTrustDialogAccepted)",
        ),
    },
    Dialog {
        name: "api-key",
        needles: &[
            "Detected a custom API key in your environment",
            "Do you want to use this API key?",
        ],
        // "1. Yes"; the highlighted default is "2. No".
        keys: &["1"],
        persists: Some(
            "approves the key (its last 20 characters) in $CLAUDE_CONFIG_DIR/.claude.json (customApiKeyResponses.approved)",
        ),
    },
    Dialog {
        name: "bypass-permissions",
        needles: &[
            "Claude Code running in Bypass Permissions mode",
            "Yes, I accept",
        ],
        // "2. Yes, I accept"; the highlighted default is "1. No, exit".
        keys: &["2"],
        persists: Some(
            "records the acceptance in $CLAUDE_CONFIG_DIR/settings.json (skipDangerousModePermissionPrompt)",
        ),
    },
    Dialog {
        name: "mcp-server",
        needles: &[
            "New MCP server found in this project",
            "Continue without using this MCP server",
        ],
        // "3. Continue without using this MCP server": a server in the
        // project's .mcp.json runs code, and starting it is the operator's
        // call, not iapeer's. Nothing is written: it asks again next time.
        keys: &["3"],
        persists: Some(
            "leaves the project's new MCP server off (nothing is written; to use it, answer this in the peer's terminal with `iapeer attach`)",
        ),
    },
];

/// Screens iapeer must not answer: a login wants the operator.
const LOGIN: &[&str] = &["Select login method", "Log in to Claude", "Paste code here"];
/// The footer of every selection dialog: one not in the table is unknown.
const ANY_DIALOG: &str = "Enter to confirm · Esc to cancel";
const RESUME_GONE: &[&str] = &["No conversation found with session ID"];

#[derive(Debug)]
pub(crate) struct Claude {
    bin: OsString,
    projects: PathBuf,
    /// `sessions/<pid>.json`: each running Claude's own record of its
    /// conversation and status.
    sessions: PathBuf,
}

/// What a running Claude says of itself in `sessions/<pid>.json`.
#[derive(Debug, serde::Deserialize)]
struct ProcessRecord {
    pid: i32,
    #[serde(rename = "sessionId")]
    session_id: String,
    /// `idle`, `busy`, `waiting`.
    status: Option<String>,
    /// What it waits for while `waiting` (`permission prompt`).
    #[serde(rename = "waitingFor")]
    waiting_for: Option<String>,
}

/// Longest `sessions/<pid>.json` read.
const PROCESS_RECORD_MAX: u64 = 64 * 1024;

impl Claude {
    pub(crate) fn new(config: &Config) -> Self {
        Claude {
            bin: config.claude_bin.clone(),
            projects: config.claude_config_dir.join("projects"),
            sessions: config.claude_config_dir.join("sessions"),
        }
    }

    /// Process `pid`'s own record, when it is Claude's and says so.
    fn process_record(&self, pid: i32) -> Option<ProcessRecord> {
        if pid <= 0 {
            return None;
        }
        let path = self.sessions.join(format!("{pid}.json"));
        let meta = fs::metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > PROCESS_RECORD_MAX {
            return None;
        }
        let rec: ProcessRecord = serde_json::from_slice(&fs::read(&path).ok()?).ok()?;
        (rec.pid == pid && identity::is_conversation_id(&rec.session_id)).then_some(rec)
    }

    /// [`Self::transcripts`], each with what its first lines say.
    fn found(&self, cwd: &Path) -> Vec<(PathBuf, Head)> {
        let forms = cwd_forms(cwd);
        let ours = |head: &Head| {
            head.cwd
                .as_deref()
                .map(|c| forms.iter().any(|f| Path::new(c) == f))
        };
        let slugs: Vec<String> = forms.iter().map(|f| slug(f)).collect();
        let mut found: Vec<(SystemTime, PathBuf, Head)> = Vec::new();
        let by_slug: Vec<PathBuf> = slugs
            .iter()
            .map(|s| self.projects.join(s))
            .filter(|d| d.is_dir())
            .collect();
        for dir in &by_slug {
            // Several folders can share a slug (`/a/b-c`, `/a/b/c`): keep the
            // transcripts that say they were ours, or say nothing.
            found.extend(with_heads(dir).filter(|(_, _, head)| ours(head).is_none_or(|ours| ours)));
        }
        if found.is_empty() {
            let Ok(dirs) = fs::read_dir(&self.projects) else {
                return Vec::new();
            };
            for dir in dirs.flatten().map(|e| e.path()).filter(|d| d.is_dir()) {
                if by_slug.contains(&dir) {
                    continue;
                }
                found.extend(with_heads(&dir).filter(|(_, _, head)| ours(head) == Some(true)));
            }
        }
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        found.into_iter().map(|(_, p, head)| (p, head)).collect()
    }

    /// The folder's recent transcripts, newest entry first: `/clear`
    /// starts a new one, so recently modified ones are ranked by their last
    /// entry (Claude re-saves old files while idle).
    fn recent(&self, cwd: &Path) -> Vec<Conversation> {
        let mut ranked: Vec<(Option<EpochMs>, Conversation)> = self
            .found(cwd)
            .into_iter()
            .take(CANDIDATES)
            .filter_map(|(path, head)| {
                let id = stem(&path).filter(|id| identity::is_conversation_id(id))?;
                let last = last_timestamp(&path);
                Some((
                    last,
                    Conversation {
                        id,
                        path,
                        began: head.began,
                    },
                ))
            })
            .collect();
        ranked.sort_by_key(|(ts, _)| std::cmp::Reverse(*ts));
        ranked.into_iter().map(|(_, c)| c).collect()
    }

    /// Transcript `id`: in the folder's own project directories first, then
    /// in any (the slug scheme has changed between versions).
    fn find(&self, cwd: &Path, id: &str) -> Option<PathBuf> {
        if !identity::is_conversation_id(id) {
            return None;
        }
        let file = format!("{id}.jsonl");
        let own = cwd_forms(cwd)
            .into_iter()
            .map(|f| self.projects.join(slug(&f)).join(&file));
        let any = fs::read_dir(&self.projects)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join(&file));
        own.chain(any).find(|p| p.is_file())
    }
}

impl Runtime for Claude {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Claude
    }

    fn fresh(&self, peer: &Peer, session: &str) -> LaunchPlan {
        let rest = ["--session-id".to_owned(), session.to_owned()]
            .into_iter()
            .chain(peer.extra_args().iter().cloned());
        LaunchPlan {
            argv: argv(&self.bin, rest),
            resume_ref: Some(session.to_owned()),
        }
    }

    fn resume(&self, peer: &Peer, resume_ref: &str) -> LaunchPlan {
        let rest = ["--resume".to_owned(), resume_ref.to_owned()]
            .into_iter()
            .chain(peer.extra_args().iter().cloned());
        LaunchPlan {
            argv: argv(&self.bin, rest),
            resume_ref: Some(resume_ref.to_owned()),
        }
    }

    fn conversations(&self, peer: &Peer, _until: Option<&str>) -> Vec<Conversation> {
        self.recent(&peer.cwd)
    }

    fn conversation(&self, peer: &Peer, id: &str) -> Option<Conversation> {
        let path = self.find(&peer.cwd, id)?;
        let began = head(&path).began;
        Some(Conversation {
            id: id.to_owned(),
            path,
            began,
        })
    }

    fn launched_on(&self, argv: &[String]) -> Option<String> {
        argv.iter().enumerate().find_map(|(i, a)| {
            let id = match a.split_once('=') {
                Some(("--session-id" | "--resume", v)) => v,
                _ if matches!(a.as_str(), "--session-id" | "--resume" | "-r") => argv.get(i + 1)?,
                _ => return None,
            };
            identity::is_conversation_id(id).then(|| id.to_owned())
        })
    }

    fn activity(&self, conversation: &Conversation) -> Option<EpochMs> {
        let own = last_timestamp(&conversation.path);
        // Subagents write their own transcripts while the main one is quiet.
        let subagents = conversation.path.with_extension("").join("subagents");
        let sub = jsonl_files(&subagents)
            .into_iter()
            .filter_map(|(_, p)| last_timestamp(&p))
            .max();
        own.max(sub)
    }

    /// A turn is over when the last entry is the assistant's with a final
    /// stop reason; a user entry (a prompt, a tool result) or a `tool_use`
    /// stop means it is still working.
    fn current_conversation(&self, peer: &Peer, pid: i32) -> Option<Conversation> {
        let id = self.process_record(pid)?.session_id;
        // Before the first prompt there is no transcript yet: the process
        // is on that conversation all the same.
        Some(self.conversation(peer, &id).unwrap_or_else(|| {
            Conversation {
                path: self
                    .projects
                    .join(slug(&peer.cwd))
                    .join(format!("{id}.jsonl")),
                id,
                began: None,
            }
        }))
    }

    fn busy(&self, pid: i32) -> Option<bool> {
        self.turn(pid, None).map(|t| t.turn != Turn::Over)
    }

    fn records_waiting(&self) -> bool {
        true
    }

    fn turn_source(&self, pid: i32, _on: Option<&Conversation>) -> Option<PathBuf> {
        Some(self.sessions.join(format!("{pid}.json")))
    }

    fn turn(&self, pid: i32, _on: Option<&Conversation>) -> Option<TurnRecord> {
        let rec = self.process_record(pid)?;
        let turn = match rec.status?.as_str() {
            "busy" => Turn::Working,
            "waiting" => Turn::Waiting,
            "idle" => Turn::Over,
            _ => return None,
        };
        Some(TurnRecord {
            turn,
            waiting_for: rec.waiting_for.filter(|w| !w.is_empty()),
        })
    }

    /// As Claude Code 2.1.197 draws it (`fixtures/real/claude/`): "esc to
    /// interrupt" in the footer while a turn runs; a permission prompt
    /// asks "Do you want to …?" over a numbered menu.
    fn screen_turn(&self, screen: &str, now: EpochMs, offset_s: i32) -> ScreenTurn {
        let menu = screen.lines().any(|l| {
            let l = l.trim().trim_start_matches('❯').trim_start();
            l.starts_with("1. Yes")
        });
        let asks = screen
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("Do you want to") && l.ends_with('?'))
            .filter(|_| menu)
            .map(str::to_owned);
        super::turn_on_screen(screen, asks, &['❯', '>'], self.limit(screen, now, offset_s))
    }

    fn took(&self, conversation: &Conversation, text: &str, since: EpochMs) -> Option<bool> {
        Some(super::took_in(&conversation.path, text, since, |v| {
            if v.get("type")?.as_str()? != "user" {
                return None;
            }
            let content = v.pointer("/message/content")?;
            Some(match content.as_str() {
                Some(s) => s.to_owned(),
                None => content
                    .as_array()?
                    .iter()
                    .filter_map(|part| part.get("text")?.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            })
        }))
    }

    fn mid_turn(&self, conversation: &Conversation) -> Option<bool> {
        let entry = super::last_turn_entry(&conversation.path)?;
        match entry.get("type")?.as_str()? {
            "user" => Some(true),
            _ => match entry
                .pointer("/message/stop_reason")
                .and_then(|s| s.as_str())
            {
                Some("tool_use") => Some(true),
                Some(_) => Some(false),
                None => None,
            },
        }
    }

    fn submit_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(150)
    }

    fn screen(&self, _peer: &Peer, text: &str) -> Screen {
        if let Some(line) = screen_has(text, RESUME_GONE) {
            return Screen::ResumeFailed(line);
        }
        if let Some(line) = screen_has(text, LOGIN) {
            return Screen::Blocked(format!(
                "Claude Code is asking for a login ({line}): log in once yourself with `claude` in that folder, or give it ANTHROPIC_API_KEY"
            ));
        }
        if let Some(line) = screen_has(text, &[ANY_DIALOG]) {
            return Screen::Blocked(format!(
                "Claude Code shows a dialog iapeer does not know ({line}): answer it in the peer's terminal, or report the screen"
            ));
        }
        if text.lines().any(|l| is_prompt_line(l, &['❯', '>'])) {
            Screen::Ready
        } else {
            Screen::NotYet
        }
    }

    fn dialogs(&self) -> &'static [Dialog] {
        DIALOGS
    }

    fn ready_settle(&self) -> std::time::Duration {
        std::time::Duration::from_millis(300)
    }

    /// `API Error: … Claude AI usage limit reached|<epoch seconds>` after
    /// the last user turn. (A `Session limit reached · Retrying in 48s`
    /// is Claude waiting on its own: that turn is still going.)
    fn limit(&self, screen: &str, _now: EpochMs, _offset_s: i32) -> Option<super::Limit> {
        let lines: Vec<&str> = screen.lines().collect();
        let (at, line) = super::after_last_turn(&lines, &['❯', '>'], "usage limit reached")?;
        if lines[at..].iter().any(|l| l.contains("Retrying in")) {
            return None;
        }
        let until_ms = line
            .rsplit_once('|')
            .and_then(|(_, t)| t.trim().parse::<i64>().ok())
            .filter(|t| *t > 1_000_000_000)
            .map(|t| t * 1000);
        Some(super::Limit {
            until_ms,
            said: line.trim().trim_start_matches('●').trim().to_owned(),
        })
    }
}

/// Every character outside `[A-Za-z0-9]` becomes `-`.
pub(crate) fn slug(path: &Path) -> String {
    path.to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn stem(path: &Path) -> Option<String> {
    Some(path.file_stem()?.to_string_lossy().into_owned())
}

fn jsonl_files(dir: &Path) -> Vec<(SystemTime, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .filter_map(|e| {
            let meta = e.metadata().ok().filter(fs::Metadata::is_file)?;
            Some((meta.modified().ok()?, e.path()))
        })
        .collect()
}

/// What a transcript's first entries say: the folder it was recorded in,
/// and when it began.
#[derive(Debug, Default)]
struct Head {
    cwd: Option<String>,
    began: Option<EpochMs>,
}

fn head(path: &Path) -> Head {
    let mut head = Head::default();
    let Ok(lines) = crate::store::fsutil::head_lines(path, 64 * 1024) else {
        return head;
    };
    for line in lines.iter().take(50) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if head.cwd.is_none() {
            head.cwd = v.get("cwd").and_then(|c| c.as_str()).map(str::to_owned);
        }
        if head.began.is_none() {
            head.began = entry_timestamp(&v);
        }
        if head.cwd.is_some() && head.began.is_some() {
            break;
        }
    }
    head
}

/// The transcripts in `dir`, each with its modification time and head.
fn with_heads(dir: &Path) -> impl Iterator<Item = (SystemTime, PathBuf, Head)> {
    jsonl_files(dir).into_iter().map(|(mtime, p)| {
        let head = head(&p);
        (mtime, p, head)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{clock, peer};

    /// The usage-limit screens of the pinned Claude Code, as captured: a
    /// limit with the epoch it names; a limit Claude is retrying on its
    /// own, a per-minute rate limit and ordinary screens are none.
    #[test]
    fn usage_limits_are_read_from_the_real_screens() {
        let c = claude(Path::new("/nonexistent"));
        let read = |file: &str| {
            let screen = fs::read_to_string(format!(
                "{}/fixtures/real/claude/{file}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            c.limit(&screen, 0, 0)
        };
        let l = read("rate-limited-usage-limit.txt").expect("a usage limit");
        assert_eq!(l.until_ms, Some(1_796_129_759_000));
        assert!(l.said.contains("usage limit reached"), "{}", l.said);
        for calm in [
            "rate-limited-session-limit.txt",
            "rate-limited-retrying.txt",
            "rate-limited.txt",
            "ready.txt",
            "working-tool.txt",
            "after-clear.txt",
        ] {
            assert_eq!(read(calm), None, "{calm}");
        }
    }

    impl Claude {
        /// Transcripts recorded for `cwd`, most recently modified first.
        fn transcripts(&self, cwd: &Path) -> Vec<PathBuf> {
            self.found(cwd).into_iter().map(|(p, _)| p).collect()
        }
    }
    use assert_fs::TempDir;

    fn claude(home: &Path) -> Claude {
        Claude {
            bin: "claude".into(),
            projects: home.join("projects"),
            sessions: home.join("sessions"),
        }
    }

    fn write_transcript(dir: &Path, id: &str, cwd: &str, ts: &str) -> PathBuf {
        fs::create_dir_all(dir).unwrap();
        let p = dir.join(format!("{id}.jsonl"));
        let lines = [
            r#"{"type":"summary","summary":"x"}"#.to_owned(),
            format!(r#"{{"type":"user","cwd":"{cwd}","sessionId":"{id}","timestamp":"{ts}"}}"#),
        ];
        fs::write(&p, lines.join("\n") + "\n").unwrap();
        p
    }

    #[test]
    fn slug_replaces_everything_outside_alnum() {
        assert_eq!(
            slug(Path::new("/home/u/src/my_app.v2")),
            "-home-u-src-my-app-v2"
        );
    }

    #[test]
    fn finds_the_newest_transcript_by_entry_not_by_mtime() {
        let home = TempDir::new().unwrap();
        let c = claude(home.path());
        let dir = home
            .path()
            .join("projects")
            .join(slug(Path::new("/srv/app")));
        write_transcript(&dir, "old", "/srv/app", "2026-01-01T00:00:00Z");
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_transcript(&dir, "new", "/srv/app", "2026-02-01T00:00:00Z");
        std::thread::sleep(std::time::Duration::from_millis(20));
        // Re-saved later, but its last entry is older.
        write_transcript(&dir, "resaved", "/srv/app", "2025-12-01T00:00:00Z");
        let peer = peer::parse(
            Path::new("a.json"),
            br#"{"name":"a","cwd":"/srv/app"}"#,
            None,
        )
        .unwrap();
        let ids: Vec<String> = c
            .conversations(&peer, None)
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, ["new", "old", "resaved"]);
        let found = c.conversation(&peer, "old").unwrap();
        assert!(found.path.ends_with("old.jsonl"));
        assert_eq!(found.began, clock::parse_rfc3339("2026-01-01T00:00:00Z"));
        assert!(c.conversation(&peer, "gone").is_none());
        assert!(c.conversation(&peer, "../old").is_none());
    }

    #[test]
    fn a_shared_slug_does_not_mix_folders_and_moved_slugs_are_found_by_scanning() {
        let home = TempDir::new().unwrap();
        let c = claude(home.path());
        let shared = home.path().join("projects").join("-a-b-c");
        write_transcript(&shared, "theirs", "/a/b/c", "2026-01-01T00:00:00Z");
        assert!(c.transcripts(Path::new("/a/b-c")).is_empty());
        // A long path stored under a hashed slug is still found by its cwd.
        let hashed = home
            .path()
            .join("projects")
            .join("-a-very-long-path-1f2e3d");
        write_transcript(&hashed, "mine", "/a/very/long/path", "2026-01-01T00:00:00Z");
        let found = c.transcripts(Path::new("/a/very/long/path"));
        assert_eq!(found.len(), 1);
        assert!(found[0].ends_with("mine.jsonl"));
    }

    #[test]
    fn activity_counts_subagents() {
        let home = TempDir::new().unwrap();
        let c = claude(home.path());
        let dir = home
            .path()
            .join("projects")
            .join(slug(Path::new("/srv/app")));
        write_transcript(&dir, "s1", "/srv/app", "2026-01-01T00:00:00Z");
        write_transcript(
            &dir.join("s1").join("subagents"),
            "agent-1",
            "/srv/app",
            "2026-01-01T01:00:00Z",
        );
        let peer = peer::parse(
            Path::new("a.json"),
            br#"{"name":"a","cwd":"/srv/app"}"#,
            None,
        )
        .unwrap();
        assert_eq!(
            c.activity(&c.conversation(&peer, "s1").unwrap()),
            clock::parse_rfc3339("2026-01-01T01:00:00Z")
        );
    }

    #[test]
    fn a_command_line_says_which_conversation() {
        let home = TempDir::new().unwrap();
        let c = claude(home.path());
        let argv = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let rows: [(&[&str], Option<&str>); 6] = [
            (
                &["claude", "--session-id", "abc-1", "--model", "x"],
                Some("abc-1"),
            ),
            (
                &["node", "/usr/bin/claude", "--resume", "abc-2"],
                Some("abc-2"),
            ),
            (&["claude", "--resume=abc-3"], Some("abc-3")),
            (&["claude", "-r", "abc-4"], Some("abc-4")),
            (&["claude", "--resume", "../x"], None),
            (&["claude", "--resume"], None),
        ];
        for (line, want) in rows {
            assert_eq!(c.launched_on(&argv(line)).as_deref(), want, "{line:?}");
        }
    }

    #[test]
    fn screen_states() {
        let home = TempDir::new().unwrap();
        let c = claude(home.path());
        let peer = peer::parse(Path::new("a.json"), br#"{"name":"a","cwd":"/x"}"#, None).unwrap();
        let ready = "✻ Welcome\n╭────╮\n│ > Try \"fix lint\" │\n╰────╯\n  ? for shortcuts";
        assert_eq!(c.screen(&peer, ready), Screen::Ready);
        let trust = "Do you trust the files in this folder?\n❯ 1. Yes, proceed\n";
        assert_eq!(c.screen(&peer, trust), Screen::NotYet);
        assert_eq!(c.screen(&peer, "loading…"), Screen::NotYet);
        assert!(matches!(
            c.screen(&peer, "No conversation found with session ID: 123"),
            Screen::ResumeFailed(_)
        ));
    }
}
