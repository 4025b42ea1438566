//! The write-ahead log: every batch is appended here before it is applied to
//! the memtable, so a restart can rebuild the memtable.
//!
//! ```text
//! Format: WAL segment file `NNNNNNNNNN.wal` = a sequence of records
//! +--------------+--------------+--------------------+
//! | crc32c u32LE | length u32LE | payload (length B) |   crc covers length ++ payload
//! +--------------+--------------+--------------------+
//! Format: payload = one write batch
//! +--------------------+------------+-----------------------------------+
//! | first seq u64 LE   | count u32LE| count × operation                 |
//! +--------------------+------------+-----------------------------------+
//! operation: kind u8 | varint key length | key | varint value length | stored value
//! (operation i has sequence first_seq + i; the stored value is format.rs's encoding)
//! ```
//!
//! Group commit: appenders copy their record into a shared buffer (under the
//! database's write lock, so buffer order is sequence order). Whoever needs
//! the bytes on disk takes the I/O lock, swaps the buffer out, writes it and,
//! for `always`, fsyncs once for every record in it; writers waiting behind
//! find their sequence already covered. A failed write or fsync poisons the
//! log: the kernel may have dropped the dirty pages, so no later write may
//! pretend otherwise.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::faults::Faults;
use crate::format::{self, Kind};
use crate::storage::{Storage, StorageFile};

/// Bytes of a record header (crc + length).
pub(crate) const RECORD_HEADER_BYTES: usize = 8;
/// Largest record payload accepted when reading; larger lengths are corruption.
/// A batch is bounded by the largest value plus some keys, so 1 GiB is ample.
const RECORD_BYTES_MAX: usize = 1 << 30;
/// Buffered bytes past which an appender writes the buffer out itself, so a
/// caller that never syncs cannot grow it without bound.
const BUFFER_BYTES_MAX: usize = 4 << 20;

/// Name of WAL segment `number` in `dir`.
pub(crate) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:010}.wal"))
}

/// One operation decoded from a WAL record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalOp<'a> {
    pub seq: u64,
    pub kind: Kind,
    pub key: &'a [u8],
    pub stored_value: &'a [u8],
}

/// Encodes a batch record (header included) onto `out`.
/// Each operation is (kind, key, expiry, value); the stored value written
/// is the expiry's 8 big-endian bytes (when there is one) then the value.
pub(crate) fn encode_record<'a>(
    out: &mut Vec<u8>,
    first_seq: u64,
    ops: impl Iterator<Item = (Kind, &'a [u8], Option<u64>, &'a [u8])>,
    count: u32,
) {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    let mut written = 0u32;
    for (kind, key, expires_at_ms, value) in ops {
        out.push(kind as u8);
        format::put_varint(out, key.len() as u64);
        out.extend_from_slice(key);
        let prefix = expires_at_ms.map_or(0, |_| 8);
        format::put_varint(out, (prefix + value.len()) as u64);
        if let Some(at) = expires_at_ms {
            out.extend_from_slice(&at.to_be_bytes());
        }
        out.extend_from_slice(value);
        written += 1;
    }
    assert_eq!(written, count, "WAL record count must match its operations");
    let length = (out.len() - start - RECORD_HEADER_BYTES) as u32;
    out[start + 4..start + 8].copy_from_slice(&length.to_le_bytes());
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes a record payload into its operations.
pub(crate) fn decode_payload(payload: &[u8]) -> Option<Vec<WalOp<'_>>> {
    let first_seq = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let count = u32::from_le_bytes(payload.get(8..12)?.try_into().ok()?);
    let mut at = 12;
    // Each operation takes at least 3 bytes, which bounds the allocation.
    let mut ops = Vec::with_capacity((count as usize).min(payload.len() / 3));
    for i in 0..count as u64 {
        let kind = Kind::from_u8(*payload.get(at)?)?;
        at += 1;
        let (key_len, used) = format::get_varint(payload.get(at..)?)?;
        at += used;
        let key = payload.get(at..at.checked_add(key_len as usize)?)?;
        at += key_len as usize;
        let (value_len, used) = format::get_varint(payload.get(at..)?)?;
        at += used;
        let stored_value = payload.get(at..at.checked_add(value_len as usize)?)?;
        at += value_len as usize;
        ops.push(WalOp {
            seq: first_seq.checked_add(i)?,
            kind,
            key,
            stored_value,
        });
    }
    (at == payload.len()).then_some(ops)
}

