//! Delivering work without interrupting it (DESIGN §13): a task for a peer
//! mid-turn is queued, and the queue is delivered in order, one task per
//! turn, exactly once, across a daemon killed mid-delivery.

use std::path::Path;
use std::time::Duration;

use iapeer::core::record::Entry;

use crate::support::{code, stderr, stdout, wait_until, Home};

/// Every user turn the fake agents recorded under this home, in order:
/// Claude transcripts and Codex rollouts alike.
fn typed(home: &Home) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "jsonl") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&home.path().join("claude/projects"), &mut files);
    walk(&home.path().join("codex/sessions"), &mut files);
    let mut turns: Vec<(String, String)> = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap_or_default().lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let ts = v["timestamp"].as_str().unwrap_or("").to_owned();
            if v["type"] == "user" {
                turns.push((
                    ts,
                    v["message"]["content"].as_str().unwrap_or("").to_owned(),
                ));
            } else if v["payload"]["role"] == "user" {
                let text = v["payload"]["content"][0]["text"].as_str().unwrap_or("");
                turns.push((ts, text.to_owned()));
            }
        }
    }
    turns.sort();
    turns.into_iter().map(|(_, t)| t).collect()
}

/// Waits (30 s at most) for `name`'s queue to be delivered.
fn queue_empty(home: &Home, name: &str) {
    let out = home.run(&["wait", name, "--for", "queue-empty", "--timeout", "30s"]);
    assert_eq!(code(&out), 0, "{name}: {}", stderr(&out));
}

fn task_lines(home: &Home, name: &str, outcome: &str) -> Vec<Entry> {
    home.lines(name, "task")
        .into_iter()
        .filter(|e| e.str("outcome") == Some(outcome))
        .collect()
}

