//! iapeer keeps a fleet of AI coding agents (Claude Code, Codex, or any
//! command) running in tmux on one machine: it parks idle agents, wakes them
//! when work arrives (resumed or fresh, for a reason it writes down), brings
//! crashed ones back, refuses to feed a crash loop, and records every
//! decision with its cause in one durable JSONL log.
//!
//! The contract (file formats, decisions, CLI, exit codes, log schema) is
//! DESIGN.md. The decisions are pure functions ([`wake_mode`],
//! [`crash_ring`]); everything that touches files, processes or tmux sits
//! around them.

pub mod cli;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod conversation;
pub mod crash_ring;
pub mod ctx;
pub mod daemon;
pub mod diagnostics;
pub mod dispatch;
pub mod error;
pub mod fsutil;
pub mod http;
pub mod identity;
pub mod lifecycle_log;
pub mod markers;
pub mod metrics;
pub mod peers;
pub mod pools;
pub mod process;
pub mod runtime;
pub mod session;
pub mod status;
pub mod supervise;
pub mod wake;
pub mod wake_mode;
pub mod why;

pub use error::{Error, Result};
