//! The marker store: every file under `state/lifecycle/` (DESIGN §2).
//!
//! Writers are exact and atomic (temp file in the same folder, fsync, rename,
//! fsync the folder), so a crash leaves the old file or the new one. Readers
//! are forgiving about content (an empty `touch`-made marker counts, garbage
//! `.deaths` reads as no deaths) and strict about what they open: every file
//! is opened relative to the directory's descriptor with `O_NOFOLLOW`, and a
//! symlink, a non-regular file or a file owned by another user is refused,
//! never followed.

mod io;
mod lock;

use io::{check_stat, Contents};
pub(crate) use lock::{LockFailure, WakeLock};

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, Mode};
use nix::unistd::{self, UnlinkatFlags};

use crate::core::clock;
use crate::core::clock::EpochMs;
use crate::core::crash_ring;
use crate::core::crash_ring::CrashRing;
use crate::core::error::{Error, Result};
use crate::core::identity::Identity;
use crate::core::marker::{
    check_topic, garbage_deaths, parse_deaths, parse_flag, parse_topic, Deaths, FlagMarker,
    TOPIC_MAX,
};
use crate::core::session::SessionRecord;
use crate::store::fsutil::check_owner;

const FLAG_MAX: usize = 4096;
const DEATHS_MAX: usize = 64 * 1024;
const SESSION_MAX: usize = 1024 * 1024;

/// Every kind of file kept per identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Marker {
    Session,
    IdleReaped,
    NewEager,
    Deaths,
    Topic,
    Stopped,
    FreshNext,
    Failed,
    Lock,
}

impl Marker {
    pub(crate) const ALL: [Marker; 9] = [
        Marker::Session,
        Marker::IdleReaped,
        Marker::NewEager,
        Marker::Deaths,
        Marker::Topic,
        Marker::Stopped,
        Marker::FreshNext,
        Marker::Failed,
        Marker::Lock,
    ];

    pub(crate) fn ext(self) -> &'static str {
        match self {
            Marker::Session => "session",
            Marker::IdleReaped => "idle-reaped",
            Marker::NewEager => "new-eager",
            Marker::Deaths => "deaths",
            Marker::Topic => "topic",
            Marker::Stopped => "stopped",
            Marker::FreshNext => "fresh-next",
            Marker::Failed => "failed",
            Marker::Lock => "lock",
        }
    }

    fn from_ext(ext: &str) -> Option<Marker> {
        Marker::ALL.into_iter().find(|m| m.ext() == ext)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// The extension of every kind of file kept per identity (`.session`,
/// `.idle-reaped`, …), for the documentation's checks.
pub fn extensions() -> Vec<&'static str> {
    Marker::ALL.iter().map(|m| m.ext()).collect()
}

/// The boolean markers: presence is what counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flag {
    IdleReaped,
    NewEager,
    Stopped,
    FreshNext,
    Failed,
}

impl Flag {
    pub(crate) fn marker(self) -> Marker {
        match self {
            Flag::IdleReaped => Marker::IdleReaped,
            Flag::NewEager => Marker::NewEager,
            Flag::Stopped => Marker::Stopped,
            Flag::FreshNext => Marker::FreshNext,
            Flag::Failed => Marker::Failed,
        }
    }
}

/// A flag marker removed by `take_flag`, byte for byte.
#[derive(Clone, Debug)]
pub(crate) struct TakenFlag {
    flag: Flag,
    bytes: Vec<u8>,
}

/// Which markers exist for one identity, from one directory listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Present(u16);

impl Present {
    pub(crate) fn has(self, m: Marker) -> bool {
        self.0 & m.bit() != 0
    }

    /// Any state at all: the lock file alone holds none.
    pub(crate) fn any_state(self) -> bool {
        self.0 & !Marker::Lock.bit() != 0
    }

    fn add(&mut self, m: Marker) {
        self.0 |= m.bit();
    }
}

