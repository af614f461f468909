//! `make bench`: reading the whole retained log. 25 MiB of lines about 20
//! peers, spread over rotated files as the writer leaves them; the time for
//! `iapeer log` (everything, and one peer), `iapeer why` and `status`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iapeer::core::record::Record;
use iapeer::core::vocab::{Action, Ev, Source};
use iapeer::core::vocab::{Cause, Mode};
use iapeer::store::log::LogWriter;

const TARGET: u64 = 25 * 1024 * 1024;

fn main() {
    let home = assert_fs::TempDir::new().expect("temp dir");
    let log = home.path().join("logs/iapeer/lifecycle.log");
    std::fs::create_dir_all(log.parent().expect("dir")).expect("mkdir");
    std::fs::create_dir_all(home.path().join("peers")).expect("peers");
    for p in 0..20 {
        let def = serde_json::json!({"name": format!("p{p}"), "cwd": "/tmp", "runtime": "shell", "command": ["true"]});
        std::fs::write(
            home.path().join(format!("peers/p{p}.json")),
            def.to_string(),
        )
        .expect("peer");
    }
    // Five files of 5 MiB, as the defaults keep.
    let mut w = LogWriter::at(&log, 5 * 1024 * 1024, 5);
    let mut written: u64 = 0;
    let mut n: u64 = 0;
    let t0 = 1_795_000_000_000;
    while written < TARGET {
        let peer = format!("p{}", n % 20);
        let ts = t0 + n as i64 * 1000;
        let r = match n % 4 {
            0 => Record::new(ts, Ev::Wake, Source::Cli)
                .identity(&peer)
                .runtime("claude")
                .mode(Mode::Fresh)
                .cause(Cause::CrashOrSelfClose)
                .session("5f0c2d4e-8a53-4e0b-9d2f-3b1e7c9a6d10"),
            1 => {
                let mut r = Record::new(ts, Ev::Ready, Source::Cli)
                    .identity(&peer)
                    .runtime("claude")
                    .mode(Mode::Fresh)
                    .cause(Cause::CrashOrSelfClose)
                    .session("5f0c2d4e-8a53-4e0b-9d2f-3b1e7c9a6d10");
                r.latency_ms = Some(1200);
                r
            }
            2 => {
                let mut r = Record::new(ts, Ev::Supervise, Source::Daemon)
                    .identity(&peer)
                    .action(Action::ReapedIdle)
                    .outcome(iapeer::core::vocab::Outcome::ResumeEligible)
                    .session("5f0c2d4e-8a53-4e0b-9d2f-3b1e7c9a6d10");
                r.idle_seconds = Some(3671);
                r
            }
            _ => Record::new(ts, Ev::Supervise, Source::Daemon)
                .identity(&peer)
                .action(Action::ReapedGone)
                .outcome(iapeer::core::vocab::Outcome::FreshOnNextMessage)
                .last_lines(Some("Error: out of memory\nat main (index.js:12)\n$")),
        };
        let line = r.to_line();
        written += line.len() as u64 + 1;
        w.append_line(line.as_bytes()).expect("append");
        n += 1;
    }
    println!(
        "built {} lines, {:.1} MiB, in {} files",
        n,
        written as f64 / 1048576.0,
        iapeer::store::log::log_files(&log).expect("files").len()
    );
    let bin = env!("CARGO_BIN_EXE_iapeer");
    let time = |args: &[&str]| {
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let status = Command::new(bin)
                .args(args)
                .env("IAPEER_HOME", home.path())
                .stdout(Stdio::null())
                .status()
                .expect("run");
            assert!(status.success());
            best = best.min(t.elapsed());
        }
        println!(
            "iapeer {} over 25 MiB: {:.0} ms (best of 3)",
            args.join(" "),
            best.as_secs_f64() * 1e3
        );
    };
    time(&["log"]);
    time(&["log", "--json"]);
    time(&["log", "--peer", "p7"]);
    time(&["log", "--ev", "ready", "--since", "2026-11-20T00:00:00Z"]);
    time(&["why", "p7"]);
    time(&["status"]);
}
