//! The activity reader (DESIGN §12): a thread of the daemon that reads,
//! every second, what each live session is doing, logs each change of
//! state (`ev=activity`) and tells the operator's hook. It works from the
//! sessions the supervisor hands it, so it reads no state directory of its
//! own, and it never acts on a session: what it learns reaches the rest of
//! the daemon, `status` and the dashboard through the log, like any other
//! line.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::core::activity::{State, Tracked, Transition};
use crate::core::clock;
use crate::core::identity::Identity;
use crate::core::metrics::Metrics;
use crate::core::peer::{OnStuck, Peer, RuntimeKind};
use crate::core::session::SessionRecord;
use crate::core::vocab::{Ev, Outcome};
use crate::daemon::hooks::{Hooks, Notice};
use crate::engine::activity::Watch;
use crate::engine::ctx::Ctx;
use crate::engine::queue::Next;
use crate::store::queue::Queues;

/// How often every live session is read.
pub(crate) const EVERY: Duration = Duration::from_secs(1);
/// A state counts once it has been read this long with no other between.
pub(crate) const DEBOUNCE_MS: i64 = 2000;

/// A live, ready session, as the supervisor last read it.
#[derive(Debug)]
pub(crate) struct Live {
    pub peer: Peer,
    pub rec: SessionRecord,
}

/// The sessions to read, kept by the supervisor.
pub(crate) type Sessions = Arc<Mutex<HashMap<Identity, Arc<Live>>>>;

/// After a delivery, the next waits at least this long: the turn it
/// started must show in the runtime's record first (DESIGN §13: one task
/// per turn).
const AFTER_DELIVERY: Duration = Duration::from_secs(2);
/// After a delivery failed, or found only files that cannot be tasks, the
/// next try waits this long.
const AFTER_FAILURE: Duration = Duration::from_secs(30);

/// A delivery that ended: whose, in which session, and how.
type Delivered = (Identity, String, crate::core::error::Result<Next>);

/// The reader's state: one watch per session it follows, and the queued
/// deliveries it started.
pub(crate) struct Reader {
    ctx: Arc<Ctx>,
    sessions: Sessions,
    metrics: Arc<Mutex<Metrics>>,
    hooks: Hooks,
    watches: HashMap<Identity, Watch>,
    queues: Queues,
    /// Deliveries running now, on threads of their own.
    delivering: HashSet<Identity>,
    ended: (Sender<Delivered>, Receiver<Delivered>),
    /// No delivery to this identity before then.
    not_before: HashMap<Identity, Instant>,
    /// A delivery to this session was not confirmed: its queue waits for
    /// its next session rather than typing the task again.
    unconfirmed: HashMap<Identity, String>,
}

impl Reader {
    pub(crate) fn new(
        ctx: Arc<Ctx>,
        sessions: Sessions,
        metrics: Arc<Mutex<Metrics>>,
        hooks: Hooks,
    ) -> Self {
        Reader {
            queues: Queues::new(&ctx.config.paths.state),
            ctx,
            sessions,
            metrics,
            hooks,
            watches: HashMap::new(),
            delivering: HashSet::new(),
            ended: mpsc::channel(),
            not_before: HashMap::new(),
            unconfirmed: HashMap::new(),
        }
    }