/// What reading a segment found.
#[derive(Debug)]
pub(crate) struct SegmentRead {
    /// Every intact record payload, in order.
    pub payloads: Vec<(u64, Vec<u8>)>,
    /// Offset of the first byte that is not part of an intact record.
    pub valid_bytes: u64,
    /// Total size of the file.
    pub file_bytes: u64,
}

/// Appends `payload` framed as a record (crc, length, payload) to `out`.
pub(crate) fn frame_record(out: &mut Vec<u8>, payload: &[u8]) {
    let length = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32c::crc32c(&length);
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&length);
    out.extend_from_slice(payload);
}

/// Reads every intact framed record of a file, stopping at the first torn
/// or corrupt one (whose offset is `valid_bytes`).
pub(crate) fn read_records(fs: &dyn Storage, path: &Path) -> Result<SegmentRead> {
    read_records_checked(fs, path, |_| true)
}

/// Reads every intact record of a WAL segment; a record whose payload does
/// not decode as a batch counts as corrupt.
pub(crate) fn read_segment(fs: &dyn Storage, path: &Path) -> Result<SegmentRead> {
    read_records_checked(fs, path, |payload| decode_payload(payload).is_some())
}

fn read_records_checked(
    fs: &dyn Storage,
    path: &Path,
    valid: impl Fn(&[u8]) -> bool,
) -> Result<SegmentRead> {
    let data = fs.read(path).map_err(|e| Error::io(path, e))?;
    Ok(parse_records(&data, valid))
}

/// Splits `data` into intact framed records, stopping at the first torn or
/// corrupt one or the first whose payload `valid` rejects.
pub(crate) fn parse_records(data: &[u8], valid: impl Fn(&[u8]) -> bool) -> SegmentRead {
    let mut payloads = Vec::new();
    let mut at = 0usize;
    while data.len() - at >= RECORD_HEADER_BYTES {
        let crc = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
        let length = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        if length > RECORD_BYTES_MAX || data.len() - at - RECORD_HEADER_BYTES < length {
            break;
        }
        let end = at + RECORD_HEADER_BYTES + length;
        if crc32c::crc32c(&data[at + 4..end]) != crc {
            break;
        }
        let payload = &data[at + RECORD_HEADER_BYTES..end];
        if !valid(payload) {
            break;
        }
        payloads.push((at as u64, payload.to_vec()));
        at = end;
    }
    SegmentRead {
        payloads,
        valid_bytes: at as u64,
        file_bytes: data.len() as u64,
    }
}

/// Bytes scanned past a damaged record for intact ones
/// ([`intact_record_after`]); bounds the cost of recovery on a large segment.
const DAMAGE_SCAN_BYTES_MAX: usize = 4 << 20;

/// Offset of the first intact record (frame, checksum and a payload `valid`
/// accepts) that starts after `damaged_at`, looking at most
/// [`DAMAGE_SCAN_BYTES_MAX`] bytes ahead. A torn tail (a crash in the middle
/// of an append) has nothing intact after it; a damaged record in the middle
/// of the log (a flipped bit, a bad sector) does, and the records after it
/// were acknowledged writes that point-in-time recovery cannot replay.
pub(crate) fn intact_record_after(
    data: &[u8],
    damaged_at: usize,
    valid: impl Fn(&[u8]) -> bool,
) -> Option<usize> {
    let scan_end = data
        .len()
        .saturating_sub(RECORD_HEADER_BYTES)
        .min(damaged_at.saturating_add(DAMAGE_SCAN_BYTES_MAX));
    (damaged_at + 1..=scan_end).find(|&at| {
        let crc = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
        let length = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        // An empty payload is never a record the log writes; skipping it keeps runs of zero
        // bytes (crc 0 of length 0 is not crc32c's value, but be explicit) from matching.
        length > 0
            && length <= RECORD_BYTES_MAX
            && data.len() - at - RECORD_HEADER_BYTES >= length
            && crc32c::crc32c(&data[at + 4..at + RECORD_HEADER_BYTES + length]) == crc
            && valid(&data[at + RECORD_HEADER_BYTES..at + RECORD_HEADER_BYTES + length])
    })
}

