//! What every operation works with: configuration, the state directory, the
//! session host, the decision log, who is acting, and the clock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::core::clock::EpochMs;
use crate::core::error::{Error, Refusal, Result};
use crate::core::identity::Identity;
use crate::core::peer::{Peer, RuntimeKind};
use crate::core::record::Record;
use crate::core::steady::{self, Sighting};
use crate::core::vocab::Source;
use crate::runtime::host::Host;
use crate::runtime::tmux::Tmux;
use crate::store::config::Config;
use crate::store::definitions;
use crate::store::log::LogWriter;
use crate::store::markers::{LockFailure, StateDir, WakeLock};

/// The wall clock a context reads; tests inject one that jumps.
pub type Clock = Arc<dyn Fn() -> EpochMs + Send + Sync>;

pub struct Ctx {
    pub config: Config,
    pub state: StateDir,
    pub host: Box<dyn Host>,
    log: Mutex<LogWriter>,
    pub source: Source,
    clock: Clock,
    folders: Mutex<Option<Arc<Folders>>>,
    /// How long each live session has been idle and up, as this process
    /// has watched it: kept across passes, so that the wall clock jumping
    /// neither parks every idle session nor blinds the reaper.
    steady: Mutex<HashMap<Identity, Steady>>,
    origin: Instant,
}

/// What this process has seen of one identity's session.
#[derive(Debug)]
struct Steady {
    session: String,
    started: Option<Sighting>,
    activity: Option<Sighting>,
}

/// Which time since a session stamp [`Ctx::since`] measures.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Since {
    Started,
    Activity,
}

/// Which peers work in which folder, for each runtime: read from `peers/`
/// and read again when that folder changes.
#[derive(Debug)]
struct Folders {
    changed: Option<SystemTime>,
    read_at: Instant,
    peers: HashMap<(RuntimeKind, PathBuf), Vec<Identity>>,
}

/// How long a reading of `peers/` is trusted while its change time says
/// nothing changed (two quick writes can share one coarse timestamp).
const FOLDERS_FRESH: Duration = Duration::from_secs(60);

impl Default for Folders {
    fn default() -> Self {
        Folders {
            changed: None,
            read_at: Instant::now(),
            peers: HashMap::new(),
        }
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("home", &self.config.home)
            .field("source", &self.source)
            .finish()
    }
}

impl Ctx {
    /// Opens the home (creating it on first use) with the real tmux.
    pub fn open(config: Config, source: Source) -> Result<Self> {
        let host = Box::new(Tmux::new(&config.paths.run));
        Self::with_host(config, source, host)
    }

    pub(crate) fn with_host(config: Config, source: Source, host: Box<dyn Host>) -> Result<Self> {
        config.ensure_home()?;
        let state = StateDir::open(&config.paths.lifecycle)?.with_run(&config.paths.run);
        let log = Mutex::new(LogWriter::new(&config));
        Ok(Ctx {
            config,
            state,
            host,
            log,
            source,
            clock: Arc::new(crate::core::clock::now_ms),
            folders: Mutex::new(None),
            steady: Mutex::new(HashMap::new()),
            origin: Instant::now(),
        })
    }

    /// Replaces the wall clock (for tests of clock jumps).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The wall clock, in epoch ms. Decisions take it as an argument; this
    /// is the one place the shell reads it.
    pub(crate) fn now(&self) -> EpochMs {
        (self.clock)()
    }

    /// The time since `stamp` of `id`'s session `session`, measured with
    /// the monotonic clock since this process first saw that stamp (see
    /// [`crate::core::steady`]).
    pub(crate) fn since(&self, id: &Identity, session: &str, which: Since, stamp: EpochMs) -> i64 {
        let mono = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let wall = self.now();
        let mut all = self.steady.lock().unwrap_or_else(|p| p.into_inner());
        let seen = all.entry(id.clone()).or_insert_with(|| Steady {
            session: String::new(),
            started: None,
            activity: None,
        });
        if seen.session != session {
            seen.session = session.to_owned();
            seen.started = None;
            seen.activity = None;
        }
        let slot = match which {
            Since::Started => &mut seen.started,
            Since::Activity => &mut seen.activity,
        };
        let now = steady::since(*slot, stamp, wall, mono);
        *slot = Some(now);
        now.since_at(mono)
    }

    /// Forgets what [`Ctx::since`] saw of `id` (its session ended).
    pub(crate) fn forget_since(&self, id: &Identity) {
        let mut all = self.steady.lock().unwrap_or_else(|p| p.into_inner());
        all.remove(id);
    }

    /// A record stamped now, from this process.
    pub(crate) fn record(&self, ev: crate::core::vocab::Ev) -> Record {
        Record::new(self.now(), ev, self.source)
    }

    /// Appends a decision durably; the caller acts only if this succeeds.
    pub(crate) fn log(&self, record: &Record) -> Result<()> {
        let written = {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            log.write(record)?
        };
        // Flushed with the other threads' lines, not one after another.
        written.sync()
    }

    /// Takes `id`'s wake lock, waiting up to `IAPEER_WAKE_LOCK_WAIT_SECS`
    /// for another process to let go of it; held past that is a refusal
    /// the caller may retry (exit 6).
    pub(crate) fn lock(&self, id: &Identity) -> Result<WakeLock> {
        match self.state.lock(id, self.config.wake_lock_wait) {
            Ok(lock) => Ok(lock),
            Err(LockFailure::Held { waited }) => Err(Error::Refused(Refusal::LockHeld {
                identity: id.to_string(),
                waited_ms: waited.as_millis() as u64,
            })),
            Err(LockFailure::Error(e)) => Err(e),
        }
    }

    pub(crate) fn peer(&self, id: &Identity) -> Result<Peer> {
        definitions::load_peer(&self.config.paths, id)
    }

    /// The other peers of `peer`'s runtime working in its folder (pool
    /// members share one): their conversations are recorded beside its own.
    pub(crate) fn neighbours(&self, peer: &Peer) -> Vec<Identity> {
        let folders = self.folders();
        let me = peer.identity();
        folders
            .peers
            .get(&(peer.runtime, folder(&peer.cwd)))
            .map(|ids| ids.iter().filter(|id| **id != me).cloned().collect())
            .unwrap_or_default()
    }

    /// Who works where, read again when `peers/` has changed. The reading
    /// happens outside the lock, and one that fails keeps the last good.
    fn folders(&self) -> Arc<Folders> {
        let dir = &self.config.paths.peers;
        let changed = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
        let last = self
            .folders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(f) = &last {
            if f.changed == changed && f.read_at.elapsed() < FOLDERS_FRESH {
                return Arc::clone(f);
            }
        }
        let Ok(all) = definitions::load_peers(&self.config.paths) else {
            return last.unwrap_or_default();
        };
        let mut peers: HashMap<_, Vec<Identity>> = HashMap::new();
        for p in all.into_iter().flatten() {
            peers
                .entry((p.runtime, folder(&p.cwd)))
                .or_default()
                .push(p.identity());
        }
        let fresh = Arc::new(Folders {
            changed,
            read_at: Instant::now(),
            peers,
        });
        *self.folders.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&fresh));
        fresh
    }
}

/// A folder as runtimes record it: with symlinks resolved when it exists.
fn folder(cwd: &Path) -> PathBuf {
    cwd.canonicalize().unwrap_or_else(|_| cwd.to_path_buf())
}
