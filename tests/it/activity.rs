//! What each agent is doing (DESIGN §12): the daemon reads it, logs each
//! change once, shows it in `status`, and tells the operator's hook.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use iapeer::core::record::Entry;

use crate::support::{code, stderr, wait_until, Home};

/// A hook that appends `peer state previous|why` to a file.
fn hooked(home: &mut Home) -> PathBuf {
    let out = home.path().join("hook.out");
    let command = format!(
        r#"printf '%s %s %s|%s\n' "$IAPEER_PEER" "$IAPEER_STATE" "$IAPEER_PREVIOUS_STATE" "$IAPEER_WHY" >> '{}'"#,
        out.display()
    );
    home.set("IAPEER_TICK_SECS", "1")
        .set("IAPEER_ON_ACTIVITY", &command);
    out
}

fn told(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn activity(home: &Home, name: &str) -> Vec<String> {
    home.lines(name, "activity")
        .iter()
        .filter_map(|e| e.str("state").map(str::to_owned))
        .collect()
}

fn is_state(state: &'static str) -> impl Fn(&Entry) -> bool {
    move |e: &Entry| e.str("ev") == Some("activity") && e.str("state") == Some(state)
}

fn status_activity(home: &Home, name: &str) -> serde_json::Value {
    let out = home.run(&["status", name, "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["peers"][0]["activity"].clone()
}

/// A turn reads working, then idle; a permission prompt reads waiting,
/// says what it waits for, and fires the hook once; once answered the
/// session works on and goes idle. For both runtimes: Claude's process
/// record says it waits, Codex's screen does.
#[test]
fn a_turn_and_a_permission_prompt_read_as_they_are_and_the_hook_fires_once() {
    for runtime in ["claude", "codex"] {
        let mut home = Home::new();
        let out = hooked(&mut home);
        home.add("ada", &["--runtime", runtime]);
        let _daemon = home.daemon();
        assert_eq!(code(&home.run(&["wake", "ada", "--task", "work 6"])), 0);
        home.wait_line("ada", "working", is_state("working"));
        home.wait_line("ada", "idle after the turn", is_state("idle"));
        let before = home.lines("ada", "activity").len();

        assert_eq!(code(&home.run(&["wake", "ada", "--task", "ask"])), 0);
        let waiting = home.wait_line("ada", "waiting", is_state("waiting"));
        let said = waiting.str("reason").unwrap_or("");
        let expected = match runtime {
            "claude" => "permission prompt",
            _ => "Would you like to run the following command?",
        };
        assert_eq!(said, expected, "{runtime}: {}", waiting.line);
        assert!(waiting.str("since").is_some() && waiting.str("session").is_some());
        wait_until(Duration::from_secs(10), "the hook", || {
            told(&out).iter().any(|l| l.starts_with("ada waiting "))
        });
        let now = status_activity(&home, "ada");
        assert_eq!(now["state"], "waiting", "{runtime}: {now}");

        home.press("ada", &["1"]);
        wait_until(Duration::from_secs(15), "idle once answered", || {
            activity(&home, "ada").last().map(String::as_str) == Some("idle")
                && home.lines("ada", "activity").len() > before + 1
        });
        let hook = told(&out);
        let waits: Vec<&String> = hook
            .iter()
            .filter(|l| l.starts_with("ada waiting "))
            .collect();
        assert_eq!(waits.len(), 1, "{runtime}: the hook, once: {hook:?}");
        assert!(
            waits[0].contains(&format!("ada is waiting for a person: {expected}")),
            "{runtime}: {}",
            waits[0]
        );
        // Idle and working are not among the default states.
        assert!(
            hook.iter()
                .all(|l| !l.contains(" idle ") && !l.contains(" working ")),
            "{hook:?}"
        );
        // One line per change: never the same state twice in a row.
        let states = activity(&home, "ada");
        assert!(
            states.windows(2).all(|w| w[0] != w[1]),
            "{runtime}: {states:?}"
        );
    }
}

/// A restarted daemon does not say again what the log already says of a
/// session, and a session's end ends its activity in `status`.
#[test]
fn a_restarted_daemon_does_not_repeat_itself_and_an_end_clears_the_activity() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "1");
    home.add("bo", &[]);
    let daemon = home.daemon();
    assert_eq!(code(&home.run(&["wake", "bo"])), 0);
    home.wait_line("bo", "idle", is_state("idle"));
    drop(daemon);
    let lines = home.lines("bo", "activity").len();
    let _daemon = home.daemon();
    // Three seconds of readings: well past the debounce.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(home.lines("bo", "activity").len(), lines, "said again");
    assert_eq!(status_activity(&home, "bo")["state"], "idle");
    assert_eq!(code(&home.run(&["stop", "bo"])), 0);
    assert!(status_activity(&home, "bo").is_null());
}

/// A hook that hangs is killed at its deadline and the daemon goes on
/// reading and logging; its failure is said in the daemon's own log.
#[test]
fn a_hook_that_hangs_is_killed_and_holds_nothing_up() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "1")
        .set("IAPEER_ON_ACTIVITY", "sleep 613.25")
        .set("IAPEER_ON_ACTIVITY_STATES", "idle,working")
        .set("IAPEER_HOOK_TIMEOUT_SECS", "1");
    home.add("cy", &[]);
    let _daemon = home.daemon();
    assert_eq!(code(&home.run(&["wake", "cy", "--task", "work 8"])), 0);
    home.wait_line("cy", "working", is_state("working"));
    home.wait_line("cy", "idle", is_state("idle"));
    let log = home.path().join("logs").join("daemon");
    wait_until(
        Duration::from_secs(10),
        "the overrun in the daemon's log",
        || {
            std::fs::read_dir(&log)
                .into_iter()
                .flatten()
                .flatten()
                .any(|f| {
                    std::fs::read_to_string(f.path())
                        .is_ok_and(|t| t.contains("on_activity for cy") && t.contains("was killed"))
                })
        },
    );
    wait_until(Duration::from_secs(5), "no hook left running", || {
        let found = Command::new("pgrep")
            .args(["-f", "sleep 613.25"])
            .output()
            .unwrap();
        found.stdout.is_empty()
    });
}

