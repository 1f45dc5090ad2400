//! The peer wire format: a handshake, then length-prefixed frames.
//!
//! # Handshake (`Hello`), protocol version 1
//!
//! ```text
//! magic    8 bytes   "\0PICCOLO"  (NUL first: no text or RESP request starts so)
//! version  u16 BE    PROTOCOL_VERSION of the sender
//! length   u16 BE    number of bytes that follow
//! node     u64 BE    the sender's node id
//! cluster  u8 len, then that many bytes of UTF-8 (at most 255)
//! addr     u8 len, then that many bytes of UTF-8: advertised "host:port"
//! ```
//!
//! The magic and version come first and the rest is length-prefixed, so a
//! reader of any version can always learn the peer's version and skip its
//! hello, even when the layout after `length` changed: the node layer then
//! reports both versions and drops the link.
//!
//! # Frames
//!
//! After the handshake each side sends frames:
//!
//! ```text
//! length   u32 BE    length of the body
//! body     tag u8, then the payload of that message
//! ```
//!
//! All integers are big-endian. A byte string is a `u32` length and the bytes;
//! a short string (an address) is a `u8` length and UTF-8 bytes. A list is a
//! `u32` count and the items. A [`Version`] is `ts u64, node u64`.
//!
//! | tag | message        | payload                                                       |
//! |-----|----------------|---------------------------------------------------------------|
//! | 0   | `Ping`         | nothing                                                       |
//! | 1   | `Updates`      | list of update                                                |
//! | 2   | `Members`      | list of `id u64, addr short string, alive u8`                 |
//! | 3   | `SyncRoot`     | `root u64`                                                    |
//! | 4   | `SyncBuckets`  | list of `u64` (one hash per bucket)                           |
//! | 5   | `SyncVersions` | `last u8`, list of `bucket u16, list of (key bytes, version)` |
//! | 6   | `SyncRequest`  | `last u8`, list of key bytes                                  |
//! | 7   | `SyncEntries`  | list of update                                                |
//!
//! An update is `key bytes, present u8, [value bytes if present], version`;
//! `present = 0` is a tombstone.
//!
//! Decoding never trusts a length: every count is checked against the bytes
//! that remain before anything is allocated, so garbage input yields a
//! [`WireError`], never a panic or a huge allocation. The frame length itself
//! is capped by the node layer before the body is read.

use std::fmt;
use std::io::Read;

use crate::blob::Blob;
use crate::store::{NodeId, Version};

/// First bytes of every peer connection. The leading NUL tells the listener
/// that this is a peer: no text-protocol line and no RESP request (`*`) starts
/// with it.
pub const MAGIC: [u8; 8] = *b"\0PICCOLO";

/// Version of this wire format. Bump it on any incompatible change; peers with
/// a different version refuse the link after the hello.
pub const PROTOCOL_VERSION: u16 = 2;

/// Longest `cluster` or `addr` string a hello may carry.
pub const MAX_SHORT_STRING: usize = 255;

/// Bytes of a frame's length prefix.
pub const FRAME_HEADER: usize = 4;

/// The handshake each side sends first on a peer connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's [`PROTOCOL_VERSION`]. When it differs from ours, the other
    /// fields may be empty: their layout belongs to the other version.
    pub version: u16,
    /// The sender's node id; lets the receiver drop self-links and collapse
    /// duplicate links.
    pub node: NodeId,
    /// Name of the cluster; nodes of different clusters refuse each other.
    pub cluster: String,
    /// The address other nodes should dial to reach the sender ("host:port",
    /// with the port it really bound).
    pub addr: String,
}

