//! The daemon (DESIGN §7): a real `iapeer daemon` process on a private
//! home, real tmux, the fake agents. The tick is long (30 s) unless a test
//! says otherwise, so every reaction below comes from an event.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::support::{code, cpu_ticks, stderr, stdout, wait_until, Home};

fn home() -> Home {
    let mut h = Home::new();
    h.set("IAPEER_TICK_SECS", "30");
    h
}

fn pane_pid(home: &Home, name: &str) -> i32 {
    home.session(name).expect("a session record")["pane_pid"]
        .as_i64()
        .unwrap() as i32
}

fn session_id(home: &Home, name: &str) -> String {
    home.session(name).unwrap()["session"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn action(a: &'static str) -> impl Fn(&iapeer::core::record::Entry) -> bool {
    move |e| e.str("action") == Some(a)
}

#[test]
fn a_killed_session_is_recorded_once_as_reaped_gone() {
    let mut home = home();
    // A fast tick too: watcher, death watch and tick all see this death.
    home.set("IAPEER_TICK_SECS", "0.2");
    home.add("alice", &[]);
    let _d = home.daemon();
    assert_eq!(code(&home.run(&["wake", "alice"])), 0);
    let session = session_id(&home, "alice");
    home.kill_session_process("alice", libc::SIGKILL);
    let line = home.wait_line("alice", "reaped-gone", action("reaped-gone"));
    assert_eq!(line.str("session"), Some(session.as_str()));
    assert_eq!(line.str("exit_status"), Some("signal 9"));
    // Its screen, read in the same tmux call as its status.
    assert!(
        line.str("last_lines")
            .is_some_and(|l| l.contains("? for shortcuts")),
        "{}",
        line.line
    );
    assert_eq!(line.str("source"), Some("daemon"));
    assert_eq!(line.str("outcome"), Some("fresh-on-next-message"));
    wait_until(Duration::from_secs(5), "the record to go", || {
        !home.has("alice", "session")
    });
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        home.count("alice", |e| e.str("ev") == Some("supervise")),
        1,
        "recorded exactly once"
    );
    let deaths: Vec<i64> =
        serde_json::from_str(&std::fs::read_to_string(home.marker("alice", "deaths")).unwrap())
            .unwrap();
    assert_eq!(deaths.len(), 1);
    // A lazy peer waits for the next message; it comes up fresh.
    let r: serde_json::Value =
        serde_json::from_str(&stdout(&home.run(&["wake", "alice", "--json"]))).unwrap();
    assert_eq!(r["cause"], "crash-or-self-close");
}

#[test]
fn self_fresh_relaunches_fresh_without_any_message() {
    let home = home();
    home.add("alice", &[]);
    let _d = home.daemon();
    assert_eq!(code(&home.run(&["wake", "alice"])), 0);
    let old = session_id(&home, "alice");
    assert_eq!(
        code(&home.run(&["wake", "alice", "--task", "self-fresh"])),
        0
    );
    let eager = home.wait_line("alice", "self-fresh", action("self-fresh"));
    assert_eq!(eager.str("session"), Some(old.as_str()));
    assert_eq!(eager.str("outcome"), Some("relaunching"));
    let ready = home.wait_line("alice", "a fresh ready", |e| {
        e.str("ev") == Some("ready") && e.str("cause") == Some("needs-eager-fresh")
    });
    assert_eq!(ready.str("mode"), Some("fresh"));
    assert_eq!(ready.str("source"), Some("daemon"));
    let wake = home.wait_line("alice", "the eager wake", |e| {
        e.str("ev") == Some("wake") && e.str("cause") == Some("needs-eager-fresh")
    });
    assert_eq!(wake.str("session"), ready.str("session"));
    assert!(!home.has("alice", "new-eager"), "consumed");
    assert_ne!(session_id(&home, "alice"), old);
}

#[test]
fn an_idle_session_is_parked_and_the_next_wake_resumes_it() {
    let mut home = home();
    home.set("IAPEER_IDLE_SECS", "2");
    home.add("alice", &[]);
    let _d = home.daemon();
    assert_eq!(
        code(&home.run(&["wake", "alice", "--topic", "billing", "--task", "first"])),
        0
    );
    let conversation = home.session("alice").unwrap()["resume_ref"]
        .as_str()
        .unwrap()
        .to_owned();
    let parked = home.wait_line("alice", "reaped-idle", action("reaped-idle"));
    assert!(parked.u64("idle_seconds").unwrap() >= 2, "{}", parked.line);
    assert_eq!(parked.str("outcome"), Some("resume-eligible"));
    // Its cause, whole: since what, and what said no turn was running.
    assert_eq!(
        parked.str("reason"),
        Some(
            "no activity since its conversation's last entry; \
             its runtime's own record says no turn is running"
        ),
        "{}",
        parked.line
    );
    wait_until(Duration::from_secs(5), "the session to end", || {
        !home.has("alice", "session")
    });
    assert!(home.has("alice", "idle-reaped"));

    let r: serde_json::Value = serde_json::from_str(&stdout(
        &home.run(&["wake", "alice", "--topic", "billing", "--json"]),
    ))
    .unwrap();
    assert_eq!(
        (r["mode"].as_str(), r["cause"].as_str()),
        (Some("resume"), Some("idle-reaped-resume"))
    );
    assert_eq!(
        home.session("alice").unwrap()["resume_ref"],
        conversation.as_str()
    );
}

#[test]
fn a_session_that_keeps_working_is_not_parked_until_it_goes_quiet() {
    let mut home = home();
    home.set("IAPEER_IDLE_SECS", "2");
    // Output for about 4 s (tmux sees the activity; the record does not),
    // then quiet.
    let script =
        "i=0; while [ $i -lt 20 ]; do echo tick $i; i=$((i+1)); sleep 0.2; done; sleep 1000";
    home.add("busy", &["--runtime", "shell", "--", "sh", "-c", script]);
    let d = home.daemon();
    let cpu_before = cpu_ticks(d.pid());
    assert_eq!(code(&home.run(&["wake", "busy"])), 0);
    let ready = home.wait_line("busy", "ready", |e| e.str("ev") == Some("ready"));
    let parked = home.wait_line("busy", "the park", action("reaped-idle"));
    let worked_ms = parked.ts_ms().unwrap() - ready.ts_ms().unwrap();
    assert!(
        worked_ms >= 4_000,
        "parked {worked_ms} ms after ready, while it was still printing"
    );
    // A shell has no turns to read: its screen is all there is.
    assert_eq!(
        parked.str("reason"),
        Some("no activity since its screen last changed"),
        "{}",
        parked.line
    );
    // Measuring the screen's activity is done now and then, not in a loop
    // (which takes most of a core): a fifth of one is plenty.
    let ticks_per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    let used = cpu_ticks(d.pid()) - cpu_before;
    assert!(
        used < ticks_per_sec * worked_ms as u64 / 5_000,
        "{used} ticks of CPU in {worked_ms} ms"
    );
}

/// A neighbour working in the same folder (as pool members do) does not
/// keep an idle peer awake: each is judged by its own conversation.
#[test]
fn an_idle_peer_is_parked_while_a_neighbour_in_its_folder_works() {
    let mut home = home();
    home.set("IAPEER_IDLE_SECS", "2");
    let shared = home.workdir("shared");
    for name in ["idle", "busy"] {
        let out = home.run(&["add", name, "--cwd", shared.to_str().unwrap()]);
        assert_eq!(code(&out), 0);
    }
    let _d = home.daemon();
    assert_eq!(code(&home.run(&["wake", "idle"])), 0);
    assert_eq!(code(&home.run(&["wake", "busy", "--task", "work 8"])), 0);
    let busy_ready = home.wait_line("busy", "ready", |e| e.str("ev") == Some("ready"));
    let parked = home.wait_line("idle", "the idle peer parked", action("reaped-idle"));
    let after_ms = parked.ts_ms().unwrap() - busy_ready.ts_ms().unwrap();
    assert!(
        after_ms < 7_000,
        "parked {after_ms} ms after the neighbour started its 8 s of work"
    );
    assert_eq!(
        home.count("busy", action("reaped-idle")),
        0,
        "the working one is not parked"
    );
}

#[test]
fn a_script_touching_stopped_parks_and_removing_it_brings_an_always_peer_back() {
    let home = home();
    home.add("keeper", &["--policy", "always"]);
    let _d = home.daemon();
    home.wait_line("keeper", "the always peer up", |e| {
        e.str("ev") == Some("ready")
    });
    // A conversation to resume: like the real CLI, the fake writes none
    // before its first prompt.
    assert_eq!(code(&home.run(&["wake", "keeper", "--task", "hello"])), 0);
    std::fs::write(home.marker("keeper", "stopped"), "").unwrap();
    home.wait_line("keeper", "parked-stopped", action("parked-stopped"));
    // The line comes first; the session ends right after.
    wait_until(Duration::from_secs(5), "the session to end", || {
        !home.has("keeper", "session")
    });
    assert!(home.has("keeper", "idle-reaped"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        home.count("keeper", |e| e.str("ev") == Some("wake")
            && e.str("mode").is_some()),
        1,
        "a stopped peer stays down"
    );

    let before = Instant::now();
    std::fs::remove_file(home.marker("keeper", "stopped")).unwrap();
    let back = home.wait_line("keeper", "back up", |e| {
        e.str("ev") == Some("ready") && e.str("mode") == Some("resume")
    });
    assert_eq!(back.str("cause"), Some("idle-reaped-resume"));
    assert!(before.elapsed() < Duration::from_secs(10));
}

#[test]
fn touching_new_eager_then_killing_the_session_relaunches_fresh() {
    let home = home();
    home.add("alice", &[]);
    let _d = home.daemon();
    assert_eq!(code(&home.run(&["wake", "alice"])), 0);
    std::fs::write(home.marker("alice", "new-eager"), "").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        home.count("alice", |e| e.str("ev") == Some("wake")),
        1,
        "a live session is left alone"
    );
    home.kill_session_process("alice", libc::SIGTERM);
    home.wait_line("alice", "needs-eager-fresh", action("needs-eager-fresh"));
    home.wait_line("alice", "fresh ready", |e| {
        e.str("ev") == Some("ready") && e.str("cause") == Some("needs-eager-fresh")
    });
}

#[test]
fn touching_new_eager_on_a_sleeping_peer_starts_it_fresh_now() {
    let home = home();
    home.add("alice", &[]);
    let _d = home.daemon();
    std::fs::create_dir_all(home.lifecycle()).unwrap();
    std::fs::write(home.marker("alice", "new-eager"), "").unwrap();
    let wake = home.wait_line("alice", "eager wake", |e| e.str("ev") == Some("wake"));
    assert_eq!(
        (wake.str("mode"), wake.str("cause")),
        (Some("fresh"), Some("needs-eager-fresh"))
    );
}

#[test]
fn an_always_peer_is_relaunched_and_one_that_dies_at_once_stops_at_the_guard() {
    let mut home = home();
    home.add("keeper", &["--policy", "always"]);
    let _d = home.daemon();
    home.wait_line("keeper", "up", |e| e.str("ev") == Some("ready"));
    home.kill_session_process("keeper", libc::SIGKILL);
    home.wait_line("keeper", "always-on-relaunch", action("always-on-relaunch"));
    wait_until(Duration::from_secs(30), "relaunched", || {
        home.count("keeper", |e| e.str("ev") == Some("ready")) == 2
    });
    drop(_d);

    // One that dies at once: three failed boots, then the guard, logged once.
    home.set("FAKE_AGENT_CRASH_AT_START", "1")
        .set("IAPEER_TICK_SECS", "0.2");
    home.add("crasher", &["--policy", "always"]);
    let _d = home.daemon();
    let refused = home.wait_line("crasher", "the crash-loop refusal", |e| {
        e.str("cause") == Some("crash-loop")
    });
    assert_eq!(refused.str("mode"), Some("refused"));
    assert!(refused.str("retry_after").is_some());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(home.count("crasher", |e| e.str("mode") == Some("fail")), 3);
    assert_eq!(
        home.count("crasher", |e| e.str("cause") == Some("crash-loop")),
        1,
        "no refusal spam"
    );
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&home.run(&["status", "crasher", "--json"]))).unwrap();
    assert_eq!(status["peers"][0]["lifecycle_state"], "crash-looping");

    // `iapeer reset` lifts the guard at once, not when the window ends.
    assert_eq!(code(&home.run(&["reset", "crasher"])), 0);
    wait_until(
        Duration::from_secs(10),
        "relaunched after the reset",
        || home.count("crasher", |e| e.str("mode") == Some("fail")) == 6,
    );
    wait_until(Duration::from_secs(10), "the guard again", || {
        home.count("crasher", |e| e.str("cause") == Some("crash-loop")) == 2
    });
}

