//! The loop's state: which identities are watched, scheduled, backing off
//! or being acted on, and the metrics folded from the log. A pass over an
//! identity is decided here and carried out on a worker thread under its
//! wake lock; everything kept is a cache or a schedule, the truth is on disk.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::backoff;
use crate::core::backoff::Failing;
use crate::core::clock::EpochMs;
use crate::core::crash_ring;
use crate::core::error::{Error, Refusal, Result};
use crate::core::identity::Identity;
use crate::core::metrics;
use crate::core::pass;
use crate::core::pass::PassAction;
use crate::core::peer::Peer;
use crate::core::session::{Liveness, SessionRecord};
use crate::core::vocab::{Action, Ev, Outcome};
use crate::engine::ctx::Ctx;
use crate::engine::supervise;
use crate::engine::supervise::PassOutcome;
use crate::store::definitions;
use crate::store::fsutil;
use crate::store::log;
use crate::store::markers;
use crate::store::markers::Present;

use super::activity;
use super::deaths::{DeathWatch, Watch};
use super::hooks::{Hooks, Notice};
use super::Event;

/// How long a worker that found the lock held waits before looking again
/// (the holder's own writes usually bring us back sooner).
const BUSY_RETRY: Duration = Duration::from_millis(250);
/// Automatic launches under way at once, at most. Each boots a runtime
/// (Node, for the CLIs) that wants a core for seconds: a daemon bringing
/// thirty peers back after a restart would otherwise start them all at
/// once, and boots that starve each other time out and count as deaths.
/// The rest wait their turn, first come first served.
const MAX_LAUNCHING: usize = 4;
/// How often a session left starting by a dead waker has its screen read.
const CHECK_BOOT_EVERY: Duration = Duration::from_secs(1);
/// Stands in for "never" where an instant must be given.
const FAR: Duration = Duration::from_secs(365 * 86_400);
/// Log lines folded into the metrics at a time.
const FOLD_BATCH: usize = 4096;
/// The metrics file is rewritten at most this often (and on every tick).
const METRICS_EVERY: Duration = Duration::from_secs(1);

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
    /// Deaths and refusals in a row per identity, for the relaunch
    /// back-off and the give-up (DESIGN §5). Kept in memory: a restarted
    /// daemon starts each streak again, the crash-loop guard on disk
    /// still holding.
    streaks: HashMap<Identity, backoff::Streak>,
    /// Sessions a usage limit holds: not parked for idleness before then.
    held: HashMap<Identity, Instant>,
    /// The next look due per identity: one entry each, the earliest asked
    /// for (the pass it brings asks again for any later one), so the
    /// schedule is as large as the fleet, however many passes are made.
    revisit: BTreeSet<(Instant, Identity)>,
    revisit_at: HashMap<Identity, Instant>,
    /// The latest activity a worker measured precisely (transcripts, tmux)
    /// per live identity. The loop itself reads only the session record,
    /// so a slow probe never holds it up.
    seen: HashMap<Identity, EpochMs>,
    /// Session pids registered with the death watch.
    watched: HashMap<Identity, i32>,
    /// Per identity, the pass that keeps failing (retried with growing
    /// delay, its error logged once and then counted), and the last error
    /// of a launch that failed before deciding anything (a broken
    /// definition, say).
    errors: HashMap<Identity, (Failing, Instant)>,
    launch_errors: HashMap<Identity, String>,
    /// Automatic launches refused in a row for a reason that lasts.
    refused_launches: HashMap<Identity, u32>,
    /// Workers started to launch, at most [`MAX_LAUNCHING`].
    launching: HashSet<Identity>,
    /// Launches waiting for one of those to end, in the order asked.
    awaiting_launch: std::collections::VecDeque<Identity>,
    deaths: DeathWatch,
    /// Counters folded from the log: from the checkpoint (or the start of
    /// the retained log) at start, then followed, so CLI processes' lines
    /// count as well as ours.
    metrics: Arc<std::sync::Mutex<metrics::Metrics>>,
    /// The last line about each identity, kept in the checkpoint with them.
    last: BTreeMap<String, metrics::LastLine>,
    follower: log::Follower,
    /// The fold of a long log without a checkpoint, under way on its own
    /// thread: what it sends is installed by `refresh_metrics`.
    rebuilding: Option<Receiver<(metrics::Folded, log::Follower)>>,
    /// `IAPEER_METRICS_FILE` and `state/metrics.json`, each rewritten at
    /// most once per `METRICS_EVERY`.
    metrics_file: Rewrite,
    checkpoint: Rewrite,
    /// The state directory was replaced under the daemon: it acts no more.
    state_replaced: bool,
    state_checked: Option<Instant>,
    /// The live, ready sessions, for the activity reader.
    sessions: activity::Sessions,
    hooks: Hooks,
}

