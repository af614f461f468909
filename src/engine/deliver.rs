//! Delivering work to a running session (DESIGN §6, §13): the task is
//! typed in literally, and counts as delivered only once the runtime's own
//! record shows it taken as a user turn; otherwise Enter is pressed once
//! more, and then it is `delivery-unconfirmed`. The session learns its
//! conversation here too, where the runtime writes it only at the first
//! turn (Codex).

use std::time::{Duration, Instant};

use crate::core::clock::{self, EpochMs};
use crate::core::error::Result;
use crate::core::identity::Identity;
use crate::core::peer::Peer;
use crate::core::record::Record;
use crate::core::session::SessionRecord;
use crate::core::vocab::{Ev, Outcome};
use crate::engine::conversation;
use crate::engine::ctx::Ctx;
use crate::runtime::Runtime;

/// How long the runtime's record is given to show a delivered task.
const CONFIRM_WAIT: Duration = Duration::from_secs(10);

/// Types `task` into the session, confirms it from the runtime's record,
/// and records it in `.session`. Returns `Delivered` or
/// `DeliveryUnconfirmed`.
pub(crate) fn deliver(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    runtime: &dyn Runtime,
    rec: &mut SessionRecord,
    task: &str,
) -> Result<Outcome> {
    let since = ctx.now();
    ctx.host
        .deliver(&rec.socket, id.as_str(), task, runtime.submit_delay())?;
    let mut outcome = confirm(ctx, peer, runtime, rec, task, since);
    if outcome == Outcome::DeliveryUnconfirmed {
        // Once more: the text may sit typed but unsent.
        tracing::info!("{id}: the task did not show as taken; pressing Enter once more");
        ctx.host.send_keys(&rec.socket, id.as_str(), &["Enter"])?;
        outcome = confirm(ctx, peer, runtime, rec, task, since);
    }
    rec.task = Some(task.to_owned());
    rec.task_at = Some(clock::format_ms(since));
    if rec.resume_ref.is_none() {
        rec.resume_ref = learned(ctx, peer, runtime, rec);
    }
    ctx.state.write_session(id, rec)?;
    Ok(outcome)
}

/// Waits for the runtime's record to show `task` taken since `since`.
fn confirm(
    ctx: &Ctx,
    peer: &Peer,
    runtime: &dyn Runtime,
    rec: &SessionRecord,
    task: &str,
    since: EpochMs,
) -> Outcome {
    if task.trim_start().starts_with('/') {
        // A command to the CLI itself (`/clear`), not a turn: typed is
        // all there is to see.
        return Outcome::Delivered;
    }
    let deadline = Instant::now() + CONFIRM_WAIT;
    loop {
        let on = conversation::live(ctx, runtime, peer, rec);
        let taken = match on {
            Some(c) => runtime.took(&c, task, since),
            // A runtime that keeps conversations has not written one yet.
            None if runtime.kind() != crate::core::peer::RuntimeKind::Shell => Some(false),
            // A shell keeps no record: typed is delivered.
            None => None,
        };
        match taken {
            None | Some(true) => return Outcome::Delivered,
            Some(false) if Instant::now() >= deadline => return Outcome::DeliveryUnconfirmed,
            Some(false) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The conversation a session is on, once it has begun one since it
/// started (Codex picks its id and writes its rollout at the first turn).
fn learned(ctx: &Ctx, peer: &Peer, runtime: &dyn Runtime, rec: &SessionRecord) -> Option<String> {
    let started = rec.started_ms().unwrap_or(EpochMs::MAX);
    conversation::live(ctx, runtime, peer, rec)
        .filter(|c| c.began.is_some_and(|b| b >= started))
        .map(|c| c.id)
}

/// The line that records a task typed into a running session: a `wake`
/// that launched nothing.
pub(crate) fn delivered_line(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    rec: &SessionRecord,
    topic: Option<&str>,
    task: &str,
    outcome: Outcome,
) -> Record {
    ctx.record(Ev::Wake)
        .identity(id)
        .runtime(peer.runtime)
        .outcome(outcome)
        .session(&rec.session)
        .topic(topic)
        .task(Some(task))
}
