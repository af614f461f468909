//! `iapeer stop`, `start`, `reset`, `restart`, `refresh`: operator
//! controls.

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
/// `stop --at-turn-end`: waits for the live session's turn to end (by its
/// runtime's record; at most `IAPEER_MAX_AGE_GRACE_SECS`), then stops.
pub(crate) fn stop_at_turn_end(app: &App, name: &str) -> Result<i32> {
    let id = Identity::parse(name)?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let peer = ctx.peer(&id)?;
    let runtime = crate::runtime::for_peer(&ctx.config, &peer);
    let deadline = std::time::Instant::now() + ctx.config.max_age_grace;
    let mut said = false;
    loop {
        let in_turn = ctx.state.session(&id)?.is_some_and(|rec| {
            rec.is_ready()
                && crate::engine::queue::in_turn(&ctx, &peer, runtime.as_ref(), &rec) == Some(true)
        });
        if !in_turn {
            break;
        }
        if std::time::Instant::now() >= deadline {
            eprintln!(
                "{id}: its turn went on past the grace ({} s); stopping it mid-turn",
                ctx.config.max_age_grace.as_secs()
            );
            break;
        }
        if !said {
            eprintln!("{id}: waiting for its turn to end");
            said = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    stop(app, name)
}

pub(crate) fn stop(app: &App, name: &str) -> Result<i32> {
    let id = Identity::parse(name)?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let peer = ctx.peer(&id)?;
    ctx.state.check(&id)?;
    ctx.log(&ctx.record(Ev::Stop).identity(&id).reason("operator stop"))?;
    let stopped_at = ctx.now();
    ctx.state
        .set_flag(&id, Flag::Stopped, stopped_at, "operator stop")?;
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
        // The daemon may have seen `.stopped` first and parked it itself.
        Settled::None => match ctx.state.flag(&id, Flag::IdleReaped)? {
            Some(park)
                if park.at_ms.is_some_and(|at| at >= stopped_at)
                    && park
                        .reason
                        .as_deref()
                        .is_some_and(|r| r.starts_with(Action::ParkedStopped.as_str())) =>
            {
                println!(
                    "{id}: stopped; the daemon parked its session, which will resume after \
                     `iapeer start {id}`"
                )
            }
            Some(_) => println!("{id}: stopped (it was already parked)"),
            None => println!("{id}: stopped (it was not running)"),
        },
    }
    Ok(0)
}

/// Lifts a stop. An `always` peer is brought back at once.
pub(crate) fn start(app: &App, name: &str) -> Result<i32> {
    let id = Identity::parse(name)?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let peer = ctx.peer(&id)?;
    ctx.state.check(&id)?;
    let was_stopped = ctx.state.remove(&id, Marker::Stopped)?;
    // A start is also how an operator says "try again" to a peer iapeer
    // gave up on (DESIGN §5).
    let was_failed = ctx.state.remove(&id, Marker::Failed)?;
    if was_failed {
        println!("{id}: iapeer had given up on it; it will be relaunched again");
    }
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
    // Counted only where it is said: a peer that was not stopped is told so.
    let waiting = if was_stopped {
        crate::store::queue::Queues::new(&ctx.config.paths.state).waiting(&id)
    } else {
        0
    };
    println!("{id}: {}", started_saying(was_stopped, waiting));
    Ok(0)
}

/// What `start` says of a peer that sleeps until woken: tasks waiting in
/// its queue wake it without anyone's message (the daemon's next look).
fn started_saying(was_stopped: bool, waiting: usize) -> String {
    match (was_stopped, waiting) {
        (false, _) => "was not stopped".to_owned(),
        (true, 0) => "started; the next wake brings it up".to_owned(),
        (true, 1) => {
            "started; 1 task waits in its queue: a running daemon brings it up for it".to_owned()
        }
        (true, n) => {
            format!("started; {n} tasks wait in its queue: a running daemon brings it up for them")
        }
    }
}

/// Clears the crash-loop ring.
pub(crate) fn reset(app: &App, name: &str) -> Result<i32> {
    let id = Identity::parse(name)?;
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
    // Emptied, not removed: the file also says the peer has had a session.
    ctx.state
        .write_deaths(&id, &crate::core::crash_ring::CrashRing::default())?;
    let failed = ctx.state.remove(&id, Marker::Failed)?;
    println!(
        "{id}: crash-loop guard cleared ({cleared} recorded death{}){}",
        if cleared == 1 { "" } else { "s" },
        if failed {
            "; iapeer had given up on it and will relaunch it again"
        } else {
            ""
        }
    );
    Ok(0)
}

/// Ends the live session (if any) and brings the peer back fresh now: not
/// a death, not a park. Refused for a stopped or externally supervised
/// peer, exactly as a wake would be.
pub(crate) fn restart(app: &App, name: &str) -> Result<i32> {
    let id = Identity::parse(name)?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let peer = ctx.peer(&id)?;
    ctx.state.check(&id)?;
    if let Some(supervisor) = peer.external_supervisor.clone() {
        return Err(Error::Refused(Refusal::External {
            identity: id.to_string(),
            supervisor,
        }));
    }
    if ctx.state.flag(&id, Flag::Stopped)?.is_some() {
        return Err(Error::Refused(Refusal::Stopped {
            identity: id.to_string(),
        }));
    }
    let lock = ctx.lock(&id)?;
    ctx.state
        .set_flag(&id, Flag::NewEager, ctx.now(), "restart")?;
    let ended = match ending::settle(&ctx, &id, Some(&peer))? {
        Settled::Alive(rec) => {
            ending::end_for_relaunch(&ctx, &id, *rec)?;
            true
        }
        Settled::Unknown(why) => {
            // Nothing ended, so nothing is asked for.
            ctx.state.remove(&id, Marker::NewEager)?;
            return Err(Error::failed(
                id.to_string(),
                format!("cannot tell whether its session is alive ({why})"),
                "retry in a moment",
            ));
        }
        Settled::None => false,
    };
    match crate::engine::wake::wake_locked(&ctx, &id, &Ask::default(), &lock) {
        Ok(woke) => {
            let session = match &woke {
                crate::engine::wake::Woke::Launched { session, .. } => session.as_str(),
                crate::engine::wake::Woke::AlreadyAlive { session, .. } => session.as_str(),
            };
            println!(
                "{id}: {} fresh (session {session})",
                if ended {
                    "restarted"
                } else {
                    "was not running; started"
                }
            );
            Ok(0)
        }
        Err(f) => Err(f.error),
    }
}

/// Writes `.fresh-next`: the next natural wake starts the peer fresh
/// (`cause=soft-reload`); a live session is left alone.
pub(crate) fn refresh(app: &App, name: &str) -> Result<i32> {
    let id = Identity::parse(name)?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    ctx.peer(&id)?;
    ctx.state.check(&id)?;
    ctx.state
        .set_flag(&id, Flag::FreshNext, ctx.now(), "refresh")?;
    println!(
        "{id}: its next wake starts it fresh; a running session goes on until it ends \
         (`iapeer restart {id}` ends it now)"
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::started_saying;

    #[test]
    fn start_says_what_brings_the_peer_up() {
        for (was_stopped, waiting, said) in [
            (false, 0, "was not stopped"),
            (false, 3, "was not stopped"),
            (true, 0, "started; the next wake brings it up"),
            (
                true,
                1,
                "started; 1 task waits in its queue: a running daemon brings it up for it",
            ),
            (
                true,
                2,
                "started; 2 tasks wait in its queue: a running daemon brings it up for them",
            ),
        ] {
            assert_eq!(started_saying(was_stopped, waiting), said, "{waiting}");
        }
    }
}
