//! Definition files on disk: `peers/<name>.json` and `pools/<name>.json`,
//! read as untrusted input (a regular file of bounded size) and written
//! atomically. What a definition means is `core::peer` and `core::pool`.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::core::error::{Error, Result};
use crate::core::identity::Identity;
use crate::core::peer::{self, Peer};
use crate::core::pool::{self, Pool};
use crate::store::config::{self, Paths};
use crate::store::fsutil;

const DEFINITION_MAX: u64 = 1024 * 1024;

/// Loads `peers/<id>.json`.
pub(crate) fn load_peer(paths: &Paths, id: &Identity) -> Result<Peer> {
    let file = paths.peer_file(id.as_str());
    let bytes = read_definition(&file).map_err(|e| match e {
        Error::Io { source, .. } if source.kind() == ErrorKind::NotFound => Error::NoPeer {
            name: id.to_string(),
            path: file.clone(),
        },
        e => e,
    })?;
    peer::parse(&file, &bytes, Some(id))
}

/// Writes a definition atomically.
pub(crate) fn save_peer(paths: &Paths, peer: &Peer) -> Result<()> {
    let file = paths.peer_file(&peer.name);
    let mut body = serde_json::to_vec_pretty(peer).expect("a peer always serializes");
    body.push(b'\n');
    fsutil::write_atomic(&file, &body)
}

/// Every definition under `peers/`, sorted by name; a broken one is returned
/// as its error, so one bad file never hides the others.
pub(crate) fn load_peers(paths: &Paths) -> Result<Vec<Result<Peer>>> {
    read_all(&paths.peers, |stem, path, bytes| {
        let id = Identity::parse(stem).map_err(|e| {
            Error::input(path.display().to_string(), e.to_string(), "rename the file")
        })?;
        peer::parse(path, &bytes, Some(&id))
    })
}

/// Reads a definition file: a regular file of reasonable size, that only
/// its owner (this user) can change, in a folder only this user can write.
/// A definition is a command the daemon runs: one another user could have
/// written or swapped is never read.
pub(crate) fn read_definition(file: &Path) -> Result<Vec<u8>> {
    if let Some(dir) = file.parent() {
        check_definition_dir(dir)?;
    }
    read_definition_file(file, None)
}

/// `dir` open (never through a symlink), if it passes as a folder of
/// definitions as opened: its files are then opened by name in it, so the
/// folder checked is the folder read from, and the walk of its whole path
/// is spared for each. `None` when it cannot be opened or does not pass.
fn open_checked_dir(dir: &Path) -> Option<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
        .ok()?;
    let meta = opened.metadata().ok()?;
    check_dir(dir, &meta).is_ok().then_some(opened)
}

/// Definitions read by one thread at least: fewer are read faster than a
/// thread starts.
const PER_THREAD: usize = 1024;

/// Every definition in `dir` read by `parse`, in name order, the folder
/// checked once for all of them (a folder another user may write in fails
/// every one). Thousands are read on as many threads as there are cores:
/// opening and reading a small file is a few system calls, and a fleet's
/// worth of them is most of what `status` and `ls` cost.
fn read_all<T: Send>(
    dir: &Path,
    parse: impl Fn(&str, &Path, Vec<u8>) -> Result<T> + Sync,
) -> Result<Vec<Result<T>>> {
    let files = fsutil::json_files(dir)?;
    // A folder that does not pass fails each file with its reason.
    let checked = open_checked_dir(dir);
    let read = |(stem, path): &(String, PathBuf)| {
        let bytes = match &checked {
            Some(opened) => read_definition_file(path, Some(opened))?,
            None => read_definition(path)?,
        };
        parse(stem, path, bytes)
    };
    let read_chunk = |chunk: &[(String, PathBuf)]| chunk.iter().map(read).collect::<Vec<_>>();
    let threads = match files.len() / PER_THREAD {
        // Spared the count of cores too: a few files read from the cgroup.
        0 | 1 => 1,
        wanted => std::thread::available_parallelism().map_or(1, |n| n.get().min(wanted)),
    };
    if threads == 1 {
        return Ok(read_chunk(&files));
    }
    let mut chunks = files.chunks(files.len().div_ceil(threads));
    let first = chunks.next().unwrap_or_default();
    Ok(std::thread::scope(|s| {
        let others: Vec<_> = chunks
            .map(|chunk| {
                std::thread::Builder::new()
                    .name("definitions".into())
                    .spawn_scoped(s, move || read_chunk(chunk))
                    // No thread to be had: read that part here, after.
                    .map_err(|_| chunk)
            })
            .collect();
        let mut all = read_chunk(first);
        for other in others {
            all.extend(match other {
                Ok(thread) => thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(chunk) => read_chunk(chunk),
            });
        }
        all
    }))
}

