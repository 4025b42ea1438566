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
use parking_lot::Mutex;
use ringkv_engine::{Db, FsyncPolicy, Options};

use crate::codec::{put_varint, Reader};
use crate::record::Record;
use crate::NodeId;

/// How much a node holds for others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintLimits {
    /// Bytes of hints (keys and records) this node holds at most; a hint past it is refused
    /// (the write then counts one acknowledgement fewer).
    pub bytes_max: u64,
    /// A hint older than this is dropped undelivered (anti-entropy repairs the replica).
    pub age_max_ms: u64,
}

impl Default for HintLimits {
    fn default() -> Self {
        Self {
            bytes_max: 256 << 20,
            age_max_ms: 3 * 60 * 60 * 1000,
        }
    }
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
    /// Serialises a key's read-merge-write against delivery's compare-and-delete.
    lock: Mutex<()>,
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
            lock: Mutex::new(()),
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

    /// Stores `record` for `target`, merged with what is held for that key already.
    /// Durable (as the store's policy says) when it returns.
    pub fn store(
        &self,
        target: NodeId,
        db: usize,
        key: &[u8],
        record: &Record,
        now_ms: u64,
    ) -> Result<(), HintError> {
        let store = |e: ringkv_engine::Error| HintError::Store(e.to_string());
        let raw_key = hint_key(target, db, key);
        let _guard = self.lock.lock();
        let held = self.db.get(&raw_key).map_err(store)?;
        let (merged, old_len) = match &held {
            Some(entry) => {
                let old = decode_value(&entry.value)
                    .map(|(_, r)| r)
                    .map_err(|e| HintError::Store(format!("a damaged hint: {e}")))?;
                (old.merge(record), entry.key.len() + entry.value.len())
            }
            None => (record.clone(), 0),
        };
        let mut value = now_ms.to_be_bytes().to_vec();
        value.extend_from_slice(&merged.encode());
        let new_len = raw_key.len() + value.len();
        let held_bytes = self.bytes.load(Ordering::Relaxed);
        if new_len > old_len && held_bytes + (new_len - old_len) as u64 > self.limits.bytes_max {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(HintError::Full {
                held: held_bytes,
                max: self.limits.bytes_max,
            });
        }
        self.db.put(&raw_key, &value, None).map_err(store)?;
        if held.is_none() {
            self.pending.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes.fetch_add(new_len as u64, Ordering::Relaxed);
        self.bytes.fetch_sub(old_len as u64, Ordering::Relaxed);
        self.stored.fetch_add(1, Ordering::Relaxed);
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
                self.remove_if_unchanged(&entry.key, &entry.value);
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

    /// `hint` reached its replica: deleted, unless a newer write merged into it meanwhile
    /// (that one is delivered next pass).
    pub fn delivered(&self, hint: &Hint) {
        if self.remove_if_unchanged(&hint.raw_key, &hint.raw_value) {
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// True (and dropped) when `hint` is older than the age bound at `now_ms`.
    pub fn expire_if_old(&self, hint: &Hint, now_ms: u64) -> bool {
        if now_ms.saturating_sub(hint.stored_at_ms) <= self.limits.age_max_ms {
            return false;
        }
        if self.remove_if_unchanged(&hint.raw_key, &hint.raw_value) {
            self.expired.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Drops every hint for `target` (it left the cluster). Returns how many.
    pub fn forget(&self, target: NodeId) -> usize {
        let hints = self.for_target(target, usize::MAX).unwrap_or_default();
        for hint in &hints {
            if self.remove_if_unchanged(&hint.raw_key, &hint.raw_value) {
                self.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
        hints.len()
    }

    fn remove_if_unchanged(&self, raw_key: &[u8], raw_value: &[u8]) -> bool {
        let _guard = self.lock.lock();
        match self.db.get(raw_key) {
            Ok(Some(entry)) if entry.value == raw_value => {
                if let Err(error) = self.db.delete(raw_key) {
                    tracing::warn!(%error, "could not delete a hint");
                    return false;
                }
                self.pending.fetch_sub(1, Ordering::Relaxed);
                self.bytes
                    .fetch_sub((raw_key.len() + raw_value.len()) as u64, Ordering::Relaxed);
                true
            }
            _ => false,
        }
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
        let limits = HintLimits::default();
        let hints = Hints::open(dir.path(), limits, FsyncPolicy::Always).unwrap();
        hints
            .store(7, 0, b"k1", &record(1, b"a", 10), 1_000)
            .unwrap();
        hints
            .store(7, 0, b"k1", &record(2, b"b", 11), 1_001)
            .unwrap();
        hints
            .store(7, 3, b"k2", &record(1, b"c", 12), 1_002)
            .unwrap();
        hints
            .store(9, 0, b"k1", &record(1, b"d", 13), 1_003)
            .unwrap();
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
        hints
            .store(7, 0, b"k1", &record(3, b"e", 14), 1_004)
            .unwrap();
        hints.delivered(&held[0]);
        hints.delivered(&held[1]);
        assert_eq!(hints.stats().delivered, 1);
        let left = hints.for_target(7, 100).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].record.sibling_count(), 3);
        hints.delivered(&left[0]);
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
            if let Err(HintError::Full { .. }) =
                hints.store(1, 0, key.as_bytes(), &record(2, &[b'x'; 30], i), 5_000)
            {
                refused += 1;
            }
        }
        assert!(refused > 0 && refused < 20, "refused {refused} of 20");
        assert!(hints.stats().bytes <= 200);
        assert_eq!(hints.stats().refused, refused);
        let held = hints.for_target(1, 100).unwrap();
        assert!(!hints.expire_if_old(&held[0], 5_500));
        assert!(hints.expire_if_old(&held[0], 6_001));
        assert_eq!(hints.stats().expired, 1);
        assert_eq!(hints.stats().pending as usize, held.len() - 1);
    }
}
