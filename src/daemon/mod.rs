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

pub(crate) mod deaths;
pub(crate) mod lock;
pub(crate) mod signals;
pub(crate) mod systemd;
pub(crate) mod watcher;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::clock::EpochMs;
use crate::core::crash_ring;
use crate::core::error::{Error, Refusal, Result};
use crate::core::identity::Identity;
use crate::core::metrics;
use crate::core::pass;
use crate::core::pass::PassAction;
use crate::core::peer::Peer;
use crate::core::session::Liveness;
use crate::core::vocab::{Action, Ev, Outcome, Source};
use crate::engine::ctx::Ctx;
use crate::engine::supervise;
use crate::engine::supervise::PassOutcome;
use crate::store::config::Config;
use crate::store::definitions;
use crate::store::fsutil;
use crate::store::log;
use crate::store::log::LogChanges;
use crate::store::markers;
use crate::store::markers::Present;

use self::deaths::DeathWatch;
use self::signals::Sig;
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
    Done(Identity, Result<PassOutcome>),
}

/// How long a worker that found the lock held waits before looking again
/// (the holder's own writes usually bring us back sooner).
const BUSY_RETRY: Duration = Duration::from_millis(250);
/// How often a session left starting by a dead waker has its screen read.
const CHECK_BOOT_EVERY: Duration = Duration::from_secs(1);
/// Stands in for "never" where an instant must be given.
const FAR: Duration = Duration::from_secs(365 * 86_400);
/// The metrics file is rewritten at most this often (and on every tick).
const METRICS_EVERY: Duration = Duration::from_secs(1);
/// Temp files older than this were left by a killed writer.
const STALE_TEMP: Duration = Duration::from_secs(60);

/// The loop's state. Everything here is a cache or a schedule; the truth is
/// on disk.
#[derive(Debug)]
pub struct Supervisor {
    ctx: Arc<Ctx>,
    events: Sender<Event>,
    peers: BTreeMap<Identity, Peer>,
    /// Broken definitions, by file stem, with the error last logged.
    broken: BTreeMap<String, String>,
    /// Identities a worker is acting on.
    busy: HashSet<Identity>,
    /// Identities that changed while busy: look again when the worker ends.
    again: HashSet<Identity>,
    /// No launch before this time (crash-loop guard, failed launches).
    /// Kept as monotonic instants, so the wall clock jumping neither
    /// stretches nor shortens a wait.
    backoff: HashMap<Identity, Backoff>,
    revisit: BTreeMap<Instant, BTreeSet<Identity>>,
    /// The latest activity a worker measured precisely (transcripts, tmux)
    /// per live identity. The loop itself reads only the session record,
    /// so a slow probe never holds it up.
    seen: HashMap<Identity, EpochMs>,
    /// Session pids registered with the death watch.
    watched: HashMap<Identity, i32>,
    /// The last tick-error logged per identity, so one broken file is not
    /// logged on every pass: for reading its state, and for a launch that
    /// failed before deciding anything (a broken definition, say).
    errors: HashMap<Identity, String>,
    launch_errors: HashMap<Identity, String>,
    deaths: DeathWatch,
    /// Counters folded from the log: replayed at start, then followed, so
    /// CLI processes' lines count as well as ours.
    metrics: Arc<std::sync::Mutex<metrics::Metrics>>,
    follower: log::Follower,
    metrics_written: Option<Instant>,
    metrics_dirty: bool,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Instant,
    /// Set by the crash-loop guard, which a change to the identity's files
    /// (`iapeer reset`) may lift early.
    crash_loop: bool,
}

impl Backoff {
    fn after(wait: Duration) -> Self {
        Backoff {
            until: Instant::now() + wait,
            crash_loop: false,
        }
    }
}

/// Figures from one full pass.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassStats {
    pub identities: usize,
    pub alive: usize,
    pub spawned: usize,
}

