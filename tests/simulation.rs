//! Deterministic simulation of piccolo clusters, through the public API only.
//!
//! Each simulated node is a real [`Replicator`] over its own [`Store`], with a
//! fake clock (one global time plus a per-node skew). Every message goes
//! through `encode_frame` and `decode`, and sits in an in-memory network that
//! delays, drops, duplicates and reorders it. Links are cut by partitions and
//! healed; nodes restart with an empty store, under the same or a new id.
//! A seeded splitmix64 drives every choice, so a failing seed replays exactly.
//!
//! After the faults stop, the network is healed and the nodes tick until
//! quiescent. Then every node must hold exactly the same entries, and for
//! every key exactly the highest-versioned write that survived the faults: in
//! particular a key whose last surviving write is a delete is absent
//! everywhere. Finally the clock jumps past the tombstone grace period, and
//! the collected stores must still agree.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use piccolo::blob::Blob;
use piccolo::replication::wire::{FRAME_HEADER, decode, encode_frame};
use piccolo::replication::{Message, Output, ReplicationConfig, Replicator, Update, hlc};
use piccolo::store::{BUCKETS, Change, Entry, NodeId, Store, Version};
use proptest::prelude::*;

/// splitmix64: tiny, seedable, good enough to pick schedules.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// True with probability `per_mille / 1000`.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

const START_MS: u64 = 1_700_000_000_000;
const GRACE_MS: u64 = 3_600_000;

struct SimNode {
    id: NodeId,
    rep: Replicator,
    /// Wall clock offset from the global time, in ms.
    skew: Arc<AtomicU64>,
}

struct Packet {
    from: usize,
    to: usize,
    due: u64,
    frame: Vec<u8>,
}

/// How hostile the network is while faults run.
#[derive(Clone, Copy)]
struct Faults {
    drop: u64,
    dup: u64,
    max_delay: u64,
    partitions: bool,
    restarts: bool,
}

struct Sim {
    rng: Rng,
    now: Arc<AtomicU64>,
    nodes: Vec<SimNode>,
    /// The links that exist when everything is healed.
    base: Vec<Vec<bool>>,
    /// The links up right now.
    up: Vec<Vec<bool>>,
    inflight: Vec<Packet>,
    faults: Option<Faults>,
    config: ReplicationConfig,
    /// Every write ever made, by version: checks that no value is invented.
    writes: HashMap<Version, Update>,
    /// Highest version each node id ever issued: a node restarting under the
    /// same id must have a wall clock past it (a real restart takes time).
    issued: HashMap<NodeId, u64>,
    restarted: bool,
    delivered: u64,
}

impl Sim {
    fn new(seed: u64, n: usize, config: ReplicationConfig) -> Sim {
        let mut rng = Rng(seed);
        // A full mesh, or a random spanning tree plus a few random links:
        // connected either way, so a heal lets everything converge.
        let mut base = vec![vec![false; n]; n];
        let mut add = |i: usize, j: usize| {
            base[i][j] = true;
            base[j][i] = true;
        };
        let full_mesh = rng.chance(500);
        for i in 1..n {
            add(i, rng.index(i));
            for j in 0..i {
                if full_mesh || rng.chance(200) {
                    add(i, j);
                }
            }
        }
        let mut sim = Sim {
            rng,
            now: Arc::new(AtomicU64::new(START_MS)),
            nodes: Vec::new(),
            base,
            up: vec![vec![false; n]; n],
            inflight: Vec::new(),
            faults: None,
            config,
            writes: HashMap::new(),
            issued: HashMap::new(),
            restarted: false,
            delivered: 0,
        };
        for _ in 0..n {
            let id = sim.rng.next();
            let node = sim.make_node(id);
            sim.nodes.push(node);
        }
        sim.heal();
        sim
    }

