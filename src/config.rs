//! Configuration: the types, their defaults, loading and validation, and the
//! live handle the running node reads from.
//!
//! A node reads `config.toml` once at start (or uses the built-in defaults
//! when `./config.toml` does not exist), applies the command-line overrides,
//! and keeps the result in a [`LiveConfig`]. The node writes back into it the
//! port it actually bound, and the reload watcher swaps in a new `hosts` list
//! when the file changes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The live configuration, shared by every coroutine of a node.
///
/// `may`'s lock, not std's: a reader may be a coroutine, and a coroutine
/// waiting for a std lock would stall its whole worker thread.
pub type LiveConfig = Arc<may::sync::RwLock<Config>>;

/// Everything a node can be configured with. Every section and key has a
/// default, so an empty file is a valid config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where to listen and whom to dial.
    pub discovery: Discovery,
    /// How nodes replicate and watch each other.
    pub gossip: Gossip,
    /// Caps that keep memory bounded whatever clients send.
    pub limits: Limits,
    /// The coroutine runtime.
    pub runtime: Runtime,
}

/// `[runtime]`: the threads that run the coroutines.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Runtime {
    /// Worker threads that run coroutines; 0 picks one per core, less one
    /// core left for clients, peers on the same machine and the kernel's
    /// network work (at least one). A node that shares a small machine with
    /// its clients serves unpipelined requests faster with fewer workers,
    /// because each worker spends its idle moments switching in and out of
    /// `epoll_wait`.
    pub workers: usize,
}

impl Runtime {
    /// The worker count to start, `workers` or the automatic choice.
    pub fn effective_workers(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores.saturating_sub(1).max(1)
    }
}

/// `[discovery]`: the listening address and the seed peers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Discovery {
    /// Peers to dial, as `host:port`. The node skips its own address.
    pub hosts: Vec<String>,
    /// The address to listen on.
    pub bind_host: String,
    /// The first port to try; the node probes upwards when it is taken. After
    /// start-up the live config holds the port actually bound.
    pub bind_port: u16,
    /// How many ports above `bind_port` to try when binding, and above a
    /// peer's port when dialing it.
    pub port_probe_limit: u16,
    /// First delay before redialing an unreachable peer, in milliseconds.
    pub backoff_initial_ms: u64,
    /// Longest delay between redials of an unreachable peer, in milliseconds.
    pub backoff_max_ms: u64,
    /// Timeout of one dial attempt, in milliseconds.
    pub connect_timeout_ms: u64,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            hosts: Vec::new(),
            bind_host: "127.0.0.1".into(),
            bind_port: 19919,
            port_probe_limit: 10,
            backoff_initial_ms: 100,
            backoff_max_ms: 5000,
            connect_timeout_ms: 500,
        }
    }
}

/// `[gossip]`: replication, anti-entropy and failure detection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gossip {
    /// Nodes only link with nodes of the same cluster name.
    pub cluster: String,
    /// A link with nothing to send sends a heartbeat this often, in
    /// milliseconds.
    pub heartbeat_ms: u64,
    /// A link silent for this long is closed and redialed, in milliseconds.
    pub link_timeout_ms: u64,
    /// How often each link runs a round of anti-entropy, in milliseconds.
    pub anti_entropy_ms: u64,
    /// How long a delete's tombstone is kept before it is collected, in
    /// seconds. A node that was away for longer than this may bring a deleted
    /// key back.
    pub tombstone_grace_s: u64,
    /// Frames queued for one peer beyond which the link is dropped (and
    /// anti-entropy repairs the gap once it is redialed).
    pub peer_queue_limit: usize,
    /// Bytes queued for one peer beyond which the link is dropped, likewise.
    pub peer_queue_bytes: usize,
    /// Links a node keeps with members it learned of through gossip rather
    /// than from `hosts`. Configured hosts are always dialed.
    pub max_learned_links: usize,
}

impl Default for Gossip {
    fn default() -> Self {
        Gossip {
            cluster: "piccolo".into(),
            heartbeat_ms: 500,
            link_timeout_ms: 3000,
            anti_entropy_ms: 1000,
            tombstone_grace_s: 86_400,
            peer_queue_limit: 8192,
            peer_queue_bytes: 256 * 1024 * 1024,
            max_learned_links: 8,
        }
    }
}

/// Room in a peer frame beyond one key and one value: the batch before them
/// and the headers.
const FRAME_SLACK: usize = 2 * 1024 * 1024;

