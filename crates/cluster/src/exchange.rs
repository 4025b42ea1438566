//! The anti-entropy exchange between two replicas (docs/cluster.md,
//! "Anti-entropy"): compare the roots of the slots both hold, then the
//! segments of the slots that differ, then the keys of the segments that
//! differ, and repair only those keys, both ways.
//!
//! **Owns:** the exchange's requests (`KIND_AAE_*`), their answers on the
//! replica's side, the order of an exchange and its bounds (slots and keys
//! per pass). **Must not touch:** the tree itself (`aae.rs`), when exchanges
//! run or with whom (the server's loop picks a peer on a schedule), records'
//! merge rules (`record.rs`).
//!
//! A repair is a read of the peer's copy merged into this node's, and the
//! merge sent back when the peer's copy did not already hold it: records
//! merge, so a repair can only add what one side had not seen, and a delete
//! travels as its tombstone.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::StreamExt;

use crate::aae::{differing_segments, key_digest, segment_of, SEGMENTS};
use crate::codec::{put_varint, Reader};
use crate::coordinator::{encode_key, encode_merge, DataNode, KIND_MERGE, KIND_READ};
use crate::map::ClusterMap;
use crate::record::Record;
use crate::{DecodeError, NodeId, SLOT_COUNT};

/// A peer's roots of some slots: `[varint count][u16 BE slot]…` →
/// `[u8 ready]` then, if ready, `[u64 BE root]` per slot.
pub const KIND_AAE_ROOTS: u8 = 9;
/// A peer's segments of some slots: `[varint count][u16 BE slot]…` → `[u8 ready]` then,
/// if ready, `SEGMENTS × [u64 BE]` per slot.
pub const KIND_AAE_SEGMENTS: u8 = 10;
/// A peer's keys of some segments of some slots, read from its store:
/// `[varint count]` then per slot `[u16 BE slot][u16 BE segment mask]` → per key
/// `[varint db][varint len][key][u64 BE digest]`.
pub const KIND_AAE_KEYS: u8 = 11;

/// Slots asked for in one roots or segments request.
const ROOTS_PER_REQUEST: usize = 4096;
/// Slots whose keys one request lists (one pass over the store on each side).
const SLOTS_PER_KEYS_REQUEST: usize = 1024;

/// Key repairs of one exchange in flight at once.
const REPAIRS_IN_FLIGHT: usize = 16;

/// How much one exchange may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeLimits {
    /// Differing slots looked into.
    pub slots: usize,
    /// Keys repaired.
    pub keys: usize,
}

impl Default for ExchangeLimits {
    fn default() -> Self {
        Self {
            slots: 1024,
            keys: 10_000,
        }
    }
}

/// What one exchange found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exchanged {
    /// Slots both nodes hold.
    pub slots_compared: usize,
    /// Of those, slots whose roots differed.
    pub slots_differing: usize,
    /// Keys found different or missing on one side.
    pub keys_differing: usize,
    /// Keys repaired.
    pub keys_repaired: usize,
    /// Record bytes moved for the repairs, both ways.
    pub bytes: u64,
}

fn damaged(error: DecodeError) -> String {
    format!("damaged anti-entropy reply: {error}")
}

impl DataNode {
    /// Answers an anti-entropy request (the replica's side). Reads the store for
    /// [`KIND_AAE_KEYS`]: run on the blocking pool.
    pub(crate) fn answer_exchange(&self, kind: u8, payload: &[u8]) -> Result<Bytes, String> {
        let trees = self.trees();
        let mut reader = Reader::new(payload);
        let mut out = Vec::new();
        match kind {
            KIND_AAE_ROOTS | KIND_AAE_SEGMENTS => {
                let count = reader.count(2).map_err(|e| e.to_string())?;
                out.push(u8::from(trees.is_ready()));
                if trees.is_ready() {
                    for _ in 0..count {
                        let slot = read_slot(&mut reader)?;
                        if kind == KIND_AAE_ROOTS {
                            out.extend_from_slice(&trees.root(slot).to_be_bytes());
                        } else {
                            for segment in trees.segments(slot) {
                                out.extend_from_slice(&segment.to_be_bytes());
                            }
                        }
                    }
                }
            }
            KIND_AAE_KEYS => {
                let count = reader.count(4).map_err(|e| e.to_string())?;
                let mut masks = BTreeMap::new();
                for _ in 0..count {
                    let slot = read_slot(&mut reader)?;
                    let mask = read_u16(&mut reader)?;
                    masks.insert(slot, mask);
                }
                for ((db, key), digest) in self.local_keys(&masks)? {
                    put_varint(&mut out, db as u64);
                    put_varint(&mut out, key.len() as u64);
                    out.extend_from_slice(&key);
                    out.extend_from_slice(&digest.to_be_bytes());
                }
            }
            other => return Err(format!("unknown anti-entropy request kind {other}")),
        }
        Ok(Bytes::from(out))
    }

