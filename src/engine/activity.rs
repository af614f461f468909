//! Reading what one live session is doing (DESIGN §12), cheaply enough to
//! do for every session every second: the runtime's own record of the turn
//! (Claude's process record, Codex's rollout) is read each time, and the
//! screen only when the record cannot tell — a turn gone quiet (Codex's
//! approval prompt is on the screen only, and a changing screen is
//! progress), a turn just over (did it end on a usage limit?), a runtime
//! that keeps no record. The classification is `core::activity`'s.

use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant, SystemTime};

use crate::core::activity::{classify, Classified, Reading, ScreenTurn, Tracked, Turn};
use crate::core::peer::{Peer, RuntimeKind};
use crate::core::session::SessionRecord;
use crate::core::steady::{self, Sighting};
use crate::engine::conversation;
use crate::engine::ctx::Ctx;
use crate::runtime::{Conversation, Runtime, TurnRecord};

/// A turn this quiet has its screen looked at.
const LOOK_WHEN_QUIET: Duration = Duration::from_secs(3);
/// How often a screen is looked at while it is wanted, and once a turn has
/// been quiet for [`QUIET_LONG`] (a long tool call: a question is then
/// seen up to that much later, and a fleet of them costs a look per
/// session per `LOOK_SLOWLY`).
const LOOK_EVERY: Duration = Duration::from_secs(5);
const QUIET_LONG: Duration = Duration::from_secs(60);
const LOOK_SLOWLY: Duration = Duration::from_secs(30);
/// Looks at the screen after a turn ends (a usage limit may be drawn a
/// moment after the record says the turn is over).
const LOOKS_AFTER_TURN: u8 = 2;
/// How often the conversation a session is on is looked for again
/// (`/clear` starts a new one), and how often while none is found (Codex
/// writes its rollout only at the first turn).
const FIND_EVERY: Duration = Duration::from_secs(30);
const FIND_EVERY_UNKNOWN: Duration = Duration::from_secs(1);
/// Lines of the screen read.
const SCREEN_LINES: usize = 80;
/// A turn record that looks unchanged is read again this often anyway.
const REREAD_EVERY: Duration = Duration::from_secs(10);
/// A file vouches for what was read from it only if it had been left alone
/// this long when it was looked at: a rewrite of the same length within
/// the file system's timestamp granularity (a clock tick here, a whole
/// second on some file systems) keeps its size and time, and Claude
/// rewrites its process record in place, where "idle" and "busy" are the
/// same length.
const SETTLED: Duration = Duration::from_secs(2);

/// A screen as last looked at.
#[derive(Debug)]
struct Looked {
    /// The record's turn then: a screen read in another turn is stale.
    turn: Option<Turn>,
    seen: ScreenTurn,
}

/// One live session, as the reader follows it.
pub(crate) struct Watch {
    pub session: String,
    pub tracked: Tracked,
    runtime: Box<dyn Runtime>,
    conversation: Option<Conversation>,
    looked_for: Option<Instant>,
    /// The conversation file as it was when its stamp was read.
    file: Option<Stat>,
    stamp: Option<Sighting>,
    turn: Option<Turn>,
    turn_changed: Instant,
    /// The turn record as last read, the file it was read from as it was
    /// then, and when.
    record: Option<(TurnRecord, Stat, Instant)>,
    screen: Option<Looked>,
    /// The last look, whether or not it could read the screen.
    looked: Option<Instant>,
    looks_after_turn: u8,
    print: Option<u64>,
    screen_changed: Option<Instant>,
    origin: Instant,
}

impl Watch {
    pub(crate) fn new(ctx: &Ctx, peer: &Peer, session: &str, tracked: Tracked) -> Self {
        let now = Instant::now();
        Watch {
            session: session.to_owned(),
            tracked,
            runtime: crate::runtime::for_peer(&ctx.config, peer),
            conversation: None,
            looked_for: None,
            file: None,
            stamp: None,
            turn: None,
            turn_changed: now,
            record: None,
            screen: None,
            looked: None,
            looks_after_turn: 0,
            print: None,
            screen_changed: None,
            origin: now,
        }
    }

    /// Reads the session now and classifies what it shows.
    pub(crate) fn read(
        &mut self,
        ctx: &Ctx,
        peer: &Peer,
        rec: &SessionRecord,
        stuck_ms: i64,
    ) -> Classified {
        let reading = self.reading(ctx, peer, rec, stuck_ms);
        classify(&reading, stuck_ms)
    }

