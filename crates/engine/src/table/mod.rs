//! Sorted tables (SSTables): immutable files of internal keys in
//! [`format::compare_internal`] order, written once by [`TableBuilder`] and
//! read by [`Table`] / [`TableIter`] through a shared [`BlockCache`].
//!
//! # File layout
//!
//! ```text
//! Format: table file
//! +--------------+-----+--------------+--------------+------------------+-------------+--------------+
//! | data block 0 | ... | data block N | filter block | properties block | index block | footer (64B) |
//! +--------------+-----+--------------+--------------+------------------+-------------+--------------+
//! offset 0                                                                   file_size - 64 ^
//! ```
//!
//! The regions are contiguous: data block `i + 1` starts right after data
//! block `i`'s trailer, the filter block right after the last data block,
//! and so on up to the footer. [`Table::open`] checks that every handle
//! tiles the file this way, so every byte of a table is covered by exactly
//! one checksum.
//!
//! ## Blocks on disk
//!
//! Every block (data, filter, properties, index) is stored as its bytes
//! followed by a 5-byte trailer:
//!
//! ```text
//! Format: stored block
//! +------------------------+-----------------+-------------------------------------------+
//! | block bytes (size B)   | compression: u8 | crc32c(block bytes ++ compression) u32 LE |
//! +------------------------+-----------------+-------------------------------------------+
//! ```
//!
//! A *handle* (offset, size) names a stored block: `offset` of its first
//! byte, `size` = B, the trailer not included. Compression `0` means the
//! bytes are the block itself; `1` means LZ4 (the `lz4_flex` *block* format)
//! with the uncompressed length prepended:
//!
//! ```text
//! Format: LZ4 block bytes (compression = 1)
//! +-------------------------------+------------------------+
//! | uncompressed length: u32 LE   | lz4 block-format bytes |
//! +-------------------------------+------------------------+
//! ```
//!
//! A block is stored compressed only when that saves at least 1/8 of its
//! bytes (stored size <= raw size - floor(raw size / 8)). The same rule
//! applies to every kind of block; the diagrams below show block contents
//! after decompression. The checksum covers the bytes as stored (compressed
//! or not) and is verified on every read from disk, before decompression.
//! A stated uncompressed length above `255 * compressed + 64` bytes (more
//! than LZ4 can expand) is rejected before anything is allocated.
//!
//! ## Data and index blocks
//!
//! ```text
//! Format: data / index block (uncompressed)
//! +---------+-----+---------+------------------+-----+------------------+----------------------+
//! | entry 0 | ... | entry n | restart 0 u32 LE | ... | restart r u32 LE | restart count u32 LE |
//! +---------+-----+---------+------------------+-----+------------------+----------------------+
//!
//! Format: block entry
//! +----------------+------------------+-------------------+----------------------+-------------+
//! | shared: varint | unshared: varint | value_len: varint | key[shared..] bytes  | value bytes |
//! +----------------+------------------+-------------------+----------------------+-------------+
//! ```
//!
//! A key is stored as the length it shares with the previous key of the
//! block plus the bytes after that. Every `restart_interval` entries (and at
//! the first entry) `shared` is 0 and the entry's offset is recorded as a
//! *restart point*, so a seek binary-searches the restart points and then
//! scans at most `restart_interval` entries. Restart offsets are strictly
//! increasing and the first is 0; an empty block has no entries and a
//! restart count of 0. Varints are LEB128 ([`format::put_varint`]).
//!
//! In a data block the key is an internal key ([`format`](mod@crate::format): user key ++
//! 8-byte big-endian `seq << 8 | kind`) and the value is the stored value
//! (empty for a delete, 8-byte big-endian expiry ++ user value for
//! `PutExpiring`). Data blocks are cut once they reach about `block_bytes`
//! uncompressed (a single large entry makes one large block).
//!
//! The index block has one entry per data block, in order, with a restart
//! interval of 1 (pure binary search): key = the last internal key of that
//! data block, value = `varint offset ++ varint size` (the data block's
//! handle).
//!
//! ## Filter block
//!
//! ```text
//! Format: filter block (uncompressed)
//! +----------------------------------------------+-------------------+
//! | bit array (L lines of 64 bytes = 512 bits)   | probe count k: u8 |
//! +----------------------------------------------+-------------------+
//! ```
//!
//! One cache-line-blocked Bloom filter (as RocksDB's `FastLocalBloom`) over
//! the distinct *user* keys of the table. With `h = xxh3_64(user_key)`, the
//! key's line is `(h * L) >> 64` (full 128-bit product: a multiply-shift
//! range reduction, no division), and all `k` probes test bits of that one
//! line: with `g0 = h mod 2^32` and `g(i+1) = g(i) * 0x9e3779b9 mod 2^32`,
//! probe `i` (for `i` in `0..k`) tests bit `g(i) >> 23` (0..512) of the
//! line, bit `b` of a line being bit `b % 8` of its byte `b / 8`. `k` is
//! `round(bits_per_key * ln 2) - 1` clamped to `1..=30` (6 at 10 bits per
//! key, ~1% false positives); `L` is `ceil(keys * bits_per_key / 512)`, at
//! least 1. A bit array that is not a whole number of lines is corruption.
//! An empty filter block (no bytes at all, written when
//! `bloom_bits_per_key` is 0) matches every key.
//!
//! ## Properties block
//!
//! ```text
//! Format: properties block (uncompressed)
//! +------------------+------------------+-------------------+------------------+------------------+
//! | entries: varint  | deletes: varint  | expiring: varint  | seq_min: varint  | seq_max: varint  |
//! +------------------+------------------+-------------------+------------------+------------------+
//! +----------------------------------+-------------------------------------------------+
//! | has expiry: u8 (0 or 1)          | expires_at_min_ms: varint (only when 1)          |
//! +----------------------------------+-------------------------------------------------+
//! +------------------------+----------------+------------------------+----------------+
//! | smallest len: varint   | smallest bytes | largest len: varint    | largest bytes  |
//! +------------------------+----------------+------------------------+----------------+
//! ```
//!
//! `smallest` / `largest` are internal keys (empty when the table has no
//! entries). The file size is not stored: it is the file's length.
//!
//! ## Footer
//!
//! ```text
//! Format: footer (64 bytes, the last bytes of the file)
//! +-----------------------+-----------------------+-----------------------+
//! | filter handle         | properties handle     | index handle          |
//! | offset u64 LE, size   | offset u64 LE, size   | offset u64 LE, size   |
//! | u64 LE                | u64 LE                | u64 LE                |
//! +-----------------------+-----------------------+-----------------------+
//! 0                       16                      32                      48
//! +------------------------+------------------------------+--------------------------+
//! | format version u32 LE  | crc32c(footer[0..52]) u32 LE | magic u64 LE = TABLE_MAGIC |
//! +------------------------+------------------------------+--------------------------+
//! 48                       52                             56                         64
//! ```
//!
//! [`TABLE_MAGIC`] is the ASCII string `"ringkvT1"` read as a little-endian
//! `u64` (so the file literally ends with the bytes `ringkvT1`).
//! [`TABLE_FORMAT_VERSION`] is 2. A table with any other version fails to
//! open with [`Error::Corruption`] ("unsupported table format version").
//!
//! # Validation
//!
//! [`Table::open`] reads the footer (magic, then checksum, then version),
//! checks that the filter, properties and index handles tile the bytes
//! before it, reads those three blocks (checksums), and checks that the
//! index's data-block handles tile `0..filter offset` in order, that its
//! keys increase, and that its last key is the properties' `largest`. Data
//! blocks are checked when first read (checksum, then the restart array;
//! every entry length is bounds-checked while decoding). Any failure is
//! [`Error::Corruption`] naming the file and the offset of the damaged block
//! (of the footer for footer damage), never a panic or a wrong value.
//!
//! # Format versions
//!
//! - 1: first layout; its filter block was one classic Bloom filter over the
//!   whole bit array (`m` bytes, no line structure; probe `i` tested bit
//!   `(h + i * h.rotate_right(33)) mod 8m`, `k = round(bits_per_key * ln 2)`).
//! - 2: cache-line-blocked filter block (above): every probe of a key falls
//!   in one 64-byte line picked by a multiply-shift, so a filter check costs
//!   one cache miss instead of `k`. Version 1 tables are not read (they are
//!   refused at open).

