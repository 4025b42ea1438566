//! The memtable: an ordered, concurrent in-memory table of internal keys.
//!
//! Writers insert under the database's write lock (which also orders
//! sequence numbers); readers search and iterate without any lock, through
//! the lock-free skip list.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};

use bytes::Bytes;
use crossbeam_skiplist::SkipMap;

use crate::format::{self, compare_internal, Kind};

/// Bytes charged per entry on top of key and value, for skip-list nodes.
const ENTRY_OVERHEAD_BYTES: usize = 80;

/// An internal key ordered by [`compare_internal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InternalKey(pub Bytes);

impl Ord for InternalKey {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_internal(&self.0, &other.0)
    }
}

impl PartialOrd for InternalKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// An ordered in-memory table.
#[derive(Debug)]
pub(crate) struct Memtable {
    map: SkipMap<InternalKey, Bytes>,
    bytes: AtomicUsize,
    /// Highest sequence inserted.
    max_seq: AtomicU64,
    /// Number of the WAL segment holding this memtable's records.
    pub wal_number: u64,
}

impl Memtable {
    pub fn new(wal_number: u64) -> Memtable {
        Memtable {
            map: SkipMap::new(),
            bytes: AtomicUsize::new(0),
            max_seq: AtomicU64::new(0),
            wal_number,
        }
    }

    /// Inserts one entry; `stored_value` is already encoded (see [`format`]).
    pub fn insert(&self, user_key: &[u8], seq: u64, kind: Kind, stored_value: Bytes) {
        let key = format::internal_key(user_key, seq, kind);
        self.bytes.fetch_add(
            key.len() + stored_value.len() + ENTRY_OVERHEAD_BYTES,
            AtomicOrdering::Relaxed,
        );
        self.map.insert(InternalKey(Bytes::from(key)), stored_value);
        self.max_seq.fetch_max(seq, AtomicOrdering::Release);
    }

    /// Highest sequence inserted (0 when empty).
    pub fn max_seq(&self) -> u64 {
        self.max_seq.load(AtomicOrdering::Acquire)
    }

    /// The newest entry for `user_key` with a sequence ≤ `seq`:
    /// (internal key, stored value).
    pub fn get(&self, user_key: &[u8], seq: u64) -> Option<(Bytes, Bytes)> {
        let target = InternalKey(Bytes::from(format::seek_key(user_key, seq)));
        let entry = self.map.lower_bound(Bound::Included(&target))?;
        let key = &entry.key().0;
        (format::user_key(key) == user_key).then(|| (key.clone(), entry.value().clone()))
    }

    /// The first entry at or after `target` (an internal key), or after it
    /// when `inclusive` is false.
    pub fn seek(&self, target: &Bytes, inclusive: bool) -> Option<(Bytes, Bytes)> {
        let target = InternalKey(target.clone());
        let bound = if inclusive {
            Bound::Included(&target)
        } else {
            Bound::Excluded(&target)
        };
        let entry = self.map.lower_bound(bound)?;
        Some((entry.key().0.clone(), entry.value().clone()))
    }

    /// The first entry of the table.
    pub fn first(&self) -> Option<(Bytes, Bytes)> {
        let entry = self.map.front()?;
        Some((entry.key().0.clone(), entry.value().clone()))
    }

    /// Every entry in order (for flushing).
    pub fn entries(&self) -> impl Iterator<Item = (Bytes, Bytes)> + '_ {
        self.map
            .iter()
            .map(|entry| (entry.key().0.clone(), entry.value().clone()))
    }

    /// Approximate memory used, in bytes.
    pub fn approximate_bytes(&self) -> usize {
        self.bytes.load(AtomicOrdering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
