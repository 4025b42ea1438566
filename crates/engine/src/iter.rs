//! Iterators: sources of internal-key entries (memtables, tables, levels),
//! a merge of them in internal-key order, and the user-facing range iterator
//! that keeps the newest version visible at a snapshot and hides deleted and
//! expired keys.

use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::Result;
use crate::format::{self, compare_internal, Kind};
use crate::memtable::Memtable;

/// A cursor over internal-key entries in order.
pub(crate) trait Source: Send {
    fn seek(&mut self, target: &[u8]) -> Result<()>;
    fn seek_to_first(&mut self) -> Result<()>;
    fn valid(&self) -> bool;
    fn key(&self) -> &[u8];
    fn value(&self) -> Bytes;
    /// The value, borrowed until the cursor moves (no reference count taken).
    fn value_ref(&self) -> &[u8];
    fn next(&mut self) -> Result<()>;
}

/// A cursor over a memtable. It owns no borrow of the table: it reads runs of
/// [`MEM_RUN`] entries under one lock and one descent ([`Memtable::run_after`]) and
/// steps through them, so a scan pays a seek per run, not per entry. Entries
/// inserted after a run was read are not seen by it; a scan reads at a snapshot
/// sequence, and every entry at or below it was inserted before the scan began.
pub(crate) struct MemSource {
    table: Arc<Memtable>,
    run: std::collections::VecDeque<(Bytes, Bytes)>,
    /// Whether the run ends where the table does (no more to read after it).
    exhausted: bool,
}

/// Entries a memtable cursor reads at a time: enough to spread a descent's
/// cost, few enough that a short range read does not copy much it will not use.
const MEM_RUN: usize = 64;

impl MemSource {
    pub fn new(table: Arc<Memtable>) -> MemSource {
        MemSource {
            table,
            run: std::collections::VecDeque::with_capacity(MEM_RUN),
            exhausted: true,
        }
    }

    /// Starts over with `run` as the entries read so far; `exhausted` when the table has
    /// none after them.
    fn restart(&mut self, exhausted: bool) {
        self.exhausted = exhausted || self.run.is_empty();
    }
}

impl Source for MemSource {
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        self.run.clear();
        self.run.extend(self.table.seek(target, true));
        self.restart(false);
        Ok(())
    }
    fn seek_to_first(&mut self) -> Result<()> {
        self.run.clear();
        self.table.run_after(None, MEM_RUN, &mut self.run);
        self.restart(self.run.len() < MEM_RUN);
        Ok(())
    }
    fn valid(&self) -> bool {
        !self.run.is_empty()
    }
    fn key(&self) -> &[u8] {
        &self.run.front().expect("valid cursor").0
    }
    fn value(&self) -> Bytes {
        self.run.front().expect("valid cursor").1.clone()
    }
    fn value_ref(&self) -> &[u8] {
        &self.run.front().expect("valid cursor").1
    }
    fn next(&mut self) -> Result<()> {
        let Some((key, _)) = self.run.pop_front() else {
            return Ok(());
        };
        if self.run.is_empty() && !self.exhausted {
            self.table.run_after(Some(&key), MEM_RUN, &mut self.run);
            self.exhausted = self.run.len() < MEM_RUN;
        }
        Ok(())
    }
}

/// Merges sources into one ordered stream. Sources are few (memtables,
/// level-0 tables, one per deeper level), so the smallest is found by a
/// linear scan; and the runner-up (the smallest of the others) is kept, so a
/// step that leaves the current source still ahead of it, as most steps of a
/// scan do (one source holds most keys), costs one comparison.
pub(crate) struct MergingIter {
    sources: Vec<Box<dyn Source>>,
    current: Option<usize>,
    /// The smallest valid source other than `current` (ties to the lower index).
    runner_up: Option<usize>,
}

impl MergingIter {
    pub fn new(sources: Vec<Box<dyn Source>>) -> MergingIter {
        MergingIter {
            sources,
            current: None,
            runner_up: None,
        }
    }

    /// True when source `a` comes before source `b`: by internal key, ties to the lower
    /// index (the order the sources were given in).
    fn before(&self, a: usize, b: usize) -> bool {
        let order = compare_internal(self.sources[a].key(), self.sources[b].key());
        order.is_lt() || (order.is_eq() && a < b)
    }

