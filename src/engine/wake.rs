//! Bringing a peer up: `wake` (DESIGN §6), in this order —
//! validate → refuse if external → refuse if stopped → take the wake lock →
//! re-check both refusals → settle a recorded session that died → a live
//! session wins (deliver the task) → cwd must exist → crash-loop guard →
//! `resolve_wake_mode` → log the decision → launch → ready gate → record →
//! log `ready` → deliver the task.
//!
//! The checks from "external" to "resolve_wake_mode" are one pure function,
//! `core::wake_plan::plan`, so `iapeer explain` shows exactly what
//! a wake would do; this file gathers its facts and carries it out.

use std::ffi::OsString;
use std::time::Instant;

use crate::core::clock;
use crate::core::clock::EpochMs;
use crate::core::crash_ring::Policy as GuardPolicy;
use crate::core::error::{Error, Refusal, Result};
use crate::core::identity::Identity;
use crate::core::peer::Peer;
use crate::core::record;
use crate::core::session::SessionRecord;
use crate::core::vocab::{Cause, Ev, Mode, Outcome};
use crate::core::wake_mode::Decision;
use crate::core::wake_plan::{check_task, plan, Ask, Gathered, Plan};
use crate::engine::boot::{await_ready, boot_failed, finish_interrupted, Boot, Interrupted};
use crate::engine::ctx::Ctx;
use crate::engine::ending::Settled;
use crate::engine::{conversation, deliver, queue};
use crate::runtime::host::{LaunchSpec, Probe};
use crate::runtime::{self, Runtime};
use crate::store::markers::{Flag, Marker, WakeLock};

/// Reads the facts for `plan`. `alive` is what the caller found.
pub(crate) fn gather(ctx: &Ctx, id: &Identity, peer: &Peer, alive: bool) -> Result<Gathered> {
    let state = &ctx.state;
    let deaths = state.deaths(id)?;
    if let Some(problem) = &deaths.problem {
        tracing::warn!("{}: {problem}", state.path_of(id, Marker::Deaths).display());
    }
    let runtime = runtime::for_peer(&ctx.config, peer);
    let idle_reaped = state.flag(id, Flag::IdleReaped)?;
    let parked_reason = idle_reaped.as_ref().and_then(|f| f.reason.as_deref());
    Ok(Gathered {
        external: peer.external_supervisor.clone(),
        stopped: state.flag(id, Flag::Stopped)?.is_some(),
        alive,
        cwd_exists: peer.cwd.is_dir(),
        ring: deaths.ring,
        failed: state.flag(id, Flag::Failed)?.is_some(),
        resume_target: conversation::resume_target(ctx, runtime.as_ref(), peer, parked_reason),
        idle_reaped: idle_reaped.is_some(),
        new_eager: state.flag(id, Flag::NewEager)?.is_some(),
        fresh_next: state.flag(id, Flag::FreshNext)?.is_some(),
        // `.deaths` is written at a peer's first ready and kept from then
        // on (`reset` empties it), and every failed boot writes it.
        had_session: idle_reaped.is_some() || state.exists(id, Marker::Deaths)?,
        stored_topic: state.topic(id)?,
        conversational: peer.is_conversational(),
    })
}

pub(crate) fn guard_policy(ctx: &Ctx) -> GuardPolicy {
    GuardPolicy {
        max: ctx.config.crashloop_max,
        window_ms: ctx.config.crashloop_window.as_millis() as i64,
    }
}

/// How a wake ended well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Woke {
    Launched {
        mode: Mode,
        cause: Cause,
        runtime: String,
        latency_ms: u64,
        session: String,
    },
    AlreadyAlive {
        runtime: String,
        delivered: bool,
        /// The task was queued behind this many (its turn was not over).
        queued: Option<usize>,
        session: String,
    },
}

/// How a wake ended badly: the error, with the mode and cause it was
/// logged with.
#[derive(Debug)]
pub struct WakeFailure {
    pub mode: Mode,
    pub cause: Option<Cause>,
    pub runtime: Option<String>,
    pub error: Error,
    /// The boot failed and was recorded as a death.
    pub died: bool,
}

