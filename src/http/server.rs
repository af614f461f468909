//! The dashboard's HTTP/1.1 server, on std: GET and HEAD, one request per
//! connection, every limit explicit. It is small on purpose: the dashboard
//! serves a handful of documents and event streams to a few clients, and
//! what matters is that nothing a client does (an endless header, a
//! thousand idle connections, a client that stops reading) can grow the
//! daemon, take the descriptors its supervision needs, or end the accept
//! loop.
//!
//! - The listener has no timeouts; each connection has its own: its head
//!   must arrive within `HEAD_DEADLINE`, and every write is bounded by the
//!   caller's deadline (see `send`).
//! - A head is at most `HEAD_MAX` bytes; a request with a body is refused
//!   (the dashboard takes none).
//! - At most `Limits::connections` connections are open at once; one more
//!   is answered 503 and closed at once.
//! - An accept that fails (out of descriptors, say) is retried after a
//!   pause, never ends the loop; a handler that panics ends its own
//!   connection only.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A request head's size at most, request line and headers together.
pub(crate) const HEAD_MAX: usize = 16 * 1024;
/// How long a client has to send its whole request head.
pub(crate) const HEAD_DEADLINE: Duration = Duration::from_secs(10);
/// A write that moves nothing for this long fails (the socket's own send
/// timeout; `send` bounds a whole write that drips).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-connection send buffer (the kernel doubles it).
const SEND_BUFFER: usize = 32 * 1024;

/// The method of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Head,
    Other(String),
}

/// A parsed request head.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub method: Method,
    /// The request target as sent (`/events?backlog=5`).
    pub target: String,
    headers: Vec<(String, String)>,
}

impl Request {
    /// The value of the first header called `name` (any case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A whole response, written at once.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Response {
    pub(crate) fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_owned())],
            body: body.into(),
        }
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The bytes on the wire; without the body for a HEAD.
    fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }

    /// Writes it on `conn`, within the send deadline.
    pub(crate) fn send(&self, conn: &mut TcpStream, head_only: bool) -> std::io::Result<()> {
        send(conn, &self.encode(head_only))
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Why a request head was not read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BadHead {
    /// The client went away, or sent nothing at all: no answer is owed.
    Gone,
    /// Answer with this status and message, then close.
    Answer(u16, &'static str),
}

/// Reads one request head from `conn` within `deadline`.
pub(crate) fn read_head(conn: &mut impl ReadTimed, deadline: Instant) -> Result<Request, BadHead> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let end = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(if buf.is_empty() {
                BadHead::Gone
            } else {
                BadHead::Answer(408, "the request head did not arrive in time")
            });
        }
        conn.timeout(left);
        match conn.read(&mut chunk) {
            Ok(0) => return Err(BadHead::Gone),
            Ok(n) => {
                // Only what is new is searched, with three bytes before it.
                let from = buf.len().saturating_sub(3);
                buf.extend_from_slice(&chunk[..n]);
                if let Some(at) = find_end(&buf[from..]) {
                    break from + at;
                }
                if buf.len() > HEAD_MAX {
                    return Err(BadHead::Answer(431, "the request head is too large"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Err(BadHead::Gone),
        }
    };
    if end > HEAD_MAX {
        return Err(BadHead::Answer(431, "the request head is too large"));
    }
    parse_head(&buf[..end])
}

/// Where the head ends (the empty line), as an offset into `bytes`.
fn find_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Parses a request head (without its closing empty line).
pub(crate) fn parse_head(bytes: &[u8]) -> Result<Request, BadHead> {
    const BAD: BadHead = BadHead::Answer(400, "the request is not HTTP/1.1");
    let text = std::str::from_utf8(bytes).map_err(|_| BAD)?;
    let mut lines = text.split("\r\n");
    let line = lines.next().ok_or(BAD)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD);
    };
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") || !target.starts_with('/') {
        return Err(BAD);
    }
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(BAD)?;
        // No space before the colon, no folded lines (RFC 9112 §5).
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(BAD);
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let request = Request {
        method: match method {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            other => Method::Other(other.to_owned()),
        },
        target: target.to_owned(),
        headers,
    };
    let length = request.header("Content-Length").map(str::parse::<u64>);
    if request.header("Transfer-Encoding").is_some() || !matches!(length, None | Some(Ok(0))) {
        return Err(BadHead::Answer(413, "the dashboard takes no request body"));
    }
    Ok(request)
}

/// A connection whose reads can be given a timeout (a test reads from
/// bytes in memory).
pub(crate) trait ReadTimed: Read {
    fn timeout(&mut self, left: Duration);
}

impl ReadTimed for TcpStream {
    fn timeout(&mut self, left: Duration) {
        let _ = self.set_read_timeout(Some(left.max(Duration::from_millis(1))));
    }
}

