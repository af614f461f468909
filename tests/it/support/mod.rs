//! Shared test scaffolding: a private home per test, the binary, and a
//! bounded wait instead of bare sleeps.

pub mod invariants;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use assert_fs::TempDir;

use iapeer::core::record::Entry;

/// A temporary `IAPEER_HOME`, removed on drop unless IAPEER_TEST_KEEP is
/// set; every tmux server started under it is killed on drop.
pub struct Home {
    dir: TempDir,
    env: Vec<(String, String)>,
}

impl Home {
    pub fn new() -> Self {
        let keep = std::env::var_os("IAPEER_TEST_KEEP").is_some();
        let dir = TempDir::new().expect("temp dir").into_persistent_if(keep);
        if keep {
            eprintln!("test home kept at {}", dir.path().display());
        }
        let p = dir.path();
        let env = vec![
            (
                "IAPEER_CLAUDE_BIN".into(),
                fixtures().join("fake-claude").display().to_string(),
            ),
            (
                "IAPEER_CODEX_BIN".into(),
                fixtures().join("fake-codex").display().to_string(),
            ),
            (
                "CLAUDE_CONFIG_DIR".into(),
                p.join("claude").display().to_string(),
            ),
            ("CODEX_HOME".into(), p.join("codex").display().to_string()),
            ("FAKE_IAPEER".into(), env!("CARGO_BIN_EXE_iapeer").into()),
            // Tests run without a user manager to start scopes in.
            ("IAPEER_NO_SCOPE".into(), "1".into()),
        ];
        Home { dir, env }
    }