/// Many peers wanted up at once (a daemon start after a reboot) boot a
/// few at a time, not all together: boots that starve each other of the
/// CPU time out and count as deaths. All of them come up, each in turn,
/// and again after a host restart.
#[test]
fn a_crowd_of_always_peers_boots_a_few_at_a_time_and_all_come_up() {
    let mut home = home();
    // Slow to boot, as the real CLIs are under load.
    home.set("FAKE_AGENT_BOOT_MS", "1500");
    let names: Vec<String> = (0..7).map(|i| format!("crowd{i}")).collect();
    for name in &names {
        home.add(name, &["--policy", "always"]);
    }
    let d = home.daemon();
    let all_up = |round: usize| {
        wait_until(Duration::from_secs(60), "all of them up", || {
            names
                .iter()
                .all(|n| home.count(n, |e| e.str("ev") == Some("ready")) == round)
        });
    };
    all_up(1);
    assert_boots_in_turn(&home, &names, 0);

    // The host "restarts" under them: a daemon settling every record as a
    // host restart brings them back in turn too.
    drop(d);
    for name in &names {
        home.restart_host_under(name);
    }
    let _d = home.daemon();
    all_up(2);
    assert_boots_in_turn(&home, &names, 1);
}

/// The `nth` boot of each of `names`, from its decision line to its ready
/// line: never one that failed, never more than four at once, and more
/// than one at a time all the same.
fn assert_boots_in_turn(home: &Home, names: &[String], nth: usize) {
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for name in names {
        let wakes = home.lines(name, "wake");
        assert!(
            wakes.iter().all(|e| e.str("mode") != Some("fail")),
            "{name}: {wakes:?}"
        );
        let woke = wakes.get(nth).and_then(|e| e.ts_ms()).unwrap();
        let ready = home
            .lines(name, "ready")
            .get(nth)
            .and_then(|e| e.ts_ms())
            .unwrap();
        edges.push((woke, 1));
        edges.push((ready, -1));
    }
    // An end sorts before a start at the same millisecond.
    edges.sort();
    let (mut now, mut most) = (0, 0);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    assert!(most <= 4, "boot {nth}: {most} at once");
    assert!(
        most >= 2,
        "boot {nth}: {most} at once; in parallel all the same"
    );
}

