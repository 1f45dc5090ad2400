//! The running node: the only place that spawns coroutines or touches
//! sockets.
//!
//! - [`listener`] binds with port probing, accepts, and sniffs the first byte
//!   of each connection to hand it to a client or a peer handler.
//! - [`client`] serves one client connection per coroutine (text or RESP).
//! - [`peer`] runs one link per connected peer: handshake, read loop, and a
//!   bounded writer.
//! - [`discovery`] runs one coroutine per peer address: dial, back off,
//!   probe nearby ports, relink.
//! - [`reload`] watches the config file and starts or stops discovery
//!   coroutines as `hosts` changes.
//!
//! [`Node`] is the state they share, behind an `Arc`.

pub mod client;
pub mod discovery;
pub mod listener;
pub mod peer;
pub mod reload;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use may::io::WaitIo;
use may::net::TcpStream;

use crate::config::{Config, LiveConfig};
use crate::membership::Members;
use crate::protocol::Host;
use crate::replication::{Message, Output, ReplicationConfig, Replicator, Update};
use crate::store::{NodeId, Store};

use discovery::DiscoveryLoops;
use peer::Links;

/// Local updates gathered into one message before it is sent.
pub const MAX_UPDATES_BATCH: usize = 1024 * 1024;

/// Finished coroutines kept for reuse. may pre-allocates its whole pool at
/// start, each with a touched stack page or two: its default of 1000 costs an
/// idle node 8 MB of RSS. Connections are long-lived, so a small pool loses
/// nothing measurable.
const POOL_CAPACITY: usize = 64;

/// Coroutine stack size, in machine words (may's unit): 64 KiB. may's
/// default of 32 KiB is too tight for `log` formatting plus a deep call into
/// the store; pages are only touched when used, so idle connections still
/// cost a few KiB each.
const STACK_WORDS: usize = 0x2000;

/// Counters shown by INFO.
#[derive(Default)]
pub struct Counters {
    /// Client connections open now.
    pub clients: AtomicUsize,
    /// Client connections accepted since start.
    pub connections: AtomicU64,
    /// Client connections refused because `max_clients` were open.
    pub rejected: AtomicU64,
    /// Commands processed since start.
    pub commands: AtomicU64,
    /// Commands per second over the last second, updated by the ticker.
    pub ops_per_sec: AtomicU64,
    /// Peer links that came up since start.
    pub links_up: AtomicU64,
    /// Peer links that went down since start.
    pub links_down: AtomicU64,
}

/// The state every coroutine of a node shares.
pub struct Node {
    /// This node's id, random per start.
    pub id: NodeId,
    /// The live config; `discovery.bind_port` holds the port actually bound.
    pub config: LiveConfig,
    /// The file the config came from, watched for changes; `None` when the
    /// node runs on built-in defaults.
    pub config_path: Option<PathBuf>,
    /// The replication core, which owns the store.
    pub replicator: Replicator,
    /// Peers given with `--peer`, kept across reloads of the file.
    pub cli_peers: Vec<String>,
    /// The config as loaded at start, to tell which edits need a restart.
    pub initial_config: Config,
    /// Live peer links.
    pub links: Links,
    /// Members known directly or through gossip.
    pub members: std::sync::Mutex<Members>,
    /// One discovery coroutine per peer address.
    pub discovery: DiscoveryLoops,
    /// Figures for INFO.
    pub counters: Counters,
    /// The bound address, `host:port`.
    pub addr: String,
    started: Instant,
    stopping: AtomicBool,
}