mod block;
mod builder;
mod cache;
mod filter;
mod index;
mod iter;
mod reader;

#[cfg(test)]
mod tests;

pub(crate) use builder::TableBuilder;
pub(crate) use cache::BlockCache;
pub(crate) use iter::TableIter;
pub(crate) use reader::Table;

use crate::error::Error;
use crate::format;
use crate::options::Compression;
use std::path::Path;

/// The last 8 bytes of every table file: `b"ringkvT1"` as a little-endian `u64`.
pub(crate) const TABLE_MAGIC: u64 = u64::from_le_bytes(*b"ringkvT1");

/// The table format version written in the footer; bump it (and document the
/// change above) whenever the layout changes.
pub(crate) const TABLE_FORMAT_VERSION: u32 = 2;

/// Length of the footer at the end of every table.
pub(crate) const FOOTER_LEN: usize = 64;

/// Length of the trailer after every stored block: compression type + crc32c.
pub(crate) const BLOCK_TRAILER_LEN: usize = 5;

/// Compression type byte of a block stored as it is.
const COMPRESSION_NONE: u8 = 0;

/// Compression type byte of an LZ4 block (lz4_flex block format, size prepended).
const COMPRESSION_LZ4: u8 = 1;

/// Settings used to write a table; reading needs none (the file describes itself).
#[derive(Debug, Clone)]
pub(crate) struct TableOptions {
    /// Target uncompressed size of a data block.
    pub block_bytes: usize,
    /// Entries between restart points in a data block.
    pub restart_interval: usize,
    /// Bloom filter bits per distinct user key; 0 writes no filter.
    pub bloom_bits_per_key: usize,
    /// Compression of every block.
    pub compression: Compression,
}