fn queue_json(home: &Home, name: &str) -> serde_json::Value {
    let out = home.run(&["queue", name, "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Regression: a task for a busy agent was typed into the middle of its
/// turn and logged `delivered` at once. Now it waits in the queue and is
/// typed once the turn is over, exactly once; for both runtimes.
#[test]
fn a_task_sent_mid_turn_is_queued_and_delivered_after_the_turn_exactly_once() {
    for runtime in ["claude", "codex"] {
        let mut home = Home::new();
        home.set("IAPEER_TICK_SECS", "1");
        home.add("ann", &["--runtime", runtime]);
        let _daemon = home.daemon();
        assert_eq!(code(&home.run(&["wake", "ann", "--task", "work 8"])), 0);
        home.wait_line("ann", "working", |e| {
            e.str("ev") == Some("activity") && e.str("state") == Some("working")
        });
        let out = home.run(&["wake", "ann", "--task", "the second task"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(
            stdout(&out).contains("queued"),
            "{runtime}: {}",
            stdout(&out)
        );
        let queued = task_lines(&home, "ann", "queued");
        assert_eq!(queued.len(), 1, "{runtime}");
        assert_eq!(queued[0].str("task"), Some("the second task"));
        let waiting = queue_json(&home, "ann");
        assert_eq!(waiting["queues"][0]["tasks"][0]["text"], "the second task");
        assert!(
            !typed(&home).contains(&"the second task".to_owned()),
            "{runtime}: typed mid-turn"
        );
        // --no-wait returns once the task is queued, behind the other.
        let out = home.run(&[
            "wake",
            "ann",
            "--no-wait",
            "--json",
            "--task",
            "the third task",
        ]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(said["status"], "queued", "{runtime}: {said}");

        let out = home.run(&["wait", "ann", "--for", "queue-empty", "--timeout", "30s"]);
        assert_eq!(code(&out), 0, "{runtime}: {}", stderr(&out));
        let delivered = task_lines(&home, "ann", "delivered");
        assert_eq!(delivered.len(), 2, "{runtime}");
        assert_eq!(
            typed(&home),
            ["work 8", "the second task", "the third task"],
            "{runtime}: after the turn, in order, once each"
        );
        // The turn had ended when it went in.
        let idle = home
            .lines("ann", "activity")
            .into_iter()
            .find(|e| e.str("state") == Some("idle"))
            .unwrap();
        assert!(delivered[0].ts_ms() > idle.ts_ms(), "{runtime}");
    }
}

/// Three tasks dropped into the queue by a script while the peer sleeps
/// arrive in order after one wake, one per turn.
#[test]
fn three_tasks_queued_while_asleep_arrive_in_order_after_one_wake() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "1");
    home.add("bea", &[]);
    let dir = home.path().join("state/queue/bea");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, task) in ["work 1", "topic: fixes\nthe second", "the third"]
        .iter()
        .enumerate()
    {
        // As a script does it: written elsewhere, renamed in.
        let tmp = home.path().join(format!("t{i}"));
        std::fs::write(&tmp, task).unwrap();
        std::fs::rename(&tmp, dir.join(format!("{}-script.task", 100 + i))).unwrap();
    }
    let _daemon = home.daemon();
    assert_eq!(code(&home.run(&["wake", "bea"])), 0);
    let out = home.run(&["wait", "bea", "--for", "queue-empty", "--timeout", "40s"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(typed(&home), ["work 1", "the second", "the third"]);
    assert_eq!(task_lines(&home, "bea", "delivered").len(), 3);
    let topic = std::fs::read_to_string(home.marker("bea", "topic")).unwrap();
    assert_eq!(topic.trim(), "fixes", "the queued task's topic");
}

/// Drops `text` into `name`'s queue as a script does: the folder made if
/// need be, the file written elsewhere and renamed in.
fn drop_task(home: &Home, name: &str, stem: &str, text: &[u8]) {
    let dir = home.path().join("state/queue").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = home.path().join(format!("{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{stem}.task"))).unwrap();
}

/// A task dropped into a sleeping peer's queue wakes it (DESIGN §13: a
/// task for a sleeping peer wakes it), seen by the watcher, not at a tick
/// ten minutes away; the wake says why. A stopped peer's task waits for
/// `start`, and a file that cannot be a task (not UTF-8) wakes nobody. A
/// `shell` peer, with no turn to wait for, is typed its tasks in order.
#[test]
fn a_task_dropped_for_a_sleeping_peer_wakes_it_and_a_stopped_ones_waits() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "600");
    home.add("dot", &[]);
    home.add("eli", &[]);
    home.add("fen", &[]);
    assert_eq!(code(&home.run(&["stop", "eli"])), 0);
    let _daemon = home.daemon();
    drop_task(&home, "dot", "100-script", b"topic: docs\nthe dropped task");
    drop_task(&home, "eli", "100-script", b"the held task");
    drop_task(&home, "fen", "100-script", b"not UTF-8: \xff\xfe");

    queue_empty(&home, "dot");
    assert_eq!(typed(&home), ["the dropped task"]);
    let woke = home
        .lines("dot", "wake")
        .into_iter()
        .find(|e| e.str("mode") == Some("fresh"))
        .expect("a wake line");
    assert_eq!(woke.str("source"), Some("daemon"), "{}", woke.line);
    assert_eq!(woke.str("cause"), Some("first-wake"), "{}", woke.line);
    assert_eq!(woke.str("topic"), Some("docs"), "{}", woke.line);
    assert_eq!(
        woke.str("reason"),
        Some("a task waits in its queue"),
        "{}",
        woke.line
    );

    // Stopped: its task waits, and `start` brings it up to take it, and
    // says so.
    assert!(home.lines("eli", "wake").is_empty(), "a stopped peer woke");
    assert!(home.lines("fen", "wake").is_empty(), "a bad task woke fen");
    let started = home.run(&["start", "eli"]);
    assert_eq!(code(&started), 0, "{}", stderr(&started));
    assert!(
        stdout(&started).contains("1 task waits in its queue"),
        "{}",
        stdout(&started)
    );
    queue_empty(&home, "eli");
    assert_eq!(typed(&home), ["the dropped task", "the held task"]);
    assert!(home.lines("fen", "wake").is_empty(), "a bad task woke fen");

    home.add("gil", &["--runtime", "shell", "--", "cat"]);
    drop_task(&home, "gil", "100-a", b"first line");
    drop_task(&home, "gil", "101-b", b"second line");
    queue_empty(&home, "gil");
    let delivered: Vec<_> = task_lines(&home, "gil", "delivered")
        .iter()
        .map(|e| e.str("task").unwrap_or("").to_owned())
        .collect();
    assert_eq!(delivered, ["first line", "second line"]);
    wait_until(Duration::from_secs(10), "both lines on its screen", || {
        let peek = stdout(&home.run(&["peek", "gil"]));
        peek.contains("first line") && peek.contains("second line")
    });
}

/// A task typed once and never confirmed does not wake its sleeping peer
/// by itself (it may have been taken: a park then a wake would type it
/// again, park after park); the next wake by anyone delivers it, and its
/// note goes with it.
#[test]
fn an_unconfirmed_task_waits_for_a_wake_by_someone_else() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "1");
    home.add("hap", &[]);
    home.add("ivy", &[]);
    let _daemon = home.daemon();
    let dir = home.path().join("state/queue/hap");
    std::fs::create_dir_all(&dir).unwrap();
    // As a delivery that went unconfirmed in an earlier session left it.
    std::fs::write(dir.join(".100-script.unconfirmed"), "an-old-session").unwrap();
    drop_task(&home, "hap", "100-script", b"typed once already");
    // Beside it, a task that does wake its peer: the daemon has looked.
    drop_task(&home, "ivy", "100-script", b"a new task");
    queue_empty(&home, "ivy");
    // Two ticks more for good measure.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        home.lines("hap", "wake").is_empty(),
        "woken by an unconfirmed task"
    );

    assert_eq!(code(&home.run(&["wake", "hap"])), 0);
    queue_empty(&home, "hap");
    assert_eq!(task_lines(&home, "hap", "delivered").len(), 1);
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "its note went with it"
    );
}

