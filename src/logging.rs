//! Log setup: `env_logger` on stderr, `info` unless `RUST_LOG` says
//! otherwise, and every line tagged with the node's address so that the
//! logs of a local cluster can be read side by side.

use std::io::Write;
use std::sync::RwLock;

/// The name shown on every log line; the configured address until the node
/// has bound, then the bound one.
static NODE_NAME: RwLock<String> = RwLock::new(String::new());

/// Sets the name shown on every log line.
pub fn set_node_name(name: &str) {
    *NODE_NAME.write().unwrap_or_else(|e| e.into_inner()) = name.to_string();
}

/// Installs the logger. Call once, before the node starts.
pub fn init(initial_name: &str) {
    set_node_name(initial_name);
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,may=warn"))
        .format(|buf, record| {
            let name = NODE_NAME.read().unwrap_or_else(|e| e.into_inner()).clone();
            writeln!(
                buf,
                "{} {:<5} [{}] {}",
                buf.timestamp_millis(),
                record.level(),
                name,
                record.args()
            )
        })
        .init();
}
