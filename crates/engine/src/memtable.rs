//! The memtable: an ordered in-memory table of internal keys.
//!
//! A B-tree behind a reader-writer lock. Writers insert under the
//! database's write lock (which also orders sequence numbers), so the tree
//! lock is only ever contended between one writer and readers, for the
//! length of one insert or lookup. A B-tree does far fewer key comparisons
//! and cache misses per lookup than a skip list (the skip list this
//! replaced spent ~40% of a SET-heavy server's time searching), and keys
//! carry an inline head so most comparisons stay inside the node
//! ([`Entry`]).
//!
//! Each entry's internal key and value sit side by side in the memtable's
//! arena: chunks of [`ARENA_CHUNK_BYTES`] filled in order and shared by
//! reference count (issue 12, docs/BENCHMARKS.md). An insert copies its key
//! and value in and allocates nothing of its own, and a flushed memtable is
//! given back a chunk at a time instead of two heap blocks per entry, which
//! the flush thread freed one by one into the writers' allocator caches.
//! What a lookup hands out is a slice of a chunk: it keeps that chunk alive,
//! so a caller that keeps a value long copies it.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};

use crate::format::{self, compare_internal, Kind};

/// Bytes charged per entry on top of key and value, for tree nodes and
/// the key's allocation.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// Bytes of the user key kept inline in an [`Entry`].
const HEAD_BYTES: usize = 32;

/// Size of one arena chunk.
const ARENA_CHUNK_BYTES: usize = 128 * 1024;

/// Entries larger than this get an allocation of their own, so a large value neither
/// starts a chunk it mostly fills nor leaves the rest of the current one unused.
const ARENA_ENTRY_BYTES_MAX: usize = ARENA_CHUNK_BYTES / 8;

/// One version of a key: its internal key followed by its stored value in one slice of
/// the arena (`bytes`), ordered by [`compare_internal`] on the internal key, with the
/// first [`HEAD_BYTES`] of the user key kept inline (big-endian words, zero-padded), and
/// the user key's length and the trailer beside them.
///
/// Searching the tree compares the target with a handful of keys per node.
/// With the key bytes behind a pointer, every comparison was a cache miss
/// (a SET-heavy profile spent ~17% in `memcmp` on them); the inline head
/// decides most comparisons from the node's own memory. Heads order like the
/// user keys they start: at the first differing byte both are real bytes, or
/// the shorter key's zero padding meets a byte of a key it is a prefix of.
/// Equal heads of two keys that fit in the head are equal user keys exactly
/// when their lengths are equal (else the shorter one is a prefix of the
/// other, and first), and the trailers decide; only keys longer than the
/// head fall back to the full comparison.
///
/// The head was 16 bytes until issue 12: the store's 3-byte prefix (family,
/// namespace) left 13 bytes of the user key, so redis-benchmark's keys
/// (`counter:000000NNNNNN`, `key:000000NNNNNN`) tied on their heads and
/// every INCR descent compared through the pointers.
#[derive(Debug)]
pub(crate) struct Entry {
    head: [u64; HEAD_BYTES / 8],
    trailer: u64,
    user_len: u32,
    bytes: Bytes,
}

impl Entry {
    /// An entry whose internal key is `bytes[..key_len]` and whose value is the rest.
    fn new(bytes: Bytes, key_len: usize) -> Entry {
        debug_assert!(key_len >= format::TRAILER_LEN && key_len <= bytes.len());
        let key = &bytes[..key_len];
        let user_key = format::user_key(key);
        let mut padded = [0u8; HEAD_BYTES];
        let n = user_key.len().min(HEAD_BYTES);
        padded[..n].copy_from_slice(&user_key[..n]);
        let mut head = [0u64; HEAD_BYTES / 8];
        for (word, chunk) in head.iter_mut().zip(padded.chunks_exact(8)) {
            *word = u64::from_be_bytes(chunk.try_into().expect("8 bytes"));
        }
        Entry {
            head,
            trailer: format::key_trailer(key),
            user_len: u32::try_from(user_key.len()).expect("keys are far below 4 GiB"),
            bytes,
        }
    }

    /// A search target: an internal key and no value.
    fn target(internal_key: Bytes) -> Entry {
        let len = internal_key.len();
        Entry::new(internal_key, len)
    }

