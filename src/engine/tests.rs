//! The engine against the fake host: real files, real processes standing
//! in for panes, no tmux. What the integration tests show end to end, these
//! pin at the engine's own seams: how often it asks the host for what.

use assert_fs::TempDir;

use crate::core::crash_ring::CrashRing;
use crate::core::identity::Identity;
use crate::core::peer::Peer;
use crate::core::record::Entry;
use crate::core::session::{EndKind, Ending};
use crate::core::vocab::{Action, Ev, Source};
use crate::core::wake_plan::Ask;
use crate::engine::ctx::Ctx;
use crate::engine::ending::{self, Settled};
use crate::engine::wake::{self, Woke};
use crate::runtime::fake::FakeHost;
use crate::store::config::Config;
use crate::store::definitions::save_peer;
use crate::store::log;
use crate::store::markers::{Flag, Marker};

struct Bench {
    home: TempDir,
    ctx: Ctx,
    host: FakeHost,
    id: Identity,
}

/// A home with one shell peer `a` working in the home itself.
fn bench() -> Bench {
    let home = TempDir::new().unwrap();
    let config = Config::from_lookup(|k| match k {
        "IAPEER_HOME" | "HOME" => Some(home.path().into()),
        _ => None,
    })
    .unwrap();
    let host = FakeHost::showing("$ ");
    let ctx = Ctx::with_host(config, Source::Cli, Box::new(host.clone())).unwrap();
    let id = Identity::parse("a").unwrap();
    let b = Bench {
        home,
        ctx,
        host,
        id,
    };
    b.define(|_| {});
    b
}

impl Bench {
    fn define(&self, edit: impl FnOnce(&mut Peer)) {
        let json = serde_json::json!({
            "name": "a",
            "cwd": self.home.path(),
            "runtime": "shell",
            "command": ["sleep", "1000"],
        });
        let mut peer: Peer = serde_json::from_value(json).unwrap();
        edit(&mut peer);
        save_peer(&self.ctx.config.paths, &peer).unwrap();
    }

    fn peer(&self) -> Peer {
        self.ctx.peer(&self.id).unwrap()
    }

    fn lines(&self, matches: impl Fn(&Entry) -> bool) -> usize {
        let (all, _) = log::read_all(&self.ctx.config.paths.lifecycle_log).unwrap();
        all.iter().filter(|e| matches(e)).count()
    }

    fn wake(&self) -> Result<Woke, wake::WakeFailure> {
        wake::wake(&self.ctx, &self.id, &Ask::default())
    }

    fn exit_code(&self) -> Option<i32> {
        self.wake().err().map(|f| f.error.exit_code())
    }
}

#[test]
fn a_death_is_settled_once() {
    let b = bench();
    assert!(matches!(b.wake(), Ok(Woke::Launched { .. })));
    let rec = b.ctx.state.session(&b.id).unwrap().unwrap();
    b.host.crash(&rec.socket);

    let peer = b.peer();
    for _ in 0..3 {
        assert_eq!(
            ending::settle(&b.ctx, &b.id, Some(&peer)).unwrap(),
            Settled::None
        );
    }
    let gone = |e: &Entry| {
        e.ev() == Some(Ev::Supervise)
            && e.str("action") == Some(Action::ReapedGone.as_str())
            && e.str("session") == Some(rec.session.as_str())
    };
    assert_eq!(b.lines(gone), 1, "one death line");
    let said = |e: &Entry| {
        gone(e) && e.str("exit_status") == Some("signal 9") && e.str("last_lines") == Some("$ ")
    };
    assert_eq!(b.lines(said), 1, "with its exit status and last lines");
    assert_eq!(b.ctx.state.deaths(&b.id).unwrap().ring.entries().len(), 1);
    assert!(b.ctx.state.session(&b.id).unwrap().is_none());
    assert_eq!(b.host.calls().kill, 1, "the dead pane is cleared once");
    assert_eq!(b.host.calls().launch, 1);
}