/// A live session whose record was lost is adopted, not launched again,
/// and its command line says which conversation it is on, so a neighbour's
/// is never taken for it.
#[test]
fn a_session_found_without_a_record_is_adopted_on_its_own_conversation() {
    let home = home();
    let shared = home.workdir("shared");
    for name in ["a", "b"] {
        let out = home.run(&["add", name, "--cwd", shared.to_str().unwrap()]);
        assert_eq!(code(&out), 0);
    }
    assert_eq!(code(&home.run(&["wake", "a"])), 0);
    assert_eq!(code(&home.run(&["wake", "b", "--task", "newer"])), 0);
    let own = home.session("a").unwrap()["resume_ref"].clone();
    let pid = pane_pid(&home, "a");
    std::fs::remove_file(home.marker("a", "session")).unwrap();
    let _d = home.daemon();
    home.wait_line("a", "adopted", action("adopted"));
    // The decision is logged first, the record written right after.
    wait_until(Duration::from_secs(5), "a record again", || {
        home.session("a").is_some()
    });
    let rec = home.session("a").unwrap();
    assert_eq!(rec["pane_pid"], pid);
    assert_eq!(rec["resume_ref"], own);
}

#[test]
fn sigterm_leaves_sessions_running_and_a_new_daemon_adopts_them() {
    let home = home();
    home.add("alice", &[]);
    home.add("keeper", &["--policy", "always"]);
    let mut d = home.daemon();
    assert_eq!(code(&home.run(&["wake", "alice"])), 0);
    home.wait_line("keeper", "up", |e| e.str("ev") == Some("ready"));
    let pids = [pane_pid(&home, "alice"), pane_pid(&home, "keeper")];
    let t = Instant::now();
    d.signal(libc::SIGTERM);
    assert_eq!(
        d.wait_exit(Duration::from_secs(1)),
        Some(0),
        "stops within a second"
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(
        home.lines_any("daemon").last().unwrap().str("action"),
        Some("stopping")
    );
    for pid in pids {
        assert_eq!(
            iapeer::os::process::liveness(pid, None),
            iapeer::core::session::Liveness::Alive
        );
    }
    let wakes = home.lines_any("wake").len();
    let _d2 = home.daemon();
    home.wait_line("alice", "adopted", action("adopted"));
    home.wait_line("keeper", "adopted", action("adopted"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(home.lines_any("wake").len(), wakes, "no duplicate launch");
    assert_eq!(pane_pid(&home, "keeper"), pids[1]);
    // The adopted session is supervised: its death is seen.
    home.kill_session_process("alice", libc::SIGKILL);
    home.wait_line("alice", "reaped-gone", action("reaped-gone"));
}

#[test]
fn a_second_daemon_refuses_to_start() {
    let home = home();
    let _d = home.daemon();
    let out = home.run(&["daemon"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("already running"), "{}", stderr(&out));
}

#[test]
fn sighup_reloads_and_new_definitions_are_seen_at_once() {
    let home = home();
    let d = home.daemon();
    // A definition added by another process is picked up from the watcher.
    home.add("keeper", &["--policy", "always"]);
    home.wait_line("keeper", "launched", |e| e.str("ev") == Some("ready"));
    d.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(5), "reloaded", || {
        home.lines_any("daemon")
            .iter()
            .any(|e| e.str("action") == Some("reloaded"))
    });

    // A definition broken before a reload is reported, and the peer stays
    // supervised: its death is seen. It cannot be launched from a broken
    // file; once the file is fixed it is, at once.
    let file = home.path().join("peers/keeper.json");
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, "{ not json").unwrap();
    d.signal(libc::SIGHUP);
    home.wait_line(
        "keeper",
        "the broken definition reported",
        action("tick-error"),
    );
    wait_until(Duration::from_secs(5), "reloaded twice", || {
        home.lines_any("daemon")
            .iter()
            .filter(|e| e.str("action") == Some("reloaded"))
            .count()
            == 2
    });
    home.kill_session_process("keeper", libc::SIGKILL);
    // Recorded as the `always` peer it still is.
    home.wait_line("keeper", "the death", action("always-on-relaunch"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(home.count("keeper", |e| e.str("ev") == Some("ready")), 1);
    std::fs::write(&file, good).unwrap();
    wait_until(Duration::from_secs(30), "relaunched", || {
        home.count("keeper", |e| e.str("ev") == Some("ready")) == 2
    });
}

#[test]
fn it_tells_systemd_ready_and_feeds_the_watchdog() {
    let home = home();
    let sock_path = home.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = home
        .iapeer()
        .arg("daemon")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && !(got.iter().any(|m: &String| m.contains("READY=1"))
            && got.iter().any(|m| m.contains("WATCHDOG=1")))
    {
        let mut buf = [0u8; 512];
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert!(
        got.iter()
            .any(|m| m.contains("READY=1") && m.contains("STATUS=")),
        "{got:?}"
    );
    assert!(got.iter().any(|m| m.contains("WATCHDOG=1")), "{got:?}");
}

#[test]
fn units_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("units/iapeer.service")).unwrap();
    for key in [
        "Type=notify",
        "Restart=on-failure",
        "WatchdogSec=",
        "KillMode=process",
        "ExecStart=",
    ] {
        assert!(unit.contains(key), "the unit lacks {key}");
    }
    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let dir = assert_fs::TempDir::new().unwrap();
        let file = dir.path().join("iapeer.service");
        let bin = env!("CARGO_BIN_EXE_iapeer");
        let unit = unit
            .lines()
            .map(|l| {
                if l.starts_with("ExecStart=") {
                    format!("ExecStart={bin} daemon")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&file, unit).unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "warnings: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let check = r#"
import plistlib, sys
d = plistlib.load(open(sys.argv[1], 'rb'))
assert d['Label'] == 'com.iapeer.daemon'
assert d['ProgramArguments'][1] == 'daemon'
assert d['KeepAlive'] is True
assert d['AbandonProcessGroup'] is True
assert isinstance(d['ThrottleInterval'], int)
path = d['EnvironmentVariables']['PATH']
assert all(p.startswith('/') or p.startswith('@HOME@') for p in path.split(':')), path
print('ok')
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", check])
        .arg(root.join("units/com.iapeer.daemon.plist"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Regression: the daemon blocks SIGTERM, SIGINT and SIGHUP so only its
/// signal thread takes them. tmux servers it launched inherited that mask,
/// ignored `kill-server`, and outlived their sessions, unreachable once
/// their socket was removed.
#[test]
fn tmux_servers_launched_by_the_daemon_do_not_inherit_its_blocked_signals() {
    let home = home();
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
    let _d = home.daemon();
    home.wait_line("keeper", "up", |e| e.str("ev") == Some("ready"));
    let server = home.tmux_server_pid("keeper");
    let status = std::fs::read_to_string(format!("/proc/{server}/status")).unwrap();
    let blocked = status.lines().find(|l| l.starts_with("SigBlk:")).unwrap();
    assert_eq!(
        blocked.split_whitespace().nth(1),
        Some("0000000000000000"),
        "{blocked}"
    );
    assert_eq!(code(&home.run(&["stop", "keeper"])), 0);
    wait_until(Duration::from_secs(5), "the tmux server to exit", || {
        crate::support::invariants::tmux_servers(home.path()).is_empty()
    });
}
