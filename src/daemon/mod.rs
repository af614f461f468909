//! The supervisor process (DESIGN §7): one loop fed by three sources — file
//! events (`watcher`), session deaths (`deaths`) and a periodic tick — plus
//! signals. Every event is a hint naming an identity; the loop re-reads that
//! identity from disk and decides with the pure `crate::core::pass::decide`. Disk is
//! the source of truth, so a CLI acting in another process is seen at once,
//! and nothing is lost across a restart.
//!
//! Acting (a death to record, a park, a launch) happens on a worker thread
//! per identity, under that identity's wake lock, so a slow boot never holds
//! up the loop: a death elsewhere is still seen in milliseconds.

pub mod activity;
pub(crate) mod deaths;
pub(crate) mod hooks;
pub(crate) mod lock;
pub(crate) mod signals;
mod supervisor;
pub(crate) mod systemd;
pub(crate) mod watcher;

use std::collections::BTreeSet;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::error::{Error, Result};
use crate::core::identity::Identity;
use crate::core::vocab::{Action, Ev, Source};
use crate::engine::ctx::Ctx;
use crate::engine::supervise::PassOutcome;
use crate::store::config::Config;
use crate::store::log::LogChanges;

use self::signals::Sig;
pub use self::supervisor::{PassStats, Supervisor};
use self::systemd::Notifier;

/// What wakes the loop.
#[derive(Debug)]
pub enum Event {
    /// A file about this identity changed.
    Changed(Identity),
    /// `peers/<name>.json` changed.
    PeerChanged(String),
    /// `pools/<name>.json` changed.
    PoolChanged,
    /// lifecycle.log grew (or rotated).
    Logged,
    /// Events were lost: look at everything.
    Rescan,
    /// This identity's session process exited.
    Died(Identity),
    Signal(Sig),
    /// A worker finished with this identity.
    Done(Identity, Box<Result<PassOutcome>>),
}

/// Temp files older than this were left by a killed writer.
const STALE_TEMP: Duration = Duration::from_secs(60);

/// `iapeer daemon`: runs until SIGTERM/SIGINT; returns the exit code.
/// Each live session costs the daemon a pidfd, and a burst of work a few
/// more: the soft limit on open files is raised to the hard one, so that
/// descriptors run out only where the system says they must.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    // No more than any kernel grants one process.
    let want = hard.min(1 << 20);
    if want > soft {
        match setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
            Ok(()) => tracing::info!("open-file limit raised from {soft} to {want}"),
            Err(e) => tracing::warn!("open-file limit stays {soft}: {e}"),
        }
    } else {
        tracing::info!("open-file limit {soft}");
    }
}

pub(crate) fn run(config: Config, verbose: u8, allow_remote: bool) -> Result<i32> {
    // Before any thread exists (the diagnostics writer is one): a thread
    // that does not block SIGTERM would take it with the default action.
    let sigset = signals::block().map_err(|e| {
        Error::failed(
            "daemon",
            format!("cannot block signals: {e}"),
            "report this",
        )
    })?;
    config.ensure_home()?;
    let _lock = lock::acquire(&config.paths.daemon_lock())?;
    // Under the lock: the token a first start makes is made once.
    let http = crate::http::settings(&config, allow_remote)?;
    let _diagnostics = crate::diagnostics::init_daemon(verbose, &config)?;
    // A full disk must fail a write (EFBIG), not kill the daemon.
    // SAFETY: ignoring a signal installs no handler.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGXFSZ,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    raise_fd_limit();
    let (tx, rx) = mpsc::channel();
    signals::start(sigset, tx.clone())
        .map_err(|e| Error::failed("daemon", e.to_string(), "check thread limits"))?;

    let ctx = Arc::new(Ctx::open(config, Source::Daemon)?);
    match ctx.state.sweep_temp_files(STALE_TEMP) {
        Ok(0) => {}
        Ok(n) => tracing::info!("removed {n} temp file(s) left by an interrupted write"),
        Err(e) => tracing::warn!("{e}"),
    }
    let logged = Arc::new(LogChanges::default());
    let _watch = watcher::start(&ctx.config.paths, tx.clone(), Arc::clone(&logged))?;
    let mut sup = Supervisor::new(Arc::clone(&ctx), tx)?;
    sup.activity_reader().start().map_err(|e| {
        Error::failed(
            "activity reader",
            e.to_string(),
            "check the system's thread limits",
        )
    })?;
    let notifier = Notifier::from_env();

    let mut banner = format!(
        "iapeer {} daemon, pid {}, {} peer(s), tick {}s, home {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        sup.peers(),
        ctx.config.tick.as_secs_f64(),
        ctx.config.home.display()
    );
    if http.is_none() {
        // No dashboard this run: `status` must not look for last run's.
        let _ = std::fs::remove_file(crate::http::where_path(&ctx.config));
    }
    if let Some(settings) = http {
        let file = settings.token_file.display().to_string();
        let token = settings.token.clone();
        let addr = crate::http::start(Arc::clone(&ctx), sup.metrics(), logged, settings)?;
        // The log says where the token is; only the daemon's own output
        // (and `iapeer status`) carries the link with it.
        banner.push_str(&format!(", dashboard http://{addr}/ (token in {file})"));
        eprintln!("iapeer daemon: dashboard on http://{addr}/?access_token={token}");
    }
    ctx.log(
        &ctx.record(Ev::Daemon)
            .action(Action::Started)
            .reason(&banner),
    )?;
    tracing::info!("{banner}");

    sup.adopt_orphans();
    sup.adopt_recorded();
    sup.full_pass()?;
    sup.write_metrics(true);
    notifier.ready(&status_line(&sup));
    run_loop(&ctx, &mut sup, &rx, &notifier);

    ctx.log(
        &ctx.record(Ev::Daemon)
            .action(Action::Stopping)
            .reason("signal; every session is left running"),
    )?;
    notifier.stopping();
    tracing::info!("stopping; sessions are left running");
    Ok(0)
}

