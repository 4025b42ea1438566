//! Giving freed memory back to the OS.
//!
//! glibc's allocator keeps what large requests free in its arenas: after a
//! client sent 100 values of 50 MiB and deleted them, the process kept
//! hundreds of MiB it no longer used (RSS did not fall back). When a
//! connection lets go of a large buffer, or the engine flushed a memtable
//! (its values freed), the server asks glibc to return free pages
//! (`malloc_trim`), at most once per `TRIM_PERIOD_MS` so a busy server does
//! not spend its time trimming; a periodic [`tick`] catches what happened
//! within a period of the last trim.
//!
//! Trimming cannot give back a free chunk glibc keeps inside a thread's arena between live
//! ones, and glibc's dynamic mmap threshold sends every value up to 32 MiB into the arenas
//! once a large block was freed. So the server fixes the threshold at [`MMAP_THRESHOLD`]
//! ([`tune_system_allocator`]): a value that large is its own mapping, returned to the OS when
//! it is freed (the SLOWLOG/RSS test in tests/hostile.rs measures it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Least time between two trims, in milliseconds.
const TRIM_PERIOD_MS: u64 = 1_000;

/// The global allocator the binary chose, when not the system's: its name (INFO's
/// `mem_allocator`) and what gives its free memory back to the OS, run at every trim after
/// `malloc_trim` (the server crate does not know which allocator runs).
static ALLOCATOR: OnceLock<(&'static str, fn())> = OnceLock::new();

/// Names the global allocator and registers its `release` (mimalloc's `mi_collect`). The
/// first registration stays.
pub fn set_allocator(name: &'static str, release: fn()) {
    let _ = ALLOCATOR.set((name, release));
}

/// INFO's `mem_allocator`: `libc` unless the binary registered another.
pub(crate) fn allocator_name() -> &'static str {
    ALLOCATOR.get().map_or("libc", |(name, _)| name)
}

/// Allocations this large or larger get their own mapping from glibc (`M_MMAP_THRESHOLD`).
/// Below the 1 MiB the engine's blocks and most values stay under; above, a copy costs far
/// more than the `mmap`/`munmap` pair.
const MMAP_THRESHOLD: i32 = 1 << 20;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`] when the system allocator serves the
/// process (no [`set_allocator`] registration); does nothing elsewhere.
pub(crate) fn tune_system_allocator() {
    if ALLOCATOR.get().is_none() {
        set_mmap_threshold();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_mmap_threshold() {
    // SAFETY: mallopt takes two integers and changes a glibc tunable under the allocator's
    // own lock; glibc documents M_MMAP_THRESHOLD as settable at any time. Exercised at every
    // server start (and so by every integration test).
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    if ok != 1 {
        tracing::warn!("mallopt(M_MMAP_THRESHOLD) refused; large freed values may stay resident");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mmap_threshold() {}

/// When the last trim ran, Unix ms.
static LAST_TRIM_MS: AtomicU64 = AtomicU64::new(0);

/// A large release happened since the last trim.
static PENDING: AtomicBool = AtomicBool::new(false);

/// The engine's flush count at the last [`tick`].
static FLUSHES_SEEN: AtomicU64 = AtomicU64::new(0);

/// Called about once a second with the engine's flush count: trims if something large was
/// freed since the last trim (a buffer, or memtables flushed since the last tick).
pub(crate) fn tick(flushes: u64) {
    if FLUSHES_SEEN.swap(flushes, Ordering::Relaxed) != flushes {
        PENDING.store(true, Ordering::Relaxed);
    }
    if PENDING.load(Ordering::Relaxed) {
        large_buffer_released();
    }
}

/// Notes that a large allocation was freed; returns free memory to the OS unless that was
/// done less than a period ago. Returns whether it trimmed.
pub(crate) fn large_buffer_released() -> bool {
    PENDING.store(true, Ordering::Relaxed);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let last = LAST_TRIM_MS.load(Ordering::Relaxed);
    if now < last + TRIM_PERIOD_MS {
        return false;
    }
    if LAST_TRIM_MS
        .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return false; // another thread trims now
    }
    PENDING.store(false, Ordering::Relaxed);
    trim();
    if let Some((_, release)) = ALLOCATOR.get() {
        release();
    }
    true
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and only walks the allocator's own free lists
    // under the allocator's locks; glibc documents it as safe to call from any thread at
    // any time. Exercised by `trims_at_most_once_a_period` below and by the SLOWLOG/RSS
    // test in tests/hostile.rs.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_at_most_once_a_period() {
        LAST_TRIM_MS.store(0, Ordering::Relaxed);
        let big = vec![7u8; 64 << 20];
        drop(std::hint::black_box(big));
        assert!(large_buffer_released(), "the first release trims");
        assert!(
            !large_buffer_released(),
            "a second one within the period does not"
        );
    }
}
