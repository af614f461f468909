//! The task queue (DESIGN §2, §13): `state/queue/<id>/<ts>-<n>.task`, one
//! file per task waiting for a busy peer, holding its text exactly (an
//! optional first line `topic: <topic>`). Files sort in the order they were
//! queued; scripts may drop their own (written elsewhere, renamed in).
//!
//! A delivery is journaled by the file's name: the head task is renamed
//! `<name>.delivering` before it is typed, and removed once the runtime's
//! record shows it taken. A delivery cut short (the daemon killed) leaves
//! the `.delivering` file, which the next delivery settles first: taken by
//! then, or back in the queue. So no task is lost, and none is typed twice.
//!
//! Every file here is untrusted input: opened without following a symlink,
//! checked on the open file (a regular file of this user's, at most
//! [`TASK_MAX`] bytes of UTF-8), and a bad one is an error naming it, never
//! taken and never removed.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::core::clock::EpochMs;
use crate::core::error::{Error, Result};
use crate::core::identity::Identity;
use crate::store::fsutil;

/// The longest task text.
pub const TASK_MAX: u64 = 256 * 1024;
const QUEUED: &str = "task";
const DELIVERING: &str = "delivering";

/// One task in a queue.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Queued {
    /// Its file's name without the extension: its place in the queue.
    pub name: String,
    pub topic: Option<String>,
    pub text: String,
    /// Typed in, its delivery not yet settled (`.delivering`).
    pub delivering: bool,
}

/// The queues under `state/queue/`.
#[derive(Clone, Debug)]
pub(crate) struct Queues {
    dir: PathBuf,
}

impl Queues {
    pub(crate) fn new(state: &Path) -> Self {
        Queues {
            dir: state.join("queue"),
        }
    }

    pub(crate) fn dir_of(&self, id: &Identity) -> PathBuf {
        self.dir.join(id.as_str())
    }

