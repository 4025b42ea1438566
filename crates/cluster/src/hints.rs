//! Hinted handoff: the writes a node holds for a replica that was down or
//! did not answer (docs/cluster.md, "Sloppy quorum and hinted handoff").
//!
//! When a write's replica fails, the coordinator sends the record to a
//! fallback node (a member outside the slot's replica list) as a hint for
//! that replica. The fallback keeps it durably in its own small database,
//! next to the store (`<dir>/hints`), and delivers it, as a merge, once
//! gossip says the replica is back; a delivered hint is deleted, and a hint
//! older than the age bound is dropped (anti-entropy repairs what it held).
//!
//! **Owns:** the hints' key layout and bounds, storing one (merged with a
//! hint already held for the same key), listing, deleting and expiring them,
//! and their counters. **Must not touch:** the replica's store (a delivered
//! hint is a merge on the target, through the coordinator), when a node is
//! down (gossip), or sending (the delivery loop lives with the coordinator).
//!
//! Layout: key `[8 target BE][varint db][key]`, value `[8 stored-at ms BE][record]`.
//! Hints for one key and target merge into one (records merge: that is what
//! a version vector is for), so a flapping replica costs one hint per key,
//! not one per write.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use ringkv_engine::{Db, FsyncPolicy, Options, WriteBatch};

use crate::codec::{put_varint, Reader};
use crate::record::Record;
use crate::NodeId;

/// How much a node holds for others (`cluster-hints-max-bytes`, `cluster-hint-max-age`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintLimits {
    /// Bytes of hints (keys and records) this node holds at most; a hint past it is refused
    /// (the write then counts one acknowledgement fewer).
    pub bytes_max: u64,
    /// A hint older than this is dropped undelivered (anti-entropy repairs the replica).
    pub age_max_ms: u64,
}

/// Why a hint was not stored.
#[derive(Debug, thiserror::Error)]
pub enum HintError {
    /// The bytes bound is reached.
    #[error("this node holds {held} bytes of hints, the bound is {max}: hint refused")]
    Full { held: u64, max: u64 },
    /// The hints database failed.
    #[error("hints store: {0}")]
    Store(String),
}

/// One hint held for a target.
#[derive(Debug, Clone)]
pub struct Hint {
    pub db: usize,
    pub key: Bytes,
    pub record: Record,
    pub stored_at_ms: u64,
    /// The stored key and value, to delete exactly this version once delivered.
    raw_key: Bytes,
    raw_value: Bytes,
}

/// Counters and gauges, for metrics and `CLUSTER STATUS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HintStats {
    /// Hints held now (one per target and key).
    pub pending: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Hints stored since start (merges into a held one included).
    pub stored: u64,
    /// Hints delivered to their replica and deleted.
    pub delivered: u64,
    /// Hints dropped past the age bound.
    pub expired: u64,
    /// Hints refused at the bytes bound.
    pub refused: u64,
}

/// The hints this node holds for other nodes.
pub struct Hints {
    db: Db,
    limits: HintLimits,
    /// Serialise a key's read-merge-write against delivery's compare-and-delete, by the
    /// key's stripe: hints for different keys are stored at once (their fsyncs grouped).
    stripes: Vec<Mutex<()>>,
    pending: AtomicU64,
    bytes: AtomicU64,
    stored: AtomicU64,
    delivered: AtomicU64,
    expired: AtomicU64,
    refused: AtomicU64,
}

impl std::fmt::Debug for Hints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hints")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Lock stripes of the hints' keys.
const STRIPES: usize = 64;

fn hint_key(target: NodeId, db: usize, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 2 + key.len());
    out.extend_from_slice(&target.to_be_bytes());
    put_varint(&mut out, db as u64);
    out.extend_from_slice(key);
    out
}

