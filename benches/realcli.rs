//! `make bench`: wake latency of the real Claude Code and Codex CLIs under
//! iapeer (fresh and resume, to the ready gate), beside a bare launch of
//! the same CLI in tmux to its ready screen: the floor, measured in the
//! same run. Folders are trusted beforehand, so no dialog is in the way of
//! either. Needs the pinned CLIs (`make deps`); says so and skips without.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 20;
const KEY: &str = "sk-ant-iapeer-bench-0123456789abcdef";

struct Mock(Child, u16);

impl Mock {
    fn start(server: &str, dir: &Path) -> Mock {
        let script = dir.join("script.json");
        std::fs::write(&script, r#"{"replies": []}"#).unwrap();
        let mut child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/realcli/{server}.py")))
            .args(["--port", "0", "--script"])
            .arg(&script)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mock");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .trim_start_matches("listening on ")
            .parse()
            .unwrap();
        Mock(child, port)
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Client {
    name: &'static str,
    bin: PathBuf,
    env: Vec<(String, String)>,
    /// Text on the ready screen (and on no start-up dialog).
    ready: &'static str,
}

fn setup(name: &'static str, home: &Path, cwd: &Path, port: u16) -> Client {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/realcli/node_modules/.bin")
        .join(name);
    let mut env = vec![("IAPEER_NO_SCOPE".to_owned(), "1".to_owned())];
    if name == "claude" {
        let config = home.join("claude");
        std::fs::create_dir_all(&config).unwrap();
        let seeded = serde_json::json!({
            "hasCompletedOnboarding": true,
            "customApiKeyResponses": { "approved": [&KEY[KEY.len() - 20..]], "rejected": [] },
            "projects": { cwd.to_str().unwrap(): { "hasTrustDialogAccepted": true } },
        });
        std::fs::write(config.join(".claude.json"), seeded.to_string()).unwrap();
        for (k, v) in [
            ("CLAUDE_CONFIG_DIR", config.to_str().unwrap()),
            ("ANTHROPIC_BASE_URL", &format!("http://127.0.0.1:{port}")),
            ("ANTHROPIC_API_KEY", KEY),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            ("DISABLE_AUTOUPDATER", "1"),
            ("IAPEER_CLAUDE_BIN", bin.to_str().unwrap()),
        ] {
            env.push((k.to_owned(), v.to_owned()));
        }
    } else {
        let codex = home.join("codex");
        std::fs::create_dir_all(&codex).unwrap();
        std::fs::write(
            codex.join("config.toml"),
            format!(
                "model_provider = \"mock\"\nmodel = \"mock-model\"\n[model_providers.mock]\nname = \"mock\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\nwire_api = \"responses\"\nenv_key = \"MOCK_API_KEY\"\n"
            ),
        )
        .unwrap();
        for (k, v) in [
            ("CODEX_HOME", codex.to_str().unwrap()),
            ("MOCK_API_KEY", "sk-bench"),
            ("IAPEER_CODEX_BIN", bin.to_str().unwrap()),
        ] {
            env.push((k.to_owned(), v.to_owned()));
        }
    }
    Client {
        name,
        bin,
        env,
        ready: "? for shortcuts",
    }
}

fn tmux(socket: &Path) -> Command {
    let mut c = Command::new("tmux");
    c.arg("-S").arg(socket);
    c
}

/// A bare launch: tmux starts the CLI (no shell), polled to its ready
/// screen, as iapeer's ready gate polls; then the server is ended.
fn bare(client: &Client, cwd: &Path, run: &Path, i: usize) -> Duration {
    let socket = run.join(format!("bare-{i}.sock"));
    let start = Instant::now();
    let mut cmd = tmux(&socket);
    cmd.args([
        "new-session",
        "-d",
        "-s",
        "b",
        "-x",
        "200",
        "-y",
        "50",
        "-c",
    ])
    .arg(cwd);
    for (k, v) in &client.env {
        cmd.arg("-e").arg(format!("{k}={v}"));
    }
    cmd.arg(&client.bin);
    if client.name == "codex" {
        cmd.args(["--no-daemon", "-C"]).arg(cwd);
    }
    assert!(cmd.status().unwrap().success(), "tmux new-session");
    loop {
        let out = tmux(&socket)
            .args(["capture-pane", "-p", "-t", "=b:"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(client.ready) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "bare {} never ready",
            client.name
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = start.elapsed();
    let _ = tmux(&socket).arg("kill-server").status();
    took
}

fn iapeer(client: &Client, home: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iapeer"));
    cmd.env("IAPEER_HOME", home).args(args);
    for (k, v) in &client.env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "iapeer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn timed(client: &Client, home: &Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    iapeer(client, home, args);
    start.elapsed()
}

fn stats(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(v[v.len() / 2]),
        ms(v[(v.len() * 99 / 100).min(v.len() - 1)]),
    )
}

fn main() {
    for name in ["claude", "codex"] {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/realcli/node_modules/.bin")
            .join(name);
        if !bin.exists() {
            println!(
                "real {name}: skipped, {} is not installed (run `make deps`)",
                bin.display()
            );
            continue;
        }
        let dir = assert_fs::TempDir::new().unwrap();
        let home = dir.path().join("home");
        let cwd = dir.path().join("work");
        let run = dir.path().join("bare");
        std::fs::create_dir_all(&cwd).unwrap();
        std::fs::create_dir_all(&run).unwrap();
        let mock = Mock::start(
            if name == "claude" {
                "mock_anthropic"
            } else {
                "mock_openai"
            },
            dir.path(),
        );
        let client = setup(name, dir.path(), &cwd, mock.1);
        let runtime = format!("--runtime={name}");
        iapeer(
            &client,
            &home,
            &["add", "p", "--cwd", cwd.to_str().unwrap(), &runtime],
        );
        // One conversation to resume, begun by a first task.
        iapeer(
            &client,
            &home,
            &["wake", "p", "--topic", "t", "--task", "hello"],
        );
        std::thread::sleep(Duration::from_secs(2));
        iapeer(&client, &home, &["stop", "p"]);
        iapeer(&client, &home, &["start", "p"]);

        let (mut floor, mut fresh, mut resume) = (Vec::new(), Vec::new(), Vec::new());
        // Resumes first: each park names the conversation the resume was
        // on, so the next wake resumes it again. A fresh session that is
        // parked before its first prompt has nothing to resume.
        for i in 0..RUNS {
            floor.push(bare(&client, &cwd, &run, i));
            let start = Instant::now();
            let out = iapeer(&client, &home, &["wake", "p", "--topic", "t"]);
            resume.push(start.elapsed());
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(said.contains("resume"), "not a resume: {said}");
            iapeer(&client, &home, &["stop", "p"]);
            iapeer(&client, &home, &["start", "p"]);
        }
        for i in 0..RUNS {
            floor.push(bare(&client, &cwd, &run, RUNS + i));
            fresh.push(timed(&client, &home, &["wake", "p", "--fresh"]));
            iapeer(&client, &home, &["stop", "p"]);
            iapeer(&client, &home, &["start", "p"]);
        }
        let (f50, f99) = stats(&mut floor);
        let (w50, w99) = stats(&mut fresh);
        let (r50, r99) = stats(&mut resume);
        println!(
            "real {name}: bare tmux launch to ready: median {f50:.0} ms, p99 {f99:.0} ms (n={})",
            floor.len()
        );
        println!(
            "real {name}: iapeer wake --fresh to ready: median {w50:.0} ms, p99 {w99:.0} ms; {:.2}x the bare median",
            w50 / f50
        );
        println!(
            "real {name}: iapeer wake (resume) to ready: median {r50:.0} ms, p99 {r99:.0} ms; {:.2}x the bare median",
            r50 / f50
        );
        // Parked already; this ends a server a failed run left behind.
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(home.join("run/p.sock"))
            .arg("kill-server")
            .stderr(Stdio::null())
            .status();
    }
}