    /// Nodes with no links and the given topology, for hand-made scenarios.
    fn unlinked(seed: u64, n: usize, edges: &[(usize, usize)]) -> Sim {
        let mut sim = Sim::new(seed, n, ReplicationConfig::default());
        for i in 0..n {
            for j in 0..n {
                sim.base[i][j] = false;
                sim.up[i][j] = false;
            }
        }
        for &(i, j) in edges {
            sim.base[i][j] = true;
            sim.base[j][i] = true;
        }
        sim.inflight.clear();
        for node in &mut sim.nodes {
            // Fresh replicators (the linking above started rounds), no skew.
            node.skew.store(100, Ordering::Relaxed);
            let store = Arc::new(Store::new());
            let rep = Replicator::new(node.id, store, ReplicationConfig::default(), {
                let (now, skew) = (Arc::clone(&sim.now), Arc::clone(&node.skew));
                Arc::new(move || now.load(Ordering::Relaxed) + skew.load(Ordering::Relaxed) - 100)
            });
            node.rep = rep;
        }
        sim
    }

    fn make_node(&mut self, id: NodeId) -> SimNode {
        let now = self.now.load(Ordering::Relaxed);
        // Skew of -100..=+100 ms, stored offset by 100 to stay unsigned.
        let mut skew = self.rng.below(201);
        if let Some(&ts) = self.issued.get(&id) {
            let need = hlc::physical_ms(ts) + 1;
            skew = skew.max((need + 100).saturating_sub(now));
        }
        let skew = Arc::new(AtomicU64::new(skew));
        let (clock_now, clock_skew) = (Arc::clone(&self.now), Arc::clone(&skew));
        let clock = Arc::new(move || {
            clock_now.load(Ordering::Relaxed) + clock_skew.load(Ordering::Relaxed) - 100
        });
        SimNode {
            id,
            rep: Replicator::new(id, Arc::new(Store::new()), self.config.clone(), clock),
            skew,
        }
    }

    fn n(&self) -> usize {
        self.nodes.len()
    }

    fn linked(&self, i: usize) -> Vec<NodeId> {
        (0..self.n())
            .filter(|&j| self.up[i][j])
            .map(|j| self.nodes[j].id)
            .collect()
    }

