//! Every way a session ends (DESIGN §7), journaled.
//!
//! A session ends in one of two ways: a *park* (iapeer ended it cleanly:
//! resume-eligible, never a death) or a *death* (it ended on its own, or
//! its boot failed). Either way the end is first journaled into `.session`
//! (`ending`), then carried out step by step, each step idempotent: the
//! marker, the log line, the crash ring, the tmux server, and finally the
//! removal of `.session`. A process killed anywhere in between leaves the
//! journal behind, and whoever next looks at the identity (daemon or CLI,
//! under the wake lock) finishes the same end — so an end is recorded
//! exactly once, never twice and never lost. [`settle`] brings a recorded
//! session in line with reality the same way for the CLI and the daemon.

use std::time::Duration;

use crate::core::clock::{self, EpochMs};
use crate::core::error::Result;
use crate::core::identity::Identity;
use crate::core::marker::FlagMarker;
use crate::core::pass::{death_action, outcome};
use crate::core::peer::Peer;
use crate::core::record::{Entry, Record};
use crate::core::session::{EndKind, Ending, Liveness, SessionRecord, Standing};
use crate::core::vocab::{Action, Cause, Ev, Mode, Outcome, Source};
use crate::engine::conversation;
use crate::engine::ctx::{Ctx, Since};
use crate::os::process;
use crate::runtime::host::{ExitStatus, Probe};
use crate::store::log;
use crate::store::markers::{Flag, Marker};

/// Lines of the pane kept with a death.
pub(crate) const LAST_LINES: usize = 15;

/// What a death's line says of how the session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LastWords {
    pub status: ExitStatus,
    /// The last lines of its pane, when there were any to read.
    pub lines: Option<String>,
}

impl LastWords {
    fn new(status: ExitStatus, screen: Result<String>) -> Self {
        LastWords {
            status,
            lines: screen.ok().filter(|l| !l.is_empty()),
        }
    }
}

/// [`dead_pane`] with the last lines a death's line keeps.
pub(crate) fn last_words(ctx: &Ctx, rec: &SessionRecord) -> LastWords {
    let (status, screen) = dead_pane(ctx, rec, LAST_LINES);
    LastWords::new(status, screen)
}

/// How a session whose process is known dead ended, and the last `lines`
/// of its pane, read together in one tmux call: the only one between a
/// death and its line. The screen is taken once tmux has marked the pane
/// dead (it has read all the pane wrote); the status is tmux's, or the
/// process's own while it is still a zombie: tmux fills it in only once
/// it has reaped the process, and 3.3a sometimes never does. Until the
/// pane is marked dead it is looked at again, soon, then less often.
pub(crate) fn dead_pane(
    ctx: &Ctx,
    rec: &SessionRecord,
    lines: usize,
) -> (ExitStatus, Result<String>) {
    let zombie = || process::zombie_exit(rec.pane_pid, rec.pane_start).map(ExitStatus::from);
    // Read at once, before tmux reaps it: the surest source.
    let first = zombie();
    let deadline = std::time::Instant::now() + Duration::from_millis(300);
    let mut nap = Duration::from_millis(1);
    loop {
        let (probe, screen) = ctx
            .host
            .probe_and_capture(&rec.socket, &rec.identity, lines);
        let known = first.clone().or_else(zombie);
        let marked_dead = match &probe {
            Probe::Dead { status, .. } if *status != ExitStatus::Unknown => {
                return (status.clone(), screen)
            }
            Probe::Dead { .. } => true,
            Probe::Alive { .. } => false,
            Probe::Gone | Probe::Unknown(_) => {
                return (known.unwrap_or(ExitStatus::Unknown), screen)
            }
        };
        match known {
            Some(status) if marked_dead => return (status, screen),
            _ if std::time::Instant::now() >= deadline => {
                return (known.unwrap_or(ExitStatus::Unknown), screen)
            }
            _ => {
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(10));
            }
        }
    }
}

