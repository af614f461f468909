//! The tmux host: the only code that runs tmux (DESIGN §6).
//!
//! One tmux server per peer, on its own socket under `run/`, holding one
//! session named after the peer; targets are always exact (`-t =NAME`).
//! Programs are started from an argv without a shell, with `remain-on-exit`
//! on so that a dead pane keeps its exit status and last lines for the
//! death record. Every call has a timeout, and a timeout or a busy server is
//! reported as "unknown", never as a death.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::core::error::{Error, Result};
use crate::os::command::{call, clean_child, on_path, CallError};
use crate::os::process;
use crate::runtime::host::{last_lines, ExitStatus, Host, LaunchSpec, Launched, Probe};

/// How long one tmux call may take before it counts as "unknown".
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the session's processes get to exit on SIGTERM before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(3);
const WIDTH: &str = "200";
const HEIGHT: &str = "50";

/// Written to `run/tmux.conf` and given to every server with `-f`, so a
/// user's own `~/.tmux.conf` cannot change how panes die.
const TMUX_CONF: &str = "\
# Written by iapeer; changes are overwritten.
set -g remain-on-exit on
set -g history-limit 20000
set -g exit-empty on
set -g destroy-unattached off
set -g mouse on
";

/// The real tmux.
#[derive(Debug, Clone)]
pub(crate) struct Tmux {
    /// The program as named (`tmux`, or `IAPEER_TMUX_BIN`).
    bin: OsString,
    /// Where it is on `PATH`, found at the first call.
    program: std::sync::OnceLock<OsString>,
    conf: PathBuf,
    /// Start servers in their own systemd scope, outside the caller's
    /// cgroup, so restarting the daemon's unit never kills agents.
    scope: bool,
}

impl Tmux {
    /// tmux from `PATH` (or `IAPEER_TMUX_BIN`), configured by a file in
    /// `run_dir`.
    pub(crate) fn new(run_dir: &Path) -> Self {
        let bin = std::env::var_os("IAPEER_TMUX_BIN").unwrap_or_else(|| "tmux".into());
        Tmux {
            bin,
            program: std::sync::OnceLock::new(),
            conf: run_dir.join("tmux.conf"),
            scope: systemd_user_manager(),
        }
    }

    /// The program to start: tmux where it was found on `PATH`.
    fn program(&self) -> &OsStr {
        self.program.get_or_init(|| on_path(&self.bin))
    }

    fn command(&self, socket: &Path) -> Command {
        let mut cmd = Command::new(self.program());
        cmd.arg("-S").arg(socket);
        // Never talk to the tmux this process may itself be running in.
        cmd.env_remove("TMUX").env_remove("TMUX_PANE");
        clean_child(&mut cmd);
        cmd
    }

    fn run(
        &self,
        socket: &Path,
        args: &[&OsStr],
        stdin: Option<&[u8]>,
    ) -> Result<String, CallError> {
        let mut cmd = self.command(socket);
        cmd.args(args);
        call(cmd, stdin, CALL_TIMEOUT)
    }

    fn ensure_conf(&self) -> Result<()> {
        if std::fs::read_to_string(&self.conf).is_ok_and(|c| c == TMUX_CONF) {
            return Ok(());
        }
        crate::store::fsutil::write_atomic(&self.conf, TMUX_CONF.as_bytes())
    }

    fn missing_tmux(&self) -> Error {
        Error::failed(
            format!("tmux ({})", self.bin.to_string_lossy()),
            "it is not installed or not on PATH",
            "install tmux (e.g. `apt-get install tmux` or `brew install tmux`)",
        )
    }
}

/// How long a pasted text is given to show on the screen before Enter is
/// pressed all the same (the delivery is then confirmed, or not, from the
/// runtime's own record).
const PASTE_VISIBLE: Duration = Duration::from_secs(3);
/// What Claude shows in place of a long paste.
const PASTED_PLACEHOLDER: &str = "[Pasted text";

/// A piece of `text` that shows on the screen once it is pasted: the
/// start of its first non-empty line, short enough not to wrap.
fn visible_needle(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().take(40).collect()
}

/// An argument as tmux's command line must be given it to pass it on as
/// it is: tmux takes an argument ending in `;` for the end of a command
/// (`x ';'` would arrive as `x`, and what follows would run as a tmux
/// command). Its final `;` is escaped as `\;`, which tmux turns back into
/// `;` (a backslash before it included: `a\;` arrives as `a\;`).
fn literal_argument(arg: &OsString) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let bytes = arg.as_bytes();
    match bytes.split_last() {
        Some((b';', head)) => {
            let mut out = head.to_vec();
            out.extend_from_slice(b"\\;");
            OsString::from_vec(out)
        }
        _ => arg.clone(),
    }
}

