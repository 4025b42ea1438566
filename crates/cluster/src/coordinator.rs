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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use parking_lot::{Mutex, RwLock};
use ringkv_store::Keyspace;

use crate::aae::Trees;
use crate::codec::{put_varint, Reader};
use crate::counter::RequestId;
use crate::dvv::VersionVector;
use crate::exchange::{KIND_AAE_KEYS, KIND_AAE_ROOTS, KIND_AAE_SEGMENTS};
use crate::hints::Hints;
use crate::hlc::{self, Hlc};
use crate::map::ClusterMap;
use crate::quorum::{ChangeRound, Progress, QuorumError, ReadRound};
use crate::record::{Body, IncrementError, Record, Resolved};
use crate::replica::{Replica, ReplicaError};
use crate::transfer::{TransferStats, KIND_STREAM};
use crate::transport::BoxFuture;
use crate::{key_slot, DecodeError, NodeId};

/// Internode request kinds of the data plane.
pub const DATA_KINDS: RangeInclusive<u8> = 1..=15;
/// A replica's copy of a key: `[varint db][key]` → the record's encoding.
pub const KIND_READ: u8 = 1;
/// A write event on the event replica: see [`WriteEvent`] → `[u8 existed][record]`.
pub const KIND_WRITE: u8 = 2;
/// An increment event: `[varint db][varint key len][key][varint zigzag delta][16 request id]`
/// `[varint coordinator's HLC]?` → `[u8 applied][8 value][record]`.
pub const KIND_INCREMENT: u8 = 3;
/// Merge a copy: `[varint db][varint key len][key][record]` → empty.
pub const KIND_MERGE: u8 = 4;
/// Blind write events on distinct keys of one slot, stored as one batch (MSET within a
/// slot): `[varint count]` then per key `[varint len][WriteEvent]`, every event of one
/// database, without a context → per key `[u8 existed][varint len][record]`.
pub const KIND_WRITE_MANY: u8 = 5;
/// Merge several copies as one batch: `[varint db][varint count]` then per key
/// `[varint key len][key][varint record len][record]` → empty.
pub const KIND_MERGE_MANY: u8 = 6;

/// A hint for a replica that failed (sloppy quorum): `[varint target]` then a
/// [`KIND_MERGE`] payload → empty, once the hint is durable on this (fallback) node.
pub const KIND_HINT: u8 = 7;
/// Hints for several keys: `[varint target]` then a [`KIND_MERGE_MANY`] payload → empty.
pub const KIND_HINT_MANY: u8 = 8;

/// How a [`Peers::call`] error starts when the request never left this node (the
/// transport's `CallError::ConnectFailed`): it did not run, so another replica may run it.
pub const NOT_REACHED: &str = "connect failed";

/// Most hints one delivery pass sends to one node.
const HINTS_PER_PASS: usize = 1024;
/// Hint deliveries in flight to one node.
const HINTS_IN_FLIGHT: usize = 32;
/// Times one write follows its slot to a newer placement before it gives up (each is a
/// committed membership change during the write).
const PLACEMENT_RETRIES: usize = 4;

/// Most keys in one [`KIND_WRITE_MANY`] or [`KIND_MERGE_MANY`] request.
pub const MANY_KEYS_MAX: usize = 4096;

/// How a coordinator reaches the other nodes.
pub trait Peers: Send + Sync + 'static {
    /// True if `node` is known to be down (gossip): a read asks it only when the replicas
    /// thought alive cannot make the quorum.
    fn is_down(&self, _node: NodeId) -> bool {
        false
    }

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
    /// Acknowledgements a write waits for, hints on fallback nodes included (sloppy quorum).
    pub w: usize,
    /// Of those, acknowledgements that must come from the slot's own replicas, not hints
    /// (Riak's PW); 0 accepts a quorum made of hints. docs/cluster.md, "Sloppy quorum".
    pub pw: usize,
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
    /// W was reached, but with fewer of the slot's own replicas than the request's PW: the
    /// write is stored (on those replicas and as hints) and will reach the others, but the
    /// client asked for more than that.
    #[error("the write reached {strict} of the slot's replicas ({hinted} more as hints), {pw} needed; it is stored and will be handed off")]
    Strict {
        strict: usize,
        hinted: usize,
        pw: usize,
    },
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
    /// Acknowledgements, hints included.
    pub acked: usize,
    /// Of those, hints on fallback nodes for replicas that did not answer.
    pub hinted: usize,
}

/// How a write's replication ended: acknowledgements, and how many were hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Acks {
    acked: usize,
    hinted: usize,
}

/// Counters of the sloppy quorum, for metrics.
#[derive(Debug, Default)]
pub struct SloppyStats {
    /// Hints sent to fallback nodes and acknowledged.
    pub hints_sent: AtomicU64,
    /// Writes refused for too few strict acknowledgements (PW).
    pub strict_refused: AtomicU64,
    /// Write events this node (as event replica) refused for arriving after their
    /// coordinator's timeout ([`STALE_EVENT`]).
    pub stale_events: AtomicU64,
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
    /// The hints this node holds for others (`None`: it takes no hints, and sends none).
    hints: Option<Arc<Hints>>,
    sloppy: SloppyStats,
    /// Anti-entropy's trees of this node's records (`aae.rs`, `exchange.rs`).
    trees: Trees,
    /// Slot transfers' counters (`transfer.rs`).
    transfer: TransferStats,
    /// The map as this node applied it, when it has one: a replica refuses data requests
    /// for slots it does not keep.
    map: Option<Arc<MapCell>>,
    /// In a deterministic simulation: the seeded randomness, and store work run in place
    /// rather than on the blocking pool (whose threads would finish in real time).
    simulated: Option<Mutex<rand::rngs::StdRng>>,
}

/// Where a node keeps the map it routes by (the server updates it as the control plane
/// applies maps).
pub type MapCell = RwLock<Option<Arc<ClusterMap>>>;

/// How a replica's refusal of a slot it does not keep starts.
pub const NOT_KEPT: &str = "not a replica of slot";

/// The error of a member that is in the map but has not finished starting (a joining node
/// between its map and its data plane): it answers in a moment, so a write's merge asks it
/// again until the request's timeout rather than counting it failed.
pub const STARTING: &str = "node is starting";

/// How a write event's refusal starts when it reached its event replica later than its
/// coordinator can still be waiting for it ([`DataNode::stamp_after`]).
pub const STALE_EVENT: &str = "stale write event";

