//! `GET /events`: the log as Server-Sent Events. Each line is one event,
//! named by what happened (`event: peer.died`, see `core::stream`), its
//! `id` the position after it, so a client reconnecting with
//! `Last-Event-ID` misses nothing, across rotations. `?backlog=N` replays
//! the last N lines first (read from the end of the log, so its cost is
//! that of N lines), and `?only=peer.died,peer.gave_up` keeps only those
//! names (a name ending in `.` keeps all that start with it: `task.`).

use std::collections::VecDeque;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::server::{error, send};
use super::Shared;
use crate::core::stream;
use crate::store::log::{Follower, Position};

/// Concurrent event streams at most; more get 503.
pub const MAX_STREAMS: usize = 32;
/// A comment line keeps idle streams (and proxies) alive. It is also how a
/// stream learns that its client is gone (the write after the peer closed
/// fails), so a closed stream's slot is freed within two of these.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// Lines a stream may replay with `?backlog=N`.
const BACKLOG_MAX: usize = 1000;
/// Lines read from the log at a time: a stream far behind (a reconnect
/// after a long while) catches up in bounded memory.
const BATCH: usize = 500;
/// Events go out in chunks of about this size, each within the send
/// deadline.
const CHUNK: usize = 64 * 1024;

/// What a client asked of its stream.
#[derive(Debug)]
pub(super) struct Ask {
    pub backlog: Option<String>,
    pub last_id: Option<String>,
    pub only: Option<String>,
    pub head_only: bool,
}

/// Decrements the stream count however a stream ends.
struct StreamSlot<'a>(&'a AtomicUsize);

impl Drop for StreamSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Which names a stream keeps.
#[derive(Debug)]
struct Only(Vec<String>);

impl Only {
    fn keeps(&self, name: Option<&str>) -> bool {
        self.0.is_empty()
            || name.is_some_and(|n| {
                self.0
                    .iter()
                    .any(|want| n == want || (want.ends_with('.') && n.starts_with(want.as_str())))
            })
    }
}

/// Serves one event stream until its client goes, or cannot keep up.
pub(super) fn stream(shared: &Shared, ask: Ask, conn: &mut TcpStream) {
    if shared.streams.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
        shared.streams.fetch_sub(1, Ordering::SeqCst);
        let _ = error(503, "too many event streams; retry later")
            .with_header("Retry-After", "2")
            .send(conn, false);
        return;
    }
    let _slot = StreamSlot(&shared.streams);
    let log = &shared.ctx.config.paths.lifecycle_log;
    let resume = match ask.last_id.as_deref().map(str::trim) {
        None => None,
        Some(id) => match id.parse::<Position>() {
            Ok(p) => Some(p),
            Err(()) => {
                let _ =
                    error(400, "Last-Event-ID is not an event id of this log").send(conn, false);
                return;
            }
        },
    };
    let backlog = match ask.backlog.as_deref().map(str::parse::<usize>) {
        None => None,
        Some(Ok(n)) => Some(n.min(BACKLOG_MAX)),
        Some(Err(_)) => {
            let _ = error(400, "backlog must be a number of lines").send(conn, false);
            return;
        }
    };
    let only = Only(
        ask.only
            .iter()
            .flat_map(|o| o.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect(),
    );
    if let Some(unknown) = only.0.iter().find(|n| {
        !n.ends_with('.') && !stream::NAMES.contains(&n.as_str()) && n.as_str() != "message"
    }) {
        let message = format!(
            "`only` names an event there is not ({unknown}); the names are {}",
            stream::NAMES.join(", ")
        );
        let _ = error(400, &message).send(conn, false);
        return;
    }
    // Positioned before the head goes out: everything logged after the
    // client has the head is in the stream.
    let mut follower = match (resume, backlog) {
        (Some(pos), _) => Follower::at(log, pos),
        (None, Some(n)) => Follower::before_last(log, n),
        (None, None) => Follower::at_end(log),
    };
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
                Connection: close\r\nX-Accel-Buffering: no\r\n\r\n";
    if send(conn, head.as_bytes()).is_err() || ask.head_only {
        return;
    }
    if send(conn, b"retry: 2000\n\n").is_err() {
        return;
    }
    let mut gaps = follower.gaps;
    loop {
        let seen = shared.changes.seen();
        // Read in batches until caught up, each sent before the next read.
        loop {
            let batch: VecDeque<_> = follower.poll_at_most(BATCH).into();
            let more = batch.len() == BATCH;
            let mut frame = String::new();
            if follower.gaps > gaps {
                frame.push_str(&format!(
                    ": {} line(s) could not be read\n\n",
                    follower.gaps - gaps
                ));
                gaps = follower.gaps;
            }
            for f in batch {
                let name = stream::name(&f.entry);
                if !only.keeps(name) {
                    continue;
                }
                if let Some(name) = name {
                    frame.push_str("event: ");
                    frame.push_str(name);
                    frame.push('\n');
                }
                frame.push_str(&format!("id: {}\ndata: {}\n\n", f.next, f.entry.line));
                if frame.len() >= CHUNK {
                    if send(conn, frame.as_bytes()).is_err() {
                        return;
                    }
                    frame.clear();
                }
            }
            // Gone, or too slow to take a chunk within the send deadline.
            if !frame.is_empty() && send(conn, frame.as_bytes()).is_err() {
                return;
            }
            if !more {
                break;
            }
        }
        if !shared.changes.wait_past(seen, KEEPALIVE) && send(conn, b": keepalive\n\n").is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keeps_the_names_asked_for_and_prefixes() {
        let only = Only(vec!["peer.died".into(), "task.".into()]);
        assert!(only.keeps(Some("peer.died")));
        assert!(only.keeps(Some("task.queued")));
        assert!(!only.keeps(Some("peer.parked")));
        assert!(!only.keeps(None));
        assert!(Only(vec![]).keeps(None), "nothing asked: everything");
    }
}
