//! An open table: footer, filter, properties and index are read and
//! validated at open and held in memory; data blocks are read on demand with
//! positional reads (no lock) through the shared [`BlockCache`].

use super::block::{Block, BlockIter};
use super::filter::Filter;
use super::index::Index;
use super::{
    clamp_seq, corruption, decode_stored_block, BlockCache, BlockHandle, Footer, TableMeta,
    FOOTER_LEN,
};
use crate::error::{Error, Result};
use crate::format;
use crate::storage::{Storage, StorageFile};
use bytes::Bytes;
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

thread_local! {
    /// Key buffer of the data cursor of [`Table::get`], kept per thread so
    /// that a point read does not allocate it each time. Its size is bounded
    /// by the largest key read (keys are at most `KEY_BYTES_MAX`).
    static GET_KEY_BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };

    /// Buffer that stored blocks are read into before their checksum is
    /// verified and they are decompressed or copied out (see [`read_block`]).
    static READ_BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Largest read buffer kept per thread between block reads: data blocks are
/// a few KiB, so this covers them all with room to spare; a larger block (one
/// huge entry, or the index at open) gets a buffer of its own, freed after.
const READ_BUFFER_BYTES_MAX: usize = 256 * 1024;

/// An open, immutable table. `Send + Sync`: reads use `read_exact_at`.
pub(crate) struct Table {
    /// The file.
    file: Box<dyn StorageFile>,
    /// Its path, for errors.
    path: PathBuf,
    /// Identifies the table's blocks in the cache.
    file_number: u64,
    /// Shared cache of decompressed data blocks.
    cache: Arc<BlockCache>,
    /// Properties (with the file's size).
    meta: TableMeta,
    /// The index block, decoded: last key of each data block -> its handle.
    index: Index,
    /// Offset of the index block, for errors.
    index_offset: u64,
    /// The Bloom filter over user keys.
    filter: Filter,
    /// Data blocks occupy `0..data_end` (where the filter block starts).
    data_end: u64,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("path", &self.path)
            .field("file_number", &self.file_number)
            .field("meta", &self.meta)
            .finish()
    }
}

impl Table {
    /// Opens and validates footer, index, filter and properties (checksums,
    /// and that the blocks tile the file). `file_number` identifies the
    /// table in the block cache and must not be reused for another file
    /// while the cache lives.
    pub fn open(
        fs: &dyn Storage,
        path: &Path,
        file_number: u64,
        cache: Arc<BlockCache>,
    ) -> Result<Table> {
        let file = fs.open(path).map_err(|e| Error::io(path, e))?;
        let file_size = file.size().map_err(|e| Error::io(path, e))?;
        if file_size < FOOTER_LEN as u64 {
            return Err(corruption(path, 0, "file shorter than a table footer"));
        }
        let footer_offset = file_size - FOOTER_LEN as u64;
        let mut footer_bytes = [0u8; FOOTER_LEN];
        read_at(&*file, path, &mut footer_bytes, footer_offset)?;
        let footer = Footer::decode(&footer_bytes, footer_offset)
            .map_err(|what| corruption(path, footer_offset, what))?;

        let filter_bytes = read_block(&*file, path, footer.filter)?;
        let filter = Filter::parse(filter_bytes)
            .map_err(|what| corruption(path, footer.filter.offset, what))?;
        let properties_bytes = read_block(&*file, path, footer.properties)?;
        let meta = TableMeta::decode(&properties_bytes, file_size)
            .map_err(|what| corruption(path, footer.properties.offset, what))?;
        let index_bytes = read_block(&*file, path, footer.index)?;
        let index = Block::parse(index_bytes)
            .and_then(Index::decode)
            .map_err(|what| corruption(path, footer.index.offset, what))?;

        let table = Table {
            file,
            path: path.to_path_buf(),
            file_number,
            cache,
            meta,
            index,
            index_offset: footer.index.offset,
            filter,
            data_end: footer.filter.offset,
        };
        table
            .check_index()
            .map_err(|what| corruption(path, footer.index.offset, what))?;
        Ok(table)
    }

