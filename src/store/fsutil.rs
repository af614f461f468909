//! Small file helpers shared by the path-based stores (peer definitions,
//! metrics): atomic replacement and bounded reads of JSONL heads and tails.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::core::error::{Error, Result};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` atomically: temp file in the same folder,
/// fsync, rename, fsync the folder. A crash leaves the old file or the new.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
            .map_err(|e| Error::io(&temp, "create", e))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(path, "write", e))?;
        fs::rename(&temp, path).map_err(|e| Error::io(path, "replace", e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, "sync", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Renames `from` to `to` durably: the rename, then an fsync of the
/// folder both are in.
pub(crate) fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io(from, "rename", e))?;
    let dir = to.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, "sync", e))
}

/// The first whole lines of a file, reading at most `max` bytes.
pub(crate) fn head_lines(path: &Path, max: usize) -> std::io::Result<Vec<String>> {
    let mut buf = Vec::with_capacity(max.min(64 * 1024));
    File::open(path)?.take(max as u64).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    if buf.len() == max {
        // The last piece may be cut short.
        lines.pop();
    }
    Ok(lines.into_iter().filter(|l| !l.trim().is_empty()).collect())
}

/// The last whole lines of a file, newest last, reading at most `max` bytes
/// from its end.
pub(crate) fn tail_lines(path: &Path, max: u64) -> std::io::Result<Vec<String>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut pieces: Vec<&str> = text.split('\n').collect();
    if start > 0 && !pieces.is_empty() {
        // The first piece may start mid-line.
        pieces.remove(0);
    }
    Ok(pieces
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect())
}

/// The `*.json` definitions in `dir` as (stem, path), sorted by stem;
/// temp files (a leading dot) are skipped and a missing folder is empty.
pub(crate) fn json_files(dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, "list", e)),
    };
    let mut files: Vec<(String, std::path::PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".json")?.to_owned();
            (!stem.starts_with('.')).then(|| (stem, e.path()))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Opens (creating) a lock file: 0600, never through a symlink.
pub(crate) fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Error::unsafe_file(path, "it is a symlink"),
            _ => Error::io(path, "open", e),
        })
}

/// A file or folder under the home must be this user's: another user could
/// otherwise plant what iapeer then trusts.
pub(crate) fn check_owner(path: &Path, uid: u32) -> Result<()> {
    let me = my_uid();
    if uid != me {
        return Err(Error::unsafe_file(
            path,
            format!("it is owned by uid {uid}, not by uid {me}"),
        ));
    }
    Ok(())
}

/// This process's effective uid, asked of the kernel once: iapeer never
/// changes it, and a check per file read (10,000 peer definitions for one
/// `status`) would otherwise cost a system call each.
pub(crate) fn my_uid() -> u32 {
    static UID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UID.get_or_init(|| nix::unistd::geteuid().as_raw())
}

/// Does some process hold the `flock` on `path` (the daemon's lock, say)?
/// A missing file is held by no one.
pub(crate) fn lock_held(path: &Path) -> bool {
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    else {
        return false;
    };
    matches!(file.try_lock_shared(), Err(fs::TryLockError::WouldBlock))
}

/// Where [`flock_within`] holds the lock it took.
#[derive(Debug)]
pub(crate) enum Held {
    /// On the file it was asked on.
    Here,
    /// On another open file of the lock, held until it is dropped.
    Through(File),
}

/// Takes the exclusive `flock` on `file` (the lock at `path`) within
/// `wait`, or `None` when another process held it all that time. First
/// `tries` tries, giving the CPU up between them; then, when there is any
/// wait left, a wait in the kernel on a helper thread with an open file of
/// its own (`own`): a waiter never sleeps while the lock lies free, and a
/// holder stopped for ever costs it an error, not a hang. A lock that
/// thread takes after the waiter gave up is its own, and it lets it go.
pub(crate) fn flock_within(
    file: &File,
    path: &Path,
    tries: usize,
    wait: std::time::Duration,
    own: impl FnOnce() -> Result<File>,
) -> Result<Option<Held>> {
    for i in 0..tries.max(1) {
        match file.try_lock() {
            Ok(()) => return Ok(Some(Held::Here)),
            Err(fs::TryLockError::WouldBlock) if i + 1 < tries => std::thread::yield_now(),
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(path, "lock", e)),
        }
    }
    if wait.is_zero() {
        return Ok(None);
    }
    let own = own()?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    // Set by a waiter that gave up, under this mutex, so that a lock taken
    // after it did is let go again, never kept by nobody.
    let abandoned = std::sync::Arc::new(std::sync::Mutex::new(false));
    let gave_up = std::sync::Arc::clone(&abandoned);
    std::thread::Builder::new()
        .name("lock-wait".into())
        .spawn(move || {
            let taken = own.lock().map(|()| own);
            let gone = gave_up.lock().unwrap_or_else(|p| p.into_inner());
            if !*gone {
                let _ = tx.send(taken);
            }
            // Given up on: dropped here, and the lock with it.
        })
        .map_err(|e| Error::io(path, "lock (a thread to wait on)", e))?;
    let got = rx.recv_timeout(wait).or_else(|_| {
        *abandoned.lock().unwrap_or_else(|p| p.into_inner()) = true;
        // Taken just as the wait ran out: ours after all.
        rx.try_recv()
    });
    match got {
        Ok(Ok(held)) => Ok(Some(Held::Through(held))),
        Ok(Err(e)) => Err(Error::io(path, "lock", e)),
        Err(_) => Ok(None),
    }
}
