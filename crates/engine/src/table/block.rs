//! Data and index blocks: prefix-compressed entries with restart points
//! (format in the module doc of [`crate::table`]). The builder appends
//! entries; [`Block`] validates a decoded block's restart array once, and
//! [`BlockIter`] walks and seeks it, checking every length it decodes so a
//! damaged block yields an error, never a panic or an out-of-bounds read.

use crate::format;
use bytes::Bytes;
use std::cmp::Ordering;

/// Why a block could not be decoded; the caller adds the path and offset.
pub(super) type BlockError = &'static str;

/// Length of a restart offset and of the restart count.
const U32_LEN: usize = 4;

/// Accumulates the entries of one block.
#[derive(Debug)]
pub(super) struct BlockBuilder {
    /// Encoded entries so far (restart array appended by `finish`).
    buffer: Vec<u8>,
    /// Offsets of restart points.
    restarts: Vec<u32>,
    /// Entries since the last restart point.
    since_restart: usize,
    /// Entries between restart points.
    restart_interval: usize,
    /// The previous key (for prefix compression and order checks).
    last_key: Vec<u8>,
    /// Entries in this block.
    entries: usize,
}

impl BlockBuilder {
    /// An empty block builder.
    pub(super) fn new(restart_interval: usize) -> BlockBuilder {
        assert!(restart_interval >= 1, "restart interval must be at least 1");
        BlockBuilder {
            buffer: Vec::new(),
            restarts: Vec::new(),
            since_restart: 0,
            restart_interval,
            last_key: Vec::new(),
            entries: 0,
        }
    }

    /// Appends an entry. The caller guarantees key order.
    // Format: varint shared, varint unshared, varint value_len, key[shared..], value.
    pub(super) fn add(&mut self, key: &[u8], value: &[u8]) {
        let shared = if self.restarts.is_empty() || self.since_restart == self.restart_interval {
            self.restarts
                .push(u32::try_from(self.buffer.len()).expect("block larger than 4 GiB"));
            self.since_restart = 0;
            0
        } else {
            common_prefix_len(&self.last_key, key)
        };
        let unshared = &key[shared..];
        format::put_varint(&mut self.buffer, shared as u64);
        format::put_varint(&mut self.buffer, unshared.len() as u64);
        format::put_varint(&mut self.buffer, value.len() as u64);
        self.buffer.extend_from_slice(unshared);
        self.buffer.extend_from_slice(value);
        // Restart offsets are u32: a block must stay addressable by them.
        assert!(
            self.buffer.len() <= u32::MAX as usize,
            "block larger than 4 GiB"
        );
        self.last_key.truncate(shared);
        self.last_key.extend_from_slice(unshared);
        self.since_restart += 1;
        self.entries += 1;
    }

    /// Size of the block if finished now.
    pub(super) fn estimated_bytes(&self) -> usize {
        self.buffer.len() + (self.restarts.len() + 1) * U32_LEN
    }

    /// True when no entry was added since the last reset.
    pub(super) fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The last key added.
    pub(super) fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Appends the restart array and returns the finished block bytes; call
    /// [`BlockBuilder::reset`] before adding again.
    // Format: entries, restart offsets u32 LE each, restart count u32 LE.
    pub(super) fn finish(&mut self) -> &[u8] {
        for &restart in &self.restarts {
            self.buffer.extend_from_slice(&restart.to_le_bytes());
        }
        let count = u32::try_from(self.restarts.len()).expect("restart count fits u32");
        self.buffer.extend_from_slice(&count.to_le_bytes());
        &self.buffer
    }

    /// Empties the builder, keeping its allocations.
    pub(super) fn reset(&mut self) {
        self.buffer.clear();
        self.restarts.clear();
        self.since_restart = 0;
        self.last_key.clear();
        self.entries = 0;
    }
}

/// Length of the common prefix of two byte strings.
fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A decoded (uncompressed) block whose restart array has been validated.
/// Cloning is cheap (the bytes are shared).
#[derive(Debug, Clone)]
pub(crate) struct Block {
    /// The whole block, restart array included.
    data: Bytes,
    /// Where the restart array begins (= end of the entries).
    restarts_offset: usize,
    /// Number of restart points.
    restart_count: usize,
}

