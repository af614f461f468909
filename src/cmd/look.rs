//! `iapeer attach`, `peek` and `wait`: looking at an agent, and waiting
//! for it, without knowing where its tmux server lives.

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use crate::cli::{AttachArgs, PeekArgs, WaitArgs, WaitFor};
use crate::cmd::App;
use crate::core::error::{Error, Result};
use crate::core::identity::Identity;
use crate::core::session::{Liveness, SessionRecord, Standing};
use crate::engine::ctx::Ctx;

/// The live session of `id`, read (not settled: a look takes no lock), or
/// an error saying how to get one.
fn live(ctx: &Ctx, id: &Identity) -> Result<SessionRecord> {
    ctx.peer(id)?;
    let rec = ctx.state.session(id)?;
    let standing = rec.as_ref().map(crate::os::process::standing);
    match (rec, standing) {
        (Some(rec), Some(Standing::Running(Liveness::Alive))) => Ok(rec),
        (_, Some(Standing::Launching)) => Err(Error::failed(
            id.to_string(),
            "it is being launched",
            "retry in a moment",
        )),
        (_, Some(Standing::Running(Liveness::Unknown))) => Err(Error::failed(
            id.to_string(),
            "cannot tell whether its session is alive",
            "retry in a moment",
        )),
        _ => Err(Error::failed(
            id.to_string(),
            "it is not running",
            format!("`iapeer wake {id}` brings it up"),
        )),
    }
}

/// Replaces this process with a tmux client on the agent's session.
/// Detaching (C-b d) leaves the agent running.
pub(crate) fn attach(app: &App, args: AttachArgs) -> Result<i32> {
    let id = Identity::parse(&args.name)?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let rec = live(&ctx, &id)?;
    let tmux = std::env::var_os("IAPEER_TMUX_BIN").unwrap_or_else(|| "tmux".into());
    let mut cmd = std::process::Command::new(tmux);
    cmd.arg("-S").arg(&rec.socket).arg("attach-session");
    if args.read_only {
        cmd.arg("-r");
    }
    cmd.arg("-t").arg(format!("={id}"));
    // Inside another tmux, a nested client needs TMUX unset.
    cmd.env_remove("TMUX");
    let err = cmd.exec();
    Err(Error::failed(
        format!("attaching to {id}"),
        format!("could not run tmux: {err}"),
        format!(
            "attach by hand: tmux -S {} attach -t ={id}",
            rec.socket.display()
        ),
    ))
}

/// Presses the runtime's interrupt key in the agent's session: its turn
/// stops, the session goes on.
pub(crate) fn interrupt(app: &App, name: &str) -> Result<i32> {
    let id = Identity::parse(name)?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let peer = ctx.peer(&id)?;
    let rec = live(&ctx, &id)?;
    let keys = crate::runtime::for_peer(&ctx.config, &peer).interrupt_keys();
    ctx.host.send_keys(&rec.socket, id.as_str(), keys)?;
    println!(
        "{id}: pressed {} (its turn stops; the session goes on)",
        keys.join(" ")
    );
    Ok(0)
}

/// Prints the last lines of the agent's screen; with `--follow`, again
/// each time they change.
pub(crate) fn peek(app: &App, args: PeekArgs) -> Result<i32> {
    let id = Identity::parse(&args.name)?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let rec = live(&ctx, &id)?;
    let mut last = String::new();
    loop {
        let screen = match ctx.host.capture(&rec.socket, id.as_str(), args.lines) {
            Ok(s) => s,
            Err(_) if args.follow && !last.is_empty() => {
                println!("--- {id} ended");
                return Ok(0);
            }
            Err(e) => return Err(e),
        };
        if screen != last {
            if args.follow && !last.is_empty() {
                println!("--- {}", crate::core::clock::format_ms(ctx.now()));
            }
            print!("{screen}");
            if !screen.ends_with('\n') {
                println!();
            }
            use std::io::Write;
            if std::io::stdout().flush().is_err() {
                return Ok(0);
            }
            last = screen;
        }
        if !args.follow {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until the peer is ready, idle, ended, or has an empty queue;
/// exit 8 when `--timeout` passes first.
pub(crate) fn wait(app: &App, args: WaitArgs) -> Result<i32> {
    let id = Identity::parse(&args.name)?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let peer = ctx.peer(&id)?;
    let timeout = match &args.timeout {
        Some(t) => crate::core::clock::parse_duration(t).ok_or_else(|| {
            Error::Usage(format!(
                "--timeout {t:?} is not a duration (like 90s, 15m, 1h)"
            ))
        })?,
        None => Duration::from_secs(3600),
    };
    let started = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    loop {
        // A session being launched, running, or that cannot be told: not
        // ended.
        let rec = ctx.state.session(&id)?.filter(|r| {
            matches!(
                crate::os::process::standing(r),
                Standing::Launching | Standing::Running(Liveness::Alive | Liveness::Unknown)
            )
        });
        let done = match args.r#for {
            WaitFor::Ready => rec.as_ref().is_some_and(SessionRecord::is_ready),
            WaitFor::Ended => rec.is_none(),
            WaitFor::QueueEmpty => queue_empty(&ctx, &id),
            WaitFor::Idle => match rec.as_ref().filter(|r| r.is_ready()) {
                None => false,
                Some(r) => {
                    let runtime = crate::runtime::for_peer(&ctx.config, &peer);
                    match runtime.busy(r.pane_pid) {
                        // The runtime's own record says.
                        Some(busy) => !busy,
                        // Otherwise: nothing new for a few seconds.
                        None => {
                            let started_ms = r.started_ms().unwrap_or(0);
                            let seen = crate::engine::supervise::activity(
                                &ctx,
                                Some(&peer),
                                r,
                                started_ms,
                            )
                            .at;
                            let quiet = ctx.now().saturating_sub(seen) >= 3_000;
                            match (quiet, quiet_since) {
                                (false, _) => {
                                    quiet_since = None;
                                    false
                                }
                                (true, None) => {
                                    quiet_since = Some(Instant::now());
                                    false
                                }
                                (true, Some(_)) => true,
                            }
                        }
                    }
                }
            },
        };
        if done {
            return Ok(0);
        }
        if started.elapsed() >= timeout {
            return Err(Error::TimedOut {
                waited_for: format!("{id} to be {}", args.r#for.as_str()),
                secs: timeout.as_secs_f64(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// No task waits in `state/queue/<id>/`, nor is one being delivered.
fn queue_empty(ctx: &Ctx, id: &Identity) -> bool {
    !crate::store::queue::Queues::new(&ctx.config.paths.state).has_tasks(id)
}
