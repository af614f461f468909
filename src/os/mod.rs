//! The operating system's processes: liveness that never mistakes "cannot
//! tell" for "dead", death notifications, and the one `/proc` reader.

pub(crate) mod clock;
pub(crate) mod command;
pub mod process;