impl Block {
    /// Validates the restart array of `data`.
    pub(super) fn parse(data: Bytes) -> Result<Block, BlockError> {
        if data.len() < U32_LEN {
            return Err("block shorter than its restart count");
        }
        let count_at = data.len() - U32_LEN;
        let restart_count = read_u32(&data, count_at) as usize;
        if restart_count > count_at / U32_LEN {
            return Err("block restart count larger than the block");
        }
        let restarts_offset = count_at - restart_count * U32_LEN;
        let block = Block {
            data,
            restarts_offset,
            restart_count,
        };
        if restart_count == 0 {
            return if restarts_offset == 0 {
                Ok(block)
            } else {
                Err("block has entries but no restart point")
            };
        }
        let mut previous = None;
        for i in 0..restart_count {
            let restart = block.restart_point(i);
            let in_order = match previous {
                None => restart == 0,
                Some(previous) => restart > previous,
            };
            if !in_order || restart >= restarts_offset {
                return Err("block restart points out of order or out of range");
            }
            previous = Some(restart);
        }
        Ok(block)
    }

    /// Offset of restart point `i` (validated by `parse`).
    fn restart_point(&self, i: usize) -> usize {
        debug_assert!(i < self.restart_count);
        read_u32(&self.data, self.restarts_offset + i * U32_LEN) as usize
    }

    /// Bytes of the whole block (its weight in the cache).
    pub(super) fn len(&self) -> usize {
        self.data.len()
    }

    /// Decodes the entry header at `offset`: (shared, unshared, value_len,
    /// header length), with every length checked against the entries area.
    fn entry_header(&self, offset: usize) -> Result<EntryHeader, BlockError> {
        let area = &self.data[offset..self.restarts_offset];
        let (shared, unshared, value_len, used) = match area {
            // Fast path: all three lengths below 128 are one byte each, the
            // common case for small keys and values (and for index entries).
            &[shared, unshared, value_len, ..] if (shared | unshared | value_len) < 0x80 => (
                usize::from(shared),
                usize::from(unshared),
                usize::from(value_len),
                3,
            ),
            _ => entry_lengths(area)?,
        };
        let body = unshared
            .checked_add(value_len)
            .filter(|&body| body <= area.len() - used)
            .ok_or("block entry runs past the end of the block")?;
        Ok(EntryHeader {
            shared,
            key_start: offset + used,
            value_start: offset + used + unshared,
            end: offset + used + body,
        })
    }
}

/// Decodes the three varint lengths at the start of an entry (`area` runs
/// to the end of the entries): (shared, unshared, value_len, bytes used).
fn entry_lengths(area: &[u8]) -> Result<(usize, usize, usize, usize), BlockError> {
    let mut used = 0;
    let mut next = |what| -> Result<usize, BlockError> {
        let (value, n) = format::get_varint(&area[used..]).ok_or(what)?;
        used += n;
        usize::try_from(value).map_err(|_| what)
    };
    let shared = next("block entry: bad shared length")?;
    let unshared = next("block entry: bad unshared length")?;
    let value_len = next("block entry: bad value length")?;
    Ok((shared, unshared, value_len, used))
}

/// Where the parts of one entry are, as absolute block offsets.
#[derive(Debug, Clone, Copy)]
struct EntryHeader {
    /// Key bytes shared with the previous key.
    shared: usize,
    /// First byte of the unshared key bytes.
    key_start: usize,
    /// First byte of the value (= end of the unshared key bytes).
    value_start: usize,
    /// First byte after the value.
    end: usize,
}

/// Reads a little-endian u32 at `at` (callers checked the bounds).
fn read_u32(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + U32_LEN].try_into().expect("4 bytes"))
}

/// Compares an internal key with a target given as (user key, trailer),
/// exactly as [`format::compare_internal`] would, without building the
/// target key.
pub(super) fn compare_to_target(
    key: &[u8],
    target_user_key: &[u8],
    target_trailer: u64,
) -> Ordering {
    format::user_key(key)
        .cmp(target_user_key)
        .then_with(|| target_trailer.cmp(&format::key_trailer(key)))
}

/// A cursor over one block's entries. Keys are internal keys (at least
/// [`format::TRAILER_LEN`] bytes: checked while decoding so comparisons never
/// panic). The key buffer is reused across entries and blocks.
#[derive(Debug)]
pub(super) struct BlockIter {
    /// The block walked.
    block: Block,
    /// The current key, rebuilt from the shared prefix.
    key: Vec<u8>,
    /// Offset of the current entry; `block.restarts_offset` when not valid.
    current: usize,
    /// Offset of the entry after the current one.
    next_offset: usize,
    /// The current value's range in the block.
    value_start: usize,
    /// End of the current value.
    value_end: usize,
}

