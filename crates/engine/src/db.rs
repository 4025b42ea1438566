//! The database: ties the WAL, memtables, tables, manifest and background
//! work together behind the public API.
//!
//! Threads: callers write under one short write lock (sequence numbers, WAL
//! buffer, memtable insert); readers take no lock beyond cloning an `Arc`.
//! Background: `ringkv-flush` writes frozen memtables to level-0 tables,
//! `ringkv-compact` runs leveled compaction, `ringkv-wal-sync` fsyncs the
//! WAL once a second under `everysec`.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

use crate::batch::{BatchOp, WriteBatch};
use crate::changelog::{ChangeLog, LogRead};
use crate::compaction::{self, Compaction, RunContext};
use crate::error::{Error, Result};
use crate::format::{self, Kind};
use crate::group_commit::GroupCommit;
use crate::iter::{self, Entry, EntryHead, MemSource, MergingIter, RangeIter, Source};
use crate::memtable::Memtable;
use crate::options::{FsyncPolicy, Options};
use crate::row_cache::{Lookup, Row, RowCache};
use crate::storage::{Storage, StorageLock};
use crate::table::{TableBuilder, TableIter, TableOptions};
use crate::version::{
    self, table_path, Manifest, TableCache, TableFile, Version, VersionEdit, LEVELS,
};
use crate::wal::{self, Wal, WalStats};

/// What a reader needs to see the whole database at one moment: the active
/// memtable, the frozen ones waiting for flush (newest first), the tables.
#[derive(Debug)]
pub(crate) struct SuperVersion {
    pub mem: Arc<Memtable>,
    pub frozen: Vec<Arc<Memtable>>,
    pub version: Arc<Version>,
}

/// State guarded by the write lock.
#[derive(Debug)]
struct WriteState {
    last_seq: u64,
    record: Vec<u8>,
}

/// Manifest and compaction bookkeeping, guarded by one lock.
#[derive(Debug)]
struct VersionState {
    manifest: Manifest,
    cursors: Vec<Vec<u8>>,
}

/// Flags that wake the background threads.
#[derive(Debug, Default)]
struct BackgroundFlags {
    flush: bool,
    compact: bool,
    shutdown: bool,
}

#[derive(Debug, Default)]
struct Background {
    flags: Mutex<BackgroundFlags>,
    wake: Condvar,
}

impl Background {
    fn signal(&self, set: impl FnOnce(&mut BackgroundFlags)) {
        set(&mut self.flags.lock());
        self.wake.notify_all();
    }
}

#[derive(Debug, Default)]
struct Suspended {
    flush: Option<String>,
    compaction: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    flushes: AtomicU64,
    flush_bytes: AtomicU64,
    compactions: AtomicU64,
    compaction_bytes_read: AtomicU64,
    compaction_bytes_written: AtomicU64,
    stall_micros: AtomicU64,
    slowdowns: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Inner {
    dir: PathBuf,
    options: Options,
    _lock_file: Box<dyn StorageLock>,
    write: Mutex<WriteState>,
    /// Signalled when a flush or compaction finishes (stalled writers wait).
    progress: Condvar,
    visible_seq: AtomicU64,
    current: RwLock<Arc<SuperVersion>>,
    versions: Mutex<VersionState>,
    /// Held while a compaction picks, runs and installs.
    compaction_lock: Mutex<()>,
    tables: TableCache,
    next_file: AtomicU64,
    wal: Wal,
    /// The fsync policy as a `FsyncPolicy` discriminant; changeable live.
    fsync: std::sync::atomic::AtomicU8,
    changelog: ChangeLog,
    snapshots: Mutex<BTreeMap<u64, usize>>,
    closed: AtomicBool,
    /// Set while writers are slowed down or stalled ([`Db::write_may_wait`]).
    write_pressure: AtomicBool,
    /// Set by [`Db::interrupt_stalls`]: stalled writers give up with [`Error::Closed`].
    stalls_interrupted: AtomicBool,
    background: Arc<Background>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// First failure of a background flush or compaction that cannot be
    /// retried (writes are refused until restart).
    failed: Mutex<Option<String>>,
    /// Flush or compaction held back by a full disk, retried every second;
    /// writes are refused meanwhile.
    suspended: Mutex<Suspended>,
    /// Set once `failed` or `suspended` ever holds a reason, never cleared:
    /// every write checks it (and the WAL's) instead of four locks.
    troubled: AtomicBool,
    counters: Counters,
    recovery: Recovery,
    /// Latest state of hot keys for [`Db::get`] (`None` when turned off).
    row_cache: Option<RowCache>,
    /// The last sequence written (visible or waiting for its fsync under `always`).
    written_seq: AtomicU64,
    /// Writes under `always` waiting for their fsync without a thread each.
    group_commit: Arc<GroupCommit>,
}

/// What happened at open.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recovery {
    /// Operations replayed from the WAL.
    pub wal_ops: u64,
    /// WAL bytes replayed.
    pub wal_bytes: u64,
    /// Bytes cut off a torn or corrupt WAL tail.
    pub wal_bytes_dropped: u64,
    /// The unreadable part of the log had intact records after it: a record
    /// in the middle went bad and writes after it were not replayed (the
    /// segment is kept as `<segment>.damaged`).
    pub wal_damaged_mid_log: bool,
    /// Time the open took, in milliseconds.
    pub duration_ms: u64,
}

/// What [`without_waiting`] notes for the work it runs.
#[derive(Debug, Clone, Copy, Default)]
struct NoWait {
    /// This thread's writes may not wait.
    on: bool,
    /// A write was refused: nothing may change after it.
    refused: bool,
}

thread_local! {
    /// Set inside [`without_waiting`].
    static NO_WAIT: std::cell::Cell<NoWait> = const {
        std::cell::Cell::new(NoWait { on: false, refused: false })
    };
    /// The highest sequence a read inside [`without_waiting`] read as written, not yet fsynced
    /// ([`take_unsynced_read`]).
    static UNSYNCED_READ: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Runs `f` with this thread's writes refusing to wait: a write that would be slowed down
/// or stalled (flushes or level-0 compaction behind) returns [`Error::WouldBlock`] before
/// changing anything, and a WAL write-out that would wait for another writer's I/O is left
/// to the next sync. Under `always` a write returns without waiting for its fsync, invisible
/// until then: the caller awaits [`Db::synced`] before it answers. A read of a key whose
/// write still waits for its fsync reads it as written: the caller must then not answer
/// before [`take_unsynced_read`]'s sequence is fsynced either. Once a write was refused
/// every later write is too. Returns `f`'s result and whether something was refused, so the
/// caller (an async server, whose worker threads must not block) can run the work again
/// where waiting is allowed.
pub fn without_waiting<T>(f: impl FnOnce() -> T) -> (T, bool) {
    UNSYNCED_READ.with(|c| c.set(0));
    let outer = NO_WAIT.with(|c| {
        c.replace(NoWait {
            on: true,
            ..NoWait::default()
        })
    });
    let result = f();
    let inner = NO_WAIT.with(|c| c.replace(outer));
    (result, inner.refused)
}

/// Inside [`without_waiting`]: notes the refusal and returns the error to give.
fn refuse_wait() -> Option<Error> {
    NO_WAIT.with(|c| {
        let mut state = c.get();
        state.on.then(|| {
            state.refused = true;
            c.set(state);
            Error::WouldBlock
        })
    })
}

/// True inside [`without_waiting`].
fn waiting_forbidden() -> bool {
    NO_WAIT.with(|c| c.get().on)
}

/// Inside [`without_waiting`], once something was refused: nothing may change any more.
fn refused_already() -> bool {
    NO_WAIT.with(|c| {
        let state = c.get();
        state.on && state.refused
    })
}

/// After [`without_waiting`], on its thread: the sequence its reads saw written but not yet
/// fsynced (under `always`), which the caller syncs to before it answers them (0: none).
/// Reading it clears it.
pub fn take_unsynced_read() -> u64 {
    UNSYNCED_READ.with(|c| c.replace(0))
}

/// Where a read of one key looks.
enum ReadAt {
    /// The last visible write, through the row cache.
    Visible(u64),
    /// Every write made, fsynced or not: inside [`without_waiting`], for a key whose write
    /// waits for its fsync (the caller's reply waits for it too: [`take_unsynced_read`]).
    Written(u64),
}

/// An open database. Cheap to clone; `Send + Sync`, shared by many threads.
#[derive(Debug, Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

/// Counters and gauges of an open database.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Highest sequence number visible to readers.
    pub last_sequence: u64,
    /// Bytes in the active memtable.
    pub memtable_bytes: usize,
    /// Frozen memtables waiting for flush.
    pub frozen_memtables: usize,
    /// Bytes held by frozen memtables.
    pub frozen_memtable_bytes: usize,
    /// Tables per level.
    pub level_tables: Vec<usize>,
    /// Bytes per level.
    pub level_bytes: Vec<u64>,
    /// Block cache: bytes used, capacity, hits, misses.
    pub block_cache_bytes: usize,
    /// Block cache capacity.
    pub block_cache_capacity: usize,
    /// Block cache hits.
    pub block_cache_hits: u64,
    /// Block cache misses.
    pub block_cache_misses: u64,
    /// Index and filter bytes of open tables.
    pub table_index_filter_bytes: usize,
    /// Open table files.
    pub open_tables: usize,
    /// Memtable flushes since open, and bytes written by them.
    pub flushes: u64,
    /// Bytes written by flushes.
    pub flush_bytes: u64,
    /// Compactions since open.
    pub compactions: u64,
    /// Bytes read by compactions.
    pub compaction_bytes_read: u64,
    /// Bytes written by compactions.
    pub compaction_bytes_written: u64,
    /// Time writers spent stalled, in microseconds.
    pub stall_micros: u64,
    /// Writes delayed by level-0 slowdown.
    pub slowdowns: u64,
    /// WAL counters.
    pub wal: WalStats,
    /// Row cache counters (all zero when it is off).
    pub row_cache: crate::RowCacheStats,
    /// What the open recovered.
    pub recovery: Recovery,
    /// The reason writes are refused, if they are (a full disk or a
    /// failure that needs a restart).
    pub write_error: Option<String>,
    /// True when `write_error` is a full disk: writes resume by themselves
    /// once space returns. False for a failure that needs a restart.
    pub disk_full: bool,
}

