//! Processes as the kernel sees them: whether a session's process is alive,
//! from the process itself (a pidfd on Linux, kqueue on macOS; the process
//! table where a kernel has no pidfds), never from
//! `kill(pid, 0)`, which reads a zombie as alive and cannot tell a recycled
//! pid from the original.
//!
//! A process is identified by its pid *and* its start time, so a pid the
//! kernel has reused for something else is never mistaken for a session.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::core::session::{Liveness, SessionRecord, Standing};

/// The process's start time (clock ticks after boot), to tell it from a
/// later process that got the same pid. `None` where it cannot be read.
/// This boot's id (`/proc/sys/kernel/random/boot_id`), read once; `None`
/// where the system does not say.
pub(crate) fn boot_id() -> Option<String> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty() && s.len() <= 64)
    })
    .clone()
}

pub(crate) fn start_time(pid: i32) -> Option<u64> {
    read_stat(pid).ok().flatten().map(|s| s.start)
}

/// The fields of `/proc/<pid>/stat` that iapeer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    /// `R`, `S`, `Z`, …
    pub state: char,
    pub ppid: i32,
    /// The session id.
    pub session: i32,
    /// Clock ticks after boot: tells a process from a later one that got
    /// the same pid.
    pub start: u64,
    /// The wait status a zombie keeps (Linux 3.5 and later).
    pub exit_code: Option<i32>,
}

impl Stat {
    pub(crate) fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses a `/proc/<pid>/stat` line. The command name may hold spaces and
/// parentheses, so the fields are counted from after the last `)`: field
/// N of proc(5) is the (N - 3)th there.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    Some(Stat {
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        session: field(6)?.parse().ok()?,
        start: field(22)?.parse().ok()?,
        exit_code: field(52).and_then(|f| f.parse().ok()),
    })
}

/// Reads `/proc/<pid>/stat`: `Ok(None)` when there is no such process; an
/// error (not Linux, out of descriptors, unreadable) means "cannot tell".
pub(crate) fn read_stat(pid: i32) -> std::io::Result<Option<Stat>> {
    if cfg!(not(target_os = "linux")) {
        return Err(std::io::ErrorKind::Unsupported.into());
    }
    if pid <= 0 {
        return Ok(None);
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => parse_stat(&text).map(Some).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "unreadable stat line")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// How an exited process ended, read from the process itself while it is
/// still a zombie (before its parent reaps it): `/proc/<pid>/stat` keeps
/// the wait status (field 52). `None` once reaped, or where there is no
/// /proc.
pub(crate) fn zombie_exit(pid: i32, start: Option<u64>) -> Option<Exit> {
    let stat = read_stat(pid).ok().flatten()?;
    if stat.state != 'Z' || start.is_some_and(|s| s != stat.start) {
        return None;
    }
    let status = stat.exit_code?;
    let signal = status & 0x7f;
    Some(if signal == 0 {
        Exit::Code((status >> 8) & 0xff)
    } else {
        Exit::Signal(signal)
    })
}

/// An exit as `waitpid` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
}

/// A handle on a live process that notifies its exit: a pidfd on Linux
/// (readable once the process has exited), a kqueue with `NOTE_EXIT` on
/// macOS and the BSDs.
#[derive(Debug)]
pub(crate) struct ProcessHandle {
    pid: i32,
    fd: OwnedFd,
}

