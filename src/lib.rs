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
//! blob           byte strings that keep short keys and values inline
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
//!
//! # Where this departs from the first sketch of the design
//! - **`membership`** is a module of its own: who is linked, who is only
//!   heard of, who is down. It is pure bookkeeping, like `replication`, so
//!   it is tested without sockets.
//! - **Forwarding is narrowed** in the node layer (`node::peer::Links::forward`):
//!   a peer linked with a write's author got the write from it, so it is
//!   skipped. The replicator still decides *what* is news; the node, which
//!   knows the links, decides *who* needs it.
//! - **Writes are published per read, not per command**: the commands of one
//!   pipelined read travel to the peers as one `Updates` message.
//! - **One worker per core, less one** (`runtime.workers`): a node that
//!   shares a small machine with its clients and peers serves faster with a
//!   core left to them. may's coroutine pool is kept small, because may
//!   pre-allocates it (its default cost 8 MB of RSS on an idle node).
//! - **Fairness** (`node::Fair`): may runs ready coroutines until none is
//!   left before it polls for I/O, so a connection that never blocks pauses
//!   briefly every few milliseconds to let its worker poll the others.

pub mod blob;
pub mod config;
pub mod logging;
pub mod membership;
pub mod node;
pub mod protocol;
pub mod replication;
pub mod store;
