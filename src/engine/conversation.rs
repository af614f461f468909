//! Which conversation is whose.
//!
//! Runtimes record conversations by folder, and peers can share a folder
//! (every member of a pool does), so "the newest conversation for the cwd"
//! (DESIGN §11) is only safe to go by when nobody else works there. The
//! rules:
//!
//! - A peer alone in its folder is on the folder's newest conversation
//!   (DESIGN §11: `/clear` starts a new one, `/resume` returns to an old
//!   one), else the one its session knows (`.session`'s `resume_ref`).
//!   Asleep, it resumes the one its park named (the `conversation=` word on
//!   the `.idle-reaped` reason line), else the folder's newest.
//! - A peer with neighbours is on exactly the conversation its session
//!   knows: a newer one could be a neighbour's, so a `/clear` there is not
//!   followed. A session that does not know its conversation yet (a fresh
//!   Codex) is on the one its processes hold open, where the system says;
//!   else on the newest begun since it started that no neighbour holds,
//!   unless a neighbour is in the same position. Asleep, it resumes
//!   exactly the conversation its park named, if no neighbour holds it, and
//!   otherwise starts fresh.

use std::collections::HashSet;

use crate::core::clock::EpochMs;
use crate::core::identity::is_conversation_id;
use crate::core::identity::Identity;
use crate::core::peer::{Peer, RuntimeKind};
use crate::core::session::SessionRecord;
use crate::engine::ctx::Ctx;
use crate::runtime::{Conversation, Runtime};
use crate::store::markers::Flag;

/// The word a park marker's reason line carries the conversation in.
const WORD: &str = "conversation=";

/// The reason line of a park marker: the action, and the conversation the
/// session was on when it is known.
pub(crate) fn park_reason(action: &str, conversation: Option<&str>) -> String {
    match conversation {
        Some(c) => format!("{action} {WORD}{c}"),
        None => action.to_owned(),
    }
}

/// The conversation a park marker's reason line names, if a valid one.
pub(crate) fn parked_with(reason: &str) -> Option<&str> {
    reason
        .split_whitespace()
        .find_map(|w| w.strip_prefix(WORD))
        .filter(|c| is_conversation_id(c))
}

/// What the other peers in an identity's folder hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Neighbours {
    /// Other peers of the same runtime work in this folder.
    pub any: bool,
    /// The conversations they are on or were parked with.
    pub held: HashSet<String>,
    /// One of them is live on a conversation it does not know yet.
    pub unsure: bool,
}

/// A live session's conversation among `recent` (the folder's, most recent
/// first). `known_ref`: what the session's record says; `known`: that
/// conversation, if it exists; `since`: when the session started.
pub(crate) fn pick_live<'c>(
    recent: &'c [Conversation],
    known_ref: Option<&str>,
    known: Option<&'c Conversation>,
    since: EpochMs,
    n: &Neighbours,
) -> Option<&'c Conversation> {
    let begun_since = |c: &&Conversation| c.began.is_some_and(|b| b >= since);
    match (known_ref, n.any) {
        (_, false) => recent.first().or(known),
        (Some(_), true) => known,
        (None, true) if n.unsure => None,
        (None, true) => recent
            .iter()
            .filter(begun_since)
            .find(|c| !n.held.contains(&c.id)),
    }
}

/// The conversation a wake of a sleeping identity resumes. `parked`: what
/// its park marker names; `parked_found`: that conversation, if it exists.
pub(crate) fn pick_resume<'c>(
    recent: &'c [Conversation],
    parked: Option<&str>,
    parked_found: Option<&'c Conversation>,
    n: &Neighbours,
) -> Option<&'c Conversation> {
    match parked {
        Some(_) => parked_found.filter(|c| !n.held.contains(&c.id)),
        None if n.any => None,
        None => recent.first(),
    }
}

/// The conversation a live session is on now.
pub(crate) fn live(
    ctx: &Ctx,
    runtime: &dyn Runtime,
    peer: &Peer,
    rec: &SessionRecord,
) -> Option<Conversation> {
    if runtime.kind() == RuntimeKind::Shell {
        return None; // it keeps no conversations
    }
    let known_ref = rec.resume_ref.as_deref().filter(|r| is_conversation_id(r));
    let same_process = rec.pane_pid > 0
        && (rec.pane_start.is_none()
            || crate::os::process::start_time(rec.pane_pid) == rec.pane_start);
    if same_process {
        if let Some(c) = runtime.current_conversation(peer, rec.pane_pid) {
            return Some(c);
        }
    }
    if known_ref.is_none() && same_process {
        if let Some(c) = runtime.conversation_held(peer, rec.pane_pid) {
            return Some(c);
        }
    }
    let known = || known_ref.and_then(|r| runtime.conversation(peer, r));
    let neighbours = ctx.neighbours(peer);
    let n = match (known_ref, neighbours.is_empty()) {
        // The record settles it: nothing else to read.
        (Some(_), false) => return known(),
        (None, false) => held(ctx, &neighbours),
        (_, true) => Neighbours::default(),
    };
    let recent = runtime.conversations(peer, known_ref);
    // Alone, the known one only matters when nothing is listed.
    let known = if recent.is_empty() { known() } else { None };
    let since = rec.started_ms().unwrap_or(EpochMs::MAX);
    pick_live(&recent, known_ref, known.as_ref(), since, &n).cloned()
}

