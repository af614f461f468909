//! Ending sessions, and one supervise pass over an identity (DESIGN §7).
//!
//! A session ends in one of two ways: a *park* (iapeer ended it cleanly:
//! resume-eligible, never a death) or a *death* (it ended on its own, or
//! its boot failed). Either way the end is first journaled into `.session`
//! (`ending`), then carried out step by step, each step idempotent: the
//! marker, the log line, the crash ring, the tmux server, and finally the
//! removal of `.session`. A process killed anywhere in between leaves the
//! journal behind, and whoever next looks at the identity (daemon or CLI,
//! under the wake lock) finishes the same end — so an end is recorded
//! exactly once, never twice and never lost.

use std::time::Duration;

use crate::clock::EpochMs;
use crate::ctx::Ctx;
use crate::error::Result;
use crate::identity::Identity;
use crate::lifecycle_log::{self, Action, Ev, Record};
use crate::markers::{Flag, Marker};
use crate::peers::{Peer, Policy};
use crate::process::{self, Liveness};
use crate::runtime::tmux::{ExitStatus, Probe};
use crate::session::{EndKind, Ending, SessionRecord};
use crate::wake_mode::{Cause, Mode};

/// Lines of the pane kept with a death.
pub const LAST_LINES: usize = 15;
/// A task delivered this recently before a death, or followed by activity
/// this recent, was still being worked on.
pub const QUIET: Duration = Duration::from_secs(30);

/// What is true of a recorded session right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionState {
    Alive,
    Dead(ExitStatus),
    /// Cannot tell (the process could not be inspected); never a death.
    Unknown(String),
}

/// Asks the process itself; tmux is asked only for how a dead one ended.
pub fn session_state(ctx: &Ctx, rec: &SessionRecord) -> SessionState {
    match process::liveness(rec.pane_pid, rec.pane_start) {
        Liveness::Alive => SessionState::Alive,
        Liveness::Unknown => SessionState::Unknown(format!("cannot inspect pid {}", rec.pane_pid)),
        Liveness::Dead => SessionState::Dead(exit_status(ctx, rec)),
    }
}

/// The exit status tmux kept. The process is known dead; tmux marks the
/// pane dead when the pty closes and fills in the status only once it has
/// reaped the process, so give it a moment. 3.3a sometimes never does.
fn exit_status(ctx: &Ctx, rec: &SessionRecord) -> ExitStatus {
    // Unreaped, the process itself still holds its status: the surest
    // source, and the one tmux 3.3a sometimes never fills in.
    if let Some(exit) = process::zombie_exit(rec.pane_pid, rec.pane_start) {
        return exit.into();
    }
    let deadline = std::time::Instant::now() + Duration::from_millis(300);
    loop {
        match ctx.host.probe(&rec.socket, &rec.identity) {
            Probe::Dead { status, .. } if status != ExitStatus::Unknown => return status,
            Probe::Dead { .. } | Probe::Alive { .. } if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => return ExitStatus::Unknown,
        }
    }
}

/// The supervise action for a death, given what is on disk (DESIGN §7):
/// an eager request relaunches fresh now; an `always` peer is relaunched;
/// anything else waits for the next message.
pub fn death_action(new_eager: bool, policy: Option<Policy>, stopped: bool) -> Action {
    if new_eager && !stopped {
        Action::NeedsEagerFresh
    } else if policy == Some(Policy::Always) && !stopped {
        Action::AlwaysOnRelaunch
    } else {
        Action::ReapedGone
    }
}

fn outcome(action: Action) -> &'static str {
    match action {
        Action::NeedsEagerFresh | Action::AlwaysOnRelaunch => "relaunching",
        Action::ReapedIdle | Action::ReapedMaxAge | Action::ParkedStopped => "resume-eligible",
        _ => "fresh-on-next-message",
    }
}

