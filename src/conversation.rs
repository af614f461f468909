//! Which conversation is whose.
//!
//! Runtimes record conversations by folder, and peers can share a folder
//! (every member of a pool does), so "the newest conversation for the cwd"
//! may be a neighbour's. An identity's conversation is the one its session
//! was launched on (`.session`'s `resume_ref`) or parked with (the
//! `conversation=` word on the `.idle-reaped` reason line). A newer one is
//! taken for its own `/clear` only when it began after the session did and
//! no other identity holds it; with nothing known, the folder's newest
//! conversation that no other identity holds is the one.

use std::collections::HashSet;

use crate::clock::EpochMs;
use crate::ctx::Ctx;
use crate::identity::Identity;
use crate::peers::Peer;
use crate::runtime::{Conversation, Runtime};
use crate::session::SessionRecord;

/// The word a park marker's reason line carries the conversation in.
const WORD: &str = "conversation=";

/// A conversation id as runtimes make them (UUIDs and the like): it is
/// used in file names, so nothing that could leave a folder.
pub fn is_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The reason line of a park marker: the action, and the conversation the
/// session was on when it is known.
pub fn park_reason(action: &str, conversation: Option<&str>) -> String {
    match conversation {
        Some(c) => format!("{action} {WORD}{c}"),
        None => action.to_owned(),
    }
}

/// The conversation a park marker's reason line names, if a valid one.
pub fn parked_with(reason: &str) -> Option<&str> {
    reason
        .split_whitespace()
        .find_map(|w| w.strip_prefix(WORD))
        .filter(|c| is_id(c))
}

/// Picks an identity's conversation among `recent` (the folder's, most
/// recent first). `known`: the one its session is on; `since`: when that
/// session began, or `None` to follow nothing newer than `known`;
/// `held_elsewhere`: whether another identity holds an id (asked lazily: it
/// reads every identity's files).
pub fn pick<'c>(
    recent: &'c [Conversation],
    known: Option<&'c Conversation>,
    since: Option<EpochMs>,
    held_elsewhere: &mut dyn FnMut(&str) -> bool,
) -> Option<&'c Conversation> {
    if known.is_some() && since.is_none() {
        return known;
    }
    for c in recent {
        if known.is_some_and(|k| k.id == c.id) {
            break;
        }
        let before = since.is_some_and(|s| c.began.is_none_or(|b| b < s));
        if !before && !held_elsewhere(&c.id) {
            return Some(c);
        }
    }
    known
}

/// The conversation a live session is on now.
pub fn live(
    ctx: &Ctx,
    runtime: &dyn Runtime,
    peer: &Peer,
    id: &Identity,
    rec: &SessionRecord,
) -> Option<Conversation> {
    let known = rec
        .resume_ref
        .as_deref()
        .and_then(|r| runtime.conversation(peer, r));
    let recent = runtime.conversations(peer);
    let mut held = Held::new(ctx, id);
    let since = Some(rec.started_ms().unwrap_or(EpochMs::MAX));
    pick(&recent, known.as_ref(), since, &mut |c| held.has(c)).cloned()
}

/// The conversation a resume of a sleeping identity would continue: the
/// one it was parked with while it exists, else the folder's newest that
/// no other identity holds.
pub fn resume_target(
    ctx: &Ctx,
    runtime: &dyn Runtime,
    peer: &Peer,
    id: &Identity,
    parked_reason: Option<&str>,
) -> Option<String> {
    if let Some(c) = parked_reason
        .and_then(parked_with)
        .and_then(|c| runtime.conversation(peer, c))
    {
        return Some(c.id);
    }
    let recent = runtime.conversations(peer);
    let mut held = Held::new(ctx, id);
    pick(&recent, None, None, &mut |c| held.has(c)).map(|c| c.id.clone())
}

/// The conversations other identities hold, read on first use.
struct Held<'a> {
    ctx: &'a Ctx,
    except: &'a Identity,
    ids: Option<HashSet<String>>,
}

impl<'a> Held<'a> {
    fn new(ctx: &'a Ctx, except: &'a Identity) -> Self {
        Held {
            ctx,
            except,
            ids: None,
        }
    }

    fn has(&mut self, conversation: &str) -> bool {
        let (ctx, except) = (self.ctx, self.except);
        self.ids
            .get_or_insert_with(|| held_by_others(ctx, except))
            .contains(conversation)
    }
}

