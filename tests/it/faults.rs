//! Environment faults: the clock jumping, tmux dying or missing, the log's
//! disk filling up. The supervisor must neither hang nor lose a decision.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use iapeer::core::error::{Error, Refusal};
use iapeer::core::identity::Identity;
use iapeer::core::vocab::Source;
use iapeer::core::wake_plan::Ask;
use iapeer::engine::ctx::Ctx;
use iapeer::store::config::Config;

use crate::support::{code, set_limit, stderr, wait_until, Home};

const DAY: i64 = 86_400_000;

fn ctx_with_clock(home: &Home, clock: Arc<AtomicI64>) -> Ctx {
    let path = home.path().to_path_buf();
    let config = Config::from_lookup(|k| match k {
        "IAPEER_HOME" => Some(path.clone().into()),
        "IAPEER_CRASHLOOP_WINDOW_SECS" => Some("60".into()),
        _ => std::env::var_os(k),
    })
    .unwrap();
    Ctx::open(config, Source::Cli)
        .unwrap()
        .with_clock(Arc::new(move || clock.load(Ordering::SeqCst)))
}

#[test]
fn the_crash_loop_guard_survives_the_wall_clock_jumping() {
    let home = Home::new();
    home.add("sh", &["--runtime", "shell", "--", "sleep", "600"]);
    let id = Identity::parse("sh").unwrap();
    let t = iapeer::core::clock::now_ms();
    let clock = Arc::new(AtomicI64::new(t));
    let ctx = ctx_with_clock(&home, Arc::clone(&clock));
    std::fs::create_dir_all(home.lifecycle()).unwrap();
    let deaths = home.marker("sh", "deaths");
    std::fs::write(&deaths, format!("[{},{},{}]", t - 3, t - 2, t - 1)).unwrap();

    // The clock jumps back a day: those deaths are now "in the future".
    // They count as now, and the guard lifts one window later, not a day.
    clock.store(t - DAY, Ordering::SeqCst);
    match iapeer::engine::wake::wake(&ctx, &id, &Ask::default()) {
        Err(f) => match f.error {
            Error::Refused(Refusal::CrashLoop { retry_after_ms, .. }) => {
                assert_eq!(retry_after_ms, t - DAY + 60_000)
            }
            e => panic!("expected a crash-loop refusal, got {e}"),
        },
        Ok(w) => panic!("launched through the guard: {w:?}"),
    }
    let stored: Vec<i64> =
        serde_json::from_str(&std::fs::read_to_string(&deaths).unwrap()).unwrap();
    assert_eq!(stored, vec![t - DAY; 3], "clamped to the new now");
    clock.store(t - DAY + 60_000, Ordering::SeqCst);
    assert!(
        iapeer::engine::wake::wake(&ctx, &id, &Ask::default()).is_ok(),
        "the guard lifts a window later"
    );

    // A jump forward ages deaths out with it.
    home.run(&["stop", "sh"]);
    home.run(&["start", "sh"]);
    std::fs::write(&deaths, format!("[{},{},{}]", t - 3, t - 2, t - 1)).unwrap();
    clock.store(t + DAY, Ordering::SeqCst);
    assert!(iapeer::engine::wake::wake(&ctx, &id, &Ask::default()).is_ok());
}

#[test]
fn a_killed_tmux_server_is_a_death_not_a_hang() {
    let home = Home::new();
    home.add("alice", &[]);
    let _d = home.daemon();
    assert_eq!(code(&home.run(&["wake", "alice"])), 0);
    let socket = home.path().join("run/alice.sock");
    let server = home.tmux_server_pid("alice");
    // SAFETY: killing the tmux server this test started.
    unsafe { libc::kill(server, libc::SIGKILL) };
    let line = home.wait_line("alice", "the death", |e| {
        e.str("action") == Some("reaped-gone")
    });
    assert!(line.str("exit_status").is_some());
    wait_until(Duration::from_secs(5), "the record to go", || {
        !home.has("alice", "session")
    });
    assert!(!socket.exists(), "the dead server's socket is cleaned up");
    assert_eq!(code(&home.run(&["wake", "alice"])), 0, "and it comes back");
}

