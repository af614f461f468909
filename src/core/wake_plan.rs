//! The pure middle of a wake (DESIGN §6): from the facts gathered about a
//! peer, what a wake does, in the contract's order — refuse if external →
//! refuse if stopped → a live session wins → cwd must exist → crash-loop
//! guard → `resolve_wake_mode`. `iapeer explain` shows exactly this plan.

use crate::core::clock::EpochMs;
use crate::core::crash_ring::{CrashRing, Guard, Policy as GuardPolicy};
use crate::core::error::{Error, Result};
use crate::core::vocab::Mode;
use crate::core::wake_mode::{self, Decision, Facts, Request};

/// Longest task text accepted.
pub(crate) const TASK_MAX: usize = 256 * 1024;

/// What the wake was asked.
#[derive(Clone, Debug, Default)]
pub struct Ask {
    pub request: Option<Request>,
    pub topic: Option<String>,
    pub task: Option<String>,
    /// Why the daemon asked, said on the decision line (a person's or a
    /// script's wake needs no word).
    pub why: Option<String>,
}

impl Ask {
    fn request(&self) -> Request {
        self.request.unwrap_or(Request::Message)
    }
}

/// The facts a wake is planned from, read from disk.
#[derive(Clone, Debug)]
pub(crate) struct Gathered {
    pub external: Option<String>,
    pub stopped: bool,
    /// A live session (after settling).
    pub alive: bool,
    pub cwd_exists: bool,
    pub ring: CrashRing,
    /// `.failed`: iapeer gave up on it (DESIGN §5).
    pub failed: bool,
    pub idle_reaped: bool,
    pub new_eager: bool,
    pub fresh_next: bool,
    /// The peer has had a session since it was added.
    pub had_session: bool,
    pub stored_topic: Option<String>,
    pub conversational: bool,
    pub resume_target: Option<String>,
}

/// What a wake will do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    RefuseExternal(String),
    RefuseStopped,
    /// A live session wins: deliver the task, launch nothing.
    Deliver,
    CwdMissing,
    CrashLoop {
        counted: usize,
        retry_after_ms: EpochMs,
    },
    /// Given up on (`.failed`) until `reset` or `start`.
    RefuseFailed,
    Launch(Decision),
    /// `resolve_wake_mode` said fail (nothing to resume).
    Fail(Decision),
}

/// The pure middle of a wake: from the gathered facts, what happens.
pub(crate) fn plan(g: &Gathered, ask: &Ask, now: EpochMs, guard: GuardPolicy) -> Plan {
    if let Some(sup) = &g.external {
        return Plan::RefuseExternal(sup.clone());
    }
    if g.stopped {
        return Plan::RefuseStopped;
    }
    if g.alive {
        return Plan::Deliver;
    }
    if !g.cwd_exists {
        return Plan::CwdMissing;
    }
    if g.failed {
        return Plan::RefuseFailed;
    }
    if let Guard::Refuse {
        counted,
        retry_after_ms,
    } = g.ring.guard(now, guard)
    {
        return Plan::CrashLoop {
            counted,
            retry_after_ms,
        };
    }
    let decision = wake_mode::resolve_wake_mode(&Facts {
        request: ask.request(),
        idle_reaped: g.idle_reaped,
        new_eager: g.new_eager,
        fresh_next: g.fresh_next,
        had_session: g.had_session,
        stored_topic: g.stored_topic.as_deref(),
        incoming_topic: ask.topic.as_deref(),
        conversational: g.conversational,
        can_resume: g.resume_target.is_some(),
    });
    match decision.mode {
        Mode::Fail | Mode::Refused => Plan::Fail(decision),
        Mode::Fresh | Mode::Resume => Plan::Launch(decision),
    }
}

/// Validates a task text: no control characters but newline and tab (an
/// escape sequence could end a bracketed paste early), and bounded.
pub(crate) fn check_task(task: &str) -> Result<()> {
    if task.len() > TASK_MAX {
        return Err(Error::input(
            "--task",
            format!("it is {} bytes; a task is at most {TASK_MAX}", task.len()),
            "put long instructions in a file and ask the agent to read it",
        ));
    }
    if let Some(c) = task
        .chars()
        .find(|c| c.is_control() && *c != '\n' && *c != '\t')
    {
        return Err(Error::input(
            "--task",
            format!("it contains the control character {:?}", c),
            "remove control characters (newlines and tabs are fine)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::vocab::Cause;

    fn facts() -> Gathered {
        Gathered {
            external: None,
            stopped: false,
            alive: false,
            cwd_exists: true,
            ring: CrashRing::default(),
            idle_reaped: false,
            new_eager: false,
            fresh_next: false,
            had_session: true,
            failed: false,
            stored_topic: None,
            conversational: false,
            resume_target: Some("abc".into()),
        }
    }

    const GUARD: GuardPolicy = GuardPolicy {
        max: 3,
        window_ms: 300_000,
    };
    const NOW: EpochMs = 1_800_000_000_000;

    #[test]
    fn the_order_of_design_section_6() {
        let ask = Ask::default();
        let crash_loop = CrashRing::from_entries(vec![NOW - 3, NOW - 2, NOW - 1]);
        // Each row turns on one more obstacle; the earliest one wins.
        let mut g = facts();
        g.external = Some("launchd".into());
        g.stopped = true;
        g.alive = true;
        g.cwd_exists = false;
        g.ring = crash_loop;
        assert_eq!(
            plan(&g, &ask, NOW, GUARD),
            Plan::RefuseExternal("launchd".into())
        );
        g.external = None;
        assert_eq!(plan(&g, &ask, NOW, GUARD), Plan::RefuseStopped);
        g.stopped = false;
        assert_eq!(plan(&g, &ask, NOW, GUARD), Plan::Deliver);
        g.alive = false;
        assert_eq!(plan(&g, &ask, NOW, GUARD), Plan::CwdMissing);
        g.cwd_exists = true;
        g.failed = true;
        assert_eq!(plan(&g, &ask, NOW, GUARD), Plan::RefuseFailed);
        g.failed = false;
        assert_eq!(
            plan(&g, &ask, NOW, GUARD),
            Plan::CrashLoop {
                counted: 3,
                retry_after_ms: NOW - 3 + 300_000
            }
        );
        g.ring = CrashRing::default();
        assert!(
            matches!(plan(&g, &ask, NOW, GUARD), Plan::Launch(d) if d.cause == Cause::CrashOrSelfClose)
        );
        let resume = Ask {
            request: Some(Request::Resume),
            ..Ask::default()
        };
        g.resume_target = None;
        assert!(
            matches!(plan(&g, &resume, NOW, GUARD), Plan::Fail(d) if d.cause == Cause::AttachNothingToResume)
        );
    }

    #[test]
    fn tasks_with_control_characters_are_refused() {
        assert!(check_task("fix \"it\"; $(rm -rf /)\nthen C-c Enter\tdone").is_ok());
        for bad in ["\x1b[201~", "a\rb", "\x03", "\0"] {
            assert_eq!(check_task(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
        assert!(check_task(&"x".repeat(TASK_MAX + 1)).is_err());
    }
}
