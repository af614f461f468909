//! One module per subcommand, each exposing `run` (or a verb).

pub(crate) mod config;
pub(crate) mod control;
pub(crate) mod dispatch;
pub(crate) mod events;
pub(crate) mod explain;
pub mod log;
pub(crate) mod peers;
pub(crate) mod pool;
pub(crate) mod self_fresh;
pub(crate) mod status;
pub(crate) mod wake;
pub(crate) mod why;

use crate::cli::{Cli, Command};
use crate::core::clock::EpochMs;
use crate::core::error::{Error, Result};
use crate::core::vocab::Source;
use crate::store::config::Config;

/// What every command starts from.
#[derive(Debug)]
pub(crate) struct App {
    pub config: Config,
    pub source: Source,
}

/// Runs the parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let app = App {
        config: Config::from_env()?,
        source: Source::Cli,
    };
    let Some(command) = cli.command else {
        app.config.ensure_home()?;
        use clap::CommandFactory;
        Cli::command().print_help().ok();
        println!("\nhome: {}", app.config.home.display());
        return Ok(0);
    };
    match command {
        Command::Daemon(args) => crate::daemon::run(app.config, cli.verbose, args.allow_remote),
        Command::Add(args) => peers::add(&app, args),
        Command::Rm(args) => peers::rm(&app, args),
        Command::Ls(args) => peers::ls(&app, args),
        Command::Wake(args) => wake::run(&app, args),
        Command::Stop(args) => control::stop(&app, args),
        Command::Start(args) => control::start(&app, args),
        Command::Reset(args) => control::reset(&app, args),
        Command::Restart(args) => control::restart(&app, args),
        Command::Refresh(args) => control::refresh(&app, args),
        Command::SelfFresh => self_fresh::run(&app),
        Command::Status(args) => status::run(&app, args),
        Command::Explain(args) => explain::run(&app, args),
        Command::Log(args) => log::run(&app, args),
        Command::Why(args) => why::run(&app, args, cli.verbose > 0),
        Command::Events(args) => events::run(&app, args),
        Command::Pool(cmd) => pool::run(&app, cmd),
        Command::Dispatch(args) => dispatch::run(&app, args),
        Command::Config(args) => config::run(&app, args),
    }
}

/// Rows as left-aligned columns, two spaces apart.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `--since`/`--until`: a duration back from now, or an RFC 3339 time.
pub(crate) fn when(flag: &str, s: &str, now: EpochMs) -> Result<EpochMs> {
    crate::core::clock::parse_when(s, now).ok_or_else(|| {
        Error::Usage(format!(
            "{flag} {s:?} is neither a duration (90s, 15m, 1h, 2d) nor an RFC 3339 time"
        ))
    })
}
