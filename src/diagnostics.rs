//! The program's own diagnostics, through `tracing`: warnings on stderr for
//! the CLI; for the daemon, stderr under journald or a rolling file under
//! `logs/daemon/`. Never used for the decision log, which must not drop a
//! line (see `lifecycle_log`).

use tracing_subscriber::EnvFilter;

fn filter(verbose: u8, default: &str) -> EnvFilter {
    let level = match verbose {
        0 => default,
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("iapeer={level}")))
}

/// Short lines on stderr: `-v` sets the level, `RUST_LOG` overrides.
pub fn init_cli(verbose: u8) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(verbose, "warn"))
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
}
