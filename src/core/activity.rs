//! What a live session is doing (DESIGN §12): its activity state, read
//! from the runtime's own record of the turn and from its screen, and
//! debounced so that a screen redrawn mid-change is one transition, not a
//! flicker of them. Pure: the readings are taken in `engine::activity`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::core::clock::EpochMs;

/// A live session's activity state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Mid-turn.
    Working,
    /// A permission prompt or a question waits for a person.
    Waiting,
    /// The turn is over and the prompt is shown.
    Idle,
    /// The runtime reports a usage limit.
    Limited,
    /// Mid-turn, with no progress for `IAPEER_STUCK_SECS`.
    Stuck,
    /// Nothing says.
    Unknown,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Working,
        State::Waiting,
        State::Idle,
        State::Limited,
        State::Stuck,
        State::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Working => "working",
            State::Waiting => "waiting",
            State::Idle => "idle",
            State::Limited => "limited",
            State::Stuck => "stuck",
            State::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// In a turn: a task typed now would land in its middle (DESIGN §13).
    pub fn in_turn(self) -> bool {
        matches!(self, State::Working | State::Waiting | State::Stuck)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the runtime's own record says of the turn (Claude's process
/// record, Codex's rollout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    Working,
    /// Working, but blocked on a person.
    Waiting,
    Over,
}

/// What a screen shows, as a runtime reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScreenTurn {
    /// A permission prompt or a question to the user: the line that asks.
    pub asks: Option<String>,
    /// The runtime's working indicator (a spinner, "esc to interrupt").
    pub working: bool,
    /// The input prompt, with no working indicator.
    pub prompt: bool,
    /// The last turn ended on a usage limit: the line, and when it lifts.
    pub limit: Option<(String, Option<EpochMs>)>,
}

/// Everything one reading found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// The runtime's record, where it keeps one.
    pub record: Option<Turn>,
    /// What the record says the agent waits for (Claude's `waitingFor`).
    pub waiting_for: Option<String>,
    /// The screen, when it was read.
    pub screen: Option<ScreenTurn>,
    /// How long since the session last made progress (an entry in its
    /// record, a changed screen), when known.
    pub quiet_ms: Option<i64>,
    /// iapeer holds the session for a usage limit its screen showed, until
    /// then (its `.session` says, while the limit has not lifted): the
    /// screen may since have been redrawn, or not yet looked at again.
    pub held_until: Option<EpochMs>,
}

/// A state, and what says so (for the log line and the hook).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classified {
    pub state: State,
    pub said: Option<String>,
    /// `limited`: when the limit lifts, when the runtime says.
    pub until: Option<EpochMs>,
}

/// The activity state a reading shows. The screen's question and limit
/// come first: Codex's rollout says only "in a turn" while its approval
/// prompt waits, and a limit ends a turn without the record saying why.
pub fn classify(r: &Reading, stuck_ms: i64) -> Classified {
    let of = |state, said: Option<String>| Classified {
        state,
        said,
        until: None,
    };
    let screen = r.screen.as_ref();
    if let Some((line, until)) = screen
        .and_then(|s| s.limit.as_ref())
        .filter(|_| r.record != Some(Turn::Working))
    {
        return Classified {
            state: State::Limited,
            said: Some(line.clone()),
            until: *until,
        };
    }
    if let Some(until) = r
        .held_until
        .filter(|_| matches!(r.record, None | Some(Turn::Over)))
    {
        return Classified {
            state: State::Limited,
            said: Some("held until its usage limit lifts".to_owned()),
            until: Some(until),
        };
    }
    if r.record == Some(Turn::Waiting) {
        let said = r
            .waiting_for
            .clone()
            .or_else(|| screen.and_then(|s| s.asks.clone()));
        return of(State::Waiting, said);
    }
    if let Some(asks) = screen.and_then(|s| s.asks.clone()) {
        if r.record != Some(Turn::Over) {
            return of(State::Waiting, Some(asks));
        }
    }
    let working = match r.record {
        Some(Turn::Working) => true,
        Some(Turn::Over) => false,
        Some(Turn::Waiting) => unreachable!("handled above"),
        None => screen.is_some_and(|s| s.working),
    };
    if working {
        return match r.quiet_ms {
            Some(q) if q >= stuck_ms => of(
                State::Stuck,
                Some(format!("mid-turn with no progress for {}", span(q))),
            ),
            _ => of(State::Working, None),
        };
    }
    let over = r.record == Some(Turn::Over) || screen.is_some_and(|s| s.prompt);
    if over {
        of(State::Idle, None)
    } else {
        of(State::Unknown, None)
    }
}