impl Default for TableOptions {
    fn default() -> TableOptions {
        TableOptions {
            block_bytes: 4096,
            restart_interval: 16,
            bloom_bits_per_key: 10,
            compression: Compression::Lz4,
        }
    }
}

impl TableOptions {
    /// The table settings of a database's options.
    pub fn from_options(options: &crate::options::Options) -> TableOptions {
        TableOptions {
            block_bytes: options.block_bytes,
            restart_interval: options.block_restart_interval,
            bloom_bits_per_key: options.bloom_bits_per_key,
            compression: options.compression,
        }
    }

    /// The settings of the level-0 tables a memtable flush writes
    /// ([`crate::Options::level0_compression`]).
    pub fn for_flush(options: &crate::options::Options) -> TableOptions {
        TableOptions {
            compression: options.level0_compression,
            ..TableOptions::from_options(options)
        }
    }
}

/// Properties of a finished table, also stored in its properties block.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TableMeta {
    /// Length of the file in bytes.
    pub file_size: u64,
    /// Number of entries (every version of every key counts).
    pub entries: u64,
    /// Entries of kind `Delete`.
    pub deletes: u64,
    /// Entries of kind `PutExpiring`.
    pub expiring: u64,
    /// First internal key (empty for an empty table).
    pub smallest: Vec<u8>,
    /// Last internal key (empty for an empty table).
    pub largest: Vec<u8>,
    /// Smallest sequence number of any entry (0 for an empty table).
    pub seq_min: u64,
    /// Largest sequence number of any entry (0 for an empty table).
    pub seq_max: u64,
    /// Earliest expiry among `PutExpiring` entries (compaction prefers tables
    /// with many expired entries).
    pub expires_at_min_ms: Option<u64>,
}

impl TableMeta {
    /// Encodes every field but `file_size` as the properties block.
    // Format: see "Properties block" in the module doc.
    fn encode(&self, out: &mut Vec<u8>) {
        format::put_varint(out, self.entries);
        format::put_varint(out, self.deletes);
        format::put_varint(out, self.expiring);
        format::put_varint(out, self.seq_min);
        format::put_varint(out, self.seq_max);
        match self.expires_at_min_ms {
            Some(at) => {
                out.push(1);
                format::put_varint(out, at);
            }
            None => out.push(0),
        }
        format::put_varint(out, self.smallest.len() as u64);
        out.extend_from_slice(&self.smallest);
        format::put_varint(out, self.largest.len() as u64);
        out.extend_from_slice(&self.largest);
    }

    /// Decodes a properties block; `Err(what)` names the first bad field.
    fn decode(bytes: &[u8], file_size: u64) -> std::result::Result<TableMeta, &'static str> {
        let mut reader = Reader { bytes };
        let entries = reader.varint("entries")?;
        let deletes = reader.varint("deletes")?;
        let expiring = reader.varint("expiring")?;
        let seq_min = reader.varint("seq_min")?;
        let seq_max = reader.varint("seq_max")?;
        let expires_at_min_ms = match reader.byte("expiry flag")? {
            0 => None,
            1 => Some(reader.varint("expires_at_min_ms")?),
            _ => return Err("properties: expiry flag is neither 0 nor 1"),
        };
        let smallest = reader.length_prefixed("smallest key")?.to_vec();
        let largest = reader.length_prefixed("largest key")?.to_vec();
        if !reader.bytes.is_empty() {
            return Err("properties: trailing bytes");
        }
        let meta = TableMeta {
            file_size,
            entries,
            deletes,
            expiring,
            smallest,
            largest,
            seq_min,
            seq_max,
            expires_at_min_ms,
        };
        meta.check()?;
        Ok(meta)
    }

    /// Checks that the fields agree with each other.
    fn check(&self) -> std::result::Result<(), &'static str> {
        if self.deletes > self.entries || self.expiring > self.entries - self.deletes {
            return Err("properties: more deletes/expiring entries than entries");
        }
        if (self.expiring > 0) != self.expires_at_min_ms.is_some() {
            return Err("properties: expiry present without expiring entries or vice versa");
        }
        if self.entries == 0 {
            if !self.smallest.is_empty() || !self.largest.is_empty() {
                return Err("properties: empty table with smallest/largest keys");
            }
            return Ok(());
        }
        if self.smallest.len() < format::TRAILER_LEN || self.largest.len() < format::TRAILER_LEN {
            return Err("properties: smallest/largest shorter than an internal key trailer");
        }
        if format::compare_internal(&self.smallest, &self.largest).is_gt() {
            return Err("properties: smallest key sorts after largest key");
        }
        if self.seq_min > self.seq_max || self.seq_max > format::SEQ_MAX {
            return Err("properties: bad sequence range");
        }
        Ok(())
    }
}

