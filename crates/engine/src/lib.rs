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
mod compaction;
mod db;
mod error;
pub mod format;
mod iter;
mod memtable;
mod options;
mod table;
mod version;
mod wal;

pub use batch::{BatchOp, WriteBatch};
pub use db::{Db, Recovery, Snapshot, Stats};
pub use error::{Error, Result};
pub use iter::{Entry, RangeIter};
pub use options::{
    Clock, Compression, FsyncPolicy, Options, SystemClock, KEY_BYTES_MAX, VALUE_BYTES_MAX,
};
pub use wal::WalStats;
