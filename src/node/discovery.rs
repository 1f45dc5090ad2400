//! Discovery: one coroutine per peer address, which dials it, backs off,
//! probes nearby ports, and runs the link once it is up.
//!
//! Each address in `discovery.hosts` gets a [`DiscoveryLoop`]; so do a few
//! members learned through gossip (at most `gossip.max_learned_links`). A
//! loop:
//! 1. waits while a live link already goes to that address;
//! 2. dials the address (an IP literal directly; a host name is resolved on
//!    a plain thread, never on a may worker);
//! 3. when the port refuses, probes the next `port_probe_limit` ports, since
//!    a peer started from the same config may have shifted there; any
//!    piccolo node found this way is a valid link;
//! 4. skips itself: its own bound address is never dialed, and a handshake
//!    that reveals its own id is dropped;
//! 5. on failure, sleeps with exponential backoff plus jitter, from
//!    `backoff_initial_ms` up to `backoff_max_ms`;
//! 6. once linked, runs the link's read loop, and when the link drops goes
//!    back to 1.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::{debug, info};

use super::Node;
use super::peer::{self, Refused};
use crate::config::split_host_port;
use crate::store::NodeId;

/// How often a loop whose peer is linked through another connection checks
/// whether it still is.
const LINKED_CHECK: Duration = Duration::from_millis(500);

/// How long a host name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Failed rounds after which a loop for a learned (not configured) member
/// gives up; the member table keeps it, and gossip may bring it back.
const LEARNED_GIVE_UP: u32 = 6;

/// Failed rounds between two info-level reminders that a peer is still
/// unreachable (the rounds in between log at debug).
const REMIND_EVERY: u32 = 12;

/// The handle of one running discovery loop.
pub struct DiscoveryLoop {
    stop: AtomicBool,
    /// Started from gossip rather than `hosts`.
    learned: bool,
    /// The link this loop runs right now, to close it when the loop stops.
    current: Mutex<Option<Arc<peer::PeerLink>>>,
}