/// A cursor over bytes being decoded; every read is bounds-checked.
struct Reader<'a> {
    /// Bytes not yet consumed.
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads a varint.
    fn varint(&mut self, what: &'static str) -> std::result::Result<u64, &'static str> {
        let (value, used) = format::get_varint(self.bytes).ok_or(what)?;
        self.bytes = &self.bytes[used..];
        Ok(value)
    }

    /// Reads one byte.
    fn byte(&mut self, what: &'static str) -> std::result::Result<u8, &'static str> {
        let (&first, rest) = self.bytes.split_first().ok_or(what)?;
        self.bytes = rest;
        Ok(first)
    }

    /// Reads a varint length and that many bytes.
    fn length_prefixed(
        &mut self,
        what: &'static str,
    ) -> std::result::Result<&'a [u8], &'static str> {
        let len = self.varint(what)?;
        if len > self.bytes.len() as u64 {
            return Err(what);
        }
        let (head, rest) = self.bytes.split_at(len as usize);
        self.bytes = rest;
        Ok(head)
    }
}

/// Where a stored block is in the file: its first byte and its stored size
/// (the 5-byte trailer not included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockHandle {
    /// Offset of the block's first byte.
    pub offset: u64,
    /// Stored (possibly compressed) size of the block, without trailer.
    pub size: u64,
}

impl BlockHandle {
    /// Offset of the first byte after the block's trailer.
    fn end(&self) -> u64 {
        // Cannot overflow: handles are validated against the file size before use.
        self.offset + self.size + BLOCK_TRAILER_LEN as u64
    }

    /// Encodes the handle as an index value.
    // Format: varint offset ++ varint size.
    fn encode_varints(&self, out: &mut Vec<u8>) {
        format::put_varint(out, self.offset);
        format::put_varint(out, self.size);
    }

    /// Decodes an index value; the whole value must be used.
    fn decode_varints(bytes: &[u8]) -> std::result::Result<BlockHandle, &'static str> {
        let mut reader = Reader { bytes };
        let offset = reader.varint("index value: bad block offset")?;
        let size = reader.varint("index value: bad block size")?;
        if !reader.bytes.is_empty() {
            return Err("index value: trailing bytes");
        }
        Ok(BlockHandle { offset, size })
    }
}

/// The decoded footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Footer {
    /// The filter block.
    filter: BlockHandle,
    /// The properties block.
    properties: BlockHandle,
    /// The index block.
    index: BlockHandle,
}