    fn pick(&mut self) {
        let (mut best, mut second): (Option<usize>, Option<usize>) = (None, None);
        for i in 0..self.sources.len() {
            if !self.sources[i].valid() {
                continue;
            }
            match best {
                Some(b) if self.before(b, i) => {
                    if second.is_none_or(|s| self.before(i, s)) {
                        second = Some(i);
                    }
                }
                _ => {
                    second = best;
                    best = Some(i);
                }
            }
        }
        self.current = best;
        self.runner_up = second;
    }

    pub fn seek(&mut self, target: &[u8]) -> Result<()> {
        for source in &mut self.sources {
            source.seek(target)?;
        }
        self.pick();
        Ok(())
    }

    pub fn seek_to_first(&mut self) -> Result<()> {
        for source in &mut self.sources {
            source.seek_to_first()?;
        }
        self.pick();
        Ok(())
    }

    pub fn valid(&self) -> bool {
        self.current.is_some()
    }

    pub fn key(&self) -> &[u8] {
        self.sources[self.current.expect("valid iterator")].key()
    }

    pub fn value(&self) -> Bytes {
        self.sources[self.current.expect("valid iterator")].value()
    }

    /// The value, borrowed until the iterator moves.
    pub fn value_ref(&self) -> &[u8] {
        self.sources[self.current.expect("valid iterator")].value_ref()
    }

    pub fn next(&mut self) -> Result<()> {
        if let Some(i) = self.current {
            self.sources[i].next()?;
            // The others did not move: the runner-up is still the smallest of them.
            if self.sources[i].valid() && self.runner_up.is_none_or(|r| self.before(i, r)) {
                return Ok(());
            }
            self.pick();
        }
        Ok(())
    }
}

/// A live key returned by reads and iterators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The user key.
    pub key: Bytes,
    /// The user value.
    pub value: Bytes,
    /// Sequence number of the write that set it: the key's version.
    pub version: u64,
    /// Absolute expiry in Unix ms, if any.
    pub expires_at_ms: Option<u64>,
}

/// What a live key holds, without its value or key: what a write needs to
/// know of the entry it replaces ([`crate::Db::head`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHead {
    /// Sequence number of the write that set it: the key's version.
    pub version: u64,
    /// Absolute expiry in Unix ms, if any.
    pub expires_at_ms: Option<u64>,
}

/// [`live_parts`] without building the entry: the head of a stored value
/// if it is live at `now_ms`.
pub(crate) fn live_head(
    kind: Kind,
    version: u64,
    stored: &[u8],
    now_ms: u64,
) -> Option<Result<EntryHead, &'static str>> {
    if kind == Kind::Delete {
        return None;
    }
    let Some((_, expires_at_ms)) = format::decode_value(kind, stored) else {
        return Some(Err("expiring value shorter than its expiry"));
    };
    if matches!(expires_at_ms, Some(at) if at <= now_ms) {
        return None;
    }
    Some(Ok(EntryHead {
        version,
        expires_at_ms,
    }))
}

/// Turns a stored (internal key, value) into an [`Entry`] if it is live at
/// `now_ms`; `None` for deletes and expired puts.
/// `user_key` makes the entry's key only when it is live, so point reads
/// can hand out a slice of bytes they already hold.
pub(crate) fn live_entry(
    internal_key: &[u8],
    stored: Bytes,
    now_ms: u64,
    user_key: impl FnOnce() -> Bytes,
) -> Option<Result<Entry, &'static str>> {
    let kind = match Kind::from_u8(format::key_kind_byte(internal_key)) {
        Some(kind) => kind,
        None => return Some(Err("unknown entry kind")),
    };
    live_parts(
        kind,
        format::key_seq(internal_key),
        stored,
        now_ms,
        user_key,
    )
}

/// [`live_entry`] for an entry already split into kind and version (the row cache's).
pub(crate) fn live_parts(
    kind: Kind,
    version: u64,
    stored: Bytes,
    now_ms: u64,
    user_key: impl FnOnce() -> Bytes,
) -> Option<Result<Entry, &'static str>> {
    if kind == Kind::Delete {
        return None;
    }
    let (start, expires_at_ms) = match format::decode_value(kind, &stored) {
        Some(decoded) => decoded,
        None => return Some(Err("expiring value shorter than its expiry")),
    };
    if matches!(expires_at_ms, Some(at) if at <= now_ms) {
        return None;
    }
    Some(Ok(Entry {
        key: user_key(),
        value: stored.slice(start..),
        version,
        expires_at_ms,
    }))
}