/// The reason `iapeer self-fresh` writes into `.new-eager`.
pub(crate) const SELF_FRESH: &str = "self-fresh";

/// Records the end of a recorded session whose process ended: journal,
/// then finish. A death, unless the agent asked for it (`self-fresh`
/// marked `.new-eager` during this session). `peer` is the definition the
/// caller acts on (the daemon keeps the last good one while the file is
/// broken). Returns the kind of end recorded.
pub(crate) fn record_death(
    ctx: &Ctx,
    id: &Identity,
    peer: Option<&Peer>,
    rec: SessionRecord,
) -> Result<EndKind> {
    record_death_returning(ctx, id, peer, rec).map(|(kind, _)| kind)
}

/// [`record_death`], with the task of a pool member that died working on
/// it, for the caller to dispatch once more.
///
/// The pane's exit status and last lines are read while the end is
/// journaled, side by side: the tmux call and the journal's write are
/// the two slow steps before the line, and neither needs the other. The
/// journal says its words are unread, so an end interrupted before its
/// line reads them from the pane when it is finished.
pub(crate) fn record_death_returning(
    ctx: &Ctx,
    id: &Identity,
    peer: Option<&Peer>,
    mut rec: SessionRecord,
) -> Result<(EndKind, Option<InFlight>)> {
    let mut ending = death_ending(ctx, id, peer, &rec)?;
    let mut journal = rec.clone();
    journal.ending = Some(Ending {
        words_unread: true,
        ..ending.clone()
    });
    let (journaled, words) = side_by_side(
        || ctx.state.write_session(id, &journal),
        || last_words(ctx, &rec),
    );
    journaled?;
    ending.exit_status = Some(words.status.to_string());
    ending.last_lines = words.lines;
    let kind = ending.kind;
    rec.ending = Some(ending);
    let again = carry_out(ctx, id, rec, false)?;
    Ok((kind, again))
}

/// [`record_death`] of a session whose last words are already read.
fn record_death_saying(
    ctx: &Ctx,
    id: &Identity,
    peer: Option<&Peer>,
    rec: SessionRecord,
    words: LastWords,
) -> Result<()> {
    let mut ending = death_ending(ctx, id, peer, &rec)?;
    ending.exit_status = Some(words.status.to_string());
    ending.last_lines = words.lines;
    end(ctx, id, rec, ending)
}

/// The end of a session whose process ended, as its markers decide it.
fn death_ending(
    ctx: &Ctx,
    id: &Identity,
    peer: Option<&Peer>,
    rec: &SessionRecord,
) -> Result<Ending> {
    let new_eager = ctx.state.flag(id, Flag::NewEager)?;
    let stopped = ctx.state.flag(id, Flag::Stopped)?.is_some();
    Ok(if asked_self_fresh(new_eager.as_ref(), rec) {
        ending_now(ctx, EndKind::Relaunch, Action::SelfFresh.as_str())
    } else {
        let action = death_action(new_eager.is_some(), peer.map(|p| p.policy), stopped);
        ending_now(ctx, EndKind::Death, action.as_str())
    })
}

/// Runs `here` on this thread while `there` runs on another, and gives
/// both results. Where no thread can be started (the process is out of
/// them), the two run in turn: slower, never lost.
fn side_by_side<A, B: Send>(here: impl FnOnce() -> A, there: impl FnOnce() -> B + Send) -> (A, B) {
    // Held apart from the thread, so that it is still here to run when
    // no thread could take it.
    let there = std::sync::Mutex::new(Some(there));
    let take = || there.lock().ok().and_then(|mut t| t.take());
    std::thread::scope(|scope| {
        let beside = std::thread::Builder::new()
            .name("last-words".into())
            .spawn_scoped(scope, || take().map(|f| f()));
        let a = here();
        let b = match beside.map(|h| h.join()) {
            Ok(Ok(Some(b))) => b,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // No thread could be started: it runs here.
            _ => take().map(|f| f()).expect("taken by no thread"),
        };
        (a, b)
    })
}

