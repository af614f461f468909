//! The durable decision log, `logs/iapeer/lifecycle.log` (DESIGN §8).
//!
//! One JSON object per line, fields in a fixed order (the order of
//! [`Record`]'s fields), values strings or numbers only, so that `grep` and
//! `jq` both work. The schema is documented in `lifecycle_log.md` beside
//! this file; `fixtures/lifecycle.golden.jsonl` pins it.
//!
//! Appending: every line is one `write()` on an `O_APPEND` descriptor,
//! followed by `fdatasync`, under an exclusive `flock` on
//! `lifecycle.log.lock` shared by every process that writes. Under that lock
//! the writer checks that its descriptor is still the current file (another
//! process may have rotated it), rotates by rename when the next line would
//! pass `IAPEER_LIFECYCLE_LOG_MAX_BYTES`, and repairs a torn last line left
//! by a power loss by starting its line on a fresh one. So no line is lost
//! to rotation, and no line is ever written into a file already rotated
//! away — which is what lets a follower read the log losslessly.
//!
//! Reading walks `lifecycle.log.N` … `.1`, then `lifecycle.log`, oldest
//! first, and skips torn lines.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::{self, EpochMs};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::wake_mode::{Cause, Mode};

/// How long an append waits for another process's append or rotation.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Longest task or pane excerpt copied into a line.
const EXCERPT_MAX: usize = 1024;

/// `ev`: what kind of event a line records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ev {
    Wake,
    Ready,
    Supervise,
    Stop,
    Start,
    Reset,
    Daemon,
}

impl Ev {
    pub const ALL: [Ev; 7] = [
        Ev::Wake,
        Ev::Ready,
        Ev::Supervise,
        Ev::Stop,
        Ev::Start,
        Ev::Reset,
        Ev::Daemon,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Ev::Wake => "wake",
            Ev::Ready => "ready",
            Ev::Supervise => "supervise",
            Ev::Stop => "stop",
            Ev::Start => "start",
            Ev::Reset => "reset",
            Ev::Daemon => "daemon",
        }
    }

    pub fn parse(s: &str) -> Option<Ev> {
        Ev::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// `action`: what a supervise (or daemon) line did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    // supervise (DESIGN §8)
    ReapedIdle,
    ReapedMaxAge,
    ReapedGone,
    NeedsEagerFresh,
    ParkedStopped,
    AlwaysOnRelaunch,
    TickError,
    Alive,
    /// A session died while a delivered task was in flight.
    CrashedWhileWorking,
    // daemon
    Started,
    Stopping,
    Reloaded,
    Adopted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ReapedIdle => "reaped-idle",
            Action::ReapedMaxAge => "reaped-max-age",
            Action::ReapedGone => "reaped-gone",
            Action::NeedsEagerFresh => "needs-eager-fresh",
            Action::ParkedStopped => "parked-stopped",
            Action::AlwaysOnRelaunch => "always-on-relaunch",
            Action::TickError => "tick-error",
            Action::Alive => "alive",
            Action::CrashedWhileWorking => "crashed-while-working",
            Action::Started => "started",
            Action::Stopping => "stopping",
            Action::Reloaded => "reloaded",
            Action::Adopted => "adopted",
        }
    }
}

/// Who wrote a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Cli,
    Daemon,
}

/// One line of the log. Field order here is the order on disk, and is a
/// public interface: add new fields, never reorder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub ts: String,
    pub ev: Ev,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deaths: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_lines: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub source: Source,
    pub pid: u32,
}

impl Record {
    pub fn new(now: EpochMs, ev: Ev, source: Source) -> Self {
        Record {
            ts: clock::format_ms(now),
            ev,
            identity: None,
            runtime: None,
            mode: None,
            action: None,
            cause: None,
            idle_seconds: None,
            outcome: None,
            session: None,
            topic: None,
            task: None,
            deaths: None,
            retry_after: None,
            latency_ms: None,
            exit_status: None,
            last_lines: None,
            reason: None,
            error: None,
            source,
            pid: std::process::id(),
        }
    }

    pub fn identity(mut self, id: impl ToString) -> Self {
        self.identity = Some(id.to_string());
        self
    }

