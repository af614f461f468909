//! Lifecycle semantics over time (DESIGN §4, §5): a first wake blames
//! nothing, a self-fresh is not a death, a host restart is a park, an
//! eager marker never makes a loop, and a peer that keeps dying backs off
//! and is given up on. A real daemon, real tmux, the fake agents.

use std::time::Duration;

use iapeer::core::record::Entry;

use crate::support::{code, cpu_ticks, stdout, wait_until, Home};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

fn deaths(home: &Home, name: &str) -> Vec<i64> {
    std::fs::read_to_string(home.marker(name, "deaths"))
        .map(|s| serde_json::from_str(&s).unwrap())
        .unwrap_or_default()
}

#[test]
fn a_first_wake_blames_nothing_and_a_new_peer_of_the_same_name_starts_over() {
    let home = Home::new();
    home.add("alice", &[]);
    let r = json(&home.run(&["wake", "alice", "--json"]));
    assert_eq!(r["cause"], "first-wake");
    let (j, text) = why(&home, "alice");
    assert_eq!(j["history"]["bring_up"]["cause"], "first-wake");
    assert!(text.contains("never run since it was added"), "{text}");
    assert!(!text.contains("crash"), "nothing to blame: {text}");

    // It ran: a death now is a death, and the next wake says so (once the
    // kill has landed: until then the session is alive, and takes the wake).
    let pid = home.session("alice").unwrap()["pane_pid"].as_i64().unwrap() as i32;
    home.kill_session_process("alice", libc::SIGKILL);
    wait_until(Duration::from_secs(5), "the agent dead", || {
        iapeer::os::process::liveness(pid, None) == iapeer::core::session::Liveness::Dead
    });
    let r = json(&home.run(&["wake", "alice", "--json"]));
    assert_eq!(r["cause"], "crash-or-self-close");

    // Removed and added again: nothing of the old one is told.
    assert_eq!(code(&home.run(&["rm", "alice", "--force"])), 0);
    home.add("alice", &[]);
    let (j, text) = why(&home, "alice");
    assert!(j["history"]["bring_up"].is_null(), "{j}");
    assert!(j["history"]["previous_end"].is_null(), "{j}");
    assert!(!text.contains("crash"), "{text}");
    let r = json(&home.run(&["wake", "alice", "--json"]));
    assert_eq!(r["cause"], "first-wake");
}

fn why(home: &Home, name: &str) -> (serde_json::Value, String) {
    let j = json(&home.run(&["why", name, "--json"]));
    (j, stdout(&home.run(&["why", name])))
}

/// Four voluntary resets in a row: each comes back fresh at once, none is
/// a death, and the guard never refuses.
#[test]
fn four_self_freshes_in_a_row_come_back_fresh_with_no_refusal() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "30");
    home.add("alice", &[]);
    let _d = home.daemon();
    assert_eq!(code(&home.run(&["wake", "alice"])), 0);
    for round in 1..=4 {
        let old = home.session("alice").unwrap()["session"].clone();
        assert_eq!(
            code(&home.run(&["wake", "alice", "--task", "self-fresh"])),
            0
        );
        wait_until(Duration::from_secs(20), "the fresh session", || {
            home.count("alice", |e| {
                e.str("ev") == Some("ready") && e.str("cause") == Some("needs-eager-fresh")
            }) == round
                && home.session("alice").is_some_and(|s| s["session"] != old)
        });
    }
    let ends = home.lines("alice", "supervise");
    assert_eq!(ends.len(), 4, "{ends:?}");
    assert!(ends.iter().all(|e| e.str("action") == Some("self-fresh")));
    assert_eq!(home.count("alice", |e| e.str("mode") == Some("refused")), 0);
    assert!(deaths(&home, "alice").is_empty(), "no death recorded");
    let s = json(&home.run(&["status", "alice", "--json"]));
    assert_eq!(s["peers"][0]["lifecycle_state"], "alive");
}

