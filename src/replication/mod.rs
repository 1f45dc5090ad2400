//! STUB (replaced by the replication branch): enough API to compile the node.
#![allow(missing_docs, dead_code, unused_variables)]
use crate::store::{Change, NodeId, Store, Version};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
pub mod wire {
    use crate::store::{NodeId, Version};
    pub const MAGIC: [u8; 8] = *b"\0PICCOLO";
    pub const PROTOCOL_VERSION: u16 = 1;
    #[derive(Debug, Clone, PartialEq)]
    pub struct Hello {
        pub version: u16,
        pub node: NodeId,
        pub cluster: String,
        pub addr: String,
    }
    #[derive(Debug, Clone, PartialEq)]
    pub struct Update {
        pub key: Vec<u8>,
        pub value: Option<Vec<u8>>,
        pub version: Version,
    }
    #[derive(Debug, Clone, PartialEq)]
    pub struct MemberInfo {
        pub id: NodeId,
        pub addr: String,
        pub alive: bool,
    }
    #[derive(Debug, Clone, PartialEq)]
    pub enum Message {
        Ping,
        Updates(Vec<Update>),
        Members(Vec<MemberInfo>),
    }
    #[derive(Debug)]
    pub struct WireError(pub String);
    impl std::fmt::Display for WireError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for WireError {}
    impl Hello {
        pub fn encode(&self) -> Vec<u8> {
            let mut v = MAGIC.to_vec();
            v.extend(self.version.to_be_bytes());
            v.extend(self.node.to_be_bytes());
            for s in [&self.cluster, &self.addr] {
                v.push(s.len() as u8);
                v.extend(s.as_bytes());
            }
            v
        }
        pub fn read_from(r: &mut impl std::io::Read) -> Result<Hello, WireError> {
            let e = |x: std::io::Error| WireError(x.to_string());
            let mut m = [0u8; 8];
            r.read_exact(&mut m).map_err(e)?;
            if m != MAGIC {
                return Err(WireError("bad magic".into()));
            }
            let mut b = [0u8; 10];
            r.read_exact(&mut b).map_err(e)?;
            let mut s = || -> Result<String, WireError> {
                let mut l = [0u8];
                r.read_exact(&mut l).map_err(e)?;
                let mut v = vec![0; l[0] as usize];
                r.read_exact(&mut v).map_err(e)?;
                String::from_utf8(v).map_err(|_| WireError("utf8".into()))
            };
            let cluster = s()?;
            let addr = s()?;
            Ok(Hello {
                version: u16::from_be_bytes([b[0], b[1]]),
                node: u64::from_be_bytes(b[2..10].try_into().unwrap()),
                cluster,
                addr,
            })
        }
    }
    pub fn encode_frame(msg: &Message, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend([0u8; 4]);
        match msg {
            Message::Ping => out.push(0),
            _ => out.push(0),
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
    pub fn decode(body: &[u8]) -> Result<Message, WireError> {
        Ok(Message::Ping)
    }
}
pub use wire::{Hello, MAGIC, MemberInfo, Message, PROTOCOL_VERSION, Update, WireError};
pub struct ReplicationConfig {
    pub tombstone_grace_ms: u64,
    pub max_batch_bytes: usize,
}
impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            tombstone_grace_ms: 86_400_000,
            max_batch_bytes: 1 << 20,
        }
    }
}
pub enum Output {
    Send {
        to: NodeId,
        msg: Message,
    },
    Broadcast {
        except: Option<NodeId>,
        msg: Message,
    },
}
#[derive(Default, Clone, Copy, Debug)]
pub struct ReplicationStats {
    pub updates_sent: u64,
    pub updates_received: u64,
    pub updates_applied: u64,
    pub sync_rounds: u64,
    pub repaired: u64,
    pub tombstones_collected: u64,
}
pub struct Replicator {
    node: NodeId,
    store: Arc<Store>,
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    last: AtomicU64,
}
impl Replicator {
    pub fn new(
        node: NodeId,
        store: Arc<Store>,
        config: ReplicationConfig,
        clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Self {
        Replicator {
            node,
            store,
            clock,
            last: AtomicU64::new(0),
        }
    }
    pub fn node_id(&self) -> NodeId {
        self.node
    }
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
    pub fn local_write<R>(
        &self,
        key: &[u8],
        decide: impl FnOnce(Option<&[u8]>) -> (Option<Change>, R),
        out: &mut Vec<Output>,
    ) -> R {
        let ts = self.last.fetch_add(1, Ordering::SeqCst) + 1;
        let (r, e) = self.store.update(
            key,
            Version {
                ts,
                node: self.node,
            },
            decide,
        );
        if let Some(e) = e {
            out.push(Output::Broadcast {
                except: None,
                msg: Message::Updates(vec![Update {
                    key: key.to_vec(),
                    value: e.value,
                    version: e.version,
                }]),
            });
        }
        r
    }
    pub fn handle(&self, from: NodeId, msg: Message, out: &mut Vec<Output>) {}
    pub fn link_up(&self, peer: NodeId, initiator: bool, out: &mut Vec<Output>) {}
    pub fn tick(&self, linked: &[NodeId], out: &mut Vec<Output>) {}
    pub fn stats(&self) -> ReplicationStats {
        ReplicationStats::default()
    }
}
