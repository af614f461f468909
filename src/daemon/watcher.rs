//! File events as hints. A change under `state/lifecycle/`, `peers/` or
//! `pools/`, or a task file arriving in (or leaving) a queue under
//! `state/queue/`, makes the daemon re-read that identity (or pool) from
//! disk and decide; the events themselves are never trusted for content
//! (they can be coalesced, reordered or dropped). An overflow asks for a
//! full pass, and the tick catches anything missed.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use notify::event::EventKind;
use notify::{RecursiveMode, Watcher};

use super::Event;
use crate::core::error::{Error, Result};
use crate::core::identity::Identity;
use crate::store::log::LogChanges;

pub(crate) struct FileWatch {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileWatch")
    }
}

/// The folders the daemon watches.
#[derive(Clone, Debug)]
struct Dirs {
    lifecycle: PathBuf,
    queue: PathBuf,
    peers: PathBuf,
    pools: PathBuf,
    logs: PathBuf,
}

/// What a change to one path hints at.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Hint {
    /// A decision logged (by us or by a CLI).
    Logged,
    /// An identity's state file.
    Changed(Identity),
    Peer(String),
    Pool,
}

/// What a changed path means, if anything: pure, so the rules are a table.
fn classify(path: &Path, dirs: &Dirs) -> Option<Hint> {
    let name = path.file_name()?.to_str()?;
    let parent = path.parent()?;
    if parent == dirs.logs {
        return (name.starts_with("lifecycle.log") && !name.ends_with(".lock"))
            .then_some(Hint::Logged);
    }
    if parent == dirs.lifecycle {
        return lifecycle_identity(name).map(Hint::Changed);
    }
    if parent == dirs.queue {
        // A peer's queue folder, new: a script may rename a task into it
        // before its own watch is in place.
        return Identity::parse(name).ok().map(Hint::Changed);
    }
    if parent.parent() == Some(dirs.queue.as_path()) {
        // `state/queue/<id>/<stem>.task`; a script's temp file is not news.
        if !name.ends_with(".task") || name.starts_with('.') {
            return None;
        }
        return Identity::parse(parent.file_name()?.to_str()?)
            .ok()
            .map(Hint::Changed);
    }
    let stem = name.strip_suffix(".json").filter(|s| !s.starts_with('.'))?;
    if parent == dirs.peers {
        Some(Hint::Peer(stem.to_owned()))
    } else if parent == dirs.pools {
        Some(Hint::Pool)
    } else {
        None
    }
}

/// Watches the state, definition and log folders. Every hint goes to the
/// daemon's loop; a logged line also wakes the log's followers (the
/// dashboard's event streams), so one watch serves both.
pub(crate) fn start(
    paths: &crate::store::config::Paths,
    events: Sender<Event>,
    logged: Arc<LogChanges>,
) -> Result<FileWatch> {
    let dirs = Dirs {
        lifecycle: paths.lifecycle.clone(),
        queue: paths.queue.clone(),
        peers: paths.peers.clone(),
        pools: paths.pools.clone(),
        logs: paths.log_dir.clone(),
    };
    let watched = dirs.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let ev = match res {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!("file watcher: {e}; running a full pass");
                let _ = events.send(Event::Rescan);
                return;
            }
        };
        if ev.need_rescan() {
            logged.bump();
            let _ = events.send(Event::Rescan);
            return;
        }
        // Opens and reads (ours included) are not changes.
        if matches!(ev.kind, EventKind::Access(_)) {
            return;
        }
        for hint in ev.paths.iter().filter_map(|p| classify(p, &watched)) {
            let event = match hint {
                // Folded into the metrics now, not at the next tick.
                Hint::Logged => {
                    logged.bump();
                    Event::Logged
                }
                Hint::Changed(id) => Event::Changed(id),
                Hint::Peer(stem) => Event::PeerChanged(stem),
                Hint::Pool => Event::PoolChanged,
            };
            let _ = events.send(event);
        }
    })
    .map_err(|e| watch_error(&dirs.lifecycle, &e))?;
    for dir in [&dirs.lifecycle, &dirs.peers, &dirs.pools, &dirs.logs] {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| watch_error(dir, &e))?;
    }
    // One watch per peer's queue folder: past the inotify limit, a task
    // dropped there is still found, by the next tick.
    if let Err(e) = watcher.watch(&dirs.queue, RecursiveMode::Recursive) {
        tracing::warn!(
            "{}; tasks dropped into a queue are seen at the next tick",
            watch_error(&dirs.queue, &e)
        );
    }
    Ok(FileWatch { _watcher: watcher })
}