impl Hello {
    /// The complete handshake bytes, magic first. Strings longer than
    /// [`MAX_SHORT_STRING`] bytes are cut at a character boundary.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(10 + self.cluster.len() + self.addr.len());
        body.extend_from_slice(&self.node.to_be_bytes());
        put_short_str(&mut body, &self.cluster);
        put_short_str(&mut body, &self.addr);
        let mut out = Vec::with_capacity(MAGIC.len() + 4 + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Reads exactly one hello from `r`, and nothing after it.
    ///
    /// A wrong magic is an error. A foreign version is not: the hello is
    /// returned with that version, and with the other fields decoded if their
    /// layout is ours, or left empty if not, so the caller can report both
    /// versions.
    pub fn read_from(r: &mut impl Read) -> Result<Hello, WireError> {
        let mut head = [0u8; MAGIC.len() + 4];
        r.read_exact(&mut head)?;
        if head[..MAGIC.len()] != MAGIC {
            return Err(WireError::BadMagic);
        }
        let version = u16::from_be_bytes([head[8], head[9]]);
        let len = u16::from_be_bytes([head[10], head[11]]) as usize;
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        let parsed = (|| {
            let mut c = Cursor::new(&body);
            let node = c.u64()?;
            let cluster = c.short_str()?;
            let addr = c.short_str()?;
            c.finish()?;
            Ok(Hello {
                version,
                node,
                cluster,
                addr,
            })
        })();
        match parsed {
            Err(_) if version != PROTOCOL_VERSION => Ok(Hello {
                version,
                node: 0,
                cluster: String::new(),
                addr: String::new(),
            }),
            other => other,
        }
    }
}

/// One write, as pushed to peers and as repaired by anti-entropy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The key written.
    pub key: Blob,
    /// The value, or `None` for a delete (a tombstone).
    pub value: Option<Blob>,
    /// The version of the write; merging keeps the highest.
    pub version: Version,
}

impl Update {
    /// Bytes this update takes inside a message, used to cut batches to size.
    pub fn wire_len(&self) -> usize {
        4 + self.key.len() + 1 + self.value.as_ref().map_or(0, |v| 4 + v.len()) + 16
    }
}

/// What a node knows about one cluster member; gossiped by the node layer so
/// links learn about members they were not configured with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberInfo {
    /// The member's node id.
    pub id: NodeId,
    /// Where to dial it ("host:port"); at most [`MAX_SHORT_STRING`] bytes.
    pub addr: String,
    /// Whether the sender currently considers it reachable.
    pub alive: bool,
}

/// The versions one node holds for every key of one digest bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketVersions {
    /// The bucket, below [`crate::store::BUCKETS`].
    pub bucket: u16,
    /// Every `(key, version)` of the bucket, tombstones included. The list is
    /// always complete: the receiver reads a key missing from it as "the
    /// sender does not have this key".
    pub versions: Vec<(Blob, Version)>,
}

impl BucketVersions {
    /// Bytes this bucket takes inside a message.
    pub fn wire_len(&self) -> usize {
        2 + 4
            + self
                .versions
                .iter()
                .map(|(k, _)| 4 + k.len() + 16)
                .sum::<usize>()
    }
}

/// A message between linked peers, after the handshake.
///
/// `Ping` and `Members` belong to the node layer (liveness and membership);
/// the rest drive replication. The anti-entropy messages are described in the
/// module documentation of [`crate::replication`].
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Keep-alive; proves the link is up.
    Ping,
    /// Writes pushed as they happen: a local write, or one forwarded because
    /// it changed the forwarder's store.
    Updates(Vec<Update>),
    /// The sender's view of the cluster membership.
    Members(Vec<MemberInfo>),
    /// Anti-entropy step 1: the sender's [`crate::store::Store::root_hash`].
    /// When the receiver's root is equal, the round ends here.
    SyncRoot {
        /// Hash over all bucket hashes.
        root: u64,
    },
    /// Anti-entropy step 2: the receiver of `SyncRoot` answers with all its
    /// bucket hashes because the roots differ.
    SyncBuckets {
        /// One hash per bucket, [`crate::store::BUCKETS`] of them.
        hashes: Vec<u64>,
    },
    /// Anti-entropy step 3: the initiator's complete `(key, version)` lists of
    /// the buckets whose hashes differ. Large sets come in several messages.
    SyncVersions {
        /// Complete version lists, one per differing bucket.
        buckets: Vec<BucketVersions>,
        /// True on the last message of this round's lists.
        last: bool,
    },
    /// Anti-entropy step 4: keys the sender lacks or holds older; the
    /// receiver answers with `SyncEntries`.
    SyncRequest {
        /// Keys wanted.
        keys: Vec<Blob>,
        /// True on the last request of the round; it follows every
        /// `SyncEntries` the requester pushed in this round.
        last: bool,
    },
    /// Anti-entropy data: entries the receiver lacks or holds older. Merged
    /// like `Updates`, but not forwarded: every link repairs itself.
    SyncEntries(Vec<Update>),
}

