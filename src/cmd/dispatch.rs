//! `iapeer dispatch`: a task to a free pool member, printing the member.

use crate::cli::DispatchArgs;
use crate::cmd::wake::Report;
use crate::cmd::App;
use crate::core::error::Result;
use crate::engine::ctx::Ctx;
use crate::engine::wake::Woke;

pub(crate) fn run(app: &App, args: DispatchArgs) -> Result<i32> {
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let pool = crate::store::definitions::load_pool(&ctx.config.paths, &args.pool)?;
    let result = crate::engine::dispatch::dispatch(
        &ctx,
        &pool,
        &args.task,
        args.topic.as_deref(),
        !args.no_queue,
    );
    match &result {
        Ok(d) => {
            let how = match (&d.woke, d.queued) {
                (_, Some(ahead)) => format!(
                    "queued: every member is busy and the pool is at its max ({ahead} before it)"
                ),
                (None, None) => "delivered".to_owned(),
                (Some(Woke::Launched { mode, cause, .. }), _) => format!("woke {mode} ({cause})"),
                (Some(Woke::AlreadyAlive { .. }), _) => "delivered".to_owned(),
            };
            if args.json {
                let report = d
                    .woke
                    .clone()
                    .map(|w| Report::of(&Ok(w), d.member.as_str()));
                println!(
                    "{}",
                    serde_json::json!({
                        "schema": 1,
                        "pool": pool.name,
                        "name": d.member.as_str(),
                        "status": match (&d.woke, d.queued) {
                            (_, Some(_)) => "queued",
                            (Some(_), None) => "woke",
                            (None, None) => "delivered",
                        },
                        "wake": report,
                    })
                );
            } else {
                println!("{}", d.member);
                eprintln!("{}: task {how}", d.member);
            }
        }
        Err(f) if args.json => {
            println!(
                "{}",
                serde_json::json!({
                    "schema": 1,
                    "pool": pool.name,
                    "name": null,
                    "status": if f.error.exit_code() == 7 { "full" } else { "failed" },
                    "reason": f.error.to_string(),
                })
            );
        }
        Err(_) => {}
    }
    match result {
        Ok(_) => Ok(0),
        Err(f) => Err(f.error),
    }
}