impl BlockIter {
    /// A cursor over `block`, not yet positioned (not valid).
    pub(super) fn new(block: Block) -> BlockIter {
        let end = block.restarts_offset;
        BlockIter {
            block,
            key: Vec::new(),
            current: end,
            next_offset: end,
            value_start: 0,
            value_end: 0,
        }
    }

    /// A cursor over `block` that reuses the allocation of `key_buffer`
    /// (see [`BlockIter::into_key_buffer`]).
    pub(super) fn with_key_buffer(block: Block, mut key_buffer: Vec<u8>) -> BlockIter {
        key_buffer.clear();
        let mut iter = BlockIter::new(block);
        iter.key = key_buffer;
        iter
    }

    /// Gives back the key buffer for reuse by another cursor.
    pub(super) fn into_key_buffer(self) -> Vec<u8> {
        self.key
    }

    /// Switches to another block, keeping the key buffer's allocation.
    pub(super) fn reset(&mut self, block: Block) {
        let end = block.restarts_offset;
        self.block = block;
        self.key.clear();
        self.current = end;
        self.next_offset = end;
    }

    /// True when positioned on an entry.
    pub(super) fn valid(&self) -> bool {
        self.current < self.block.restarts_offset
    }

    /// The current internal key; only when valid.
    pub(super) fn key(&self) -> &[u8] {
        debug_assert!(self.valid());
        &self.key
    }

    /// The current value as a slice of the block (no copy of the bytes).
    pub(super) fn value(&self) -> Bytes {
        debug_assert!(self.valid());
        self.block.data.slice(self.value_start..self.value_end)
    }

    /// The current value, borrowed.
    pub(super) fn value_bytes(&self) -> &[u8] {
        debug_assert!(self.valid());
        &self.block.data[self.value_start..self.value_end]
    }

    /// Makes the cursor invalid (after the end, or after an error).
    fn invalidate(&mut self) {
        self.current = self.block.restarts_offset;
        self.next_offset = self.block.restarts_offset;
    }

    /// Positions on the first entry (invalid for an empty block).
    pub(super) fn seek_to_first(&mut self) -> Result<(), BlockError> {
        self.seek_to_restart(0);
        self.next()
    }

    /// Prepares to decode the entry at restart point `i` with the next `next()`.
    fn seek_to_restart(&mut self, i: usize) {
        self.key.clear();
        self.current = self.block.restarts_offset;
        self.next_offset = if self.block.restart_count == 0 {
            self.block.restarts_offset
        } else {
            self.block.restart_point(i)
        };
    }

    /// Moves to the next entry (invalid past the last one). On error the
    /// cursor becomes invalid.
    pub(super) fn next(&mut self) -> Result<(), BlockError> {
        let offset = self.next_offset;
        if offset >= self.block.restarts_offset {
            self.invalidate();
            return Ok(());
        }
        match self.decode_at(offset) {
            Ok(()) => Ok(()),
            Err(what) => {
                self.invalidate();
                Err(what)
            }
        }
    }

    /// Decodes the entry at `offset` on top of the current key.
    fn decode_at(&mut self, offset: usize) -> Result<(), BlockError> {
        let header = self.block.entry_header(offset)?;
        if header.shared > self.key.len() {
            return Err("block entry shares more bytes than the previous key has");
        }
        self.key.truncate(header.shared);
        self.key
            .extend_from_slice(&self.block.data[header.key_start..header.value_start]);
        if self.key.len() < format::TRAILER_LEN {
            return Err("block key shorter than an internal key trailer");
        }
        self.current = offset;
        self.next_offset = header.end;
        self.value_start = header.value_start;
        self.value_end = header.end;
        Ok(())
    }

    /// The key stored at restart point `i` (a slice of the block: restart
    /// entries share nothing).
    fn restart_key(&self, i: usize) -> Result<&[u8], BlockError> {
        let header = self.block.entry_header(self.block.restart_point(i))?;
        if header.shared != 0 {
            return Err("block restart entry shares bytes with a previous key");
        }
        let key = &self.block.data[header.key_start..header.value_start];
        if key.len() < format::TRAILER_LEN {
            return Err("block key shorter than an internal key trailer");
        }
        Ok(key)
    }

