//! The key-value map: versioned values and tombstones, sharded into buckets.
//!
//! The store knows nothing of the network. It keeps, for every key, the value
//! (or a tombstone) and the [`Version`] that wrote it, and it merges writes by
//! last-writer-wins: a write is applied only when its version is higher than
//! the one already stored. That single rule makes merging idempotent,
//! commutative and associative, so replicas may receive updates in any order,
//! any number of times, and still agree.
//!
//! The map is split into [`BUCKETS`] shards. Each shard has its own lock, so
//! clients on different keys rarely contend, and each shard keeps a running
//! hash of its `(key, version)` pairs. Those per-bucket hashes are the digest
//! that anti-entropy compares: two replicas whose bucket hashes match hold the
//! same entries in that bucket. The locks are `std` locks on purpose: every
//! critical section is a hash-map operation, and nothing waits while holding
//! one.

use hashbrown::HashMap;
use hashbrown::hash_map::EntryRef;
use std::sync::RwLock;

use crate::blob::Blob;

/// Identifies a node; random at start.
pub type NodeId = u64;

/// Number of shards, which is also the number of digest buckets.
///
/// Fixed for the protocol: every node must place a key in the same bucket.
pub const BUCKETS: usize = 1024;

/// The version of a write: a hybrid logical clock timestamp, then the writer's
/// node id to break ties. Ordered by `(ts, node)`, so the higher version is the
/// later write and wins a conflict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Hybrid logical clock reading (see [`crate::replication::hlc`]).
    pub ts: u64,
    /// The node that made the write.
    pub node: NodeId,
}

/// A stored value, or a tombstone left by a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `None` is a tombstone: the key was deleted by `version`.
    pub value: Option<Blob>,
    /// The write that produced this entry.
    pub version: Version,
}

impl Entry {
    /// True when this entry records a delete.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// What a conditional local write decided to do with a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Store this value.
    Set(Blob),
    /// Delete the key (leave a tombstone).
    Delete,
}

/// Counts kept per shard and summed on demand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Keys with a live value.
    pub keys: usize,
    /// Keys whose entry is a tombstone.
    pub tombstones: usize,
}

/// One shard: its part of the map, and what the digest needs to know of it.
///
/// Keys and values are [`Blob`]s, so a short key and its short value live in
/// the map's own 64-byte slot: a write to such a key touches no other heap
/// memory (see the `blob` module for why this matters).
#[derive(Default)]
struct Shard {
    map: HashMap<Blob, Entry>,
    sum: Summary,
}

const _: () = assert!(size_of::<(Blob, Entry)>() == 64);

/// What a shard keeps about its entries besides the entries themselves,
/// updated as entries come and go. Kept apart from the map so that both can
/// be borrowed at once while an entry is replaced in place.
#[derive(Default)]
struct Summary {
    /// XOR of [`entry_hash`] over every entry in the shard.
    hash: u64,
    tombstones: usize,
}

impl Summary {
    fn add(&mut self, key_hash: u64, entry: &Entry) {
        self.hash ^= entry_hash(key_hash, entry);
        self.tombstones += entry.is_tombstone() as usize;
    }

    fn remove(&mut self, key_hash: u64, entry: &Entry) {
        self.hash ^= entry_hash(key_hash, entry);
        self.tombstones -= entry.is_tombstone() as usize;
    }
}

