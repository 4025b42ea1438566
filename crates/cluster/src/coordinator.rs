//! The data plane between nodes: the replica's side of each internode data
//! request, and the coordinator that sends a client's operation to a slot's
//! replicas and gathers W acknowledgements or R copies (docs/cluster.md,
//! "Coordinator").
//!
//! **Owns:** the data request kinds and their encodings, the event replica
//! rule, the order of a write (event on one replica, its record merged into
//! the others), read repair of replicas a read found behind, and the errors
//! that say how many replicas answered. **Must not touch:** RESP, the
//! command table, the value types of the single node (the server turns
//! [`Resolved`] into replies), or how peers are reached ([`Peers`]: the
//! transport in a server, a simulated network in tests).
//!
//! The decisions are the I/O-free rounds of `quorum.rs`; this module only
//! fans requests out and feeds the replies in.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use ringkv_store::Keyspace;
use tokio::sync::mpsc;

use crate::codec::{put_varint, Reader};
use crate::counter::RequestId;
use crate::dvv::VersionVector;
use crate::hlc::{self, Hlc};
use crate::map::ClusterMap;
use crate::quorum::{Progress, QuorumError, ReadRound, WriteRound};
use crate::record::{Body, IncrementError, Record};
use crate::replica::{Replica, ReplicaError};
use crate::transport::BoxFuture;
use crate::{key_slot, DecodeError, NodeId};

/// Internode request kinds of the data plane.
pub const DATA_KINDS: RangeInclusive<u8> = 1..=15;
/// A replica's copy of a key: `[varint db][key]` → the record's encoding.
pub const KIND_READ: u8 = 1;
/// A write event on the event replica: see [`WriteEvent`] → `[u8 existed][record]`.
pub const KIND_WRITE: u8 = 2;
/// An increment event: `[varint db][varint key len][key][varint zigzag delta][16 request id]`
/// → `[u8 applied][8 value][record]`.
pub const KIND_INCREMENT: u8 = 3;
/// Merge a copy: `[varint db][varint key len][key][record]` → empty.
pub const KIND_MERGE: u8 = 4;

/// How a coordinator reaches the other nodes.
pub trait Peers: Send + Sync + 'static {
    /// Sends one data request of `kind` to `node`; its reply's payload, or why it failed.
    fn call(
        &self,
        node: NodeId,
        kind: u8,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, String>>;
}

/// The quorum a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    /// Copies that must answer a read.
    pub r: usize,
    /// Acknowledgements a write waits for.
    pub w: usize,
}

/// Why a coordinated operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// Too few replicas answered: how many of how many.
    #[error("{0}")]
    Quorum(QuorumError),
    /// The event replica refused or failed the event.
    #[error("{0}")]
    Event(String),
    /// The increment was refused (not an integer, overflow).
    #[error(transparent)]
    Increment(IncrementError),
    /// This node has no cluster map yet.
    #[error("the cluster map is not known yet")]
    NoMap,
}

/// A write event: what the event replica writes, under which context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteEvent {
    pub db: usize,
    pub key: Bytes,
    /// The context the value supersedes (`None`: what the event replica has seen).
    pub context: Option<VersionVector>,
    pub body: Body,
    pub expires_at_ms: Option<u64>,
}

/// The outcome of a coordinated write.
#[derive(Debug, Clone)]
pub struct Written {
    /// Whether the event replica held a live value before the write.
    pub existed: bool,
    /// Replicas that acknowledged.
    pub acked: usize,
}

/// One node's data plane: its store seen as records, its clock, and the way
/// to its peers.
pub struct DataNode {
    me: NodeId,
    keyspace: Arc<Keyspace>,
    clock: Mutex<hlc::Clock>,
    sibling_cap: usize,
    tombstone_grace_ms: u64,
    peers: Arc<dyn Peers>,
    timeout: Duration,
    /// A drill (`DEBUG CLUSTER-PAUSE-REPLICATION`): writes stop at their event replica.
    replication_paused: AtomicBool,
}

