//! What state each peer is in, for `iapeer status` (and anything else that
//! shows the fleet). Read-only: nothing here acts.

use serde::Serialize;

use crate::core::clock::EpochMs;
use crate::core::crash_ring::Guard;
use crate::core::error::Result;
use crate::core::identity::Identity;
use crate::core::metrics;
use crate::core::peer::Peer;
use crate::core::session::{Liveness, Standing};
use crate::engine::ctx::Ctx;
use crate::store::log::checkpoint::{self, Kept, Shown};
use crate::store::markers::{Flag, Marker, Present};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum LifecycleState {
    /// Not running; the next message starts it.
    Asleep,
    /// Launched; the ready gate has not passed yet.
    Starting,
    Alive,
    /// Ended by iapeer; the next message resumes it.
    Parked,
    /// Halted by an operator.
    Stopped,
    /// The crash-loop guard refuses launches.
    CrashLooping,
    /// Given up on (`.failed`): no automatic relaunch until `reset`/`start`.
    Failed,
    /// Another supervisor owns it.
    External,
}

impl LifecycleState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LifecycleState::Asleep => "asleep",
            LifecycleState::Starting => "starting",
            LifecycleState::Alive => "alive",
            LifecycleState::Parked => "parked",
            LifecycleState::Stopped => "stopped",
            LifecycleState::CrashLooping => "crash-looping",
            LifecycleState::Failed => "failed",
            LifecycleState::External => "external",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct SessionInfo {
    pub pid: i32,
    pub started_at: String,
    pub age_secs: u64,
    pub mode: String,
    pub cause: String,
    pub session: String,
    pub task: Option<String>,
    /// Its runtime reported a usage limit lifting then (DESIGN §12).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited_until: Option<String>,
}

/// The last line about a peer (its ts, ev and summary).
pub(crate) type LastDecision = metrics::LastLine;

#[derive(Clone, Debug, Serialize)]
pub(crate) struct PeerStatus<'a> {
    pub name: String,
    pub runtime: String,
    pub policy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    pub lifecycle_state: LifecycleState,
    /// What the live session is doing, by the daemon's last reading of it
    /// (DESIGN §12); none without a live session or a reading.
    pub activity: Option<metrics::LastActivity>,
    pub session: Option<SessionInfo>,
    pub deaths_in_window: usize,
    pub retry_after: Option<String>,
    pub last_decision: Option<Kept<'a, LastDecision>>,
    /// Counters and last events, folded from the retained log.
    pub lifecycle_metrics: Kept<'a, metrics::PeerMetrics>,
    /// Something on disk that needs a person (a refused marker, garbage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The last line about each identity, and everyone's metrics (or `only`
/// one peer's): the daemon's checkpoint, read into `read_into`, and the
/// lines after it (the whole retained log only when there is no
/// checkpoint).
pub(crate) fn read_log<'a>(
    ctx: &Ctx,
    only: Option<&Identity>,
    read_into: &'a mut Vec<u8>,
) -> Shown<'a> {
    let paths = &ctx.config.paths;
    let (log, at) = (&paths.lifecycle_log, paths.metrics_checkpoint());
    if let Some(shown) = checkpoint::shown(log, &at, only.map(Identity::as_str), read_into) {
        return shown;
    }
    let mut folded = metrics::Folded::default();
    let mut follower = crate::store::log::Follower::from_start(log);
    let began = std::time::Instant::now();
    checkpoint::fold_rest(&mut folded, &mut follower);
    // A long fold with no daemon to keep a checkpoint: keep one, so the
    // next look starts from it (the daemon, once started, goes on from it).
    if only.is_none()
        && began.elapsed() > std::time::Duration::from_millis(500)
        && !crate::store::fsutil::lock_held(&paths.daemon_lock())
    {
        if let Some(position) = follower.position() {
            if let Err(e) = checkpoint::save(&at, position, &folded) {
                tracing::debug!("{e}");
            }
        }
    }
    folded.into()
}

/// One peer's status.
pub(crate) fn peer_status(ctx: &Ctx, peer: &Peer, now: EpochMs) -> PeerStatus<'static> {
    peer_status_in(ctx, peer, None, None, now)
}

