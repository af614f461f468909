//! The command line (DESIGN §9). Doc comments here are the help text.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Keeps a fleet of AI coding agents alive, lean and explainable.
///
/// State lives under IAPEER_HOME (default ~/.iapeer); every decision is
/// appended to logs/iapeer/lifecycle.log. Exit codes: 0 done, 1 failed,
/// 2 bad usage/config/input, 3 refused: stopped, 4 refused: crash loop,
/// 5 refused: external supervisor, 6 wake lock held (retry).
#[derive(Debug, Parser)]
#[command(
    name = "iapeer",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read the decision log across rotations.
    Log(LogArgs),
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only lines about this peer.
    #[arg(long, value_name = "NAME")]
    pub peer: Option<String>,
    /// Only lines at or after this: a duration back from now (90s, 15m, 1h,
    /// 2d) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only lines before this (same forms as --since).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Only this kind of event: wake, ready, supervise, stop, start, reset,
    /// daemon.
    #[arg(long, value_name = "KIND")]
    pub ev: Option<String>,
    /// Only lines with this cause (crash-or-self-close, crash-loop, …).
    #[arg(long)]
    pub cause: Option<String>,
    /// Print the raw JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// Anything clap gives us as an OsString that must be UTF-8.
pub fn utf8(arg: &str, value: OsString) -> crate::Result<String> {
    value
        .into_string()
        .map_err(|v| crate::Error::Usage(format!("{arg} {v:?} is not valid UTF-8")))
}

/// A path argument made absolute against the current directory.
pub fn absolute(path: PathBuf) -> crate::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path);
    }
    let cwd = std::env::current_dir().map_err(|e| crate::Error::io(".", "resolve", e))?;
    Ok(cwd.join(path))
}