impl Db {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        let started = Instant::now();
        let dir = dir.as_ref().to_path_buf();
        let storage = options.storage.clone();
        let fs: &dyn Storage = &*storage;
        let current_path = dir.join("CURRENT");
        if options.create_if_missing {
            fs.create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        } else if !fs
            .exists(&current_path)
            .map_err(|e| Error::io(&current_path, e))?
        {
            return Err(Error::InvalidArgument(format!(
                "no database in {} and create_if_missing is off",
                dir.display()
            )));
        }
        let lock_file = lock_directory(fs, &dir)?;
        let recovered = Manifest::recover(fs, &dir)?;
        let listing = list_files(fs, &dir)?;
        let (mut version, log_number, manifest_next, manifest_seq) = match recovered {
            Some(r) => (r.version, r.log_number, r.next_file_number, r.last_seq),
            None => (Version::default(), 0, 1, 0),
        };
        let mut next_file = manifest_next.max(listing.max_number + 1);
        let mut last_seq = version
            .levels
            .iter()
            .flatten()
            .map(|t| t.meta.seq_max)
            .fold(manifest_seq, u64::max);
        let manifest_known_seq = last_seq;
        let mut replayed_min_seq: Option<u64> = None;
        let mut replayed_max_seq = 0u64;

        // Replay the WAL segments not yet flushed, oldest first.
        let mut recovery = Recovery::default();
        let replay: Vec<u64> = listing
            .wal
            .iter()
            .copied()
            .filter(|&n| n >= log_number)
            .collect();
        let mem = Arc::new(Memtable::new(0));
        for (i, &number) in replay.iter().enumerate() {
            let path = wal::segment_path(&dir, number);
            let read = wal::read_segment(fs, &path)?;
            for (_, payload) in &read.payloads {
                let ops = wal::decode_payload(payload).expect("validated by read_segment");
                for op in ops {
                    mem.insert(op.key, op.seq, op.kind, op.stored_value);
                    last_seq = last_seq.max(op.seq);
                    replayed_min_seq = Some(replayed_min_seq.map_or(op.seq, |m| m.min(op.seq)));
                    replayed_max_seq = replayed_max_seq.max(op.seq);
                    recovery.wal_ops += 1;
                }
            }
            recovery.wal_bytes += read.valid_bytes;
            if read.valid_bytes < read.file_bytes {
                // A damaged segment followed by segments holding records would lose those
                // later writes. Followed only by empty ones, it is the log's torn tail: a
                // power cut while the rotated segment's last bytes were being synced, after
                // the next segment was created but before anything was written to it.
                if later_segments_hold_records(fs, &dir, &replay[i + 1..])? {
                    return Err(Error::corruption(
                        &path,
                        read.valid_bytes,
                        "corrupt WAL record in a segment that is not the last; \
                         later segments would be lost",
                    ));
                }
                recovery.wal_bytes_dropped += read.file_bytes - read.valid_bytes;
                preserve_damaged_segment(fs, &path, read.valid_bytes, &mut recovery)?;
            }
        }
        let marker = RecoveryMarker::read(fs, &dir);
        refuse_lost_orphans(
            fs,
            &dir,
            &version,
            &listing,
            manifest_known_seq,
            replayed_min_seq,
            marker,
        )?;
        // Write what the WAL held to a level-0 table, so the new manifest
        // can retire every old segment.
        let table_options = TableOptions::for_flush(&options);
        if !mem.is_empty() {
            // What was replayed may be only in the page cache (a process crash under `everysec`
            // or `no`): make it durable before a table holds it, or a power cut before the new
            // manifest leaves an orphan table with writes no WAL has on disk (as in a flush).
            for &number in &replay {
                let path = wal::segment_path(&dir, number);
                fs.open(&path)
                    .and_then(|file| file.sync())
                    .map_err(|e| Error::io(&path, e))?;
            }
            let number = next_file;
            next_file += 1;
            RecoveryMarker {
                table: number,
                seq_min: replayed_min_seq.unwrap_or(0),
                seq_max: replayed_max_seq,
            }
            .write(fs, &dir)?;
            let file = write_memtable(fs, &dir, number, &mem, &table_options)?;
            version = version.apply(&VersionEdit {
                added: vec![(0, Arc::new(file))],
                ..VersionEdit::default()
            });
        }
        let wal_number = next_file;
        let manifest_number = next_file + 1;
        next_file += 2;
        let wal = Wal::create(
            storage.clone(),
            &dir,
            wal_number,
            last_seq,
            options.faults.clone(),
        )?;
        let manifest = Manifest::create(
            fs,
            &dir,
            manifest_number,
            &version,
            wal_number,
            next_file,
            last_seq,
        )?;
        // Everything the new manifest does not name is an orphan.
        let live: std::collections::HashSet<u64> =
            version.levels.iter().flatten().map(|t| t.number).collect();
        for number in listing.tables.iter().filter(|n| !live.contains(n)) {
            remove_quietly(fs, &table_path(&dir, *number));
        }
        for number in listing.wal.iter().filter(|&&n| n < wal_number) {
            remove_quietly(fs, &wal::segment_path(&dir, *number));
        }
        for number in listing.manifests.iter().filter(|&&n| n != manifest_number) {
            remove_quietly(fs, &dir.join(format!("MANIFEST-{number:010}")));
        }
        // The new manifest names the recovery table (if any): the marker has done its job.
        remove_quietly(fs, &dir.join(RecoveryMarker::NAME));