    /// This node's keys in the segments `masks` names (slot → segment bit mask), with their
    /// digests, read from the store in one pass; the segments listed are set to what the
    /// store holds (healing a tree that a race or an expiry left off).
    fn local_keys(
        &self,
        masks: &BTreeMap<u16, u16>,
    ) -> Result<BTreeMap<(usize, Bytes), u64>, String> {
        let mut keys = BTreeMap::new();
        let mut segments: BTreeMap<u16, [u64; SEGMENTS]> =
            masks.keys().map(|&slot| (slot, [0; SEGMENTS])).collect();
        self.keyspace()
            .for_each_in_slots(
                &|slot| masks.contains_key(&slot),
                &mut |slot, db, key, stored| {
                    let segment = segment_of(&key);
                    if masks[&slot] & (1 << segment) == 0 {
                        return;
                    }
                    let digest = key_digest(db, &key, &stored.raw);
                    if let Some(values) = segments.get_mut(&slot) {
                        values[segment] ^= digest;
                    }
                    keys.insert((db, key), digest);
                },
            )
            .map_err(|e| e.to_string())?;
        for (slot, values) in segments {
            for (segment, value) in values.into_iter().enumerate() {
                if masks[&slot] & (1 << segment) != 0 {
                    self.trees().set_segment(slot, segment, value);
                }
            }
        }
        Ok(keys)
    }

    /// Builds this node's trees from its store (at start, and now and then as a check):
    /// every key read and hashed, in one pass. Blocking: run it on the blocking pool.
    pub fn build_trees(&self) -> Result<(), String> {
        let mut segments = vec![[0u64; SEGMENTS]; usize::from(SLOT_COUNT)];
        self.keyspace()
            .for_each_in_slots(&|_| true, &mut |slot, db, key, stored| {
                segments[usize::from(slot)][segment_of(&key)] ^= key_digest(db, &key, &stored.raw);
            })
            .map_err(|e| e.to_string())?;
        let trees = self.trees();
        for (slot, values) in segments.into_iter().enumerate() {
            for (segment, value) in values.into_iter().enumerate() {
                trees.set_segment(slot as u16, segment, value);
            }
        }
        trees.set_ready();
        Ok(())
    }

    /// One exchange with `peer` over the slots both hold in `map`: roots, then segments,
    /// then keys, and the differing keys repaired both ways, within `limits`.
    pub async fn exchange(
        self: &Arc<Self>,
        map: &ClusterMap,
        peer: NodeId,
        limits: ExchangeLimits,
    ) -> Result<Exchanged, String> {
        let trees = self.trees();
        if !trees.is_ready() {
            return Err("this node's trees are still being built".into());
        }
        let me = self.id();
        let common: Vec<u16> = (0..SLOT_COUNT)
            .filter(|&slot| {
                let replicas = map.replicas(slot);
                replicas.contains(&me) && replicas.contains(&peer)
            })
            .collect();
        let mut done = Exchanged {
            slots_compared: common.len(),
            ..Exchanged::default()
        };
        // Roots.
        let mut differing = Vec::new();
        for chunk in common.chunks(ROOTS_PER_REQUEST) {
            let reply = self.send(peer, KIND_AAE_ROOTS, slot_list(chunk)).await?;
            let mut reader = Reader::new(&reply);
            if reader.u8().map_err(damaged)? == 0 {
                return Err("the peer's trees are still being built".into());
            }
            for &slot in chunk {
                let theirs = read_u64(&mut reader)?;
                if theirs != trees.root(slot) {
                    differing.push(slot);
                }
            }
        }
        done.slots_differing = differing.len();
        trees
            .stats()
            .slots_differing
            .fetch_add(differing.len() as u64, Ordering::Relaxed);
        // Segments of the differing slots, then their differing segments' keys, a batch of
        // slots at a time (one pass over each store per batch), then the repairs.
        if differing.len() > limits.slots {
            // A window at a random place: exchanges running at once on several nodes (all
            // repairing one wiped replica) then work on different slots, not the same first
            // ones (measured: 1.67 repairs per key when they all started at slot 0).
            let start = self.random_u64() as usize % differing.len();
            differing.rotate_left(start);
            differing.truncate(limits.slots);
            differing.sort_unstable();
        }
        let mut masks = BTreeMap::new();
        for chunk in differing.chunks(ROOTS_PER_REQUEST) {
            let reply = self.send(peer, KIND_AAE_SEGMENTS, slot_list(chunk)).await?;
            let mut reader = Reader::new(&reply);
            if reader.u8().map_err(damaged)? == 0 {
                return Err("the peer's trees are still being built".into());
            }
            for &slot in chunk {
                let mut theirs = [0u64; SEGMENTS];
                for value in &mut theirs {
                    *value = read_u64(&mut reader)?;
                }
                let mask = differing_segments(&trees.segments(slot), &theirs)
                    .into_iter()
                    .fold(0u16, |mask, segment| mask | (1 << segment));
                if mask != 0 {
                    masks.insert(slot, mask);
                }
            }
        }
        let masks: Vec<(u16, u16)> = masks.into_iter().collect();
        for chunk in masks.chunks(SLOTS_PER_KEYS_REQUEST) {
            if done.keys_repaired >= limits.keys {
                break;
            }
            let mut request = Vec::with_capacity(3 + chunk.len() * 4);
            put_varint(&mut request, chunk.len() as u64);
            for (slot, mask) in chunk {
                request.extend_from_slice(&slot.to_be_bytes());
                request.extend_from_slice(&mask.to_be_bytes());
            }
            let reply = self.send(peer, KIND_AAE_KEYS, Bytes::from(request)).await?;
            let theirs = decode_key_list(&reply)?;
            let this = self.clone();
            let wanted: BTreeMap<u16, u16> = chunk.iter().copied().collect();
            let mine = self.blocking(move || this.local_keys(&wanted)).await??;
            let mut keys: Vec<(usize, Bytes)> = Vec::new();
            for (key, digest) in &mine {
                if theirs.get(key) != Some(digest) {
                    keys.push(key.clone());
                }
            }
            for key in theirs.keys() {
                if !mine.contains_key(key) {
                    keys.push(key.clone());
                }
            }
            done.keys_differing += keys.len();
            trees
                .stats()
                .keys_differing
                .fetch_add(keys.len() as u64, Ordering::Relaxed);
            let budget = limits.keys - done.keys_repaired;
            let mut repairs = futures::stream::iter(keys.into_iter().take(budget))
                .map(|(db, key)| async move { self.repair_key(peer, db, &key).await })
                .buffer_unordered(REPAIRS_IN_FLIGHT);
            while let Some(repaired) = repairs.next().await {
                done.bytes += repaired?;
                done.keys_repaired += 1;
                trees.stats().keys_repaired.fetch_add(1, Ordering::Relaxed);
            }
        }
        trees.stats().exchanges.fetch_add(1, Ordering::Relaxed);
        trees
            .stats()
            .repair_bytes
            .fetch_add(done.bytes, Ordering::Relaxed);
        Ok(done)
    }

