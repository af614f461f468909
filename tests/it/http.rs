//! The dashboard over HTTP: a real daemon with IAPEER_HTTP_ADDR, real
//! clients (raw TCP for event streams, an HTTP client for the rest, and a
//! headless Chromium for the page).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use iapeer::core::record::Record;
use iapeer::core::vocab::{Ev, Source};
use iapeer::store::log::LogWriter;

use crate::support::{code, stderr, wait_until, Daemon, Home};

/// Starts the daemon on an ephemeral port; returns it with its base URL,
/// whose token (the one the daemon made at first start) `get` and
/// `Stream::open` then send.
fn dashboard(home: &mut Home) -> (Daemon, String) {
    home.set("IAPEER_HTTP_ADDR", "127.0.0.1:0");
    let d = home.daemon();
    let started = home
        .lines_any("daemon")
        .into_iter()
        .rev()
        .find(|e| e.str("action") == Some("started"))
        .unwrap();
    let reason = started.str("reason").unwrap();
    let url = reason[reason
        .find("http://")
        .expect("the banner names the dashboard")..]
        .split(' ')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    assert!(
        !reason.contains(&token_of(home)),
        "the log says where the token is, never the token"
    );
    TOKENS.lock().unwrap().insert(url.clone(), token_of(home));
    (d, url)
}

/// The token the daemon made for `home`, checked to be private.
fn token_of(home: &Home) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = home.path().join("state/http.token");
    let meta = std::fs::metadata(&path).expect("the daemon made its token");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

/// Each dashboard's token, by its base URL (ports are not reused while a
/// test holds its daemon).
static TOKENS: std::sync::Mutex<std::collections::BTreeMap<String, String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The token of the dashboard `url` is on.
fn token_for(url: &str) -> String {
    let tokens = TOKENS.lock().unwrap();
    tokens
        .iter()
        .find(|(base, _)| url.starts_with(base.as_str()))
        .map(|(_, t)| t.clone())
        .unwrap_or_else(|| panic!("{url} is no dashboard a test started"))
}

/// A GET with the dashboard's token, whatever the status.
fn get(url: &str) -> ureq::Response {
    let request = ureq::get(url).set("Authorization", &format!("Bearer {}", token_for(url)));
    match request.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{url}: {e}"),
    }
}

/// A raw event-stream client.
struct Stream {
    reader: BufReader<TcpStream>,
}

#[derive(Debug, Clone, PartialEq)]
struct Event {
    id: String,
    data: serde_json::Value,
}

impl Stream {
    fn open(base: &str, path: &str, headers: &[(&str, &str)]) -> Stream {
        let addr = base.trim_start_matches("http://");
        let mut tcp = TcpStream::connect(addr).unwrap();
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        req.push_str(&format!("Authorization: Bearer {}\r\n", token_for(base)));
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reader = BufReader::new(tcp);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
        Stream { reader }
    }

    /// The next event (comments and retry hints skipped).
    fn next(&mut self) -> Event {
        self.try_next().expect("the stream ended")
    }

    /// The next event, or `None` once the stream has ended.
    fn try_next(&mut self) -> Option<Event> {
        let (mut id, mut data) = (None, None);
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).ok()?;
            if n == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if let (Some(id), Some(data)) = (id.take(), data.take()) {
                    return Some(Event { id, data });
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(v).unwrap());
            }
        }
    }
}

/// A TCP client whose receive buffer stays small.
fn small_buffer_client(addr: &str) -> TcpStream {
    use nix::sys::socket::{
        connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    setsockopt(&fd, sockopt::RcvBuf, &4096).unwrap();
    let sa: std::net::SocketAddrV4 = addr.parse().unwrap();
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(sa)).unwrap();
    TcpStream::from(fd)
}

fn append(home: &Home, reason: &str) {
    let mut w = LogWriter::at(&home.log_path(), 5 << 20, 5);
    w.append(
        &Record::new(iapeer::core::clock::now_ms(), Ev::Reset, Source::Cli)
            .identity("probe")
            .reason(reason),
    )
    .unwrap();
}