    /// Sets a variable for every later `iapeer` run from this home.
    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    /// A working folder for a peer, created.
    pub fn workdir(&self, name: &str) -> PathBuf {
        let d = self.path().join("work").join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// `iapeer add NAME --cwd <workdir> ARGS…`, which must succeed.
    pub fn add(&self, name: &str, args: &[&str]) {
        let cwd = self.workdir(name);
        let mut all = vec!["add", name, "--cwd", cwd.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(out.status.success(), "add {name}: {}", stderr(&out));
    }

    /// Edits `peers/<name>.json` as an operator would by hand.
    pub fn edit_peer(&self, name: &str, edit: impl FnOnce(&mut serde_json::Value)) {
        let file = self.path().join("peers").join(format!("{name}.json"));
        let mut def: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        edit(&mut def);
        std::fs::write(&file, def.to_string()).unwrap();
    }

    pub fn marker(&self, name: &str, kind: &str) -> PathBuf {
        self.lifecycle().join(format!("{name}.{kind}"))
    }

    pub fn has(&self, name: &str, kind: &str) -> bool {
        self.marker(name, kind).exists()
    }

    pub fn session(&self, name: &str) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.marker(name, "session")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Lines about `name` with this `ev`, in order.
    pub fn lines(&self, name: &str, ev: &str) -> Vec<Entry> {
        self.entries()
            .into_iter()
            .filter(|e| e.identity() == Some(name) && e.str("ev") == Some(ev))
            .collect()
    }

    /// The user messages in a Claude transcript of this home.
    pub fn claude_messages(&self, session: &str) -> Vec<String> {
        let mut out = Vec::new();
        for dir in std::fs::read_dir(self.path().join("claude").join("projects"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let file = dir.path().join(format!("{session}.jsonl"));
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                if v["type"] == "user" {
                    out.push(v["message"]["content"].as_str().unwrap().to_owned());
                }
            }
        }
        out
    }

    /// The pid of the tmux server holding `name`'s session.
    pub fn tmux_server_pid(&self, name: &str) -> i32 {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(self.path().join("run").join(format!("{name}.sock")))
            .args(["display-message", "-p", "#{pid}"])
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a tmux server pid")
    }

    /// The host "restarts" under `name`'s session: its tmux server and
    /// agent are gone, its record stays, written in a boot that is not
    /// this one.
    pub fn restart_host_under(&self, name: &str) {
        let mut rec = self.session(name).expect("a session record");
        let pid = rec["pane_pid"].as_i64().unwrap() as i32;
        let server = self.tmux_server_pid(name);
        rec["boot_id"] = "00000000-0000-4000-8000-000000000000".into();
        // SAFETY: killing processes this test started.
        unsafe {
            libc::kill(server, libc::SIGKILL);
            libc::kill(pid, libc::SIGKILL);
        }
        std::fs::write(
            self.marker(name, "session"),
            serde_json::to_vec(&rec).unwrap(),
        )
        .unwrap();
    }

    /// Kills the pane process of a live session, as a crash would.
    pub fn kill_session_process(&self, name: &str, signal: i32) {
        let pid = self.session(name).expect("a live session")["pane_pid"]
            .as_i64()
            .unwrap();
        // SAFETY: sending a signal to a pid we launched.
        unsafe { libc::kill(pid as i32, signal) };
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn lifecycle(&self) -> PathBuf {
        self.path().join("state").join("lifecycle")
    }

    pub fn log_path(&self) -> PathBuf {
        self.path()
            .join("logs")
            .join("iapeer")
            .join("lifecycle.log")
    }

    /// `iapeer` with this home and nothing inherited that could leak in.
    pub fn iapeer(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_iapeer"));
        cmd.env("IAPEER_HOME", self.path())
            .env_remove("IAPEER_IDENTITY")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("TMUX")
            .env_remove("RUST_LOG")
            .env_remove("CLAUDECODE")
            // The test runner's, not a user's: the real CLIs behave
            // differently under it (Codex asks no folder trust).
            .env_remove("CI");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `iapeer ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.iapeer().args(args).output().expect("run iapeer")
    }

    pub fn entries(&self) -> Vec<Entry> {
        iapeer::store::log::read_all(&self.log_path())
            .map(|(e, _)| e)
            .unwrap_or_default()
    }
}

/// A running `iapeer daemon`, killed (SIGKILL) on drop.
pub struct Daemon {
    pub child: std::process::Child,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Home {
    /// Starts the daemon and waits for its start-up line.
    pub fn daemon(&self) -> Daemon {
        self.daemon_with(|_| {})
    }

    /// [`Home::daemon`], its command first changed by `edit` (an extra
    /// variable for the daemon alone, say).
    pub fn daemon_with(&self, edit: impl FnOnce(&mut Command)) -> Daemon {
        let before = self.lines_any("daemon").len();
        let stderr = std::fs::File::create(self.path().join("daemon.stderr")).unwrap();
        let mut cmd = self.iapeer();
        cmd.arg("daemon")
            .stdout(std::process::Stdio::null())
            .stderr(stderr);
        edit(&mut cmd);
        let child = cmd.spawn().expect("start the daemon");
        let daemon = Daemon { child };
        wait_until(
            Duration::from_secs(10),
            "the daemon's start-up line",
            || {
                self.lines_any("daemon")
                    .iter()
                    .skip(before)
                    .any(|e| e.str("action") == Some("started"))
            },
        );
        daemon
    }

    /// The daemon's diagnostics files, whole (a test's daemon says little).
    pub fn diagnostics(&self) -> String {
        let dir = self.path().join("logs").join("daemon");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect()
    }

    /// Every line with this `ev`.
    pub fn lines_any(&self, ev: &str) -> Vec<Entry> {
        self.entries()
            .into_iter()
            .filter(|e| e.str("ev") == Some(ev))
            .collect()
    }

    /// Waits until a line about `name` matches, and returns it.
    ///
    /// On a timeout it says what the peer's lines did say.
    pub fn wait_line(&self, name: &str, what: &str, pred: impl Fn(&Entry) -> bool) -> Entry {
        // Bounded, and generous: a loaded machine takes its time.
        let timeout = Duration::from_secs(30);
        let start = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            let lines: Vec<Entry> = self
                .entries()
                .into_iter()
                .filter(|e| e.identity() == Some(name))
                .collect();
            if let Some(found) = lines.iter().find(|e| pred(e)) {
                return found.clone();
            }
            if start.elapsed() >= timeout {
                let said: Vec<&str> = lines.iter().map(|e| e.line.as_str()).collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what}; {name}'s lines:\n{}\nthe daemon's diagnostics:\n{}",
                    said.join("\n"),
                    self.diagnostics()
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Presses keys in a peer's terminal (tmux key names), as a person at
    /// it would.
    pub fn press(&self, name: &str, keys: &[&str]) {
        let socket = self.path().join("run").join(format!("{name}.sock"));
        let ok = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["send-keys", "-t", name])
            .args(keys)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "keys to {name}");
    }

    /// Lines about `name` matching `pred`.
    pub fn count(&self, name: &str, pred: impl Fn(&Entry) -> bool) -> usize {
        self.entries()
            .into_iter()
            .filter(|e| e.identity() == Some(name) && pred(e))
            .count()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let run = self.path().join("run");
        for entry in std::fs::read_dir(&run).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "sock") {
                let _ = Command::new("tmux")
                    .arg("-S")
                    .arg(&path)
                    .arg("kill-server")
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

/// The exit code, for asserting on.
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Polls `check` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// CPU a process has used, itself and its reaped children (utime, stime,
/// cutime, cstime), in clock ticks.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    fields[11..15]
        .iter()
        .map(|f| f.parse::<u64>().unwrap())
        .sum()
}

/// The repository's `fixtures/` folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Sets a resource limit of a process we started (`prlimit`): soft `cur`,
/// hard `max`.
pub fn set_limit(pid: i32, resource: libc::__rlimit_resource_t, cur: u64, max: u64) {
    let lim = libc::rlimit {
        rlim_cur: cur,
        rlim_max: max,
    };
    // SAFETY: prlimit on a child process we own, with a valid struct.
    let r = unsafe { libc::prlimit(pid, resource, &lim, std::ptr::null_mut()) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
}
