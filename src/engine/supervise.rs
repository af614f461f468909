//! One supervise pass over one identity (DESIGN §7), under its wake lock:
//! read the facts, let [`crate::core::pass::decide`] choose, carry the
//! action out (an ending, a boot check, a relaunch), and repeat while one
//! action leads to another (a death settled, then its relaunch).

use std::time::{Duration, Instant};

use crate::core::clock::EpochMs;
use crate::core::error::Result;
use crate::core::identity::Identity;
use crate::core::pass::{
    cheap_activity, cheap_seen, decide, idle_reason, LiveFacts, Measured, PassAction, PassFacts,
    Seen, TurnBy,
};
use crate::core::peer::{Peer, Policy, RuntimeKind};
use crate::core::session::{EndKind, Liveness, SessionRecord, Standing};
use crate::core::vocab::Action;
use crate::core::wake_plan::Ask;
use crate::engine::boot::{self, Interrupted};
use crate::engine::ctx::{Ctx, Since};
use crate::engine::limited::{self, Idle};
use crate::engine::{conversation, ending, wake};
use crate::os::process;
use crate::runtime::host::Probe;
use crate::runtime::{Conversation, Runtime};
use crate::store::markers::{Flag, LockFailure, Marker};
use crate::store::queue::Queues;

/// How often a session past its max age is looked at while its turn goes
/// on.
const TURN_END_LOOK_MS: i64 = 2_000;

/// How a pass learns when a live session was last active.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Activity {
    /// From the session record, and the latest a worker measured (if any):
    /// cheap enough for the daemon's loop.
    Known(Option<EpochMs>),
    /// Also from the runtime's own records or tmux, when the record alone
    /// says idle: for a worker, which may take its time.
    Measure,
}

/// What a pass reads before deciding.
#[derive(Debug)]
pub(crate) struct Gathered {
    pub facts: PassFacts,
    pub record: Option<SessionRecord>,
    /// The latest activity the idle time was computed from, if it was.
    pub activity: Option<EpochMs>,
    /// Where that activity was seen, when it was measured (not taken from
    /// the record alone, or from what the daemon knew).
    pub measured: Option<Measured>,
    /// The topic of the task waiting first in its queue, when it is
    /// asleep and that task may wake it (`facts.queued`).
    pub queued_topic: Option<String>,
}

/// Reads the facts for `decide`. `present`, from a directory scan, spares
/// reading files that do not exist.
pub(crate) fn gather_pass(
    ctx: &Ctx,
    id: &Identity,
    peer: Option<&Peer>,
    present: Option<crate::store::markers::Present>,
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
            failed: false,
            new_eager: false,
            queued: false,
            session: None,
        },
        record: None,
        activity: None,
        measured: None,
        queued_topic: None,
    };
    if external {
        return Ok(g);
    }
    let f = &mut g.facts;
    f.stopped = may_have(Marker::Stopped) && ctx.state.flag(id, Flag::Stopped)?.is_some();
    f.failed = may_have(Marker::Failed) && ctx.state.flag(id, Flag::Failed)?.is_some();
    f.new_eager = may_have(Marker::NewEager) && ctx.state.flag(id, Flag::NewEager)?.is_some();
    if may_have(Marker::Session) {
        g.record = ctx.state.session(id)?;
    }
    if let Some(rec) = &g.record {
        let (live, activity, measured) = live_facts(ctx, id, peer, rec, how, now);
        g.facts.session = Some(live);
        g.activity = activity;
        g.measured = measured;
    } else if peer.is_some() && !f.stopped && !f.failed {
        // Asleep: a task waiting wakes it. Only a file that reads as a
        // task counts; one that cannot be delivered would wake it for
        // nothing, again and again.
        if let Some(topic) = first_queued(ctx, id) {
            f.queued = true;
            g.queued_topic = topic;
        }
    }
    Ok(g)
}

