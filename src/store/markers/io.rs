//! One file under the state directory, read and written as DESIGN §2 asks:
//! opened relative to the directory's own descriptor without following
//! symlinks, refused unless a regular file of this user's, bounded in size,
//! and written atomically (temp file, fsync, rename, fsync the folder).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, Mode, SFlag};
use nix::unistd::{self, UnlinkatFlags};

use super::{file_name, Marker, StateDir};
use crate::core::error::{Error, Result};
use crate::core::identity::Identity;
use crate::store::fsutil::check_owner;

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

pub(super) enum Contents {
    Bytes(Vec<u8>),
    TooBig { size: u64 },
}

impl StateDir {
    /// Reads a whole marker of at most `cap` bytes; `None` when missing.
    pub(super) fn read(&self, id: &Identity, m: Marker, cap: usize) -> Result<Option<Contents>> {
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
    pub(super) fn read_bounded(
        &self,
        id: &Identity,
        m: Marker,
        cap: usize,
    ) -> Result<Option<Vec<u8>>> {
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
    pub(super) fn write(&self, id: &Identity, m: Marker, bytes: &[u8]) -> Result<()> {
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

    pub(super) fn sync_dir(&self) -> Result<()> {
        unistd::fsync(self.dir.as_fd()).map_err(|e| Error::io(&self.path, "sync", e.into()))
    }
}

pub(super) fn open_error(path: &Path, e: Errno) -> Error {
    match e {
        Errno::ELOOP => Error::unsafe_file(path, "it is a symlink"),
        e => Error::io(path, "open", e.into()),
    }
}

pub(super) fn check_stat(path: &Path, st: &stat::FileStat) -> Result<u64> {
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

pub(super) fn check_regular_owned(path: &Path, fd: &OwnedFd) -> Result<u64> {
    let st = stat::fstat(fd).map_err(|e| Error::io(path, "inspect", e.into()))?;
    check_stat(path, &st)
}
