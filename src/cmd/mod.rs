//! One module per subcommand, each exposing `run` (or a verb).

pub(crate) mod config;
pub(crate) mod control;
pub(crate) mod dispatch;
pub(crate) mod doctor;
pub(crate) mod events;
pub(crate) mod explain;
pub mod log;
pub(crate) mod look;
pub(crate) mod peers;
pub(crate) mod pool;
pub(crate) mod queue;
pub(crate) mod self_fresh;
pub(crate) mod status;
pub(crate) mod wake;
pub(crate) mod why;

use crate::cli::{Cli, Command, Targets};
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
        Command::Set(args) => peers::set(&app, args),
        Command::Ls(args) => peers::ls(&app, args),
        Command::Wake(args) => wake::run(&app, args),
        Command::Stop(s) if s.at_turn_end => each(&app, &s.targets, control::stop_at_turn_end),
        Command::Stop(s) => each(&app, &s.targets, control::stop),
        Command::Start(t) => each(&app, &t, control::start),
        Command::Reset(t) => each(&app, &t, control::reset),
        Command::Restart(t) => each(&app, &t, control::restart),
        Command::Refresh(t) => each(&app, &t, control::refresh),
        Command::Interrupt(t) => each(&app, &t, look::interrupt),
        Command::SelfFresh => self_fresh::run(&app),
        Command::Status(args) => status::run(&app, args),
        Command::Explain(args) => explain::run(&app, args),
        Command::Log(args) => log::run(&app, args),
        Command::Why(args) => why::run(&app, args, cli.verbose > 0),
        Command::Events(args) => events::run(&app, args),
        Command::Pool(cmd) => pool::run(&app, cmd),
        Command::Queue(args) => queue::run(&app, args),
        Command::Dispatch(args) => dispatch::run(&app, args),
        Command::Config(args) => config::run(&app, args),
        Command::Doctor(args) => doctor::run(&app, args),
        Command::Attach(args) => look::attach(&app, args),
        Command::Peek(args) => look::peek(&app, args),
        Command::Wait(args) => look::wait(&app, args),
        Command::Completions(args) => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(args.shell, &mut cmd, "iapeer", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .map_err(|e| Error::io("stdout", "write", e))?;
            Ok(0)
        }
    }
}

/// Runs `verb` on every target in turn, going on past a failure (each is
/// said on stderr, naming its peer); the exit code is the first failure's.
fn each(app: &App, targets: &Targets, verb: fn(&App, &str) -> Result<i32>) -> Result<i32> {
    let names = resolve(app, targets)?;
    if names.len() == 1 {
        return verb(app, &names[0]);
    }
    let mut first_failure = 0;
    for name in &names {
        let code = match verb(app, name) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("iapeer: {name}: {e}");
                e.exit_code()
            }
        };
        if first_failure == 0 {
            first_failure = code;
        }
    }
    Ok(first_failure)
}

/// The names a verb acts on: those given, then every peer (`--all`) or a
/// pool's members (`--pool`), each once, in order.
pub(crate) fn resolve(app: &App, t: &Targets) -> Result<Vec<String>> {
    let mut names = t.names.clone();
    if t.all {
        for peer in crate::store::definitions::load_peers(&app.config.paths)? {
            match peer {
                Ok(p) => names.push(p.name),
                Err(e) => eprintln!("iapeer: {e}"),
            }
        }
        if names.is_empty() {
            return Err(Error::Usage(format!(
                "--all: no peers are defined in {}",
                app.config.paths.peers.display()
            )));
        }
    }
    if let Some(pool) = &t.pool {
        let pool = crate::store::definitions::load_pool(&app.config.paths, pool)?;
        names.extend(pool.members().iter().map(|m| m.to_string()));
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    Ok(names)
}

/// Rows as left-aligned columns, two spaces apart.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    table_by(rows, |s| s.chars().count())
}

/// [`table`], measuring each cell with `width` (which may skip what takes
/// no room on a terminal, like colour codes).
pub(crate) fn table_by(rows: &[Vec<String>], width: impl Fn(&str) -> usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| width(s))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                line.push_str(&" ".repeat(widths[c] - width(cell) + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `--since`/`--until`: a duration back from now, an RFC 3339 time, or a
/// local time of day (`08:46`, `today`, `yesterday`).
pub(crate) fn when(flag: &str, s: &str, now: EpochMs) -> Result<EpochMs> {
    let offset = crate::os::clock::local_offset_secs(now);
    crate::core::clock::parse_when_local(s, now, offset).ok_or_else(|| {
        Error::Usage(format!(
            "{flag} {s:?} is not a time: use a duration back from now (90s, 15m, 1h, 2d), \
             an RFC 3339 time, HH:MM (local), today or yesterday"
        ))
    })
}
