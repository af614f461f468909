//! `iapeer wake`: bring a peer up, or deliver to its live session.

use serde::Serialize;

use crate::cli::WakeArgs;
use crate::cmd::App;
use crate::core::error::{Error, Result};
use crate::core::identity::Identity;
use crate::core::vocab::{Cause, Mode};
use crate::core::wake_plan::Ask;
use crate::engine::ctx::Ctx;
use crate::engine::wake::{WakeFailure, Woke};

pub(crate) fn run(app: &App, args: WakeArgs) -> Result<i32> {
    let id = Identity::parse(&args.name)?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    if args.no_wait {
        return no_wait(&ctx, &id, &args);
    }
    let ask = Ask {
        request: crate::cli::request(args.fresh, args.resume),
        topic: args.topic,
        task: args.task,
        ..Ask::default()
    };
    let result = crate::engine::wake::wake(&ctx, &id, &ask);
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&Report::of(&result, id.as_str()))
                .expect("a report always serializes")
        );
    } else if let Ok(woke) = &result {
        match woke {
            Woke::Launched {
                mode,
                cause,
                latency_ms,
                ..
            } => {
                println!("{id}: up, {mode} ({cause}), ready in {latency_ms} ms")
            }
            Woke::AlreadyAlive {
                queued: Some(ahead),
                ..
            } => {
                println!(
                    "{id}: already running, its turn not over; task queued ({ahead} before it), delivered when the turn ends"
                );
                let lock = ctx.config.paths.daemon_lock();
                if !crate::daemon::lock::is_running(&lock) {
                    eprintln!(
                        "iapeer: no daemon is running for {}: queued tasks are delivered by it; start it with `iapeer daemon` (or its unit)",
                        ctx.config.home.display()
                    );
                }
            }
            Woke::AlreadyAlive {
                delivered: true, ..
            } => {
                println!("{id}: already running; task delivered")
            }
            Woke::AlreadyAlive {
                delivered: false, ..
            } => println!("{id}: already running"),
        }
    }
    match result {
        Ok(_) => Ok(0),
        Err(failure) => Err(failure.error),
    }
}

