//! `make bench`: dispatch latency to an idle member — `iapeer dispatch`
//! from process start to exit, with the daemon running and the pool's
//! members up and quiet (100 runs; median and p99).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 100;

fn main() {
    let home = assert_fs::TempDir::new().expect("temp dir");
    let bin = env!("CARGO_BIN_EXE_iapeer");
    let cmd = || {
        let mut c = Command::new(bin);
        c.env("IAPEER_HOME", home.path())
            .env("IAPEER_NO_SCOPE", "1");
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
    ok(&[
        "pool",
        "add",
        "bench",
        "--prefix",
        "b-",
        "--min",
        "2",
        "--max",
        "2",
        "--cwd",
        "/tmp",
        "--runtime",
        "shell",
        "--quiet-secs",
        "0",
        "--",
        "sleep",
        "100000",
    ]);
    let mut daemon = cmd()
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    let log = home.path().join("logs/iapeer/lifecycle.log");
    let start = Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |l| l.matches("\"ev\":\"ready\"").count()) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "members never came up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut lat = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let t = Instant::now();
        ok(&["dispatch", "bench", "--task", &format!("task {i}")]);
        lat.push(t.elapsed());
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    for m in ["b-0", "b-1"] {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(home.path().join(format!("run/{m}.sock")))
            .arg("kill-server")
            .status();
    }
    lat.sort();
    println!(
        "dispatch to an idle member (shell, daemon running): median {:.1} ms, p99 {:.1} ms (n={RUNS})",
        lat[RUNS / 2].as_secs_f64() * 1e3,
        lat[RUNS * 99 / 100].as_secs_f64() * 1e3
    );
}