/// Bytes appended but not yet written, and the segment they belong to.
#[derive(Debug)]
struct Pending {
    segment: Arc<Segment>,
    bytes: Vec<u8>,
    last_seq: u64,
    /// Buffers of segments rotated away before they were written out.
    retired: Vec<(Arc<Segment>, Vec<u8>)>,
}

/// An open segment file.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: Box<dyn StorageFile>,
    /// Bytes successfully written (a failed write is truncated back to it).
    written: AtomicU64,
}

/// The write-ahead log of one database.
#[derive(Debug)]
pub(crate) struct Wal {
    fs: Arc<dyn Storage>,
    dir: PathBuf,
    pending: Mutex<Pending>,
    /// Held by whoever writes buffered bytes to the file; orders file writes.
    /// Taken through [`Wal::io`], whose guard wakes the waiters when it is dropped.
    io: Mutex<()>,
    /// Counts finished write-outs; callers whose record another caller is writing out wait
    /// on `io_done` for it rather than queue on `io` (see [`Wal::sync_to`]).
    io_rounds: Mutex<u64>,
    io_done: Condvar,
    written_seq: AtomicU64,
    synced_seq: AtomicU64,
    bytes_written: AtomicU64,
    syncs: AtomicU64,
    sync_micros_total: AtomicU64,
    poisoned: Mutex<Option<String>>,
    /// Set once the log is ever poisoned or suspended, never cleared: lets
    /// every write skip the two locks above while nothing ever went wrong.
    troubled: AtomicBool,
    /// Set while a full disk holds buffered records back.
    suspended: Mutex<Option<String>>,
    /// Injected failures (tests and drills).
    faults: Arc<Faults>,
}

/// Counters of the log.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalStats {
    /// Bytes written to segment files since open.
    pub bytes_written: u64,
    /// fsync calls since open.
    pub syncs: u64,
    /// Total time spent in fsync, in microseconds.
    pub sync_micros_total: u64,
    /// Highest sequence handed to the OS.
    pub written_seq: u64,
    /// Highest sequence known to be on disk.
    pub synced_seq: u64,
}

impl Wal {
    /// Starts a new segment `number` in `dir`; `last_seq` is already durable.
    pub fn create(
        fs: Arc<dyn Storage>,
        dir: &Path,
        number: u64,
        last_seq: u64,
        faults: Arc<Faults>,
    ) -> Result<Wal> {
        let segment = Arc::new(open_segment(&*fs, dir, number)?);
        Ok(Wal {
            fs,
            dir: dir.to_path_buf(),
            pending: Mutex::new(Pending {
                segment,
                bytes: Vec::with_capacity(64 << 10),
                last_seq,
                retired: Vec::new(),
            }),
            io: Mutex::new(()),
            io_rounds: Mutex::new(0),
            io_done: Condvar::new(),
            written_seq: AtomicU64::new(last_seq),
            synced_seq: AtomicU64::new(last_seq),
            bytes_written: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            sync_micros_total: AtomicU64::new(0),
            poisoned: Mutex::new(None),
            troubled: AtomicBool::new(false),
            suspended: Mutex::new(None),
            faults,
        })
    }

    /// False while the log was never poisoned nor suspended: then
    /// [`Wal::poisoned`] and [`Wal::suspended`] are `None` without asking.
    pub fn troubled(&self) -> bool {
        self.troubled.load(Ordering::Acquire)
    }

    /// The first failure, if the log is poisoned.
    pub fn poisoned(&self) -> Option<String> {
        self.poisoned.lock().clone()
    }

    /// Appends an encoded record whose last sequence is `last_seq`.
    /// Must be called in sequence order (the caller holds the write lock).
    /// Returns true when the buffer has grown past its bound and the caller
    /// should write it out.
    pub fn append(&self, record: &[u8], last_seq: u64) -> bool {
        let mut pending = self.pending.lock();
        debug_assert!(last_seq > pending.last_seq);
        pending.bytes.extend_from_slice(record);
        pending.last_seq = last_seq;
        pending.bytes.len() >= BUFFER_BYTES_MAX
    }

    /// The last sequence appended (written out or not).
    pub fn appended_seq(&self) -> u64 {
        self.pending.lock().last_seq
    }

    /// Switches appends to a new segment `number` (caller holds the write lock).
    pub fn rotate(&self, number: u64) -> Result<()> {
        let segment = Arc::new(open_segment(&*self.fs, &self.dir, number)?);
        let mut pending = self.pending.lock();
        let old = std::mem::replace(&mut pending.segment, segment);
        let bytes = std::mem::take(&mut pending.bytes);
        pending.retired.push((old, bytes));
        Ok(())
    }

