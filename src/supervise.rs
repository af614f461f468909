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
use crate::conversation;
use crate::ctx::Ctx;
use crate::error::Result;
use crate::identity::Identity;
use crate::lifecycle_log::{self, Action, Ev, Record};
use crate::markers::{Flag, Marker};
use crate::peers::{Peer, Policy, RuntimeKind};
use crate::process::{self, Liveness};
use crate::runtime::tmux::{ExitStatus, Probe};
use crate::runtime::{Conversation, Runtime};
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

/// Records the death of a recorded session: journal, then finish. `peer`
/// is the definition the caller acts on (the daemon keeps the last good
/// one while the file is broken).
pub fn record_death(
    ctx: &Ctx,
    id: &Identity,
    peer: Option<&Peer>,
    rec: SessionRecord,
    status: ExitStatus,
) -> Result<()> {
    let last_lines = ctx.host.capture(&rec.socket, id.as_str(), LAST_LINES).ok();
    let new_eager = ctx.state.flag(id, Flag::NewEager)?.is_some();
    let stopped = ctx.state.flag(id, Flag::Stopped)?.is_some();
    let action = death_action(new_eager, peer.map(|p| p.policy), stopped);
    let mut ending = ending_now(ctx, EndKind::Death, action.as_str());
    ending.exit_status = Some(status.to_string());
    ending.last_lines = last_lines.filter(|l| !l.is_empty());
    end(ctx, id, rec, ending)
}

/// Records a boot that failed (it exited, or missed its deadline): a death,
/// logged as the failed wake it is.
pub fn record_boot_failure(
    ctx: &Ctx,
    id: &Identity,
    rec: SessionRecord,
    cause: Cause,
    status: Option<ExitStatus>,
    last_lines: Option<String>,
) -> Result<()> {
    let mut ending = ending_now(ctx, EndKind::Death, cause.as_str());
    ending.exit_status = status.map(|s| s.to_string());
    ending.last_lines = last_lines.filter(|l| !l.is_empty());
    ending.boot = true;
    end(ctx, id, rec, ending)
}

/// Parks a live session: iapeer ends it cleanly and it stays
/// resume-eligible.
pub fn park(
    ctx: &Ctx,
    id: &Identity,
    rec: SessionRecord,
    action: Action,
    idle_seconds: Option<u64>,
) -> Result<()> {
    let mut ending = ending_now(ctx, EndKind::Park, action.as_str());
    ending.idle_seconds = idle_seconds;
    end(ctx, id, rec, ending)
}

/// An end of `kind`, logged as `action`, happening now, by this process.
fn ending_now(ctx: &Ctx, kind: EndKind, action: &str) -> Ending {
    Ending {
        kind,
        action: action.to_owned(),
        at_ms: ctx.now(),
        idle_seconds: None,
        exit_status: None,
        last_lines: None,
        source: source_name(ctx).to_owned(),
        boot: false,
    }
}

