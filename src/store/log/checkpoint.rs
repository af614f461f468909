//! The metrics checkpoint (`state/metrics.json`): the counters folded from
//! the log, written atomically together with the log position they cover.
//! Counters are rebuilt from the checkpoint and the lines after it, so they
//! survive a daemon restart and the rotation of old lines alike, and
//! nobody re-reads the whole history to show them.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::core::error::Result;
use crate::core::metrics::{Folded, LastLine, Metrics, PeerMetrics};
use crate::core::record::Entry;
use crate::store::fsutil;

use super::follow::{Follower, Position};

/// 3: status prints each identity's counters and last line as they are
/// written here, so what a version holds is exactly what this build
/// writes of [`PeerMetrics`] and [`LastLine`]: a change to either is a new
/// version (the tripwire test below fails until it is). Older versions are
/// read whole and printed as this build writes them.
/// 2: the last line about each identity kept as what status shows of it.
/// 1: the whole last line, parsed again by every read.
const VERSION: u32 = 3;
/// Lines folded at a time.
const FOLD_BATCH: usize = 4096;
/// A checkpoint larger than this is not ours: ignored.
const MAX_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Saved<Last> {
    version: u32,
    /// `dev:ino:offset` (hex) of the first line not folded in.
    position: String,
    peers: BTreeMap<String, PeerMetrics>,
    /// The last line about each identity: what status shows of it (1: the
    /// line as written).
    last: BTreeMap<String, Last>,
}

/// Writes `folded`, covering the log up to `position`.
pub(crate) fn save(path: &Path, position: Position, folded: &Folded) -> Result<()> {
    #[derive(Serialize)]
    struct Saving<'a> {
        version: u32,
        position: String,
        peers: &'a BTreeMap<String, PeerMetrics>,
        last: &'a BTreeMap<String, LastLine>,
    }
    let saving = Saving {
        version: VERSION,
        position: position.to_string(),
        peers: &folded.metrics.peers,
        last: &folded.last,
    };
    let body = serde_json::to_vec(&saving).expect("a checkpoint always serializes");
    fsutil::write_atomic(path, &body)
}

/// A checkpoint's bytes; `None` (and a warning) when it is missing or not
/// ours.
fn read(path: &Path) -> Option<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_BYTES {
        tracing::warn!("{}: not a checkpoint; ignored", path.display());
        return None;
    }
    std::fs::read(path).ok()
}

/// Reads a checkpoint, whole or only what is about one identity; `None`
/// (and a warning) when it is missing, not ours or damaged: the fold then
/// starts from the oldest retained line.
pub(crate) fn load(path: &Path, only: Option<&str>) -> Option<(Position, Folded)> {
    load_from(path, &read(path)?, only)
}

/// [`load`], of the bytes read from `path`.
fn load_from(path: &Path, bytes: &[u8], only: Option<&str>) -> Option<(Position, Folded)> {
    let (position, mut folded) = load_whole(path, bytes)?;
    if let Some(name) = only {
        folded.metrics.peers.retain(|k, _| k == name);
        folded.last.retain(|k, _| k == name);
    }
    Some((position, folded))
}

/// A checkpoint of this version as written: each identity's counters and
/// last line only scanned over, not parsed. `None` when it cannot be read
/// that way (an older version, a name written with escapes, damage).
#[derive(Deserialize)]
struct Raw<'a> {
    version: u32,
    position: String,
    #[serde(borrow)]
    peers: HashMap<&'a str, &'a RawValue>,
    #[serde(borrow)]
    last: HashMap<&'a str, &'a RawValue>,
}

impl<'a> Raw<'a> {
    fn of(bytes: &'a [u8]) -> Option<(Position, Self)> {
        let raw: Raw = serde_json::from_slice(bytes).ok()?;
        let objects = |m: &HashMap<&str, &RawValue>| m.values().all(|v| v.get().starts_with('{'));
        if raw.version != VERSION || !objects(&raw.peers) || !objects(&raw.last) {
            return None;
        }
        Some((raw.position.parse().ok()?, raw))
    }