/// The first task in `id`'s queue that reads as one, if it may wake the
/// peer: its topic, if any. One typed before and never confirmed waits for
/// a wake by someone else (it may have been taken after all).
fn first_queued(ctx: &Ctx, id: &Identity) -> Option<Option<String>> {
    let queues = Queues::new(&ctx.config.paths.state);
    let head = queues.first(id)?;
    (!queues.unconfirmed(id, &head.name)).then_some(head.topic)
}

/// What a pass's launch asks: an `always` peer or an eager request
/// relaunches as ever; a peer woken by its queue is woken as its first task
/// would wake it, with that task's topic (the task itself is delivered
/// from the queue, in its turn).
fn launch_ask(facts: &PassFacts, queued_topic: Option<String>) -> Ask {
    if facts.new_eager || facts.policy == Some(Policy::Always) || !facts.queued {
        return Ask::default();
    }
    Ask {
        topic: queued_topic,
        why: Some("a task waits in its queue".to_owned()),
        ..Ask::default()
    }
}

fn live_facts(
    ctx: &Ctx,
    id: &Identity,
    peer: Option<&Peer>,
    rec: &SessionRecord,
    how: Activity,
    now: EpochMs,
) -> (LiveFacts, Option<EpochMs>, Option<Measured>) {
    let cfg = &ctx.config;
    let secs = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
    let idle_limit_ms = cfg.idle_limit_ms(peer);
    let max_age_ms = peer
        .and_then(|p| p.max_age_secs)
        .map_or(cfg.max_age.as_millis() as i64, secs);
    let started = rec.started_ms().unwrap_or(now);
    let standing = process::standing(rec);
    let alive = standing == Standing::Running(Liveness::Alive);
    let lazy = peer.is_none_or(|p| p.policy == Policy::Lazy);
    let session = rec.session.as_str();
    let idle_since = |at: EpochMs| ctx.since(id, session, Since::Activity, at);
    let mut measured = None;
    let activity = (alive && rec.is_ready() && lazy).then(|| {
        let cheap = cheap_activity(rec, started);
        let at = match how {
            Activity::Known(seen) => cheap.max(seen.unwrap_or(0)),
            Activity::Measure => {
                // Measured when the record alone says idle, by the very
                // reading the decision takes: one read earlier (before a
                // slow read of the files) could find it just short of
                // idle, and the decision then park a session mid-turn
                // without having looked.
                let idle = idle_since(cheap);
                if idle <= idle_limit_ms {
                    return (cheap, idle);
                }
                measured.insert(activity(ctx, peer, rec, started)).at
            }
        };
        (at, idle_since(at))
    });
    let live = LiveFacts {
        standing,
        ready: rec.is_ready(),
        age_ms: ctx.since(id, session, Since::Started, started),
        idle_ms: activity.map(|(_, idle)| idle),
        idle_limit_ms,
        max_age_ms,
        boot_deadline_ms: cfg.boot_deadline.as_millis() as i64,
    };
    (live, activity.map(|(at, _)| at), measured)
}

/// The latest activity from every source (DESIGN §11): the record, and the
/// runtime's own records of the conversation the session is on (Claude and
/// Codex) or tmux's activity time for a shell.
pub(crate) fn activity(
    ctx: &Ctx,
    peer: Option<&Peer>,
    rec: &SessionRecord,
    started: EpochMs,
) -> Measured {
    let Some(peer) = peer else {
        return cheap_seen(rec, started);
    };
    let runtime = crate::runtime::for_peer(&ctx.config, peer);
    let on = conversation::live(ctx, runtime.as_ref(), peer, rec);
    activity_on(ctx, runtime.as_ref(), peer, rec, started, on.as_ref())
}