impl std::fmt::Debug for DataNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataNode")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl DataNode {
    /// A data node `me` over `keyspace`; `timeout` bounds each round.
    pub fn new(
        me: NodeId,
        keyspace: Arc<Keyspace>,
        sibling_cap: usize,
        tombstone_grace_ms: u64,
        peers: Arc<dyn Peers>,
        timeout: Duration,
    ) -> Self {
        Self {
            me,
            keyspace,
            clock: Mutex::new(hlc::Clock::default()),
            sibling_cap,
            tombstone_grace_ms,
            peers,
            timeout,
            replication_paused: AtomicBool::new(false),
        }
    }

    /// Stops (or resumes) sending this node's write events to the other replicas: with W=1
    /// the writes succeed on their event replica alone, so writes through two coordinators
    /// become siblings on demand (tests, drills).
    pub fn pause_replication(&self, paused: bool) {
        self.replication_paused.store(paused, Ordering::Relaxed);
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    fn replica(&self) -> Replica<'_> {
        Replica::new(
            &self.keyspace,
            self.me,
            self.sibling_cap,
            self.tombstone_grace_ms,
        )
    }

    fn stamp(&self) -> Hlc {
        self.clock.lock().now(self.keyspace.now_ms())
    }

    /// Answers one data request (the replica's side). Synchronous and may
    /// wait on the disk: run it on the blocking pool. Writes are synced
    /// before the reply, so an acknowledgement is as durable as a local write.
    pub fn answer(&self, kind: u8, payload: &[u8]) -> Result<Bytes, String> {
        let replica = self.replica();
        let text = |e: ReplicaError| e.to_string();
        let reply = match kind {
            KIND_READ => {
                let (db, key) = decode_key(&mut Reader::new(payload)).map_err(|e| e.to_string())?;
                Bytes::from(replica.read(db, key).map_err(text)?.encode())
            }
            KIND_WRITE => {
                let event = WriteEvent::decode(payload).map_err(|e| e.to_string())?;
                let (existed, record) = self.write_here(&event)?;
                let mut out = vec![u8::from(existed)];
                out.extend_from_slice(&record.encode());
                self.sync()?;
                Bytes::from(out)
            }
            KIND_INCREMENT => {
                let mut reader = Reader::new(payload);
                let (db, key) = decode_key(&mut reader).map_err(|e| e.to_string())?;
                let delta = unzigzag(reader.varint().map_err(|e| e.to_string())?);
                let request_id = reader.u128_le().map_err(|e| e.to_string())?;
                reader.finish().map_err(|e| e.to_string())?;
                let done = replica
                    .increment(db, key, delta, request_id, self.stamp())
                    .map_err(text)?;
                let mut out = vec![u8::from(done.applied)];
                out.extend_from_slice(&done.value.to_be_bytes());
                out.extend_from_slice(&done.record.encode());
                self.sync()?;
                Bytes::from(out)
            }
            KIND_MERGE => {
                let mut reader = Reader::new(payload);
                let (db, key) = decode_key(&mut reader).map_err(|e| e.to_string())?;
                let rest = reader
                    .bytes(reader.remaining())
                    .map_err(|e| e.to_string())?;
                let incoming = Record::decode(rest).map_err(|e| e.to_string())?;
                replica.merge(db, key, &incoming).map_err(text)?;
                self.sync()?;
                Bytes::new()
            }
            other => return Err(format!("unknown data request kind {other}")),
        };
        Ok(reply)
    }

    fn sync(&self) -> Result<(), String> {
        self.keyspace
            .engine()
            .sync(self.keyspace.last_sequence())
            .map_err(|e| e.to_string())
    }

    /// The write event on this node: (held a live value before, record after), one read
    /// under the key lock.
    fn write_here(&self, event: &WriteEvent) -> Result<(bool, Record), String> {
        let (record, existed) = self
            .replica()
            .write_noting_live(
                event.db,
                &event.key,
                event.context.as_ref(),
                event.body.clone(),
                event.expires_at_ms,
                self.stamp(),
            )
            .map_err(|e| e.to_string())?;
        Ok((existed, record))
    }

    /// Sends a request to `node`: run here on the blocking pool when it is
    /// this node, else through [`Peers`].
    fn send(
        self: &Arc<Self>,
        node: NodeId,
        kind: u8,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, String>> {
        if node == self.me {
            let this = self.clone();
            Box::pin(async move {
                tokio::task::spawn_blocking(move || this.answer(kind, &payload))
                    .await
                    .map_err(|e| format!("local replica task failed: {e}"))?
            })
        } else {
            self.peers.call(node, kind, payload, self.timeout)
        }
    }

    /// The event replica of a slot: this node when it holds a copy, else the
    /// first replica in preference order.
    fn event_replica(&self, replicas: &[NodeId]) -> NodeId {
        if replicas.contains(&self.me) {
            self.me
        } else {
            replicas[0]
        }
    }

    /// Reads `key` from its replicas: the merge of the first R copies. The
    /// replicas that answered with an older copy get the merge (read repair);
    /// so do those that answer after the quorum, if behind.
    pub async fn read(
        self: &Arc<Self>,
        map: &ClusterMap,
        db: usize,
        key: &Bytes,
        quorum: Quorum,
    ) -> Result<Record, CoordError> {
        let replicas = map.replicas(key_slot(key)).to_vec();
        let r = quorum.r.clamp(1, replicas.len());
        let payload = encode_key(db, key);
        let (tx, mut rx) = mpsc::channel(replicas.len());
        for &node in &replicas {
            let call = self.send(node, KIND_READ, payload.clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                let copy = call.await.and_then(|bytes| {
                    Record::decode(&bytes).map_err(|e| format!("damaged copy: {e}"))
                });
                let _ = tx.send((node, copy)).await;
            });
        }
        drop(tx);
        let mut round = ReadRound::new(replicas, r);
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let progress = loop {
            let next = tokio::select! {
                next = rx.recv() => next,
                () = &mut deadline => break round.on_timeout(),
            };
            let progress = match next {
                Some((node, Ok(copy))) => round.on_reply(node, copy),
                Some((node, Err(error))) => {
                    tracing::debug!(node, %error, "read from a replica failed");
                    round.on_failure(node)
                }
                None => round.on_timeout(),
            };
            if progress != Progress::Pending {
                break progress;
            }
        };
        match progress {
            Progress::Failed(error) => Err(CoordError::Quorum(error)),
            _ => {
                let merged = round.merged();
                for node in round.stale() {
                    self.repair(node, db, key, &merged);
                }
                Ok(merged)
            }
        }
    }

    /// Sends `record` to `node` to merge, without waiting (read repair).
    fn repair(self: &Arc<Self>, node: NodeId, db: usize, key: &Bytes, record: &Record) {
        let call = self.send(node, KIND_MERGE, encode_merge(db, key, record));
        tokio::spawn(async move {
            if let Err(error) = call.await {
                tracing::debug!(node, %error, "read repair failed");
            }
        });
    }

    /// A write: the event on the event replica, then its record merged into
    /// the other replicas; succeeds at W acknowledgements, the event
    /// replica's included.
    pub async fn write(
        self: &Arc<Self>,
        map: &ClusterMap,
        event: WriteEvent,
        quorum: Quorum,
    ) -> Result<Written, CoordError> {
        let replicas = map.replicas(key_slot(&event.key)).to_vec();
        let event_node = self.event_replica(&replicas);
        let reply = self
            .send(event_node, KIND_WRITE, event.encode())
            .await
            .map_err(CoordError::Event)?;
        let (&existed, record) = reply
            .split_first()
            .ok_or_else(|| CoordError::Event("empty write reply".into()))?;
        let record = Record::decode(record)
            .map_err(|e| CoordError::Event(format!("damaged write reply: {e}")))?;
        let acked = self
            .replicate(
                &replicas, event_node, event.db, &event.key, &record, quorum.w,
            )
            .await?;
        Ok(Written {
            existed: existed != 0,
            acked,
        })
    }

    /// An increment: the counter event on the event replica, merged into the
    /// others; the value after it as the event replica saw it.
    pub async fn increment(
        self: &Arc<Self>,
        map: &ClusterMap,
        db: usize,
        key: &Bytes,
        delta: i64,
        request_id: RequestId,
        quorum: Quorum,
    ) -> Result<i64, CoordError> {
        let replicas = map.replicas(key_slot(key)).to_vec();
        let event_node = self.event_replica(&replicas);
        let mut payload = BytesMut::from(&encode_key(db, key)[..]);
        let mut tail = Vec::new();
        put_varint(&mut tail, zigzag(delta));
        tail.extend_from_slice(&request_id.to_le_bytes());
        payload.put_slice(&tail);
        let reply = self
            .send(event_node, KIND_INCREMENT, payload.freeze())
            .await
            .map_err(|message| {
                if message == IncrementError::NotInteger.to_string() {
                    CoordError::Increment(IncrementError::NotInteger)
                } else {
                    CoordError::Event(message)
                }
            })?;
        if reply.len() < 9 {
            return Err(CoordError::Event("short increment reply".into()));
        }
        let value = i64::from_be_bytes(reply[1..9].try_into().expect("8 bytes"));
        let record = Record::decode(&reply[9..])
            .map_err(|e| CoordError::Event(format!("damaged increment reply: {e}")))?;
        self.replicate(&replicas, event_node, db, key, &record, quorum.w)
            .await?;
        Ok(value)
    }

    /// Merges `record` into every replica but `done` (which holds it) and
    /// waits for W acknowledgements in all, `done`'s included.
    async fn replicate(
        self: &Arc<Self>,
        replicas: &[NodeId],
        done: NodeId,
        db: usize,
        key: &Bytes,
        record: &Record,
        w: usize,
    ) -> Result<usize, CoordError> {
        let mut round = WriteRound::new(replicas.to_vec(), w.clamp(1, replicas.len()));
        if round.on_ack(done) == Progress::Succeeded && replicas.len() == 1 {
            return Ok(1);
        }
        let payload = encode_merge(db, key, record);
        let (tx, mut rx) = mpsc::channel(replicas.len());
        let paused = self.replication_paused.load(Ordering::Relaxed);
        for &node in replicas.iter().filter(|&&node| node != done && !paused) {
            let call = self.send(node, KIND_MERGE, payload.clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send((node, call.await)).await;
            });
        }
        drop(tx);
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let mut progress = if w <= 1 {
            Progress::Succeeded
        } else {
            Progress::Pending
        };
        while progress == Progress::Pending {
            let next = tokio::select! {
                next = rx.recv() => next,
                () = &mut deadline => { progress = round.on_timeout(); break; }
            };
            progress = match next {
                Some((node, Ok(_))) => round.on_ack(node),
                Some((node, Err(error))) => {
                    tracing::debug!(node, %error, "replicating a write failed");
                    round.on_failure(node)
                }
                None => round.on_timeout(),
            };
        }
        match progress {
            Progress::Failed(error) => Err(CoordError::Quorum(error)),
            _ => Ok(round.acked().len()),
        }
    }
}