    /// Every identity's counters and last line (or `only` one's), kept as
    /// written.
    fn kept(self, only: Option<&str>) -> Shown<'a> {
        fn kept<'a, T>(
            m: HashMap<&'a str, &'a RawValue>,
            only: Option<&str>,
        ) -> HashMap<Cow<'a, str>, Kept<'a, T>> {
            let keep = |(k, v): (&'a str, &'a RawValue)| (Cow::Borrowed(k), Kept::Written(v));
            match only {
                Some(name) => m
                    .get_key_value(name)
                    .map(|(k, v)| keep((k, v)))
                    .into_iter()
                    .collect(),
                None => m.into_iter().map(keep).collect(),
            }
        }
        Shown {
            peers: kept(self.peers, only),
            last: kept(self.last, only),
            only: only.map(str::to_owned),
        }
    }
}

/// A value as the checkpoint holds it, its text (borrowed from the
/// checkpoint read) to be printed as it is, or as the lines after the
/// checkpoint made it.
#[derive(Clone, Debug)]
pub(crate) enum Kept<'a, T> {
    Written(&'a RawValue),
    Folded(T),
}

impl<T: DeserializeOwned + Default + Clone> Kept<'_, T> {
    /// The value, parsed from its text if that is how it is kept. Text
    /// that does not read as one (a checkpoint changed by hand) reads as
    /// none, with a warning: the daemon rewrites the checkpoint from what
    /// it folded.
    pub(crate) fn value(&self) -> Cow<'_, T> {
        match self {
            Kept::Folded(v) => Cow::Borrowed(v),
            Kept::Written(text) => Cow::Owned(parse(text)),
        }
    }

    pub(crate) fn into_value(self) -> T {
        match self {
            Kept::Folded(v) => v,
            Kept::Written(text) => parse(text),
        }
    }

    /// Some of the value: `U` names the fields wanted, and the others are
    /// only scanned over.
    pub(crate) fn part<U: DeserializeOwned + Default>(&self, of: impl FnOnce(&T) -> U) -> U {
        match self {
            Kept::Folded(v) => of(v),
            Kept::Written(text) => parse(text),
        }
    }
}

fn parse<U: DeserializeOwned + Default>(text: &RawValue) -> U {
    serde_json::from_str(text.get()).unwrap_or_else(|e| {
        tracing::warn!(
            "the metrics checkpoint holds a value that does not read ({e}); shown as none"
        );
        U::default()
    })
}

impl<T: Serialize> Serialize for Kept<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Kept::Written(text) => text.serialize(s),
            Kept::Folded(v) => v.serialize(s),
        }
    }
}

/// What `status` shows of the log: each identity's counters and last
/// line as the checkpoint holds them, and as the lines after it changed
/// them. Only the identities those lines are about are parsed: the rest
/// are printed as written, borrowed from the checkpoint read.
#[derive(Debug, Default)]
pub(crate) struct Shown<'a> {
    pub(crate) peers: HashMap<Cow<'a, str>, Kept<'a, PeerMetrics>>,
    pub(crate) last: HashMap<Cow<'a, str>, Kept<'a, LastLine>>,
    /// Kept to one identity: lines about others are passed over.
    only: Option<String>,
}

impl From<Folded> for Shown<'_> {
    fn from(f: Folded) -> Self {
        fn kept<'a, T>(m: BTreeMap<String, T>) -> HashMap<Cow<'a, str>, Kept<'a, T>> {
            m.into_iter()
                .map(|(k, v)| (Cow::Owned(k), Kept::Folded(v)))
                .collect()
        }
        Shown {
            peers: kept(f.metrics.peers),
            last: kept(f.last),
            only: None,
        }
    }
}

/// What the lines of the log are folded into.
pub(crate) trait Fold {
    fn apply(&mut self, e: &Entry);
}

impl Fold for Folded {
    fn apply(&mut self, e: &Entry) {
        Folded::apply(self, e);
    }
}

impl Fold for Shown<'_> {
    /// A line changes only what is about its identity: that part is
    /// parsed, folded as the daemon folds it, and kept parsed.
    fn apply(&mut self, e: &Entry) {
        let Some(id) = e.identity() else { return };
        if self.only.as_deref().is_some_and(|only| only != id) {
            return;
        }
        let mut one = Folded::default();
        if let Some(m) = self.peers.remove(id) {
            one.metrics.peers.insert(id.to_owned(), m.into_value());
        }
        if let Some(l) = self.last.remove(id) {
            one.last.insert(id.to_owned(), l.into_value());
        }
        one.apply(e);
        let Shown { peers, last, .. } = Shown::from(one);
        self.peers.extend(peers);
        self.last.extend(last);
    }
}