/// Every conversation another identity holds: a live session's
/// `resume_ref`, a parked one's recorded conversation. Files that cannot be
/// read hold nothing.
fn held_by_others(ctx: &Ctx, except: &Identity) -> HashSet<String> {
    use crate::markers::{Flag, Marker};
    let state = &ctx.state;
    let Ok(all) = state.scan() else {
        return HashSet::new();
    };
    let mut ids = HashSet::new();
    for (id, present) in all.iter().filter(|(id, _)| *id != except) {
        if present.has(Marker::Session) {
            if let Ok(Some(rec)) = state.session(id) {
                ids.extend(rec.resume_ref);
            }
        }
        if present.has(Marker::IdleReaped) {
            if let Ok(Some(flag)) = state.flag(id, Flag::IdleReaped) {
                ids.extend(
                    flag.reason
                        .as_deref()
                        .and_then(parked_with)
                        .map(str::to_owned),
                );
            }
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn conv(id: &str, began: Option<EpochMs>) -> Conversation {
        Conversation {
            id: id.to_owned(),
            path: PathBuf::from(format!("/t/{id}.jsonl")),
            began,
        }
    }

    #[test]
    fn ids_never_leave_a_folder() {
        for ok in ["3f2a-11", "abc_DEF", "a"] {
            assert!(is_id(ok), "{ok}");
        }
        for bad in ["", "../x", "a/b", "a.b", "a b", &"x".repeat(129)] {
            assert!(!is_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_park_reason_carries_the_conversation_and_reads_back() {
        let r = park_reason("reaped-idle", Some("abc-1"));
        assert_eq!(r, "reaped-idle conversation=abc-1");
        assert_eq!(parked_with(&r), Some("abc-1"));
        assert_eq!(park_reason("reaped-stopped", None), "reaped-stopped");
        assert_eq!(parked_with("reaped-stopped"), None);
        assert_eq!(parked_with("reaped-idle conversation=../../etc"), None);
        assert_eq!(parked_with("by hand"), None);
    }

    /// One row per way an identity's conversation is chosen.
    #[test]
    fn pick_table() {
        // Most recent first: n2 (another member's, began at 300), n1 (began
        // at 200, nobody's), mine (began at 100), old (began at 10).
        let recent = [
            conv("n2", Some(300)),
            conv("n1", Some(200)),
            conv("mine", Some(100)),
            conv("old", Some(10)),
        ];
        let mine = conv("mine", Some(100));
        let held = ["n2"];
        struct Row {
            name: &'static str,
            known: Option<&'static Conversation>,
            since: Option<EpochMs>,
            want: Option<&'static str>,
        }
        let mine: &'static Conversation = Box::leak(Box::new(mine));
        let rows = [
            Row {
                name: "parked with a known one: exactly it",
                known: Some(mine),
                since: None,
                want: Some("mine"),
            },
            Row {
                name: "live, a newer unheld one began after it: its /clear",
                known: Some(mine),
                since: Some(150),
                want: Some("n1"),
            },
            Row {
                name: "live, newer ones began before the session: its own",
                known: Some(mine),
                since: Some(250),
                want: Some("mine"),
            },
            Row {
                name: "live, the only newer one is held elsewhere: its own",
                known: Some(mine),
                since: Some(210),
                want: Some("mine"),
            },
            Row {
                name: "nothing known, no session: newest nobody holds",
                known: None,
                since: None,
                want: Some("n1"),
            },
            Row {
                name: "nothing known, live: newest begun since, unheld",
                known: None,
                since: Some(50),
                want: Some("n1"),
            },
            Row {
                name: "nothing known, live, nothing begun since: none",
                known: None,
                since: Some(400),
                want: None,
            },
        ];
        for row in rows {
            let mut asked = Vec::new();
            let got = pick(&recent, row.known, row.since, &mut |c| {
                asked.push(c.to_owned());
                held.contains(&c)
            });
            assert_eq!(got.map(|c| c.id.as_str()), row.want, "{}", row.name);
            assert!(
                !asked.iter().any(|a| a == "mine" || a == "old"),
                "{}: asked past the known one: {asked:?}",
                row.name
            );
        }
    }

    #[test]
    fn a_known_one_is_taken_without_reading_anyone_elses_files() {
        let recent = [conv("mine", Some(100))];
        let mine = conv("mine", Some(100));
        let got = pick(&recent, Some(&mine), Some(50), &mut |_| {
            panic!("asked who holds a conversation")
        });
        assert_eq!(got.map(|c| c.id.as_str()), Some("mine"));
    }
}