impl From<Error> for WakeFailure {
    fn from(error: Error) -> Self {
        WakeFailure {
            mode: Mode::Fail,
            cause: None,
            runtime: None,
            error,
            died: false,
        }
    }
}

/// Wakes `id`. Exit codes follow from the error (DESIGN §9).
pub fn wake(ctx: &Ctx, id: &Identity, ask: &Ask) -> std::result::Result<Woke, WakeFailure> {
    if let Some(task) = &ask.task {
        check_task(task)?;
    }
    if let Some(topic) = &ask.topic {
        crate::core::marker::check_topic(topic)?;
    }
    let peer = ctx.peer(id)?;
    ctx.state.check(id)?;
    refuse_if_needed(ctx, id, &peer, ask)?;

    let lock = match ctx.lock(id) {
        Ok(lock) => lock,
        Err(error @ Error::Refused(Refusal::LockHeld { .. })) => {
            log_refusal(
                ctx,
                id,
                &peer,
                ask,
                Mode::Fail,
                Cause::WakeLockHeld,
                None,
                &error,
            );
            return Err(failure(Mode::Fail, Cause::WakeLockHeld, &peer, error));
        }
        Err(e) => return Err(e.into()),
    };
    wake_locked(ctx, id, ask, &lock)
}

/// The part of a wake that runs under the identity's wake lock (the daemon
/// calls it with a lock it already holds).
pub(crate) fn wake_locked(
    ctx: &Ctx,
    id: &Identity,
    ask: &Ask,
    _lock: &WakeLock,
) -> std::result::Result<Woke, WakeFailure> {
    // Both refusals again: another process may have acted while we waited.
    let peer = ctx.peer(id)?;
    refuse_if_needed(ctx, id, &peer, ask)?;

    match crate::engine::ending::settle(ctx, id, Some(&peer))? {
        Settled::Alive(rec) => return deliver_to_live(ctx, id, &peer, *rec, ask),
        Settled::Unknown(why) => {
            return Err(Error::failed(
                id.to_string(),
                format!("cannot tell whether its session is alive ({why})"),
                "retry in a moment",
            )
            .into())
        }
        Settled::None => {}
    }

    let now = ctx.now();
    let mut g = gather(ctx, id, &peer, false)?;
    if g.ring.clamp_future(now) {
        // Deaths "in the future" (the clock went back) count from now on;
        // stored that way, the retry_after reported below stays true.
        ctx.state.write_deaths(id, &g.ring)?;
    }
    let runtime = runtime::for_peer(&ctx.config, &peer);
    match plan(&g, ask, now, guard_policy(ctx)) {
        // A stop (or an edited definition) that landed after the checks
        // above: refused all the same.
        Plan::RefuseExternal(_) | Plan::RefuseStopped => {
            refuse_if_needed(ctx, id, &peer, ask)?;
            Err(Error::failed(id.to_string(), "it was stopped meanwhile", "retry").into())
        }
        Plan::Deliver => unreachable!("gathered with no live session, so nothing to deliver to"),
        Plan::CwdMissing => {
            let error = Error::input(
                format!("peer {id}"),
                format!("its working folder {} does not exist", peer.cwd.display()),
                format!(
                    "create it, or fix cwd in {}",
                    ctx.config.paths.peer_file(id.as_str()).display()
                ),
            );
            log_refusal(
                ctx,
                id,
                &peer,
                ask,
                Mode::Fail,
                Cause::CwdMissing,
                None,
                &error,
            );
            consume_eager(ctx, id)?;
            Err(failure(Mode::Fail, Cause::CwdMissing, &peer, error))
        }
        Plan::RefuseFailed => {
            let since_ms = ctx.state.flag(id, Flag::Failed)?.and_then(|f| f.at_ms);
            let error = Error::Refused(Refusal::Failed {
                identity: id.to_string(),
                since_ms,
            });
            log_refusal(
                ctx,
                id,
                &peer,
                ask,
                Mode::Refused,
                Cause::GaveUp,
                None,
                &error,
            );
            consume_eager(ctx, id)?;
            Err(failure(Mode::Refused, Cause::GaveUp, &peer, error))
        }
        Plan::CrashLoop {
            counted,
            retry_after_ms,
        } => {
            let error = Error::Refused(Refusal::CrashLoop {
                identity: id.to_string(),
                deaths: counted,
                window_secs: ctx.config.crashloop_window.as_secs(),
                retry_after_ms,
            });
            let mut line =
                refusal_line(ctx, id, &peer, ask, Mode::Refused, Cause::CrashLoop, &error);
            line.deaths = Some(counted as u64);
            line.retry_after = Some(clock::format_ms(retry_after_ms));
            ctx.log(&line)?;
            Err(failure(Mode::Refused, Cause::CrashLoop, &peer, error))
        }
        Plan::Fail(decision) => {
            let error = Error::failed(
                id.to_string(),
                "--resume was asked, but there is no conversation to resume".to_owned(),
                format!(
                    "wake it without --resume to start fresh (cwd {})",
                    peer.cwd.display()
                ),
            );
            log_refusal(
                ctx,
                id,
                &peer,
                ask,
                decision.mode,
                decision.cause,
                None,
                &error,
            );
            Err(failure(decision.mode, decision.cause, &peer, error))
        }
        Plan::Launch(decision) => launch(
            ctx,
            id,
            &peer,
            runtime.as_ref(),
            ask,
            decision,
            g.resume_target,
        ),
    }
}