impl Host for Tmux {
    fn launch(&self, spec: &LaunchSpec<'_>) -> Result<Launched> {
        self.ensure_conf()?;
        let mut args: Vec<OsString> = vec![
            "-f".into(),
            self.conf.clone().into(),
            "new-session".into(),
            "-d".into(),
            "-s".into(),
            spec.name.into(),
            "-x".into(),
            WIDTH.into(),
            "-y".into(),
            HEIGHT.into(),
            "-c".into(),
            spec.cwd.into(),
        ];
        for (k, v) in spec.env {
            let mut kv = OsString::from(k);
            kv.push("=");
            kv.push(v);
            args.push("-e".into());
            args.push(kv);
        }
        args.extend(["-P".into(), "-F".into(), "#{pane_pid}".into(), "--".into()]);
        // Through env(1): tmux hands a single-word command to `sh -c`, and
        // no command of ours ever goes through a shell.
        args.extend(["env".into(), "--".into()]);
        args.extend(spec.argv.iter().map(literal_argument));

        let base = |with_scope: bool| {
            let mut cmd = if with_scope {
                let mut c = Command::new("systemd-run");
                c.args(["--user", "--scope", "--quiet", "--collect"])
                    .arg(format!("--description=iapeer session {}", spec.name))
                    .arg("--")
                    .arg(self.program())
                    .arg("-S")
                    .arg(spec.socket);
                c.env_remove("TMUX").env_remove("TMUX_PANE");
                clean_child(&mut c);
                c
            } else {
                self.command(spec.socket)
            };
            // The server inherits this environment; agents must not think
            // they run inside another Claude Code.
            cmd.env_remove("CLAUDECODE").args(&args);
            cmd
        };
        let mut out = call(base(self.scope), None, CALL_TIMEOUT);
        if self.scope
            && matches!(&out, Err(CallError::Failed(_)) | Err(CallError::Spawn(_)))
            && !spec.socket.exists()
        {
            tracing::warn!("systemd-run --user --scope failed; starting tmux in this cgroup");
            out = call(base(false), None, CALL_TIMEOUT);
        }
        let text = match out {
            Ok(t) => t,
            Err(CallError::Spawn(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.missing_tmux())
            }
            Err(e) => {
                return Err(Error::failed(
                    format!("launching {} in tmux", spec.name),
                    said(&e),
                    format!(
                        "check that tmux runs here (`tmux -V`) and that {} is writable",
                        spec.socket.parent().unwrap_or(spec.socket).display()
                    ),
                ))
            }
        };
        let pane_pid = text.trim().parse::<i32>().map_err(|_| {
            Error::failed(
                format!("launching {} in tmux", spec.name),
                format!("tmux printed {:?} where a pane pid belongs", text.trim()),
                "check the tmux version (3.2 or later is needed)",
            )
        })?;
        Ok(Launched { pane_pid })
    }

    fn probe(&self, socket: &Path, name: &str) -> Probe {
        if !socket.exists() {
            return Probe::Gone;
        }
        let target = format!("={name}");
        match self.run(
            socket,
            &[os("list-panes"), os("-t"), os(&target), os("-F"), os(PROBE)],
            None,
        ) {
            Ok(text) => parse_probe(&text),
            Err(e) => probe_failed(&e),
        }
    }

    fn capture(&self, socket: &Path, name: &str, lines: usize) -> Result<String> {
        let target = format!("={name}:");
        let start = capture_start(lines);
        let text = self
            .run(socket, &capture_pane(&target, &start), None)
            .map_err(|e| capture_failed(name, &e))?;
        Ok(last_lines(&text, lines))
    }

    /// One tmux call: the pane's line of [`PROBE`] (display-message prints
    /// exactly one), then its text.
    fn probe_and_capture(
        &self,
        socket: &Path,
        name: &str,
        lines: usize,
    ) -> (Probe, Result<String>) {
        if !socket.exists() {
            let gone = Error::failed(
                format!("reading the screen of {name}"),
                "its tmux server is gone",
                "nothing to read",
            );
            return (Probe::Gone, Err(gone));
        }
        let target = format!("={name}:");
        let start = capture_start(lines);
        let mut args = vec![
            os("display-message"),
            os("-p"),
            os("-t"),
            os(&target),
            os(PROBE),
            os(";"),
        ];
        args.extend(capture_pane(&target, &start));
        match self.run(socket, &args, None) {
            Ok(text) => {
                let (line, screen) = text.split_once('\n').unwrap_or((&text, ""));
                (parse_probe(line), Ok(last_lines(screen, lines)))
            }
            Err(e) => (probe_failed(&e), Err(capture_failed(name, &e))),
        }
    }

