//! The read-only dashboard (`IAPEER_HTTP_ADDR`): `GET /peers` (the
//! `status --json` document), `GET /metrics` (Prometheus), `GET /events`
//! (Server-Sent Events, one per lifecycle.log line, its `id` the line's
//! position, so a client reconnecting with `Last-Event-ID` misses nothing,
//! across rotation) and `GET /` (one page, served from the binary).
//!
//! Nothing here can wake, stop or kill a peer. Requests are parsed by
//! tiny_http; each is handled on its own thread. Every event stream has its
//! own follower over the log file, so a slow client reads on from its own
//! position and never holds up the supervisor or another client: its
//! connection has a small send buffer and send and receive timeouts (set on
//! the listener, inherited by each connection); a client that cannot take
//! a chunk of events within the send timeout is let go.

use std::collections::VecDeque;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, StatusCode};

use crate::core::error::{Error, Result};
use crate::core::metrics::Metrics;
use crate::engine::ctx::Ctx;
use crate::engine::status;
use crate::store::config::Config;
use crate::store::definitions;
use crate::store::log::{Follower, LogChanges, Position};

/// Concurrent event streams at most; more get 503.
pub const MAX_STREAMS: usize = 32;
/// Requests in flight at most; more get 503.
const MAX_REQUESTS: usize = 64;
/// A client that cannot take a chunk of events for this long is let go.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may sit without sending its (next) request; this
/// is also what finally closes a stream that was let go.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-connection send buffer (the kernel doubles it).
const SEND_BUFFER: usize = 32 * 1024;
/// A comment line keeps idle streams (and proxies) alive. It is also how a
/// stream learns that its client is gone (the write after the peer closed
/// fails), so a closed stream's slot is freed within two of these.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// Lines a stream may replay with `?backlog=N`.
const BACKLOG_MAX: usize = 1000;

const INDEX: &str = include_str!("index.html");

/// What the dashboard needs to start.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

/// Checks `IAPEER_HTTP_ADDR` and the token: off loopback, both
/// `--allow-remote` and a 0600 token file are required.
pub(crate) fn settings(config: &Config, allow_remote: bool) -> Result<Option<Settings>> {
    let Some(addr) = config.http_addr else {
        return Ok(None);
    };
    let loopback = addr.ip().is_loopback();
    if !loopback && !allow_remote {
        return Err(Error::Usage(format!(
            "IAPEER_HTTP_ADDR={addr} is not a loopback address; serving the dashboard beyond this \
             machine needs `iapeer daemon --allow-remote` and a token in IAPEER_HTTP_TOKEN_FILE"
        )));
    }
    let token = match &config.http_token_file {
        Some(path) => Some(read_token(path)?),
        None if !loopback => {
            return Err(Error::Usage(format!(
            "IAPEER_HTTP_ADDR={addr} is reachable from other machines: set IAPEER_HTTP_TOKEN_FILE \
                 to a 0600 file holding a bearer token of 16 characters or more"
        )))
        }
        None => None,
    };
    Ok(Some(Settings { addr, token }))
}

fn read_token(path: &Path) -> Result<String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, "read", e))?;
    if !meta.is_file() {
        return Err(Error::unsafe_file(path, "it is not a regular file"));
    }
    crate::store::fsutil::check_owner(path, meta.uid())?;
    if meta.mode() & 0o077 != 0 {
        return Err(Error::unsafe_file(
            path,
            format!(
                "its mode is {:o}; a token file must be 0600",
                meta.mode() & 0o777
            ),
        ));
    }
    let token = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
    let token = token.trim();
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::input(
            path.display().to_string(),
            "the token is shorter than 16 characters or holds spaces",
            "put one long random token in it, e.g. `openssl rand -hex 24`",
        ));
    }
    Ok(token.to_owned())
}

/// Everything a request handler reads.
struct Shared {
    ctx: Arc<Ctx>,
    metrics: Arc<Mutex<Metrics>>,
    token: Option<String>,
    /// Bound to a loopback address without a token: requests must name a
    /// loopback host, so a web page whose name resolves to 127.0.0.1 (DNS
    /// rebinding) cannot read the dashboard from a browser.
    loopback_only: bool,
    /// Bumped whenever lifecycle.log changes.
    changes: Arc<LogChanges>,
    streams: AtomicUsize,
    requests: AtomicUsize,
}