impl ProcessHandle {
    /// Opens a handle on `pid`, checking that it is still the process that
    /// started at `start` (when known). `Ok(None)` when that process is gone.
    pub(crate) fn open(pid: i32, start: Option<u64>) -> std::io::Result<Option<ProcessHandle>> {
        if pid <= 0 {
            return Ok(None);
        }
        let Some(fd) = sys::open(pid)? else {
            return Ok(None);
        };
        // Check the start time *after* opening: the handle now pins this
        // process, so a match means it is the one we launched. Only a
        // different start time (or no such process) says it is gone: a
        // table that cannot be read now (out of descriptors, say) says
        // nothing, and is "cannot tell", never a death.
        if let Some(start) = start {
            match read_stat(pid) {
                Ok(Some(s)) if s.start == start => {}
                Ok(_) => return Ok(None),
                // No process table to check against (not Linux).
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Some(ProcessHandle { pid, fd }))
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// The descriptor to poll: readable once the process has exited.
    pub(crate) fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Has it exited (a zombie counts as exited)?
    pub(crate) fn has_exited(&self) -> bool {
        sys::exited(&self.fd, Duration::ZERO)
    }

    /// Waits up to `timeout` for the exit; true if it exited.
    pub(crate) fn wait_exit(&self, timeout: Duration) -> bool {
        sys::exited(&self.fd, timeout)
    }

    /// Sends `signal` to this very process (not to a recycled pid).
    pub(crate) fn signal(&self, signal: Signal) -> std::io::Result<()> {
        sys::signal(self.pid, &self.fd, signal)
    }
}

/// Where a recorded session stands, seen from this boot and the process
/// table now: the one reading every caller acts on.
pub(crate) fn standing(rec: &SessionRecord) -> Standing {
    rec.standing(boot_id().as_deref(), |r| liveness(r.pane_pid, r.pane_start))
}

/// Whether the process `pid` (started at `start`) is alive.
pub fn liveness(pid: i32, start: Option<u64>) -> Liveness {
    match ProcessHandle::open(pid, start) {
        Ok(None) => Liveness::Dead,
        Ok(Some(h)) if h.has_exited() => Liveness::Dead,
        Ok(Some(_)) => Liveness::Alive,
        // No pidfds here (a kernel before 5.3, or a sandbox refusing the
        // call): the process table still tells.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            table_liveness(pid, start)
        }
        Err(_) => Liveness::Unknown,
    }
}

/// Liveness from the process table (`/proc/<pid>/stat`): gone, a zombie
/// or another process with that pid is dead; anything else alive.
pub(crate) fn table_liveness(pid: i32, start: Option<u64>) -> Liveness {
    match read_stat(pid) {
        Ok(None) => Liveness::Dead,
        Ok(Some(s)) if s.is_zombie() || start.is_some_and(|t| t != s.start) => Liveness::Dead,
        Ok(Some(_)) => Liveness::Alive,
        Err(_) => Liveness::Unknown,
    }
}

/// Ends a session's processes, the whole tree: first the agent itself
/// (SIGTERM to it and its process group), so it stops its turn rather than
/// report a killed tool back to its model; then every process that was
/// below it or in its session when the end began — an agent's tools may
/// run in sessions and groups of their own (Claude's Bash tool does), which
/// a signal to the group alone would miss, and once the agent is gone they
/// are no longer its children. SIGKILL for whatever is left after `grace`.
/// Only signals processes still the ones seen (pid and start time).
pub(crate) fn terminate_group(pid: i32, start: Option<u64>, grace: Duration) {
    let Ok(Some(leader)) = ProcessHandle::open(pid, start) else {
        return;
    };
    let mut tree = descendants(pid);
    for member in session_members(pid) {
        if !tree.iter().any(|(p, _)| *p == member) {
            if let Some(started) = start_time(member) {
                tree.push((member, started));
            }
        }
    }
    let pgid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::killpg(pgid, Signal::SIGTERM);
    let _ = leader.signal(Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    leader.wait_exit(grace);
    signal_tree(&tree, Signal::SIGTERM);
    // Let the rest go too, within what is left of the grace.
    while Instant::now() < deadline && tree.iter().any(|(p, s)| still(*p, *s)) {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !leader.has_exited() {
        let _ = leader.signal(Signal::SIGKILL);
    }
    let _ = nix::sys::signal::killpg(pgid, Signal::SIGKILL);
    signal_tree(&tree, Signal::SIGKILL);
}

/// Is `pid` still the process that started at `start`, and not a zombie?
fn still(pid: i32, start: u64) -> bool {
    read_stat(pid)
        .ok()
        .flatten()
        .is_some_and(|s| s.start == start && !s.is_zombie())
}

fn signal_tree(tree: &[(i32, u64)], signal: Signal) {
    for &(pid, start) in tree {
        if still(pid, start) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }
}

/// Every process below `pid`, with its start time, from one reading of the
/// process table.
pub(crate) fn descendants(pid: i32) -> Vec<(i32, u64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let table: Vec<(i32, Stat)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|p| Some((p, read_stat(p).ok()??)))
        .collect();
    let mut found: Vec<(i32, u64)> = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (child, stat) in &table {
            if stat.ppid == parent && !found.iter().any(|(p, _)| p == child) {
                found.push((*child, stat.start));
                frontier.push(*child);
            }
        }
    }
    found
}

/// Processes (other than `sid` itself) whose session id is `sid`.
pub(crate) fn session_members(sid: i32) -> Vec<i32> {
    #[cfg(target_os = "linux")]
    {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != sid)
            .filter(|&pid| {
                read_stat(pid)
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.session == sid && s.state != 'Z')
            })
            .collect()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = sid;
        Vec::new()
    }
}