        let tables = TableCache::new(
            storage.clone(),
            options.open_files_max,
            options.block_cache_bytes,
        );
        recovery.duration_ms = started.elapsed().as_millis() as u64;
        let row_cache =
            (options.row_cache_bytes > 0).then(|| RowCache::new(options.row_cache_bytes));
        let inner = Arc::new(Inner {
            dir,
            _lock_file: lock_file,
            write: Mutex::new(WriteState {
                last_seq,
                record: Vec::new(),
            }),
            progress: Condvar::new(),
            visible_seq: AtomicU64::new(last_seq),
            current: RwLock::new(Arc::new(SuperVersion {
                mem: Arc::new(Memtable::new(wal_number)),
                frozen: Vec::new(),
                version: Arc::new(version),
            })),
            versions: Mutex::new(VersionState {
                manifest,
                cursors: vec![Vec::new(); LEVELS],
            }),
            compaction_lock: Mutex::new(()),
            tables,
            next_file: AtomicU64::new(next_file),
            wal,
            fsync: std::sync::atomic::AtomicU8::new(options.fsync as u8),
            changelog: ChangeLog::new(options.change_log_bytes_max, last_seq),
            snapshots: Mutex::new(BTreeMap::new()),
            closed: AtomicBool::new(false),
            write_pressure: AtomicBool::new(false),
            stalls_interrupted: AtomicBool::new(false),
            background: Arc::new(Background::default()),
            threads: Mutex::new(Vec::new()),
            failed: Mutex::new(None),
            suspended: Mutex::new(Suspended::default()),
            troubled: AtomicBool::new(false),
            counters: Counters::default(),
            recovery,
            row_cache,
            written_seq: AtomicU64::new(last_seq),
            group_commit: Arc::new(GroupCommit::new(last_seq)),
            options,
        });
        tracing::info!(
            dir = %inner.dir.display(),
            wal_ops = recovery.wal_ops,
            wal_bytes = recovery.wal_bytes,
            duration_ms = recovery.duration_ms,
            "database opened"
        );
        let db = Db { inner };
        db.start_background();
        db.inner.background.signal(|f| f.compact = true);
        Ok(db)
    }

    fn start_background(&self) {
        let mut threads = self.inner.threads.lock();
        let spawn = |name: &str, body: fn(&Inner, &Background) -> bool| {
            let weak: Weak<Inner> = Arc::downgrade(&self.inner);
            let background = self.inner.background.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || background_loop(weak, background, body))
                .expect("spawn background thread")
        };
        threads.push(spawn("ringkv-flush", flush_step));
        threads.push(spawn("ringkv-compact", compaction_step));
        threads.push(spawn("ringkv-wal-sync", wal_sync_step));
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let commit = self.inner.group_commit.clone();
        threads.push(
            std::thread::Builder::new()
                .name("ringkv-group-commit".into())
                .spawn(move || group_commit_loop(weak, commit))
                .expect("spawn background thread"),
        );
    }

    /// The live value of `key`, or `None` when absent, deleted or expired.
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        let inner = &self.inner;
        let seq = match inner.read_at(key)? {
            ReadAt::Visible(seq) => seq,
            ReadAt::Written(seq) => {
                let current = inner.current.read().clone();
                return inner.get_at(&current, key, seq);
            }
        };
        let Some(cache) = &inner.row_cache else {
            let current = inner.current.read().clone();
            return inner.get_at(&current, key, seq);
        };
        if let Lookup::Hit(row, cached_key) = cache.lookup(key, seq) {
            return inner.cached_entry(cached_key, row);
        }
        let current = inner.current.read().clone();
        let found = inner.find(&current, key, seq)?;
        let row = match &found {
            None => Row::Absent,
            Some((internal_key, stored)) => {
                match Kind::from_u8(format::key_kind_byte(internal_key)) {
                    None => return Err(Error::corruption(&inner.dir, 0, "unknown entry kind")),
                    Some(Kind::Delete) => Row::Absent,
                    // The cache copies the bytes into its own block (a table's value is a slice of
                    // a whole data block, which must not be kept alive by it).
                    Some(kind) => Row::Value {
                        kind,
                        version: format::key_seq(internal_key),
                        stored: stored.clone(),
                    },
                }
            }
        };
        cache.fill(key, seq, row);
        inner.live(found)
    }

    /// The version and expiry of `key` if it is live, as [`Db::get`] would
    /// find it, without copying its value out (issue 12): what a write needs
    /// to know of the entry it replaces. A row-cache miss is not filled in
    /// (the caller is about to write the key, and the write sets the row).
    pub fn head(&self, key: &[u8]) -> Result<Option<EntryHead>> {
        let inner = &self.inner;
        let (seq, cached) = match inner.read_at(key)? {
            ReadAt::Visible(seq) => (seq, true),
            ReadAt::Written(seq) => (seq, false),
        };
        let answer = |kind, version, stored: &[u8]| {
            iter::live_head(kind, version, stored, inner.options.clock.now_ms())
                .transpose()
                .map_err(|what| Error::corruption(&inner.dir, 0, what))
        };
        if let Some(cache) = inner.row_cache.as_ref().filter(|_| cached) {
            if let Some(cached) = cache.peek(key, seq, answer) {
                return cached;
            }
        }
        let current = inner.current.read().clone();
        let Some((internal_key, stored)) = inner.find(&current, key, seq)? else {
            return Ok(None);
        };
        let Some(kind) = Kind::from_u8(format::key_kind_byte(&internal_key)) else {
            return Err(Error::corruption(&inner.dir, 0, "unknown entry kind"));
        };
        answer(kind, format::key_seq(&internal_key), &stored)
    }

    /// Sets `key` to `value`, expiring at `expires_at_ms` (Unix ms) if given.
    /// Returns the write's sequence number (the key's new version).
    pub fn put(&self, key: &[u8], value: &[u8], expires_at_ms: Option<u64>) -> Result<u64> {
        let mut batch = WriteBatch::with_capacity(1);
        batch.put(
            Bytes::copy_from_slice(key),
            Bytes::copy_from_slice(value),
            expires_at_ms,
        );
        self.write(batch)
    }

    /// Deletes `key`. Returns the write's sequence number.
    pub fn delete(&self, key: &[u8]) -> Result<u64> {
        let mut batch = WriteBatch::with_capacity(1);
        batch.delete(Bytes::copy_from_slice(key));
        self.write(batch)
    }

    /// Applies `batch` atomically and waits until it is durable under the
    /// fsync policy. Returns the sequence of its last operation.
    pub fn write(&self, batch: WriteBatch) -> Result<u64> {
        if self.fsync_policy() == FsyncPolicy::Always && !batch.is_empty() {
            // It waits for its fsync below, which `without_waiting` forbids.
            if let Some(refused) = refuse_wait() {
                return Err(refused);
            }
        }
        let seq = self.write_deferred(batch)?;
        self.sync(seq)?;
        Ok(seq)
    }

    /// Applies `batch` atomically and makes it visible to readers. Call
    /// [`Db::sync`] with the returned sequence before acknowledging the
    /// write to anyone.
    ///
    /// Under `everysec` and `no` it returns without waiting for the WAL
    /// (servers sync once per pipeline of requests, so one write(2) covers
    /// many writes). Under `always` it returns once the WAL record is
    /// fsynced, the write being visible only then: concurrent writers share
    /// one fsync (group commit: the first to find the log's I/O free writes
    /// and fsyncs every record buffered, the others find theirs covered),
    /// and a write whose fsync fails is answered with an error and is never
    /// visible (RocksDB's write group). The [`Db::sync`] after it is then free.
    /// Inside [`without_waiting`], under `always`, it returns before the
    /// fsync, the write still invisible: await [`Db::synced`] before
    /// answering, which fails if the fsync does.
    pub fn write_deferred(&self, batch: WriteBatch) -> Result<u64> {
        self.inner.check_writable()?;
        self.validate(&batch)?;
        if refused_already() {
            // A write of this work was refused: it runs again, so nothing of it may be written.
            return Err(Error::WouldBlock);
        }
        let inner = &self.inner;
        let mut state = inner.write.lock();
        let current = inner.make_room(&mut state)?;
        if !batch.expectations.is_empty() {
            for (key, expected) in &batch.expectations {
                let found = inner.get_at(&current, key, state.last_seq)?;
                if found.map(|e| e.version) != *expected {
                    return Err(Error::Conflict);
                }
            }
        }
        if batch.ops.is_empty() {
            return Ok(state.last_seq);
        }
        let first_seq = state.last_seq + 1;
        let last_seq = state.last_seq + batch.ops.len() as u64;
        assert!(last_seq <= format::SEQ_MAX, "sequence numbers exhausted");

        let mut record = std::mem::take(&mut state.record);
        record.clear();
        wal::encode_record(
            &mut record,
            first_seq,
            batch.ops.iter().map(|op| match op {
                BatchOp::Put {
                    key,
                    value,
                    expires_at_ms: None,
                } => (Kind::Put, &key[..], None, &value[..]),
                BatchOp::Put {
                    key,
                    value,
                    expires_at_ms: Some(at),
                } => (Kind::PutExpiring, &key[..], Some(*at), &value[..]),
                BatchOp::Delete { key } => (Kind::Delete, &key[..], None, &[][..]),
            }),
            batch.ops.len() as u32,
        );
        // Into the memtable first, then the WAL buffer: whatever a WAL write covers is then in
        // the memtable, so publishing the sequences it covers never shows a half-applied batch.
        // Entries above `visible_seq` stay invisible to readers until published.
        current
            .mem
            .insert_all(batch.ops.iter().enumerate().map(|(i, op)| {
                let (kind, stored) = stored_value(op);
                let seq = first_seq + i as u64;
                if let Some(cache) = &inner.row_cache {
                    cache.write(op.key(), seq, kind, &stored);
                }
                (&op.key()[..], seq, kind, stored)
            }));
        let must_write = inner.wal.append(&record, last_seq);
        inner.publish(&mut state, first_seq, last_seq, &record);
        inner.mark_unsynced(batch.ops.iter().map(|op| &op.key()[..]), last_seq);
        state.record = record;
        drop(state);
        inner.finish_write(last_seq, must_write)?;
        Ok(last_seq)
    }

    /// Applies a batch read from another database's change log
    /// ([`Db::read_log`]) with its original sequence numbers, so versions
    /// match across copies. The batch must follow this database's last
    /// sequence exactly. Like [`Db::write_deferred`], call [`Db::sync`]
    /// before acknowledging it.
    pub fn apply_log_batch(&self, record: &[u8]) -> Result<u64> {
        self.inner.check_writable()?;
        let invalid = |what: &str| Error::InvalidArgument(format!("change-log batch: {what}"));
        let read = wal::parse_records(record, |p| wal::decode_payload(p).is_some());
        if read.payloads.len() != 1 || read.valid_bytes != record.len() as u64 {
            return Err(invalid("not exactly one intact record"));
        }
        let ops = wal::decode_payload(&read.payloads[0].1).expect("validated");
        let (Some(first), Some(last)) = (ops.first(), ops.last()) else {
            return Err(invalid("empty batch"));
        };
        let (first_seq, last_seq) = (first.seq, last.seq);
        let inner = &self.inner;
        let mut state = inner.write.lock();
        let current = inner.make_room(&mut state)?;
        if first_seq != state.last_seq + 1 {
            return Err(invalid(&format!(
                "starts at sequence {first_seq}, expected {}",
                state.last_seq + 1
            )));
        }
        // The memtable copies the value into its arena; only the row cache needs it owned.
        current.mem.insert_all(ops.iter().map(|op| {
            if let Some(cache) = &inner.row_cache {
                cache.write(
                    op.key,
                    op.seq,
                    op.kind,
                    &Bytes::copy_from_slice(op.stored_value),
                );
            }
            (op.key, op.seq, op.kind, op.stored_value)
        }));
        let must_write = inner.wal.append(record, last_seq);
        inner.publish(&mut state, first_seq, last_seq, record);
        inner.mark_unsynced(ops.iter().map(|op| op.key), last_seq);
        drop(state);
        inner.finish_write(last_seq, must_write)?;
        Ok(last_seq)
    }

    /// Committed batches holding sequences from `from_seq` on, about
    /// `bytes_max` bytes of them, for replicas to apply with
    /// [`Db::apply_log_batch`]; or [`LogRead::Trimmed`] when the change log
    /// no longer holds `from_seq` (the reader must start from a checkpoint).
    /// The log keeps `Options::change_log_bytes_max` bytes
    /// ([`Db::set_change_log_capacity`] changes it).
    pub fn read_log(&self, from_seq: u64, bytes_max: usize) -> LogRead {
        self.inner.changelog.read(from_seq, bytes_max)
    }

    /// Waits until sequence `seq` is committed or `timeout` passes; returns
    /// the last committed sequence.
    pub fn wait_for_sequence(&self, seq: u64, timeout: Duration) -> u64 {
        self.inner.changelog.wait_for(seq, timeout)
    }

    /// Sets how many bytes of recent batches the change log keeps (0: none).
    pub fn set_change_log_capacity(&self, bytes: usize) {
        self.inner.changelog.set_capacity(bytes)
    }

    /// Bytes held by the change log, and the oldest sequence it holds.
    pub fn change_log_usage(&self) -> (usize, Option<u64>) {
        self.inner.changelog.usage()
    }

    /// Makes every write up to `seq` durable under the fsync policy:
    /// fsynced for `always`, handed to the OS otherwise.
    pub fn sync(&self, seq: u64) -> Result<()> {
        let fsync = self.fsync_policy() == FsyncPolicy::Always;
        self.inner.wal.sync_to(seq, fsync)?;
        self.inner.publish_synced();
        Ok(())
    }

    /// [`Db::sync`] if it can be done without waiting for another caller's
    /// WAL I/O (a slow fsync in progress): `None` when it would wait, so an
    /// async caller can move the wait off its worker thread.
    pub fn try_sync(&self, seq: u64) -> Option<Result<()>> {
        let fsync = self.fsync_policy() == FsyncPolicy::Always;
        self.inner.wal.try_sync_to(seq, fsync)
    }

    /// True when a write now may wait long: writes are being slowed down or
    /// stalled for flushes and level-0 compaction, or the WAL buffer is
    /// filling while its I/O is busy. (Under `always`, a write inside
    /// [`without_waiting`] does not wait for its fsync: see [`Db::synced`].)
    /// A hint, cheap to ask before each write: callers that must not block
    /// (an async server) run such writes where waiting is allowed, and run
    /// the others inside [`without_waiting`], which refuses the few that the
    /// hint missed.
    pub fn write_may_wait(&self) -> bool {
        self.inner.write_pressure.load(Ordering::Relaxed) || self.inner.wal.appender_may_wait()
    }

    /// True when [`Db::sync`] of `seq` has nothing left to do under the
    /// current policy (another caller's sync already covered it).
    pub fn is_synced(&self, seq: u64) -> bool {
        let fsync = self.fsync_policy() == FsyncPolicy::Always;
        if !self.inner.wal.covered(seq, fsync) {
            return false;
        }
        // Under `always` a write is visible once fsynced: make sure it is before its writer
        // is answered (the group's fsync may have ended a moment ago, not yet published).
        self.inner.publish_synced();
        true
    }

    /// Waits, without a thread, until every write up to `seq` is fsynced and visible: what
    /// a write made inside [`without_waiting`] under `always` awaits before it is
    /// acknowledged. Fails if the fsync does (the write then never becomes visible) or the
    /// disk is full. One thread fsyncs for every waiter at once (group commit; see
    /// docs/durability.md).
    pub fn synced(&self, seq: u64) -> SyncWait {
        SyncWait {
            inner: self.inner.clone(),
            seq,
        }
    }

    /// The last sequence written: [`Db::last_sequence`] and, under `always`, the writes still
    /// waiting for their fsync. What a writer syncs to before it answers.
    pub fn last_written_sequence(&self) -> u64 {
        self.inner.written_seq.load(Ordering::Acquire)
    }

    /// fsyncs the WAL up to the last write, whatever the policy.
    pub fn sync_all(&self) -> Result<()> {
        // Writes not yet published (under `always`, waiting for their group's fsync) too.
        let seq = self.inner.wal.appended_seq();
        self.inner.wal.sync_to(seq, true)?;
        self.inner.publish_synced();
        Ok(())
    }

    fn validate(&self, batch: &WriteBatch) -> Result<()> {
        let options = &self.inner.options;
        for op in &batch.ops {
            if op.key().len() > options.key_bytes_max {
                return Err(Error::InvalidArgument(format!(
                    "key of {} bytes exceeds the limit of {} bytes",
                    op.key().len(),
                    options.key_bytes_max
                )));
            }
            if let BatchOp::Put { value, .. } = op {
                if value.len() > options.value_bytes_max {
                    return Err(Error::InvalidArgument(format!(
                        "value of {} bytes exceeds the limit of {} bytes",
                        value.len(),
                        options.value_bytes_max
                    )));
                }
            }
        }
        Ok(())
    }

    /// A consistent read view as of now.
    pub fn snapshot(&self) -> Snapshot {
        let seq = self.inner.visible_seq.load(Ordering::Acquire);
        *self.inner.snapshots.lock().entry(seq).or_insert(0) += 1;
        let current = self.inner.current.read().clone();
        Snapshot {
            guard: Arc::new(SnapshotGuard {
                db: self.clone(),
                seq,
                current,
            }),
        }
    }

    /// Ordered iterator over live keys in `range`, at a snapshot taken now.
    /// Bounds may be `&[u8]`, `Vec<u8>`, `Bytes`…: `db.range(b"a".as_slice()..b"b")`.
    pub fn range<K, R>(&self, range: R) -> RangeIter
    where
        K: AsRef<[u8]> + ?Sized,
        R: RangeBounds<K>,
    {
        self.snapshot().range(range)
    }

    /// Ordered iterator over every live key, at a snapshot taken now.
    pub fn iter(&self) -> RangeIter {
        self.snapshot().iter()
    }

    /// Sequence number of the last write visible to readers.
    pub fn last_sequence(&self) -> u64 {
        self.inner.visible_seq.load(Ordering::Acquire)
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// The fsync policy in force.
    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.inner.fsync_policy()
    }

    /// Changes the fsync policy of a running database (Redis' `CONFIG SET
    /// appendfsync`). Switching to `always` first fsyncs everything written
    /// so far, so every write acknowledged from then on is on disk.
    pub fn set_fsync_policy(&self, policy: FsyncPolicy) -> Result<()> {
        if policy == FsyncPolicy::Always {
            self.sync_all()?;
        }
        if self.fsync_policy() == FsyncPolicy::Always && policy != FsyncPolicy::Always {
            // Writes waiting for their group's fsync become visible with it.
            self.inner.fsync.store(policy as u8, Ordering::Release);
            return self.sync_all();
        }
        self.inner.fsync.store(policy as u8, Ordering::Release);
        Ok(())
    }

    /// The options the database was opened with (`fsync` as at open; see
    /// [`Db::fsync_policy`]).
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Counters and gauges.
    pub fn stats(&self) -> Stats {
        let inner = &self.inner;
        let current = inner.current.read().clone();
        let c = &inner.counters;
        let blocks = &inner.tables.blocks;
        Stats {
            last_sequence: self.last_sequence(),
            memtable_bytes: current.mem.approximate_bytes(),
            frozen_memtables: current.frozen.len(),
            frozen_memtable_bytes: current.frozen.iter().map(|m| m.approximate_bytes()).sum(),
            level_tables: current.version.levels.iter().map(Vec::len).collect(),
            level_bytes: (0..LEVELS)
                .map(|l| current.version.level_bytes(l))
                .collect(),
            block_cache_bytes: blocks.used_bytes(),
            block_cache_capacity: blocks.capacity_bytes(),
            block_cache_hits: blocks.hits(),
            block_cache_misses: blocks.misses(),
            table_index_filter_bytes: inner.tables.resident_bytes(),
            open_tables: inner.tables.open_count(),
            flushes: c.flushes.load(Ordering::Relaxed),
            flush_bytes: c.flush_bytes.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
            compaction_bytes_read: c.compaction_bytes_read.load(Ordering::Relaxed),
            compaction_bytes_written: c.compaction_bytes_written.load(Ordering::Relaxed),
            stall_micros: c.stall_micros.load(Ordering::Relaxed),
            slowdowns: c.slowdowns.load(Ordering::Relaxed),
            wal: inner.wal.stats(),
            row_cache: inner
                .row_cache
                .as_ref()
                .map(RowCache::stats)
                .unwrap_or_default(),
            recovery: inner.recovery,
            write_error: inner.write_error(),
            disk_full: inner.permanent_error().is_none() && inner.disk_full().is_some(),
        }
    }

    /// Writes every memtable out to level-0 tables and waits for it.
    /// Returns the sequence number up to which everything is in tables.
    pub fn flush(&self) -> Result<u64> {
        let inner = &self.inner;
        let seq = {
            let mut state = inner.write.lock();
            let current = inner.current.read().clone();
            if !current.mem.is_empty() {
                inner.freeze(&mut state)?;
            }
            state.last_seq
        };
        loop {
            if let Some(reason) = inner.permanent_error() {
                return Err(Error::Poisoned { reason });
            }
            if let Some(reason) = inner.disk_full() {
                return Err(Error::DiskFull { reason });
            }
            if inner.current.read().frozen.is_empty() {
                return Ok(seq);
            }
            let mut state = inner.write.lock();
            inner
                .progress
                .wait_for(&mut state, Duration::from_millis(50));
        }
    }

    /// Flushes, then compacts every level down into the last one, dropping
    /// all deleted, overwritten and expired data no snapshot needs.
    pub fn compact(&self) -> Result<()> {
        self.flush()?;
        let inner = &self.inner;
        let _compacting = inner.compaction_lock.lock();
        for level in 0..LEVELS - 1 {
            let version = inner.current.read().version.clone();
            if version.levels[level].is_empty() {
                continue;
            }
            let inputs = version.levels[level].clone();
            let start = inputs
                .iter()
                .map(|t| t.smallest_user_key())
                .min()
                .unwrap_or_default();
            let end = inputs
                .iter()
                .map(|t| t.largest_user_key())
                .max()
                .unwrap_or_default();
            let overlaps = version.overlapping(level + 1, start, end);
            inner.run_compaction(Compaction {
                level,
                output_level: level + 1,
                inputs,
                overlaps,
                reason: "manual",
            })?;
        }
        Ok(())
    }

    /// Writes a consistent copy of the database into `target` (which must
    /// not exist): tables are hard-linked (copied across filesystems), a
    /// fresh manifest names them. Returns the sequence number the copy holds
    /// everything up to. Writes continue meanwhile; they pause at most for
    /// the memtable freeze.
    pub fn checkpoint(&self, target: impl AsRef<Path>) -> Result<u64> {
        let target = target.as_ref();
        let fs: &dyn Storage = &*self.inner.options.storage;
        if fs.exists(target).map_err(|e| Error::io(target, e))? {
            return Err(Error::InvalidArgument(format!(
                "checkpoint target {} already exists",
                target.display()
            )));
        }
        self.flush()?;
        // Pin the version: its tables cannot be deleted while we hold it.
        let version = self.inner.current.read().version.clone();
        let seq = version
            .levels
            .iter()
            .flatten()
            .map(|t| t.meta.seq_max)
            .max()
            .unwrap_or(0);
        let building = target.with_extension("checkpoint-tmp");
        let _ = fs.remove_dir_all(&building);
        fs.create_dir_all(&building)
            .map_err(|e| Error::io(&building, e))?;
        let mut copied = Version::default();
        for (level, tables) in version.levels.iter().enumerate() {
            for table in tables {
                let to = table_path(&building, table.number);
                if fs.link(&table.path, &to).is_err() {
                    let data = fs
                        .read(&table.path)
                        .map_err(|e| Error::io(&table.path, e))?;
                    fs.create(&to, true)
                        .and_then(|f| f.append(&data).and_then(|()| f.sync()))
                        .map_err(|e| Error::io(&to, e))?;
                }
                copied.levels[level].push(Arc::new(TableFile::new(
                    &building,
                    table.number,
                    table.meta.clone(),
                )));
            }
        }
        let next_file = self.inner.next_file.load(Ordering::Acquire);
        Manifest::create(
            fs,
            &building,
            next_file,
            &copied,
            next_file + 1,
            next_file + 2,
            seq,
        )?;
        wal::sync_dir(fs, &building)?;
        fs.rename(&building, target)
            .map_err(|e| Error::io(target, e))?;
        if let Some(parent) = target.parent() {
            wal::sync_dir(fs, parent)?;
        }
        tracing::info!(target = %target.display(), seq, "checkpoint written");
        Ok(seq)
    }

    /// Makes writers that wait for flushes or compaction give up with
    /// [`Error::Closed`], now and from then on: a server that is shutting
    /// down stops waiting for room that may never come (compaction held,
    /// a disk that does not drain) before it closes the database.
    pub fn interrupt_stalls(&self) {
        self.inner.stalls_interrupted.store(true, Ordering::Release);
        let _state = self.inner.write.lock();
        self.inner.progress.notify_all();
    }

    /// Closes the database: flushes memtables to tables (so the next open
    /// replays nothing), syncs, and stops background threads. Other clones
    /// of this `Db` see [`Error::Closed`] afterwards.
    pub fn close(self) -> Result<()> {
        let flushed = self.flush();
        let synced = self.sync_all();
        self.inner.closed.store(true, Ordering::Release);
        self.inner.background.signal(|f| f.shutdown = true);
        self.inner.group_commit.shutdown();
        let threads = std::mem::take(&mut *self.inner.threads.lock());
        for thread in threads {
            let _ = thread.join();
        }
        flushed?;
        synced
    }
}

