//! The marker store: every file under `state/lifecycle/` (DESIGN §2).
//!
//! Writers are exact and atomic (temp file in the same folder, fsync, rename,
//! fsync the folder), so a crash leaves the old file or the new one. Readers
//! are forgiving about content (an empty `touch`-made marker counts, garbage
//! `.deaths` reads as no deaths) and strict about what they open: every file
//! is opened relative to the directory's descriptor with `O_NOFOLLOW`, and a
//! symlink, a non-regular file or a file owned by another user is refused,
//! never followed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, Mode, SFlag};
use nix::unistd::{self, UnlinkatFlags};

use crate::core::clock;
use crate::core::clock::EpochMs;
use crate::core::crash_ring;
use crate::core::crash_ring::CrashRing;
use crate::core::error::{Error, Result};
use crate::core::identity::Identity;
use crate::core::session::SessionRecord;
use crate::store::fsutil::check_owner;

/// Longest topic, in bytes (DESIGN §2).
pub const TOPIC_MAX: usize = 256;
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
    Lock,
}

impl Marker {
    pub(crate) const ALL: [Marker; 7] = [
        Marker::Session,
        Marker::IdleReaped,
        Marker::NewEager,
        Marker::Deaths,
        Marker::Topic,
        Marker::Stopped,
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
            Marker::Lock => "lock",
        }
    }

    fn from_ext(ext: &str) -> Option<Marker> {
        Marker::ALL.into_iter().find(|m| m.ext() == ext)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The boolean markers: presence is what counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flag {
    IdleReaped,
    NewEager,
    Stopped,
}

impl Flag {
    pub(crate) fn marker(self) -> Marker {
        match self {
            Flag::IdleReaped => Marker::IdleReaped,
            Flag::NewEager => Marker::NewEager,
            Flag::Stopped => Marker::Stopped,
        }
    }
}

/// A flag marker removed by `take_flag`, byte for byte.
#[derive(Clone, Debug)]
pub(crate) struct TakenFlag {
    flag: Flag,
    bytes: Vec<u8>,
}

/// What a boolean marker said: when it was written and why, when the
/// writer said so (a `touch`-made marker says neither).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlagMarker {
    pub at_ms: Option<EpochMs>,
    pub reason: Option<String>,
}

/// The crash ring as read, with what was wrong with the file if anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deaths {
    pub ring: CrashRing,
    /// Set when the file was garbage and read as "no deaths".
    pub problem: Option<String>,
}

