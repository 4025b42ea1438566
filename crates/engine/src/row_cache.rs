//! Row cache: the latest state of recently read or written keys, so a point
//! read of a hot key is one hash probe instead of a memtable walk, filter
//! checks, index seeks and a block search (RocksDB's `row_cache`, kept
//! exact under concurrent writes).
//!
//! Every entry is tagged with a sequence number: the key's state is what the
//! entry says as of that sequence, and no write to the key with a higher
//! sequence has happened unless it replaced the entry. Two rules keep that
//! true:
//!
//! - **Writers write through.** Every committed operation replaces its key's
//!   entry (value, or an absent marker for a delete), tagged with its
//!   sequence, before the sequence is published to readers. Writers hold the
//!   engine's write lock, so tags of one key only grow.
//! - **Readers fill only what no later write can have changed.** A reader
//!   that missed reads the engine at its sequence `s` and may then store what
//!   it found, tagged `s`, only if the key's entry is older than `s` or
//!   absent. An absent entry may have been evicted after a newer write put
//!   it there, so a fill of an absent key also needs `s` at least the highest
//!   tag ever evicted ([`RowCache::fill`]).
//!
//! A lookup at sequence `s` may use an entry tagged `t <= s`: any write to the
//! key in `(t, s]` would have replaced it. Entries tagged above `s` are a
//! write the reader must not see yet; it reads the engine instead.
//!
//! Flushes and compactions change where a key's state lives, never what it
//! is, so they leave the cache alone. Expiry is checked at every hit, against
//! the entry's expiry time. Snapshot reads and iterators do not use the cache.
//!
//! Memory is bounded by [`crate::Options::row_cache_bytes`]: each entry is
//! one allocation holding key and value, charged its size plus
//! [`ENTRY_OVERHEAD_BYTES`]; shards evict with CLOCK, each slot counting
//! its uses up to [`USES_MAX`] (a hit adds one, a write sets at least one, the
//! hand takes one off as it passes and evicts a slot at zero): a key read often
//! outlives a stream of keys written once, and a key just written outlives one
//! pass of the hand, as it did when every write read its key first. A hit hands out copies of the key and value (a cold cache line is
//! touched either way; a copy keeps no block or buffer of someone else's
//! alive and needs no shared reference count). Values larger than
//! [`VALUE_BYTES_CACHED_MAX`] are not cached (their writes still leave an
//! entry that says "not cached", so no older value can be filled in).

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::format::Kind;

/// Shards of the cache; a lookup locks one. 64 keeps lock contention
/// negligible with a few dozen threads.
const SHARDS: usize = 64;

/// Bytes charged per entry beyond its key and value: the slot (48 bytes) in
/// a shard's table kept between 3/8 and 3/4 full (64 to 128 bytes a slot),
/// and the allocator's header and rounding of the one allocation holding key
/// and value. Measured against RSS with 1M entries of a 19-byte key and
/// 101-byte value when the slots sat in a vector behind a hash index (48 bytes
/// and 16); the table (issue 12) costs about the same and was not measured
/// again.
pub(crate) const ENTRY_OVERHEAD_BYTES: usize = 112;

/// Most passes of the CLOCK hand a slot survives without being used again.
const USES_MAX: u8 = 3;

/// Largest value kept in the cache. Bigger ones would evict many small hot
/// rows for one read and are cheap to read from tables relative to their
/// transfer anyway.
pub(crate) const VALUE_BYTES_CACHED_MAX: usize = 64 * 1024;

/// What the cache knows of a key.
#[derive(Debug, Clone)]
pub(crate) enum Row {
    /// A value (with its expiry, if any, encoded as the memtable stores it)
    /// written at `version`.
    Value {
        kind: Kind,
        version: u64,
        stored: Bytes,
    },
    /// No value: never written, deleted, or expired and dropped.
    Absent,
    /// Written, but not cached (a value too large): read the engine.
    Unknown,
}

impl Row {
    fn value_bytes(&self) -> usize {
        match self {
            Row::Value { stored, .. } => stored.len(),
            Row::Absent | Row::Unknown => 0,
        }
    }
}

/// The cache's answer to a lookup.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// The key's state as of the reader's sequence, and a copy of the key.
    Hit(Row, Bytes),
    /// Not known: read the engine, then [`RowCache::fill`].
    Miss,
}