    fn key_len(&self) -> usize {
        self.user_len as usize + format::TRAILER_LEN
    }

    fn key(&self) -> &[u8] {
        &self.bytes[..self.key_len()]
    }

    fn value(&self) -> &[u8] {
        &self.bytes[self.key_len()..]
    }

    /// The internal key and the value, as slices sharing the entry's memory.
    fn to_pair(&self) -> (Bytes, Bytes) {
        let key_len = self.key_len();
        (self.bytes.slice(..key_len), self.bytes.slice(key_len..))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.head.cmp(&other.head).then_with(|| {
            let inline = HEAD_BYTES as u32;
            if self.user_len <= inline && other.user_len <= inline {
                self.user_len
                    .cmp(&other.user_len)
                    .then_with(|| other.trailer.cmp(&self.trailer))
            } else {
                compare_internal(self.key(), other.key())
            }
        })
    }
}

/// Equal as the tree orders them: by internal key, whatever the values (a derived `Eq` would
/// compare the value bytes too, and disagree with [`Ord`]).
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Where entries are copied in: the unused rest of the current chunk.
#[derive(Debug)]
struct Arena {
    free: BytesMut,
}

impl Arena {
    /// Copies an entry's internal key (`user_key` and its trailer) and value in, as one slice.
    fn push(&mut self, user_key: &[u8], seq: u64, kind: Kind, value: &[u8]) -> Bytes {
        let len = user_key.len() + format::TRAILER_LEN + value.len();
        let trailer = format::trailer(seq, kind).to_be_bytes();
        if len > ARENA_ENTRY_BYTES_MAX {
            let mut own = Vec::with_capacity(len);
            own.extend_from_slice(user_key);
            own.extend_from_slice(&trailer);
            own.extend_from_slice(value);
            return Bytes::from(own);
        }
        if self.free.capacity() < len {
            self.free = BytesMut::with_capacity(ARENA_CHUNK_BYTES);
        }
        // Within the capacity checked above: no reallocation, so every slice handed out
        // keeps pointing into the chunk it was written to.
        self.free.extend_from_slice(user_key);
        self.free.extend_from_slice(&trailer);
        self.free.extend_from_slice(value);
        self.free.split().freeze()
    }
}

/// An ordered in-memory table.
#[derive(Debug)]
pub(crate) struct Memtable {
    map: RwLock<BTreeSet<Entry>>,
    /// Only writers take it, and they already hold the database's write lock: it is never
    /// contended, and keeps the copies out of the tree's lock.
    arena: Mutex<Arena>,
    bytes: AtomicUsize,
    /// Highest sequence inserted.
    max_seq: AtomicU64,
    /// Number of the WAL segment holding this memtable's records.
    pub wal_number: u64,
}

impl Memtable {
    pub fn new(wal_number: u64) -> Memtable {
        Memtable {
            map: RwLock::new(BTreeSet::new()),
            arena: Mutex::new(Arena {
                free: BytesMut::new(),
            }),
            bytes: AtomicUsize::new(0),
            max_seq: AtomicU64::new(0),
            wal_number,
        }
    }

    /// Inserts one entry; `stored_value` is already encoded (see [`format`]).
    pub fn insert(&self, user_key: &[u8], seq: u64, kind: Kind, stored_value: impl AsRef<[u8]>) {
        self.insert_all(std::iter::once((user_key, seq, kind, stored_value)));
    }

    /// Inserts a batch's entries under one write lock (issue 12): per entry, a reader
    /// waiting for the tree and the writer waiting for readers spun and yielded the CPU (a
    /// third of the server's `sched_yield` calls under INCR at pipeline 16). The entries are
    /// copied into the arena before the lock is taken.
    pub fn insert_all<'k, V: AsRef<[u8]>>(
        &self,
        entries: impl Iterator<Item = (&'k [u8], u64, Kind, V)>,
    ) {
        let mut built = Vec::with_capacity(entries.size_hint().0);
        let mut bytes = 0;
        let mut max_seq = 0;
        {
            let mut arena = self.arena.lock();
            for (user_key, seq, kind, stored_value) in entries {
                let value = stored_value.as_ref();
                let key_len = user_key.len() + format::TRAILER_LEN;
                bytes += key_len + value.len() + ENTRY_OVERHEAD_BYTES;
                max_seq = max_seq.max(seq);
                built.push(Entry::new(arena.push(user_key, seq, kind, value), key_len));
            }
        }
        self.bytes.fetch_add(bytes, AtomicOrdering::Relaxed);
        let mut map = self.map.write();
        for entry in built {
            map.insert(entry);
        }
        drop(map);
        self.max_seq.fetch_max(max_seq, AtomicOrdering::Release);
    }

