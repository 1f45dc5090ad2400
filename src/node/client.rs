//! One coroutine per accepted connection: sniff the first byte, then serve a
//! text client, a RESP client, or hand the connection to the peer layer.
//!
//! A client's cost is bounded: its read buffer never exceeds the line or
//! frame limit, and its answers are written out whenever they pass
//! `max_output_bytes`, so the coroutine stops reading from a client that
//! does not read its answers.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use log::debug;
use may::net::TcpStream;

use super::MAX_UPDATES_BATCH;
use super::{Node, peer};
use crate::config::Limits;
use crate::protocol::reply::Reply;
use crate::protocol::resp::{self, ParseProgress, RespLimits};
use crate::protocol::text::{self, Framed, LineCodec};
use crate::protocol::{Command, CommandError, Flow, Host, RespReply, TextReply, apply};
use crate::replication::{Message, Output, Update};

/// How long a connection that arrives while `max_clients` are open gets to
/// show it is a peer (peers do not count against the client cap).
const OVER_CAP_SNIFF: Duration = Duration::from_millis(200);

/// Read buffers start this small so that idle connections stay cheap, and
/// grow on demand.
const INITIAL_BUFFER: usize = 1024;

/// Releases a client slot when the connection ends, however it ends.
struct ClientSlot<'a>(&'a Node);

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        self.0.counters.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one accepted connection until it closes.
pub fn serve_connection(node: Arc<Node>, mut stream: TcpStream, from: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let limits = node.config.read().unwrap().limits.clone();
    let open = node.counters.clients.fetch_add(1, Ordering::Relaxed) + 1;
    let slot = ClientSlot(&node);
    let over_cap = open > limits.max_clients;
    if over_cap {
        let _ = stream.set_read_timeout(Some(OVER_CAP_SNIFF));
    }

    let mut buf = Buffer::new();
    match buf.fill(&mut stream, usize::MAX) {
        Ok(0) => return,
        Ok(_) => {}
        Err(_) if over_cap => {
            refuse(&node, &mut stream, false);
            return;
        }
        Err(e) => {
            debug!("connection from {from} failed before its first byte: {e}");
            return;
        }
    }
    let first = buf.data()[0];
    if first == 0 {
        drop(slot);
        peer::serve_incoming(&node, stream, buf.data().to_vec(), from);
        return;
    }
    if over_cap {
        refuse(&node, &mut stream, first == b'*');
        return;
    }
    let _ = stream.set_read_timeout(None);
    let result = if first == b'*' {
        serve_resp(&node, &mut stream, buf, &limits)
    } else {
        serve_text(&node, &mut stream, buf, &limits)
    };
    if let Err(e) = result {
        debug!("client {from} closed: {e}");
    }
    drop(slot);
}

fn refuse(node: &Node, stream: &mut TcpStream, resp: bool) {
    node.counters.rejected.fetch_add(1, Ordering::Relaxed);
    let msg: &[u8] = if resp {
        b"-ERR max number of clients reached\r\n"
    } else {
        b"ERR max number of clients reached\n"
    };
    let _ = stream.write_all(msg);
}

/// The answers and the replication outputs of the commands served since
/// the last flush.
#[derive(Default)]
struct Pending {
    out: Vec<u8>,
    outputs: Vec<Output>,
    commands: u64,
    /// Wire size of the updates in `outputs` before the position `counted`.
    update_bytes: usize,
    /// (output, update): where [`Pending::count_updates`] resumes. Outputs
    /// only grow between flushes, so each update is counted once.
    counted: (usize, usize),
}