#[test]
fn tmux_missing_from_path_is_a_clear_error() {
    let home = Home::new();
    home.add("alice", &[]);
    std::fs::create_dir_all(home.lifecycle()).unwrap();
    let reaped = "2026-11-21T04:44:14.821Z\nidle 3600s\n";
    std::fs::write(home.marker("alice", "idle-reaped"), reaped).unwrap();
    std::fs::write(home.marker("alice", "new-eager"), "").unwrap();
    let out = home
        .iapeer()
        .env("PATH", "/nonexistent")
        .args(["wake", "alice"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains("tmux") && err.contains("install tmux"),
        "{err}"
    );
    let fail = home.lines("alice", "wake").pop().unwrap();
    assert_eq!(fail.str("cause"), Some("launch-failed"));
    assert!(!home.has("alice", "session"));
    // Nothing launched, so nothing was consumed.
    let read = |m| std::fs::read_to_string(home.marker("alice", m)).unwrap();
    assert_eq!(read("idle-reaped"), reaped);
    assert_eq!(read("new-eager"), "");
}

/// The log's size between appends: under the writers' lock, so a short
/// write caught before its writer takes the fragment back is not seen.
fn settled_len(log: &std::path::Path) -> u64 {
    let mut lock = log.as_os_str().to_owned();
    lock.push(".lock");
    let lock = std::fs::File::open(lock).unwrap();
    lock.lock().unwrap();
    std::fs::metadata(log).unwrap().len()
}

fn set_fsize(pid: i32, limit: Option<u64>) {
    set_limit(
        pid,
        libc::RLIMIT_FSIZE,
        limit.unwrap_or(libc::RLIM_INFINITY),
        libc::RLIM_INFINITY,
    );
}

#[test]
fn a_full_disk_holds_the_decision_back_and_the_daemon_keeps_running() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "0.3");
    home.add(
        "keeper",
        &[
            "--policy",
            "always",
            "--runtime",
            "shell",
            "--",
            "sleep",
            "600",
        ],
    );
    let mut d = home.daemon();
    home.wait_line("keeper", "up", |e| e.str("ev") == Some("ready"));
    let session = home.session("keeper").unwrap()["session"]
        .as_str()
        .unwrap()
        .to_owned();
    std::thread::sleep(Duration::from_millis(300));
    let log = home.log_path();
    let full = std::fs::metadata(&log).unwrap().len() + 10;
    set_fsize(d.pid(), Some(full));

    home.kill_session_process("keeper", libc::SIGKILL);
    std::thread::sleep(Duration::from_secs(2));
    if let Some(status) = d.child.try_wait().unwrap() {
        let stderr = std::fs::read_to_string(home.path().join("daemon.stderr"));
        panic!("the daemon did not keep running: it exited {status}; stderr: {stderr:?}");
    }
    assert_eq!(settled_len(&log), full - 10, "no partial line left behind");
    assert_eq!(
        home.count("keeper", |e| e.str("ev") == Some("supervise")),
        0,
        "nothing logged, so nothing done"
    );
    let rec = home
        .session("keeper")
        .expect("the end is journaled, not lost");
    assert_eq!(rec["ending"]["action"], "always-on-relaunch");

    set_fsize(d.pid(), None);
    let line = home.wait_line("keeper", "the death, once there is room", |e| {
        e.str("action") == Some("always-on-relaunch")
    });
    assert_eq!(line.str("session"), Some(session.as_str()));
    wait_until(Duration::from_secs(10), "relaunched", || {
        home.count("keeper", |e| e.str("ev") == Some("ready")) == 2
    });
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        home.count("keeper", |e| e.str("action") == Some("always-on-relaunch")),
        1,
        "recorded once"
    );
    let (_, stats) = iapeer::store::log::read_all(&log).unwrap();
    assert_eq!(stats.skipped, 0);
}

