//! Crash consistency under a storm, and concurrency under load.
//!
//! The storm: dozens of peers; actors fire random wakes, task deliveries,
//! agent crashes, self-fresh, stops/starts, resets, restarts, refreshes,
//! the records a host restart leaves behind, hostile records (another
//! home's socket, an unverified pid, a copied home's) and script
//! `touch`es, while the daemon is `kill -9`ed at random moments and
//! restarted, every other run held to a few open files. After every kill
//! the invariants are checked from disk (see `support::invariants`); at
//! the end, that nothing a hostile record named was touched and that
//! `why` tells every peer's whole story. `make test` runs
//! IAPEER_STORM_KILLS (default 20) kills; `make stress` runs 250.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::invariants::{self, Counts};
use crate::support::{set_limit, wait_until, Home};

const MAX: usize = 3;
const WINDOW_MS: i64 = 8_000;
/// The open-file limit of every other daemon run.
const FEW_FILES: u64 = 48;

/// xorshift64*: seeded, printable, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    std::env::var("IAPEER_STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| iapeer::core::clock::now_ms() as u64 | 1)
}

fn storm_home() -> (Home, Vec<String>) {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "0.5")
        .set("IAPEER_IDLE_SECS", "4")
        .set("IAPEER_CRASHLOOP_MAX", &MAX.to_string())
        .set(
            "IAPEER_CRASHLOOP_WINDOW_SECS",
            &(WINDOW_MS / 1000).to_string(),
        )
        .set("IAPEER_BOOT_DEADLINE_SECS", "5")
        .set("IAPEER_WAKE_LOCK_WAIT_SECS", "2")
        .set("IAPEER_LIFECYCLE_LOG_MAX_BYTES", "262144")
        // Keep every line: the invariants read the whole history.
        .set("IAPEER_LIFECYCLE_LOG_KEEP", "100000");
    let mut names = Vec::new();
    for i in 0..20 {
        let n = format!("s{i}");
        home.add(&n, &["--runtime", "shell", "--", "sleep", "100000"]);
        names.push(n);
    }
    for i in 0..4 {
        let n = format!("a{i}");
        home.add(
            &n,
            &[
                "--runtime",
                "shell",
                "--policy",
                "always",
                "--",
                "sleep",
                "100000",
            ],
        );
        names.push(n);
    }
    for i in 0..6 {
        let n = format!("c{i}");
        home.add(&n, &[]);
        names.push(n);
    }
    (home, names)
}

