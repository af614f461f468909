//! `iapeer pool add|rm|ls`.

use crate::cli::{LsArgs, PoolAddArgs, PoolCommand, RmArgs};
use crate::cmd::App;
use crate::core::error::{Error, Result};
use crate::core::identity::Identity;
use crate::core::pool::{Pool, Template};
use crate::engine::ctx::Ctx;
use crate::store::markers::Marker;
use crate::store::{definitions, fsutil};

pub(crate) fn run(app: &App, cmd: PoolCommand) -> Result<i32> {
    match cmd {
        PoolCommand::Add(args) => add(app, args),
        PoolCommand::Rm(args) => rm(app, args),
        PoolCommand::Ls(args) => ls(app, args),
    }
}

fn add(app: &App, args: PoolAddArgs) -> Result<i32> {
    Identity::parse(&args.name)?;
    app.config.ensure_home()?;
    let paths = &app.config.paths;
    let file = definitions::pool_file(paths, &args.name);
    if file.exists() {
        return Err(Error::input(
            format!("pool {}", args.name),
            format!("it is already defined in {}", file.display()),
            format!("edit that file, or `iapeer pool rm {}` first", args.name),
        ));
    }
    let pool = Pool {
        name: args.name.clone(),
        prefix: args.prefix,
        start_index: args.start_index,
        min: args.min,
        max: args.max,
        idle_secs: args.idle_secs,
        quiet_secs: args.quiet_secs,
        template: Template {
            cwd: crate::cli::absolute(args.agent.cwd)?,
            runtime: args.agent.runtime.into(),
            command: (!args.agent.argv.is_empty()).then_some(args.agent.argv),
            initial_prompt: args.agent.initial_prompt,
            ready_pattern: args.agent.ready_pattern,
            max_age_secs: None,
        },
    };
    // The checks a load makes, before anything is written.
    let body = serde_json::to_vec(&pool).expect("a pool always serializes");
    crate::core::pool::parse(&file, &body, Some(&pool.name)).map_err(|e| match e {
        Error::Input { problem, hint, .. } => Error::Usage(format!("{problem}; {hint}")),
        e => e,
    })?;
    definitions::check_collisions(paths, &pool)?;
    definitions::save_pool(paths, &pool)?;
    let written = definitions::sync_pool(paths, &pool)?;
    let members = pool.members();
    println!(
        "pool {}: {} members, {}..{} ({} kept up), {written} definition(s) written",
        pool.name,
        members.len(),
        members.first().map(Identity::as_str).unwrap_or("-"),
        members.last().map(Identity::as_str).unwrap_or("-"),
        pool.min
    );
    let look_alikes = look_alikes(app, &pool)?;
    if !look_alikes.is_empty() {
        println!(
            "note: {} share the prefix but are not members; the pool never touches them",
            look_alikes.join(", ")
        );
    }
    Ok(0)
}

/// Peers and tmux sockets whose names look like members but are not.
fn look_alikes(app: &App, pool: &Pool) -> Result<Vec<String>> {
    let members: std::collections::BTreeSet<String> =
        pool.members().iter().map(|m| m.to_string()).collect();
    let stem = pool.prefix.trim_end_matches(['-', '_']);
    let mut out = std::collections::BTreeSet::new();
    for p in definitions::load_pools(&app.config.paths)?
        .into_iter()
        .flatten()
    {
        if p.name.starts_with(stem) && !members.contains(&p.name) {
            out.insert(p.name);
        }
    }
    Ok(out.into_iter().collect())
}