    /// Queues `text` for `id`, behind every task already queued; returns
    /// its name.
    pub(crate) fn add(
        &self,
        id: &Identity,
        text: &str,
        topic: Option<&str>,
        now: EpochMs,
    ) -> Result<String> {
        let dir = self.dir_of(id);
        let mut body = String::new();
        if let Some(t) = topic.filter(|t| !t.trim().is_empty()) {
            body.push_str(&format!("topic: {}\n", t.trim()));
        }
        body.push_str(text);
        if body.len() as u64 > TASK_MAX {
            return Err(Error::input(
                format!("the task for {id}"),
                format!(
                    "it is {} bytes; a queued task is at most {TASK_MAX}",
                    body.len()
                ),
                "send a shorter task, or point the agent at a file",
            ));
        }
        crate::store::config::ensure_private_dir(&self.dir, true)?;
        crate::store::config::ensure_private_dir(&dir, true)?;
        let temp = dir.join(format!(".add.{}.{now}", std::process::id()));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&temp)
                .map_err(|e| Error::io(&temp, "create", e))?;
            f.write_all(body.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io(&temp, "write", e))?;
            // A name no other task has: a link never replaces a file, so
            // two processes queueing in the same millisecond both land.
            let max_seq = self.last_seq(id, now);
            for n in max_seq + 1..max_seq + 10_000 {
                let name = format!("{now:013}-{n:04}");
                let path = dir.join(format!("{name}.{QUEUED}"));
                match fs::hard_link(&temp, &path) {
                    Ok(()) => {
                        File::open(&dir)
                            .and_then(|d| d.sync_all())
                            .map_err(|e| Error::io(&dir, "sync", e))?;
                        return Ok(name);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(Error::io(&path, "create", e)),
                }
            }
            Err(Error::failed(
                dir.display().to_string(),
                "no free name for the task",
                "remove what is not a task from the folder",
            ))
        })();
        let _ = fs::remove_file(&temp);
        result
    }

    /// The highest sequence number queued at `now`, so a new task goes
    /// behind the others of the same millisecond.
    fn last_seq(&self, id: &Identity, now: EpochMs) -> u32 {
        let prefix = format!("{now:013}-");
        self.names(id)
            .iter()
            .filter_map(|(n, _)| n.strip_prefix(&prefix)?.parse().ok())
            .max()
            .unwrap_or(0)
    }

    /// Every task file's name and whether it is being delivered, in queue
    /// order (`.delivering` first: it was the head).
    fn names(&self, id: &Identity) -> Vec<(String, bool)> {
        let Ok(entries) = fs::read_dir(self.dir_of(id)) else {
            return Vec::new();
        };
        let mut names: Vec<(String, bool)> = entries
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().into_string().ok()?;
                let (stem, ext) = file.rsplit_once('.')?;
                if stem.is_empty() || stem.starts_with('.') {
                    return None;
                }
                match ext {
                    QUEUED => Some((stem.to_owned(), false)),
                    DELIVERING => Some((stem.to_owned(), true)),
                    _ => None,
                }
            })
            .collect();
        names.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        names
    }

    /// Whether anything waits in `id`'s queue.
    pub(crate) fn has_tasks(&self, id: &Identity) -> bool {
        self.waiting(id) > 0
    }

    /// How many tasks wait in `id`'s queue.
    pub(crate) fn waiting(&self, id: &Identity) -> usize {
        self.names(id).len()
    }

    /// The tasks in `id`'s queue, in order; a file that cannot be a task
    /// is an error in its place.
    pub(crate) fn list(&self, id: &Identity) -> Vec<Result<Queued>> {
        self.read(id).collect()
    }

    /// The first file in `id`'s queue that reads as a task, the files
    /// behind it left unread.
    pub(crate) fn first(&self, id: &Identity) -> Option<Queued> {
        self.read(id).find_map(Result::ok)
    }

    fn read(&self, id: &Identity) -> impl Iterator<Item = Result<Queued>> + '_ {
        let id = id.clone();
        self.names(&id).into_iter().map(move |(name, delivering)| {
            let path = self.path(&id, &name, delivering);
            let (topic, text) = read_task(&path)?;
            Ok(Queued {
                name,
                topic,
                text,
                delivering,
            })
        })
    }

    fn path(&self, id: &Identity, name: &str, delivering: bool) -> PathBuf {
        let ext = if delivering { DELIVERING } else { QUEUED };
        self.dir_of(id).join(format!("{name}.{ext}"))
    }

    /// Marks the task as being delivered (before it is typed) into the
    /// conversation `to`, when it is known: a delivery cut short is
    /// settled by that conversation's record, even once its session has
    /// ended.
    pub(crate) fn start(&self, id: &Identity, name: &str, to: Option<&str>) -> Result<()> {
        let target = self.target_path(id, name);
        match to {
            Some(conversation) => fsutil::write_atomic(&target, conversation.as_bytes())?,
            None => {
                remove_if_there(&target)?;
            }
        }
        fsutil::rename_durable(&self.path(id, name, false), &self.path(id, name, true))
    }

    /// The conversation a delivery under way was typed into, if known.
    pub(crate) fn target(&self, id: &Identity, name: &str) -> Option<String> {
        let text = fs::read_to_string(self.target_path(id, name)).ok()?;
        let id = text.trim();
        crate::core::identity::is_conversation_id(id).then(|| id.to_owned())
    }

    fn target_path(&self, id: &Identity, name: &str) -> PathBuf {
        self.dir_of(id).join(format!(".{name}.to"))
    }

    /// Puts a task whose delivery did not happen back in the queue.
    pub(crate) fn put_back(&self, id: &Identity, name: &str) -> Result<()> {
        fsutil::rename_durable(&self.path(id, name, true), &self.path(id, name, false))?;
        remove_if_there(&self.target_path(id, name)).map(|_| ())
    }

    /// Puts back a task typed into `session` that its record never showed
    /// taken, saying so beside it (`.<name>.unconfirmed`): the next session
    /// gets it, but it does not wake the peer by itself — it may have been
    /// taken after all, and a park then a wake would type it again, park
    /// after park.
    pub(crate) fn put_back_unconfirmed(
        &self,
        id: &Identity,
        name: &str,
        session: &str,
    ) -> Result<()> {
        fsutil::write_atomic(&self.unconfirmed_path(id, name), session.as_bytes())?;
        self.put_back(id, name)
    }

    /// Whether the task was typed once and never confirmed.
    pub(crate) fn unconfirmed(&self, id: &Identity, name: &str) -> bool {
        self.unconfirmed_path(id, name).exists()
    }

    fn unconfirmed_path(&self, id: &Identity, name: &str) -> PathBuf {
        self.dir_of(id).join(format!(".{name}.unconfirmed"))
    }

    /// A delivered task leaves the queue.
    pub(crate) fn done(&self, id: &Identity, name: &str) -> Result<()> {
        let path = self.path(id, name, true);
        fs::remove_file(&path).map_err(|e| Error::io(&path, "remove", e))?;
        remove_if_there(&self.target_path(id, name))?;
        remove_if_there(&self.unconfirmed_path(id, name))?;
        let dir = self.dir_of(id);
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(&dir, "sync", e))
    }

    /// `iapeer queue rm`: removes a waiting task; false if there is none
    /// of that name. A task being delivered is not removed.
    pub(crate) fn remove(&self, id: &Identity, name: &str) -> Result<bool> {
        if self.path(id, name, true).exists() {
            return Err(Error::input(
                format!("task {name} of {id}"),
                "it is being delivered now",
                "look again with `iapeer queue`",
            ));
        }
        let removed = remove_if_there(&self.path(id, name, false))?;
        remove_if_there(&self.unconfirmed_path(id, name))?;
        Ok(removed)
    }

    /// The peers with a queue folder.
    pub(crate) fn peers(&self) -> Vec<Identity> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut ids: Vec<Identity> = entries
            .flatten()
            .filter_map(|e| Identity::parse(e.file_name().to_str()?).ok())
            .collect();
        ids.sort();
        ids
    }
}