/// Sends `bytes` and flushes, giving up if that takes longer than
/// `SEND_TIMEOUT`. The socket's own send timeout bounds each system call,
/// but a call that moved a few bytes returns them rather than failing, so
/// a client that drips would never be let go without this deadline.
pub(crate) fn send(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let deadline = Instant::now() + SEND_TIMEOUT;
    let mut rest = bytes;
    while !rest.is_empty() {
        if Instant::now() >= deadline {
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

/// How much the server may take.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Connections open at once, event streams among them.
    pub connections: usize,
}

impl Limits {
    /// At most `max` connections, and never more than a quarter of the
    /// descriptors the process may open: the rest are the supervisor's.
    pub(crate) fn within_descriptors(max: usize) -> Limits {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        let budget = usize::try_from(soft / 4).unwrap_or(usize::MAX).max(2);
        Limits {
            connections: max.min(budget),
        }
    }
}

/// What the server hands each request: its head, and its connection to
/// answer on (and to stream on).
pub(crate) type Handler = dyn Fn(Request, &mut TcpStream) + Send + Sync;

/// Accepts on `listener` for ever, each connection on its own thread.
pub(crate) fn accept_loop(listener: &TcpListener, limits: Limits, handler: &Arc<Handler>) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut failing_since: Option<Instant> = None;
    loop {
        let (mut conn, _) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or memory, or a connection reset
                // before it was taken: say so once per spell, pause, and
                // accept again (what is waiting stays in the backlog).
                if failing_since.is_none() {
                    tracing::warn!("dashboard: accepting failed ({e}); trying again");
                    failing_since = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if let Some(since) = failing_since.take() {
            tracing::info!(
                "dashboard: accepting again after {} ms",
                since.elapsed().as_millis()
            );
        }
        if open.fetch_add(1, Ordering::SeqCst) >= limits.connections {
            open.fetch_sub(1, Ordering::SeqCst);
            refuse(&mut conn);
            continue;
        }
        let slot = Slot(Arc::clone(&open));
        let handler = Arc::clone(handler);
        let spawned = std::thread::Builder::new()
            .name("http-conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _slot = slot;
                serve_one(&mut conn, &handler);
            });
        if let Err(e) = spawned {
            tracing::error!("dashboard: cannot start a connection thread: {e}");
        }
    }
}

/// Frees a connection's place however its thread ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One connection: its head, then the handler.
fn serve_one(conn: &mut TcpStream, handler: &Arc<Handler>) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = conn.set_write_timeout(Some(SEND_TIMEOUT));
    let _ = setsockopt(&*conn, sockopt::SndBuf, &SEND_BUFFER);
    let _ = conn.set_nodelay(true);
    match read_head(conn, Instant::now() + HEAD_DEADLINE) {
        Ok(request) => {
            let _ = conn.set_read_timeout(None);
            handler(request, conn);
        }
        Err(BadHead::Gone) => {}
        Err(BadHead::Answer(status, message)) => {
            let _ = error(status, message).send(conn, false);
        }
    }
}

/// One connection too many: a 503 if it goes out at once, then closed.
fn refuse(conn: &mut TcpStream) {
    if conn.set_nonblocking(true).is_ok() {
        let _ = conn.write(
            &error(503, "too many connections to the dashboard; retry")
                .with_header("Retry-After", "1")
                .encode(false),
        );
    }
}

/// A JSON error response: `{"error": message}`.
pub(crate) fn error(status: u16, message: &str) -> Response {
    Response::new(
        status,
        "application/json",
        serde_json::json!({ "error": message }).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes in memory, read a few at a time, as a slow client sends.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(self.0.len()).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    impl ReadTimed for Trickle<'_> {
        fn timeout(&mut self, _: Duration) {}
    }

    fn head(bytes: &[u8], step: usize) -> Result<Request, BadHead> {
        read_head(
            &mut Trickle(bytes, step),
            Instant::now() + Duration::from_secs(5),
        )
    }

    #[test]
    fn a_head_is_read_however_it_is_split() {
        let raw =
            b"GET /events?backlog=5 HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: 3:4\r\n\r\n";
        for step in [1, 2, 3, 7, 4096] {
            let r = head(raw, step).unwrap();
            assert_eq!(r.method, Method::Get);
            assert_eq!(r.target, "/events?backlog=5");
            assert_eq!(r.header("last-event-id"), Some("3:4"), "step {step}");
        }
    }

    #[test]
    fn bad_heads_get_their_status() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(HEAD_MAX));
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(4 * HEAD_MAX));
        for (raw, want) in [
            (big.as_str(), BadHead::Answer(431, "")),
            (endless.as_str(), BadHead::Answer(431, "")),
            ("", BadHead::Gone),
            ("GET / HTTP/1.1\r\nHost: x", BadHead::Gone),
            ("GET /\r\n\r\n", BadHead::Answer(400, "")),
            ("GET / HTTP/2\r\n\r\n", BadHead::Answer(400, "")),
            ("GET nope HTTP/1.1\r\n\r\n", BadHead::Answer(400, "")),
            (
                "GET / HTTP/1.1\r\nNo colon\r\n\r\n",
                BadHead::Answer(400, ""),
            ),
            (
                "GET / HTTP/1.1\r\nBad name: x\r\n\r\n",
                BadHead::Answer(400, ""),
            ),
            (
                "GET / HTTP/1.1\r\n folded\r\n\r\n",
                BadHead::Answer(400, ""),
            ),
            (
                "GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
                BadHead::Answer(413, ""),
            ),
            (
                "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                BadHead::Answer(413, ""),
            ),
        ] {
            let got = head(raw.as_bytes(), 4096);
            let same = match (&got, &want) {
                (Err(BadHead::Answer(a, _)), BadHead::Answer(b, _)) => a == b,
                (Err(BadHead::Gone), BadHead::Gone) => true,
                _ => false,
            };
            assert!(
                same,
                "{:?}: got {got:?}, want {want:?}",
                &raw[..raw.len().min(40)]
            );
        }
    }

    #[test]
    fn other_methods_parse_for_the_handler_to_refuse() {
        let r = head(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 4096).unwrap();
        assert_eq!(r.method, Method::Other("POST".into()));
    }

    #[test]
    fn a_head_response_has_the_length_but_no_body() {
        let r = Response::new(200, "text/plain", "hello");
        let full = String::from_utf8(r.encode(false)).unwrap();
        let head = String::from_utf8(r.encode(true)).unwrap();
        assert!(full.starts_with("HTTP/1.1 200 OK\r\n") && full.ends_with("\r\n\r\nhello"));
        assert!(head.contains("Content-Length: 5\r\n") && head.ends_with("\r\n\r\n"));
    }
}
