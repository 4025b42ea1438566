//! Moving slots between nodes for a planned join or leave (docs/cluster.md, "Joins and
//! leaves"): a node that the change in progress adds to a slot pulls the slot's records from
//! a current replica in chunks, and says so to the control plane when it has them all; once
//! the change completes, a node drops the records of the slots it no longer keeps.
//!
//! **Owns:** the [`KIND_STREAM`] request (the source's side: one chunk of a pass over its
//! store), the pull loop (sources, chunking, throttling, resuming from a progress file
//! after a crash), the progress counters, and the sweep of slots a node no longer keeps.
//! **Must not touch:** the map's rules (which slots move, when a change completes: `map.rs`
//! and the control plane), the coordinator's dual writes (`coordinator.rs`), RESP.
//!
//! A pass reads the source's store in key order, one chunk per request, and resumes after
//! the last key it sent. Each gained slot streams from the replica the gaining node
//! replaces in the slot's set ([`plan_streams`]); if that replica fails, the rest of the
//! slot comes from every other current replica, merged, from the same position (the
//! position is the same on every node). Everything streamed is a merge
//! (idempotent), and writes reach the new replica directly from the change's start, so a
//! chunk sent twice or a write racing a chunk changes nothing. Tombstones and expiry times
//! are records like any other and move with them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::{put_varint, Reader};
use crate::coordinator::DataNode;
use crate::exchange::read_slot;
use crate::map::ClusterMap;
use crate::record::Record;
use crate::{key_slot, NodeId, SLOT_COUNT};

/// One chunk of a pass over the source's store: `[varint slot count]{[u16 slot]}*`
/// `[u8 0 | 1 [varint db][varint len][key]]` (the position to go on after) → `[u8 0 (more)
/// [varint db][varint len][key] | 1 (done)][varint count]{[varint db][varint key len][key]
/// [varint record len][record]}*`.
pub const KIND_STREAM: u8 = 12;

/// Keys a source reads for one chunk, at most (those of other slots count too).
const CHUNK_READ_KEYS: usize = 50_000;
/// Record bytes in one chunk, at most (a key past it ends the chunk).
const CHUNK_BYTES: usize = 64 * 1024;
/// How long a chunk request may take.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause before asking another replica after a source failed.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// The progress file, in the transfer directory.
const PROGRESS_FILE: &str = "progress.json";
/// Records dropped per batch when a node drops the slots it gave away.
const DROP_BATCH: usize = 1024;
/// How often the progress file is saved while a stream runs (and at each stream's end).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What a node's transfers have done since it started (CLUSTER INFO, metrics).
#[derive(Debug, Default)]
pub struct TransferStats {
    /// Slots this node gains in the change in progress.
    pub slots_wanted: AtomicU64,
    /// Of those, the ones streamed to the end.
    pub slots_done: AtomicU64,
    /// Records received by streaming.
    pub keys_received: AtomicU64,
    /// Bytes of records received.
    pub bytes_received: AtomicU64,
    /// Chunks served to other nodes.
    pub chunks_sent: AtomicU64,
    /// Bytes of records served to other nodes.
    pub bytes_sent: AtomicU64,
    /// Records dropped for slots this node no longer keeps.
    pub keys_dropped: AtomicU64,
    /// The epoch of the change streamed last (0: none).
    pub change: AtomicU64,
}

/// How fast a node pulls.
#[derive(Debug, Clone, Copy)]
pub struct TransferLimits {
    /// Bytes of records per second, at most (0: no limit).
    pub bytes_per_second: u64,
}

/// The progress file: the change it is for, and each stream's slots and position.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Progress {
    /// The epoch the change started at.
    started: u64,
    streams: Vec<Stream>,
}

/// Slots pulled together from one source in one pass.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Stream {
    slots: Vec<u16>,
    /// The last position read: (database, key).
    after: Option<(usize, Vec<u8>)>,
    done: bool,
    /// The replica streamed from (`None` in a progress file from before sources were
    /// pinned: any current replica).
    #[serde(default)]
    from: Option<NodeId>,
    /// One of several streams of the same slots from every remaining current replica,
    /// merged (the replica this node replaces failed, or it replaces none).
    #[serde(default)]
    union: bool,
}

