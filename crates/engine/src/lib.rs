//! # ringkv-engine
//!
//! ringkv's embeddable LSM storage engine, usable on its own like RocksDB or
//! fjall, and by the ringkv server.
//!
//! **Owns:** everything on disk — the write-ahead log, memtables, sorted
//! tables with Bloom filters and a block cache, the manifest, compaction,
//! snapshots, checkpoints, crash recovery.
//! **Must not touch:** networking, RESP, Redis semantics (types, databases,
//! commands) or cluster placement; those layers encode what they need into
//! keys and values and call this API.
//!
//! Keys are ordered bytewise. Every write gets a sequence number, which is
//! also the key's *version* (for compare-and-set). Entries may carry an
//! absolute expiry; an expired entry is never returned and its space comes
//! back through compaction.
//!
//! ```
//! use ringkv_engine::{Db, Options, WriteBatch};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let db = Db::open(dir.path(), Options::default()).unwrap();
//! db.put(b"user:1", b"ada", None).unwrap();
//! let mut batch = WriteBatch::new();
//! batch.put(&b"user:2"[..], &b"grace"[..], None).delete(&b"user:1"[..]);
//! db.write(batch).unwrap();
//! let keys: Vec<_> = db.iter().map(|e| e.unwrap().key).collect();
//! assert_eq!(keys, vec![&b"user:2"[..]]);
//! let entry = db.get(b"user:2").unwrap().unwrap();
//! assert_eq!(&entry.value[..], b"grace");
//! db.close().unwrap();
//! ```

#![warn(missing_docs)]

mod batch;
mod changelog;
mod compaction;
mod db;
mod error;
mod faults;
pub mod format;
mod group_commit;
mod iter;
mod memtable;
mod options;
mod row_cache;
pub mod sim_fs;
mod storage;
mod table;
mod verify;
mod version;
mod wal;

pub use batch::{BatchOp, WriteBatch};
pub use changelog::{decode_log_batch, LogBatch, LogOp, LogRead};
pub use db::{take_unsynced_read, without_waiting, Db, Recovery, Snapshot, Stats, SyncWait};
pub use error::{Error, Result};
pub use faults::Faults;
pub use iter::{Entry, EntryHead, RangeIter};
pub use options::{
    Clock, Compression, FsyncPolicy, Options, SystemClock, KEY_BYTES_MAX, VALUE_BYTES_MAX,
};
pub use row_cache::RowCacheStats;
pub use storage::{StdStorage, Storage, StorageFile, StorageLock};
pub use verify::{verify_directory, VerifyReport};
pub use wal::WalStats;

/// Entry points for the fuzz targets in `crates/engine/fuzz`: each feeds
/// arbitrary bytes to a reader of on-disk data, which must answer with data
/// or an error, never panic, hang or allocate without bound.
#[doc(hidden)]
pub mod fuzzing {
    use std::path::Path;
    use std::sync::Arc;

    /// Parses `bytes` as a WAL segment and as a manifest; returns the number
    /// of operations and edits decoded.
    pub fn read_wal_and_manifest(bytes: &[u8]) -> usize {
        let read = crate::wal::parse_records(bytes, |p| crate::wal::decode_payload(p).is_some());
        let mut decoded = 0;
        for (_, payload) in &read.payloads {
            decoded += crate::wal::decode_payload(payload).map_or(0, |ops| ops.len());
        }
        let read = crate::wal::parse_records(bytes, |_| true);
        for (_, payload) in &read.payloads {
            decoded += crate::version::VersionEdit::decode(Path::new("."), payload)
                .map_or(0, |edit| edit.added.len() + edit.deleted.len());
        }
        decoded
    }

    /// Writes `bytes` to `path`, opens it as a table, scans every entry and
    /// point-reads the keys seen. Returns the entries read, or the error.
    pub fn read_table(path: &Path, bytes: &[u8]) -> crate::Result<usize> {
        std::fs::write(path, bytes).map_err(|e| crate::Error::io(path, e))?;
        let cache = Arc::new(crate::table::BlockCache::new(1 << 20));
        let table = Arc::new(crate::table::Table::open(
            &crate::storage::StdStorage,
            path,
            1,
            cache,
        )?);
        let mut iter = crate::table::TableIter::new(table.clone());
        iter.seek_to_first()?;
        let mut keys = Vec::new();
        while iter.valid() {
            if keys.len() < 64 {
                keys.push(iter.key().to_vec());
            }
            iter.next()?;
        }
        for key in &keys {
            if key.len() >= crate::format::TRAILER_LEN {
                table.get(crate::format::user_key(key), u64::MAX >> 8)?;
            }
        }
        Ok(keys.len())
    }
}