impl Pending {
    /// Publishes the writes to the peers, then sends the answers: a client
    /// that reads `OK` can count on its write being on its way.
    fn flush(&mut self, node: &Node, stream: &mut TcpStream) -> std::io::Result<()> {
        node.counters
            .commands
            .fetch_add(std::mem::take(&mut self.commands), Ordering::Relaxed);
        node.publish(&mut self.outputs);
        self.update_bytes = 0;
        self.counted = (0, 0);
        if !self.out.is_empty() {
            stream.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// After one command: flushes when the command closes the connection,
    /// the answers have grown past `max_output`, or the updates waiting for
    /// the peers past [`MAX_UPDATES_BATCH`] (an APPEND to a large value
    /// makes a large update from a small request, so a pipeline of them
    /// would otherwise pile up copies). True when the connection is to
    /// close.
    fn after(
        &mut self,
        flow: Flow,
        node: &Node,
        stream: &mut TcpStream,
        max_output: usize,
    ) -> std::io::Result<bool> {
        self.commands += 1;
        self.count_updates();
        if flow == Flow::Close
            || self.out.len() >= max_output
            || self.update_bytes >= MAX_UPDATES_BATCH
        {
            self.flush(node, stream)?;
        }
        Ok(flow == Flow::Close)
    }

    /// Adds the updates made since the last call to `update_bytes`.
    fn count_updates(&mut self) {
        let (mut output, mut from) = self.counted;
        while let Some(o) = self.outputs.get(output) {
            if let Output::Broadcast {
                msg: Message::Updates(updates),
                ..
            } = o
            {
                self.update_bytes += updates[from..].iter().map(Update::wire_len).sum::<usize>();
                from = updates.len();
            }
            if output + 1 == self.outputs.len() {
                break;
            }
            (output, from) = (output + 1, 0);
        }
        self.counted = (output, from);
    }
}

/// Applies a parsed request, or answers why it could not be parsed.
fn serve(
    node: &Node,
    parsed: Result<Command, CommandError>,
    reply: &mut impl Reply,
    outputs: &mut Vec<Output>,
) -> Flow {
    match parsed {
        Ok(cmd) => apply(cmd, node, reply, outputs),
        Err(e) => {
            reply.error(&e.to_string());
            Flow::Continue
        }
    }
}

/// Serves the text protocol: one line in, one answer out.
fn serve_text(
    node: &Node,
    stream: &mut TcpStream,
    mut buf: Buffer,
    limits: &Limits,
) -> std::io::Result<()> {
    let mut codec = LineCodec::new(limits.max_line_bytes);
    let mut pending = Pending::default();
    let mut fair = super::Fair::waiting();
    // Errors about a line that has no end yet follow the last line ending
    // seen.
    let mut crlf = false;
    loop {
        loop {
            match codec.next(buf.data()) {
                Framed::Line {
                    line,
                    crlf: ends_crlf,
                    consumed,
                } => {
                    crlf = ends_crlf;
                    let mut reply = TextReply::new(&mut pending.out, crlf);
                    let flow = serve(
                        node,
                        text::parse_line(line),
                        &mut reply,
                        &mut pending.outputs,
                    );
                    buf.consume(consumed);
                    if pending.after(flow, node, stream, limits.max_output_bytes)? {
                        return Ok(());
                    }
                }
                Framed::TooLong { consumed } => {
                    TextReply::new(&mut pending.out, crlf).error("ERR line too long");
                    buf.consume(consumed);
                }
                // The tail of an over-long line was dropped; what follows
                // it may hold complete lines.
                Framed::Incomplete { consumed } if consumed > 0 => buf.consume(consumed),
                Framed::Incomplete { .. } => break,
            }
        }
        pending.flush(node, stream)?;
        // The codec bounds a line; leave room for one more read past it.
        if fair.fill(&mut buf, stream, limits.max_line_bytes + 2)? == 0 {
            return Ok(());
        }
    }
}

/// Serves RESP: every request parsed from one read is answered in one write.
fn serve_resp(
    node: &Node,
    stream: &mut TcpStream,
    mut buf: Buffer,
    limits: &Limits,
) -> std::io::Result<()> {
    let resp_limits = RespLimits::from(limits);
    // A request is bounded by the bulk cap per argument; the buffer may need
    // to hold one whole request.
    let max_buffer = limits
        .max_bulk_bytes
        .saturating_mul(2)
        .saturating_add(64 * 1024);
    let mut pending = Pending::default();
    let mut fair = super::Fair::waiting();
    // Remembers how far an incomplete frame was checked, so that a frame of
    // many small elements arriving in small reads is parsed in linear time.
    let mut progress = ParseProgress::default();
    loop {
        loop {
            match resp::parse_request_resumable(buf.data(), &resp_limits, &mut progress) {
                Ok(Some((request, consumed))) => {
                    if request.args.is_empty() {
                        buf.consume(consumed);
                        continue;
                    }
                    let mut reply = RespReply {
                        out: &mut pending.out,
                    };
                    let parsed = Command::from_args(&request.args);
                    let flow = serve(node, parsed, &mut reply, &mut pending.outputs);
                    buf.consume(consumed);
                    if pending.after(flow, node, stream, limits.max_output_bytes)? {
                        return Ok(());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // As Redis does: report the protocol error and close.
                    e.write_reply(&mut pending.out);
                    return pending.flush(node, stream);
                }
            }
        }
        pending.flush(node, stream)?;
        if fair.fill(&mut buf, stream, max_buffer)? == 0 {
            return Ok(());
        }
    }
}

/// A read buffer that reuses its memory: bytes are consumed from the front
/// and read in at the back. It starts small, so that idle connections stay
/// cheap, and grows when one request needs more room, or when reads keep
/// filling it (a deep pipeline, a peer streaming updates), up to
/// [`READ_AHEAD`], so that such a stream is read in large pieces rather
/// than a kilobyte per system call.
pub struct Buffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
    /// The last read filled all the room it was given: more was waiting.
    filled: bool,
}

/// Size up to which a buffer grows because reads keep filling it.
pub const READ_AHEAD: usize = 64 * 1024;

impl Default for Buffer {
    fn default() -> Self {
        Self::new()
    }
}

impl Buffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Buffer {
            data: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
            filled: false,
        }
    }