impl Node {
    /// True once the node is shutting down; every loop checks it.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Sends replication outputs to the links they name. A message meant for
    /// several links is encoded once and shared, and consecutive local
    /// updates (a pipeline of writes, an MSET) travel as one message of at
    /// most [`MAX_UPDATES_BATCH`] bytes.
    pub fn dispatch(&self, outputs: &mut Vec<Output>) {
        let mut local: Vec<Update> = Vec::new();
        let mut local_bytes = 0;
        for output in outputs.drain(..) {
            match output {
                Output::Broadcast {
                    except: None,
                    msg: Message::Updates(updates),
                } => {
                    local.reserve(updates.len());
                    for update in updates {
                        local_bytes += update.wire_len();
                        local.push(update);
                        if local_bytes >= MAX_UPDATES_BATCH {
                            self.links
                                .broadcast(None, &Message::Updates(std::mem::take(&mut local)));
                            local_bytes = 0;
                        }
                    }
                }
                other => {
                    if !local.is_empty() {
                        self.links
                            .broadcast(None, &Message::Updates(std::mem::take(&mut local)));
                        local_bytes = 0;
                    }
                    match other {
                        Output::Send { to, msg } => self.links.send(to, &msg),
                        Output::Broadcast {
                            except: Some(from),
                            msg: Message::Updates(updates),
                        } => self.links.forward(from, updates),
                        Output::Broadcast { except, msg } => self.links.broadcast(except, &msg),
                    }
                }
            }
        }
        if !local.is_empty() {
            self.links.broadcast(None, &Message::Updates(local));
        }
    }

    /// Time since the node started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Host for Node {
    fn replicator(&self) -> &Replicator {
        &self.replicator
    }

    fn publish(&self, outputs: &mut Vec<Output>) {
        self.dispatch(outputs);
    }

    fn info(&self, section: Option<&str>) -> String {
        info_text(self, section)
    }

    fn max_value_bytes(&self) -> usize {
        self.config.read().unwrap().limits.max_bulk_bytes
    }

    fn peers(&self) -> Vec<String> {
        let links = self.links.snapshot();
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.describe(self.id, &self.addr, &links)
    }
}

/// Keeps one busy connection from starving the others of its worker.
///
/// may's workers run ready coroutines until none is left, and only then
/// poll for I/O. A coroutine whose socket always has data (a peer streaming
/// updates, a client with a deep pipeline) never blocks, so the worker never
/// polls: the other sockets' data goes unnoticed, their read timeouts fire,
/// and healthy links are dropped as silent. `yield_now` does not help, as the
/// coroutine is simply run again. So a connection that has read without
/// blocking for [`Fair::STREAK`] sleeps for a moment, which empties the run
/// queue and lets the worker poll.
///
/// A `Fair` made with [`Fair::waiting`] also saves a system call per request
/// on a connection that sends a request, waits for the answer, then sends
/// the next (a client without pipelining): a read that left the socket empty
/// is followed by waiting for may to report new bytes, rather than by a
/// read that would fail and then wait. Such a wait has no timeout, so links,
/// whose reads must time out, use [`Fair::new`].
pub struct Fair {
    streak: Instant,
    wait_when_drained: bool,
    drained: bool,
}

impl Default for Fair {
    fn default() -> Self {
        Self::new()
    }
}

impl Fair {
    /// Longest run of reads that did not block.
    pub const STREAK: Duration = Duration::from_millis(5);
    /// A read that took this long blocked, which ends a streak.
    const BLOCKED: Duration = Duration::from_micros(200);

    /// A fresh streak, for a stream whose reads may time out: every read
    /// tries the socket first.
    pub fn new() -> Self {
        Fair {
            streak: Instant::now(),
            wait_when_drained: false,
            drained: false,
        }
    }

    /// A fresh streak, for a stream without a read timeout: after a read
    /// that emptied the socket, the next one waits for bytes first.
    pub fn waiting() -> Self {
        Fair {
            wait_when_drained: true,
            ..Self::new()
        }
    }

    /// Reads into `buf` as [`client::Buffer::fill`] does, first pausing if
    /// this connection has kept the worker busy for too long.
    pub fn fill(
        &mut self,
        buf: &mut client::Buffer,
        stream: &mut TcpStream,
        max: usize,
    ) -> std::io::Result<usize> {
        if self.streak.elapsed() > Self::STREAK {
            may::coroutine::sleep(Duration::from_millis(1));
            // A coroutine woken from a sleep runs on may's timer thread until
            // it yields; yield so that the work that follows runs on a worker
            // and does not hold up every other timer of the process.
            may::coroutine::yield_now();
            self.streak = Instant::now();
        }
        let started = Instant::now();
        if self.drained {
            stream.wait_io();
        }
        let n = buf.fill(stream, max)?;
        // A read that did not fill the room it was given emptied the socket.
        self.drained = self.wait_when_drained && n > 0 && !buf.filled();
        if started.elapsed() > Self::BLOCKED {
            self.streak = Instant::now();
        }
        Ok(n)
    }
}