    fn deliver(&self, socket: &Path, name: &str, text: &str, settle: Duration) -> Result<()> {
        let target = format!("={name}:");
        let buffer = format!("iapeer-{}", std::process::id());
        let failed = |e: CallError| {
            Error::failed(
                format!("delivering a task to {name}"),
                said(&e),
                format!("check the session with `iapeer status {name}`"),
            )
        };
        // The text goes in through a paste buffer, literally: never as key
        // names, and newlines stay newlines (-r). -p pastes with bracketed
        // paste when the program asked for it, so it arrives as one input.
        self.run(
            socket,
            &[
                os("load-buffer"),
                os("-b"),
                os(&buffer),
                os("-"),
                os(";"),
                os("paste-buffer"),
                os("-d"),
                os("-r"),
                os("-p"),
                os("-b"),
                os(&buffer),
                os("-t"),
                os(&target),
            ],
            Some(text.as_bytes()),
        )
        .map_err(failed)?;
        // Enter only once the text is on the screen: a TUI that renders
        // the paste after the Enter arrives takes the Enter for nothing and
        // leaves the text typed but unsent (Claude right after its start).
        let needle = visible_needle(text);
        let deadline = Instant::now() + PASTE_VISIBLE;
        while Instant::now() < deadline {
            let screen = self.capture(socket, name, 20).unwrap_or_default();
            if screen.contains(&needle) || screen.contains(PASTED_PLACEHOLDER) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !settle.is_zero() {
            std::thread::sleep(settle);
        }
        self.run(
            socket,
            &[os("send-keys"), os("-t"), os(&target), os("Enter")],
            None,
        )
        .map_err(failed)?;
        Ok(())
    }

    fn send_keys(&self, socket: &Path, name: &str, keys: &[&str]) -> Result<()> {
        let target = format!("={name}:");
        let mut args = vec![os("send-keys"), os("-t"), os(&target)];
        args.extend(keys.iter().map(|k| os(k)));
        self.run(socket, &args, None).map_err(|e| {
            Error::failed(
                format!("answering a dialog of {name}"),
                said(&e),
                format!("check the session with `iapeer status {name}`"),
            )
        })?;
        Ok(())
    }

    fn kill(&self, socket: &Path, name: &str, pane: Option<(i32, Option<u64>)>) -> Result<()> {
        // By pid only when its start time says it is still the one
        // launched: a record without one could name anybody's process.
        if let Some((pid, Some(start))) = pane {
            process::terminate_group(pid, Some(start), KILL_GRACE);
        }
        if socket.exists() {
            match self.run(socket, &[os("kill-server")], None) {
                Ok(_) => {}
                Err(CallError::Failed(stderr)) if is_gone(&stderr) => {}
                // A server that does not answer (stopped, wedged, out of
                // fds) is ended by its own pid, its panes with it.
                Err(e) if self.end_strays(socket, None) > 0 => {
                    tracing::warn!(
                        "the tmux server of {name} did not take kill-server ({}); ended by pid",
                        said(&e)
                    );
                }
                Err(e) => {
                    return Err(Error::failed(
                        format!("ending the tmux server of {name}"),
                        said(&e),
                        format!("end it by hand: tmux -S {} kill-server", socket.display()),
                    ))
                }
            }
            // tmux leaves its socket file behind.
            match std::fs::remove_file(socket) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(socket, "remove", e)),
            }
        }
        Ok(())
    }

    fn end_strays(&self, socket: &Path, keep: Option<i32>) -> usize {
        let strays: Vec<i32> = launches_on(socket)
            .into_iter()
            .filter(|p| Some(*p) != keep)
            .collect();
        for &pid in &strays {
            tracing::warn!(
                "ending tmux process {pid} on {} and every process below it",
                socket.display()
            );
            // Below a server are its panes, ended with it.
            process::terminate_group(pid, process::start_time(pid), Duration::from_secs(1));
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        strays.len()
    }
}