    pub fn runtime(mut self, runtime: impl ToString) -> Self {
        self.runtime = Some(runtime.to_string());
        self
    }

    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }

    pub fn action(mut self, action: Action) -> Self {
        self.action = Some(action);
        self
    }

    pub fn cause(mut self, cause: Cause) -> Self {
        self.cause = Some(cause);
        self
    }

    pub fn outcome(mut self, outcome: impl ToString) -> Self {
        self.outcome = Some(outcome.to_string());
        self
    }

    pub fn session(mut self, session: impl ToString) -> Self {
        let s = session.to_string();
        self.session = (!s.is_empty()).then_some(s);
        self
    }

    pub fn topic(mut self, topic: Option<&str>) -> Self {
        self.topic = topic.filter(|t| !t.is_empty()).map(excerpt);
        self
    }

    pub fn task(mut self, task: Option<&str>) -> Self {
        self.task = task.filter(|t| !t.is_empty()).map(excerpt);
        self
    }

    pub fn reason(mut self, reason: impl ToString) -> Self {
        self.reason = Some(excerpt(&reason.to_string()));
        self
    }

    pub fn error(mut self, error: impl ToString) -> Self {
        self.error = Some(excerpt(&error.to_string()));
        self
    }

    pub fn last_lines(mut self, lines: Option<&str>) -> Self {
        self.last_lines = lines.filter(|l| !l.is_empty()).map(excerpt);
        self
    }

    /// The line as written, without its newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a log record always serializes")
    }
}

/// Keeps the last `EXCERPT_MAX` bytes' worth of a long text (the end of a
/// pane or a task is what explains it), cut on a character boundary.
fn excerpt(s: &str) -> String {
    if s.len() <= EXCERPT_MAX {
        return s.to_owned();
    }
    let mut start = s.len() - EXCERPT_MAX;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// Appends to the log; one per process is enough, and it may be shared
/// behind a mutex by threads.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    lock_path: PathBuf,
    max_bytes: u64,
    keep: u32,
    /// The open log and its (dev, ino), to notice a rotation by another
    /// process.
    file: Option<(File, (u64, u64))>,
    lock: Option<File>,
}

impl LogWriter {
    pub fn new(config: &Config) -> Self {
        Self::at(
            &config.paths.lifecycle_log,
            config.log_max_bytes,
            config.log_keep,
        )
    }