impl DiscoveryLoop {
    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(link) = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            link.close();
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// The running discovery loops, by peer address.
#[derive(Default)]
pub struct DiscoveryLoops {
    map: Mutex<HashMap<String, Arc<DiscoveryLoop>>>,
}

impl DiscoveryLoops {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<DiscoveryLoop>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops every loop (shutdown).
    pub fn stop_all(&self) {
        for l in self.lock().values() {
            l.stop();
        }
    }
}

/// Starts a loop for every configured host that has none, and stops the
/// loops of hosts no longer configured. Called at start and on reload.
pub fn sync_with_config(node: &Arc<Node>) {
    let hosts = node.config.read().unwrap().discovery.hosts.clone();
    let mut to_start = Vec::new();
    {
        let mut loops = node.discovery.lock();
        loops.retain(|addr, l| {
            let keep = l.learned || hosts.contains(addr);
            if !keep {
                info!("stopped discovery of {addr}: no longer in hosts");
                l.stop();
            }
            keep
        });
        for host in &hosts {
            match loops.get_mut(host) {
                // A learned member that is now configured stays up for good.
                Some(l) if l.learned => {
                    l.stop();
                    to_start.push(host.clone());
                }
                Some(_) => {}
                None => to_start.push(host.clone()),
            }
        }
    }
    for host in to_start {
        if is_self(node, &host) {
            debug!("skipping {host}: that is this node");
            continue;
        }
        start(node, host, false);
    }
}

/// Considers dialing a member learned through gossip: done when it is not
/// linked, has no loop yet, and fewer than `max_learned_links` learned loops
/// run.
pub fn consider_learned(node: &Arc<Node>, id: NodeId, addr: &str) {
    if node.links.contains(id) || is_self(node, addr) {
        return;
    }
    let max = node.config.read().unwrap().gossip.max_learned_links;
    {
        let loops = node.discovery.lock();
        if loops.contains_key(addr) || loops.values().filter(|l| l.learned).count() >= max {
            return;
        }
    }
    start(node, addr.to_string(), true);
}

fn start(node: &Arc<Node>, addr: String, learned: bool) {
    let handle = Arc::new(DiscoveryLoop {
        stop: AtomicBool::new(false),
        learned,
        current: Mutex::new(None),
    });
    node.discovery
        .lock()
        .insert(addr.clone(), Arc::clone(&handle));
    if learned {
        info!("dialing learned member {addr}");
    } else {
        debug!("discovery of {addr} started");
    }
    super::spawn(node, "discovery", move |node| {
        discovery_loop(&node, &addr, &handle);
        let mut loops = node.discovery.lock();
        if loops.get(&addr).is_some_and(|l| Arc::ptr_eq(l, &handle)) {
            loops.remove(&addr);
        }
    });
}

/// True when `addr` names this node's own listening address.
fn is_self(node: &Node, addr: &str) -> bool {
    let (bind_host, bind_port) = {
        let c = node.config.read().unwrap();
        (c.discovery.bind_host.clone(), c.discovery.bind_port)
    };
    let Ok((host, port)) = split_host_port(addr) else {
        return false;
    };
    if port != bind_port {
        return false;
    }
    if host == bind_host {
        return true;
    }
    match (host.parse::<IpAddr>(), bind_host.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => {
            let local = |ip: IpAddr| ip.is_loopback() || ip.is_unspecified();
            a == b || (local(a) && local(b)) || (b.is_unspecified() && a.is_loopback())
        }
        _ => host == "localhost" && bind_host.parse::<IpAddr>().is_ok_and(|b| b.is_loopback()),
    }
}

enum Round {
    /// A link came up and ran until it dropped.
    Linked,
    /// The node at the address itself is already linked, through another
    /// connection.
    AlreadyLinked(NodeId),
    /// Nothing to link with; the reason, for the log.
    Failed(String),
}

fn discovery_loop(node: &Arc<Node>, addr: &str, handle: &DiscoveryLoop) {
    let mut failures: u32 = 0;
    let (initial, max) = {
        let c = node.config.read().unwrap();
        (
            Duration::from_millis(c.discovery.backoff_initial_ms),
            Duration::from_millis(c.discovery.backoff_max_ms),
        )
    };
    let mut backoff = initial;
    let mut rng = super::random_id();
    // The node last found at this address, when it is linked through a
    // connection of its own making or under another name.
    let mut known: Option<NodeId> = None;
    while !handle.stopped() && !node.stopping() {
        if node.links.has_addr(addr) || known.is_some_and(|id| node.links.contains(id)) {
            sleep(LINKED_CHECK);
            continue;
        }
        match round(node, addr, handle) {
            Round::Linked => {
                failures = 0;
                backoff = initial;
                // A link that just dropped: give the peer a moment before
                // redialing, so a restarting node is not hammered.
                sleep(jitter(initial, &mut rng));
            }
            Round::AlreadyLinked(id) => {
                known = Some(id);
                failures = 0;
                backoff = initial;
                sleep(LINKED_CHECK);
            }
            Round::Failed(reason) => {
                failures += 1;
                if failures == 1 {
                    info!(
                        "cannot reach {addr} ({reason}); retrying with backoff from {} ms up to {} ms",
                        initial.as_millis(),
                        max.as_millis()
                    );
                } else if failures.is_multiple_of(REMIND_EVERY) {
                    info!("still cannot reach {addr} after {failures} attempts ({reason})");
                } else {
                    debug!(
                        "cannot reach {addr} ({reason}); next try in {} ms",
                        backoff.as_millis()
                    );
                }
                if handle.learned && failures >= LEARNED_GIVE_UP {
                    info!("gave up dialing learned member {addr} after {failures} attempts");
                    return;
                }
                sleep(jitter(backoff, &mut rng));
                backoff = (backoff * 2).min(max);
            }
        }
    }
}

/// One dial round: the address itself, then, if its port refused, the next
/// ports within `port_probe_limit`.
fn round(node: &Arc<Node>, addr: &str, handle: &DiscoveryLoop) -> Round {
    let target = match resolve(addr) {
        Ok(t) => t,
        Err(e) => return Round::Failed(e),
    };
    let (limit, timeout) = {
        let c = node.config.read().unwrap();
        (
            c.discovery.port_probe_limit,
            Duration::from_millis(c.discovery.connect_timeout_ms),
        )
    };
    let mut first_error = None;
    for offset in 0..=limit {
        if handle.stopped() || node.stopping() {
            return Round::Failed("stopped".into());
        }
        let Some(port) = target.port().checked_add(offset) else {
            break;
        };
        let candidate = SocketAddr::new(target.ip(), port);
        if is_self(node, &candidate.to_string()) {
            continue;
        }
        match peer::dial(node, candidate, timeout) {
            Ok(est) => {
                if offset > 0 {
                    info!("probing for {addr}: found a peer on port {port}");
                }
                *handle.current.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Arc::clone(est.link()));
                peer::run_link(node, est);
                *handle.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
                return Round::Linked;
            }
            Err(Refused::Myself) => continue,
            // The address itself leads to a linked node: nothing to do. A
            // linked node found while probing is not the one looked for.
            Err(Refused::Duplicate(id)) if offset == 0 => return Round::AlreadyLinked(id),
            Err(Refused::Duplicate(_)) => {}
            Err(Refused::Mismatch(e)) => {
                first_error.get_or_insert(e);
                if offset == 0 {
                    break;
                }
            }
            Err(Refused::Io(e)) => {
                let refused = e.contains("refused");
                first_error.get_or_insert(e);
                // Only a refusal means "nobody listens on that port"; a
                // timeout means the host itself is unreachable, and probing
                // further would only multiply the wait.
                if !refused {
                    break;
                }
            }
        }
    }
    Round::Failed(first_error.unwrap_or_else(|| "no port to try".into()))
}

