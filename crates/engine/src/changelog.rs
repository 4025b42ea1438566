//! The change log: the most recent committed write batches, kept in memory
//! in sequence order, so replicas can follow the database (and, later, the
//! cluster can repair and move data) without reading the WAL files.
//!
//! Each batch is kept as its WAL record bytes (framed and checksummed, see
//! `wal.rs`), so a reader can ship them as they are and the receiver can
//! verify them. The log is bounded in bytes; older batches are dropped,
//! and a reader asking for a dropped sequence is told so and must start
//! from a checkpoint (a full sync).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

/// One committed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBatch {
    /// Sequence of the batch's first operation.
    pub first_seq: u64,
    /// Sequence of its last operation.
    pub last_seq: u64,
    /// The batch's WAL record (header included), as `Db::apply_log_batch` takes it.
    pub record: Bytes,
}

/// What reading the change log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRead {
    /// Batches from the requested sequence on, in order (possibly empty
    /// when the reader is up to date).
    Batches(Vec<LogBatch>),
    /// The requested sequence is no longer held: the oldest held batch
    /// starts after it.
    Trimmed {
        /// First sequence still held (everything above it is).
        oldest_held: u64,
    },
}

/// One operation of a change-log batch, as [`decode_log_batch`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOp {
    /// Its sequence number.
    pub seq: u64,
    /// The key written.
    pub key: Bytes,
    /// True for a delete, false for a put.
    pub is_delete: bool,
    /// The put's absolute expiry in Unix ms, if any.
    pub expires_at_ms: Option<u64>,
}

/// Decodes a change-log record ([`LogBatch::record`]) into its operations,
/// checksum verified: `None` if it is not exactly one intact record. Lets a
/// follower see which keys a batch touches (for its own bookkeeping) before
/// handing it to `Db::apply_log_batch`.
pub fn decode_log_batch(record: &[u8]) -> Option<Vec<LogOp>> {
    let read = crate::wal::parse_records(record, |p| crate::wal::decode_payload(p).is_some());
    if read.payloads.len() != 1 || read.valid_bytes != record.len() as u64 {
        return None;
    }
    let ops = crate::wal::decode_payload(&read.payloads[0].1)?;
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        let expires_at_ms = match op.kind {
            crate::format::Kind::PutExpiring => Some(u64::from_be_bytes(
                op.stored_value.get(..8)?.try_into().ok()?,
            )),
            _ => None,
        };
        out.push(LogOp {
            seq: op.seq,
            key: Bytes::copy_from_slice(op.key),
            is_delete: op.kind == crate::format::Kind::Delete,
            expires_at_ms,
        });
    }
    Some(out)
}

#[derive(Debug, Default)]
struct State {
    batches: VecDeque<LogBatch>,
    bytes: usize,
    capacity_bytes: usize,
    /// Every sequence up to this one is committed (held or dropped).
    last_seq: u64,
}

/// The bounded in-memory change log.
#[derive(Debug, Default)]
pub(crate) struct ChangeLog {
    state: Mutex<State>,
    committed: Condvar,
}

impl ChangeLog {
    pub fn new(capacity_bytes: usize, last_seq: u64) -> ChangeLog {
        ChangeLog {
            state: Mutex::new(State {
                capacity_bytes,
                last_seq,
                ..State::default()
            }),
            committed: Condvar::new(),
        }
    }

    /// True when batches are kept (capacity above zero).
    pub fn enabled(&self) -> bool {
        self.state.lock().capacity_bytes > 0
    }

    /// Records a committed batch (called under the write lock, in order)
    /// and wakes readers waiting for it.
    pub fn push(&self, first_seq: u64, last_seq: u64, record: Option<Bytes>) {
        let mut state = self.state.lock();
        debug_assert!(first_seq > state.last_seq);
        state.last_seq = last_seq;
        if let Some(record) = record {
            if state.capacity_bytes > 0 {
                state.bytes += record.len();
                state.batches.push_back(LogBatch {
                    first_seq,
                    last_seq,
                    record,
                });
                while state.bytes > state.capacity_bytes && state.batches.len() > 1 {
                    let dropped = state.batches.pop_front().expect("non-empty");
                    state.bytes -= dropped.record.len();
                }
            }
        }
        drop(state);
        self.committed.notify_all();
    }

    /// Changes the capacity; zero drops every batch and stops keeping them.
    pub fn set_capacity(&self, capacity_bytes: usize) {
        let mut state = self.state.lock();
        state.capacity_bytes = capacity_bytes;
        while state.bytes > capacity_bytes && !state.batches.is_empty() {
            let dropped = state.batches.pop_front().expect("non-empty");
            state.bytes -= dropped.record.len();
        }
    }

    /// Batches holding sequences from `from_seq` on, up to about `bytes_max`
    /// bytes (at least one batch when any is due).
    pub fn read(&self, from_seq: u64, bytes_max: usize) -> LogRead {
        let state = self.state.lock();
        if from_seq > state.last_seq {
            return LogRead::Batches(Vec::new());
        }
        let oldest_held = state
            .batches
            .front()
            .map_or(state.last_seq + 1, |b| b.first_seq);
        if from_seq < oldest_held {
            return LogRead::Trimmed { oldest_held };
        }
        let start = state.batches.partition_point(|b| b.last_seq < from_seq);
        let mut out = Vec::new();
        let mut bytes = 0;
        for batch in state.batches.range(start..) {
            if !out.is_empty() && bytes + batch.record.len() > bytes_max {
                break;
            }
            bytes += batch.record.len();
            out.push(batch.clone());
        }
        LogRead::Batches(out)
    }

    /// Waits until `seq` is committed or `timeout` passes; returns the last
    /// committed sequence.
    pub fn wait_for(&self, seq: u64, timeout: Duration) -> u64 {
        let deadline = std::time::Instant::now() + timeout;
        let mut state = self.state.lock();
        while state.last_seq < seq {
            if self.committed.wait_until(&mut state, deadline).timed_out() {
                break;
            }
        }
        state.last_seq
    }

    /// Bytes held, and the oldest sequence held.
    pub fn usage(&self) -> (usize, Option<u64>) {
        let state = self.state.lock();
        (state.bytes, state.batches.front().map(|b| b.first_seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> Option<Bytes> {
        Some(Bytes::from(vec![0u8; n]))
    }

    #[test]
    fn reads_from_any_held_sequence_and_reports_trimmed_ones() {
        let log = ChangeLog::new(100, 10);
        log.push(11, 12, record(40));
        log.push(13, 13, record(40));
        match log.read(12, 1000) {
            LogRead::Batches(b) => assert_eq!(
                b.iter().map(|b| b.first_seq).collect::<Vec<_>>(),
                vec![11, 13]
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(log.read(14, 1000), LogRead::Batches(vec![]));
        assert_eq!(log.read(10, 1000), LogRead::Trimmed { oldest_held: 11 });
        // A third batch pushes the first out (120 > 100 bytes).
        log.push(14, 15, record(40));
        assert_eq!(log.read(12, 1000), LogRead::Trimmed { oldest_held: 13 });
        match log.read(13, 50) {
            LogRead::Batches(b) => assert_eq!(b.len(), 1, "bounded by bytes_max"),
            other => panic!("{other:?}"),
        }
        assert_eq!(log.wait_for(15, Duration::from_millis(1)), 15);
        assert_eq!(log.wait_for(16, Duration::from_millis(10)), 15);
    }
}