/// Did the agent ask for this end? `self-fresh` marked `.new-eager`
/// during the session.
pub(crate) fn asked_self_fresh(new_eager: Option<&FlagMarker>, rec: &SessionRecord) -> bool {
    new_eager.is_some_and(|f| {
        f.reason.as_deref() == Some(SELF_FRESH)
            && f.at_ms
                .zip(rec.started_ms())
                .is_none_or(|(at, started)| at >= started)
    })
}

/// Ends a live session so that it comes back fresh at once (`restart`):
/// neither a park nor a death. The caller has written `.new-eager`.
pub(crate) fn end_for_relaunch(ctx: &Ctx, id: &Identity, rec: SessionRecord) -> Result<()> {
    end_for_relaunch_saying(ctx, id, rec, None)
}

/// [`end_for_relaunch`], with a reason on its line.
pub(crate) fn end_for_relaunch_saying(
    ctx: &Ctx,
    id: &Identity,
    rec: SessionRecord,
    reason: Option<String>,
) -> Result<()> {
    let mut ending = ending_now(ctx, EndKind::Relaunch, Action::Restarted.as_str());
    ending.reason = reason;
    end(ctx, id, rec, ending)
}

/// Gives up on a peer that kept dying: `refusals` windows refused by the
/// crash-loop guard and `deaths` deaths in a row, with no healthy run
/// between (DESIGN §5). `.failed`, then the line.
/// Returns the reason it gave.
pub(crate) fn give_up(ctx: &Ctx, id: &Identity, refusals: u32, deaths: u32) -> Result<String> {
    let now = ctx.now();
    let reason = format!(
        "{deaths} deaths in a row with no healthy run, {refusals} crash-loop window(s) refused; \
         `iapeer why {id}` shows why it dies, `iapeer reset {id}` tries again"
    );
    ctx.state.set_flag(id, Flag::Failed, now, &reason)?;
    let mut line = ctx
        .record(Ev::Supervise)
        .identity(id)
        .action(Action::GaveUp)
        .outcome(Outcome::Failed)
        .reason(&reason);
    line.deaths = Some(ctx.state.deaths(id)?.ring.entries().len() as u64);
    ctx.log(&line)?;
    Ok(reason)
}

/// Settles a session the host restarted under (its `boot_id` is not this
/// boot's): a park, resume-eligible, never a death (DESIGN §4).
pub(crate) fn record_host_restart(ctx: &Ctx, id: &Identity, rec: SessionRecord) -> Result<()> {
    let mut ending = ending_now(ctx, EndKind::Park, Action::HostRestart.as_str());
    ending.reason = Some(format!(
        "the host restarted under it (it was launched in boot {})",
        rec.boot_id.as_deref().unwrap_or("?")
    ));
    end(ctx, id, rec, ending)
}

/// Records a boot that failed (it exited, or missed its deadline): a death,
/// logged as the failed wake it is.
pub(crate) fn record_boot_failure(
    ctx: &Ctx,
    id: &Identity,
    rec: SessionRecord,
    cause: Cause,
    status: Option<ExitStatus>,
    last_lines: Option<String>,
    reason: Option<String>,
) -> Result<()> {
    let mut ending = ending_now(ctx, EndKind::Death, cause.as_str());
    ending.exit_status = status.map(|s| s.to_string());
    ending.last_lines = last_lines.filter(|l| !l.is_empty());
    ending.boot = true;
    ending.reason = reason;
    end(ctx, id, rec, ending)
}

/// Parks a live session: iapeer ends it cleanly and it stays
/// resume-eligible.
pub(crate) fn park(
    ctx: &Ctx,
    id: &Identity,
    rec: SessionRecord,
    action: Action,
    idle_seconds: Option<u64>,
) -> Result<()> {
    park_saying(ctx, id, rec, action, idle_seconds, None)
}