/// The sharded, versioned key-value map. Share it behind an `Arc`.
///
/// # Example
/// ```
/// use piccolo::store::{Store, Version};
///
/// let store = Store::new();
/// store.merge(b"k", Some(b"new".into()), Version { ts: 2, node: 1 });
/// // An older write that arrives late changes nothing: last writer wins.
/// assert!(!store.merge(b"k", Some(b"old".into()), Version { ts: 1, node: 9 }));
/// assert_eq!(store.get(b"k"), Some(b"new".into()));
/// // A delete is a newer write that leaves a tombstone.
/// store.merge(b"k", None, Version { ts: 3, node: 2 });
/// assert_eq!(store.get(b"k"), None);
/// assert_eq!(store.stats().tombstones, 1);
/// ```
pub struct Store {
    shards: Box<[RwLock<Shard>]>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Store {
            shards: (0..BUCKETS).map(|_| RwLock::default()).collect(),
        }
    }

    /// The shard of a key, and the key's hash (which picks the shard and
    /// feeds the digest).
    fn shard(&self, key: &[u8]) -> (&RwLock<Shard>, u64) {
        let key_hash = key_hash(key);
        (&self.shards[bucket_of_hash(key_hash)], key_hash)
    }

    /// Calls `f` with the live value of `key`, or `None` when it is absent or
    /// deleted. The shard stays read-locked during `f`, so keep `f` short: it
    /// exists so a reply can be copied straight out of the map.
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let shard = read(self.shard(key).0);
        f(shard.map.get(key).and_then(|e| e.value.as_deref()))
    }

    /// A copy of the live value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Blob> {
        self.entry(key)?.value
    }

    /// The entry for `key`, tombstones included.
    pub fn entry(&self, key: &[u8]) -> Option<Entry> {
        read(self.shard(key).0).map.get(key).cloned()
    }

    /// Merges a write by last-writer-wins. Returns true when it changed the
    /// store, that is when `version` is higher than the stored one.
    pub fn merge(&self, key: &[u8], value: Option<Blob>, version: Version) -> bool {
        let (lock, key_hash) = self.shard(key);
        let mut guard = write(lock);
        let Shard { map, sum } = &mut *guard;
        let entry = Entry { value, version };
        match map.entry_ref(key) {
            EntryRef::Occupied(mut slot) => {
                if slot.get().version >= version {
                    return false;
                }
                sum.remove(key_hash, slot.get());
                sum.add(key_hash, &entry);
                *slot.get_mut() = entry;
            }
            EntryRef::Vacant(slot) => {
                sum.add(key_hash, &entry);
                slot.insert_with_key(key.into(), entry);
            }
        }
        true
    }

    /// A read-modify-write on one key, atomic with respect to every other
    /// access to that key. `decide` sees the live value and returns the change
    /// to make, if any; the change is written with `version`, which the caller
    /// took from its clock and which must be higher than any version the store
    /// holds. Returns what `decide` returned, and the entry written, if any.
    pub fn update<R>(
        &self,
        key: &[u8],
        version: Version,
        decide: impl FnOnce(Option<&[u8]>) -> (Option<Change>, R),
    ) -> (R, Option<Entry>) {
        self.update_with(key, |_| version, decide, true)
    }

    /// Like [`Store::update`], but the version is chosen while the key is
    /// locked: `version` gets the stored version, if any, and returns the one
    /// to write, which must be higher. Taking the clock reading inside the
    /// lock closes a race: a reading taken before it could be overtaken by a
    /// peer's newer write merged in between, and the local write would then
    /// go in with a lower version than the value it replaces. With `copy`,
    /// a copy of the entry written is returned (to send to peers); without,
    /// the value is moved into the map and nothing is returned.
    pub fn update_with<R>(
        &self,
        key: &[u8],
        version: impl FnOnce(Option<Version>) -> Version,
        decide: impl FnOnce(Option<&[u8]>) -> (Option<Change>, R),
        copy: bool,
    ) -> (R, Option<Entry>) {
        let (lock, key_hash) = self.shard(key);
        let mut guard = write(lock);
        let Shard { map, sum } = &mut *guard;
        let slot = map.entry_ref(key);
        let current = match &slot {
            EntryRef::Occupied(o) => Some(o.get()),
            EntryRef::Vacant(_) => None,
        };
        let version = version(current.map(|e| e.version));
        debug_assert!(current.is_none_or(|e| e.version < version));
        let (change, answer) = decide(current.and_then(|e| e.value.as_deref()));
        let entry = match change {
            None => return (answer, None),
            Some(Change::Set(v)) => Entry {
                value: Some(v),
                version,
            },
            Some(Change::Delete) => Entry {
                value: None,
                version,
            },
        };
        sum.add(key_hash, &entry);
        let copied = copy.then(|| entry.clone());
        match slot {
            EntryRef::Occupied(mut o) => {
                sum.remove(key_hash, o.get());
                *o.get_mut() = entry;
            }
            EntryRef::Vacant(v) => {
                v.insert_with_key(key.into(), entry);
            }
        }
        (answer, copied)
    }

    /// The digest hash of every bucket, indexed by bucket.
    pub fn bucket_hashes(&self) -> Vec<u64> {
        self.shards.iter().map(|s| read(s).sum.hash).collect()
    }

    /// One hash summarising the whole store: equal roots mean (with
    /// overwhelming probability) equal stores.
    pub fn root_hash(&self) -> u64 {
        self.shards
            .iter()
            .fold(K1, |h, s| fmix(h ^ read(s).sum.hash).wrapping_add(K1))
    }

    /// Every entry of one bucket, tombstones included, as `(key, entry)`.
    pub fn bucket_entries(&self, bucket: usize) -> Vec<(Blob, Entry)> {
        read(&self.shards[bucket])
            .map
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    /// The version stored for every key of one bucket.
    pub fn bucket_versions(&self, bucket: usize) -> Vec<(Blob, Version)> {
        read(&self.shards[bucket])
            .map
            .iter()
            .map(|(k, e)| (k.clone(), e.version))
            .collect()
    }

    /// Removes tombstones whose version timestamp is below `before_ts`.
    /// Returns how many were removed.
    pub fn collect_tombstones(&self, before_ts: u64) -> usize {
        let mut removed = 0;
        for lock in self.shards.iter() {
            if read(lock).sum.tombstones == 0 {
                continue;
            }
            let mut guard = write(lock);
            let Shard { map, sum } = &mut *guard;
            map.retain(|key, e| {
                let dead = e.is_tombstone() && e.version.ts < before_ts;
                if dead {
                    sum.remove(key_hash(key), e);
                    removed += 1;
                }
                !dead
            });
        }
        removed
    }

    /// Live keys and tombstones.
    pub fn stats(&self) -> StoreStats {
        let mut stats = StoreStats::default();
        for lock in self.shards.iter() {
            let s = read(lock);
            stats.tombstones += s.sum.tombstones;
            stats.keys += s.map.len() - s.sum.tombstones;
        }
        stats
    }

    /// Calls `f` for every live key, bucket by bucket, starting at `bucket`,
    /// until `f` returns false. Returns the bucket after the last one visited
    /// completely, or `None` when every bucket was visited: a resumable cursor
    /// for SCAN-like walks. Each bucket is locked only while it is visited.
    pub fn scan_live(&self, bucket: usize, mut f: impl FnMut(&[u8]) -> bool) -> Option<usize> {
        for b in bucket..BUCKETS {
            let shard = read(&self.shards[b]);
            let mut more = true;
            for (k, e) in shard.map.iter() {
                if e.value.is_some() {
                    more &= f(k);
                }
            }
            if !more {
                return (b + 1 < BUCKETS).then_some(b + 1);
            }
        }
        None
    }
}

