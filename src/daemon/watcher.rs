//! File events as hints. A change under `state/lifecycle/`, `peers/` or
//! `pools/`
//! makes the daemon re-read that identity (or pool) from disk and decide; the events
//! themselves are never trusted for content (they can be coalesced,
//! reordered or dropped). An overflow asks for a full pass, and the tick
//! catches anything missed.

use std::path::Path;
use std::sync::mpsc::Sender;

use notify::event::EventKind;
use notify::{RecursiveMode, Watcher};

use super::Event;
use crate::core::error::{Error, Result};
use crate::core::identity::Identity;

pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileWatch")
    }
}

pub fn start(paths: &crate::store::config::Paths, events: Sender<Event>) -> Result<FileWatch> {
    let (lifecycle, peers, pools, logs) =
        (&paths.lifecycle, &paths.peers, &paths.pools, &paths.log_dir);
    let lifecycle_dir = lifecycle.to_path_buf();
    let peers_dir = peers.to_path_buf();
    let pools_dir = pools.to_path_buf();
    let log_dir = logs.to_path_buf();
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
            let _ = events.send(Event::Rescan);
            return;
        }
        // Opens and reads (ours included) are not changes.
        if matches!(ev.kind, EventKind::Access(_)) {
            return;
        }
        for path in &ev.paths {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(parent) = path.parent() else {
                continue;
            };
            if parent == log_dir {
                // A decision logged (by us or by a CLI): fold it into the
                // metrics now, not at the next tick.
                if name.starts_with("lifecycle.log") && !name.ends_with(".lock") {
                    let _ = events.send(Event::Logged);
                }
            } else if parent == lifecycle_dir {
                if let Some(id) = lifecycle_identity(name) {
                    let _ = events.send(Event::Changed(id));
                }
            } else if let Some(stem) = name.strip_suffix(".json").filter(|s| !s.starts_with('.')) {
                if parent == peers_dir {
                    let _ = events.send(Event::PeerChanged(stem.to_owned()));
                } else if parent == pools_dir {
                    let _ = events.send(Event::PoolChanged(stem.to_owned()));
                }
            }
        }
    })
    .map_err(|e| watch_error(lifecycle, &e))?;
    watcher
        .watch(lifecycle, RecursiveMode::NonRecursive)
        .map_err(|e| watch_error(lifecycle, &e))?;
    watcher
        .watch(peers, RecursiveMode::NonRecursive)
        .map_err(|e| watch_error(peers, &e))?;
    watcher
        .watch(pools, RecursiveMode::NonRecursive)
        .map_err(|e| watch_error(pools, &e))?;
    watcher
        .watch(logs, RecursiveMode::NonRecursive)
        .map_err(|e| watch_error(logs, &e))?;
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
}