impl Inner {
    fn fsync_policy(&self) -> FsyncPolicy {
        match self.fsync.load(Ordering::Acquire) {
            0 => FsyncPolicy::Always,
            1 => FsyncPolicy::EverySec,
            _ => FsyncPolicy::No,
        }
    }

    /// Makes a batch applied to the memtable visible to readers and to the
    /// change log (caller holds the write lock). Under `always` readers see
    /// it only once its WAL record is fsynced ([`Inner::publish_synced`]):
    /// a write whose fsync fails is answered with an error and must never
    /// have been visible (RocksDB's write group inserts after the WAL sync
    /// for the same reason). Under `everysec` and `no` it is visible at once,
    /// so a pipeline reads its own writes before the one write(2) for all.
    fn publish(&self, state: &mut WriteState, first_seq: u64, last_seq: u64, record: &[u8]) {
        state.last_seq = last_seq;
        self.written_seq.store(last_seq, Ordering::Release);
        if self.fsync_policy() != FsyncPolicy::Always {
            self.visible_seq.fetch_max(last_seq, Ordering::AcqRel);
        }
        let kept = self
            .changelog
            .enabled()
            .then(|| Bytes::copy_from_slice(record));
        self.changelog.push(first_seq, last_seq, kept);
    }

    /// After a write is buffered (write lock released): under `always`,
    /// waits for its group's fsync and publishes it; otherwise writes the
    /// buffer out if it grew past its bound.
    fn finish_write(&self, last_seq: u64, must_write: bool) -> Result<()> {
        if self.fsync_policy() == FsyncPolicy::Always {
            if waiting_forbidden() {
                // The caller awaits `Db::synced`; the group-commit thread fsyncs.
                return Ok(());
            }
            self.wal.sync_to(last_seq, true)?;
            self.publish_synced();
        } else if must_write {
            if waiting_forbidden() {
                // Written out now if nobody else is writing; else the next sync does it.
                if let Some(written) = self.wal.try_sync_to(last_seq, false) {
                    written?;
                }
            } else {
                self.wal.sync_to(last_seq, false)?;
            }
        }
        Ok(())
    }

