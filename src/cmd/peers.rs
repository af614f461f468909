//! `iapeer add`, `iapeer rm`, `iapeer ls`: peer definitions.

use crate::cli::{AddArgs, LsArgs, PolicyArg, RmArgs};
use crate::cmd::App;
use crate::core::error::{Error, Result};
use crate::core::identity::Identity;
use crate::core::peer::{Dialogs, Peer, Policy};
use crate::core::vocab::{Ev, Outcome};
use crate::engine::ctx::Ctx;
use crate::engine::ending::Settled;
use crate::store::definitions;

pub(crate) fn add(app: &App, args: AddArgs) -> Result<i32> {
    let id = Identity::parse(&args.name)?;
    let paths = &app.config.paths;
    app.config.ensure_home()?;
    let file = paths.peer_file(id.as_str());
    if file.exists() {
        return Err(Error::input(
            format!("peer {id}"),
            format!("it is already defined in {}", file.display()),
            format!("edit that file, or `iapeer rm {id}` first"),
        ));
    }
    let agent = args.agent;
    let peer = Peer {
        name: id.to_string(),
        cwd: crate::cli::absolute(agent.cwd)?,
        runtime: agent.runtime.into(),
        command: (!agent.argv.is_empty()).then_some(agent.argv),
        policy: match args.policy {
            PolicyArg::Lazy => Policy::Lazy,
            PolicyArg::Always => Policy::Always,
        },
        conversational: args.conversational,
        initial_prompt: agent.initial_prompt,
        external_supervisor: None,
        idle_secs: args.idle_secs,
        max_age_secs: args.max_age_secs,
        ready_pattern: agent.ready_pattern,
        interfaces: None,
        pool: None,
        dialogs: Dialogs::default(),
    };
    // The same checks a load makes, before anything is written.
    let body = serde_json::to_vec_pretty(&peer).expect("a peer always serializes");
    crate::core::peer::parse(&file, &body, Some(&id)).map_err(|e| match e {
        Error::Input { problem, hint, .. } => Error::Usage(format!("{problem}; {hint}")),
        e => e,
    })?;
    if !peer.cwd.is_dir() {
        tracing::warn!(
            "{} does not exist yet; wakes of {id} fail until it does",
            peer.cwd.display()
        );
    }
    definitions::save_peer(paths, &peer)?;
    // Its history begins here: `why` and the metrics tell nothing of an
    // earlier peer of the same name.
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    ctx.log(&ctx.record(Ev::Start).identity(&id).outcome(Outcome::Added))?;
    println!("{id}: defined in {}", file.display());
    Ok(0)
}

pub(crate) fn rm(app: &App, args: RmArgs) -> Result<i32> {
    let id = Identity::parse(&args.name)?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let file = ctx.config.paths.peer_file(id.as_str());
    let peer = ctx.peer(&id).ok();
    if peer.is_none()
        && !file.exists()
        && !ctx.state.scan()?.get(&id).is_some_and(|p| p.any_state())
    {
        return Err(Error::NoPeer {
            name: id.to_string(),
            path: file,
        });
    }
    // A member comes and goes with its pool; one whose pool is gone is a
    // leftover anyone may remove.
    if let Some(pool) = peer
        .as_ref()
        .and_then(|p| p.pool.as_deref())
        .filter(|pool| definitions::pool_file(&ctx.config.paths, pool).exists())
    {
        return Err(Error::input(
            format!("peer {id}"),
            format!("it is a member of pool {pool}"),
            format!("members come and go with their pool: `iapeer pool rm {pool}`, or edit pools/{pool}.json"),
        ));
    }
    let removed = remove_peer(&ctx, &id, peer.as_ref(), args.force)?;
    println!(
        "{id}: removed ({} and {} state file{})",
        file.display(),
        removed,
        if removed == 1 { "" } else { "s" }
    );
    Ok(0)
}

/// Removes a peer's definition and every state file but its lock; a live
/// session is refused unless `force`, then ended. Logs a `removed` line,
/// which resets the peer's metrics. Returns the number of state files.
pub(crate) fn remove_peer(
    ctx: &Ctx,
    id: &Identity,
    peer: Option<&Peer>,
    force: bool,
) -> Result<usize> {
    let _lock = ctx.lock(id)?;
    let live = match crate::engine::ending::settle(ctx, id, peer)? {
        Settled::Alive(_) if !force => {
            return Err(Error::failed(
                format!("peer {id}"),
                "its session is running",
                format!("`iapeer stop {id}` first, or add --force to end it"),
            ))
        }
        Settled::Alive(rec) => Some(rec),
        _ => None,
    };
    // Logged first; the line also resets the peer's metrics, so a new peer
    // of this name starts from zero.
    let mut line = ctx.record(Ev::Stop).identity(id).outcome(Outcome::Removed);
    line = match &live {
        Some(rec) => line
            .session(&rec.session)
            .reason("removed with --force; its session was ended"),
        None => line.reason("removed"),
    };
    ctx.log(&line)?;
    if let Some(rec) = live {
        ctx.host.kill(
            &rec.socket,
            id.as_str(),
            Some((rec.pane_pid, rec.pane_start)),
        )?;
    }
    // Everything but the lock, which others may be waiting on: it holds no
    // state, so a new peer of this name inherits nothing.
    let removed = ctx.state.remove_all(id)?;
    let file = ctx.config.paths.peer_file(id.as_str());
    match std::fs::remove_file(&file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&file, "remove", e)),
    }
    Ok(removed.len())
}

pub(crate) fn ls(app: &App, args: LsArgs) -> Result<i32> {
    let all = definitions::load_peers(&app.config.paths)?;
    if args.json {
        let items: Vec<serde_json::Value> = all
            .iter()
            .map(|p| match p {
                Ok(peer) => serde_json::to_value(peer).expect("a peer always serializes"),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            })
            .collect();
        println!("{}", serde_json::Value::Array(items));
        return Ok(0);
    }
    let mut rows = vec![["NAME", "RUNTIME", "POLICY", "CWD"]
        .map(String::from)
        .to_vec()];
    for p in &all {
        match p {
            Ok(peer) => {
                let mut policy = peer.policy.as_str().to_owned();
                if peer.is_conversational() {
                    policy.push_str(",human");
                }
                if let Some(sup) = &peer.external_supervisor {
                    policy = format!("external:{sup}");
                }
                rows.push(vec![
                    peer.name.clone(),
                    peer.runtime.as_str().to_owned(),
                    policy,
                    peer.cwd.display().to_string(),
                ]);
            }
            Err(e) => eprintln!("iapeer: {e}"),
        }
    }
    print!("{}", super::table(&rows));
    Ok(0)
}
