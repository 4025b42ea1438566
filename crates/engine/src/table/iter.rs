//! A forward cursor over a whole table: a cursor over the index block picks
//! the data block, a cursor over that block picks the entry.

use super::block::BlockIter;
use super::{BlockHandle, Table};
use crate::error::Result;
use crate::format;
use bytes::Bytes;
use std::sync::Arc;

/// A cursor over a table's entries in internal-key order. Owns an
/// `Arc<Table>`. After an error it is not valid.
#[derive(Debug)]
pub(crate) struct TableIter {
    /// The table walked.
    table: Arc<Table>,
    /// Position in the table's index: the data block under the cursor
    /// (`index().len()` past the end).
    index_position: usize,
    /// Cursor over the current data block (not valid when there is none).
    data_iter: BlockIter,
    /// The current data block, for errors.
    data_handle: Option<BlockHandle>,
    /// Whether blocks read from disk are added to the block cache.
    fill_cache: bool,
}

impl TableIter {
    /// A cursor over `table`, not yet positioned (not valid). Blocks it
    /// reads from disk are added to the block cache.
    pub fn new(table: Arc<Table>) -> TableIter {
        TableIter::with_cache_fill(table, true)
    }

    /// A cursor that adds the blocks it reads from disk to the block cache
    /// only when `fill_cache`. Compaction passes false: it reads every block
    /// once, and caching them would evict the blocks reads keep using.
    pub fn with_cache_fill(table: Arc<Table>, fill_cache: bool) -> TableIter {
        TableIter {
            fill_cache,
            index_position: 0,
            // A placeholder until the first seek loads a data block.
            data_iter: BlockIter::new(empty_block()),
            data_handle: None,
            table,
        }
    }

    /// Positions on the first entry (not valid for an empty table).
    pub fn seek_to_first(&mut self) -> Result<()> {
        let result = self.seek_to_first_inner();
        self.invalidate_on_error(result)
    }

    /// [`TableIter::seek_to_first`] without the error cleanup.
    fn seek_to_first_inner(&mut self) -> Result<()> {
        self.index_position = 0;
        if !self.load_data_block()? {
            return Ok(());
        }
        let offset = self.data_offset();
        self.data_iter
            .seek_to_first()
            .map_err(|what| self.table.corruption_at(offset, what))?;
        self.skip_exhausted_blocks()
    }

    /// Positions on the first entry >= `target_internal_key` by
    /// [`format::compare_internal`] (not valid when there is none).
    pub fn seek(&mut self, target_internal_key: &[u8]) -> Result<()> {
        assert!(
            target_internal_key.len() >= format::TRAILER_LEN,
            "seek target shorter than an internal key trailer"
        );
        let result = self.seek_inner(target_internal_key);
        self.invalidate_on_error(result)
    }

    /// [`TableIter::seek`] without the error cleanup.
    fn seek_inner(&mut self, target: &[u8]) -> Result<()> {
        let (user_key, trailer) = (format::user_key(target), format::key_trailer(target));
        self.index_position = self.table.index().seek(user_key, trailer);
        if !self.load_data_block()? {
            return Ok(());
        }
        let offset = self.data_offset();
        self.data_iter
            .seek(user_key, trailer)
            .map_err(|what| self.table.corruption_at(offset, what))?;
        self.skip_exhausted_blocks()
    }

    /// True when positioned on an entry.
    pub fn valid(&self) -> bool {
        self.data_handle.is_some() && self.data_iter.valid()
    }

    /// The current internal key; only when valid.
    pub fn key(&self) -> &[u8] {
        debug_assert!(self.valid());
        self.data_iter.key()
    }

    /// The current stored value: a slice of the cached block, no copy.
    pub fn value(&self) -> Bytes {
        debug_assert!(self.valid());
        self.data_iter.value()
    }

    /// The current stored value, borrowed from the cached block.
    pub fn value_ref(&self) -> &[u8] {
        debug_assert!(self.valid());
        self.data_iter.value_bytes()
    }

    /// Moves to the next entry; only when valid.
    pub fn next(&mut self) -> Result<()> {
        debug_assert!(self.valid());
        let offset = self.data_offset();
        let result = self
            .data_iter
            .next()
            .map_err(|what| self.table.corruption_at(offset, what))
            .and_then(|()| self.skip_exhausted_blocks());
        self.invalidate_on_error(result)
    }

    /// Offset of the current data block (0 when there is none).
    fn data_offset(&self) -> u64 {
        self.data_handle.map_or(0, |handle| handle.offset)
    }

    /// Loads the data block under the index cursor into `data_iter`
    /// (unpositioned); false (and not valid) when the index cursor is past
    /// the end.
    fn load_data_block(&mut self) -> Result<bool> {
        if self.index_position >= self.table.index().len() {
            self.data_handle = None;
            return Ok(false);
        }
        let handle = self.table.data_handle(self.index_position)?;
        let block = self.table.read_data_block(handle, self.fill_cache)?;
        self.data_iter.reset(block);
        self.data_handle = Some(handle);
        Ok(true)
    }

    /// While the data cursor is past its block's end, moves to the first
    /// entry of the next data block.
    fn skip_exhausted_blocks(&mut self) -> Result<()> {
        while self.data_handle.is_some() && !self.data_iter.valid() {
            self.index_position += 1;
            if !self.load_data_block()? {
                return Ok(());
            }
            let offset = self.data_offset();
            self.data_iter
                .seek_to_first()
                .map_err(|what| self.table.corruption_at(offset, what))?;
        }
        Ok(())
    }

    /// Leaves the cursor not valid when `result` is an error.
    fn invalidate_on_error(&mut self, result: Result<()>) -> Result<()> {
        if result.is_err() {
            self.data_handle = None;
        }
        result
    }
}

/// A block with no entries, as a placeholder cursor target.
fn empty_block() -> super::block::Block {
    // Format: restart count 0, no entries.
    super::block::Block::parse(Bytes::from_static(&[0; 4])).expect("the empty block is valid")
}