    fn index_of(&self, id: NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Brings up link i-j (if it exists and is down); a random side dials.
    fn link(&mut self, i: usize, j: usize) {
        if !self.base[i][j] || self.up[i][j] {
            return;
        }
        self.up[i][j] = true;
        self.up[j][i] = true;
        let dialer = if self.rng.chance(500) { i } else { j };
        for (a, b) in [(i, j), (j, i)] {
            let mut out = Vec::new();
            let peer = self.nodes[b].id;
            self.nodes[a].rep.link_up(peer, a == dialer, &mut out);
            self.route(a, out);
        }
    }

    /// Cuts link i-j; what was in flight on it is lost with the connection.
    fn cut(&mut self, i: usize, j: usize) {
        self.up[i][j] = false;
        self.up[j][i] = false;
        self.inflight
            .retain(|p| !((p.from == i && p.to == j) || (p.from == j && p.to == i)));
    }

    fn heal(&mut self) {
        for i in 0..self.n() {
            for j in 0..i {
                self.link(i, j);
            }
        }
    }

    fn restart(&mut self, i: usize) {
        self.restarted = true;
        for j in 0..self.n() {
            if self.up[i][j] {
                self.cut(i, j);
            }
        }
        let id = if self.rng.chance(500) {
            self.nodes[i].id
        } else {
            self.rng.next()
        };
        self.nodes[i] = self.make_node(id);
        for j in 0..self.n() {
            if j != i {
                self.link(i, j);
            }
        }
    }

    fn route(&mut self, from: usize, outs: Vec<Output>) {
        for o in outs {
            let (targets, msg): (Vec<usize>, Message) = match o {
                Output::Send { to, msg } => (self.index_of(to).into_iter().collect(), msg),
                Output::Broadcast { except, msg } => (
                    (0..self.n())
                        .filter(|&j| Some(self.nodes[j].id) != except)
                        .collect(),
                    msg,
                ),
            };
            let mut frame = Vec::new();
            encode_frame(&msg, &mut frame);
            for to in targets {
                if self.up[from][to] {
                    self.enqueue(from, to, frame.clone());
                }
            }
        }
    }

    fn enqueue(&mut self, from: usize, to: usize, frame: Vec<u8>) {
        let now = self.now.load(Ordering::Relaxed);
        let Some(f) = self.faults else {
            self.inflight.push(Packet {
                from,
                to,
                due: now,
                frame,
            });
            return;
        };
        if self.rng.chance(f.drop) {
            return;
        }
        if self.rng.chance(f.dup) {
            let due = now + self.rng.below(f.max_delay + 1);
            self.inflight.push(Packet {
                from,
                to,
                due,
                frame: frame.clone(),
            });
        }
        let due = now + self.rng.below(f.max_delay + 1);
        self.inflight.push(Packet {
            from,
            to,
            due,
            frame,
        });
    }

    /// Delivers one packet chosen at random among those due: any order.
    fn deliver_one(&mut self, ignore_due: bool) -> bool {
        let now = self.now.load(Ordering::Relaxed);
        let k = if ignore_due {
            if self.inflight.is_empty() {
                return false;
            }
            self.rng.index(self.inflight.len())
        } else {
            let due: Vec<usize> = (0..self.inflight.len())
                .filter(|&k| self.inflight[k].due <= now)
                .collect();
            if due.is_empty() {
                return false;
            }
            due[self.rng.index(due.len())]
        };
        let p = self.inflight.swap_remove(k);
        let len = u32::from_be_bytes(p.frame[..FRAME_HEADER].try_into().unwrap()) as usize;
        assert_eq!(len, p.frame.len() - FRAME_HEADER);
        let msg = decode(&p.frame[FRAME_HEADER..]).expect("our own frames decode");
        let from = self.nodes[p.from].id;
        let mut out = Vec::new();
        self.nodes[p.to].rep.handle(from, msg, &mut out);
        self.route(p.to, out);
        self.delivered += 1;
        true
    }

    fn tick(&mut self, i: usize) {
        let linked = self.linked(i);
        let mut out = Vec::new();
        self.nodes[i].rep.tick(&linked, &mut out);
        self.route(i, out);
    }

    fn write(&mut self, i: usize, keys: u64) {
        let key = format!("k{}", self.rng.below(keys)).into_bytes();
        let change = if self.rng.chance(250) {
            Change::Delete
        } else {
            // Unique values, so a version always maps to one value.
            Change::Set(format!("v{}", self.rng.next()).as_str().into())
        };
        let mut out = Vec::new();
        self.nodes[i]
            .rep
            .local_write(&key, |_| (Some(change), ()), &mut out);
        for o in &out {
            if let Output::Broadcast {
                msg: Message::Updates(us),
                ..
            } = o
            {
                for u in us {
                    let issued = self.issued.entry(u.version.node).or_default();
                    *issued = (*issued).max(u.version.ts);
                    assert!(self.writes.insert(u.version, u.clone()).is_none());
                }
            }
        }
        self.route(i, out);
    }

    fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::Relaxed);
    }

    /// What every node must end with: per key, the highest version held by
    /// any live store or carried by any packet that will still arrive.
    fn survivors(&self) -> BTreeMap<Vec<u8>, Entry> {
        let mut best: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
        let mut offer = |key: &[u8], e: Entry| match best.get(key) {
            Some(cur) if cur.version >= e.version => {}
            _ => {
                best.insert(key.to_vec(), e);
            }
        };
        for n in &self.nodes {
            for (k, e) in contents(n.rep.store()) {
                offer(&k, e);
            }
        }
        for p in &self.inflight {
            match decode(&p.frame[FRAME_HEADER..]).unwrap() {
                Message::Updates(us) | Message::SyncEntries(us) => {
                    for u in us {
                        offer(
                            &u.key,
                            Entry {
                                value: u.value,
                                version: u.version,
                            },
                        );
                    }
                }
                _ => {}
            }
        }
        best
    }

    /// Ticks every node and delivers everything, round after round, until
    /// all stores agree. Returns the rounds it took.
    fn settle(&mut self, ctx: &str) -> usize {
        let max_rounds = 2 * self.n() + 10;
        for round in 1..=max_rounds {
            for i in 0..self.n() {
                self.tick(i);
            }
            let mut steps = 0;
            while self.deliver_one(true) {
                steps += 1;
                assert!(steps < 1_000_000, "{ctx}: messages never stop");
            }
            self.advance(100);
            let root = self.nodes[0].rep.store().root_hash();
            if self.nodes.iter().all(|n| n.rep.store().root_hash() == root) {
                return round;
            }
        }
        panic!("{ctx}: not converged after {max_rounds} anti-entropy rounds");
    }
}

