//! Shared test scaffolding: a private home per test, the binary, and a
//! bounded wait instead of bare sleeps.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use assert_fs::TempDir;

use iapeer::lifecycle_log::{self, Entry};

/// A temporary `IAPEER_HOME`, removed on drop unless IAPEER_TEST_KEEP is set.
pub struct Home {
    dir: TempDir,
}

impl Home {
    pub fn new() -> Self {
        let keep = std::env::var_os("IAPEER_TEST_KEEP").is_some();
        let dir = TempDir::new().expect("temp dir").into_persistent_if(keep);
        if keep {
            eprintln!("test home kept at {}", dir.path().display());
        }
        Home { dir }
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
            .env_remove("RUST_LOG");
        cmd
    }

    /// Runs `iapeer ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.iapeer().args(args).output().expect("run iapeer")
    }

    pub fn entries(&self) -> Vec<Entry> {
        lifecycle_log::read_all(&self.log_path())
            .map(|(e, _)| e)
            .unwrap_or_default()
    }
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

/// The repository's `fixtures/` folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}
