//! The `piccolo` binary: parse the command line, load the config, start
//! logging, run the node, and report any error once, here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use piccolo::config::{Config, split_host_port};

/// A self-organising, leaderless, replicated key-value node.
///
/// Start a few with the same config.toml and they find each other and keep
/// one key-value store in agreement. Talk to any of them with telnet, nc or
/// redis-cli on the same port.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Config file; default ./config.toml, and built-in defaults when that
    /// file does not exist.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Overrides discovery.bind_host.
    #[arg(long, value_name = "HOST")]
    bind_host: Option<String>,
    /// Overrides discovery.bind_port.
    #[arg(short = 'p', long, value_name = "PORT")]
    bind_port: Option<u16>,
    /// Adds a peer to discovery.hosts (repeatable).
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<String>,
    /// Load and validate the config, print the effective config as TOML, and
    /// exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, path) = match load(&cli) {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("piccolo: {message}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    piccolo::logging::init(&config.bind_addr());
    match piccolo::node::run(config, path, cli.peers) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            log::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// The effective config, and the file it came from (if any).
fn load(cli: &Cli) -> Result<(Config, Option<PathBuf>), String> {
    let default = Path::new("config.toml");
    let (mut config, path) = match &cli.config {
        Some(path) => (
            Config::load(path).map_err(|e| e.to_string())?,
            Some(path.clone()),
        ),
        None if default.exists() => (
            Config::load(default).map_err(|e| e.to_string())?,
            Some(default.to_path_buf()),
        ),
        None => (Config::default(), None),
    };
    if let Some(host) = &cli.bind_host {
        config.discovery.bind_host = host.clone();
    }
    if let Some(port) = cli.bind_port {
        config.discovery.bind_port = port;
    }
    for peer in &cli.peers {
        split_host_port(peer).map_err(|e| format!("--peer: {e}"))?;
        if !config.discovery.hosts.contains(peer) {
            config.discovery.hosts.push(peer.clone());
        }
    }
    config.validate().map_err(|e| {
        let origin = path
            .as_deref()
            .map_or("command line".into(), |p| p.display().to_string());
        format!("{origin}: {e}")
    })?;
    Ok((config, path))
}