/// One random act on a random peer, as an operator, a script or the agent
/// itself would do it.
fn act(home: &Home, names: &[String], rng: &mut Rng, bystander: u32, dropped: &Mutex<Vec<String>>) {
    let name = &names[rng.below(names.len() as u64) as usize];
    let topics = ["billing", "onboarding", "search"];
    let topic = topics[rng.below(3) as usize];
    let roll = rng.below(100);
    let run = |args: &[&str]| {
        let _ = home.run(args);
    };
    match roll {
        28..35 => {
            // A script queues a task for a Claude peer (written elsewhere,
            // renamed in), and sometimes wakes it; the daemon delivers it
            // once the session is idle.
            let clauds: Vec<&String> = names.iter().filter(|n| n.starts_with('c')).collect();
            let name = clauds[rng.below(clauds.len() as u64) as usize];
            let task = format!("qtask-{:016x}", rng.next());
            let dir = home.path().join("state/queue").join(name);
            let _ = std::fs::create_dir_all(&dir);
            let tmp = home.path().join(format!("{task}.tmp"));
            // Named as the queue's own files are (docs/files.md): in time
            // order with the tasks the CLI queues.
            let file = format!(
                "{:013}-{}.task",
                iapeer::core::clock::now_ms(),
                9000 + rng.below(1000)
            );
            if std::fs::write(&tmp, &task).is_ok() && std::fs::rename(&tmp, dir.join(file)).is_ok()
            {
                dropped.lock().unwrap().push(task);
            }
            if rng.below(2) == 0 {
                run(&["wake", name]);
            }
        }
        0..35 => {
            if rng.below(2) == 0 {
                run(&[
                    "wake",
                    name,
                    "--topic",
                    topic,
                    "--task",
                    "look at the failing test",
                ]);
            } else {
                run(&["wake", name]);
            }
        }
        35..50 => {
            // pane_pid is 0 while a launch is under way; kill(0) would hit
            // this test's own process group.
            // A planted record's pid is the bystander's: not an agent.
            if let Some(pid) = home
                .session(name)
                .filter(|s| {
                    !s["session"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("planted-"))
                })
                .and_then(|s| s["pane_pid"].as_i64())
                .filter(|&p| p > 0)
            {
                // SAFETY: killing an agent this test's home launched.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        50..58 => {
            let _ = std::fs::write(home.marker(name, "new-eager"), "");
        }
        58..63 => {
            if name.starts_with('c') {
                run(&["wake", name, "--task", "self-fresh"]);
            }
        }
        63..70 => {
            let _ = std::fs::write(home.marker(name, "stopped"), "");
        }
        70..77 => {
            let _ = std::fs::remove_file(home.marker(name, "stopped"));
        }
        77..83 => run(&["stop", name]),
        83..89 => run(&["start", name]),
        89..92 => run(&["reset", name]),
        92..94 => run(&["restart", name]),
        94..95 => run(&["refresh", name]),
        95..97 => host_restart_record(home, name),
        97..99 => hostile_record(home, name, bystander, rng.next()),
        _ => run(&["explain", name]),
    }
}

/// What the storm plants must not hurt: a file outside `run/` and a
/// process that is no agent's.
struct Bystanders {
    file: std::path::PathBuf,
    process: std::process::Child,
}

impl Bystanders {
    fn new(home: &Home) -> Self {
        let file = home.path().join("precious.sock");
        std::fs::write(&file, "not the daemon's to delete").unwrap();
        let process = std::process::Command::new("sleep")
            .arg("100000")
            .spawn()
            .unwrap();
        Bystanders { file, process }
    }

    fn check(&mut self) {
        assert!(self.file.exists(), "a planted record's socket was removed");
        assert!(
            self.process.try_wait().unwrap().is_none(),
            "a planted record's pid was killed"
        );
    }
}

impl Drop for Bystanders {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A hostile record, planted where no session is recorded and taken away
/// again a moment later: in turn one naming a socket outside `run/`, one
/// naming the bystander's pid without its start time, and one written in
/// another state directory (a copied home). The daemon and the CLIs meet
/// it meanwhile; none may act on it.
fn hostile_record(home: &Home, name: &str, bystander: u32, nonce: u64) {
    let Some(lock) = take_wake_lock(home, name) else {
        return;
    };
    if home.has(name, "session") {
        return;
    }
    // Each planted record a session of its own, as each would be.
    let planted = format!("planted-{nonce:x}");
    let mut rec = serde_json::json!({
        "identity": name, "runtime": "shell", "cwd": home.workdir(name),
        "socket": home.path().join(format!("run/{name}.sock")),
        "pane_pid": bystander,
        "started_at": "2026-11-30T08:00:00.000Z", "mode": "fresh",
        "session": planted, "cause": "first-wake",
        "ready_at": "2026-11-30T08:00:01.000Z",
    });
    match nonce % 3 {
        0 => {
            rec["socket"] = home
                .path()
                .join("precious.sock")
                .display()
                .to_string()
                .into()
        }
        1 => rec["home"] = "1:2".into(),
        _ => {} // the bystander's pid, with no start time to check it by
    }
    let path = home.marker(name, "session");
    let tmp = home.lifecycle().join(format!(".{name}.session.tmp"));
    let _ = std::fs::write(&tmp, serde_json::to_vec(&rec).unwrap());
    let _ = std::fs::rename(&tmp, &path);
    let _ = lock.unlock();
    std::thread::sleep(Duration::from_millis(200));
    // Taken away under the lock, if it is still the one planted (the last
    // kind may have been ended as a live session meanwhile, and a new one
    // launched).
    if lock.lock().is_ok() {
        let ours = home
            .session(name)
            .is_some_and(|r| r["session"].as_str() == Some(planted.as_str()));
        if ours {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// What a host restart leaves behind: a `.session` from another boot,
/// its processes long gone. Written under the peer's wake lock, as only a
/// launch would write it, and only where no session is recorded.
fn host_restart_record(home: &Home, name: &str) {
    let Some(_lock) = take_wake_lock(home, name) else {
        return;
    };
    if home.has(name, "session") {
        return;
    }
    let gone = std::process::Command::new("true")
        .spawn()
        .and_then(|mut c| c.wait().map(|_| c.id()))
        .unwrap_or(1);
    let rec = serde_json::json!({
        "identity": name,
        "runtime": "shell",
        "cwd": home.workdir(name),
        "socket": home.path().join(format!("run/{name}.sock")),
        "pane_pid": gone,
        "started_at": "2026-11-30T08:00:00.000Z",
        "mode": "fresh",
        "session": format!("before-reboot-{gone}"),
        "cause": "first-wake",
        "ready_at": "2026-11-30T08:00:01.000Z",
        "boot_id": "00000000-0000-4000-8000-000000000000",
    });
    let tmp = home.lifecycle().join(format!(".{name}.session.tmp"));
    let _ = std::fs::write(&tmp, serde_json::to_vec(&rec).unwrap());
    let _ = std::fs::rename(&tmp, home.marker(name, "session"));
}

/// `name`'s wake lock, taken as a launch takes it (released when the file
/// closes), if nobody holds it now.
fn take_wake_lock(home: &Home, name: &str) -> Option<std::fs::File> {
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(home.marker(name, "lock"))
        .ok()?;
    lock.try_lock().ok()?;
    Some(lock)
}

fn storm(kills: usize) -> Counts {
    let seed = seed();
    eprintln!("storm: seed {seed} (IAPEER_STORM_SEED reproduces it), {kills} daemon kills");
    let (home, names) = storm_home();
    let mut bystanders = Bystanders::new(&home);
    let bystander = bystanders.process.id();
    let home = Arc::new(home);
    let stop = Arc::new(AtomicBool::new(false));
    let acts = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(Mutex::new(Vec::new()));
    let actors: Vec<_> = (0..3)
        .map(|a| {
            let (home, names, stop, acts, dropped) = (
                Arc::clone(&home),
                names.clone(),
                Arc::clone(&stop),
                Arc::clone(&acts),
                Arc::clone(&dropped),
            );
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ (a as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                while !stop.load(Ordering::Relaxed) {
                    act(&home, &names, &mut rng, bystander, &dropped);
                    acts.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10 + rng.below(60)));
                }
            })
        })
        .collect();

    let mut rng = Rng(seed);
    let started = Instant::now();
    for k in 0..kills {
        let d = home.daemon();
        if k % 2 == 1 {
            // Every other run short of descriptors: thirty peers' pidfds
            // and its own files do not fit.
            set_limit(d.pid(), libc::RLIMIT_NOFILE, FEW_FILES, FEW_FILES);
        }
        // Most runs are short; every fifth lives long enough for sessions
        // to read idle and queued tasks to be typed in (and cut short).
        let life = if k % 5 == 4 {
            2500 + rng.below(2000)
        } else {
            50 + rng.below(500)
        };
        std::thread::sleep(Duration::from_millis(life));
        drop(d); // SIGKILL, whatever it was doing
        if let Err(broken) = invariants::check(home.path(), false, (MAX, WINDOW_MS)) {
            stop.store(true, Ordering::Relaxed);
            panic!("after kill {k} (seed {seed}): {broken}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for a in actors {
        a.join().unwrap();
    }

    // Settle: a daemon finishes whatever the kills interrupted (and
    // delivers what waits in the queues of live peers); then every peer is
    // stopped, which parks every live session.
    let mut d = home.daemon();
    std::thread::sleep(Duration::from_secs(1));
    for n in names
        .iter()
        .filter(|n| n.starts_with('c') && home.has(n, "session"))
    {
        let _ = home.run(&["wait", n, "--for", "queue-empty", "--timeout", "20s"]);
    }
    for n in &names {
        let _ = home.run(&["stop", n]);
    }
    wait_until(Duration::from_secs(30), "every session to end", || {
        names.iter().all(|n| !home.has(n, "session"))
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(2)), Some(0));
    let counts = invariants::check(home.path(), true, (MAX, WINDOW_MS))
        .unwrap_or_else(|e| panic!("settled (seed {seed}): {e}"));
    bystanders.check();
    let (delivered, waiting) =
        queued_tasks_were_neither_lost_nor_repeated(&home, &dropped.lock().unwrap());
    why_reads_only_the_recent_past_and_tells_the_whole_story(&home, &names);
    let leftover = invariants::tmux_servers(home.path());
    assert!(
        leftover.is_empty(),
        "tmux servers left behind: {leftover:?}"
    );
    eprintln!(
        "storm: {kills} kills in {:.0}s, {} acts; {} tasks queued by scripts, {delivered} delivered once, {waiting} still waiting, none twice, none lost; {} lines, {} launch decisions, {} ready, {} deaths, {} parks, {} refusals; every invariant held",
        started.elapsed().as_secs_f64(),
        acts.load(Ordering::Relaxed),
        dropped.lock().unwrap().len(),
        counts.lines,
        counts.decisions,
        counts.readies,
        counts.deaths,
        counts.parks,
        counts.refusals
    );
    counts
}

/// Every task a script queued was typed into a session once, by the
/// agent's own transcript, or still waits in its queue: none lost, none
/// delivered twice. Returns how many were delivered and how many wait.
fn queued_tasks_were_neither_lost_nor_repeated(home: &Home, dropped: &[String]) -> (usize, usize) {
    fn jsonl(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                jsonl(&p, out);
            } else if p.extension().is_some_and(|x| x == "jsonl") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    jsonl(&home.path().join("claude/projects"), &mut files);
    let mut turns: Vec<String> = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap_or_default().lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                if v["type"] == "user" {
                    turns.push(v["message"]["content"].as_str().unwrap_or("").to_owned());
                }
            }
        }
    }
    // Waiting (`.task`), or typed with its delivery not yet settled
    // (`.delivering`: the next idle turn settles it by the transcript).
    let (mut waiting_files, mut settling): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for q in std::fs::read_dir(home.path().join("state/queue"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for t in std::fs::read_dir(q.path()).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(t.path()).unwrap_or_default();
            match t.path().extension().and_then(|x| x.to_str()) {
                Some("task") => waiting_files.push(text),
                Some("delivering") => settling.push(text),
                _ => {}
            }
        }
    }
    let (mut delivered, mut waiting) = (0, 0);
    for task in dropped {
        let typed = turns.iter().filter(|t| t.contains(task.as_str())).count();
        let queued = waiting_files.iter().any(|w| w.contains(task.as_str()));
        let unsettled = settling.iter().any(|w| w.contains(task.as_str()));
        assert!(typed <= 1, "{task} was delivered {typed} times");
        assert!(
            typed == 1 || queued || unsettled,
            "{task} was lost: neither typed nor queued"
        );
        assert!(
            !(typed == 1 && queued),
            "{task} was delivered and waits to go again"
        );
        if typed == 1 {
            delivered += 1;
        } else {
            waiting += 1;
        }
    }
    (delivered, waiting)
}

/// `why` reads the log from its end, only as far back as its story needs:
/// for every peer of a storm's long, tangled history, what it tells is what
/// the whole of that peer's history says.
fn why_reads_only_the_recent_past_and_tells_the_whole_story(home: &Home, names: &[String]) {
    let entries = home.entries();
    for name in names {
        let mut mine: Vec<&iapeer::core::record::Entry> = entries
            .iter()
            .filter(|e| e.identity() == Some(name.as_str()))
            .collect();
        if let Some(born) = mine
            .iter()
            .rposition(|e| matches!(e.str("outcome"), Some("added" | "removed")))
        {
            mine.drain(..=born);
        }
        let mut whole = iapeer::core::history::history(mine);
        whole.lines.clear();
        let out = home.run(&["why", name, "--json"]);
        assert!(out.status.success(), "why {name}");
        let told: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            told["history"],
            serde_json::to_value(&whole).unwrap(),
            "why {name} tells another story than its whole history"
        );
    }
}