const TAG_PING: u8 = 0;
const TAG_UPDATES: u8 = 1;
const TAG_MEMBERS: u8 = 2;
const TAG_SYNC_ROOT: u8 = 3;
const TAG_SYNC_BUCKETS: u8 = 4;
const TAG_SYNC_VERSIONS: u8 = 5;
const TAG_SYNC_REQUEST: u8 = 6;
const TAG_SYNC_ENTRIES: u8 = 7;

/// Appends one complete frame (length prefix and body) for `msg` to `out`.
pub fn encode_frame(msg: &Message, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    encode_body(msg, out);
    let len = (out.len() - start - FRAME_HEADER) as u32;
    out[start..start + FRAME_HEADER].copy_from_slice(&len.to_be_bytes());
}

/// Appends the body of `msg` (tag and payload, no length prefix) to `out`.
pub fn encode_body(msg: &Message, out: &mut Vec<u8>) {
    match msg {
        Message::Ping => out.push(TAG_PING),
        Message::Updates(updates) => {
            out.push(TAG_UPDATES);
            put_updates(out, updates);
        }
        Message::Members(members) => {
            out.push(TAG_MEMBERS);
            put_u32(out, members.len());
            for m in members {
                out.extend_from_slice(&m.id.to_be_bytes());
                put_short_str(out, &m.addr);
                out.push(m.alive as u8);
            }
        }
        Message::SyncRoot { root } => {
            out.push(TAG_SYNC_ROOT);
            out.extend_from_slice(&root.to_be_bytes());
        }
        Message::SyncBuckets { hashes } => {
            out.push(TAG_SYNC_BUCKETS);
            put_u32(out, hashes.len());
            out.reserve(hashes.len() * 8);
            for h in hashes {
                out.extend_from_slice(&h.to_be_bytes());
            }
        }
        Message::SyncVersions { buckets, last } => {
            out.push(TAG_SYNC_VERSIONS);
            out.push(*last as u8);
            put_u32(out, buckets.len());
            for b in buckets {
                out.extend_from_slice(&b.bucket.to_be_bytes());
                put_u32(out, b.versions.len());
                for (key, version) in &b.versions {
                    put_bytes(out, key);
                    put_version(out, *version);
                }
            }
        }
        Message::SyncRequest { keys, last } => {
            out.push(TAG_SYNC_REQUEST);
            out.push(*last as u8);
            put_u32(out, keys.len());
            for key in keys {
                put_bytes(out, key);
            }
        }
        Message::SyncEntries(updates) => {
            out.push(TAG_SYNC_ENTRIES);
            put_updates(out, updates);
        }
    }
}

/// Decodes one frame body (tag and payload, without the length prefix).
pub fn decode(body: &[u8]) -> Result<Message, WireError> {
    let mut c = Cursor::new(body);
    let msg = match c.u8()? {
        TAG_PING => Message::Ping,
        TAG_UPDATES => Message::Updates(c.updates()?),
        TAG_MEMBERS => {
            // id, addr length, alive: at least 10 bytes each.
            let n = c.count(10)?;
            let mut members = Vec::with_capacity(n);
            for _ in 0..n {
                members.push(MemberInfo {
                    id: c.u64()?,
                    addr: c.short_str()?,
                    alive: c.flag()?,
                });
            }
            Message::Members(members)
        }
        TAG_SYNC_ROOT => Message::SyncRoot { root: c.u64()? },
        TAG_SYNC_BUCKETS => {
            let n = c.count(8)?;
            let mut hashes = Vec::with_capacity(n);
            for _ in 0..n {
                hashes.push(c.u64()?);
            }
            Message::SyncBuckets { hashes }
        }
        TAG_SYNC_VERSIONS => {
            let last = c.flag()?;
            let n = c.count(6)?;
            let mut buckets = Vec::with_capacity(n);
            for _ in 0..n {
                let bucket = c.u16()?;
                let m = c.count(20)?;
                let mut versions = Vec::with_capacity(m);
                for _ in 0..m {
                    versions.push((c.bytes()?, c.version()?));
                }
                buckets.push(BucketVersions { bucket, versions });
            }
            Message::SyncVersions { buckets, last }
        }
        TAG_SYNC_REQUEST => {
            let last = c.flag()?;
            let n = c.count(4)?;
            let mut keys = Vec::with_capacity(n);
            for _ in 0..n {
                keys.push(c.bytes()?);
            }
            Message::SyncRequest { keys, last }
        }
        TAG_SYNC_ENTRIES => Message::SyncEntries(c.updates()?),
        tag => return Err(WireError::UnknownTag(tag)),
    };
    c.finish()?;
    Ok(msg)
}

