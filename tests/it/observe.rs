//! Postmortem and live view: `why`, `events`, metrics, Prometheus.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use crate::support::{code, stderr, stdout, wait_until, Home};

fn why(home: &Home, name: &str) -> (serde_json::Value, String) {
    let json = home.run(&["why", name, "--json"]);
    assert_eq!(code(&json), 0, "{}", stderr(&json));
    let text = home.run(&["why", name, "-v"]);
    (serde_json::from_str(&stdout(&json)).unwrap(), stdout(&text))
}

#[test]
fn why_after_a_crash() {
    let home = Home::new();
    home.add("alice", &[]);
    let _d = home.daemon();
    assert_eq!(code(&home.run(&["wake", "alice"])), 0);
    assert_eq!(code(&home.run(&["wake", "alice", "--task", "crash"])), 0);
    home.wait_line("alice", "the death", |e| {
        e.str("action") == Some("crashed-while-working")
    });
    assert_eq!(code(&home.run(&["wake", "alice"])), 0);
    let (j, text) = why(&home, "alice");
    assert_eq!(j["state"], "alive");
    assert_eq!(j["history"]["bring_up"]["cause"], "crash-or-self-close");
    assert_eq!(j["history"]["previous_end"]["action"], "reaped-gone");
    assert_eq!(j["history"]["previous_end"]["exit_status"], "42");
    assert_eq!(j["history"]["previous_task"], "crash");
    assert_eq!(j["crash_loop"]["deaths_in_window"], 1);
    assert!(text.contains("ended on its own (exit status 42)"), "{text}");
    assert!(text.contains("a crash needs a clean start"), "{text}");
    assert!(
        text.contains("simulated crash"),
        "the last screen lines: {text}"
    );
    assert!(
        text.contains("working on a task when it died: \"crash\""),
        "{text}"
    );
    assert!(
        text.contains("From these lines of lifecycle.log"),
        "-v shows the lines: {text}"
    );
}

#[test]
fn why_after_a_self_fresh() {
    let home = Home::new();
    home.add("alice", &[]);
    let _d = home.daemon();
    assert_eq!(code(&home.run(&["wake", "alice"])), 0);
    assert_eq!(
        code(&home.run(&["wake", "alice", "--task", "self-fresh"])),
        0
    );
    home.wait_line("alice", "the eager ready", |e| {
        e.str("ev") == Some("ready") && e.str("cause") == Some("needs-eager-fresh")
    });
    let (j, text) = why(&home, "alice");
    assert_eq!(j["history"]["bring_up"]["cause"], "needs-eager-fresh");
    assert_eq!(j["history"]["previous_end"]["action"], "self-fresh");
    assert!(
        j["history"]["previous_task"].is_null(),
        "a requested end is not a crash"
    );
    assert!(
        text.contains("the agent asked for a fresh start (self-fresh; not a death)"),
        "{text}"
    );
}