/// Records the death of a recorded session: journal, then finish.
pub fn record_death(
    ctx: &Ctx,
    id: &Identity,
    mut rec: SessionRecord,
    status: ExitStatus,
) -> Result<Action> {
    let last_lines = ctx.host.capture(&rec.socket, id.as_str(), LAST_LINES).ok();
    let peer = ctx.peer(id).ok();
    let new_eager = ctx.state.flag(id, Flag::NewEager)?.is_some();
    let stopped = ctx.state.flag(id, Flag::Stopped)?.is_some();
    let action = death_action(new_eager, peer.as_ref().map(|p| p.policy), stopped);
    rec.ending = Some(Ending {
        kind: EndKind::Death,
        action: action.as_str().to_owned(),
        at_ms: ctx.now(),
        idle_seconds: None,
        exit_status: Some(status.to_string()),
        last_lines: last_lines.filter(|l| !l.is_empty()),
        source: source_name(ctx).to_owned(),
        boot: false,
    });
    ctx.state.write_session(id, &rec)?;
    finish_ending(ctx, id, rec, false)?;
    Ok(action)
}

/// Records a boot that failed (it exited, or missed its deadline): a death,
/// logged as the failed wake it is.
pub fn record_boot_failure(
    ctx: &Ctx,
    id: &Identity,
    mut rec: SessionRecord,
    cause: Cause,
    status: Option<ExitStatus>,
    last_lines: Option<String>,
) -> Result<()> {
    rec.ending = Some(Ending {
        kind: EndKind::Death,
        action: cause.as_str().to_owned(),
        at_ms: ctx.now(),
        idle_seconds: None,
        exit_status: status.map(|s| s.to_string()),
        last_lines: last_lines.filter(|l| !l.is_empty()),
        source: source_name(ctx).to_owned(),
        boot: true,
    });
    ctx.state.write_session(id, &rec)?;
    finish_ending(ctx, id, rec, false)
}

/// Parks a live session: iapeer ends it cleanly and it stays
/// resume-eligible.
pub fn park(
    ctx: &Ctx,
    id: &Identity,
    mut rec: SessionRecord,
    action: Action,
    idle_seconds: Option<u64>,
) -> Result<()> {
    rec.ending = Some(Ending {
        kind: EndKind::Park,
        action: action.as_str().to_owned(),
        at_ms: ctx.now(),
        idle_seconds,
        exit_status: None,
        last_lines: None,
        source: source_name(ctx).to_owned(),
        boot: false,
    });
    ctx.state.write_session(id, &rec)?;
    finish_ending(ctx, id, rec, false)
}

/// Carries out a journaled end. `recovering`: the journal was found on
/// disk, so steps already done by a killed process are skipped.
pub fn finish_ending(ctx: &Ctx, id: &Identity, rec: SessionRecord, recovering: bool) -> Result<()> {
    let Some(ending) = rec.ending.clone() else {
        return Ok(());
    };
    if ending.kind == EndKind::Park {
        // The marker first: if we die after the kill, the next wake must
        // still know this was a park.
        if !(recovering && ctx.state.exists(id, Marker::IdleReaped)?) {
            ctx.state
                .set_flag(id, Flag::IdleReaped, ending.at_ms, &ending.action)?;
        }
    }
    let line = ending_record(ctx, &rec, &ending);
    if !(recovering && already_logged(ctx, &rec.session, &ending)) {
        ctx.log(&line)?;
    }
    if ending.kind == EndKind::Death {
        let mut deaths = ctx.state.deaths(id)?;
        if let Some(problem) = &deaths.problem {
            tracing::warn!(
                "{}: {problem}",
                ctx.state.path_of(id, Marker::Deaths).display()
            );
        }
        if !deaths.ring.contains(ending.at_ms) {
            deaths.ring.record(ending.at_ms, ctx.now());
            ctx.state.write_deaths(id, &deaths.ring)?;
        }
        // It died on its own: a park marker left from before is stale.
        ctx.state.remove(id, Marker::IdleReaped)?;
        // An agent that asked for a fresh start was not interrupted.
        let asked = ending.action == Action::NeedsEagerFresh.as_str();
        if let Some(task) = task_in_flight(&rec, ending.at_ms).filter(|_| !asked) {
            let crashed = ctx
                .record(Ev::Supervise)
                .identity(id)
                .action(Action::CrashedWhileWorking)
                .outcome(outcome_of(&ending))
                .session(&rec.session)
                .task(Some(task));
            if !(recovering
                && already_logged_action(ctx, &rec.session, Action::CrashedWhileWorking))
            {
                ctx.log(&crashed)?;
            }
        }
    }
    let pane = (ending.kind == EndKind::Park).then_some((rec.pane_pid, rec.pane_start));
    ctx.host.kill(&rec.socket, id.as_str(), pane)?;
    ctx.state.remove(id, Marker::Session)?;
    Ok(())
}