/// The bucket (and shard) a key belongs to. Stable across processes and
/// versions: it is part of the replication protocol.
pub fn bucket_of(key: &[u8]) -> usize {
    bucket_of_hash(key_hash(key))
}

fn bucket_of_hash(key_hash: u64) -> usize {
    (key_hash % BUCKETS as u64) as usize
}

/// A key's stable hash, the same in every process and on every platform: it
/// picks the key's bucket, so it is part of the replication protocol. It
/// reads the key eight bytes at a time, then mixes the result (the final step
/// of MurmurHash3), so every bit of the key reaches the low bits that pick
/// the bucket. Not keyed: the maps inside the shards use a randomly seeded
/// hash of their own, so crafted keys can crowd a bucket but cannot degrade
/// a lookup.
fn key_hash(key: &[u8]) -> u64 {
    let mut h = (key.len() as u64).wrapping_mul(K1);
    let mut words = key.chunks_exact(8);
    for w in &mut words {
        h = (h ^ u64::from_le_bytes(w.try_into().expect("8 bytes"))).wrapping_mul(K2);
        h ^= h >> 29;
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut w = [0; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K2);
    }
    fmix(h)
}

const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xff51_afd7_ed55_8ccd;

/// MurmurHash3's 64-bit finaliser: every input bit affects every output bit.
fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The contribution of one entry to its bucket's digest hash, from its key's
/// hash, its version and whether it is a tombstone.
fn entry_hash(key_hash: u64, entry: &Entry) -> u64 {
    let mut h = key_hash;
    for word in [
        entry.version.ts,
        entry.version.node,
        entry.is_tombstone() as u64,
    ] {
        h = (h ^ word).wrapping_mul(K2);
        h ^= h >> 33;
    }
    h
}