/// Removes `path`; false if it was not there.
fn remove_if_there(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, "remove", e)),
    }
}

/// A task file: its topic line, if any, and its text.
fn read_task(path: &Path) -> Result<(Option<String>, String)> {
    let mut f = OpenOptions::new()
        .read(true)
        // O_NONBLOCK: a FIFO planted here must not hang the open.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Error::unsafe_file(path, "it is a symlink, not a task"),
            _ => Error::io(path, "read", e),
        })?;
    let meta = f.metadata().map_err(|e| Error::io(path, "read", e))?;
    if !meta.is_file() {
        return Err(Error::unsafe_file(path, "it is not a regular file"));
    }
    fsutil::check_owner(path, meta.uid())?;
    if meta.len() > TASK_MAX {
        return Err(Error::unsafe_file(
            path,
            format!("it is {} bytes; a task is at most {TASK_MAX}", meta.len()),
        ));
    }
    let mut bytes = Vec::new();
    Read::by_ref(&mut f)
        .take(TASK_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, "read", e))?;
    let text =
        String::from_utf8(bytes).map_err(|_| Error::unsafe_file(path, "it is not UTF-8 text"))?;
    Ok(match text.strip_prefix("topic: ") {
        Some(rest) => {
            let (topic, task) = rest.split_once('\n').unwrap_or((rest, ""));
            (Some(topic.trim().to_owned()), task.to_owned())
        }
        None => (None, text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Identity {
        Identity::parse(s).unwrap()
    }

    #[test]
    fn tasks_come_out_in_the_order_they_went_in_with_their_topics() {
        let home = assert_fs::TempDir::new().unwrap();
        let q = Queues::new(home.path());
        let a = id("a");
        // Three in one millisecond, one after: each behind the one before.
        let n1 = q.add(&a, "first", None, 1000).unwrap();
        let n2 = q
            .add(&a, "second\nline two", Some("billing"), 1000)
            .unwrap();
        let n3 = q.add(&a, "third", None, 1000).unwrap();
        let n4 = q.add(&a, "fourth", None, 999).unwrap();
        assert!(n1 < n2 && n2 < n3, "{n1} {n2} {n3}");
        let listed: Vec<Queued> = q.list(&a).into_iter().map(Result::unwrap).collect();
        let texts: Vec<&str> = listed.iter().map(|t| t.text.as_str()).collect();
        // Names sort by time first: the clock decides, then the sequence.
        assert_eq!(texts, ["fourth", "first", "second\nline two", "third"]);
        assert_eq!(listed[2].topic.as_deref(), Some("billing"));
        assert_eq!(n4, "0000000000999-0001");
    }

    #[test]
    fn an_unconfirmed_delivery_is_said_beside_its_task_until_it_leaves() {
        let home = assert_fs::TempDir::new().unwrap();
        let q = Queues::new(home.path());
        let a = id("a");
        let first = q.add(&a, "one", None, 1).unwrap();
        let second = q.add(&a, "two", None, 2).unwrap();
        for name in [&first, &second] {
            q.start(&a, name, None).unwrap();
            q.put_back_unconfirmed(&a, name, "session-1").unwrap();
            assert!(q.unconfirmed(&a, name));
        }
        // Still queued, in order, and nothing else reads as a task.
        let names: Vec<String> = q.list(&a).into_iter().map(|t| t.unwrap().name).collect();
        assert_eq!(names, [first.clone(), second.clone()]);
        // Delivered in a later session: gone with its task.
        q.start(&a, &first, None).unwrap();
        q.done(&a, &first).unwrap();
        assert!(!q.unconfirmed(&a, &first));
        // Removed by `queue rm`: gone too.
        assert!(q.remove(&a, &second).unwrap());
        assert!(!q.unconfirmed(&a, &second));
        assert_eq!(fs::read_dir(q.dir_of(&a)).unwrap().count(), 0);
    }

    #[test]
    fn a_delivery_is_journaled_by_name_and_settles_either_way() {
        let home = assert_fs::TempDir::new().unwrap();
        let q = Queues::new(home.path());
        let a = id("a");
        let first = q.add(&a, "one", None, 1).unwrap();
        q.add(&a, "two", None, 2).unwrap();
        q.start(&a, &first, Some("00000000-0000-4000-8000-000000000001"))
            .unwrap();
        assert_eq!(
            q.target(&a, &first).as_deref(),
            Some("00000000-0000-4000-8000-000000000001")
        );
        let head = q.list(&a).remove(0).unwrap();
        assert!(
            head.delivering && head.name == first,
            "the one being delivered leads"
        );
        assert!(q.remove(&a, &first).is_err(), "not removed mid-delivery");
        q.put_back(&a, &first).unwrap();
        assert!(!q.list(&a)[0].as_ref().unwrap().delivering);
        assert_eq!(q.target(&a, &first), None, "settled: no target left");
        q.start(&a, &first, None).unwrap();
        q.done(&a, &first).unwrap();
        let left: Vec<String> = q.list(&a).into_iter().map(|t| t.unwrap().text).collect();
        assert_eq!(left, ["two"]);
        assert!(q.has_tasks(&a));
    }

    #[test]
    fn a_file_that_cannot_be_a_task_is_an_error_naming_it_and_stays() {
        use std::os::unix::fs::PermissionsExt;
        let home = assert_fs::TempDir::new().unwrap();
        let q = Queues::new(home.path());
        let a = id("a");
        q.add(&a, "fine", None, 1).unwrap();
        let dir = q.dir_of(&a);
        fs::write(dir.join("0000000000002-0001.task"), [0xff, 0xfe]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("0000000000003-0001.task")).unwrap();
        fs::write(
            dir.join("0000000000004-0001.task"),
            vec![b'x'; TASK_MAX as usize + 1],
        )
        .unwrap();
        fs::write(dir.join("notes.txt"), "not a task").unwrap();
        fs::set_permissions(dir.join("notes.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        let listed = q.list(&a);
        assert_eq!(listed.len(), 4, "only .task files are tasks");
        assert_eq!(listed[0].as_ref().unwrap().text, "fine");
        for bad in &listed[1..] {
            let e = bad.as_ref().unwrap_err().to_string();
            assert!(e.contains(dir.to_str().unwrap()), "{e}");
        }
        assert!(
            dir.join("0000000000003-0001.task")
                .symlink_metadata()
                .is_ok(),
            "left"
        );
        // The first that reads as a task, past the ones that do not.
        assert_eq!(q.first(&a).unwrap().text, "fine");
        for f in fs::read_dir(&dir).unwrap().flatten() {
            if fs::read(f.path()).is_ok_and(|b| b == b"fine") {
                fs::remove_file(f.path()).unwrap();
            }
        }
        assert!(q.first(&a).is_none(), "nothing there reads as a task");
        q.add(&a, "late", None, 9).unwrap();
        assert_eq!(q.first(&a).unwrap().text, "late");
        let big = "y".repeat(TASK_MAX as usize + 1);
        assert!(q.add(&a, &big, None, 5).is_err(), "too long to queue");
    }
}