/// Journals `ending` in the record, then carries it out.
fn end(ctx: &Ctx, id: &Identity, mut rec: SessionRecord, ending: Ending) -> Result<()> {
    rec.ending = Some(ending);
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
            // Naming the conversation it was on, so the wake resumes that
            // one and not a neighbour's in the same folder.
            let on = ctx.peer(id).ok().and_then(|peer| {
                let runtime = crate::runtime::for_peer(&ctx.config, &peer);
                conversation::live(ctx, runtime.as_ref(), &peer, &rec)
            });
            let reason = conversation::park_reason(&ending.action, on.map(|c| c.id).as_deref());
            ctx.state
                .set_flag(id, Flag::IdleReaped, ending.at_ms, &reason)?;
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

/// Whether a journaled end's line made it to the log before a crash. The
/// comparison is on parsed fields: the launch line of the same session may
/// carry the same word as a cause (`needs-eager-fresh`).
fn already_logged(ctx: &Ctx, session: &str, ending: &Ending) -> bool {
    log_has(ctx, session, |e| {
        if ending.boot {
            e.ev() == Some(Ev::Wake)
                && e.str("mode") == Some("fail")
                && e.str("cause") == Some(&ending.action)
        } else {
            e.ev() == Some(Ev::Supervise) && e.str("action") == Some(&ending.action)
        }
    })
}

fn already_logged_action(ctx: &Ctx, session: &str, action: Action) -> bool {
    log_has(ctx, session, |e| {
        e.ev() == Some(Ev::Supervise) && e.str("action") == Some(action.as_str())
    })
}

/// Is there a line about `session` for which `matches` holds? Recovery is
/// rare, so reading the retained log is affordable.
fn log_has(ctx: &Ctx, session: &str, matches: impl Fn(&lifecycle_log::Entry) -> bool) -> bool {
    if session.is_empty() {
        return false;
    }
    let key = format!("\"session\":\"{session}\"");
    let mut found = false;
    let _ = lifecycle_log::for_each_matching(
        &ctx.config.paths.lifecycle_log,
        |raw| raw.contains(&key),
        |e| {
            if e.str("session") == Some(session) && matches(&e) {
                found = true;
                return false;
            }
            true
        },
    );
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
    None,
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
        finish_ending(ctx, id, rec, true)?;
        return Ok(Settled::None);
    }
    if rec.is_launching() {
        return finish_launch(ctx, id, rec);
    }
    match session_state(ctx, &rec) {
        SessionState::Alive => Ok(Settled::Alive(Box::new(rec))),
        SessionState::Unknown(why) => Ok(Settled::Unknown(why)),
        SessionState::Dead(status) => {
            record_death(ctx, id, peer, rec, status)?;
            Ok(Settled::None)
        }
    }
}

/// A launch whose launcher died before it recorded the pane: adopt what
/// came up, end whatever half-started, and never let a second server race
/// this one for the socket. Not a death: the agent did nothing wrong.
fn finish_launch(ctx: &Ctx, id: &Identity, mut rec: SessionRecord) -> Result<Settled> {
    match ctx.host.probe(&rec.socket, id.as_str()) {
        Probe::Alive {
            pane_pid,
            server_pid,
            ..
        } => {
            ctx.host.end_strays(&rec.socket, server_pid);
            rec.pane_pid = pane_pid;
            rec.pane_start = process::start_time(pane_pid);
            ctx.log(
                &ctx.record(Ev::Daemon)
                    .identity(id)
                    .action(Action::Adopted)
                    .session(&rec.session)
                    .reason(format!(
                        "its launcher died mid-launch; pid {pane_pid} came up"
                    )),
            )?;
            // Still starting: the ready gate is checked as for any boot.
            ctx.state.write_session(id, &rec)?;
            Ok(Settled::Alive(Box::new(rec)))
        }
        Probe::Unknown(why) => Ok(Settled::Unknown(why)),
        Probe::Dead { .. } | Probe::Gone => {
            ctx.host.end_strays(&rec.socket, None);
            ctx.host.kill(&rec.socket, id.as_str(), None)?;
            ctx.state.remove(id, Marker::Session)?;
            Ok(Settled::None)
        }
    }
}

