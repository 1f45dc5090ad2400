//! Peer links: the handshake, one read loop per link, and a bounded writer.
//!
//! A link is one TCP connection between two nodes, opened by either side.
//! After the [`Hello`] exchange it carries length-prefixed frames (see
//! [`crate::replication::wire`]). Each link has:
//! - a reader, in the coroutine that opened or accepted it, which feeds
//!   frames to the replicator and the membership table;
//! - a writer coroutine, which drains the link's outbound queue and writes
//!   everything queued in one `write_all`, or a heartbeat when idle.
//!
//! The outbound queue holds at most `peer_queue_limit` frames and
//! `peer_queue_bytes` bytes. Beyond that
//! the peer is too slow or stuck: the link is dropped rather than let memory
//! grow, and anti-entropy repairs the gap once it is redialed. A link silent
//! for `link_timeout_ms` (no frame, not even a heartbeat) is closed too,
//! which catches half-open TCP connections.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Cursor, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use may::net::TcpStream;

use super::Node;
use super::client::Buffer;
use crate::membership::Joined;
use crate::replication::wire::{self, Hello, Message};
use crate::replication::{MemberInfo, Output, PROTOCOL_VERSION, Update};
use crate::store::NodeId;

/// Most bytes the writer gathers into one `write_all`.
const MAX_BATCH: usize = 1024 * 1024;

/// How long the other side gets to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// One live link to a peer.
pub struct PeerLink {
    /// The peer's node id.
    pub id: NodeId,
    /// The address the peer advertised (its bound `host:port`).
    pub addr: String,
    /// True when this node dialed the link.
    pub dialed: bool,
    serial: u64,
    queue: Mutex<Queue>,
    limit: QueueLimit,
    wake: may::sync::Semphore,
    closed: AtomicBool,
    /// The nodes this peer says it is linked with (from its last member
    /// list), itself included: an update written by one of them already
    /// reached this peer directly, so forwarding skips it.
    neighbours: Mutex<HashSet<NodeId>>,
    /// A handle on the socket, to shut it down from any coroutine.
    socket: TcpStream,
}

impl PeerLink {
    /// Queues a frame. Returns false when the queue is full; the caller then
    /// drops the link.
    fn push(&self, frame: &Arc<Vec<u8>>) -> bool {
        if self.is_closed() {
            return true;
        }
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.frames.len() >= self.limit.frames || q.bytes + frame.len() > self.limit.bytes {
                return false;
            }
            q.bytes += frame.len();
            q.frames.push_back(Arc::clone(frame));
        }
        self.wake.post();
        true
    }

    /// Closes the link: both its coroutines notice and end.
    pub fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let _ = self.socket.shutdown(Shutdown::Both);
            self.wake.post();
        }
    }

    /// True once the link was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn queued(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .frames
            .len()
    }
}

/// A link's outbound frames, and their total size.
#[derive(Default)]
struct Queue {
    frames: VecDeque<Arc<Vec<u8>>>,
    bytes: usize,
}

/// How much one link may have queued before it is dropped.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimit {
    /// Frames.
    pub frames: usize,
    /// Bytes, all frames together.
    pub bytes: usize,
}

/// A link as INFO and PEERS show it.
#[derive(Clone, Debug)]
pub struct LinkInfo {
    /// The peer's id.
    pub id: NodeId,
    /// The peer's advertised address.
    pub addr: String,
    /// This node dialed it.
    pub dialed: bool,
    /// Frames waiting in its outbound queue.
    pub queued: usize,
}

/// The live links of a node, at most one per peer.
///
/// A std lock: every critical section is a map operation, and nothing waits
/// while holding it (frames are queued after the lock is released).
pub struct Links {
    map: RwLock<HashMap<NodeId, Arc<PeerLink>>>,
    queue_limit: QueueLimit,
    serial: AtomicU64,
    /// Links dropped because their queue was full.
    pub shed: AtomicU64,
}