    /// Checks that the index's handles tile the data region in order, its
    /// keys increase, and its last key is the table's largest key.
    fn check_index(&self) -> std::result::Result<(), &'static str> {
        let mut expected_offset = 0u64;
        for i in 0..self.index.len() {
            let handle = self.index.handle(i);
            let fits = handle.offset == expected_offset
                && handle
                    .size
                    .checked_add(super::BLOCK_TRAILER_LEN as u64)
                    .is_some_and(|stored| stored <= self.data_end - handle.offset);
            if !fits {
                return Err("index: data block handles do not tile the data region");
            }
            expected_offset = handle.end();
            if i > 0 && format::compare_internal(self.index.key(i - 1), self.index.key(i)).is_ge() {
                return Err("index: keys out of order");
            }
        }
        if expected_offset != self.data_end {
            return Err("index: data block handles do not reach the filter block");
        }
        let last_key = match self.index.len() {
            0 => &[][..],
            n => self.index.key(n - 1),
        };
        if last_key != self.meta.largest {
            return Err("index: last key differs from the table's largest key");
        }
        Ok(())
    }

    /// The table's properties.
    // Part of the table API the engine is being wired to; not every caller exists yet.
    #[allow(dead_code)]
    pub fn meta(&self) -> &TableMeta {
        &self.meta
    }

    /// The table's file.
    // Part of the table API the engine is being wired to; not every caller exists yet.
    #[allow(dead_code)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bloom check on the user key: false only when the table certainly
    /// holds no version of it. Does not allocate.
    // Part of the table API the engine is being wired to; not every caller exists yet.
    #[allow(dead_code)]
    pub fn may_contain(&self, user_key: &[u8]) -> bool {
        self.filter.may_contain(user_key)
    }

    /// True when `user_key` lies within the table's smallest..=largest user keys.
    fn in_key_range(&self, user_key: &[u8]) -> bool {
        self.meta.entries > 0
            && user_key >= format::user_key(&self.meta.smallest)
            && user_key <= format::user_key(&self.meta.largest)
    }

    /// Newest entry for `user_key` with sequence <= `seq`: (internal key,
    /// stored value). A key outside the table's key range costs two
    /// comparisons, one that the Bloom filter rules out costs one hash and
    /// one cache line; only then is the index searched.
    pub fn get(&self, user_key: &[u8], seq: u64) -> Result<Option<(Bytes, Bytes)>> {
        if !self.in_key_range(user_key) || !self.filter.may_contain(user_key) {
            return Ok(None);
        }
        // Every version of user_key with sequence <= seq sorts at or after
        // (user_key, seq, highest kind).
        let trailer = (clamp_seq(seq) << 8) | 0xff;
        let mut key_buffer = Some(GET_KEY_BUFFER.take());
        let found = self.get_from(&mut key_buffer, user_key, trailer);
        GET_KEY_BUFFER.set(key_buffer.unwrap_or_default());
        found
    }

    /// [`Table::get`] after the filter, with the data cursor's key buffer
    /// supplied by the caller.
    fn get_from(
        &self,
        key_buffer: &mut Option<Vec<u8>>,
        user_key: &[u8],
        trailer: u64,
    ) -> Result<Option<(Bytes, Bytes)>> {
        let mut position = self.index.seek(user_key, trailer);
        while position < self.index.len() {
            let handle = self.data_handle(position)?;
            let block = self.read_data_block(handle, true)?;
            let mut data_iter =
                BlockIter::with_key_buffer(block, key_buffer.take().unwrap_or_default());
            data_iter
                .seek(user_key, trailer)
                .map_err(|what| corruption(&self.path, handle.offset, what))?;
            let found = if !data_iter.valid() {
                None
            } else if format::user_key(data_iter.key()) == user_key {
                Some(Some((
                    Bytes::copy_from_slice(data_iter.key()),
                    data_iter.value(),
                )))
            } else {
                Some(None)
            };
            *key_buffer = Some(data_iter.into_key_buffer());
            if let Some(found) = found {
                return Ok(found);
            }
            // Only reachable if an index key were not its block's last key.
            position += 1;
        }
        Ok(None)
    }

    /// Memory held by index + filter (for stats).
    pub fn resident_bytes(&self) -> usize {
        self.index.resident_bytes()
            + self.filter.len()
            + self.meta.smallest.len()
            + self.meta.largest.len()
    }

    /// The decoded index (iterators walk it by position).
    pub(super) fn index(&self) -> &Index {
        &self.index
    }

    /// A corruption error in the index block.
    pub(super) fn index_corruption(&self, what: &str) -> Error {
        corruption(&self.path, self.index_offset, what)
    }

    /// A corruption error at `offset`.
    pub(super) fn corruption_at(&self, offset: u64, what: &str) -> Error {
        corruption(&self.path, offset, what)
    }

    /// The handle of data block `position` (`< index().len()`).
    pub(super) fn data_handle(&self, position: usize) -> Result<BlockHandle> {
        let handle = self.index.handle(position);
        // Validated at open; re-checked because a wrong handle would read
        // another block's bytes.
        if handle.end() > self.data_end {
            return Err(self.index_corruption("index: data block handle past the data region"));
        }
        Ok(handle)
    }

    /// The data block at `handle`, from the cache or from disk (checksum
    /// verified, decompressed, restart array validated, then cached when
    /// `fill_cache`).
    pub(super) fn read_data_block(&self, handle: BlockHandle, fill_cache: bool) -> Result<Block> {
        if let Some(block) = self.cache.get(self.file_number, handle.offset) {
            return Ok(block);
        }
        let bytes = read_block(&*self.file, &self.path, handle)?;
        let block =
            Block::parse(bytes).map_err(|what| corruption(&self.path, handle.offset, what))?;
        if fill_cache {
            self.cache
                .insert(self.file_number, handle.offset, block.clone());
        }
        Ok(block)
    }

    /// Handles of every data block, in order (tests aim damage with them).
    #[cfg(test)]
    pub(super) fn data_block_handles(&self) -> Vec<BlockHandle> {
        (0..self.index.len())
            .map(|i| self.data_handle(i).unwrap())
            .collect()
    }

    /// Offset of the index block.
    #[cfg(test)]
    pub(super) fn index_offset(&self) -> u64 {
        self.index_offset
    }
}

