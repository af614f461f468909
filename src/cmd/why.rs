//! `iapeer why`: the last bring-up and its cause, how the session before
//! it ended, the crash-loop guard, refusals since — in plain sentences.

use serde::Serialize;

use crate::cli::WhyArgs;
use crate::cmd::App;
use crate::core::crash_ring::Guard;
use crate::core::error::Result;
use crate::core::history;
use crate::core::history::History;
use crate::core::identity::Identity;
use crate::core::record::Entry;
use crate::engine::ctx::Ctx;
use crate::engine::status;

#[derive(Debug, Serialize)]
struct Answer {
    schema: u32,
    name: String,
    state: String,
    history: History,
    crash_loop: CrashLoop,
}

#[derive(Debug, Serialize)]
struct CrashLoop {
    deaths_in_window: usize,
    max: u32,
    window_secs: u64,
    retry_after: Option<String>,
}

pub(crate) fn run(app: &App, args: WhyArgs, verbose: bool) -> Result<i32> {
    let id = Identity::parse(&args.name)?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let peer = ctx.peer(&id)?;
    let key = format!("\"identity\":\"{id}\"");
    // From the end back, as far as the story told needs: the last bring-up
    // (with a resume tried before it), and the end of the session before
    // it; or, never brought up, back to the peer's latest `add` (or the
    // removal of an earlier peer of the same name), where its history
    // starts. So the cost follows the peer's recent past, not the log kept.
    let mut mine: Vec<Entry> = Vec::new();
    let mut brought_up = false;
    crate::store::log::for_each_backward(
        &ctx.config.paths.lifecycle_log,
        crate::store::log::holding(&key),
        |e| {
            if e.identity() != Some(id.as_str()) {
                return true;
            }
            if matches!(e.str("outcome"), Some("added" | "removed")) {
                return false;
            }
            let end = brought_up && history::is_end(&e);
            let launch = history::is_launch(&e) && e.str("cause") != Some("resume-failed-fresh");
            brought_up |= launch;
            mine.push(e);
            !end
        },
    )?;
    mine.reverse();
    let mut history = history::history(&mine);
    if !verbose {
        history.lines.clear();
    }
    let now = ctx.now();
    let status = status::peer_status(&ctx, &peer, now);
    let ring = ctx.state.deaths(&id)?.ring;
    let policy = crate::engine::wake::guard_policy(&ctx);
    let answer = Answer {
        schema: 1,
        name: id.to_string(),
        state: status.lifecycle_state.as_str().to_owned(),
        crash_loop: CrashLoop {
            deaths_in_window: ring.count_in_window(now, policy.window_ms),
            max: ctx.config.crashloop_max,
            window_secs: ctx.config.crashloop_window.as_secs(),
            retry_after: match ring.guard(now, policy) {
                Guard::Refuse { retry_after_ms, .. } => {
                    Some(crate::core::clock::format_ms(retry_after_ms))
                }
                Guard::Allow => None,
            },
        },
        history,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&answer).expect("an answer always serializes")
        );
    } else {
        print!("{}", human(&answer, status.session.as_ref()));
    }
    Ok(0)
}

fn human(a: &Answer, session: Option<&status::SessionInfo>) -> String {
    let h = &a.history;
    let mut out = format!("{} is {}", a.name, a.state);
    if let Some(s) = session {
        out.push_str(&format!(
            " (session {}, up {})",
            short(&s.session),
            history::human_secs(s.age_secs)
        ));
    }
    out.push_str(".\n");
    match &h.bring_up {
        Some(b) => {
            let mode = match b.mode.as_deref() {
                Some("resume") => "resumed",
                _ => "fresh",
            };
            let cause = b.cause.as_deref().unwrap_or("?");
            // Only a session that passed its gate "came up".
            let verb = if h.ready.is_some() {
                "It last came up"
            } else {
                "It was last launched"
            };
            out.push_str(&format!(
                "{verb} {mode} at {} ({cause}): {}.",
                b.ts,
                history::cause_sentence(cause, b.topic.as_deref())
            ));
            match &h.ready {
                Some(r) => out.push_str(&format!(" Ready in {} ms.\n", r.latency_ms.unwrap_or(0))),
                None if h.since_end.is_none() => {
                    out.push_str(" It has not passed its ready gate.\n")
                }
                None => out.push('\n'),
            }
            if let Some(f) = &h.failed_resume {
                out.push_str(&format!(
                    "A resume ({}) was tried first at {} and did not come up{}.\n",
                    f.cause.as_deref().unwrap_or("?"),
                    f.ts,
                    h.bring_up
                        .as_ref()
                        .and_then(|b| b.reason.as_deref())
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ));
            }
        }
        None => out.push_str("The log kept no bring-up of it.\n"),
    }
    match &h.previous_end {
        Some(e) => {
            let which = if h.bring_up.is_some() {
                "The session before that"
            } else {
                "Its last session"
            };
            out.push_str(&format!(
                "{which} {} ({}).\n",
                history::end_sentence(e),
                e.ts
            ));
            if let Some(task) = &h.previous_task {
                out.push_str(&format!(
                    "It was working on a task when it died: {task:?}\n"
                ));
            }
            push_screen(&mut out, e);
        }
        // A first wake had no session before it.
        None if h
            .bring_up
            .as_ref()
            .is_some_and(|b| b.cause.as_deref() != Some("first-wake")) =>
        {
            out.push_str("The log kept nothing about the session before that.\n")
        }
        None => {}
    }
    if let Some(e) = &h.since_end {
        out.push_str(&format!(
            "Since then, that session {} ({}).\n",
            history::end_sentence(e),
            e.ts
        ));
        push_screen(&mut out, e);
    }
    let c = &a.crash_loop;
    out.push_str(&format!(
        "Crash-loop guard: {} death(s) in the last {}s ({} would refuse a launch){}.\n",
        c.deaths_in_window,
        c.window_secs,
        c.max,
        c.retry_after
            .as_deref()
            .map(|r| format!("; launches are refused until {r}"))
            .unwrap_or_default()
    ));
    if h.refusals_since.is_empty() {
        out.push_str("No wake has been refused since.\n");
    } else {
        out.push_str(&format!(
            "Since then, {} wake(s) did not launch:\n",
            h.refusals_since.len()
        ));
        for r in &h.refusals_since {
            let cause = r.cause.as_deref().unwrap_or("?");
            out.push_str(&format!(
                "  {} {cause}: {}",
                r.ts,
                history::cause_sentence(cause, None)
            ));
            if let Some(at) = &r.retry_after {
                out.push_str(&format!(" (retry after {at})"));
            }
            out.push('\n');
        }
    }
    if !h.lines.is_empty() {
        out.push_str("\nFrom these lines of lifecycle.log:\n");
        for l in &h.lines {
            out.push_str(&format!("  {l}\n"));
        }
    }
    out
}