#[test]
fn a_storm_with_the_daemon_killed_at_random_keeps_every_invariant() {
    let kills = std::env::var("IAPEER_STORM_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(20);
    let c = storm(kills);
    // (A self-fresh, a restart and a host restart are ends, not deaths:
    // fewer deaths than acts that end sessions.)
    assert!(
        c.decisions > 20 && c.deaths > 1 && c.parks > 5,
        "the storm did little: {c:?}"
    );
}

/// Many CLI processes act on the same few peers at once while the daemon
/// runs and the log rotates: no duplicate launch, no lost line, no
/// deadlock.
#[test]
fn many_clis_on_the_same_peers_at_once() {
    let mut home = Home::new();
    home.set("IAPEER_LIFECYCLE_LOG_MAX_BYTES", "1024")
        .set("IAPEER_LIFECYCLE_LOG_KEEP", "100000")
        .set("IAPEER_TICK_SECS", "0.5");
    for n in ["p0", "p1", "p2"] {
        home.add(n, &["--runtime", "shell", "--", "sleep", "100000"]);
    }
    let _d = home.daemon();
    let mut rng = Rng(seed());
    let started = Instant::now();
    let mut children = Vec::new();
    for _ in 0..48 {
        let peer = format!("p{}", rng.below(3));
        let op = match rng.below(10) {
            0..5 => "wake",
            5..7 => "stop",
            7..9 => "start",
            _ => "reset",
        };
        let child = home
            .iapeer()
            .args([op, &peer])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        children.push((op, child));
    }
    let mut resets = Vec::new();
    for (op, mut c) in children {
        let status = c.wait().unwrap();
        let code = status.code().unwrap_or(-1);
        assert!([0, 3, 6].contains(&code), "{op} exited {code}");
        if op == "reset" && code == 0 {
            resets.push(c.id());
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(60),
        "took {elapsed:?}: a deadlock?"
    );
    let entries = home.entries();
    for pid in resets {
        let n = entries
            .iter()
            .filter(|e| e.str("ev") == Some("reset") && e.u64("pid") == Some(u64::from(pid)))
            .count();
        assert_eq!(n, 1, "reset by pid {pid} logged {n} times");
    }
    assert!(
        iapeer::store::log::log_files(&home.log_path())
            .unwrap()
            .len()
            > 2,
        "the log rotated"
    );
    invariants::check(home.path(), false, (3, 300_000)).unwrap();
    for n in ["p0", "p1", "p2"] {
        let live = invariants::tmux_servers(home.path())
            .iter()
            .filter(|c| c.contains(&format!("/{n}.sock")))
            .count();
        assert!(live <= 1, "{n} has {live} tmux servers");
    }
    eprintln!(
        "concurrency: 48 CLI processes on 3 peers in {:.1}s, {} lines",
        elapsed.as_secs_f64(),
        entries.len()
    );
}
