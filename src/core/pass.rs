//! One supervise pass over one identity, decided (DESIGN §7): from the
//! facts read about it, what to do now (`decide`), what a death leads to
//! (`death_action`), what an ending leaves the peer as (`outcome`), and
//! when to look again (`revisit_at`). Pure: the engine reads the facts and
//! carries the action out.

use crate::core::clock::{self, EpochMs};
use crate::core::peer::Policy;
use crate::core::session::{Liveness, SessionRecord, Standing};
use crate::core::vocab::{Action, Outcome};

/// The supervise action for a death, given what is on disk (DESIGN §7):
/// an eager request relaunches fresh now; an `always` peer is relaunched;
/// anything else waits for the next message.
pub(crate) fn death_action(new_eager: bool, policy: Option<Policy>, stopped: bool) -> Action {
    if new_eager && !stopped {
        Action::NeedsEagerFresh
    } else if policy == Some(Policy::Always) && !stopped {
        Action::AlwaysOnRelaunch
    } else {
        Action::ReapedGone
    }
}

/// What an ending with `action` leaves the peer as.
pub(crate) fn outcome(action: Action) -> Outcome {
    match action {
        Action::NeedsEagerFresh | Action::AlwaysOnRelaunch => Outcome::Relaunching,
        Action::SelfFresh | Action::Restarted => Outcome::Relaunching,
        Action::ReapedIdle | Action::ReapedMaxAge | Action::ParkedStopped | Action::HostRestart => {
            Outcome::ResumeEligible
        }
        Action::GaveUp => Outcome::Failed,
        _ => Outcome::FreshOnNextMessage,
    }
}

/// The latest activity the record itself shows: start, ready, last task.
pub(crate) fn cheap_activity(rec: &SessionRecord, started: EpochMs) -> EpochMs {
    cheap_seen(rec, started).at
}

/// [`cheap_activity`], and which of the three it was (the later on a tie).
pub(crate) fn cheap_seen(rec: &SessionRecord, started: EpochMs) -> Measured {
    let parse = |s: &Option<String>| s.as_deref().and_then(clock::parse_rfc3339);
    let mut latest = Measured {
        at: started,
        seen: Seen::Started,
        turn: None,
    };
    for (at, seen) in [
        (parse(&rec.ready_at), Seen::Ready),
        (parse(&rec.task_at), Seen::Task),
    ] {
        if let Some(at) = at.filter(|at| *at >= latest.at) {
            latest.at = at;
            latest.seen = seen;
        }
    }
    latest
}

/// A live session's latest activity, with where it was seen and what said
/// no turn was running: the cause a park for idleness gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Measured {
    pub at: EpochMs,
    pub seen: Seen,
    /// What said its turn is not running; `None` for a runtime that has no
    /// turns to read (a shell), or when one is running.
    pub turn: Option<TurnBy>,
}

impl Measured {
    /// Whether a turn was running, as what was read said; `None` when
    /// nothing said (or the runtime has no turns).
    pub(crate) fn in_turn(&self) -> Option<bool> {
        match (self.seen, self.turn) {
            (Seen::Turn, _) => Some(true),
            (_, Some(TurnBy::Record | TurnBy::Conversation)) => Some(false),
            _ => None,
        }
    }
}

/// Where a session's latest activity was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    Started,
    /// Its ready gate passed.
    Ready,
    /// Its last task was delivered.
    Task,
    /// Its conversation's latest entry (Claude's transcript, Codex's
    /// rollout).
    Conversation,
    /// Its screen's latest change (tmux's activity time, for a shell).
    Screen,
    /// A turn is running: active now.
    Turn,
}

/// What said a session's turn is not running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TurnBy {
    /// The runtime's own record of its process (Claude's
    /// `sessions/<pid>.json`).
    Record,
    /// Its conversation's last entry ends a turn.
    Conversation,
    /// Nothing could be read that says.
    Unread,
}

/// The reason on the line that parks a session idle (its `idle_seconds`
/// say how long): what it was last seen doing, and what said no turn was
/// running.
pub(crate) fn idle_reason(m: &Measured) -> String {
    let since = match m.seen {
        Seen::Started => "it started",
        Seen::Ready => "it came up",
        Seen::Task => "its last task was delivered",
        Seen::Conversation => "its conversation's last entry",
        Seen::Screen => "its screen last changed",
        Seen::Turn => "its turn, running now",
    };
    let turn = match m.turn {
        None => "",
        Some(TurnBy::Record) => "; its runtime's own record says no turn is running",
        Some(TurnBy::Conversation) => "; its conversation's last entry ends its turn",
        Some(TurnBy::Unread) => "; nothing read says whether a turn is running",
    };
    format!("no activity since {since}{turn}")
}

