//! `make bench`: what the reading verbs cost as the fleet and the retained
//! log grow: `status --json`, `status NAME --json`, `why NAME --json`,
//! `log --peer NAME -n 20` and `ls`, at 10, 1,000 and
//! 10,000 peers, over 10 MB and 500 MB of log (`IAPEER_BENCH_BIG_LOG_MB`
//! changes the second), with the metrics checkpoint a running daemon
//! keeps. Each is run 5 times (after one warm-up), interleaved with its
//! floor: reading every peer definition file, as any answer about every
//! peer must. Time is min/median/max; memory is the peak RSS of the run.
//!
//! A benchmark prints; it asserts nothing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

const RUNS: usize = 5;

fn main() {
    let big: u64 = std::env::var("IAPEER_BENCH_BIG_LOG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    println!("reading verbs against the fleet and the log (min/median/max of {RUNS}, peak RSS):");
    for (peers, mb) in [
        (10, 10),
        (1000, 10),
        (10_000, 10),
        (1000, big),
        (10_000, big),
    ] {
        let home = assert_fs::TempDir::new().expect("temp dir");
        fill(home.path(), peers, mb);
        let mut floor = Vec::new();
        let mut status = Vec::new();
        let mut one = Vec::new();
        let mut why = Vec::new();
        let mut tail = Vec::new();
        let mut ls = Vec::new();
        for run in 0..=RUNS {
            let f = time_floor(home.path());
            let s = time_iapeer(home.path(), &["status", "--json"]);
            let o = time_iapeer(home.path(), &["status", "p0", "--json"]);
            let w = time_iapeer(home.path(), &["why", "p0", "--json"]);
            let t = time_iapeer(home.path(), &["log", "--peer", "p0", "-n", "20"]);
            let l = time_iapeer(home.path(), &["ls"]);
            if run > 0 {
                floor.push(f);
                status.push(s);
                one.push(o);
                why.push(w);
                tail.push(t);
                ls.push(l);
            }
        }
        let ratio = median(&status.iter().map(|r| r.0).collect::<Vec<_>>()).as_secs_f64()
            / median(&floor).as_secs_f64();
        println!(
            "  {peers:>6} peers, {mb:>4} MB log: status --json {} ({ratio:.1}x reading every peer file, {}); \
             status NAME {}; why {}; log -n 20 {}; ls {} (targets: status <= 2x the floor at 10,000 peers, <= 50 ms at 1,000 peers and 100 MB; \
             why <= 10 ms and <= 10 MB)",
            spread(&status),
            ms_spread(&floor),
            spread(&one),
            spread(&why),
            spread(&tail),
            spread(&ls),
        );
    }
}

/// `peers` shell peers, and `mb` MB of decisions about them, folded once
/// into the metrics checkpoint by a daemon started and stopped.
fn fill(home: &Path, peers: usize, mb: u64) {
    let dir = home.join("peers");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..peers {
        let def = serde_json::json!({
            "name": format!("p{i}"), "cwd": "/tmp", "runtime": "shell",
            "command": ["sleep", "600"], "policy": "lazy",
        });
        std::fs::write(dir.join(format!("p{i}.json")), def.to_string()).unwrap();
    }
    let log = home.join("logs/iapeer/lifecycle.log");
    common::write_history(&log, peers, mb);
    let mut daemon = iapeer(home)
        .env("IAPEER_LIFECYCLE_LOG_MAX_BYTES", "100000000000")
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    let checkpoint = home.join("state/metrics.json");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !checkpoint.exists() {
        assert!(Instant::now() < deadline, "no checkpoint written");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling the daemon this benchmark started.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
}

fn iapeer(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iapeer"));
    c.env("IAPEER_HOME", home).env("IAPEER_NO_SCOPE", "1");
    c
}

/// Wall time and peak RSS (kB) of one run.
// The child is reaped by `wait4`, which also gives its peak RSS.
#[allow(clippy::zombie_processes)]
fn time_iapeer(home: &Path, args: &[&str]) -> (Duration, i64) {
    let t = Instant::now();
    let child = iapeer(home)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run iapeer");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be written over.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid pointers.
    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    (t.elapsed(), usage.ru_maxrss)
}

/// Reading every peer definition file: the least any answer about every
/// peer can cost (in this process: no start-up counted against it).
fn time_floor(home: &Path) -> Duration {
    let t = Instant::now();
    let mut bytes = 0usize;
    for e in std::fs::read_dir(home.join("peers")).unwrap().flatten() {
        bytes += std::fs::read(e.path()).map_or(0, |b| b.len());
    }
    std::hint::black_box(bytes);
    t.elapsed()
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn ms_spread(v: &[Duration]) -> String {
    let mut v = v.to_vec();
    v.sort();
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    format!(
        "{}/{}/{} ms",
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1])
    )
}

fn spread(v: &[(Duration, i64)]) -> String {
    let times: Vec<Duration> = v.iter().map(|r| r.0).collect();
    let peak = v.iter().map(|r| r.1).max().unwrap_or(0);
    format!("{} {:.1} MB", ms_spread(&times), peak as f64 / 1024.0)
}