/// A session record from another boot is what a host restart leaves: it
/// is settled as a park (no death, resume-eligible), and an `always` peer
/// comes back resumed.
#[test]
fn a_record_from_another_boot_is_settled_as_a_host_restart() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "30");
    home.add("keeper", &["--policy", "always"]);
    home.add("lazy", &[]);
    for name in ["keeper", "lazy"] {
        assert_eq!(code(&home.run(&["wake", name, "--task", "hello"])), 0);
    }
    // The host "restarts": tmux and the agents are gone, the records stay,
    // written in a boot that is not this one.
    for name in ["keeper", "lazy"] {
        home.restart_host_under(name);
    }
    let e = json(&home.run(&["explain", "lazy", "--json"]));
    assert_eq!(e["cause"], "idle-reaped-resume", "{e}");

    let _d = home.daemon();
    let ready = home.wait_line("keeper", "keeper back", |e| {
        e.str("ev") == Some("ready") && e.str("source") == Some("daemon")
    });
    assert_eq!(ready.str("mode"), Some("resume"), "{}", ready.line);
    assert_eq!(ready.str("cause"), Some("idle-reaped-resume"));
    for name in ["keeper", "lazy"] {
        let end = home.wait_line(name, "host-restart", |e| {
            e.str("action") == Some("host-restart")
        });
        assert_eq!(end.str("outcome"), Some("resume-eligible"));
        assert_eq!(home.count(name, is_death), 0, "{name}: no death");
        assert!(deaths(&home, name).is_empty(), "{name}: no death");
    }
    wait_until(Duration::from_secs(5), "lazy parked", || {
        home.has("lazy", "idle-reaped") && !home.has("lazy", "session")
    });
    let reason = std::fs::read_to_string(home.marker("lazy", "idle-reaped")).unwrap();
    assert!(reason.contains("host-restart"), "{reason}");
    let r = json(&home.run(&["wake", "lazy", "--json"]));
    assert_eq!(r["mode"], "resume", "{r}");
}

fn is_death(e: &Entry) -> bool {
    matches!(
        e.str("action"),
        Some("reaped-gone" | "always-on-relaunch" | "needs-eager-fresh")
    ) || (e.str("mode") == Some("fail") && e.str("cause") == Some("launch-failed"))
}

/// `.new-eager` for a peer whose folder is gone: refused, the marker
/// consumed, and no loop.
#[test]
fn a_refused_eager_relaunch_is_logged_at_most_twice() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "0.2");
    home.add("alice", &[]);
    std::fs::remove_dir(home.workdir("alice")).unwrap();
    let _d = home.daemon();
    std::fs::create_dir_all(home.lifecycle()).unwrap();
    std::fs::write(home.marker("alice", "new-eager"), "").unwrap();
    home.wait_line("alice", "the refusal", |e| {
        e.str("cause") == Some("cwd-missing")
    });
    // Many ticks later.
    std::thread::sleep(Duration::from_secs(3));
    let refusals = home.count("alice", |e| e.str("cause") == Some("cwd-missing"));
    assert!((1..=2).contains(&refusals), "{refusals} refusals");
    assert!(!home.has("alice", "new-eager"), "consumed by the refusal");
}