/// When a pass should look at this identity again even if nothing happens:
/// when it could turn idle, reach its max age, or miss its boot deadline.
pub(crate) fn revisit_at(facts: &PassFacts, now: EpochMs) -> Option<EpochMs> {
    let s = facts.session.as_ref()?;
    if !s.is_alive() {
        return None;
    }
    // From the ages measured, not the stamps: the wall clock may have
    // jumped since them.
    let after = |limit: i64, age: i64| {
        now.saturating_add(limit.saturating_sub(age))
            .saturating_add(1)
    };
    if !s.ready {
        return Some(after(s.boot_deadline_ms, s.age_ms));
    }
    let max_age = after(s.max_age_ms, s.age_ms);
    let idle = match (facts.policy, s.idle_ms) {
        (Some(Policy::Always), _) | (_, None) => i64::MAX,
        (_, Some(idle)) => after(s.idle_limit_ms, idle),
    };
    Some(max_age.min(idle))
}

/// What a pass knows about an identity, all read before deciding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PassFacts {
    pub external: bool,
    /// `None`: state without a definition; treated as lazy.
    pub policy: Option<Policy>,
    pub stopped: bool,
    /// `.failed`: given up on, no automatic relaunch (DESIGN §5).
    pub failed: bool,
    pub new_eager: bool,
    /// A task waits in its queue (DESIGN §13: a task for a sleeping peer
    /// wakes it).
    pub queued: bool,
    pub session: Option<LiveFacts>,
}

/// About a recorded session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LiveFacts {
    pub standing: Standing,
    pub ready: bool,
    pub age_ms: i64,
    /// Since the last sign of activity; `None` when not worth computing.
    pub idle_ms: Option<i64>,
    pub idle_limit_ms: i64,
    pub max_age_ms: i64,
    pub boot_deadline_ms: i64,
}

impl LiveFacts {
    pub(crate) fn is_alive(&self) -> bool {
        self.standing == Standing::Running(Liveness::Alive)
    }
}

/// What a pass does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PassAction {
    /// Another supervisor owns it: touch nothing.
    SkipExternal,
    Nothing,
    /// Finish an end a killed process left journaled.
    FinishEnding,
    /// Finish (adopt or clear) a launch whose launcher died.
    FinishLaunch,
    /// Its session died: record the death (then maybe relaunch).
    RecordDeath,
    /// Its session was launched before the host restarted: settle it as
    /// a park, not a death.
    HostRestart,
    /// No session, and one is wanted now (`.new-eager`, `always`, or a
    /// task waiting in its queue).
    Launch,
    Park(Action),
    /// Starting, but its waking process is gone: look at the screen.
    CheckBoot,
    /// Starting for longer than the boot deadline, its waker gone.
    BootTimeout,
}

