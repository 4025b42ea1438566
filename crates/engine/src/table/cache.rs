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
    cache: quick_cache::sync::Cache<BlockKey, Block, BlockWeighter>,
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
            cache: quick_cache::sync::Cache::with_weighter(
                items,
                capacity_bytes as u64,
                BlockWeighter,
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