/// `wake --no-wait`: the same wake, run by a copy of this program in a
/// process group of its own (so it outlives this one and its terminal);
/// this one returns as soon as that wake's decision is in the log, with
/// the session id, or with the refusal's exit code.
fn no_wait(ctx: &Ctx, id: &Identity, args: &WakeArgs) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    // What would fail at once is said here, where someone reads it.
    ctx.peer(id)?;
    if let Some(task) = &args.task {
        crate::core::wake_plan::check_task(task)?;
    }
    if let Some(topic) = &args.topic {
        crate::core::marker::check_topic(topic)?;
    }
    let mut follower = crate::store::log::Follower::at_end(&ctx.config.paths.lifecycle_log);
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", "resolve", e))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("wake").arg(id.as_str());
    for (flag, value) in [("--topic", &args.topic), ("--task", &args.task)] {
        if let Some(v) = value {
            cmd.arg(flag).arg(v);
        }
    }
    if args.fresh {
        cmd.arg("--fresh");
    }
    if args.resume {
        cmd.arg("--resume");
    }
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| {
            Error::failed(
                format!("waking {id}"),
                e.to_string(),
                "retry without --no-wait",
            )
        })?;
    let pid = child.id() as u64;
    let deadline =
        std::time::Instant::now() + ctx.config.wake_lock_wait + std::time::Duration::from_secs(10);
    loop {
        for f in follower.poll() {
            let e = &f.entry;
            let decision = matches!(
                e.ev(),
                Some(crate::core::vocab::Ev::Wake | crate::core::vocab::Ev::Task)
            );
            if e.u64("pid") != Some(pid) || !decision {
                continue;
            }
            let queued = e.str("outcome") == Some("queued");
            let mode = e.str("mode").and_then(Mode::parse);
            let delivered = e.str("outcome").is_some();
            if mode.is_none() && !delivered {
                continue; // a dialog answered, say
            }
            let session = e.str("session").unwrap_or("");
            let code = match (mode, e.str("cause")) {
                (Some(Mode::Fresh | Mode::Resume), _) | (None, _) => 0,
                (_, Some("stopped")) => 3,
                (_, Some("crash-loop" | "gave-up")) => 4,
                (_, Some("external-supervisor")) => 5,
                (_, Some("wake-lock-held")) => 6,
                (_, Some("cwd-missing")) => 2,
                _ => 1,
            };
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "schema": 1,
                        "name": id.as_str(),
                        "status": match (code, queued, delivered) {
                            (0, true, _) => "queued",
                            (0, _, true) => "alive",
                            (0, _, _) => "starting",
                            _ => "refused",
                        },
                        "mode": e.str("mode"),
                        "cause": e.str("cause"),
                        "session": (!session.is_empty()).then_some(session),
                        "reason": e.str("reason"),
                    })
                );
            } else if code == 0 {
                println!("{session}");
            } else {
                eprintln!(
                    "iapeer: {id}: {}",
                    e.str("reason").unwrap_or("the wake was refused")
                );
            }
            return Ok(code);
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Done without a line: it was running, and there was no task.
            if status.success() {
                if let Some(rec) = ctx.state.session(id)? {
                    println!("{}", rec.session);
                    return Ok(0);
                }
            }
            // It ended without a decision: nothing was launched.
            return Err(Error::failed(
                format!("waking {id}"),
                format!("the wake ended ({status}) before deciding anything"),
                format!("run `iapeer wake {id}` without --no-wait to see why"),
            ));
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::failed(
                format!("waking {id}"),
                "no decision was logged in time",
                format!("see `iapeer log --peer {id}`"),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The `--json` report: `{schema, name, status, woke, mode, cause,
/// runtime, session, reason, latency_ms}` (`name` as in every verb's JSON).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Report {
    pub schema: u32,
    pub name: String,
    pub status: &'static str,
    pub woke: bool,
    pub mode: Option<Mode>,
    pub cause: Option<Cause>,
    pub runtime: Option<String>,
    /// The session it is on (the launch's, or the live one's).
    pub session: Option<String>,
    pub reason: String,
    pub latency_ms: Option<u64>,
}

impl Report {
    pub(crate) fn of(result: &std::result::Result<Woke, WakeFailure>, name: &str) -> Report {
        match result {
            Ok(Woke::Launched {
                mode,
                cause,
                runtime,
                latency_ms,
                session,
            }) => Report {
                schema: 1,
                name: name.to_owned(),
                session: Some(session.clone()),
                status: "ready",
                woke: true,
                mode: Some(*mode),
                cause: Some(*cause),
                runtime: Some(runtime.clone()),
                reason: format!("{name} came up {mode} ({cause})"),
                latency_ms: Some(*latency_ms),
            },
            Ok(Woke::AlreadyAlive {
                runtime,
                delivered,
                queued,
                session,
            }) => Report {
                schema: 1,
                name: name.to_owned(),
                session: Some(session.clone()),
                status: if queued.is_some() { "queued" } else { "alive" },
                woke: false,
                mode: None,
                cause: None,
                runtime: Some(runtime.clone()),
                reason: match (delivered, queued) {
                    (_, Some(ahead)) => format!(
                        "{name} was already running, its turn not over; the task was queued with {ahead} before it"
                    ),
                    (true, None) => {
                        format!("{name} was already running; the task was delivered to it")
                    }
                    (false, None) => format!("{name} was already running"),
                },
                latency_ms: None,
            },
            Err(f) => Report {
                schema: 1,
                name: name.to_owned(),
                session: None,
                status: if f.mode == Mode::Refused || matches!(f.error, Error::Refused(_)) {
                    "refused"
                } else {
                    "failed"
                },
                woke: false,
                mode: Some(f.mode),
                cause: f.cause,
                runtime: f.runtime.clone(),
                reason: f.error.to_string(),
                latency_ms: None,
            },
        }
    }
}
