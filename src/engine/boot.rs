//! The ready gate of a boot (DESIGN §6): waiting for the runtime's ready
//! screen, recording a boot that failed, and finishing a boot whose waking
//! process went away — the same way whether the CLI or the daemon finds it.

use std::time::{Duration, Instant};

use crate::core::clock;
use crate::core::error::Result;
use crate::core::identity::Identity;
use crate::core::peer::Dialogs;
use crate::core::peer::Peer;
use crate::core::session::{Liveness, SessionRecord};
use crate::core::vocab::{Action, Cause, Ev, Mode};
use crate::engine::ctx::Ctx;
use crate::engine::ending::{self, LAST_LINES};
use crate::os::process;
use crate::runtime::host::{self, ExitStatus};
use crate::runtime::{self, Dialog, Runtime, Screen};

/// How a boot went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Boot {
    Ready,
    ResumeFailed(String),
    Died {
        status: ExitStatus,
        last_lines: String,
        /// The line that says what went wrong, when one does (an error
        /// line above a backtrace, say).
        said: Option<String>,
    },
    TimedOut {
        last_lines: String,
    },
    /// Stopped at a screen only the operator can answer.
    Blocked {
        reason: String,
        last_lines: String,
    },
}

impl Boot {
    pub(crate) fn describe(&self) -> String {
        match self {
            Boot::Ready => "ready".into(),
            Boot::ResumeFailed(line) => format!("the runtime said: {line}"),
            Boot::Died {
                status,
                last_lines,
                said,
            } => {
                let last = said
                    .as_deref()
                    .unwrap_or_else(|| last_lines.lines().last().unwrap_or(""))
                    .trim();
                format!(
                    "it exited during start-up (status {status}){}",
                    if last.is_empty() {
                        String::new()
                    } else {
                        format!(": {last}")
                    }
                )
            }
            Boot::TimedOut { .. } => "it did not become ready before the boot deadline".into(),
            Boot::Blocked { reason, .. } => reason.clone(),
        }
    }
}

/// Lines read back from a session that died starting, to find what it said.
const LOOK_BACK: usize = 200;

/// The line of a dead session's screen that says what went wrong: the last
/// error or panic line, which a backtrace printed after it would otherwise
/// hide below the last lines kept (`RUST_BACKTRACE` in the environment
/// makes the Codex CLI print one).
fn telling_line(screen: &str) -> Option<&str> {
    const SAYS: [&str; 6] = ["Error:", "error:", "ERROR:", "Error ", "fatal:", "FATAL:"];
    screen
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| SAYS.iter().any(|s| l.starts_with(s)) || l.contains("panicked at"))
}