impl Hints {
    /// Opens (or creates) the hints database in `dir`, writing it out as `fsync` says (the
    /// store's policy: a hint acknowledges a write as a replica would).
    pub fn open(dir: &Path, limits: HintLimits, fsync: FsyncPolicy) -> Result<Hints, String> {
        let db = Db::open(
            dir,
            Options {
                fsync,
                memtable_bytes_max: 4 << 20,
                block_cache_bytes: 4 << 20,
                ..Options::default()
            },
        )
        .map_err(|e| format!("opening the hints in {}: {e}", dir.display()))?;
        let hints = Hints {
            db,
            limits,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            pending: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        };
        for entry in hints.db.iter() {
            let entry = entry.map_err(|e| format!("reading the hints: {e}"))?;
            hints.pending.fetch_add(1, Ordering::Relaxed);
            hints.bytes.fetch_add(
                (entry.key.len() + entry.value.len()) as u64,
                Ordering::Relaxed,
            );
        }
        Ok(hints)
    }

    /// Locks the stripes of `raw_keys`, in stripe order (no two callers wait on each other
    /// in a cycle).
    fn lock_stripes<'a>(
        &self,
        raw_keys: impl Iterator<Item = &'a [u8]>,
    ) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = raw_keys
            .map(|key| (xxhash_rust::xxh3::xxh3_64(key) % STRIPES as u64) as usize)
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|i| self.stripes[i].lock())
            .collect()
    }

    /// Stores a hint for `target` of each of `copies` (distinct keys of database `db`),
    /// each merged with what is held for its key, all in one write: durable (as the
    /// store's policy says) when it returns, all or none. Refused whole past the bytes bound.
    pub fn store_many(
        &self,
        target: NodeId,
        db: usize,
        copies: &[(&[u8], Record)],
        now_ms: u64,
    ) -> Result<(), HintError> {
        let store = |e: ringkv_engine::Error| HintError::Store(e.to_string());
        let raw_keys: Vec<Vec<u8>> = copies
            .iter()
            .map(|(key, _)| hint_key(target, db, key))
            .collect();
        let _guards = self.lock_stripes(raw_keys.iter().map(|k| &k[..]));
        let mut batch = WriteBatch::with_capacity(copies.len());
        let (mut added, mut removed, mut new_keys) = (0u64, 0u64, 0u64);
        for (raw_key, (_, record)) in raw_keys.into_iter().zip(copies) {
            let merged = match self.db.get(&raw_key).map_err(store)? {
                Some(entry) => {
                    let (_, old) = decode_value(&entry.value)
                        .map_err(|e| HintError::Store(format!("a damaged hint: {e}")))?;
                    removed += (entry.key.len() + entry.value.len()) as u64;
                    old.merge(record)
                }
                None => {
                    new_keys += 1;
                    record.clone()
                }
            };
            let mut value = now_ms.to_be_bytes().to_vec();
            value.extend_from_slice(&merged.encode());
            added += (raw_key.len() + value.len()) as u64;
            batch.put(Bytes::from(raw_key), Bytes::from(value), None);
        }
        let held = self.bytes.load(Ordering::Relaxed);
        if added > removed && held + (added - removed) > self.limits.bytes_max {
            self.refused
                .fetch_add(copies.len() as u64, Ordering::Relaxed);
            return Err(HintError::Full {
                held,
                max: self.limits.bytes_max,
            });
        }
        self.db.write(batch).map_err(store)?;
        self.pending.fetch_add(new_keys, Ordering::Relaxed);
        self.bytes.fetch_add(added, Ordering::Relaxed);
        self.bytes.fetch_sub(removed, Ordering::Relaxed);
        self.stored
            .fetch_add(copies.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The nodes this node holds hints for.
    pub fn targets(&self) -> Vec<NodeId> {
        let mut targets = Vec::new();
        let mut from = Vec::new();
        loop {
            let Some(Ok(entry)) = self.db.range(from.clone()..).next() else {
                return targets;
            };
            let Some(target) = entry.key.get(..8) else {
                return targets;
            };
            let target = u64::from_be_bytes(target.try_into().expect("8 bytes"));
            targets.push(target);
            match target.checked_add(1) {
                Some(next) => from = next.to_be_bytes().to_vec(),
                None => return targets,
            }
        }
    }

    /// Up to `limit` hints held for `target`, in key order.
    pub fn for_target(&self, target: NodeId, limit: usize) -> Result<Vec<Hint>, String> {
        let from = target.to_be_bytes().to_vec();
        let mut out = Vec::new();
        for entry in self.db.range(from..) {
            let entry = entry.map_err(|e| format!("reading the hints: {e}"))?;
            if !entry.key.starts_with(&target.to_be_bytes()) || out.len() >= limit {
                break;
            }
            let mut reader = Reader::new(&entry.key[8..]);
            let Ok(db) = reader.varint() else { continue };
            let key = Bytes::copy_from_slice(reader.bytes(reader.remaining()).unwrap_or(&[]));
            let Ok((stored_at_ms, record)) = decode_value(&entry.value) else {
                tracing::warn!(target, "a damaged hint is dropped");
                self.remove_raw(&[(&entry.key, &entry.value)]);
                continue;
            };
            out.push(Hint {
                db: db as usize,
                key,
                record,
                stored_at_ms,
                raw_key: entry.key,
                raw_value: entry.value,
            });
        }
        Ok(out)
    }

    /// `hints` reached their replica: deleted, those a newer write merged into meanwhile
    /// excepted (they go next pass). One write for all.
    pub fn delivered(&self, hints: &[Hint]) {
        let removed = self.remove_unchanged(hints);
        self.delivered.fetch_add(removed, Ordering::Relaxed);
    }

    /// Drops the hints older than the age bound at `now_ms` from `hints` (deleted from the
    /// store, counted as expired) and returns the rest.
    pub fn expire_old(&self, hints: Vec<Hint>, now_ms: u64) -> Vec<Hint> {
        let (old, young): (Vec<Hint>, Vec<Hint>) = hints
            .into_iter()
            .partition(|hint| now_ms.saturating_sub(hint.stored_at_ms) > self.limits.age_max_ms);
        if !old.is_empty() {
            let removed = self.remove_unchanged(&old);
            self.expired.fetch_add(removed, Ordering::Relaxed);
        }
        young
    }

    /// Drops every hint for `target` (it left the cluster). Returns how many.
    pub fn forget(&self, target: NodeId) -> usize {
        let hints = self.for_target(target, usize::MAX).unwrap_or_default();
        let removed = self.remove_unchanged(&hints);
        self.expired.fetch_add(removed, Ordering::Relaxed);
        hints.len()
    }

    /// Deletes each of `hints` still stored as listed, in one write; how many.
    fn remove_unchanged(&self, hints: &[Hint]) -> u64 {
        let raw: Vec<(&Bytes, &Bytes)> = hints.iter().map(|h| (&h.raw_key, &h.raw_value)).collect();
        self.remove_raw(&raw)
    }

    /// Deletes each stored (key, value) still stored with that value, in one write; how many.
    fn remove_raw(&self, raw: &[(&Bytes, &Bytes)]) -> u64 {
        let _guards = self.lock_stripes(raw.iter().map(|(key, _)| &key[..]));
        let mut batch = WriteBatch::with_capacity(raw.len());
        let (mut count, mut bytes) = (0u64, 0u64);
        for &(key, value) in raw {
            if matches!(self.db.get(key), Ok(Some(entry)) if entry.value == value) {
                batch.delete(key.clone());
                count += 1;
                bytes += (key.len() + value.len()) as u64;
            }
        }
        if count == 0 {
            return 0;
        }
        if let Err(error) = self.db.write(batch) {
            tracing::warn!(%error, "could not delete hints");
            return 0;
        }
        self.pending.fetch_sub(count, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        count
    }

    /// The counters and gauges.
    pub fn stats(&self) -> HintStats {
        HintStats {
            pending: self.pending.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

fn decode_value(value: &[u8]) -> Result<(u64, Record), String> {
    let (at, record) = value
        .split_at_checked(8)
        .ok_or_else(|| "short hint".to_string())?;
    let at = u64::from_be_bytes(at.try_into().expect("8 bytes"));
    Ok((at, Record::decode(record).map_err(|e| e.to_string())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use crate::record::{Body, Sibling};

    fn store(
        hints: &Hints,
        target: NodeId,
        db: usize,
        key: &[u8],
        record: &Record,
        now_ms: u64,
    ) -> Result<(), HintError> {
        hints.store_many(target, db, &[(key, record.clone())], now_ms)
    }

    fn record(node: NodeId, value: &[u8], at: u64) -> Record {
        let sibling = Sibling {
            hlc: Hlc::new(at, 0),
            node,
            expires_at_ms: None,
            body: Body::Value(Bytes::copy_from_slice(value)),
        };
        Record::empty().write(None, sibling, node)
    }

    #[test]
    fn hints_merge_per_key_survive_a_reopen_and_are_deleted_once_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let limits = HintLimits {
            bytes_max: 1 << 20,
            age_max_ms: 60_000,
        };
        let hints = Hints::open(dir.path(), limits, FsyncPolicy::Always).unwrap();
        store(&hints, 7, 0, b"k1", &record(1, b"a", 10), 1_000).unwrap();
        store(&hints, 7, 0, b"k1", &record(2, b"b", 11), 1_001).unwrap();
        store(&hints, 7, 3, b"k2", &record(1, b"c", 12), 1_002).unwrap();
        store(&hints, 9, 0, b"k1", &record(1, b"d", 13), 1_003).unwrap();
        assert_eq!(hints.stats().pending, 3);
        drop(hints);

        let hints = Hints::open(dir.path(), limits, FsyncPolicy::Always).unwrap();
        assert_eq!(hints.stats().pending, 3);
        assert_eq!(hints.targets(), vec![7, 9]);
        let held = hints.for_target(7, 100).unwrap();
        assert_eq!(held.len(), 2);
        assert_eq!((held[0].db, &held[0].key[..]), (0, &b"k1"[..]));
        assert_eq!(held[0].record.sibling_count(), 2, "both writes, merged");
        assert_eq!((held[1].db, &held[1].key[..]), (3, &b"k2"[..]));

        // A write merged in after the listing keeps the hint for the next pass.
        store(&hints, 7, 0, b"k1", &record(3, b"e", 14), 1_004).unwrap();
        hints.delivered(std::slice::from_ref(&held[0]));
        hints.delivered(std::slice::from_ref(&held[1]));
        assert_eq!(hints.stats().delivered, 1);
        let left = hints.for_target(7, 100).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].record.sibling_count(), 3);
        hints.delivered(&left);
        assert_eq!(hints.targets(), vec![9]);
        assert_eq!(hints.forget(9), 1);
        assert_eq!(hints.stats().pending, 0);
        assert_eq!(hints.stats().bytes, 0);
    }

    #[test]
    fn hints_past_the_bytes_bound_are_refused_and_old_ones_expire() {
        let dir = tempfile::tempdir().unwrap();
        let limits = HintLimits {
            bytes_max: 200,
            age_max_ms: 1_000,
        };
        let hints = Hints::open(dir.path(), limits, FsyncPolicy::No).unwrap();
        let mut refused = 0;
        for i in 0..20 {
            let key = format!("key-{i}");
            if let Err(HintError::Full { .. }) = store(
                &hints,
                1,
                0,
                key.as_bytes(),
                &record(2, &[b'x'; 30], i),
                5_000,
            ) {
                refused += 1;
            }
        }
        assert!(refused > 0 && refused < 20, "refused {refused} of 20");
        assert!(hints.stats().bytes <= 200);
        assert_eq!(hints.stats().refused, refused);
        let held = hints.for_target(1, 100).unwrap();
        assert_eq!(
            hints.expire_old(held.clone(), 5_500).len(),
            held.len(),
            "young"
        );
        let first = held[0].clone();
        assert!(hints.expire_old(vec![first], 6_001).is_empty(), "old");
        assert_eq!(hints.stats().expired, 1);
        assert_eq!(hints.stats().pending as usize, held.len() - 1);
        // A batch stored whole or refused whole at the bound.
        let batch: Vec<(&[u8], Record)> = vec![
            (&b"batch-a"[..], record(2, &[b'y'; 60], 1)),
            (&b"batch-b"[..], record(2, &[b'y'; 60], 2)),
        ];
        let before = hints.stats().pending;
        assert!(matches!(
            hints.store_many(1, 0, &batch, 5_000),
            Err(HintError::Full { .. })
        ));
        assert_eq!(hints.stats().pending, before, "nothing of a refused batch");
    }
}
