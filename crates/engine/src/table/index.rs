//! A table's index decoded once at open into flat arrays, so that a point
//! read or a seek binary-searches contiguous memory instead of decoding
//! varint entry headers of the index block at every step.
//!
//! Each entry keeps the first 8 bytes of its key's user key as a big-endian
//! `u64` (zero-padded): most steps of a binary search are decided by that
//! integer alone, and only ties compare the full internal key, which lives
//! in one contiguous byte arena.

use super::block::{compare_to_target, Block, BlockError, BlockIter};
use super::BlockHandle;
use crate::format;
use std::cmp::Ordering;

/// The first 8 bytes of `user_key`, zero-padded, as a big-endian integer.
/// When two keys' prefixes differ they order as the keys do (a shorter key
/// pads with 0, which is never above the longer key's byte there); when the
/// prefixes are equal the keys must be compared in full.
fn user_key_prefix(user_key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = user_key.len().min(8);
    bytes[..n].copy_from_slice(&user_key[..n]);
    u64::from_be_bytes(bytes)
}

/// The decoded index: entry `i` is data block `i`'s key (an internal key
/// `>=` every key of block `i` and `<` every key of block `i + 1`) and its
/// handle.
#[derive(Debug, Default)]
pub(super) struct Index {
    /// [`user_key_prefix`] of each entry's key.
    prefixes: Vec<u64>,
    /// End of each entry's key in `keys` (entry `i` starts where `i - 1` ends).
    key_ends: Vec<usize>,
    /// All keys, back to back.
    keys: Vec<u8>,
    /// Each entry's data block.
    handles: Vec<BlockHandle>,
}

impl Index {
    /// Decodes every entry of an index block (keys are internal keys, values
    /// block handles). Order and tiling are checked by the caller.
    pub(super) fn decode(block: Block) -> Result<Index, BlockError> {
        let mut index = Index::default();
        let mut iter = BlockIter::new(block);
        iter.seek_to_first()?;
        while iter.valid() {
            let handle = BlockHandle::decode_varints(iter.value_bytes())?;
            let key = iter.key();
            index.prefixes.push(user_key_prefix(format::user_key(key)));
            index.keys.extend_from_slice(key);
            index.key_ends.push(index.keys.len());
            index.handles.push(handle);
            iter.next()?;
        }
        index.prefixes.shrink_to_fit();
        index.key_ends.shrink_to_fit();
        index.keys.shrink_to_fit();
        index.handles.shrink_to_fit();
        Ok(index)
    }

    /// Number of entries (= data blocks).
    pub(super) fn len(&self) -> usize {
        self.handles.len()
    }

    /// The key of entry `i` (`i < len()`).
    pub(super) fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.key_ends[i - 1] };
        &self.keys[start..self.key_ends[i]]
    }

    /// The handle of entry `i` (`i < len()`).
    pub(super) fn handle(&self, i: usize) -> BlockHandle {
        self.handles[i]
    }

    /// The first entry whose key is `>=` the target (user key, trailer) in
    /// internal-key order, or `len()` when there is none: the only data
    /// block that can hold the target's first entry at or after it.
    pub(super) fn seek(&self, target_user_key: &[u8], target_trailer: u64) -> usize {
        let target_prefix = user_key_prefix(target_user_key);
        // partition_point: entries before the answer compare Less.
        let (mut low, mut high) = (0usize, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            let less = match self.prefixes[mid].cmp(&target_prefix) {
                Ordering::Less => true,
                Ordering::Greater => false,
                Ordering::Equal => {
                    compare_to_target(self.key(mid), target_user_key, target_trailer)
                        == Ordering::Less
                }
            };
            if less {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }

    /// Bytes held in memory.
    pub(super) fn resident_bytes(&self) -> usize {
        self.keys.len()
            + self.len()
                * (std::mem::size_of::<u64>()
                    + std::mem::size_of::<usize>()
                    + std::mem::size_of::<BlockHandle>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{internal_key, Kind};
    use proptest::prelude::*;

    /// Prefix order agrees with byte order whenever the prefixes differ.
    #[test]
    fn prefixes_order_like_keys_when_they_differ() {
        let keys: [&[u8]; 9] = [
            b"",
            b"\0",
            b"a",
            b"a\0",
            b"a\0\0\0\0\0\0\0\x01",
            b"ab",
            b"abcdefgh",
            b"abcdefghi",
            b"b",
        ];
        for a in keys {
            for b in keys {
                let (pa, pb) = (user_key_prefix(a), user_key_prefix(b));
                if pa != pb {
                    assert_eq!(pa.cmp(&pb), a.cmp(b), "{a:?} vs {b:?}");
                }
            }
        }
    }

    proptest! {
        /// `seek` finds the same entry as a linear search by
        /// `compare_internal` over the sorted keys.
        #[test]
        fn seek_matches_a_linear_search(
            users in proptest::collection::btree_set(
                proptest::collection::vec(prop_oneof![Just(0u8), Just(b'a'), Just(0xff)], 0..11), 1..60),
            target_user in proptest::collection::vec(prop_oneof![Just(0u8), Just(b'a'), Just(0xff)], 0..11),
            target_seq in 0u64..10,
        ) {
            let keys: Vec<Vec<u8>> = users.iter().map(|u| internal_key(u, 5, Kind::Put)).collect();
            let mut builder = super::super::block::BlockBuilder::new(1);
            for (i, key) in keys.iter().enumerate() {
                let mut value = Vec::new();
                BlockHandle { offset: i as u64, size: 1 }.encode_varints(&mut value);
                builder.add(key, &value);
            }
            let block = Block::parse(bytes::Bytes::copy_from_slice(builder.finish())).unwrap();
            let index = Index::decode(block).unwrap();
            prop_assert_eq!(index.len(), keys.len());
            let trailer = format::trailer(target_seq, Kind::Put);
            let expected = keys
                .iter()
                .position(|k| compare_to_target(k, &target_user, trailer) != Ordering::Less)
                .unwrap_or(keys.len());
            prop_assert_eq!(index.seek(&target_user, trailer), expected);
            for (i, key) in keys.iter().enumerate() {
                prop_assert_eq!(index.key(i), &key[..]);
                prop_assert_eq!(index.handle(i).offset, i as u64);
            }
        }
    }
}