#[test]
fn why_after_an_idle_park_and_resume() {
    let mut home = Home::new();
    home.set("IAPEER_IDLE_SECS", "1");
    home.add("alice", &[]);
    let _d = home.daemon();
    assert_eq!(
        code(&home.run(&["wake", "alice", "--topic", "billing", "--task", "hi"])),
        0
    );
    home.wait_line("alice", "parked", |e| {
        e.str("action") == Some("reaped-idle")
    });
    wait_until(Duration::from_secs(5), "the park to finish", || {
        !home.has("alice", "session")
    });
    assert_eq!(code(&home.run(&["wake", "alice", "--topic", "billing"])), 0);
    let (j, text) = why(&home, "alice");
    assert_eq!(j["history"]["bring_up"]["mode"], "resume");
    assert_eq!(j["history"]["bring_up"]["cause"], "idle-reaped-resume");
    assert_eq!(j["history"]["previous_end"]["action"], "reaped-idle");
    assert!(
        j["history"]["previous_end"]["idle_seconds"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert!(text.contains("It last came up resumed"), "{text}");
    assert!(text.contains("was parked by iapeer after"), "{text}");
    // And why it was judged idle, from its line.
    assert!(
        text.contains(
            "idle (no activity since its conversation's last entry; its runtime's own record says"
        ),
        "{text}"
    );
}

#[test]
fn why_after_a_new_topic() {
    let home = Home::new();
    home.add("alice", &[]);
    home.run(&["wake", "alice", "--topic", "billing"]);
    home.run(&["stop", "alice"]);
    home.run(&["start", "alice"]);
    home.run(&["wake", "alice", "--topic", "onboarding"]);
    let (j, text) = why(&home, "alice");
    assert_eq!(j["history"]["bring_up"]["cause"], "idle-reaped-new-topic");
    assert_eq!(j["history"]["previous_end"]["action"], "parked-stopped");
    assert!(text.contains("new topic (\"onboarding\")"), "{text}");
    assert!(text.contains("operator stop"), "{text}");
}

#[test]
fn why_after_a_crash_loop_refusal() {
    let mut home = Home::new();
    home.set("FAKE_AGENT_CRASH_AT_START", "1");
    home.add("alice", &[]);
    for _ in 0..3 {
        assert_eq!(code(&home.run(&["wake", "alice"])), 1);
    }
    assert_eq!(code(&home.run(&["wake", "alice"])), 4);
    let (j, text) = why(&home, "alice");
    assert_eq!(j["state"], "crash-looping");
    assert_eq!(j["history"]["since_end"]["cause"], "launch-failed");
    assert_eq!(j["history"]["refusals_since"][0]["cause"], "crash-loop");
    assert_eq!(j["crash_loop"]["deaths_in_window"], 3);
    assert!(j["crash_loop"]["retry_after"].is_string());
    assert!(
        text.contains("exited during start-up (exit status 3)"),
        "{text}"
    );
    assert!(text.contains("launches are refused until"), "{text}");
    assert!(text.contains("crash-loop guard refused it"), "{text}");
}

#[test]
fn why_reads_the_golden_fixture() {
    let home = Home::new();
    for name in ["alice", "bob", "carol"] {
        home.add(name, &[]);
    }
    let log = home.log_path();
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::copy(
        crate::support::fixtures().join("lifecycle.golden.jsonl"),
        &log,
    )
    .unwrap();
    let (j, text) = why(&home, "bob");
    assert_eq!(j["history"]["previous_end"]["action"], "reaped-gone");
    assert_eq!(j["history"]["refusals_since"][0]["cause"], "crash-loop");
    assert!(text.contains("Error: out of memory"), "{text}");
    let (j, _) = why(&home, "carol");
    assert_eq!(j["history"]["bring_up"]["cause"], "needs-eager-fresh");
}

#[test]
fn events_follow_delivers_every_line_once_across_rotations() {
    let mut home = Home::new();
    home.set("IAPEER_LIFECYCLE_LOG_MAX_BYTES", "2000")
        .set("IAPEER_LIFECYCLE_LOG_KEEP", "200");
    home.add("alice", &[]);
    home.run(&["reset", "alice"]);
    let mut follower = home
        .iapeer()
        .args(["events", "--follow", "--from-start"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = follower.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(out).lines() {
            let line = line.unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let done = v["reason"] == "last";
            lines.push(v);
            if done {
                break;
            }
        }
        lines
    });
    // Writers in other processes, rotating the log about every 15 lines.
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let cmds: Vec<_> = (0..40)
                .map(|_| {
                    let mut c = home.iapeer();
                    c.args(["reset", "alice"]);
                    c
                })
                .collect();
            std::thread::spawn(move || {
                for mut c in cmds {
                    assert!(c.output().unwrap().status.success());
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    // The end marker, written last.
    let mut r = iapeer::core::record::Record::new(
        iapeer::core::clock::now_ms(),
        iapeer::core::vocab::Ev::Reset,
        iapeer::core::vocab::Source::Cli,
    )
    .identity("alice")
    .reason("last");
    r.deaths = Some(0);
    iapeer::store::log::LogWriter::at(&home.log_path(), 2000, 200)
        .append(&r)
        .unwrap();
    let lines = reader.join().unwrap();
    let _ = follower.kill();
    let _ = follower.wait();
    let logged = home.entries();
    assert!(
        iapeer::store::log::log_files(&home.log_path())
            .unwrap()
            .len()
            > 5,
        "rotated"
    );
    assert_eq!(lines.len(), logged.len(), "every line, once");
    for (got, want) in lines.iter().zip(&logged) {
        assert_eq!(got, &serde_json::Value::Object(want.fields.clone()));
    }
}

#[test]
fn metrics_survive_a_daemon_restart() {
    let mut home = Home::new();
    let metrics = home.path().join("metrics.prom");
    home.set("IAPEER_METRICS_FILE", metrics.to_str().unwrap());
    home.add("alice", &[]);
    home.add("keeper", &["--policy", "always"]);
    let mut d = home.daemon();
    home.wait_line("keeper", "up", |e| e.str("ev") == Some("ready"));
    home.run(&["wake", "alice", "--topic", "t", "--task", "hi"]);
    home.run(&["stop", "alice"]);
    home.run(&["start", "alice"]);
    home.run(&["wake", "alice", "--topic", "t"]);
    home.kill_session_process("keeper", libc::SIGKILL);
    wait_until(Duration::from_secs(10), "relaunched", || {
        home.count("keeper", |e| e.str("ev") == Some("ready")) == 2
    });
    let read = || std::fs::read_to_string(&metrics).unwrap_or_default();
    // Settled first: both sessions' activity read and logged (a loaded
    // machine reads it seconds after the wake), and written out.
    wait_until(
        Duration::from_secs(30),
        "metrics written, activity read",
        || {
            let text = read();
            text.contains("iapeer_deaths_total{peer=\"keeper\"} 1")
                && ["alice", "keeper"].iter().all(|p| {
                    text.contains(&format!(
                        "iapeer_peer_activity{{peer=\"{p}\",state=\"idle\"}} 1"
                    ))
                })
        },
    );
    std::thread::sleep(Duration::from_millis(1200));
    let before = read();
    assert!(
        before.contains("iapeer_wakes_total{peer=\"alice\",mode=\"resume\"} 1"),
        "{before}"
    );
    assert!(
        before.contains("iapeer_parks_total{peer=\"alice\",reason=\"stop\"} 1"),
        "{before}"
    );

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(2)), Some(0));
    std::fs::remove_file(&metrics).unwrap();
    let _d2 = home.daemon();
    wait_until(Duration::from_secs(10), "metrics rewritten", || {
        !read().is_empty()
    });
    assert_eq!(read(), before, "the same numbers after a restart");

    // And status shows the same counters.
    let doc: serde_json::Value =
        serde_json::from_str(&stdout(&home.run(&["status", "--json"]))).unwrap();
    let alice = doc["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "alice")
        .unwrap();
    assert_eq!(alice["lifecycle_metrics"]["wakes_resume"], 1);
    assert_eq!(alice["lifecycle_metrics"]["parks_stop"], 1);
    assert!(alice["lifecycle_metrics"]["latency_ms"].is_u64());
}

#[test]
fn the_prometheus_file_parses_with_a_real_parser() {
    let mut home = Home::new();
    let metrics = home.path().join("metrics.prom");
    home.set("IAPEER_METRICS_FILE", metrics.to_str().unwrap());
    home.add("alice", &[]);
    home.add("odd-name_2", &[]);
    let _d = home.daemon();
    home.run(&["wake", "alice"]);
    home.run(&["stop", "odd-name_2"]);
    wait_until(Duration::from_secs(10), "metrics", || {
        std::fs::read_to_string(&metrics).is_ok_and(|t| t.contains("state=\"stopped\""))
    });
    let text = std::fs::read_to_string(&metrics).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("parses");
    let find = |name: &str, peer: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get("peer") == Some(peer))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(find("iapeer_wakes_total", "alice"), Some(1.0));
    assert!(find("iapeer_last_bringup_latency_seconds", "alice").unwrap() > 0.0);
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "iapeer_peer_state"
            && s.labels.get("peer") == Some("odd-name_2")
            && s.labels.get("state") == Some("stopped")));
    assert!(
        scrape.docs.contains_key("iapeer_deaths_total"),
        "HELP lines"
    );
    for s in &scrape.samples {
        assert!(s.metric.starts_with("iapeer_"), "{}", s.metric);
    }
}

#[test]
fn log_follow_prints_new_matching_lines() {
    let home = Home::new();
    home.add("alice", &[]);
    home.add("bob", &[]);
    let mut child = home
        .iapeer()
        .args(["log", "--follow", "--peer", "alice"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    home.run(&["reset", "bob"]);
    home.run(&["reset", "alice"]);
    // History first (the add), then the new line.
    let line = BufReader::new(out)
        .lines()
        .map_while(|l| l.ok())
        .find(|l| !l.contains("outcome=added"))
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains(" reset ") && line.contains("alice"), "{line}");
}
