//! `make bench`: event latency from a lifecycle.log line to the SSE clients
//! of the daemon's dashboard (median and p99 over 200 lines), with one
//! client (the floor) and with 32, and the daemon's RSS with 32 streams.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iapeer::core::record::Record;
use iapeer::core::vocab::{Ev, Source};
use iapeer::store::log::LogWriter;

const RUNS: usize = 200;

fn main() {
    let home = assert_fs::TempDir::new().expect("temp dir");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_iapeer"))
        .arg("daemon")
        .env("IAPEER_HOME", home.path())
        .env("IAPEER_HTTP_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("daemon");
    let mut err = BufReader::new(daemon.stderr.take().expect("stderr"));
    let addr = loop {
        let mut line = String::new();
        assert!(
            err.read_line(&mut line).expect("read") > 0,
            "the daemon exited"
        );
        if let Some(at) = line.find("http://") {
            let link = line[at + 7..].trim();
            let (addr, token) = link
                .split_once("/?access_token=")
                .expect("the link has its token");
            break (addr.to_owned(), token.to_owned());
        }
    };
    let (addr, token) = addr;
    let log = home.path().join("logs/iapeer/lifecycle.log");
    let mut w = LogWriter::at(&log, 5 << 20, 5);
    let pid = daemon.id();
    let idle = rss_kib(pid);
    let one = run(&addr, &token, &mut w, 1, "one");
    let before = rss_kib(pid);
    let many = run(&addr, &token, &mut w, 32, "many");
    let after = rss_kib(pid);
    let _ = daemon.kill();
    let _ = daemon.wait();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pct = |v: &[Duration], p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
    println!(
        "event latency, lifecycle.log line to SSE client, 1 client: median {:.2} ms, p99 {:.2} ms (n={RUNS}; the floor)",
        ms(pct(&one.each, 50)),
        ms(pct(&one.each, 99))
    );
    println!(
        "event latency with 32 clients: each client median {:.2} ms, p99 {:.2} ms; the last of the 32 median {:.2} ms, p99 {:.2} ms ({:.1}x the floor's median)",
        ms(pct(&many.each, 50)),
        ms(pct(&many.each, 99)),
        ms(pct(&many.slowest, 50)),
        ms(pct(&many.slowest, 99)),
        pct(&many.each, 50).as_secs_f64() / pct(&one.each, 50).as_secs_f64().max(1e-9)
    );
    println!(
        "daemon RSS: {idle} KiB with no client, {before} KiB after one stream, {after} KiB with 32 streams after {RUNS} lines each (+{} KiB)",
        after.saturating_sub(idle)
    );
}

/// Latencies of one run: every client's, and the slowest client's per line.
struct Latencies {
    each: Vec<Duration>,
    slowest: Vec<Duration>,
}

/// Appends `RUNS` lines, each after the last reached every one of
/// `clients` event streams, and times each line to each client.
fn run(addr: &str, token: &str, w: &mut LogWriter, clients: usize, tag: &str) -> Latencies {
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Instant)>();
    let mut readers = Vec::new();
    for _ in 0..clients {
        let tcp = open_stream(addr, token);
        let tx = tx.clone();
        let prefix = format!("\"bench-{tag}-");
        readers.push(std::thread::spawn(move || {
            let mut sse = tcp;
            let mut got = 0;
            while got < RUNS {
                let mut line = String::new();
                if sse.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if let Some(at) = line.find(&prefix) {
                    let rest = &line[at + prefix.len()..];
                    let n: usize = rest[..rest.find('"').unwrap()].parse().unwrap();
                    let _ = tx.send((n, Instant::now()));
                    got += 1;
                }
            }
        }));
    }
    drop(tx);
    // Every stream is open (its head sent) before the first line.
    std::thread::sleep(Duration::from_millis(300));
    let mut each = Vec::with_capacity(RUNS * clients);
    let mut slowest = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        std::thread::sleep(Duration::from_millis(5));
        let t = Instant::now();
        w.append(
            &Record::new(iapeer::core::clock::now_ms(), Ev::Reset, Source::Cli)
                .identity("b")
                .reason(format!("bench-{tag}-{i}")),
        )
        .expect("append");
        let mut last = Duration::ZERO;
        for _ in 0..clients {
            let (n, at) = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("line {i} did not reach every client within 10 s: {e}"));
            assert_eq!(n, i, "lines arrive in order");
            let took = at.duration_since(t);
            each.push(took);
            last = last.max(took);
        }
        slowest.push(last);
    }
    for r in readers {
        let _ = r.join();
    }
    each.sort();
    slowest.sort();
    Latencies { each, slowest }
}

/// An event stream, its head read. A stream the last run closed holds its
/// slot until the daemon's next write to it fails: a 503 is tried again.
fn open_stream(addr: &str, token: &str) -> BufReader<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut tcp = TcpStream::connect(addr).expect("connect");
        // A lost event must end the bench with a message, not hang it.
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        write!(
            tcp,
            "GET /events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .expect("request");
        let mut sse = BufReader::new(tcp);
        let mut status = String::new();
        sse.read_line(&mut status).expect("a status line");
        if status.starts_with("HTTP/1.1 200") {
            return sse;
        }
        assert!(
            status.starts_with("HTTP/1.1 503") && Instant::now() < deadline,
            "the stream was refused: {status}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