/// How far apart the nodes' clocks may be, beyond the request timeout, before an event
/// replica takes a write event for stale: an event whose coordinator stamped it more than
/// the request timeout plus this before the replica's clock is refused (docs/cluster.md,
/// "Late events"). NTP keeps clocks within milliseconds; the simulation skews them by up
/// to 800 ms between two nodes.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(1);

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
            hints: None,
            sloppy: SloppyStats::default(),
            trees: Trees::new(),
            transfer: TransferStats::default(),
            map: None,
            simulated: None,
        }
    }

    /// For a deterministic simulation (docs/testing.md, "Deterministic simulation"): the
    /// node's randomness comes from `seed`, and its store work runs in place on the task
    /// instead of the blocking pool, so that a run depends on the seed alone.
    pub fn simulated(mut self, seed: u64) -> Self {
        use rand::SeedableRng;
        self.simulated = Some(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)));
        self
    }

    /// A random number: seeded in a simulation.
    pub(crate) fn random_u64(&self) -> u64 {
        use rand::RngCore;
        match &self.simulated {
            Some(rng) => rng.lock().next_u64(),
            None => rand::random(),
        }
    }

    /// Runs `work` on the hints' store off the tokio workers (a hints' write may wait on
    /// the disk), in place in a simulation.
    async fn on_hints<T: Send + 'static>(
        &self,
        hints: &Arc<Hints>,
        work: impl FnOnce(&Hints) -> T + Send + 'static,
    ) -> T {
        let hints = hints.clone();
        self.blocking(move || work(&hints))
            .await
            .expect("a hints task panicked")
    }

    /// Runs store work that may wait on the disk: on the blocking pool, or in place in a
    /// simulation.
    pub(crate) async fn blocking<T, F>(&self, work: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if self.simulated.is_some() {
            return Ok(work());
        }
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| format!("store task failed: {e}"))
    }

    /// Refuses data requests for slots `map`'s current map says this node does not keep
    /// (neither a replica, nor one a change in progress adds): a coordinator that routed by
    /// an older map then asks the others, and a node that gave a slot away gets no more of
    /// its keys after it dropped them.
    pub fn with_map(mut self, map: Arc<MapCell>) -> Self {
        self.map = Some(map);
        self
    }

    /// Slot transfers' counters.
    pub fn transfer_stats(&self) -> &TransferStats {
        &self.transfer
    }

    /// True if gossip finds `node` down.
    pub(crate) fn is_down(&self, node: NodeId) -> bool {
        self.peers.is_down(node)
    }

    /// Refuses `key` if this node does not keep its slot (see [`DataNode::with_map`]).
    fn check_kept(&self, key: &[u8]) -> Result<(), String> {
        let Some(cell) = &self.map else {
            return Ok(());
        };
        let guard = cell.read();
        match guard.as_ref() {
            Some(map) if !map.keeps(self.me, key_slot(key)) => Err(format!(
                "{NOT_KEPT} {} at epoch {}",
                key_slot(key),
                map.epoch
            )),
            _ => Ok(()),
        }
    }

    /// Anti-entropy's trees of this node's records.
    pub fn trees(&self) -> &Trees {
        &self.trees
    }

    pub(crate) fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    /// Merges `incoming` into this node's copy of `key`; the merged record. Blocking.
    pub(crate) fn merge_here(
        &self,
        db: usize,
        key: &[u8],
        incoming: &Record,
    ) -> Result<Record, String> {
        self.replica()
            .merge(db, key, incoming)
            .map_err(|e| e.to_string())
    }

    /// Takes hints for other nodes into `hints`, and sends hints to fallback nodes when a
    /// write's replica fails (sloppy quorum). Without it, a failed replica is a failed ack.
    pub fn with_hints(mut self, hints: Arc<Hints>) -> Self {
        self.hints = Some(hints);
        self
    }

    /// The hints this node holds, if it takes any.
    pub fn hints(&self) -> Option<&Arc<Hints>> {
        self.hints.as_ref()
    }

    /// The sloppy quorum's counters.
    pub fn sloppy_stats(&self) -> &SloppyStats {
        &self.sloppy
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

    /// This node's own copy of `key` in `db`, as stored (no quorum, no repair): what
    /// `DEBUG CLUSTER-RECORD` shows, dots and stamps included, to explain a failed check.
    pub fn local_record(&self, db: usize, key: &[u8]) -> Result<Record, String> {
        self.replica().read(db, key).map_err(|e| e.to_string())
    }

    pub(crate) fn replica(&self) -> Replica<'_> {
        Replica::new(
            &self.keyspace,
            self.me,
            self.sibling_cap,
            self.tombstone_grace_ms,
        )
        .with_trees(&self.trees)
    }

    fn stamp(&self) -> Hlc {
        self.clock.lock().now(self.keyspace.now_ms())
    }

    /// A stamp for an event whose coordinator's clock read `clock`: after it, so that an
    /// operation comes after what its coordinator saw before it (a delete after the write
    /// it follows, whatever the replicas' clocks say). A clock too far ahead is ignored.
    ///
    /// An event stamped longer ago than the request timeout plus [`MAX_CLOCK_SKEW`] is
    /// refused ([`STALE_EVENT`]): its coordinator has given up on it and answered its
    /// client, who may have written the key again since. Run now, it would be stamped now
    /// and, blind, supersede those later writes with the older value. Such a request is
    /// one that sat in a socket's send queue through a partition and was delivered when it
    /// healed (docs/cluster.md, "Late events").
    fn stamp_after(&self, clock: Option<Hlc>) -> Result<Hlc, String> {
        let now_ms = self.keyspace.now_ms();
        if let Some(sent) = clock {
            let age_ms = now_ms.saturating_sub(sent.physical_ms());
            let bound = self.timeout + MAX_CLOCK_SKEW;
            if age_ms > bound.as_millis() as u64 {
                self.sloppy.stale_events.fetch_add(1, Ordering::Relaxed);
                return Err(format!(
                    "{STALE_EVENT}: its coordinator stamped it {age_ms} ms ago, past the \
                     request timeout and clock skew allowance ({bound:?})"
                ));
            }
        }
        let mut local = self.clock.lock();
        Ok(match clock.map(|remote| local.observe(remote, now_ms)) {
            Some(Ok(stamp)) => stamp,
            _ => local.now(now_ms),
        })
    }

    /// Moves this node's clock past every version in `record` (a copy it received as a
    /// coordinator), so that the events it coordinates next are stamped after them.
    fn observe(&self, record: &Record) {
        let Some(latest) = record.siblings().map(|s| s.hlc).max() else {
            return;
        };
        let now_ms = self.keyspace.now_ms();
        let _ = self.clock.lock().observe(latest, now_ms);
    }

    /// Answers one data request (the replica's side). A write's reply waits
    /// until its WAL record is written out as a local write's reply does
    /// (fsynced under `always`), so an acknowledgement is as durable as a
    /// local write.
    ///
    /// Runs on the calling worker inside `ringkv_engine::without_waiting`,
    /// as the single node's commands do (`crates/server/src/exec.rs`): most
    /// requests cost a few microseconds, and a hop to the blocking pool
    /// would cost more than the work. A write the engine would make wait
    /// (a stall, an fsync under `always`) is refused before it changes
    /// anything and runs again on the blocking pool.
    pub async fn answer(self: &Arc<Self>, kind: u8, payload: Bytes) -> Result<Bytes, String> {
        let engine = self.keyspace.engine();
        // Hints are a rare path with their own database: always off the worker.
        let off_worker = matches!(
            kind,
            KIND_HINT | KIND_HINT_MANY | KIND_AAE_KEYS | KIND_STREAM
        );
        let mut unsynced_read = 0;
        let reply = if engine.write_may_wait() || off_worker {
            None
        } else {
            let ran = ringkv_engine::without_waiting(|| self.apply(kind, &payload));
            unsynced_read = ringkv_engine::take_unsynced_read();
            match ran {
                (_, true) => None,
                (reply, false) => Some(reply),
            }
        };
        let reply = match reply {
            Some(reply) => reply,
            None => {
                let this = self.clone();
                let payload = payload.clone();
                self.blocking(move || this.apply(kind, &payload)).await?
            }
        }?;
        // A write, or (under `always`) a read of a write not yet fsynced: answered once it is.
        if unsynced_read > 0
            || matches!(
                kind,
                KIND_WRITE | KIND_INCREMENT | KIND_MERGE | KIND_WRITE_MANY | KIND_MERGE_MANY
            )
        {
            self.sync().await?;
        }
        Ok(reply)
    }

    /// Writes the WAL out to this node's last write (fsyncs it under `always`).
    /// Requests answered at the same moment share one write: the task yields
    /// first, so the others append their records before whoever syncs first.
    async fn sync(&self) -> Result<(), String> {
        let engine = self.keyspace.engine();
        let seq = self.keyspace.last_written_sequence();
        if self.simulated.is_some() {
            // Whether the WAL is written out yet depends on the engine's own threads (real
            // time): a simulation must not let that change its scheduling.
            return engine.sync(seq).map_err(|e| e.to_string());
        }
        if engine.is_synced(seq) {
            return Ok(());
        }
        if engine.fsync_policy() == ringkv_engine::FsyncPolicy::Always {
            // The write was made on the worker without waiting for its fsync: the engine's
            // group-commit thread fsyncs for every waiter at once.
            return engine.synced(seq).await.map_err(|e| e.to_string());
        }
        tokio::task::yield_now().await;
        let synced = match engine.try_sync(seq) {
            Some(synced) => synced,
            // Another writer's WAL I/O is in progress: wait for it off the worker.
            None => self.blocking(move || engine.sync(seq)).await?,
        };
        synced.map_err(|e| e.to_string())
    }

    /// Applies one data request to this node's store and encodes the reply;
    /// synchronous. The WAL is left for [`DataNode::answer`] to write out.
    fn apply(&self, kind: u8, payload: &[u8]) -> Result<Bytes, String> {
        let replica = self.replica();
        let text = |e: ReplicaError| e.to_string();
        let reply = match kind {
            KIND_READ => {
                let (db, key) = decode_key(&mut Reader::new(payload)).map_err(|e| e.to_string())?;
                self.check_kept(key)?;
                Bytes::from(replica.read(db, key).map_err(text)?.encode())
            }
            KIND_WRITE => {
                let (event, clock) =
                    WriteEvent::decode_stamped(payload).map_err(|e| e.to_string())?;
                self.check_kept(&event.key)?;
                let (existed, record) = self.write_here(&event, clock)?;
                let mut out = vec![u8::from(existed)];
                out.extend_from_slice(&record.encode());
                Bytes::from(out)
            }
            KIND_INCREMENT => {
                let mut reader = Reader::new(payload);
                let (db, key) = decode_key(&mut reader).map_err(|e| e.to_string())?;
                self.check_kept(key)?;
                let delta = unzigzag(reader.varint().map_err(|e| e.to_string())?);
                let request_id = reader.u128_le().map_err(|e| e.to_string())?;
                // The coordinator's clock, when it sent one.
                let clock = if reader.remaining() > 0 {
                    Some(Hlc(reader.varint().map_err(|e| e.to_string())?))
                } else {
                    None
                };
                reader.finish().map_err(|e| e.to_string())?;
                let done = replica
                    .increment(db, key, delta, request_id, self.stamp_after(clock)?)
                    .map_err(text)?;
                let mut out = vec![u8::from(done.applied)];
                out.extend_from_slice(&done.value.to_be_bytes());
                out.extend_from_slice(&done.record.encode());
                Bytes::from(out)
            }
            KIND_MERGE => {
                let mut reader = Reader::new(payload);
                let (db, key) = decode_key(&mut reader).map_err(|e| e.to_string())?;
                self.check_kept(key)?;
                let rest = reader
                    .bytes(reader.remaining())
                    .map_err(|e| e.to_string())?;
                let incoming = Record::decode(rest).map_err(|e| e.to_string())?;
                replica.merge(db, key, &incoming).map_err(text)?;
                Bytes::new()
            }
            KIND_WRITE_MANY => {
                let (events, clock) = decode_write_many(payload).map_err(|e| e.to_string())?;
                if let Some(first) = events.first() {
                    self.check_kept(&first.key)?;
                }
                let writes: Vec<(&[u8], Body, Option<u64>)> = events
                    .iter()
                    .map(|e| (&e.key[..], e.body.clone(), e.expires_at_ms))
                    .collect();
                let db = events.first().map_or(0, |e| e.db);
                let done = replica
                    .write_many(db, &writes, self.stamp_after(clock)?)
                    .map_err(text)?;
                let mut out = Vec::new();
                for (record, existed) in done {
                    out.push(u8::from(existed));
                    let bytes = record.encode();
                    put_varint(&mut out, bytes.len() as u64);
                    out.extend_from_slice(&bytes);
                }
                Bytes::from(out)
            }
            KIND_MERGE_MANY => {
                let (db, copies) = decode_merge_many(payload).map_err(|e| e.to_string())?;
                if let Some((key, _)) = copies.first() {
                    self.check_kept(key)?;
                }
                replica.merge_many(db, &copies).map_err(text)?;
                Bytes::new()
            }
            KIND_HINT | KIND_HINT_MANY => {
                let hints = self.hints.as_ref().ok_or("this node takes no hints")?;
                let mut reader = Reader::new(payload);
                let target = reader.varint().map_err(|e| e.to_string())?;
                let rest = reader
                    .bytes(reader.remaining())
                    .map_err(|e| e.to_string())?;
                let now_ms = self.keyspace.now_ms();
                let (db, copies) = if kind == KIND_HINT {
                    let mut reader = Reader::new(rest);
                    let (db, key) = decode_key(&mut reader).map_err(|e| e.to_string())?;
                    let record = reader
                        .bytes(reader.remaining())
                        .map_err(|e| e.to_string())
                        .and_then(|bytes| Record::decode(bytes).map_err(|e| e.to_string()))?;
                    (db, vec![(key, record)])
                } else {
                    decode_merge_many(rest).map_err(|e| e.to_string())?
                };
                hints
                    .store_many(target, db, &copies, now_ms)
                    .map_err(|e| e.to_string())?;
                Bytes::new()
            }
            KIND_AAE_ROOTS | KIND_AAE_SEGMENTS | KIND_AAE_KEYS => {
                self.answer_exchange(kind, payload)?
            }
            KIND_STREAM => self.answer_stream(payload)?,
            other => return Err(format!("unknown data request kind {other}")),
        };
        Ok(reply)
    }

    /// The write event on this node: (held a live value before, record after), one read
    /// under the key lock.
    fn write_here(&self, event: &WriteEvent, clock: Option<Hlc>) -> Result<(bool, Record), String> {
        let (record, existed) = self
            .replica()
            .write_noting_live(
                event.db,
                &event.key,
                event.context.as_ref(),
                event.body.clone(),
                event.expires_at_ms,
                self.stamp_after(clock)?,
            )
            .map_err(|e| e.to_string())?;
        Ok((existed, record))
    }

    /// Sends a request to `node`: answered here when it is this node, else
    /// through [`Peers`].
    pub(crate) fn send(
        self: &Arc<Self>,
        node: NodeId,
        kind: u8,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, String>> {
        if node == self.me {
            let this = self.clone();
            Box::pin(async move { this.answer(kind, payload).await })
        } else {
            self.peers.call(node, kind, payload, self.timeout)
        }
    }

    /// The event replica of a slot: this node when it holds a copy, else the
    /// first replica in preference order that gossip does not find down.
    fn event_replica(&self, replicas: &[NodeId]) -> NodeId {
        if replicas.contains(&self.me) {
            self.me
        } else {
            replicas
                .iter()
                .copied()
                .find(|&node| !self.peers.is_down(node))
                .unwrap_or(replicas[0])
        }
    }

    /// Runs a write event on the event replica; if it cannot be reached at all (the
    /// connection was refused: the event cannot have run), on the next replica that
    /// gossip does not find down. The replica that ran it and its reply. `encode` makes
    /// the request with this node's clock as each attempt is sent: the event replica
    /// refuses an event stamped too long ago ([`DataNode::stamp_after`]).
    async fn run_event(
        self: &Arc<Self>,
        replicas: &[NodeId],
        kind: u8,
        encode: impl Fn(Hlc) -> Bytes,
    ) -> Result<(NodeId, Bytes), String> {
        let first = self.event_replica(replicas);
        let mut candidates = std::iter::once(first).chain(
            replicas
                .iter()
                .copied()
                .filter(|&node| node != first && !self.peers.is_down(node)),
        );
        let mut node = candidates.next().expect("a slot has a replica");
        loop {
            match self.send(node, kind, encode(self.stamp())).await {
                Ok(reply) => return Ok((node, reply)),
                // Not run there: unreachable, or a slot it no longer keeps (a change
                // completed while the request was on its way).
                Err(error) if error.starts_with(NOT_REACHED) || error.starts_with(NOT_KEPT) => {
                    match candidates.next() {
                        Some(next) => {
                            tracing::debug!(node, %error, "event replica unreachable: trying the next");
                            node = next;
                        }
                        None => return Err(error),
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The nodes that take hints for `slot`'s replicas, in the order to try them: the
    /// members outside the replica list, starting at a place the slot picks (so one down
    /// node's hints spread over the others), those gossip finds down left out.
    fn fallbacks(&self, map: &ClusterMap, slot: u16, replicas: &[NodeId]) -> Vec<NodeId> {
        let others: Vec<NodeId> = map
            .members
            .keys()
            .copied()
            .filter(|node| !replicas.contains(node))
            .collect();
        if others.is_empty() {
            return others;
        }
        let start = usize::from(slot) % others.len();
        others[start..]
            .iter()
            .chain(&others[..start])
            .copied()
            .filter(|&node| node == self.me || !self.peers.is_down(node))
            .collect()
    }

    /// Stores `payload` (a merge of `kind`) as a hint for `target`, a replica of `slot`, on
    /// the first of the slot's fallbacks that takes it; the fallback that did.
    async fn hint(
        self: &Arc<Self>,
        map: &ClusterMap,
        slot: u16,
        target: NodeId,
        kind: u8,
        payload: Bytes,
    ) -> Result<NodeId, String> {
        let mut fallbacks = self.fallbacks(map, slot, map.replicas(slot));
        // Each missing replica starts at its own fallback, so that two replicas missing
        // from one write are hinted to two nodes where there are two (the write's round
        // counts a fallback once: `replicate`).
        if !fallbacks.is_empty() {
            let position = map
                .replicas(slot)
                .iter()
                .chain(map.pending(slot).iter())
                .position(|&node| node == target)
                .unwrap_or(0);
            let by = position % fallbacks.len();
            fallbacks.rotate_left(by);
        }
        let hint_kind = if kind == KIND_MERGE_MANY {
            KIND_HINT_MANY
        } else {
            KIND_HINT
        };
        let mut hinted = Vec::with_capacity(payload.len() + 10);
        put_varint(&mut hinted, target);
        hinted.extend_from_slice(&payload);
        let hinted = Bytes::from(hinted);
        let mut last_error = "no fallback node is up".to_string();
        for fallback in fallbacks {
            match self.send(fallback, hint_kind, hinted.clone()).await {
                Ok(_) => {
                    self.sloppy.hints_sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(fallback);
                }
                Err(error) => last_error = format!("fallback {fallback:016x}: {error}"),
            }
        }
        Err(last_error)
    }

    /// Reads `key` from its replicas: the merge of R copies. It asks R replicas
    /// first (this node first when it holds the slot, then those gossip does not
    /// find down), and asks one more for each that fails, and all the rest once
    /// [`DataNode::hedge_delay`] passes without a quorum (a replica that hangs
    /// without failing costs that delay, not the whole timeout). Asking R rather
    /// than all N saves a network round trip and a replica's work per read; the
    /// replicas not asked are brought up to date by writes, read repair of
    /// later reads and anti-entropy. Replicas that answered with an older copy
    /// get the merge (read repair). docs/cluster.md, "Reads".
    ///
    /// As a write's acknowledgements do ([`DataNode::replicate`]), the copies count
    /// against the newest map: when the key's slot moved while the round ran, the read
    /// goes again to the new replicas (the copy of a node that no longer holds the slot
    /// may miss writes acknowledged by the new ones).
    pub async fn read(
        self: &Arc<Self>,
        map: &Arc<ClusterMap>,
        db: usize,
        key: &Bytes,
        quorum: Quorum,
    ) -> Result<Record, CoordError> {
        // What the old replicas answered is kept: merging it in loses nothing.
        let round =
            |map: Arc<ClusterMap>| async move { self.read_once(&map, db, key, quorum).await };
        self.on_newest_placement(map, key_slot(key), "read", round, |a, b| a.merge(&b))
            .await
    }

    /// One round of [`DataNode::read`] under `map`.
    async fn read_once(
        self: &Arc<Self>,
        map: &ClusterMap,
        db: usize,
        key: &Bytes,
        quorum: Quorum,
    ) -> Result<Record, CoordError> {
        let replicas = map.replicas(key_slot(key)).to_vec();
        let r = quorum.r.clamp(1, replicas.len());
        let order = self.read_order(&replicas);
        let payload = encode_key(db, key);
        let mut asking = FuturesUnordered::new();
        let ask = |node: NodeId| {
            let call = self.send(node, KIND_READ, payload.clone());
            async move {
                let copy = call.await.and_then(|bytes| {
                    Record::decode(&bytes).map_err(|e| format!("damaged copy: {e}"))
                });
                (node, copy)
            }
        };
        let mut next = 0;
        while next < r {
            asking.push(ask(order[next]));
            next += 1;
        }
        let mut round = ReadRound::new(replicas, r);
        let mut last_failure = None;
        let deadline = tokio::time::sleep(self.timeout);
        let hedge = tokio::time::sleep(self.hedge_delay());
        tokio::pin!(deadline, hedge);
        let progress = loop {
            let (node, copy) = tokio::select! {
                // In a fixed order: a simulation replays a seed exactly (docs/testing.md).
                biased;
                Some(answer) = asking.next() => answer,
                () = &mut hedge, if next < order.len() => {
                    while next < order.len() {
                        asking.push(ask(order[next]));
                        next += 1;
                    }
                    continue;
                }
                () = &mut deadline => break round.on_timeout(),
                else => break round.on_timeout(),
            };
            let progress = match copy {
                Ok(copy) => round.on_reply(node, copy),
                Err(error) => {
                    tracing::debug!(node, %error, "read from a replica failed");
                    last_failure = Some(format!("{node:016x}: {error}"));
                    if next < order.len() {
                        asking.push(ask(order[next]));
                        next += 1;
                    }
                    round.on_failure(node)
                }
            };
            if progress != Progress::Pending {
                break progress;
            }
        };
        match progress {
            Progress::Failed(error) => Err(CoordError::Quorum(error.with_cause(last_failure))),
            _ => {
                let merged = round.merged();
                self.observe(&merged);
                for node in round.stale() {
                    self.repair(node, db, key, &merged);
                }
                Ok(merged)
            }
        }
    }

    /// The order a read asks a slot's replicas in: this node, then the others
    /// in the map's order, those gossip finds down last.
    fn read_order(&self, replicas: &[NodeId]) -> Vec<NodeId> {
        let mut order: Vec<NodeId> = replicas.to_vec();
        order.sort_by_key(|&node| (node != self.me, self.peers.is_down(node)));
        order
    }

    /// How long a read waits for its first R replicas before it asks the rest:
    /// a tenth of the request timeout, at least 10 ms (200 ms by default).
    fn hedge_delay(&self) -> Duration {
        (self.timeout / 10).max(Duration::from_millis(10))
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
        map: &Arc<ClusterMap>,
        event: WriteEvent,
        quorum: Quorum,
    ) -> Result<Written, CoordError> {
        let replicas = map.replicas(key_slot(&event.key)).to_vec();
        let (event_node, reply) = self
            .run_event(&replicas, KIND_WRITE, |stamp| {
                event.encode_stamped(Some(stamp))
            })
            .await
            .map_err(CoordError::Event)?;
        let (&existed, record) = reply
            .split_first()
            .ok_or_else(|| CoordError::Event("empty write reply".into()))?;
        let record = Record::decode(record)
            .map_err(|e| CoordError::Event(format!("damaged write reply: {e}")))?;
        self.observe(&record);
        let payload = encode_merge(event.db, &event.key, &record);
        let acks = self
            .replicate(
                map,
                key_slot(&event.key),
                event_node,
                KIND_MERGE,
                payload,
                quorum,
            )
            .await?;
        Ok(Written {
            existed: existed != 0,
            acked: acks.acked,
            hinted: acks.hinted,
        })
    }

    /// A delete (DEL of one key): the key read at R, then, if it holds a live value, a
    /// tombstone written under the context of what the read merged. Whether a live value
    /// was deleted.
    ///
    /// The read is what makes an acknowledged delete stay one. A tombstone written blind
    /// supersedes only what its event replica holds; an event replica that missed the last
    /// write (W of N) meets it later as a concurrent sibling, and last-writer-wins then
    /// brings the write back whenever its coordinator's clock was ahead (the simulation's
    /// seed 101504; docs/cluster.md, "Last writer wins"). The read at R meets every write
    /// acknowledged at W (R + W > N), its context covers them, and the coordinator's clock
    /// moves past their stamps.
    pub async fn delete(
        self: &Arc<Self>,
        map: &Arc<ClusterMap>,
        db: usize,
        key: &Bytes,
        quorum: Quorum,
    ) -> Result<bool, CoordError> {
        let record = self.read(map, db, key, quorum).await?;
        if matches!(record.resolve(self.keyspace.now_ms()), Ok(Resolved::Absent)) {
            return Ok(false);
        }
        let event = WriteEvent {
            db,
            key: key.clone(),
            context: Some(record.context()),
            body: Body::Tombstone,
            expires_at_ms: None,
        };
        self.write(map, event, quorum).await?;
        Ok(true)
    }

    /// Blind writes of several distinct keys of one slot (MSET within a slot): one event on
    /// the event replica that stores them all in one batch, the records merged into the
    /// other replicas as one batch each, answered at W acknowledgements. Every replica holds
    /// all of these writes or none of them.
    pub async fn write_many(
        self: &Arc<Self>,
        map: &Arc<ClusterMap>,
        events: Vec<WriteEvent>,
        quorum: Quorum,
    ) -> Result<Vec<Written>, CoordError> {
        let Some(first) = events.first() else {
            return Ok(Vec::new());
        };
        let (db, slot) = (first.db, key_slot(&first.key));
        debug_assert!(events
            .iter()
            .all(|e| e.db == db && key_slot(&e.key) == slot && e.context.is_none()));
        let replicas = map.replicas(slot).to_vec();
        let (event_node, reply) = self
            .run_event(&replicas, KIND_WRITE_MANY, |stamp| {
                encode_write_many(&events, Some(stamp))
            })
            .await
            .map_err(CoordError::Event)?;
        let damaged = |e: DecodeError| CoordError::Event(format!("damaged write reply: {e}"));
        let mut reader = Reader::new(&reply);
        let mut done = Vec::with_capacity(events.len());
        for _ in &events {
            let existed = reader.u8().map_err(damaged)? != 0;
            let len = reader.varint().map_err(damaged)? as usize;
            done.push((
                existed,
                Record::decode(reader.bytes(len).map_err(damaged)?).map_err(damaged)?,
            ));
        }
        reader.finish().map_err(damaged)?;
        for (_, record) in &done {
            self.observe(record);
        }
        let copies: Vec<(&[u8], &Record)> = events
            .iter()
            .zip(&done)
            .map(|(event, (_, record))| (&event.key[..], record))
            .collect();
        let payload = encode_merge_many(db, &copies);
        let acks = self
            .replicate(map, slot, event_node, KIND_MERGE_MANY, payload, quorum)
            .await?;
        Ok(done
            .into_iter()
            .map(|(existed, _)| Written {
                existed,
                acked: acks.acked,
                hinted: acks.hinted,
            })
            .collect())
    }

    /// An increment: the counter event on the event replica, merged into the
    /// others; the value after it as the event replica saw it.
    pub async fn increment(
        self: &Arc<Self>,
        map: &Arc<ClusterMap>,
        db: usize,
        key: &Bytes,
        delta: i64,
        request_id: RequestId,
        quorum: Quorum,
    ) -> Result<i64, CoordError> {
        let replicas = map.replicas(key_slot(key)).to_vec();
        let encode = |stamp: Hlc| {
            let mut payload = BytesMut::from(&encode_key(db, key)[..]);
            let mut tail = Vec::new();
            put_varint(&mut tail, zigzag(delta));
            tail.extend_from_slice(&request_id.to_le_bytes());
            put_varint(&mut tail, stamp.0);
            payload.put_slice(&tail);
            payload.freeze()
        };
        let (event_node, reply) = self
            .run_event(&replicas, KIND_INCREMENT, encode)
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
        self.observe(&record);
        let payload = encode_merge(db, key, &record);
        self.replicate(map, key_slot(key), event_node, KIND_MERGE, payload, quorum)
            .await?;
        Ok(value)
    }

    /// Merges `record` into every replica but `done` (which holds it) and
    /// waits for W acknowledgements in all, `done`'s included. A replica that
    /// fails, or that gossip finds down, gets its copy as a hint on a fallback
    /// node instead, and the hint counts as its acknowledgement (sloppy
    /// quorum), unless the request's PW asks for more of the slot's own
    /// replicas than answered. docs/cluster.md, "Sloppy quorum and hinted handoff".
    ///
    /// The acknowledgements count against the newest map this node knows when the round
    /// ends. A coordinator whose map was behind (a peer refused its epoch and the map was
    /// refreshed meanwhile, or a change applied during the round) gathered them under a
    /// placement that may be gone: the event replica and the replicas that answered may no
    /// longer hold the slot, and a later read at R from the new replicas would miss the
    /// write. So when the slot's placement moved, the record goes again to the new
    /// replicas (and target), and `done` counts only if it is one of them (the simulation's
    /// seed 201309: a delete through a node held behind a join was acknowledged by itself,
    /// no longer a replica, and a hint; docs/cluster.md, "Joins and leaves").
    async fn replicate(
        self: &Arc<Self>,
        map: &Arc<ClusterMap>,
        slot: u16,
        done: NodeId,
        kind: u8,
        payload: Bytes,
        quorum: Quorum,
    ) -> Result<Acks, CoordError> {
        // Only the last round's acknowledgements count: they are against the newest map.
        let round = |map: Arc<ClusterMap>| {
            let payload = payload.clone();
            async move {
                self.replicate_once(&map, slot, done, kind, payload, quorum)
                    .await
            }
        };
        self.on_newest_placement(map, slot, "write", round, |_, last| last)
            .await
    }

    /// Runs `round` under `map`, then again under each newer map this node has applied
    /// meanwhile that places `slot` elsewhere, folding the results with `fold` (at most
    /// [`PLACEMENT_RETRIES`] more rounds): what [`DataNode::replicate`] and
    /// [`DataNode::read`] count against. A round that failed under a map since replaced is
    /// not final (its replicas may have refused a slot they no longer keep): the round under
    /// the newer map decides.
    async fn on_newest_placement<T, F, Fut>(
        &self,
        map: &Arc<ClusterMap>,
        slot: u16,
        what: &str,
        mut round: F,
        fold: impl Fn(T, T) -> T,
    ) -> Result<T, CoordError>
    where
        F: FnMut(Arc<ClusterMap>) -> Fut,
        Fut: std::future::Future<Output = Result<T, CoordError>>,
    {
        let mut result = round(map.clone()).await;
        let mut under = map.clone();
        let mut retries = 0;
        while let Some(newer) = self.newer_placement(&under, slot) {
            if retries == PLACEMENT_RETRIES {
                return Err(CoordError::Event(format!(
                    "slot {slot} moved {PLACEMENT_RETRIES} times during one {what}"
                )));
            }
            retries += 1;
            tracing::debug!(
                slot,
                from = under.epoch,
                to = newer.epoch,
                "the slot moved during a {what}: running it again under the new map"
            );
            let again = round(newer.clone()).await;
            result = match (result, again) {
                (Ok(before), Ok(again)) => Ok(fold(before, again)),
                // The replicas of the old placement may refuse a slot they no longer keep:
                // the round under the new one decides.
                (Err(_), again) => again,
                (Ok(_), Err(error)) => Err(error),
            };
            under = newer;
        }
        result
    }

    /// This node's current map, if it is newer than `map` and places `slot` elsewhere
    /// (other replicas, or another change in progress).
    fn newer_placement(&self, map: &ClusterMap, slot: u16) -> Option<Arc<ClusterMap>> {
        let now = self.map.as_ref()?.read().clone()?;
        let moved = now.epoch > map.epoch
            && (now.replicas(slot) != map.replicas(slot)
                || now.target_replicas(slot) != map.target_replicas(slot));
        moved.then_some(now)
    }

    /// One round of [`DataNode::replicate`] under `map`.
    async fn replicate_once(
        self: &Arc<Self>,
        map: &Arc<ClusterMap>,
        slot: u16,
        done: NodeId,
        kind: u8,
        payload: Bytes,
        quorum: Quorum,
    ) -> Result<Acks, CoordError> {
        let replicas = map.replicas(slot);
        let w = quorum.w.clamp(1, replicas.len());
        let pw = quorum.pw.min(replicas.len());
        // A membership change moving the slot: its new replicas get the write too, and it
        // needs W of them as well (docs/cluster.md, "Joins and leaves").
        let target = map.target_replicas(slot);
        let mut round = ChangeRound::new(replicas.to_vec(), target.map(<[NodeId]>::to_vec), w);
        // The event replica, if it is one of the slot's (after a placement moved, it may not be).
        let mut strict = usize::from(
            replicas.contains(&done) || target.is_some_and(|target| target.contains(&done)),
        );
        let mut hinted = 0;
        if round.on_ack(done) == Progress::Succeeded && replicas.len() == 1 && target.is_none() {
            return Ok(Acks {
                acked: 1,
                hinted: 0,
            });
        }
        let paused = self.replication_paused.load(Ordering::Relaxed);
        // What a hint needs, if hints are on: the fallbacks are found only when one is sent.
        let hinting = (self.hints.is_some() && !paused).then(|| map.clone());
        // Each replica's delivery: its own merge, or (down, or the merge failed) a hint.
        // Either way it runs to the end even after the client has its answer (`Merges`).
        let deliver = |node: NodeId| -> MergeCall {
            let down = self.peers.is_down(node);
            let direct =
                (hinting.is_none() || !down).then(|| self.send(node, kind, payload.clone()));
            let hint = hinting
                .clone()
                .map(|map| (self.clone(), map, payload.clone()));
            let again = (self.clone(), payload.clone());
            Box::pin(async move {
                if let Some(mut direct) = direct {
                    let until = tokio::time::Instant::now() + again.0.timeout;
                    let mut result = direct.await;
                    while matches!(&result, Err(e) if e.contains(STARTING))
                        && tokio::time::Instant::now() < until
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        direct = again.0.send(node, kind, again.1.clone());
                        result = direct.await;
                    }
                    match result {
                        Ok(_) => return (node, Delivery::Direct(Ok(()))),
                        Err(error) if hint.is_none() => {
                            return (node, Delivery::Direct(Err(error)))
                        }
                        Err(error) => {
                            tracing::debug!(node, %error, "replicating a write failed: hinting")
                        }
                    }
                }
                let (this, map, payload) = hint.expect("hinting when the merge is skipped");
                let hinted = this.hint(&map, slot, node, kind, payload).await;
                (node, Delivery::Hinted(hinted))
            })
        };
        let added = target
            .into_iter()
            .flatten()
            .filter(|node| !replicas.contains(node));
        let mut sending = Merges(
            replicas
                .iter()
                .chain(added)
                .filter(|&&node| node != done && !paused)
                .map(|&node| deliver(node))
                .collect(),
        );
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let mut stand_ins: Vec<NodeId> = Vec::new();
        let mut last_failure = None;
        let mut progress = if w <= 1 && target.is_none() {
            Progress::Succeeded
        } else {
            Progress::Pending
        };
        // Past W, a request with PW goes on waiting for its replicas' own answers.
        while progress == Progress::Pending
            || (progress == Progress::Succeeded && strict < pw && !sending.0.is_empty())
        {
            let next = tokio::select! {
                // In a fixed order: a simulation replays a seed exactly (docs/testing.md).
                biased;
                next = sending.0.next() => next,
                () = &mut deadline => {
                    if progress == Progress::Pending {
                        progress = round.on_timeout();
                    }
                    break;
                }
            };
            let step = match next {
                Some((node, Delivery::Direct(Ok(())))) => {
                    strict += 1;
                    round.on_ack(node)
                }
                Some((node, Delivery::Direct(Err(error)))) => {
                    tracing::debug!(node, %error, "replicating a write failed");
                    last_failure = Some(format!("{node:016x}: {error}"));
                    round.on_failure(node)
                }
                // A fallback stands in for one replica: a second hint on the same node is
                // no second acknowledgement (W counts distinct nodes, as Dynamo's does).
                Some((node, Delivery::Hinted(Ok(fallback)))) if !stand_ins.contains(&fallback) => {
                    tracing::debug!(node, fallback, "a hint stands in for a replica");
                    stand_ins.push(fallback);
                    hinted += 1;
                    round.on_ack(node)
                }
                Some((node, Delivery::Hinted(Ok(fallback)))) => {
                    tracing::debug!(
                        node,
                        fallback,
                        "a second hint on one fallback does not count"
                    );
                    round.on_failure(node)
                }
                Some((node, Delivery::Hinted(Err(error)))) => {
                    tracing::debug!(node, %error, "no fallback took the hint");
                    last_failure = Some(format!("{node:016x}, no fallback: {error}"));
                    round.on_failure(node)
                }
                None => round.on_timeout(),
            };
            if progress == Progress::Pending {
                progress = step;
            }
        }
        // The merges not waited for finish on their own task (`Merges`' drop).
        drop(sending);
        match progress {
            Progress::Failed(error) => Err(CoordError::Quorum(error.with_cause(last_failure))),
            _ if strict < pw => {
                self.sloppy.strict_refused.fetch_add(1, Ordering::Relaxed);
                Err(CoordError::Strict { strict, hinted, pw })
            }
            _ => Ok(Acks {
                acked: round.acked(),
                hinted,
            }),
        }
    }

    /// Sends the hints this node holds to their replicas that are back up (gossip), and
    /// deletes those their replica acknowledged; drops those past the age bound, and those
    /// for nodes no longer in `map`. One pass: at most [`HINTS_PER_PASS`] per node, with
    /// [`HINTS_IN_FLIGHT`] in flight; the hints' store is read and written on the blocking
    /// pool (it may wait on the disk), deletions as one write per node. Returns the hints
    /// delivered.
    pub async fn deliver_hints(self: &Arc<Self>, map: &ClusterMap) -> usize {
        let Some(hints) = self.hints.clone() else {
            return 0;
        };
        let mut delivered = 0;
        let targets = self.on_hints(&hints, |hints| hints.targets()).await;
        for target in targets {
            if !map.members.contains_key(&target) {
                let dropped = self
                    .on_hints(&hints, move |hints| hints.forget(target))
                    .await;
                tracing::info!(
                    node = %format!("{target:016x}"),
                    dropped,
                    "hints for a node that left the cluster dropped"
                );
                continue;
            }
            if target == self.me || self.peers.is_down(target) {
                continue;
            }
            let now_ms = self.keyspace.now_ms();
            let batch = self
                .on_hints(&hints, move |hints| {
                    hints
                        .for_target(target, HINTS_PER_PASS)
                        .map(|batch| hints.expire_old(batch, now_ms))
                })
                .await;
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "could not read the hints");
                    continue;
                }
            };
            // A hint for a slot its node gave away since is done with: the slot's new
            // replicas have the write (the write's other replicas were streamed to them).
            let (batch, moved): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .partition(|hint| map.keeps(target, key_slot(&hint.key)));
            // Until the first failure (the node went again): the rest waits for next pass.
            let mut sends = futures::stream::iter(batch)
                .map(|hint| {
                    let call = self.peers.call(
                        target,
                        KIND_MERGE,
                        encode_merge(hint.db, &hint.key, &hint.record),
                        self.timeout,
                    );
                    async move { (hint, call.await) }
                })
                .buffer_unordered(HINTS_IN_FLIGHT);
            let mut done = moved;
            while let Some((hint, result)) = sends.next().await {
                match result {
                    Ok(_) => done.push(hint),
                    Err(error) => {
                        // Info: gossip finds the node alive, so a failure here is worth a line
                        // (a hint that never goes shows why in the log).
                        tracing::info!(
                            node = %format!("{target:016x}"),
                            key = %String::from_utf8_lossy(&hint.key),
                            %error,
                            "delivering a hint failed; the rest wait for the next pass"
                        );
                        break;
                    }
                }
            }
            drop(sends);
            delivered += done.len();
            if done.is_empty() {
                continue;
            }
            self.on_hints(&hints, move |hints| hints.delivered(&done))
                .await;
        }
        if delivered > 0 {
            tracing::info!(delivered, "hints handed off");
        }
        delivered
    }
}

/// How a replica got a write: its own merge, or a hint on a fallback (the one that took it).
enum Delivery {
    Direct(Result<(), String>),
    Hinted(Result<NodeId, String>),
}

/// One replica's merge of a write: its id and how the call ended.
type MergeCall = BoxFuture<'static, (NodeId, Delivery)>;

/// A write's merges in flight. Every replica gets the write, not only the W
/// the reply waits for, and not only while the coordinator waits (a client
/// that disconnects drops its request's future): whatever is still in flight
/// when this is dropped finishes on a task of its own (one per write).
struct Merges(FuturesUnordered<MergeCall>);

impl Drop for Merges {
    fn drop(&mut self) {
        let mut rest = std::mem::take(&mut self.0);
        if rest.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                while let Some((node, delivery)) = rest.next().await {
                    match delivery {
                        Delivery::Direct(Err(error)) | Delivery::Hinted(Err(error)) => {
                            tracing::debug!(node, %error, "replicating a write failed");
                        }
                        _ => {}
                    }
                }
            });
        }
    }
}