/// The files session `sid` (its leader and every member) has open, as the
/// system names them; empty where that cannot be read (not Linux, another
/// user's process).
pub(crate) fn session_open_files(sid: i32) -> Vec<std::path::PathBuf> {
    if sid <= 0 {
        return Vec::new();
    }
    std::iter::once(sid)
        .chain(session_members(sid))
        .flat_map(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        })
        .collect()
}

/// A process's command line, argument for argument as the system keeps it
/// (Linux); empty where it cannot be read.
pub(crate) fn cmdline(pid: i32) -> Vec<std::ffi::OsString> {
    if pid <= 0 {
        return Vec::new();
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(split_cmdline)
        .unwrap_or_default()
}

/// `/proc/<pid>/cmdline`: arguments each ended by a NUL. An empty argument
/// stays one.
fn split_cmdline(mut bytes: Vec<u8>) -> Vec<std::ffi::OsString> {
    use std::os::unix::ffi::OsStringExt;
    if bytes.is_empty() {
        return Vec::new();
    }
    if bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
        .split(|b| *b == 0)
        .map(|a| std::ffi::OsString::from_vec(a.to_vec()))
        .collect()
}

/// Is `ancestor` the process itself or one of its ancestors?
pub(crate) fn is_ancestor(ancestor: i32, mut pid: i32) -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        for _ in 0..256 {
            if pid == ancestor {
                return Some(true);
            }
            if pid <= 1 {
                return Some(false);
            }
            pid = read_stat(pid).ok()??.ppid;
        }
        Some(false)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (ancestor, &mut pid);
        None
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;

    pub(crate) fn open(pid: i32) -> std::io::Result<Option<OwnedFd>> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor (close-on-exec) or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ESRCH) => Ok(None),
                _ => Err(e),
            };
        }
        // SAFETY: the syscall just returned this descriptor and nothing
        // else owns it.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    pub(crate) fn exited(fd: &OwnedFd, timeout: Duration) -> bool {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let deadline = Instant::now() + timeout;
        loop {
            // What is left, so an interrupted wait does not start over.
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(n) if n > 0 => return true,
                Ok(_) if Instant::now() >= deadline => return false,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return false,
            }
        }
    }

    pub(crate) fn signal(_pid: i32, fd: &OwnedFd, signal: Signal) -> std::io::Result<()> {
        // SAFETY: pidfd_send_signal on a descriptor we own; a null info
        // pointer means "as kill(2) would".
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                signal as i32,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

#[cfg(any(
    target_os = "macos",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd"
))]
mod sys {
    use super::*;