/// A wake refused before it launches answers `.new-eager` all the same: a
/// marker never makes a loop (DESIGN §5).
fn consume_eager(ctx: &Ctx, id: &Identity) -> Result<()> {
    if ctx.state.take_flag(id, Flag::NewEager)?.is_some() {
        tracing::info!("{id}: .new-eager consumed by a refused wake");
    }
    Ok(())
}

fn failure(mode: Mode, cause: Cause, peer: &Peer, error: Error) -> WakeFailure {
    WakeFailure {
        mode,
        cause: Some(cause),
        runtime: Some(peer.runtime.as_str().to_owned()),
        error,
        died: false,
    }
}

/// External supervisor and `.stopped`: refused, logged, before any lock.
fn refuse_if_needed(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    ask: &Ask,
) -> std::result::Result<(), WakeFailure> {
    if let Some(sup) = &peer.external_supervisor {
        let error = Error::Refused(Refusal::External {
            identity: id.to_string(),
            supervisor: sup.clone(),
        });
        log_refusal(
            ctx,
            id,
            peer,
            ask,
            Mode::Refused,
            Cause::ExternalSupervisor,
            None,
            &error,
        );
        consume_eager(ctx, id)?;
        return Err(failure(
            Mode::Refused,
            Cause::ExternalSupervisor,
            peer,
            error,
        ));
    }
    if ctx.state.flag(id, Flag::Stopped)?.is_some() {
        let error = Error::Refused(Refusal::Stopped {
            identity: id.to_string(),
        });
        log_refusal(
            ctx,
            id,
            peer,
            ask,
            Mode::Refused,
            Cause::Stopped,
            None,
            &error,
        );
        consume_eager(ctx, id)?;
        return Err(failure(Mode::Refused, Cause::Stopped, peer, error));
    }
    Ok(())
}

/// The start of every `wake` line about this ask.
fn wake_line(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    ask: &Ask,
    mode: Mode,
    cause: Cause,
) -> record::Record {
    ctx.record(Ev::Wake)
        .identity(id)
        .runtime(peer.runtime)
        .mode(mode)
        .cause(cause)
        .topic(ask.topic.as_deref())
}

fn refusal_line(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    ask: &Ask,
    mode: Mode,
    cause: Cause,
    error: &Error,
) -> record::Record {
    wake_line(ctx, id, peer, ask, mode, cause).reason(error)
}

/// Logs a refusal or failure; the refusal stands even if the line cannot
/// be written (it is reported on stderr instead).
#[allow(clippy::too_many_arguments)]
fn log_refusal(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    ask: &Ask,
    mode: Mode,
    cause: Cause,
    session: Option<&str>,
    error: &Error,
) {
    let mut line = refusal_line(ctx, id, peer, ask, mode, cause, error);
    if let Some(s) = session {
        line = line.session(s);
    }
    if let Err(e) = ctx.log(&line) {
        tracing::error!("could not log the refusal of {id}: {e}");
    }
}