impl Supervisor {
    pub fn new(ctx: Arc<Ctx>, events: Sender<Event>) -> Result<Self> {
        let log = ctx.config.paths.lifecycle_log.clone();
        let deaths = DeathWatch::start(events.clone()).map_err(|e| {
            Error::failed(
                "death watch",
                e.to_string(),
                "check the system's thread limits",
            )
        })?;
        let mut s = Supervisor {
            ctx,
            events,
            peers: BTreeMap::new(),
            broken: BTreeMap::new(),
            busy: HashSet::new(),
            again: HashSet::new(),
            backoff: HashMap::new(),
            revisit: BTreeMap::new(),
            seen: HashMap::new(),
            watched: HashMap::new(),
            errors: HashMap::new(),
            launch_errors: HashMap::new(),
            deaths,
            metrics: Arc::default(),
            follower: log::Follower::from_start(&log),
            metrics_written: None,
            metrics_dirty: true,
        };
        s.reload_peers()?;
        s.refresh_metrics();
        Ok(s)
    }

    /// The live metrics, shared with the HTTP server.
    pub(crate) fn metrics(&self) -> Arc<std::sync::Mutex<metrics::Metrics>> {
        Arc::clone(&self.metrics)
    }

    /// Folds in every line written since the last look.
    pub(crate) fn refresh_metrics(&mut self) {
        let lines = self.follower.poll();
        if lines.is_empty() {
            return;
        }
        let mut metrics = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        for f in &lines {
            metrics.apply(&f.entry);
        }
        self.metrics_dirty = true;
    }

    /// When a held-back metrics write is due, if one is.
    fn metrics_due(&self) -> Option<Instant> {
        self.ctx.config.metrics_file.as_ref()?;
        if !self.metrics_dirty {
            return None;
        }
        Some(
            self.metrics_written
                .map_or_else(Instant::now, |t| t + METRICS_EVERY),
        )
    }

    /// Replaces `IAPEER_METRICS_FILE` (Prometheus text format) when
    /// something changed, at most once per `METRICS_EVERY` unless `now`
    /// is asked; a held-back change is written when that time comes.
    pub(crate) fn write_metrics(&mut self, now: bool) {
        let Some(path) = self.ctx.config.metrics_file.clone() else {
            return;
        };
        let recent = self
            .metrics_written
            .is_some_and(|t| t.elapsed() < METRICS_EVERY);
        if !(now || self.metrics_dirty && !recent) {
            return;
        }
        let peers: Vec<Peer> = self.peers.values().cloned().collect();
        let text = {
            let metrics = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
            crate::engine::status::prometheus(&self.ctx, &peers, &metrics)
        };
        match fsutil::write_atomic(&path, text.as_bytes()) {
            Ok(()) => {
                self.metrics_written = Some(Instant::now());
                self.metrics_dirty = false;
            }
            Err(e) => tracing::warn!("metrics file: {e}"),
        }
    }

    pub(crate) fn peers(&self) -> usize {
        self.peers.len()
    }

