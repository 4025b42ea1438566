//! The database: ties the WAL, memtables, tables and background work
//! together behind the public API.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fs4::fs_std::FileExt;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::batch::{BatchOp, WriteBatch};
use crate::error::{Error, Result};
use crate::format::{self, Kind};
use crate::iter::{self, Entry, MemSource, MergingIter, RangeIter, Source};
use crate::memtable::Memtable;
use crate::options::{FsyncPolicy, Options};
use crate::wal::{self, Wal, WalStats};

/// What a reader needs to see the whole database at one moment: the active
/// memtable, the frozen ones waiting for flush (newest first).
#[derive(Debug)]
pub(crate) struct SuperVersion {
    pub mem: Arc<Memtable>,
    pub frozen: Vec<Arc<Memtable>>,
}

/// State guarded by the write lock: sequence assignment and the encode buffer.
#[derive(Debug)]
struct WriteState {
    last_seq: u64,
    record: Vec<u8>,
    next_file_number: u64,
}

/// Snapshot sequences in use, with how many snapshots hold each.
#[derive(Debug, Default)]
struct SnapshotList {
    held: BTreeMap<u64, usize>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    dir: PathBuf,
    options: Options,
    _lock_file: File,
    write: Mutex<WriteState>,
    visible_seq: AtomicU64,
    current: RwLock<Arc<SuperVersion>>,
    wal: Wal,
    snapshots: Mutex<SnapshotList>,
    closed: AtomicBool,
    background: Mutex<Vec<std::thread::JoinHandle<()>>>,
    shutdown: (Mutex<bool>, Condvar),
    recovered_ops: u64,
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
    /// Frozen memtables waiting for flush, and their bytes.
    pub frozen_memtables: usize,
    /// Bytes held by frozen memtables.
    pub frozen_memtable_bytes: usize,
    /// WAL counters.
    pub wal: WalStats,
    /// Operations replayed from the WAL at open.
    pub recovered_ops: u64,
}

impl Db {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        let dir = dir.as_ref().to_path_buf();
        if options.create_if_missing {
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        let lock_path = dir.join("LOCK");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        match lock_file.try_lock_exclusive() {
            Ok(true) => {}
            Ok(false) => return Err(Error::Locked { path: dir }),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(Error::Locked { path: dir })
            }
            Err(e) => return Err(Error::io(&lock_path, e)),
        }

