//! Pools: members kept at size, dispatch to a free member or a new one,
//! a full pool refused, crashes while working reported, idle members above
//! min parked — and nothing outside the range ever touched.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use crate::support::{code, stderr, stdout, wait_until, Home};

fn pool_home() -> Home {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "30");
    let cwd = home.workdir("pool");
    let out = home.run(&[
        "pool",
        "add",
        "ccl",
        "--prefix",
        "ccl-auto-",
        "--start-index",
        "11",
        "--min",
        "2",
        "--max",
        "4",
        "--cwd",
        cwd.to_str().unwrap(),
        "--runtime",
        "shell",
        "--quiet-secs",
        "3",
        "--idle-secs",
        "2",
        "--",
        "sleep",
        "100000",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    home
}

fn ready(home: &Home, name: &str) -> usize {
    home.count(name, |e| e.str("ev") == Some("ready"))
}

fn dispatch(home: &Home, task: &str) -> (i32, serde_json::Value) {
    let out = home.run(&["dispatch", "ccl", "--task", task, "--json"]);
    (
        code(&out),
        serde_json::from_str(stdout(&out).trim()).unwrap_or_default(),
    )
}

#[test]
fn the_pool_is_kept_at_min_and_a_dead_member_comes_back() {
    let home = pool_home();
    let _d = home.daemon();
    wait_until(Duration::from_secs(10), "the first two members up", || {
        ready(&home, "ccl-auto-11") == 1 && ready(&home, "ccl-auto-12") == 1
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        ready(&home, "ccl-auto-13") + ready(&home, "ccl-auto-14"),
        0,
        "only min are kept up"
    );
    home.kill_session_process("ccl-auto-12", libc::SIGKILL);
    home.wait_line("ccl-auto-12", "relaunch", |e| {
        e.str("action") == Some("always-on-relaunch")
    });
    wait_until(Duration::from_secs(10), "back up", || {
        ready(&home, "ccl-auto-12") == 2
    });
}

#[test]
fn dispatch_uses_a_free_member_then_grows_then_refuses_when_full() {
    let home = pool_home();
    let _d = home.daemon();
    wait_until(Duration::from_secs(10), "min up", || {
        ready(&home, "ccl-auto-11") == 1 && ready(&home, "ccl-auto-12") == 1
    });
    // Quiet for the pool's 3 s: free.
    std::thread::sleep(Duration::from_millis(3200));

    let (c, r) = dispatch(&home, "first");
    assert_eq!(c, 0);
    assert_eq!(
        (r["name"].as_str(), r["status"].as_str()),
        (Some("ccl-auto-11"), Some("delivered"))
    );
    assert_eq!(home.session("ccl-auto-11").unwrap()["task"], "first");
    let line = home.wait_line("ccl-auto-11", "the delivery", |e| {
        e.str("outcome") == Some("delivered")
    });
    assert_eq!(line.str("reason"), Some("dispatched by pool ccl"));

    let (_, r) = dispatch(&home, "second");
    assert_eq!(r["name"], "ccl-auto-12", "11 is busy with its task");
    let (c, r) = dispatch(&home, "third");
    assert_eq!(c, 0);
    assert_eq!(
        (r["name"].as_str(), r["status"].as_str()),
        (Some("ccl-auto-13"), Some("woke"))
    );
    assert_eq!(r["wake"]["status"], "ready");
    assert_eq!(home.session("ccl-auto-13").unwrap()["task"], "third");
    let (_, r) = dispatch(&home, "fourth");
    assert_eq!(r["name"], "ccl-auto-14");

    let out = home.run(&["dispatch", "ccl", "--task", "fifth", "--no-queue"]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("pool ccl is full"),
        "{}",
        stderr(&out)
    );
    // Without --no-queue it waits in the queue of the least busy member
    // (the lowest index among equals), and says so.
    let (c, r) = dispatch(&home, "fifth");
    assert_eq!(c, 0);
    assert_eq!(
        (r["name"].as_str(), r["status"].as_str()),
        (Some("ccl-auto-11"), Some("queued")),
        "{r}"
    );
    let (_, r) = dispatch(&home, "sixth");
    assert_eq!(r["name"], "ccl-auto-12", "11 has one waiting: {r}");
    let queued = home
        .lines("ccl-auto-11", "task")
        .into_iter()
        .filter(|e| e.str("outcome") == Some("queued"))
        .count();
    assert_eq!(queued, 1);
    // Nothing outside the range was created to make room.
    let sockets: Vec<String> = std::fs::read_dir(home.path().join("run"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".sock"))
                .map(str::to_owned)
        })
        .collect();
    assert!(
        sockets.iter().all(
            |s| ["ccl-auto-11", "ccl-auto-12", "ccl-auto-13", "ccl-auto-14"].contains(&s.as_str())
        ),
        "{sockets:?}"
    );
}