/// The pass decision, pure: DESIGN §7 in order.
pub(crate) fn decide(f: &PassFacts) -> PassAction {
    if f.external {
        return PassAction::SkipExternal;
    }
    let Some(s) = &f.session else {
        let wanted = f.new_eager || f.policy == Some(Policy::Always) || f.queued;
        return if !f.stopped && !f.failed && wanted {
            PassAction::Launch
        } else {
            PassAction::Nothing
        };
    };
    let liveness = match s.standing {
        Standing::Ending => return PassAction::FinishEnding,
        Standing::OtherBoot => return PassAction::HostRestart,
        // Its launcher holds the lock if it is still at work, and then the
        // worker acting on this finds the lock held and leaves it be.
        Standing::Launching => return PassAction::FinishLaunch,
        Standing::Running(liveness) => liveness,
    };
    match liveness {
        // Unknown is never a death.
        Liveness::Unknown => PassAction::Nothing,
        Liveness::Dead => PassAction::RecordDeath,
        Liveness::Alive if !s.ready && s.age_ms > s.boot_deadline_ms => PassAction::BootTimeout,
        Liveness::Alive if !s.ready => PassAction::CheckBoot,
        Liveness::Alive if f.stopped => PassAction::Park(Action::ParkedStopped),
        Liveness::Alive
            if f.policy != Some(Policy::Always)
                && s.idle_ms.is_some_and(|i| i > s.idle_limit_ms) =>
        {
            PassAction::Park(Action::ReapedIdle)
        }
        Liveness::Alive if s.age_ms > s.max_age_ms => PassAction::Park(Action::ReapedMaxAge),
        Liveness::Alive => PassAction::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Liveness::*;
    use PassAction::*;

    fn live(liveness: Liveness) -> LiveFacts {
        LiveFacts {
            standing: Standing::Running(liveness),
            ready: true,
            age_ms: 1_000,
            idle_ms: Some(10),
            idle_limit_ms: 3_600_000,
            max_age_ms: 14_400_000,
            boot_deadline_ms: 240_000,
        }
    }

    fn record(ready_at: Option<&str>, task_at: Option<&str>) -> SessionRecord {
        let mut rec: SessionRecord = serde_json::from_str(
            r#"{"identity":"a","runtime":"claude","pane_pid":7,"started_at":"2026-12-01T10:00:00Z"}"#,
        )
        .unwrap();
        rec.ready_at = ready_at.map(str::to_owned);
        rec.task_at = task_at.map(str::to_owned);
        rec
    }

    #[test]
    fn the_record_shows_its_latest_activity_and_which_it_was() {
        let at = |s: &str| clock::parse_rfc3339(s).unwrap();
        let (ready, task) = ("2026-12-01T10:00:01Z", "2026-12-01T10:00:02Z");
        let started = at("2026-12-01T10:00:00Z");
        let cases = [
            (None, None, started, Seen::Started),
            (Some(ready), None, at(ready), Seen::Ready),
            (Some(ready), Some(task), at(task), Seen::Task),
            // Whichever is later counts, whatever its name.
            (Some(task), Some(ready), at(task), Seen::Ready),
            // A tie is the later step.
            (Some(ready), Some(ready), at(ready), Seen::Task),
            // A stamp that does not read is not there.
            (Some("soon"), None, started, Seen::Started),
        ];
        for (ready_at, task_at, want_at, want_seen) in cases {
            let m = cheap_seen(&record(ready_at, task_at), started);
            assert_eq!(
                (m.at, m.seen),
                (want_at, want_seen),
                "{ready_at:?} {task_at:?}"
            );
            assert_eq!(m.turn, None);
        }
    }

    #[test]
    fn an_idle_park_says_what_was_seen_last_and_what_said_no_turn_runs() {
        let m = |seen, turn| Measured { at: 0, seen, turn };
        let cases = [
            (
                m(Seen::Task, Some(TurnBy::Record)),
                "no activity since its last task was delivered; its runtime's own record says no turn is running",
            ),
            (
                m(Seen::Conversation, Some(TurnBy::Conversation)),
                "no activity since its conversation's last entry; its conversation's last entry ends its turn",
            ),
            (
                m(Seen::Ready, Some(TurnBy::Unread)),
                "no activity since it came up; nothing read says whether a turn is running",
            ),
            (m(Seen::Screen, None), "no activity since its screen last changed"),
            (m(Seen::Started, None), "no activity since it started"),
        ];
        for (measured, want) in cases {
            assert_eq!(idle_reason(&measured), want);
        }
    }

    #[test]
    fn a_measure_says_whether_a_turn_ran_only_when_something_read_said() {
        let m = |seen, turn| Measured { at: 0, seen, turn };
        let cases = [
            (m(Seen::Turn, None), Some(true)),
            (m(Seen::Task, Some(TurnBy::Record)), Some(false)),
            (
                m(Seen::Conversation, Some(TurnBy::Conversation)),
                Some(false),
            ),
            (m(Seen::Ready, Some(TurnBy::Unread)), None),
            // A shell: no turns to read.
            (m(Seen::Screen, None), None),
        ];
        for (measured, want) in cases {
            assert_eq!(measured.in_turn(), want, "{measured:?}");
        }
    }

    fn facts(session: Option<LiveFacts>) -> PassFacts {
        PassFacts {
            external: false,
            policy: Some(Policy::Lazy),
            stopped: false,
            failed: false,
            new_eager: false,
            queued: false,
            session,
        }
    }

    #[test]
    fn one_row_per_branch_of_design_section_7() {
        let mut rows: Vec<(&str, PassFacts, PassAction)> = Vec::new();
        let mut f = facts(Some(live(Alive)));
        f.external = true;
        rows.push(("external is never touched", f, SkipExternal));
        rows.push(("asleep lazy: nothing", facts(None), Nothing));
        let mut f = facts(None);
        f.new_eager = true;
        rows.push(("asleep with .new-eager: launch fresh now", f, Launch));
        let mut f = facts(None);
        f.policy = Some(Policy::Always);
        rows.push(("asleep always: launch", f, Launch));
        let mut f = facts(None);
        f.queued = true;
        rows.push(("asleep with a task in its queue: woken", f, Launch));
        let mut f = facts(None);
        f.queued = true;
        f.stopped = true;
        rows.push(("stopped, a task queued: it waits", f, Nothing));
        let mut f = facts(None);
        f.queued = true;
        f.failed = true;
        rows.push(("given up on, a task queued: it waits", f, Nothing));
        let mut f = facts(Some(live(Alive)));
        f.queued = true;
        rows.push((
            "alive with a task queued: the reader delivers it",
            f,
            Nothing,
        ));
        let mut f = facts(None);
        f.policy = Some(Policy::Always);
        f.stopped = true;
        f.new_eager = true;
        rows.push(("stopped: never launched", f, Nothing));
        let mut f = facts(None);
        f.policy = Some(Policy::Always);
        f.failed = true;
        f.new_eager = true;
        rows.push(("given up on: never relaunched", f, Nothing));
        let mut s = live(Alive);
        s.standing = Standing::Ending;
        rows.push(("a journaled end is finished", facts(Some(s)), FinishEnding));
        let mut s = live(Unknown);
        s.standing = Standing::Launching;
        rows.push((
            "a launch whose launcher died is finished",
            facts(Some(s)),
            FinishLaunch,
        ));
        let mut s = live(Alive);
        s.standing = Standing::OtherBoot;
        rows.push((
            "launched before the host restarted: a park",
            facts(Some(s)),
            HostRestart,
        ));
        rows.push((
            "dead: record the death",
            facts(Some(live(Dead))),
            RecordDeath,
        ));
        rows.push((
            "unknown is never a death",
            facts(Some(live(Unknown))),
            Nothing,
        ));
        let mut s = live(Alive);
        s.ready = false;
        rows.push((
            "starting, waker gone: check the screen",
            facts(Some(s)),
            CheckBoot,
        ));
        let mut s = live(Alive);
        s.ready = false;
        s.age_ms = 300_000;
        rows.push(("starting past the deadline", facts(Some(s)), BootTimeout));
        let mut f = facts(Some(live(Alive)));
        f.stopped = true;
        rows.push(("alive and stopped: park", f, Park(Action::ParkedStopped)));
        let mut s = live(Alive);
        s.idle_ms = Some(3_600_001);
        rows.push((
            "idle past the limit: park",
            facts(Some(s.clone())),
            Park(Action::ReapedIdle),
        ));
        let mut f = facts(Some(s));
        f.policy = Some(Policy::Always);
        rows.push(("always peers are never idle-parked", f, Nothing));
        let mut s = live(Alive);
        s.age_ms = 14_400_001;
        rows.push((
            "older than max age: park",
            facts(Some(s)),
            Park(Action::ReapedMaxAge),
        ));
        let mut s = live(Alive);
        s.age_ms = 14_400_001;
        s.idle_ms = Some(3_600_001);
        rows.push((
            "idle wins over max age",
            facts(Some(s)),
            Park(Action::ReapedIdle),
        ));
        rows.push(("alive and busy: nothing", facts(Some(live(Alive))), Nothing));
        for (what, f, want) in rows {
            assert_eq!(decide(&f), want, "{what}");
        }
    }

    #[test]
    fn death_actions_follow_design_section_7() {
        use Action::*;
        let cases = [
            (true, Some(Policy::Lazy), false, NeedsEagerFresh),
            (true, Some(Policy::Always), false, NeedsEagerFresh),
            (false, Some(Policy::Always), false, AlwaysOnRelaunch),
            (false, Some(Policy::Lazy), false, ReapedGone),
            (false, None, false, ReapedGone),
            // A stopped peer is never relaunched.
            (true, Some(Policy::Always), true, ReapedGone),
            (false, Some(Policy::Always), true, ReapedGone),
        ];
        for (eager, policy, stopped, want) in cases {
            assert_eq!(
                death_action(eager, policy, stopped),
                want,
                "{eager} {policy:?} {stopped}"
            );
        }
    }

    #[test]
    fn the_next_look_is_measured_from_the_ages_not_the_stamps() {
        // `now` is anything: the wall clock may have jumped a day either way.
        const NOW: EpochMs = 1_800_000_000_000;
        let at = |edit: &dyn Fn(&mut PassFacts)| {
            let mut f = facts(Some(live(Alive)));
            edit(&mut f);
            revisit_at(&f, NOW).map(|t| t - NOW)
        };
        type Edit = dyn Fn(&mut PassFacts);
        let rows: &[(&str, &Edit, Option<i64>)] = &[
            ("idle limit first", &|_| {}, Some(3_600_000 - 10 + 1)),
            (
                "max age first",
                &|f| f.session.as_mut().unwrap().age_ms = 14_000_000,
                Some(400_001),
            ),
            (
                "always: max age only",
                &|f| f.policy = Some(Policy::Always),
                Some(14_400_000 - 1_000 + 1),
            ),
            (
                "booting: the deadline",
                &|f| f.session.as_mut().unwrap().ready = false,
                Some(240_000 - 1_000 + 1),
            ),
            (
                "past the limit: at once",
                &|f| f.session.as_mut().unwrap().idle_ms = Some(7_200_000),
                Some(-3_600_000 + 1),
            ),
            ("no session: never", &|f| f.session = None, None),
            ("dead: never", &|f| f.session = Some(live(Dead)), None),
        ];
        for (what, edit, want) in rows {
            assert_eq!(at(*edit), *want, "{what}");
        }
    }
}