fn status_line(sup: &Supervisor) -> String {
    format!("{} peer(s), {} live session(s)", sup.peers(), sup.alive())
}

/// The loop: wait for an event, the next tick, a scheduled look, or the
/// watchdog; then handle everything that arrived.
fn run_loop(ctx: &Ctx, sup: &mut Supervisor, rx: &Receiver<Event>, notifier: &Notifier) {
    let tick = ctx.config.tick;
    let mut next_tick = Instant::now() + tick;
    let watchdog_every = notifier.watchdog_every();
    let mut next_watchdog = watchdog_every.map(|w| Instant::now() + w);
    loop {
        let mut wake_at = next_tick;
        if let Some(at) = sup.next_revisit() {
            wake_at = wake_at.min(at);
        }
        if let Some(w) = next_watchdog {
            wake_at = wake_at.min(w);
        }
        if let Some(m) = sup.metrics_due() {
            wake_at = wake_at.min(m);
        }
        if let Some(c) = sup.checkpoint_due() {
            wake_at = wake_at.min(c);
        }
        let first = match rx.recv_timeout(wake_at.saturating_duration_since(Instant::now())) {
            Ok(ev) => Some(ev),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut events: Vec<Event> = first.into_iter().collect();
        events.extend(rx.try_iter());

        let mut dirty: BTreeSet<Identity> = BTreeSet::new();
        let mut full = false;
        for ev in events {
            match ev {
                Event::Signal(Sig::Stop) => {
                    sup.refresh_metrics();
                    sup.write_checkpoint(true);
                    return;
                }
                Event::Signal(Sig::Reload) => {
                    notifier.reloading();
                    match sup.reload_peers() {
                        Ok(n) => {
                            let line = ctx
                                .record(Ev::Daemon)
                                .action(Action::Reloaded)
                                .reason(format!("{n} peer(s)"));
                            if let Err(e) = ctx.log(&line) {
                                tracing::error!("{e}");
                            }
                        }
                        Err(e) => tracing::error!("reload: {e}"),
                    }
                    notifier.ready(&status_line(sup));
                    full = true;
                }
                Event::Changed(id) => {
                    sup.changed(&id);
                    dirty.insert(id);
                }
                Event::Died(id) => {
                    dirty.insert(id);
                }
                Event::PeerChanged(stem) => sup.reload_peer(&stem),
                Event::PoolChanged => sup.sync_pools(),
                // Folded in below, with everything else.
                Event::Logged => {}
                Event::Rescan => full = true,
                Event::Done(id, outcome) => sup.done(&id, *outcome),
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            full = true;
            next_tick = now + tick;
            sup.verbose();
        }
        dirty.extend(sup.due(Instant::now()));
        if full {
            match sup.full_pass() {
                Ok(_) => notifier.status(&status_line(sup)),
                Err(e) => tracing::error!("full pass: {e}"),
            }
        } else {
            for id in dirty {
                sup.pass(&id, None);
            }
        }
        sup.refresh_metrics();
        sup.write_metrics(full);
        sup.write_checkpoint(false);
        if let (Some(every), Some(at)) = (watchdog_every, next_watchdog) {
            if Instant::now() >= at {
                notifier.watchdog();
                next_watchdog = Some(Instant::now() + every);
            }
        }
    }
}
