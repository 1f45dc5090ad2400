//! The single node over real sockets: text protocol, limits, config, port
//! probing and signals.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::{Node, TempDir, config_toml, free_ports, node_with};

fn single_node(tag: &str) -> (TempDir, Node) {
    node_with(tag, "")
}

#[test]
fn every_text_command() {
    let (_dir, node) = single_node("commands");
    let mut c = node.client();
    assert_eq!(c.ask("PUT my-key some-value"), "OK");
    assert_eq!(c.ask("GET my-key"), "some-value");
    assert_eq!(c.ask("GET other-key"), "NONE");
    assert_eq!(c.ask("SET my-key v2"), "OK");
    assert_eq!(c.ask("get my-key"), "v2");
    assert_eq!(c.ask("CLEAR my-key"), "OK");
    assert_eq!(c.ask("GET my-key"), "NONE");
    assert_eq!(
        c.ask("CLEAR my-key"),
        "OK",
        "clearing an absent key is a no-op"
    );
    assert_eq!(c.ask("PUT k2 x"), "OK");
    assert_eq!(c.ask("DEL k2"), "OK");
    assert_eq!(c.ask("GET k2"), "NONE");
    assert_eq!(c.ask("PING"), "PONG");
    c.send(b"QUIT\n");
    assert!(c.closed(), "QUIT closes the connection");
}

#[test]
fn answers_are_byte_exact_and_follow_the_line_ending() {
    let (_dir, node) = single_node("bytes");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"PUT a b\nGET a\r\nGET zz\n").unwrap();
    let expected = b"OK\nb\r\nNONE\n";
    let mut got = vec![0u8; expected.len()];
    std::io::Read::read_exact(&mut s, &mut got).unwrap();
    assert_eq!(got, expected);
}

#[test]
fn values_keep_their_spaces() {
    let (_dir, node) = single_node("spaces");
    let mut c = node.client();
    assert_eq!(c.ask("PUT greeting hello  big   world "), "OK");
    assert_eq!(c.ask("GET greeting"), "hello  big   world ");
}

#[test]
fn unknown_and_malformed_commands_get_err_and_keep_the_connection() {
    let (_dir, node) = single_node("errors");
    let mut c = node.client();
    assert_eq!(c.ask("bogus command"), "ERR unknown command 'bogus'");
    assert_eq!(
        c.ask("GET"),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        c.ask("PUT onlykey"),
        "ERR wrong number of arguments for 'put' command"
    );
    assert_eq!(c.ask(""), "ERR empty command");
    assert_eq!(c.ask("   "), "ERR empty command");
    assert_eq!(c.ask("PING"), "PONG");
}

#[test]
fn over_long_line_is_refused_and_the_connection_keeps_working() {
    let (_dir, node) = node_with("longline", "[limits]\nmax_line_bytes = 1024\n");
    let mut c = node.client();
    let long = format!("PUT big {}", "x".repeat(100_000));
    assert_eq!(c.ask(&long), "ERR line too long");
    assert_eq!(c.ask("PUT small ok"), "OK");
    assert_eq!(c.ask("GET small"), "ok");
    assert_eq!(c.ask("GET big"), "NONE", "the long line changed nothing");
}

#[test]
fn command_right_after_an_over_long_line_in_the_same_write_is_served() {
    let (_dir, node) = node_with("longline2", "[limits]\nmax_line_bytes = 1024\n");
    let mut c = node.client();
    let both = format!("PUT big {}\nPUT small ok\nGET small\n", "x".repeat(5000));
    c.send(both.as_bytes());
    assert_eq!(c.line(), "ERR line too long");
    assert_eq!(c.line(), "OK");
    assert_eq!(c.line(), "ok");
}

#[test]
fn random_bytes_do_not_disturb_other_clients() {
    let (_dir, node) = single_node("garbage");
    let mut good = node.client();
    assert_eq!(good.ask("PUT keep me"), "OK");
    // A deterministic stream of junk, with newlines, NULs and invalid UTF-8.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let junk: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    for first in [b'x', b'*', 0u8] {
        let mut bad = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
        let _ = bad.write_all(&[first]);
        let _ = bad.write_all(&junk);
        drop(bad);
    }
    assert_eq!(good.ask("GET keep"), "me");
    let mut fresh = node.client();
    assert_eq!(fresh.ask("PING"), "PONG");
}

