//! A session host without tmux, for the engine's unit tests: each launch
//! starts a real process (`sleep`, whatever the argv says), so liveness is
//! read from the process itself exactly as in production, while the screen
//! is whatever the test sets. It counts every call, and can be told to fail
//! the next kill, so tests can pin what the engine asks of a host.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::core::error::{Error, Result};
use crate::runtime::host::{ExitStatus, Host, LaunchSpec, Launched, Probe};

/// How often each call was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Calls {
    pub launch: usize,
    pub probe: usize,
    pub capture: usize,
    pub deliver: usize,
    pub send_keys: usize,
    pub kill: usize,
    pub end_strays: usize,
}

#[derive(Debug)]
struct Pane {
    name: String,
    child: Child,
    screen: String,
    /// The frames the screen goes through once keys are pressed, one per
    /// capture; the last one stays.
    after_keys: Vec<String>,
    frames: VecDeque<String>,
    delivered: Vec<String>,
    keys: Vec<String>,
}

#[derive(Debug, Default)]
struct Inner {
    panes: HashMap<PathBuf, Pane>,
    calls: Calls,
    fail_next_kill: bool,
    screen_on_launch: String,
    after_keys_on_launch: Vec<String>,
    /// The time every pane's screen last changed, as tmux reports it.
    activity_ms: Option<crate::core::clock::EpochMs>,
}

/// The fake host; clones share one state, so a test keeps a handle to the
/// host it gave a context.
#[derive(Clone, Debug, Default)]
pub(crate) struct FakeHost(Arc<Mutex<Inner>>);