    pub fn at(path: &Path, max_bytes: u64, keep: u32) -> Self {
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        LogWriter {
            path: path.to_path_buf(),
            lock_path: PathBuf::from(lock_path),
            max_bytes: max_bytes.max(1),
            keep: keep.max(1),
            file: None,
            lock: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&mut self, record: &Record) -> Result<()> {
        self.append_line(record.to_line().as_bytes())
    }

    /// Appends one line (given without its newline) durably.
    pub fn append_line(&mut self, line: &[u8]) -> Result<()> {
        debug_assert!(!line.contains(&b'\n'));
        self.open_lock()?;
        let lock = self.lock.as_ref().expect("open_lock opened it");
        lock_bounded(lock, &self.lock_path)?;
        let result = self.append_locked(line);
        // Closing would release too; unlock now so a cached descriptor does
        // not keep others waiting.
        let _ = self.lock.as_ref().map(File::unlock);
        result
    }

    fn append_locked(&mut self, line: &[u8]) -> Result<()> {
        let mut size = self.current_size()?;
        let needed = line.len() as u64 + 2;
        if size > 0 && size + needed > self.max_bytes {
            self.rotate()?;
            size = self.current_size()?;
        }
        let (file, _) = self.file.as_ref().expect("current_size opened the log");
        let mut buf = Vec::with_capacity(line.len() + 2);
        if size > 0 && !ends_with_newline(file, size) {
            // A torn last line (power loss, full disk): start on a fresh
            // line so this one is not glued to the garbage.
            buf.push(b'\n');
        }
        buf.extend_from_slice(line);
        buf.push(b'\n');
        let written = nix::unistd::write(file, &buf);
        match written {
            Ok(n) if n == buf.len() => {}
            Ok(n) => {
                // A short write (disk full, file size limit): take the
                // fragment back so the file ends on a whole line.
                let _ = file.set_len(size);
                return Err(Error::io(
                    &self.path,
                    "append to",
                    std::io::Error::new(
                        ErrorKind::StorageFull,
                        format!("only {n} of {} bytes could be written", buf.len()),
                    ),
                ));
            }
            Err(e) => {
                let _ = file.set_len(size);
                return Err(Error::io(&self.path, "append to", e.into()));
            }
        }
        file.sync_data()
            .map_err(|e| Error::io(&self.path, "sync", e))
    }

    /// Makes sure `self.file` is the current log (reopening after another
    /// process rotated it) and returns its size.
    fn current_size(&mut self) -> Result<u64> {
        if let Some((file, id)) = &self.file {
            if let Ok(meta) = fs::symlink_metadata(&self.path) {
                if (meta.dev(), meta.ino()) == *id {
                    let size = file
                        .metadata()
                        .map_err(|e| Error::io(&self.path, "inspect", e))?
                        .len();
                    return Ok(size);
                }
            }
        }
        let file = OpenOptions::new()
            // Readable too: the torn-line check reads the last byte.
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => Error::unsafe_file(&self.path, "it is a symlink"),
                _ => Error::io(&self.path, "open", e),
            })?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(&self.path, "inspect", e))?;
        if !meta.is_file() {
            return Err(Error::unsafe_file(&self.path, "it is not a regular file"));
        }
        let size = meta.len();
        self.file = Some((file, (meta.dev(), meta.ino())));
        Ok(size)
    }

    /// `.N-1` → `.N`, …, current → `.1`; anything past `.keep` goes.
    fn rotate(&mut self) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        for (n, path) in rotated_files(&self.path)? {
            if n >= self.keep {
                fs::remove_file(&path).map_err(|e| Error::io(&path, "remove", e))?;
            }
        }
        for n in (1..self.keep).rev() {
            let from = numbered(&self.path, n);
            let to = numbered(&self.path, n + 1);
            match fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&from, "rotate", e)),
            }
        }
        let first = numbered(&self.path, 1);
        fs::rename(&self.path, &first).map_err(|e| Error::io(&self.path, "rotate", e))?;
        self.file = None;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, "sync", e))
    }

    fn open_lock(&mut self) -> Result<()> {
        if self.lock.is_none() {
            if let Some(dir) = self.path.parent() {
                crate::config::ensure_private_dir(dir, true)?;
            }
            let file = crate::fsutil::open_lock_file(&self.lock_path)?;
            self.lock = Some(file);
        }
        Ok(())
    }
}

fn lock_bounded(file: &File, path: &Path) -> Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::failed(
                    path.display().to_string(),
                    format!(
                        "another process held the log lock for {}s",
                        LOCK_WAIT.as_secs()
                    ),
                    "find it with `fuser` and check it is not stopped",
                ))
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(path, "lock", e)),
        }
    }
}

fn ends_with_newline(file: &File, size: u64) -> bool {
    let mut last = [0u8; 1];
    match file.read_at(&mut last, size - 1) {
        Ok(1) => last[0] == b'\n',
        _ => true,
    }
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The rotated files that exist, as (N, path), in no particular order.
fn rotated_files(path: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let base = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("lifecycle.log");
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(dir, "list", e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix(base))
            .and_then(|r| r.strip_prefix('.'))
        else {
            continue;
        };
        if let Ok(n) = rest.parse::<u32>() {
            if n > 0 && rest.bytes().all(|b| b.is_ascii_digit()) {
                out.push((n, entry.path()));
            }
        }
    }
    Ok(out)
}

/// The log's files, oldest first: `.N` … `.1`, then the current one (when
/// it exists).
pub fn log_files(path: &Path) -> Result<Vec<PathBuf>> {
    let mut rotated = rotated_files(path)?;
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    Ok(files)
}

/// One parsed line.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub line: String,
    pub fields: Map<String, Value>,
}

impl Entry {
    pub fn parse(line: &str) -> Option<Entry> {
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(fields)) if fields.get("ts").is_some_and(Value::is_string) => {
                Some(Entry {
                    line: line.to_owned(),
                    fields,
                })
            }
            _ => None,
        }
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.fields.get(key).and_then(Value::as_u64)
    }

    pub fn ts_ms(&self) -> Option<EpochMs> {
        self.str("ts").and_then(clock::parse_rfc3339)
    }

    pub fn ev(&self) -> Option<Ev> {
        self.str("ev").and_then(Ev::parse)
    }

    pub fn identity(&self) -> Option<&str> {
        self.str("identity")
    }
}