/// A turn that makes no progress (a hung tool: nothing written, nothing
/// new on the screen) reads `stuck` after `IAPEER_STUCK_SECS`, and the hook
/// is told; once the tool ends, the session reads idle. A turn that writes
/// as it goes is never stuck.
#[test]
fn a_hung_turn_reads_stuck_and_a_busy_one_does_not() {
    for runtime in ["claude", "codex"] {
        let mut home = Home::new();
        let out = hooked(&mut home);
        home.set("IAPEER_STUCK_SECS", "3");
        home.add("dee", &["--runtime", runtime]);
        let _daemon = home.daemon();
        assert_eq!(code(&home.run(&["wake", "dee", "--task", "work 8"])), 0);
        home.wait_line("dee", "idle after the busy turn", |e| {
            is_state("idle")(e) && activity(&home, "dee").contains(&"working".to_owned())
        });
        assert!(
            !activity(&home, "dee").contains(&"stuck".to_owned()),
            "{runtime}: a busy turn is not stuck"
        );

        assert_eq!(code(&home.run(&["wake", "dee", "--task", "hang 12"])), 0);
        let stuck = home.wait_line("dee", "stuck", is_state("stuck"));
        assert!(
            stuck
                .str("reason")
                .is_some_and(|r| r.starts_with("mid-turn with no progress for ")),
            "{runtime}: {}",
            stuck.line
        );
        wait_until(Duration::from_secs(10), "the hook", || {
            told(&out).iter().any(|l| l.starts_with("dee stuck "))
        });
        wait_until(Duration::from_secs(20), "idle once the tool ends", || {
            activity(&home, "dee").last().map(String::as_str) == Some("idle")
                && activity(&home, "dee").contains(&"stuck".to_owned())
        });
    }
}

