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
    let ask = Ask {
        request: crate::cli::request(args.fresh, args.resume),
        topic: args.topic,
        task: args.task,
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
                session,
            }) => Report {
                schema: 1,
                name: name.to_owned(),
                session: Some(session.clone()),
                status: "alive",
                woke: false,
                mode: None,
                cause: None,
                runtime: Some(runtime.clone()),
                reason: if *delivered {
                    format!("{name} was already running; the task was delivered to it")
                } else {
                    format!("{name} was already running")
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