/// A live session wins: no launch; the task (if any) is delivered.
fn deliver_to_live(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    mut rec: SessionRecord,
    ask: &Ask,
) -> std::result::Result<Woke, WakeFailure> {
    let runtime = runtime::for_peer(&ctx.config, peer);
    if !rec.is_ready() {
        // Its own wake went away before the ready gate: finish that gate
        // here, as the daemon would, waiting out the boot deadline.
        let until = Instant::now() + ctx.config.boot_deadline;
        match finish_interrupted(ctx, id, peer, rec, until)? {
            Interrupted::Ready(ready) => rec = *ready,
            Interrupted::Starting | Interrupted::Failed => {
                return Err(Error::failed(
                    id.to_string(),
                    "a session left starting by an interrupted wake never became ready",
                    format!("wake {id} again to start it anew"),
                )
                .into());
            }
        }
    }
    if let Some(topic) = ask.topic.as_deref().filter(|t| !t.trim().is_empty()) {
        ctx.state.set_topic(id, topic)?;
    }
    let mut queued = None;
    let delivered = match &ask.task {
        Some(task) if queue::must_wait(ctx, id, peer, runtime.as_ref(), &rec) => {
            // Not typed into the middle of a turn (DESIGN §13).
            let ahead = queue::enqueue(ctx, id, peer, Some(&rec), task, ask.topic.as_deref())?;
            queued = Some(ahead);
            false
        }
        Some(task) => {
            let outcome = deliver::deliver(ctx, id, peer, runtime.as_ref(), &mut rec, task)?;
            ctx.log(&deliver::delivered_line(
                ctx,
                id,
                peer,
                &rec,
                ask.topic.as_deref(),
                task,
                outcome,
            ))?;
            true
        }
        None => false,
    };
    Ok(Woke::AlreadyAlive {
        runtime: peer.runtime.as_str().to_owned(),
        delivered,
        queued,
        session: rec.session.clone(),
    })
}

