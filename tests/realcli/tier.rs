//! The real-client tier's scaffolding: the pinned CLIs from npm
//! (`tests/realcli/node_modules`, installed by `make test`), mock model
//! servers on 127.0.0.1 scripted per test, and a home whose peers launch
//! the real `claude` and `codex` against them with seeded, private client
//! configurations (never the user's).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{wait_until, Home};

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/realcli")
}

/// The pinned CLI `name`, or `None` (said loudly) when the tier is
/// skipped on purpose with IAPEER_SKIP_REALCLI=1. Missing otherwise is a
/// failure: `make test` installs it.
pub fn bin(name: &str) -> Option<PathBuf> {
    let path = here().join("node_modules/.bin").join(name);
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("IAPEER_SKIP_REALCLI").is_some_and(|v| v == "1") {
        eprintln!(
            "SKIPPED: IAPEER_SKIP_REALCLI=1 and {} is not installed",
            path.display()
        );
        return None;
    }
    panic!(
        "{} is not installed: run `make deps` (it runs `npm ci --prefix tests/realcli`), \
         or set IAPEER_SKIP_REALCLI=1 to skip the real-client tier on purpose",
        path.display()
    );
}

/// A mock model server (`mock_anthropic.py` or `mock_openai.py`), killed on
/// drop.
pub struct Mock {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Mock {
    fn start(server: &str, dir: &Path, replies: Value) -> Mock {
        std::fs::create_dir_all(dir).unwrap();
        let script = dir.join(format!("{server}.script.json"));
        let log = dir.join(format!("{server}.requests.jsonl"));
        std::fs::write(&script, json!({ "replies": replies }).to_string()).unwrap();
        let mut child = Command::new("python3")
            .arg(here().join(format!("{server}.py")))
            .args(["--port", "0", "--script"])
            .arg(&script)
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the mock model server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the mock's first line");
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the mock said {line:?}"));
        Mock { child, port, log }
    }

    pub fn anthropic(dir: &Path, replies: Value) -> Mock {
        Mock::start("mock_anthropic", dir, replies)
    }

    pub fn openai(dir: &Path, replies: Value) -> Mock {
        Mock::start("mock_openai", dir, replies)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request the client made, in order.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// How many of the agent's own turns there were (side requests, such
    /// as a title the CLI asks for beside the first turn, not counted).
    pub fn turns(&self) -> usize {
        self.requests().iter().filter(|r| r["side"] != true).count()
    }

    /// How many of the agent's own turns (not side requests) carried
    /// `text` as the user's last words.
    pub fn turns_with(&self, text: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r["side"] != true)
            .filter(|r| {
                r["last_user_text"]
                    .as_str()
                    .is_some_and(|t| t.contains(text))
            })
            .count()
    }

