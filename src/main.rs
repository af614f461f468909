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
    // A verb that acts finishes the step it is on before it prints; if the
    // reader of its output has gone, it ends there, quietly, as a process
    // killed by SIGPIPE would (exit 141), not with a panic message.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let said = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if said.starts_with("failed printing to stdout") && said.contains("Broken pipe") {
            std::process::exit(128 + libc::SIGPIPE);
        }
        default_hook(info);
    }));
    if cli
        .command
        .as_ref()
        .is_some_and(iapeer::cli::Command::only_reads)
    {
        // `iapeer status | head`: a reader whose pipe closes ends at once,
        // as Unix tools do.
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