/// The conversation a resume of a sleeping peer would continue, given what
/// its park marker says (`parked_reason`).
pub(crate) fn resume_target(
    ctx: &Ctx,
    runtime: &dyn Runtime,
    peer: &Peer,
    parked_reason: Option<&str>,
) -> Option<String> {
    let parked = parked_reason.and_then(parked_with);
    let found = parked.and_then(|c| runtime.conversation(peer, c));
    let neighbours = ctx.neighbours(peer);
    let n = if neighbours.is_empty() {
        Neighbours::default()
    } else {
        held(ctx, &neighbours)
    };
    let recent = match (parked, n.any) {
        (None, false) => runtime.conversations(peer, None),
        _ => Vec::new(),
    };
    pick_resume(&recent, parked, found.as_ref(), &n).map(|c| c.id.clone())
}

/// What `neighbours` hold: a live session's `resume_ref`, a parked one's
/// named conversation. A file that cannot be read holds nothing.
fn held(ctx: &Ctx, neighbours: &[Identity]) -> Neighbours {
    let state = &ctx.state;
    let mut n = Neighbours {
        any: true,
        ..Neighbours::default()
    };
    for id in neighbours {
        if let Ok(Some(rec)) = state.session(id) {
            match rec.resume_ref {
                Some(r) => {
                    n.held.insert(r);
                }
                None => n.unsure = true,
            }
        }
        if let Ok(Some(flag)) = state.flag(id, Flag::IdleReaped) {
            n.held.extend(
                flag.reason
                    .as_deref()
                    .and_then(parked_with)
                    .map(str::to_owned),
            );
        }
    }
    n
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
    fn the_park_reason_carries_the_conversation_and_reads_back() {
        let r = park_reason("reaped-idle", Some("abc-1"));
        assert_eq!(r, "reaped-idle conversation=abc-1");
        assert_eq!(parked_with(&r), Some("abc-1"));
        assert_eq!(park_reason("reaped-stopped", None), "reaped-stopped");
        assert_eq!(parked_with("reaped-stopped"), None);
        assert_eq!(parked_with("reaped-idle conversation=../../etc"), None);
        assert_eq!(parked_with("by hand"), None);
    }

    /// name, known ref, known conversation, since, neighbours, expected.
    type LiveRow<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a Conversation>,
        EpochMs,
        Neighbours,
        Option<&'a str>,
    );
    /// name, parked ref, parked conversation, neighbours, expected.
    type ResumeRow<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a Conversation>,
        Neighbours,
        Option<&'a str>,
    );

    fn alone() -> Neighbours {
        Neighbours::default()
    }

    fn beside(held: &[&str], unsure: bool) -> Neighbours {
        Neighbours {
            any: true,
            held: held.iter().map(|h| (*h).to_owned()).collect(),
            unsure,
        }
    }

    /// One row per way a live session's conversation is chosen. The folder
    /// holds, most recent first: n2 (begun at 300), n1 (200), mine (100),
    /// old (10).
    #[test]
    fn pick_live_table() {
        let recent = [
            conv("n2", Some(300)),
            conv("n1", Some(200)),
            conv("mine", Some(100)),
            conv("old", Some(10)),
        ];
        let mine = conv("mine", Some(100));
        #[rustfmt::skip]
        let rows: [LiveRow; 9] = [
            ("alone: the newest (its /clear)",
             Some("mine"), Some(&mine), 150, alone(), Some("n2")),
            ("alone: the newest even if begun before the session (a /resume)",
             Some("mine"), Some(&mine), 350, alone(), Some("n2")),
            ("alone: a known one not written yet, the folder's newest",
             Some("gone"), None, 350, alone(), Some("n2")),
            ("alone, nothing known (found running): the folder's newest",
             None, None, 350, alone(), Some("n2")),
            ("beside others: exactly the known one, never a newer one",
             Some("mine"), Some(&mine), 50, beside(&[], false), Some("mine")),
            ("beside others: a known one not written yet is no other",
             Some("gone"), None, 50, beside(&[], false), None),
            ("beside others, nothing known: the newest nobody holds",
             None, None, 150, beside(&["n2"], false), Some("n1")),
            ("beside others, nothing known, none begun since",
             None, None, 250, beside(&["n2"], false), None),
            ("beside another that does not know its own either: unsure",
             None, None, 150, beside(&[], true), None),
        ];
        for (name, known_ref, known, since, n, want) in rows {
            let got = pick_live(&recent, known_ref, known, since, &n);
            assert_eq!(got.map(|c| c.id.as_str()), want, "{name}");
        }
    }

    #[test]
    fn alone_with_nothing_listed_the_known_one() {
        let mine = conv("mine", Some(100));
        let got = pick_live(&[], Some("mine"), Some(&mine), 50, &alone());
        assert_eq!(got.map(|c| c.id.as_str()), Some("mine"));
    }

    #[test]
    fn pick_resume_table() {
        let recent = [conv("n1", Some(200)), conv("mine", Some(100))];
        let mine = conv("mine", Some(100));
        #[rustfmt::skip]
        let rows: [ResumeRow; 6] = [
            ("alone, parked with one: that one",
             Some("mine"), Some(&mine), alone(), Some("mine")),
            ("alone, parked with one that is gone: nothing",
             Some("gone"), None, alone(), None),
            ("alone, the park named none: the folder's newest",
             None, None, alone(), Some("n1")),
            ("beside others, parked with one: that one",
             Some("mine"), Some(&mine), beside(&["n1"], false), Some("mine")),
            ("beside others that hold it: nothing (never two on one)",
             Some("mine"), Some(&mine), beside(&["mine"], false), None),
            ("beside others, the park named none: nothing, not a guess",
             None, None, beside(&[], false), None),
        ];
        for (name, parked, found, n, want) in rows {
            let got = pick_resume(&recent, parked, found, &n);
            assert_eq!(got.map(|c| c.id.as_str()), want, "{name}");
        }
    }
}