/// What `status` shows (all, or `only` one identity's), from the
/// checkpoint at `checkpoint`, read into `read_into` (which what is shown
/// borrows), and the lines after it; `None` without a checkpoint to start
/// from.
pub(crate) fn shown<'a>(
    log: &Path,
    checkpoint: &Path,
    only: Option<&str>,
    read_into: &'a mut Vec<u8>,
) -> Option<Shown<'a>> {
    *read_into = read(checkpoint)?;
    let bytes: &'a [u8] = read_into;
    let (position, mut shown) = match Raw::of(bytes) {
        Some((position, raw)) => (position, raw.kept(only)),
        None => {
            let (position, folded) = load_from(checkpoint, bytes, only)?;
            let shown = Shown {
                only: only.map(str::to_owned),
                ..Shown::from(folded)
            };
            (position, shown)
        }
    };
    fold_rest(&mut shown, &mut Follower::at(log, position));
    Some(shown)
}

fn load_whole(path: &Path, bytes: &[u8]) -> Option<(Position, Folded)> {
    let saved: Saved<LastLine> = match serde_json::from_slice(bytes) {
        Ok(s) => s,
        // Written before version 2: its last lines are whole lines.
        Err(e) => match serde_json::from_slice::<Saved<String>>(bytes) {
            Ok(old) if old.version == 1 => Saved {
                version: VERSION,
                position: old.position,
                peers: old.peers,
                last: old
                    .last
                    .into_iter()
                    .filter_map(|(k, line)| Entry::parse(&line).map(|e| (k, LastLine::of(&e))))
                    .collect(),
            },
            _ => {
                tracing::warn!("{}: {e}; rebuilding from the log", path.display());
                return None;
            }
        },
    };
    // A version 1 with no last lines reads as version 2.
    if !(1..=VERSION).contains(&saved.version) {
        tracing::warn!(
            "{}: version {} is not {VERSION}; rebuilding from the log",
            path.display(),
            saved.version
        );
        return None;
    }
    let position: Position = saved.position.parse().ok()?;
    let folded = Folded {
        metrics: Metrics {
            peers: saved.peers,
            rebuilding: false,
        },
        last: saved.last,
    };
    Some((position, folded))
}

/// Where a fold of the log begins: the checkpoint's counters (all, or
/// `only` one identity's) and a follower at its position, or nothing and a
/// follower at the oldest retained line (the flag says which).
pub(crate) fn begin(log: &Path, checkpoint: &Path, only: Option<&str>) -> (Folded, Follower, bool) {
    match load(checkpoint, only) {
        Some((pos, folded)) => (folded, Follower::at(log, pos), true),
        None => (Folded::default(), Follower::from_start(log), false),
    }
}

/// Folds every line from where `follower` is to the end into `folded`,
/// in batches, so a long history is folded in bounded memory.
pub(crate) fn fold_rest(folded: &mut impl Fold, follower: &mut Follower) {
    loop {
        let lines = follower.poll_at_most(FOLD_BATCH);
        if lines.is_empty() {
            return;
        }
        for f in lines {
            folded.apply(&f.entry);
        }
    }
}

