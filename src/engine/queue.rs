//! Delivering queued work (DESIGN §13): a task for a peer in the middle of
//! a turn is queued, not typed into it, and the queue is delivered in
//! order, one task per turn, once the turn is over. A delivery counts when
//! the runtime's record shows the text taken; each one is journaled in
//! the queue (`store::queue`) so that a daemon killed mid-delivery neither
//! loses the task nor types it twice.

use std::time::SystemTime;

use crate::core::clock::{self, EpochMs};
use crate::core::error::Result;
use crate::core::identity::Identity;
use crate::core::peer::Peer;
use crate::core::session::{Liveness, SessionRecord, Standing};
use crate::core::vocab::{Ev, Outcome};
use crate::engine::ctx::Ctx;
use crate::engine::{conversation, deliver};
use crate::runtime::Runtime;
use crate::store::markers::LockFailure;
use crate::store::queue::{Queued, Queues};

/// Whether a task for this live session must wait: its turn is going on
/// (by the runtime's own record), or others wait before it.
pub(crate) fn must_wait(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    runtime: &dyn Runtime,
    rec: &SessionRecord,
) -> bool {
    if Queues::new(&ctx.config.paths.state).has_tasks(id) {
        return true;
    }
    in_turn(ctx, peer, runtime, rec) == Some(true)
}

/// In a turn, by the runtime's record; `None` where it keeps none.
pub(crate) fn in_turn(
    ctx: &Ctx,
    peer: &Peer,
    runtime: &dyn Runtime,
    rec: &SessionRecord,
) -> Option<bool> {
    crate::runtime::turn_said(runtime, rec.pane_pid, || {
        conversation::live(ctx, runtime, peer, rec)
    })
    .map(|t| t.0)
}

/// Queues `task` for `id` and logs it (`ev=task outcome=queued`); returns
/// how many tasks wait before it.
pub(crate) fn enqueue(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    rec: Option<&SessionRecord>,
    task: &str,
    topic: Option<&str>,
) -> Result<usize> {
    let queues = Queues::new(&ctx.config.paths.state);
    let ahead = queues.list(id).len();
    let name = queues.add(id, task, topic, ctx.now())?;
    let mut line = ctx
        .record(Ev::Task)
        .identity(id)
        .runtime(peer.runtime)
        .outcome(Outcome::Queued)
        .topic(topic)
        .task(Some(task))
        .reason(format!(
            "{}; {name} in the queue, {ahead} before it",
            if rec.is_some() {
                "its turn is not over"
            } else {
                "it is not running"
            }
        ));
    if let Some(rec) = rec {
        line = line.session(&rec.session);
    }
    ctx.log(&line)?;
    Ok(ahead)
}

/// What [`deliver_next`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Nothing to do: no live session, its turn not over, no task, or
    /// another process holds the lock.
    Nothing,
    /// A task was typed in, with this outcome.
    Delivered(Outcome),
    /// Only files that cannot be tasks wait: looked at again much later.
    OnlyBad,
}