    /// Waits until a turn of the agent carried `text`.
    pub fn wait_turn(&self, text: &str, timeout: Duration) {
        wait_until(timeout, &format!("a model request with {text:?}"), || {
            self.turns_with(text) > 0
        });
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A home whose Claude peers run the real Claude Code against `mock`, with
/// only onboarding seeded: the folder-trust and API-key dialogs are what a
/// new user meets.
pub fn claude_home(mock: &Mock) -> Option<Home> {
    let claude = bin("claude")?;
    let mut home = Home::new();
    let config = home.path().join("claude");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join(".claude.json"),
        json!({ "hasCompletedOnboarding": true }).to_string(),
    )
    .unwrap();
    private_user_home(&mut home);
    home.set("IAPEER_CLAUDE_BIN", claude.to_str().unwrap())
        .set("ANTHROPIC_BASE_URL", &mock.url())
        .set("ANTHROPIC_API_KEY", "sk-ant-iapeer-test-0123456789abcdef")
        .set("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .set("DISABLE_AUTOUPDATER", "1")
        .set("IAPEER_BOOT_DEADLINE_SECS", "60")
        .set("IAPEER_READY_GATE_SECS", "60");
    Some(home)
}

/// The agents run as a new user would, with a HOME of their own: their
/// tools' login shells (`bash -l`) read no dotfiles of this machine's user
/// (whose shell start-up can wait on a lock a killed shell left behind).
fn private_user_home(home: &mut Home) {
    let user = home.path().join("user");
    std::fs::create_dir_all(&user).unwrap();
    home.set("HOME", user.to_str().unwrap());
}

/// Claude's record of the folder: what `.claude.json` says of `cwd`.
pub fn claude_trusts(home: &Home, cwd: &Path) -> bool {
    let text = std::fs::read_to_string(home.path().join("claude/.claude.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["projects"][cwd.to_str().unwrap()]["hasTrustDialogAccepted"] == true
}

/// Processes whose command line contains `needle` (a tool's unique
/// command), by pid.
pub fn processes_with(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(needle)
            })
        })
        .collect()
}

/// A home whose Codex peers run the real Codex against `mock`, with a
/// private CODEX_HOME that names the mock as its model provider and
/// nothing else: the folder-trust dialog is what a new user meets.
pub fn codex_home(mock: &Mock) -> Option<Home> {
    let codex = bin("codex")?;
    let mut home = Home::new();
    let codex_home = home.path().join("codex");
    std::fs::create_dir_all(&codex_home).unwrap();
    std::fs::write(
        codex_home.join("config.toml"),
        format!(
            "model_provider = \"mock\"\nmodel = \"mock-model\"\n\n[model_providers.mock]\nname = \"mock\"\nbase_url = \"{}/v1\"\nwire_api = \"responses\"\nenv_key = \"MOCK_API_KEY\"\n",
            mock.url()
        ),
    )
    .unwrap();
    private_user_home(&mut home);
    home.set("IAPEER_CODEX_BIN", codex.to_str().unwrap())
        .set("MOCK_API_KEY", "sk-iapeer-test")
        .set("IAPEER_BOOT_DEADLINE_SECS", "60")
        .set("IAPEER_READY_GATE_SECS", "60");
    Some(home)
}

/// A working folder that is its own git repository (Codex asks for trust
/// per repository).
pub fn git_workdir(home: &Home, name: &str) -> PathBuf {
    let dir = home.workdir(name);
    let ok = Command::new("git")
        .args(["init", "-q"])
        .current_dir(&dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "git init {}", dir.display());
    dir
}

/// Busy loops on `n` cores for as long as it lives (a test under load),
/// stopped on drop.
pub struct CpuLoad(Vec<Child>);

impl CpuLoad {
    pub fn start(n: usize) -> CpuLoad {
        CpuLoad(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last line about `name` that decided a launch (it has a `mode`).
pub fn last_decision(home: &Home, name: &str) -> iapeer::core::record::Entry {
    home.lines(name, "wake")
        .into_iter()
        .rfind(|e| e.str("mode").is_some())
        .unwrap_or_else(|| panic!("{name} has no wake decision"))
}

/// What a failed wake of `name` left on its screen, for a failure message.
pub fn last_screen(home: &Home, name: &str) -> String {
    home.lines(name, "wake")
        .into_iter()
        .rev()
        .find_map(|e| e.str("last_lines").map(str::to_owned))
        .unwrap_or_default()
}

/// A daemon tick of 1 s and an `on_activity` hook that appends
/// `peer state` lines to the file returned.
pub fn hook_to_file(home: &mut Home) -> PathBuf {
    let out = home.path().join("hook.out");
    let command = format!(
        r#"printf '%s %s\n' "$IAPEER_PEER" "$IAPEER_STATE" >> '{}'"#,
        out.display()
    );
    home.set("IAPEER_TICK_SECS", "1")
        .set("IAPEER_ON_ACTIVITY", &command);
    out
}

/// How many lines of the hook's file start with `what`.
pub fn told(file: &Path, what: &str) -> usize {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(what))
        .count()
}

/// How many times `name`'s `dialog` was answered, checked to be once, or
/// twice when a loaded machine lost the first answer's keys (said on
/// stderr, so a slow run shows it). Whether an answer's keys ever reached
/// the model is for the caller to check, by the turns the mock saw.
pub fn answered(home: &Home, name: &str, dialog: &str) -> Vec<iapeer::core::record::Entry> {
    let answers: Vec<_> = home
        .lines(name, "wake")
        .into_iter()
        .filter(|e| e.str("action") == Some("dialog-answered") && e.str("dialog") == Some(dialog))
        .collect();
    let lines: Vec<&str> = answers.iter().map(|e| e.line.as_str()).collect();
    assert!(
        (1..=2).contains(&answers.len()),
        "{name}'s {dialog} dialog answered {} times: {lines:#?}",
        answers.len()
    );
    if answers.len() > 1 {
        eprintln!("{name}'s {dialog} dialog was answered twice: {lines:#?}");
    }
    answers
}
