//! `make bench`: a queued task's latency after the turn it waited for
//! ends — from the moment the agent's own record says its turn is over
//! (the fake Claude's reply entry) to the `ev=task outcome=delivered` line
//! (20 runs each after a 1 s and a 4 s turn, with the daemon running; min,
//! median, p99). What it is made of is printed beside it: the reader's
//! one-second round, and the 2 s a state must hold before it counts
//! (DESIGN §12) once the turn was long enough to read as working.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 20;

fn fixture(name: &str) -> String {
    format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn lines(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn ms(ts: &str) -> i64 {
    iapeer::core::clock::parse_rfc3339(ts).expect("a time")
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: timed out"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let home = assert_fs::TempDir::new().expect("temp dir");
    let bin = env!("CARGO_BIN_EXE_iapeer");
    let cmd = || {
        let mut c = Command::new(bin);
        c.env("IAPEER_HOME", home.path())
            .env("IAPEER_NO_SCOPE", "1")
            .env("IAPEER_CLAUDE_BIN", fixture("fake-claude"))
            .env("CLAUDE_CONFIG_DIR", home.path().join("claude"));
        c
    };
    let ok = |args: &[&str]| {
        let out = cmd().args(args).output().expect("run");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let cwd = home.path().join("work");
    std::fs::create_dir_all(&cwd).unwrap();
    ok(&["add", "q", "--cwd", cwd.to_str().unwrap()]);
    let mut daemon = cmd()
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    let log = home.path().join("logs/iapeer/lifecycle.log");
    wait("the daemon", || {
        lines(&log).iter().any(|e| e["action"] == "started")
    });
    ok(&["wake", "q"]);
    let transcripts = home.path().join("claude/projects");
    let (mut short, mut long) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
    for i in 0..2 * RUNS {
        let busy = if i % 2 == 0 {
            format!("work 1.{i:02}")
        } else {
            format!("work 4.{i:02}")
        };
        let queued = format!("queued task {i}");
        ok(&["wake", "q", "--task", &busy]);
        // Sent mid-turn: it waits.
        ok(&["wake", "q", "--task", &queued]);
        wait("the delivery", || {
            lines(&log).iter().any(|e| {
                e["ev"] == "task" && e["outcome"] == "delivered" && e["task"] == queued.as_str()
            })
        });
        let delivered = lines(&log)
            .into_iter()
            .find(|e| {
                e["ev"] == "task" && e["outcome"] == "delivered" && e["task"] == queued.as_str()
            })
            .unwrap();
        // The turn's end, as the agent recorded it: its reply after the
        // busy task.
        let mut entries: Vec<serde_json::Value> = Vec::new();
        for f in std::fs::read_dir(&transcripts).unwrap().flatten() {
            for t in std::fs::read_dir(f.path()).unwrap().flatten() {
                for l in std::fs::read_to_string(t.path())
                    .unwrap_or_default()
                    .lines()
                {
                    entries.extend(serde_json::from_str::<serde_json::Value>(l));
                }
            }
        }
        let at = entries
            .iter()
            .position(|e| e["type"] == "user" && e["message"]["content"] == busy.as_str())
            .expect("the busy task");
        let ended = entries[at..]
            .iter()
            .find(|e| e["type"] == "assistant" && e["message"]["stop_reason"] == "end_turn")
            .expect("its reply");
        let took = ms(delivered["ts"].as_str().unwrap()) - ms(ended["timestamp"].as_str().unwrap());
        if i % 2 == 0 {
            short.push(took);
        } else {
            long.push(took);
        }
        // The queued task's own turn is short; let it end.
        wait("idle again", || {
            lines(&log)
                .iter()
                .rev()
                .find(|e| e["ev"] == "activity")
                .is_some_and(|e| e["state"] == "idle")
        });
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = Command::new("tmux")
        .arg("-S")
        .arg(home.path().join("run/q.sock"))
        .arg("kill-server")
        .status();
    println!("queued task, turn end -> delivered (fake Claude, daemon running, n={RUNS} each)");
    for (what, mut lat) in [("after a 1 s turn", short), ("after a 4 s turn", long)] {
        lat.sort();
        let at = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
        println!(
            "  {what}: min {} ms, median {} ms, p99 {} ms",
            lat[0],
            at(0.5),
            at(0.99)
        );
    }
    println!(
        "  made of: the reader's round (1000 ms); after a turn long enough to read as working, 2000 ms of idle before it counts; then typing and the record's confirmation"
    );
}
