//! config.toml (DESIGN §10): one set of settings for the CLI and the
//! daemon, whatever environment each was started in; the environment
//! overrides the file; a bad file is an error naming file, line and key.

use std::time::Duration;

use crate::support::{code, fixtures, stderr, stdout, wait_until, Home};

/// The daemon a service manager starts sees nothing of the operator's
/// shell: what it needs must come from config.toml.
#[test]
fn a_daemon_with_an_empty_environment_launches_with_the_settings_of_config_toml() {
    let home = Home::new();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "# what the operator's shell had\nclaude_bin = \"{}\"\nclaude_config_dir = \"{}\"\ntick_secs = 30\n",
            fixtures().join("fake-claude").display(),
            home.path().join("claude").display()
        ),
    )
    .unwrap();
    home.add("keeper", &["--policy", "always"]);
    let stderr_file = std::fs::File::create(home.path().join("daemon.stderr")).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_iapeer"))
        .env_clear()
        .env("IAPEER_HOME", home.path())
        .arg("daemon")
        .stdout(std::process::Stdio::null())
        .stderr(stderr_file)
        .spawn()
        .unwrap();
    let _d = crate::support::Daemon { child };
    let ready = home.wait_line("keeper", "the always peer up", |e| {
        e.str("ev") == Some("ready")
    });
    assert_eq!(ready.str("source"), Some("daemon"));
    assert_eq!(ready.str("runtime"), Some("claude"));

    // `iapeer config` says where each value came from.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iapeer"))
        .env_clear()
        .env("IAPEER_HOME", home.path())
        .env("IAPEER_IDLE_SECS", "77")
        .args(["config", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let setting = |key: &str| {
        doc["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == key)
            .cloned()
            .unwrap()
    };
    assert_eq!(setting("claude_bin")["source"], "config.toml:2");
    assert_eq!(setting("tick_secs")["value"], "30");
    assert_eq!(
        setting("idle_secs")["source"],
        "env",
        "the environment wins"
    );
    assert_eq!(setting("idle_secs")["value"], "77");
    assert_eq!(setting("max_age_secs")["source"], "default");
}

#[test]
fn a_bad_config_file_is_exit_2_naming_the_file_the_line_and_the_key() {
    let home = Home::new();
    home.add("alice", &[]);
    let file = home.path().join("config.toml");
    for (text, want) in [
        ("idle_secs = 60\nidel_secs = 5\n", "line 2, key idel_secs"),
        ("tick_secs = \"soon\"\n", "line 1, key tick_secs"),
        ("tick_secs = \n", "line 1"),
    ] {
        std::fs::write(&file, text).unwrap();
        for args in [&["status"][..], &["wake", "alice"]] {
            let out = home.run(args);
            assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
            let err = stderr(&out);
            assert!(err.contains(file.to_str().unwrap()), "{err}");
            assert!(err.contains(want), "{want:?} not in {err}");
        }
    }
    assert!(!home.has("alice", "session"), "nothing was done");
    std::fs::remove_file(&file).unwrap();
    wait_until(Duration::from_secs(1), "status to work again", || {
        code(&home.run(&["status"])) == 0
    });
}