/// Which markers exist for one identity, from one directory listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Present(u8);

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
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

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
        })
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
        let Some(bytes) = self.read_bounded(id, flag.marker(), FLAG_MAX)? else {
            return Ok(None);
        };
        self.remove(id, flag.marker())?;
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
                Marker::IdleReaped | Marker::NewEager | Marker::Stopped => FLAG_MAX,
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
        let name = file_name(id, m);
        match unistd::unlinkat(&self.dir, name.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) => {
                self.sync_dir()?;
                Ok(true)
            }
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

    /// Takes the per-identity wake lock, waiting at most `wait`.
    pub(crate) fn lock(&self, id: &Identity, wait: Duration) -> Result<WakeLock, LockFailure> {
        let file = self.open_lock(id).map_err(LockFailure::Error)?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(WakeLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(LockFailure::Error(Error::io(
                        self.path_of(id, Marker::Lock),
                        "lock",
                        e,
                    )))
                }
            }
            let waited = start.elapsed();
            if waited >= wait {
                return Err(LockFailure::Held { waited });
            }
            std::thread::sleep(pause.min(wait - waited));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Takes the wake lock if nobody holds it.
    pub(crate) fn try_lock(&self, id: &Identity) -> Result<Option<WakeLock>> {
        match self.lock(id, Duration::ZERO) {
            Ok(lock) => Ok(Some(lock)),
            Err(LockFailure::Held { .. }) => Ok(None),
            Err(LockFailure::Error(e)) => Err(e),
        }
    }

    fn open_lock(&self, id: &Identity) -> Result<File> {
        let name = file_name(id, Marker::Lock);
        let path = self.path.join(&name);
        let fd = fcntl::openat(
            &self.dir,
            name.as_str(),
            OFlag::O_RDWR
                | OFlag::O_CREAT
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | OFlag::O_NONBLOCK,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| open_error(&path, e))?;
        check_regular_owned(&path, &fd)?;
        Ok(File::from(fd))
    }

    /// Reads a whole marker of at most `cap` bytes; `None` when missing.
    fn read(&self, id: &Identity, m: Marker, cap: usize) -> Result<Option<Contents>> {
        let name = file_name(id, m);
        let path = self.path.join(&name);
        let fd = match fcntl::openat(
            &self.dir,
            name.as_str(),
            // O_NONBLOCK: a FIFO planted here must not hang the open.
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(open_error(&path, e)),
        };
        let size = check_regular_owned(&path, &fd)?;
        if size > cap as u64 {
            return Ok(Some(Contents::TooBig { size }));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        File::from(fd)
            .take(cap as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&path, "read", e))?;
        if bytes.len() > cap {
            return Ok(Some(Contents::TooBig {
                size: bytes.len() as u64,
            }));
        }
        Ok(Some(Contents::Bytes(bytes)))
    }

    /// Like `read`, with an oversized file refused.
    fn read_bounded(&self, id: &Identity, m: Marker, cap: usize) -> Result<Option<Vec<u8>>> {
        match self.read(id, m, cap)? {
            None => Ok(None),
            Some(Contents::Bytes(b)) => Ok(Some(b)),
            Some(Contents::TooBig { size }) => Err(Error::unsafe_file(
                self.path_of(id, m),
                format!(
                    "it is {size} bytes, more than the {cap} bytes a .{} holds",
                    m.ext()
                ),
            )),
        }
    }

    /// Replaces a marker atomically. Refuses to replace something that is
    /// not a regular file of ours.
    fn write(&self, id: &Identity, m: Marker, bytes: &[u8]) -> Result<()> {
        let name = file_name(id, m);
        let path = self.path.join(&name);
        match stat::fstatat(&self.dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => {
                check_stat(&path, &st)?;
            }
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(Error::io(&path, "inspect", e.into())),
        }
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        // Starts with a dot, so it can never be taken for an identity's file.
        let temp = format!(".{name}.tmp.{}.{seq}", std::process::id());
        let fd = fcntl::openat(
            &self.dir,
            temp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| Error::io(self.path.join(&temp), "create", e.into()))?;
        let mut file = File::from(fd);
        let written = file
            .write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(&path, "write", e));
        drop(file);
        let renamed = written.and_then(|()| {
            fcntl::renameat(&self.dir, temp.as_str(), &self.dir, name.as_str())
                .map_err(|e| Error::io(&path, "replace", e.into()))
        });
        if let Err(e) = renamed {
            let _ = unistd::unlinkat(&self.dir, temp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(e);
        }
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<()> {
        unistd::fsync(self.dir.as_fd()).map_err(|e| Error::io(&self.path, "sync", e.into()))
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

enum Contents {
    Bytes(Vec<u8>),
    TooBig { size: u64 },
}

/// Held while a wake (or a supervise step) acts on an identity; released
/// when dropped. The file is `flock`ed, and never deleted.
#[derive(Debug)]
pub(crate) struct WakeLock {
    _file: File,
}

#[derive(Debug)]
pub(crate) enum LockFailure {
    Held { waited: Duration },
    Error(Error),
}

/// Validates a topic as writers must store it: one line, at most 256 bytes,
/// no control characters.
pub(crate) fn check_topic(topic: &str) -> Result<&str> {
    let topic = topic.trim();
    if topic.len() > TOPIC_MAX {
        return Err(Error::input(
            "--topic",
            format!(
                "it is {} bytes, longer than the {TOPIC_MAX} a topic may be",
                topic.len()
            ),
            "shorten it",
        ));
    }
    if topic.chars().any(char::is_control) {
        return Err(Error::input(
            "--topic",
            "it contains a newline or another control character",
            "give a one-line topic",
        ));
    }
    Ok(topic)
}

fn garbage_deaths(problem: String) -> Deaths {
    Deaths {
        ring: CrashRing::default(),
        problem: Some(problem),
    }
}

/// Parses a boolean marker forgivingly: an RFC 3339 first line and a
/// reason line, either, both or neither (a `touch`-made file).
pub fn parse_flag(bytes: &[u8]) -> FlagMarker {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next();
    let at_ms = first.and_then(clock::parse_rfc3339);
    // A first line that is not a timestamp is taken as the reason.
    let reason = match (first, at_ms) {
        (Some(line), None) => Some(line.to_owned()),
        _ => lines.next().map(str::to_owned),
    };
    FlagMarker { at_ms, reason }
}

/// Parses `.topic`: its first line, at most `TOPIC_MAX` bytes.
pub fn parse_topic(bytes: &[u8]) -> std::result::Result<Option<String>, String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.len() > TOPIC_MAX {
        return Err(format!("its topic is longer than {TOPIC_MAX} bytes"));
    }
    Ok((!line.is_empty()).then(|| line.to_owned()))
}

/// Parses `.deaths` forgivingly: a JSON array of numbers, else no deaths.
pub fn parse_deaths(bytes: &[u8]) -> Deaths {
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return garbage_deaths(format!("not JSON ({e}), read as no deaths")),
    };
    let serde_json::Value::Array(items) = value else {
        return garbage_deaths("not a JSON array, read as no deaths".into());
    };
    let mut deaths = Vec::with_capacity(items.len());
    for item in &items {
        let ms = match item {
            serde_json::Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
            _ => None,
        };
        match ms {
            Some(ms) => deaths.push(ms),
            None => {
                return garbage_deaths(format!(
                    "holds {item} where an epoch-millisecond number belongs, read as no deaths"
                ))
            }
        }
    }
    Deaths {
        ring: CrashRing::from_entries(deaths),
        problem: None,
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

fn open_error(path: &Path, e: Errno) -> Error {
    match e {
        Errno::ELOOP => Error::unsafe_file(path, "it is a symlink"),
        e => Error::io(path, "open", e.into()),
    }
}

fn check_stat(path: &Path, st: &stat::FileStat) -> Result<u64> {
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFLNK {
        return Err(Error::unsafe_file(path, "it is a symlink"));
    }
    if kind != SFlag::S_IFREG {
        return Err(Error::unsafe_file(path, "it is not a regular file"));
    }
    check_owner(path, st.st_uid)?;
    Ok(st.st_size as u64)
}

fn check_regular_owned(path: &Path, fd: &OwnedFd) -> Result<u64> {
    let st = stat::fstat(fd).map_err(|e| Error::io(path, "inspect", e.into()))?;
    check_stat(path, &st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use assert_fs::TempDir;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn store() -> (TempDir, StateDir) {
        let dir = TempDir::new().unwrap();
        let store = StateDir::open(dir.path()).unwrap();
        (dir, store)
    }

    fn id(s: &str) -> Identity {
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
    fn deaths_are_read_forgivingly() {
        let cases: &[(&str, Option<&[i64]>)] = &[
            ("[1,2,3]", Some(&[1, 2, 3])),
            ("[3, 1, 2]\n", Some(&[1, 2, 3])),
            ("[]", Some(&[])),
            ("[-5, 1e3]", Some(&[-5, 1000])),
            ("garbage", None),
            ("{\"a\":1}", None),
            ("[1,\"x\"]", None),
            ("[1,null]", None),
            ("[1,2", None),
        ];
        for (text, want) in cases {
            let d = parse_deaths(text.as_bytes());
            match want {
                Some(w) => {
                    assert_eq!(d.ring.entries(), *w, "{text}");
                    assert!(d.problem.is_none(), "{text}");
                }
                None => {
                    assert!(d.ring.is_empty(), "{text}");
                    assert!(d.problem.is_some(), "{text}");
                }
            }
        }
        let huge: Vec<i64> = (0..5000).collect();
        let d = parse_deaths(serde_json::to_string(&huge).unwrap().as_bytes());
        assert_eq!(d.ring.entries().len(), crash_ring::CAPACITY);
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
    fn the_wake_lock_excludes_and_times_out() {
        let (_dir, s) = store();
        let a = id("a");
        let held = s.lock(&a, Duration::ZERO).unwrap();
        match s.lock(&a, Duration::from_millis(30)) {
            Err(LockFailure::Held { waited }) => assert!(waited >= Duration::from_millis(30)),
            other => panic!("expected Held, got {other:?}"),
        }
        assert!(s.try_lock(&a).unwrap().is_none());
        drop(held);
        assert!(s.try_lock(&a).unwrap().is_some());
    }

    proptest::proptest! {
        /// Whatever a script or a crash leaves in a marker, reading it
        /// never panics, and the crash ring stays bounded and sorted.
        #[test]
        fn parsers_take_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = parse_flag(&bytes);
            if let Ok(Some(t)) = parse_topic(&bytes) {
                proptest::prop_assert!(t.len() <= TOPIC_MAX && !t.contains('\n'));
            }
            let d = parse_deaths(&bytes);
            proptest::prop_assert!(d.ring.entries().len() <= crash_ring::CAPACITY);
            proptest::prop_assert!(d.ring.entries().windows(2).all(|w| w[0] <= w[1]));
            let _ = SessionRecord::parse(&bytes);
        }

        #[test]
        fn numeric_arrays_are_never_garbage(v in proptest::collection::vec(proptest::prelude::any::<i64>(), 0..40)) {
            let d = parse_deaths(serde_json::to_string(&v).unwrap().as_bytes());
            proptest::prop_assert!(d.problem.is_none());
        }
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
}
