//! Cluster benchmark: convergence latency, catch-up and idle cost of real
//! `piccolo` processes on loopback. Prints figures; asserts nothing about
//! speed.
//!
//! ```sh
//! cargo bench --bench cluster                  # clusters of 3, 10 and 30
//! SIZES=10 WRITES=500 cargo bench --bench cluster
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Node, TempDir, config_toml, free_ports};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A raw text-protocol connection that can pipeline.
struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Conn {
    fn new(port: u16) -> Conn {
        let w = TcpStream::connect(("127.0.0.1", port)).unwrap();
        w.set_nodelay(true).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Conn { w, r }
    }
    fn send(&mut self, line: &str) {
        self.w.write_all(line.as_bytes()).unwrap();
        self.w.write_all(b"\n").unwrap();
    }
    fn line(&mut self) -> String {
        let mut s = String::new();
        self.r.read_line(&mut s).unwrap();
        s.trim_end().to_string()
    }
    fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }
    fn info_field(&mut self, field: &str) -> String {
        self.send("INFO keyspace");
        let mut found = String::new();
        loop {
            let l = self.line();
            if l == "END" {
                return found;
            }
            if let Some(v) = l.strip_prefix(field) {
                found = v.to_string();
            }
        }
    }
}

fn start_cluster(tag: &str, n: u16) -> (TempDir, Vec<Node>) {
    let dir = TempDir::new(tag);
    let base = free_ports(n);
    let hosts: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    // Every node binds from `base` up, so the probe window must cover them all.
    let toml = config_toml(base, &hosts, "").replace(
        "port_probe_limit = 10",
        &format!("port_probe_limit = {}", n + 10),
    );
    dir.write("config.toml", &toml);
    let nodes: Vec<Node> = (0..n).map(|_| Node::start(dir.path(), &[])).collect();
    // Wait for the full mesh: every node linked with every other.
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &nodes {
        let mut c = Conn::new(node.port);
        loop {
            c.send("PEERS");
            let mut links = 0;
            loop {
                let l = c.line();
                if l == "END" {
                    break;
                }
                links += l.contains(" link-") as usize;
            }
            if links + 1 >= n as usize {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "cluster of {n} never fully linked"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    (dir, nodes)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Time from a write acknowledged on one node to the value readable on
/// every node. All other nodes are polled with pipelined GETs, so one sweep
/// costs about one round trip.
fn convergence(nodes: &[Node], writes: usize) -> Vec<Duration> {
    let mut conns: Vec<Conn> = nodes.iter().map(|n| Conn::new(n.port)).collect();
    let mut samples = Vec::with_capacity(writes);
    for w in 0..writes {
        let writer = w % nodes.len();
        let key = format!("conv-{w}");
        let value = format!("v{w}");
        assert_eq!(conns[writer].ask(&format!("PUT {key} {value}")), "OK");
        let acked = Instant::now();
        let mut pending: Vec<usize> = (0..nodes.len()).filter(|&i| i != writer).collect();
        let deadline = acked + Duration::from_secs(10);
        while !pending.is_empty() {
            for &i in &pending {
                conns[i].send(&format!("GET {key}"));
            }
            pending.retain(|&i| conns[i].line() != value);
            assert!(Instant::now() < deadline, "write {w} never converged");
        }
        samples.push(acked.elapsed());
    }
    samples.sort();
    samples
}

/// Kills one node, writes `keys` keys on another, restarts the killed node
/// and times until its digest equals the writer's.
fn catch_up(dir: &TempDir, nodes: &mut [Node], keys: usize) -> (Duration, Duration) {
    let last = nodes.len() - 1;
    let port = nodes[last].port;
    nodes[last].kill9();
    let mut c = Conn::new(nodes[0].port);
    let batch = 1000;
    let write_start = Instant::now();
    for start in (0..keys).step_by(batch) {
        let mut chunk = String::new();
        for k in start..(start + batch).min(keys) {
            chunk.push_str(&format!("PUT catchup-{k} value-{k}\n"));
        }
        c.w.write_all(chunk.as_bytes()).unwrap();
        for _ in start..(start + batch).min(keys) {
            assert_eq!(c.line(), "OK");
        }
    }
    let write_time = write_start.elapsed();
    // Let the surviving nodes agree first, so the figure is the restarted
    // node's alone.
    let want = loop {
        let a = c.info_field("digest:");
        let b = Conn::new(nodes[1].port).info_field("digest:");
        if a == b {
            break a;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let port_arg = port.to_string();
    let restarted = Instant::now();
    nodes[last] = Node::start(dir.path(), &["-p", &port_arg]);
    let mut r = Conn::new(nodes[last].port);
    let deadline = restarted + Duration::from_secs(120);
    while r.info_field("digest:") != want {
        assert!(Instant::now() < deadline, "restarted node never caught up");
        std::thread::sleep(Duration::from_millis(5));
    }
    (restarted.elapsed(), write_time)
}

/// RSS in KiB and CPU seconds used, from /proc.
fn proc_usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (rss, ticks / 100.0)
}

fn idle_cost(nodes: &[Node], window: Duration) -> (u64, u64, f64) {
    let before: Vec<(u64, f64)> = nodes.iter().map(|n| proc_usage(n.pid())).collect();
    std::thread::sleep(window);
    let after: Vec<(u64, f64)> = nodes.iter().map(|n| proc_usage(n.pid())).collect();
    let mut rss: Vec<u64> = after.iter().map(|a| a.0).collect();
    rss.sort();
    let mut cpu: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a.1 - b.1) / window.as_secs_f64() * 100.0)
        .collect();
    cpu.sort_by(f64::total_cmp);
    (rss[rss.len() / 2], rss[rss.len() - 1], cpu[cpu.len() / 2])
}

fn main() {
    // `cargo bench` passes --bench; accept and ignore harness arguments.
    let sizes: Vec<u16> = std::env::var("SIZES")
        .unwrap_or_else(|_| "3,10,30".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let writes = env_or("WRITES", 300usize);
    let catchup_keys = env_or("CATCHUP_KEYS", 100_000usize);
    let idle_window = Duration::from_secs(env_or("IDLE_SECS", 10u64));
    println!(
        "piccolo cluster benchmark: {} cores, {writes} writes per size, catch-up of {catchup_keys} keys",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:>5}  {:>12} {:>12} {:>12}  {:>12}  {:>11} {:>11} {:>10}",
        "nodes", "conv p50", "conv p99", "conv max", "catch-up", "idle RSS", "RSS max", "idle CPU"
    );
    for &n in &sizes {
        let (dir, mut nodes) = start_cluster(&format!("bench{n}"), n);
        let samples = convergence(&nodes, writes);
        std::thread::sleep(Duration::from_secs(2));
        let (rss_med, rss_max, cpu_med) = idle_cost(&nodes, idle_window);
        let (catch, _) = catch_up(&dir, &mut nodes, catchup_keys);
        println!(
            "{:>5}  {:>12} {:>12} {:>12}  {:>12}  {:>8} KiB {:>7} KiB {:>9.2}%",
            n,
            ms(percentile(&samples, 0.5)),
            ms(percentile(&samples, 0.99)),
            ms(*samples.last().unwrap()),
            ms(catch),
            rss_med,
            rss_max,
            cpu_med
        );
    }
}