/// Locks for reading. A poisoned shard still holds a consistent map (every
/// mutation completes before anything that could panic), so poison is ignored.
fn read(lock: &RwLock<Shard>) -> std::sync::RwLockReadGuard<'_, Shard> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write(lock: &RwLock<Shard>) -> std::sync::RwLockWriteGuard<'_, Shard> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ts: u64, node: NodeId) -> Version {
        Version { ts, node }
    }

    #[test]
    fn higher_version_wins_in_any_order() {
        let a = Store::new();
        let b = Store::new();
        a.merge(b"k", Some(b"old".into()), v(1, 1));
        a.merge(b"k", Some(b"new".into()), v(2, 1));
        b.merge(b"k", Some(b"new".into()), v(2, 1));
        assert!(!b.merge(b"k", Some(b"old".into()), v(1, 1)));
        assert_eq!(a.get(b"k"), Some(b"new".into()));
        assert_eq!(b.get(b"k"), Some(b"new".into()));
        assert_eq!(a.root_hash(), b.root_hash());
    }

    #[test]
    fn node_id_breaks_timestamp_ties() {
        let s = Store::new();
        s.merge(b"k", Some(b"from-2".into()), v(5, 2));
        assert!(!s.merge(b"k", Some(b"from-1".into()), v(5, 1)));
        assert_eq!(s.get(b"k"), Some(b"from-2".into()));
    }

    #[test]
    fn merge_is_idempotent() {
        let s = Store::new();
        assert!(s.merge(b"k", Some(b"x".into()), v(3, 1)));
        let h = s.root_hash();
        assert!(!s.merge(b"k", Some(b"x".into()), v(3, 1)));
        assert_eq!(s.root_hash(), h);
    }

    #[test]
    fn tombstone_hides_value_and_beats_older_writes() {
        let s = Store::new();
        s.merge(b"k", Some(b"x".into()), v(1, 1));
        s.merge(b"k", None, v(2, 1));
        assert_eq!(s.get(b"k"), None);
        assert!(!s.merge(b"k", Some(b"late".into()), v(1, 9)));
        assert_eq!(s.get(b"k"), None);
        assert_eq!(
            s.stats(),
            StoreStats {
                keys: 0,
                tombstones: 1
            }
        );
    }

    #[test]
    fn digest_tracks_contents_not_history() {
        let a = Store::new();
        let b = Store::new();
        a.merge(b"k", Some(b"1".into()), v(1, 1));
        a.merge(b"k", Some(b"2".into()), v(2, 1));
        b.merge(b"k", Some(b"2".into()), v(2, 1));
        assert_eq!(a.bucket_hashes(), b.bucket_hashes());
        b.merge(b"j", Some(b"3".into()), v(3, 1));
        assert_ne!(a.root_hash(), b.root_hash());
        let differing: Vec<usize> = a
            .bucket_hashes()
            .iter()
            .zip(b.bucket_hashes())
            .enumerate()
            .filter(|(_, (x, y))| *x != y)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(differing, vec![bucket_of(b"j")]);
    }

    #[test]
    fn update_sees_current_value_and_reports_the_write() {
        let s = Store::new();
        s.merge(b"k", Some(b"ab".into()), v(1, 1));
        let (old, written) = s.update(b"k", v(2, 1), |cur| {
            let mut next = cur.unwrap().to_vec();
            next.extend_from_slice(b"cd");
            (Some(Change::Set(next.into())), cur.map(<[u8]>::len))
        });
        assert_eq!(old, Some(2));
        assert_eq!(written.unwrap().value, Some(b"abcd".into()));
        let (_, none) = s.update(b"k", v(3, 1), |_| (None, ()));
        assert!(none.is_none());
        assert_eq!(s.entry(b"k").unwrap().version, v(2, 1));
    }

    #[test]
    fn tombstones_are_collected_after_grace() {
        let s = Store::new();
        s.merge(b"old", None, v(10, 1));
        s.merge(b"new", None, v(100, 1));
        s.merge(b"live", Some(b"x".into()), v(1, 1));
        let before = s.root_hash();
        assert_eq!(s.collect_tombstones(50), 1);
        assert_ne!(s.root_hash(), before);
        assert!(s.entry(b"old").is_none());
        assert!(s.entry(b"new").is_some());
        assert_eq!(
            s.stats(),
            StoreStats {
                keys: 1,
                tombstones: 1
            }
        );
    }

    #[test]
    fn scan_visits_every_live_key_once() {
        let s = Store::new();
        for i in 0..500u32 {
            s.merge(i.to_string().as_bytes(), Some(b"1".into()), v(1, 1));
        }
        s.merge(b"gone", None, v(2, 1));
        let mut seen = Vec::new();
        let mut cursor = Some(0);
        while let Some(c) = cursor {
            let mut n = 0;
            cursor = s.scan_live(c, |k| {
                seen.push(k.to_vec());
                n += 1;
                n < 10
            });
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 500);
    }

    #[test]
    fn bucket_placement_is_part_of_the_protocol() {
        // Every node must put a key in the same bucket, whatever its build:
        // if this changes, bump the wire protocol version.
        let placed: Vec<usize> = [&b""[..], b"a", b"user:42", b"key:000000012345"]
            .iter()
            .map(|k| bucket_of(k))
            .collect();
        assert_eq!(placed, [0, 227, 404, 94]);
        assert_eq!(bucket_of(b"a long key that spans several words"), 965);
    }

    #[test]
    fn similar_keys_spread_over_all_buckets() {
        let mut count = vec![0usize; BUCKETS];
        for i in 0..100_000 {
            count[bucket_of(format!("key:{i:012}").as_bytes())] += 1;
        }
        // About 98 per bucket; a poor mix leaves buckets empty or crowded.
        let (min, max) = (count.iter().min().unwrap(), count.iter().max().unwrap());
        assert!(*min > 50 && *max < 150, "bucket sizes from {min} to {max}");
    }
}