/// Binds and serves on a thread of its own; returns the bound address.
/// `changes` wakes the event streams when the log changes (the daemon's
/// file watcher bumps it).
pub(crate) fn start(
    ctx: Arc<Ctx>,
    metrics: Arc<Mutex<Metrics>>,
    changes: Arc<LogChanges>,
    settings: Settings,
) -> Result<SocketAddr> {
    let listener = TcpListener::bind(settings.addr).map_err(|e| {
        Error::failed(
            format!("IAPEER_HTTP_ADDR={}", settings.addr),
            format!("cannot listen there ({e})"),
            "pick a free port, or unset IAPEER_HTTP_ADDR",
        )
    })?;
    use nix::sys::socket::{setsockopt, sockopt};
    let timeout = nix::sys::time::TimeVal::new(SEND_TIMEOUT.as_secs() as i64, 0);
    setsockopt(&listener, sockopt::SendTimeout, &timeout)
        .map_err(|e| Error::failed("dashboard", e.to_string(), "report this"))?;
    let idle = nix::sys::time::TimeVal::new(RECEIVE_TIMEOUT.as_secs() as i64, 0);
    setsockopt(&listener, sockopt::ReceiveTimeout, &idle)
        .map_err(|e| Error::failed("dashboard", e.to_string(), "report this"))?;
    setsockopt(&listener, sockopt::SndBuf, &SEND_BUFFER)
        .map_err(|e| Error::failed("dashboard", e.to_string(), "report this"))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::failed("dashboard", e.to_string(), "report this"))?;
    // Served from a clone of the socket, so the accept loop can be started
    // again on the same one (below).
    let first = listener
        .try_clone()
        .and_then(|l| tiny_http::Server::from_listener(l, None).map_err(std::io::Error::other))
        .map_err(|e| Error::failed("dashboard", e.to_string(), "report this"))?;

    let shared = Arc::new(Shared {
        ctx,
        metrics,
        loopback_only: settings.token.is_none() && local.ip().is_loopback(),
        token: settings.token,
        changes,
        streams: AtomicUsize::new(0),
        requests: AtomicUsize::new(0),
    });
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            let mut server = Some(first);
            loop {
                let current = match server.take() {
                    Some(s) => s,
                    None => match listener.try_clone().and_then(|l| {
                        tiny_http::Server::from_listener(l, None).map_err(std::io::Error::other)
                    }) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!("dashboard: cannot serve again: {e}; retrying in 1 s");
                            std::thread::sleep(Duration::from_secs(1));
                            continue;
                        }
                    },
                };
                let served = std::time::Instant::now();
                serve(&shared, &current);
                // tiny_http ends its accept loop on the first accept error,
                // and the receive timeout that connections inherit from the
                // listener makes every quiet spell of RECEIVE_TIMEOUT one
                // (EAGAIN). Accept again on the same socket: a connection
                // made meanwhile waits in its backlog, and is not refused.
                // An accept that fails at once (out of descriptors) is not
                // retried in a tight loop.
                if served.elapsed() < RECEIVE_TIMEOUT {
                    tracing::warn!("dashboard: accepting failed early; accepting again in 1 s");
                    std::thread::sleep(Duration::from_secs(1));
                } else {
                    tracing::debug!("dashboard: the accept loop ended; accepting again");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        })
        .map_err(|e| Error::failed("dashboard", e.to_string(), "check thread limits"))?;
    Ok(local)
}

