//! `iapeer explain`: what a wake would decide right now, from the markers
//! on disk, acting on nothing (no lock, no write, no launch).

use serde::Serialize;

use crate::cli::ExplainArgs;
use crate::cmd::App;
use crate::core::error::Result;
use crate::core::identity::Identity;
use crate::core::peer::Peer;
use crate::core::session::{EndKind, Liveness, Standing};
use crate::core::vocab::{Cause, Mode};
use crate::core::wake_plan::{Ask, Gathered, Plan};
use crate::engine::ctx::Ctx;
use crate::engine::wake;
use crate::store::markers::Flag;

#[derive(Debug, Serialize)]
struct Explanation {
    schema: u32,
    name: String,
    runtime: String,
    /// launch, deliver, refused, fail.
    outcome: &'static str,
    mode: Option<Mode>,
    cause: Option<String>,
    consumes: Vec<&'static str>,
    resume_ref: Option<String>,
    retry_after: Option<String>,
    notes: Vec<String>,
}

pub(crate) fn run(app: &App, args: ExplainArgs) -> Result<i32> {
    let id = Identity::parse(&args.name)?;
    let ctx = Ctx::open(app.config.clone(), app.source)?;
    let peer = ctx.peer(&id)?;
    ctx.state.check(&id)?;
    let ask = Ask {
        request: crate::cli::request(args.fresh, args.resume),
        topic: args.topic,
        task: None,
        ..Ask::default()
    };
    if let Some(topic) = &ask.topic {
        crate::core::marker::check_topic(topic)?;
    }
    let now = ctx.now();
    let mut notes = Vec::new();
    let (alive, settles) = recorded_session(&ctx, &id, &mut notes)?;
    let mut g = wake::gather(&ctx, &id, &peer, alive)?;
    // A wake would first settle the recorded session exactly as the daemon
    // would.
    match settles {
        // One more death, and no park marker.
        Some(EndKind::Death) => {
            g.ring.record(now, now);
            g.idle_reaped = false;
            g.had_session = true;
        }
        Some(EndKind::Relaunch) => g.idle_reaped = false,
        Some(EndKind::Park) => {
            g.idle_reaped = true;
            g.had_session = true;
        }
        None => {}
    }
    if ctx.state.deaths(&id)?.problem.is_some() {
        notes.push("the .deaths file is garbage and reads as no deaths".into());
    }
    let e = explain(
        &id,
        &peer,
        &g,
        crate::core::wake_plan::plan(&g, &ask, now, wake::guard_policy(&ctx)),
        notes,
    );
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&e).expect("an explanation always serializes")
        );
    } else {
        print!("{}", human(&e));
    }
    Ok(0)
}

/// Is a recorded session alive, or dead and waiting to be settled?
fn recorded_session(
    ctx: &Ctx,
    id: &Identity,
    notes: &mut Vec<String>,
) -> Result<(bool, Option<EndKind>)> {
    let Some(rec) = ctx.state.session(id)? else {
        if ctx.config.paths.socket(id.as_str()).exists() {
            notes.push("a tmux socket exists without a session record; a wake would adopt a live session or clear a dead one".into());
        }
        return Ok((false, None));
    };
    match crate::os::process::standing(&rec) {
        Standing::Launching => {
            notes.push("a launch of it is under way, or was cut short; a wake would wait for it, or finish it first".into());
            Ok((true, None))
        }
        Standing::Ending => {
            let action = rec.ending.as_ref().map_or("", |e| e.action.as_str());
            notes.push(format!(
                "its last session is mid-way through ending ({action}); a wake would finish that first"
            ));
            Ok((false, None))
        }
        Standing::OtherBoot => {
            notes.push(format!(
                "its recorded session was launched before the host restarted; a wake would \
                 first settle it as a park (host-restart), not a death (pid {})",
                rec.pane_pid
            ));
            Ok((false, Some(EndKind::Park)))
        }
        Standing::Running(Liveness::Alive) => Ok((true, None)),
        Standing::Running(Liveness::Unknown) => {
            notes.push(format!(
                "cannot tell whether pid {} is alive; a wake would fail and ask to retry",
                rec.pane_pid
            ));
            Ok((true, None))
        }
        Standing::Running(Liveness::Dead) => {
            let new_eager = ctx.state.flag(id, Flag::NewEager)?;
            if crate::engine::ending::asked_self_fresh(new_eager.as_ref(), &rec) {
                notes.push(format!(
                    "its recorded session (pid {}) ended by self-fresh; a wake would record \
                     that (not a death) and start it fresh",
                    rec.pane_pid
                ));
                return Ok((false, Some(EndKind::Relaunch)));
            }
            let new_eager = new_eager.is_some();
            let stopped = ctx.state.flag(id, Flag::Stopped)?.is_some();
            let action = crate::core::pass::death_action(
                new_eager,
                ctx.peer(id).ok().map(|p| p.policy),
                stopped,
            );
            notes.push(format!(
                "its recorded session (pid {}) has died; a wake would first record the death ({})",
                rec.pane_pid,
                action.as_str()
            ));
            Ok((false, Some(EndKind::Death)))
        }
    }
}

