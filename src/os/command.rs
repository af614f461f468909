//! Running a helper program (tmux): started clean of what this process did
//! to its own signals, with a deadline on the whole call, its output read
//! without blocking past it.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Every helper process starts clean, whatever this process did to its own
/// signals: an empty signal mask (the daemon blocks SIGTERM, SIGINT and
/// SIGHUP for its signal thread, and a tmux server that inherited that
/// mask would ignore `kill-server`), default SIGPIPE and SIGXFSZ for the
/// agents, and — on Linux — death with the thread that started it, so a
/// launcher killed mid-launch leaves at most a half-started server (which
/// the next launcher ends; see `end_strays`). Short calls too, though
/// this means fork, not std's posix_spawn: that keeps the caller's mask,
/// and a tmux client with SIGTERM blocked outlives a `pkill`.
pub(crate) fn clean_child(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls (sigemptyset, pthread_sigmask,
    // signal, prctl, getppid, _exit) between fork and exec, touching only
    // the child.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            if libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
            #[cfg(target_os = "linux")]
            {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The launcher may have died before the line above: then
                // nobody will wait for us, and we hold its descriptors.
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
            }
            #[cfg(not(target_os = "linux"))]
            let _ = parent;
            Ok(())
        });
    }
}

/// Where `program` is found on `PATH`, as `execvp` would find it: the
/// first directory holding an executable file of that name. A name with a
/// `/`, or one not found (not installed yet: the call then fails, and says
/// so), is given back as it is. Found once, it spares every later start
/// the walk through `PATH` (a failed `execve` per directory before it).
pub(crate) fn on_path(program: &std::ffi::OsStr) -> std::ffi::OsString {
    found_in(program, &std::env::var_os("PATH").unwrap_or_default())
}

/// [`on_path`] with `path` for `PATH`.
fn found_in(program: &std::ffi::OsStr, path: &std::ffi::OsStr) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    if program.is_empty() || program.as_bytes().contains(&b'/') {
        return program.to_owned();
    }
    std::env::split_paths(path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map_or_else(|| program.to_owned(), std::path::PathBuf::into_os_string)
}

/// How a call went wrong; the caller words it (it knows what it ran).
#[derive(Debug)]
pub(crate) enum CallError {
    Spawn(std::io::Error),
    Timeout,
    Failed(String),
}

/// Runs `cmd` with a deadline, collecting stdout; a non-zero exit is
/// `Failed(stderr)`.
pub(crate) fn call(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<String, CallError> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(CallError::Spawn)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // On its own thread, so a tmux that stops reading cannot block us
        // past the deadline; a failed write shows up as tmux's own error.
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let deadline = Instant::now() + timeout;
    let (out, err) = match read_both(&mut child, deadline) {
        Some(pair) => pair,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(CallError::Timeout);
        }
    };
    let status = match wait_exit(&mut child, deadline) {
        Ok(Some(s)) => s,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(CallError::Timeout);
        }
        Err(e) => return Err(CallError::Spawn(e)),
    };
    if status.success() {
        Ok(out)
    } else {
        use std::os::unix::process::ExitStatusExt;
        Err(CallError::Failed(if !err.trim().is_empty() {
            err
        } else if let Some(code) = status.code() {
            format!("nothing, and exited with code {code}")
        } else {
            format!(
                "nothing, and was killed by signal {}",
                status.signal().unwrap_or(0)
            )
        }))
    }
}