/// [`park`], with a reason on its line.
pub(crate) fn park_saying(
    ctx: &Ctx,
    id: &Identity,
    rec: SessionRecord,
    action: Action,
    idle_seconds: Option<u64>,
    reason: Option<String>,
) -> Result<()> {
    let mut ending = ending_now(ctx, EndKind::Park, action.as_str());
    ending.idle_seconds = idle_seconds;
    ending.reason = reason;
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
        reason: None,
        words_unread: false,
    }
}

/// Journals `ending` in the record, then carries it out.
fn end(ctx: &Ctx, id: &Identity, rec: SessionRecord, ending: Ending) -> Result<()> {
    end_returning(ctx, id, rec, ending).map(|_| ())
}

/// The task of a pool member that died working on it, to be dispatched
/// once more (DESIGN §12) by whoever recorded the death.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    pub pool: String,
    pub task: String,
    pub topic: Option<String>,
}

/// [`end`], returning the task a pool member died working on, when its
/// `crashed-while-working` line was logged now (so it goes on once).
fn end_returning(
    ctx: &Ctx,
    id: &Identity,
    mut rec: SessionRecord,
    ending: Ending,
) -> Result<Option<InFlight>> {
    rec.ending = Some(ending);
    ctx.state.write_session(id, &rec)?;
    carry_out(ctx, id, rec, false)
}

/// Carries out a journaled end. `recovering`: the journal was found on
/// disk, so steps already done by a killed process are skipped.
pub(crate) fn finish_ending(
    ctx: &Ctx,
    id: &Identity,
    rec: SessionRecord,
    recovering: bool,
) -> Result<()> {
    carry_out(ctx, id, rec, recovering).map(|_| ())
}

/// [`finish_ending`], returning what [`end_returning`] does.
fn carry_out(
    ctx: &Ctx,
    id: &Identity,
    rec: SessionRecord,
    recovering: bool,
) -> Result<Option<InFlight>> {
    let Some(mut ending) = rec.ending.clone() else {
        return Ok(None);
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
    if !(recovering && already_logged(ctx, &rec.session, &ending)) {
        if ending.words_unread {
            // Killed while its pane was being read: read it now (the pane
            // is kept until the end is done).
            let words = last_words(ctx, &rec);
            ending.exit_status = Some(words.status.to_string());
            ending.last_lines = words.lines;
        }
        ctx.log(&ending_record(ctx, &rec, &ending))?;
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
    }
    if ending.kind != EndKind::Park {
        // It did not end parked: a park marker left from before is stale.
        ctx.state.remove(id, Marker::IdleReaped)?;
    }
    let mut again = None;
    if ending.kind == EndKind::Death {
        // An agent that asked for a fresh start was not interrupted.
        let asked = ending.action == Action::NeedsEagerFresh.as_str();
        if let Some(task) = task_in_flight(ctx, id, &rec).filter(|_| !asked) {
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
                // Once, with the line that says it died on it, by the
                // caller once the end is complete (a member woken for it
                // takes a while).
                again = ctx.peer(id).ok().and_then(|p| p.pool).map(|pool| InFlight {
                    pool,
                    task: task.to_owned(),
                    topic: rec.topic.clone(),
                });
            }
        }
    }
    // A session ended by iapeer (a park, a restart) has its whole tree
    // ended by pid, but only when this boot started it: after a host
    // restart the pid is someone else's. (A record from before boot ids
    // were kept is this boot's.)
    let this_boot = rec.boot_id.is_none() || rec.boot_id == process::boot_id();
    let pane =
        (ending.kind != EndKind::Death && this_boot).then_some((rec.pane_pid, rec.pane_start));
    ctx.host.kill(&rec.socket, id.as_str(), pane)?;
    ctx.state.remove(id, Marker::Session)?;
    Ok(again)
}