/// An `always` peer whose program exits at once: growing gaps between its
/// launches, then a give-up that holds until `reset`.
#[test]
fn an_always_peer_that_keeps_dying_backs_off_and_is_given_up_on() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "0.2")
        .set("IAPEER_BACKOFF_BASE_SECS", "0.2")
        .set("IAPEER_CRASHLOOP_MAX", "3")
        .set("IAPEER_CRASHLOOP_WINDOW_SECS", "2")
        .set("IAPEER_GIVE_UP_AFTER", "2");
    home.add(
        "broken",
        &["--policy", "always", "--runtime", "shell", "--", "false"],
    );
    let _d = home.daemon();
    let gave_up = {
        let mut found = None;
        wait_until(Duration::from_secs(30), "the give-up", || {
            found = home
                .entries()
                .into_iter()
                .find(|e| e.str("action") == Some("gave-up"));
            found.is_some()
        });
        found.unwrap()
    };
    assert_eq!(gave_up.str("outcome"), Some("failed"));
    assert!(home.has("broken", "failed"));
    let launches: Vec<i64> = home
        .lines("broken", "wake")
        .iter()
        .filter(|e| e.str("mode") == Some("fresh"))
        .filter_map(Entry::ts_ms)
        .collect();
    assert!(launches.len() >= 4, "{launches:?}");
    let gaps: Vec<i64> = launches.windows(2).map(|w| w[1] - w[0]).collect();
    for w in gaps.windows(2) {
        // Timing noise aside, a gap never shrinks.
        assert!(w[1] + 100 >= w[0], "gaps shrank: {gaps:?}");
    }
    assert!(gaps.last().unwrap() > &(gaps[0] * 3), "gaps grew: {gaps:?}");
    let s = json(&home.run(&["status", "broken", "--json"]));
    assert_eq!(s["peers"][0]["lifecycle_state"], "failed");
    // Nothing more is launched, however many ticks pass.
    let before = home.count("broken", |e| e.str("ev") == Some("wake"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        home.count("broken", |e| e.str("ev") == Some("wake")),
        before
    );
    // A wake by hand is refused as given up on: exit 4.
    let out = home.run(&["wake", "broken"]);
    assert_eq!(code(&out), 4, "{}", stdout(&out));
    assert_eq!(
        home.lines("broken", "wake").pop().unwrap().str("cause"),
        Some("gave-up")
    );
    // `reset` lifts it: launched again at once.
    assert_eq!(code(&home.run(&["reset", "broken"])), 0);
    assert!(!home.has("broken", "failed"));
    wait_until(Duration::from_secs(10), "a launch after the reset", || {
        home.count("broken", |e| e.str("mode") == Some("fresh")) > launches.len()
    });
}

#[test]
fn restart_ends_the_session_and_comes_back_fresh_and_refresh_waits_for_the_next_wake() {
    let home = Home::new();
    home.add("alice", &[]);
    assert_eq!(code(&home.run(&["wake", "alice", "--task", "hi"])), 0);
    let old = home.session("alice").unwrap()["session"].clone();
    let out = home.run(&["restart", "alice"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let rec = home.session("alice").unwrap();
    assert_ne!(rec["session"], old);
    assert_eq!(rec["mode"], "fresh");
    let end = home.lines("alice", "supervise").pop().unwrap();
    assert_eq!(end.str("action"), Some("restarted"));
    assert_eq!(end.str("outcome"), Some("relaunching"));
    assert!(
        deaths(&home, "alice").is_empty(),
        "a restart is not a death"
    );

    // refresh: the live session is left alone; the next natural wake is
    // fresh even after a park.
    assert_eq!(code(&home.run(&["refresh", "alice"])), 0);
    assert!(home.has("alice", "fresh-next"));
    assert_eq!(code(&home.run(&["stop", "alice"])), 0);
    assert_eq!(code(&home.run(&["start", "alice"])), 0);
    let e = json(&home.run(&["explain", "alice", "--json"]));
    assert_eq!(e["cause"], "soft-reload", "{e}");
    let r = json(&home.run(&["wake", "alice", "--json"]));
    assert_eq!(
        (r["mode"].as_str(), r["cause"].as_str()),
        (Some("fresh"), Some("soft-reload"))
    );
    assert!(!home.has("alice", "fresh-next"), "consumed");
    assert!(
        !home.has("alice", "idle-reaped"),
        "the park is answered too"
    );

    // A stopped peer is not restarted.
    assert_eq!(code(&home.run(&["stop", "alice"])), 0);
    assert_eq!(code(&home.run(&["restart", "alice"])), 3);
}

/// A per-peer error that persists (here a `.deaths` that is a directory,
/// so no death can be counted) is retried with growing delay and logged
/// once, not in a tight loop.
#[test]
fn a_persisting_error_is_logged_once_and_retried_ever_later() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "0.05");
    home.add("alice", &[]);
    let d = home.daemon();
    assert_eq!(code(&home.run(&["wake", "alice"])), 0);
    let deaths = home.marker("alice", "deaths");
    let _ = std::fs::remove_file(&deaths);
    std::fs::create_dir(&deaths).unwrap();
    home.kill_session_process("alice", libc::SIGKILL);
    home.wait_line("alice", "the tick-error", |e| {
        e.str("action") == Some("tick-error")
    });
    let cpu_before = cpu_ticks(d.pid());
    let wall = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let cpu = (cpu_ticks(d.pid()) - cpu_before) as f64 / 100.0 / wall.elapsed().as_secs_f64();
    let errors = home.count("alice", |e| e.str("action") == Some("tick-error"));
    assert_eq!(errors, 1, "logged once, then counted");
    // 100 ticks went by; the failing end was retried a handful of times.
    assert!(cpu < 0.2, "the daemon used {:.0}% of a core", cpu * 100.0);
    // The death itself is recorded once.
    assert_eq!(
        home.count("alice", |e| e.str("action") == Some("reaped-gone")),
        1
    );
}