fn outcome_of(ending: &Ending) -> &'static str {
    parse_action(&ending.action).map_or("fresh-on-next-message", outcome)
}

/// The log line an end is recorded with.
fn ending_record(ctx: &Ctx, rec: &SessionRecord, ending: &Ending) -> Record {
    let base = Record::new(ending.at_ms, Ev::Supervise, ctx.source).identity(&rec.identity);
    let mut r = if ending.boot {
        // A boot that failed is the failed outcome of its wake.
        let mut r = base.runtime(&rec.runtime).mode(Mode::Fail);
        r.cause = Cause::parse(&ending.action);
        r.ev = Ev::Wake;
        r
    } else {
        match parse_action(&ending.action) {
            Some(a) => base.action(a).outcome(outcome(a)),
            None => base.reason(format!("ended: {}", ending.action)),
        }
    };
    r = r
        .session(&rec.session)
        .last_lines(ending.last_lines.as_deref());
    r.idle_seconds = ending.idle_seconds;
    r.exit_status.clone_from(&ending.exit_status);
    r
}

fn parse_action(s: &str) -> Option<Action> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
}

/// A task counts as in flight if it was delivered within `QUIET` of the
/// death.
fn task_in_flight(rec: &SessionRecord, died_at: EpochMs) -> Option<&str> {
    let task = rec.task.as_deref()?;
    let at = rec
        .task_at
        .as_deref()
        .and_then(crate::clock::parse_rfc3339)?;
    let quiet = QUIET.as_millis() as i64;
    (died_at.saturating_sub(at) <= quiet).then_some(task)
}

/// Whether a journaled end's line made it to the log before a crash. Only
/// the newest files are searched: recovery follows the crash closely.
fn already_logged(ctx: &Ctx, session: &str, ending: &Ending) -> bool {
    let action = format!("\"{}\"", ending.action);
    log_has(ctx, session, &action)
}

fn already_logged_action(ctx: &Ctx, session: &str, action: Action) -> bool {
    log_has(ctx, session, &format!("\"{}\"", action.as_str()))
}

fn log_has(ctx: &Ctx, session: &str, needle: &str) -> bool {
    if session.is_empty() {
        return false;
    }
    let key = format!("\"session\":\"{session}\"");
    let mut found = false;
    let _ = lifecycle_log::for_each_entry(&ctx.config.paths.lifecycle_log, |e| {
        if e.line.contains(&key) && e.line.contains(needle) {
            found = true;
            return false;
        }
        true
    });
    found
}

fn source_name(ctx: &Ctx) -> &'static str {
    match ctx.source {
        lifecycle_log::Source::Cli => "cli",
        lifecycle_log::Source::Daemon => "daemon",
    }
}

/// What settling an identity's recorded session found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// No session (none recorded, or it just ended).
    None {
        ended: Option<Action>,
    },
    Alive(Box<SessionRecord>),
    Unknown(String),
}

