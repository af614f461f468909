//! Bringing peers up with real tmux and the fake agents (DESIGN §6), and
//! the lifecycle.log lines each path writes.

use std::time::Duration;

use crate::support::{code, fixtures, stderr, stdout, wait_until, Home};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(stdout(out).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

fn wake(home: &Home, args: &[&str]) -> std::process::Output {
    let mut all = vec!["wake"];
    all.extend_from_slice(args);
    all.push("--json");
    home.run(&all)
}

/// Parks a live peer the way an operator does (stop, start): it leaves
/// `.idle-reaped` for the next wake.
fn park(home: &Home, name: &str) {
    assert_eq!(code(&home.run(&["stop", name])), 0);
    assert!(home.has(name, "idle-reaped"));
    assert!(!home.has(name, "session"));
    assert_eq!(code(&home.run(&["start", name])), 0);
}

#[test]
fn first_wake_is_fresh_and_logs_decision_then_ready() {
    let home = Home::new();
    home.add("alice", &[]);
    let out = wake(&home, &["alice"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(r["status"], "ready");
    assert_eq!(r["woke"], true);
    assert_eq!(r["mode"], "fresh");
    assert_eq!(r["cause"], "first-wake", "nothing to blame");
    assert_eq!(r["runtime"], "claude");
    assert!(r["latency_ms"].as_u64().is_some());

    let wakes = home.lines("alice", "wake");
    let ready = home.lines("alice", "ready");
    assert_eq!((wakes.len(), ready.len()), (1, 1));
    assert_eq!(wakes[0].str("mode"), Some("fresh"));
    assert_eq!(wakes[0].str("cause"), Some("first-wake"));
    assert_eq!(wakes[0].str("source"), Some("cli"));
    assert_eq!(wakes[0].str("session"), ready[0].str("session"));
    assert!(ready[0].u64("latency_ms").is_some());
    let all = home.entries();
    let pos = |ev: &str| all.iter().position(|e| e.str("ev") == Some(ev)).unwrap();
    assert!(
        pos("wake") < pos("ready"),
        "the decision is logged before ready"
    );

    let session = home.session("alice").unwrap();
    assert_eq!(session["identity"], "alice");
    assert_eq!(session["mode"], "fresh");
    assert!(session["ready_at"].is_string());
    // Claude's conversation id is pinned to the launch.
    assert_eq!(session["resume_ref"], session["session"]);
}

#[test]
fn a_parked_peer_with_the_same_topic_resumes_its_conversation() {
    let home = Home::new();
    home.add("alice", &[]);
    assert_eq!(
        code(&wake(
            &home,
            &["alice", "--topic", "billing", "--task", "first"]
        )),
        0
    );
    let first = home.session("alice").unwrap()["resume_ref"]
        .as_str()
        .unwrap()
        .to_owned();
    park(&home, "alice");

    let r = json(&wake(
        &home,
        &["alice", "--topic", "billing", "--task", "second"],
    ));
    assert_eq!(
        (r["mode"].as_str(), r["cause"].as_str()),
        (Some("resume"), Some("idle-reaped-resume"))
    );
    assert_eq!(home.session("alice").unwrap()["resume_ref"], first.as_str());
    assert!(!home.has("alice", "idle-reaped"), "consumed");
    wait_until(
        Duration::from_secs(5),
        "the task in the resumed transcript",
        || home.claude_messages(&first) == ["first", "second"],
    );
    let park = home.lines("alice", "supervise");
    assert_eq!(park.last().unwrap().str("action"), Some("parked-stopped"));
    assert_eq!(park.last().unwrap().str("outcome"), Some("resume-eligible"));
    let last = home.lines("alice", "ready").pop().unwrap();
    assert_eq!(last.str("cause"), Some("idle-reaped-resume"));
}

#[test]
fn a_parked_executor_with_a_new_topic_starts_fresh() {
    let home = Home::new();
    home.add("alice", &[]);
    wake(&home, &["alice", "--topic", "billing"]);
    let first = home.session("alice").unwrap()["session"].clone();
    park(&home, "alice");
    let r = json(&wake(&home, &["alice", "--topic", "onboarding"]));
    assert_eq!(
        (r["mode"].as_str(), r["cause"].as_str()),
        (Some("fresh"), Some("idle-reaped-new-topic"))
    );
    assert_ne!(home.session("alice").unwrap()["resume_ref"], first);
    let topic = std::fs::read_to_string(home.marker("alice", "topic")).unwrap();
    assert_eq!(topic, "onboarding\n");
}

#[test]
fn a_parked_conversational_peer_resumes_whatever_the_topic() {
    let home = Home::new();
    home.add("hal", &["--conversational"]);
    wake(&home, &["hal", "--topic", "weather", "--task", "hi"]);
    let first = home.session("hal").unwrap()["resume_ref"].clone();
    park(&home, "hal");
    let r = json(&wake(&home, &["hal", "--topic", "something else"]));
    assert_eq!(
        (r["mode"].as_str(), r["cause"].as_str()),
        (Some("resume"), Some("idle-reaped-human"))
    );
    assert_eq!(home.session("hal").unwrap()["resume_ref"], first);
}

#[test]
fn resume_with_nothing_to_resume_fails_loudly_and_launches_nothing() {
    let home = Home::new();
    home.add("alice", &[]);
    let out = wake(&home, &["alice", "--resume"]);
    assert_eq!(code(&out), 1);
    let r = json(&out);
    assert_eq!(r["status"], "failed");
    assert_eq!(r["cause"], "attach-nothing-to-resume");
    assert!(!home.has("alice", "session"));
    assert!(
        !home.path().join("run/alice.sock").exists(),
        "no tmux server was started"
    );
    let wakes = home.lines("alice", "wake");
    assert_eq!(wakes.len(), 1);
    assert_eq!(wakes[0].str("mode"), Some("fail"));
    assert_eq!(wakes[0].str("cause"), Some("attach-nothing-to-resume"));
    assert!(home.lines("alice", "ready").is_empty());
}

#[test]
fn a_stopped_peer_is_refused_with_exit_3() {
    let home = Home::new();
    home.add("alice", &[]);
    assert_eq!(code(&home.run(&["stop", "alice"])), 0);
    let out = wake(&home, &["alice"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert_eq!(json(&out)["status"], "refused");
    let w = home.lines("alice", "wake").pop().unwrap();
    assert_eq!(
        (w.str("mode"), w.str("cause")),
        (Some("refused"), Some("stopped"))
    );
    assert_eq!(home.lines("alice", "stop").len(), 1);
    assert!(!home.has("alice", "session"));
}

#[test]
fn an_agent_that_dies_at_once_stops_at_the_crash_loop_guard() {
    let mut home = Home::new();
    home.set("FAKE_AGENT_CRASH_AT_START", "1");
    home.add("alice", &[]);
    for attempt in 1..=3 {
        let out = wake(&home, &["alice"]);
        assert_eq!(code(&out), 1, "attempt {attempt}: {}", stderr(&out));
        assert_eq!(json(&out)["cause"], "launch-failed");
    }
    let out = wake(&home, &["alice"]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(
        (r["status"].as_str(), r["cause"].as_str()),
        (Some("refused"), Some("crash-loop"))
    );
    assert!(r["reason"].as_str().unwrap().contains("retry after"));

    let failed: Vec<_> = home
        .lines("alice", "wake")
        .into_iter()
        .filter(|e| e.str("mode") == Some("fail"))
        .collect();
    assert_eq!(failed.len(), 3);
    for f in &failed {
        assert_eq!(f.str("exit_status"), Some("3"));
        assert!(
            f.str("last_lines")
                .unwrap()
                .contains("simulated start-up crash"),
            "{}",
            f.line
        );
        // What it said, on its own, beside the screen.
        assert_eq!(
            f.str("reason"),
            Some("it said: fatal: simulated start-up crash"),
            "{}",
            f.line
        );
    }
    let refused = home.lines("alice", "wake").pop().unwrap();
    assert_eq!(refused.str("cause"), Some("crash-loop"));
    assert_eq!(refused.u64("deaths"), Some(3));
    assert!(iapeer::core::clock::parse_rfc3339(refused.str("retry_after").unwrap()).is_some());
    let deaths: Vec<i64> =
        serde_json::from_str(&std::fs::read_to_string(home.marker("alice", "deaths")).unwrap())
            .unwrap();
    assert_eq!(deaths.len(), 3);

    // reset clears the guard.
    assert_eq!(code(&home.run(&["reset", "alice"])), 0);
    assert_eq!(
        std::fs::read_to_string(home.marker("alice", "deaths")).unwrap(),
        "[]\n",
        "emptied, and still saying it has had a session"
    );
    assert_eq!(home.lines("alice", "reset")[0].u64("deaths"), Some(3));
}

#[test]
fn a_resume_that_fails_retries_fresh_without_counting_a_death() {
    let mut home = Home::new();
    home.add("alice", &[]);
    wake(&home, &["alice", "--topic", "t", "--task", "hi"]);
    park(&home, "alice");
    home.set("FAKE_AGENT_RESUME_FAILS", "1");
    let out = wake(&home, &["alice", "--topic", "t"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(
        (r["mode"].as_str(), r["cause"].as_str()),
        (Some("fresh"), Some("resume-failed-fresh"))
    );
    let wakes = home.lines("alice", "wake");
    let n = wakes.len();
    assert_eq!(wakes[n - 2].str("cause"), Some("idle-reaped-resume"));
    assert_eq!(wakes[n - 1].str("cause"), Some("resume-failed-fresh"));
    assert!(
        wakes[n - 1]
            .str("reason")
            .unwrap()
            .contains("No conversation found"),
        "{}",
        wakes[n - 1].line
    );
    assert_eq!(
        home.lines("alice", "ready").pop().unwrap().str("cause"),
        Some("resume-failed-fresh")
    );
    assert_eq!(
        std::fs::read_to_string(home.marker("alice", "deaths")).unwrap(),
        "[]\n",
        "a failed resume is not a death"
    );
}

#[test]
fn eight_concurrent_wakes_launch_exactly_once() {
    let home = Home::new();
    home.add("alice", &[]);
    let children: Vec<_> = (0..8)
        .map(|i| {
            home.iapeer()
                .args(["wake", "alice", "--json", "--task", &format!("task {i}")])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for o in &outs {
        assert_eq!(code(o), 0, "{}", stderr(o));
    }
    let statuses: Vec<String> = outs
        .iter()
        .map(|o| json(o)["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| *s == "ready").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "alive").count(),
        7,
        "{statuses:?}"
    );
    let wakes = home.lines("alice", "wake");
    let decisions = wakes.iter().filter(|e| e.str("mode").is_some()).count();
    let deliveries = wakes
        .iter()
        .filter(|e| e.str("outcome") == Some("delivered"))
        .count();
    assert_eq!(
        (decisions, deliveries),
        (1, 7),
        "one launch, seven deliveries"
    );
    assert_eq!(home.lines("alice", "ready").len(), 1);
    let session = home.session("alice").unwrap()["resume_ref"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(Duration::from_secs(10), "all eight tasks", || {
        home.claude_messages(&session).len() == 8
    });
}

#[test]
fn task_text_arrives_literally() {
    let home = Home::new();
    home.add("alice", &[]);
    let task = "say \"hi\" and 'bye'; $(rm -rf /tmp/nothing) `id` $HOME\nsecond line\twith a tab\nC-c Enter Escape ; send-keys -t x Enter \\ ünïcødé";
    let out = wake(&home, &["alice", "--task", task]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let session = home.session("alice").unwrap()["resume_ref"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(Duration::from_secs(5), "the task in the transcript", || {
        !home.claude_messages(&session).is_empty()
    });
    assert_eq!(home.claude_messages(&session), [task]);
    // A live session wins: a second task is delivered, nothing launched.
    let r = json(&wake(&home, &["alice", "--task", "again"]));
    assert_eq!(
        (r["status"].as_str(), r["woke"].as_bool()),
        (Some("alive"), Some(false))
    );
    wait_until(Duration::from_secs(5), "the second task", || {
        home.claude_messages(&session).len() == 2
    });
    let wakes = home.lines("alice", "wake");
    assert_eq!(wakes.len(), 2, "the launch, then the delivery");
    assert_eq!(wakes[1].str("outcome"), Some("delivered"));
    assert_eq!(wakes[1].str("task"), Some("again"));
    assert!(
        wakes[1].str("mode").is_none(),
        "a delivery launches nothing"
    );
}

#[test]
fn control_characters_in_a_task_are_refused_before_anything_happens() {
    let home = Home::new();
    home.add("alice", &[]);
    let out = home.run(&["wake", "alice", "--task", "stop\x1b[201~now"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("control character"),
        "{}",
        stderr(&out)
    );
    assert!(
        home.entries()
            .iter()
            .all(|e| e.str("outcome") == Some("added")),
        "nothing logged but the add"
    );
    assert!(!home.has("alice", "session"));
}

#[test]
fn an_external_supervisor_is_refused_with_exit_5() {
    let home = Home::new();
    home.add("alice", &[]);
    let file = home.path().join("peers/alice.json");
    let mut def: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    def["external_supervisor"] = "launchd".into();
    std::fs::write(&file, def.to_string()).unwrap();
    let out = wake(&home, &["alice"]);
    assert_eq!(code(&out), 5);
    let w = home.lines("alice", "wake").pop().unwrap();
    assert_eq!(w.str("cause"), Some("external-supervisor"));
}

#[test]
fn a_held_wake_lock_is_exit_6() {
    let mut home = Home::new();
    home.add("alice", &[]);
    home.set("IAPEER_WAKE_LOCK_WAIT_SECS", "0.2");
    std::fs::create_dir_all(home.lifecycle()).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(home.marker("alice", "lock"))
        .unwrap();
    lock.lock().unwrap();
    let out = wake(&home, &["alice"]);
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert_eq!(json(&out)["cause"], "wake-lock-held");

    // A stop meeting the held lock is exit 6 too, but the stop is in force
    // and says so.
    let out = home.run(&["stop", "alice"]);
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the stop is in force"),
        "{}",
        stderr(&out)
    );
    assert!(home.has("alice", "stopped"));
    assert_eq!(code(&home.run(&["start", "alice"])), 0);

    drop(lock);
    assert_eq!(code(&wake(&home, &["alice"])), 0);
}

#[test]
fn a_missing_cwd_is_exit_2_naming_it() {
    let home = Home::new();
    home.add("alice", &[]);
    std::fs::remove_dir(home.workdir("alice")).unwrap();
    let out = home.run(&["wake", "alice"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("work/alice"), "{}", stderr(&out));
    assert_eq!(
        home.lines("alice", "wake").pop().unwrap().str("cause"),
        Some("cwd-missing")
    );
}

#[test]
fn a_boot_that_never_gets_ready_is_killed_and_counted() {
    let mut home = Home::new();
    home.set("FAKE_AGENT_NEVER_READY", "1")
        .set("IAPEER_BOOT_DEADLINE_SECS", "1");
    home.add("alice", &[]);
    let out = wake(&home, &["alice"]);
    assert_eq!(code(&out), 1);
    assert_eq!(json(&out)["cause"], "boot-timeout");
    let f = home.lines("alice", "wake").pop().unwrap();
    assert_eq!(f.str("cause"), Some("boot-timeout"));
    assert!(
        f.str("last_lines").unwrap().contains("starting"),
        "{}",
        f.line
    );
    assert!(!home.has("alice", "session"));
    assert!(!home.path().join("run/alice.sock").exists());
    assert!(home.has("alice", "deaths"));
}

#[test]
fn the_fake_trust_dialog_is_answered_as_the_real_one_is() {
    let mut home = Home::new();
    home.set("FAKE_AGENT_DIALOG", "trust");
    home.add("alice", &[]);
    let out = wake(&home, &["alice", "--task", "after the dialog"]);
    assert_eq!(json(&out)["status"], "ready", "{}", stderr(&out));
    let answered = home.count("alice", |e| {
        e.str("action") == Some("dialog-answered") && e.str("dialog") == Some("folder-trust")
    });
    assert_eq!(answered, 1);
    // The key went to the dialog, not into the first task.
    home.wait_line("alice", "the task delivered", |e| {
        e.str("task") == Some("after the dialog")
    });
}

#[test]
fn with_dialogs_manual_a_startup_dialog_fails_the_boot_saying_what_to_do() {
    let mut home = Home::new();
    home.set("FAKE_AGENT_DIALOG", "trust");
    home.add("alice", &[]);
    home.edit_peer("alice", |def| def["dialogs"] = "manual".into());
    let out = wake(&home, &["alice"]);
    assert_eq!(json(&out)["cause"], "launch-failed");
    let f = home.lines("alice", "wake").pop().unwrap();
    assert!(
        f.str("last_lines")
            .unwrap()
            .contains("Yes, I trust this folder")
            && f.str("reason").unwrap().contains("\"dialogs\": \"auto\""),
        "{}",
        f.line
    );
    assert_eq!(
        home.count("alice", |e| e.str("action") == Some("dialog-answered")),
        0
    );
}

/// The fake agent is only worth its speed if it looks like the real CLI:
/// its trust dialog shows every line of the one captured from Claude Code
/// 2.1.197, but the folder's path.
#[test]
fn the_fake_trust_dialog_shows_the_real_ones_lines() {
    let mut home = Home::new();
    home.set("FAKE_AGENT_DIALOG", "trust");
    home.add("alice", &[]);
    let socket = home.path().join("run/fake.sock");
    let cwd = home.workdir("alice");
    let started = std::process::Command::new("tmux")
        .arg("-S")
        .arg(&socket)
        .args([
            "new-session",
            "-d",
            "-s",
            "f",
            "-x",
            "200",
            "-y",
            "50",
            "-c",
        ])
        .arg(&cwd)
        .args(["-e", "FAKE_AGENT_DIALOG=trust"])
        .arg(fixtures().join("fake-claude"))
        .status()
        .unwrap();
    assert!(started.success());
    let real = std::fs::read_to_string(fixtures().join("real/claude/trust-dialog.txt")).unwrap();
    let wanted: Vec<&str> = real
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('/') && !l.starts_with('─'))
        .collect();
    let capture = || {
        let out = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["capture-pane", "-p", "-t", "=f:"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Up to the dialog's last line, drawn once the fake is up.
    wait_until(Duration::from_secs(10), "the fake's dialog", || {
        capture().contains("Esc to cancel")
    });
    let screen = capture();
    let missing: Vec<&&str> = wanted.iter().filter(|l| !screen.contains(**l)).collect();
    assert!(
        missing.is_empty(),
        "the fake lacks {missing:#?} on\n{screen}"
    );
    let _ = std::process::Command::new("tmux")
        .arg("-S")
        .arg(&socket)
        .arg("kill-server")
        .status();
}

#[test]
fn codex_peers_resume_by_rollout_id() {
    let home = Home::new();
    home.add("cx", &["--runtime", "codex"]);
    // Codex writes its rollout at the first turn: until then there is
    // nothing to resume.
    let r = json(&wake(&home, &["cx", "--topic", "t", "--task", "hi"]));
    assert_eq!(r["runtime"], "codex");
    let rollout = home.session("cx").unwrap()["resume_ref"]
        .as_str()
        .expect("rollout id found")
        .to_owned();
    park(&home, "cx");
    let r = json(&wake(&home, &["cx", "--topic", "t"]));
    assert_eq!(r["cause"], "idle-reaped-resume");
    assert_eq!(home.session("cx").unwrap()["resume_ref"], rollout.as_str());
}

#[test]
fn shell_peers_run_an_argv_without_a_shell_and_never_resume() {
    let home = Home::new();
    let marker = home.path().join("argv-out");
    home.add(
        "sh1",
        &[
            "--runtime",
            "shell",
            "--",
            "sh",
            "-c",
            &format!(
                "printf '%s|' \"$0\" \"$@\" > {}; exec sleep 60",
                marker.display()
            ),
            "$(not expanded)",
            "a b",
        ],
    );
    let r = json(&wake(&home, &["sh1"]));
    assert_eq!(r["status"], "ready", "{r}");
    wait_until(Duration::from_secs(5), "argv written", || marker.exists());
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "$(not expanded)|a b|"
    );
    park(&home, "sh1");
    let r = json(&wake(&home, &["sh1"]));
    assert_eq!(r["cause"], "idle-reaped-no-resume");
}

#[test]
fn the_session_environment_carries_identity_and_home_and_drops_claudecode() {
    let home = Home::new();
    let out_file = home.path().join("env-out");
    home.add(
        "envy",
        &[
            "--runtime",
            "shell",
            "--",
            "sh",
            "-c",
            &format!("env > {}; exec sleep 60", out_file.display()),
        ],
    );
    let out = home
        .iapeer()
        .env("CLAUDECODE", "1")
        .args(["wake", "envy"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    wait_until(Duration::from_secs(5), "env written", || {
        std::fs::read_to_string(&out_file).is_ok_and(|s| s.contains("IAPEER"))
    });
    let env = std::fs::read_to_string(&out_file).unwrap();
    assert!(env.contains("IAPEER_IDENTITY=envy\n"), "{env}");
    assert!(
        env.contains(&format!("IAPEER_HOME={}\n", home.path().display())),
        "{env}"
    );
    assert!(!env.contains("CLAUDECODE"), "{env}");
}

#[test]
fn initial_prompt_is_typed_into_a_fresh_session_without_a_task() {
    let home = Home::new();
    home.add("alice", &["--initial-prompt", "read TODO.md"]);
    wake(&home, &["alice"]);
    let session = home.session("alice").unwrap()["resume_ref"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(Duration::from_secs(5), "the initial prompt", || {
        home.claude_messages(&session) == ["read TODO.md"]
    });
}

/// The user messages of the Codex rollout `id` in this home.
fn codex_messages(home: &Home, id: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![home.path().join("codex").join("sessions")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().ends_with(&format!("-{id}.jsonl")) {
                let text = std::fs::read_to_string(&path).unwrap();
                for line in text.lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    if v["payload"]["role"] == "user" {
                        out.push(
                            v["payload"]["content"][0]["text"]
                                .as_str()
                                .unwrap()
                                .to_owned(),
                        );
                    }
                }
            }
        }
    }
    out
}

/// Two peers in one folder (as every member of a pool is): each resumes
/// its own conversation, never the neighbour's newer one.
#[test]
fn peers_sharing_a_folder_each_resume_their_own_conversation() {
    for runtime in ["claude", "codex"] {
        let home = Home::new();
        let shared = home.workdir("shared");
        for name in ["a", "b"] {
            let out = home.run(&[
                "add",
                name,
                "--cwd",
                shared.to_str().unwrap(),
                "--runtime",
                runtime,
            ]);
            assert_eq!(code(&out), 0, "{}", stderr(&out));
        }
        let messages = |id: &str| match runtime {
            "claude" => home.claude_messages(id),
            _ => codex_messages(&home, id),
        };
        let ref_of = |name: &str| {
            home.session(name).unwrap()["resume_ref"]
                .as_str()
                .unwrap_or_else(|| panic!("{runtime}: {name} has a conversation"))
                .to_owned()
        };
        assert_eq!(
            code(&wake(&home, &["b", "--topic", "t", "--task", "b1"])),
            0
        );
        assert_eq!(
            code(&wake(&home, &["a", "--topic", "t", "--task", "a1"])),
            0
        );
        let (a1, b1) = (ref_of("a"), ref_of("b"));
        assert_ne!(a1, b1, "{runtime}: each launch has its own conversation");

        // a parks while b, in the same folder, goes on and writes newer
        // entries: a's wake must still continue a's conversation.
        park(&home, "a");
        let reason = std::fs::read_to_string(home.marker("a", "idle-reaped")).ok();
        assert_eq!(code(&wake(&home, &["b", "--task", "b2"])), 0);
        wait_until(Duration::from_secs(5), "b's task recorded", || {
            messages(&b1) == ["b1", "b2"]
        });
        let r = json(&wake(&home, &["a", "--topic", "t", "--task", "a2"]));
        assert_eq!(r["cause"], "idle-reaped-resume", "{runtime}: {r}");
        assert_eq!(ref_of("a"), a1, "{runtime}: parked with {reason:?}");
        wait_until(
            Duration::from_secs(5),
            "a's task in a's conversation",
            || messages(&a1) == ["a1", "a2"],
        );
        assert_eq!(messages(&b1), ["b1", "b2"], "{runtime}: b's untouched");

        // And the other way round, while a is the live one.
        park(&home, "b");
        assert_eq!(code(&wake(&home, &["a", "--task", "a3"])), 0);
        let r = json(&wake(&home, &["b", "--topic", "t"]));
        assert_eq!(r["cause"], "idle-reaped-resume", "{runtime}: {r}");
        assert_eq!(ref_of("b"), b1, "{runtime}");
    }
}

fn parked_conversation(home: &Home, name: &str) -> Option<String> {
    let reason = std::fs::read_to_string(home.marker(name, "idle-reaped")).unwrap();
    reason
        .split_whitespace()
        .find_map(|w| w.strip_prefix("conversation="))
        .map(str::to_owned)
}

/// `/clear` moves a Claude session to a new transcript: for a peer alone
/// in its folder the park names that one and the wake resumes it.
#[test]
fn a_park_after_clear_resumes_the_cleared_conversation() {
    let home = Home::new();
    home.add("a", &[]);
    assert_eq!(
        code(&wake(&home, &["a", "--topic", "t", "--task", "a1"])),
        0
    );
    let first = home.session("a").unwrap()["resume_ref"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(code(&wake(&home, &["a", "--task", "/clear"])), 0);
    wait_until(Duration::from_secs(5), "/clear recorded", || {
        cleared_into(&home, &[&first]).is_some()
    });
    park(&home, "a");
    let cleared = parked_conversation(&home, "a").expect("the park names a conversation");
    assert_ne!(cleared, first, "the /clear moved it");
    assert_eq!(home.claude_messages(&cleared), ["/clear"]);
    let r = json(&wake(&home, &["a", "--topic", "t", "--task", "a2"]));
    assert_eq!(r["cause"], "idle-reaped-resume", "{r}");
    assert_eq!(home.session("a").unwrap()["resume_ref"], cleared.as_str());
    wait_until(Duration::from_secs(5), "the task in it", || {
        home.claude_messages(&cleared) == ["/clear", "a2"]
    });
}

/// A `/clear` beside a neighbour: the session that cleared follows its own
/// record (Claude's `sessions/<pid>.json`) to the new conversation; the
/// neighbour never takes it, and keeps to what it was launched on.
#[test]
fn a_clear_beside_a_neighbour_is_followed_by_its_own_session_only() {
    let home = Home::new();
    let shared = home.workdir("shared");
    for name in ["a", "b"] {
        let out = home.run(&["add", name, "--cwd", shared.to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    assert_eq!(
        code(&wake(&home, &["a", "--topic", "t", "--task", "a1"])),
        0
    );
    assert_eq!(
        code(&wake(&home, &["b", "--topic", "t", "--task", "b1"])),
        0
    );
    let ref_of = |name: &str| {
        home.session(name).unwrap()["resume_ref"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (a1, b1) = (ref_of("a"), ref_of("b"));
    assert_eq!(code(&wake(&home, &["a", "--task", "/clear"])), 0);
    let mut cleared = None;
    wait_until(Duration::from_secs(5), "/clear recorded", || {
        cleared = cleared_into(&home, &[&a1, &b1]);
        cleared.is_some()
    });
    let cleared = cleared.unwrap();
    park(&home, "b");
    assert_eq!(parked_conversation(&home, "b"), Some(b1.clone()));
    park(&home, "a");
    assert_eq!(parked_conversation(&home, "a"), Some(cleared.clone()));
    for (name, own) in [("b", &b1), ("a", &cleared)] {
        let r = json(&wake(&home, &[name, "--topic", "t"]));
        assert_eq!(r["cause"], "idle-reaped-resume", "{name}: {r}");
        assert_eq!(&ref_of(name), own, "{name}");
    }
}

/// Has a transcript other than `before` recorded a `/clear` as its first
/// message?
/// The conversation a `/clear` began, other than `before`.
fn cleared_into(home: &Home, before: &[&String]) -> Option<String> {
    std::fs::read_dir(home.path().join("claude").join("projects"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter_map(|f| Some(f.path().file_stem()?.to_str()?.to_owned()))
        .filter(|id| !before.contains(&id))
        .find(|id| {
            home.claude_messages(id)
                .first()
                .is_some_and(|m| m == "/clear")
        })
}

/// Codex picks its own conversation id, learned after the launch: two
/// members of one folder coming up at once each learn their own (from the
/// rollout their session holds open), never each other's.
#[test]
fn codex_members_launched_together_each_learn_their_own_rollout() {
    let home = Home::new();
    let shared = home.workdir("shared");
    let names = ["c1", "c2", "c3"];
    for name in names {
        let out = home.run(&[
            "add",
            name,
            "--cwd",
            shared.to_str().unwrap(),
            "--runtime",
            "codex",
        ]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let children: Vec<_> = names
        .iter()
        .map(|name| {
            home.iapeer()
                .args(["wake", name, "--task", &format!("task for {name}")])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    for name in names {
        let id = home.session(name).unwrap()["resume_ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} learned its rollout"))
            .to_owned();
        wait_until(Duration::from_secs(5), "the task recorded", || {
            codex_messages(&home, &id) == [format!("task for {name}")]
        });
    }
}

/// The fake writes its records when the real CLIs do: no Claude
/// transcript and no Codex rollout before the first prompt (only Claude's
/// process record), and a first Claude transcript whose leading lines carry
/// no cwd, as in the recorded one.
#[test]
fn the_fake_writes_its_records_when_the_real_clis_do() {
    let home = Home::new();
    home.add("alice", &[]);
    home.add("cx", &["--runtime", "codex"]);
    for name in ["alice", "cx"] {
        assert_eq!(code(&wake(&home, &[name])), 0);
    }
    let files = |dir: &std::path::Path, ext: &str| -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == ext) {
                    out.push(p);
                }
            }
        }
        out
    };
    let claude = home.path().join("claude");
    assert!(
        files(&claude.join("projects"), "jsonl").is_empty(),
        "a transcript before the first prompt"
    );
    assert_eq!(
        files(&claude.join("sessions"), "json").len(),
        1,
        "the process record is there"
    );
    assert!(
        files(&home.path().join("codex/sessions"), "jsonl").is_empty(),
        "a rollout before the first turn"
    );
    // Claude rewrites its process record in place: the same file from
    // start to end of a turn (a reader may catch it half-written).
    let inode = || {
        use std::os::unix::fs::MetadataExt;
        let record = &files(&claude.join("sessions"), "json")[0];
        std::fs::metadata(record).unwrap().ino()
    };
    let before = inode();

    for name in ["alice", "cx"] {
        assert_eq!(code(&wake(&home, &[name, "--task", "first words"])), 0);
    }
    let transcripts = files(&claude.join("projects"), "jsonl");
    assert_eq!(transcripts.len(), 1);
    assert_eq!(
        inode(),
        before,
        "the process record was replaced, not rewritten"
    );
    let ours: Vec<serde_json::Value> = std::fs::read_to_string(&transcripts[0])
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let real: Vec<serde_json::Value> =
        std::fs::read_to_string(fixtures().join("real/claude/transcript-first-turn.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let first_with_cwd = |v: &[serde_json::Value]| v.iter().position(|e| e.get("cwd").is_some());
    assert!(
        first_with_cwd(&real).unwrap() > 0,
        "the recording's first lines have no cwd"
    );
    assert!(first_with_cwd(&ours).unwrap() > 0, "nor have the fake's");
    assert_eq!(ours[0]["type"], real[0]["type"]);
    let user = |v: &[serde_json::Value]| {
        v.iter()
            .find(|e| e.get("cwd").is_some())
            .map(|e| e["type"].clone())
    };
    assert_eq!(
        user(&ours),
        user(&real),
        "the first line with a cwd is the user's"
    );
    assert_eq!(files(&home.path().join("codex/sessions"), "jsonl").len(), 1);
}