/// `alice.new-eager` → alice. Temp files (`.alice.session.tmp…`) and the
/// lock file (opened by every pass) are not news.
fn lifecycle_identity(name: &str) -> Option<Identity> {
    let (stem, ext) = name.split_once('.')?;
    if ext == "lock" || ext.contains('.') {
        return None;
    }
    Identity::parse(stem).ok()
}

fn watch_error(path: &Path, e: &notify::Error) -> Error {
    Error::failed(
        format!("watching {}", path.display()),
        e.to_string(),
        "check the inotify limits (fs.inotify.max_user_watches / max_user_instances)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_identity_files_are_news() {
        assert_eq!(
            lifecycle_identity("alice.new-eager").unwrap().as_str(),
            "alice"
        );
        assert_eq!(
            lifecycle_identity("alice.session").unwrap().as_str(),
            "alice"
        );
        assert!(lifecycle_identity("alice.lock").is_none());
        assert!(lifecycle_identity(".alice.session.tmp.12.0").is_none());
        assert!(lifecycle_identity("junk").is_none());
    }

    #[test]
    fn each_changed_path_hints_at_what_it_names() {
        let dirs = Dirs {
            lifecycle: "/h/state/lifecycle".into(),
            queue: "/h/state/queue".into(),
            peers: "/h/peers".into(),
            pools: "/h/pools".into(),
            logs: "/h/logs/iapeer".into(),
        };
        let id = |s: &str| Identity::parse(s).unwrap();
        let rows: &[(&str, Option<Hint>)] = &[
            (
                "/h/state/lifecycle/alice.new-eager",
                Some(Hint::Changed(id("alice"))),
            ),
            (
                "/h/state/lifecycle/alice.stopped",
                Some(Hint::Changed(id("alice"))),
            ),
            ("/h/state/lifecycle/alice.lock", None),
            ("/h/state/lifecycle/.alice.session.tmp.1.2", None),
            (
                "/h/state/queue/alice/1764640000000-0001.task",
                Some(Hint::Changed(id("alice"))),
            ),
            (
                "/h/state/queue/alice/100-script.task",
                Some(Hint::Changed(id("alice"))),
            ),
            ("/h/state/queue/alice/.tmp.task", None),
            ("/h/state/queue/alice/1764640000000-0001.delivering", None),
            ("/h/state/queue/Bad Name/1.task", None),
            ("/h/state/queue/alice", Some(Hint::Changed(id("alice")))),
            ("/h/state/queue/.tmp", None),
            ("/h/peers/alice.json", Some(Hint::Peer("alice".into()))),
            ("/h/peers/.alice.json.tmp", None),
            ("/h/peers/notes.txt", None),
            ("/h/pools/ccl.json", Some(Hint::Pool)),
            ("/h/logs/iapeer/lifecycle.log", Some(Hint::Logged)),
            ("/h/logs/iapeer/lifecycle.log.3", Some(Hint::Logged)),
            ("/h/logs/iapeer/lifecycle.log.lock", None),
            ("/h/logs/iapeer/other.log", None),
            ("/elsewhere/alice.json", None),
            ("/", None),
        ];
        for (path, want) in rows {
            assert_eq!(&classify(Path::new(path), &dirs), want, "{path}");
        }
    }
}
