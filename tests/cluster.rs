//! Clusters of real processes on loopback: discovery, replication,
//! catch-up, hot reload, and misbehaving peers.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Node, TempDir, config_toml, eventually, free_ports};

const CONVERGE: Duration = Duration::from_secs(10);

/// Starts `n` nodes from one config listing all of them; each probes its
/// own port, as `run-cluster.sh` does.
fn cluster(tag: &str, n: u16) -> (TempDir, Vec<Node>) {
    let dir = TempDir::new(tag);
    let base = free_ports(n);
    let hosts: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    dir.write("config.toml", &config_toml(base, &hosts, ""));
    let nodes: Vec<Node> = (0..n).map(|_| Node::start(dir.path(), &[])).collect();
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(node.port, base + i as u16);
    }
    (dir, nodes)
}

/// Waits until `node` answers `GET key` with `want`.
fn converges(node: &Node, key: &str, want: &str) -> bool {
    let mut c = node.client();
    eventually(CONVERGE, || c.ask(&format!("GET {key}")) == want)
}

#[test]
fn three_nodes_share_writes_and_deletes() {
    let (_dir, nodes) = cluster("three", 3);
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(node.client().ask(&format!("PUT from-{i} value {i}")), "OK");
    }
    for node in &nodes {
        for i in 0..nodes.len() {
            assert!(
                converges(node, &format!("from-{i}"), &format!("value {i}")),
                "node {} never saw from-{i}",
                node.port
            );
        }
    }
    assert_eq!(nodes[1].client().ask("CLEAR from-0"), "OK");
    for node in &nodes {
        assert!(
            converges(node, "from-0", "NONE"),
            "delete not seen on {}",
            node.port
        );
    }
}

#[test]
fn chain_converges_through_the_middle_node() {
    let dir = TempDir::new("chain");
    let base = free_ports(3);
    let (a, b, c) = (base, base + 1, base + 2);
    dir.write("a.toml", &config_toml(a, &[format!("127.0.0.1:{b}")], ""));
    dir.write("b.toml", &config_toml(b, &[format!("127.0.0.1:{c}")], ""));
    dir.write("c.toml", &config_toml(c, &[], ""));
    let node_c = Node::start(dir.path(), &["--config", "c.toml"]);
    let node_b = Node::start(dir.path(), &["--config", "b.toml"]);
    let node_a = Node::start(dir.path(), &["--config", "a.toml"]);
    assert_eq!(node_a.client().ask("PUT from-a 1"), "OK");
    assert!(converges(&node_c, "from-a", "1"));
    assert_eq!(node_c.client().ask("PUT from-c 3"), "OK");
    assert!(converges(&node_a, "from-c", "3"));
    assert!(converges(&node_b, "from-c", "3"));
    // A learns of C through B and links with it directly.
    let mut client = node_a.client();
    assert!(
        eventually(CONVERGE, || {
            client.send(b"PEERS\n");
            client
                .until_end()
                .iter()
                .any(|l| l.contains(&format!("127.0.0.1:{c}")) && l.contains("link-"))
        }),
        "A never linked with C"
    );
}

#[test]
fn a_killed_node_catches_up_after_restart() {
    let (dir, mut nodes) = cluster("catchup", 3);
    let mut c0 = nodes[0].client();
    for i in 0..50 {
        assert_eq!(c0.ask(&format!("PUT before-{i} {i}")), "OK");
    }
    assert!(converges(&nodes[2], "before-49", "49"));
    let port = nodes[2].port;
    nodes[2].kill9();
    for i in 0..500 {
        assert_eq!(c0.ask(&format!("PUT during-{i} {i}")), "OK");
    }
    for i in 0..10 {
        assert_eq!(c0.ask(&format!("CLEAR before-{i}")), "OK");
    }
    let mut c1 = nodes[1].client();
    assert_eq!(c1.ask("PUT from-1 x"), "OK");
    let port_arg = port.to_string();
    nodes[2] = Node::start(dir.path(), &["-p", &port_arg]);
    assert_eq!(nodes[2].port, port);
    assert!(converges(&nodes[2], "during-499", "499"));
    assert!(converges(&nodes[2], "from-1", "x"));
    let mut c2 = nodes[2].client();
    for i in 0..500 {
        assert_eq!(c2.ask(&format!("GET during-{i}")), i.to_string());
    }
    for i in 0..10 {
        assert_eq!(
            c2.ask(&format!("GET before-{i}")),
            "NONE",
            "deletes stay deleted"
        );
    }
    for i in 10..50 {
        assert_eq!(c2.ask(&format!("GET before-{i}")), i.to_string());
    }
}

#[test]
fn adding_a_peer_to_the_config_file_links_it_without_restart() {
    let dir = TempDir::new("reload");
    let base = free_ports(2);
    let lonely = dir.write("lonely.toml", &config_toml(base, &[], ""));
    dir.write("other.toml", &config_toml(base + 1, &[], ""));
    let node = Node::start(dir.path(), &["--config", "lonely.toml"]);
    let other = Node::start(dir.path(), &["--config", "other.toml"]);
    assert_eq!(other.client().ask("PUT only-on-other 42"), "OK");
    // An invalid edit is logged and changes nothing.
    std::fs::write(&lonely, "[discovery]\nhosts = [\"oops\"\n").unwrap();
    node.wait_log("config reload failed", Duration::from_secs(5));
    assert_eq!(node.client().ask("PING"), "PONG");
    // A valid edit adds the peer.
    std::fs::write(
        &lonely,
        config_toml(base, &[format!("127.0.0.1:{}", base + 1)], ""),
    )
    .unwrap();
    node.wait_log("hosts added", Duration::from_secs(5));
    assert!(converges(&node, "only-on-other", "42"));
    // Removing it again stops its discovery loop and closes the link.
    std::fs::write(&lonely, config_toml(base, &[], "")).unwrap();
    node.wait_log("stopped discovery of", Duration::from_secs(5));
    node.wait_log("link down", Duration::from_secs(5));
}

