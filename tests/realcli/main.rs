//! The real-client tier: iapeer supervising the real Claude Code and Codex
//! CLIs (pinned in `tests/realcli/package-lock.json`) in real tmux, talking
//! to mock model servers on 127.0.0.1. Each breakage the real CLIs showed
//! and the fake agent hid has a test here named after it.

#[path = "../it/support/mod.rs"]
// Shared with tests/it, whose helpers this tier does not all use.
#[allow(dead_code)]
mod support;
mod tier;

mod claude;
mod codex;
