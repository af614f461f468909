//! The daemon's single-instance lock, `run/daemon.lock`: an `flock` held
//! for the daemon's whole life. The file records the holder's pid, for
//! people; the lock, not the pid, is what counts.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::core::error::{Error, Result};

/// Held while the daemon runs; released when dropped (or when the process
/// dies, however it dies).
#[derive(Debug)]
pub(crate) struct DaemonLock {
    _file: File,
}

/// How long a starting daemon waits for the lock: a daemon just killed can
/// leave it held for a moment by a child between fork and exec.
const WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Takes the lock, or says who holds it.
pub(crate) fn acquire(path: &Path) -> Result<DaemonLock> {
    let mut file = crate::store::fsutil::open_lock_file(path)?;
    let start = std::time::Instant::now();
    let taken = loop {
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other,
        }
    };
    match taken {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(path).unwrap_or_default();
            let holder = holder.trim();
            return Err(Error::failed(
                "daemon",
                format!(
                    "another daemon is already running on this home ({} holds {})",
                    if holder.is_empty() {
                        "a process".to_owned()
                    } else {
                        format!("pid {holder}")
                    },
                    path.display()
                ),
                "stop it first (e.g. `systemctl --user stop iapeer`), or use another IAPEER_HOME",
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(path, "lock", e)),
    }
    file.set_len(0).map_err(|e| Error::io(path, "write", e))?;
    writeln!(file, "{}", std::process::id()).map_err(|e| Error::io(path, "write", e))?;
    Ok(DaemonLock { _file: file })
}

/// Is a daemon running on this home?
pub(crate) fn is_running(path: &Path) -> bool {
    crate::store::fsutil::lock_held(path)
}
