//! The per-identity wake lock, `state/lifecycle/<id>.lock` (DESIGN §2): an
//! `flock` held while a wake or a supervise step acts on the identity,
//! released when dropped; the file is never deleted while held.

use std::fs::File;
use std::time::{Duration, Instant};

use nix::fcntl::{self, OFlag};
use nix::sys::stat::Mode;

use super::io::{check_regular_owned, open_error};
use super::{file_name, Marker, StateDir};
use crate::core::error::{Error, Result};
use crate::core::identity::Identity;

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

impl StateDir {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::markers::tests::{id, store};

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
}