impl WriteEvent {
    // Format: [varint db][varint key len][key][u8 flags: 1 context, 2 expiry, 4 clock]
    //   [varint context len][context]? [varint expiry]? [varint coordinator's HLC]?
    //   [u8 body: 0 tombstone, 1 value, 2 counter][body bytes]
    /// The request's encoding.
    pub fn encode(&self) -> Bytes {
        self.encode_stamped(None)
    }

    /// The request's encoding with the coordinator's clock: the event replica stamps the
    /// event after it (docs/cluster.md, "Last writer wins").
    pub fn encode_stamped(&self, clock: Option<Hlc>) -> Bytes {
        let mut out = encode_key(self.db, &self.key).to_vec();
        let flags = u8::from(self.context.is_some())
            | (u8::from(self.expires_at_ms.is_some()) << 1)
            | (u8::from(clock.is_some()) << 2);
        out.push(flags);
        if let Some(context) = &self.context {
            let bytes = context.encode();
            put_varint(&mut out, bytes.len() as u64);
            out.extend_from_slice(&bytes);
        }
        if let Some(at) = self.expires_at_ms {
            put_varint(&mut out, at);
        }
        if let Some(clock) = clock {
            put_varint(&mut out, clock.0);
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
        Self::decode_stamped(input).map(|(event, _)| event)
    }

    /// Decodes [`WriteEvent::encode_stamped`]'s output: the event and the coordinator's
    /// clock. Never panics.
    pub fn decode_stamped(input: &[u8]) -> Result<(Self, Option<Hlc>), DecodeError> {
        let mut reader = Reader::new(input);
        let (db, key) = decode_key(&mut reader)?;
        let key = Bytes::copy_from_slice(key);
        let flags = reader.u8()?;
        if flags & !7 != 0 {
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
        let clock = if flags & 4 != 0 {
            Some(Hlc(reader.varint()?))
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
        Ok((
            Self {
                db,
                key,
                context,
                body,
                expires_at_ms,
            },
            clock,
        ))
    }
}

/// Databases a request may name (Redis' 16).
const DB_COUNT: u64 = 16;

pub(crate) fn encode_key(db: usize, key: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(key.len() + 4);
    put_varint(&mut out, db as u64);
    put_varint(&mut out, key.len() as u64);
    out.extend_from_slice(key);
    Bytes::from(out)
}

pub(crate) fn encode_merge(db: usize, key: &[u8], record: &Record) -> Bytes {
    let mut out = encode_key(db, key).to_vec();
    out.extend_from_slice(&record.encode());
    Bytes::from(out)
}

fn encode_write_many(events: &[WriteEvent], clock: Option<Hlc>) -> Bytes {
    let mut out = Vec::new();
    put_varint(&mut out, events.len() as u64);
    for event in events {
        let bytes = event.encode_stamped(clock);
        put_varint(&mut out, bytes.len() as u64);
        out.extend_from_slice(&bytes);
    }
    Bytes::from(out)
}

/// [`KIND_WRITE_MANY`]'s events: at least one, at most [`MANY_KEYS_MAX`], one database,
/// distinct keys, no context (blind writes).
fn decode_write_many(input: &[u8]) -> Result<(Vec<WriteEvent>, Option<Hlc>), DecodeError> {
    let mut reader = Reader::new(input);
    let count = reader.varint()? as usize;
    if count == 0 || count > MANY_KEYS_MAX {
        return Err(DecodeError::Invalid("write batch size out of range"));
    }
    let mut events: Vec<WriteEvent> = Vec::with_capacity(count);
    let mut latest: Option<Hlc> = None;
    for _ in 0..count {
        let len = reader.varint()? as usize;
        let (event, clock) = WriteEvent::decode_stamped(reader.bytes(len)?)?;
        latest = latest.max(clock);
        if event.context.is_some() || events.first().is_some_and(|first| first.db != event.db) {
            return Err(DecodeError::Invalid("write batch of mixed kinds"));
        }
        events.push(event);
    }
    reader.finish()?;
    let distinct: std::collections::HashSet<&Bytes> = events.iter().map(|e| &e.key).collect();
    if distinct.len() != events.len() {
        return Err(DecodeError::Invalid("write batch names a key twice"));
    }
    Ok((events, latest))
}

fn encode_merge_many(db: usize, copies: &[(&[u8], &Record)]) -> Bytes {
    let mut out = Vec::new();
    put_varint(&mut out, db as u64);
    put_varint(&mut out, copies.len() as u64);
    for (key, record) in copies {
        put_varint(&mut out, key.len() as u64);
        out.extend_from_slice(key);
        let bytes = record.encode();
        put_varint(&mut out, bytes.len() as u64);
        out.extend_from_slice(&bytes);
    }
    Bytes::from(out)
}

/// [`KIND_MERGE_MANY`]'s copies: at most [`MANY_KEYS_MAX`], distinct keys.
/// A key and its copy, borrowed from a request.
type KeyCopy<'a> = (&'a [u8], Record);

fn decode_merge_many(input: &[u8]) -> Result<(usize, Vec<KeyCopy<'_>>), DecodeError> {
    let mut reader = Reader::new(input);
    let db = reader.varint()?;
    if db >= DB_COUNT {
        return Err(DecodeError::Invalid("database out of range"));
    }
    let count = reader.varint()? as usize;
    if count == 0 || count > MANY_KEYS_MAX {
        return Err(DecodeError::Invalid("merge batch size out of range"));
    }
    let mut copies = Vec::with_capacity(count);
    let mut keys = std::collections::HashSet::with_capacity(count);
    for _ in 0..count {
        let len = reader.varint()? as usize;
        let key = reader.bytes(len)?;
        if !keys.insert(key) {
            return Err(DecodeError::Invalid("merge batch names a key twice"));
        }
        let len = reader.varint()? as usize;
        copies.push((key, Record::decode(reader.bytes(len)?)?));
    }
    reader.finish()?;
    Ok((db as usize, copies))
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

    /// Peers where node 2 cannot be reached (the connection is refused), node 3 times out,
    /// and every other node answers as `node` would (its request counted).
    struct FlakyPeers {
        node: Arc<DataNode>,
        asked: Mutex<Vec<NodeId>>,
    }

    impl Peers for Arc<FlakyPeers> {
        fn call(
            &self,
            node: NodeId,
            kind: u8,
            payload: Bytes,
            _timeout: Duration,
        ) -> BoxFuture<'static, Result<Bytes, String>> {
            self.asked.lock().push(node);
            let answering = self.node.clone();
            Box::pin(async move {
                match node {
                    2 => Err(
                        crate::transport::CallError::ConnectFailed(std::io::Error::other(
                            "refused",
                        ))
                        .to_string(),
                    ),
                    3 => Err(crate::transport::CallError::TimedOut.to_string()),
                    _ => answering.answer(kind, payload).await,
                }
            })
        }
    }

    fn data_node(dir: &std::path::Path, me: NodeId, peers: Arc<dyn Peers>) -> Arc<DataNode> {
        Arc::new(node_at(dir, me, peers))
    }

    /// A data node on a fresh store in `dir` (1 s request timeout), for the caller to wrap.
    fn node_at(dir: &std::path::Path, me: NodeId, peers: Arc<dyn Peers>) -> DataNode {
        let db = ringkv_engine::Db::open(dir, ringkv_engine::Options::default()).unwrap();
        let keyspace = Arc::new(Keyspace::open(db, false, None).unwrap());
        DataNode::new(me, keyspace, 10, 1000, peers, Duration::from_secs(1))
    }

    /// The event replica rule (docs/cluster.md, "Liveness"): an event replica that cannot
    /// be reached at all passes the event to the next replica; one that times out does
    /// not (the event may have run there), and the write fails with its error.
    #[tokio::test]
    async fn an_unreachable_event_replica_passes_the_event_on_and_a_timed_out_one_does_not() {
        let (here, there) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let answering = data_node(there.path(), 4, Arc::new(NoPeers));
        let peers = Arc::new(FlakyPeers {
            node: answering.clone(),
            asked: Mutex::new(Vec::new()),
        });
        let coordinator = data_node(here.path(), 1, Arc::new(peers.clone()));
        let event = WriteEvent {
            db: 0,
            key: Bytes::from_static(b"k"),
            context: None,
            body: Body::Value(Bytes::from_static(b"v")),
            expires_at_ms: None,
        };
        let (ran_on, _) = coordinator
            .run_event(&[2, 4], KIND_WRITE, |_| event.encode())
            .await
            .expect("the next replica runs it");
        assert_eq!(ran_on, 4);
        assert_eq!(*peers.asked.lock(), vec![2, 4]);
        assert!(answering.replica().read(0, b"k").unwrap().sibling_count() == 1);

        peers.asked.lock().clear();
        let error = coordinator
            .run_event(&[3, 4], KIND_WRITE, |_| event.encode())
            .await
            .expect_err("a timed-out event replica is not replaced");
        assert!(error.contains("timed out"), "{error}");
        assert_eq!(*peers.asked.lock(), vec![3]);
    }

    /// Peers for a map that moves under a read: node 2, the only replica under the first
    /// map, refuses the slot and (as a refreshed node would) this node applies the second
    /// map meanwhile; node 4, the replica under it, answers as `node` would.
    struct MovingPeers {
        node: Arc<DataNode>,
        cell: Arc<MapCell>,
        newer: Arc<ClusterMap>,
    }

    impl Peers for MovingPeers {
        fn call(
            &self,
            node: NodeId,
            kind: u8,
            payload: Bytes,
            _timeout: Duration,
        ) -> BoxFuture<'static, Result<Bytes, String>> {
            let answering = self.node.clone();
            if node == 2 {
                *self.cell.write() = Some(self.newer.clone());
            }
            Box::pin(async move {
                match node {
                    2 => Err(format!("{NOT_KEPT} 0 at epoch 2")),
                    _ => answering.answer(kind, payload).await,
                }
            })
        }
    }

