//! One error type for the whole program. Every variant says what was being
//! done, to which file or peer, and what to do next; `exit_code` maps it onto
//! the exit codes of DESIGN §9, which scripts branch on.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug)]
pub enum Error {
    /// Bad command-line usage that the parser could not catch.
    Usage(String),
    /// A malformed environment variable (DESIGN §10).
    Config {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
    /// A name that is not a valid identity (DESIGN §1).
    Identity { name: String, why: &'static str },
    /// Outside input that cannot be used as it is: a peer definition, a
    /// `.session` record, a topic, a task text.
    Input {
        subject: String,
        problem: String,
        hint: String,
    },
    /// A file iapeer refuses to read or write: a symlink, not a regular file,
    /// owned by someone else, or far larger than its format allows.
    Unsafe { path: PathBuf, problem: String },
    /// No definition for this peer.
    NoPeer { name: String, path: PathBuf },
    /// An I/O error, with the path and what was being done.
    Io {
        path: PathBuf,
        doing: &'static str,
        source: io::Error,
    },
    /// A refusal that scripts branch on (exit codes 3 to 6).
    Refused(Refusal),
    /// Something did not work; the message says what and what to try.
    Failed {
        subject: String,
        problem: String,
        hint: String,
    },
    /// `iapeer wait` gave up (exit 8).
    TimedOut { waited_for: String, secs: f64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Stopped {
        identity: String,
    },
    CrashLoop {
        identity: String,
        deaths: usize,
        window_secs: u64,
        retry_after_ms: i64,
    },
    /// iapeer gave up on it after the guard refused window after window.
    Failed {
        identity: String,
        since_ms: Option<i64>,
    },
    External {
        identity: String,
        supervisor: String,
    },
    LockHeld {
        identity: String,
        waited_ms: u64,
    },
    /// Every member of a pool is busy and the pool is at its size.
    PoolFull {
        pool: String,
        max: u32,
    },
}

impl Error {
    pub(crate) fn io(path: impl AsRef<Path>, doing: &'static str, source: io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            doing,
            source,
        }
    }

    pub(crate) fn unsafe_file(path: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        Error::Unsafe {
            path: path.as_ref().to_path_buf(),
            problem: problem.into(),
        }
    }

    pub(crate) fn input(
        subject: impl Into<String>,
        problem: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Error::Input {
            subject: subject.into(),
            problem: problem.into(),
            hint: hint.into(),
        }
    }

    pub(crate) fn failed(
        subject: impl Into<String>,
        problem: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Error::Failed {
            subject: subject.into(),
            problem: problem.into(),
            hint: hint.into(),
        }
    }

    /// The process exit code for this error (DESIGN §9).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_)
            | Error::Config { .. }
            | Error::Identity { .. }
            | Error::Input { .. }
            | Error::Unsafe { .. }
            | Error::NoPeer { .. } => 2,
            Error::Io { .. } | Error::Failed { .. } => 1,
            Error::Refused(r) => r.exit_code(),
            Error::TimedOut { .. } => 8,
        }
    }
}

impl Refusal {
    pub fn exit_code(&self) -> i32 {
        match self {
            Refusal::Stopped { .. } => 3,
            Refusal::CrashLoop { .. } | Refusal::Failed { .. } => 4,
            Refusal::External { .. } => 5,
            Refusal::LockHeld { .. } => 6,
            Refusal::PoolFull { .. } => 7,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => f.write_str(msg),
            Error::Config {
                var,
                value,
                expected,
            } => write!(
                f,
                "{var}={value:?} is not valid: expected {expected}; fix or unset {var}"
            ),
            Error::Identity { name, why } => write!(
                f,
                "{name:?} is not a valid peer name: {why}; \
                 use 1 to 64 characters from A-Z a-z 0-9 _ -, starting with a letter or digit"
            ),
            Error::Input {
                subject,
                problem,
                hint,
            } => write!(f, "{subject}: {problem}; {hint}"),
            Error::Unsafe { path, problem } => write!(
                f,
                "refusing {}: {problem}; iapeer only uses regular files it owns, \
                 so remove or replace it",
                path.display()
            ),
            Error::NoPeer { name, path } => write!(
                f,
                "no peer named {name:?} ({} does not exist); \
                 define it with `iapeer add {name} --cwd DIR`, or see `iapeer ls`",
                path.display()
            ),
            Error::Io {
                path,
                doing,
                source,
            } => {
                write!(f, "could not {doing} {}: {source}", path.display())?;
                match source.kind() {
                    io::ErrorKind::PermissionDenied => {
                        f.write_str("; check its owner and permissions")
                    }
                    io::ErrorKind::StorageFull => f.write_str("; free some disk space"),
                    io::ErrorKind::QuotaExceeded => f.write_str("; the disk quota is used up"),
                    io::ErrorKind::ReadOnlyFilesystem => {
                        f.write_str("; its file system is mounted read-only")
                    }
                    io::ErrorKind::NotFound => {
                        f.write_str("; check that the folder exists (and IAPEER_HOME)")
                    }
                    _ => f.write_str("; check the disk, then retry"),
                }
            }
            Error::Refused(r) => r.fmt(f),
            Error::TimedOut { waited_for, secs } => write!(
                f,
                "timed out after {secs:.0}s waiting for {waited_for}; \
                 see `iapeer status` and `iapeer why`, or wait longer with --timeout"
            ),
            Error::Failed {
                subject,
                problem,
                hint,
            } => write!(f, "{subject}: {problem}; {hint}"),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Stopped { identity } => write!(
                f,
                "{identity} is stopped by an operator; `iapeer start {identity}` lifts it"
            ),
            Refusal::CrashLoop {
                identity,
                deaths,
                window_secs,
                retry_after_ms,
            } => write!(
                f,
                "{identity} is crash-looping ({deaths} deaths in the last {window_secs}s); \
                 retry after {}, or inspect it with `iapeer why {identity}` \
                 and clear the guard with `iapeer reset {identity}`",
                crate::core::clock::format_ms(*retry_after_ms)
            ),
            Refusal::Failed { identity, since_ms } => write!(
                f,
                "iapeer gave up on {identity}{}: it kept dying and the crash-loop guard \
                 refused it window after window; see `iapeer why {identity}`, fix the cause, \
                 then `iapeer reset {identity}` (or `iapeer start {identity}`)",
                since_ms
                    .map(|ms| format!(" at {}", crate::core::clock::format_ms(ms)))
                    .unwrap_or_default()
            ),
            Refusal::External {
                identity,
                supervisor,
            } => write!(
                f,
                "{identity} is supervised by {supervisor}, not iapeer; \
                 manage it there, or remove external_supervisor from its definition"
            ),
            Refusal::PoolFull { pool, max } => write!(
                f,
                "pool {pool} is full: all {max} members are busy; retry when one is free, \
                 or raise its max in pools/{pool}.json"
            ),
            Refusal::LockHeld {
                identity,
                waited_ms,
            } => write!(
                f,
                "another process is bringing {identity} up (its wake lock was held for {waited_ms} ms); \
                 retry in a moment"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What a caught panic said, for the line that reports it.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}
