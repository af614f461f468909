//! `make bench`: event latency from a lifecycle.log line to an SSE client
//! of the daemon's dashboard (median and p99 over 200 lines).

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
    let mut tcp = TcpStream::connect(&addr).expect("connect");
    // A lost event must end the bench with a message, not hang it.
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        tcp,
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .expect("request");
    let mut sse = BufReader::new(tcp);
    let log = home.path().join("logs/iapeer/lifecycle.log");
    let mut w = LogWriter::at(&log, 5 << 20, 5);
    let mut lat = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let marker = format!("bench-{i}");
        std::thread::sleep(Duration::from_millis(5));
        let t = Instant::now();
        w.append(
            &Record::new(iapeer::core::clock::now_ms(), Ev::Reset, Source::Cli)
                .identity("b")
                .reason(&marker),
        )
        .expect("append");
        loop {
            let mut line = String::new();
            sse.read_line(&mut line)
                .unwrap_or_else(|e| panic!("no event for {marker} within 10 s: {e}"));
            if line.starts_with("data: ") && line.contains(&format!("\"{marker}\"")) {
                break;
            }
        }
        lat.push(t.elapsed());
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    lat.sort();
    println!(
        "event latency, lifecycle.log line to SSE client: median {:.2} ms, p99 {:.2} ms (n={RUNS})",
        lat[RUNS / 2].as_secs_f64() * 1e3,
        lat[RUNS * 99 / 100].as_secs_f64() * 1e3
    );
}