impl Links {
    /// No links yet; each link's queue will hold up to `queue_limit`.
    pub fn new(queue_limit: QueueLimit) -> Self {
        Links {
            map: RwLock::default(),
            queue_limit,
            serial: AtomicU64::new(0),
            shed: AtomicU64::new(0),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<NodeId, Arc<PeerLink>>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<NodeId, Arc<PeerLink>>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a link unless it duplicates a better one.
    ///
    /// Two nodes may dial each other at once. Both sides must keep the same
    /// connection, so the rule depends only on the pair: keep the link dialed
    /// by the node with the lower id. Between two links dialed by the same
    /// node, the newer one wins (the older is likely half-open).
    ///
    /// `linked` hears, under the lock, whether any link remains, so that its
    /// view cannot be overtaken by a concurrent change.
    fn register(&self, self_id: NodeId, link: &Arc<PeerLink>, linked: impl FnOnce(bool)) -> bool {
        let dialer = |l: &PeerLink| if l.dialed { self_id } else { l.id };
        let preferred = self_id.min(link.id);
        let mut map = self.write();
        if let Some(old) = map.get(&link.id) {
            let old_ok = !old.is_closed() && dialer(old) == preferred;
            let new_ok = dialer(link) == preferred;
            if old_ok && !new_ok {
                return false;
            }
            old.close();
        }
        map.insert(link.id, Arc::clone(link));
        linked(true);
        true
    }

    /// Removes `link`, unless it was already replaced by a newer one;
    /// `linked` hears, under the lock, whether any link remains.
    fn remove(&self, link: &PeerLink, linked: impl FnOnce(bool)) {
        let mut map = self.write();
        if map.get(&link.id).is_some_and(|l| l.serial == link.serial) {
            map.remove(&link.id);
        }
        linked(!map.is_empty());
    }

    /// Sends one message to one peer, if linked.
    pub fn send(&self, to: NodeId, msg: &Message) {
        let link = self.read().get(&to).cloned();
        if let Some(link) = link {
            let mut frame = Vec::new();
            wire::encode_frame(msg, &mut frame);
            self.push_or_shed(&link, &Arc::new(frame));
        }
    }

    /// Sends one message to every peer but `except`, encoding it once.
    pub fn broadcast(&self, except: Option<NodeId>, msg: &Message) {
        let targets: Vec<Arc<PeerLink>> = self
            .read()
            .values()
            .filter(|l| Some(l.id) != except)
            .cloned()
            .collect();
        if targets.is_empty() {
            return;
        }
        let mut frame = Vec::new();
        wire::encode_frame(msg, &mut frame);
        let frame = Arc::new(frame);
        for link in &targets {
            self.push_or_shed(link, &frame);
        }
    }

    /// Forwards updates received from `from` to the other peers.
    ///
    /// The writer of an update pushed it to every peer it is linked with, so
    /// a peer linked with the writer already has it: each peer gets only the
    /// updates whose writer it is not linked with. In a full mesh nothing is
    /// forwarded at all, which turns the N² frames per write of plain
    /// flooding into N. Should a peer's member list be stale (a link that
    /// just dropped), anti-entropy repairs the gap within a round.
    pub fn forward(&self, from: NodeId, updates: Vec<Update>) {
        let targets: Vec<Arc<PeerLink>> = self
            .read()
            .values()
            .filter(|l| l.id != from)
            .cloned()
            .collect();
        let mut whole: Option<Arc<Vec<u8>>> = None;
        for link in &targets {
            let wanted: Vec<&Update> = {
                let neighbours = link.neighbours.lock().unwrap_or_else(|e| e.into_inner());
                updates
                    .iter()
                    .filter(|u| !neighbours.contains(&u.version.node))
                    .collect()
            };
            if wanted.is_empty() {
                continue;
            }
            let frame = if wanted.len() == updates.len() {
                Arc::clone(whole.get_or_insert_with(|| {
                    let mut f = Vec::new();
                    wire::encode_frame(&Message::Updates(updates.clone()), &mut f);
                    Arc::new(f)
                }))
            } else {
                let mut f = Vec::new();
                let some = wanted.into_iter().cloned().collect();
                wire::encode_frame(&Message::Updates(some), &mut f);
                Arc::new(f)
            };
            self.push_or_shed(link, &frame);
        }
    }

    fn push_or_shed(&self, link: &PeerLink, frame: &Arc<Vec<u8>>) {
        if !link.push(frame) {
            warn!(
                "link to {:016x} at {}: outbound queue full (limit {} frames, {} bytes); dropping the link, anti-entropy will repair the gap",
                link.id, link.addr, self.queue_limit.frames, self.queue_limit.bytes
            );
            self.shed.fetch_add(1, Ordering::Relaxed);
            link.close();
        }
    }

    /// Ids of the linked peers.
    pub fn ids(&self) -> Vec<NodeId> {
        self.read().keys().copied().collect()
    }

    /// True when a live link goes to `id`.
    pub fn contains(&self, id: NodeId) -> bool {
        self.read().get(&id).is_some_and(|l| !l.is_closed())
    }

    /// True when a live link goes to a peer advertising `addr`.
    pub fn has_addr(&self, addr: &str) -> bool {
        self.read()
            .values()
            .any(|l| l.addr == addr && !l.is_closed())
    }

    /// The links, for INFO and PEERS.
    pub fn snapshot(&self) -> Vec<LinkInfo> {
        let mut v: Vec<LinkInfo> = self
            .read()
            .values()
            .map(|l| LinkInfo {
                id: l.id,
                addr: l.addr.clone(),
                dialed: l.dialed,
                queued: l.queued(),
            })
            .collect();
        v.sort_by(|a, b| a.addr.cmp(&b.addr));
        v
    }

    /// Closes every link (shutdown).
    pub fn close_all(&self) {
        for link in self.read().values() {
            link.close();
        }
    }
}

/// Why a handshake did not produce a link.
#[derive(Debug)]
pub enum Refused {
    /// The connection failed or the bytes were not a piccolo hello.
    Io(String),
    /// The other end is this node (reached through another address).
    Myself,
    /// The peer speaks another protocol version or belongs to another
    /// cluster.
    Mismatch(String),
    /// A better link to that peer already exists.
    Duplicate(NodeId),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Io(e) => write!(f, "{e}"),
            Refused::Myself => write!(f, "it is this node"),
            Refused::Mismatch(e) => write!(f, "{e}"),
            Refused::Duplicate(id) => write!(f, "already linked to {id:016x}"),
        }
    }
}