impl WriteEvent {
    // Format: [varint db][varint key len][key][u8 flags: 1 context, 2 expiry]
    //   [varint context len][context]? [varint expiry]? [u8 body: 0 tombstone, 1 value, 2 counter][body bytes]
    /// The request's encoding.
    pub fn encode(&self) -> Bytes {
        let mut out = encode_key(self.db, &self.key).to_vec();
        let flags =
            u8::from(self.context.is_some()) | (u8::from(self.expires_at_ms.is_some()) << 1);
        out.push(flags);
        if let Some(context) = &self.context {
            let bytes = context.encode();
            put_varint(&mut out, bytes.len() as u64);
            out.extend_from_slice(&bytes);
        }
        if let Some(at) = self.expires_at_ms {
            put_varint(&mut out, at);
        }
        match &self.body {
            Body::Tombstone => out.push(0),
            Body::Value(value) => {
                out.push(1);
                out.extend_from_slice(value);
            }
            Body::Counter(state) => {
                out.push(2);
                out.extend_from_slice(state);
            }
        }
        Bytes::from(out)
    }

    /// Decodes [`WriteEvent::encode`]'s output. Never panics.
    pub fn decode(input: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(input);
        let (db, key) = decode_key(&mut reader)?;
        let key = Bytes::copy_from_slice(key);
        let flags = reader.u8()?;
        if flags & !3 != 0 {
            return Err(DecodeError::Invalid("unknown write flags"));
        }
        let context = if flags & 1 != 0 {
            let len = reader.varint()? as usize;
            Some(VersionVector::decode(reader.bytes(len)?)?)
        } else {
            None
        };
        let expires_at_ms = if flags & 2 != 0 {
            Some(reader.varint()?)
        } else {
            None
        };
        let tag = reader.u8()?;
        let rest = Bytes::copy_from_slice(reader.bytes(reader.remaining())?);
        let body = match tag {
            0 if rest.is_empty() => Body::Tombstone,
            1 => Body::Value(rest),
            2 => Body::Counter(rest),
            _ => return Err(DecodeError::Invalid("unknown write body")),
        };
        Ok(Self {
            db,
            key,
            context,
            body,
            expires_at_ms,
        })
    }
}