    /// Positions on the first entry whose key is >= the target (user key,
    /// trailer) by internal-key order; invalid if there is none. Binary
    /// search over restart points, then a linear scan of one interval.
    pub(super) fn seek(
        &mut self,
        target_user_key: &[u8],
        target_trailer: u64,
    ) -> Result<(), BlockError> {
        let result = self.seek_inner(target_user_key, target_trailer);
        if result.is_err() {
            self.invalidate();
        }
        result
    }

    /// [`BlockIter::seek`] without the error cleanup.
    fn seek_inner(
        &mut self,
        target_user_key: &[u8],
        target_trailer: u64,
    ) -> Result<(), BlockError> {
        if self.block.restart_count == 0 {
            self.invalidate();
            return Ok(());
        }
        // Find the last restart point whose key is < target; the answer is at
        // or after it (or at restart 0 when every key is >= target).
        let (mut left, mut right) = (0usize, self.block.restart_count - 1);
        while left < right {
            let mid = left + (right - left).div_ceil(2);
            let key = self.restart_key(mid)?;
            if compare_to_target(key, target_user_key, target_trailer) == Ordering::Less {
                left = mid;
            } else {
                right = mid - 1;
            }
        }
        self.seek_to_restart(left);
        loop {
            self.next()?;
            if !self.valid()
                || compare_to_target(&self.key, target_user_key, target_trailer) != Ordering::Less
            {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{internal_key, Kind};
    use proptest::prelude::*;

    fn build(keys: &[Vec<u8>], interval: usize) -> Block {
        let mut builder = BlockBuilder::new(interval);
        for (i, key) in keys.iter().enumerate() {
            builder.add(key, format!("v{i}").as_bytes());
        }
        Block::parse(Bytes::copy_from_slice(builder.finish())).expect("valid block")
    }

    /// Seeks land on the first key >= target for several restart intervals.
    #[test]
    fn seek_and_scan_across_restart_points() {
        let keys: Vec<Vec<u8>> = (0..100u32)
            .map(|i| internal_key(format!("key{:03}", i * 2).as_bytes(), 5, Kind::Put))
            .collect();
        for interval in [1, 2, 3, 16, 200] {
            let block = build(&keys, interval);
            let mut iter = BlockIter::new(block);
            iter.seek_to_first().unwrap();
            for (i, key) in keys.iter().enumerate() {
                assert!(iter.valid());
                assert_eq!(iter.key(), &key[..]);
                assert_eq!(iter.value_bytes(), format!("v{i}").as_bytes());
                iter.next().unwrap();
            }
            assert!(!iter.valid());
            for i in 0..=200u32 {
                let user = format!("key{i:03}");
                iter.seek(user.as_bytes(), format::trailer(9, Kind::Put))
                    .unwrap();
                let expected = i.div_ceil(2) as usize;
                if expected < keys.len() {
                    assert_eq!(
                        iter.key(),
                        &keys[expected][..],
                        "interval {interval} seek {user}"
                    );
                } else {
                    assert!(!iter.valid());
                }
            }
        }
    }

    /// An empty block has no entry to land on.
    #[test]
    fn empty_block_is_never_valid() {
        let mut builder = BlockBuilder::new(16);
        let block = Block::parse(Bytes::copy_from_slice(builder.finish())).unwrap();
        let mut iter = BlockIter::new(block);
        iter.seek_to_first().unwrap();
        assert!(!iter.valid());
        iter.seek(b"a", 0).unwrap();
        assert!(!iter.valid());
    }

    proptest! {
        /// Arbitrary bytes (as if a checksum had been bypassed) never panic,
        /// never loop forever, and never yield a key shorter than a trailer.
        #[test]
        fn garbage_blocks_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), user in proptest::collection::vec(any::<u8>(), 0..4)) {
            if let Ok(block) = Block::parse(Bytes::from(data)) {
                let mut iter = BlockIter::new(block.clone());
                let mut steps = 0;
                if iter.seek_to_first().is_ok() {
                    while iter.valid() {
                        prop_assert!(iter.key().len() >= format::TRAILER_LEN);
                        let _ = iter.value();
                        steps += 1;
                        prop_assert!(steps <= block.len());
                        if iter.next().is_err() { break; }
                    }
                }
                let _ = iter.seek(&user, 7);
            }
        }
    }
}