    /// Makes every write whose WAL record is fsynced visible (under
    /// `always`, the only publication of a write). Every sequence the WAL
    /// holds is already in a memtable: writers insert before appending.
    fn publish_synced(&self) {
        // Under `everysec` and `no` every write is visible at once: this changes nothing.
        let synced = self.wal.stats().synced_seq;
        self.visible_seq.fetch_max(synced, Ordering::AcqRel);
    }

    /// Where a read of `key` looks: see [`ReadAt`]. A key with a write waiting for its
    /// fsync (under `always`) is read once that fsync is done, or inside [`without_waiting`]
    /// read as written, the caller answering only once that is fsynced
    /// ([`take_unsynced_read`]): a read-modify-write then builds on the write before it,
    /// as in Redis, instead of waiting for its fsync.
    fn read_at(&self, key: &[u8]) -> Result<ReadAt> {
        let visible = self.visible_seq.load(Ordering::Acquire);
        let Some(unsynced) = self.group_commit.unsynced(key, visible) else {
            return Ok(ReadAt::Visible(visible));
        };
        if waiting_forbidden() {
            let written = self.written_seq.load(Ordering::Acquire);
            UNSYNCED_READ.with(|c| c.set(c.get().max(written)));
            return Ok(ReadAt::Written(written));
        }
        // Its writer is not answered before this fsync either; a failed one leaves the key
        // as it was visible.
        if self.wal.sync_to(unsynced, true).is_ok() {
            self.publish_synced();
        }
        Ok(ReadAt::Visible(self.visible_seq.load(Ordering::Acquire)))
    }