/// The `state/lifecycle/` directory, held open by descriptor.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    dir: OwnedFd,
    /// Where this home's tmux sockets are: a record naming a socket
    /// anywhere else is not this home's (a copied home, a planted file).
    run: Option<PathBuf>,
    /// `dev:ino` of the directory, as opened: written into each session
    /// record, so a record copied with the home is known for the
    /// original's.
    identity: String,
}

impl StateDir {
    /// Opens the directory, refusing a symlink (it could point anywhere),
    /// a non-directory or one owned by someone else.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let dir = fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => Error::unsafe_file(
                path,
                "it is a symlink or not a directory; iapeer keeps its state in a real directory",
            ),
            e => Error::io(path, "open state directory", e.into()),
        })?;
        let st = stat::fstat(&dir).map_err(|e| Error::io(path, "inspect", e.into()))?;
        check_owner(path, st.st_uid)?;
        Ok(StateDir {
            path: path.to_path_buf(),
            dir,
            run: None,
            identity: format!("{}:{}", st.st_dev, st.st_ino),
        })
    }

    /// Whether the directory at this path is still the one held open: one
    /// replaced under a running process (moved away, a new one made) must
    /// not be acted on through the old handle while others use the new.
    pub(crate) fn is_current(&self) -> Result<()> {
        let held =
            stat::fstat(&self.dir).map_err(|e| Error::io(&self.path, "inspect", e.into()))?;
        let now =
            stat::lstat(&self.path).map_err(|e| Error::io(&self.path, "inspect", e.into()))?;
        if (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino) {
            return Err(Error::unsafe_file(
                &self.path,
                "it was replaced while the daemon held the one before; the daemon stops acting on \
                 any peer until it is restarted (`systemctl --user restart iapeer`, or Ctrl-C and \
                 `iapeer daemon`)",
            ));
        }
        Ok(())
    }

    /// `dev:ino` of the directory as opened.
    pub(crate) fn identity(&self) -> &str {
        &self.identity
    }

    /// Records must name their socket under `run` (this home's).
    pub(crate) fn with_run(mut self, run: &Path) -> Self {
        self.run = Some(run.to_path_buf());
        self
    }

    pub(crate) fn path_of(&self, id: &Identity, m: Marker) -> PathBuf {
        self.path.join(file_name(id, m))
    }

    // ---- boolean markers ------------------------------------------------

    pub(crate) fn flag(&self, id: &Identity, flag: Flag) -> Result<Option<FlagMarker>> {
        Ok(self
            .read_bounded(id, flag.marker(), FLAG_MAX)?
            .map(|b| parse_flag(&b)))
    }

    pub(crate) fn set_flag(
        &self,
        id: &Identity,
        flag: Flag,
        now: EpochMs,
        reason: &str,
    ) -> Result<()> {
        let reason = one_line(reason);
        let body = if reason.is_empty() {
            format!("{}\n", clock::format_ms(now))
        } else {
            format!("{}\n{reason}\n", clock::format_ms(now))
        };
        self.write(id, flag.marker(), body.as_bytes())
    }

    /// Removes a flag marker, returning what it held so a launch that
    /// never happened can put it back (`restore_flag`).
    pub(crate) fn take_flag(&self, id: &Identity, flag: Flag) -> Result<Option<TakenFlag>> {
        let taken = self.take_flag_unsynced(id, flag)?;
        if taken.is_some() {
            self.sync_dir()?;
        }
        Ok(taken)
    }

    /// [`take_flag`](Self::take_flag) without the folder's sync: the
    /// caller's next write here makes the removal durable with its own
    /// (a folder's sync covers every entry changed in it). A launch takes
    /// its markers this way, then writes its journal before tmux is asked:
    /// one sync for both, and still both durable before anything starts.
    pub(crate) fn take_flag_unsynced(
        &self,
        id: &Identity,
        flag: Flag,
    ) -> Result<Option<TakenFlag>> {
        let Some(bytes) = self.read_bounded(id, flag.marker(), FLAG_MAX)? else {
            return Ok(None);
        };
        self.unlink(id, flag.marker())?;
        Ok(Some(TakenFlag { flag, bytes }))
    }

    /// Puts a taken marker back as it was, unless one was written since.
    pub(crate) fn restore_flag(&self, id: &Identity, taken: &TakenFlag) -> Result<()> {
        if self.exists(id, taken.flag.marker())? {
            return Ok(());
        }
        self.write(id, taken.flag.marker(), &taken.bytes)
    }

    // ---- .deaths ----------------------------------------------------------

    /// The crash ring. Garbage (not JSON, not an array, non-numbers, too
    /// large) reads as no deaths, with the problem reported for logging.
    pub(crate) fn deaths(&self, id: &Identity) -> Result<Deaths> {
        let bytes = match self.read(id, Marker::Deaths, DEATHS_MAX)? {
            None => return Ok(Deaths::default()),
            Some(Contents::TooBig { size }) => {
                return Ok(garbage_deaths(format!(
                    "it is {size} bytes, more than a ring of {} deaths can be; read as no deaths",
                    crash_ring::CAPACITY
                )))
            }
            Some(Contents::Bytes(b)) => b,
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Deaths::default());
        }
        Ok(parse_deaths(&bytes))
    }

    pub(crate) fn write_deaths(&self, id: &Identity, ring: &CrashRing) -> Result<()> {
        let body = serde_json::to_string(ring.entries()).expect("a Vec<i64> always serializes");
        self.write(id, Marker::Deaths, format!("{body}\n").as_bytes())
    }

    // ---- .topic -------------------------------------------------------------

    pub(crate) fn topic(&self, id: &Identity) -> Result<Option<String>> {
        let Some(bytes) = self.read_bounded(id, Marker::Topic, TOPIC_MAX + 2)? else {
            return Ok(None);
        };
        parse_topic(&bytes)
            .map_err(|problem| Error::unsafe_file(self.path_of(id, Marker::Topic), problem))
    }

    pub(crate) fn set_topic(&self, id: &Identity, topic: &str) -> Result<()> {
        let topic = check_topic(topic)?;
        self.write(id, Marker::Topic, format!("{topic}\n").as_bytes())
    }

    // ---- .session -----------------------------------------------------------

    pub(crate) fn session(&self, id: &Identity) -> Result<Option<SessionRecord>> {
        let Some(bytes) = self.read_bounded(id, Marker::Session, SESSION_MAX)? else {
            return Ok(None);
        };
        let path = self.path_of(id, Marker::Session);
        let rec = SessionRecord::parse(&bytes).map_err(|e| {
            Error::input(
                path.display().to_string(),
                format!("not a valid session record ({e})"),
                format!(
                    "if no session of {id} is running, remove the file; \
                     otherwise `iapeer stop {id}` and `iapeer start {id}`"
                ),
            )
        })?;
        if rec.identity != id.as_str() {
            return Err(Error::input(
                path.display().to_string(),
                format!("it records identity {:?}, not {id}", rec.identity),
                "remove the file if it was copied from another peer",
            ));
        }
        // Its pids and socket are another home's: the home was copied or
        // restored while its sessions ran.
        if let Some(home) = rec.home.as_deref().filter(|h| *h != self.identity) {
            return Err(Error::unsafe_file(
                &path,
                format!(
                    "it was written in the state directory {home} (dev:ino), not this one ({}): \
                     the home was copied or restored while its sessions ran, and the pids and \
                     socket it names are the original's; it is never acted on; if no session of \
                     this home is running, remove it",
                    self.identity
                ),
            ));
        }
        // Its socket is acted on (ended, removed): only this home's own.
        if let Some(run) = &self.run {
            let own = run.join(format!("{id}.sock"));
            if rec.socket != own && !rec.socket.as_os_str().is_empty() {
                return Err(Error::unsafe_file(
                    &path,
                    format!(
                        "it names the tmux socket {}, not this home's {} (a record copied from \
                         another home, or planted); it is never acted on",
                        rec.socket.display(),
                        own.display()
                    ),
                ));
            }
        }
        Ok(Some(rec))
    }

    pub(crate) fn write_session(&self, id: &Identity, rec: &SessionRecord) -> Result<()> {
        let mut body = serde_json::to_vec(rec).expect("a session record always serializes");
        body.push(b'\n');
        self.write(id, Marker::Session, &body)
    }

    // ---- generic ------------------------------------------------------------

    /// Validates every file of `id` without acting: none may be a symlink,
    /// a non-regular file, someone else's, or larger than its format
    /// allows, and a `.session` must parse. Commands call this first, so
    /// hostile state is refused before anything is written.
    pub(crate) fn check(&self, id: &Identity) -> Result<()> {
        for m in Marker::ALL {
            let name = file_name(id, m);
            let path = self.path.join(&name);
            let st = match stat::fstatat(&self.dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(Error::io(&path, "inspect", e.into())),
            };
            let size = check_stat(&path, &st)?;
            let cap = match m {
                Marker::Session => SESSION_MAX,
                Marker::Topic => TOPIC_MAX + 2,
                Marker::IdleReaped
                | Marker::NewEager
                | Marker::Stopped
                | Marker::FreshNext
                | Marker::Failed => FLAG_MAX,
                // Garbage deaths read as none (DESIGN §2); the lock holds nothing.
                Marker::Deaths | Marker::Lock => continue,
            };
            if size > cap as u64 {
                return Err(Error::unsafe_file(
                    &path,
                    format!(
                        "it is {size} bytes, more than the {cap} bytes a .{} holds",
                        m.ext()
                    ),
                ));
            }
        }
        self.topic(id)?;
        self.session(id)?;
        Ok(())
    }

    /// Removes a marker (consume = remove); true if it existed. A symlink in
    /// its place is removed too, never followed.
    pub(crate) fn remove(&self, id: &Identity, m: Marker) -> Result<bool> {
        let removed = self.unlink(id, m)?;
        if removed {
            self.sync_dir()?;
        }
        Ok(removed)
    }

    /// [`remove`](Self::remove) without the folder's sync.
    fn unlink(&self, id: &Identity, m: Marker) -> Result<bool> {
        let name = file_name(id, m);
        match unistd::unlinkat(&self.dir, name.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(Error::io(self.path.join(name), "remove", e.into())),
        }
    }

    pub(crate) fn exists(&self, id: &Identity, m: Marker) -> Result<bool> {
        let name = file_name(id, m);
        match stat::fstatat(&self.dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(Error::io(self.path.join(name), "inspect", e.into())),
        }
    }

    /// Every identity with at least one file here, and which files it has,
    /// from a single directory listing. Names that are not `<identity>.<kind>`
    /// (temp files, strays) are skipped.
    pub(crate) fn scan(&self) -> Result<BTreeMap<Identity, Present>> {
        let mut out: BTreeMap<Identity, Present> = BTreeMap::new();
        let entries =
            std::fs::read_dir(&self.path).map_err(|e| Error::io(&self.path, "list", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.path, "list", e))?;
            let name = entry.file_name();
            let Some((id, m)) = name.to_str().and_then(parse_file_name) else {
                continue;
            };
            out.entry(id).or_default().add(m);
        }
        Ok(out)
    }

    /// Removes every state file of `id` but its lock (see `rm`), returning
    /// what was removed.
    pub(crate) fn remove_all(&self, id: &Identity) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for m in Marker::ALL.into_iter().filter(|m| *m != Marker::Lock) {
            if self.remove(id, m)? {
                removed.push(self.path_of(id, m));
            }
        }
        Ok(removed)
    }

    /// Removes temp files a killed writer left behind, older than `age`.
    pub(crate) fn sweep_temp_files(&self, age: Duration) -> Result<usize> {
        let now = std::time::SystemTime::now();
        let mut swept = 0;
        let entries =
            std::fs::read_dir(&self.path).map_err(|e| Error::io(&self.path, "list", e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with('.') && name.contains(".tmp.")) {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|d| d >= age);
            if old && unistd::unlinkat(&self.dir, name, UnlinkatFlags::NoRemoveDir).is_ok() {
                swept += 1;
            }
        }
        Ok(swept)
    }
}

