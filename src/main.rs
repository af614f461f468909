//! `iapeer`: parse, start diagnostics, run, and turn an error into one line
//! on stderr and the exit code of DESIGN §9.

use clap::Parser;

use iapeer::cli::Cli;

fn main() {
    let cli = Cli::parse();
    // The daemon sets up its own diagnostics (journald or a file).
    if !matches!(cli.command, Some(iapeer::cli::Command::Daemon(_))) {
        iapeer::diagnostics::init_cli(cli.verbose);
    }
    if cli
        .command
        .as_ref()
        .is_some_and(iapeer::cli::Command::only_reads)
    {
        // `iapeer status | head`: a reader whose pipe closes ends quietly,
        // as Unix tools do. (Verbs that act keep going to finish their work.)
        // SAFETY: restoring the default disposition, before any thread.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let code = match iapeer::cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("iapeer: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}
