//! Claude Code 2.1.197 under iapeer.

use std::time::Duration;

use serde_json::json;

use crate::support::{code, stderr, stdout, wait_until};
use crate::tier::{answered, claude_home, claude_trusts, last_screen, processes_with, Mock};

const TASK_WAIT: Duration = Duration::from_secs(60);

/// A new user's first wake: an untrusted folder, a custom API key, nobody
/// at the keyboard. Both dialogs are answered once each, logged, and the
/// task reaches the model.
#[test]
fn an_untrusted_new_folder_comes_up_and_takes_a_task_without_a_human() {
    let dir = assert_fs::TempDir::new().unwrap();
    let mock = Mock::anthropic(dir.path(), json!([{ "text": "hello from the mock" }]));
    let Some(home) = claude_home(&mock) else {
        return;
    };
    home.add("alice", &[]);
    let out = home.run(&["wake", "alice", "--task", "say hello to the operator"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    mock.wait_turn("say hello to the operator", TASK_WAIT);

    for dialog in ["folder-trust", "api-key"] {
        answered(&home, "alice", dialog);
    }
    assert_eq!(
        (mock.turns(), mock.turns_with("say hello to the operator")),
        (1, 1),
        "the task, and nothing an answer typed, reached the model: {:#?}",
        mock.requests()
    );
    let answered_trust = home
        .lines("alice", "wake")
        .into_iter()
        .find(|e| e.str("dialog") == Some("folder-trust"))
        .unwrap();
    assert!(
        answered_trust
            .str("reason")
            .is_some_and(|r| r.contains(".claude.json")),
        "the line says what answering wrote into Claude's config"
    );
    assert!(claude_trusts(&home, &home.workdir("alice")));
    assert_eq!(home.lines("alice", "ready").len(), 1);
}

/// Regression: pasting a task and pressing Enter a moment later lost the
/// Enter when Claude rendered the paste after it (right after its start):
/// the task sat typed but unsent while iapeer logged `delivered`. And a
/// finished first turn, whose transcript sometimes ends on the user's
/// entry, was read as mid-turn.
#[test]
fn twenty_fresh_wakes_lose_no_enter() {
    let dir = assert_fs::TempDir::new().unwrap();
    let mock = Mock::anthropic(dir.path(), json!([]));
    let Some(home) = claude_home(&mock) else {
        return;
    };
    home.add("gail", &[]);
    // Under pressure, as in the field: the machine's cores kept busy.
    let _load = crate::tier::CpuLoad::start(2);
    for i in 0..20 {
        let task = format!("enter check number {i}");
        let out = home.run(&["wake", "gail", "--fresh", "--task", &task]);
        assert_eq!(code(&out), 0, "wake {i}: {}", stderr(&out));
        mock.wait_turn(&task, TASK_WAIT);
        assert_eq!(mock.turns_with(&task), 1, "task {i} arrived once");
        // A finished first turn reads as over (its transcript may end on
        // the user's entry; Claude's own record says idle).
        let out = home.run(&["wait", "gail", "--for", "idle", "--timeout", "15s"]);
        assert_eq!(code(&out), 0, "first turn {i} still read as busy");
        assert_eq!(code(&home.run(&["stop", "gail"])), 0);
        assert_eq!(code(&home.run(&["start", "gail"])), 0);
    }
    let unconfirmed = home.count("gail", |e| e.str("outcome") == Some("delivery-unconfirmed"));
    assert_eq!(unconfirmed, 0);
}

/// A Claude peer that runs Bash tools without asking (as root it must be
/// told it is sandboxed to accept that mode).
fn tool_runner(home: &mut crate::support::Home, name: &str, idle_secs: u64) {
    home.set("IS_SANDBOX", "1");
    home.add(name, &["--", "--dangerously-skip-permissions"]);
    home.edit_peer(name, |def| def["idle_secs"] = json!(idle_secs));
}

/// Regression: Claude writes nothing to its transcript while a tool runs,
/// so a long Bash call read as idle and the agent was parked mid-turn (and
/// the tool reported `Exit code 137`).
#[test]
fn a_long_tool_call_is_not_parked_as_idle() {
    let dir = assert_fs::TempDir::new().unwrap();
    let mock = Mock::anthropic(
        dir.path(),
        json!([
            { "tool": "Bash", "input": { "command": "sleep 19.75", "description": "wait" } },
            { "text": "the wait is over" }
        ]),
    );
    let Some(mut home) = claude_home(&mock) else {
        return;
    };
    home.set("IAPEER_TICK_SECS", "1");
    tool_runner(&mut home, "hank", 2);
    let _daemon = home.daemon();
    let out = home.run(&["wake", "hank", "--task", "wait for a while"]);
    assert_eq!(
        code(&out),
        0,
        "{}{}",
        stderr(&out),
        last_screen(&home, "hank")
    );
    wait_until(TASK_WAIT, "the tool's sleep", || {
        !processes_with("sleep 19.75").is_empty()
    });
    // Its record says busy: what it is doing reads working (the call is
    // long enough for that to be read on a loaded machine, where the
    // session reaches the reader seconds after the wake).
    home.wait_line("hank", "working while the tool runs", |e| {
        e.str("ev") == Some("activity") && e.str("state") == Some("working")
    });
    // Its process record, which it rewrites in place (the fake does too).
    let pid = home.session("hank").unwrap()["pane_pid"].as_i64().unwrap();
    let record = home.path().join(format!("claude/sessions/{pid}.json"));
    let inode = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&record).map(|m| m.ino()).ok()
    };
    let busy_inode = inode().expect("its process record");
    // Well past the idle limit and several ticks, the tool still runs.
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        !processes_with("sleep 19.75").is_empty(),
        "the tool was ended"
    );
    let parked = |e: &iapeer::core::record::Entry| e.str("action") == Some("reaped-idle");
    let mid_turn: Vec<String> = home
        .lines("hank", "supervise")
        .into_iter()
        .filter(parked)
        .map(|e| e.line)
        .collect();
    assert!(mid_turn.is_empty(), "parked mid-turn: {mid_turn:?}");
    // Once the turn is over, idle is idle, and its own record said so.
    mock.wait_turn("", TASK_WAIT);
    wait_until(TASK_WAIT, "its record to say idle", || {
        std::fs::read_to_string(&record).is_ok_and(|t| t.contains(r#""status":"idle""#))
    });
    assert_eq!(
        inode(),
        Some(busy_inode),
        "the record was replaced, not rewritten"
    );
    let park = home.wait_line("hank", "an idle park after the turn", |e| parked(e));
    assert!(
        park.str("reason")
            .is_some_and(|r| r.ends_with("its runtime's own record says no turn is running")),
        "{}",
        park.line
    );
}

/// Regression: Claude's Bash tool runs in a session of its own, so a stop
/// that signalled the pane's process group left it running, reparented to
/// init.
#[test]
fn a_stop_ends_the_running_bash_tool() {
    let dir = assert_fs::TempDir::new().unwrap();
    let mock = Mock::anthropic(
        dir.path(),
        json!([{ "tool": "Bash", "input": { "command": "sleep 301.25", "description": "wait" } }]),
    );
    let Some(mut home) = claude_home(&mock) else {
        return;
    };
    tool_runner(&mut home, "ivy", 3600);
    let out = home.run(&["wake", "ivy", "--task", "wait a long time"]);
    assert_eq!(
        code(&out),
        0,
        "{}{}",
        stderr(&out),
        last_screen(&home, "ivy")
    );
    wait_until(TASK_WAIT, "the tool's sleep", || {
        !processes_with("sleep 301.25").is_empty()
    });
    assert_eq!(code(&home.run(&["stop", "ivy"])), 0);
    wait_until(Duration::from_secs(10), "the tool to be ended", || {
        processes_with("sleep 301.25").is_empty()
    });
}

/// Regression: Claude writes no transcript before the first prompt, so
/// after a self-fresh the folder's newest transcript was the abandoned
/// one: a park named it and the next wake resumed it.
#[test]
fn after_a_self_fresh_a_park_does_not_name_the_abandoned_conversation() {
    let dir = assert_fs::TempDir::new().unwrap();
    let iapeer = env!("CARGO_BIN_EXE_iapeer");
    let mock = Mock::anthropic(
        dir.path(),
        json!([
            { "tool": "Bash", "input": { "command": format!("{iapeer} self-fresh"), "description": "start over" } },
            { "text": "see you" }
        ]),
    );
    let Some(mut home) = claude_home(&mock) else {
        return;
    };
    tool_runner(&mut home, "jack", 3600);
    let out = home.run(&[
        "wake",
        "jack",
        "--topic",
        "t",
        "--task",
        "please start over",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let abandoned = home.session("jack").unwrap()["resume_ref"]
        .as_str()
        .unwrap()
        .to_owned();
    let _daemon = home.daemon();
    let fresh = home.wait_line("jack", "the fresh relaunch", |e| {
        e.str("ev") == Some("ready") && e.str("cause") == Some("needs-eager-fresh")
    });
    let relaunched = fresh.str("session").unwrap().to_owned();
    wait_until(Duration::from_secs(10), "the relaunch's record", || {
        home.session("jack")
            .is_some_and(|s| s["session"] == relaunched.as_str())
    });
    assert_eq!(code(&home.run(&["stop", "jack"])), 0);
    let parked = std::fs::read_to_string(home.marker("jack", "idle-reaped")).unwrap();
    assert!(
        !parked.contains(&abandoned),
        "the park names the abandoned conversation: {parked}"
    );
}

/// Regression: after `/clear` the new transcript ends on the `/clear`
/// entry itself, so the member read as mid-turn and `dispatch` called it
/// busy for minutes (exit 7) with its one member idle.
#[test]
fn after_clear_a_member_is_free_for_dispatch() {
    let dir = assert_fs::TempDir::new().unwrap();
    let mock = Mock::anthropic(dir.path(), json!([]));
    let Some(home) = claude_home(&mock) else {
        return;
    };
    let cwd = home.workdir("pool");
    let out = home.run(&[
        "pool",
        "add",
        "crew",
        "--prefix",
        "crew-",
        "--start-index",
        "1",
        "--max",
        "1",
        "--quiet-secs",
        "1",
        "--cwd",
        cwd.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = home.run(&["dispatch", "crew", "--task", "the first job"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    mock.wait_turn("the first job", TASK_WAIT);
    let out = home.run(&["wake", "crew-1", "--task", "/clear"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Its one member is idle after the /clear: the next job goes to it.
    let mut last = None;
    wait_until(
        Duration::from_secs(20),
        "a dispatch to the idle member",
        || {
            // --no-queue: busy is exit 7 (no daemon here would deliver
            // a queued job); free is a delivery.
            let out = home.run(&["dispatch", "crew", "--task", "the second job", "--no-queue"]);
            last = Some((code(&out), stderr(&out)));
            code(&out) == 0
        },
    );
    mock.wait_turn("the second job", TASK_WAIT);
    let _ = last;
}

/// The model answers with Claude's usage limit: the real CLI shows it and
/// sits at its prompt. iapeer reads the time it names, holds the session
/// rather than parking it as idle, and once the limit lifts gives it its
/// task again, which reaches the model.
#[test]
fn a_usage_limit_holds_the_session_and_the_task_goes_again_when_it_lifts() {
    let dir = assert_fs::TempDir::new().unwrap();
    let lifts = iapeer::core::clock::now_ms() / 1000 + 25;
    let mock = Mock::anthropic(
        dir.path(),
        json!([
            // As the service answers: no retry (Claude retries a plain
            // 429 on its own, and then it is not limited).
            {"error": 429, "type": "rate_limit_error",
             "message": format!("Claude AI usage limit reached|{lifts}"),
             "headers": {"x-should-retry": "false"}},
            {"text": "back at work"}
        ]),
    );
    let Some(mut home) = claude_home(&mock) else {
        return;
    };
    home.set("IAPEER_TICK_SECS", "1");
    home.add("lim", &[]);
    home.edit_peer("lim", |def| def["idle_secs"] = json!(2));
    let _d = home.daemon();
    let out = home.run(&["wake", "lim", "--task", "do the limited thing"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let limited = home.wait_line("lim", "the limit read off the screen", |e| {
        e.str("action") == Some("limited")
    });
    assert_eq!(
        limited.str("retry_after"),
        Some(iapeer::core::clock::format_ms(lifts * 1000).as_str()),
        "the time Claude named: {}",
        limited.line
    );
    assert!(home.has("lim", "session"), "held, not parked");
    let activity = home.wait_line("lim", "the activity", |e| {
        e.str("ev") == Some("activity") && e.str("state") == Some("limited")
    });
    assert_eq!(activity.str("retry_after"), limited.str("retry_after"));
    wait_until(
        Duration::from_secs(60),
        "the task again, to the model",
        || mock.turns_with("do the limited thing") >= 2,
    );
    let again = home.wait_line("lim", "the delivery line", |e| {
        e.str("reason")
            .is_some_and(|r| r.contains("usage limit lifted"))
    });
    assert!(again.ts_ms().unwrap() >= lifts * 1000);
    assert_eq!(
        home.count("lim", |e| e.str("action") == Some("reaped-gone")),
        0
    );
}

/// `iapeer interrupt` presses Claude's Esc: a running Bash tool is ended
/// and the turn is over, the session still up.
#[test]
fn interrupt_stops_the_running_turn_and_the_session_goes_on() {
    let dir = assert_fs::TempDir::new().unwrap();
    let mock = Mock::anthropic(
        dir.path(),
        json!([
            { "tool": "Bash", "input": { "command": "sleep 41.5", "description": "wait" } },
            { "text": "stopped as asked" }
        ]),
    );
    let Some(mut home) = claude_home(&mock) else {
        return;
    };
    tool_runner(&mut home, "ivy", 3600);
    let out = home.run(&["wake", "ivy", "--task", "wait for a long while"]);
    assert_eq!(
        code(&out),
        0,
        "{}{}",
        stderr(&out),
        last_screen(&home, "ivy")
    );
    wait_until(TASK_WAIT, "the tool's sleep", || {
        !processes_with("sleep 41.5").is_empty()
    });
    let out = home.run(&["interrupt", "ivy"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    wait_until(Duration::from_secs(15), "the tool ended", || {
        processes_with("sleep 41.5").is_empty()
    });
    let out = home.run(&["wait", "ivy", "--for", "idle", "--timeout", "15s"]);
    assert_eq!(
        code(&out),
        0,
        "the turn is over: {}",
        last_screen(&home, "ivy")
    );
    assert!(home.has("ivy", "session"), "the session goes on");
    // As captured in fixtures/real/claude/interrupted-tool.txt: drawn a
    // moment after the turn is recorded over.
    let notice = "Interrupted · What should Claude do instead?";
    let mut screen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !screen.contains(notice) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        screen = stdout(&home.run(&["peek", "ivy", "-n", "30"]));
    }
    assert!(screen.contains(notice), "{screen}");
}

/// A project with a new MCP server in its `.mcp.json`: Claude asks before
/// starting it. iapeer answers "continue without", says so, and the task
/// reaches the model; the server is left for the operator to allow.
#[test]
fn a_new_mcp_server_is_left_off_and_the_boot_goes_on() {
    let dir = assert_fs::TempDir::new().unwrap();
    let mock = Mock::anthropic(dir.path(), json!([{ "text": "hello" }]));
    let Some(home) = claude_home(&mock) else {
        return;
    };
    home.add("mia", &[]);
    std::fs::write(
        home.workdir("mia").join(".mcp.json"),
        json!({"mcpServers": {"demo": {"command": "true", "args": []}}}).to_string(),
    )
    .unwrap();
    let out = home.run(&["wake", "mia", "--task", "hello with mcp around"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    mock.wait_turn("hello with mcp around", TASK_WAIT);
    let answers = answered(&home, "mia", "mcp-server");
    assert!(
        answers[0].str("reason").is_some_and(|r| r.contains("off")),
        "{}",
        answers[0].line
    );
    assert_eq!(
        (mock.turns(), mock.turns_with("hello with mcp around")),
        (1, 1),
        "the task, and nothing an answer typed, reached the model: {:#?}",
        mock.requests()
    );
}

/// Claude stops on a permission prompt (its default mode): its process
/// record says it is waiting, and for what. The hook is told once; once
/// allowed, the tool runs, the turn ends, and it reads idle.
#[test]
fn a_permission_prompt_reads_waiting_and_tells_the_hook_once() {
    let dir = assert_fs::TempDir::new().unwrap();
    let mock = Mock::anthropic(
        dir.path(),
        json!([
            // The command of fixtures/real/claude/permission-prompt.txt.
            { "tool": "Bash", "input": { "command": "echo ID=$IAPEER_IDENTITY && sleep 2", "description": "Print identity" } },
            { "text": "allowed and done" }
        ]),
    );
    let Some(mut home) = claude_home(&mock) else {
        return;
    };
    let told = crate::tier::hook_to_file(&mut home);
    home.add("perm", &[]);
    let _d = home.daemon();
    let out = home.run(&["wake", "perm", "--task", "run a command"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let waiting = home.wait_line("perm", "waiting on the prompt", |e| {
        e.str("ev") == Some("activity") && e.str("state") == Some("waiting")
    });
    assert_eq!(
        waiting.str("reason"),
        Some("permission prompt"),
        "{}",
        last_screen(&home, "perm")
    );
    wait_until(Duration::from_secs(10), "the hook", || {
        crate::tier::told(&told, "perm waiting") == 1
    });
    home.press("perm", &["1"]);
    mock.wait_turn("", TASK_WAIT);
    home.wait_line("perm", "idle once allowed and done", |e| {
        e.str("ev") == Some("activity")
            && e.str("state") == Some("idle")
            && e.ts_ms() > waiting.ts_ms()
    });
    assert_eq!(crate::tier::told(&told, "perm waiting"), 1, "told once");
}

/// Regression: a task sent while a tool ran was typed into the running
/// turn (with the real Claude it could be lost). It waits in the queue
/// now, and reaches the model once, after the turn.
#[test]
fn a_task_sent_mid_turn_waits_for_the_turn_and_reaches_the_model_once() {
    let dir = assert_fs::TempDir::new().unwrap();
    let mock = Mock::anthropic(
        dir.path(),
        json!([
            { "tool": "Bash", "input": { "command": "sleep 7.25", "description": "wait" } },
            { "text": "first done" },
            { "text": "second done" }
        ]),
    );
    let Some(mut home) = claude_home(&mock) else {
        return;
    };
    home.set("IAPEER_TICK_SECS", "1");
    tool_runner(&mut home, "quinn", 3600);
    let _daemon = home.daemon();
    let out = home.run(&["wake", "quinn", "--task", "the first task"]);
    assert_eq!(
        code(&out),
        0,
        "{}{}",
        stderr(&out),
        last_screen(&home, "quinn")
    );
    wait_until(TASK_WAIT, "the tool's sleep", || {
        !processes_with("sleep 7.25").is_empty()
    });
    let out = home.run(&["wake", "quinn", "--task", "the second task"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("queued"), "{}", stdout(&out));
    assert_eq!(mock.turns_with("the second task"), 0, "typed mid-turn");
    mock.wait_turn("the second task", TASK_WAIT);
    assert!(
        processes_with("sleep 7.25").is_empty(),
        "delivered while the tool still ran"
    );
    home.wait_line("quinn", "the delivery", |e| {
        e.str("ev") == Some("task") && e.str("outcome") == Some("delivered")
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(mock.turns_with("the second task"), 1, "once");
}

/// Three tasks queued by a script while the peer sleeps reach the real
/// Claude in order, one per turn, after one wake.
#[test]
fn three_tasks_queued_while_asleep_arrive_in_order_after_one_wake() {
    let dir = assert_fs::TempDir::new().unwrap();
    let mock = Mock::anthropic(dir.path(), json!([]));
    let Some(mut home) = claude_home(&mock) else {
        return;
    };
    home.set("IAPEER_TICK_SECS", "1");
    home.add("tess", &[]);
    let queue = home.path().join("state/queue/tess");
    std::fs::create_dir_all(&queue).unwrap();
    for (i, task) in ["queued task one", "queued task two", "queued task three"]
        .iter()
        .enumerate()
    {
        let tmp = home.path().join(format!("t{i}"));
        std::fs::write(&tmp, task).unwrap();
        std::fs::rename(&tmp, queue.join(format!("{i}-script.task"))).unwrap();
    }
    let _daemon = home.daemon();
    let out = home.run(&["wake", "tess"]);
    assert_eq!(
        code(&out),
        0,
        "{}{}",
        stderr(&out),
        last_screen(&home, "tess")
    );
    mock.wait_turn("queued task three", Duration::from_secs(90));
    let order: Vec<String> = mock
        .requests()
        .iter()
        .filter(|r| r["side"] != true)
        .filter_map(|r| r["last_user_text"].as_str().map(str::to_owned))
        .filter(|t| t.starts_with("queued task"))
        .collect();
    assert_eq!(
        order,
        ["queued task one", "queued task two", "queued task three"],
        "in order, once each"
    );
}
