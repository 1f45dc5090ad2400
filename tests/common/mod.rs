//! Test harness: real `piccolo` processes on loopback, killed on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "piccolo-test-{}-{}-{}",
            std::process::id(),
            tag,
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A block of `n` consecutive free loopback ports. Each test binary and each
/// call get their own range, spread by process id, so tests running in
/// parallel do not collide.
pub fn free_ports(n: u16) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let pid_base = 20_000 + (std::process::id() % 400) * 100;
    loop {
        let offset = NEXT.fetch_add(n as u32 + 12, Ordering::Relaxed);
        let base = (pid_base + offset % 40_000) as u16;
        if base as u32 + n as u32 + 12 > 65_000 {
            continue;
        }
        let all_free = (base..base + n + 12).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return base;
        }
    }
}

/// A running node. Killed (SIGKILL) on drop if still running.
pub struct Node {
    pub child: Option<Child>,
    pub log: Arc<Mutex<Vec<String>>>,
    pub port: u16,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_piccolo")
}

impl Node {
    /// Starts `piccolo` with `args` in `dir` and waits until it listens.
    pub fn start(dir: &Path, args: &[&str]) -> Node {
        let mut child = Command::new(bin())
            .args(args)
            .current_dir(dir)
            .env(
                "RUST_LOG",
                std::env::var("TEST_RUST_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start piccolo");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("PICCOLO_TEST_ECHO").is_some() {
                    eprintln!("{line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        let mut node = Node {
            child: Some(child),
            log,
            port: 0,
        };
        let line = node.wait_log("listening on", Duration::from_secs(10));
        let addr = line.rsplit(' ').next().unwrap();
        node.port = addr.rsplit(':').next().unwrap().parse().unwrap();
        node
    }

    /// Waits for a log line containing `needle`, and returns it.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line with {needle:?} within {timeout:?}; log:\n{}",
                    self.log.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Number of log lines containing `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> TextClient {
        TextClient::connect(self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a signal and waits for the exit status.
    pub fn signal_and_wait(&mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.pid().to_string();
        Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .unwrap();
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("node did not exit after {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A line-oriented client of the text protocol.
pub struct TextClient {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl TextClient {
    pub fn connect(port: u16) -> TextClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        TextClient { stream, reader }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// One answer line, without its line ending.
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        self.reader
            .read_until(b'\n', &mut buf)
            .expect("read answer");
        assert!(
            buf.ends_with(b"\n"),
            "connection closed mid-answer: {buf:?}"
        );
        buf.pop();
        if buf.ends_with(b"\r") {
            buf.pop();
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Sends one request line and returns the one-line answer.
    pub fn ask(&mut self, request: &str) -> String {
        self.send(format!("{request}\n").as_bytes());
        self.line()
    }

    /// Reads lines up to and excluding `END`.
    pub fn until_end(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let l = self.line();
            if l == "END" {
                return lines;
            }
            lines.push(l);
        }
    }

    /// True when the server closed the connection (reads EOF).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
    }
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A node with no peers on a free port, with `extra` appended to its config.
pub fn node_with(tag: &str, extra: &str) -> (TempDir, Node) {
    let dir = TempDir::new(tag);
    let port = free_ports(1);
    dir.write("config.toml", &config_toml(port, &[], extra));
    let node = Node::start(dir.path(), &[]);
    assert_eq!(node.port, port);
    (dir, node)
}

/// A config.toml with the given bind port and hosts.
pub fn config_toml(port: u16, hosts: &[String], extra: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "[discovery]\nhosts = [{}]\nbind_host = \"127.0.0.1\"\nbind_port = {port}\nport_probe_limit = 10\nbackoff_initial_ms = 50\nbackoff_max_ms = 500\n{extra}",
        hosts.join(", ")
    )
}
