//! Anti-entropy: digests first, then only the entries that differ.
//!
//! The steps of a round are described in the [module docs](super). Each
//! handler here is one step; each reads the store afresh and needs nothing
//! from the previous step, so lost or repeated messages are harmless.

use log::{debug, info};

use super::{BucketVersions, CATCH_UP_BUCKETS, Message, Output, Replicator, Tally, Update, bump};
use crate::blob::Blob;
use crate::store::{BUCKETS, NodeId, Version};
use std::collections::HashMap;

impl Replicator {
    /// The entry stored for `key` now, as an update to send.
    fn current(&self, key: Blob) -> Option<Update> {
        let e = self.store.entry(&key)?;
        Some(Update {
            key,
            value: e.value,
            version: e.version,
        })
    }

    /// Step 1 (initiator): offer our root hash.
    pub(super) fn start_round(&self, peer: NodeId, out: &mut Vec<Output>) {
        bump(&self.counters.sync_rounds, 1);
        self.tallies().insert(peer, Tally::default());
        out.push(Output::Send {
            to: peer,
            msg: Message::SyncRoot {
                root: self.store.root_hash(),
            },
        });
    }

    /// Step 2 (responder): equal roots end the round in silence; otherwise
    /// answer with every bucket hash.
    pub(super) fn on_sync_root(&self, from: NodeId, root: u64, out: &mut Vec<Output>) {
        if root == self.store.root_hash() {
            return;
        }
        if self.catching_up_with_other(from) {
            debug!("deferring a round from {from:016x}: catching up with another peer");
            return;
        }
        out.push(Output::Send {
            to: from,
            msg: Message::SyncBuckets {
                hashes: self.store.bucket_hashes(),
            },
        });
    }

    /// Step 3 (initiator): send our complete version lists of the buckets
    /// whose hashes differ, whole buckets per message.
    pub(super) fn on_sync_buckets(&self, from: NodeId, theirs: &[u64], out: &mut Vec<Output>) {
        if theirs.len() != BUCKETS {
            debug!(
                "ignoring SyncBuckets from {from:016x}: {} hashes, expected {BUCKETS}",
                theirs.len()
            );
            return;
        }
        let ours = self.store.bucket_hashes();
        let differing = (0..BUCKETS).filter(|&b| ours[b] != theirs[b]).count();
        if differing >= CATCH_UP_BUCKETS {
            self.begin_catch_up(from);
        }
        let mut batch = Batch::new(self.config.max_batch_bytes);
        let send = |buckets, last, out: &mut Vec<Output>| {
            out.push(Output::Send {
                to: from,
                msg: Message::SyncVersions { buckets, last },
            })
        };
        for b in (0..BUCKETS).filter(|&b| ours[b] != theirs[b]) {
            let listing = BucketVersions {
                bucket: b as u16,
                versions: self.store.bucket_versions(b),
            };
            let len = listing.wire_len();
            if let Some(full) = batch.push(listing, len) {
                send(full, false, out);
            }
        }
        // Nothing differs any more when the two stores converged meanwhile.
        if !batch.is_empty() {
            send(batch.take(), true, out);
        }
    }