#[test]
fn peers_and_metrics_reflect_real_wakes() {
    let mut home = Home::new();
    home.add("alice", &[]);
    home.add("sh", &["--runtime", "shell", "--", "sleep", "600"]);
    let (_d, base) = dashboard(&mut home);
    assert_eq!(code(&home.run(&["wake", "alice"])), 0);
    assert_eq!(code(&home.run(&["wake", "sh"])), 0);
    wait_until(
        Duration::from_secs(5),
        "the metrics to fold the wakes in",
        || {
            get(&format!("{base}/metrics"))
                .into_string()
                .unwrap()
                .contains("iapeer_wakes_total{peer=\"sh\",mode=\"fresh\"} 1")
        },
    );
    let r = get(&format!("{base}/peers"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let doc: serde_json::Value = r.into_json().unwrap();
    assert_eq!(doc["daemon"], true);
    for name in ["alice", "sh"] {
        let p = doc["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap();
        assert_eq!(p["lifecycle_state"], "alive", "{p}");
        assert_eq!(p["lifecycle_metrics"]["wakes_fresh"], 1);
    }
    let text = get(&format!("{base}/metrics")).into_string().unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "iapeer_peer_state"
            && s.labels.get("peer") == Some("alice")
            && s.labels.get("state") == Some("alive")));
}

#[test]
fn events_arrive_within_100_ms_of_being_logged() {
    let mut home = Home::new();
    let (_d, base) = dashboard(&mut home);
    let mut stream = Stream::open(&base, "/events", &[]);
    for i in 0..20 {
        let marker = format!("latency probe {i}");
        let t = Instant::now();
        append(&home, &marker);
        loop {
            let e = stream.next();
            if e.data["reason"] == marker.as_str() {
                break;
            }
        }
        let took = t.elapsed();
        assert!(took < Duration::from_millis(100), "event {i} took {took:?}");
    }
}

/// Regression: the receive timeout set on the listening socket made
/// accept() fail after ten quiet seconds, the server stopped accepting for
/// good, and the dashboard and /metrics refused every later connection (a
/// Prometheus scrape every 15 s, a person opening the page a minute on).
/// Here: a 30 s quiet spell, then three minutes of scrapes at Prometheus's
/// default interval, each parsed.
#[test]
fn the_dashboard_answers_after_a_quiet_spell_and_through_minutes_of_scrapes() {
    let mut home = Home::new();
    home.add("alice", &[]);
    let (_d, base) = dashboard(&mut home);
    assert_eq!(get(&format!("{base}/peers")).status(), 200);
    // The quiet spells are the thing under test: nothing to wait for but time.
    std::thread::sleep(Duration::from_secs(30));
    assert_eq!(
        get(&format!("{base}/")).status(),
        200,
        "after 30 s of quiet"
    );
    for scrape in 0..12 {
        std::thread::sleep(Duration::from_secs(15));
        let r = get(&format!("{base}/metrics"));
        assert_eq!(r.status(), 200, "scrape {scrape}");
        let text = r.into_string().unwrap();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
        assert!(
            parsed
                .samples
                .iter()
                .any(|s| s.metric == "iapeer_peer_state"),
            "scrape {scrape}"
        );
    }
}

/// The receive timeout that closes idle connections must not cut a live
/// stream: it keeps flowing past it.
#[test]
fn a_healthy_stream_outlives_the_idle_timeouts() {
    let mut home = Home::new();
    let (_d, base) = dashboard(&mut home);
    let mut stream = Stream::open(&base, "/events", &[]);
    std::thread::sleep(Duration::from_secs(12));
    append(&home, "still there");
    loop {
        if stream.next().data["reason"] == "still there" {
            break;
        }
    }
}

#[test]
fn reconnecting_with_last_event_id_misses_nothing_across_rotations() {
    let mut home = Home::new();
    home.set("IAPEER_LIFECYCLE_LOG_MAX_BYTES", "700")
        .set("IAPEER_LIFECYCLE_LOG_KEEP", "1000");
    let (_d, base) = dashboard(&mut home);
    let mut w = LogWriter::at(&home.log_path(), 700, 1000);
    let line = |i: u64| {
        let mut r =
            Record::new(iapeer::core::clock::now_ms(), Ev::Reset, Source::Cli).identity("probe");
        r.deaths = Some(i);
        r
    };
    let mut first = Stream::open(&base, "/events", &[]);
    for i in 0..10 {
        w.append(&line(i)).unwrap();
    }
    let mut last = None;
    for i in 0..10 {
        let e = first.next();
        assert_eq!(e.data["deaths"], i);
        last = Some(e.id);
    }
    drop(first);
    // While nobody listens, the log rotates many times.
    for i in 10..60 {
        w.append(&line(i)).unwrap();
    }
    assert!(
        iapeer::store::log::log_files(&home.log_path())
            .unwrap()
            .len()
            > 5
    );
    let id = last.unwrap();
    let mut again = Stream::open(&base, "/events", &[("Last-Event-ID", &id)]);
    for i in 10..60 {
        let e = again.next();
        assert_eq!(e.data["deaths"], i, "in order, none missed, none twice");
    }
    // The query form works too, for clients that cannot set headers.
    let mut q = Stream::open(&base, &format!("/events?last_event_id={id}"), &[]);
    assert_eq!(q.next().data["deaths"], 10);
}

#[test]
fn a_stalled_client_delays_neither_others_nor_the_daemon_and_is_let_go() {
    let mut home = Home::new();
    home.add("sh", &["--runtime", "shell", "--", "sleep", "600"]);
    let (_d, base) = dashboard(&mut home);
    // A client that asks for events and never reads them, with a small
    // receive buffer (set before connecting, so the kernel does not grow
    // it): the server's writes to it soon block.
    let addr = base.trim_start_matches("http://");
    let mut stalled = small_buffer_client(addr);
    stalled
        .write_all(format!("GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    // A live client, reading on its own thread as fast as it can.
    let mut reader = Stream::open(&base, "/events", &[]);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || loop {
        let Some(e) = reader.try_next() else { return };
        if let Some(reason) = e.data["reason"].as_str().filter(|r| r.len() < 100) {
            if tx.send((reason.to_owned(), Instant::now())).is_err() {
                return;
            }
        }
    });
    let wait_for = |marker: &str| loop {
        let (reason, at) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the live client kept receiving");
        if reason == marker {
            return at;
        }
    };
    // A flood far larger than any socket buffer; the stalled client's
    // buffers fill and stay full.
    let big = "x".repeat(900);
    for _ in 0..4000 {
        append(&home, &big);
    }
    append(&home, "flood done");
    wait_for("flood done");
    for i in 0..5 {
        let marker = format!("after the flood {i}");
        let t = Instant::now();
        append(&home, &marker);
        let took = wait_for(&marker).duration_since(t);
        assert!(
            took < Duration::from_millis(100),
            "the live client was held up: {took:?}"
        );
    }
    // The daemon still decides at once.
    assert_eq!(code(&home.run(&["wake", "sh"])), 0);
    let t = Instant::now();
    home.kill_session_process("sh", libc::SIGKILL);
    home.wait_line("sh", "the death", |e| {
        e.str("action") == Some("reaped-gone")
    });
    assert!(t.elapsed() < Duration::from_secs(2));
    // And the stalled client is let go once its buffer is full and the
    // send timeout (5 s) has passed: draining it then reaches the end.
    std::thread::sleep(Duration::from_secs(7));
    stalled
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (mut drained, mut closed) = (0usize, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match stalled.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => drained += n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(
        closed,
        "the server let go of the stalled stream ({drained} bytes drained)"
    );
    assert!(
        drained < 4000 * 900,
        "it was cut off, not fed everything ({drained} bytes)"
    );
}

#[test]
fn bad_requests_get_proper_status_codes() {
    let mut home = Home::new();
    let (_d, base) = dashboard(&mut home);
    assert_eq!(get(&format!("{base}/nope")).status(), 404);
    match ureq::post(&format!("{base}/peers")).send_string("") {
        Err(ureq::Error::Status(405, r)) => assert_eq!(r.header("Allow"), Some("GET, HEAD")),
        other => panic!("POST should be 405: {other:?}"),
    }
    assert_eq!(
        get(&format!("{base}/events?last_event_id=bogus")).status(),
        400
    );
    assert_eq!(get(&format!("{base}/events?backlog=many")).status(), 400);
    // A page whose name was pointed at 127.0.0.1 (DNS rebinding) is refused.
    match ureq::get(&format!("{base}/peers"))
        .set("Host", "evil.example")
        .set("Authorization", &format!("Bearer {}", token_for(&base)))
        .call()
    {
        Err(ureq::Error::Status(403, _)) => {}
        other => panic!("a foreign Host should be 403: {other:?}"),
    }
    let page = get(&format!("{base}/"));
    assert_eq!(page.status(), 200);
    assert!(page.into_string().unwrap().contains("EventSource"));
    // The stream limit.
    let streams: Vec<Stream> = (0..iapeer::http::MAX_STREAMS)
        .map(|_| Stream::open(&base, "/events", &[]))
        .collect();
    assert_eq!(get(&format!("{base}/events")).status(), 503);
    drop(streams);
    wait_until(Duration::from_secs(20), "slots to free", || {
        let mut s = TcpStream::connect(base.trim_start_matches("http://")).unwrap();
        let token = token_for(&base);
        s.write_all(
            format!(
                "GET /events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let mut status = [0u8; 12];
        s.read_exact(&mut status).is_ok() && &status == b"HTTP/1.1 200"
    });
}

#[test]
fn remote_addresses_need_allow_remote_and_a_private_token() {
    let mut home = Home::new();
    home.set("IAPEER_HTTP_ADDR", "0.0.0.0:0");
    let out = home.run(&["daemon"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("IAPEER_HTTP_ADDR") && stderr(&out).contains("--allow-remote"),
        "{}",
        stderr(&out)
    );
    let out = home.run(&["daemon", "--allow-remote"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("IAPEER_HTTP_TOKEN_FILE"),
        "{}",
        stderr(&out)
    );
    let token_file = home.path().join("token");
    std::fs::write(&token_file, "s3cret-token-0123456789\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    home.set("IAPEER_HTTP_TOKEN_FILE", token_file.to_str().unwrap());
    let out = home.run(&["daemon", "--allow-remote"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("0600"), "{}", stderr(&out));
    assert!(
        home.entries().is_empty(),
        "a refused daemon decides nothing"
    );

    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let stderr_file = std::fs::File::create(home.path().join("d.err")).unwrap();
    let child = home
        .iapeer()
        .args(["daemon", "--allow-remote"])
        .stderr(stderr_file)
        .spawn()
        .unwrap();
    let _d = Daemon { child };
    wait_until(Duration::from_secs(10), "started", || {
        std::fs::read_to_string(home.path().join("d.err")).is_ok_and(|s| s.contains("dashboard on"))
    });
    let err = std::fs::read_to_string(home.path().join("d.err")).unwrap();
    let port = err
        .split("0.0.0.0:")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let base = format!("http://127.0.0.1:{port}");
    match ureq::get(&format!("{base}/peers")).call() {
        Err(ureq::Error::Status(401, r)) => {
            assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"))
        }
        other => panic!("expected 401: {other:?}"),
    }
    assert_eq!(
        ureq::get(&format!("{base}/peers"))
            .set("Authorization", "Bearer wrong-token-00000000")
            .call()
            .map(|r| r.status())
            .unwrap_or_else(|e| match e {
                ureq::Error::Status(c, _) => c,
                _ => 0,
            }),
        401
    );
    assert_eq!(
        ureq::get(&format!("{base}/peers"))
            .set("Authorization", "Bearer s3cret-token-0123456789")
            .call()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        ureq::get(&format!(
            "{base}/metrics?access_token=s3cret-token-0123456789"
        ))
        .call()
        .unwrap()
        .status(),
        200
    );
}

// ---- the page in a real browser --------------------------------------------

fn webdriver(
    base: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let url = format!("{base}{path}");
    let r = match (method, body) {
        ("POST", Some(b)) => ureq::post(&url).send_json(b),
        ("DELETE", _) => ureq::delete(&url).call(),
        _ => ureq::get(&url).call(),
    };
    match r {
        Ok(r) => r.into_json().unwrap(),
        Err(ureq::Error::Status(c, r)) => panic!(
            "webdriver {path}: {c} {}",
            r.into_string().unwrap_or_default()
        ),
        Err(e) => panic!("webdriver {path}: {e}"),
    }
}

/// A headless Chromium on a page, through chromedriver (WebDriver).
struct Browser {
    wd: String,
    session: String,
    _driver: Daemon,
}

impl Browser {
    /// Opens `url`, or `None` when chromedriver is missing on purpose.
    fn open(home: &Home, url: &str) -> Option<Browser> {
        let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let Some(chromedriver) = chromedriver else {
            assert!(
                std::env::var_os("IAPEER_SKIP_BROWSER").is_some(),
                "chromedriver is missing: `make test` installs chromium and chromium-driver; set IAPEER_SKIP_BROWSER=1 to skip on purpose"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = std::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let driver = Daemon { child: driver };
        let wd = format!("http://127.0.0.1:{port}");
        wait_until(Duration::from_secs(20), "chromedriver", || {
            ureq::get(&format!("{wd}/status")).call().is_ok()
        });
        let profile = home.path().join("chromium-profile");
        let session = webdriver(
            &wd,
            "POST",
            "/session",
            Some(serde_json::json!({
                "capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             "--window-size=1400,1000", format!("--user-data-dir={}", profile.display())]
                }}}
            })),
        );
        let session = session["value"]["sessionId"].as_str().unwrap().to_owned();
        let browser = Browser {
            wd,
            session,
            _driver: driver,
        };
        browser.call("POST", "/url", Some(serde_json::json!({ "url": url })));
        Some(browser)
    }

    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        webdriver(
            &self.wd,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
    }

    /// The value of a script run in the page.
    fn eval(&self, script: &str) -> serde_json::Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(serde_json::json!({ "script": script, "args": [] })),
        )["value"]
            .clone()
    }

    /// The text of the first element `selector` finds, if any.
    fn text(&self, selector: &str) -> Option<String> {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.textContent : null;",
            serde_json::Value::from(selector)
        );
        self.eval(&script).as_str().map(str::to_owned)
    }

    /// How many elements `selector` finds.
    fn count(&self, selector: &str) -> u64 {
        let script = format!(
            "return document.querySelectorAll({}).length;",
            serde_json::Value::from(selector)
        );
        self.eval(&script).as_u64().unwrap_or(0)
    }

    /// A screenshot, kept as a test artefact in the target folder.
    fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let shot = self.call("GET", "/screenshot", None);
        let png = base64_decode(shot["value"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("artefacts");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{name}.png"));
        std::fs::write(&file, &png).unwrap();
        eprintln!("screenshot: {} ({} bytes)", file.display(), png.len());
        file
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.wd, self.session)).call();
    }
}

/// The page's link with the dashboard's token, as the daemon prints it.
fn page_link(base: &str) -> String {
    format!("{base}/?access_token={}", token_for(base))
}

#[test]
fn the_page_shows_a_peer_come_alive_without_a_reload() {
    let mut home = Home::new();
    // A Claude peer (the fake): its activity is read, where a shell's is not.
    home.add("alice", &[]);
    let (_d, base) = dashboard(&mut home);
    let Some(b) = Browser::open(&home, &page_link(&base)) else {
        return;
    };
    let state = || b.text("tr[data-peer=\"alice\"] .state");
    wait_until(
        Duration::from_secs(15),
        "the page to list alice asleep",
        || state().as_deref() == Some("asleep"),
    );
    wait_until(Duration::from_secs(15), "the event stream to open", || {
        b.eval("return document.getElementById('link').className;") == "live"
    });

    assert_eq!(code(&home.run(&["wake", "alice"])), 0);
    wait_until(
        Duration::from_secs(15),
        "the page to show alice alive, without a reload",
        || state().as_deref() == Some("alive"),
    );
    // What it is doing, as the daemon reads it: its turn is over.
    wait_until(
        Duration::from_secs(15),
        "the page to show alice idle, without a reload",
        || {
            b.text("tr[data-peer=\"alice\"] td.activity")
                .is_some_and(|a| a.starts_with("idle "))
        },
    );
    let decisions = b.text("#events").unwrap_or_default();
    assert!(decisions.contains("first-wake"), "{decisions}");
    // Named events reach the page: the wake is in the list under its name.
    assert!(b.count("#events li[data-event=\"peer.waking\"]") >= 1);
    b.screenshot("dashboard-one-peer");
}

/// The page for peers in every state: each row says why it is as it is
/// (the refusal and when it is retried, the last ending with its exit
/// status and last lines, given up on in red), pools are grouped, filter
/// and sort work, and the plots are drawn from the log.
#[test]
fn the_page_shows_why_activity_and_plots_for_peers_in_every_state() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "0.2");
    home.add("alice", &[]);
    home.add("sleepy", &[]);
    home.add("halted", &["--runtime", "shell", "--", "sleep", "600"]);
    home.add(
        "napper",
        &[
            "--runtime",
            "shell",
            "--idle-secs",
            "1",
            "--",
            "sleep",
            "600",
        ],
    );
    home.add("quitter", &["--runtime", "shell", "--", "sleep", "600"]);
    home.add(
        "crasher",
        &[
            "--runtime",
            "shell",
            "--policy",
            "always",
            "--",
            "sh",
            "-c",
            "echo out of memory; exit 3",
        ],
    );
    let cwd = home.workdir("pool");
    let out = home.run(&[
        "pool",
        "add",
        "cl",
        "--prefix",
        "cl-",
        "--min",
        "1",
        "--max",
        "2",
        "--cwd",
        cwd.to_str().unwrap(),
        "--runtime",
        "shell",
        "--",
        "sleep",
        "600",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (_d, base) = dashboard(&mut home);
    assert_eq!(code(&home.run(&["wake", "alice", "--topic", "billing"])), 0);
    assert_eq!(code(&home.run(&["wake", "halted"])), 0);
    assert_eq!(code(&home.run(&["stop", "halted"])), 0);
    assert_eq!(code(&home.run(&["wake", "napper"])), 0);
    std::fs::write(home.marker("quitter", "failed"), "").unwrap();
    home.wait_line("crasher", "the crash-loop refusal", |e| {
        e.str("cause") == Some("crash-loop")
    });
    home.wait_line("napper", "the idle park", |e| {
        e.str("action") == Some("reaped-idle")
    });
    let Some(b) = Browser::open(&home, &page_link(&base)) else {
        return;
    };
    let row = |peer: &str, cell: &str| b.text(&format!("tr[data-peer=\"{peer}\"] {cell}"));
    wait_until(Duration::from_secs(15), "every state on the page", || {
        [
            ("alice", "alive"),
            ("sleepy", "asleep"),
            ("halted", "stopped"),
            ("napper", "parked"),
            ("quitter", "failed"),
            ("crasher", "crash-looping"),
        ]
        .iter()
        .all(|(p, s)| row(p, ".state").as_deref() == Some(*s))
    });
    wait_until(Duration::from_secs(15), "alice's activity", || {
        row("alice", "td.activity").is_some_and(|a| a.starts_with("idle ") && a.contains("ago"))
    });
    // The why: a refusal with its retry, the last lines of the boots that
    // failed, and the ones given up on in red.
    let crasher = row("crasher", "td.why").unwrap();
    assert!(
        crasher.contains("crash-loop guard") && crasher.contains("retried in"),
        "{crasher}"
    );
    assert!(
        row("crasher", "pre.last-lines").is_some_and(|l| l.contains("out of memory")),
        "the last lines of its last boot"
    );
    assert!(
        row("crasher", "td.why").unwrap().contains("exit"),
        "its exit status"
    );
    assert_eq!(b.count("tr.bad"), 2, "failed and crash-looping stand out");
    assert!(row("quitter", "td.why").unwrap().contains("gave up"));
    assert!(row("napper", "td.why").unwrap().contains("reaped-idle"));
    assert!(row("alice", "td.doing").unwrap().contains("topic: billing"));
    // Pools grouped, under their name.
    assert_eq!(b.count("tr.pool[data-pool=\"cl\"]"), 1);
    // The plots, from the log's lines.
    wait_until(Duration::from_secs(10), "the plots drawn", || {
        b.count("#plot-timeline circle.wake") >= 3
            && b.count("#plot-timeline path.death") >= 1
            && b.count("#plot-latency rect.bar") >= 1
            && b.count("#plot-parks rect.parks") >= 1
    });
    b.screenshot("dashboard-every-state");
    b.eval("document.getElementById('plot-timeline').scrollIntoView(); return 1;");
    b.screenshot("dashboard-plots");
    // Filter and sort.
    b.eval(
        "const f = document.getElementById('filter'); f.value = 'crash'; f.dispatchEvent(new Event('input')); return 1;",
    );
    assert_eq!(
        b.count("#peers tr[data-peer]"),
        1,
        "the filter keeps the crash-looping one"
    );
    b.eval(
        "const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input')); \
         const s = document.getElementById('sort'); s.value = 'attention'; s.dispatchEvent(new Event('change')); return 1;",
    );
    let first = b.eval("return document.querySelector('#peers tr[data-peer]').dataset.peer;");
    assert!(
        first == "quitter" || first == "crasher",
        "needing attention comes first: {first}"
    );
    // Live: a wake shows without a reload.
    assert_eq!(code(&home.run(&["wake", "sleepy"])), 0);
    wait_until(Duration::from_secs(15), "sleepy alive, live", || {
        row("sleepy", ".state").as_deref() == Some("alive")
    });
    b.screenshot("dashboard-after-a-wake");
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|b| *b != b'=' && !b.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|&c| u32::from(value(c))).collect();
        let n = v.iter().fold(0u32, |acc, x| acc << 6 | x) << (6 * (4 - v.len()));
        let take = v.len() * 6 / 8;
        out.extend_from_slice(&n.to_be_bytes()[1..=take]);
    }
    out
}

/// Regression: a token with `/`, `+` or `=` worked as a header but not in
/// the percent-encoded `?access_token=` the page itself sends.
#[test]
fn a_token_with_slash_plus_and_equals_works_in_both_forms() {
    let mut home = Home::new();
    let token = "a/b+c=d-0123456789abcdef";
    let token_file = home.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    home.set("IAPEER_HTTP_ADDR", "127.0.0.1:0")
        .set("IAPEER_HTTP_TOKEN_FILE", token_file.to_str().unwrap());
    let stderr_file = std::fs::File::create(home.path().join("d.err")).unwrap();
    let child = home
        .iapeer()
        .arg("daemon")
        .stderr(stderr_file)
        .spawn()
        .unwrap();
    let _d = Daemon { child };
    let mut base = String::new();
    wait_until(Duration::from_secs(10), "the dashboard", || {
        let err = std::fs::read_to_string(home.path().join("d.err")).unwrap_or_default();
        match err.split("dashboard on ").nth(1) {
            Some(rest) => {
                base = rest
                    .lines()
                    .next()
                    .unwrap_or("")
                    .split('?')
                    .next()
                    .unwrap_or("")
                    .trim_end_matches('/')
                    .to_owned();
                true
            }
            None => false,
        }
    });
    let status = |r: Result<ureq::Response, ureq::Error>| match r {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(c, _)) => c,
        Err(e) => panic!("{e}"),
    };
    let header = ureq::get(&format!("{base}/peers"))
        .set("Authorization", &format!("Bearer {token}"))
        .call();
    assert_eq!(status(header), 200);
    let encoded = "a%2Fb%2Bc%3Dd-0123456789abcdef";
    assert_eq!(
        status(ureq::get(&format!("{base}/peers?access_token={encoded}")).call()),
        200
    );
    assert_eq!(
        status(ureq::get(&format!("{base}/peers?access_token={token}")).call()),
        200
    );
    assert_eq!(
        status(ureq::get(&format!("{base}/peers?access_token=a%2Fb%2Bc%3Dd-wrong")).call()),
        401
    );
    assert_eq!(
        status(ureq::get(&format!("{base}/peers?access_token=%zz")).call()),
        401
    );
}

// ---- under pressure --------------------------------------------------------

/// A process's resident memory, in KiB.
fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// This process may open as many descriptors as its hard limit allows.
fn raise_own_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reading our own limit into a valid struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    crate::support::set_limit(0, libc::RLIMIT_NOFILE, lim.rlim_max, lim.rlim_max);
}