fn explain(
    id: &Identity,
    peer: &Peer,
    g: &Gathered,
    plan: Plan,
    notes: Vec<String>,
) -> Explanation {
    let mut e = Explanation {
        schema: 1,
        name: id.to_string(),
        runtime: peer.runtime.as_str().to_owned(),
        outcome: "launch",
        mode: None,
        cause: None,
        consumes: Vec::new(),
        resume_ref: None,
        retry_after: None,
        notes,
    };
    match plan {
        Plan::RefuseExternal(sup) => {
            e.outcome = "refused";
            e.mode = Some(Mode::Refused);
            e.cause = Some("external-supervisor".into());
            e.notes.push(format!("supervised by {sup}"));
        }
        Plan::RefuseStopped => {
            e.outcome = "refused";
            e.mode = Some(Mode::Refused);
            e.cause = Some("stopped".into());
        }
        Plan::Deliver => e.outcome = "deliver",
        Plan::CwdMissing => {
            e.outcome = "fail";
            e.mode = Some(Mode::Fail);
            e.cause = Some("cwd-missing".into());
            e.notes
                .push(format!("{} does not exist", peer.cwd.display()));
        }
        Plan::CrashLoop {
            counted,
            retry_after_ms,
        } => {
            e.outcome = "refused";
            e.mode = Some(Mode::Refused);
            e.cause = Some("crash-loop".into());
            e.retry_after = Some(crate::core::clock::format_ms(retry_after_ms));
            e.notes
                .push(format!("{counted} deaths inside the crash-loop window"));
        }
        Plan::RefuseFailed => {
            e.outcome = "refused";
            e.mode = Some(Mode::Refused);
            e.cause = Some(Cause::GaveUp.as_str().into());
            e.notes.push(format!(
                "iapeer gave up on it (.failed); `iapeer reset {}` lifts that",
                e.name
            ));
        }
        Plan::Fail(d) => {
            e.outcome = "fail";
            e.mode = Some(d.mode);
            e.cause = Some(d.cause.as_str().into());
        }
        Plan::Launch(d) => {
            e.mode = Some(d.mode);
            e.cause = Some(d.cause.as_str().into());
            if d.consume.idle_reaped {
                e.consumes.push(".idle-reaped");
            }
            if d.consume.new_eager {
                e.consumes.push(".new-eager");
            }
            if d.consume.fresh_next {
                e.consumes.push(".fresh-next");
            }
            if d.mode == Mode::Resume {
                e.resume_ref.clone_from(&g.resume_target);
            }
        }
    }
    e
}

fn human(e: &Explanation) -> String {
    let what = match e.outcome {
        "deliver" => {
            "it is running: a wake would deliver the task to the live session, launching nothing"
                .to_owned()
        }
        "launch" => format!(
            "a wake now would {} ({})",
            match e.mode {
                Some(Mode::Resume) => "resume it",
                _ => "start it fresh",
            },
            e.cause.as_deref().unwrap_or("?")
        ),
        other => format!(
            "a wake now would be {other}: {}",
            e.cause.as_deref().unwrap_or("?")
        ),
    };
    let mut out = format!("{}: {what}\n", e.name);
    if !e.consumes.is_empty() {
        out.push_str(&format!("  consumes: {}\n", e.consumes.join(", ")));
    }
    if let Some(r) = &e.resume_ref {
        out.push_str(&format!("  resumes: {r}\n"));
    }
    if let Some(r) = &e.retry_after {
        out.push_str(&format!("  retry after: {r}\n"));
    }
    for n in &e.notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    out
}
