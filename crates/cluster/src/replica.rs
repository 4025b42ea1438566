//! A replica's side of the data plane: keeping records (`record.rs`) in the
//! local store, one atomic read-modify-write per event. docs/cluster.md,
//! "Records".
//!
//! **Owns:** how a record is stored (value type `Record`, the envelope's HLC
//! and context as its summary, the store's expiry as the record's storage
//! expiry), reading a key as a record (a string written before the node
//! joined a cluster reads as a record of one sibling), and the sibling cap on
//! events. **Must not touch:** the network, the slot map, RESP.
//!
//! Every function is synchronous and may wait on the disk: the transport's
//! handler runs it on the blocking pool.

use bytes::Bytes;
use ringkv_store::value::encode_enveloped;
use ringkv_store::{Envelope, Keyspace, StoredValue, ValueType};

use crate::aae::Trees;
use crate::counter::RequestId;
use crate::dvv::VersionVector;
use crate::hlc::Hlc;
use crate::record::{Body, IncrementError, Incremented, Record, Resolved, Sibling};
use crate::{key_slot, DecodeError, NodeId};

/// How long a tombstone is kept after a delete, by default: long enough for
/// every replica to learn of the delete (hinted handoff, read repair,
/// anti-entropy) before the store may drop it. Cassandra's `gc_grace_seconds`
/// default is the same ten days.
pub const DEFAULT_TOMBSTONE_GRACE_MS: u64 = 10 * 24 * 3600 * 1000;

