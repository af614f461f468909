//! Hostile input: every case is refused with a clear error naming the file
//! or peer, exit code 2, and nothing written anywhere under the home.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::support::{code, stderr, stdout, Home};

/// Every file under the home with its bytes (symlinks as their target).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(
                    p.clone(),
                    std::fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            } else if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                // Sparse hostile files are huge; their size stands for them.
                let bytes = if meta.len() > 1 << 20 {
                    meta.len().to_le_bytes().to_vec()
                } else {
                    std::fs::read(&p).unwrap()
                };
                out.insert(p, bytes);
            } else {
                out.insert(p, b"<special>".to_vec());
            }
        }
    }
    out
}

/// Runs `args`, expecting exit 2, an error mentioning `names`, and no change
/// under the home.
fn refused(home: &Home, args: &[&str], names: &str) {
    let before = snapshot(home.path());
    let out = home.run(args);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{args:?}: exit {} / {err}", code(&out));
    assert!(
        err.contains(names),
        "{args:?}: the error should name {names:?}: {err}"
    );
    assert!(
        err.starts_with("iapeer: ") && err.lines().count() == 1,
        "one clear line: {err}"
    );
    let after = snapshot(home.path());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "{args:?} created or removed files"
    );
    for (k, v) in &before {
        assert_eq!(v, &after[k], "{args:?} changed {}", k.display());
    }
}

fn ready_home() -> Home {
    let home = Home::new();
    home.add("alice", &[]);
    home.run(&["reset", "alice"]);
    home
}

#[test]
fn hostile_names_are_refused_everywhere() {
    let home = ready_home();
    let long = "n".repeat(10 * 1024);
    for name in [
        "../x",
        "../../etc/passwd",
        "a/b",
        "/abs",
        ".hidden",
        "a.b",
        "",
        "alicе",
        "ａｌｉｃｅ",
        "al ice",
        long.as_str(),
    ] {
        for verb in [
            "wake", "stop", "start", "reset", "explain", "why", "rm", "status",
        ] {
            if verb == "status" && name.is_empty() {
                continue;
            }
            refused(&home, &[verb, name], "not a valid peer name");
        }
        refused(
            &home,
            &["add", name, "--cwd", "/tmp"],
            "not a valid peer name",
        );
        refused(&home, &["log", "--peer", name], "not a valid peer name");
    }
    let out = home.run(&["wake", &long]);
    assert!(
        stderr(&out).len() < 400,
        "a 10 KiB name is not echoed whole"
    );
    // A name that looks like flags is a usage error, as clap reports it.
    let before = snapshot(home.path());
    let out = home.run(&["wake", "-rf"]);
    assert_eq!(code(&out), 2);
    assert_eq!(snapshot(home.path()), before);
}