/// Ordered iterator over live keys in a range, at a snapshot.
///
/// Two ways to read it: as an [`Iterator`] of owned [`Entry`]s, or by
/// [`RangeIter::advance`] and then [`RangeIter::key`] and [`RangeIter::value`],
/// borrowed until the next step (RocksDB's `Iterator::key()`/`value()`): a
/// scan that only looks at each entry copies and counts nothing per entry.
pub struct RangeIter {
    merge: MergingIter,
    snapshot_seq: u64,
    now_ms: u64,
    end: Bound<Vec<u8>>,
    start: Bound<Vec<u8>>,
    started: bool,
    done: bool,
    /// The user key of the entry the iterator is on (reused between steps).
    current_key: Vec<u8>,
    /// True when the merge sits on the current entry (its newest version visible at
    /// the snapshot): the next step first skips the key's older versions.
    positioned: bool,
    version: u64,
    expires_at_ms: Option<u64>,
    /// Where the user value starts in the stored value (after an expiry).
    value_start: usize,
    /// Keeps the snapshot registered (and its files alive) while iterating.
    _guard: Option<Arc<dyn Send + Sync>>,
}

impl RangeIter {
    pub(crate) fn new(
        merge: MergingIter,
        snapshot_seq: u64,
        now_ms: u64,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        guard: Option<Arc<dyn Send + Sync>>,
    ) -> RangeIter {
        RangeIter {
            merge,
            snapshot_seq,
            now_ms,
            start,
            end,
            started: false,
            done: false,
            current_key: Vec::new(),
            positioned: false,
            version: 0,
            expires_at_ms: None,
            value_start: 0,
            _guard: guard,
        }
    }

    fn begin(&mut self) -> Result<()> {
        self.started = true;
        match &self.start {
            Bound::Unbounded => self.merge.seek_to_first(),
            Bound::Included(key) => {
                let target = format::seek_key(key, self.snapshot_seq);
                self.merge.seek(&target)
            }
            Bound::Excluded(key) => {
                // Past every version of `key`: sequence 0 sorts last.
                let target = format::internal_key(key, 0, Kind::Delete);
                self.merge.seek(&target)?;
                while self.merge.valid() && format::user_key(self.merge.key()) == key.as_slice() {
                    self.merge.next()?;
                }
                Ok(())
            }
        }
    }

    fn past_end(&self, user_key: &[u8]) -> bool {
        match &self.end {
            Bound::Unbounded => false,
            Bound::Included(end) => user_key > end.as_slice(),
            Bound::Excluded(end) => user_key >= end.as_slice(),
        }
    }

    /// Moves to the next live key in the range: true when there is one, whose
    /// [`RangeIter::key`], [`RangeIter::value`], [`RangeIter::version`] and
    /// [`RangeIter::expires_at_ms`] hold until the next call; false at the end (and
    /// after an error, which ends the iteration).
    pub fn advance(&mut self) -> Result<bool> {
        if self.done {
            return Ok(false);
        }
        let found = self.seek_live();
        if !matches!(found, Ok(true)) {
            self.done = true;
            self.positioned = false;
        }
        found
    }

    fn seek_live(&mut self) -> Result<bool> {
        if !self.started {
            self.begin()?;
        }
        if self.positioned {
            self.positioned = false;
            self.skip_versions()?;
        }
        while self.merge.valid() {
            let internal_key = self.merge.key();
            let user_key = format::user_key(internal_key);
            if self.past_end(user_key) {
                return Ok(false);
            }
            let seq = format::key_seq(internal_key);
            if seq > self.snapshot_seq {
                self.merge.next()?;
                continue;
            }
            // The newest version of this key visible at the snapshot.
            let corrupt = |what| crate::Error::corruption("<iterator>", 0, what);
            let kind = Kind::from_u8(format::key_kind_byte(internal_key))
                .ok_or_else(|| corrupt("unknown entry kind"))?;
            self.current_key.clear();
            self.current_key.extend_from_slice(user_key);
            if kind != Kind::Delete {
                let (start, expires_at_ms) = format::decode_value(kind, self.merge.value_ref())
                    .ok_or_else(|| corrupt("expiring value shorter than its expiry"))?;
                if !matches!(expires_at_ms, Some(at) if at <= self.now_ms) {
                    self.version = seq;
                    self.expires_at_ms = expires_at_ms;
                    self.value_start = start;
                    self.positioned = true;
                    return Ok(true);
                }
            }
            self.skip_versions()?;
        }
        Ok(false)
    }

