//! `iapeer stop`, `start`, `reset`: operator controls.

use crate::cli::NameArg;
use crate::cmd::App;
use crate::core::error::{Error, Refusal, Result};
use crate::core::identity::Identity;
use crate::core::peer::Policy;
use crate::core::vocab::{Action, Ev, Outcome};
use crate::core::wake_plan::Ask;
use crate::engine::ctx::Ctx;
use crate::engine::ending;
use crate::engine::ending::Settled;
use crate::store::markers::{Flag, Marker};

/// Writes `.stopped`, then parks a live session (it stays resume-eligible).
pub(crate) fn stop(app: &App, args: NameArg) -> Result<i32> {
    let id = Identity::parse(&args.name)?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let peer = ctx.peer(&id)?;
    ctx.state.check(&id)?;
    ctx.log(&ctx.record(Ev::Stop).identity(&id).reason("operator stop"))?;
    ctx.state
        .set_flag(&id, Flag::Stopped, ctx.now(), "operator stop")?;
    let _lock = ctx.lock(&id).inspect_err(|e| {
        if matches!(e, Error::Refused(Refusal::LockHeld { .. })) {
            eprintln!(
                "{id}: the stop is in force (.stopped is written; no wake starts it), but its \
                 session could not be parked yet; the daemon parks it once the lock is free, \
                 or run `iapeer stop {id}` again"
            );
        }
    })?;
    match ending::settle(&ctx, &id, Some(&peer))? {
        Settled::Alive(rec) => {
            ending::park(&ctx, &id, *rec, Action::ParkedStopped, None)?;
            println!(
                "{id}: stopped; its session was parked and will resume after `iapeer start {id}`"
            );
        }
        Settled::Unknown(why) => {
            println!("{id}: stopped; whether its session is alive is unknown ({why}); the daemon will park it");
        }
        Settled::None => println!("{id}: stopped (it was not running)"),
    }
    Ok(0)
}

/// Lifts a stop. An `always` peer is brought back at once.
pub(crate) fn start(app: &App, args: NameArg) -> Result<i32> {
    let id = Identity::parse(&args.name)?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let peer = ctx.peer(&id)?;
    ctx.state.check(&id)?;
    let was_stopped = ctx.state.remove(&id, Marker::Stopped)?;
    ctx.log(
        &ctx.record(Ev::Start).identity(&id).outcome(if was_stopped {
            Outcome::Started
        } else {
            Outcome::WasNotStopped
        }),
    )?;
    if peer.policy == Policy::Always && peer.external_supervisor.is_none() {
        return match crate::engine::wake::wake(&ctx, &id, &Ask::default()) {
            Ok(_) => {
                println!("{id}: started and up");
                Ok(0)
            }
            Err(f) => Err(f.error),
        };
    }
    println!(
        "{id}: {}",
        if was_stopped {
            "started; the next wake brings it up"
        } else {
            "was not stopped"
        }
    );
    Ok(0)
}

/// Clears the crash-loop ring.
pub(crate) fn reset(app: &App, args: NameArg) -> Result<i32> {
    let id = Identity::parse(&args.name)?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    ctx.peer(&id)?;
    ctx.state.check(&id)?;
    // Deaths are recorded read-modify-write under this lock; without it a
    // death recorded meanwhile could undo the reset, or be lost by it.
    let _lock = ctx.lock(&id)?;
    let cleared = ctx.state.deaths(&id)?.ring.entries().len();
    let mut line = ctx
        .record(Ev::Reset)
        .identity(&id)
        .outcome(Outcome::GuardCleared);
    line.deaths = Some(cleared as u64);
    ctx.log(&line)?;
    ctx.state.remove(&id, Marker::Deaths)?;
    println!(
        "{id}: crash-loop guard cleared ({cleared} recorded death{})",
        if cleared == 1 { "" } else { "s" }
    );
    Ok(0)
}