fn push_screen(out: &mut String, e: &history::Line) {
    if let Some(lines) = e.last_lines.as_deref().filter(|l| !l.trim().is_empty()) {
        out.push_str("  Its last screen lines:\n");
        for l in lines
            .lines()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            out.push_str(&format!("  | {l}\n"));
        }
    }
}

fn short(s: &str) -> &str {
    s.get(..8).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn told(log: &[&str]) -> String {
        let entries: Vec<Entry> = log.iter().filter_map(|l| Entry::parse(l)).collect();
        let answer = Answer {
            schema: 1,
            name: "a".into(),
            state: "asleep".into(),
            history: history::history(&entries),
            crash_loop: CrashLoop {
                deaths_in_window: 0,
                max: 3,
                window_secs: 300,
                retry_after: None,
            },
        };
        human(&answer, None)
    }

    const WAKE_FRESH: &str = r#"{"ts":"2026-11-21T01:00:00.000Z","ev":"wake","identity":"a","mode":"fresh","cause":"first-wake","session":"s1","source":"cli","pid":1}"#;
    const READY: &str = r#"{"ts":"2026-11-21T01:00:01.000Z","ev":"ready","identity":"a","mode":"fresh","cause":"first-wake","session":"s1","latency_ms":900,"source":"cli","pid":1}"#;
    const PARKED: &str = r#"{"ts":"2026-11-21T02:00:00.000Z","ev":"supervise","identity":"a","action":"reaped-idle","idle_seconds":3700,"outcome":"resume-eligible","session":"s1","source":"daemon","pid":2}"#;
    const BOOT_FAILED: &str = r#"{"ts":"2026-11-21T01:00:02.000Z","ev":"wake","identity":"a","runtime":"shell","mode":"fail","cause":"launch-failed","session":"s1","exit_status":"1","source":"cli","pid":1}"#;
    const PARKED_SAYING: &str = r#"{"ts":"2026-11-21T02:00:00.000Z","ev":"supervise","identity":"a","action":"reaped-idle","idle_seconds":3700,"outcome":"resume-eligible","session":"s1","reason":"no activity since its last task was delivered; its runtime's own record says no turn is running","source":"daemon","pid":2}"#;
    const SELF_FRESH: &str = r#"{"ts":"2026-11-21T02:00:00.000Z","ev":"supervise","identity":"a","action":"self-fresh","outcome":"relaunching","session":"s1","source":"daemon","pid":2}"#;

    /// Each story, the sentences it must tell and the glitches it must not.
    #[test]
    fn the_sentences_read_right() {
        let rows: &[(&[&str], &[&str], &[&str])] = &[
            (
                &[WAKE_FRESH, READY, PARKED],
                &[
                    "It last came up fresh",
                    "never run since it was added",
                    "Since then, that session was parked by iapeer after 61m idle",
                    "(3 would refuse a launch)",
                ],
                &["has since was", "crash", "before that"],
            ),
            (
                &[WAKE_FRESH, READY, PARKED_SAYING],
                &["parked by iapeer after 61m idle (no activity since its last task was delivered; \
                   its runtime's own record says no turn is running); it stayed resume-eligible"],
                &["idle;"],
            ),
            (
                &[WAKE_FRESH, BOOT_FAILED],
                &["It was last launched fresh", "never became ready"],
                &["came up", "has since"],
            ),
            (
                &[WAKE_FRESH, READY, SELF_FRESH],
                &["the agent asked for a fresh start (self-fresh; not a death)"],
                &["died", "crash"],
            ),
        ];
        for (log, want, never) in rows {
            let text = told(log);
            for w in *want {
                assert!(text.contains(w), "missing {w:?} in:\n{text}");
            }
            for n in *never {
                assert!(!text.contains(n), "{n:?} in:\n{text}");
            }
        }
    }
}
