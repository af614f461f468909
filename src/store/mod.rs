//! Files under `IAPEER_HOME` (DESIGN §2), all read as untrusted input and
//! written atomically: configuration, markers and records, definitions,
//! and the decision log.

pub mod config;
pub(crate) mod definitions;
pub(crate) mod fsutil;
pub mod log;
pub mod markers;
pub(crate) mod queue;
pub mod settings;