fn outcome_of(ending: &Ending) -> Outcome {
    Action::parse(&ending.action).map_or(Outcome::FreshOnNextMessage, outcome)
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
        match Action::parse(&ending.action) {
            Some(a) => base.action(a).outcome(outcome(a)),
            None => base.reason(format!("ended: {}", ending.action)),
        }
    };
    r = r
        .session(&rec.session)
        .last_lines(ending.last_lines.as_deref());
    r.idle_seconds = ending.idle_seconds;
    r.exit_status.clone_from(&ending.exit_status);
    if let Some(reason) = &ending.reason {
        r = r.reason(reason);
    }
    r
}

/// The task a session died working on (DESIGN §12): its last task, when
/// it died mid-turn by what its runtime recorded — the process's own
/// record of the turn (Claude's `sessions/<pid>.json`, Codex's rollout),
/// else its conversation's last entry (the user's, or a tool call) — or,
/// where the runtime keeps neither, by its last `activity` line.
fn task_in_flight<'a>(ctx: &Ctx, id: &Identity, rec: &'a SessionRecord) -> Option<&'a str> {
    let task = rec.task.as_deref()?;
    let working = ctx.peer(id).ok().and_then(|peer| {
        let runtime = crate::runtime::for_peer(&ctx.config, &peer);
        let on = conversation::live(ctx, runtime.as_ref(), &peer, rec);
        runtime
            .turn(rec.pane_pid, on.as_ref())
            .map(|t| t.turn != crate::core::activity::Turn::Over)
            .or_else(|| on.as_ref().and_then(|c| runtime.mid_turn(c)))
    });
    working
        .unwrap_or_else(|| last_activity(ctx, &rec.session).is_some_and(|s| s.in_turn()))
        .then_some(task)
}

/// The last activity state logged for `session`, read back from the end
/// of the log to the session's launch.
fn last_activity(ctx: &Ctx, session: &str) -> Option<crate::core::activity::State> {
    if session.is_empty() {
        return None;
    }
    let key = format!("\"session\":\"{session}\"");
    let mut found = None;
    let _ = log::for_each_backward(&ctx.config.paths.lifecycle_log, log::holding(&key), |e| {
        if e.ev() == Some(Ev::Activity) {
            found = e.str("state").and_then(crate::core::activity::State::parse);
            return false;
        }
        !crate::core::history::is_launch(&e)
    });
    found
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
pub(crate) fn log_has(ctx: &Ctx, session: &str, matches: impl Fn(&Entry) -> bool) -> bool {
    if session.is_empty() {
        return false;
    }
    let key = format!("\"session\":\"{session}\"");
    let mut found = false;
    let _ = log::for_each_matching(&ctx.config.paths.lifecycle_log, log::holding(&key), |e| {
        if e.str("session") == Some(session) && matches(&e) {
            found = true;
            return false;
        }
        true
    });
    found
}

fn source_name(ctx: &Ctx) -> &'static str {
    match ctx.source {
        Source::Cli => "cli",
        Source::Daemon => "daemon",
    }
}

/// What settling an identity's recorded session found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// No session (none recorded, or it just ended).
    None,
    Alive(Box<SessionRecord>),
    Unknown(String),
}

/// Brings the record in line with reality, as the daemon would: finishes
/// an interrupted end, records a death, adopts an orphan. Call with the
/// wake lock held.
pub(crate) fn settle(ctx: &Ctx, id: &Identity, peer: Option<&Peer>) -> Result<Settled> {
    let Some(rec) = ctx.state.session(id)? else {
        return adopt_orphan(ctx, id, peer);
    };
    match process::standing(&rec) {
        Standing::Ending => {
            finish_ending(ctx, id, rec, true)?;
            Ok(Settled::None)
        }
        Standing::OtherBoot => {
            record_host_restart(ctx, id, rec)?;
            Ok(Settled::None)
        }
        Standing::Launching => finish_launch(ctx, id, rec),
        Standing::Running(Liveness::Alive) => Ok(Settled::Alive(Box::new(rec))),
        Standing::Running(Liveness::Unknown) => Ok(Settled::Unknown(format!(
            "cannot inspect pid {}",
            rec.pane_pid
        ))),
        Standing::Running(Liveness::Dead) => {
            record_death(ctx, id, peer, rec)?;
            Ok(Settled::None)
        }
    }
}

