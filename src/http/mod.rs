//! The read-only dashboard (`IAPEER_HTTP_ADDR`): `GET /peers` (the
//! `status --json` document), `GET /metrics` (Prometheus), `GET /events`
//! (Server-Sent Events, one per lifecycle.log line, named by what happened,
//! its `id` the line's position, so a client reconnecting with
//! `Last-Event-ID` misses nothing, across rotation), `GET /` (one page,
//! served from the binary) and `GET /healthz` (whether it answers).
//!
//! Nothing here can wake, stop or kill a peer. Every page but `/healthz`
//! needs the dashboard's token: another user of the machine can reach a
//! loopback port, and the log says what every agent was told. The server
//! (`server.rs`) bounds what each client may take; every event stream has
//! its own follower over the log file, so a slow client reads on from its
//! own position and never holds up the supervisor or another client.

mod events;
mod server;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::core::error::{Error, Result};
use crate::core::metrics::Metrics;
use crate::engine::ctx::Ctx;
use crate::engine::status;
use crate::store::config::Config;
use crate::store::definitions;
use crate::store::log::checkpoint::Kept;
use crate::store::log::LogChanges;

use server::{error, Method, Request, Response};

pub use events::MAX_STREAMS;

/// Connections open at most (event streams among them), and never more
/// than a quarter of the descriptors the daemon may open.
const MAX_CONNECTIONS: usize = 64;

const INDEX: &str = include_str!("index.html");

/// What the dashboard needs to start.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub addr: SocketAddr,
    pub token: String,
    /// Where the token was read (or made), to tell the operator.
    pub token_file: PathBuf,
}

/// Checks `IAPEER_HTTP_ADDR` and the token: off loopback, both
/// `--allow-remote` and a 0600 token file of the operator's are required;
/// on loopback, without one, the daemon makes its own at first start.
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
    let (token, token_file) = match &config.http_token_file {
        Some(path) => (read_token(path)?, path.clone()),
        None if !loopback => {
            return Err(Error::Usage(format!(
            "IAPEER_HTTP_ADDR={addr} is reachable from other machines: set IAPEER_HTTP_TOKEN_FILE \
                 to a 0600 file holding a bearer token of 16 characters or more"
        )))
        }
        None => {
            let path = token_path(config);
            (own_token(&path)?, path)
        }
    };
    Ok(Some(Settings {
        addr,
        token,
        token_file,
    }))
}

/// Where the daemon keeps the token it made: `state/http.token`.
pub(crate) fn token_path(config: &Config) -> PathBuf {
    config.paths.state.join("http.token")
}

/// Where the daemon says where its dashboard is: `state/http.json`.
pub(crate) fn where_path(config: &Config) -> PathBuf {
    config.paths.state.join("http.json")
}

/// The daemon's own token: read if it made one before, else made now from
/// the system's random source (24 bytes, hex) in a 0600 file.
fn own_token(path: &Path) -> Result<String> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => read_token(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 24];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
                .map_err(|e| Error::io(Path::new("/dev/urandom"), "read", e))?;
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            crate::store::fsutil::write_atomic(path, format!("{token}\n").as_bytes())?;
            Ok(token)
        }
        Err(e) => Err(Error::io(path, "inspect", e)),
    }
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
    token: String,
    /// Bound to a loopback address: requests must name a loopback host, so
    /// a web page whose name resolves to 127.0.0.1 (DNS rebinding) cannot
    /// reach the dashboard from a browser at all.
    loopback_only: bool,
    /// Bumped whenever lifecycle.log changes.
    changes: Arc<LogChanges>,
    streams: AtomicUsize,
}

/// Binds and serves on a thread of its own, for as long as the daemon
/// runs; returns the bound address, also written to `state/http.json` for
/// `status` and `doctor`. `changes` wakes the event streams when the log
/// changes (the daemon's file watcher bumps it).
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
    let local = listener
        .local_addr()
        .map_err(|e| Error::failed("dashboard", e.to_string(), "report this"))?;
    let doc = serde_json::json!({
        "url": format!("http://{local}/"),
        "pid": std::process::id(),
        "token_file": settings.token_file,
    });
    crate::store::fsutil::write_atomic(&where_path(&ctx.config), format!("{doc}\n").as_bytes())?;
    let limits = server::Limits::within_descriptors(MAX_CONNECTIONS);
    let shared = Arc::new(Shared {
        ctx,
        metrics,
        loopback_only: local.ip().is_loopback(),
        token: settings.token,
        changes,
        streams: AtomicUsize::new(0),
    });
    let handler: Arc<server::Handler> =
        Arc::new(move |request: Request, conn: &mut TcpStream| handle(&shared, request, conn));
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || loop {
            // The accept loop does not end; if a panic ends it, say so and
            // serve again on the same socket (what waits is in its backlog).
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                server::accept_loop(&listener, limits, &handler)
            }));
            if let Err(panic) = served {
                let what = crate::core::error::panic_message(&*panic);
                tracing::error!(
                    "dashboard: the accept loop panicked ({what}); serving again in 1 s"
                );
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .map_err(|e| Error::failed("dashboard", e.to_string(), "check thread limits"))?;
    tracing::info!(
        "dashboard on http://{local}/, at most {} connections",
        limits.connections
    );
    Ok(local)
}

/// What a look at this home's dashboard found.
#[derive(Debug)]
pub(crate) struct Look {
    /// Where it is served, as the daemon wrote it.
    pub url: String,
    /// The link with its token, when the token could be read.
    pub link: Option<String>,
    /// `Err(why)` when it did not answer its `/healthz` in time.
    pub up: std::result::Result<(), String>,
}