/// Delivers the head of `id`'s queue to its live session if the turn is
/// over, under the peer's wake lock; first settles a delivery a killed
/// process left unfinished.
pub(crate) fn deliver_next(ctx: &Ctx, id: &Identity, peer: &Peer) -> Result<Next> {
    let Some(_lock) = ctx.state.try_lock(id)? else {
        return Ok(Next::Nothing);
    };
    let Some(mut rec) = ctx.state.session(id)? else {
        return Ok(Next::Nothing);
    };
    if !rec.is_ready() || crate::os::process::standing(&rec) != Standing::Running(Liveness::Alive) {
        return Ok(Next::Nothing);
    }
    let runtime = crate::runtime::for_peer(&ctx.config, peer);
    if in_turn(ctx, peer, runtime.as_ref(), &rec) == Some(true) {
        return Ok(Next::Nothing);
    }
    let queues = Queues::new(&ctx.config.paths.state);
    let mut head = None;
    let mut bad = false;
    for task in queues.list(id) {
        match task {
            Ok(t) if t.delivering => {
                if settle(ctx, id, peer, runtime.as_ref(), &rec, &queues, &t)? {
                    // Taken before: this turn is its.
                    return Ok(Next::Delivered(Outcome::Delivered));
                }
                head = Some(Queued {
                    delivering: false,
                    ..t
                });
                break;
            }
            Ok(t) => {
                head = Some(t);
                break;
            }
            // Not a task: skipped (and said); the ones behind it still go.
            Err(e) => {
                bad = true;
                tracing::warn!("{id}: {e}");
            }
        }
    }
    let Some(task) = head else {
        return Ok(if bad { Next::OnlyBad } else { Next::Nothing });
    };
    let to = conversation::live(ctx, runtime.as_ref(), peer, &rec).map(|c| c.id);
    queues.start(id, &task.name, to.as_deref())?;
    if let Some(topic) = task.topic.as_deref() {
        ctx.state.set_topic(id, topic)?;
    }
    let outcome = match deliver::deliver(ctx, id, peer, runtime.as_ref(), &mut rec, &task.text) {
        Ok(o) => o,
        Err(e) => {
            // Not typed in (tmux refused): it waits for the next turn.
            queues.put_back(id, &task.name)?;
            return Err(e);
        }
    };
    ctx.log(&line(ctx, id, peer, &rec, &task, outcome))?;
    match outcome {
        Outcome::Delivered => queues.done(id, &task.name)?,
        // Left in the queue; not typed again into this session.
        _ => queues.put_back_unconfirmed(id, &task.name, &rec.session)?,
    }
    Ok(Next::Delivered(outcome))
}

/// A `.delivering` task left by a process that stopped mid-delivery:
/// taken by the session (then it is delivered, and logged so) or put back
/// at the head of the queue. Returns whether it was taken.
fn settle(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    runtime: &dyn Runtime,
    rec: &SessionRecord,
    queues: &Queues,
    task: &Queued,
) -> Result<bool> {
    let started = delivering_since(queues, id, &task.name).unwrap_or(0);
    // The conversation it was typed into, if its session is gone since;
    // and the one the session is on now.
    let was = queues
        .target(id, &task.name)
        .and_then(|c| runtime.conversation(peer, &c));
    let now = conversation::live(ctx, runtime, peer, rec);
    let taken = [was, now]
        .into_iter()
        .flatten()
        .any(|c| runtime.took(&c, &task.text, started) == Some(true));
    if !taken {
        queues.put_back(id, &task.name)?;
        return Ok(false);
    }
    let line = line(ctx, id, peer, rec, task, Outcome::Delivered)
        .reason("taken before the delivery that typed it could say so");
    ctx.log(&line)?;
    queues.done(id, &task.name)?;
    Ok(true)
}

/// When a delivery began: its `.delivering` file's time (set by the
/// rename, within a second of the typing).
fn delivering_since(queues: &Queues, id: &Identity, name: &str) -> Option<EpochMs> {
    let path = queues.dir_of(id).join(format!("{name}.delivering"));
    let meta = std::fs::symlink_metadata(path).ok()?;
    let t = meta.modified().ok()?;
    let ms = t.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_millis();
    // The rename keeps the file's time: the time it was queued, at the
    // latest; any entry since then may be it.
    i64::try_from(ms).ok()
}

fn line(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    rec: &SessionRecord,
    task: &Queued,
    outcome: Outcome,
) -> crate::core::record::Record {
    ctx.record(Ev::Task)
        .identity(id)
        .runtime(peer.runtime)
        .outcome(outcome)
        .session(&rec.session)
        .topic(task.topic.as_deref())
        .task(Some(&task.text))
        .reason(format!(
            "from the queue ({}), queued {}",
            task.name,
            task.name
                .split('-')
                .next()
                .and_then(|ms| ms.parse::<i64>().ok())
                .map_or_else(|| "by a script".to_owned(), clock::format_ms)
        ))
}