    /// Writes every pool's member definitions where they are missing or
    /// out of date (their changes then arrive as peer events).
    pub(crate) fn sync_pools(&self) {
        let paths = &self.ctx.config.paths;
        match definitions::load_pools(paths) {
            Ok(all) => {
                for pool in all {
                    match pool.and_then(|p| definitions::sync_pool(paths, &p)) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!("wrote {n} pool member definition(s)"),
                        Err(e) => tracing::error!("{e}"),
                    }
                }
            }
            Err(e) => tracing::error!("{e}"),
        }
    }

    /// Re-reads every definition (at start and on SIGHUP). A broken one is
    /// logged once and its last good version kept, as for a single change.
    pub(crate) fn reload_peers(&mut self) -> Result<usize> {
        self.sync_pools();
        let stems: BTreeSet<String> = fsutil::json_files(&self.ctx.config.paths.peers)?
            .into_iter()
            .map(|(stem, _)| stem)
            .collect();
        self.peers.retain(|id, _| stems.contains(id.as_str()));
        self.broken.retain(|stem, _| stems.contains(stem));
        for stem in &stems {
            self.load_peer(stem);
        }
        Ok(self.peers.len())
    }

    /// `peers/<stem>.json` changed: re-read it and look at that identity.
    fn reload_peer(&mut self, stem: &str) {
        if let Some(id) = self.load_peer(stem) {
            self.pass(&id, None);
        }
    }

    /// Reads one definition. A broken one is logged (once per distinct
    /// error) and the last good one kept, so a bad edit never orphans a
    /// running peer. Returns the identity, if the name is one.
    fn load_peer(&mut self, stem: &str) -> Option<Identity> {
        let Ok(id) = Identity::parse(stem) else {
            tracing::warn!("peers/{stem}.json: not a valid peer name; ignored");
            return None;
        };
        match definitions::load_peer(&self.ctx.config.paths, &id) {
            Ok(p) => {
                self.broken.remove(stem);
                // A launch that failed may work with the new definition.
                self.launch_errors.remove(&id);
                if self.backoff.get(&id).is_some_and(|b| !b.crash_loop) {
                    self.backoff.remove(&id);
                }
                self.peers.insert(id.clone(), p);
            }
            Err(Error::NoPeer { .. }) => {
                self.broken.remove(stem);
                self.peers.remove(&id);
            }
            Err(e) => {
                let msg = e.to_string();
                if self.broken.get(stem) != Some(&msg) {
                    tracing::error!("{msg}");
                    self.tick_error(&id, &e);
                    self.broken.insert(stem.to_owned(), msg);
                }
            }
        }
        Some(id)
    }

    /// Looks at every identity: those with a definition and those with
    /// state files.
    pub fn full_pass(&mut self) -> Result<PassStats> {
        let scan = self.ctx.state.scan()?;
        let ids: BTreeSet<Identity> = scan.keys().chain(self.peers.keys()).cloned().collect();
        let mut stats = PassStats::default();
        for id in &ids {
            let present = scan.get(id).copied().unwrap_or_default();
            stats.identities += 1;
            if present.has(markers::Marker::Session) {
                stats.alive += 1;
            }
            if self.pass(id, Some(present)) {
                stats.spawned += 1;
            }
        }
        Ok(stats)
    }

    /// One identity: decide without the lock, act on a worker. Returns true
    /// if a worker was started.
    pub(crate) fn pass(&mut self, id: &Identity, present: Option<Present>) -> bool {
        if self.busy.contains(id) {
            self.again.insert(id.clone());
            return false;
        }
        let now = self.ctx.now();
        let peer = self.peers.get(id);
        let activity = supervise::Activity::Known(self.seen.get(id).copied());
        let supervise::Gathered {
            facts, record: rec, ..
        } = match supervise::gather_pass(&self.ctx, id, peer, present, activity) {
            Ok(g) => g,
            Err(e) => {
                self.tick_error(id, &e);
                return false;
            }
        };
        self.errors.remove(id);
        if facts.session.is_none() {
            self.seen.remove(id);
        }
        match (&facts.session, &rec) {
            (Some(s), Some(r)) if s.is_alive() => {
                if self.watched.get(id) != Some(&r.pane_pid)
                    && self.deaths.watch(id, r.pane_pid, r.pane_start)
                {
                    self.watched.insert(id.clone(), r.pane_pid);
                }
            }
            _ => {
                if self.watched.remove(id).is_some() {
                    self.deaths.forget(id);
                }
            }
        }
        if let Some(at) = pass::revisit_at(&facts, rec.as_ref(), now) {
            self.schedule(id, self.instant_at(at));
        }
        let action = pass::decide(&facts);
        match action {
            PassAction::Nothing => false,
            PassAction::SkipExternal => false,
            PassAction::Launch if self.backed_off(id) => {
                let until = self.backoff[id].until;
                self.schedule(id, until);
                false
            }
            PassAction::CheckBoot => {
                // Look at the screen now and then until the deadline.
                self.schedule(id, Instant::now() + CHECK_BOOT_EVERY);
                self.spawn(id);
                true
            }
            _ => {
                self.spawn(id);
                true
            }
        }
    }

    /// Logs what the daemon skips or sees, when verbose.
    fn verbose(&self) {
        if !self.ctx.config.supervise_log_verbose {
            return;
        }
        for (id, peer) in &self.peers {
            let line = if let Some(sup) = &peer.external_supervisor {
                self.ctx
                    .record(Ev::Supervise)
                    .identity(id)
                    .outcome(Outcome::Skipped)
                    .reason(format!("supervised by {sup}"))
            } else if self.watched.contains_key(id) {
                self.ctx
                    .record(Ev::Supervise)
                    .identity(id)
                    .action(Action::Alive)
            } else {
                continue;
            };
            if let Err(e) = self.ctx.log(&line) {
                tracing::error!("{e}");
            }
        }
    }

    fn spawn(&mut self, id: &Identity) {
        self.busy.insert(id.clone());
        let ctx = Arc::clone(&self.ctx);
        let events = self.events.clone();
        let peer = self.peers.get(id).cloned();
        let launch_allowed = !self.backed_off(id);
        let id = id.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("pass-{id}"))
            .spawn({
                let id = id.clone();
                move || {
                    let outcome = supervise::run_pass(&ctx, &id, peer.as_ref(), launch_allowed);
                    let _ = events.send(Event::Done(id, outcome));
                }
            });
        if let Err(e) = spawned {
            self.busy.remove(&id);
            tracing::error!("cannot start a worker for {id}: {e}");
        }
    }

    /// A worker finished: note refusals and failures, then look again.
    pub(crate) fn done(&mut self, id: &Identity, outcome: Result<PassOutcome>) {
        self.busy.remove(id);
        let now = Instant::now();
        match outcome {
            Err(e) => self.tick_error(id, &e),
            Ok(out) => {
                if out.busy {
                    self.schedule(id, now + BUSY_RETRY);
                }
                if let Some(at) = out.activity {
                    self.seen.insert(id.clone(), at);
                }
                match out.woke {
                    Some(Ok(_)) => {
                        self.backoff.remove(id);
                        self.launch_errors.remove(id);
                    }
                    Some(Err(f)) => {
                        let backoff = match &f.error {
                            Error::Refused(Refusal::CrashLoop { retry_after_ms, .. }) => {
                                Some(Backoff {
                                    until: self.instant_at(*retry_after_ms),
                                    crash_loop: true,
                                })
                            }
                            Error::Refused(Refusal::LockHeld { .. }) => {
                                Some(Backoff::after(BUSY_RETRY))
                            }
                            // Stopped or external: the next file event says when.
                            Error::Refused(_) => None,
                            // A failed launch: again at the next tick.
                            _ => Some(Backoff::after(self.ctx.config.tick)),
                        };
                        if let Some(b) = backoff.filter(|b| b.until > now) {
                            self.backoff.insert(id.clone(), b);
                            self.schedule(id, b.until);
                        }
                        if f.cause.is_none() {
                            // Not a decision, so the wake logged nothing.
                            let e = f.error;
                            log_once(&self.ctx, &mut self.launch_errors, id, &e);
                        } else {
                            tracing::info!("{id}: {}", f.error);
                        }
                    }
                    None => {}
                }
            }
        }
        self.again.remove(id);
        self.pass(id, None);
    }

    fn tick_error(&mut self, id: &Identity, e: &Error) {
        log_once(&self.ctx, &mut self.errors, id, e);
    }

    fn schedule(&mut self, id: &Identity, at: Instant) {
        self.revisit.entry(at).or_default().insert(id.clone());
    }

    /// The monotonic instant of a wall-clock time, as seen now.
    fn instant_at(&self, at: EpochMs) -> Instant {
        let wait = u64::try_from(at.saturating_sub(self.ctx.now())).unwrap_or(0);
        Instant::now()
            .checked_add(Duration::from_millis(wait))
            .unwrap_or_else(|| Instant::now() + FAR)
    }

    /// Whether a launch is held back for this identity now.
    fn backed_off(&self, id: &Identity) -> bool {
        self.backoff
            .get(id)
            .is_some_and(|b| b.until > Instant::now())
    }

    /// A file of this identity changed. A crash-loop backoff is asked of the
    /// guard again: `iapeer reset` (or an edited `.deaths`) lifts it at once.
    fn changed(&mut self, id: &Identity) {
        if !self.backoff.get(id).is_some_and(|b| b.crash_loop) {
            return;
        }
        let policy = crate::engine::wake::guard_policy(&self.ctx);
        match self.ctx.state.deaths(id) {
            Ok(d) => match d.ring.guard(self.ctx.now(), policy) {
                crash_ring::Guard::Allow => {
                    self.backoff.remove(id);
                }
                crash_ring::Guard::Refuse { retry_after_ms, .. } => {
                    let until = self.instant_at(retry_after_ms);
                    self.backoff.insert(
                        id.clone(),
                        Backoff {
                            until,
                            crash_loop: true,
                        },
                    );
                }
            },
            // Let a worker meet it and report it.
            Err(_) => {
                self.backoff.remove(id);
            }
        }
    }

    /// When the loop must wake up next for a scheduled look.
    fn next_revisit(&self) -> Option<Instant> {
        self.revisit.keys().next().copied()
    }

    fn due(&mut self, now: Instant) -> BTreeSet<Identity> {
        // Everything at or before `now`.
        let later = self.revisit.split_off(&(now + Duration::from_nanos(1)));
        let due = std::mem::replace(&mut self.revisit, later);
        due.into_values().flatten().collect()
    }

    /// Live sessions, for the status line.
    pub(crate) fn alive(&self) -> usize {
        self.watched.len()
    }

    /// Finds tmux sessions with no record (a wake killed between launch and
    /// its first write) and settles them: adopted if alive, a failed boot if
    /// not.
    fn adopt_orphans(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.ctx.config.paths.run) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".sock")) else {
                continue;
            };
            let Ok(id) = Identity::parse(stem) else {
                continue;
            };
            // A socket under a name we do not define is someone else's.
            if !self.peers.contains_key(&id) {
                continue;
            }
            if self
                .ctx
                .state
                .exists(&id, markers::Marker::Session)
                .unwrap_or(true)
            {
                continue;
            }
            let Ok(Some(_lock)) = self.ctx.state.try_lock(&id) else {
                continue;
            };
            if let Err(e) = crate::engine::ending::settle(&self.ctx, &id, self.peers.get(&id)) {
                self.tick_error(&id, &e);
            }
        }
    }

    /// Logs each live session found at start: the daemon now watches it.
    fn adopt_recorded(&mut self) {
        let Ok(scan) = self.ctx.state.scan() else {
            return;
        };
        for (id, present) in scan {
            if !present.has(markers::Marker::Session) {
                continue;
            }
            // A session still booting under its launcher's lock is that
            // launcher's, not ours to announce.
            let Ok(Some(_lock)) = self.ctx.state.try_lock(&id) else {
                continue;
            };
            let Ok(Some(rec)) = self.ctx.state.session(&id) else {
                continue;
            };
            if rec.ending.is_none()
                && rec.is_ready()
                && crate::os::process::liveness(rec.pane_pid, rec.pane_start) == Liveness::Alive
            {
                let line = self
                    .ctx
                    .record(Ev::Daemon)
                    .identity(&id)
                    .action(Action::Adopted)
                    .session(&rec.session)
                    .reason(format!(
                        "live session found at start (pid {})",
                        rec.pane_pid
                    ));
                if let Err(e) = self.ctx.log(&line) {
                    tracing::error!("{e}");
                }
            }
        }
    }
}