impl FakeHost {
    /// A host whose new panes show `screen` (what the ready gate reads).
    pub(crate) fn showing(screen: &str) -> Self {
        let host = FakeHost::default();
        host.inner().screen_on_launch = screen.to_owned();
        host
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every pane's screen last changed at `at` (`None`: tmux says not).
    pub(crate) fn set_activity(&self, at: Option<crate::core::clock::EpochMs>) {
        self.inner().activity_ms = at;
    }

    pub(crate) fn calls(&self) -> Calls {
        self.inner().calls
    }

    /// The pane's process dies on its own (as a crash would), leaving its
    /// pane behind, as tmux's `remain-on-exit` does.
    pub(crate) fn crash(&self, socket: &Path) {
        if let Some(pane) = self.inner().panes.get_mut(socket) {
            let _ = pane.child.kill();
            let _ = pane.child.wait();
        }
    }

    /// The next `kill` fails (as a tmux that does not answer would).
    pub(crate) fn fail_next_kill(&self) {
        self.inner().fail_next_kill = true;
    }

    /// New panes show `screen`, and `then` once keys are pressed (a
    /// dialog and what its answer leads to).
    pub(crate) fn show_on_launch(&self, screen: &str, then: Option<&str>) {
        let mut inner = self.inner();
        inner.screen_on_launch = screen.to_owned();
        inner.after_keys_on_launch = then.into_iter().map(str::to_owned).collect();
    }

    /// New panes show `screen`, and once keys are pressed go through
    /// `frames`, one per capture (a redraw caught half way, say).
    pub(crate) fn show_on_launch_frames(&self, screen: &str, frames: &[&str]) {
        let mut inner = self.inner();
        inner.screen_on_launch = screen.to_owned();
        inner.after_keys_on_launch = frames.iter().map(|f| (*f).to_owned()).collect();
    }

    /// The keys pressed on the pane so far.
    pub(crate) fn keys(&self, socket: &Path) -> Vec<String> {
        self.inner()
            .panes
            .get(socket)
            .map(|p| p.keys.clone())
            .unwrap_or_default()
    }

    pub(crate) fn has_session(&self, socket: &Path) -> bool {
        self.inner().panes.contains_key(socket)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for pane in self.panes.values_mut() {
            let _ = pane.child.kill();
            let _ = pane.child.wait();
        }
    }
}

impl Host for FakeHost {
    fn launch(&self, spec: &LaunchSpec<'_>) -> Result<Launched> {
        let mut inner = self.inner();
        inner.calls.launch += 1;
        let child = Command::new("sleep")
            .arg("3600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::io(Path::new("sleep"), "start", e))?;
        let pane_pid = child.id() as i32;
        let screen = inner.screen_on_launch.clone();
        let after_keys = inner.after_keys_on_launch.clone();
        inner.panes.insert(
            spec.socket.to_path_buf(),
            Pane {
                name: spec.name.to_owned(),
                child,
                screen,
                after_keys,
                frames: VecDeque::new(),
                delivered: Vec::new(),
                keys: Vec::new(),
            },
        );
        Ok(Launched { pane_pid })
    }

    fn probe(&self, socket: &Path, name: &str) -> Probe {
        let mut inner = self.inner();
        inner.calls.probe += 1;
        let activity_ms = inner.activity_ms;
        let Some(pane) = inner.panes.get_mut(socket).filter(|p| p.name == name) else {
            return Probe::Gone;
        };
        let pane_pid = pane.child.id() as i32;
        match pane.child.try_wait() {
            Ok(None) => Probe::Alive {
                pane_pid,
                activity_ms,
                server_pid: None,
            },
            Ok(Some(status)) => Probe::Dead {
                pane_pid,
                status: match (
                    status.code(),
                    std::os::unix::process::ExitStatusExt::signal(&status),
                ) {
                    (Some(c), _) => ExitStatus::Code(c),
                    (None, Some(s)) => ExitStatus::Signal(s),
                    (None, None) => ExitStatus::Unknown,
                },
            },
            Err(e) => Probe::Unknown(e.to_string()),
        }
    }

    fn capture(&self, socket: &Path, _name: &str, _lines: usize) -> Result<String> {
        let mut inner = self.inner();
        inner.calls.capture += 1;
        Ok(inner
            .panes
            .get_mut(socket)
            .map(|p| {
                if let Some(frame) = p.frames.pop_front() {
                    p.screen = frame;
                }
                p.screen.clone()
            })
            .unwrap_or_default())
    }

    fn deliver(&self, socket: &Path, _name: &str, text: &str, _settle: Duration) -> Result<()> {
        let mut inner = self.inner();
        inner.calls.deliver += 1;
        match inner.panes.get_mut(socket) {
            Some(pane) => {
                pane.delivered.push(text.to_owned());
                Ok(())
            }
            None => Err(Error::failed(
                socket.display().to_string(),
                "no such session",
                "launch it first",
            )),
        }
    }

    fn send_keys(&self, socket: &Path, _name: &str, keys: &[&str]) -> Result<()> {
        let mut inner = self.inner();
        inner.calls.send_keys += 1;
        let pane = inner.panes.get_mut(socket).ok_or_else(|| {
            Error::failed(
                socket.display().to_string(),
                "no such session",
                "launch it first",
            )
        })?;
        pane.keys.extend(keys.iter().map(|k| (*k).to_owned()));
        // A pane that was showing a dialog shows what comes after it.
        pane.frames.extend(std::mem::take(&mut pane.after_keys));
        Ok(())
    }

    fn kill(&self, socket: &Path, _name: &str, _pane: Option<(i32, Option<u64>)>) -> Result<()> {
        let mut inner = self.inner();
        inner.calls.kill += 1;
        if std::mem::take(&mut inner.fail_next_kill) {
            return Err(Error::failed(
                socket.display().to_string(),
                "the host did not answer",
                "retry",
            ));
        }
        if let Some(mut pane) = inner.panes.remove(socket) {
            let _ = pane.child.kill();
            let _ = pane.child.wait();
        }
        Ok(())
    }

    fn end_strays(&self, _socket: &Path, _keep: Option<i32>) -> usize {
        self.inner().calls.end_strays += 1;
        0
    }
}