/// Wall-clock milliseconds since the UNIX epoch, for the hybrid clock.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A random 64-bit id, without a dependency: std's `RandomState` is seeded
/// from the OS; mix in the time and pid so two ids drawn together differ.
pub fn random_id() -> NodeId {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish() | 1
}

/// Starts a node from a loaded config and serves until SIGINT or SIGTERM.
/// Returns an error when the node cannot start (no free port).
pub fn run(
    config: Config,
    config_path: Option<PathBuf>,
    cli_peers: Vec<String>,
) -> Result<(), String> {
    may::config()
        .set_stack_size(STACK_WORDS)
        .set_pool_capacity(POOL_CAPACITY)
        .set_workers(config.runtime.effective_workers());
    // may pins worker i to core i by default, so every node on a machine
    // (and every single-worker node) would crowd onto core 0 while the
    // other cores idle. Let the kernel place the workers.
    may::config().set_worker_pin(false);

    let (listener, addr) = listener::bind_with_probing(&config)?;
    crate::logging::set_node_name(&addr.to_string());
    let initial_config = config.clone();
    let mut config = config;
    config.discovery.bind_port = addr.port();
    let addr = format!("{}:{}", config.discovery.bind_host, addr.port());

    let id = random_id();
    let grace_ms = config.gossip.tombstone_grace_s.saturating_mul(1000);
    let replicator = Replicator::new(
        id,
        Arc::new(Store::new()),
        ReplicationConfig {
            tombstone_grace_ms: grace_ms,
            link_round_gap_ms: config.gossip.anti_entropy_ms,
            ..ReplicationConfig::default()
        },
        Arc::new(wall_ms),
    );
    // No peer is linked yet: nothing to push to.
    replicator.set_pushing(false);
    match &config_path {
        Some(p) => info!("config {}", p.display()),
        None => info!("no config file; using built-in defaults"),
    }
    info!("node {id:016x} listening on {addr}");

    let node = Arc::new(Node {
        id,
        links: Links::new(peer::QueueLimit {
            frames: config.gossip.peer_queue_limit,
            bytes: config.gossip.peer_queue_bytes,
        }),
        config: Arc::new(may::sync::RwLock::new(config)),
        config_path,
        cli_peers,
        initial_config,
        replicator,
        members: std::sync::Mutex::new(Members::default()),
        discovery: DiscoveryLoops::default(),
        counters: Counters::default(),
        addr,
        started: Instant::now(),
        stopping: AtomicBool::new(false),
    });

    let signals = signal_waiter()?;
    spawn(&node, "listener", move |node| {
        listener::accept_loop(node, listener)
    });
    spawn(&node, "ticker", ticker);
    spawn(&node, "reload", reload::watch);
    discovery::sync_with_config(&node);

    // The main thread waits for a signal; every coroutine runs on may's
    // workers.
    let signal = signals();
    info!("received {signal}; stopping");
    node.stopping.store(true, Ordering::Relaxed);
    node.discovery.stop_all();
    node.links.close_all();
    info!("stopped");
    Ok(())
}

/// Spawns a named coroutine that gets a handle on the node.
pub fn spawn(node: &Arc<Node>, name: &str, f: impl FnOnce(Arc<Node>) + Send + 'static) {
    let node = Arc::clone(node);
    let builder = may::coroutine::Builder::new().name(name.to_string());
    // SAFETY: may requires that a coroutine hold no thread-local reference
    // across a yield; none of ours do (see DESIGN.md, notes on `may`).
    if let Err(e) = unsafe { builder.spawn(move || f(node)) } {
        warn!("cannot start coroutine {name}: {e}");
    }
}