fn contents(s: &Store) -> Vec<(Blob, Entry)> {
    let mut all: Vec<_> = (0..BUCKETS).flat_map(|b| s.bucket_entries(b)).collect();
    all.sort_by(|x, y| x.0.cmp(&y.0));
    all
}

fn live(s: &Store) -> Vec<(Blob, Blob)> {
    contents(s)
        .into_iter()
        .filter_map(|(k, e)| e.value.map(|v| (k, v)))
        .collect()
}

fn assert_identical(sim: &Sim, ctx: &str) {
    let first = sim.nodes[0].rep.store();
    let hashes = first.bucket_hashes();
    let entries = contents(first);
    for (i, n) in sim.nodes.iter().enumerate() {
        assert_eq!(n.rep.store().bucket_hashes(), hashes, "{ctx}: node {i}");
        assert_eq!(contents(n.rep.store()), entries, "{ctx}: node {i}");
    }
}

/// One simulated run. Returns (delivered messages, settle rounds).
fn run(seed: u64, n: usize) -> (u64, usize) {
    let mut sim = Sim::new(
        seed,
        n,
        ReplicationConfig {
            tombstone_grace_ms: GRACE_MS,
            // Small batches, so that splitting is exercised too.
            max_batch_bytes: 256,
            ..ReplicationConfig::default()
        },
    );
    let rng = &mut sim.rng;
    let faults = Faults {
        drop: rng.below(300),
        dup: rng.below(100),
        max_delay: 1 + rng.below(50),
        partitions: rng.chance(700),
        restarts: rng.chance(500),
    };
    let keys = 5 + rng.below(40);
    let steps = 300 + 60 * n as u64;
    let ctx = format!(
        "seed {seed}, {n} nodes, drop {}‰ dup {}‰ delay {} partitions {} restarts {}",
        faults.drop, faults.dup, faults.max_delay, faults.partitions, faults.restarts
    );
    sim.faults = Some(faults);
    for _ in 0..steps {
        let dt = 1 + sim.rng.below(10);
        sim.advance(dt);
        let roll = sim.rng.below(1000);
        let i = sim.rng.index(n);
        match roll {
            0..350 => sim.write(i, keys),
            350..430 => sim.tick(i),
            430..445 if faults.partitions => {
                let side: Vec<bool> = (0..n).map(|_| sim.rng.chance(500)).collect();
                for a in 0..n {
                    for b in 0..a {
                        if side[a] != side[b] && sim.up[a][b] {
                            sim.cut(a, b);
                        }
                    }
                }
            }
            445..460 if faults.partitions => sim.heal(),
            460..475 if faults.partitions => {
                let j = sim.rng.index(n);
                if sim.up[i][j] {
                    sim.cut(i, j);
                } else if i != j {
                    sim.link(i, j);
                }
            }
            475..480 if faults.restarts => sim.restart(i),
            _ => {
                for _ in 0..1 + sim.rng.below(4) {
                    sim.deliver_one(false);
                }
            }
        }
    }

    // Faults stop: nothing is lost from here on.
    sim.faults = None;
    let expected = sim.survivors();
    if !sim.restarted {
        // Without restarts no write can be lost: the newest write of every
        // key must win, whatever the network did.
        let mut newest: BTreeMap<&[u8], &Update> = BTreeMap::new();
        for u in sim.writes.values() {
            let slot = newest.entry(&u.key).or_insert(u);
            if u.version > slot.version {
                *slot = u;
            }
        }
        assert_eq!(newest.len(), expected.len(), "{ctx}");
        for (k, u) in newest {
            assert_eq!(expected[k].version, u.version, "{ctx}: key {k:?}");
        }
    }
    sim.heal();
    let rounds = sim.settle(&ctx);
    assert_identical(&sim, &ctx);

    let entries = contents(sim.nodes[0].rep.store());
    assert_eq!(entries.len(), expected.len(), "{ctx}");
    for (k, e) in &entries {
        assert_eq!(&expected[&k[..]], e, "{ctx}: key {k:?}");
        let w = &sim.writes[&e.version];
        assert_eq!((&w.key, &w.value), (k, &e.value), "{ctx}: invented data");
        for node in &sim.nodes {
            // Deletes stay deleted; values are readable where they live.
            assert_eq!(node.rep.store().get(k), e.value, "{ctx}: key {k:?}");
        }
    }

    // Past the grace period every tombstone goes, on every node, and what is
    // left still agrees.
    let before = live(sim.nodes[0].rep.store());
    sim.advance(GRACE_MS + 1000);
    sim.settle(&ctx);
    assert_identical(&sim, &ctx);
    for node in &sim.nodes {
        assert_eq!(node.rep.store().stats().tombstones, 0, "{ctx}");
        assert_eq!(live(node.rep.store()), before, "{ctx}");
    }
    (sim.delivered, rounds)
}

