//! `iapeer add`, `iapeer rm`, `iapeer ls`: peer definitions.

use crate::cli::{AddArgs, DialogsArg, LsArgs, RmArgs, SetArgs, UnsetKey};
use crate::cmd::App;
use crate::core::error::{Error, Result};
use crate::core::identity::Identity;
use crate::core::peer::{Dialogs, Peer};
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
        policy: args.policy.into(),
        conversational: args.conversational,
        initial_prompt: agent.initial_prompt,
        external_supervisor: None,
        idle_secs: args.idle_secs,
        max_age_secs: args.max_age_secs,
        ready_pattern: agent.ready_pattern,
        interfaces: None,
        pool: None,
        dialogs: Dialogs::default(),
        on_stuck: Default::default(),
    };
    check_and_save(app, &id, &peer)?;
    // Its history begins here: `why` and the metrics tell nothing of an
    // earlier peer of the same name.
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    ctx.log(&ctx.record(Ev::Start).identity(&id).outcome(Outcome::Added))?;
    println!("{id}: defined in {}", file.display());
    Ok(0)
}

/// Changes a definition in place: every change validated as `add` would,
/// then one atomic write (a running daemon sees it at once).
pub(crate) fn set(app: &App, args: SetArgs) -> Result<i32> {
    let id = Identity::parse(&args.name)?;
    let paths = &app.config.paths;
    let mut peer = definitions::load_peer(paths, &id)?;
    if let Some(pool) = &peer.pool {
        return Err(Error::input(
            format!("peer {id}"),
            format!("it is a member of pool {pool}, whose definition writes it"),
            format!("edit pools/{pool}.json instead"),
        ));
    }
    let before = peer.clone();
    if let Some(cwd) = args.cwd {
        peer.cwd = crate::cli::absolute(cwd)?;
    }
    if let Some(r) = args.runtime {
        peer.runtime = r.into();
    }
    if let Some(p) = args.policy {
        peer.policy = p.into();
    }
    if let Some(c) = args.conversational {
        peer.conversational = c;
    }
    if args.idle_secs.is_some() {
        peer.idle_secs = args.idle_secs;
    }
    if args.max_age_secs.is_some() {
        peer.max_age_secs = args.max_age_secs;
    }
    if args.initial_prompt.is_some() {
        peer.initial_prompt = args.initial_prompt;
    }
    if args.ready_pattern.is_some() {
        peer.ready_pattern = args.ready_pattern;
    }
    if args.external_supervisor.is_some() {
        peer.external_supervisor = args.external_supervisor;
    }
    if let Some(d) = args.dialogs {
        peer.dialogs = match d {
            DialogsArg::Auto => Dialogs::Auto,
            DialogsArg::Manual => Dialogs::Manual,
        };
    }
    if !args.argv.is_empty() {
        peer.command = Some(args.argv);
    }
    for key in args.unset {
        match key {
            UnsetKey::IdleSecs => peer.idle_secs = None,
            UnsetKey::MaxAgeSecs => peer.max_age_secs = None,
            UnsetKey::InitialPrompt => peer.initial_prompt = None,
            UnsetKey::ReadyPattern => peer.ready_pattern = None,
            UnsetKey::ExternalSupervisor => peer.external_supervisor = None,
            UnsetKey::Command => peer.command = None,
        }
    }
    if peer == before {
        println!("{id}: unchanged");
        return Ok(0);
    }
    let file = paths.peer_file(id.as_str());
    check_and_save(app, &id, &peer)?;
    println!(
        "{id}: updated {}{}",
        file.display(),
        if crate::daemon::lock::is_running(&paths.daemon_lock()) {
            "; the daemon applies it now (a running session keeps its launch settings until it next starts)"
        } else {
            ""
        }
    );
    Ok(0)
}

/// Checks a definition as a load would, then writes it (atomically);
/// nothing is written when it would not load.
fn check_and_save(app: &App, id: &Identity, peer: &Peer) -> Result<()> {
    let file = app.config.paths.peer_file(id.as_str());
    let body = serde_json::to_vec_pretty(peer).expect("a peer always serializes");
    crate::core::peer::parse(&file, &body, Some(id)).map_err(|e| match e {
        Error::Input { problem, hint, .. } => Error::Usage(format!("{problem}; {hint}")),
        e => e,
    })?;
    if !peer.cwd.is_dir() {
        tracing::warn!(
            "{} does not exist; wakes of {id} fail until it does",
            peer.cwd.display()
        );
    }
    definitions::save_peer(&app.config.paths, peer)
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