/// `iapeer daemon`: runs until SIGTERM/SIGINT; returns the exit code.
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
    let http = crate::http::settings(&config, allow_remote)?;
    let _lock = lock::acquire(&config.paths.daemon_lock())?;
    let _diagnostics = crate::diagnostics::init_daemon(verbose, &config)?;
    // A full disk must fail a write (EFBIG), not kill the daemon.
    // SAFETY: ignoring a signal installs no handler.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGXFSZ,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
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
    let notifier = Notifier::from_env();

    let mut banner = format!(
        "iapeer {} daemon, pid {}, {} peer(s), tick {}s, home {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        sup.peers(),
        ctx.config.tick.as_secs_f64(),
        ctx.config.home.display()
    );
    if let Some(settings) = http {
        let addr = crate::http::start(Arc::clone(&ctx), sup.metrics(), logged, settings)?;
        banner.push_str(&format!(", dashboard http://{addr}/"));
        eprintln!("iapeer daemon: dashboard on http://{addr}/");
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

/// Logs a `tick-error` unless it is the one last logged for `id` in `seen`.
fn log_once(ctx: &Ctx, seen: &mut HashMap<Identity, String>, id: &Identity, e: &Error) {
    let msg = e.to_string();
    if seen.get(id) == Some(&msg) {
        return;
    }
    tracing::warn!("{id}: {msg}");
    let line = ctx
        .record(Ev::Supervise)
        .identity(id)
        .action(Action::TickError)
        .error(&msg);
    if let Err(e) = ctx.log(&line) {
        tracing::error!("{e}");
    }
    seen.insert(id.clone(), msg);
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
                Event::Signal(Sig::Stop) => return,
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
                Event::Done(id, outcome) => sup.done(&id, outcome),
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
        if let (Some(every), Some(at)) = (watchdog_every, next_watchdog) {
            if Instant::now() >= at {
                notifier.watchdog();
                next_watchdog = Some(Instant::now() + every);
            }
        }
    }
}