impl Look {
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "url": self.url,
            "up": self.up.is_ok(),
            "error": self.up.as_ref().err(),
        })
    }
}

/// Looks at the dashboard the running daemon serves, if it serves one:
/// asks its `/healthz` (within `within`) at the address it wrote. A
/// connection the kernel takes is not enough: it must answer.
pub(crate) fn look(config: &Config, within: Duration) -> Option<Look> {
    use std::io::{Read, Write};
    let doc: serde_json::Value = std::fs::read_to_string(where_path(config))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())?;
    let url = doc["url"].as_str()?.to_owned();
    let link = doc["token_file"]
        .as_str()
        .and_then(|f| read_token(Path::new(f)).ok())
        .map(|token| format!("{url}?access_token={token}"));
    let up = (|| {
        let addr: SocketAddr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .map_err(|_| format!("{} names no address", where_path(config).display()))?;
        let mut conn = TcpStream::connect_timeout(&addr, within).map_err(|e| e.to_string())?;
        let _ = conn.set_read_timeout(Some(within));
        let _ = conn.set_write_timeout(Some(within));
        conn.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut answer = [0u8; 12];
        conn.read_exact(&mut answer)
            .map_err(|e| format!("it took the connection but did not answer ({e})"))?;
        if answer.starts_with(b"HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!(
                "it answered {}",
                String::from_utf8_lossy(&answer).trim()
            ))
        }
    })();
    Some(Look { url, link, up })
}

fn handle(shared: &Shared, request: Request, conn: &mut TcpStream) {
    let target = request.target.clone();
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
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
    let head_only = request.method == Method::Head;
    let answer = |conn: &mut TcpStream, response: Response| {
        let _ = response
            .with_header("Cache-Control", "no-store")
            .send(conn, head_only);
    };
    if let Method::Other(_) = request.method {
        let response =
            error(405, "the dashboard is read-only: only GET").with_header("Allow", "GET, HEAD");
        return answer(conn, response);
    }
    if shared.loopback_only && !request.header("Host").is_none_or(is_loopback_host) {
        let response = error(
            403,
            "this dashboard answers to a loopback host only: open it as http://127.0.0.1:PORT/ or http://localhost:PORT/",
        );
        return answer(conn, response);
    }
    if path == "/healthz" {
        return answer(conn, Response::new(200, "text/plain", "ok\n"));
    }
    let bearer = request
        .header("Authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    let given = bearer.or_else(|| param("access_token"));
    if !given.is_some_and(|g| same(g, &shared.token)) {
        let file = if shared.ctx.config.http_token_file.is_some() {
            "IAPEER_HTTP_TOKEN_FILE".to_owned()
        } else {
            token_path(&shared.ctx.config).display().to_string()
        };
        let response = error(
            401,
            &format!("this dashboard needs its token (in {file}): open the link `iapeer status` prints, or send `Authorization: Bearer <token>`"),
        )
        .with_header("WWW-Authenticate", "Bearer");
        return answer(conn, response);
    }
    let response = match path {
        "/" | "/index.html" => Response::new(200, "text/html; charset=utf-8", INDEX),
        "/peers" => peers(shared),
        "/metrics" => metrics(shared),
        "/events" => {
            let last_id = request
                .header("Last-Event-ID")
                .map(str::to_owned)
                .or_else(|| param("last_event_id").map(str::to_owned));
            let ask = events::Ask {
                backlog: param("backlog").map(str::to_owned),
                last_id,
                only: param("only").map(str::to_owned),
                head_only,
            };
            return events::stream(shared, ask, conn);
        }
        _ => error(
            404,
            "no such page: try /, /peers, /events, /metrics or /healthz",
        ),
    };
    answer(conn, response);
}

fn peers(shared: &Shared) -> Response {
    let ctx = &shared.ctx;
    let all = match definitions::load_peers(&ctx.config.paths) {
        Ok(p) => p,
        Err(e) => return error(500, &e.to_string()),
    };
    let mut metrics = shared
        .metrics
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let statuses = status::with_metrics(
        ctx,
        all,
        |name| metrics.peers.remove(name).map(Kept::Folded),
        |_| None,
    );
    let mut doc = Vec::with_capacity(256 + statuses.len() * 1024);
    status::document(ctx, &statuses, true, None, &mut doc).expect("a Vec takes every write");
    Response::new(200, "application/json", doc)
}

fn metrics(shared: &Shared) -> Response {
    let ctx = &shared.ctx;
    let peers: Vec<crate::core::peer::Peer> = match definitions::load_peers(&ctx.config.paths) {
        Ok(p) => p.into_iter().flatten().collect(),
        Err(e) => return error(500, &e.to_string()),
    };
    let text = {
        let metrics = shared.metrics.lock().unwrap_or_else(|p| p.into_inner());
        if metrics.rebuilding {
            // Counters served before they are whole would go backwards
            // from the last scrape, then jump: a scraper sees a reset.
            return error(
                503,
                "the daemon is still folding its log into the counters; retry in a few seconds",
            )
            .with_header("Retry-After", "5");
        }
        status::prometheus(ctx, &peers, &metrics)
    };
    Response::new(200, "text/plain; version=0.0.4; charset=utf-8", text)
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

    /// EventSource delivers a named event only to a listener for that
    /// name: a name the page does not list would never reach it.
    #[test]
    fn the_page_listens_for_every_event_name() {
        let list = INDEX
            .lines()
            .find_map(|l| l.strip_prefix("const NAMES = ["))
            .expect("the page's list of names");
        let names: Vec<&str> = list
            .trim_end_matches("];")
            .split(',')
            .map(|n| n.trim().trim_matches('"'))
            .collect();
        assert_eq!(names, crate::core::stream::NAMES);
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
