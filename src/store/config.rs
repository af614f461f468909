//! Configuration from the environment (DESIGN §10) and the paths under
//! `IAPEER_HOME` (DESIGN §2). A malformed value is an error naming the
//! variable, never a silent default.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::core::error::{Error, Result};
use crate::store::settings;
use std::collections::BTreeMap;

/// The longest socket path we allow ourselves: `sun_path` is 104 bytes on
/// macOS and 108 on Linux, both counting the trailing NUL.
const SOCKET_PATH_MAX: usize = 103;
/// The longest socket file name under `run/`: a 64-byte identity + `.sock`.
const SOCKET_NAME_MAX: usize = crate::core::identity::MAX_LEN + ".sock".len();

#[derive(Debug, Clone)]
pub struct Config {
    pub home: PathBuf,
    pub paths: Paths,
    pub tick: Duration,
    pub idle: Duration,
    pub max_age: Duration,
    pub boot_deadline: Duration,
    pub ready_gate: Duration,
    pub crashloop_max: u32,
    pub crashloop_window: Duration,
    /// Relaunch back-off and give-up (DESIGN §5).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub backoff_reset: Duration,
    pub give_up_after: u32,
    pub log_max_bytes: u64,
    pub log_keep: u32,
    pub supervise_log_verbose: bool,
    pub claude_bin: OsString,
    pub codex_bin: OsString,
    pub claude_config_dir: PathBuf,
    pub codex_home: PathBuf,
    /// How long a wake waits for another process's wake of the same peer
    /// before giving up with exit code 6 (`IAPEER_WAKE_LOCK_WAIT_SECS`).
    pub wake_lock_wait: Duration,
    /// Where the daemon writes Prometheus metrics, if anywhere
    /// (`IAPEER_METRICS_FILE`).
    pub metrics_file: Option<PathBuf>,
    /// Where the daemon serves its read-only dashboard, if anywhere
    /// (`IAPEER_HTTP_ADDR`, e.g. `127.0.0.1:8787`).
    pub http_addr: Option<std::net::SocketAddr>,
    /// A 0600 file holding the bearer token the dashboard requires
    /// (`IAPEER_HTTP_TOKEN_FILE`; mandatory off loopback).
    pub http_token_file: Option<PathBuf>,
    /// Mid-turn with no progress this long is `stuck` (DESIGN §12).
    pub stuck: Duration,
    /// How long a park for max age waits for the turn to end.
    pub max_age_grace: Duration,
    /// The operator's hook command (`on_activity`), run with `/bin/sh -c`.
    pub on_activity: Option<String>,
    /// The states the hook is run for.
    pub on_activity_states: Vec<String>,
    /// How long a hook may run before it is killed.
    pub hook_timeout: Duration,
    /// `$IAPEER_HOME/config.toml`, and what it set (the environment
    /// overrides it).
    pub config_file: PathBuf,
    pub(crate) from_file: BTreeMap<&'static str, settings::FileValue>,
}

/// Every place iapeer keeps state, resolved once.
#[derive(Debug, Clone)]
pub struct Paths {
    pub peers: PathBuf,
    pub pools: PathBuf,
    pub state: PathBuf,
    pub lifecycle: PathBuf,
    /// `state/queue/`: a folder of tasks per peer (DESIGN §13).
    pub queue: PathBuf,
    pub log_dir: PathBuf,
    pub lifecycle_log: PathBuf,
    pub daemon_log_dir: PathBuf,
    /// tmux sockets and `daemon.lock`; under the home unless that would make
    /// socket paths too long (DESIGN §2).
    pub run: PathBuf,
    /// True when `run` had to move out of the home.
    pub run_relocated: bool,
}