    fn reading(&mut self, ctx: &Ctx, peer: &Peer, rec: &SessionRecord, stuck_ms: i64) -> Reading {
        if peer.runtime == RuntimeKind::Shell {
            // Any program: no turn to read.
            return Reading::default();
        }
        let mono = Instant::now();
        let every = match self.conversation {
            Some(_) => FIND_EVERY,
            None => FIND_EVERY_UNKNOWN,
        };
        if self.looked_for.is_none_or(|t| t.elapsed() >= every) {
            self.conversation = conversation::live(ctx, self.runtime.as_ref(), peer, rec);
            self.looked_for = Some(mono);
        }
        let record = self.turn_record(rec.pane_pid, mono);
        let turn = record.as_ref().map(|r| r.turn);
        if turn != self.turn {
            self.turn = turn;
            self.turn_changed = mono;
            self.looks_after_turn = 0;
        }
        let quiet = self.quiet_ms(ctx);
        if self.wants_a_look(quiet, stuck_ms) {
            self.look(ctx, rec, mono);
        }
        let quiet = self.quiet_ms(ctx);
        Reading {
            record: turn,
            waiting_for: record.and_then(|r| r.waiting_for),
            screen: self
                .screen
                .as_ref()
                .filter(|s| s.turn == turn)
                .map(|s| s.seen.clone()),
            quiet_ms: quiet,
            held_until: rec
                .limited_until
                .as_deref()
                .and_then(crate::core::clock::parse_rfc3339)
                .filter(|until| *until > ctx.now()),
        }
    }

    /// The runtime's turn record, read again only when its file changed.
    fn turn_record(&mut self, pid: i32, mono: Instant) -> Option<TurnRecord> {
        let on = self.conversation.as_ref();
        let stat = self.runtime.turn_source(pid, on).and_then(|p| stat(&p));
        if let (Some(now), Some((rec, then, at))) = (stat, &self.record) {
            if now.unchanged_since(then) && at.elapsed() < REREAD_EVERY {
                return Some(rec.clone());
            }
        }
        let read = self.runtime.turn(pid, on);
        self.record = match (&read, stat) {
            (Some(r), Some(stat)) => Some((r.clone(), stat, mono)),
            _ => None,
        };
        read
    }

    /// How long since the session last showed progress: a new entry in its
    /// conversation, a new turn, a changed screen.
    fn quiet_ms(&mut self, ctx: &Ctx) -> Option<i64> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let mut quiet = ms(self.turn_changed.elapsed());
        if let Some(stamp) = self.stamp_ms() {
            let mono_ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
            let seen = steady::since(self.stamp, stamp, ctx.now(), mono_ms);
            self.stamp = Some(seen);
            quiet = quiet.min(seen.since_at(mono_ms));
        }
        if let Some(at) = self.screen_changed {
            quiet = quiet.min(ms(at.elapsed()));
        }
        Some(quiet)
    }

    /// The conversation's latest entry, read again only when its file
    /// changed.
    fn stamp_ms(&mut self) -> Option<i64> {
        let c = self.conversation.as_ref()?;
        let now = stat(&c.path)?;
        if self.file.is_some_and(|then| now.unchanged_since(&then)) {
            return self.stamp.map(|s| s.stamp);
        }
        let stamp = self.runtime.activity(c)?;
        self.file = Some(now);
        Some(stamp)
    }

    fn wants_a_look(&self, quiet_ms: Option<i64>, stuck_ms: i64) -> bool {
        let due = |every: Duration| self.looked.is_none_or(|at| at.elapsed() >= every);
        let ms = |d: Duration| d.as_millis() as i64;
        let quiet = quiet_ms.unwrap_or(0);
        match self.turn {
            // No record: the screen is all there is.
            None => due(LOOK_EVERY),
            // A record that says when it waits: the screen only tells
            // whether a quiet turn is making progress, before it reads
            // stuck.
            Some(Turn::Working) if self.runtime.records_waiting() => {
                quiet >= stuck_ms / 2 && due(LOOK_SLOWLY)
            }
            Some(Turn::Working) if quiet < ms(LOOK_WHEN_QUIET) => false,
            Some(Turn::Working) if quiet < ms(QUIET_LONG) => due(LOOK_EVERY),
            Some(Turn::Working) => due(LOOK_SLOWLY),
            // The record says what it waits for.
            Some(Turn::Waiting) => false,
            Some(Turn::Over) => {
                let limited = self.tracked.state == crate::core::activity::State::Limited;
                (self.looks_after_turn < LOOKS_AFTER_TURN && due(Duration::from_secs(1)))
                    || (limited && due(LOOK_EVERY))
            }
        }
    }

    fn look(&mut self, ctx: &Ctx, rec: &SessionRecord, mono: Instant) {
        self.looked = Some(mono);
        if self.turn == Some(Turn::Over) {
            self.looks_after_turn = self.looks_after_turn.saturating_add(1);
        }
        let Ok(text) = ctx.host.capture(&rec.socket, &rec.identity, SCREEN_LINES) else {
            // Unknown, not a change: the next look, when due, may do better.
            return;
        };
        let now = ctx.now();
        let offset = crate::os::clock::local_offset_secs(now);
        let seen = self.runtime.screen_turn(&text, now, offset);
        let print = fingerprint(&text);
        if self.print.is_some_and(|p| p != print) {
            self.screen_changed = Some(mono);
        }
        self.print = Some(print);
        self.screen = Some(Looked {
            turn: self.turn,
            seen,
        });
    }
}

