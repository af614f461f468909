//! The decision log's vocabulary as types (DESIGN §8): what kind of line
//! (`ev`), what a wake decided (`mode`, `cause`), what a pass did
//! (`action`), how it left the peer (`outcome`), and who wrote it. The
//! strings are a public interface: scripts and postmortem greps match on
//! them, and `store/log/schema.md` lists every one (a test checks it).

use std::fmt;

use serde::{Deserialize, Serialize};

/// `ev`: what kind of event a line records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ev {
    Wake,
    Ready,
    Supervise,
    Stop,
    Start,
    Reset,
    Daemon,
    /// A live session's activity state changed (DESIGN §12).
    Activity,
    /// A task queued or delivered from the queue (DESIGN §13).
    Task,
}

impl Ev {
    pub const ALL: [Ev; 9] = [
        Ev::Wake,
        Ev::Ready,
        Ev::Supervise,
        Ev::Stop,
        Ev::Start,
        Ev::Reset,
        Ev::Daemon,
        Ev::Activity,
        Ev::Task,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Ev::Wake => "wake",
            Ev::Ready => "ready",
            Ev::Supervise => "supervise",
            Ev::Stop => "stop",
            Ev::Start => "start",
            Ev::Reset => "reset",
            Ev::Daemon => "daemon",
            Ev::Activity => "activity",
            Ev::Task => "task",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Ev> {
        Ev::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// `action`: what a supervise (or daemon) line did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    // supervise (DESIGN §8)
    ReapedIdle,
    ReapedMaxAge,
    ReapedGone,
    NeedsEagerFresh,
    ParkedStopped,
    AlwaysOnRelaunch,
    TickError,
    Alive,
    /// A session died while a delivered task was in flight.
    CrashedWhileWorking,
    /// `wake` lines: a start-up dialog was answered (DESIGN §6).
    DialogAnswered,
    /// The agent asked for a fresh start (`iapeer self-fresh`): not a death.
    SelfFresh,
    /// The host restarted under the session: a park, not a death.
    HostRestart,
    /// `iapeer restart`: ended to come back fresh now; not a death.
    Restarted,
    /// Refused window after window: no more automatic relaunches (§5).
    GaveUp,
    /// The runtime reported a usage limit: held until it lifts (§12).
    Limited,
    // daemon
    Started,
    Stopping,
    Reloaded,
    Adopted,
}

impl Action {
    pub(crate) const ALL: [Action; 19] = [
        Action::ReapedIdle,
        Action::ReapedMaxAge,
        Action::ReapedGone,
        Action::NeedsEagerFresh,
        Action::ParkedStopped,
        Action::AlwaysOnRelaunch,
        Action::TickError,
        Action::Alive,
        Action::CrashedWhileWorking,
        Action::DialogAnswered,
        Action::SelfFresh,
        Action::HostRestart,
        Action::Restarted,
        Action::GaveUp,
        Action::Limited,
        Action::Started,
        Action::Stopping,
        Action::Reloaded,
        Action::Adopted,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::ReapedIdle => "reaped-idle",
            Action::ReapedMaxAge => "reaped-max-age",
            Action::ReapedGone => "reaped-gone",
            Action::NeedsEagerFresh => "needs-eager-fresh",
            Action::ParkedStopped => "parked-stopped",
            Action::AlwaysOnRelaunch => "always-on-relaunch",
            Action::TickError => "tick-error",
            Action::Alive => "alive",
            Action::CrashedWhileWorking => "crashed-while-working",
            Action::DialogAnswered => "dialog-answered",
            Action::SelfFresh => "self-fresh",
            Action::HostRestart => "host-restart",
            Action::Restarted => "restarted",
            Action::GaveUp => "gave-up",
            Action::Limited => "limited",
            Action::Started => "started",
            Action::Stopping => "stopping",
            Action::Reloaded => "reloaded",
            Action::Adopted => "adopted",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Who wrote a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Cli,
    Daemon,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Fresh,
    Resume,
    /// A refusal by policy (stopped, crash loop, external supervisor).
    Refused,
    /// The wake cannot be carried out (nothing to resume, no cwd, a boot
    /// that never became ready, a lock held elsewhere).
    Fail,
}

/// Every `cause` a wake can log (DESIGN §4–§6). The strings are a public
/// interface: scripts and postmortem greps match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    FolderLaunch,
    Attach,
    AttachNothingToResume,
    /// A peer that has never had a session since it was added.
    FirstWake,
    /// `.fresh-next` (`iapeer refresh`): this natural wake is fresh.
    SoftReload,
    CrashOrSelfClose,
    IdleReapedHuman,
    IdleReapedHumanNoResume,
    IdleReapedNewTopic,
    IdleReapedResume,
    IdleReapedNoResume,
    /// A `.new-eager` request: the next start must be fresh.
    NeedsEagerFresh,
    ResumeFailedFresh,
    CrashLoop,
    /// iapeer gave up on it (`.failed`): refused until `reset`/`start`.
    GaveUp,
    Stopped,
    ExternalSupervisor,
    WakeLockHeld,
    CwdMissing,
    BootTimeout,
    LaunchFailed,
}

impl Cause {
    pub(crate) const ALL: [Cause; 21] = [
        Cause::FolderLaunch,
        Cause::Attach,
        Cause::AttachNothingToResume,
        Cause::FirstWake,
        Cause::SoftReload,
        Cause::CrashOrSelfClose,
        Cause::IdleReapedHuman,
        Cause::IdleReapedHumanNoResume,
        Cause::IdleReapedNewTopic,
        Cause::IdleReapedResume,
        Cause::IdleReapedNoResume,
        Cause::NeedsEagerFresh,
        Cause::ResumeFailedFresh,
        Cause::CrashLoop,
        Cause::GaveUp,
        Cause::Stopped,
        Cause::ExternalSupervisor,
        Cause::WakeLockHeld,
        Cause::CwdMissing,
        Cause::BootTimeout,
        Cause::LaunchFailed,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Cause::FolderLaunch => "folder-launch",
            Cause::Attach => "attach",
            Cause::AttachNothingToResume => "attach-nothing-to-resume",
            Cause::FirstWake => "first-wake",
            Cause::SoftReload => "soft-reload",
            Cause::CrashOrSelfClose => "crash-or-self-close",
            Cause::IdleReapedHuman => "idle-reaped-human",
            Cause::IdleReapedHumanNoResume => "idle-reaped-human-no-resume",
            Cause::IdleReapedNewTopic => "idle-reaped-new-topic",
            Cause::IdleReapedResume => "idle-reaped-resume",
            Cause::IdleReapedNoResume => "idle-reaped-no-resume",
            Cause::NeedsEagerFresh => "needs-eager-fresh",
            Cause::ResumeFailedFresh => "resume-failed-fresh",
            Cause::CrashLoop => "crash-loop",
            Cause::GaveUp => "gave-up",
            Cause::Stopped => "stopped",
            Cause::ExternalSupervisor => "external-supervisor",
            Cause::WakeLockHeld => "wake-lock-held",
            Cause::CwdMissing => "cwd-missing",
            Cause::BootTimeout => "boot-timeout",
            Cause::LaunchFailed => "launch-failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Cause> {
        Cause::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl Mode {
    pub(crate) const ALL: [Mode; 4] = [Mode::Fresh, Mode::Resume, Mode::Refused, Mode::Fail];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Fresh => "fresh",
            Mode::Resume => "resume",
            Mode::Refused => "refused",
            Mode::Fail => "fail",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `outcome`: what a line leaves the peer as, or what became of its
/// subject (a task, a definition, the guard).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Parked: the next wake may resume it.
    ResumeEligible,
    /// Ended on its own: the next message starts it fresh.
    FreshOnNextMessage,
    /// Ended, and being brought back now.
    Relaunching,
    /// Given up on: not relaunched until `iapeer reset` or `start`.
    Failed,
    /// A task typed into a running session (`wake` lines that launch nothing).
    Delivered,
    /// A task typed in, but the runtime's record does not show it taken,
    /// even after Enter was pressed once more.
    DeliveryUnconfirmed,
    /// `stop` lines: `iapeer rm` removed the peer.
    Removed,
    /// `start` lines: `iapeer add` defined the peer (its history begins).
    Added,
    /// `start` lines: the halt was lifted, or there was none.
    Started,
    WasNotStopped,
    /// `reset` lines: the crash-loop ring was cleared.
    GuardCleared,
    /// Verbose `supervise` lines: another supervisor owns the peer.
    Skipped,
    /// `task` lines: a task waits in the peer's queue (DESIGN §13).
    Queued,
}

impl Outcome {
    pub(crate) const ALL: [Outcome; 13] = [
        Outcome::ResumeEligible,
        Outcome::FreshOnNextMessage,
        Outcome::Relaunching,
        Outcome::Failed,
        Outcome::Delivered,
        Outcome::DeliveryUnconfirmed,
        Outcome::Removed,
        Outcome::Added,
        Outcome::Started,
        Outcome::WasNotStopped,
        Outcome::GuardCleared,
        Outcome::Skipped,
        Outcome::Queued,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::ResumeEligible => "resume-eligible",
            Outcome::FreshOnNextMessage => "fresh-on-next-message",
            Outcome::Relaunching => "relaunching",
            Outcome::Failed => "failed",
            Outcome::Delivered => "delivered",
            Outcome::DeliveryUnconfirmed => "delivery-unconfirmed",
            Outcome::Removed => "removed",
            Outcome::Added => "added",
            Outcome::Started => "started",
            Outcome::WasNotStopped => "was-not-stopped",
            Outcome::GuardCleared => "guard-cleared",
            Outcome::Skipped => "skipped",
            Outcome::Queued => "queued",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