/// `stop` says what happened to the session, whoever parked it: with a
/// daemon watching, it often parks the session before the CLI can.
#[test]
fn stop_says_the_session_was_parked_whoever_parked_it() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "30");
    home.add("alice", &[]);
    let _d = home.daemon();
    for _ in 0..5 {
        assert_eq!(code(&home.run(&["wake", "alice"])), 0);
        let out = home.run(&["stop", "alice"]);
        assert_eq!(code(&out), 0);
        let said = stdout(&out);
        assert!(said.contains("parked"), "{said}");
        assert!(!said.contains("not running"), "{said}");
        assert_eq!(code(&home.run(&["start", "alice"])), 0);
    }
    let out = home.run(&["stop", "alice"]);
    assert!(stdout(&out).contains("already parked"), "{}", stdout(&out));
}

/// Counters never go backwards: after 20 rotations took the early lines
/// away, and after a daemon restart, they are what the whole history says.
#[test]
fn counters_are_identical_after_twenty_rotations_and_a_restart() {
    let mut home = Home::new();
    let metrics = home.path().join("metrics.prom");
    home.set("IAPEER_TICK_SECS", "30")
        .set("IAPEER_LIFECYCLE_LOG_MAX_BYTES", "2000")
        .set("IAPEER_METRICS_FILE", metrics.to_str().unwrap());
    home.add("alice", &["--runtime", "shell", "--", "sleep", "100000"]);
    let checkpoint = home.path().join("state/metrics.json");
    let log = home.log_path();
    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&log).unwrap());
    let mut d = home.daemon();
    let mut rotations = 0;
    for _ in 0..20 {
        let before = inode();
        let stamp = std::fs::metadata(&checkpoint)
            .and_then(|m| m.modified())
            .ok();
        assert_eq!(code(&home.run(&["wake", "alice"])), 0);
        assert_eq!(code(&home.run(&["stop", "alice"])), 0);
        assert_eq!(code(&home.run(&["start", "alice"])), 0);
        for _ in 0..10 {
            assert_eq!(code(&home.run(&["reset", "alice"])), 0);
        }
        rotations += usize::from(inode() != before);
        wait_until(Duration::from_secs(5), "a newer checkpoint", || {
            std::fs::metadata(&checkpoint)
                .and_then(|m| m.modified())
                .ok()
                != stamp
        });
    }
    assert!(rotations >= 20, "{rotations} rotations");
    let wakes = |home: &Home| {
        let s = json(&home.run(&["status", "alice", "--json"]));
        let m = &s["peers"][0]["lifecycle_metrics"];
        (
            m["wakes_fresh"].as_u64(),
            m["wakes_resume"].as_u64(),
            m["parks_stop"].as_u64(),
        )
    };
    let retained = home.count("alice", |e| e.str("ev") == Some("wake"));
    assert!(retained < 20, "rotation took lines away ({retained} kept)");
    // A shell has nothing to resume: every wake is fresh.
    let want = (Some(20), Some(0), Some(20));
    assert_eq!(wakes(&home), want);
    let prom = |path: &std::path::Path| -> String {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("iapeer_wakes_total"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    wait_until(Duration::from_secs(5), "the metrics file", || {
        prom(&metrics).contains("mode=\"fresh\"} 20")
    });
    let before = prom(&metrics);

    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(5)).is_some());
    std::fs::remove_file(&metrics).unwrap();
    let _d = home.daemon();
    assert_eq!(wakes(&home), want, "after a restart");
    wait_until(Duration::from_secs(5), "the metrics file again", || {
        metrics.exists() && prom(&metrics) == before
    });
}