/// [`peer_status`], sparing the reads of files that a scan of the state
/// directory (`present`) found missing.
fn peer_status_in<'a>(
    ctx: &Ctx,
    peer: &Peer,
    present: Option<Present>,
    last: Option<Kept<'a, LastDecision>>,
    now: EpochMs,
) -> PeerStatus<'a> {
    let id = peer.identity();
    let may_have = |m: Marker| present.is_none_or(|p| p.has(m));
    let mut problem = None;
    let mut note = |e: crate::Error| {
        problem.get_or_insert_with(|| e.to_string());
    };
    let mut flag = |f: Flag| {
        if !may_have(f.marker()) {
            return None;
        }
        ctx.state.flag(&id, f).unwrap_or_else(|e| {
            note(e);
            None
        })
    };
    let stopped = flag(Flag::Stopped);
    let failed = flag(Flag::Failed);
    let parked = flag(Flag::IdleReaped);
    let deaths = if may_have(Marker::Deaths) {
        ctx.state.deaths(&id).map(|d| d.ring).unwrap_or_else(|e| {
            note(e);
            Default::default()
        })
    } else {
        Default::default()
    };
    let rec = if may_have(Marker::Session) {
        ctx.state.session(&id).unwrap_or_else(|e| {
            note(e);
            None
        })
    } else {
        None
    };
    let policy = crate::engine::wake::guard_policy(ctx);
    let guard = deaths.guard(now, policy);
    let live = rec.as_ref().filter(|r| {
        !matches!(
            crate::os::process::standing(r),
            Standing::Ending | Standing::OtherBoot | Standing::Running(Liveness::Dead)
        )
    });
    let state = if peer.external_supervisor.is_some() {
        LifecycleState::External
    } else if stopped.is_some() {
        LifecycleState::Stopped
    } else if let Some(r) = live {
        if r.is_ready() {
            LifecycleState::Alive
        } else {
            LifecycleState::Starting
        }
    } else if failed.is_some() {
        LifecycleState::Failed
    } else if matches!(guard, Guard::Refuse { .. }) {
        LifecycleState::CrashLooping
    } else if parked.is_some() {
        LifecycleState::Parked
    } else {
        LifecycleState::Asleep
    };
    let session = live.map(|r| {
        let started = r.started_ms().unwrap_or(now);
        SessionInfo {
            pid: r.pane_pid,
            started_at: r.started_at.clone(),
            age_secs: (now.saturating_sub(started).max(0) / 1000) as u64,
            mode: r.mode.clone(),
            cause: r.cause.clone(),
            session: r.session.clone(),
            task: r.task.clone(),
            limited_until: r.limited_until.clone(),
        }
    });
    PeerStatus {
        name: peer.name.clone(),
        runtime: peer.runtime.as_str().to_owned(),
        policy: peer.policy.as_str().to_owned(),
        pool: peer.pool.clone(),
        lifecycle_state: state,
        activity: None,
        session,
        deaths_in_window: deaths.count_in_window(now, policy.window_ms),
        retry_after: match guard {
            Guard::Refuse { retry_after_ms, .. } => {
                Some(crate::core::clock::format_ms(retry_after_ms))
            }
            Guard::Allow => None,
        },
        last_decision: last,
        lifecycle_metrics: Kept::Folded(Default::default()),
        problem,
    }
}

/// Every peer's status (or one's), borrowing from the checkpoint, read
/// into `read_into`.
pub(crate) fn collect<'a>(
    ctx: &Ctx,
    only: Option<&Identity>,
    read_into: &'a mut Vec<u8>,
) -> Result<Vec<std::result::Result<PeerStatus<'a>, crate::Error>>> {
    // The checkpoint and the definitions are read side by side: each is a
    // good part of the cost at thousands of peers, and neither needs the
    // other.
    let read_peers = || match only {
        Some(id) => ctx.peer(id).map(|p| vec![Ok(p)]),
        None => crate::store::definitions::load_peers(&ctx.config.paths),
    };
    let (folded, peers) = std::thread::scope(|s| {
        let peers = std::thread::Builder::new()
            .name("status-peers".into())
            .spawn_scoped(s, read_peers);
        let folded = read_log(ctx, only, read_into);
        let peers = match peers {
            Ok(peers) => peers
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No thread to be had: read them here.
            Err(_) => read_peers(),
        };
        (folded, peers)
    });
    let Shown {
        peers: mut counters,
        mut last,
        ..
    } = folded;
    Ok(with_metrics(
        ctx,
        peers?,
        |name| counters.remove(name),
        |name| last.remove(name),
    ))
}