/// How long a restart of a stuck session waits for the peer's lock.
const UNSTICK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// `on_stuck = "restart"` (DESIGN §12): a session that reads `stuck` is
/// ended and brought back fresh (the daemon relaunches it at once, for
/// `.new-eager`), and the task it was stuck on waits first in its queue
/// for the new session. Under the peer's lock, waited for (a pass or a
/// delivery may hold it a moment: a restart given up then would leave the
/// session stuck for good); false if it stays held past [`UNSTICK_WAIT`],
/// or `session` (the one read stuck) is gone.
pub(crate) fn restart_stuck(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    session: &str,
    why: &str,
) -> Result<bool> {
    let _lock = match ctx.state.lock(id, UNSTICK_WAIT) {
        Ok(lock) => lock,
        Err(LockFailure::Held { .. }) => return Ok(false),
        Err(LockFailure::Error(e)) => return Err(e),
    };
    let Some(rec) = ctx.state.session(id)?.filter(|r| r.session == session) else {
        return Ok(false);
    };
    if crate::os::process::standing(&rec) != Standing::Running(Liveness::Alive) {
        return Ok(false);
    }
    let again = rec
        .task
        .clone()
        .filter(|task| !stuck_on_before(ctx, id, task));
    if let Some(task) = again {
        // Dated when it was first delivered: ahead of what was queued since.
        let at = rec
            .task_at
            .as_deref()
            .and_then(clock::parse_rfc3339)
            .unwrap_or(0);
        let name = Queues::new(&ctx.config.paths.state).add(id, &task, rec.topic.as_deref(), at)?;
        ctx.log(
            &ctx.record(Ev::Task)
                .identity(id)
                .runtime(peer.runtime)
                .outcome(Outcome::Queued)
                .session(&rec.session)
                .topic(rec.topic.as_deref())
                .task(Some(&task))
                .reason(format!(
                    "it was stuck on it; queued again ({name}) for its fresh session, before anything queued since"
                )),
        )?;
    }
    ctx.state.set_flag(
        id,
        crate::store::markers::Flag::NewEager,
        ctx.now(),
        "stuck",
    )?;
    crate::engine::ending::end_for_relaunch_saying(
        ctx,
        id,
        rec,
        Some(format!(
            "stuck ({why}); its definition says on_stuck = restart"
        )),
    )?;
    Ok(true)
}

/// Whether `task` was queued again once already after a session got stuck
/// on it: a task that hangs every time it runs goes round once, not for
/// ever.
fn stuck_on_before(ctx: &Ctx, id: &Identity, task: &str) -> bool {
    last_task_line(ctx, task, "it was stuck on it", Some(id)).is_some()
}

/// The newest `task` line about `task` (as the log keeps a task: its last
/// KiB) whose text says `words`, and of `who` when given: how iapeer
/// remembers, across restarts, that it already handed a task on once.
pub(crate) fn last_task_line(
    ctx: &Ctx,
    task: &str,
    words: &str,
    who: Option<&Identity>,
) -> Option<crate::core::record::Entry> {
    let kept = ctx.record(Ev::Task).task(Some(task)).task;
    let mut found = None;
    let (task_line, with_words) = (
        crate::store::log::holding("\"ev\":\"task\""),
        crate::store::log::holding(words),
    );
    let _ = crate::store::log::for_each_backward(
        &ctx.config.paths.lifecycle_log,
        |raw| task_line(raw) && with_words(raw),
        |e| {
            let ours = who.is_none_or(|id| e.identity() == Some(id.as_str()))
                && e.str("task") == kept.as_deref();
            if ours {
                found = Some(e);
            }
            found.is_none()
        },
    );
    found
}