/// Databases a request may name (Redis' 16).
const DB_COUNT: u64 = 16;

fn encode_key(db: usize, key: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(key.len() + 4);
    put_varint(&mut out, db as u64);
    put_varint(&mut out, key.len() as u64);
    out.extend_from_slice(key);
    Bytes::from(out)
}

fn encode_merge(db: usize, key: &[u8], record: &Record) -> Bytes {
    let mut out = encode_key(db, key).to_vec();
    out.extend_from_slice(&record.encode());
    Bytes::from(out)
}

fn decode_key<'a>(reader: &mut Reader<'a>) -> Result<(usize, &'a [u8]), DecodeError> {
    let db = reader.varint()?;
    if db >= DB_COUNT {
        return Err(DecodeError::Invalid("database out of range"));
    }
    let len = reader.varint()? as usize;
    Ok((db as usize, reader.bytes(len)?))
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zigzag_round_trips_the_extremes() {
        for value in [0, 1, -1, i64::MAX, i64::MIN, 42, -42] {
            assert_eq!(unzigzag(zigzag(value)), value);
        }
    }

    #[test]
    fn write_events_round_trip() {
        let event = WriteEvent {
            db: 3,
            key: Bytes::from_static(b"user:{1}"),
            context: Some(VersionVector::from_pairs([(1, 2), (7, 1)])),
            body: Body::Value(Bytes::from_static(b"v")),
            expires_at_ms: Some(1_700_000_000_000),
        };
        assert_eq!(WriteEvent::decode(&event.encode()).unwrap(), event);
        let tombstone = WriteEvent {
            context: None,
            body: Body::Tombstone,
            expires_at_ms: None,
            ..event
        };
        assert_eq!(WriteEvent::decode(&tombstone.encode()).unwrap(), tombstone);
    }

    proptest! {
        #[test]
        fn write_event_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = WriteEvent::decode(&bytes);
        }
    }
}