/// A bad states list is refused, naming the variable.
#[test]
fn a_bad_hook_state_is_an_error_naming_the_variable() {
    let mut home = Home::new();
    home.set("IAPEER_ON_ACTIVITY_STATES", "waiting,busy");
    let out = home.run(&["config"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("IAPEER_ON_ACTIVITY_STATES"),
        "{}",
        stderr(&out)
    );
}

/// Regression: a max-age park ended an agent mid-turn and called it
/// resume-eligible. It waits for the turn to end now (bounded by the
/// grace), and `stop --at-turn-end` does too.
#[test]
fn a_max_age_park_and_a_stop_at_turn_end_wait_for_the_turn() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "1")
        .set("IAPEER_MAX_AGE_SECS", "2");
    home.add("eve", &[]);
    let _daemon = home.daemon();
    let asked = iapeer::core::clock::now_ms();
    assert_eq!(code(&home.run(&["wake", "eve", "--task", "work 6"])), 0);
    let parked = home.wait_line("eve", "the max-age park", |e| {
        e.str("action") == Some("reaped-max-age")
    });
    assert!(
        parked.ts_ms().unwrap() >= asked + 6000,
        "parked mid-turn: {}",
        parked.line
    );
    assert!(
        parked
            .str("reason")
            .is_some_and(|r| r.contains("its turn over")),
        "{}",
        parked.line
    );

    // Past the grace, the park goes ahead mid-turn, and says so.
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "1")
        .set("IAPEER_MAX_AGE_SECS", "2")
        .set("IAPEER_MAX_AGE_GRACE_SECS", "2");
    home.add("fay", &[]);
    let _daemon = home.daemon();
    let asked = iapeer::core::clock::now_ms();
    assert_eq!(code(&home.run(&["wake", "fay", "--task", "work 30"])), 0);
    let parked = home.wait_line("fay", "the max-age park", |e| {
        e.str("action") == Some("reaped-max-age")
    });
    let at = parked.ts_ms().unwrap() - asked;
    assert!((3_500..20_000).contains(&at), "{at} ms: {}", parked.line);
    assert!(parked
        .str("reason")
        .is_some_and(|r| r.contains("past the") && r.contains("mid-turn")));

    // stop --at-turn-end, no daemon needed.
    let home = Home::new();
    home.add("gus", &[]);
    assert_eq!(code(&home.run(&["wake", "gus", "--task", "work 4"])), 0);
    let asked = iapeer::core::clock::now_ms();
    let out = home.run(&["stop", "gus", "--at-turn-end"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("waiting for its turn to end"),
        "{}",
        stderr(&out)
    );
    let stop = home
        .lines("gus", "supervise")
        .into_iter()
        .find(|e| e.str("action") == Some("parked-stopped"))
        .unwrap();
    assert!(
        stop.ts_ms().unwrap() >= asked + 2_500,
        "stopped mid-turn: {}",
        stop.line
    );
}

/// Regression: `crashed-while-working` meant "a task was delivered in the
/// 30 s before the death": a finished task counted, and one 31 s into its
/// turn did not. It is read from the turn now, for both runtimes.
#[test]
fn crashed_while_working_is_read_from_the_turn_not_the_clock() {
    for runtime in ["claude", "codex"] {
        let mut home = Home::new();
        home.set("IAPEER_TICK_SECS", "1");
        home.add("hal", &["--runtime", runtime]);
        let _daemon = home.daemon();
        let crashed =
            |home: &Home| home.count("hal", |e| e.str("action") == Some("crashed-while-working"));
        // Its task done, then killed: a death, not one mid-task.
        assert_eq!(code(&home.run(&["wake", "hal", "--task", "work 0.5"])), 0);
        home.wait_line("hal", "idle", is_state("idle"));
        home.kill_session_process("hal", libc::SIGKILL);
        home.wait_line("hal", "the death", |e| {
            e.str("action") == Some("reaped-gone")
        });
        assert_eq!(crashed(&home), 0, "{runtime}: its task was over");

        // Killed 31 s into a turn: mid-task, and the task is named.
        assert_eq!(code(&home.run(&["wake", "hal", "--task", "work 60"])), 0);
        std::thread::sleep(Duration::from_secs(31));
        home.kill_session_process("hal", libc::SIGKILL);
        let line = home.wait_line("hal", "crashed-while-working", |e| {
            e.str("action") == Some("crashed-while-working")
        });
        assert_eq!(line.str("task"), Some("work 60"), "{runtime}");
        assert_eq!(crashed(&home), 1, "{runtime}");
    }
}