/// Resolves `host:port`. IP literals are parsed directly; names are resolved
/// on a short-lived thread, because `getaddrinfo` blocks and would stall a
/// may worker and every coroutine on it.
fn resolve(addr: &str) -> Result<SocketAddr, String> {
    let (host, port) = split_host_port(addr)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let (tx, rx) = may::sync::mpsc::channel();
    let name = format!("{host}:{port}");
    std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let _ = tx.send(name.to_socket_addrs().map(|mut a| a.next()));
        })
        .map_err(|e| format!("cannot start resolver: {e}"))?;
    match rx.recv_timeout(RESOLVE_TIMEOUT) {
        Ok(Ok(Some(a))) => Ok(a),
        Ok(Ok(None)) => Err(format!("{host} has no address")),
        Ok(Err(e)) => Err(format!("cannot resolve {host}: {e}")),
        Err(_) => Err(format!("resolving {host} timed out")),
    }
}

/// `base` scaled by a random factor in [0.5, 1.5), so that nodes started
/// together do not redial in lockstep.
fn jitter(base: Duration, rng: &mut u64) -> Duration {
    // xorshift64: plenty for spreading retries.
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let factor = 0.5 + (*rng % 1000) as f64 / 1000.0;
    base.mul_f64(factor)
}

fn sleep(d: Duration) {
    may::coroutine::sleep(d);
    may::coroutine::yield_now();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half() {
        let mut rng = 12345;
        for _ in 0..1000 {
            let d = jitter(Duration::from_millis(100), &mut rng);
            assert!(d >= Duration::from_millis(50) && d < Duration::from_millis(150));
        }
    }

    #[test]
    fn resolves_ip_literals_without_lookup() {
        assert_eq!(
            resolve("127.0.0.1:5").unwrap(),
            "127.0.0.1:5".parse().unwrap()
        );
        assert!(resolve("nonsense").is_err());
    }
}