#[test]
fn idle_members_above_min_are_parked_and_min_members_are_not() {
    let home = pool_home();
    let _d = home.daemon();
    wait_until(Duration::from_secs(10), "min up", || {
        ready(&home, "ccl-auto-11") == 1 && ready(&home, "ccl-auto-12") == 1
    });
    std::thread::sleep(Duration::from_millis(3200));
    // Both min members are busy: the next dispatch grows the pool.
    assert_eq!(dispatch(&home, "a").1["name"], "ccl-auto-11");
    assert_eq!(dispatch(&home, "b").1["name"], "ccl-auto-12");
    assert_eq!(dispatch(&home, "c").1["name"], "ccl-auto-13");
    let parked = home.wait_line("ccl-auto-13", "the idle park", |e| {
        e.str("action") == Some("reaped-idle")
    });
    assert!(parked.u64("idle_seconds").unwrap() >= 2);
    std::thread::sleep(Duration::from_secs(1));
    for m in ["ccl-auto-11", "ccl-auto-12"] {
        assert_eq!(
            home.count(m, |e| e.str("action") == Some("reaped-idle")),
            0,
            "{m} is kept up"
        );
    }
}

#[test]
fn look_alike_sessions_and_peers_are_never_touched() {
    let home = pool_home();
    // The incident: names that share the prefix, outside the range.
    let cwd = home.workdir("other");
    home.run(&[
        "add",
        "ccl-auto10",
        "--cwd",
        cwd.to_str().unwrap(),
        "--runtime",
        "shell",
        "--",
        "sleep",
        "100000",
    ]);
    let run = home.path().join("run");
    let tmux = |socket: &std::path::Path, args: &[&str]| {
        Command::new("tmux")
            .arg("-S")
            .arg(socket)
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .unwrap()
    };
    let look_alikes = [
        "ccl-auto5",
        "ccl-auto-3",
        "ccl-auto-99",
        "ccl-auto-10",
        "ccl-auto-15",
    ];
    let mut pids = Vec::new();
    for name in look_alikes {
        let socket = run.join(format!("{name}.sock"));
        let out = tmux(
            &socket,
            &[
                "new-session",
                "-d",
                "-s",
                name,
                "-P",
                "-F",
                "#{pane_pid}",
                "--",
                "sleep",
                "100000",
            ],
        );
        assert!(out.status.success());
        pids.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    // A hand-run session named like a member, on the user's own server
    // (outside run/, so the home's cleanup does not see it: a guard does).
    let own = home.path().join("own.sock");
    struct Own(std::path::PathBuf);
    impl Drop for Own {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .arg("-S")
                .arg(&self.0)
                .arg("kill-server")
                .output();
        }
    }
    let _own = Own(own.clone());
    assert!(tmux(
        &own,
        &[
            "new-session",
            "-d",
            "-s",
            "ccl-auto-11",
            "--",
            "sleep",
            "100000"
        ]
    )
    .status
    .success());

    let _d = home.daemon();
    wait_until(Duration::from_secs(10), "min up", || {
        ready(&home, "ccl-auto-12") == 1
    });
    for task in ["a", "b", "c", "d"] {
        dispatch(&home, task);
    }
    assert_eq!(
        code(&home.run(&["dispatch", "ccl", "--task", "e", "--no-queue"])),
        7
    );
    for (name, pid) in look_alikes.iter().zip(&pids) {
        let out = tmux(
            &run.join(format!("{name}.sock")),
            &[
                "display-message",
                "-p",
                "-t",
                &format!("={name}:"),
                "#{pane_pid}",
            ],
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            pid,
            "{name} was touched"
        );
        assert!(!home.has(name, "session"), "{name} got a record");
        assert_eq!(home.count(name, |_| true), 0, "{name} appears in the log");
    }
    assert!(tmux(&own, &["has-session", "-t", "=ccl-auto-11"])
        .status
        .success());
    assert_eq!(
        home.count("ccl-auto10", |e| e.str("outcome") != Some("added")),
        0,
        "the look-alike peer was left alone"
    );
}