/// What reading the whole log found.
#[derive(Debug, Default)]
pub struct ReadStats {
    pub lines: usize,
    /// Torn or unparseable lines, skipped.
    pub skipped: usize,
}

/// Calls `visit` for every whole line of every retained file, oldest first,
/// skipping torn lines. `visit` returns false to stop early.
pub fn for_each_entry(path: &Path, visit: impl FnMut(Entry) -> bool) -> Result<ReadStats> {
    for_each_matching(path, |_| true, visit)
}

/// Like `for_each_entry`, but lines for which `wanted` (given the raw
/// text) is false are skipped before they are parsed: most lines of a big
/// log are about other peers.
pub fn for_each_matching(
    path: &Path,
    wanted: impl Fn(&str) -> bool,
    mut visit: impl FnMut(Entry) -> bool,
) -> Result<ReadStats> {
    let mut stats = ReadStats::default();
    for file in log_files(path)? {
        let f = match File::open(&file) {
            Ok(f) => f,
            // Rotated away between listing and opening: its lines now live
            // in the next file, read below.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&file, "open", e)),
        };
        let mut reader = BufReader::with_capacity(256 * 1024, f);
        let mut buf = Vec::with_capacity(512);
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| Error::io(&file, "read", e))?;
            if n == 0 {
                break;
            }
            let whole = buf.last() == Some(&b'\n');
            let text = std::str::from_utf8(&buf).ok().map(str::trim_end);
            if whole && text.is_some_and(|t| !t.is_empty() && !wanted(t)) {
                continue;
            }
            match text.filter(|_| whole).and_then(Entry::parse) {
                Some(entry) => {
                    stats.lines += 1;
                    if !visit(entry) {
                        return Ok(stats);
                    }
                }
                None if text.is_some_and(str::is_empty) => {}
                None => stats.skipped += 1,
            }
        }
    }
    Ok(stats)
}