    /// Under `always`, marks the keys of a batch published up to `last_seq` as waiting for
    /// its fsync (caller holds the write lock), for [`Inner::read_at`].
    fn mark_unsynced<'k>(&self, keys: impl Iterator<Item = &'k [u8]>, last_seq: u64) {
        if self.fsync_policy() == FsyncPolicy::Always {
            for key in keys {
                self.group_commit.mark(key, last_seq);
            }
        }
    }

    /// What [`Db::synced`] answers now for `seq`, if it can.
    fn sync_outcome(&self, seq: u64) -> Option<Result<()>> {
        if self.wal.covered(seq, true) {
            self.publish_synced();
            return Some(Ok(()));
        }
        if self.wal.troubled() {
            if let Some(reason) = self.wal.poisoned() {
                return Some(Err(Error::Poisoned { reason }));
            }
            if let Some(reason) = self.wal.suspended() {
                return Some(Err(Error::DiskFull { reason }));
            }
        }
        None
    }

    fn check_writable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        // Issue 12: the four locks below, taken by every write, bounced between the worker
        // threads' caches (about 3% of a write's CPU). Nothing can be set while nothing was.
        if !self.troubled.load(Ordering::Acquire) && !self.wal.troubled() {
            return Ok(());
        }
        if let Some(reason) = self.permanent_error() {
            return Err(Error::Poisoned { reason });
        }
        if let Some(reason) = self.disk_full() {
            return Err(Error::DiskFull { reason });
        }
        Ok(())
    }

    /// Why writes are refused until restart, if they are.
    fn permanent_error(&self) -> Option<String> {
        self.wal.poisoned().or_else(|| self.failed.lock().clone())
    }

    /// Why writes are suspended until disk space returns, if they are.
    fn disk_full(&self) -> Option<String> {
        let suspended = self.suspended.lock();
        self.wal
            .suspended()
            .or_else(|| suspended.flush.clone())
            .or_else(|| suspended.compaction.clone())
    }

    fn write_error(&self) -> Option<String> {
        self.permanent_error().or_else(|| self.disk_full())
    }

    fn get_at(&self, current: &SuperVersion, key: &[u8], seq: u64) -> Result<Option<Entry>> {
        let found = self.find(current, key, seq)?;
        self.live(found)
    }

    /// The newest entry of `key` at `seq`: (internal key, stored value).
    fn find(&self, current: &SuperVersion, key: &[u8], seq: u64) -> Result<Option<(Bytes, Bytes)>> {
        match std::iter::once(&current.mem)
            .chain(current.frozen.iter())
            .find_map(|mem| mem.get(key, seq))
        {
            Some(found) => Ok(Some(found)),
            None => self.get_from_tables(&current.version, key, seq),
        }
    }

    /// A row of the row cache as [`Db::get`] answers it (expiry checked now).
    fn cached_entry(&self, key: Bytes, row: Row) -> Result<Option<Entry>> {
        match row {
            Row::Value {
                kind,
                version,
                stored,
            } => match iter::live_parts(kind, version, stored, self.options.clock.now_ms(), || key)
            {
                None => Ok(None),
                Some(Ok(entry)) => Ok(Some(entry)),
                Some(Err(what)) => Err(Error::corruption(&self.dir, 0, what)),
            },
            Row::Absent | Row::Unknown => Ok(None),
        }
    }

    /// The live entry for what [`Inner::find`] found.
    fn live(&self, found: Option<(Bytes, Bytes)>) -> Result<Option<Entry>> {
        let Some((internal_key, stored)) = found else {
            return Ok(None);
        };
        let user_key = || internal_key.slice(..internal_key.len() - format::TRAILER_LEN);
        match iter::live_entry(&internal_key, stored, self.options.clock.now_ms(), user_key) {
            None => Ok(None),
            Some(Ok(entry)) => Ok(Some(entry)),
            Some(Err(what)) => Err(Error::corruption(&self.dir, 0, what)),
        }
    }

    fn get_from_tables(
        &self,
        version: &Version,
        key: &[u8],
        seq: u64,
    ) -> Result<Option<(Bytes, Bytes)>> {
        for file in &version.levels[0] {
            if file.smallest_user_key() <= key && key <= file.largest_user_key() {
                if let Some(found) = self.tables.get(file)?.get(key, seq)? {
                    return Ok(Some(found));
                }
            }
        }
        for level in 1..LEVELS {
            if let Some(file) = version.find_in_level(level, key) {
                if let Some(found) = self.tables.get(file)?.get(key, seq)? {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// Before a write: freeze a full memtable, and hold writers back while
    /// flushes or level-0 compaction fall behind.
    /// Returns the view writes go to: valid while the caller holds the write
    /// lock, since only a holder of it freezes the active memtable.
    fn make_room(&self, state: &mut MutexGuard<'_, WriteState>) -> Result<Arc<SuperVersion>> {
        let options = &self.options;
        let mut slowed = false;
        loop {
            let current = self.current.read().clone();
            let level0 = current.version.levels[0].len();
            if current.mem.approximate_bytes() >= options.memtable_bytes_max {
                if current.frozen.len() >= options.frozen_memtables_max {
                    self.write_pressure.store(true, Ordering::Relaxed);
                    if let Some(refused) = refuse_wait() {
                        return Err(refused);
                    }
                    self.stall(state, "frozen memtables waiting for flush")?;
                    continue;
                }
                self.freeze(state)?;
                continue;
            }
            if level0 >= options.l0_stop_trigger {
                self.write_pressure.store(true, Ordering::Relaxed);
                self.background.signal(|f| f.compact = true);
                if let Some(refused) = refuse_wait() {
                    return Err(refused);
                }
                self.stall(state, "too many level-0 tables")?;
                continue;
            }
            if level0 >= options.l0_slowdown_trigger && !slowed {
                self.write_pressure.store(true, Ordering::Relaxed);
                if let Some(refused) = refuse_wait() {
                    return Err(refused);
                }
                slowed = true;
                self.counters.slowdowns.fetch_add(1, Ordering::Relaxed);
                MutexGuard::unlocked(state, || std::thread::sleep(Duration::from_millis(1)));
                continue;
            }
            if !slowed && self.write_pressure.load(Ordering::Relaxed) {
                self.write_pressure.store(false, Ordering::Relaxed);
            }
            return Ok(current);
        }
    }

    fn stall(&self, state: &mut MutexGuard<'_, WriteState>, why: &str) -> Result<()> {
        self.check_writable()?;
        if self.closed.load(Ordering::Acquire) || self.stalls_interrupted.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        tracing::debug!(why, "write stalled");
        let started = Instant::now();
        self.progress.wait_for(state, Duration::from_millis(100));
        self.counters
            .stall_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Makes the active memtable immutable and starts a new one with a new
    /// WAL segment (caller holds the write lock).
    fn freeze(&self, _state: &mut MutexGuard<'_, WriteState>) -> Result<()> {
        let number = self.next_file.fetch_add(1, Ordering::AcqRel);
        self.wal.rotate(number)?;
        let mut current = self.current.write();
        let mut frozen = Vec::with_capacity(current.frozen.len() + 1);
        frozen.push(current.mem.clone());
        frozen.extend(current.frozen.iter().cloned());
        *current = Arc::new(SuperVersion {
            mem: Arc::new(Memtable::new(number)),
            frozen,
            version: current.version.clone(),
        });
        drop(current);
        self.background.signal(|f| f.flush = true);
        Ok(())
    }

    /// Writes the oldest frozen memtable to a level-0 table and installs it.
    /// Returns false when there was nothing to flush.
    fn flush_oldest(&self) -> Result<bool> {
        let Some(mem) = self.current.read().frozen.last().cloned() else {
            return Ok(false);
        };
        // As RocksDB's `SyncClosedLogs`: the memtable's WAL records are on disk before its
        // table is. Otherwise (under `everysec`/`no`, or an `always` write still waiting for its
        // group's fsync) a power cut between the table and its manifest edit leaves an orphan
        // table holding writes no WAL has, which the open must refuse as a lost edit. The fsync
        // runs outside the WAL's I/O lock, so writers are not held up by it (docs/durability.md,
        // "Under `everysec` no reply waits for the disk").
        if !self.wal.covered(mem.max_seq(), true) {
            self.wal.fsync_behind()?;
        }
        self.publish_synced();
        let number = self.next_file.fetch_add(1, Ordering::AcqRel);
        let table = if mem.is_empty() {
            None
        } else {
            let file = write_memtable(
                &*self.options.storage,
                &self.dir,
                number,
                &mem,
                &TableOptions::for_flush(&self.options),
            )?;
            self.counters.flushes.fetch_add(1, Ordering::Relaxed);
            self.counters
                .flush_bytes
                .fetch_add(file.meta.file_size, Ordering::Relaxed);
            // Info: a flush is one of the events operators see one line for (with compactions).
            tracing::info!(
                table = number,
                bytes = file.meta.file_size,
                "memtable flushed"
            );
            Some(Arc::new(file))
        };
        let log_number = {
            // Every version change holds `versions`, so the version read here stays the base
            // until the swap below. The manifest is written and fsynced *without* holding
            // `current` for writing: readers and writers take it on every operation, and an
            // fsync under it stalled them all at each flush.
            let mut versions = self.versions.lock();
            let seen = self.current.read().clone();
            // WAL segments older than every remaining memtable are obsolete. A memtable frozen
            // meanwhile has a newer segment than the active one seen here, so the minimum holds.
            let remaining = &seen.frozen[..seen.frozen.len() - 1];
            let log_number = remaining
                .iter()
                .map(|m| m.wal_number)
                .chain(std::iter::once(seen.mem.wal_number))
                .min()
                .expect("the active memtable remains");
            let edit = VersionEdit {
                log_number: Some(log_number),
                next_file_number: Some(self.next_file.load(Ordering::Acquire)),
                last_seq: Some(mem.max_seq()),
                added: table.into_iter().map(|t| (0, t)).collect(),
                deleted: Vec::new(),
            };
            versions.manifest.append(&edit)?;
            let version = Arc::new(seen.version.apply(&edit));
            drop(seen);
            {
                let mut current = self.current.write();
                debug_assert!(current.frozen.last().is_some_and(|m| Arc::ptr_eq(m, &mem)));
                *current = Arc::new(SuperVersion {
                    mem: current.mem.clone(),
                    frozen: current
                        .frozen
                        .iter()
                        .filter(|m| !Arc::ptr_eq(m, &mem))
                        .cloned()
                        .collect(),
                    version: version.clone(),
                });
            }
            self.maybe_rewrite_manifest(&mut versions, &version, log_number)?;
            log_number
        };
        // The flush is committed: failing to list the directory only leaves old segments
        // behind for the next flush or open to remove, and must not fail the flush.
        match list_files(&*self.options.storage, &self.dir) {
            Ok(listing) => {
                for number in listing.wal.into_iter().filter(|&n| n < log_number) {
                    remove_quietly(
                        &*self.options.storage,
                        &wal::segment_path(&self.dir, number),
                    );
                }
            }
            Err(error) => {
                tracing::warn!(%error, "flush committed; obsolete WAL segments left for later");
            }
        }
        self.progress.notify_all();
        self.background.signal(|f| f.compact = true);
        release_here(mem);
        Ok(true)
    }

    fn maybe_rewrite_manifest(
        &self,
        versions: &mut VersionState,
        version: &Version,
        log_number: u64,
    ) -> Result<()> {
        if !versions.manifest.needs_rewrite() {
            return Ok(());
        }
        let old = versions.manifest.path().to_path_buf();
        let number = self.next_file.fetch_add(1, Ordering::AcqRel);
        // What the tables hold, as the edits so far said: `visible_seq` may be ahead (writes
        // still in memtables), and a too high value weakens the orphan check at open.
        let last_seq = versions.manifest.last_seq();
        versions.manifest = Manifest::create(
            &*self.options.storage,
            &self.dir,
            number,
            version,
            log_number,
            self.next_file.load(Ordering::Acquire),
            last_seq,
        )?;
        remove_quietly(&*self.options.storage, &old);
        Ok(())
    }

    /// Picks and runs one compaction. Returns false when none is due.
    fn compact_once(&self) -> Result<bool> {
        let _compacting = self.compaction_lock.lock();
        let version = self.current.read().version.clone();
        let cursors = self.versions.lock().cursors.clone();
        let now_ms = self.options.clock.now_ms();
        match compaction::pick(&version, &self.options, &cursors, now_ms) {
            None => Ok(false),
            Some(decision) => {
                self.run_compaction(decision)?;
                Ok(true)
            }
        }
    }

    /// Carries out `decision` and installs its result (caller holds the
    /// compaction lock).
    fn run_compaction(&self, decision: Compaction) -> Result<()> {
        let started = Instant::now();
        let version = self.current.read().version.clone();
        let oldest_snapshot = self
            .snapshots
            .lock()
            .keys()
            .next()
            .copied()
            .unwrap_or(u64::MAX)
            .min(self.visible_seq.load(Ordering::Acquire));
        let next_file = || self.next_file.fetch_add(1, Ordering::AcqRel);
        let context = RunContext {
            options: &self.options,
            dir: &self.dir,
            tables: &self.tables,
            version: &version,
            oldest_snapshot,
            now_ms: self.options.clock.now_ms(),
            next_file_number: &next_file,
        };
        let (edit, stats) = compaction::run(&context, &decision)?;
        {
            // As in `flush_oldest`: the manifest fsync happens outside `current`'s write lock.
            let mut versions = self.versions.lock();
            let mut edit = edit;
            edit.next_file_number = Some(self.next_file.load(Ordering::Acquire));
            versions.manifest.append(&edit)?;
            let next = Arc::new(self.current.read().version.apply(&edit));
            let log_number = {
                let mut current = self.current.write();
                *current = Arc::new(SuperVersion {
                    mem: current.mem.clone(),
                    frozen: current.frozen.clone(),
                    version: next.clone(),
                });
                current
                    .frozen
                    .iter()
                    .map(|m| m.wal_number)
                    .chain(std::iter::once(current.mem.wal_number))
                    .min()
                    .expect("active memtable")
            };
            if let Some(last) = decision.inputs.iter().map(|t| t.largest_user_key()).max() {
                versions.cursors[decision.level] = last.to_vec();
            }
            self.maybe_rewrite_manifest(&mut versions, &next, log_number)?;
        }
        for file in decision.inputs.iter().chain(&decision.overlaps) {
            file.mark_obsolete(&self.options.storage);
            self.tables.evict(file.number);
        }
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        self.counters
            .compaction_bytes_read
            .fetch_add(stats.bytes_read, Ordering::Relaxed);
        self.counters
            .compaction_bytes_written
            .fetch_add(stats.bytes_written, Ordering::Relaxed);
        tracing::info!(
            reason = decision.reason,
            level = decision.level,
            inputs = decision.inputs.len() + decision.overlaps.len(),
            bytes_read = stats.bytes_read,
            bytes_written = stats.bytes_written,
            dropped = stats.entries_dropped,
            millis = started.elapsed().as_millis() as u64,
            "compaction finished"
        );
        self.progress.notify_all();
        Ok(())
    }

    /// Records a background failure: a full disk suspends writes until the
    /// retried step succeeds; anything else refuses writes until restart.
    fn record_failure(&self, what: &str, error: &Error) {
        if error.is_disk_full() {
            let mut suspended = self.suspended.lock();
            let slot = if what == "compaction" {
                &mut suspended.compaction
            } else {
                &mut suspended.flush
            };
            if slot.is_none() {
                tracing::error!(%error, "{what} out of space; writes suspended, retrying every second");
            }
            *slot = Some(format!("{what} failed: {error}"));
            self.troubled.store(true, Ordering::Release);
            self.progress.notify_all();
            return;
        }
        let mut failed = self.failed.lock();
        if failed.is_none() {
            tracing::error!(%error, "{what} failed; refusing writes until restart");
            *failed = Some(format!("{what} failed: {error}"));
        }
        self.troubled.store(true, Ordering::Release);
        self.progress.notify_all();
    }
}

/// Runs `step` whenever the background is woken (or once a second), holding
/// the database only while working, until shutdown or the database is gone.
fn background_loop(
    weak: Weak<Inner>,
    background: Arc<Background>,
    step: fn(&Inner, &Background) -> bool,
) {
    loop {
        {
            let mut flags = background.flags.lock();
            if flags.shutdown {
                return;
            }
            background.wake.wait_for(&mut flags, Duration::from_secs(1));
            if flags.shutdown {
                return;
            }
        }
        let Some(inner) = weak.upgrade() else { return };
        while step(&inner, &background) {
            if background.flags.lock().shutdown {
                return;
            }
        }
    }
}

fn flush_step(inner: &Inner, _background: &Background) -> bool {
    background_flag_take(&inner.background, |f| &mut f.flush);
    if inner.failed.lock().is_some() {
        return false;
    }
    match inner.flush_oldest() {
        Ok(more) => {
            if inner.suspended.lock().flush.take().is_some() {
                tracing::info!("memtable flush succeeded again; writes resume");
            }
            more
        }
        Err(error) => {
            inner.record_failure("memtable flush", &error);
            false
        }
    }
}

fn compaction_step(inner: &Inner, _background: &Background) -> bool {
    background_flag_take(&inner.background, |f| &mut f.compact);
    if inner.failed.lock().is_some() || inner.options.faults.compactions_held() {
        // Held: a stalled writer signals compaction again every 100 ms, so it resumes soon
        // after the hold is let go.
        return false;
    }
    match inner.compact_once() {
        Ok(more) => {
            if inner.suspended.lock().compaction.take().is_some() {
                tracing::info!("compaction succeeded again; writes resume");
            }
            more
        }
        Err(error) => {
            inner.record_failure("compaction", &error);
            false
        }
    }
}

/// The `ringkv-group-commit` thread: whenever a [`SyncWait`] waits for a write not yet
/// fsynced, writes out and fsyncs everything buffered, publishes it and wakes the waiters.
fn group_commit_loop(weak: Weak<Inner>, commit: Arc<GroupCommit>) {
    while commit.wait_for_work(|| weak.strong_count() > 0) {
        let Some(inner) = weak.upgrade() else { return };
        let target = inner.written_seq.load(Ordering::Acquire);
        let result = inner.wal.sync_to(target, true);
        if let Err(error) = &result {
            tracing::error!(%error, "WAL fsync of a commit group failed");
        }
        inner.publish_synced();
        let synced = inner.wal.stats().synced_seq;
        // Let go of the database before waking the waiters: one of them may drop the last
        // handle and reopen it, which needs its lock file released.
        drop(inner);
        commit.finish_round(synced, result.is_err());
    }
}

/// The future of [`Db::synced`].
#[derive(Debug)]
pub struct SyncWait {
    inner: Arc<Inner>,
    seq: u64,
}

impl std::future::Future for SyncWait {
    type Output = Result<()>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<()>> {
        use std::task::Poll;
        if let Some(outcome) = self.inner.sync_outcome(self.seq) {
            return Poll::Ready(outcome);
        }
        self.inner.group_commit.register(self.seq, cx.waker());
        // The round may have ended between the check and the registration.
        match self.inner.sync_outcome(self.seq) {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        }
    }
}

fn wal_sync_step(inner: &Inner, _background: &Background) -> bool {
    if inner.wal.suspended().is_some() {
        if inner
            .wal
            .retry_suspended(inner.fsync_policy() != FsyncPolicy::No)
        {
            inner.publish_synced();
        }
        return false;
    }
    let policy = inner.fsync_policy();
    if policy == FsyncPolicy::Always {
        return false;
    }
    let synced = if policy == FsyncPolicy::EverySec {
        inner.wal.fsync_behind()
    } else {
        inner.wal.sync_to(inner.wal.appended_seq(), false)
    };
    if let Err(error) = synced {
        tracing::error!(%error, "background WAL sync failed");
    }
    false
}

fn background_flag_take(
    background: &Background,
    flag: impl FnOnce(&mut BackgroundFlags) -> &mut bool,
) {
    let mut flags = background.flags.lock();
    *flag(&mut flags) = false;
}

fn stored_value(op: &BatchOp) -> (Kind, Bytes) {
    match op {
        BatchOp::Put {
            value,
            expires_at_ms: None,
            ..
        } => (Kind::Put, value.clone()),
        BatchOp::Put {
            value,
            expires_at_ms,
            ..
        } => {
            let mut out = Vec::with_capacity(value.len() + 8);
            let kind = format::encode_value(&mut out, value, *expires_at_ms);
            (kind, Bytes::from(out))
        }
        BatchOp::Delete { .. } => (Kind::Delete, Bytes::new()),
    }
}

/// A table the manifest does not name is normally debris of a crash: a
/// flush or compaction whose manifest edit never committed, whose data is
/// still in the WAL or in older tables. But if it holds writes newer than
/// anything the manifest knows *and* the WAL replay does not cover them, the
/// manifest lost a committed edit (a damaged file) and deleting the table
/// would silently drop acknowledged writes: refuse to open instead.
fn refuse_lost_orphans(
    fs: &dyn Storage,
    dir: &Path,
    version: &Version,
    listing: &Listing,
    manifest_known_seq: u64,
    replayed_min_seq: Option<u64>,
    marker: Option<RecoveryMarker>,
) -> Result<()> {
    let live: std::collections::HashSet<u64> =
        version.levels.iter().flatten().map(|t| t.number).collect();
    let cache = Arc::new(crate::table::BlockCache::new(1 << 20));
    for &number in listing.tables.iter().filter(|n| !live.contains(n)) {
        let path = table_path(dir, number);
        // A table torn by the crash that orphaned it was never committed.
        let Ok(table) = crate::table::Table::open(fs, &path, number, cache.clone()) else {
            continue;
        };
        let meta = table.meta();
        if marker.is_some_and(|m| m.covers(number, meta.seq_min, meta.seq_max)) {
            // An earlier open's recovery table, orphaned by a power cut before its manifest:
            // its writes come from WAL segments this open replays again, or were only ever in
            // the page cache after a failed fsync (never acknowledged as durable).
            continue;
        }
        let newer = meta.entries > 0 && meta.seq_max > manifest_known_seq;
        let replayed =
            replayed_min_seq.is_some_and(|min| min <= meta.seq_min.max(manifest_known_seq + 1));
        if newer && !replayed {
            return Err(Error::corruption(
                dir.join("CURRENT"),
                0,
                format!(
                    "the manifest does not name table {} holding sequences {}..={}, which the \
                     WAL does not hold either: the manifest lost a committed edit; refusing to \
                     open rather than drop those writes (restore from a backup)",
                    path.display(),
                    meta.seq_min,
                    meta.seq_max
                ),
            ));
        }
    }
    Ok(())
}

/// The fsynced note an open writes before its recovery table (the replayed
/// WAL written to level 0), naming the table and the sequences it holds. The
/// WAL segments it replays may hold records a failed fsync left only in the
/// page cache (Linux keeps them readable but never writes them back); if the
/// power goes before the new manifest names the table, the next open finds an
/// orphan holding writes no WAL on disk has, exactly what a manifest that lost
/// a committed flush looks like. The marker tells the two apart: an orphan it
/// names is debris, and removed. Removed once the new manifest is written.
/// Format: `table seq_min seq_max crc32c\n`, decimal. See docs/durability.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecoveryMarker {
    table: u64,
    seq_min: u64,
    seq_max: u64,
}

impl RecoveryMarker {
    const NAME: &'static str = "RECOVERY";

    fn body(&self) -> String {
        format!("{} {} {}", self.table, self.seq_min, self.seq_max)
    }

    /// Writes the marker, durably: the file, then its directory entry, before any byte
    /// of the table it names.
    fn write(&self, fs: &dyn Storage, dir: &Path) -> Result<()> {
        let path = dir.join(Self::NAME);
        let body = self.body();
        let text = format!("{body} {}\n", crc32c::crc32c(body.as_bytes()));
        let file = fs.create(&path, false).map_err(|e| Error::io(&path, e))?;
        file.append(text.as_bytes())
            .and_then(|()| file.sync())
            .map_err(|e| Error::io(&path, e))?;
        fs.sync_dir(dir).map_err(|e| Error::io(dir, e))
    }

    /// The marker left by an earlier open, if any. A torn or damaged one (the power went
    /// while it was written) is ignored: its table was not started.
    fn read(fs: &dyn Storage, dir: &Path) -> Option<RecoveryMarker> {
        let bytes = fs.read(&dir.join(Self::NAME)).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?.strip_suffix('\n')?;
        let (body, crc) = text.rsplit_once(' ')?;
        if crc.parse::<u32>().ok()? != crc32c::crc32c(body.as_bytes()) {
            return None;
        }
        let mut fields = body.split(' ').map(|f| f.parse::<u64>());
        let marker = RecoveryMarker {
            table: fields.next()?.ok()?,
            seq_min: fields.next()?.ok()?,
            seq_max: fields.next()?.ok()?,
        };
        fields.next().is_none().then_some(marker)
    }

    /// True when `table` holding `seq_min..=seq_max` is the table this marker names.
    fn covers(&self, table: u64, seq_min: u64, seq_max: u64) -> bool {
        self.table == table && self.seq_min <= seq_min && seq_max <= self.seq_max
    }
}

/// Writes every entry of `mem` to table `number`.
fn write_memtable(
    fs: &dyn Storage,
    dir: &Path,
    number: u64,
    mem: &Memtable,
    options: &TableOptions,
) -> Result<TableFile> {
    let path = table_path(dir, number);
    let written = (|| {
        let mut builder = TableBuilder::create(fs, &path, options)?;
        mem.try_for_each(|key, value| builder.add(key, value))?;
        builder.finish()
    })();
    match written {
        Ok(meta) => {
            wal::sync_dir(fs, dir)?;
            Ok(TableFile::new(dir, number, meta))
        }
        Err(error) => {
            remove_quietly(fs, &path);
            Err(error)
        }
    }
}

fn lock_directory(fs: &dyn Storage, dir: &Path) -> Result<Box<dyn StorageLock>> {
    let lock_path = dir.join("LOCK");
    match fs.lock(&lock_path) {
        Ok(lock) => Ok(lock),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(Error::Locked {
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(Error::io(&lock_path, e)),
    }
}

/// Keeps a snapshot's sequence registered while any user of it lives.
struct SnapshotGuard {
    db: Db,
    seq: u64,
    current: Arc<SuperVersion>,
}

impl Drop for SnapshotGuard {
    fn drop(&mut self) {
        let mut held = self.db.inner.snapshots.lock();
        if let Some(count) = held.get_mut(&self.seq) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.seq);
            }
        }
    }
}

/// A consistent, read-only view of the database at one sequence number.
/// Compaction keeps every version a live snapshot can see.
#[derive(Clone)]
pub struct Snapshot {
    guard: Arc<SnapshotGuard>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("seq", &self.guard.seq)
            .finish()
    }
}

impl Snapshot {
    /// The sequence number the snapshot sees up to.
    pub fn sequence(&self) -> u64 {
        self.guard.seq
    }

    /// The value of `key` as of the snapshot.
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        self.guard
            .db
            .inner
            .get_at(&self.guard.current, key, self.guard.seq)
    }

    /// Ordered iterator over every live key as of the snapshot.
    pub fn iter(&self) -> RangeIter {
        self.range::<[u8], _>(..)
    }

    /// Ordered iterator over live keys in `range` as of the snapshot.
    pub fn range<K, R>(&self, range: R) -> RangeIter
    where
        K: AsRef<[u8]> + ?Sized,
        R: RangeBounds<K>,
    {
        let current = &self.guard.current;
        let inner = &self.guard.db.inner;
        let mut sources: Vec<Box<dyn Source>> = Vec::new();
        sources.push(Box::new(MemSource::new(current.mem.clone())));
        for frozen in &current.frozen {
            sources.push(Box::new(MemSource::new(frozen.clone())));
        }
        for file in &current.version.levels[0] {
            sources.push(Box::new(LevelSource::new(
                vec![file.clone()],
                self.guard.clone(),
            )));
        }
        for level in 1..LEVELS {
            if !current.version.levels[level].is_empty() {
                sources.push(Box::new(LevelSource::new(
                    current.version.levels[level].clone(),
                    self.guard.clone(),
                )));
            }
        }
        RangeIter::new(
            MergingIter::new(sources),
            self.guard.seq,
            inner.options.clock.now_ms(),
            owned_bound(range.start_bound()),
            owned_bound(range.end_bound()),
            Some(self.guard.clone() as Arc<dyn Send + Sync>),
        )
    }
}

