//! The operator's verbs (DESIGN §9): several peers at once, `set`,
//! `wait`, `peek`, `attach`, and `log` read the way a person asks.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{code, stderr, stdout, Home};

fn shell(home: &Home, name: &str) {
    home.add(name, &["--runtime", "shell", "--", "sleep", "100000"]);
}

#[test]
fn stop_and_start_act_on_several_names_all_or_a_pool_and_report_each_failure() {
    let home = Home::new();
    for n in ["a", "b", "c"] {
        shell(&home, n);
        assert_eq!(code(&home.run(&["wake", n])), 0);
    }
    let out = home.run(&["stop", "a", "nobody", "b"]);
    assert_eq!(code(&out), 2, "the first failure's code");
    assert!(stderr(&out).contains("nobody"), "{}", stderr(&out));
    assert!(!home.has("a", "session") && !home.has("b", "session"));
    assert!(home.has("c", "session"), "only the names given");
    assert_eq!(code(&home.run(&["stop", "--all"])), 0);
    assert!(["a", "b", "c"].iter().all(|n| home.has(n, "stopped")));
    assert_eq!(code(&home.run(&["start", "--all"])), 0);
    assert!(["a", "b", "c"].iter().all(|n| !home.has(n, "stopped")));
    // A pool's members.
    let cwd = home.workdir("p");
    let out = home.run(&[
        "pool",
        "add",
        "p",
        "--prefix",
        "p-",
        "--max",
        "2",
        "--cwd",
        cwd.to_str().unwrap(),
        "--runtime",
        "shell",
        "--",
        "sleep",
        "100000",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(code(&home.run(&["stop", "--pool", "p"])), 0);
    assert!(home.has("p-0", "stopped") && home.has("p-1", "stopped"));
    assert!(!home.has("a", "stopped"));
    let out = home.run(&["stop"]);
    assert_eq!(code(&out), 2, "nothing named: usage");
}

#[test]
fn set_changes_a_definition_atomically_and_the_daemon_applies_it_at_once() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "30");
    shell(&home, "alice");
    let _d = home.daemon();
    let file = home.path().join("peers/alice.json");
    let before = std::fs::read_to_string(&file).unwrap();
    // Validated as `add` would: nothing written on a refusal.
    let out = home.run(&["set", "alice", "--idle-secs", "60", "--unset", "command"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    // An `always` policy: the daemon brings it up without being asked.
    let out = home.run(&["set", "alice", "--policy", "always", "--idle-secs", "60"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let peer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(peer["policy"], "always");
    assert_eq!(peer["idle_secs"], 60);
    home.wait_line("alice", "the daemon's launch", |e| {
        e.str("ev") == Some("ready") && e.str("source") == Some("daemon")
    });
    assert!(stdout(&home.run(&["set", "alice", "--idle-secs", "60"])).contains("unchanged"));
}

#[test]
fn wait_returns_when_the_state_is_reached_and_exits_8_on_timeout() {
    let home = Home::new();
    home.add("alice", &[]);
    let out = home.run(&["wait", "alice", "--for", "ended", "--timeout", "5s"]);
    assert_eq!(code(&out), 0, "not running: ended already");
    let t = Instant::now();
    let out = home.run(&["wait", "alice", "--for", "ready", "--timeout", "1s"]);
    assert_eq!(code(&out), 8, "{}", stderr(&out));
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(code(&home.run(&["wake", "alice"])), 0);
    assert_eq!(
        code(&home.run(&["wait", "alice", "--for", "ready", "--timeout", "5s"])),
        0
    );
    // Busy for three seconds, then idle.
    assert_eq!(code(&home.run(&["wake", "alice", "--task", "work 3"])), 0);
    let t = Instant::now();
    let out = home.run(&["wait", "alice", "--for", "idle", "--timeout", "20s"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "it waited for the turn"
    );
    assert_eq!(
        code(&home.run(&["wait", "alice", "--for", "queue-empty", "--timeout", "2s"])),
        0
    );
    // Ended, from another process.
    let mut waiter = home
        .iapeer()
        .args(["wait", "alice", "--for", "ended", "--timeout", "20s"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(code(&home.run(&["stop", "alice"])), 0);
    assert_eq!(waiter.wait().unwrap().code(), Some(0));
}

#[test]
fn peek_shows_the_screen_and_attach_read_only_cannot_type_into_it() {
    let home = Home::new();
    home.add("alice", &[]);
    assert_eq!(
        code(&home.run(&["wake", "alice", "--task", "hello there"])),
        0
    );
    let out = home.run(&["peek", "alice", "-n", "20"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("hello there"), "{}", stdout(&out));
    let out = home.run(&["peek", "nobody"]);
    assert_eq!(code(&out), 2);

    // A real tmux client, in a terminal of its own (an outer tmux).
    let outer = home.path().join("outer.sock");
    struct Outer(std::path::PathBuf);
    impl Drop for Outer {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .arg("-S")
                .arg(&self.0)
                .arg("kill-server")
                .output();
        }
    }
    let _outer = Outer(outer.clone());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-S")
            .arg(&outer)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .unwrap()
    };
    // The client runs as a user would: a script that sets this home's
    // environment and runs `iapeer attach`.
    let attach = home.iapeer();
    let mut script = String::from("#!/bin/sh\n");
    for (k, v) in attach.get_envs() {
        if let Some(v) = v {
            let v = v.to_string_lossy().replace('\'', "'\\''");
            script.push_str(&format!("export {}='{v}'\n", k.to_string_lossy()));
        }
    }
    script.push_str(&format!(
        "exec {} attach alice --read-only\n",
        env!("CARGO_BIN_EXE_iapeer")
    ));
    let path = home.path().join("attach.sh");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = path.to_str().unwrap().to_owned();
    assert!(tmux(&[
        "new-session",
        "-d",
        "-x",
        "120",
        "-y",
        "40",
        "-s",
        "outer",
        &path
    ])
    .status
    .success());
    let screen = || {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "outer:"]).stdout).into_owned()
    };
    let mut last = String::new();
    let shown = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        last = screen();
        last.contains("hello there")
    });
    assert!(shown, "the client never showed the agent's screen:\n{last}");
    assert!(
        tmux(&["send-keys", "-t", "outer:", "-l", "typed-by-a-watcher"])
            .status
            .success()
    );
    assert!(tmux(&["send-keys", "-t", "outer:", "Enter"])
        .status
        .success());
    std::thread::sleep(Duration::from_millis(800));
    let agent = stdout(&home.run(&["peek", "alice"]));
    assert!(
        !agent.contains("typed-by-a-watcher"),
        "read-only typed: {agent}"
    );
    assert!(home.has("alice", "session"), "still running");
}

#[test]
fn log_takes_the_last_n_follows_from_the_end_and_reads_times_of_day() {
    let home = Home::new();
    shell(&home, "alice");
    for _ in 0..5 {
        assert_eq!(code(&home.run(&["reset", "alice"])), 0);
    }
    let out = home.run(&["log", "--peer", "alice", "-n", "2"]);
    assert_eq!(stdout(&out).lines().count(), 2, "{}", stdout(&out));
    for since in ["today", "yesterday", "00:00", "1h"] {
        let out = home.run(&["log", "--since", since]);
        assert_eq!(code(&out), 0, "{since}: {}", stderr(&out));
    }
    assert_eq!(code(&home.run(&["log", "--since", "soonish"])), 2);

    // -f starts at the end: only lines written after it.
    let mut child = home
        .iapeer()
        .args(["log", "-f", "--peer", "alice"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(code(&home.run(&["stop", "alice"])), 0);
    use std::io::BufRead;
    let first = std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.contains(" stop "), "history was replayed: {first}");
}

#[test]
fn readers_end_quietly_when_their_pipe_closes() {
    let home = Home::new();
    for i in 0..30 {
        shell(&home, &format!("p{i}"));
    }
    for args in ["status", "ls", "log", "config"] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{} {args} | head -c 1 >/dev/null",
                env!("CARGO_BIN_EXE_iapeer")
            ))
            .env("IAPEER_HOME", home.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args}: {err}");
        assert!(!err.contains("Broken pipe"), "{args}: {err}");
    }
}

