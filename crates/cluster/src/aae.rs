//! Active anti-entropy, Tictac style (docs/cluster.md, "Anti-entropy"): a
//! hash tree per slot that the write path keeps current, compared between
//! replicas so that only what differs is read and sent.
//!
//! Each of the 16384 slots has [`SEGMENTS`] segments; a segment is the XOR
//! of the digests of its keys (xxh3 of the database, the key and the stored
//! record), and a slot's root is the XOR of its segments. XOR makes the tree
//! incremental: a write that replaces record `a` by `b` XORs `digest(a) ^
//! digest(b)` into one segment, in any order with other writes, and no
//! rebuild is needed to stay current (Riak's Tictac AAE). Two replicas of a
//! slot that hold the same records have the same segments.
//!
//! **Owns:** the tree, the digests, the build from the store, the comparison
//! of two replicas' roots and segments, and their counters. **Must not
//! touch:** sending or repairing (the coordinator's exchange does that),
//! which slots a node holds (the map).
//!
//! The tree lives in memory (16384 × 16 × 8 bytes = 2 MiB) and is built from
//! the store at start, in the background; until then this node takes no part
//! in exchanges. A write that races the build's scan of its slot, or an
//! entry the store expires, leaves a segment off; the exchange recomputes
//! each segment it lists from the store, so such an error lasts until the
//! next exchange of that slot.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use xxhash_rust::xxh3::Xxh3;

use crate::codec::put_varint;
use crate::SLOT_COUNT;

/// Segments of one slot's tree.
pub const SEGMENTS: usize = 16;

/// The digest of one key's stored record: never 0 for a record (0 is "absent").
pub fn key_digest(db: usize, key: &[u8], stored: &[u8]) -> u64 {
    let mut hasher = Xxh3::new();
    let mut prefix = Vec::with_capacity(12);
    put_varint(&mut prefix, db as u64);
    put_varint(&mut prefix, key.len() as u64);
    hasher.update(&prefix);
    hasher.update(key);
    hasher.update(stored);
    hasher.digest().max(1)
}

/// Which segment of its slot `key` falls in.
pub fn segment_of(key: &[u8]) -> usize {
    (xxhash_rust::xxh3::xxh3_64(key) % SEGMENTS as u64) as usize
}

/// Counters of anti-entropy, for metrics and CLUSTER INFO.
#[derive(Debug, Default)]
pub struct AaeStats {
    /// Exchanges with a peer completed.
    pub exchanges: AtomicU64,
    /// Slots whose roots differed.
    pub slots_differing: AtomicU64,
    /// Keys found different (or missing on one side).
    pub keys_differing: AtomicU64,
    /// Keys repaired (records sent to the peer, or fetched and merged here).
    pub keys_repaired: AtomicU64,
    /// Bytes of records sent and received for repairs.
    pub repair_bytes: AtomicU64,
    /// Full builds of the tree from the store.
    pub builds: AtomicU64,
}

/// This node's trees, one per slot.
pub struct Trees {
    segments: Vec<AtomicU64>,
    ready: AtomicBool,
    stats: AaeStats,
}

impl std::fmt::Debug for Trees {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trees")
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl Default for Trees {
    fn default() -> Self {
        Self::new()
    }
}

impl Trees {
    /// Empty trees, not ready until [`Trees::build`] has run.
    pub fn new() -> Trees {
        Trees {
            segments: (0..usize::from(SLOT_COUNT) * SEGMENTS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            ready: AtomicBool::new(false),
            stats: AaeStats::default(),
        }
    }

    fn cell(&self, slot: u16, segment: usize) -> &AtomicU64 {
        &self.segments[usize::from(slot) * SEGMENTS + segment]
    }

    /// A write replaced `old` (the stored record, if any) by `new` at `key`.
    pub fn update(&self, slot: u16, db: usize, key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>) {
        let change = old.map_or(0, |old| key_digest(db, key, old))
            ^ new.map_or(0, |new| key_digest(db, key, new));
        if change != 0 {
            self.cell(slot, segment_of(key))
                .fetch_xor(change, Ordering::Relaxed);
        }
    }

    /// A slot's root: the XOR of its segments.
    pub fn root(&self, slot: u16) -> u64 {
        self.segments(slot).iter().fold(0, |root, s| root ^ s)
    }

    /// A slot's segments.
    pub fn segments(&self, slot: u16) -> [u64; SEGMENTS] {
        std::array::from_fn(|i| self.cell(slot, i).load(Ordering::Relaxed))
    }

    /// Sets a slot's segment to what the store holds (recomputed by an exchange).
    pub fn set_segment(&self, slot: u16, segment: usize, value: u64) {
        self.cell(slot, segment).store(value, Ordering::Relaxed);
    }

    /// The build from the store has run: this node may take part in exchanges.
    pub fn set_ready(&self) {
        self.stats.builds.fetch_add(1, Ordering::Relaxed);
        self.ready.store(true, Ordering::Release);
    }

    /// True once built.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The counters.
    pub fn stats(&self) -> &AaeStats {
        &self.stats
    }
}

/// The segments of two replicas' trees of one slot that differ.
pub fn differing_segments(mine: &[u64; SEGMENTS], theirs: &[u64; SEGMENTS]) -> Vec<usize> {
    (0..SEGMENTS).filter(|&i| mine[i] != theirs[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_is_incremental_and_order_free() {
        let a = Trees::new();
        let b = Trees::new();
        let writes: Vec<(Vec<u8>, Vec<u8>)> = (0..200)
            .map(|i| {
                (
                    format!("k{}", i % 50).into_bytes(),
                    format!("v{i}").into_bytes(),
                )
            })
            .collect();
        // `a` sees the writes in order, each replacing the key's previous record.
        let mut held: std::collections::HashMap<Vec<u8>, Vec<u8>> = Default::default();
        for (key, value) in &writes {
            let old = held.insert(key.clone(), value.clone());
            a.update(7, 0, key, old.as_deref(), Some(value));
        }
        // `b` is built from the final state at once, as a build from the store does.
        for (key, value) in &held {
            b.update(7, 0, key, None, Some(value));
        }
        assert_eq!(a.segments(7), b.segments(7));
        assert_ne!(a.root(7), 0);
        // One key differing shows in exactly one segment.
        let key = b"k3".to_vec();
        let old = held[&key].clone();
        a.update(7, 0, &key, Some(&old), Some(b"other"));
        let differ = differing_segments(&a.segments(7), &b.segments(7));
        assert_eq!(differ, vec![segment_of(&key)]);
        // The database is part of the digest; a delete takes the key's digest out.
        a.update(7, 0, &key, Some(b"other"), None);
        b.update(7, 0, &key, Some(&old), None);
        assert_eq!(a.segments(7), b.segments(7));
        assert_ne!(key_digest(0, b"k", b"v"), key_digest(1, b"k", b"v"));
        assert_eq!(a.root(8), 0, "other slots untouched");
    }
}
