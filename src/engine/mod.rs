//! Acting on one identity, under its wake lock: how sessions end
//! ([`ending`]), how they come up ([`wake`], its ready gate [`boot`]), one
//! supervise pass ([`supervise`]), dispatch to pools, and status. The
//! decisions come from `core`; files from `store`; sessions from `runtime`.

pub mod boot;
pub mod conversation;
pub mod ctx;
pub mod dispatch;
pub mod ending;
pub mod status;
pub mod supervise;
pub mod wake;

#[cfg(test)]
mod tests;
