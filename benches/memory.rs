//! `make bench`: whether the daemon's memory grows with history.
//!
//! - wake/kill cycles: one shell peer woken by the CLI and its agent
//!   killed, again and again, each death waited for in the log; the
//!   daemon's RSS after the warm-up, half-way and at the end, and its slope
//!   (kB per cycle; target < 0.1). `IAPEER_BENCH_CYCLES` sets the count
//!   (default 2,000; the figure is 10,000);
//! - idle passes: 100 live sessions under a 0.1 s tick (1,000 passes a
//!   second), RSS at 10 s and 40 s, and its slope (kB per second);
//! - start-up over a large retained log (`IAPEER_BENCH_LOG_MB`, default
//!   100): time from spawn to the start-up line and RSS once up, with no
//!   metrics checkpoint (the whole log folded) and with one.
//!
//! A benchmark prints; it asserts nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

fn main() {
    cycles();
    idle_passes();
    start_over_a_large_log();
}

struct Home {
    dir: assert_fs::TempDir,
}

impl Home {
    fn new() -> Self {
        Home {
            dir: assert_fs::TempDir::new().expect("temp dir"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iapeer"));
        c.env("IAPEER_HOME", self.path())
            .env("IAPEER_NO_SCOPE", "1")
            .env("IAPEER_CRASHLOOP_MAX", "1000000")
            .env_remove("NOTIFY_SOCKET");
        c
    }

    fn run(&self, args: &[&str]) {
        let out = self.cmd().args(args).output().expect("run iapeer");
        assert!(
            out.status.success(),
            "iapeer {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Adds `n` shell peers, `p0` …; their names.
    fn add_shell_peers(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let name = format!("p{i}");
                self.run(&[
                    "add",
                    &name,
                    "--cwd",
                    "/tmp",
                    "--runtime",
                    "shell",
                    "--",
                    "sleep",
                    "100000",
                ]);
                name
            })
            .collect()
    }

    fn log(&self) -> PathBuf {
        self.path().join("logs/iapeer/lifecycle.log")
    }

    fn session(&self, name: &str) -> serde_json::Value {
        let path = self.path().join(format!("state/lifecycle/{name}.session"));
        serde_json::from_str(&std::fs::read_to_string(path).expect("session")).expect("json")
    }

    fn daemon(&self, tick: &str) -> Running {
        let child = self
            .cmd()
            .env("IAPEER_TICK_SECS", tick)
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("daemon");
        let running = Running(child);
        wait(Duration::from_secs(60), || started(&self.log()));
        running
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        for e in std::fs::read_dir(self.path().join("run"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "sock") {
                let _ = Command::new("tmux")
                    .arg("-S")
                    .arg(e.path())
                    .arg("kill-server")
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// A daemon killed on drop, even when the benchmark panics.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn started(log: &Path) -> bool {
    started_after(log, 0)
}

/// Whether a daemon start-up line was written past `offset`.
fn started_after(log: &Path, offset: u64) -> bool {
    // The last lines only: the log may be large.
    let Ok(mut f) = std::fs::File::open(log) else {
        return false;
    };
    use std::io::{Read, Seek, SeekFrom};
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(SeekFrom::Start(offset.max(len.saturating_sub(64 * 1024))));
    let mut tail = String::new();
    let _ = f.read_to_string(&mut tail);
    tail.contains("\"action\":\"started\"")
}

fn wait(timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Resident memory in kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn cycles() {
    let n: usize = std::env::var("IAPEER_BENCH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let warm = 100.min(n / 4);
    let home = Home::new();
    home.run(&[
        "add",
        "cy",
        "--cwd",
        "/tmp",
        "--runtime",
        "shell",
        "--",
        "sleep",
        "100000",
    ]);
    let daemon = home.daemon("10");
    let pid = daemon.0.id();
    let mut samples = Vec::new();
    let start = Instant::now();
    for i in 0..=n {
        if i == warm || i == warm + (n - warm) / 2 || i == n {
            samples.push((i, rss_kb(pid)));
        }
        if i == n {
            break;
        }
        home.run(&["wake", "cy"]);
        let rec = home.session("cy");
        let session = rec["session"].as_str().expect("session").to_owned();
        let pane = rec["pane_pid"].as_i64().expect("pid") as i32;
        // SAFETY: killing the agent this benchmark launched.
        unsafe { libc::kill(pane, libc::SIGKILL) };
        let needle = format!("\"session\":\"{session}\"");
        let log = home.log();
        wait(Duration::from_secs(30), || {
            !home.path().join("state/lifecycle/cy.session").exists()
                && std::fs::read_to_string(&log).is_ok_and(|t| {
                    t.lines()
                        .rev()
                        .take(20)
                        .any(|l| l.contains(&needle) && l.contains("reaped-gone"))
                })
        });
    }
    let slope =
        |a: (usize, u64), b: (usize, u64)| (b.1 as f64 - a.1 as f64) / (b.0 - a.0).max(1) as f64;
    println!(
        "daemon RSS over {n} wake/kill cycles ({:.0} s): {} kB after {warm}, {} kB at {}, {} kB at {n}; \
         slope {:.3} kB/cycle over the second half, {:.3} over all (target < 0.1)",
        start.elapsed().as_secs_f64(),
        samples[0].1,
        samples[1].1,
        samples[1].0,
        samples[2].1,
        slope(samples[1], samples[2]),
        slope(samples[0], samples[2]),
    );
}

fn idle_passes() {
    let home = Home::new();
    for name in home.add_shell_peers(100) {
        home.run(&["wake", &name]);
    }
    let daemon = home.daemon("0.1");
    let pid = daemon.0.id();
    std::thread::sleep(Duration::from_secs(10));
    let early = rss_kb(pid);
    std::thread::sleep(Duration::from_secs(30));
    let late = rss_kb(pid);
    println!(
        "daemon RSS with 100 idle live sessions at a 0.1 s tick: {early} kB at 10 s, {late} kB at 40 s; \
         slope {:.2} kB/s (target: flat; at most 12 MiB at 300 live sessions)",
        (late as f64 - early as f64) / 30.0
    );
}

fn start_over_a_large_log() {
    let mb: u64 = std::env::var("IAPEER_BENCH_LOG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let home = Home::new();
    home.add_shell_peers(100);
    // Decisions about those peers, as a long history leaves them: one
    // retained file (rotation off), `mb` MB of it.
    let log = home.log();
    let i = common::write_history(&log, 100, mb);
    let run_once = |label: &str| {
        let offset = std::fs::metadata(&log).map_or(0, |m| m.len());
        let t = Instant::now();
        let daemon = home
            .cmd()
            .env("IAPEER_LIFECYCLE_LOG_MAX_BYTES", "100000000000")
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("daemon");
        let daemon = Running(daemon);
        wait(Duration::from_secs(120), || started_after(&log, offset));
        let up = t.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        println!(
            "daemon start over a {mb} MB log ({i} lines, 100 peers), {label}: up in {:.0} ms, RSS {} kB \
             (targets: < 300 ms with 500 MB; idle RSS <= 8 MiB at 100 peers)",
            up.as_secs_f64() * 1e3,
            rss_kb(daemon.0.id())
        );
        // SIGTERM: it writes its checkpoint on the way out.
        // SAFETY: signalling the daemon this benchmark started.
        unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) };
        let mut d = daemon;
        let _ = d.0.wait();
    };
    run_once("no checkpoint");
    run_once("with its checkpoint");
}