/// The folder of definitions: this user's, and only this user may write
/// in it.
fn check_definition_dir(dir: &Path) -> Result<()> {
    let d = fs::symlink_metadata(dir).map_err(|e| Error::io(dir, "inspect", e))?;
    check_dir(dir, &d)
}

/// [`check_definition_dir`], of what `dir` was found to be.
fn check_dir(dir: &Path, d: &fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    fsutil::check_owner(dir, d.uid())?;
    if d.mode() & 0o022 != 0 {
        return Err(Error::unsafe_file(
            dir,
            format!(
                "others may write in it (mode {:o}), so a definition in it could be anyone's; \
                 `chmod 700 {}`",
                d.mode() & 0o777,
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// One definition file, opened without following a symlink and checked on
/// the open file (so it cannot be swapped between the check and the read);
/// by its name in `dir` when its folder is open already.
fn read_definition_file(file: &Path, dir: Option<&fs::File>) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    // O_NONBLOCK: a FIFO planted here must not hang the open.
    let flags = libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    let opened = match (dir, file.file_name()) {
        (Some(dir), Some(name)) => nix::fcntl::openat(
            dir,
            name,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::from_bits_truncate(flags),
            nix::sys::stat::Mode::empty(),
        )
        .map(fs::File::from)
        .map_err(std::io::Error::from),
        _ => fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(file),
    };
    let f = opened.map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => Error::unsafe_file(
            file,
            "it is a symlink; definitions are read only from real files",
        ),
        _ => Error::io(file, "read", e),
    })?;
    let meta = f.metadata().map_err(|e| Error::io(file, "read", e))?;
    if !meta.is_file() {
        return Err(Error::unsafe_file(file, "it is not a regular file"));
    }
    fsutil::check_owner(file, meta.uid())?;
    if meta.mode() & 0o022 != 0 {
        return Err(Error::unsafe_file(
            file,
            format!(
                "others may change it (mode {:o}); `chmod 600 {}`",
                meta.mode() & 0o777,
                file.display()
            ),
        ));
    }
    if meta.len() > DEFINITION_MAX {
        return Err(Error::unsafe_file(
            file,
            format!(
                "it is {} bytes; a definition is at most {DEFINITION_MAX}",
                meta.len()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(DEFINITION_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(file, "read", e))?;
    Ok(bytes)
}

pub(crate) fn pool_file(paths: &Paths, name: &str) -> PathBuf {
    paths.pools.join(format!("{name}.json"))
}

pub(crate) fn load_pool(paths: &Paths, name: &str) -> Result<Pool> {
    Identity::parse(name)?;
    let file = pool_file(paths, name);
    let bytes = read_definition(&file).map_err(|e| match e {
        Error::Io { source, .. } if source.kind() == ErrorKind::NotFound => Error::input(
            format!("pool {name}"),
            format!("it is not defined ({} does not exist)", file.display()),
            "see `iapeer pool ls`, or define it with `iapeer pool add`",
        ),
        e => e,
    })?;
    pool::parse(&file, &bytes, Some(name))
}

/// The journal of a pool being removed: its definition, renamed aside
/// (no longer a pool the daemon syncs), kept until every member is gone.
pub(crate) fn pool_removal(paths: &Paths, name: &str) -> PathBuf {
    paths.pools.join(format!("{name}.json.removing"))
}

/// A pool whose removal was begun and not finished, if there is one.
pub(crate) fn load_pool_removal(paths: &Paths, name: &str) -> Result<Option<Pool>> {
    Identity::parse(name)?;
    let file = pool_removal(paths, name);
    match read_definition(&file) {
        Ok(bytes) => pool::parse(&file, &bytes, Some(name)).map(Some),
        Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every pool, sorted by name; a broken one as its error.
pub(crate) fn load_pools(paths: &Paths) -> Result<Vec<Result<Pool>>> {
    read_all(&paths.pools, |stem, path, bytes| {
        pool::parse(path, &bytes, Some(stem))
    })
}

/// Refuses a pool whose members would take a name another peer or pool
/// already has.
pub(crate) fn check_collisions(paths: &Paths, pool: &Pool) -> Result<()> {
    let mine: std::collections::BTreeSet<Identity> = pool.members().into_iter().collect();
    for other in load_pools(paths)?.into_iter().flatten() {
        if other.name == pool.name {
            continue;
        }
        if let Some(shared) = other.members().into_iter().find(|m| mine.contains(m)) {
            return Err(Error::input(
                format!("pool {}", pool.name),
                format!(
                    "its member {shared} is also a member of pool {}",
                    other.name
                ),
                "give the pools different prefixes or index ranges",
            ));
        }
    }
    for m in &mine {
        match load_peer(paths, m) {
            Ok(p) if p.pool.as_deref() != Some(&pool.name) => {
                return Err(Error::input(
                    format!("pool {}", pool.name),
                    format!(
                        "its member {m} would replace the peer {m} defined in {}",
                        paths.peer_file(m.as_str()).display()
                    ),
                    "pick a prefix or range that leaves existing peers alone, or remove that peer",
                ))
            }
            Ok(_) | Err(Error::NoPeer { .. }) => {}
            // A broken definition with that name is still someone's.
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes the pool's member definitions where they are missing or out of
/// date; returns how many were written.
pub(crate) fn sync_pool(paths: &Paths, pool: &Pool) -> Result<usize> {
    let mut written = 0;
    for position in 0..pool.max {
        let member = pool.member(position);
        let current = load_peer(paths, &member.identity()).ok();
        if current.as_ref() != Some(&member) {
            save_peer(paths, &member)?;
            written += 1;
        }
    }
    Ok(written)
}

/// Writes a pool definition.
pub(crate) fn save_pool(paths: &Paths, pool: &Pool) -> Result<()> {
    config::ensure_private_dir(&paths.pools, true)?;
    let mut body = serde_json::to_vec_pretty(pool).expect("a pool always serializes");
    body.push(b'\n');
    fsutil::write_atomic(&pool_file(paths, &pool.name), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_file_is_read_like_a_peer_definition_regular_and_bounded() {
        let home = assert_fs::TempDir::new().unwrap();
        let paths = Paths::for_home(home.path(), None, 1000);
        fs::create_dir_all(pool_file(&paths, "dir")).unwrap();
        let err = load_pool(&paths, "dir").unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        fs::write(pool_file(&paths, "big"), vec![b' '; 2 * 1024 * 1024]).unwrap();
        let err = load_pool(&paths, "big").unwrap_err().to_string();
        assert!(err.contains("a definition is at most"), "{err}");
        let err = load_pool(&paths, "none").unwrap_err().to_string();
        assert!(err.contains("it is not defined"), "{err}");
    }

    /// A fleet is read on several threads: every definition comes back
    /// once, in name order, and a broken one in its place as its error.
    #[test]
    fn thousands_of_definitions_come_back_in_order_with_the_broken_in_place() {
        let home = assert_fs::TempDir::new().unwrap();
        let paths = Paths::for_home(home.path(), None, fsutil::my_uid());
        fs::create_dir_all(&paths.peers).unwrap();
        fs::set_permissions(
            &paths.peers,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let n = 3 * PER_THREAD + 7;
        let name = |i: usize| format!("p{i:05}");
        for i in 0..n {
            let body = if i % 1000 == 999 {
                "{ not json".to_owned()
            } else {
                serde_json::json!({ "name": name(i), "cwd": "/tmp", "runtime": "shell", "command": ["true"] })
                    .to_string()
            };
            fs::write(paths.peer_file(&name(i)), body).unwrap();
        }
        let all = load_peers(&paths).unwrap();
        assert_eq!(all.len(), n);
        for (i, p) in all.iter().enumerate() {
            match p {
                Ok(p) => assert_eq!(p.name, name(i)),
                Err(e) => {
                    assert_eq!(i % 1000, 999, "{e}");
                    assert!(e.to_string().contains(&name(i)), "{e}");
                }
            }
        }
        assert_eq!(all.iter().filter(|p| p.is_err()).count(), n / 1000);
    }
}