/// The streams that bring `me` the `slots` it gains in `map`'s change. A gaining node
/// streams each slot from the replica it replaces in the slot's set (the k-th node the
/// change adds to a slot takes the k-th node it removes, in preference order), as
/// Cassandra's consistent range movement does: the new set then holds what the old one
/// held, so a write that reached W replicas of the old set is on W replicas of the new one
/// (streaming from any replica could copy one that missed it, and the replica it replaces
/// may have been one of its W). A slot whose change removes no node (a cluster growing to
/// N) streams from every current replica, merged.
fn plan_streams(map: &ClusterMap, me: NodeId, slots: &[u16]) -> Vec<Stream> {
    let mut strict: BTreeMap<NodeId, Vec<u16>> = BTreeMap::new();
    let mut replacing_none = Vec::new();
    for &slot in slots {
        match replaced_by(map, me, slot) {
            Some(source) => strict.entry(source).or_default().push(slot),
            None => replacing_none.push(slot),
        }
    }
    let mut streams: Vec<Stream> = strict
        .into_iter()
        .map(|(from, slots)| Stream {
            slots,
            after: None,
            done: false,
            from: Some(from),
            union: false,
        })
        .collect();
    streams.extend(union_streams(map, me, &replacing_none, None, None));
    streams
}

/// The current replica of `slot` that `me` replaces in `map`'s change, if it replaces one.
fn replaced_by(map: &ClusterMap, me: NodeId, slot: u16) -> Option<NodeId> {
    let current = map.replicas(slot);
    let target = map.target_replicas(slot)?;
    let removed: Vec<NodeId> = current
        .iter()
        .copied()
        .filter(|n| !target.contains(n))
        .collect();
    let added = target.iter().filter(|n| !current.contains(n));
    let k = added.clone().position(|&n| n == me)?;
    removed.get(k).copied()
}

/// `slots` from every current replica of each (but this node and `failed`, the replica
/// this node replaces when it failed), merged, each stream from `after` on.
fn union_streams(
    map: &ClusterMap,
    me: NodeId,
    slots: &[u16],
    failed: Option<NodeId>,
    after: Option<(usize, Vec<u8>)>,
) -> Vec<Stream> {
    let mut by_source: BTreeMap<NodeId, Vec<u16>> = BTreeMap::new();
    for &slot in slots {
        for &node in map
            .replicas(slot)
            .iter()
            .filter(|&&n| n != me && Some(n) != failed)
        {
            by_source.entry(node).or_default().push(slot);
        }
    }
    by_source
        .into_iter()
        .map(|(from, slots)| Stream {
            slots,
            after: after.clone(),
            done: false,
            from: Some(from),
            union: true,
        })
        .collect()
}

/// A chunk as the source sends it.
struct Chunk {
    next: Option<(usize, Bytes)>,
    records: Vec<(usize, Bytes, Record)>,
    bytes: usize,
}

impl DataNode {
    /// The source's side of [`KIND_STREAM`]: one chunk. Reads the store: run it on the
    /// blocking pool.
    pub(crate) fn answer_stream(&self, payload: &[u8]) -> Result<Bytes, String> {
        let mut reader = Reader::new(payload);
        let count = reader.count(2).map_err(|e| e.to_string())?;
        let mut wanted = vec![false; usize::from(SLOT_COUNT)];
        for _ in 0..count {
            wanted[usize::from(read_slot(&mut reader)?)] = true;
        }
        let after = match reader.u8().map_err(|e| e.to_string())? {
            0 => None,
            _ => {
                let db = reader.varint().map_err(|e| e.to_string())? as usize;
                let len = reader.varint().map_err(|e| e.to_string())? as usize;
                Some((db, reader.bytes(len).map_err(|e| e.to_string())?))
            }
        };
        reader.finish().map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        let mut count = 0u64;
        let mut failed = None;
        let replica = self.replica();
        let next = self
            .keyspace()
            .for_each_in_slots_from(
                &|slot| wanted[usize::from(slot)],
                after,
                CHUNK_READ_KEYS,
                &mut |_, db, key, stored| {
                    let record = match replica.record_of_stored(&stored) {
                        Ok(record) => record.encode(),
                        Err(error) => {
                            failed = Some(error.to_string());
                            return false;
                        }
                    };
                    put_varint(&mut body, db as u64);
                    put_varint(&mut body, key.len() as u64);
                    body.extend_from_slice(&key);
                    put_varint(&mut body, record.len() as u64);
                    body.extend_from_slice(&record);
                    count += 1;
                    body.len() < CHUNK_BYTES
                },
            )
            .map_err(|e| e.to_string())?;
        if let Some(error) = failed {
            return Err(error);
        }
        let mut out = Vec::with_capacity(body.len() + 32);
        match &next {
            None => out.push(1),
            Some((db, key)) => {
                out.push(0);
                put_varint(&mut out, *db as u64);
                put_varint(&mut out, key.len() as u64);
                out.extend_from_slice(key);
            }
        }
        put_varint(&mut out, count);
        out.extend_from_slice(&body);
        self.transfer_stats()
            .chunks_sent
            .fetch_add(1, Ordering::Relaxed);
        self.transfer_stats()
            .bytes_sent
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(Bytes::from(out))
    }