/// What a slot says of its key, without the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Value(Kind),
    Absent,
    Unknown,
}

/// One cached key: key and value bytes in one allocation (`data`), so an
/// entry costs one heap block and a lookup touches the slot and that block.
struct Slot {
    hash: u64,
    /// The key, then the stored value.
    data: Box<[u8]>,
    key_len: u32,
    state: State,
    /// CLOCK use count, `0..=USES_MAX` (module doc).
    uses: u8,
    version: u64,
    tag: u64,
}

impl Slot {
    fn new(hash: u64, key: &[u8], row: &Row, tag: u64) -> Slot {
        let (state, version, value): (State, u64, &[u8]) = match row {
            Row::Value {
                kind,
                version,
                stored,
            } => (State::Value(*kind), *version, stored),
            Row::Absent => (State::Absent, 0, &[]),
            Row::Unknown => (State::Unknown, 0, &[]),
        };
        let mut data = Vec::with_capacity(key.len() + value.len());
        data.extend_from_slice(key);
        data.extend_from_slice(value);
        Slot {
            hash,
            data: data.into_boxed_slice(),
            key_len: u32::try_from(key.len()).expect("keys are far below 4 GiB"),
            state,
            uses: 0,
            version,
            tag,
        }
    }

    fn key(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }

    fn row(&self) -> Row {
        match self.state {
            State::Value(kind) => Row::Value {
                kind,
                version: self.version,
                stored: Bytes::copy_from_slice(&self.data[self.key_len as usize..]),
            },
            State::Absent => Row::Absent,
            State::Unknown => Row::Unknown,
        }
    }

    fn charge(&self) -> usize {
        self.data.len() + ENTRY_OVERHEAD_BYTES
    }
}

/// A slot's `hash` when the slot is free. A key whose hash is this is given
/// [`EMPTY_REPLACEMENT`] instead ([`slot_hash`]).
const EMPTY: u64 = 0;

/// The hash used for a key whose hash is [`EMPTY`].
const EMPTY_REPLACEMENT: u64 = 1;

/// Smallest table a shard allocates.
const TABLE_SLOTS_MIN: usize = 16;

/// The key's hash as slots store it (never [`EMPTY`]).
fn slot_hash(hash: u64) -> u64 {
    if hash == EMPTY {
        EMPTY_REPLACEMENT
    } else {
        hash
    }
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            hash: EMPTY,
            data: Box::default(),
            key_len: 0,
            state: State::Absent,
            uses: 0,
            version: 0,
            tag: 0,
        }
    }

    fn is_free(&self) -> bool {
        self.hash == EMPTY
    }
}

/// One shard: its slots in an open-addressing table (linear probing, at most
/// 3/4 full), so a probe reads the slot itself, with its hash, tag, version
/// and state, and then the key's allocation: one dependent cache miss fewer
/// than an index of positions into a slot vector (issue 12: the probe was a
/// quarter of a SET's CPU). The CLOCK hand walks the table's positions.
#[derive(Default)]
struct Shard {
    /// Capacity a power of two (or empty). One slot per hash: a key whose
    /// hash collides with a cached one (about 1 in 2^64 per pair) replaces
    /// it, as an eviction.
    table: Vec<Slot>,
    /// Slots in use.
    len: usize,
    /// CLOCK hand: the next position considered for eviction.
    hand: usize,
    bytes: usize,
}

impl Shard {
    fn mask(&self) -> usize {
        self.table.len() - 1
    }

    /// The position holding hash `hash`, if any (whatever its key).
    fn position(&self, hash: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut at = hash as usize & mask;
        loop {
            let slot = &self.table[at];
            if slot.hash == hash {
                return Some(at);
            }
            if slot.is_free() {
                return None;
            }
            at = (at + 1) & mask;
        }
    }

