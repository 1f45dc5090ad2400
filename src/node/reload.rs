//! Watches the config file and applies edits to `hosts` without a restart.
//!
//! The file's modification time and length are polled every second. On a
//! change the file is loaded and validated in full; an invalid edit is
//! logged and ignored, so the node keeps the config it has. A valid edit
//! replaces `discovery.hosts` in the live config (the hosts given with
//! `--peer` are kept), and discovery loops are started for new hosts and
//! stopped for removed ones. Other keys are read at start only; a change to
//! them is logged as needing a restart.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use log::{error, info, warn};

use super::{Node, discovery};
use crate::config::Config;

/// How often the file is checked.
const POLL: Duration = Duration::from_secs(1);

/// What identifies a version of the file without reading it.
fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The watcher coroutine; returns at once when the node runs on defaults.
pub fn watch(node: Arc<Node>) {
    let Some(path) = node.config_path.clone() else {
        return;
    };
    let mut last = stamp(&path);
    while !node.stopping() {
        may::coroutine::sleep(POLL);
        may::coroutine::yield_now();
        let now = stamp(&path);
        if now == last {
            continue;
        }
        last = now;
        // A blocking read on a worker, but of a small local file, once per
        // change: cheaper than handing it to a thread.
        match Config::load(&path) {
            Err(e) => error!("config reload failed, keeping the current config: {e}"),
            Ok(new) => apply(&node, new),
        }
    }
}

/// Applies a freshly loaded config to the running node.
pub fn apply(node: &Arc<Node>, new: Config) {
    let (added, removed, restart_needed) = {
        let mut live = node.config.write().unwrap();
        let mut hosts = new.discovery.hosts.clone();
        for extra in &node.cli_peers {
            if !hosts.contains(extra) {
                hosts.push(extra.clone());
            }
        }
        let added: Vec<String> = hosts
            .iter()
            .filter(|h| !live.discovery.hosts.contains(h))
            .cloned()
            .collect();
        let removed: Vec<String> = live
            .discovery
            .hosts
            .iter()
            .filter(|h| !hosts.contains(h))
            .cloned()
            .collect();
        // Only hosts apply live. Compare the rest with the config the node
        // started from, leaving out what the command line may override.
        let restart_needed = comparable(&new) != comparable(&node.initial_config);
        live.discovery.hosts = hosts;
        (added, removed, restart_needed)
    };
    if added.is_empty() && removed.is_empty() {
        info!("config reloaded: hosts unchanged");
    } else {
        info!(
            "config reloaded: hosts added [{}], removed [{}]",
            added.join(", "),
            removed.join(", ")
        );
    }
    if restart_needed {
        warn!(
            "config reloaded: only discovery.hosts applies live; other changes take effect on restart"
        );
    }
    discovery::sync_with_config(node);
}

/// A config without the keys that reload applies or the command line
/// overrides, for spotting edits that need a restart.
fn comparable(config: &Config) -> Config {
    let mut c = config.clone();
    c.discovery.hosts.clear();
    c.discovery.bind_host.clear();
    c.discovery.bind_port = 0;
    c
}