    /// [`Wal::sync_to`] when it need not wait for another writer's I/O (a slow fsync):
    /// `None` when the I/O lock is taken, so the caller can wait elsewhere.
    pub fn try_sync_to(&self, seq: u64, fsync: bool) -> Option<Result<()>> {
        if self.covered(seq, fsync) {
            return Some(Ok(()));
        }
        let _io = IoGuard::new(self, self.io.try_lock()?);
        if self.covered(seq, fsync) {
            return Some(Ok(()));
        }
        Some(self.write_out(fsync))
    }

    /// True when an append may have to wait for another writer's I/O: the buffer is over
    /// half full (the next appends may write it out themselves) while someone holds the I/O
    /// lock (a write-out or fsync in progress). A hint for callers that must not block.
    pub fn appender_may_wait(&self) -> bool {
        self.io.is_locked() && self.pending.lock().bytes.len() >= BUFFER_BYTES_MAX / 2
    }

    /// Makes every record up to `seq` reach the OS, and the disk when `fsync`.
    ///
    /// Group commit: the first caller to find the I/O free writes out (and fsyncs) every
    /// record buffered so far, its own and everyone else's. A caller that finds a write-out
    /// in progress waits for that write-out to end, then returns if it covered its record
    /// and otherwise leads the next one. Waiters do not queue on the I/O lock itself: a
    /// caller covered by write-out `k` would then wait behind the leader of write-out
    /// `k + 1`, doubling every commit's latency and halving the group (issue 12).
    pub fn sync_to(&self, seq: u64, fsync: bool) -> Result<()> {
        loop {
            if self.covered(seq, fsync) {
                return Ok(());
            }
            if let Some(io) = self.io.try_lock() {
                let _io = IoGuard::new(self, io);
                if self.covered(seq, fsync) {
                    return Ok(());
                }
                return self.write_out(fsync);
            }
            let mut rounds = self.io_rounds.lock();
            // The leader ends its round (under `io_rounds`) only after releasing `io`: while
            // `io` is seen taken here, a round is still to end and will wake this wait.
            if self.covered(seq, fsync) {
                return Ok(());
            }
            if self.io.is_locked() {
                self.io_done.wait(&mut rounds);
            }
        }
    }

    /// The background fsync under `everysec`, and a flush's fsync of its memtable's records:
    /// makes every record handed to the OS so far durable without holding the I/O lock during
    /// the fsync, so writers keep handing their records to the OS meanwhile and never wait for
    /// the disk (Redis fsyncs its AOF on a background thread the same way; docs/durability.md,
    /// "Under `everysec` no reply waits for the disk"). Under the lock the buffer is written
    /// out (one `write(2)`) and the segments that may hold records written but not fsynced are
    /// noted: the current one, and any rotated away since the last write-out (a write-out
    /// fsyncs the rotated segments it finds). Those are fsynced after the lock is released,
    /// and only what was written before is claimed synced.
    pub fn fsync_behind(&self) -> Result<()> {
        let (segments, written) = {
            let _io = IoGuard::new(self, self.io.lock());
            let appended = self.pending.lock().last_seq;
            if !self.covered(appended, false) {
                self.write_out(false)?;
            }
            let written = self.written_seq.load(Ordering::Acquire);
            if self.covered(written, true) {
                return Ok(());
            }
            let pending = self.pending.lock();
            let mut segments: Vec<Arc<Segment>> = pending
                .retired
                .iter()
                .map(|(segment, _)| segment.clone())
                .collect();
            segments.push(pending.segment.clone());
            (segments, written)
        };
        for segment in &segments {
            if let Err(error) = self.fsync_file(segment) {
                return Err(self.poison(error));
            }
        }
        self.synced_seq.fetch_max(written, Ordering::AcqRel);
        Ok(())
    }

    pub(crate) fn covered(&self, seq: u64, fsync: bool) -> bool {
        let done = if fsync {
            &self.synced_seq
        } else {
            &self.written_seq
        };
        done.load(Ordering::Acquire) >= seq
    }