        // Replay every WAL segment, oldest first.
        let mut segments = list_segments(&dir)?;
        segments.sort_unstable();
        let mem = Arc::new(Memtable::new(0));
        let mut last_seq = 0u64;
        let mut recovered_ops = 0u64;
        for (i, &number) in segments.iter().enumerate() {
            let path = wal::segment_path(&dir, number);
            let read = wal::read_segment(&path)?;
            for (_, payload) in &read.payloads {
                let ops = wal::decode_payload(payload).expect("validated by read_segment");
                for op in ops {
                    mem.insert(op.key, op.seq, op.kind, Bytes::copy_from_slice(op.stored_value));
                    last_seq = last_seq.max(op.seq);
                    recovered_ops += 1;
                }
            }
            if read.valid_bytes < read.file_bytes {
                let is_last = i + 1 == segments.len();
                if !is_last {
                    return Err(Error::corruption(
                        &path,
                        read.valid_bytes,
                        "corrupt WAL record before the last segment",
                    ));
                }
                tracing::warn!(
                    file = %path.display(),
                    offset = read.valid_bytes,
                    dropped_bytes = read.file_bytes - read.valid_bytes,
                    "torn or corrupt WAL tail cut off"
                );
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::io(&path, e))?;
                file.set_len(read.valid_bytes)
                    .and_then(|_| file.sync_all())
                    .map_err(|e| Error::io(&path, e))?;
            }
        }
        let next_number = segments.last().copied().unwrap_or(0) + 1;
        let wal = Wal::create(&dir, next_number, last_seq)?;

        let inner = Arc::new(Inner {
            dir,
            options,
            _lock_file: lock_file,
            write: Mutex::new(WriteState {
                last_seq,
                record: Vec::new(),
                next_file_number: next_number + 1,
            }),
            visible_seq: AtomicU64::new(last_seq),
            current: RwLock::new(Arc::new(SuperVersion {
                mem: Arc::new(Memtable::new(next_number)),
                frozen: if mem.is_empty() { vec![] } else { vec![mem] },
            })),
            wal,
            snapshots: Mutex::new(SnapshotList::default()),
            closed: AtomicBool::new(false),
            background: Mutex::new(Vec::new()),
            shutdown: (Mutex::new(false), Condvar::new()),
            recovered_ops,
        });
        let db = Db { inner };
        db.start_background();
        Ok(db)
    }

    fn start_background(&self) {
        if self.inner.options.fsync == FsyncPolicy::Always {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let handle = std::thread::Builder::new()
            .name("ringkv-wal-sync".into())
            .spawn(move || loop {
                let Some(inner) = weak.upgrade() else { return };
                {
                    let (lock, condvar) = &inner.shutdown;
                    let mut stop = lock.lock();
                    if !*stop {
                        condvar.wait_for(&mut stop, Duration::from_secs(1));
                    }
                    if *stop {
                        return;
                    }
                }
                let seq = inner.visible_seq.load(Ordering::Acquire);
                let fsync = inner.options.fsync == FsyncPolicy::EverySec;
                if let Err(error) = inner.wal.sync_to(seq, fsync) {
                    tracing::error!(%error, "background WAL sync failed");
                }
            })
            .expect("spawn WAL sync thread");
        self.inner.background.lock().push(handle);
    }

    /// The live value of `key`, or `None` when absent, deleted or expired.
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        let seq = self.inner.visible_seq.load(Ordering::Acquire);
        let current = self.inner.current.read().clone();
        self.get_at(&current, key, seq)
    }

    fn get_at(&self, current: &SuperVersion, key: &[u8], seq: u64) -> Result<Option<Entry>> {
        let now_ms = self.inner.options.clock.now_ms();
        let found = std::iter::once(&current.mem)
            .chain(current.frozen.iter())
            .find_map(|mem| mem.get(key, seq));
        match found {
            None => Ok(None),
            Some((internal_key, stored)) => match iter::live_entry(&internal_key, stored, now_ms) {
                None => Ok(None),
                Some(Ok(entry)) => Ok(Some(entry)),
                Some(Err(what)) => Err(Error::corruption(&self.inner.dir, 0, what)),
            },
        }
    }

    /// Sets `key` to `value`, expiring at `expires_at_ms` (Unix ms) if given.
    /// Returns the write's sequence number (the key's new version).
    pub fn put(&self, key: &[u8], value: &[u8], expires_at_ms: Option<u64>) -> Result<u64> {
        let mut batch = WriteBatch::with_capacity(1);
        batch.put(Bytes::copy_from_slice(key), Bytes::copy_from_slice(value), expires_at_ms);
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
        let seq = self.write_deferred(batch)?;
        self.sync(seq)?;
        Ok(seq)
    }

    /// Applies `batch` atomically and makes it visible to readers, without
    /// waiting for the WAL. Call [`Db::sync`] with the returned sequence
    /// before acknowledging the write to anyone (servers do this once per
    /// pipeline of requests, so one fsync covers many writes).
    pub fn write_deferred(&self, batch: WriteBatch) -> Result<u64> {
        self.check_writable()?;
        self.validate(&batch)?;
        let inner = &self.inner;
        let mut state = inner.write.lock();
        if !batch.expectations.is_empty() {
            let current = inner.current.read().clone();
            for (key, expected) in &batch.expectations {
                let found = self.get_at(&current, key, state.last_seq)?;
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

        // Encode stored values once; they go both to the WAL and the memtable.
        let stored: Vec<(Kind, Bytes)> = batch
            .ops
            .iter()
            .map(|op| match op {
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
            })
            .collect();
        let mut record = std::mem::take(&mut state.record);
        record.clear();
        wal::encode_record(
            &mut record,
            first_seq,
            batch
                .ops
                .iter()
                .zip(&stored)
                .map(|(op, (kind, value))| (*kind, &op.key()[..], &value[..])),
            batch.ops.len() as u32,
        );
        let must_write = inner.wal.append(&record, last_seq);
        state.record = record;
        let current = inner.current.read().clone();
        for (i, (op, (kind, value))) in batch.ops.into_iter().zip(stored).enumerate() {
            current
                .mem
                .insert(op.key(), first_seq + i as u64, kind, value);
        }
        state.last_seq = last_seq;
        inner.visible_seq.store(last_seq, Ordering::Release);
        drop(state);
        if must_write {
            inner.wal.sync_to(last_seq, false)?;
        }
        Ok(last_seq)
    }

    /// Makes every write up to `seq` durable under the fsync policy:
    /// fsynced for `always`, handed to the OS otherwise.
    pub fn sync(&self, seq: u64) -> Result<()> {
        let fsync = self.inner.options.fsync == FsyncPolicy::Always;
        self.inner.wal.sync_to(seq, fsync)
    }

    /// fsyncs the WAL up to the last write, whatever the policy.
    pub fn sync_all(&self) -> Result<()> {
        let seq = self.inner.visible_seq.load(Ordering::Acquire);
        self.inner.wal.sync_to(seq, true)
    }

    fn check_writable(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if let Some(reason) = self.inner.wal.poisoned() {
            return Err(Error::Poisoned { reason });
        }
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
        *self.inner.snapshots.lock().held.entry(seq).or_insert(0) += 1;
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
    pub fn range<R: RangeBounds<[u8]>>(&self, range: R) -> RangeIter {
        self.snapshot().range(range)
    }

    /// Sequence number of the last write visible to readers.
    pub fn last_sequence(&self) -> u64 {
        self.inner.visible_seq.load(Ordering::Acquire)
    }

    /// Counters and gauges.
    pub fn stats(&self) -> Stats {
        let current = self.inner.current.read().clone();
        Stats {
            last_sequence: self.last_sequence(),
            memtable_bytes: current.mem.approximate_bytes(),
            frozen_memtables: current.frozen.len(),
            frozen_memtable_bytes: current.frozen.iter().map(|m| m.approximate_bytes()).sum(),
            wal: self.inner.wal.stats(),
            recovered_ops: self.inner.recovered_ops,
        }
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// Writes memtables out to tables and waits until they are durable.
    pub fn flush(&self) -> Result<()> {
        self.sync_all()
    }

    /// Closes the database: makes every write durable and stops background
    /// threads. Other clones of this `Db` see [`Error::Closed`] on writes.
    pub fn close(self) -> Result<()> {
        self.flush()?;
        self.inner.closed.store(true, Ordering::Release);
        self.stop_background();
        Ok(())
    }

    fn stop_background(&self) {
        {
            let (lock, condvar) = &self.inner.shutdown;
            *lock.lock() = true;
            condvar.notify_all();
        }
        let handles = std::mem::take(&mut *self.inner.background.lock());
        for handle in handles {
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let (lock, condvar) = &self.shutdown;
        *lock.lock() = true;
        condvar.notify_all();
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
        let mut list = self.db.inner.snapshots.lock();
        if let Some(count) = list.held.get_mut(&self.seq) {
            *count -= 1;
            if *count == 0 {
                list.held.remove(&self.seq);
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
        f.debug_struct("Snapshot").field("seq", &self.guard.seq).finish()
    }
}

impl Snapshot {
    /// The sequence number the snapshot sees up to.
    pub fn sequence(&self) -> u64 {
        self.guard.seq
    }

    /// The value of `key` as of the snapshot.
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        self.guard.db.get_at(&self.guard.current, key, self.guard.seq)
    }

    /// Ordered iterator over live keys in `range` as of the snapshot.
    pub fn range<R: RangeBounds<[u8]>>(&self, range: R) -> RangeIter {
        let current = &self.guard.current;
        let mut sources: Vec<Box<dyn Source>> = Vec::new();
        sources.push(Box::new(MemSource::new(current.mem.clone())));
        for frozen in &current.frozen {
            sources.push(Box::new(MemSource::new(frozen.clone())));
        }
        let start = owned_bound(range.start_bound());
        let end = owned_bound(range.end_bound());
        RangeIter::new(
            MergingIter::new(sources),
            self.guard.seq,
            self.guard.db.inner.options.clock.now_ms(),
            start,
            end,
            Some(self.guard.clone() as Arc<dyn Send + Sync>),
        )
    }
}

fn owned_bound(bound: Bound<&[u8]>) -> Bound<Vec<u8>> {
    match bound {
        Bound::Included(key) => Bound::Included(key.to_vec()),
        Bound::Excluded(key) => Bound::Excluded(key.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".wal") {
            if let Ok(number) = stem.parse::<u64>() {
                numbers.push(number);
            }
        }
    }
    Ok(numbers)
}
