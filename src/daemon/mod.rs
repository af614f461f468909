//! The supervisor process (DESIGN §7).

pub mod lock;
