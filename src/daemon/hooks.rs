//! The operator's hook (`on_activity`, DESIGN §12): a shell command run
//! when a peer enters one of the states they chose — the way to get a
//! desktop, ntfy or Slack notification when an agent needs a person. A hook
//! never holds the daemon up: each runs on a thread of its own, in a
//! process group of its own that is killed when it overruns, and at most
//! [`MAX_RUNNING`] run at once (beyond that a notification is dropped and
//! said so). Its failures go to the daemon's diagnostic log.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::identity::Identity;
use crate::store::config::Config;

/// Hooks running at once, at most.
const MAX_RUNNING: usize = 4;
/// How much of a failing hook's stderr is kept for the log.
const STDERR_KEPT: usize = 2048;

/// One state change to tell the hook about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Notice {
    pub peer: Identity,
    pub state: String,
    pub previous: String,
    /// RFC 3339.
    pub since: String,
    /// Why, in a sentence.
    pub why: String,
    pub session: Option<String>,
}

/// The configured hook, if any.
#[derive(Clone, Debug)]
pub(crate) struct Hooks {
    command: Option<String>,
    states: Vec<String>,
    timeout: Duration,
    home: std::path::PathBuf,
    running: Arc<AtomicUsize>,
}

impl Hooks {
    pub(crate) fn new(config: &Config) -> Self {
        Hooks {
            command: config.on_activity.clone(),
            states: config.on_activity_states.clone(),
            timeout: config.hook_timeout,
            home: config.home.clone(),
            running: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs the hook for `notice` if its state is one it is for; returns at
    /// once.
    pub(crate) fn fire(&self, notice: Notice) {
        let Some(command) = self.command.clone() else {
            return;
        };
        if !self.states.contains(&notice.state) {
            return;
        }
        if self.running.fetch_add(1, Ordering::SeqCst) >= MAX_RUNNING {
            self.running.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(
                "on_activity: {MAX_RUNNING} hooks still running; {} {} not told",
                notice.peer,
                notice.state
            );
            return;
        }
        let running = Arc::clone(&self.running);
        let timeout = self.timeout;
        let home = self.home.clone();
        let spawned = std::thread::Builder::new()
            .name("hook".into())
            .spawn(move || {
                if let Err(why) = run(&command, &notice, &home, timeout) {
                    tracing::warn!(
                        "on_activity for {} {} failed: {why}",
                        notice.peer,
                        notice.state
                    );
                }
                running.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            self.running.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("on_activity: cannot start a thread: {e}");
        }
    }
}

/// Runs the hook to its end or its deadline.
fn run(command: &str, n: &Notice, home: &std::path::Path, timeout: Duration) -> Result<(), String> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .env("IAPEER_PEER", n.peer.as_str())
        .env("IAPEER_STATE", &n.state)
        .env("IAPEER_PREVIOUS_STATE", &n.previous)
        .env("IAPEER_SINCE", &n.since)
        .env("IAPEER_WHY", &n.why)
        .env("IAPEER_SESSION", n.session.as_deref().unwrap_or(""))
        .env("IAPEER_HOME", home)
        .current_dir(home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    crate::os::command::clean_child(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run /bin/sh: {e}"))?;
    let mut stderr = child.stderr.take();
    let (said_tx, said_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        while let Some(Ok(n)) = stderr.as_mut().map(|s| s.read(&mut buf)) {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > STDERR_KEPT {
                kept.drain(..kept.len() - STDERR_KEPT);
            }
        }
        let _ = said_tx.send(String::from_utf8_lossy(&kept).trim().to_owned());
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                // Its whole group: a `curl` under the shell goes too.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
                return Err(format!(
                    "it ran past {}s and was killed",
                    timeout.as_secs_f64()
                ));
            }
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    };
    // A process it left in the background may hold its stderr open: what
    // was said by now is enough.
    let said = said_rx
        .recv_timeout(Duration::from_secs(1))
        .unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "an unknown status".to_owned(),
    };
    Err(if said.is_empty() {
        format!("it ended with {how}")
    } else {
        format!("it ended with {how}: {said}")
    })
}
