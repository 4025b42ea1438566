//! Writes a table file from internal keys given in order.

use super::block::BlockBuilder;
use super::{encode_stored_block, filter, BlockHandle, Footer, TableMeta, TableOptions};
use crate::error::{Error, Result};
use crate::format::{self, Kind};
use crate::storage::{Storage, StorageFile};
use std::path::{Path, PathBuf};

/// Bytes of encoded blocks gathered before one `write` system call.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Index blocks get a restart point at every entry: a seek in the index is
/// a pure binary search.
const INDEX_RESTART_INTERVAL: usize = 1;

/// Writes one table: data blocks as entries arrive, then filter,
/// properties, index and footer in [`TableBuilder::finish`].
///
/// Dropping a builder without `finish` leaves a partial file behind; the
/// caller deletes it.
pub(crate) struct TableBuilder {
    /// The file being written.
    file: Box<dyn StorageFile>,
    /// Its path, for errors.
    path: PathBuf,
    /// Settings.
    options: TableOptions,
    /// Bytes already handed to the file or waiting in `pending`.
    offset: u64,
    /// Encoded stored blocks not yet written to the file.
    pending: Vec<u8>,
    /// Reused compression buffer.
    scratch: Vec<u8>,
    /// The data block being filled.
    data_block: BlockBuilder,
    /// One entry per finished data block.
    index_block: BlockBuilder,
    /// Filter hashes of the distinct user keys so far.
    key_hashes: Vec<u64>,
    /// Properties so far (`file_size` set by `finish`).
    meta: TableMeta,
}

impl std::fmt::Debug for TableBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableBuilder")
            .field("path", &self.path)
            .field("entries", &self.meta.entries)
            .field("offset", &self.offset)
            .finish()
    }
}

impl TableBuilder {
    /// Creates the file (fails if it exists) and an empty builder.
    pub fn create(fs: &dyn Storage, path: &Path, options: &TableOptions) -> Result<TableBuilder> {
        let file = fs.create(path, true).map_err(|e| Error::io(path, e))?;
        Ok(TableBuilder {
            file,
            path: path.to_path_buf(),
            options: options.clone(),
            offset: 0,
            pending: Vec::with_capacity(WRITE_BUFFER_BYTES + options.block_bytes * 2),
            scratch: Vec::new(),
            data_block: BlockBuilder::new(options.restart_interval.max(1)),
            index_block: BlockBuilder::new(INDEX_RESTART_INTERVAL),
            key_hashes: Vec::new(),
            meta: TableMeta {
                file_size: 0,
                entries: 0,
                deletes: 0,
                expiring: 0,
                smallest: Vec::new(),
                largest: Vec::new(),
                seq_min: u64::MAX,
                seq_max: 0,
                expires_at_min_ms: None,
            },
        })
    }

    /// Appends an entry. Keys must be strictly increasing by
    /// [`format::compare_internal`]; a violation panics, because the table
    /// would otherwise silently return wrong answers.
    pub fn add(&mut self, internal_key: &[u8], stored_value: &[u8]) -> Result<()> {
        assert!(
            internal_key.len() >= format::TRAILER_LEN,
            "table key shorter than an internal key trailer"
        );
        let kind = Kind::from_u8(format::key_kind_byte(internal_key))
            .expect("table key has an unknown kind");
        let user_key = format::user_key(internal_key);
        if self.meta.entries == 0 {
            self.meta.smallest = internal_key.to_vec();
            self.key_hashes.push(filter::key_hash(user_key));
        } else {
            let last = &self.meta.largest;
            assert!(
                format::compare_internal(last, internal_key).is_lt(),
                "table keys out of order"
            );
            if format::user_key(last) != user_key {
                self.key_hashes.push(filter::key_hash(user_key));
            }
        }
        self.count(internal_key, kind, stored_value);
        self.meta.largest.clear();
        self.meta.largest.extend_from_slice(internal_key);

        self.data_block.add(internal_key, stored_value);
        if self.data_block.estimated_bytes() >= self.options.block_bytes {
            self.flush_data_block()?;
        }
        Ok(())
    }