/// `q` ms as a person says it: "31 min", "2 h 5 min", "40 s".
pub fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, s / 60 % 60),
    }
}

/// A session's activity as the daemon holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracked {
    pub state: State,
    /// When it entered that state.
    pub since: EpochMs,
    /// A different reading, and when it was first read: it becomes the
    /// state once it holds for the debounce time.
    pub pending: Option<(Classified, EpochMs)>,
}

/// A change of state, to be logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: Classified,
    pub since: EpochMs,
}

impl Tracked {
    /// A session not read yet.
    pub fn new(now: EpochMs) -> Self {
        Tracked {
            state: State::Unknown,
            since: now,
            pending: None,
        }
    }

    /// Takes a reading made at `now`. A new state counts once it has been
    /// read for `debounce_ms` without a different one in between; it is
    /// then dated from its first reading.
    pub fn observe(
        &mut self,
        read: Classified,
        now: EpochMs,
        debounce_ms: i64,
    ) -> Option<Transition> {
        if read.state == self.state {
            self.pending = None;
            return None;
        }
        let first = match &self.pending {
            Some((p, at)) if p.state == read.state => *at,
            _ => now,
        };
        if now.saturating_sub(first) < debounce_ms {
            self.pending = Some((read, first));
            return None;
        }
        let from = self.state;
        self.state = read.state;
        self.since = first;
        self.pending = None;
        Some(Transition {
            from,
            to: read,
            since: first,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STUCK: i64 = 1_800_000;

    fn screen(asks: Option<&str>, working: bool, prompt: bool) -> Option<ScreenTurn> {
        Some(ScreenTurn {
            asks: asks.map(str::to_owned),
            working,
            prompt,
            limit: None,
        })
    }

    #[test]
    fn a_reading_classifies_by_record_then_screen() {
        let limit = Some(ScreenTurn {
            limit: Some(("usage limit reached".into(), Some(42))),
            prompt: true,
            ..ScreenTurn::default()
        });
        /// What, the record, the screen, how quiet, and the state it is.
        type Row = (
            &'static str,
            Option<Turn>,
            Option<ScreenTurn>,
            Option<i64>,
            State,
        );
        let rows: &[Row] = &[
            (
                "record working",
                Some(Turn::Working),
                None,
                Some(5),
                State::Working,
            ),
            (
                "record waiting",
                Some(Turn::Waiting),
                None,
                None,
                State::Waiting,
            ),
            ("record over", Some(Turn::Over), None, None, State::Idle),
            ("nothing at all", None, None, None, State::Unknown),
            (
                "working, quiet too long",
                Some(Turn::Working),
                None,
                Some(STUCK),
                State::Stuck,
            ),
            (
                "working, quiet not known",
                Some(Turn::Working),
                None,
                None,
                State::Working,
            ),
            (
                "rollout in a turn, approval on screen",
                Some(Turn::Working),
                screen(Some("Would you like to run"), true, false),
                Some(STUCK),
                State::Waiting,
            ),
            (
                "a question on screen after the turn is over is old",
                Some(Turn::Over),
                screen(Some("Do you want"), false, true),
                None,
                State::Idle,
            ),
            (
                "no record, spinner",
                None,
                screen(None, true, false),
                Some(1),
                State::Working,
            ),
            (
                "no record, prompt",
                None,
                screen(None, false, true),
                None,
                State::Idle,
            ),
            (
                "no record, neither",
                None,
                screen(None, false, false),
                None,
                State::Unknown,
            ),
            (
                "no record, question",
                None,
                screen(Some("Do you want to proceed?"), false, false),
                None,
                State::Waiting,
            ),
            (
                "limit after the turn",
                Some(Turn::Over),
                limit.clone(),
                None,
                State::Limited,
            ),
            (
                "limit, no record",
                None,
                limit.clone(),
                None,
                State::Limited,
            ),
            (
                "a new turn past the limit is work",
                Some(Turn::Working),
                limit,
                Some(1),
                State::Working,
            ),
        ];
        for (what, record, screen, quiet_ms, want) in rows {
            let r = Reading {
                record: *record,
                waiting_for: None,
                screen: screen.clone(),
                quiet_ms: *quiet_ms,
                held_until: None,
            };
            assert_eq!(classify(&r, STUCK).state, *want, "{what}");
        }
    }

    /// A session iapeer holds for its usage limit reads limited, whatever
    /// its screen shows now, until a new turn starts.
    #[test]
    fn a_session_held_for_its_limit_reads_limited_until_it_works_again() {
        let rows = [
            (Some(Turn::Over), None, State::Limited),
            (None, None, State::Limited),
            (Some(Turn::Over), screen(None, false, true), State::Limited),
            // A turn under way is past the limit, whatever it waits for.
            (Some(Turn::Waiting), None, State::Waiting),
            (Some(Turn::Working), None, State::Working),
        ];
        for (record, screen, want) in rows {
            let r = Reading {
                record,
                screen: screen.clone(),
                held_until: Some(42),
                ..Reading::default()
            };
            let got = classify(&r, STUCK);
            assert_eq!(got.state, want, "{record:?} {screen:?}");
            if want == State::Limited {
                assert_eq!(got.until, Some(42));
            }
        }
    }

    #[test]
    fn what_says_so_travels_with_the_state() {
        let waiting = classify(
            &Reading {
                record: Some(Turn::Waiting),
                waiting_for: Some("permission prompt".into()),
                ..Reading::default()
            },
            STUCK,
        );
        assert_eq!(waiting.said.as_deref(), Some("permission prompt"));
        let limited = classify(
            &Reading {
                screen: Some(ScreenTurn {
                    limit: Some(("limit reached".into(), Some(7))),
                    ..ScreenTurn::default()
                }),
                ..Reading::default()
            },
            STUCK,
        );
        assert_eq!(limited.until, Some(7));
        let stuck = classify(
            &Reading {
                record: Some(Turn::Working),
                quiet_ms: Some(31 * 60_000),
                ..Reading::default()
            },
            STUCK,
        );
        assert_eq!(
            stuck.said.as_deref(),
            Some("mid-turn with no progress for 31 min")
        );
    }

    fn c(state: State) -> Classified {
        Classified {
            state,
            said: None,
            until: None,
        }
    }

    #[test]
    fn a_state_counts_once_it_holds_and_is_dated_from_its_first_reading() {
        const D: i64 = 3000;
        let mut t = Tracked::new(0);
        // Read once: not yet.
        assert_eq!(t.observe(c(State::Working), 1000, D), None);
        // A flicker to idle and back starts the wait over.
        assert_eq!(t.observe(c(State::Idle), 2000, D), None);
        assert_eq!(t.observe(c(State::Working), 3000, D), None);
        assert_eq!(t.observe(c(State::Working), 5000, D), None);
        let tr = t.observe(c(State::Working), 6000, D).unwrap();
        assert_eq!(
            (tr.from, tr.to.state, tr.since),
            (State::Unknown, State::Working, 3000)
        );
        assert_eq!((t.state, t.since), (State::Working, 3000));
        // The same state again is nothing new.
        assert_eq!(t.observe(c(State::Working), 9000, D), None);
        // A one-reading blip back to idle is no transition.
        assert_eq!(t.observe(c(State::Idle), 10_000, D), None);
        assert_eq!(t.observe(c(State::Working), 11_000, D), None);
        assert_eq!(t.pending, None);
        // No debounce: at once.
        let tr = t.observe(c(State::Idle), 12_000, 0).unwrap();
        assert_eq!((tr.from, tr.since), (State::Working, 12_000));
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("busy"), None);
        assert!(State::Waiting.in_turn() && !State::Idle.in_turn() && !State::Limited.in_turn());
    }

    #[test]
    fn spans_read_as_a_person_says_them() {
        assert_eq!(span(40_000), "40 s");
        assert_eq!(span(31 * 60_000), "31 min");
        assert_eq!(span(2 * 3_600_000 + 5 * 60_000), "2 h 5 min");
    }
}
