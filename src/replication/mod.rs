//! Replication core: a pure state machine that keeps replicas converging.
//!
//! Nothing here blocks, sleeps, spawns or touches a socket. The node layer
//! feeds a [`Replicator`] three kinds of input (a local write, a message from
//! a linked peer, a periodic tick, plus "a link came up") and sends whatever
//! [`Output`]s it gets back. The simulation tests drive the same code with a
//! fake clock and an in-memory network that drops, duplicates, delays and
//! reorders every message.
//!
//! # Versions
//!
//! Every write carries a [`Version`]: a hybrid logical clock reading
//! ([`hlc`]) and the writer's node id to break ties. The store keeps, per key,
//! the entry with the highest version (last writer wins); a delete writes a
//! tombstone. Because merging just keeps a maximum, it is idempotent,
//! commutative and associative: replicas that have seen the same set of
//! writes hold the same state, whatever the order or the number of copies in
//! which the writes arrived. Every version received is observed into the
//! clock, so a local write always gets a version higher than anything this
//! node has seen, and beats the value it overwrites. The clock is read while
//! the key is locked ([`Store::update_with`]) so that a peer's newer write
//! cannot slip in between the reading and the write.
//!
//! # Push: updates and forwarding
//!
//! A local write is broadcast at once to every linked peer as
//! [`Message::Updates`]. A node that receives updates merges each one; those
//! that changed its store are news, and it forwards them, in one message, to
//! every link except the one they came from. Updates it already had stop
//! there. So a write floods the link graph once: a chain A-B-C converges
//! without an A-C link, and a full mesh does not loop, because the second
//! copy of a write a node receives is no longer news.
//!
//! The node layer narrows forwarding further: a peer that is itself linked
//! with a write's author got the write straight from it, so it is skipped
//! (see `node::peer::Links::forward`); in a full mesh nothing is forwarded.
//!
//! Pushing is best effort: a message can be lost when a link drops or a queue
//! is full. Anti-entropy repairs what pushing missed.
//!
//! # Pull: anti-entropy
//!
//! The store is split into [`crate::store::BUCKETS`] buckets, and each bucket
//! keeps a running hash of its `(key, version, tombstone)` triples, so two
//! replicas compare whole buckets by comparing one `u64`. A round between an
//! initiator I and a responder R goes:
//!
//! 1. I sends `SyncRoot { root }`, a hash over all bucket hashes. If R's root
//!    is the same, the stores are equal and the round is over: **one message
//!    of 13 bytes**, whatever the size of the store.
//! 2. Otherwise R answers `SyncBuckets`, its 1024 bucket hashes (8 KiB).
//! 3. I compares them with its own and sends `SyncVersions`: for each
//!    differing bucket, the complete list of `(key, version)` it holds there.
//!    The lists are cut into messages of at most `max_batch_bytes`, whole
//!    buckets per message; the last one says `last`.
//! 4. For each listed bucket, R compares I's list with its own entries. What
//!    R holds newer, or I lacks, R pushes at once as `SyncEntries`. What I
//!    holds newer, or R lacks, R asks for with `SyncRequest { keys }`. After
//!    the last list it sends a `SyncRequest` marked `last` (possibly empty).
//! 5. I answers each `SyncRequest` with `SyncEntries`. When it answers the
//!    `last` one, the round is complete (R sent its entries before that
//!    request, and links deliver in order), and I logs one summary line.
//!
//! So one round repairs both directions, only the keys that differ carry
//! values, and every step is linear in the size of the differing buckets.
//! Each message is self-contained: no step needs state from an earlier one,
//! so a lost, duplicated or reordered message costs at most an incomplete
//! round, which the next round finishes. The only per-peer state is the
//! tally behind the summary line.
//!
//! Entries received by anti-entropy are merged like updates but are not
//! forwarded: every link runs its own rounds, so news reaches the rest of the
//! graph through them, and a catch-up of a large store does not flood the
//! whole cluster.
//!
//! ## Who starts a round
//!
//! A round is symmetric (it repairs both sides), so two rounds on the same
//! link at once would just move every missing entry twice. Therefore:
//! - when a link comes up, only its dialer (`initiator`) starts a round;
//! - on a tick, a node starts a round only with linked peers whose id is
//!   higher than its own. Every link still gets one round per tick period,
//!   and an in-sync link costs one small message per period, not two.
//!
//! # Tombstones
//!
//! A tombstone must stay long enough to reach every replica, or a replica
//! that missed the delete would resurrect the value. After
//! `tombstone_grace_ms` (measured on the version's physical time) a tick
//! removes it. From then on a tombstone that old arriving for a key we do not
//! hold is ignored, so a peer that still has it cannot re-create it here (the
//! bucket stays different until that peer collects its copy too). A replica
//! that stayed away longer than the grace period can bring back a deleted
//! value; pick a grace period longer than any partition you expect.

