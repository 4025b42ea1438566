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
/// linear scan.
pub(crate) struct MergingIter {
    sources: Vec<Box<dyn Source>>,
    current: Option<usize>,
}

impl MergingIter {
    pub fn new(sources: Vec<Box<dyn Source>>) -> MergingIter {
        MergingIter {
            sources,
            current: None,
        }
    }

    fn pick(&mut self) {
        let mut best: Option<usize> = None;
        for (i, source) in self.sources.iter().enumerate() {
            if !source.valid() {
                continue;
            }
            best = match best {
                Some(b) if compare_internal(self.sources[b].key(), source.key()).is_le() => Some(b),
                _ => Some(i),
            };
        }
        self.current = best;
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

    pub fn next(&mut self) -> Result<()> {
        if let Some(i) = self.current {
            self.sources[i].next()?;
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
pub struct RangeIter {
    merge: MergingIter,
    snapshot_seq: u64,
    now_ms: u64,
    end: Bound<Vec<u8>>,
    start: Bound<Vec<u8>>,
    started: bool,
    done: bool,
    /// The user key being skipped past (reused between steps).
    current_key: Vec<u8>,
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

    fn step(&mut self) -> Result<Option<Entry>> {
        if !self.started {
            self.begin()?;
        }
        let mut current_key = std::mem::take(&mut self.current_key);
        let result = self.step_with(&mut current_key);
        self.current_key = current_key;
        result
    }

    fn step_with(&mut self, current_key: &mut Vec<u8>) -> Result<Option<Entry>> {
        while self.merge.valid() {
            let internal_key = self.merge.key();
            let user_key = format::user_key(internal_key);
            if self.past_end(user_key) {
                return Ok(None);
            }
            if format::key_seq(internal_key) > self.snapshot_seq {
                self.merge.next()?;
                continue;
            }
            // The newest version of this key visible at the snapshot.
            current_key.clear();
            current_key.extend_from_slice(user_key);
            let found = live_entry(internal_key, self.merge.value(), self.now_ms, || {
                Bytes::copy_from_slice(user_key)
            });
            loop {
                self.merge.next()?;
                if !self.merge.valid()
                    || format::user_key(self.merge.key()) != current_key.as_slice()
                {
                    break;
                }
            }
            match found {
                None => continue,
                Some(Ok(entry)) => return Ok(Some(entry)),
                Some(Err(what)) => {
                    return Err(crate::Error::corruption("<iterator>", 0, what));
                }
            }
        }
        Ok(None)
    }
}

impl Iterator for RangeIter {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(entry)) => Some(Ok(entry)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
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