/// A cursor over a sorted run of tables, opening each only when reached.
struct LevelSource {
    files: Vec<Arc<TableFile>>,
    index: usize,
    iter: Option<TableIter>,
    guard: Arc<SnapshotGuard>,
}

impl LevelSource {
    fn new(files: Vec<Arc<TableFile>>, guard: Arc<SnapshotGuard>) -> LevelSource {
        LevelSource {
            files,
            index: 0,
            iter: None,
            guard,
        }
    }

    fn open(&mut self, index: usize) -> Result<()> {
        self.index = index;
        self.iter = match self.files.get(index) {
            Some(file) => Some(TableIter::new(self.guard.db.inner.tables.get(file)?)),
            None => None,
        };
        Ok(())
    }

    /// Moves to the next table's first entry while the current one is spent.
    fn skip_exhausted(&mut self) -> Result<()> {
        while matches!(&self.iter, Some(iter) if !iter.valid()) {
            self.open(self.index + 1)?;
            if let Some(iter) = &mut self.iter {
                iter.seek_to_first()?;
            }
        }
        Ok(())
    }
}

impl Source for LevelSource {
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        let at = self
            .files
            .partition_point(|f| format::compare_internal(&f.meta.largest, target).is_lt());
        self.open(at)?;
        if let Some(iter) = &mut self.iter {
            iter.seek(target)?;
        }
        self.skip_exhausted()
    }
    fn seek_to_first(&mut self) -> Result<()> {
        self.open(0)?;
        if let Some(iter) = &mut self.iter {
            iter.seek_to_first()?;
        }
        self.skip_exhausted()
    }
    fn valid(&self) -> bool {
        self.iter.as_ref().is_some_and(TableIter::valid)
    }
    fn key(&self) -> &[u8] {
        self.iter.as_ref().expect("valid cursor").key()
    }
    fn value(&self) -> Bytes {
        self.iter.as_ref().expect("valid cursor").value()
    }
    fn value_ref(&self) -> &[u8] {
        self.iter.as_ref().expect("valid cursor").value_ref()
    }
    fn next(&mut self) -> Result<()> {
        if let Some(iter) = &mut self.iter {
            iter.next()?;
        }
        self.skip_exhausted()
    }
}