/// A launch whose launcher died before it recorded the pane: adopt what
/// came up, end whatever half-started, and never let a second server race
/// this one for the socket. Not a death: the agent did nothing wrong.
pub(crate) fn finish_launch(ctx: &Ctx, id: &Identity, mut rec: SessionRecord) -> Result<Settled> {
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
        Probe::Unknown(why) if wedged(ctx, id, &rec) => {
            // Its server has refused every look for longer than a boot may
            // take: it will never come up. Ended by pid (by `kill`, as the
            // server does not answer) and recorded once, as the failed
            // boot it is.
            let last = format!("its tmux server refused every look: {why}");
            record_boot_failure(ctx, id, rec, Cause::BootTimeout, None, Some(last), None)?;
            Ok(Settled::None)
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

/// A launch older than the boot deadline: whatever its server says, it had
/// its time.
fn wedged(ctx: &Ctx, id: &Identity, rec: &SessionRecord) -> bool {
    let now = ctx.now();
    let started = rec.started_ms().unwrap_or(now);
    let age = ctx.since(id, &rec.session, Since::Started, started);
    age > ctx.config.boot_deadline.as_millis() as i64
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
                resume_ref,
                pane_start: process::start_time(pane_pid),
                ready_at: Some(clock::format_ms(now)),
                ..orphan_record(ctx, id, peer, socket, pane_pid, now)
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
            let rec = orphan_record(ctx, id, peer, socket, pane_pid, ctx.now());
            let screen = ctx.host.capture(&rec.socket, id.as_str(), LAST_LINES);
            record_death_saying(ctx, id, peer, rec, LastWords::new(status, screen))?;
            Ok(Settled::None)
        }
    }
}

/// The record of a session found without one: what the definition says
/// of it, started now, as far as anyone knows.
fn orphan_record(
    ctx: &Ctx,
    id: &Identity,
    peer: Option<&Peer>,
    socket: std::path::PathBuf,
    pane_pid: i32,
    now: EpochMs,
) -> SessionRecord {
    SessionRecord {
        identity: id.to_string(),
        runtime: peer.map_or("unknown", |p| p.runtime.as_str()).to_owned(),
        cwd: peer.map(|p| p.cwd.clone()).unwrap_or_default(),
        socket,
        pane_pid,
        started_at: clock::format_ms(now),
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
        limited_until: None,
        boot_id: process::boot_id(),
        home: Some(ctx.state.identity().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two halves run at once: `here` waits for `there` to have run,
    /// which it could not if they ran in turn.
    #[test]
    fn side_by_side_runs_both_at_once_and_gives_both_results() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (here, there) = side_by_side(
            || rx.recv_timeout(Duration::from_secs(10)),
            || {
                tx.send(std::thread::current().name().map(str::to_owned))
                    .unwrap();
                7
            },
        );
        assert_eq!(here, Ok(Some("last-words".to_owned())), "on its own thread");
        assert_eq!(there, 7);
    }

    /// Regression: recovery took a session's own launch line (cause
    /// `needs-eager-fresh`) for its end line (action `needs-eager-fresh`)
    /// and never logged the end.
    #[test]
    fn recovery_does_not_take_a_launch_line_for_an_end() {
        let home = assert_fs::TempDir::new().unwrap();
        let config = crate::store::config::Config::from_lookup(|k| match k {
            "IAPEER_HOME" => Some(home.path().into()),
            "HOME" => Some(home.path().into()),
            _ => None,
        })
        .unwrap();
        let ctx = Ctx::open(config, Source::Daemon).unwrap();
        let launch = ctx
            .record(Ev::Wake)
            .identity("a")
            .mode(Mode::Fresh)
            .cause(Cause::NeedsEagerFresh)
            .session("s1");
        ctx.log(&launch).unwrap();
        let ending = Ending::daemon_death(Action::NeedsEagerFresh.as_str(), 0);
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
}
