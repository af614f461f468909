//! `iapeer status`: state per peer, as an aligned table or JSON.

use crate::cli::StatusArgs;
use crate::cmd::App;
use crate::core::error::Result;
use crate::core::identity::Identity;
use crate::engine::ctx::Ctx;
use crate::engine::status;

pub(crate) fn run(app: &App, args: StatusArgs) -> Result<i32> {
    let only = args.name.as_deref().map(Identity::parse).transpose()?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let all = status::collect(&ctx, only.as_ref())?;
    let daemon = crate::daemon::lock::is_running(&ctx.config.paths.daemon_lock());
    if args.json {
        println!("{}", status::document(&ctx, &all, daemon));
        return Ok(0);
    }
    let mut rows = vec![[
        "NAME",
        "STATE",
        "RUNTIME",
        "POLICY",
        "AGE",
        "DEATHS",
        "LAST DECISION",
    ]
    .map(String::from)
    .to_vec()];
    for s in &all {
        match s {
            Ok(s) => rows.push(vec![
                s.name.clone(),
                s.lifecycle_state.as_str().to_owned(),
                s.runtime.clone(),
                match &s.pool {
                    Some(p) => format!("{}@{p}", s.policy),
                    None => s.policy.clone(),
                },
                s.session
                    .as_ref()
                    .map_or("-".to_owned(), |i| human_age(i.age_secs)),
                s.deaths_in_window.to_string(),
                s.last_decision
                    .as_ref()
                    .map_or("-".to_owned(), |d| format!("{} {}", d.ts, d.summary)),
            ]),
            Err(e) => eprintln!("iapeer: {e}"),
        }
    }
    print!("{}", super::table(&rows));
    for s in all.iter().flatten() {
        if let Some(p) = &s.problem {
            eprintln!("iapeer: {}: {p}", s.name);
        }
        if let Some(c) = &s.lifecycle_metrics.crashed_task {
            println!(
                "{}: its session died working on a task at {}: {:?}",
                s.name, c.ts, c.task
            );
        }
        if let Some(r) = &s.retry_after {
            println!(
                "{}: crash-loop guard lifts at {r} (or `iapeer reset {}`)",
                s.name, s.name
            );
        }
    }
    println!(
        "daemon: {}; home {}{}",
        if daemon { "running" } else { "not running" },
        ctx.config.home.display(),
        if ctx.config.paths.run_relocated {
            format!(
                "; sockets in {} (the home's path is too long for them)",
                ctx.config.paths.run.display()
            )
        } else {
            String::new()
        }
    );
    Ok(0)
}

fn human_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}