/// A delivery cut short by a killed daemon leaves its task `.delivering`.
/// The next daemon settles it by the runtime's record: a task already taken
/// is logged delivered and not typed again; one never typed goes in once.
#[test]
fn a_delivery_cut_short_is_settled_by_the_record_neither_lost_nor_repeated() {
    let mut home = Home::new();
    home.set("IAPEER_TICK_SECS", "1");
    home.add("cat", &[]);
    assert_eq!(
        code(&home.run(&["wake", "cat", "--task", "already taken"])),
        0
    );
    let dir = home.path().join("state/queue/cat");
    std::fs::create_dir_all(&dir).unwrap();
    // As the killed daemon left them: renamed to .delivering, the first
    // typed (its text is in the transcript), the second not yet.
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    for (name, text) in [
        ("0000000000001-0001", "already taken"),
        ("0000000000002-0001", "never typed"),
    ] {
        let file = dir.join(format!("{name}.delivering"));
        std::fs::write(&file, text).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(past)
            .unwrap();
    }
    let _daemon = home.daemon();
    queue_empty(&home, "cat");
    assert_eq!(typed(&home), ["already taken", "never typed"]);
    let delivered = task_lines(&home, "cat", "delivered");
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    assert!(delivered[0]
        .str("reason")
        .is_some_and(|r| r.contains("taken before")));
}

/// `queue rm` takes a waiting task out; a name that is not a task's is
/// exit 2, naming it.
#[test]
fn queue_rm_removes_a_waiting_task_and_refuses_what_is_not_one() {
    let home = Home::new();
    home.add("dot", &[]);
    let dir = home.path().join("state/queue/dot");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("0000000000001-0001.task"), "later").unwrap();
    let listed = home.run(&["queue"]);
    assert!(stdout(&listed).contains("later"), "{}", stdout(&listed));
    let out = home.run(&["queue", "rm", "dot", "../../peers/dot.json"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a task's name"),
        "{}",
        stderr(&out)
    );
    let out = home.run(&["queue", "rm", "dot", "0000000000009-0001"]);
    assert_eq!(code(&out), 2);
    let out = home.run(&["queue", "rm", "dot", "0000000000001-0001"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(queue_json(&home, "dot")["queues"][0]["tasks"]
        .as_array()
        .unwrap()
        .is_empty());
    wait_until(Duration::from_secs(1), "nothing left", || {
        std::fs::read_dir(&dir).unwrap().count() == 0
    });
}