/// Waits for the ready gate: the runtime's ready screen, with no start-up
/// dialog in the way; the process must stay alive meanwhile.
pub(crate) fn await_ready(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    runtime: &dyn Runtime,
    rec: &SessionRecord,
    deadline: Instant,
) -> Boot {
    let mut pause = Duration::from_millis(5);
    let mut answered: Vec<&'static str> = Vec::new();
    let mut ready_since: Option<Instant> = None;
    let mut blocked_since: Option<Instant> = None;
    let unseen = runtime.ready_unseen(peer);
    loop {
        let screen = if unseen {
            String::new()
        } else {
            ctx.host
                .capture(&rec.socket, id.as_str(), 60)
                .unwrap_or_default()
        };
        if process::liveness(rec.pane_pid, rec.pane_start) == Liveness::Dead {
            // Far enough back to find the error above a backtrace.
            let (status, back) = ending::dead_pane(ctx, rec, LOOK_BACK);
            let screen = back.unwrap_or(screen);
            if let Screen::ResumeFailed(line) = runtime.screen(peer, &screen) {
                return Boot::ResumeFailed(line);
            }
            return Boot::Died {
                status,
                said: telling_line(&screen).map(str::to_owned),
                last_lines: host::last_lines(&screen, LAST_LINES),
            };
        }
        let reading = runtime::read_screen(runtime, peer, &screen);
        if reading != Screen::Ready {
            ready_since = None;
        }
        if !matches!(reading, Screen::Blocked(_)) {
            blocked_since = None;
        }
        match reading {
            Screen::Ready => {
                let since = *ready_since.get_or_insert_with(Instant::now);
                let held = since.elapsed();
                if held >= runtime.ready_settle() {
                    return Boot::Ready;
                }
                // Look again once it has held long enough, deadline or not:
                // a single look (the daemon's) must be able to pass too.
                std::thread::sleep(runtime.ready_settle() - held);
                continue;
            }
            Screen::ResumeFailed(line) => return Boot::ResumeFailed(line),
            Screen::NotYet => {}
            // A capture can catch a dialog half drawn, or the moment one
            // gives way to the next: only a screen that stays is one to
            // give up on.
            Screen::Blocked(reason)
                if blocked_since.get_or_insert_with(Instant::now).elapsed() >= BLOCKED_HOLD =>
            {
                return Boot::Blocked {
                    reason,
                    last_lines: host::last_lines(&screen, LAST_LINES),
                }
            }
            Screen::Blocked(_) => {}
            Screen::Dialog(dialog) => {
                if let Err(reason) = answer(ctx, id, peer, rec, dialog, &mut answered) {
                    return Boot::Blocked {
                        reason,
                        last_lines: host::last_lines(&screen, LAST_LINES),
                    };
                }
                pause = Duration::from_millis(5);
                continue;
            }
        }
        if Instant::now() >= deadline {
            return Boot::TimedOut {
                last_lines: host::last_lines(&screen, LAST_LINES),
            };
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// How long a screen iapeer must not answer has to stay before the boot
/// gives up on it.
const BLOCKED_HOLD: Duration = Duration::from_millis(1500);

/// How many times one dialog is answered before iapeer gives up on it.
const ANSWERS_MAX: usize = 3;

/// Answers a start-up dialog (DESIGN §6), logging one line per answer, or
/// says why it will not: dialogs are manual for this peer, or answering
/// did not make it go away.
fn answer(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    rec: &SessionRecord,
    dialog: &'static Dialog,
    answered: &mut Vec<&'static str>,
) -> Result<(), String> {
    let attach = format!("tmux -S {} attach -t ={id}", rec.socket.display());
    if peer.dialogs == Dialogs::Manual {
        return Err(format!(
            "its {} dialog is waiting for an answer, and this peer answers none (\"dialogs\": \"manual\"): answer it in its terminal ({attach}), or set \"dialogs\": \"auto\"",
            dialog.name
        ));
    }
    if answered.iter().filter(|n| **n == dialog.name).count() >= ANSWERS_MAX {
        return Err(format!(
            "its {} dialog stayed after {ANSWERS_MAX} answers: look at it in its terminal ({attach})",
            dialog.name
        ));
    }
    answered.push(dialog.name);
    ctx.host
        .send_keys(&rec.socket, id.as_str(), dialog.keys)
        .map_err(|e| e.to_string())?;
    let mut line = ctx
        .record(Ev::Wake)
        .identity(id)
        .runtime(&rec.runtime)
        .action(Action::DialogAnswered)
        .session(&rec.session);
    line.dialog = Some(dialog.name.to_owned());
    if let Some(persists) = dialog.persists {
        line = line.reason(format!("answering it {persists}"));
    }
    if let Err(e) = ctx.log(&line) {
        tracing::error!(
            "could not log the answer to {id}'s {} dialog: {e}",
            dialog.name
        );
    }
    // The answer takes a moment to land: give the dialog time to go before
    // reading it as still there. Gone means gone on two looks in a row: a
    // look can catch the client redrawing the dialog half way, and a
    // second answer to a dialog still there types its keys into what
    // comes after it.
    let deadline = Instant::now() + DIALOG_GONE;
    let mut absent = 0;
    while Instant::now() < deadline && absent < 2 {
        std::thread::sleep(Duration::from_millis(50));
        absent = match ctx.host.capture(&rec.socket, id.as_str(), 60) {
            Ok(s) if !dialog.on(&s) => absent + 1,
            _ => 0,
        };
    }
    Ok(())
}

/// How long a dialog's answer is given to take it off the screen (a
/// client on a loaded machine can take seconds to act on a key).
const DIALOG_GONE: Duration = Duration::from_secs(6);

/// A boot that failed: kill it, record the death, log it as the failed
/// wake; returns the cause it was logged with.
pub(crate) fn boot_failed(
    ctx: &Ctx,
    id: &Identity,
    rec: SessionRecord,
    boot: Boot,
) -> Result<Cause> {
    let mut blocked = None;
    let mut said = None;
    let (cause, status, last_lines) = match boot {
        Boot::Ready => unreachable!("only failed boots are recorded"),
        Boot::TimedOut { last_lines } => (Cause::BootTimeout, None, Some(last_lines)),
        Boot::Died {
            status,
            last_lines,
            said: line,
        } => {
            said = line.map(|l| format!("it said: {l}"));
            (Cause::LaunchFailed, Some(status), Some(last_lines))
        }
        Boot::ResumeFailed(line) => (Cause::LaunchFailed, None, Some(line)),
        Boot::Blocked { reason, last_lines } => {
            blocked = Some(reason);
            (Cause::LaunchFailed, None, Some(last_lines))
        }
    };
    if cause == Cause::BootTimeout || blocked.is_some() {
        // Still running but never ready: end it before recording.
        ctx.host.kill(
            &rec.socket,
            id.as_str(),
            Some((rec.pane_pid, rec.pane_start)),
        )?;
    }
    let reason = blocked.or(said);
    ending::record_boot_failure(ctx, id, rec, cause, status, last_lines, reason)?;
    Ok(cause)
}

/// What finishing an interrupted boot found.
#[derive(Debug)]
pub(crate) enum Interrupted {
    /// It passed its ready gate: recorded, and its `ready` line logged.
    Ready(Box<SessionRecord>),
    /// Still starting, inside its boot deadline.
    Starting,
    /// It failed its boot (died, resume refused, deadline missed):
    /// recorded as the failed wake it is.
    Failed,
}

/// A session left starting by a wake that went away. Waits for its ready
/// gate until `until` (the daemon looks once; a wake waits out what is
/// left of the boot deadline), then finishes the boot as its own wake
/// would have: ready is recorded and logged once; a death, a refused
/// resume or a missed deadline is a failed boot. The same from the CLI and
/// the daemon. Call with the wake lock held.
pub(crate) fn finish_interrupted(
    ctx: &Ctx,
    id: &Identity,
    peer: &Peer,
    mut rec: SessionRecord,
    until: Instant,
) -> Result<Interrupted> {
    let runtime = runtime::for_peer(&ctx.config, peer);
    let now = ctx.now();
    let started = rec.started_ms().unwrap_or(now);
    let elapsed = Duration::from_millis(now.saturating_sub(started).max(0) as u64);
    let left = ctx.config.boot_deadline.saturating_sub(elapsed);
    let deadline = Instant::now() + left;
    let until = until.min(deadline);
    let boot = await_ready(ctx, id, peer, runtime.as_ref(), &rec, until);
    match boot {
        Boot::Ready => {
            let now = ctx.now();
            rec.ready_at = Some(clock::format_ms(now));
            // A waker killed between its ready line and recording it: the
            // line is there already, and is not written twice.
            if !ending::log_has(ctx, &rec.session, |e| e.ev() == Some(Ev::Ready)) {
                let mut line = ctx
                    .record(Ev::Ready)
                    .identity(id)
                    .runtime(&rec.runtime)
                    .session(&rec.session)
                    .reason("the ready gate passed after the waking process had gone");
                line.mode = Mode::parse(&rec.mode);
                line.cause = Cause::parse(&rec.cause);
                line.latency_ms = Some(now.saturating_sub(started).max(0) as u64);
                ctx.log(&line)?;
            }
            ctx.state.write_session(id, &rec)?;
            Ok(Interrupted::Ready(Box::new(rec)))
        }
        Boot::TimedOut { .. } if !left.is_zero() && until < deadline => Ok(Interrupted::Starting),
        failed => {
            boot_failed(ctx, id, rec, failed)?;
            Ok(Interrupted::Failed)
        }
    }
}

/// A boot past its deadline with no definition to read its screen by: it
/// can only have timed out.
pub(crate) fn time_out(ctx: &Ctx, id: &Identity, rec: SessionRecord) -> Result<Cause> {
    let last = ctx
        .host
        .capture(&rec.socket, id.as_str(), LAST_LINES)
        .unwrap_or_default();
    let last_lines = host::last_lines(&last, LAST_LINES);
    boot_failed(ctx, id, rec, Boot::TimedOut { last_lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_telling_line_is_the_last_error_above_a_backtrace() {
        let mut codex = String::from(
            "\nError: The cursor position could not be read within a normal duration\n\nStack backtrace:\n",
        );
        for i in 0..30 {
            codex.push_str(&format!("  {i}: <unknown>\n"));
        }
        let rows: &[(&str, Option<&str>)] = &[
            (
                &codex,
                Some("Error: The cursor position could not be read within a normal duration"),
            ),
            (
                "thread 'main' panicked at src/main.rs:3:5:\nboom\nnote: run with `RUST_BACKTRACE=1`",
                Some("thread 'main' panicked at src/main.rs:3:5:"),
            ),
            ("error: first\nerror: second\n  0: frame", Some("error: second")),
            ("fatal: not a git repository", Some("fatal: not a git repository")),
            // Nothing says it: the caller falls back on the last line.
            ("Goodbye\n$ ", None),
            ("an Error: mid-line is not one", None),
            ("", None),
        ];
        for (screen, want) in rows {
            assert_eq!(telling_line(screen), *want, "{screen:?}");
        }
        // Beyond the last lines kept, the error is still what is said.
        let died = Boot::Died {
            status: ExitStatus::Code(1),
            last_lines: host::last_lines(&codex, LAST_LINES),
            said: telling_line(&codex).map(str::to_owned),
        };
        assert!(
            !died.describe().contains("<unknown>"),
            "{}",
            died.describe()
        );
        assert!(
            died.describe().contains("cursor position"),
            "{}",
            died.describe()
        );
    }
}