/// The hello this node sends on `stream`. The advertised address carries
/// the port actually bound, read from the live config; when bound to a
/// wildcard address, the connection's own local address stands in for it.
fn our_hello(node: &Node, stream: &TcpStream) -> Hello {
    let (host, port, cluster) = {
        let c = node.config.read().unwrap();
        (
            c.discovery.bind_host.clone(),
            c.discovery.bind_port,
            c.gossip.cluster.clone(),
        )
    };
    let host = match host.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_unspecified() => stream.local_addr().map_or(host, |a| a.ip().to_string()),
        _ => host,
    };
    Hello {
        version: PROTOCOL_VERSION,
        node: node.id,
        cluster,
        addr: format!("{host}:{port}"),
    }
}

/// Checks a peer's hello against ours.
fn check_hello(node: &Node, theirs: &Hello, ours: &Hello) -> Result<(), Refused> {
    if theirs.version != ours.version {
        return Err(Refused::Mismatch(format!(
            "peer {} speaks protocol version {}, this node speaks {}",
            theirs.addr, theirs.version, ours.version
        )));
    }
    if theirs.cluster != ours.cluster {
        return Err(Refused::Mismatch(format!(
            "peer {} belongs to cluster '{}', this node to '{}'",
            theirs.addr, theirs.cluster, ours.cluster
        )));
    }
    if theirs.node == node.id {
        return Err(Refused::Myself);
    }
    Ok(())
}