/// Installs SIGINT/SIGTERM handling, and returns the blocking wait for one.
fn signal_waiter() -> Result<impl FnOnce() -> &'static str, String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    Ok(move || match signals.forever().next() {
        Some(SIGINT) => "SIGINT",
        _ => "SIGTERM",
    })
}

/// Once per anti-entropy interval: a replication tick with every linked
/// peer, a membership round, and the ops/s sample.
fn ticker(node: Arc<Node>) {
    let mut last_commands = 0;
    let mut last_sample = Instant::now();
    let mut outputs = Vec::new();
    let mut tick = 0u64;
    let mut members_sent = 0u64;
    while !node.stopping() {
        let interval = Duration::from_millis(node.config.read().unwrap().gossip.anti_entropy_ms);
        may::coroutine::sleep(interval);
        may::coroutine::yield_now();

        let commands = node.counters.commands.load(Ordering::Relaxed);
        let elapsed = last_sample.elapsed().as_secs_f64().max(0.001);
        node.counters.ops_per_sec.store(
            ((commands - last_commands) as f64 / elapsed) as u64,
            Ordering::Relaxed,
        );
        (last_commands, last_sample) = (commands, Instant::now());

        let linked = node.links.ids();
        node.replicator.tick(&linked, &mut outputs);
        node.dispatch(&mut outputs);
        tick += 1;
        peer::gossip_members(&node, tick, &mut members_sent);
    }
}

fn info_text(node: &Node, section: Option<&str>) -> String {
    let wanted = |name: &str| match section {
        None | Some("all") | Some("default") | Some("everything") => true,
        Some(s) => s == name,
    };
    let c = &node.counters;
    let rs = node.replicator.stats();
    let store = node.replicator.store().stats();
    let links = node.links.snapshot();
    let mut s = String::new();
    if wanted("server") {
        let _ = write!(
            s,
            "# Server\r\npiccolo_version:{}\r\nredis_version:7.0.0\r\nnode_id:{:016x}\r\naddress:{}\r\nprocess_id:{}\r\nuptime_in_seconds:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            node.id,
            node.addr,
            std::process::id(),
            node.uptime().as_secs()
        );
    }
    if wanted("clients") {
        let _ = write!(
            s,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nrejected_connections:{}\r\n\r\n",
            c.clients.load(Ordering::Relaxed),
            node.config.read().unwrap().limits.max_clients,
            c.rejected.load(Ordering::Relaxed),
        );
    }
    if wanted("stats") {
        let _ = write!(
            s,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:{}\r\nupdates_sent:{}\r\nupdates_received:{}\r\nupdates_applied:{}\r\nanti_entropy_rounds:{}\r\nanti_entropy_repaired:{}\r\ntombstones_collected:{}\r\nlinks_up_total:{}\r\nlinks_down_total:{}\r\nlinks_shed_total:{}\r\n\r\n",
            c.connections.load(Ordering::Relaxed),
            c.commands.load(Ordering::Relaxed),
            c.ops_per_sec.load(Ordering::Relaxed),
            rs.updates_sent,
            rs.updates_received,
            rs.updates_applied,
            rs.sync_rounds,
            rs.repaired,
            rs.tombstones_collected,
            c.links_up.load(Ordering::Relaxed),
            c.links_down.load(Ordering::Relaxed),
            node.links.shed.load(Ordering::Relaxed),
        );
    }
    if wanted("keyspace") {
        let _ = write!(
            s,
            "# Keyspace\r\ndb0:keys={},expires=0,tombstones={}\r\ndigest:{:016x}\r\n\r\n",
            store.keys,
            store.tombstones,
            node.replicator.store().root_hash()
        );
    }
    if wanted("peers") {
        let _ = write!(s, "# Peers\r\nlinks:{}\r\n", links.len());
        for (i, l) in links.iter().enumerate() {
            let _ = write!(
                s,
                "link{i}:id={:016x},addr={},dir={},queued={}\r\n",
                l.id,
                l.addr,
                if l.dialed { "out" } else { "in" },
                l.queued
            );
        }
        s.push_str("\r\n");
    }
    s
}
