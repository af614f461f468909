//! `iapeer wake`: bring a peer up, or deliver to its live session.

use crate::cli::WakeArgs;
use crate::cmd::App;
use crate::core::error::Result;
use crate::core::identity::Identity;
use crate::core::wake_plan::Ask;
use crate::engine::ctx::Ctx;
use crate::engine::wake::{Report, Woke};

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