/// The fold of the log so far, from the checkpoint at `checkpoint` (if
/// any) and the lines after it, with a follower left after the last line.
pub(crate) fn fold(log: &Path, checkpoint: &Path) -> (Folded, Follower) {
    let (mut folded, mut follower, _) = begin(log, checkpoint, None);
    fold_rest(&mut folded, &mut follower);
    (folded, follower)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::Record;
    use crate::core::vocab::{Ev, Mode, Source};
    use crate::store::config::Config;
    use crate::store::log::LogWriter;
    use std::path::PathBuf;

    fn wake(n: i64) -> Record {
        Record::new(1_795_236_254_821 + n, Ev::Wake, Source::Cli)
            .identity("alice")
            .mode(Mode::Fresh)
    }

    /// The counters are what the whole history says, after rotations took
    /// most of it away, and a checkpoint damaged or missing rebuilds from
    /// what is left.
    /// A home with `settings` (variable, value), its log, its checkpoint
    /// and a writer.
    fn home(settings: &[(&str, &str)]) -> (assert_fs::TempDir, PathBuf, PathBuf, LogWriter) {
        let home = assert_fs::TempDir::new().unwrap();
        let config = Config::from_lookup(|k| match k {
            "IAPEER_HOME" | "HOME" => Some(home.path().into()),
            _ => settings
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| (*v).into()),
        })
        .unwrap();
        config.ensure_home().unwrap();
        let log = config.paths.lifecycle_log.clone();
        let cp = home.path().join("state/metrics.json");
        let writer = LogWriter::new(&config);
        (home, log, cp, writer)
    }

    #[test]
    fn counters_survive_rotation_through_the_checkpoint() {
        let (_home, log, cp, mut writer) = home(&[
            ("IAPEER_LIFECYCLE_LOG_MAX_BYTES", "400"),
            ("IAPEER_LIFECYCLE_LOG_KEEP", "2"),
        ]);
        for round in 0..20 {
            for i in 0..5 {
                writer.append(&wake(round * 5 + i)).unwrap();
            }
            let (folded, follower) = fold(&log, &cp);
            assert_eq!(
                folded.metrics.peers["alice"].wakes_fresh,
                (round as u64 + 1) * 5,
                "round {round}"
            );
            save(&cp, follower.position().unwrap(), &folded).unwrap();
        }
        let retained = crate::store::log::read_all(&log).unwrap().0.len();
        assert!(retained < 100, "rotation kept only {retained}");
        std::fs::write(&cp, b"{garbage").unwrap();
        let (folded, _) = fold(&log, &cp);
        assert_eq!(
            folded.metrics.peers["alice"].wakes_fresh as usize, retained,
            "rebuilt from what is left"
        );
    }

    /// A checkpoint written before version 2 (whole last lines) is read,
    /// not rebuilt: an upgrade does not fold a long log again. Activity
    /// lines are not kept as a peer's last line.
    #[test]
    fn a_version_1_checkpoint_is_read_and_activity_is_not_a_last_line() {
        let (_home, log, cp, mut writer) = home(&[]);
        writer.append(&wake(1)).unwrap();
        let (folded, follower) = fold(&log, &cp);
        let position = follower.position().unwrap();
        let line = std::fs::read_to_string(&log).unwrap();
        let v1 = serde_json::json!({
            "version": 1,
            "position": position.to_string(),
            "peers": folded.metrics.peers,
            "last": {"alice": line.trim_end()},
        });
        std::fs::write(&cp, v1.to_string()).unwrap();
        let (loaded_at, loaded) = load(&cp, None).expect("a version 1 checkpoint is read");
        assert_eq!(loaded_at, position);
        assert_eq!(loaded.metrics.peers, folded.metrics.peers);
        assert_eq!(loaded.last, folded.last);
        assert_eq!(loaded.last["alice"].ev, "wake");

        let activity =
            Record::new(1_795_236_254_900, Ev::Activity, Source::Daemon).identity("alice");
        writer.append(&activity).unwrap();
        let (after, _) = fold(&log, &cp);
        assert_eq!(
            after.last["alice"], folded.last["alice"],
            "activity is no decision"
        );
        // Version 1 asked for one identity: read whole, then kept to it.
        let (_, one) = load(&cp, Some("alice")).expect("read whole, then narrowed");
        assert_eq!(one.last, folded.last);
    }

    /// `status NAME` reads one identity's part of the checkpoint: the same
    /// as reading it whole and keeping that identity, and nothing else.
    #[test]
    fn one_identity_is_read_as_the_whole_says_it() {
        let (_home, log, cp, mut writer) = home(&[]);
        for (i, who) in ["alice", "bob", "alice", "carol"].into_iter().enumerate() {
            writer.append(&wake(i as i64).identity(who)).unwrap();
        }
        let (folded, follower) = fold(&log, &cp);
        let position = follower.position().unwrap();
        save(&cp, position, &folded).unwrap();
        let (_, whole) = load(&cp, None).unwrap();
        assert_eq!(whole, folded);
        for who in ["alice", "bob", "nobody"] {
            let (at, one) = load(&cp, Some(who)).unwrap();
            assert_eq!(at, position);
            let keys: Vec<&String> = one.metrics.peers.keys().chain(one.last.keys()).collect();
            assert!(keys.iter().all(|k| *k == who), "{who}: {keys:?}");
            assert_eq!(one.metrics.peers.get(who), whole.metrics.peers.get(who));
            assert_eq!(one.last.get(who), whole.last.get(who));
        }
        assert_eq!(
            load(&cp, Some("alice")).unwrap().1.metrics.peers["alice"].wakes_fresh,
            2
        );
    }

    /// Each identity's counters and last line as status prints them.
    fn printed(shown: &Shown) -> BTreeMap<String, String> {
        let mut all = BTreeMap::new();
        for (k, v) in &shown.peers {
            all.insert(format!("{k} counters"), serde_json::to_string(v).unwrap());
        }
        for (k, v) in &shown.last {
            all.insert(format!("{k} last"), serde_json::to_string(v).unwrap());
        }
        all
    }

    /// What status prints of a checkpoint and the lines after it is what
    /// folding the whole log prints: the identities those lines are about
    /// parsed and folded again (one removed, one added, one busy), the
    /// others printed as written.
    #[test]
    fn status_prints_a_checkpoint_and_the_lines_after_it_as_the_whole_fold() {
        use crate::core::vocab::{Action, Outcome};
        let (home, log, cp, mut writer) = home(&[]);
        let who = ["alice", "bob", "carol", "eve"];
        for (i, w) in who.iter().enumerate() {
            writer.append(&wake(i as i64).identity(w)).unwrap();
            let died = Record::new(1_795_236_255_000 + i as i64, Ev::Supervise, Source::Daemon)
                .identity(w)
                .action(Action::ReapedGone);
            writer.append(&died).unwrap();
        }
        let (folded, follower) = fold(&log, &cp);
        save(&cp, follower.position().unwrap(), &folded).unwrap();
        writer.append(&wake(10).identity("alice")).unwrap();
        let removed = Record::new(1_795_236_256_000, Ev::Start, Source::Cli)
            .identity("bob")
            .outcome(Outcome::Removed);
        writer.append(&removed).unwrap();
        writer.append(&wake(11).identity("dave")).unwrap();
        let busy = Record::new(1_795_236_256_100, Ev::Activity, Source::Daemon)
            .identity("carol")
            .session("s1");
        writer.append(&busy).unwrap();

        let mut read = Vec::new();
        let shown = shown(&log, &cp, None, &mut read).expect("a checkpoint to start from");
        let whole = Shown::from(fold(&log, &home.path().join("no-checkpoint")).0);
        assert_eq!(printed(&shown), printed(&whole));
        assert!(!shown.peers.contains_key("bob"), "removed");
        assert!(matches!(shown.peers["eve"], Kept::Written(_)), "untouched");
        assert!(
            matches!(shown.peers["alice"], Kept::Folded(_)),
            "woken since"
        );
        assert_eq!(shown.peers["alice"].value().wakes_fresh, 2);
        for one in who.into_iter().chain(["dave", "nobody"]) {
            let narrowed = shown_one(&log, &cp, one);
            let expected: BTreeMap<String, String> = printed(&whole)
                .into_iter()
                .filter(|(k, _)| k.split(' ').next() == Some(one))
                .collect();
            assert_eq!(narrowed, expected, "{one}");
        }
    }

    fn shown_one(log: &Path, cp: &Path, who: &str) -> BTreeMap<String, String> {
        printed(&shown(log, cp, Some(who), &mut Vec::new()).unwrap())
    }

    /// A checkpoint an older build wrote holds less than this one writes:
    /// status then prints it as this build writes it, not as it is.
    #[test]
    fn an_older_checkpoint_is_printed_as_this_build_writes_it() {
        let (_home, log, cp, mut writer) = home(&[]);
        writer.append(&wake(1)).unwrap();
        let (folded, follower) = fold(&log, &cp);
        let mut counters = serde_json::to_value(&folded.metrics.peers).unwrap();
        counters["alice"].as_object_mut().unwrap().remove("topic");
        let v2 = serde_json::json!({
            "version": 2,
            "position": follower.position().unwrap().to_string(),
            "peers": counters,
            "last": folded.last,
        });
        std::fs::write(&cp, v2.to_string()).unwrap();
        let mut read = Vec::new();
        let shown = shown(&log, &cp, None, &mut read).expect("a version 2 checkpoint is read");
        assert!(matches!(shown.peers["alice"], Kept::Folded(_)));
        let printed = serde_json::to_string(&shown.peers["alice"]).unwrap();
        assert!(printed.contains(r#""topic":null"#), "{printed}");
    }

    /// Counters that do not read (a checkpoint changed by hand) show as
    /// none rather than fail the look.
    #[test]
    fn a_kept_value_that_does_not_read_reads_as_none() {
        let bad = RawValue::from_string(r#"{"deaths":"many"}"#.to_owned()).unwrap();
        let kept: Kept<PeerMetrics> = Kept::Written(&bad);
        assert_eq!(*kept.value(), PeerMetrics::default());
        assert_eq!(kept.into_value(), PeerMetrics::default());
    }

    /// A checkpoint of this version is printed as it is written, so what
    /// this build writes of the counters and of a last line is fixed for
    /// it. When this fails, a field was added, renamed or removed: bump
    /// `VERSION` (an older checkpoint is then printed as this build
    /// writes it), then update the text here. The values are spelled out
    /// field by field, so a new field does not compile until it is here.
    #[test]
    fn what_a_checkpoint_holds_is_fixed_by_its_version() {
        use crate::core::metrics::{CrashedTask, Histogram, LastActivity, LastEnd, LastEvent};
        let text = |s: &str| Some(s.to_owned());
        let counters = PeerMetrics {
            wakes_fresh: 1,
            wakes_resume: 2,
            refusals: BTreeMap::from([("stopped".to_owned(), 3)]),
            parks_idle: 4,
            parks_max_age: 5,
            parks_stop: 6,
            deaths: 7,
            eager_relaunches: 8,
            launch_failures: 9,
            last_event: Some(LastEvent {
                kind: "wake".into(),
                ts: "t1".into(),
                summary: "s1".into(),
            }),
            latency_ms: Some(10),
            idle_seconds: Some(11),
            crashed_task: Some(CrashedTask {
                task: "k".into(),
                ts: "t2".into(),
            }),
            activity: Some(LastActivity {
                state: "working".into(),
                since: "t3".into(),
                session: "s".into(),
                reason: text("r"),
                until: text("u"),
            }),
            bringup: Histogram {
                buckets: vec![1],
                count: 1,
                sum_ms: 12,
            },
            lifetime: Histogram {
                buckets: vec![2],
                count: 2,
                sum_ms: 13,
            },
            session_since: text("t4"),
            last_end: Some(LastEnd {
                ts: "t5".into(),
                what: "reaped-gone".into(),
                cause: text("c"),
                exit_status: text("1"),
                last_lines: text("l"),
                reason: text("why"),
            }),
            topic: text("topic"),
        };
        let last = LastLine {
            ts: "t6".into(),
            ev: "wake".into(),
            summary: "s2".into(),
        };
        assert_eq!(VERSION, 3);
        let written = concat!(
            r#"{"wakes_fresh":1,"wakes_resume":2,"refusals":{"stopped":3},"parks_idle":4,"#,
            r#""parks_max_age":5,"parks_stop":6,"deaths":7,"eager_relaunches":8,"#,
            r#""launch_failures":9,"last_event":{"type":"wake","ts":"t1","summary":"s1"},"#,
            r#""latency_ms":10,"idle_seconds":11,"crashed_task":{"task":"k","ts":"t2"},"#,
            r#""activity":{"state":"working","since":"t3","session":"s","reason":"r","until":"u"},"#,
            r#""bringup":{"buckets":[1],"count":1,"sum_ms":12},"#,
            r#""lifetime":{"buckets":[2],"count":2,"sum_ms":13},"session_since":"t4","#,
            r#""last_end":{"ts":"t5","what":"reaped-gone","cause":"c","exit_status":"1","#,
            r#""last_lines":"l","reason":"why"},"topic":"topic"}"#,
        );
        assert_eq!(serde_json::to_string(&counters).unwrap(), written);
        assert_eq!(
            serde_json::to_string(&last).unwrap(),
            r#"{"ts":"t6","ev":"wake","summary":"s2"}"#
        );
    }
}
