//! The `.session` record: what iapeer knows about one live session
//! (DESIGN §2). The fields DESIGN lists come first; the rest let a session
//! be followed from launch to end, and let an end interrupted by a crash be
//! finished exactly once.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::core::clock::EpochMs;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub identity: String,
    pub runtime: String,
    #[serde(default)]
    pub cwd: PathBuf,
    #[serde(default)]
    pub socket: PathBuf,
    /// 0 while launching: the record is written before tmux is asked.
    pub pane_pid: i32,
    /// RFC 3339, when the launch began.
    pub started_at: String,
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub resume_ref: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    /// The last task delivered, if any.
    #[serde(default)]
    pub task: Option<String>,
    /// The kernel's boot id when the session was launched: a record from
    /// another boot means the host restarted under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The identity (`dev:ino`) of the state directory it was written in:
    /// a record in a copy of the home (`cp -a`, a restore from backup) is
    /// the original's, and is never acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,

    /// A fresh id per launch, carried by every log line about the session.
    #[serde(default)]
    pub session: String,
    /// The cause the launch was decided with.
    #[serde(default)]
    pub cause: String,
    /// The pane process's start time (clock ticks since boot, from
    /// `/proc/<pid>/stat`) so a recycled pid is never taken for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pane_start: Option<u64>,
    /// RFC 3339, when the ready gate passed; absent while starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<String>,
    /// RFC 3339, when `task` was delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_at: Option<String>,
    /// RFC 3339: its runtime reported a usage limit that lifts then; held,
    /// not parked, until that time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limited_until: Option<String>,
    /// Written first when the session ends, so an end interrupted by a crash
    /// is finished, not repeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending: Option<Ending>,
}

/// How a session is ending, journaled before anything is acted on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ending {
    pub kind: EndKind,
    /// The supervise action logged for it (`reaped-idle`, `reaped-gone`, …).
    pub action: String,
    pub at_ms: EpochMs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_lines: Option<String>,
    /// Who ended it (`daemon`, `cli`).
    #[serde(default)]
    pub source: String,
    /// A boot that failed: `action` is then the wake's cause
    /// (`boot-timeout`, `launch-failed`), logged as a failed wake.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub boot: bool,
    /// Why, in words, where the action alone does not say (a boot stopped
    /// at a screen only the operator can answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A death journaled while its pane was still being read: whoever
    /// finishes an end interrupted before its line reads the exit status
    /// and the last lines from the pane (kept until the end is done).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub words_unread: bool,
}

#[cfg(test)]
impl Ending {
    /// A death the daemon journaled as `action` at `at_ms`, nothing else
    /// said of it yet.
    pub(crate) fn daemon_death(action: &str, at_ms: EpochMs) -> Self {
        Ending {
            kind: EndKind::Death,
            action: action.to_owned(),
            at_ms,
            idle_seconds: None,
            exit_status: None,
            last_lines: None,
            source: "daemon".into(),
            boot: false,
            reason: None,
            words_unread: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndKind {
    /// Ended by iapeer, cleanly: resume-eligible, never a death.
    Park,
    /// Ended on its own, or a boot that never became ready.
    Death,
    /// Ended to come back fresh at once, as asked (`self-fresh`,
    /// `restart`): neither a park nor a death.
    Relaunch,
}

impl SessionRecord {
    /// Parses a `.session` file (unknown fields are ignored).
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready_at.is_some()
    }

    /// Written before tmux was asked, and not updated since: if its
    /// launcher is gone, the launch was interrupted.
    pub(crate) fn is_launching(&self) -> bool {
        self.pane_pid <= 0
    }

    pub fn started_ms(&self) -> Option<EpochMs> {
        crate::core::clock::parse_rfc3339(&self.started_at)
    }
}

/// Three-valued on purpose: "unknown" is never taken for a death.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
    Unknown,
}

/// Where a recorded session stands: the one reading of a record that a
/// pass, `settle` and `explain` all act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Its end is journaled but unfinished: finish that end first.
    Ending,
    /// Launched in an earlier boot: the host restarted under it.
    OtherBoot,
    /// Recorded before tmux was asked, and not since: a launch under way,
    /// or cut short.
    Launching,
    /// Its process, as far as can be told.
    Running(Liveness),
}

impl SessionRecord {
    /// Where this record stands, seen from the boot `boot` (this host's
    /// boot id, when known); `liveness` is asked only of a record whose
    /// process is known and of this boot.
    pub(crate) fn standing(
        &self,
        boot: Option<&str>,
        liveness: impl FnOnce(&SessionRecord) -> Liveness,
    ) -> Standing {
        let other_boot = matches!((boot, self.boot_id.as_deref()), (Some(b), Some(r)) if b != r);
        if self.ending.is_some() {
            Standing::Ending
        } else if other_boot {
            Standing::OtherBoot
        } else if self.is_launching() {
            Standing::Launching
        } else {
            Standing::Running(liveness(self))
        }
    }
}
