//! Settings of an open database, with their limits and why they are what
//! they are.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// When the write-ahead log is fsynced, as Redis' `appendfsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum FsyncPolicy {
    /// A write is acknowledged only after its WAL record is fsynced
    /// (concurrent writers share one fsync: group commit).
    Always = 0,
    /// Records reach the OS before the write is acknowledged; a background
    /// thread fsyncs once a second. A killed process loses nothing, a power
    /// loss at most about a second.
    #[default]
    EverySec = 1,
    /// Records reach the OS before the write is acknowledged; the OS decides
    /// when they reach the disk.
    No = 2,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "always" => Ok(FsyncPolicy::Always),
            "everysec" => Ok(FsyncPolicy::EverySec),
            "no" => Ok(FsyncPolicy::No),
            other => Err(format!(
                "invalid fsync policy '{other}' (expected always, everysec or no)"
            )),
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::EverySec => "everysec",
            FsyncPolicy::No => "no",
        })
    }
}

/// Block compression of sorted tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Blocks are stored as they are.
    None,
    /// Blocks are LZ4-compressed when that saves at least 1/8 of the bytes.
    #[default]
    Lz4,
}

/// Source of wall-clock time for expiry, behind a trait so tests can move
/// time by hand.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Largest key the engine accepts: Redis' default key limit is 512 MiB, but
/// keys live in index blocks and memtable nodes, so ringkv bounds them much
/// lower: 512 KiB.
pub const KEY_BYTES_MAX: usize = 512 * 1024;

/// Largest value the engine accepts, as Redis' `proto-max-bulk-len` default.
pub const VALUE_BYTES_MAX: usize = 512 * 1024 * 1024;

/// Options for [`crate::Db::open`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Create the directory and an empty database when none exists.
    pub create_if_missing: bool,
    /// When the WAL is fsynced.
    pub fsync: FsyncPolicy,
    /// A memtable is frozen and flushed once it holds this many bytes.
    pub memtable_bytes_max: usize,
    /// Frozen memtables waiting for flush before writers stall.
    pub frozen_memtables_max: usize,
    /// Capacity of the shared block cache in bytes.
    pub block_cache_bytes: usize,
    /// Capacity of the row cache (latest state of hot keys, for point reads)
    /// in bytes; 0 turns it off. See `row_cache.rs`. 1 GiB by default (256 MiB
    /// until issue 12): about 4M keys of 100-byte values, so a dataset a Redis
    /// user keeps in memory is answered from memory; the cache grows only as
    /// keys are read or written.
    pub row_cache_bytes: usize,
    /// Most table files kept open at once (each holds its index and filter).
    pub open_files_max: usize,
    /// Target uncompressed size of a data block.
    pub block_bytes: usize,
    /// Keys between restart points inside a block (prefix compression resets).
    pub block_restart_interval: usize,
    /// Bloom filter bits per key (10 gives about 1% false positives).
    pub bloom_bits_per_key: usize,
    /// Block compression of the tables compaction writes (level 1 and deeper).
    pub compression: Compression,
    /// Block compression of the level-0 tables a memtable flush writes. LZ4 by
    /// default, as deeper levels; None spares the flush (which runs beside the
    /// writes) its LZ4 pass for tables that live only until the next compaction,
    /// as RocksDB setups often run level 0. Measured on a SET load, None made no
    /// difference beyond this machine's noise (docs/BENCHMARKS.md, issue 12), so
    /// the default stays.
    pub level0_compression: Compression,
    /// Level-0 table count that starts a compaction into level 1.
    pub l0_compaction_trigger: usize,
    /// Level-0 table count from which every write is delayed a little.
    pub l0_slowdown_trigger: usize,
    /// Level-0 table count at which writes wait for compaction.
    pub l0_stop_trigger: usize,
    /// Target size of level 1; each deeper level is `level_multiplier` times larger.
    pub level_base_bytes: u64,
    /// Growth factor between levels.
    pub level_multiplier: u64,
    /// Target size of one table file written by compaction.
    pub table_target_bytes: u64,
    /// Largest key accepted.
    pub key_bytes_max: usize,
    /// Largest value accepted.
    pub value_bytes_max: usize,
    /// Bytes of recent write batches kept in memory for replicas
    /// (`Db::read_log`); 0 keeps none. Like Redis' `repl-backlog-size`.
    pub change_log_bytes_max: usize,
    /// Wall clock used for expiry.
    pub clock: Arc<dyn Clock>,
    /// I/O failures to inject (tests and failure drills); disarmed by default.
    pub faults: Arc<crate::Faults>,
    /// The file system every file operation goes through: [`crate::StdStorage`]
    /// (`std::fs`) by default; tests give a simulated one (`sim_fs`).
    pub storage: Arc<dyn crate::Storage>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            create_if_missing: true,
            fsync: FsyncPolicy::EverySec,
            memtable_bytes_max: 64 << 20,
            frozen_memtables_max: 2,
            block_cache_bytes: 256 << 20,
            row_cache_bytes: 1 << 30,
            open_files_max: 1000,
            block_bytes: 4096,
            block_restart_interval: 16,
            bloom_bits_per_key: 10,
            compression: Compression::Lz4,
            level0_compression: Compression::Lz4,
            l0_compaction_trigger: 4,
            l0_slowdown_trigger: 12,
            l0_stop_trigger: 20,
            level_base_bytes: 256 << 20,
            level_multiplier: 10,
            table_target_bytes: 64 << 20,
            key_bytes_max: KEY_BYTES_MAX,
            value_bytes_max: VALUE_BYTES_MAX,
            change_log_bytes_max: 0,
            clock: Arc::new(SystemClock),
            faults: Arc::new(crate::Faults::default()),
            storage: Arc::new(crate::StdStorage),
        }
    }
}