    /// Brings `key` to the same record here and on `peer`: the peer's copy is read and
    /// merged here, and the merge sent back unless the peer's copy already held it. The
    /// record bytes moved.
    async fn repair_key(
        self: &Arc<Self>,
        peer: NodeId,
        db: usize,
        key: &Bytes,
    ) -> Result<u64, String> {
        let reply = self.send(peer, KIND_READ, encode_key(db, key)).await?;
        let theirs = Record::decode(&reply).map_err(|e| format!("damaged copy: {e}"))?;
        let this = self.clone();
        let key_here = key.clone();
        let incoming = theirs.clone();
        let merged = self
            .blocking(move || this.merge_here(db, &key_here, &incoming))
            .await??;
        let mut bytes = reply.len() as u64;
        if merged != theirs {
            let payload = encode_merge(db, key, &merged);
            bytes += payload.len() as u64;
            self.send(peer, KIND_MERGE, payload).await?;
        }
        Ok(bytes)
    }
}

/// `[varint count][u16 BE slot]…`
fn slot_list(slots: &[u16]) -> Bytes {
    let mut request = Vec::with_capacity(3 + slots.len() * 2);
    put_varint(&mut request, slots.len() as u64);
    for slot in slots {
        request.extend_from_slice(&slot.to_be_bytes());
    }
    Bytes::from(request)
}

pub(crate) fn read_slot(reader: &mut Reader<'_>) -> Result<u16, String> {
    let slot = read_u16(reader)?;
    if slot >= SLOT_COUNT {
        return Err(format!("slot {slot} out of range"));
    }
    Ok(slot)
}

fn read_u16(reader: &mut Reader<'_>) -> Result<u16, String> {
    Ok(u16::from_be_bytes(
        reader
            .bytes(2)
            .map_err(damaged)?
            .try_into()
            .expect("2 bytes"),
    ))
}

fn read_u64(reader: &mut Reader<'_>) -> Result<u64, String> {
    Ok(u64::from_be_bytes(
        reader
            .bytes(8)
            .map_err(damaged)?
            .try_into()
            .expect("8 bytes"),
    ))
}

fn decode_key_list(input: &[u8]) -> Result<BTreeMap<(usize, Bytes), u64>, String> {
    let mut reader = Reader::new(input);
    let mut keys = BTreeMap::new();
    while reader.remaining() > 0 {
        let db = reader.varint().map_err(damaged)? as usize;
        let len = reader.varint().map_err(damaged)? as usize;
        let key = Bytes::copy_from_slice(reader.bytes(len).map_err(damaged)?);
        keys.insert((db, key), read_u64(&mut reader)?);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lists_round_trip_and_refuse_damage() {
        let mut out = Vec::new();
        for (db, key, digest) in [(0usize, &b"a"[..], 7u64), (3, b"bb", u64::MAX)] {
            put_varint(&mut out, db as u64);
            put_varint(&mut out, key.len() as u64);
            out.extend_from_slice(key);
            out.extend_from_slice(&digest.to_be_bytes());
        }
        let keys = decode_key_list(&out).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[&(3, Bytes::from_static(b"bb"))], u64::MAX);
        assert!(decode_key_list(&out[..out.len() - 1]).is_err());
    }
}
