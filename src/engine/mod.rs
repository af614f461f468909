//! Acting on one identity, under its wake lock: how sessions end
//! (`ending`), how they come up ([`wake`], its ready gate `boot`), one
//! supervise pass (`supervise`), dispatch to pools, and status. The
//! decisions come from `core`; files from `store`; sessions from `runtime`.

pub(crate) mod activity;
pub(crate) mod boot;
pub(crate) mod conversation;
pub mod ctx;
pub(crate) mod deliver;
pub(crate) mod dispatch;
pub(crate) mod ending;
pub(crate) mod limited;
pub(crate) mod queue;
pub(crate) mod status;
pub(crate) mod supervise;
pub mod wake;

#[cfg(test)]
mod tests;