/// A file rewritten when something changed, at most once per
/// `METRICS_EVERY`, whether the last try worked or not: a write that keeps
/// failing (a full disk, out of descriptors) is retried at that pace and
/// its error logged once, never in a loop.
#[derive(Debug)]
struct Rewrite {
    dirty: bool,
    tried: Option<Instant>,
    failing: Option<String>,
}

impl Default for Rewrite {
    fn default() -> Self {
        Rewrite {
            dirty: true,
            tried: None,
            failing: None,
        }
    }
}

impl Rewrite {
    /// Whether a write may be tried now (`now`: asked for at once).
    fn may(&self, now: bool) -> bool {
        now || self.tried.is_none_or(|t| t.elapsed() >= METRICS_EVERY)
    }

    /// When a held-back write is due, if one is.
    fn due(&self) -> Option<Instant> {
        self.dirty
            .then(|| self.tried.map_or_else(Instant::now, |t| t + METRICS_EVERY))
    }

    fn tried(&mut self, what: &str, result: Result<()>) {
        self.tried = Some(Instant::now());
        match result {
            Ok(()) => {
                self.dirty = false;
                if self.failing.take().is_some() {
                    tracing::info!("{what}: written again");
                }
            }
            Err(e) => {
                let e = e.to_string();
                if self.failing.as_ref() != Some(&e) {
                    tracing::warn!("{what}: {e}; retried every {}s", METRICS_EVERY.as_secs());
                    self.failing = Some(e);
                }
            }
        }
    }
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
        let (mut folded, mut follower, from_checkpoint) =
            log::checkpoint::begin(&log, &ctx.config.paths.metrics_checkpoint(), None);
        // Without a checkpoint, a long retained log is folded on a thread
        // of its own: the daemon supervises at once, and serves its
        // counters once they are whole.
        let retained: u64 = log::log_files(&log)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        let (folded, follower, rebuilding) = if from_checkpoint || retained <= FOLD_INLINE_BYTES {
            log::checkpoint::fold_rest(&mut folded, &mut follower);
            release_heap();
            (folded, follower, None)
        } else {
            let done = rebuild(folded, follower, events.clone())?;
            let mut empty = metrics::Folded::default();
            empty.metrics.rebuilding = true;
            (empty, log::Follower::at_end(&log), Some(done))
        };
        let deaths = DeathWatch::start(events.clone()).map_err(|e| {
            Error::failed(
                "death watch",
                e.to_string(),
                "check the system's thread limits",
            )
        })?;
        let ctx_config = ctx.config.clone();
        let mut s = Supervisor {
            ctx,
            events,
            peers: BTreeMap::new(),
            broken: BTreeMap::new(),
            busy: HashSet::new(),
            again: HashSet::new(),
            backoff: HashMap::new(),
            streaks: HashMap::new(),
            held: HashMap::new(),
            revisit: BTreeSet::new(),
            revisit_at: HashMap::new(),
            seen: HashMap::new(),
            watched: HashMap::new(),
            errors: HashMap::new(),
            launch_errors: HashMap::new(),
            refused_launches: HashMap::new(),
            launching: HashSet::new(),
            awaiting_launch: std::collections::VecDeque::new(),
            deaths,
            metrics: Arc::new(std::sync::Mutex::new(folded.metrics)),
            last: folded.last,
            follower,
            rebuilding,
            metrics_file: Rewrite::default(),
            checkpoint: Rewrite::default(),
            state_replaced: false,
            state_checked: None,
            sessions: activity::Sessions::default(),
            hooks: Hooks::new(&ctx_config),
        };
        s.reload_peers()?;
        s.refresh_metrics();
        Ok(s)
    }

    /// The activity reader, fed by this supervisor's passes.
    pub(crate) fn activity_reader(&self) -> activity::Reader {
        activity::Reader::new(
            Arc::clone(&self.ctx),
            Arc::clone(&self.sessions),
            self.metrics(),
            self.hooks.clone(),
        )
    }

    /// Hands the activity reader the session as this pass read it: a live,
    /// ready session of a defined peer, or nothing.
    fn share_session(&self, id: &Identity, rec: Option<&SessionRecord>, readable: bool) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match (rec, self.peers.get(id)) {
            (Some(rec), Some(peer)) if readable => {
                let same = sessions
                    .get(id)
                    .is_some_and(|l| l.rec == *rec && l.peer == *peer);
                if !same {
                    let live = activity::Live {
                        peer: peer.clone(),
                        rec: rec.clone(),
                    };
                    sessions.insert(id.clone(), Arc::new(live));
                }
            }
            _ => {
                sessions.remove(id);
            }
        }
    }

    /// The live metrics, shared with the HTTP server.
    pub(crate) fn metrics(&self) -> Arc<std::sync::Mutex<metrics::Metrics>> {
        Arc::clone(&self.metrics)
    }

    /// Folds in every line written since the last look; while a rebuild
    /// is under way, installs it once it is done.
    pub(crate) fn refresh_metrics(&mut self) {
        if let Some(done) = &self.rebuilding {
            let (folded, follower) = match done.try_recv() {
                Ok(rebuilt) => rebuilt,
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    // Its thread died: fold here, as a start without a
                    // thread would have.
                    tracing::error!("the metrics rebuild ended early; folding the log again here");
                    log::checkpoint::fold(
                        &self.ctx.config.paths.lifecycle_log,
                        &self.ctx.config.paths.metrics_checkpoint(),
                    )
                }
            };
            self.rebuilding = None;
            *self.metrics.lock().unwrap_or_else(|p| p.into_inner()) = folded.metrics;
            self.last = folded.last;
            self.follower = follower;
            self.metrics_file.dirty = true;
            self.checkpoint.dirty = true;
            release_heap();
            tracing::info!("metrics rebuilt from the log");
        }
        // In batches, so a burst (or a long history) is folded in bounded
        // memory.
        loop {
            let lines = self.follower.poll_at_most(FOLD_BATCH);
            if lines.is_empty() {
                return;
            }
            self.fold_lines(&lines);
        }
    }

    fn fold_lines(&mut self, lines: &[log::Followed]) {
        {
            let mut metrics = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
            for f in lines {
                metrics.apply(&f.entry);
                metrics::note_last(&mut self.last, &f.entry);
            }
        }
        self.metrics_file.dirty = true;
        self.checkpoint.dirty = true;
        // An operator's `reset` or `start` (or a new definition) starts a
        // peer's streak again: its next relaunch waits for nothing.
        for f in lines {
            let e = &f.entry;
            if !matches!(e.ev(), Some(Ev::Reset | Ev::Start)) {
                continue;
            }
            let Some(id) = e.identity().and_then(|i| Identity::parse(i).ok()) else {
                continue;
            };
            let refused = self.refused_launches.remove(&id).is_some();
            if self.streaks.remove(&id).is_some() || refused {
                if self.backoff.get(&id).is_some_and(|b| !b.crash_loop) {
                    self.backoff.remove(&id);
                }
                self.schedule(&id, Instant::now());
            }
        }
    }

    /// Writes the metrics checkpoint (counters and the log position they
    /// cover, in one atomic write) when something changed, at most once
    /// per `METRICS_EVERY` unless `now` is asked.
    pub(crate) fn write_checkpoint(&mut self, now: bool) {
        if self.rebuilding.is_some() || !self.checkpoint.dirty || !self.checkpoint.may(now) {
            return;
        }
        let Some(position) = self.follower.position() else {
            return;
        };
        let folded = metrics::Folded {
            metrics: self
                .metrics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            last: self.last.clone(),
        };
        let path = self.ctx.config.paths.metrics_checkpoint();
        let saved = log::checkpoint::save(&path, position, &folded);
        self.checkpoint.tried("metrics checkpoint", saved);
    }

    /// When a held-back checkpoint write is due, if one is.
    pub(super) fn checkpoint_due(&self) -> Option<Instant> {
        self.checkpoint.due()
    }

    /// When a held-back metrics write is due, if one is.
    pub(super) fn metrics_due(&self) -> Option<Instant> {
        self.ctx.config.metrics_file.as_ref()?;
        self.metrics_file.due()
    }

    /// Replaces `IAPEER_METRICS_FILE` (Prometheus text format) when
    /// something changed, at most once per `METRICS_EVERY` unless `now`
    /// is asked; a held-back change is written when that time comes.
    pub(crate) fn write_metrics(&mut self, now: bool) {
        let Some(path) = self.ctx.config.metrics_file.clone() else {
            return;
        };
        if self.rebuilding.is_some()
            || !(now || self.metrics_file.dirty && self.metrics_file.may(false))
        {
            return;
        }
        let peers: Vec<Peer> = self.peers.values().cloned().collect();
        let text = {
            let metrics = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
            crate::engine::status::prometheus(&self.ctx, &peers, &metrics)
        };
        let written = fsutil::write_atomic(&path, text.as_bytes());
        self.metrics_file.tried("metrics file", written);
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
    pub(super) fn reload_peer(&mut self, stem: &str) {
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
                self.refused_launches.remove(&id);
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
        self.state_current()?;
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

    /// Whether the state directory is still the one the daemon holds:
    /// acting through a replaced one would split the truth in two. Said
    /// once, in the log.
    fn state_current(&mut self) -> Result<()> {
        match self.ctx.state.is_current() {
            Ok(()) => {
                self.state_checked = Some(Instant::now());
                Ok(())
            }
            Err(e) => {
                if !self.state_replaced {
                    self.state_replaced = true;
                    tracing::error!("{e}");
                    let line = self
                        .ctx
                        .record(Ev::Daemon)
                        .action(Action::TickError)
                        .error(&e);
                    if let Err(e) = self.ctx.log(&line) {
                        tracing::error!("{e}");
                    }
                }
                Err(e)
            }
        }
    }

    /// One identity: decide without the lock, act on a worker. Returns true
    /// if a worker was started.
    pub(crate) fn pass(&mut self, id: &Identity, present: Option<Present>) -> bool {
        // Looked at once a second at most: two stats, not two per peer.
        let stale = self
            .state_checked
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if self.state_replaced || (stale && self.state_current().is_err()) {
            return false;
        }
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
        if facts.session.is_none() {
            self.seen.remove(id);
            self.ctx.forget_since(id);
            // A hold was about the session that ended.
            self.held.remove(id);
        }
        let settings = self.ctx.config.backoff();
        if let Some(streak) = self.streaks.get_mut(id) {
            if let Some(s) = facts.session.as_ref().filter(|s| s.is_alive() && s.ready) {
                streak.up_for(s.age_ms, &settings);
            }
            if !facts.failed && streak.gave_up(&settings) {
                // `.failed` is gone (`reset`, `start`): a new start.
                *streak = backoff::Streak::default();
            }
            if *streak == backoff::Streak::default() {
                self.streaks.remove(id);
            }
        }
        let readable = facts
            .session
            .as_ref()
            .is_some_and(|s| s.is_alive() && s.ready);
        self.share_session(id, rec.as_ref(), readable);
        match (&facts.session, &rec) {
            (Some(s), Some(r)) if s.is_alive() => {
                // Gone: this pass finds the death. Later: not a death,
                // asked again on the next pass.
                if self.watched.get(id) != Some(&r.pane_pid)
                    && self.deaths.watch(id, r.pane_pid, r.pane_start) == Watch::Watching
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
        if let Some(at) = pass::revisit_at(&facts, now) {
            self.schedule(id, self.instant_at(at));
        }
        let action = pass::decide(&facts);
        if matches!(
            action,
            PassAction::Park(Action::ReapedIdle | Action::ReapedMaxAge)
        ) {
            if let Some(until) = self.held.get(id).copied().filter(|u| *u > Instant::now()) {
                // Its usage limit, or a turn not over yet, holds it:
                // looked at again then.
                self.schedule(id, until);
                return false;
            }
        }
        if matches!(action, PassAction::Nothing | PassAction::SkipExternal) {
            // Nothing left to do: whatever failed before is over.
            self.recovered(id);
            self.refused_launches.remove(id);
        } else if let Some(until) = self
            .errors
            .get(id)
            .map(|f| f.1)
            .filter(|u| *u > Instant::now())
        {
            // It failed a moment ago: retried when its delay is up.
            self.schedule(id, until);
            return false;
        }
        match action {
            PassAction::Nothing => false,
            PassAction::SkipExternal => false,
            PassAction::Launch if self.backed_off(id) => {
                let until = self.backoff[id].until;
                self.schedule(id, until);
                false
            }
            PassAction::Launch if self.launching.len() >= MAX_LAUNCHING => {
                if !self.awaiting_launch.contains(id) {
                    tracing::debug!("{id}: {MAX_LAUNCHING} launches under way; waiting its turn");
                    self.awaiting_launch.push_back(id.clone());
                }
                false
            }
            PassAction::Launch => {
                self.awaiting_launch.retain(|a| a != id);
                self.launching.insert(id.clone());
                self.spawn(id);
                true
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
    pub(super) fn verbose(&self) {
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
        // Only a worker given a launch slot launches: one that settles an
        // end first (a host restart, say) stops there, and the pass that
        // follows it asks for a slot like any other.
        let launch_allowed = !self.backed_off(id) && self.launching.contains(id);
        let id = id.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("pass-{id}"))
            .spawn({
                let id = id.clone();
                move || {
                    // A pass that panics (a bug) must still say it ended:
                    // its identity would stay busy, and its slot taken.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        supervise::run_pass(&ctx, &id, peer.as_ref(), launch_allowed)
                    }))
                    .unwrap_or_else(|panic| {
                        let what = crate::core::error::panic_message(&*panic);
                        Err(Error::failed(
                            format!("the pass over {id}"),
                            format!("it failed ({what})"),
                            "this is a bug; the pass is tried again later",
                        ))
                    });
                    let _ = events.send(Event::Done(id, Box::new(outcome)));
                }
            });
        if let Err(e) = spawned {
            self.busy.remove(&id);
            if self.launching.remove(&id) {
                self.next_launches();
            }
            tracing::error!("cannot start a worker for {id}: {e}");
        }
    }

    /// A worker finished: note refusals and failures, then look again
    /// (unless another process holds its lock: then when the retry is
    /// due, or the other's next change says).
    pub(crate) fn done(&mut self, id: &Identity, outcome: Result<PassOutcome>) {
        self.busy.remove(id);
        let launched = self.launching.remove(id);
        let now = Instant::now();
        let held_elsewhere = matches!(&outcome, Ok(out) if out.busy);
        match outcome {
            Err(e) => self.tick_error(id, &e),
            Ok(out) => {
                self.recovered(id);
                if out.busy {
                    self.schedule(id, now + BUSY_RETRY);
                }
                if let Some(at) = out.activity {
                    self.seen.insert(id.clone(), at);
                }
                match out.held_until {
                    Some(at) => {
                        // Looked at again when it lifts, and now and then
                        // before (a person may answer it meanwhile).
                        let until = self
                            .instant_at(at)
                            .min(now + self.ctx.config.tick.max(Duration::from_secs(60)));
                        self.held.insert(id.clone(), until);
                        self.schedule(id, until);
                    }
                    None => {
                        self.held.remove(id);
                    }
                }
                if let Some(again) = out.redispatch {
                    // On a thread of its own: it may wake a member.
                    let ctx = Arc::clone(&self.ctx);
                    let from = id.clone();
                    let spawned = std::thread::Builder::new()
                        .name(format!("redispatch-{id}"))
                        .spawn(move || {
                            crate::engine::dispatch::redispatch(
                                &ctx,
                                &from,
                                &again.pool,
                                &again.task,
                                again.topic.as_deref(),
                            )
                        });
                    if let Err(e) = spawned {
                        tracing::error!("{id}: cannot dispatch its task again: {e}");
                    }
                }
                if let Some(d) = out.died.filter(|d| d.relaunch) {
                    self.died(id, d.at_ms, d.uptime_ms);
                }
                match out.woke {
                    Some(Ok(_)) => {
                        self.backoff.remove(id);
                        self.launch_errors.remove(id);
                        self.refused_launches.remove(id);
                        if let Some(streak) = self.streaks.get_mut(id) {
                            streak.launched();
                        }
                    }
                    Some(Err(f)) if f.died => {
                        // A boot that failed: launched, and dead at once.
                        self.streaks.entry(id.clone()).or_default().launched();
                        self.died(id, self.ctx.now(), 0);
                        tracing::info!("{id}: {}", f.error);
                    }
                    Some(Err(f)) => {
                        let backoff = match &f.error {
                            Error::Refused(Refusal::CrashLoop { retry_after_ms, .. }) => {
                                let settings = self.ctx.config.backoff();
                                let streak = self.streaks.entry(id.clone()).or_default();
                                match streak.refused(&settings) {
                                    backoff::AfterRefusal::GiveUp => {
                                        self.give_up(id);
                                        None
                                    }
                                    backoff::AfterRefusal::Wait => Some(Backoff {
                                        until: self.instant_at(*retry_after_ms),
                                        crash_loop: true,
                                    }),
                                }
                            }
                            Error::Refused(Refusal::LockHeld { .. }) => {
                                Some(Backoff::after(BUSY_RETRY))
                            }
                            // Stopped or external: the next file event says when.
                            Error::Refused(_) => None,
                            // A failed launch: again at the next tick,
                            // then less and less often while it fails.
                            _ => {
                                let n = self.refused_launches.entry(id.clone()).or_default();
                                *n = n.saturating_add(1);
                                let tick = self.ctx.config.tick.as_millis() as i64;
                                let settings = self.ctx.config.backoff();
                                let wait = backoff::after_refused_launch_ms(tick, *n, &settings);
                                Some(Backoff::after(Duration::from_millis(wait as u64)))
                            }
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
        // Looking again now would find the lock held again, and again, for
        // as long as the other holds it (a worker a millisecond, on the
        // cores the wake needs).
        if !held_elsewhere {
            self.pass(id, None);
        }
        if launched {
            self.next_launches();
        }
    }

    /// A launch slot came free: the launches waiting for one are looked
    /// at again, oldest first, while slots are free (one that no longer
    /// needs a launch just leaves the line).
    fn next_launches(&mut self) {
        while self.launching.len() < MAX_LAUNCHING {
            let Some(next) = self.awaiting_launch.pop_front() else {
                break;
            };
            self.pass(&next, None);
        }
    }

    /// A death was recorded: the next automatic relaunch waits for the
    /// back-off (DESIGN §5).
    fn died(&mut self, id: &Identity, at_ms: EpochMs, uptime_ms: i64) {
        let settings = self.ctx.config.backoff();
        let streak = self.streaks.entry(id.clone()).or_default();
        streak.died(at_ms, uptime_ms, &settings);
        if streak.gave_up(&settings) {
            self.give_up(id);
            return;
        }
        let at = streak.relaunch_at(self.ctx.now(), &settings);
        let until = self.instant_at(at);
        // The guard's own wait, if longer, stays.
        if self.backoff.get(id).is_none_or(|b| b.until < until) {
            self.backoff.insert(
                id.clone(),
                Backoff {
                    until,
                    crash_loop: false,
                },
            );
        }
        self.schedule(id, until);
    }

    /// The guard refused window after window: write `.failed` and log it;
    /// no automatic relaunch until `reset` or `start`.
    fn give_up(&mut self, id: &Identity) {
        let streak = self.streaks.get(id).copied().unwrap_or_default();
        match crate::engine::ending::give_up(&self.ctx, id, streak.refusals, streak.deaths) {
            Ok(why) => self.hooks.fire(Notice {
                peer: id.clone(),
                state: "failed".into(),
                previous: "crash-looping".into(),
                since: crate::core::clock::format_ms(self.ctx.now()),
                why: format!("{id} failed: {why}"),
                session: None,
            }),
            Err(e) => self.tick_error(id, &e),
        }
        self.backoff.remove(id);
    }

    /// A pass over `id` failed: logged once per distinct error (then
    /// counted), and not retried before its growing delay is up.
    fn tick_error(&mut self, id: &Identity, e: &Error) {
        let msg = e.to_string();
        let settings = self.ctx.config.backoff();
        let now = self.ctx.now();
        let entry = self
            .errors
            .entry(id.clone())
            .or_insert_with(|| (Failing::default(), Instant::now()));
        let report = entry.0.failed(&msg, now, &settings);
        let until = Instant::now() + Duration::from_millis(report.retry_in_ms.max(0) as u64);
        entry.1 = until;
        if report.log {
            tracing::warn!("{id}: {msg}");
            let mut line = self
                .ctx
                .record(Ev::Supervise)
                .identity(id)
                .action(Action::TickError)
                .error(&msg);
            line.repeats = report.repeats;
            if let Err(e) = self.ctx.log(&line) {
                tracing::error!("{e}");
            }
        }
        self.schedule(id, until);
    }

    /// A pass over `id` went through: its failing run, if any, is over.
    fn recovered(&mut self, id: &Identity) {
        if let Some((f, _)) = self.errors.remove(id) {
            if f.unlogged() > 0 {
                tracing::info!(
                    "{id}: recovered; the last error recurred {} more time(s)",
                    f.unlogged()
                );
            }
        }
    }

    fn schedule(&mut self, id: &Identity, at: Instant) {
        if let Some(&old) = self.revisit_at.get(id) {
            if old <= at {
                return;
            }
            self.revisit.remove(&(old, id.clone()));
        }
        self.revisit.insert((at, id.clone()));
        self.revisit_at.insert(id.clone(), at);
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
    pub(super) fn changed(&mut self, id: &Identity) {
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
    pub(super) fn next_revisit(&self) -> Option<Instant> {
        self.revisit.first().map(|(at, _)| *at)
    }

    pub(super) fn due(&mut self, now: Instant) -> BTreeSet<Identity> {
        // Everything at or before `now`.
        let mut due = BTreeSet::new();
        while let Some((at, _)) = self.revisit.first() {
            if *at > now {
                break;
            }
            let (_, id) = self.revisit.pop_first().expect("looked at");
            self.revisit_at.remove(&id);
            due.insert(id);
        }
        due
    }

    /// Live sessions, for the status line.
    pub(crate) fn alive(&self) -> usize {
        self.watched.len()
    }

    /// Finds tmux sessions with no record (a wake killed between launch and
    /// its first write) and settles them: adopted if alive, a failed boot if
    /// not.
    pub(super) fn adopt_orphans(&mut self) {
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
    pub(super) fn adopt_recorded(&mut self) {
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

/// A retained log larger than this, with no checkpoint, is folded on a
/// thread of its own (about a second's folding on a small machine).
const FOLD_INLINE_BYTES: u64 = 16 << 20;

/// Folds the rest of the log on a thread of its own; what it sends once
/// done, it also announces as a log change, so the loop installs it.
fn rebuild(
    mut folded: metrics::Folded,
    mut follower: log::Follower,
    events: Sender<Event>,
) -> Result<Receiver<(metrics::Folded, log::Follower)>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("metrics-rebuild".into())
        .spawn(move || {
            let began = Instant::now();
            log::checkpoint::fold_rest(&mut folded, &mut follower);
            tracing::info!(
                "folded the retained log into the metrics in {} ms",
                began.elapsed().as_millis()
            );
            if tx.send((folded, follower)).is_ok() {
                let _ = events.send(Event::Logged);
            }
        })
        .map_err(|e| {
            Error::failed(
                "metrics rebuild",
                e.to_string(),
                "check the system's thread limits",
            )
        })?;
    Ok(rx)
}

/// A long history went through the allocator in batches: hand what it
/// keeps back to the system.
fn release_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