/// [`activity`], given the conversation the session is on.
pub(crate) fn activity_on(
    ctx: &Ctx,
    runtime: &dyn Runtime,
    peer: &Peer,
    rec: &SessionRecord,
    started: EpochMs,
    on: Option<&Conversation>,
) -> Measured {
    // A turn in progress is activity now, whatever the records last say:
    // nothing is written to a transcript while a tool runs.
    let said = crate::runtime::turn_said(runtime, rec.pane_pid, || on.cloned());
    if let Some((true, _)) = said {
        return Measured {
            at: ctx.now(),
            seen: Seen::Turn,
            turn: None,
        };
    }
    let (own, seen) = match peer.runtime {
        RuntimeKind::Shell => match ctx.host.probe(&rec.socket, &rec.identity) {
            Probe::Alive { activity_ms, .. } => (activity_ms, Seen::Screen),
            _ => (None, Seen::Screen),
        },
        _ => (on.and_then(|c| runtime.activity(c)), Seen::Conversation),
    };
    let mut latest = cheap_seen(rec, started);
    if let Some(at) = own.filter(|at| *at > latest.at) {
        latest.at = at;
        latest.seen = seen;
    }
    latest.turn =
        (peer.runtime != RuntimeKind::Shell).then(|| said.map_or(TurnBy::Unread, |(_, by)| by));
    latest
}

/// What a locked pass did.
#[derive(Debug)]
pub struct PassOutcome {
    /// Every action taken, in order.
    pub actions: Vec<PassAction>,
    /// A wake, if one ran.
    pub woke: Option<std::result::Result<wake::Woke, wake::WakeFailure>>,
    /// Someone else held the lock: nothing was done.
    pub busy: bool,
    /// The session's latest activity, as measured (for the daemon's loop,
    /// which does not measure it itself).
    pub activity: Option<EpochMs>,
    /// A death was recorded: when, and how long the session had been up.
    /// Its relaunch, if one is wanted, is left to the caller's back-off.
    pub died: Option<Died>,
    /// Not parked for idleness: its runtime's usage limit holds it until
    /// then.
    pub held_until: Option<EpochMs>,
    /// A pool member died working on this task: it goes once more to
    /// another member.
    pub redispatch: Option<Box<ending::InFlight>>,
}

/// A death a pass recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Died {
    pub at_ms: EpochMs,
    pub uptime_ms: i64,
    /// An automatic relaunch is wanted (`always`, `.new-eager`).
    pub relaunch: bool,
}

/// How long a pass waits for a lock another process holds.
const LOCK_WAIT: Duration = Duration::from_millis(250);

