//! piccolo: a self-organising, leaderless, replicated key-value node.
//!
//! (Module map written as the modules land.)

pub mod config;
pub mod protocol;
pub mod replication;
pub mod store;