fn run_seeds(sizes: std::ops::RangeInclusive<usize>, seeds: u64, salt: u64) {
    let start = Instant::now();
    let (mut msgs, mut max_rounds) = (0, 0);
    let sizes: Vec<usize> = sizes.collect();
    for s in 0..seeds {
        let n = sizes[s as usize % sizes.len()];
        let (m, r) = run(salt * 1_000_003 + s, n);
        msgs += m;
        max_rounds = max_rounds.max(r);
    }
    eprintln!(
        "{seeds} runs of {sizes:?} nodes: {msgs} messages, at most {max_rounds} settle rounds, {:?}",
        start.elapsed()
    );
}

/// Seeds per test: fewer in debug builds, which run about ten times slower.
fn seeds(release: u64) -> u64 {
    if cfg!(debug_assertions) {
        release / 4
    } else {
        release
    }
}

#[test]
fn small_clusters_converge() {
    run_seeds(3..=6, seeds(320), 1);
}

#[test]
fn medium_clusters_converge() {
    run_seeds(7..=12, seeds(180), 2);
}

#[test]
fn large_clusters_converge() {
    run_seeds(13..=20, seeds(100), 3);
}

#[test]
fn a_chain_converges_by_forwarding_alone() {
    let mut sim = Sim::unlinked(7, 3, &[(0, 1), (1, 2)]);
    for (i, j) in [(0, 1), (1, 2)] {
        sim.up[i][j] = true;
        sim.up[j][i] = true;
    }
    let write = |sim: &mut Sim, i: usize, key: &[u8], value: Option<&[u8]>| {
        let change = match value {
            Some(v) => Change::Set(v.into()),
            None => Change::Delete,
        };
        let mut out = Vec::new();
        sim.nodes[i]
            .rep
            .local_write(key, |_| (Some(change), ()), &mut out);
        sim.route(i, out);
        while sim.deliver_one(true) {}
    };
    write(&mut sim, 0, b"from-a", Some(b"1"));
    write(&mut sim, 2, b"from-c", Some(b"2"));
    write(&mut sim, 1, b"from-b", Some(b"3"));
    write(&mut sim, 0, b"from-c", None);
    write(&mut sim, 2, b"from-b", Some(b"4"));
    for node in &sim.nodes {
        let s = node.rep.store();
        assert_eq!(s.get(b"from-a"), Some(b"1".into()));
        assert_eq!(s.get(b"from-c"), None);
        assert_eq!(s.get(b"from-b"), Some(b"4".into()));
        assert_eq!(node.rep.stats().sync_rounds, 0, "no anti-entropy ran");
    }
    assert_identical(&sim, "chain");
    // B applied (and forwarded) the four writes of A and C.
    assert_eq!(sim.nodes[1].rep.stats().updates_applied, 4);
    assert_eq!(sim.nodes[1].rep.stats().updates_sent, 5);
}