#[test]
fn nodes_of_different_clusters_refuse_to_link() {
    let dir = TempDir::new("clusters");
    let base = free_ports(2);
    let b_addr = format!("127.0.0.1:{}", base + 1);
    dir.write(
        "a.toml",
        &config_toml(base, &[b_addr], "[gossip]\ncluster = \"red\"\n"),
    );
    dir.write(
        "b.toml",
        &config_toml(base + 1, &[], "[gossip]\ncluster = \"blue\"\n"),
    );
    let b = Node::start(dir.path(), &["--config", "b.toml"]);
    let a = Node::start(dir.path(), &["--config", "a.toml"]);
    a.wait_log(
        "belongs to cluster 'blue', this node to 'red'",
        Duration::from_secs(5),
    );
    b.wait_log(
        "belongs to cluster 'red', this node to 'blue'",
        Duration::from_secs(5),
    );
    assert_eq!(a.client().ask("PUT only-red 1"), "OK");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.client().ask("GET only-red"), "NONE");
    assert_eq!(a.count_log("link up"), 0);
}

/// Opens a connection that completes the peer handshake, sends one
/// heartbeat, and then never reads nor writes: a stalled or half-open peer.
fn stalled_peer(port: u16) -> TcpStream {
    use piccolo::replication::wire::{Message, encode_frame};
    use piccolo::replication::{Hello, PROTOCOL_VERSION};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        node: 0x5ee_0000_0001,
        cluster: "piccolo".into(),
        addr: "127.0.0.1:1".into(),
    };
    s.write_all(&hello.encode()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let theirs = Hello::read_from(&mut s).expect("node answers the handshake");
    assert_eq!(theirs.version, PROTOCOL_VERSION);
    let mut ping = Vec::new();
    encode_frame(&Message::Ping, &mut ping);
    s.write_all(&ping).unwrap();
    s
}

#[test]
fn a_stalled_peer_does_not_block_writes_or_replication() {
    let dir = TempDir::new("stalled");
    let base = free_ports(2);
    let extra = "[gossip]\npeer_queue_limit = 64\nheartbeat_ms = 200\nlink_timeout_ms = 1000\n";
    let hosts = [
        format!("127.0.0.1:{base}"),
        format!("127.0.0.1:{}", base + 1),
    ];
    dir.write("config.toml", &config_toml(base, &hosts, extra));
    let a = Node::start(dir.path(), &[]);
    let b = Node::start(dir.path(), &[]);
    let _stalled = stalled_peer(a.port);
    a.wait_log("link up: 000005ee00000001", Duration::from_secs(5));
    let mut ca = a.client();
    let value = "v".repeat(4000);
    let started = std::time::Instant::now();
    for i in 0..2000 {
        assert_eq!(ca.ask(&format!("PUT k{i} {value}")), "OK");
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "writes stalled behind the stuck peer"
    );
    assert!(converges(&b, "k1999", &value));
    // The stuck link is dropped, by the queue limit or the silence timeout.
    a.wait_log("link down: 000005ee00000001", Duration::from_secs(10));
}

#[test]
fn a_stranger_speaking_garbage_does_not_disturb_the_cluster() {
    let (_dir, nodes) = cluster("stranger", 2);
    // Garbage after the peer magic, a wrong magic, and random bytes.
    for payload in [
        b"\0PICCOLO\xff\xff\xff\xff\xff\xff\xff\xff garbage".to_vec(),
        b"\0NOTPICC and more".to_vec(),
        (0..10_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect(),
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", nodes[0].port)).unwrap();
        let _ = s.write_all(&payload);
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    assert_eq!(nodes[0].client().ask("PUT after-garbage ok"), "OK");
    assert!(converges(&nodes[1], "after-garbage", "ok"));
}

#[test]
fn peers_lists_members_and_links_ending_in_end() {
    let (_dir, nodes) = cluster("peers", 3);
    let mut c = nodes[0].client();
    let mut lines = Vec::new();
    assert!(
        eventually(CONVERGE, || {
            c.send(b"PEERS\n");
            lines = c.until_end();
            lines.iter().filter(|l| l.contains(" alive link-")).count() == 2
        }),
        "{lines:?}"
    );
    assert!(lines[0].contains(" self "), "{lines:?}");
    for n in &nodes[1..] {
        assert!(lines.iter().any(|l| l.contains(&n.addr())), "{lines:?}");
    }
}

#[test]
fn a_node_never_links_to_itself() {
    let dir = TempDir::new("self");
    let port = free_ports(1);
    // Its own address twice, once as "localhost".
    let hosts = [format!("127.0.0.1:{port}"), format!("localhost:{port}")];
    dir.write("config.toml", &config_toml(port, &hosts, ""));
    let node = Node::start(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        node.count_log("link up"),
        0,
        "{:?}",
        node.log.lock().unwrap()
    );
    assert_eq!(node.client().ask("PING"), "PONG");
}