/// A file as `stat` sees it: which file, its size and its time. Another
/// file renamed over it, a write to it, or a new time says it changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: SystemTime,
}

/// A file as `stat` saw it just before it was read, and whether it had
/// been left alone for [`SETTLED`] by then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    key: FileKey,
    settled: bool,
}

impl Stat {
    /// Whether what was read after the `earlier` stat still holds: the
    /// file looks the same, and it looked settled then (a write after a
    /// settled stat always has a newer time).
    fn unchanged_since(&self, earlier: &Stat) -> bool {
        earlier.settled && self.key == earlier.key
    }
}

fn stat(path: &std::path::Path) -> Option<Stat> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta.modified().ok()?;
    let key = FileKey {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        mtime,
    };
    let settled = SystemTime::now()
        .duration_since(mtime)
        .is_ok_and(|quiet| quiet >= SETTLED);
    Some(Stat { key, settled })
}

/// What of a screen counts as progress when it changes: its words, not its
/// spinner, its timers or its token counts.
fn fingerprint(screen: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for line in screen.lines() {
        if line.contains('…') || line.contains("esc to interrupt") {
            continue; // a spinner line: "✽ Cogitating… (2s · ↓ 22 tokens)"
        }
        for c in line.chars().filter(|c| c.is_alphabetic()) {
            c.hash(&mut h);
        }
        '\n'.hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a record rewritten in place with the same length within
    /// the file system's timestamp granularity ("idle" → "busy") stats the
    /// same, and the old reading was kept for ten seconds: a whole short
    /// tool call never read working.
    #[test]
    fn a_same_length_rewrite_is_seen_unless_the_file_had_settled() {
        let dir = assert_fs::TempDir::new().unwrap();
        let path = dir.path().join("4242.json");
        let write = |text: &str, mtime: SystemTime| {
            std::fs::write(&path, text).unwrap();
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(mtime).unwrap();
        };
        let just_now = SystemTime::now();
        write(r#"{"status":"idle"}"#, just_now);
        let read = stat(&path).unwrap();
        write(r#"{"status":"busy"}"#, just_now);
        let again = stat(&path).unwrap();
        assert_eq!(again.key, read.key, "the rewrite stats the same");
        assert!(
            !again.unchanged_since(&read),
            "a fresh file vouches for nothing"
        );

        let long_ago = SystemTime::now() - Duration::from_secs(60);
        write(r#"{"status":"idle"}"#, long_ago);
        let settled = stat(&path).unwrap();
        assert!(stat(&path).unwrap().unchanged_since(&settled));
        write(r#"{"status":"busy"}"#, SystemTime::now());
        assert!(!stat(&path).unwrap().unchanged_since(&settled));
    }

    #[test]
    fn a_spinner_and_its_timers_are_not_progress_but_new_words_are() {
        let at = |secs: u32, tokens: u32| {
            format!("❯ run it\n\n● Bash(sleep 30)\n  ⎿  Running…\n\n✽ Cogitating… ({secs}s · ↓ {tokens} tokens)\n  esc to interrupt\n")
        };
        assert_eq!(fingerprint(&at(2, 22)), fingerprint(&at(9, 140)));
        let more = format!("{}  ⎿  compiling crate two\n", at(9, 140));
        assert_ne!(fingerprint(&at(2, 22)), fingerprint(&more));
        let codex = |s: u32| format!("› run the tool\n\n• Working ({s}s • esc to interrupt)\n");
        assert_eq!(fingerprint(&codex(3)), fingerprint(&codex(340)));
    }
}
