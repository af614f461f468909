//! `make bench`: how much a wake costs over starting the same command in
//! tmux by hand. A shell peer that is ready at once, woken 30+ times; each
//! wake is timed from process start to exit, against `tmux new-session` +
//! `kill-session` of the same command on a private socket.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 40;

fn main() {
    let home = assert_fs::TempDir::new().expect("temp dir");
    let bin = env!("CARGO_BIN_EXE_iapeer");
    let run = |args: &[&str]| {
        let out = Command::new(bin)
            .args(args)
            .env("IAPEER_HOME", home.path())
            .env("IAPEER_NO_SCOPE", "1")
            .output()
            .expect("run iapeer");
        assert!(
            out.status.success(),
            "iapeer {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "add",
        "bench",
        "--cwd",
        "/tmp",
        "--runtime",
        "shell",
        "--",
        "sleep",
        "600",
    ]);

    let mut wake = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        run(&["wake", "bench"]);
        wake.push(t.elapsed());
        run(&["stop", "bench"]);
        run(&["start", "bench"]);
    }

    let mut bare = Vec::with_capacity(RUNS);
    for run in 0..RUNS {
        // A socket per run: the server of the previous run may still be
        // exiting after its last session was killed, and a client that
        // reaches it then fails ("server exited unexpectedly").
        let socket = home.path().join(format!("bare-{run}.sock"));
        let t = Instant::now();
        tmux(
            &socket,
            &["new-session", "-d", "-s", "bare", "--", "sleep", "600"],
        );
        tmux(&socket, &["kill-session", "-t", "=bare"]);
        bare.push(t.elapsed());
    }

    let (w, b) = (median(&mut wake), median(&mut bare));
    println!(
        "wake latency (shell, ready at once): median {} over {RUNS} runs; bare tmux new-session + kill-session: median {}; ratio {:.2}",
        ms(w),
        ms(b),
        w.as_secs_f64() / b.as_secs_f64()
    );
}

fn tmux(socket: &Path, args: &[&str]) {
    let status = Command::new("tmux")
        .arg("-S")
        .arg(socket)
        .args(["-f", "/dev/null"])
        .args(args)
        .status()
        .expect("run tmux");
    assert!(status.success(), "tmux {args:?}");
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
