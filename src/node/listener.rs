//! Binding with port probing, and the accept loop.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use log::{debug, warn};

use super::{Node, client};
use crate::config::Config;

/// Binds `bind_host:bind_port`, or the first free port of the next
/// `port_probe_limit` ones, logging each shift at warn.
///
/// Binds with std's listener on purpose: may's `bind` sets SO_REUSEPORT, so a
/// second bind to a busy port would succeed and two nodes would silently
/// share it. The bound socket is then handed to may.
pub fn bind_with_probing(config: &Config) -> Result<(may::net::TcpListener, SocketAddr), String> {
    let d = &config.discovery;
    let last = d.bind_port.saturating_add(d.port_probe_limit);
    let mut last_error = None;
    for port in d.bind_port..=last {
        match std::net::TcpListener::bind((d.bind_host.as_str(), port)) {
            Ok(std) => {
                let addr = std.local_addr().map_err(|e| e.to_string())?;
                std.set_nonblocking(true).map_err(|e| e.to_string())?;
                // SAFETY: the fd comes straight from a listener we own and
                // release with `into_raw_fd`, so may becomes its only owner.
                let listener = unsafe { may::net::TcpListener::from_raw_fd(std.into_raw_fd()) };
                return Ok((listener, addr));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if port < last {
                    warn!(
                        "port {port} on {} is in use; trying {}",
                        d.bind_host,
                        port + 1
                    );
                }
                last_error = Some(e);
            }
            Err(e) => return Err(format!("cannot bind {}:{port}: {e}", d.bind_host)),
        }
    }
    Err(format!(
        "no free port on {} in {}..={last} (tried {} ports): {}",
        d.bind_host,
        d.bind_port,
        last - d.bind_port + 1,
        last_error.map_or_else(|| "invalid port range".into(), |e| e.to_string())
    ))
}

/// Accepts connections until the node stops; each gets its own coroutine.
pub fn accept_loop(node: Arc<Node>, listener: may::net::TcpListener) {
    while !node.stopping() {
        match listener.accept() {
            Ok((stream, from)) => {
                if node.stopping() {
                    break;
                }
                debug!("connection from {from}");
                node.counters.connections.fetch_add(1, Ordering::Relaxed);
                super::spawn(&node, "connection", move |node| {
                    client::serve_connection(node, stream, from)
                });
            }
            Err(e) => {
                // Usually EMFILE: back off briefly instead of spinning.
                warn!("accept failed: {e}");
                may::coroutine::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}
