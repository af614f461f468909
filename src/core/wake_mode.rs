//! `resolve_wake_mode` (DESIGN §4): from plain facts about a wake, decide
//! whether the peer comes up fresh or resumed, why, and which markers the
//! launch consumes. Pure: no I/O, no clock; the shell around it (`wake`)
//! gathers the facts and carries the decision out.

use crate::core::vocab::{Cause, Mode};

/// What the wake asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `--fresh`, or a launch from a folder.
    Fresh,
    /// `--resume`, or an attach.
    Resume,
    /// A message woke a sleeping peer (also how the daemon brings an
    /// `always` peer back).
    Message,
}

/// The facts a decision is made from, all read before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts<'a> {
    pub request: Request,
    /// `.idle-reaped` exists: the last session was parked by iapeer.
    pub idle_reaped: bool,
    /// `.new-eager` exists: someone asked for a fresh start.
    pub new_eager: bool,
    /// `.fresh-next` exists: a soft reload (`iapeer refresh`).
    pub fresh_next: bool,
    /// The peer has had a session since it was added (else a wake with
    /// no park marker is its first, with nothing to blame).
    pub had_session: bool,
    /// The topic of the last session (`.topic`).
    pub stored_topic: Option<&'a str>,
    /// The topic this wake carries.
    pub incoming_topic: Option<&'a str>,
    /// A human-facing peer: it never auto-freshes.
    pub conversational: bool,
    /// The runtime has something to resume (a transcript, a rollout).
    pub can_resume: bool,
}

/// Markers a launch consumes. A launch makes both stale: `.idle-reaped`
/// speaks of the session before, and a fresh start answers `.new-eager`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Consume {
    pub idle_reaped: bool,
    pub new_eager: bool,
    pub fresh_next: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub mode: Mode,
    pub cause: Cause,
    pub consume: Consume,
}

/// Decides how a wake brings the peer up. Branches in the order of
/// DESIGN §4; a `.new-eager` request, which §4 leaves to the shell, is
/// honoured here too so that every wake decides it the same way: it turns a
/// message wake fresh and is answered by any fresh start.
pub fn resolve_wake_mode(f: &Facts<'_>) -> Decision {
    let (mode, cause) = match f.request {
        Request::Fresh => (Mode::Fresh, Cause::FolderLaunch),
        Request::Resume if f.can_resume => (Mode::Resume, Cause::Attach),
        Request::Resume => (Mode::Fail, Cause::AttachNothingToResume),
        Request::Message if f.new_eager => (Mode::Fresh, Cause::NeedsEagerFresh),
        Request::Message if f.fresh_next => (Mode::Fresh, Cause::SoftReload),
        Request::Message if !f.idle_reaped && !f.had_session => (Mode::Fresh, Cause::FirstWake),
        // It died on its own: a crash needs a clean start, not a
        // re-crashing resume.
        Request::Message if !f.idle_reaped => (Mode::Fresh, Cause::CrashOrSelfClose),
        Request::Message if f.conversational => match f.can_resume {
            true => (Mode::Resume, Cause::IdleReapedHuman),
            false => (Mode::Fresh, Cause::IdleReapedHumanNoResume),
        },
        Request::Message if is_new_topic(f.incoming_topic, f.stored_topic) => {
            (Mode::Fresh, Cause::IdleReapedNewTopic)
        }
        Request::Message => match f.can_resume {
            true => (Mode::Resume, Cause::IdleReapedResume),
            false => (Mode::Fresh, Cause::IdleReapedNoResume),
        },
    };
    let consume = match mode {
        // Any fresh start answers both fresh requests.
        Mode::Fresh => Consume {
            idle_reaped: f.idle_reaped,
            new_eager: f.new_eager,
            fresh_next: f.fresh_next,
        },
        // An explicit resume keeps pending fresh requests for later.
        Mode::Resume => Consume {
            idle_reaped: f.idle_reaped,
            ..Consume::default()
        },
        Mode::Refused | Mode::Fail => Consume::default(),
    };
    Decision {
        mode,
        cause,
        consume,
    }
}

/// The decision after a resume that did not come up: one fresh retry, which
/// is not a death (DESIGN §4).
pub(crate) fn after_failed_resume() -> (Mode, Cause) {
    (Mode::Fresh, Cause::ResumeFailedFresh)
}