fn file_name(id: &Identity, m: Marker) -> String {
    format!("{id}.{}", m.ext())
}

fn parse_file_name(name: &str) -> Option<(Identity, Marker)> {
    let (stem, ext) = name.split_once('.')?;
    let m = Marker::from_ext(ext)?;
    let id = Identity::parse(stem).ok()?;
    Some((id, m))
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use assert_fs::TempDir;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    pub(super) fn store() -> (TempDir, StateDir) {
        let dir = TempDir::new().unwrap();
        let store = StateDir::open(dir.path()).unwrap();
        (dir, store)
    }

    pub(super) fn id(s: &str) -> Identity {
        Identity::parse(s).unwrap()
    }

    #[test]
    fn flags_round_trip_and_a_touched_file_counts() {
        let (dir, s) = store();
        let alice = id("alice");
        assert_eq!(s.flag(&alice, Flag::IdleReaped).unwrap(), None);
        s.set_flag(&alice, Flag::IdleReaped, 1_795_236_254_821, "reaped-idle")
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join("alice.idle-reaped")).unwrap();
        assert_eq!(text, "2026-11-21T04:44:14.821Z\nreaped-idle\n");
        assert_eq!(
            s.flag(&alice, Flag::IdleReaped).unwrap(),
            Some(FlagMarker {
                at_ms: Some(1_795_236_254_821),
                reason: Some("reaped-idle".into())
            })
        );
        std::fs::write(dir.path().join("alice.new-eager"), "").unwrap();
        assert_eq!(
            s.flag(&alice, Flag::NewEager).unwrap(),
            Some(FlagMarker::default())
        );
        assert!(s.remove(&alice, Marker::NewEager).unwrap());
        assert!(!s.remove(&alice, Marker::NewEager).unwrap());
        assert_eq!(s.flag(&alice, Flag::NewEager).unwrap(), None);
    }

    #[test]
    fn a_taken_flag_is_gone_and_is_put_back_byte_for_byte() {
        type Take = fn(&StateDir, &Identity, Flag) -> Result<Option<TakenFlag>>;
        let takes: [(&str, Take); 2] = [
            ("synced", StateDir::take_flag),
            ("unsynced", StateDir::take_flag_unsynced),
        ];
        for (how, take) in takes {
            let (dir, s) = store();
            let alice = id("alice");
            assert!(
                take(&s, &alice, Flag::IdleReaped).unwrap().is_none(),
                "{how}"
            );
            let file = dir.path().join("alice.idle-reaped");
            std::fs::write(&file, "odd bytes, kept as they are").unwrap();
            let taken = take(&s, &alice, Flag::IdleReaped).unwrap().expect(how);
            assert!(!file.exists(), "{how}: removed");
            s.restore_flag(&alice, &taken).unwrap();
            assert_eq!(
                std::fs::read_to_string(&file).unwrap(),
                "odd bytes, kept as they are",
                "{how}"
            );
            // One written since is never overwritten by the old one.
            let taken = take(&s, &alice, Flag::IdleReaped).unwrap().expect(how);
            std::fs::write(&file, "newer").unwrap();
            s.restore_flag(&alice, &taken).unwrap();
            assert_eq!(std::fs::read_to_string(&file).unwrap(), "newer", "{how}");
        }
    }

    #[test]
    fn files_are_private() {
        let (dir, s) = store();
        s.set_flag(&id("a"), Flag::Stopped, 0, "").unwrap();
        let mode = std::fs::metadata(dir.path().join("a.stopped"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn symlinks_are_refused_on_read_and_write() {
        let (dir, s) = store();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "[1,2,3]").unwrap();
        symlink(&outside, dir.path().join("a.deaths")).unwrap();
        symlink(&outside, dir.path().join("a.stopped")).unwrap();
        let a = id("a");
        assert!(matches!(s.deaths(&a), Err(Error::Unsafe { .. })));
        assert!(matches!(
            s.flag(&a, Flag::Stopped),
            Err(Error::Unsafe { .. })
        ));
        let err = s.write_deaths(&a, &CrashRing::default()).unwrap_err();
        assert!(matches!(err, Error::Unsafe { .. }), "{err}");
        assert_eq!(err.exit_code(), 2);
        assert_eq!(
            std::fs::read_to_string(&outside).unwrap(),
            "[1,2,3]",
            "target untouched"
        );
    }

    #[test]
    fn a_symlinked_state_dir_is_refused() {
        let dir = TempDir::new().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        symlink(&real, dir.path().join("link")).unwrap();
        assert!(matches!(
            StateDir::open(&dir.path().join("link")),
            Err(Error::Unsafe { .. })
        ));
    }

    #[test]
    fn a_fifo_is_refused_without_hanging() {
        let (dir, s) = store();
        unistd::mkfifo(&dir.path().join("a.topic"), Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(s.topic(&id("a")), Err(Error::Unsafe { .. })));
    }

    #[test]
    fn foreign_owned_markers_are_refused() {
        let (dir, s) = store();
        let path = dir.path().join("a.stopped");
        std::fs::write(&path, "").unwrap();
        if unistd::geteuid().is_root() {
            unistd::chown(&path, Some(65534.into()), None).unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().uid(), 65534);
            assert!(matches!(
                s.flag(&id("a"), Flag::Stopped),
                Err(Error::Unsafe { .. })
            ));
        }
    }

    #[test]
    fn oversized_deaths_read_as_garbage_and_an_empty_file_as_none() {
        let (dir, s) = store();
        let a = id("a");
        std::fs::write(dir.path().join("a.deaths"), "1".repeat(DEATHS_MAX + 10)).unwrap();
        let d = s.deaths(&a).unwrap();
        assert!(d.ring.is_empty() && d.problem.is_some());
        std::fs::write(dir.path().join("a.deaths"), "").unwrap();
        assert_eq!(s.deaths(&a).unwrap(), Deaths::default());
    }

    #[test]
    fn garbage_session_is_a_clear_error() {
        let (dir, s) = store();
        std::fs::write(dir.path().join("a.session"), "{\"identity\": \"a\", \"pane").unwrap();
        let err = s.session(&id("a")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("a.session"), "{err}");
    }

    #[test]
    fn scan_lists_identities_and_skips_strays() {
        let (dir, s) = store();
        for f in [
            "a.session",
            "a.topic",
            "b.new-eager",
            ".a.session.tmp.1.2",
            "junk",
            "c.weird",
            "../x.stopped",
        ] {
            let _ = std::fs::write(dir.path().join(f), "");
        }
        let scan = s.scan().unwrap();
        assert_eq!(scan.len(), 2, "{scan:?}");
        assert!(scan[&id("a")].has(Marker::Session) && scan[&id("a")].has(Marker::Topic));
        assert!(!scan[&id("a")].has(Marker::Stopped));
        assert!(scan[&id("b")].has(Marker::NewEager));
    }

    #[test]
    fn an_interrupted_write_leaves_the_old_file() {
        let (dir, s) = store();
        let a = id("a");
        s.set_topic(&a, "old").unwrap();
        // A writer killed after creating its temp file: the marker is intact
        // and the stray is swept later.
        std::fs::write(dir.path().join(".a.topic.tmp.999.0"), "new, half writ").unwrap();
        assert_eq!(s.topic(&a).unwrap().as_deref(), Some("old"));
        assert_eq!(s.sweep_temp_files(Duration::ZERO).unwrap(), 1);
    }

    #[test]
    fn topics_are_one_line_and_bounded() {
        let (dir, s) = store();
        let a = id("a");
        s.set_topic(&a, "billing bug").unwrap();
        assert_eq!(s.topic(&a).unwrap().as_deref(), Some("billing bug"));
        assert!(s.set_topic(&a, &"x".repeat(TOPIC_MAX + 1)).is_err());
        assert!(s.set_topic(&a, "two\nlines").is_err());
        std::fs::write(dir.path().join("a.topic"), "y".repeat(10_000)).unwrap();
        let err = s.topic(&a).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
    }
}
