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

/// A cursor over a memtable. Each step is a skip-list seek from the last
/// key, so the cursor owns no borrow of the table.
pub(crate) struct MemSource {
    table: Arc<Memtable>,
    current: Option<(Bytes, Bytes)>,
}

impl MemSource {
    pub fn new(table: Arc<Memtable>) -> MemSource {
        MemSource {
            table,
            current: None,
        }
    }
}

impl Source for MemSource {
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        self.current = self.table.seek(target, true);
        Ok(())
    }
    fn seek_to_first(&mut self) -> Result<()> {
        self.current = self.table.first();
        Ok(())
    }
    fn valid(&self) -> bool {
        self.current.is_some()
    }
    fn key(&self) -> &[u8] {
        &self.current.as_ref().expect("valid cursor").0
    }
    fn value(&self) -> Bytes {
        self.current.as_ref().expect("valid cursor").1.clone()
    }
    fn next(&mut self) -> Result<()> {
        if let Some((key, _)) = self.current.take() {
            self.current = self.table.seek(&key, false);
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