/// A link that passed its handshake and was registered: run it with
/// [`run_link`].
pub struct Established {
    link: Arc<PeerLink>,
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Established {
    /// The link.
    pub fn link(&self) -> &Arc<PeerLink> {
        &self.link
    }
}

/// Dials `target` and runs the handshake as the initiator.
pub fn dial(
    node: &Arc<Node>,
    target: SocketAddr,
    timeout: Duration,
) -> Result<Established, Refused> {
    let mut stream =
        TcpStream::connect_timeout(&target, timeout).map_err(|e| Refused::Io(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let ours = our_hello(node, &stream);
    stream
        .write_all(&ours.encode())
        .map_err(|e| Refused::Io(e.to_string()))?;
    let theirs = Hello::read_from(&mut stream).map_err(|e| Refused::Io(e.to_string()))?;
    check_hello(node, &theirs, &ours)?;
    establish(node, stream, theirs, true, Vec::new())
}

/// Serves a connection whose first byte said "peer": runs the handshake as
/// the acceptor, then the link.
pub fn serve_incoming(node: &Arc<Node>, stream: TcpStream, first: Vec<u8>, from: SocketAddr) {
    let mut stream = stream;
    let _ = stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let mut input = Cursor::new(first).chain(&mut stream);
    let theirs = match Hello::read_from(&mut input) {
        Ok(h) => h,
        Err(e) => {
            info!("connection from {from} is not a piccolo peer ({e}); closed");
            return;
        }
    };
    let (cursor, _) = input.into_inner();
    let pending = cursor.get_ref()[cursor.position() as usize..].to_vec();
    let ours = our_hello(node, &stream);
    if let Err(Refused::Myself) = check_hello(node, &theirs, &ours) {
        debug!("dropped a link to myself from {from}");
        return;
    }
    // Answer even a mismatched peer, so that it can log why too.
    if stream.write_all(&ours.encode()).is_err() {
        return;
    }
    if let Err(e) = check_hello(node, &theirs, &ours) {
        warn!("refused link from {from}: {e}");
        return;
    }
    match establish(node, stream, theirs, false, pending) {
        Ok(est) => run_link(node, est),
        Err(e) => debug!("link from {from} not kept: {e}"),
    }
}

/// Registers a link, starts its writer, and logs it.
fn establish(
    node: &Arc<Node>,
    stream: TcpStream,
    hello: Hello,
    dialed: bool,
    pending: Vec<u8>,
) -> Result<Established, Refused> {
    let socket = stream.try_clone().map_err(|e| Refused::Io(e.to_string()))?;
    let writer_stream = stream.try_clone().map_err(|e| Refused::Io(e.to_string()))?;
    let link = Arc::new(PeerLink {
        id: hello.node,
        addr: hello.addr.clone(),
        dialed,
        serial: node.links.serial.fetch_add(1, Ordering::Relaxed),
        queue: Mutex::new(Queue::default()),
        limit: node.links.queue_limit,
        wake: may::sync::Semphore::new(0),
        closed: AtomicBool::new(false),
        neighbours: Mutex::new(HashSet::from([hello.node])),
        socket,
    });
    if !node
        .links
        .register(node.id, &link, |any| node.replicator.set_pushing(any))
    {
        return Err(Refused::Duplicate(hello.node));
    }
    let heartbeat = node.config.read().unwrap().heartbeat();
    let writer_link = Arc::clone(&link);
    super::spawn(node, "peer-writer", move |_| {
        writer(writer_link, writer_stream, heartbeat)
    });
    let mut outputs = Vec::new();
    node.replicator.link_up(link.id, dialed, &mut outputs);
    node.dispatch(&mut outputs);
    node.links
        .send(link.id, &Message::Members(member_list(node)));
    Ok(Established {
        link,
        stream,
        pending,
    })
}

/// Reads frames from a link until it closes, then unregisters it.
pub fn run_link(node: &Arc<Node>, est: Established) {
    let Established {
        link,
        mut stream,
        pending,
    } = est;
    let (timeout, max_frame) = {
        let c = node.config.read().unwrap();
        (c.link_timeout(), c.limits.max_frame_bytes)
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let mut buf = Buffer::with(&pending);
    let mut outputs = Vec::new();
    // Two nodes that dial each other at once each keep one of the two
    // connections and close the other (see `Links::register`). The link is
    // announced once the peer's first frame shows that it kept it too, so a
    // discarded duplicate never shows up as "link up" in the log.
    let mut announced = false;
    let mut fair = super::Fair::new();
    let reason = loop {
        if link.is_closed() || node.stopping() {
            break "closed".to_string();
        }
        let data = buf.data();
        if data.len() >= 4 {
            let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
            if len > max_frame {
                break format!("frame of {len} bytes exceeds the {max_frame}-byte limit");
            }
            if data.len() >= 4 + len {
                let msg = match wire::decode(&data[4..4 + len]) {
                    Ok(msg) => msg,
                    Err(e) => break format!("bad frame: {e}"),
                };
                buf.consume(4 + len);
                if !announced {
                    announced = true;
                    announce(node, &link);
                }
                handle(node, &link, msg, &mut outputs);
                continue;
            }
        }
        match fair.fill(&mut buf, &mut stream, max_frame + 4) {
            Ok(0) => break "closed by peer".to_string(),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break format!("silent for {} ms", timeout.as_millis());
            }
            Err(e) => break e.to_string(),
        }
    };
    link.close();
    node.links
        .remove(&link, |any| node.replicator.set_pushing(any));
    if !announced {
        debug!(
            "link to {:016x} at {} closed before its first frame ({reason})",
            link.id, link.addr
        );
        return;
    }
    node.counters.links_down.fetch_add(1, Ordering::Relaxed);
    if !node.links.contains(link.id) {
        node.members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unlinked(link.id, Instant::now());
    }
    if !node.stopping() {
        info!("link down: {:016x} at {} ({reason})", link.id, link.addr);
    }
}

/// Logs a link that both sides kept, and records the member.
fn announce(node: &Node, link: &PeerLink) {
    node.counters.links_up.fetch_add(1, Ordering::Relaxed);
    info!(
        "link up: {:016x} at {} ({})",
        link.id,
        link.addr,
        if link.dialed { "dialed" } else { "accepted" }
    );
    let change = node
        .members
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .linked(link.id, &link.addr, Instant::now());
    match change {
        Joined::New => info!("member {:016x} at {} joined", link.id, link.addr),
        Joined::Replaced(old) => info!(
            "member {:016x} at {} joined, replacing {old:016x} (restarted)",
            link.id, link.addr
        ),
        Joined::Known => {}
    }
}

fn handle(node: &Arc<Node>, link: &PeerLink, msg: Message, outputs: &mut Vec<Output>) {
    match msg {
        Message::Ping => {}
        Message::Members(list) => {
            // In a member list only the sender's direct links are alive.
            *link.neighbours.lock().unwrap_or_else(|e| e.into_inner()) =
                list.iter().filter(|m| m.alive).map(|m| m.id).collect();
            let learned = node
                .members
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .merge(node.id, list, Instant::now());
            for m in learned {
                info!(
                    "member {:016x} at {} joined (heard from {:016x})",
                    m.id, m.addr, link.id
                );
                super::discovery::consider_learned(node, m.id, &m.addr);
            }
        }
        other => {
            node.replicator.handle(link.id, other, outputs);
            node.dispatch(outputs);
        }
    }
}

/// The writer coroutine of a link: drains the queue into one write, or sends
/// a heartbeat after `heartbeat` of silence.
fn writer(link: Arc<PeerLink>, mut stream: TcpStream, heartbeat: Duration) {
    let mut ping = Vec::new();
    wire::encode_frame(&Message::Ping, &mut ping);
    let mut batch = Vec::new();
    while !link.is_closed() {
        let woken = link.wake.wait_timeout(heartbeat);
        if link.is_closed() {
            break;
        }
        batch.clear();
        {
            let mut q = link.queue.lock().unwrap_or_else(|e| e.into_inner());
            while let Some(frame) = q.frames.pop_front() {
                q.bytes -= frame.len();
                batch.extend_from_slice(&frame);
                if batch.len() >= MAX_BATCH {
                    break;
                }
            }
        }
        if batch.is_empty() {
            if woken {
                continue;
            }
            batch.extend_from_slice(&ping);
        }
        if let Err(e) = stream.write_all(&batch) {
            debug!("link to {:016x}: write failed: {e}", link.id);
            link.close();
        }
    }
}

/// What this node tells its links about the members it knows, sorted by
/// id so that an unchanged list is recognised.
fn member_list(node: &Node) -> Vec<MemberInfo> {
    let links = node.links.snapshot();
    let mut list = node
        .members
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .gossip_list(node.id, &node.addr, &links);
    list.sort_by_key(|m| m.id);
    list
}

/// Ticks between two member lists sent when nothing changed. A changed list
/// goes out at the next tick.
pub const MEMBERS_REFRESH_TICKS: u64 = 5;

/// Marks members not vouched for in a while as down, and sends the member
/// list to every link when it changed, or every [`MEMBERS_REFRESH_TICKS`]
/// ticks (`tick` counts the calls). Called by the ticker.
pub fn gossip_members(node: &Arc<Node>, tick: u64, last_sent: &mut u64) {
    let (link_timeout, period) = {
        let c = node.config.read().unwrap();
        (
            c.link_timeout(),
            Duration::from_millis(c.gossip.anti_entropy_ms),
        )
    };
    // Hearsay is refreshed every few ticks; allow two refreshes to be missed.
    let timeout = link_timeout * 2 + period * (2 * MEMBERS_REFRESH_TICKS as u32);
    let down = node
        .members
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .expire(Instant::now(), timeout);
    for (id, addr) in down {
        info!("member {id:016x} at {addr} is down");
    }
    let list = member_list(node);
    let digest = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        list.hash(&mut h);
        h.finish()
    };
    if digest != *last_sent || tick.is_multiple_of(MEMBERS_REFRESH_TICKS) {
        *last_sent = digest;
        node.links.broadcast(None, &Message::Members(list));
    }
}
