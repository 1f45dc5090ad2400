//! Client protocols.
pub mod resp;
