//! Delivering work to a running session: a task typed in literally
//! (DESIGN §6), recorded in `.session`, and logged.

use crate::core::clock;
use crate::core::error::Result;
use crate::core::identity::Identity;
use crate::core::peer::Peer;
use crate::core::record::Record;
use crate::core::session::SessionRecord;
use crate::core::vocab::{Ev, Outcome};
use crate::engine::ctx::Ctx;
use crate::runtime::Runtime;

/// Types `task` into the session and records it in `.session`.
pub(crate) fn deliver(
    ctx: &Ctx,
    id: &Identity,
    runtime: &dyn Runtime,
    rec: &mut SessionRecord,
    task: &str,
) -> Result<()> {
    ctx.host
        .deliver(&rec.socket, id.as_str(), task, runtime.submit_delay())?;
    rec.task = Some(task.to_owned());
    rec.task_at = Some(clock::format_ms(ctx.now()));
    ctx.state.write_session(id, rec)
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
) -> Record {
    ctx.record(Ev::Wake)
        .identity(id)
        .runtime(peer.runtime)
        .outcome(Outcome::Delivered)
        .session(&rec.session)
        .topic(topic)
        .task(Some(task))
}
