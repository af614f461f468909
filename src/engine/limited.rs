//! A usage limit (DESIGN §5, §12): a session whose last turn ended on its
//! runtime's usage limit is neither idle nor dead. Instead of being parked
//! for idleness it is held until the limit lifts, then given its last task
//! again (it had work), and parked only once it goes quiet with no limit
//! on its screen.

use crate::core::clock::{self, EpochMs};
use crate::core::error::Result;
use crate::core::identity::Identity;
use crate::core::peer::Peer;
use crate::core::session::SessionRecord;
use crate::core::vocab::{Action, Ev};
use crate::engine::ctx::Ctx;
use crate::engine::deliver;

/// Lines of the screen read for a limit.
const SCREEN_LINES: usize = 80;

/// What a session about to be parked for idleness turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idle {
    /// Really idle: park it.
    Park,
    /// Held by a usage limit until then: look again at that time.
    Held(EpochMs),
    /// The limit lifted and its task was given again: it is working.
    Resumed,
}

/// Reads the screen of a session the pass would park for idleness.
pub(crate) fn before_idle_park(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    rec: &mut SessionRecord,
) -> Result<Idle> {
    let runtime = crate::runtime::for_peer(&ctx.config, peer);
    let Ok(screen) = ctx.host.capture(&rec.socket, id.as_str(), SCREEN_LINES) else {
        return Ok(Idle::Park);
    };
    let now = ctx.now();
    let offset = crate::os::clock::local_offset_secs(now);
    let Some(limit) = runtime.limit(&screen, now, offset) else {
        if rec.limited_until.take().is_some() {
            ctx.state.write_session(id, rec)?;
        }
        return Ok(Idle::Park);
    };
    // A limit that names no time is looked at again after an idle period.
    let idle = ctx.config.idle_limit_ms(Some(peer));
    let until = limit.until_ms.unwrap_or(now + idle.max(60_000));
    let known = rec.limited_until.as_deref().and_then(clock::parse_rfc3339);
    if known.is_none() {
        // Newly limited: said once.
        rec.limited_until = Some(clock::format_ms(until));
        ctx.state.write_session(id, rec)?;
        let mut line = ctx
            .record(Ev::Supervise)
            .identity(id)
            .action(Action::Limited)
            .session(&rec.session)
            .reason(format!(
                "its runtime says: {}; held, not parked, until the limit lifts{}",
                limit.said,
                if rec.task.is_some() {
                    ", then given its last task again"
                } else {
                    ""
                }
            ));
        line.retry_after = Some(clock::format_ms(until));
        ctx.log(&line)?;
    }
    let until = known.unwrap_or(until);
    if now < until {
        return Ok(Idle::Held(until));
    }
    // The limit has lifted: it had work, so it gets it again.
    rec.limited_until = None;
    let Some(task) = rec.task.clone() else {
        ctx.state.write_session(id, rec)?;
        return Ok(Idle::Park);
    };
    let outcome = deliver::deliver(ctx, id, peer, runtime.as_ref(), rec, &task)?;
    ctx.log(
        &deliver::delivered_line(ctx, id, peer, rec, rec.topic.as_deref(), &task, outcome)
            .reason("its usage limit lifted; its last task, again"),
    )?;
    Ok(Idle::Resumed)
}