/// A death is journaled while its pane is read; a process killed after
/// the journal leaves the words to whoever finishes the end, who reads
/// them from the pane (kept until the end is done).
#[test]
fn a_death_journaled_before_its_pane_was_read_is_finished_with_its_last_words() {
    let b = bench();
    b.wake().unwrap();
    let mut rec = b.ctx.state.session(&b.id).unwrap().unwrap();
    b.host.crash(&rec.socket);
    rec.ending = Some(Ending {
        words_unread: true,
        ..Ending::daemon_death(Action::ReapedGone.as_str(), b.ctx.now())
    });
    b.ctx.state.write_session(&b.id, &rec).unwrap();

    let peer = b.peer();
    assert_eq!(
        ending::settle(&b.ctx, &b.id, Some(&peer)).unwrap(),
        Settled::None
    );
    let said = |e: &Entry| {
        e.str("action") == Some(Action::ReapedGone.as_str())
            && e.str("session") == Some(rec.session.as_str())
            && e.str("exit_status") == Some("signal 9")
            && e.str("last_lines") == Some("$ ")
    };
    assert_eq!(b.lines(said), 1, "one death line, with its last words");
    assert!(b.ctx.state.session(&b.id).unwrap().is_none());
    assert_eq!(b.ctx.state.deaths(&b.id).unwrap().ring.entries().len(), 1);
}

/// A peer whose gate reads no screen has its record written launching,
/// then ready, and nothing between: a launcher killed between the two
/// leaves it launching, and whoever looks next adopts what came up.
#[test]
fn a_launch_left_at_launching_is_adopted_by_the_next_look() {
    let b = bench();
    b.wake().unwrap();
    let up = b.ctx.state.session(&b.id).unwrap().unwrap();
    let mut left = up.clone();
    left.pane_pid = 0;
    left.pane_start = None;
    left.ready_at = None;
    b.ctx.state.write_session(&b.id, &left).unwrap();

    let peer = b.peer();
    match ending::settle(&b.ctx, &b.id, Some(&peer)).unwrap() {
        Settled::Alive(rec) => assert_eq!(rec.pane_pid, up.pane_pid),
        other => panic!("not adopted: {other:?}"),
    }
    let adopted = |e: &Entry| {
        e.str("action") == Some(Action::Adopted.as_str())
            && e.str("session") == Some(up.session.as_str())
    };
    assert_eq!(b.lines(adopted), 1);
    assert_eq!(b.host.calls().launch, 1, "not launched again");
    let rec = b.ctx.state.session(&b.id).unwrap().unwrap();
    assert_eq!(rec.pane_pid, up.pane_pid);
}

/// Regression: a pass read the clock once to see whether the record alone
/// said idle, and again, after its slow reads of the files, to decide. A
/// session just short of idle at the first reading was parked by the
/// second without its activity measured, mid-turn (seen under load with
/// the real Claude: parked 2 s after its task, while a tool ran).
#[test]
fn a_session_is_parked_idle_only_once_its_activity_is_measured() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use crate::core::clock::{self, EpochMs};
    use crate::core::session::SessionRecord;
    use crate::engine::supervise::run_pass;

    const LIMIT_MS: EpochMs = 2_000;
    // Whether its screen changed a moment ago, and what the line says.
    let cases = [(true, None), (false, Some("no activity since it came up"))];
    for (screen_changed, parked) in cases {
        let b = bench();
        b.define(|p| p.idle_secs = Some(2));
        b.wake().unwrap();
        // It came up just short of its idle limit ago, as the first
        // reading of the clock has it; every later one is 0.5 s on.
        let first = clock::now_ms();
        let mut rec: SessionRecord = b.ctx.state.session(&b.id).unwrap().unwrap();
        rec.ready_at = Some(clock::format_ms(first - LIMIT_MS + 100));
        rec.started_at = clock::format_ms(first - LIMIT_MS + 50);
        b.ctx.state.write_session(&b.id, &rec).unwrap();
        b.host.set_activity(screen_changed.then_some(first + 400));
        let read = Arc::new(AtomicBool::new(false));
        let slow = Ctx::with_host(
            b.ctx.config.clone(),
            Source::Daemon,
            Box::new(b.host.clone()),
        )
        .unwrap()
        .with_clock(Arc::new(move || {
            first
                + if read.swap(true, Ordering::SeqCst) {
                    500
                } else {
                    0
                }
        }));

        let peer = b.peer();
        run_pass(&slow, &b.id, Some(&peer), false).unwrap();
        let lines: Vec<Entry> = log::read_all(&b.ctx.config.paths.lifecycle_log)
            .unwrap()
            .0
            .into_iter()
            .filter(|e| e.str("action") == Some(Action::ReapedIdle.as_str()))
            .collect();
        let said: Vec<Option<&str>> = lines.iter().map(|e| e.str("reason")).collect();
        match parked {
            None => assert!(said.is_empty(), "parked while its screen changed: {said:?}"),
            Some(reason) => assert_eq!(said, [Some(reason)]),
        }
    }
}

