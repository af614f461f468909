//! The session host: what the engine asks of whatever runs sessions (tmux
//! in production, `runtime::fake` in the engine's unit tests), and
//! the plain facts it answers with.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::core::clock::EpochMs;
use crate::core::error::Result;
use crate::os::process;

/// How a pane's process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    /// tmux did not keep it (3.3a sometimes loses it), or never saw it.
    Unknown,
}

impl From<process::Exit> for ExitStatus {
    fn from(e: process::Exit) -> Self {
        match e {
            process::Exit::Code(c) => ExitStatus::Code(c),
            process::Exit::Signal(s) => ExitStatus::Signal(s),
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "{c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
            ExitStatus::Unknown => f.write_str("unknown"),
        }
    }
}

/// What tmux says about a peer's session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Alive {
        pane_pid: i32,
        activity_ms: Option<EpochMs>,
        /// The tmux server's own pid.
        server_pid: Option<i32>,
    },
    Dead {
        pane_pid: i32,
        status: ExitStatus,
    },
    /// No server, or no such session on it.
    Gone,
    /// tmux did not answer in time, or answered something unexpected.
    Unknown(String),
}

/// Everything a launch needs.
#[derive(Clone, Debug)]
pub struct LaunchSpec<'a> {
    pub socket: &'a Path,
    pub name: &'a str,
    pub cwd: &'a Path,
    pub argv: &'a [OsString],
    /// Set in the session's environment.
    pub env: &'a [(String, OsString)],
}

/// What a launch started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launched {
    pub pane_pid: i32,
}

/// The session host. tmux is the real one; tests wrap it to count calls.
pub trait Host: Send + Sync {
    fn launch(&self, spec: &LaunchSpec<'_>) -> Result<Launched>;
    fn probe(&self, socket: &Path, name: &str) -> Probe;
    /// The last `lines` non-empty-trailing lines of the pane.
    fn capture(&self, socket: &Path, name: &str, lines: usize) -> Result<String>;
    /// [`Host::probe`], then [`Host::capture`], at one moment: what a
    /// death's line says, read in one call where the host can make one.
    fn probe_and_capture(
        &self,
        socket: &Path,
        name: &str,
        lines: usize,
    ) -> (Probe, Result<String>) {
        (self.probe(socket, name), self.capture(socket, name, lines))
    }
    /// Types `text` literally (paste buffer), then presses Enter after
    /// `settle`.
    fn deliver(&self, socket: &Path, name: &str, text: &str, settle: Duration) -> Result<()>;
    /// Presses `keys` (tmux key names: `Enter`, `Down`, `1`, …), one after
    /// the other: the answer to a start-up dialog, never a task's text.
    fn send_keys(&self, socket: &Path, name: &str, keys: &[&str]) -> Result<()>;
    /// Ends the session: SIGTERM then SIGKILL to its processes (when the
    /// pane process is known and still the one started at `start`), then
    /// the server; removes the socket.
    fn kill(&self, socket: &Path, name: &str, pane: Option<(i32, Option<u64>)>) -> Result<()>;
    /// Ends every tmux process started to launch on `socket` (the client
    /// and the server of a launch whose launcher died) except the server
    /// `keep`. Returns how many it ended.
    fn end_strays(&self, socket: &Path, keep: Option<i32>) -> usize;
}

/// The last `n` lines of what the program wrote: without tmux's own
/// "Pane is dead" banner and without the blank rows below the text.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.starts_with("Pane is dead"))
        .collect();
    let end = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    let start = end.saturating_sub(n);
    lines[start..end].join("\n")
}