impl Config {
    /// Reads the process environment.
    pub(crate) fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var_os(k))
    }

    /// Reads configuration through `get`, so tests can pass a map.
    pub fn from_lookup(get: impl Fn(&str) -> Option<OsString>) -> Result<Self> {
        let env = Env { get: &get };
        let user_home = get("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
        let home = match env.path("IAPEER_HOME", user_home.as_deref())? {
            Some(p) => p,
            None => user_home
                .as_ref()
                .map(|h| h.join(".iapeer"))
                .ok_or_else(|| Error::Config {
                    var: "HOME",
                    value: String::new(),
                    expected: "a home directory (or set IAPEER_HOME)",
                })?,
        };
        // config.toml under the home, overridden by the environment.
        let config_file = home.join("config.toml");
        let from_file = settings::read_file(&config_file)?;
        let merged =
            |k: &str| get(k).or_else(|| from_file.get(k).map(|f| OsString::from(&f.value)));
        let env = Env { get: &merged };
        Self::build(&env, &get, home, user_home)
            .map(|mut c| {
                c.from_file = from_file.clone();
                c
            })
            .map_err(|e| match e {
                Error::Config {
                    var,
                    value,
                    expected,
                } if get(var).is_none() && from_file.contains_key(var) => Error::input(
                    format!(
                        "{} line {}, key {}",
                        config_file.display(),
                        from_file[var].line,
                        settings::by_var(var).map_or_else(|| var.to_lowercase(), |s| s.key())
                    ),
                    format!("{value:?} is not valid: expected {expected}"),
                    "fix the value, or remove the line for the default",
                ),
                e => e,
            })
    }

    fn build(
        env: &Env<'_>,
        get: &dyn Fn(&str) -> Option<OsString>,
        home: PathBuf,
        user_home: Option<PathBuf>,
    ) -> Result<Self> {
        let in_user_home = |dir: &str| user_home.as_ref().map(|h| h.join(dir));
        let claude_config_dir = env
            .path("CLAUDE_CONFIG_DIR", user_home.as_deref())?
            .or_else(|| in_user_home(".claude"))
            .unwrap_or_else(|| home.join("claude"));
        let codex_home = env
            .path("CODEX_HOME", user_home.as_deref())?
            .or_else(|| in_user_home(".codex"))
            .unwrap_or_else(|| home.join("codex"));
        let paths = Paths::for_home(
            &home,
            get("XDG_RUNTIME_DIR").map(PathBuf::from),
            crate::store::fsutil::my_uid(),
        );
        Ok(Config {
            paths,
            tick: env.secs("IAPEER_TICK_SECS", 0.01)?,
            idle: env.secs("IAPEER_IDLE_SECS", 0.0)?,
            max_age: env.secs("IAPEER_MAX_AGE_SECS", 0.0)?,
            boot_deadline: env.secs("IAPEER_BOOT_DEADLINE_SECS", 0.01)?,
            ready_gate: env.secs("IAPEER_READY_GATE_SECS", 0.01)?,
            crashloop_max: env.int("IAPEER_CRASHLOOP_MAX", 1)?,
            crashloop_window: env.secs("IAPEER_CRASHLOOP_WINDOW_SECS", 0.0)?,
            backoff_base: env.secs("IAPEER_BACKOFF_BASE_SECS", 0.0)?,
            backoff_max: env.secs("IAPEER_BACKOFF_MAX_SECS", 0.0)?,
            backoff_reset: env.secs("IAPEER_BACKOFF_RESET_SECS", 0.0)?,
            give_up_after: env.int("IAPEER_GIVE_UP_AFTER", 1)?,
            log_max_bytes: env.int("IAPEER_LIFECYCLE_LOG_MAX_BYTES", 1)?,
            log_keep: env.int("IAPEER_LIFECYCLE_LOG_KEEP", 1)?,
            supervise_log_verbose: env.flag("IAPEER_SUPERVISE_LOG_VERBOSE")?,
            claude_bin: env.program("IAPEER_CLAUDE_BIN")?,
            codex_bin: env.program("IAPEER_CODEX_BIN")?,
            claude_config_dir,
            codex_home,
            wake_lock_wait: env.secs("IAPEER_WAKE_LOCK_WAIT_SECS", 0.0)?,
            metrics_file: env.path("IAPEER_METRICS_FILE", user_home.as_deref())?,
            http_addr: env.socket_addr("IAPEER_HTTP_ADDR")?,
            http_token_file: env.path("IAPEER_HTTP_TOKEN_FILE", user_home.as_deref())?,
            stuck: env.secs("IAPEER_STUCK_SECS", 1.0)?,
            max_age_grace: env.secs("IAPEER_MAX_AGE_GRACE_SECS", 0.0)?,
            on_activity: env
                .text("IAPEER_ON_ACTIVITY")?
                .filter(|c| !c.trim().is_empty()),
            on_activity_states: env.states("IAPEER_ON_ACTIVITY_STATES")?,
            hook_timeout: env.secs("IAPEER_HOOK_TIMEOUT_SECS", 0.1)?,
            config_file: home.join("config.toml"),
            from_file: BTreeMap::new(),
            home,
        })
    }

    /// How long a peer may be idle before it is parked: its own
    /// `idle_secs`, or `IAPEER_IDLE_SECS`.
    pub(crate) fn idle_limit_ms(&self, peer: Option<&crate::core::peer::Peer>) -> i64 {
        peer.and_then(|p| p.idle_secs)
            .map_or(self.idle.as_millis() as i64, |s| {
                i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
            })
    }

    /// The back-off settings, for the pure maths.
    pub(crate) fn backoff(&self) -> crate::core::backoff::Settings {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        crate::core::backoff::Settings {
            base_ms: ms(self.backoff_base),
            max_ms: ms(self.backoff_max),
            reset_ms: ms(self.backoff_reset),
            give_up_after: self.give_up_after,
            crashloop_max: self.crashloop_max,
        }
    }

    /// Creates the home and its directories (0700) when missing, and refuses
    /// any of them that is a symlink, not a directory, or owned by another
    /// user: state written there could land anywhere.
    pub(crate) fn ensure_home(&self) -> Result<()> {
        ensure_private_dir(&self.home, false)?;
        for dir in [
            &self.paths.peers,
            &self.paths.pools,
            &self.paths.state,
            &self.paths.lifecycle,
            &self.paths.queue,
            &self.home.join("logs"),
            &self.paths.log_dir,
            &self.paths.run,
        ] {
            ensure_private_dir(dir, true)?;
        }
        Ok(())
    }
}