    /// Writes all buffered bytes (caller holds the I/O lock).
    fn write_out(&self, fsync: bool) -> Result<()> {
        if let Some(reason) = self.poisoned() {
            return Err(Error::Poisoned { reason });
        }
        let (segment, bytes, last_seq, retired) = {
            let mut pending = self.pending.lock();
            let bytes = std::mem::take(&mut pending.bytes);
            let retired = std::mem::take(&mut pending.retired);
            (pending.segment.clone(), bytes, pending.last_seq, retired)
        };
        let mut chunks: Vec<(Arc<Segment>, Vec<u8>)> = retired;
        chunks.push((segment, bytes));
        let last = chunks.len() - 1;
        for i in 0..chunks.len() {
            let (segment, bytes) = &chunks[i];
            if let Err(error) = self.write_file(segment, bytes) {
                return Err(self.write_failed(error, chunks.split_off(i)));
            }
            // A rotated segment is complete: make it durable whatever the
            // policy, so the boundary between segments is never torn.
            if i < last || fsync {
                if let Err(error) = self.fsync_file(segment) {
                    return Err(self.poison(error));
                }
            }
        }
        // Give the allocation back to the buffer for reuse.
        if let Some((_, mut reuse)) = chunks.pop() {
            let mut pending = self.pending.lock();
            if pending.bytes.is_empty() && pending.bytes.capacity() < reuse.capacity() {
                reuse.clear();
                pending.bytes = reuse;
            }
        }
        self.written_seq.fetch_max(last_seq, Ordering::AcqRel);
        if fsync {
            self.synced_seq.fetch_max(last_seq, Ordering::AcqRel);
        }
        if self.suspended.lock().take().is_some() {
            tracing::info!("write-ahead log writable again; writes resume");
        }
        Ok(())
    }

    /// A write to a segment failed. When the disk is full (or over quota),
    /// the partial write is cut off and the unwritten bytes go back to the
    /// front of the buffer, to be written when space comes back; writes are
    /// suspended meanwhile. Any other failure poisons the log.
    fn write_failed(&self, error: Error, unwritten: Vec<(Arc<Segment>, Vec<u8>)>) -> Error {
        if !error.is_disk_full() {
            return self.poison(error);
        }
        let (failed, _) = &unwritten[0];
        let written = failed.written.load(Ordering::Acquire);
        if let Err(truncate_error) = failed.file.truncate(written) {
            return self.poison(Error::io(&failed.path, truncate_error));
        }
        let mut pending = self.pending.lock();
        let mut chunks = unwritten;
        // Appends made since the buffer was taken belong after these bytes.
        let newer_retired = std::mem::take(&mut pending.retired);
        let newer_bytes = std::mem::take(&mut pending.bytes);
        chunks.extend(newer_retired);
        let current = pending.segment.clone();
        match chunks.iter().position(|(s, _)| Arc::ptr_eq(s, &current)) {
            Some(at) => {
                let mut tail = chunks.split_off(at);
                let (_, mut bytes) = tail.remove(0);
                bytes.extend_from_slice(&newer_bytes);
                debug_assert!(tail.is_empty(), "the current segment is the last chunk");
                pending.bytes = bytes;
            }
            None => pending.bytes = newer_bytes,
        }
        pending.retired = chunks;
        drop(pending);
        let reason = error.to_string();
        let mut suspended = self.suspended.lock();
        if suspended.is_none() {
            tracing::error!(%error, "write-ahead log out of space; writes suspended until space returns");
        }
        *suspended = Some(reason.clone());
        self.troubled.store(true, Ordering::Release);
        Error::DiskFull { reason }
    }

    fn poison(&self, error: Error) -> Error {
        let mut poisoned = self.poisoned.lock();
        if poisoned.is_none() {
            tracing::error!(%error, "write-ahead log failed; refusing writes until restart");
            *poisoned = Some(error.to_string());
        }
        self.troubled.store(true, Ordering::Release);
        error
    }

    /// Why writes are suspended (disk full), if they are.
    pub fn suspended(&self) -> Option<String> {
        self.suspended.lock().clone()
    }

    /// Retries writing what a full disk held back. Returns true when the
    /// log is writable again.
    pub fn retry_suspended(&self, fsync: bool) -> bool {
        if self.suspended().is_none() {
            return true;
        }
        let _io = IoGuard::new(self, self.io.lock());
        self.write_out(fsync).is_ok()
    }