/// A session whose last turn ended on its runtime's usage limit is not
/// idle: it is held until the limit lifts, then given its task again, and
/// parked only once it is quiet with no limit on screen.
#[test]
fn a_usage_limit_holds_the_session_then_its_task_is_given_again() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "0.2");
    home.add("alice", &["--idle-secs", "1"]);
    let _d = home.daemon();
    let asked = iapeer::core::clock::now_ms();
    assert_eq!(code(&home.run(&["wake", "alice", "--task", "limit 4"])), 0);
    let limited = home.wait_line("alice", "the limit", |e| e.str("action") == Some("limited"));
    let until = iapeer::core::clock::parse_rfc3339(limited.str("retry_after").unwrap()).unwrap();
    // The time the agent said, read off its screen: 4 s after it took the
    // task (which came after `asked`), whenever the daemon read it.
    let said_at = limited.ts_ms().unwrap();
    assert!(
        until >= asked + 3_000 && until <= said_at + 5_000,
        "lifts 4 s after the task: asked at {asked}, read at {said_at}, lifts at {until}"
    );
    assert!(
        limited
            .str("reason")
            .unwrap()
            .contains("usage limit reached"),
        "{}",
        limited.line
    );
    // Idle for longer than its idle_secs, and not parked.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(home.has("alice", "session"));
    assert_eq!(
        home.count("alice", |e| e.str("action") == Some("reaped-idle")),
        0
    );
    let again = home.wait_line("alice", "the task again", |e| {
        e.str("outcome") == Some("delivered")
            && e.str("reason")
                .is_some_and(|r| r.contains("usage limit lifted"))
    });
    assert!(
        again.ts_ms().unwrap() >= until,
        "not before the limit lifts"
    );
    assert_eq!(again.str("task"), Some("limit 4"));
    // It hit the limit again (the fake always does): held once more, then
    // it is a person's to look at; a limited session is never counted a death.
    home.wait_line("alice", "held again", |e| {
        e.str("action") == Some("limited") && e.ts_ms() > Some(said_at + 1_000)
    });
    assert_eq!(
        home.count("alice", |e| e.str("action") == Some("reaped-gone")),
        0
    );
}

/// A restart ends the session's whole tree, as a stop does: a tool that
/// runs in a session of its own (as Claude's Bash tool does) goes with it.
#[test]
fn a_restart_ends_the_tools_of_the_session_it_ends() {
    let home = Home::new();
    // A duration no other process has.
    let secs = format!("4242.{}", std::process::id());
    let script = format!("setsid sleep {secs} & sleep 100000");
    home.add("tooly", &["--runtime", "shell", "--", "sh", "-c", &script]);
    let cmdline = format!("sleep\0{secs}\0").into_bytes();
    assert_eq!(code(&home.run(&["wake", "tooly"])), 0);
    let tool = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                // The sleep itself, not the shell whose script names it.
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == cmdline)
            })
            .count()
    };
    wait_until(Duration::from_secs(5), "the tool", || tool() == 1);
    assert_eq!(code(&home.run(&["restart", "tooly"])), 0);
    // The new session starts a tool of its own: one, not two.
    wait_until(Duration::from_secs(5), "the old tool gone", || tool() == 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(tool(), 1, "the old session's tool outlived the restart");
    assert_eq!(code(&home.run(&["stop", "tooly"])), 0);
    wait_until(Duration::from_secs(5), "no tool after the stop", || {
        tool() == 0
    });
}