/// Out of file descriptors, a live agent is "cannot tell", never dead: a
/// hundred live sessions under a daemon held to 64 open files for thirty
/// seconds, and none is recorded dead or ended, and the log grows by no
/// more than a line or two per peer (it once grew by 30,000 lines).
#[test]
fn out_of_descriptors_no_healthy_agent_is_recorded_dead() {
    const PEERS: usize = 100;
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "0.2");
    let names: Vec<String> = (0..PEERS).map(|i| format!("f{i}")).collect();
    for n in &names {
        home.add(n, &["--runtime", "shell", "--", "sleep", "100000"]);
        assert_eq!(code(&home.run(&["wake", n])), 0);
    }
    let pids: Vec<i32> = names
        .iter()
        .map(|n| home.session(n).unwrap()["pane_pid"].as_i64().unwrap() as i32)
        .collect();
    let d = home.daemon();
    let before = home.entries().len();
    // Soft and hard: the daemon cannot raise it back.
    set_limit(d.pid(), libc::RLIMIT_NOFILE, 64, 64);
    // What is asserted is an absence over time: there is no event to wait
    // for, so the window is the measure.
    std::thread::sleep(Duration::from_secs(30));
    let dead: usize = names
        .iter()
        .map(|n| home.count(n, |e| e.str("action") == Some("reaped-gone")))
        .sum();
    assert_eq!(dead, 0, "healthy agents recorded dead");
    for (n, pid) in names.iter().zip(&pids) {
        assert_eq!(
            iapeer::os::process::liveness(*pid, None),
            iapeer::core::session::Liveness::Alive,
            "{n} was ended"
        );
        assert!(home.has(n, "session"), "{n} lost its record");
    }
    let grown = home.entries().len() - before;
    assert!(grown <= 2 * PEERS, "{grown} lines logged in 30 s");
    // And the diagnostics: no error retried in a loop.
    let diagnostics: usize = std::fs::read_dir(home.path().join("logs/daemon"))
        .unwrap()
        .map(|f| {
            std::fs::read_to_string(f.unwrap().path())
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    assert!(
        diagnostics <= 2 * PEERS,
        "{diagnostics} diagnostic lines in 30 s"
    );
}

/// libfaketime, which moves the wall clock of the daemon alone (its
/// monotonic clock and the files' times stay true); installed by
/// `scripts/test-deps.sh`.
fn faketime() -> std::path::PathBuf {
    let found = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists());
    found.expect("libfaketime is missing: run scripts/test-deps.sh (Debian package faketime)")
}

/// A daemon whose wall clock is moved by writing an offset (`+1d`, `-1d`)
/// to the file returned.
fn daemon_on_fake_time(home: &Home) -> (crate::support::Daemon, std::path::PathBuf) {
    let offset = home.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let lib = faketime();
    let daemon = home.daemon_with(|cmd| {
        cmd.env("LD_PRELOAD", &lib)
            .env("FAKETIME_TIMESTAMP_FILE", &offset)
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("NO_FAKE_STAT", "1");
    });
    (daemon, offset)
}

/// Ticks the daemon has logged a live `name` on (verbose), each followed
/// by a full pass.
fn alive_ticks(home: &Home, name: &str) -> usize {
    home.count(name, |e| e.str("action") == Some("alive"))
}

#[test]
fn a_forward_jump_of_the_wall_clock_parks_nothing() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "1")
        .set("IAPEER_IDLE_SECS", "600")
        .set("IAPEER_SUPERVISE_LOG_VERBOSE", "1");
    home.add("sh", &["--runtime", "shell", "--", "sleep", "600"]);
    let (_d, offset) = daemon_on_fake_time(&home);
    assert_eq!(code(&home.run(&["wake", "sh"])), 0);
    // Seen by the daemon before the jump.
    wait_until(
        Duration::from_secs(10),
        "a tick on the live session",
        || alive_ticks(&home, "sh") >= 1,
    );
    std::fs::write(&offset, "+1d\n").unwrap();
    let seen = alive_ticks(&home, "sh");
    // Three more ticks, each with its full pass, the session still live.
    wait_until(
        Duration::from_secs(20),
        "three ticks after the jump",
        || alive_ticks(&home, "sh") >= seen + 3,
    );
    let parks = home.count("sh", |e| e.str("action") == Some("reaped-idle"));
    assert_eq!(
        parks, 0,
        "a session idle for seconds was parked as a day idle"
    );
    assert!(home.has("sh", "session"));
}