/// Why a replica refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The store failed (the engine's error inside).
    #[error(transparent)]
    Store(#[from] ringkv_store::Error),
    /// A stored record does not decode.
    #[error("damaged record: {0}")]
    Damaged(#[from] DecodeError),
    /// An increment was refused.
    #[error(transparent)]
    Increment(#[from] IncrementError),
    /// The write would leave more siblings than the cap.
    #[error("too many siblings ({count}, cap {cap}): resolve them with a versioned write")]
    TooManySiblings { count: usize, cap: usize },
}

/// One node's store, seen as records.
#[derive(Debug, Clone, Copy)]
pub struct Replica<'a> {
    keyspace: &'a Keyspace,
    node: NodeId,
    sibling_cap: usize,
    tombstone_grace_ms: u64,
    /// Anti-entropy's trees, kept current by every stored record (`aae.rs`).
    trees: Option<&'a Trees>,
}

impl<'a> Replica<'a> {
    /// `node` is this node's id: the dot of every event it runs.
    pub fn new(
        keyspace: &'a Keyspace,
        node: NodeId,
        sibling_cap: usize,
        tombstone_grace_ms: u64,
    ) -> Self {
        Replica {
            keyspace,
            node,
            sibling_cap,
            tombstone_grace_ms,
            trees: None,
        }
    }

    /// Keeps `trees` current with every record this replica stores.
    pub fn with_trees(mut self, trees: &'a Trees) -> Self {
        self.trees = Some(trees);
        self
    }

    /// The record at `key` (empty when there is none).
    pub fn read(&self, db: usize, key: &[u8]) -> Result<Record, ReplicaError> {
        let stored = self.keyspace.get(db, key)?;
        self.record_of(stored.as_ref())
    }

    /// A write event: `body` with its expiry, under `context` (`None`: a
    /// blind write that supersedes what this replica has seen). Returns the
    /// record now stored, for the coordinator to send to the other replicas.
    pub fn write(
        &self,
        db: usize,
        key: &[u8],
        context: Option<&VersionVector>,
        body: Body,
        expires_at_ms: Option<u64>,
        hlc: Hlc,
    ) -> Result<Record, ReplicaError> {
        self.write_noting_live(db, key, context, body, expires_at_ms, hlc)
            .map(|(record, _)| record)
    }

    /// [`Replica::write`], also saying whether this copy held a live value before it (DEL's
    /// count), judged under the same key lock as the write.
    pub fn write_noting_live(
        &self,
        db: usize,
        key: &[u8],
        context: Option<&VersionVector>,
        body: Body,
        expires_at_ms: Option<u64>,
        hlc: Hlc,
    ) -> Result<(Record, bool), ReplicaError> {
        let sibling = Sibling {
            hlc,
            node: self.node,
            expires_at_ms,
            body,
        };
        let now_ms = self.keyspace.now_ms();
        self.event(db, key, |local| {
            let live = !matches!(local.resolve(now_ms), Ok(Resolved::Absent));
            let record = local.write(context, sibling, self.node);
            if record.sibling_count() > self.sibling_cap {
                return Err(ReplicaError::TooManySiblings {
                    count: record.sibling_count(),
                    cap: self.sibling_cap,
                });
            }
            Ok((Some(record.clone()), (record, live)))
        })
    }

    /// An increment event (INCR, DECR, INCRBY): see [`Record::increment`].
    pub fn increment(
        &self,
        db: usize,
        key: &[u8],
        delta: i64,
        request_id: RequestId,
        hlc: Hlc,
    ) -> Result<Incremented, ReplicaError> {
        self.event(db, key, |local| {
            let done = local.increment(delta, request_id, hlc, self.node)?;
            let write = done.applied.then(|| done.record.clone());
            Ok((write, done))
        })
    }

    /// Write events on several distinct keys (MSET within one slot), stored in one engine
    /// batch: this replica holds all of them or none. Each is a blind write of its body, as
    /// [`Replica::write`] with no context, stamped `hlc`. Returns each key's record and
    /// whether it held a live value before, in order.
    pub fn write_many(
        &self,
        db: usize,
        writes: &[(&[u8], Body, Option<u64>)],
        hlc: Hlc,
    ) -> Result<Vec<(Record, bool)>, ReplicaError> {
        let now_ms = self.keyspace.now_ms();
        let keys: Vec<&[u8]> = writes.iter().map(|(key, _, _)| *key).collect();
        self.events(db, &keys, |i, local| {
            let (_, body, expires_at_ms) = &writes[i];
            let live = !matches!(local.resolve(now_ms), Ok(Resolved::Absent));
            let sibling = Sibling {
                hlc,
                node: self.node,
                expires_at_ms: *expires_at_ms,
                body: body.clone(),
            };
            let record = local.write(None, sibling, self.node);
            Ok((Some(record.clone()), (record, live)))
        })
    }

    /// Merges several keys' copies in one engine batch (the other replicas' side of
    /// [`Replica::write_many`]).
    pub fn merge_many(&self, db: usize, copies: &[(&[u8], Record)]) -> Result<(), ReplicaError> {
        let keys: Vec<&[u8]> = copies.iter().map(|(key, _)| *key).collect();
        self.events(db, &keys, |i, local| {
            let merged = self.merged(copies[i].0, local, &copies[i].1);
            let write = (&merged != local).then_some(merged);
            Ok((write, ()))
        })?;
        Ok(())
    }

    /// Merges another replica's copy into this one's (replication of an
    /// event, read repair, handoff). Returns the merged record.
    pub fn merge(&self, db: usize, key: &[u8], incoming: &Record) -> Result<Record, ReplicaError> {
        self.event(db, key, |local| {
            let merged = self.merged(key, local, incoming);
            let write = (&merged != local).then(|| merged.clone());
            Ok((write, merged))
        })
    }

    /// `local` merged with `incoming`. A copy from elsewhere that knows more of this node's
    /// own events on the key than its local copy does means this node's store no longer
    /// has events it issued: writes lost (a power cut under `everysec`), or a record
    /// dropped after its tombstone grace while another replica still held it. Its next
    /// event on the key may then have reused one of their dots, which merging cannot tell
    /// apart. Logged, as the sign of such a loss (docs/cluster.md, "Records").
    fn merged(&self, key: &[u8], local: &Record, incoming: &Record) -> Record {
        let (mine, known) = (
            local.context().get(self.node),
            incoming.context().get(self.node),
        );
        if known > mine {
            tracing::warn!(
                key = %String::from_utf8_lossy(key),
                held = mine,
                known,
                ?local,
                ?incoming,
                "a copy knows events of this node that its own copy lost"
            );
        }
        local.merge(incoming)
    }

    /// Reads the record at `key`, lets `change` decide, and stores what it
    /// returns, atomically for the key (the store's key lock).
    fn event<R>(
        &self,
        db: usize,
        key: &[u8],
        change: impl FnOnce(&Record) -> Result<(Option<Record>, R), ReplicaError>,
    ) -> Result<R, ReplicaError> {
        let now_ms = self.keyspace.now_ms();
        let mut stored_change = None;
        let (result, _seq) = self.keyspace.update(db, key, |stored| {
            let local = self.record_of(stored)?;
            let (write, result) = change(&local)?;
            let write = write.map(|record| {
                let expiry = record.storage_expiry(now_ms, self.tombstone_grace_ms);
                (stored_form(&record), expiry)
            });
            if let (Some(_), Some((new, _))) = (self.trees, &write) {
                stored_change = Some((stored.map(|old| old.raw.clone()), new.clone()));
            }
            Ok::<_, ReplicaError>((write, result))
        })?;
        if let (Some(trees), Some((old, new))) = (self.trees, stored_change) {
            trees.update(key_slot(key), db, key, old.as_deref(), Some(&new));
        }
        Ok(result)
    }

    /// [`Replica::event`] on several distinct keys, committed as one batch.
    fn events<R>(
        &self,
        db: usize,
        keys: &[&[u8]],
        mut change: impl FnMut(usize, &Record) -> Result<(Option<Record>, R), ReplicaError>,
    ) -> Result<Vec<R>, ReplicaError> {
        let now_ms = self.keyspace.now_ms();
        let mut stored_changes = Vec::new();
        let (results, _seq) = self.keyspace.update_many(db, keys, |i, stored| {
            let local = self.record_of(stored)?;
            let (write, result) = change(i, &local)?;
            let write = write.map(|record| {
                let expiry = record.storage_expiry(now_ms, self.tombstone_grace_ms);
                (stored_form(&record), expiry)
            });
            if let (Some(_), Some((new, _))) = (self.trees, &write) {
                stored_changes.push((i, stored.map(|old| old.raw.clone()), new.clone()));
            }
            Ok::<_, ReplicaError>((write, result))
        })?;
        if let Some(trees) = self.trees {
            for (i, old, new) in stored_changes {
                trees.update(key_slot(keys[i]), db, keys[i], old.as_deref(), Some(&new));
            }
        }
        Ok(results)
    }

    /// A stored value (as the store lists it) as a record.
    pub fn record_of_stored(&self, stored: &StoredValue) -> Result<Record, ReplicaError> {
        self.record_of(Some(stored))
    }

    /// A stored value as a record. A string from before the node was in a
    /// cluster is one sibling with this node's dot and the oldest stamp, so
    /// any write of the cluster wins over it.
    fn record_of(&self, stored: Option<&StoredValue>) -> Result<Record, ReplicaError> {
        match stored {
            None => Ok(Record::empty()),
            Some(value) if value.value_type == ValueType::Record => {
                Ok(Record::decode(&value.payload())?)
            }
            Some(value) => Ok(Record::empty().write(
                None,
                Sibling {
                    hlc: Hlc(0),
                    node: self.node,
                    expires_at_ms: value.expires_at_ms,
                    body: Body::Value(value.payload()),
                },
                self.node,
            )),
        }
    }
}

/// A record as the store keeps it: value type `Record`, the newest sibling's
/// HLC and the record's context in the envelope (a summary readable without
/// decoding the siblings), the record's encoding as the payload.
fn stored_form(record: &Record) -> Bytes {
    let envelope = Envelope {
        hlc: record.siblings().map(|s| s.hlc.0).max(),
        context: Some(Bytes::from(record.context().encode())),
    };
    encode_enveloped(ValueType::Record, &envelope, &record.encode())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ringkv_engine::{Db, Options};
    use ringkv_store::ManualClock;

    use super::*;
    use crate::record::Resolved;

    const NOW: u64 = 1_700_000_000_000;

    fn open(dir: &std::path::Path, clock: Arc<ManualClock>) -> Keyspace {
        let options = Options {
            clock,
            ..Options::default()
        };
        Keyspace::open(Db::open(dir, options).unwrap(), false, None).unwrap()
    }

    fn value(text: &str) -> Body {
        Body::Value(Bytes::from(text.to_string()))
    }

    fn resolved(replica: &Replica<'_>, key: &[u8]) -> Resolved {
        replica.read(0, key).unwrap().resolve(NOW).unwrap()
    }

    fn string(text: &str) -> Resolved {
        Resolved::Value {
            value: Bytes::from(text.to_string()),
            expires_at_ms: None,
        }
    }

    #[test]
    fn writes_are_stored_as_records_and_concurrent_ones_meet_as_siblings() {
        let clock = Arc::new(ManualClock::new(NOW));
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (store_a, store_b) = (open(dir_a.path(), clock.clone()), open(dir_b.path(), clock));
        let a = Replica::new(&store_a, 1, 100, DEFAULT_TOMBSTONE_GRACE_MS);
        let b = Replica::new(&store_b, 2, 100, DEFAULT_TOMBSTONE_GRACE_MS);
        let first = a
            .write(0, b"k", None, value("1"), None, Hlc::new(NOW, 0))
            .unwrap();
        b.merge(0, b"k", &first).unwrap();
        assert_eq!(resolved(&b, b"k"), string("1"));
        // Concurrent blind writes through each replica.
        let at_a = a
            .write(0, b"k", None, value("a"), None, Hlc::new(NOW + 1, 0))
            .unwrap();
        let at_b = b
            .write(0, b"k", None, value("b"), None, Hlc::new(NOW + 2, 0))
            .unwrap();
        let merged_a = a.merge(0, b"k", &at_b).unwrap();
        let merged_b = b.merge(0, b"k", &at_a).unwrap();
        assert_eq!(merged_a, merged_b);
        assert_eq!(merged_a.sibling_count(), 2);
        assert_eq!(resolved(&a, b"k"), string("b"));
        // The stored value is a record, its envelope summarising it.
        let stored = store_a.get(0, b"k").unwrap().unwrap();
        assert_eq!(stored.value_type, ValueType::Record);
        let decoded = ringkv_store::value::decode_value(&stored.raw).unwrap();
        assert_eq!(decoded.envelope.hlc, Some(Hlc::new(NOW + 2, 0).0));
        assert_eq!(
            VersionVector::decode(&decoded.envelope.context.unwrap()).unwrap(),
            merged_a.context()
        );
        // A versioned write with the merged context resolves the siblings.
        let context = merged_a.context();
        a.write(
            0,
            b"k",
            Some(&context),
            value("ab"),
            None,
            Hlc::new(NOW + 3, 0),
        )
        .unwrap();
        assert_eq!(a.read(0, b"k").unwrap().sibling_count(), 1);
        assert_eq!(resolved(&a, b"k"), string("ab"));
    }

    #[test]
    fn concurrent_increments_on_one_replica_issue_distinct_dots_and_sum_exactly() {
        let clock = Arc::new(ManualClock::new(NOW));
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), clock);
        let threads = 8u64;
        let each = 200u64;
        std::thread::scope(|scope| {
            for t in 0..threads {
                let store = &store;
                scope.spawn(move || {
                    let replica = Replica::new(store, 7, 100, DEFAULT_TOMBSTONE_GRACE_MS);
                    for i in 0..each {
                        let id = RequestId::from(t * 1_000_000 + i);
                        let hlc = Hlc::new(NOW + i, t as u16);
                        replica.increment(0, b"n", 1, id, hlc).unwrap();
                    }
                });
            }
        });
        let replica = Replica::new(&store, 7, 100, DEFAULT_TOMBSTONE_GRACE_MS);
        let record = replica.read(0, b"n").unwrap();
        assert_eq!(record.sibling_count(), 1);
        assert_eq!(
            record.resolve(NOW).unwrap(),
            Resolved::Counter {
                value: (threads * each) as i64,
                expires_at_ms: None
            }
        );
        // A retried request changes nothing (within the window of recent ids a node keeps,
        // counter.rs: the ids of the first increments above are forgotten by now).
        let id = RequestId::MAX;
        let once = replica
            .increment(0, b"n", 1, id, Hlc::new(NOW + 5000, 0))
            .unwrap();
        let again = replica
            .increment(0, b"n", 1, id, Hlc::new(NOW + 5001, 0))
            .unwrap();
        assert!(once.applied && !again.applied);
        assert_eq!(again.value, (threads * each) as i64 + 1);
    }

    #[test]
    fn a_string_from_before_the_cluster_reads_as_a_record_and_any_cluster_write_wins() {
        let clock = Arc::new(ManualClock::new(NOW));
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), clock);
        store.set_string(0, b"old", b"41", None).unwrap();
        let replica = Replica::new(&store, 3, 100, DEFAULT_TOMBSTONE_GRACE_MS);
        assert_eq!(resolved(&replica, b"old"), string("41"));
        let done = replica
            .increment(0, b"old", 1, 1, Hlc::new(NOW, 0))
            .unwrap();
        assert_eq!(done.value, 42);
        replica
            .write(0, b"old", None, value("x"), None, Hlc::new(1, 0))
            .unwrap();
        assert_eq!(resolved(&replica, b"old"), string("x"));
    }

    #[test]
    fn a_tombstone_stays_for_its_grace_period_then_the_store_drops_it() {
        let clock = Arc::new(ManualClock::new(NOW));
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), clock.clone());
        let replica = Replica::new(&store, 1, 100, 60_000);
        let written = replica
            .write(0, b"k", None, value("v"), None, Hlc::new(NOW, 0))
            .unwrap();
        replica
            .write(0, b"k", None, Body::Tombstone, None, Hlc::new(NOW + 1, 0))
            .unwrap();
        assert_eq!(resolved(&replica, b"k"), Resolved::Absent);
        // Within the grace period an old copy merged in does not bring the value back.
        replica.merge(0, b"k", &written).unwrap();
        assert_eq!(resolved(&replica, b"k"), Resolved::Absent);
        assert_eq!(store.dbsize(0), 1, "the tombstone is kept");
        clock.advance(60_002);
        assert!(
            store.get(0, b"k").unwrap().is_none(),
            "dropped after the grace"
        );
    }

    #[test]
    fn a_write_past_the_sibling_cap_is_refused_and_changes_nothing() {
        let clock = Arc::new(ManualClock::new(NOW));
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), clock);
        let replica = Replica::new(&store, 1, 2, DEFAULT_TOMBSTONE_GRACE_MS);
        // Two siblings from two other replicas' concurrent writes.
        for node in [8, 9] {
            let branch = Record::empty().write(
                None,
                Sibling {
                    hlc: Hlc::new(NOW, 0),
                    node,
                    expires_at_ms: None,
                    body: value(&node.to_string()),
                },
                node,
            );
            replica.merge(0, b"k", &branch).unwrap();
        }
        let before = replica.read(0, b"k").unwrap();
        assert_eq!(before.sibling_count(), 2);
        // A write with an empty context supersedes neither: three siblings, over the cap.
        let refused = replica.write(
            0,
            b"k",
            Some(&VersionVector::new()),
            value("x"),
            None,
            Hlc::new(NOW + 1, 0),
        );
        assert!(
            matches!(
                refused,
                Err(ReplicaError::TooManySiblings { count: 3, cap: 2 })
            ),
            "{refused:?}"
        );
        assert_eq!(replica.read(0, b"k").unwrap(), before);
    }
}