    /// A kqueue watching `pid` for NOTE_EXIT.
    pub(crate) fn open(pid: i32) -> std::io::Result<Option<OwnedFd>> {
        // SAFETY: kqueue() returns a new descriptor or -1.
        let kq = unsafe { libc::kqueue() };
        if kq < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: kq was just created and is owned here alone.
        let kq = unsafe { OwnedFd::from_raw_fd(kq) };
        // SAFETY: a zeroed kevent is a valid value to fill in.
        let mut ev: libc::kevent = unsafe { std::mem::zeroed() };
        ev.ident = pid as usize;
        ev.filter = libc::EVFILT_PROC;
        ev.flags = libc::EV_ADD | libc::EV_ONESHOT;
        ev.fflags = libc::NOTE_EXIT;
        // SAFETY: one change, no events out; pointers are valid for the call.
        let r = unsafe {
            libc::kevent(
                kq.as_raw_fd(),
                &ev,
                1,
                std::ptr::null_mut(),
                0,
                std::ptr::null(),
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ESRCH) => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(kq))
    }

    pub(crate) fn exited(fd: &OwnedFd, timeout: Duration) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
    }

    pub(crate) fn signal(pid: i32, _fd: &OwnedFd, signal: Signal) -> std::io::Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A stat line as proc(5) lays it out: field N at position N.
    fn stat_line(
        name: &str,
        state: char,
        ppid: i32,
        session: i32,
        start: u64,
        last: usize,
    ) -> String {
        let mut fields = vec!["0".to_owned(); last + 1];
        fields[1] = "9".into();
        fields[2] = format!("({name})");
        fields[3] = state.to_string();
        fields[4] = ppid.to_string();
        fields[6] = session.to_string();
        fields[22] = start.to_string();
        if last >= 52 {
            fields[52] = "256".into();
        }
        fields[1..].join(" ")
    }

    #[test]
    fn stat_lines_are_read_from_after_the_last_parenthesis() {
        let cases = [
            (
                stat_line("sleep", 'S', 1, 17, 4242, 52),
                Some(('S', 1, 17, 4242, Some(256))),
            ),
            (
                stat_line("a b) (c", 'Z', 3, 8, 77, 52),
                Some(('Z', 3, 8, 77, Some(256))),
            ),
            // An older kernel: no exit code field.
            (
                stat_line("x", 'R', 1, 5, 77, 44),
                Some(('R', 1, 5, 77, None)),
            ),
            ("5 (x) R 1".to_owned(), None),
            ("garbage".to_owned(), None),
        ];
        for (line, want) in cases {
            let got = parse_stat(&line).map(|s| (s.state, s.ppid, s.session, s.start, s.exit_code));
            assert_eq!(got, want, "{line}");
        }
    }

    #[test]
    fn a_live_child_is_alive_and_an_exited_one_dead_even_as_a_zombie() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let start = start_time(pid);
        assert_eq!(liveness(pid, start), Liveness::Alive);
        let h = ProcessHandle::open(pid, start).unwrap().unwrap();
        h.signal(Signal::SIGTERM).unwrap();
        assert!(h.wait_exit(Duration::from_secs(5)));
        // Not reaped yet: a zombie. kill(pid, 0) would say alive.
        assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok());
        assert_eq!(liveness(pid, start), Liveness::Dead);
        assert_eq!(zombie_exit(pid, start), Some(Exit::Signal(15)));
        child.wait().unwrap();
        assert_eq!(liveness(pid, start), Liveness::Dead);
    }

    #[test]
    fn the_process_table_fallback_agrees_with_the_handle() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let start = start_time(pid);
        assert_eq!(table_liveness(pid, start), Liveness::Alive);
        assert_eq!(
            table_liveness(pid, start.map(|s| s + 1)),
            Liveness::Dead,
            "recycled"
        );
        child.kill().unwrap();
        let h = ProcessHandle::open(pid, start).unwrap();
        if let Some(h) = h {
            assert!(h.wait_exit(Duration::from_secs(5)));
        }
        assert_eq!(table_liveness(pid, start), Liveness::Dead, "a zombie");
        child.wait().unwrap();
        assert_eq!(table_liveness(pid, start), Liveness::Dead, "reaped");
        assert_eq!(table_liveness(0, None), Liveness::Dead);
    }

    #[test]
    fn a_zombie_keeps_its_exit_code() {
        let mut child = Command::new("sh").args(["-c", "exit 42"]).spawn().unwrap();
        let pid = child.id() as i32;
        let start = start_time(pid);
        let h = ProcessHandle::open(pid, start).unwrap();
        if let Some(h) = h {
            assert!(h.wait_exit(Duration::from_secs(5)));
        }
        assert_eq!(zombie_exit(pid, None), Some(Exit::Code(42)));
        child.wait().unwrap();
        assert_eq!(zombie_exit(pid, None), None, "reaped");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn open_files_name_what_a_process_holds() {
        let dir = assert_fs::TempDir::new().unwrap();
        let path = dir.path().join("held.jsonl");
        let _held = std::fs::File::create(&path).unwrap();
        let open = session_open_files(std::process::id() as i32);
        let real = path.canonicalize().unwrap();
        assert!(open.contains(&real), "{open:?}");
        assert!(session_open_files(0).is_empty());
    }

    #[test]
    fn a_command_line_is_split_argument_for_argument() {
        let rows: [(&[u8], &[&str]); 4] = [
            (b"", &[]),
            (b"sleep\x0030\x00", &["sleep", "30"]),
            (b"sh\x00-c\x00\x00", &["sh", "-c", ""]),
            (b"no-terminator", &["no-terminator"]),
        ];
        for (bytes, want) in rows {
            assert_eq!(split_cmdline(bytes.to_vec()), want, "{bytes:?}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_command_line_is_read_from_the_system() {
        let mine: Vec<_> = std::env::args_os().collect();
        assert_eq!(cmdline(std::process::id() as i32), mine);
        assert!(cmdline(0).is_empty());
    }

    #[test]
    fn a_recycled_pid_is_not_the_process() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let wrong_start = start_time(pid).map(|s| s + 1);
        assert_eq!(liveness(pid, wrong_start), Liveness::Dead);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn terminate_group_ends_the_group_and_session_members() {
        // A new session whose leader has a child: both must end.
        let mut child = Command::new("setsid")
            .args(["sh", "-c", "sleep 30 & sleep 30"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        std::thread::sleep(Duration::from_millis(200));
        let members = session_members(pid);
        assert!(!members.is_empty(), "the session should have members");
        terminate_group(pid, start_time(pid), Duration::from_secs(2));
        child.wait().unwrap();
        for m in members {
            assert_eq!(liveness(m, None), Liveness::Dead, "member {m} survived");
        }
    }

    /// Regression: an agent's tool in a session of its own (Claude's Bash
    /// tool) outlived a stop that signalled only the pane's group.
    #[test]
    fn terminate_group_ends_descendants_in_sessions_of_their_own() {
        let mut child = Command::new("setsid")
            .args(["sh", "-c", "setsid sleep 31.25 & sleep 30"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(5);
        let tool = loop {
            // `sleep` itself: setsid(1) carries the same arguments until it
            // has left the session and run it.
            let found = descendants(pid).into_iter().find(|(p, _)| {
                let argv = cmdline(*p);
                argv.first().is_some_and(|a| {
                    std::path::Path::new(a)
                        .file_name()
                        .is_some_and(|n| n == "sleep")
                }) && argv.iter().any(|a| a == "31.25")
            });
            if let Some(found) = found {
                break found;
            }
            assert!(Instant::now() < deadline, "the tool never started");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_ne!(
            read_stat(tool.0).unwrap().unwrap().session,
            pid,
            "the tool is in a session of its own"
        );
        terminate_group(pid, start_time(pid), Duration::from_secs(2));
        child.wait().unwrap();
        assert!(!still(tool.0, tool.1), "the tool survived");
    }
}