impl Footer {
    /// Encodes the footer.
    // Format: see "Footer" in the module doc.
    fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut out = [0u8; FOOTER_LEN];
        let handles = [self.filter, self.properties, self.index];
        for (i, handle) in handles.iter().enumerate() {
            out[i * 16..i * 16 + 8].copy_from_slice(&handle.offset.to_le_bytes());
            out[i * 16 + 8..i * 16 + 16].copy_from_slice(&handle.size.to_le_bytes());
        }
        out[48..52].copy_from_slice(&TABLE_FORMAT_VERSION.to_le_bytes());
        let crc = crc32c::crc32c(&out[..52]);
        out[52..56].copy_from_slice(&crc.to_le_bytes());
        out[56..64].copy_from_slice(&TABLE_MAGIC.to_le_bytes());
        out
    }

    /// Decodes and checks a footer read from `footer_offset` of a file.
    fn decode(
        bytes: &[u8; FOOTER_LEN],
        footer_offset: u64,
    ) -> std::result::Result<Footer, &'static str> {
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        if u64_at(56) != TABLE_MAGIC {
            return Err("footer: bad magic number (not a ringkv table, or truncated)");
        }
        if u32_at(52) != crc32c::crc32c(&bytes[..52]) {
            return Err("footer: checksum mismatch");
        }
        if u32_at(48) != TABLE_FORMAT_VERSION {
            return Err(
                "footer: unsupported table format version (this build reads only version 2 tables)",
            );
        }
        let handle = |i: usize| BlockHandle {
            offset: u64_at(i * 16),
            size: u64_at(i * 16 + 8),
        };
        let footer = Footer {
            filter: handle(0),
            properties: handle(1),
            index: handle(2),
        };
        // The three blocks tile the space just before the footer, in order.
        let trailer = BLOCK_TRAILER_LEN as u64;
        let tiles = |first: BlockHandle, next_offset: u64| {
            first.offset <= next_offset
                && first.size.checked_add(trailer) == Some(next_offset - first.offset)
        };
        if !(tiles(footer.index, footer_offset)
            && tiles(footer.properties, footer.index.offset)
            && tiles(footer.filter, footer.properties.offset))
        {
            return Err("footer: block handles do not tile the file");
        }
        Ok(footer)
    }
}

/// Appends `raw` to `out` as a stored block (maybe compressed, then the
/// 5-byte trailer) and returns the stored size (without trailer).
/// `scratch` is reused between calls to avoid an allocation per block.
// Format: see "Blocks on disk" in the module doc.
fn encode_stored_block(
    raw: &[u8],
    compression: Compression,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> u64 {
    let start = out.len();
    let mut kind = COMPRESSION_NONE;
    if compression == Compression::Lz4 && !raw.is_empty() && raw.len() <= u32::MAX as usize {
        scratch.clear();
        scratch.resize(4 + lz4_flex::block::get_maximum_output_size(raw.len()), 0);
        scratch[..4].copy_from_slice(&(raw.len() as u32).to_le_bytes());
        if let Ok(compressed) = lz4_flex::block::compress_into(raw, &mut scratch[4..]) {
            let stored = 4 + compressed;
            if stored <= raw.len() - raw.len() / 8 {
                out.extend_from_slice(&scratch[..stored]);
                kind = COMPRESSION_LZ4;
            }
        }
    }
    if kind == COMPRESSION_NONE {
        out.extend_from_slice(raw);
    }
    let size = (out.len() - start) as u64;
    out.push(kind);
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    size
}

/// The most an LZ4 block can expand on decompression (each input byte can
/// produce at most 255 output bytes, plus a small constant); a prepended
/// length beyond this is corruption, and the bound keeps a damaged length
/// from causing a huge allocation.
fn lz4_expansion_max(compressed_len: usize) -> usize {
    compressed_len.saturating_mul(255).saturating_add(64)
}

/// Verifies a stored block (bytes + trailer, as read from disk) and returns
/// its uncompressed contents in a new allocation of exactly their size.
fn decode_stored_block(stored: &[u8]) -> std::result::Result<bytes::Bytes, &'static str> {
    if stored.len() < BLOCK_TRAILER_LEN {
        return Err("block shorter than its trailer");
    }
    let body_len = stored.len() - BLOCK_TRAILER_LEN;
    let crc_stored = u32::from_le_bytes(stored[body_len + 1..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&stored[..=body_len]) != crc_stored {
        return Err("block checksum mismatch");
    }
    let body = &stored[..body_len];
    match stored[body_len] {
        COMPRESSION_NONE => Ok(bytes::Bytes::copy_from_slice(body)),
        COMPRESSION_LZ4 => {
            if body.len() < 4 {
                return Err("lz4 block shorter than its length prefix");
            }
            let len = u32::from_le_bytes(body[..4].try_into().expect("4 bytes")) as usize;
            if len > lz4_expansion_max(body.len() - 4) {
                return Err("lz4 block: uncompressed length larger than possible");
            }
            let mut out = vec![0u8; len];
            match lz4_flex::block::decompress_into(&body[4..], &mut out) {
                Ok(n) if n == len => Ok(bytes::Bytes::from(out)),
                _ => Err("lz4 block does not decompress to its stated length"),
            }
        }
        _ => Err("unknown block compression type"),
    }
}

/// Builds the corruption error for `path` at `offset`.
fn corruption(path: &Path, offset: u64, what: &str) -> Error {
    Error::corruption(path, offset, what)
}

/// Clamps a read sequence to the largest encodable one (callers may pass
/// `u64::MAX` for "latest").
fn clamp_seq(seq: u64) -> u64 {
    seq.min(format::SEQ_MAX)
}
