//! `make bench`: the cost of reading what every live session is doing
//! (DESIGN §12), one round of the daemon's activity reader over 300
//! sessions, beside a floor measured in the same run: opening and reading
//! one small file per session (what reading a runtime's record at least
//! costs). Claude sessions idle and mid-turn (their process records), and
//! Codex sessions idle (their rollouts); the screen is not looked at in a
//! steady round, and one look (a tmux capture) is timed on its own.

use std::path::Path;
use std::time::{Duration, Instant};

use iapeer::core::peer::Peer;
use iapeer::core::session::SessionRecord;
use iapeer::daemon::activity::BenchReader;
use iapeer::store::config::Config;

const SESSIONS: usize = 300;
const ROUNDS: usize = 60;
const GOAL_MS: f64 = 10.0;

fn config(home: &Path) -> Config {
    let home = home.to_path_buf();
    Config::from_lookup(move |k| match k {
        "IAPEER_HOME" | "HOME" => Some(home.clone().into()),
        "CLAUDE_CONFIG_DIR" => Some(home.join("claude").into()),
        "CODEX_HOME" => Some(home.join("codex").into()),
        _ => None,
    })
    .expect("config")
}

fn peer(name: &str, runtime: &str, cwd: &Path) -> Peer {
    let json = serde_json::json!({"name": name, "cwd": cwd, "runtime": runtime});
    iapeer::core::peer::parse(Path::new("bench.json"), json.to_string().as_bytes(), None)
        .expect("peer")
}

fn record(
    name: &str,
    runtime: &str,
    cwd: &Path,
    pid: i32,
    resume: Option<String>,
) -> SessionRecord {
    serde_json::from_value(serde_json::json!({
        "identity": name, "runtime": runtime, "cwd": cwd,
        "socket": format!("/nonexistent/{name}.sock"), "pane_pid": pid,
        "started_at": "2026-12-01T10:00:00.000Z", "mode": "fresh",
        "resume_ref": resume, "session": format!("s-{name}"),
        "ready_at": "2026-12-01T10:00:01.000Z",
    }))
    .expect("record")
}

/// `SESSIONS` Claude sessions, each with its process record saying
/// `status` and a transcript.
fn claude_fleet(home: &Path, status: &str) -> Vec<(Peer, SessionRecord)> {
    let sessions = home.join("claude/sessions");
    std::fs::create_dir_all(&sessions).unwrap();
    (0..SESSIONS)
        .map(|i| {
            let name = format!("c{i}");
            let cwd = home.join("work").join(&name);
            std::fs::create_dir_all(&cwd).unwrap();
            let pid = 3_000_000 + i as i32;
            let id = format!("00000000-0000-4000-8000-{i:012}");
            let slug: String = cwd
                .to_string_lossy()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            let dir = home.join("claude/projects").join(slug);
            std::fs::create_dir_all(&dir).unwrap();
            let entry = |role: &str| {
                serde_json::json!({"type": role, "cwd": cwd, "sessionId": id,
                    "timestamp": "2026-12-01T10:00:02.000Z",
                    "message": {"role": role, "content": "the task", "stop_reason": "end_turn"}})
                .to_string()
            };
            std::fs::write(
                dir.join(format!("{id}.jsonl")),
                format!("{}\n{}\n", entry("user"), entry("assistant")),
            )
            .unwrap();
            let rec = serde_json::json!({"pid": pid, "sessionId": id, "cwd": cwd,
                "status": status, "statusUpdatedAt": 1_796_125_939_585_i64});
            std::fs::write(sessions.join(format!("{pid}.json")), rec.to_string()).unwrap();
            (
                peer(&name, "claude", &cwd),
                record(&name, "claude", &cwd, pid, Some(id)),
            )
        })
        .collect()
}