#[test]
fn a_nul_or_a_mismatch_in_a_definition_is_refused() {
    let home = ready_home();
    let file = home.path().join("peers/alice.json");
    std::fs::write(&file, r#"{"name":"al\u0000ice","cwd":"/tmp"}"#).unwrap();
    refused(&home, &["wake", "alice"], "peers/alice.json");
    std::fs::write(&file, r#"{"name":"bob","cwd":"/tmp"}"#).unwrap();
    refused(&home, &["wake", "alice"], "peers/alice.json");
    std::fs::write(
        &file,
        r#"{"name":"alice","cwd":"/tmp","command":["sh","-c","x\u0000"]}"#,
    )
    .unwrap();
    refused(&home, &["wake", "alice"], "peers/alice.json");
    for garbage in [
        "",
        "{",
        "{\"name\": \"alice\", \"cwd\": ",
        "\u{0}\u{1}binary",
        "[1,2,3]",
        "null",
    ] {
        std::fs::write(&file, garbage).unwrap();
        refused(&home, &["wake", "alice"], "peers/alice.json");
    }
}

#[test]
fn symlinked_markers_and_state_dirs_are_refused_and_never_followed() {
    let home = ready_home();
    let outside = home.path().join("outside");
    std::fs::write(&outside, "precious").unwrap();
    for kind in [
        "stopped",
        "idle-reaped",
        "new-eager",
        "topic",
        "session",
        "deaths",
        "lock",
    ] {
        let marker = home.marker("alice", kind);
        let _ = std::fs::remove_file(&marker);
        symlink(&outside, &marker).unwrap();
        for verb in ["wake", "stop", "start", "explain"] {
            refused(&home, &[verb, "alice"], &format!("alice.{kind}"));
        }
        std::fs::remove_file(&marker).unwrap();
    }
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");

    // The state directory itself pointing elsewhere.
    let elsewhere = home.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::rename(home.lifecycle(), home.path().join("state/real")).unwrap();
    symlink(&elsewhere, home.lifecycle()).unwrap();
    for verb in ["wake", "stop", "reset", "explain", "status"] {
        refused(&home, &[verb, "alice"], "state/lifecycle");
    }
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn special_files_and_foreign_owners_are_refused() {
    let home = ready_home();
    let marker = home.marker("alice", "stopped");
    nix::unistd::mkfifo(&marker, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    refused(&home, &["wake", "alice"], "alice.stopped");
    std::fs::remove_file(&marker).unwrap();
    std::fs::create_dir(home.marker("alice", "session")).unwrap();
    refused(&home, &["wake", "alice"], "alice.session");
    std::fs::remove_dir(home.marker("alice", "session")).unwrap();
    if nix::unistd::geteuid().is_root() {
        let m = home.marker("alice", "idle-reaped");
        std::fs::write(&m, "").unwrap();
        nix::unistd::chown(&m, Some(65534.into()), Some(65534.into())).unwrap();
        refused(&home, &["wake", "alice"], "owned by uid 65534");
    }
}

#[test]
fn oversized_and_garbage_markers_are_refused() {
    let home = ready_home();
    let topic = home.marker("alice", "topic");
    std::fs::File::create(&topic)
        .unwrap()
        .set_len(100 * 1024 * 1024)
        .unwrap();
    refused(&home, &["wake", "alice"], "alice.topic");
    std::fs::write(&topic, "x".repeat(300)).unwrap();
    refused(&home, &["wake", "alice"], "alice.topic");
    std::fs::remove_file(&topic).unwrap();

    let session = home.marker("alice", "session");
    for garbage in [
        "",
        "{\"identity\":\"alice\",\"pane_pid\":",
        "not json",
        "{\"identity\":\"bob\",\"runtime\":\"shell\",\"pane_pid\":1,\"started_at\":\"x\"}",
    ] {
        std::fs::write(&session, garbage).unwrap();
        refused(&home, &["wake", "alice"], "alice.session");
    }
    std::fs::remove_file(&session).unwrap();
    std::fs::write(home.marker("alice", "stopped"), vec![b'x'; 10_000]).unwrap();
    refused(&home, &["wake", "alice"], "alice.stopped");
}

#[test]
fn bad_topics_and_tasks_are_refused() {
    let home = ready_home();
    refused(
        &home,
        &["wake", "alice", "--topic", &"t".repeat(300)],
        "--topic",
    );
    refused(
        &home,
        &["wake", "alice", "--topic", "two\nlines"],
        "--topic",
    );
    for task in ["\x1b[201~x", "bell\x07", "\r", "nul\u{0}"] {
        if task.contains('\0') {
            continue; // argv cannot carry a NUL
        }
        refused(&home, &["wake", "alice", "--task", task], "--task");
    }
}

/// DESIGN §2 makes `.deaths` forgiving: garbage reads as "no deaths" and is
/// reported, rather than blocking the peer.
#[test]
fn garbage_deaths_read_as_none_and_are_reported() {
    let home = ready_home();
    let deaths = home.marker("alice", "deaths");
    for garbage in [
        "garbage",
        "{\"a\":1}",
        "[1,\"x\"]",
        &format!("[{}]", vec!["1"; 100_000].join(",")),
    ] {
        std::fs::write(&deaths, garbage).unwrap();
        let out = home.run(&["explain", "alice", "--json"]);
        assert_eq!(code(&out), 0);
        assert!(
            stderr(&out).contains("alice.deaths"),
            "reported: {}",
            stderr(&out)
        );
        let e: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(e["outcome"], "launch", "no deaths: not refused");
    }
    // Negative and future numbers are numbers: ancient, and "now".
    let now = iapeer::core::clock::now_ms();
    let day = 86_400_000;
    std::fs::write(
        &deaths,
        format!("[-5, {}, {}, {}]", now + day, now + day + 1, now + day + 2),
    )
    .unwrap();
    let out = home.run(&["wake", "alice", "--json"]);
    assert_eq!(
        code(&out),
        4,
        "three deaths 'in the future' count as now: {}",
        stderr(&out)
    );
    let stored: Vec<i64> =
        serde_json::from_str(&std::fs::read_to_string(&deaths).unwrap()).unwrap();
    assert!(
        stored.iter().all(|&d| d <= iapeer::core::clock::now_ms()),
        "clamped on write: {stored:?}"
    );
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(r["reason"].as_str().unwrap().contains("retry after"));
}

#[test]
fn a_torn_last_log_line_is_skipped_and_the_next_line_is_whole() {
    let home = ready_home();
    let log = home.log_path();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(br#"{"ts":"2026-11-21T04:44:14.821Z","ev":"wake","ident"#)
            .unwrap();
    }
    assert_eq!(code(&home.run(&["reset", "alice"])), 0);
    let (entries, stats) = iapeer::store::log::read_all(&log).unwrap();
    assert_eq!(stats.skipped, 1);
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.str("ev") == Some("reset"))
            .count(),
        2
    );
    let out = home.run(&["log"]);
    assert_eq!(code(&out), 0);
    assert!(stderr(&out).contains("skipped 1 torn"), "{}", stderr(&out));
}

/// tmux reads an argument ending in `;` as the end of a command: every
/// such element must reach the program as it was given, and none may run
/// as a tmux command. Checked on the real pane.
#[test]
fn argv_elements_ending_in_a_semicolon_reach_the_program_as_given() {
    let home = Home::new();
    let marker = home.path().join("tmux-ran-this");
    let hostile = [
        "x;".to_owned(),
        ";".to_owned(),
        "a\\;".to_owned(),
        "{}".to_owned(),
        format!("run-shell 'touch {}' ;", marker.display()),
        "plain".to_owned(),
    ];
    let mut argv = vec![
        "--runtime".to_owned(),
        "shell".to_owned(),
        "--".to_owned(),
        "sh".to_owned(),
        "-c".to_owned(),
        "printf '%s\\n' \"$@\" > args.txt; sleep 100000".to_owned(),
        "sh".to_owned(),
    ];
    argv.extend(hostile.iter().cloned());
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    home.add("semi", &args);
    let out = home.run(&["wake", "semi"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let file = home.workdir("semi").join("args.txt");
    crate::support::wait_until(
        std::time::Duration::from_secs(5),
        "the program's arguments",
        || std::fs::read_to_string(&file).is_ok_and(|t| t.lines().count() == hostile.len()),
    );
    let got: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(got, hostile);
    assert!(!marker.exists(), "an argument ran as a tmux command");
}

/// A `.session` is untrusted input: one naming a socket outside this
/// home's `run/` (a home copied with `cp -a`, or a planted record) is
/// refused and never acted on, and a pid without its start time is never
/// signalled.
#[test]
fn a_session_record_is_never_trusted_with_a_foreign_socket_or_an_unverified_pid() {
    let home = Home::new();
    home.add("alice", &["--runtime", "shell", "--", "sleep", "100000"]);
    std::fs::create_dir_all(home.lifecycle()).unwrap();
    let precious = home.path().join("precious.sock");
    std::fs::write(&precious, "not ours to delete").unwrap();
    let mut bystander = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    let rec = |socket: &Path, pane_start: Option<u64>| {
        let mut v = serde_json::json!({
            "identity": "alice", "runtime": "shell", "cwd": "/tmp",
            "socket": socket, "pane_pid": bystander.id(),
            "started_at": "2026-12-01T00:00:00.000Z", "mode": "fresh",
            "session": "planted", "cause": "first-wake",
            "ready_at": "2026-12-01T00:00:01.000Z",
        });
        if let Some(s) = pane_start {
            v["pane_start"] = s.into();
        }
        std::fs::write(home.marker("alice", "session"), v.to_string()).unwrap();
    };
    rec(&precious, None);
    for args in [
        &["stop", "alice"][..],
        &["wake", "alice"],
        &["restart", "alice"],
    ] {
        let out = home.run(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("never acted on"), "{}", stderr(&out));
    }
    assert!(precious.exists(), "a file outside run/ was removed");
    // This home's socket, but no start time: the pid is not signalled.
    rec(&home.path().join("run/alice.sock"), None);
    let _ = home.run(&["stop", "alice"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "an unverified pid was killed"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
}

/// A definition is a command the daemon runs: one another user could have
/// written (their file, a file others may change, a symlink, or any file in
/// a folder others may write in) is never read — by the CLI, the daemon at
/// start, or the daemon on SIGHUP.
#[test]
fn definitions_another_user_could_have_written_are_never_run() {
    use std::os::unix::fs::PermissionsExt;
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "0.2");
    home.add("mine", &["--runtime", "shell", "--", "sleep", "100000"]);
    let _d = home.daemon();
    let peers = home.path().join("peers");
    // Each is made outside and moved in whole, as its owner would: never
    // for a moment a definition of ours.
    let planted = |name: &str, prepare: &dyn Fn(&Path)| {
        let def = serde_json::json!({
            "name": name, "cwd": "/tmp", "runtime": "shell", "policy": "always",
            "command": ["sh", "-c", format!("touch {}/ran-{name}; sleep 100000", home.path().display())],
        });
        let outside = home.path().join(format!("{name}.json"));
        std::fs::write(&outside, def.to_string()).unwrap();
        prepare(&outside);
        std::fs::rename(&outside, peers.join(format!("{name}.json"))).unwrap();
    };
    // Another user's file.
    planted("theirs", &|f| {
        std::os::unix::fs::chown(f, Some(65534), Some(65534)).unwrap();
    });
    // A file anyone may change.
    planted("open", &|f| {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o666)).unwrap();
    });
    // A symlink to a definition elsewhere.
    planted("linked", &|f| {
        let elsewhere = home.path().join("elsewhere.json");
        std::fs::copy(f, &elsewhere).unwrap();
        std::fs::remove_file(f).unwrap();
        symlink(&elsewhere, f).unwrap();
    });
    _d.signal(libc::SIGHUP);
    std::thread::sleep(std::time::Duration::from_secs(2));
    for name in ["theirs", "open", "linked"] {
        assert!(
            !home.path().join(format!("ran-{name}")).exists(),
            "{name} ran"
        );
        let out = home.run(&["wake", name]);
        assert_eq!(code(&out), 2, "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("{name}.json")),
            "{}",
            stderr(&out)
        );
    }
    // A folder anyone may write in: nothing in it is read.
    std::fs::set_permissions(&peers, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = home.run(&["wake", "mine"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 700"), "{}", stderr(&out));
    std::fs::set_permissions(&peers, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(code(&home.run(&["wake", "mine"])), 0);
}

/// The state directory replaced under a running daemon (moved away, a new
/// one made): the daemon says so and acts on nothing through the old one,
/// so an operator's stop in the new one is not undone by a relaunch.
#[test]
fn a_state_directory_replaced_under_the_daemon_is_never_acted_through() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "0.2");
    home.add(
        "keeper",
        &[
            "--policy",
            "always",
            "--runtime",
            "shell",
            "--",
            "sleep",
            "100000",
        ],
    );
    let _d = home.daemon();
    home.wait_line("keeper", "up", |e| e.str("ev") == Some("ready"));
    let lifecycle = home.lifecycle();
    std::fs::rename(&lifecycle, home.path().join("state/lifecycle.old")).unwrap();
    std::fs::create_dir(&lifecycle).unwrap();
    std::fs::set_permissions(
        &lifecycle,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let said = {
        let mut found = None;
        crate::support::wait_until(
            std::time::Duration::from_secs(10),
            "the daemon to say so",
            || {
                found = home
                    .lines_any("daemon")
                    .into_iter()
                    .find(|e| e.str("error").is_some_and(|r| r.contains("was replaced")));
                found.is_some()
            },
        );
        found.unwrap()
    };
    assert!(
        said.str("error").unwrap().contains("restart"),
        "{}",
        said.line
    );
    // The operator stops it in the new directory, and the agent dies:
    // nothing relaunches it through the old one.
    assert_eq!(code(&home.run(&["stop", "keeper"])), 0);
    let wakes = home.count("keeper", |e| e.str("ev") == Some("wake"));
    let old: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.path().join("state/lifecycle.old/keeper.session")).unwrap(),
    )
    .unwrap();
    // SAFETY: killing the agent this test's home launched.
    unsafe { libc::kill(old["pane_pid"].as_i64().unwrap() as i32, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(home.count("keeper", |e| e.str("ev") == Some("wake")), wakes);
    assert!(home.has("keeper", "stopped"));
}

/// A home restored in place (its state directory moved away and copied
/// back, as from a backup) while its sessions run: the records name this
/// home's sockets and pids that still match, but they were written in
/// another directory, and are never acted on.
#[test]
fn a_record_copied_with_its_home_is_refused_not_acted_on() {
    let home = Home::new();
    home.add("alice", &["--runtime", "shell", "--", "sleep", "100000"]);
    assert_eq!(code(&home.run(&["wake", "alice"])), 0);
    let pane = home.session("alice").unwrap()["pane_pid"].as_i64().unwrap() as i32;
    let state = home.lifecycle();
    let old = state.with_extension("old");
    std::fs::rename(&state, &old).unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&old)
        .arg(&state)
        .status()
        .unwrap();
    assert!(copied.success());
    for args in [
        &["stop", "alice"][..],
        &["wake", "alice"],
        &["restart", "alice"],
    ] {
        let out = home.run(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("copied or restored"),
            "{}",
            stderr(&out)
        );
    }
    assert!(
        Path::new(&format!("/proc/{pane}")).exists(),
        "the original's agent was ended"
    );
}