#[test]
fn a_member_that_crashes_while_working_reports_its_task_and_comes_back() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "30");
    let cwd = home.workdir("cl");
    let out = home.run(&[
        "pool",
        "add",
        "cl",
        "--prefix",
        "cl-",
        "--min",
        "1",
        "--max",
        "2",
        "--cwd",
        cwd.to_str().unwrap(),
        "--quiet-secs",
        "0",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let _d = home.daemon();
    wait_until(Duration::from_secs(10), "cl-0 up", || {
        ready(&home, "cl-0") == 1
    });
    let out = home.run(&["dispatch", "cl", "--task", "crash"]);
    assert_eq!(stdout(&out).trim(), "cl-0");
    let crashed = home.wait_line("cl-0", "crashed-while-working", |e| {
        e.str("action") == Some("crashed-while-working")
    });
    assert_eq!(crashed.str("task"), Some("crash"));
    home.wait_line("cl-0", "the relaunch", |e| {
        e.str("action") == Some("always-on-relaunch")
    });
    wait_until(Duration::from_secs(10), "back up", || {
        ready(&home, "cl-0") == 2
    });

    let why = stdout(&home.run(&["why", "cl-0"]));
    assert!(
        why.contains("working on a task when it died: \"crash\""),
        "{why}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&stdout(&home.run(&["status", "cl-0", "--json"]))).unwrap();
    assert_eq!(
        doc["peers"][0]["lifecycle_metrics"]["crashed_task"]["task"],
        "crash"
    );
    assert_eq!(doc["peers"][0]["pool"], "cl");
    assert!(stdout(&home.run(&["status"])).contains("died working on a task"));

    // The task went once more, to the other member; it killed that one
    // too, and went no further.
    let again = home.wait_line("cl-0", "dispatched again", |e| {
        e.str("ev") == Some("task")
            && e.str("reason")
                .is_some_and(|r| r.contains("dispatched again to cl-1"))
    });
    assert_eq!(again.str("task"), Some("crash"));
    home.wait_line("cl-1", "cl-1 died on it too", |e| {
        e.str("action") == Some("crashed-while-working")
    });
    home.wait_line("cl-1", "and it went no further", |e| {
        e.str("ev") == Some("task")
            && e.str("reason")
                .is_some_and(|r| r.starts_with("not dispatched again: it was once already"))
    });
    let all_again = home
        .lines_any("task")
        .into_iter()
        .filter(|e| {
            e.str("reason")
                .is_some_and(|r| r.contains("; dispatched again to") && !r.starts_with("not "))
        })
        .count();
    assert_eq!(all_again, 1, "once, never twice");
}

#[test]
fn colliding_pools_are_refused_and_pool_rm_cleans_up() {
    let home = pool_home();
    let cwd = home.workdir("x");
    let cwd = cwd.to_str().unwrap();
    // Overlaps ccl's range by name.
    let out = home.run(&[
        "pool",
        "add",
        "other",
        "--prefix",
        "ccl-auto-1",
        "--max",
        "5",
        "--cwd",
        cwd,
        "--runtime",
        "shell",
        "--",
        "true",
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("also a member of pool ccl"),
        "{}",
        stderr(&out)
    );
    // Would replace a hand-defined peer.
    home.run(&["add", "w-0", "--cwd", cwd]);
    let out = home.run(&[
        "pool", "add", "w", "--prefix", "w-", "--max", "2", "--cwd", cwd,
    ]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("would replace the peer w-0"),
        "{}",
        stderr(&out)
    );
    assert!(
        !home.path().join("pools/w.json").exists(),
        "nothing written"
    );
    let out = home.run(&["rm", "ccl-auto-11"]);
    assert_eq!(code(&out), 2, "members go with their pool");

    let ls = stdout(&home.run(&["pool", "ls"]));
    assert!(ls.contains("ccl-auto-11..ccl-auto-14"), "{ls}");
    home.run(&["wake", "ccl-auto-13"]);
    assert_eq!(
        code(&home.run(&["pool", "rm", "ccl"])),
        1,
        "a running member"
    );
    assert_eq!(code(&home.run(&["pool", "rm", "ccl", "--force"])), 0);
    assert!(!home.path().join("pools/ccl.json").exists());
    for i in 11..15 {
        assert!(!home
            .path()
            .join(format!("peers/ccl-auto-{i}.json"))
            .exists());
    }
    assert!(!home.has("ccl-auto-13", "session"));
}

/// Regression: two dispatches growing the pool at once both picked the
/// first sleeping member; the second waited for its lock, then typed its
/// task into the session the first had just started.
#[test]
fn concurrent_dispatches_that_grow_the_pool_never_share_a_member() {
    let home = Home::new();
    let cwd = home.workdir("g");
    let out = home.run(&[
        "pool",
        "add",
        "g",
        "--prefix",
        "g-",
        "--min",
        "0",
        "--max",
        "3",
        "--cwd",
        cwd.to_str().unwrap(),
        "--runtime",
        "shell",
        "--quiet-secs",
        "30",
        "--",
        "sleep",
        "100000",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let children: Vec<_> = (0..3)
        .map(|i| {
            home.iapeer()
                .args(["dispatch", "g", "--task", &format!("job {i}")])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut members: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert_eq!(code(&out), 0, "{}", stderr(&out));
            stdout(&out).trim().to_owned()
        })
        .collect();
    members.sort();
    assert_eq!(members, ["g-0", "g-1", "g-2"], "one task per member");
    let tasks: Vec<String> = (0..3)
        .map(|i| {
            home.session(&format!("g-{i}")).unwrap()["task"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut sorted = tasks.clone();
    sorted.sort();
    assert_eq!(sorted, ["job 0", "job 1", "job 2"], "{tasks:?}");
}

/// `pool rm` is journaled: killed at any step it finishes on the next
/// try, and a member left behind can always be removed.
#[test]
fn pool_rm_interrupted_at_any_step_finishes_on_the_next_try() {
    let members = |home: &Home| -> Vec<String> {
        (11..15)
            .map(|i| format!("ccl-auto-{i}"))
            .filter(|m| home.path().join(format!("peers/{m}.json")).exists())
            .collect()
    };
    // Each step a kill -9 can land after: the journal written, then each
    // member removed in turn, then everything but the journal.
    for removed_before_the_kill in 0..=4 {
        let home = pool_home();
        // `pool add` writes the member definitions when the daemon syncs;
        // `pool ls` (any command) sees them as the daemon would.
        let _d = home.daemon();
        wait_until(Duration::from_secs(10), "the members", || {
            members(&home).len() == 4
        });
        drop(_d);
        assert_eq!(code(&home.run(&["wake", "ccl-auto-12"])), 0);
        std::fs::rename(
            home.path().join("pools/ccl.json"),
            home.path().join("pools/ccl.json.removing"),
        )
        .unwrap();
        for m in members(&home).iter().take(removed_before_the_kill) {
            std::fs::remove_file(home.path().join(format!("peers/{m}.json"))).unwrap();
        }
        let out = home.run(&["pool", "rm", "ccl"]);
        assert_eq!(
            code(&out),
            0,
            "step {removed_before_the_kill}: {}",
            stderr(&out)
        );
        assert!(stdout(&out).contains("interrupted removal finished"));
        assert!(members(&home).is_empty(), "step {removed_before_the_kill}");
        assert!(!home.path().join("pools/ccl.json.removing").exists());
        assert!(!home.has("ccl-auto-12", "session"), "its session was ended");
    }

    // A real kill -9 mid-way, later each time, until a run ends by itself
    // (it must succeed) or a killed one had finished the job (nothing of
    // the pool is left: no definition, no journal); else a run left to end.
    let home = pool_home();
    let _d = home.daemon();
    wait_until(Duration::from_secs(10), "the members", || {
        members(&home).len() == 4
    });
    drop(_d);
    let pool_left = |home: &Home| {
        ["pools/ccl.json", "pools/ccl.json.removing"]
            .iter()
            .any(|f| home.path().join(f).exists())
    };
    for delay in (0..9).map(|i| 1u64 << i) {
        if !pool_left(&home) {
            break;
        }
        let mut child = home
            .iapeer()
            .args(["pool", "rm", "ccl", "--force"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        if out.status.signal().is_none() {
            assert!(
                out.status.success(),
                "ended by itself within {delay} ms: {}",
                stderr(&out)
            );
            break;
        }
    }
    if pool_left(&home) {
        let out = home.run(&["pool", "rm", "ccl", "--force"]);
        assert_eq!(code(&out), 0, "after the kills: {}", stderr(&out));
    }
    assert!(!pool_left(&home));
    assert!(members(&home).is_empty());

    // A member whose pool is gone (by hand) is a leftover `rm` removes.
    let home = pool_home();
    let _d = home.daemon();
    wait_until(Duration::from_secs(10), "the members", || {
        members(&home).len() == 4
    });
    drop(_d);
    std::fs::remove_file(home.path().join("pools/ccl.json")).unwrap();
    // (The daemon may have brought it up, min 2: --force ends it too.)
    let out = home.run(&["rm", "ccl-auto-11", "--force"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}