#[test]
fn a_park_is_journaled_then_finished_by_whoever_looks_next() {
    let b = bench();
    b.wake().unwrap();
    let rec = b.ctx.state.session(&b.id).unwrap().unwrap();
    let session = rec.session.clone();

    // The host fails mid-park: the park is journaled, its marker and its
    // line written, the session not yet ended.
    b.host.fail_next_kill();
    assert!(ending::park(&b.ctx, &b.id, rec.clone(), Action::ReapedIdle, Some(61)).is_err());
    let journaled = b.ctx.state.session(&b.id).unwrap().unwrap();
    assert_eq!(
        journaled.ending.as_ref().map(|e| e.kind),
        Some(EndKind::Park)
    );
    assert!(b.ctx.state.exists(&b.id, Marker::IdleReaped).unwrap());
    assert!(b.host.has_session(&rec.socket), "not yet ended");

    // Whoever next holds the identity finishes the same park, once.
    let peer = b.peer();
    assert_eq!(
        ending::settle(&b.ctx, &b.id, Some(&peer)).unwrap(),
        Settled::None
    );
    assert_eq!(
        ending::settle(&b.ctx, &b.id, Some(&peer)).unwrap(),
        Settled::None
    );
    let parked = |e: &Entry| {
        e.str("action") == Some(Action::ReapedIdle.as_str())
            && e.str("session") == Some(session.as_str())
    };
    assert_eq!(b.lines(parked), 1, "one park line");
    assert!(!b.host.has_session(&rec.socket));
    assert!(b.ctx.state.session(&b.id).unwrap().is_none());
    assert!(
        b.ctx.state.flag(&b.id, Flag::IdleReaped).unwrap().is_some(),
        "still resume-eligible"
    );
    assert!(
        b.ctx.state.deaths(&b.id).unwrap().ring.is_empty(),
        "a park is no death"
    );
}

#[test]
fn a_wake_refuses_in_the_order_of_design_section_6() {
    let b = bench();
    let missing = b.home.path().join("gone");
    b.define(|p| {
        p.external_supervisor = Some("launchd".into());
        p.cwd = missing.clone();
    });
    let now = b.ctx.now();
    b.ctx
        .state
        .set_flag(&b.id, Flag::Stopped, now, "operator")
        .unwrap();
    let full = CrashRing::from_entries(vec![now - 3, now - 2, now - 1]);
    b.ctx.state.write_deaths(&b.id, &full).unwrap();

    assert_eq!(b.exit_code(), Some(5), "external supervisor first");
    b.define(|p| p.cwd = missing.clone());
    assert_eq!(b.exit_code(), Some(3), "then stopped");
    b.ctx.state.remove(&b.id, Marker::Stopped).unwrap();
    assert_eq!(b.exit_code(), Some(2), "then the missing folder");
    std::fs::create_dir(&missing).unwrap();
    assert_eq!(b.exit_code(), Some(4), "then the crash-loop guard");
    assert_eq!(b.host.calls().launch, 0, "nothing launched while refused");

    b.ctx.state.remove(&b.id, Marker::Deaths).unwrap();
    assert!(matches!(b.wake(), Ok(Woke::Launched { .. })));
    assert_eq!(b.host.calls().launch, 1);
    assert!(matches!(
        b.wake(),
        Ok(Woke::AlreadyAlive {
            delivered: false,
            ..
        })
    ));
    assert_eq!(b.host.calls().launch, 1, "a live session wins");
}

/// A Claude peer whose pane shows the real folder-trust dialog, then the
/// prompt once it is answered.
fn claude_at_the_trust_dialog(b: &Bench, dialogs: &str) {
    b.define(|p| {
        p.runtime = crate::core::peer::RuntimeKind::Claude;
        p.command = None;
        p.dialogs = serde_json::from_value(serde_json::json!(dialogs)).unwrap();
    });
    b.host.show_on_launch(
        include_str!("../../fixtures/real/claude/trust-dialog.txt"),
        Some(include_str!("../../fixtures/real/claude/ready.txt")),
    );
}