#[test]
fn non_utf8_keys_and_values_round_trip() {
    let (_dir, node) = single_node("binary");
    let mut c = node.client();
    c.send(b"PUT \xff\xfe \x80value\n");
    assert_eq!(c.line(), "OK");
    c.send(b"GET \xff\xfe\n");
    let mut raw = Vec::new();
    std::io::BufRead::read_until(&mut std::io::BufReader::new(&c.stream), b'\n', &mut raw).unwrap();
    assert_eq!(raw, b"\x80value\n");
}

#[test]
fn second_node_from_the_same_config_lands_on_the_next_port() {
    let dir = TempDir::new("probe");
    let port = free_ports(3);
    dir.write("config.toml", &config_toml(port, &[], ""));
    let first = Node::start(dir.path(), &[]);
    let second = Node::start(dir.path(), &[]);
    assert_eq!(first.port, port);
    assert_eq!(second.port, port + 1);
    second.wait_log(
        &format!("port {port} on 127.0.0.1 is in use"),
        Duration::from_secs(1),
    );
    // Both serve on their own port.
    assert_eq!(first.client().ask("PING"), "PONG");
    assert_eq!(second.client().ask("PING"), "PONG");
}

#[test]
fn no_free_port_is_a_clear_error() {
    let dir = TempDir::new("noport");
    let port = free_ports(2);
    let _hold: Vec<_> = (port..port + 2)
        .map(|p| std::net::TcpListener::bind(("127.0.0.1", p)).unwrap())
        .collect();
    let toml = config_toml(port, &[], "").replace("port_probe_limit = 10", "port_probe_limit = 1");
    let cfg = dir.write("config.toml", &toml);
    let out = Command::new(common::bin())
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no free port"), "{err}");
}

#[test]
fn broken_config_exits_2_with_file_line_and_column() {
    let dir = TempDir::new("broken");
    let cfg = dir.write("bad.toml", "[discovery]\nbind_port = 1\nbind_prot = 2\n");
    let out = Command::new(common::bin())
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3:1"), "{err}");
    assert!(err.contains("bind_prot"), "{err}");
    assert_eq!(err.lines().count(), 1, "one message: {err}");
}

#[test]
fn missing_config_file_exits_2() {
    let out = Command::new(common::bin())
        .args(["--config", "/nonexistent/piccolo.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/piccolo.toml"), "{err}");
}

#[test]
fn check_config_prints_the_effective_config() {
    let dir = TempDir::new("check");
    let cfg = dir.write("c.toml", "[discovery]\nbind_port = 4000\n");
    let out = Command::new(common::bin())
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--check-config",
            "-p",
            "4100",
            "--peer",
            "127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bind_port = 4100"), "{text}");
    assert!(text.contains("127.0.0.1:9"), "{text}");
    assert!(text.contains("[limits]"), "{text}");
}

#[test]
fn defaults_apply_when_no_config_file_exists() {
    let dir = TempDir::new("defaults");
    let out = Command::new(common::bin())
        .arg("--check-config")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("bind_port = 19919"));
}

#[test]
fn sigterm_and_sigint_exit_zero() {
    for signal in ["TERM", "INT"] {
        let (_dir, mut node) = single_node("signal");
        assert_eq!(node.client().ask("PING"), "PONG");
        let status = node.signal_and_wait(signal);
        assert_eq!(status.code(), Some(0), "after SIG{signal}");
        // The log is read from the node's stderr by a thread that may
        // still be catching up with the last lines after the exit.
        node.wait_log("stopped", Duration::from_secs(5));
    }
}

#[test]
fn client_cap_refuses_the_extra_connection() {
    let (_dir, node) = node_with("cap", "[limits]\nmax_clients = 2\n");
    let mut a = node.client();
    let mut b = node.client();
    assert_eq!(a.ask("PING"), "PONG");
    assert_eq!(b.ask("PING"), "PONG");
    let mut c = node.client();
    c.send(b"PING\n");
    assert_eq!(c.line(), "ERR max number of clients reached");
    assert!(c.closed());
    drop(a);
    // The slot is released once the node sees the close.
    assert!(common::eventually(Duration::from_secs(5), || {
        let mut d = node.client();
        d.send(b"PING\n");
        d.line() == "PONG"
    }));
    assert_eq!(b.ask("PING"), "PONG");
}

#[test]
fn logs_name_the_config_and_the_bound_address() {
    let (_dir, node) = single_node("logs");
    let line = node.wait_log("config ", Duration::from_secs(1));
    assert!(line.contains("config.toml"), "{line}");
    let listening = node.wait_log("listening on", Duration::from_secs(1));
    assert!(
        listening.contains(&format!("[127.0.0.1:{}]", node.port)),
        "{listening}"
    );
}