/// Why bytes from a peer could not be understood. Any of them ends the link.
#[derive(Debug)]
pub enum WireError {
    /// The connection does not start with [`MAGIC`]: not a piccolo peer.
    BadMagic,
    /// The bytes end in the middle of a field or a declared list.
    Truncated,
    /// A message tag this version does not know.
    UnknownTag(u8),
    /// A boolean byte other than 0 or 1.
    BadFlag(u8),
    /// A string that is not UTF-8.
    BadUtf8,
    /// Bytes left over after a complete message.
    TrailingBytes(usize),
    /// Reading the handshake failed.
    Io(std::io::Error),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::BadMagic => write!(f, "not a piccolo peer (bad magic)"),
            WireError::Truncated => write!(f, "message truncated"),
            WireError::UnknownTag(t) => write!(f, "unknown message tag {t}"),
            WireError::BadFlag(b) => write!(f, "bad boolean byte {b}"),
            WireError::BadUtf8 => write!(f, "string is not UTF-8"),
            WireError::TrailingBytes(n) => write!(f, "{n} bytes after the end of the message"),
            WireError::Io(e) => write!(f, "reading handshake: {e}"),
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WireError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            WireError::Truncated
        } else {
            WireError::Io(e)
        }
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

fn put_version(out: &mut Vec<u8>, v: Version) {
    out.extend_from_slice(&v.ts.to_be_bytes());
    out.extend_from_slice(&v.node.to_be_bytes());
}

/// Writes a `u8`-length string, cut at a character boundary to fit.
fn put_short_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(MAX_SHORT_STRING);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_updates(out: &mut Vec<u8>, updates: &[Update]) {
    out.reserve(updates.iter().map(Update::wire_len).sum::<usize>() + 4);
    put_u32(out, updates.len());
    for u in updates {
        put_bytes(out, &u.key);
        match &u.value {
            Some(v) => {
                out.push(1);
                put_bytes(out, v);
            }
            None => out.push(0),
        }
        put_version(out, u.version);
    }
}