/// Serves requests until `server` stops accepting.
fn serve(shared: &Arc<Shared>, server: &tiny_http::Server) {
    for request in server.incoming_requests() {
        if shared.requests.fetch_add(1, Ordering::SeqCst) >= MAX_REQUESTS {
            shared.requests.fetch_sub(1, Ordering::SeqCst);
            let _ = request.respond(error(503, "too many requests in flight; retry"));
            continue;
        }
        let shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("http-request".into())
            .spawn(move || {
                handle(&shared, request);
                shared.requests.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            tracing::error!("dashboard: cannot start a request thread: {e}");
        }
    }
}

fn handle(shared: &Shared, request: Request) {
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    // Percent-decoded, as the page's own `encodeURIComponent` sends them
    // (a token with `/`, `+` or `=` in it); `+` stays a plus.
    let query: Vec<(String, String)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((percent_decoded(k)?, percent_decoded(v)?)))
        .collect();
    let param = |k: &str| {
        query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    if !matches!(request.method(), Method::Get | Method::Head) {
        let response = error(405, "the dashboard is read-only: only GET")
            .with_header(header("Allow", "GET, HEAD"));
        let _ = request.respond(response);
        return;
    }
    if shared.loopback_only {
        let host = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("Host"))
            .map(|h| h.value.as_str());
        if !host.is_none_or(is_loopback_host) {
            let response = error(
                403,
                "this dashboard answers to a loopback host only: open it as http://127.0.0.1:PORT/ or http://localhost:PORT/",
            );
            let _ = request.respond(response);
            return;
        }
    }
    if let Some(token) = &shared.token {
        let bearer = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("Authorization"))
            .and_then(|h| h.value.as_str().strip_prefix("Bearer "))
            .map(str::trim);
        let given = bearer.or_else(|| param("access_token"));
        if !given.is_some_and(|g| same(g, token)) {
            let response = error(401, "a bearer token is required")
                .with_header(header("WWW-Authenticate", "Bearer"));
            let _ = request.respond(response);
            return;
        }
    }
    let response = match path {
        "/" | "/index.html" => Response::from_string(INDEX)
            .with_header(header("Content-Type", "text/html; charset=utf-8")),
        "/peers" => peers(shared),
        "/metrics" => metrics(shared),
        "/events" => return events(shared, request, param("backlog"), param("last_event_id")),
        _ => error(404, "no such page: try /, /peers, /events or /metrics"),
    };
    let _ = request.respond(response.with_header(header("Cache-Control", "no-store")));
}

fn peers(shared: &Shared) -> Response<std::io::Cursor<Vec<u8>>> {
    let ctx = &shared.ctx;
    let all = match definitions::load_peers(&ctx.config.paths) {
        Ok(p) => p,
        Err(e) => return error(500, &e.to_string()),
    };
    let metrics = shared
        .metrics
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let statuses = status::with_metrics(ctx, all, &metrics, |_| None);
    let doc = status::document(ctx, &statuses, true);
    Response::from_data(doc.to_string().into_bytes())
        .with_header(header("Content-Type", "application/json"))
}

fn metrics(shared: &Shared) -> Response<std::io::Cursor<Vec<u8>>> {
    let ctx = &shared.ctx;
    let peers: Vec<crate::core::peer::Peer> = match definitions::load_peers(&ctx.config.paths) {
        Ok(p) => p.into_iter().flatten().collect(),
        Err(e) => return error(500, &e.to_string()),
    };
    let text = {
        let metrics = shared.metrics.lock().unwrap_or_else(|p| p.into_inner());
        status::prometheus(ctx, &peers, &metrics)
    };
    Response::from_data(text.into_bytes()).with_header(header(
        "Content-Type",
        "text/plain; version=0.0.4; charset=utf-8",
    ))
}

/// Decrements the stream count however a stream ends.
struct StreamSlot<'a>(&'a AtomicUsize);