    /// Runs the reader on a thread of its own, for the life of the daemon.
    pub(crate) fn start(mut self) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("activity".into())
            .spawn(move || loop {
                let began = Instant::now();
                // A round that panics (a bug, or a file iapeer could not
                // foresee) must not end the reading for good, unseen: it
                // is said, the watches are dropped, and reading goes on.
                let round = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.round()));
                if let Err(panic) = round {
                    let what = crate::core::error::panic_message(&*panic);
                    tracing::error!("activity reader: a round failed ({what}); reading on");
                    self.watches.clear();
                }
                std::thread::sleep(EVERY.saturating_sub(began.elapsed()));
            })
            .map(|_| ())
    }

    /// Reads every live session once.
    pub(crate) fn round(&mut self) {
        let live: Vec<(Identity, Arc<Live>)> = {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions
                .iter()
                .map(|(id, l)| (id.clone(), Arc::clone(l)))
                .collect()
        };
        let current: HashMap<&Identity, &str> = live
            .iter()
            .map(|(id, l)| (id, l.rec.session.as_str()))
            .collect();
        // A session that ended takes its watch with it.
        self.watches
            .retain(|id, w| current.get(id).is_some_and(|s| *s == w.session));
        let stuck_ms = i64::try_from(self.ctx.config.stuck.as_millis()).unwrap_or(i64::MAX);
        for (id, l) in &live {
            if !self.watches.contains_key(id) {
                let tracked = self.known(id, &l.rec.session);
                let watch = Watch::new(&self.ctx, &l.peer, &l.rec.session, tracked);
                self.watches.insert(id.clone(), watch);
            }
            let watch = self.watches.get_mut(id).expect("inserted above");
            let read = watch.read(&self.ctx, &l.peer, &l.rec, stuck_ms);
            let change = watch.tracked.observe(read, self.ctx.now(), DEBOUNCE_MS);
            // A `shell` peer has no turn to wait for: ready is ready for
            // its queue, a task every `AFTER_DELIVERY`.
            let idle = (watch.tracked.state == State::Idle && watch.tracked.pending.is_none())
                || l.peer.runtime == RuntimeKind::Shell;
            if let Some(t) = change {
                self.changed(id, l, &t);
            }
            if idle {
                self.deliver_queued(id, l);
            }
        }
        self.settle_deliveries();
    }

    /// Starts delivering the head of an idle session's queue, if it has
    /// one and nothing holds it back.
    fn deliver_queued(&mut self, id: &Identity, l: &Arc<Live>) {
        let held = self.delivering.contains(id)
            || self.unconfirmed.get(id) == Some(&l.rec.session)
            || self.not_before.get(id).is_some_and(|t| Instant::now() < *t);
        if held || !self.queues.has_tasks(id) {
            return;
        }
        let ctx = Arc::clone(&self.ctx);
        let done = self.ended.0.clone();
        let (id, live) = (id.clone(), Arc::clone(l));
        let spawned = std::thread::Builder::new()
            .name(format!("deliver-{id}"))
            .spawn({
                let id = id.clone();
                move || {
                    let r = crate::engine::queue::deliver_next(&ctx, &id, &live.peer);
                    let _ = done.send((id, live.rec.session.clone(), r));
                }
            });
        match spawned {
            Ok(_) => {
                self.delivering.insert(id);
            }
            Err(e) => tracing::warn!("{id}: cannot start a delivery: {e}"),
        }
    }

    /// Takes in the deliveries that ended.
    fn settle_deliveries(&mut self) {
        while let Ok((id, session, r)) = self.ended.1.try_recv() {
            self.delivering.remove(&id);
            let wait = match r {
                Ok(Next::Delivered(Outcome::DeliveryUnconfirmed)) => {
                    self.unconfirmed.insert(id.clone(), session);
                    AFTER_DELIVERY
                }
                Ok(Next::OnlyBad) => AFTER_FAILURE,
                Ok(_) => AFTER_DELIVERY,
                Err(e) => {
                    tracing::warn!("{id}: a queued task could not be delivered: {e}");
                    AFTER_FAILURE
                }
            };
            self.not_before.insert(id, Instant::now() + wait);
        }
    }

    /// What the log last said of this session's activity, so that a
    /// restarted daemon does not say it again.
    fn known(&self, id: &Identity, session: &str) -> Tracked {
        let now = self.ctx.now();
        let metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        metrics
            .peers
            .get(id.as_str())
            .and_then(|m| m.activity.as_ref())
            .filter(|a| a.session == session)
            .and_then(|a| {
                Some(Tracked {
                    state: State::parse(&a.state)?,
                    since: clock::parse_rfc3339(&a.since)?,
                    pending: None,
                })
            })
            .unwrap_or_else(|| Tracked::new(now))
    }

    fn changed(&self, id: &Identity, l: &Live, t: &Transition) {
        let since = clock::format_ms(t.since);
        let mut line = self
            .ctx
            .record(Ev::Activity)
            .identity(id)
            .runtime(l.peer.runtime)
            .session(&l.rec.session);
        line.state = Some(t.to.state.as_str().to_owned());
        line.since = Some(since.clone());
        line.retry_after = t.to.until.map(clock::format_ms);
        if let Some(said) = &t.to.said {
            line = line.reason(said);
        }
        if let Err(e) = self.ctx.log(&line) {
            // Said again at the next change: a reading is not a decision.
            tracing::error!("{id}: activity {}: {e}", t.to.state);
        }
        self.hooks.fire(Notice {
            peer: id.clone(),
            state: t.to.state.as_str().to_owned(),
            previous: t.from.as_str().to_owned(),
            since,
            why: why(id, t),
            session: Some(l.rec.session.clone()),
        });
        if t.to.state == State::Stuck && l.peer.on_stuck == OnStuck::Restart {
            let (ctx, id, peer) = (Arc::clone(&self.ctx), id.clone(), l.peer.clone());
            let session = l.rec.session.clone();
            let said =
                t.to.said
                    .clone()
                    .unwrap_or_else(|| "no progress".to_owned());
            let spawned = std::thread::Builder::new()
                .name(format!("unstick-{id}"))
                .spawn(move || {
                    match crate::engine::queue::restart_stuck(&ctx, &id, &peer, &session, &said) {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(
                            "{id}: not restarted, stuck: its lock stayed held, or the session ended"
                        ),
                        Err(e) => tracing::error!("{id}: restarting it, stuck: {e}"),
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start a thread to restart a stuck session: {e}");
            }
        }
    }
}

/// The hook's one-line why.
fn why(id: &Identity, t: &Transition) -> String {
    let what = match t.to.state {
        State::Working => "is working",
        State::Waiting => "is waiting for a person",
        State::Idle => "is idle",
        State::Limited => "hit its usage limit",
        State::Stuck => "is stuck",
        State::Unknown => "cannot be read",
    };
    let mut s = format!("{id} {what}");
    if let Some(said) = &t.to.said {
        s.push_str(": ");
        s.push_str(said);
    }
    if let Some(until) = t.to.until {
        s.push_str(&format!(" (until {})", clock::format_ms(until)));
    }
    s
}

/// A reader over given sessions, without a daemon: what `make bench`
/// times, one round at a time.
#[doc(hidden)]
#[allow(missing_debug_implementations)]
pub struct BenchReader(Reader);

impl BenchReader {
    pub fn new(
        config: crate::store::config::Config,
        sessions: Vec<(Peer, SessionRecord)>,
    ) -> crate::core::error::Result<Self> {
        let hooks = Hooks::new(&config);
        let ctx = Arc::new(Ctx::open(config, crate::core::vocab::Source::Daemon)?);
        let shared = Sessions::default();
        {
            let mut map = shared.lock().unwrap_or_else(|e| e.into_inner());
            for (peer, rec) in sessions {
                map.insert(peer.identity(), Arc::new(Live { peer, rec }));
            }
        }
        let metrics = Arc::new(Mutex::new(Metrics::default()));
        Ok(BenchReader(Reader::new(ctx, shared, metrics, hooks)))
    }

    /// Reads every session once.
    pub fn round(&mut self) {
        self.0.round();
    }
}