/// Reads `buf.len()` bytes at `offset`; reading past the end is corruption
/// (the file is shorter than its own handles say).
fn read_at(file: &dyn StorageFile, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    file.read_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            corruption(path, offset, "block extends past the end of the file")
        } else {
            Error::io(path, e)
        }
    })
}

/// Reads the stored block at `handle` (validated to lie inside the file),
/// verifies its checksum and decompresses it. The bytes as stored are read
/// into a per-thread buffer that is reused from block to block, so a block
/// costs one allocation (the block handed out) instead of two plus zeroing.
fn read_block(file: &dyn StorageFile, path: &Path, handle: BlockHandle) -> Result<Bytes> {
    let stored_len = usize::try_from(handle.size + super::BLOCK_TRAILER_LEN as u64)
        .map_err(|_| corruption(path, handle.offset, "block larger than memory"))?;
    let mut stored = READ_BUFFER.take();
    if stored.len() < stored_len {
        stored.resize(stored_len, 0);
    }
    let result = read_at(file, path, &mut stored[..stored_len], handle.offset).and_then(|()| {
        decode_stored_block(&stored[..stored_len])
            .map_err(|what| corruption(path, handle.offset, what))
    });
    // A buffer grown for one unusually large block is not kept.
    if stored.len() <= READ_BUFFER_BYTES_MAX {
        READ_BUFFER.set(stored);
    }
    result
}