/// One pass over one identity, under its wake lock (skipped, `busy`, if
/// another process holds it past [`LOCK_WAIT`]: that process is acting on
/// it). An end is settled first; a launch follows in the same pass only
/// when `launch_allowed` (the daemon allows one to a worker it gave a
/// launch slot; otherwise the next pass asks for one), and never right
/// after a death, whose relaunch waits for its back-off.
pub(crate) fn run_pass(
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
        died: None,
        held_until: None,
        redispatch: None,
    };
    // A lock held elsewhere (a CLI waking it) is waited for a little, so
    // the look comes soon after the other lets go; past that, the caller
    // looks again later.
    let lock = match ctx.state.lock(id, LOCK_WAIT) {
        Ok(lock) => lock,
        Err(LockFailure::Held { .. }) => {
            outcome.busy = true;
            return Ok(outcome);
        }
        Err(LockFailure::Error(e)) => return Err(e),
    };
    // A settled death may call for a relaunch; a relaunch may be refused.
    // Three rounds cover every chain (end → launch).
    for _ in 0..3 {
        let Gathered {
            facts,
            record: rec,
            activity,
            measured,
            queued_topic,
        } = gather_pass(ctx, id, peer, None, Activity::Measure)?;
        outcome.activity = outcome.activity.or(activity);
        // A park for idleness says how long, since what, and what said no
        // turn was running.
        let idle_seconds = facts
            .session
            .as_ref()
            .and_then(|s| s.idle_ms)
            .map(|ms| (ms / 1000) as u64);
        let idle_why = measured.as_ref().map(idle_reason);
        let action = decide(&facts);
        match (&action, rec) {
            (PassAction::Nothing | PassAction::SkipExternal, _) => break,
            (PassAction::Launch, _) if !launch_allowed => break,
            (PassAction::Launch, _) => {
                outcome.actions.push(action);
                outcome.woke = Some(wake::wake_locked(
                    ctx,
                    id,
                    &launch_ask(&facts, queued_topic),
                    &lock,
                ));
                break;
            }
            (PassAction::FinishEnding, Some(rec)) => ending::finish_ending(ctx, id, rec, true)?,
            (PassAction::FinishLaunch, Some(rec)) => {
                ending::finish_launch(ctx, id, rec)?;
            }
            (PassAction::RecordDeath, Some(rec)) => {
                let now = ctx.now();
                let uptime_ms = now.saturating_sub(rec.started_ms().unwrap_or(now));
                let (kind, again) = ending::record_death_returning(ctx, id, peer, rec)?;
                outcome.redispatch = again.map(Box::new);
                if kind == EndKind::Death {
                    // A relaunch after a death waits for the back-off.
                    let again = gather_pass(ctx, id, peer, None, Activity::Known(None))?;
                    outcome.died = Some(Died {
                        at_ms: now,
                        uptime_ms,
                        relaunch: decide(&again.facts) == PassAction::Launch,
                    });
                    outcome.actions.push(action);
                    break;
                }
            }
            (PassAction::HostRestart, Some(rec)) => ending::record_host_restart(ctx, id, rec)?,
            (PassAction::Park(Action::ReapedIdle), Some(mut rec))
                if peer.is_some_and(|p| p.runtime != RuntimeKind::Shell) =>
            {
                let peer = peer.expect("checked in the guard");
                match limited::before_idle_park(ctx, id, peer, &mut rec)? {
                    Idle::Held(until) => {
                        outcome.held_until = Some(until);
                        break;
                    }
                    Idle::Resumed => break,
                    Idle::Park => {
                        ending::park_saying(
                            ctx,
                            id,
                            rec,
                            Action::ReapedIdle,
                            idle_seconds,
                            idle_why,
                        )?;
                    }
                }
            }
            (PassAction::Park(Action::ReapedMaxAge), Some(rec)) => {
                let age_ms = facts.session.as_ref().map_or(0, |s| s.age_ms);
                let over_ms = facts
                    .session
                    .as_ref()
                    .map_or(0, |s| s.age_ms.saturating_sub(s.max_age_ms));
                let grace_ms = ctx.config.max_age_grace.as_millis() as i64;
                let in_turn = peer.is_some_and(|p| {
                    let runtime = crate::runtime::for_peer(&ctx.config, p);
                    crate::engine::queue::in_turn(ctx, p, runtime.as_ref(), &rec) == Some(true)
                });
                if in_turn && over_ms < grace_ms {
                    // Parked when the turn ends (DESIGN §13), looked at
                    // again until then.
                    let wait = (grace_ms - over_ms).min(TURN_END_LOOK_MS);
                    outcome.held_until = Some(ctx.now() + wait);
                    break;
                }
                let reason = if in_turn {
                    format!(
                        "{} old; its turn went on past the {} grace, so it is parked mid-turn",
                        crate::core::activity::span(age_ms),
                        crate::core::activity::span(grace_ms)
                    )
                } else {
                    format!("{} old, its turn over", crate::core::activity::span(age_ms))
                };
                ending::park_saying(ctx, id, rec, Action::ReapedMaxAge, None, Some(reason))?;
            }
            (PassAction::Park(Action::ReapedIdle), Some(rec)) => {
                ending::park_saying(ctx, id, rec, Action::ReapedIdle, idle_seconds, idle_why)?;
            }
            (PassAction::Park(a), Some(rec)) => ending::park(ctx, id, rec, *a, None)?,
            (PassAction::CheckBoot | PassAction::BootTimeout, Some(rec)) => match peer {
                Some(peer) => {
                    let found = boot::finish_interrupted(ctx, id, peer, rec, Instant::now())?;
                    outcome.actions.push(action);
                    if matches!(found, Interrupted::Starting) {
                        break;
                    }
                    continue;
                }
                None if action == PassAction::BootTimeout => {
                    boot::time_out(ctx, id, rec)?;
                }
                None => break,
            },
            (_, None) => break,
        }
        outcome.actions.push(action);
    }
    Ok(outcome)
}