    /// Moves the merge past every version of the current key.
    fn skip_versions(&mut self) -> Result<()> {
        loop {
            self.merge.next()?;
            if !self.merge.valid() || format::user_key(self.merge.key()) != self.current_key {
                return Ok(());
            }
        }
    }

    /// The current entry's user key; only after [`RangeIter::advance`] returned true.
    pub fn key(&self) -> &[u8] {
        debug_assert!(self.positioned);
        &self.current_key
    }

    /// The current entry's value, borrowed; only after [`RangeIter::advance`] returned
    /// true.
    pub fn value(&self) -> &[u8] {
        debug_assert!(self.positioned);
        &self.merge.value_ref()[self.value_start..]
    }

    /// The current entry's version (the sequence of the write that set it).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The current entry's absolute expiry in Unix ms, if any.
    pub fn expires_at_ms(&self) -> Option<u64> {
        self.expires_at_ms
    }

    /// The current entry, owned.
    fn entry(&self) -> Entry {
        Entry {
            key: Bytes::copy_from_slice(&self.current_key),
            value: self.merge.value().slice(self.value_start..),
            version: self.version,
            expires_at_ms: self.expires_at_ms,
        }
    }
}

impl Iterator for RangeIter {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        match self.advance() {
            Ok(true) => Some(Ok(self.entry())),
            Ok(false) => None,
            Err(error) => Some(Err(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(source: &mut MemSource) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        while source.valid() {
            keys.push(format::user_key(source.key()).to_vec());
            source.next().unwrap();
        }
        keys
    }

    /// The merge hands out every source's entries in internal-key order, whichever source
    /// holds the next one: long runs from one source (the runner-up shortcut) and keys that
    /// alternate between sources alike, ties to the first source given.
    #[test]
    fn a_merge_of_sources_yields_every_entry_in_order() {
        let tables: Vec<Arc<Memtable>> = (0..4).map(|i| Arc::new(Memtable::new(i))).collect();
        let mut all = Vec::new();
        let mut state = 7u64;
        for i in 0..3_000u64 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Runs of keys from one table, then switches; some user keys in several tables.
            let table = ((i / 50 + (state >> 60)) % 4) as usize;
            let key = format!("k{:05}", (state >> 33) % 2_000).into_bytes();
            let seq = i + 1;
            tables[table].insert(&key, seq, Kind::Put, Bytes::from(format!("v{seq}")));
            all.push((format::internal_key(&key, seq, Kind::Put), table));
        }
        all.sort_by(|a, b| compare_internal(&a.0, &b.0));
        let sources: Vec<Box<dyn Source>> = tables
            .iter()
            .map(|t| Box::new(MemSource::new(t.clone())) as Box<dyn Source>)
            .collect();
        let mut merge = MergingIter::new(sources);
        merge.seek_to_first().unwrap();
        let mut seen = Vec::new();
        while merge.valid() {
            assert_eq!(merge.value_ref(), &merge.value()[..]);
            seen.push(merge.key().to_vec());
            merge.next().unwrap();
        }
        let expected: Vec<Vec<u8>> = all.into_iter().map(|(key, _)| key).collect();
        assert_eq!(seen, expected);
    }

    /// A memtable cursor across several runs: every entry once, in order, from the start
    /// or from a seek, and nothing after a seek past the end.
    #[test]
    fn a_memtable_cursor_reads_in_runs_and_misses_nothing() {
        let table = Arc::new(Memtable::new(1));
        let key = |i: usize| format!("k{i:04}").into_bytes();
        let total = 3 * MEM_RUN + 5;
        for i in 0..total {
            table.insert(&key(i), i as u64 + 1, Kind::Put, Bytes::from_static(b"v"));
        }
        let mut source = MemSource::new(table.clone());
        assert!(!source.valid(), "not positioned before a seek");
        source.seek_to_first().unwrap();
        assert_eq!(
            collect(&mut source),
            (0..total).map(key).collect::<Vec<_>>()
        );

        let from = MEM_RUN - 1;
        source
            .seek(&format::seek_key(&key(from), u64::MAX >> 8))
            .unwrap();
        assert_eq!(
            collect(&mut source),
            (from..total).map(key).collect::<Vec<_>>()
        );

        source.seek(&format::seek_key(b"z", u64::MAX >> 8)).unwrap();
        assert!(!source.valid(), "a seek past the last key finds nothing");
        source.next().unwrap();
        assert!(!source.valid());

        let empty = Arc::new(Memtable::new(2));
        let mut source = MemSource::new(empty);
        source.seek_to_first().unwrap();
        assert!(!source.valid());
    }
}