    /// Pulls every slot this node gains in `map`'s change from current replicas, resuming
    /// from the progress file in `dir`; returns the change's start epoch once all are here
    /// (the caller tells the control plane), `Ok(None)` when the map has no change or this
    /// node gains nothing. Gives up (an error) when `map` is no longer current
    /// (`still_current` false): the caller starts over with the new map.
    pub async fn pull_gains(
        self: &Arc<Self>,
        map: &ClusterMap,
        dir: &Path,
        limits: TransferLimits,
        still_current: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Option<u64>, String> {
        let Some(change) = &map.change else {
            return Ok(None);
        };
        let gains = map.gains(self.id());
        if gains.is_empty() {
            return Ok(None);
        }
        let stats = self.transfer_stats();
        stats.change.store(change.started, Ordering::Relaxed);
        stats
            .slots_wanted
            .store(gains.len() as u64, Ordering::Relaxed);
        let path = dir.join(PROGRESS_FILE);
        let mut progress = match load_progress(&path) {
            Some(progress) if progress.started == change.started => progress,
            _ => Progress {
                started: change.started,
                streams: plan_streams(map, self.id(), &gains),
            },
        };
        self.persist(dir, &path, &progress).await?;
        let mut avoid: BTreeSet<NodeId> = BTreeSet::new();
        let mut window = (Instant::now(), 0u64);
        let mut saved = Instant::now();
        loop {
            let done_slots: u64 = progress
                .streams
                .iter()
                .filter(|s| s.done)
                .map(|s| s.slots.len() as u64)
                .sum();
            stats.slots_done.store(done_slots, Ordering::Relaxed);
            let Some(at) = progress.streams.iter().position(|s| !s.done) else {
                tracing::info!(
                    started = change.started,
                    slots = gains.len(),
                    "every gained slot streamed"
                );
                return Ok(Some(change.started));
            };
            if !still_current() {
                return Err("the map changed: starting over".into());
            }
            let stream = progress.streams[at].clone();
            let source = match stream.from {
                Some(source) => Some(source),
                None => self.source_for(map, &stream.slots, &avoid),
            };
            let Some(source) = source else {
                return Err(format!(
                    "no replica to stream slots {:?} from",
                    &stream.slots[..stream.slots.len().min(4)]
                ));
            };
            match self.pull_chunk(source, &stream).await {
                Ok(chunk) => {
                    avoid.clear();
                    let received = chunk.bytes as u64;
                    self.store_chunk(chunk.records).await?;
                    stats.bytes_received.fetch_add(received, Ordering::Relaxed);
                    let entry = &mut progress.streams[at];
                    let finished = chunk.next.is_none();
                    match chunk.next {
                        Some((db, key)) => entry.after = Some((db, key.to_vec())),
                        None => entry.done = true,
                    }
                    // The position is saved only over records on disk: the WAL is fsynced
                    // first. At most once a second, and at each stream's end.
                    if finished || saved.elapsed() >= PROGRESS_EVERY {
                        self.persist(dir, &path, &progress).await?;
                        saved = Instant::now();
                    }
                    throttle(&mut window, received, limits).await;
                }
                Err(error) => {
                    tracing::info!(source = %format!("{source:016x}"), %error, "streaming from a replica failed");
                    if stream.from.is_some() && !stream.union {
                        // The replica this node replaces failed: the rest of its slots come
                        // from every other current replica, merged, from where it stopped.
                        let union = union_streams(
                            map,
                            self.id(),
                            &stream.slots,
                            Some(source),
                            stream.after.clone(),
                        );
                        // No other replica holds the slots: wait for this one.
                        if !union.is_empty() {
                            progress.streams.splice(at..=at, union);
                            self.persist(dir, &path, &progress).await?;
                        }
                    } else if stream.from.is_none() {
                        avoid.insert(source);
                        if avoid.len() >= map.members.len() {
                            avoid.clear();
                        }
                    }
                    // A merged stream waits for its replica: each of them may hold writes
                    // the others lack.
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// Saves `progress` once every record merged so far is on disk (the WAL fsynced),
    /// off the tokio workers: a crash then resumes at or before what the disk holds.
    async fn persist(
        self: &Arc<Self>,
        dir: &Path,
        path: &Path,
        progress: &Progress,
    ) -> Result<(), String> {
        let this = self.clone();
        let (dir, path, progress) = (dir.to_path_buf(), path.to_path_buf(), progress.clone());
        this.clone()
            .blocking(move || {
                this.keyspace()
                    .engine()
                    .sync_all()
                    .map_err(|e| format!("syncing the WAL: {e}"))?;
                save_progress(&dir, &path, &progress)
            })
            .await?
    }

    /// One chunk of `stream` from `source`.
    async fn pull_chunk(
        self: &Arc<Self>,
        source: NodeId,
        stream: &Stream,
    ) -> Result<Chunk, String> {
        let mut payload = Vec::with_capacity(8 + 2 * stream.slots.len());
        put_varint(&mut payload, stream.slots.len() as u64);
        for slot in &stream.slots {
            payload.extend_from_slice(&slot.to_be_bytes());
        }
        match &stream.after {
            None => payload.push(0),
            Some((db, key)) => {
                payload.push(1);
                put_varint(&mut payload, *db as u64);
                put_varint(&mut payload, key.len() as u64);
                payload.extend_from_slice(key);
            }
        }
        let reply = tokio::time::timeout(
            CHUNK_TIMEOUT,
            self.send(source, KIND_STREAM, Bytes::from(payload)),
        )
        .await
        .map_err(|_| "chunk timed out".to_string())??;
        decode_chunk(&reply).map_err(|e| format!("damaged chunk: {e}"))
    }

    /// Merges a chunk's records into this node's store, off the tokio workers.
    async fn store_chunk(
        self: &Arc<Self>,
        records: Vec<(usize, Bytes, Record)>,
    ) -> Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        let count = records.len() as u64;
        let this = self.clone();
        this.clone()
            .blocking(move || {
                let mut by_db: BTreeMap<usize, (Vec<Bytes>, Vec<Record>)> = BTreeMap::new();
                for (db, key, record) in records {
                    let (keys, copies) = by_db.entry(db).or_default();
                    keys.push(key);
                    copies.push(record);
                }
                let replica = this.replica();
                for (db, (keys, records)) in by_db {
                    let copies: Vec<(&[u8], Record)> =
                        keys.iter().map(|key| &key[..]).zip(records).collect();
                    for batch in copies.chunks(crate::coordinator::MANY_KEYS_MAX) {
                        replica.merge_many(db, batch).map_err(|e| e.to_string())?;
                    }
                }
                Ok::<_, String>(())
            })
            .await??;
        self.transfer_stats()
            .keys_received
            .fetch_add(count, Ordering::Relaxed);
        Ok(())
    }

    /// The replica to stream `slots` from: the first current replica of the first slot
    /// that is not this node, not in `avoid`, and not down.
    fn source_for(
        &self,
        map: &ClusterMap,
        slots: &[u16],
        avoid: &BTreeSet<NodeId>,
    ) -> Option<NodeId> {
        let slot = *slots.first()?;
        let candidates = map
            .replicas(slot)
            .iter()
            .copied()
            .filter(|&n| n != self.id() && !avoid.contains(&n));
        let mut fallback = None;
        for node in candidates {
            if !self.is_down(node) {
                return Some(node);
            }
            fallback.get_or_insert(node);
        }
        fallback
    }

    /// Drops this node's records of the slots `map` says it does not keep (neither a
    /// replica nor one a change adds), keeping the anti-entropy trees right. Reads the whole
    /// store: run it on the blocking pool. Returns the records dropped.
    pub fn drop_unkept(&self, map: &ClusterMap) -> Result<u64, String> {
        let unkept: Vec<bool> = (0..SLOT_COUNT)
            .map(|slot| !map.keeps(self.id(), slot))
            .collect();
        if !unkept.iter().any(|&u| u) {
            return Ok(0);
        }
        // In batches, each read after the last key of the one before: memory stays bounded
        // by a batch, whatever this node gave away.
        let mut dropped = 0u64;
        let mut after: Option<(usize, Bytes)> = None;
        loop {
            let mut batch: Vec<(u16, usize, Bytes, Bytes)> = Vec::with_capacity(DROP_BATCH);
            let next = self
                .keyspace()
                .for_each_in_slots_from(
                    &|slot| unkept[usize::from(slot)],
                    after.as_ref().map(|(db, key)| (*db, &key[..])),
                    usize::MAX,
                    &mut |slot, db, key, stored| {
                        batch.push((slot, db, key, stored.raw.clone()));
                        batch.len() < DROP_BATCH
                    },
                )
                .map_err(|e| e.to_string())?;
            let mut by_db: BTreeMap<usize, Vec<&[u8]>> = BTreeMap::new();
            for (_, db, key, _) in &batch {
                by_db.entry(*db).or_default().push(&key[..]);
            }
            for (db, keys) in by_db {
                self.keyspace()
                    .delete_many(db, &keys)
                    .map_err(|e| e.to_string())?;
            }
            for (slot, db, key, raw) in &batch {
                self.trees().update(*slot, *db, key, Some(raw), None);
            }
            dropped += batch.len() as u64;
            match next {
                Some(position) => after = Some(position),
                None => break,
            }
        }
        if dropped > 0 {
            self.transfer_stats()
                .keys_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
        Ok(dropped)
    }
}

/// Sleeps as long as `limits` asks after `bytes` more were received in the current second.
async fn throttle(window: &mut (Instant, u64), bytes: u64, limits: TransferLimits) {
    if limits.bytes_per_second == 0 {
        return;
    }
    let (start, sent) = window;
    *sent += bytes;
    let allowed = Duration::from_secs_f64(*sent as f64 / limits.bytes_per_second as f64);
    let elapsed = start.elapsed();
    if allowed > elapsed {
        tokio::time::sleep(allowed - elapsed).await;
    }
    if start.elapsed() >= Duration::from_secs(1) {
        *window = (Instant::now(), 0);
    }
}

fn decode_chunk(input: &[u8]) -> Result<Chunk, crate::DecodeError> {
    let mut reader = Reader::new(input);
    let next = match reader.u8()? {
        1 => None,
        _ => {
            let db = reader.varint()? as usize;
            let len = reader.varint()? as usize;
            Some((db, Bytes::copy_from_slice(reader.bytes(len)?)))
        }
    };
    let count = reader.count(3)?;
    let mut records = Vec::with_capacity(count);
    let mut bytes = 0;
    for _ in 0..count {
        let db = reader.varint()? as usize;
        let len = reader.varint()? as usize;
        let key = Bytes::copy_from_slice(reader.bytes(len)?);
        let len = reader.varint()? as usize;
        let raw = reader.bytes(len)?;
        bytes += key.len() + raw.len();
        debug_assert!(key_slot(&key) < SLOT_COUNT);
        records.push((db, key, Record::decode(raw)?));
    }
    reader.finish()?;
    Ok(Chunk {
        next,
        records,
        bytes,
    })
}

fn load_progress(path: &Path) -> Option<Progress> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes the progress file atomically and durably (a new file, fsynced, renamed over the
/// old, the directory fsynced).
fn save_progress(dir: &Path, path: &Path, progress: &Progress) -> Result<(), String> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let tmp: PathBuf = dir.join(format!("{PROGRESS_FILE}.tmp"));
    let bytes = serde_json::to_vec(progress).map_err(|e| e.to_string())?;
    let failed = |e: std::io::Error| format!("writing {}: {e}", tmp.display());
    let mut file = std::fs::File::create(&tmp).map_err(failed)?;
    file.write_all(&bytes).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&tmp, path).map_err(|e| format!("renaming {}: {e}", tmp.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("syncing {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_refuse_damage() {
        let record = Record::default();
        let mut out = vec![0];
        put_varint(&mut out, 3);
        put_varint(&mut out, 4);
        out.extend_from_slice(b"last");
        put_varint(&mut out, 1);
        put_varint(&mut out, 0);
        put_varint(&mut out, 3);
        out.extend_from_slice(b"key");
        let raw = record.encode();
        put_varint(&mut out, raw.len() as u64);
        out.extend_from_slice(&raw);
        let chunk = decode_chunk(&out).unwrap();
        assert_eq!(chunk.next, Some((3, Bytes::from_static(b"last"))));
        assert_eq!(chunk.records.len(), 1);
        assert_eq!(chunk.records[0].1, Bytes::from_static(b"key"));
        for cut in 0..out.len() {
            assert!(decode_chunk(&out[..cut]).is_err(), "cut at {cut}");
        }
    }

    fn member(node: NodeId) -> crate::map::MemberInfo {
        crate::map::MemberInfo {
            node,
            client_addr: format!("10.0.0.{node}:6379"),
            cluster_addr: format!("10.0.0.{node}:16379"),
            zone: "default".into(),
            state: crate::map::MemberState::Up,
        }
    }

    /// A settled map of `nodes` members, N=3.
    fn settled(nodes: u64) -> ClusterMap {
        let mut map = ClusterMap::founded_by(member(1), 3).unwrap();
        for node in 2..=nodes {
            map = map.with_member(member(node)).unwrap();
            let started = map.change.as_ref().unwrap().started;
            for gainer in map.gainers() {
                map = map.with_ready(gainer, started).unwrap();
            }
        }
        map
    }

    #[test]
    fn a_joining_node_streams_each_slot_from_the_replica_it_replaces() {
        let map = settled(4).with_member(member(5)).unwrap();
        let gains = map.gains(5);
        assert!(!gains.is_empty());
        let streams = plan_streams(&map, 5, &gains);
        let mut covered: Vec<u16> = streams.iter().flat_map(|s| s.slots.clone()).collect();
        covered.sort_unstable();
        assert_eq!(covered, gains, "every gained slot streamed once");
        for stream in &streams {
            assert!(!stream.union);
            let from = stream.from.unwrap();
            for &slot in &stream.slots {
                assert!(
                    map.replicas(slot).contains(&from),
                    "slot {slot}: a current replica"
                );
                let target = map.target_replicas(slot).unwrap();
                assert!(
                    !target.contains(&from),
                    "slot {slot}: the one leaving its set"
                );
            }
        }
        // The replica it replaces fails: every other current replica, from the same place.
        let failed = streams[0].from.unwrap();
        let after = Some((0, b"k".to_vec()));
        let union = union_streams(&map, 5, &streams[0].slots, Some(failed), after.clone());
        for &slot in &streams[0].slots {
            let sources: Vec<NodeId> = union
                .iter()
                .filter(|s| s.slots.contains(&slot))
                .map(|s| s.from.unwrap())
                .collect();
            let mut others: Vec<NodeId> = map
                .replicas(slot)
                .iter()
                .copied()
                .filter(|&n| n != failed)
                .collect();
            others.sort_unstable();
            assert_eq!(sources, others, "slot {slot}");
        }
        assert!(union.iter().all(|s| s.union && s.after == after));
    }

    #[test]
    fn a_cluster_growing_to_n_streams_from_every_current_replica() {
        let map = settled(1).with_member(member(2)).unwrap();
        let gains = map.gains(2);
        assert_eq!(gains.len(), usize::from(SLOT_COUNT));
        let streams = plan_streams(&map, 2, &gains);
        assert_eq!(streams.len(), 1);
        assert!(streams[0].union && streams[0].from == Some(1));
    }

    #[test]
    fn progress_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PROGRESS_FILE);
        let progress = Progress {
            started: 7,
            streams: vec![Stream {
                slots: vec![1, 2],
                after: Some((0, b"k".to_vec())),
                done: false,
                from: Some(3),
                union: false,
            }],
        };
        save_progress(dir.path(), &path, &progress).unwrap();
        assert_eq!(load_progress(&path), Some(progress));
    }
}
