//! `iapeer dispatch`: hand a task to a free member of a pool, growing the
//! pool by one when none is free, up to its `max`.
//!
//! A member is free when its session is up and ready, its runtime does not
//! say it is mid-turn, and nothing has happened in it for the pool's quiet
//! time since its last task. The check and the delivery happen under the
//! member's wake lock, so two dispatches never pick the same member.

use crate::core::clock;
use crate::core::error::{Error, Refusal, Result};
use crate::core::identity::Identity;
use crate::core::pool::Pool;
use crate::core::session::Liveness;
use crate::core::session::SessionRecord;
use crate::core::wake_plan::Ask;
use crate::engine::ctx::Ctx;
use crate::engine::wake::{WakeFailure, Woke};
use crate::engine::{deliver, wake};
use crate::store::markers::{Flag, Marker};

/// Where a task went.
#[derive(Debug)]
pub(crate) struct Dispatched {
    pub member: Identity,
    /// `None`: delivered to a running member; `Some`: a member was woken
    /// for it.
    pub woke: Option<Woke>,
    /// Every member was busy and the pool at its max: queued for this
    /// member, with this many before it.
    pub queued: Option<usize>,
}

/// A turn with no sign of life for this long is taken as over, whatever
/// the transcript's last entry says (an interrupted turn never ends).
pub(crate) const STALE_TURN_MS: i64 = 5 * 60 * 1000;

/// Is a member's session free for a new task right now?
pub(crate) fn is_free(
    rec: &SessionRecord,
    last_activity: clock::EpochMs,
    mid_turn: Option<bool>,
    quiet_ms: i64,
    now: clock::EpochMs,
) -> bool {
    let task_at = rec
        .task_at
        .as_deref()
        .and_then(clock::parse_rfc3339)
        .unwrap_or(0);
    let since = now.saturating_sub(task_at.max(last_activity));
    let working = mid_turn == Some(true) && since < STALE_TURN_MS;
    rec.is_ready() && rec.ending.is_none() && !working && since >= quiet_ms
}

/// `queue`: when no member is free and none can be woken, queue the task
/// (DESIGN §13) rather than refuse it.
pub(crate) fn dispatch(
    ctx: &Ctx,
    pool: &Pool,
    task: &str,
    topic: Option<&str>,
    queue: bool,
) -> std::result::Result<Dispatched, WakeFailure> {
    dispatch_except(ctx, pool, task, topic, None, queue)
}

/// [`dispatch`] to any member but `except`.
fn dispatch_except(
    ctx: &Ctx,
    pool: &Pool,
    task: &str,
    topic: Option<&str>,
    except: Option<&Identity>,
    queue: bool,
) -> std::result::Result<Dispatched, WakeFailure> {
    crate::core::wake_plan::check_task(task)?;
    if let Some(t) = topic {
        crate::core::marker::check_topic(t)?;
    }
    let members: Vec<Identity> = pool
        .members()
        .into_iter()
        .filter(|m| Some(m) != except)
        .collect();
    let scan = ctx.state.scan()?;
    let running = |m: &Identity| scan.get(m).is_some_and(|p| p.has(Marker::Session));

    for member in members.iter().filter(|m| running(m)) {
        if let Some(done) = try_deliver(ctx, pool, member, task, topic)? {
            return Ok(done);
        }
    }
    // None free: grow by one, lowest index first. The member's lock is
    // taken without waiting: one held is being grown by another dispatch,
    // and waiting for it would put two tasks in one member.
    for member in members.iter().filter(|m| !running(m)) {
        if ctx.state.flag(member, Flag::Stopped)?.is_some() {
            continue;
        }
        let Some(lock) = ctx.state.try_lock(member)? else {
            continue;
        };
        ctx.state.check(member)?;
        if ctx.state.session(member)?.is_some() {
            // Came up since the scan (a dispatch that finished growing it).
            continue;
        }
        let ask = Ask {
            request: None,
            topic: topic.map(str::to_owned),
            task: Some(task.to_owned()),
            ..Ask::default()
        };
        match wake::wake_locked(ctx, member, &ask, &lock) {
            Ok(w) => {
                return Ok(Dispatched {
                    member: member.clone(),
                    woke: Some(w),
                    queued: None,
                })
            }
            // This one cannot come up now; another may.
            Err(f) if matches!(f.error, Error::Refused(_)) => continue,
            Err(f) => return Err(f),
        }
    }
    if queue {
        if let Some(d) = queue_for_least_busy(ctx, &members, task, topic)? {
            return Ok(d);
        }
    }
    Err(Error::Refused(Refusal::PoolFull {
        pool: pool.name.clone(),
        max: pool.max,
    })
    .into())
}

/// Queues the task for the running member with the fewest tasks waiting
/// (the lowest index among equals); none if no member is running.
fn queue_for_least_busy(
    ctx: &Ctx,
    members: &[Identity],
    task: &str,
    topic: Option<&str>,
) -> Result<Option<Dispatched>> {
    let queues = crate::store::queue::Queues::new(&ctx.config.paths.state);
    let least = members
        .iter()
        .filter(|m| ctx.state.session(m).ok().flatten().is_some())
        .min_by_key(|m| queues.list(m).len());
    let Some(member) = least else {
        return Ok(None);
    };
    let peer = ctx.peer(member)?;
    let rec = ctx.state.session(member)?;
    let ahead = crate::engine::queue::enqueue(ctx, member, &peer, rec.as_ref(), task, topic)?;
    Ok(Some(Dispatched {
        member: member.clone(),
        woke: None,
        queued: Some(ahead),
    }))
}

