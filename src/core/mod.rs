//! The pure core: plain data and the decisions made from it. Nothing here
//! reads a file, a process or the clock (`clock::now_ms` is the one reading
//! the shell calls; decisions take `now` as an argument).

pub mod activity;
pub mod backoff;
pub mod clock;
pub mod crash_ring;
pub mod error;
pub mod history;
pub mod identity;
pub mod marker;
pub mod metrics;
pub mod pass;
pub mod peer;
pub(crate) mod pool;
pub mod record;
pub mod session;
pub(crate) mod steady;
pub mod stream;
pub mod vocab;
pub mod wake_mode;
pub mod wake_plan;