/// Every entry, oldest first.
pub fn read_all(path: &Path) -> Result<(Vec<Entry>, ReadStats)> {
    let mut out = Vec::new();
    let stats = for_each_entry(path, |e| {
        out.push(e);
        true
    })?;
    Ok((out, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use assert_fs::TempDir;

    fn writer(dir: &TempDir, max: u64, keep: u32) -> LogWriter {
        LogWriter::at(&dir.path().join("lifecycle.log"), max, keep)
    }

    fn sample(i: u64) -> Record {
        let mut r = Record::new(1_795_236_254_821, Ev::Reset, Source::Cli).identity("alice");
        r.deaths = Some(i);
        r
    }

    #[test]
    fn field_order_is_the_documented_one() {
        let mut r = Record::new(1_795_236_254_821, Ev::Wake, Source::Cli)
            .identity("alice")
            .runtime("claude")
            .mode(Mode::Fresh)
            .cause(Cause::CrashOrSelfClose);
        r.pid = 4242;
        assert_eq!(
            r.to_line(),
            r#"{"ts":"2026-11-21T04:44:14.821Z","ev":"wake","identity":"alice","runtime":"claude","mode":"fresh","cause":"crash-or-self-close","source":"cli","pid":4242}"#
        );
        let mut r = Record::new(1_795_236_254_821, Ev::Supervise, Source::Daemon)
            .identity("alice")
            .action(Action::ReapedIdle)
            .outcome("resume-eligible");
        r.idle_seconds = Some(3671);
        r.pid = 17;
        assert_eq!(
            r.to_line(),
            r#"{"ts":"2026-11-21T04:44:14.821Z","ev":"supervise","identity":"alice","action":"reaped-idle","idle_seconds":3671,"outcome":"resume-eligible","source":"daemon","pid":17}"#
        );
    }

    #[test]
    fn enum_strings_match_their_as_str() {
        for c in Cause::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        for m in [Mode::Fresh, Mode::Resume, Mode::Refused, Mode::Fail] {
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
        for e in Ev::ALL {
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
    }

    #[test]
    fn appends_and_rotates_keeping_every_line() {
        let dir = TempDir::new().unwrap();
        let mut w = writer(&dir, 600, 50);
        for i in 0..100 {
            w.append(&sample(i)).unwrap();
        }
        let files = log_files(w.path()).unwrap();
        assert!(files.len() > 5, "expected rotations, got {files:?}");
        let (entries, stats) = read_all(w.path()).unwrap();
        assert_eq!(stats.skipped, 0);
        let seen: Vec<u64> = entries.iter().map(|e| e.u64("deaths").unwrap()).collect();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        for f in &files {
            assert!(
                fs::metadata(f).unwrap().len() <= 600,
                "{} too big",
                f.display()
            );
        }
    }

    #[test]
    fn keeps_only_keep_rotated_files() {
        let dir = TempDir::new().unwrap();
        let mut w = writer(&dir, 300, 3);
        for i in 0..100 {
            w.append(&sample(i)).unwrap();
        }
        let files = log_files(w.path()).unwrap();
        assert_eq!(files.len(), 4, "{files:?}");
        let (entries, _) = read_all(w.path()).unwrap();
        let seen: Vec<u64> = entries.iter().map(|e| e.u64("deaths").unwrap()).collect();
        assert!(
            seen.windows(2).all(|w| w[1] == w[0] + 1),
            "contiguous: {seen:?}"
        );
        assert_eq!(*seen.last().unwrap(), 99);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_does_not_break_the_next_append() {
        let dir = TempDir::new().unwrap();
        let mut w = writer(&dir, 1 << 20, 5);
        w.append(&sample(1)).unwrap();
        {
            use std::io::Write;
            let mut f = OpenOptions::new().append(true).open(w.path()).unwrap();
            f.write_all(br#"{"ts":"2026-11-21T04:44:14.821Z","ev":"wa"#)
                .unwrap();
        }
        let (entries, stats) = read_all(w.path()).unwrap();
        assert_eq!((entries.len(), stats.skipped), (1, 1));
        w.append(&sample(2)).unwrap();
        let (entries, stats) = read_all(w.path()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(stats.skipped, 1);
        assert_eq!(entries[1].u64("deaths"), Some(2));
    }

    #[test]
    fn a_symlinked_log_is_refused() {
        let dir = TempDir::new().unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, "").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("lifecycle.log")).unwrap();
        let mut w = writer(&dir, 1 << 20, 5);
        assert!(matches!(w.append(&sample(1)), Err(Error::Unsafe { .. })));
        assert_eq!(fs::read_to_string(&target).unwrap(), "");
    }

    proptest::proptest! {
        /// A line of anything: parsing, folding into metrics and into a
        /// history never panic.
        #[test]
        fn any_line_is_read_safely(line in "\\PC{0,300}") {
            if let Some(e) = Entry::parse(&line) {
                let mut m = crate::metrics::Metrics::default();
                m.apply(&e);
                let _ = crate::why::history([&e]);
                let _ = crate::cmd::log::human(&e);
            }
            let _ = serde_json::from_str::<Record>(&line);
            let _ = line.parse::<Position>();
        }
    }

    #[test]
    fn long_texts_keep_their_end() {
        let long = format!("{}END", "x".repeat(5000));
        let r = Record::new(0, Ev::Wake, Source::Cli).last_lines(Some(&long));
        let kept = r.last_lines.unwrap();
        assert!(kept.ends_with("END") && kept.len() <= EXCERPT_MAX + 4);
    }
}

// ---- following the log -----------------------------------------------------

/// Where a follower is: a file (by device and inode, which survive the
/// renames of rotation) and a byte offset in it. Printed as `dev:ino:off`
/// (hex), it is the id of a line in the event stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}:{:x}:{:x}", self.dev, self.ino, self.offset)
    }
}

impl std::str::FromStr for Position {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        let mut it = s.split(':').map(|p| u64::from_str_radix(p, 16));
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(Ok(dev)), Some(Ok(ino)), Some(Ok(offset)), None) => {
                Ok(Position { dev, ino, offset })
            }
            _ => Err(()),
        }
    }
}

/// One line read by a follower, with the position just after it.
#[derive(Clone, Debug)]
pub struct Followed {
    pub entry: Entry,
    /// Resuming here continues after this line.
    pub next: Position,
}