    fn write_file(&self, segment: &Segment, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        segment
            .file
            .append(bytes)
            .map_err(|e| Error::io(&segment.path, e))?;
        segment
            .written
            .fetch_add(bytes.len() as u64, Ordering::AcqRel);
        self.bytes_written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn fsync_file(&self, segment: &Segment) -> Result<()> {
        let started = std::time::Instant::now();
        if let Some(injected) = self.faults.take_wal_fsync_failure() {
            return Err(Error::io(&segment.path, injected));
        }
        if let Some(delay) = self.faults.take_wal_fsync_delay() {
            std::thread::sleep(delay);
        }
        segment
            .file
            .sync()
            .map_err(|e| Error::io(&segment.path, e))?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_micros_total
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Counters.
    pub fn stats(&self) -> WalStats {
        WalStats {
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            sync_micros_total: self.sync_micros_total.load(Ordering::Relaxed),
            written_seq: self.written_seq.load(Ordering::Relaxed),
            synced_seq: self.synced_seq.load(Ordering::Relaxed),
        }
    }
}

/// The I/O lock of a [`Wal`], held while buffered bytes go to the file. Dropping it ends a
/// write-out round and wakes the callers of [`Wal::sync_to`] waiting for one.
struct IoGuard<'a> {
    wal: &'a Wal,
    io: Option<MutexGuard<'a, ()>>,
}

impl<'a> IoGuard<'a> {
    fn new(wal: &'a Wal, io: MutexGuard<'a, ()>) -> IoGuard<'a> {
        IoGuard { wal, io: Some(io) }
    }
}

impl Drop for IoGuard<'_> {
    fn drop(&mut self) {
        // Release `io` first: a waiter that wakes must be able to lead the next round.
        drop(self.io.take());
        let mut rounds = self.wal.io_rounds.lock();
        *rounds += 1;
        self.wal.io_done.notify_all();
    }
}

fn open_segment(fs: &dyn Storage, dir: &Path, number: u64) -> Result<Segment> {
    let path = segment_path(dir, number);
    let file = fs.create(&path, true).map_err(|e| Error::io(&path, e))?;
    sync_dir(fs, dir)?;
    Ok(Segment {
        path,
        file,
        written: AtomicU64::new(0),
    })
}