    /// The slot holding `key` (hash `hash`, as [`slot_hash`] gives it), if any.
    fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let at = self.position(hash)?;
        (self.table[at].key() == key).then_some(at)
    }

    /// Places `slot` (whose hash no slot has) in the table, growing it first
    /// if it would pass 3/4 full.
    fn insert(&mut self, slot: Slot) {
        if (self.len + 1) * 4 > self.table.len() * 3 {
            self.grow();
        }
        let mask = self.mask();
        let mut at = slot.hash as usize & mask;
        while !self.table[at].is_free() {
            debug_assert_ne!(self.table[at].hash, slot.hash, "one slot per hash");
            at = (at + 1) & mask;
        }
        self.table[at] = slot;
        self.len += 1;
    }

    /// Doubles the table (the hand starts over).
    fn grow(&mut self) {
        let capacity = (self.table.len() * 2).max(TABLE_SLOTS_MIN);
        let old = std::mem::replace(
            &mut self.table,
            std::iter::repeat_with(Slot::empty).take(capacity).collect(),
        );
        self.len = 0;
        self.hand = 0;
        for slot in old.into_iter().filter(|slot| !slot.is_free()) {
            self.insert(slot);
        }
    }

    /// Removes the slot at `at`, remembering its tag as evicted. The slots
    /// after it in its probe run shift back (no tombstones), so `at` may hold
    /// another slot afterwards.
    fn remove(&mut self, at: usize, evicted_tag_max: &AtomicU64) {
        // Before the entry goes: a reader that read older state must not
        // fill it back in (module doc).
        evicted_tag_max.fetch_max(self.table[at].tag, Ordering::SeqCst);
        let removed = std::mem::replace(&mut self.table[at], Slot::empty());
        self.len -= 1;
        self.bytes -= removed.charge();
        let mask = self.mask();
        let mut hole = at;
        let mut next = (at + 1) & mask;
        while !self.table[next].is_free() {
            let home = self.table[next].hash as usize & mask;
            // The slot at `next` may move into the hole if the hole lies on its probe path,
            // between its home position and where it is.
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.table.swap(hole, next);
                hole = next;
            }
            next = (next + 1) & mask;
        }
    }

    /// Evicts slots until `incoming` more bytes fit in `bytes_max`.
    fn make_room(&mut self, incoming: usize, bytes_max: usize, evicted_tag_max: &AtomicU64) {
        while self.bytes + incoming > bytes_max && self.len > 0 {
            if self.hand >= self.table.len() {
                self.hand = 0;
            }
            let slot = &mut self.table[self.hand];
            if slot.is_free() {
                self.hand += 1;
                continue;
            }
            if slot.uses > 0 {
                slot.uses -= 1;
                self.hand += 1;
                continue;
            }
            // The hand stays: the slot shifted into this position is looked at next.
            self.remove(self.hand, evicted_tag_max);
        }
    }

    /// Sets `key`'s slot to `row` tagged `tag` (the caller decided it may). A
    /// new slot starts with `uses_min` uses; a replaced one keeps its uses and
    /// has at least one.
    #[allow(clippy::too_many_arguments)]
    fn set(
        &mut self,
        hash: u64,
        key: &[u8],
        row: &Row,
        tag: u64,
        uses_min: u8,
        bytes_max: usize,
        evicted_tag_max: &AtomicU64,
    ) {
        let mut slot = Slot::new(hash, key, row, tag);
        let charge = slot.charge();
        match self.position(hash) {
            Some(at) if self.table[at].key() == key => {
                slot.uses = self.table[at].uses.max(1);
                self.bytes = self.bytes - self.table[at].charge() + charge;
                self.table[at] = slot;
                if self.bytes > bytes_max {
                    // A larger value replaced a smaller one: evict others (the
                    // slot just set is in use, so it goes last).
                    self.make_room(0, bytes_max, evicted_tag_max);
                }
                return;
            }
            // Another key with the same hash goes, like an eviction.
            Some(other) => self.remove(other, evicted_tag_max),
            None => {}
        }
        if charge > bytes_max {
            return;
        }
        self.make_room(charge, bytes_max, evicted_tag_max);
        slot.uses = uses_min;
        self.insert(slot);
        self.bytes += charge;
    }
}

/// See the module doc.
pub(crate) struct RowCache {
    shards: Box<[Mutex<Shard>]>,
    shard_bytes_max: usize,
    /// Highest tag of any evicted entry.
    evicted_tag_max: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for RowCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowCache")
            .field("bytes_max", &(self.shard_bytes_max * SHARDS))
            .finish_non_exhaustive()
    }
}

/// Counters of the row cache.
#[derive(Debug, Clone, Copy, Default)]
pub struct RowCacheStats {
    /// Bytes charged to entries.
    pub bytes: usize,
    /// Capacity in bytes.
    pub capacity: usize,
    /// Entries.
    pub entries: usize,
    /// Point reads answered by the cache.
    pub hits: u64,
    /// Point reads that went to the memtables and tables.
    pub misses: u64,
}