/// Log the decision, consume its markers, launch, pass the ready gate
/// (retrying a failed resume once, fresh), record, deliver.
fn launch(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    runtime: &dyn Runtime,
    ask: &Ask,
    decision: Decision,
    resume_target: Option<String>,
) -> std::result::Result<Woke, WakeFailure> {
    let decided = Instant::now();
    let deadline = decided + ctx.config.boot_deadline;
    let mut mode = decision.mode;
    let mut cause = decision.cause;
    let mut session = uuid::Uuid::new_v4().to_string();

    // Log the decision before acting on it: if the line cannot be
    // written, nothing is launched.
    ctx.log(&decision_line(ctx, id, peer, ask, mode, cause, &session))?;
    // Taken without a sync of their own: the journal `start` writes in
    // the same folder, before tmux is asked, makes them durable with it.
    let mut taken = Vec::new();
    for (consume, flag) in [
        (decision.consume.idle_reaped, Flag::IdleReaped),
        (decision.consume.new_eager, Flag::NewEager),
        (decision.consume.fresh_next, Flag::FreshNext),
    ] {
        if consume {
            taken.extend(ctx.state.take_flag_unsynced(id, flag)?);
        }
    }

    let mut plan = match (mode, &resume_target) {
        (Mode::Resume, Some(target)) => runtime.resume(peer, target),
        _ => runtime.fresh(peer, &session),
    };
    let mut rec =
        start(ctx, id, peer, runtime, &plan, mode, cause, &session, ask).inspect_err(|_| {
            // Nothing launched (no record left behind): the markers still say
            // what they said, for the next wake.
            if matches!(ctx.state.session(id), Ok(None)) {
                for t in &taken {
                    if let Err(e) = ctx.state.restore_flag(id, t) {
                        tracing::error!("{e}");
                    }
                }
            }
        })?;
    let gate_deadline = deadline.min(Instant::now() + ctx.config.ready_gate);
    let mut boot = await_ready(ctx, id, peer, runtime, &rec, gate_deadline);

    if mode == Mode::Resume && boot != Boot::Ready {
        // A resume that does not come up is retried once, fresh; it is not
        // a death (DESIGN §4).
        tracing::info!("{id}: resume did not come up ({boot:?}); retrying fresh");
        ctx.host.kill(
            &rec.socket,
            id.as_str(),
            Some((rec.pane_pid, rec.pane_start)),
        )?;
        ctx.state.remove(id, Marker::Session)?;
        (mode, cause) = crate::core::wake_mode::after_failed_resume();
        session = uuid::Uuid::new_v4().to_string();
        let mut line = decision_line(ctx, id, peer, ask, mode, cause, &session);
        line = line.reason(format!(
            "resume of {} did not come up: {}",
            resume_target.as_deref().unwrap_or("?"),
            boot.describe()
        ));
        ctx.log(&line)?;
        plan = runtime.fresh(peer, &session);
        rec = start(ctx, id, peer, runtime, &plan, mode, cause, &session, ask)?;
        let gate_deadline = deadline.min(Instant::now() + ctx.config.ready_gate);
        boot = await_ready(ctx, id, peer, runtime, &rec, gate_deadline);
    }

    if boot != Boot::Ready {
        let describe = boot.describe();
        let boot_cause = boot_failed(ctx, id, rec, boot)?;
        let error = Error::failed(
            id.to_string(),
            describe,
            format!("see `iapeer why {id}` and the last screen lines in `iapeer log --peer {id}`"),
        );
        return Err(WakeFailure {
            died: true,
            ..failure(Mode::Fail, boot_cause, peer, error)
        });
    }

    // Ready: record it, then the topic, the trimmed ring, the ready line.
    let latency_ms = decided.elapsed().as_millis() as u64;
    rec.ready_at = Some(clock::format_ms(ctx.now()));
    if rec.resume_ref.is_none() {
        // Learned now (Codex picks its own id): only a conversation begun
        // since the launch can be this launch's.
        let started = rec.started_ms().unwrap_or(EpochMs::MAX);
        rec.resume_ref = conversation::live(ctx, runtime, peer, &rec)
            .filter(|c| c.began.is_some_and(|b| b >= started))
            .map(|c| c.id);
    }
    ctx.state.write_session(id, &rec)?;
    match ask
        .topic
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        Some(topic) => ctx.state.set_topic(id, topic)?,
        None if mode == Mode::Fresh => {
            ctx.state.remove(id, Marker::Topic)?;
        }
        None => {}
    }
    let mut deaths = ctx.state.deaths(id)?;
    let before = deaths.ring.clone();
    deaths.ring.trim(ctx.now(), guard_policy(ctx).window_ms);
    // Written at the first ready even when empty: from then on the peer
    // has had a session (a later wake is not its first).
    if deaths.ring != before || deaths.problem.is_some() || !ctx.state.exists(id, Marker::Deaths)? {
        ctx.state.write_deaths(id, &deaths.ring)?;
    }
    let mut ready = ctx
        .record(Ev::Ready)
        .identity(id)
        .runtime(peer.runtime)
        .mode(mode)
        .cause(cause)
        .session(&session);
    ready.latency_ms = Some(latency_ms);
    ctx.log(&ready)?;

    // Tasks already queued go first: this one waits behind them.
    let behind = match &ask.task {
        Some(task) if crate::store::queue::Queues::new(&ctx.config.paths.state).has_tasks(id) => {
            queue::enqueue(ctx, id, peer, Some(&rec), task, ask.topic.as_deref())?;
            true
        }
        _ => false,
    };
    let first_words = match (&ask.task, mode) {
        (Some(_), _) if behind => None,
        (Some(task), _) => Some(task.as_str()),
        (None, Mode::Fresh) => peer
            .initial_prompt
            .as_deref()
            .filter(|p| !p.trim().is_empty()),
        (None, _) => None,
    };
    if let Some(text) = first_words {
        // The decision line named the task; a line follows only when the
        // runtime's record does not show it taken.
        let outcome = deliver::deliver(ctx, id, peer, runtime, &mut rec, text)?;
        if outcome != Outcome::Delivered {
            ctx.log(&deliver::delivered_line(
                ctx,
                id,
                peer,
                &rec,
                ask.topic.as_deref(),
                text,
                outcome,
            ))?;
        }
    }
    Ok(Woke::Launched {
        mode,
        cause,
        runtime: peer.runtime.as_str().to_owned(),
        latency_ms,
        session,
    })
}