/// `[limits]`: caps on what any one client or peer may cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Client connections served at once; one more gets an error and is
    /// closed. Keep it well under 32k: each connection is a coroutine, and
    /// each coroutine stack costs two memory mappings.
    pub max_clients: usize,
    /// Longest text-protocol line, and longest RESP inline command, in bytes.
    pub max_line_bytes: usize,
    /// Largest RESP bulk string (key or value), in bytes.
    pub max_bulk_bytes: usize,
    /// Most arguments in one RESP request.
    pub max_args: usize,
    /// Reply bytes buffered for one client before the node stops reading
    /// from it and waits for it to take them.
    pub max_output_bytes: usize,
    /// Largest frame between peers, in bytes.
    pub max_frame_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 10_000,
            max_line_bytes: 64 * 1024,
            max_bulk_bytes: 16 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_output_bytes: 1024 * 1024,
            max_frame_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Config {
    /// The address to bind, as `host:port`.
    pub fn bind_addr(&self) -> String {
        format!("{}:{}", self.discovery.bind_host, self.discovery.bind_port)
    }

    /// Parses a config from TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|span| line_column(text, span.start)).unzip();
            ConfigError {
                file: origin.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        config.validate().map_err(|message| ConfigError {
            file: origin.to_path_buf(),
            line: None,
            column: None,
            message,
        })?;
        Ok(config)
    }

    /// Loads a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            message: e.to_string(),
        })?;
        Config::parse(&text, path)
    }

    /// Checks what TOML types cannot express.
    pub fn validate(&self) -> Result<(), String> {
        let d = &self.discovery;
        if d.bind_host.trim().is_empty() {
            return Err("discovery.bind_host must not be empty".into());
        }
        for host in &d.hosts {
            split_host_port(host).map_err(|e| format!("discovery.hosts: {e}"))?;
        }
        if d.backoff_initial_ms == 0 || d.backoff_max_ms < d.backoff_initial_ms {
            return Err(
                "discovery.backoff_initial_ms must be > 0 and <= discovery.backoff_max_ms".into(),
            );
        }
        if d.connect_timeout_ms == 0 {
            return Err("discovery.connect_timeout_ms must be > 0".into());
        }
        let g = &self.gossip;
        if g.heartbeat_ms == 0 || g.link_timeout_ms <= g.heartbeat_ms {
            return Err("gossip.heartbeat_ms must be > 0 and < gossip.link_timeout_ms".into());
        }
        if g.anti_entropy_ms == 0 {
            return Err("gossip.anti_entropy_ms must be > 0".into());
        }
        if g.peer_queue_limit == 0 {
            return Err("gossip.peer_queue_limit must be > 0".into());
        }
        if g.peer_queue_bytes < self.limits.max_frame_bytes {
            return Err("gossip.peer_queue_bytes must be at least limits.max_frame_bytes".into());
        }
        let l = &self.limits;
        for (name, value) in [
            ("limits.max_clients", l.max_clients),
            ("limits.max_line_bytes", l.max_line_bytes),
            ("limits.max_bulk_bytes", l.max_bulk_bytes),
            ("limits.max_args", l.max_args),
            ("limits.max_output_bytes", l.max_output_bytes),
        ] {
            if value == 0 {
                return Err(format!("{name} must be > 0"));
            }
        }
        if self.runtime.workers > 1024 {
            return Err("runtime.workers must be at most 1024".into());
        }
        // A frame carries a batch of updates or entries (cut at 1 MiB) and
        // then possibly one more, whose key and value may each be as large
        // as a bulk string: a write that cannot fit would drop the link on
        // every try, and never reach that peer.
        if l.max_frame_bytes
            < l.max_bulk_bytes
                .saturating_mul(2)
                .saturating_add(FRAME_SLACK)
        {
            return Err(
                "limits.max_frame_bytes must be at least 2 * limits.max_bulk_bytes + 2 MiB".into(),
            );
        }
        Ok(())
    }

    /// The effective config as TOML, as `--check-config` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a Config always serializes")
    }

    /// See [`Gossip::heartbeat_ms`].
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.gossip.heartbeat_ms)
    }

    /// See [`Gossip::link_timeout_ms`].
    pub fn link_timeout(&self) -> Duration {
        Duration::from_millis(self.gossip.link_timeout_ms)
    }
}

/// Splits `host:port` (or `[v6]:port`) and checks the port.
pub fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("'{s}' is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("'{s}' has no host"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("'{s}' has an invalid port"))?;
    if port == 0 {
        return Err(format!("'{s}' has port 0"));
    }
    Ok((host.to_string(), port))
}

/// A config that could not be loaded: which file, where, and what.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// 1-based line of the error, when known.
    pub line: Option<usize>,
    /// 1-based column of the error, when known.
    pub column: Option<usize>,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn design_sample_parses() {
        let c = parse(
            r#"[discovery]
hosts = ["127.0.0.1:19919", "127.0.0.1:19920", "127.0.0.1:19921"]
bind_host = "127.0.0.1"
bind_port = 19919
port_probe_limit = 10
"#,
        )
        .unwrap();
        assert_eq!(c.discovery.hosts.len(), 3);
        assert_eq!(c.bind_addr(), "127.0.0.1:19919");
    }

    #[test]
    fn unknown_key_is_an_error_with_position() {
        let e = parse("[discovery]\nbind_prot = 1\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(1)));
        assert!(e.message.contains("bind_prot"), "{e}");
        assert!(e.to_string().starts_with("test.toml:2:1: "), "{e}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let e = parse("[discovery]\nbind_port = \"x\"\n").unwrap_err();
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn bad_host_is_rejected() {
        let e = parse("[discovery]\nhosts = [\"nohost\"]\n").unwrap_err();
        assert!(e.message.contains("not host:port"), "{e}");
    }

    #[test]
    fn effective_config_round_trips() {
        let mut c = Config::default();
        c.discovery.hosts = vec!["127.0.0.1:1".into()];
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn a_frame_must_hold_the_largest_key_and_value() {
        let e = parse("[limits]\nmax_bulk_bytes = 40000000\n").unwrap_err();
        assert!(e.message.contains("max_frame_bytes"), "{e}");
        let fits = 2 * 1_000_000 + FRAME_SLACK;
        let ok = format!("[limits]\nmax_bulk_bytes = 1000000\nmax_frame_bytes = {fits}\n");
        assert_eq!(parse(&ok).unwrap().limits.max_frame_bytes, fits);
        let short = format!(
            "[limits]\nmax_bulk_bytes = 1000000\nmax_frame_bytes = {}\n",
            fits - 1
        );
        assert!(parse(&short).is_err());
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("[::1]:5").unwrap(), ("::1".to_string(), 5));
        assert!(split_host_port("a:0").is_err());
        assert!(split_host_port(":5").is_err());
    }
}