impl RowCache {
    /// A cache holding at most about `bytes_max` bytes.
    pub(crate) fn new(bytes_max: usize) -> RowCache {
        RowCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_bytes_max: bytes_max / SHARDS,
            evicted_tag_max: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The key's hash and its shard (picked by the high bits; the table
    /// inside starts its probe at the low bits).
    fn shard(&self, key: &[u8]) -> (u64, &Mutex<Shard>) {
        let hash = slot_hash(xxhash_rust::xxh3::xxh3_64(key));
        (hash, &self.shards[(hash >> 58) as usize % SHARDS])
    }

    /// The state of `key` as of sequence `seq`, if the cache knows it.
    pub(crate) fn lookup(&self, key: &[u8], seq: u64) -> Lookup {
        let (hash, shard) = self.shard(key);
        let mut shard = shard.lock();
        let answer = match shard.find(hash, key) {
            Some(at) => {
                let slot = &mut shard.table[at];
                if slot.tag <= seq && slot.state != State::Unknown {
                    slot.uses = (slot.uses + 1).min(USES_MAX);
                    Lookup::Hit(slot.row(), Bytes::copy_from_slice(key))
                } else {
                    Lookup::Miss
                }
            }
            None => Lookup::Miss,
        };
        drop(shard);
        let counter = match answer {
            Lookup::Hit(..) => &self.hits,
            Lookup::Miss => &self.misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        answer
    }

    /// [`RowCache::lookup`] without the copies: `head` gets the slot's kind,
    /// version and stored value in place and says what to answer. `None`: a
    /// miss. A probe that misses fills nothing: its caller is about to write
    /// the key, which sets the row.
    pub(crate) fn peek<T>(
        &self,
        key: &[u8],
        seq: u64,
        head: impl FnOnce(Kind, u64, &[u8]) -> T,
    ) -> Option<T> {
        let (hash, shard) = self.shard(key);
        let mut shard = shard.lock();
        let answer = shard.find(hash, key).and_then(|at| {
            let slot = &mut shard.table[at];
            if slot.tag > seq {
                return None;
            }
            let kind = match slot.state {
                State::Value(kind) => kind,
                State::Absent => Kind::Delete,
                State::Unknown => return None,
            };
            slot.uses = (slot.uses + 1).min(USES_MAX);
            Some(head(
                kind,
                slot.version,
                &slot.data[slot.key_len as usize..],
            ))
        });
        drop(shard);
        let counter = match answer {
            Some(_) => &self.hits,
            None => &self.misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        answer
    }

    /// A committed write of `key` at sequence `seq` (caller holds the
    /// engine's write lock, before publishing `seq`).
    pub(crate) fn write(&self, key: &[u8], seq: u64, kind: Kind, stored: &Bytes) {
        let row = match kind {
            Kind::Delete => Row::Absent,
            _ if stored.len() > VALUE_BYTES_CACHED_MAX => Row::Unknown,
            _ => Row::Value {
                kind,
                version: seq,
                stored: stored.clone(),
            },
        };
        let (hash, shard) = self.shard(key);
        let mut shard = shard.lock();
        #[cfg(debug_assertions)]
        if let Some(at) = shard.find(hash, key) {
            debug_assert!(shard.table[at].tag <= seq, "writes come in sequence order");
        }
        // A written row starts with one use, as when every write read its key first (the
        // read's fill put the slot in, the write replaced it and referenced it): without
        // that, rows written after a `Db::head` (which fills nothing) were evicted first, and
        // GET's hit rate after a write load fell from 92% to 78% (issue 12).
        self.store(&mut shard, hash, key, &row, seq, 1);
    }

    /// Sets `key`'s slot in `shard` within this cache's bounds.
    fn store(&self, shard: &mut Shard, hash: u64, key: &[u8], row: &Row, seq: u64, uses_min: u8) {
        shard.set(
            hash,
            key,
            row,
            seq,
            uses_min,
            self.shard_bytes_max,
            &self.evicted_tag_max,
        );
    }

    /// What a reader found for `key` reading the engine at `seq` after a
    /// miss. Kept only if no write newer than `seq` can have been lost from
    /// the cache meanwhile (module doc).
    pub(crate) fn fill(&self, key: &[u8], seq: u64, row: Row) {
        if row.value_bytes() > VALUE_BYTES_CACHED_MAX {
            return;
        }
        let (hash, shard) = self.shard(key);
        let mut shard = shard.lock();
        match shard.find(hash, key) {
            Some(at) if shard.table[at].tag >= seq => return,
            Some(_) => {}
            None if seq < self.evicted_tag_max.load(Ordering::SeqCst) => return,
            None => {}
        }
        self.store(&mut shard, hash, key, &row, seq, 0);
    }

    /// Counters.
    pub(crate) fn stats(&self) -> RowCacheStats {
        let mut stats = RowCacheStats {
            capacity: self.shard_bytes_max * SHARDS,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            ..RowCacheStats::default()
        };
        for shard in self.shards.iter() {
            let shard = shard.lock();
            stats.bytes += shard.bytes;
            stats.entries += shard.len;
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn value(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn stored(row: Lookup) -> Option<Bytes> {
        match row {
            Lookup::Hit(Row::Value { stored, .. }, _) => Some(stored),
            Lookup::Hit(Row::Absent, _) => None,
            other => panic!("expected a hit, got {other:?}"),
        }
    }

    #[test]
    fn writes_are_seen_by_readers_at_or_after_them_only() {
        let cache = RowCache::new(1 << 20);
        let key = value("k");
        cache.write(&key, 5, Kind::Put, &value("v5"));
        assert!(matches!(cache.lookup(b"k", 4), Lookup::Miss));
        assert_eq!(stored(cache.lookup(b"k", 5)), Some(value("v5")));
        cache.write(&key, 9, Kind::Delete, &Bytes::new());
        assert!(matches!(cache.lookup(b"k", 8), Lookup::Miss));
        assert_eq!(stored(cache.lookup(b"k", 9)), None);
    }

    #[test]
    fn a_fill_older_than_the_entry_is_ignored() {
        let cache = RowCache::new(1 << 20);
        cache.write(&value("k"), 7, Kind::Put, &value("new"));
        // A reader at sequence 6 read the old value; it must not replace the newer write.
        cache.fill(
            b"k",
            6,
            Row::Value {
                kind: Kind::Put,
                version: 3,
                stored: value("old"),
            },
        );
        assert_eq!(stored(cache.lookup(b"k", 7)), Some(value("new")));
    }

    #[test]
    fn a_fill_of_an_evicted_key_older_than_the_eviction_is_refused() {
        // Room for about one entry per shard: writing many keys evicts.
        let cache = RowCache::new(SHARDS * (ENTRY_OVERHEAD_BYTES + 8));
        for seq in 1..=2000u64 {
            cache.write(&value(&format!("key{seq}")), seq, Kind::Put, &value("v"));
        }
        let evicted = cache.evicted_tag_max.load(Ordering::SeqCst);
        assert!(evicted > 1000, "{evicted}");
        let gone = (1..=2000u64)
            .find(|seq| {
                matches!(
                    cache.lookup(format!("key{seq}").as_bytes(), u64::MAX),
                    Lookup::Miss
                )
            })
            .expect("some key was evicted");
        // A reader that read at a sequence before the eviction may hold state older than the
        // evicted write: refused.
        cache.fill(format!("key{gone}").as_bytes(), evicted - 1, Row::Absent);
        assert!(matches!(
            cache.lookup(format!("key{gone}").as_bytes(), u64::MAX),
            Lookup::Miss
        ));
        // At or after it: accepted.
        cache.fill(format!("key{gone}").as_bytes(), evicted, Row::Absent);
        assert!(matches!(
            cache.lookup(format!("key{gone}").as_bytes(), evicted),
            Lookup::Hit(Row::Absent, _)
        ));
    }

    #[test]
    fn memory_stays_within_capacity_and_large_values_are_not_kept() {
        let capacity = 64 * 1024;
        let cache = RowCache::new(capacity);
        for seq in 1..=10_000u64 {
            cache.write(
                &value(&format!("key{seq:05}")),
                seq,
                Kind::Put,
                &Bytes::from(vec![7u8; 100]),
            );
        }
        let stats = cache.stats();
        assert!(stats.bytes <= capacity, "{stats:?}");
        assert!(stats.entries > 100, "{stats:?}");
        let big = Bytes::from(vec![1u8; VALUE_BYTES_CACHED_MAX + 1]);
        cache.write(&value("big"), 20_000, Kind::Put, &big);
        assert!(
            matches!(cache.lookup(b"big", 20_000), Lookup::Miss),
            "not cached"
        );
        // The marker still blocks an older fill.
        cache.fill(b"big", 19_999, Row::Absent);
        assert!(matches!(cache.lookup(b"big", 20_000), Lookup::Miss));
    }

    #[test]
    fn recently_used_entries_survive_eviction() {
        let cache = RowCache::new(SHARDS * 20 * (ENTRY_OVERHEAD_BYTES + 16));
        let hot = value("hot-key");
        cache.write(&hot, 1, Kind::Put, &value("hot"));
        for seq in 2..=20_000u64 {
            assert!(
                matches!(cache.lookup(b"hot-key", seq), Lookup::Hit(..)),
                "hot key evicted at {seq}"
            );
            cache.write(&value(&format!("cold{seq}")), seq, Kind::Put, &value("c"));
        }
    }

    #[test]
    fn a_key_with_a_colliding_hash_replaces_the_other_as_an_eviction() {
        let mut shard = Shard::default();
        let evicted = AtomicU64::new(0);
        let row = |text: &str| Row::Value {
            kind: Kind::Put,
            version: 1,
            stored: value(text),
        };
        shard.set(42, b"first", &row("1"), 5, 0, 1 << 20, &evicted);
        assert!(shard.find(42, b"first").is_some());
        // Same hash, other key: the first goes, and its tag counts as evicted, so an older
        // reader cannot fill it back in.
        shard.set(42, b"second", &row("2"), 9, 0, 1 << 20, &evicted);
        assert!(shard.find(42, b"first").is_none());
        assert!(shard.find(42, b"second").is_some());
        assert_eq!(evicted.load(Ordering::SeqCst), 5);
        assert_eq!(shard.len, 1);
        let at = shard.find(42, b"second").unwrap();
        assert_eq!(shard.bytes, shard.table[at].charge());
    }

    /// Every slot in the table is found where it is: no probe run broken.
    fn assert_reachable(shard: &Shard, step: u64) {
        for (at, slot) in shard.table.iter().enumerate() {
            if !slot.is_free() {
                assert_eq!(shard.find(slot.hash, slot.key()), Some(at), "step {step}");
            }
        }
        let in_use: usize = shard
            .table
            .iter()
            .filter(|s| !s.is_free())
            .map(Slot::charge)
            .sum();
        assert_eq!(shard.bytes, in_use, "step {step}");
        assert_eq!(
            shard.len,
            shard.table.iter().filter(|s| !s.is_free()).count()
        );
    }

    /// The open-addressing table against a map: inserts, replacements and removals (explicit,
    /// a colliding hash's, and the CLOCK's) of keys whose hashes crowd a few home positions,
    /// so probe runs wrap around the table's end and removals shift runs back.
    #[test]
    fn the_slot_table_finds_what_a_map_holds() {
        let mut shard = Shard::default();
        let evicted = AtomicU64::new(0);
        let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for step in 0..20_000u64 {
            // Hashes 1..=64 with high bits varied: few home positions, many collisions.
            let hash = slot_hash((next() % 64 + 1) | ((next() % 4) << 40));
            let key = format!("key{}", next() % 3).into_bytes();
            if next() % 3 == 0 {
                if let Some(at) = shard.find(hash, &key) {
                    shard.remove(at, &evicted);
                    model.remove(&hash);
                }
            } else {
                let row = Row::Value {
                    kind: Kind::Put,
                    version: step,
                    stored: value("v"),
                };
                shard.set(hash, &key, &row, step, 0, 1 << 30, &evicted);
                model.insert(hash, key);
            }
            assert_eq!(shard.len, model.len(), "step {step}");
            for (&hash, key) in &model {
                assert!(shard.find(hash, key).is_some(), "step {step}: {hash} lost");
            }
            assert_reachable(&shard, step);
            if step % 2_000 == 1_999 {
                // The CLOCK hand takes half away; what stays is still found.
                let half = shard.bytes / 2;
                shard.make_room(0, half, &evicted);
                assert!(shard.bytes <= half);
                assert_reachable(&shard, step);
                model.retain(|&hash, key| shard.find(hash, key).is_some());
            }
        }
    }
}