#[test]
fn a_node_that_missed_100k_writes_catches_up_fast() {
    let n: u32 = if cfg!(debug_assertions) {
        20_000
    } else {
        100_000
    };
    for full_dials in [true, false] {
        let mut sim = Sim::unlinked(11, 2, &[(0, 1)]);
        let (full, empty) = (0, 1);
        for i in 0..n {
            let mut out = Vec::new();
            sim.nodes[full].rep.local_write(
                format!("key:{i:08}").as_bytes(),
                |_| (Some(Change::Set(vec![b'x'; 64].into())), ()),
                &mut out,
            );
        }
        let start = Instant::now();
        sim.up[full][empty] = true;
        sim.up[empty][full] = true;
        let dialer = if full_dials { full } else { empty };
        let peer = sim.nodes[1 - dialer].id;
        let mut out = Vec::new();
        sim.nodes[dialer].rep.link_up(peer, true, &mut out);
        sim.route(dialer, out);
        while sim.deliver_one(true) {}
        let took = start.elapsed();
        let (a, b) = (sim.nodes[full].rep.store(), sim.nodes[empty].rep.store());
        assert_eq!(b.stats().keys, n as usize);
        assert_eq!(a.root_hash(), b.root_hash());
        assert_eq!(sim.nodes[empty].rep.stats().repaired, n as u64);
        eprintln!(
            "catch-up of {n} keys ({} dials): {} messages, {took:?}",
            if full_dials {
                "full node"
            } else {
                "empty node"
            },
            sim.delivered
        );
        if !cfg!(debug_assertions) {
            assert!(took.as_millis() < 1000, "catch-up took {took:?}");
        }
    }
}

fn arb_updates() -> impl Strategy<Value = Vec<Update>> {
    // Few keys, timestamps and nodes: many conflicts and ties on ts. A version
    // determines its write, as in a real cluster.
    proptest::collection::vec((0u8..4, 0u64..6, 0u64..3), 1..30).prop_map(|raw| {
        raw.into_iter()
            .map(|(k, ts, node)| Update {
                key: [b'k', k][..].into(),
                value: (!(ts + node + k as u64).is_multiple_of(3))
                    .then(|| [ts as u8, node as u8, k][..].into()),
                version: Version {
                    ts: hlc::from_ms(START_MS) + ts,
                    node,
                },
            })
            .collect()
    })
}

proptest! {
    // Integration tests have no source dir proptest can persist failures to.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn merge_order_does_not_matter(
        (original, shuffled) in arb_updates().prop_flat_map(|us| {
            let mut doubled = us.clone();
            doubled.extend(us.iter().take(us.len() / 2).cloned());
            (Just(us), Just(doubled).prop_shuffle())
        }),
        split in 1usize..5,
    ) {
        let replica = || Replicator::new(
            99,
            Arc::new(Store::new()),
            ReplicationConfig::default(),
            Arc::new(|| START_MS),
        );
        let (a, b) = (replica(), replica());
        a.handle(1, Message::Updates(original), &mut Vec::new());
        for chunk in shuffled.chunks(split) {
            b.handle(2, Message::SyncEntries(chunk.to_vec()), &mut Vec::new());
            b.handle(3, Message::Updates(chunk.to_vec()), &mut Vec::new());
        }
        prop_assert_eq!(a.store().bucket_hashes(), b.store().bucket_hashes());
        prop_assert_eq!(contents(a.store()), contents(b.store()));
    }
}