/// The status line a raw request gets, or why none came.
fn raw_status(addr: &str, request: &str) -> Result<String, String> {
    let mut tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(tcp)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(line.trim().to_owned())
}

/// Regression: one client sending an endless header grew the daemon 1:1,
/// and 1,100 idle connections took its descriptors, so a `.new-eager` was
/// never launched and a healthy agent was recorded dead.
#[test]
fn an_endless_header_and_a_thousand_idle_connections_leave_the_daemon_small_and_launching() {
    raise_own_fd_limit();
    let mut home = Home::new();
    home.add("alice", &[]);
    home.add("bob", &[]);
    let (d, base) = dashboard(&mut home);
    assert_eq!(code(&home.run(&["wake", "bob"])), 0);
    let addr = base.trim_start_matches("http://").to_owned();
    let before = rss_kib(d.pid());

    // An endless header: cut off after its first few KiB.
    let to = addr.clone();
    let endless = std::thread::spawn(move || {
        let mut tcp = TcpStream::connect(&to).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Endless: ")
            .unwrap();
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0u64;
        while sent < 1 << 30 {
            match tcp.write(&chunk) {
                Ok(n) => sent += n as u64,
                Err(_) => break,
            }
        }
        sent
    });
    // A thousand connections that never send a byte.
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let sent = endless.join().unwrap();
    assert!(
        sent < 64 << 20,
        "the endless header was cut off, not read: {sent} bytes went in"
    );

    // The daemon still does its work: a sleeping peer is launched at once.
    std::fs::write(home.marker("alice", "new-eager"), "").unwrap();
    home.wait_line("alice", "alice launched fresh for its .new-eager", |e| {
        e.str("ev") == Some("ready")
    });
    // And nothing it supervises was read as dead.
    let deaths = home.count("bob", |e| e.str("ev") == Some("supervise"));
    assert_eq!(
        deaths,
        0,
        "bob lives on: {:?}",
        home.lines("bob", "supervise")
    );
    let after = rss_kib(d.pid());
    assert!(
        after < before + 64 * 1024,
        "the daemon grew from {before} KiB to {after} KiB"
    );
    // Idle connections are let go at the head deadline; then it answers.
    wait_until(
        Duration::from_secs(30),
        "the dashboard to answer again",
        || {
            raw_status(&addr, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .is_ok_and(|s| s == "HTTP/1.1 200 OK")
        },
    );
    drop(idle);
    let fds = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .count();
    assert!(fds < 200, "the daemon holds {fds} descriptors");
}

/// Regression: each `/events?backlog=1` read every retained line into
/// memory: 32 of them over 30 MiB of log took the daemon to 5.6 GiB.
#[test]
fn backlog_replays_over_a_30_mib_log_keep_the_daemon_small() {
    let mut home = Home::new();
    // Six files of 5 MiB: the current log and five rotations.
    let log = home.log_path();
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let mut n = 0u64;
    for file in [
        "lifecycle.log.5",
        "lifecycle.log.4",
        "lifecycle.log.3",
        "lifecycle.log.2",
        "lifecycle.log.1",
        "lifecycle.log",
    ] {
        let mut text = String::with_capacity(5 << 20);
        while text.len() < 5 << 20 {
            n += 1;
            let r = Record::new(iapeer::core::clock::now_ms(), Ev::Reset, Source::Cli)
                .identity("probe")
                .reason(format!(
                    "filler line {n}, long enough to look like a real decision's reason"
                ));
            text.push_str(&r.to_line());
            text.push('\n');
        }
        std::fs::write(log.with_file_name(file), text).unwrap();
    }
    home.set("IAPEER_LIFECYCLE_LOG_MAX_BYTES", &(6u64 << 20).to_string());
    let (d, base) = dashboard(&mut home);
    let before = rss_kib(d.pid());
    let streams: Vec<Stream> = (0..32)
        .map(|_| Stream::open(&base, "/events?backlog=1000", &[]))
        .collect();
    let mut last = Vec::new();
    for mut s in streams {
        // The first of its thousand is a filler line 999 before the end.
        let first = s.next();
        assert_eq!(first.data["ev"], "reset");
        last.push(s);
    }
    let after = rss_kib(d.pid());
    assert!(
        after < before + 64 * 1024,
        "the daemon grew from {before} KiB to {after} KiB"
    );
}

/// Another user of the machine reaches the loopback port, but not the
/// token (its file is 0600 in a 0700 home): every page is refused.
#[test]
fn another_local_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: running a request as `nobody` needs root");
        return;
    }
    let mut home = Home::new();
    let (_d, base) = dashboard(&mut home);
    let addr = base.trim_start_matches("http://");
    let token = home.path().join("state/http.token");
    // As nobody: the token cannot be read, and without it nothing is served.
    let script = format!(
        "cat {token} 2>/dev/null && echo READ; \
         for p in / /peers /metrics /events?backlog=5; do \
           curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 5 http://{addr}$p; done",
        token = token.display()
    );
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("READ"), "nobody read the token: {text}");
    let codes: Vec<&str> = text.lines().collect();
    assert_eq!(
        codes,
        ["401", "401", "401", "401"],
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Without a checkpoint, a long log is folded on a thread of its own: the
/// daemon is up at once, and `/metrics` answers 503 until the counters are
/// whole, never with counters short of the log (a scraper would read that
/// as a reset).
#[test]
fn a_long_log_without_a_checkpoint_is_folded_behind_a_daemon_already_up() {
    let mut home = Home::new();
    home.add("p0", &["--runtime", "shell", "--", "sleep", "600"]);
    let log = home.log_path();
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let mut text = String::with_capacity(64 << 20);
    let mut wakes = 0u64;
    while text.len() < 64 << 20 {
        wakes += 1;
        let r = Record::new(iapeer::core::clock::now_ms(), Ev::Wake, Source::Cli)
            .identity("p0")
            .mode(iapeer::core::vocab::Mode::Fresh)
            .reason("filler: a long history of wakes, each as long as a real one");
        text.push_str(&r.to_line());
        text.push('\n');
    }
    std::fs::write(&log, text).unwrap();
    home.set(
        "IAPEER_LIFECYCLE_LOG_MAX_BYTES",
        &(128u64 << 20).to_string(),
    )
    .set("IAPEER_HTTP_ADDR", "127.0.0.1:0");
    // Not `dashboard()`: its look for the start-up line would read the
    // whole log itself. The dashboard's address file says it is up.
    let began = Instant::now();
    let child = home
        .iapeer()
        .arg("daemon")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _d = Daemon { child };
    let serving = home.path().join("state/http.json");
    wait_until(Duration::from_secs(30), "the dashboard up", || {
        serving.exists()
    });
    let up = began.elapsed();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&serving).unwrap()).unwrap();
    let base = doc["url"]
        .as_str()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    TOKENS.lock().unwrap().insert(base.clone(), token_of(&home));
    let whole = format!("iapeer_wakes_total{{peer=\"p0\",mode=\"fresh\"}} {wakes}\n");
    let mut answers = Vec::new();
    wait_until(Duration::from_secs(60), "the counters, whole", || {
        let r = get(&format!("{base}/metrics"));
        let status = r.status();
        let body = r.into_string().unwrap();
        answers.push(status);
        assert!(
            status == 503 || (status == 200 && body.contains(&whole)),
            "a scrape got {status} with counters short of the log: {}",
            body.lines()
                .find(|l| l.starts_with("iapeer_wakes_total"))
                .unwrap_or("")
        );
        status == 200
    });
    // It supervised meanwhile: up well before a fold of 64 MiB would end
    // on a small machine, and a wake goes through.
    assert!(up < Duration::from_secs(5), "up after {up:?}");
    assert_eq!(code(&home.run(&["wake", "p0"])), 0);
    let waited = answers.iter().filter(|s| **s == 503).count();
    eprintln!("up after {up:?}; {waited} scrape(s) answered 503 before the counters were whole");
}
