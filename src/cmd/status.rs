//! `iapeer status`: state per peer, as an aligned table (`-o wide` for
//! more), or JSON; `-w` redraws it whenever a decision is logged.

use std::io::IsTerminal;
use std::time::Duration;

use crate::cli::{ColorArg, OutputArg, StatusArgs};
use crate::cmd::App;
use crate::core::clock::{self, EpochMs};
use crate::core::error::Result;
use crate::core::identity::Identity;
use crate::core::metrics::CrashedTask;
use crate::engine::ctx::Ctx;
use crate::engine::status::{self, LifecycleState, PeerStatus};

pub(crate) fn run(app: &App, args: StatusArgs) -> Result<i32> {
    let only = args.name.as_deref().map(Identity::parse).transpose()?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let output = if args.json {
        OutputArg::Json
    } else {
        args.output
    };
    let colour = match args.color {
        ColorArg::Always => true,
        ColorArg::Never => false,
        ColorArg::Auto => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    use std::io::Write;
    if !args.watch {
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
        return match render(&ctx, only.as_ref(), output, colour, &mut out)
            .and_then(|()| out.flush().map_err(stdout_error))
        {
            // A reader gone (`| head`) is no failure of status.
            Err(crate::Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::BrokenPipe =>
            {
                Ok(0)
            }
            done => done.map(|()| 0),
        };
    }
    // Redraw when the log's folder changes (a decision was logged), and
    // every few seconds for the ages.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |_| {
        let _ = tx.send(());
    })
    .map_err(|e| crate::Error::failed("status --watch", e.to_string(), "run status without -w"))?;
    use notify::Watcher;
    watcher
        .watch(
            &ctx.config.paths.log_dir,
            notify::RecursiveMode::NonRecursive,
        )
        .map_err(|e| {
            crate::Error::failed("status --watch", e.to_string(), "run status without -w")
        })?;
    let clear = std::io::stdout().is_terminal();
    loop {
        // Drawn whole, then shown at once.
        let mut screen = Vec::new();
        if clear {
            screen.extend_from_slice(b"\x1b[H\x1b[2J");
        }
        render(&ctx, only.as_ref(), output, colour, &mut screen)?;
        if !clear {
            screen.push(b'\n');
        }
        let mut out = std::io::stdout().lock();
        if out.write_all(&screen).and_then(|()| out.flush()).is_err() {
            return Ok(0);
        }
        drop(out);
        let _ = rx.recv_timeout(Duration::from_secs(5));
        // A burst of lines is one redraw.
        std::thread::sleep(Duration::from_millis(100));
        while rx.try_recv().is_ok() {}
    }
}

fn stdout_error(e: std::io::Error) -> crate::Error {
    crate::Error::io("standard output", "write", e)
}