/// Reads the log as a stream, losslessly: it keeps the file it is reading
/// open, and when that file is rotated away it first drains it (writers
/// never append to a rotated file), then walks the newer files in order.
/// A follower that falls behind loses nothing unless more than
/// `IAPEER_LIFECYCLE_LOG_KEEP` rotations pass it by, and then it says so.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<(File, (u64, u64))>,
    offset: u64,
    /// A line not yet finished by its writer.
    partial: Vec<u8>,
    /// Lines lost because the follower fell too far behind, or torn.
    pub gaps: usize,
}

impl Follower {
    /// Starts at the oldest retained line.
    pub fn from_start(path: &Path) -> Self {
        let mut f = Follower::empty(path);
        if let Ok(files) = log_files(path) {
            if let Some(first) = files.first() {
                f.open_path(first);
            }
        }
        f
    }

    /// Starts after the last line written so far.
    pub fn at_end(path: &Path) -> Self {
        let mut f = Follower::empty(path);
        if f.open_path(path) {
            if let Some((file, _)) = &f.file {
                f.offset = file.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        f
    }

    /// Resumes at `pos`; if that file is gone (rotated past the kept
    /// ones), starts at the oldest retained line and counts a gap.
    pub fn at(path: &Path, pos: Position) -> Self {
        let mut f = Follower::empty(path);
        let mut candidates = log_files(path).unwrap_or_default();
        candidates.reverse();
        for p in candidates {
            if let Ok(meta) = fs::metadata(&p) {
                if (meta.dev(), meta.ino()) == (pos.dev, pos.ino) {
                    f.open_path(&p);
                    f.offset = pos.offset.min(meta.len());
                    return f;
                }
            }
        }
        let mut f = Follower::from_start(path);
        f.gaps += 1;
        f
    }

    fn empty(path: &Path) -> Self {
        Follower {
            path: path.to_path_buf(),
            file: None,
            offset: 0,
            partial: Vec::new(),
            gaps: 0,
        }
    }

    fn open_path(&mut self, p: &Path) -> bool {
        match File::open(p).and_then(|f| f.metadata().map(|m| (f, (m.dev(), m.ino())))) {
            Ok(opened) => {
                self.file = Some(opened);
                self.offset = 0;
                self.partial.clear();
                true
            }
            Err(_) => false,
        }
    }

    /// Where the next line will come from.
    pub fn position(&self) -> Option<Position> {
        self.file.as_ref().map(|(_, (dev, ino))| Position {
            dev: *dev,
            ino: *ino,
            offset: self.offset - self.partial.len() as u64,
        })
    }

    /// Every whole line written since the last call, oldest first.
    pub fn poll(&mut self) -> Vec<Followed> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            if self.file.is_none() && !self.open_path(&self.path.clone()) {
                return out;
            }
            self.drain(&mut out);
            let (_, id) = self.file.as_ref().expect("opened above");
            let id = *id;
            let current = fs::metadata(&self.path).ok().map(|m| (m.dev(), m.ino()));
            if current == Some(id) {
                return out;
            }
            // Our file was rotated away (or the log was removed). Anything
            // written to it before the rotation is there now: drain again,
            // then move to the file written after it.
            self.drain(&mut out);
            if !self.partial.is_empty() {
                // A torn last line: its writer died mid-line.
                self.partial.clear();
                self.gaps += 1;
            }
            match self.successor(id) {
                Some(next) => {
                    if !self.open_path(&next) {
                        return out;
                    }
                }
                None => {
                    if current.is_none() {
                        // No current log yet: wait for the next writer.
                        self.file = None;
                    }
                    return out;
                }
            }
        }
        out
    }

    /// The file written right after the one with `id`: `.k-1` if it is
    /// `.k` now, the current log if it is `.1`. If it is no longer among
    /// the kept files, the oldest kept one (and the files between are lost).
    fn successor(&mut self, id: (u64, u64)) -> Option<PathBuf> {
        let mut rotated = rotated_files(&self.path).ok()?;
        rotated.sort_by_key(|r| r.0);
        let index = rotated.iter().find_map(|(n, p)| {
            fs::metadata(p)
                .ok()
                .filter(|m| (m.dev(), m.ino()) == id)
                .map(|_| *n)
        });
        match index {
            Some(1) => Some(self.path.clone()),
            Some(k) => rotated
                .iter()
                .find(|(n, _)| *n == k - 1)
                .map(|(_, p)| p.clone()),
            None => {
                self.gaps += 1;
                rotated
                    .last()
                    .map(|(_, p)| p.clone())
                    .or_else(|| Some(self.path.clone()))
            }
        }
    }