impl Paths {
    pub(crate) fn for_home(home: &Path, xdg_runtime: Option<PathBuf>, uid: u32) -> Self {
        let home_run = home.join("run");
        let fits = |dir: &Path| dir.as_os_str().len() + 1 + SOCKET_NAME_MAX <= SOCKET_PATH_MAX;
        let (run, run_relocated) = if fits(&home_run) {
            (home_run, false)
        } else {
            // 40 bits of the home's hash keep one directory per home while
            // leaving room for 64-byte identities.
            let hash = fnv1a(home.as_os_str().as_bytes()) >> 24;
            let under_xdg = xdg_runtime
                .filter(|x| x.is_absolute())
                .map(|x| x.join(format!("iapeer-{hash:010x}")))
                .filter(|d| fits(d));
            let under_tmp = || PathBuf::from("/tmp").join(format!("iapeer-{uid}-{hash:010x}"));
            (under_xdg.unwrap_or_else(under_tmp), true)
        };
        let log_dir = home.join("logs").join("iapeer");
        Paths {
            peers: home.join("peers"),
            pools: home.join("pools"),
            state: home.join("state"),
            lifecycle: home.join("state").join("lifecycle"),
            queue: home.join("state").join("queue"),
            lifecycle_log: log_dir.join("lifecycle.log"),
            log_dir,
            daemon_log_dir: home.join("logs").join("daemon"),
            run,
            run_relocated,
        }
    }

    pub(crate) fn peer_file(&self, name: &str) -> PathBuf {
        self.peers.join(format!("{name}.json"))
    }

    pub(crate) fn socket(&self, name: &str) -> PathBuf {
        self.run.join(format!("{name}.sock"))
    }

    /// The metrics checkpoint: counters and the log position they cover.
    pub(crate) fn metrics_checkpoint(&self) -> PathBuf {
        self.state.join("metrics.json")
    }

    pub(crate) fn daemon_lock(&self) -> PathBuf {
        self.run.join("daemon.lock")
    }
}

/// Creates `dir` (0700) if missing; when `strict`, refuses a symlink, a
/// non-directory or a directory owned by someone else.
pub(crate) fn ensure_private_dir(dir: &Path, strict: bool) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(meta) => {
            if !strict {
                // The home itself may be a symlink the user chose; what
                // matters is that it leads to a directory.
                let meta = fs::metadata(dir).map_err(|e| Error::io(dir, "inspect", e))?;
                if !meta.is_dir() {
                    return Err(Error::unsafe_file(dir, "it is not a directory"));
                }
                return Ok(());
            }
            check_private_dir(dir, &meta)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io(dir, "create directory", e))?;
            // `mode` is filtered by the umask; make it exact.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(dir, "set permissions on", e))
        }
        Err(e) => Err(Error::io(dir, "inspect", e)),
    }
}

fn check_private_dir(dir: &Path, meta: &fs::Metadata) -> Result<()> {
    if meta.file_type().is_symlink() {
        return Err(Error::unsafe_file(
            dir,
            "it is a symlink; iapeer keeps its state in real directories",
        ));
    }
    if !meta.is_dir() {
        return Err(Error::unsafe_file(dir, "it is not a directory"));
    }
    crate::store::fsutil::check_owner(dir, meta.uid())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

struct Env<'a> {
    get: &'a dyn Fn(&str) -> Option<OsString>,
}

