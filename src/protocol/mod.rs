//! Client protocols: the text protocol and RESP2, both turned into one
//! [`Command`] type, which is applied in one place ([`command::apply`]).
//!
//! - [`text`] frames lines and parses `PUT key value`-style requests.
//! - [`resp`] frames RESP2 arrays (and inline commands) for Redis clients.
//! - [`command`] holds the [`Command`] type, parses it from an argument list,
//!   and applies it against a [`Host`], writing the answer to a [`Reply`].
//! - [`reply`] holds the two answer encoders, one per protocol.
//!
//! Nothing here touches a socket: the node layer reads bytes, hands them to a
//! codec, and writes back the bytes a [`Reply`] encoder produced.

pub mod command;
pub mod reply;
pub mod resp;
pub mod text;

pub use command::{Command, CommandError, Flow, Host, apply};
pub use reply::{Reply, RespReply, TextReply};
