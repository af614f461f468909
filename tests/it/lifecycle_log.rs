//! The decision log under concurrent writers and rotation, its golden
//! sample, and `iapeer log`.

use std::collections::HashMap;
use std::process::{Command, Stdio};

use iapeer::core::record::Record;
use iapeer::core::vocab::{Ev, Source};
use iapeer::store::log::LogWriter;

use crate::support::{fixtures, stderr, stdout, Home};

const WORKERS: usize = 8;
const LINES_PER_WORKER: usize = 400;
const MAX_BYTES: u64 = 16 * 1024;

/// Several processes append while the log rotates under them: every line
/// must be present exactly once, and none torn.
#[test]
fn concurrent_appenders_lose_nothing_across_rotations() {
    let home = Home::new();
    let log = home.log_path();
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "lifecycle_log::append_worker",
                    "--ignored",
                    "--nocapture",
                ])
                .env(
                    "IAPEER_TEST_APPEND",
                    format!("{}|{w}|{LINES_PER_WORKER}", log.display()),
                )
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut w in workers {
        assert!(w.wait().unwrap().success(), "a worker failed");
    }

    let (entries, stats) = iapeer::store::log::read_all(&log).unwrap();
    assert_eq!(stats.skipped, 0, "torn lines found");
    let mut seen: HashMap<(u64, u64), usize> = HashMap::new();
    for e in &entries {
        let worker = e.u64("pid").unwrap();
        let seq = e.u64("deaths").unwrap();
        *seen.entry((worker, seq)).or_default() += 1;
    }
    assert_eq!(entries.len(), WORKERS * LINES_PER_WORKER);
    assert_eq!(seen.len(), WORKERS * LINES_PER_WORKER, "duplicates");
    assert!(seen.values().all(|&n| n == 1));
    // Each worker's own lines stay in order, across files.
    let mut last: HashMap<u64, u64> = HashMap::new();
    for e in &entries {
        let (w, seq) = (e.u64("pid").unwrap(), e.u64("deaths").unwrap());
        if let Some(prev) = last.insert(w, seq) {
            assert!(seq > prev, "worker {w} out of order: {prev} then {seq}");
        }
    }
    let files = iapeer::store::log::log_files(&log).unwrap();
    assert!(
        files.len() > 10,
        "expected many rotations, got {}",
        files.len()
    );
    for f in &files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len <= MAX_BYTES, "{} is {len} bytes", f.display());
    }
    eprintln!(
        "{WORKERS} processes x {LINES_PER_WORKER} lines = {} lines over {} files",
        entries.len(),
        files.len()
    );
}

/// Not a test on its own: the child process of the test above.
#[test]
#[ignore = "spawned by concurrent_appenders_lose_nothing_across_rotations"]
fn append_worker() {
    let Ok(spec) = std::env::var("IAPEER_TEST_APPEND") else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let (path, worker, lines): (&str, u64, u64) = (
        parts[0],
        parts[1].parse().unwrap(),
        parts[2].parse().unwrap(),
    );
    // Keep everything, so the test can count every line.
    let mut w = LogWriter::at(std::path::Path::new(path), MAX_BYTES, 10_000);
    for seq in 0..lines {
        let mut r = Record::new(iapeer::core::clock::now_ms(), Ev::Daemon, Source::Daemon)
            .identity(format!("w{worker}"))
            .reason("concurrency test line with some padding to make rotation frequent");
        r.pid = worker as u32;
        r.deaths = Some(seq);
        w.append(&r).unwrap();
    }
}

/// The golden sample must keep parsing, and the writer must still produce
/// exactly these bytes from these values: field names and order are a
/// public interface.
#[test]
fn golden_sample_still_parses_and_round_trips() {
    let golden = std::fs::read_to_string(fixtures().join("lifecycle.golden.jsonl")).unwrap();
    let mut kinds = std::collections::HashSet::new();
    for line in golden.lines() {
        let record: Record = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("golden line no longer parses ({e}): {line}"));
        assert_eq!(record.to_line(), line, "field order or spelling changed");
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        for (k, v) in value.as_object().unwrap() {
            assert!(
                v.is_string() || v.is_number(),
                "{k} is neither string nor number"
            );
        }
        kinds.insert(record.ev);
    }
    for ev in Ev::ALL {
        assert!(
            kinds.contains(&ev),
            "the golden sample lacks an {ev:?} line"
        );
    }
}

#[test]
fn log_command_reads_across_rotations_and_filters() {
    let home = Home::new();
    let log = home.log_path();
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let mut w = LogWriter::at(&log, 1024, 100);
    let now = iapeer::core::clock::now_ms();
    for i in 0..60u64 {
        let who = if i % 3 == 0 { "alice" } else { "bob" };
        let mut r = Record::new(now - 1000 * (60 - i as i64), Ev::Reset, Source::Cli).identity(who);
        r.deaths = Some(i);
        w.append(&r).unwrap();
    }
    assert!(iapeer::store::log::log_files(&log).unwrap().len() > 3);

    let out = home.run(&["log", "--peer", "alice", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 20);
    let seqs: Vec<u64> = lines
        .iter()
        .map(|v| v["deaths"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (0..60).step_by(3).collect::<Vec<_>>(),
        "oldest first, across files"
    );

    // -n takes the last n from the end back, through the rotations, in
    // the same order; with --ev and --since it keeps to them.
    let deaths = |args: &[&str]| -> Vec<u64> {
        let out = home.run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["deaths"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(
        deaths(&["log", "--peer", "alice", "-n", "7", "--json"]),
        (39..60).step_by(3).collect::<Vec<_>>()
    );
    assert_eq!(
        deaths(&["log", "--peer", "alice", "-n", "100", "--json"]),
        (0..60).step_by(3).collect::<Vec<_>>()
    );
    assert_eq!(
        deaths(&["log", "--ev", "reset", "--since", "1h", "-n", "3", "--json"]),
        vec![57, 58, 59]
    );
    assert_eq!(
        deaths(&["log", "--peer", "carol", "-n", "5", "--json"]),
        Vec::<u64>::new()
    );

    let since = iapeer::core::clock::format_ms(now - 10_000);
    let out = home.run(&["log", "--since", &since, "--ev", "reset"]);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 10, "{text}");
    assert!(text.lines().all(|l| l.contains(" reset ")), "{text}");
    let out = home.run(&["log", "--since", "1h", "--until", &since]);
    assert_eq!(stdout(&out).lines().count(), 50);

    let bad = home.run(&["log", "--ev", "explode"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("wake, ready"), "{}", stderr(&bad));
    let bad = home.run(&["log", "--peer", "../etc"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn a_malformed_variable_is_exit_2_naming_it() {
    let home = Home::new();
    let out = home
        .iapeer()
        .env("IAPEER_IDLE_SECS", "abc")
        .args(["log"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("IAPEER_IDLE_SECS"),
        "{}",
        stderr(&out)
    );
}