pub mod hlc;
mod sync;
pub mod wire;

pub use wire::{
    BucketVersions, Hello, MAGIC, MemberInfo, Message, PROTOCOL_VERSION, Update, WireError,
};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::blob::Blob;
use crate::store::{BUCKETS, Change, NodeId, Store, Version};
use hlc::Hlc;

/// Tuning of replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// How long a tombstone is kept before it is collected, in milliseconds.
    /// It must outlast the longest partition, or a replica that missed the
    /// delete can bring the value back. Default: 24 hours.
    pub tombstone_grace_ms: u64,
    /// Most payload bytes in one `SyncVersions`, `SyncRequest` or
    /// `SyncEntries` message; bigger sets go in several messages, so one
    /// catch-up never needs a huge frame or a huge buffer. A single entry
    /// bigger than this still goes, alone. Default: 1 MiB.
    pub max_batch_bytes: usize,
    /// Least time between two rounds started because a link came up, in
    /// milliseconds; set it to the tick period. A node that starts (or
    /// heals) links with many peers at once would otherwise run a full
    /// catch-up with each of them in parallel and receive every missing
    /// entry once per peer. With the gap, the first link brings it up to
    /// date and the periodic rounds, one period later, find the others in
    /// sync. Default: 1 s.
    pub link_round_gap_ms: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            tombstone_grace_ms: 24 * 60 * 60 * 1000,
            max_batch_bytes: 1 << 20,
            link_round_gap_ms: 1000,
        }
    }
}

/// Something the node layer must send.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `msg` to one linked peer.
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        msg: Message,
    },
    /// Send `msg` to every linked peer, except `except` (the peer an update
    /// came from, which has it already).
    Broadcast {
        /// A peer to leave out.
        except: Option<NodeId>,
        /// The message.
        msg: Message,
    },
}

/// Counters, for the INFO command and for tests.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicationStats {
    /// Entries in `Updates` this node originated or forwarded (counted once
    /// per broadcast, not per peer).
    pub updates_sent: u64,
    /// Entries received in `Updates` messages.
    pub updates_received: u64,
    /// Received update entries that changed the store (and were forwarded).
    pub updates_applied: u64,
    /// Anti-entropy rounds this node started.
    pub sync_rounds: u64,
    /// Entries received through anti-entropy that changed the store.
    pub repaired: u64,
    /// Tombstones removed after the grace period.
    pub tombstones_collected: u64,
}

#[derive(Default)]
struct Counters {
    updates_sent: AtomicU64,
    updates_received: AtomicU64,
    updates_applied: AtomicU64,
    sync_rounds: AtomicU64,
    repaired: AtomicU64,
    tombstones_collected: AtomicU64,
}

fn bump(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

/// What this node moved during the round it started with one peer; feeds the
/// one summary line logged when the round completes.
#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    sent: u64,
    got: u64,
}

/// The replication state machine of one node.
///
/// `Send + Sync`, and every method takes `&self`: client coroutines call
/// [`Replicator::local_write`] concurrently, and peer links call
/// [`Replicator::handle`]. The write path takes no lock of its own (the clock
/// and counters are atomics; the store locks one shard). The only mutex
/// guards the per-peer round tallies, touched by anti-entropy messages alone.
pub struct Replicator {
    node: NodeId,
    store: Arc<Store>,
    config: ReplicationConfig,
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    hlc: Hlc,
    counters: Counters,
    rounds: Mutex<HashMap<NodeId, Tally>>,
    /// Whether local writes are pushed; see [`Replicator::set_pushing`].
    pushing: AtomicBool,
    /// When `link_up` last started a round (wall ms + 1; 0: never).
    last_link_round: AtomicU64,
    /// `updates_received` at the last tick, to tell a busy period.
    received_at_tick: AtomicU64,
    /// Ticks in a row whose rounds were skipped because pushes kept coming.
    ticks_skipped: AtomicU64,
    /// The peer this node is catching up from, and until when (wall ms);
    /// see [`CATCH_UP_BUCKETS`].
    catching_up: Mutex<Option<(NodeId, u64)>>,
}

/// Ticks in a row whose anti-entropy rounds may be skipped while pushed
/// updates keep arriving (see [`Replicator::tick`]).
pub const BUSY_TICKS_SKIPPED: u64 = 4;

/// Differing buckets from which a round counts as a catch-up. While a node
/// catches up from one peer, it defers rounds that other peers start with it
/// (they retry at their next tick): a node that rejoins a large cluster
/// would otherwise be sent its whole missing set by every peer whose tick
/// comes up meanwhile. Write churn differs in a few buckets, and never
/// defers anything.
pub const CATCH_UP_BUCKETS: usize = BUCKETS / 4;

