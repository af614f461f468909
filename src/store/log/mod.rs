//! The durable decision log, `logs/iapeer/lifecycle.log` (DESIGN §8).
//!
//! One JSON object per line, fields in a fixed order (the order of
//! [`Record`]'s fields), values strings or numbers only, so that `grep` and
//! `jq` both work. The schema is documented in `schema.md` beside
//! this file; `fixtures/lifecycle.golden.jsonl` pins it.
//!
//! Appending: every line is one `write()` on an `O_APPEND` descriptor
//! under an exclusive `flock` on `lifecycle.log.lock` shared by every
//! process that writes, then `fdatasync` after the lock is let go. Under
//! the lock the writer checks that its descriptor is still the current file
//! (another process may have rotated it), rotates by rename when the next
//! line would pass `IAPEER_LIFECYCLE_LOG_MAX_BYTES`, and repairs a torn
//! last line left by a power loss by starting its line on a fresh one. So
//! no line is lost to rotation, and no line is ever written into a file
//! already rotated away — which is what lets a follower read the log
//! losslessly.
//!
//! The flush is outside the lock so that writers do not take turns on it:
//! each waits for its own `fdatasync`, which also covers every line written
//! before it, so concurrent writers share one flush (a group commit) and
//! each returns only once its line is durable. A writer that finds the
//! lock held yields a few times, then waits for it in the kernel (never
//! sleeping while the lock lies free), for at most `LOCK_WAIT`.
//!
//! Reading walks `lifecycle.log.N` … `.1`, then `lifecycle.log`, oldest
//! first, and skips torn lines.

mod backward;
pub(crate) mod checkpoint;
mod files;
mod follow;
mod read;

pub(crate) use backward::{for_each_backward, holding};
pub use files::log_files;
use files::{numbered, rotated_files};
pub use follow::Position;
pub(crate) use follow::{Followed, Follower, LogChanges};
pub(crate) use read::for_each_matching;
pub use read::{read_all, ReadStats};

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::core::error::{Error, Result};
use crate::core::record::Record;
use crate::store::config::Config;
use crate::store::fsutil::Held;

/// How long an append waits for another process's append or rotation.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Tries at the lock, yielding between them, before waiting in the kernel.
const SPINS: usize = 64;

/// Appends to the log; one per process is enough, and it may be shared
/// behind a mutex by threads.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    lock_path: PathBuf,
    max_bytes: u64,
    keep: u32,
    /// The open log and its (dev, ino), to notice a rotation by another
    /// process; shared with the flushes still under way.
    file: Option<(Arc<File>, (u64, u64))>,
    lock: Option<File>,
    lock_wait: Duration,
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
            lock_wait: LOCK_WAIT,
        }
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&mut self, record: &Record) -> Result<()> {
        self.append_line(record.to_line().as_bytes())
    }

    /// Appends one line (given without its newline) durably.
    pub fn append_line(&mut self, line: &[u8]) -> Result<()> {
        self.write_line(line)?.sync()
    }

    /// Writes `record`'s line; it is durable once the returned flush is
    /// done. Threads sharing one writer behind a lock let it go before
    /// flushing, so that they too share their flushes.
    pub fn write(&mut self, record: &Record) -> Result<Unsynced> {
        self.write_line(record.to_line().as_bytes())
    }

    /// [`LogWriter::write`] for a line given without its newline.
    pub fn write_line(&mut self, line: &[u8]) -> Result<Unsynced> {
        debug_assert!(!line.contains(&b'\n'));
        self.open_lock()?;
        let lock = self.lock.as_ref().expect("open_lock opened it");
        let waited = lock_bounded(lock, &self.lock_path, self.lock_wait)?;
        let result = self.append_locked(line);
        // Closing would release too; unlock now so a cached descriptor does
        // not keep others waiting.
        let _ = self.lock.as_ref().map(File::unlock);
        drop(waited);
        result?;
        let (file, _) = self.file.as_ref().expect("append_locked opened the log");
        Ok(Unsynced {
            file: Arc::clone(file),
            path: self.path.clone(),
        })
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
        Ok(())
    }

    /// Makes sure `self.file` is the current log (reopening after another
    /// process rotated it) and returns its size.
    fn current_size(&mut self) -> Result<u64> {
        if let Some((_, id)) = &self.file {
            if let Ok(meta) = fs::symlink_metadata(&self.path) {
                // The same file as ours: its size is ours (read under the
                // lock, so no other writer changes it meanwhile).
                if (meta.dev(), meta.ino()) == *id {
                    return Ok(meta.len());
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
        self.file = Some((Arc::new(file), (meta.dev(), meta.ino())));
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
                crate::store::config::ensure_private_dir(dir, true)?;
            }
            let file = crate::store::fsutil::open_lock_file(&self.lock_path)?;
            self.lock = Some(file);
        }
        Ok(())
    }
}

