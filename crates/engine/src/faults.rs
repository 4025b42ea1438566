//! Injected I/O failures, so the paths a real disk takes rarely (a failed
//! fsync above all) can be driven on purpose by tests and drills.
//!
//! A real failed fsync is hard to provoke on demand: it needs a device that
//! errors on write-back. What the engine must do afterwards does not depend
//! on why the kernel failed, so a counter that turns the next fsyncs into
//! `EIO` exercises exactly the code that a dying disk would.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Failures armed for the next I/O operations of one database. Shared by
/// [`crate::Options::faults`]; disarmed by default, and then costs one
/// relaxed atomic load per WAL fsync.
#[derive(Debug, Default)]
pub struct Faults {
    wal_fsync_failures: AtomicU64,
    /// Milliseconds each delayed WAL fsync takes on top of the real one.
    wal_fsync_delay_ms: AtomicU64,
    /// WAL fsyncs still to delay.
    wal_fsync_delays: AtomicU64,
    /// While set, background compaction does nothing (level 0 then grows until writes
    /// stall, which is how tests hold a stall for as long as they need).
    compactions_held: AtomicBool,
}

impl Faults {
    /// Makes the next `count` fsyncs of the write-ahead log fail with `EIO`
    /// (0 disarms).
    pub fn fail_wal_fsyncs(&self, count: u64) {
        self.wal_fsync_failures.store(count, Ordering::SeqCst);
    }

    /// WAL fsync failures still armed.
    pub fn wal_fsync_failures_armed(&self) -> u64 {
        self.wal_fsync_failures.load(Ordering::SeqCst)
    }

    /// Consumes one armed WAL fsync failure: the error to report instead of
    /// syncing, if one was armed.
    pub(crate) fn take_wal_fsync_failure(&self) -> Option<std::io::Error> {
        if self.wal_fsync_failures.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.wal_fsync_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()
            .map(|_| std::io::Error::from_raw_os_error(EIO))
    }
}

impl Faults {
    /// Makes each of the next `count` WAL fsyncs take `delay` longer, as a slow or
    /// overloaded disk would (0 disarms).
    pub fn delay_wal_fsyncs(&self, delay: Duration, count: u64) {
        self.wal_fsync_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        self.wal_fsync_delays.store(count, Ordering::SeqCst);
    }

    /// WAL fsync delays still armed (a delayed fsync takes its delay as it starts).
    pub fn wal_fsync_delays_armed(&self) -> u64 {
        self.wal_fsync_delays.load(Ordering::SeqCst)
    }

    /// Consumes one armed fsync delay: how long to wait before syncing, if one was armed.
    pub(crate) fn take_wal_fsync_delay(&self) -> Option<Duration> {
        if self.wal_fsync_delays.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.wal_fsync_delays
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()
            .map(|_| Duration::from_millis(self.wal_fsync_delay_ms.load(Ordering::SeqCst)))
    }

    /// Holds (true) or lets go (false) background compaction.
    pub fn hold_compactions(&self, hold: bool) {
        self.compactions_held.store(hold, Ordering::SeqCst);
    }

    /// True while compaction is held.
    pub fn compactions_held(&self) -> bool {
        self.compactions_held.load(Ordering::Relaxed)
    }
}

/// Linux's `EIO`, what fsync reports when write-back failed.
const EIO: i32 = 5;