/// Removes a pool and its members, journaled: the definition is first
/// renamed aside (`<name>.json.removing`: no longer a pool, so nothing
/// recreates its members), then each member is removed, then the journal.
/// Killed anywhere, `pool rm` again finishes the job.
fn rm(app: &App, args: RmArgs) -> Result<i32> {
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let paths = &ctx.config.paths;
    let journal = definitions::pool_removal(paths, &args.name);
    let (pool, resumed) = match definitions::load_pool_removal(paths, &args.name)? {
        Some(pool) => (pool, true),
        None => (definitions::load_pool(paths, &args.name)?, false),
    };
    let members = pool.members();
    if !args.force && !resumed {
        let live: Vec<&str> = members
            .iter()
            .filter(|m| ctx.state.exists(m, Marker::Session).unwrap_or(false))
            .map(Identity::as_str)
            .collect();
        if !live.is_empty() {
            return Err(Error::failed(
                format!("pool {}", pool.name),
                format!("members {} are running", live.join(", ")),
                format!("`iapeer pool rm {} --force` ends them", pool.name),
            ));
        }
    }
    if !resumed {
        // The pool goes first, so nothing recreates its members meanwhile.
        let file = definitions::pool_file(paths, &pool.name);
        fsutil::rename_durable(&file, &journal)?;
    } else {
        // A second definition written meanwhile would recreate members.
        let file = definitions::pool_file(paths, &pool.name);
        if file.exists() {
            return Err(Error::input(
                format!("pool {}", pool.name),
                format!(
                    "its removal was begun ({}) and it has been defined again since",
                    journal.display()
                ),
                format!(
                    "remove {} to finish the old removal, or {} to keep the new pool",
                    file.display(),
                    journal.display()
                ),
            ));
        }
    }
    for m in &members {
        let peer = ctx
            .peer(m)
            .ok()
            .filter(|p| p.pool.as_deref() == Some(&pool.name));
        if peer.is_some() || ctx.state.scan()?.get(m).is_some_and(|p| p.any_state()) {
            // The pool is already gone: ending a running member is what
            // finishing its removal means.
            super::peers::remove_peer(&ctx, m, peer.as_ref(), args.force || resumed)?;
        }
    }
    std::fs::remove_file(&journal).map_err(|e| Error::io(&journal, "remove", e))?;
    println!(
        "pool {}: {} with its {} members",
        pool.name,
        if resumed {
            "an interrupted removal finished"
        } else {
            "removed"
        },
        members.len()
    );
    Ok(0)
}

fn ls(app: &App, args: LsArgs) -> Result<i32> {
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let now = ctx.now();
    let mut docs = Vec::new();
    let mut rows = vec![["POOL", "MEMBERS", "MIN", "MAX", "UP", "STATES"]
        .map(String::from)
        .to_vec()];
    for loaded in definitions::load_pools(&ctx.config.paths)? {
        let pool = match loaded {
            Ok(p) => p,
            Err(e) => {
                eprintln!("iapeer: {e}");
                continue;
            }
        };
        let members = pool.members();
        let states: Vec<(String, &'static str)> = members
            .iter()
            .map(|m| {
                let state = ctx
                    .peer(m)
                    .map(|p| {
                        crate::engine::status::peer_status(&ctx, &p, now)
                            .lifecycle_state
                            .as_str()
                    })
                    .unwrap_or("undefined");
                (m.to_string(), state)
            })
            .collect();
        let up = states
            .iter()
            .filter(|(_, s)| matches!(*s, "alive" | "starting"))
            .count();
        rows.push(vec![
            pool.name.clone(),
            format!(
                "{}..{}",
                members.first().map(Identity::as_str).unwrap_or("-"),
                members.last().map(Identity::as_str).unwrap_or("-")
            ),
            pool.min.to_string(),
            pool.max.to_string(),
            up.to_string(),
            states
                .iter()
                .map(|(m, s)| format!("{m}:{s}"))
                .collect::<Vec<_>>()
                .join(" "),
        ]);
        docs.push(serde_json::json!({
            "pool": pool,
            "members": states.iter().map(|(m, s)| serde_json::json!({"name": m, "lifecycle_state": s})).collect::<Vec<_>>(),
        }));
    }
    if args.json {
        println!("{}", serde_json::Value::Array(docs));
    } else {
        print!("{}", super::table(&rows));
    }
    Ok(0)
}