impl Env<'_> {
    fn text(&self, var: &'static str) -> Result<Option<String>> {
        match (self.get)(var) {
            None => Ok(None),
            Some(v) => match v.into_string() {
                Ok(s) => Ok(Some(s)),
                Err(v) => Err(Error::Config {
                    var,
                    value: v.to_string_lossy().into_owned(),
                    expected: "valid UTF-8",
                }),
            },
        }
    }

    /// The default of `var`, as [`settings::SETTINGS`] says it (the one
    /// list `iapeer config` shows and the docs are checked against).
    fn default_of(var: &'static str) -> &'static str {
        settings::by_var(var)
            .map(|s| s.default)
            .unwrap_or_else(|| panic!("{var} is not in settings::SETTINGS"))
    }

    fn secs(&self, var: &'static str, min: f64) -> Result<Duration> {
        let Some(raw) = self.text(var)? else {
            let default: f64 = Self::default_of(var)
                .parse()
                .unwrap_or_else(|_| panic!("the default of {var} is not a number"));
            return Ok(Duration::from_secs_f64(default));
        };
        let bad = || Error::Config {
            var,
            value: raw.clone(),
            expected: if min > 0.0 {
                "a positive number of seconds, like 10 or 0.5"
            } else {
                "a number of seconds, like 10 or 0.5"
            },
        };
        let secs: f64 = raw.trim().parse().map_err(|_| bad())?;
        if !secs.is_finite() || secs < min || secs > 1e9 {
            return Err(bad());
        }
        Ok(Duration::from_millis((secs * 1000.0).round() as u64))
    }

    fn int<T>(&self, var: &'static str, min: T) -> Result<T>
    where
        T: std::str::FromStr + PartialOrd,
    {
        let Some(raw) = self.text(var)? else {
            return Ok(Self::default_of(var)
                .parse()
                .unwrap_or_else(|_| panic!("the default of {var} is not a whole number")));
        };
        match raw.trim().parse::<T>() {
            Ok(v) if v >= min => Ok(v),
            _ => Err(Error::Config {
                var,
                value: raw,
                expected: "a whole number of at least 1",
            }),
        }
    }

    fn flag(&self, var: &'static str) -> Result<bool> {
        let Some(raw) = self.text(var)? else {
            return Ok(false);
        };
        match raw.trim().to_ascii_lowercase().as_str() {
            "" | "0" | "false" | "no" | "off" => Ok(false),
            "1" | "true" | "yes" | "on" => Ok(true),
            _ => Err(Error::Config {
                var,
                value: raw,
                expected: "1 or 0 (also true/false, yes/no, on/off)",
            }),
        }
    }

    /// A comma-separated list of states a hook is for: activity states
    /// (DESIGN §12) and `failed`.
    fn states(&self, var: &'static str) -> Result<Vec<String>> {
        let raw = self
            .text(var)?
            .unwrap_or_else(|| Self::default_of(var).to_owned());
        let known = |s: &str| s == "failed" || crate::core::activity::State::parse(s).is_some();
        let states: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if states.iter().all(|s| known(s)) {
            Ok(states)
        } else {
            Err(Error::Config {
                var,
                value: raw,
                expected: "states separated by commas, of: working, waiting, idle, limited, stuck, unknown, failed",
            })
        }
    }

    fn socket_addr(&self, var: &'static str) -> Result<Option<std::net::SocketAddr>> {
        let Some(raw) = self.text(var)? else {
            return Ok(None);
        };
        raw.trim().parse().map(Some).map_err(|_| Error::Config {
            var,
            value: raw,
            expected: "an IP address and port, like 127.0.0.1:8787 or [::1]:8787",
        })
    }

    fn program(&self, var: &'static str) -> Result<OsString> {
        match (self.get)(var) {
            None => Ok(Self::default_of(var).into()),
            Some(v) if v.is_empty() => Err(Error::Config {
                var,
                value: String::new(),
                expected: "a program name or path",
            }),
            Some(v) => Ok(v),
        }
    }

    /// An absolute path (`~/` expanded); a relative one is taken from the
    /// current directory, since it ends up in sessions that run elsewhere.
    fn path(&self, var: &'static str, user_home: Option<&Path>) -> Result<Option<PathBuf>> {
        let Some(raw) = (self.get)(var) else {
            return Ok(None);
        };
        if raw.is_empty() {
            return Err(Error::Config {
                var,
                value: String::new(),
                expected: "a directory path",
            });
        }
        let raw = PathBuf::from(raw);
        let expanded = match (raw.strip_prefix("~"), user_home) {
            (Ok(rest), Some(h)) => h.join(rest),
            _ => raw,
        };
        if expanded.is_absolute() {
            return Ok(Some(expanded));
        }
        let cwd = std::env::current_dir().map_err(|e| Error::io(".", "resolve", e))?;
        Ok(Some(cwd.join(expanded)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_design() {
        let c = config(&[("HOME", "/home/u")]).unwrap();
        assert_eq!(c.home, PathBuf::from("/home/u/.iapeer"));
        assert_eq!(c.tick, Duration::from_secs(10));
        assert_eq!(c.idle, Duration::from_secs(3600));
        assert_eq!(c.max_age, Duration::from_secs(14_400));
        assert_eq!(c.boot_deadline, Duration::from_secs(240));
        assert_eq!(c.ready_gate, Duration::from_secs(120));
        assert_eq!(c.crashloop_max, 3);
        assert_eq!(c.crashloop_window, Duration::from_secs(300));
        assert_eq!(c.backoff_base, Duration::from_secs(1));
        assert_eq!(c.backoff_max, Duration::from_secs(300));
        assert_eq!(c.backoff_reset, Duration::from_secs(600));
        assert_eq!(c.give_up_after, 3);
        assert_eq!(c.log_max_bytes, 5 * 1024 * 1024);
        assert_eq!(c.log_keep, 5);
        assert!(!c.supervise_log_verbose);
        assert_eq!(c.claude_bin, "claude");
        assert_eq!(c.codex_bin, "codex");
        assert_eq!(c.claude_config_dir, PathBuf::from("/home/u/.claude"));
        assert_eq!(c.codex_home, PathBuf::from("/home/u/.codex"));
        assert_eq!(c.paths.run, PathBuf::from("/home/u/.iapeer/run"));
        assert_eq!(
            c.paths.lifecycle_log,
            PathBuf::from("/home/u/.iapeer/logs/iapeer/lifecycle.log")
        );
    }

    #[test]
    fn malformed_values_name_the_variable() {
        for (var, value) in [
            ("IAPEER_IDLE_SECS", "abc"),
            ("IAPEER_TICK_SECS", "0"),
            ("IAPEER_TICK_SECS", "-1"),
            ("IAPEER_CRASHLOOP_MAX", "0"),
            ("IAPEER_CRASHLOOP_MAX", "2.5"),
            ("IAPEER_LIFECYCLE_LOG_KEEP", "many"),
            ("IAPEER_SUPERVISE_LOG_VERBOSE", "maybe"),
            ("IAPEER_BOOT_DEADLINE_SECS", "NaN"),
            ("IAPEER_HOME", ""),
            ("IAPEER_CLAUDE_BIN", ""),
            ("IAPEER_HTTP_ADDR", "localhost"),
            ("IAPEER_HTTP_ADDR", "8787"),
        ] {
            let err = config(&[("HOME", "/h"), (var, value)]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{var}={value}");
            let msg = err.to_string();
            assert!(msg.contains(var), "{msg} should name {var}");
        }
    }

    #[test]
    fn fractional_seconds_and_home_expansion() {
        let c = config(&[
            ("HOME", "/home/u"),
            ("IAPEER_HOME", "~/fleet"),
            ("IAPEER_TICK_SECS", "0.25"),
            ("IAPEER_SUPERVISE_LOG_VERBOSE", "yes"),
        ])
        .unwrap();
        assert_eq!(c.home, PathBuf::from("/home/u/fleet"));
        assert_eq!(c.tick, Duration::from_millis(250));
        assert!(c.supervise_log_verbose);
    }

    #[test]
    fn deep_homes_move_run_somewhere_short() {
        let deep = PathBuf::from("/").join("d".repeat(90));
        let p = Paths::for_home(&deep, Some("/run/user/1000".into()), 1000);
        assert!(p.run_relocated);
        assert!(p.run.starts_with("/run/user/1000"), "{}", p.run.display());
        let longest = p.socket(&"x".repeat(64));
        assert!(longest.as_os_str().len() <= SOCKET_PATH_MAX);
        let p = Paths::for_home(&deep, None, 1000);
        assert!(
            p.run.to_string_lossy().starts_with("/tmp/iapeer-1000-"),
            "{}",
            p.run.display()
        );
        let shallow = Paths::for_home(Path::new("/home/u/.iapeer"), None, 1000);
        assert!(!shallow.run_relocated);
    }
}