/// Brings the record in line with reality, as the daemon would: finishes
/// an interrupted end, records a death, adopts an orphan. Call with the
/// wake lock held.
pub fn settle(ctx: &Ctx, id: &Identity, peer: Option<&Peer>) -> Result<Settled> {
    let Some(rec) = ctx.state.session(id)? else {
        return adopt_orphan(ctx, id, peer);
    };
    if rec.ending.is_some() {
        let action = rec.ending.as_ref().and_then(|e| parse_action(&e.action));
        finish_ending(ctx, id, rec, true)?;
        return Ok(Settled::None { ended: action });
    }
    match session_state(ctx, &rec) {
        SessionState::Alive => Ok(Settled::Alive(Box::new(rec))),
        SessionState::Unknown(why) => Ok(Settled::Unknown(why)),
        SessionState::Dead(status) => {
            let action = record_death(ctx, id, rec, status)?;
            Ok(Settled::None {
                ended: Some(action),
            })
        }
    }
}

/// A tmux session with no record: a wake killed between launch and its
/// first write. A live one is adopted, so no second session is ever
/// started; a dead one is a failed boot.
fn adopt_orphan(ctx: &Ctx, id: &Identity, peer: Option<&Peer>) -> Result<Settled> {
    let socket = ctx.config.paths.socket(id.as_str());
    if !socket.exists() {
        return Ok(Settled::None { ended: None });
    }
    match ctx.host.probe(&socket, id.as_str()) {
        Probe::Gone => {
            ctx.host.kill(&socket, id.as_str(), None)?;
            Ok(Settled::None { ended: None })
        }
        Probe::Unknown(why) => Ok(Settled::Unknown(why)),
        Probe::Alive { pane_pid, .. } => {
            let now = ctx.now();
            let rec = SessionRecord {
                identity: id.to_string(),
                runtime: peer.map_or("unknown", |p| p.runtime.as_str()).to_owned(),
                cwd: peer.map(|p| p.cwd.clone()).unwrap_or_default(),
                socket,
                pane_pid,
                started_at: crate::clock::format_ms(now),
                mode: "adopted".into(),
                resume_ref: None,
                topic: None,
                task: None,
                session: uuid::Uuid::new_v4().to_string(),
                cause: "adopted".into(),
                pane_start: process::start_time(pane_pid),
                ready_at: Some(crate::clock::format_ms(now)),
                task_at: None,
                ending: None,
            };
            ctx.log(
                &ctx.record(Ev::Daemon)
                    .identity(id)
                    .action(Action::Adopted)
                    .session(&rec.session)
                    .reason(format!(
                        "a live tmux session (pid {pane_pid}) had no record"
                    )),
            )?;
            ctx.state.write_session(id, &rec)?;
            Ok(Settled::Alive(Box::new(rec)))
        }
        Probe::Dead { pane_pid, status } => {
            let rec = SessionRecord {
                identity: id.to_string(),
                runtime: peer.map_or("unknown", |p| p.runtime.as_str()).to_owned(),
                cwd: peer.map(|p| p.cwd.clone()).unwrap_or_default(),
                socket,
                pane_pid,
                started_at: crate::clock::format_ms(ctx.now()),
                mode: "adopted".into(),
                resume_ref: None,
                topic: None,
                task: None,
                session: uuid::Uuid::new_v4().to_string(),
                cause: "adopted".into(),
                pane_start: None,
                ready_at: None,
                task_at: None,
                ending: None,
            };
            let action = record_death(ctx, id, rec, status)?;
            Ok(Settled::None {
                ended: Some(action),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn death_actions_follow_design_section_7() {
        use Action::*;
        let cases = [
            (true, Some(Policy::Lazy), false, NeedsEagerFresh),
            (true, Some(Policy::Always), false, NeedsEagerFresh),
            (false, Some(Policy::Always), false, AlwaysOnRelaunch),
            (false, Some(Policy::Lazy), false, ReapedGone),
            (false, None, false, ReapedGone),
            // A stopped peer is never relaunched.
            (true, Some(Policy::Always), true, ReapedGone),
            (false, Some(Policy::Always), true, ReapedGone),
        ];
        for (eager, policy, stopped, want) in cases {
            assert_eq!(
                death_action(eager, policy, stopped),
                want,
                "{eager} {policy:?} {stopped}"
            );
        }
    }
}