/// Waits for the child to exit, or gives up at `deadline` (`None`): on
/// its exit notification where there is one, as the call is over the
/// moment tmux is (a nap between looks cost every call a millisecond).
fn wait_exit(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    if let Some(status) = child.try_wait()? {
        return Ok(Some(status));
    }
    let pid = i32::try_from(child.id()).unwrap_or(0);
    // Our own child, not yet waited for: the pid is still its own.
    if let Ok(Some(handle)) = crate::os::process::ProcessHandle::open(pid, None) {
        let left = deadline.saturating_duration_since(Instant::now());
        return if handle.wait_exit(left) {
            child.wait().map(Some)
        } else {
            Ok(None)
        };
    }
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Reads stdout and stderr to their ends, or gives up at `deadline`.
fn read_both(child: &mut Child, deadline: Instant) -> Option<(String, String)> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut stdout = child.stdout.take()?;
    let mut stderr = child.stderr.take()?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (mut out_open, mut err_open) = (true, true);
    let mut buf = [0u8; 8192];
    while out_open || err_open {
        let left = deadline.checked_duration_since(Instant::now())?;
        let ms = PollTimeout::from(u16::try_from(left.as_millis()).unwrap_or(u16::MAX));
        let mut fds = Vec::with_capacity(2);
        if out_open {
            fds.push(PollFd::new(stdout.as_fd(), PollFlags::POLLIN));
        }
        if err_open {
            fds.push(PollFd::new(stderr.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, ms) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(true)).collect();
        drop(fds);
        let mut i = 0;
        if out_open {
            if ready[i] {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
            i += 1;
        }
        if err_open && ready[i] {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => err.extend_from_slice(&buf[..n]),
            }
        }
    }
    Some((
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Started by [`clean_child`], a helper begins with an empty signal
    /// mask and SIGPIPE at its default, from a thread that blocks signals
    /// as the daemon's do (and in a process that ignores SIGPIPE, as every
    /// Rust program does). std's own start, posix_spawn, keeps the
    /// caller's mask: that is why even short calls go through it.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_helper_starts_with_no_signal_blocked_or_ignored() {
        let status = std::thread::spawn(|| {
            // SAFETY: the mask of this test's own thread only.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTERM);
                libc::sigaddset(&mut set, libc::SIGHUP);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            let mut cat = Command::new("cat");
            cat.arg("/proc/self/status");
            clean_child(&mut cat);
            call(cat, None, Duration::from_secs(5)).unwrap()
        })
        .join()
        .unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_else(|| panic!("no {name} in {status}"))
                .to_owned()
        };
        assert_eq!(u64::from_str_radix(&field("SigBlk:"), 16).unwrap(), 0);
        let ignored = u64::from_str_radix(&field("SigIgn:"), 16).unwrap();
        assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE ignored");
    }

    /// A program is found where `execvp` would start it: the first
    /// directory with an executable file of its name; a path, or a name
    /// found nowhere, is left as it is.
    #[test]
    fn a_program_is_found_as_execvp_would_find_it() {
        use std::ffi::{OsStr, OsString};
        use std::os::unix::fs::PermissionsExt;
        let dir = assert_fs::TempDir::new().unwrap();
        let (plain, first, second) = (
            dir.path().join("plain"),
            dir.path().join("a"),
            dir.path().join("b"),
        );
        for d in [&plain, &first, &second] {
            std::fs::create_dir(d).unwrap();
        }
        let put = |d: &std::path::Path, mode: u32| {
            let f = d.join("tool");
            std::fs::write(&f, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        put(&plain, 0o644);
        put(&first, 0o755);
        put(&second, 0o755);
        std::fs::create_dir(first.join("dir")).unwrap();
        let path = std::env::join_paths([
            "relative",
            plain.to_str().unwrap(),
            first.to_str().unwrap(),
            second.to_str().unwrap(),
        ])
        .unwrap();
        let tool = OsStr::new("tool");
        assert_eq!(found_in(tool, &path), first.join("tool").into_os_string());
        assert_eq!(found_in(OsStr::new("dir"), &path), OsString::from("dir"));
        assert_eq!(
            found_in(OsStr::new("absent"), &path),
            OsString::from("absent")
        );
        assert_eq!(
            found_in(OsStr::new("./tool"), &path),
            OsString::from("./tool")
        );
        assert_eq!(found_in(tool, OsStr::new("")), OsString::from("tool"));
    }

    /// The exit is taken as the process ends, whichever way it ends.
    #[test]
    fn a_call_reports_how_its_process_ended() {
        let sh = |script: &str| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", script]);
            call(cmd, None, Duration::from_secs(10))
        };
        assert_eq!(sh("echo said").unwrap(), "said\n");
        match sh("exit 3") {
            Err(CallError::Failed(why)) => assert!(why.contains("code 3"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Its output closed, it goes on a while: waited for, not missed.
        match sh("exec >&- 2>&-; sleep 0.3; exit 4") {
            Err(CallError::Failed(why)) => assert!(why.contains("code 4"), "{why}"),
            other => panic!("{other:?}"),
        }
        match sh("kill -9 $$") {
            Err(CallError::Failed(why)) => assert!(why.contains("signal 9"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_call_that_hangs_times_out() {
        let mut cmd = Command::new("sleep");
        cmd.arg("10");
        let start = Instant::now();
        assert!(matches!(
            call(cmd, None, Duration::from_millis(100)),
            Err(CallError::Timeout)
        ));
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