/// A line written, not yet flushed.
#[derive(Debug)]
#[must_use = "the line is durable only once flushed"]
pub struct Unsynced {
    file: Arc<File>,
    path: PathBuf,
}

impl Unsynced {
    /// Waits until the line (and every line written before it) is on disk.
    pub fn sync(self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(&self.path, "sync", e))
    }
}

/// Takes the lock for at most `wait` ([`fsutil::flock_within`]): tried
/// on `file` a few times first, as it is held for a write's time only (the
/// flush is outside it). The lock is held on `file`, or through the file
/// returned, let go when dropped.
fn lock_bounded(file: &File, path: &Path, wait: Duration) -> Result<Option<File>> {
    let own = || crate::store::fsutil::open_lock_file(path);
    match crate::store::fsutil::flock_within(file, path, SPINS, wait, own)? {
        Some(Held::Here) => Ok(None),
        Some(Held::Through(held)) => Ok(Some(held)),
        None => Err(Error::failed(
            path.display().to_string(),
            format!(
                "another process held the log lock for {:.1}s",
                wait.as_secs_f64()
            ),
            "find it with `fuser` and check it is not stopped",
        )),
    }
}

fn ends_with_newline(file: &File, size: u64) -> bool {
    let mut last = [0u8; 1];
    match file.read_at(&mut last, size - 1) {
        Ok(1) => last[0] == b'\n',
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::vocab::{Action, Cause, Ev, Mode, Outcome, Source};
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
            .outcome(Outcome::ResumeEligible);
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
        for m in Mode::ALL {
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
        for e in Ev::ALL {
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
        for a in Action::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        for o in Outcome::ALL {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
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

    /// Every value a line can carry is documented beside the writer, so
    /// the schema cannot drift from the types.
    #[test]
    fn the_schema_names_every_value() {
        let doc = include_str!("schema.md");
        let values = Ev::ALL
            .iter()
            .map(|v| v.as_str())
            .chain(Mode::ALL.iter().map(|v| v.as_str()))
            .chain(Action::ALL.iter().map(|v| v.as_str()))
            .chain(Cause::ALL.iter().map(|v| v.as_str()))
            .chain(Outcome::ALL.iter().map(|v| v.as_str()));
        let missing: Vec<&str> = values
            .filter(|v| !doc.contains(&format!("`{v}`")))
            .collect();
        assert!(missing.is_empty(), "schema.md lacks {missing:?}");
    }

    #[test]
    fn a_lock_held_for_ever_is_an_error_in_bounded_time_and_is_not_kept_after() {
        let dir = TempDir::new().unwrap();
        let mut w = writer(&dir, 1 << 20, 3);
        w.lock_wait = Duration::from_millis(200);
        w.append(&sample(0)).unwrap();
        // Another open file of the lock: another process, as flock sees it.
        let holder = File::open(&w.lock_path).unwrap();
        holder.lock().unwrap();
        let start = std::time::Instant::now();
        let e = w.append(&sample(1)).unwrap_err().to_string();
        assert!(e.contains("held the log lock"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
        holder.unlock().unwrap();
        // The waiter left behind takes the lock and lets it go again.
        let other = File::open(&w.lock_path).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while other.try_lock().is_err() {
            assert!(std::time::Instant::now() < deadline, "the lock was kept");
            std::thread::sleep(Duration::from_millis(5));
        }
        other.unlock().unwrap();
        w.append(&sample(2)).unwrap();
        let (entries, _) = read_all(w.path()).unwrap();
        let seqs: Vec<u64> = entries.iter().filter_map(|e| e.u64("deaths")).collect();
        assert_eq!(seqs, vec![0, 2], "the refused line is not written");
    }
}