    /// Step 4 (responder): per listed bucket, push what we hold newer and
    /// request what the initiator holds newer. After the last listing, a
    /// `SyncRequest { last: true }` follows all our pushes.
    pub(super) fn on_sync_versions(
        &self,
        from: NodeId,
        listings: Vec<BucketVersions>,
        last: bool,
        out: &mut Vec<Output>,
    ) {
        let max = self.config.max_batch_bytes;
        let mut push = Batch::new(max);
        let mut want = Batch::new(max);
        let mut pushed = Vec::new();
        let mut wanted = Vec::new();
        for listing in listings {
            let bucket = listing.bucket as usize;
            if bucket >= BUCKETS {
                continue;
            }
            let mut theirs: HashMap<Blob, Version> = listing.versions.into_iter().collect();
            for (key, ours) in self.store.bucket_versions(bucket) {
                match theirs.remove(&key) {
                    Some(v) if v == ours => {}
                    Some(v) if v > ours => {
                        let len = 4 + key.len();
                        wanted.extend(want.push(key, len));
                    }
                    _ => {
                        // The entry may have changed since the listing; send
                        // whatever is current.
                        if let Some(u) = self.current(key) {
                            let len = u.wire_len();
                            pushed.extend(push.push(u, len));
                        }
                    }
                }
            }
            for (key, _) in theirs {
                let len = 4 + key.len();
                wanted.extend(want.push(key, len));
            }
        }
        if !push.is_empty() {
            pushed.push(push.take());
        }
        let rest = want.take();
        if !rest.is_empty() || last {
            wanted.push(rest);
        }
        let n_pushed: usize = pushed.iter().map(Vec::len).sum();
        let n_wanted: usize = wanted.iter().map(Vec::len).sum();
        if n_pushed + n_wanted > 0 {
            debug!("sync with {from:016x}: pushing {n_pushed}, requesting {n_wanted}");
        }
        for entries in pushed {
            out.push(Output::Send {
                to: from,
                msg: Message::SyncEntries(entries),
            });
        }
        let n = wanted.len();
        for (i, keys) in wanted.into_iter().enumerate() {
            out.push(Output::Send {
                to: from,
                msg: Message::SyncRequest {
                    keys,
                    last: last && i + 1 == n,
                },
            });
        }
    }

    /// Step 5 (initiator): answer a request with our current entries; the
    /// `last` request completes our round, which is logged once if it moved
    /// anything.
    pub(super) fn on_sync_request(
        &self,
        from: NodeId,
        keys: Vec<Blob>,
        last: bool,
        out: &mut Vec<Output>,
    ) {
        let mut batch = Batch::new(self.config.max_batch_bytes);
        let mut sent = 0;
        let send = |entries, out: &mut Vec<Output>| {
            out.push(Output::Send {
                to: from,
                msg: Message::SyncEntries(entries),
            })
        };
        for key in keys {
            // A key collected or never held has nothing to send.
            if let Some(u) = self.current(key) {
                let len = u.wire_len();
                sent += 1;
                if let Some(full) = batch.push(u, len) {
                    send(full, out);
                }
            }
        }
        if !batch.is_empty() {
            send(batch.take(), out);
        }
        let mut tallies = self.tallies();
        let Some(tally) = tallies.get_mut(&from) else {
            return;
        };
        tally.sent += sent;
        if last {
            self.end_catch_up(from);
            let Tally { sent, got } = *tally;
            tallies.remove(&from);
            if sent + got > 0 {
                info!("synced with {from:016x}: sent {sent}, got {got}");
            }
        }
    }

    /// Merges entries repaired by anti-entropy. They are not forwarded: every
    /// link runs its own rounds.
    pub(super) fn on_sync_entries(&self, from: NodeId, entries: Vec<Update>) {
        let n = entries.len();
        let mut changed = 0;
        for u in entries {
            if !self.admit(&u) {
                continue;
            }
            let Update {
                key,
                value,
                version,
            } = u;
            if self.store.merge(&key, value, version) {
                changed += 1;
                debug!(
                    "repaired {:?} from {from:016x}",
                    String::from_utf8_lossy(&key)
                );
            }
        }
        bump(&self.counters.repaired, changed);
        if let Some(tally) = self.tallies().get_mut(&from) {
            tally.got += n as u64;
        }
    }
}

/// Items collected into messages of at most `max` payload bytes. An item
/// bigger than `max` gets a message of its own rather than being refused.
struct Batch<T> {
    items: Vec<T>,
    bytes: usize,
    max: usize,
}

impl<T> Batch<T> {
    fn new(max: usize) -> Self {
        Batch {
            items: Vec::new(),
            bytes: 0,
            max,
        }
    }

    /// Adds an item of `len` bytes. When it does not fit, the batch so far is
    /// returned, to be sent first, and the item starts a new one.
    fn push(&mut self, item: T, len: usize) -> Option<Vec<T>> {
        let full = (!self.items.is_empty() && self.bytes + len > self.max).then(|| self.take());
        self.items.push(item);
        self.bytes += len;
        full
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn take(&mut self) -> Vec<T> {
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }
}