/// A reading position in a body; every read checks what remains.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { rest: buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.rest.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn flag(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(WireError::BadFlag(b)),
        }
    }

    /// A list count, refused when `count * min_item` bytes cannot remain:
    /// this is what keeps garbage from allocating huge vectors.
    fn count(&mut self, min_item: usize) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.rest.len() {
            return Err(WireError::Truncated);
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<Blob, WireError> {
        let n = self.u32()? as usize;
        Ok(Blob::from(self.take(n)?))
    }

    fn short_str(&mut self) -> Result<String, WireError> {
        let n = self.u8()? as usize;
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| WireError::BadUtf8)
    }

    fn version(&mut self) -> Result<Version, WireError> {
        Ok(Version {
            ts: self.u64()?,
            node: self.u64()?,
        })
    }

    fn updates(&mut self) -> Result<Vec<Update>, WireError> {
        // key length, present flag, version: at least 21 bytes each.
        let n = self.count(21)?;
        let mut updates = Vec::with_capacity(n);
        for _ in 0..n {
            let key = self.bytes()?;
            let value = if self.flag()? {
                Some(self.bytes()?)
            } else {
                None
            };
            let version = self.version()?;
            updates.push(Update {
                key,
                value,
                version,
            });
        }
        Ok(updates)
    }

    fn finish(&self) -> Result<(), WireError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(WireError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(msg: &Message) -> Message {
        let mut frame = Vec::new();
        encode_frame(msg, &mut frame);
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - FRAME_HEADER);
        decode(&frame[FRAME_HEADER..]).unwrap()
    }

    fn v(ts: u64, node: u64) -> Version {
        Version { ts, node }
    }

    #[test]
    fn every_message_roundtrips() {
        let msgs = [
            Message::Ping,
            Message::Updates(vec![
                Update {
                    key: b"k".into(),
                    value: Some(vec![b'v'; 100].into()),
                    version: v(1, 2),
                },
                Update {
                    key: Blob::new(),
                    value: None,
                    version: v(u64::MAX, 0),
                },
            ]),
            Message::Members(vec![MemberInfo {
                id: 9,
                addr: "127.0.0.1:19919".into(),
                alive: true,
            }]),
            Message::SyncRoot { root: 0xdead_beef },
            Message::SyncBuckets {
                hashes: (0..1024).collect(),
            },
            Message::SyncVersions {
                buckets: vec![
                    BucketVersions {
                        bucket: 3,
                        versions: vec![(b"a".into(), v(5, 6))],
                    },
                    BucketVersions {
                        bucket: 1023,
                        versions: vec![],
                    },
                ],
                last: true,
            },
            Message::SyncRequest {
                keys: vec![b"a".into(), Blob::new()],
                last: false,
            },
            Message::SyncEntries(vec![]),
        ];
        for m in &msgs {
            assert_eq!(&roundtrip(m), m);
        }
    }

    #[test]
    fn sync_root_is_small() {
        let mut frame = Vec::new();
        encode_frame(&Message::SyncRoot { root: 1 }, &mut frame);
        assert_eq!(frame.len(), 4 + 1 + 8);
    }

    #[test]
    fn hello_roundtrips_and_reads_only_itself() {
        let h = Hello {
            version: PROTOCOL_VERSION,
            node: 0x0123_4567_89ab_cdef,
            cluster: "prod".into(),
            addr: "127.0.0.1:19920".into(),
        };
        let mut bytes = h.encode();
        assert!(bytes.starts_with(&MAGIC));
        bytes.extend_from_slice(b"next");
        let mut r = &bytes[..];
        assert_eq!(Hello::read_from(&mut r).unwrap(), h);
        assert_eq!(r, b"next");
    }

    #[test]
    fn hello_rejects_bad_magic_and_truncation() {
        let mut r: &[u8] = b"*1\r\n$4\r\nPING\r\n";
        assert!(matches!(Hello::read_from(&mut r), Err(WireError::BadMagic)));
        let h = Hello {
            version: PROTOCOL_VERSION,
            node: 1,
            cluster: String::new(),
            addr: "x".into(),
        }
        .encode();
        let mut r = &h[..h.len() - 1];
        assert!(matches!(
            Hello::read_from(&mut r),
            Err(WireError::Truncated)
        ));
    }

    #[test]
    fn hello_rejects_bad_utf8() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        bytes.extend_from_slice(&11u16.to_be_bytes());
        bytes.extend_from_slice(&7u64.to_be_bytes());
        bytes.extend_from_slice(&[1, 0xff, 0]);
        let mut r = &bytes[..];
        assert!(matches!(Hello::read_from(&mut r), Err(WireError::BadUtf8)));
    }

    #[test]
    fn hello_of_a_foreign_version_reports_its_version() {
        // A future version with a different body layout.
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&7u16.to_be_bytes());
        bytes.extend_from_slice(&3u16.to_be_bytes());
        bytes.extend_from_slice(b"xyz");
        bytes.extend_from_slice(b"after");
        let mut r = &bytes[..];
        let h = Hello::read_from(&mut r).unwrap();
        assert_eq!(h.version, 7);
        assert_eq!(r, b"after");
        // A foreign version with our layout still yields its fields.
        let h2 = Hello {
            version: 2,
            node: 5,
            cluster: "c".into(),
            addr: "a:1".into(),
        };
        assert_eq!(Hello::read_from(&mut &h2.encode()[..]).unwrap(), h2);
    }

    #[test]
    fn long_strings_are_cut_at_a_char_boundary() {
        let h = Hello {
            version: PROTOCOL_VERSION,
            node: 1,
            cluster: "é".repeat(200),
            addr: "a".into(),
        };
        let back = Hello::read_from(&mut &h.encode()[..]).unwrap();
        assert_eq!(back.cluster, "é".repeat(127));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(decode(&[]), Err(WireError::Truncated)));
        assert!(matches!(decode(&[99]), Err(WireError::UnknownTag(99))));
        assert!(matches!(
            decode(&[TAG_PING, 0]),
            Err(WireError::TrailingBytes(1))
        ));
        // A count of four billion updates in a tiny body.
        assert!(matches!(
            decode(&[TAG_UPDATES, 0xff, 0xff, 0xff, 0xff, 0]),
            Err(WireError::Truncated)
        ));
    }

    #[test]
    fn encoding_100k_updates_is_fast() {
        let updates: Vec<Update> = (0..100_000u64)
            .map(|i| Update {
                key: format!("key:{i:08}").as_str().into(),
                value: Some(vec![b'x'; 32].into()),
                version: v(i << 16, 1),
            })
            .collect();
        let msg = Message::Updates(updates);
        let t = std::time::Instant::now();
        let mut out = Vec::new();
        encode_frame(&msg, &mut out);
        let enc = t.elapsed();
        let back = decode(&out[FRAME_HEADER..]).unwrap();
        assert_eq!(back, msg);
        if !cfg!(debug_assertions) {
            assert!(enc.as_millis() < 20, "encoding took {enc:?}");
        }
    }

    fn arb_version() -> impl Strategy<Value = Version> {
        (any::<u64>(), any::<u64>()).prop_map(|(ts, node)| Version { ts, node })
    }

    /// Short enough to be kept inline, or not.
    fn arb_bytes() -> impl Strategy<Value = Blob> {
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Blob::from)
    }

    fn arb_update() -> impl Strategy<Value = Update> {
        (
            arb_bytes(),
            proptest::option::of(arb_bytes()),
            arb_version(),
        )
            .prop_map(|(key, value, version)| Update {
                key,
                value,
                version,
            })
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            Just(Message::Ping),
            proptest::collection::vec(arb_update(), 0..8).prop_map(Message::Updates),
            proptest::collection::vec(
                (any::<u64>(), "[a-z0-9.:]{0,20}", any::<bool>())
                    .prop_map(|(id, addr, alive)| MemberInfo { id, addr, alive }),
                0..5
            )
            .prop_map(Message::Members),
            any::<u64>().prop_map(|root| Message::SyncRoot { root }),
            proptest::collection::vec(any::<u64>(), 0..40)
                .prop_map(|hashes| Message::SyncBuckets { hashes }),
            (
                proptest::collection::vec(
                    (
                        any::<u16>(),
                        proptest::collection::vec((arb_bytes(), arb_version()), 0..5)
                    )
                        .prop_map(|(bucket, versions)| BucketVersions { bucket, versions }),
                    0..5
                ),
                any::<bool>()
            )
                .prop_map(|(buckets, last)| Message::SyncVersions { buckets, last }),
            (proptest::collection::vec(arb_bytes(), 0..8), any::<bool>())
                .prop_map(|(keys, last)| Message::SyncRequest { keys, last }),
            proptest::collection::vec(arb_update(), 0..8).prop_map(Message::SyncEntries),
        ]
    }

    proptest! {
        #[test]
        fn messages_roundtrip(msg in arb_message()) {
            prop_assert_eq!(roundtrip(&msg), msg);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_mutated_messages(
            msg in arb_message(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let mut body = Vec::new();
            encode_body(&msg, &mut body);
            for (at, b) in flips {
                let n = body.len();
                body[at % n] = b;
            }
            let n = body.len();
            body.truncate(n - cut % (n + 1).min(4));
            let _ = decode(&body);
        }

        #[test]
        fn hello_read_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = Hello::read_from(&mut &with_magic[..]);
            let _ = Hello::read_from(&mut &bytes[..]);
        }

        #[test]
        fn hello_roundtrips(node in any::<u64>(), cluster in "\\PC{0,40}", addr in "[a-z0-9.:]{0,30}") {
            let h = Hello { version: PROTOCOL_VERSION, node, cluster, addr };
            prop_assert_eq!(Hello::read_from(&mut &h.encode()[..]).unwrap(), h);
        }
    }
}
