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
use crate::store::fsutil::{self, Held};

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
    /// Takes the per-identity wake lock, waiting at most `wait`: in the
    /// kernel, so it is had the moment its holder lets it go.
    pub(crate) fn lock(&self, id: &Identity, wait: Duration) -> Result<WakeLock, LockFailure> {
        let file = self.open_lock(id).map_err(LockFailure::Error)?;
        let start = Instant::now();
        let path = self.path_of(id, Marker::Lock);
        match fsutil::flock_within(&file, &path, 1, wait, || self.open_lock(id)) {
            Ok(Some(Held::Here)) => Ok(WakeLock { _file: file }),
            Ok(Some(Held::Through(held))) => Ok(WakeLock { _file: held }),
            Ok(None) => Err(LockFailure::Held {
                waited: start.elapsed(),
            }),
            Err(e) => Err(LockFailure::Error(e)),
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
        // The waiter that gave up may take it as it is let go, and lets it
        // go at once: it is free again soon, never kept by nobody.
        let bound = Instant::now() + Duration::from_secs(5);
        while s.try_lock(&a).unwrap().is_none() {
            assert!(Instant::now() < bound, "the lock stayed held by nobody");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_waiter_has_the_lock_once_its_holder_lets_it_go() {
        let (_dir, s) = store();
        let a = id("a");
        let held = s.lock(&a, Duration::ZERO).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let got = s.lock(&a, Duration::from_secs(30));
                tx.send(got.is_ok()).unwrap();
                // Held while this waiter keeps it.
                assert!(s.try_lock(&a).unwrap().is_none());
            });
            // Still waiting while it is held.
            assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
            drop(held);
            assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
        });
    }
}