/// tmux processes (clients and servers: a server is a fork of the client
/// that started it) whose command line launched a session on `socket`.
fn launches_on(socket: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    #[cfg(target_os = "linux")]
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // Cheap first: only tmux processes.
        let is_tmux =
            std::fs::read(entry.path().join("comm")).is_ok_and(|c| c.starts_with(b"tmux"));
        if !is_tmux {
            continue;
        }
        let args = process::cmdline(pid);
        let on_socket = args
            .windows(2)
            .any(|w| w[0] == "-S" && w[1] == socket.as_os_str());
        if on_socket && args.iter().any(|a| a == "new-session") {
            out.push(pid);
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let Ok(ps) = Command::new("ps").args(["-axo", "pid=,command="]).output() else {
            return out;
        };
        let wanted = socket.to_string_lossy().into_owned();
        for line in String::from_utf8_lossy(&ps.stdout).lines() {
            let line = line.trim_start();
            let Some((pid, cmd)) = line.split_once(' ') else {
                continue;
            };
            if cmd.starts_with("tmux")
                && cmd.contains(&format!("-S {wanted} "))
                && cmd.contains("new-session")
            {
                if let Ok(pid) = pid.parse() {
                    out.push(pid);
                }
            }
        }
    }
    out
}

/// A failed tmux call, in words.
fn said(e: &CallError) -> String {
    match e {
        CallError::Spawn(e) => format!("could not run tmux: {e}"),
        CallError::Timeout => format!("tmux did not answer within {}s", CALL_TIMEOUT.as_secs()),
        CallError::Failed(stderr) => format!("tmux said: {}", stderr.trim()),
    }
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// "no server running", "can't find session", a dead socket: the session is
/// not there.
fn is_gone(stderr: &str) -> bool {
    [
        "no server running",
        "can't find session",
        "No such file or directory",
        "Connection refused",
        "session not found",
    ]
    .iter()
    .any(|s| stderr.contains(s))
}

/// What a probe asks of a pane, tab-separated.
const PROBE: &str = "#{pane_pid}\t#{pane_dead}\t#{pane_dead_status}\t#{pane_dead_signal}\t#{window_activity}\t#{pid}";

/// A probe that tmux did not answer.
fn probe_failed(e: &CallError) -> Probe {
    match e {
        CallError::Failed(stderr) if is_gone(stderr) => Probe::Gone,
        CallError::Spawn(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Probe::Unknown("tmux is not installed or not on PATH".into())
        }
        e => Probe::Unknown(said(e)),
    }
}

fn capture_failed(name: &str, e: &CallError) -> Error {
    Error::failed(format!("reading the screen of {name}"), said(e), "retry")
}

/// `capture-pane` of `target` from row `start`, wrapped lines joined, to
/// stdout.
fn capture_pane<'a>(target: &'a str, start: &'a str) -> [&'a OsStr; 7] {
    [
        os("capture-pane"),
        os("-p"),
        os("-J"),
        os("-t"),
        os(target),
        os("-S"),
        os(start),
    ]
}

/// Where a capture of `lines` starts: rows count from the top of the
/// visible pane, so reach back far enough into the history to hold
/// `lines` of text above the blank rows of a pane that died early.
fn capture_start(lines: usize) -> String {
    format!("-{}", lines.max(1) + HEIGHT.parse::<usize>().unwrap_or(50))
}

fn parse_probe(text: &str) -> Probe {
    let Some(line) = text.lines().next() else {
        return Probe::Unknown("tmux listed no pane".into());
    };
    let f: Vec<&str> = line.split('\t').collect();
    let (Some(pid), Some(dead)) = (f.first().and_then(|p| p.parse::<i32>().ok()), f.get(1)) else {
        return Probe::Unknown(format!("unexpected tmux output {line:?}"));
    };
    if *dead == "1" {
        let code = f.get(2).and_then(|s| s.parse::<i32>().ok());
        let signal = f.get(3).and_then(|s| s.parse::<i32>().ok());
        let status = match (code, signal) {
            (_, Some(sig)) if sig > 0 => ExitStatus::Signal(sig),
            (Some(code), _) => ExitStatus::Code(code),
            _ => ExitStatus::Unknown,
        };
        return Probe::Dead {
            pane_pid: pid,
            status,
        };
    }
    // The window's last output (tmux keeps whole seconds).
    let activity_ms = f
        .get(4)
        .and_then(|s| s.parse::<i64>().ok())
        .map(|secs| secs.saturating_mul(1000));
    Probe::Alive {
        pane_pid: pid,
        activity_ms,
        server_pid: f.get(5).and_then(|s| s.parse::<i32>().ok()),
    }
}

