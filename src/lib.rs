//! piccolo: a self-organising, leaderless, replicated key-value node.
//!
//! Start a few nodes and they find each other and keep one shared key-value
//! store in agreement, with no leader. Clients talk to any node, in a text
//! protocol or in RESP.
//!
//! # Map of the code
//! ```text
//! main.rs        parse CLI -> load Config -> init logging -> node::run
//! config         Config types, defaults, load/validate, live handle
//! logging        env_logger setup; every line names the node
//! node/          the only place that spawns coroutines or touches sockets
//!   listener     bind with port probing; accept; one coroutine per connection
//!   client       sniff the first byte; serve text or RESP; hand peers over
//!   peer         links: handshake, read loop, bounded writer, heartbeats
//!   discovery    one coroutine per peer address: dial, back off, probe, relink
//!   reload       watches config.toml; starts and stops discovery loops
//! membership     who is in the cluster: linked, heard of, or down
//! store          the versioned KV map, sharded; knows nothing of the network
//! replication/   pure state machine: HLC versions, merge, digests, deltas,
//!                what to forward; driven by messages and ticks
//! protocol/      text and RESP codecs -> one Command type, applied in one place
//! ```
//!
//! # How a write travels
//! A client's `PUT k v` reaches [`protocol::apply`], which asks the
//! [`replication::Replicator`] for a fresh version and writes the store. The
//! replicator returns an `Updates` message for every linked peer, which the
//! node queues on each [`node::peer`] link. A peer that finds the update new
//! applies it and forwards it to its other links; one that already had it
//! stops there. Periodic anti-entropy compares digests and repairs whatever
//! a dropped link or a restart lost.

pub mod config;
pub mod logging;
pub mod membership;
pub mod node;
pub mod protocol;
pub mod replication;
pub mod store;