fn is_new_topic(incoming: Option<&str>, stored: Option<&str>) -> bool {
    let incoming = incoming.map(str::trim).unwrap_or("");
    !incoming.is_empty() && Some(incoming) != stored.map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Cause::*;
    use Mode::{Fail, Fresh, Resume};
    use Request::Message;

    const NONE: Consume = Consume {
        idle_reaped: false,
        new_eager: false,
        fresh_next: false,
    };
    const PARK: Consume = Consume {
        idle_reaped: true,
        ..NONE
    };
    const EAGER: Consume = Consume {
        new_eager: true,
        ..NONE
    };
    const BOTH: Consume = Consume {
        idle_reaped: true,
        new_eager: true,
        ..NONE
    };

    /// (request, idle_reaped, new_eager, stored, incoming, conversational,
    ///  can_resume) → (mode, cause, consumed)
    type Row = (
        Request,
        bool,
        bool,
        Option<&'static str>,
        Option<&'static str>,
        bool,
        bool,
        Mode,
        Cause,
        Consume,
    );

    /// One row per branch of DESIGN §4, plus the consumption rules.
    #[rustfmt::skip]
    const TABLE: &[Row] = &[
        // 1. explicit fresh
        (Request::Fresh,  false, false, None,      None,      false, true,  Fresh,  FolderLaunch, NONE),
        (Request::Fresh,  true,  true,  Some("a"), Some("a"), true,  true,  Fresh,  FolderLaunch, BOTH),
        // 2. explicit resume; nothing to resume fails loudly, consuming nothing
        (Request::Resume, false, false, None,      None,      false, true,  Resume, Attach, NONE),
        (Request::Resume, true,  true,  None,      None,      false, true,  Resume, Attach, PARK),
        (Request::Resume, true,  true,  None,      None,      false, false, Fail,   AttachNothingToResume, NONE),
        // 3a. a message, no park marker: it died on its own
        (Message,         false, false, Some("a"), Some("a"), false, true,  Fresh,  CrashOrSelfClose, NONE),
        (Message,         false, false, None,      None,      true,  true,  Fresh,  CrashOrSelfClose, NONE),
        // 3b. parked; conversational peers resume whatever the topic
        (Message,         true,  false, Some("a"), Some("b"), true,  true,  Resume, IdleReapedHuman, PARK),
        (Message,         true,  false, None,      None,      true,  false, Fresh,  IdleReapedHumanNoResume, PARK),
        // 3b. parked executor: a new topic starts fresh
        (Message,         true,  false, Some("a"), Some("b"), false, true,  Fresh,  IdleReapedNewTopic, PARK),
        (Message,         true,  false, None,      Some("b"), false, true,  Fresh,  IdleReapedNewTopic, PARK),
        // ... the same topic, or none, resumes
        (Message,         true,  false, Some("a"), Some("a"), false, true,  Resume, IdleReapedResume, PARK),
        (Message,         true,  false, Some("a"), Some(" a\n"), false, true, Resume, IdleReapedResume, PARK),
        (Message,         true,  false, Some("a"), None,      false, true,  Resume, IdleReapedResume, PARK),
        (Message,         true,  false, Some("a"), Some(""),  false, true,  Resume, IdleReapedResume, PARK),
        // ... unless there is nothing to resume
        (Message,         true,  false, Some("a"), Some("a"), false, false, Fresh,  IdleReapedNoResume, PARK),
        // an eager request turns any message wake fresh and is consumed
        (Message,         false, true,  None,      None,      false, true,  Fresh,  NeedsEagerFresh, EAGER),
        (Message,         true,  true,  Some("a"), Some("a"), true,  true,  Fresh,  NeedsEagerFresh, BOTH),
    ];

    #[test]
    fn every_branch_of_design_section_4() {
        for (i, row) in TABLE.iter().enumerate() {
            let &(
                request,
                idle_reaped,
                new_eager,
                stored,
                incoming,
                conversational,
                can_resume,
                mode,
                cause,
                consume,
            ) = row;
            let got = resolve_wake_mode(&Facts {
                request,
                idle_reaped,
                new_eager,
                stored_topic: stored,
                incoming_topic: incoming,
                conversational,
                can_resume,
                fresh_next: false,
                had_session: true,
            });
            assert_eq!(
                got,
                Decision {
                    mode,
                    cause,
                    consume
                },
                "row {i}: {row:?}"
            );
        }
    }

    #[test]
    fn the_table_reaches_every_cause_a_decision_can_give() {
        let reached: std::collections::HashSet<Cause> = TABLE.iter().map(|r| r.8).collect();
        let decidable = [
            FolderLaunch,
            Attach,
            AttachNothingToResume,
            CrashOrSelfClose,
            IdleReapedHuman,
            IdleReapedHumanNoResume,
            IdleReapedNewTopic,
            IdleReapedResume,
            IdleReapedNoResume,
            NeedsEagerFresh,
            SoftReload,
            FirstWake,
        ];
        let reached: std::collections::HashSet<Cause> = reached
            .into_iter()
            .chain(FRESH_TABLE.iter().map(|r| r.4))
            .collect();
        for c in decidable {
            assert!(reached.contains(&c), "no row reaches {c}");
        }
    }

    #[test]
    fn never_consumes_without_a_launch_and_never_consumes_what_is_absent() {
        for request in [Request::Fresh, Request::Resume, Message] {
            for bits in 0..64u8 {
                let f = Facts {
                    request,
                    idle_reaped: bits & 1 != 0,
                    new_eager: bits & 2 != 0,
                    stored_topic: Some("a"),
                    incoming_topic: Some(if bits & 4 != 0 { "a" } else { "b" }),
                    conversational: bits & 8 != 0,
                    can_resume: bits & 4 != 0,
                    fresh_next: bits & 16 != 0,
                    had_session: bits & 32 != 0,
                };
                let d = resolve_wake_mode(&f);
                assert!(!d.consume.idle_reaped || f.idle_reaped);
                assert!(!d.consume.new_eager || f.new_eager);
                assert!(!d.consume.fresh_next || f.fresh_next);
                if d.mode == Fresh {
                    // A fresh start answers every fresh request.
                    assert_eq!(d.consume.new_eager, f.new_eager);
                    assert_eq!(d.consume.fresh_next, f.fresh_next);
                }
                if d.mode == Fail {
                    assert_eq!(d.consume, NONE);
                } else {
                    // Every launch answers the park marker.
                    assert_eq!(d.consume.idle_reaped, f.idle_reaped);
                }
                // Never a silent fresh for an explicit resume.
                if request == Request::Resume {
                    assert_ne!(d.mode, Fresh);
                }
            }
        }
    }

    /// The soft reload and the first wake (DESIGN §4 3.0, 3a):
    /// (request, idle_reaped, fresh_next, had_session) → (mode, cause,
    /// consumed).
    #[rustfmt::skip]
    const FRESH_TABLE: &[(Request, bool, bool, bool, Cause, Mode, Consume)] = &[
        // 3.0 `.fresh-next` turns a message wake fresh, answering the park too
        (Message,         true,  true,  true,  SoftReload, Fresh, Consume { idle_reaped: true, fresh_next: true, ..NONE }),
        (Message,         false, true,  true,  SoftReload, Fresh, Consume { fresh_next: true, ..NONE }),
        (Message,         false, true,  false, SoftReload, Fresh, Consume { fresh_next: true, ..NONE }),
        // 3a: never had a session: nothing to blame
        (Message,         false, false, false, FirstWake, Fresh, NONE),
        (Message,         false, false, true,  CrashOrSelfClose, Fresh, NONE),
        // a park marker means it had one, whatever else says
        (Message,         true,  false, false, IdleReapedResume, Resume, PARK),
        // explicit requests are what they were; a fresh one answers the reload
        (Request::Fresh,  false, true,  true,  FolderLaunch, Fresh, Consume { fresh_next: true, ..NONE }),
        (Request::Resume, true,  true,  true,  Attach, Resume, PARK),
    ];

    #[test]
    fn soft_reload_and_first_wake() {
        for (i, row) in FRESH_TABLE.iter().enumerate() {
            let &(request, idle_reaped, fresh_next, had_session, cause, mode, consume) = row;
            let got = resolve_wake_mode(&Facts {
                request,
                idle_reaped,
                new_eager: false,
                stored_topic: Some("a"),
                incoming_topic: Some("a"),
                conversational: false,
                can_resume: true,
                fresh_next,
                had_session,
            });
            assert_eq!(
                got,
                Decision {
                    mode,
                    cause,
                    consume
                },
                "row {i}: {row:?}"
            );
        }
    }

    #[test]
    fn a_failed_resume_retries_fresh() {
        assert_eq!(after_failed_resume(), (Fresh, ResumeFailedFresh));
    }

    #[test]
    fn cause_strings_round_trip() {
        for c in Cause::ALL {
            assert_eq!(Cause::parse(c.as_str()), Some(c));
        }
    }
}