/// Is a systemd user manager there to start scopes in?
fn systemd_user_manager() -> bool {
    if std::env::var_os("IAPEER_NO_SCOPE").is_some() {
        return false;
    }
    let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") else {
        return false;
    };
    Path::new(&runtime).join("systemd").join("private").exists()
        && std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("systemd-run").is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_parses() {
        assert_eq!(
            parse_probe("123\t0\t\t\t1795239193\t77\n"),
            Probe::Alive {
                pane_pid: 123,
                activity_ms: Some(1_795_239_193_000),
                server_pid: Some(77)
            }
        );
        assert_eq!(
            parse_probe("123\t1\t7\t\t1\n"),
            Probe::Dead {
                pane_pid: 123,
                status: ExitStatus::Code(7)
            }
        );
        assert_eq!(
            parse_probe("123\t1\t\t9\t1\n"),
            Probe::Dead {
                pane_pid: 123,
                status: ExitStatus::Signal(9)
            }
        );
        assert_eq!(
            parse_probe("123\t1\t\t\t1\n"),
            Probe::Dead {
                pane_pid: 123,
                status: ExitStatus::Unknown
            }
        );
        assert!(matches!(parse_probe("garbage"), Probe::Unknown(_)));
        assert!(matches!(parse_probe(""), Probe::Unknown(_)));
    }

    /// A death's status and last lines come from one call, as two calls
    /// would read them; a server that is gone reads as gone. tmux 3.3a
    /// sometimes never reaps a dead pane's process (measured here: 1 in 15
    /// to 1 in 40 runs of this test; a SIGCHLD sent by hand then reaps it),
    /// and so never gives its status: the process itself still holds it
    /// (what `dead_pane` reads then).
    #[test]
    fn one_call_reads_a_dead_pane_and_its_last_lines() {
        let dir = assert_fs::TempDir::new().unwrap();
        let tmux = Tmux {
            bin: "tmux".into(),
            program: std::sync::OnceLock::new(),
            conf: dir.path().join("tmux.conf"),
            scope: false,
        };
        let socket = dir.path().join("t.sock");
        let argv = ["sh", "-c", "echo said at the end; exit 7"].map(OsString::from);
        let spec = LaunchSpec {
            socket: &socket,
            name: "t",
            cwd: dir.path(),
            argv: &argv,
            env: &[],
        };
        let pid = tmux.launch(&spec).expect("tmux runs here").pane_pid;
        // Dead, with its status from tmux, or from the process tmux left
        // unreaped (for a second: a reap under way is not that).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut unreaped: Option<Instant> = None;
        let status = loop {
            match tmux.probe(&socket, "t") {
                Probe::Dead { status, .. } if status != ExitStatus::Unknown => break status,
                Probe::Dead { .. } => match process::zombie_exit(pid, None) {
                    Some(exit)
                        if unreaped.get_or_insert_with(Instant::now).elapsed()
                            >= Duration::from_secs(1) =>
                    {
                        break ExitStatus::from(exit)
                    }
                    _ => {}
                },
                _ => {}
            }
            assert!(Instant::now() < deadline, "the pane never read dead");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status, ExitStatus::Code(7));
        let (probe, screen) = tmux.probe_and_capture(&socket, "t", 5);
        assert_eq!(probe, tmux.probe(&socket, "t"));
        assert!(matches!(probe, Probe::Dead { pane_pid, .. } if pane_pid == pid));
        assert_eq!(screen.unwrap(), tmux.capture(&socket, "t", 5).unwrap());
        assert!(tmux
            .capture(&socket, "t", 5)
            .unwrap()
            .contains("said at the end"));
        tmux.kill(&socket, "t", None).unwrap();
        let (probe, screen) = tmux.probe_and_capture(&socket, "t", 5);
        assert_eq!(probe, Probe::Gone);
        assert!(screen.is_err());
    }

    #[test]
    fn last_lines_drops_trailing_blanks() {
        assert_eq!(last_lines("a\nb\nc\n\n\n", 2), "b\nc");
        assert_eq!(last_lines("\n\n", 5), "");
        assert_eq!(
            last_lines(
                "boom\n\n\n\nPane is dead (status 42, Sat Nov 21 05:54:52 2026)\n",
                3
            ),
            "boom"
        );
    }
}
