//! One module per subcommand, each exposing `run`.

pub mod log;

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::error::Result;
use crate::lifecycle_log::{LogWriter, Source};
use crate::markers::StateDir;

/// What every command works with.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub source: Source,
}

impl App {
    pub fn from_env(source: Source) -> Result<Self> {
        Ok(App {
            config: Config::from_env()?,
            source,
        })
    }

    /// The state directory, creating the home on first use.
    pub fn state(&self) -> Result<StateDir> {
        self.config.ensure_home()?;
        StateDir::open(&self.config.paths.lifecycle)
    }

    pub fn log_writer(&self) -> LogWriter {
        LogWriter::new(&self.config)
    }
}

/// Runs the parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let app = App::from_env(Source::Cli)?;
    match cli.command {
        None => {
            app.config.ensure_home()?;
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            cmd.print_help().ok();
            println!("\nhome: {}", app.config.home.display());
            Ok(0)
        }
        Some(Command::Log(args)) => log::run(&app, args),
    }
}