impl Drop for StreamSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `GET /events`: the log from `Last-Event-ID` (or `?last_event_id=`), the
/// last `?backlog=N` lines, or now on.
fn events(shared: &Shared, request: Request, backlog: Option<&str>, last_id: Option<&str>) {
    if shared.streams.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
        shared.streams.fetch_sub(1, Ordering::SeqCst);
        let _ = request.respond(error(503, "too many event streams; retry later"));
        return;
    }
    let _slot = StreamSlot(&shared.streams);
    let log = &shared.ctx.config.paths.lifecycle_log;
    let header_id = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Last-Event-ID"))
        .map(|h| h.value.as_str().trim().to_owned());
    let resume = match header_id.as_deref().or(last_id) {
        None => None,
        Some(id) => match id.parse::<Position>() {
            Ok(p) => Some(p),
            Err(()) => {
                let _ = request.respond(error(400, "Last-Event-ID is not an event id of this log"));
                return;
            }
        },
    };
    let backlog = match backlog.map(str::parse::<usize>) {
        None => None,
        Some(Ok(n)) => Some(n.min(BACKLOG_MAX)),
        Some(Err(_)) => {
            let _ = request.respond(error(400, "backlog must be a number of lines"));
            return;
        }
    };
    // Positioned before the head goes out: everything logged after the
    // client has the head is in the stream.
    let mut follower = match (resume, backlog) {
        (Some(pos), _) => Follower::at(log, pos),
        (None, Some(_)) => Follower::from_start(log),
        (None, None) => Follower::at_end(log),
    };
    let head_only = *request.method() == Method::Head;
    let mut out = request.into_writer();
    // The stream's head, written here so each event can be flushed as it
    // comes (the request itself was parsed by tiny_http).
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
                Connection: close\r\nX-Accel-Buffering: no\r\n\r\n";
    if send(&mut out, head.as_bytes()).is_err() || head_only {
        return;
    }
    let mut first = follower.poll();
    if let (None, Some(n)) = (resume, backlog) {
        let keep = first.len().saturating_sub(n);
        first.drain(..keep);
    }
    let mut pending: VecDeque<_> = first.into();
    let mut gaps = follower.gaps;
    if send(&mut out, b"retry: 2000\n\n").is_err() {
        return;
    }
    loop {
        let seen = shared.changes.seen();
        pending.extend(follower.poll());
        let mut frame = String::new();
        if follower.gaps > gaps {
            frame.push_str(&format!(
                ": {} line(s) could not be read\n\n",
                follower.gaps - gaps
            ));
            gaps = follower.gaps;
        }
        for f in pending.drain(..) {
            frame.push_str(&format!("id: {}\ndata: {}\n\n", f.next, f.entry.line));
            if frame.len() >= CHUNK && send(&mut out, frame.as_bytes()).is_err() {
                return;
            }
            if frame.len() >= CHUNK {
                frame.clear();
            }
        }
        if !frame.is_empty() && send(&mut out, frame.as_bytes()).is_err() {
            // Gone, or too slow to take a chunk within the send timeout.
            return;
        }
        if !shared.changes.wait_past(seen, KEEPALIVE) && send(&mut out, b": keepalive\n\n").is_err()
        {
            return;
        }
    }
}

/// Events go out in chunks of about this size, each within `SEND_TIMEOUT`.
const CHUNK: usize = 64 * 1024;

/// Sends `bytes` and flushes, giving up if that takes longer than
/// `SEND_TIMEOUT`. The socket's own send timeout bounds each system call,
/// but a call that moved a few bytes returns them rather than failing, so
/// a client that drips would never be let go without this deadline.
fn send(out: &mut dyn Write, bytes: &[u8]) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + SEND_TIMEOUT;
    let mut rest = bytes;
    while !rest.is_empty() {
        if std::time::Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client is not reading",
            ));
        }
        match out.write(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    out.flush()
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("static header names and values are valid")
}

fn error(code: u16, message: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    let body = serde_json::json!({ "error": message }).to_string();
    Response::from_data(body.into_bytes())
        .with_status_code(StatusCode(code))
        .with_header(header("Content-Type", "application/json"))
}

/// Whether a `Host` header names this machine's loopback: `localhost`,
/// `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.starts_with(':') => v6,
            _ => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Compares without leaking where the first difference is.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `%XX` escapes decoded (RFC 3986); `None` for a broken escape or bytes
/// that are not UTF-8.
fn percent_decoded(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded_and_a_plus_stays() {
        assert_eq!(percent_decoded("a%2Fb%2Bc%3Dd").as_deref(), Some("a/b+c=d"));
        assert_eq!(percent_decoded("a/b+c=d").as_deref(), Some("a/b+c=d"));
        assert_eq!(percent_decoded("caf%C3%A9").as_deref(), Some("café"));
        for broken in ["%", "%2", "%zz", "%ff"] {
            assert_eq!(percent_decoded(broken), None, "{broken}");
        }
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(same("abcdefghijklmnop", "abcdefghijklmnop"));
        assert!(!same("abcdefghijklmnop", "abcdefghijklmnoq"));
        assert!(!same("abc", "abcd"));
    }

    #[test]
    fn only_loopback_hosts_pass() {
        for (host, want) in [
            ("127.0.0.1:7077", true),
            ("127.0.0.1", true),
            ("127.1.2.3:80", true),
            ("localhost:7077", true),
            ("LocalHost", true),
            ("[::1]:7077", true),
            ("[::1]", true),
            ("evil.example:7077", false),
            ("localhost.evil.example", false),
            ("10.0.0.1:7077", false),
            ("[::2]:7077", false),
            ("[::1", false),
            ("[::1]x", false),
            ("", false),
        ] {
            assert_eq!(is_loopback_host(host), want, "{host:?}");
        }
    }
}