    /// A buffer that starts with `bytes`.
    pub fn with(bytes: &[u8]) -> Self {
        let mut b = Buffer::new();
        b.data.resize(bytes.len().max(INITIAL_BUFFER), 0);
        b.data[..bytes.len()].copy_from_slice(bytes);
        b.end = bytes.len();
        b
    }

    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// True when the last read filled all the room it was given, so the
    /// socket may hold more.
    pub fn filled(&self) -> bool {
        self.filled
    }

    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            // Give back the room a large request needed, or read-ahead
            // room once the stream has calmed down (the last read did not
            // fill it), so that a connection gone idle is cheap again.
            let calm = !self.filled && self.data.len() > INITIAL_BUFFER;
            if self.data.len() > READ_AHEAD || calm {
                self.data = vec![0; INITIAL_BUFFER];
            }
        }
    }

    /// Reads once from `r`, making room first; the buffer never grows past
    /// `max` bytes (a read of at least one byte is always possible). Returns
    /// the number of bytes read; 0 means end of stream.
    pub fn fill(&mut self, r: &mut impl Read, max: usize) -> std::io::Result<usize> {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let read_ahead = self.filled && self.data.len() < READ_AHEAD;
            if self.end == self.data.len() || read_ahead {
                let grown = (self.data.len() * 2).min(max.max(self.data.len() + 1));
                self.data.resize(grown, 0);
            }
        }
        let room = self.data.len() - self.end;
        let n = r.read(&mut self.data[self.end..])?;
        self.end += n;
        self.filled = n == room;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_counts_each_update_once() {
        use crate::store::Version;
        let update = |n: usize| Update {
            key: b"k".into(),
            value: Some(vec![0; n].into()),
            version: Version::default(),
        };
        let local = |updates| Output::Broadcast {
            except: None,
            msg: Message::Updates(updates),
        };
        let size = |n| update(n).wire_len();
        let mut p = Pending::default();
        p.count_updates();
        assert_eq!(p.update_bytes, 0);
        p.outputs.push(local(vec![update(10), update(20)]));
        p.count_updates();
        assert_eq!(p.update_bytes, size(10) + size(20));
        // Later writes join the last message, or start another one.
        let Some(Output::Broadcast {
            msg: Message::Updates(last),
            ..
        }) = p.outputs.last_mut()
        else {
            unreachable!()
        };
        last.push(update(30));
        p.outputs.push(Output::Send {
            to: 1,
            msg: Message::Ping,
        });
        p.outputs.push(local(vec![update(40)]));
        p.count_updates();
        p.count_updates();
        assert_eq!(p.update_bytes, size(10) + size(20) + size(30) + size(40));
    }

    #[test]
    fn buffer_reuses_and_grows() {
        let mut b = Buffer::new();
        let mut src: &[u8] = &[7u8; 3000];
        let mut total = 0;
        while total < 3000 {
            total += b.fill(&mut src, 10_000).unwrap();
        }
        assert_eq!(b.data().len(), 3000);
        b.consume(2999);
        assert_eq!(b.data(), &[7]);
        b.consume(1);
        assert!(b.data().is_empty());
        let mut more: &[u8] = b"abc";
        b.fill(&mut more, 10_000).unwrap();
        assert_eq!(b.data(), b"abc");
    }

    #[test]
    fn buffer_grows_while_reads_fill_it_and_shrinks_when_drained() {
        let mut b = Buffer::new();
        let mut src: &[u8] = &[5u8; 1 << 20];
        let mut sizes = Vec::new();
        for _ in 0..12 {
            let n = b.fill(&mut src, usize::MAX).unwrap();
            sizes.push(n);
            // A reader that consumes everything but a partial request.
            let keep = b.data().len().min(10);
            b.consume(b.data().len() - keep);
        }
        assert!(sizes.windows(2).take(6).all(|w| w[1] > w[0]), "{sizes:?}");
        assert!(b.data.len() <= 2 * READ_AHEAD, "{}", b.data.len());
        // A short read means the stream calmed down: once drained, the
        // buffer is back to its first size.
        let mut short: &[u8] = b"tail";
        b.fill(&mut short, usize::MAX).unwrap();
        assert!(!b.filled());
        b.consume(b.data().len());
        assert_eq!(b.data.len(), INITIAL_BUFFER);
    }

    #[test]
    fn buffer_growth_respects_the_cap_but_always_reads() {
        let mut b = Buffer::new();
        let mut src: &[u8] = &[1u8; 5000];
        for _ in 0..10 {
            b.fill(&mut src, 1500).unwrap();
        }
        assert!(b.data().len() <= 2048);
    }
}