/// `SESSIONS` Codex sessions, each with a rollout whose last turn is over.
fn codex_fleet(home: &Path) -> Vec<(Peer, SessionRecord)> {
    let day = home.join("codex/sessions/2026/12/01");
    std::fs::create_dir_all(&day).unwrap();
    let real = include_str!("../fixtures/real/codex/rollout-first-turn.jsonl");
    (0..SESSIONS)
        .map(|i| {
            let name = format!("x{i}");
            let cwd = home.join("work").join(&name);
            std::fs::create_dir_all(&cwd).unwrap();
            let id = format!("00000000-0000-4000-9000-{i:012}");
            let mut lines: Vec<String> = real.lines().map(str::to_owned).collect();
            lines[0] = serde_json::json!({"timestamp": "2026-12-01T11:50:26.560Z",
                "type": "session_meta", "payload": {"id": id, "cwd": cwd}})
            .to_string();
            std::fs::write(
                day.join(format!("rollout-2026-12-01T11-50-26-{id}.jsonl")),
                lines.join("\n") + "\n",
            )
            .unwrap();
            (
                peer(&name, "codex", &cwd),
                record(&name, "codex", &cwd, 3_100_000 + i as i32, Some(id)),
            )
        })
        .collect()
}

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(v[((v.len() - 1) as f64 * q).round() as usize]);
    (at(0.0), at(0.5), at(0.99))
}

fn main() {
    let home = assert_fs::TempDir::new().unwrap();
    let claude_idle = claude_fleet(&home.path().join("ci"), "idle");
    let claude_busy = claude_fleet(&home.path().join("cb"), "busy");
    let codex_idle = codex_fleet(&home.path().join("xi"));
    let mut readers: Vec<(&str, BenchReader)> = vec![
        (
            "claude, idle",
            BenchReader::new(config(&home.path().join("ci")), claude_idle).unwrap(),
        ),
        (
            "claude, mid-turn",
            BenchReader::new(config(&home.path().join("cb")), claude_busy).unwrap(),
        ),
        (
            "codex, idle",
            BenchReader::new(config(&home.path().join("xi")), codex_idle).unwrap(),
        ),
    ];
    // The floor: one small file opened and read per session.
    let files: Vec<_> = (0..SESSIONS)
        .map(|i| {
            home.path()
                .join(format!("ci/claude/sessions/{}.json", 3_000_000 + i))
        })
        .collect();
    let floor_round = || {
        let t = Instant::now();
        for f in &files {
            std::hint::black_box(std::fs::read(f).unwrap());
        }
        t.elapsed()
    };
    // Warm-up: past the looks a new watch takes (a turn just over is
    // looked at twice, a second apart).
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        for (_, r) in &mut readers {
            r.round();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut floor = Vec::new();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); readers.len()];
    for _ in 0..ROUNDS {
        floor.push(floor_round());
        for (i, (_, r)) in readers.iter_mut().enumerate() {
            let t = Instant::now();
            r.round();
            times[i].push(t.elapsed());
        }
    }
    let (fmin, fmed, fp99) = stats(floor);
    println!(
        "activity reading, one round over {SESSIONS} live sessions ({ROUNDS} rounds, interleaved)"
    );
    println!("  floor (read one small file per session): min {fmin:.2} ms  median {fmed:.2} ms  p99 {fp99:.2} ms");
    for ((what, _), t) in readers.iter().zip(times) {
        let (min, med, p99) = stats(t);
        println!(
            "  {what:<17} min {min:.2} ms  median {med:.2} ms  p99 {p99:.2} ms  = {:.1}x floor, {:.1} us/session  (goal <= {GOAL_MS} ms)",
            med / fmed,
            med * 1000.0 / SESSIONS as f64
        );
    }
    // One look at a screen: a tmux capture of a live pane.
    let socket = home.path().join("look.sock");
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(args)
            .output()
            .expect("tmux")
    };
    tmux(&[
        "new-session",
        "-d",
        "-s",
        "look",
        "-x",
        "200",
        "-y",
        "50",
        "sleep 600",
    ]);
    let looks: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            tmux(&["capture-pane", "-p", "-J", "-t", "look:", "-S", "-130"]);
            t.elapsed()
        })
        .collect();
    tmux(&["kill-server"]);
    let (min, med, p99) = stats(looks);
    println!("  one screen look (tmux capture-pane): min {min:.2} ms  median {med:.2} ms  p99 {p99:.2} ms");
}