/// Delivers to `member` if it is free; `Ok(None)` when it is not.
fn try_deliver(
    ctx: &Ctx,
    pool: &Pool,
    member: &Identity,
    task: &str,
    topic: Option<&str>,
) -> Result<Option<Dispatched>> {
    let Ok(peer) = ctx.peer(member) else {
        return Ok(None);
    };
    let Some(_lock) = ctx.state.try_lock(member)? else {
        return Ok(None);
    };
    let Some(mut rec) = ctx.state.session(member)? else {
        return Ok(None);
    };
    if rec.is_launching()
        || crate::os::process::liveness(rec.pane_pid, rec.pane_start) != Liveness::Alive
    {
        return Ok(None);
    }
    let now = ctx.now();
    let started = rec.started_ms().unwrap_or(now);
    let runtime = crate::runtime::for_peer(&ctx.config, &peer);
    let on = crate::engine::conversation::live(ctx, runtime.as_ref(), &peer, &rec);
    let measured = crate::engine::supervise::activity_on(
        ctx,
        runtime.as_ref(),
        &peer,
        &rec,
        started,
        on.as_ref(),
    );
    if !is_free(&rec, measured.at, measured.in_turn(), pool.quiet_ms(), now) {
        return Ok(None);
    }
    if let Some(t) = topic.filter(|t| !t.trim().is_empty()) {
        ctx.state.set_topic(member, t)?;
    }
    let outcome = deliver::deliver(ctx, member, &peer, runtime.as_ref(), &mut rec, task)?;
    ctx.log(
        &deliver::delivered_line(ctx, member, &peer, &rec, topic, task, outcome)
            .reason(format!("dispatched by pool {}", pool.name)),
    )?;
    Ok(Some(Dispatched {
        member: member.clone(),
        woke: None,
        queued: None,
    }))
}

/// A pool member died working on `task`: it goes once more to another
/// member (DESIGN §12), free or woken for it, else into the queue of the
/// other member with the fewest waiting. Says where, on a `task` line of the
/// member that died. Called once per death, where the death is recorded.
pub(crate) fn redispatch(
    ctx: &Ctx,
    from: &Identity,
    pool_name: &str,
    task: &str,
    topic: Option<&str>,
) {
    let line = |reason: String| {
        ctx.record(crate::core::vocab::Ev::Task)
            .identity(from)
            .task(Some(task))
            .reason(reason)
    };
    if let Some(before) = dispatched_again_before(ctx, task) {
        let _ = ctx.log(&line(format!(
            "not dispatched again: it was once already ({before})"
        )));
        return;
    }
    let pool = match crate::store::definitions::load_pool(&ctx.config.paths, pool_name) {
        Ok(p) => p,
        Err(e) => {
            let _ = ctx.log(&line(format!(
                "not dispatched again: its pool {pool_name}: {e}"
            )));
            return;
        }
    };
    let reason = match dispatch_except(ctx, &pool, task, topic, Some(from), true) {
        Ok(d) => format!(
            "{from} died working on it; dispatched again to {} ({})",
            d.member,
            match (&d.woke, d.queued) {
                (_, Some(ahead)) => format!("every member busy: in its queue, {ahead} before it"),
                (Some(Woke::Launched { .. }), _) => "woken for it".to_owned(),
                _ => "delivered".to_owned(),
            }
        ),
        Err(f) => format!("not dispatched again: {}", f.error),
    };
    if let Err(e) = ctx.log(&line(reason)) {
        tracing::error!("{from}: {e}");
    }
}

/// What the log says of `task` having been dispatched again already: a
/// task is dispatched again once, never twice (a task that kills every
/// member it reaches must not go round the pool).
fn dispatched_again_before(ctx: &Ctx, task: &str) -> Option<String> {
    crate::engine::queue::last_task_line(ctx, task, "died working on it", None)
        .and_then(|e| e.str("reason").map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ready: bool, task_at: Option<i64>) -> SessionRecord {
        SessionRecord {
            identity: "m0".into(),
            runtime: "shell".into(),
            cwd: "/tmp".into(),
            socket: "/tmp/m0.sock".into(),
            pane_pid: 1,
            started_at: clock::format_ms(0),
            mode: "fresh".into(),
            resume_ref: None,
            topic: None,
            task: task_at.map(|_| "t".into()),
            session: "s".into(),
            cause: "crash-or-self-close".into(),
            pane_start: None,
            ready_at: ready.then(|| clock::format_ms(0)),
            task_at: task_at.map(clock::format_ms),
            ending: None,
            limited_until: None,
            boot_id: None,
            home: None,
        }
    }

    #[test]
    fn free_means_ready_quiet_since_the_last_task_and_not_mid_turn() {
        let now = 100_000;
        let quiet = 10_000;
        assert!(is_free(&rec(true, None), 0, None, quiet, now));
        assert!(
            !is_free(&rec(false, None), 0, None, quiet, now),
            "still starting"
        );
        assert!(
            !is_free(&rec(true, Some(95_000)), 0, None, quiet, now),
            "a task 5 s ago"
        );
        assert!(
            is_free(&rec(true, Some(80_000)), 85_000, None, quiet, now),
            "quiet for 15 s"
        );
        assert!(
            !is_free(&rec(true, Some(80_000)), 95_000, None, quiet, now),
            "active 5 s ago"
        );
        assert!(
            !is_free(&rec(true, Some(95_000)), 95_000, Some(true), 0, now),
            "mid-turn by its transcript"
        );
        assert!(
            is_free(&rec(true, Some(0)), 0, Some(true), quiet, STALE_TURN_MS + 1),
            "a turn silent for long is over"
        );
        assert!(is_free(&rec(true, Some(0)), 0, Some(false), 0, now));
    }
}