#[test]
fn completions_load_in_bash_and_the_man_page_renders() {
    let home = Home::new();
    let out = home.run(&["completions", "bash"]);
    assert_eq!(code(&out), 0);
    let script = home.path().join("iapeer.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let out = Command::new("bash")
        .arg("--norc")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p iapeer && COMP_WORDS=(iapeer res); COMP_CWORD=1; _iapeer iapeer res iapeer && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("restart") && said.contains("reset"), "{said}");
    for shell in ["zsh", "fish"] {
        assert_eq!(code(&home.run(&["completions", shell])), 0);
    }
    let man = home.run(&["man"]);
    assert!(stdout(&man).contains(".TH iapeer 1"), "{}", stdout(&man));
}

/// `make install`'s script, in a private HOME: the unit points at the
/// binary with its folder on PATH, completions and the man page are in
/// place, a missing user manager is said plainly, and uninstall removes it
/// all.
#[test]
fn install_puts_the_unit_completions_and_man_page_in_place_and_uninstall_removes_them() {
    let home = assert_fs::TempDir::new().unwrap();
    let prefix = home.path().join("prefix");
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    let bin = prefix.join("bin/iapeer");
    std::fs::copy(env!("CARGO_BIN_EXE_iapeer"), &bin).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-unit.sh");
    let run = |args: &[&str]| {
        Command::new(&script)
            .args(args)
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap()
    };
    let out = run(&[bin.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit =
        std::fs::read_to_string(home.path().join(".config/systemd/user/iapeer.service")).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={} daemon", bin.display())),
        "{unit}"
    );
    assert!(
        unit.contains(&format!(
            "Environment=PATH={}:",
            prefix.join("bin").display()
        )),
        "{unit}"
    );
    // No user manager in this environment: said, with what to do.
    assert!(said.contains("no systemd user manager"), "{said}");
    assert!(said.contains("loginctl enable-linger"), "{said}");
    let completion = home
        .path()
        .join(".local/share/bash-completion/completions/iapeer");
    assert!(std::fs::read_to_string(&completion)
        .unwrap()
        .contains("_iapeer"));
    let man = prefix.join("share/man/man1/iapeer.1");
    assert!(man.exists());

    let out = run(&["--uninstall", prefix.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!bin.exists() && !completion.exists() && !man.exists());
    assert!(!home
        .path()
        .join(".config/systemd/user/iapeer.service")
        .exists());
}

#[test]
fn doctor_flags_a_missing_runtime_and_a_home_others_can_write() {
    let mut home = Home::new();
    home.add("alice", &[]);
    let out = home.run(&["doctor"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    home.set("IAPEER_CLAUDE_BIN", "/nonexistent/claude");
    std::fs::set_permissions(
        home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = home.run(&["doctor", "--json"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let failed: Vec<&str> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "fail")
        .map(|c| c["what"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["runtime", "home"], "{doc}");
    let text = stdout(&home.run(&["doctor"]));
    assert!(text.contains("chmod 700"), "{text}");
    assert!(
        text.contains("claude_bin"),
        "the fix names the setting: {text}"
    );
    std::fs::set_permissions(
        home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
}

#[test]
fn status_reads_well_in_a_pipe_wide_as_json_and_watching() {
    let home = Home::new();
    let out = home.run(&["status"]);
    assert!(
        stdout(&out).contains("no peers are defined"),
        "{}",
        stdout(&out)
    );
    shell(&home, "alice");
    let out = home.run(&["wake", "alice", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (r["schema"].as_u64(), r["name"].as_str()),
        (Some(1), Some("alice"))
    );
    let session = home.session("alice").unwrap()["session"].clone();
    assert_eq!(r["session"], session, "wake --json says the session");
    let table = stdout(&home.run(&["status"]));
    assert!(!table.contains('\x1b'), "no colour into a pipe: {table:?}");
    assert!(table.contains(" ago "), "relative times: {table}");
    assert!(table.contains("iapeer attach NAME"), "how to look: {table}");
    let wide = stdout(&home.run(&["status", "-o", "wide"]));
    let short = &session.as_str().unwrap()[..8];
    assert!(wide.contains("SESSION") && wide.contains(short), "{wide}");
    let colour = stdout(&home.run(&["status", "--color", "always"]));
    assert!(colour.contains("\x1b[32malive"), "{colour:?}");
    let doc: serde_json::Value =
        serde_json::from_str(&stdout(&home.run(&["status", "-o", "json"]))).unwrap();
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["peers"][0]["name"], "alice");

    // -w: a new screen when a decision is logged.
    let mut child = home
        .iapeer()
        .args(["status", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
            let _ = tx.send(line);
        }
    });
    let next_with = |needle: &str| {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(4) {
            if rx
                .recv_timeout(Duration::from_millis(200))
                .is_ok_and(|l| l.contains(needle))
            {
                return true;
            }
        }
        false
    };
    assert!(next_with("alice"), "the first screen");
    assert_eq!(code(&home.run(&["stop", "alice"])), 0);
    assert!(next_with("stopped"), "redrawn after the stop");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn interrupt_stops_the_turn_and_the_session_goes_on() {
    let home = Home::new();
    home.add("alice", &[]);
    assert_eq!(code(&home.run(&["wake", "alice", "--task", "work 30"])), 0);
    let t = Instant::now();
    let out = home.run(&["interrupt", "alice"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("Escape"), "{}", stdout(&out));
    let out = home.run(&["wait", "alice", "--for", "idle", "--timeout", "10s"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(t.elapsed() < Duration::from_secs(10), "the turn stopped");
    let screen = stdout(&home.run(&["peek", "alice"]));
    assert!(screen.contains("Interrupted"), "{screen}");
    assert!(home.has("alice", "session"));
    // A shell gets Ctrl-C.
    shell(&home, "sh");
    assert_eq!(code(&home.run(&["wake", "sh"])), 0);
    assert!(stdout(&home.run(&["interrupt", "sh"])).contains("C-c"));
    assert_eq!(code(&home.run(&["interrupt", "nobody"])), 2);
}

#[test]
fn wake_no_wait_returns_at_the_decision_with_the_session_id() {
    let mut home = Home::new();
    // A slow boot: the answer must come well before it is ready.
    home.set("FAKE_AGENT_BOOT_MS", "1500");
    home.add("alice", &[]);
    let t = Instant::now();
    let out = home.run(&["wake", "alice", "--no-wait", "--task", "later"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "it did not wait for the boot"
    );
    let session = stdout(&out).trim().to_owned();
    assert_eq!(session.len(), 36, "a session id: {session:?}");
    crate::support::wait_until(
        Duration::from_secs(15),
        "the boot, in the background",
        || {
            home.lines("alice", "ready")
                .iter()
                .any(|e| e.str("session") == Some(session.as_str()))
        },
    );
    crate::support::wait_until(Duration::from_secs(15), "the task delivered", || {
        home.session("alice").is_some_and(|s| s["task"] == "later")
    });
    // Running: the live session's id.
    let out = home.run(&["wake", "alice", "--no-wait"]);
    assert_eq!(stdout(&out).trim(), session);
    // A refusal keeps its exit code.
    assert_eq!(code(&home.run(&["stop", "alice"])), 0);
    let out = home.run(&["wake", "alice", "--no-wait"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
}

#[test]
fn a_verb_that_acts_ends_quietly_when_its_pipe_closes() {
    let home = Home::new();
    for i in 0..5 {
        shell(&home, &format!("q{i}"));
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} stop --all | true; echo \"status $?\"",
            env!("CARGO_BIN_EXE_iapeer")
        ))
        .env("IAPEER_HOME", home.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    // The first peer was stopped before anything was printed.
    assert!(home.has("q0", "stopped"));
}
