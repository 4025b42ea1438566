//! Group commit under `appendfsync always` for callers that must not block
//! (docs/durability.md, "Group commit without a thread per writer").
//!
//! A write made inside [`crate::without_waiting`] under `always` is put in the
//! memtable and the WAL buffer, invisible, and returns at once; its caller
//! awaits [`crate::Db::synced`] before it answers. One thread,
//! `ringkv-group-commit`, writes out and fsyncs whatever is buffered whenever
//! a waiter wants it, publishes it and wakes the waiters that fsync covered:
//! one fsync and one thread wake-up per group, whatever its size, as Redis'
//! one fsync per event-loop turn. Waiters are `std::task::Waker`s, so any
//! async runtime can await them.
//!
//! Until its fsync, a key written this way is *unsynced*: it is marked here,
//! by hash, so that a reader of it (a read-modify-write on another connection,
//! the writer's own next command) does not read the published view: inside
//! `without_waiting` it reads the key as written and its caller answers only
//! after that fsync (`take_unsynced_read`); elsewhere it waits for the fsync.
//!
//! **Owns:** the waiters, the wish of the syncer thread and the unsynced-key
//! marks. **Must not touch:** the WAL's files (the thread calls
//! `Wal::sync_to`) or what is visible (it calls `Inner::publish_synced`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::task::Waker;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// Unsynced-key marks: a key shares its mark with 1 in this many others, whose readers then
/// wait for the same fsync (harmless, but a wait). With 800 writes waiting (50 clients
/// pipelining 16), a read finds a foreign mark 1 time in 330, a batch of 16 reads 1 in 20.
/// 2 MiB, allocated by the first write under `always`.
const MARKS: usize = 1 << 18;

#[derive(Debug)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    /// The syncer thread waits here for a waiter.
    work: Condvar,
    /// Per hash of a key: the sequence of its last write under `always` (visible once fsynced).
    marks: OnceLock<Box<[AtomicU64]>>,
    /// The highest of `marks`: while it is visible, no read looks at a mark.
    marks_max: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// The highest sequence a waiter waits for.
    wanted: u64,
    /// The last sequence the syncer found fsynced.
    synced: u64,
    waiters: Vec<(u64, Waker)>,
    shutdown: bool,
}

impl GroupCommit {
    pub fn new(synced: u64) -> GroupCommit {
        GroupCommit {
            state: Mutex::new(State {
                wanted: synced,
                synced,
                ..State::default()
            }),
            work: Condvar::new(),
            marks: OnceLock::new(),
            marks_max: AtomicU64::new(0),
        }
    }

    fn mark_of(key: &[u8]) -> usize {
        xxhash_rust::xxh3::xxh3_64(key) as usize % MARKS
    }

    /// Notes that `key` was written at `seq`, visible only once its WAL record is fsynced.
    pub fn mark(&self, key: &[u8], seq: u64) {
        let marks = self
            .marks
            .get_or_init(|| (0..MARKS).map(|_| AtomicU64::new(0)).collect());
        marks[Self::mark_of(key)].fetch_max(seq, Ordering::AcqRel);
        self.marks_max.fetch_max(seq, Ordering::AcqRel);
    }

    /// The sequence a reader of `key` must wait for, if `key` may have a write above
    /// `visible` (not fsynced yet).
    pub fn unsynced(&self, key: &[u8], visible: u64) -> Option<u64> {
        if self.marks_max.load(Ordering::Acquire) <= visible {
            return None;
        }
        let seq = self.marks.get()?[Self::mark_of(key)].load(Ordering::Acquire);
        (seq > visible).then_some(seq)
    }

    /// Asks for `seq` to be fsynced and for `waker` to be woken once it is (or once a round
    /// fails).
    pub fn register(&self, seq: u64, waker: &Waker) {
        let mut state = self.state.lock();
        if let Some((_, known)) = state
            .waiters
            .iter_mut()
            .find(|(at, known)| *at == seq && known.will_wake(waker))
        {
            known.clone_from(waker);
        } else {
            state.waiters.push((seq, waker.clone()));
        }
        if seq > state.wanted {
            state.wanted = seq;
            self.work.notify_one();
        }
    }

    /// The syncer thread's wait: true once a waiter wants a sequence not yet fsynced, false at
    /// shutdown or once `alive` says the database is gone.
    pub fn wait_for_work(&self, alive: impl Fn() -> bool) -> bool {
        let mut state = self.state.lock();
        loop {
            if state.shutdown {
                return false;
            }
            if state.wanted > state.synced {
                return true;
            }
            let timed_out = self
                .work
                .wait_for(&mut state, Duration::from_secs(1))
                .timed_out();
            if timed_out && !alive() {
                return false;
            }
        }
    }

    /// Ends a round of the syncer: `synced` is now on disk. Wakes the waiters it covers, or
    /// every waiter when the round `failed` (they find the error), and then waits for a new
    /// waiter rather than retry.
    pub fn finish_round(&self, synced: u64, failed: bool) {
        let mut woken = Vec::new();
        {
            let mut state = self.state.lock();
            state.synced = state.synced.max(synced);
            if failed {
                state.wanted = state.synced;
            }
            state.waiters.retain(|(seq, waker)| {
                let done = failed || *seq <= synced;
                if done {
                    woken.push(waker.clone());
                }
                !done
            });
        }
        for waker in woken {
            waker.wake();
        }
    }

    /// Stops the syncer thread.
    pub fn shutdown(&self) {
        self.state.lock().shutdown = true;
        self.work.notify_all();
    }
}