    /// docs/cluster.md, "Epochs": a round that failed under a map this node has since
    /// replaced is not the answer; the round under the newer map is (a leave under load
    /// once failed a GET with "0 of 3 replicas answered" before this). A NOQUORUM names the
    /// last failure.
    #[tokio::test]
    async fn a_read_refused_under_a_replaced_map_is_asked_again_under_the_new_one() {
        let member = |node: NodeId| crate::map::MemberInfo {
            node,
            client_addr: format!("127.0.0.1:{}", 7000 + node),
            cluster_addr: format!("127.0.0.1:{}", 17000 + node),
            zone: "z".into(),
            state: crate::map::MemberState::Up,
        };
        let older = Arc::new(ClusterMap::founded_by(member(2), 1).unwrap());
        let mut newer = ClusterMap::founded_by(member(4), 1).unwrap();
        newer.epoch = older.epoch + 1;
        let newer = Arc::new(newer);
        let (moved, unmoved) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let there = tempfile::tempdir().unwrap();
        let answering = data_node(there.path(), 4, Arc::new(NoPeers));
        let key = Bytes::from_static(b"k");
        let stored = WriteEvent {
            db: 0,
            key: key.clone(),
            context: None,
            body: Body::Value(Bytes::from_static(b"v")),
            expires_at_ms: None,
        };
        answering.answer(KIND_WRITE, stored.encode()).await.unwrap();
        let quorum = Quorum { r: 1, w: 1, pw: 0 };
        let coordinator = |here: &std::path::Path, cell: &Arc<MapCell>, newer: &Arc<ClusterMap>| {
            let peers = MovingPeers {
                node: answering.clone(),
                cell: cell.clone(),
                newer: newer.clone(),
            };
            Arc::new(node_at(here, 1, Arc::new(peers)).with_map(cell.clone()))
        };

        let cell: Arc<MapCell> = Arc::new(RwLock::new(Some(older.clone())));
        let node = coordinator(moved.path(), &cell, &newer);
        let record = node.read(&older, 0, &key, quorum).await.unwrap();
        assert_eq!(
            record.sibling_count(),
            1,
            "node 4's copy, read under the new map"
        );

        // Without a newer map, the refusal is the answer, and says what it was.
        let cell: Arc<MapCell> = Arc::new(RwLock::new(Some(older.clone())));
        let node = coordinator(unmoved.path(), &cell, &older);
        let error = node.read(&older, 0, &key, quorum).await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("last failure: {:016x}: {NOT_KEPT}", 2)),
            "{error}"
        );
    }

    /// Late events (docs/cluster.md): a write event that reaches its event replica after its
    /// coordinator's timeout plus the clock skew allowance is refused and changes nothing; one
    /// within them runs. The cluster_netsplit test once saw a SET held in a socket through a
    /// partition run 19 s late, blind, and replace the value acknowledged after it.
    #[tokio::test]
    async fn a_write_event_stamped_before_the_timeout_and_skew_allowance_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let node = data_node(dir.path(), 4, Arc::new(NoPeers));
        let bound_ms = (Duration::from_secs(1) + MAX_CLOCK_SKEW).as_millis() as u64;
        let now_ms = node.keyspace.now_ms();
        let stale = Hlc::new(now_ms - bound_ms - 500, 0);
        let fresh = Hlc::new(now_ms - bound_ms + 500, 0);
        let event = |key: &'static [u8]| WriteEvent {
            db: 0,
            key: Bytes::from_static(key),
            context: None,
            body: Body::Value(Bytes::from_static(b"late")),
            expires_at_ms: None,
        };

        let error = node
            .answer(KIND_WRITE, event(b"k").encode_stamped(Some(stale)))
            .await
            .expect_err("a stale event is refused");
        assert!(error.starts_with(STALE_EVENT), "{error}");
        let batch = encode_write_many(&[event(b"a"), event(b"b")], Some(stale));
        let error = node
            .answer(KIND_WRITE_MANY, batch)
            .await
            .expect_err("a stale batch is refused");
        assert!(error.starts_with(STALE_EVENT), "{error}");
        for key in [&b"k"[..], b"a", b"b"] {
            assert_eq!(node.replica().read(0, key).unwrap(), Record::empty());
        }
        assert_eq!(node.sloppy_stats().stale_events.load(Ordering::Relaxed), 2);

        node.answer(KIND_WRITE, event(b"k").encode_stamped(Some(fresh)))
            .await
            .expect("an event within the allowance runs");
        assert_eq!(node.replica().read(0, b"k").unwrap().sibling_count(), 1);
        // Unstamped requests (none are sent any more) are not judged.
        node.answer(KIND_WRITE, event(b"a").encode())
            .await
            .expect("an unstamped event runs");
    }

    struct NoPeers;

    impl Peers for NoPeers {
        fn call(
            &self,
            node: NodeId,
            _kind: u8,
            _payload: Bytes,
            _timeout: Duration,
        ) -> BoxFuture<'static, Result<Bytes, String>> {
            Box::pin(async move { Err(format!("no peer {node}")) })
        }
    }

    #[test]
    fn a_connect_failure_reads_as_not_reached() {
        let error = crate::transport::CallError::ConnectFailed(std::io::Error::other("refused"));
        assert!(error.to_string().starts_with(NOT_REACHED));
        assert!(!crate::transport::CallError::TimedOut
            .to_string()
            .starts_with(NOT_REACHED));
    }

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
            ..event.clone()
        };
        assert_eq!(WriteEvent::decode(&tombstone.encode()).unwrap(), tombstone);
        // With the coordinator's clock.
        let clock = Some(Hlc::new(1_700_000_000_123, 7));
        assert_eq!(
            WriteEvent::decode_stamped(&event.encode_stamped(clock)).unwrap(),
            (event.clone(), clock)
        );
        assert_eq!(
            WriteEvent::decode(&event.encode_stamped(clock)).unwrap(),
            event
        );
    }

    #[test]
    fn batches_round_trip_and_refuse_repeated_keys() {
        let event = |key: &'static [u8]| WriteEvent {
            db: 2,
            key: Bytes::from_static(key),
            context: None,
            body: Body::Value(Bytes::from_static(b"v")),
            expires_at_ms: None,
        };
        let events = vec![event(b"{t}a"), event(b"{t}b")];
        let clock = Some(Hlc::new(1_700_000_000_000, 1));
        assert_eq!(
            decode_write_many(&encode_write_many(&events, clock)).unwrap(),
            (events.clone(), clock)
        );
        assert_eq!(
            decode_write_many(&encode_write_many(&events, None)).unwrap(),
            (events, None)
        );
        let twice = vec![event(b"{t}a"), event(b"{t}a")];
        assert!(decode_write_many(&encode_write_many(&twice, None)).is_err());
        assert!(decode_write_many(&encode_write_many(&[], None)).is_err());
        let record = Record::empty();
        let copies = [(&b"x"[..], &record), (&b"y"[..], &record)];
        let encoded = encode_merge_many(3, &copies);
        let (db, decoded) = decode_merge_many(&encoded).unwrap();
        assert_eq!(db, 3);
        assert_eq!(
            decoded,
            vec![(&b"x"[..], Record::empty()), (&b"y"[..], Record::empty())]
        );
        let repeated = [(&b"x"[..], &record), (&b"x"[..], &record)];
        let encoded = encode_merge_many(3, &repeated);
        assert!(decode_merge_many(&encoded).is_err());
    }

    proptest! {
        #[test]
        fn write_event_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = WriteEvent::decode(&bytes);
            let _ = decode_write_many(&bytes);
            let _ = decode_merge_many(&bytes);
        }
    }
}
