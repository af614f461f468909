//! Integration tests: the real `iapeer` binary, real files, real tmux on a
//! private socket, fake agents from `fixtures/`. One binary; one module per
//! area. Set IAPEER_TEST_KEEP=1 to keep each test's home for inspection.

mod support;

mod activity;
mod calm;
mod config;
mod contrib;
mod daemon;
mod docs;
mod faults;
mod hostile;
mod http;
mod layers;
mod lifecycle_log;
mod observe;
mod peers;
mod pools;
mod queue;
mod storm;
mod verbs;
mod wake;
