//! `add`, `rm`, `ls`, `stop`/`start`/`reset`, `self-fresh`, `status`,
//! `explain` from the outside.

use std::time::Duration;

use crate::support::{code, stderr, stdout, wait_until, Home};

#[test]
fn add_ls_and_rm_round_trip() {
    let home = Home::new();
    home.add("alice", &["--policy", "always", "--conversational"]);
    home.add("bob", &["--runtime", "shell", "--", "sleep", "60"]);
    let out = home.run(&["ls", "--json"]);
    let peers: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(peers.as_array().unwrap().len(), 2);
    assert_eq!(peers[0]["name"], "alice");
    assert_eq!(peers[0]["policy"], "always");
    assert_eq!(peers[0]["conversational"], true);
    assert_eq!(peers[1]["command"], serde_json::json!(["sleep", "60"]));
    let text = stdout(&home.run(&["ls"]));
    assert!(text.starts_with("NAME"), "{text}");

    let again = home.run(&["add", "alice", "--cwd", "/tmp"]);
    assert_eq!(code(&again), 2);
    assert!(stderr(&again).contains("already defined"));

    assert_eq!(code(&home.run(&["rm", "bob"])), 0);
    assert!(!home.path().join("peers/bob.json").exists());
    assert_eq!(code(&home.run(&["rm", "bob"])), 2);
}

#[test]
fn bad_names_and_bad_definitions_are_exit_2_and_touch_nothing() {
    let home = Home::new();
    for bad in ["../x", "a/b", ".hidden", "a.b", "", &"x".repeat(65)] {
        let out = home.run(&["add", bad, "--cwd", "/tmp"]);
        assert_eq!(code(&out), 2, "{bad:?}");
        let out = home.run(&["wake", bad]);
        assert_eq!(code(&out), 2, "{bad:?}");
    }
    assert!(std::fs::read_dir(home.path().join("peers")).map_or(true, |d| d.count() == 0));
    let out = home.run(&["add", "s", "--cwd", "/tmp", "--runtime", "shell"]);
    assert_eq!(code(&out), 2, "a shell peer needs a command");

    std::fs::create_dir_all(home.path().join("peers")).unwrap();
    std::fs::write(
        home.path().join("peers/broken.json"),
        "{\"name\": \"broken\", ",
    )
    .unwrap();
    let out = home.run(&["wake", "broken"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("peers/broken.json"),
        "{}",
        stderr(&out)
    );
    assert!(home.entries().is_empty());
}

#[test]
fn rm_refuses_a_live_session_unless_forced_and_leaves_nothing_to_inherit() {
    let home = Home::new();
    home.add("alice", &[]);
    assert_eq!(code(&home.run(&["wake", "alice", "--topic", "t"])), 0);
    let out = home.run(&["rm", "alice"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert!(home.has("alice", "session"));
    assert_eq!(code(&home.run(&["rm", "alice", "--force"])), 0);
    let left: Vec<String> = std::fs::read_dir(home.lifecycle())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("alice.") && n != "alice.lock")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(!home.path().join("run/alice.sock").exists());
    // A new peer of the same name starts from nothing.
    home.add("alice", &[]);
    let out = home.run(&["explain", "alice", "--json"]);
    let e: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(e["cause"], "first-wake", "no history is inherited");
}

#[test]
fn self_fresh_from_inside_ends_the_session_with_an_eager_marker() {
    let home = Home::new();
    home.add("alice", &[]);
    assert_eq!(code(&home.run(&["wake", "alice"])), 0);
    let pid = home.session("alice").unwrap()["pane_pid"].as_i64().unwrap() as i32;
    // The fake agent runs `iapeer self-fresh` as its shell tool would.
    assert_eq!(
        code(&home.run(&["wake", "alice", "--task", "self-fresh"])),
        0
    );
    wait_until(Duration::from_secs(10), "the agent to end", || {
        iapeer::os::process::liveness(pid, None) == iapeer::core::session::Liveness::Dead
    });
    assert!(home.has("alice", "new-eager"));
    let e: serde_json::Value =
        serde_json::from_str(&stdout(&home.run(&["explain", "alice", "--json"]))).unwrap();
    assert_eq!(e["cause"], "needs-eager-fresh");
    // Without a daemon, the next wake settles the death and comes up fresh.
    let out = home.run(&["wake", "alice", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(r["cause"], "needs-eager-fresh");
    assert!(!home.has("alice", "new-eager"));
    let sup = home.lines("alice", "supervise");
    assert_eq!(sup.len(), 1, "no crashed-while-working for a requested end");
    assert_eq!(sup[0].str("action"), Some("self-fresh"));
    assert_eq!(sup[0].str("outcome"), Some("relaunching"));
    assert_eq!(
        std::fs::read_to_string(home.marker("alice", "deaths")).unwrap(),
        "[]\n",
        "a self-fresh is not a death"
    );
}

#[test]
fn self_fresh_outside_a_session_refuses() {
    let home = Home::new();
    home.add("alice", &[]);
    let out = home.run(&["self-fresh"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("IAPEER_IDENTITY"), "{}", stderr(&out));
    let out = home
        .iapeer()
        .env("IAPEER_IDENTITY", "alice")
        .arg("self-fresh")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(code(&home.run(&["wake", "alice"])), 0);
    let out = home
        .iapeer()
        .env("IAPEER_IDENTITY", "alice")
        .arg("self-fresh")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("not inside"), "{}", stderr(&out));
    assert!(!home.has("alice", "new-eager"));
}

#[test]
fn status_reports_states() {
    let home = Home::new();
    home.add("up", &[]);
    home.add("halted", &[]);
    home.add("napping", &[]);
    home.run(&["wake", "up"]);
    home.run(&["stop", "halted"]);
    home.run(&["wake", "napping"]);
    home.run(&["stop", "napping"]);
    home.run(&["start", "napping"]);
    let doc: serde_json::Value =
        serde_json::from_str(&stdout(&home.run(&["status", "--json"]))).unwrap();
    let state = |n: &str| {
        doc["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap()["lifecycle_state"]
            .clone()
    };
    assert_eq!(state("up"), "alive");
    assert_eq!(state("halted"), "stopped");
    assert_eq!(state("napping"), "parked");
    assert_eq!(doc["run"], home.path().join("run").display().to_string());
    let text = stdout(&home.run(&["status"]));
    assert!(text.contains("alive") && text.contains("parked"), "{text}");
}

/// An initial prompt is typed in as a task is, so it is held to the same
/// rules: a control character (^C, or an escape that would end the
/// bracketed paste early) is refused by `add`, `set` and in a hand-written
/// definition, and nothing is written or typed.
#[test]
fn an_initial_prompt_with_control_characters_is_refused_everywhere() {
    let home = Home::new();
    for bad in ["stop\u{3}now", "end\u{1b}[201~paste"] {
        let out = home.run(&["add", "p", "--cwd", "/tmp", "--initial-prompt", bad]);
        assert_eq!(code(&out), 2, "add {bad:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("control character"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!home.path().join("peers/p.json").exists());
    home.add("p", &[]);
    let out = home.run(&["set", "p", "--initial-prompt", "x\u{3}"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    home.edit_peer("p", |def| def["initial_prompt"] = "by hand\u{3}".into());
    let out = home.run(&["wake", "p"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("initial_prompt"), "{}", stderr(&out));
    assert!(!home.has("p", "session"), "nothing launched");
    // Newlines and tabs are fine, as in a task.
    home.edit_peer("p", |def| def["initial_prompt"] = serde_json::Value::Null);
    let out = home.run(&["set", "p", "--initial-prompt", "line one\n\tline two"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}
