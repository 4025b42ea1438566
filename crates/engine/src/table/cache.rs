//! The block cache shared by all open tables: decompressed data blocks keyed
//! by (table file number, block offset), bounded in bytes.

use super::block::Block;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes charged per cached block on top of its contents: the key, the
/// `Block` header and the cache's own bookkeeping, so that a cache of many
/// tiny blocks is still bounded in real memory.
const BLOCK_OVERHEAD_BYTES: u64 = 64;

/// Cache key: (table file number, block offset).
type BlockKey = (u64, u64);

/// Hashes block keys with one folded 64x64->128 multiply per `u64`
/// (`foldhash`'s core step). Keys are file numbers and offsets chosen by the
/// engine, not by clients, so a keyed DoS-resistant hash buys nothing here;
/// the folded multiply still mixes every input bit into both the low bits
/// (bucket) and the high bits (shard and tag) the cache uses.
#[derive(Debug, Clone, Copy, Default)]
struct BlockKeyHashBuilder;

impl std::hash::BuildHasher for BlockKeyHashBuilder {
    type Hasher = BlockKeyHasher;

    fn build_hasher(&self) -> BlockKeyHasher {
        BlockKeyHasher(HASH_SEED)
    }
}

/// Initial state of [`BlockKeyHasher`] (any odd constant: the digits of pi).
const HASH_SEED: u64 = 0x243f_6a88_85a3_08d3;

/// Multiplier of [`BlockKeyHasher`] (2^64 / golden ratio, odd).
const HASH_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

/// The hasher built by [`BlockKeyHashBuilder`].
#[derive(Debug, Clone, Copy)]
struct BlockKeyHasher(u64);

impl BlockKeyHasher {
    /// Mixes one word into the state.
    #[inline]
    fn mix(&mut self, word: u64) {
        let product = u128::from(self.0 ^ word) * u128::from(HASH_MULTIPLIER);
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl std::hash::Hasher for BlockKeyHasher {
    #[inline]
    fn write_u64(&mut self, word: u64) {
        self.mix(word);
    }

    /// Not used by `(u64, u64)` keys; correct for any other input all the same.
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Weighs a cached block by its size in bytes.
#[derive(Debug, Clone, Copy, Default)]
struct BlockWeighter;

impl quick_cache::Weighter<BlockKey, Block> for BlockWeighter {
    fn weight(&self, _key: &BlockKey, block: &Block) -> u64 {
        block.len() as u64 + BLOCK_OVERHEAD_BYTES
    }
}

/// Shared cache of decompressed blocks, bounded in bytes.
pub(crate) struct BlockCache {
    /// The blocks.
    cache: quick_cache::sync::Cache<BlockKey, Block, BlockWeighter, BlockKeyHashBuilder>,
    /// Lookups that found their block.
    hits: AtomicU64,
    /// Lookups that did not.
    misses: AtomicU64,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("capacity_bytes", &self.cache.capacity())
            .field("used_bytes", &self.used_bytes())
            .field("hits", &self.hits())
            .field("misses", &self.misses())
            .finish()
    }
}

/// Expected average weight of a cached block, to size the cache's tables.
const TYPICAL_BLOCK_BYTES: usize = 4096;

impl BlockCache {
    /// A cache holding at most `capacity_bytes` of blocks (contents plus a
    /// fixed per-block overhead).
    pub fn new(capacity_bytes: usize) -> BlockCache {
        let items = (capacity_bytes / TYPICAL_BLOCK_BYTES).max(16);
        BlockCache {
            cache: quick_cache::sync::Cache::with(
                items,
                capacity_bytes as u64,
                BlockWeighter,
                BlockKeyHashBuilder,
                quick_cache::sync::DefaultLifecycle::default(),
            ),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Bytes currently charged to cached blocks.
    pub fn used_bytes(&self) -> usize {
        self.cache.weight() as usize
    }

    /// Capacity in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.cache.capacity() as usize
    }

    /// Lookups that found their block.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that had to read the disk.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// The cached block of table `file_number` at `offset`, counting the hit or miss.
    pub(super) fn get(&self, file_number: u64, offset: u64) -> Option<Block> {
        let found = self.cache.get(&(file_number, offset));
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Caches a block (a block heavier than the capacity is simply not kept).
    pub(super) fn insert(&self, file_number: u64, offset: u64, block: Block) {
        self.cache.insert((file_number, offset), block);
    }

    /// Drops every block of table `file_number` (after the file is deleted,
    /// so its memory is not held until eviction).
    pub fn evict_table(&self, file_number: u64) {
        self.cache.retain(|&(number, _), _| number != file_number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// Neighbouring block keys (consecutive offsets of one file, the same
    /// offset in consecutive files) get hashes that differ in both their
    /// low and high bits, so they spread over buckets and shards.
    #[test]
    fn block_key_hashes_spread_in_low_and_high_bits() {
        let hash = |key: BlockKey| BlockKeyHashBuilder.hash_one(key);
        let mut low = std::collections::HashSet::new();
        let mut high = std::collections::HashSet::new();
        for file in 0..16u64 {
            for block in 0..64u64 {
                let h = hash((file, block * 4096));
                low.insert(h & 0xff);
                high.insert(h >> 56);
            }
        }
        assert!(
            low.len() > 240 && high.len() > 240,
            "{} {}",
            low.len(),
            high.len()
        );
        assert_ne!(hash((1, 2)), hash((2, 1)));
    }
}
