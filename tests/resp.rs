//! RESP2 over real sockets: every command through the `redis` crate, binary
//! safety, large values, pipelining, byte-exact replies and protocol errors
//! on raw sockets, and the text protocol and RESP seeing each other's writes.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Node, TempDir, config_toml, eventually, free_ports, node_with};
use redis::{Connection, RedisError, Value};

fn node(tag: &str) -> (TempDir, Node) {
    node_with(tag, "")
}

fn connect(node: &Node) -> Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", node.port)).unwrap();
    let con = client.get_connection().expect("redis connection");
    con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    con
}

/// Runs one command and returns the raw reply; server errors are an `Err`.
fn run(con: &mut Connection, args: &[&[u8]]) -> Result<Value, RedisError> {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<Value>(con)
}

/// Runs one command that must succeed.
fn ok(con: &mut Connection, args: &[&str]) -> Value {
    let raw: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    run(con, &raw).unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

/// Runs one command that must fail and returns the error as the server
/// wrote it: `CODE detail`.
fn err(con: &mut Connection, args: &[&str]) -> String {
    let raw: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    match run(con, &raw) {
        Ok(v) => panic!("{args:?} should fail, got {v:?}"),
        Err(e) => format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or("")),
    }
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn status(s: &str) -> Value {
    Value::SimpleString(s.to_string())
}

/// The `OK` status; the crate decodes `+OK` as `Okay`.
fn is_ok(v: &Value) -> bool {
    matches!(v, Value::Okay) || *v == status("OK")
}

fn info(con: &mut Connection, section: Option<&str>) -> String {
    let v = match section {
        Some(s) => ok(con, &["INFO", s]),
        None => ok(con, &["INFO"]),
    };
    match v {
        Value::BulkString(b) => String::from_utf8(b).unwrap(),
        other => panic!("INFO answered {other:?}"),
    }
}

/// The value of `field:` in an INFO report.
fn info_field(report: &str, field: &str) -> Option<String> {
    report
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(str::to_string)
}

/// A raw TCP connection to the node with a read timeout.
fn raw(node: &Node) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads exactly `expected.len()` bytes and compares them.
fn expect_bytes(s: &mut TcpStream, expected: &[u8]) {
    let mut got = vec![0u8; expected.len()];
    s.read_exact(&mut got).unwrap_or_else(|e| {
        panic!(
            "reading {:?}: {e}",
            String::from_utf8_lossy(expected).escape_debug().to_string()
        )
    });
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
}

/// True when the peer closed the connection (EOF or reset) within 5 s.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(n) => panic!("expected EOF, got {:?}", String::from_utf8_lossy(&b[..n])),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

// ---------------------------------------------------------------- commands

#[test]
fn ping_echo_and_connection_commands() {
    let (_dir, node) = node("conn");
    let mut c = connect(&node);
    assert_eq!(ok(&mut c, &["PING"]), status("PONG"));
    assert_eq!(ok(&mut c, &["PING", "hello there"]), bulk("hello there"));
    assert_eq!(ok(&mut c, &["ping"]), status("PONG"), "case-insensitive");
    assert_eq!(ok(&mut c, &["ECHO", "a b c"]), bulk("a b c"));
    assert_eq!(ok(&mut c, &["ECHO", ""]), bulk(""));

    assert!(is_ok(&ok(&mut c, &["SELECT", "0"])));
    assert_eq!(
        err(&mut c, &["SELECT", "1"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        err(&mut c, &["SELECT", "x"]),
        "ERR value is not an integer or out of range"
    );

    for hello in [&["HELLO"][..], &["HELLO", "2"][..]] {
        let Value::Array(items) = ok(&mut c, hello) else {
            panic!("HELLO is an array")
        };
        assert_eq!(items.len() % 2, 0, "HELLO answers pairs");
        let pairs: Vec<(Value, Value)> = items
            .chunks(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect();
        assert!(pairs.contains(&(bulk("proto"), bulk("2"))), "{pairs:?}");
        assert!(
            pairs.contains(&(bulk("server"), bulk("piccolo"))),
            "{pairs:?}"
        );
    }
    let e = err(&mut c, &["HELLO", "3"]);
    assert!(e.starts_with("NOPROTO"), "{e}");

    assert_eq!(ok(&mut c, &["COMMAND", "DOCS"]), Value::Array(vec![]));
    assert_eq!(ok(&mut c, &["COMMAND"]), Value::Array(vec![]));
    assert_eq!(
        ok(&mut c, &["CONFIG", "GET", "save"]),
        Value::Array(vec![bulk("save"), bulk("")])
    );
    assert_eq!(
        ok(&mut c, &["CONFIG", "GET", "appendonly"]),
        Value::Array(vec![bulk("appendonly"), bulk("no")])
    );
    assert_eq!(
        ok(&mut c, &["CONFIG", "GET", "nosuchparam"]),
        Value::Array(vec![])
    );
    let e = err(&mut c, &["CONFIG", "SET", "save", ""]);
    assert!(e.contains("not supported"), "{e}");
    assert!(is_ok(&ok(&mut c, &["CLIENT", "SETNAME", "x"])));

    // The connection is still healthy after all the errors.
    assert_eq!(ok(&mut c, &["PING"]), status("PONG"));
}

#[test]
fn get_set_and_set_options() {
    let (_dir, node) = node("set");
    let mut c = connect(&node);
    assert_eq!(ok(&mut c, &["GET", "k"]), Value::Nil);
    assert!(is_ok(&ok(&mut c, &["SET", "k", "v1"])));
    assert_eq!(ok(&mut c, &["GET", "k"]), bulk("v1"));
    let v: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v, "v1");

    // NX: only when absent.
    assert_eq!(ok(&mut c, &["SET", "k", "nx", "NX"]), Value::Nil);
    assert_eq!(ok(&mut c, &["GET", "k"]), bulk("v1"));
    assert!(is_ok(&ok(&mut c, &["SET", "fresh", "f", "nx"])));
    assert_eq!(ok(&mut c, &["GET", "fresh"]), bulk("f"));

    // XX: only when present.
    assert_eq!(ok(&mut c, &["SET", "absent", "x", "XX"]), Value::Nil);
    assert_eq!(ok(&mut c, &["GET", "absent"]), Value::Nil);
    assert!(is_ok(&ok(&mut c, &["SET", "k", "v2", "XX"])));
    assert_eq!(ok(&mut c, &["GET", "k"]), bulk("v2"));

    // GET: answers the previous value (nil when there was none).
    assert_eq!(ok(&mut c, &["SET", "k", "v3", "GET"]), bulk("v2"));
    assert_eq!(ok(&mut c, &["GET", "k"]), bulk("v3"));
    assert_eq!(ok(&mut c, &["SET", "new", "n", "GET"]), Value::Nil);
    assert_eq!(ok(&mut c, &["GET", "new"]), bulk("n"));
    // NX GET on a present key: not set, answers the old value.
    assert_eq!(ok(&mut c, &["SET", "k", "zz", "NX", "GET"]), bulk("v3"));
    assert_eq!(ok(&mut c, &["GET", "k"]), bulk("v3"));

    // Expiry is refused and leaves the key alone.
    let e = err(&mut c, &["SET", "k", "v4", "EX", "10"]);
    assert!(e.starts_with("ERR") && e.contains("not supported"), "{e}");
    let e = err(&mut c, &["SET", "k", "v4", "PX", "10"]);
    assert!(e.contains("not supported"), "{e}");
    assert_eq!(ok(&mut c, &["GET", "k"]), bulk("v3"));
    assert_eq!(
        err(&mut c, &["SET", "k", "v", "NX", "XX"]),
        "ERR syntax error"
    );
    assert_eq!(err(&mut c, &["SET", "k", "v", "BOGUS"]), "ERR syntax error");
}

#[test]
fn setnx_getset_append_strlen() {
    let (_dir, node) = node("strings");
    let mut c = connect(&node);
    assert_eq!(ok(&mut c, &["SETNX", "a", "1"]), Value::Int(1));
    assert_eq!(ok(&mut c, &["SETNX", "a", "2"]), Value::Int(0));
    assert_eq!(ok(&mut c, &["GET", "a"]), bulk("1"));

    assert_eq!(ok(&mut c, &["GETSET", "a", "3"]), bulk("1"));
    assert_eq!(ok(&mut c, &["GET", "a"]), bulk("3"));
    assert_eq!(ok(&mut c, &["GETSET", "b", "x"]), Value::Nil);
    assert_eq!(ok(&mut c, &["GET", "b"]), bulk("x"));

    assert_eq!(ok(&mut c, &["APPEND", "s", "hello"]), Value::Int(5));
    assert_eq!(ok(&mut c, &["APPEND", "s", " world"]), Value::Int(11));
    assert_eq!(ok(&mut c, &["GET", "s"]), bulk("hello world"));

    assert_eq!(ok(&mut c, &["STRLEN", "s"]), Value::Int(11));
    assert_eq!(ok(&mut c, &["STRLEN", "missing"]), Value::Int(0));
}

#[test]
fn del_exists_mget_mset_dbsize() {
    let (_dir, node) = node("multi");
    let mut c = connect(&node);
    assert_eq!(ok(&mut c, &["DBSIZE"]), Value::Int(0));
    assert!(is_ok(&ok(
        &mut c,
        &["MSET", "k1", "v1", "k2", "v2", "k3", "v3"]
    )));
    assert_eq!(ok(&mut c, &["DBSIZE"]), Value::Int(3));
    assert_eq!(
        ok(&mut c, &["MGET", "k1", "nope", "k3", "k2"]),
        Value::Array(vec![bulk("v1"), Value::Nil, bulk("v3"), bulk("v2")])
    );
    let typed: Vec<Option<String>> = redis::cmd("MGET")
        .arg("k2")
        .arg("zz")
        .query(&mut c)
        .unwrap();
    assert_eq!(typed, vec![Some("v2".to_string()), None]);

    assert_eq!(ok(&mut c, &["EXISTS", "k1", "k2"]), Value::Int(2));
    assert_eq!(ok(&mut c, &["EXISTS", "k1", "nope"]), Value::Int(1));
    assert_eq!(
        ok(&mut c, &["EXISTS", "k1", "k1"]),
        Value::Int(2),
        "a key named twice counts twice"
    );
    assert_eq!(ok(&mut c, &["EXISTS", "nope"]), Value::Int(0));

    assert_eq!(ok(&mut c, &["DEL", "k1", "k2", "nope"]), Value::Int(2));
    assert_eq!(ok(&mut c, &["DEL", "k1"]), Value::Int(0));
    assert_eq!(ok(&mut c, &["EXISTS", "k1", "k2", "k3"]), Value::Int(1));
    assert_eq!(ok(&mut c, &["GET", "k1"]), Value::Nil);
    assert_eq!(ok(&mut c, &["DBSIZE"]), Value::Int(1));
    // A key written again after a delete is live again.
    assert!(is_ok(&ok(&mut c, &["SET", "k1", "back"])));
    assert_eq!(ok(&mut c, &["GET", "k1"]), bulk("back"));
    assert_eq!(ok(&mut c, &["DBSIZE"]), Value::Int(2));
}

#[test]
fn keys_with_glob_patterns() {
    let (_dir, node) = node("keys");
    let mut c = connect(&node);
    for k in [
        "user:1", "user:2", "user:10", "hello", "hallo", "hxllo", "h*llo", "other",
    ] {
        assert!(is_ok(&ok(&mut c, &["SET", k, "v"])));
    }
    let keys = |c: &mut Connection, pattern: &str| -> HashSet<String> {
        redis::cmd("KEYS").arg(pattern).query(c).unwrap()
    };
    let set = |ks: &[&str]| -> HashSet<String> { ks.iter().map(|s| s.to_string()).collect() };
    assert_eq!(keys(&mut c, "*").len(), 8);
    assert_eq!(
        keys(&mut c, "user:*"),
        set(&["user:1", "user:2", "user:10"])
    );
    assert_eq!(keys(&mut c, "user:?"), set(&["user:1", "user:2"]));
    assert_eq!(keys(&mut c, "h[ae]llo"), set(&["hello", "hallo"]));
    assert_eq!(keys(&mut c, "h[^e]llo"), set(&["hallo", "hxllo", "h*llo"]));
    assert_eq!(keys(&mut c, "h\\*llo"), set(&["h*llo"]));
    assert_eq!(keys(&mut c, "nomatch*"), set(&[]));
    assert_eq!(keys(&mut c, "other"), set(&["other"]));
}

#[test]
fn scan_cursor_loop_collects_every_key_exactly() {
    let (_dir, node) = node("scan");
    let mut c = connect(&node);
    let mut expected = HashSet::new();
    let mut pipe = redis::pipe();
    for i in 0..500 {
        let k = format!("user:{i}");
        pipe.cmd("SET").arg(&k).arg(i).ignore();
        expected.insert(k);
    }
    for i in 0..100 {
        pipe.cmd("SET").arg(format!("other:{i}")).arg(i).ignore();
    }
    pipe.query::<()>(&mut c).unwrap();
    assert_eq!(ok(&mut c, &["DBSIZE"]), Value::Int(600));

    let scan_all = |c: &mut Connection, pattern: Option<&str>, count: usize| {
        let mut seen = HashSet::new();
        let mut cursor = 0u64;
        let mut calls = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor);
            if let Some(p) = pattern {
                cmd.arg("MATCH").arg(p);
            }
            cmd.arg("COUNT").arg(count);
            let (next, keys): (u64, Vec<String>) = cmd.query(c).unwrap();
            for k in keys {
                if let Some(p) = pattern {
                    let prefix = p.trim_end_matches('*');
                    assert!(k.starts_with(prefix), "{k} does not match {p}");
                }
                seen.insert(k);
            }
            calls += 1;
            assert!(calls < 10_000, "SCAN never returned cursor 0");
            if next == 0 {
                return (seen, calls);
            }
            cursor = next;
        }
    };

    let (users, calls) = scan_all(&mut c, Some("user:*"), 50);
    assert_eq!(users, expected);
    assert!(calls > 1, "COUNT 50 over 600 keys takes several calls");
    let (all, _) = scan_all(&mut c, None, 7);
    assert_eq!(all.len(), 600);
    assert!(expected.is_subset(&all));
    let (others, _) = scan_all(&mut c, Some("other:*"), 1000);
    assert_eq!(others.len(), 100);

    // A cursor past the end finishes the scan.
    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN").arg(u64::MAX).query(&mut c).unwrap();
    assert_eq!((next, keys.len()), (0, 0));
    assert_eq!(err(&mut c, &["SCAN", "abc"]), "ERR invalid cursor");
}

#[test]
fn info_sections_show_real_values() {
    let (_dir, node) = node("info");
    let mut c = connect(&node);
    assert!(is_ok(&ok(&mut c, &["MSET", "a", "1", "b", "2", "c", "3"])));

    let all = info(&mut c, None);
    for header in ["# Server", "# Clients", "# Stats", "# Keyspace", "# Peers"] {
        assert!(all.contains(header), "INFO lacks {header}:\n{all}");
    }
    assert_eq!(
        info_field(&all, "process_id").as_deref(),
        Some(node.pid().to_string().as_str())
    );
    let db0 = info_field(&all, "db0").expect("db0 line");
    assert!(db0.starts_with("keys=3,"), "{db0}");

    let server = info(&mut c, Some("server"));
    assert!(server.contains("# Server") && !server.contains("# Keyspace"));
    assert!(info_field(&server, "redis_version").is_some());
    let stats = info(&mut c, Some("stats"));
    assert!(stats.contains("# Stats") && !stats.contains("# Server"));
    let processed: u64 = info_field(&stats, "total_commands_processed")
        .unwrap()
        .parse()
        .unwrap();
    assert!(processed >= 3, "{stats}");
    let peers = info(&mut c, Some("peers"));
    assert_eq!(info_field(&peers, "links").as_deref(), Some("0"));

    // connected_clients follows the open connections.
    let clients = |c: &mut Connection| -> usize {
        info_field(&info(c, Some("clients")), "connected_clients")
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(clients(&mut c), 1);
    let mut more: Vec<Connection> = (0..3).map(|_| connect(&node)).collect();
    for m in &mut more {
        assert_eq!(ok(m, &["PING"]), status("PONG"));
    }
    assert_eq!(clients(&mut c), 4);
    more.truncate(1);
    assert!(
        eventually(Duration::from_secs(5), || clients(&mut c) == 2),
        "closed connections are no longer counted"
    );

    // db0:keys follows the store.
    ok(&mut c, &["DEL", "a", "b"]);
    ok(&mut c, &["SET", "d", "4"]);
    let ks = info(&mut c, Some("keyspace"));
    assert!(
        ks.contains("# Keyspace") && !ks.contains("# Clients"),
        "{ks}"
    );
    let db0 = info_field(&ks, "db0").unwrap();
    assert!(db0.starts_with("keys=2,"), "{db0}");
    assert!(db0.contains("tombstones=2"), "{db0}");
}

#[test]
fn unknown_commands_and_wrong_arity_are_errors_and_keep_the_connection() {
    let (_dir, node) = node("errors");
    let mut c = connect(&node);
    assert_eq!(err(&mut c, &["FLY", "x"]), "ERR unknown command 'FLY'");
    assert_eq!(err(&mut c, &["flushall"]), "ERR unknown command 'flushall'");
    for (args, name) in [
        (&["GET"][..], "get"),
        (&["GET", "a", "b"][..], "get"),
        (&["SET", "k"][..], "set"),
        (&["SETNX", "k"][..], "setnx"),
        (&["GETSET", "k"][..], "getset"),
        (&["APPEND", "k"][..], "append"),
        (&["DEL"][..], "del"),
        (&["EXISTS"][..], "exists"),
        (&["MGET"][..], "mget"),
        (&["MSET", "a"][..], "mset"),
        (&["MSET", "a", "1", "b"][..], "mset"),
        (&["STRLEN"][..], "strlen"),
        (&["KEYS"][..], "keys"),
        (&["SCAN"][..], "scan"),
        (&["DBSIZE", "x"][..], "dbsize"),
        (&["ECHO"][..], "echo"),
        (&["ECHO", "a", "b"][..], "echo"),
        (&["PING", "a", "b"][..], "ping"),
        (&["SELECT"][..], "select"),
        (&["QUIT", "now"][..], "quit"),
    ] {
        assert_eq!(
            err(&mut c, args),
            format!("ERR wrong number of arguments for '{name}' command"),
            "{args:?}"
        );
    }
    assert_eq!(ok(&mut c, &["SET", "still", "here"]), Value::Okay);
    assert_eq!(ok(&mut c, &["GET", "still"]), bulk("here"));
}

#[test]
fn quit_answers_ok_then_closes() {
    let (_dir, node) = node("quit");
    let mut s = raw(&node);
    s.write_all(b"*1\r\n$4\r\nQUIT\r\n").unwrap();
    expect_bytes(&mut s, b"+OK\r\n");
    assert!(closed(&mut s));

    // Through the crate too; the node keeps serving others.
    let mut c = connect(&node);
    assert!(is_ok(&ok(&mut c, &["QUIT"])));
    let mut d = connect(&node);
    assert_eq!(ok(&mut d, &["PING"]), status("PONG"));
}

// ---------------------------------------------------------------- payloads

#[test]
fn binary_keys_and_values_round_trip() {
    let (_dir, node) = node("binary");
    let mut c = connect(&node);
    let key: &[u8] = b"bin\r\nkey\0with\x00nul\r\n";
    let value: &[u8] = b"\r\n\0\x01\xff$3\r\nfoo\r\n*1\r\n\0end";
    assert!(is_ok(&run(&mut c, &[b"SET", key, value]).unwrap()));
    assert_eq!(
        run(&mut c, &[b"GET", key]).unwrap(),
        Value::BulkString(value.to_vec())
    );
    let got: Vec<u8> = redis::cmd("GET").arg(key).query(&mut c).unwrap();
    assert_eq!(got, value);
    assert_eq!(
        run(&mut c, &[b"STRLEN", key]).unwrap(),
        Value::Int(value.len() as i64)
    );
    assert_eq!(run(&mut c, &[b"GET", b"bin"]).unwrap(), Value::Nil);
    // The key comes back intact from KEYS and SCAN.
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("bin*").query(&mut c).unwrap();
    assert_eq!(keys, vec![key.to_vec()]);
    let (_, scanned): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(1000)
        .query(&mut c)
        .unwrap();
    assert!(scanned.contains(&key.to_vec()));
    // ECHO and APPEND are binary-safe too.
    assert_eq!(
        run(&mut c, &[b"ECHO", b"\0\r\n\0"]).unwrap(),
        Value::BulkString(b"\0\r\n\0".to_vec())
    );
    assert_eq!(
        run(&mut c, &[b"APPEND", key, b"\r\n"]).unwrap(),
        Value::Int(value.len() as i64 + 2)
    );
    assert_eq!(run(&mut c, &[b"DEL", key]).unwrap(), Value::Int(1));
    assert_eq!(run(&mut c, &[b"DBSIZE"]).unwrap(), Value::Int(0));
}

#[test]
fn one_mebibyte_value_round_trip() {
    let (_dir, node) = node("big");
    let mut c = connect(&node);
    let value: Vec<u8> = (0..(1usize << 20))
        .map(|i| (i.wrapping_mul(31) % 251) as u8)
        .collect();
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query(&mut c)
        .unwrap();
    let got: Vec<u8> = redis::cmd("GET").arg("big").query(&mut c).unwrap();
    assert_eq!(got.len(), value.len());
    assert!(got == value, "1 MiB value came back different");
    assert_eq!(ok(&mut c, &["STRLEN", "big"]), Value::Int(1 << 20));
    // Twice in one answer (MGET), larger than max_output_bytes.
    let both: Vec<Vec<u8>> = redis::cmd("MGET")
        .arg("big")
        .arg("big")
        .query(&mut c)
        .unwrap();
    assert!(both.len() == 2 && both.iter().all(|v| *v == value));
    assert_eq!(ok(&mut c, &["PING"]), status("PONG"));
}

#[test]
fn pipeline_of_a_thousand_commands_is_answered_in_order() {
    let (_dir, node) = node("pipeline");
    let mut c = connect(&node);
    let mut pipe = redis::pipe();
    let mut expected = Vec::new();
    for i in 0..500 {
        pipe.cmd("SET")
            .arg(format!("p{i}"))
            .arg(format!("value-{i}"));
        expected.push(Value::Okay);
        // Read back the key written just before, and one written long ago.
        pipe.cmd("GET").arg(format!("p{}", i / 2));
        expected.push(bulk(&format!("value-{}", i / 2)));
    }
    assert_eq!(expected.len(), 1000);
    let got: Vec<Value> = pipe.query(&mut c).unwrap();
    assert_eq!(got.len(), 1000);
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(
            g == e || (is_ok(g) && is_ok(e)),
            "reply {i}: {g:?} != {e:?}"
        );
    }
    assert_eq!(ok(&mut c, &["DBSIZE"]), Value::Int(500));
}

// ---------------------------------------------------------------- raw bytes

#[test]
fn raw_replies_are_byte_exact() {
    let (_dir, node) = node("raw");
    let mut s = raw(&node);
    s.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    expect_bytes(&mut s, b"+PONG\r\n");
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\na\0b\r\n")
        .unwrap();
    expect_bytes(&mut s, b"+OK\r\n");
    s.write_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap();
    expect_bytes(&mut s, b"$3\r\na\0b\r\n");
    s.write_all(b"*2\r\n$3\r\nGET\r\n$4\r\nnope\r\n").unwrap();
    expect_bytes(&mut s, b"$-1\r\n");
    s.write_all(b"*3\r\n$6\r\nEXISTS\r\n$1\r\nk\r\n$1\r\nk\r\n")
        .unwrap();
    expect_bytes(&mut s, b":2\r\n");
    s.write_all(b"*3\r\n$4\r\nMGET\r\n$1\r\nk\r\n$1\r\nz\r\n")
        .unwrap();
    expect_bytes(&mut s, b"*2\r\n$3\r\na\0b\r\n$-1\r\n");
    s.write_all(b"*2\r\n$3\r\nFLY\r\n$1\r\nx\r\n").unwrap();
    expect_bytes(&mut s, b"-ERR unknown command 'FLY'\r\n");
    s.write_all(b"*1\r\n$3\r\nGET\r\n").unwrap();
    expect_bytes(
        &mut s,
        b"-ERR wrong number of arguments for 'get' command\r\n",
    );
    s.write_all(b"*2\r\n$7\r\nCOMMAND\r\n$4\r\nDOCS\r\n")
        .unwrap();
    expect_bytes(&mut s, b"*0\r\n");
    // Empty requests (`*0`, `*-1`) are skipped, as Redis does.
    s.write_all(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n").unwrap();
    expect_bytes(&mut s, b"+PONG\r\n");
}

#[test]
fn raw_pipelined_requests_in_one_write_come_back_in_one_read() {
    let (_dir, node) = node("raw-pipe");
    let mut s = raw(&node);
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$2\r\nxy\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n")
        .unwrap();
    let expected = b"+OK\r\n$2\r\nxy\r\n";
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        String::from_utf8_lossy(expected),
        "both answers, in order, in one read"
    );

    // A request split across writes at awkward places is answered once whole.
    for part in [
        &b"*2\r"[..],
        b"\n$3\r\nG",
        b"ET\r\n$1",
        b"\r\na\r",
        b"\n*1\r\n$4\r\nPI",
    ] {
        s.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    expect_bytes(&mut s, b"$2\r\nxy\r\n");
    s.write_all(b"NG\r\n").unwrap();
    expect_bytes(&mut s, b"+PONG\r\n");
}

#[test]
fn raw_protocol_error_closes_only_that_connection() {
    let (_dir, node) = node("raw-proto");
    let mut other = connect(&node);
    assert!(is_ok(&ok(&mut other, &["SET", "k", "v"])));

    let mut bad = raw(&node);
    bad.write_all(b"*1\r\n$x\r\n").unwrap();
    expect_bytes(&mut bad, b"-ERR Protocol error: invalid bulk length\r\n");
    assert!(closed(&mut bad));

    // A bad array length after a good request: the good one is answered first.
    let mut bad2 = raw(&node);
    bad2.write_all(b"*1\r\n$4\r\nPING\r\n*zz\r\n").unwrap();
    expect_bytes(
        &mut bad2,
        b"+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n",
    );
    assert!(closed(&mut bad2));

    assert_eq!(ok(&mut other, &["GET", "k"]), bulk("v"));
    assert_eq!(ok(&mut connect(&node), &["GET", "k"]), bulk("v"));
}

#[test]
fn raw_oversized_bulk_is_a_protocol_error_and_nothing_else_is_affected() {
    let (_dir, node) = node_with("raw-big", "[limits]\nmax_bulk_bytes = 1024\n");
    let mut other = connect(&node);
    assert!(is_ok(&ok(&mut other, &["SET", "k", "v"])));

    // At the limit is fine.
    let at_limit = "x".repeat(1024);
    assert!(is_ok(&ok(&mut other, &["SET", "full", &at_limit])));
    assert_eq!(ok(&mut other, &["STRLEN", "full"]), Value::Int(1024));

    // One byte over is refused on the header alone, before any payload.
    let mut bad = raw(&node);
    bad.write_all(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$1025\r\n")
        .unwrap();
    expect_bytes(&mut bad, b"-ERR Protocol error: invalid bulk length\r\n");
    assert!(closed(&mut bad));

    // Through the crate: the error surfaces and that connection is done.
    let mut victim = connect(&node);
    let over = "y".repeat(2000);
    assert!(run(&mut victim, &[b"SET", b"big", over.as_bytes()]).is_err());

    assert_eq!(ok(&mut other, &["GET", "big"]), Value::Nil);
    assert_eq!(ok(&mut other, &["GET", "k"]), bulk("v"));
    assert_eq!(ok(&mut other, &["DBSIZE"]), Value::Int(2));
}

#[test]
fn append_cannot_grow_a_value_past_the_bulk_limit() {
    let (_dir, node) = node_with("append-cap", "[limits]\nmax_bulk_bytes = 1024\n");
    let mut c = connect(&node);
    let most = "x".repeat(1000);
    assert!(is_ok(&ok(&mut c, &["SET", "k", &most])));
    assert_eq!(
        ok(&mut c, &["APPEND", "k", &"y".repeat(24)]),
        Value::Int(1024)
    );
    assert_eq!(
        err(&mut c, &["APPEND", "k", "z"]),
        "ERR string exceeds maximum allowed size (1024 bytes, limits.max_bulk_bytes)"
    );
    assert_eq!(ok(&mut c, &["STRLEN", "k"]), Value::Int(1024));
    // A new key may be created at the limit, not past it.
    assert_eq!(
        ok(&mut c, &["APPEND", "new", &"w".repeat(1024)]),
        Value::Int(1024)
    );
    assert!(err(&mut c, &["APPEND", "new", "w"]).starts_with("ERR string exceeds"));
    assert_eq!(
        ok(&mut c, &["GET", "k"]),
        bulk(&format!("{most}{}", "y".repeat(24)))
    );
}

#[test]
fn raw_inline_commands_after_resp_started() {
    let (_dir, node) = node("raw-inline");
    let mut s = raw(&node);
    s.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    expect_bytes(&mut s, b"+PONG\r\n");
    s.write_all(b"PING\r\n").unwrap();
    expect_bytes(&mut s, b"+PONG\r\n");
    s.write_all(b"SET inl \"two words\"\r\nGET inl\n").unwrap();
    expect_bytes(&mut s, b"+OK\r\n$9\r\ntwo words\r\n");
    // Inline and RESP requests mix in one write.
    s.write_all(b"ECHO hi\r\n*2\r\n$3\r\nGET\r\n$3\r\ninl\r\n")
        .unwrap();
    expect_bytes(&mut s, b"$2\r\nhi\r\n$9\r\ntwo words\r\n");
    // An empty inline line is skipped.
    s.write_all(b"\r\nPING\r\n").unwrap();
    expect_bytes(&mut s, b"+PONG\r\n");
    s.write_all(b"bogus\r\n").unwrap();
    expect_bytes(&mut s, b"-ERR unknown command 'bogus'\r\n");
    s.write_all(b"QUIT\r\n").unwrap();
    expect_bytes(&mut s, b"+OK\r\n");
    assert!(closed(&mut s));
}

// ---------------------------------------------------------------- protocols meet

#[test]
fn text_and_resp_clients_see_each_others_writes() {
    let (_dir, node) = node("mixed");
    let mut text = node.client();
    let mut resp = connect(&node);

    assert_eq!(text.ask("PUT from-text hello text world"), "OK");
    assert_eq!(
        ok(&mut resp, &["GET", "from-text"]),
        bulk("hello text world")
    );

    assert!(is_ok(&ok(&mut resp, &["SET", "from-resp", "hi resp"])));
    assert_eq!(text.ask("GET from-resp"), "hi resp");

    assert_eq!(ok(&mut resp, &["DEL", "from-text"]), Value::Int(1));
    assert_eq!(text.ask("GET from-text"), "NONE");
    assert_eq!(text.ask("CLEAR from-resp"), "OK");
    assert_eq!(ok(&mut resp, &["GET", "from-resp"]), Value::Nil);
    assert_eq!(ok(&mut resp, &["DBSIZE"]), Value::Int(0));
}

#[test]
fn cross_node_text_and_resp_writes_replicate() {
    let dir = TempDir::new("cross");
    let base = free_ports(2);
    let hosts = [
        format!("127.0.0.1:{base}"),
        format!("127.0.0.1:{}", base + 1),
    ];
    dir.write("config.toml", &config_toml(base, &hosts, ""));
    let a = Node::start(dir.path(), &[]);
    let b = Node::start(dir.path(), &[]);
    assert_eq!((a.port, b.port), (base, base + 1));

    // RESP on A, text on B.
    let mut resp_a = connect(&a);
    assert!(is_ok(&ok(&mut resp_a, &["SET", "a-resp", "written on A"])));
    let mut text_b = b.client();
    assert!(
        eventually(Duration::from_secs(5), || text_b.ask("GET a-resp")
            == "written on A"),
        "a RESP write on A never reached B's text clients"
    );

    // Text on B, RESP on A.
    assert_eq!(text_b.ask("PUT b-text written on B"), "OK");
    assert!(
        eventually(Duration::from_secs(5), || ok(
            &mut resp_a,
            &["GET", "b-text"]
        ) == bulk("written on B")),
        "a text write on B never reached A's RESP clients"
    );

    // A delete travels too.
    let mut resp_b = connect(&b);
    assert_eq!(ok(&mut resp_b, &["DEL", "a-resp"]), Value::Int(1));
    let start = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || ok(
            &mut resp_a,
            &["GET", "a-resp"]
        ) == Value::Nil),
        "a delete on B never reached A ({:?})",
        start.elapsed()
    );
}