impl Replicator {
    /// A replicator for node `node` over `store`. `clock` returns wall time in
    /// milliseconds since the UNIX epoch; tests pass a fake one.
    pub fn new(
        node: NodeId,
        store: Arc<Store>,
        config: ReplicationConfig,
        clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Self {
        Replicator {
            node,
            store,
            config,
            clock,
            hlc: Hlc::new(),
            counters: Counters::default(),
            rounds: Mutex::new(HashMap::new()),
            pushing: AtomicBool::new(true),
            last_link_round: AtomicU64::new(0),
            received_at_tick: AtomicU64::new(0),
            ticks_skipped: AtomicU64::new(0),
            catching_up: Mutex::new(None),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// The store this replicator writes to.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The configuration given at construction.
    pub fn config(&self) -> &ReplicationConfig {
        &self.config
    }

    /// Atomic local read-modify-write of one key (SET, DEL, SETNX, GETSET,
    /// APPEND...). `decide` sees the live value and returns the change to make,
    /// if any, and the answer for the client. A change is written with a fresh
    /// version and pushed to every peer.
    pub fn local_write<R>(
        &self,
        key: &[u8],
        decide: impl FnOnce(Option<&[u8]>) -> (Option<Change>, R),
        out: &mut Vec<Output>,
    ) -> R {
        self.local_write_at((self.clock)(), key, decide, out)
    }

    /// Sets every pair (MSET), reading the clock once for all of them: the
    /// hybrid clock still gives each write its own, higher version.
    pub fn local_set_all(&self, pairs: Vec<(Blob, Blob)>, out: &mut Vec<Output>) {
        let wall = (self.clock)();
        for (key, value) in pairs {
            self.local_write_at(wall, &key, |_| (Some(Change::Set(value)), ()), out);
        }
    }

    /// [`Replicator::local_write`] with a clock reading taken by the caller.
    fn local_write_at<R>(
        &self,
        wall: u64,
        key: &[u8],
        decide: impl FnOnce(Option<&[u8]>) -> (Option<Change>, R),
        out: &mut Vec<Output>,
    ) -> R {
        let push = self.pushing.load(Ordering::Relaxed);
        let (answer, written) = self.store.update_with(
            key,
            |stored| {
                let mut version = self.version_at(wall);
                if let Some(stored) = stored.filter(|s| *s >= version) {
                    // Only reachable when the store got a version the clock
                    // never observed; catch up rather than write under it.
                    self.hlc.observe(stored.ts);
                    version = self.version_at(wall);
                }
                version
            },
            decide,
            push,
        );
        if let Some(entry) = written {
            bump(&self.counters.updates_sent, 1);
            let update = Update {
                key: key.into(),
                value: entry.value,
                version: entry.version,
            };
            // Writes made one after another (an MSET, a pipeline) share one
            // message; the node layer cuts it to size when it sends.
            match out.last_mut() {
                Some(Output::Broadcast {
                    except: None,
                    msg: Message::Updates(batch),
                }) => batch.push(update),
                _ => out.push(Output::Broadcast {
                    except: None,
                    msg: Message::Updates(vec![update]),
                }),
            }
        }
        answer
    }

    /// Handles a message from linked peer `from`. `Ping` and `Members` belong
    /// to the node layer and are ignored here.
    pub fn handle(&self, from: NodeId, msg: Message, out: &mut Vec<Output>) {
        match msg {
            Message::Ping | Message::Members(_) => {}
            Message::Updates(updates) => self.on_updates(from, updates, out),
            Message::SyncRoot { root } => self.on_sync_root(from, root, out),
            Message::SyncBuckets { hashes } => self.on_sync_buckets(from, &hashes, out),
            Message::SyncVersions { buckets, last } => {
                self.on_sync_versions(from, buckets, last, out)
            }
            Message::SyncRequest { keys, last } => self.on_sync_request(from, keys, last, out),
            Message::SyncEntries(entries) => self.on_sync_entries(from, entries),
        }
    }

    /// Says whether any peer is linked. While none is, local writes are not
    /// turned into [`Message::Updates`], which saves a copy of every value;
    /// a link that comes up later is brought up to date by anti-entropy, as
    /// every new link is. On by default.
    pub fn set_pushing(&self, on: bool) {
        self.pushing.store(on, Ordering::Relaxed);
    }

    /// A link to `peer` just came up. Only the dialer (`initiator`) starts an
    /// anti-entropy round: a round repairs both sides, so two rounds would
    /// move every missing entry twice.
    pub fn link_up(&self, peer: NodeId, initiator: bool, out: &mut Vec<Output>) {
        if !initiator {
            return;
        }
        // Wall time plus one, so that the first link always starts a round.
        let now = (self.clock)().saturating_add(1);
        let last = self.last_link_round.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.config.link_round_gap_ms;
        if due
            && self
                .last_link_round
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.start_round(peer, out);
        }
    }

    /// Periodic work, called every anti-entropy period: starts one round with
    /// each peer in `linked` whose id is higher than ours (the peer with the
    /// lower id starts the round of each link; see the module docs), and
    /// collects tombstones older than the grace period.
    ///
    /// While pushed updates keep arriving, rounds are skipped for up to
    /// [`BUSY_TICKS_SKIPPED`] ticks in a row: digests taken while writes are
    /// in flight differ in nearly every bucket, so a round would re-send much
    /// of what the pushes are delivering anyway, and in a large cluster those
    /// rounds cost more than the writes. A round still runs every
    /// `BUSY_TICKS_SKIPPED + 1` ticks under load, to repair lost pushes.
    pub fn tick(&self, linked: &[NodeId], out: &mut Vec<Output>) {
        self.forget_rounds_except(linked);
        let received = self.counters.updates_received.load(Ordering::Relaxed);
        let busy = self.received_at_tick.swap(received, Ordering::Relaxed) != received;
        let skip = busy && self.ticks_skipped.fetch_add(1, Ordering::Relaxed) < BUSY_TICKS_SKIPPED;
        if !skip {
            self.ticks_skipped.store(0, Ordering::Relaxed);
            for &peer in linked {
                if peer > self.node {
                    self.start_round(peer, out);
                }
            }
        }
        let now = (self.clock)();
        let before = hlc::from_ms(now.saturating_sub(self.config.tombstone_grace_ms));
        let collected = self.store.collect_tombstones(before);
        if collected > 0 {
            bump(&self.counters.tombstones_collected, collected);
            log::debug!("collected {collected} tombstones");
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ReplicationStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReplicationStats {
            updates_sent: get(&c.updates_sent),
            updates_received: get(&c.updates_received),
            updates_applied: get(&c.updates_applied),
            sync_rounds: get(&c.sync_rounds),
            repaired: get(&c.repaired),
            tombstones_collected: get(&c.tombstones_collected),
        }
    }

    fn version_at(&self, wall_ms: u64) -> Version {
        Version {
            ts: self.hlc.now(wall_ms),
            node: self.node,
        }
    }

    /// Merges updates pushed by `from`, and forwards the ones that were news.
    fn on_updates(&self, from: NodeId, updates: Vec<Update>, out: &mut Vec<Output>) {
        bump(&self.counters.updates_received, updates.len());
        let mut news = Vec::new();
        for u in updates {
            if self.admit(&u) && self.store.merge(&u.key, u.value.clone(), u.version) {
                news.push(u);
            }
        }
        if !news.is_empty() {
            bump(&self.counters.updates_applied, news.len());
            bump(&self.counters.updates_sent, news.len());
            out.push(Output::Broadcast {
                except: Some(from),
                msg: Message::Updates(news),
            });
        }
    }

    /// Observes the version of an incoming entry, and says whether to merge
    /// it. A tombstone past the grace period for a key we do not hold is
    /// refused: we most likely collected it already, and taking it back would
    /// only make it linger (and be collected again).
    fn admit(&self, u: &Update) -> bool {
        self.hlc.observe(u.version.ts);
        !(u.value.is_none() && self.expired(u.version) && self.store.entry(&u.key).is_none())
    }

    /// True when a tombstone of this version would already be collected.
    fn expired(&self, version: Version) -> bool {
        let now = (self.clock)();
        hlc::physical_ms(version.ts).saturating_add(self.config.tombstone_grace_ms) < now
    }

    fn tallies(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Tally>> {
        // A tally is two counters; a panic elsewhere cannot leave it torn.
        self.rounds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks a catch-up from `peer` as under way. It ends with the round, or
    /// after ten round gaps (at least 5 s) should the round be cut short.
    fn begin_catch_up(&self, peer: NodeId) {
        let until = (self.clock)() + (10 * self.config.link_round_gap_ms).max(5000);
        *self.catching_up.lock().unwrap_or_else(|e| e.into_inner()) = Some((peer, until));
    }

    fn end_catch_up(&self, peer: NodeId) {
        let mut slot = self.catching_up.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some_and(|(p, _)| p == peer) {
            *slot = None;
        }
    }

    /// True while a catch-up from a peer other than `peer` is under way.
    fn catching_up_with_other(&self, peer: NodeId) -> bool {
        let now = (self.clock)();
        self.catching_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|(p, until)| p != peer && now < until)
    }

    fn forget_rounds_except(&self, linked: &[NodeId]) {
        self.tallies().retain(|peer, _| linked.contains(peer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::Blob;

    use std::sync::atomic::AtomicU64;

    const A: NodeId = 0xa;
    const B: NodeId = 0xb;

    struct Node {
        rep: Replicator,
        now: Arc<AtomicU64>,
    }

    fn node(id: NodeId, config: ReplicationConfig) -> Node {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let clock = Arc::clone(&now);
        Node {
            rep: Replicator::new(
                id,
                Arc::new(Store::new()),
                config,
                Arc::new(move || clock.load(Ordering::Relaxed)),
            ),
            now,
        }
    }

    fn set(r: &Replicator, key: &[u8], value: &[u8]) -> Vec<Output> {
        let mut out = Vec::new();
        r.local_write(key, |_| (Some(Change::Set(value.into())), ()), &mut out);
        out
    }

    fn del(r: &Replicator, key: &[u8]) -> Vec<Output> {
        let mut out = Vec::new();
        r.local_write(key, |_| (Some(Change::Delete), ()), &mut out);
        out
    }

    fn updates(out: &[Output]) -> Vec<Update> {
        out.iter()
            .flat_map(|o| match o {
                Output::Broadcast {
                    msg: Message::Updates(u),
                    ..
                } => u.clone(),
                _ => vec![],
            })
            .collect()
    }

    /// Runs messages between two nodes to the end, through the codec.
    /// Returns every message delivered, with its frame size.
    fn pump(a: &Replicator, b: &Replicator, first: Vec<Output>) -> Vec<(Message, usize)> {
        let mut queue: Vec<(NodeId, Output)> =
            first.into_iter().map(|o| (a.node_id(), o)).collect();
        let mut log = Vec::new();
        while !queue.is_empty() {
            let (from, o) = queue.remove(0);
            let msg = match o {
                Output::Send { msg, .. } | Output::Broadcast { msg, .. } => msg,
            };
            let mut frame = Vec::new();
            wire::encode_frame(&msg, &mut frame);
            let msg = wire::decode(&frame[wire::FRAME_HEADER..]).unwrap();
            log.push((msg.clone(), frame.len()));
            let to = if from == a.node_id() { b } else { a };
            let mut out = Vec::new();
            to.handle(from, msg, &mut out);
            queue.extend(out.into_iter().map(|o| (to.node_id(), o)));
        }
        log
    }

    fn contents(s: &Store) -> Vec<(Blob, crate::store::Entry)> {
        let mut all: Vec<_> = (0..BUCKETS).flat_map(|b| s.bucket_entries(b)).collect();
        all.sort_by(|x, y| x.0.cmp(&y.0));
        all
    }

    #[test]
    fn replicator_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Replicator>();
    }

    #[test]
    fn local_write_is_broadcast_once() {
        let a = node(A, ReplicationConfig::default());
        let out = set(&a.rep, b"k", b"v");
        assert_eq!(out.len(), 1);
        let Output::Broadcast { except: None, msg } = &out[0] else {
            panic!("{out:?}")
        };
        let Message::Updates(u) = msg else {
            panic!("{msg:?}")
        };
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].key, b"k");
        assert_eq!(u[0].value.as_deref(), Some(&b"v"[..]));
        assert_eq!(u[0].version.node, A);
        assert_eq!(a.rep.store().get(b"k"), Some(b"v".into()));
        assert_eq!(a.rep.stats().updates_sent, 1);
    }

    #[test]
    fn writes_in_a_row_share_one_message_with_rising_versions() {
        let a = node(A, ReplicationConfig::default());
        let mut out = set(&a.rep, b"k0", b"v");
        a.rep.local_set_all(
            vec![(b"k1".into(), b"1".into()), (b"k2".into(), b"2".into())],
            &mut out,
        );
        assert_eq!(out.len(), 1, "{out:?}");
        let u = updates(&out);
        let keys: Vec<&[u8]> = u.iter().map(|u| &*u.key).collect();
        assert_eq!(keys, [&b"k0"[..], b"k1", b"k2"]);
        assert!(u.windows(2).all(|w| w[0].version < w[1].version), "{u:?}");
        assert_eq!(a.rep.store().get(b"k2"), Some(b"2".into()));
        assert_eq!(a.rep.stats().updates_sent, 3);
    }

    #[test]
    fn with_no_peer_linked_writes_are_stored_but_not_pushed() {
        let a = node(A, ReplicationConfig::default());
        a.rep.set_pushing(false);
        assert!(set(&a.rep, b"k", b"v").is_empty());
        assert_eq!(a.rep.store().get(b"k"), Some(b"v".into()));
        assert_eq!(a.rep.stats().updates_sent, 0);
        a.rep.set_pushing(true);
        assert_eq!(updates(&set(&a.rep, b"k", b"w")).len(), 1);
    }

    #[test]
    fn a_write_that_changes_nothing_sends_nothing() {
        let a = node(A, ReplicationConfig::default());
        let mut out = Vec::new();
        let answer = a
            .rep
            .local_write(b"k", |cur| (None, cur.is_none()), &mut out);
        assert!(answer);
        assert!(out.is_empty());
    }

    #[test]
    fn news_is_forwarded_except_to_its_sender_and_known_updates_stop() {
        let a = node(A, ReplicationConfig::default());
        let b = node(B, ReplicationConfig::default());
        let u1 = updates(&set(&a.rep, b"k1", b"1"));
        let mut out = Vec::new();
        b.rep.handle(A, Message::Updates(u1.clone()), &mut out);
        assert_eq!(
            out,
            vec![Output::Broadcast {
                except: Some(A),
                msg: Message::Updates(u1.clone())
            }]
        );
        // The same update again (say, through another path) is not news.
        out.clear();
        b.rep.handle(0xc, Message::Updates(u1.clone()), &mut out);
        assert!(out.is_empty());
        // A batch with old and new entries forwards only the new ones, in one message.
        let u2 = updates(&set(&a.rep, b"k2", b"2"));
        let mut both = u1.clone();
        both.extend(u2.clone());
        b.rep.handle(A, Message::Updates(both), &mut out);
        assert_eq!(
            out,
            vec![Output::Broadcast {
                except: Some(A),
                msg: Message::Updates(u2)
            }]
        );
        let s = b.rep.stats();
        assert_eq!((s.updates_received, s.updates_applied), (4, 2));
        assert_eq!(s.updates_sent, 2);
    }

    #[test]
    fn ping_and_members_are_ignored() {
        let a = node(A, ReplicationConfig::default());
        let mut out = Vec::new();
        a.rep.handle(B, Message::Ping, &mut out);
        a.rep.handle(B, Message::Members(vec![]), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_local_write_beats_everything_seen() {
        let a = node(A, ReplicationConfig::default());
        // A peer whose clock runs an hour ahead.
        let ahead = Version {
            ts: hlc::from_ms(a.now.load(Ordering::Relaxed) + 3_600_000),
            node: B,
        };
        let mut out = Vec::new();
        a.rep.handle(
            B,
            Message::Updates(vec![Update {
                key: b"k".into(),
                value: Some(b"remote".into()),
                version: ahead,
            }]),
            &mut out,
        );
        let u = updates(&set(&a.rep, b"k", b"local"));
        assert!(u[0].version > ahead);
        assert_eq!(a.rep.store().get(b"k"), Some(b"local".into()));
        // Even on another key: the clock observed the peer's reading.
        let u = updates(&set(&a.rep, b"j", b"x"));
        assert!(u[0].version > ahead);
    }

    #[test]
    fn concurrent_local_and_remote_writes_keep_versions_rising() {
        // Client threads write while a peer thread merges newer versions of
        // the same keys; without taking the version under the key's lock the
        // store's debug assertion would fire.
        let a = Arc::new(node(A, ReplicationConfig::default()));
        let mut threads = Vec::new();
        for t in 0..2u64 {
            let a = Arc::clone(&a);
            threads.push(std::thread::spawn(move || {
                for i in 0..5_000u64 {
                    let key = [(i % 4) as u8];
                    let mut out = Vec::new();
                    if t == 0 {
                        a.rep.local_write(
                            &key,
                            |_| (Some(Change::Set(b"\x01".into())), ()),
                            &mut out,
                        );
                    } else {
                        let ts = hlc::from_ms(1_000_000 + i);
                        a.rep.handle(
                            B,
                            Message::Updates(vec![Update {
                                key: (&key).into(),
                                value: Some(b"\x02".into()),
                                version: Version { ts, node: B },
                            }]),
                            &mut out,
                        );
                    }
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn old_tombstones_for_unknown_keys_are_ignored() {
        let config = ReplicationConfig {
            tombstone_grace_ms: 1000,
            ..ReplicationConfig::default()
        };
        let a = node(A, config);
        let now = a.now.load(Ordering::Relaxed);
        let old = Version {
            ts: hlc::from_ms(now - 5000),
            node: B,
        };
        let tomb = |key: &[u8]| Update {
            key: key.into(),
            value: None,
            version: old,
        };
        let mut out = Vec::new();
        a.rep
            .handle(B, Message::Updates(vec![tomb(b"gone")]), &mut out);
        assert!(out.is_empty());
        assert!(a.rep.store().entry(b"gone").is_none());
        // But it still deletes an older value we hold.
        a.rep.store().merge(
            b"held",
            Some(b"stale".into()),
            Version {
                ts: hlc::from_ms(now - 9000),
                node: B,
            },
        );
        a.rep
            .handle(B, Message::SyncEntries(vec![tomb(b"held")]), &mut out);
        assert_eq!(a.rep.store().get(b"held"), None);
        assert_eq!(a.rep.stats().repaired, 1);
    }

    #[test]
    fn tick_collects_tombstones_after_grace() {
        let config = ReplicationConfig {
            tombstone_grace_ms: 1000,
            ..ReplicationConfig::default()
        };
        let a = node(A, config);
        set(&a.rep, b"live", b"1");
        del(&a.rep, b"dead");
        let mut out = Vec::new();
        a.rep.tick(&[], &mut out);
        assert!(a.rep.store().entry(b"dead").is_some());
        a.now.fetch_add(1001, Ordering::Relaxed);
        a.rep.tick(&[], &mut out);
        assert!(a.rep.store().entry(b"dead").is_none());
        assert_eq!(a.rep.store().get(b"live"), Some(b"1".into()));
        assert_eq!(a.rep.stats().tombstones_collected, 1);
        assert!(out.is_empty());
    }

    #[test]
    fn an_in_sync_round_is_one_small_message() {
        let a = node(A, ReplicationConfig::default());
        let b = node(B, ReplicationConfig::default());
        for i in 0..1000u32 {
            let u = updates(&set(&a.rep, &i.to_be_bytes(), b"v"));
            b.rep.handle(A, Message::Updates(u), &mut Vec::new());
        }
        let mut out = Vec::new();
        a.rep.tick(&[B], &mut out);
        let log = pump(&a.rep, &b.rep, out);
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(matches!(log[0].0, Message::SyncRoot { .. }));
        assert!(log[0].1 <= 16, "{} bytes", log[0].1);
        assert_eq!(a.rep.stats().sync_rounds, 1);
    }

    #[test]
    fn the_lower_id_starts_periodic_rounds_and_the_dialer_starts_link_rounds() {
        let a = node(A, ReplicationConfig::default());
        let b = node(B, ReplicationConfig::default());
        let mut out = Vec::new();
        b.rep.tick(&[A], &mut out);
        assert!(out.is_empty());
        a.rep.tick(&[B], &mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        b.rep.link_up(A, false, &mut out);
        assert!(out.is_empty());
        b.rep.link_up(A, true, &mut out);
        assert!(matches!(
            out[..],
            [Output::Send {
                to: A,
                msg: Message::SyncRoot { .. }
            }]
        ));
    }

    #[test]
    fn ticks_skip_rounds_while_pushes_arrive_but_not_for_long() {
        let a = node(A, ReplicationConfig::default());
        let b = node(B, ReplicationConfig::default());
        let mut rounds = Vec::new();
        for i in 0..=BUSY_TICKS_SKIPPED {
            let push = set(&b.rep, format!("k{i}").as_bytes(), b"v");
            let Some(Output::Broadcast { msg, .. }) = push.into_iter().next() else {
                panic!("no push")
            };
            a.rep.handle(B, msg, &mut Vec::new());
            let mut out = Vec::new();
            a.rep.tick(&[B], &mut out);
            rounds.push(out.len());
        }
        let mut expected = vec![0; BUSY_TICKS_SKIPPED as usize];
        expected.push(1);
        assert_eq!(rounds, expected, "skipped while busy, then one round");
        let mut out = Vec::new();
        a.rep.tick(&[B], &mut out);
        assert_eq!(out.len(), 1, "quiet again: a round every tick");
    }

    #[test]
    fn links_that_come_up_together_start_one_round() {
        const C: NodeId = 0xc;
        let a = node(A, ReplicationConfig::default());
        let mut out = Vec::new();
        a.rep.link_up(B, true, &mut out);
        a.rep.link_up(C, true, &mut out);
        assert_eq!(out.len(), 1, "only the first link starts a round: {out:?}");
        a.now.fetch_add(1000, Ordering::Relaxed);
        out.clear();
        a.rep.link_up(C, true, &mut out);
        assert_eq!(out.len(), 1, "a gap later, a new link starts one again");
    }

    #[test]
    fn a_catch_up_defers_rounds_from_other_peers_until_it_completes() {
        const Q: NodeId = 0xc;
        let r = node(A, ReplicationConfig::default());
        let p = node(B, ReplicationConfig::default());
        for i in 0..2000u32 {
            set(&p.rep, i.to_string().as_bytes(), b"v");
        }
        let q_root = Message::SyncRoot { root: 42 };
        let mut out = Vec::new();
        r.rep.link_up(B, true, &mut out);
        let Some(Output::Send { msg: root, .. }) = out.pop() else {
            panic!("no round started")
        };
        p.rep.handle(A, root, &mut out);
        let Some(Output::Send { msg: buckets, .. }) = out.pop() else {
            panic!("no bucket hashes")
        };
        r.rep.handle(B, buckets, &mut out);
        let versions = std::mem::take(&mut out);
        assert!(!versions.is_empty());
        let mut deferred = Vec::new();
        r.rep.handle(Q, q_root.clone(), &mut deferred);
        assert!(deferred.is_empty(), "Q's round waits: {deferred:?}");
        // Finish the round with P; R then answers Q again.
        let mut queue: Vec<(NodeId, Output)> = versions.into_iter().map(|o| (A, o)).collect();
        while !queue.is_empty() {
            let (from, o) = queue.remove(0);
            let (Output::Send { msg, .. } | Output::Broadcast { msg, .. }) = o;
            let (to, to_id) = if from == A { (&p.rep, B) } else { (&r.rep, A) };
            let mut next = Vec::new();
            to.handle(from, msg, &mut next);
            queue.extend(next.into_iter().map(|o| (to_id, o)));
        }
        assert_eq!(r.rep.store().root_hash(), p.rep.store().root_hash());
        r.rep.handle(Q, q_root, &mut deferred);
        assert!(matches!(
            deferred[..],
            [Output::Send {
                to: Q,
                msg: Message::SyncBuckets { .. }
            }]
        ));
    }

    #[test]
    fn one_round_repairs_both_sides() {
        let a = node(A, ReplicationConfig::default());
        let b = node(B, ReplicationConfig::default());
        set(&a.rep, b"only-a", b"1");
        set(&b.rep, b"only-b", b"2");
        set(&a.rep, b"both", b"old");
        b.now.fetch_add(10, Ordering::Relaxed);
        set(&b.rep, b"both", b"new");
        del(&b.rep, b"deleted-on-b");
        let mut out = Vec::new();
        a.rep.link_up(B, true, &mut out);
        let log = pump(&a.rep, &b.rep, out);
        let kinds: Vec<&str> = log
            .iter()
            .map(|(m, _)| match m {
                Message::SyncRoot { .. } => "root",
                Message::SyncBuckets { .. } => "buckets",
                Message::SyncVersions { .. } => "versions",
                Message::SyncRequest { .. } => "request",
                Message::SyncEntries(_) => "entries",
                _ => "other",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "root", "buckets", "versions", "entries", "request", "entries"
            ]
        );
        assert_eq!(a.rep.store().root_hash(), b.rep.store().root_hash());
        assert_eq!(contents(a.rep.store()), contents(b.rep.store()));
        assert_eq!(a.rep.store().get(b"both"), Some(b"new".into()));
        assert_eq!(a.rep.stats().repaired, 3);
        assert_eq!(b.rep.stats().repaired, 1);
        assert!(a.rep.tallies().is_empty(), "the round completed");
        // And the next round is one message again.
        let mut out = Vec::new();
        a.rep.tick(&[B], &mut out);
        assert_eq!(pump(&a.rep, &b.rep, out).len(), 1);
    }

    #[test]
    fn big_differences_travel_in_bounded_messages() {
        let config = ReplicationConfig {
            max_batch_bytes: 2000,
            ..ReplicationConfig::default()
        };
        for a_dials in [true, false] {
            let a = node(A, config.clone());
            let b = node(B, config.clone());
            for i in 0..3000u32 {
                set(&a.rep, format!("key{i}").as_bytes(), &[7; 40]);
            }
            let mut out = Vec::new();
            let log = if a_dials {
                a.rep.link_up(B, true, &mut out);
                pump(&a.rep, &b.rep, out)
            } else {
                b.rep.link_up(A, true, &mut out);
                pump(&b.rep, &a.rep, out)
            };
            assert_eq!(contents(a.rep.store()), contents(b.rep.store()));
            assert_eq!(b.rep.stats().repaired, 3000);
            let mut batched = 0;
            for (m, size) in &log {
                match m {
                    Message::SyncVersions { buckets, .. } if buckets.len() > 1 => {}
                    Message::SyncRequest { keys, .. } if keys.len() > 1 => {}
                    Message::SyncEntries(e) if e.len() > 1 => {}
                    _ => continue,
                }
                batched += 1;
                // Payload, plus tag, flag and count.
                assert!(*size <= 2000 + 4 + 1 + 1 + 4, "{size} bytes: {m:?}");
            }
            assert!(batched > 10);
        }
    }
}
