//! `make bench`: how fast the daemon reacts and how little it costs.
//!
//! - death → `reaped-gone` logged (5 ms after its wake, and after 300 ms
//!   up, in turn), and `touch NAME.new-eager` on a sleeping peer → fresh
//!   `wake` logged: a real daemon, 100 runs each, timed from the
//!   kill/touch to the line being in lifecycle.log;
//! - one full pass over 1,000 and 10,000 sleeping identities, and with 100
//!   and 200 live sessions (in process);
//! - the idle daemon's resident memory, and its CPU over 60 s with 100 live
//!   sessions;
//! - its CPU while one peer's action keeps failing (its `.deaths` is a
//!   directory, so no death can be counted) and while the disk is full
//!   (the log cannot grow), each over 30 s, beside the same daemon idle.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use iapeer::core::vocab::Source;
use iapeer::daemon::Supervisor;
use iapeer::engine::ctx::Ctx;
use iapeer::store::config::Config;

const RUNS: usize = 100;

fn main() {
    // `cargo bench --bench daemon -- reaction` runs the parts named.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    if run("reaction") {
        reaction_times();
    }
    if run("pass") {
        pass_costs();
    }
    if run("errors") {
        cost_of_persisting_errors();
    }
}

struct Home {
    dir: assert_fs::TempDir,
}

