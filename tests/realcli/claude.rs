//! Claude Code 2.1.197 under iapeer.

use std::time::Duration;

use serde_json::json;

use crate::support::{code, stderr, stdout};
use crate::tier::{claude_home, claude_trusts, Mock};

const TASK_WAIT: Duration = Duration::from_secs(60);

/// A new user's first wake: an untrusted folder, a custom API key, nobody
/// at the keyboard. Both dialogs are answered once each, logged, and the
/// task reaches the model.
#[test]
fn an_untrusted_new_folder_comes_up_and_takes_a_task_without_a_human() {
    let dir = assert_fs::TempDir::new().unwrap();
    let mock = Mock::anthropic(dir.path(), json!([{ "text": "hello from the mock" }]));
    let Some(home) = claude_home(&mock) else {
        return;
    };
    home.add("alice", &[]);
    let out = home.run(&["wake", "alice", "--task", "say hello to the operator"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    mock.wait_turn("say hello to the operator", TASK_WAIT);

    for dialog in ["folder-trust", "api-key"] {
        let answered = home.count("alice", |e| {
            e.str("action") == Some("dialog-answered") && e.str("dialog") == Some(dialog)
        });
        assert_eq!(answered, 1, "{dialog} answered once");
    }
    let answered_trust = home
        .lines("alice", "wake")
        .into_iter()
        .find(|e| e.str("dialog") == Some("folder-trust"))
        .unwrap();
    assert!(
        answered_trust
            .str("reason")
            .is_some_and(|r| r.contains(".claude.json")),
        "the line says what answering wrote into Claude's config"
    );
    assert!(claude_trusts(&home, &home.workdir("alice")));
    assert_eq!(home.lines("alice", "ready").len(), 1);
}
