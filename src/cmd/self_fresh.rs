//! `iapeer self-fresh`: called by an agent from inside its own session.
//! Marks `.new-eager`, then ends the session; the daemon (or the next wake)
//! brings it back fresh.

use std::time::Duration;

use nix::sys::signal::{self, SigHandler, Signal};

use crate::cmd::App;
use crate::core::error::{Error, Result};
use crate::core::identity::Identity;
use crate::engine::ctx::Ctx;
use crate::os::process::ProcessHandle;
use crate::store::markers::Flag;

pub(crate) fn run(app: &App) -> Result<i32> {
    let Some(name) = std::env::var_os("IAPEER_IDENTITY") else {
        return Err(Error::Usage(
            "self-fresh only works from inside an iapeer session (IAPEER_IDENTITY is not set); \
             from outside, use `iapeer stop` or `touch state/lifecycle/NAME.new-eager`"
                .into(),
        ));
    };
    let name = crate::cli::utf8("IAPEER_IDENTITY", name)?;
    let id = Identity::parse(&name)?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let Some(rec) = ctx.state.session(&id)? else {
        return Err(Error::failed(
            format!("self-fresh for {id}"),
            "iapeer has no live session recorded for it",
            "self-fresh must run inside the session iapeer started",
        ));
    };
    if !inside(&rec) {
        return Err(Error::failed(
            format!("self-fresh for {id}"),
            format!(
                "this process is not inside {id}'s session (pane pid {})",
                rec.pane_pid
            ),
            "run it from the agent's own shell, or use `iapeer stop` from outside",
        ));
    }
    ctx.state
        .set_flag(&id, Flag::NewEager, ctx.now(), "self-fresh")?;
    let daemon = crate::daemon::lock::is_running(&ctx.config.paths.daemon_lock());
    println!(
        "{id}: this session ends now and comes back fresh{}",
        if daemon {
            ""
        } else {
            " at the next wake (no daemon is running to relaunch it now)"
        }
    );
    use std::io::Write;
    std::io::stdout().flush().ok();
    // We live inside the session we are about to end: outlive the signals
    // meant for it long enough to finish.
    // SAFETY: setting a signal disposition to "ignore" has no handler to
    // run and is sound at any point.
    unsafe {
        let _ = signal::signal(Signal::SIGTERM, SigHandler::SigIgn);
        let _ = signal::signal(Signal::SIGHUP, SigHandler::SigIgn);
    }
    let Ok(Some(leader)) = ProcessHandle::open(rec.pane_pid, rec.pane_start) else {
        return Ok(0);
    };
    leader
        .signal(Signal::SIGTERM)
        .map_err(|e| Error::io(format!("/proc/{}", rec.pane_pid), "signal", e))?;
    if !leader.wait_exit(Duration::from_secs(10)) {
        let _ = leader.signal(Signal::SIGKILL);
    }
    Ok(0)
}

/// Is this process running inside the session? By ancestry where /proc
/// tells it, else by the tmux socket we were started under.
fn inside(rec: &crate::core::session::SessionRecord) -> bool {
    match crate::os::process::is_ancestor(rec.pane_pid, std::process::id() as i32) {
        Some(answer) => answer,
        None => std::env::var("TMUX")
            .ok()
            .and_then(|t| t.split(',').next().map(std::path::PathBuf::from))
            .is_some_and(|socket| socket == rec.socket),
    }
}