    /// Highest sequence inserted (0 when empty).
    pub fn max_seq(&self) -> u64 {
        self.max_seq.load(AtomicOrdering::Acquire)
    }

    /// The newest entry for `user_key` with a sequence ≤ `seq`:
    /// (internal key, stored value).
    pub fn get(&self, user_key: &[u8], seq: u64) -> Option<(Bytes, Bytes)> {
        // The search key is an owned `Entry` (its inline head is what makes the search
        // cheap), so it is built straight into its own allocation.
        let mut target = Vec::with_capacity(user_key.len() + format::TRAILER_LEN);
        target.extend_from_slice(user_key);
        // The highest kind byte sorts first among equal sequences.
        target.extend_from_slice(&((seq << 8) | 0xff).to_be_bytes());
        let target = Entry::target(Bytes::from(target));
        let map = self.map.read();
        let entry = map
            .range((Bound::Included(target), Bound::Unbounded))
            .next()?;
        (format::user_key(entry.key()) == user_key).then(|| entry.to_pair())
    }

    /// The first entry at or after `target` (an internal key), or after it
    /// when `inclusive` is false.
    pub fn seek(&self, target: &[u8], inclusive: bool) -> Option<(Bytes, Bytes)> {
        let target = Entry::target(Bytes::copy_from_slice(target));
        let start = if inclusive {
            Bound::Included(target)
        } else {
            Bound::Excluded(target)
        };
        let map = self.map.read();
        let entry = map.range((start, Bound::Unbounded)).next()?;
        Some(entry.to_pair())
    }

    /// Up to `limit` entries in order into `out`: from the first (`from` is `None`), or
    /// after `from` (an internal key, excluded). One lock and one descent for the run, where
    /// [`Memtable::seek`] per entry pays both each time (a scan's cursor, `iter::MemSource`).
    pub fn run_after(
        &self,
        from: Option<&[u8]>,
        limit: usize,
        out: &mut std::collections::VecDeque<(Bytes, Bytes)>,
    ) {
        let start = match from {
            Some(key) => Bound::Excluded(Entry::target(Bytes::copy_from_slice(key))),
            None => Bound::Unbounded,
        };
        let map = self.map.read();
        out.extend(
            map.range((start, Bound::Unbounded))
                .take(limit)
                .map(Entry::to_pair),
        );
    }

    /// Calls `f` on every entry in order (for flushing a frozen memtable),
    /// stopping at the first error.
    pub fn try_for_each<E>(
        &self,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let map = self.map.read();
        for entry in map.iter() {
            f(entry.key(), entry.value())?;
        }
        Ok(())
    }