fn owned_bound<K: AsRef<[u8]> + ?Sized>(bound: Bound<&K>) -> Bound<Vec<u8>> {
    match bound {
        Bound::Included(key) => Bound::Included(key.as_ref().to_vec()),
        Bound::Excluded(key) => Bound::Excluded(key.as_ref().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Files of a database directory, by kind.
#[derive(Debug, Default)]
struct Listing {
    wal: Vec<u64>,
    tables: Vec<u64>,
    manifests: Vec<u64>,
    max_number: u64,
}

fn list_files(fs: &dyn Storage, dir: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    for name in fs.list(dir).map_err(|e| Error::io(dir, e))? {
        let (list, number) = if let Some(stem) = name.strip_suffix(".wal") {
            (&mut listing.wal, stem.parse::<u64>().ok())
        } else if let Some(stem) = name.strip_suffix(".sst") {
            (&mut listing.tables, stem.parse::<u64>().ok())
        } else if let Some(number) = version::manifest_number(&name) {
            (&mut listing.manifests, Some(number))
        } else {
            continue;
        };
        if let Some(number) = number {
            list.push(number);
            listing.max_number = listing.max_number.max(number);
        }
    }
    listing.wal.sort_unstable();
    listing.tables.sort_unstable();
    Ok(listing)
}

/// True when any of the WAL segments `numbers` holds an intact record.
fn later_segments_hold_records(fs: &dyn Storage, dir: &Path, numbers: &[u64]) -> Result<bool> {
    for &number in numbers {
        if !wal::read_segment(fs, &wal::segment_path(dir, number))?
            .payloads
            .is_empty()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Reports the unreadable end of the last WAL segment. A torn tail (a crash
/// in the middle of an append: nothing intact after it) is expected and cut
/// off with a warning. Intact records after the damage mean a record in the
/// middle of the log went bad: recovery still stops there (point-in-time, as
/// RocksDB's default: a later write is never kept without an earlier one),
/// but that loses acknowledged writes, so it is logged as an error, counted
/// in [`Recovery::wal_damaged_mid_log`], and the segment is copied to
/// `<segment>.damaged` first so nothing is destroyed before an operator looks.
fn preserve_damaged_segment(
    fs: &dyn Storage,
    path: &Path,
    valid_bytes: u64,
    recovery: &mut Recovery,
) -> Result<()> {
    let data = fs.read(path).map_err(|e| Error::io(path, e))?;
    let Some(intact_at) = wal::intact_record_after(&data, valid_bytes as usize, |payload| {
        wal::decode_payload(payload).is_some()
    }) else {
        tracing::warn!(
            file = %path.display(),
            offset = valid_bytes,
            dropped_bytes = recovery.wal_bytes_dropped,
            "torn WAL tail cut off"
        );
        return Ok(());
    };
    let mut kept = path.as_os_str().to_owned();
    kept.push(".damaged");
    let kept = PathBuf::from(kept);
    // The copy must survive a power loss like any file the engine keeps: contents, then name.
    fs.create(&kept, false)
        .and_then(|file| {
            file.append(&data)?;
            file.sync()
        })
        .map_err(|e| Error::io(&kept, e))?;
    if let Some(parent) = kept.parent() {
        wal::sync_dir(fs, parent)?;
    }
    recovery.wal_damaged_mid_log = true;
    tracing::error!(
        file = %path.display(),
        offset = valid_bytes,
        intact_record_at = intact_at,
        dropped_bytes = recovery.wal_bytes_dropped,
        kept = %kept.display(),
        "damaged WAL record in the middle of the log: recovered up to it; the writes after it \
         were not replayed (a copy of the segment is kept for inspection)"
    );
    Ok(())
}

/// How long the flush thread waits for readers to let go of a flushed
/// memtable before leaving its freeing to them.
const MEMTABLE_RELEASE_WAIT: Duration = Duration::from_millis(100);

/// Drops `mem` on this (background) thread once no reader holds it: freeing
/// a full memtable (hundreds of thousands of nodes) takes a noticeable time,
/// and whoever drops the last reference pays it. Left alone, that was often
/// a request thread that had been reading while the flush installed, and
/// its clients stalled. A snapshot or iterator may hold it longer than
/// [`MEMTABLE_RELEASE_WAIT`]; then its owner frees it, as before.
fn release_here(mem: Arc<Memtable>) {
    let deadline = Instant::now() + MEMTABLE_RELEASE_WAIT;
    while Arc::strong_count(&mem) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(mem);
}

fn remove_quietly(fs: &dyn Storage, path: &Path) {
    if let Err(error) = fs.remove(path) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(file = %path.display(), %error, "could not remove obsolete file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdStorage;

    #[test]
    fn a_recovery_marker_reads_back_and_a_torn_or_damaged_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let fs = StdStorage;
        assert_eq!(RecoveryMarker::read(&fs, dir.path()), None);
        let marker = RecoveryMarker {
            table: 9,
            seq_min: 3,
            seq_max: 17,
        };
        marker.write(&fs, dir.path()).unwrap();
        assert_eq!(RecoveryMarker::read(&fs, dir.path()), Some(marker));
        assert!(marker.covers(9, 3, 17) && marker.covers(9, 5, 9));
        assert!(!marker.covers(10, 3, 17) && !marker.covers(9, 2, 17) && !marker.covers(9, 3, 18));

        let path = dir.path().join(RecoveryMarker::NAME);
        let text = std::fs::read(&path).unwrap();
        std::fs::write(&path, &text[..text.len() - 3]).unwrap(); // torn
        assert_eq!(RecoveryMarker::read(&fs, dir.path()), None);
        let mut flipped = text.clone();
        flipped[0] = b'8'; // names another table, CRC no longer matches
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(RecoveryMarker::read(&fs, dir.path()), None);
    }
}