impl Home {
    fn new() -> Self {
        Home {
            dir: assert_fs::TempDir::new().expect("temp dir"),
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iapeer"));
        c.env("IAPEER_HOME", self.path())
            .env("IAPEER_NO_SCOPE", "1")
            .env("IAPEER_TICK_SECS", "60")
            // The death benchmark kills one peer a hundred times.
            .env("IAPEER_CRASHLOOP_MAX", "1000000")
            .env_remove("NOTIFY_SOCKET");
        c
    }
    fn run(&self, args: &[&str]) {
        let out = self.cmd().args(args).output().expect("run iapeer");
        assert!(
            out.status.success(),
            "iapeer {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fn log(&self) -> PathBuf {
        self.path().join("logs/iapeer/lifecycle.log")
    }
    fn marker(&self, name: &str, kind: &str) -> PathBuf {
        self.path()
            .join("state/lifecycle")
            .join(format!("{name}.{kind}"))
    }
    fn pane_pid(&self, name: &str) -> i32 {
        let text = std::fs::read_to_string(self.marker(name, "session")).expect("session");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        v["pane_pid"].as_i64().expect("pid") as i32
    }
    fn daemon(&self) -> Running {
        let child = self
            .cmd()
            // The default tick, as a user would run it.
            .env_remove("IAPEER_TICK_SECS")
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("daemon");
        let running = Running(child);
        wait(Duration::from_secs(10), || {
            std::fs::read_to_string(self.log()).is_ok_and(|l| l.contains("\"started\""))
        });
        running
    }
}

/// A daemon killed on drop, even when the benchmark panics.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        for e in std::fs::read_dir(self.path().join("run"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "sock") {
                let _ = Command::new("tmux")
                    .arg("-S")
                    .arg(e.path())
                    .arg("kill-server")
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Spins until `needle` appears in the log after `from`.
fn until_logged(path: &Path, from: u64, needle: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = String::new();
    let mut at = from;
    loop {
        if let Ok(mut f) = File::open(path) {
            if f.seek(SeekFrom::Start(at)).is_ok() {
                let mut chunk = String::new();
                if f.read_to_string(&mut chunk).is_ok() {
                    at += chunk.len() as u64;
                    buf.push_str(&chunk);
                }
            }
        }
        if buf.contains(needle) {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "{needle} never logged");
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn wait(timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn reaction_times() {
    let home = Home::new();
    home.run(&[
        "add",
        "d",
        "--cwd",
        "/tmp",
        "--runtime",
        "shell",
        "--",
        "sleep",
        "600",
    ]);
    home.run(&[
        "add",
        "e",
        "--cwd",
        "/tmp",
        "--runtime",
        "shell",
        "--",
        "sleep",
        "600",
    ]);
    let daemon = home.daemon();
    // A live session beside the dying one, for the tmux call's scale.
    home.run(&["wake", "e"]);

    // Two kinds of death, in turn: 5 ms after its wake (a crash at start,
    // the daemon still busy with the wake's own events), and after a
    // while up (the daemon idle, as for most deaths).
    let mut early = Vec::with_capacity(RUNS);
    let mut settled = Vec::with_capacity(RUNS);
    let mut floors = Vec::with_capacity(RUNS);
    let mut tmux_calls = Vec::with_capacity(RUNS);
    for round in 0..2 * RUNS {
        // The floors once per pair of deaths, beside the early one.
        let (up, into) = if round % 2 == 0 {
            floors.push(death_floor(&home.path().join("floor.log")));
            tmux_calls.push(one_tmux_call(&home));
            (Duration::from_millis(5), &mut early)
        } else {
            (Duration::from_millis(300), &mut settled)
        };
        home.run(&["wake", "d"]);
        let pid = home.pane_pid("d");
        std::thread::sleep(up);
        let from = log_len(&home.log());
        // SAFETY: killing the session process we started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        into.push(until_logged(
            &home.log(),
            from,
            "\"reaped-gone\"",
            Duration::from_secs(10),
        ));
        wait(Duration::from_secs(10), || {
            !home.marker("d", "session").exists()
        });
    }

    home.run(&["stop", "e"]);
    home.run(&["start", "e"]);
    let mut eager = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let from = log_len(&home.log());
        File::create(home.marker("e", "new-eager")).expect("touch");
        let t = until_logged(
            &home.log(),
            from,
            "\"needs-eager-fresh\"",
            Duration::from_secs(10),
        );
        eager.push(t);
        wait(Duration::from_secs(10), || {
            std::fs::read_to_string(home.log())
                .is_ok_and(|l| l[from as usize..].contains("\"ev\":\"ready\""))
        });
        home.run(&["stop", "e"]);
        home.run(&["start", "e"]);
    }
    let floor = report(
        "floor: a child's death seen through its pidfd → one line appended and synced",
        &mut floors,
    );
    report(
        "one tmux call on a live session (capture-pane), for scale",
        &mut tmux_calls,
    );
    for (kind, deaths) in [
        ("5 ms after its wake", &mut early),
        ("after 300 ms up", &mut settled),
    ] {
        let death = report(&format!("death {kind} → reaped-gone logged"), deaths);
        println!(
            "death {kind} → logged, median: {:.1}x the floor (target p99 <= 5 ms: the exit \
             status and the last lines are one tmux call, read while the end is journaled)",
            death.as_secs_f64() / floor.as_secs_f64()
        );
    }
    report(
        "touch .new-eager (sleeping peer) → fresh wake logged",
        &mut eager,
    );
    std::thread::sleep(Duration::from_millis(500));
    println!("idle daemon RSS (2 peers): {}", rss(daemon.0.id()));
}

fn pass_costs() {
    let home = Home::new();
    std::fs::create_dir_all(home.path().join("peers")).expect("peers dir");
    let define = |range: std::ops::Range<usize>| {
        for i in range {
            let def = serde_json::json!({"name": format!("s{i}"), "cwd": "/tmp", "runtime": "shell", "command": ["sleep", "600"]});
            std::fs::write(
                home.path().join(format!("peers/s{i}.json")),
                def.to_string(),
            )
            .expect("write");
        }
    };
    let config = Config::from_lookup(|k| match k {
        "IAPEER_HOME" => Some(home.path().into()),
        _ => std::env::var_os(k),
    })
    .expect("config");
    // SAFETY: set before any other thread of this bench reads the variable.
    unsafe { std::env::set_var("IAPEER_NO_SCOPE", "1") };
    let ctx = Arc::new(Ctx::open(config, Source::Daemon).expect("ctx"));
    let supervisor = || Supervisor::new(Arc::clone(&ctx), mpsc::channel().0).expect("supervisor");

    define(0..1000);
    let mut sup = supervisor();
    report(
        "full pass over 1,000 sleeping identities",
        &mut time_passes(&mut sup, 50),
    );
    define(1000..10_000);
    let mut sup = supervisor();
    report(
        "full pass over 10,000 sleeping identities",
        &mut time_passes(&mut sup, 50),
    );

    for n in [100, 200] {
        for i in n - 100..n {
            home.run(&["wake", &format!("s{i}")]);
        }
        let mut sup = supervisor();
        sup.full_pass()
            .expect("the first pass registers the sessions");
        report(
            &format!("full pass over 10,000 identities with {n} live sessions"),
            &mut time_passes(&mut sup, 50),
        );
    }
    drop(ctx);

    for i in 100..200 {
        home.run(&["stop", &format!("s{i}")]);
    }
    let daemon = home.daemon();
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_ticks(daemon.0.id());
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(60));
    let ticks = cpu_ticks(daemon.0.id()) - before;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    println!(
        "idle daemon, 10,000 peers, 100 live sessions, default tick: {:.2}% CPU over {:.0} s ({} ticks); RSS {}",
        ticks as f64 / hz / t.elapsed().as_secs_f64() * 100.0,
        t.elapsed().as_secs_f64(),
        ticks,
        rss(daemon.0.id())
    );
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; f[0] is field 3.
    let field = |n: usize| {
        f.get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

fn time_passes(sup: &mut Supervisor, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            sup.full_pass().expect("pass");
            t.elapsed()
        })
        .collect()
}

fn rss(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .map(|l| l.trim_start_matches("VmRSS:").trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// The least a death can cost: a child killed, its exit seen by polling
/// its pidfd, one line appended and `fdatasync`ed.
fn death_floor(log: &Path) -> Duration {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut child = Command::new("sleep").arg("600").spawn().expect("sleep");
    // SAFETY: pidfd_open on our own child's pid; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    // SAFETY: a descriptor just returned to us and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .expect("floor log");
    let start = Instant::now();
    child.kill().expect("kill");
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd on a descriptor we own.
    assert_eq!(unsafe { libc::poll(&mut poll, 1, 10_000) }, 1, "pidfd poll");
    out.write_all(b"{\"ev\":\"supervise\",\"action\":\"reaped-gone\"}\n")
        .expect("append");
    out.sync_data().expect("fdatasync");
    let took = start.elapsed();
    let _ = child.wait();
    took
}

/// One tmux client call against a live session's server.
fn one_tmux_call(home: &Home) -> Duration {
    let socket = home.path().join("run/e.sock");
    let start = Instant::now();
    let out = Command::new("tmux")
        .arg("-S")
        .arg(&socket)
        .args(["capture-pane", "-p", "-J", "-t", "=e:", "-S", "-65"])
        .output()
        .expect("tmux");
    assert!(out.status.success(), "tmux capture-pane on e");
    start.elapsed()
}

/// Prints the median, p99 and max of `v` (sorting it); returns the median.
fn report(what: &str, v: &mut [Duration]) -> Duration {
    v.sort();
    let p = |q: usize| v[(v.len() * q / 100).min(v.len() - 1)];
    println!(
        "{what}: median {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
        p(50).as_secs_f64() * 1e3,
        p(99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
        v.len()
    );
    p(50)
}

/// The daemon's CPU while one peer's end keeps failing, and while the log's
/// disk is full, each against the same daemon idle (the floor).
fn cost_of_persisting_errors() {
    const OVER: Duration = Duration::from_secs(30);
    let home = Home::new();
    home.run(&[
        "add",
        "e",
        "--cwd",
        "/tmp",
        "--runtime",
        "shell",
        "--",
        "sleep",
        "600",
    ]);
    let spawn = || {
        let mut c = home.cmd();
        c.env("IAPEER_TICK_SECS", "0.1");
        let child = c
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("daemon");
        let d = Running(child);
        std::thread::sleep(Duration::from_secs(1));
        d
    };
    let cpu_over = |d: &Running| {
        let before = cpu_ticks(d.0.id());
        let t = Instant::now();
        std::thread::sleep(OVER);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (cpu_ticks(d.0.id()) - before) as f64 / hz / t.elapsed().as_secs_f64() * 100.0
    };
    let d = spawn();
    let floor = cpu_over(&d);
    drop(d);

    home.run(&["wake", "e"]);
    // A `.deaths` that is a directory: the death cannot be counted, so its
    // end fails on every try.
    let deaths = home.marker("e", "deaths");
    let _ = std::fs::remove_file(&deaths);
    std::fs::create_dir(&deaths).expect("plant a directory");
    let d = spawn();
    // SAFETY: killing the agent this bench launched.
    unsafe { libc::kill(home.pane_pid("e"), libc::SIGKILL) };
    std::thread::sleep(Duration::from_secs(1));
    let failing = cpu_over(&d);
    let lines = std::fs::read_to_string(home.log()).unwrap_or_default();
    let errors = lines.matches("tick-error").count();
    drop(d);

    // A full disk: the log may not grow by a byte (RLIMIT_FSIZE), and an
    // always peer dies, so every pass has a death it cannot record.
    let d = spawn();
    home.run(&[
        "add",
        "k",
        "--cwd",
        "/tmp",
        "--policy",
        "always",
        "--runtime",
        "shell",
        "--",
        "sleep",
        "600",
    ]);
    wait(Duration::from_secs(10), || {
        home.marker("k", "session").exists()
    });
    std::thread::sleep(Duration::from_millis(500));
    let size = log_len(&home.log());
    let lim = libc::rlimit {
        rlim_cur: size,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit on our own child, with a valid struct.
    unsafe {
        libc::prlimit(
            d.0.id() as i32,
            libc::RLIMIT_FSIZE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    // SAFETY: killing the agent this bench launched.
    unsafe { libc::kill(home.pane_pid("k"), libc::SIGKILL) };
    std::thread::sleep(Duration::from_secs(1));
    let full = cpu_over(&d);
    drop(d);
    println!(
        "daemon CPU over {:.0} s at a 0.1 s tick: idle {floor:.2}% (floor), one peer failing every pass {failing:.2}% ({:.1}x floor, {errors} tick-error line(s)), full disk {full:.2}% ({:.1}x floor); goal < 5% of a core",
        OVER.as_secs_f64(),
        failing / floor.max(0.01),
        full / floor.max(0.01),
    );
}