fn decision_line(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    ask: &Ask,
    mode: Mode,
    cause: Cause,
    session: &str,
) -> record::Record {
    let line = wake_line(ctx, id, peer, ask, mode, cause)
        .session(session)
        .task(ask.task.as_deref());
    match &ask.why {
        Some(why) => line.reason(why),
        None => line,
    }
}

/// Starts the session in tmux and writes its `.session` (still starting;
/// for a gate that reads no screen, left to the write that says ready).
#[allow(clippy::too_many_arguments)]
fn start(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    runtime: &dyn Runtime,
    plan: &runtime::LaunchPlan,
    mode: Mode,
    cause: Cause,
    session: &str,
    ask: &Ask,
) -> std::result::Result<SessionRecord, WakeFailure> {
    let socket = ctx.config.paths.socket(id.as_str());
    // A stale socket of a dead server would make tmux refuse to start.
    if socket.exists() && matches!(ctx.host.probe(&socket, id.as_str()), Probe::Gone) {
        let _ = std::fs::remove_file(&socket);
    }
    let env: Vec<(String, OsString)> = vec![
        ("IAPEER_IDENTITY".into(), id.as_str().into()),
        (
            "IAPEER_HOME".into(),
            ctx.config.home.clone().into_os_string(),
        ),
    ];
    let started = ctx.now();
    // Recorded before tmux is asked (pane pid 0: launching): if this
    // process dies mid-launch, whoever next holds the lock knows a launch
    // may be half done, and finishes or clears it — so a second launch
    // never races a half-started server for the same socket.
    let mut rec = SessionRecord {
        identity: id.to_string(),
        runtime: peer.runtime.as_str().to_owned(),
        cwd: peer.cwd.clone(),
        socket: socket.clone(),
        pane_pid: 0,
        started_at: clock::format_ms(started),
        mode: mode.as_str().to_owned(),
        resume_ref: plan.resume_ref.clone(),
        topic: ask.topic.clone(),
        task: None,
        session: session.to_owned(),
        cause: cause.as_str().to_owned(),
        pane_start: None,
        ready_at: None,
        task_at: None,
        ending: None,
        limited_until: None,
        boot_id: crate::os::process::boot_id(),
        home: Some(ctx.state.identity().to_owned()),
    };
    ctx.state.write_session(id, &rec)?;
    let launched = ctx
        .host
        .launch(&LaunchSpec {
            socket: &socket,
            name: id.as_str(),
            cwd: &peer.cwd,
            argv: &plan.argv,
            env: &env,
        })
        .map_err(|error| {
            let line = ctx
                .record(Ev::Wake)
                .identity(id)
                .runtime(peer.runtime)
                .mode(Mode::Fail)
                .cause(Cause::LaunchFailed)
                .session(session)
                .error(&error);
            if let Err(e) = ctx.log(&line) {
                tracing::error!("could not log the failed launch of {id}: {e}");
            }
            // Nothing came up; a tmux that timed out may have left a
            // half-started server.
            ctx.host.end_strays(&rec.socket, None);
            let _ = ctx.host.kill(&rec.socket, id.as_str(), None);
            let _ = ctx.state.remove(id, Marker::Session);
            failure(Mode::Fail, Cause::LaunchFailed, peer, error)
        })?;
    rec.pane_pid = launched.pane_pid;
    rec.pane_start = crate::os::process::start_time(launched.pane_pid);
    // A peer whose gate reads no screen is ready, or dead, at the first
    // look: its next write says which, so this one is spared. Killed in
    // between, it is found launching, and what came up is adopted.
    if !runtime.ready_unseen(peer) {
        ctx.state.write_session(id, &rec)?;
    }
    Ok(rec)
}