/// fsyncs a directory so a file created or renamed in it survives a crash.
pub(crate) fn sync_dir(fs: &dyn Storage, dir: &Path) -> Result<()> {
    fs.sync_dir(dir).map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdStorage;
    use std::fs::{self, OpenOptions};
    use std::time::Duration;

    fn record(seq: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(
            &mut out,
            seq,
            std::iter::once((Kind::Put, key, None, value)),
            1,
        );
        out
    }

    #[test]
    fn a_caller_covered_by_the_fsync_in_progress_does_not_wait_for_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Faults::default());
        let wal =
            Arc::new(Wal::create(Arc::new(StdStorage), dir.path(), 1, 0, faults.clone()).unwrap());
        let step = Duration::from_millis(100);
        faults.delay_wal_fsyncs(step * 5, 2);
        let finished = Arc::new(Mutex::new(Vec::new()));
        let sync = |seq: u64, name: &'static str| {
            let (wal, finished) = (wal.clone(), finished.clone());
            std::thread::spawn(move || {
                wal.sync_to(seq, true).unwrap();
                finished.lock().push(name);
            })
        };
        wal.append(&record(1, b"a", b"1"), 1);
        // Round 1 takes record 1 and sits in its (slowed) fsync.
        let leader = sync(1, "leader of round 1");
        std::thread::sleep(step);
        wal.append(&record(2, b"b", b"2"), 2);
        // Record 2 missed round 1: its caller waits, then leads round 2.
        let next = sync(2, "leader of round 2");
        std::thread::sleep(step);
        // Record 1 is in round 1, whose fsync has not returned yet: this caller waits for
        // round 1 only, although it asked after the leader of round 2.
        let covered = sync(1, "covered by round 1");
        for thread in [leader, next, covered] {
            thread.join().unwrap();
        }
        let order = finished.lock().clone();
        let position = |name| order.iter().position(|n| *n == name).unwrap();
        assert!(
            position("covered by round 1") < position("leader of round 2"),
            "{order:?}"
        );
        assert_eq!(wal.stats().syncs, 2);
        assert_eq!(wal.stats().synced_seq, 2);
    }

    #[test]
    fn the_background_fsync_lets_writers_hand_records_to_the_os_while_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Faults::default());
        let wal =
            Arc::new(Wal::create(Arc::new(StdStorage), dir.path(), 1, 0, faults.clone()).unwrap());
        // The one fsync takes 3 s: a disk busy with a flush and a compaction.
        faults.delay_wal_fsyncs(Duration::from_secs(3), 1);
        wal.append(&record(1, b"a", b"1"), 1);
        let syncer = {
            let wal = wal.clone();
            std::thread::spawn(move || wal.fsync_behind())
        };
        while faults.wal_fsync_delays_armed() > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The fsync is under way (its delay taken). A writer's record reaches the OS now,
        // not after the disk.
        wal.append(&record(2, b"b", b"2"), 2);
        wal.sync_to(2, false).unwrap();
        assert!(!syncer.is_finished(), "the write-out waited for the fsync");
        assert_eq!(wal.stats().written_seq, 2);
        assert_eq!(wal.stats().synced_seq, 0);
        syncer.join().unwrap().unwrap();
        // Only what was written before the fsync began is claimed durable.
        assert_eq!(wal.stats().synced_seq, 1);
        wal.fsync_behind().unwrap();
        assert_eq!(wal.stats().synced_seq, 2);
        assert_eq!(wal.stats().syncs, 2);
        let read = read_segment(&StdStorage, &segment_path(dir.path(), 1)).unwrap();
        assert_eq!(read.payloads.len(), 2);
    }

    #[test]
    fn a_failed_background_fsync_claims_nothing_and_poisons_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Faults::default());
        let wal = Wal::create(Arc::new(StdStorage), dir.path(), 1, 0, faults.clone()).unwrap();
        wal.append(&record(1, b"a", b"1"), 1);
        faults.fail_wal_fsyncs(1);
        assert!(wal.fsync_behind().is_err());
        assert_eq!(
            wal.stats().written_seq,
            1,
            "the write-out before the fsync stands"
        );
        assert_eq!(wal.stats().synced_seq, 0, "nothing is claimed durable");
        assert!(wal.poisoned().is_some());
        // A failed fsync may have dropped dirty pages: no later write or fsync is trusted.
        wal.append(&record(2, b"b", b"2"), 2);
        assert!(wal.sync_to(2, false).is_err());
        assert!(wal.fsync_behind().is_err());
        assert_eq!(wal.stats().synced_seq, 0);
    }

    #[test]
    fn records_round_trip_and_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::create(Arc::new(StdStorage), dir.path(), 1, 0, Arc::default()).unwrap();
        for seq in 1..=10u64 {
            wal.append(&record(seq, format!("k{seq}").as_bytes(), b"v"), seq);
        }
        wal.sync_to(10, true).unwrap();
        let path = segment_path(dir.path(), 1);
        let full = read_segment(&StdStorage, &path).unwrap();
        assert_eq!(full.payloads.len(), 10);
        assert_eq!(full.valid_bytes, full.file_bytes);
        let ops = decode_payload(&full.payloads[9].1).unwrap();
        assert_eq!(ops[0].seq, 10);
        assert_eq!(ops[0].key, b"k10");

        // Tear the last record in half.
        let len = fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 5).unwrap();
        let torn = read_segment(&StdStorage, &path).unwrap();
        assert_eq!(torn.payloads.len(), 9);
        assert_eq!(torn.valid_bytes, full.payloads[9].0);
    }

    #[test]
    fn flipped_byte_stops_the_read_at_that_record() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::create(Arc::new(StdStorage), dir.path(), 7, 0, Arc::default()).unwrap();
        for seq in 1..=5u64 {
            wal.append(&record(seq, b"key", b"value"), seq);
        }
        wal.sync_to(5, false).unwrap();
        let path = segment_path(dir.path(), 7);
        let mut data = fs::read(&path).unwrap();
        let third = read_segment(&StdStorage, &path).unwrap().payloads[2].0 as usize;
        data[third + 12] ^= 0x40;
        fs::write(&path, &data).unwrap();
        let read = read_segment(&StdStorage, &path).unwrap();
        assert_eq!(read.payloads.len(), 2);
        assert_eq!(read.valid_bytes as usize, third);
    }

    #[test]
    fn garbage_payloads_do_not_decode() {
        assert!(decode_payload(&[]).is_none());
        let mut bad = vec![0u8; 12];
        bad[8] = 0xff; // count = 255 with no operations
        assert!(decode_payload(&bad).is_none());
    }
}