/// Writes to `to` the screen (or the JSON document) status prints.
fn render(
    ctx: &Ctx,
    only: Option<&Identity>,
    output: OutputArg,
    colour: bool,
    to: &mut impl std::io::Write,
) -> Result<()> {
    let mut checkpoint = Vec::new();
    let all = status::collect(ctx, only, &mut checkpoint)?;
    let daemon = crate::daemon::lock::is_running(&ctx.config.paths.daemon_lock());
    let dashboard = daemon
        .then(|| crate::http::look(&ctx.config, DASHBOARD_LOOK))
        .flatten();
    if output == OutputArg::Json {
        let look = dashboard
            .as_ref()
            .map_or(serde_json::Value::Null, |d| d.to_json());
        return status::document(ctx, &all, daemon, Some(("dashboard", look)), to)
            .and_then(|()| to.write_all(b"\n"))
            .map_err(stdout_error);
    }
    let now = ctx.now();
    let wide = output == OutputArg::Wide;
    let mut out = String::new();
    for s in &all {
        if let Err(e) = s {
            out.push_str(&format!("iapeer: {e}\n"));
        }
    }
    let peers: Vec<&PeerStatus> = all.iter().flatten().collect();
    // What the table shows of each peer's counters, read once.
    #[derive(Default, serde::Deserialize)]
    #[serde(default)]
    struct Counted {
        deaths: u64,
        crashed_task: Option<CrashedTask>,
    }
    let counted: Vec<Counted> = peers
        .iter()
        .map(|s| {
            s.lifecycle_metrics.part(|m| Counted {
                deaths: m.deaths,
                crashed_task: m.crashed_task.clone(),
            })
        })
        .collect();
    if peers.is_empty() && only.is_none() {
        out.push_str(&format!(
            "no peers are defined (in {}); add one with `iapeer add NAME --cwd DIR`\n",
            ctx.config.paths.peers.display()
        ));
    } else {
        let mut header = vec![
            "NAME",
            "STATE",
            "ACTIVITY",
            "RUNTIME",
            "POLICY",
            "UP",
            "DEATHS",
            "LAST DECISION",
        ];
        if wide {
            header.splice(6..6, ["SESSION", "PID", "CAUSE"]);
        }
        let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
        for (s, counted) in peers.iter().zip(&counted) {
            let state = s.lifecycle_state.as_str();
            let mut row = vec![
                s.name.clone(),
                if colour {
                    paint(s.lifecycle_state, state)
                } else {
                    state.to_owned()
                },
                s.activity.as_ref().map_or("-".to_owned(), |a| {
                    match clock::parse_rfc3339(&a.since) {
                        Some(t) => format!(
                            "{} {}",
                            a.state,
                            human_age(now.saturating_sub(t).max(0) as u64 / 1000)
                        ),
                        None => a.state.clone(),
                    }
                }),
                s.runtime.clone(),
                match &s.pool {
                    Some(p) => format!("{}@{p}", s.policy),
                    None => s.policy.clone(),
                },
                s.session
                    .as_ref()
                    .map_or("-".to_owned(), |i| human_age(i.age_secs)),
                counted.deaths.to_string(),
                s.last_decision.as_ref().map_or("-".to_owned(), |d| {
                    let d = d.value();
                    let when = if wide {
                        d.ts.clone()
                    } else {
                        clock::parse_rfc3339(&d.ts).map_or(d.ts.clone(), |t| ago(now, t))
                    };
                    format!("{when} {}", d.summary)
                }),
            ];
            if wide {
                let i = s.session.as_ref();
                row.splice(
                    6..6,
                    [
                        i.map_or("-".into(), |i| {
                            i.session.get(..8).unwrap_or(&i.session).to_owned()
                        }),
                        i.map_or("-".into(), |i| i.pid.to_string()),
                        i.map_or("-".into(), |i| i.cause.clone()),
                    ],
                );
            }
            rows.push(row);
        }
        // Colour codes take no room: align on the plain text.
        out.push_str(&align(&rows, colour));
    }
    for (s, counted) in peers.iter().zip(&counted) {
        if let Some(p) = &s.problem {
            out.push_str(&format!("{}: {p}\n", s.name));
        }
        if let Some(c) = &counted.crashed_task {
            out.push_str(&format!(
                "{}: its session died working on a task at {}: {:?}\n",
                s.name, c.ts, c.task
            ));
        }
        if let Some(r) = &s.retry_after {
            out.push_str(&format!(
                "{}: crash-loop guard: {} deaths in the window; it lifts at {r} (or `iapeer reset {}`)\n",
                s.name, s.deaths_in_window, s.name
            ));
        }
        if let Some(until) = s.session.as_ref().and_then(|i| i.limited_until.as_ref()) {
            out.push_str(&format!(
                "{}: its runtime hit a usage limit; held until {until}, then given its last task again\n",
                s.name
            ));
        }
        if s.lifecycle_state == LifecycleState::Failed {
            out.push_str(&format!(
                "{}: iapeer gave up on it; `iapeer why {}`, then `iapeer reset {}`\n",
                s.name, s.name, s.name
            ));
        }
    }
    if peers.iter().any(|s| s.session.is_some()) {
        out.push_str("look at one: `iapeer peek NAME`, or `iapeer attach NAME [--read-only]` (C-b d detaches)\n");
    }
    out.push_str(&format!(
        "daemon: {}; home {}{}\n",
        if daemon { "running" } else { "not running" },
        ctx.config.home.display(),
        if ctx.config.paths.run_relocated {
            format!(
                "; sockets in {} (the home's path is too long for them)",
                ctx.config.paths.run.display()
            )
        } else {
            String::new()
        }
    ));
    if let Some(d) = &dashboard {
        match &d.up {
            Ok(()) => out.push_str(&format!(
                "dashboard: up, {}\n",
                d.link.as_deref().unwrap_or(&d.url)
            )),
            Err(why) => out.push_str(&format!(
                "dashboard: DOWN at {}: {why}; see the daemon's diagnostics in logs/daemon/\n",
                d.url
            )),
        }
    }
    to.write_all(out.as_bytes()).map_err(stdout_error)
}

/// How long `status` waits for the dashboard to answer.
const DASHBOARD_LOOK: Duration = Duration::from_millis(500);

/// [`super::table`], measuring cells without their colour codes.
fn align(rows: &[Vec<String>], colour: bool) -> String {
    if colour {
        super::table_by(rows, |s| strip(s).chars().count())
    } else {
        super::table(rows)
    }
}

fn strip(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        match (esc, c) {
            (false, '\x1b') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

fn paint(state: LifecycleState, text: &str) -> String {
    let code = match state {
        LifecycleState::Alive => "32",
        LifecycleState::Starting => "33",
        LifecycleState::CrashLooping | LifecycleState::Failed => "31",
        LifecycleState::Stopped | LifecycleState::External => "2",
        LifecycleState::Asleep | LifecycleState::Parked => "36",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// How long ago `t` was, as a person reads it.
fn ago(now: EpochMs, t: EpochMs) -> String {
    let secs = (now.saturating_sub(t).max(0) / 1000) as u64;
    format!("{} ago", human_age(secs))
}

fn human_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_is_measured_without_its_codes() {
        let rows = vec![
            vec!["NAME".into(), "STATE".into(), "X".into()],
            vec![
                "a".into(),
                paint(LifecycleState::Alive, "alive"),
                "1".into(),
            ],
        ];
        let out = align(&rows, true);
        let lines: Vec<String> = out.lines().map(strip).collect();
        assert_eq!(lines, ["NAME  STATE  X", "a     alive  1"]);
    }

    #[test]
    fn ages_read_as_a_person_says_them() {
        assert_eq!(ago(100_000, 40_000), "1m0s ago");
        assert_eq!(ago(100_000, 200_000), "0s ago", "a time ahead is now");
        assert_eq!(human_age(90_000), "1d1h");
    }
}