/// Each peer's status with its metrics, taken from `metrics`; `last`
/// gives the last log line about a peer when the caller has it.
pub(crate) fn with_metrics<'a>(
    ctx: &Ctx,
    peers: Vec<std::result::Result<Peer, crate::Error>>,
    mut metrics: impl FnMut(&str) -> Option<Kept<'a, metrics::PeerMetrics>>,
    mut last: impl FnMut(&str) -> Option<Kept<'a, LastDecision>>,
) -> Vec<std::result::Result<PeerStatus<'a>, crate::Error>> {
    let now = ctx.now();
    // One listing of the state directory: most peers have few of their
    // files, and the missing ones are then not opened one by one.
    let scan = (peers.len() > 1).then(|| ctx.state.scan().ok()).flatten();
    let present = |p: &Peer| {
        scan.as_ref()
            .map(|all| all.get(&p.identity()).copied().unwrap_or_default())
    };
    peers
        .into_iter()
        .map(|p| {
            p.map(|peer| {
                let mut s = peer_status_in(ctx, &peer, present(&peer), last(&peer.name), now);
                let m = metrics(&peer.name).unwrap_or(Kept::Folded(Default::default()));
                // What else is shown of the counters is read from them only
                // where it is wanted: most peers have a last line, and no
                // live session.
                #[derive(Default, serde::Deserialize)]
                #[serde(default)]
                struct LastEventOf {
                    last_event: Option<metrics::LastEvent>,
                }
                #[derive(Default, serde::Deserialize)]
                #[serde(default)]
                struct ActivityOf {
                    activity: Option<metrics::LastActivity>,
                }
                if s.last_decision.is_none() {
                    let of = m.part(|m| LastEventOf {
                        last_event: m.last_event.clone(),
                    });
                    s.last_decision = of.last_event.map(|e| {
                        Kept::Folded(LastDecision {
                            ts: e.ts,
                            ev: e.kind,
                            summary: e.summary,
                        })
                    });
                }
                if let Some(live) = &s.session {
                    let of = m.part(|m| ActivityOf {
                        activity: m.activity.clone(),
                    });
                    s.activity = of.activity.filter(|a| live.session == a.session);
                }
                s.lifecycle_metrics = m;
                s
            })
        })
        .collect()
}

/// The document `status --json` prints and `GET /peers` serves (UTF-8
/// JSON), written to `out` as it goes: no tree of values for a fleet of
/// thousands is built only to be printed. `extra` adds a top-level key
/// (the CLI's `dashboard`).
pub(crate) fn document<W: std::io::Write>(
    ctx: &Ctx,
    all: &[std::result::Result<PeerStatus, crate::Error>],
    daemon: bool,
    extra: Option<(&str, serde_json::Value)>,
    out: &mut W,
) -> std::io::Result<()> {
    fn json<W: std::io::Write, T: Serialize + ?Sized>(out: &mut W, v: &T) -> std::io::Result<()> {
        Ok(serde_json::to_writer(out, v)?)
    }
    out.write_all(b"{\"schema\":1,\"home\":")?;
    json(out, &ctx.config.home)?;
    out.write_all(b",\"run\":")?;
    json(out, &ctx.config.paths.run)?;
    out.write_all(b",\"daemon\":")?;
    json(out, &daemon)?;
    if let Some((key, value)) = extra {
        out.write_all(b",")?;
        json(out, key)?;
        out.write_all(b":")?;
        json(out, &value)?;
    }
    out.write_all(b",\"peers\":[")?;
    for (i, s) in all.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        match s {
            Ok(s) => json(out, s)?,
            Err(e) => json(out, &serde_json::json!({ "error": e.to_string() }))?,
        }
    }
    out.write_all(b"]}")
}

/// The Prometheus text for the defined peers.
pub(crate) fn prometheus(ctx: &Ctx, peers: &[Peer], metrics: &metrics::Metrics) -> String {
    let now = ctx.now();
    let states: std::collections::BTreeMap<String, &'static str> = peers
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                peer_status(ctx, p, now).lifecycle_state.as_str(),
            )
        })
        .collect();
    let mut shown = metrics.clone();
    shown.retain(|name| states.contains_key(name));
    let labels: std::collections::BTreeMap<String, String> = peers
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                format!(
                    "runtime=\"{}\",pool=\"{}\"",
                    p.runtime.as_str(),
                    metrics::escape(p.pool.as_deref().unwrap_or(""))
                ),
            )
        })
        .collect();
    let mut text = shown.prometheus(&states, &labels);
    // What to join on: the build, and each peer's runtime, policy and pool
    // (label sets that change with a definition stay off the counters).
    text.push_str(&format!(
        "# HELP iapeer_build_info The running iapeer's version.\n\
         # TYPE iapeer_build_info gauge\n\
         iapeer_build_info{{version=\"{}\"}} 1\n\
         # HELP iapeer_peer_info 1 for each defined peer, with its runtime, policy and pool.\n\
         # TYPE iapeer_peer_info gauge\n",
        env!("CARGO_PKG_VERSION")
    ));
    for p in peers {
        text.push_str(&format!(
            "iapeer_peer_info{{peer=\"{}\",runtime=\"{}\",policy=\"{}\",pool=\"{}\"}} 1\n",
            metrics::escape(&p.name),
            p.runtime.as_str(),
            p.policy.as_str(),
            metrics::escape(p.pool.as_deref().unwrap_or(""))
        ));
    }
    text
}
