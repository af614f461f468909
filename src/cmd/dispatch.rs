//! `iapeer dispatch`: a task to a free pool member, printing the member.

use crate::cli::DispatchArgs;
use crate::cmd::wake::Report;
use crate::cmd::App;
use crate::core::error::Result;
use crate::engine::ctx::Ctx;
use crate::engine::dispatch::Dispatched;
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
                (
                    Some(Woke::AlreadyAlive {
                        queued: Some(ahead),
                        ..
                    }),
                    _,
                ) => {
                    format!("queued: it came up meanwhile, mid-turn ({ahead} before it)")
                }
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
                        "status": status(d),
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

/// The `status` of `dispatch --json`: what became of the task. A member
/// found running when it was to be woken (it came up meanwhile) was not
/// woken: its task was delivered, or queued behind its turn.
fn status(d: &Dispatched) -> &'static str {
    match (&d.woke, d.queued) {
        (_, Some(_))
        | (
            Some(Woke::AlreadyAlive {
                queued: Some(_), ..
            }),
            _,
        ) => "queued",
        (Some(Woke::Launched { .. }), None) => "woke",
        (Some(Woke::AlreadyAlive { .. }) | None, None) => "delivered",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::identity::Identity;
    use crate::core::vocab::{Cause, Mode};

    #[test]
    fn the_status_says_what_became_of_the_task() {
        let launched = Woke::Launched {
            mode: Mode::Fresh,
            cause: Cause::FirstWake,
            runtime: "claude".into(),
            latency_ms: 1,
            session: "s".into(),
        };
        let alive = |queued: Option<usize>| Woke::AlreadyAlive {
            runtime: "claude".into(),
            delivered: queued.is_none(),
            queued,
            session: "s".into(),
        };
        let rows = [
            (None, None, "delivered"),
            (None, Some(2), "queued"),
            (Some(launched), None, "woke"),
            (Some(alive(None)), None, "delivered"),
            (Some(alive(Some(1))), None, "queued"),
        ];
        for (woke, queued, want) in rows {
            let d = Dispatched {
                member: Identity::parse("m").unwrap(),
                woke,
                queued,
            };
            assert_eq!(status(&d), want, "{d:?}");
        }
    }
}