/// A tmux session with no record (left by a tool, or by hand). A live one
/// is adopted, so no second session is ever started; a dead one is a
/// failed boot.
fn adopt_orphan(ctx: &Ctx, id: &Identity, peer: Option<&Peer>) -> Result<Settled> {
    let socket = ctx.config.paths.socket(id.as_str());
    if !socket.exists() {
        return Ok(Settled::None);
    }
    match ctx.host.probe(&socket, id.as_str()) {
        Probe::Gone => {
            ctx.host.end_strays(&socket, None);
            ctx.host.kill(&socket, id.as_str(), None)?;
            Ok(Settled::None)
        }
        Probe::Unknown(why) => Ok(Settled::Unknown(why)),
        Probe::Alive { pane_pid, .. } => {
            let now = ctx.now();
            // Its command line may say which conversation it is on.
            let resume_ref = peer.and_then(|p| {
                let argv: Vec<String> = process::cmdline(pane_pid)
                    .into_iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                crate::runtime::for_peer(&ctx.config, p).launched_on(&argv)
            });
            let rec = SessionRecord {
                identity: id.to_string(),
                runtime: peer.map_or("unknown", |p| p.runtime.as_str()).to_owned(),
                cwd: peer.map(|p| p.cwd.clone()).unwrap_or_default(),
                socket,
                pane_pid,
                started_at: crate::clock::format_ms(now),
                mode: "adopted".into(),
                resume_ref,
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
            record_death(ctx, id, peer, rec, status)?;
            Ok(Settled::None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: recovery took a session's own launch line (cause
    /// `needs-eager-fresh`) for its end line (action `needs-eager-fresh`)
    /// and never logged the end.
    #[test]
    fn recovery_does_not_take_a_launch_line_for_an_end() {
        let home = assert_fs::TempDir::new().unwrap();
        let config = crate::config::Config::from_lookup(|k| match k {
            "IAPEER_HOME" => Some(home.path().into()),
            "HOME" => Some(home.path().into()),
            _ => None,
        })
        .unwrap();
        let ctx = Ctx::open(config, lifecycle_log::Source::Daemon).unwrap();
        let launch = ctx
            .record(Ev::Wake)
            .identity("a")
            .mode(Mode::Fresh)
            .cause(Cause::NeedsEagerFresh)
            .session("s1");
        ctx.log(&launch).unwrap();
        let ending = Ending {
            kind: EndKind::Death,
            action: Action::NeedsEagerFresh.as_str().into(),
            at_ms: 0,
            idle_seconds: None,
            exit_status: None,
            last_lines: None,
            source: "daemon".into(),
            boot: false,
        };
        assert!(!already_logged(&ctx, "s1", &ending));
        let end = ctx
            .record(Ev::Supervise)
            .identity("a")
            .action(Action::NeedsEagerFresh)
            .session("s1");
        ctx.log(&end).unwrap();
        assert!(already_logged(&ctx, "s1", &ending));
        assert!(!already_logged(&ctx, "s2", &ending));
    }

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

// ---- one pass over one identity (DESIGN §7) -------------------------------

/// What a pass knows about an identity, all read before deciding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassFacts {
    pub external: bool,
    /// `None`: state without a definition; treated as lazy.
    pub policy: Option<Policy>,
    pub stopped: bool,
    pub new_eager: bool,
    pub session: Option<LiveFacts>,
}

/// About a recorded session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveFacts {
    /// Its end is journaled but unfinished.
    pub ending: bool,
    /// Recorded before tmux was asked, and not since (see `start`).
    pub launching: bool,
    pub liveness: Liveness,
    pub ready: bool,
    pub age_ms: i64,
    /// Since the last sign of activity; `None` when not worth computing.
    pub idle_ms: Option<i64>,
    pub idle_limit_ms: i64,
    pub max_age_ms: i64,
    pub boot_deadline_ms: i64,
}

/// What a pass does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PassAction {
    /// Another supervisor owns it: touch nothing.
    SkipExternal,
    Nothing,
    /// Finish an end a killed process left journaled.
    FinishEnding,
    /// Finish (adopt or clear) a launch whose launcher died.
    FinishLaunch,
    /// Its session died: record the death (then maybe relaunch).
    RecordDeath,
    /// No session, and one is wanted now (`.new-eager`, or `always`).
    Launch,
    Park(Action),
    /// Starting, but its waking process is gone: look at the screen.
    CheckBoot,
    /// Starting for longer than the boot deadline, its waker gone.
    BootTimeout,
}

/// The pass decision, pure: DESIGN §7 in order.
pub fn decide(f: &PassFacts) -> PassAction {
    if f.external {
        return PassAction::SkipExternal;
    }
    let Some(s) = &f.session else {
        return if !f.stopped && (f.new_eager || f.policy == Some(Policy::Always)) {
            PassAction::Launch
        } else {
            PassAction::Nothing
        };
    };
    if s.ending {
        return PassAction::FinishEnding;
    }
    if s.launching {
        // Its launcher holds the lock if it is still at work, and then the
        // worker acting on this finds the lock held and leaves it be.
        return PassAction::FinishLaunch;
    }
    match s.liveness {
        // Unknown is never a death.
        Liveness::Unknown => PassAction::Nothing,
        Liveness::Dead => PassAction::RecordDeath,
        Liveness::Alive if !s.ready && s.age_ms > s.boot_deadline_ms => PassAction::BootTimeout,
        Liveness::Alive if !s.ready => PassAction::CheckBoot,
        Liveness::Alive if f.stopped => PassAction::Park(Action::ParkedStopped),
        Liveness::Alive
            if f.policy != Some(Policy::Always)
                && s.idle_ms.is_some_and(|i| i > s.idle_limit_ms) =>
        {
            PassAction::Park(Action::ReapedIdle)
        }
        Liveness::Alive if s.age_ms > s.max_age_ms => PassAction::Park(Action::ReapedMaxAge),
        Liveness::Alive => PassAction::Nothing,
    }
}

#[cfg(test)]
mod pass_tests {
    use super::*;
    use Liveness::*;
    use PassAction::*;

    fn live(liveness: Liveness) -> LiveFacts {
        LiveFacts {
            ending: false,
            launching: false,
            liveness,
            ready: true,
            age_ms: 1_000,
            idle_ms: Some(10),
            idle_limit_ms: 3_600_000,
            max_age_ms: 14_400_000,
            boot_deadline_ms: 240_000,
        }
    }

    fn facts(session: Option<LiveFacts>) -> PassFacts {
        PassFacts {
            external: false,
            policy: Some(Policy::Lazy),
            stopped: false,
            new_eager: false,
            session,
        }
    }

    #[test]
    fn one_row_per_branch_of_design_section_7() {
        let mut rows: Vec<(&str, PassFacts, PassAction)> = Vec::new();
        let mut f = facts(Some(live(Alive)));
        f.external = true;
        rows.push(("external is never touched", f, SkipExternal));
        rows.push(("asleep lazy: nothing", facts(None), Nothing));
        let mut f = facts(None);
        f.new_eager = true;
        rows.push(("asleep with .new-eager: launch fresh now", f, Launch));
        let mut f = facts(None);
        f.policy = Some(Policy::Always);
        rows.push(("asleep always: launch", f, Launch));
        let mut f = facts(None);
        f.policy = Some(Policy::Always);
        f.stopped = true;
        f.new_eager = true;
        rows.push(("stopped: never launched", f, Nothing));
        let mut s = live(Alive);
        s.ending = true;
        rows.push(("a journaled end is finished", facts(Some(s)), FinishEnding));
        let mut s = live(Unknown);
        s.launching = true;
        rows.push((
            "a launch whose launcher died is finished",
            facts(Some(s)),
            FinishLaunch,
        ));
        rows.push((
            "dead: record the death",
            facts(Some(live(Dead))),
            RecordDeath,
        ));
        rows.push((
            "unknown is never a death",
            facts(Some(live(Unknown))),
            Nothing,
        ));
        let mut s = live(Alive);
        s.ready = false;
        rows.push((
            "starting, waker gone: check the screen",
            facts(Some(s)),
            CheckBoot,
        ));
        let mut s = live(Alive);
        s.ready = false;
        s.age_ms = 300_000;
        rows.push(("starting past the deadline", facts(Some(s)), BootTimeout));
        let mut f = facts(Some(live(Alive)));
        f.stopped = true;
        rows.push(("alive and stopped: park", f, Park(Action::ParkedStopped)));
        let mut s = live(Alive);
        s.idle_ms = Some(3_600_001);
        rows.push((
            "idle past the limit: park",
            facts(Some(s.clone())),
            Park(Action::ReapedIdle),
        ));
        let mut f = facts(Some(s));
        f.policy = Some(Policy::Always);
        rows.push(("always peers are never idle-parked", f, Nothing));
        let mut s = live(Alive);
        s.age_ms = 14_400_001;
        rows.push((
            "older than max age: park",
            facts(Some(s)),
            Park(Action::ReapedMaxAge),
        ));
        let mut s = live(Alive);
        s.age_ms = 14_400_001;
        s.idle_ms = Some(3_600_001);
        rows.push((
            "idle wins over max age",
            facts(Some(s)),
            Park(Action::ReapedIdle),
        ));
        rows.push(("alive and busy: nothing", facts(Some(live(Alive))), Nothing));
        for (what, f, want) in rows {
            assert_eq!(decide(&f), want, "{what}");
        }
    }
}

// ---- the impure half of a pass -------------------------------------------

/// How a pass learns when a live session was last active.
#[derive(Clone, Copy, Debug)]
pub enum Activity {
    /// From the session record, and the latest a worker measured (if any):
    /// cheap enough for the daemon's loop.
    Known(Option<EpochMs>),
    /// Also from the runtime's own records or tmux, when the record alone
    /// says idle: for a worker, which may take its time.
    Measure,
}

/// What a pass reads before deciding.
#[derive(Debug)]
pub struct Gathered {
    pub facts: PassFacts,
    pub record: Option<SessionRecord>,
    /// The latest activity the idle time was computed from, if it was.
    pub activity: Option<EpochMs>,
}

/// Reads the facts for `decide`. `present`, from a directory scan, spares
/// reading files that do not exist.
pub fn gather_pass(
    ctx: &Ctx,
    id: &Identity,
    peer: Option<&Peer>,
    present: Option<crate::markers::Present>,
    how: Activity,
) -> Result<Gathered> {
    let now = ctx.now();
    let external = peer.is_some_and(|p| p.external_supervisor.is_some());
    let may_have = |m: Marker| present.is_none_or(|p| p.has(m));
    let mut g = Gathered {
        facts: PassFacts {
            external,
            policy: peer.map(|p| p.policy),
            stopped: false,
            new_eager: false,
            session: None,
        },
        record: None,
        activity: None,
    };
    if external {
        return Ok(g);
    }
    let f = &mut g.facts;
    f.stopped = may_have(Marker::Stopped) && ctx.state.flag(id, Flag::Stopped)?.is_some();
    f.new_eager = may_have(Marker::NewEager) && ctx.state.flag(id, Flag::NewEager)?.is_some();
    if may_have(Marker::Session) {
        g.record = ctx.state.session(id)?;
    }
    if let Some(rec) = &g.record {
        let (live, activity) = live_facts(ctx, peer, rec, how, now);
        g.facts.session = Some(live);
        g.activity = activity;
    }
    Ok(g)
}

fn live_facts(
    ctx: &Ctx,
    peer: Option<&Peer>,
    rec: &SessionRecord,
    how: Activity,
    now: EpochMs,
) -> (LiveFacts, Option<EpochMs>) {
    let cfg = &ctx.config;
    let secs = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
    let idle_limit_ms = peer
        .and_then(|p| p.idle_secs)
        .map_or(cfg.idle.as_millis() as i64, secs);
    let max_age_ms = peer
        .and_then(|p| p.max_age_secs)
        .map_or(cfg.max_age.as_millis() as i64, secs);
    let started = rec.started_ms().unwrap_or(now);
    let liveness = if rec.ending.is_some() || rec.is_launching() {
        Liveness::Unknown
    } else {
        process::liveness(rec.pane_pid, rec.pane_start)
    };
    let lazy = peer.is_none_or(|p| p.policy == Policy::Lazy);
    let activity = (liveness == Liveness::Alive && rec.is_ready() && lazy).then(|| {
        let cheap = cheap_activity(rec, started);
        match how {
            Activity::Known(seen) => cheap.max(seen.unwrap_or(0)),
            Activity::Measure if now.saturating_sub(cheap) <= idle_limit_ms => cheap,
            Activity::Measure => activity(ctx, peer, rec, started),
        }
    });
    let live = LiveFacts {
        ending: rec.ending.is_some(),
        launching: rec.is_launching(),
        liveness,
        ready: rec.is_ready(),
        age_ms: now.saturating_sub(started),
        idle_ms: activity.map(|a| now.saturating_sub(a).max(0)),
        idle_limit_ms,
        max_age_ms,
        boot_deadline_ms: cfg.boot_deadline.as_millis() as i64,
    };
    (live, activity)
}

/// The latest activity the record itself shows: start, ready, last task.
pub fn cheap_activity(rec: &SessionRecord, started: EpochMs) -> EpochMs {
    let parse = |s: &Option<String>| s.as_deref().and_then(crate::clock::parse_rfc3339);
    started
        .max(parse(&rec.ready_at).unwrap_or(0))
        .max(parse(&rec.task_at).unwrap_or(0))
}

/// The latest activity from every source (DESIGN §11): the record, and the
/// runtime's own records of the conversation the session is on (Claude and
/// Codex) or tmux's activity time for a shell.
pub fn activity(ctx: &Ctx, peer: Option<&Peer>, rec: &SessionRecord, started: EpochMs) -> EpochMs {
    let Some(peer) = peer else {
        return cheap_activity(rec, started);
    };
    let runtime = crate::runtime::for_peer(&ctx.config, peer);
    let on = conversation::live(ctx, runtime.as_ref(), peer, rec);
    activity_on(ctx, runtime.as_ref(), peer, rec, started, on.as_ref())
}

/// [`activity`], given the conversation the session is on.
pub fn activity_on(
    ctx: &Ctx,
    runtime: &dyn Runtime,
    peer: &Peer,
    rec: &SessionRecord,
    started: EpochMs,
    on: Option<&Conversation>,
) -> EpochMs {
    let own = match peer.runtime {
        RuntimeKind::Shell => match ctx.host.probe(&rec.socket, &rec.identity) {
            Probe::Alive { activity_ms, .. } => activity_ms,
            _ => None,
        },
        _ => on.and_then(|c| runtime.activity(c)),
    };
    cheap_activity(rec, started).max(own.unwrap_or(0))
}

/// When a pass should look at this identity again even if nothing happens:
/// when it could turn idle, reach its max age, or miss its boot deadline.
pub fn revisit_at(facts: &PassFacts, rec: Option<&SessionRecord>, now: EpochMs) -> Option<EpochMs> {
    let (s, rec) = (facts.session.as_ref()?, rec?);
    if s.liveness != Liveness::Alive {
        return None;
    }
    let started = rec.started_ms().unwrap_or(now);
    if !s.ready {
        return Some(started.saturating_add(s.boot_deadline_ms).saturating_add(1));
    }
    let max_age = started.saturating_add(s.max_age_ms).saturating_add(1);
    let idle = match (facts.policy, s.idle_ms) {
        (Some(Policy::Always), _) | (_, None) => i64::MAX,
        (_, Some(idle)) => now.saturating_add(s.idle_limit_ms - idle).saturating_add(1),
    };
    Some(max_age.min(idle))
}

/// What a locked pass did.
#[derive(Debug)]
pub struct PassOutcome {
    /// Every action taken, in order.
    pub actions: Vec<PassAction>,
    /// A wake, if one ran.
    pub woke: Option<std::result::Result<crate::wake::Woke, crate::wake::WakeFailure>>,
    /// Someone else held the lock: nothing was done.
    pub busy: bool,
    /// The session's latest activity, as measured (for the daemon's loop,
    /// which does not measure it itself).
    pub activity: Option<EpochMs>,
}

/// One pass over one identity, under its wake lock (skipped if another
/// process holds it: that process is acting on it). A death is settled and
/// then, if wanted, the peer relaunched, in the same pass.
pub fn run_pass(
    ctx: &Ctx,
    id: &Identity,
    peer: Option<&Peer>,
    launch_allowed: bool,
) -> Result<PassOutcome> {
    let mut outcome = PassOutcome {
        actions: Vec::new(),
        woke: None,
        busy: false,
        activity: None,
    };
    let Some(lock) = ctx.state.try_lock(id)? else {
        outcome.busy = true;
        return Ok(outcome);
    };
    // A settled death may call for a relaunch; a relaunch may be refused.
    // Three rounds cover every chain (end → launch).
    for _ in 0..3 {
        let Gathered {
            facts,
            record: rec,
            activity,
        } = gather_pass(ctx, id, peer, None, Activity::Measure)?;
        outcome.activity = outcome.activity.or(activity);
        let action = decide(&facts);
        match (&action, rec) {
            (PassAction::Nothing | PassAction::SkipExternal, _) => break,
            (PassAction::Launch, _) if !launch_allowed => break,
            (PassAction::Launch, _) => {
                outcome.actions.push(action);
                let ask = crate::wake::Ask::default();
                outcome.woke = Some(crate::wake::wake_locked(ctx, id, &ask, &lock));
                break;
            }
            (PassAction::FinishEnding, Some(rec)) => finish_ending(ctx, id, rec, true)?,
            (PassAction::FinishLaunch, Some(rec)) => {
                finish_launch(ctx, id, rec)?;
            }
            (PassAction::RecordDeath, Some(rec)) => {
                let status = exit_status(ctx, &rec);
                record_death(ctx, id, peer, rec, status)?;
            }
            (PassAction::Park(a), Some(rec)) => {
                let idle_seconds = match a {
                    Action::ReapedIdle => facts
                        .session
                        .as_ref()
                        .and_then(|s| s.idle_ms)
                        .map(|ms| (ms / 1000) as u64),
                    _ => None,
                };
                park(ctx, id, rec, *a, idle_seconds)?;
            }
            (PassAction::CheckBoot, Some(rec)) => {
                let done = check_boot(ctx, id, peer, rec)?;
                outcome.actions.push(action);
                if !done {
                    break;
                }
                continue;
            }
            (PassAction::BootTimeout, Some(rec)) => {
                let last = ctx
                    .host
                    .capture(&rec.socket, id.as_str(), LAST_LINES)
                    .unwrap_or_default();
                crate::wake::boot_failed(
                    ctx,
                    id,
                    rec,
                    crate::wake::Boot::TimedOut {
                        last_lines: crate::runtime::tmux::last_lines(&last, LAST_LINES),
                    },
                )?;
            }
            (_, None) => break,
        }
        outcome.actions.push(action);
    }
    Ok(outcome)
}

/// A session left starting by a wake that died: if its screen is ready now,
/// it is ready (logged as such); if the runtime says the resume failed, it
/// is a failed boot. Returns whether anything changed.
fn check_boot(
    ctx: &Ctx,
    id: &Identity,
    peer: Option<&Peer>,
    mut rec: SessionRecord,
) -> Result<bool> {
    let Some(peer) = peer else { return Ok(false) };
    let runtime = crate::runtime::for_peer(&ctx.config, peer);
    let screen = ctx
        .host
        .capture(&rec.socket, id.as_str(), 60)
        .unwrap_or_default();
    match runtime.screen(peer, &screen) {
        crate::runtime::Screen::NotYet => Ok(false),
        crate::runtime::Screen::ResumeFailed(line) => {
            crate::wake::boot_failed(ctx, id, rec, crate::wake::Boot::ResumeFailed(line))?;
            Ok(true)
        }
        crate::runtime::Screen::Ready => {
            let now = ctx.now();
            rec.ready_at = Some(crate::clock::format_ms(now));
            // A waker killed between its ready line and recording it: the
            // line is there already, and is not written twice.
            if log_has(ctx, &rec.session, |e| e.ev() == Some(Ev::Ready)) {
                ctx.state.write_session(id, &rec)?;
                return Ok(true);
            }
            let mut line = ctx
                .record(Ev::Ready)
                .identity(id)
                .runtime(&rec.runtime)
                .session(&rec.session)
                .reason("the ready gate passed after the waking process had gone");
            line.mode = serde_json::from_value(serde_json::Value::String(rec.mode.clone())).ok();
            line.cause = Cause::parse(&rec.cause);
            line.latency_ms = rec
                .started_ms()
                .map(|s| now.saturating_sub(s).max(0) as u64);
            ctx.log(&line)?;
            ctx.state.write_session(id, &rec)?;
            Ok(true)
        }
    }
}
