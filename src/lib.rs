//! iapeer keeps a fleet of AI coding agents (Claude Code, Codex, or any
//! command) running in tmux on one machine: it parks idle agents, wakes them
//! when work arrives (resumed or fresh, for a reason it writes down), brings
//! crashed ones back, refuses to feed a crash loop, and records every
//! decision with its cause in one durable JSONL log.
//!
//! The folders are layers, and dependencies point one way (a test in
//! `tests/it/layers.rs` holds them to it):
//!
//! - front ends — [`cmd`] (one file per verb, parsed by [`cli`]),
//!   [`daemon`] (the loop and its sources), [`http`] (the dashboard);
//! - [`engine`] — acting on one identity under its wake lock: ending a
//!   session, waking, the supervise pass, dispatch, status;
//! - [`runtime`] — the `Runtime` and `Host` traits, tmux, claude, codex, shell;
//! - [`store`] (files: configuration, markers, definitions, the log) and
//!   [`os`] (processes);
//! - [`core`] — pure: identities, time, the log's vocabulary, the session
//!   record, definitions, and every decision (`wake_mode`, `crash_ring`,
//!   `wake_plan`, `pass`), tested as tables.

pub mod cli;
pub mod cmd;
pub mod core;
pub mod daemon;
pub mod diagnostics;
pub mod engine;
pub mod http;
pub mod os;
pub mod runtime;
pub mod store;

pub use self::core::error::{Error, Result};
