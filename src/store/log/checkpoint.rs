//! The metrics checkpoint (`state/metrics.json`): the counters folded from
//! the log, written atomically together with the log position they cover.
//! Counters are rebuilt from the checkpoint and the lines after it, so they
//! survive a daemon restart and the rotation of old lines alike, and
//! nobody re-reads the whole history to show them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::core::error::Result;
use crate::core::metrics::{Folded, LastLine, Metrics, PeerMetrics};
use crate::core::record::Entry;
use crate::store::fsutil;

use super::follow::{Follower, Position};

/// 2: the last line about each identity kept as what status shows of it
/// (1 kept the whole line, and every read parsed it again).
const VERSION: u32 = 2;
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

/// Reads a checkpoint, whole or only what is about one identity; `None`
/// (and a warning) when it is missing, not ours or damaged: the fold then
/// starts from the oldest retained line.
pub(crate) fn load(path: &Path, only: Option<&str>) -> Option<(Position, Folded)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_BYTES {
        tracing::warn!("{}: not a checkpoint; ignored", path.display());
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    if let Some(name) = only {
        if let Some(one) = load_one(&bytes, name) {
            return Some(one);
        }
    }
    let (position, mut folded) = load_whole(path, &bytes)?;
    if let Some(name) = only {
        folded.metrics.peers.retain(|k, _| k == name);
        folded.last.retain(|k, _| k == name);
    }
    Some((position, folded))
}

/// One identity's part of a version 2 checkpoint, the others' only
/// scanned over: what `status NAME` needs of a fleet's checkpoint, at a
/// fraction of reading it all. `None` when it cannot be read that way (an
/// older version, a name written with escapes): it is then read whole.
fn load_one(bytes: &[u8], name: &str) -> Option<(Position, Folded)> {
    use serde_json::value::RawValue;
    #[derive(Deserialize)]
    struct Raw<'a> {
        version: u32,
        position: String,
        #[serde(borrow)]
        peers: std::collections::HashMap<&'a str, &'a RawValue>,
        #[serde(borrow)]
        last: std::collections::HashMap<&'a str, &'a RawValue>,
    }
    let raw: Raw = serde_json::from_slice(bytes).ok()?;
    if raw.version != VERSION {
        return None;
    }
    let position: Position = raw.position.parse().ok()?;
    let mut folded = Folded::default();
    if let Some(m) = raw.peers.get(name) {
        let m: PeerMetrics = serde_json::from_str(m.get()).ok()?;
        folded.metrics.peers.insert(name.to_owned(), m);
    }
    if let Some(l) = raw.last.get(name) {
        let l: LastLine = serde_json::from_str(l.get()).ok()?;
        folded.last.insert(name.to_owned(), l);
    }
    Some((position, folded))
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
pub(crate) fn fold_rest(folded: &mut Folded, follower: &mut Follower) {
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
}
