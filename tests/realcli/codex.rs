//! Codex 0.171.0 under iapeer.

use std::time::Duration;

use serde_json::json;

use crate::support::{code, stderr, stdout, wait_until};
use crate::tier::{
    answered, codex_home, git_workdir, last_decision, last_screen, processes_with, Mock,
};

const TASK_WAIT: Duration = Duration::from_secs(60);

/// Regression: Codex's folder-trust dialog has a highlighted line that
/// starts with `›` like its prompt, so it passed the ready gate, the task
/// was lost, and an Enter was pressed into the dialog blind.
#[test]
fn an_untrusted_git_folder_comes_up_and_takes_a_task_without_a_human() {
    let dir = assert_fs::TempDir::new().unwrap();
    let mock = Mock::openai(dir.path(), json!([{ "text": "hello from the mock" }]));
    let Some(home) = codex_home(&mock) else {
        return;
    };
    let cwd = git_workdir(&home, "carol");
    home.add("carol", &["--runtime", "codex"]);
    let out = home.run(&["wake", "carol", "--task", "list the files please"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    mock.wait_turn("list the files please", TASK_WAIT);
    answered(&home, "carol", "folder-trust");
    assert_eq!(
        (mock.turns(), mock.turns_with("list the files please")),
        (1, 1),
        "the task, and nothing an answer typed, reached the model: {:#?}",
        mock.requests()
    );
    let config = std::fs::read_to_string(home.path().join("codex/config.toml")).unwrap();
    assert!(
        config.contains(cwd.to_str().unwrap()) && config.contains("trusted"),
        "{config}"
    );
}

/// Regression: Codex wrote its rollout only at the first turn, held open by
/// a shared app-server outside the pane, so the session never learned its
/// conversation and a park lost it.
#[test]
fn a_park_names_the_rollout_and_the_next_wake_resumes_it() {
    let dir = assert_fs::TempDir::new().unwrap();
    let mock = Mock::openai(dir.path(), json!([{ "text": "first answer" }]));
    let Some(home) = codex_home(&mock) else {
        return;
    };
    home.add("dave", &["--runtime", "codex"]);
    let out = home.run(&["wake", "dave", "--topic", "t", "--task", "the first task"]);
    assert_eq!(
        code(&out),
        0,
        "{}{}",
        stderr(&out),
        last_screen(&home, "dave")
    );
    mock.wait_turn("the first task", TASK_WAIT);
    // Its conversation, learned from the rollout its own process holds.
    let mut rollout = None;
    wait_until(Duration::from_secs(20), "the rollout in the record", || {
        let out = home.run(&["status", "dave", "--json"]);
        rollout = home
            .session("dave")
            .and_then(|s| s["resume_ref"].as_str().map(str::to_owned));
        let _ = out;
        rollout.is_some()
    });
    let rollout = rollout.unwrap();
    let out = home.run(&["stop", "dave"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let parked = std::fs::read_to_string(home.marker("dave", "idle-reaped")).unwrap();
    assert!(
        parked.contains(&format!("conversation={rollout}")),
        "{parked}"
    );
    assert_eq!(code(&home.run(&["start", "dave"])), 0);
    let out = home.run(&["wake", "dave", "--topic", "t", "--task", "the second task"]);
    assert_eq!(
        code(&out),
        0,
        "{}{}",
        stderr(&out),
        last_screen(&home, "dave")
    );
    mock.wait_turn("the second task", TASK_WAIT);
    let woke = last_decision(&home, "dave");
    assert_eq!(woke.str("mode"), Some("resume"), "{}", woke.line);
    assert_eq!(
        home.session("dave").unwrap()["resume_ref"],
        rollout.as_str()
    );
}

/// Regression: a park killed the pane, but the turn, its tools and its
/// model calls went on in the shared app-server.
#[test]
fn a_stop_ends_the_running_tool() {
    let dir = assert_fs::TempDir::new().unwrap();
    let mock = Mock::openai(
        dir.path(),
        json!([{ "shell": ["bash", "-lc", "sleep 321.5"] }, { "text": "done" }]),
    );
    let Some(home) = codex_home(&mock) else {
        return;
    };
    home.add(
        "erin",
        &[
            "--runtime",
            "codex",
            "--",
            "--dangerously-bypass-approvals-and-sandbox",
        ],
    );
    let out = home.run(&["wake", "erin", "--task", "run the long command"]);
    assert_eq!(
        code(&out),
        0,
        "{}{}",
        stderr(&out),
        last_screen(&home, "erin")
    );
    wait_until(TASK_WAIT, "the tool's sleep to run", || {
        !processes_with("sleep 321.5").is_empty()
    });
    let turns_before = mock.turns();
    let out = home.run(&["stop", "erin"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    wait_until(Duration::from_secs(10), "the tool to be ended", || {
        processes_with("sleep 321.5").is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(mock.turns(), turns_before, "no turn after the stop");
}

/// Regression: tools ran in the shared app-server's environment, so
/// `iapeer self-fresh` from a Codex agent found no IAPEER_IDENTITY (or
/// another peer's).
#[test]
fn self_fresh_works_from_a_codex_tool() {
    let dir = assert_fs::TempDir::new().unwrap();
    let iapeer = env!("CARGO_BIN_EXE_iapeer");
    let mock = Mock::openai(
        dir.path(),
        json!([{ "shell": ["bash", "-lc", format!("{iapeer} self-fresh")] }, { "text": "bye" }]),
    );
    let Some(home) = codex_home(&mock) else {
        return;
    };
    home.add(
        "finn",
        &[
            "--runtime",
            "codex",
            "--",
            "--dangerously-bypass-approvals-and-sandbox",
        ],
    );
    let first = {
        let out = home.run(&["wake", "finn", "--task", "start over please"]);
        assert_eq!(
            code(&out),
            0,
            "{}{}",
            stderr(&out),
            last_screen(&home, "finn")
        );
        home.session("finn").unwrap()["session"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let _daemon = home.daemon();
    home.wait_line("finn", "a fresh relaunch after the self-fresh", |e| {
        e.str("ev") == Some("wake")
            && e.str("mode") == Some("fresh")
            && e.str("session") != Some(first.as_str())
    });
    assert!(
        !home
            .entries()
            .iter()
            .any(|e| e.line.contains("IAPEER_IDENTITY is not set")),
        "the tool saw its own identity"
    );
}

/// Regression: when a peer's folder changed between a park and the next
/// wake, Codex asked which directory to resume in, and the Enter iapeer
/// pressed picked the old folder while the task sat unsent.
#[test]
fn a_resume_after_the_folder_moved_does_not_stop_to_ask() {
    let dir = assert_fs::TempDir::new().unwrap();
    let mock = Mock::openai(
        dir.path(),
        json!([{ "text": "first" }, { "text": "second" }]),
    );
    let Some(home) = codex_home(&mock) else {
        return;
    };
    home.add("kim", &["--runtime", "codex"]);
    let out = home.run(&["wake", "kim", "--topic", "t", "--task", "in the old folder"]);
    assert_eq!(
        code(&out),
        0,
        "{}{}",
        stderr(&out),
        last_screen(&home, "kim")
    );
    mock.wait_turn("in the old folder", TASK_WAIT);
    wait_until(Duration::from_secs(20), "the rollout in the record", || {
        home.session("kim")
            .is_some_and(|s| s["resume_ref"].is_string())
    });
    assert_eq!(code(&home.run(&["stop", "kim"])), 0);
    assert_eq!(code(&home.run(&["start", "kim"])), 0);
    // The operator moves the peer to another folder.
    let moved = home.workdir("kim-moved");
    home.edit_peer("kim", |def| def["cwd"] = moved.to_str().unwrap().into());
    let out = home.run(&["wake", "kim", "--topic", "t", "--task", "in the new folder"]);
    assert_eq!(
        code(&out),
        0,
        "{}{}",
        stderr(&out),
        last_screen(&home, "kim")
    );
    mock.wait_turn("in the new folder", TASK_WAIT);
    let woke = last_decision(&home, "kim");
    assert_eq!(woke.str("mode"), Some("resume"), "{}", woke.line);
}

/// The model answers with Codex's usage limit: the real CLI names the time
/// it lifts (to the minute, local), iapeer reads it, holds the session
/// rather than parking it as idle, and never counts it a death.
#[test]
fn a_usage_limit_holds_the_session_until_the_time_codex_names() {
    let dir = assert_fs::TempDir::new().unwrap();
    let mock = Mock::openai(dir.path(), json!([{ "usage_limit": 3600 }]));
    let Some(mut home) = codex_home(&mock) else {
        return;
    };
    home.set("IAPEER_TICK_SECS", "1");
    git_workdir(&home, "lim");
    home.add("lim", &["--runtime", "codex"]);
    home.edit_peer("lim", |def| def["idle_secs"] = json!(2));
    let _d = home.daemon();
    let asked = iapeer::core::clock::now_ms();
    let out = home.run(&["wake", "lim", "--task", "do the limited thing"]);
    assert_eq!(
        code(&out),
        0,
        "{}{}{}",
        stdout(&out),
        stderr(&out),
        last_screen(&home, "lim")
    );
    let limited = home.wait_line("lim", "the limit read off the screen", |e| {
        e.str("action") == Some("limited")
    });
    let until = iapeer::core::clock::parse_rfc3339(limited.str("retry_after").unwrap()).unwrap();
    let want = asked + 3_600_000;
    assert!(
        (until - want).abs() <= 120_000,
        "Codex said about an hour from now: {}",
        limited.line
    );
    // What it is doing reads `limited`, until the time Codex named.
    let activity = home.wait_line("lim", "the activity", |e| {
        e.str("ev") == Some("activity") && e.str("state") == Some("limited")
    });
    assert_eq!(activity.str("retry_after"), limited.str("retry_after"));
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        home.has("lim", "session"),
        "held, not parked: {}",
        last_screen(&home, "lim")
    );
    assert_eq!(
        home.count("lim", |e| e.str("action") == Some("reaped-idle")),
        0
    );
    assert_eq!(
        home.count("lim", |e| e.str("action") == Some("reaped-gone")),
        0
    );
}

/// Codex asks before a command that leaves its sandbox: its rollout says
/// only "in a turn", so the screen is what says it waits. The hook is told
/// once; once approved, the turn goes on and ends, and reads idle.
#[test]
fn an_approval_prompt_reads_waiting_and_tells_the_hook_once() {
    let dir = assert_fs::TempDir::new().unwrap();
    let mock = Mock::openai(
        dir.path(),
        json!([
            { "shell": ["bash", "-lc", "touch ./approved-file"], "approval": true },
            { "text": "approved and done" }
        ]),
    );
    let Some(mut home) = codex_home(&mock) else {
        return;
    };
    let told = crate::tier::hook_to_file(&mut home);
    git_workdir(&home, "appr");
    home.add("appr", &["--runtime", "codex", "--", "-a", "on-request"]);
    let _d = home.daemon();
    let out = home.run(&["wake", "appr", "--task", "run it past the sandbox"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let waiting = home.wait_line("appr", "waiting on the approval", |e| {
        e.str("ev") == Some("activity") && e.str("state") == Some("waiting")
    });
    assert_eq!(
        waiting.str("reason"),
        Some("Would you like to run the following command?"),
        "{}",
        last_screen(&home, "appr")
    );
    wait_until(Duration::from_secs(10), "the hook", || {
        crate::tier::told(&told, "appr waiting") == 1
    });
    home.press("appr", &["y"]);
    mock.wait_turn("", TASK_WAIT);
    home.wait_line("appr", "idle once approved and done", |e| {
        e.str("ev") == Some("activity")
            && e.str("state") == Some("idle")
            && e.ts_ms() > waiting.ts_ms()
    });
    assert!(home.workdir("appr").join("approved-file").exists());
    assert_eq!(crate::tier::told(&told, "appr waiting"), 1, "told once");
}

/// A task sent while Codex runs a command waits in the queue and reaches
/// the model once, after the turn.
#[test]
fn a_task_sent_mid_turn_waits_for_the_turn_and_reaches_the_model_once() {
    let dir = assert_fs::TempDir::new().unwrap();
    let mock = Mock::openai(
        dir.path(),
        json!([
            { "shell": ["bash", "-lc", "sleep 7.75"] },
            { "text": "first done" },
            { "text": "second done" }
        ]),
    );
    let Some(mut home) = codex_home(&mock) else {
        return;
    };
    home.set("IAPEER_TICK_SECS", "1");
    git_workdir(&home, "rory");
    home.add(
        "rory",
        &[
            "--runtime",
            "codex",
            "--",
            "--dangerously-bypass-approvals-and-sandbox",
        ],
    );
    let _daemon = home.daemon();
    let out = home.run(&["wake", "rory", "--task", "the first task"]);
    assert_eq!(
        code(&out),
        0,
        "{}{}",
        stderr(&out),
        last_screen(&home, "rory")
    );
    wait_until(TASK_WAIT, "the command's sleep", || {
        !processes_with("sleep 7.75").is_empty()
    });
    let out = home.run(&["wake", "rory", "--task", "the second task"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("queued"), "{}", stdout(&out));
    assert_eq!(mock.turns_with("the second task"), 0, "typed mid-turn");
    mock.wait_turn("the second task", TASK_WAIT);
    assert!(
        processes_with("sleep 7.75").is_empty(),
        "delivered while the command still ran"
    );
    home.wait_line("rory", "the delivery", |e| {
        e.str("ev") == Some("task") && e.str("outcome") == Some("delivered")
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(mock.turns_with("the second task"), 1, "once");
}