#[test]
fn a_known_dialog_is_answered_once_and_logged() {
    let b = bench();
    claude_at_the_trust_dialog(&b, "auto");
    assert!(matches!(b.wake(), Ok(Woke::Launched { .. })), "it came up");
    let rec = b.ctx.state.session(&b.id).unwrap().unwrap();
    assert_eq!(b.host.keys(&rec.socket), ["1"]);
    let answered = |e: &Entry| {
        e.ev() == Some(Ev::Wake)
            && e.str("action") == Some(Action::DialogAnswered.as_str())
            && e.str("dialog") == Some("folder-trust")
            && e.str("session") == Some(rec.session.as_str())
    };
    assert_eq!(b.lines(answered), 1);
}

/// Regression: a look that caught the client redrawing its dialog half
/// way read it as gone, so the dialog still there was answered again, and
/// the second answer's keys went into whatever came after it.
#[test]
fn a_dialog_redrawn_half_way_after_its_answer_is_not_answered_twice() {
    let b = bench();
    claude_at_the_trust_dialog(&b, "auto");
    let dialog = include_str!("../../fixtures/real/claude/trust-dialog.txt");
    let half = &dialog[..dialog.find("Yes, I trust this folder").unwrap()];
    let ready = include_str!("../../fixtures/real/claude/ready.txt");
    b.host
        .show_on_launch_frames(dialog, &[half, dialog, dialog, half, ready]);
    assert!(matches!(b.wake(), Ok(Woke::Launched { .. })), "it came up");
    let rec = b.ctx.state.session(&b.id).unwrap().unwrap();
    assert_eq!(b.host.keys(&rec.socket), ["1"], "one answer");
}

#[test]
fn with_dialogs_manual_none_is_answered_and_the_boot_says_what_to_do() {
    let b = bench();
    claude_at_the_trust_dialog(&b, "manual");
    let failure = b.wake().expect_err("the boot cannot pass the dialog");
    assert_eq!(failure.error.exit_code(), 1);
    assert_eq!(b.host.calls().send_keys, 0, "nothing answered");
    let failed = |e: &Entry| {
        e.str("mode") == Some("fail")
            && e.str("reason")
                .is_some_and(|r| r.contains("folder-trust") && r.contains("\"dialogs\": \"auto\""))
            && e.str("last_lines")
                .is_some_and(|l| l.contains("Yes, I trust this folder"))
    };
    assert_eq!(
        b.lines(failed),
        1,
        "one failed-boot line with the reason and the screen"
    );
}

/// Regression: a runtime whose ready screen must hold a moment could not
/// pass the daemon's single look at a boot its waker left: every look saw
/// the prompt for no time at all, until the boot deadline failed it.
#[test]
fn one_look_finishes_a_left_boot_of_a_runtime_that_settles() {
    let b = bench();
    b.define(|p| {
        p.runtime = crate::core::peer::RuntimeKind::Claude;
        p.command = None;
    });
    b.host
        .show_on_launch(include_str!("../../fixtures/real/claude/ready.txt"), None);
    b.wake().unwrap();
    let mut rec = b.ctx.state.session(&b.id).unwrap().unwrap();
    rec.ready_at = None; // as a waker killed before the gate left it
    b.ctx.state.write_session(&b.id, &rec).unwrap();
    let found = crate::engine::boot::finish_interrupted(
        &b.ctx,
        &b.id,
        &b.peer(),
        rec,
        std::time::Instant::now(),
    )
    .unwrap();
    assert!(
        matches!(found, crate::engine::boot::Interrupted::Ready(_)),
        "{found:?}"
    );
    let late_ready = |e: &Entry| {
        e.ev() == Some(Ev::Ready)
            && e.str("reason")
                .is_some_and(|r| r.contains("after the waking process had gone"))
    };
    assert_eq!(
        b.lines(late_ready),
        0,
        "the waker's own ready line is there already"
    );
}

/// A shell peer with no ready pattern is ready once its process runs, so
/// its screen is not read; with a pattern, it is read until that shows.
#[test]
fn a_shell_peer_has_its_screen_read_only_for_its_ready_pattern() {
    let b = bench();
    assert!(matches!(b.wake(), Ok(Woke::Launched { .. })));
    assert_eq!(
        b.host.calls().capture,
        0,
        "nothing on the screen to wait for"
    );

    let b = bench();
    b.define(|p| p.ready_pattern = Some("$ ".into()));
    assert!(matches!(b.wake(), Ok(Woke::Launched { .. })));
    assert!(b.host.calls().capture >= 1, "the pattern is looked for");
}