    /// Updates the properties for one entry.
    fn count(&mut self, internal_key: &[u8], kind: Kind, stored_value: &[u8]) {
        let seq = format::key_seq(internal_key);
        self.meta.entries += 1;
        self.meta.seq_min = self.meta.seq_min.min(seq);
        self.meta.seq_max = self.meta.seq_max.max(seq);
        match kind {
            Kind::Delete => self.meta.deletes += 1,
            Kind::Put => {}
            Kind::PutExpiring => {
                let (_, expiry) = format::decode_value(kind, stored_value)
                    .expect("PutExpiring value shorter than its expiry");
                let expiry = expiry.expect("PutExpiring has an expiry");
                self.meta.expiring += 1;
                self.meta.expires_at_min_ms = Some(
                    self.meta
                        .expires_at_min_ms
                        .map_or(expiry, |m| m.min(expiry)),
                );
            }
        }
    }

    /// Bytes the file would have if finished now (roughly).
    pub fn estimated_bytes(&self) -> u64 {
        let filter_bytes = self.key_hashes.len() * self.options.bloom_bits_per_key / 8;
        self.offset
            + (self.data_block.estimated_bytes()
                + self.index_block.estimated_bytes()
                + filter_bytes) as u64
            + super::FOOTER_LEN as u64
    }

    /// True when no entry was added.
    // Part of the table API the engine is being wired to; not every caller exists yet.
    #[allow(dead_code)]
    pub fn is_empty(&self) -> bool {
        self.meta.entries == 0
    }

    /// Finishes the current data block and records it in the index.
    fn flush_data_block(&mut self) -> Result<()> {
        if self.data_block.is_empty() {
            return Ok(());
        }
        let handle = self.write_raw_block(BlockKind::Data)?;
        let mut value = Vec::with_capacity(20);
        handle.encode_varints(&mut value);
        self.index_block.add(self.data_block.last_key(), &value);
        self.data_block.reset();
        Ok(())
    }

    /// Encodes one block (which one: `kind`) into `pending`, writing out
    /// `pending` when it is large, and returns its handle.
    fn write_raw_block(&mut self, kind: BlockKind) -> Result<BlockHandle> {
        let compression = self.options.compression;
        let offset = self.offset;
        let before = self.pending.len();
        let raw: &[u8] = match kind {
            BlockKind::Data => self.data_block.finish(),
            BlockKind::Index => self.index_block.finish(),
        };
        let size = encode_stored_block(raw, compression, &mut self.scratch, &mut self.pending);
        self.offset += (self.pending.len() - before) as u64;
        self.flush_pending_if_large()?;
        Ok(BlockHandle { offset, size })
    }

    /// Encodes a block from bytes held outside the builder.
    fn write_bytes_block(&mut self, raw: &[u8]) -> Result<BlockHandle> {
        let offset = self.offset;
        let before = self.pending.len();
        let size = encode_stored_block(
            raw,
            self.options.compression,
            &mut self.scratch,
            &mut self.pending,
        );
        self.offset += (self.pending.len() - before) as u64;
        self.flush_pending_if_large()?;
        Ok(BlockHandle { offset, size })
    }

    /// Writes `pending` to the file once it holds a write buffer's worth.
    fn flush_pending_if_large(&mut self) -> Result<()> {
        if self.pending.len() >= WRITE_BUFFER_BYTES {
            self.flush_pending()?;
        }
        Ok(())
    }

    /// Writes `pending` to the file.
    fn flush_pending(&mut self) -> Result<()> {
        self.file
            .append(&self.pending)
            .map_err(|e| Error::io(&self.path, e))?;
        self.pending.clear();
        Ok(())
    }

    /// Writes the last data block, filter, properties, index and footer;
    /// fsyncs the file. Returns its meta.
    pub fn finish(mut self) -> Result<TableMeta> {
        self.flush_data_block()?;
        let filter_bytes = filter::build(&self.key_hashes, self.options.bloom_bits_per_key);
        let filter = self.write_bytes_block(&filter_bytes)?;
        if self.meta.entries == 0 {
            self.meta.seq_min = 0;
        }
        let mut properties_bytes = Vec::new();
        self.meta.encode(&mut properties_bytes);
        let properties = self.write_bytes_block(&properties_bytes)?;
        let index = self.write_raw_block(BlockKind::Index)?;
        let footer = Footer {
            filter,
            properties,
            index,
        };
        self.pending.extend_from_slice(&footer.encode());
        self.offset += super::FOOTER_LEN as u64;
        self.flush_pending()?;
        self.file.sync().map_err(|e| Error::io(&self.path, e))?;
        self.meta.file_size = self.offset;
        debug_assert!(self.meta.check().is_ok());
        Ok(self.meta)
    }
}

/// Which of the builder's own block builders to write.
#[derive(Debug, Clone, Copy)]
enum BlockKind {
    /// The current data block.
    Data,
    /// The index block.
    Index,
}