    /// Approximate memory used, in bytes.
    pub fn approximate_bytes(&self) -> usize {
        self.bytes.load(AtomicOrdering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Just;

    #[test]
    fn lookups_find_the_newest_visible_version_with_borrowed_keys() {
        let table = Memtable::new(1);
        table.insert(b"a", 1, Kind::Put, Bytes::from_static(b"a1"));
        table.insert(b"a", 5, Kind::Put, Bytes::from_static(b"a5"));
        table.insert(b"ab", 3, Kind::Delete, Bytes::new());
        assert_eq!(table.get(b"a", 9).unwrap().1, Bytes::from_static(b"a5"));
        assert_eq!(table.get(b"a", 4).unwrap().1, Bytes::from_static(b"a1"));
        assert!(table.get(b"a", 0).is_none());
        assert!(table.get(b"", 9).is_none());
        let (key, _) = table.get(b"ab", 3).unwrap();
        assert_eq!(format::key_kind_byte(&key), Kind::Delete as u8);
        // Seek past every version of "a" lands on "ab".
        let past_a = format::internal_key(b"a", 0, Kind::Delete);
        assert_eq!(
            format::user_key(&table.seek(&past_a, false).unwrap().0),
            b"ab"
        );
        // Runs: from the start, then after a key, bounded by the limit.
        let mut run = std::collections::VecDeque::new();
        table.run_after(None, 2, &mut run);
        let seqs: Vec<u64> = run.iter().map(|(k, _)| format::key_seq(k)).collect();
        assert_eq!(seqs, [5, 1], "a's versions, newest first");
        let after = run.pop_back().unwrap().0;
        run.clear();
        table.run_after(Some(&after), 10, &mut run);
        assert_eq!(run.len(), 1);
        assert_eq!(format::user_key(&run[0].0), b"ab");
        let mut seen = Vec::new();
        table
            .try_for_each(|k, _| {
                seen.push(format::key_seq(k));
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(seen, vec![5, 1, 3]);
    }

    #[test]
    fn entries_keep_their_bytes_across_arena_chunks_and_large_values_stand_alone() {
        let table = Memtable::new(1);
        // Sizes that fill chunks unevenly, cross from one chunk to the next, and exceed
        // what the arena takes (those get an allocation of their own).
        let value_of = |i: usize| -> Vec<u8> {
            let len = match i % 7 {
                0 => ARENA_ENTRY_BYTES_MAX + 1 + i % 3,
                1 => ARENA_ENTRY_BYTES_MAX - 40,
                _ => (i * 37) % 900,
            };
            (0..len).map(|j| (i + j) as u8).collect()
        };
        let n = 2_000;
        for i in 0..n {
            table.insert(
                format!("k{i:05}").as_bytes(),
                i as u64 + 1,
                Kind::Put,
                value_of(i),
            );
        }
        assert!(
            table.approximate_bytes() > 4 * ARENA_CHUNK_BYTES,
            "the entries span many chunks"
        );
        for i in 0..n {
            let (key, value) = table
                .get(format!("k{i:05}").as_bytes(), format::SEQ_MAX)
                .unwrap();
            assert_eq!(format::key_seq(&key), i as u64 + 1);
            assert_eq!(value, value_of(i), "entry {i}");
        }
        let mut seen = 0;
        table
            .try_for_each(|key, value| {
                let i: usize = std::str::from_utf8(&format::user_key(key)[1..])
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(value, value_of(i).as_slice());
                seen += 1;
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(seen, n);
        // Small entries sit side by side in one chunk: the next entry's key starts where the
        // previous entry's value ends (no allocation of their own).
        let small = Memtable::new(2);
        small.insert(b"x1", 1, Kind::Put, b"one");
        small.insert(b"x2", 2, Kind::Put, b"two");
        let (_, first_value) = small.get(b"x1", format::SEQ_MAX).unwrap();
        let (second_key, _) = small.get(b"x2", format::SEQ_MAX).unwrap();
        assert_eq!(
            first_value.as_ptr().wrapping_add(first_value.len()),
            second_key.as_ptr()
        );
        // A slice handed out stays valid after the memtable is gone.
        let (_, kept) = table.get(b"k00003", format::SEQ_MAX).unwrap();
        drop(table);
        assert_eq!(kept, value_of(3));
    }

    proptest::proptest! {
        /// The inline head never changes the order: keys with zero bytes, common prefixes
        /// and lengths around the head's 32 bytes order exactly as `compare_internal` orders
        /// them.
        #[test]
        fn inline_heads_order_like_full_internal_keys(
            a in proptest::collection::vec(proptest::prop_oneof![Just(0u8), Just(1u8), Just(b'k'), proptest::num::u8::ANY], 0..40),
            b in proptest::collection::vec(proptest::prop_oneof![Just(0u8), Just(1u8), Just(b'k'), proptest::num::u8::ANY], 0..40),
            shared in 0usize..40,
            seq_a in 0u64..4,
            seq_b in 0u64..4,
        ) {
            let mut b = b;
            // Often give both keys a long common prefix, so heads tie or differ only late.
            let n = shared.min(a.len()).min(b.len());
            b[..n].copy_from_slice(&a[..n]);
            let ka = format::internal_key(&a, seq_a, Kind::Put);
            let kb = format::internal_key(&b, seq_b, Kind::Put);
            let full = compare_internal(&ka, &kb);
            let with_heads = Entry::target(Bytes::from(ka)).cmp(&Entry::target(Bytes::from(kb)));
            proptest::prop_assert_eq!(full, with_heads);
        }
    }
}
