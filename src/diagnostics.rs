//! The program's own diagnostics, through `tracing`: warnings on stderr for
//! the CLI; for the daemon, stderr under journald or a rolling file under
//! `logs/daemon/`. Never used for the decision log, which must not drop a
//! line (see `lifecycle_log`).

use crate::store::config;
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

/// How many diagnostic lines may wait for the file writer.
const DIAGNOSTIC_LINES_QUEUED: usize = 1024;

/// The daemon's diagnostics: stderr under journald (`JOURNAL_STREAM`), else
/// a daily file under `logs/daemon/` (seven kept). Keep the guard for the
/// life of the program: dropping it flushes and stops the writer.
pub(crate) fn init_daemon(
    verbose: u8,
    config: &config::Config,
) -> crate::Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
    let decisions = config.paths.lifecycle_log.display();
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter(verbose, "info"))
            .with_writer(std::io::stderr)
            .without_time()
            .with_ansi(false)
            .try_init();
        eprintln!("iapeer daemon: diagnostics to the journal; decisions in {decisions}");
        return Ok(None);
    }
    let dir = &config.paths.daemon_log_dir;
    config::ensure_private_dir(dir, true)?;
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("iapeer")
        .filename_suffix("log")
        .max_log_files(7)
        .build(dir)
        .map_err(|e| {
            crate::Error::failed(
                dir.display().to_string(),
                e.to_string(),
                "check the directory",
            )
        })?;
    // The default queue holds 128,000 lines, allocated up front: 4 MiB of a
    // daemon that otherwise needs less than that. Diagnostics are few; past
    // this many queued (a stalled disk) lines are dropped rather than
    // stalling decisions, which have their own durable log.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(DIAGNOSTIC_LINES_QUEUED)
        .lossy(true)
        .finish(appender);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(verbose, "info"))
        .with_writer(writer)
        .with_ansi(false)
        .try_init();
    // The appender names each day's file by its UTC date.
    let today = time::OffsetDateTime::now_utc().date();
    eprintln!(
        "iapeer daemon: diagnostics in {} (a new file each day, seven kept); decisions in {decisions}",
        dir.join(format!(
            "iapeer.{:04}-{:02}-{:02}.log",
            today.year(),
            u8::from(today.month()),
            today.day()
        ))
        .display()
    );
    Ok(Some(guard))
}
