//! `make bench`: what a wake costs over starting the same command in tmux
//! by hand, measured so that both sides do the same work. A shell peer
//! that is ready at once; each round times, interleaved and in turn:
//! - a bare launch: `tmux new-session` of the same command on a fresh
//!   private socket, then its stop: `kill-server`;
//! - `iapeer wake` (its launch), then `iapeer stop` (its stop), then an
//!   untimed `iapeer start` (so the next wake is allowed).
//!
//! Launch is compared with launch, and launch + stop with launch + stop;
//! first with no daemon, then with `iapeer daemon` running on the home
//! (it sees every launch and end, as in real use). Three warm-up rounds
//! are not counted. A benchmark prints; it asserts nothing.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 30;
const WARM_UP: usize = 3;

fn main() {
    let home = assert_fs::TempDir::new().expect("temp dir");
    let iapeer = |args: &[&str]| run_iapeer(home.path(), args);
    iapeer(&[
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
    println!("wake vs a bare tmux launch of the same command ({ROUNDS} rounds, interleaved, {WARM_UP} warm-up; min/median/p90/max):");
    rounds(home.path(), "no daemon");
    let daemon = start_daemon(home.path());
    rounds(home.path(), "daemon running");
    stop_daemon(daemon);
}

fn rounds(home: &Path, label: &str) {
    let mut bare_launch = Vec::new();
    let mut bare_both = Vec::new();
    let mut wake = Vec::new();
    let mut wake_both = Vec::new();
    for round in 0..ROUNDS + WARM_UP {
        // A socket per round: a server still exiting after the last
        // kill-server must not answer the next launch.
        let socket = home.join(format!("bare-{label}-{round}.sock").replace(' ', "-"));
        let t = Instant::now();
        tmux(
            &socket,
            &["new-session", "-d", "-s", "bare", "--", "sleep", "600"],
        );
        let launched = t.elapsed();
        tmux(&socket, &["kill-server"]);
        let both = t.elapsed();

        let t = Instant::now();
        run_iapeer(home, &["wake", "bench"]);
        let woke = t.elapsed();
        run_iapeer(home, &["stop", "bench"]);
        let stopped = t.elapsed();
        run_iapeer(home, &["start", "bench"]);

        if round >= WARM_UP {
            bare_launch.push(launched);
            bare_both.push(both);
            wake.push(woke);
            wake_both.push(stopped);
        }
    }
    let ratio = |a: &[Duration], b: &[Duration]| median(a).as_secs_f64() / median(b).as_secs_f64();
    println!(
        "  {label}: launch: wake {} vs bare {}: {:.2}x (target with the daemon running <= 1.3x)",
        spread(&wake),
        spread(&bare_launch),
        ratio(&wake, &bare_launch)
    );
    println!(
        "  {label}: launch + stop: wake + stop {} vs bare new-session + kill-server {}: {:.2}x",
        spread(&wake_both),
        spread(&bare_both),
        ratio(&wake_both, &bare_both)
    );
}

fn run_iapeer(home: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_iapeer"))
        .args(args)
        .env("IAPEER_HOME", home)
        .env("IAPEER_NO_SCOPE", "1")
        .output()
        .expect("run iapeer");
    assert!(
        out.status.success(),
        "iapeer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_daemon(home: &Path) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_iapeer"))
        .arg("daemon")
        .env("IAPEER_HOME", home)
        .env("IAPEER_NO_SCOPE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon");
    // Up when its start-up line is in the log.
    let log = home.join("logs/iapeer/lifecycle.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"action\":\"started\"")) {
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn stop_daemon(mut child: Child) {
    // SAFETY: signalling the daemon this bench started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
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

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

/// `min/median/p90/max` in ms.
fn spread(v: &[Duration]) -> String {
    let mut v = v.to_vec();
    v.sort();
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    format!(
        "{}/{}/{}/{} ms",
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() * 9 / 10]),
        ms(v[v.len() - 1])
    )
}