/// A home with `name` defined `on_stuck = "restart"`, stuck after 3 s
/// without progress, read every second.
fn restarted_when_stuck(name: &str) -> Home {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "1")
        .set("IAPEER_STUCK_SECS", "3");
    home.add(name, &[]);
    home.edit_peer(name, |def| def["on_stuck"] = serde_json::json!("restart"));
    home
}

/// `on_stuck = "restart"`: a stuck session is ended and brought back
/// fresh, the task it was stuck on queued again, first — once: stuck on
/// it a second time, it is restarted without it.
#[test]
fn on_stuck_restart_brings_it_back_fresh_with_its_task_once() {
    let home = restarted_when_stuck("ida");
    let _daemon = home.daemon();
    assert_eq!(code(&home.run(&["wake", "ida", "--task", "hang 6"])), 0);
    let restarted = |home: &Home| {
        home.lines("ida", "supervise")
            .into_iter()
            .filter(|e| e.str("action") == Some("restarted"))
            .collect::<Vec<_>>()
    };
    wait_until(Duration::from_secs(40), "two restarts", || {
        restarted(&home).len() >= 2
    });
    let r = restarted(&home);
    assert!(
        r[0].str("reason")
            .is_some_and(|s| s.contains("on_stuck = restart")),
        "{}",
        r[0].line
    );
    let again: Vec<_> = home
        .lines("ida", "task")
        .into_iter()
        .filter(|e| {
            e.str("reason")
                .is_some_and(|s| s.starts_with("it was stuck on it"))
        })
        .collect();
    assert_eq!(again.len(), 1, "queued again once");
    assert_eq!(again[0].str("task"), Some("hang 6"));
    wait_until(Duration::from_secs(15), "each restart back fresh", || {
        home.lines("ida", "wake")
            .into_iter()
            .filter(|e| e.str("cause") == Some("needs-eager-fresh"))
            .count()
            >= 2
    });
    let delivered = home
        .lines("ida", "task")
        .into_iter()
        .filter(|e| e.str("outcome") == Some("delivered") && e.str("task") == Some("hang 6"))
        .count();
    assert_eq!(
        delivered, 1,
        "the task went again to the fresh session, once"
    );
}

/// Regression: a stuck session whose lock was held at that moment (a pass,
/// a delivery) was never restarted: the restart gave up at once, and the
/// state, read once, never asked again. It waits for the lock now.
#[test]
fn on_stuck_restart_waits_for_a_lock_held_at_that_moment() {
    use std::os::fd::AsRawFd;
    let home = restarted_when_stuck("jo");
    let _daemon = home.daemon();
    assert_eq!(code(&home.run(&["wake", "jo", "--task", "hang 30"])), 0);
    home.wait_line("jo", "working", is_state("working"));
    // Another process holds its lock when it reads stuck, for a while.
    let lock = std::fs::File::open(home.marker("jo", "lock")).unwrap();
    // SAFETY: an flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    home.wait_line("jo", "stuck", is_state("stuck"));
    std::thread::sleep(Duration::from_secs(2));
    drop(lock);
    let restarted = home.wait_line("jo", "the restart, once the lock is free", |e| {
        e.str("action") == Some("restarted")
    });
    assert!(
        restarted
            .str("reason")
            .is_some_and(|r| r.contains("on_stuck = restart")),
        "{}",
        restarted.line
    );
}