#[test]
fn a_backward_jump_of_the_wall_clock_does_not_blind_the_idle_reaper() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "1")
        .set("IAPEER_IDLE_SECS", "4");
    home.add("sh", &["--runtime", "shell", "--", "sleep", "600"]);
    let (_d, offset) = daemon_on_fake_time(&home);
    assert_eq!(code(&home.run(&["wake", "sh"])), 0);
    std::fs::write(&offset, "-1d\n").unwrap();
    let park = home.wait_line("sh", "the idle park", |e| {
        e.str("action") == Some("reaped-idle")
    });
    // Stamped by the daemon's clock: decided after the jump, not before.
    let at = park
        .str("ts")
        .and_then(iapeer::core::clock::parse_rfc3339)
        .unwrap();
    assert!(
        at < iapeer::core::clock::now_ms() - DAY / 2,
        "parked before the clock went back: {park:?}"
    );
}

#[test]
fn a_wedged_launch_is_ended_by_pid_and_recorded_once() {
    let mut home = Home::new();
    home.set("IAPEER_BOOT_DEADLINE_SECS", "2");
    home.add("sh", &["--runtime", "shell", "--", "sleep", "600"]);
    assert_eq!(code(&home.run(&["wake", "sh"])), 0);
    let server = home.tmux_server_pid("sh");
    let mut rec = home.session("sh").unwrap();
    let pane = rec["pane_pid"].as_i64().unwrap() as i32;
    let session = rec["session"].as_str().unwrap().to_owned();
    // Left at launching, as by a launcher killed before it recorded the
    // pane, on a server that answers no client.
    rec["pane_pid"] = 0.into();
    for k in ["pane_start", "ready_at"] {
        rec.as_object_mut().unwrap().remove(k);
    }
    std::fs::write(home.marker("sh", "session"), rec.to_string()).unwrap();
    // SAFETY: stopping the tmux server this test started.
    unsafe { libc::kill(server, libc::SIGSTOP) };
    // Whatever happens below, the stopped server is not left to hang the
    // home's clean-up (by a pidfd: its pid may be reused once it ends).
    struct Killed(libc::c_long);
    impl Drop for Killed {
        fn drop(&mut self) {
            // SAFETY: a pidfd this test opened; signalling an ended
            // process through it is a harmless error.
            unsafe {
                libc::syscall(libc::SYS_pidfd_send_signal, self.0, libc::SIGKILL, 0, 0);
                libc::close(self.0 as i32);
            }
        }
    }
    // SAFETY: opening a pidfd for our own tmux server.
    let _server = Killed(unsafe { libc::syscall(libc::SYS_pidfd_open, server, 0) });
    let gone = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')').next().unwrap().trim_start().starts_with('Z')
        })
    };

    let _d = home.daemon();
    let failed = |e: &iapeer::core::record::Entry| {
        e.str("session") == Some(session.as_str()) && e.str("cause") == Some("boot-timeout")
    };
    let line = home.wait_line("sh", "the wedged launch's end", failed);
    assert!(
        line.str("last_lines")
            .unwrap()
            .contains("refused every look"),
        "{}",
        line.line
    );
    wait_until(
        Duration::from_secs(10),
        "the server and its pane to end",
        || gone(server) && gone(pane),
    );
    assert!(!home.has("sh", "session"));
    assert!(!home.path().join("run/sh.sock").exists());
    assert_eq!(home.count("sh", failed), 1, "recorded once");
    assert_eq!(code(&home.run(&["wake", "sh"])), 0, "and it wakes again");
}