    fn drain(&mut self, out: &mut Vec<Followed>) {
        let Some((file, (dev, ino))) = &self.file else {
            return;
        };
        let (dev, ino) = (*dev, *ino);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match file.read_at(&mut buf, self.offset) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            self.offset += n as u64;
            let mut start = 0;
            for (i, b) in buf[..n].iter().enumerate() {
                if *b != b'\n' {
                    continue;
                }
                self.partial.extend_from_slice(&buf[start..i]);
                start = i + 1;
                let line = std::mem::take(&mut self.partial);
                let next = Position {
                    dev,
                    ino,
                    offset: self.offset - (n - start) as u64,
                };
                match std::str::from_utf8(&line)
                    .ok()
                    .and_then(|t| Entry::parse(t.trim_end()))
                {
                    Some(entry) => out.push(Followed { entry, next }),
                    None if line.iter().all(u8::is_ascii_whitespace) => {}
                    None => self.gaps += 1,
                }
            }
            self.partial.extend_from_slice(&buf[start..n]);
        }
    }
}

#[cfg(test)]
mod follow_tests {
    use super::*;
    use assert_fs::TempDir;

    fn line(i: u64) -> Record {
        let mut r = Record::new(1_795_236_254_821, Ev::Reset, Source::Cli).identity("alice");
        r.deaths = Some(i);
        r
    }

    fn seqs(v: &[Followed]) -> Vec<u64> {
        v.iter().map(|f| f.entry.u64("deaths").unwrap()).collect()
    }

    #[test]
    fn follows_across_rotations_without_loss_or_duplicates() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("lifecycle.log");
        let mut w = LogWriter::at(&path, 500, 50);
        let mut follower = Follower::from_start(&path);
        let mut seen = Vec::new();
        for i in 0..200 {
            w.append(&line(i)).unwrap();
            // Fall behind now and then, over several rotations.
            if i % 37 == 0 {
                seen.extend(seqs(&follower.poll()));
            }
        }
        seen.extend(seqs(&follower.poll()));
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        assert_eq!(follower.gaps, 0);
        assert!(follower.poll().is_empty());
    }

    #[test]
    fn positions_resume_exactly_after_a_line() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("lifecycle.log");
        let mut w = LogWriter::at(&path, 400, 50);
        for i in 0..10 {
            w.append(&line(i)).unwrap();
        }
        let mut f = Follower::from_start(&path);
        let got = f.poll();
        let resume = got[4].next;
        assert_eq!(resume.to_string().parse::<Position>(), Ok(resume));
        for i in 10..30 {
            w.append(&line(i)).unwrap();
        }
        let mut again = Follower::at(&path, resume);
        assert_eq!(seqs(&again.poll()), (5..30).collect::<Vec<_>>());
        assert_eq!(again.gaps, 0);
    }

    #[test]
    fn a_follower_left_behind_past_the_kept_files_reports_a_gap() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("lifecycle.log");
        let mut w = LogWriter::at(&path, 300, 2);
        w.append(&line(0)).unwrap();
        let mut f = Follower::from_start(&path);
        assert_eq!(seqs(&f.poll()), [0]);
        for i in 1..50 {
            w.append(&line(i)).unwrap();
        }
        let got = seqs(&f.poll());
        assert!(f.gaps > 0);
        assert_eq!(*got.last().unwrap(), 49);
    }

    #[test]
    fn a_line_being_written_waits_until_it_is_whole() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("lifecycle.log");
        let text = line(7).to_line();
        fs::write(&path, &text[..10]).unwrap();
        let mut f = Follower::from_start(&path);
        assert!(f.poll().is_empty());
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut file, format!("{}\n", &text[10..]).as_bytes()).unwrap();
        assert_eq!(seqs(&f.poll()), [7]);
    }
}
